//! udp-rr: UDP request/response round trips at a fixed request rate, for
//! netbench's RTT-vs-rate sweep.
//!
//! ```text
//! udp-rr server ADDR:PORT
//! udp-rr client ADDR:PORT --rate R --count N [--timeout-ms MS] [--size BYTES]
//! ```
//!
//! The server echoes every datagram back to its sender. The client sends
//! `count` requests at `rate` a second, each when it is due (an absolute
//! schedule: a late reply does not shift the next requests), waits for its
//! reply, and prints one JSON line: requests, replies, the round-trip
//! median, p99 and maximum in microseconds, and the rate it achieved.
//!
//! Why not ping or sockperf: both *spin* between requests at high rates
//! (iputils ping below 2 ms intervals keeps a core busy, and cannot send
//! faster than one request per millisecond; sockperf paces with a busy
//! loop), which keeps the client's CPU from ever idling. That favours a
//! switch that does its work on the client's CPU (the kernel bridge runs in
//! the sender's system call) and is not how request/response clients
//! behave: they sleep until the next request is due. This client sleeps
//! (timer slack 1 ns), so every row pays what an idle CPU costs.

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: udp-rr server ADDR:PORT\n       udp-rr client ADDR:PORT --rate R --count N [--timeout-ms MS] [--size BYTES]";

struct Client {
    server: SocketAddr,
    rate: f64,
    count: u64,
    timeout: Duration,
    size: usize,
}

fn parse_client(args: &[String]) -> Result<Client, String> {
    let server = args
        .first()
        .ok_or("client: the server's ADDR:PORT is missing")?
        .parse()
        .map_err(|e| format!("client: bad ADDR:PORT: {e}"))?;
    let mut c = Client {
        server,
        rate: 0.0,
        count: 0,
        timeout: Duration::from_secs(1),
        size: 32,
    };
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        let val = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |what: &str| -> Result<f64, String> {
            val.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| format!("{what} must be a positive number, not {val:?}"))
        };
        match flag.as_str() {
            "--rate" => c.rate = num("--rate")?,
            "--count" => c.count = num("--count")? as u64,
            "--timeout-ms" => c.timeout = Duration::from_secs_f64(num("--timeout-ms")? / 1000.0),
            "--size" => c.size = num("--size")? as usize,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if c.rate <= 0.0 || c.count == 0 {
        return Err("client: --rate and --count are required".into());
    }
    if !(16..=1400).contains(&c.size) {
        return Err("--size must be 16..1400 bytes".into());
    }
    Ok(c)
}

fn serve(addr: &str) -> Result<(), String> {
    let sock = UdpSocket::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let mut buf = [0u8; 2048];
    loop {
        let (n, peer) = sock
            .recv_from(&mut buf)
            .map_err(|e| format!("receive: {e}"))?;
        // A reply that cannot be sent (buffer full) is a lost round trip:
        // the client counts it.
        let _ = sock.send_to(&buf[..n], peer);
    }
}

/// The p-th percentile of sorted values, interpolated linearly between the
/// two nearest ranks (netbench's `percentile`).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let k = (sorted.len() - 1) as f64 * p / 100.0;
    let lo = k.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (k - lo as f64)
}

fn timer_slack_1ns() {
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes an integer argument and only
    // changes this thread's timer slack; no memory is passed.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

fn client(c: &Client) -> Result<String, String> {
    timer_slack_1ns();
    let local: SocketAddr = if c.server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal address")
    } else {
        "[::]:0".parse().expect("literal address")
    };
    let sock = UdpSocket::bind(local).map_err(|e| format!("bind: {e}"))?;
    sock.connect(c.server)
        .map_err(|e| format!("connect {}: {e}", c.server))?;
    let period = Duration::from_secs_f64(1.0 / c.rate);
    let mut req = vec![0u8; c.size];
    let mut buf = [0u8; 2048];
    let mut rtts = Vec::with_capacity(c.count as usize);
    let start = Instant::now();
    for seq in 0..c.count {
        let due = start + period.mul_f64(seq as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        req[..8].copy_from_slice(&seq.to_be_bytes());
        let sent = Instant::now();
        if sock.send(&req).is_err() {
            continue;
        }
        let deadline = sent + c.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left))
                .map_err(|e| format!("timeout: {e}"))?;
            match sock.recv(&mut buf) {
                Ok(n) if n >= 8 && buf[..8] == seq.to_be_bytes() => {
                    rtts.push(sent.elapsed().as_secs_f64() * 1e6);
                    break;
                }
                // A late reply to an earlier request: not this one.
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // ECONNREFUSED from an ICMP error: lost.
                Err(_) => break,
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    rtts.sort_by(f64::total_cmp);
    let num = |v: f64| {
        if v.is_finite() {
            format!("{v:.2}")
        } else {
            "null".into()
        }
    };
    Ok(format!(
        "{{\"requests\":{},\"replies\":{},\"median_us\":{},\"p99_us\":{},\"max_us\":{},\"rate\":{:.1}}}",
        c.count,
        rtts.len(),
        num(percentile(&rtts, 50.0)),
        num(percentile(&rtts, 99.0)),
        num(rtts.last().copied().unwrap_or(f64::NAN)),
        c.count as f64 / secs
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("server") if args.len() == 2 => serve(&args[1]),
        Some("client") => parse_client(&args[1..]).and_then(|c| {
            let line = client(&c)?;
            println!("{line}");
            Ok(())
        }),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(USAGE.to_string()),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp-rr: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_like_netbench() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert_eq!(percentile(&v, 100.0), 4.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn client_options_are_checked() {
        let a = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert!(parse_client(&a("10.0.0.1:9 --rate 100 --count 5")).is_ok());
        assert!(parse_client(&a("10.0.0.1:9 --rate 0 --count 5")).is_err());
        assert!(parse_client(&a("10.0.0.1:9 --rate 100")).is_err());
        assert!(parse_client(&a("nowhere --rate 1 --count 1")).is_err());
        assert!(parse_client(&a("10.0.0.1:9 --rate 1 --count 1 --size 8")).is_err());
        assert!(parse_client(&a("10.0.0.1:9 --rate 1 --count 1 --bogus 3")).is_err());
    }

    #[test]
    fn round_trips_over_loopback() {
        let srv = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = srv.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut b = [0u8; 2048];
            while let Ok((n, p)) = srv.recv_from(&mut b) {
                let _ = srv.send_to(&b[..n], p);
            }
        });
        let c = Client {
            server: addr,
            rate: 1000.0,
            count: 20,
            timeout: Duration::from_secs(1),
            size: 32,
        };
        let out = client(&c).unwrap();
        assert!(out.contains("\"requests\":20,\"replies\":20"), "{out}");
    }
}
