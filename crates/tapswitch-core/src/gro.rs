//! Software GRO: the reverse of [`gso`](crate::gso). A train of TCP segments
//! (what a VXLAN port reads with `UDP_GRO`, one inner frame per datagram)
//! becomes one super-frame behind a vnet header, so that it costs one write
//! towards a port with offloads instead of one per segment. Pure, no I/O.
//!
//! The rules mirror Linux's `inet_gro_receive` / `ipv6_gro_receive` and
//! `tcp_gro_receive`, so a super-frame built here is one the kernel's own GRO
//! would have built, and segmenting it again (the kernel's GSO, or
//! [`Segmenter`](crate::gso::Segmenter)) gives back the segments it was made of:
//!
//! - one flow: the same Ethernet header (VLAN tag included), IPv4 without
//!   options or fragments and with the same TOS, TTL, DF and addresses, or IPv6
//!   without extension headers and with the same traffic class, flow label, hop
//!   limit and addresses; the same ports, ack number, window, urgent pointer,
//!   reserved bits and byte-identical options;
//! - IPv4 ids counting up by one from the first, or all equal with DF set
//!   (`ip_fixedid`, decided on the second segment, as Linux does);
//! - flags: the first carries ACK and nothing of SYN, RST, URG, PSH, FIN; a later
//!   one the first's flags except that CWR is the first's alone (so the header
//!   says ECN, as `tcp_gro_complete` does for a CWR), and PSH or FIN end the run
//!   after the segment carrying them (Linux merges both into the last);
//! - each sequence number follows the previous segment's payload; every payload
//!   is the first's length (`gso_size`, at least [`TCP_MIN_GSO_SIZE`]) but the
//!   last, which may be shorter and ends the run; an empty one never joins;
//! - IPv4 header and TCP checksums verify: a segment whose checksum fails is
//!   left alone, copied as it is, so the endpoint's stack drops and counts it;
//! - at most [`MAX_SEGMENTS`] segments and [`MAX_FRAME_LEN`] bytes.

use crate::vnet::{
    IpVersion, MAX_SEGMENTS, PLAIN_HEADER, Segmentation, TCP_MIN_GSO_SIZE, Transport, VNET_HDR_LEN,
};
use crate::wire::checksum::{fold, pseudo_header_sum, sum};
use crate::wire::{
    ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, EthernetFrame, HEADER_LEN, IPPROTO_TCP,
    IPV4_MIN_HEADER_LEN, IPV6_HEADER_LEN, Ipv4Packet, Ipv6Packet, TCP_MIN_HEADER_LEN, TcpSegment,
    VLAN_TAG_LEN, is_vlan_tpid, tcp_flags,
};

/// Longest super-frame [`coalesce`] builds, Ethernet header included: what
/// `out` is promised to hold behind the vnet header, and within the IP length
/// fields' 16 bits.
pub const MAX_FRAME_LEN: usize = 65535;

/// Flags that end a run after the segment carrying them: Linux merges them
/// into the super-frame's header and flushes it.
const ENDS_RUN: u8 = tcp_flags::FIN | tcp_flags::PSH;
/// Flags a run's first segment may not carry: with them Linux delivers a
/// segment at once (and a later one differs from the first, which flushes).
const NOT_FIRST: u8 = ENDS_RUN | tcp_flags::SYN | tcp_flags::RST | tcp_flags::URG;
/// Flags a later segment may differ from the first in.
const MAY_DIFFER: u8 = ENDS_RUN | tcp_flags::CWR;

/// What [`coalesce`] did: `frames` frames from the front of the train went
/// into the `len` bytes it wrote to `out`, vnet header included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub frames: usize,
    pub len: usize,
}

