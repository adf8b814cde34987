//! The internet checksum (RFC 1071): a one's-complement sum of big-endian
//! 16-bit words, kept wide and folded once at the end.

/// Adds `data`, read as big-endian 16-bit words (an odd last byte padded
/// with zero), to `sum` without folding. A u64 cannot overflow on any frame.
pub fn sum(data: &[u8], mut sum: u64) -> u64 {
    let mut words = data.chunks_exact(4);
    for word in &mut words {
        sum += u64::from(u32::from_be_bytes([word[0], word[1], word[2], word[3]]));
    }
    match *words.remainder() {
        [a, b, c] => sum + u64::from(u16::from_be_bytes([a, b])) + (u64::from(c) << 8),
        [a, b] => sum + u64::from(u16::from_be_bytes([a, b])),
        [a] => sum + (u64::from(a) << 8),
        _ => sum,
    }
}

/// Folds a wide one's-complement sum to 16 bits (end-around carry).
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The unfolded sum of a TCP or UDP pseudo-header: the source and destination
/// addresses (`addresses`, 8 bytes for IPv4, 32 for IPv6, as they lie in the
/// IP header), the protocol and the transport length. IPv6's 32-bit length
/// and IPv4's 16-bit one sum the same for any length a frame can have.
pub fn pseudo_header_sum(addresses: &[u8], protocol: u8, transport_len: usize) -> u64 {
    sum(addresses, 0) + u64::from(protocol) + transport_len as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example_sums_to_its_value() {
        // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        // Any split gives the same sum, odd tails padded with zero.
        assert_eq!(fold(sum(&data[..6], 0) + sum(&data[6..], 0)), 0xddf2);
        assert_eq!(sum(&[0xab], 0), 0xab00);
        assert_eq!(sum(&[1, 2, 3], 0), 0x0102 + 0x0300);
    }

    #[test]
    fn ipv4_header_checksum_verifies() {
        // The IPv4 header of a UDP datagram, checksum 0xb861 in place: sums to 0xffff.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(fold(sum(&header, 0)), 0xffff);
        let mut zeroed = header;
        zeroed[10..12].fill(0);
        assert_eq!(!fold(sum(&zeroed, 0)), 0xb861);
    }

    #[test]
    fn pseudo_header_counts_addresses_protocol_and_length() {
        let addresses = [10, 0, 0, 1, 10, 0, 0, 2];
        assert_eq!(
            fold(pseudo_header_sum(&addresses, 17, 12)),
            0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 17 + 12
        );
        assert_eq!(fold(0x1_fffe), 0xffff);
        assert_eq!(fold(0xffff_ffff_ffff), 0xffff);
    }
}
