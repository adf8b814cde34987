//! Software fallback for the offloads a port without a vnet header cannot
//! take: completing partial checksums and cutting super-frames into
//! MTU-sized segments, as the kernel's own GSO does. Pure, no I/O.
//!
//! Works from the [`Offload`] that [`VnetHeader::validate`](crate::vnet::VnetHeader::validate)
//! returned, so nothing is parsed twice. The frame a port read may still go
//! to other ports as it is, so results are built in the [`Segmenter`]'s own
//! buffer, which is allocated once and reused for every frame.

use std::ops::ControlFlow;

use thiserror::Error;

use crate::vnet::{ChecksumRequest, IpVersion, Segmentation, Transport};
use crate::wire::checksum::{fold, pseudo_header_sum, sum};
use crate::wire::{Ipv4Packet, Ipv6Packet, TcpSegment, UdpDatagram, tcp_flags};

/// Largest frame the segmenter handles without growing its buffer: a 64 KiB
/// super-frame (every segment and every copy is at most as long).
const BUFFER_CAPACITY: usize = 65536;

/// Segmentation that cannot be done with the arguments given.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum GsoError {
    #[error("no room for payload: segments of at most 0 payload bytes were asked for")]
    ZeroPayload,
    /// Each `gso_size` piece of a UDP super-frame is a datagram of its own:
    /// cutting it smaller would change what the receiver reads.
    #[error(
        "UDP datagrams of {gso_size} bytes cannot be cut to {max_payload}-byte segments without changing them"
    )]
    DatagramTooLarge { gso_size: usize, max_payload: usize },
    #[error(
        "the {frame_len}-byte frame does not match its segmentation layout ({headers_len} bytes of headers, IP at {l3_offset}, transport at {l4_offset})"
    )]
    LayoutMismatch {
        frame_len: usize,
        headers_len: usize,
        l3_offset: usize,
        l4_offset: usize,
    },
}

/// Cuts super-frames into segments and completes checksums in a buffer it
/// keeps between frames.
#[derive(Debug)]
pub struct Segmenter {
    buffer: Vec<u8>,
}

impl Default for Segmenter {
    fn default() -> Self {
        Self::new()
    }
}

impl Segmenter {
    /// A segmenter with its buffer allocated for 64 KiB frames.
    pub fn new() -> Self {
        Self {
            buffer: Vec::with_capacity(BUFFER_CAPACITY),
        }
    }