/// Coalesces the longest run at the front of `frames` (inner Ethernet frames,
/// no vnet header) that forms one TCP flow's consecutive segments with
/// verified checksums (the rules are in the module's doc) into one
/// super-frame, written to `out` as a vnet header (`GSO_TCPV4` or `GSO_TCPV6`,
/// ECN when the first segment has CWR, `NEEDS_CSUM`, `hdr_len`, `gso_size` the
/// first segment's payload, the checksum at the TCP header's) and the frame:
/// the first segment's headers with the lengths, the IPv4 header checksum and
/// PSH/FIN of the last segment fixed, the TCP checksum field holding the
/// pseudo-header sum, then every segment's payload. A run of 1 is the frame
/// copied as it is behind a plain (all-zero) vnet header.
///
/// `frames` is non-empty (an empty one gives a run of 0 and writes nothing);
/// `out` holds at least [`VNET_HDR_LEN`] + [`MAX_FRAME_LEN`] bytes.
///
/// # Panics
/// If the first frame alone does not fit `out` behind a vnet header.
pub fn coalesce(frames: &[&[u8]], out: &mut [u8]) -> Run {
    let Some(&first_frame) = frames.first() else {
        return Run { frames: 0, len: 0 };
    };
    let limit = MAX_FRAME_LEN.min(out.len().saturating_sub(VNET_HDR_LEN));
    let first = match Segment::parse(first_frame) {
        Some(first) if first.can_start_run() && first.frame.len() <= limit && first.verifies() => {
            first
        }
        _ => return alone(first_frame, out),
    };
    let gso_size = first.payload_len();
    let (mut count, mut len, mut last_flags) = (1, first.frame.len(), first.flags);
    let mut next_seq = first.seq.wrapping_add(gso_size as u32);
    let mut fixed_id = false;
    for &frame in &frames[1..] {
        if count == MAX_SEGMENTS {
            break;
        }
        let Some(segment) = Segment::parse(frame) else {
            break;
        };
        let payload = segment.payload_len();
        let joins = first.same_flow(&segment)
            && segment.seq == next_seq
            && (1..=gso_size).contains(&payload)
            && len + payload <= limit
            && first.id_follows(&segment, count, &mut fixed_id)
            && segment.verifies();
        if !joins {
            break;
        }
        count += 1;
        len += payload;
        next_seq = next_seq.wrapping_add(payload as u32);
        last_flags = segment.flags;
        if payload < gso_size || segment.flags & ENDS_RUN != 0 {
            break;
        }
    }
    if count == 1 {
        return alone(first_frame, out);
    }
    let layout = Segmentation {
        ip: first.ip,
        transport: Transport::Tcp,
        l3_offset: first.l3,
        l4_offset: first.l4,
        l4_header_len: first.headers_len - first.l4,
        gso_size,
    };
    let (header, body) = out.split_at_mut(VNET_HDR_LEN);
    header.copy_from_slice(&layout.vnet_header(first.flags & tcp_flags::CWR != 0));
    body[..first.frame.len()].copy_from_slice(first.frame);
    let mut at = first.frame.len();
    for frame in &frames[1..count] {
        // Every segment of the run has the first's header lengths.
        let payload = &frame[first.headers_len..];
        body[at..at + payload.len()].copy_from_slice(payload);
        at += payload.len();
    }
    let super_frame = &mut body[..len];
    let (l3, l4) = (first.l3, first.l4);
    let addresses = match first.ip {
        IpVersion::V4 => {
            let mut packet = Ipv4Packet::new_unchecked(&mut super_frame[l3..]);
            packet.set_total_len((len - l3) as u16);
            packet.fill_checksum();
            pseudo_header_sum(packet.addresses(), IPPROTO_TCP, len - l4)
        }
        IpVersion::V6 => {
            let mut packet = Ipv6Packet::new_unchecked(&mut super_frame[l3..]);
            packet.set_payload_len((len - l3 - IPV6_HEADER_LEN) as u16);
            pseudo_header_sum(packet.addresses(), IPPROTO_TCP, len - l4)
        }
    };
    let mut tcp = TcpSegment::new_unchecked(&mut super_frame[l4..]);
    tcp.set_flags(first.flags | (last_flags & ENDS_RUN));
    // What a sender's TSO frame carries for NEEDS_CSUM: the folded pseudo-header
    // sum, uncomplemented, for whoever completes the checksum.
    tcp.set_checksum(fold(addresses));
    Run {
        frames: count,
        len: VNET_HDR_LEN + len,
    }
}

/// A run of one: `frame` as it is behind a plain vnet header.
fn alone(frame: &[u8], out: &mut [u8]) -> Run {
    let len = VNET_HDR_LEN + frame.len();
    assert!(
        len <= out.len(),
        "a {}-byte frame does not fit a {}-byte output buffer behind its vnet header",
        frame.len(),
        out.len()
    );
    out[..VNET_HDR_LEN].copy_from_slice(&PLAIN_HEADER);
    out[VNET_HDR_LEN..len].copy_from_slice(frame);
    Run { frames: 1, len }
}

/// A frame parsed as a TCP segment GRO can consider: the checks that need no
/// other segment are done (checksums apart, which [`Segment::verifies`] does
/// last because they cost the most).
struct Segment<'a> {
    frame: &'a [u8],
    ip: IpVersion,
    l3: usize,
    l4: usize,
    /// Everything in front of the payload.
    headers_len: usize,
    seq: u32,
    flags: u8,
}

