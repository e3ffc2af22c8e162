//! vswitchd: the vswitch daemon. Runs in the foreground, logs to stderr, owns
//! the data plane, and serves the control socket.

use clap::Parser;
use control::server::Server;
use control::{persist, DEFAULT_SOCKET, SOCKET_ENV};
use dataplane::engine::{self, EngineOptions};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "vswitchd",
    version,
    about = "vswitch daemon: a userspace virtual switch (TAP and AF_PACKET ports, learning bridge)",
    after_help = "Drive it with vswitchctl. Example:\n  vswitchd --socket /tmp/vs.sock &\n  vswitchctl --socket /tmp/vs.sock add-br br0\n\nSIGINT/SIGTERM shut it down cleanly: TAP devices it created are removed, the socket file is removed.\n\nEnvironment: VSWITCH_AFPACKET_RING=0 makes AF_PACKET ports receive with recvmmsg instead of their mmap'ed TPACKET_V2 ring (for comparisons)."
)]
struct Args {
    /// Control socket path
    #[arg(long, env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// TOML configuration applied at start and written back by `vswitchctl save`
    /// (a missing file is created on the first save)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data-plane worker threads; each receives on its share of the ports
    /// (default: half the CPUs, at least 1)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    workers: Option<u32>,
    /// Keep polling this many microseconds after the last frame before
    /// sleeping (lower latency for request/response traffic). With
    /// --busy-poll-max-us 0 as well, 0 never spins
    #[arg(long, value_name = "US", default_value_t = dataplane::engine::DEFAULT_BUSY_POLL_US,
          value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    busy_poll_us: u64,
    /// Ceiling of the adaptive busy-poll window: when frames keep arriving
    /// just after a worker went to sleep, it spins up to this long (µs)
    /// instead, so request/response traffic with gaps up to about this long
    /// costs no wake-ups (and a spinning core while it lasts); sparser
    /// traffic goes back to --busy-poll-us. 0 = never adapt
    #[arg(long, value_name = "US", default_value_t = dataplane::engine::DEFAULT_BUSY_POLL_MAX_US,
          value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    busy_poll_max_us: u64,
    /// Latency profile: the workers spin all the time, never sleeping, so
    /// even the first frame after a quiet spell is forwarded without a
    /// wake-up. Costs one CPU per worker, busy or idle (see README
    /// "Threads and latency"; pairs well with --workers 1 and a CPU set aside)
    #[arg(long, conflicts_with_all = ["busy_poll_us", "busy_poll_max_us"])]
    latency: bool,
    /// Log verbosity
    #[arg(long, default_value = "info", value_parser = ["error", "warn", "info", "debug"])]
    log_level: String,
    /// Group allowed to use the control socket (mode 0660 instead of 0600)
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,
    /// Once the --config ports are open, run as this user with only
    /// CAP_NET_ADMIN and CAP_NET_RAW. Ports in other network namespaces can
    /// then only come from --config (entering a namespace needs
    /// CAP_SYS_ADMIN), and `save` needs write access to the config's
    /// directory
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Serve Prometheus metrics on http://ADDR:PORT/metrics (off unless
    /// given): per-port packets, bytes, drops by reason and link state, FDB
    /// size and learning, STP state and topology changes, NAT flows, worker
    /// busy time and batch sizes. No authentication: bind it to loopback or
    /// a management address, e.g. `--metrics 127.0.0.1:9477`, then
    /// `curl http://127.0.0.1:9477/metrics`
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Takes an exclusive lock next to the socket so two daemons can never serve
/// the same path, even when started at the same moment.
fn lock(socket: &Path) -> Result<(File, PathBuf), String> {
    let lock_path = PathBuf::from(format!("{}.lock", socket.display()));
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot create lock file {}: {e}", lock_path.display()))?;
    // SAFETY: flock on a descriptor we own; no pointers involved.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        return Err(format!(
            "another vswitchd is already running on {} (lock {} is held)",
            socket.display(),
            lock_path.display()
        ));
    }
    Ok((f, lock_path))
}

fn group_id(name: &str) -> Result<u32, String> {
    let c = CString::new(name).map_err(|_| format!("invalid group name '{name}'"))?;
    // SAFETY: getgrnam reads a NUL-terminated string; the result is checked
    // for NULL before its gr_gid field is read, and not kept.
    let g = unsafe { libc::getgrnam(c.as_ptr()) };
    if g.is_null() {
        return Err(format!("no group named '{name}'"));
    }
    // SAFETY: `g` is non-null and points to the libc-owned group record.
    Ok(unsafe { (*g).gr_gid })
}

