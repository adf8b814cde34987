//! Writing one frame to one egress port: as it is, retagged, or (for a port
//! without offloads) segmented and checksummed in software; and what a failed
//! write means.

use std::io;
use std::ops::ControlFlow;

use tracing::warn;

use super::PortSlot;
use crate::forward::{DropReason, TagAction};
use crate::gso::Segmenter;
use crate::vnet::{
    Offload, PLAIN_HEADER, TCP_MIN_GSO_SIZE, Transport, VNET_HDR_LEN, set_gso_size,
    shift_frame_offsets,
};
use crate::wire::{ETHERTYPE_VLAN, EthernetFrame, HEADER_LEN, VLAN_TAG_LEN, VlanTag};

/// Writes one frame to the port of `out_slot`, as `tag` says, and counts the
/// outcome there. `packet` is the frame as read, behind the ingress port's vnet
/// header of `in_hdr_len` bytes; `offload` is what that header asked for. False
/// when the port is gone and must be removed.
pub(super) fn send_to_port(
    segmenter: &mut Segmenter,
    out_slot: &mut PortSlot,
    packet: &[u8],
    in_hdr_len: usize,
    offload: &Offload,
    tag: TagAction,
) -> bool {
    let frame = &packet[in_hdr_len..];
    let is_gso = offload.segmentation.is_some();
    let out_hdr_len = out_slot.port.vnet_hdr_len();
    if let Some(layout) = offload.segmentation
        && out_hdr_len > 0
        && !layout.fits_mtu(out_slot.mtu as usize)
    {
        // Handed over whole, its segments would be bigger than this port's MTU
        // allows a frame to be. TCP can be cut finer than the sender asked (as
        // software segmentation does for a port without offloads): the same
        // super-frame goes out announcing segments that fit (an endpoint at 1500
        // behind a 1450 VXLAN port keeps working). UDP cannot: each `gso_size`
        // piece is one datagram.
        let finer = layout.max_payload_for_mtu(out_slot.mtu as usize);
        if layout.transport != Transport::Tcp
            || finer < TCP_MIN_GSO_SIZE
            || tag != TagAction::AsIs
            || in_hdr_len != VNET_HDR_LEN
            || out_hdr_len != VNET_HDR_LEN
        {
            out_slot.counters.drops.count(DropReason::Oversize);
            return true;
        }
        let mut header = [0u8; VNET_HDR_LEN];
        header.copy_from_slice(&packet[..VNET_HDR_LEN]);
        set_gso_size(&mut header, finer as u16);
        let result = out_slot.port.send_parts(&header, frame);
        return account_send(out_slot, result, frame.len());
    }
    let result = if out_hdr_len == 0 && !offload.is_plain() {
        // A port without offloads takes only complete, MTU-sized frames.
        if tag != TagAction::AsIs {
            // Segmenting and retagging at once is not built (yet).
            out_slot.counters.drops.count(DropReason::NeedsOffload);
            return true;
        }
        return send_with_software_offload(segmenter, out_slot, frame, offload);
    } else if tag != TagAction::AsIs || !is_gso {
        match send_retagged(out_slot, packet, in_hdr_len, is_gso, tag) {
            Some(result) => result,
            None => return true,
        }
    } else if out_hdr_len == in_hdr_len {
        out_slot.port.send(packet)
    } else {
        // A super-frame only comes from a port with a vnet header.
        out_slot.port.send_parts(&PLAIN_HEADER, frame)
    };
    let out_len = frame.len().saturating_add_signed(tag.len_change());
    // Bytes as the kernel counts them on the netdev (`ip -s link`): the frame, without
    // the vnet header in front of it.
    account_send(out_slot, result, out_len)
}

/// Counts the outcome of writing `len` bytes to `slot`; false when the port
/// is gone and must be removed.
pub(super) fn account_send(slot: &mut PortSlot, result: io::Result<usize>, len: usize) -> bool {
    match result {
        Ok(_) => {
            slot.counters.tx_frames += 1;
            slot.counters.tx_bytes += len as u64;
            true
        }
        Err(e) => match classify_send_error(&e) {
            SendFailure::Dropped(reason) => {
                slot.counters.drops.count(reason);
                true
            }
            SendFailure::PortGone => {
                warn!(port = slot.port.name(), error = %e, "writing failed; removing the port");
                slot.counters.drops.count(DropReason::TxError);
                false
            }
        },
    }
}