    /// Cuts the super-frame `frame`, laid out as `layout` says, into segments
    /// of at most `max_payload` payload bytes (never more than `layout.gso_size`)
    /// and hands each, checksums complete, to `emit` until it breaks.
    /// TCP can be cut finer than `gso_size` when an egress MTU demands it; UDP
    /// cannot (each `gso_size` piece is one datagram), so a smaller
    /// `max_payload` is refused with [`GsoError::DatagramTooLarge`].
    ///
    /// TCP segments get advancing sequence numbers, FIN and PSH only on the
    /// last one and CWR only on the first (as Linux does); IPv4 segments get
    /// consecutive ids starting at the super-frame's. A super-frame with no
    /// payload becomes one segment. Returns the number of segments emitted.
    pub fn segment(
        &mut self,
        frame: &[u8],
        layout: &Segmentation,
        max_payload: usize,
        mut emit: impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<usize, GsoError> {
        check_layout(frame, layout)?;
        let step = max_payload.min(layout.gso_size);
        if step == 0 {
            return Err(GsoError::ZeroPayload);
        }
        if layout.transport == Transport::Udp && step < layout.gso_size {
            return Err(GsoError::DatagramTooLarge {
                gso_size: layout.gso_size,
                max_payload,
            });
        }
        let headers = &frame[..layout.headers_len()];
        let payload = &frame[layout.headers_len()..];
        let l3 = layout.l3_offset;
        let l4 = layout.l4_offset;
        // Only the IPv4 id and the TCP sequence number advance per segment.
        let first_ip_id = match layout.ip {
            IpVersion::V4 => Ipv4Packet::new_unchecked(&frame[l3..]).ident(),
            IpVersion::V6 => 0,
        };
        let first_seq = match layout.transport {
            Transport::Tcp => TcpSegment::new_unchecked(&frame[l4..]).seq_number(),
            Transport::Udp => 0,
        };
        let count = payload.len().div_ceil(step).max(1);

        for (index, start) in (0..count).map(|i| (i, i * step)) {
            let chunk = &payload[start..(start + step).min(payload.len())];
            let buffer = &mut self.buffer;
            buffer.clear();
            buffer.extend_from_slice(headers);
            buffer.extend_from_slice(chunk);
            let len = buffer.len();

            match layout.ip {
                IpVersion::V4 => {
                    let mut packet = Ipv4Packet::new_unchecked(&mut buffer[l3..]);
                    packet.set_total_len((len - l3) as u16);
                    packet.set_ident(first_ip_id.wrapping_add(index as u16));
                    // Over l3..l4, not the IHL: a layout is trusted, the frame is not.
                    packet.set_header_checksum(0);
                    let header_sum = !fold(sum(&buffer[l3..l4], 0));
                    Ipv4Packet::new_unchecked(&mut buffer[l3..]).set_header_checksum(header_sum);
                }
                IpVersion::V6 => {
                    Ipv6Packet::new_unchecked(&mut buffer[l3..])
                        .set_payload_len((len - l3 - crate::vnet::IPV6_HEADER_LEN) as u16);
                }
            }
            match layout.transport {
                Transport::Tcp => {
                    let mut segment = TcpSegment::new_unchecked(&mut buffer[l4..]);
                    segment.set_seq_number(first_seq.wrapping_add(start as u32));
                    let mut flags = segment.flags();
                    if index + 1 < count {
                        flags &= !(tcp_flags::FIN | tcp_flags::PSH);
                    }
                    if index > 0 {
                        flags &= !tcp_flags::CWR;
                    }
                    segment.set_flags(flags);
                }
                Transport::Udp => {
                    UdpDatagram::new_unchecked(&mut buffer[l4..]).set_len((len - l4) as u16);
                }
            }
            write_transport_checksum(buffer, layout);

            if emit(buffer).is_break() {
                return Ok(index + 1);
            }
        }
        Ok(count)
    }

    /// A copy of `frame` with the partial checksum `request` asks for
    /// completed (see [`complete_checksum`]); `frame` stays as it is. The
    /// request must lie inside the frame, as validation ensures.
    pub fn with_checksum(&mut self, frame: &[u8], request: ChecksumRequest) -> &[u8] {
        self.buffer.clear();
        self.buffer.extend_from_slice(frame);
        complete_checksum(&mut self.buffer, request.start, request.offset);
        &self.buffer
    }
}

/// Completes a partial checksum in place, as `skb_checksum_help` does: the
/// sender put the (uncomplemented) pseudo-header sum into the field at
/// `csum_start + csum_offset`; the one's-complement sum of everything from
/// `csum_start` to the end, that field included, is folded, complemented and
/// written there. A result of 0 is written as 0xffff, which UDP needs (0 means
/// "no checksum" there) and TCP treats the same.
///
/// # Panics
/// If the checksum field does not lie inside `frame`.
pub fn complete_checksum(frame: &mut [u8], csum_start: usize, csum_offset: usize) {
    let field = csum_start + csum_offset;
    let checksum = match !fold(sum(&frame[csum_start..], 0)) {
        0 => 0xffff,
        sum => sum,
    };
    frame[field..field + 2].copy_from_slice(&checksum.to_be_bytes());
}

/// Ensures every offset `segment` indexes lies inside `frame`, so a layout
/// that belongs to another frame cannot make it panic.
fn check_layout(frame: &[u8], layout: &Segmentation) -> Result<(), GsoError> {
    let ip_min = match layout.ip {
        IpVersion::V4 => crate::vnet::IPV4_MIN_HEADER_LEN,
        IpVersion::V6 => crate::vnet::IPV6_HEADER_LEN,
    };
    let l4_min = match layout.transport {
        Transport::Tcp => crate::vnet::TCP_MIN_HEADER_LEN,
        Transport::Udp => crate::vnet::UDP_HEADER_LEN,
    };
    let consistent = layout.l3_offset + ip_min <= layout.l4_offset
        && layout.l4_header_len >= l4_min
        && layout.headers_len() <= frame.len();
    if consistent {
        Ok(())
    } else {
        Err(GsoError::LayoutMismatch {
            frame_len: frame.len(),
            headers_len: layout.headers_len(),
            l3_offset: layout.l3_offset,
            l4_offset: layout.l4_offset,
        })
    }
}

/// Computes the TCP or UDP checksum of the segment in `segment` from scratch:
/// pseudo-header, transport header (checksum field zeroed) and payload.
fn write_transport_checksum(segment: &mut [u8], layout: &Segmentation) {
    let (l3, l4) = (layout.l3_offset, layout.l4_offset);
    set_transport_checksum(segment, layout, 0);
    let (protocol, transport_len) = (layout.transport.protocol(), segment.len() - l4);
    let pseudo = match layout.ip {
        IpVersion::V4 => {
            let addresses = Ipv4Packet::new_unchecked(&segment[l3..]);
            pseudo_header_sum(addresses.addresses(), protocol, transport_len)
        }
        IpVersion::V6 => {
            let addresses = Ipv6Packet::new_unchecked(&segment[l3..]);
            pseudo_header_sum(addresses.addresses(), protocol, transport_len)
        }
    };
    let checksum = !fold(sum(&segment[l4..], pseudo));
    let checksum = match (layout.transport, checksum) {
        (Transport::Udp, 0) => 0xffff,
        (_, checksum) => checksum,
    };
    set_transport_checksum(segment, layout, checksum);
}

fn set_transport_checksum(segment: &mut [u8], layout: &Segmentation, checksum: u16) {
    let transport = &mut segment[layout.l4_offset..];
    match layout.transport {
        Transport::Tcp => TcpSegment::new_unchecked(transport).set_checksum(checksum),
        Transport::Udp => UdpDatagram::new_unchecked(transport).set_checksum(checksum),
    }
}

/// Super-frames as an endpoint's kernel hands them over, built with
/// `etherparse` so that the code under test does not check itself.
#[cfg(test)]
pub(crate) mod test_frames {
    use etherparse::{IpHeaders, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder, TcpHeader};
    use virtio_bindings::virtio_net::{
        VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
        VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4,
    };

