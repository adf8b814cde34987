//! The `virtio_net_hdr_v1` that precedes each frame on a port opened with a
//! vnet header: a zero-copy view, in the manner of the `wire` module.
//!
//! The header tells whether the frame is a segmentation-offload super-frame
//! (GSO) and whether its checksum is still to be computed. The dataplane uses
//! it to let super-frames past the MTU check and to know whether a frame can
//! be handed to a port without offloads.
//!
//! The header comes from an endpoint's kernel and so is untrusted:
//! [`VnetHeader::validate`] checks it against the frame and returns an
//! [`Offload`], the parsed description the software fallback (`gso`) works
//! from without parsing again.

use thiserror::Error;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP_L4,
};

use crate::wire::{
    ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, EthernetFrame, HEADER_LEN, IPPROTO_TCP,
    IPPROTO_UDP, Ipv4Packet, Ipv6Packet, TCP_CHECKSUM_OFFSET, TcpSegment, UDP_CHECKSUM_OFFSET,
    UdpDatagram, VLAN_TAG_LEN,
};
pub use crate::wire::{IPV4_MIN_HEADER_LEN, IPV6_HEADER_LEN, TCP_MIN_HEADER_LEN, UDP_HEADER_LEN};

/// Length of the `virtio_net_hdr_v1` that precedes every frame on a port
/// opened with a vnet header (12 bytes, the size QEMU and vhost use too).
pub const VNET_HDR_LEN: usize =
    std::mem::size_of::<virtio_bindings::virtio_net::virtio_net_hdr_v1>();

/// Byte ranges of the header fields (little-endian, as the TAP uses on x86).
mod field {
    use std::ops::Range;
    pub const FLAGS: usize = 0;
    pub const GSO_TYPE: usize = 1;
    pub const HDR_LEN: Range<usize> = 2..4;
    pub const GSO_SIZE: Range<usize> = 4..6;
    pub const CSUM_START: Range<usize> = 6..8;
    pub const CSUM_OFFSET: Range<usize> = 8..10;
}

/// An all-zero header: a plain frame with a complete checksum.
pub const PLAIN_HEADER: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// A read-only view of a vnet header. The caller guarantees the buffer holds
/// at least [`VNET_HDR_LEN`] bytes (a TAP with a vnet header never returns less).
#[derive(Clone, Copy, Debug)]
pub struct VnetHeader<'a> {
    bytes: &'a [u8],
}

impl<'a> VnetHeader<'a> {
    /// Views the first [`VNET_HDR_LEN`] bytes of `bytes`; `None` if too short.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        (bytes.len() >= VNET_HDR_LEN).then_some(Self { bytes })
    }

    fn u16_at(&self, range: std::ops::Range<usize>) -> u16 {
        u16::from_le_bytes([self.bytes[range.start], self.bytes[range.start + 1]])
    }

    pub fn flags(&self) -> u8 {
        self.bytes[field::FLAGS]
    }

    /// `VIRTIO_NET_HDR_GSO_*`, including the ECN bit.
    pub fn gso_type(&self) -> u8 {
        self.bytes[field::GSO_TYPE]
    }

    pub fn hdr_len(&self) -> u16 {
        self.u16_at(field::HDR_LEN)
    }

    pub fn gso_size(&self) -> u16 {
        self.u16_at(field::GSO_SIZE)
    }

    pub fn csum_start(&self) -> u16 {
        self.u16_at(field::CSUM_START)
    }

    pub fn csum_offset(&self) -> u16 {
        self.u16_at(field::CSUM_OFFSET)
    }

    /// The frame is a super-frame the receiver must segment.
    pub fn is_gso(&self) -> bool {
        u32::from(self.gso_type() & !(VIRTIO_NET_HDR_GSO_ECN as u8)) != VIRTIO_NET_HDR_GSO_NONE
    }

    /// The frame's L4 checksum is still to be filled in.
    pub fn needs_csum(&self) -> bool {
        u32::from(self.flags()) & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0
    }

    /// The frame can be given as it is to a port without a vnet header.
    pub fn is_plain(&self) -> bool {
        !self.is_gso() && !self.needs_csum()
    }
}

/// Every segment must fit IPv4's total length or IPv6's payload length field.
const MAX_IP_LEN: usize = 65535;
/// Smallest TCP `gso_size` accepted: Linux's `TCP_MIN_MSS`, below which its
/// TCP never sends, so a smaller one only serves to multiply the writes a
/// super-frame costs towards a port without offloads.
pub const TCP_MIN_GSO_SIZE: usize = 88;
/// Most datagrams in one UDP super-frame: Linux's `UDP_MAX_SEGMENTS`, which
/// `virtio_net_hdr_to_skb` and `udp_send_skb` enforce too.
pub const UDP_MAX_SEGMENTS: usize = 128;
/// Most segments in one TCP super-frame. Linux's `GSO_MAX_SEGS` (65535) does
/// not bound the cost: a 64 KiB frame at `TCP_MIN_GSO_SIZE` makes 745 writes.
/// 256 passes every 64 KiB super-frame with an MSS of 256 or more (a TCP
/// sender behind a 1500-byte MTU makes 45), and keeps a 64 KiB frame to at
/// most 256 writes, twice the UDP cap.
pub const MAX_SEGMENTS: usize = 256;

/// The flags a kernel sets on frames it hands to a TAP reader.
const KNOWN_FLAGS: u8 = (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID) as u8;

/// The network layer of a super-frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpVersion {
    V4,
    V6,
}

impl IpVersion {
    const fn name(self) -> &'static str {
        match self {
            IpVersion::V4 => "IPv4",
            IpVersion::V6 => "IPv6",
        }
    }
}

/// The transport layer of a super-frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    /// Offset of the checksum field inside the transport header.
    pub const fn checksum_offset(self) -> usize {
        match self {
            Transport::Tcp => TCP_CHECKSUM_OFFSET,
            Transport::Udp => UDP_CHECKSUM_OFFSET,
        }
    }

    /// The IP protocol number, as in the pseudo-header.
    pub const fn protocol(self) -> u8 {
        match self {
            Transport::Tcp => IPPROTO_TCP,
            Transport::Udp => IPPROTO_UDP,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Udp => "UDP",
        }
    }
}

