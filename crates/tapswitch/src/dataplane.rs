//! The event loop: reads frames from ready ports, asks the pure [`Forwarder`]
//! where each goes, and writes it there.
//!
//! mio is edge-triggered: a readiness event arrives once per transition, so a
//! port that signalled stays on the *ready list* until a read returns
//! `WouldBlock`. Each turn serves every ready port for at most `poll_budget`
//! units of work, so one busy port cannot starve the rest; a frame costs one
//! unit per port it is written to (and one when it goes nowhere), so a port
//! whose frames flood to every other port gets fewer of them per turn than a
//! port talking to one peer. One buffer serves every
//! frame: read once, written to each egress port, never copied or allocated.
//!
//! The control plane talks to the loop only through a channel and a mio
//! [`Waker`]: the loop never blocks on anything but `epoll_wait`.
//!
//! With `threads > 1` the switch runs one such loop per thread ("workers").
//! Each queue of a port (a multi-queue TAP has one fd per queue; the kernel
//! spreads the netdev's flows over them) is *read* by exactly one worker
//! ((port id + queue) modulo threads), and every port is *written* by any
//! worker: a TAP fd takes concurrent writes. The workers share the
//! [`Forwarder`] (and so the MAC table) behind a mutex held only for the
//! decision itself. Worker 0, the primary, owns port membership: it adds and
//! removes ports and tells the others; it answers the control plane, merging
//! the other workers' counters into its snapshots.

use std::collections::VecDeque;
use std::io;
use std::ops::ControlFlow;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use serde::{Serialize, Serializer};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::fdb::{FdbConfig, FdbCounters, FdbEntry, FdbError, Learned, PortId, VlanId};
use crate::forward::{
    DropReason, Egress, ForwardEvent, Forwarder, MacFlapEntry, PortPolicy, TagAction, Verdict,
    ViolationAction,
};
use crate::gso::Segmenter;
use crate::port::Port;
use crate::vnet::{Offload, PLAIN_HEADER, VNET_HDR_LEN, VnetHeader, shift_frame_offsets};
use crate::wire::{ETHERTYPE_VLAN, EthernetFrame, HEADER_LEN, MacAddr, VLAN_TAG_LEN};

/// Token of the control-plane waker; ports use their slot index.
const WAKER: Token = Token(usize::MAX);

/// How long a port queue waits for its next turn after one spent mostly on frames
/// storm control dropped. Its TAP queue (1000 frames by default) holds a
/// millisecond of a fast flood; the switch reads at most a turn's worth of a
/// storming port per this, i.e. some 64,000 frames a second.
const STORM_HOLD_BACK: Duration = Duration::from_millis(1);

/// Queues a port may have; a port's queue `q` polls under token `index * MAX_QUEUES + q`.
pub const MAX_QUEUES: usize = 16;

/// A set of a port's queues, bit `q` for queue `q`.
type QueueMask = u16;

fn token(id: PortId, queue: usize) -> Token {
    Token(id.index() * MAX_QUEUES + queue)
}

fn queues_of(mask: QueueMask) -> impl Iterator<Item = usize> {
    (0..MAX_QUEUES).filter(move |q| mask & (1 << q) != 0)
}

/// Largest frame a port can hand over: a super-frame carrying the largest IP packet
/// (65535 bytes, more than a TAP's largest MTU) with a VLAN tag, plus its vnet header.
const BUFFER_LEN: usize = u16::MAX as usize + HEADER_LEN + VLAN_TAG_LEN + crate::vnet::VNET_HDR_LEN;

/// How often the MAC table is swept for aged-out entries.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// Errors of the event loop itself (not of one port: those remove the port).
#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error("creating the epoll instance failed: {0}")]
    Poll(#[source] io::Error),
    #[error("registering port {name} with epoll failed: {source}")]
    Register {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("waiting for events failed: {0}")]
    Wait(#[source] io::Error),
    #[error(transparent)]
    Forward(#[from] crate::forward::ForwardError),
    #[error("the dataplane has stopped")]
    Stopped,
    #[error("starting dataplane thread {worker} failed: {source}")]
    Spawn {
        worker: usize,
        #[source]
        source: io::Error,
    },
    #[error("dataplane thread {worker} panicked")]
    WorkerPanicked { worker: usize },
    #[error("no port named {name:?}")]
    UnknownPort { name: String },
    #[error("a port named {name:?} already exists")]
    PortExists { name: String },
    #[error(transparent)]
    Fdb(#[from] FdbError),
}

/// Requests from the control plane.
pub enum Command {
    /// Stop forwarding; the loop returns its final snapshot.
    Shutdown,
    /// Reply with counters and the MAC table.
    Snapshot(Sender<Snapshot>),
    /// Reply with counters only (`fdb` left empty): cheap enough to scrape often.
    Counters(Sender<Snapshot>),
    /// Start forwarding on a port the control plane has fully set up (TAP open,
    /// netdev configured), so the loop never waits on netlink.
    AddPort {
        port: Box<dyn Port>,
        mtu: u32,
        /// Applied right after the port is added, before it forwards a frame.
        settings: PortUpdate,
        reply: Sender<Result<PortSnapshot, DataplaneError>>,
    },
    /// Stop forwarding on a port and hand it back; the requester drops it, so
    /// closing the TAP (which deletes a non-persistent netdev) happens off the
    /// packet path.
    RemovePort {
        name: String,
        /// Why: `Requested` for `port del`; `NamespaceDeleted` when its namespace went away.
        cause: RemovalCause,
        reply: Sender<Result<RemovedPort, DataplaneError>>,
    },
    /// The port's netdev went down or came up (from netlink link notifications):
    /// reported as an event and in the port's state. Frames keep being written
    /// either way; a down TAP refuses them and they count as `link_down`.
    SetLinkState { name: String, up: bool },
    /// The port's netdev is now in namespace `netns` (`None`: the switch's own).
    PortMoved { name: String, netns: Option<String> },
    /// Change settings of a running port.
    UpdatePort {
        name: String,
        update: PortUpdate,
        reply: Sender<Result<PortSnapshot, DataplaneError>>,
    },
    /// Pin `mac` to a port with a static MAC table entry.
    FdbAdd {
        vlan: VlanId,
        mac: MacAddr,
        port: String,
        reply: Sender<Result<(), DataplaneError>>,
    },
    /// Remove the entry for `mac`; replies whether there was one.
    FdbRemove {
        vlan: VlanId,
        mac: MacAddr,
        reply: Sender<bool>,
    },
    /// Forget learned entries: all of them, or every entry (static too) of one port.
    FdbFlush {
        port: Option<String>,
        reply: Sender<Result<usize, DataplaneError>>,
    },
    /// (Primary to worker) serve this port too, reading the queues in `reads`.
    Attach {
        id: PortId,
        port: Arc<dyn Port>,
        mtu: u32,
        reads: QueueMask,
    },
    /// Reply with every port (slot order), to hand their fds to a new process.
    ExportPorts(Sender<Vec<Arc<dyn Port>>>),
    /// (Primary to worker) forget this port.
    Detach(PortId),
    /// (Primary to worker) the port's MTU changed.
    SetMtu { id: PortId, mtu: u32 },
    /// (Worker to primary) this port failed; remove it everywhere. Carries
    /// the worker's last counters of the port.
    PortFailed { id: PortId, counters: PortCounters },
}

/// Settings of a running port that the control plane can change; `None`
/// leaves a setting as it is. Applied in one step by [`Dataplane::update_port`]:
/// an invalid policy changes nothing. Serialised (for `port_changed` events)
/// without the policy, which shows as `"policy": true`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PortUpdate {
    /// Largest frame accepted (plus Ethernet header and one VLAN tag).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// A disabled port neither receives nor sends frames. Also what brings back a
    /// port its MAC limit shut down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The port's whole new forwarding policy (VLANs, security, storm control,
    /// isolation, floods). Its `enabled` is not used: `enabled` above decides, or
    /// the port keeps its current state (so a port shut down by its MAC limit stays
    /// down until enabled).
    #[serde(
        serialize_with = "serialize_as_present",
        skip_serializing_if = "Option::is_none"
    )]
    pub policy: Option<PortPolicy>,
}

