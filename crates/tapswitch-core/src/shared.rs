//! One [`Forwarder`] shared by several dataplane workers, whose common case is decided
//! without taking its lock.
//!
//! # Why this design
//! A decision reads the ingress and egress policies and two MAC entries, and nearly
//! always writes only one thing: the source entry's last-seen time. Learning, moves,
//! evictions, storm buckets, flap records and limit violations are the rare frames (a
//! flood is capped by storm control; a new station is learned once). So the
//! authoritative state stays one `Forwarder` behind a mutex, with every rule in one place
//! and property-tested as before, and each worker keeps a private [`DecisionCache`] of
//! the decisions that wrote nothing but a refresh: a known unicast destination whose
//! source was only refreshed ([`Learned::Refreshed`]). A cached decision is valid while
//!
//! - the forwarder's [`Forwarder::version`] (ports, policies, flap settings, entries
//!   added, moved, pinned or removed) has not changed. The lock holder publishes it as a
//!   *generation*, an atomic counter, odd while a locked operation runs (seqlock style):
//!   readers compare it with the generation the decision was cached at, before and after;
//! - neither MAC entry it read has aged out by now: a dynamic entry's last-seen time lives,
//!   while decisions are cached on it, in a shared atomic cell ([`Seen`]) that lock-free
//!   hits refresh (`fetch_max`) and that the lock holder folds into the table before it
//!   reads or changes entries.
//!
//! A hit costs a header comparison, two atomic loads of the generation and one
//! `fetch_max`: no lock, and no write to a line another worker writes unless both see
//! the same source address. Per-worker replicas fed by a learning channel would make
//! caps, fair eviction, flap damping and storm buckets per worker, or approximate; an
//! RCU-published copy of the table would copy it for every learn. Here everything but
//! the hit path is the one `Forwarder` under its lock, so semantics do not change.
//!
//! # Why it is exact
//! A hit is linearised at its second generation load. The lock holder makes the
//! generation odd *before* it folds the cells and touches anything, and gives it a new
//! even value after any change (the same value when nothing changed). So a hit that
//! passes its second check wrote its refresh before the lock holder looked at the cell
//! (the fold sees it) or decided on state the lock holder has not changed (the cell
//! stays and is folded later), and a hit that fails it redoes the frame under the lock;
//! a refresh it left behind is one the redone decision makes anyway (to the same
//! instant), or lands on an entry that moved or went (`Fdb::refresh_seen` ignores it).
//! Refreshes combine by maximum: with several workers, frames' instants are not in one
//! order, and the latest refresh of an entry is the one that counts in any serial order.
//! Expiry checks use the cell, which is never newer than the table's value: a hit may
//! see an entry as expired that is not (it then goes to the lock, which decides), never
//! the reverse.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;

use crate::fdb::{FdbConfig, Learned, PortId, VlanId, is_expired};
use crate::forward::{Egress, Forwarder, Verdict};
use crate::wire::{EthernetFrame, MacAddr, is_vlan_tpid};

/// Slots in each worker's cache (direct-mapped): a few hundred flows per worker hit;
/// more, or colliding addresses, only means more decisions under the lock. A power of
/// two (the slot is the hash's top bits).
const CACHE_SLOTS: usize = 256;
const _: () = assert!(CACHE_SLOTS.is_power_of_two());
/// Cells kept at most; past that, decisions are not cached until the next change
/// (which empties the registry).
const MAX_CELLS: usize = 4096;

/// A [`Forwarder`] several workers decide on at once; see the module documentation.
pub struct SharedForwarder {
    inner: Mutex<Inner>,
    /// Even while no locked operation runs; changes when a cached decision may no
    /// longer be the forwarder's.
    generation: AtomicU64,
    /// What cells' instants are counted from.
    base: Instant,
}

struct Inner {
    forwarder: Forwarder,
    /// The cells of the dynamic entries cached decisions read, valid for the current
    /// generation only.
    cells: HashMap<(VlanId, MacAddr), Arc<Seen>, RandomState>,
}

/// The last-seen time of one dynamic MAC entry, shared by the lock holder and readers.
/// A cache line of its own: workers refreshing different sources do not share one.
#[repr(align(64))]
struct Seen {
    vlan: VlanId,
    mac: MacAddr,
    port: PortId,
    /// Nanoseconds from [`SharedForwarder::base`].
    at: AtomicI64,
}

