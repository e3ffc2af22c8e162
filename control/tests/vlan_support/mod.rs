//! Helpers for the VLAN tests on top of the shared harness: crafted tagged
//! frames and a capturing sniffer (`helpers/vlan_frames.py`), tshark
//! captures, veth pairs between namespaces, and a private Open vSwitch
//! (userspace datapath) running in its own namespace.

#![allow(dead_code)]

use crate::common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::Duration;

/// One 802.1Q/802.1ad tag as seen on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub tpid: u16,
    pub vid: u16,
    pub pcp: u8,
}

/// A captured frame; `tags` outer first.
#[derive(Debug, Clone)]
pub struct Frame {
    pub src: String,
    pub dst: String,
    pub tags: Vec<Tag>,
    pub ethertype: u16,
    pub marker: bool,
}

impl Frame {
    pub fn vids(&self) -> Vec<u16> {
        self.tags.iter().map(|t| t.vid).collect()
    }
}

fn frame_from(v: &Value) -> Frame {
    let tags = v["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| Tag {
            tpid: t["tpid"].as_u64().expect("tpid") as u16,
            vid: t["vid"].as_u64().expect("vid") as u16,
            pcp: t["pcp"].as_u64().expect("pcp") as u8,
        })
        .collect();
    Frame {
        src: v["src"].as_str().expect("src").to_string(),
        dst: v["dst"].as_str().expect("dst").to_string(),
        tags,
        ethertype: v["ethertype"].as_u64().expect("ethertype") as u16,
        marker: v["marker"].as_bool().unwrap_or(false),
    }
}

/// A set of `vlan_frames.py sniff` processes capturing at the same time;
/// [`Capture::collect`] ends them all together.
pub struct Capture {
    stop: PathBuf,
    sniffers: Vec<(String, Bg)>,
}

static ROUND: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Capture {
    pub fn new(lab: &Lab) -> Capture {
        let n = ROUND.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let stop = lab.path(&format!("stop-{n}"));
        let _ = fs::remove_file(&stop);
        Capture {
            stop,
            sniffers: Vec::new(),
        }
    }

    /// Starts capturing on `iface` in `ns` (frames from `src` only, if
    /// given) under the name `name`; returns once the socket listens.
    pub fn sniff(&mut self, lab: &Lab, name: &str, ns: &str, iface: &str, src: Option<&str>) {
        let script = helper("vlan_frames.py");
        let stop = self.stop.to_string_lossy().into_owned();
        let mut args = vec![
            "python3",
            script.as_str(),
            "sniff",
            iface,
            "60",
            "--stop-file",
            stop.as_str(),
        ];
        if let Some(s) = src {
            args.extend_from_slice(&["--src", s]);
        }
        let mut bg = lab.ns_spawn(ns, &args, true);
        let line = bg.read_line(Duration::from_secs(15));
        assert_eq!(
            line.trim(),
            "ready",
            "sniffer {name} in {ns} did not start: {line:?}"
        );
        self.sniffers.push((name.to_string(), bg));
    }

    /// Lets frames in flight arrive, stops every sniffer and returns what
    /// each saw, by name.
    pub fn collect(self) -> HashMap<String, Vec<Frame>> {
        thread::sleep(Duration::from_millis(1000));
        fs::write(&self.stop, b"stop").expect("write stop file");
        let mut out = HashMap::new();
        for (name, bg) in self.sniffers {
            let (st, text) = bg.finish(Duration::from_secs(30));
            assert!(st.success(), "sniffer {name} failed: {st} {text}");
            let v: Value = serde_json::from_str(text.trim())
                .unwrap_or_else(|e| panic!("sniffer {name}: bad JSON ({e}): {text}"));
            let frames = v["frames"]
                .as_array()
                .expect("frames")
                .iter()
                .map(frame_from)
                .collect();
            out.insert(name, frames);
        }
        out
    }
}

/// Sends `count` crafted frames from `iface` in `ns`. `tags` are
/// `[TPID:]VID[/PCP]`, outer first.
pub fn send(
    lab: &Lab,
    ns: &str,
    iface: &str,
    src: &str,
    dst: &str,
    tags: &[&str],
    count: u32,
) -> u64 {
    let script = helper("vlan_frames.py");
    let count = count.to_string();
    let mut a = vec![
        "python3",
        script.as_str(),
        "send",
        iface,
        "--src",
        src,
        "--dst",
        dst,
        "--count",
        count.as_str(),
        "--interval",
        "0.02",
    ];
    for t in tags {
        a.extend_from_slice(&["--tag", t]);
    }
    let out = lab.ns_ok(ns, &a);
    let v: Value = serde_json::from_str(out.trim()).expect("send JSON");
    v["sent"].as_u64().expect("sent")
}

