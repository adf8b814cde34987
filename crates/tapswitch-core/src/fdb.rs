//! The forwarding database: which port each (VLAN, MAC) was last seen on.
//!
//! The table is a hash map with a seeded hasher, so that source addresses chosen by an
//! attacker cannot be aimed at one bucket. Its size is capped; when a new address arrives
//! at a full table, expired entries are swept first, and otherwise the port currently
//! holding the most learned entries gives one up (per-port fair eviction): a port that
//! floods random source addresses churns its own entries, not its neighbours'.
//!
//! # Choosing the victim in O(1)
//!
//! Each port keeps a FIFO of the keys it learned, in insertion order, tagged with a stamp
//! that is unique per insertion. Entries that are removed, moved or aged out leave their
//! FIFO item behind (lazy deletion): an item is live only while the table still maps its
//! key to that port with that stamp. Eviction pops the heaviest port's FIFO until it finds
//! a live item, so each item is popped at most once. A FIFO that grows past twice its
//! port's live count is compacted, which keeps memory bounded and costs O(1) amortized per
//! insertion. The victim is the port's oldest *learned* entry, not its least recently seen
//! one: recency would need a per-refresh list update, and the refresh path is meant to be
//! a single hash lookup and a timestamp write.
//!
//! # Sweeping expired entries when full
//!
//! A sweep visits every entry, so one triggered by a learn is rate limited: after a sweep
//! the next one waits until the oldest survivor can have expired, and at least
//! [`MIN_FULL_SWEEP_INTERVAL`] (or the ageing time, if shorter). Without the limit, a
//! flood arriving while entries expire one by one would make every frame pay a full sweep.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use serde::Serialize;

use crate::policy::{MAX_VLAN, MIN_VLAN, TRANSPARENT_VLAN};
use crate::wire::MacAddr;

/// A switch port: a dense slot index, so per-port state can live in a `Vec`.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
pub struct PortId(pub u32);

impl PortId {
    /// The slot of this port in per-port vectors.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A VLAN identifier. 0 is the untagged (default) segment.
pub type VlanId = u16;

/// Whether frames can be on segment `vlan`: a port's VLAN, or the transparent segment.
pub fn is_segment(vlan: VlanId) -> bool {
    vlan == TRANSPARENT_VLAN || (MIN_VLAN..=MAX_VLAN).contains(&vlan)
}

/// The shortest gap between two sweeps started by a learn on a full table.
pub const MIN_FULL_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Size and ageing of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbConfig {
    /// A dynamic entry not refreshed for this long is gone.
    pub ageing: Duration,
    /// Hard cap on the number of entries, static and dynamic together.
    pub capacity: usize,
}

impl Default for FdbConfig {
    fn default() -> Self {
        FdbConfig {
            ageing: Duration::from_secs(300),
            capacity: 8192,
        }
    }
}

/// Errors from configuring the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FdbError {
    /// Static entries are for unicast stations only.
    #[error("cannot add static entry for {mac} on VLAN {vlan}: it is a multicast address")]
    MulticastStatic { vlan: VlanId, mac: MacAddr },
    /// Not a VLAN any port carries.
    #[error(
        "cannot add static entry for {mac} on VLAN {vlan}: VLANs are {MIN_VLAN}..={MAX_VLAN} \
         ({TRANSPARENT_VLAN} for ports without VLAN settings)"
    )]
    VlanOutOfRange { vlan: VlanId, mac: MacAddr },
    /// The zero address is never a station.
    #[error("cannot add static entry for {mac} on VLAN {vlan}: the zero address is not a station")]
    ZeroStatic { vlan: VlanId, mac: MacAddr },
    /// Every slot holds a static entry, so none can be freed.
    #[error(
        "cannot add static entry for {mac} on VLAN {vlan}: all {capacity} FDB slots hold static entries"
    )]
    FullOfStatic {
        vlan: VlanId,
        mac: MacAddr,
        capacity: usize,
    },
}

/// How an entry got into the table.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Learned from a source address; ages out.
    Dynamic,
    /// Configured; never ages, never moves, never evicted.
    Static,
    /// Learned on a port with sticky learning: then kept like a static entry.
    Sticky,
    /// Installed by a control plane (EVPN) for a MAC behind a tunnel: never ages and is
    /// never evicted, but a local learn on another port moves it (the MAC moved here; the
    /// control plane then advertises it from here).
    Remote,
}

/// What [`Fdb::learn`] did with a source address.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Learned {
    /// Not learned: a multicast, broadcast or zero source (or nothing was offered).
    Ignored,
    /// Already known on this port; its timestamp was renewed.
    Refreshed,
    /// Stored as a new entry (also when a previous entry had expired).
    New,
    /// The address was live on another port and now points here.
    Moved { from: PortId },
    /// A static entry pins this address to another port: left unchanged.
    StaticHeld,
    /// Stored as a new entry after evicting one of `victim_port`'s entries.
    Evicted { victim_port: PortId },
    /// Not stored: every slot holds a static entry.
    Full,
    /// Not moved: the forwarder holds this address on port `on` after it flapped.
    Held { on: PortId },
}

impl Learned {
    /// The table now places the source on the port it came from (stored, renewed or
    /// moved there): what a tunnel port follows with its own MAC → VTEP learning.
    pub fn placed_on_ingress(self) -> bool {
        matches!(
            self,
            Learned::Refreshed | Learned::New | Learned::Moved { .. } | Learned::Evicted { .. }
        )
    }
}

/// What learning a source would do, from [`Fdb::preview_learn`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LearnPreview {
    pub learned: Learned,
    /// The entry that would be evicted to make room, as (VLAN, MAC).
    pub evicts: Option<(VlanId, MacAddr)>,
}

/// Event counters since the table was created.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FdbCounters {
    /// Entries created by learning (dynamic and sticky).
    pub learned: u64,
    /// Live dynamic entries that changed port.
    pub moved: u64,
    /// Dynamic entries dropped to make room.
    pub evicted: u64,
    /// Dynamic entries that expired.
    pub aged_out: u64,
}

/// One row of [`Fdb::entries`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FdbEntry {
    pub vlan: VlanId,
    pub mac: MacAddr,
    pub port: PortId,
    pub kind: EntryKind,
    /// Time since last seen; zero for static entries.
    pub age: Duration,
}

/// (VLAN, MAC) packed into one word: one hasher write per lookup, and its order is the
/// (VLAN, MAC) order.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key(u64);

impl Key {
    fn new(vlan: VlanId, mac: MacAddr) -> Key {
        let [a, b, c, d, e, f] = mac.0;
        let [v0, v1] = vlan.to_be_bytes();
        Key(u64::from_be_bytes([v0, v1, a, b, c, d, e, f]))
    }

    fn vlan(self) -> VlanId {
        (self.0 >> 48) as VlanId
    }

    fn mac(self) -> MacAddr {
        let bytes = self.0.to_be_bytes();
        MacAddr::from_bytes(&bytes[2..])
    }
}

#[derive(Copy, Clone, Debug)]
enum State {
    /// `stamp` identifies this insertion's item in the port's FIFO.
    Dynamic { last_seen: Instant, stamp: u64 },
    /// Never ages or is evicted: configured, learned on a sticky port, or remote.
    Static { pin: Pin },
}

