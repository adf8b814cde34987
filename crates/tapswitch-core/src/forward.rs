//! The forwarding decision for one frame: pure, no I/O, no clock reads.
//!
//! [`Forwarder::decide`] classifies the frame into a VLAN by its ingress port's
//! [`VlanMode`], applies the port's security policy (anti-spoofing, MAC limit, sticky
//! learning), learns the source address (damping MACs that flap between ports), then picks
//! the egress ports: the one port a known unicast destination was learned on, or every
//! other enabled port of the VLAN for broadcast, multicast and unknown unicast (flooding),
//! subject to storm control, port isolation and per-port flood switches. Each egress port
//! comes with the [`TagAction`] that puts the frame on its wire as that port wants it.
//! The ingress port is never an egress port.
//!
//! Ports without VLAN settings are transparent: they switch every frame, tagged or not,
//! on VLAN key 0 among themselves, as a Linux bridge without VLAN filtering does.
//!
//! Things worth telling the operator (limit violations, flaps) are queued as
//! [`ForwardEvent`]s in a bounded queue the caller drains; deciding never allocates.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use serde::Serialize;

use crate::fdb::{Fdb, FdbConfig, FdbEntry, LearnPreview, Learned, PortId, VlanId};
use crate::vnet::VnetError;
use crate::wire::{ETHERTYPE_VLAN, EthernetFrame, MacAddr, VlanTag, is_vlan_tpid};

pub use crate::policy::{
    FloodControl, PolicyError, PortPolicy, PortSecurity, StormControl, Tagging, TokenBucket,
    ViolationAction, VlanMode, VlanSet,
};

/// Highest number of port slots: port ids index a `Vec`.
pub const MAX_PORTS: usize = 4096;

/// Events held for the caller before further ones are only counted.
const EVENT_QUEUE_LEN: usize = 256;
/// MACs whose moves are tracked for flap detection at once.
const FLAP_TABLE_LEN: usize = 1024;
/// Shortest gap between two log-worthy limit violations of one port.
const VIOLATION_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Why a frame was not forwarded. Serialised as its [`DropReason::name`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Shorter than its Ethernet header.
    Runt,
    /// Arrived on a port the forwarder does not know.
    UnknownIngress,
    /// Arrived on a disabled port.
    IngressDisabled,
    /// The destination was learned on the ingress port: it already heard the frame.
    SameSegment,
    /// The destination is pinned (static entry) to a disabled port.
    EgressDisabled,
    /// A flood with no other enabled port to go to.
    NoEgress,
    // The reasons below are decided at the dataplane's edge (they depend on the
    // vnet header and on I/O results) but share the counters.
    /// Longer than the port's MTU allows and not an offload super-frame.
    Oversize,
    /// A super-frame that software segmentation cannot fit to a port without
    /// offloads: its MTU leaves no room for payload behind the headers, or is
    /// below the size of UDP datagrams (which must not be re-cut).
    NeedsOffload,
    /// The vnet header does not describe its frame (see `vnet::VnetError`).
    BadVnetHeader,
    /// A super-frame that would make too many segments, each a write towards a
    /// port without offloads: a TCP `gso_size` below Linux's `TCP_MIN_MSS`, more
    /// than `vnet::UDP_MAX_SEGMENTS` UDP datagrams or `vnet::MAX_SEGMENTS` in all.
    TooManySegments,
    /// The egress TAP's queue was full.
    TxQueueFull,
    /// The egress TAP refused the frame (e.g. an inconsistent vnet header).
    TxRejected,
    /// Writing failed because the egress device went away.
    TxError,
    /// The egress port's netdev is down (set down by its endpoint, or being moved to
    /// another namespace): the TAP refuses frames until it is up again.
    LinkDown,
    // Policy decisions, by the forwarder again.
    /// The ingress port does not carry the frame's VLAN (or the frame is untagged on a
    /// trunk without a native VLAN), or the learned destination's port no longer does.
    VlanNotAllowed,
    /// The source address is not one the port is bound to (anti-spoofing).
    SpoofedSource,
    /// A new source address would exceed the port's MAC limit.
    MacLimit,
    /// Between two isolated ports.
    Isolated,
    /// Over the ingress port's broadcast rate.
    StormBroadcast,
    /// Over the ingress port's multicast rate.
    StormMulticast,
    /// Over the ingress port's unknown-unicast rate.
    StormUnknownUnicast,
    // Tunnel ports' own reasons, decided where the tunnel header is read.
    /// A VXLAN packet for a VNI the port does not carry.
    UnknownVni,
    /// A VXLAN packet whose header is malformed (no I flag, unknown flags,
    /// reserved bits set, shorter than the header) or whose inner frame is a runt.
    BadVxlanHeader,
}

impl DropReason {
    /// Number of reasons, for `[u64; DropReason::COUNT]` counters.
    pub const COUNT: usize = 23;

    /// Every reason, in [`Self::index`] order.
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Runt,
        DropReason::UnknownIngress,
        DropReason::IngressDisabled,
        DropReason::SameSegment,
        DropReason::EgressDisabled,
        DropReason::NoEgress,
        DropReason::Oversize,
        DropReason::NeedsOffload,
        DropReason::BadVnetHeader,
        DropReason::TooManySegments,
        DropReason::TxQueueFull,
        DropReason::TxRejected,
        DropReason::TxError,
        DropReason::LinkDown,
        DropReason::VlanNotAllowed,
        DropReason::SpoofedSource,
        DropReason::MacLimit,
        DropReason::Isolated,
        DropReason::StormBroadcast,
        DropReason::StormMulticast,
        DropReason::StormUnknownUnicast,
        DropReason::UnknownVni,
        DropReason::BadVxlanHeader,
    ];

    /// Whether storm control dropped the frame (over a flood rate of its port).
    pub const fn is_storm(self) -> bool {
        matches!(
            self,
            DropReason::StormBroadcast
                | DropReason::StormMulticast
                | DropReason::StormUnknownUnicast
        )
    }

    /// Stable snake_case name, used as a counter label.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::UnknownIngress => "unknown_ingress",
            DropReason::IngressDisabled => "ingress_disabled",
            DropReason::SameSegment => "same_segment",
            DropReason::EgressDisabled => "egress_disabled",
            DropReason::NoEgress => "no_egress",
            DropReason::Oversize => "oversize",
            DropReason::NeedsOffload => "needs_offload",
            DropReason::BadVnetHeader => "bad_vnet_header",
            DropReason::TooManySegments => "too_many_segments",
            DropReason::TxQueueFull => "tx_queue_full",
            DropReason::TxRejected => "tx_rejected",
            DropReason::TxError => "tx_error",
            DropReason::LinkDown => "link_down",
            DropReason::VlanNotAllowed => "vlan_not_allowed",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::MacLimit => "mac_limit",
            DropReason::Isolated => "isolated",
            DropReason::StormBroadcast => "storm_broadcast",
            DropReason::StormMulticast => "storm_multicast",
            DropReason::StormUnknownUnicast => "storm_unknown_unicast",
            DropReason::UnknownVni => "unknown_vni",
            DropReason::BadVxlanHeader => "bad_vxlan_header",
        }
    }

    /// Position in [`Self::ALL`] and in counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Why a frame whose vnet header `error` refused is dropped: a super-frame
    /// cut too fine is `too_many_segments`, any other refusal `bad_vnet_header`.
    pub const fn of_vnet_error(error: &VnetError) -> Self {
        match error {
            VnetError::GsoSizeTooSmall { .. } | VnetError::TooManySegments { .. } => {
                DropReason::TooManySegments
            }
            _ => DropReason::BadVnetHeader,
        }
    }
}

/// What to do with a frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Send it to the ports written into the egress list.
    Forward,
    /// Drop it; the egress list is empty.
    Drop(DropReason),
}

/// How the frame's 802.1Q tag must change on the way out of one port.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagAction {
    /// Send the frame exactly as received.
    AsIs,
    /// Insert an 802.1Q tag (PCP 0) with this VID after the source address.
    Push(VlanId),
    /// Remove the outer 802.1Q tag.
    Pop,
    /// Replace the VID of the outer 802.1Q tag (a priority tag), keeping PCP and DEI.
    SetVid(VlanId),
}

impl TagAction {
    /// Bytes the frame grows (+4) or shrinks (−4) by.
    pub const fn len_change(self) -> isize {
        match self {
            TagAction::AsIs | TagAction::SetVid(_) => 0,
            TagAction::Push(_) => 4,
            TagAction::Pop => -4,
        }
    }
}

/// One port a frame goes to, and how.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Egress {
    pub port: PortId,
    pub tag: TagAction,
}

/// MAC flap detection: `moves` moves of one address within `window` is a flap; the
/// address is then held on the port it was on for `hold`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MacFlapConfig {
    pub moves: u32,
    pub window: Duration,
    pub hold: Duration,
}

/// Something the operator should hear about.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ForwardEvent {
    /// A new source would have exceeded `port`'s MAC limit. For `drop+log`, at most one
    /// per port per second; `suppressed` counts the violations not reported since.
    MacLimitExceeded {
        port: PortId,
        vlan: VlanId,
        mac: MacAddr,
        limit: u32,
        action: ViolationAction,
        suppressed: u64,
    },
    /// `mac` moved too often; it stays on `held_on` and is not learned on `moved_to`.
    MacFlap {
        vlan: VlanId,
        mac: MacAddr,
        held_on: PortId,
        moved_to: PortId,
        /// Flaps of this address so far.
        flaps: u64,
    },
}

/// Flap history of one address, for [`Forwarder::mac_flaps`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MacFlapEntry {
    pub vlan: VlanId,
    pub mac: MacAddr,
    pub flaps: u64,
    /// The port the address is held on, while the hold lasts.
    pub held_on: Option<PortId>,
}

/// Errors from configuring ports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// Port ids are slots in a vector and must stay small.
    #[error("port id {port} is out of range: at most {MAX_PORTS} ports are supported")]
    PortOutOfRange { port: PortId },
    /// `add_port` on an id already in use.
    #[error("port {port} already exists")]
    PortExists { port: PortId },
    /// An operation named a port that was never added, or was removed.
    #[error("port {port} does not exist")]
    UnknownPort { port: PortId },
    /// The policy offered for a port is inconsistent; nothing was changed.
    #[error("port {port}: {source}")]
    InvalidPolicy {
        port: PortId,
        #[source]
        source: PolicyError,
    },
}

/// The storm-control buckets of one port.
#[derive(Clone, Debug, Default)]
struct StormBuckets {
    broadcast: Option<TokenBucket>,
    multicast: Option<TokenBucket>,
    unknown_unicast: Option<TokenBucket>,
}

impl StormBuckets {
    fn new(storm: &StormControl) -> Self {
        StormBuckets {
            broadcast: storm.broadcast_pps.map(TokenBucket::new),
            multicast: storm.multicast_pps.map(TokenBucket::new),
            unknown_unicast: storm.unknown_unicast_pps.map(TokenBucket::new),
        }
    }
}

/// A port's policy and the state its policy needs.
#[derive(Clone, Debug)]
struct PortState {
    policy: PortPolicy,
    storm: StormBuckets,
    /// When the next limit violation may be reported, and how many were not.
    next_violation_report: Option<Instant>,
    unreported_violations: u64,
}

impl PortState {
    fn new(policy: PortPolicy) -> Self {
        PortState {
            storm: StormBuckets::new(&policy.storm),
            policy,
            next_violation_report: None,
            unreported_violations: 0,
        }
    }
}

/// What a destination address makes of a frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Destination {
    Known(PortId),
    UnknownUnicast,
    Multicast,
    Broadcast,
}

impl Destination {
    fn kind(self) -> DestinationKind {
        match self {
            Destination::Known(_) => DestinationKind::KnownUnicast,
            Destination::UnknownUnicast => DestinationKind::UnknownUnicast,
            Destination::Multicast => DestinationKind::Multicast,
            Destination::Broadcast => DestinationKind::Broadcast,
        }
    }
}

#[derive(Copy, Clone, Debug)]
struct FlapRecord {
    window_start: Instant,
    moves: u32,
    flaps: u64,
    held: Option<(PortId, Instant)>,
}

/// The switching logic: ports, their policies and the MAC table. `Clone` is for tests
/// (a trace is compared with a decision on a copy); the dataplane never copies it.
#[derive(Clone, Debug)]
pub struct Forwarder {
    fdb: Fdb,
    ports: Vec<Option<PortState>>,
    mac_flap: Option<MacFlapConfig>,
    flaps: HashMap<(VlanId, MacAddr), FlapRecord, RandomState>,
    /// No sweep of `flaps` before this (a full table is swept at most once a second).
    next_flap_sweep: Option<Instant>,
    events: VecDeque<ForwardEvent>,
    events_lost: u64,
    /// Counts changes to ports, policies and flap settings (the table counts its own):
    /// see [`Forwarder::version`].
    version: u64,
}

impl Forwarder {
    /// A forwarder with no ports and an empty table.
    pub fn new(config: FdbConfig) -> Forwarder {
        Forwarder {
            fdb: Fdb::new(config),
            ports: Vec::new(),
            mac_flap: None,
            flaps: HashMap::with_capacity_and_hasher(FLAP_TABLE_LEN, RandomState::default()),
            next_flap_sweep: None,
            events: VecDeque::with_capacity(EVENT_QUEUE_LEN),
            events_lost: 0,
            version: 0,
        }
    }

