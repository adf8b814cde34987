//! What the control plane asks of the dataplane, and the handle it asks through.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc::{self, Sender};

use mio::Waker;
use serde::{Serialize, Serializer};

use super::events::RemovalCause;
use super::{DataplaneError, EvpnSummary, PortCounters, PortSnapshot, QueueMask, Snapshot};
use crate::fdb::{PortId, VlanId};
use crate::forward::{PortPolicy, Trace};
use crate::port::Port;
use crate::wire::MacAddr;

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
    /// Pin `mac` to a port with a static MAC table entry; with `remote` (tunnel ports
    /// only), behind that remote VTEP.
    FdbAdd {
        vlan: VlanId,
        mac: MacAddr,
        port: String,
        remote: Option<IpAddr>,
        reply: Sender<Result<(), DataplaneError>>,
    },
    /// (A control plane: EVPN) `mac` is behind remote VTEP `vtep` of tunnel port
    /// `port`: a remote MAC table entry ([`crate::fdb::EntryKind::Remote`]) and the
    /// port's pin; `None` removes both (the table entry only while it is still the
    /// tunnel's). No reply, so the sender never waits on the loop: failures are logged.
    SetRemoteMac {
        port: String,
        vlan: VlanId,
        mac: MacAddr,
        vtep: Option<IpAddr>,
    },
    /// (A control plane: EVPN) replace tunnel port `port`'s flood list. No reply.
    SetFloodList { port: String, vteps: Vec<IpAddr> },
    /// Reply with the MACs learned (dynamic and sticky entries) on ports that are no
    /// tunnel: the local MACs a control plane advertises.
    LocalMacs(Sender<Vec<(VlanId, MacAddr)>>),
    /// The EVPN agent's session, for snapshots (`stats`, metrics); a change of
    /// `connected` is an event.
    SetEvpnStatus(EvpnSummary),
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
    /// Reply with every port (slot order), to hand their fds to a new process.
    ExportPorts(Sender<Vec<Arc<dyn Port>>>),

    // ---- trace ----
    /// What the forwarder would do with `frame` arriving on `port` now, step by step,
    /// without doing it (`Forwarder::trace`: nothing learned, no storm token taken).
    Trace {
        port: String,
        frame: Vec<u8>,
        reply: Sender<Result<TracedFrame, DataplaneError>>,
    },

    // ---- capture ----
    /// Start a capture session: copies of the frames `filter` selects go to the
    /// session's bounded queue until it is dropped. `port` names the port of
    /// `filter.port` (`None`: every port; the filter's own port is ignored).
    StartCapture {
        port: Option<String>,
        filter: super::CaptureFilter,
        reply: Sender<Result<CaptureStarted, DataplaneError>>,
    },
}

/// A capture session started, and the ports it may show, in id order.
pub struct CaptureStarted {
    pub session: super::CaptureSession,
    pub ports: Vec<(PortId, String)>,
}

/// A traced decision, and the names of the ports it mentions by id.
#[derive(Clone, Debug)]
pub struct TracedFrame {
    pub ingress: PortId,
    pub trace: Trace,
    /// Every port now, in id order.
    pub ports: Vec<(PortId, String)>,
}

/// What the workers tell each other; the control plane cannot send these
/// (only the dataplane itself builds them), so the loop needs no answer for
/// a control-plane request it does not expect.
pub(super) enum WorkerMessage {
    /// (Primary to worker) serve this port too, reading the queues in `reads`.
    Attach {
        id: PortId,
        port: Arc<dyn Port>,
        mtu: u32,
        reads: QueueMask,
    },
    /// (Primary to worker) forget this port.
    Detach(PortId),
    /// (Primary to worker) the port's MTU changed.
    SetMtu { id: PortId, mtu: u32 },
    /// (Worker to primary) this port failed; remove it everywhere. Carries
    /// the worker's last counters of the port (boxed: rare, and they would
    /// make every message as big as they are).
    PortFailed {
        id: PortId,
        counters: Box<PortCounters>,
    },
}

/// What a worker's channel carries.
pub(super) enum Message {
    /// From the control plane (through a [`DataplaneHandle`]).
    Control(Command),
    /// From another worker.
    Worker(WorkerMessage),
}

/// Settings of a running port that the control plane can change; `None`
/// leaves a setting as it is. Applied in one step by [`Dataplane::update_port`]:
/// an invalid policy changes nothing. Serialised (for the log, like `port_changed` events'
/// [`crate::control::protocol::PortChange`]) without the policy, which shows as `"policy": true`.
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
    /// The netdev's new MAC and transmit queue length: set on the device by the control
    /// plane before the update; the dataplane only reports them in `port_changed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub txqueuelen: Option<u32>,
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

/// Sends commands to a running dataplane and wakes it.
#[derive(Clone)]
pub struct DataplaneHandle {
    pub(super) commands: Sender<Message>,
    pub(super) waker: Arc<Waker>,
}

impl DataplaneHandle {
    pub fn send(&self, command: Command) -> Result<(), DataplaneError> {
        self.deliver(Message::Control(command))
    }

    /// Sends a message from another worker.
    pub(super) fn tell(&self, message: WorkerMessage) -> Result<(), DataplaneError> {
        self.deliver(Message::Worker(message))
    }

    fn deliver(&self, message: Message) -> Result<(), DataplaneError> {
        self.commands
            .send(message)
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
