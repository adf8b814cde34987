//! Oracles the fuzz targets share: what must hold for whatever the switch
//! accepted. They judge the switch's output with code that does not share its
//! parsing (etherparse, and sums written out word by word here), so a bug in
//! the switch is not excused by the same bug in the check.

use std::ops::ControlFlow;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use tapswitch::gso::Segmenter;
use tapswitch::vnet::{
    ChecksumRequest, IPV4_MIN_HEADER_LEN, IPV6_HEADER_LEN, IpVersion, Offload, Segmentation,
    TCP_MIN_HEADER_LEN, Transport, UDP_HEADER_LEN, VNET_HDR_LEN, VnetHeader, shift_frame_offsets,
};
use tapswitch::wire::{ETHERTYPE_VLAN, EthernetFrame, HEADER_LEN, VLAN_TAG_LEN};

/// Egress MTUs a port without offloads may have, from the smallest the
/// switch accepts to the largest.
pub const MTUS: [usize; 6] = [68, 576, 1280, 1500, 9000, 65535];

/// The one's-complement sum of `data` as big-endian 16-bit words, folded,
/// written the slow way (RFC 1071).
pub fn naive_sum(data: &[u8], start: u32) -> u16 {
    let mut sum = start;
    for pair in data.chunks(2) {
        let word = u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0));
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Length of the Ethernet header (with its outer tag) of `frame`, when it
/// is an Ethernet frame at all.
pub fn l2_header_len(frame: &[u8]) -> Option<usize> {
    EthernetFrame::new_checked(frame)
        .ok()
        .map(|view| view.header_len())
}

/// What a validated [`Offload`] promises about its frame: every offset it
/// names lies inside the frame, behind the Ethernet header (and its tag), so
/// acting on it cannot change what the forwarding decision was made on.
pub fn check_offload(frame: &[u8], offload: &Offload) {
    if let Some(ChecksumRequest { start, offset }) = offload.checksum {
        assert!(
            start + offset + 2 <= frame.len(),
            "checksum field {start}+{offset} outside the {}-byte frame",
            frame.len()
        );
        if let Some(l2) = l2_header_len(frame) {
            assert!(
                start >= l2,
                "checksum from {start} (field at +{offset}) covers the {l2}-byte Ethernet header"
            );
        }
    }
    if let Some(layout) = offload.segmentation {
        let l2 = l2_header_len(frame).expect("a super-frame is an Ethernet frame");
        assert_eq!(
            layout.l3_offset, l2,
            "IP starts right after the Ethernet header"
        );
        let ip_min = match layout.ip {
            IpVersion::V4 => IPV4_MIN_HEADER_LEN,
            IpVersion::V6 => IPV6_HEADER_LEN,
        };
        let l4_min = match layout.transport {
            Transport::Tcp => TCP_MIN_HEADER_LEN,
            Transport::Udp => UDP_HEADER_LEN,
        };
        assert!(layout.l4_offset >= layout.l3_offset + ip_min, "{layout:?}");
        assert!(layout.l4_header_len >= l4_min, "{layout:?}");
        assert!(
            layout.headers_len() <= frame.len(),
            "{layout:?} beyond the frame"
        );
        assert!(layout.gso_size >= 1);
        if let Some(request) = offload.checksum {
            assert_eq!(request.start, layout.l4_offset);
            assert_eq!(request.offset, layout.transport.checksum_offset());
        }
    }
}

/// Delivers `frame` as the dataplane does to a port without a vnet header and
/// an MTU of `mtu` (`dataplane::egress::send_with_software_offload`): segments or a
/// completed copy. Checks every frame that port would get. Returns the number
/// of frames emitted.
pub fn check_software_offload(
    segmenter: &mut Segmenter,
    frame: &[u8],
    offload: &Offload,
    mtu: usize,
) -> usize {
    if let Some(layout) = offload.segmentation {
        let max_payload = layout.max_payload_for_mtu(mtu);
        let mut segments: Vec<Vec<u8>> = Vec::new();
        let result = segmenter.segment(frame, &layout, max_payload, |segment| {
            segments.push(segment.to_vec());
            ControlFlow::Continue(())
        });
        match result {
            Ok(count) => assert_eq!(count, segments.len()),
            Err(error) => {
                assert!(segments.is_empty(), "{error} after emitting segments");
                assert!(
                    max_payload == 0
                        || (layout.transport == Transport::Udp && max_payload < layout.gso_size),
                    "segmentation refused without reason: {error} ({layout:?}, MTU {mtu})"
                );
                return 0;
            }
        }
        check_segments(
            frame,
            &layout,
            &segments,
            max_payload.min(layout.gso_size),
            mtu,
        );
        segments.len()
    } else if let Some(request) = offload.checksum {
        let complete = segmenter.with_checksum(frame, request).to_vec();
        check_completed_checksum(frame, request, &complete);
        1
    } else {
        1
    }
}