/// Why a static entry is pinned.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Pin {
    /// Configured: never moves.
    Configured,
    /// Learned on a port with sticky learning: never moves.
    Sticky,
    /// Installed by a control plane: moves when learned on another port.
    Remote,
}

#[derive(Copy, Clone, Debug)]
struct Entry {
    port: PortId,
    state: State,
}

/// Learned-entry bookkeeping of one port.
#[derive(Clone, Debug, Default)]
struct PortLoad {
    /// Live dynamic entries on this port.
    dynamic: usize,
    /// Static and sticky entries on this port.
    pinned: usize,
    /// (key, stamp) in insertion order, including stale items; see the module docs.
    fifo: VecDeque<(Key, u64)>,
}

/// When a learn on a full table may sweep expired entries.
#[derive(Copy, Clone, Debug)]
enum SweepGate {
    Open,
    NotBefore(Instant),
    /// The ageing time is too long for `Instant` arithmetic: nothing can expire.
    Never,
}

/// Stale FIFO items tolerated beyond twice the live count before compacting.
const FIFO_SLACK: usize = 32;
/// Slots reserved up front; larger tables grow on demand.
const MAX_PREALLOCATED: usize = 1 << 16;

/// The MAC table. See the module documentation for the eviction and sweep policies.
#[derive(Clone, Debug)]
pub struct Fdb {
    config: FdbConfig,
    table: HashMap<Key, Entry, RandomState>,
    ports: Vec<PortLoad>,
    next_stamp: u64,
    sweep_gate: SweepGate,
    counters: FdbCounters,
    /// Counts changes to what a lookup can answer (entries added, moved, pinned,
    /// removed), not refreshes: `shared` invalidates its cached decisions by it.
    version: u64,
}

impl Fdb {
    /// An empty table.
    pub fn new(config: FdbConfig) -> Fdb {
        let table = HashMap::with_capacity_and_hasher(
            config.capacity.min(MAX_PREALLOCATED),
            RandomState::default(),
        );
        Fdb {
            config,
            table,
            ports: Vec::new(),
            next_stamp: 0,
            sweep_gate: SweepGate::Open,
            counters: FdbCounters::default(),
            version: 0,
        }
    }

    /// The configuration the table was created with.
    pub fn config(&self) -> &FdbConfig {
        &self.config
    }

    /// Number of entries, including expired ones not yet swept.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Dynamic entries currently pointing at `port` (expired ones included until swept).
    pub fn dynamic_count(&self, port: PortId) -> usize {
        self.ports.get(port.index()).map_or(0, |load| load.dynamic)
    }

    /// Every entry pointing at `port`, dynamic (expired ones included until swept), static
    /// and sticky: what a per-port MAC limit counts.
    pub fn port_count(&self, port: PortId) -> usize {
        self.ports
            .get(port.index())
            .map_or(0, |load| load.dynamic + load.pinned)
    }

    /// The port the entry for `mac` points at, expired or not: whether learning `mac` on a
    /// port would add an entry to that port.
    pub fn entry_port(&self, vlan: VlanId, mac: MacAddr) -> Option<PortId> {
        self.table.get(&Key::new(vlan, mac)).map(|entry| entry.port)
    }

    /// Event counters.
    pub fn counters(&self) -> FdbCounters {
        self.counters.clone()
    }

    /// Records that `mac` was seen as a source on `port`.
    pub fn learn(&mut self, vlan: VlanId, mac: MacAddr, port: PortId, now: Instant) -> Learned {
        let learned = self.learn_as::<true>(vlan, mac, port, now).0;
        // A refresh (of a live entry on the same port, or of a static one) and the
        // outcomes that wrote nothing leave every lookup's answer as it was.
        if !matches!(
            learned,
            Learned::Refreshed | Learned::StaticHeld | Learned::Ignored | Learned::Full
        ) {
            self.version += 1;
        }
        learned
    }

    /// How many times entries were added, moved, pinned or removed: unchanged, every
    /// lookup answers as before (refreshes and ageing time aside).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When the entry for `mac` was last seen: `Some(None)` for an entry that never
    /// ages (static, sticky, remote), `None` for no entry.
    pub fn last_seen(&self, vlan: VlanId, mac: MacAddr) -> Option<Option<Instant>> {
        self.table
            .get(&Key::new(vlan, mac))
            .map(|entry| match entry.state {
                State::Dynamic { last_seen, .. } => Some(last_seen),
                State::Static { .. } => None,
            })
    }

    /// Records that the dynamic entry for `mac` on `port` was seen at `at`, if that is
    /// later than what it holds: a refresh done by a reader without the lock
    /// (`shared`), brought into the table. Changes nothing else, so not the version.
    pub fn refresh_seen(&mut self, vlan: VlanId, mac: MacAddr, port: PortId, at: Instant) {
        if let Some(Entry {
            port: holder,
            state: State::Dynamic { last_seen, .. },
        }) = self.table.get_mut(&Key::new(vlan, mac))
            && *holder == port
            && at > *last_seen
        {
            *last_seen = at;
        }
    }

    /// What learning `mac` on `port` (sticky or not) would do, changing nothing: the
    /// same code as [`Fdb::learn`] and [`Fdb::learn_sticky`] with every write left out,
    /// for a trace. It takes `&mut self` only because it runs that code.
    pub fn preview_learn(
        &mut self,
        vlan: VlanId,
        mac: MacAddr,
        port: PortId,
        now: Instant,
        sticky: bool,
    ) -> LearnPreview {
        let (learned, evicted) = if sticky {
            self.learn_sticky_as::<false>(vlan, mac, port, now)
        } else {
            self.learn_as::<false>(vlan, mac, port, now)
        };
        LearnPreview {
            learned,
            evicts: evicted.map(|key| (key.vlan(), key.mac())),
        }
    }