fn serialize_as_present<S: Serializer>(
    policy: &Option<PortPolicy>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_bool(policy.is_some())
}

impl PortUpdate {
    pub fn is_empty(&self) -> bool {
        *self == PortUpdate::default()
    }
}

/// A port taken out of the dataplane, with its last counters. Dropping the
/// last reference closes the fd (other dataplane threads drop theirs when
/// they process the detach).
pub struct RemovedPort {
    pub port: Arc<dyn Port>,
    pub last: PortSnapshot,
}

/// Why a port left the dataplane.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalCause {
    /// The control plane asked.
    Requested,
    /// Reading or writing failed with an error other than a full queue or a
    /// down link (e.g. the TAP was deleted under us).
    DeviceError,
    /// The network namespace the port's netdev was in was deleted, and the
    /// kernel deleted the netdev with it.
    NamespaceDeleted,
}

/// Something that changed in the switch, for `tapswitch events`. Ports are
/// named by id; the control plane adds names, keeping the packet path free of
/// string copies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A source MAC not in the table was learned (`evicted_from`: a full
    /// table made room by evicting one of that port's entries).
    MacLearned {
        mac: MacAddr,
        port: PortId,
        #[serde(skip_serializing_if = "Option::is_none")]
        evicted_from: Option<PortId>,
    },
    /// A live learned MAC showed up on another port.
    MacMoved {
        mac: MacAddr,
        from: PortId,
        to: PortId,
    },
    PortAdded {
        port: PortId,
        name: String,
        mtu: u32,
    },
    PortRemoved {
        port: PortId,
        name: String,
        cause: RemovalCause,
    },
    /// Settings of a port changed (`port set`).
    PortChanged {
        port: PortId,
        name: String,
        update: PortUpdate,
    },
    /// Entries were flushed: all learned ones, or all of one port.
    FdbFlushed {
        #[serde(skip_serializing_if = "Option::is_none")]
        port: Option<PortId>,
        removed: usize,
    },
    FdbStaticAdded {
        vlan: VlanId,
        mac: MacAddr,
        port: PortId,
    },
    FdbRemoved {
        vlan: VlanId,
        mac: MacAddr,
    },
    /// `mac` moved between ports too often (`[switch.mac_flap]`): it stays on
    /// `held_on` and is not learned on `moved_to` while the hold lasts.
    MacFlap {
        vlan: VlanId,
        mac: MacAddr,
        held_on: PortId,
        moved_to: PortId,
        /// Flaps of this address so far.
        flaps: u64,
    },
    /// A new source would have exceeded the port's `mac_limit` (for `drop+log` at
    /// most one per port per second, `suppressed` counting the rest; `drop` is
    /// silent, counted only).
    MacLimitExceeded {
        port: PortId,
        vlan: VlanId,
        mac: MacAddr,
        limit: u32,
        action: ViolationAction,
        suppressed: u64,
    },
    /// The port's MAC limit (`mac_limit_action = "shutdown"`) disabled it;
    /// `port set NAME --enable` brings it back.
    PortShutdown {
        port: PortId,
    },
    /// The port's netdev went down (its endpoint set it down, or it is being
    /// moved): frames to it count as `link_down` drops until it is up.
    PortLinkDown {
        port: PortId,
    },
    /// The port's netdev is up again and forwarding.
    PortLinkUp {
        port: PortId,
    },
    /// The port's netdev moved to namespace `netns` (`null`: the switch's own).
    PortMoved {
        port: PortId,
        netns: Option<String>,
    },
}

/// Where events go: a bounded channel filled with `try_send`, so a slow
/// reader costs lost events (counted), never a stalled loop. Every worker
/// holds a sender of the same channel.
#[derive(Default)]
struct EventSink {
    sender: Option<SyncSender<Event>>,
    dropped: u64,
}

impl EventSink {
    fn emit(&mut self, event: impl FnOnce() -> Event) {
        let Some(sender) = &self.sender else {
            return;
        };
        match sender.try_send(event()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped += 1,
            // The reader is gone: stop building events nobody will read.
            Err(TrySendError::Disconnected(_)) => self.sender = None,
        }
    }

    /// The event for what learning a frame's source address did, if it is news.
    fn learned(&mut self, ingress: PortId, frame: &[u8], learned: Learned) {
        if !matches!(
            learned,
            Learned::New | Learned::Moved { .. } | Learned::Evicted { .. }
        ) {
            return;
        }
        // Learning happened, so the frame has a full Ethernet header.
        let mac = MacAddr::from_bytes(&frame[6..12]);
        self.emit(|| match learned {
            Learned::Moved { from } => Event::MacMoved {
                mac,
                from,
                to: ingress,
            },
            Learned::Evicted { victim_port } => Event::MacLearned {
                mac,
                port: ingress,
                evicted_from: Some(victim_port),
            },
            _ => Event::MacLearned {
                mac,
                port: ingress,
                evicted_from: None,
            },
        });
    }
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
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoopStats {
    /// Returns from `epoll_wait`.
    pub iterations: u64,
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
}

impl LoopStats {
    fn record_batch(&mut self, frames: usize) {
        self.batches += 1;
        self.batch_frames += frames as u64;
        let bucket = BATCH_BUCKETS
            .iter()
            .position(|&bound| frames <= bound)
            .unwrap_or(BATCH_BUCKETS.len());
        self.batch_sizes[bucket] += 1;
    }

    fn record_turn(&mut self, took: Duration) {
        let micros = took.as_micros() as u64;
        let bucket = TURN_BUCKETS_US
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(TURN_BUCKETS_US.len());
        self.turn_us[bucket] += 1;
    }

    fn add(&mut self, other: &LoopStats) {
        self.iterations += other.iterations;
        self.batches += other.batches;
        self.batch_frames += other.batch_frames;
        for (mine, theirs) in self.batch_sizes.iter_mut().zip(other.batch_sizes) {
            *mine += theirs;
        }
        for (mine, theirs) in self.turn_us.iter_mut().zip(other.turn_us) {
            *mine += theirs;
        }
    }
}

/// Per-port counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
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
    fn add(&mut self, other: &PortCounters) {
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

    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

impl Serialize for DropCounters {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(DropReason::ALL.iter().map(|r| (r.name(), self.get(*r))))
    }
}

/// One port as the control plane sees it.
#[derive(Clone, Debug, Serialize)]
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
}

/// The state of the switch at one instant.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub ports: Vec<PortSnapshot>,
    /// Ports removed after an I/O error (e.g. their TAP was deleted), with their last counters:
    /// the newest removal of each name, at most [`MAX_REMOVED_PORTS`].
    pub removed_ports: Vec<PortSnapshot>,
    /// The MAC table (empty in a counters-only snapshot).
    pub fdb: Vec<FdbEntry>,
    /// Entries in the MAC table (also when `fdb` was left out).
    pub fdb_size: usize,
    pub fdb_counters: FdbCounters,
    /// Addresses that flapped between ports, with their flap counts.
    pub mac_flaps: Vec<MacFlapEntry>,
    pub loop_stats: LoopStats,
    /// Events lost because their reader fell behind.
    pub events_dropped: u64,
}