/// A copy with its checksum completed: the same bytes but the field, which
/// holds the complemented sum from `start` on.
fn check_completed_checksum(frame: &[u8], request: ChecksumRequest, complete: &[u8]) {
    let field = request.start + request.offset;
    assert_eq!(complete.len(), frame.len());
    assert_eq!(complete[..field], frame[..field]);
    assert_eq!(complete[field + 2..], frame[field + 2..]);
    let expected = match !naive_sum(&frame[request.start..], 0) {
        0 => 0xffff,
        sum => sum,
    };
    assert_eq!(
        u16::from_be_bytes([complete[field], complete[field + 1]]),
        expected,
        "completed checksum"
    );
}

/// Every segment is a well-formed frame within the MTU, its Ethernet header
/// that of the super-frame, its IP and transport lengths and checksums right
/// (as etherparse computes them), and the payloads join to the original.
fn check_segments(
    frame: &[u8],
    layout: &Segmentation,
    segments: &[Vec<u8>],
    step: usize,
    mtu: usize,
) {
    let l3 = layout.l3_offset;
    let headers_len = layout.headers_len();
    let payload = &frame[headers_len..];
    assert_eq!(segments.len(), payload.len().div_ceil(step).max(1));
    let first_seq = u32::from_be_bytes(frame[layout.l4_offset + 4..][..4].try_into().unwrap());
    let mut joined = Vec::with_capacity(payload.len());
    for (index, segment) in segments.iter().enumerate() {
        assert!(
            segment.len() - l3 <= mtu,
            "segment {index}: {} IP bytes on a {mtu}-byte MTU",
            segment.len() - l3
        );
        assert!(segment.len() <= mtu + HEADER_LEN + VLAN_TAG_LEN);
        assert_eq!(
            segment[..l3],
            frame[..l3],
            "segment {index}: Ethernet header changed"
        );
        let seg_payload = &segment[headers_len..];
        assert!(seg_payload.len() <= step);
        if index + 1 < segments.len() {
            assert_eq!(seg_payload.len(), step, "only the last segment is short");
        }
        check_segment(
            segment,
            layout,
            index,
            first_seq.wrapping_add(joined.len() as u32),
        );
        joined.extend_from_slice(seg_payload);
    }
    assert!(
        joined == payload,
        "the segments' payloads are not the super-frame's"
    );
}

