//! The router's tables: interfaces, routes and SNAT rules as the control
//! requests change them. (Forwarding is tested through the pipeline, in
//! `pipeline/tests.rs`.)

use super::*;
use crate::config::{RifConfig, RifType};

fn rif(name: &str, addr: &str, pid: u32) -> Rif {
    let cfg = RifConfig {
        name: name.into(),
        kind: RifType::Bridge,
        bridge: Some("br0".into()),
        vlan: None,
        addr: addr.parse().unwrap(),
        mac: None,
        netns: None,
        ifname: None,
        mtu: None,
    };
    Rif {
        name: name.into(),
        kind: RifKind::Svi { bridge: 0, vlan: 1 },
        addr: cfg.addr,
        mac: rif::stable_mac(name),
        mtu: 1500,
        pid,
        cfg,
    }
}

fn route(prefix: &str, via: Option<&str>, dev: Option<&str>) -> RouteConfig {
    RouteConfig {
        prefix: prefix.parse().unwrap(),
        via: via.map(|v| v.parse().unwrap()),
        dev: dev.map(str::to_string),
    }
}

fn ip(s: &str) -> u32 {
    u32::from(s.parse::<Ipv4Addr>().unwrap())
}

#[test]
fn connected_and_static_routes() {
    let mut r = Router::new();
    let gw = r.add_rif(rif("gw", "10.0.1.1/24", 1)).unwrap();
    let up = r.add_rif(rif("up", "10.0.2.1/24", 2)).unwrap();
    assert_eq!(r.lookup(ip("10.0.1.7")), Some(NextHop { rif: gw, gw: 0 }));
    assert_eq!(r.lookup(ip("10.9.0.1")), None);
    r.add_route(route("0.0.0.0/0", Some("10.0.2.254"), None))
        .unwrap();
    r.add_route(route("10.8.0.0/16", None, Some("gw"))).unwrap();
    assert_eq!(
        r.lookup(ip("10.9.0.1")),
        Some(NextHop {
            rif: up,
            gw: ip("10.0.2.254")
        })
    );
    assert_eq!(r.lookup(ip("10.8.3.3")), Some(NextHop { rif: gw, gw: 0 }));
    let list = r.route_list();
    assert_eq!(list.len(), 4);
    assert_eq!(list.iter().filter(|x| x.connected).count(), 2);
    // Errors say what is wrong.
    let e = r
        .add_route(route("10.7.0.0/16", Some("10.5.5.5"), None))
        .unwrap_err();
    assert!(e.contains("not on the subnet"), "{e}");
    let e = r
        .add_route(route("10.7.0.1/16", None, Some("gw")))
        .unwrap_err();
    assert!(e.contains("host bits"), "{e}");
    let e = r
        .add_route(route("10.0.1.0/24", None, Some("up")))
        .unwrap_err();
    assert!(e.contains("connected"), "{e}");
    assert!(r
        .add_route(route("10.6.0.0/16", None, Some("nope")))
        .is_err());
    r.del_route("10.8.0.0/16".parse().unwrap()).unwrap();
    assert!(r.del_route("10.8.0.0/16".parse().unwrap()).is_err());
    assert_eq!(
        r.lookup(ip("10.8.3.3")),
        Some(NextHop {
            rif: up,
            gw: ip("10.0.2.254")
        })
    );
}

#[test]
fn deleting_an_interface_takes_what_depends_on_it() {
    let mut r = Router::new();
    r.add_rif(rif("gw", "10.0.1.1/24", 1)).unwrap();
    let up = r.add_rif(rif("up", "10.0.2.1/24", 2)).unwrap();
    r.add_route(route("0.0.0.0/0", Some("10.0.2.254"), None))
        .unwrap();
    r.add_route(route("10.8.0.0/16", None, Some("up"))).unwrap();
    r.add_snat(SnatConfig {
        out: "up".into(),
        to: None,
        src: None,
    })
    .unwrap();
    assert_eq!(r.snat_to("up").as_deref(), Some("10.0.2.1"));
    assert!(r.del_rif(up).is_some());
    assert_eq!(
        r.static_routes().count(),
        0,
        "routes via it and out of it are gone"
    );
    assert_eq!(r.snat_rules().count(), 0);
    assert_eq!(r.lookup(ip("10.9.0.1")), None);
    assert_eq!(r.route_list().len(), 1);
}