impl Snapshot {
    pub fn port(&self, name: &str) -> Option<&PortSnapshot> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// Adds another worker's counters (per port, by id, and of its loop).
    fn merge_counters(&mut self, other: &Snapshot) {
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

/// Settings of the loop.
#[derive(Clone, Debug)]
pub struct DataplaneConfig {
    pub poll_budget: usize,
    /// How long to keep polling without sleeping after the last frame.
    pub idle_poll: Duration,
    /// Dataplane threads (workers); ports are spread over them for reading.
    pub threads: usize,
    pub fdb: FdbConfig,
}

/// Sends commands to a running dataplane and wakes it.
#[derive(Clone)]
pub struct DataplaneHandle {
    commands: Sender<Command>,
    waker: Arc<Waker>,
}

impl DataplaneHandle {
    pub fn send(&self, command: Command) -> Result<(), DataplaneError> {
        self.commands
            .send(command)
            .map_err(|_| DataplaneError::Stopped)?;
        self.waker.wake().map_err(|_| DataplaneError::Stopped)
    }

    /// Asks for a snapshot and waits for it.
    pub fn snapshot(&self) -> Result<Snapshot, DataplaneError> {
        let (reply, answer) = mpsc::channel();
        self.send(Command::Snapshot(reply))?;
        answer.recv().map_err(|_| DataplaneError::Stopped)
    }

    pub fn shutdown(&self) -> Result<(), DataplaneError> {
        self.send(Command::Shutdown)
    }

    /// Sends the command `make` builds around a reply channel and waits for the reply.
    pub fn request<T>(&self, make: impl FnOnce(Sender<T>) -> Command) -> Result<T, DataplaneError> {
        let (reply, answer) = mpsc::channel();
        self.send(make(reply))?;
        answer.recv().map_err(|_| DataplaneError::Stopped)
    }
}

struct PortSlot {
    port: Arc<dyn Port>,
    mtu: u32,
    /// The netdev's state as last reported by the control plane.
    link_up: bool,
    counters: PortCounters,
    /// The queues this worker reads (registered with this worker's epoll).
    reads: QueueMask,
    /// The queues on the ready list (they signalled and have not yet returned `WouldBlock`).
    ready: QueueMask,
}

impl PortSlot {
    fn snapshot(&self, id: PortId, policy: Option<&PortPolicy>) -> PortSnapshot {
        PortSnapshot {
            id,
            name: self.port.name().to_owned(),
            mtu: self.mtu,
            vnet_hdr: self.port.vnet_hdr_len() > 0,
            enabled: policy.is_some_and(|p| p.enabled),
            link_up: self.link_up,
            counters: self.counters.clone(),
        }
    }

    /// Longest Ethernet frame (no vnet header) accepted from or sent to this
    /// port unless it is an offload super-frame: MTU + header + one VLAN tag.
    fn max_frame_len(&self) -> usize {
        self.mtu as usize + HEADER_LEN + VLAN_TAG_LEN
    }
}

/// The other workers, as the primary sees them.
#[derive(Default)]
struct Workers {
    /// Built but not yet running (before [`Dataplane::run`]).
    idle: Vec<Dataplane>,
    handles: Vec<DataplaneHandle>,
    threads: Vec<JoinHandle<Result<Snapshot, DataplaneError>>>,
}

/// One event loop (a worker) and everything it owns.
pub struct Dataplane {
    /// 0 for the primary.
    worker: usize,
    /// Total number of workers.
    threads: usize,
    poll: Poll,
    commands: Receiver<Command>,
    ports: Vec<Option<PortSlot>>,
    removed: Vec<PortSnapshot>,
    forwarder: Arc<Mutex<Forwarder>>,
    /// The primary's other workers (empty on the others).
    workers: Workers,
    /// The primary, for reporting failed ports (`None` on the primary).
    primary: Option<DataplaneHandle>,
    /// Port queues with frames waiting, in the order they are served.
    ready: VecDeque<(PortId, usize)>,
    /// Port queues with frames waiting that are not served again before the
    /// instant given: their last turn was mostly frames storm control dropped.
    held_back: Vec<(PortId, usize, Instant)>,
    buffer: Box<[u8]>,
    egress: Vec<Egress>,
    dead: Vec<PortId>,
    poll_budget: usize,
    idle_poll: Duration,
    /// Segments super-frames and completes checksums for ports without offloads.
    segmenter: Segmenter,
    events: EventSink,
    loop_stats: LoopStats,
}

impl Dataplane {
    /// Builds the primary worker (and, idle, the others); the handle reaches the primary.
    pub fn new(config: DataplaneConfig) -> Result<(Self, DataplaneHandle), DataplaneError> {
        let threads = config.threads.max(1);
        let forwarder = Arc::new(Mutex::new(Forwarder::new(config.fdb.clone())));
        let (mut primary, handle) =
            Self::worker(&config, 0, threads, Arc::clone(&forwarder), None)?;
        for worker in 1..threads {
            let (dataplane, worker_handle) = Self::worker(
                &config,
                worker,
                threads,
                Arc::clone(&forwarder),
                Some(handle.clone()),
            )?;
            primary.workers.idle.push(dataplane);
            primary.workers.handles.push(worker_handle);
        }
        Ok((primary, handle))
    }

    fn worker(
        config: &DataplaneConfig,
        worker: usize,
        threads: usize,
        forwarder: Arc<Mutex<Forwarder>>,
        primary: Option<DataplaneHandle>,
    ) -> Result<(Self, DataplaneHandle), DataplaneError> {
        let poll = Poll::new().map_err(DataplaneError::Poll)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(DataplaneError::Poll)?);
        let (tx, rx) = mpsc::channel();
        let dataplane = Self {
            worker,
            threads,
            poll,
            commands: rx,
            ports: Vec::new(),
            removed: Vec::new(),
            forwarder,
            workers: Workers::default(),
            primary,
            ready: VecDeque::new(),
            held_back: Vec::new(),
            buffer: vec![0; BUFFER_LEN].into_boxed_slice(),
            egress: Vec::new(),
            dead: Vec::new(),
            poll_budget: config.poll_budget.max(1),
            idle_poll: config.idle_poll,
            segmenter: Segmenter::new(),
            events: EventSink::default(),
            loop_stats: LoopStats::default(),
        };
        let handle = DataplaneHandle {
            commands: tx,
            waker,
        };
        Ok((dataplane, handle))
    }

    /// Adds a port in the first free slot; its queues are spread over the workers.
    pub fn add_port(&mut self, port: Box<dyn Port>, mtu: u32) -> Result<PortId, DataplaneError> {
        let index = self
            .ports
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.ports.len());
        let id = PortId(index as u32);
        let port: Arc<dyn Port> = Arc::from(port);
        self.forwarder().add_port(id, PortPolicy::default())?;
        let queues = port.queues().clamp(1, MAX_QUEUES);
        let mut reads: Vec<QueueMask> = vec![0; self.threads];
        for queue in 0..queues {
            reads[(index + queue) % self.threads] |= 1 << queue;
        }
        if let Err(e) = self.attach(id, Arc::clone(&port), mtu, reads[0]) {
            // Not registered, so not a port: undo the forwarder's half.
            let _ = self.forwarder().remove_port(id);
            return Err(e);
        }
        for (i, worker) in self.workers.idle.iter_mut().enumerate() {
            worker.attach(id, Arc::clone(&port), mtu, reads[i + 1])?;
        }
        for (i, worker) in self.workers.handles.iter().enumerate() {
            if self.workers.threads.is_empty() {
                break; // not running yet: attached directly above
            }
            worker.send(Command::Attach {
                id,
                port: Arc::clone(&port),
                mtu,
                reads: reads[i + 1],
            })?;
        }
        info!(port = port.name(), id = id.0, mtu, queues, "port added");
        self.events.emit(|| Event::PortAdded {
            port: id,
            name: port.name().to_owned(),
            mtu,
        });
        Ok(id)
    }

    /// Sends events to a bounded channel of `capacity` from now on; events
    /// that do not fit are dropped and counted (`Snapshot::events_dropped`).
    /// Call before [`Dataplane::run`], so that every worker gets a sender.
    pub fn subscribe_events(&mut self, capacity: usize) -> Receiver<Event> {
        let (sender, receiver) = mpsc::sync_channel(capacity);
        for worker in &mut self.workers.idle {
            worker.events.sender = Some(sender.clone());
        }
        self.events.sender = Some(sender);
        receiver
    }

