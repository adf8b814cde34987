//! The control protocol: what travels on the control socket, typed on both ends.
//!
//! One JSON line per request ([`Request`]) and one per reply ([`Response`]):
//! `{"ok":true,"result":…,"version":2}` or
//! `{"ok":false,"error":"…","code":"not_found","version":2}`. `error` is for people,
//! `code` ([`ErrorKind`]) for programs. Every reply carries [`VERSION`]; a client
//! refuses replies from a switch speaking an older protocol (or none: switches from
//! before versions), since it may not understand what this client asks. Versions only
//! grow when a reply loses or changes a key; adding keys keeps the version.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use thiserror::Error;

use crate::config::{Config, ConfigError, PortConfig, PortSettings};
use crate::dataplane::TracedFrame;
use crate::dataplane::{
    DataplaneError, Event as DataplaneEvent, EvpnSummary, LoopStats, PortSnapshot, PortUpdate,
    RemovalCause, Snapshot,
};
use crate::fdb::Learned;
use crate::fdb::{EntryKind, FdbCounters, PortId, VlanId};
use crate::forward::{MacFlapEntry, TagAction, Trace, TraceStep, Verdict, ViolationAction};
use crate::netlink::LinkError;
use crate::port::vm::VmPortError;
use crate::switch::SwitchError;
use crate::sys::netns::NetnsError;
use crate::sys::udp::UdpError;
use crate::upgrade::UpgradeError;
use crate::vm::VmError;
#[cfg(feature = "libvirt")]
use crate::vm::libvirt::LibvirtError;
use crate::wire::MacAddr;

/// The protocol this switch speaks and this client expects, in every reply as `"version"`.
/// 2: port `rx_bytes`/`tx_bytes` count frames without the 12-byte vnet header (as the
/// kernel counts the netdev: `ip -s link`), where 1 counted the header too.
pub const VERSION: u32 = 2;

/// One request on the control socket: `{"cmd":"port_del","name":"p3"}`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
// Variants without fields are written `V {}`: only struct variants reject
// unknown fields in an internally tagged enum.
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
// One request per line, parsed and dropped: a large `port_add` variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Request {
    /// Who is serving: pid, version, metrics address.
    Hello {},
    /// Create a port (same fields as a `[[port]]` of the config file).
    PortAdd {
        port: PortConfig,
    },
    /// Remove a port; a non-persistent TAP the switch created is deleted.
    PortDel {
        name: String,
    },
    /// Change settings of a running port: `set` holds `[[port]]` keys (those of
    /// [`crate::config::PortPatch::KEYS`]) with their new values; `null` returns a
    /// key to its default. Applied whole or not at all.
    PortSet {
        name: String,
        set: PortSettings,
    },
    PortList {},
    FdbShow {},
    /// Add a static MAC table entry.
    FdbAdd {
        mac: MacAddr,
        port: String,
        #[serde(default)]
        vlan: VlanId,
        /// The remote VTEP `mac` is behind (a vxlan port only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remote: Option<IpAddr>,
    },
    FdbDel {
        mac: MacAddr,
        #[serde(default)]
        vlan: VlanId,
    },
    /// Without a port: forget every learned entry. With one: every entry of that port.
    FdbFlush {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<String>,
    },
    Stats {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<String>,
    },
    /// Turn this connection into a stream of event lines.
    Events {},
    /// The configuration as it is now, with hot-plugged ports.
    ConfigShow {},
    /// Restart without loss: start `binary` (default: this program's file)
    /// and hand it every TAP fd, this socket and the MAC table.
    Upgrade {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        binary: Option<PathBuf>,
    },
    /// The libvirt `<interface>` element of a VM port, for its domain's definition.
    LibvirtXml {
        name: String,
    },
    /// The EVPN agent: session with gobgpd, per VNI the remote VTEPs and MAC counts.
    EvpnStatus {},

    // ---- trace ----
    /// What the switch would do with `frame` (hex, from the destination address on)
    /// arriving on `port` now, step by step, without doing it.
    Trace {
        port: String,
        frame: String,
    },

    // ---- reload ----
    /// Read the config file the switch was started with again and apply the difference
    /// (ports added, removed, runtime keys changed), all of it or none.
    Reload {},
    // ---- capture ----
    /// Turn this connection into a pcapng stream of the frames at `port` (every
    /// port without one), after a [`CaptureReply`] line; see `control::capture`.
    Capture {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<String>,
        /// Dropped frames too, each with its reason.
        #[serde(default)]
        drops: bool,
        /// Stop after this many frames.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
        /// Bytes kept of each frame.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snaplen: Option<u32>,
    },
}

/// What kind of failure a refused request met, sent as the reply's `"code"`. The names
/// are stable: scripts may match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request line is not a request (bad JSON, unknown command or field, too long).
    BadRequest,
    /// What the request names does not exist: a port, a MAC table entry, a netdev.
    NotFound,
    /// What the request would create exists already.
    AlreadyExists,
    /// A value in the request is refused: a setting, a path, a static entry.
    InvalidValue,
    /// The kernel refused an operation (netlink, TAP ioctls, namespaces).
    Kernel,
    /// Not allowed: the peer, or the switch itself after dropping capabilities.
    Permission,
    /// This switch cannot do that here (a feature the host or the build lacks).
    Unsupported,
    /// The switch cannot serve now: it is stopping, every connection is busy, or
    /// libvirt cannot be reached.
    Unavailable,
    /// Anything else: a failure inside the switch.
    Internal,
    /// A code this client does not know (from a newer switch).
    #[serde(other)]
    Other,
}

/// A refused request: what kind of failure, and the message for people.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
#[error("{message}")]
pub struct RequestError {
    #[serde(rename = "code")]
    pub kind: ErrorKind,
    #[serde(rename = "error")]
    pub message: String,
}

