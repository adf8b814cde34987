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
/// more, or colliding addresses, only means more decisions under the lock.
const CACHE_SLOTS: usize = 256;
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
        (mixed >> 32) as usize % CACHE_SLOTS
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
