//! The `virtio_net_hdr_v1` that precedes each frame on a port opened with a
//! vnet header: a zero-copy view, in the manner of the `wire` module.
//!
//! The header tells whether the frame is a segmentation-offload super-frame
//! (GSO) and whether its checksum is still to be computed. The dataplane uses
//! it to let super-frames past the MTU check and to know whether a frame can
//! be handed to a port without offloads.

use virtio_bindings::virtio_net::{
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
};

pub use crate::tap::VNET_HDR_LEN;

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
}
