//! vswitchctl: drives a running vswitchd over its control socket. Prints
//! tables by default and one JSON document with `--json`.

use clap::{Parser, Subcommand, ValueEnum};
use control::client::Client;
use control::fdbshow;
use control::{DEFAULT_SOCKET, SOCKET_ENV};
use dataplane::api::Request;
use dataplane::config::{
    DnatConfig, Ipv4Cidr, PortConfig, PortType, RifConfig, RifType, RouteConfig, SnatConfig,
};
use dataplane::MacAddr;
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "vswitchctl",
    version,
    about = "Configure and inspect a running vswitchd",
    after_help = "Examples:\n  vswitchctl add-br br0\n  vswitchctl add-port br0 h1 --type tap --netns h1 --ifname eth0\n  vswitchctl add-port br0 veth1 --type afpacket\n  vswitchctl fdb-show br0 --json\n  vswitchctl add-rif gw --br br0 --addr 10.0.0.1/24\n  vswitchctl add-route default via 10.0.0.254\n  vswitchctl stats"
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
    VhostUser,
}

/// What a router interface sits on (`add-rif --type`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum RifTypeArg {
    /// An interface on a bridge (and one VLAN of it): an SVI
    Bridge,
    /// A TUN device (IP packets, no Ethernet), created by the daemon or
    /// attached to if it exists
    Tun,
}

/// A route prefix: `A.B.C.D/LEN` (a bare address is a /32 host route) or
/// `default` (0.0.0.0/0). Host bits must be clear, as iproute2 insists.
fn parse_prefix(s: &str) -> Result<Ipv4Cidr, String> {
    if s == "default" {
        return Ok(Ipv4Cidr {
            addr: Ipv4Addr::UNSPECIFIED,
            len: 0,
        });
    }
    let p: Ipv4Cidr = s.parse()?;
    if p.network() != p.addr {
        return Err(format!(
            "'{s}' has host bits set (the prefix is {}/{})",
            p.network(),
            p.len
        ));
    }
    Ok(p)
}

fn parse_cidr(s: &str) -> Result<Ipv4Cidr, String> {
    s.parse()
}

/// `add-route`'s `via GATEWAY` / `dev RIF` words, as iproute2 takes them.
fn route_target(prefix: Ipv4Cidr, words: &[String]) -> Result<RouteConfig, String> {
    let mut via = None;
    let mut dev = None;
    let mut it = words.iter();
    while let Some(k) = it.next() {
        match (k.as_str(), it.next()) {
            ("via", Some(g)) => {
                if via.is_some() {
                    return Err("add-route: `via` given twice".into());
                }
                via = Some(g.parse::<Ipv4Addr>().map_err(|_| {
                    format!("add-route: invalid gateway '{g}' (expected an IPv4 address)")
                })?);
            }
            ("dev", Some(d)) => {
                if dev.is_some() {
                    return Err("add-route: `dev` given twice".into());
                }
                dev = Some(d.clone());
            }
            ("via", None) => return Err("add-route: `via` needs a GATEWAY address".into()),
            ("dev", None) => return Err("add-route: `dev` needs a router interface name".into()),
            (other, _) => {
                return Err(format!(
                    "add-route: unexpected '{other}' (expected `via GATEWAY` or `dev RIF`)"
                ))
            }
        }
    }
    match (&via, &dev) {
        (Some(_), Some(_)) => {
            Err("add-route: give either `via GATEWAY` or `dev RIF`, not both".into())
        }
        (None, None) => Err("add-route: give `via GATEWAY` or `dev RIF`".into()),
        _ => Ok(RouteConfig { prefix, via, dev }),
    }
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

/// A percentage (0-100, fractions allowed) as parts per million.
fn parse_pct(s: &str) -> Result<u32, String> {
    match s.trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok((p * 10_000.0).round() as u32),
        _ => Err(format!("'{s}' is not a percentage (0-100)")),
    }
}

/// A rate in bits a second: `10mbit`, `500k`, `1g`, `1000000`, `0`.
fn parse_rate(s: &str) -> Result<u64, String> {
    let bad = || format!("'{s}' is not a rate (e.g. 10mbit, 500k, 1g)");
    let t = s.to_ascii_lowercase();
    let t = t.strip_suffix("bit").unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1_000u64),
        Some('m') => (&t[..t.len() - 1], 1_000_000),
        Some('g') => (&t[..t.len() - 1], 1_000_000_000),
        _ => (t, 1),
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !(0.0..=1e12).contains(&(v * mult as f64)) {
        return Err(bad());
    }
    Ok((v * mult as f64) as u64)
}