    /// [`Fdb::learn`]; with `APPLY` false it only says what it would do (and which entry
    /// it would evict).
    fn learn_as<const APPLY: bool>(
        &mut self,
        vlan: VlanId,
        mac: MacAddr,
        port: PortId,
        now: Instant,
    ) -> (Learned, Option<Key>) {
        if mac.is_multicast() || mac.is_zero() {
            return (Learned::Ignored, None);
        }
        let key = Key::new(vlan, mac);
        let ageing = self.config.ageing;
        let mut outcome = Learned::New;
        // A remote MAC heard on another port moved there, and is learned afresh; a preview
        // leaves the entry in place but counts it out of the table's size.
        let mut moved_remote = false;
        if let Some(entry) = self.table.get(&key).copied()
            && matches!(entry.state, State::Static { pin: Pin::Remote })
            && entry.port != port
        {
            if APPLY {
                self.table.remove(&key);
                self.forget_load(entry);
                self.counters.moved += 1;
            }
            moved_remote = true;
            outcome = Learned::Moved { from: entry.port };
        }
        if let Some(entry) = self.table.get_mut(&key).filter(|_| !moved_remote) {
            let State::Dynamic { last_seen, stamp } = &mut entry.state else {
                let learned = if entry.port == port {
                    Learned::Refreshed
                } else {
                    Learned::StaticHeld
                };
                return (learned, None);
            };
            let expired = is_expired(*last_seen, now, ageing);
            if APPLY {
                *last_seen = now;
            }
            if entry.port == port {
                if !expired {
                    return (Learned::Refreshed, None);
                }
                // Still in this port's FIFO under the same stamp: only the books change.
                if APPLY {
                    self.counters.aged_out += 1;
                    self.counters.learned += 1;
                }
                return (Learned::New, None);
            }
            let from = entry.port;
            if APPLY {
                entry.port = port;
                *stamp = self.next_stamp;
                let stamp = *stamp;
                self.next_stamp += 1;
                self.ports[from.index()].dynamic -= 1;
                self.push_fifo(port, key, stamp);
            }
            return if expired {
                if APPLY {
                    self.counters.aged_out += 1;
                    self.counters.learned += 1;
                }
                (Learned::New, None)
            } else {
                if APPLY {
                    self.counters.moved += 1;
                }
                (Learned::Moved { from }, None)
            };
        }

        let mut evicted = None;
        let size = self.table.len() - usize::from(moved_remote && !APPLY);
        if size >= self.config.capacity {
            match self.make_room::<APPLY>(port, now) {
                Room::Freed => {}
                Room::Evicted(victim_port, victim) => {
                    outcome = Learned::Evicted { victim_port };
                    evicted = Some(victim);
                }
                Room::None => return (Learned::Full, None),
            }
        }
        if APPLY {
            let stamp = self.next_stamp;
            self.next_stamp += 1;
            self.table.insert(
                key,
                Entry {
                    port,
                    state: State::Dynamic {
                        last_seen: now,
                        stamp,
                    },
                },
            );
            self.push_fifo(port, key, stamp);
            self.counters.learned += 1;
        }
        (outcome, evicted)
    }

    /// The port `mac` was last seen on, unless unknown or expired.
    pub fn lookup(&self, vlan: VlanId, mac: MacAddr, now: Instant) -> Option<PortId> {
        let entry = self.table.get(&Key::new(vlan, mac))?;
        match entry.state {
            State::Dynamic { last_seen, .. } if is_expired(last_seen, now, self.config.ageing) => {
                None
            }
            _ => Some(entry.port),
        }
    }

    /// Pins `mac` to `port`, replacing any entry for it. When the table is full, a dynamic
    /// entry makes room as it would for a learn.
    pub fn add_static(&mut self, vlan: VlanId, mac: MacAddr, port: PortId) -> Result<(), FdbError> {
        self.add_pinned(vlan, mac, port, Pin::Configured)
    }

    /// Puts `mac` behind (tunnel) port `port` for a control plane ([`EntryKind::Remote`]),
    /// replacing a learned or remote entry; a configured static entry is left alone
    /// (false).
    pub fn add_remote(
        &mut self,
        vlan: VlanId,
        mac: MacAddr,
        port: PortId,
    ) -> Result<bool, FdbError> {
        if let Some(Entry {
            state: State::Static {
                pin: Pin::Configured,
            },
            ..
        }) = self.table.get(&Key::new(vlan, mac))
        {
            return Ok(false);
        }
        self.add_pinned(vlan, mac, port, Pin::Remote).map(|()| true)
    }

    /// Removes the remote entry of `mac` if it is on `port`. True when there was one.
    pub fn remove_remote(&mut self, vlan: VlanId, mac: MacAddr, port: PortId) -> bool {
        self.version += 1;
        let key = Key::new(vlan, mac);
        match self.table.get(&key) {
            Some(&Entry {
                port: holder,
                state: State::Static { pin: Pin::Remote },
            }) if holder == port => self.remove(vlan, mac),
            _ => false,
        }
    }

    fn add_pinned(
        &mut self,
        vlan: VlanId,
        mac: MacAddr,
        port: PortId,
        pin: Pin,
    ) -> Result<(), FdbError> {
        self.version += 1;
        if !is_segment(vlan) {
            return Err(FdbError::VlanOutOfRange { vlan, mac });
        }
        if mac.is_multicast() {
            return Err(FdbError::MulticastStatic { vlan, mac });
        }
        if mac.is_zero() {
            return Err(FdbError::ZeroStatic { vlan, mac });
        }
        let key = Key::new(vlan, mac);
        let static_entry = Entry {
            port,
            state: State::Static { pin },
        };
        self.load_mut(port).pinned += 1;
        if let Some(previous) = self.table.insert(key, static_entry) {
            self.forget_load(previous);
            return Ok(());
        }
        if self.table.len() > self.config.capacity {
            // The new entry itself is static, so it cannot be the one evicted. No clock is
            // at hand, so expired entries are not swept: eviction alone makes room.
            if self.evict_from_heaviest::<true>(port).is_none() {
                self.table.remove(&key);
                self.load_mut(port).pinned -= 1;
                return Err(FdbError::FullOfStatic {
                    vlan,
                    mac,
                    capacity: self.config.capacity,
                });
            }
        }
        Ok(())
    }

    /// Removes the entry for `mac`, static or dynamic. True when there was one.
    pub fn remove(&mut self, vlan: VlanId, mac: MacAddr) -> bool {
        self.version += 1;
        match self.table.remove(&Key::new(vlan, mac)) {
            Some(entry) => {
                self.forget_load(entry);
                true
            }
            None => false,
        }
    }

    /// Records that `mac` was seen as a source on a port with sticky learning: the entry
    /// becomes sticky (kept like a static one) unless another port holds it pinned.
    pub fn learn_sticky(
        &mut self,
        vlan: VlanId,
        mac: MacAddr,
        port: PortId,
        now: Instant,
    ) -> Learned {
        let already_sticky = matches!(
            self.table.get(&Key::new(vlan, mac)),
            Some(Entry { port: holder, state: State::Static { .. } }) if *holder == port
        );
        let learned = self.learn_sticky_as::<true>(vlan, mac, port, now).0;
        // Refreshed also means a dynamic entry made sticky here, which is a change.
        let unchanged = match learned {
            Learned::Refreshed => already_sticky,
            Learned::StaticHeld | Learned::Ignored | Learned::Full => true,
            _ => false,
        };
        if !unchanged {
            self.version += 1;
        }
        learned
    }