    use crate::vnet::{IpVersion, Transport, VNET_HDR_LEN};

    pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
    pub const SRC_V4: [u8; 4] = [10, 0, 0, 1];
    pub const DST_V4: [u8; 4] = [10, 0, 0, 2];
    pub const SRC_V6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    pub const DST_V6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    pub const FIRST_SEQ: u32 = 0xffff_f000;
    pub const FIRST_IP_ID: u16 = 0xfffe;
    pub const VLAN_ID: u16 = 42;

    /// What to build.
    #[derive(Clone, Copy, Debug)]
    pub struct Shape {
        pub ip: IpVersion,
        pub transport: Transport,
        pub vlan: bool,
        /// TCP flags on the super-frame (FIN, PSH, CWR, ECE all set when true).
        pub all_flags: bool,
    }

    impl Shape {
        pub fn new(ip: IpVersion, transport: Transport, vlan: bool) -> Self {
            Self {
                ip,
                transport,
                vlan,
                all_flags: true,
            }
        }

        /// The `VIRTIO_NET_HDR_GSO_*` type a kernel would use.
        pub fn gso_type(&self) -> u8 {
            let base = match (self.transport, self.ip) {
                (Transport::Tcp, IpVersion::V4) => VIRTIO_NET_HDR_GSO_TCPV4,
                (Transport::Tcp, IpVersion::V6) => VIRTIO_NET_HDR_GSO_TCPV6,
                (Transport::Udp, _) => VIRTIO_NET_HDR_GSO_UDP_L4,
            };
            let ecn = if self.transport == Transport::Tcp && self.all_flags {
                VIRTIO_NET_HDR_GSO_ECN
            } else {
                0
            };
            (base | ecn) as u8
        }

        pub fn l3_offset(&self) -> usize {
            if self.vlan { 18 } else { 14 }
        }

        pub fn l4_offset(&self) -> usize {
            self.l3_offset()
                + match self.ip {
                    IpVersion::V4 => 20,
                    IpVersion::V6 => 40,
                }
        }

        /// Linux sends TCP with the timestamp option: a 32-byte header.
        pub fn l4_header_len(&self) -> usize {
            match self.transport {
                Transport::Tcp => 32,
                Transport::Udp => 8,
            }
        }

