//! The worker: one event loop, its ports, and (on the primary) port membership
//! and the other workers.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, info, warn};

use super::affinity::{AffinityChange, AffinityPolicy};
use super::capture::{CaptureHub, Direction};
use super::egress::send_to_port;
use super::events::{EventSink, report_forward_events};
use super::idle::{IdlePolicy, Wait};
use super::messages::{CaptureStarted, Message, TracedFrame, WorkerMessage};
use super::{
    Command, DataplaneConfig, DataplaneError, DataplaneHandle, Event, EvpnSummary, FdbRemote,
    LoopStats, MAX_QUEUES, MAX_REMOVED_PORTS, PortCounters, PortSlot, PortSnapshot, PortUpdate,
    QueueMask, RemovalCause, RemovedPort, Snapshot,
};
use crate::fdb::{EntryKind, Learned, PortId, VlanId};
use crate::forward::{DropReason, Egress, PortPolicy, TagAction, Verdict};
use crate::gso::Segmenter;
use crate::port::Port;
use crate::shared::{DecisionCache, Locked, SharedForwarder};
use crate::sys::sched::{self, WakeTimer};
use crate::vnet::{Offload, VnetHeader};
use crate::wire::{EthernetFrame, MacAddr};
use crate::wire::{HEADER_LEN, VLAN_TAG_LEN};
use std::net::IpAddr;

/// Token of the control-plane waker; ports use their slot index.
const WAKER: Token = Token(usize::MAX);
/// The wake-up timer of the idle policy (a window of spinning ahead of a predicted frame).
const WAKE_TIMER: Token = Token(usize::MAX - 1);

/// How long a port queue waits for its next turn after one spent mostly on frames
/// storm control dropped. Its TAP queue (1000 frames by default) holds a
/// millisecond of a fast flood; the switch reads at most a turn's worth of a
/// storming port per this, i.e. some 64,000 frames a second.
const STORM_HOLD_BACK: Duration = Duration::from_millis(1);

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
    commands: Receiver<Message>,
    ports: Vec<Option<PortSlot>>,
    removed: Vec<PortSnapshot>,
    /// Policies and MAC table, shared by the workers; see `tapswitch_core::shared`.
    forwarder: Arc<SharedForwarder>,
    /// This worker's decisions that need no lock while they stay valid.
    decisions: DecisionCache,
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
    /// When to spin and when to sleep (pure); the timer wakes the loop ahead of a window.
    idle: IdlePolicy,
    wake_timer: WakeTimer,
    realtime_priority: Option<u8>,
    /// The CPU this worker runs on when pinned, and when it is (see `DataplaneConfig::cpus`).
    cpu: Option<usize>,
    cpu_required: bool,
    allowed_cpus: Vec<usize>,
    affinity: AffinityPolicy,
    /// Segments super-frames and completes checksums for ports without offloads.
    segmenter: Segmenter,
    events: EventSink,
    loop_stats: LoopStats,
    /// The EVPN agent's session as last reported (primary only).
    evpn: Option<EvpnSummary>,
    /// Capture sessions, shared by every worker.
    capture: Arc<CaptureHub>,
    /// Whether a capture session existed when this batch started.
    capturing: bool,
}

