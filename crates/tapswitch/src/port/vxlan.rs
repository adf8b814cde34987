//! A VXLAN tunnel port (RFC 7348): Ethernet frames of one VNI carried in UDP
//! to and from remote VTEPs (Linux vxlan devices, other switches).
//!
//! Receive: one UDP socket bound to the local VTEP address; the VXLAN header
//! is read apart from the frame (which lands in the dataplane's buffer as
//! from any port) and checked; packets of another VNI or with a malformed
//! header are counted (`unknown_vni`, `bad_vxlan_header`) and skipped. The
//! inner source MAC is learned as living behind the outer source address
//! (unless the control plane pinned it) only once the forwarding decision
//! learned it ([`Port::source_learned`]): a frame the decision drops before
//! learning (port security, a VLAN not carried, storm control) moves no
//! remote MAC. Send: to the VTEP pinned for
//! the destination MAC (`fdb add --remote`, EVPN), else the one learned, else
//! one copy to each remote of the flood list (which EVPN replaces at runtime;
//! head-end replication, one `sendmmsg`),
//! over a raw socket so that each datagram carries the flow hash as its UDP
//! source port. The port has no vnet header: the dataplane segments
//! super-frames to the port's MTU (the underlay's minus 50) before they get here.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Port, PortDrops, TunnelError};
use crate::dataplane::DropCounters;
use crate::forward::DropReason;
use crate::sys::udp::{self, UdpError};
use crate::wire::vxlan::{
    UdpPayload, VXLAN_HEADER_LEN, VxlanHeader, inner_flow_hash, source_port, udp_header_ipv4,
    vxlan_header,
};
use crate::wire::{EthernetFrame, MacAddr, UDP_HEADER_LEN};

/// Remote MACs a port remembers at most; beyond, new ones are flooded until
/// old ones age out.
pub const MAX_REMOTE_MACS: usize = 16_384;

/// What a VXLAN port is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSettings {
    pub name: String,
    pub vni: u32,
    /// Local VTEP address and UDP port (bound; the destination port of what we send).
    pub local: SocketAddrV4,
    /// The flood list at start: every broadcast, multicast and unknown unicast goes to
    /// each. [`Port::set_flood_list`] replaces it.
    pub remotes: Vec<Ipv4Addr>,
    /// How long a learned remote MAC is trusted without being heard again.
    pub ageing: Duration,
}

/// A port whose frames travel in VXLAN to remote VTEPs.
#[derive(Debug)]
pub struct VxlanPort {
    settings: VxlanSettings,
    receiver: UdpSocket,
    sender: OwnedFd,
    remotes: Mutex<Remotes>,
    /// The inner source MAC and outer source of the frame `recv` returned last,
    /// until the decision says whether it learned that MAC.
    last_source: Mutex<Option<(MacAddr, Ipv4Addr)>>,
    drops: PortDrops,
}

/// Where frames go: one lock taken once per frame sent or received.
#[derive(Debug, Default)]
struct Remotes {
    /// Shared with senders in flight, so a replacement never waits for them.
    flood: Arc<[Ipv4Addr]>,
    /// Set by the control plane; they win over what traffic says and never age.
    pinned: HashMap<MacAddr, Ipv4Addr>,
    learned: HashMap<MacAddr, (Ipv4Addr, Instant)>,
}

impl VxlanPort {
    /// Opens the sockets in the current namespace (call it inside the port's).
    pub fn open(settings: VxlanSettings) -> Result<Self, UdpError> {
        let receiver = udp::bind_receiver(settings.local)?;
        let sender = udp::open_raw_sender(*settings.local.ip())?;
        let remotes = Remotes {
            flood: settings.remotes.iter().copied().collect(),
            ..Remotes::default()
        };
        Ok(VxlanPort {
            settings,
            receiver,
            sender,
            remotes: Mutex::new(remotes),
            last_source: Mutex::new(None),
            drops: PortDrops::default(),
        })
    }

    fn remotes(&self) -> MutexGuard<'_, Remotes> {
        self.remotes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn last_source(&self) -> MutexGuard<'_, Option<(MacAddr, Ipv4Addr)>> {
        self.last_source.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current flood list.
    pub fn flood_list(&self) -> Vec<Ipv4Addr> {
        self.remotes().flood.to_vec()
    }

    fn ipv4(&self, vtep: IpAddr) -> Result<Ipv4Addr, TunnelError> {
        match vtep {
            IpAddr::V4(vtep) => Ok(vtep),
            IpAddr::V6(_) => Err(TunnelError::NotIpv4 {
                port: self.settings.name.clone(),
                vtep,
            }),
        }
    }

    pub fn settings(&self) -> &VxlanSettings {
        &self.settings
    }

    /// The VTEP `mac` is pinned behind, else the one it was last heard from if still fresh.
    pub fn remote_vtep(&self, mac: MacAddr) -> Option<Ipv4Addr> {
        self.remotes().vtep_of(mac, self.settings.ageing)
    }

    fn learn(&self, mac: MacAddr, vtep: Ipv4Addr) {
        if !mac.is_unicast() || mac.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut remotes = self.remotes();
        if remotes.pinned.contains_key(&mac) {
            return;
        }
        let learned = &mut remotes.learned;
        if learned.len() >= MAX_REMOTE_MACS && !learned.contains_key(&mac) {
            let ageing = self.settings.ageing;
            learned.retain(|_, (_, seen)| now.duration_since(*seen) < ageing);
            if learned.len() >= MAX_REMOTE_MACS {
                return;
            }
        }
        learned.insert(mac, (vtep, now));
    }