    /// Puts a port in this worker's table, and the queues it reads in its epoll.
    fn attach(
        &mut self,
        id: PortId,
        port: Arc<dyn Port>,
        mtu: u32,
        reads: QueueMask,
    ) -> Result<(), DataplaneError> {
        let index = id.index();
        for queue in queues_of(reads) {
            let registered = self.poll.registry().register(
                &mut SourceFd(&port.raw_fd(queue)),
                token(id, queue),
                Interest::READABLE,
            );
            if let Err(source) = registered {
                for earlier in queues_of(reads).take_while(|&q| q < queue) {
                    let _ = self
                        .poll
                        .registry()
                        .deregister(&mut SourceFd(&port.raw_fd(earlier)));
                }
                return Err(DataplaneError::Register {
                    name: port.name().to_owned(),
                    source,
                });
            }
        }
        let slot = PortSlot {
            port,
            mtu,
            link_up: true,
            counters: PortCounters::default(),
            reads,
            // Frames may have queued before registration; edge-triggered epoll
            // would not report them, so start on the ready list.
            ready: reads,
        };
        if index >= self.ports.len() {
            self.ports.resize_with(index + 1, || None);
        }
        self.ports[index] = Some(slot);
        self.ready.extend(queues_of(reads).map(|queue| (id, queue)));
        Ok(())
    }

    /// The shared forwarder (policies, MAC table, flap detection), locked.
    /// A worker that panicked while holding it cannot have left it in a
    /// state worse than stopping the switch would, so poisoning is ignored.
    pub fn forwarder(&self) -> MutexGuard<'_, Forwarder> {
        self.forwarder.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current counters (of every worker, on the primary) and MAC table.
    pub fn snapshot(&self) -> Snapshot {
        self.gather(true)
    }

    /// The current counters, without the MAC table's entries.
    pub fn counters(&self) -> Snapshot {
        self.gather(false)
    }

    fn gather(&self, with_fdb: bool) -> Snapshot {
        let mut snapshot = self.local_snapshot(with_fdb);
        // Before `run`, the other workers are right here; after, they answer
        // on their channels (asking an idle one would wait forever).
        for worker in &self.workers.idle {
            snapshot.merge_counters(&worker.local_snapshot(false));
        }
        if !self.workers.threads.is_empty() {
            for worker in &self.workers.handles {
                if let Ok(theirs) = worker.request(Command::Counters) {
                    snapshot.merge_counters(&theirs);
                }
            }
        }
        snapshot
    }

    /// This worker's counters, and the MAC table when asked.
    fn local_snapshot(&self, with_fdb: bool) -> Snapshot {
        let now = Instant::now();
        let forwarder = self.forwarder();
        Snapshot {
            ports: self
                .ports
                .iter()
                .enumerate()
                .filter_map(|(i, slot)| {
                    let id = PortId(i as u32);
                    Some(slot.as_ref()?.snapshot(id, forwarder.port(id)))
                })
                .collect(),
            removed_ports: self.removed.clone(),
            fdb: if with_fdb {
                forwarder.fdb().entries(now)
            } else {
                Vec::new()
            },
            fdb_size: forwarder.fdb().len(),
            fdb_counters: forwarder.fdb().counters(),
            mac_flaps: if with_fdb {
                forwarder.mac_flaps(now)
            } else {
                Vec::new()
            },
            loop_stats: self.loop_stats.clone(),
            events_dropped: self.events.dropped,
        }
    }

    /// The id of the port named `name`.
    fn port_id(&self, name: &str) -> Result<PortId, DataplaneError> {
        self.ports
            .iter()
            .position(|slot| slot.as_ref().is_some_and(|s| s.port.name() == name))
            .map(|i| PortId(i as u32))
            .ok_or_else(|| DataplaneError::UnknownPort {
                name: name.to_owned(),
            })
    }

    /// Applies `update` to port `id`; returns its state afterwards.
    pub fn update_port(
        &mut self,
        id: PortId,
        update: &PortUpdate,
    ) -> Result<PortSnapshot, DataplaneError> {
        if !matches!(self.ports.get(id.index()), Some(Some(_))) {
            return Err(DataplaneError::UnknownPort {
                name: format!("#{id}"),
            });
        }
        // What actually changes: only that is logged and reported.
        let mut changed = PortUpdate::default();
        let mut forwarder = self.forwarder.lock().unwrap_or_else(|e| e.into_inner());
        let current = forwarder.port(id).cloned().unwrap_or_default();
        let mut policy = update.policy.clone().unwrap_or_else(|| current.clone());
        policy.enabled = update.enabled.unwrap_or(current.enabled);
        if policy != current {
            // First, and validated whole: if it is refused, nothing has changed.
            forwarder.set_policy(id, policy.clone())?;
            if policy.enabled != current.enabled {
                changed.enabled = Some(policy.enabled);
            }
            let rest_changed = PortPolicy {
                enabled: current.enabled,
                ..policy.clone()
            } != current;
            if rest_changed {
                changed.policy = Some(policy);
            }
        }
        let slot = self.ports[id.index()].as_mut().expect("checked above");
        if let Some(mtu) = update.mtu.filter(|&mtu| mtu != slot.mtu) {
            slot.mtu = mtu;
            changed.mtu = Some(mtu);
            for worker in &self.workers.handles {
                // A stopped worker has no MTU to check.
                let _ = worker.send(Command::SetMtu { id, mtu });
            }
        }
        let snapshot = slot.snapshot(id, forwarder.port(id));
        drop(forwarder);
        if !changed.is_empty() {
            // As JSON: the changed settings only, without Rust's `Some(..)`.
            let settings = serde_json::to_string(&changed).unwrap_or_default();
            info!(port = %snapshot.name, id = id.0, changed = %settings, "port changed");
            self.events.emit(|| Event::PortChanged {
                port: id,
                name: snapshot.name.clone(),
                update: changed,
            });
        }
        Ok(snapshot)
    }

    /// Starts the other workers on their threads.
    fn start_workers(&mut self) -> Result<(), DataplaneError> {
        for mut worker in std::mem::take(&mut self.workers.idle) {
            let index = worker.worker;
            let thread = std::thread::Builder::new()
                .name(format!("tapswitch-dp{index}"))
                .spawn(move || worker.run())
                .map_err(|source| DataplaneError::Spawn {
                    worker: index,
                    source,
                })?;
            self.workers.threads.push(thread);
        }
        Ok(())
    }

    /// Stops the other workers and merges their final counters into `snapshot`.
    fn stop_workers(&mut self, snapshot: &mut Snapshot) -> Result<(), DataplaneError> {
        for worker in &self.workers.handles {
            // A worker that already stopped has nothing more to say.
            let _ = worker.shutdown();
        }
        let mut result = Ok(());
        for (i, thread) in std::mem::take(&mut self.workers.threads)
            .into_iter()
            .enumerate()
        {
            match thread.join() {
                Ok(Ok(theirs)) => snapshot.merge_counters(&theirs),
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(DataplaneError::WorkerPanicked { worker: i + 1 }),
            }
        }
        result
    }

    /// Runs until a [`Command::Shutdown`]; returns the final snapshot. The
    /// ports (and so the TAPs) are dropped when the dataplane is.
    pub fn run(&mut self) -> Result<Snapshot, DataplaneError> {
        self.start_workers()?;
        let result = self.run_loop();
        let mut snapshot = match result {
            Ok(()) => self.local_snapshot(true),
            Err(e) => {
                let mut ignored = self.local_snapshot(false);
                let _ = self.stop_workers(&mut ignored);
                return Err(e);
            }
        };
        self.stop_workers(&mut snapshot)?;
        Ok(snapshot)
    }

