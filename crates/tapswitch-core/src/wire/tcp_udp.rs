//! Zero-copy views of TCP and UDP headers, in the style of
//! [`EthernetFrame`](super::EthernetFrame).

use super::{WireError, read_u16, write_u16};

/// A TCP header without options.
pub const TCP_MIN_HEADER_LEN: usize = 20;
/// The UDP header.
pub const UDP_HEADER_LEN: usize = 8;

/// TCP flag bits, as in the flags byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

mod tcp_field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
    pub const OPTIONS: usize = 20;
}

mod udp_field {
    use std::ops::Range;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Offset of the checksum inside a TCP header.
pub const TCP_CHECKSUM_OFFSET: usize = tcp_field::CHECKSUM.start;
/// Offset of the checksum inside a UDP header.
pub const UDP_CHECKSUM_OFFSET: usize = udp_field::CHECKSUM.start;

/// A view of a TCP header and its payload.
#[derive(Debug, Clone)]
pub struct TcpSegment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    /// Wraps `buffer` without checks: accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpSegment { buffer }
    }

    /// Wraps `buffer` after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let segment = Self::new_unchecked(buffer);
        segment.check_len()?;
        Ok(segment)
    }

    /// Fails unless the buffer holds the fixed header, a data offset of at
    /// least 5 and the options it announces.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < TCP_MIN_HEADER_LEN {
            return Err(WireError::Runt {
                len,
                min: TCP_MIN_HEADER_LEN,
            });
        }
        let header_len = self.header_len();
        if header_len < TCP_MIN_HEADER_LEN {
            return Err(WireError::HeaderLength {
                header: "TCP",
                len: header_len,
                min: TCP_MIN_HEADER_LEN,
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

    pub fn seq_number(&self) -> u32 {
        let bytes = &self.buffer.as_ref()[tcp_field::SEQ];
        u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }

    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), tcp_field::SRC_PORT.start)
    }

    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), tcp_field::DST_PORT.start)
    }

    pub fn ack_number(&self) -> u32 {
        let bytes = &self.buffer.as_ref()[tcp_field::ACK];
        u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }

    /// Header length with options, from the data offset.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[tcp_field::DATA_OFFSET] >> 4) * 4
    }

    /// The four bits between the data offset and the flags: reserved, the
    /// lowest being AccECN's AE (once NS).
    pub fn reserved_bits(&self) -> u8 {
        self.buffer.as_ref()[tcp_field::DATA_OFFSET] & 0x0f
    }

    pub fn window(&self) -> u16 {
        read_u16(self.buffer.as_ref(), tcp_field::WINDOW.start)
    }

    pub fn urgent_pointer(&self) -> u16 {
        read_u16(self.buffer.as_ref(), tcp_field::URGENT.start)
    }

    /// The options, as the data offset delimits them (panics on a buffer
    /// shorter than [`Self::header_len`]; [`Self::check_len`] rules that out).
    pub fn options(&self) -> &[u8] {
        let end = self.header_len().max(tcp_field::OPTIONS);
        &self.buffer.as_ref()[tcp_field::OPTIONS..end]
    }

    /// The flags byte (see [`tcp_flags`]).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[tcp_field::FLAGS]
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), tcp_field::CHECKSUM.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpSegment<T> {
    pub fn set_seq_number(&mut self, seq: u32) {
        self.buffer.as_mut()[tcp_field::SEQ].copy_from_slice(&seq.to_be_bytes());
    }

    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[tcp_field::FLAGS] = flags;
    }

    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), tcp_field::CHECKSUM.start, checksum);
    }
}

