//! `vswitchd --config FILE` and `vswitchctl save`.

mod common;

use common::*;
use std::fs;
use std::time::Duration;

const STATIC_MAC: &str = "02:00:00:aa:bb:01";

fn config_text(lab: &Lab) -> String {
    format!(
        r#"# vswitch test configuration
[[bridge]]
name = "br0"
ageing_s = 120
fdb_max = 500

[[bridge.port]]
name = "p1"
type = "tap"
netns = "{h1}"
ifname = "eth0"
mac = "02:00:00:00:01:01"

[[bridge.port]]
name = "p2"
type = "tap"
netns = "{h2}"
ifname = "eth0"
mtu = 1400

[[bridge.fdb]]
mac = "{STATIC_MAC}"
port = "p2"
"#,
        h1 = lab.ns_name("h1"),
        h2 = lab.ns_name("h2"),
    )
}

/// A bridge with two TAP ports from `--config` forwards; `save` writes a
/// file that parses back, holds the ports, and brings the same switch up
/// again after a restart.
#[test]
fn config_start_save_restart() {
    let mut lab = Lab::new();
    lab.add_netns("h1");
    lab.add_netns("h2");
    let cfg = lab.path("vswitch.toml");
    fs::write(&cfg, config_text(&lab)).unwrap();
    let cfg_s = cfg.to_str().unwrap().to_string();
    lab.start_daemon(&["--config", &cfg_s]);

    let br = &lab.ctl_json(&["list-br"])[0];
    assert_eq!(br["name"], "br0", "{br}");
    assert_eq!(br["ageing_s"], 120, "{br}");
    assert_eq!(br["fdb_max"], 500, "{br}");
    let h1 = lab.host_of_port(1);
    let h2 = lab.host_of_port(2);
    assert_eq!(h1.mac, "02:00:00:00:01:01", "config mac not applied");
    let mtu = lab.port_info("br0", "p2")["mtu"].clone();
    assert_eq!(mtu, 1400, "config mtu not applied");
    lab.assert_all_ping(&[&h1, &h2]);
    let e = lab
        .fdb_entry("br0", STATIC_MAC)
        .expect("static FDB entry from config");
    assert_eq!(e["type"], "static");
    assert_eq!(e["port"], "p2");

    // Change the running config, then save to an explicit file.
    lab.ctl_ok(&["set-br", "br0", "--ageing", "77"]);
    let out = lab.path("saved.toml");
    lab.ctl_ok(&["save", out.to_str().unwrap()]);
    let text = fs::read_to_string(&out).expect("save wrote the file");
    let v: toml::Value =
        toml::from_str(&text).unwrap_or_else(|e| panic!("saved TOML: {e}\n{text}"));
    let b = &v["bridge"][0];
    assert_eq!(b["name"].as_str(), Some("br0"), "{text}");
    assert_eq!(b["ageing_s"].as_integer(), Some(77), "{text}");
    let ports = b["port"].as_array().expect("saved ports");
    let names: Vec<&str> = ports.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["p1", "p2"], "{text}");
    assert_eq!(ports[0]["type"].as_str(), Some("tap"), "{text}");
    assert_eq!(ports[0]["netns"].as_str(), Some(h1.ns.as_str()), "{text}");
    assert_eq!(ports[0]["ifname"].as_str(), Some("eth0"), "{text}");
    let fdb = b["fdb"].as_array().expect("saved static fdb");
    assert_eq!(fdb.len(), 1, "only static entries are saved: {text}");
    assert_eq!(fdb[0]["mac"].as_str(), Some(STATIC_MAC), "{text}");

    // save without FILE goes to the --config file.
    lab.ctl_ok(&["save"]);
    let text2 = fs::read_to_string(&cfg).unwrap();
    let v2: toml::Value = toml::from_str(&text2).expect("re-saved config parses");
    assert_eq!(v2, v, "save and save FILE differ");
    // Atomic write leaves no temporary files beside it.
    let leftovers: Vec<_> = fs::read_dir(&lab.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n != "vswitch.toml"
                && n != "saved.toml"
                && !n.ends_with(".log")
                && !n.starts_with("ctl.sock")
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "save left files behind: {leftovers:?}"
    );

    // Restart from the saved config: same switch, hosts talk again.
    let st = lab.stop_daemon();
    assert!(st.success(), "{st}");
    lab.start_daemon(&["--config", &cfg_s]);
    assert_eq!(lab.ctl_json(&["list-br"])[0]["ageing_s"], 77);
    let h1 = lab.host_of_port(1);
    let h2 = lab.host_of_port(2);
    lab.assert_all_ping(&[&h1, &h2]);
    assert!(lab.fdb_entry("br0", STATIC_MAC).is_some());
}

/// A missing config file is fine at start and is created by the first save.
#[test]
fn missing_config_created_on_save() {
    let mut lab = Lab::new();
    let cfg = lab.path("new.toml");
    let cfg_s = cfg.to_str().unwrap().to_string();
    lab.start_daemon(&["--config", &cfg_s]);
    assert_eq!(lab.ctl_json(&["list-br"]), serde_json::json!([]));
    lab.add_br("br9", &["--fdb-max", "10"]);
    lab.ctl_ok(&["save"]);
    let text = fs::read_to_string(&cfg).expect("save created the config file");
    let v: toml::Value = toml::from_str(&text).expect("parses");
    assert_eq!(v["bridge"][0]["name"].as_str(), Some("br9"), "{text}");
    assert_eq!(v["bridge"][0]["fdb_max"].as_integer(), Some(10), "{text}");
}

/// A malformed config stops the start with a message naming the line.
#[test]
fn malformed_config_rejected() {
    let mut lab = Lab::new();
    let cases = [
        (
            "syntax.toml",
            "[[bridge]]\nname = \"br0\"\nageing_s = = 3\n",
        ),
        (
            "unknown.toml",
            "[[bridge]]\nname = \"br0\"\nbogus_key = 1\n",
        ),
        (
            "type.toml",
            "[[bridge]]\nname = \"br0\"\n\n[[bridge.port]]\nname = \"p1\"\ntype = \"nope\"\n",
        ),
    ];
    for (name, text) in cases {
        let cfg = lab.path(name);
        fs::write(&cfg, text).unwrap();
        let sock = lab.path(&format!("{name}.sock"));
        let mut c = lab.daemon_command(&sock, &["--config", cfg.to_str().unwrap()]);
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let child = lab.adopt(c.spawn().expect("start vswitchd"));
        let st = wait_exit(child, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("vswitchd kept running with malformed {name}"));
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        assert!(!st.success(), "vswitchd exited 0 with malformed {name}");
        assert!(
            err.contains("line"),
            "{name}: message does not name the line: {err}"
        );
        assert!(!sock.exists(), "{name}: socket left behind");
    }
}
