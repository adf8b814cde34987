//! A port in memory, for unit tests of the egress paths without TAPs: it
//! records every frame written to it and can refuse writes with a chosen errno.

use std::io;
use std::os::fd::RawFd;
use std::sync::Mutex;

use crate::port::Port;

/// Records writes; reads find nothing. Not pollable: it has no fd, so it is
/// given to the egress functions, never to a running loop.
pub(super) struct MemoryPort {
    name: String,
    vnet_hdr_len: usize,
    /// Frames written, each joined into one buffer (vnet header included).
    written: Mutex<Vec<Vec<u8>>>,
    /// The errno writes fail with, while set.
    failing: Mutex<Option<i32>>,
}

impl MemoryPort {
    pub(super) fn new(name: &str, vnet_hdr_len: usize) -> Self {
        Self {
            name: name.to_owned(),
            vnet_hdr_len,
            written: Mutex::new(Vec::new()),
            failing: Mutex::new(None),
        }
    }

    /// From now on, writes fail with `errno` (`None`: they succeed again).
    pub(super) fn fail_writes_with(&self, errno: Option<i32>) {
        *self.failing.lock().unwrap() = errno;
    }

    /// The frames written so far, oldest first.
    pub(super) fn written(&self) -> Vec<Vec<u8>> {
        self.written.lock().unwrap().clone()
    }

    fn record(&self, parts: &[&[u8]]) -> io::Result<usize> {
        if let Some(errno) = *self.failing.lock().unwrap() {
            return Err(io::Error::from_raw_os_error(errno));
        }
        let frame = parts.concat();
        let len = frame.len();
        self.written.lock().unwrap().push(frame);
        Ok(len)
    }
}

impl Port for MemoryPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn raw_fd(&self, _queue: usize) -> RawFd {
        -1
    }

    fn vnet_hdr_len(&self) -> usize {
        self.vnet_hdr_len
    }

    fn recv(&self, _queue: usize, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn send(&self, frame: &[u8]) -> io::Result<usize> {
        self.record(&[frame])
    }

    fn send_parts(&self, head: &[u8], body: &[u8]) -> io::Result<usize> {
        self.record(&[head, body])
    }

    fn send_vectored(&self, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let parts: Vec<&[u8]> = parts.iter().map(|part| &**part).collect();
        self.record(&parts)
    }
}
