//! A VXLAN tunnel port (RFC 7348): Ethernet frames of one VNI carried in UDP
//! to and from remote VTEPs (Linux vxlan devices, other switches).
//!
//! The port has a vnet header, like a TAP: super-frames travel through the
//! switch whole, in both directions.
//!
//! Receive: one UDP socket bound to the local VTEP address, with `UDP_GRO`, so
//! one read may return a train of datagrams of one size (a sender's
//! `UDP_SEGMENT` train arrives so over veth). The train is kept in the port and
//! handed out by successive `recv`s: each datagram's VXLAN header is checked,
//! those of another VNI or malformed are counted (`unknown_vni`,
//! `bad_vxlan_header`) and skipped, and consecutive inner segments of one TCP
//! flow are coalesced into one super-frame (`gro::coalesce`) behind a vnet
//! header that lets the egress TAP's kernel take it as one. The inner source
//! MAC is learned as living behind the outer source address (unless the
//! control plane pinned it) only once the forwarding decision learned it
//! ([`Port::source_learned`]): a frame the decision drops before learning (port
//! security, a VLAN not carried, storm control) moves no remote MAC.
//!
//! Send: to the VTEP pinned for the destination MAC (`fdb add --remote`,
//! EVPN), else the one learned, else one copy to each remote of the flood list
//! (which EVPN replaces at runtime; head-end replication). A super-frame is cut
//! into its segments here (checksums complete: a Linux VTEP hands each inner
//! segment to its endpoint as it is) and their VXLAN datagrams go out as one
//! contiguous train per `sendmsg` with `UDP_SEGMENT` (at most 64 datagrams,
//! under 64 KiB: a 64 KiB super-frame is two messages of one `sendmmsg`); a
//! partial checksum of a plain frame is completed. The sending socket is one
//! of a pool bound to the local address on distinct source ports, picked by
//! the inner flow's hash, so that the underlay can spread flows and one flow
//! never changes port (nor overtakes itself). Where the kernel refuses
//! `UDP_SEGMENT` (no checksum offload on the route's device) the port falls
//! back, once and for good, to one datagram per record.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::warn;