/// Layout of a validated super-frame: everything segmentation needs, so it
/// never parses the frame again. Offsets count from the Ethernet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segmentation {
    pub ip: IpVersion,
    pub transport: Transport,
    /// Start of the IP header (after the Ethernet header and an optional VLAN tag).
    pub l3_offset: usize,
    /// Start of the TCP or UDP header.
    pub l4_offset: usize,
    /// Length of the TCP header with options, or of the UDP header.
    pub l4_header_len: usize,
    /// Payload bytes per segment, as the sender asked.
    pub gso_size: usize,
}

impl Segmentation {
    /// Length of everything in front of the payload, Ethernet header included.
    pub const fn headers_len(&self) -> usize {
        self.l4_offset + self.l4_header_len
    }

    /// Largest payload per segment on a link of `mtu` bytes: `gso_size`, or
    /// less when the IP and transport headers plus `gso_size` exceed the MTU.
    /// 0 when not even the headers fit.
    pub fn max_payload_for_mtu(&self, mtu: usize) -> usize {
        let ip_and_transport = self.headers_len() - self.l3_offset;
        self.gso_size.min(mtu.saturating_sub(ip_and_transport))
    }

    /// The header a kernel puts in front of a super-frame of this layout whose
    /// transport checksum field holds the pseudo-header sum: `NEEDS_CSUM`, the
    /// `GSO_*` type (with the ECN bit when `ecn`: a TCP super-frame carrying CWR,
    /// which segmentation keeps on the first segment only), `hdr_len` the headers,
    /// the checksum at the transport header's.
    pub fn vnet_header(&self, ecn: bool) -> [u8; VNET_HDR_LEN] {
        let gso_type = match (self.transport, self.ip) {
            (Transport::Tcp, IpVersion::V4) => VIRTIO_NET_HDR_GSO_TCPV4,
            (Transport::Tcp, IpVersion::V6) => VIRTIO_NET_HDR_GSO_TCPV6,
            (Transport::Udp, _) => VIRTIO_NET_HDR_GSO_UDP_L4,
        };
        let ecn = if ecn && self.transport == Transport::Tcp {
            VIRTIO_NET_HDR_GSO_ECN
        } else {
            0
        };
        let mut header = PLAIN_HEADER;
        header[field::FLAGS] = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
        header[field::GSO_TYPE] = (gso_type | ecn) as u8;
        let mut put = |range: std::ops::Range<usize>, value: usize| {
            header[range].copy_from_slice(&(value as u16).to_le_bytes());
        };
        put(field::HDR_LEN, self.headers_len());
        put(field::GSO_SIZE, self.gso_size);
        put(field::CSUM_START, self.l4_offset);
        put(field::CSUM_OFFSET, self.transport.checksum_offset());
        header
    }

    /// Whether the segments the sender asked for (`gso_size` of payload each) fit a
    /// link of `mtu` bytes: what a super-frame must satisfy on the port it came from
    /// and on a port that receives it whole, like a plain frame.
    pub fn fits_mtu(&self, mtu: usize) -> bool {
        self.max_payload_for_mtu(mtu) == self.gso_size
    }
}

/// Where a partial checksum (`NEEDS_CSUM`) is to be completed, in bytes
/// from the Ethernet header: the sum covers `start..`, the result goes to
/// `start + offset`. Validation guarantees both lie inside the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChecksumRequest {
    pub start: usize,
    pub offset: usize,
}

/// What a validated vnet header asks of whoever delivers the frame to a port
/// without offloads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offload {
    /// The frame is a super-frame to cut into segments.
    pub segmentation: Option<Segmentation>,
    /// The frame's checksum is partial and must be completed.
    pub checksum: Option<ChecksumRequest>,
}

impl Offload {
    /// Nothing to do: a complete, ordinary frame.
    pub const PLAIN: Offload = Offload {
        segmentation: None,
        checksum: None,
    };

    /// The frame can be given as it is to a port without a vnet header.
    pub fn is_plain(&self) -> bool {
        self.segmentation.is_none() && self.checksum.is_none()
    }
}

/// A vnet header that does not describe its frame. Offsets count from the
/// Ethernet header.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum VnetError {
    #[error("vnet header flags {flags:#04x} set bits other than NEEDS_CSUM and DATA_VALID")]
    UnknownFlags { flags: u8 },
    #[error("vnet header gso_type {gso_type:#04x} is none of NONE, TCPV4, TCPV6 and UDP_L4")]
    UnknownGsoType { gso_type: u8 },
    #[error(
        "vnet header gso_type {gso_type:#04x} sets the ECN bit, which only TCP segmentation has"
    )]
    EcnWithoutTcp { gso_type: u8 },
    #[error("vnet header asks for {gso} segmentation with gso_size 0")]
    ZeroGsoSize { gso: &'static str },
    #[error(
        "vnet header gso_size {gso_size} makes segments longer than an IP datagram: at most {max} payload bytes fit behind these headers"
    )]
    GsoSizeTooLarge { gso_size: usize, max: usize },
    #[error(
        "vnet header asks for {gso} segmentation with gso_size {gso_size}, below Linux's TCP minimum of {min}"
    )]
    GsoSizeTooSmall {
        gso: &'static str,
        gso_size: usize,
        min: usize,
    },
    #[error(
        "{gso} super-frame would make {segments} segments of gso_size {gso_size}, more than the {max} allowed"
    )]
    TooManySegments {
        gso: &'static str,
        segments: usize,
        gso_size: usize,
        max: usize,
    },
    #[error(
        "vnet header checksum field at csum_start {start} + csum_offset {offset} does not fit in the {frame_len}-byte frame"
    )]
    ChecksumOutOfFrame {
        start: usize,
        offset: usize,
        frame_len: usize,
    },
    #[error(
        "vnet header csum_start {start} lies in the frame's {header_len}-byte Ethernet header: completing the checksum would rewrite addresses or the VLAN tag"
    )]
    ChecksumInEthernetHeader { start: usize, header_len: usize },
    #[error("vnet header hdr_len {hdr_len} exceeds the {frame_len}-byte frame")]
    HdrLenBeyondFrame { hdr_len: usize, frame_len: usize },
    #[error(
        "{gso} segmentation of a frame with ethertype {ethertype:#06x}, which is not {expected}"
    )]
    WrongNetwork {
        gso: &'static str,
        ethertype: u16,
        expected: &'static str,
    },
    #[error(
        "{gso} super-frame cut short in its {header} header: {needed} bytes needed, {frame_len} in the frame"
    )]
    Truncated {
        gso: &'static str,
        header: &'static str,
        needed: usize,
        frame_len: usize,
    },
    #[error("IP version field is {version} in a frame with ethertype {ethertype:#06x}")]
    IpVersion { ethertype: u16, version: u8 },
    #[error("IPv4 header length (IHL) of {len} bytes is below the 20-byte minimum")]
    Ipv4HeaderLength { len: usize },
    #[error("{ip} length field says {declared} bytes but the frame holds {actual}")]
    IpLength {
        ip: &'static str,
        declared: usize,
        actual: usize,
    },
    #[error("IPv4 fragment (offset {offset}, more fragments {more}) cannot be segmented")]
    Ipv4Fragment { offset: u16, more: bool },
    #[error("{gso} segmentation of IP protocol (next header) {protocol}, not {expected}")]
    WrongTransport {
        gso: &'static str,
        protocol: u8,
        expected: &'static str,
    },
    #[error("TCP data offset of {len} bytes is below the 20-byte minimum")]
    TcpHeaderLength { len: usize },
    #[error("UDP length field says {declared} bytes but the datagram holds {actual}")]
    UdpLength { declared: usize, actual: usize },
    #[error(
        "{gso} super-frame asks for a checksum at csum_start {start}, csum_offset {offset}, not at its {transport} checksum ({l4_offset}, {expected_offset})"
    )]
    ChecksumNotTransport {
        gso: &'static str,
        transport: &'static str,
        start: usize,
        offset: usize,
        l4_offset: usize,
        expected_offset: usize,
    },
}

