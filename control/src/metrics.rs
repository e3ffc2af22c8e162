//! `vswitchd --metrics ADDR:PORT`: Prometheus metrics on `GET /metrics`.
//!
//! Nothing is kept up to date for it: each scrape takes a snapshot of the
//! engine ([`EngineHandle::metrics_snapshot`], the same reads as `stats`,
//! `list-ports`, `list-br`, `stp-show` and `nat-show`) and renders it with
//! the `prometheus-client` crate's encoder in the Prometheus text format
//! (version 0.0.4), which Prometheus and `promtool check metrics` read.
//!
//! The HTTP side is a small HTTP/1.1 responder on a std `TcpListener`: one
//! accept thread, one short-lived thread per connection (at most
//! [`MAX_CONNECTIONS`] at once; more are answered 503 and closed), requests
//! bounded to [`MAX_REQUEST`] bytes and [`IO_TIMEOUT`] per read or write,
//! `Connection: close` always. It serves `GET`/`HEAD /metrics` and answers
//! 404 elsewhere, 405 for other methods. A scrape never touches the
//! forwarding path beyond the locks `stats` takes.

use dataplane::engine::metrics::{Snapshot, BATCH_BUCKETS};
use dataplane::engine::EngineHandle;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest request (line and headers) read; longer ones get 431.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Limit on each read and write of a connection.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Limit on reading one whole request (a client trickling bytes).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 8;
/// Content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Binds the metrics address (`ADDR:PORT`; a host name is resolved).
pub fn bind(addr: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| format!("--metrics {addr}: cannot listen there: {e}"))
}

/// Serves scrapes on `listener` until the process ends.
pub fn serve(listener: TcpListener, handle: EngineHandle) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("metrics: accept failed: {e}");
                // EMFILE and the like: do not spin.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            let _ = respond(
                &mut stream,
                503,
                "text/plain",
                b"too many connections\n",
                true,
            );
            continue;
        }
        let handle = handle.clone();
        let slot = Slot(active.clone());
        let spawned = std::thread::Builder::new()
            .name("vswitch-metrics".into())
            .spawn(move || {
                let _slot = slot;
                serve_one(stream, &handle);
            });
        if let Err(e) = spawned {
            // The closure (and with it the slot) was dropped.
            tracing::warn!("metrics: cannot start a connection thread: {e}");
        }
    }
}

/// Gives its connection slot back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a request asked for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics { head: bool },
    NotFound,
    BadMethod,
    BadRequest,
    TooLarge,
}

/// Reads one request head (up to the blank line) and routes it.
fn read_request(stream: &mut impl Read) -> Route {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let deadline = Instant::now() + REQUEST_DEADLINE;
    loop {
        if head_end(&buf).is_some() {
            break;
        }
        if buf.len() >= MAX_REQUEST {
            return Route::TooLarge;
        }
        if Instant::now() > deadline {
            return Route::BadRequest;
        }
        let room = (MAX_REQUEST - buf.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) => return Route::BadRequest,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Route::BadRequest,
        }
    }
    route(&buf)
}

/// Where the request head ends (after its blank line).
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
}

fn route(head: &[u8]) -> Route {
    let Ok(text) = std::str::from_utf8(head) else {
        return Route::BadRequest;
    };
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split(['?', '#']).next().unwrap_or("");
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Route::BadMethod,
    };
    if path == "/metrics" {
        Route::Metrics { head }
    } else {
        Route::NotFound
    }
}

fn serve_one(mut stream: TcpStream, handle: &EngineHandle) {
    let _ = match read_request(&mut stream) {
        Route::Metrics { head } => match render(handle.metrics_snapshot()) {
            Ok(body) => respond(&mut stream, 200, CONTENT_TYPE, body.as_bytes(), head),
            Err(_) => respond(&mut stream, 500, "text/plain", b"encoding failed\n", false),
        },
        Route::NotFound => respond(
            &mut stream,
            404,
            "text/plain",
            b"not found: metrics are at /metrics\n",
            false,
        ),
        Route::BadMethod => respond(
            &mut stream,
            405,
            "text/plain",
            b"method not allowed\n",
            false,
        ),
        Route::BadRequest => respond(&mut stream, 400, "text/plain", b"bad request\n", false),
        Route::TooLarge => respond(
            &mut stream,
            431,
            "text/plain",
            b"request header fields too large\n",
            false,
        ),
    };
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn respond(
    stream: &mut impl Write,
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let allow = if status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let header = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes())?;
    if !head_only {
        stream.write_all(body)?;
    }
    stream.flush()
}