    /// [`Fdb::learn_sticky`]; with `APPLY` false it only says what it would do.
    fn learn_sticky_as<const APPLY: bool>(
        &mut self,
        vlan: VlanId,
        mac: MacAddr,
        port: PortId,
        now: Instant,
    ) -> (Learned, Option<Key>) {
        if mac.is_multicast() || mac.is_zero() {
            return (Learned::Ignored, None);
        }
        let key = Key::new(vlan, mac);
        let sticky = Entry {
            port,
            state: State::Static { pin: Pin::Sticky },
        };
        let mut evicted = None;
        let outcome = match self.table.get(&key).copied() {
            Some(
                entry @ Entry {
                    port: from,
                    state: State::Static { pin: Pin::Remote },
                },
            ) if from != port => {
                // A remote MAC heard here: it moved here.
                if APPLY {
                    self.forget_load(entry);
                    self.counters.moved += 1;
                }
                Learned::Moved { from }
            }
            Some(Entry {
                port: holder,
                state: State::Static { .. },
            }) => {
                let learned = if holder == port {
                    Learned::Refreshed
                } else {
                    Learned::StaticHeld
                };
                return (learned, None);
            }
            Some(Entry {
                port: from,
                state: State::Dynamic { last_seen, .. },
            }) => {
                let expired = is_expired(last_seen, now, self.config.ageing);
                if APPLY {
                    self.ports[from.index()].dynamic -= 1;
                    if expired {
                        self.counters.aged_out += 1;
                        self.counters.learned += 1;
                    } else if from != port {
                        self.counters.moved += 1;
                    }
                }
                if expired {
                    Learned::New
                } else if from == port {
                    Learned::Refreshed
                } else {
                    Learned::Moved { from }
                }
            }
            None => {
                let mut outcome = Learned::New;
                if self.table.len() >= self.config.capacity {
                    match self.make_room::<APPLY>(port, now) {
                        Room::Freed => {}
                        Room::Evicted(victim_port, victim) => {
                            outcome = Learned::Evicted { victim_port };
                            evicted = Some(victim);
                        }
                        Room::None => return (Learned::Full, None),
                    }
                }
                if APPLY {
                    self.counters.learned += 1;
                }
                outcome
            }
        };
        if APPLY {
            self.table.insert(key, sticky);
            self.load_mut(port).pinned += 1;
        }
        (outcome, evicted)
    }

    fn load_mut(&mut self, port: PortId) -> &mut PortLoad {
        if self.ports.len() <= port.index() {
            self.ports.resize_with(port.index() + 1, PortLoad::default);
        }
        &mut self.ports[port.index()]
    }

    /// Takes a removed or replaced entry off its port's counts.
    fn forget_load(&mut self, entry: Entry) {
        let load = &mut self.ports[entry.port.index()];
        match entry.state {
            State::Dynamic { .. } => load.dynamic -= 1,
            State::Static { .. } => load.pinned -= 1,
        }
    }

    /// Removes every entry pointing at `port`, static ones included: for a port that goes
    /// away. Returns how many were removed.
    pub fn flush_port(&mut self, port: PortId) -> usize {
        self.version += 1;
        let before = self.table.len();
        self.table.retain(|_, entry| entry.port != port);
        if let Some(load) = self.ports.get_mut(port.index()) {
            *load = PortLoad::default();
        }
        before - self.table.len()
    }

    /// Removes the dynamic entries pointing at `port`, keeping static and sticky ones: for a port
    /// that is disabled. Returns how many were removed.
    pub fn flush_port_dynamic(&mut self, port: PortId) -> usize {
        self.version += 1;
        let before = self.table.len();
        self.table
            .retain(|_, entry| entry.port != port || matches!(entry.state, State::Static { .. }));
        if let Some(load) = self.ports.get_mut(port.index()) {
            load.dynamic = 0;
            load.fifo = VecDeque::new();
        }
        before - self.table.len()
    }

    /// Forgets every learned entry; static entries are configuration and stay. Returns
    /// how many were removed.
    pub fn flush(&mut self) -> usize {
        self.version += 1;
        let before = self.table.len();
        self.table
            .retain(|_, entry| matches!(entry.state, State::Static { .. }));
        for load in &mut self.ports {
            load.dynamic = 0;
            load.fifo = VecDeque::new();
        }
        before - self.table.len()
    }

    /// Removes expired dynamic entries and returns how many. The event loop calls this
    /// periodically; a learn on a full table may call it too (rate limited).
    pub fn expire(&mut self, now: Instant) -> usize {
        let ageing = self.config.ageing;
        let ports = &mut self.ports;
        let mut oldest_survivor: Option<Instant> = None;
        let before = self.table.len();
        self.table.retain(|_, entry| match entry.state {
            State::Static { .. } => true,
            State::Dynamic { last_seen, .. } => {
                if is_expired(last_seen, now, ageing) {
                    ports[entry.port.index()].dynamic -= 1;
                    false
                } else {
                    oldest_survivor = Some(oldest_survivor.map_or(last_seen, |t| t.min(last_seen)));
                    true
                }
            }
        });
        let removed = before - self.table.len();
        self.counters.aged_out += removed as u64;
        if removed > 0 {
            self.version += 1;
        }

        // Entries learned from now on expire no sooner than `now + ageing`, survivors no
        // sooner than the oldest one does.
        let earliest_expiry = oldest_survivor.unwrap_or(now).checked_add(ageing);
        let min_gap = now.checked_add(ageing.min(MIN_FULL_SWEEP_INTERVAL));
        self.sweep_gate = match (earliest_expiry, min_gap) {
            (Some(expiry), Some(gap)) => SweepGate::NotBefore(expiry.max(gap)),
            _ => SweepGate::Never,
        };
        removed
    }

    /// All entries sorted by (VLAN, MAC), expired ones left out.
    pub fn entries(&self, now: Instant) -> Vec<FdbEntry> {
        let ageing = self.config.ageing;
        let mut rows: Vec<(Key, FdbEntry)> = self
            .table
            .iter()
            .filter_map(|(&key, entry)| Some((key, row(key, entry, now, ageing)?)))
            .collect();
        rows.sort_unstable_by_key(|(key, _)| *key);
        rows.into_iter().map(|(_, row)| row).collect()
    }

    /// The live entry for `mac`, as [`Fdb::entries`] shows it (`None` when unknown or
    /// expired, as for [`Fdb::lookup`]).
    pub fn entry(&self, vlan: VlanId, mac: MacAddr, now: Instant) -> Option<FdbEntry> {
        let key = Key::new(vlan, mac);
        row(key, self.table.get(&key)?, now, self.config.ageing)
    }

    /// Frees one slot for a dynamic entry arriving on `ingress`; with `APPLY` false, only
    /// says how it would.
    fn make_room<const APPLY: bool>(&mut self, ingress: PortId, now: Instant) -> Room {
        let sweep_allowed = match self.sweep_gate {
            SweepGate::Open => true,
            SweepGate::NotBefore(instant) => now >= instant,
            SweepGate::Never => false,
        };
        if sweep_allowed {
            let freed = if APPLY {
                self.expire(now) > 0
            } else {
                let ageing = self.config.ageing;
                self.table.values().any(|entry| {
                    matches!(entry.state, State::Dynamic { last_seen, .. } if is_expired(last_seen, now, ageing))
                })
            };
            if freed {
                return Room::Freed;
            }
        }
        match self.evict_from_heaviest::<APPLY>(ingress) {
            Some((victim_port, victim)) => Room::Evicted(victim_port, victim),
            None => Room::None,
        }
    }

    /// Evicts the oldest learned entry of the port holding the most dynamic entries,
    /// preferring `ingress` on a tie so that a flooding port pays for itself first.
    /// Returns its port and key; with `APPLY` false, only names them.
    fn evict_from_heaviest<const APPLY: bool>(&mut self, ingress: PortId) -> Option<(PortId, Key)> {
        let ingress_load = self.dynamic_count(ingress);
        let (heaviest, load) = self
            .ports
            .iter()
            .enumerate()
            .max_by(|(a_index, a), (b_index, b)| {
                // Highest load; among equals the lowest index wins.
                a.dynamic.cmp(&b.dynamic).then(b_index.cmp(a_index))
            })
            .map(|(index, load)| (index, load.dynamic))?;
        if load == 0 {
            return None;
        }
        let victim = if ingress_load == load {
            ingress
        } else {
            PortId(heaviest as u32)
        };
        if !APPLY {
            let table = &self.table;
            let oldest = self.ports[victim.index()]
                .fifo
                .iter()
                .find(|&&(key, stamp)| is_live(table, key, victim, stamp));
            if let Some(&(key, _)) = oldest {
                return Some((victim, key));
            }
        } else {
            let fifo = &mut self.ports[victim.index()].fifo;
            while let Some((key, stamp)) = fifo.pop_front() {
                if is_live(&self.table, key, victim, stamp) {
                    self.table.remove(&key);
                    self.ports[victim.index()].dynamic -= 1;
                    self.counters.evicted += 1;
                    return Some((victim, key));
                }
            }
        }
        unreachable!("port {victim} counts {load} dynamic entries but its FIFO holds none");
    }

