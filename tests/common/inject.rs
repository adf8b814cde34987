//! A raw-frame injector: an `AF_PACKET` socket bound to a port's netdev inside its
//! namespace, so that what it sends arrives at the switch's TAP fd exactly as a
//! (hostile) endpoint's frames would. Frames go out in `sendmmsg` batches, past the
//! qdisc (`PACKET_QDISC_BYPASS`), straight into the TAP's queue; with
//! [`Injector::with_vnet_header`] each frame is preceded by a `virtio_net_hdr` the
//! sender chooses (`PACKET_VNET_HDR`), as a guest's virtio-net driver would.
//!
//! What the kernel does with such a header before the switch sees it: see
//! `tests/hostile.rs`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `<linux/if_packet.h>`.
pub(crate) const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_QDISC_BYPASS: libc::c_int = 20;

/// `struct virtio_net_hdr` as `PACKET_VNET_HDR` takes it (10 bytes, host byte order,
/// which is little-endian on the machines this runs on).
pub const VIRTIO_NET_HDR_LEN: usize = 10;
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
pub const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;

/// The fields of a `virtio_net_hdr`, whatever they claim.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    pub fn to_bytes(self) -> [u8; VIRTIO_NET_HDR_LEN] {
        let mut bytes = [0u8; VIRTIO_NET_HDR_LEN];
        bytes[0] = self.flags;
        bytes[1] = self.gso_type;
        bytes[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        bytes[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        bytes[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        bytes[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        bytes
    }

    pub fn from_bytes(bytes: &[u8]) -> Self {
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        Self {
            flags: bytes[0],
            gso_type: bytes[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }
}

/// Frames per `sendmmsg` call.
const BATCH: usize = 256;

/// How often a paced injector tries a frame the TAP queue has no room for, 100 µs
/// apart, before it counts the frame refused.
pub const PACED_RETRIES: u32 = 10_000;

/// What became of the frames given to [`Injector::send`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Frames the kernel took (they went into the TAP's queue, or were dropped there
    /// when it was full: see the netdev's `tx_dropped`).
    pub accepted: u64,
    /// Frames the kernel refused on the send path, with the error of each refusal
    /// (errno, count).
    pub refused: Vec<(i32, u64)>,
}

impl Sent {
    pub fn refused_total(&self) -> u64 {
        self.refused.iter().map(|(_, n)| n).sum()
    }

    fn refuse(&mut self, errno: i32) {
        match self.refused.iter_mut().find(|(e, _)| *e == errno) {
            Some((_, n)) => *n += 1,
            None => self.refused.push((errno, 1)),
        }
    }
}

/// An `AF_PACKET` raw socket sending on one interface of one namespace.
pub struct Injector {
    fd: OwnedFd,
    ifindex: i32,
    vnet_header: bool,
    paced: bool,
}

impl Injector {
    /// Sends plain Ethernet frames out of `dev` in `netns`.
    pub fn open(netns: &str, dev: &str) -> Self {
        Self::new(netns, dev, false)
    }

    /// Sends frames each preceded by a [`VIRTIO_NET_HDR_LEN`]-byte header
    /// (see [`VirtioNetHdr`]) out of `dev` in `netns`.
    pub fn with_vnet_header(netns: &str, dev: &str) -> Self {
        Self::new(netns, dev, true)
    }

    fn new(netns: &str, dev: &str, vnet_header: bool) -> Self {
        let dev = dev.to_owned();
        let (fd, ifindex) = tapswitch::sys::netns::run_in(netns, move || {
            let ifindex = ifindex(&dev);
            // Protocol 0: the socket only sends, it receives nothing.
            // SAFETY: plain socket creation; the fd is owned below.
            let raw =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            assert!(raw >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
            // SAFETY: raw is a fresh socket that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let mut options = vec![PACKET_QDISC_BYPASS];
            if vnet_header {
                options.push(PACKET_VNET_HDR);
            }
            enable_packet_options(raw, &options);
            (fd, ifindex as i32)
        })
        .expect("entering the namespace");
        Self {
            fd,
            ifindex,
            vnet_header,
            paced: false,
        }
    }

    /// Waits for room instead of losing frames: a TAP queue without room refuses a
    /// frame with ENOBUFS (the qdisc is bypassed), and a paced injector sends it again
    /// after a moment, up to [`PACED_RETRIES`] times. So the switch gets every frame,
    /// as fast as it reads. (ENOBUFS also reports frames the kernel's own checks drop
    /// on transmit: do not pace those.)
    pub fn paced(mut self) -> Self {
        self.paced = true;
        self
    }

    fn address(&self) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data; zero is a valid starting value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        addr
    }

    /// Sends every frame (with its vnet header in front, on a socket made by
    /// [`Injector::with_vnet_header`]).
    pub fn send(&self, frames: &[Vec<u8>]) -> Sent {
        let mut next = 0;
        self.send_generated(frames.len() as u64, |buffer| {
            buffer.clear();
            buffer.extend_from_slice(&frames[next]);
            next += 1;
        })
    }

    /// Sends `count` frames, each written into a reused buffer by `make` (called
    /// in order, once per frame), in `sendmmsg` batches.
    pub fn send_generated(&self, count: u64, mut make: impl FnMut(&mut Vec<u8>)) -> Sent {
        let addr = self.address();
        let mut buffers: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(128)).collect();
        let mut sent = Sent::default();
        let mut left = count;
        while left > 0 {
            let batch = left.min(BATCH as u64) as usize;
            for buffer in &mut buffers[..batch] {
                make(buffer);
                if self.vnet_header {
                    assert!(
                        buffer.len() >= VIRTIO_NET_HDR_LEN,
                        "a frame on a vnet-header socket starts with its header"
                    );
                }
            }
            let mut iovecs: Vec<libc::iovec> = buffers[..batch]
                .iter()
                .map(|b| libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                })
                .collect();
            let mut messages: Vec<libc::mmsghdr> = iovecs
                .iter_mut()
                .map(|iov| {
                    // SAFETY: mmsghdr is plain data; zero is a valid starting value.
                    let mut message: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    message.msg_hdr.msg_name = (&raw const addr).cast_mut().cast();
                    message.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                    message.msg_hdr.msg_iov = iov;
                    message.msg_hdr.msg_iovlen = 1;
                    message
                })
                .collect();
            let mut done = 0;
            let mut retries = 0;
            while done < batch {
                // SAFETY: every message points at `addr` and an iovec of a live buffer,
                // all of which outlive the call; the count is that of `messages[done..]`.
                let n = unsafe {
                    libc::sendmmsg(
                        self.fd.as_raw_fd(),
                        messages[done..].as_mut_ptr(),
                        (batch - done) as u32,
                        0,
                    )
                };
                if n < 0 {
                    // The first message of the rest was refused.
                    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
                    assert_ne!(errno, libc::EBADF, "the injector's socket is gone");
                    if self.paced && errno == libc::ENOBUFS && retries < PACED_RETRIES {
                        retries += 1;
                        std::thread::sleep(std::time::Duration::from_micros(100));
                        continue;
                    }
                    sent.refuse(errno);
                    done += 1;
                } else {
                    sent.accepted += n as u64;
                    done += n as usize;
                }
                retries = 0;
            }
            left -= batch as u64;
        }
        sent
    }
}

/// The interface index of `dev` in the calling thread's namespace; panics without one.
pub(crate) fn ifindex(dev: &str) -> u32 {
    let cname = std::ffi::CString::new(dev).expect("no NUL in a device name");
    // SAFETY: cname is a valid NUL-terminated string for the call.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    assert_ne!(ifindex, 0, "no interface {dev}");
    ifindex
}

/// Turns on the boolean `SOL_PACKET` options `options` of the packet socket `fd`.
pub(crate) fn enable_packet_options(fd: std::os::fd::RawFd, options: &[libc::c_int]) {
    let on: libc::c_int = 1;
    for &option in options {
        // SAFETY: `on` is a live int and its length is given.
        let ret = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                option,
                (&raw const on).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        assert_eq!(
            ret,
            0,
            "setsockopt(SOL_PACKET, {option}): {}",
            io::Error::last_os_error()
        );
    }
}

/// Sends raw Ethernet frames out of `dev` in `netns`, as an endpoint would; panics
/// when the kernel refuses one.
pub fn send_raw(netns: &str, dev: &str, frames: &[Vec<u8>]) {
    let sent = Injector::open(netns, dev).send(frames);
    assert!(
        sent.refused.is_empty(),
        "the kernel refused frames: {sent:?}"
    );
}

/// Sends `frames` out of `dev` in `netns` as fast as the netdev takes them, as a
/// flooding endpoint does: the frames a full TAP queue refuses (ENOBUFS) are part of
/// a flood, not a failure. Panics only when none got out.
pub fn flood_raw(netns: &str, dev: &str, frames: &[Vec<u8>]) -> Sent {
    let sent = Injector::open(netns, dev).send(frames);
    assert!(sent.accepted > 0, "the flood did not get out: {sent:?}");
    sent
}
