//! The agent's decision, as a pure function: from vswitchd's state, the
//! speaker's EVPN RIB and what the agent has programmed so far, the actions
//! that make them agree.
//!
//! - Advertised (RFC 7432 §9.1 local learning): per VXLAN port one type-3
//!   route (§11.1; RD `local:VNI`, RT `ASN:VNI`, PMSI tunnel ingress
//!   replication to `local` with the VNI as label, RFC 8365 §5.1.3), and
//!   per MAC learned on a non-VXLAN port in the port's VLAN one type-2 route
//!   (§7.2; label = VNI, next hop = `local`). Our routes in the RIB that are
//!   no longer wanted are withdrawn; wanted ones missing (a restarted
//!   speaker) are advertised again.
//! - Imported (§9.2 remote learning) by route target `ASN:VNI`: a remote
//!   type-3 route puts its PMSI tunnel endpoint (or originator address) in
//!   the port's flood list; a remote type-2 route makes a static FDB entry
//!   behind the port with the route's next hop as VTEP. A MAC learned
//!   locally is never pointed at a remote VTEP. When several VTEPs
//!   advertise one MAC, the highest MAC Mobility sequence number wins
//!   (§15), then the most recently received route, then the lowest address.
//! - Only what the agent added is ever removed: flood-list entries and
//!   static entries configured by hand stay.

use super::model::*;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

/// The agent's settings that the decision depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The AS number in the route targets (`ASN:VNI`).
    pub asn: u32,
}

/// The actions that bring vswitchd and the RIB in line with each other.
pub fn reconcile(local: &LocalState, rib: &[Path], done: &Programmed, s: &Settings) -> Vec<Action> {
    plan(local, rib, done, s, false)
}

/// On shutdown: withdraw every route of ours, take out what the agent put
/// into vswitchd.
pub fn shutdown(local: &LocalState, rib: &[Path], done: &Programmed, s: &Settings) -> Vec<Action> {
    plan(local, rib, done, s, true)
}

/// The routes this host should advertise.
pub fn wanted_adverts(local: &LocalState, s: &Settings) -> BTreeSet<Advert> {
    let vxlan: BTreeSet<&str> = local.ports.iter().map(|p| p.name.as_str()).collect();
    let mut out = BTreeSet::new();
    for p in &local.ports {
        out.extend(Advert::imet(s.asn, p.local, p.vni));
        let Some(vlan) = p.vlan else { continue };
        let rows = local.fdb.get(&p.bridge).map(Vec::as_slice).unwrap_or(&[]);
        for e in rows {
            if e.vlan == vlan && e.vtep.is_none() && !vxlan.contains(e.port.as_str()) {
                out.extend(Advert::mac(s.asn, p.local, p.vni, e.mac));
            }
        }
    }
    out
}

fn v4(ip: &IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(*a),
        IpAddr::V6(_) => None,
    }
}