impl Dataplane {
    /// Builds the primary worker (and, idle, the others); the handle reaches the primary.
    pub fn new(config: DataplaneConfig) -> Result<(Self, DataplaneHandle), DataplaneError> {
        let threads = config.threads.max(1);
        let forwarder = Arc::new(SharedForwarder::new(config.fdb.clone()));
        let capture = Arc::new(CaptureHub::default());
        let (mut primary, handle) =
            Self::worker(&config, 0, threads, Arc::clone(&forwarder), &capture, None)?;
        for worker in 1..threads {
            let (dataplane, worker_handle) = Self::worker(
                &config,
                worker,
                threads,
                Arc::clone(&forwarder),
                &capture,
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
        forwarder: Arc<SharedForwarder>,
        capture: &Arc<CaptureHub>,
        primary: Option<DataplaneHandle>,
    ) -> Result<(Self, DataplaneHandle), DataplaneError> {
        let poll = Poll::new().map_err(DataplaneError::Poll)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(DataplaneError::Poll)?);
        let wake_timer = WakeTimer::new()?;
        poll.registry()
            .register(
                &mut SourceFd(&wake_timer.as_raw_fd()),
                WAKE_TIMER,
                Interest::READABLE,
            )
            .map_err(DataplaneError::Poll)?;
        let (tx, rx) = mpsc::channel();
        let dataplane = Self {
            worker,
            threads,
            poll,
            commands: rx,
            ports: Vec::new(),
            removed: Vec::new(),
            forwarder,
            decisions: DecisionCache::default(),
            workers: Workers::default(),
            primary,
            ready: VecDeque::new(),
            held_back: Vec::new(),
            buffer: vec![0; BUFFER_LEN].into_boxed_slice(),
            egress: Vec::new(),
            dead: Vec::new(),
            poll_budget: config.poll_budget.max(1),
            idle: IdlePolicy::new(config.idle_poll, config.adaptive_poll_pct),
            wake_timer,
            realtime_priority: config.realtime_priority,
            cpu: config.cpus.get(worker).copied(),
            cpu_required: config.cpus_required,
            allowed_cpus: config.allowed_cpus.clone(),
            affinity: AffinityPolicy::default(),
            segmenter: Segmenter::new(),
            events: EventSink::default(),
            loop_stats: LoopStats::default(),
            evpn: None,
            capture: Arc::clone(capture),
            capturing: false,
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
        let policy = PortPolicy {
            split_horizon: port.is_tunnel(),
            ..PortPolicy::default()
        };
        self.forwarder().add_port(id, policy)?;
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
            worker.tell(WorkerMessage::Attach {
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

    /// Pins `mac` behind `vtep` on tunnel port `id` (restoring a static remote entry
    /// before the loop runs).
    pub fn pin_remote(&self, id: PortId, mac: MacAddr, vtep: IpAddr) -> Result<(), DataplaneError> {
        let slot = self
            .ports
            .get(id.index())
            .and_then(Option::as_ref)
            .ok_or_else(|| DataplaneError::UnknownPort {
                name: format!("#{id}"),
            })?;
        Ok(slot.port.pin_remote(mac, Some(vtep))?)
    }

    /// The shared forwarder (policies, MAC table, flap detection), locked: what
    /// it changes, the workers' cached decisions see when the guard is dropped.
    pub fn forwarder(&self) -> Locked<'_> {
        self.forwarder.lock()
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
        let fdb = if with_fdb {
            forwarder.fdb().entries(now)
        } else {
            Vec::new()
        };
        let fdb_remotes = fdb
            .iter()
            .filter_map(|entry| {
                let slot = self.ports.get(entry.port.0 as usize)?.as_ref()?;
                if !slot.port.is_tunnel() {
                    return None;
                }
                Some(FdbRemote {
                    port: entry.port,
                    mac: entry.mac,
                    remote: slot.port.remote_of(entry.mac)?,
                })
            })
            .collect();
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
            fdb,
            fdb_remotes,
            fdb_size: forwarder.fdb().len(),
            fdb_counters: forwarder.fdb().counters(),
            mac_flaps: if with_fdb {
                forwarder.mac_flaps(now)
            } else {
                Vec::new()
            },
            loop_stats: self.loop_stats.with_idle(self.idle.stats()),
            events_dropped: self.events.dropped,
            evpn: self.evpn.clone(),
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
        let mut forwarder = self.forwarder.lock();
        let current = forwarder.port(id).cloned().unwrap_or_default();
        let mut policy = update.policy.clone().unwrap_or_else(|| current.clone());
        policy.enabled = update.enabled.unwrap_or(current.enabled);
        // What the port is decides its split horizon, not its configuration.
        let is_tunnel = self.ports[id.index()]
            .as_ref()
            .is_some_and(|slot| slot.port.is_tunnel());
        policy.split_horizon = is_tunnel;
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
                let _ = worker.tell(WorkerMessage::SetMtu { id, mtu });
            }
        }
        // Already set on the netdev by the control plane: reported, nothing to do here.
        changed.mac = update.mac;
        changed.txqueuelen = update.txqueuelen;
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
    /// ports (and so the TAPs) are dropped when the dataplane is. From its
    /// return on, requests fail with [`DataplaneError::Stopped`] (`close_commands`).
    pub fn run(&mut self) -> Result<Snapshot, DataplaneError> {
        // Workers started before one failed to start are stopped below, with the loop's error.
        let result = self.start_workers().and_then(|()| self.run_loop());
        self.close_commands();
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

    /// Pins this worker's thread to the CPUs the operator listed, from the start (on its
    /// own thread: affinity is per thread; threads it starts later inherit it).
    fn pin_listed_cpu(&mut self) -> Result<(), DataplaneError> {
        match self.cpu {
            Some(cpu) if self.cpu_required => {
                sched::run_current_thread_on(self.worker, &[cpu])?;
                info!(
                    worker = self.worker,
                    cpu, "dataplane thread pinned (switch.cpu_affinity)"
                );
                self.loop_stats.cpus = vec![cpu as u32];
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// `auto`: holds on to this worker's CPU while the loop is busy, lets it go when quiet.
    fn follow_load(&mut self, now: Instant, busy: Duration) {
        let Some(cpu) = self.cpu.filter(|_| !self.cpu_required) else {
            return;
        };
        let Some(change) = self.affinity.turn(now, busy) else {
            return;
        };
        let (cpus, pinned) = match change {
            AffinityChange::Pin => (vec![cpu], true),
            AffinityChange::Unpin => (self.allowed_cpus.clone(), false),
        };
        match sched::run_current_thread_on(self.worker, &cpus) {
            Ok(()) => {
                debug!(
                    worker = self.worker,
                    cpu, pinned, "dataplane thread affinity follows its load"
                );
                self.loop_stats.cpus = if pinned { vec![cpu as u32] } else { Vec::new() };
                self.loop_stats.affinity_pins += u64::from(pinned);
            }
            Err(e) => warn!("{e}; the thread stays where it runs (switch.cpu_affinity = \"auto\")"),
        }
    }

    /// Closes the command channel once the loop no longer serves it, so that no request
    /// waits for an answer that never comes while the stopped dataplane lives on (the
    /// daemon joins threads that ask, `tapswitch-state`, control connections, before it
    /// drops the dataplane). The commands still queued are dropped with their reply
    /// channels, which fails their requesters; later ones fail to send.
    fn close_commands(&mut self) {
        let (_, closed) = mpsc::channel();
        drop(std::mem::replace(&mut self.commands, closed));
    }

    fn run_loop(&mut self) -> Result<(), DataplaneError> {
        self.pin_listed_cpu()?;
        if let Some(priority) = self.realtime_priority {
            sched::set_realtime(priority)?;
        }
        sched::tighten_timer_slack();
        let mut events = Events::with_capacity(256);
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING_INTERVAL;
        // The instant the wake-up timer is armed for, so it is set once per window.
        let mut timer_armed: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let next_wakeup = self
                .release_held_back(now)
                .map_or(next_housekeeping, |resume| resume.min(next_housekeeping));
            let timeout = if !self.ready.is_empty() {
                Duration::ZERO
            } else {
                match self.idle.wait(now) {
                    Wait::Spin => Duration::ZERO,
                    Wait::SleepUntil(wake) => {
                        if timer_armed != Some(wake) {
                            self.wake_timer.arm(wake.saturating_duration_since(now))?;
                            timer_armed = Some(wake);
                        }
                        next_wakeup.saturating_duration_since(now)
                    }
                    Wait::Sleep => next_wakeup.saturating_duration_since(now),
                }
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(DataplaneError::Wait(e)),
            }
            self.loop_stats.iterations += 1;
            if !timeout.is_zero() {
                self.loop_stats.wakeups += 1;
            }
            let turn_started = Instant::now();
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                if event.token() == WAKE_TIMER {
                    self.wake_timer.clear();
                    timer_armed = None;
                    self.idle.timer_fired(turn_started);
                    continue;
                }
                let Token(token) = event.token();
                self.mark_ready(PortId((token / MAX_QUEUES) as u32), token % MAX_QUEUES);
            }
            if self.serve_commands() {
                let stats = self.idle.stats();
                debug!(
                    worker = self.worker,
                    windows = stats.windows,
                    hits = stats.hits,
                    spin_us = stats.spin_ns / 1000,
                    "adaptive polling: windows spun ahead of predicted frames, hits, time spun"
                );
                return Ok(());
            }
            let frames = self.serve_ready_ports();
            let now = Instant::now();
            if frames > 0 {
                self.idle.frames(turn_started, !timeout.is_zero());
                self.loop_stats.record_turn(now - turn_started);
                self.follow_load(now, now - turn_started);
            } else {
                self.follow_load(now, Duration::ZERO);
            }
            if now >= next_housekeeping {
                // Every worker moves its deadline on (else, once it passed, the
                // others' poll timeout stayed zero: a busy loop), the primary ages.
                if self.primary.is_none() {
                    let expired = self.forwarder().fdb_mut().expire(now);
                    if expired > 0 {
                        debug!(expired, "MAC entries aged out");
                    }
                }
                next_housekeeping = now + HOUSEKEEPING_INTERVAL;
            }
        }
    }

    /// Handles pending messages; true when asked to shut down.
    fn serve_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Message::Control(command)) => {
                    if self.serve_control(command) {
                        return true;
                    }
                }
                Ok(Message::Worker(message)) => self.serve_worker_message(message),
                Err(TryRecvError::Empty) => return false,
                // Every handle is gone: nobody can ever stop us, so stop now.
                Err(TryRecvError::Disconnected) => return true,
            }
        }
    }

    /// Carries out what another worker asks.
    fn serve_worker_message(&mut self, message: WorkerMessage) {
        match message {
            WorkerMessage::Attach {
                id,
                port,
                mtu,
                reads,
            } => {
                if let Err(e) = self.attach(id, port, mtu, reads) {
                    warn!(worker = self.worker, error = %e, "attaching a port failed");
                    self.dead.push(id);
                }
            }
            WorkerMessage::Detach(id) => {
                self.forget_port(id);
            }
            WorkerMessage::SetMtu { id, mtu } => {
                if let Some(Some(slot)) = self.ports.get_mut(id.index()) {
                    slot.mtu = mtu;
                }
            }
            WorkerMessage::PortFailed { id, counters } => {
                self.remove_failed_port(id, Some(*counters));
            }
        }
    }

    /// Carries out a control-plane request and replies; true when asked to shut
    /// down. A requester that gave up waiting loses only its answer: the change stands.
    fn serve_control(&mut self, command: Command) -> bool {
        match command {
            Command::Shutdown => return true,
            Command::Snapshot(reply) => {
                // The requester may have given up waiting; nothing to do then.
                let _ = reply.send(self.snapshot());
            }
            Command::Counters(reply) => {
                let _ = reply.send(self.counters());
            }
            Command::ExportPorts(reply) => {
                let ports = self.ports.iter().flatten();
                let _ = reply.send(ports.map(|slot| Arc::clone(&slot.port)).collect());
            }
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
                remote,
                reply,
            } => {
                let result = self.port_id(&port).and_then(|id| {
                    let slot = self.ports[id.index()].as_ref().expect("port_id found it");
                    let tunnel = Arc::clone(&slot.port);
                    if let Some(vtep) = remote {
                        tunnel.pin_remote(mac, Some(vtep))?;
                    } else if tunnel.is_tunnel() {
                        // A static entry without a VTEP floods on the tunnel, as before.
                        tunnel.pin_remote(mac, None)?;
                    }
                    if let Err(error) = self.forwarder().fdb_mut().add_static(vlan, mac, id) {
                        if remote.is_some() {
                            let _ = tunnel.pin_remote(mac, None);
                        }
                        return Err(error.into());
                    }
                    info!(%mac, vlan, port = %port, remote = ?remote, "static MAC entry added");
                    self.events.emit(|| Event::FdbStaticAdded {
                        vlan,
                        mac,
                        port: id,
                    });
                    Ok(())
                });
                let _ = reply.send(result);
            }
            Command::SetRemoteMac {
                port,
                vlan,
                mac,
                vtep,
            } => self.set_remote_mac(&port, vlan, mac, vtep),
            Command::SetFloodList { port, vteps } => {
                let result = self
                    .port_id(&port)
                    .and_then(|id| Ok(self.slot_port(id).set_flood_list(&vteps)?));
                match result {
                    Ok(()) => debug!(port = %port, ?vteps, "flood list replaced"),
                    Err(error) => warn!(port = %port, %error, "flood list not replaced"),
                }
            }
            Command::LocalMacs(reply) => {
                let _ = reply.send(self.local_macs());
            }
            Command::SetEvpnStatus(summary) => {
                let was = self.evpn.as_ref().map(|s| s.connected);
                if was != Some(summary.connected) {
                    let gobgp = summary.gobgp.clone();
                    if summary.connected {
                        info!(%gobgp, sessions = summary.sessions, "EVPN: connected to gobgpd");
                        let sessions = summary.sessions;
                        self.events
                            .emit(|| Event::EvpnConnected { gobgp, sessions });
                    } else if was.is_some() || summary.last_error.is_some() {
                        let error = summary.last_error.clone();
                        warn!(%gobgp, error = error.as_deref().unwrap_or("-"),
                            "EVPN: no session with gobgpd; forwarding on the last state");
                        self.events
                            .emit(|| Event::EvpnDisconnected { gobgp, error });
                    }
                }
                self.evpn = Some(summary);
            }
            Command::FdbRemove { vlan, mac, reply } => {
                let on = self.forwarder().fdb().entry_port(vlan, mac);
                if let Some(Some(slot)) = on.and_then(|id| self.ports.get(id.index())) {
                    // A tunnel's pin goes with its entry (a plain port has none).
                    let _ = slot.port.pin_remote(mac, None);
                }
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
            Command::Trace { port, frame, reply } => {
                let result = self.port_id(&port).map(|ingress| {
                    let trace = self.forwarder().trace(ingress, &frame, Instant::now());
                    TracedFrame {
                        ingress,
                        trace,
                        ports: self.port_names(),
                    }
                });
                let _ = reply.send(result);
            }
            Command::StartCapture {
                port,
                mut filter,
                reply,
            } => {
                let result = port.map(|name| self.port_id(&name)).transpose().map(|id| {
                    filter.port = id;
                    CaptureStarted {
                        session: self.capture.start(filter),
                        ports: self.port_names(),
                    }
                });
                let _ = reply.send(result);
            }
        }
        false
    }

    /// Every port now, in id order.
    fn port_names(&self) -> Vec<(PortId, String)> {
        let ports = self.ports.iter().enumerate().filter_map(|(index, slot)| {
            let slot = slot.as_ref()?;
            Some((PortId(index as u32), slot.port.name().to_owned()))
        });
        ports.collect()
    }

    /// The port in live slot `id`.
    fn slot_port(&self, id: PortId) -> Arc<dyn Port> {
        let slot = self.ports[id.index()].as_ref().expect("a live slot");
        Arc::clone(&slot.port)
    }

    /// Installs (`vtep`) or removes a control plane's remote entry for `mac` on tunnel
    /// port `name`.
    fn set_remote_mac(&mut self, name: &str, vlan: VlanId, mac: MacAddr, vtep: Option<IpAddr>) {
        let result = self.port_id(name).and_then(|id| {
            let port = self.slot_port(id);
            match vtep {
                Some(vtep) => {
                    if !port.is_tunnel() {
                        return Err(crate::port::TunnelError::NotATunnel {
                            port: name.to_owned(),
                        }
                        .into());
                    }
                    let installed = self.forwarder().fdb_mut().add_remote(vlan, mac, id)?;
                    if installed {
                        port.pin_remote(mac, Some(vtep))?;
                    } else {
                        warn!(%mac, vlan, "a configured static entry holds this MAC; the remote one is not installed");
                    }
                }
                None => {
                    let _ = port.pin_remote(mac, None);
                    self.forwarder().fdb_mut().remove_remote(vlan, mac, id);
                }
            }
            Ok(())
        });
        if let Err(error) = result {
            warn!(port = %name, %mac, vlan, %error, "remote MAC entry not changed");
        }
    }

    /// The MACs learned on ports that are no tunnel, by VLAN.
    fn local_macs(&self) -> Vec<(VlanId, MacAddr)> {
        let tunnels: Vec<bool> = self
            .ports
            .iter()
            .map(|slot| slot.as_ref().is_some_and(|s| s.port.is_tunnel()))
            .collect();
        self.forwarder()
            .fdb()
            .entries(Instant::now())
            .into_iter()
            .filter(|entry| {
                matches!(entry.kind, EntryKind::Dynamic | EntryKind::Sticky)
                    && tunnels.get(entry.port.index()) == Some(&false)
            })
            .map(|entry| (entry.vlan, entry.mac))
            .collect()
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
            if let Some(Some(slot)) = self.ports.get_mut(id.index()) {
                slot.port.drain_drops(&mut slot.counters.drops);
            }
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
        self.capturing = self.capture.is_active();
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
            decisions,
            buffer,
            egress,
            dead,
            segmenter,
            events,
            capture,
            capturing,
            ..
        } = self;
        let capturing = *capturing;
        // A dropped frame as it arrived, with the reason, for capture sessions.
        let captured_drop = |frame: &[u8], reason: DropReason| {
            if capturing {
                capture.offer(
                    ingress,
                    Direction::Inbound,
                    Some(reason),
                    frame,
                    TagAction::AsIs,
                );
            }
        };
        let packet = &buffer[..len];
        let Some(Some(in_slot)) = ports.get_mut(ingress.index()) else {
            return Handled::Written(0);
        };
        let hdr_len = in_slot.port.vnet_hdr_len();
        in_slot.counters.rx_frames += 1;
        // Without the vnet header, as the kernel counts the netdev's side (`ip -s link`).
        in_slot.counters.rx_bytes += len.saturating_sub(hdr_len) as u64;

        let header = if hdr_len > 0 {
            match VnetHeader::new(packet) {
                Some(header) => Some(header),
                None => {
                    in_slot.counters.drops.count(DropReason::Runt);
                    captured_drop(packet, DropReason::Runt);
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
                let reason = DropReason::of_vnet_error(&error);
                in_slot.counters.drops.count(reason);
                captured_drop(frame, reason);
                return Handled::Written(0);
            }
        };
        // A super-frame whose segments would not fit the port's MTU is a giant in
        // disguise: the endpoint could not have sent those segments as frames.
        let too_big = match offload.segmentation {
            Some(layout) => !layout.fits_mtu(in_slot.mtu as usize),
            None => frame.len() > in_slot.max_frame_len(),
        };
        if too_big {
            in_slot.counters.drops.count(DropReason::Oversize);
            captured_drop(frame, DropReason::Oversize);
            return Handled::Written(0);
        }

        // Decided from this worker's cache without a lock when it can be, else
        // under the lock, which is held for the decision only, never across a syscall.
        let mut reported = false;
        let (verdict, learned) = forwarder.decide(
            decisions,
            ingress,
            frame,
            now,
            egress,
            |forwarder, learned| {
                // The learning event first, then what the forwarder reported, as before.
                events.learned(ingress, frame, learned);
                report_forward_events(forwarder, ports, events);
                reported = true;
            },
        );
        if !reported {
            events.learned(ingress, frame, learned);
        }
        let Some(Some(in_slot)) = ports.get_mut(ingress.index()) else {
            return Handled::Written(0);
        };
        if let Learned::Moved { from } = learned {
            in_slot.counters.mac_moves += 1;
            debug!(port = in_slot.port.name(), from = from.0, "MAC moved");
        }
        if let Verdict::Drop(reason) = verdict {
            in_slot.counters.drops.count(reason);
        }
        // A tunnel port learns the frame's outer source only for a source the decision
        // placed on it (a frame it dropped before learning moves nothing).
        if learned.placed_on_ingress() {
            in_slot
                .port
                .source_learned(EthernetFrame::new_unchecked(frame).src_addr());
        }
        match verdict {
            Verdict::Drop(reason) => {
                captured_drop(frame, reason);
                return if reason.is_storm() {
                    Handled::Policed
                } else {
                    Handled::Written(0)
                };
            }
            Verdict::Forward => {}
        }
        if capturing {
            capture.offer(ingress, Direction::Inbound, None, frame, TagAction::AsIs);
        }

        for &Egress { port: out, tag } in egress.iter() {
            let Some(Some(out_slot)) = ports.get_mut(out.index()) else {
                continue;
            };
            // What the write counts as dropped is the captured copy's drop reason.
            let drops_before = capturing.then(|| out_slot.counters.drops.clone());
            let alive = send_to_port(segmenter, out_slot, packet, hdr_len, &offload, tag);
            if let Some(before) = drops_before {
                let reason = before.first_increase(&out_slot.counters.drops);
                capture.offer(out, Direction::Outbound, reason, frame, tag);
            }
            if !alive {
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
                    let _ = primary.tell(WorkerMessage::PortFailed {
                        id,
                        counters: Box::new(slot.counters),
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
            let removed_at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |since| since.as_millis() as f64 / 1000.0);
            self.removed.push(PortSnapshot {
                removed_at: Some(removed_at),
                ..last
            });
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
            let _ = worker.tell(WorkerMessage::Detach(id));
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

/// `bench/forward-cost`'s measurement (it needs the loop's private parts).
#[cfg(test)]
mod forward_cost;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::egress::{SendFailure, classify_send_error};
    use crate::fdb::FdbConfig;
    use crate::forward::{ForwardError, VlanMode};
    use crate::port::TapPort;
    use crate::sys::tap::{Tap, TapOptions};
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
            adaptive_poll_pct: 0,
            realtime_priority: None,
            cpus: Vec::new(),
            cpus_required: false,
            allowed_cpus: Vec::new(),
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
    fn evpn_sessions_are_in_snapshots_and_a_change_of_connected_is_an_event() {
        let (mut dataplane, _id, events) = dataplane_with_a_port();
        let summary = |connected: bool, error: Option<&str>| EvpnSummary {
            gobgp: "127.0.0.1:50051".into(),
            connected,
            sessions: u64::from(connected),
            last_error: error.map(str::to_owned),
        };
        // Not yet connected, no failure yet: nothing to report.
        dataplane.serve_control(Command::SetEvpnStatus(summary(false, None)));
        dataplane.serve_control(Command::SetEvpnStatus(summary(true, None)));
        dataplane.serve_control(Command::SetEvpnStatus(summary(true, None)));
        dataplane.serve_control(Command::SetEvpnStatus(summary(false, Some("gone"))));
        let rendered: Vec<String> = events
            .try_iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::EvpnConnected { .. } | Event::EvpnDisconnected { .. }
                )
            })
            .map(|e| serde_json::to_string(&e).unwrap())
            .collect();
        assert_eq!(
            rendered,
            [
                r#"{"event":"evpn_connected","gobgp":"127.0.0.1:50051","sessions":1}"#,
                r#"{"event":"evpn_disconnected","gobgp":"127.0.0.1:50051","error":"gone"}"#,
            ]
        );
        assert_eq!(
            dataplane.counters().evpn,
            Some(summary(false, Some("gone")))
        );
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
                    ..PortUpdate::default()
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

    /// The daemon joins the threads that ask the dataplane (`tapswitch-state`, control
    /// connections) after the loop ended but before it drops the dataplane: a request
    /// queued behind the shutdown, or sent after it, must fail then, not wait for ever.
    #[test]
    fn requests_to_a_stopped_dataplane_fail_instead_of_waiting() {
        for threads in [1, 2] {
            let (mut dataplane, handle) = Dataplane::new(DataplaneConfig {
                poll_budget: 64,
                idle_poll: Duration::ZERO,
                adaptive_poll_pct: 0,
                realtime_priority: None,
                cpus: Vec::new(),
                cpus_required: false,
                allowed_cpus: Vec::new(),
                threads,
                fdb: FdbConfig::default(),
            })
            .unwrap();
            handle.shutdown().unwrap();
            let (reply, queued) = mpsc::channel();
            handle.send(Command::Snapshot(reply)).unwrap();
            dataplane.run().unwrap();
            // Not dropped yet: the daemon still has it while it stops the control server.
            assert!(
                matches!(queued.try_recv(), Err(TryRecvError::Disconnected)),
                "{threads} threads: a request queued behind the shutdown still waits"
            );
            assert!(matches!(
                handle.request(Command::Counters),
                Err(DataplaneError::Stopped)
            ));
            assert!(matches!(handle.snapshot(), Err(DataplaneError::Stopped)));
            drop(dataplane);
        }
    }
}
