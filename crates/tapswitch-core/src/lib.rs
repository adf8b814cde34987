//! tapswitch's forwarding core: pure code, no I/O.
//!
//! In data-path order: a frame arrives behind its [`vnet`] header, is viewed
//! through [`wire`], classified and policed by [`policy`], looked up in and
//! learned into the [`fdb`], and decided on by [`forward`]; a super-frame
//! headed for a port without offloads is cut up by [`gso`], and a train of
//! segments read from a tunnel is joined into one by [`gro`]. Everything here
//! takes bytes and state in and gives decisions out; the daemon crate does the
//! reading and writing. This crate depends on neither libc nor the daemon, so
//! a syscall cannot land here by accident.

pub mod fdb;
pub mod forward;
pub mod gro;
pub mod gso;
pub mod policy;
pub mod shared;
pub mod vnet;
pub mod wire;
