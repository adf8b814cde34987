//! The VXLAN header (RFC 7348) in front of a tunnelled Ethernet frame, in the
//! style of [`EthernetFrame`](super::EthernetFrame); the outer UDP header a
//! VTEP puts in front of it; and the UDP source port that gives the underlay
//! entropy (ECMP) per inner flow.
//!
//! ```text
//!  0               1               2               3
//! |R|R|R|R|I|R|R|R|            Reserved                          |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```
//!
//! RFC 7348 says reserved bits are "ignored on receipt"; Linux's own VTEP
//! (`vxlan_rcv`) drops a packet with any flag but I or a reserved bit set
//! (they would be an extension such as GBP or GPE it was not told to
//! expect), and so does this view: [`VxlanHeader::check`] reports each kind
//! of malformation as its own [`WireError`].

use super::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, EthernetFrame, IPPROTO_TCP, IPPROTO_UDP, WireError};
use super::{UDP_HEADER_LEN, checksum, read_u16, write_u16};

/// The VXLAN header.
pub const VXLAN_HEADER_LEN: usize = 8;
/// The I flag: the VNI field is valid. The only flag RFC 7348 defines.
pub const VXLAN_FLAG_VNI: u8 = 0x08;
/// The largest VNI (24 bits).
pub const VNI_MAX: u32 = 0x00ff_ffff;
/// The UDP port IANA assigned to VXLAN (RFC 7348). Linux's `ip link add
/// type vxlan` uses 8472 unless given `dstport`.
pub const VXLAN_UDP_PORT: u16 = 4789;
/// Bytes an IPv4 underlay adds to an inner frame's IP packet: the inner
/// Ethernet header (14), VXLAN (8), UDP (8) and IPv4 (20). An underlay MTU
/// of 1500 leaves an inner MTU of 1450.
pub const VXLAN_IPV4_OVERHEAD: usize = super::HEADER_LEN + VXLAN_HEADER_LEN + UDP_HEADER_LEN + 20;
/// The range outer UDP source ports are drawn from (as Linux's VTEP does,
/// by flow hash), so that underlay routers spread flows over paths.
pub const SOURCE_PORT_RANGE: std::ops::RangeInclusive<u16> = 49152..=65535;

mod field {
    use std::ops::Range;
    pub const FLAGS: usize = 0;
    /// Reserved after the flags.
    pub const RESERVED_1: Range<usize> = 1..4;
    pub const VNI: Range<usize> = 4..7;
    pub const RESERVED_2: usize = 7;
}

/// A view of a VXLAN header and the Ethernet frame behind it.
#[derive(Debug, Clone)]
pub struct VxlanHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanHeader<T> {
    /// Wraps `buffer` without checks: accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        VxlanHeader { buffer }
    }

    /// Wraps `buffer` after [`Self::check`]: a whole header, I flag set,
    /// reserved bits clear.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let header = Self::new_unchecked(buffer);
        header.check()?;
        Ok(header)
    }

    /// Fails unless the buffer holds the 8-byte header.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < VXLAN_HEADER_LEN {
            return Err(WireError::Runt {
                len,
                min: VXLAN_HEADER_LEN,
            });
        }
        Ok(())
    }

    /// [`Self::check_len`], then the flags (I set, nothing else) and the
    /// reserved fields (zero).
    pub fn check(&self) -> Result<(), WireError> {
        self.check_len()?;
        let flags = self.flags();
        if flags & VXLAN_FLAG_VNI == 0 {
            return Err(WireError::VxlanNoVni { flags });
        }
        if flags != VXLAN_FLAG_VNI {
            return Err(WireError::VxlanFlags { flags });
        }
        let bytes = self.buffer.as_ref();
        if bytes[field::RESERVED_1].iter().any(|&b| b != 0) || bytes[field::RESERVED_2] != 0 {
            return Err(WireError::VxlanReserved);
        }
        Ok(())
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The 24-bit VXLAN network identifier.
    pub fn vni(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }

    /// The tunnelled frame (not checked here).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[VXLAN_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanHeader<T> {
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the VNI, which must be at most [`VNI_MAX`] (higher bits are cut).
    pub fn set_vni(&mut self, vni: u32) {
        let bytes = (vni & VNI_MAX).to_be_bytes();
        self.buffer.as_mut()[field::VNI].copy_from_slice(&bytes[1..]);
    }

    /// Writes a whole header: I flag, `vni`, reserved fields zero.
    pub fn emit(&mut self, vni: u32) {
        self.buffer.as_mut()[..VXLAN_HEADER_LEN].fill(0);
        self.set_flags(VXLAN_FLAG_VNI);
        self.set_vni(vni);
    }
}

/// The 8-byte header of a VXLAN packet for `vni`.
pub fn vxlan_header(vni: u32) -> [u8; VXLAN_HEADER_LEN] {
    let mut bytes = [0; VXLAN_HEADER_LEN];
    VxlanHeader::new_unchecked(&mut bytes[..]).emit(vni);
    bytes
}

