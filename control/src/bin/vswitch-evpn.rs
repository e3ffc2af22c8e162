//! vswitch-evpn: joins one vswitchd to a BGP EVPN overlay (RFC 7432, with
//! VXLAN as RFC 8365 §5.1 describes) through a GoBGP speaker next to it.
//!
//! Every `--interval` it reads vswitchd's VXLAN ports and FDBs and the
//! speaker's EVPN RIB, decides (see `evpn::reconcile`, a pure function)
//! and acts:
//! - advertises a type-3 Inclusive Multicast route per local VNI (RFC 7432
//!   §11.1) and a type-2 MAC/IP route per locally learned MAC (§7.2, §9.1),
//!   withdrawing them when the MAC ages out or moves;
//! - turns the other VTEPs' type-3 routes into the VXLAN port's flood list
//!   (`set-port --remote-add/--remote-del`) and their type-2 routes into
//!   static FDB entries behind the port (`fdb-add --vtep`, `fdb-del`),
//!   §9.2;
//! - on SIGTERM/SIGINT withdraws its routes and takes out what it put into
//!   vswitchd.
//!
//! Polling rather than `gobgp monitor`: one loop that compares whole states
//! heals anything missed (a restarted gobgpd or vswitchd, an entry deleted
//! by hand), and vswitchd's FDB has to be read anyway.

use clap::Parser;
use control::evpn::gobgp::Gobgp;
use control::evpn::model::{Action, LocalState, Programmed};
use control::evpn::reconcile::{self, Settings};
use control::evpn::switch::Switch;
use control::{DEFAULT_SOCKET, SOCKET_ENV};
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "vswitch-evpn",
    version,
    about = "Join vswitchd to a BGP EVPN overlay (RFC 7432/8365) through GoBGP",
    long_about = "Join vswitchd to a BGP EVPN overlay (RFC 7432/8365) through GoBGP.\n\n\
Run one per host, next to one vswitchd and one gobgpd (configured with the \
l2vpn-evpn address family towards its peers or route reflector). Each VXLAN port \
of vswitchd is one EVI (VLAN-based service): the agent advertises a type-3 route \
for it (RD LOCAL:VNI, RT ASN:VNI, PMSI ingress replication to LOCAL) and a type-2 \
route per MAC learned on the port's bridge and VLAN, and programs the other \
VTEPs' routes into vswitchd: their type-3 routes become the port's flood list \
(set-port --remote-add), their type-2 routes static FDB entries (fdb-add --vtep). \
A VXLAN port therefore needs no --remote; VNIs up to 65535, IPv4 underlay.",
    after_help = "Example (one host; gobgpd with l2vpn-evpn towards its route reflector):\n  \
vswitchd --socket /run/vswitch/vswitchd.sock &\n  \
vswitchctl add-br br0\n  \
vswitchctl add-port br0 vm1 --type tap\n  \
vswitchctl add-port br0 vx100 --type vxlan --vni 100 --local 10.0.0.1\n  \
gobgpd -f /etc/gobgpd.conf &\n  \
vswitch-evpn --socket /run/vswitch/vswitchd.sock\n\n\
See what it would do without doing it:\n  \
vswitch-evpn --once --dry-run\n\n\
Routes it sends, as gobgp shows them (gobgp global rib -a evpn):\n  \
[type:multicast][rd:10.0.0.1:100][etag:0][ip:10.0.0.1]  rt 65000:100, encap vxlan, pmsi ingress-repl label 100\n  \
[type:macadv][rd:10.0.0.1:100][etag:0][mac:...] label 100, next hop 10.0.0.1, rt 65000:100, encap vxlan\n\n\
SIGTERM/SIGINT: withdraws its routes and removes the flood-list and FDB entries it added \
(--keep-on-exit leaves vswitchd as it is). Flood-list entries and static entries \
configured by hand are never removed."
)]
struct Args {
    /// vswitchd's control socket
    #[arg(long, env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The gobgp CLI program
    #[arg(long, value_name = "PROG", default_value = "gobgp")]
    gobgp: String,
    /// gobgpd's gRPC address (`gobgp -u`)
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    gobgp_host: String,
    /// gobgpd's gRPC port (`gobgp -p`; gobgpd --api-hosts)
    #[arg(long, value_name = "PORT", default_value_t = 50051)]
    gobgp_port: u16,
    /// AS number of the route targets ASN:VNI (default: gobgpd's own AS)
    #[arg(long, value_name = "ASN")]
    asn: Option<u32>,
    /// Manage only this VXLAN port (repeat for several; default: all of them)
    #[arg(long = "port", value_name = "PORT")]
    ports: Vec<String>,
    /// Seconds between two rounds
    #[arg(long, value_name = "SECS", default_value_t = 1.0,
          value_parser = parse_interval)]
    interval: f64,
    /// Seconds to wait for one gobgp command
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    command_timeout: u64,
    /// One round, then exit (without withdrawing anything)
    #[arg(long)]
    once: bool,
    /// Print what would be done instead of doing it
    #[arg(long)]
    dry_run: bool,
    /// On exit, withdraw the routes but leave vswitchd's flood lists and FDB as they are
    #[arg(long)]
    keep_on_exit: bool,
    /// Log verbosity
    #[arg(long, default_value = "info", value_parser = ["error", "warn", "info", "debug"])]
    log_level: String,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.05..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}': expected seconds between 0.05 and 3600")),
    }
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

