//! Counters of ports and of the loop, and the snapshots that carry them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::idle::IdleStats;
use crate::fdb::{FdbCounters, FdbEntry, PortId};
use crate::forward::{DropReason, MacFlapEntry};
use crate::wire::MacAddr;

/// Where a MAC learned on a tunnel port lives: the remote VTEP the port heard it from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbRemote {
    pub port: PortId,
    pub mac: MacAddr,
    pub remote: IpAddr,
}

/// Upper bounds of the batch-size histogram buckets (frames read from one
/// port in one visit); the last bucket is everything above.
pub const BATCH_BUCKETS: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// Ports removed after device errors that snapshots still report (the newest).
pub const MAX_REMOVED_PORTS: usize = 64;

/// Upper bounds (µs) of the buckets of [`LoopStats::turn_us`].
pub const TURN_BUCKETS_US: [u64; 16] = [
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536,
];

/// How the loop spends its turns (summed over dataplane threads).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopStats {
    /// Returns from `epoll_wait`, spinning polls included.
    pub iterations: u64,
    /// Returns from an `epoll_wait` that slept (a wake-up of the thread: what
    /// sparse traffic pays per packet when no window was open for it).
    #[serde(default)]
    pub wakeups: u64,
    /// Windows of spinning ahead of a predicted burst (`adaptive_poll_pct`).
    #[serde(default)]
    pub idle_windows: u64,
    /// Bursts that arrived while the loop spun in such a window.
    #[serde(default)]
    pub idle_window_hits: u64,
    /// Time spent spinning in those windows, nanoseconds.
    #[serde(default)]
    pub idle_window_spin_ns: u64,
    /// Spins after frames (`idle_poll_us`) that saw the next frame before they ended…
    #[serde(default)]
    pub idle_poll_hits: u64,
    /// …and those that ended without one (the loop then slept).
    #[serde(default)]
    pub idle_poll_misses: u64,
    /// Visits to a ready port.
    pub batches: u64,
    /// Frames read over all visits.
    pub batch_frames: u64,
    /// Visits by frames read: `batch_sizes[i]` counts visits that read at most
    /// `BATCH_BUCKETS[i]` frames and more than the bucket before; the extra
    /// last element counts larger ones.
    pub batch_sizes: [u64; BATCH_BUCKETS.len() + 1],
    /// Loop latency: turns that forwarded frames, by how long the turn took
    /// from epoll's return until the loop could wait again (a frame arriving
    /// meanwhile waits at most that long). `turn_us[i]` counts turns of at
    /// most `TURN_BUCKETS_US[i]` µs and more than the bucket before; the extra
    /// last element counts longer ones.
    pub turn_us: [u64; TURN_BUCKETS_US.len() + 1],
    /// The CPU of each dataplane thread pinned right now (`switch.cpu_affinity`: CPUs
    /// listed, or `auto` while the thread moves bulk traffic), the primary first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u32>,
    /// Times a dataplane thread pinned itself to its CPU because it got busy (`auto`).
    #[serde(default)]
    pub affinity_pins: u64,
}

impl LoopStats {
    pub(super) fn record_batch(&mut self, frames: usize) {
        self.batches += 1;
        self.batch_frames += frames as u64;
        let bucket = BATCH_BUCKETS
            .iter()
            .position(|&bound| frames <= bound)
            .unwrap_or(BATCH_BUCKETS.len());
        self.batch_sizes[bucket] += 1;
    }

    pub(super) fn record_turn(&mut self, took: Duration) {
        let micros = took.as_micros() as u64;
        let bucket = TURN_BUCKETS_US
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(TURN_BUCKETS_US.len());
        self.turn_us[bucket] += 1;
    }

    /// These counters with the idle policy's figures.
    pub(super) fn with_idle(&self, idle: IdleStats) -> LoopStats {
        LoopStats {
            idle_windows: idle.windows,
            idle_window_hits: idle.hits,
            idle_window_spin_ns: idle.spin_ns,
            idle_poll_hits: idle.after_hits,
            idle_poll_misses: idle.after_misses,
            ..self.clone()
        }
    }