/// The Prometheus text exposition of a snapshot.
pub fn render(snap: Snapshot) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(snap)));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct SnapshotCollector(Snapshot);

/// Encodes one family: its descriptor, then one sample per label set.
fn family<L, M, I>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: I,
) -> fmt::Result
where
    L: prometheus_client::encoding::EncodeLabelSet,
    M: EncodeMetric,
    I: IntoIterator<Item = (L, M)>,
{
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in samples {
        metric.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Reads one counter of a port's stats.
type PortField = fn(&dataplane::stats::PortStats) -> u64;

/// A family without labels.
const NO_LABELS: [(&str, &str); 0] = [];

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn gauge(v: i64) -> ConstGauge<i64> {
    ConstGauge::new(v)
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        let port = |p: &dataplane::engine::metrics::PortSnapshot| {
            [("bridge", p.bridge.clone()), ("port", p.name.clone())]
        };
        // Counter names are given without `_total`: the encoder adds it.
        let per_port: [(&str, &str, PortField); 4] = [
            (
                "vswitch_port_rx_packets",
                "Frames received on the port.",
                |s| s.rx_packets,
            ),
            ("vswitch_port_tx_packets", "Frames sent on the port.", |s| {
                s.tx_packets
            }),
            (
                "vswitch_port_rx_bytes",
                "Bytes of the frames received on the port.",
                |s| s.rx_bytes,
            ),
            (
                "vswitch_port_tx_bytes",
                "Bytes of the frames sent on the port.",
                |s| s.tx_bytes,
            ),
        ];
        for (name, help, get) in per_port {
            family(
                &mut enc,
                name,
                help,
                MetricType::Counter,
                s.ports.iter().map(|p| (port(p), counter(get(&p.stats)))),
            )?;
        }
        family(
            &mut enc,
            "vswitch_port_drops",
            "Frames dropped, by the port they were counted on and the reason (as `vswitchctl stats` names them).",
            MetricType::Counter,
            s.ports.iter().flat_map(|p| {
                dataplane::stats::DropReason::ALL.iter().map(move |r| {
                    (
                        [
                            ("bridge", p.bridge.clone()),
                            ("port", p.name.clone()),
                            ("reason", r.name().to_string()),
                        ],
                        counter(p.stats.get(*r)),
                    )
                })
            }),
        )?;
        family(
            &mut enc,
            "vswitch_port_up",
            "1 if the port is operationally up (and not shut by BPDU guard), else 0.",
            MetricType::Gauge,
            s.ports.iter().map(|p| (port(p), gauge(i64::from(p.up)))),
        )?;

        let bridge = |name: &str| [("bridge", name.to_string())];
        family(
            &mut enc,
            "vswitch_fdb_entries",
            "Entries in the bridge's forwarding database (static and dynamic).",
            MetricType::Gauge,
            s.bridges
                .iter()
                .map(|b| (bridge(&b.name), gauge(clamp(b.fdb_entries)))),
        )?;
        family(
            &mut enc,
            "vswitch_fdb_learning_events",
            "Stations the bridge learned: event=\"new\" for a new address, \"moved\" for one that moved to another port.",
            MetricType::Counter,
            s.bridges.iter().flat_map(|b| {
                [("new", b.fdb_learned), ("moved", b.fdb_moved)].map(|(ev, n)| {
                    (
                        [("bridge", b.name.clone()), ("event", ev.to_string())],
                        counter(n),
                    )
                })
            }),
        )?;
        family(
            &mut enc,
            "vswitch_stp_topology_changes",
            "Spanning-tree topology changes the bridge detected or was told of.",
            MetricType::Counter,
            s.bridges
                .iter()
                .map(|b| (bridge(&b.name), counter(b.topology_changes))),
        )?;
        family(
            &mut enc,
            "vswitch_stp_topology_change",
            "1 while the bridge's topology change flag is set (fast ageing); only for bridges with STP on.",
            MetricType::Gauge,
            s.bridges.iter().filter_map(|b| {
                let stp = b.stp.as_ref()?;
                Some((bridge(&b.name), gauge(i64::from(stp.topology_change))))
            }),
        )?;
        const STATES: [dataplane::bridge::stp::PortState; 5] = {
            use dataplane::bridge::stp::PortState::*;
            [Disabled, Blocking, Listening, Learning, Forwarding]
        };
        family(
            &mut enc,
            "vswitch_stp_port_state",
            "Spanning-tree port state: 1 for the state the port is in, 0 for the others; only for bridges with STP on.",
            MetricType::Gauge,
            s.bridges.iter().flat_map(|b| {
                let ports = b.stp.as_ref().map(|s| s.ports.as_slice()).unwrap_or(&[]);
                ports.iter().flat_map(move |(p, st)| {
                    STATES.iter().map(move |x| {
                        (
                            [
                                ("bridge", b.name.clone()),
                                ("port", p.clone()),
                                ("state", x.name().to_string()),
                            ],
                            gauge(i64::from(x == st)),
                        )
                    })
                })
            }),
        )?;
        family(
            &mut enc,
            "vswitch_nat_flows",
            "Translated flows the router tracks (the rows of `vswitchctl nat-show`).",
            MetricType::Gauge,
            [(NO_LABELS, gauge(clamp(s.nat_flows)))],
        )?;

        let worker = |id: usize| [("worker", id.to_string())];
        family(
            &mut enc,
            "vswitch_worker_busy_seconds",
            "Time the worker spent receiving, forwarding and sending frames; rate() of it is the busy fraction.",
            MetricType::Counter,
            s.workers
                .iter()
                .map(|w| (worker(w.id), ConstCounter::new(w.busy_seconds))),
        )?;
        family(
            &mut enc,
            "vswitch_worker_sleeps",
            "Times the worker slept waiting for frames; the frame that ends a sleep pays a thread wake-up (busy polling, --busy-poll-us/--busy-poll-max-us/--latency, avoids them).",
            MetricType::Counter,
            s.workers
                .iter()
                .map(|w| (worker(w.id), ConstCounter::new(w.sleeps))),
        )?;
        family(
            &mut enc,
            "vswitch_worker_cpu_pressure_backoffs",
            "Times the worker stopped busy polling for a while because other tasks waited for a CPU (Linux PSI, /proc/pressure/cpu): spinning would take CPU from the hosts and guests behind the ports.",
            MetricType::Counter,
            s.workers
                .iter()
                .map(|w| (worker(w.id), ConstCounter::new(w.pressure_backoffs))),
        )?;
        if !s.workers.is_empty() {
            let mut m = enc.encode_descriptor(
                "vswitch_worker_batch_frames",
                "Frames per batch a worker received from one port.",
                None,
                MetricType::Histogram,
            )?;
            for w in &s.workers {
                let labels = worker(w.id);
                let buckets: Vec<(f64, u64)> = BATCH_BUCKETS
                    .iter()
                    .zip(w.batches)
                    .map(|(&le, n)| (le as f64, n))
                    .collect();
                let count = w.batches.iter().sum();
                m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                    w.frames as f64,
                    count,
                    &buckets,
                    None,
                )?;
            }
        }
        family(
            &mut enc,
            "vswitch_build_info",
            "Always 1; the version label names the running vswitchd.",
            MetricType::Gauge,
            [(
                [("version", env!("CARGO_PKG_VERSION").to_string())],
                gauge(1),
            )],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::bridge::stp::PortState;
    use dataplane::engine::metrics::{BridgeSnapshot, PortSnapshot, StpSnapshot, WorkerSnapshot};
    use dataplane::stats::{DropReason, PortStats};

    fn sample() -> Snapshot {
        let mut st = PortStats {
            rx_packets: 7,
            rx_bytes: 700,
            tx_packets: 5,
            tx_bytes: 500,
            ..Default::default()
        };
        st.drop_n(DropReason::NoEgress, 3);
        Snapshot {
            ports: vec![
                PortSnapshot {
                    name: "p1".into(),
                    bridge: "br0".into(),
                    up: true,
                    stats: st,
                },
                PortSnapshot {
                    name: "tun0".into(),
                    bridge: String::new(),
                    up: false,
                    stats: PortStats::default(),
                },
            ],
            bridges: vec![BridgeSnapshot {
                name: "br0".into(),
                fdb_entries: 2,
                fdb_learned: 4,
                fdb_moved: 1,
                topology_changes: 3,
                stp: Some(StpSnapshot {
                    topology_change: true,
                    ports: vec![("p1".into(), PortState::Forwarding)],
                }),
            }],
            nat_flows: 9,
            workers: vec![WorkerSnapshot {
                id: 0,
                busy_seconds: 0.25,
                batches: [3, 0, 1, 0, 0, 0, 2],
                sleeps: 7,
                pressure_backoffs: 2,
                frames: 3 + 4 + 128,
            }],
        }
    }

    #[test]
    fn renders_the_families_in_prometheus_text() {
        let out = render(sample()).unwrap();
        for line in [
            "# TYPE vswitch_port_rx_packets_total counter",
            "vswitch_port_rx_packets_total{bridge=\"br0\",port=\"p1\"} 7",
            "vswitch_worker_cpu_pressure_backoffs_total{worker=\"0\"} 2",
            "vswitch_port_tx_bytes_total{bridge=\"br0\",port=\"p1\"} 500",
            "vswitch_port_drops_total{bridge=\"br0\",port=\"p1\",reason=\"no_egress\"} 3",
            "vswitch_port_drops_total{bridge=\"br0\",port=\"p1\",reason=\"malformed\"} 0",
            "vswitch_port_up{bridge=\"br0\",port=\"p1\"} 1",
            "vswitch_port_up{bridge=\"\",port=\"tun0\"} 0",
            "vswitch_fdb_entries{bridge=\"br0\"} 2",
            "vswitch_fdb_learning_events_total{bridge=\"br0\",event=\"new\"} 4",
            "vswitch_fdb_learning_events_total{bridge=\"br0\",event=\"moved\"} 1",
            "vswitch_stp_topology_changes_total{bridge=\"br0\"} 3",
            "vswitch_stp_topology_change{bridge=\"br0\"} 1",
            "vswitch_stp_port_state{bridge=\"br0\",port=\"p1\",state=\"forwarding\"} 1",
            "vswitch_stp_port_state{bridge=\"br0\",port=\"p1\",state=\"blocking\"} 0",
            "# TYPE vswitch_nat_flows gauge",
            "vswitch_nat_flows 9",
            "vswitch_worker_busy_seconds_total{worker=\"0\"} 0.25",
            "vswitch_worker_sleeps_total{worker=\"0\"} 7",
            "# TYPE vswitch_worker_batch_frames histogram",
            "vswitch_worker_batch_frames_bucket{worker=\"0\",le=\"1\"} 3",
            "vswitch_worker_batch_frames_bucket{worker=\"0\",le=\"4\"} 4",
            "vswitch_worker_batch_frames_bucket{worker=\"0\",le=\"64\"} 6",
            "vswitch_worker_batch_frames_bucket{worker=\"0\",le=\"+Inf\"} 6",
            "vswitch_worker_batch_frames_sum{worker=\"0\"} 135.0",
            "vswitch_worker_batch_frames_count{worker=\"0\"} 6",
        ] {
            assert!(
                out.lines().any(|l| l == line),
                "missing `{line}` in:\n{out}"
            );
        }
        // Every sample's family was declared, every family has help.
        assert!(!out.contains("# EOF"));
        for l in out.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = l.split(' ').nth(2).unwrap();
            assert!(out.contains(&format!("# HELP {name} ")), "{name}");
        }
    }

    #[test]
    fn an_empty_engine_still_renders() {
        let out = render(Snapshot::default()).unwrap();
        assert!(out.contains("vswitch_nat_flows 0"), "{out}");
        assert!(out.contains("vswitch_build_info{version="), "{out}");
        assert!(!out.contains("vswitch_port_rx"), "{out}");
    }

    /// `promtool check metrics` (Debian's `prometheus` package) accepts the
    /// output; skipped where promtool is not installed.
    #[test]
    fn promtool_accepts_the_output() {
        let Ok(mut child) = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("promtool not installed: skipping the check");
            return;
        };
        let out = render(sample()).unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(out.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "promtool check metrics: {}\n{}{}\n{out}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }

    fn routed(req: &str) -> Route {
        read_request(&mut req.as_bytes())
    }

    #[test]
    fn routes_requests() {
        assert_eq!(
            routed("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            routed("HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Route::Metrics { head: true }
        );
        assert_eq!(routed("GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(routed("GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(routed("POST /metrics HTTP/1.1\r\n\r\n"), Route::BadMethod);
        assert_eq!(routed("GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(routed("GET /metrics HTTP/1.1\r\n"), Route::BadRequest);
        assert_eq!(routed("\u{0}\u{ff}"), Route::BadRequest);
        let big = format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_REQUEST)
        );
        assert_eq!(routed(&big), Route::TooLarge);
    }
}
