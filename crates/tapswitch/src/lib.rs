//! tapswitch's daemon library: the switch around the pure core.
//!
//! The forwarding decision and everything it reads (frame views, vnet header,
//! MAC table, policy, software GSO) live in [`tapswitch_core`], which has no
//! I/O; they are re-exported here under their old paths. This crate holds the
//! edges, listed in data-path order: a frame is read from a [`port`] (a TAP
//! through [`sys::tap`], behind its [`vnet`] header), viewed through [`wire`],
//! looked up in the [`fdb`], decided on by [`forward`], and written out by the
//! [`dataplane`] through its ports. Every ioctl, `setns` and capability call
//! lives in [`sys`], every netlink message in [`netlink`]. Setup ([`switch`],
//! [`config`], [`vm`] with libvirt behind the `libvirt` feature) and the
//! control plane ([`control`], [`metrics`], [`state`], [`upgrade`], started
//! by [`daemon`]) sit around it.

pub use tapswitch_core::{fdb, forward, gro, gso, policy, shared, vnet, wire};

pub mod dataplane;
pub mod port;
pub mod sys;

pub mod config;
pub mod daemon;
pub mod netlink;
pub mod switch;
pub mod vm;

pub mod control;
pub mod doctor;
pub mod evpn;
pub mod metrics;
pub mod notify;
pub mod state;
pub mod upgrade;