    fn run_loop(&mut self) -> Result<(), DataplaneError> {
        let mut events = Events::with_capacity(256);
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING_INTERVAL;
        // Until this instant the loop polls epoll without sleeping: a request
        // that just got an answer is often followed by the next one within
        // microseconds, and sleeping in between costs a wakeup on both sides.
        let mut spin_until = Instant::now();
        loop {
            let now = Instant::now();
            let next_wakeup = self
                .release_held_back(now)
                .map_or(next_housekeeping, |resume| resume.min(next_housekeeping));
            let timeout = if !self.ready.is_empty() || now < spin_until {
                Duration::ZERO
            } else {
                next_wakeup.saturating_duration_since(now)
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(DataplaneError::Wait(e)),
            }
            self.loop_stats.iterations += 1;
            let turn_started = Instant::now();
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                let Token(token) = event.token();
                self.mark_ready(PortId((token / MAX_QUEUES) as u32), token % MAX_QUEUES);
            }
            if self.serve_commands() {
                return Ok(());
            }
            let frames = self.serve_ready_ports();
            let now = Instant::now();
            if frames > 0 {
                spin_until = now + self.idle_poll;
                self.loop_stats.record_turn(now - turn_started);
            }
            if self.primary.is_none() && now >= next_housekeeping {
                let expired = self.forwarder().fdb_mut().expire(now);
                if expired > 0 {
                    debug!(expired, "MAC entries aged out");
                }
                next_housekeeping = now + HOUSEKEEPING_INTERVAL;
            }
        }
    }

    /// Handles pending control commands; true when asked to shut down.
    fn serve_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Shutdown) => return true,
                Ok(Command::Snapshot(reply)) => {
                    // The requester may have given up waiting; nothing to do then.
                    let _ = reply.send(self.snapshot());
                }
                Ok(Command::Attach {
                    id,
                    port,
                    mtu,
                    reads,
                }) => {
                    if let Err(e) = self.attach(id, port, mtu, reads) {
                        warn!(worker = self.worker, error = %e, "attaching a port failed");
                        self.dead.push(id);
                    }
                }
                Ok(Command::Counters(reply)) => {
                    let _ = reply.send(self.counters());
                }
                Ok(Command::ExportPorts(reply)) => {
                    let ports = self.ports.iter().flatten();
                    let _ = reply.send(ports.map(|slot| Arc::clone(&slot.port)).collect());
                }
                Ok(Command::Detach(id)) => {
                    self.forget_port(id);
                }
                Ok(Command::SetMtu { id, mtu }) => {
                    if let Some(Some(slot)) = self.ports.get_mut(id.index()) {
                        slot.mtu = mtu;
                    }
                }
                Ok(Command::PortFailed { id, counters }) => {
                    self.remove_failed_port(id, Some(counters));
                }
                Ok(command) => self.serve_control(command),
                Err(TryRecvError::Empty) => return false,
                // Every handle is gone: nobody can ever stop us, so stop now.
                Err(TryRecvError::Disconnected) => return true,
            }
        }
    }

    /// Carries out a control-plane change and replies. A requester that gave up
    /// waiting loses only its answer: the change stands.
    fn serve_control(&mut self, command: Command) {
        match command {
            Command::AddPort {
                port,
                mtu,
                settings,
                reply,
            } => {
                let _ = reply.send(self.add_configured_port(port, mtu, &settings));
            }
            Command::RemovePort { name, cause, reply } => {
                let result = self.port_id(&name).map(|id| {
                    let (port, last) = self
                        .take_port(id, cause, None)
                        .expect("port_id found a live slot");
                    RemovedPort { port, last }
                });
                // Nobody took the port back: it is closed here, then.
                let _ = reply.send(result);
            }
            Command::SetLinkState { name, up } => {
                if let Ok(id) = self.port_id(&name) {
                    self.set_link_state(id, up);
                }
            }
            Command::PortMoved { name, netns } => {
                if let Ok(id) = self.port_id(&name) {
                    info!(port = %name, netns = netns.as_deref().unwrap_or("-"), "port's netdev moved");
                    self.events.emit(|| Event::PortMoved { port: id, netns });
                }
            }
            Command::UpdatePort {
                name,
                update,
                reply,
            } => {
                let result = self
                    .port_id(&name)
                    .and_then(|id| self.update_port(id, &update));
                let _ = reply.send(result);
            }
            Command::FdbAdd {
                vlan,
                mac,
                port,
                reply,
            } => {
                let result = self.port_id(&port).and_then(|id| {
                    self.forwarder().fdb_mut().add_static(vlan, mac, id)?;
                    info!(%mac, vlan, port = %port, "static MAC entry added");
                    self.events.emit(|| Event::FdbStaticAdded {
                        vlan,
                        mac,
                        port: id,
                    });
                    Ok(())
                });
                let _ = reply.send(result);
            }
            Command::FdbRemove { vlan, mac, reply } => {
                let removed = self.forwarder().fdb_mut().remove(vlan, mac);
                if removed {
                    info!(%mac, vlan, "MAC entry removed");
                    self.events.emit(|| Event::FdbRemoved { vlan, mac });
                }
                let _ = reply.send(removed);
            }
            Command::FdbFlush { port, reply } => {
                let result = match port {
                    None => Ok((None, self.forwarder().fdb_mut().flush())),
                    Some(name) => self
                        .port_id(&name)
                        .map(|id| (Some(id), self.forwarder().fdb_mut().flush_port(id))),
                };
                let result = result.map(|(port, removed)| {
                    // No port field at all when every port's entries went.
                    info!(port = port.map(|id| id.0), removed, "MAC table flushed");
                    self.events.emit(|| Event::FdbFlushed { port, removed });
                    removed
                });
                let _ = reply.send(result);
            }
            Command::Shutdown
            | Command::Snapshot(_)
            | Command::Counters(_)
            | Command::ExportPorts(_)
            | Command::Attach { .. }
            | Command::Detach(_)
            | Command::SetMtu { .. }
            | Command::PortFailed { .. } => unreachable!("served by serve_commands"),
        }
    }

    /// Adds a port sent by the control plane, refusing a second port of the same name.
    fn add_configured_port(
        &mut self,
        port: Box<dyn Port>,
        mtu: u32,
        settings: &PortUpdate,
    ) -> Result<PortSnapshot, DataplaneError> {
        if self.port_id(port.name()).is_ok() {
            return Err(DataplaneError::PortExists {
                name: port.name().to_owned(),
            });
        }
        let id = self.add_port(port, mtu)?;
        self.update_port(id, settings)
    }

    /// Records the netdev state of port `id`; a change is logged and reported.
    fn set_link_state(&mut self, id: PortId, up: bool) {
        let Some(Some(slot)) = self.ports.get_mut(id.index()) else {
            return;
        };
        if slot.link_up == up {
            return;
        }
        slot.link_up = up;
        if up {
            info!(port = slot.port.name(), "link up; forwarding again");
            self.events.emit(|| Event::PortLinkUp { port: id });
        } else {
            warn!(
                port = slot.port.name(),
                "link down; frames to it are dropped as link_down"
            );
            self.events.emit(|| Event::PortLinkDown { port: id });
        }
    }

    fn mark_ready(&mut self, id: PortId, queue: usize) {
        let bit = 1 << queue;
        if let Some(Some(slot)) = self.ports.get_mut(id.index())
            && slot.reads & bit != 0
            && slot.ready & bit == 0
        {
            slot.ready |= bit;
            self.ready.push_back((id, queue));
        }
    }

    /// Puts the held-back queues whose time has come back on the ready list;
    /// returns when the next of the others is due.
    fn release_held_back(&mut self, now: Instant) -> Option<Instant> {
        let mut index = 0;
        while index < self.held_back.len() {
            let (id, queue, resume) = self.held_back[index];
            if resume > now {
                index += 1;
                continue;
            }
            self.held_back.swap_remove(index);
            let Some(Some(slot)) = self.ports.get(id.index()) else {
                continue;
            };
            // Registering again reports the frames already waiting, too.
            let registered = self.poll.registry().register(
                &mut SourceFd(&slot.port.raw_fd(queue)),
                token(id, queue),
                Interest::READABLE,
            );
            match registered {
                Ok(()) => self.ready.push_back((id, queue)),
                Err(error) => {
                    warn!(port = slot.port.name(), %error, "cannot wait for the port again; removing it");
                    self.dead.push(id);
                }
            }
        }
        for dead in std::mem::take(&mut self.dead) {
            self.remove_port(dead);
        }
        self.held_back.iter().map(|&(_, _, resume)| resume).min()
    }

    /// One pass over the ready list: each port gets up to `poll_budget` units of work.
    /// Returns the number of frames read.
    fn serve_ready_ports(&mut self) -> usize {
        let mut frames = 0;
        for _ in 0..self.ready.len() {
            let Some((id, queue)) = self.ready.pop_front() else {
                break;
            };
            let (read, drained, policed) = self.serve_port(id, queue);
            self.loop_stats.record_batch(read);
            frames += read;
            match self.ports.get_mut(id.index()) {
                // A port that used its whole turn on frames over its storm-control
                // rates waits before its next: it still gets its share of what
                // the loop does, but flooding cannot make the switch read for it
                // as fast as it writes. Its TAP queue keeps the rest, or drops it.
                // Out of epoll meanwhile: every frame it queues would wake the loop.
                Some(Some(slot)) if !drained && policed * 2 > read => {
                    let _ = self
                        .poll
                        .registry()
                        .deregister(&mut SourceFd(&slot.port.raw_fd(queue)));
                    self.held_back
                        .push((id, queue, Instant::now() + STORM_HOLD_BACK));
                }
                Some(Some(_)) if !drained => self.ready.push_back((id, queue)),
                Some(Some(slot)) => slot.ready &= !(1 << queue),
                _ => {}
            }
            for dead in std::mem::take(&mut self.dead) {
                self.remove_port(dead);
            }
        }
        frames
    }

    /// Reads and forwards frames from queue `queue` of `ingress` until their
    /// writes add up to `poll_budget` (a frame that goes nowhere counts as one).
    /// Returns the frames read, true when the queue is drained (or the port
    /// gone) and false when the budget ran out, and how many of the frames
    /// storm control dropped.
    fn serve_port(&mut self, ingress: PortId, queue: usize) -> (usize, bool, usize) {
        let now = Instant::now();
        let (mut frames, mut work, mut policed) = (0, 0, 0);
        while work < self.poll_budget {
            let Some(Some(slot)) = self.ports.get_mut(ingress.index()) else {
                return (frames, true, policed);
            };
            let len = match slot.port.recv(queue, &mut self.buffer) {
                Ok(len) => len,
                Err(e) => match classify_recv_error(&e) {
                    RecvFailure::Retry => continue,
                    RecvFailure::Empty => return (frames, true, policed),
                    RecvFailure::PortGone => {
                        warn!(port = slot.port.name(), error = %e, "reading failed; removing the port");
                        self.dead.push(ingress);
                        return (frames, true, policed);
                    }
                },
            };
            frames += 1;
            match self.forward_frame(ingress, len, now) {
                Handled::Written(ports) => work += ports.max(1),
                Handled::Policed => {
                    work += 1;
                    policed += 1;
                }
            }
        }
        (frames, false, policed)
    }

    /// Forwards the frame of `len` bytes in the buffer, read from `ingress`.
    fn forward_frame(&mut self, ingress: PortId, len: usize, now: Instant) -> Handled {
        let Self {
            ports,
            forwarder,
            buffer,
            egress,
            dead,
            segmenter,
            events,
            ..
        } = self;
        let packet = &buffer[..len];
        let Some(Some(in_slot)) = ports.get_mut(ingress.index()) else {
            return Handled::Written(0);
        };
        let hdr_len = in_slot.port.vnet_hdr_len();
        in_slot.counters.rx_frames += 1;
        in_slot.counters.rx_bytes += len as u64;

        let header = if hdr_len > 0 {
            match VnetHeader::new(packet) {
                Some(header) => Some(header),
                None => {
                    in_slot.counters.drops.count(DropReason::Runt);
                    return Handled::Written(0);
                }
            }
        } else {
            None
        };
        let frame = &packet[hdr_len..];
        let offload = match header.map(|h| h.validate(frame)) {
            None => Offload::PLAIN,
            Some(Ok(offload)) => offload,
            Some(Err(error)) => {
                debug!(port = in_slot.port.name(), %error, "bad vnet header");
                in_slot.counters.drops.count(DropReason::BadVnetHeader);
                return Handled::Written(0);
            }
        };
        let is_gso = offload.segmentation.is_some();
        // A super-frame whose segments would not fit the port's MTU is a giant in
        // disguise: the endpoint could not have sent those segments as frames.
        let too_big = match offload.segmentation {
            Some(layout) => !layout.fits_mtu(in_slot.mtu as usize),
            None => frame.len() > in_slot.max_frame_len(),
        };
        if too_big {
            in_slot.counters.drops.count(DropReason::Oversize);
            return Handled::Written(0);
        }

        // The lock is held for the decision only, never across a syscall.
        let mut forwarder = forwarder.lock().unwrap_or_else(|e| e.into_inner());
        let (verdict, learned) = forwarder.decide(ingress, frame, now, egress);
        events.learned(ingress, frame, learned);
        if let Learned::Moved { from } = learned {
            in_slot.counters.mac_moves += 1;
            debug!(port = in_slot.port.name(), from = from.0, "MAC moved");
        }
        if let Verdict::Drop(reason) = verdict {
            in_slot.counters.drops.count(reason);
        }
        if forwarder.has_events() {
            report_forward_events(&mut forwarder, ports, events);
        }
        drop(forwarder);
        match verdict {
            Verdict::Drop(reason) if reason.is_storm() => return Handled::Policed,
            Verdict::Drop(_) => return Handled::Written(0),
            Verdict::Forward => {}
        }

        for &Egress { port: out, tag } in egress.iter() {
            let Some(Some(out_slot)) = ports.get_mut(out.index()) else {
                continue;
            };
            let out_hdr_len = out_slot.port.vnet_hdr_len();
            if let Some(layout) = offload.segmentation
                && out_hdr_len > 0
                && !layout.fits_mtu(out_slot.mtu as usize)
            {
                // Handed over whole, its segments would be bigger than this port's
                // MTU allows a frame to be (software segmentation, below, cuts TCP to
                // fit a port without offloads instead).
                out_slot.counters.drops.count(DropReason::Oversize);
                continue;
            }
            let result = if out_hdr_len == 0 && !offload.is_plain() {
                // A port without offloads takes only complete, MTU-sized frames.
                if tag != TagAction::AsIs {
                    // Segmenting and retagging at once is not built (yet).
                    out_slot.counters.drops.count(DropReason::NeedsOffload);
                    continue;
                }
                if !send_with_software_offload(segmenter, out_slot, frame, &offload) {
                    dead.push(out);
                }
                continue;
            } else if tag != TagAction::AsIs || !is_gso {
                match send_retagged(out_slot, packet, hdr_len, is_gso, tag) {
                    Some(result) => result,
                    None => continue,
                }
            } else if out_hdr_len == hdr_len {
                out_slot.port.send(packet)
            } else {
                // A super-frame only comes from a port with a vnet header.
                out_slot.port.send_parts(&PLAIN_HEADER, frame)
            };
            let out_len = frame.len().saturating_add_signed(tag.len_change());
            if !account_send(out_slot, result, out_len + out_hdr_len) {
                dead.push(out);
            }
        }
        Handled::Written(egress.len())
    }

    /// Removes a port whose device failed. On the primary: everywhere; on
    /// another worker: here, then the primary is told, which removes it
    /// everywhere else.
    fn remove_port(&mut self, id: PortId) {
        match self.primary.clone() {
            Some(primary) => {
                if let Some(slot) = self.forget_port(id) {
                    // The primary stopping means the whole switch is stopping.
                    let _ = primary.send(Command::PortFailed {
                        id,
                        counters: slot.counters,
                    });
                }
            }
            None => self.remove_failed_port(id, None),
        }
    }

    /// (Primary) removes a failed port everywhere; `counters` are those of the
    /// worker that found it failed, if not this one.
    fn remove_failed_port(&mut self, id: PortId, counters: Option<PortCounters>) {
        if let Some((port, last)) = self.take_port(id, RemovalCause::DeviceError, counters) {
            // Bounded: a port that fails over and over (churn, a flapping VM) must not
            // grow the switch. The newest removal of a name says all there is to say.
            self.removed.retain(|earlier| earlier.name != last.name);
            if self.removed.len() >= MAX_REMOVED_PORTS {
                self.removed.remove(0);
            }
            self.removed.push(last);
            drop(port);
        }
    }

    /// (Primary) takes port `id` out of every worker, the forwarder and the
    /// MAC table; returns it with its last counters, summed over workers.
    fn take_port(
        &mut self,
        id: PortId,
        cause: RemovalCause,
        extra: Option<PortCounters>,
    ) -> Option<(Arc<dyn Port>, PortSnapshot)> {
        if !matches!(self.ports.get(id.index()), Some(Some(_))) {
            return None;
        }
        let mut last = self
            .counters()
            .ports
            .into_iter()
            .find(|p| p.id == id)
            .expect("a live slot is in the snapshot");
        if let Some(extra) = extra {
            last.counters.add(&extra);
        }
        for worker in &self.workers.handles {
            let _ = worker.send(Command::Detach(id));
        }
        // The slot held a port, so the forwarder knows it.
        let _ = self.forwarder().remove_port(id);
        let slot = self.forget_port(id)?;
        info!(port = slot.port.name(), id = id.0, ?cause, "port removed");
        self.events.emit(|| Event::PortRemoved {
            port: id,
            name: last.name.clone(),
            cause,
        });
        Some((slot.port, last))
    }

    /// Drops this worker's slot for `id` (and its epoll registrations).
    fn forget_port(&mut self, id: PortId) -> Option<PortSlot> {
        let slot = self.ports.get_mut(id.index()).and_then(Option::take)?;
        for queue in queues_of(slot.reads) {
            // The fd may already be invalid in the kernel's eyes; epoll forgets it on close anyway.
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&slot.port.raw_fd(queue)));
        }
        self.ready.retain(|&(p, _)| p != id);
        self.held_back.retain(|&(p, _, _)| p != id);
        Some(slot)
    }
}

