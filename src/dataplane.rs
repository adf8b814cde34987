//! The event loop: reads frames from ready ports, asks the pure [`Forwarder`]
//! where each goes, and writes it there.
//!
//! mio is edge-triggered: a readiness event arrives once per transition, so a
//! port that signalled stays on the *ready list* until a read returns
//! `WouldBlock`. Each turn serves every ready port for at most `poll_budget`
//! frames, so one busy port cannot starve the rest. One buffer serves every
//! frame: read once, written to each egress port, never copied or allocated.
//!
//! The control plane talks to the loop only through a channel and a mio
//! [`Waker`]: the loop never blocks on anything but `epoll_wait`.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use serde::{Deserialize, Serialize, Serializer};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::fdb::{FdbConfig, FdbCounters, FdbEntry, FdbError, Learned, PortId, VlanId};
use crate::forward::{DropReason, Forwarder, PortPolicy, Verdict};
use crate::port::Port;
use crate::vnet::{PLAIN_HEADER, VnetHeader};
use crate::wire::{HEADER_LEN, MacAddr, VLAN_TAG_LEN};

/// Token of the control-plane waker; ports use their slot index.
const WAKER: Token = Token(usize::MAX);

/// Largest frame a port can hand over: a 64 KiB super-frame plus its vnet header.
const BUFFER_LEN: usize = 65536 + crate::vnet::VNET_HDR_LEN;

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
        reply: Sender<Result<RemovedPort, DataplaneError>>,
    },
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
}

/// Settings of a running port that the control plane can change; `None`
/// leaves a setting as it is. A new per-port switch becomes a field here and a
/// line in [`Dataplane::update_port`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortUpdate {
    /// Largest frame accepted (plus Ethernet header and one VLAN tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// A disabled port neither receives nor sends frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl PortUpdate {
    pub fn is_empty(&self) -> bool {
        *self == PortUpdate::default()
    }
}

/// A port taken out of the dataplane, with its last counters.
pub struct RemovedPort {
    pub port: Box<dyn Port>,
    pub last: PortSnapshot,
}

/// Why a port left the dataplane.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalCause {
    /// The control plane asked.
    Requested,
    /// Reading or writing failed with an error other than a full queue
    /// (e.g. the TAP was deleted under us).
    DeviceError,
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
}

/// Where events go: a bounded channel filled with `try_send`, so a slow
/// reader costs lost events (counted), never a stalled loop.
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

/// How the loop spends its turns.
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
}

/// Per-port counters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PortCounters {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Source MACs that moved onto this port from another.
    pub mac_moves: u64,
    /// Frames dropped, by reason: at ingress for frames read from this port,
    /// at egress for frames that could not be written to it.
    pub drops: DropCounters,
}

/// Drop counters indexed by [`DropReason`]; serialised as `{reason: count}`.
#[derive(Clone, Debug, Default)]
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
    pub enabled: bool,
    pub counters: PortCounters,
}

/// The state of the switch at one instant.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub ports: Vec<PortSnapshot>,
    /// Ports removed after an I/O error (e.g. their TAP was deleted), with their last counters.
    pub removed_ports: Vec<PortSnapshot>,
    pub fdb: Vec<FdbEntry>,
    /// Entries in the MAC table (also when `fdb` was left out).
    pub fdb_size: usize,
    pub fdb_counters: FdbCounters,
    pub loop_stats: LoopStats,
    /// Events lost because their reader fell behind.
    pub events_dropped: u64,
}

impl Snapshot {
    pub fn port(&self, name: &str) -> Option<&PortSnapshot> {
        self.ports.iter().find(|p| p.name == name)
    }
}

/// Settings of the loop.
#[derive(Clone, Debug)]
pub struct DataplaneConfig {
    pub poll_budget: usize,
    /// How long to keep polling without sleeping after the last frame.
    pub idle_poll: Duration,
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
    port: Box<dyn Port>,
    mtu: u32,
    counters: PortCounters,
    /// On the ready list (it signalled and has not yet returned `WouldBlock`).
    ready: bool,
}

impl PortSlot {
    fn snapshot(&self, id: PortId, policy: Option<&PortPolicy>) -> PortSnapshot {
        PortSnapshot {
            id,
            name: self.port.name().to_owned(),
            mtu: self.mtu,
            vnet_hdr: self.port.vnet_hdr_len() > 0,
            enabled: policy.is_some_and(|p| p.enabled),
            counters: self.counters.clone(),
        }
    }

    /// Longest Ethernet frame (no vnet header) accepted from or sent to this
    /// port unless it is an offload super-frame: MTU + header + one VLAN tag.
    fn max_frame_len(&self) -> usize {
        self.mtu as usize + HEADER_LEN + VLAN_TAG_LEN
    }
}

