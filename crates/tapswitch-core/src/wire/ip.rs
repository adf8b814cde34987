//! Zero-copy views of IPv4 and IPv6 headers, in the style of
//! [`EthernetFrame`](super::EthernetFrame): check once, then read and write
//! fields in place.

use super::{WireError, checksum, read_u16, write_u16};

/// Ethertype of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethertype of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// Fixed part of an IPv4 header (IHL 5).
pub const IPV4_MIN_HEADER_LEN: usize = 20;
/// The fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;

mod field4 {
    use std::ops::Range;
    pub const VERSION_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLAGS_FRAGMENT: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    /// Source then destination, as the pseudo-header sums them.
    pub const ADDRESSES: Range<usize> = 12..20;
}

mod field6 {
    use std::ops::Range;
    pub const VERSION: usize = 0;
    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VERSION_CLASS_FLOW: Range<usize> = 0..4;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    /// Source then destination, as the pseudo-header sums them.
    pub const ADDRESSES: Range<usize> = 8..40;
}

const RESERVED_FLAG: u16 = 0x8000;
const DONT_FRAGMENT: u16 = 0x4000;
const MORE_FRAGMENTS: u16 = 0x2000;
const FRAGMENT_OFFSET: u16 = 0x1fff;

/// A view of an IPv4 header and what follows it.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` without checks: accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps `buffer` after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Fails unless the buffer holds the fixed header, an IHL of at least 5
    /// and the whole header the IHL announces.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < IPV4_MIN_HEADER_LEN {
            return Err(WireError::Runt {
                len,
                min: IPV4_MIN_HEADER_LEN,
            });
        }
        let header_len = self.header_len();
        if header_len < IPV4_MIN_HEADER_LEN {
            return Err(WireError::HeaderLength {
                header: "IPv4",
                len: header_len,
                min: IPV4_MIN_HEADER_LEN,
            });
        }
        if len < header_len {
            return Err(WireError::Runt {
                len,
                min: header_len,
            });
        }
        Ok(())
    }

    /// The version field (4 in a real IPv4 header).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field4::VERSION_IHL] >> 4
    }

    /// Header length in bytes, from the IHL.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field4::VERSION_IHL] & 0x0f) * 4
    }

    /// Total length field: header and payload.
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field4::TOTAL_LEN.start)
    }

    /// The type-of-service byte (DSCP and ECN).
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field4::TOS]
    }

    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field4::IDENT.start)
    }

    /// The reserved flag, which must be zero.
    pub fn reserved_flag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field4::FLAGS_FRAGMENT.start) & RESERVED_FLAG != 0
    }

    /// The DF flag.
    pub fn dont_fragment(&self) -> bool {
        read_u16(self.buffer.as_ref(), field4::FLAGS_FRAGMENT.start) & DONT_FRAGMENT != 0
    }

    /// The MF flag.
    pub fn more_fragments(&self) -> bool {
        read_u16(self.buffer.as_ref(), field4::FLAGS_FRAGMENT.start) & MORE_FRAGMENTS != 0
    }

    /// Fragment offset in 8-byte units.
    pub fn fragment_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field4::FLAGS_FRAGMENT.start) & FRAGMENT_OFFSET
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field4::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field4::PROTOCOL]
    }

    pub fn header_checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field4::CHECKSUM.start)
    }

    /// Source and destination addresses, as the pseudo-header sums them.
    pub fn addresses(&self) -> &[u8] {
        &self.buffer.as_ref()[field4::ADDRESSES]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    pub fn set_total_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field4::TOTAL_LEN.start, len);
    }

    pub fn set_ident(&mut self, ident: u16) {
        write_u16(self.buffer.as_mut(), field4::IDENT.start, ident);
    }

    pub fn set_header_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), field4::CHECKSUM.start, checksum);
    }

    /// Recomputes the header checksum over the header the IHL announces.
    pub fn fill_checksum(&mut self) {
        self.set_header_checksum(0);
        let header_len = self.header_len();
        let sum = !checksum::fold(checksum::sum(&self.buffer.as_ref()[..header_len], 0));
        self.set_header_checksum(sum);
    }
}

