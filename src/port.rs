//! The one small trait every kind of port implements, so the dataplane does
//! not care whether frames come from a TAP, a macvtap-backed VM or (later) a
//! VXLAN tunnel.

use std::io;
use std::os::fd::AsRawFd;

use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::tap::Tap;

/// A source and sink of Ethernet frames, registered with the event loop.
///
/// Frames carry a vnet header of [`Port::vnet_hdr_len`] bytes in front (0 when
/// the port has none). `recv` and `send` never block: `recv` returns
/// `WouldBlock` when the port is drained.
pub trait Port: Source + Send {
    fn name(&self) -> &str;
    fn vnet_hdr_len(&self) -> usize;
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    fn send(&mut self, frame: &[u8]) -> io::Result<usize>;
    /// Sends `head` followed by `body` as one frame, without joining them.
    fn send_parts(&mut self, head: &[u8], body: &[u8]) -> io::Result<usize>;
    /// Sends the concatenation of `parts` as one frame, without joining them.
    fn send_vectored(&mut self, parts: &[io::IoSlice<'_>]) -> io::Result<usize>;
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

    fn vnet_hdr_len(&self) -> usize {
        self.tap.vnet_hdr_len()
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tap.read(buf)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.tap.write(frame)
    }

    fn send_parts(&mut self, head: &[u8], body: &[u8]) -> io::Result<usize> {
        self.tap.write_parts(head, body)
    }

    fn send_vectored(&mut self, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.tap.write_vectored(parts)
    }
}

impl Source for TapPort {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.tap.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.tap.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.tap.as_raw_fd()).deregister(registry)
    }
}
