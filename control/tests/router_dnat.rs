//! Port forwarding (DNAT) through the router, in the docker0 topology:
//! `add-dnat` makes a server inside reachable from outside through the
//! outside address (the server sees the client's real address), from
//! inside through the same address (hairpin), for TCP and UDP; `del-dnat`
//! makes the port the router's again (TCP reset, port unreachable); `save`
//! keeps the rules.
//!
//! The helpers (topology, scripts) are `router_support`, shared with `router.rs`.

mod common;
mod router_support;

use common::*;
use router_support::*;
use serde_json::json;
use std::fs;
use std::time::Duration;

/// A TCP connection from `from` to `ip:port`: the client's answer.
fn tcp_try(from: &Host, ip: &str, port: &str) -> String {
    py_ok(&from.ns, TCP_CLIENT, &[ip, port], CMD_TIMEOUT)
}

fn udp_try(from: &Host, ip: &str, port: &str) -> String {
    py_ok(&from.ns, UDP_CLIENT, &[ip, port], CMD_TIMEOUT)
}

#[test]
fn router_dnat_tcp_udp_hairpin_and_removal() {
    let mut lab = Lab::with_daemon();
    let d = docker_config(&mut lab);
    let (c1, c2, srv) = (&d.c1, &d.c2, &d.srv);
    let c1_80 = format!("{}:80", c1.ip);
    let c1_5353 = format!("{}:5353", c1.ip);

    // Before: the port is the router's own; TCP is reset at once.
    assert_eq!(tcp_try(srv, &d.up_ip, "8080"), "refused");

    // Errors.
    let e = lab.ctl_err(&[
        "add-dnat", "--in", "nope", "--proto", "tcp", "--port", "8080", "--to", &c1_80,
    ]);
    assert!(e.contains("no router interface"), "{e}");
    let e = lab.ctl_err(&[
        "add-dnat",
        "--in",
        "up",
        "--proto",
        "tcp",
        "--port",
        "8080",
        "--to",
        "224.0.0.5:80",
    ]);
    assert!(e.contains("unicast"), "{e}");

    lab.ctl_ok(&[
        "add-dnat", "--in", "up", "--proto", "tcp", "--port", "8080", "--to", &c1_80,
    ]);
    lab.ctl_ok(&[
        "add-dnat", "--in", "up", "--proto", "udp", "--port", "5353", "--to", &c1.ip,
    ]);
    let e = lab.ctl_err(&[
        "add-dnat", "--in", "up", "--proto", "tcp", "--port", "8080", "--to", &c1_80,
    ]);
    assert!(e.contains("already forwarded"), "{e}");
    assert_eq!(
        lab.ctl_json(&["dnat-show"]),
        json!([
            {"in": "up", "proto": "tcp", "port": 8080, "to": c1_80},
            {"in": "up", "proto": "udp", "port": 5353, "to": c1_5353},
        ])
    );
    assert_eq!(
        json_array(lab.ctl_json(&["show"])["dnat"].clone(), "show dnat").len(),
        2
    );
    let table = lab.ctl_ok(&["dnat-show"]);
    assert!(table.contains("8080") && table.contains(&c1_80), "{table}");

    // TCP: srv reaches c1's server through up:8080; the server sees srv's
    // real address. Then c2 through the same address (hairpin): the server
    // sees the outside address.
    let tcp_srv = py_bg(&lab, &c1.ns, TCP_SERVER, &[&c1.ip, "80", "2"]);
    let r = tcp_try(srv, &d.up_ip, "8080");
    assert!(r.starts_with("ok echo:hi"), "{r}\n{}", diag(&lab));
    let r = tcp_try(c2, &d.up_ip, "8080");
    assert!(r.starts_with("ok echo:hi"), "hairpin: {r}\n{}", diag(&lab));
    // Only on the rule's interface and address: the inside gateway's
    // address keeps the port its own.
    assert_eq!(tcp_try(c2, &d.gw_ip, "8080"), "refused");
    let (_, out) = tcp_srv.finish(Duration::from_secs(10));
    let p = peers(&out);
    assert_eq!(p.len(), 2, "{out}");
    assert_eq!(p[0].0, srv.ip, "the server sees the client: {out}");
    assert_eq!(
        p[1].0, d.up_ip,
        "hairpin comes from the outside address: {out}"
    );

    // UDP the same.
    let udp_srv = py_bg(&lab, &c1.ns, UDP_SERVER, &[&c1.ip, "5353", "1"]);
    let r = udp_try(srv, &d.up_ip, "5353");
    assert_eq!(r, "ok echo:hi", "{}", diag(&lab));
    let (_, out) = udp_srv.finish(Duration::from_secs(25));
    assert_eq!(peers(&out)[0].0, srv.ip, "{out}");

    // The flows are listed with the forwarded port as outside endpoint.
    let flows = json_array(lab.ctl_json(&["nat-show"]), "nat-show");
    assert!(
        flows.iter().any(|f| f["inside"] == c1_80.as_str()
            && f["outside"] == format!("{}:8080", d.up_ip).as_str()),
        "{flows:?}"
    );

    // Removed: the router answers for itself again.
    lab.ctl_ok(&["del-dnat", "--in", "up", "--proto", "tcp", "--port", "8080"]);
    lab.ctl_ok(&["del-dnat", "--in", "up", "--proto", "udp", "--port", "5353"]);
    let e = lab.ctl_err(&["del-dnat", "--in", "up", "--proto", "tcp", "--port", "8080"]);
    assert!(e.contains("no port forwarding"), "{e}");
    assert_eq!(lab.ctl_json(&["dnat-show"]), json!([]));
    assert_eq!(tcp_try(srv, &d.up_ip, "8080"), "refused");
    assert_eq!(udp_try(srv, &d.up_ip, "5353"), "refused");
}

/// `save` keeps the rules; a daemon started from the file forwards again.
#[test]
fn router_dnat_save_restore() {
    let mut lab = Lab::new();
    let cfg = lab.path("vswitch.toml");
    let cfg_s = cfg.to_str().unwrap().to_string();
    lab.start_daemon(&["--config", &cfg_s]);
    let d = docker_config(&mut lab);
    let c1_80 = format!("{}:80", d.c1.ip);
    lab.ctl_ok(&[
        "add-dnat", "--in", "up", "--proto", "tcp", "--port", "8080", "--to", &c1_80,
    ]);
    lab.ctl_ok(&["save"]);
    let text = fs::read_to_string(&cfg).expect("save wrote the --config file");
    assert!(text.contains("[[dnat]]"), "{text}");
    let before = lab.ctl_json(&["dnat-show"]);

    let st = lab.stop_daemon();
    assert!(st.success(), "vswitchd exit: {st}");
    lab.start_daemon(&["--config", &cfg_s]);
    assert_eq!(lab.ctl_json(&["dnat-show"]), before, "config:\n{text}");
    configure_host(&lab, &d.c1.ns, &format!("{}/24", d.c1.ip), Some(&d.gw_ip));
    configure_host(&lab, &d.srv.ns, &format!("{}/24", d.srv.ip), None);

    let tcp_srv = py_bg(&lab, &d.c1.ns, TCP_SERVER, &[&d.c1.ip, "80", "1"]);
    let r = tcp_try(&d.srv, &d.up_ip, "8080");
    assert!(r.starts_with("ok echo:hi"), "{r}\n{}", diag(&lab));
    let (_, out) = tcp_srv.finish(Duration::from_secs(10));
    assert_eq!(peers(&out)[0].0, d.srv.ip, "{out}");
}