/// Gives a frame whose vnet header asked for offloads to a port without a
/// vnet header: a super-frame is cut into segments that fit the port's MTU,
/// a partial checksum is completed on a copy (the read buffer may still go
/// to other ports as it is). False when the port is gone.
pub(super) fn send_with_software_offload(
    segmenter: &mut Segmenter,
    slot: &mut PortSlot,
    frame: &[u8],
    offload: &Offload,
) -> bool {
    if let Some(layout) = offload.segmentation {
        let max_payload = layout.max_payload_for_mtu(slot.mtu as usize);
        let mut alive = true;
        let segmented = segmenter.segment(frame, &layout, max_payload, |segment| {
            let result = slot.port.send(segment);
            alive = account_send(slot, result, segment.len());
            if alive {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        });
        if segmented.is_err() {
            // The MTU leaves no room for payload, or UDP datagrams exceed it.
            slot.counters.drops.count(DropReason::NeedsOffload);
        }
        alive
    } else if let Some(request) = offload.checksum {
        let complete = segmenter.with_checksum(frame, request);
        let result = slot.port.send(complete);
        account_send(slot, result, complete.len())
    } else {
        let result = slot.port.send(frame);
        account_send(slot, result, frame.len())
    }
}

/// Writes a frame whose VLAN tag changes on the way out (pushed, popped or its VID
/// rewritten), or any complete frame, after checking it against the egress port's MTU.
/// The frame is gathered as [vnet header][addresses][new tag][rest] so that it is never
/// copied; a vnet header's frame offsets move with the tag. `None` when the frame was
/// dropped here (and counted on the egress port).
pub(super) fn send_retagged(
    out_slot: &mut PortSlot,
    packet: &[u8],
    in_hdr_len: usize,
    is_gso: bool,
    tag: TagAction,
) -> Option<io::Result<usize>> {
    let frame = &packet[in_hdr_len..];
    let view = EthernetFrame::new_unchecked(frame);
    let out_len = frame.len().saturating_add_signed(tag.len_change());
    let out_tagged = match tag {
        TagAction::AsIs => view.vlan().is_some(),
        TagAction::Push(_) | TagAction::SetVid(_) => true,
        TagAction::Pop => false,
    };
    let l2_header = HEADER_LEN + if out_tagged { VLAN_TAG_LEN } else { 0 };
    if !is_gso && out_len.saturating_sub(l2_header) > out_slot.mtu as usize {
        out_slot.counters.drops.count(DropReason::Oversize);
        return None;
    }
    // Frames needing offloads never reach here for a port without them
    // (the caller segments them in software).
    let out_hdr_len = out_slot.port.vnet_hdr_len();
    if tag == TagAction::AsIs {
        return Some(if out_hdr_len == in_hdr_len {
            out_slot.port.send(packet)
        } else if out_hdr_len == 0 {
            out_slot.port.send(frame)
        } else {
            out_slot.port.send_parts(&PLAIN_HEADER, frame)
        });
    }

    let mut vnet = PLAIN_HEADER;
    if out_hdr_len > 0 && in_hdr_len > 0 {
        vnet.copy_from_slice(&packet[..VNET_HDR_LEN]);
        shift_frame_offsets(&mut vnet, tag.len_change());
    }
    let vnet: &[u8] = if out_hdr_len > 0 { &vnet } else { &[] };
    let (new_tag, rest) = match tag {
        TagAction::AsIs => unreachable!("handled above"),
        TagAction::Push(vid) => (Some(VlanTag::dot1q(vid)), view.from_ethertype()),
        // The priority and DEI stay; the TPID becomes 802.1Q.
        TagAction::SetVid(vid) => {
            let old = view.vlan().unwrap_or(VlanTag::dot1q(0));
            let tag = VlanTag {
                tpid: ETHERTYPE_VLAN,
                vid,
                ..old
            };
            (Some(tag), view.after_vlan_tag())
        }
        TagAction::Pop => (None, view.after_vlan_tag()),
    };
    let tag_bytes = new_tag.map(|tag| tag.to_bytes());
    let parts = [
        io::IoSlice::new(vnet),
        io::IoSlice::new(view.addresses()),
        io::IoSlice::new(tag_bytes.as_ref().map_or(&[][..], |bytes| &bytes[..])),
        io::IoSlice::new(rest),
    ];
    Some(out_slot.port.send_vectored(&parts))
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum SendFailure {
    Dropped(DropReason),
    PortGone,
}

/// A TAP refuses one frame (bad vnet header, too big, queue full) with these
/// errors, and every frame while its netdev is down (EIO: a state, not a
/// failure); anything else (EBADFD after the device was deleted) means the
/// device itself is gone.
pub(super) fn classify_send_error(error: &io::Error) -> SendFailure {
    match error.raw_os_error() {
        Some(libc::EIO) => SendFailure::Dropped(DropReason::LinkDown),
        Some(libc::EAGAIN | libc::ENOBUFS | libc::ENOMEM) => {
            SendFailure::Dropped(DropReason::TxQueueFull)
        }
        Some(libc::EINVAL | libc::EMSGSIZE | libc::EFAULT) => {
            SendFailure::Dropped(DropReason::TxRejected)
        }
        Some(libc::EINTR) => SendFailure::Dropped(DropReason::TxQueueFull),
        // A tunnel port's underlay refusing one destination (no route, a
        // firewall, an ICMP error reported back): the socket is fine. A TAP
        // never returns these.
        Some(
            libc::ENETUNREACH
            | libc::EHOSTUNREACH
            | libc::ENETDOWN
            | libc::EHOSTDOWN
            | libc::ECONNREFUSED
            | libc::EPERM
            | libc::EACCES,
        ) => SendFailure::Dropped(DropReason::TxRejected),
        _ => SendFailure::PortGone,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::dataplane::PortCounters;
    use crate::dataplane::memory_port::MemoryPort;
    use crate::port::Port;
    use crate::vnet::VnetHeader;
    use crate::wire::Ipv4Packet;

    const TCP_HEADERS: usize = HEADER_LEN + 20 + 20;

    fn slot(port: &Arc<MemoryPort>, mtu: u32) -> PortSlot {
        let port: Arc<dyn Port> = Arc::clone(port) as Arc<dyn Port>;
        PortSlot {
            port,
            mtu,
            link_up: true,
            counters: PortCounters::default(),
            reads: 0,
            ready: 0,
        }
    }

    /// An untagged frame of a local experimental ethertype with `payload`.
    fn plain_frame(payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xb5];
        frame.extend_from_slice(payload);
        frame
    }

    /// `frame` with an 802.1Q tag of `tci` after its addresses.
    fn tagged(frame: &[u8], tci: u16) -> Vec<u8> {
        let view = EthernetFrame::new_unchecked(frame);
        let tag = VlanTag {
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            ..VlanTag::dot1q(tci & 0x0fff)
        };
        [view.addresses(), &tag.to_bytes(), view.from_ethertype()].concat()
    }

    /// A vnet header; `gso_type` 1 is TCPV4, flags 1 is NEEDS_CSUM.
    fn vnet_header(
        flags: u8,
        gso_type: u8,
        hdr_len: u16,
        gso_size: u16,
        csum: (u16, u16),
    ) -> Vec<u8> {
        let mut header = vec![flags, gso_type];
        for field in [hdr_len, gso_size, csum.0, csum.1, 0] {
            header.extend_from_slice(&field.to_le_bytes());
        }
        assert_eq!(header.len(), VNET_HDR_LEN);
        header
    }

    /// A TCP/IPv4 super-frame carrying `payload` in segments of `gso_size`,
    /// behind its vnet header (checksum pending, as a guest sends it).
    fn tcp_super_frame(payload: &[u8], gso_size: u16) -> Vec<u8> {
        let mut packet = vnet_header(1, 1, TCP_HEADERS as u16, gso_size, (34, 16));
        packet.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
        let total = (40 + payload.len()) as u16;
        packet.extend_from_slice(&[0x45, 0]);
        packet.extend_from_slice(&total.to_be_bytes());
        packet.extend_from_slice(&[0, 7, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        // Ports 1000 -> 2000, seq 1, ack 1, data offset 5, ACK|PSH, window 65535.
        packet.extend_from_slice(&[0x03, 0xe8, 0x07, 0xd0, 0, 0, 0, 1, 0, 0, 0, 1]);
        packet.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        packet.extend_from_slice(payload);
        packet
    }

    /// Writes `packet` (behind a vnet header of `in_hdr_len` bytes) as the worker
    /// does: its offload read from its header.
    fn send(out: &mut PortSlot, packet: &[u8], in_hdr_len: usize, tag: TagAction) -> bool {
        let offload = if in_hdr_len == 0 {
            Offload::PLAIN
        } else {
            VnetHeader::new(packet)
                .unwrap()
                .validate(&packet[in_hdr_len..])
                .unwrap()
        };
        send_to_port(
            &mut Segmenter::new(),
            out,
            packet,
            in_hdr_len,
            &offload,
            tag,
        )
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn a_super_frame_to_a_port_without_offloads_is_cut_to_its_mtu() {
        let port = Arc::new(MemoryPort::new("plain", 0));
        let mut out = slot(&port, 576);
        let data = payload(4000);
        assert!(send(
            &mut out,
            &tcp_super_frame(&data, 1448),
            VNET_HDR_LEN,
            TagAction::AsIs
        ));
        let segments = port.written();
        // 576 bytes of IP leave 536 of payload per segment.
        assert_eq!(segments.len(), 4000usize.div_ceil(536));
        let mut carried = Vec::new();
        for segment in &segments {
            assert!(segment.len() <= 576 + HEADER_LEN, "{}", segment.len());
            let ip = Ipv4Packet::new_checked(&segment[HEADER_LEN..]).unwrap();
            let ip_total = usize::from(ip.total_len());
            assert_eq!(ip_total, segment.len() - HEADER_LEN);
            carried.extend_from_slice(&segment[TCP_HEADERS..]);
        }
        assert_eq!(carried, data);
        assert_eq!(out.counters.tx_frames, segments.len() as u64);
        let bytes: usize = segments.iter().map(Vec::len).sum();
        assert_eq!(out.counters.tx_bytes, bytes as u64);
        assert_eq!(out.counters.drops.total(), 0);
    }

    #[test]
    fn retagging_pushes_rewrites_and_pops_the_tag() {
        let port = Arc::new(MemoryPort::new("trunk", 0));
        let mut out = slot(&port, 1500);
        let frame = plain_frame(&payload(100));
        // PCP 5 on VLAN 10: a rewrite keeps the priority.
        let priority_tagged = tagged(&frame, 0xa00a);
        assert!(send(&mut out, &frame, 0, TagAction::Push(10)));
        assert!(send(&mut out, &priority_tagged, 0, TagAction::SetVid(20)));
        assert!(send(&mut out, &priority_tagged, 0, TagAction::Pop));
        assert_eq!(
            port.written(),
            [tagged(&frame, 10), tagged(&frame, 0xa014), frame.clone()]
        );
        assert_eq!(out.counters.tx_frames, 3);
        assert_eq!(
            out.counters.tx_bytes,
            (frame.len() + 4 + frame.len() + 4 + frame.len()) as u64
        );
    }

    #[test]
    fn a_tag_behind_a_vnet_header_moves_its_frame_offsets() {
        let port = Arc::new(MemoryPort::new("vm", VNET_HDR_LEN));
        let mut out = slot(&port, 1500);
        let super_frame = tcp_super_frame(&payload(3000), 1448);
        assert!(send(
            &mut out,
            &super_frame,
            VNET_HDR_LEN,
            TagAction::Push(5)
        ));
        let written = port.written();
        let header = VnetHeader::new(&written[0]).unwrap();
        assert_eq!(header.hdr_len() as usize, TCP_HEADERS + VLAN_TAG_LEN);
        assert_eq!(header.csum_start(), 34 + VLAN_TAG_LEN as u16);
        assert_eq!(header.gso_size(), 1448);
        // Still a super-frame the port's owner can take as it is.
        let offload = header.validate(&written[0][VNET_HDR_LEN..]).unwrap();
        assert!(offload.segmentation.is_some());
        assert_eq!(
            written[0][VNET_HDR_LEN..],
            tagged(&super_frame[VNET_HDR_LEN..], 5)[..]
        );
    }

    #[test]
    fn headers_are_added_or_left_out_between_ports_with_and_without_vnet() {
        let frame = plain_frame(&payload(60));
        let with_header = [&PLAIN_HEADER[..], &frame].concat();

        let plain = Arc::new(MemoryPort::new("plain", 0));
        let mut to_plain = slot(&plain, 1500);
        assert!(send(
            &mut to_plain,
            &with_header,
            VNET_HDR_LEN,
            TagAction::AsIs
        ));
        let vm = Arc::new(MemoryPort::new("vm", VNET_HDR_LEN));
        let mut to_vm = slot(&vm, 1500);
        assert!(send(&mut to_vm, &frame, 0, TagAction::AsIs));
        assert_eq!(plain.written(), [frame.as_slice()]);
        assert_eq!(vm.written(), [with_header.as_slice()]);
        // Counted as `ip -s link` counts them: without the vnet header.
        assert_eq!(to_vm.counters.tx_bytes, frame.len() as u64);

        // A super-frame goes whole to a port with offloads...
        let super_frame = tcp_super_frame(&payload(3000), 1448);
        assert!(send(
            &mut to_vm,
            &super_frame,
            VNET_HDR_LEN,
            TagAction::AsIs
        ));
        assert_eq!(vm.written()[1], super_frame);
        // ...and, when its segments would not fit that port's MTU, announcing
        // segments that do (TCP is cut finer, the frame is unchanged),
        let mut to_small_vm = slot(&vm, 1000);
        assert!(send(
            &mut to_small_vm,
            &super_frame,
            VNET_HDR_LEN,
            TagAction::AsIs
        ));
        assert_eq!(to_small_vm.counters.drops.get(DropReason::Oversize), 0);
        let finer = &vm.written()[2];
        assert_eq!(finer[VNET_HDR_LEN..], super_frame[VNET_HDR_LEN..]);
        let header = VnetHeader::new(finer).unwrap();
        // 1000 bytes of IP leave 960 of TCP payload.
        assert_eq!(header.gso_size(), 960);
        assert!(
            VnetHeader::new(finer)
                .unwrap()
                .validate(&finer[VNET_HDR_LEN..])
                .is_ok()
        );
        // unless even the smallest TCP segment would not fit;
        let mut to_tiny_vm = slot(&vm, 100);
        assert!(send(
            &mut to_tiny_vm,
            &super_frame,
            VNET_HDR_LEN,
            TagAction::AsIs
        ));
        assert_eq!(to_tiny_vm.counters.drops.get(DropReason::Oversize), 1);
        // and is not both segmented and retagged for a port without them.
        assert!(send(
            &mut to_plain,
            &super_frame,
            VNET_HDR_LEN,
            TagAction::Push(3)
        ));
        assert_eq!(to_plain.counters.drops.get(DropReason::NeedsOffload), 1);
        assert_eq!(vm.written().len(), 3);
        assert_eq!(plain.written().len(), 1);
    }

    #[test]
    fn a_frame_over_the_mtu_is_dropped_as_oversize() {
        let port = Arc::new(MemoryPort::new("small", 0));
        let mut out = slot(&port, 100);
        assert!(send(
            &mut out,
            &plain_frame(&payload(100)),
            0,
            TagAction::AsIs
        ));
        // 101 bytes of payload once the tag is pushed: still 100 after the header and tag.
        assert!(send(
            &mut out,
            &plain_frame(&payload(100)),
            0,
            TagAction::Push(9)
        ));
        assert!(send(
            &mut out,
            &plain_frame(&payload(101)),
            0,
            TagAction::AsIs
        ));
        assert_eq!(port.written().len(), 2);
        assert_eq!(out.counters.drops.get(DropReason::Oversize), 1);
    }

    #[test]
    fn failed_writes_count_as_their_drop_reason_and_a_gone_device_says_so() {
        let port = Arc::new(MemoryPort::new("failing", 0));
        let mut out = slot(&port, 1500);
        let frame = plain_frame(&payload(60));
        for (errno, reason) in [
            (libc::EIO, DropReason::LinkDown),
            (libc::EAGAIN, DropReason::TxQueueFull),
            (libc::ENOBUFS, DropReason::TxQueueFull),
            (libc::EMSGSIZE, DropReason::TxRejected),
        ] {
            port.fail_writes_with(Some(errno));
            assert!(send(&mut out, &frame, 0, TagAction::AsIs), "{errno}");
            assert!(send(&mut out, &frame, 0, TagAction::Push(4)), "{errno}");
            assert_eq!(out.counters.drops.get(reason) % 2, 0, "{errno}");
        }
        assert_eq!(out.counters.drops.get(DropReason::LinkDown), 2);
        assert_eq!(out.counters.drops.get(DropReason::TxQueueFull), 4);
        assert_eq!(out.counters.drops.get(DropReason::TxRejected), 2);

        port.fail_writes_with(Some(libc::EBADFD));
        assert!(!send(&mut out, &frame, 0, TagAction::AsIs));
        // Segmenting stops at the first segment the gone device refuses.
        let super_frame = tcp_super_frame(&payload(4000), 1448);
        assert!(!send(&mut out, &super_frame, VNET_HDR_LEN, TagAction::AsIs));
        assert_eq!(out.counters.drops.get(DropReason::TxError), 2);
        assert_eq!((out.counters.tx_frames, out.counters.tx_bytes), (0, 0));
        assert!(port.written().is_empty());

        port.fail_writes_with(None);
        assert!(send(&mut out, &frame, 0, TagAction::AsIs));
        assert_eq!(port.written(), [frame]);
        assert_eq!(out.counters.tx_frames, 1);
    }

    proptest! {
        #[test]
        fn software_segments_carry_the_payload_in_order_within_the_mtu(
            len in 0usize..9000,
            // vnet validation refuses TCP segments below Linux's TCP_MIN_MSS (88).
            gso_size in 88u16..=1460,
            mtu in 100u32..=1500,
        ) {
            let port = Arc::new(MemoryPort::new("plain", 0));
            let mut out = slot(&port, mtu);
            let data = payload(len);
            prop_assert!(send(&mut out, &tcp_super_frame(&data, gso_size), VNET_HDR_LEN, TagAction::AsIs));
            let step = usize::from(gso_size).min(mtu as usize - 40);
            let segments = port.written();
            prop_assert_eq!(segments.len(), len.div_ceil(step).max(1));
            let mut carried = Vec::new();
            for (i, segment) in segments.iter().enumerate() {
                prop_assert!(segment.len() <= mtu as usize + HEADER_LEN);
                let chunk = &segment[TCP_HEADERS..];
                if i + 1 < segments.len() {
                    prop_assert_eq!(chunk.len(), step);
                }
                carried.extend_from_slice(chunk);
            }
            prop_assert_eq!(carried, data);
            prop_assert_eq!(out.counters.tx_frames, segments.len() as u64);
        }

        #[test]
        fn a_pushed_tag_popped_again_gives_the_frame_back(
            body in proptest::collection::vec(any::<u8>(), 0..1500),
            vid in 1u16..4095,
            in_vnet in any::<bool>(),
            mid_vnet in any::<bool>(),
            out_vnet in any::<bool>(),
        ) {
            let frame = plain_frame(&body);
            let hdr_len = |vnet: bool| if vnet { VNET_HDR_LEN } else { 0 };
            let with_header = |vnet: bool, frame: &[u8]| {
                if vnet { [&PLAIN_HEADER[..], frame].concat() } else { frame.to_vec() }
            };
            let trunk = Arc::new(MemoryPort::new("trunk", hdr_len(mid_vnet)));
            let mut to_trunk = slot(&trunk, 1500);
            prop_assert!(send(&mut to_trunk, &with_header(in_vnet, &frame), hdr_len(in_vnet), TagAction::Push(vid)));
            let on_trunk = trunk.written().pop().unwrap();
            prop_assert_eq!(&on_trunk[hdr_len(mid_vnet)..], &tagged(&frame, vid)[..]);

            let access = Arc::new(MemoryPort::new("access", hdr_len(out_vnet)));
            let mut to_access = slot(&access, 1500);
            prop_assert!(send(&mut to_access, &on_trunk, hdr_len(mid_vnet), TagAction::Pop));
            prop_assert_eq!(access.written(), [with_header(out_vnet, &frame)]);
        }
    }
}
