//! `vswitchd --metrics ADDR:PORT`: Prometheus metrics on `/metrics`.
//!
//! The daemon runs in the lab's switch namespace with its metrics on
//! 127.0.0.1 there; scrapes run inside that namespace too (python3's
//! urllib). Counters are compared with `stats --json`, `list-br`,
//! `stp-show` and `nat-show` taken around the scrape: a pair of identical
//! readings around a scrape is a moment nothing moved.

mod common;
mod router_support;

use common::*;
use router_support::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const METRICS_ADDR: &str = "127.0.0.1:9477";

/// GET `URL`: prints the status, the Content-Type, then the body.
const FETCH: &str = r#"
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=5)
    status, ctype, body = r.status, r.headers.get("Content-Type"), r.read()
except urllib.error.HTTPError as e:
    status, ctype, body = e.code, e.headers.get("Content-Type"), e.read()
sys.stdout.write("%d\n%s\n" % (status, ctype))
sys.stdout.write(body.decode())
"#;

struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

fn fetch(lab: &Lab, path: &str) -> Reply {
    let url = format!("http://{METRICS_ADDR}{path}");
    let out = lab.ns_ok(&lab.sw, &["python3", "-c", FETCH, &url]);
    let mut it = out.splitn(3, '\n');
    let status = it.next().unwrap_or("").parse().expect("status line");
    let content_type = it.next().unwrap_or("").to_string();
    let body = it.next().unwrap_or("").to_string();
    Reply {
        status,
        content_type,
        body,
    }
}

type Labels = BTreeMap<String, String>;

/// The samples of a Prometheus text exposition: (name, labels, value).
fn samples(text: &str) -> Vec<(String, Labels, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("sample line has a value");
        let name = line[..name_end].to_string();
        let mut labels = Labels::new();
        let mut rest = &line[name_end..];
        if rest.starts_with('{') {
            // key="value" pairs; values may hold \\, \" and \n escapes.
            let mut chars = rest[1..].char_indices();
            let mut key = String::new();
            let mut val = String::new();
            let mut in_val = false;
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if in_val {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, 'n')) => val.push('\n'),
                            Some((_, e)) => val.push(e),
                            None => break,
                        },
                        '"' => {
                            labels.insert(std::mem::take(&mut key), std::mem::take(&mut val));
                            in_val = false;
                        }
                        c => val.push(c),
                    }
                    continue;
                }
                match c {
                    '}' => {
                        end = Some(i + 2);
                        break;
                    }
                    '"' => in_val = true,
                    '=' | ',' | ' ' => {}
                    c => key.push(c),
                }
            }
            rest = &rest[end.unwrap_or_else(|| panic!("unterminated labels: {line}"))..];
        }
        let value = rest.split_whitespace().next().expect("value");
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|e| panic!("bad value in `{line}`: {e}")),
        };
        out.push((name, labels, value));
    }
    out
}

/// The value of the sample `name` with exactly these labels.
fn value(s: &[(String, Labels, f64)], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    s.iter()
        .find(|(n, l, _)| n == name && *l == want)
        .map(|(_, _, v)| *v)
}

