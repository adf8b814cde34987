//! The one small trait every kind of port implements, so the dataplane does
//! not care whether frames come from a TAP, a netdev or a VXLAN tunnel.
//!
//! One file per kind: [`tap`] (a TAP whose fd the switch holds), [`netdev`] (an
//! `AF_PACKET` socket on a netdev the switch did not create), [`vm`] (the devices
//! QEMU opens next to a VM port's TAP) and [`vxlan`] (a tunnel to remote VTEPs over UDP).

pub mod netdev;
pub mod tap;
pub mod vm;
pub mod vxlan;

pub use netdev::NetdevPort;
pub use tap::TapPort;
pub use vxlan::VxlanPort;

use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::dataplane::{DropCounters, TunnelCounters};
use crate::forward::DropReason;
use crate::wire::MacAddr;

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
    /// Adds the frames the port itself dropped while reading (e.g. a tunnel
    /// packet of another VNI) to `into`, and forgets them.
    fn drain_drops(&self, _into: &mut DropCounters) {}
    /// The forwarding decision learned `mac`, the source of the frame `recv` returned
    /// last, on this port: a tunnel port now learns it behind that frame's outer source.
    /// Never called for a frame the decision dropped before learning (port security, a
    /// VLAN the port does not carry, storm control), so such a frame moves nothing.
    fn source_learned(&self, _mac: MacAddr) {}
    /// The remote VTEP behind which `mac` was pinned or learned (tunnel ports only).
    fn remote_of(&self, _mac: MacAddr) -> Option<IpAddr> {
        None
    }
    /// Pins `mac` behind remote VTEP `vtep` (`None`: unpins it), winning over what the
    /// port learns from traffic, never ageing. Tunnel ports only.
    fn pin_remote(&self, _mac: MacAddr, _vtep: Option<IpAddr>) -> Result<(), TunnelError> {
        Err(TunnelError::NotATunnel {
            port: self.name().to_owned(),
        })
    }
    /// Replaces the flood list (head-end replication targets). Tunnel ports only.
    fn set_flood_list(&self, _vteps: &[IpAddr]) -> Result<(), TunnelError> {
        Err(TunnelError::NotATunnel {
            port: self.name().to_owned(),
        })
    }
    /// A tunnel port: in the split-horizon group, so that floods from one
    /// tunnel never go back into another.
    fn is_tunnel(&self) -> bool {
        false
    }
    /// What a tunnel port did with super-frames and datagram trains (`stats`).
    fn tunnel_counters(&self) -> Option<TunnelCounters> {
        None
    }
}

/// Why a remote VTEP setting was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    #[error("port {port} is not a tunnel: remote VTEPs are for kind = \"vxlan\" ports")]
    NotATunnel { port: String },
    #[error("port {port} reaches its VTEPs over IPv4: {vtep} is not an IPv4 address")]
    NotIpv4 { port: String, vtep: IpAddr },
}

/// Drops a port counts by itself, from whichever thread reads it.
#[derive(Debug, Default)]
pub struct PortDrops([AtomicU64; DropReason::COUNT]);

impl PortDrops {
    pub fn count(&self, reason: DropReason) {
        self.0[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Moves the counts into `into`.
    pub fn drain_into(&self, into: &mut DropCounters) {
        for reason in DropReason::ALL {
            let count = self.0[reason.index()].swap(0, Ordering::Relaxed);
            into.add(reason, count);
        }
    }
}