impl RequestError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn invalid_value(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidValue, message)
    }

    pub fn permission(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permission, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// The same kind, with `suffix` after the message.
    pub fn suffixed(self, suffix: &str) -> Self {
        Self::new(self.kind, format!("{}{suffix}", self.message))
    }

    /// The same kind, the message prefixed (`port p1: …`).
    pub fn context(self, prefix: impl std::fmt::Display) -> Self {
        Self::new(self.kind, format!("{prefix}: {}", self.message))
    }
}

/// Permission for EPERM/EACCES, a kernel refusal otherwise.
fn errno_kind(errno: Option<i32>) -> ErrorKind {
    match errno {
        Some(libc::EPERM | libc::EACCES) => ErrorKind::Permission,
        Some(libc::EOPNOTSUPP) => ErrorKind::Unsupported,
        _ => ErrorKind::Kernel,
    }
}

impl From<DataplaneError> for RequestError {
    fn from(error: DataplaneError) -> Self {
        let kind = match &error {
            DataplaneError::UnknownPort { .. } => ErrorKind::NotFound,
            DataplaneError::PortExists { .. } => ErrorKind::AlreadyExists,
            DataplaneError::Fdb(_) | DataplaneError::Tunnel(_) => ErrorKind::InvalidValue,
            DataplaneError::Stopped => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        };
        Self::new(kind, error.to_string())
    }
}

impl From<NetnsError> for RequestError {
    fn from(error: NetnsError) -> Self {
        Self::new(netns_kind(&error), error.to_string())
    }
}

impl From<LinkError> for RequestError {
    fn from(error: LinkError) -> Self {
        let kind = match &error {
            LinkError::NotFound { .. } => ErrorKind::NotFound,
            LinkError::InvalidPrefix { .. } => ErrorKind::InvalidValue,
            LinkError::Netns(netns) => netns_kind(netns),
            other => errno_kind(other.errno()),
        };
        Self::new(kind, error.to_string())
    }
}

fn netns_kind(error: &NetnsError) -> ErrorKind {
    match error {
        NetnsError::InvalidName { .. } => ErrorKind::InvalidValue,
        NetnsError::NotFound { .. } => ErrorKind::NotFound,
        NetnsError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
        NetnsError::NotANamespace { .. } => ErrorKind::InvalidValue,
        NetnsError::Os { source, .. } => errno_kind(source.raw_os_error()),
    }
}

impl From<ConfigError> for RequestError {
    fn from(error: ConfigError) -> Self {
        Self::invalid_value(error.to_string())
    }
}

impl From<SwitchError> for RequestError {
    fn from(error: SwitchError) -> Self {
        let message = error.to_string();
        let kind = match error {
            SwitchError::Link { source, .. } => RequestError::from(source).kind,
            SwitchError::Netns { source, .. } => RequestError::from(source).kind,
            SwitchError::Dataplane(source) => RequestError::from(source).kind,
            SwitchError::Tap { .. } => ErrorKind::Kernel,
            SwitchError::NotATap { .. } | SwitchError::ForeignTap { .. } => {
                ErrorKind::AlreadyExists
            }
            SwitchError::NothingToAdopt { .. } => ErrorKind::NotFound,
            // Another socket has the UDP port: nothing wrong with the request itself.
            SwitchError::VxlanPortHeld { .. }
            | SwitchError::Vxlan {
                source: UdpError::PortInUse { .. },
                ..
            } => ErrorKind::AlreadyExists,
            SwitchError::Vxlan {
                source: UdpError::Sender { source, .. },
                ..
            } => match source.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => ErrorKind::Permission,
                _ => ErrorKind::Kernel,
            },
            _ => ErrorKind::InvalidValue,
        };
        Self::new(kind, message)
    }
}

impl From<VmPortError> for RequestError {
    fn from(error: VmPortError) -> Self {
        let message = error.to_string();
        let kind = match error {
            VmPortError::NotAVmPort { .. } => ErrorKind::InvalidValue,
            VmPortError::DeviceTaken { .. } => ErrorKind::AlreadyExists,
            VmPortError::Link { source, .. } => RequestError::from(*source).kind,
            _ => ErrorKind::Kernel,
        };
        Self::new(kind, message)
    }
}

impl From<VmError> for RequestError {
    fn from(error: VmError) -> Self {
        Self::invalid_value(error.to_string())
    }
}

#[cfg(feature = "libvirt")]
impl From<LibvirtError> for RequestError {
    fn from(error: LibvirtError) -> Self {
        let kind = match &error {
            LibvirtError::Unreachable { .. } => ErrorKind::Unavailable,
            LibvirtError::Interface(_) => ErrorKind::InvalidValue,
            _ => ErrorKind::Internal,
        };
        Self::new(kind, error.to_string())
    }
}

impl From<UpgradeError> for RequestError {
    fn from(error: UpgradeError) -> Self {
        Self::internal(error.to_string())
    }
}

/// One reply line: the request's result or why it was refused, and the protocol version
/// of the switch that sent it (`None`: a switch from before versions).
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub version: Option<u32>,
    pub outcome: Result<Value, RequestError>,
}

impl Response {
    /// A reply of this switch.
    pub fn new(outcome: Result<Value, RequestError>) -> Self {
        Self {
            version: Some(VERSION),
            outcome,
        }
    }

    /// A refusal of this switch.
    pub fn refusal(error: RequestError) -> Self {
        Self::new(Err(error))
    }

    /// The reply as it goes on the wire (without the newline).
    pub fn to_wire(&self) -> Value {
        let mut line = match &self.outcome {
            Ok(result) => json!({"ok": true, "result": result}),
            Err(error) => json!({"ok": false, "error": error.message, "code": error.kind}),
        };
        if let Some(version) = self.version {
            line["version"] = json!(version);
        }
        line
    }