/// A view of a UDP header and its payload.
#[derive(Debug, Clone)]
pub struct UdpDatagram<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpDatagram<T> {
    /// Wraps `buffer` without checks: accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpDatagram { buffer }
    }

    /// Wraps `buffer` after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let datagram = Self::new_unchecked(buffer);
        datagram.check_len()?;
        Ok(datagram)
    }

    /// Fails unless the buffer holds the 8-byte header.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < UDP_HEADER_LEN {
            return Err(WireError::Runt {
                len,
                min: UDP_HEADER_LEN,
            });
        }
        Ok(())
    }

    /// Length field: header and payload.
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), udp_field::LENGTH.start)
    }

    /// Whether the length field says 0 (never a valid datagram).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), udp_field::CHECKSUM.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpDatagram<T> {
    pub fn set_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), udp_field::LENGTH.start, len);
    }

    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), udp_field::CHECKSUM.start, checksum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports 40000 -> 5001, seq 0x01020304, data offset 6 (one option word),
    /// flags PSH|ACK|FIN, window 1024, checksum 0xbeef, 4 option bytes.
    const TCP: [u8; 24] = [
        0x9c, 0x40, 0x13, 0x89, 0x01, 0x02, 0x03, 0x04, 0, 0, 0, 0, 0x60, 0x19, 0x04, 0x00, 0xbe,
        0xef, 0, 0, 1, 1, 1, 0,
    ];

    #[test]
    fn tcp_fields_and_setters() {
        let segment = TcpSegment::new_checked(&TCP[..]).unwrap();
        assert_eq!(segment.seq_number(), 0x0102_0304);
        assert_eq!((segment.src_port(), segment.dst_port()), (40000, 5001));
        assert_eq!(segment.ack_number(), 0);
        assert_eq!(segment.header_len(), 24);
        assert_eq!(segment.reserved_bits(), 0);
        assert_eq!(segment.window(), 1024);
        assert_eq!(segment.urgent_pointer(), 0);
        assert_eq!(segment.options(), &[1, 1, 1, 0]);
        assert_eq!(segment.flags(), 0x19);
        assert_eq!(segment.flags() & tcp_flags::FIN, tcp_flags::FIN);
        assert_eq!(segment.checksum(), 0xbeef);
        let mut bytes = TCP;
        let mut segment = TcpSegment::new_unchecked(&mut bytes[..]);
        segment.set_seq_number(0xfffe_fdfc);
        segment.set_flags(0x10);
        segment.set_checksum(0x1234);
        assert_eq!(&bytes[4..8], &[0xff, 0xfe, 0xfd, 0xfc]);
        assert_eq!(bytes[13], 0x10);
        assert_eq!(&bytes[16..18], &[0x12, 0x34]);
        assert_eq!(&bytes[..4], &TCP[..4]);
    }

    #[test]
    fn tcp_lengths_are_checked() {
        assert_eq!(
            TcpSegment::new_checked(&TCP[..19]).unwrap_err(),
            WireError::Runt { len: 19, min: 20 }
        );
        assert_eq!(
            TcpSegment::new_checked(&TCP[..23]).unwrap_err(),
            WireError::Runt { len: 23, min: 24 }
        );
        let mut short = TCP;
        short[12] = 0x40;
        assert_eq!(
            TcpSegment::new_checked(&short[..]).unwrap_err(),
            WireError::HeaderLength {
                header: "TCP",
                len: 16,
                min: 20
            }
        );
    }

    #[test]
    fn udp_fields_setters_and_length() {
        let mut bytes = [0x9c, 0x40, 0x13, 0x89, 0x00, 0x0c, 0xab, 0xcd, 1, 2, 3, 4];
        let datagram = UdpDatagram::new_checked(&bytes[..]).unwrap();
        assert_eq!(datagram.len(), 12);
        assert!(!datagram.is_empty());
        assert_eq!(datagram.checksum(), 0xabcd);
        let mut datagram = UdpDatagram::new_unchecked(&mut bytes[..]);
        datagram.set_len(9);
        datagram.set_checksum(0xffff);
        assert_eq!(&bytes[4..8], &[0, 9, 0xff, 0xff]);
        assert_eq!(
            UdpDatagram::new_checked(&bytes[..7]).unwrap_err(),
            WireError::Runt { len: 7, min: 8 }
        );
        assert_eq!(UDP_CHECKSUM_OFFSET, 6);
        assert_eq!(TCP_CHECKSUM_OFFSET, 16);
    }
}
