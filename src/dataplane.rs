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
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use serde::{Serialize, Serializer};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::fdb::{FdbConfig, FdbCounters, FdbEntry, Learned, PortId};
use crate::forward::{
    DropReason, Egress, ForwardEvent, Forwarder, MacFlapEntry, PortPolicy, TagAction, Verdict,
};
use crate::port::Port;
use crate::vnet::{PLAIN_HEADER, VNET_HDR_LEN, VnetHeader, shift_frame_offsets};
use crate::wire::{ETHERTYPE_VLAN, EthernetFrame, HEADER_LEN, VLAN_TAG_LEN};

/// Token of the control-plane waker; ports use their slot index.
const WAKER: Token = Token(usize::MAX);

/// Largest frame a port can hand over: a 64 KiB super-frame, or a frame of the
/// largest MTU with a VLAN tag, plus its vnet header.
const BUFFER_LEN: usize =
    crate::config::MAX_MTU as usize + HEADER_LEN + VLAN_TAG_LEN + crate::vnet::VNET_HDR_LEN;

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
}

/// Requests from the control plane.
pub enum Command {
    /// Stop forwarding; the loop returns its final snapshot.
    Shutdown,
    /// Reply with counters and the MAC table.
    Snapshot(Sender<Snapshot>),
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
    /// Source MACs that flapped onto this port and were held on their previous one.
    pub mac_flaps: u64,
    /// Times the port was shut down by its MAC limit.
    pub shutdowns: u64,
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
    /// False once disabled, e.g. shut down by its MAC limit.
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
    pub fdb_counters: FdbCounters,
    /// Addresses that flapped between ports, with their flap counts.
    pub mac_flaps: Vec<MacFlapEntry>,
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
}

struct PortSlot {
    port: Box<dyn Port>,
    mtu: u32,
    counters: PortCounters,
    /// On the ready list (it signalled and has not yet returned `WouldBlock`).
    ready: bool,
}

impl PortSlot {
    fn snapshot(&self, id: PortId) -> PortSnapshot {
        PortSnapshot {
            id,
            name: self.port.name().to_owned(),
            mtu: self.mtu,
            vnet_hdr: self.port.vnet_hdr_len() > 0,
            enabled: true,
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
    egress: Vec<Egress>,
    dead: Vec<PortId>,
    poll_budget: usize,
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

    /// The forwarding logic, to read its policies and table.
    pub fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }

    /// The forwarding logic, to set port policies (validated and swapped whole) and
    /// MAC flap detection.
    pub fn forwarder_mut(&mut self) -> &mut Forwarder {
        &mut self.forwarder
    }

    /// The current counters and MAC table.
    pub fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let forwarder = &self.forwarder;
        Snapshot {
            ports: self
                .ports
                .iter()
                .enumerate()
                .filter_map(|(i, slot)| {
                    let id = PortId(i as u32);
                    let mut port = slot.as_ref()?.snapshot(id);
                    port.enabled = forwarder.port(id).is_some_and(|policy| policy.enabled);
                    Some(port)
                })
                .collect(),
            removed_ports: self.removed.clone(),
            fdb: forwarder.fdb().entries(now),
            fdb_counters: forwarder.fdb().counters(),
            mac_flaps: forwarder.mac_flaps(now),
        }
    }

    /// Runs until a [`Command::Shutdown`]; returns the final snapshot. The
    /// ports (and so the TAPs) are dropped when the dataplane is.
    pub fn run(&mut self) -> Result<Snapshot, DataplaneError> {
        let mut events = Events::with_capacity(256);
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING_INTERVAL;
        loop {
            let now = Instant::now();
            let timeout = if self.ready.is_empty() {
                next_housekeeping.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(DataplaneError::Wait(e)),
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                self.mark_ready(PortId(event.token().0 as u32));
            }
            if self.serve_commands() {
                return Ok(self.snapshot());
            }
            self.serve_ready_ports();
            let now = Instant::now();
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
                Err(TryRecvError::Empty) => return false,
                // Every handle is gone: nobody can ever stop us, so stop now.
                Err(TryRecvError::Disconnected) => return true,
            }
        }
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
    fn serve_ready_ports(&mut self) {
        for _ in 0..self.ready.len() {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let drained = self.serve_port(id);
            match self.ports.get_mut(id.index()) {
                Some(Some(slot)) if !drained => self.ready.push_back(id),
                Some(Some(slot)) => slot.ready = false,
                _ => {}
            }
            for dead in std::mem::take(&mut self.dead) {
                self.remove_port(dead);
            }
        }
    }