/// A hash of the inner frame's flow: addresses and ethertype, and for
/// IPv4/IPv6 the IP addresses, protocol and TCP/UDP ports (not for
/// fragments after the first, which carry no ports: they would hash apart
/// from their flow). Frames of one flow hash alike, so they take one
/// underlay path and stay in order.
pub fn inner_flow_hash(frame: &[u8]) -> u32 {
    let Ok(ethernet) = EthernetFrame::new_checked(frame) else {
        return fnv1a(FNV_OFFSET, frame);
    };
    let mut hash = fnv1a(FNV_OFFSET, &frame[..12]);
    let ethertype = ethernet.inner_ethertype();
    hash = fnv1a(hash, &ethertype.to_be_bytes());
    let ip = ethernet.payload();
    let (addresses, protocol, l4) = match ethertype {
        ETHERTYPE_IPV4 if ip.len() >= 20 && ip[0] >> 4 == 4 => {
            let header_len = usize::from(ip[0] & 0x0f) * 4;
            let first_fragment = read_u16(ip, 6) & 0x1fff == 0;
            let l4 = ip.get(header_len..).filter(|_| first_fragment);
            (&ip[12..20], ip[9], l4)
        }
        ETHERTYPE_IPV6 if ip.len() >= 40 && ip[0] >> 4 == 6 => (&ip[8..40], ip[6], ip.get(40..)),
        _ => return hash,
    };
    hash = fnv1a(hash, addresses);
    hash = fnv1a(hash, &[protocol]);
    if matches!(protocol, IPPROTO_TCP | IPPROTO_UDP)
        && let Some(ports) = l4.and_then(|l4| l4.get(..4))
    {
        hash = fnv1a(hash, ports);
    }
    hash
}

/// The outer UDP source port for a flow of `hash`, in [`SOURCE_PORT_RANGE`]
/// (scaled as Linux's `udp_flow_src_port` does, not reduced modulo).
pub fn source_port(hash: u32) -> u16 {
    let (low, high) = (*SOURCE_PORT_RANGE.start(), *SOURCE_PORT_RANGE.end());
    let span = u64::from(high - low) + 1;
    // Mix the bits first: FNV's high bits are weak for short inputs.
    let mixed = u64::from(hash.wrapping_mul(0x9e37_79b1) ^ (hash >> 16)) & 0xffff_ffff;
    low + ((mixed * span) >> 32) as u16
}

/// The length and unfolded checksum of a UDP payload (the VXLAN header and the
/// inner frame), summed once and shared by every copy of a replicated packet:
/// only the pseudo-header differs between remotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPayload {
    len: usize,
    sum: u64,
}

impl UdpPayload {
    /// Sums `pieces` in order; a piece may start at an odd offset.
    pub fn of(pieces: &[&[u8]]) -> Self {
        let (mut len, mut sum) = (0, 0);
        for piece in pieces {
            // A piece that starts at an odd offset sums byte-swapped (RFC 1071's
            // byte-order independence).
            let folded = checksum::fold(checksum::sum(piece, 0));
            sum += u64::from(if len % 2 == 1 {
                folded.swap_bytes()
            } else {
                folded
            });
            len += piece.len();
        }
        UdpPayload { len, sum }
    }
}

/// The UDP header of a VXLAN packet over IPv4 from `source` to
/// `destination` carrying `payload`, checksum included.
pub fn udp_header_ipv4(
    source: ([u8; 4], u16),
    destination: ([u8; 4], u16),
    payload: &UdpPayload,
) -> [u8; UDP_HEADER_LEN] {
    let udp_len = UDP_HEADER_LEN + payload.len;
    let mut header = [0u8; UDP_HEADER_LEN];
    write_u16(&mut header, 0, source.1);
    write_u16(&mut header, 2, destination.1);
    // A length over 65535 cannot be sent; the kernel refuses the datagram.
    write_u16(&mut header, 4, udp_len as u16);
    let mut addresses = [0u8; 8];
    addresses[..4].copy_from_slice(&source.0);
    addresses[4..].copy_from_slice(&destination.0);
    let mut sum = checksum::pseudo_header_sum(&addresses, IPPROTO_UDP, udp_len);
    sum = checksum::sum(&header, sum) + payload.sum;
    // A computed 0 is sent as all ones: 0 means "no checksum" in UDP over IPv4.
    let checksum = match !checksum::fold(sum) {
        0 => 0xffff,
        value => value,
    };
    write_u16(&mut header, 6, checksum);
    header
}

const FNV_OFFSET: u32 = 0x811c_9dc5;