/// The bytes of a frame a decision reads: addresses, ethertype or TPID, and for a tagged
/// frame the tag and the ethertype behind it (zero otherwise).
#[derive(Copy, Clone, PartialEq, Eq)]
struct Header([u8; 18]);

impl Header {
    /// `None` for a runt (which the lock decides on).
    fn of(frame: &[u8]) -> Option<Header> {
        let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
        let len = if is_vlan_tpid(ethertype) { 18 } else { 14 };
        let mut header = [0u8; 18];
        header[..len].copy_from_slice(frame.get(..len)?);
        Some(Header(header))
    }

    fn slot(&self, ingress: PortId) -> usize {
        let word = |range: std::ops::Range<usize>| {
            let mut bytes = [0u8; 8];
            bytes[..range.len()].copy_from_slice(&self.0[range]);
            u64::from_le_bytes(bytes)
        };
        let mixed = word(0..8) ^ word(8..16).rotate_left(21) ^ word(16..18).rotate_left(42);
        let mixed = (mixed ^ u64::from(ingress.0)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // The top bits: the only ones every input bit reaches through the multiply (bits
        // 32.. of the product ignore the input's bits above 32 and upward, where the
        // source's last bytes land: sequential addresses all shared one slot).
        (mixed >> (64 - CACHE_SLOTS.trailing_zeros())) as usize
    }
}

/// One cached decision.
struct Slot {
    ingress: PortId,
    header: Header,
    generation: u64,
    verdict: Verdict,
    egress: Option<Egress>,
    ageing: Duration,
    /// The source's and destination's cells; `None` for entries that never age.
    source: Option<Arc<Seen>>,
    destination: Option<Arc<Seen>>,
}

/// A worker's own cache of decisions (never shared: no synchronisation inside).
pub struct DecisionCache {
    slots: Box<[Option<Slot>]>,
    hits: u64,
}

impl Default for DecisionCache {
    fn default() -> Self {
        DecisionCache {
            slots: (0..CACHE_SLOTS).map(|_| None).collect(),
            hits: 0,
        }
    }
}

impl DecisionCache {
    /// Decisions taken from this cache without the lock.
    pub fn hits(&self) -> u64 {
        self.hits
    }
}

impl SharedForwarder {
    /// A shared forwarder with no ports and an empty table.
    pub fn new(config: FdbConfig) -> SharedForwarder {
        SharedForwarder::from_forwarder(Forwarder::new(config))
    }

    /// Shares `forwarder`.
    pub fn from_forwarder(forwarder: Forwarder) -> SharedForwarder {
        SharedForwarder {
            inner: Mutex::new(Inner {
                forwarder,
                cells: HashMap::default(),
            }),
            generation: AtomicU64::new(0),
            base: Instant::now(),
        }
    }

    /// The forwarder, locked, with every refresh done without the lock folded in: for
    /// the control plane, ageing, traces and tests. Whatever it changes invalidates the
    /// workers' cached decisions when the guard is dropped. A worker that panicked while
    /// holding it cannot have left it worse than stopping the switch would, so
    /// poisoning is ignored.
    pub fn lock(&self) -> Locked<'_> {
        let mut locked = self.lock_unfolded();
        locked.fold_all();
        locked
    }

