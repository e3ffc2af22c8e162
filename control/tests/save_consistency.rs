//! Whatever the running state, `save` writes a file the daemon starts from:
//! every command that could strand state (VLAN changes under static FDB
//! entries, deleted ports with static entries, router interfaces with
//! routes, NAT rules and port forwards, VXLAN remotes under static
//! MAC→VTEP entries) leaves a consistent configuration (issue 13).

mod common;
mod router_support;

use common::*;
use router_support::net;
use serde_json::Value;

fn sorted(v: Value) -> Vec<Value> {
    let mut a = v.as_array().cloned().unwrap_or_default();
    a.sort_by_key(|x| x.to_string());
    a
}

#[test]
fn every_stranding_command_saves_a_config_that_starts() {
    let mut lab = Lab::new();
    let cfg = lab.path("vswitch.toml");
    let cfg_s = cfg.to_str().unwrap().to_string();
    lab.start_daemon(&["--config", &cfg_s]);
    lab.add_br("br0", &[]);
    let _h1 = lab.tap_host("br0", 1);
    let _h2 = lab.tap_host("br0", 2);
    let (m1, m2, m3) = (
        "02:00:00:00:5a:01",
        "02:00:00:00:5a:02",
        "02:00:00:00:5a:03",
    );

    // A static entry in VLAN 20 of a trunk; the port becomes an access port
    // of VLAN 30: the entry goes, and the reply says so.
    lab.ctl_ok(&["set-port", "p1", "--trunk", "10,20"]);
    lab.ctl_ok(&["fdb-add", "br0", m1, "p1", "--vlan", "20"]);
    lab.ctl_ok(&["fdb-add", "br0", m3, "p1", "--vlan", "10"]);
    let o = lab.ctl(&["set-port", "p1", "--access", "30"]);
    assert!(o.status.success());
    let note = String::from_utf8_lossy(&o.stderr);
    assert!(
        note.contains(m1) && note.contains("VLAN 20") && note.contains(m3),
        "no note of the removed entries: {note}"
    );
    assert!(lab.fdb_entry("br0", m1).is_none(), "{:?}", lab.fdb("br0"));
    let quiet = |args: &[&str]| {
        let o = lab.ctl(args);
        assert!(o.status.success(), "{o:?}");
        assert!(
            o.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    quiet(&["set-port", "p1", "--trunk", "30,40"]);
    lab.ctl_ok(&["fdb-add", "br0", m1, "p1", "--vlan", "40"]);
    // VLAN 40 is still carried (untagged).
    quiet(&["set-port", "p1", "--trunk", "30", "--native", "40"]);
    assert!(lab.fdb_entry("br0", m1).is_some());

    // A deleted port takes its static entries with it.
    lab.ctl_ok(&["fdb-add", "br0", m2, "p2"]);
    lab.ctl_ok(&["del-port", "p2"]);
    assert!(lab.fdb_entry("br0", m2).is_none());

    // Router objects: a rif with a static route through its subnet, SNAT
    // and a port forward; deleting the rif takes them along.
    let a = net(&lab, 30);
    let far = format!("{}.0/24", net(&lab, 50));
    lab.ctl_ok(&[
        "add-rif",
        "gw",
        "--br",
        "br0",
        "--vlan",
        "30",
        "--addr",
        &format!("{a}.1/24"),
    ]);
    lab.ctl_ok(&[
        "add-rif",
        "gw2",
        "--br",
        "br0",
        "--vlan",
        "40",
        "--addr",
        &format!("{}.1/24", net(&lab, 40)),
    ]);
    lab.ctl_ok(&["add-route", &far, "via", &format!("{a}.9")]);
    lab.ctl_ok(&["add-snat", "--out", "gw"]);
    lab.ctl_ok(&[
        "add-dnat",
        "--in",
        "gw",
        "--proto",
        "tcp",
        "--port",
        "8080",
        "--to",
        &format!("{}.2:80", net(&lab, 40)),
    ]);
    lab.ctl_ok(&["del-rif", "gw"]);
    let routes = lab.ctl_json(&["route-show"]);
    assert!(
        !routes.to_string().contains(&far),
        "route via a gone rif kept: {routes}"
    );
    assert_eq!(lab.ctl_json(&["snat-show"]), Value::Array(vec![]));
    assert_eq!(lab.ctl_json(&["dnat-show"]), Value::Array(vec![]));

    // VXLAN: a static MAC behind a VTEP that is then taken off the flood list.
    run_ok(
        "ip",
        &["-n", &lab.sw, "addr", "add", "192.0.2.1/32", "dev", "lo"],
    );
    lab.ctl_ok(&[
        "add-port",
        "br0",
        "vx",
        "--type",
        "vxlan",
        "--vni",
        "7",
        "--local",
        "192.0.2.1",
        "--remote",
        "192.0.2.2",
    ]);
    lab.ctl_ok(&["fdb-add", "br0", m2, "vx", "--vtep", "192.0.2.2"]);
    lab.ctl_ok(&["set-port", "vx", "--remote-del", "192.0.2.2"]);

    // Save, restart from the file: the daemon starts and has the same state.
    lab.ctl_ok(&["save"]);
    let before = (
        sorted(lab.ctl_json(&["list-ports"])),
        lab.fdb("br0"),
        sorted(lab.ctl_json(&["rif-show"])),
        sorted(lab.ctl_json(&["route-show"])),
    );
    assert!(lab.stop_daemon().success());
    lab.start_daemon(&["--config", &cfg_s]);
    let after = (
        sorted(lab.ctl_json(&["list-ports"])),
        lab.fdb("br0"),
        sorted(lab.ctl_json(&["rif-show"])),
        sorted(lab.ctl_json(&["route-show"])),
    );
    let names = |v: &Vec<Value>| v.iter().map(|p| p["name"].clone()).collect::<Vec<_>>();
    assert_eq!(names(&before.0), names(&after.0));
    let statics = |f: &Vec<Value>| {
        let mut s: Vec<String> = f
            .iter()
            .filter(|e| e["type"] == "static")
            .map(|e| format!("{} {} {} {}", e["mac"], e["vlan"], e["port"], e["vtep"]))
            .collect();
        s.sort();
        s
    };
    assert_eq!(statics(&before.1), statics(&after.1));
    assert_eq!(names(&before.2), names(&after.2));
    assert_eq!(
        before.3.len(),
        after.3.len(),
        "{:?} vs {:?}",
        before.3,
        after.3
    );
}

/// The daemon SIGKILLed while `save` writes, 100 times: the file is always
/// the old configuration or the new one (never torn, never empty), the next
/// start removes the temporary files of interrupted saves, and starts from
/// the file.
#[test]
fn sigkill_during_save_never_tears_the_file() {
    let mut lab = Lab::new();
    let cfg = lab.path("vswitch.toml");
    let cfg_s = cfg.to_str().unwrap().to_string();
    lab.start_daemon(&["--config", &cfg_s]);
    for i in 0..8 {
        lab.add_br(&format!("br{i}"), &["--fdb-max", "1000"]);
    }
    lab.ctl_ok(&["save"]);
    let ageing_of = |text: &str| -> u64 {
        let v: toml::Value = toml::from_str(text)
            .unwrap_or_else(|e| panic!("torn or invalid config ({e}):\n{text}"));
        v["bridge"][0]["ageing_s"].as_integer().expect("ageing_s") as u64
    };
    let mut saved = ageing_of(&std::fs::read_to_string(&cfg).unwrap());
    let dir = cfg.parent().unwrap().to_path_buf();
    let temps = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".vswitch.toml.tmp.")
            })
            .count()
    };
    let mut interrupted = 0;
    for i in 0..100u64 {
        let want = 100 + i;
        lab.ctl_ok(&["set-br", "br0", "--ageing", &want.to_string()]);
        let saver = lab.ctl_spawn(&["save"]);
        // Kill at varying points of the save (0-2.4 ms after it started).
        std::thread::sleep(std::time::Duration::from_micros((i % 25) * 100));
        lab.stop_daemon_with(libc::SIGKILL);
        drop(saver);
        let text = std::fs::read_to_string(&cfg).expect("config file exists");
        let got = ageing_of(&text);
        assert!(
            got == saved || got == want,
            "round {i}: ageing {got}, neither the old {saved} nor the new {want}"
        );
        if got == saved {
            interrupted += 1;
        }
        saved = got;
        lab.start_daemon(&["--config", &cfg_s]);
        assert_eq!(
            temps(),
            0,
            "round {i}: temporary files left after the restart"
        );
        let br = lab.ctl_json(&["list-br"]);
        assert_eq!(br.as_array().map(|a| a.len()), Some(8), "round {i}: {br}");
        assert_eq!(br[0]["ageing_s"], saved, "round {i}: {br}");
    }
    eprintln!("{interrupted} of 100 saves were killed before the rename");
}
