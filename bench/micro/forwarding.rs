//! Micro-benchmarks of the pure forwarding core: the per-frame decision, MAC
//! table lookups at 1k, 64k and 1M entries, and decisions per second with 1, 2,
//! 4 and 8 threads deciding at once on one shared state (the workers' old
//! `Mutex<Forwarder>` against `SharedForwarder`). Run with
//! `cargo bench --bench forwarding`; throughput is reported in elements/s.

use std::hint::black_box;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tapswitch_core::fdb::{Fdb, FdbConfig, PortId};
use tapswitch_core::forward::{Egress, Forwarder, PortPolicy};
use tapswitch_core::shared::{DecisionCache, SharedForwarder};
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

/// A forwarder with 8 ports where each of `threads` pairs of stations is known: thread
/// `t` sends from station `2t` on port `t % 8` to station `2t + 1` on the next port, as
/// a worker reading one port queue would. Returns the forwarder and each thread's frame.
fn stations(threads: u32, now: Instant) -> (Forwarder, Vec<(PortId, [u8; 64])>) {
    let mut forwarder = Forwarder::new(FdbConfig::default());
    for port in 0..8 {
        forwarder
            .add_port(PortId(port), PortPolicy::default())
            .unwrap();
    }
    let mut egress = Vec::new();
    let flows = (0..threads)
        .map(|t| {
            let (here, there) = (PortId(t % 8), PortId((t + 1) % 8));
            let (a, b) = (mac(2 * t), mac(2 * t + 1));
            forwarder.decide(there, &frame(a, b), now, &mut egress);
            forwarder.decide(here, &frame(b, a), now, &mut egress);
            (here, frame(b, a))
        })
        .collect();
    (forwarder, flows)
}

/// Runs `decide(thread, flow)` `iters` times on each of `flows.len()` threads started
/// together; the time from the start until the last one is done.
fn concurrently<S: Sync>(
    iters: u64,
    state: &S,
    flows: &[(PortId, [u8; 64])],
    decide: impl Fn(&S, &mut DecisionCache, &mut Vec<Egress>, PortId, &[u8], Instant) + Sync,
) -> Duration {
    let start = Barrier::new(flows.len() + 1);
    std::thread::scope(|scope| {
        for &(ingress, bytes) in flows {
            let (start, decide) = (&start, &decide);
            scope.spawn(move || {
                let mut cache = DecisionCache::default();
                let mut egress = Vec::with_capacity(8);
                let now = Instant::now();
                start.wait();
                for _ in 0..iters {
                    decide(
                        state,
                        &mut cache,
                        &mut egress,
                        ingress,
                        black_box(&bytes),
                        now,
                    );
                }
            });
        }
        start.wait();
        let began = Instant::now();
        // The scope joins every thread before it returns.
        began
    })
    .elapsed()
}

/// Decisions per second of all threads together, each deciding known unicast frames
/// of its own flow on one shared state: the old design (one `Mutex<Forwarder>`, locked
/// for each decision) against `SharedForwarder` (each thread with its own cache).
fn concurrent_decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("concurrent_decide");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for threads in [1u32, 2, 4, 8] {
        group.throughput(Throughput::Elements(u64::from(threads)));
        let now = Instant::now();
        let (forwarder, flows) = stations(threads, now);
        let locked = Mutex::new(forwarder.clone());
        group.bench_with_input(
            BenchmarkId::new("mutex", threads),
            &flows,
            |bench, flows| {
                bench.iter_custom(|iters| {
                    concurrently(
                        iters,
                        &locked,
                        flows,
                        |locked, _, egress, ingress, bytes, now| {
                            let mut forwarder = locked.lock().unwrap();
                            black_box(forwarder.decide(ingress, bytes, now, egress));
                        },
                    )
                })
            },
        );
        let shared = SharedForwarder::from_forwarder(forwarder);
        group.bench_with_input(
            BenchmarkId::new("shared", threads),
            &flows,
            |bench, flows| {
                bench.iter_custom(|iters| {
                    concurrently(
                        iters,
                        &shared,
                        flows,
                        |shared, cache, egress, ingress, bytes, now| {
                            black_box(shared.decide(cache, ingress, bytes, now, egress, |_, _| {}));
                        },
                    )
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, fdb_lookup, decide, concurrent_decide);
criterion_main!(benches);
