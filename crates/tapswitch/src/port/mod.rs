//! The one small trait every kind of port implements, so the dataplane does
//! not care whether frames come from a TAP, a macvtap-backed VM or (later) a
//! VXLAN tunnel.
//!
//! One file per kind: [`tap`] (a TAP whose fd the switch holds) and [`vm`]
//! (the devices QEMU opens next to a VM port's TAP).

pub mod tap;
pub mod vm;

pub use tap::TapPort;

use std::io;
use std::os::fd::RawFd;

/// A source and sink of Ethernet frames.
///
/// Frames carry a vnet header of [`Port::vnet_hdr_len`] bytes in front (0 when
/// the port has none). `recv` and `send` never block: `recv` returns
/// `WouldBlock` when the queue is drained. Methods take `&self` because with
/// several dataplane threads every thread may write to every port (the kernel
/// serialises writes on a TAP fd); only one thread reads a given queue.
pub trait Port: Send + Sync {
    fn name(&self) -> &str;
    /// How many queues (fds) frames arrive on: more than one for a
    /// multi-queue TAP, whose netdev spreads its flows over them.
    fn queues(&self) -> usize {
        1
    }
    /// The fd of `queue`, which the event loop waits on for readability.
    fn raw_fd(&self, queue: usize) -> RawFd;
    fn vnet_hdr_len(&self) -> usize;
    /// Reads one frame from `queue`.
    fn recv(&self, queue: usize, buf: &mut [u8]) -> io::Result<usize>;
    fn send(&self, frame: &[u8]) -> io::Result<usize>;
    /// Sends `head` followed by `body` as one frame, without joining them.
    fn send_parts(&self, head: &[u8], body: &[u8]) -> io::Result<usize>;
    /// Sends the concatenation of `parts` as one frame, without joining them.
    fn send_vectored(&self, parts: &[io::IoSlice<'_>]) -> io::Result<usize>;
}
