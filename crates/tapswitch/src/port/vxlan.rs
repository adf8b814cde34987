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
use crate::wire::{ETHERTYPE_VLAN, EthernetFrame, MacAddr, UDP_HEADER_LEN, VLAN_TAG_LEN};

/// Remote MACs a port remembers at most; beyond, new ones are flooded until
/// old ones age out.
pub const MAX_REMOTE_MACS: usize = 16_384;

/// What a VXLAN port is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSettings {
    pub name: String,
    /// The VNI of a port carrying one segment (its frames as they are); `None` for a trunk.
    pub vni: Option<u32>,
    /// A trunk's (VLAN, VNI) pairs: a frame of VNI v is handed to the switch tagged with
    /// its VLAN, and a frame the switch sends tagged with that VLAN leaves untagged in v.
    pub vlan_vni: Vec<(u16, u32)>,
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
    segments: Segments,
    receiver: UdpSocket,
    sender: OwnedFd,
    remotes: Mutex<Remotes>,
    /// The inner source MAC and outer source of the frame `recv` returned last,
    /// until the decision says whether it learned that MAC.
    last_source: Mutex<Option<(MacAddr, Ipv4Addr)>>,
    drops: PortDrops,
}

/// Which VNIs the port carries, looked up both ways once per frame.
#[derive(Debug)]
enum Segments {
    One(u32),
    Trunk {
        vlan_of: HashMap<u32, u16>,
        vni_of: HashMap<u16, u32>,
    },
}

impl Segments {
    fn of(settings: &VxlanSettings) -> Self {
        match settings.vni {
            Some(vni) if settings.vlan_vni.is_empty() => Segments::One(vni),
            _ => Segments::Trunk {
                vlan_of: settings
                    .vlan_vni
                    .iter()
                    .map(|&(vlan, vni)| (vni, vlan))
                    .collect(),
                vni_of: settings.vlan_vni.iter().copied().collect(),
            },
        }
    }
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
            segments: Segments::of(&settings),
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
        let untagged;
        let (vni, parts, head) = match &self.segments {
            Segments::One(vni) => (*vni, parts, &head[..filled]),
            Segments::Trunk { vni_of, .. } => {
                // The switch tags every frame for a trunk; the tag says the VNI and
                // stays behind.
                let vni = EthernetFrame::new_checked(&head[..filled])
                    .ok()
                    .and_then(|frame| frame.vlan())
                    .filter(|tag| tag.tpid == ETHERTYPE_VLAN)
                    .and_then(|tag| vni_of.get(&tag.vid).copied());
                let Some(vni) = vni else {
                    self.drops.count(DropReason::UnknownVni);
                    return Ok(len);
                };
                head.copy_within(TAG_END..filled, HEADER_ADDRESSES);
                filled -= VLAN_TAG_LEN;
                untagged = without_tag(&head[..HEADER_ADDRESSES], parts);
                (vni, &untagged[..], &head[..filled])
            }
        };
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
        let vxlan = vxlan_header(vni);
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

/// Destination and source MAC: where a VLAN tag goes in.
const HEADER_ADDRESSES: usize = 12;
/// Where the bytes after a VLAN tag start.
const TAG_END: usize = HEADER_ADDRESSES + VLAN_TAG_LEN;

/// `parts` without their bytes `HEADER_ADDRESSES..TAG_END` (the tag), `addresses`
/// standing for the bytes before it.
fn without_tag<'a>(addresses: &'a [u8], parts: &[&'a [u8]]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::with_capacity(parts.len() + 1);
    pieces.push(addresses);
    let mut offset = 0;
    for part in parts {
        let (start, end) = (offset, offset + part.len());
        offset = end;
        if end <= TAG_END {
            continue;
        }
        pieces.push(&part[TAG_END.saturating_sub(start)..]);
    }
    pieces
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
        // A trunk's frame is read a tag's length in, to make room for its VLAN's tag.
        let room = match self.segments {
            Segments::One(_) => 0,
            Segments::Trunk { .. } => VLAN_TAG_LEN,
        };
        loop {
            let received =
                udp::recv_split(self.receiver.as_raw_fd(), &mut header, &mut buf[room..])?;
            if received.len < VXLAN_HEADER_LEN {
                self.drops.count(DropReason::BadVxlanHeader);
                continue;
            }
            let view = VxlanHeader::new_unchecked(&header[..]);
            if view.check().is_err() {
                self.drops.count(DropReason::BadVxlanHeader);
                continue;
            }
            let vlan = match &self.segments {
                Segments::One(vni) if view.vni() == *vni => None,
                Segments::Trunk { vlan_of, .. } if vlan_of.contains_key(&view.vni()) => {
                    vlan_of.get(&view.vni()).copied()
                }
                _ => {
                    self.drops.count(DropReason::UnknownVni);
                    continue;
                }
            };
            if received.truncated {
                self.drops.count(DropReason::Oversize);
                continue;
            }
            let mut len = received.len - VXLAN_HEADER_LEN;
            match vlan {
                // Shorter than its addresses: left as read, a runt for the decision.
                Some(_) if len < HEADER_ADDRESSES => buf.copy_within(room..room + len, 0),
                Some(vlan) => {
                    buf.copy_within(room..room + HEADER_ADDRESSES, 0);
                    buf[HEADER_ADDRESSES..TAG_END].copy_from_slice(&[
                        0x81,
                        0x00,
                        (vlan >> 8) as u8,
                        vlan as u8,
                    ]);
                    len += VLAN_TAG_LEN;
                }
                None => {}
            }
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

#[cfg(test)]
mod tests {
    use super::{HEADER_ADDRESSES, without_tag};

    #[test]
    fn a_tag_is_left_out_wherever_the_parts_split_it() {
        let frame: Vec<u8> = (0..40).collect();
        let expected: Vec<u8> = (0..12).chain(16..40).collect();
        for first in 0..=frame.len() {
            for second in first..=frame.len() {
                let parts = [&frame[..first], &frame[first..second], &frame[second..]];
                let pieces = without_tag(&frame[..HEADER_ADDRESSES], &parts);
                assert_eq!(pieces.concat(), expected, "split at {first}, {second}");
            }
        }
    }
}
