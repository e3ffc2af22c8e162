//! The EVPN agent's logic (`vswitch-evpn`): vswitchd's VXLAN ports joined to
//! a BGP EVPN overlay, with GoBGP as the BGP speaker.
//!
//! - [`model`]: what the agent knows — vswitchd's VXLAN ports and FDB, the
//!   EVPN paths of the speaker's RIB, the routes it advertises, the actions
//!   it takes.
//! - [`local`]: vswitchd's `list-ports` / `fdb-show` JSON into a
//!   [`model::LocalState`].
//! - [`rib`]: `gobgp global rib -a evpn -j` into [`model::Path`]s.
//! - [`reconcile`]: the pure decision, (local state, RIB, what the agent
//!   programmed) → actions.
//! - [`gobgp`], [`switch`]: carry the actions out (the `gobgp` CLI, the
//!   control socket).
//!
//! Standards: RFC 7432 (BGP MPLS-Based Ethernet VPN) §7.2 MAC/IP
//! Advertisement route (type 2), §7.3 Inclusive Multicast Ethernet Tag route
//! (type 3), §7.7 and §15 MAC Mobility, §7.9 Route Distinguisher, §7.10
//! Route Target, §9.1 / §9.2 local and remote learning, §11.1 the type-3
//! route with a PMSI Tunnel attribute for ingress replication; RFC 8365
//! (EVPN as a Network Virtualization Overlay) §5.1.2 VLAN-based service (one
//! VNI per EVI, Ethernet Tag ID 0), §5.1.2.1 the auto-derived Route Target
//! `ASN:VNI`, §5.1.3 constructing the routes: the VNI in the MPLS label
//! field, the BGP Encapsulation extended community (tunnel type 8, VXLAN)
//! and PMSI tunnel type 6 (ingress replication).

pub mod exec;
pub mod gobgp;
pub mod local;
pub mod model;
pub mod reconcile;
pub mod rib;
pub mod switch;
