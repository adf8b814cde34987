//! Micro-benchmarks of the software offloads in the core: cutting a 64 KiB TCP
//! super-frame into its 45 segments of 1448 bytes (`gso::Segmenter`, towards a
//! port without offloads) and coalescing those 45 segments back into one
//! super-frame (`gro::coalesce`, a VXLAN port's `UDP_GRO` train towards a port
//! with offloads), checksums verified and written. Run with
//! `cargo bench -p tapswitch-core --bench offload`; time is per super-frame.

use std::hint::black_box;
use std::ops::ControlFlow;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tapswitch_core::gro::{MAX_FRAME_LEN, coalesce};
use tapswitch_core::gso::Segmenter;
use tapswitch_core::vnet::{IpVersion, Segmentation, Transport, VNET_HDR_LEN};

const MSS: usize = 1448;
const SEGMENTS: usize = 45;

/// An IPv4 TCP super-frame (timestamps option, as Linux sends) of 45 x 1448
/// payload bytes and its layout; `Segmenter` writes every checksum itself.
fn super_frame() -> (Vec<u8>, Segmentation) {
    let payload = SEGMENTS * MSS;
    let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    frame.extend_from_slice(&[0x45, 0]);
    frame.extend_from_slice(&((20 + 32 + payload) as u16).to_be_bytes());
    frame.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    frame.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 7, 0x80, 0x10]);
    frame.extend_from_slice(&[0x01, 0xf5, 0, 0, 0, 0]);
    frame.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    frame.extend((0..payload).map(|i| (i * 7 + i / 251) as u8));
    let layout = Segmentation {
        ip: IpVersion::V4,
        transport: Transport::Tcp,
        l3_offset: 14,
        l4_offset: 34,
        l4_header_len: 32,
        gso_size: MSS,
    };
    (frame, layout)
}

fn offload(c: &mut Criterion) {
    let (frame, layout) = super_frame();
    let mut segmenter = Segmenter::new();
    let mut segments = Vec::new();
    segmenter
        .segment(&frame, &layout, MSS, |segment| {
            segments.push(segment.to_vec());
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(segments.len(), SEGMENTS);
    let views: Vec<&[u8]> = segments.iter().map(Vec::as_slice).collect();
    let mut out = vec![0; VNET_HDR_LEN + MAX_FRAME_LEN];
    assert_eq!(
        coalesce(&views, &mut out).frames,
        SEGMENTS,
        "the bench coalesces all 45"
    );

    let mut group = c.benchmark_group("offload");
    group.throughput(Throughput::Elements(1));
    group.bench_function("gro_coalesce_45x1448", |b| {
        b.iter(|| black_box(coalesce(black_box(&views), &mut out)))
    });
    group.bench_function("gso_segment_45x1448", |b| {
        b.iter(|| {
            segmenter
                .segment(black_box(&frame), &layout, MSS, |segment| {
                    black_box(segment);
                    ControlFlow::Continue(())
                })
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, offload);
criterion_main!(benches);