/// Tagged ARP + ICMP echo from a raw socket; returns the helper's JSON.
pub fn arp_icmp(
    lab: &Lab,
    host: &Host,
    (vlan, pcp): (u16, u8),
    src_mac: &str,
    src_ip: &str,
    dst_ip: &str,
    timeout_s: u32,
) -> Value {
    let script = helper("vlan_frames.py");
    let (vlan, pcp, timeout) = (vlan.to_string(), pcp.to_string(), timeout_s.to_string());
    let out = lab.ns_ok(
        &host.ns,
        &[
            "python3",
            &script,
            "arp-icmp",
            &host.ifname,
            "--vlan",
            &vlan,
            "--pcp",
            &pcp,
            "--src-mac",
            src_mac,
            "--src-ip",
            src_ip,
            "--dst-ip",
            dst_ip,
            "--timeout",
            &timeout,
        ],
    );
    serde_json::from_str(out.trim()).expect("arp-icmp JSON")
}

/// A child process killed by its own PID when dropped.
pub struct Proc {
    pub child: Child,
    pub what: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(3));
    }
}

/// A tshark capture into a pcap file in the lab's temp dir.
pub struct Tshark {
    proc: Proc,
    file: PathBuf,
    ns: String,
}

pub fn tshark_available() -> bool {
    Command::new("tshark")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Starts `tshark` on `iface` in `ns`, capturing frames from `src_mac` for
/// at most `secs` seconds or `count` frames; returns once it captures.
pub fn tshark(lab: &Lab, ns: &str, iface: &str, src_mac: &str, count: u32, secs: u32) -> Tshark {
    let file = lab.path(&format!("{ns}-{iface}.pcap"));
    let filter = format!("ether src {src_mac}");
    let mut c = Command::new("ip");
    c.args([
        "netns", "exec", ns, "tshark", "-n", "-i", iface, "-f", &filter,
    ])
    .arg("-c")
    .arg(count.to_string())
    .arg("-a")
    .arg(format!("duration:{secs}"))
    .arg("-w")
    .arg(&file)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut child = c.spawn().expect("start tshark");
    let err = child.stderr.take().expect("stderr piped");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut r = BufReader::new(err);
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            seen.push_str(&line);
            if line.contains("Capturing on") {
                let _ = tx.send(Ok(()));
                // Keep draining so tshark never blocks on a full pipe.
                let _ = std::io::copy(&mut r, &mut std::io::sink());
                return;
            }
        }
        let _ = tx.send(Err(seen));
    });
    let proc = Proc {
        child,
        what: format!("[{ns}] tshark -i {iface}"),
    };
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(())) => {}
        Ok(Err(text)) => panic!("tshark in {ns} failed to start: {text}"),
        Err(_) => panic!("tshark in {ns} did not start capturing"),
    }
    Tshark {
        proc,
        file,
        ns: ns.to_string(),
    }
}

impl Tshark {
    /// Waits for the capture to end and decodes it: for every frame, the
    /// 802.1Q VIDs and PCPs (outer first) and the innermost ethertype.
    pub fn decode(mut self) -> Vec<(Vec<u16>, Vec<u8>)> {
        let st = wait_exit(&mut self.proc.child, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("{} did not finish", self.proc.what));
        assert!(st.success(), "{} exited with {st}", self.proc.what);
        let file = self.file.to_string_lossy().into_owned();
        let out = run_ok(
            "tshark",
            &[
                "-n",
                "-r",
                &file,
                "-T",
                "fields",
                "-E",
                "separator=;",
                "-E",
                "aggregator=,",
                "-e",
                "vlan.id",
                "-e",
                "vlan.priority",
            ],
        );
        out.lines()
            .map(|l| {
                let mut parts = l.split(';');
                let ids = parts.next().unwrap_or("");
                let prios = parts.next().unwrap_or("");
                let nums = |s: &str| -> Vec<u16> {
                    s.split(',')
                        .filter(|x| !x.trim().is_empty())
                        .map(|x| x.trim().parse().expect("number from tshark"))
                        .collect()
                };
                (
                    nums(ids),
                    nums(prios).into_iter().map(|p| p as u8).collect(),
                )
            })
            .collect()
    }
}

/// A veth pair: `a` in namespace `ns_a`, `b` in `ns_b`, both up. It goes
/// away with the namespaces (which the lab deletes).
pub fn veth(ns_a: &str, a: &str, ns_b: &str, b: &str) {
    run_ok(
        "ip",
        &[
            "-n", ns_a, "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b,
        ],
    );
    run_ok("ip", &["-n", ns_a, "link", "set", a, "up"]);
    run_ok("ip", &["-n", ns_b, "link", "set", b, "up"]);
}

/// Sets an address on `ifname` in `ns` and brings it up.
pub fn add_addr(ns: &str, ifname: &str, cidr: &str) {
    run_ok("ip", &["-n", ns, "addr", "add", cidr, "dev", ifname]);
    run_ok("ip", &["-n", ns, "link", "set", ifname, "up"]);
}

/// The `drops` counters of a port.
pub fn drop_count(lab: &Lab, port: &str, reason: &str) -> u64 {
    lab.drops(port, reason)
}