impl VnetHeader<'_> {
    /// Checks this header against `frame` (the Ethernet frame behind it) and
    /// says what delivering the frame to a port without offloads involves.
    ///
    /// A checksum request must lie inside the frame. A super-frame must be
    /// IPv4 or IPv6 (optionally behind one 802.1Q tag, without IPv6 extension
    /// headers or IPv4 fragmentation) carrying the transport its `gso_type`
    /// names, with IP and UDP length fields matching the frame, and segments of
    /// `gso_size` must fit an IP datagram.
    pub fn validate(&self, frame: &[u8]) -> Result<Offload, VnetError> {
        let flags = self.flags();
        if flags & !KNOWN_FLAGS != 0 {
            return Err(VnetError::UnknownFlags { flags });
        }
        let hdr_len = usize::from(self.hdr_len());
        if hdr_len > frame.len() {
            return Err(VnetError::HdrLenBeyondFrame {
                hdr_len,
                frame_len: frame.len(),
            });
        }
        let checksum = if self.needs_csum() {
            let start = usize::from(self.csum_start());
            let offset = usize::from(self.csum_offset());
            if start + offset + 2 > frame.len() {
                return Err(VnetError::ChecksumOutOfFrame {
                    start,
                    offset,
                    frame_len: frame.len(),
                });
            }
            // The forwarding decision was made on the Ethernet header: a
            // checksum written into it would send the frame out with other
            // addresses or in another VLAN than it was switched in.
            let header_len = ethernet_header_len(frame);
            if start < header_len {
                return Err(VnetError::ChecksumInEthernetHeader { start, header_len });
            }
            Some(ChecksumRequest { start, offset })
        } else {
            None
        };

        let gso_type = self.gso_type();
        let ecn = gso_type & VIRTIO_NET_HDR_GSO_ECN as u8 != 0;
        let (gso, ip, transport) = match u32::from(gso_type & !(VIRTIO_NET_HDR_GSO_ECN as u8)) {
            VIRTIO_NET_HDR_GSO_NONE if !ecn => {
                return Ok(Offload {
                    segmentation: None,
                    checksum,
                });
            }
            VIRTIO_NET_HDR_GSO_TCPV4 => ("TCPV4", Some(IpVersion::V4), Transport::Tcp),
            VIRTIO_NET_HDR_GSO_TCPV6 => ("TCPV6", Some(IpVersion::V6), Transport::Tcp),
            VIRTIO_NET_HDR_GSO_UDP_L4 if !ecn => ("UDP_L4", None, Transport::Udp),
            VIRTIO_NET_HDR_GSO_NONE | VIRTIO_NET_HDR_GSO_UDP_L4 => {
                return Err(VnetError::EcnWithoutTcp { gso_type });
            }
            _ => return Err(VnetError::UnknownGsoType { gso_type }),
        };
        let gso_size = usize::from(self.gso_size());
        if gso_size == 0 {
            return Err(VnetError::ZeroGsoSize { gso });
        }
        let segmentation = parse_super_frame(frame, gso, ip, transport, gso_size)?;
        if let Some(ChecksumRequest { start, offset }) = checksum {
            let expected_offset = transport.checksum_offset();
            if start != segmentation.l4_offset || offset != expected_offset {
                return Err(VnetError::ChecksumNotTransport {
                    gso,
                    transport: transport.name(),
                    start,
                    offset,
                    l4_offset: segmentation.l4_offset,
                    expected_offset,
                });
            }
        }
        Ok(Offload {
            segmentation: Some(segmentation),
            checksum,
        })
    }
}

/// Length of `frame`'s Ethernet header with its outer VLAN tag (a runt counts
/// as having a whole one).
fn ethernet_header_len(frame: &[u8]) -> usize {
    if frame.len() < HEADER_LEN {
        return HEADER_LEN;
    }
    EthernetFrame::new_unchecked(frame).header_len()
}

