//! The one small trait every kind of port implements, so the dataplane does
//! not care whether frames come from a TAP, a macvtap-backed VM or (later) a
//! VXLAN tunnel.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use crate::tap::Tap;

/// A source and sink of Ethernet frames.
///
/// Frames carry a vnet header of [`Port::vnet_hdr_len`] bytes in front (0 when
/// the port has none). `recv` and `send` never block: `recv` returns
/// `WouldBlock` when the port is drained. Methods take `&self` because with
/// several dataplane threads every thread may write to every port (the kernel
/// serialises writes on a TAP fd); only one thread reads a given port.
pub trait Port: Send + Sync {
    fn name(&self) -> &str;
    /// The fd the event loop waits on for readability.
    fn raw_fd(&self) -> RawFd;
    fn vnet_hdr_len(&self) -> usize;
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn send(&self, frame: &[u8]) -> io::Result<usize>;
    /// Sends `head` followed by `body` as one frame, without joining them.
    fn send_parts(&self, head: &[u8], body: &[u8]) -> io::Result<usize>;
    /// Sends the concatenation of `parts` as one frame, without joining them.
    fn send_vectored(&self, parts: &[io::IoSlice<'_>]) -> io::Result<usize>;
}

/// A port backed by a TAP whose fd the switch holds.
#[derive(Debug)]
pub struct TapPort {
    tap: Tap,
}

impl TapPort {
    pub fn new(tap: Tap) -> Self {
        Self { tap }
    }

    pub fn tap(&self) -> &Tap {
        &self.tap
    }
}

impl Port for TapPort {
    fn name(&self) -> &str {
        self.tap.name()
    }

    fn raw_fd(&self) -> RawFd {
        self.tap.as_raw_fd()
    }

    fn vnet_hdr_len(&self) -> usize {
        self.tap.vnet_hdr_len()
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.tap.read(buf)
    }

    fn send(&self, frame: &[u8]) -> io::Result<usize> {
        self.tap.write(frame)
    }

    fn send_parts(&self, head: &[u8], body: &[u8]) -> io::Result<usize> {
        self.tap.write_parts(head, body)
    }

    fn send_vectored(&self, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.tap.write_vectored(parts)
    }
}
