//! Real QEMU guests (TCG) for the VM tests: the guest kit of `examples/vm/`
//! (a Debian kernel and a busybox initramfs) and a [`Guest`] driven over its
//! serial console.
//!
//! QEMU runs in the lab's switch namespace, where vswitchd runs, so the TAP
//! it opens is there for an AF_PACKET port. The console is QEMU's stdio: a
//! command is written to the guest's shell followed by an end marker
//! (`@@END <seq> <status>`) that the reader thread waits for. The guest
//! prints `@@READY ...` once its network is configured. Dropping a
//! [`Guest`] ends its QEMU by PID.

#![allow(dead_code)]

use crate::common::*;
use std::fs;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The guest kit: kernel and initramfs built by `examples/vm/build.sh`.
#[derive(Debug, Clone)]
pub struct Kit {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// Whether `prog` is on PATH.
fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// The guest kit, or `None` (with the reason printed) when QEMU or the
/// Debian packages cannot be had: the caller then skips its test.
pub fn kit() -> Option<Kit> {
    if !on_path("qemu-system-x86_64") {
        eprintln!("skipped: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
        return None;
    }
    let script = format!("{}/../examples/vm/build.sh", env!("CARGO_MANIFEST_DIR"));
    let mut c = Command::new("bash");
    c.arg(&script);
    let o = output_timeout(c, Duration::from_secs(300));
    if !o.status.success() {
        eprintln!(
            "skipped: the guest kit could not be built\n{}",
            show_output(&script, &o)
        );
        return None;
    }
    let out = String::from_utf8_lossy(&o.stdout);
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| PathBuf::from(v.trim()))
    };
    match (get("KERNEL="), get("INITRD=")) {
        (Some(kernel), Some(initrd)) if kernel.is_file() && initrd.is_file() => {
            Some(Kit { kernel, initrd })
        }
        _ => {
            eprintln!("skipped: build.sh printed no kernel/initrd: {out}");
            None
        }
    }
}

/// How to boot one guest.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// Host name in the guest; also names the console log.
    pub name: String,
    /// The TAP QEMU opens (`-netdev tap,ifname=`): created by QEMU unless a
    /// persistent TAP of that name exists.
    pub tap: String,
    pub mac: String,
    /// eth0's address with prefix length (`10.1.2.3/24`).
    pub cidr: String,
    /// Tag in the guest: the address goes on eth0.VID.
    pub vlan: Option<u16>,
}

/// A running QEMU guest.
pub struct Guest {
    pub spec: GuestSpec,
    child: Child,
    stdin: ChildStdin,
    console: Arc<Mutex<Vec<u8>>>,
    pub log: PathBuf,
    seq: u32,
}

impl Guest {
    /// Starts QEMU (TCG, 256 MiB, one vCPU) in the lab's switch namespace
    /// with a virtio-net NIC on TAP `spec.tap` (`vnet_hdr=on`: the guest's
    /// TSO and checksum offloads reach the TAP). Does not wait for the boot.
    pub fn boot(lab: &Lab, kit: &Kit, spec: GuestSpec) -> Guest {
        let netdev = format!(
            "tap,id=n0,ifname={},script=no,downscript=no,vnet_hdr=on",
            spec.tap
        );
        let device = format!("virtio-net-pci,netdev=n0,mac={}", spec.mac);
        let net = ["-netdev", &netdev, "-device", &device].map(String::from);
        Self::boot_with(lab, kit, spec, &net)
    }

    /// Starts QEMU as [`Guest::boot`] does, with a virtio-net NIC on the
    /// vhost-user socket `socket` (`spec.tap` is not used): QEMU connects to
    /// it, reconnecting every second (vswitch in server mode), or with
    /// `qemu_listens` listens on it without waiting (vswitch in client
    /// mode). Guest memory is a shared memfd, as vhost-user needs, and the
    /// device has no MSI-X (`vectors=0`: Debian 12's QEMU 7.2 under TCG
    /// crashes with vhost-user and MSI-X).
    pub fn boot_vhost(
        lab: &Lab,
        kit: &Kit,
        spec: GuestSpec,
        socket: &str,
        qemu_listens: bool,
    ) -> Guest {
        let chardev = if qemu_listens {
            format!("socket,id=c0,path={socket},server=on,wait=off")
        } else {
            format!("socket,id=c0,path={socket},reconnect=1")
        };
        let device = format!("virtio-net-pci,netdev=n0,vectors=0,mac={}", spec.mac);
        let net = [
            "-object",
            "memory-backend-memfd,id=mem,size=256M,share=on",
            "-numa",
            "node,memdev=mem",
            "-chardev",
            &chardev,
            "-netdev",
            "vhost-user,id=n0,chardev=c0",
            "-device",
            &device,
        ]
        .map(String::from);
        Self::boot_with(lab, kit, spec, &net)
    }