    /// Adds port `id` with `policy`, after validating it.
    pub fn add_port(&mut self, id: PortId, policy: PortPolicy) -> Result<(), ForwardError> {
        self.version += 1;
        if id.index() >= MAX_PORTS {
            return Err(ForwardError::PortOutOfRange { port: id });
        }
        policy
            .validate()
            .map_err(|source| ForwardError::InvalidPolicy { port: id, source })?;
        if self.ports.len() <= id.index() {
            self.ports.resize_with(id.index() + 1, || None);
        }
        let slot = &mut self.ports[id.index()];
        if slot.is_some() {
            return Err(ForwardError::PortExists { port: id });
        }
        *slot = Some(PortState::new(policy));
        Ok(())
    }

    /// Removes port `id` and every FDB entry pointing at it; returns its policy.
    pub fn remove_port(&mut self, id: PortId) -> Result<PortPolicy, ForwardError> {
        self.version += 1;
        let state = self
            .ports
            .get_mut(id.index())
            .and_then(Option::take)
            .ok_or(ForwardError::UnknownPort { port: id })?;
        self.fdb.flush_port(id);
        Ok(state.policy)
    }

    /// Replaces the policy of port `id` in one step, after validating the whole new
    /// policy: an invalid one changes nothing. Storm buckets start full again.
    ///
    /// The port's learned (dynamic) entries are forgotten when the port is disabled (as a
    /// Linux bridge does, so its stations are flooded to until heard again), when its VLAN
    /// mode changes, and when a lowered MAC limit is below what it holds.
    pub fn set_policy(&mut self, id: PortId, policy: PortPolicy) -> Result<(), ForwardError> {
        self.version += 1;
        policy
            .validate()
            .map_err(|source| ForwardError::InvalidPolicy { port: id, source })?;
        let state = self
            .ports
            .get_mut(id.index())
            .and_then(Option::as_mut)
            .ok_or(ForwardError::UnknownPort { port: id })?;
        let old = &state.policy;
        let over_limit = policy
            .security
            .mac_limit
            .is_some_and(|limit| self.fdb.port_count(id) > limit as usize);
        let flush = (old.enabled && !policy.enabled) || old.vlan != policy.vlan || over_limit;
        *state = PortState::new(policy);
        if flush {
            self.fdb.flush_port_dynamic(id);
        }
        Ok(())
    }

    /// The policy of port `id`, if it exists.
    pub fn port(&self, id: PortId) -> Option<&PortPolicy> {
        self.state(id).map(|state| &state.policy)
    }

    /// Ids of the existing ports, ascending.
    pub fn port_ids(&self) -> impl Iterator<Item = PortId> + '_ {
        self.ports
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.is_some())
            .map(|(index, _)| PortId(index as u32))
    }

    /// Turns MAC flap detection on (`Some`) or off.
    pub fn set_mac_flap(&mut self, config: Option<MacFlapConfig>) {
        self.version += 1;
        self.mac_flap = config;
        if config.is_none() {
            self.flaps.clear();
        }
    }

    /// Addresses that flapped at least once, sorted by (VLAN, MAC); bounded by the size of
    /// the flap table.
    pub fn mac_flaps(&self, now: Instant) -> Vec<MacFlapEntry> {
        let mut rows: Vec<MacFlapEntry> = self
            .flaps
            .iter()
            .filter(|(_, record)| record.flaps > 0)
            .map(|(&(vlan, mac), record)| MacFlapEntry {
                vlan,
                mac,
                flaps: record.flaps,
                held_on: record
                    .held
                    .filter(|&(_, until)| now < until)
                    .map(|(port, _)| port),
            })
            .collect();
        rows.sort_unstable_by_key(|row| (row.vlan, row.mac));
        rows
    }

    /// True when events wait in the queue.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Takes the queued events, oldest first.
    pub fn drain_events(&mut self) -> impl Iterator<Item = ForwardEvent> + '_ {
        self.events.drain(..)
    }

    /// Events dropped because the queue was full when they happened.
    pub fn events_lost(&self) -> u64 {
        self.events_lost
    }

    /// Changes nothing but counts every change that can alter a decision other than
    /// by time passing or by storm, flap and limit state: ports added, removed or given
    /// a new policy, flap settings, and the table's entries added, moved, pinned or
    /// removed ([`Fdb::version`]). A decision for a known destination whose source was
    /// only refreshed is the same while it is unchanged and no entry it read has aged
    /// out: what [`crate::shared`] caches.
    pub fn version(&self) -> u64 {
        self.version.wrapping_add(self.fdb.version())
    }

    /// The MAC table.
    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// The MAC table, for static entries, flushes and periodic expiry.
    pub fn fdb_mut(&mut self) -> &mut Fdb {
        &mut self.fdb
    }

    /// Decides where `frame`, received on `ingress` at `now`, goes.
    ///
    /// `egress` is cleared and filled with the egress ports in ascending order, each with
    /// its tag action; the caller reuses it across frames so that deciding allocates
    /// nothing. Also returns what learning the source address did ([`Learned::Ignored`]
    /// when the frame was dropped before learning), so the caller can count and log
    /// station moves.
    pub fn decide(
        &mut self,
        ingress: PortId,
        frame: &[u8],
        now: Instant,
        egress: &mut Vec<Egress>,
    ) -> (Verdict, Learned) {
        self.run(ingress, frame, now, egress, &mut Apply)
    }

    /// [`Forwarder::decide`], also giving the VLAN the frame was switched in when its
    /// destination was a known unicast address (`None` for floods and early drops).
    pub(crate) fn decide_noting(
        &mut self,
        ingress: PortId,
        frame: &[u8],
        now: Instant,
        egress: &mut Vec<Egress>,
    ) -> (Verdict, Learned, Option<VlanId>) {
        let mut noting = ApplyNoting { known_on: None };
        let (verdict, learned) = self.run(ingress, frame, now, egress, &mut noting);
        (verdict, learned, noting.known_on)
    }

    /// What [`Forwarder::decide`] would do with `frame` on `ingress` at `now`, step by
    /// step, without doing it: nothing is learned, no storm token is taken, no flap or
    /// limit violation is counted, no event is queued. It runs the code `decide` runs
    /// (which takes `&mut self`, hence the `&mut`); the verdict is `decide`'s on the
    /// same state (property-tested).
    pub fn trace(&mut self, ingress: PortId, frame: &[u8], now: Instant) -> Trace {
        let mut recorder = Recorder { steps: Vec::new() };
        let mut egress = Vec::new();
        let (verdict, learned) = self.run(ingress, frame, now, &mut egress, &mut recorder);
        Trace {
            steps: recorder.steps,
            verdict,
            egress,
            learned,
        }
    }

    /// The decision, for [`Forwarder::decide`] (`O` = [`Apply`]: changes state, tells
    /// nothing, compiled to what it was before traces existed) and
    /// [`Forwarder::trace`] (`O` = [`Recorder`]: changes nothing, tells every step).
    #[inline(always)]
    fn run<O: Observer>(
        &mut self,
        ingress: PortId,
        frame: &[u8],
        now: Instant,
        egress: &mut Vec<Egress>,
        observer: &mut O,
    ) -> (Verdict, Learned) {
        egress.clear();
        let Ok(frame) = EthernetFrame::new_checked(frame) else {
            return (Verdict::Drop(DropReason::Runt), Learned::Ignored);
        };
        observer.step(|| TraceStep::Frame {
            src: frame.src_addr(),
            dst: frame.dst_addr(),
            tag: frame.vlan().map(TraceTag::from),
            ethertype: frame.inner_ethertype(),
        });
        let Some(in_state) = self.state(ingress) else {
            return (Verdict::Drop(DropReason::UnknownIngress), Learned::Ignored);
        };
        let in_policy = &in_state.policy;
        if !in_policy.enabled {
            return (Verdict::Drop(DropReason::IngressDisabled), Learned::Ignored);
        }
        let outer_tag = frame.vlan();
        let classified = in_policy.vlan.classify(outer_tag);
        observer.step(|| TraceStep::Vlan {
            mode: in_policy.vlan.to_string(),
            vlan: classified,
        });
        let Some(vlan) = classified else {
            return (Verdict::Drop(DropReason::VlanNotAllowed), Learned::Ignored);
        };
        // The 802.1Q tag the frame carries, if any: what a tag action removes or rewrites.
        let dot1q_vid = outer_tag
            .filter(|tag| tag.tpid == ETHERTYPE_VLAN)
            .map(|tag| tag.vid);
        // Another tag behind the 802.1Q one: removing the outer tag would make it the
        // outermost, and the frame would enter the inner tag's VLAN on the next trunk
        // (the double-tagging VLAN hop, e.g. a priority tag over a tag of another VLAN).
        let pop_exposes_tag = dot1q_vid.is_some() && is_vlan_tpid(frame.inner_ethertype());
        let source = frame.src_addr();
        let allowed = &in_policy.security.allowed_macs;
        let spoofed = !allowed.is_empty() && !allowed.contains(&source);
        observer.step(|| TraceStep::Security {
            allowed_macs: allowed.len(),
            spoofed,
        });
        if spoofed {
            return (Verdict::Drop(DropReason::SpoofedSource), Learned::Ignored);
        }
        let in_isolated = in_policy.isolated;
        let in_split_horizon = in_policy.split_horizon;

        // Storm control before learning: a frame over its port's flood rate teaches
        // the switch nothing, so a MAC flood churns the table (and raises events) at
        // most at that rate, and its frames cost no more than a lookup.
        let destination_mac = frame.dst_addr();
        let destination = self.classify(vlan, destination_mac, now);
        observer.step(|| TraceStep::Destination {
            kind: destination.kind(),
            entry: self.fdb.entry(vlan, destination_mac, now),
        });
        if let Some(reason) = self.storm_check(ingress, destination, now, observer) {
            return (Verdict::Drop(reason), Learned::Ignored);
        }

        let LearnPreview {
            learned,
            evicts: would_evict,
        } = match self.learn_source(ingress, vlan, source, now, observer) {
            Ok(learning) => learning,
            Err(reason) => return (Verdict::Drop(reason), Learned::Ignored),
        };

        // Learning can change the answer: the frame is addressed to its own source, or
        // making room for the source evicted the destination. A flood it turned into
        // is policed like any other.
        let after = if O::APPLY {
            self.classify(vlan, destination_mac, now)
        } else {
            // A trace learned nothing, so the table cannot say: what it would answer.
            match destination {
                Destination::Known(_) | Destination::UnknownUnicast
                    if destination_mac == source
                        && matches!(
                            learned,
                            Learned::New | Learned::Moved { .. } | Learned::Evicted { .. }
                        ) =>
                {
                    Destination::Known(ingress)
                }
                Destination::Known(_) if would_evict == Some((vlan, destination_mac)) => {
                    Destination::UnknownUnicast
                }
                unchanged => unchanged,
            }
        };
        let destination = if after == destination {
            destination
        } else {
            observer.step(|| TraceStep::DestinationAfterLearning {
                kind: after.kind(),
                port: match after {
                    Destination::Known(port) => Some(port),
                    _ => None,
                },
            });
            if let Some(reason) = self.storm_check(ingress, after, now, observer) {
                return (Verdict::Drop(reason), learned);
            }
            after
        };

        observer.destination(vlan, destination);
        let verdict = match destination {
            Destination::Known(port) if port == ingress => {
                observer.step(|| TraceStep::Port {
                    port,
                    result: PortResult::Excluded(Exclusion::Ingress),
                });
                Verdict::Drop(DropReason::SameSegment)
            }
            Destination::Known(port) => match self.state(port) {
                // Only a static entry can point at a disabled or removed port: disabling
                // and removing flush the dynamic ones.
                Some(out) if out.policy.enabled => {
                    if in_isolated && out.policy.isolated {
                        observer.step(|| TraceStep::Port {
                            port,
                            result: PortResult::Excluded(Exclusion::Isolated),
                        });
                        Verdict::Drop(DropReason::Isolated)
                    } else {
                        match out.policy.vlan.egress(vlan) {
                            Some(tagging) => {
                                let tag = tag_action(dot1q_vid, tagging, vlan);
                                observer.step(|| TraceStep::Port {
                                    port,
                                    result: PortResult::Egress(tag),
                                });
                                egress.push(Egress { port, tag });
                                Verdict::Forward
                            }
                            None => {
                                observer.step(|| TraceStep::Port {
                                    port,
                                    result: PortResult::Excluded(Exclusion::VlanNotCarried),
                                });
                                Verdict::Drop(DropReason::VlanNotAllowed)
                            }
                        }
                    }
                }
                _ => {
                    observer.step(|| TraceStep::Port {
                        port,
                        result: PortResult::Excluded(Exclusion::Disabled),
                    });
                    Verdict::Drop(DropReason::EgressDisabled)
                }
            },
            flood => {
                for (index, slot) in self.ports.iter().enumerate() {
                    let Some(out) = slot else { continue };
                    let out = &out.policy;
                    let floods = match flood {
                        Destination::Broadcast => out.flood.broadcast,
                        Destination::Multicast => out.flood.multicast,
                        _ => out.flood.unknown_unicast,
                    };
                    let port = PortId(index as u32);
                    let excluded = if index == ingress.index() {
                        Some(Exclusion::Ingress)
                    } else if !out.enabled {
                        Some(Exclusion::Disabled)
                    } else if !floods {
                        Some(Exclusion::FloodOff)
                    } else if in_isolated && out.isolated {
                        Some(Exclusion::Isolated)
                    } else if in_split_horizon && out.split_horizon {
                        Some(Exclusion::SplitHorizon)
                    } else {
                        None
                    };
                    if let Some(exclusion) = excluded {
                        observer.step(|| TraceStep::Port {
                            port,
                            result: PortResult::Excluded(exclusion),
                        });
                        continue;
                    }
                    match out.vlan.egress(vlan) {
                        Some(tagging) => {
                            let tag = tag_action(dot1q_vid, tagging, vlan);
                            observer.step(|| TraceStep::Port {
                                port,
                                result: PortResult::Egress(tag),
                            });
                            egress.push(Egress { port, tag });
                        }
                        None => observer.step(|| TraceStep::Port {
                            port,
                            result: PortResult::Excluded(Exclusion::VlanNotCarried),
                        }),
                    }
                }
                if egress.is_empty() {
                    Verdict::Drop(DropReason::NoEgress)
                } else {
                    Verdict::Forward
                }
            }
        };
        if pop_exposes_tag && verdict == Verdict::Forward {
            // Where the frame leaves untagged it cannot go: it would not be untagged.
            observer.step(|| TraceStep::InnerTagExposed {
                removed: egress
                    .iter()
                    .filter(|out| out.tag == TagAction::Pop)
                    .map(|out| out.port)
                    .collect(),
            });
            egress.retain(|out| out.tag != TagAction::Pop);
            if egress.is_empty() {
                return (Verdict::Drop(DropReason::VlanNotAllowed), learned);
            }
        }
        (verdict, learned)
    }

    /// What `destination` on `vlan` makes of a frame now.
    fn classify(&self, vlan: VlanId, destination: MacAddr, now: Instant) -> Destination {
        if destination.is_broadcast() {
            Destination::Broadcast
        } else if destination.is_multicast() {
            Destination::Multicast
        } else {
            match self.fdb.lookup(vlan, destination, now) {
                Some(port) => Destination::Known(port),
                None => Destination::UnknownUnicast,
            }
        }
    }

    fn state(&self, id: PortId) -> Option<&PortState> {
        self.ports.get(id.index()).and_then(Option::as_ref)
    }

    /// Learns `source` on `ingress` as the port's security policy and flap damping allow
    /// (or, for a trace, says what learning would do); `Err` when the frame must be
    /// dropped.
    #[inline(always)]
    fn learn_source<O: Observer>(
        &mut self,
        ingress: PortId,
        vlan: VlanId,
        source: MacAddr,
        now: Instant,
        observer: &mut O,
    ) -> Result<LearnPreview, DropReason> {
        let outcome = |learned| LearnPreview {
            learned,
            evicts: None,
        };
        if source.is_multicast() || source.is_zero() {
            observer.step(|| TraceStep::Learn {
                learned: Learned::Ignored,
                evicts: None,
            });
            return Ok(outcome(Learned::Ignored));
        }
        let Some(Some(state)) = self.ports.get_mut(ingress.index()) else {
            return Ok(outcome(Learned::Ignored));
        };
        let security = &state.policy.security;
        if let Some(limit) = security.mac_limit
            && self.fdb.entry_port(vlan, source) != Some(ingress)
        {
            let count = self.fdb.port_count(ingress);
            let exceeded = count >= limit as usize;
            let action = security.violation;
            observer.step(|| TraceStep::MacLimit {
                limit,
                count,
                exceeded,
                action,
            });
            if exceeded {
                if O::APPLY {
                    self.violation(ingress, vlan, source, limit, action, now);
                }
                return Err(DropReason::MacLimit);
            }
        }
        let sticky = security.sticky;
        if let Some(held_on) = self.flap_check::<O>(ingress, vlan, source, now) {
            let learned = Learned::Held { on: held_on };
            observer.step(|| TraceStep::Learn {
                learned,
                evicts: None,
            });
            return Ok(outcome(learned));
        }
        if O::APPLY {
            Ok(outcome(if sticky {
                self.fdb.learn_sticky(vlan, source, ingress, now)
            } else {
                self.fdb.learn(vlan, source, ingress, now)
            }))
        } else {
            let preview = self.fdb.preview_learn(vlan, source, ingress, now, sticky);
            observer.step(|| TraceStep::Learn {
                learned: preview.learned,
                evicts: preview.evicts,
            });
            Ok(preview)
        }
    }

    /// Reports (as the action says) and acts on a MAC limit violation.
    fn violation(
        &mut self,
        port: PortId,
        vlan: VlanId,
        mac: MacAddr,
        limit: u32,
        action: ViolationAction,
        now: Instant,
    ) {
        let Some(Some(state)) = self.ports.get_mut(port.index()) else {
            return;
        };
        let report = match action {
            ViolationAction::Drop => false,
            ViolationAction::Shutdown => true,
            ViolationAction::DropLog => {
                let due = state.next_violation_report.is_none_or(|next| now >= next);
                if due {
                    state.next_violation_report = Some(now + VIOLATION_LOG_INTERVAL);
                } else {
                    state.unreported_violations += 1;
                }
                due
            }
        };
        let suppressed = if report {
            std::mem::take(&mut state.unreported_violations)
        } else {
            0
        };
        if action == ViolationAction::Shutdown {
            self.version += 1;
            state.policy.enabled = false;
            self.fdb.flush_port_dynamic(port);
        }
        if report {
            self.push_event(ForwardEvent::MacLimitExceeded {
                port,
                vlan,
                mac,
                limit,
                action,
                suppressed,
            });
        }
    }

    /// With flap detection on: when learning `source` on `ingress` would move it, counts
    /// the move and returns the port it is held on if it must not move. For a trace
    /// (`O::APPLY` false) it counts on a copy of the address's record.
    fn flap_check<O: Observer>(
        &mut self,
        ingress: PortId,
        vlan: VlanId,
        source: MacAddr,
        now: Instant,
    ) -> Option<PortId> {
        let config = self.mac_flap?;
        let holder = self.fdb.lookup(vlan, source, now)?;
        if holder == ingress {
            return None;
        }
        let key = (vlan, source);
        if !self.flaps.contains_key(&key)
            && self.flaps.len() >= FLAP_TABLE_LEN
            && !self.sweep_flaps::<O>(now, config)
        {
            // Too many addresses moving at once to track them all: let this one move.
            return None;
        }
        let fresh = FlapRecord {
            window_start: now,
            moves: 0,
            flaps: 0,
            held: None,
        };
        let mut copy;
        let record = if O::APPLY {
            self.flaps.entry(key).or_insert(fresh)
        } else {
            copy = self.flaps.get(&key).copied().unwrap_or(fresh);
            &mut copy
        };
        if let Some((port, until)) = record.held
            && now < until
        {
            return Some(port);
        }
        if now.saturating_duration_since(record.window_start) >= config.window {
            record.window_start = now;
            record.moves = 0;
        }
        record.moves += 1;
        if record.moves < config.moves {
            return None;
        }
        record.flaps += 1;
        record.moves = 0;
        record.window_start = now;
        record.held = Some((holder, now + config.hold));
        let flaps = record.flaps;
        if O::APPLY {
            self.push_event(ForwardEvent::MacFlap {
                vlan,
                mac: source,
                held_on: holder,
                moved_to: ingress,
                flaps,
            });
        }
        Some(holder)
    }

    /// Forgets addresses that never flapped and are past their window, at most once a
    /// second: the records of flapping addresses are the per-MAC flap counters. True
    /// when the table then has room for another address; a trace only says whether it
    /// would.
    fn sweep_flaps<O: Observer>(&mut self, now: Instant, config: MacFlapConfig) -> bool {
        let due = self.next_flap_sweep.is_none_or(|next| now >= next);
        let keep = |record: &FlapRecord| {
            record.flaps > 0 || now.saturating_duration_since(record.window_start) < config.window
        };
        if !O::APPLY {
            return due
                && self.flaps.values().filter(|record| keep(record)).count() < FLAP_TABLE_LEN;
        }
        if due {
            self.next_flap_sweep = Some(now + Duration::from_secs(1));
            self.flaps.retain(|_, record| keep(record));
        }
        self.flaps.len() < FLAP_TABLE_LEN
    }

    /// Takes a token from the ingress port's bucket for this kind of flood; the drop
    /// reason when there is none. A trace takes it from a copy of the bucket.
    #[inline(always)]
    fn storm_check<O: Observer>(
        &mut self,
        ingress: PortId,
        destination: Destination,
        now: Instant,
        observer: &mut O,
    ) -> Option<DropReason> {
        let Some(Some(state)) = self.ports.get_mut(ingress.index()) else {
            return None;
        };
        let (bucket, reason) = match destination {
            Destination::Known(_) => return None,
            Destination::Broadcast => (&mut state.storm.broadcast, DropReason::StormBroadcast),
            Destination::Multicast => (&mut state.storm.multicast, DropReason::StormMulticast),
            Destination::UnknownUnicast => (
                &mut state.storm.unknown_unicast,
                DropReason::StormUnknownUnicast,
            ),
        };
        let Some(bucket) = bucket.as_mut() else {
            observer.step(|| TraceStep::Storm {
                flood: destination.kind(),
                limit: None,
            });
            return None;
        };
        let mut copy;
        let bucket = if O::APPLY {
            bucket
        } else {
            copy = bucket.clone();
            &mut copy
        };
        let passes = bucket.take(now);
        observer.step(|| TraceStep::Storm {
            flood: destination.kind(),
            limit: Some(StormLimit {
                rate_pps: bucket.rate(),
                passes,
                tokens_left: bucket.tokens(),
            }),
        });
        (!passes).then_some(reason)
    }

    fn push_event(&mut self, event: ForwardEvent) {
        if self.events.len() < EVENT_QUEUE_LEN {
            self.events.push_back(event);
        } else {
            self.events_lost += 1;
        }
    }
}