/// Parses the Ethernet, IP and transport headers of a super-frame whose vnet
/// header said `gso` (`ip` is `None` when either IP version will do).
fn parse_super_frame(
    frame: &[u8],
    gso: &'static str,
    ip: Option<IpVersion>,
    transport: Transport,
    gso_size: usize,
) -> Result<Segmentation, VnetError> {
    let need = |header: &'static str, needed: usize| {
        if frame.len() < needed {
            Err(VnetError::Truncated {
                gso,
                header,
                needed,
                frame_len: frame.len(),
            })
        } else {
            Ok(())
        }
    };

    need("Ethernet", HEADER_LEN)?;
    // The accessors below read only what `need` has checked is there.
    let ethernet = EthernetFrame::new_unchecked(frame);
    let ethertype = if ethernet.ethertype() == ETHERTYPE_VLAN {
        need("802.1Q", HEADER_LEN + VLAN_TAG_LEN)?;
        ethernet.inner_ethertype()
    } else {
        ethernet.ethertype()
    };
    let l3_offset = ethernet.header_len();
    let found = match ethertype {
        ETHERTYPE_IPV4 => IpVersion::V4,
        ETHERTYPE_IPV6 => IpVersion::V6,
        _ => {
            return Err(VnetError::WrongNetwork {
                gso,
                ethertype,
                expected: ip.map_or("IPv4 or IPv6", IpVersion::name),
            });
        }
    };
    if ip.is_some_and(|ip| ip != found) {
        return Err(VnetError::WrongNetwork {
            gso,
            ethertype,
            expected: ip.map_or("IPv4 or IPv6", IpVersion::name),
        });
    }

    let ip_len = frame.len() - l3_offset;
    let (l4_offset, protocol) = match found {
        IpVersion::V4 => {
            need("IPv4", l3_offset + IPV4_MIN_HEADER_LEN)?;
            let packet = Ipv4Packet::new_unchecked(&frame[l3_offset..]);
            let version = packet.version();
            if version != 4 {
                return Err(VnetError::IpVersion { ethertype, version });
            }
            let header_len = packet.header_len();
            if header_len < IPV4_MIN_HEADER_LEN {
                return Err(VnetError::Ipv4HeaderLength { len: header_len });
            }
            need("IPv4", l3_offset + header_len)?;
            let declared = usize::from(packet.total_len());
            if declared != ip_len {
                return Err(VnetError::IpLength {
                    ip: "IPv4 total",
                    declared,
                    actual: ip_len,
                });
            }
            let (more, offset) = (packet.more_fragments(), packet.fragment_offset());
            if more || offset != 0 {
                return Err(VnetError::Ipv4Fragment { offset, more });
            }
            (l3_offset + header_len, packet.protocol())
        }
        IpVersion::V6 => {
            need("IPv6", l3_offset + IPV6_HEADER_LEN)?;
            let packet = Ipv6Packet::new_unchecked(&frame[l3_offset..]);
            let version = packet.version();
            if version != 6 {
                return Err(VnetError::IpVersion { ethertype, version });
            }
            let declared = usize::from(packet.payload_len());
            if declared + IPV6_HEADER_LEN != ip_len {
                return Err(VnetError::IpLength {
                    ip: "IPv6 payload",
                    declared,
                    actual: ip_len - IPV6_HEADER_LEN,
                });
            }
            (l3_offset + IPV6_HEADER_LEN, packet.next_header())
        }
    };
    if protocol != transport.protocol() {
        return Err(VnetError::WrongTransport {
            gso,
            protocol,
            expected: transport.name(),
        });
    }

    let l4_header_len = match transport {
        Transport::Tcp => {
            need("TCP", l4_offset + TCP_MIN_HEADER_LEN)?;
            let len = TcpSegment::new_unchecked(&frame[l4_offset..]).header_len();
            if len < TCP_MIN_HEADER_LEN {
                return Err(VnetError::TcpHeaderLength { len });
            }
            need("TCP", l4_offset + len)?;
            len
        }
        Transport::Udp => {
            need("UDP", l4_offset + UDP_HEADER_LEN)?;
            let declared = usize::from(UdpDatagram::new_unchecked(&frame[l4_offset..]).len());
            let actual = frame.len() - l4_offset;
            if declared != actual {
                return Err(VnetError::UdpLength { declared, actual });
            }
            UDP_HEADER_LEN
        }
    };

    // What the IP length field counts besides the payload.
    let counted_headers = match found {
        IpVersion::V4 => l4_offset - l3_offset + l4_header_len,
        IpVersion::V6 => l4_header_len,
    };
    let max = MAX_IP_LEN - counted_headers;
    if gso_size > max {
        return Err(VnetError::GsoSizeTooLarge { gso_size, max });
    }
    // Each segment is one write towards a port without offloads: bound what
    // one super-frame can cost, as Linux bounds what its senders make.
    let max_segments = match transport {
        Transport::Tcp if gso_size < TCP_MIN_GSO_SIZE => {
            return Err(VnetError::GsoSizeTooSmall {
                gso,
                gso_size,
                min: TCP_MIN_GSO_SIZE,
            });
        }
        Transport::Tcp => MAX_SEGMENTS,
        Transport::Udp => UDP_MAX_SEGMENTS,
    };
    let segments = (frame.len() - l4_offset - l4_header_len).div_ceil(gso_size);
    if segments > max_segments {
        return Err(VnetError::TooManySegments {
            gso,
            segments,
            gso_size,
            max: max_segments,
        });
    }
    Ok(Segmentation {
        ip: found,
        transport,
        l3_offset,
        l4_offset,
        l4_header_len,
        gso_size,
    })
}

/// Announces segments of `gso_size` payload bytes in `header` (a smaller size
/// than the sender's cuts a TCP super-frame finer; the frame is unchanged).
pub fn set_gso_size(header: &mut [u8; VNET_HDR_LEN], gso_size: u16) {
    header[field::GSO_SIZE].copy_from_slice(&gso_size.to_le_bytes());
}