    fn lock_unfolded(&self) -> Locked<'_> {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Only the lock holder writes the generation, so this is the even value.
        let generation = self.generation.load(Ordering::SeqCst);
        self.generation.store(generation + 1, Ordering::SeqCst);
        let version = guard.forwarder.version();
        Locked {
            guard,
            shared: self,
            generation,
            version,
        }
    }

    /// [`Forwarder::decide`] on the shared state: from `cache` without the lock when the
    /// same decision is still valid, else under the lock (then `on_events` is given the
    /// forwarder and the learning outcome if it has events to report, and the decision
    /// is cached if it can be).
    pub fn decide(
        &self,
        cache: &mut DecisionCache,
        ingress: PortId,
        frame: &[u8],
        now: Instant,
        egress: &mut Vec<Egress>,
        on_events: impl FnOnce(&mut Forwarder, Learned),
    ) -> (Verdict, Learned) {
        let header = Header::of(frame);
        if let Some(header) = header {
            let index = header.slot(ingress);
            if let Some(slot) = &cache.slots[index]
                && slot.ingress == ingress
                && slot.header == header
                && self.hit(slot, now)
            {
                egress.clear();
                egress.extend(slot.egress);
                cache.hits += 1;
                return (slot.verdict, Learned::Refreshed);
            }
        }
        self.decide_locked(cache, header, ingress, frame, now, egress, on_events)
    }

    /// Whether `slot` is still the decision, refreshing its source if so.
    #[inline]
    fn hit(&self, slot: &Slot, now: Instant) -> bool {
        let generation = self.generation.load(Ordering::SeqCst);
        if generation != slot.generation {
            return false;
        }
        let alive = |cell: &Option<Arc<Seen>>| {
            cell.as_ref().is_none_or(|cell| {
                !is_expired(
                    self.instant(cell.at.load(Ordering::SeqCst)),
                    now,
                    slot.ageing,
                )
            })
        };
        if !alive(&slot.source) || !alive(&slot.destination) {
            return false;
        }
        if let Some(source) = &slot.source {
            source.at.fetch_max(self.offset(now), Ordering::SeqCst);
        }
        self.generation.load(Ordering::SeqCst) == generation
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_locked(
        &self,
        cache: &mut DecisionCache,
        header: Option<Header>,
        ingress: PortId,
        frame: &[u8],
        now: Instant,
        egress: &mut Vec<Egress>,
        on_events: impl FnOnce(&mut Forwarder, Learned),
    ) -> (Verdict, Learned) {
        let mut locked = self.lock_unfolded();
        // Fold what this decision reads: the two entries, or all when a full table may
        // sweep or evict.
        let addresses = EthernetFrame::new_checked(frame).ok().and_then(|parsed| {
            let policy = locked.guard.forwarder.port(ingress)?;
            let vlan = policy.vlan.classify(parsed.vlan())?;
            Some((vlan, parsed.src_addr(), parsed.dst_addr()))
        });
        let fdb = locked.guard.forwarder.fdb();
        match addresses {
            Some((vlan, source, destination)) if fdb.len() < fdb.config().capacity => {
                locked.fold(vlan, source);
                locked.fold(vlan, destination);
            }
            // No VLAN: dropped before any lookup. Full: a learn may sweep or evict.
            Some(_) => locked.fold_all(),
            None => {}
        }

        let Inner { forwarder, cells } = &mut *locked.guard;
        let (verdict, learned, known_on) = forwarder.decide_noting(ingress, frame, now, egress);
        if forwarder.has_events() {
            on_events(forwarder, learned);
        }
        let cacheable = learned == Learned::Refreshed
            && egress.len() <= 1
            && forwarder.version() == locked.version;
        if let (true, Some(vlan), Some(header), Some((_, source, destination))) =
            (cacheable, known_on, header, addresses)
        {
            let fdb = forwarder.fdb();
            let ageing = fdb.config().ageing;
            let mut cell = |mac: MacAddr| -> Result<Option<Arc<Seen>>, ()> {
                let Some(last_seen) = fdb.last_seen(vlan, mac).ok_or(())? else {
                    return Ok(None);
                };
                let at = self.offset(last_seen);
                if let Some(cell) = cells.get(&(vlan, mac)) {
                    cell.at.fetch_max(at, Ordering::SeqCst);
                    return Ok(Some(Arc::clone(cell)));
                }
                if cells.len() >= MAX_CELLS {
                    return Err(());
                }
                let port = fdb.entry_port(vlan, mac).ok_or(())?;
                let cell = Arc::new(Seen {
                    vlan,
                    mac,
                    port,
                    at: AtomicI64::new(at),
                });
                cells.insert((vlan, mac), Arc::clone(&cell));
                Ok(Some(cell))
            };
            if let (Ok(source), Ok(destination)) = (cell(source), cell(destination)) {
                cache.slots[header.slot(ingress)] = Some(Slot {
                    ingress,
                    header,
                    generation: locked.generation,
                    verdict,
                    egress: egress.first().copied(),
                    ageing,
                    source,
                    destination,
                });
            }
        }
        (verdict, learned)
    }

    /// `at` as nanoseconds from `base` (saturating, centuries away).
    fn offset(&self, at: Instant) -> i64 {
        match at.checked_duration_since(self.base) {
            Some(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
            None => {
                let before = self.base.duration_since(at).as_nanos();
                i64::try_from(before).map_or(i64::MIN, |n| -n)
            }
        }
    }

    fn instant(&self, offset: i64) -> Instant {
        let nanos = Duration::from_nanos(offset.unsigned_abs());
        if offset >= 0 {
            self.base.checked_add(nanos)
        } else {
            self.base.checked_sub(nanos)
        }
        .unwrap_or(self.base)
    }
}

/// The shared forwarder, locked: see [`SharedForwarder::lock`].
pub struct Locked<'a> {
    guard: MutexGuard<'a, Inner>,
    shared: &'a SharedForwarder,
    /// The generation before this lock (even).
    generation: u64,
    /// The forwarder's version when locked.
    version: u64,
}