    /// A reply line as parsed JSON; `None` when it is not a reply (no `"ok"`). A refusal
    /// without a code (from a switch before versions) counts as `internal`.
    pub fn from_wire(mut line: Value) -> Option<Self> {
        let version = line
            .get("version")
            .and_then(Value::as_u64)
            .map(|v| u32::try_from(v).unwrap_or(u32::MAX));
        let outcome = match line.get("ok")?.as_bool()? {
            true => Ok(line["result"].take()),
            false => Err(RequestError {
                kind: serde_json::from_value(line["code"].take()).unwrap_or(ErrorKind::Internal),
                message: line["error"]
                    .as_str()
                    .unwrap_or("no reason given")
                    .to_owned(),
            }),
        };
        Some(Self { version, outcome })
    }

    /// The outcome, if the switch speaks [`VERSION`] or newer (newer ones only add keys);
    /// otherwise the version it speaks (0: none).
    pub fn checked(self) -> Result<Result<Value, RequestError>, u32> {
        match self.version {
            Some(version) if version >= VERSION => Ok(self.outcome),
            other => Err(other.unwrap_or(0)),
        }
    }
}

/// What the switch answers a request with: one typed reply per request, built by the
/// server and sent as the reply line's `result`. The client decodes a `result` into the
/// reply type of its request with [`decode`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
// One reply per request, serialised and dropped.
#[allow(clippy::large_enum_variant)]
pub enum Reply {
    Hello(Hello),
    /// `port_add`, `port_del`, `port_set`.
    Port(PortReply),
    PortList(PortList),
    FdbShow(FdbShow),
    FdbFlushed(FdbFlushed),
    Stats(Stats),
    /// `config_show`.
    Config(Config),
    HandedOver(HandedOver),
    LibvirtXml(LibvirtXml),
    /// Done, nothing to report (`fdb_add`, `fdb_del`, `events` before its stream):
    /// `null` on the wire, decoded as `()`.
    Done,
    EvpnStatus(EvpnStatus),

    // ---- trace ----
    Trace(TraceReply),

    // ---- reload ----
    Reloaded(ReloadReply),
    // ---- capture ----
    /// `capture`, before its pcapng stream.
    Capture(CaptureReply),
}

// ---- reload ----
/// The `reload` reply: what the file changed. Empty lists: the file says what runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReply {
    /// The file read.
    pub file: PathBuf,
    /// Ports the file has that the switch did not run.
    pub added: Vec<String>,
    /// Ports of the file (or the command line) the file no longer has.
    pub removed: Vec<String>,
    /// Running ports whose runtime keys the file changes, with those keys.
    pub changed: Vec<PortKeysChanged>,
    /// Ports added at runtime (`port add`) that the file does not list: kept as they are.
    pub kept: Vec<String>,
}

/// One port of [`ReloadReply::changed`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortKeysChanged {
    pub port: String,
    pub keys: Vec<String>,
}

impl ReloadReply {
    /// The file changed nothing.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// What made the switch reload its config file, in reload events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadTrigger {
    /// `SIGHUP`.
    Signal,
    /// The `reload` request (`tapswitch reload`).
    Request,
}

/// A capture started: the pcapng stream follows this reply line on the connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureReply {
    /// The ports captured now, in the order of their interface blocks (a port
    /// added later under `--all` gets its block when its first frame comes).
    pub ports: Vec<String>,
    pub snaplen: u32,
    /// Frames the switch queues for this capture before it counts the next lost.
    pub queue_frames: usize,
}

impl Reply {
    /// The reply as a reply line's `result`.
    pub fn to_result(&self) -> Result<Value, RequestError> {
        serde_json::to_value(self)
            .map_err(|e| RequestError::internal(format!("the reply does not serialise: {e}")))
    }
}

/// A reply's `result` as the typed reply `T` of its request.
pub fn decode<T: serde::de::DeserializeOwned>(result: &Value) -> Result<T, serde_json::Error> {
    T::deserialize(result)
}

/// Where a domain is in its life, as far as plugging goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum DomainState {
    /// libvirt knows no domain of that name.
    Absent,
    /// Defined (persistent) but not running.
    Defined,
    /// Running; a transient domain (`virsh create`) is not persistent.
    Running { persistent: bool },
}

/// What a plug or unplug changed: the running domain (`live`), its stored definition
/// (`config`), neither (already so, or no such domain yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceChange {
    #[serde(flatten)]
    pub state: DomainState,
    pub live: bool,
    pub config: bool,
}

/// Why a VM port's NIC was not plugged or unplugged by libvirt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LibvirtStatus {
    /// libvirt could not be reached: the devices exist, the NIC waits.
    Unreachable,
}

/// What happened to a VM port's NIC in its domain, in a `port_add` or `port_del` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmNic {
    pub domain: String,
    /// For people: what was done, or why not.
    pub action: String,
    /// What libvirt changed, when it answered.
    #[serde(flatten)]
    pub change: Option<DeviceChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libvirt: Option<LibvirtStatus>,
}

/// The `port_add`, `port_del` and `port_set` reply: the port and its counters (the last
/// ones for `port_del`), and for a VM port what happened to its NIC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortReply {
    #[serde(flatten)]
    pub port: PortSnapshot,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmNic>,
}

/// The `stats` reply: a [`Snapshot`]'s counters without its MAC table (`fdb_show`'s).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub ports: Vec<PortSnapshot>,
    /// Ports removed after an I/O error, with their last counters.
    pub removed_ports: Vec<PortSnapshot>,
    pub fdb_size: usize,
    pub fdb_counters: FdbCounters,
    pub mac_flaps: Vec<MacFlapEntry>,
    pub loop_stats: LoopStats,
    pub events_dropped: u64,
    /// The EVPN agent's session with gobgpd, with `[evpn]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evpn: Option<EvpnSummary>,
    /// When the counters were read and since when the switch process runs: seconds
    /// since the Unix epoch, to the millisecond (absent from a switch that does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    /// `time - started_at`: how long this switch process has run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<f64>,
}

