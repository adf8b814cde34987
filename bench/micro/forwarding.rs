//! Micro-benchmarks of the pure forwarding core: the per-frame decision and
//! MAC table lookups at 1k, 64k and 1M entries. Run with
//! `cargo bench --bench forwarding`; throughput is reported in elements/s.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tapswitch_core::fdb::{Fdb, FdbConfig, PortId};
use tapswitch_core::forward::{Forwarder, PortPolicy};
use tapswitch_core::wire::MacAddr;

/// A locally administered unicast MAC derived from `n`.
fn mac(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([0x02, 0x00, b[0], b[1], b[2], b[3]])
}

/// A 64-byte frame from `src` to `dst`.
fn frame(dst: MacAddr, src: MacAddr) -> [u8; 64] {
    let mut frame = [0u8; 64];
    frame[0..6].copy_from_slice(&dst.0);
    frame[6..12].copy_from_slice(&src.0);
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    frame
}

/// A table of `entries` MACs spread over 8 ports.
fn table(entries: u32, now: Instant) -> Fdb {
    let mut fdb = Fdb::new(FdbConfig {
        ageing: Duration::from_secs(3600),
        capacity: entries as usize,
    });
    for n in 0..entries {
        fdb.learn(0, mac(n), PortId(n % 8), now);
    }
    fdb
}

fn fdb_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("fdb_lookup");
    let now = Instant::now();
    for entries in [1_000u32, 65_536, 1_048_576] {
        let fdb = table(entries, now);
        // A fixed pseudo-random walk over the keys defeats the prefetcher as real traffic would.
        let keys: Vec<MacAddr> = (0..4096u32)
            .map(|i| mac(i.wrapping_mul(2_654_435_761) % entries))
            .collect();
        group.throughput(Throughput::Elements(keys.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(entries), &keys, |b, keys| {
            b.iter(|| {
                for key in keys {
                    black_box(fdb.lookup(0, *key, now));
                }
            })
        });
    }
    group.finish();
}

fn decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    group.throughput(Throughput::Elements(1));
    let now = Instant::now();
    let mut forwarder = Forwarder::new(FdbConfig::default());
    for port in 0..4 {
        forwarder
            .add_port(PortId(port), PortPolicy::default())
            .unwrap();
    }
    let (a, b) = (mac(1), mac(2));
    let mut egress = Vec::with_capacity(8);
    forwarder.decide(PortId(1), &frame(a, b), now, &mut egress);
    forwarder.decide(PortId(0), &frame(b, a), now, &mut egress);

    let known = frame(b, a);
    group.bench_function("known_unicast", |bench| {
        bench.iter(|| black_box(forwarder.decide(PortId(0), black_box(&known), now, &mut egress)))
    });
    let broadcast = frame(MacAddr::BROADCAST, a);
    group.bench_function("broadcast_4_ports", |bench| {
        bench.iter(|| {
            black_box(forwarder.decide(PortId(0), black_box(&broadcast), now, &mut egress))
        })
    });
    group.finish();
}

criterion_group!(benches, fdb_lookup, decide);
criterion_main!(benches);
