//! The instructions one forwarded frame costs, for `bench/forward-cost` (callgrind):
//! `forward_frame` on a 64-byte known-unicast frame between two in-memory ports,
//! `FORWARD_COST_FRAMES` times (default 1000). Ignored by `cargo test`: it
//! measures, it checks nothing beyond the frames arriving.

use std::time::Instant;

use super::*;
use crate::dataplane::CaptureFilter;
use crate::dataplane::memory_port::MemoryPort;
use crate::fdb::FdbConfig;

fn frames() -> usize {
    std::env::var("FORWARD_COST_FRAMES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

/// A dataplane with two in-memory ports, the station behind port 1 learned.
fn two_ports() -> (Dataplane, PortId) {
    let (mut dataplane, _handle) = Dataplane::new(super::super::DataplaneConfig {
        poll_budget: 64,
        idle_poll: Duration::ZERO,
        threads: 1,
        fdb: FdbConfig::default(),
        adaptive_poll_pct: 0,
        realtime_priority: None,
        cpus: Vec::new(),
        cpus_required: false,
        allowed_cpus: Vec::new(),
    })
    .unwrap();
    let a = memory_port(&mut dataplane, 0, "a");
    let b = memory_port(&mut dataplane, 1, "b");
    let to_b = frame([0x02, 0, 0, 0, 0, 0x0b], [0x02, 0, 0, 0, 0, 0x0a]);
    let from_b = frame([0x02, 0, 0, 0, 0, 0x0a], [0x02, 0, 0, 0, 0, 0x0b]);
    // b's station speaks first: learned, so a's frames go to b only.
    dataplane.buffer[..64].copy_from_slice(&from_b);
    dataplane.forward_frame(b, 64, Instant::now());
    dataplane.buffer[..64].copy_from_slice(&to_b);
    (dataplane, a)
}

/// Puts an in-memory port in slot `index` (not polled: it has no fd).
fn memory_port(dataplane: &mut Dataplane, index: u32, name: &str) -> PortId {
    let id = PortId(index);
    dataplane
        .forwarder()
        .add_port(id, PortPolicy::default())
        .unwrap();
    dataplane.ports.resize_with(index as usize + 1, || None);
    dataplane.ports[index as usize] = Some(super::super::PortSlot {
        port: Arc::new(MemoryPort::new(name, 0)),
        mtu: 1500,
        link_up: true,
        counters: PortCounters::default(),
        reads: 0,
        ready: 0,
    });
    id
}

fn frame(dst: [u8; 6], src: [u8; 6]) -> [u8; 64] {
    let mut frame = [0u8; 64];
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    frame
}

#[test]
#[ignore = "a measurement for bench/forward-cost, run under callgrind"]
fn forward_cost() {
    let (mut dataplane, a) = two_ports();
    let now = Instant::now();
    let frames = frames();
    for _ in 0..frames {
        dataplane.forward_frame(a, 64, now);
    }
    let snapshot = dataplane.counters();
    let tx: u64 = snapshot.ports.iter().map(|p| p.counters.tx_frames).sum();
    assert_eq!(tx as usize, frames + 1);
}

#[test]
#[ignore = "a measurement for bench/forward-cost, run under callgrind"]
fn forward_cost_capturing() {
    let (mut dataplane, a) = two_ports();
    let session = dataplane.capture.start(CaptureFilter {
        port: None,
        drops: true,
        snaplen: super::super::DEFAULT_SNAPLEN,
    });
    // What `serve_port` reads once per batch.
    dataplane.capturing = dataplane.capture.is_active();
    let now = Instant::now();
    let frames = frames();
    let mut captured = 0;
    for i in 0..frames {
        dataplane.forward_frame(a, 64, now);
        if i % 256 == 255 {
            captured += std::iter::from_fn(|| session.next(Duration::ZERO)).count();
        }
    }
    captured += std::iter::from_fn(|| session.next(Duration::ZERO)).count();
    // In and out: two copies a frame, none lost.
    assert_eq!((captured, session.lost()), (2 * frames, 0));
}