    fn boot_with(lab: &Lab, kit: &Kit, spec: GuestSpec, net: &[String]) -> Guest {
        let log = lab.path(&format!("{}-console.log", spec.name));
        let qlog =
            fs::File::create(lab.path(&format!("{}-qemu.log", spec.name))).expect("qemu log file");
        let ip = spec.cidr.clone();
        let mut append = format!(
            "console=ttyS0 quiet panic=-1 vm.name={} vm.ip={ip}",
            spec.name
        );
        if let Some(v) = spec.vlan {
            append.push_str(&format!(" vm.vlan={v}"));
        }
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &lab.sw, "qemu-system-x86_64"])
            .args(["-accel", "tcg", "-m", "256", "-smp", "1"])
            .args(["-nodefaults", "-no-user-config", "-no-reboot"])
            .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
            .arg("-kernel")
            .arg(&kit.kernel)
            .arg("-initrd")
            .arg(&kit.initrd)
            .args(["-append", &append])
            .args(net)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(qlog);
        // `ip netns exec` execs QEMU: the child's PID is QEMU's.
        let mut child = c.spawn().expect("start qemu-system-x86_64");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut out = child.stdout.take().expect("piped stdout");
        let console = Arc::new(Mutex::new(Vec::new()));
        let buf = Arc::clone(&console);
        let mut file = fs::File::create(&log).expect("console log");
        thread::spawn(move || {
            let mut b = [0u8; 4096];
            while let Ok(n) = out.read(&mut b) {
                if n == 0 {
                    break;
                }
                let _ = file.write_all(&b[..n]);
                buf.lock().expect("console lock").extend_from_slice(&b[..n]);
            }
        });
        Guest {
            spec,
            child,
            stdin,
            console,
            log,
            seq: 0,
        }
    }

    /// The guest's address without the prefix length.
    pub fn ip(&self) -> String {
        self.spec
            .cidr
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// Everything the console printed so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&self.console.lock().expect("console lock")).into_owned()
    }

    fn console_len(&self) -> usize {
        self.console.lock().expect("console lock").len()
    }

    /// Panics (with the console) unless QEMU is still running.
    fn assert_running(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!(
                "qemu of {} exited with {st}\n--- console ---\n{}\n--- qemu stderr ---\n{}",
                self.spec.name,
                tail(&self.console(), 4000),
                fs::read_to_string(
                    self.log
                        .with_file_name(format!("{}-qemu.log", self.spec.name))
                )
                .unwrap_or_default()
            );
        }
    }

    /// Waits until a console line after byte `from` contains `pat` and is
    /// complete; returns that line.
    fn wait_line(&mut self, from: usize, pat: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let c = self.console.lock().expect("console lock");
                let text = String::from_utf8_lossy(&c[from.min(c.len())..]).into_owned();
                if let Some(i) = text.find(pat) {
                    if let Some(j) = text[i..].find('\n') {
                        return Some(text[i..i + j].trim_end().to_string());
                    }
                }
            }
            self.assert_running();
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for `@@READY` (network configured); returns the time it took
    /// from now. Panics with the console on timeout or on `@@ERROR`.
    pub fn wait_ready(&mut self, timeout: Duration) -> Duration {
        let t0 = Instant::now();
        let line = self.wait_line(0, "@@READY", timeout);
        let con = self.console();
        assert!(
            line.is_some() && !con.contains("@@ERROR"),
            "guest {} did not come up within {timeout:?}\n--- console ---\n{}",
            self.spec.name,
            tail(&con, 4000)
        );
        t0.elapsed()
    }

    /// Runs a shell command line in the guest; returns its exit status and
    /// the console text it produced (with the echoed command).
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> (i32, String) {
        self.seq += 1;
        let seq = self.seq;
        let start = self.console_len();
        // The quotes split the marker in the echoed command line, so only
        // the shell's output contains it whole.
        writeln!(self.stdin, "{cmd}; echo \"@@E\"\"ND {seq} $?\"").expect("write to the console");
        self.stdin.flush().expect("flush the console");
        let marker = format!("@@END {seq} ");
        let line = self.wait_line(start, &marker, timeout).unwrap_or_else(|| {
            panic!(
                "guest {}: `{cmd}` did not finish within {timeout:?}\n--- console ---\n{}",
                self.spec.name,
                tail(&self.console(), 4000)
            )
        });
        let rc = line[marker.len()..].trim().parse().unwrap_or(-1);
        let text = self.console();
        let out = text
            .get(start..)
            .map(|t| t.split(&marker).next().unwrap_or(t).to_string())
            .unwrap_or_default();
        (rc, out)
    }

    /// Pings `ip` from the guest until a reply comes back (at most ~`secs`).
    pub fn ping(&mut self, ip: &str, secs: u32) -> bool {
        let cmd = format!(
            "i=0; while [ $i -lt {secs} ]; do ping -c 1 -W 1 {ip} >/dev/null && break; i=$((i+1)); done; [ $i -lt {secs} ]"
        );
        self.run(&cmd, Duration::from_secs(u64::from(secs) * 3 + 20))
            .0
            == 0
    }

    /// `count` pings to `ip` at 0.2 s intervals: (received, average RTT ms).
    pub fn ping_rtt(&mut self, ip: &str, count: u32) -> (u32, f64) {
        let (_, out) = self.run(
            &format!("ping -c {count} -i 0.2 -W 2 {ip}"),
            Duration::from_secs(u64::from(count) + 30),
        );
        let received = out
            .lines()
            .find_map(|l| {
                l.split(", ")
                    .find(|p| p.ends_with("packets received"))
                    .and_then(|p| p.split(' ').next())
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0);
        // "round-trip min/avg/max = 0.899/4.936/19.200 ms"
        let avg = out
            .lines()
            .find_map(|l| l.split("min/avg/max = ").nth(1))
            .and_then(|v| v.split('/').nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        (received, avg)
    }

    /// Whether no ping to `ip` gets an answer within `count` tries.
    pub fn unreachable(&mut self, ip: &str, count: u32) -> bool {
        let (rc, _) = self.run(
            &format!("ping -c {count} -i 0.5 -W 1 {ip} >/dev/null"),
            Duration::from_secs(u64::from(count) * 2 + 20),
        );
        rc != 0
    }

    /// `vm-send`: a TCP transfer of `mib` MiB from the guest to
    /// `host:port` with busybox nc. Returns the `@@SENT` fields.
    pub fn send_tcp(&mut self, host: &str, port: u16, mib: u32) -> Sent {
        let (rc, out) = self.run(
            &format!("vm-send {host} {port} {mib}"),
            Duration::from_secs(180),
        );
        let line = out
            .lines()
            .find(|l| l.starts_with("@@SENT"))
            .unwrap_or_else(|| panic!("no @@SENT line from vm-send (status {rc}): {out}"));
        let field = |k: &str| -> String {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")))
                .unwrap_or_default()
                .to_string()
        };
        Sent {
            rc: field("rc").parse().unwrap_or(-1),
            bytes: field("bytes").parse().unwrap_or(0),
            secs: field("secs").parse().unwrap_or(f64::NAN),
            mbit: field("mbit").parse().unwrap_or(f64::NAN),
            sha256: field("sha256"),
        }
    }

    /// `vm-serve`: `mib` MiB of random bytes served by busybox httpd on
    /// `port` as `/data`; returns (bytes, sha256) of the file.
    pub fn serve_http(&mut self, mib: u32, port: u16) -> (u64, String) {
        let (rc, out) = self.run(&format!("vm-serve {mib} {port}"), Duration::from_secs(120));
        let line = out
            .lines()
            .find(|l| l.starts_with("@@SERVE"))
            .unwrap_or_else(|| panic!("no @@SERVE line from vm-serve (status {rc}): {out}"));
        let field = |k: &str| -> String {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")))
                .unwrap_or_default()
                .to_string()
        };
        (field("bytes").parse().unwrap_or(0), field("sha256"))
    }

    /// Powers the guest off and waits for QEMU to exit.
    pub fn poweroff(&mut self) {
        let _ = writeln!(self.stdin, "poweroff -f");
        let _ = self.stdin.flush();
        if wait_exit(&mut self.child, Duration::from_secs(20)).is_none() {
            terminate(&mut self.child, Duration::from_secs(2));
        }
    }

    /// Whether QEMU has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- console of guest {} (tail) ---\n{}",
                self.spec.name,
                tail(&self.console(), 3000)
            );
        }
        terminate(&mut self.child, Duration::from_secs(3));
    }
}