impl<'a> Segment<'a> {
    /// `frame` as an IPv4 (IHL 5, not a fragment) or IPv6 (no extension
    /// header) TCP segment, untagged or behind one 802.1Q tag, whose IP length
    /// field counts exactly the bytes after it (no Ethernet padding).
    fn parse(frame: &'a [u8]) -> Option<Self> {
        let ethernet = EthernetFrame::new_checked(frame).ok()?;
        let (l3, ethertype) = match ethernet.ethertype() {
            // Only the tag `VnetHeader::validate` accepts on a super-frame.
            ETHERTYPE_VLAN => (HEADER_LEN + VLAN_TAG_LEN, ethernet.inner_ethertype()),
            tpid if is_vlan_tpid(tpid) => return None,
            ethertype => (HEADER_LEN, ethertype),
        };
        let ip_len = frame.len() - l3;
        let ip = match ethertype {
            ETHERTYPE_IPV4 => {
                let packet = Ipv4Packet::new_checked(&frame[l3..]).ok()?;
                let plain = packet.version() == 4
                    && packet.header_len() == IPV4_MIN_HEADER_LEN
                    && usize::from(packet.total_len()) == ip_len
                    && !packet.reserved_flag()
                    && !packet.more_fragments()
                    && packet.fragment_offset() == 0
                    && packet.protocol() == IPPROTO_TCP;
                plain.then_some(IpVersion::V4)?
            }
            ETHERTYPE_IPV6 => {
                let packet = Ipv6Packet::new_checked(&frame[l3..]).ok()?;
                let plain = packet.version() == 6
                    && usize::from(packet.payload_len()) + IPV6_HEADER_LEN == ip_len
                    && packet.next_header() == IPPROTO_TCP;
                plain.then_some(IpVersion::V6)?
            }
            _ => return None,
        };
        let l4 = l3
            + match ip {
                IpVersion::V4 => IPV4_MIN_HEADER_LEN,
                IpVersion::V6 => IPV6_HEADER_LEN,
            };
        let tcp = TcpSegment::new_checked(&frame[l4..]).ok()?;
        debug_assert!(tcp.header_len() >= TCP_MIN_HEADER_LEN);
        Some(Segment {
            frame,
            ip,
            l3,
            l4,
            headers_len: l4 + tcp.header_len(),
            seq: tcp.seq_number(),
            flags: tcp.flags(),
        })
    }

    fn payload_len(&self) -> usize {
        self.frame.len() - self.headers_len
    }