// ---- Tracing a decision ----

/// Told of each step of a decision; says whether the decision changes state. The
/// dataplane's [`Apply`] tells nothing and changes state; a trace's [`Recorder`] keeps
/// the steps and changes nothing.
trait Observer {
    /// True: learn, take storm tokens, count flaps and violations, queue events.
    const APPLY: bool;

    /// One step; `step` is called only by observers that keep it, so the dataplane
    /// never builds one.
    fn step(&mut self, step: impl FnOnce() -> TraceStep);

    /// The VLAN and destination the frame was decided for (after learning).
    #[inline(always)]
    fn destination(&mut self, _vlan: VlanId, _destination: Destination) {}
}

/// [`Apply`] that also keeps the VLAN when the destination was a known one: what
/// [`crate::shared`] needs to cache a decision.
struct ApplyNoting {
    known_on: Option<VlanId>,
}

impl Observer for ApplyNoting {
    const APPLY: bool = true;

    #[inline(always)]
    fn step(&mut self, _: impl FnOnce() -> TraceStep) {}

    #[inline(always)]
    fn destination(&mut self, vlan: VlanId, destination: Destination) {
        self.known_on = matches!(destination, Destination::Known(_)).then_some(vlan);
    }
}

/// What [`Forwarder::decide`] runs with.
struct Apply;

impl Observer for Apply {
    const APPLY: bool = true;

    #[inline(always)]
    fn step(&mut self, _: impl FnOnce() -> TraceStep) {}
}

/// What [`Forwarder::trace`] runs with.
struct Recorder {
    steps: Vec<TraceStep>,
}

impl Observer for Recorder {
    const APPLY: bool = false;

    fn step(&mut self, step: impl FnOnce() -> TraceStep) {
        self.steps.push(step());
    }
}

/// What [`Forwarder::trace`] found: the steps of the decision in order, and its outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Trace {
    pub steps: Vec<TraceStep>,
    /// What [`Forwarder::decide`] would return now.
    pub verdict: Verdict,
    /// The egress ports it would write, ascending, each with its tag action.
    pub egress: Vec<Egress>,
    /// What learning the source would do ([`Learned::Ignored`] when the frame is dropped
    /// before learning).
    pub learned: Learned,
}

/// An outer VLAN tag as the trace shows it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TraceTag {
    pub tpid: u16,
    pub pcp: u8,
    pub vid: u16,
}

impl From<VlanTag> for TraceTag {
    fn from(tag: VlanTag) -> Self {
        TraceTag {
            tpid: tag.tpid,
            pcp: tag.pcp,
            vid: tag.vid,
        }
    }
}

/// What the destination address makes of a frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationKind {
    /// Learned (or static) on a port: sent there only.
    KnownUnicast,
    /// Not in the table: flooded.
    UnknownUnicast,
    Multicast,
    Broadcast,
}

/// The ingress port's storm bucket for a flood, as the frame would find it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StormLimit {
    pub rate_pps: u32,
    /// Whether the frame gets a token.
    pub passes: bool,
    /// Tokens in the bucket after it.
    pub tokens_left: u32,
}

/// Why a port is not an egress port of the frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclusion {
    /// The frame came in there.
    Ingress,
    /// The port is disabled.
    Disabled,
    /// The port takes no floods of this kind (its `flood` switches).
    FloodOff,
    /// Both ports are isolated.
    Isolated,
    /// Both ports are tunnel ports (split horizon).
    SplitHorizon,
    /// The port does not carry the frame's VLAN.
    VlanNotCarried,
}

/// What one candidate egress port makes of the frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortResult {
    /// Sent there, with this tag action.
    Egress(TagAction),
    Excluded(Exclusion),
}