    /// Encapsulates the frame made of `parts` and sends it where its
    /// destination lives, or to every remote.
    fn send_frame(&self, parts: &[&[u8]]) -> io::Result<usize> {
        let len: usize = parts.iter().map(|part| part.len()).sum();
        let mut head = [0u8; 128];
        let mut filled = 0;
        for part in parts {
            let take = part.len().min(head.len() - filled);
            head[filled..filled + take].copy_from_slice(&part[..take]);
            filled += take;
        }
        let head = &head[..filled];
        let destination = EthernetFrame::new_checked(head)
            .ok()
            .map(|frame| frame.dst_addr())
            .filter(MacAddr::is_unicast);
        let (known, flood) = {
            let remotes = self.remotes();
            let known = destination.and_then(|mac| remotes.vtep_of(mac, self.settings.ageing));
            (known, Arc::clone(&remotes.flood))
        };
        let destinations: &[Ipv4Addr] = match &known {
            Some(vtep) => std::slice::from_ref(vtep),
            None => &flood,
        };
        if destinations.is_empty() {
            return Ok(len);
        }
        let vxlan = vxlan_header(self.settings.vni);
        let mut payload: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        payload.push(&vxlan);
        payload.extend_from_slice(parts);
        let local = (
            self.settings.local.ip().octets(),
            source_port(inner_flow_hash(head)),
        );
        // Summed once: the copies differ only in their pseudo-headers.
        let summed = UdpPayload::of(&payload);
        let udp_headers: Vec<[u8; UDP_HEADER_LEN]> = destinations
            .iter()
            .map(|remote| {
                udp_header_ipv4(
                    local,
                    (remote.octets(), self.settings.local.port()),
                    &summed,
                )
            })
            .collect();
        let mut datagrams: Vec<Vec<libc::iovec>> = udp_headers
            .iter()
            .map(|udp_header| {
                std::iter::once(&udp_header[..])
                    .chain(payload.iter().copied())
                    .map(|piece| libc::iovec {
                        iov_base: piece.as_ptr().cast_mut().cast(),
                        iov_len: piece.len(),
                    })
                    .collect()
            })
            .collect();
        udp::send_datagrams(self.sender.as_raw_fd(), destinations, &mut datagrams)?;
        Ok(len)
    }
}

impl Remotes {
    fn vtep_of(&self, mac: MacAddr, ageing: Duration) -> Option<Ipv4Addr> {
        if let Some(&vtep) = self.pinned.get(&mac) {
            return Some(vtep);
        }
        let &(vtep, seen) = self.learned.get(&mac)?;
        (seen.elapsed() < ageing).then_some(vtep)
    }
}

impl Port for VxlanPort {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn raw_fd(&self, _queue: usize) -> RawFd {
        self.receiver.as_raw_fd()
    }

    fn vnet_hdr_len(&self) -> usize {
        0
    }

    /// The next well-formed frame of our VNI; others are counted and skipped.
    fn recv(&self, _queue: usize, buf: &mut [u8]) -> io::Result<usize> {
        let mut header = [0u8; VXLAN_HEADER_LEN];
        loop {
            let received = udp::recv_split(self.receiver.as_raw_fd(), &mut header, buf)?;
            if received.len < VXLAN_HEADER_LEN {
                self.drops.count(DropReason::BadVxlanHeader);
                continue;
            }
            let view = VxlanHeader::new_unchecked(&header[..]);
            if view.check().is_err() {
                self.drops.count(DropReason::BadVxlanHeader);
                continue;
            }
            if view.vni() != self.settings.vni {
                self.drops.count(DropReason::UnknownVni);
                continue;
            }
            if received.truncated {
                self.drops.count(DropReason::Oversize);
                continue;
            }
            let len = received.len - VXLAN_HEADER_LEN;
            *self.last_source() = EthernetFrame::new_checked(&buf[..len])
                .ok()
                .map(|frame| (frame.src_addr(), received.source));
            return Ok(len);
        }
    }

    fn send(&self, frame: &[u8]) -> io::Result<usize> {
        self.send_frame(&[frame])
    }

    fn send_parts(&self, head: &[u8], body: &[u8]) -> io::Result<usize> {
        self.send_frame(&[head, body])
    }

    fn send_vectored(&self, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let parts: Vec<&[u8]> = parts.iter().map(|part| &part[..]).collect();
        self.send_frame(&parts)
    }

    fn drain_drops(&self, into: &mut DropCounters) {
        self.drops.drain_into(into);
    }

    fn source_learned(&self, mac: MacAddr) {
        let last = self.last_source().take();
        if let Some((source, vtep)) = last
            && source == mac
        {
            self.learn(mac, vtep);
        }
    }

    fn remote_of(&self, mac: MacAddr) -> Option<IpAddr> {
        self.remote_vtep(mac).map(IpAddr::V4)
    }

    fn is_tunnel(&self) -> bool {
        true
    }

    fn pin_remote(&self, mac: MacAddr, vtep: Option<IpAddr>) -> Result<(), TunnelError> {
        let mut remotes = self.remotes();
        match vtep {
            Some(vtep) => {
                let vtep = self.ipv4(vtep)?;
                remotes.learned.remove(&mac);
                remotes.pinned.insert(mac, vtep);
            }
            None => {
                remotes.pinned.remove(&mac);
            }
        }
        Ok(())
    }

    fn set_flood_list(&self, vteps: &[IpAddr]) -> Result<(), TunnelError> {
        let flood = vteps
            .iter()
            .map(|&vtep| self.ipv4(vtep))
            .collect::<Result<Arc<[Ipv4Addr]>, _>>()?;
        self.remotes().flood = flood;
        Ok(())
    }
}