impl Stats {
    /// The counters stamped with the time now and the process's start.
    pub fn stamped(mut self, started: std::time::SystemTime) -> Self {
        let now = std::time::SystemTime::now();
        let epoch = |at: std::time::SystemTime| {
            at.duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |since| since.as_millis() as f64 / 1000.0)
        };
        self.time = Some(epoch(now));
        self.started_at = Some(epoch(started));
        self.uptime_secs = Some(
            now.duration_since(started)
                .map_or(0.0, |up| up.as_millis() as f64 / 1000.0),
        );
        self
    }
}

impl From<Snapshot> for Stats {
    fn from(snapshot: Snapshot) -> Self {
        let Snapshot {
            ports,
            removed_ports,
            fdb: _,
            fdb_remotes: _,
            fdb_size,
            fdb_counters,
            mac_flaps,
            loop_stats,
            events_dropped,
            evpn,
        } = snapshot;
        Self {
            ports,
            removed_ports,
            fdb_size,
            fdb_counters,
            mac_flaps,
            loop_stats,
            events_dropped,
            evpn,
            time: None,
            started_at: None,
            uptime_secs: None,
        }
    }
}

/// Whether a port's netdev carrier is up, in `port_list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Up,
    Down,
}

/// One port of the `port_list` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortListEntry {
    pub name: String,
    pub id: PortId,
    pub netns: Option<String>,
    pub mtu: u32,
    pub enabled: bool,
    pub link: LinkState,
    /// The TAP carries virtio-net headers (checksum and segmentation offloads).
    pub offloads: bool,
    pub persistent: bool,
    pub adopted: bool,
    /// The libvirt domain of a VM port.
    pub vm: Option<String>,
    /// The port's netdev as netlink reports it now (absent for a vxlan port, which has
    /// none, and when the switch cannot look: its namespace is out of reach).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netdev: Option<PortNetdev>,
    /// How the port takes part in VLANs.
    #[serde(default)]
    pub vlan: PortVlan,
}

/// A port's netdev, in `port_list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortNetdev {
    /// The device's name (the port's, or a netdev port's `device`).
    pub name: String,
    pub ifindex: u32,
    pub mac: Option<MacAddr>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Carrier present (`IFF_LOWER_UP`): for a TAP, someone holds its fd.
    pub carrier: bool,
    /// RFC 2863 operational state as iproute2 prints it (`UP`, `DOWN`, `UNKNOWN`, ...).
    pub oper_state: String,
    pub txqueuelen: u32,
}

/// A port's VLAN mode, in `port_list`: `mode` is `none` (transparent), `access` (with
/// `vlan`) or `trunk` (with `allowed_vlans` and maybe `native_vlan`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortVlan {
    pub mode: PortVlanMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_vlan: Option<u16>,
    /// The tagged VLANs of a trunk as configured (`10,20,100-199`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_vlans: Option<String>,
}

/// `vlan_mode`, with `none` for a transparent port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortVlanMode {
    #[default]
    None,
    Access,
    Trunk,
    /// A mode this client does not know (from a newer switch).
    #[serde(other)]
    Other,
}

/// The `port_list` reply.
pub type PortList = Vec<PortListEntry>;

/// One MAC table entry of the `fdb_show` reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FdbShowEntry {
    pub vlan: VlanId,
    pub mac: MacAddr,
    /// The port's name (`#ID` for a port already gone).
    pub port: String,
    pub port_id: PortId,
    pub kind: EntryKind,
    pub age_secs: f64,
    /// The remote VTEP the MAC lives behind, for an entry on a vxlan port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<IpAddr>,
    /// Who put the entry there (`other` from a switch that does not say).
    #[serde(default)]
    pub source: EntrySource,
}

/// Who put a MAC table entry there, in `fdb_show`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntrySource {
    /// Data-plane learning (dynamic and sticky entries).
    Learned,
    /// Configured: `fdb add` (or restored from the state file).
    Static,
    /// BGP EVPN (a type-2 route of a remote VTEP).
    Evpn,
    /// A source this client does not know (from a newer switch).
    #[default]
    #[serde(other)]
    Other,
}

impl From<EntryKind> for EntrySource {
    fn from(kind: EntryKind) -> Self {
        match kind {
            EntryKind::Dynamic | EntryKind::Sticky => EntrySource::Learned,
            EntryKind::Static => EntrySource::Static,
            // Only the EVPN agent installs remote entries.
            EntryKind::Remote => EntrySource::Evpn,
        }
    }
}

/// The `fdb_show` reply: the MAC table with port names, and its counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FdbShow {
    pub entries: Vec<FdbShowEntry>,
    pub counters: FdbCounters,
}

/// The `fdb_flush` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbFlushed {
    pub removed: u64,
}

/// The `hello` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub pid: u32,
    /// The switch's program version (not the protocol's: that is the reply's `version`).
    pub version: String,
    /// Where the switch serves metrics, if it does.
    pub metrics: Option<String>,
}

/// The `upgrade` reply: the process that took over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedOver {
    pub pid: u32,
    pub binary: PathBuf,
}

/// The `libvirt_xml` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibvirtXml {
    pub port: String,
    pub domain: Option<String>,
    pub device: String,
    pub mac: MacAddr,
    pub xml: String,
}

/// One line of the `events` stream as a client reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EventLine {
    Known(StreamEvent),
    /// An event this client does not know (a newer switch's kind, or a known kind whose
    /// fields changed), kept as the raw JSON object it came as, so that it still renders
    /// and `--json` passes it on unchanged. This is the one place the wire's untyped
    /// JSON reaches a client, on purpose.
    Unknown(serde_json::Map<String, Value>),
}

/// A known event and when the switch sent it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamEvent {
    #[serde(flatten)]
    pub event: Event,
    /// Seconds since the Unix epoch (to the millisecond) when the switch sent it;
    /// absent on `events_lost`, which the switch makes per subscriber.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<f64>,
}