fn check_segment(segment: &[u8], layout: &Segmentation, index: usize, seq: u32) {
    let l3 = layout.l3_offset;
    let packet = SlicedPacket::from_ethernet(segment)
        .unwrap_or_else(|e| panic!("segment {index} does not parse: {e}"));
    let (src, dst): (Vec<u8>, Vec<u8>) = match packet.net.as_ref() {
        Some(NetSlice::Ipv4(ipv4)) => {
            assert_eq!(layout.ip, IpVersion::V4);
            let header = ipv4.header();
            assert_eq!(usize::from(header.total_len()), segment.len() - l3);
            // Over the raw bytes: etherparse's own header type drops the
            // reserved flag bit, which a sender may set and segments keep.
            assert_eq!(naive_sum(header.slice(), 0), 0xffff, "IPv4 header checksum");
            assert_eq!(usize::from(header.ihl()) * 4 + l3, layout.l4_offset);
            (header.source().to_vec(), header.destination().to_vec())
        }
        Some(NetSlice::Ipv6(ipv6)) => {
            assert_eq!(layout.ip, IpVersion::V6);
            let header = ipv6.header();
            assert_eq!(
                usize::from(header.payload_length()),
                segment.len() - l3 - IPV6_HEADER_LEN
            );
            (header.source().to_vec(), header.destination().to_vec())
        }
        other => panic!("segment {index} is not IP: {other:?}"),
    };
    match packet.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            assert_eq!(layout.transport, Transport::Tcp);
            let checksum = match layout.ip {
                IpVersion::V4 => {
                    tcp.calc_checksum_ipv4(src.try_into().unwrap(), dst.try_into().unwrap())
                }
                IpVersion::V6 => {
                    tcp.calc_checksum_ipv6(src.try_into().unwrap(), dst.try_into().unwrap())
                }
            }
            .expect("a segment's length fits the pseudo-header");
            assert_eq!(tcp.checksum(), checksum, "TCP checksum of segment {index}");
            assert_eq!(
                tcp.sequence_number(),
                seq,
                "sequence number of segment {index}"
            );
        }
        Some(TransportSlice::Udp(udp)) => {
            assert_eq!(layout.transport, Transport::Udp);
            assert_eq!(usize::from(udp.length()), segment.len() - layout.l4_offset);
            let header = udp.to_header();
            let checksum = match layout.ip {
                IpVersion::V4 => header.calc_checksum_ipv4_raw(
                    src.try_into().unwrap(),
                    dst.try_into().unwrap(),
                    udp.payload(),
                ),
                IpVersion::V6 => header.calc_checksum_ipv6_raw(
                    src.try_into().unwrap(),
                    dst.try_into().unwrap(),
                    udp.payload(),
                ),
            }
            .expect("a segment's length fits the pseudo-header");
            assert_eq!(udp.checksum(), checksum, "UDP checksum of segment {index}");
        }
        other => panic!("segment {index} is not TCP or UDP: {other:?}"),
    }
}

/// A super-frame passed on to a port with a vnet header but a different VLAN
/// tagging keeps a header that still describes it: the dataplane
/// (`dataplane::egress::send_retagged`) pushes a tag after the source address, or pops
/// the outer 802.1Q tag, and moves the header's offsets with
/// [`shift_frame_offsets`]. The receiving kernel must find the same layout,
/// moved by the tag.
pub fn check_retagged_header(header: &[u8; VNET_HDR_LEN], frame: &[u8], offload: &Offload) {
    let Some(layout) = offload.segmentation else {
        return;
    };
    let tagged = EthernetFrame::new_checked(frame)
        .ok()
        .and_then(|view| view.vlan())
        .is_some_and(|tag| tag.tpid == ETHERTYPE_VLAN);
    let (moved, delta) = if tagged {
        let mut popped = frame[..12].to_vec();
        popped.extend_from_slice(&frame[HEADER_LEN + 2..]);
        (popped, -(VLAN_TAG_LEN as isize))
    } else {
        let mut pushed = frame[..12].to_vec();
        pushed.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        pushed.extend_from_slice(&7u16.to_be_bytes());
        pushed.extend_from_slice(&frame[12..]);
        (pushed, VLAN_TAG_LEN as isize)
    };
    let mut shifted = *header;
    shift_frame_offsets(&mut shifted, delta);
    let again = VnetHeader::new(&shifted)
        .expect("a whole header")
        .validate(&moved)
        .unwrap_or_else(|e| panic!("retagged ({delta:+}) super-frame no longer validates: {e}"));
    let moved_layout = again.segmentation.expect("still a super-frame");
    let shift = |offset: usize| offset.checked_add_signed(delta).unwrap();
    assert_eq!(moved_layout.l3_offset, shift(layout.l3_offset));
    assert_eq!(moved_layout.l4_offset, shift(layout.l4_offset));
    assert_eq!(moved_layout.l4_header_len, layout.l4_header_len);
    assert_eq!(moved_layout.gso_size, layout.gso_size);
    assert_eq!(
        again.checksum.map(|c| (c.start, c.offset)),
        offload.checksum.map(|c| (shift(c.start), c.offset))
    );
}

/// Validates `header` against `frame` and, when accepted, runs every oracle
/// for every MTU. Returns whether validation accepted it.
pub fn check_vnet(segmenter: &mut Segmenter, header: &[u8; VNET_HDR_LEN], frame: &[u8]) -> bool {
    let view = VnetHeader::new(header).expect("a whole header");
    let Ok(offload) = view.validate(frame) else {
        return false;
    };
    check_offload(frame, &offload);
    for mtu in MTUS {
        check_software_offload(segmenter, frame, &offload, mtu);
    }
    check_retagged_header(header, frame, &offload);
    true
}
