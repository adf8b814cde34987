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

mod affinity;
mod capture;
mod counters;
mod egress;
mod events;
mod idle;
#[cfg(test)]
mod memory_port;
mod messages;
mod worker;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::fdb::{FdbConfig, FdbError, PortId};
use crate::forward::PortPolicy;
use crate::port::Port;
use crate::wire::{HEADER_LEN, VLAN_TAG_LEN};

pub use capture::{
    CaptureFilter, CaptureSession, CapturedFrame, DEFAULT_SNAPLEN, Direction, QUEUE_BYTES,
    QUEUE_FRAMES,
};
pub use counters::{
    BATCH_BUCKETS, DropCounters, EvpnSummary, FdbRemote, LoopStats, MAX_REMOVED_PORTS,
    PortCounters, PortSnapshot, Snapshot, TURN_BUCKETS_US, TunnelCounters,
};
pub use events::{Event, RemovalCause};
pub use messages::{
    CaptureStarted, Command, DataplaneHandle, PortUpdate, RemovedPort, TracedFrame,
};
pub use worker::Dataplane;

/// Queues a port may have; a port's queue `q` polls under token `index * MAX_QUEUES + q`.
pub const MAX_QUEUES: usize = 16;

/// A set of a port's queues, bit `q` for queue `q`.
type QueueMask = u16;

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
    #[error(transparent)]
    Tunnel(#[from] crate::port::TunnelError),
    #[error(transparent)]
    Sched(#[from] crate::sys::sched::SchedError),
}

/// Settings of the loop.
#[derive(Clone, Debug)]
pub struct DataplaneConfig {
    pub poll_budget: usize,
    /// How long to keep polling without sleeping after the last frame.
    pub idle_poll: Duration,
    /// Percent of one CPU the loop may spend spinning ahead of frames it
    /// predicts from steady rhythms (`idle::IdlePolicy`); 0: never.
    pub adaptive_poll_pct: u32,
    /// Run the workers under `SCHED_FIFO` at this priority.
    pub realtime_priority: Option<u8>,
    /// The CPU worker i runs on when pinned, `cpus[i]` (`switch.cpu_affinity`, planned
    /// against the CPUs allowed at startup); empty: never pinned.
    pub cpus: Vec<usize>,
    /// CPUs the operator listed: pinned from the start, for good, and a refusal stops
    /// the switch. Otherwise (`auto`) a worker pins itself while it moves bulk traffic
    /// ([`affinity`]), and a refusal is logged.
    pub cpus_required: bool,
    /// The CPUs the process was allowed at startup: what an unpinned worker goes back to.
    pub allowed_cpus: Vec<usize>,
    /// Dataplane threads (workers); ports are spread over them for reading.
    pub threads: usize,
    pub fdb: FdbConfig,
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
            netdev_tx_dropped: None,
            removed_at: None,
            tunnel: self.port.tunnel_counters(),
        }
    }

    /// Longest Ethernet frame (no vnet header) accepted from or sent to this
    /// port unless it is an offload super-frame: MTU + header + one VLAN tag.
    fn max_frame_len(&self) -> usize {
        self.mtu as usize + HEADER_LEN + VLAN_TAG_LEN
    }
}