/// What `vm-send` reported.
#[derive(Debug, Clone)]
pub struct Sent {
    pub rc: i32,
    pub bytes: u64,
    pub secs: f64,
    pub mbit: f64,
    pub sha256: String,
}

/// A TAP name in the switch namespace, unique per lab (at most 15 bytes).
pub fn tap_name(lab: &Lab, short: &str) -> String {
    let n = format!("{}{short}", lab.prefix);
    assert!(n.len() <= 15, "interface name {n} too long");
    n
}

/// Waits until QEMU has created (or opened) `tap` in the switch namespace.
pub fn wait_tap(lab: &Lab, guest: &mut Guest) {
    let tap = guest.spec.tap.clone();
    let ok = wait_until(Duration::from_secs(20), || {
        guest.assert_running();
        lab.link_exists(&lab.sw, &tap)
    });
    assert!(ok, "QEMU did not create TAP {tap} in {}", lab.sw);
}

/// A locally administered MAC for guest number `i` of this process.
pub fn guest_mac(i: u8) -> String {
    let pid = std::process::id();
    format!(
        "52:54:{:02x}:{:02x}:{:02x}:{i:02x}",
        (pid >> 16) & 0xff,
        (pid >> 8) & 0xff,
        pid & 0xff
    )
}

/// (rx_packets, rx_bytes) of a port.
pub fn rx_counts(lab: &Lab, port: &str) -> (u64, u64) {
    let s = lab.port_stats(port);
    (
        s["rx_packets"].as_u64().unwrap_or(0),
        s["rx_bytes"].as_u64().unwrap_or(0),
    )
}