    /// Records a new dynamic entry of `port` in its FIFO, compacting stale items when they
    /// outnumber the live ones.
    fn push_fifo(&mut self, port: PortId, key: Key, stamp: u64) {
        if self.ports.len() <= port.index() {
            self.ports.resize_with(port.index() + 1, PortLoad::default);
        }
        let table = &self.table;
        let load = &mut self.ports[port.index()];
        load.dynamic += 1;
        if load.fifo.len() >= 2 * load.dynamic + FIFO_SLACK {
            load.fifo
                .retain(|&(item_key, item_stamp)| is_live(table, item_key, port, item_stamp));
        }
        load.fifo.push_back((key, stamp));
    }

    /// Checks the bookkeeping against the table.
    #[cfg(test)]
    fn assert_consistent(&self) {
        assert!(self.table.len() <= self.config.capacity, "over capacity");
        let mut dynamic = vec![0usize; self.ports.len()];
        let mut pinned = vec![0usize; self.ports.len()];
        for (key, entry) in &self.table {
            if let State::Static { .. } = entry.state {
                pinned[entry.port.index()] += 1;
            }
            if let State::Dynamic { stamp, .. } = entry.state {
                dynamic[entry.port.index()] += 1;
                assert!(
                    self.ports[entry.port.index()].fifo.contains(&(*key, stamp)),
                    "dynamic entry {key:?} missing from its port's FIFO"
                );
            }
        }
        for (index, load) in self.ports.iter().enumerate() {
            assert_eq!(
                load.dynamic, dynamic[index],
                "dynamic count of port {index}"
            );
            assert_eq!(load.pinned, pinned[index], "pinned count of port {index}");
            // Compaction keeps a FIFO within twice the most entries its port ever held.
            assert!(
                load.fifo.len() <= 2 * self.config.capacity + FIFO_SLACK,
                "FIFO of port {index} not compacted"
            );
        }
    }
}

enum Room {
    /// Sweeping expired entries freed at least one slot.
    Freed,
    /// This entry of this port was evicted.
    Evicted(PortId, Key),
    /// Nothing can be freed: every entry is static.
    None,
}

/// A FIFO item is live while the table maps its key to a dynamic entry of that port with
/// that stamp; any other item is left over from a removal, move or expiry.
fn is_live(table: &HashMap<Key, Entry, RandomState>, key: Key, port: PortId, stamp: u64) -> bool {
    matches!(
        table.get(&key),
        Some(Entry { port: p, state: State::Dynamic { stamp: s, .. } }) if *p == port && *s == stamp
    )
}

/// The row [`Fdb::entries`] shows for an entry; `None` when it expired.
fn row(key: Key, entry: &Entry, now: Instant, ageing: Duration) -> Option<FdbEntry> {
    let (kind, age) = match entry.state {
        State::Static { pin } => {
            let kind = match pin {
                Pin::Configured => EntryKind::Static,
                Pin::Sticky => EntryKind::Sticky,
                Pin::Remote => EntryKind::Remote,
            };
            (kind, Duration::ZERO)
        }
        State::Dynamic { last_seen, .. } => {
            if is_expired(last_seen, now, ageing) {
                return None;
            }
            (EntryKind::Dynamic, now.saturating_duration_since(last_seen))
        }
    };
    Some(FdbEntry {
        vlan: key.vlan(),
        mac: key.mac(),
        port: entry.port,
        kind,
        age,
    })
}

