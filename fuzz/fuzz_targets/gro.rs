//! Software GRO on trains of TCP segments as a VXLAN port reads them: a
//! super-frame of the fuzzer's shape (IP version, VLAN tag, TCP options and
//! flags, sizes) cut into segments by the switch's GSO, then byte edits (with
//! or without checksums fixed after them) and foreign frames inserted.
//! Whatever `coalesce` builds must validate as a vnet super-frame, hold only
//! segments whose checksums verify (checked word by word here), and segment
//! back into exactly the frames it was made of (IPv4 ids aside when they were
//! fixed); a run of one is the frame as it is behind a plain header.
#![no_main]

use std::cell::RefCell;
use std::ops::ControlFlow;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tapswitch::gro::{MAX_FRAME_LEN, coalesce};
use tapswitch::gso::Segmenter;
use tapswitch::vnet::{IpVersion, PLAIN_HEADER, Segmentation, Transport, VNET_HDR_LEN, VnetHeader};
use tapswitch_fuzz::naive_sum;

#[derive(Arbitrary, Debug)]
struct Train {
    v6: bool,
    vlan: Option<u16>,
    /// 32-bit words of TCP options (0..=10).
    tcp_options: u8,
    tcp_flags: u8,
    seq: u32,
    ip_id: u16,
    payload_len: u16,
    payload_seed: u8,
    mss: u16,
    /// Bytes to overwrite: (segment, position, value).
    edits: Vec<(u8, u16, u8)>,
    /// Recompute the checksums of edited segments, so that edits reach the flow rules.
    refresh: bool,
    /// Frames of any bytes inserted before segment (index).
    foreign: Vec<(u8, Vec<u8>)>,
}

struct Built {
    frames: Vec<Vec<u8>>,
    l3: usize,
    l4: usize,
}

thread_local! {
    static SEGMENTER: RefCell<Segmenter> = RefCell::new(Segmenter::new());
    static OUT: RefCell<Vec<u8>> = RefCell::new(vec![0; VNET_HDR_LEN + MAX_FRAME_LEN]);
}

impl Train {
    fn build(&self, segmenter: &mut Segmenter) -> Built {
        let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        if let Some(tci) = self.vlan {
            frame.extend_from_slice(&0x8100u16.to_be_bytes());
            frame.extend_from_slice(&tci.to_be_bytes());
        }
        frame.extend_from_slice(&(if self.v6 { 0x86ddu16 } else { 0x0800 }).to_be_bytes());
        let l3 = frame.len();
        let l4_header_len = 20 + usize::from(self.tcp_options % 11) * 4;
        let ip_header_len = if self.v6 { 40 } else { 20 };
        let mss = usize::from(self.mss % 3000).max(1);
        let room = MAX_FRAME_LEN - l3 - ip_header_len - l4_header_len;
        // At most 300 segments keeps an execution short.
        let payload_len = (usize::from(self.payload_len) % (room + 1)).min(mss * 300);
        if self.v6 {
            frame.extend_from_slice(&[0x60, 0, 0, 0]);
            frame.extend_from_slice(&((l4_header_len + payload_len) as u16).to_be_bytes());
            frame.extend_from_slice(&[6, 64]);
            frame.extend_from_slice(&[0xfd; 16]);
            frame.extend_from_slice(&[0xfe; 16]);
        } else {
            frame.extend_from_slice(&[0x45, 0]);
            let total = ip_header_len + l4_header_len + payload_len;
            frame.extend_from_slice(&(total as u16).to_be_bytes());
            frame.extend_from_slice(&self.ip_id.to_be_bytes());
            frame.extend_from_slice(&[0x40, 0, 64, 6, 0, 0]);
            frame.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        }
        let l4 = frame.len();
        frame.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
        frame.extend_from_slice(&self.seq.to_be_bytes());
        frame.extend_from_slice(&7u32.to_be_bytes());
        frame.push(((l4_header_len / 4) as u8) << 4);
        frame.push(self.tcp_flags);
        frame.extend_from_slice(&[2, 0, 0, 0, 0, 0]);
        // NOPs, then a timestamp-like option body the edits can change.
        frame.extend((0..l4_header_len - 20).map(|i| if i < 2 { 1 } else { i as u8 }));
        frame.extend((0..payload_len).map(|i| (i as u8).wrapping_mul(31) ^ self.payload_seed));

        let layout = Segmentation {
            ip: if self.v6 {
                IpVersion::V6
            } else {
                IpVersion::V4
            },
            transport: Transport::Tcp,
            l3_offset: l3,
            l4_offset: l4,
            l4_header_len,
            gso_size: mss,
        };
        let mut frames = Vec::new();
        segmenter
            .segment(&frame, &layout, mss, |segment| {
                frames.push(segment.to_vec());
                ControlFlow::Continue(())
            })
            .expect("a consistent layout segments");

        let mut edited = vec![false; frames.len()];
        for &(index, at, value) in &self.edits {
            let index = usize::from(index) % frames.len();
            let segment = &mut frames[index];
            let at = usize::from(at) % segment.len();
            segment[at] = value;
            edited[index] = true;
        }
        if self.refresh {
            for (segment, _) in frames.iter_mut().zip(&edited).filter(|(_, e)| **e) {
                refresh(segment, l3, l4, self.v6);
            }
        }
        for (index, foreign) in &self.foreign {
            let index = usize::from(*index) % (frames.len() + 1);
            frames.insert(index, foreign.clone());
        }
        Built { frames, l3, l4 }
    }
}