    pub(super) fn add(&mut self, other: &LoopStats) {
        self.iterations += other.iterations;
        self.wakeups += other.wakeups;
        self.idle_windows += other.idle_windows;
        self.idle_window_hits += other.idle_window_hits;
        self.idle_window_spin_ns += other.idle_window_spin_ns;
        self.idle_poll_hits += other.idle_poll_hits;
        self.idle_poll_misses += other.idle_poll_misses;
        self.batches += other.batches;
        self.batch_frames += other.batch_frames;
        for (mine, theirs) in self.batch_sizes.iter_mut().zip(other.batch_sizes) {
            *mine += theirs;
        }
        for (mine, theirs) in self.turn_us.iter_mut().zip(other.turn_us) {
            *mine += theirs;
        }
        self.cpus.extend_from_slice(&other.cpus);
        self.affinity_pins += other.affinity_pins;
    }
}

/// Per-port counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PortCounters {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Source MACs that moved onto this port from another.
    pub mac_moves: u64,
    /// Source MACs that flapped onto this port and were held on their previous one.
    pub mac_flaps: u64,
    /// Times the port was shut down by its MAC limit.
    pub shutdowns: u64,
    /// Frames dropped, by reason: at ingress for frames read from this port,
    /// at egress for frames that could not be written to it.
    pub drops: DropCounters,
}

impl PortCounters {
    /// Adds another worker's counts for the same port.
    pub(super) fn add(&mut self, other: &PortCounters) {
        // Exhaustive, so a new counter cannot be forgotten here.
        let PortCounters {
            rx_frames,
            rx_bytes,
            tx_frames,
            tx_bytes,
            mac_moves,
            mac_flaps,
            shutdowns,
            drops,
        } = other;
        self.rx_frames += rx_frames;
        self.rx_bytes += rx_bytes;
        self.tx_frames += tx_frames;
        self.tx_bytes += tx_bytes;
        self.mac_moves += mac_moves;
        self.mac_flaps += mac_flaps;
        self.shutdowns += shutdowns;
        for (mine, theirs) in self.drops.0.iter_mut().zip(drops.0.iter()) {
            *mine += theirs;
        }
    }
}

/// Drop counters indexed by [`DropReason`]; serialised as `{reason: count}`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DropCounters([u64; DropReason::COUNT]);

impl DropCounters {
    pub fn count(&mut self, reason: DropReason) {
        self.0[reason.index()] += 1;
    }

    /// Counts `count` drops of `reason` at once.
    pub fn add(&mut self, reason: DropReason, count: u64) {
        self.0[reason.index()] += count;
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The first reason counted more often in `later` than here.
    pub fn first_increase(&self, later: &DropCounters) -> Option<DropReason> {
        DropReason::ALL
            .into_iter()
            .find(|r| later.get(*r) > self.get(*r))
    }
}

impl Serialize for DropCounters {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(DropReason::ALL.iter().map(|r| (r.name(), self.get(*r))))
    }
}

/// Reasons this build does not know (from a newer switch) are left out.
impl<'de> Deserialize<'de> for DropCounters {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let by_name = HashMap::<String, u64>::deserialize(deserializer)?;
        let mut counters = DropCounters::default();
        for reason in DropReason::ALL {
            counters.0[reason.index()] = by_name.get(reason.name()).copied().unwrap_or(0);
        }
        Ok(counters)
    }
}