/// One step of a traced decision, in the order the forwarder takes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum TraceStep {
    /// The frame parsed: addresses, outer tag, the EtherType behind the tags.
    Frame {
        src: MacAddr,
        dst: MacAddr,
        tag: Option<TraceTag>,
        ethertype: u16,
    },
    /// The ingress port's VLAN mode put the frame into `vlan` (`None`: not carried).
    Vlan { mode: String, vlan: Option<VlanId> },
    /// Anti-spoofing: the number of addresses the port is bound to (0: any source).
    Security { allowed_macs: usize, spoofed: bool },
    /// The destination, and its table entry if it is live.
    Destination {
        kind: DestinationKind,
        entry: Option<FdbEntry>,
    },
    /// Storm control for a flood (`limit` `None`: unlimited).
    Storm {
        flood: DestinationKind,
        limit: Option<StormLimit>,
    },
    /// A new source address against the port's MAC limit.
    MacLimit {
        limit: u32,
        count: usize,
        exceeded: bool,
        action: ViolationAction,
    },
    /// What learning the source does, and the entry it evicts to make room.
    Learn {
        learned: Learned,
        evicts: Option<(VlanId, MacAddr)>,
    },
    /// Learning changed the destination (addressed to its own source, or its entry
    /// evicted).
    DestinationAfterLearning {
        kind: DestinationKind,
        port: Option<PortId>,
    },
    /// One candidate egress port: the unicast destination's, or each port of a flood.
    Port { port: PortId, result: PortResult },
    /// The frame carries a tag behind its 802.1Q tag: these ports, which would pop the
    /// outer one, are left out (the double-tagging VLAN hop).
    InnerTagExposed { removed: Vec<PortId> },
}