/// Open vSwitch (ovsdb-server + ovs-vswitchd, userspace datapath) running
/// in a namespace of its own with a private database and run directory.
/// Both processes are children of the test and are killed by PID on drop.
pub struct Ovs {
    pub ns: String,
    pub dir: PathBuf,
    procs: Vec<Proc>,
}

impl Ovs {
    /// Starts OVS in `ns` (which must exist); `Err` when OVS is not
    /// installed or does not come up.
    pub fn start(ns: &str, dir: PathBuf) -> Result<Ovs, String> {
        for bin in ["ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !found {
                return Err(format!(
                    "{bin} not installed (apt-get install openvswitch-switch)"
                ));
            }
        }
        let schema = "/usr/share/openvswitch/vswitch.ovsschema";
        if !std::path::Path::new(schema).exists() {
            return Err(format!("{schema} missing"));
        }
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let d = |f: &str| dir.join(f).to_string_lossy().into_owned();
        let o = run("ovsdb-tool", &["create", &d("conf.db"), schema]);
        if !o.status.success() {
            return Err(show_output("ovsdb-tool create", &o));
        }
        let mut ovs = Ovs {
            ns: ns.to_string(),
            dir: dir.clone(),
            procs: Vec::new(),
        };
        let envs = [
            ("OVS_RUNDIR", d("")),
            ("OVS_DBDIR", d("")),
            ("OVS_LOGDIR", d("")),
            ("OVS_SYSCONFDIR", d("")),
        ];
        let spawn = |args: Vec<String>, log: &str| -> Result<Proc, String> {
            let logf = fs::File::create(dir.join(log)).map_err(|e| e.to_string())?;
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns])
                .args(&args)
                .envs(envs.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(logf.try_clone().map_err(|e| e.to_string())?)
                .stderr(logf);
            let child = c.spawn().map_err(|e| format!("{}: {e}", args[0]))?;
            Ok(Proc {
                child,
                what: args.join(" "),
            })
        };
        ovs.procs.push(spawn(
            vec![
                "ovsdb-server".into(),
                d("conf.db"),
                format!("--remote=punix:{}", d("db.sock")),
                format!("--pidfile={}", d("ovsdb-server.pid")),
                format!("--unixctl={}", d("ovsdb-server.ctl")),
                "--no-chdir".into(),
            ],
            "ovsdb-server.out",
        )?);
        if !wait_until(Duration::from_secs(15), || dir.join("db.sock").exists()) {
            return Err(format!(
                "ovsdb-server did not create its socket: {}",
                ovs.logs()
            ));
        }
        let o = ovs.vsctl(&["--no-wait", "init"]);
        if !o.status.success() {
            return Err(show_output("ovs-vsctl init", &o));
        }
        ovs.procs.push(spawn(
            vec![
                "ovs-vswitchd".into(),
                format!("unix:{}", d("db.sock")),
                format!("--pidfile={}", d("ovs-vswitchd.pid")),
                format!("--unixctl={}", d("ovs-vswitchd.ctl")),
                format!("--log-file={}", d("ovs-vswitchd.log")),
                "--no-chdir".into(),
            ],
            "ovs-vswitchd.out",
        )?);
        let o = ovs.vsctl(&[
            "--timeout=20",
            "add-br",
            "obr",
            "--",
            "set",
            "bridge",
            "obr",
            "datapath_type=netdev",
        ]);
        if !o.status.success() {
            return Err(format!(
                "{}\n{}",
                show_output("ovs-vsctl add-br", &o),
                ovs.logs()
            ));
        }
        Ok(ovs)
    }

    /// `ovs-vsctl` against the private database.
    pub fn vsctl(&self, args: &[&str]) -> Output {
        let db = format!("--db=unix:{}", self.dir.join("db.sock").display());
        let mut a = vec![db.as_str()];
        a.extend_from_slice(args);
        run("ovs-vsctl", &a)
    }

    pub fn vsctl_ok(&self, args: &[&str]) -> String {
        let o = self.vsctl(args);
        assert!(
            o.status.success(),
            "{}\n{}",
            show_output(&format!("ovs-vsctl {}", args.join(" ")), &o),
            self.logs()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `ovs-appctl` against the private ovs-vswitchd.
    pub fn appctl(&self, args: &[&str]) -> String {
        let t = self
            .dir
            .join("ovs-vswitchd.ctl")
            .to_string_lossy()
            .into_owned();
        let mut a = vec!["-t", t.as_str()];
        a.extend_from_slice(args);
        run_ok("ovs-appctl", &a)
    }

    /// The tail of ovs-vswitchd's log.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for f in ["ovsdb-server.out", "ovs-vswitchd.out", "ovs-vswitchd.log"] {
            let text = fs::read_to_string(self.dir.join(f)).unwrap_or_default();
            s.push_str(&format!("--- {f} ---\n{}\n", tail(&text, 2000)));
        }
        s
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        // ovs-vswitchd first, then the database.
        while let Some(p) = self.procs.pop() {
            drop(p);
        }
    }
}