fn pseudo_sum(frame: &[u8], l3: usize, l4: usize, v6: bool) -> u32 {
    let addresses = if v6 {
        &frame[l3 + 8..l3 + 40]
    } else {
        &frame[l3 + 12..l3 + 20]
    };
    u32::from(naive_sum(addresses, 0)) + 6 + (frame.len() - l4) as u32
}

/// Recomputes the IPv4 header and TCP checksums at the offsets built with.
fn refresh(frame: &mut [u8], l3: usize, l4: usize, v6: bool) {
    if frame.len() < l4 + 20 {
        return;
    }
    if !v6 {
        frame[l3 + 10..l3 + 12].fill(0);
        let checksum = !naive_sum(&frame[l3..l4], 0);
        frame[l3 + 10..l3 + 12].copy_from_slice(&checksum.to_be_bytes());
    }
    frame[l4 + 16..l4 + 18].fill(0);
    let checksum = !naive_sum(&frame[l4..], pseudo_sum(frame, l3, l4, v6));
    frame[l4 + 16..l4 + 18].copy_from_slice(&checksum.to_be_bytes());
}

/// Whether the segment's checksums verify, summed word by word.
fn verifies(frame: &[u8], l3: usize, l4: usize, v6: bool) -> bool {
    (v6 || naive_sum(&frame[l3..l4], 0) == 0xffff)
        && naive_sum(&frame[l4..], pseudo_sum(frame, l3, l4, v6)) == 0xffff
}

fuzz_target!(|input: Train| {
    SEGMENTER.with_borrow_mut(|segmenter| {
        OUT.with_borrow_mut(|out| {
            let Built { frames, l3, l4 } = input.build(segmenter);
            let views: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            let run = coalesce(&views, out);
            assert!((1..=frames.len()).contains(&run.frames), "{run:?}");
            let (header, frame) = out[..run.len].split_at(VNET_HDR_LEN);
            if run.frames == 1 {
                assert_eq!(header, PLAIN_HEADER);
                assert_eq!(frame, &frames[0][..]);
                return;
            }
            let layout = VnetHeader::new(header)
                .unwrap()
                .validate(frame)
                .expect("a coalesced super-frame validates")
                .segmentation
                .expect("a coalesced super-frame asks for segmentation");
            assert_eq!((layout.l3_offset, layout.l4_offset), (l3, l4));
            let run_frames = &frames[..run.frames];
            for (index, segment) in run_frames.iter().enumerate() {
                assert!(
                    verifies(segment, l3, l4, input.v6),
                    "segment {index} was coalesced with a bad checksum"
                );
            }
            let mut again = Vec::new();
            segmenter
                .segment(frame, &layout, layout.gso_size, |segment| {
                    again.push(segment.to_vec());
                    ControlFlow::Continue(())
                })
                .unwrap();
            assert_eq!(again.len(), run.frames, "segment count");
            let ids_fixed = !input.v6
                && run_frames
                    .iter()
                    .all(|s| s[l3 + 4..l3 + 6] == run_frames[0][l3 + 4..l3 + 6]);
            for (index, (mine, theirs)) in again.iter().zip(run_frames).enumerate() {
                if ids_fixed {
                    // Segmentation counts ids up; only the id and the header checksum differ.
                    let (mut mine, mut theirs) = (mine.clone(), theirs.clone());
                    for frame in [&mut mine, &mut theirs] {
                        frame[l3 + 4..l3 + 6].fill(0);
                        frame[l3 + 10..l3 + 12].fill(0);
                    }
                    assert_eq!(mine, theirs, "segment {index} (fixed ids)");
                } else {
                    assert_eq!(mine, theirs, "segment {index}");
                }
            }
        });
    });
});
