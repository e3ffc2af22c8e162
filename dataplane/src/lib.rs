//! vswitch data plane.
//!
//! Everything a packet touches lives here: the frame buffer ([`packet`]), the
//! forwarding logic ([`bridge`]), the port backends ([`port`]) and the poll loop
//! that ties them together ([`engine`]), with software segmentation and
//! checksums for egresses without offloads ([`offload`]). The forwarding logic is pure: functions
//! of (frame, ingress port, tables, now) that return a verdict, so it is tested
//! with byte fixtures and no kernel. Only [`port`], [`sys`] and [`engine`] touch
//! file descriptors.

pub mod api;
pub mod bridge;
mod cache;
pub mod config;
pub mod engine;
pub mod mac;
pub mod offload;
pub mod packet;
pub mod pipeline;
pub mod port;
pub mod router;
pub mod stats;
pub mod sys;
#[cfg(test)]
mod test_rng;
pub mod wire;

pub use mac::MacAddr;