#[test]
fn addresses_and_rules_are_checked() {
    let mut r = Router::new();
    r.add_rif(rif("gw", "10.0.1.1/24", 1)).unwrap();
    assert!(
        r.add_rif(rif("gw2", "10.0.1.1/24", 2)).is_err(),
        "same address"
    );
    assert!(
        r.add_rif(rif("gw3", "10.0.1.9/24", 3)).is_err(),
        "same subnet"
    );
    r.add_rif(rif("up", "10.0.2.1/24", 4)).unwrap();
    let e = r
        .add_snat(SnatConfig {
            out: "nope".into(),
            to: None,
            src: None,
        })
        .unwrap_err();
    assert!(e.contains("nope"));
    r.add_snat(SnatConfig {
        out: "up".into(),
        to: Some("10.0.2.10-10.0.2.20".into()),
        src: Some("10.0.1.0/24".parse().unwrap()),
    })
    .unwrap();
    assert_eq!(r.snat_to("up").as_deref(), Some("10.0.2.10-10.0.2.20"));
    let e = r
        .add_snat(SnatConfig {
            out: "gw".into(),
            to: Some("10.0.2.15".into()),
            src: None,
        })
        .unwrap_err();
    assert!(e.contains("overlaps"), "{e}");
    assert_eq!(r.del_snat("up").unwrap(), 0);
    assert!(r.del_snat("up").is_err());
}

#[test]
fn many_static_routes_one_by_one_stay_fast_and_bounded() {
    // Each change repaints only its prefix (no rebuild): the whole limit
    // goes in one by one in well under a second in release, seconds in
    // debug, never minutes.
    let mut r = Router::new();
    r.add_rif(rif("gw", "10.0.1.1/24", 1)).unwrap();
    for i in 0..MAX_STATIC_ROUTES as u32 {
        let p = format!("{}/32", Ipv4Addr::from(0x0b00_0000 | i));
        r.add_route(route(&p, Some("10.0.1.9"), None)).unwrap();
    }
    let e = r
        .add_route(route("12.0.0.0/8", Some("10.0.1.9"), None))
        .unwrap_err();
    assert!(e.contains("too many"), "{e}");
    // Replacing one that exists is not a new one.
    r.add_route(route("11.0.0.7/32", None, Some("gw"))).unwrap();
    assert_eq!(r.lookup(ip("11.0.0.7")).map(|n| n.gw), Some(0));
    assert_eq!(r.lookup(ip("11.0.0.8")).map(|n| n.gw), Some(ip("10.0.1.9")));
    r.del_route("11.0.0.8/32".parse().unwrap()).unwrap();
    assert_eq!(r.lookup(ip("11.0.0.8")), None);
    assert_eq!(r.static_routes().count(), MAX_STATIC_ROUTES - 1);
    // Interfaces come and go beside them without a rebuild each.
    let mut ids = Vec::new();
    for i in 0..(MAX_RIFS as u32 - 1) {
        let a = Ipv4Addr::from(0x1400_0001 | (i << 8));
        ids.push(
            r.add_rif(rif(&format!("r{i}"), &format!("{a}/24"), 10 + i))
                .unwrap(),
        );
    }
    assert!(
        r.add_rif(rif("one_more", "10.9.9.1/24", 5000)).is_err(),
        "at the limit"
    );
    assert_eq!(r.lookup(ip("20.0.5.77")).map(|n| n.rif), Some(ids[5]));
    for id in ids {
        assert!(r.del_rif(id).is_some());
    }
    assert_eq!(r.lookup(ip("20.0.5.77")), None);
    assert_eq!(
        r.static_routes().count(),
        MAX_STATIC_ROUTES - 1,
        "gw's routes stay"
    );
}
