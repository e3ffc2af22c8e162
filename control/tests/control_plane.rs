//! The control socket under abuse (issue 13): requests are bounded in size,
//! a client that never speaks or dribbles a byte a second does not hold up
//! the others (and is cut off at the request deadline), 100 clients at once
//! are all served, and malformed requests change nothing.

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn connect(lab: &Lab) -> UnixStream {
    let s = UnixStream::connect(&lab.sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Sends one raw line and reads the reply.
fn ask(s: &mut UnixStream, line: &[u8]) -> Value {
    s.write_all(line).unwrap();
    s.write_all(b"\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut reply = String::new();
    r.read_line(&mut reply).expect("reply line");
    serde_json::from_str(reply.trim()).unwrap_or_else(|e| panic!("reply not JSON ({e}): {reply:?}"))
}

#[test]
fn a_hundred_clients_at_once_are_served() {
    let lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let sock = lab.sock.clone();
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&sock).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut ok = 0;
                for _ in 0..5 {
                    let v = ask(&mut s, br#"{"cmd":"list-br"}"#);
                    if v["ok"] == true && v["result"][0]["name"] == "br0" {
                        ok += 1;
                    }
                }
                // Every client also changes something, all at once.
                let v = ask(
                    &mut s,
                    format!(r#"{{"cmd":"fdb-add","bridge":"br0","mac":"02:00:00:00:{:02x}:{:02x}","port":"p1"}}"#, i / 256, i % 256).as_bytes(),
                );
                (ok, v)
            })
        })
        .collect();
    let mut served = 0;
    for t in threads {
        let (ok, v) = t.join().expect("client thread");
        served += ok;
        // p1 does not exist: every client gets the same clear error.
        assert_eq!(v["ok"], false, "{v}");
        assert!(v["error"].as_str().unwrap_or("").contains("p1"), "{v}");
    }
    assert_eq!(
        served, 500,
        "not every request of 100 concurrent clients was answered"
    );
}

#[test]
fn silent_and_dribbling_clients_do_not_hold_up_others() {
    let lab = Lab::with_daemon();
    // 50 clients that connect and never speak.
    let idle: Vec<UnixStream> = (0..50).map(|_| connect(&lab)).collect();
    // One that sends a request a byte a second.
    let mut dribbler = connect(&lab);
    let dribble = std::thread::spawn(move || {
        let started = Instant::now();
        for b in br#"{"cmd":"list-br"}"#.iter().cycle() {
            if dribbler.write_all(&[*b]).is_err() {
                break;
            }
            if started.elapsed() > Duration::from_secs(15) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1000));
        }
        let mut r = BufReader::new(dribbler);
        let mut reply = String::new();
        let _ = r.read_line(&mut reply);
        (started.elapsed(), reply)
    });
    // Meanwhile everyone else is served at once.
    for i in 0..10 {
        let t = Instant::now();
        lab.add_br(&format!("br{i}"), &[]);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "add-br took {:?}",
            t.elapsed()
        );
    }
    let (took, reply) = dribble.join().expect("dribbler");
    assert!(
        reply.contains("not completed within 10 s"),
        "the dribbler was not cut off: {reply:?} after {took:?}"
    );
    assert!(
        took < Duration::from_secs(14),
        "cut off only after {took:?}"
    );
    drop(idle);
    assert_eq!(
        lab.ctl_json(&["list-br"]).as_array().map(Vec::len),
        Some(10)
    );
}

#[test]
fn oversized_and_malformed_requests_change_nothing() {
    let lab = Lab::with_daemon();
    lab.add_br("br0", &["--ageing", "60"]);
    let before = lab.ctl_json(&["show"]);
    let mut s = connect(&lab);
    // More than 1 MiB without a newline: refused, the connection closed.
    let big = vec![b'x'; (1 << 20) + 10];
    let v = ask(&mut s, &big);
    assert_eq!(v["ok"], false, "{v}");
    assert!(v["error"].as_str().unwrap().contains("longer than"), "{v}");
    for bad in [
        &b"not json"[..],
        br#"{"cmd":"frobnicate"}"#,
        br#"{"cmd":"add-br"}"#,
        br#"{"cmd":"add-br","name":"br1","ageing_s":"soon"}"#,
        br#"{"cmd":"add-br","name":"br1","ageing_s":0}"#,
        br#"{"cmd":"set-br","name":"br0","ageing_s":99999999999}"#,
        br#"{"cmd":"add-port","bridge":"br0","port":{"name":"../../x","type":"tap"}}"#,
        br#"{"cmd":"del-br","name":"br0","extra":1}"#,
        br#"[1,2,3]"#,
        b"\xff\xfe\x00",
    ] {
        let mut s = connect(&lab);
        let v = ask(&mut s, bad);
        assert_eq!(
            v["ok"],
            false,
            "{} was accepted: {v}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(
        before,
        lab.ctl_json(&["show"]),
        "a malformed request changed the switch"
    );
}