/// Moves the frame offsets of a header (`csum_start` when the checksum is
/// pending, `hdr_len` when set) by `delta` bytes, for a frame that grew or
/// shrank by a VLAN tag in front of those offsets.
pub fn shift_frame_offsets(header: &mut [u8; VNET_HDR_LEN], delta: isize) {
    let shift = |bytes: &mut [u8], range: std::ops::Range<usize>| {
        let value = u16::from_le_bytes([bytes[range.start], bytes[range.start + 1]]);
        let moved = (value as isize + delta).clamp(0, u16::MAX as isize) as u16;
        bytes[range].copy_from_slice(&moved.to_le_bytes());
    };
    let view = VnetHeader { bytes: header };
    let (needs_csum, hdr_len) = (view.needs_csum(), view.hdr_len());
    if needs_csum {
        shift(header, field::CSUM_START);
    }
    if hdr_len != 0 {
        shift(header, field::HDR_LEN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_length_is_virtio_net_hdr_v1() {
        assert_eq!(VNET_HDR_LEN, 12);
    }

    #[test]
    fn plain_header_is_plain() {
        let hdr = VnetHeader::new(&PLAIN_HEADER).unwrap();
        assert!(hdr.is_plain());
        assert!(!hdr.is_gso());
        assert!(!hdr.needs_csum());
    }

    #[test]
    fn tso_header_fields_are_read_little_endian() {
        // flags NEEDS_CSUM, gso TCPV4, hdr_len 66, gso_size 1448, csum 34/16.
        let bytes = [1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0, 0, 0];
        let hdr = VnetHeader::new(&bytes).unwrap();
        assert!(hdr.is_gso());
        assert!(hdr.needs_csum());
        assert!(!hdr.is_plain());
        assert_eq!(hdr.hdr_len(), 66);
        assert_eq!(hdr.gso_size(), 1448);
        assert_eq!(hdr.csum_start(), 34);
        assert_eq!(hdr.csum_offset(), 16);
    }

    #[test]
    fn segments_fit_an_mtu_only_with_their_headers() {
        // IPv4 + TCP with timestamps: 20 + 32 bytes in front of each segment's payload.
        let layout = Segmentation {
            ip: IpVersion::V4,
            transport: Transport::Tcp,
            l3_offset: 14,
            l4_offset: 34,
            l4_header_len: 32,
            gso_size: 1448,
        };
        assert!(layout.fits_mtu(1500));
        assert!(!layout.fits_mtu(1499));
        let giant = Segmentation {
            gso_size: 4000,
            ..layout
        };
        assert!(!giant.fits_mtu(1500));
        assert!(giant.fits_mtu(9000));
    }

    #[test]
    fn a_layout_writes_the_header_a_kernel_would() {
        let layout = Segmentation {
            ip: IpVersion::V4,
            transport: Transport::Tcp,
            l3_offset: 14,
            l4_offset: 34,
            l4_header_len: 32,
            gso_size: 1448,
        };
        assert_eq!(
            layout.vnet_header(false),
            [1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0, 0, 0]
        );
        assert_eq!(layout.vnet_header(true)[1], 0x81);
        let v6 = Segmentation {
            ip: IpVersion::V6,
            l3_offset: 18,
            l4_offset: 58,
            ..layout
        };
        assert_eq!(
            v6.vnet_header(false),
            [1, 4, 90, 0, 0xa8, 0x05, 58, 0, 16, 0, 0, 0]
        );
        let udp = Segmentation {
            transport: Transport::Udp,
            l4_header_len: 8,
            ..layout
        };
        // No ECN bit for UDP, whatever is asked.
        assert_eq!(
            udp.vnet_header(true),
            [1, 5, 42, 0, 0xa8, 0x05, 34, 0, 6, 0, 0, 0]
        );
    }

    #[test]
    fn ecn_bit_alone_is_not_gso() {
        let mut bytes = PLAIN_HEADER;
        bytes[1] = VIRTIO_NET_HDR_GSO_ECN as u8;
        assert!(!VnetHeader::new(&bytes).unwrap().is_gso());
    }

    #[test]
    fn offsets_follow_a_pushed_or_popped_tag() {
        let mut bytes = [1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0, 0, 0];
        shift_frame_offsets(&mut bytes, 4);
        let hdr = VnetHeader::new(&bytes).unwrap();
        assert_eq!(
            (hdr.hdr_len(), hdr.csum_start(), hdr.csum_offset()),
            (70, 38, 16)
        );
        assert_eq!(hdr.gso_size(), 1448);
        shift_frame_offsets(&mut bytes, -4);
        assert_eq!(bytes, [1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0, 0, 0]);
        // Without a pending checksum or header length there is nothing to move.
        let mut plain = PLAIN_HEADER;
        shift_frame_offsets(&mut plain, 4);
        assert_eq!(plain, PLAIN_HEADER);
    }

    #[test]
    fn short_buffers_are_refused() {
        assert!(VnetHeader::new(&[0; 11]).is_none());
    }

    use crate::gso::test_frames::{Shape, vnet_header};
    use proptest::prelude::*;
    use virtio_bindings::virtio_net::VIRTIO_NET_HDR_GSO_UDP;

    const TCPV4: u8 = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
    const TCPV6: u8 = VIRTIO_NET_HDR_GSO_TCPV6 as u8;
    const UDP_L4: u8 = VIRTIO_NET_HDR_GSO_UDP_L4 as u8;
    const ECN: u8 = VIRTIO_NET_HDR_GSO_ECN as u8;

    fn tcp4() -> Shape {
        Shape::new(IpVersion::V4, Transport::Tcp, false)
    }

    fn validate(header: [u8; VNET_HDR_LEN], frame: &[u8]) -> Result<Offload, VnetError> {
        VnetHeader::new(&header).unwrap().validate(frame)
    }

    #[test]
    fn plain_frames_need_nothing() {
        let frame = tcp4().complete_frame(&[1; 100]);
        assert_eq!(validate(PLAIN_HEADER, &frame), Ok(Offload::PLAIN));
        assert!(Offload::PLAIN.is_plain());
        // DATA_VALID is what a kernel sets on frames whose checksum it checked.
        let data_valid = vnet_header(VIRTIO_NET_HDR_F_DATA_VALID as u8, 0, 0, 0, 0, 0);
        assert_eq!(validate(data_valid, &frame), Ok(Offload::PLAIN));
        // Not even an Ethernet header: nothing to check without offloads.
        assert_eq!(validate(PLAIN_HEADER, &[]), Ok(Offload::PLAIN));
    }

    #[test]
    fn every_shape_validates_to_its_layout() {
        for (ip, transport) in [
            (IpVersion::V4, Transport::Tcp),
            (IpVersion::V6, Transport::Tcp),
            (IpVersion::V4, Transport::Udp),
            (IpVersion::V6, Transport::Udp),
        ] {
            for vlan in [false, true] {
                let shape = Shape::new(ip, transport, vlan);
                let frame = shape.partial_frame(&[7; 5000]);
                let offload = validate(shape.gso_header(1400), &frame).unwrap();
                assert!(!offload.is_plain());
                assert_eq!(
                    offload.segmentation,
                    Some(Segmentation {
                        ip,
                        transport,
                        l3_offset: shape.l3_offset(),
                        l4_offset: shape.l4_offset(),
                        l4_header_len: shape.l4_header_len(),
                        gso_size: 1400,
                    }),
                    "{shape:?}"
                );
                assert_eq!(
                    offload.checksum,
                    Some(ChecksumRequest {
                        start: shape.l4_offset(),
                        offset: transport.checksum_offset(),
                    })
                );
                let csum_only = validate(shape.csum_header(), &frame).unwrap();
                assert_eq!(csum_only.segmentation, None);
                assert_eq!(csum_only.checksum, offload.checksum);
            }
        }
    }

    #[test]
    fn gso_without_needs_csum_is_accepted() {
        let shape = tcp4();
        let frame = shape.partial_frame(&[7; 3000]);
        let mut header = shape.gso_header(1000);
        header[0] = 0;
        let offload = validate(header, &frame).unwrap();
        assert!(offload.segmentation.is_some());
        assert_eq!(offload.checksum, None);
    }

    #[test]
    fn bad_header_fields_are_named() {
        let shape = tcp4();
        let frame = shape.partial_frame(&[7; 3000]);
        let len = frame.len();
        let with = |edit: &dyn Fn(&mut [u8; VNET_HDR_LEN])| {
            let mut header = shape.gso_header(1000);
            edit(&mut header);
            validate(header, &frame)
        };
        assert_eq!(
            with(&|h| h[0] = 0x04),
            Err(VnetError::UnknownFlags { flags: 0x04 })
        );
        // The old UFO type (3) and made-up ones are refused.
        let ufo = VIRTIO_NET_HDR_GSO_UDP as u8;
        assert_eq!(
            with(&|h| h[1] = ufo),
            Err(VnetError::UnknownGsoType { gso_type: ufo })
        );
        assert_eq!(
            with(&|h| h[1] = 9),
            Err(VnetError::UnknownGsoType { gso_type: 9 })
        );
        assert_eq!(
            with(&|h| h[1] = UDP_L4 | ECN),
            Err(VnetError::EcnWithoutTcp {
                gso_type: UDP_L4 | ECN
            })
        );
        assert_eq!(
            with(&|h| h[1] = ECN),
            Err(VnetError::EcnWithoutTcp { gso_type: ECN })
        );
        assert_eq!(
            with(&|h| h[4..6].fill(0)),
            Err(VnetError::ZeroGsoSize { gso: "TCPV4" })
        );
        assert_eq!(
            with(&|h| h[2..4].copy_from_slice(&(len as u16 + 1).to_le_bytes())),
            Err(VnetError::HdrLenBeyondFrame {
                hdr_len: len + 1,
                frame_len: len
            })
        );
        // The two checksum bytes must fit: start + offset + 2 <= len.
        assert_eq!(
            with(&|h| {
                h[1] = 0;
                h[6..8].copy_from_slice(&(len as u16 - 10).to_le_bytes());
                h[8..10].copy_from_slice(&9u16.to_le_bytes());
            }),
            Err(VnetError::ChecksumOutOfFrame {
                start: len - 10,
                offset: 9,
                frame_len: len
            })
        );
        assert!(
            with(&|h| {
                h[1] = 0;
                h[6..8].copy_from_slice(&(len as u16 - 10).to_le_bytes());
                h[8..10].copy_from_slice(&8u16.to_le_bytes());
            })
            .is_ok()
        );
        assert!(matches!(
            with(&|h| h[6..8].copy_from_slice(&40u16.to_le_bytes())),
            Err(VnetError::ChecksumNotTransport {
                start: 40,
                offset: 16,
                l4_offset: 34,
                expected_offset: 16,
                ..
            })
        ));
        assert!(matches!(
            with(&|h| h[8..10].copy_from_slice(&6u16.to_le_bytes())),
            Err(VnetError::ChecksumNotTransport { offset: 6, .. })
        ));
    }

    /// Found by `fuzz/` (target vnet): NEEDS_CSUM with csum_start 0 and
    /// csum_offset 0 was accepted, and completing the checksum overwrote the
    /// destination address after the forwarding decision; csum_start 14 on a
    /// tagged frame rewrote its VLAN tag (a frame switched in VLAN 10 left a
    /// trunk in another VLAN).
    #[test]
    fn checksums_never_land_in_the_ethernet_header() {
        #[rustfmt::skip]
        let tagged: [u8; 30] = [
            0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, // destination, source
            0x81, 0x00, 0x00, 0x0a, 0x08, 0x00, // 802.1Q VID 10, IPv4
            0x45, 0, 0, 12, 0, 0, 0x40, 0, 64, 17, 0, 0, // (IPv4 header, cut short)
        ];
        let needs_csum = |start: u16, offset: u16| {
            vnet_header(VIRTIO_NET_HDR_F_NEEDS_CSUM as u8, 0, 0, 0, start, offset)
        };
        for (start, offset) in [(0, 0), (0, 4), (6, 0), (12, 0), (14, 0), (16, 2)] {
            assert_eq!(
                validate(needs_csum(start, offset), &tagged),
                Err(VnetError::ChecksumInEthernetHeader {
                    start: usize::from(start),
                    header_len: 18
                }),
                "csum_start {start}, csum_offset {offset}"
            );
        }
        // Untagged, the header ends at 14; a QinQ S-tag counts as a tag.
        let mut untagged = tagged;
        untagged[12..14].copy_from_slice(&[0x08, 0x00]);
        assert!(matches!(
            validate(needs_csum(13, 4), &untagged),
            Err(VnetError::ChecksumInEthernetHeader { header_len: 14, .. })
        ));
        assert!(validate(needs_csum(14, 10), &untagged).is_ok());
        let mut qinq = tagged;
        qinq[12..14].copy_from_slice(&[0x88, 0xa8]);
        assert!(matches!(
            validate(needs_csum(14, 0), &qinq),
            Err(VnetError::ChecksumInEthernetHeader { header_len: 18, .. })
        ));
        assert!(validate(needs_csum(18, 10), &tagged).is_ok());
    }

    #[test]
    fn gso_size_must_leave_segments_that_fit_an_ip_datagram() {
        let shape = tcp4();
        let frame = shape.partial_frame(&[7; 100]);
        // IPv4 total length counts IP (20) and TCP (32) headers.
        let max = 65535 - 52;
        assert!(validate(shape.gso_header(max as u16), &frame).is_ok());
        assert_eq!(
            validate(shape.gso_header(max as u16 + 1), &frame),
            Err(VnetError::GsoSizeTooLarge {
                gso_size: max + 1,
                max
            })
        );
        // IPv6's payload length does not count its own header.
        let v6 = Shape::new(IpVersion::V6, Transport::Udp, true);
        let frame = v6.partial_frame(&[7; 100]);
        assert_eq!(
            validate(v6.gso_header(65535), &frame),
            Err(VnetError::GsoSizeTooLarge {
                gso_size: 65535,
                max: 65535 - 8
            })
        );
    }

    #[test]
    fn gso_type_must_match_the_frame() {
        let v4 = tcp4().partial_frame(&[7; 3000]);
        let v6_shape = Shape::new(IpVersion::V6, Transport::Tcp, true);
        let v6 = v6_shape.partial_frame(&[7; 3000]);
        let udp4_shape = Shape::new(IpVersion::V4, Transport::Udp, false);
        let udp4 = udp4_shape.partial_frame(&[7; 3000]);
        let gso = |gso_type: u8, shape: Shape| {
            let mut header = shape.gso_header(1000);
            header[1] = gso_type;
            header
        };
        assert_eq!(
            validate(gso(TCPV6, tcp4()), &v4),
            Err(VnetError::WrongNetwork {
                gso: "TCPV6",
                ethertype: ETHERTYPE_IPV4,
                expected: "IPv6"
            })
        );
        assert_eq!(
            validate(gso(TCPV4, v6_shape), &v6),
            Err(VnetError::WrongNetwork {
                gso: "TCPV4",
                ethertype: ETHERTYPE_IPV6,
                expected: "IPv4"
            })
        );
        assert_eq!(
            validate(gso(UDP_L4, tcp4()), &v4),
            Err(VnetError::WrongTransport {
                gso: "UDP_L4",
                protocol: IPPROTO_TCP,
                expected: "UDP"
            })
        );
        assert_eq!(
            validate(gso(TCPV4, udp4_shape), &udp4),
            Err(VnetError::WrongTransport {
                gso: "TCPV4",
                protocol: IPPROTO_UDP,
                expected: "TCP"
            })
        );
        let mut arp = v4.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(
            validate(gso(UDP_L4, tcp4()), &arp),
            Err(VnetError::WrongNetwork {
                gso: "UDP_L4",
                ethertype: 0x0806,
                expected: "IPv4 or IPv6"
            })
        );
        // Two tags: the inner one is not IP, so not a frame we segment.
        let mut qinq = v6.clone();
        qinq[16..18].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        assert!(matches!(
            validate(v6_shape.gso_header(1000), &qinq),
            Err(VnetError::WrongNetwork {
                ethertype: ETHERTYPE_VLAN,
                ..
            })
        ));
    }

    #[test]
    fn inconsistent_ip_and_transport_headers_are_refused() {
        let shape = tcp4();
        let frame = shape.partial_frame(&[7; 3000]);
        let header = shape.gso_header(1000);
        let edited = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut frame = frame.clone();
            edit(&mut frame);
            validate(header, &frame)
        };
        assert_eq!(
            edited(&|f| f[14] = 0x65),
            Err(VnetError::IpVersion {
                ethertype: ETHERTYPE_IPV4,
                version: 6
            })
        );
        assert_eq!(
            edited(&|f| f[14] = 0x44),
            Err(VnetError::Ipv4HeaderLength { len: 16 })
        );
        let ip_len = frame.len() - 14;
        assert_eq!(
            edited(&|f| f[16..18].copy_from_slice(&(ip_len as u16 - 1).to_be_bytes())),
            Err(VnetError::IpLength {
                ip: "IPv4 total",
                declared: ip_len - 1,
                actual: ip_len
            })
        );
        assert_eq!(
            edited(&|f| f[20] |= 0x20),
            Err(VnetError::Ipv4Fragment {
                offset: 0,
                more: true
            })
        );
        assert_eq!(
            edited(&|f| f[21] = 3),
            Err(VnetError::Ipv4Fragment {
                offset: 3,
                more: false
            })
        );
        assert_eq!(
            edited(&|f| f[34 + 12] = 0x40),
            Err(VnetError::TcpHeaderLength { len: 16 })
        );
        // Trailing bytes the IP header does not count.
        assert!(matches!(
            edited(&|f| f.push(0)),
            Err(VnetError::IpLength { .. })
        ));
        // IPv6 payload length.
        let v6 = Shape::new(IpVersion::V6, Transport::Tcp, false);
        let mut frame6 = v6.partial_frame(&[7; 3000]);
        frame6[18..20].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(
            validate(v6.gso_header(1000), &frame6),
            Err(VnetError::IpLength {
                ip: "IPv6 payload",
                declared: 1,
                actual: 3032
            })
        );
        // UDP length.
        let udp = Shape::new(IpVersion::V6, Transport::Udp, true);
        let mut frame_udp = udp.partial_frame(&[7; 3000]);
        let l4 = udp.l4_offset();
        frame_udp[l4 + 4..l4 + 6].copy_from_slice(&3000u16.to_be_bytes());
        assert_eq!(
            validate(udp.gso_header(1000), &frame_udp),
            Err(VnetError::UdpLength {
                declared: 3000,
                actual: 3008
            })
        );
    }

    #[test]
    fn truncated_super_frames_name_the_header() {
        let shape = Shape::new(IpVersion::V6, Transport::Tcp, true);
        let frame = shape.partial_frame(&[]);
        let header = shape.gso_header(1000);
        // With the header's hdr_len and checksum fields made to fit, only the
        // frame's own headers are cut short.
        for (cut, name) in [
            (10, "Ethernet"),
            (16, "802.1Q"),
            (30, "IPv6"),
            (shape.l4_offset() + 10, "TCP"),
            (shape.l4_offset() + 25, "TCP"),
        ] {
            let mut small = header;
            small[0] = 0;
            small[2..4].fill(0);
            let mut frame = frame[..cut].to_vec();
            if cut > shape.l4_offset() {
                // Keep the IPv6 length consistent so that TCP's is what fails.
                let payload_len = (cut - shape.l4_offset()) as u16;
                frame[22..24].copy_from_slice(&payload_len.to_be_bytes());
            }
            assert!(
                matches!(
                    validate(small, &frame),
                    Err(VnetError::Truncated { header, frame_len, .. }) if header == name && frame_len == cut
                ),
                "cut at {cut}: {:?}",
                validate(small, &frame)
            );
        }
    }

    #[test]
    fn errors_explain_themselves() {
        let message = VnetError::ChecksumOutOfFrame {
            start: 60,
            offset: 16,
            frame_len: 70,
        }
        .to_string();
        assert!(message.contains("csum_start 60") && message.contains("70-byte"));
    }

    proptest! {
        #[test]
        fn random_headers_and_frames_never_panic(
            header in proptest::array::uniform12(any::<u8>()),
            frame in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let offload = VnetHeader::new(&header).unwrap().validate(&frame);
            exercise(&frame, offload);
        }

        /// Near-valid input reaches deeper checks than random bytes do.
        #[test]
        fn mutated_super_frames_never_panic(
            shape_index in 0..4usize,
            vlan in any::<bool>(),
            payload_len in 0usize..3000,
            gso_size in 1u16..2000,
            edits in proptest::collection::vec((0usize..200, any::<u8>()), 1..4),
            header_edits in proptest::collection::vec((0usize..12, any::<u8>()), 0..2),
        ) {
            let (ip, transport) = [
                (IpVersion::V4, Transport::Tcp),
                (IpVersion::V6, Transport::Tcp),
                (IpVersion::V4, Transport::Udp),
                (IpVersion::V6, Transport::Udp),
            ][shape_index];
            let shape = Shape::new(ip, transport, vlan);
            let mut frame = shape.partial_frame(&vec![0x5a; payload_len]);
            let mut header = shape.gso_header(gso_size);
            for (at, value) in edits {
                if let Some(byte) = frame.get_mut(at) {
                    *byte = value;
                }
            }
            for (at, value) in header_edits {
                header[at] = value;
            }
            let offload = VnetHeader::new(&header).unwrap().validate(&frame);
            exercise(&frame, offload);
        }
    }

    /// Whatever validation accepted, the fallback must handle without panicking.
    fn exercise(frame: &[u8], offload: Result<Offload, VnetError>) {
        let Ok(offload) = offload else { return };
        let mut segmenter = crate::gso::Segmenter::new();
        if let Some(layout) = offload.segmentation {
            for mtu in [576, 1500] {
                let max_payload = layout.max_payload_for_mtu(mtu);
                let result = segmenter.segment(frame, &layout, max_payload, |segment| {
                    assert!(segment.len() <= frame.len().max(layout.headers_len()));
                    std::ops::ControlFlow::Continue(())
                });
                assert!(
                    result.is_ok()
                        || max_payload == 0
                        || (layout.transport == Transport::Udp && max_payload < layout.gso_size)
                );
            }
        }
        if let Some(request) = offload.checksum {
            assert_eq!(segmenter.with_checksum(frame, request).len(), frame.len());
        }
    }

    #[test]
    fn tiny_tcp_gso_sizes_are_refused() {
        for ip in [IpVersion::V4, IpVersion::V6] {
            let shape = Shape::new(ip, Transport::Tcp, false);
            let frame = shape.partial_frame(&[7; 300]);
            for gso_size in [1, 87] {
                assert!(
                    matches!(
                        validate(shape.gso_header(gso_size), &frame),
                        Err(VnetError::GsoSizeTooSmall { gso_size: size, min: 88, .. })
                            if size == usize::from(gso_size)
                    ),
                    "{shape:?} gso_size {gso_size}"
                );
            }
            assert!(validate(shape.gso_header(88), &frame).is_ok());
        }
        // UDP has no minimum: each piece is a datagram the sender chose.
        let udp = Shape::new(IpVersion::V4, Transport::Udp, false);
        let frame = udp.partial_frame(&[7; 100]);
        assert!(validate(udp.gso_header(1), &frame).is_ok());
    }

    #[test]
    fn segment_counts_are_capped() {
        let tcp = tcp4();
        let at_cap = tcp.partial_frame(&[7; 88 * MAX_SEGMENTS]);
        assert!(validate(tcp.gso_header(88), &at_cap).is_ok());
        let over = tcp.partial_frame(&[7; 88 * MAX_SEGMENTS + 1]);
        assert_eq!(
            validate(tcp.gso_header(88), &over),
            Err(VnetError::TooManySegments {
                gso: "TCPV4",
                segments: MAX_SEGMENTS + 1,
                gso_size: 88,
                max: MAX_SEGMENTS,
            })
        );
        for ip in [IpVersion::V4, IpVersion::V6] {
            let udp = Shape::new(ip, Transport::Udp, true);
            let at_cap = udp.partial_frame(&[7; 10 * UDP_MAX_SEGMENTS]);
            assert!(validate(udp.gso_header(10), &at_cap).is_ok(), "{udp:?}");
            let over = udp.partial_frame(&[7; 10 * UDP_MAX_SEGMENTS + 1]);
            assert!(
                matches!(
                    validate(udp.gso_header(10), &over),
                    Err(VnetError::TooManySegments {
                        segments: 129,
                        max: 128,
                        ..
                    })
                ),
                "{udp:?}"
            );
        }
    }
}
