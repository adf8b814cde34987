//! Writing one frame to one egress port: as it is, retagged, or (for a port
//! without offloads) segmented and checksummed in software; and what a failed
//! write means.

use std::io;
use std::ops::ControlFlow;

use tracing::warn;

use super::PortSlot;
use crate::forward::{DropReason, TagAction};
use crate::gso::Segmenter;
use crate::vnet::{Offload, PLAIN_HEADER, VNET_HDR_LEN, shift_frame_offsets};
use crate::wire::{ETHERTYPE_VLAN, EthernetFrame, HEADER_LEN, VLAN_TAG_LEN};

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
        // Handed over whole, its segments would be bigger than this port's
        // MTU allows a frame to be (software segmentation, below, cuts TCP to
        // fit a port without offloads instead).
        out_slot.counters.drops.count(DropReason::Oversize);
        return true;
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
    account_send(out_slot, result, out_len + out_hdr_len)
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
        TagAction::Push(vid) => (Some(vid), &frame[12..]),
        TagAction::SetVid(vid) => {
            let old_tci = u16::from_be_bytes([frame[14], frame[15]]);
            (Some((old_tci & 0xf000) | vid), &frame[HEADER_LEN + 2..])
        }
        TagAction::Pop => (None, &frame[HEADER_LEN + 2..]),
    };
    let mut tag_bytes = [0u8; VLAN_TAG_LEN];
    let tag_bytes: &[u8] = match new_tag {
        Some(tci) => {
            tag_bytes[..2].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
            tag_bytes[2..].copy_from_slice(&tci.to_be_bytes());
            &tag_bytes
        }
        None => &[],
    };
    let parts = [
        io::IoSlice::new(vnet),
        io::IoSlice::new(&frame[..12]),
        io::IoSlice::new(tag_bytes),
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
        _ => SendFailure::PortGone,
    }
}