/// How to change a frame that carries an 802.1Q tag with `dot1q_vid` (or none) so that it
/// leaves as `tagging` says for `vlan`.
fn tag_action(dot1q_vid: Option<VlanId>, tagging: Tagging, vlan: VlanId) -> TagAction {
    match (tagging, dot1q_vid) {
        (Tagging::AsReceived, _) | (Tagging::Untagged, None) => TagAction::AsIs,
        (Tagging::Untagged, Some(_)) => TagAction::Pop,
        (Tagging::Tagged, None) => TagAction::Push(vlan),
        (Tagging::Tagged, Some(vid)) if vid == vlan => TagAction::AsIs,
        (Tagging::Tagged, Some(_)) => TagAction::SetVid(vlan),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MacAddr;
    use proptest::prelude::*;
    use std::time::Duration;

    const P0: PortId = PortId(0);
    const P1: PortId = PortId(1);
    const P2: PortId = PortId(2);
    const P3: PortId = PortId(3);

    fn host(n: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, n])
    }

    /// A minimal untagged IPv4 frame header plus two payload bytes.
    fn frame(src: MacAddr, dst: MacAddr) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(16);
        bytes.extend_from_slice(&dst.0);
        bytes.extend_from_slice(&src.0);
        bytes.extend_from_slice(&[0x08, 0x00, 0x45, 0x00]);
        bytes
    }

    fn egress_ports(egress: &[Egress]) -> Vec<PortId> {
        egress.iter().map(|out| out.port).collect()
    }

    fn forwarder(ports: &[PortId]) -> Forwarder {
        let mut forwarder = Forwarder::new(FdbConfig::default());
        for &port in ports {
            forwarder.add_port(port, PortPolicy::default()).unwrap();
        }
        forwarder
    }

    #[test]
    fn super_frames_cut_too_fine_have_their_own_drop_reason() {
        let too_many = VnetError::TooManySegments {
            gso: "UDP",
            segments: 129,
            gso_size: 10,
            max: 128,
        };
        let too_small = VnetError::GsoSizeTooSmall {
            gso: "TCPV4",
            gso_size: 1,
            min: 88,
        };
        let other = VnetError::ZeroGsoSize { gso: "TCPV4" };
        assert_eq!(
            [&too_many, &too_small, &other].map(DropReason::of_vnet_error),
            [
                DropReason::TooManySegments,
                DropReason::TooManySegments,
                DropReason::BadVnetHeader
            ]
        );
    }

    #[test]
    fn drop_reason_tables_agree() {
        for (position, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), position);
        }
        let names: std::collections::HashSet<_> =
            DropReason::ALL.iter().map(|reason| reason.name()).collect();
        assert_eq!(names.len(), DropReason::COUNT);
        assert_eq!(DropReason::SameSegment.name(), "same_segment");
        let storm: Vec<_> = DropReason::ALL.iter().filter(|r| r.is_storm()).collect();
        assert_eq!(
            storm,
            [
                &DropReason::StormBroadcast,
                &DropReason::StormMulticast,
                &DropReason::StormUnknownUnicast
            ]
        );
    }

    #[test]
    fn unknown_unicast_floods_then_reply_is_unicast() {
        let now = Instant::now();
        let mut forwarder = forwarder(&[P0, P1, P2, P3]);
        let mut egress = Vec::new();
        let (verdict, learned) = forwarder.decide(P1, &frame(host(1), host(2)), now, &mut egress);
        assert_eq!((verdict, learned), (Verdict::Forward, Learned::New));
        assert_eq!(egress_ports(&egress), vec![P0, P2, P3]);
        let (verdict, _) = forwarder.decide(P3, &frame(host(2), host(1)), now, &mut egress);
        assert_eq!(verdict, Verdict::Forward);
        assert_eq!(egress_ports(&egress), vec![P1]);
        forwarder.decide(P1, &frame(host(1), host(2)), now, &mut egress);
        assert_eq!(egress_ports(&egress), vec![P3]);
    }

    #[test]
    fn broadcast_and_multicast_always_flood() {
        let now = Instant::now();
        let mut forwarder = forwarder(&[P0, P1, P2]);
        let mut egress = Vec::new();
        for destination in [MacAddr::BROADCAST, MacAddr([0x01, 0x00, 0x5e, 0, 0, 0xfb])] {
            let (verdict, _) = forwarder.decide(P2, &frame(host(1), destination), now, &mut egress);
            assert_eq!(verdict, Verdict::Forward);
            assert_eq!(egress_ports(&egress), vec![P0, P1]);
        }
    }

    #[test]
    fn tagged_frames_are_switched_transparently() {
        let now = Instant::now();
        let mut forwarder = forwarder(&[P0, P1, P2]);
        let mut egress = Vec::new();
        forwarder.decide(P0, &frame(host(1), MacAddr::BROADCAST), now, &mut egress);
        let mut tagged = frame(host(2), host(1));
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x64]);
        let (verdict, learned) = forwarder.decide(P2, &tagged, now, &mut egress);
        assert_eq!((verdict, learned), (Verdict::Forward, Learned::New));
        assert_eq!(egress_ports(&egress), vec![P0]);
        assert_eq!(forwarder.fdb().lookup(0, host(2), now), Some(P2));
    }

    #[test]
    fn drops_with_reasons() {
        let now = Instant::now();
        let mut forwarder = forwarder(&[P0, P1]);
        let mut egress = vec![Egress {
            port: P3,
            tag: TagAction::AsIs,
        }];
        let short = &frame(host(1), host(2))[..13];
        assert_eq!(
            forwarder.decide(P0, short, now, &mut egress).0,
            Verdict::Drop(DropReason::Runt)
        );
        assert!(egress.is_empty(), "egress is cleared on every decision");
        let mut tagged_runt = frame(host(1), host(2));
        tagged_runt[12..14].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(
            forwarder.decide(P0, &tagged_runt[..16], now, &mut egress).0,
            Verdict::Drop(DropReason::Runt)
        );
        assert_eq!(
            forwarder.decide(P2, &frame(host(1), host(2)), now, &mut egress),
            (Verdict::Drop(DropReason::UnknownIngress), Learned::Ignored)
        );
        assert!(
            forwarder.fdb().is_empty(),
            "nothing learned from dropped frames"
        );

        // Both hosts on P0: their traffic stays on that segment.
        forwarder.decide(P0, &frame(host(1), host(2)), now, &mut egress);
        assert_eq!(
            forwarder
                .decide(P0, &frame(host(2), host(1)), now, &mut egress)
                .0,
            Verdict::Drop(DropReason::SameSegment)
        );
        assert!(egress.is_empty());

        forwarder
            .set_policy(
                P1,
                PortPolicy {
                    enabled: false,
                    ..PortPolicy::default()
                },
            )
            .unwrap();
        assert_eq!(
            forwarder.decide(P1, &frame(host(3), host(1)), now, &mut egress),
            (Verdict::Drop(DropReason::IngressDisabled), Learned::Ignored)
        );
        assert_eq!(
            forwarder
                .decide(P0, &frame(host(1), host(9)), now, &mut egress)
                .0,
            Verdict::Drop(DropReason::NoEgress)
        );
    }

    #[test]
    fn static_entry_on_disabled_port_drops() {
        let now = Instant::now();
        let mut forwarder = forwarder(&[P0, P1, P2]);
        forwarder.fdb_mut().add_static(0, host(5), P1).unwrap();
        forwarder
            .set_policy(
                P1,
                PortPolicy {
                    enabled: false,
                    ..PortPolicy::default()
                },
            )
            .unwrap();
        let mut egress = Vec::new();
        assert_eq!(
            forwarder
                .decide(P0, &frame(host(1), host(5)), now, &mut egress)
                .0,
            Verdict::Drop(DropReason::EgressDisabled)
        );
        assert!(egress.is_empty());
    }

    #[test]
    fn disabling_a_port_forgets_its_stations() {
        let now = Instant::now();
        let mut forwarder = forwarder(&[P0, P1, P2]);
        let mut egress = Vec::new();
        forwarder.decide(P1, &frame(host(1), MacAddr::BROADCAST), now, &mut egress);
        forwarder
            .set_policy(
                P1,
                PortPolicy {
                    enabled: false,
                    ..PortPolicy::default()
                },
            )
            .unwrap();
        assert_eq!(forwarder.fdb().lookup(0, host(1), now), None);
        forwarder.decide(P0, &frame(host(2), host(1)), now, &mut egress);
        assert_eq!(egress_ports(&egress), vec![P2]);
    }

    #[test]
    fn port_management() {
        let now = Instant::now();
        let mut forwarder = forwarder(&[P0, P2]);
        assert_eq!(
            forwarder.add_port(P0, PortPolicy::default()),
            Err(ForwardError::PortExists { port: P0 })
        );
        assert_eq!(
            forwarder.add_port(PortId(MAX_PORTS as u32), PortPolicy::default()),
            Err(ForwardError::PortOutOfRange {
                port: PortId(MAX_PORTS as u32)
            })
        );
        assert_eq!(
            forwarder
                .set_policy(P1, PortPolicy::default())
                .unwrap_err()
                .to_string(),
            "port 1 does not exist"
        );
        assert_eq!(forwarder.port_ids().collect::<Vec<_>>(), vec![P0, P2]);
        let mut egress = Vec::new();
        forwarder.decide(P2, &frame(host(1), MacAddr::BROADCAST), now, &mut egress);
        forwarder.fdb_mut().add_static(0, host(7), P2).unwrap();
        assert_eq!(forwarder.remove_port(P2), Ok(PortPolicy::default()));
        assert!(
            forwarder.fdb().is_empty(),
            "removing a port flushes its entries"
        );
        assert_eq!(
            forwarder.remove_port(P2),
            Err(ForwardError::UnknownPort { port: P2 })
        );
        assert_eq!(forwarder.port(P2), None);
        forwarder.add_port(P2, PortPolicy::default()).unwrap();
        assert!(forwarder.port(P2).is_some_and(|policy| policy.enabled));
    }

    #[test]
    fn moves_are_reported() {
        let now = Instant::now();
        let mut forwarder = forwarder(&[P0, P1]);
        let mut egress = Vec::new();
        forwarder.decide(P0, &frame(host(1), MacAddr::BROADCAST), now, &mut egress);
        let (_, learned) =
            forwarder.decide(P1, &frame(host(1), MacAddr::BROADCAST), now, &mut egress);
        assert_eq!(learned, Learned::Moved { from: P0 });
    }

    #[test]
    fn entries_age_out_and_destination_is_flooded_again() {
        let t0 = Instant::now();
        let mut forwarder = Forwarder::new(FdbConfig {
            ageing: Duration::from_secs(10),
            capacity: 16,
        });
        for port in [P0, P1, P2] {
            forwarder.add_port(port, PortPolicy::default()).unwrap();
        }
        let mut egress = Vec::new();
        forwarder.decide(P1, &frame(host(1), MacAddr::BROADCAST), t0, &mut egress);
        forwarder.decide(P0, &frame(host(2), host(1)), t0, &mut egress);
        assert_eq!(egress_ports(&egress), vec![P1]);
        let later = t0 + Duration::from_secs(10);
        forwarder.decide(P0, &frame(host(2), host(1)), later, &mut egress);
        assert_eq!(egress_ports(&egress), vec![P1, P2]);
    }

    #[derive(Clone, Debug)]
    enum Step {
        Frame {
            ingress: u32,
            src: u8,
            dst: u8,
            advance_ms: u64,
        },
        Disable {
            port: u32,
        },
        Enable {
            port: u32,
        },
        Remove {
            port: u32,
        },
        Add {
            port: u32,
        },
    }

    /// Small address pools so that sources and destinations collide; 0xff and 0x01
    /// stand for broadcast and a multicast group, 0 for the zero address.
    fn address(n: u8) -> MacAddr {
        match n {
            0 => MacAddr::ZERO,
            1 => MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]),
            0xff => MacAddr::BROADCAST,
            n => host(n),
        }
    }

    fn step() -> impl Strategy<Value = Step> {
        let addr = prop_oneof![8 => 2u8..16, 1 => Just(0u8), 1 => Just(1u8), 1 => Just(0xffu8)];
        prop_oneof![
            30 => (0..8u32, addr.clone(), addr, 0..2000u64).prop_map(
                |(ingress, src, dst, advance_ms)| Step::Frame { ingress, src, dst, advance_ms }
            ),
            1 => (0..8u32).prop_map(|port| Step::Disable { port }),
            1 => (0..8u32).prop_map(|port| Step::Enable { port }),
            1 => (0..8u32).prop_map(|port| Step::Remove { port }),
            1 => (0..8u32).prop_map(|port| Step::Add { port }),
        ]
    }

    proptest! {
        /// Whatever the traffic and port churn: the ingress port is never an egress port,
        /// egress holds only existing enabled ports, ascending and without repeats, and
        /// the table stays within its cap.
        #[test]
        fn egress_is_always_sane(
            initial_ports in proptest::collection::btree_set(0..8u32, 0..8),
            capacity in 0usize..10,
            steps in proptest::collection::vec(step(), 1..200),
        ) {
            let mut now = Instant::now();
            let mut forwarder = Forwarder::new(FdbConfig { ageing: Duration::from_secs(5), capacity });
            for &port in &initial_ports {
                forwarder.add_port(PortId(port), PortPolicy::default()).unwrap();
            }
            let mut egress = Vec::new();
            for step in steps {
                match step {
                    Step::Frame { ingress, src, dst, advance_ms } => {
                        now += Duration::from_millis(advance_ms);
                        let ingress = PortId(ingress);
                        let bytes = frame(address(src), address(dst));
                        let (verdict, _) = forwarder.decide(ingress, &bytes, now, &mut egress);
                        prop_assert!(!egress_ports(&egress).contains(&ingress));
                        prop_assert!(egress.windows(2).all(|pair| pair[0].port < pair[1].port));
                        for port in egress_ports(&egress) {
                            prop_assert!(forwarder.port(port).is_some_and(|p| p.enabled), "{port} in {egress:?}");
                        }
                        prop_assert_eq!(verdict == Verdict::Forward, !egress.is_empty());
                        let ingress_enabled = forwarder.port(ingress).is_some_and(|p| p.enabled);
                        if !ingress_enabled {
                            prop_assert!(matches!(verdict, Verdict::Drop(DropReason::UnknownIngress | DropReason::IngressDisabled)));
                        }
                    }
                    Step::Disable { port } => {
                        let _ = forwarder.set_policy(PortId(port), PortPolicy { enabled: false, ..PortPolicy::default() });
                    }
                    Step::Enable { port } => {
                        let _ = forwarder.set_policy(PortId(port), PortPolicy::default());
                    }
                    Step::Remove { port } => {
                        let _ = forwarder.remove_port(PortId(port));
                        prop_assert_eq!(forwarder.fdb().dynamic_count(PortId(port)), 0);
                    }
                    Step::Add { port } => {
                        let _ = forwarder.add_port(PortId(port), PortPolicy::default());
                    }
                }
                prop_assert!(forwarder.fdb().len() <= capacity);
            }
        }

        /// After A sends to x and x answers from another port, traffic to A goes to A's
        /// port only, whatever came before.
        #[test]
        fn reply_reaches_only_the_sender(
            ports in proptest::collection::btree_set(0..8u32, 2..8),
            history in proptest::collection::vec((0..8u32, 2u8..16, 2u8..16), 0..100),
            pick in (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
            a in 2u8..16,
            x in 2u8..16,
        ) {
            prop_assume!(a != x);
            let ports: Vec<PortId> = ports.into_iter().map(PortId).collect();
            let port_a = ports[pick.0.index(ports.len())];
            let port_x = ports[pick.1.index(ports.len())];
            prop_assume!(port_a != port_x);
            let now = Instant::now();
            let mut forwarder = forwarder(&ports);
            let mut egress = Vec::new();
            for (ingress, src, dst) in history {
                forwarder.decide(PortId(ingress), &frame(host(src), host(dst)), now, &mut egress);
            }
            forwarder.decide(port_a, &frame(host(a), host(x)), now, &mut egress);
            let (verdict, _) = forwarder.decide(port_x, &frame(host(x), host(a)), now, &mut egress);
            prop_assert_eq!(verdict, Verdict::Forward);
            prop_assert_eq!(egress_ports(&egress), vec![port_a]);
        }

        /// Flood sets are exactly the other enabled ports.
        #[test]
        fn floods_reach_every_other_enabled_port(
            ports in proptest::collection::btree_map(0..16u32, any::<bool>(), 1..16),
            ingress_pick in any::<prop::sample::Index>(),
        ) {
            let now = Instant::now();
            let mut forwarder = Forwarder::new(FdbConfig::default());
            for (&port, &enabled) in &ports {
                forwarder.add_port(PortId(port), PortPolicy { enabled, ..PortPolicy::default() }).unwrap();
            }
            let enabled: Vec<PortId> = ports.iter().filter(|(_, on)| **on).map(|(p, _)| PortId(*p)).collect();
            prop_assume!(!enabled.is_empty());
            let ingress = enabled[ingress_pick.index(enabled.len())];
            let mut egress = Vec::new();
            let (verdict, _) = forwarder.decide(ingress, &frame(host(1), MacAddr::BROADCAST), now, &mut egress);
            let expected: Vec<PortId> = enabled.iter().copied().filter(|&p| p != ingress).collect();
            prop_assert_eq!(egress_ports(&egress), expected.clone());
            let expected_verdict = if expected.is_empty() { Verdict::Drop(DropReason::NoEgress) } else { Verdict::Forward };
            prop_assert_eq!(verdict, expected_verdict);
        }
    }

    /// Through the forwarder: a port flooding random sources leaves a quieter
    /// neighbour's stations reachable.
    #[test]
    fn flooding_port_does_not_evict_neighbours() {
        let now = Instant::now();
        let mut forwarder = Forwarder::new(FdbConfig {
            ageing: Duration::from_secs(300),
            capacity: 64,
        });
        // P0's flood is about the table here: storm control (which would stop learning
        // from its frames past the cap) is off.
        let flooding = PortPolicy {
            storm: StormControl::UNLIMITED,
            ..PortPolicy::default()
        };
        forwarder.add_port(P0, flooding).unwrap();
        for port in [P1, P2] {
            forwarder.add_port(port, PortPolicy::default()).unwrap();
        }
        let mut egress = Vec::new();
        for n in 2..12 {
            forwarder.decide(P1, &frame(host(n), MacAddr::BROADCAST), now, &mut egress);
        }
        for n in 0..5000u32 {
            let [_, b, c, d] = n.to_be_bytes();
            let source = MacAddr([0x06, 0xee, 0, b, c, d]);
            forwarder.decide(P0, &frame(source, MacAddr::BROADCAST), now, &mut egress);
        }
        assert_eq!(forwarder.fdb().len(), 64);
        assert_eq!(forwarder.fdb().counters().evicted, 5000 - 54);
        for n in 2..12 {
            forwarder.decide(P2, &frame(host(100), host(n)), now, &mut egress);
            assert_eq!(egress_ports(&egress), vec![P1], "station {n}");
        }
    }

    #[test]
    fn zero_source_is_forwarded_but_not_learned() {
        let now = Instant::now();
        let mut forwarder = forwarder(&[P0, P1]);
        let mut egress = Vec::new();
        let (verdict, learned) =
            forwarder.decide(P0, &frame(MacAddr::ZERO, host(2)), now, &mut egress);
        assert_eq!((verdict, learned), (Verdict::Forward, Learned::Ignored));
        assert!(forwarder.fdb().is_empty());
    }

    // ---- VLANs, port security, storm control, isolation, flood controls, flaps ----

    const P4: PortId = PortId(4);

    fn tagged(src: MacAddr, dst: MacAddr, tpid: u16, vid: VlanId) -> Vec<u8> {
        let mut bytes = frame(src, dst);
        let [t0, t1] = tpid.to_be_bytes();
        let [v0, v1] = vid.to_be_bytes();
        bytes.splice(12..12, [t0, t1, v0, v1]);
        bytes
    }

    fn access(vlan: VlanId) -> PortPolicy {
        PortPolicy {
            vlan: VlanMode::Access { vlan },
            ..PortPolicy::default()
        }
    }

    fn trunk(allowed: &[VlanId], native: Option<VlanId>) -> PortPolicy {
        PortPolicy {
            vlan: VlanMode::Trunk {
                allowed: allowed.iter().copied().collect(),
                native,
            },
            ..PortPolicy::default()
        }
    }

    fn with_policies(policies: &[(PortId, PortPolicy)]) -> Forwarder {
        let mut forwarder = Forwarder::new(FdbConfig::default());
        for (port, policy) in policies {
            forwarder.add_port(*port, policy.clone()).unwrap();
        }
        forwarder
    }

    fn out(port: PortId, tag: TagAction) -> Egress {
        Egress { port, tag }
    }

    #[test]
    fn access_and_trunk_ports_push_and_pop_tags() {
        let now = Instant::now();
        let mut forwarder = with_policies(&[
            (P0, access(10)),
            (P1, access(20)),
            (P2, trunk(&[10, 20], None)),
            (P3, PortPolicy::default()),
        ]);
        let mut egress = Vec::new();
        let verdict = forwarder.decide(P0, &frame(host(1), MacAddr::BROADCAST), now, &mut egress);
        assert_eq!(verdict.0, Verdict::Forward);
        assert_eq!(egress, vec![out(P2, TagAction::Push(10))]);
        let bytes = tagged(host(2), MacAddr::BROADCAST, ETHERTYPE_VLAN, 20);
        forwarder.decide(P2, &bytes, now, &mut egress);
        assert_eq!(egress, vec![out(P1, TagAction::Pop)]);
        // A reply tagged 10 to host 1 goes to P0 only, untagged.
        forwarder.decide(
            P2,
            &tagged(host(3), host(1), ETHERTYPE_VLAN, 10),
            now,
            &mut egress,
        );
        assert_eq!(egress, vec![out(P0, TagAction::Pop)]);
        // Learning is per VLAN: host 1 is unknown on VLAN 20.
        forwarder.decide(P1, &frame(host(4), host(1)), now, &mut egress);
        assert_eq!(egress, vec![out(P2, TagAction::Push(20))]);
        assert_eq!(forwarder.fdb().lookup(10, host(1), now), Some(P0));
        assert_eq!(forwarder.fdb().lookup(20, host(1), now), None);
        // Frames for VLANs a port does not carry are dropped at ingress.
        let drops = [
            (P2, frame(host(5), MacAddr::BROADCAST)),
            (P2, tagged(host(5), MacAddr::BROADCAST, ETHERTYPE_VLAN, 30)),
            (P0, tagged(host(5), MacAddr::BROADCAST, ETHERTYPE_VLAN, 10)),
        ];
        for (port, bytes) in drops {
            assert_eq!(
                forwarder.decide(port, &bytes, now, &mut egress),
                (Verdict::Drop(DropReason::VlanNotAllowed), Learned::Ignored)
            );
        }
        // Transparent ports form their own segment.
        assert_eq!(
            forwarder
                .decide(P3, &frame(host(6), MacAddr::BROADCAST), now, &mut egress)
                .0,
            Verdict::Drop(DropReason::NoEgress)
        );
    }

    #[test]
    fn native_vlan_priority_tags_and_service_tags() {
        let now = Instant::now();
        let mut forwarder = with_policies(&[
            (P0, access(10)),
            (P1, access(1)),
            (P2, trunk(&[10], Some(1))),
            (P3, trunk(&[10, 20], None)),
        ]);
        let mut egress = Vec::new();
        forwarder.decide(P2, &frame(host(1), MacAddr::BROADCAST), now, &mut egress);
        assert_eq!(egress, vec![out(P1, TagAction::AsIs)]);
        let native_tagged = tagged(host(1), MacAddr::BROADCAST, ETHERTYPE_VLAN, 1);
        forwarder.decide(P2, &native_tagged, now, &mut egress);
        assert_eq!(egress, vec![out(P1, TagAction::Pop)]);
        forwarder.decide(P1, &frame(host(2), MacAddr::BROADCAST), now, &mut egress);
        assert_eq!(egress, vec![out(P2, TagAction::AsIs)]);
        // A priority tag (VID 0) on an access port: VLAN 10, retagged for the trunks.
        let priority = tagged(host(3), MacAddr::BROADCAST, ETHERTYPE_VLAN, 0);
        forwarder.decide(P0, &priority, now, &mut egress);
        assert_eq!(
            egress,
            vec![
                out(P2, TagAction::SetVid(10)),
                out(P3, TagAction::SetVid(10))
            ]
        );
        // An 802.1ad tag with VID 10 is not VLAN 10: on P2 it is native (untagged) traffic.
        let service = tagged(host(4), MacAddr::BROADCAST, crate::wire::ETHERTYPE_QINQ, 10);
        forwarder.decide(P2, &service, now, &mut egress);
        assert_eq!(egress, vec![out(P1, TagAction::AsIs)]);
        assert_eq!(forwarder.fdb().lookup(1, host(4), now), Some(P2));
        assert_eq!(
            forwarder.decide(P3, &service, now, &mut egress).0,
            Verdict::Drop(DropReason::VlanNotAllowed),
            "no native VLAN on P3"
        );
        // A VLAN 10 tag over another tag goes only where it stays tagged: popping it (for
        // access port P0) would leave the inner tag outermost, and the frame would be in
        // that tag's VLAN on the next trunk (the double-tagging hop).
        let mut double = tagged(host(6), MacAddr::BROADCAST, ETHERTYPE_VLAN, 10);
        double.splice(16..16, [0x81, 0x00, 0x00, 20]);
        forwarder.decide(P2, &double, now, &mut egress);
        assert_eq!(egress, vec![out(P3, TagAction::AsIs)]);
        // A priority tag over a VLAN 20 tag on an access port of VLAN 1: only P2 carries
        // VLAN 1, untagged (native); so nowhere.
        let mut priority_double = tagged(host(7), MacAddr::BROADCAST, ETHERTYPE_VLAN, 0);
        priority_double.splice(16..16, [0x81, 0x00, 0x00, 20]);
        assert_eq!(
            forwarder.decide(P1, &priority_double, now, &mut egress).0,
            Verdict::Drop(DropReason::VlanNotAllowed)
        );
        assert!(egress.is_empty());
        // An 802.1Q-tagged frame between trunks keeps its tag.
        let vlan10 = tagged(host(5), MacAddr::BROADCAST, ETHERTYPE_VLAN, 10);
        forwarder.decide(P3, &vlan10, now, &mut egress);
        assert_eq!(
            egress,
            vec![out(P0, TagAction::Pop), out(P2, TagAction::AsIs)]
        );
    }

    #[test]
    fn spoofed_sources_are_dropped_and_not_learned() {
        let now = Instant::now();
        let mut bound = PortPolicy::default();
        bound.security.allowed_macs = Box::new([host(1)]);
        let mut forwarder = with_policies(&[(P0, bound), (P1, PortPolicy::default())]);
        let mut egress = Vec::new();
        assert_eq!(
            forwarder.decide(P0, &frame(host(2), MacAddr::BROADCAST), now, &mut egress),
            (Verdict::Drop(DropReason::SpoofedSource), Learned::Ignored)
        );
        assert!(forwarder.fdb().is_empty());
        assert_eq!(
            forwarder.decide(P0, &frame(host(1), MacAddr::BROADCAST), now, &mut egress),
            (Verdict::Forward, Learned::New)
        );
    }

    fn limited(limit: u32, violation: ViolationAction) -> PortPolicy {
        let mut policy = PortPolicy::default();
        policy.security.mac_limit = Some(limit);
        policy.security.violation = violation;
        policy
    }

    #[test]
    fn mac_limit_drops_new_sources_and_reports_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut forwarder = with_policies(&[
            (P0, limited(2, ViolationAction::DropLog)),
            (P1, PortPolicy::default()),
        ]);
        let mut egress = Vec::new();
        for n in 1..=2 {
            let verdict =
                forwarder.decide(P0, &frame(host(n), MacAddr::BROADCAST), t0, &mut egress);
            assert_eq!(verdict.0, Verdict::Forward);
        }
        for n in 3..=5 {
            assert_eq!(
                forwarder.decide(P0, &frame(host(n), MacAddr::BROADCAST), t0, &mut egress),
                (Verdict::Drop(DropReason::MacLimit), Learned::Ignored)
            );
        }
        // Known sources keep working.
        let verdict = forwarder.decide(P0, &frame(host(1), MacAddr::BROADCAST), t0, &mut egress);
        assert_eq!(verdict.0, Verdict::Forward);
        let events: Vec<_> = forwarder.drain_events().collect();
        assert_eq!(
            events,
            vec![ForwardEvent::MacLimitExceeded {
                port: P0,
                vlan: 0,
                mac: host(3),
                limit: 2,
                action: ViolationAction::DropLog,
                suppressed: 0
            }]
        );
        let t1 = t0 + Duration::from_secs(1);
        forwarder.decide(P0, &frame(host(6), MacAddr::BROADCAST), t1, &mut egress);
        assert!(matches!(
            forwarder.drain_events().collect::<Vec<_>>()[..],
            [ForwardEvent::MacLimitExceeded { suppressed: 2, .. }]
        ));
        assert_eq!(forwarder.fdb().port_count(P0), 2);
    }

    #[test]
    fn mac_limit_shutdown_disables_the_port() {
        let now = Instant::now();
        let mut forwarder = with_policies(&[
            (P0, limited(1, ViolationAction::Shutdown)),
            (P1, PortPolicy::default()),
        ]);
        let mut egress = Vec::new();
        forwarder.decide(P0, &frame(host(1), MacAddr::BROADCAST), now, &mut egress);
        assert_eq!(
            forwarder
                .decide(P0, &frame(host(2), MacAddr::BROADCAST), now, &mut egress)
                .0,
            Verdict::Drop(DropReason::MacLimit)
        );
        assert!(!forwarder.port(P0).unwrap().enabled);
        assert_eq!(
            forwarder.fdb().port_count(P0),
            0,
            "its stations are forgotten"
        );
        assert_eq!(forwarder.drain_events().count(), 1);
        assert_eq!(
            forwarder
                .decide(P0, &frame(host(1), MacAddr::BROADCAST), now, &mut egress)
                .0,
            Verdict::Drop(DropReason::IngressDisabled)
        );
        // Enabling it again (a control-plane action) restores forwarding.
        forwarder
            .set_policy(P0, limited(1, ViolationAction::Shutdown))
            .unwrap();
        assert_eq!(
            forwarder
                .decide(P0, &frame(host(1), MacAddr::BROADCAST), now, &mut egress)
                .0,
            Verdict::Forward
        );
    }

    #[test]
    fn sticky_ports_keep_their_stations() {
        let t0 = Instant::now();
        let mut sticky = limited(1, ViolationAction::Drop);
        sticky.security.sticky = true;
        let mut forwarder = Forwarder::new(FdbConfig {
            ageing: Duration::from_secs(10),
            capacity: 16,
        });
        forwarder.add_port(P0, sticky).unwrap();
        forwarder.add_port(P1, PortPolicy::default()).unwrap();
        let mut egress = Vec::new();
        forwarder.decide(P0, &frame(host(1), MacAddr::BROADCAST), t0, &mut egress);
        // The station cannot be taken over from another port, and never ages out.
        let later = t0 + Duration::from_secs(100);
        let (_, learned) =
            forwarder.decide(P1, &frame(host(1), MacAddr::BROADCAST), later, &mut egress);
        assert_eq!(learned, Learned::StaticHeld);
        assert_eq!(forwarder.fdb().lookup(0, host(1), later), Some(P0));
        assert_eq!(
            forwarder
                .decide(P0, &frame(host(2), MacAddr::BROADCAST), later, &mut egress)
                .0,
            Verdict::Drop(DropReason::MacLimit)
        );
    }

    #[test]
    fn flapping_macs_are_held_on_their_first_port() {
        let t0 = Instant::now();
        let mut forwarder = forwarder(&[P0, P1, P2]);
        forwarder.set_mac_flap(Some(MacFlapConfig {
            moves: 3,
            window: Duration::from_secs(1),
            hold: Duration::from_secs(10),
        }));
        let mut egress = Vec::new();
        let ms = Duration::from_millis;
        let bounce = frame(host(1), MacAddr::BROADCAST);
        forwarder.decide(P0, &bounce, t0, &mut egress);
        let mut outcomes = Vec::new();
        for (step, port) in [P1, P0, P1, P0].into_iter().enumerate() {
            let (verdict, learned) =
                forwarder.decide(port, &bounce, t0 + ms(step as u64 * 10), &mut egress);
            assert_eq!(verdict, Verdict::Forward, "held frames are still switched");
            outcomes.push(learned);
        }
        assert_eq!(
            outcomes,
            vec![
                Learned::Moved { from: P0 },
                Learned::Moved { from: P1 },
                Learned::Held { on: P0 },
                Learned::Refreshed
            ]
        );
        let events: Vec<_> = forwarder.drain_events().collect();
        assert_eq!(
            events,
            vec![ForwardEvent::MacFlap {
                vlan: 0,
                mac: host(1),
                held_on: P0,
                moved_to: P1,
                flaps: 1
            }]
        );
        assert_eq!(
            forwarder.mac_flaps(t0),
            vec![MacFlapEntry {
                vlan: 0,
                mac: host(1),
                flaps: 1,
                held_on: Some(P0)
            }]
        );
        // Traffic to the held MAC goes to its first port.
        forwarder.decide(P2, &frame(host(9), host(1)), t0 + ms(50), &mut egress);
        assert_eq!(egress_ports(&egress), vec![P0]);
        // After the hold, it may move again.
        let after = t0 + Duration::from_secs(11);
        let (_, learned) = forwarder.decide(P1, &bounce, after, &mut egress);
        assert_eq!(learned, Learned::Moved { from: P0 });
        assert_eq!(forwarder.mac_flaps(after)[0].held_on, None);
    }

    #[test]
    fn storm_control_caps_floods_but_not_known_unicast() {
        let t0 = Instant::now();
        let capped = PortPolicy {
            storm: StormControl {
                broadcast_pps: Some(10),
                multicast_pps: Some(5),
                unknown_unicast_pps: Some(3),
            },
            ..PortPolicy::default()
        };
        let mut forwarder = with_policies(&[(P0, capped), (P1, PortPolicy::default())]);
        let mut egress = Vec::new();
        forwarder.decide(P1, &frame(host(2), MacAddr::BROADCAST), t0, &mut egress);
        let count = |forwarder: &mut Forwarder, dst: MacAddr, egress: &mut Vec<Egress>| {
            (0..100)
                .filter(|_| {
                    forwarder.decide(P0, &frame(host(1), dst), t0, egress).0 == Verdict::Forward
                })
                .count()
        };
        assert_eq!(count(&mut forwarder, MacAddr::BROADCAST, &mut egress), 10);
        assert_eq!(
            count(
                &mut forwarder,
                MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
                &mut egress
            ),
            5
        );
        assert_eq!(count(&mut forwarder, host(7), &mut egress), 3);
        assert_eq!(count(&mut forwarder, host(2), &mut egress), 100);
        assert_eq!(
            forwarder
                .decide(P0, &frame(host(1), MacAddr::BROADCAST), t0, &mut egress)
                .0,
            Verdict::Drop(DropReason::StormBroadcast)
        );
        let later = t0 + Duration::from_millis(200);
        assert_eq!(
            forwarder
                .decide(P0, &frame(host(1), MacAddr::BROADCAST), later, &mut egress)
                .0,
            Verdict::Forward
        );
    }

    #[test]
    fn a_frame_over_the_storm_rate_is_not_learned() {
        let t0 = Instant::now();
        let capped = PortPolicy {
            storm: StormControl {
                unknown_unicast_pps: Some(3),
                ..StormControl::UNLIMITED
            },
            ..PortPolicy::default()
        };
        let mut forwarder = with_policies(&[(P0, capped), (P1, PortPolicy::default())]);
        let mut egress = Vec::new();
        let outcomes: Vec<(Verdict, Learned)> = (10..20)
            .map(|n| forwarder.decide(P0, &frame(host(n), host(99)), t0, &mut egress))
            .collect();
        assert_eq!(outcomes[..3], [(Verdict::Forward, Learned::New); 3]);
        assert_eq!(
            outcomes[3..],
            [(
                Verdict::Drop(DropReason::StormUnknownUnicast),
                Learned::Ignored
            ); 7]
        );
        assert_eq!(forwarder.fdb().port_count(P0), 3);
        // Known unicast from the same port is neither policed nor kept from learning.
        forwarder.decide(P1, &frame(host(2), host(10)), t0, &mut egress);
        let (verdict, learned) = forwarder.decide(P0, &frame(host(30), host(2)), t0, &mut egress);
        assert_eq!((verdict, learned), (Verdict::Forward, Learned::New));
    }

    #[test]
    fn ports_have_the_default_flood_caps() {
        let t0 = Instant::now();
        let mut forwarder = forwarder(&[P0, P1]);
        let mut egress = Vec::new();
        let flooded = (0..2 * crate::policy::DEFAULT_UNKNOWN_UNICAST_PPS)
            .filter(|n| {
                let source = MacAddr([0x02, 0xaa, 0, (n >> 16) as u8, (n >> 8) as u8, *n as u8]);
                forwarder
                    .decide(P0, &frame(source, host(99)), t0, &mut egress)
                    .0
                    == Verdict::Forward
            })
            .count();
        assert_eq!(flooded, crate::policy::DEFAULT_UNKNOWN_UNICAST_PPS as usize);
        let broadcasts = (0..2 * crate::policy::DEFAULT_BROADCAST_PPS)
            .filter(|_| {
                forwarder
                    .decide(P1, &frame(host(1), MacAddr::BROADCAST), t0, &mut egress)
                    .0
                    == Verdict::Forward
            })
            .count();
        assert_eq!(broadcasts, crate::policy::DEFAULT_BROADCAST_PPS as usize);
    }

    proptest! {
        /// Whatever a capped port sends and whenever, it floods no more than its rates
        /// allow, and learns no source from a frame storm control dropped.
        #[test]
        fn a_capped_port_floods_and_learns_within_its_rate(
            rate in 1u32..50,
            frames in proptest::collection::vec((2u8..250, 0u8..3, 0u64..200), 1..400),
        ) {
            let t0 = Instant::now();
            let capped = PortPolicy {
                storm: StormControl {
                    broadcast_pps: Some(rate),
                    multicast_pps: Some(rate),
                    unknown_unicast_pps: Some(rate),
                },
                ..PortPolicy::default()
            };
            let mut forwarder = with_policies(&[(P0, capped), (P1, PortPolicy::default())]);
            let mut egress = Vec::new();
            // P1's station, so that some of P0's frames are known unicast.
            forwarder.decide(P1, &frame(host(1), MacAddr::BROADCAST), t0, &mut egress);
            let mut now = t0;
            let mut flooded = [0u64; 3];
            let mut admitted_sources = std::collections::HashSet::new();
            for (source, kind, advance_ms) in frames {
                now += Duration::from_millis(advance_ms);
                let destination = match kind {
                    0 => MacAddr::BROADCAST,
                    1 => MacAddr([0x01, 0x00, 0x5e, 0, 0, 7]),
                    _ if source % 4 == 0 => host(1),
                    _ => MacAddr([0x02, 0xee, 0, 0, 0, source]),
                };
                let (verdict, _) = forwarder.decide(P0, &frame(host(source), destination), now, &mut egress);
                let storm = matches!(
                    verdict,
                    Verdict::Drop(DropReason::StormBroadcast | DropReason::StormMulticast | DropReason::StormUnknownUnicast)
                );
                if !storm {
                    admitted_sources.insert(source);
                }
                if verdict == Verdict::Forward && destination != host(1) {
                    flooded[usize::from(kind)] += 1;
                }
                let elapsed = now.duration_since(t0).as_secs_f64();
                for count in flooded {
                    prop_assert!(count as f64 <= f64::from(rate) * (1.0 + elapsed) + 1e-9);
                }
            }
            for entry in forwarder.fdb().entries(now) {
                if entry.port == P0 {
                    prop_assert!(admitted_sources.contains(&entry.mac.0[5]), "{:?} learned from a policed frame", entry.mac);
                }
            }
        }
    }

    #[test]
    fn isolated_ports_reach_only_non_isolated_ones() {
        let now = Instant::now();
        let isolated = PortPolicy {
            isolated: true,
            ..PortPolicy::default()
        };
        let mut forwarder = with_policies(&[
            (P0, isolated.clone()),
            (P1, isolated),
            (P2, PortPolicy::default()),
        ]);
        let mut egress = Vec::new();
        forwarder.decide(P0, &frame(host(1), MacAddr::BROADCAST), now, &mut egress);
        assert_eq!(egress_ports(&egress), vec![P2]);
        forwarder.decide(P2, &frame(host(3), MacAddr::BROADCAST), now, &mut egress);
        assert_eq!(egress_ports(&egress), vec![P0, P1]);
        assert_eq!(
            forwarder
                .decide(P1, &frame(host(2), host(1)), now, &mut egress)
                .0,
            Verdict::Drop(DropReason::Isolated)
        );
        forwarder.decide(P1, &frame(host(2), host(3)), now, &mut egress);
        assert_eq!(egress_ports(&egress), vec![P2]);
    }

    #[test]
    fn flood_switches_pick_which_floods_a_port_gets() {
        let now = Instant::now();
        let quiet = |unknown_unicast, multicast, broadcast| PortPolicy {
            flood: FloodControl {
                unknown_unicast,
                multicast,
                broadcast,
            },
            ..PortPolicy::default()
        };
        let mut forwarder = with_policies(&[
            (P0, PortPolicy::default()),
            (P1, quiet(false, true, true)),
            (P2, quiet(true, false, true)),
            (P3, quiet(true, true, false)),
            (P4, quiet(false, false, false)),
        ]);
        let mut egress = Vec::new();
        forwarder.decide(P0, &frame(host(1), host(9)), now, &mut egress);
        assert_eq!(egress_ports(&egress), vec![P2, P3]);
        let group = MacAddr([0x01, 0, 0x5e, 0, 0, 1]);
        forwarder.decide(P0, &frame(host(1), group), now, &mut egress);
        assert_eq!(egress_ports(&egress), vec![P1, P3]);
        forwarder.decide(P0, &frame(host(1), MacAddr::BROADCAST), now, &mut egress);
        assert_eq!(egress_ports(&egress), vec![P1, P2]);
        // Known unicast reaches a port that takes no floods.
        forwarder.decide(P4, &frame(host(4), host(1)), now, &mut egress);
        assert_eq!(egress_ports(&egress), vec![P0]);
        forwarder.decide(P0, &frame(host(1), host(4)), now, &mut egress);
        assert_eq!(egress_ports(&egress), vec![P4]);
    }

    #[test]
    fn invalid_policies_change_nothing() {
        let mut forwarder = forwarder(&[P0]);
        let bad = PortPolicy {
            vlan: VlanMode::Access { vlan: 5000 },
            ..PortPolicy::default()
        };
        let error = forwarder.set_policy(P0, bad.clone()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "port 0: vlan: VLAN 5000 is outside 1..=4094"
        );
        assert_eq!(forwarder.port(P0), Some(&PortPolicy::default()));
        assert!(forwarder.add_port(P1, bad).is_err());
        assert_eq!(forwarder.port(P1), None);
    }

    /// A small random VLAN mode over VLANs 1..=4.
    fn vlan_mode() -> impl Strategy<Value = VlanMode> {
        prop_oneof![
            1 => Just(VlanMode::Transparent),
            2 => (1u16..=4).prop_map(|vlan| VlanMode::Access { vlan }),
            2 => (proptest::collection::btree_set(1u16..=4, 0..4), proptest::option::of(1u16..=4))
                .prop_filter("a trunk carries something", |(allowed, native)| !allowed.is_empty() || native.is_some())
                .prop_map(|(allowed, native)| VlanMode::Trunk { allowed: allowed.into_iter().collect(), native }),
        ]
    }

    /// (src, dst, outer tag): untagged, 802.1Q with VID 0..=5, or 802.1ad.
    fn vlan_frame() -> impl Strategy<Value = (u8, u8, Option<(u16, VlanId)>)> {
        let tag = prop_oneof![
            2 => Just(None),
            3 => (0u16..=5).prop_map(|vid| Some((ETHERTYPE_VLAN, vid))),
            1 => (0u16..=5).prop_map(|vid| Some((crate::wire::ETHERTYPE_QINQ, vid))),
        ];
        (2u8..8, prop_oneof![4 => 2u8..8, 1 => Just(0xffu8)], tag)
    }

    /// The 802.1Q VID on the wire after `action`, for a frame that carried `dot1q`.
    fn wire_vid(dot1q: Option<VlanId>, action: TagAction) -> Option<VlanId> {
        match action {
            TagAction::AsIs => dot1q,
            TagAction::Push(vid) | TagAction::SetVid(vid) => Some(vid),
            TagAction::Pop => None,
        }
    }

    proptest! {
        /// A frame only leaves on ports that carry its VLAN, and on the wire it carries the
        /// VLAN's 802.1Q tag exactly when the port sends that VLAN tagged.
        #[test]
        fn frames_never_leave_their_vlan(
            modes in proptest::collection::vec(vlan_mode(), 2..6),
            traffic in proptest::collection::vec((0usize..6, vlan_frame()), 1..80),
        ) {
            let now = Instant::now();
            let mut forwarder = Forwarder::new(FdbConfig::default());
            for (index, mode) in modes.iter().enumerate() {
                let policy = PortPolicy { vlan: mode.clone(), ..PortPolicy::default() };
                forwarder.add_port(PortId(index as u32), policy).unwrap();
            }
            let mut egress = Vec::new();
            for (ingress, (src, dst, tag)) in traffic {
                let ingress = ingress % modes.len();
                let dst = address(dst);
                let bytes = match tag {
                    None => frame(host(src), dst),
                    Some((tpid, vid)) => tagged(host(src), dst, tpid, vid),
                };
                let (verdict, _) = forwarder.decide(PortId(ingress as u32), &bytes, now, &mut egress);
                let outer = EthernetFrame::new_checked(&bytes[..]).unwrap().vlan();
                let Some(vlan) = modes[ingress].classify(outer) else {
                    prop_assert_eq!(verdict, Verdict::Drop(DropReason::VlanNotAllowed));
                    continue;
                };
                let dot1q = tag.filter(|(tpid, _)| *tpid == ETHERTYPE_VLAN).map(|(_, vid)| vid);
                for out in &egress {
                    let mode = &modes[out.port.index()];
                    let tagging = mode.egress(vlan);
                    prop_assert!(tagging.is_some(), "{:?} left on {:?} ({:?})", vlan, out.port, mode);
                    match tagging.unwrap() {
                        Tagging::AsReceived => prop_assert_eq!(out.tag, TagAction::AsIs),
                        Tagging::Tagged => prop_assert_eq!(wire_vid(dot1q, out.tag), Some(vlan)),
                        Tagging::Untagged => prop_assert_eq!(wire_vid(dot1q, out.tag), None),
                    }
                }
            }
        }

        /// Whatever the isolation flags and traffic, no frame goes from an isolated port
        /// to another isolated port.
        #[test]
        fn isolated_ports_never_reach_each_other(
            isolated in proptest::collection::vec(any::<bool>(), 2..7),
            traffic in proptest::collection::vec((0usize..7, 2u8..10, prop_oneof![3 => 2u8..10, 1 => Just(0xffu8)]), 1..100),
        ) {
            let now = Instant::now();
            let mut forwarder = Forwarder::new(FdbConfig::default());
            for (index, &isolated) in isolated.iter().enumerate() {
                forwarder.add_port(PortId(index as u32), PortPolicy { isolated, ..PortPolicy::default() }).unwrap();
            }
            let mut egress = Vec::new();
            for (ingress, src, dst) in traffic {
                let ingress = ingress % isolated.len();
                forwarder.decide(PortId(ingress as u32), &frame(host(src), address(dst)), now, &mut egress);
                if isolated[ingress] {
                    prop_assert!(egress.iter().all(|out| !isolated[out.port.index()]), "{:?}", egress);
                }
            }
        }

        /// Whatever the tunnel flags and traffic, a flood from a split-horizon (tunnel)
        /// port never goes out on another one, and still reaches every other port;
        /// known unicast is not affected.
        #[test]
        fn split_horizon_ports_never_flood_into_each_other(
            tunnel in proptest::collection::vec(any::<bool>(), 2..7),
            traffic in proptest::collection::vec((0usize..7, 2u8..10, prop_oneof![3 => 2u8..10, 1 => Just(0xffu8)]), 1..100),
        ) {
            let now = Instant::now();
            let mut forwarder = Forwarder::new(FdbConfig::default());
            for (index, &split_horizon) in tunnel.iter().enumerate() {
                forwarder.add_port(PortId(index as u32), PortPolicy { split_horizon, ..PortPolicy::default() }).unwrap();
            }
            let mut egress = Vec::new();
            for (ingress, src, dst) in traffic {
                let ingress = ingress % tunnel.len();
                let destination = address(dst);
                let known = forwarder.fdb().lookup(0, destination, now);
                let (verdict, _) = forwarder.decide(PortId(ingress as u32), &frame(host(src), destination), now, &mut egress);
                let flooded = known.is_none() || destination.is_multicast();
                if flooded && verdict == Verdict::Forward {
                    let expected: Vec<usize> = (0..tunnel.len())
                        .filter(|&out| out != ingress && !(tunnel[ingress] && tunnel[out]))
                        .collect();
                    let got: Vec<usize> = egress.iter().map(|out| out.port.index()).collect();
                    prop_assert_eq!(got, expected);
                }
            }
        }

        /// The MAC table never holds more entries for a port than its limit, whatever the
        /// sources, moves, VLANs and sticky settings.
        #[test]
        fn the_mac_limit_is_never_exceeded(
            limits in proptest::collection::vec((1u32..5, any::<bool>()), 2..5),
            traffic in proptest::collection::vec((0usize..5, 2u8..40, 1u16..=3, 0u64..3000), 1..200),
        ) {
            let mut now = Instant::now();
            let mut forwarder = Forwarder::new(FdbConfig { ageing: Duration::from_secs(2), capacity: 64 });
            for (index, &(limit, sticky)) in limits.iter().enumerate() {
                let mut policy = trunk(&[1, 2, 3], None);
                policy.security.mac_limit = Some(limit);
                policy.security.sticky = sticky;
                forwarder.add_port(PortId(index as u32), policy).unwrap();
            }
            let mut egress = Vec::new();
            for (ingress, src, vid, advance_ms) in traffic {
                now += Duration::from_millis(advance_ms);
                let ingress = ingress % limits.len();
                let bytes = tagged(host(src), MacAddr::BROADCAST, ETHERTYPE_VLAN, vid);
                forwarder.decide(PortId(ingress as u32), &bytes, now, &mut egress);
                if advance_ms > 2500 {
                    forwarder.fdb_mut().expire(now);
                }
                for (index, &(limit, _)) in limits.iter().enumerate() {
                    let count = forwarder.fdb().port_count(PortId(index as u32));
                    prop_assert!(count <= limit as usize, "port {} holds {} > {}", index, count, limit);
                }
            }
        }
    }

    // ---- Traces ----

    /// A random policy over VLANs 1..=3: any mode, storm rates of a few frames per
    /// second, small MAC limits, sticky learning, anti-spoofing, isolation, split
    /// horizon and flood switches, so that every step can decide.
    fn policy() -> impl Strategy<Value = PortPolicy> {
        let vlan = prop_oneof![
            2 => Just(VlanMode::Transparent),
            1 => (1u16..=3).prop_map(|vlan| VlanMode::Access { vlan }),
            1 => (proptest::collection::btree_set(1u16..=3, 1..3), proptest::option::of(1u16..=3))
                .prop_map(|(allowed, native)| VlanMode::Trunk { allowed: allowed.into_iter().collect(), native }),
        ];
        let rate = proptest::option::of(1u32..4);
        (
            (
                any::<bool>(),
                vlan,
                proptest::option::of(1u32..4),
                0u8..3,
                any::<bool>(),
                any::<bool>(),
            ),
            (
                rate.clone(),
                rate.clone(),
                rate,
                any::<bool>(),
                any::<bool>(),
                any::<[bool; 3]>(),
            ),
        )
            .prop_map(
                |(
                    (enabled, vlan, mac_limit, violation, sticky, bound),
                    (b, m, u, isolated, split_horizon, flood),
                )| {
                    PortPolicy {
                        // Mostly enabled: a disabled port decides little.
                        enabled: enabled || mac_limit.is_some(),
                        vlan,
                        security: PortSecurity {
                            mac_limit,
                            violation: [
                                ViolationAction::Drop,
                                ViolationAction::DropLog,
                                ViolationAction::Shutdown,
                            ][usize::from(violation)],
                            sticky,
                            allowed_macs: if bound {
                                vec![host(2), host(3), host(4)].into()
                            } else {
                                Box::default()
                            },
                        },
                        storm: StormControl {
                            broadcast_pps: b,
                            multicast_pps: m,
                            unknown_unicast_pps: u,
                        },
                        isolated,
                        split_horizon,
                        flood: FloodControl {
                            unknown_unicast: flood[0],
                            multicast: flood[1],
                            broadcast: flood[2],
                        },
                    }
                },
            )
    }

    /// A frame: untagged, 802.1Q-tagged (VID 0..=3, sometimes over another tag) or
    /// 802.1ad-tagged, or a runt.
    fn any_frame() -> impl Strategy<Value = Vec<u8>> {
        frame_over(prop_oneof![8 => 2u8..10, 1 => Just(0u8), 1 => Just(1u8), 1 => Just(0xffu8)])
    }

    /// [`any_frame`] with addresses drawn from `addr`.
    fn frame_over(addr: impl Strategy<Value = u8> + Clone) -> impl Strategy<Value = Vec<u8>> {
        (addr.clone(), addr, 0u8..6, 0u16..=3).prop_map(|(src, dst, shape, vid)| {
            let (src, dst) = (address(src), address(dst));
            match shape {
                0 | 1 => frame(src, dst),
                2 => tagged(src, dst, ETHERTYPE_VLAN, vid),
                3 => {
                    let mut bytes = tagged(src, dst, ETHERTYPE_VLAN, vid);
                    bytes.splice(16..16, [0x81, 0x00, 0x00, 0x02]);
                    bytes
                }
                4 => tagged(src, dst, crate::wire::ETHERTYPE_QINQ, vid),
                _ => frame(src, dst)[..10].to_vec(),
            }
        })
    }

    /// The whole state, for "the trace changed nothing": a clone keeps its maps' order.
    fn state_of(forwarder: &Forwarder) -> String {
        format!("{forwarder:?}")
    }

    proptest! {
        /// For any policies, table (small, so that it fills and evicts), flap damping
        /// and traffic: the trace of a frame has the verdict, egress ports, tag actions
        /// and learning outcome `decide` then has on the same state, and it changes
        /// nothing (no learning, no storm token, no flap or event).
        #[test]
        fn trace_says_what_decide_does_and_changes_nothing(
            policies in proptest::collection::vec(policy(), 1..6),
            capacity in 0usize..8,
            flap in any::<bool>(),
            statics in proptest::collection::vec((0u32..6, 2u8..10, 0u16..=3), 0..3),
            traffic in proptest::collection::vec((0u32..7, any_frame(), 0u64..1500), 1..120),
        ) {
            let mut now = Instant::now();
            let mut forwarder = Forwarder::new(FdbConfig { ageing: Duration::from_secs(2), capacity });
            for (index, policy) in policies.iter().enumerate() {
                forwarder.add_port(PortId(index as u32), policy.clone()).unwrap();
            }
            if flap {
                forwarder.set_mac_flap(Some(MacFlapConfig {
                    moves: 2,
                    window: Duration::from_secs(1),
                    hold: Duration::from_secs(2),
                }));
            }
            for (port, mac, vlan) in statics {
                let _ = forwarder.fdb_mut().add_static(vlan, host(mac), PortId(port));
            }
            let mut egress = Vec::new();
            for (ingress, bytes, advance_ms) in traffic {
                now += Duration::from_millis(advance_ms);
                let ingress = PortId(ingress);
                let before = state_of(&forwarder);
                let trace = forwarder.trace(ingress, &bytes, now);
                prop_assert_eq!(&state_of(&forwarder), &before, "the trace changed the state");
                let (verdict, learned) = forwarder.decide(ingress, &bytes, now, &mut egress);
                prop_assert_eq!(trace.verdict, verdict, "{:#?}", trace.steps);
                prop_assert_eq!(&trace.egress, &egress, "{:#?}", trace.steps);
                prop_assert_eq!(trace.learned, learned, "{:#?}", trace.steps);
                // The steps name the egress ports: each one's `Port` step says egress.
                let told: Vec<Egress> = trace.steps.iter().filter_map(|step| match step {
                    TraceStep::Port { port, result: PortResult::Egress(tag) } => Some(Egress { port: *port, tag: *tag }),
                    _ => None,
                }).filter(|out| !trace.steps.iter().any(|step| matches!(step, TraceStep::InnerTagExposed { removed } if removed.contains(&out.port)))).collect();
                prop_assert_eq!(told, egress.clone());
                forwarder.drain_events().for_each(drop);
            }
        }
    }

    proptest! {
        /// For any policies, table, flap damping, traffic spread over three workers'
        /// caches, and sweeps and policy changes between frames: the shared forwarder
        /// decides exactly as one forwarder does (verdict, egress, learning outcome) and
        /// ends with the same table and counters, whether a decision came from a cache
        /// without the lock or from the forwarder under it.
        #[test]
        fn the_shared_forwarder_decides_as_one_forwarder_does(
            policies in proptest::collection::vec(policy(), 1..6),
            capacity in 0usize..8,
            flap in any::<bool>(),
            statics in proptest::collection::vec((0u32..6, 2u8..10, 0u16..=3), 0..3),
            // Few distinct frames, so that decisions repeat and come from the caches.
            frames in proptest::collection::vec(
                (0u32..6, frame_over(prop_oneof![12 => 2u8..5, 1 => Just(0xffu8), 1 => 5u8..10])),
                1..7,
            ),
            traffic in proptest::collection::vec(
                (any::<prop::sample::Index>(), 0u64..700, 0usize..3, 0u8..40, policy()),
                1..200,
            ),
        ) {
            use crate::shared::{DecisionCache, SharedForwarder};
            let mut now = Instant::now();
            let config = FdbConfig { ageing: Duration::from_secs(2), capacity };
            let mut alone = Forwarder::new(config.clone());
            let shared = SharedForwarder::new(config);
            let mut caches: Vec<DecisionCache> = (0..3).map(|_| DecisionCache::default()).collect();
            for forwarder in [&mut alone, &mut *shared.lock()] {
                for (index, policy) in policies.iter().enumerate() {
                    forwarder.add_port(PortId(index as u32), policy.clone()).unwrap();
                }
                if flap {
                    forwarder.set_mac_flap(Some(MacFlapConfig {
                        moves: 2,
                        window: Duration::from_secs(1),
                        hold: Duration::from_secs(2),
                    }));
                }
                for &(port, mac, vlan) in &statics {
                    let _ = forwarder.fdb_mut().add_static(vlan, host(mac), PortId(port));
                }
            }
            let (mut egress, mut shared_egress) = (Vec::new(), Vec::new());
            for (pick, advance_ms, worker, control, policy) in traffic {
                let (ingress, bytes) = pick.get(&frames).clone();
                // Mostly back-to-back frames, now and then a pause that ages entries.
                let advance_ms = if advance_ms < 600 { advance_ms / 60 } else { advance_ms * 3 };
                now += Duration::from_millis(advance_ms);
                // Now and then what the primary does between frames.
                match control {
                    0 => {
                        let expired = alone.fdb_mut().expire(now);
                        prop_assert_eq!(shared.lock().fdb_mut().expire(now), expired);
                    }
                    1 => {
                        let port = PortId(ingress % policies.len() as u32);
                        let result = alone.set_policy(port, policy.clone()).is_ok();
                        prop_assert_eq!(shared.lock().set_policy(port, policy).is_ok(), result);
                    }
                    2 => {
                        let trace = alone.trace(PortId(ingress), &bytes, now);
                        prop_assert_eq!(shared.lock().trace(PortId(ingress), &bytes, now), trace);
                    }
                    _ => {}
                }
                let ingress = PortId(ingress);
                let expected = alone.decide(ingress, &bytes, now, &mut egress);
                let decided = shared.decide(&mut caches[worker], ingress, &bytes, now, &mut shared_egress, |_, _| {});
                prop_assert_eq!(decided, expected);
                prop_assert_eq!(&shared_egress, &egress);
                let locked = shared.lock();
                prop_assert_eq!(locked.fdb().entries(now), alone.fdb().entries(now));
                prop_assert_eq!(locked.fdb().counters(), alone.fdb().counters());
                drop(locked);
                alone.drain_events().for_each(drop);
                shared.lock().drain_events().for_each(drop);
            }
        }
    }

    /// Steady traffic between two known stations is decided from the cache, without the
    /// lock, and still refreshes the source: it does not age out while it sends.
    #[test]
    fn known_unicast_is_decided_without_the_lock_and_keeps_its_source_alive() {
        use crate::shared::{DecisionCache, SharedForwarder};
        let mut now = Instant::now();
        let shared = SharedForwarder::new(FdbConfig {
            ageing: Duration::from_secs(2),
            capacity: 16,
        });
        for port in [P0, P1] {
            shared.lock().add_port(port, PortPolicy::default()).unwrap();
        }
        let mut cache = DecisionCache::default();
        let mut egress = Vec::new();
        // a never ages (static), c is heard once, b talks to a every 500 ms.
        let (a, b, c) = (host(1), host(2), host(3));
        shared.lock().fdb_mut().add_static(0, a, P1).unwrap();
        shared.decide(&mut cache, P1, &frame(c, a), now, &mut egress, |_, _| {});
        for i in 0..10 {
            now += Duration::from_millis(500);
            let decided = shared.decide(&mut cache, P0, &frame(b, a), now, &mut egress, |_, _| {});
            let learned = if i == 0 {
                Learned::New
            } else {
                Learned::Refreshed
            };
            assert_eq!(decided, (Verdict::Forward, learned));
            assert_eq!(egress, vec![out(P1, TagAction::AsIs)]);
        }
        assert!(
            cache.hits() >= 8,
            "{} decisions from the cache",
            cache.hits()
        );
        let mut locked = shared.lock();
        assert_eq!(
            locked.fdb().lookup(0, c, now),
            None,
            "c sent nothing for 5 s"
        );
        assert_eq!(locked.fdb().lookup(0, b, now), Some(P0), "b sent all along");
        assert_eq!(locked.fdb_mut().expire(now), 1, "only c aged out");
    }

    #[test]
    fn a_trace_tells_each_step() {
        let now = Instant::now();
        let mut limited = access(10);
        limited.storm.broadcast_pps = Some(1);
        let mut forwarder = with_policies(&[
            (P0, limited),
            (P1, access(20)),
            (P2, trunk(&[10], None)),
            (
                P3,
                PortPolicy {
                    isolated: true,
                    ..access(10)
                },
            ),
        ]);
        let bytes = frame(host(1), MacAddr::BROADCAST);
        let trace = forwarder.trace(P0, &bytes, now);
        assert_eq!(trace.verdict, Verdict::Forward);
        assert_eq!(trace.learned, Learned::New);
        assert_eq!(
            trace.egress,
            vec![out(P2, TagAction::Push(10)), out(P3, TagAction::AsIs)]
        );
        assert_eq!(
            trace.steps,
            vec![
                TraceStep::Frame {
                    src: host(1),
                    dst: MacAddr::BROADCAST,
                    tag: None,
                    ethertype: 0x0800
                },
                TraceStep::Vlan {
                    mode: "access 10".into(),
                    vlan: Some(10)
                },
                TraceStep::Security {
                    allowed_macs: 0,
                    spoofed: false
                },
                TraceStep::Destination {
                    kind: DestinationKind::Broadcast,
                    entry: None
                },
                TraceStep::Storm {
                    flood: DestinationKind::Broadcast,
                    limit: Some(StormLimit {
                        rate_pps: 1,
                        passes: true,
                        tokens_left: 0
                    }),
                },
                TraceStep::Learn {
                    learned: Learned::New,
                    evicts: None
                },
                TraceStep::Port {
                    port: P0,
                    result: PortResult::Excluded(Exclusion::Ingress)
                },
                TraceStep::Port {
                    port: P1,
                    result: PortResult::Excluded(Exclusion::VlanNotCarried)
                },
                TraceStep::Port {
                    port: P2,
                    result: PortResult::Egress(TagAction::Push(10))
                },
                TraceStep::Port {
                    port: P3,
                    result: PortResult::Egress(TagAction::AsIs)
                },
            ]
        );
        // The trace took no token: the next frame still passes, and the one after not.
        let mut egress = Vec::new();
        assert_eq!(
            forwarder.decide(P0, &bytes, now, &mut egress).0,
            Verdict::Forward
        );
        let trace = forwarder.trace(P0, &bytes, now);
        assert_eq!(trace.verdict, Verdict::Drop(DropReason::StormBroadcast));
        assert!(trace.steps.contains(&TraceStep::Storm {
            flood: DestinationKind::Broadcast,
            limit: Some(StormLimit {
                rate_pps: 1,
                passes: false,
                tokens_left: 0
            }),
        }));
        // Now learned: a unicast to host 1 shows its entry.
        let trace = forwarder.trace(P2, &tagged(host(5), host(1), ETHERTYPE_VLAN, 10), now);
        assert_eq!(trace.egress, vec![out(P0, TagAction::Pop)]);
        assert!(trace.steps.iter().any(|step| matches!(
            step,
            TraceStep::Destination { kind: DestinationKind::KnownUnicast, entry: Some(entry) }
                if entry.port == P0 && entry.vlan == 10
        )));
        let trace = forwarder.trace(P1, &tagged(host(5), host(1), ETHERTYPE_VLAN, 10), now);
        assert_eq!(trace.verdict, Verdict::Drop(DropReason::VlanNotAllowed));
    }

    #[test]
    fn trace_serialises_with_drop_reason_names() {
        for reason in DropReason::ALL {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.name());
        }
        let mut forwarder = forwarder(&[P0, P1]);
        let trace = forwarder.trace(P0, &frame(host(1), host(2)), Instant::now());
        let json = serde_json::to_string(&trace).unwrap();
        let back: Trace = serde_json::from_str(&json).unwrap();
        assert_eq!(back, trace);
    }
}