        pub fn headers_len(&self) -> usize {
            self.l4_offset() + self.l4_header_len()
        }

        /// A complete frame: every checksum valid.
        pub fn complete_frame(&self, payload: &[u8]) -> Vec<u8> {
            let eth = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
            let ip = match self.ip {
                IpVersion::V4 => {
                    let mut header =
                        Ipv4Header::new(0, 64, etherparse::IpNumber::TCP, SRC_V4, DST_V4).unwrap();
                    header.identification = FIRST_IP_ID;
                    header.dont_fragment = true;
                    IpHeaders::Ipv4(header, Default::default())
                }
                IpVersion::V6 => IpHeaders::Ipv6(
                    Ipv6Header {
                        traffic_class: 0,
                        flow_label: Ipv6FlowLabel::try_new(0x12345).unwrap(),
                        payload_length: 0,
                        next_header: etherparse::IpNumber::TCP,
                        hop_limit: 64,
                        source: SRC_V6,
                        destination: DST_V6,
                    },
                    Default::default(),
                ),
            };
            let ip = if self.vlan {
                eth.single_vlan(etherparse::VlanId::try_new(VLAN_ID).unwrap())
                    .ip(ip)
            } else {
                eth.ip(ip)
            };
            let mut frame = Vec::new();
            match self.transport {
                Transport::Tcp => {
                    let mut tcp = TcpHeader::new(40000, 5201, FIRST_SEQ, 512);
                    tcp.ack = true;
                    tcp.acknowledgment_number = 7;
                    tcp.fin = self.all_flags;
                    tcp.psh = self.all_flags;
                    tcp.cwr = self.all_flags;
                    tcp.ece = self.all_flags;
                    // NOP, NOP, timestamp: what Linux puts on every segment.
                    tcp.set_options_raw(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2])
                        .unwrap();
                    ip.tcp_header(tcp).write(&mut frame, payload).unwrap();
                }
                Transport::Udp => ip.udp(40000, 5201).write(&mut frame, payload).unwrap(),
            }
            frame
        }

        /// The frame as a kernel with checksum offload hands it over: the
        /// transport checksum field holds the pseudo-header sum.
        pub fn partial_frame(&self, payload: &[u8]) -> Vec<u8> {
            let mut frame = self.complete_frame(payload);
            let l4 = self.l4_offset();
            let field = l4 + self.transport.checksum_offset();
            let sum = naive_pseudo_header_sum(&frame, self.l3_offset(), self.ip, self.transport);
            frame[field..field + 2].copy_from_slice(&sum.to_be_bytes());
            frame
        }

        /// The vnet header a kernel would put in front of
        /// [`Self::partial_frame`] for segmentation into `gso_size` payloads.
        pub fn gso_header(&self, gso_size: u16) -> [u8; VNET_HDR_LEN] {
            vnet_header(
                VIRTIO_NET_HDR_F_NEEDS_CSUM as u8,
                self.gso_type(),
                self.headers_len() as u16,
                gso_size,
                self.l4_offset() as u16,
                self.transport.checksum_offset() as u16,
            )
        }

        /// The vnet header of a checksum-only frame.
        pub fn csum_header(&self) -> [u8; VNET_HDR_LEN] {
            vnet_header(
                VIRTIO_NET_HDR_F_NEEDS_CSUM as u8,
                VIRTIO_NET_HDR_GSO_NONE as u8,
                0,
                0,
                self.l4_offset() as u16,
                self.transport.checksum_offset() as u16,
            )
        }
    }

    pub fn vnet_header(
        flags: u8,
        gso_type: u8,
        hdr_len: u16,
        gso_size: u16,
        csum_start: u16,
        csum_offset: u16,
    ) -> [u8; VNET_HDR_LEN] {
        let mut header = [0; VNET_HDR_LEN];
        header[0] = flags;
        header[1] = gso_type;
        header[2..4].copy_from_slice(&hdr_len.to_le_bytes());
        header[4..6].copy_from_slice(&gso_size.to_le_bytes());
        header[6..8].copy_from_slice(&csum_start.to_le_bytes());
        header[8..10].copy_from_slice(&csum_offset.to_le_bytes());
        header
    }