fn plan(
    local: &LocalState,
    rib: &[Path],
    done: &Programmed,
    s: &Settings,
    shutting_down: bool,
) -> Vec<Action> {
    let addrs = local.local_addrs();
    let mut ours_admins = addrs.clone();
    ours_admins.extend(done.locals.iter().copied());
    let is_ours = |p: &Path| {
        p.nlri
            .rd()
            .admin_ip()
            .is_some_and(|a| ours_admins.contains(&a))
    };

    // --- advertisements ---
    let wanted = if shutting_down {
        BTreeSet::new()
    } else {
        wanted_adverts(local, s)
    };
    let own: Vec<&Path> = rib.iter().filter(|p| p.local && is_ours(p)).collect();
    let mut withdraw = Vec::new();
    let mut advertise = Vec::new();
    let wanted_nlri: BTreeSet<&Nlri> = wanted.iter().map(|a| &a.nlri).collect();
    for p in &own {
        if !wanted_nlri.contains(&p.nlri) {
            withdraw.push(Action::Withdraw {
                nlri: p.nlri.clone(),
                label: p.label.unwrap_or(0),
            });
        }
    }
    for a in &wanted {
        if !own.iter().any(|p| a.matches(p)) {
            advertise.push(Action::Advertise(a.clone()));
        }
    }

    // --- what the others advertise ---
    let remote: Vec<&Path> = if shutting_down {
        Vec::new()
    } else {
        rib.iter()
            .filter(|p| !p.local && !is_ours(p) && !p.nexthop.is_some_and(|n| addrs.contains(&n)))
            .collect()
    };

    // Flood lists from type-3 routes.
    let mut remote_add = Vec::new();
    let mut remote_del = Vec::new();
    let mut book = Vec::new();
    for port in &local.ports {
        let rt = route_target(s.asn, port.vni);
        let want: BTreeSet<Ipv4Addr> = remote
            .iter()
            .filter(|p| p.rts.contains(&rt))
            .filter_map(|p| match &p.nlri {
                Nlri::Imet { ip, .. } => p.pmsi_tunnel.or_else(|| v4(ip)),
                Nlri::MacIp { .. } => None,
            })
            .filter(|ip| !addrs.contains(ip))
            .collect();
        for ip in &want {
            if !port.remotes.contains(ip) {
                remote_add.push(Action::RemoteAdd {
                    port: port.name.clone(),
                    ip: *ip,
                });
            }
        }
        for (_, ip) in done.remotes.iter().filter(|(n, _)| *n == port.name) {
            if want.contains(ip) {
                continue;
            }
            if port.remotes.contains(ip) {
                remote_del.push(Action::RemoteDel {
                    port: port.name.clone(),
                    ip: *ip,
                });
            } else {
                book.push(Action::ForgetRemote {
                    port: port.name.clone(),
                    ip: *ip,
                });
            }
        }
    }
    for (name, ip) in &done.remotes {
        if !local.ports.iter().any(|p| p.name == *name) {
            book.push(Action::ForgetRemote {
                port: name.clone(),
                ip: *ip,
            });
        }
    }

    // FDB entries from type-2 routes.
    let vxlan: BTreeSet<&str> = local.ports.iter().map(|p| p.name.as_str()).collect();
    let mut want_fdb: BTreeMap<FdbKey, (String, Ipv4Addr)> = BTreeMap::new();
    for port in &local.ports {
        let Some(vlan) = port.vlan else { continue };
        let rt = route_target(s.asn, port.vni);
        let rows = local
            .fdb
            .get(&port.bridge)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let is_local_mac = |mac| {
            rows.iter().any(|e| {
                e.mac == mac
                    && e.vlan == vlan
                    && e.vtep.is_none()
                    && !vxlan.contains(e.port.as_str())
            })
        };
        // The best route per MAC.
        let mut best: BTreeMap<dataplane::MacAddr, &Path> = BTreeMap::new();
        for p in remote.iter().filter(|p| p.rts.contains(&rt)) {
            let Nlri::MacIp { mac, .. } = &p.nlri else {
                continue;
            };
            let Some(nh) = p.nexthop else { continue };
            if addrs.contains(&nh) {
                continue;
            }
            let rank = |q: &Path| (q.mobility_seq, q.age, Reverse(q.nexthop));
            best.entry(*mac)
                .and_modify(|b| {
                    if rank(p) > rank(b) {
                        *b = p;
                    }
                })
                .or_insert(p);
        }
        for (mac, p) in best {
            if is_local_mac(mac) {
                continue;
            }
            if let Some(nh) = p.nexthop {
                want_fdb
                    .entry((port.bridge.clone(), vlan, mac))
                    .or_insert((port.name.clone(), nh));
            }
        }
    }
    let current = |key: &FdbKey| -> Option<&FdbEntry> {
        local
            .fdb
            .get(&key.0)?
            .iter()
            .find(|e| e.vlan == key.1 && e.mac == key.2)
    };
    let mut fdb_del = Vec::new();
    let mut fdb_add = Vec::new();
    for (key, (port, vtep)) in &want_fdb {
        let add = |replace| Action::FdbAdd {
            bridge: key.0.clone(),
            mac: key.2,
            vlan: key.1,
            port: port.clone(),
            vtep: *vtep,
            replace,
        };
        match current(key) {
            None => fdb_add.push(add(false)),
            Some(e) if e.is_static && e.port == *port && e.vtep == Some(*vtep) => {
                if done.fdb.get(key) != Some(&(port.clone(), *vtep)) {
                    book.push(Action::AdoptFdb {
                        key: key.clone(),
                        port: port.clone(),
                        vtep: *vtep,
                    });
                }
            }
            Some(e) if !e.is_static || done.fdb.contains_key(key) => fdb_add.push(add(true)),
            // A static entry configured by hand wins.
            Some(_) => {}
        }
    }
    for (key, (port, vtep)) in &done.fdb {
        if want_fdb.contains_key(key) {
            continue;
        }
        match current(key) {
            Some(e) if e.is_static && e.port == *port && e.vtep == Some(*vtep) => {
                fdb_del.push(Action::FdbDel {
                    bridge: key.0.clone(),
                    mac: key.2,
                    vlan: key.1,
                })
            }
            _ => book.push(Action::ForgetFdb { key: key.clone() }),
        }
    }

    let mut out = withdraw;
    out.extend(advertise);
    out.extend(remote_del);
    out.extend(remote_add);
    out.extend(fdb_del);
    out.extend(fdb_add);
    out.extend(book);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::MacAddr;

    const ASN: u32 = 65000;
    const L: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const R2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const R3: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

    fn s() -> Settings {
        Settings { asn: ASN }
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    fn port(remotes: &[Ipv4Addr]) -> VxlanPort {
        VxlanPort {
            name: "vx".into(),
            bridge: "br0".into(),
            vni: 100,
            local: L,
            remotes: remotes.iter().copied().collect(),
            vlan: Some(1),
        }
    }

    fn row(m: u8, port: &str, is_static: bool, vtep: Option<Ipv4Addr>) -> FdbEntry {
        FdbEntry {
            mac: mac(m),
            vlan: 1,
            port: port.into(),
            is_static,
            vtep,
        }
    }

    fn state(remotes: &[Ipv4Addr], fdb: Vec<FdbEntry>) -> LocalState {
        LocalState {
            ports: vec![port(remotes)],
            fdb: [("br0".to_string(), fdb)].into_iter().collect(),
        }
    }

    /// A path as the RIB would hold it for an advert.
    fn path_of(a: &Advert, local: bool) -> Path {
        Path {
            nlri: a.nlri.clone(),
            label: Some(a.label),
            nexthop: Some(a.nexthop),
            pmsi_tunnel: matches!(a.nlri, Nlri::Imet { .. }).then_some(a.nexthop),
            rts: vec![a.rt.clone()],
            mobility_seq: 0,
            age: 100,
            local,
        }
    }

    fn remote_imet(from: Ipv4Addr, vni: u32) -> Path {
        path_of(&Advert::imet(ASN, from, vni).unwrap(), false)
    }

    fn remote_mac(from: Ipv4Addr, m: u8, age: i64) -> Path {
        let mut p = path_of(&Advert::mac(ASN, from, 100, mac(m)).unwrap(), false);
        p.age = age;
        p
    }

    fn own(local: &LocalState) -> Vec<Path> {
        wanted_adverts(local, &s())
            .iter()
            .map(|a| path_of(a, true))
            .collect()
    }

    fn external(v: Vec<Action>) -> Vec<Action> {
        v.into_iter().filter(Action::is_external).collect()
    }

    #[test]
    fn advertises_type3_and_local_macs_only() {
        let st = state(
            &[],
            vec![
                row(1, "p1", false, None),
                row(2, "p2", true, None),
                row(3, "vx", false, Some(R2)),
                FdbEntry {
                    vlan: 7,
                    ..row(4, "p1", false, None)
                },
            ],
        );
        let acts = reconcile(&st, &[], &Programmed::default(), &s());
        let adverts: Vec<&Advert> = acts
            .iter()
            .filter_map(|a| match a {
                Action::Advertise(a) => Some(a),
                _ => None,
            })
            .collect();
        assert_eq!(acts.len(), 3, "{acts:#?}");
        assert_eq!(*adverts[0], Advert::mac(ASN, L, 100, mac(1)).unwrap());
        assert_eq!(*adverts[1], Advert::mac(ASN, L, 100, mac(2)).unwrap());
        let imet = adverts[2];
        assert_eq!(imet.nlri.rd().0, "10.0.0.1:100");
        assert_eq!(imet.rt, "65000:100");
        assert_eq!((imet.label, imet.nexthop), (100, L));
    }

    #[test]
    fn steady_state_does_nothing() {
        let st = state(&[R2], vec![row(1, "p1", false, None)]);
        let mut rib = own(&st);
        rib.push(remote_imet(R2, 100));
        assert_eq!(reconcile(&st, &rib, &Programmed::default(), &s()), vec![]);
    }

    #[test]
    fn aged_out_mac_is_withdrawn_and_stale_route_too() {
        let before = state(&[], vec![row(1, "p1", false, None)]);
        let rib = own(&before);
        let after = state(&[], vec![]);
        let acts = reconcile(&after, &rib, &Programmed::default(), &s());
        assert_eq!(
            acts,
            vec![Action::Withdraw {
                nlri: Advert::mac(ASN, L, 100, mac(1)).unwrap().nlri,
                label: 100
            }]
        );
    }

    #[test]
    fn moved_away_mac_is_withdrawn() {
        // Learned behind the VXLAN port now: remote, not ours to advertise.
        let before = state(&[], vec![row(1, "p1", false, None)]);
        let rib = own(&before);
        let after = state(&[], vec![row(1, "vx", false, Some(R2))]);
        let acts = reconcile(&after, &rib, &Programmed::default(), &s());
        assert!(matches!(&acts[..], [Action::Withdraw { .. }]), "{acts:#?}");
    }

    #[test]
    fn routes_of_others_in_the_rib_are_not_withdrawn() {
        let st = state(&[], vec![]);
        // A locally injected route with someone else's RD: not ours.
        let foreign = path_of(&Advert::mac(ASN, R3, 100, mac(9)).unwrap(), true);
        let mut rib = own(&st);
        rib.push(foreign);
        assert_eq!(reconcile(&st, &rib, &Programmed::default(), &s()), vec![]);
    }

    #[test]
    fn lost_routes_are_advertised_again() {
        let st = state(&[], vec![row(1, "p1", false, None)]);
        let acts = reconcile(&st, &[], &Programmed::default(), &s());
        assert_eq!(acts.len(), 2);
        // A changed attribute (another label) is re-advertised too.
        let mut rib = own(&st);
        rib[0].label = Some(5);
        let acts = reconcile(&st, &rib, &Programmed::default(), &s());
        assert!(matches!(&acts[..], [Action::Advertise(_)]), "{acts:#?}");
    }

    #[test]
    fn remote_type3_joins_the_flood_list_and_leaves_it() {
        let st = state(&[], vec![]);
        let mut rib = own(&st);
        rib.push(remote_imet(R2, 100));
        rib.push(remote_imet(R3, 200)); // another VNI: not ours
        let mut done = Programmed::default();
        let acts = reconcile(&st, &rib, &done, &s());
        assert_eq!(
            acts,
            vec![Action::RemoteAdd {
                port: "vx".into(),
                ip: R2
            }]
        );
        done.record(&acts[0]);
        // Applied: nothing more to do.
        let st = state(&[R2], vec![]);
        assert_eq!(reconcile(&st, &rib, &done, &s()), vec![]);
        // Withdrawn: taken out again.
        rib.retain(|p| p.nexthop != Some(R2));
        let acts = reconcile(&st, &rib, &done, &s());
        assert_eq!(
            acts,
            vec![Action::RemoteDel {
                port: "vx".into(),
                ip: R2
            }]
        );
    }

    #[test]
    fn hand_configured_remote_is_never_removed() {
        let st = state(&[R3], vec![]);
        let rib = own(&st);
        assert_eq!(reconcile(&st, &rib, &Programmed::default(), &s()), vec![]);
        // Even when a route for it comes and goes.
        let mut rib2 = rib.clone();
        rib2.push(remote_imet(R3, 100));
        assert_eq!(reconcile(&st, &rib2, &Programmed::default(), &s()), vec![]);
        assert_eq!(reconcile(&st, &rib, &Programmed::default(), &s()), vec![]);
    }

    #[test]
    fn remote_removed_by_hand_is_forgotten() {
        let st = state(&[], vec![]);
        let mut done = Programmed::default();
        done.remotes.insert(("vx".into(), R2));
        let acts = reconcile(&st, &own(&st), &done, &s());
        assert_eq!(
            acts,
            vec![Action::ForgetRemote {
                port: "vx".into(),
                ip: R2
            }]
        );
    }

    #[test]
    fn own_routes_are_ignored_on_import() {
        // Our own type-3 as a peer reflects it back (not local, our RD).
        let st = state(&[], vec![]);
        let mut rib = own(&st);
        let mut echo = rib[0].clone();
        echo.local = false;
        rib.push(echo);
        assert_eq!(reconcile(&st, &rib, &Programmed::default(), &s()), vec![]);
    }

    #[test]
    fn remote_type2_becomes_a_static_entry_and_goes_again() {
        let st = state(&[R2], vec![]);
        let mut rib = own(&st);
        rib.push(remote_mac(R2, 5, 10));
        let mut done = Programmed::default();
        let acts = reconcile(&st, &rib, &done, &s());
        let add = Action::FdbAdd {
            bridge: "br0".into(),
            mac: mac(5),
            vlan: 1,
            port: "vx".into(),
            vtep: R2,
            replace: false,
        };
        assert_eq!(acts, vec![add.clone()]);
        done.record(&add);
        let st = state(&[R2], vec![row(5, "vx", true, Some(R2))]);
        assert_eq!(reconcile(&st, &rib, &done, &s()), vec![]);
        rib.pop();
        let acts = reconcile(&st, &rib, &done, &s());
        assert_eq!(
            acts,
            vec![Action::FdbDel {
                bridge: "br0".into(),
                mac: mac(5),
                vlan: 1
            }]
        );
    }

    #[test]
    fn learned_remote_entry_is_replaced_by_the_route() {
        let st = state(&[R2], vec![row(5, "vx", false, Some(R3))]);
        let mut rib = own(&st);
        rib.push(remote_mac(R2, 5, 10));
        let acts = reconcile(&st, &rib, &Programmed::default(), &s());
        assert!(
            matches!(&acts[..], [Action::FdbAdd { replace: true, vtep, .. }] if *vtep == R2),
            "{acts:#?}"
        );
    }

    #[test]
    fn moved_mac_follows_the_newer_route() {
        // 02..05 was behind R2, now R3 advertises it too (newer): R3 wins,
        // our entry is replaced.
        let st = state(&[R2, R3], vec![row(5, "vx", true, Some(R2))]);
        let mut done = Programmed::default();
        done.fdb
            .insert(("br0".into(), 1, mac(5)), ("vx".into(), R2));
        let mut rib = own(&st);
        rib.push(remote_mac(R2, 5, 10));
        rib.push(remote_mac(R3, 5, 20));
        let acts = reconcile(&st, &rib, &done, &s());
        assert!(
            matches!(&acts[..], [Action::FdbAdd { replace: true, vtep, .. }] if *vtep == R3),
            "{acts:#?}"
        );
        // A higher mobility sequence number beats age.
        rib[1].mobility_seq = 3;
        let acts = reconcile(&st, &rib, &done, &s());
        assert_eq!(acts, vec![]);
    }

    #[test]
    fn local_mac_is_never_pointed_at_a_remote() {
        let st = state(&[R2], vec![row(5, "p1", false, None)]);
        let mut rib = own(&st);
        rib.push(remote_mac(R2, 5, 10));
        assert_eq!(reconcile(&st, &rib, &Programmed::default(), &s()), vec![]);
    }

    #[test]
    fn hand_made_static_entry_wins_and_leftover_is_adopted() {
        let mut rib = vec![remote_mac(R2, 5, 10)];
        let st = state(&[R2], vec![row(5, "p1", true, None)]);
        rib.extend(own(&st));
        // Local static on a host port: local MAC; advertised, not imported.
        assert_eq!(reconcile(&st, &rib, &Programmed::default(), &s()), vec![]);
        // The same entry as the route, made by an earlier run: adopted.
        let st = state(&[R2], vec![row(5, "vx", true, Some(R2))]);
        let rib: Vec<Path> = own(&st)
            .into_iter()
            .chain([remote_mac(R2, 5, 10)])
            .collect();
        let acts = reconcile(&st, &rib, &Programmed::default(), &s());
        assert!(matches!(&acts[..], [Action::AdoptFdb { .. }]), "{acts:#?}");
        // A static entry to another VTEP that is not ours: left alone.
        let st = state(&[R2], vec![row(5, "vx", true, Some(R3))]);
        assert_eq!(reconcile(&st, &rib, &Programmed::default(), &s()), vec![]);
    }

    #[test]
    fn entries_deleted_by_hand_are_forgotten() {
        let st = state(&[], vec![]);
        let mut done = Programmed::default();
        done.fdb
            .insert(("br0".into(), 1, mac(5)), ("vx".into(), R2));
        let acts = reconcile(&st, &own(&st), &done, &s());
        assert!(matches!(&acts[..], [Action::ForgetFdb { .. }]), "{acts:#?}");
    }

    #[test]
    fn other_vni_and_trunk_without_native_are_not_imported() {
        let mut st = state(&[], vec![]);
        let mut rib = own(&st);
        let mut other = remote_mac(R2, 5, 10);
        other.rts = vec!["65000:200".into()];
        rib.push(other);
        assert_eq!(reconcile(&st, &rib, &Programmed::default(), &s()), vec![]);
        st.ports[0].vlan = None;
        rib.push(remote_mac(R2, 6, 10));
        assert_eq!(reconcile(&st, &rib, &Programmed::default(), &s()), vec![]);
    }

    #[test]
    fn shutdown_withdraws_everything_and_cleans_up() {
        let st = state(
            &[R2, R3],
            vec![row(1, "p1", false, None), row(5, "vx", true, Some(R2))],
        );
        let mut done = Programmed::default();
        done.remotes.insert(("vx".into(), R2));
        done.fdb
            .insert(("br0".into(), 1, mac(5)), ("vx".into(), R2));
        let mut rib = own(&st);
        rib.push(remote_imet(R2, 100));
        rib.push(remote_mac(R2, 5, 1));
        let acts = external(shutdown(&st, &rib, &done, &s()));
        assert_eq!(acts.len(), 4, "{acts:#?}");
        assert_eq!(
            acts.iter()
                .filter(|a| matches!(a, Action::Withdraw { .. }))
                .count(),
            2
        );
        assert!(acts.contains(&Action::RemoteDel {
            port: "vx".into(),
            ip: R2
        }));
        assert!(acts.iter().any(|a| matches!(a, Action::FdbDel { .. })));
        // R3 was configured by hand: stays.
        assert!(!acts
            .iter()
            .any(|a| matches!(a, Action::RemoteDel { ip, .. } if *ip == R3)));
    }

    #[test]
    fn routes_of_a_deleted_port_are_withdrawn() {
        let before = state(&[], vec![row(1, "p1", false, None)]);
        let rib = own(&before);
        let mut done = Programmed::default();
        done.locals.insert(L);
        let after = LocalState::default();
        let acts = reconcile(&after, &rib, &done, &s());
        assert_eq!(acts.len(), 2, "{acts:#?}");
        assert!(acts.iter().all(|a| matches!(a, Action::Withdraw { .. })));
    }

    #[test]
    fn vni_too_large_for_the_rd_is_not_advertised() {
        let mut st = state(&[], vec![row(1, "p1", false, None)]);
        st.ports[0].vni = 70000;
        assert!(wanted_adverts(&st, &s()).is_empty());
    }
}
