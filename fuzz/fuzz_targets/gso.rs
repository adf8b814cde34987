//! Software GSO on super-frames as an endpoint's kernel sends them, built from
//! the fuzzer's choice of IP version, transport, VLAN tag, IP and TCP options,
//! flags, sizes and a few byte edits. Unedited, every such frame must
//! validate; whatever validates must segment into well-formed frames within
//! every egress MTU, checksums right, payload intact.
#![no_main]

use std::cell::RefCell;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tapswitch::gso::Segmenter;
use tapswitch::vnet::{MAX_SEGMENTS, TCP_MIN_GSO_SIZE, UDP_MAX_SEGMENTS, VNET_HDR_LEN};

#[derive(Arbitrary, Debug)]
struct SuperFrame {
    v6: bool,
    udp: bool,
    vlan: Option<u16>,
    /// 32-bit words of IPv4 options (0..=10).
    ip_options: u8,
    /// 32-bit words of TCP options (0..=10).
    tcp_options: u8,
    tcp_flags: u8,
    seq: u32,
    ip_id: u16,
    payload_len: u16,
    payload_seed: u8,
    gso_size: u16,
    needs_csum: bool,
    ecn: bool,
    /// Frame bytes to overwrite: (position, value).
    edits: Vec<(u16, u8)>,
    /// Header bytes to overwrite: (position, value).
    header_edits: Vec<(u8, u8)>,
}

thread_local! {
    static SEGMENTER: RefCell<Segmenter> = RefCell::new(Segmenter::new());
}

fn put16(frame: &mut [u8], at: usize, value: u16) {
    frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

impl SuperFrame {
    fn build(&self) -> ([u8; VNET_HDR_LEN], Vec<u8>, bool) {
        let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        if let Some(tci) = self.vlan {
            frame.extend_from_slice(&0x8100u16.to_be_bytes());
            frame.extend_from_slice(&tci.to_be_bytes());
        }
        frame.extend_from_slice(&(if self.v6 { 0x86ddu16 } else { 0x0800 }).to_be_bytes());
        let l3 = frame.len();
        let protocol = if self.udp { 17u8 } else { 6 };
        let ip_options = if self.v6 {
            0
        } else {
            usize::from(self.ip_options % 11) * 4
        };
        let l4_header_len = if self.udp {
            8
        } else {
            20 + usize::from(self.tcp_options % 11) * 4
        };
        // Keep the IP datagram within 65535 bytes.
        let ip_header_len = if self.v6 { 40 } else { 20 + ip_options };
        let room = 65535 - ip_header_len - l4_header_len;
        // At most 256 segments at the smallest MTU's gso_size keeps an execution short.
        let payload_len = (usize::from(self.payload_len) % (room + 1))
            .min(usize::from(self.gso_size.max(1)) * 256);
        if self.v6 {
            frame.extend_from_slice(&[0x60, 0, 0, 0]);
            frame.extend_from_slice(&((l4_header_len + payload_len) as u16).to_be_bytes());
            frame.extend_from_slice(&[protocol, 64]);
            frame.extend_from_slice(&[0xfd; 16]);
            frame.extend_from_slice(&[0xfe; 16]);
        } else {
            frame.push(0x40 | (5 + ip_options / 4) as u8);
            frame.push(0);
            let total = ip_header_len + l4_header_len + payload_len;
            frame.extend_from_slice(&(total as u16).to_be_bytes());
            frame.extend_from_slice(&self.ip_id.to_be_bytes());
            frame.extend_from_slice(&[0x40, 0, 64, protocol, 0, 0]);
            frame.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            // NOPs and an end of options.
            frame.extend(std::iter::repeat_n(1, ip_options));
        }
        let l4 = frame.len();
        if self.udp {
            frame.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
            frame.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
            frame.extend_from_slice(&[0, 0]);
        } else {
            frame.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
            frame.extend_from_slice(&self.seq.to_be_bytes());
            frame.extend_from_slice(&7u32.to_be_bytes());
            frame.push(((l4_header_len / 4) as u8) << 4);
            frame.push(self.tcp_flags);
            frame.extend_from_slice(&[2, 0, 0, 0, 0, 0]);
            frame.extend(std::iter::repeat_n(1, l4_header_len - 20));
        }
        frame.extend((0..payload_len).map(|i| (i as u8).wrapping_mul(31) ^ self.payload_seed));

        // What a kernel with checksum offload leaves in the field: the pseudo-header sum.
        let checksum_offset = if self.udp { 6 } else { 16 };
        if self.needs_csum {
            let addresses = if self.v6 {
                &frame[l3 + 8..l3 + 40]
            } else {
                &frame[l3 + 12..l3 + 20]
            };
            let pseudo = tapswitch_fuzz::naive_sum(
                addresses,
                u32::from(protocol) + (frame.len() - l4) as u32,
            );
            put16(&mut frame, l4 + checksum_offset, pseudo);
        }
        let gso_type: u8 = match (self.udp, self.v6) {
            (true, _) => 5,
            (false, false) => 1,
            (false, true) => 4,
        } | if self.ecn && !self.udp { 0x80 } else { 0 };
        let mut header = [0u8; VNET_HDR_LEN];
        header[0] = u8::from(self.needs_csum);
        header[1] = gso_type;
        header[2..4].copy_from_slice(&((l4 + l4_header_len) as u16).to_le_bytes());
        header[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        header[6..8].copy_from_slice(&(l4 as u16).to_le_bytes());
        header[8..10].copy_from_slice(&(checksum_offset as u16).to_le_bytes());

        // Segments of gso_size must fit an IP datagram's length field.
        let counted = if self.v6 {
            l4_header_len
        } else {
            ip_header_len + l4_header_len
        };
        let well_formed = self.gso_size >= 1 && usize::from(self.gso_size) <= 65535 - counted;
        // Within the segment bounds validation keeps (Linux's own limits).
        let segments = payload_len.div_ceil(usize::from(self.gso_size.max(1)));
        let well_formed = well_formed
            && if self.udp {
                segments <= UDP_MAX_SEGMENTS
            } else {
                usize::from(self.gso_size) >= TCP_MIN_GSO_SIZE && segments <= MAX_SEGMENTS
            };
        let edited = !self.edits.is_empty() || !self.header_edits.is_empty();
        for &(at, value) in &self.edits {
            let at = usize::from(at) % frame.len();
            frame[at] = value;
        }
        for &(at, value) in &self.header_edits {
            header[usize::from(at) % VNET_HDR_LEN] = value;
        }
        (header, frame, well_formed && !edited)
    }
}

fuzz_target!(|input: SuperFrame| {
    let (header, frame, must_validate) = input.build();
    SEGMENTER.with_borrow_mut(|segmenter| {
        let accepted = tapswitch_fuzz::check_vnet(segmenter, &header, &frame);
        assert!(
            accepted || !must_validate,
            "a well-formed super-frame was refused: {:?}",
            tapswitch::vnet::VnetHeader::new(&header)
                .unwrap()
                .validate(&frame)
        );
    });
});
