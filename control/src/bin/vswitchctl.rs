//! vswitchctl: drives a running vswitchd over its control socket. Prints
//! tables by default and one JSON document with `--json`.

use clap::{Parser, Subcommand, ValueEnum};
use control::client::Client;
use control::fdbshow;
use control::{DEFAULT_SOCKET, SOCKET_ENV};
use dataplane::api::Request;
use dataplane::config::{PortConfig, PortType};
use dataplane::MacAddr;
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "vswitchctl",
    version,
    about = "Configure and inspect a running vswitchd",
    after_help = "Examples:\n  vswitchctl add-br br0\n  vswitchctl add-port br0 h1 --type tap --netns h1 --ifname eth0\n  vswitchctl add-port br0 veth1 --type afpacket\n  vswitchctl fdb-show br0 --json\n  vswitchctl stats"
)]
struct Cli {
    /// Control socket of the daemon
    #[arg(long, global = true, env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print one JSON document instead of a table
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum TypeArg {
    Tap,
    Afpacket,
    Vxlan,
}

fn parse_mac(s: &str) -> Result<MacAddr, String> {
    s.parse::<MacAddr>().map_err(|e| e.to_string())
}

fn parse_vlan(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(v @ 1..=4094) => Ok(v),
        _ => Err(format!("'{s}' is not a VLAN id (1-4094)")),
    }
}

fn parse_vlan_list(s: &str) -> Result<String, String> {
    dataplane::bridge::vlan::VlanSet::parse(s).map(|v| v.to_ranges())
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("'{s}': expected on or off")),
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Add a bridge
    AddBr {
        bridge: String,
        /// Run spanning tree (IEEE 802.1D)
        #[arg(long)]
        stp: bool,
        /// FDB ageing time in seconds (default 300)
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        ageing: Option<u32>,
        /// Most learned MAC addresses; new ones beyond it are not learned (0: no limit)
        #[arg(long, value_name = "N")]
        fdb_max: Option<u32>,
    },
    /// Delete a bridge and its ports
    DelBr { bridge: String },
    /// Change bridge settings
    SetBr {
        bridge: String,
        /// FDB ageing time in seconds
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        ageing: Option<u32>,
        /// Most learned MAC addresses (0: no limit)
        #[arg(long, value_name = "N")]
        fdb_max: Option<u32>,
        /// Spanning tree on or off
        #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
        stp: Option<bool>,
        /// STP bridge priority (0-65535, default 32768; lowest becomes root)
        #[arg(long, value_name = "N")]
        priority: Option<u16>,
        /// STP hello time in seconds (1-10, default 2)
        #[arg(long, value_name = "S")]
        hello: Option<u8>,
        /// STP max age in seconds (6-40, default 20)
        #[arg(long, value_name = "S")]
        max_age: Option<u8>,
        /// STP forward delay in seconds (4-30, default 15)
        #[arg(long, value_name = "S")]
        forward_delay: Option<u8>,
    },
    /// List bridges
    ListBr,
    /// Show spanning-tree state: bridge id, root, root port, cost, and each
    /// port's role and state
    StpShow { bridge: String },
    /// Attach a port to a bridge
    AddPort {
        bridge: String,
        port: String,
        /// Port kind: tap (the daemon creates or attaches a TAP device), afpacket
        /// (an existing interface in the daemon's namespace) or vxlan (a VTEP:
        /// needs --vni, --local and --remote)
        #[arg(long = "type", value_enum)]
        kind: TypeArg,
        /// tap: create the device in this network namespace (as named by `ip netns`)
        #[arg(long, value_name = "NS")]
        netns: Option<String>,
        /// Interface name (tap: its name inside --netns; afpacket: the interface to attach)
        #[arg(long, value_name = "NAME")]
        ifname: Option<String>,
        /// tap: MAC address of the host-side interface
        #[arg(long, value_parser = parse_mac)]
        mac: Option<MacAddr>,
        /// tap: MTU of the host-side interface
        #[arg(long, value_parser = clap::value_parser!(u32).range(68..=65535))]
        mtu: Option<u32>,
        /// vxlan: the VXLAN network identifier (0-16777215)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=16_777_215))]
        vni: Option<u32>,
        /// vxlan: the underlay address to send from and listen on
        #[arg(long, value_name = "IP")]
        local: Option<std::net::IpAddr>,
        /// vxlan: remote VTEPs; broadcast and unknown unicast go to all of them
        #[arg(long, value_name = "IP[,IP...]", value_delimiter = ',')]
        remote: Vec<std::net::IpAddr>,
        /// vxlan: UDP port of the underlay
        #[arg(long, value_name = "PORT", default_value_t = 4789, value_parser = clap::value_parser!(u16).range(1..))]
        dstport: u16,
        /// vxlan: also accept frames from VTEPs that are not a --remote (and
        /// learn the stations behind them)
        #[arg(long)]
        learning: bool,
    },
    /// Remove a port (a TAP the daemon created is deleted)
    DelPort { port: String },
    /// Change a port's VLANs, isolation or learning
    #[command(group(clap::ArgGroup::new("mode").args(["access", "trunk"])))]
    SetPort {
        port: String,
        /// Access port: carry this VLAN untagged
        #[arg(long, value_name = "VID", value_parser = parse_vlan)]
        access: Option<u16>,
        /// Trunk port: carry these VLANs tagged, e.g. 10,20,100-110
        #[arg(long, value_name = "VLANS", value_parser = parse_vlan_list)]
        trunk: Option<String>,
        /// Trunk port: carry this VLAN untagged
        #[arg(long, value_name = "VID", value_parser = parse_vlan)]
        native: Option<u16>,
        /// Isolated ports reach only non-isolated ports
        #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
        isolated: Option<bool>,
        /// Learn source addresses on this port
        #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
        learning: Option<bool>,
        /// Most addresses learned on this port; frames from further new
        /// addresses are dropped (0: no limit)
        #[arg(long, value_name = "N")]
        mac_limit: Option<u32>,
        /// Shut the port down if a BPDU arrives (setting it also re-enables
        /// a port the guard shut)
        #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
        bpdu_guard: Option<bool>,
        /// STP path cost of the port (default 100, as Linux for veth/TAP)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=200_000_000))]
        stp_cost: Option<u32>,
        /// STP port priority (0-255, default 128)
        #[arg(long, value_name = "N")]
        stp_priority: Option<u8>,
    },
    /// List ports (of one bridge, or all)
    ListPorts { bridge: Option<String> },
    /// Show the forwarding database
    FdbShow { bridge: String },
    /// Add a static FDB entry (never aged)
    FdbAdd {
        bridge: String,
        #[arg(value_parser = parse_mac)]
        mac: MacAddr,
        port: String,
        #[arg(long, value_parser = parse_vlan)]
        vlan: Option<u16>,
    },
    /// Delete an FDB entry
    FdbDel {
        bridge: String,
        #[arg(value_parser = parse_mac)]
        mac: MacAddr,
        #[arg(long, value_parser = parse_vlan)]
        vlan: Option<u16>,
    },
    /// Remove learned entries (all, or one port's); static entries stay
    FdbFlush {
        bridge: String,
        #[arg(long)]
        port: Option<String>,
    },
    /// Everything at a glance
    Show,
    /// Per-port counters and drops by reason
    Stats { port: Option<String> },
    /// Write the running configuration as TOML (to vswitchd's --config file by default)
    Save { file: Option<PathBuf> },
}