/// The event loop and everything it owns.
pub struct Dataplane {
    poll: Poll,
    commands: Receiver<Command>,
    ports: Vec<Option<PortSlot>>,
    removed: Vec<PortSnapshot>,
    forwarder: Forwarder,
    ready: VecDeque<PortId>,
    buffer: Box<[u8]>,
    egress: Vec<PortId>,
    dead: Vec<PortId>,
    poll_budget: usize,
    idle_poll: Duration,
    events: EventSink,
    loop_stats: LoopStats,
}

impl Dataplane {
    pub fn new(config: DataplaneConfig) -> Result<(Self, DataplaneHandle), DataplaneError> {
        let poll = Poll::new().map_err(DataplaneError::Poll)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(DataplaneError::Poll)?);
        let (tx, rx) = mpsc::channel();
        let dataplane = Self {
            poll,
            commands: rx,
            ports: Vec::new(),
            removed: Vec::new(),
            forwarder: Forwarder::new(config.fdb),
            ready: VecDeque::new(),
            buffer: vec![0; BUFFER_LEN].into_boxed_slice(),
            egress: Vec::new(),
            dead: Vec::new(),
            poll_budget: config.poll_budget.max(1),
            idle_poll: config.idle_poll,
            events: EventSink::default(),
            loop_stats: LoopStats::default(),
        };
        let handle = DataplaneHandle {
            commands: tx,
            waker,
        };
        Ok((dataplane, handle))
    }

    /// Adds a port in the first free slot and starts reading from it.
    pub fn add_port(
        &mut self,
        mut port: Box<dyn Port>,
        mtu: u32,
    ) -> Result<PortId, DataplaneError> {
        let index = self
            .ports
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.ports.len());
        let id = PortId(index as u32);
        self.forwarder.add_port(id, PortPolicy::default())?;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut *port, Token(index), Interest::READABLE)
        {
            // Not registered, so not a port: undo the forwarder's half.
            let _ = self.forwarder.remove_port(id);
            return Err(DataplaneError::Register {
                name: port.name().to_owned(),
                source: e,
            });
        }
        info!(port = port.name(), id = id.0, mtu, "port added");
        self.events.emit(|| Event::PortAdded {
            port: id,
            name: port.name().to_owned(),
            mtu,
        });
        let slot = PortSlot {
            port,
            mtu,
            counters: PortCounters::default(),
            // Frames may have queued before registration; edge-triggered epoll
            // would not report them, so start on the ready list.
            ready: true,
        };
        if index == self.ports.len() {
            self.ports.push(Some(slot));
        } else {
            self.ports[index] = Some(slot);
        }
        self.ready.push_back(id);
        Ok(id)
    }

    /// Sends events to a bounded channel of `capacity` from now on; events
    /// that do not fit are dropped and counted (`Snapshot::events_dropped`).
    pub fn subscribe_events(&mut self, capacity: usize) -> Receiver<Event> {
        let (sender, receiver) = mpsc::sync_channel(capacity);
        self.events.sender = Some(sender);
        receiver
    }

    /// The current counters and MAC table.
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = self.counters();
        snapshot.fdb = self.forwarder.fdb().entries(Instant::now());
        snapshot
    }

    /// The current counters, without the MAC table's entries.
    pub fn counters(&self) -> Snapshot {
        Snapshot {
            ports: self
                .ports
                .iter()
                .enumerate()
                .filter_map(|(i, slot)| {
                    let id = PortId(i as u32);
                    slot.as_ref()
                        .map(|s| s.snapshot(id, self.forwarder.port(id)))
                })
                .collect(),
            removed_ports: self.removed.clone(),
            fdb: Vec::new(),
            fdb_size: self.forwarder.fdb().len(),
            fdb_counters: self.forwarder.fdb().counters(),
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
        let Some(Some(slot)) = self.ports.get_mut(id.index()) else {
            return Err(DataplaneError::UnknownPort {
                name: format!("#{id}"),
            });
        };
        // What actually changes: only that is logged and reported.
        let mut changed = PortUpdate::default();
        if let Some(mtu) = update.mtu.filter(|&mtu| mtu != slot.mtu) {
            slot.mtu = mtu;
            changed.mtu = Some(mtu);
        }
        // Start from the current policy so that fields set elsewhere survive.
        let mut policy = self.forwarder.port(id).cloned().unwrap_or_default();
        if let Some(enabled) = update.enabled.filter(|&e| e != policy.enabled) {
            policy.enabled = enabled;
            self.forwarder.set_policy(id, policy)?;
            changed.enabled = Some(enabled);
        }
        let snapshot = slot.snapshot(id, self.forwarder.port(id));
        if !changed.is_empty() {
            info!(port = %snapshot.name, id = id.0, ?changed, "port changed");
            self.events.emit(|| Event::PortChanged {
                port: id,
                name: snapshot.name.clone(),
                update: changed,
            });
        }
        Ok(snapshot)
    }

    /// Runs until a [`Command::Shutdown`]; returns the final snapshot. The
    /// ports (and so the TAPs) are dropped when the dataplane is.
    pub fn run(&mut self) -> Result<Snapshot, DataplaneError> {
        let mut events = Events::with_capacity(256);
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING_INTERVAL;
        // Until this instant the loop polls epoll without sleeping: a request
        // that just got an answer is often followed by the next one within
        // microseconds, and sleeping in between costs a wakeup on both sides.
        let mut spin_until = Instant::now();
        loop {
            let now = Instant::now();
            let timeout = if !self.ready.is_empty() || now < spin_until {
                Duration::ZERO
            } else {
                next_housekeeping.saturating_duration_since(now)
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(DataplaneError::Wait(e)),
            }
            self.loop_stats.iterations += 1;
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                self.mark_ready(PortId(event.token().0 as u32));
            }
            if self.serve_commands() {
                return Ok(self.snapshot());
            }
            let frames = self.serve_ready_ports();
            let now = Instant::now();
            if frames > 0 {
                spin_until = now + self.idle_poll;
            }
            if now >= next_housekeeping {
                let expired = self.forwarder.fdb_mut().expire(now);
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
            Command::Shutdown | Command::Snapshot(_) => unreachable!("served by serve_commands"),
            Command::Counters(reply) => {
                let _ = reply.send(self.counters());
            }
            Command::AddPort {
                port,
                mtu,
                settings,
                reply,
            } => {
                let _ = reply.send(self.add_configured_port(port, mtu, &settings));
            }
            Command::RemovePort { name, reply } => {
                let result = self.port_id(&name).map(|id| {
                    let (port, last) = self
                        .take_port(id, RemovalCause::Requested)
                        .expect("port_id found a live slot");
                    RemovedPort { port, last }
                });
                if let Err(mpsc::SendError(Ok(removed))) = reply.send(result) {
                    // Nobody took it: closing the TAP here is the only option left.
                    drop(removed);
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
                    self.forwarder.fdb_mut().add_static(vlan, mac, id)?;
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
                let removed = self.forwarder.fdb_mut().remove(vlan, mac);
                if removed {
                    info!(%mac, vlan, "MAC entry removed");
                    self.events.emit(|| Event::FdbRemoved { vlan, mac });
                }
                let _ = reply.send(removed);
            }
            Command::FdbFlush { port, reply } => {
                let result = match port {
                    None => Ok((None, self.forwarder.fdb_mut().flush())),
                    Some(name) => self
                        .port_id(&name)
                        .map(|id| (Some(id), self.forwarder.fdb_mut().flush_port(id))),
                };
                let result = result.map(|(port, removed)| {
                    info!(port = ?port, removed, "MAC table flushed");
                    self.events.emit(|| Event::FdbFlushed { port, removed });
                    removed
                });
                let _ = reply.send(result);
            }
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

    fn mark_ready(&mut self, id: PortId) {
        if let Some(Some(slot)) = self.ports.get_mut(id.index())
            && !slot.ready
        {
            slot.ready = true;
            self.ready.push_back(id);
        }
    }

    /// One pass over the ready list: each port gets up to `poll_budget` reads.
    /// Returns the number of frames read.
    fn serve_ready_ports(&mut self) -> usize {
        let mut frames = 0;
        for _ in 0..self.ready.len() {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let (read, drained) = self.serve_port(id);
            self.loop_stats.record_batch(read);
            frames += read;
            match self.ports.get_mut(id.index()) {
                Some(Some(slot)) if !drained => self.ready.push_back(id),
                Some(Some(slot)) => slot.ready = false,
                _ => {}
            }
            for dead in std::mem::take(&mut self.dead) {
                self.remove_port(dead);
            }
        }
        frames
    }

    /// Reads and forwards up to `poll_budget` frames from `id`. Returns the
    /// frames read, and true when the port is drained (or gone), false when
    /// the budget ran out.
    fn serve_port(&mut self, ingress: PortId) -> (usize, bool) {
        let now = Instant::now();
        let mut frames = 0;
        while frames < self.poll_budget {
            let Some(Some(slot)) = self.ports.get_mut(ingress.index()) else {
                return (frames, true);
            };
            let len = match slot.port.recv(&mut self.buffer) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (frames, true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(port = slot.port.name(), error = %e, "reading failed; removing the port");
                    self.dead.push(ingress);
                    return (frames, true);
                }
            };
            frames += 1;
            self.forward_frame(ingress, len, now);
        }
        (frames, false)
    }

    /// Forwards the frame of `len` bytes in the buffer, read from `ingress`.
    fn forward_frame(&mut self, ingress: PortId, len: usize, now: Instant) {
        let Self {
            ports,
            forwarder,
            buffer,
            egress,
            dead,
            events,
            ..
        } = self;
        let packet = &buffer[..len];
        let Some(Some(in_slot)) = ports.get_mut(ingress.index()) else {
            return;
        };
        let hdr_len = in_slot.port.vnet_hdr_len();
        in_slot.counters.rx_frames += 1;
        in_slot.counters.rx_bytes += len as u64;

        let header = if hdr_len > 0 {
            match VnetHeader::new(packet) {
                Some(header) => Some(header),
                None => {
                    in_slot.counters.drops.count(DropReason::Runt);
                    return;
                }
            }
        } else {
            None
        };
        let frame = &packet[hdr_len..];
        let is_gso = header.is_some_and(|h| h.is_gso());
        if !is_gso && frame.len() > in_slot.max_frame_len() {
            in_slot.counters.drops.count(DropReason::Oversize);
            return;
        }

        let (verdict, learned) = forwarder.decide(ingress, frame, now, egress);
        events.learned(ingress, frame, learned);
        if let Learned::Moved { from } = learned {
            in_slot.counters.mac_moves += 1;
            debug!(port = in_slot.port.name(), from = from.0, "MAC moved");
        }
        if let Verdict::Drop(reason) = verdict {
            in_slot.counters.drops.count(reason);
            return;
        }

        for &out in egress.iter() {
            let Some(Some(out_slot)) = ports.get_mut(out.index()) else {
                continue;
            };
            let out_hdr_len = out_slot.port.vnet_hdr_len();
            let result = if out_hdr_len == hdr_len {
                out_slot.port.send(packet)
            } else if out_hdr_len == 0 {
                // A port without offloads can take only complete, MTU-sized frames;
                // super-frames and partial checksums need software GSO.
                if header.is_some_and(|h| !h.is_plain()) {
                    out_slot.counters.drops.count(DropReason::NeedsOffload);
                    continue;
                }
                out_slot.port.send(frame)
            } else {
                out_slot.port.send_parts(&PLAIN_HEADER, frame)
            };
            match result {
                Ok(_) => {
                    out_slot.counters.tx_frames += 1;
                    out_slot.counters.tx_bytes += (frame.len() + out_hdr_len) as u64;
                }
                Err(e) => match classify_send_error(&e) {
                    SendFailure::Dropped(reason) => out_slot.counters.drops.count(reason),
                    SendFailure::PortGone => {
                        warn!(port = out_slot.port.name(), error = %e, "writing failed; removing the port");
                        out_slot.counters.drops.count(DropReason::TxError);
                        dead.push(out);
                    }
                },
            }
        }
    }

    /// Removes a port whose device failed; dropping it closes the fd.
    fn remove_port(&mut self, id: PortId) {
        if let Some((port, last)) = self.take_port(id, RemovalCause::DeviceError) {
            self.removed.push(last);
            drop(port);
        }
    }

    /// Takes port `id` out of the loop, the forwarder and the MAC table.
    fn take_port(
        &mut self,
        id: PortId,
        cause: RemovalCause,
    ) -> Option<(Box<dyn Port>, PortSnapshot)> {
        let mut slot = self.ports.get_mut(id.index()).and_then(Option::take)?;
        // The fd may already be invalid in the kernel's eyes; epoll forgets it on close anyway.
        let _ = self.poll.registry().deregister(&mut *slot.port);
        // The slot held a port, so the forwarder knows it.
        let policy = self.forwarder.remove_port(id).ok();
        self.ready.retain(|&p| p != id);
        info!(port = slot.port.name(), id = id.0, ?cause, "port removed");
        let last = slot.snapshot(id, policy.as_ref());
        self.events.emit(|| Event::PortRemoved {
            port: id,
            name: last.name.clone(),
            cause,
        });
        Some((slot.port, last))
    }
}

enum SendFailure {
    Dropped(DropReason),
    PortGone,
}

/// A TAP refuses one frame (bad vnet header, too big, queue full) with these
/// errors; anything else means the device itself is gone.
fn classify_send_error(error: &io::Error) -> SendFailure {
    match error.raw_os_error() {
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