    /// The folded, uncomplemented pseudo-header sum, word by word as RFC 1071
    /// describes it (deliberately not sharing code with the module).
    pub fn naive_pseudo_header_sum(
        frame: &[u8],
        l3: usize,
        ip: IpVersion,
        transport: Transport,
    ) -> u16 {
        let (addresses, l4) = match ip {
            IpVersion::V4 => (&frame[l3 + 12..l3 + 20], l3 + 20),
            IpVersion::V6 => (&frame[l3 + 8..l3 + 40], l3 + 40),
        };
        let mut sum: u32 = 0;
        for pair in addresses.chunks(2) {
            sum += u32::from(pair[0]) << 8 | u32::from(pair[1]);
        }
        sum += u32::from(transport.protocol());
        sum += (frame.len() - l4) as u32;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }
}

#[cfg(test)]
mod tests {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    use super::test_frames::*;
    use super::*;
    use crate::vnet::{Offload, VnetHeader};

    const SHAPES: [(IpVersion, Transport); 4] = [
        (IpVersion::V4, Transport::Tcp),
        (IpVersion::V6, Transport::Tcp),
        (IpVersion::V4, Transport::Udp),
        (IpVersion::V6, Transport::Udp),
    ];

    fn all_shapes() -> impl Iterator<Item = Shape> {
        SHAPES
            .into_iter()
            .flat_map(|(ip, transport)| [false, true].map(|vlan| Shape::new(ip, transport, vlan)))
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn validated(header: &[u8; 12], frame: &[u8]) -> Offload {
        VnetHeader::new(header).unwrap().validate(frame).unwrap()
    }

    /// Segments `payload` shaped as `shape` through the vnet header path and
    /// checks every segment with etherparse; returns the segments.
    fn segment_and_check(
        shape: Shape,
        payload: &[u8],
        gso_size: u16,
        max_payload: usize,
    ) -> Vec<Vec<u8>> {
        let frame = shape.partial_frame(payload);
        let offload = validated(&shape.gso_header(gso_size), &frame);
        let layout = offload.segmentation.expect("a super-frame");
        let mut segmenter = Segmenter::new();
        let mut segments = Vec::new();
        let emitted = segmenter
            .segment(&frame, &layout, max_payload, |s| {
                segments.push(s.to_vec());
                ControlFlow::Continue(())
            })
            .unwrap();
        let step = max_payload.min(usize::from(gso_size));
        let expected_count = payload.len().div_ceil(step).max(1);
        assert_eq!(emitted, expected_count);
        assert_eq!(segments.len(), expected_count);

        let mut joined = Vec::new();
        for (index, segment) in segments.iter().enumerate() {
            let last = index + 1 == segments.len();
            let seg_payload = check_segment(shape, segment, index, last, joined.len());
            assert!(seg_payload.len() <= step, "segment {index} too long");
            if !last {
                assert_eq!(seg_payload.len(), step, "only the last segment is short");
            }
            joined.extend_from_slice(seg_payload);
        }
        assert_eq!(
            joined, payload,
            "segments' payloads joined are the original"
        );
        segments
    }

    /// Checks one segment independently of the module; returns its payload.
    fn check_segment(
        shape: Shape,
        segment: &[u8],
        index: usize,
        last: bool,
        offset: usize,
    ) -> &[u8] {
        let packet = SlicedPacket::from_ethernet(segment).expect("etherparse parses the segment");
        assert_eq!(packet.vlan().is_some(), shape.vlan);
        if shape.vlan {
            assert_eq!(packet.vlan_ids()[0].value(), VLAN_ID);
        }
        let l3 = shape.l3_offset();
        let (src, dst): (Vec<u8>, Vec<u8>) = match packet.net.as_ref().expect("an IP header") {
            NetSlice::Ipv4(ipv4) => {
                assert_eq!(shape.ip, IpVersion::V4);
                let header = ipv4.header();
                assert_eq!(usize::from(header.total_len()), segment.len() - l3);
                assert_eq!(
                    header.header_checksum(),
                    header.to_header().calc_header_checksum(),
                    "IPv4 header checksum of segment {index}"
                );
                assert_eq!(
                    header.identification(),
                    FIRST_IP_ID.wrapping_add(index as u16)
                );
                assert!(header.dont_fragment());
                (header.source().to_vec(), header.destination().to_vec())
            }
            NetSlice::Ipv6(ipv6) => {
                assert_eq!(shape.ip, IpVersion::V6);
                let header = ipv6.header();
                assert_eq!(
                    usize::from(header.payload_length()),
                    segment.len() - l3 - 40
                );
                assert_eq!(header.flow_label().value(), 0x12345);
                (header.source().to_vec(), header.destination().to_vec())
            }
            other => panic!("not IP: {other:?}"),
        };
        match packet.transport.expect("a transport header") {
            TransportSlice::Tcp(tcp) => {
                assert_eq!(shape.transport, Transport::Tcp);
                let checksum = match shape.ip {
                    IpVersion::V4 => {
                        tcp.calc_checksum_ipv4(src.try_into().unwrap(), dst.try_into().unwrap())
                    }
                    IpVersion::V6 => {
                        tcp.calc_checksum_ipv6(src.try_into().unwrap(), dst.try_into().unwrap())
                    }
                }
                .unwrap();
                assert_eq!(tcp.checksum(), checksum, "TCP checksum of segment {index}");
                assert_eq!(tcp.sequence_number(), FIRST_SEQ.wrapping_add(offset as u32));
                assert_eq!(tcp.acknowledgment_number(), 7);
                assert!(tcp.ack());
                assert_eq!(tcp.fin(), shape.all_flags && last, "FIN of segment {index}");
                assert_eq!(tcp.psh(), shape.all_flags && last, "PSH of segment {index}");
                assert_eq!(
                    tcp.cwr(),
                    shape.all_flags && index == 0,
                    "CWR of segment {index}"
                );
                assert_eq!(tcp.ece(), shape.all_flags, "ECE of segment {index}");
                assert_eq!(tcp.options(), &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
                &segment[shape.headers_len()..]
            }
            TransportSlice::Udp(udp) => {
                assert_eq!(shape.transport, Transport::Udp);
                assert_eq!(usize::from(udp.length()), segment.len() - shape.l4_offset());
                let header = udp.to_header();
                let checksum = match shape.ip {
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
                .unwrap();
                assert_eq!(udp.checksum(), checksum, "UDP checksum of segment {index}");
                &segment[shape.headers_len()..]
            }
            other => panic!("not TCP or UDP: {other:?}"),
        }
    }

    #[test]
    fn every_shape_segments_into_checked_segments() {
        for shape in all_shapes() {
            // 10 full segments and a short one.
            let segments = segment_and_check(shape, &payload(14_480 + 100), 1448, 1448);
            assert_eq!(segments.len(), 11, "{shape:?}");
            assert_eq!(segments[0].len(), shape.headers_len() + 1448);
        }
    }

    #[test]
    fn largest_super_frames_segment() {
        for shape in all_shapes() {
            let max_payload = 65535 - (shape.headers_len() - shape.l3_offset());
            segment_and_check(shape, &payload(max_payload), 1448, 1448);
            segment_and_check(shape, &payload(max_payload), 9000, 9000);
        }
    }

    #[test]
    fn a_smaller_egress_mtu_resegments_tcp_below_gso_size() {
        for shape in all_shapes().filter(|s| s.transport == Transport::Tcp) {
            let frame = shape.partial_frame(&payload(8000));
            let layout = validated(&shape.gso_header(1448), &frame)
                .segmentation
                .unwrap();
            let max_payload = layout.max_payload_for_mtu(1280);
            let ip_and_l4 = shape.headers_len() - shape.l3_offset();
            assert_eq!(max_payload, 1280 - ip_and_l4);
            let segments = segment_and_check(shape, &payload(8000), 1448, max_payload);
            assert!(segments.iter().all(|s| s.len() - shape.l3_offset() <= 1280));
            // A larger MTU does not grow segments past gso_size.
            assert_eq!(layout.max_payload_for_mtu(9000), 1448);
            assert_eq!(layout.max_payload_for_mtu(ip_and_l4), 0);
        }
    }

    #[test]
    fn udp_datagrams_are_never_cut_below_gso_size() {
        for shape in all_shapes().filter(|s| s.transport == Transport::Udp) {
            let frame = shape.partial_frame(&payload(8000));
            let layout = validated(&shape.gso_header(1448), &frame)
                .segmentation
                .unwrap();
            let max_payload = layout.max_payload_for_mtu(1280);
            let result = Segmenter::new().segment(&frame, &layout, max_payload, |_| {
                panic!("no segment may be emitted")
            });
            assert_eq!(
                result,
                Err(GsoError::DatagramTooLarge {
                    gso_size: 1448,
                    max_payload
                })
            );
            // Datagrams that fit are left as they are.
            segment_and_check(
                shape,
                &payload(8000),
                1448,
                layout.max_payload_for_mtu(1500),
            );
        }
    }

    #[test]
    fn payload_that_fits_one_segment_still_gets_checksums() {
        for shape in all_shapes() {
            let segments = segment_and_check(shape, &payload(100), 1448, 1448);
            assert_eq!(segments.len(), 1);
            let segments = segment_and_check(shape, &payload(1448), 1448, 1448);
            assert_eq!(segments.len(), 1);
        }
    }

    #[test]
    fn empty_payload_becomes_one_header_only_segment() {
        for shape in all_shapes() {
            let segments = segment_and_check(shape, &[], 1448, 1448);
            assert_eq!(segments[0].len(), shape.headers_len());
        }
    }

    #[test]
    fn tcp_without_flags_keeps_none() {
        for vlan in [false, true] {
            let mut shape = Shape::new(IpVersion::V4, Transport::Tcp, vlan);
            shape.all_flags = false;
            segment_and_check(shape, &payload(5000), 1000, 1000);
        }
    }

    #[test]
    fn breaking_out_of_emit_stops_segmentation() {
        let shape = Shape::new(IpVersion::V4, Transport::Tcp, false);
        let frame = shape.partial_frame(&payload(10_000));
        let layout = validated(&shape.gso_header(1000), &frame)
            .segmentation
            .unwrap();
        let mut seen = 0;
        let emitted = Segmenter::new()
            .segment(&frame, &layout, 1000, |_| {
                seen += 1;
                if seen == 3 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert_eq!((emitted, seen), (3, 3));
    }

    #[test]
    fn zero_payload_size_and_foreign_layouts_are_refused() {
        let shape = Shape::new(IpVersion::V6, Transport::Udp, true);
        let frame = shape.partial_frame(&payload(3000));
        let layout = validated(&shape.gso_header(1000), &frame)
            .segmentation
            .unwrap();
        let mut segmenter = Segmenter::new();
        let never = |_: &[u8]| -> ControlFlow<()> { panic!("nothing to emit") };
        assert_eq!(
            segmenter.segment(&frame, &layout, 0, never),
            Err(GsoError::ZeroPayload)
        );
        assert!(matches!(
            segmenter.segment(&frame[..50], &layout, 1000, never),
            Err(GsoError::LayoutMismatch { frame_len: 50, .. })
        ));
        let mut bent = layout;
        bent.l4_offset = bent.l3_offset + 10;
        assert!(matches!(
            segmenter.segment(&frame, &bent, 1000, never),
            Err(GsoError::LayoutMismatch { .. })
        ));
    }

    #[test]
    fn the_buffer_is_not_reallocated_once_warm() {
        let shape = Shape::new(IpVersion::V4, Transport::Tcp, true);
        let frame = shape.partial_frame(&payload(60_000));
        let layout = validated(&shape.gso_header(1448), &frame)
            .segmentation
            .unwrap();
        let mut segmenter = Segmenter::new();
        let before = segmenter.buffer.as_ptr();
        for _ in 0..3 {
            segmenter
                .segment(&frame, &layout, 1448, |_| ControlFlow::Continue(()))
                .unwrap();
            let _ = segmenter.with_checksum(
                &frame,
                ChecksumRequest {
                    start: shape.l4_offset(),
                    offset: 16,
                },
            );
        }
        assert_eq!(segmenter.buffer.as_ptr(), before);
    }

    #[test]
    fn completing_a_partial_checksum_gives_the_full_one() {
        for shape in all_shapes() {
            for len in [0, 1, 2, 3, 17, 1000, 1001] {
                let complete = shape.complete_frame(&payload(len));
                let partial = shape.partial_frame(&payload(len));
                assert_ne!(
                    complete, partial,
                    "{shape:?} {len}: the test changes something"
                );
                let offload = validated(&shape.csum_header(), &partial);
                assert!(offload.segmentation.is_none());
                let request = offload.checksum.unwrap();
                let mut segmenter = Segmenter::new();
                assert_eq!(
                    segmenter.with_checksum(&partial, request),
                    &complete[..],
                    "{shape:?}, {len} payload bytes"
                );
                let mut in_place = partial.clone();
                complete_checksum(&mut in_place, request.start, request.offset);
                assert_eq!(in_place, complete);
            }
        }
    }

    /// A UDP payload whose last two bytes make the checksum come out as 0.
    fn udp_payload_summing_to_zero(shape: Shape) -> Vec<u8> {
        // 100 bytes, then a filler word at an even offset from the UDP header.
        let mut data = payload(102);
        data[100..].fill(0);
        let frame = shape.partial_frame(&data);
        // With the pseudo-header sum in the checksum field, this is
        // everything the final checksum covers.
        let sum = fold(sum(&frame[shape.l4_offset()..], 0));
        data[100..].copy_from_slice(&(0xffff - sum).to_be_bytes());
        data
    }

    #[test]
    fn udp_checksum_of_zero_is_sent_as_ffff() {
        for ip in [IpVersion::V4, IpVersion::V6] {
            let shape = Shape::new(ip, Transport::Udp, false);
            let data = udp_payload_summing_to_zero(shape);
            let complete = shape.complete_frame(&data);
            let field = shape.l4_offset() + 6;
            assert_eq!(
                complete[field..field + 2],
                [0xff, 0xff],
                "etherparse agrees"
            );
            let mut frame = shape.partial_frame(&data);
            complete_checksum(&mut frame, shape.l4_offset(), 6);
            assert_eq!(frame[field..field + 2], [0xff, 0xff]);
            // The same datagram cut from a super-frame.
            let segments = segment_and_check(shape, &data, 1448, 1448);
            assert_eq!(segments[0][field..field + 2], [0xff, 0xff]);
        }
    }

    #[test]
    fn checksum_sums_match_a_naive_fold() {
        let data = payload(1003);
        for start in 0..8 {
            let slice = &data[start..];
            let mut naive: u32 = 0;
            for pair in slice.chunks(2) {
                naive += u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0));
            }
            while naive > 0xffff {
                naive = (naive & 0xffff) + (naive >> 16);
            }
            assert_eq!(u32::from(fold(sum(slice, 0))), naive);
        }
    }

    fn shape_strategy() -> impl Strategy<Value = Shape> {
        (0..4usize, any::<bool>(), any::<bool>()).prop_map(|(i, vlan, all_flags)| {
            let (ip, transport) = SHAPES[i];
            Shape {
                ip,
                transport,
                vlan,
                all_flags,
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn random_sizes_segment_correctly(
            shape in shape_strategy(),
            len in 0usize..20_000,
            gso_size in 1u16..3000,
            mtu in 200usize..3000,
        ) {
            // Within what validation accepts: TCP's minimum MSS, UDP's segment cap.
            let gso_size = match shape.transport {
                Transport::Tcp => gso_size.max(crate::vnet::TCP_MIN_GSO_SIZE as u16),
                Transport::Udp => gso_size,
            };
            let len = len.min(usize::from(gso_size) * crate::vnet::UDP_MAX_SEGMENTS);
            let frame = shape.partial_frame(&payload(len));
            let layout = validated(&shape.gso_header(gso_size), &frame).segmentation.unwrap();
            let max_payload = layout.max_payload_for_mtu(mtu);
            prop_assume!(max_payload > 0);
            prop_assume!(shape.transport == Transport::Tcp || max_payload == usize::from(gso_size));
            segment_and_check(shape, &payload(len), gso_size, max_payload);
        }

        #[test]
        fn random_lengths_complete_checksums(shape in shape_strategy(), len in 0usize..3000) {
            let partial = shape.partial_frame(&payload(len));
            let request = validated(&shape.csum_header(), &partial).checksum.unwrap();
            let mut segmenter = Segmenter::new();
            prop_assert_eq!(
                segmenter.with_checksum(&partial, request),
                &shape.complete_frame(&payload(len))[..]
            );
        }
    }
}