/// A view of the fixed IPv6 header and what follows it.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buffer` without checks: accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps `buffer` after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Fails unless the buffer holds the 40-byte fixed header.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < IPV6_HEADER_LEN {
            return Err(WireError::Runt {
                len,
                min: IPV6_HEADER_LEN,
            });
        }
        Ok(())
    }

    /// The version field (6 in a real IPv6 header).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field6::VERSION] >> 4
    }

    pub fn traffic_class(&self) -> u8 {
        (self.version_class_flow() >> 20) as u8
    }

    pub fn flow_label(&self) -> u32 {
        self.version_class_flow() & 0x000f_ffff
    }

    fn version_class_flow(&self) -> u32 {
        let bytes = &self.buffer.as_ref()[field6::VERSION_CLASS_FLOW];
        u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field6::HOP_LIMIT]
    }

    /// Payload length field: everything after the fixed header.
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field6::PAYLOAD_LEN.start)
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field6::NEXT_HEADER]
    }

    /// Source and destination addresses, as the pseudo-header sums them.
    pub fn addresses(&self) -> &[u8] {
        &self.buffer.as_ref()[field6::ADDRESSES]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    pub fn set_payload_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field6::PAYLOAD_LEN.start, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IPv4, IHL 5, total 0x73, id 0x1234, DF, TTL 64, UDP, checksum 0xa62d,
    /// 192.168.0.1 -> .199 (the RFC 1071 sample header of `checksum`, id added).
    const V4: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0xa6, 0x2d, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn ipv4_fields() {
        let packet = Ipv4Packet::new_checked(&V4[..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.total_len(), 0x73);
        assert_eq!(packet.ident(), 0x1234);
        assert_eq!((packet.tos(), packet.ttl()), (0, 64));
        assert!(packet.dont_fragment());
        assert!(!packet.reserved_flag());
        assert!(!packet.more_fragments());
        assert_eq!(packet.fragment_offset(), 0);
        assert_eq!(packet.protocol(), IPPROTO_UDP);
        assert_eq!(packet.header_checksum(), 0xa62d);
        assert_eq!(packet.addresses(), &V4[12..20]);
        let mut fragment = V4;
        fragment[6..8].copy_from_slice(&[0x20, 0x05]);
        let packet = Ipv4Packet::new_unchecked(&fragment[..]);
        assert!(packet.more_fragments());
        assert!(!packet.dont_fragment());
        assert_eq!(packet.fragment_offset(), 5);
        fragment[6] = 0x80;
        assert!(Ipv4Packet::new_unchecked(&fragment[..]).reserved_flag());
    }

    #[test]
    fn ipv4_lengths_are_checked() {
        assert_eq!(
            Ipv4Packet::new_checked(&V4[..19]).unwrap_err(),
            WireError::Runt { len: 19, min: 20 }
        );
        let mut short_ihl = V4;
        short_ihl[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&short_ihl[..]).unwrap_err(),
            WireError::HeaderLength {
                header: "IPv4",
                len: 16,
                min: 20
            }
        );
        let mut options = V4;
        options[0] = 0x46;
        assert_eq!(
            Ipv4Packet::new_checked(&options[..]).unwrap_err(),
            WireError::Runt { len: 20, min: 24 }
        );
    }

    #[test]
    fn ipv4_setters_and_checksum_write_in_place() {
        let mut bytes = V4;
        let mut packet = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        packet.set_total_len(0x40);
        packet.set_ident(7);
        packet.fill_checksum();
        assert_eq!(packet.total_len(), 0x40);
        assert_eq!(packet.ident(), 7);
        assert_eq!(checksum::fold(checksum::sum(&bytes, 0)), 0xffff);
        // Back to the original fields, back to the captured checksum.
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_total_len(0x73);
        packet.set_ident(0x1234);
        packet.fill_checksum();
        assert_eq!(bytes, V4);
    }

    #[test]
    fn ipv6_fields_and_length() {
        let mut bytes = [0u8; 40];
        // Traffic class 0xb8, flow label 0x12345.
        bytes[0..4].copy_from_slice(&[0x6b, 0x81, 0x23, 0x45]);
        bytes[4..6].copy_from_slice(&[0x01, 0x02]);
        bytes[6] = IPPROTO_TCP;
        bytes[7] = 63;
        bytes[8] = 0xfd;
        bytes[39] = 0x02;
        let packet = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.payload_len(), 0x0102);
        assert_eq!(packet.next_header(), IPPROTO_TCP);
        assert_eq!(packet.traffic_class(), 0xb8);
        assert_eq!(packet.flow_label(), 0x12345);
        assert_eq!(packet.hop_limit(), 63);
        assert_eq!(packet.addresses().len(), 32);
        assert_eq!(packet.addresses()[0], 0xfd);
        assert_eq!(packet.addresses()[31], 0x02);
        let mut packet = Ipv6Packet::new_unchecked(&mut bytes[..]);
        packet.set_payload_len(9);
        assert_eq!(&bytes[4..6], &[0, 9]);
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..39]).unwrap_err(),
            WireError::Runt { len: 39, min: 40 }
        );
    }
}
