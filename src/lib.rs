//! tapswitch: a userspace L2 learning switch for VMs and network namespaces.
//!
//! Modules are listed in data-path order: a frame is read from a [`tap`] device
//! (behind its [`vnet`] header), viewed through [`wire`], looked up in the
//! [`fdb`], decided on by [`forward`] (pure, no I/O), and written out by the
//! [`dataplane`] through its [`port`]s. Setup ([`netns`], [`link`], [`switch`],
//! [`config`]) and the control plane ([`control`], [`report`], [`demo`]) sit at
//! the edge.

pub mod dataplane;
pub mod fdb;
pub mod forward;
pub mod gso;
pub mod policy;
pub mod port;
pub mod tap;
pub mod vnet;
pub mod wire;

pub mod config;
pub mod libvirt;
pub mod link;
pub mod netns;
pub mod privileges;
pub mod switch;
pub mod vm;
pub mod vmport;

pub mod control;
pub mod demo;
pub mod doctor;
pub mod metrics;
pub mod report;
pub mod state;
pub mod upgrade;