impl Locked<'_> {
    fn fold(&mut self, vlan: VlanId, mac: MacAddr) {
        let Inner { forwarder, cells } = &mut *self.guard;
        if let Some(cell) = cells.get(&(vlan, mac)) {
            let at = self.shared.instant(cell.at.load(Ordering::SeqCst));
            forwarder
                .fdb_mut()
                .refresh_seen(cell.vlan, cell.mac, cell.port, at);
        }
    }

    fn fold_all(&mut self) {
        let Inner { forwarder, cells } = &mut *self.guard;
        for cell in cells.values() {
            let at = self.shared.instant(cell.at.load(Ordering::SeqCst));
            forwarder
                .fdb_mut()
                .refresh_seen(cell.vlan, cell.mac, cell.port, at);
        }
    }
}

impl Deref for Locked<'_> {
    type Target = Forwarder;

    fn deref(&self) -> &Forwarder {
        &self.guard.forwarder
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Forwarder {
        &mut self.guard.forwarder
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let next = if self.guard.forwarder.version() == self.version {
            self.generation
        } else {
            // Refreshes written since the fold belong to entries that may have changed:
            // folded now (ignored where the entry moved or went), then the cells go with
            // the decisions cached on them.
            self.fold_all();
            self.guard.cells.clear();
            self.generation + 2
        };
        self.shared.generation.store(next, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    //! Real threads on one [`SharedForwarder`] (the property test in `forward` interleaves
    //! caches on one thread): what the lock-free path could get wrong only shows when
    //! hits race the lock holder.

    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Barrier};
    use std::thread;
    use std::time::{Duration, Instant};

    use super::{DecisionCache, SharedForwarder};
    use crate::fdb::{FdbConfig, Learned, PortId};
    use crate::forward::Verdict;
    use crate::policy::{PortPolicy, TRANSPARENT_VLAN};
    use crate::wire::MacAddr;

    const WORKERS: usize = 4;
    const FRAMES: u64 = 200_000;
    /// Each worker's own source stations, each moved between the worker's two ports.
    const STATIONS: usize = 6;
    /// Frames between two moves of a worker's stations.
    const MOVE_EVERY: u64 = 10_000;
    /// The ports the destination is pinned to in turn: enough that an epoch's port is
    /// none of the next few epochs' (a decision cached across a move is caught).
    const DESTINATION_PORTS: u32 = 8;
    /// A port of the control thread's own junk station, learned and flushed.
    const JUNK_PORT: PortId = PortId(99);

    fn mac(bytes: [u8; 2]) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, bytes[0], bytes[1]])
    }

    fn frame(src: MacAddr, dst: MacAddr) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(16);
        bytes.extend_from_slice(&dst.0);
        bytes.extend_from_slice(&src.0);
        bytes.extend_from_slice(&[0x08, 0x00, 0x45, 0x00]);
        bytes
    }

    /// Where the destination is pinned in epoch `epoch`.
    fn destination_port(epoch: u64) -> PortId {
        PortId(1 + (epoch % u64::from(DESTINATION_PORTS)) as u32)
    }

    /// Worker `w`'s two ingress ports.
    fn worker_port(w: usize, side: u64) -> PortId {
        PortId(10 + 2 * w as u32 + side as u32)
    }

    /// What one worker saw.
    #[derive(Default)]
    struct Seen {
        new: u64,
        moved: u64,
        hits: u64,
        /// Per station: the port and instant of its last frame.
        last: Vec<(PortId, Instant)>,
    }

    /// Sources that differ only in their last byte (sequential addresses, as VMs and
    /// containers get) to one destination spread over the cache, instead of sharing a slot
    /// and evicting each other's decisions on every frame.
    #[test]
    fn sequential_sources_take_their_own_slots() {
        let destination = mac([0xdd, 0xdd]);
        let slots: std::collections::HashSet<usize> = (0..64u8)
            .map(|last| {
                let header = super::Header::of(&frame(mac([0, last]), destination)).unwrap();
                header.slot(PortId(1))
            })
            .collect();
        assert!(slots.len() >= 48, "64 sources in {} slots", slots.len());
    }

    /// Four workers decide frames from stations of their own (learned, refreshed from
    /// their caches, moved between two ports now and then) to one destination, while a
    /// control thread moves that destination's static entry, changes a policy, learns and
    /// flushes a station of its own and runs the ageing sweep. Checked:
    /// - no decision is taken from a cache across a change: each frame goes to where the
    ///   destination was pinned when its decision began, or later;
    /// - every frame is forwarded to exactly one port (the destination is always known);
    /// - the table's counters add up to the learning outcomes the threads saw;
    /// - the table ends as the last writer left it: each station on the port of its last
    ///   frame, last seen at that frame's instant (no refresh made without the lock is
    ///   lost to the lock holder's folds).
    #[test]
    fn workers_and_a_control_thread_on_real_threads_keep_every_invariant() {
        let shared = Arc::new(SharedForwarder::new(FdbConfig {
            // Nothing ages during the test: the sweep runs, and must remove nothing.
            ageing: Duration::from_secs(3600),
            capacity: 1024,
        }));
        let destination = mac([0xdd, 0xdd]);
        {
            let mut locked = shared.lock();
            let ports = (1..=DESTINATION_PORTS)
                .map(PortId)
                .chain((0..WORKERS).flat_map(|w| [worker_port(w, 0), worker_port(w, 1)]))
                .chain([JUNK_PORT]);
            for port in ports {
                locked.add_port(port, PortPolicy::default()).unwrap();
            }
            locked
                .fdb_mut()
                .add_static(TRANSPARENT_VLAN, destination, destination_port(0))
                .unwrap();
        }
        let base = Instant::now();
        // One clock for all threads: each decision takes the next microsecond.
        let clock = Arc::new(AtomicU64::new(0));
        let tick = {
            let clock = Arc::clone(&clock);
            move || base + Duration::from_micros(clock.fetch_add(1, Ordering::SeqCst))
        };
        // The epoch whose pin is in place (published after the change is made).
        let epoch = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let start = Arc::new(Barrier::new(WORKERS + 1));

        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (shared, epoch, start, tick) = (
                    Arc::clone(&shared),
                    Arc::clone(&epoch),
                    Arc::clone(&start),
                    tick.clone(),
                );
                thread::spawn(move || {
                    let mut cache = DecisionCache::default();
                    let mut egress = Vec::new();
                    let mut seen = Seen::default();
                    let frames: Vec<Vec<u8>> = (0..STATIONS)
                        .map(|s| frame(mac([w as u8, s as u8]), destination))
                        .collect();
                    seen.last = vec![(PortId(u32::MAX), base); STATIONS];
                    start.wait();
                    for i in 0..FRAMES {
                        let station = (i as usize) % STATIONS;
                        let ingress = worker_port(w, (i / MOVE_EVERY) % 2);
                        let now = tick();
                        let before = epoch.load(Ordering::SeqCst);
                        let (verdict, learned) = shared.decide(
                            &mut cache,
                            ingress,
                            &frames[station],
                            now,
                            &mut egress,
                            |_, _| {},
                        );
                        let after = epoch.load(Ordering::SeqCst);
                        assert_eq!(verdict, Verdict::Forward, "worker {w}, frame {i}");
                        assert_eq!(egress.len(), 1, "worker {w}, frame {i}: {egress:?}");
                        // The change of epoch `after + 1` may be in place, not yet published.
                        let allowed: Vec<PortId> =
                            (before..=after + 1).map(destination_port).collect();
                        assert!(
                            allowed.contains(&egress[0].port),
                            "worker {w}, frame {i}: sent to {:?}, decided in epochs \
                             {before}..={after} (ports {allowed:?})",
                            egress[0].port
                        );
                        match learned {
                            Learned::New => seen.new += 1,
                            Learned::Moved { .. } => seen.moved += 1,
                            Learned::Refreshed => {}
                            other => panic!("worker {w}, frame {i}: {other:?}"),
                        }
                        seen.last[station] = (ingress, now);
                    }
                    seen.hits = cache.hits();
                    seen
                })
            })
            .collect();

        let control = {
            let (shared, epoch, done, start, tick) = (
                Arc::clone(&shared),
                Arc::clone(&epoch),
                Arc::clone(&done),
                Arc::clone(&start),
                tick.clone(),
            );
            thread::spawn(move || {
                let junk = frame(mac([0xee, 0xee]), destination);
                let mut junk_learned = 0u64;
                let mut egress = Vec::new();
                start.wait();
                let mut round = 0u64;
                while !done.load(Ordering::SeqCst) {
                    round += 1;
                    match round % 4 {
                        0 => {
                            let next = epoch.load(Ordering::SeqCst) + 1;
                            shared
                                .lock()
                                .fdb_mut()
                                .add_static(TRANSPARENT_VLAN, destination, destination_port(next))
                                .unwrap();
                            epoch.store(next, Ordering::SeqCst);
                        }
                        1 => {
                            // The same policy again: a change all the same.
                            let port = worker_port(round as usize % WORKERS, round / 4 % 2);
                            shared
                                .lock()
                                .set_policy(port, PortPolicy::default())
                                .unwrap();
                        }
                        2 => {
                            let mut locked = shared.lock();
                            let (_, learned) = locked.decide(JUNK_PORT, &junk, tick(), &mut egress);
                            if learned == Learned::New {
                                junk_learned += 1;
                            }
                            assert_eq!(locked.fdb_mut().flush_port(JUNK_PORT), 1);
                        }
                        _ => assert_eq!(shared.lock().fdb_mut().expire(tick()), 0),
                    }
                    // Let the workers run from their caches between changes.
                    thread::sleep(Duration::from_micros(50));
                }
                (round, junk_learned)
            })
        };

        let seen: Vec<Seen> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        done.store(true, Ordering::SeqCst);
        let (rounds, junk_learned) = control.join().unwrap();
        assert!(rounds >= 4, "the control thread changed nothing");
        let hits: u64 = seen.iter().map(|s| s.hits).sum();
        assert!(hits > 0, "no decision came from a cache");

        let now = tick();
        let locked = shared.lock();
        let counters = locked.fdb().counters();
        let new: u64 = seen.iter().map(|s| s.new).sum();
        let moved: u64 = seen.iter().map(|s| s.moved).sum();
        assert_eq!(counters.learned, new + junk_learned, "{counters:?}");
        assert_eq!(counters.moved, moved, "{counters:?}");
        assert_eq!(
            (counters.evicted, counters.aged_out),
            (0, 0),
            "{counters:?}"
        );
        // Each station learned once, then moved with its worker's port.
        assert_eq!(new, (WORKERS * STATIONS) as u64);
        let moves = FRAMES.div_ceil(MOVE_EVERY) - 1;
        assert_eq!(moved, WORKERS as u64 * STATIONS as u64 * moves);
        for (w, seen) in seen.iter().enumerate() {
            for (s, &(port, last)) in seen.last.iter().enumerate() {
                let station = mac([w as u8, s as u8]);
                let entry = locked
                    .fdb()
                    .entry(TRANSPARENT_VLAN, station, now)
                    .unwrap_or_else(|| panic!("station {station} is gone"));
                assert_eq!(entry.port, port, "station {station}");
                assert_eq!(
                    entry.age,
                    now - last,
                    "station {station}: a refresh was lost"
                );
            }
        }
        let pinned = locked
            .fdb()
            .entry(TRANSPARENT_VLAN, destination, now)
            .unwrap();
        assert_eq!(pinned.port, destination_port(epoch.load(Ordering::SeqCst)));
        assert_eq!(locked.fdb().len(), WORKERS * STATIONS + 1);
    }
}