struct Agent {
    switch: Switch,
    gobgp: Gobgp,
    dry_run: bool,
    done: Programmed,
    /// Notes and errors already logged (each is logged once until it clears).
    seen: HashSet<String>,
}

impl Agent {
    /// Logs a warning the first time it is seen.
    fn warn_once(&mut self, what: String) {
        if self.seen.insert(what.clone()) {
            tracing::warn!("{what}");
        }
    }

    /// Both sides' current state, or `None` (logged) if one cannot be read.
    fn read(&mut self) -> Option<(LocalState, Vec<control::evpn::model::Path>)> {
        let local = match self.switch.state() {
            Ok((st, notes)) => {
                for n in notes {
                    self.warn_once(format!("vswitchd: skipped {n}"));
                }
                st
            }
            Err(e) => {
                self.warn_once(format!("reading vswitchd: {e}"));
                return None;
            }
        };
        let rib = match self.gobgp.rib() {
            Ok((paths, notes)) => {
                for n in notes {
                    self.warn_once(format!("gobgp RIB: skipped {n}"));
                }
                paths
            }
            Err(e) => {
                self.warn_once(format!("reading the gobgp RIB: {e}"));
                return None;
            }
        };
        Some((local, rib))
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for a in actions {
            if self.dry_run {
                if a.is_external() {
                    println!("would {a}");
                }
                continue;
            }
            let r = match &a {
                Action::Advertise(ad) => self.gobgp.advertise(ad),
                Action::Withdraw { nlri, label } => self.gobgp.withdraw(nlri, *label),
                a if a.is_external() => self.switch.apply(a),
                _ => Ok(()),
            };
            match r {
                Ok(()) => {
                    if a.is_external() {
                        tracing::info!("{a}");
                    } else {
                        tracing::debug!("{a}");
                    }
                    self.done.record(&a);
                }
                Err(e) => tracing::warn!("{a}: {e}"),
            }
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| format!("cannot handle signal {sig}: {e}"))?;
    }
    let timeout = Duration::from_secs(args.command_timeout.max(1));
    let mut agent = Agent {
        switch: Switch {
            socket: args.socket.clone(),
            only: args.ports.clone(),
        },
        gobgp: Gobgp {
            prog: args.gobgp.clone(),
            host: args.gobgp_host.clone(),
            port: args.gobgp_port,
            timeout,
        },
        dry_run: args.dry_run,
        done: Programmed::default(),
        seen: HashSet::new(),
    };
    let interval = Duration::from_secs_f64(args.interval);
    let pause = |stop: &AtomicBool| {
        let until = Instant::now() + interval;
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            thread::sleep(Duration::from_millis(50));
        }
    };

    // The AS number of the route targets: given, or gobgpd's (which may
    // still be starting).
    let asn = loop {
        if let Some(a) = args.asn {
            break a;
        }
        match agent.gobgp.asn() {
            Ok(a) => break a,
            Err(e) if args.once => return Err(format!("cannot learn the AS number: {e}")),
            Err(e) => agent.warn_once(format!("waiting for gobgpd: {e}")),
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        pause(&stop);
    };
    let settings = Settings { asn };
    tracing::info!(
        socket = %args.socket.display(),
        gobgp = %format!("{}:{}", args.gobgp_host, args.gobgp_port),
        asn,
        "vswitch-evpn running"
    );

    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some((local, rib)) = agent.read() {
            agent
                .seen
                .retain(|s| !s.starts_with("reading ") && !s.starts_with("waiting "));
            let actions = reconcile::reconcile(&local, &rib, &agent.done, &settings);
            agent.apply(actions);
        } else if args.once {
            return Err("could not read vswitchd or gobgpd (see above)".into());
        }
        if args.once {
            return Ok(());
        }
        pause(&stop);
    }

    tracing::info!("shutting down: withdrawing routes");
    let (local, rib) = match agent.read() {
        Some(x) => x,
        None => (
            LocalState::default(),
            agent.gobgp.rib().map(|r| r.0).unwrap_or_default(),
        ),
    };
    let mut actions = reconcile::shutdown(&local, &rib, &agent.done, &settings);
    if args.keep_on_exit {
        actions.retain(|a| matches!(a, Action::Withdraw { .. }));
    }
    agent.apply(actions);
    Ok(())
}
