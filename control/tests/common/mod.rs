//! Shared harness for the vswitch integration tests.
//!
//! A [`Lab`] owns everything one test creates: a switch network namespace in
//! which `vswitchd` runs, host namespaces, veth pairs, background processes
//! and a temporary directory. Names carry a prefix unique per test and per
//! process (`vt{pid%10000}{n}`), so tests can run in parallel, and `Drop`
//! removes it all again — also when the test panics.
//!
//! All traffic stays inside the namespaces the lab creates; addresses come
//! from a per-lab 10.x.y.0/24.

#![allow(dead_code)]

use serde_json::Value;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

pub const VSWITCHD: &str = env!("CARGO_BIN_EXE_vswitchd");
pub const VSWITCHCTL: &str = env!("CARGO_BIN_EXE_vswitchctl");

/// Every drop reason `stats --json` always reports.
pub const DROP_REASONS: &[&str] = &[
    "malformed",
    "invalid_src_mac",
    "link_local",
    "same_port",
    "fdb_full",
    "no_egress",
    "egress_down",
    "tx_queue_full",
    "tx_error",
    "port_down",
];

/// Default limit for one external command.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Path of a Python helper in `control/tests/helpers/`.
pub fn helper(name: &str) -> String {
    format!("{}/tests/helpers/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion with its output captured; kills it and panics
/// if it runs longer than `timeout`.
pub fn output_timeout(mut cmd: Command, timeout: Duration) -> Output {
    let desc = describe(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{desc}`: {e}"));
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_millis(1);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{desc}` did not finish within {timeout:?}");
        }
        thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

/// Runs a program with arguments (30 s limit).
pub fn run(prog: &str, args: &[&str]) -> Output {
    let mut c = Command::new(prog);
    c.args(args);
    output_timeout(c, CMD_TIMEOUT)
}

pub fn show_output(what: &str, o: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs a program and panics (with its output) unless it succeeds; returns stdout.
pub fn run_ok(prog: &str, args: &[&str]) -> String {
    let o = run(prog, args);
    assert!(
        o.status.success(),
        "{}",
        show_output(&format!("{prog} {}", args.join(" ")), &o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Polls `f` until it returns true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// A `/proc/PID/status` field ("VmRSS:", "VmHWM:") in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Sends a signal to a process this test started.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; the
    // pid is that of a child we spawned and have not reaped yet, so it cannot
    // have been reused for an unrelated process.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig}) failed");
}

/// Waits for a child to exit; `None` on timeout (the child is left running).
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Ends a child: SIGTERM, a grace period, then SIGKILL. Always reaps it.
pub fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(s)) = child.try_wait() {
        return Some(s);
    }
    signal(child.id(), libc::SIGTERM);
    if let Some(s) = wait_exit(child, grace) {
        return Some(s);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A process running in the background for the length of a test; killed
/// (by its own PID) when dropped.
pub struct Bg {
    pub child: Child,
    pub what: String,
    rest: Option<BufReader<ChildStdout>>,
}

impl Bg {
    /// Reads one line from the child's stdout (it must have been piped).
    pub fn read_line(&mut self, timeout: Duration) -> String {
        let out: ChildStdout = self.child.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send((line, r));
        });
        match rx.recv_timeout(timeout) {
            Ok((line, r)) => {
                self.rest = Some(r);
                line
            }
            Err(_) => panic!("{}: no output line within {timeout:?}", self.what),
        }
    }

    /// Waits for the process to finish and returns the rest of its stdout
    /// (read while it runs, so that a long output cannot fill the pipe and
    /// stall it).
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, String) {
        let mut reader: Option<Box<dyn Read + Send>> = match self.rest.take() {
            Some(r) => Some(Box::new(r)),
            None => self
                .child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn Read + Send>),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(mut r) = reader.take() {
            thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                let _ = tx.send(s);
            });
        } else {
            let _ = tx.send(String::new());
        }
        let status = wait_exit(&mut self.child, timeout)
            .unwrap_or_else(|| panic!("{} did not finish within {timeout:?}", self.what));
        let s = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        (status, s)
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(2));
    }
}

impl Bg {
    fn new(child: Child, what: String) -> Bg {
        Bg {
            child,
            what,
            rest: None,
        }
    }
}