fn must(s: &[(String, Labels, f64)], name: &str, labels: &[(&str, &str)]) -> f64 {
    value(s, name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}

/// What the control socket says, for comparing with a scrape.
fn readings(lab: &Lab, bridges_with_stp: &[&str]) -> Value {
    let mut v = serde_json::json!({
        "stats": lab.ctl_json(&["stats"]),
        "list-br": lab.ctl_json(&["list-br"]),
        "nat-show": lab.ctl_json(&["nat-show"]),
    });
    for b in bridges_with_stp {
        v[format!("stp-show {b}")] = lab.ctl_json(&["stp-show", b]);
    }
    v
}

/// A scrape at a moment nothing changed: the control socket's readings
/// just before and just after it are identical. Returns both.
fn consistent_scrape(lab: &Lab, stp: &[&str]) -> (Value, String) {
    let mut last = String::new();
    for _ in 0..20 {
        let before = readings(lab, stp);
        let r = fetch(lab, "/metrics");
        assert_eq!(r.status, 200, "{}", r.body);
        let after = readings(lab, stp);
        if before == after {
            return (before, r.body);
        }
        last = format!("before: {before}\nafter: {after}");
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("the switch never held still around a scrape\n{last}");
}

/// Port counters, drops by reason, link state, FDB size and learning as
/// `stats --json` and `list-br` say at the same moment.
fn check_ports_and_bridges(
    rd: &Value,
    s: &[(String, Labels, f64)],
    bridge_of: &dyn Fn(&str) -> String,
) {
    let stats = rd["stats"].as_array().expect("stats array");
    assert!(!stats.is_empty());
    for p in stats {
        let port = p["port"].as_str().expect("port name");
        let br = bridge_of(port);
        let l = [("bridge", br.as_str()), ("port", port)];
        for (metric, key) in [
            ("vswitch_port_rx_packets_total", "rx_packets"),
            ("vswitch_port_tx_packets_total", "tx_packets"),
            ("vswitch_port_rx_bytes_total", "rx_bytes"),
            ("vswitch_port_tx_bytes_total", "tx_bytes"),
        ] {
            assert_eq!(
                must(s, metric, &l),
                p[key].as_u64().expect("counter") as f64,
                "{metric} of {port} differs from stats: {p}"
            );
        }
        let drops = p["drops"].as_object().expect("drops");
        for r in DROP_REASONS {
            assert!(drops.contains_key(*r), "{r}");
        }
        for (reason, n) in drops {
            let got = must(
                s,
                "vswitch_port_drops_total",
                &[("bridge", &br), ("port", port), ("reason", reason)],
            );
            assert_eq!(got, n.as_u64().unwrap() as f64, "drops {reason} of {port}");
        }
        let up = must(s, "vswitch_port_up", &l);
        assert!(up == 0.0 || up == 1.0);
    }
    for b in rd["list-br"].as_array().expect("list-br array") {
        let name = b["name"].as_str().unwrap();
        assert_eq!(
            must(s, "vswitch_fdb_entries", &[("bridge", name)]),
            b["fdb_entries"].as_u64().unwrap() as f64,
            "fdb entries of {name}"
        );
        for ev in ["new", "moved"] {
            must(
                s,
                "vswitch_fdb_learning_events_total",
                &[("bridge", name), ("event", ev)],
            );
        }
        must(s, "vswitch_stp_topology_changes_total", &[("bridge", name)]);
    }
}

/// `promtool check metrics` accepts the exposition (skipped, with a note,
/// where Debian's `prometheus` package is not installed).
fn promtool_check(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("note: promtool not installed (Debian package `prometheus`): check skipped");
        return;
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let o = child.wait_with_output().expect("promtool");
    assert!(
        o.status.success(),
        "promtool check metrics: {}\n{}{}\n--- exposition ---\n{text}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Two hosts on TAP ports exchange traffic; once it stopped, `/metrics`
/// says what `stats --json` and `list-br` say, has the worker metrics,
/// passes promtool, and other paths are 404.
#[test]
fn metrics_match_stats() {
    let mut lab = Lab::new();
    lab.start_daemon(&["--metrics", METRICS_ADDR]);
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    lab.assert_all_ping(&[&h1, &h2]);

    let (rd, text) = consistent_scrape(&lab, &[]);
    let s = samples(&text);
    check_ports_and_bridges(&rd, &s, &|_| "br0".to_string());
    for p in ["p1", "p2"] {
        let l = [("bridge", "br0"), ("port", p)];
        assert!(must(&s, "vswitch_port_rx_packets_total", &l) > 0.0);
        assert_eq!(must(&s, "vswitch_port_up", &l), 1.0, "{p} is up");
    }
    assert!(must(&s, "vswitch_fdb_entries", &[("bridge", "br0")]) >= 2.0);
    assert!(
        must(
            &s,
            "vswitch_fdb_learning_events_total",
            &[("bridge", "br0"), ("event", "new")]
        ) >= 2.0,
        "both hosts were learned"
    );
    assert_eq!(must(&s, "vswitch_nat_flows", &[]), 0.0);

    // Workers: busy time and the batch-size histogram, one per worker.
    let w = [("worker", "0")];
    assert!(must(&s, "vswitch_worker_busy_seconds_total", &w) > 0.0);
    let batches = must(&s, "vswitch_worker_batch_frames_count", &w);
    let frames = must(&s, "vswitch_worker_batch_frames_sum", &w);
    assert!(batches > 0.0 && frames >= batches, "{batches} {frames}");
    assert_eq!(
        must(
            &s,
            "vswitch_worker_batch_frames_bucket",
            &[("worker", "0"), ("le", "+Inf")]
        ),
        batches
    );
    let rx_total: f64 = ["p1", "p2"]
        .iter()
        .map(|p| {
            must(
                &s,
                "vswitch_port_rx_packets_total",
                &[("bridge", "br0"), ("port", p)],
            )
        })
        .sum();
    assert_eq!(frames, rx_total, "every received frame is in one batch");

    promtool_check(&text);

    let r = fetch(&lab, "/metrics");
    assert!(
        r.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        r.content_type
    );
    assert_eq!(fetch(&lab, "/").status, 404);
    assert_eq!(fetch(&lab, "/metrics/x").status, 404);
}

/// With the router (docker0 pattern: SNAT out of `up`) and a bridge with
/// spanning tree on: router interfaces have counters with their bridge,
/// `vswitch_nat_flows` is the number of `nat-show` rows, STP port states
/// are those of `stp-show`, and the topology change of a port reaching
/// forwarding is counted.
#[test]
fn metrics_router_nat_and_stp() {
    let mut lab = Lab::new();
    lab.start_daemon(&["--metrics", METRICS_ADDR]);
    let d = docker_config(&mut lab);
    assert_ping(&lab, &d.c1, &d.srv.ip);
    assert_ping(&lab, &d.c2, &d.srv.ip);
    lab.add_br("brs", &["--stp"]);
    lab.ctl_ok(&[
        "set-br",
        "brs",
        "--hello",
        "1",
        "--max-age",
        "6",
        "--forward-delay",
        "4",
    ]);
    lab.ctl_ok(&["add-port", "brs", "s1", "--type", "tap"]);
    lab.ctl_ok(&["add-port", "brs", "s2", "--type", "tap"]);

    let bridge_of = |p: &str| -> String {
        match p {
            "c1" | "c2" | "gw" => "brin",
            "srv" | "up" => "brout",
            "s1" | "s2" => "brs",
            other => panic!("unexpected port {other}"),
        }
        .to_string()
    };
    let (rd, text) = consistent_scrape(&lab, &["brs"]);
    let s = samples(&text);
    check_ports_and_bridges(&rd, &s, &bridge_of);
    let flows = rd["nat-show"].as_array().expect("nat-show").len();
    assert!(flows >= 2, "the pings made NAT flows: {}", rd["nat-show"]);
    assert_eq!(must(&s, "vswitch_nat_flows", &[]), flows as f64);
    for rif in ["gw", "up"] {
        let l = [("bridge", bridge_of(rif)), ("port", rif.to_string())];
        let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert!(must(&s, "vswitch_port_rx_packets_total", &l) > 0.0, "{rif}");
    }
    check_stp(&rd, &s);
    promtool_check(&text);

    // Forward delay 4 s: the ports reach forwarding after 8 s, a topology
    // change the root bridge detects.
    let forwarding = wait_until(Duration::from_secs(20), || {
        let s = samples(&fetch(&lab, "/metrics").body);
        ["s1", "s2"].iter().all(|p| {
            value(
                &s,
                "vswitch_stp_port_state",
                &[("bridge", "brs"), ("port", p), ("state", "forwarding")],
            ) == Some(1.0)
        })
    });
    assert!(forwarding, "{}", lab.ctl_ok(&["stp-show", "brs"]));
    let (rd, text) = consistent_scrape(&lab, &["brs"]);
    let s = samples(&text);
    check_stp(&rd, &s);
    assert!(
        must(
            &s,
            "vswitch_stp_topology_changes_total",
            &[("bridge", "brs")]
        ) >= 1.0
    );
    // Bridges without STP have no state samples but do have the counter.
    assert_eq!(
        must(
            &s,
            "vswitch_stp_topology_changes_total",
            &[("bridge", "brin")]
        ),
        0.0
    );
    assert!(!s
        .iter()
        .any(|(n, l, _)| n == "vswitch_stp_port_state" && l["bridge"] != "brs"));
}

/// Per port of `brs`: exactly one state sample is 1, the one `stp-show`
/// names; the topology change flag agrees.
fn check_stp(rd: &Value, s: &[(String, Labels, f64)]) {
    let show = &rd["stp-show brs"];
    for p in show["ports"].as_array().expect("stp-show ports") {
        let port = p["name"].as_str().unwrap();
        let state = p["state"].as_str().unwrap();
        for st in [
            "disabled",
            "blocking",
            "listening",
            "learning",
            "forwarding",
        ] {
            let want = if st == state { 1.0 } else { 0.0 };
            assert_eq!(
                must(
                    s,
                    "vswitch_stp_port_state",
                    &[("bridge", "brs"), ("port", port), ("state", st)]
                ),
                want,
                "{port} is {state} in stp-show"
            );
        }
    }
    let tc = if show["topology_change"] == true {
        1.0
    } else {
        0.0
    };
    assert_eq!(
        must(s, "vswitch_stp_topology_change", &[("bridge", "brs")]),
        tc
    );
}

/// Metrics are off unless asked for; an address that cannot be bound stops
/// the start with one `error:` line naming the flag.
#[test]
fn metrics_off_by_default_and_bad_address_fails() {
    let mut lab = Lab::new();
    lab.start_daemon(&[]);
    let listening = lab.ns_ok(&lab.sw, &["ss", "-Hltn"]);
    assert!(listening.trim().is_empty(), "no TCP listener: {listening}");

    for bad in ["10.255.255.1:9477", "not-an-address", "127.0.0.1:99999"] {
        let sock = lab.path(&format!("bad-{}.sock", bad.len()));
        let o = output_timeout(lab.daemon_command(&sock, &["--metrics", bad]), CMD_TIMEOUT);
        assert!(!o.status.success(), "{}", show_output(bad, &o));
        let err = String::from_utf8_lossy(&o.stderr);
        let line = err
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("no error line: {err}"));
        assert!(line.contains("--metrics"), "{line}");
        assert!(!sock.exists(), "no control socket after a failed start");
    }

    // The address in use (by a second daemon's metrics) also fails.
    lab.stop_daemon();
    lab.start_daemon(&["--metrics", METRICS_ADDR]);
    let sock = lab.path("second.sock");
    let o = output_timeout(
        lab.daemon_command(&sock, &["--metrics", METRICS_ADDR]),
        CMD_TIMEOUT,
    );
    assert!(!o.status.success(), "{}", show_output("in use", &o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("error: --metrics"),
        "{}",
        show_output("in use", &o)
    );
}

/// A real Prometheus (Debian's `prometheus`) in the switch namespace
/// scrapes the daemon: the target is up and the port counters are there.
/// Skipped where prometheus is not installed.
#[test]
fn real_prometheus_scrapes_it() {
    if run("prometheus", &["--version"]).status.code() != Some(0) {
        eprintln!("note: prometheus not installed (Debian package `prometheus`): test skipped");
        return;
    }
    let mut lab = Lab::new();
    lab.start_daemon(&["--metrics", METRICS_ADDR]);
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    lab.assert_all_ping(&[&h1, &h2]);

    let cfg = lab.path("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: vswitch\n    static_configs:\n      - targets: ['{METRICS_ADDR}']\n"
        ),
    )
    .expect("write prometheus.yml");
    let data = lab.path("prometheus-data");
    let _prom = lab.ns_spawn(
        &lab.sw,
        &[
            "prometheus",
            &format!("--config.file={}", cfg.display()),
            &format!("--storage.tsdb.path={}", data.display()),
            "--web.listen-address=127.0.0.1:9090",
        ],
        false,
    );
    let query = |q: &str| -> Option<Value> {
        let url = format!("http://127.0.0.1:9090/api/v1/query?query={q}");
        let o = lab.ns_exec(&lab.sw, &["python3", "-c", FETCH, &url]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let body = out.splitn(3, '\n').nth(2)?;
        let v: Value = serde_json::from_str(body).ok()?;
        v["data"]["result"].as_array()?.first().cloned()
    };
    let mut last = None;
    let ok = wait_until(Duration::from_secs(30), || {
        last = query("vswitch_port_rx_packets_total%7Bport%3D%22p1%22%7D");
        last.as_ref().is_some_and(|r| {
            r["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v > 0.0)
        })
    });
    assert!(ok, "prometheus has no p1 counter: {last:?}");
    let up = query("up%7Bjob%3D%22vswitch%22%7D").expect("up series");
    assert_eq!(up["value"][1], "1", "{up}");
    let health = query("scrape_samples_scraped").expect("scrape_samples_scraped");
    assert!(
        health["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v > 10.0),
        "{health}"
    );
}

/// A worker counter (`NAME_total`) summed over the workers.
fn worker_total(lab: &Lab, name: &str) -> f64 {
    let r = fetch(lab, "/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    let name = format!("{name}_total");
    samples(&r.body)
        .iter()
        .filter(|(n, _, _)| *n == name)
        .map(|(_, _, v)| *v)
        .sum()
}

/// Worker sleeps (`vswitch_worker_sleeps_total`) summed over the workers.
fn sleeps(lab: &Lab) -> f64 {
    worker_total(lab, "vswitch_worker_sleeps")
}

/// Busy-poll back-offs under CPU pressure, summed over the workers.
fn pressure_backoffs(lab: &Lab) -> f64 {
    worker_total(lab, "vswitch_worker_cpu_pressure_backoffs")
}

/// Busy loops, one process each, ended (by PID) when dropped.
struct Hogs(Vec<std::process::Child>);

impl Hogs {
    /// `n` busy loops at nice 19: they wait for a CPU whenever anything
    /// else wants one (PSI counts that), and take little from the tests
    /// running beside this one.
    fn spawn(n: usize) -> Hogs {
        let mut h = Hogs(Vec::new());
        for _ in 0..n {
            // Pushed one by one: a failed spawn leaves the others to Drop.
            h.0.push(
                std::process::Command::new("nice")
                    .args(["-n", "19", "sh", "-c", "while :; do :; done"])
                    .spawn()
                    .expect("spawn nice sh"),
            );
        }
        h
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// With other tasks waiting for a CPU (a busy loop per CPU and one more),
/// the default policy stops spinning (Linux PSI, dataplane/src/engine/
/// pressure.rs): the back-offs are counted, and traffic still flows.
#[test]
fn busy_poll_backs_off_under_cpu_pressure() {
    if std::fs::read_to_string("/proc/pressure/cpu").is_err() {
        eprintln!("skipped: this kernel has no /proc/pressure/cpu (PSI)");
        return;
    }
    let mut lab = Lab::new();
    lab.start_daemon(&["--metrics", METRICS_ADDR, "--workers", "1"]);
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    lab.assert_all_ping(&[&h1, &h2]);
    let before = pressure_backoffs(&lab);
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hogs = Hogs::spawn(cpus + 1);
    let out = lab.ns_ok(
        &h1.ns,
        &[
            "ping", "-n", "-q", "-i", "0.01", "-c", "200", "-w", "30", &h2.ip,
        ],
    );
    drop(hogs);
    assert!(out.contains("200 received"), "{out}");
    let during = pressure_backoffs(&lab) - before;
    eprintln!(
        "{during} busy-poll back-offs during 200 pings next to {} busy loops",
        cpus + 1
    );
    assert!(during >= 1.0, "no back-off under CPU pressure");
}

/// The busy-poll policies, told apart by how often the workers sleep, which
/// is what costs request/response traffic a thread wake-up per request:
/// 200 pings at 100 a second through the defaults are spun through (the
/// adaptive window covers 10 ms gaps), with --busy-poll-us 0
/// --busy-poll-max-us 0 every request meets a sleeping worker, and with
/// --latency a worker never sleeps, not even idle. An idle switch with the
/// defaults sleeps (its timers wake it).
#[test]
fn busy_poll_policies_by_worker_sleeps() {
    const PINGS: f64 = 200.0;
    for (flags, what) in [
        (&[][..], "defaults"),
        (
            &["--busy-poll-us", "0", "--busy-poll-max-us", "0"][..],
            "never spin",
        ),
        (&["--latency"][..], "latency"),
    ] {
        let mut lab = Lab::new();
        let mut args = vec!["--metrics", METRICS_ADDR, "--workers", "1"];
        args.extend_from_slice(flags);
        lab.start_daemon(&args);
        lab.add_br("br0", &[]);
        let h1 = lab.tap_host("br0", 1);
        let h2 = lab.tap_host("br0", 2);
        lab.assert_all_ping(&[&h1, &h2]);
        let before = sleeps(&lab);
        let backoffs_before = pressure_backoffs(&lab);
        let out = lab.ns_ok(
            &h1.ns,
            &[
                "ping", "-n", "-q", "-i", "0.01", "-c", "200", "-w", "20", &h2.ip,
            ],
        );
        assert!(out.contains("200 received"), "{what}: {out}");
        let during = sleeps(&lab) - before;
        std::thread::sleep(Duration::from_millis(1500));
        let idle = sleeps(&lab) - before - during;
        eprintln!("{what}: {during} sleeps during 200 pings, {idle} idle in 1.5 s");
        match what {
            "defaults" => {
                // Unless other tasks (tests running in parallel) waited for
                // a CPU meanwhile: then the worker rightly stopped spinning.
                let pressed = pressure_backoffs(&lab) > backoffs_before;
                assert!(
                    during < PINGS / 4.0 || pressed,
                    "{what}: {during} sleeps for 200 pings"
                );
                assert!(
                    idle >= 3.0,
                    "{what}: an idle worker sleeps ({idle} in 1.5 s)"
                );
            }
            "never spin" => assert!(during >= PINGS, "{what}: {during} sleeps for 200 pings"),
            _ => assert_eq!(during + idle, 0.0, "{what}: the worker slept"),
        }
    }
}