    fn ipv4(&self) -> Ipv4Packet<&'a [u8]> {
        Ipv4Packet::new_unchecked(&self.frame[self.l3..])
    }

    fn ipv6(&self) -> Ipv6Packet<&'a [u8]> {
        Ipv6Packet::new_unchecked(&self.frame[self.l3..])
    }

    fn tcp(&self) -> TcpSegment<&'a [u8]> {
        TcpSegment::new_unchecked(&self.frame[self.l4..])
    }

    /// Whether a run may start here: a plain ACK-carrying data segment whose
    /// payload the vnet header can name as `gso_size`.
    fn can_start_run(&self) -> bool {
        self.flags & tcp_flags::ACK != 0
            && self.flags & NOT_FIRST == 0
            && self.payload_len() >= TCP_MIN_GSO_SIZE
    }

    /// Whether `later` belongs to this (first) segment's flow and flags allow
    /// it to join after it: everything but lengths, ids, sequence number and
    /// checksums equal, flags but FIN, PSH and (on this one only) CWR.
    fn same_flow(&self, later: &Segment<'_>) -> bool {
        let ethernet_equal =
            self.l3 == later.l3 && self.frame[..self.l3] == later.frame[..later.l3];
        let ip_equal = self.ip == later.ip
            && match self.ip {
                IpVersion::V4 => {
                    let (a, b) = (self.ipv4(), later.ipv4());
                    a.tos() == b.tos()
                        && a.ttl() == b.ttl()
                        && a.dont_fragment() == b.dont_fragment()
                        && a.addresses() == b.addresses()
                }
                IpVersion::V6 => {
                    let (a, b) = (self.ipv6(), later.ipv6());
                    a.traffic_class() == b.traffic_class()
                        && a.flow_label() == b.flow_label()
                        && a.hop_limit() == b.hop_limit()
                        && a.addresses() == b.addresses()
                }
            };
        let (a, b) = (self.tcp(), later.tcp());
        let tcp_equal = a.src_port() == b.src_port()
            && a.dst_port() == b.dst_port()
            && a.ack_number() == b.ack_number()
            && a.header_len() == b.header_len()
            && a.reserved_bits() == b.reserved_bits()
            && a.window() == b.window()
            && a.urgent_pointer() == b.urgent_pointer()
            && a.options() == b.options();
        let flags_fit =
            (self.flags ^ later.flags) & !MAY_DIFFER == 0 && later.flags & tcp_flags::CWR == 0;
        ethernet_equal && ip_equal && tcp_equal && flags_fit
    }

    /// Whether `later`, which would be segment `index` of the run, has the IPv4
    /// id it needs: the first's + `index`, or the first's when the run's ids are
    /// fixed, which the second segment decides (equal to the first's with DF
    /// set), as Linux's `inet_gro_flush` does. IPv6 has no id.
    fn id_follows(&self, later: &Segment<'_>, index: usize, fixed_id: &mut bool) -> bool {
        if self.ip == IpVersion::V6 {
            return true;
        }
        let offset = later.ipv4().ident().wrapping_sub(self.ipv4().ident());
        if index == 1 {
            *fixed_id = offset == 0 && self.ipv4().dont_fragment();
        }
        if *fixed_id {
            offset == 0
        } else {
            offset == index as u16
        }
    }

    /// Whether the IPv4 header checksum and the TCP checksum verify.
    fn verifies(&self) -> bool {
        let tcp_len = self.frame.len() - self.l4;
        let pseudo = match self.ip {
            IpVersion::V4 => {
                let header = &self.frame[self.l3..self.l4];
                if fold(sum(header, 0)) != 0xffff {
                    return false;
                }
                pseudo_header_sum(self.ipv4().addresses(), IPPROTO_TCP, tcp_len)
            }
            IpVersion::V6 => pseudo_header_sum(self.ipv6().addresses(), IPPROTO_TCP, tcp_len),
        };
        fold(sum(&self.frame[self.l4..], pseudo)) == 0xffff
    }
}

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;

    use proptest::prelude::*;

    use super::*;
    use crate::gso::Segmenter;
    use crate::gso::test_frames::{FIRST_SEQ, Shape};
    use crate::vnet::VnetHeader;

    const OUT_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 11 + i / 253) as u8).collect()
    }

    fn tcp_shape(ip: IpVersion, vlan: bool, all_flags: bool) -> Shape {
        Shape {
            all_flags,
            ..Shape::new(ip, Transport::Tcp, vlan)
        }
    }

    /// The super-frame `shape` with `data` as its payload, as a sender's
    /// kernel hands it over (etherparse-built), cut by the GSO code into
    /// `mss`-byte segments (validated with a larger `gso_size` when `mss` is
    /// small, so that more than `MAX_SEGMENTS` segments can be made).
    fn segments(shape: Shape, data: &[u8], mss: u16) -> Vec<Vec<u8>> {
        let frame = shape.partial_frame(data);
        let header = shape.gso_header(mss.max(1448));
        let layout = VnetHeader::new(&header)
            .unwrap()
            .validate(&frame)
            .unwrap()
            .segmentation
            .unwrap();
        let mut segments = Vec::new();
        Segmenter::new()
            .segment(&frame, &layout, usize::from(mss), |segment| {
                segments.push(segment.to_vec());
                ControlFlow::Continue(())
            })
            .unwrap();
        segments
    }

    fn coalesced(frames: &[Vec<u8>]) -> (Run, Vec<u8>) {
        let views: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let mut out = vec![0xaa; OUT_LEN];
        let run = coalesce(&views, &mut out);
        out.truncate(run.len);
        (run, out)
    }

    /// Folds `data` word by word (independently of `wire::checksum`).
    fn naive_sum(data: &[u8], mut sum: u32) -> u16 {
        for pair in data.chunks(2) {
            sum += u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// Rewrites the IPv4 header and TCP checksums of a segment that a test changed.
    fn refresh(shape: Shape, frame: &mut [u8]) {
        let (l3, l4) = (shape.l3_offset(), shape.l4_offset());
        if shape.ip == IpVersion::V4 {
            frame[l3 + 10..l3 + 12].fill(0);
            let checksum = !naive_sum(&frame[l3..l4], 0);
            frame[l3 + 10..l3 + 12].copy_from_slice(&checksum.to_be_bytes());
        }
        frame[l4 + 16..l4 + 18].fill(0);
        let pseudo =
            crate::gso::test_frames::naive_pseudo_header_sum(frame, l3, shape.ip, Transport::Tcp);
        let checksum = !naive_sum(&frame[l4..], u32::from(pseudo));
        frame[l4 + 16..l4 + 18].copy_from_slice(&checksum.to_be_bytes());
    }

    /// Cuts a segment's payload to `len` bytes, lengths and checksums fixed.
    fn cut_payload(shape: Shape, frame: &mut Vec<u8>, len: usize) {
        let l3 = shape.l3_offset();
        frame.truncate(shape.headers_len() + len);
        let (field, ip_len) = match shape.ip {
            IpVersion::V4 => (l3 + 2, frame.len() - l3),
            IpVersion::V6 => (l3 + 4, frame.len() - l3 - IPV6_HEADER_LEN),
        };
        frame[field..field + 2].copy_from_slice(&(ip_len as u16).to_be_bytes());
        refresh(shape, frame);
    }

    /// Asserts that `out` is the super-frame of `data` (the payload of the
    /// first segments) that the sender's kernel would have handed over, and
    /// that the vnet header validates against it.
    fn assert_super_frame(shape: Shape, out: &[u8], data: &[u8], mss: u16) {
        assert_eq!(out[..VNET_HDR_LEN], shape.gso_header(mss), "vnet header");
        assert_eq!(out[VNET_HDR_LEN..], shape.partial_frame(data)[..], "frame");
        let offload = VnetHeader::new(out).unwrap().validate(&out[VNET_HDR_LEN..]);
        let layout = offload.unwrap().segmentation.unwrap();
        assert_eq!(layout.gso_size, usize::from(mss));
    }

    /// A plain train of ten 1000-byte segments and its payload.
    fn ten(shape: Shape) -> (Vec<Vec<u8>>, Vec<u8>) {
        let data = payload(10_000);
        (segments(shape, &data, 1000), data)
    }

    fn v4() -> Shape {
        tcp_shape(IpVersion::V4, false, false)
    }

    #[test]
    fn every_shape_coalesces_back_into_its_super_frame() {
        for ip in [IpVersion::V4, IpVersion::V6] {
            for vlan in [false, true] {
                for all_flags in [false, true] {
                    let shape = tcp_shape(ip, vlan, all_flags);
                    let data = payload(45 * 1448 - 300);
                    let frames = segments(shape, &data, 1448);
                    assert_eq!(frames.len(), 45);
                    let (run, out) = coalesced(&frames);
                    assert_eq!(run.frames, 45, "{shape:?}");
                    assert_eq!(run.len, VNET_HDR_LEN + shape.headers_len() + data.len());
                    assert_super_frame(shape, &out, &data, 1448);
                }
            }
        }
    }

    /// `frames` coalesce into a run of the first `count` with the payload's
    /// first `taken` bytes; returns the run.
    fn assert_prefix(shape: Shape, frames: &[Vec<u8>], data: &[u8], count: usize) {
        let (run, out) = coalesced(frames);
        assert_eq!(run.frames, count, "run length");
        assert_super_frame(shape, &out, &data[..count * 1000], 1000);
    }

    fn assert_alone(frames: &[Vec<u8>]) {
        let (run, out) = coalesced(frames);
        assert_eq!(
            run,
            Run {
                frames: 1,
                len: VNET_HDR_LEN + frames[0].len()
            }
        );
        assert_eq!(out[..VNET_HDR_LEN], PLAIN_HEADER);
        assert_eq!(out[VNET_HDR_LEN..], frames[0][..]);
    }

    #[test]
    fn a_bad_ipv4_header_checksum_stays_alone() {
        let shape = v4();
        let (mut frames, data) = ten(shape);
        frames[4][shape.l3_offset() + 10] ^= 1;
        assert_prefix(shape, &frames, &data, 4);
        assert_alone(&frames[4..]);
        assert_eq!(coalesced(&frames[5..]).0.frames, 5);
    }

    #[test]
    fn a_bad_tcp_checksum_stays_alone() {
        for ip in [IpVersion::V4, IpVersion::V6] {
            let shape = tcp_shape(ip, false, false);
            let (mut frames, data) = ten(shape);
            *frames[0].last_mut().unwrap() ^= 0x40;
            assert_alone(&frames);
            assert_eq!(coalesced(&frames[1..]).0.frames, 9);
            frames[7][shape.headers_len() + 3] ^= 1;
            assert_eq!(coalesced(&frames[1..]).0.frames, 6);
            let (mut frames, _) = ten(shape);
            frames[7][shape.l4_offset() + 17] ^= 1;
            assert_prefix(shape, &frames, &data, 7);
        }
    }

    #[test]
    fn a_gap_in_sequence_numbers_ends_the_run() {
        let shape = v4();
        let (mut frames, data) = ten(shape);
        let seq = shape.l4_offset() + 4;
        frames[3][seq + 3] = frames[3][seq + 3].wrapping_add(1);
        refresh(shape, &mut frames[3]);
        assert_prefix(shape, &frames, &data, 3);
        // The same segment again (a retransmission) does not join either.
        let (mut frames, data) = ten(shape);
        frames[3] = frames[2].clone();
        assert_prefix(shape, &frames, &data, 3);
    }

    #[test]
    fn a_differing_field_ends_the_run() {
        let shape = tcp_shape(IpVersion::V4, true, false);
        let (l3, l4) = (shape.l3_offset(), shape.l4_offset());
        let fields = [
            ("destination MAC", 5),
            ("source MAC", 11),
            ("VLAN id", 15),
            ("TOS", l3 + 1),
            ("TTL", l3 + 8),
            ("source address", l3 + 15),
            ("destination address", l3 + 19),
            ("source port", l4 + 1),
            ("destination port", l4 + 3),
            ("ack number", l4 + 11),
            ("reserved bits", l4 + 12),
            ("window", l4 + 15),
            ("urgent pointer", l4 + 19),
            ("timestamp option", l4 + 31),
        ];
        for (name, at) in fields {
            let (mut frames, data) = ten(shape);
            frames[5][at] ^= 1;
            refresh(shape, &mut frames[5]);
            let (run, out) = coalesced(&frames);
            assert_eq!(run.frames, 5, "{name}");
            assert_super_frame(shape, &out, &data[..5000], 1000);
        }
    }

    #[test]
    fn ipv6_fields_that_differ_end_the_run() {
        let shape = tcp_shape(IpVersion::V6, false, false);
        let l3 = shape.l3_offset();
        for (name, at) in [
            ("traffic class", l3),
            ("flow label", l3 + 3),
            ("hop limit", l3 + 7),
            ("source", l3 + 23),
            ("destination", l3 + 39),
        ] {
            let (mut frames, data) = ten(shape);
            frames[5][at] ^= 1;
            refresh(shape, &mut frames[5]);
            let (run, out) = coalesced(&frames);
            assert_eq!(run.frames, 5, "{name}");
            assert_super_frame(shape, &out, &data[..5000], 1000);
        }
    }

    /// Sets `flags` on segment `index` of a ten-segment train.
    fn with_flags(shape: Shape, index: usize, flags: u8) -> (Vec<Vec<u8>>, Vec<u8>) {
        let (mut frames, data) = ten(shape);
        frames[index][shape.l4_offset() + 13] |= flags;
        refresh(shape, &mut frames[index]);
        (frames, data)
    }

    #[test]
    fn fin_or_psh_in_the_middle_joins_and_ends_the_run() {
        for flag in [
            tcp_flags::FIN,
            tcp_flags::PSH,
            tcp_flags::FIN | tcp_flags::PSH,
        ] {
            let shape = v4();
            let (frames, data) = with_flags(shape, 2, flag);
            let (run, out) = coalesced(&frames);
            assert_eq!(run.frames, 3);
            let mut expected = shape.partial_frame(&data[..3000]);
            expected[shape.l4_offset() + 13] |= flag;
            assert_eq!(out[VNET_HDR_LEN..], expected[..]);
            assert_eq!(coalesced(&frames[3..]).0.frames, 7);
        }
    }

    #[test]
    fn syn_rst_urg_and_a_later_cwr_end_the_run_before_their_segment() {
        for flag in [
            tcp_flags::SYN,
            tcp_flags::RST,
            tcp_flags::URG,
            tcp_flags::CWR,
        ] {
            let shape = v4();
            let (frames, data) = with_flags(shape, 2, flag);
            assert_prefix(shape, &frames, &data, 2);
        }
        // ECE on one segment only differs from the first.
        let (frames, data) = with_flags(v4(), 6, tcp_flags::ECE);
        assert_prefix(v4(), &frames, &data, 6);
    }

    #[test]
    fn a_first_segment_with_syn_rst_urg_psh_or_fin_or_without_ack_is_alone() {
        for flag in [
            tcp_flags::SYN,
            tcp_flags::RST,
            tcp_flags::URG,
            tcp_flags::PSH,
            tcp_flags::FIN,
        ] {
            assert_alone(&with_flags(v4(), 0, flag).0);
        }
        let (mut frames, _) = ten(v4());
        frames[0][v4().l4_offset() + 13] &= !tcp_flags::ACK;
        refresh(v4(), &mut frames[0]);
        assert_alone(&frames);
    }

    #[test]
    fn cwr_on_the_first_segment_sets_the_ecn_bit() {
        for ip in [IpVersion::V4, IpVersion::V6] {
            let shape = tcp_shape(ip, false, false);
            let (frames, data) = with_flags(shape, 0, tcp_flags::CWR);
            let (run, out) = coalesced(&frames);
            assert_eq!(run.frames, 10);
            let ecn = tcp_shape(ip, false, true).gso_header(1000)[1];
            let mut header = shape.gso_header(1000);
            header[1] = ecn;
            assert_eq!(out[..VNET_HDR_LEN], header);
            let mut expected = shape.partial_frame(&data);
            expected[shape.l4_offset() + 13] |= tcp_flags::CWR;
            assert_eq!(out[VNET_HDR_LEN..], expected[..]);
        }
    }

    #[test]
    fn a_vlan_tagged_flow_coalesces_and_another_vlan_does_not_join() {
        let shape = tcp_shape(IpVersion::V6, true, false);
        let (mut frames, data) = ten(shape);
        assert_prefix(shape, &frames, &data, 10);
        frames[8][14] ^= 0x01;
        assert_prefix(shape, &frames, &data, 8);
        // A Q-in-Q outer tag is not one a super-frame may carry.
        let (mut frames, _) = ten(shape);
        for frame in &mut frames {
            frame[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
        }
        assert_alone(&frames);
    }

    #[test]
    fn a_mixed_train_coalesces_only_its_prefix() {
        let shape = v4();
        let (a, data) = ten(shape);
        let (mut b, _) = ten(tcp_shape(IpVersion::V6, false, false));
        b.truncate(3);
        let train: Vec<Vec<u8>> = a[..4].iter().chain(&b).chain(&a[4..]).cloned().collect();
        assert_prefix(shape, &train, &data, 4);
        assert_eq!(coalesced(&train[4..]).0.frames, 3);
        // What follows the other flow is not consecutive with it.
        assert_eq!(coalesced(&train[7..]).0.frames, 6);
    }

    #[test]
    fn frames_that_are_not_tcp_stay_alone() {
        for ip in [IpVersion::V4, IpVersion::V6] {
            let udp = Shape::new(ip, Transport::Udp, false);
            let datagrams = vec![udp.complete_frame(&payload(1000)); 3];
            assert_alone(&datagrams);
        }
        // An ARP request (the untagged frame of `wire`'s tests, padded) and a runt.
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        arp.resize(60, 0);
        assert_alone(&[arp.clone(), arp]);
        assert_alone(&[vec![1, 2, 3]]);
        // IPv4 with options, a fragment.
        let shape = v4();
        let (mut frames, _) = ten(shape);
        frames[0][shape.l3_offset() + 6] |= 0x20;
        refresh(shape, &mut frames[0]);
        assert_alone(&frames);
    }

    #[test]
    fn no_zero_payload_segment_is_coalesced() {
        let shape = v4();
        let ack = shape.complete_frame(&[]);
        let (frames, data) = ten(shape);
        assert_alone(&[ack.clone(), frames[0].clone()]);
        // A pure ACK right behind two segments, with their next sequence number and id.
        let mut late_ack = frames[2].clone();
        cut_payload(shape, &mut late_ack, 0);
        let train = vec![frames[0].clone(), frames[1].clone(), late_ack];
        assert_prefix(shape, &train, &data, 2);
    }

    #[test]
    fn a_short_segment_ends_the_run_and_a_longer_one_never_joins() {
        let shape = v4();
        let (mut frames, data) = ten(shape);
        cut_payload(shape, &mut frames[3], 500);
        let (run, out) = coalesced(&frames);
        assert_eq!(run.frames, 4);
        assert_super_frame(shape, &out, &data[..3500], 1000);

        // A 500-byte first segment makes gso_size 500: a 1000-byte one cannot follow.
        let (mut frames, _) = ten(shape);
        cut_payload(shape, &mut frames[0], 500);
        let seq = shape.l4_offset() + 4;
        frames[1][seq..seq + 4].copy_from_slice(&FIRST_SEQ.wrapping_add(500).to_be_bytes());
        refresh(shape, &mut frames[1]);
        assert_alone(&frames);
    }

    #[test]
    fn a_first_payload_below_the_tcp_minimum_mss_is_alone() {
        let shape = v4();
        let seq = shape.l4_offset() + 4;
        for (len, count) in [(TCP_MIN_GSO_SIZE - 1, 1), (TCP_MIN_GSO_SIZE, 2)] {
            let mss = TCP_MIN_GSO_SIZE as u16;
            let mut train = segments(shape, &payload(2 * TCP_MIN_GSO_SIZE), mss);
            for frame in &mut train {
                cut_payload(shape, frame, len);
            }
            let second_seq = FIRST_SEQ.wrapping_add(len as u32);
            train[1][seq..seq + 4].copy_from_slice(&second_seq.to_be_bytes());
            refresh(shape, &mut train[1]);
            assert_eq!(coalesced(&train).0.frames, count, "{len}-byte payloads");
        }
    }

    #[test]
    fn ids_count_up_or_stay_fixed_with_df() {
        let shape = v4();
        let l3 = shape.l3_offset();
        let set_id = |frame: &mut Vec<u8>, id: u16, df: bool| {
            frame[l3 + 4..l3 + 6].copy_from_slice(&id.to_be_bytes());
            frame[l3 + 6] = if df { 0x40 } else { 0 };
            refresh(shape, frame);
        };
        // Fixed ids with DF: the whole train.
        let (mut frames, data) = ten(shape);
        for frame in &mut frames {
            set_id(frame, 7, true);
        }
        let (run, out) = coalesced(&frames);
        assert_eq!(run.frames, 10);
        let mut expected = shape.partial_frame(&data);
        set_id(&mut expected, 7, true);
        // The super-frame's TCP checksum field is the pseudo-header sum again.
        let l4 = shape.l4_offset();
        expected[l4 + 16..l4 + 18].copy_from_slice(&shape.partial_frame(&data)[l4 + 16..l4 + 18]);
        assert_eq!(out[VNET_HDR_LEN..], expected[..]);

        // Fixed ids without DF are not atomic datagrams.
        let (mut frames, _) = ten(shape);
        for frame in &mut frames {
            set_id(frame, 7, false);
        }
        assert_alone(&frames);

        // Once incrementing, a fixed id ends the run, and the other way round.
        let (mut frames, data) = ten(shape);
        let third = frames[2].clone();
        frames[3][l3 + 4..l3 + 6].copy_from_slice(&third[l3 + 4..l3 + 6]);
        refresh(shape, &mut frames[3]);
        assert_prefix(shape, &frames, &data, 3);
        let (mut frames, _) = ten(shape);
        for frame in &mut frames[..3] {
            set_id(frame, 7, true);
        }
        assert_eq!(coalesced(&frames).0.frames, 3);
        // A jump in ids.
        let (mut frames, data) = ten(shape);
        frames[6][l3 + 5] = frames[6][l3 + 5].wrapping_add(2);
        refresh(shape, &mut frames[6]);
        assert_prefix(shape, &frames, &data, 6);
    }

    #[test]
    fn ethernet_padding_keeps_a_segment_alone() {
        let (mut frames, _) = ten(v4());
        frames[0].extend_from_slice(&[0; 4]);
        assert_alone(&frames);
    }

    #[test]
    fn runs_stop_at_max_segments_and_max_frame_len() {
        let shape = tcp_shape(IpVersion::V4, true, false);
        let data = payload(300 * 88);
        let frames = segments(shape, &data, 88);
        let (run, out) = coalesced(&frames);
        assert_eq!(run.frames, MAX_SEGMENTS);
        assert_super_frame(shape, &out, &data[..MAX_SEGMENTS * 88], 88);
        assert_eq!(
            coalesced(&frames[MAX_SEGMENTS..]).0.frames,
            300 - MAX_SEGMENTS
        );

        // 65535 bytes of IP: the frame is longer than MAX_FRAME_LEN by its Ethernet header.
        let data = payload(65535 - (shape.headers_len() - shape.l3_offset()));
        let frames = segments(shape, &data, 1000);
        let (run, out) = coalesced(&frames);
        assert_eq!(run.frames, frames.len() - 1);
        assert!(run.len - VNET_HDR_LEN <= MAX_FRAME_LEN);
        assert_super_frame(shape, &out, &data[..run.frames * 1000], 1000);
    }

    #[test]
    fn an_empty_train_is_a_run_of_nothing() {
        let mut out = vec![0; OUT_LEN];
        assert_eq!(coalesce(&[], &mut out), Run { frames: 0, len: 0 });
    }

    fn shape_strategy() -> impl Strategy<Value = Shape> {
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(v6, vlan, all_flags)| {
            let ip = if v6 { IpVersion::V6 } else { IpVersion::V4 };
            tcp_shape(ip, vlan, all_flags)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// GSO then GRO gives back the super-frame, its vnet header validates,
        /// and segmenting it again gives the same segments.
        #[test]
        fn gso_then_gro_gives_back_the_super_frame(
            shape in shape_strategy(),
            len in 0usize..65535,
            mss in (TCP_MIN_GSO_SIZE as u16)..3000,
        ) {
            let len = len.min(MAX_FRAME_LEN - shape.headers_len());
            prop_assume!(len.div_ceil(usize::from(mss)) <= MAX_SEGMENTS);
            let data = payload(len);
            let frames = segments(shape, &data, mss);
            let (run, out) = coalesced(&frames);
            prop_assert_eq!(run.frames, frames.len());
            prop_assert_eq!(run.len, out.len());
            if frames.len() == 1 {
                prop_assert_eq!(&out[..VNET_HDR_LEN], &PLAIN_HEADER[..]);
                prop_assert_eq!(&out[VNET_HDR_LEN..], &frames[0][..]);
                return Ok(());
            }
            assert_super_frame(shape, &out, &data, mss);
            let layout = VnetHeader::new(&out)
                .unwrap()
                .validate(&out[VNET_HDR_LEN..])
                .unwrap()
                .segmentation
                .unwrap();
            let mut again = Vec::new();
            Segmenter::new()
                .segment(&out[VNET_HDR_LEN..], &layout, layout.gso_size, |segment| {
                    again.push(segment.to_vec());
                    ControlFlow::Continue(())
                })
                .unwrap();
            prop_assert_eq!(again, frames);
        }

        /// Whatever the bytes, a run is at least one frame and never more than given.
        #[test]
        fn arbitrary_frames_never_panic(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..6),
        ) {
            let (run, out) = coalesced(&frames);
            prop_assert!(run.frames >= 1 && run.frames <= frames.len());
            prop_assert_eq!(run.len, out.len());
        }
    }
}