/// An event of the `events` stream: the dataplane's [`crate::dataplane::Event`] with
/// port names. A port is named under its key (`port`, `from`, `to`, `evicted_from`,
/// `held_on`, `moved_to`: `#ID` for a port already gone) and its id kept as `<key>_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A source MAC not in the table was learned (`evicted_from`: a full table made
    /// room by evicting one of that port's entries).
    MacLearned {
        mac: MacAddr,
        port: String,
        port_id: PortId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        evicted_from: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        evicted_from_id: Option<PortId>,
    },
    /// A live learned MAC showed up on another port.
    MacMoved {
        mac: MacAddr,
        from: String,
        from_id: PortId,
        to: String,
        to_id: PortId,
    },
    PortAdded {
        port: String,
        port_id: PortId,
        mtu: u32,
    },
    PortRemoved {
        port: String,
        port_id: PortId,
        cause: RemovalCause,
    },
    /// Settings of a port changed (`port set`).
    PortChanged {
        port: String,
        port_id: PortId,
        update: PortChange,
    },
    /// Entries were flushed: all learned ones, or all of one port.
    FdbFlushed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port_id: Option<PortId>,
        removed: u64,
    },
    FdbStaticAdded {
        vlan: VlanId,
        mac: MacAddr,
        port: String,
        port_id: PortId,
    },
    FdbRemoved {
        vlan: VlanId,
        mac: MacAddr,
    },
    /// `mac` moved between ports too often: it stays on `held_on` while the hold lasts.
    MacFlap {
        vlan: VlanId,
        mac: MacAddr,
        held_on: String,
        held_on_id: PortId,
        moved_to: String,
        moved_to_id: PortId,
        flaps: u64,
    },
    /// A new source would have exceeded the port's `mac_limit`.
    MacLimitExceeded {
        port: String,
        port_id: PortId,
        vlan: VlanId,
        mac: MacAddr,
        limit: u32,
        action: ViolationAction,
        suppressed: u64,
    },
    /// The port's MAC limit disabled it.
    PortShutdown {
        port: String,
        port_id: PortId,
    },
    /// The port's netdev went down.
    PortLinkDown {
        port: String,
        port_id: PortId,
    },
    /// The port's netdev is up again.
    PortLinkUp {
        port: String,
        port_id: PortId,
    },
    /// The port's netdev moved to namespace `netns` (`null`: the switch's own).
    PortMoved {
        port: String,
        port_id: PortId,
        netns: Option<String>,
    },
    /// This subscriber's queue was full: `count` events before this one are lost.
    EventsLost {
        count: u64,
    },
    /// A VM port's NIC was plugged into its domain: the running one (`live`), its
    /// stored definition (`config`).
    VmInterfacePlugged {
        port: String,
        domain: Option<String>,
        live: bool,
        config: bool,
    },
    /// libvirt reported something of a domain that has VM ports (`alias`: the device
    /// of a `device_removed`).
    VmDomainEvent {
        domain: String,
        kind: VmDomainEventKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alias: Option<String>,
    },
    /// A VM port was removed because of its domain (`domain_gone`, `device_removed`).
    VmPortRemoved {
        port: String,
        domain: String,
        reason: String,
    },
    /// The EVPN agent has a session with gobgpd (again).
    EvpnConnected {
        gobgp: String,
        sessions: u64,
    },
    /// The EVPN agent has no session with gobgpd: forwarding goes on with the last state.
    EvpnDisconnected {
        gobgp: String,
        #[serde(default)]
        error: Option<String>,
    },

    // ---- reload ----
    /// The config file was read again and applied (`changes`: what it changed).
    ConfigReloaded {
        trigger: ReloadTrigger,
        #[serde(flatten)]
        changes: ReloadReply,
    },
    /// Reading or applying the config file failed: nothing changed.
    ConfigReloadFailed {
        trigger: ReloadTrigger,
        error: String,
    },
}

/// What libvirt reported of a domain, in a `vm_domain_event`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmDomainEventKind {
    Started,
    Stopped,
    Undefined,
    DeviceRemoved,
}

/// What a `port_changed` event says changed: the new MTU and state when they changed,
/// and whether the forwarding policy was replaced (the policy itself is `config_show`'s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortChange {
    // In key order: `events` shows the object as it is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub policy: bool,
    /// The netdev's new MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// The netdev's new transmit queue length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txqueuelen: Option<u32>,
}

impl From<&PortUpdate> for PortChange {
    fn from(update: &PortUpdate) -> Self {
        Self {
            mtu: update.mtu,
            enabled: update.enabled,
            policy: update.policy.is_some(),
            mac: update.mac,
            txqueuelen: update.txqueuelen,
        }
    }
}