/// How a host is attached to the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// A TAP the daemon creates in the host's namespace.
    Tap,
    /// A veth pair whose switch end is attached as an AF_PACKET port.
    Afpacket,
}

/// A host: a network namespace with one interface `eth0` on the switch.
#[derive(Debug, Clone)]
pub struct Host {
    pub ns: String,
    /// The switch port it hangs off.
    pub port: String,
    pub ifname: String,
    pub ip: String,
    pub mac: String,
}

/// The running daemon of a lab.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

pub struct Lab {
    pub prefix: String,
    /// The switch namespace; vswitchd runs in it.
    pub sw: String,
    pub dir: PathBuf,
    pub sock: PathBuf,
    /// First three octets of this lab's /24.
    pub net: String,
    namespaces: Vec<String>,
    pub daemon: Option<Daemon>,
    /// Persistent TAPs made by the test in the switch namespace.
    persistent: Vec<String>,
    /// Other daemons started by the test (e.g. a second vswitchd).
    extra: Vec<Child>,
}

impl Lab {
    /// A lab with its switch namespace and temp dir; no daemon yet.
    pub fn new() -> Lab {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let prefix = format!("vt{}{}", pid % 10000, n);
        let net = format!("10.{}.{}", 20 + pid % 200, 1 + n % 250);
        let dir = std::env::temp_dir().join(format!("{prefix}-vswitch-test"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        let sock = dir.join("ctl.sock");
        let mut lab = Lab {
            sw: format!("{prefix}sw"),
            prefix,
            dir,
            sock,
            net,
            namespaces: Vec::new(),
            daemon: None,
            persistent: Vec::new(),
            extra: Vec::new(),
        };
        let sw = lab.sw.clone();
        lab.add_netns_named(&sw);
        lab
    }

    /// A lab with a running daemon.
    pub fn with_daemon() -> Lab {
        let mut lab = Lab::new();
        lab.start_daemon(&[]);
        lab
    }

    /// Full namespace name for a short suffix (`h1` -> `vt12340h1`).
    pub fn ns_name(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    /// The lab address of host number `i`.
    pub fn ip(&self, i: u32) -> String {
        format!("{}.{i}", self.net)
    }

    fn add_netns_named(&mut self, name: &str) {
        run_ok("ip", &["netns", "add", name]);
        self.namespaces.push(name.to_string());
        run_ok("ip", &["-n", name, "link", "set", "lo", "up"]);
        // No IPv6: no background ND/MLD traffic to refresh FDB entries or
        // disturb the counting tests.
        self.ns_ok(
            name,
            &[
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        );
    }

    /// Creates a namespace `{prefix}{short}` and returns its full name.
    pub fn add_netns(&mut self, short: &str) -> String {
        let name = self.ns_name(short);
        self.add_netns_named(&name);
        name
    }

    /// Runs a command inside a namespace.
    pub fn ns_exec(&self, ns: &str, args: &[&str]) -> Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args);
        output_timeout(c, CMD_TIMEOUT)
    }

    /// Runs a command inside a namespace, panicking unless it succeeds.
    pub fn ns_ok(&self, ns: &str, args: &[&str]) -> String {
        let o = self.ns_exec(ns, args);
        assert!(
            o.status.success(),
            "{}",
            show_output(&format!("[{ns}] {}", args.join(" ")), &o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Starts a command in a namespace in the background.
    pub fn ns_spawn(&self, ns: &str, args: &[&str], piped: bool) -> Bg {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null());
        if piped {
            c.stdout(Stdio::piped());
        } else {
            c.stdout(Stdio::null());
        }
        c.stderr(Stdio::null());
        let what = format!("[{ns}] {}", args.join(" "));
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Bg::new(child, what)
    }

    /// Whether interface `ifname` exists in `ns`.
    pub fn link_exists(&self, ns: &str, ifname: &str) -> bool {
        run("ip", &["-n", ns, "link", "show", "dev", ifname])
            .status
            .success()
    }

    /// The MAC address of `ifname` in `ns`.
    pub fn mac_of(&self, ns: &str, ifname: &str) -> String {
        let out = run_ok("ip", &["-j", "-n", ns, "link", "show", "dev", ifname]);
        let v: Value = serde_json::from_str(&out).expect("ip -j output");
        v[0]["address"]
            .as_str()
            .expect("address in ip -j output")
            .to_lowercase()
    }

    /// A command line to start vswitchd in the switch namespace.
    pub fn daemon_command(&self, sock: &Path, extra: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.sw, VSWITCHD, "--socket"])
            .arg(sock)
            .args(["--log-level", "debug"])
            .args(extra)
            .stdin(Stdio::null());
        c
    }

    /// Starts vswitchd (in the switch namespace) on the lab socket and waits
    /// until the socket accepts connections.
    pub fn start_daemon(&mut self, extra: &[&str]) {
        self.start_daemon_env(extra, &[]);
    }

    /// [`Lab::start_daemon`] with extra environment variables for vswitchd
    /// (e.g. `VSWITCH_AFPACKET_RING=0`).
    pub fn start_daemon_env(&mut self, extra: &[&str], env: &[(&str, &str)]) {
        assert!(self.daemon.is_none(), "daemon already running");
        let log = self.dir.join(format!(
            "vswitchd-{}.log",
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let f = fs::File::create(&log).expect("daemon log");
        let mut c = self.daemon_command(&self.sock.clone(), extra);
        c.envs(env.iter().copied());
        c.stdout(f.try_clone().expect("dup log")).stderr(f);
        // `ip netns exec` execs the program: the child's PID is vswitchd's.
        let mut child = c.spawn().expect("start vswitchd");
        let sock = self.sock.clone();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                panic!(
                    "vswitchd exited at start with {st}\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if sock.exists() && UnixStream::connect(&sock).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "vswitchd socket {} did not appear\n{}",
                    sock.display(),
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.daemon = Some(Daemon { child, log });
    }

    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon running").child.id()
    }

    pub fn daemon_log(&self) -> String {
        self.daemon
            .as_ref()
            .map(|d| fs::read_to_string(&d.log).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Sends `sig` to the daemon and waits for it to exit.
    pub fn stop_daemon_with(&mut self, sig: libc::c_int) -> ExitStatus {
        let mut d = self.daemon.take().expect("daemon running");
        signal(d.child.id(), sig);
        match wait_exit(&mut d.child, Duration::from_secs(10)) {
            Some(s) => s,
            None => {
                let _ = d.child.kill();
                let _ = d.child.wait();
                panic!(
                    "vswitchd did not exit within 10 s of signal {sig}\n{}",
                    fs::read_to_string(&d.log).unwrap_or_default()
                );
            }
        }
    }

    /// SIGTERM; returns the exit status.
    pub fn stop_daemon(&mut self) -> ExitStatus {
        self.stop_daemon_with(libc::SIGTERM)
    }

    /// Keeps a child (e.g. a second daemon) to be killed at the end.
    pub fn adopt(&mut self, child: Child) -> &mut Child {
        self.extra.push(child);
        self.extra.last_mut().expect("just pushed")
    }

    /// Runs `vswitchctl --socket <lab socket> ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let mut c = Command::new(VSWITCHCTL);
        c.arg("--socket").arg(&self.sock).args(args);
        c.env_remove("VSWITCH_SOCKET");
        output_timeout(c, CMD_TIMEOUT)
    }

    /// Starts `vswitchctl --socket <lab socket> ARGS` in the background with
    /// its stdout piped (a `monitor`); killed when the returned value drops.
    pub fn ctl_spawn(&self, args: &[&str]) -> Bg {
        let mut c = Command::new(VSWITCHCTL);
        c.arg("--socket").arg(&self.sock).args(args);
        c.env_remove("VSWITCH_SOCKET");
        c.stdout(std::process::Stdio::piped());
        c.stderr(std::process::Stdio::null());
        let child = c.spawn().expect("spawn vswitchctl");
        Bg::new(child, format!("vswitchctl {}", args.join(" ")))
    }

    /// `ctl` that must succeed; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(
            o.status.success(),
            "{}\n--- daemon log (tail) ---\n{}",
            show_output(&format!("vswitchctl {}", args.join(" ")), &o),
            tail(&self.daemon_log(), 3000)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `ctl` that must fail with `error:` on stderr; returns stderr.
    pub fn ctl_err(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(
            !o.status.success(),
            "expected failure: {}",
            show_output(&format!("vswitchctl {}", args.join(" ")), &o)
        );
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            err.starts_with("error:"),
            "stderr of failing `vswitchctl {}` must start with `error:`, got {err:?}",
            args.join(" ")
        );
        err
    }

    /// `vswitchctl --json ARGS`, parsed.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ctl_ok(&a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("vswitchctl {}: not JSON ({e}): {out}", a.join(" ")))
    }

    pub fn add_br(&self, br: &str, extra: &[&str]) {
        let mut a = vec!["add-br", br];
        a.extend_from_slice(extra);
        self.ctl_ok(&a);
    }

    fn setup_host_ip(&self, ns: &str, i: u32) -> String {
        let ip = self.ip(i);
        self.ns_ok(
            ns,
            &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        );
        self.ns_ok(ns, &["ip", "link", "set", "eth0", "up"]);
        ip
    }

    /// Host `h{i}` on a TAP port `p{i}` created by the daemon in the host's
    /// namespace as `eth0`, address `net.i`.
    pub fn tap_host(&mut self, br: &str, i: u32) -> Host {
        let ns = self.add_netns(&format!("h{i}"));
        let port = format!("p{i}");
        self.ctl_ok(&[
            "add-port", br, &port, "--type", "tap", "--netns", &ns, "--ifname", "eth0",
        ]);
        assert!(
            wait_until(Duration::from_secs(5), || self.link_exists(&ns, "eth0")),
            "eth0 did not appear in {ns} after add-port --type tap --netns"
        );
        let ip = self.setup_host_ip(&ns, i);
        let mac = self.mac_of(&ns, "eth0");
        Host {
            ns,
            port,
            ifname: "eth0".into(),
            ip,
            mac,
        }
    }

    /// Host `h{i}` behind a veth pair: `eth0` in the host namespace, `s{i}`
    /// in the switch namespace attached as AF_PACKET port `p{i}`.
    pub fn afpacket_host(&mut self, br: &str, i: u32) -> Host {
        let ns = self.add_netns(&format!("h{i}"));
        let port = format!("p{i}");
        let sw_if = format!("s{i}");
        run_ok(
            "ip",
            &[
                "-n", &self.sw, "link", "add", &sw_if, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ],
        );
        let ip = self.setup_host_ip(&ns, i);
        self.ctl_ok(&[
            "add-port", br, &port, "--type", "afpacket", "--ifname", &sw_if,
        ]);
        let mac = self.mac_of(&ns, "eth0");
        Host {
            ns,
            port,
            ifname: "eth0".into(),
            ip,
            mac,
        }
    }

    /// Host `h{i}` on a port of the given kind.
    pub fn host(&mut self, br: &str, i: u32, kind: PortKind) -> Host {
        match kind {
            PortKind::Tap => self.tap_host(br, i),
            PortKind::Afpacket => self.afpacket_host(br, i),
        }
    }

    /// Makes a persistent TAP in the switch namespace (removed at the end).
    pub fn persistent_tap(&mut self, name: &str) {
        run_ok(
            "ip",
            &["-n", &self.sw, "tuntap", "add", name, "mode", "tap"],
        );
        self.persistent.push(name.to_string());
    }

    /// One ping attempt (1 s wait).
    /// The host behind port `p{i}` whose TAP someone else made (a config
    /// file, another daemon): waits for its `eth0` in namespace `h{i}`, then
    /// addresses it as [`Lab::ip`] and brings it up.
    pub fn host_of_port(&self, i: u32) -> Host {
        let ns = self.ns_name(&format!("h{i}"));
        assert!(
            wait_until(Duration::from_secs(5), || self.link_exists(&ns, "eth0")),
            "port p{i}: no eth0 in {ns}"
        );
        let ip = self.ip(i);
        self.ns_ok(
            &ns,
            &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        );
        self.ns_ok(&ns, &["ip", "link", "set", "eth0", "up"]);
        Host {
            mac: self.mac_of(&ns, "eth0"),
            ns,
            port: format!("p{i}"),
            ifname: "eth0".into(),
            ip,
        }
    }

    pub fn ping_once(&self, from: &Host, to_ip: &str) -> bool {
        self.ns_exec(&from.ns, &["ping", "-n", "-q", "-c", "1", "-W", "1", to_ip])
            .status
            .success()
    }

    /// Pings until one reply comes back (at most ~8 s).
    pub fn ping(&self, from: &Host, to_ip: &str) -> bool {
        wait_until(Duration::from_secs(8), || self.ping_once(from, to_ip))
    }

    /// Asserts that every host reaches every other one.
    pub fn assert_all_ping(&self, hosts: &[&Host]) {
        for a in hosts {
            for b in hosts {
                if a.ns != b.ns {
                    assert!(
                        self.ping(a, &b.ip),
                        "{} ({}) cannot ping {} ({})\nstats: {}\n--- daemon log (tail) ---\n{}",
                        a.ns,
                        a.port,
                        b.ns,
                        b.port,
                        String::from_utf8_lossy(&self.ctl(&["--json", "stats"]).stdout),
                        tail(&self.daemon_log(), 3000)
                    );
                }
            }
        }
    }

    /// Runs iperf3 TCP from `client` to `server` for 2 s and returns the
    /// bytes the server received (asserting the run completed).
    pub fn iperf_tcp(&self, client: &Host, server: &Host) -> u64 {
        let bg = self.ns_spawn(
            &server.ns,
            &["iperf3", "-s", "-1", "-B", &server.ip, "-p", "5201"],
            false,
        );
        assert!(
            wait_until(Duration::from_secs(5), || {
                let o = self.ns_exec(&server.ns, &["ss", "-Hltn", "sport = :5201"]);
                !String::from_utf8_lossy(&o.stdout).trim().is_empty()
            }),
            "iperf3 server did not start in {}",
            server.ns
        );
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &client.ns,
            "iperf3",
            "-c",
            &server.ip,
            "-p",
            "5201",
            "-t",
            "2",
            "--json",
            "--connect-timeout",
            "3000",
        ]);
        let o = output_timeout(c, Duration::from_secs(25));
        drop(bg);
        let text = String::from_utf8_lossy(&o.stdout);
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "iperf3 output is not JSON ({e}): {}",
                show_output("iperf3", &o)
            )
        });
        assert!(
            o.status.success() && v.get("error").is_none(),
            "iperf3 {} -> {} failed: {}\nstats: {}\n--- daemon log (tail) ---\n{}",
            client.ns,
            server.ns,
            v.get("error").cloned().unwrap_or_default(),
            String::from_utf8_lossy(&self.ctl(&["--json", "stats"]).stdout),
            tail(&self.daemon_log(), 3000)
        );
        let received = v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
        let sent = v["end"]["sum_sent"]["bytes"].as_u64().unwrap_or(0);
        assert!(
            sent > 0 && received > 0,
            "iperf3 moved no data: sent {sent}, received {received}"
        );
        received
    }

    /// A bulk TCP transfer of exactly `bytes` from `client` to `server`
    /// (`bulk_tcp.py`); returns (sent, received) as (bytes, sha256) pairs.
    pub fn bulk_tcp(
        &self,
        client: &Host,
        server: &Host,
        bytes: u64,
    ) -> ((u64, String), (u64, String)) {
        let script = helper("bulk_tcp.py");
        let mut srv = self.ns_spawn(
            &server.ns,
            &["python3", &script, "serve", &server.ip, "5202"],
            true,
        );
        let line = srv.read_line(Duration::from_secs(10));
        assert_eq!(
            line.trim(),
            "ready",
            "bulk_tcp server did not start: {line:?}"
        );
        let n = bytes.to_string();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &client.ns, "python3", &script, "send"])
            .args([server.ip.as_str(), "5202", n.as_str()]);
        let o = output_timeout(c, Duration::from_secs(60));
        assert!(
            o.status.success(),
            "{}\nstats: {}\n--- daemon log (tail) ---\n{}",
            show_output("bulk_tcp send", &o),
            String::from_utf8_lossy(&self.ctl(&["--json", "stats"]).stdout),
            tail(&self.daemon_log(), 3000)
        );
        let (st, out) = srv.finish(Duration::from_secs(30));
        assert!(st.success(), "bulk_tcp server failed: {st} {out}");
        let parse = |s: &str| -> (u64, String) {
            let v: Value = serde_json::from_str(s.trim())
                .unwrap_or_else(|e| panic!("bulk_tcp output is not JSON ({e}): {s:?}"));
            (
                v["bytes"].as_u64().expect("bytes"),
                v["sha256"].as_str().expect("sha256").to_string(),
            )
        };
        (parse(&String::from_utf8_lossy(&o.stdout)), parse(&out))
    }

    /// Starts `sniff.py` on eth0 of `h` for `secs` seconds with the given
    /// filters (`--src MAC`, `--dst MAC`, `--ethertype N`) and waits until it
    /// listens. Collect the count with [`Lab::sniffed`].
    pub fn sniffer(&self, h: &Host, secs: &str, filters: &[&str]) -> Bg {
        let script = helper("sniff.py");
        let mut args = vec!["python3", script.as_str(), h.ifname.as_str(), secs];
        args.extend_from_slice(filters);
        let mut bg = self.ns_spawn(&h.ns, &args, true);
        let line = bg.read_line(Duration::from_secs(10));
        assert_eq!(line.trim(), "ready", "sniffer did not start: {line:?}");
        bg
    }

    /// Waits for a sniffer to finish; the number of matching frames it saw.
    pub fn sniffed(&self, bg: Bg) -> u64 {
        let (st, out) = bg.finish(Duration::from_secs(30));
        assert!(st.success(), "sniffer failed: {st} {out}");
        let v: Value = serde_json::from_str(out.trim()).expect("sniffer JSON");
        v["matched"].as_u64().expect("matched count")
    }

    /// Runs `sendframes.py` on eth0 of `h`; returns how many frames it sent.
    pub fn send_frames(&self, h: &Host, args: &[&str]) -> u64 {
        let script = helper("sendframes.py");
        let mut a = vec!["python3", script.as_str(), h.ifname.as_str()];
        a.extend_from_slice(args);
        let out = self.ns_ok(&h.ns, &a);
        let v: Value = serde_json::from_str(out.trim()).expect("sendframes JSON");
        v["sent"].as_u64().expect("sent count")
    }

    /// The FDB of a bridge.
    pub fn fdb(&self, br: &str) -> Vec<Value> {
        match self.ctl_json(&["fdb-show", br]) {
            Value::Array(a) => a,
            v => panic!("fdb-show --json is not an array: {v}"),
        }
    }

    /// The FDB entry for `mac`, if any.
    pub fn fdb_entry(&self, br: &str, mac: &str) -> Option<Value> {
        self.fdb(br)
            .into_iter()
            .find(|e| e["mac"].as_str().map(str::to_lowercase).as_deref() == Some(mac))
    }

    /// `stats --json` entry of one port.
    pub fn port_stats(&self, port: &str) -> Value {
        let v = self.ctl_json(&["stats"]);
        v.as_array()
            .and_then(|a| a.iter().find(|s| s["port"] == port).cloned())
            .unwrap_or_else(|| panic!("no stats for port {port}: {v}"))
    }

    pub fn drops(&self, port: &str, reason: &str) -> u64 {
        let s = self.port_stats(port);
        s["drops"][reason]
            .as_u64()
            .unwrap_or_else(|| panic!("stats of {port} lack drops.{reason}: {s}"))
    }

    /// `list-ports --json` entry of one port.
    pub fn port_info(&self, br: &str, port: &str) -> Value {
        let v = self.ctl_json(&["list-ports", br]);
        v.as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == port).cloned())
            .unwrap_or_else(|| panic!("no port {port} in list-ports {br}: {v}"))
    }

    /// A file path in the lab's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}

pub fn tail(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut i = s.len() - n;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

impl Drop for Lab {
    fn drop(&mut self) {
        if thread::panicking() {
            let log = self.daemon_log();
            if !log.is_empty() {
                eprintln!(
                    "--- vswitchd log of {} (tail) ---\n{}",
                    self.prefix,
                    tail(&log, 6000)
                );
            }
        }
        if let Some(mut d) = self.daemon.take() {
            terminate(&mut d.child, Duration::from_secs(5));
        }
        for c in &mut self.extra {
            terminate(c, Duration::from_secs(2));
        }
        for t in &self.persistent {
            let _ = run("ip", &["-n", &self.sw, "link", "del", t]);
        }
        for ns in self.namespaces.iter().rev() {
            let _ = run("ip", &["netns", "del", ns]);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
