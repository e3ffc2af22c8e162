//! The router's pure core: longest-prefix match ([`route`]) and source NAT
//! ([`nat`]). Both are functions of (packet bytes, tables, now) with no I/O,
//! like the bridge; the engine will drive them once router interfaces exist.

pub mod nat;
pub mod route;