pub(crate) fn is_expired(last_seen: Instant, now: Instant, ageing: Duration) -> bool {
    now.saturating_duration_since(last_seen) >= ageing
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mac(n: u32) -> MacAddr {
        let [a, b, c, d] = n.to_be_bytes();
        MacAddr([0x02, 0, a, b, c, d])
    }

    fn fdb(capacity: usize, ageing_secs: u64) -> Fdb {
        Fdb::new(FdbConfig {
            ageing: Duration::from_secs(ageing_secs),
            capacity,
        })
    }

    const P0: PortId = PortId(0);
    const P1: PortId = PortId(1);
    const P2: PortId = PortId(2);

    #[test]
    fn key_packs_vlan_and_mac() {
        let key = Key::new(4095, MacAddr([0x02, 1, 2, 3, 4, 0xff]));
        assert_eq!(key.vlan(), 4095);
        assert_eq!(key.mac(), MacAddr([0x02, 1, 2, 3, 4, 0xff]));
        assert!(Key::new(1, mac(0)) > Key::new(0, MacAddr([0xfe; 6])));
    }

    #[test]
    fn learn_outcomes() {
        let t0 = Instant::now();
        let mut fdb = fdb(16, 300);
        assert_eq!(fdb.learn(0, mac(1), P0, t0), Learned::New);
        assert_eq!(fdb.learn(0, mac(1), P0, t0), Learned::Refreshed);
        assert_eq!(fdb.learn(0, mac(1), P1, t0), Learned::Moved { from: P0 });
        assert_eq!(fdb.lookup(0, mac(1), t0), Some(P1));
        assert_eq!(fdb.dynamic_count(P0), 0);
        assert_eq!(fdb.dynamic_count(P1), 1);
        // Same MAC on another VLAN is another entry.
        assert_eq!(fdb.learn(7, mac(1), P2, t0), Learned::New);
        assert_eq!(fdb.lookup(0, mac(1), t0), Some(P1));
        assert_eq!(fdb.lookup(7, mac(1), t0), Some(P2));
        let counters = fdb.counters();
        assert_eq!((counters.learned, counters.moved), (2, 1));
        fdb.assert_consistent();
    }

    #[test]
    fn group_and_zero_sources_are_never_learned() {
        let t0 = Instant::now();
        let mut fdb = fdb(16, 300);
        for source in [
            MacAddr::BROADCAST,
            MacAddr::ZERO,
            MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]),
            MacAddr([0x33, 0x33, 0, 0, 0, 1]),
        ] {
            assert_eq!(fdb.learn(0, source, P0, t0), Learned::Ignored);
            assert_eq!(fdb.lookup(0, source, t0), None);
        }
        assert!(fdb.is_empty());
    }

    #[test]
    fn ageing_makes_entries_absent_then_expire_removes_them() {
        let t0 = Instant::now();
        let mut fdb = fdb(16, 10);
        fdb.learn(0, mac(1), P0, t0);
        fdb.learn(0, mac(2), P0, t0 + Duration::from_secs(5));
        let t9 = t0 + Duration::from_secs(9);
        assert_eq!(fdb.lookup(0, mac(1), t9), Some(P0));
        let t10 = t0 + Duration::from_secs(10);
        assert_eq!(fdb.lookup(0, mac(1), t10), None, "age == ageing is expired");
        assert_eq!(fdb.lookup(0, mac(2), t10), Some(P0));
        assert_eq!(fdb.entries(t10).len(), 1);
        assert_eq!(fdb.expire(t10), 1);
        assert_eq!(fdb.len(), 1);
        assert_eq!(fdb.counters().aged_out, 1);
        assert_eq!(fdb.dynamic_count(P0), 1);
        fdb.assert_consistent();
    }

    #[test]
    fn relearning_an_expired_entry_is_new_not_a_move() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(11);
        let mut fdb = fdb(16, 10);
        fdb.learn(0, mac(1), P0, t0);
        assert_eq!(fdb.learn(0, mac(1), P1, later), Learned::New);
        fdb.learn(0, mac(2), P0, t0);
        assert_eq!(fdb.learn(0, mac(2), P0, later), Learned::New);
        assert_eq!(fdb.counters().moved, 0);
        assert_eq!(fdb.counters().aged_out, 2);
        assert_eq!(fdb.lookup(0, mac(1), later), Some(P1));
        fdb.assert_consistent();
    }

    #[test]
    fn static_entries_pin_and_never_age() {
        let t0 = Instant::now();
        let mut fdb = fdb(16, 10);
        fdb.learn(0, mac(1), P0, t0);
        fdb.add_static(0, mac(1), P2).unwrap();
        assert_eq!(fdb.dynamic_count(P0), 0);
        assert_eq!(fdb.learn(0, mac(1), P1, t0), Learned::StaticHeld);
        assert_eq!(fdb.learn(0, mac(1), P2, t0), Learned::Refreshed);
        let much_later = t0 + Duration::from_secs(1000);
        assert_eq!(fdb.lookup(0, mac(1), much_later), Some(P2));
        assert_eq!(fdb.expire(much_later), 0);
        let rows = fdb.entries(much_later);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].kind, EntryKind::Static);
        assert_eq!(rows[0].age, Duration::ZERO);
        assert_eq!(fdb.flush(), 0);
        assert!(fdb.remove(0, mac(1)));
        assert!(!fdb.remove(0, mac(1)));
        fdb.assert_consistent();
    }

    #[test]
    fn remote_entries_never_age_yield_to_a_local_learn_and_not_to_configuration() {
        let t0 = Instant::now();
        let mut fdb = fdb(16, 10);
        fdb.learn(0, mac(1), P0, t0);
        // Installed over a learned entry; the tunnel port hearing it changes nothing.
        assert_eq!(fdb.add_remote(0, mac(1), P2), Ok(true));
        assert_eq!(fdb.learn(0, mac(1), P2, t0), Learned::Refreshed);
        let much_later = t0 + Duration::from_secs(1000);
        assert_eq!(fdb.expire(much_later), 0);
        assert_eq!(fdb.flush(), 0);
        let rows = fdb.entries(much_later);
        assert_eq!((rows[0].kind, rows[0].port), (EntryKind::Remote, P2));
        // Heard on a local port: the MAC moved here, learned like any other.
        assert_eq!(
            fdb.learn(0, mac(1), P1, much_later),
            Learned::Moved { from: P2 }
        );
        assert_eq!(fdb.entries(much_later)[0].kind, EntryKind::Dynamic);
        assert!(!fdb.remove_remote(0, mac(1), P2), "no longer the tunnel's");
        assert_eq!(fdb.lookup(0, mac(1), much_later), Some(P1));
        // The same through a sticky port.
        fdb.add_remote(0, mac(2), P2).unwrap();
        assert_eq!(
            fdb.learn_sticky(0, mac(2), P0, t0),
            Learned::Moved { from: P2 }
        );
        // A configured entry is not replaced.
        fdb.add_static(0, mac(3), P0).unwrap();
        assert_eq!(fdb.add_remote(0, mac(3), P2), Ok(false));
        assert_eq!(fdb.lookup(0, mac(3), t0), Some(P0));
        fdb.add_remote(0, mac(4), P2).unwrap();
        assert!(fdb.remove_remote(0, mac(4), P2));
        fdb.assert_consistent();
    }

    #[test]
    fn sticky_entries_stay_and_count_towards_their_port() {
        let t0 = Instant::now();
        let mut fdb = fdb(16, 10);
        assert_eq!(fdb.learn_sticky(0, mac(1), P0, t0), Learned::New);
        assert_eq!(fdb.learn_sticky(0, mac(1), P0, t0), Learned::Refreshed);
        fdb.learn(0, mac(2), P0, t0);
        assert_eq!(fdb.port_count(P0), 2);
        assert_eq!(fdb.dynamic_count(P0), 1);
        // A dynamic entry elsewhere is taken over; a sticky one is held.
        fdb.learn(0, mac(3), P1, t0);
        assert_eq!(
            fdb.learn_sticky(0, mac(3), P0, t0),
            Learned::Moved { from: P1 }
        );
        assert_eq!(fdb.learn(0, mac(1), P1, t0), Learned::StaticHeld);
        assert_eq!(fdb.learn_sticky(0, mac(1), P1, t0), Learned::StaticHeld);
        let much_later = t0 + Duration::from_secs(1000);
        assert_eq!(fdb.lookup(0, mac(1), much_later), Some(P0));
        assert_eq!(fdb.entry_port(0, mac(2)), Some(P0), "expired but not swept");
        fdb.expire(much_later);
        assert_eq!(fdb.port_count(P0), 2);
        let kinds: Vec<_> = fdb.entries(much_later).iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![EntryKind::Sticky, EntryKind::Sticky]);
        // Disabling keeps sticky entries; removing the port forgets them.
        assert_eq!(fdb.flush_port_dynamic(P0), 0);
        assert_eq!(fdb.flush(), 0);
        assert_eq!(fdb.port_count(P0), 2);
        assert!(fdb.remove(0, mac(3)));
        assert_eq!(fdb.port_count(P0), 1);
        assert_eq!(fdb.flush_port(P0), 1);
        assert_eq!(fdb.port_count(P0), 0);
        fdb.assert_consistent();
    }

    #[test]
    fn static_rejects_group_and_zero_addresses() {
        let mut fdb = fdb(16, 10);
        let error = fdb.add_static(3, MacAddr::BROADCAST, P0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot add static entry for ff:ff:ff:ff:ff:ff on VLAN 3: it is a multicast address"
        );
        assert!(matches!(
            fdb.add_static(0, MacAddr::ZERO, P0),
            Err(FdbError::ZeroStatic { .. })
        ));
    }

    #[test]
    fn static_evicts_dynamic_when_full_and_fails_when_all_static() {
        let t0 = Instant::now();
        let mut fdb = fdb(2, 10);
        fdb.learn(0, mac(1), P0, t0);
        fdb.add_static(0, mac(2), P1).unwrap();
        fdb.add_static(0, mac(3), P1).unwrap();
        assert_eq!(
            fdb.lookup(0, mac(1), t0),
            None,
            "the dynamic entry made room"
        );
        assert_eq!(fdb.len(), 2);
        assert!(matches!(
            fdb.add_static(0, mac(4), P1),
            Err(FdbError::FullOfStatic { capacity: 2, .. })
        ));
        assert_eq!(fdb.len(), 2);
        assert_eq!(fdb.learn(0, mac(5), P0, t0), Learned::Full);
        assert_eq!(fdb.lookup(0, mac(5), t0), None);
        fdb.assert_consistent();
    }

    #[test]
    fn static_entries_are_only_for_vlans_a_port_carries() {
        let mut fdb = fdb(8, 300);
        for vlan in [0, 1, 4094] {
            assert_eq!(
                fdb.add_static(vlan, mac(1), PortId(0)),
                Ok(()),
                "VLAN {vlan}"
            );
        }
        for vlan in [4095, 5000, u16::MAX] {
            let err = fdb.add_static(vlan, mac(2), PortId(0)).unwrap_err();
            assert_eq!(err, FdbError::VlanOutOfRange { vlan, mac: mac(2) });
            assert!(err.to_string().contains("VLANs are 1..=4094"), "{err}");
            assert_eq!(fdb.entry_port(vlan, mac(2)), None);
        }
        assert_eq!(fdb.len(), 3);
    }

    #[test]
    fn zero_capacity_learns_nothing() {
        let mut fdb = fdb(0, 10);
        assert_eq!(fdb.learn(0, mac(1), P0, Instant::now()), Learned::Full);
        assert!(fdb.is_empty());
    }

    #[test]
    fn full_table_sweeps_expired_before_evicting() {
        let t0 = Instant::now();
        let mut fdb = fdb(2, 10);
        fdb.learn(0, mac(1), P0, t0);
        fdb.learn(0, mac(2), P1, t0 + Duration::from_secs(5));
        let t11 = t0 + Duration::from_secs(11);
        assert_eq!(fdb.learn(0, mac(3), P1, t11), Learned::New);
        assert_eq!(fdb.counters().aged_out, 1);
        assert_eq!(fdb.counters().evicted, 0);
        assert_eq!(fdb.lookup(0, mac(2), t11), Some(P1));
        fdb.assert_consistent();
    }

    #[test]
    fn sweeps_started_by_learns_are_rate_limited() {
        let t0 = Instant::now();
        let mut fdb = fdb(2, 10);
        fdb.learn(0, mac(1), P0, t0);
        fdb.learn(0, mac(2), P0, t0);
        fdb.expire(t0);
        // Both expire at t0+10; the gate opens at t0+10, not before.
        let t9 = t0 + Duration::from_secs(9);
        assert!(matches!(
            fdb.learn(0, mac(3), P1, t9),
            Learned::Evicted { .. }
        ));
        let t10 = t0 + Duration::from_secs(10);
        assert_eq!(fdb.learn(0, mac(4), P1, t10), Learned::New);
        assert_eq!(fdb.counters().aged_out, 1, "mac(2) expired and was swept");
        // The sweep at t10 set the gate to when its oldest survivor, mac(3), expires.
        let t19 = t0 + Duration::from_secs(19);
        assert_eq!(fdb.learn(0, mac(5), P1, t19), Learned::New);
        fdb.assert_consistent();
    }

    #[test]
    fn sweeps_are_at_least_the_minimum_interval_apart() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut fdb = fdb(2, 10);
        fdb.learn(0, mac(1), P0, t0);
        fdb.learn(0, mac(2), P0, t0 + ms(500));
        let t10 = t0 + ms(10_000);
        assert_eq!(fdb.learn(0, mac(3), P0, t10), Learned::New, "mac(1) swept");
        // mac(2) expired at t10.5, but the last sweep was less than a second ago.
        assert_eq!(
            fdb.learn(0, mac(4), P0, t10 + ms(600)),
            Learned::Evicted { victim_port: P0 }
        );
        assert_eq!(fdb.counters().aged_out, 1);
        assert_eq!(fdb.len(), 2);
        fdb.assert_consistent();
    }

    #[test]
    fn eviction_takes_from_the_heaviest_port_oldest_first() {
        let t0 = Instant::now();
        let mut fdb = fdb(4, 300);
        fdb.learn(0, mac(1), P0, t0);
        fdb.learn(0, mac(10), P1, t0);
        fdb.learn(0, mac(11), P1, t0);
        fdb.learn(0, mac(12), P1, t0);
        // P0 learns: P1 is heaviest and gives up its oldest.
        assert_eq!(
            fdb.learn(0, mac(2), P0, t0),
            Learned::Evicted { victim_port: P1 }
        );
        assert_eq!(fdb.lookup(0, mac(10), t0), None);
        assert_eq!(fdb.lookup(0, mac(11), t0), Some(P1));
        // Now P0 and P1 hold 2 each: P0 learning again evicts its own oldest.
        assert_eq!(
            fdb.learn(0, mac(3), P0, t0),
            Learned::Evicted { victim_port: P0 }
        );
        assert_eq!(fdb.lookup(0, mac(1), t0), None);
        assert_eq!(fdb.lookup(0, mac(2), t0), Some(P0));
        assert_eq!(fdb.counters().evicted, 2);
        fdb.assert_consistent();
    }

    #[test]
    fn eviction_skips_stale_fifo_items() {
        let t0 = Instant::now();
        let mut fdb = fdb(3, 300);
        fdb.learn(0, mac(1), P0, t0);
        fdb.learn(0, mac(2), P0, t0);
        fdb.learn(0, mac(1), P1, t0); // moved: P0's first FIFO item is stale
        fdb.learn(0, mac(1), P0, t0); // moved back: a new item at the back of P0's FIFO
        fdb.learn(0, mac(3), P1, t0);
        assert_eq!(
            fdb.learn(0, mac(4), P1, t0),
            Learned::Evicted { victim_port: P0 }
        );
        assert_eq!(fdb.lookup(0, mac(2), t0), None, "oldest live item of P0");
        assert_eq!(fdb.lookup(0, mac(1), t0), Some(P0));
        fdb.assert_consistent();
    }

    #[test]
    fn fifo_is_compacted_under_churn() {
        let t0 = Instant::now();
        let mut fdb = fdb(8, 300);
        for round in 0..10_000u32 {
            fdb.learn(0, mac(round % 4), PortId(round % 2), t0);
        }
        fdb.assert_consistent();
        assert!(
            fdb.ports
                .iter()
                .all(|load| load.fifo.len() <= 2 * 4 + FIFO_SLACK)
        );
    }

    #[test]
    fn flushes() {
        let t0 = Instant::now();
        let mut fdb = fdb(16, 300);
        fdb.learn(0, mac(1), P0, t0);
        fdb.learn(0, mac(2), P1, t0);
        fdb.learn(0, mac(3), P1, t0);
        fdb.add_static(0, mac(4), P1).unwrap();
        assert_eq!(fdb.flush_port_dynamic(P1), 2);
        assert_eq!(fdb.lookup(0, mac(4), t0), Some(P1));
        fdb.learn(0, mac(2), P1, t0);
        assert_eq!(fdb.flush_port(P1), 2);
        assert_eq!(fdb.dynamic_count(P1), 0);
        fdb.add_static(0, mac(4), P1).unwrap();
        assert_eq!(fdb.flush(), 1);
        assert_eq!(fdb.len(), 1);
        fdb.assert_consistent();
    }

    #[test]
    fn entries_are_sorted_and_serialize() {
        let t0 = Instant::now();
        let mut fdb = fdb(16, 300);
        fdb.learn(5, mac(1), P0, t0);
        fdb.learn(0, mac(9), P1, t0);
        fdb.learn(0, mac(2), P2, t0);
        let later = t0 + Duration::from_secs(3);
        let rows = fdb.entries(later);
        let keys: Vec<_> = rows.iter().map(|row| (row.vlan, row.mac)).collect();
        assert_eq!(keys, vec![(0, mac(2)), (0, mac(9)), (5, mac(1))]);
        assert_eq!(rows[0].age, Duration::from_secs(3));
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(json["mac"], "02:00:00:00:00:02");
        assert_eq!(json["port"], 2);
        assert_eq!(json["kind"], "dynamic");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Learn {
            mac: u32,
            port: u32,
            advance_ms: u64,
        },
        Static {
            mac: u32,
            port: u32,
        },
        Sticky {
            mac: u32,
            port: u32,
        },
        Remove {
            mac: u32,
        },
        FlushPort {
            port: u32,
        },
        Expire,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            20 => (0..64u32, 0..4u32, 0..400u64)
                .prop_map(|(mac, port, advance_ms)| Op::Learn { mac, port, advance_ms }),
            1 => (0..64u32, 0..4u32).prop_map(|(mac, port)| Op::Static { mac, port }),
            2 => (0..64u32, 0..4u32).prop_map(|(mac, port)| Op::Sticky { mac, port }),
            1 => (0..64u32).prop_map(|mac| Op::Remove { mac }),
            1 => (0..4u32).prop_map(|port| Op::FlushPort { port }),
            1 => Just(Op::Expire),
        ]
    }

    proptest! {
        /// Random operations never break the cap or the bookkeeping, and every eviction
        /// takes from a port holding at least as many entries as any other, preferring the
        /// learning port on a tie.
        #[test]
        fn cap_and_fair_eviction_hold(
            capacity in 0usize..12,
            ageing_ms in 1u64..3000,
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let mut now = Instant::now();
            let mut fdb = fdb(capacity, 0);
            fdb.config.ageing = Duration::from_millis(ageing_ms);
            for op in ops {
                match op {
                    Op::Learn { mac: m, port, advance_ms } => {
                        now += Duration::from_millis(advance_ms);
                        let port = PortId(port);
                        let loads: Vec<usize> = (0..4).map(|p| fdb.dynamic_count(PortId(p))).collect();
                        let outcome = fdb.learn(0, mac(m), port, now);
                        if let Learned::Evicted { victim_port } = outcome {
                            let victim_load = loads[victim_port.index()];
                            prop_assert!(loads.iter().all(|&load| load <= victim_load), "{loads:?} {victim_port}");
                            if loads[port.index()] == victim_load {
                                prop_assert_eq!(victim_port, port);
                            }
                        }
                        if !matches!(outcome, Learned::Full | Learned::StaticHeld) {
                            prop_assert_eq!(fdb.lookup(0, mac(m), now), Some(port));
                        }
                    }
                    Op::Static { mac: m, port } => {
                        if fdb.add_static(0, mac(m), PortId(port)).is_ok() {
                            prop_assert_eq!(fdb.lookup(0, mac(m), now), Some(PortId(port)));
                        }
                    }
                    Op::Sticky { mac: m, port } => {
                        let outcome = fdb.learn_sticky(0, mac(m), PortId(port), now);
                        if !matches!(outcome, Learned::Full | Learned::StaticHeld) {
                            prop_assert_eq!(fdb.lookup(0, mac(m), now), Some(PortId(port)));
                        }
                    }
                    Op::Remove { mac: m } => {
                        fdb.remove(0, mac(m));
                        prop_assert_eq!(fdb.lookup(0, mac(m), now), None);
                    }
                    Op::FlushPort { port } => {
                        fdb.flush_port(PortId(port));
                        prop_assert_eq!(fdb.dynamic_count(PortId(port)), 0);
                    }
                    Op::Expire => {
                        fdb.expire(now);
                        prop_assert!(fdb.entries(now).len() == fdb.len());
                    }
                }
                prop_assert!(fdb.len() <= capacity);
                fdb.assert_consistent();
            }
        }

        /// Entries seen within the ageing time are found; after it, none is, and
        /// `expire` removes every dynamic entry.
        #[test]
        fn ageing_expires_entries(
            sightings in proptest::collection::vec((0..32u32, 0..4u32, 0..5000u64), 1..100),
            ageing_ms in 1u64..5000,
        ) {
            let t0 = Instant::now();
            let ageing = Duration::from_millis(ageing_ms);
            let mut fdb = fdb(1024, 0);
            fdb.config.ageing = ageing;
            let mut latest = std::collections::HashMap::new();
            let mut sorted = sightings.clone();
            sorted.sort_by_key(|&(_, _, at)| at);
            for (m, port, at) in sorted {
                fdb.learn(0, mac(m), PortId(port), t0 + Duration::from_millis(at));
                latest.insert(m, (PortId(port), at));
            }
            let end = sightings.iter().map(|&(_, _, at)| at).max().unwrap();
            let now = t0 + Duration::from_millis(end);
            for (&m, &(port, at)) in &latest {
                let expected = (end - at < ageing_ms).then_some(port);
                prop_assert_eq!(fdb.lookup(0, mac(m), now), expected);
            }
            let after = now + ageing;
            prop_assert!(latest.keys().all(|&m| fdb.lookup(0, mac(m), after).is_none()));
            prop_assert_eq!(fdb.expire(after), latest.len());
            prop_assert!(fdb.is_empty());
            fdb.assert_consistent();
        }

        /// A port flooding random sources cannot evict a neighbour's entries while each
        /// neighbour holds fewer entries than the flooder.
        #[test]
        fn flooding_port_evicts_only_itself(
            neighbours in proptest::collection::vec(1usize..6, 1..4),
            flood in proptest::collection::vec(any::<u32>(), 50..400),
        ) {
            let t0 = Instant::now();
            let capacity = 24;
            let mut fdb = fdb(capacity, 300);
            let mut next = 0u32;
            let mut neighbour_macs = Vec::new();
            for (slot, &hosts) in neighbours.iter().enumerate() {
                for _ in 0..hosts {
                    next += 1;
                    let m = MacAddr([0x02, 0xaa, 0, 0, 0, next as u8]);
                    fdb.learn(0, m, PortId(slot as u32 + 1), t0);
                    neighbour_macs.push((m, PortId(slot as u32 + 1)));
                }
            }
            let flooder = PortId(0);
            for random in flood {
                let [a, b, c, d] = random.to_be_bytes();
                let source = MacAddr([0x06, 0xbb, a, b, c, d]);
                let outcome = fdb.learn(0, source, flooder, t0);
                if let Learned::Evicted { victim_port } = outcome {
                    prop_assert_eq!(victim_port, flooder);
                }
            }
            for (m, port) in neighbour_macs {
                prop_assert_eq!(fdb.lookup(0, m, t0), Some(port));
            }
            prop_assert!(fdb.len() <= capacity);
            fdb.assert_consistent();
        }
    }
}