    /// Reads and forwards up to `poll_budget` frames from `id`. Returns true
    /// when the port is drained (or gone), false when the budget ran out.
    fn serve_port(&mut self, ingress: PortId) -> bool {
        let now = Instant::now();
        for _ in 0..self.poll_budget {
            let Some(Some(slot)) = self.ports.get_mut(ingress.index()) else {
                return true;
            };
            let len = match slot.port.recv(&mut self.buffer) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(port = slot.port.name(), error = %e, "reading failed; removing the port");
                    self.dead.push(ingress);
                    return true;
                }
            };
            self.forward_frame(ingress, len, now);
        }
        false
    }

    /// Forwards the frame of `len` bytes in the buffer, read from `ingress`.
    fn forward_frame(&mut self, ingress: PortId, len: usize, now: Instant) {
        let Self {
            ports,
            forwarder,
            buffer,
            egress,
            dead,
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
        if let Learned::Moved { from } = learned {
            in_slot.counters.mac_moves += 1;
            debug!(port = in_slot.port.name(), from = from.0, "MAC moved");
        }
        if let Verdict::Drop(reason) = verdict {
            in_slot.counters.drops.count(reason);
        }
        if forwarder.has_events() {
            report_forward_events(forwarder, ports);
        }
        if matches!(verdict, Verdict::Drop(_)) {
            return;
        }

        for &Egress { port: out, tag } in egress.iter() {
            let Some(Some(out_slot)) = ports.get_mut(out.index()) else {
                continue;
            };
            let out_hdr_len = out_slot.port.vnet_hdr_len();
            let is_plain = header.is_none_or(|h| h.is_plain());
            let result = if tag != TagAction::AsIs || !is_gso {
                match send_retagged(out_slot, packet, hdr_len, is_gso, is_plain, tag) {
                    Some(result) => result,
                    None => continue,
                }
            } else if out_hdr_len == hdr_len {
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
                    let out_len = frame.len().saturating_add_signed(tag.len_change());
                    out_slot.counters.tx_frames += 1;
                    out_slot.counters.tx_bytes += (out_len + out_hdr_len) as u64;
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

    fn remove_port(&mut self, id: PortId) {
        let Some(slot) = self.ports.get_mut(id.index()).and_then(Option::take) else {
            return;
        };
        let mut slot = slot;
        // The fd may already be invalid in the kernel's eyes; epoll forgets it on close anyway.
        let _ = self.poll.registry().deregister(&mut *slot.port);
        // The slot held a port, so the forwarder knows it.
        let _ = self.forwarder.remove_port(id);
        self.ready.retain(|&p| p != id);
        info!(port = slot.port.name(), id = id.0, "port removed");
        self.removed.push(slot.snapshot(id));
    }
}

/// Logs what the forwarder reported and counts it on the ports concerned.
fn report_forward_events(forwarder: &mut Forwarder, ports: &mut [Option<PortSlot>]) {
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
                if action == crate::forward::ViolationAction::Shutdown {
                    warn!(port = %port_name, "port shut down by its MAC limit");
                    if let Some(Some(slot)) = ports.get_mut(port.index()) {
                        slot.counters.shutdowns += 1;
                    }
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
    is_plain: bool,
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
    let out_hdr_len = out_slot.port.vnet_hdr_len();
    if out_hdr_len == 0 && !is_plain {
        // A port without offloads can take only complete, MTU-sized frames;
        // super-frames and partial checksums need software GSO.
        out_slot.counters.drops.count(DropReason::NeedsOffload);
        return None;
    }
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
