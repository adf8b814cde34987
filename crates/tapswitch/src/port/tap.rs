//! A port on a TAP whose fd(s) the switch holds.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use super::Port;
use crate::sys::tap::Tap;

/// A port backed by a TAP whose fd(s) the switch holds: one per queue.
/// Frames are written on the first queue: a write goes up into the kernel
/// whichever queue carries it, and writes from several threads to one fd are
/// serialised by the kernel anyway.
#[derive(Debug)]
pub struct TapPort {
    queues: Vec<Tap>,
}

impl TapPort {
    pub fn new(tap: Tap) -> Self {
        Self { queues: vec![tap] }
    }

    /// A multi-queue port; `queues` are the opens of one multi-queue TAP.
    ///
    /// # Panics
    /// If `queues` is empty.
    pub fn with_queues(queues: Vec<Tap>) -> Self {
        assert!(!queues.is_empty(), "a port has at least one queue");
        Self { queues }
    }

    /// The first queue's TAP.
    pub fn tap(&self) -> &Tap {
        &self.queues[0]
    }
}

impl Port for TapPort {
    fn name(&self) -> &str {
        self.tap().name()
    }

    fn queues(&self) -> usize {
        self.queues.len()
    }

    fn raw_fd(&self, queue: usize) -> RawFd {
        self.queues[queue].as_raw_fd()
    }

    fn vnet_hdr_len(&self) -> usize {
        self.tap().vnet_hdr_len()
    }

    fn recv(&self, queue: usize, buf: &mut [u8]) -> io::Result<usize> {
        self.queues[queue].read(buf)
    }

    fn send(&self, frame: &[u8]) -> io::Result<usize> {
        self.tap().write(frame)
    }

    fn send_parts(&self, head: &[u8], body: &[u8]) -> io::Result<usize> {
        self.tap().write_parts(head, body)
    }

    fn send_vectored(&self, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.tap().write_vectored(parts)
    }
}