fn request(cmd: Cmd) -> Result<Request, String> {
    Ok(match cmd {
        Cmd::AddBr {
            bridge,
            stp,
            ageing,
            fdb_max,
        } => Request::AddBr {
            name: bridge,
            stp,
            ageing_s: ageing,
            fdb_max,
            priority: None,
            hello_s: None,
            max_age_s: None,
            forward_delay_s: None,
        },
        Cmd::DelBr { bridge } => Request::DelBr { name: bridge },
        Cmd::SetBr {
            bridge,
            ageing,
            fdb_max,
            stp,
            priority,
            hello,
            max_age,
            forward_delay,
        } => {
            if ageing.is_none()
                && fdb_max.is_none()
                && stp.is_none()
                && priority.is_none()
                && hello.is_none()
                && max_age.is_none()
                && forward_delay.is_none()
            {
                return Err("set-br: nothing to set (give --ageing, --fdb-max, --stp, --priority, --hello, --max-age or --forward-delay)".into());
            }
            Request::SetBr {
                name: bridge,
                ageing_s: ageing,
                fdb_max,
                stp,
                priority,
                hello_s: hello,
                max_age_s: max_age,
                forward_delay_s: forward_delay,
            }
        }
        Cmd::ListBr => Request::ListBr,
        Cmd::StpShow { bridge } => Request::StpShow { bridge },
        Cmd::AddPort {
            bridge,
            port,
            kind,
            netns,
            ifname,
            mac,
            mtu,
            vni,
            local,
            remote,
            dstport,
            learning,
        } => {
            let kind = match kind {
                TypeArg::Tap => PortType::Tap,
                TypeArg::Afpacket => PortType::Afpacket,
                TypeArg::Vxlan => PortType::Vxlan,
            };
            let mut p = PortConfig::new(&port, kind);
            p.netns = netns;
            p.ifname = ifname;
            p.mac = mac;
            p.mtu = mtu;
            p.vni = vni;
            p.local = local;
            p.remotes = remote;
            if kind == PortType::Vxlan {
                p.dstport = (dstport != dataplane::config::VXLAN_PORT).then_some(dstport);
            } else if dstport != dataplane::config::VXLAN_PORT {
                return Err("--dstport is for vxlan ports".into());
            }
            p.vtep_learning = learning;
            Request::AddPort { bridge, port: p }
        }
        Cmd::DelPort { port } => Request::DelPort { name: port },
        Cmd::SetPort {
            port,
            access,
            trunk,
            native,
            isolated,
            learning,
            mac_limit,
            bpdu_guard,
            stp_cost,
            stp_priority,
        } => {
            if [
                access.is_some(),
                trunk.is_some(),
                native.is_some(),
                isolated.is_some(),
                learning.is_some(),
                mac_limit.is_some(),
                bpdu_guard.is_some(),
                stp_cost.is_some(),
                stp_priority.is_some(),
            ]
            .iter()
            .all(|x| !x)
            {
                return Err("set-port: nothing to set (give --access, --trunk, --native, --isolated, --learning, --mac-limit, --bpdu-guard, --stp-cost or --stp-priority)".into());
            }
            Request::SetPort {
                name: port,
                access_vlan: access,
                trunk_vlans: trunk,
                native_vlan: native,
                isolated,
                learning,
                mac_limit,
                bpdu_guard,
                stp_cost,
                stp_priority,
            }
        }
        Cmd::ListPorts { bridge } => Request::ListPorts { bridge },
        Cmd::FdbShow { bridge } => Request::FdbShow { bridge },
        Cmd::FdbAdd {
            bridge,
            mac,
            port,
            vlan,
        } => Request::FdbAdd {
            bridge,
            mac,
            port,
            vlan,
        },
        Cmd::FdbDel { bridge, mac, vlan } => Request::FdbDel { bridge, mac, vlan },
        Cmd::FdbFlush { bridge, port } => Request::FdbFlush { bridge, port },
        Cmd::Show => Request::Show,
        Cmd::Stats { port } => Request::Stats { port },
        Cmd::Save { file } => Request::Save {
            file: match file {
                // The daemon may run elsewhere: send an absolute path.
                Some(f) => Some(
                    std::path::absolute(&f)
                        .map_err(|e| format!("{}: {e}", f.display()))?
                        .display()
                        .to_string(),
                ),
                None => None,
            },
        },
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let req = match request(cli.cmd) {
        Ok(req) => req,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Request::FdbShow { .. } = req {
        return fdb_show(&cli.socket, &req, json);
    }
    let result = Client::connect(&cli.socket).and_then(|mut c| {
        let v = c.call(&req)?;
        Ok((req, v))
    });
    match result {
        Ok((req, v)) => {
            if json {
                if !v.is_null() {
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                }
            } else {
                print_human(&req, &v);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `fdb-show` streams its answer (see `control::fdbshow`).
fn fdb_show(socket: &std::path::Path, req: &Request, json: bool) -> ExitCode {
    let done = Client::connect(socket).and_then(|mut c| {
        if json {
            c.call_streaming(req, fdbshow::PrettyToStdout).map(|_| ())
        } else {
            let t = c.call_streaming(req, fdbshow::FdbTable::default())?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            t.unwrap_or_default()
                .print(&mut out)
                .and_then(|()| std::io::Write::flush(&mut out))
                .map_err(|e| format!("writing the table: {e}"))
        }
    });
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---- human output ------------------------------------------------------------

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        other => other.to_string(),
    }
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let w = control::table::widths(headers, &rows);
    let mut out = std::io::stdout().lock();
    let _ = control::table::write_line(&mut out, headers, &w);
    for r in &rows {
        let _ = control::table::write_line(&mut out, r, &w);
    }
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The named fields of one row object, as table cells.
fn fields(row: &Value, names: &[&str]) -> Vec<String> {
    names.iter().map(|n| s(&row[*n])).collect()
}

/// A table with one row per element of the JSON array `v`.
fn table_of(headers: &[&str], v: &Value, row: impl Fn(&Value) -> Vec<String>) {
    table(headers, arr(v).iter().map(row).collect())
}

fn on_off(v: &Value) -> &'static str {
    if *v == Value::Bool(true) {
        "on"
    } else {
        "off"
    }
}

fn port_row(p: &Value) -> Vec<String> {
    let mut r = fields(p, &["name", "bridge", "type", "ifname", "netns"]);
    if p["type"] == "vxlan" {
        // No device: show the tunnel instead.
        r[3] = format!(
            "vni {} {}:{}",
            s(&p["vni"]),
            s(&p["local"]),
            s(&p["dstport"])
        );
    }
    r.push(
        if p["up"] == Value::Bool(true) {
            "up"
        } else {
            "down"
        }
        .into(),
    );
    r.extend(fields(p, &["mac", "mtu"]));
    r.push(vlan_text(p));
    r
}

fn vlan_text(p: &Value) -> String {
    let mut t = if p["vlan_mode"] == "trunk" {
        let vids: Vec<u16> = arr(&p["trunk_vlans"])
            .iter()
            .filter_map(|v| v.as_u64().map(|v| v as u16))
            .collect();
        let mut set = dataplane::bridge::vlan::VlanSet::default();
        vids.iter().for_each(|v| set.insert(*v));
        let mut t = format!("trunk {}", set.to_ranges());
        if let Some(n) = p["native_vlan"].as_u64() {
            t.push_str(&format!(" native {n}"));
        }
        t
    } else {
        format!("access {}", s(&p["access_vlan"]))
    };
    if p["isolated"] == Value::Bool(true) {
        t.push_str(" isolated");
    }
    if p["learning"] == Value::Bool(false) {
        t.push_str(" no-learning");
    }
    if let Some(l) = p["mac_limit"].as_u64() {
        t.push_str(&format!(" mac-limit {l}"));
    }
    t
}

const PORT_HEADERS: &[&str] = &[
    "PORT", "BRIDGE", "TYPE", "IFNAME", "NETNS", "STATE", "MAC", "MTU", "VLAN",
];

fn drops_text(d: &Value) -> String {
    let parts: Vec<String> = d
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
                .map(|(k, n)| format!("{k}={n}"))
                .collect()
        })
        .unwrap_or_default();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

fn print_human(req: &Request, v: &Value) {
    match req {
        Request::ListBr => table_of(
            &["BRIDGE", "STP", "AGEING", "FDB_MAX", "FDB", "PORTS"],
            v,
            |b| {
                let ports: Vec<String> = arr(&b["ports"]).iter().map(s).collect();
                let mut r = fields(b, &["name"]);
                r.push(on_off(&b["stp"]).into());
                r.extend(fields(b, &["ageing_s", "fdb_max", "fdb_entries"]));
                r.push(ports.join(","));
                r
            },
        ),
        Request::ListPorts { .. } => table_of(PORT_HEADERS, v, port_row),
        Request::Stats { .. } => {
            const COLS: &[&str] = &["port", "rx_packets", "rx_bytes", "tx_packets", "tx_bytes"];
            table_of(
                &[
                    "PORT",
                    "RX_PACKETS",
                    "RX_BYTES",
                    "TX_PACKETS",
                    "TX_BYTES",
                    "DROPS",
                ],
                v,
                |p| {
                    let mut r = fields(p, COLS);
                    r.push(drops_text(&p["drops"]));
                    r
                },
            )
        }
        Request::Show => {
            for b in arr(&v["bridges"]) {
                let limit = match &b["fdb_max"] {
                    Value::Null => "none".to_string(),
                    x => x.to_string(),
                };
                println!(
                    "bridge {}: stp {}, ageing {} s, fdb {} entries (limit {})",
                    s(&b["name"]),
                    on_off(&b["stp"]),
                    s(&b["ageing_s"]),
                    s(&b["fdb_entries"]),
                    limit
                );
                for p in arr(&b["ports"]) {
                    let ns = match &p["netns"] {
                        Value::String(n) => format!(" netns {n}"),
                        _ => String::new(),
                    };
                    println!(
                        "    port {}: {} {}{} {} mac {} mtu {}",
                        s(&p["name"]),
                        s(&p["type"]),
                        s(&p["ifname"]),
                        ns,
                        if p["up"] == Value::Bool(true) {
                            "up"
                        } else if p["bpdu_guard_tripped"] == Value::Bool(true) {
                            "DOWN (bpdu guard)"
                        } else {
                            "DOWN"
                        },
                        s(&p["mac"]),
                        s(&p["mtu"])
                    );
                }
            }
            if arr(&v["bridges"]).is_empty() {
                println!("no bridges");
            }
        }
        Request::StpShow { .. } => {
            println!("bridge id       {}", s(&v["bridge_id"]));
            println!("designated root {}", s(&v["root_id"]));
            println!("root port       {}", s(&v["root_port"]));
            println!("root path cost  {}", s(&v["root_path_cost"]));
            println!(
                "timers          hello {} s, max age {} s, forward delay {} s{}",
                s(&v["hello_s"]),
                s(&v["max_age_s"]),
                s(&v["forward_delay_s"]),
                if v["topology_change"] == Value::Bool(true) {
                    ", topology change"
                } else {
                    ""
                }
            );
            const COLS: &[&str] = &["name", "role", "state", "cost", "priority"];
            table_of(
                &["PORT", "ROLE", "STATE", "COST", "PRIORITY"],
                &v["ports"],
                |p| fields(p, COLS),
            )
        }
        Request::FdbFlush { .. } => println!("flushed {} entries", s(&v["flushed"])),
        Request::Save { .. } => println!("saved to {}", s(&v["file"])),
        _ => {
            if !v.is_null() {
                println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
            }
        }
    }
}