impl Event {
    /// The dataplane's event with port names: `name` names a port by id (the event's
    /// own `name` wins for the port it adds, removes or changes).
    pub fn named(event: &DataplaneEvent, mut name: impl FnMut(PortId) -> String) -> Self {
        use DataplaneEvent as E;
        match event {
            E::MacLearned {
                mac,
                port,
                evicted_from,
            } => Event::MacLearned {
                mac: *mac,
                port: name(*port),
                port_id: *port,
                evicted_from: evicted_from.map(&mut name),
                evicted_from_id: *evicted_from,
            },
            E::MacMoved { mac, from, to } => Event::MacMoved {
                mac: *mac,
                from: name(*from),
                from_id: *from,
                to: name(*to),
                to_id: *to,
            },
            E::PortAdded {
                port,
                name: own,
                mtu,
            } => Event::PortAdded {
                port: own.clone(),
                port_id: *port,
                mtu: *mtu,
            },
            E::PortRemoved {
                port,
                name: own,
                cause,
            } => Event::PortRemoved {
                port: own.clone(),
                port_id: *port,
                cause: *cause,
            },
            E::PortChanged {
                port,
                name: own,
                update,
            } => Event::PortChanged {
                port: own.clone(),
                port_id: *port,
                update: update.into(),
            },
            E::FdbFlushed { port, removed } => Event::FdbFlushed {
                port: port.map(&mut name),
                port_id: *port,
                removed: *removed as u64,
            },
            E::FdbStaticAdded { vlan, mac, port } => Event::FdbStaticAdded {
                vlan: *vlan,
                mac: *mac,
                port: name(*port),
                port_id: *port,
            },
            E::FdbRemoved { vlan, mac } => Event::FdbRemoved {
                vlan: *vlan,
                mac: *mac,
            },
            E::MacFlap {
                vlan,
                mac,
                held_on,
                moved_to,
                flaps,
            } => Event::MacFlap {
                vlan: *vlan,
                mac: *mac,
                held_on: name(*held_on),
                held_on_id: *held_on,
                moved_to: name(*moved_to),
                moved_to_id: *moved_to,
                flaps: *flaps,
            },
            E::MacLimitExceeded {
                port,
                vlan,
                mac,
                limit,
                action,
                suppressed,
            } => Event::MacLimitExceeded {
                port: name(*port),
                port_id: *port,
                vlan: *vlan,
                mac: *mac,
                limit: *limit,
                action: *action,
                suppressed: *suppressed,
            },
            E::PortShutdown { port } => Event::PortShutdown {
                port: name(*port),
                port_id: *port,
            },
            E::PortLinkDown { port } => Event::PortLinkDown {
                port: name(*port),
                port_id: *port,
            },
            E::PortLinkUp { port } => Event::PortLinkUp {
                port: name(*port),
                port_id: *port,
            },
            E::PortMoved { port, netns } => Event::PortMoved {
                port: name(*port),
                port_id: *port,
                netns: netns.clone(),
            },
            E::EvpnConnected { gobgp, sessions } => Event::EvpnConnected {
                gobgp: gobgp.clone(),
                sessions: *sessions,
            },
            E::EvpnDisconnected { gobgp, error } => Event::EvpnDisconnected {
                gobgp: gobgp.clone(),
                error: error.clone(),
            },
        }
    }
}

/// One VNI of the `evpn_status` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvpnVniStatus {
    pub vni: u32,
    /// The vxlan port carrying it.
    pub port: String,
    /// VTEPs with a type-3 route for the VNI: its flood list.
    pub remote_vteps: Vec<Ipv4Addr>,
    /// MACs advertised from here (type-2 routes of ours).
    pub local_macs: usize,
    /// MACs programmed from other VTEPs' type-2 routes.
    pub remote_macs: usize,
}

/// The `evpn_status` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvpnStatus {
    /// gobgpd's API address.
    pub gobgp: String,
    /// This host's VTEP address (next hop of its routes).
    pub vtep: Ipv4Addr,
    pub asn: u16,
    pub connected: bool,
    /// Why the last connection attempt or session failed.
    pub last_error: Option<String>,
    /// Sessions with gobgpd so far.
    pub sessions: u64,
    pub vnis: Vec<EvpnVniStatus>,
    /// Paths from gobgpd that did not decode as routes tapswitch uses (ignored).
    pub undecodable_paths: u64,
}

// ---- trace ----

/// The `trace` reply: the forwarder's decision for one frame, step by step (the steps
/// name ports by id; `ports` names them). Only the forwarding decision: a frame over
/// the ingress port's MTU, or written to a port whose link is down, is dropped at the
/// dataplane's edge too (`oversize`, `link_down`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceReply {
    /// The ingress port.
    pub port: String,
    pub frame_len: usize,
    pub steps: Vec<TraceStep>,
    pub verdict: Verdict,
    /// Where the frame would go, ascending by port id.
    pub egress: Vec<TraceEgress>,
    /// What learning the source address would do.
    pub learned: Learned,
    /// Every port, by id.
    pub ports: Vec<TracePort>,
}

/// One egress port of a traced frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEgress {
    pub port: String,
    pub id: PortId,
    pub tag: TagAction,
}

/// A port's id and name, for the ids in a trace's steps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracePort {
    pub id: PortId,
    pub name: String,
}

impl TraceReply {
    /// The name of port `id` (its id when it has none: removed meanwhile).
    pub fn port_name(&self, id: PortId) -> String {
        self.ports
            .iter()
            .find(|port| port.id == id)
            .map_or_else(|| format!("#{}", id.0), |port| port.name.clone())
    }
}

impl From<TracedFrame> for TraceReply {
    fn from(traced: TracedFrame) -> Self {
        let ports: Vec<TracePort> = traced
            .ports
            .into_iter()
            .map(|(id, name)| TracePort { id, name })
            .collect();
        let name = |id: PortId| {
            ports
                .iter()
                .find(|port| port.id == id)
                .map_or_else(|| format!("#{}", id.0), |port| port.name.clone())
        };
        let Trace {
            steps,
            verdict,
            egress,
            learned,
        } = traced.trace;
        TraceReply {
            port: name(traced.ingress),
            frame_len: 0,
            steps,
            verdict,
            egress: egress
                .iter()
                .map(|out| TraceEgress {
                    port: name(out.port),
                    id: out.port,
                    tag: out.tag,
                })
                .collect(),
            learned,
            ports,
        }
    }
}

/// A frame written as hex (`--frame`): two digits a byte; spaces, `:` and `-` between
/// them are ignored.
pub fn parse_hex_frame(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| !matches!(b, b' ' | b':' | b'-' | b'\n' | b'\t'))
        .collect();
    if digits.len() % 2 != 0 {
        return Err(format!(
            "frame: {} hex digits is not a whole number of bytes",
            digits.len()
        ));
    }
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).map_err(|_| "frame: not hex".to_owned())?;
            u8::from_str_radix(pair, 16).map_err(|_| format!("frame: {pair:?} is not a hex byte"))
        })
        .collect()
}