/// What a VXLAN port did with super-frames and datagram trains, read from the port
/// when a snapshot is taken (the port counts them itself, from any thread).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelCounters {
    /// Super-frames encapsulated whole: cut into segments by the port, not the dataplane.
    pub tx_super_frames: u64,
    /// Messages sent with `UDP_SEGMENT` (a train of datagrams in one pass).
    pub tx_gso_messages: u64,
    /// VXLAN datagrams sent, every copy counted.
    pub tx_datagrams: u64,
    /// The kernel refused `UDP_SEGMENT` and the port sends one datagram per record.
    pub tx_gso_refused: bool,
    /// Reads of the receive socket that returned datagrams.
    pub rx_reads: u64,
    /// Datagrams those reads returned (more than `rx_reads`: `UDP_GRO` trains).
    pub rx_datagrams: u64,
    /// Super-frames coalesced from received segments.
    pub rx_super_frames: u64,
    /// Frames that went into those super-frames.
    pub rx_coalesced: u64,
}

/// One port as the control plane sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortSnapshot {
    pub id: PortId,
    pub name: String,
    pub mtu: u32,
    pub vnet_hdr: bool,
    /// False once disabled, e.g. shut down by its MAC limit.
    pub enabled: bool,
    /// Whether the netdev is up, as netlink last reported it.
    pub link_up: bool,
    pub counters: PortCounters,
    /// Frames the port's TAP netdev dropped on transmit (its `tx_dropped`): the endpoint
    /// sent them while the TAP's queue (`txqueuelen`) was full, so they never reached the
    /// switch and none of its counters has them. Read from the netdev's link statistics by
    /// the control thread when `stats` or metrics ask, never by the dataplane: `None` in the
    /// dataplane's own snapshots, for ports that are not TAPs, or when it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netdev_tx_dropped: Option<u64>,
    /// When a port of `removed_ports` was removed: seconds since the Unix epoch (to the
    /// millisecond); absent on a live port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_at: Option<f64>,
    /// A tunnel port's super-frame and train counts (absent for other ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelCounters>,
}

/// The state of the switch at one instant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub ports: Vec<PortSnapshot>,
    /// Ports removed after an I/O error (e.g. their TAP was deleted), with their last counters:
    /// the newest removal of each name, at most [`MAX_REMOVED_PORTS`].
    pub removed_ports: Vec<PortSnapshot>,
    /// The MAC table (empty in a counters-only snapshot).
    pub fdb: Vec<FdbEntry>,
    /// The remote VTEP of each `fdb` entry on a tunnel port whose port still knows it,
    /// asked of the port by the dataplane when the snapshot is taken.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fdb_remotes: Vec<FdbRemote>,
    /// Entries in the MAC table (also when `fdb` was left out).
    pub fdb_size: usize,
    pub fdb_counters: FdbCounters,
    /// Addresses that flapped between ports, with their flap counts.
    pub mac_flaps: Vec<MacFlapEntry>,
    pub loop_stats: LoopStats,
    /// Events lost because their reader fell behind.
    pub events_dropped: u64,
    /// The EVPN agent's session with gobgpd (`None`: no `[evpn]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evpn: Option<EvpnSummary>,
}

/// The EVPN agent's session with gobgpd, as the daemon last reported it to the dataplane
/// ([`super::Command::SetEvpnStatus`]), so that `stats` and metrics carry it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvpnSummary {
    /// gobgpd's API address.
    pub gobgp: String,
    pub connected: bool,
    /// Sessions with gobgpd so far.
    pub sessions: u64,
    /// Why the last connection attempt or session failed.
    pub last_error: Option<String>,
}

impl Snapshot {
    pub fn port(&self, name: &str) -> Option<&PortSnapshot> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// Adds another worker's counters (per port, by id, and of its loop).
    pub(super) fn merge_counters(&mut self, other: &Snapshot) {
        merge_ports(&mut self.ports, &other.ports);
        self.loop_stats.add(&other.loop_stats);
        self.events_dropped += other.events_dropped;
    }
}

fn merge_ports(into: &mut Vec<PortSnapshot>, from: &[PortSnapshot]) {
    for theirs in from {
        match into
            .iter_mut()
            .find(|p| p.id == theirs.id && p.name == theirs.name)
        {
            Some(mine) => mine.counters.add(&theirs.counters),
            None => into.push(theirs.clone()),
        }
    }
}
