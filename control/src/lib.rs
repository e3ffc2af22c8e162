//! vswitch control plane: the control socket server (inside `vswitchd`), the
//! client (`vswitchctl`), and configuration persistence.
//!
//! Protocol: JSON lines on a Unix stream socket. Each request is one JSON
//! object ([`dataplane::api::Request`]) on one line; each answer is one line
//! `{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`.

pub mod client;
pub mod evpn;
pub mod fdbshow;
pub mod metrics;
pub mod pcap;
pub mod persist;
pub mod privs;
pub mod server;
pub mod table;
pub mod trace;

/// Default control socket path.
pub const DEFAULT_SOCKET: &str = "/run/vswitch/vswitchd.sock";
/// Environment variable overriding the default socket path.
pub const SOCKET_ENV: &str = "VSWITCH_SOCKET";
/// Longest request line the server reads.
pub const MAX_LINE: usize = 1 << 20;