use super::{Port, PortDrops, TunnelError};
use crate::dataplane::{DropCounters, TunnelCounters};
use crate::forward::DropReason;
use crate::gro;
use crate::gso::{Segmenter, complete_checksum};
use crate::sys::udp::{self, OutMessage, ReceivedTrain, UdpError};
use crate::vnet::{VNET_HDR_LEN, VnetHeader, shift_frame_offsets};
use crate::wire::vxlan::{VXLAN_HEADER_LEN, VxlanHeader, inner_flow_hash, vxlan_header};
use crate::wire::{ETHERTYPE_VLAN, EthernetFrame, MacAddr, VLAN_TAG_LEN};

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
    /// Send-only sockets on distinct source ports; a flow always uses the same one.
    senders: Vec<udp::Sender>,
    /// The kernel refused `UDP_SEGMENT` once: every datagram is sent on its own.
    gso_refused: AtomicBool,
    /// What the receive socket returned last, not yet handed out whole.
    train: Mutex<Train>,
    stats: Stats,
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
        if let Err(error) = udp::enable_gro(&receiver) {
            // Still correct without: every read is one datagram.
            warn!(port = %settings.name, %error, "UDP_GRO refused: one datagram per read");
        }
        let senders = (0..udp::SENDER_POOL_SIZE)
            .map(|_| udp::Sender::open(*settings.local.ip()))
            .collect::<Result<Vec<_>, _>>()?;
        let remotes = Remotes {
            flood: settings.remotes.iter().copied().collect(),
            ..Remotes::default()
        };
        Ok(VxlanPort {
            segments: Segments::of(&settings),
            settings,
            receiver,
            senders,
            gso_refused: AtomicBool::new(false),
            train: Mutex::new(Train {
                buf: vec![0; TRAIN_BUFFER_LEN].into_boxed_slice(),
                source: Ipv4Addr::UNSPECIFIED,
                frames: Vec::with_capacity(MAX_COALESCED),
                next: 0,
            }),
            stats: Stats::default(),
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

    /// Encapsulates the frame made of `parts` (behind its vnet header) and sends it
    /// where its destination lives, or to every remote: a super-frame cut into its
    /// segments, their VXLAN datagrams in `UDP_SEGMENT` trains.
    fn send_frame(&self, parts: &[&[u8]]) -> io::Result<usize> {
        SCRATCH.with_borrow_mut(|scratch| self.send_gathered(scratch, parts))
    }

    fn send_gathered(&self, scratch: &mut Scratch, parts: &[&[u8]]) -> io::Result<usize> {
        let Scratch {
            packet,
            records,
            segmenter,
        } = scratch;
        packet.clear();
        for part in parts {
            packet.extend_from_slice(part);
        }
        let len = packet.len().saturating_sub(VNET_HDR_LEN);
        let Some(vnet) = packet.get(..VNET_HDR_LEN) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        let mut vnet: [u8; VNET_HDR_LEN] = vnet.try_into().expect("VNET_HDR_LEN bytes");
        let vni = match &self.segments {
            Segments::One(vni) => *vni,
            Segments::Trunk { vni_of, .. } => {
                // The switch tags every frame for a trunk; the tag says the VNI and
                // stays behind.
                let vni = EthernetFrame::new_checked(&packet[VNET_HDR_LEN..])
                    .ok()
                    .and_then(|frame| frame.vlan())
                    .filter(|tag| tag.tpid == ETHERTYPE_VLAN)
                    .and_then(|tag| vni_of.get(&tag.vid).copied());
                let Some(vni) = vni else {
                    self.drops.count(DropReason::UnknownVni);
                    return Ok(len);
                };
                let tag = VNET_HDR_LEN + HEADER_ADDRESSES;
                packet.copy_within(tag + VLAN_TAG_LEN.., tag);
                packet.truncate(packet.len() - VLAN_TAG_LEN);
                shift_frame_offsets(&mut vnet, -(VLAN_TAG_LEN as isize));
                vni
            }
        };
        let frame = &mut packet[VNET_HDR_LEN..];
        let offload = VnetHeader::new(&vnet)
            .expect("VNET_HDR_LEN bytes")
            .validate(frame)
            // The dataplane validated it already; a frame the untagging made invalid
            // (a checksum inside the tag) is refused like one the device refuses.
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;

        let destination = EthernetFrame::new_checked(&*frame)
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
        // One socket per flow, for every frame of it: its source port is the flow's
        // entropy, and one flow never changes sockets (so never overtakes itself).
        let sender = &self.senders[inner_flow_hash(frame) as usize % self.senders.len()];
        let vxlan = vxlan_header(vni);

        records.clear();
        let record_size = match offload.segmentation {
            Some(layout) => {
                // Complete checksums on every segment: a Linux VTEP delivers what it
                // decapsulates as it is, and its endpoint must accept each segment.
                let mut first_record = None;
                let cut = segmenter.segment(frame, &layout, layout.gso_size, |segment| {
                    first_record.get_or_insert(VXLAN_HEADER_LEN + segment.len());
                    records.extend_from_slice(&vxlan);
                    records.extend_from_slice(segment);
                    ControlFlow::Continue(())
                });
                cut.map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
                self.stats.tx_super_frames.fetch_add(1, Ordering::Relaxed);
                // Every record but the last is as long as the first.
                first_record.unwrap_or(records.len()).max(1)
            }
            None => {
                if let Some(request) = offload.checksum {
                    complete_checksum(frame, request.start, request.offset);
                }
                records.extend_from_slice(&vxlan);
                records.extend_from_slice(frame);
                records.len()
            }
        };
        self.send_records(sender, destinations, records, record_size)?;
        Ok(len)
    }

    /// Sends `records` (equal records of `record_size` bytes, the last maybe shorter,
    /// each one VXLAN datagram) to each of `destinations` from `sender`: in trains of
    /// [`MAX_TRAIN_RECORDS`] and under [`MAX_TRAIN_BYTES`], one message per train and
    /// destination, all in one `sendmmsg`; one message per record once the kernel has
    /// refused `UDP_SEGMENT`. A destination the kernel refuses is skipped, the others
    /// still get their copy; an error only when nothing could be sent.
    fn send_records(
        &self,
        sender: &udp::Sender,
        destinations: &[Ipv4Addr],
        records: &[u8],
        record_size: usize,
    ) -> io::Result<()> {
        let port = self.settings.local.port();
        let messages_of = |segmented: bool| -> Vec<OutMessage<'_>> {
            let trains = train_bounds(records.len(), record_size, segmented);
            destinations
                .iter()
                .flat_map(|&remote| {
                    trains.iter().map(move |&(start, end)| OutMessage {
                        destination: SocketAddrV4::new(remote, port),
                        payload: &records[start..end],
                        segment_size: (end - start > record_size).then_some(record_size as u16),
                    })
                })
                .collect()
        };
        let mut messages = messages_of(!self.gso_refused.load(Ordering::Relaxed));
        let (mut next, mut delivered, mut first_error) = (0, 0, None);
        while next < messages.len() {
            // Trains with the kernel's outer checksum (`UDP_SEGMENT` needs one), single
            // datagrams with none; one source port either way.
            let socket = match messages[next].segment_size {
                Some(_) => &sender.checksummed,
                None => &sender.unchecksummed,
            };
            let same = messages[next..]
                .iter()
                .take_while(|m| m.segment_size.is_some() == messages[next].segment_size.is_some())
                .count();
            match udp::send_messages(socket.as_raw_fd(), &messages[next..next + same]) {
                Ok(sent) => {
                    self.count_sent(&messages[next..next + sent]);
                    delivered += sent;
                    next += sent;
                }
                Err(failed) => {
                    let at = next + failed.sent;
                    self.count_sent(&messages[next..at]);
                    delivered += failed.sent;
                    if failed.segmentation_refused() && messages[at].segment_size.is_some() {
                        // Detected once: no checksum offload on the route's device, or
                        // records longer than its MTU (the kernel then fragments each,
                        // sent without DF). From here on one datagram each.
                        if !self.gso_refused.swap(true, Ordering::Relaxed) {
                            warn!(port = %self.settings.name, error = %failed.error,
                                "the kernel refuses UDP_SEGMENT on this route: sending each \
                                 datagram as a message of its own from now on");
                        }
                        // What is left, one message per record: per destination, the
                        // bytes its trains so far carried are skipped (trains end on
                        // record boundaries).
                        let mut carried: HashMap<Ipv4Addr, usize> = HashMap::new();
                        for message in &messages[..at] {
                            *carried.entry(*message.destination.ip()).or_default() +=
                                message.payload.len();
                        }
                        let mut rest = messages_of(false);
                        rest.retain(|message| match carried.get_mut(message.destination.ip()) {
                            Some(left) if *left > 0 => {
                                *left = left.saturating_sub(message.payload.len());
                                false
                            }
                            _ => true,
                        });
                        messages = rest;
                        next = 0;
                        continue;
                    }
                    first_error.get_or_insert(failed.error);
                    next = at + 1;
                }
            }
        }
        match first_error {
            Some(error) if delivered == 0 => Err(error),
            _ => Ok(()),
        }
    }

    fn count_sent(&self, messages: &[OutMessage<'_>]) {
        for message in messages {
            let datagrams = match message.segment_size {
                Some(size) => {
                    self.stats.tx_gso_messages.fetch_add(1, Ordering::Relaxed);
                    message.payload.len().div_ceil(usize::from(size))
                }
                None => 1,
            };
            self.stats
                .tx_datagrams
                .fetch_add(datagrams as u64, Ordering::Relaxed);
        }
    }
}

/// Destination and source MAC: where a VLAN tag goes in.
const HEADER_ADDRESSES: usize = 12;

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
        VNET_HDR_LEN
    }

    /// The next frame of the train read last, behind its vnet header: consecutive
    /// segments of one TCP flow coalesced into one super-frame, anything else as it
    /// came. The socket is read again only once the train is handed out, so a frame
    /// is never left behind between the dataplane's turns.
    fn recv(&self, _queue: usize, buf: &mut [u8]) -> io::Result<usize> {
        let mut train = self.train();
        loop {
            if train.next < train.frames.len() {
                return Ok(self.hand_out(&mut train, buf));
            }
            train.frames.clear();
            train.next = 0;
            let received = udp::recv_gro(self.receiver.as_raw_fd(), &mut train.buf)?;
            self.split_train(&mut train, received);
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

    fn tunnel_counters(&self) -> Option<TunnelCounters> {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let stats = &self.stats;
        Some(TunnelCounters {
            tx_super_frames: read(&stats.tx_super_frames),
            tx_gso_messages: read(&stats.tx_gso_messages),
            tx_datagrams: read(&stats.tx_datagrams),
            tx_gso_refused: self.gso_refused.load(Ordering::Relaxed),
            rx_reads: read(&stats.rx_reads),
            rx_datagrams: read(&stats.rx_datagrams),
            rx_super_frames: read(&stats.rx_super_frames),
            rx_coalesced: read(&stats.rx_coalesced),
        })
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

impl VxlanPort {
    fn train(&self) -> MutexGuard<'_, Train> {
        self.train.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Splits what one read returned into its datagrams and keeps the inner frames of
    /// those with a good VXLAN header of a VNI the port carries; the others are counted
    /// (per datagram) and dropped.
    fn split_train(&self, train: &mut Train, received: ReceivedTrain) {
        train.source = received.source;
        let len = received.len.min(train.buf.len());
        let segment = received.segment_size.unwrap_or(len).max(1);
        if received.truncated && received.segment_size.is_none() {
            // One datagram longer than any frame: nothing of it is kept.
            self.drops.count(DropReason::Oversize);
            return;
        }
        let datagrams = len.div_ceil(segment).max(1);
        self.stats.rx_reads.fetch_add(1, Ordering::Relaxed);
        self.stats
            .rx_datagrams
            .fetch_add(datagrams as u64, Ordering::Relaxed);
        if len == 0 {
            // An empty datagram: not even a VXLAN header.
            self.drops.count(DropReason::BadVxlanHeader);
        }
        for start in (0..len).step_by(segment) {
            let end = (start + segment).min(len);
            if received.truncated && end == len && end - start < segment {
                // The tail of a train longer than the buffer: cut, so dropped.
                self.drops.count(DropReason::Oversize);
                break;
            }
            let datagram = &train.buf[start..end];
            let Some(view) = VxlanHeader::new_checked(datagram)
                .ok()
                .filter(|view| view.check().is_ok())
            else {
                self.drops.count(DropReason::BadVxlanHeader);
                continue;
            };
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
            train.frames.push(InnerFrame {
                start: start + VXLAN_HEADER_LEN,
                end,
                vlan,
            });
        }
    }

    /// Writes the next frame of `train` into `buf` behind its vnet header (coalesced
    /// with the frames after it of the same VLAN when [`gro::coalesce`] can), tagged
    /// for a trunk, and remembers its source for [`Port::source_learned`].
    fn hand_out(&self, train: &mut Train, buf: &mut [u8]) -> usize {
        let vlan = train.frames[train.next].vlan;
        let pending: Vec<&[u8]> = train.frames[train.next..]
            .iter()
            .take(MAX_COALESCED)
            .take_while(|frame| frame.vlan == vlan)
            .map(|frame| &train.buf[frame.start..frame.end])
            .collect();
        let run = gro::coalesce(&pending, buf);
        train.next += run.frames.max(1);
        if run.frames > 1 {
            self.stats.rx_super_frames.fetch_add(1, Ordering::Relaxed);
            self.stats
                .rx_coalesced
                .fetch_add(run.frames as u64, Ordering::Relaxed);
        }
        let mut len = run.len;
        let frame_len = len - VNET_HDR_LEN;
        match vlan {
            // Shorter than its addresses: left as read, a runt for the decision.
            Some(_) if frame_len < HEADER_ADDRESSES => {}
            Some(vlan) => {
                let tag = VNET_HDR_LEN + HEADER_ADDRESSES;
                buf.copy_within(tag..len, tag + VLAN_TAG_LEN);
                buf[tag..tag + VLAN_TAG_LEN].copy_from_slice(&[
                    0x81,
                    0x00,
                    (vlan >> 8) as u8,
                    vlan as u8,
                ]);
                let mut vnet: [u8; VNET_HDR_LEN] =
                    buf[..VNET_HDR_LEN].try_into().expect("VNET_HDR_LEN bytes");
                shift_frame_offsets(&mut vnet, VLAN_TAG_LEN as isize);
                buf[..VNET_HDR_LEN].copy_from_slice(&vnet);
                len += VLAN_TAG_LEN;
            }
            None => {}
        }
        *self.last_source() = EthernetFrame::new_checked(&buf[VNET_HDR_LEN..len])
            .ok()
            .map(|frame| (frame.src_addr(), train.source));
        len
    }
}

/// Where the trains of `len` bytes of records of `record_size` bytes start and end: at most
/// [`MAX_TRAIN_RECORDS`] records and under [`MAX_TRAIN_BYTES`] per train, or one record
/// each when not `segmented`.
fn train_bounds(len: usize, record_size: usize, segmented: bool) -> Vec<(usize, usize)> {
    let record_size = record_size.max(1);
    let per_train = if segmented {
        (MAX_TRAIN_BYTES / record_size).clamp(1, MAX_TRAIN_RECORDS)
    } else {
        1
    };
    let step = per_train * record_size;
    (0..len)
        .step_by(step)
        .map(|start| (start, (start + step).min(len)))
        .collect()
}

/// Frames one super-frame is coalesced from at most (a 64 KiB train holds 44 of 1450 bytes).
const MAX_COALESCED: usize = 64;

/// Longest train of datagrams one read returns: a `UDP_GRO` train stays under 64 KiB.
const TRAIN_BUFFER_LEN: usize = 65536;

/// Records (datagrams) in one `UDP_SEGMENT` message at most, and its payload bytes
/// below the largest UDP datagram (65535 - 20 - 8).
const MAX_TRAIN_RECORDS: usize = 64;
const MAX_TRAIN_BYTES: usize = 65507;

/// What one read of the receive socket returned, handed out frame by frame.
#[derive(Debug)]
struct Train {
    buf: Box<[u8]>,
    /// The outer source of every datagram of the train.
    source: Ipv4Addr,
    /// The inner frames kept, in order: `buf[start..end]`, and the VLAN of a trunk's VNI.
    frames: Vec<InnerFrame>,
    /// The first frame not yet handed out.
    next: usize,
}

#[derive(Debug, Clone, Copy)]
struct InnerFrame {
    start: usize,
    end: usize,
    vlan: Option<u16>,
}

/// A send's working buffers, one set per dataplane thread: the frame gathered (and
/// untagged for a trunk), its VXLAN records, the segmenter's own buffer.
struct Scratch {
    packet: Vec<u8>,
    records: Vec<u8>,
    segmenter: Segmenter,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        packet: Vec::with_capacity(TRAIN_BUFFER_LEN + VNET_HDR_LEN),
        records: Vec::with_capacity(2 * TRAIN_BUFFER_LEN),
        segmenter: Segmenter::new(),
    });
}

/// What the port did with super-frames and trains (counted from any thread).
#[derive(Debug, Default)]
struct Stats {
    tx_super_frames: AtomicU64,
    tx_gso_messages: AtomicU64,
    tx_datagrams: AtomicU64,
    rx_reads: AtomicU64,
    rx_datagrams: AtomicU64,
    rx_super_frames: AtomicU64,
    rx_coalesced: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_64k_super_frame_of_1410_byte_segments_is_two_trains() {
        // 65 536 bytes of TCP payload in segments of 1410: 47 segments, records of
        // VXLAN + Ethernet + IPv4 + TCP + 1410 bytes, the last shorter.
        let record = VXLAN_HEADER_LEN + 14 + 20 + 20 + 1410;
        let segments = 65_536usize.div_ceil(1410);
        let len = (segments - 1) * record + VXLAN_HEADER_LEN + 54 + 65_536 % 1410;
        let trains = train_bounds(len, record, true);
        assert_eq!(trains.len(), 2, "{trains:?}");
        for &(start, end) in &trains {
            assert!(end - start < MAX_TRAIN_BYTES && (end - start).div_ceil(record) <= 64);
            assert_eq!(start % record, 0, "a train starts on a record");
        }
        assert_eq!(trains[1].1, len);
        // One message per record once UDP_SEGMENT is refused.
        assert_eq!(train_bounds(len, record, false).len(), segments);
    }

    #[test]
    fn small_records_stop_at_64_per_train_and_one_record_is_one_train() {
        let trains = train_bounds(200 * 100, 100, true);
        assert_eq!(trains.len(), 4);
        assert!(trains.iter().all(|&(start, end)| end - start <= 64 * 100));
        assert_eq!(train_bounds(60, 60, true), [(0, 60)]);
        assert!(train_bounds(0, 60, true).is_empty());
    }
}
