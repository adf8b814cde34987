//! tapswitch's daemon library: the switch around the pure core.
//!
//! The forwarding decision and everything it reads (frame views, vnet header,
//! MAC table, policy, software GSO) live in [`tapswitch_core`], which has no
//! I/O; they are re-exported here under their old paths. This crate holds the
//! edges, listed in data-path order: a frame is read from a [`tap`] device
//! (behind its [`vnet`] header), viewed through [`wire`], looked up in the
//! [`fdb`], decided on by [`forward`], and written out by the [`dataplane`]
//! through its [`port`]s. Setup ([`netns`], [`link`], [`switch`], [`config`])
//! and the control plane ([`control`], [`metrics`], [`state`], [`upgrade`])
//! sit around it.

pub use tapswitch_core::{fdb, forward, gso, policy, vnet, wire};

pub mod dataplane;
pub mod port;
pub mod tap;

pub mod config;
pub mod daemon;
#[cfg(feature = "libvirt")]
pub mod libvirt;
pub mod link;
pub mod netns;
pub mod privileges;
pub mod switch;
pub mod vm;
pub mod vmport;

pub mod control;
pub mod doctor;
pub mod metrics;
pub mod state;
pub mod upgrade;