/// What `examples/vm/fetch.py` reported: one copy's size and digest, and
/// the rate over all copies.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: u64,
    pub sha256: String,
    pub secs: f64,
    pub mbit: f64,
}

/// Downloads `url` `copies` times from namespace `ns` with fetch.py.
pub fn fetch(lab: &Lab, ns: &str, url: &str, copies: u32) -> Fetched {
    let script = format!("{}/../examples/vm/fetch.py", env!("CARGO_MANIFEST_DIR"));
    let n = copies.to_string();
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "python3", &script, url, &n]);
    let o = output_timeout(c, Duration::from_secs(120));
    assert!(
        o.status.success(),
        "{}\nstats: {}",
        show_output("fetch.py", &o),
        String::from_utf8_lossy(&lab.ctl(&["--json", "stats"]).stdout)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("fetch.py output is not JSON ({e}): {text}"));
    Fetched {
        bytes: v["bytes"].as_u64().unwrap_or(0),
        sha256: v["sha256"].as_str().unwrap_or_default().to_string(),
        secs: v["secs"].as_f64().unwrap_or(f64::NAN),
        mbit: v["mbit"].as_f64().unwrap_or(f64::NAN),
    }
}

/// Payload sizes of the TCP segments in `tcpdump -nn -q` output
/// (`... > 10.1.2.1.5202: tcp 2896`).
pub fn tcp_lengths(dump: &str) -> Vec<u64> {
    dump.lines()
        .filter_map(|l| l.rsplit("tcp ").next()?.trim().parse().ok())
        .collect()
}