fn bind(socket: &Path, group: Option<&str>) -> Result<UnixListener, String> {
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            return Err(format!(
                "another vswitchd is already listening on {}",
                socket.display()
            ));
        }
        // A stale socket from a daemon that died: nobody is listening.
        fs::remove_file(socket).map_err(|e| format!("removing stale {}: {e}", socket.display()))?;
    }
    let gid = group.map(group_id).transpose()?;
    let listener =
        UnixListener::bind(socket).map_err(|e| format!("cannot bind {}: {e}", socket.display()))?;
    let mode = if gid.is_some() { 0o660 } else { 0o600 };
    fs::set_permissions(socket, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", socket.display()))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(socket, None, Some(gid))
            .map_err(|e| format!("chown {}: {e}", socket.display()))?;
    }
    Ok(listener)
}

fn run(args: Args) -> Result<(), String> {
    if let Some(dir) = args.socket.parent() {
        if !dir.as_os_str().is_empty() {
            fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
    }
    let (_lock_file, lock_path) = lock(&args.socket)?;
    let config = match &args.config {
        Some(p) => {
            let stale = persist::remove_stale_temps(p);
            if stale > 0 {
                tracing::info!(stale, "removed temporary files of interrupted saves");
            }
            persist::load(p)?
        }
        None => Default::default(),
    };
    // Bound before the workers start: a bad address stops the start with
    // nothing to undo.
    let metrics = args
        .metrics
        .as_deref()
        .map(control::metrics::bind)
        .transpose()?;

    // Signals first, so a SIGTERM during start-up is not lost.
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM])
        .map_err(|e| format!("installing signal handlers: {e}"))?;

    let mut opts = EngineOptions {
        busy_poll_us: args.busy_poll_us,
        busy_poll_max_us: args.busy_poll_max_us,
        ..Default::default()
    };
    if args.latency {
        opts.busy_poll_us = engine::SPIN_ALWAYS;
        opts.busy_poll_max_us = engine::SPIN_ALWAYS;
    }
    if let Some(w) = args.workers {
        opts.workers = w as usize;
    }
    let workers = opts.workers;
    let handle = engine::start(opts).map_err(|e| format!("starting the workers: {e}"))?;
    if let Err(e) = handle.apply_config(&config) {
        handle.shutdown();
        return Err(format!(
            "applying {}: {e}",
            args.config.as_deref().unwrap_or(Path::new("")).display()
        ));
    }
    let listener = match bind(&args.socket, args.socket_group.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            handle.shutdown();
            return Err(e);
        }
    };
    if let Some(name) = &args.user {
        // Before the control server starts: its threads inherit this
        // thread's (reduced) capabilities.
        let dropped = control::privs::lookup(name).and_then(|u| {
            control::privs::drop_to(&u)?;
            Ok(u)
        });
        match dropped {
            Ok(u) => tracing::info!(
                user = %u.name,
                uid = u.uid,
                "running unprivileged, with CAP_NET_ADMIN and CAP_NET_RAW only"
            ),
            Err(e) => {
                handle.shutdown();
                let _ = fs::remove_file(&args.socket);
                return Err(format!("--user {name}: {e}"));
            }
        }
    }
    // After the drop too: it re-opens AF_PACKET ports (CAP_NET_RAW kept).
    if let Err(e) = handle.start_housekeeping() {
        handle.shutdown();
        return Err(format!("starting the housekeeping thread: {e}"));
    }
    let server = Server {
        handle: handle.clone(),
        config_path: args.config.clone(),
    };
    std::thread::Builder::new()
        .name("vswitch-accept".into())
        .spawn(move || server.serve(listener))
        .map_err(|e| format!("starting the control server: {e}"))?;
    if let Some(listener) = metrics {
        let addr = listener.local_addr().map(|a| a.to_string());
        let h = handle.clone();
        let started = std::thread::Builder::new()
            .name("vswitch-metrics".into())
            .spawn(move || control::metrics::serve(listener, h));
        if let Err(e) = started {
            handle.shutdown();
            let _ = fs::remove_file(&args.socket);
            return Err(format!("starting the metrics server: {e}"));
        }
        let addr = addr.unwrap_or_default();
        tracing::info!("serving Prometheus metrics on http://{addr}/metrics");
    }
    tracing::info!(socket = %args.socket.display(), workers, "vswitchd ready");

    // Wait for SIGINT/SIGTERM, then stop the workers and remove the devices
    // the daemon created.
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down");
    }
    let clean = handle.shutdown();
    let _ = fs::remove_file(&args.socket);
    let _ = fs::remove_file(&lock_path);
    if clean {
        Ok(())
    } else {
        Err("a worker thread panicked".into())
    }
}