/// A 16-bit mask, in hex (`0x4000`) or decimal.
fn parse_mask(s: &str) -> Result<u16, String> {
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u16::from_str_radix(h, 16),
        None => s.parse::<u16>(),
    };
    v.map_err(|_| format!("'{s}' is not a 16-bit mask (e.g. 0x4000)"))
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
        /// Relay these link-local groups 01:80:C2:00:00:0X instead of
        /// dropping them: bit X set, e.g. 0x4000 for LLDP (0E), 0x0004 for
        /// LACP (02), 0x0008 for 802.1X (03); 0 relays none. Bits 0 (STP)
        /// and 1 (pause) are refused, as by Linux's group_fwd_mask
        #[arg(long, value_name = "MASK", value_parser = parse_mask)]
        group_fwd_mask: Option<u16>,
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
        /// (an existing interface in the daemon's namespace), vxlan (a VTEP:
        /// needs --vni and --local; remotes with --remote or later with
        /// set-port --remote-add) or vhost-user (a guest's virtio-net: needs
        /// --path)
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
        /// vxlan: the underlay address to send from and listen on (IPv4 or
        /// IPv6; it may be added to an interface later: the port is down until
        /// then)
        #[arg(long, value_name = "IP")]
        local: Option<std::net::IpAddr>,
        /// vxlan: remote VTEPs; broadcast and unknown unicast go to all of them
        #[arg(long, value_name = "IP[,IP...]", value_delimiter = ',')]
        remote: Vec<std::net::IpAddr>,
        /// vxlan: UDP port of the underlay (shared by every VNI on --local)
        #[arg(long, value_name = "PORT", default_value_t = 4789, value_parser = clap::value_parser!(u16).range(1..))]
        dstport: u16,
        /// vxlan: outer UDP source ports, picked by a hash of each inner flow
        /// (default 49152-65535)
        #[arg(long, value_name = "MIN-MAX")]
        srcport: Option<dataplane::config::PortRange>,
        /// vxlan: also accept frames from VTEPs that are not a --remote (and
        /// learn the stations behind them)
        #[arg(long)]
        learning: bool,
        /// vhost-user: the Unix socket QEMU's `-chardev socket` uses
        #[arg(long, value_name = "SOCKET")]
        path: Option<String>,
        /// vhost-user: listen on --path (the default; a stale socket file is
        /// replaced)
        #[arg(long, conflicts_with = "client")]
        server: bool,
        /// vhost-user: connect to --path (QEMU listens), reconnecting about
        /// every second
        #[arg(long)]
        client: bool,
    },
    /// Remove a port (a TAP the daemon created is deleted)
    DelPort { port: String },
    /// Change a port's VLANs, isolation, learning, spanning-tree settings,
    /// storm limit, or a VXLAN port's remotes
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
        /// Egress impairment (labs, like tc netem): hold frames leaving the
        /// port this many milliseconds (0: off)
        #[arg(long, value_name = "MS")]
        delay: Option<u32>,
        /// Egress impairment: vary the delay uniformly by up to this many
        /// milliseconds either way (frames keep their order)
        #[arg(long, value_name = "MS")]
        jitter: Option<u32>,
        /// Egress impairment: lose this percentage of the frames (0-100,
        /// e.g. 0.5), counted as impair_loss
        #[arg(long, value_name = "PCT", value_parser = parse_pct)]
        loss: Option<u32>,
        /// Egress impairment: send at most this rate, bits a second with an
        /// optional k/m/g suffix and optional "bit" (10mbit, 500k, 1g)
        #[arg(long, value_name = "RATE", value_parser = parse_rate)]
        rate: Option<u64>,
        /// Egress impairment: frames held at most (default 1000; beyond:
        /// impair_queue_full)
        #[arg(long, value_name = "FRAMES")]
        limit: Option<u32>,
        /// Storm control: broadcast, multicast and unknown-unicast frames
        /// entering the port beyond this many a second are dropped (counted
        /// as storm_limit; known unicast is never limited; 0: off)
        #[arg(long, value_name = "PPS")]
        storm_limit: Option<u32>,
        /// vxlan: put these remote VTEPs on the flood list
        #[arg(long, value_name = "IP[,IP...]", value_delimiter = ',')]
        remote_add: Vec<std::net::IpAddr>,
        /// vxlan: take these remote VTEPs off the flood list (and forget the
        /// stations learned behind them)
        #[arg(long, value_name = "IP[,IP...]", value_delimiter = ',')]
        remote_del: Vec<std::net::IpAddr>,
    },
    /// List ports (of one bridge, or all)
    ListPorts { bridge: Option<String> },
    /// Show the forwarding database
    FdbShow { bridge: String },
    /// Run one frame through the forwarding decision, with no side effects
    /// (nothing learned, sent or counted), and print every step
    #[command(
        after_help = "The frame is built from the fields given (Ethernet, an optional 802.1Q tag,\nIPv4 with TCP, UDP or ICMP when --ip-dst is given), or given whole with --hex.\n\nExamples:\n  vswitchctl trace br0 --in p1 --dst 02:00:00:00:00:02\n  vswitchctl trace br0 --in trunk --vlan 20 --dst ff:ff:ff:ff:ff:ff\n  vswitchctl trace br0 --in p1 --dst 02:5e:... --ip-src 10.0.1.2 --ip-dst 192.0.2.7 --proto tcp --dport 80\n  vswitchctl --json trace br0 --in p1 --hex ffffffffffff0200000000010806..."
    )]
    Trace {
        #[arg(required_unless_present = "live")]
        bridge: Option<String>,
        /// The port the frame arrives on
        #[arg(long = "in", value_name = "PORT", required_unless_present = "live")]
        in_port: Option<String>,
        /// Instead of one made-up frame: trace the next N real frames as
        /// they are received (on --port, or any port), printed once all N
        /// came (at most 80 s)
        #[arg(long, value_name = "N", conflicts_with_all = ["bridge", "in_port", "hex"])]
        live: Option<u32>,
        /// With --live: only frames received on this port
        #[arg(long, value_name = "PORT", requires = "live")]
        port: Option<String>,
        /// Source MAC (default 02:00:00:00:00:01)
        #[arg(long, value_parser = parse_mac)]
        src: Option<MacAddr>,
        /// Destination MAC (default broadcast)
        #[arg(long, value_parser = parse_mac)]
        dst: Option<MacAddr>,
        /// The frame arrives tagged with this VLAN (untagged without it)
        #[arg(long, value_parser = parse_vlan)]
        vlan: Option<u16>,
        /// IPv4 source (with --ip-dst; default 10.0.0.1)
        #[arg(long, value_name = "IP")]
        ip_src: Option<std::net::Ipv4Addr>,
        /// IPv4 destination: the frame carries an IPv4 packet
        #[arg(long, value_name = "IP")]
        ip_dst: Option<std::net::Ipv4Addr>,
        /// IPv4 payload (default udp)
        #[arg(long, value_parser = ["tcp", "udp", "icmp"])]
        proto: Option<String>,
        /// TCP/UDP source port (default 40000)
        #[arg(long, value_name = "N")]
        sport: Option<u16>,
        /// TCP/UDP destination port (default 80)
        #[arg(long, value_name = "N")]
        dport: Option<u16>,
        /// IPv4 TTL (default 64)
        #[arg(long, value_name = "N")]
        ttl: Option<u8>,
        /// The whole frame as hex bytes (instead of the fields)
        #[arg(long, value_name = "BYTES", conflicts_with_all = ["src", "dst", "vlan", "ip_src", "ip_dst", "proto", "sport", "dport", "ttl"])]
        hex: Option<String>,
    },
    /// Write a pcap of what a port receives and/or sends, as the switch sees
    /// it (tags as on the wire; a GSO super-frame as one record); any port,
    /// VXLAN ports and router interfaces included
    #[command(
        after_help = "Examples:\n  vswitchctl capture p1 -c 10 -w p1.pcap && tcpdump -nr p1.pcap\n  vswitchctl capture vx --dir rx -w - | tcpdump -nr -\n\nA reader that does not keep up loses capture records (counted at the end), never frames."
    )]
    Capture {
        port: String,
        /// rx, tx or both (default)
        #[arg(long, value_parser = ["rx", "tx", "both"])]
        dir: Option<String>,
        /// Stop after this many frames (default: until interrupted)
        #[arg(short = 'c', value_name = "N")]
        count: Option<u64>,
        /// Where to write the pcap (- for stdout)
        #[arg(short = 'w', value_name = "FILE")]
        write: String,
    },
    /// Stream events as JSON lines until interrupted: fdb (learned, moved,
    /// aged, flushed), ports (up, down), stp (role or state changed); none
    /// given: all
    #[command(
        after_help = "Each line is one JSON object, e.g.\n  {\"event\":\"fdb_learned\",\"bridge\":\"br0\",\"mac\":\"02:00:00:00:00:01\",\"vlan\":1,\"port\":\"p1\"}\nEvents: fdb_learned, fdb_moved (with \"from\"), fdb_aged, fdb_flushed (entries\nbehind a VXLAN port add \"vtep\"), port_up, port_down, stp_changed (\"role\",\n\"state\"), events_lost (\"count\": more than 4096 events in 100 ms).\n\nExamples:\n  vswitchctl monitor\n  vswitchctl monitor fdb ports"
    )]
    Monitor {
        #[arg(value_parser = ["fdb", "ports", "stp"])]
        kinds: Vec<String>,
    },
    /// Add a static FDB entry (never aged)
    FdbAdd {
        bridge: String,
        #[arg(value_parser = parse_mac)]
        mac: MacAddr,
        port: String,
        #[arg(long, value_parser = parse_vlan)]
        vlan: Option<u16>,
        /// vxlan port: the station is behind this remote VTEP (its unicast
        /// goes there only)
        #[arg(long, value_name = "IP")]
        vtep: Option<std::net::IpAddr>,
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
    /// Add a router interface: on a bridge (an SVI, one VLAN of the bridge)
    /// or on a TUN device
    #[command(
        override_usage = "vswitchctl add-rif NAME --br BR [--vlan VID] --addr CIDR [--mac MAC] [--mtu N]\n       vswitchctl add-rif NAME --type tun [--netns NS] [--ifname NAME] --addr CIDR [--mtu N]",
        after_help = "The router answers ARP and ping for --addr, and the prefix becomes a connected route.\n\nExamples:\n  vswitchctl add-rif gw --br br0 --addr 10.0.0.1/24\n  vswitchctl add-rif gw10 --br br0 --vlan 10 --addr 10.0.10.1/24 --mac 02:00:00:00:0a:01\n  vswitchctl add-rif t0 --type tun --netns vpn --ifname tun0 --addr 10.8.0.1/24\n  vswitchctl add-rif up0 --type tun --addr 192.0.2.1/24 --mtu 1400"
    )]
    AddRif {
        /// Name of the router interface (routes and SNAT rules refer to it)
        name: String,
        /// What the interface sits on
        #[arg(long = "type", value_enum, default_value_t = RifTypeArg::Bridge)]
        kind: RifTypeArg,
        /// bridge: the bridge the interface sits on
        #[arg(long = "br", value_name = "BR")]
        bridge: Option<String>,
        /// bridge: the VLAN of the bridge (default 1)
        #[arg(long, value_name = "VID")]
        vlan: Option<u16>,
        /// The interface address with its prefix length, e.g. 10.0.0.1/24
        #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
        addr: Ipv4Cidr,
        /// bridge: the interface's MAC (default: a stable one derived from NAME)
        #[arg(long, value_parser = parse_mac)]
        mac: Option<MacAddr>,
        /// tun: create the device in this network namespace (as named by `ip netns`)
        #[arg(long, value_name = "NS")]
        netns: Option<String>,
        /// tun: the device's name (default: NAME)
        #[arg(long, value_name = "NAME")]
        ifname: Option<String>,
        /// Largest IP packet sent out of the interface (576-65535, default 1500)
        #[arg(long, value_name = "N")]
        mtu: Option<u32>,
    },
    /// Remove a router interface with its routes, neighbours and SNAT rule
    /// (a TUN device the daemon created is deleted)
    #[command(after_help = "Example:\n  vswitchctl del-rif gw")]
    DelRif { name: String },
    /// Add a static route through a gateway or out of a router interface
    #[command(
        override_usage = "vswitchctl add-route PREFIX via GATEWAY\n       vswitchctl add-route PREFIX dev RIF",
        after_help = "PREFIX is A.B.C.D/LEN or `default` (0.0.0.0/0). Give exactly one of `via GATEWAY`\n(a next hop on a connected subnet, resolved by ARP) or `dev RIF` (destinations\nreached directly through that interface, e.g. a TUN).\n\nExamples:\n  vswitchctl add-route 10.9.0.0/16 via 10.0.0.254\n  vswitchctl add-route default via 192.0.2.254\n  vswitchctl add-route 0.0.0.0/0 dev up0"
    )]
    AddRoute {
        /// Destination: A.B.C.D/LEN, or `default`
        #[arg(value_parser = parse_prefix)]
        prefix: Ipv4Cidr,
        /// `via GATEWAY` or `dev RIF`
        #[arg(value_name = "via GATEWAY | dev RIF", required = true, num_args = 1..)]
        target: Vec<String>,
    },
    /// Remove a static route
    #[command(
        after_help = "Examples:\n  vswitchctl del-route 10.9.0.0/16\n  vswitchctl del-route default"
    )]
    DelRoute {
        /// The route's prefix: A.B.C.D/LEN, or `default`
        #[arg(value_parser = parse_prefix)]
        prefix: Ipv4Cidr,
    },
    /// Translate the source address of packets leaving through a router interface
    #[command(
        after_help = "Without --to the packets take the --out interface's address (masquerade).\nTCP, UDP and ICMP echo are translated, and their replies translated back.\n\nExamples:\n  vswitchctl add-snat --out up0\n  vswitchctl add-snat --out up0 --to 192.0.2.10 --src 10.0.0.0/24\n  vswitchctl add-snat --out up0 --to 192.0.2.10-192.0.2.20"
    )]
    AddSnat {
        /// The outside router interface
        #[arg(long, value_name = "RIF")]
        out: String,
        /// Outside address, or an inclusive range of them (default: --out's address)
        #[arg(long, value_name = "IP[-IP]")]
        to: Option<String>,
        /// Translate only packets from this prefix (default: all)
        #[arg(long, value_name = "PREFIX", value_parser = parse_cidr)]
        src: Option<Ipv4Cidr>,
    },
    /// Remove the SNAT rule of a router interface (and its flows)
    #[command(after_help = "Example:\n  vswitchctl del-snat --out up0")]
    DelSnat {
        /// The outside router interface
        #[arg(long, value_name = "RIF")]
        out: String,
    },
    /// Forward a port of a router interface's address to an inside server (DNAT)
    #[command(
        after_help = "Connections arriving on --in to its address (or to an address of its SNAT\n--to pool) at --port go to --to; the server sees the client's real address\nand its replies leave from --in's address and --port. Any remote may connect.\nInside hosts reach the forwarded port through the outside address too\n(hairpin) when --in has an SNAT rule.\n\nExamples:\n  vswitchctl add-dnat --in up0 --proto tcp --port 8080 --to 10.0.1.2:80\n  vswitchctl add-dnat --in up0 --proto udp --port 53 --to 10.0.1.3"
    )]
    AddDnat {
        /// The router interface the connections arrive on
        #[arg(long = "in", value_name = "RIF")]
        in_rif: String,
        /// The protocol
        #[arg(long, value_parser = ["tcp", "udp"])]
        proto: String,
        /// The forwarded port
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
        /// The inside server (the port defaults to --port)
        #[arg(long, value_name = "IP[:PORT]")]
        to: String,
    },
    /// Remove a port forwarding rule (and its connections)
    #[command(after_help = "Example:\n  vswitchctl del-dnat --in up0 --proto tcp --port 8080")]
    DelDnat {
        /// The router interface the connections arrive on
        #[arg(long = "in", value_name = "RIF")]
        in_rif: String,
        /// The protocol
        #[arg(long, value_parser = ["tcp", "udp"])]
        proto: String,
        /// The forwarded port
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
    },
    /// List port forwarding rules
    #[command(after_help = "Example:\n  vswitchctl dnat-show --json")]
    DnatShow,
    /// Change router-wide settings
    #[command(after_help = "Example:\n  vswitchctl set-router --nat-max-flows 100000")]
    SetRouter {
        /// Most connections the SNAT table tracks; new ones beyond it are
        /// refused while existing ones keep working
        #[arg(long, value_name = "N")]
        nat_max_flows: Option<u32>,
    },
    /// List router interfaces
    #[command(after_help = "Example:\n  vswitchctl rif-show --json")]
    RifShow,
    /// Show the routing table (connected and static routes)
    #[command(after_help = "Example:\n  vswitchctl route-show")]
    RouteShow,
    /// Show the router's neighbours (ARP cache)
    #[command(after_help = "Example:\n  vswitchctl arp-show")]
    ArpShow,
    /// Show the SNAT connection table
    #[command(after_help = "Example:\n  vswitchctl nat-show --json")]
    NatShow,
    /// List SNAT rules
    #[command(after_help = "Example:\n  vswitchctl snat-show")]
    SnatShow,
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
            group_fwd_mask,
        } => {
            if ageing.is_none()
                && fdb_max.is_none()
                && stp.is_none()
                && priority.is_none()
                && hello.is_none()
                && max_age.is_none()
                && forward_delay.is_none()
                && group_fwd_mask.is_none()
            {
                return Err("set-br: nothing to set (give --ageing, --fdb-max, --stp, --priority, --hello, --max-age, --forward-delay or --group-fwd-mask)".into());
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
                group_fwd_mask,
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
            srcport,
            learning,
            path,
            server,
            client,
        } => {
            let kind = match kind {
                TypeArg::Tap => PortType::Tap,
                TypeArg::Afpacket => PortType::Afpacket,
                TypeArg::Vxlan => PortType::Vxlan,
                TypeArg::VhostUser => PortType::VhostUser,
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
            p.srcport = srcport;
            p.path = path;
            p.mode = if client {
                Some(dataplane::config::VhostMode::Client)
            } else if server {
                Some(dataplane::config::VhostMode::Server)
            } else {
                None
            };
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
            remote_add,
            remote_del,
            storm_limit,
            delay,
            jitter,
            loss,
            rate,
            limit,
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
                !remote_add.is_empty(),
                !remote_del.is_empty(),
                storm_limit.is_some(),
                delay.is_some(),
                jitter.is_some(),
                loss.is_some(),
                rate.is_some(),
                limit.is_some(),
            ]
            .iter()
            .all(|x| !x)
            {
                return Err("set-port: nothing to set (give --access, --trunk, --native, --isolated, --learning, --mac-limit, --bpdu-guard, --stp-cost, --stp-priority, --storm-limit, --delay, --jitter, --loss, --rate, --limit, --remote-add or --remote-del)".into());
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
                remote_add,
                remote_del,
                storm_limit,
                delay_ms: delay,
                jitter_ms: jitter,
                loss_ppm: loss,
                rate_bps: rate,
                limit,
            }
        }
        Cmd::ListPorts { bridge } => Request::ListPorts { bridge },
        Cmd::FdbShow { bridge } => Request::FdbShow { bridge },
        Cmd::Monitor { kinds } => Request::Monitor { kinds },
        Cmd::Capture {
            port, dir, count, ..
        } => Request::Capture { port, dir, count },
        Cmd::Trace {
            bridge,
            in_port,
            live,
            port,
            src,
            dst,
            vlan,
            ip_src,
            ip_dst,
            proto,
            sport,
            dport,
            ttl,
            hex,
        } => {
            if let Some(count) = live {
                return Ok(Request::TraceLive { count, port });
            }
            let (Some(bridge), Some(in_port)) = (bridge, in_port) else {
                return Err("trace: give BR and --in PORT, or --live N".into());
            };
            let frame = match hex {
                Some(h) => h,
                None => {
                    if ip_dst.is_none()
                        && (ip_src.is_some()
                            || proto.is_some()
                            || sport.is_some()
                            || dport.is_some()
                            || ttl.is_some())
                    {
                        return Err(
                            "trace: --ip-src, --proto, --sport, --dport and --ttl need --ip-dst"
                                .into(),
                        );
                    }
                    let f = control::trace::build_frame(&control::trace::FrameSpec {
                        src: src.unwrap_or(MacAddr([2, 0, 0, 0, 0, 1])),
                        dst: dst.unwrap_or(MacAddr([0xff; 6])),
                        vlan,
                        ip: ip_dst.map(|d| control::trace::IpSpec {
                            src: ip_src.unwrap_or(std::net::Ipv4Addr::new(10, 0, 0, 1)),
                            dst: d,
                            proto: proto.clone().unwrap_or_else(|| "udp".into()),
                            sport: sport.unwrap_or(40000),
                            dport: dport.unwrap_or(80),
                            ttl: ttl.unwrap_or(64),
                        }),
                    });
                    f.iter().map(|b| format!("{b:02x}")).collect()
                }
            };
            Request::Trace {
                bridge,
                port: in_port,
                frame,
            }
        }
        Cmd::FdbAdd {
            bridge,
            mac,
            port,
            vlan,
            vtep,
        } => Request::FdbAdd {
            bridge,
            mac,
            port,
            vlan,
            vtep,
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
        Cmd::AddRif {
            name,
            kind,
            bridge,
            vlan,
            addr,
            mac,
            netns,
            ifname,
            mtu,
        } => {
            let rif = RifConfig {
                name,
                kind: match kind {
                    RifTypeArg::Bridge => RifType::Bridge,
                    RifTypeArg::Tun => RifType::Tun,
                },
                bridge,
                vlan,
                addr,
                mac,
                netns,
                ifname,
                mtu,
            };
            rif.check()?;
            Request::AddRif { rif }
        }
        Cmd::DelRif { name } => Request::DelRif { name },
        Cmd::AddRoute { prefix, target } => Request::AddRoute {
            route: route_target(prefix, &target)?,
        },
        Cmd::DelRoute { prefix } => Request::DelRoute { prefix },
        Cmd::AddSnat { out, to, src } => {
            let snat = SnatConfig { out, to, src };
            snat.to_range()?;
            Request::AddSnat { snat }
        }
        Cmd::DelSnat { out } => Request::DelSnat { out },
        Cmd::AddDnat {
            in_rif,
            proto,
            port,
            to,
        } => Request::AddDnat {
            dnat: DnatConfig {
                in_rif,
                proto,
                port,
                to,
            }
            .normalized()?,
        },
        Cmd::DelDnat {
            in_rif,
            proto,
            port,
        } => Request::DelDnat {
            in_rif,
            proto,
            port,
        },
        Cmd::SetRouter { nat_max_flows } => {
            if nat_max_flows.is_none() {
                return Err("set-router: nothing to set (give --nat-max-flows)".into());
            }
            Request::SetRouter { nat_max_flows }
        }
        Cmd::RifShow => Request::RifShow,
        Cmd::RouteShow => Request::RouteShow,
        Cmd::ArpShow => Request::ArpShow,
        Cmd::NatShow => Request::NatShow,
        Cmd::SnatShow => Request::SnatShow,
        Cmd::DnatShow => Request::DnatShow,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let capture_file = match &cli.cmd {
        Cmd::Capture { write, .. } => Some(write.clone()),
        _ => None,
    };
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
    if let Request::Monitor { .. } = req {
        return monitor(&cli.socket, &req);
    }
    if let Request::Capture { .. } = req {
        return capture(&cli.socket, &req, capture_file.as_deref().unwrap_or("-"));
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

/// `monitor`: one JSON line per event, flushed as it comes (a pipe into a
/// script sees each at once), until interrupted or stdout closes.
fn monitor(socket: &std::path::Path, req: &Request) -> ExitCode {
    use std::io::Write;
    let done = Client::connect(socket).and_then(|mut c| {
        let mut out = std::io::stdout().lock();
        c.call_lines(req, |line| {
            line.is_empty() || writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
        })
    });
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `capture`: pcap from the streamed records; says at the end how many
/// records the switch could not hand over (a slow reader).
fn capture(socket: &std::path::Path, req: &Request, file: &str) -> ExitCode {
    use std::io::Write;
    let mut w: Box<dyn Write> = if file == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        match std::fs::File::create(file) {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(e) => {
                eprintln!("error: {file}: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    if let Err(e) = control::pcap::write_header(&mut w) {
        eprintln!("error: {file}: {e}");
        return ExitCode::FAILURE;
    }
    let mut n = 0u64;
    let mut failed = None;
    let done = Client::connect(socket).and_then(|mut c| {
        c.call_lines(req, |line| {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                return true;
            };
            if v["end"] == true {
                let lost = v["lost"].as_u64().unwrap_or(0);
                if lost > 0 {
                    eprintln!("note: {lost} frames were not captured (the reader fell behind)");
                }
                return false;
            }
            let data: Vec<u8> = v["data"]
                .as_str()
                .unwrap_or("")
                .as_bytes()
                .chunks(2)
                .filter_map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
                .collect();
            let r = control::pcap::write_record(&mut w, v["ts_ns"].as_u64().unwrap_or(0), &data)
                .and_then(|()| if file == "-" { w.flush() } else { Ok(()) });
            if let Err(e) = r {
                failed = Some(e.to_string());
                return false;
            }
            n += 1;
            true
        })
    });
    let _ = w.flush();
    if let Some(e) = failed {
        eprintln!("error: writing {file}: {e}");
        return ExitCode::FAILURE;
    }
    match done {
        Ok(()) | Err(_) if n > 0 => ExitCode::SUCCESS,
        Ok(()) => ExitCode::SUCCESS,
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
    r.push(up_down(&p["up"]).into());
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

fn up_down(v: &Value) -> &'static str {
    if *v == Value::Bool(true) {
        "up"
    } else {
        "down"
    }
}

/// What a router interface sits on: `br0 vlan 10`, or `tun0 netns vpn`.
fn rif_on(r: &Value) -> String {
    let (dev, extra) = if r["type"] == "tun" {
        let dev = match &r["ifname"] {
            Value::Null => s(&r["name"]),
            x => s(x),
        };
        (dev, r["netns"].as_str().map(|n| format!(" netns {n}")))
    } else {
        (
            s(&r["bridge"]),
            r["vlan"].as_u64().map(|v| format!(" vlan {v}")),
        )
    };
    dev + &extra.unwrap_or_default()
}

const RIF_HEADERS: &[&str] = &["RIF", "TYPE", "ADDR", "ON", "MAC", "MTU", "STATE"];

fn rif_row(r: &Value) -> Vec<String> {
    vec![
        s(&r["name"]),
        s(&r["type"]),
        s(&r["addr"]),
        rif_on(r),
        s(&r["mac"]),
        s(&r["mtu"]),
        up_down(&r["up"]).into(),
    ]
}

/// `10.9.0.0/16 via 10.0.0.254 dev gw (static)`
fn route_text(r: &Value) -> String {
    let mut t = s(&r["prefix"]);
    if let Some(g) = r["via"].as_str() {
        t.push_str(&format!(" via {g}"));
    }
    if let Some(d) = r["dev"].as_str() {
        t.push_str(&format!(" dev {d}"));
    }
    if let Some(k) = r["kind"].as_str() {
        t.push_str(&format!(" ({k})"));
    }
    t
}

/// An SNAT rule's outside addresses (the interface's own without `to`).
fn snat_to(r: &Value) -> String {
    match &r["to"] {
        Value::Null => "masquerade".into(),
        x => s(x),
    }
}

/// An SNAT rule's source prefix (every source without `src`).
fn snat_src(r: &Value) -> String {
    match &r["src"] {
        Value::Null => "any".into(),
        x => s(x),
    }
}

/// One trace record, as text.
fn print_trace(v: &Value) {
    let mut verdict = s(&v["verdict"]);
    if let Some(r) = v["drop_reason"].as_str() {
        verdict = format!("{verdict} ({r})");
    }
    println!("verdict: {verdict}");
    for e in arr(&v["egress"]) {
        println!(
            "egress:  {} VLAN {} {}",
            s(&e["port"]),
            s(&e["vlan"]),
            if e["tagged"] == true {
                "tagged"
            } else {
                "untagged"
            }
        );
    }
    for st in arr(&v["steps"]) {
        println!("  {:<10} {}", s(&st["stage"]), s(&st["detail"]));
    }
}

fn print_human(req: &Request, v: &Value) {
    match req {
        Request::TraceLive { .. } => {
            for (i, r) in arr(v).iter().enumerate() {
                println!("frame {} on {}:", i + 1, s(&r["port"]));
                print_trace(r);
            }
        }
        Request::Trace { .. } => print_trace(v),
        Request::SetPort { name, .. } => {
            for e in arr(&v["removed_static"]) {
                eprintln!(
                    "note: removed the static FDB entry {} in VLAN {}: port '{name}' no longer carries that VLAN",
                    s(&e["mac"]),
                    s(&e["vlan"])
                );
            }
        }
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
            for r in arr(&v["rifs"]) {
                let mut t = format!(
                    "rif {}: {} {}, {}",
                    s(&r["name"]),
                    s(&r["type"]),
                    rif_on(r),
                    s(&r["addr"])
                );
                if let Some(m) = r["mac"].as_str() {
                    t.push_str(&format!(", mac {m}"));
                }
                if !r["mtu"].is_null() {
                    t.push_str(&format!(", mtu {}", s(&r["mtu"])));
                }
                println!("{t}, {}", up_down(&r["up"]));
            }
            for r in arr(&v["routes"]) {
                println!("route {}", route_text(r));
            }
            for r in arr(&v["snat"]) {
                println!(
                    "snat out {} to {} src {}",
                    s(&r["out"]),
                    snat_to(r),
                    snat_src(r)
                );
            }
            for r in arr(&v["dnat"]) {
                println!(
                    "dnat in {} {} port {} to {}",
                    s(&r["in"]),
                    s(&r["proto"]),
                    s(&r["port"]),
                    s(&r["to"])
                );
            }
        }
        Request::RifShow => table_of(RIF_HEADERS, v, rif_row),
        Request::RouteShow => table_of(&["PREFIX", "VIA", "DEV", "KIND"], v, |r| {
            fields(r, &["prefix", "via", "dev", "kind"])
        }),
        Request::ArpShow => table_of(&["IP", "MAC", "RIF", "STATE", "AGE"], v, |r| {
            fields(r, &["ip", "mac", "rif", "state", "age_s"])
        }),
        Request::NatShow => {
            const COLS: &[&str] = &["proto", "inside", "outside", "remote", "state", "expires_s"];
            table_of(
                &["PROTO", "INSIDE", "OUTSIDE", "REMOTE", "STATE", "EXPIRES"],
                v,
                |r| fields(r, COLS),
            )
        }
        Request::SnatShow => table_of(&["OUT", "TO", "SRC"], v, |r| {
            vec![s(&r["out"]), snat_to(r), snat_src(r)]
        }),
        Request::DnatShow => table_of(&["IN", "PROTO", "PORT", "TO"], v, |r| {
            fields(r, &["in", "proto", "port", "to"])
        }),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vswitchctl").chain(args.iter().copied()))
    }

    /// The request a command line builds (panics if clap refuses it).
    fn req(args: &[&str]) -> Result<Request, String> {
        let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        request(cli.cmd)
    }

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn add_route_via_and_dev() {
        assert_eq!(
            req(&["add-route", "10.9.0.0/16", "via", "10.0.0.254"]).unwrap(),
            Request::AddRoute {
                route: RouteConfig {
                    prefix: cidr("10.9.0.0/16"),
                    via: Some(Ipv4Addr::new(10, 0, 0, 254)),
                    dev: None,
                }
            }
        );
        assert_eq!(
            req(&["add-route", "default", "dev", "up0"]).unwrap(),
            Request::AddRoute {
                route: RouteConfig {
                    prefix: cidr("0.0.0.0/0"),
                    via: None,
                    dev: Some("up0".into()),
                }
            }
        );
        assert_eq!(
            req(&["add-route", "0.0.0.0/0", "dev", "up0"]).unwrap(),
            req(&["add-route", "default", "dev", "up0"]).unwrap()
        );
    }

    #[test]
    fn add_route_refuses_bad_input() {
        let e = req(&["add-route", "10.9.0.0/16", "via", "10.0.0.254", "dev", "gw"]).unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = req(&["add-route", "10.9.0.0/16", "through", "gw"]).unwrap_err();
        assert!(e.contains("unexpected 'through'"), "{e}");
        let e = req(&["add-route", "10.9.0.0/16", "via"]).unwrap_err();
        assert!(e.contains("GATEWAY"), "{e}");
        let e = req(&["add-route", "10.9.0.0/16", "via", "gw"]).unwrap_err();
        assert!(e.contains("invalid gateway 'gw'"), "{e}");
        // Neither via nor dev, a bad prefix, host bits: clap refuses.
        assert!(parse(&["add-route", "10.9.0.0/16"]).is_err());
        assert!(parse(&["add-route", "10.9.0.0/33", "dev", "gw"]).is_err());
        assert!(parse(&["add-route", "10.9.x.0/16", "dev", "gw"]).is_err());
        let e = parse(&["add-route", "10.9.0.1/16", "dev", "gw"]).unwrap_err();
        assert!(e.to_string().contains("host bits"), "{e}");
    }

    #[test]
    fn del_route() {
        assert_eq!(
            req(&["del-route", "default"]).unwrap(),
            Request::DelRoute {
                prefix: cidr("0.0.0.0/0")
            }
        );
        assert_eq!(
            req(&["del-route", "10.9.0.0/16"]).unwrap(),
            Request::DelRoute {
                prefix: cidr("10.9.0.0/16")
            }
        );
    }

    #[test]
    fn add_rif_bridge() {
        assert_eq!(
            req(&[
                "add-rif",
                "gw",
                "--br",
                "br0",
                "--vlan",
                "10",
                "--addr",
                "10.0.10.1/24"
            ])
            .unwrap(),
            Request::AddRif {
                rif: RifConfig {
                    name: "gw".into(),
                    kind: RifType::Bridge,
                    bridge: Some("br0".into()),
                    vlan: Some(10),
                    addr: cidr("10.0.10.1/24"),
                    mac: None,
                    netns: None,
                    ifname: None,
                    mtu: None,
                }
            }
        );
        let Request::AddRif { rif } = req(&[
            "add-rif",
            "gw",
            "--type",
            "bridge",
            "--br",
            "br0",
            "--addr",
            "10.0.0.1/24",
            "--mac",
            "02:00:00:00:00:01",
            "--mtu",
            "9000",
        ])
        .unwrap() else {
            panic!("not add-rif")
        };
        assert_eq!(rif.mac, Some("02:00:00:00:00:01".parse().unwrap()));
        assert_eq!(rif.mtu, Some(9000));
    }

    #[test]
    fn add_rif_tun() {
        assert_eq!(
            req(&[
                "add-rif",
                "t0",
                "--type",
                "tun",
                "--netns",
                "vpn",
                "--addr",
                "10.8.0.1/24"
            ])
            .unwrap(),
            Request::AddRif {
                rif: RifConfig {
                    name: "t0".into(),
                    kind: RifType::Tun,
                    bridge: None,
                    vlan: None,
                    addr: cidr("10.8.0.1/24"),
                    mac: None,
                    netns: Some("vpn".into()),
                    ifname: None,
                    mtu: None,
                }
            }
        );
    }

    #[test]
    fn add_rif_refuses_bad_input() {
        // Clap-level: a bad CIDR, no --addr, an unknown type.
        assert!(parse(&["add-rif", "gw", "--br", "br0", "--addr", "10.0.0.1/40"]).is_err());
        assert!(parse(&["add-rif", "gw", "--br", "br0", "--addr", "ten"]).is_err());
        assert!(parse(&["add-rif", "gw", "--br", "br0"]).is_err());
        assert!(parse(&["add-rif", "gw", "--type", "tap", "--addr", "10.0.0.1/24"]).is_err());
        // RifConfig::check(): refused before contacting the daemon.
        for bad in [
            &["add-rif", "gw", "--addr", "10.0.0.1/24"][..],
            &["add-rif", "gw", "--br", "br0", "--addr", "0.0.0.0/24"],
            &["add-rif", "gw", "--br", "br0", "--addr", "10.0.0.1/31"],
            &[
                "add-rif",
                "gw",
                "--br",
                "br0",
                "--vlan",
                "4095",
                "--addr",
                "10.0.0.1/24",
            ],
            &[
                "add-rif",
                "gw",
                "--br",
                "br0",
                "--addr",
                "10.0.0.1/24",
                "--mtu",
                "100",
            ],
            &[
                "add-rif",
                "gw",
                "--br",
                "br0",
                "--netns",
                "x",
                "--addr",
                "10.0.0.1/24",
            ],
            &[
                "add-rif",
                "t0",
                "--type",
                "tun",
                "--br",
                "br0",
                "--addr",
                "10.8.0.1/24",
            ],
            &[
                "add-rif",
                "t0",
                "--type",
                "tun",
                "--vlan",
                "5",
                "--addr",
                "10.8.0.1/24",
            ],
        ] {
            assert!(req(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn del_rif() {
        assert_eq!(
            req(&["del-rif", "gw"]).unwrap(),
            Request::DelRif { name: "gw".into() }
        );
    }

    #[test]
    fn snat() {
        assert_eq!(
            req(&["add-snat", "--out", "up0"]).unwrap(),
            Request::AddSnat {
                snat: SnatConfig {
                    out: "up0".into(),
                    to: None,
                    src: None,
                }
            }
        );
        assert_eq!(
            req(&[
                "add-snat",
                "--out",
                "up0",
                "--to",
                "192.0.2.1-192.0.2.5",
                "--src",
                "10.0.0.0/24"
            ])
            .unwrap(),
            Request::AddSnat {
                snat: SnatConfig {
                    out: "up0".into(),
                    to: Some("192.0.2.1-192.0.2.5".into()),
                    src: Some(cidr("10.0.0.0/24")),
                }
            }
        );
        let e = req(&["add-snat", "--out", "up0", "--to", "192.0.2.10-192.0.2.1"]).unwrap_err();
        assert!(e.contains("below the first"), "{e}");
        assert!(req(&["add-snat", "--out", "up0", "--to", "nowhere"]).is_err());
        assert!(parse(&["add-snat", "--out", "up0", "--src", "10.0.0/24"]).is_err());
        assert!(parse(&["add-snat", "--to", "192.0.2.1"]).is_err());
        assert_eq!(
            req(&["del-snat", "--out", "up0"]).unwrap(),
            Request::DelSnat { out: "up0".into() }
        );
    }

    #[test]
    fn dnat() {
        assert_eq!(
            req(&[
                "add-dnat",
                "--in",
                "up0",
                "--proto",
                "tcp",
                "--port",
                "8080",
                "--to",
                "10.0.1.2:80"
            ])
            .unwrap(),
            Request::AddDnat {
                dnat: DnatConfig {
                    in_rif: "up0".into(),
                    proto: "tcp".into(),
                    port: 8080,
                    to: "10.0.1.2:80".into(),
                }
            }
        );
        // The port defaults to --port.
        assert_eq!(
            req(&["add-dnat", "--in", "up0", "--proto", "udp", "--port", "53", "--to", "10.0.1.3"])
                .unwrap(),
            Request::AddDnat {
                dnat: DnatConfig {
                    in_rif: "up0".into(),
                    proto: "udp".into(),
                    port: 53,
                    to: "10.0.1.3:53".into(),
                }
            }
        );
        let a = |proto: &'static str, port: &'static str, to: &'static str| {
            vec![
                "add-dnat", "--in", "up0", "--proto", proto, "--port", port, "--to", to,
            ]
        };
        for bad in [
            a("icmp", "1", "10.0.1.2"),
            a("tcp", "0", "10.0.1.2"),
            a("tcp", "70000", "10.0.1.2"),
            vec![
                "add-dnat", "--proto", "tcp", "--port", "80", "--to", "10.0.1.2",
            ],
            vec![
                "add-dnat", "--in", "up0", "--proto", "tcp", "--to", "10.0.1.2",
            ],
        ] {
            assert!(parse(&bad).is_err(), "{bad:?} accepted");
        }
        for bad in [
            a("tcp", "80", "nowhere"),
            a("tcp", "80", "10.0.1.2:0"),
            a("tcp", "80", "10.0.1.2:x"),
            a("tcp", "80", "224.0.0.1"),
            a("tcp", "80", "255.255.255.255"),
            a("tcp", "80", "0.0.0.0"),
        ] {
            assert!(req(&bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            req(&["del-dnat", "--in", "up0", "--proto", "tcp", "--port", "8080"]).unwrap(),
            Request::DelDnat {
                in_rif: "up0".into(),
                proto: "tcp".into(),
                port: 8080
            }
        );
        assert!(parse(&["del-dnat", "--in", "up0", "--port", "8080"]).is_err());
        assert_eq!(req(&["dnat-show"]).unwrap(), Request::DnatShow);
    }

    #[test]
    fn set_router() {
        assert_eq!(
            req(&["set-router", "--nat-max-flows", "1000"]).unwrap(),
            Request::SetRouter {
                nat_max_flows: Some(1000)
            }
        );
        assert!(req(&["set-router"]).is_err());
    }

    #[test]
    fn show_commands() {
        assert_eq!(req(&["rif-show"]).unwrap(), Request::RifShow);
        assert_eq!(req(&["route-show"]).unwrap(), Request::RouteShow);
        assert_eq!(req(&["arp-show"]).unwrap(), Request::ArpShow);
        assert_eq!(req(&["nat-show"]).unwrap(), Request::NatShow);
        assert_eq!(req(&["snat-show"]).unwrap(), Request::SnatShow);
    }

    #[test]
    fn global_options_before_or_after_the_command() {
        for args in [
            &["route-show", "--json"][..],
            &["--json", "route-show"],
            &["add-route", "default", "dev", "up0", "--json"],
            &[
                "add-rif",
                "gw",
                "--br",
                "br0",
                "--addr",
                "10.0.0.1/24",
                "--json",
            ],
        ] {
            let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert!(cli.json, "{args:?}");
        }
        let cli = parse(&["rif-show", "--socket", "/tmp/x.sock"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/tmp/x.sock"));
        // The route words still come out right with a global option after them.
        let cli = parse(&["add-route", "default", "via", "10.0.0.254", "--json"]).unwrap();
        assert!(matches!(
            request(cli.cmd).unwrap(),
            Request::AddRoute {
                route: RouteConfig {
                    via: Some(_),
                    dev: None,
                    ..
                }
            }
        ));
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn rif_placement_text() {
        let v: Value = serde_json::json!({"name": "gw", "type": "bridge", "bridge": "br0",
            "vlan": 10, "addr": "10.0.10.1/24", "mac": "02:00:00:00:00:01", "netns": null,
            "ifname": null, "mtu": 1500, "up": true});
        assert_eq!(rif_on(&v), "br0 vlan 10");
        assert_eq!(
            rif_row(&v),
            [
                "gw",
                "bridge",
                "10.0.10.1/24",
                "br0 vlan 10",
                "02:00:00:00:00:01",
                "1500",
                "up"
            ]
        );
        let v: Value = serde_json::json!({"name": "t0", "type": "tun", "bridge": null,
            "vlan": null, "addr": "10.8.0.1/24", "mac": null, "netns": "vpn",
            "ifname": null, "mtu": 1500, "up": false});
        assert_eq!(rif_on(&v), "t0 netns vpn");
        let r: Value = serde_json::json!({"prefix": "10.9.0.0/16", "via": "10.0.0.254",
            "dev": "gw", "kind": "static"});
        assert_eq!(route_text(&r), "10.9.0.0/16 via 10.0.0.254 dev gw (static)");
    }
}
