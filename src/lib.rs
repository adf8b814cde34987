//! tapswitch: a userspace L2 learning switch for VMs and network namespaces.
//!
//! Modules are listed in data-path order: a frame is read from a [`tap`] device,
//! viewed through [`wire`], looked up in the [`fdb`], decided on by [`forward`]
//! (pure, no I/O), and written out by the [`dataplane`] through its [`port`]s.

pub mod fdb;
pub mod forward;
pub mod wire;