/// Bytes as `parse_hex_frame` reads them.
pub fn hex_frame(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_carry_the_version_and_round_trip() {
        let ok = Response::new(Ok(json!([1, 2])));
        let wire = ok.to_wire();
        assert_eq!(
            wire,
            json!({"ok": true, "result": [1, 2], "version": VERSION})
        );
        assert_eq!(Response::from_wire(wire), Some(ok));
        let refused = Response::refusal(RequestError::not_found("no port named \"p9\""));
        let wire = refused.to_wire();
        assert_eq!(
            wire,
            json!({"ok": false, "error": "no port named \"p9\"", "code": "not_found", "version": VERSION})
        );
        assert_eq!(Response::from_wire(wire), Some(refused));
        assert_eq!(Response::from_wire(json!({"result": 1})), None);
    }

    #[test]
    fn older_switches_are_refused_with_their_version() {
        // A switch from before versions: no "version", no "code".
        let unversioned = Response::from_wire(json!({"ok": true, "result": null})).unwrap();
        assert_eq!(unversioned.checked(), Err(0));
        let refusal = Response::from_wire(json!({"ok": false, "error": "nope"})).unwrap();
        assert_eq!(refusal.clone().checked(), Err(0));
        assert_eq!(refusal.outcome.unwrap_err().kind, ErrorKind::Internal);
        let older = json!({"ok": true, "result": null, "version": VERSION - 1});
        assert_eq!(
            Response::from_wire(older).unwrap().checked(),
            Err(VERSION - 1)
        );
        // Newer switches only add keys: their replies are taken.
        let newer = json!({"ok": true, "result": 7, "version": VERSION + 1, "extra": 1});
        assert_eq!(
            Response::from_wire(newer).unwrap().checked(),
            Ok(Ok(json!(7)))
        );
    }

    #[test]
    fn error_codes_are_stable_snake_case() {
        let codes = [
            (ErrorKind::BadRequest, "bad_request"),
            (ErrorKind::NotFound, "not_found"),
            (ErrorKind::AlreadyExists, "already_exists"),
            (ErrorKind::InvalidValue, "invalid_value"),
            (ErrorKind::Kernel, "kernel"),
            (ErrorKind::Permission, "permission"),
            (ErrorKind::Unsupported, "unsupported"),
            (ErrorKind::Unavailable, "unavailable"),
            (ErrorKind::Internal, "internal"),
        ];
        for (kind, code) in codes {
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(code));
            assert_eq!(
                serde_json::from_value::<ErrorKind>(json!(code)).unwrap(),
                kind
            );
        }
        // A code from a newer switch still decodes.
        let unknown: ErrorKind = serde_json::from_value(json!("quota_exceeded")).unwrap();
        assert_eq!(unknown, ErrorKind::Other);
    }

    #[test]
    fn module_errors_keep_not_found_apart_from_kernel_refusals() {
        let missing = LinkError::NotFound {
            operation: "setting MTU 9000".into(),
            device: "p1".into(),
        };
        assert_eq!(RequestError::from(missing).kind, ErrorKind::NotFound);
        let refused = |errno| LinkError::Kernel {
            operation: "setting MTU 9000".into(),
            device: "p1".into(),
            source: std::io::Error::from_raw_os_error(errno),
            kernel_message: None,
        };
        assert_eq!(
            RequestError::from(refused(libc::EINVAL)).kind,
            ErrorKind::Kernel
        );
        assert_eq!(
            RequestError::from(refused(libc::EPERM)).kind,
            ErrorKind::Permission
        );
        let unknown = DataplaneError::UnknownPort { name: "p1".into() };
        let error = RequestError::from(unknown);
        assert_eq!(error.kind, ErrorKind::NotFound);
        assert_eq!(error.message, "no port named \"p1\"");
        assert_eq!(
            RequestError::from(DataplaneError::PortExists { name: "p1".into() }).kind,
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            RequestError::from(DataplaneError::Stopped).kind,
            ErrorKind::Unavailable
        );
        let wrapped = SwitchError::Link {
            port: "p1".into(),
            source: LinkError::NotFound {
                operation: "looking up".into(),
                device: "p1".into(),
            },
        };
        assert_eq!(RequestError::from(wrapped).kind, ErrorKind::NotFound);
    }

    #[test]
    fn typed_replies_round_trip_with_todays_keys() {
        let port = PortListEntry {
            name: "p1".into(),
            id: PortId(3),
            netns: None,
            mtu: 1500,
            enabled: true,
            link: LinkState::Down,
            offloads: false,
            persistent: false,
            adopted: true,
            vm: Some("guest".into()),
            netdev: None,
            vlan: PortVlan::default(),
        };
        let wire = serde_json::to_value(vec![port.clone()]).unwrap();
        assert_eq!(
            wire,
            json!([{"name": "p1", "id": 3, "netns": null, "mtu": 1500, "enabled": true,
                    "link": "down", "offloads": false, "persistent": false, "adopted": true,
                    "vm": "guest", "vlan": {"mode": "none"}}])
        );
        // A reply of a switch before `netdev` and `vlan` still decodes.
        let mut older = wire[0].clone();
        older.as_object_mut().unwrap().remove("vlan");
        assert_eq!(decode::<PortListEntry>(&older).unwrap(), port);
        assert_eq!(decode::<PortList>(&wire).unwrap(), vec![port]);
        let fdb = FdbShow {
            entries: vec![FdbShowEntry {
                vlan: 20,
                mac: "02:00:00:00:00:01".parse().unwrap(),
                port: "p1".into(),
                port_id: PortId(3),
                kind: EntryKind::Static,
                age_secs: 1.5,
                remote: None,
                source: EntrySource::Static,
            }],
            counters: FdbCounters::default(),
        };
        let wire = serde_json::to_value(&fdb).unwrap();
        assert_eq!(wire["entries"][0]["mac"], "02:00:00:00:00:01");
        assert!(wire["entries"][0].get("remote").is_none());
        assert_eq!(wire["entries"][0]["kind"], "static");
        assert_eq!(wire["entries"][0]["source"], "static");
        assert_eq!(wire["counters"]["aged_out"], 0);
        assert_eq!(decode::<FdbShow>(&wire).unwrap(), fdb);
        assert!(decode::<FdbShow>(&json!({"entries": 3})).is_err());
    }

    #[test]
    fn port_stats_and_done_replies_round_trip() {
        let port = PortSnapshot {
            id: PortId(2),
            name: "p2".into(),
            mtu: 1500,
            vnet_hdr: true,
            enabled: true,
            link_up: false,
            counters: Default::default(),
            netdev_tx_dropped: Some(7),
            removed_at: None,
            tunnel: None,
        };
        let reply = PortReply {
            port: port.clone(),
            vm: Some(VmNic {
                domain: "guest".into(),
                action: "hot-plugged into the running domain".into(),
                change: Some(DeviceChange {
                    state: DomainState::Running { persistent: true },
                    live: true,
                    config: false,
                }),
                libvirt: None,
            }),
        };
        let wire = Reply::Port(reply.clone()).to_result().unwrap();
        assert_eq!(wire["name"], "p2");
        assert_eq!(wire["vm"]["state"], "running");
        assert_eq!(wire["counters"]["drops"]["link_down"], 0);
        assert_eq!(decode::<PortReply>(&wire).unwrap(), reply);
        let stats = Stats {
            ports: vec![port],
            removed_ports: vec![],
            fdb_size: 3,
            fdb_counters: FdbCounters::default(),
            mac_flaps: vec![],
            loop_stats: LoopStats::default(),
            events_dropped: 1,
            evpn: None,
            time: Some(1_700_000_000.5),
            started_at: Some(1_699_999_000.0),
            uptime_secs: Some(1000.5),
        };
        let wire = Reply::Stats(stats.clone()).to_result().unwrap();
        assert_eq!(wire["uptime_secs"], 1000.5);
        assert!(wire.get("fdb").is_none());
        assert!(wire.get("evpn").is_none(), "no [evpn], no key");
        assert_eq!(decode::<Stats>(&wire).unwrap(), stats);
        assert_eq!(Reply::Done.to_result().unwrap(), Value::Null);
        decode::<()>(&Value::Null).unwrap();
    }

    #[test]
    fn event_lines_round_trip_with_todays_keys() {
        let names = |id: PortId| format!("p{}", id.0);
        let mac: MacAddr = "02:00:00:00:00:01".parse().unwrap();
        let cases = [
            (
                DataplaneEvent::MacLearned {
                    mac,
                    port: PortId(1),
                    evicted_from: Some(PortId(2)),
                },
                json!({"event": "mac_learned", "mac": "02:00:00:00:00:01", "port": "p1",
                       "port_id": 1, "evicted_from": "p2", "evicted_from_id": 2}),
            ),
            (
                DataplaneEvent::PortAdded {
                    port: PortId(4),
                    name: "uplink".into(),
                    mtu: 1500,
                },
                json!({"event": "port_added", "port": "uplink", "port_id": 4, "mtu": 1500}),
            ),
            (
                DataplaneEvent::PortChanged {
                    port: PortId(4),
                    name: "uplink".into(),
                    update: PortUpdate {
                        mtu: Some(9000),
                        enabled: None,
                        policy: Some(Default::default()),
                        ..PortUpdate::default()
                    },
                },
                json!({"event": "port_changed", "port": "uplink", "port_id": 4,
                       "update": {"mtu": 9000, "policy": true}}),
            ),
            (
                DataplaneEvent::FdbFlushed {
                    port: None,
                    removed: 3,
                },
                json!({"event": "fdb_flushed", "removed": 3}),
            ),
            (
                DataplaneEvent::MacFlap {
                    vlan: 20,
                    mac,
                    held_on: PortId(1),
                    moved_to: PortId(2),
                    flaps: 5,
                },
                json!({"event": "mac_flap", "vlan": 20, "mac": "02:00:00:00:00:01",
                       "held_on": "p1", "held_on_id": 1, "moved_to": "p2", "moved_to_id": 2,
                       "flaps": 5}),
            ),
            (
                DataplaneEvent::PortMoved {
                    port: PortId(3),
                    netns: None,
                },
                json!({"event": "port_moved", "port": "p3", "port_id": 3, "netns": null}),
            ),
        ];
        for (event, mut expected) in cases {
            let line = StreamEvent {
                event: Event::named(&event, names),
                time: Some(1.5),
            };
            expected["time"] = json!(1.5);
            let wire = serde_json::to_value(&line).unwrap();
            assert_eq!(wire, expected);
            assert_eq!(
                EventLine::deserialize(&wire).unwrap(),
                EventLine::Known(line)
            );
        }
        let lost = json!({"event": "events_lost", "count": 7});
        assert_eq!(
            EventLine::deserialize(&lost).unwrap(),
            EventLine::Known(StreamEvent {
                event: Event::EventsLost { count: 7 },
                time: None
            })
        );
        // The control plane's own events (VM ports), as they have always gone out.
        for wire in [
            json!({"event": "vm_domain_event", "domain": "guest", "kind": "device_removed",
                   "alias": "ua-tapswitch-p1", "time": 1.5}),
            json!({"event": "vm_port_removed", "port": "p1", "domain": "guest",
                   "reason": "domain_gone", "time": 1.5}),
            json!({"event": "vm_interface_plugged", "port": "p1", "domain": "guest",
                   "live": true, "config": false, "time": 1.5}),
        ] {
            let line = EventLine::deserialize(&wire).unwrap();
            assert!(matches!(line, EventLine::Known(_)), "{wire}");
            assert_eq!(serde_json::to_value(&line).unwrap(), wire);
        }
        // A newer switch's event still decodes, whole.
        let newer = json!({"event": "vtep_learned", "remote": "192.0.2.1", "time": 2.0});
        let EventLine::Unknown(object) = EventLine::deserialize(&newer).unwrap() else {
            panic!("an unknown event decoded as a known one");
        };
        assert_eq!(Value::Object(object), newer);
    }
}