fn fnv1a(mut hash: u32, bytes: &[u8]) -> u32 {
    for &byte in bytes {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VNI 100 (0x000064), I flag, then the start of an inner frame.
    const PACKET: [u8; 10] = [0x08, 0, 0, 0, 0x00, 0x00, 0x64, 0, 0xaa, 0xbb];

    #[test]
    fn fields_of_a_valid_header() {
        let header = VxlanHeader::new_checked(&PACKET[..]).unwrap();
        assert_eq!(header.flags(), VXLAN_FLAG_VNI);
        assert_eq!(header.vni(), 100);
        assert_eq!(header.payload(), &[0xaa, 0xbb]);
        let top = [0x08, 0, 0, 0, 0xff, 0xff, 0xfe, 0];
        assert_eq!(VxlanHeader::new_checked(&top[..]).unwrap().vni(), 0xff_fffe);
    }

    #[test]
    fn emit_writes_a_clean_header_and_set_vni_keeps_24_bits() {
        let mut bytes = [0xffu8; 9];
        VxlanHeader::new_unchecked(&mut bytes[..]).emit(0x12_3456);
        assert_eq!(bytes, [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0, 0xff]);
        assert_eq!(vxlan_header(100), PACKET[..8]);
        let mut bytes = vxlan_header(1);
        VxlanHeader::new_unchecked(&mut bytes[..]).set_vni(0x0100_0002);
        assert_eq!(bytes, [0x08, 0, 0, 0, 0, 0, 2, 0]);
    }

    #[test]
    fn malformed_headers_are_told_apart() {
        assert_eq!(
            VxlanHeader::new_checked(&PACKET[..7]).unwrap_err(),
            WireError::Runt { len: 7, min: 8 }
        );
        let mut no_vni = PACKET;
        no_vni[0] = 0x00;
        assert_eq!(
            VxlanHeader::new_checked(&no_vni[..]).unwrap_err(),
            WireError::VxlanNoVni { flags: 0 }
        );
        let mut gbp = PACKET;
        gbp[0] = 0x88;
        assert_eq!(
            VxlanHeader::new_checked(&gbp[..]).unwrap_err(),
            WireError::VxlanFlags { flags: 0x88 }
        );
        for at in [1, 2, 3, 7] {
            let mut reserved = PACKET;
            reserved[at] = 0x01;
            assert_eq!(
                VxlanHeader::new_checked(&reserved[..]).unwrap_err(),
                WireError::VxlanReserved,
                "byte {at}"
            );
        }
        // Exactly a header and nothing behind it is well formed (the frame is
        // checked as a frame).
        assert!(VxlanHeader::new_checked(&PACKET[..8]).is_ok());
    }

    /// An untagged TCP/IPv4 frame 10.0.0.1:src -> 10.0.0.2:dst.
    fn tcp_frame(src: u16, dst: u16) -> Vec<u8> {
        let mut frame = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        frame.extend_from_slice(&[0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0]);
        frame.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        frame.extend_from_slice(&src.to_be_bytes());
        frame.extend_from_slice(&dst.to_be_bytes());
        frame.extend_from_slice(&[0; 16]);
        frame
    }

    #[test]
    fn the_flow_hash_follows_the_flow_and_the_port_stays_in_range() {
        let a = tcp_frame(40000, 5201);
        let mut a_later = a.clone();
        a_later[14 + 4] = 0x77; // another IP ident: same flow
        assert_eq!(inner_flow_hash(&a), inner_flow_hash(&a_later));
        let ports: std::collections::HashSet<u16> = (40000..40064)
            .map(|src| source_port(inner_flow_hash(&tcp_frame(src, 5201))))
            .collect();
        assert!(
            ports.len() > 48,
            "{} distinct ports of 64 flows",
            ports.len()
        );
        for hash in [0, 1, u32::MAX, 0x8000_0000, 12345] {
            assert!(SOURCE_PORT_RANGE.contains(&source_port(hash)));
        }
        // Short or odd frames hash too, without panicking.
        let _ = inner_flow_hash(&[1, 2, 3]);
        let _ = inner_flow_hash(&a[..20]);
    }

    #[test]
    fn the_udp_checksum_verifies_over_pseudo_header_and_payload() {
        let inner = tcp_frame(1, 2);
        let inner = &inner[..inner.len() - 1]; // odd length, last piece
        let vxlan = vxlan_header(7);
        let (src, dst) = ([10, 1, 0, 1], [10, 1, 0, 2]);
        let header = udp_header_ipv4((src, 50000), (dst, 4789), &UdpPayload::of(&[&vxlan, inner]));
        // Cut anywhere, at odd offsets too, the pieces checksum the same.
        let pieces = [&vxlan[..3], &vxlan[3..], &inner[..13], &inner[13..]];
        assert_eq!(
            udp_header_ipv4((src, 50000), (dst, 4789), &UdpPayload::of(&pieces)),
            header
        );
        assert_eq!(read_u16(&header, 0), 50000);
        assert_eq!(read_u16(&header, 2), 4789);
        let udp_len = 8 + 8 + inner.len();
        assert_eq!(usize::from(read_u16(&header, 4)), udp_len);
        let datagram = [&header[..], &vxlan, inner].concat();
        let addresses = [src, dst].concat();
        let sum = checksum::pseudo_header_sum(&addresses, IPPROTO_UDP, udp_len);
        assert_eq!(checksum::fold(checksum::sum(&datagram, sum)), 0xffff);
        assert_eq!(VXLAN_IPV4_OVERHEAD, 50);
    }
}