/// What became of one frame read, for the port's turn.
enum Handled {
    /// Written to this many ports (0: dropped for another reason than storm control).
    Written(usize),
    /// Dropped by storm control.
    Policed,
}

/// Counts the outcome of writing `len` bytes to `slot`; false when the port
/// is gone and must be removed.
fn account_send(slot: &mut PortSlot, result: io::Result<usize>, len: usize) -> bool {
    match result {
        Ok(_) => {
            slot.counters.tx_frames += 1;
            slot.counters.tx_bytes += len as u64;
            true
        }
        Err(e) => match classify_send_error(&e) {
            SendFailure::Dropped(reason) => {
                slot.counters.drops.count(reason);
                true
            }
            SendFailure::PortGone => {
                warn!(port = slot.port.name(), error = %e, "writing failed; removing the port");
                slot.counters.drops.count(DropReason::TxError);
                false
            }
        },
    }
}

/// Gives a frame whose vnet header asked for offloads to a port without a
/// vnet header: a super-frame is cut into segments that fit the port's MTU,
/// a partial checksum is completed on a copy (the read buffer may still go
/// to other ports as it is). False when the port is gone.
fn send_with_software_offload(
    segmenter: &mut Segmenter,
    slot: &mut PortSlot,
    frame: &[u8],
    offload: &Offload,
) -> bool {
    if let Some(layout) = offload.segmentation {
        let max_payload = layout.max_payload_for_mtu(slot.mtu as usize);
        let mut alive = true;
        let segmented = segmenter.segment(frame, &layout, max_payload, |segment| {
            let result = slot.port.send(segment);
            alive = account_send(slot, result, segment.len());
            if alive {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        });
        if segmented.is_err() {
            // The MTU leaves no room for payload, or UDP datagrams exceed it.
            slot.counters.drops.count(DropReason::NeedsOffload);
        }
        alive
    } else if let Some(request) = offload.checksum {
        let complete = segmenter.with_checksum(frame, request);
        let result = slot.port.send(complete);
        account_send(slot, result, complete.len())
    } else {
        let result = slot.port.send(frame);
        account_send(slot, result, frame.len())
    }
}

/// Logs what the forwarder reported, counts it on the ports concerned and passes
/// it on as events.
fn report_forward_events(
    forwarder: &mut Forwarder,
    ports: &mut [Option<PortSlot>],
    events: &mut EventSink,
) {
    let lost = forwarder.events_lost();
    for event in forwarder.drain_events() {
        let name = |id: PortId| match ports.get(id.index()) {
            Some(Some(slot)) => slot.port.name().to_owned(),
            _ => format!("#{id}"),
        };
        match event {
            ForwardEvent::MacLimitExceeded {
                port,
                vlan,
                mac,
                limit,
                action,
                suppressed,
            } => {
                let port_name = name(port);
                warn!(port = %port_name, vlan, %mac, limit, %action, suppressed, "MAC limit exceeded");
                events.emit(|| Event::MacLimitExceeded {
                    port,
                    vlan,
                    mac,
                    limit,
                    action,
                    suppressed,
                });
                if action == ViolationAction::Shutdown {
                    warn!(port = %port_name, "port shut down by its MAC limit");
                    if let Some(Some(slot)) = ports.get_mut(port.index()) {
                        slot.counters.shutdowns += 1;
                    }
                    events.emit(|| Event::PortShutdown { port });
                }
            }
            ForwardEvent::MacFlap {
                vlan,
                mac,
                held_on,
                moved_to,
                flaps,
            } => {
                warn!(vlan, %mac, held_on = %name(held_on), moved_to = %name(moved_to), flaps, "MAC flapping between ports; held");
                events.emit(|| Event::MacFlap {
                    vlan,
                    mac,
                    held_on,
                    moved_to,
                    flaps,
                });
                if let Some(Some(slot)) = ports.get_mut(moved_to.index()) {
                    slot.counters.mac_flaps += 1;
                }
            }
        }
    }
    if lost > 0 {
        debug!(lost, "forwarding events lost to a full queue");
    }
}

/// Writes a frame whose VLAN tag changes on the way out (pushed, popped or its VID
/// rewritten), or any complete frame, after checking it against the egress port's MTU.
/// The frame is gathered as [vnet header][addresses][new tag][rest] so that it is never
/// copied; a vnet header's frame offsets move with the tag. `None` when the frame was
/// dropped here (and counted on the egress port).
fn send_retagged(
    out_slot: &mut PortSlot,
    packet: &[u8],
    in_hdr_len: usize,
    is_gso: bool,
    tag: TagAction,
) -> Option<io::Result<usize>> {
    let frame = &packet[in_hdr_len..];
    let view = EthernetFrame::new_unchecked(frame);
    let out_len = frame.len().saturating_add_signed(tag.len_change());
    let out_tagged = match tag {
        TagAction::AsIs => view.vlan().is_some(),
        TagAction::Push(_) | TagAction::SetVid(_) => true,
        TagAction::Pop => false,
    };
    let l2_header = HEADER_LEN + if out_tagged { VLAN_TAG_LEN } else { 0 };
    if !is_gso && out_len.saturating_sub(l2_header) > out_slot.mtu as usize {
        out_slot.counters.drops.count(DropReason::Oversize);
        return None;
    }
    // Frames needing offloads never reach here for a port without them
    // (the caller segments them in software).
    let out_hdr_len = out_slot.port.vnet_hdr_len();
    if tag == TagAction::AsIs {
        return Some(if out_hdr_len == in_hdr_len {
            out_slot.port.send(packet)
        } else if out_hdr_len == 0 {
            out_slot.port.send(frame)
        } else {
            out_slot.port.send_parts(&PLAIN_HEADER, frame)
        });
    }

    let mut vnet = PLAIN_HEADER;
    if out_hdr_len > 0 && in_hdr_len > 0 {
        vnet.copy_from_slice(&packet[..VNET_HDR_LEN]);
        shift_frame_offsets(&mut vnet, tag.len_change());
    }
    let vnet: &[u8] = if out_hdr_len > 0 { &vnet } else { &[] };
    let (new_tag, rest) = match tag {
        TagAction::AsIs => unreachable!("handled above"),
        TagAction::Push(vid) => (Some(vid), &frame[12..]),
        TagAction::SetVid(vid) => {
            let old_tci = u16::from_be_bytes([frame[14], frame[15]]);
            (Some((old_tci & 0xf000) | vid), &frame[HEADER_LEN + 2..])
        }
        TagAction::Pop => (None, &frame[HEADER_LEN + 2..]),
    };
    let mut tag_bytes = [0u8; VLAN_TAG_LEN];
    let tag_bytes: &[u8] = match new_tag {
        Some(tci) => {
            tag_bytes[..2].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
            tag_bytes[2..].copy_from_slice(&tci.to_be_bytes());
            &tag_bytes
        }
        None => &[],
    };
    let parts = [
        io::IoSlice::new(vnet),
        io::IoSlice::new(&frame[..12]),
        io::IoSlice::new(tag_bytes),
        io::IoSlice::new(rest),
    ];
    Some(out_slot.port.send_vectored(&parts))
}

#[derive(Debug, PartialEq, Eq)]
enum SendFailure {
    Dropped(DropReason),
    PortGone,
}

/// A TAP refuses one frame (bad vnet header, too big, queue full) with these
/// errors, and every frame while its netdev is down (EIO: a state, not a
/// failure); anything else (EBADFD after the device was deleted) means the
/// device itself is gone.
fn classify_send_error(error: &io::Error) -> SendFailure {
    match error.raw_os_error() {
        Some(libc::EIO) => SendFailure::Dropped(DropReason::LinkDown),
        Some(libc::EAGAIN | libc::ENOBUFS | libc::ENOMEM) => {
            SendFailure::Dropped(DropReason::TxQueueFull)
        }
        Some(libc::EINVAL | libc::EMSGSIZE | libc::EFAULT) => {
            SendFailure::Dropped(DropReason::TxRejected)
        }
        Some(libc::EINTR) => SendFailure::Dropped(DropReason::TxQueueFull),
        _ => SendFailure::PortGone,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum RecvFailure {
    /// Interrupted: read again.
    Retry,
    /// Nothing to read now: the queue is empty, or the netdev is down (EIO),
    /// when the TAP delivers nothing until it is up again.
    Empty,
    /// The device is gone (EBADFD after deletion, or anything unexpected).
    PortGone,
}

fn classify_recv_error(error: &io::Error) -> RecvFailure {
    match error.raw_os_error() {
        Some(libc::EINTR) => RecvFailure::Retry,
        Some(libc::EIO) => RecvFailure::Empty,
        _ if error.kind() == io::ErrorKind::WouldBlock => RecvFailure::Empty,
        _ => RecvFailure::PortGone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::{ForwardError, VlanMode};
    use crate::port::TapPort;
    use crate::tap::{Tap, TapOptions};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A dataplane (not running: its methods are called directly) with one real
    /// host-side TAP, deleted when the dataplane drops.
    fn dataplane_with_a_port() -> (Dataplane, PortId, Receiver<Event>) {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "tdp{}x{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let (mut dataplane, _handle) = Dataplane::new(DataplaneConfig {
            poll_budget: 64,
            idle_poll: Duration::ZERO,
            threads: 1,
            fdb: FdbConfig::default(),
        })
        .unwrap();
        let events = dataplane.subscribe_events(64);
        let tap = Tap::open(&name, &TapOptions::default()).expect("opening a TAP");
        let id = dataplane
            .add_port(Box::new(TapPort::new(tap)), 1500)
            .unwrap();
        (dataplane, id, events)
    }

    fn access(vlan: u16) -> PortPolicy {
        PortPolicy {
            vlan: VlanMode::Access { vlan },
            ..PortPolicy::default()
        }
    }

    #[test]
    fn a_down_link_is_a_drop_and_a_deleted_device_removes_the_port() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(
            classify_send_error(&os(libc::EIO)),
            SendFailure::Dropped(DropReason::LinkDown)
        );
        assert_eq!(
            classify_send_error(&os(libc::EAGAIN)),
            SendFailure::Dropped(DropReason::TxQueueFull)
        );
        assert_eq!(
            classify_send_error(&os(libc::EINVAL)),
            SendFailure::Dropped(DropReason::TxRejected)
        );
        for gone in [libc::EBADFD, libc::ENODEV, libc::ENXIO, libc::EBADF] {
            assert_eq!(classify_send_error(&os(gone)), SendFailure::PortGone);
            assert_eq!(classify_recv_error(&os(gone)), RecvFailure::PortGone);
        }
        assert_eq!(classify_recv_error(&os(libc::EIO)), RecvFailure::Empty);
        assert_eq!(classify_recv_error(&os(libc::EAGAIN)), RecvFailure::Empty);
        assert_eq!(classify_recv_error(&os(libc::EINTR)), RecvFailure::Retry);
    }

    #[test]
    fn link_state_changes_are_reported_once_and_the_port_stays() {
        let (mut dataplane, id, events) = dataplane_with_a_port();
        for up in [false, false, true, true] {
            dataplane.set_link_state(id, up);
        }
        let rendered: Vec<String> = events
            .try_iter()
            .filter(|e| matches!(e, Event::PortLinkDown { .. } | Event::PortLinkUp { .. }))
            .map(|e| serde_json::to_string(&e).unwrap())
            .collect();
        assert_eq!(
            rendered,
            [
                format!(r#"{{"event":"port_link_down","port":{}}}"#, id.0),
                format!(r#"{{"event":"port_link_up","port":{}}}"#, id.0),
            ]
        );
        let snapshot = dataplane.counters();
        assert!(snapshot.ports[0].link_up, "{:?}", snapshot.ports[0]);
    }

    #[test]
    fn an_invalid_update_changes_nothing() {
        let (mut dataplane, id, events) = dataplane_with_a_port();
        dataplane
            .update_port(
                id,
                &PortUpdate {
                    policy: Some(access(10)),
                    ..PortUpdate::default()
                },
            )
            .unwrap();
        let mut bad = access(20);
        bad.security.mac_limit = Some(0);
        let error = dataplane
            .update_port(
                id,
                &PortUpdate {
                    mtu: Some(9000),
                    enabled: Some(false),
                    policy: Some(bad),
                },
            )
            .unwrap_err();
        assert!(
            matches!(
                error,
                DataplaneError::Forward(ForwardError::InvalidPolicy { .. })
            ),
            "{error}"
        );
        let snapshot = dataplane.update_port(id, &PortUpdate::default()).unwrap();
        assert_eq!((snapshot.mtu, snapshot.enabled), (1500, true));
        assert_eq!(dataplane.forwarder().port(id), Some(&access(10)));
        let changes: Vec<Event> = events
            .try_iter()
            .filter(|e| matches!(e, Event::PortChanged { .. }))
            .collect();
        assert_eq!(
            changes.len(),
            1,
            "only the valid update is reported: {changes:?}"
        );
    }

    #[test]
    fn a_policy_keeps_the_ports_state_unless_told() {
        let (mut dataplane, id, events) = dataplane_with_a_port();
        let disable = PortUpdate {
            enabled: Some(false),
            ..PortUpdate::default()
        };
        dataplane.update_port(id, &disable).unwrap();
        // A new policy (whose own `enabled` is true) leaves a disabled port disabled.
        let snapshot = dataplane
            .update_port(
                id,
                &PortUpdate {
                    policy: Some(access(20)),
                    ..PortUpdate::default()
                },
            )
            .unwrap();
        assert!(!snapshot.enabled);
        assert_eq!(
            dataplane.forwarder().port(id).map(|p| p.vlan.clone()),
            Some(VlanMode::Access { vlan: 20 })
        );
        let rendered: Vec<String> = events
            .try_iter()
            .filter(|e| matches!(e, Event::PortChanged { .. }))
            .map(|e| serde_json::to_string(&e).unwrap())
            .collect();
        assert_eq!(rendered.len(), 2, "{rendered:?}");
        assert!(
            rendered[0].contains(r#""update":{"enabled":false}"#),
            "{rendered:?}"
        );
        assert!(
            rendered[1].contains(r#""update":{"policy":true}"#),
            "{rendered:?}"
        );
        // The same policy again is no change at all.
        dataplane
            .update_port(
                id,
                &PortUpdate {
                    policy: Some(access(20)),
                    ..PortUpdate::default()
                },
            )
            .unwrap();
        assert_eq!(events.try_iter().count(), 0);
    }
}
