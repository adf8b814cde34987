//! Network device management over rtnetlink: look up, configure, move, address and delete
//! links, stack a macvtap on a TAP, and glue two TAPs with tc redirects, synchronously and
//! without shelling out to `ip` or `tc`.
//!
//! Every request carries `NLM_F_ACK`, so each call returns only once the kernel has applied it
//! or refused it; a refusal becomes a [`LinkError`] carrying the kernel's errno (and its extended
//! ack message when there is one).

use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, Nla, NlaBuffer, NlasIterator,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVtap, InfoTun, InfoVxlan, LinkAttribute, LinkFlags,
    LinkInfo as LinkInfoAttribute, LinkMessage, MacVtapMode,
};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirrorOption, TcActionOption, TcActionType, TcAttribute,
    TcFilterU32Option, TcHandle, TcMessage, TcMirror, TcMirrorActionType, TcOption, TcU32Key,
    TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use serde::Serialize;

use crate::sys::netns::{self, NetnsError, NetnsFd};

/// Set on an `NLMSG_ERROR` when the echoed request was truncated to its header.
const NLM_F_CAPPED: u16 = 0x100;
/// Set on an `NLMSG_ERROR` when extended-ack attributes follow the echoed request.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// Extended-ack attribute carrying the kernel's human-readable reason.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Size of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;
/// `ETH_P_ALL`: a tc filter with this protocol sees every frame.
const ETH_P_ALL: u16 = 0x0003;
/// Handle of the ingress qdisc (`ffff:`), the parent of ingress filters.
const INGRESS_QDISC_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};
/// Priority of the glue's redirect filter (`tc filter ... prio 1`).
pub const TAP_GLUE_FILTER_PRIORITY: u16 = 1;

/// Errors from link operations. Kernel refusals name the operation and the device.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The kernel refused the request.
    #[error("{operation} on {device} failed: {source}{}", kernel_note(.kernel_message))]
    Kernel {
        /// What was asked, e.g. "setting MTU 9000".
        operation: String,
        /// The device name, or "ifindex N" when it could not be resolved.
        device: String,
        /// The kernel's errno.
        source: io::Error,
        /// The kernel's extended-ack explanation, when it gave one.
        kernel_message: Option<String>,
    },
    /// The device does not exist (ENODEV, or no such name).
    #[error("{operation} failed: network device {device} not found")]
    NotFound {
        /// What was asked.
        operation: String,
        /// The missing device's name, or "ifindex N".
        device: String,
    },
    /// Sending to or receiving from the netlink socket failed.
    #[error("{operation} on {device}: netlink {step} failed: {source}")]
    Socket {
        /// What was asked.
        operation: String,
        /// The device concerned.
        device: String,
        /// "send", "receive", ...
        step: &'static str,
        /// The socket error.
        source: io::Error,
    },
    /// Creating the NETLINK_ROUTE socket failed.
    #[error("opening a NETLINK_ROUTE socket failed at {step}: {source}")]
    Open {
        /// "socket", "bind" or "connect".
        step: &'static str,
        /// The socket error.
        source: io::Error,
    },
    /// The kernel's reply could not be understood.
    #[error("{operation} on {device}: unexpected netlink reply: {reason}")]
    BadReply {
        /// What was asked.
        operation: String,
        /// The device concerned.
        device: String,
        /// What was wrong with the reply.
        reason: String,
    },
    /// The prefix length does not fit the address family.
    #[error("prefix length /{prefix_len} is too long for {address}")]
    InvalidPrefix {
        /// The address being added.
        address: IpAddr,
        /// The rejected prefix length.
        prefix_len: u8,
    },
    /// Entering the network namespace for [`Netlink::open_in`] failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

impl LinkError {
    /// The kernel errno behind this error, if the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { source, .. }
            | Self::Socket { source, .. }
            | Self::Open { source, .. } => source.raw_os_error(),
            Self::NotFound { .. } => Some(libc::ENODEV),
            Self::BadReply { .. } | Self::InvalidPrefix { .. } | Self::Netns(_) => None,
        }
    }
}

fn kernel_note(message: &Option<String>) -> String {
    match message {
        Some(message) => format!(" ({message})"),
        None => String::new(),
    }
}

/// Link settings to apply together; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkSettings {
    /// Administrative state (IFF_UP).
    pub up: Option<bool>,
    /// MTU in bytes.
    pub mtu: Option<u32>,
    /// Ethernet address.
    pub mac: Option<[u8; 6]>,
    /// Transmit queue length in packets.
    pub txqueuelen: Option<u32>,
    /// The interface alias (IFLA_IFALIAS, `ip link set NAME alias TEXT`).
    pub alias: Option<String>,
}

impl LinkSettings {
    /// "setting link up, MTU 9000": what these settings ask for, for error messages.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        match self.up {
            Some(true) => parts.push("link up".to_owned()),
            Some(false) => parts.push("link down".to_owned()),
            None => {}
        }
        if let Some(mtu) = self.mtu {
            parts.push(format!("MTU {mtu}"));
        }
        if let Some(mac) = self.mac {
            parts.push(format!("MAC {}", format_mac(&mac)));
        }
        if let Some(len) = self.txqueuelen {
            parts.push(format!("txqueuelen {len}"));
        }
        if let Some(alias) = &self.alias {
            parts.push(format!("alias {alias:?}"));
        }
        if parts.is_empty() {
            "configuring (no changes)".to_owned()
        } else {
            format!("setting {}", parts.join(", "))
        }
    }
}

/// Traffic counters of a link (from IFLA_STATS64).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets transmitted.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Packets dropped on transmit.
    pub tx_dropped: u64,
}

/// A snapshot of a link's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// MTU in bytes.
    pub mtu: u32,
    /// Ethernet address, when the link has a 6-byte one; serialised as "aa:bb:cc:dd:ee:ff".
    #[serde(serialize_with = "serialize_mac")]
    pub mac: Option<[u8; 6]>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Carrier present (IFF_LOWER_UP or IFLA_CARRIER).
    pub carrier: bool,
    /// RFC 2863 operational state as iproute2 prints it ("UP", "DOWN", "UNKNOWN", ...).
    pub oper_state: String,
    /// Transmit queue length in packets.
    pub txqueuelen: u32,
    /// Traffic counters.
    pub stats: LinkStats,
    /// Index of the device this one is enslaved to (IFLA_MASTER: a bridge, bond, VRF).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<u32>,
}

fn serialize_mac<S: serde::Serializer>(mac: &Option<[u8; 6]>, s: S) -> Result<S::Ok, S::Error> {
    match mac {
        Some(mac) => s.serialize_str(&format_mac(mac)),
        None => s.serialize_none(),
    }
}

/// A link that exists already under some name, as far as it matters to whoever wants the
/// name for a TAP: what kind of device it is and who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingLink {
    /// Interface index.
    pub index: u32,
    /// IFLA_INFO_KIND: `tun` (TUN and TAP), `veth`, `bridge`, `macvtap`...; `None` for a
    /// device without one (a physical NIC, loopback).
    pub kind: Option<String>,
    /// IFLA_IFALIAS, if set.
    pub alias: Option<String>,
    /// The TUN/TAP settings, when `kind` is `tun`.
    pub tun: Option<TunInfo>,
}

/// The settings of a TUN/TAP device (IFLA_TUN_* of its IFLA_INFO_DATA).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunInfo {
    /// A TAP (Ethernet frames), not a TUN (IP packets).
    pub tap: bool,
    /// Frames carry a 4-byte packet-information prefix (IFF_NO_PI clear).
    pub packet_info: bool,
    /// Frames carry a virtio-net header (IFF_VNET_HDR).
    pub vnet_hdr: bool,
    /// The device outlives its last fd (TUNSETPERSIST).
    pub persistent: bool,
    /// IFF_MULTI_QUEUE.
    pub multi_queue: bool,
    /// File descriptors attached now.
    pub attached_queues: u32,
}

impl ExistingLink {
    /// "a veth device", "a TUN device (IP packets, not Ethernet frames)": for messages.
    pub fn describe(&self) -> String {
        match (&self.kind, &self.tun) {
            (_, Some(tun)) if !tun.tap => "a TUN device (IP packets, not Ethernet frames)".into(),
            (_, Some(_)) => "a TAP device".into(),
            (Some(kind), None) => format!("a {kind} device"),
            (None, None) => "a device without a link kind (a physical NIC or loopback)".into(),
        }
    }
}

/// `IFLA_TUN_*` from `linux/if_link.h`, which netlink-packet-route passes through raw.
mod ifla_tun {
    pub const TYPE: u16 = 3;
    pub const PI: u16 = 4;
    pub const VNET_HDR: u16 = 5;
    pub const PERSIST: u16 = 6;
    pub const MULTI_QUEUE: u16 = 7;
    pub const NUM_QUEUES: u16 = 8;
    /// `IFF_TAP`, the value of IFLA_TUN_TYPE for a TAP.
    pub const IFF_TAP: u8 = 2;
}

fn existing_link_from(link: LinkMessage) -> ExistingLink {
    let mut existing = ExistingLink {
        index: link.header.index,
        kind: None,
        alias: None,
        tun: None,
    };
    for attribute in link.attributes {
        match attribute {
            LinkAttribute::IfAlias(alias) => existing.alias = Some(alias),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfoAttribute::Kind(kind) => existing.kind = Some(kind.to_string()),
                        LinkInfoAttribute::Data(InfoData::Tun(attributes)) => {
                            existing.tun = Some(tun_info_from(&attributes));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if existing.tun.is_none() && existing.kind.as_deref() == Some("tun") {
        // A kernel that sends no IFLA_INFO_DATA for tun: nothing known about its flags.
        existing.tun = Some(TunInfo {
            tap: true,
            ..TunInfo::default()
        });
    }
    existing
}

fn tun_info_from(attributes: &[InfoTun]) -> TunInfo {
    let mut tun = TunInfo::default();
    for attribute in attributes {
        let mut value = vec![0; attribute.value_len()];
        attribute.emit_value(&mut value);
        let byte = value.first().copied().unwrap_or(0);
        match attribute.kind() {
            ifla_tun::TYPE => tun.tap = byte == ifla_tun::IFF_TAP,
            ifla_tun::PI => tun.packet_info = byte != 0,
            ifla_tun::VNET_HDR => tun.vnet_hdr = byte != 0,
            ifla_tun::PERSIST => tun.persistent = byte != 0,
            ifla_tun::MULTI_QUEUE => tun.multi_queue = byte != 0,
            ifla_tun::NUM_QUEUES => {
                tun.attached_queues = <[u8; 4]>::try_from(value.as_slice())
                    .map(u32::from_ne_bytes)
                    .unwrap_or(0);
            }
            _ => {}
        }
    }
    tun
}

/// Formats a MAC address as lower-case colon-separated hex.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let mut out = String::with_capacity(17);
    for (i, byte) in mac.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Why a netlink exchange failed, before the caller adds which operation and device.
enum Failure {
    Kernel {
        source: io::Error,
        kernel_message: Option<String>,
    },
    Socket {
        step: &'static str,
        source: io::Error,
    },
    BadReply(String),
}

/// A NETLINK_ROUTE socket bound to the namespace it was opened in, plus a sequence counter.
pub struct Netlink {
    socket: Socket,
    sequence: u32,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::os::fd::AsRawFd;
        f.debug_struct("Netlink")
            .field("fd", &self.socket.as_raw_fd())
            .field("sequence", &self.sequence)
            .finish()
    }
}

impl Netlink {
    /// Opens a socket on the calling thread's network namespace.
    pub fn open() -> Result<Self, LinkError> {
        let open_err = |step| move |source| LinkError::Open { step, source };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(open_err("socket"))?;
        socket.bind_auto().map_err(open_err("bind"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(open_err("connect"))?;
        // Both are best effort: they only make error replies shorter and more explanatory.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_ext_ack(true);
        Ok(Self {
            socket,
            sequence: 0,
        })
    }

    /// Opens a socket inside named network namespace `netns`; it keeps operating there.
    pub fn open_in(netns: &str) -> Result<Self, LinkError> {
        netns::run_in(netns, Self::open)?
    }

    /// The interface index of link `name`.
    pub fn index_of(&mut self, name: &str) -> Result<u32, LinkError> {
        self.index_of_in(None, name)
    }

    /// The interface index of link `name` in the namespace with id `nsid` (see
    /// [`Self::netns_id`]); `None` is this socket's own namespace.
    pub fn index_of_in(&mut self, nsid: Option<i32>, name: &str) -> Result<u32, LinkError> {
        Ok(self
            .get_link_by_name(nsid, name, "looking up the index")?
            .header
            .index)
    }

    /// A snapshot of link `name`: state, addresses and counters.
    pub fn info(&mut self, name: &str) -> Result<LinkInfo, LinkError> {
        self.info_in(None, name)
    }

    /// [`Self::info`] of link `name` in the namespace with id `nsid`.
    pub fn info_in(&mut self, nsid: Option<i32>, name: &str) -> Result<LinkInfo, LinkError> {
        let operation = "reading link info";
        let link = self.get_link_by_name(nsid, name, operation)?;
        link_info_from(link).map_err(|reason| LinkError::BadReply {
            operation: operation.to_owned(),
            device: name.to_owned(),
            reason,
        })
    }

    /// What link `name` is, if one exists: its kind, alias and, for a TUN/TAP device, the
    /// flags its creator gave it. `None` when there is no such link.
    pub fn existing(&mut self, name: &str) -> Result<Option<ExistingLink>, LinkError> {
        match self.get_link_by_name(None, name, "looking up an existing device") {
            Ok(link) => Ok(Some(existing_link_from(link))),
            Err(error) if error.errno() == Some(libc::ENODEV) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Applies all of `settings` to link `index` in one RTM_SETLINK.
    ///
    /// The kernel applies the attributes one after another and stops at the first it refuses,
    /// so on error the settings before the failing one may already be in effect.
    pub fn configure(&mut self, index: u32, settings: &LinkSettings) -> Result<(), LinkError> {
        self.request(
            RouteNetlinkMessage::SetLink(settings_message(index, settings)),
            0,
        )
        .map(drop)
        .map_err(|failure| self.error_for_index(failure, settings.describe(), index))
    }

    /// Moves link `index` into namespace `netns`, renames it `name` there and applies
    /// `settings`, all in one RTM_SETLINK (the kernel moves first, then renames and
    /// configures in the new namespace). The link can so be made under a temporary name
    /// here without clashing with a namesake in our namespace.
    pub fn move_and_configure(
        &mut self,
        index: u32,
        netns: &NetnsFd,
        name: &str,
        settings: &LinkSettings,
    ) -> Result<(), LinkError> {
        let mut link = settings_message(index, settings);
        link.attributes
            .push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
        link.attributes.push(LinkAttribute::IfName(name.to_owned()));
        self.request(RouteNetlinkMessage::SetLink(link), 0)
            .map(drop)
            .map_err(|failure| {
                self.error_for_index(
                    failure,
                    format!(
                        "moving to its network namespace as {name} and {}",
                        settings.describe()
                    ),
                    index,
                )
            })
    }

    /// The id our namespace knows namespace `netns` by, assigning one if it has none.
    /// With an id, links in there can be read from here ([`Self::info_in`]) and their
    /// notifications reach a [`LinkMonitor`]; an id does not keep the namespace alive.
    pub fn netns_id(&mut self, netns: &NetnsFd) -> Result<i32, LinkError> {
        let query = |kind: fn(NsidMessage) -> RouteNetlinkMessage, with_id: bool| {
            let mut message = NsidMessage::default();
            message
                .attributes
                .push(NsidAttribute::Fd(netns.as_raw_fd() as u32));
            if with_id {
                // -1: any free id.
                message.attributes.push(NsidAttribute::Id(-1));
            }
            kind(message)
        };
        let to_error = |failure| {
            link_error(
                failure,
                "finding the namespace id".to_owned(),
                "a network namespace".to_owned(),
            )
        };
        for attempt in 0..2 {
            let replies = self
                .request(query(RouteNetlinkMessage::GetNsId, false), 0)
                .map_err(to_error)?;
            let id = replies.into_iter().find_map(|reply| match reply {
                RouteNetlinkMessage::NewNsId(message) => {
                    message.attributes.into_iter().find_map(|a| match a {
                        NsidAttribute::Id(id) => Some(id),
                        _ => None,
                    })
                }
                _ => None,
            });
            match id {
                Some(id) if id >= 0 => return Ok(id),
                _ if attempt == 0 => {
                    match self.request(query(RouteNetlinkMessage::NewNsId, true), 0) {
                        Ok(_) => {}
                        // Assigned by someone else meanwhile: read it again.
                        Err(Failure::Kernel { source, .. })
                            if source.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(failure) => return Err(to_error(failure)),
                    }
                }
                _ => {}
            }
        }
        Err(LinkError::BadReply {
            operation: "finding the namespace id".to_owned(),
            device: "a network namespace".to_owned(),
            reason: "no id after assigning one".to_owned(),
        })
    }

    /// Moves link `index` into the network namespace `netns` (IFLA_NET_NS_FD). Afterwards it is
    /// reachable only through a [`Netlink`] opened in that namespace, possibly under a new index.
    pub fn move_to_netns(&mut self, index: u32, netns: &NetnsFd) -> Result<(), LinkError> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.attributes
            .push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
        self.request(RouteNetlinkMessage::SetLink(link), 0)
            .map(drop)
            .map_err(|failure| {
                self.error_for_index(
                    failure,
                    "moving to another network namespace".to_owned(),
                    index,
                )
            })
    }

    /// Creates macvtap `name` in `passthru` mode on top of link `lower_index` (RTM_NEWLINK) and
    /// returns its interface index; the character device QEMU opens is
    /// [`macvtap_device_path`] of that index.
    ///
    /// Passthru puts the lower device in promiscuous mode and hands every frame it receives to
    /// the macvtap, whatever its destination MAC: the guest behind the macvtap sees exactly what
    /// the lower device's wire side sends. A passthru macvtap is created with the lower
    /// device's address whatever IFLA_ADDRESS says, so `mac` is applied by a second request
    /// once it exists, and the kernel then gives it to the lower device too; `None` keeps the
    /// lower device's. If that second step fails, the macvtap is deleted again.
    pub fn create_macvtap(
        &mut self,
        name: &str,
        lower_index: u32,
        mac: Option<[u8; 6]>,
    ) -> Result<u32, LinkError> {
        let mut link = LinkMessage::default();
        link.attributes.push(LinkAttribute::IfName(name.to_owned()));
        link.attributes.push(LinkAttribute::Link(lower_index));
        link.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfoAttribute::Kind(InfoKind::MacVtap),
            LinkInfoAttribute::Data(InfoData::MacVtap(vec![InfoMacVtap::Mode(
                MacVtapMode::Passthrough,
            )])),
        ]));
        self.request(
            RouteNetlinkMessage::NewLink(link),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map_err(|failure| {
            self.error_for_index(
                failure,
                format!("creating passthru macvtap {name}"),
                lower_index,
            )
        })?;
        let index = self.index_of(name)?;
        if let Some(mac) = mac {
            let settings = LinkSettings {
                mac: Some(mac),
                ..LinkSettings::default()
            };
            if let Err(error) = self.configure(index, &settings) {
                let _ = self.delete(index);
                return Err(error);
            }
        }
        Ok(index)
    }

    /// Joins links `a_index` and `b_index` into one wire in the kernel: an ingress qdisc on each,
    /// holding a `u32` match-all filter whose `mirred egress redirect` sends every frame the
    /// device receives out of the other one. This is how a VM's own TAP (opened by QEMU) is
    /// glued to a switch port's TAP (whose fd the switch holds): a frame QEMU writes is received
    /// by the VM TAP's netdev and leaves through the port TAP's netdev to the switch's fd, and
    /// back.
    ///
    /// `u32` and `mirred` rather than `matchall`, which not every kernel builds. The glue owns
    /// the ingress qdisc of both devices: an existing one is reused, and
    /// [`remove_tap_glue`](Self::remove_tap_glue) deletes it with every filter on it. On error
    /// nothing is rolled back; call `remove_tap_glue` to clean up.
    pub fn create_tap_glue(&mut self, a_index: u32, b_index: u32) -> Result<(), LinkError> {
        // Both ends are resolved first: the kernel's ENODEV for a missing redirect target would
        // otherwise read as if the device carrying the filter were missing.
        let mut names = Vec::with_capacity(2);
        for index in [a_index, b_index] {
            let name = self.name_of(index).ok_or_else(|| LinkError::NotFound {
                operation: format!("gluing ifindex {a_index} and ifindex {b_index}"),
                device: format!("ifindex {index}"),
            })?;
            names.push(name);
        }
        for (from, to, to_name) in [(a_index, b_index, &names[1]), (b_index, a_index, &names[0])] {
            self.add_ingress_qdisc(from)?;
            let filter = redirect_all_filter(from, to);
            self.request(
                RouteNetlinkMessage::NewTrafficFilter(filter),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map_err(|failure| {
                self.error_for_index(
                    failure,
                    format!("adding a u32 filter redirecting every frame to {to_name}"),
                    from,
                )
            })?;
        }
        Ok(())
    }

    /// Undoes [`create_tap_glue`](Self::create_tap_glue): deletes the ingress qdisc (and so its
    /// filters) of both links. A link that is gone, or has no ingress qdisc, is already unglued.
    pub fn remove_tap_glue(&mut self, a_index: u32, b_index: u32) -> Result<(), LinkError> {
        for index in [a_index, b_index] {
            // Handle 0, as `tc qdisc del dev X ingress` sends: a device without an ingress qdisc
            // then answers ENOENT, where naming the handle would give EINVAL ("Invalid handle").
            let mut qdisc = TcMessage::with_index(index as i32);
            qdisc.header.parent = TcHandle::INGRESS;
            match self.request(RouteNetlinkMessage::DelQueueDiscipline(qdisc), 0) {
                Ok(_) => {}
                Err(Failure::Kernel { source, .. })
                    if matches!(source.raw_os_error(), Some(libc::ENODEV | libc::ENOENT)) => {}
                Err(failure) => {
                    return Err(self.error_for_index(
                        failure,
                        "deleting the ingress qdisc".to_owned(),
                        index,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Adds the ingress qdisc to link `index`, or keeps the one it has.
    fn add_ingress_qdisc(&mut self, index: u32) -> Result<(), LinkError> {
        let mut qdisc = TcMessage::with_index(index as i32);
        qdisc.header.handle = INGRESS_QDISC_HANDLE;
        qdisc.header.parent = TcHandle::INGRESS;
        qdisc
            .attributes
            .push(TcAttribute::Kind("ingress".to_owned()));
        match self.request(
            RouteNetlinkMessage::NewQueueDiscipline(qdisc),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(_) => Ok(()),
            Err(Failure::Kernel { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {
                Ok(())
            }
            Err(failure) => {
                Err(self.error_for_index(failure, "adding an ingress qdisc".to_owned(), index))
            }
        }
    }

    /// Deletes link `index` (RTM_DELLINK).
    pub fn delete(&mut self, index: u32) -> Result<(), LinkError> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(link), 0)
            .map(drop)
            .map_err(|failure| self.error_for_index(failure, "deleting the link".to_owned(), index))
    }

    /// Adds address `ip/prefix_len` to link `index` (RTM_NEWADDR); an existing identical
    /// address is an error (EEXIST).
    pub fn add_address(&mut self, index: u32, ip: IpAddr, prefix_len: u8) -> Result<(), LinkError> {
        let max_prefix = if ip.is_ipv4() { 32 } else { 128 };
        if prefix_len > max_prefix {
            return Err(LinkError::InvalidPrefix {
                address: ip,
                prefix_len,
            });
        }
        let mut address = AddressMessage::default();
        address.header.family = if ip.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        address.header.prefix_len = prefix_len;
        address.header.scope = AddressScope::Universe;
        address.header.index = index;
        // As iproute2 does without a peer: the local address is also the prefix address.
        address.attributes.push(AddressAttribute::Local(ip));
        address.attributes.push(AddressAttribute::Address(ip));
        self.request(
            RouteNetlinkMessage::NewAddress(address),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
        .map_err(|failure| {
            self.error_for_index(failure, format!("adding address {ip}/{prefix_len}"), index)
        })
    }

    fn get_link_by_name(
        &mut self,
        nsid: Option<i32>,
        name: &str,
        operation: &str,
    ) -> Result<LinkMessage, LinkError> {
        let mut query = LinkMessage::default();
        query
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        if let Some(nsid) = nsid {
            query.attributes.push(LinkAttribute::IfNetnsId(nsid));
        }
        let to_error = |reason: String| LinkError::BadReply {
            operation: operation.to_owned(),
            device: name.to_owned(),
            reason,
        };
        let replies = self
            .request(RouteNetlinkMessage::GetLink(query), 0)
            .map_err(|failure| link_error(failure, operation.to_owned(), name.to_owned()))?;
        single_link(replies).map_err(to_error)
    }

    /// The names of the Linux vxlan devices of this socket's namespace that are up with UDP
    /// port `port`: each holds a kernel socket on `0.0.0.0:port` while it is up.
    pub fn vxlan_devices_on_port(&mut self, port: u16) -> Result<Vec<String>, LinkError> {
        let operation = "listing vxlan devices";
        let replies = self
            .request(
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                NLM_F_DUMP,
            )
            .map_err(|failure| link_error(failure, operation.to_owned(), "all links".to_owned()))?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(link),
                _ => None,
            })
            .filter(|link| link.header.flags.contains(LinkFlags::Up))
            .filter_map(|link| {
                let mut name = None;
                let mut on_port = false;
                for attribute in link.attributes {
                    match attribute {
                        LinkAttribute::IfName(ifname) => name = Some(ifname),
                        LinkAttribute::LinkInfo(infos) => {
                            on_port |= infos.iter().any(|info| {
                                matches!(info, LinkInfoAttribute::Data(InfoData::Vxlan(data))
                                    if data.contains(&InfoVxlan::Port(port)))
                            });
                        }
                        _ => {}
                    }
                }
                name.filter(|_| on_port)
            })
            .collect())
    }

    /// The name of link `index` in this socket's namespace, if there is one.
    pub fn name_of(&mut self, index: u32) -> Option<String> {
        let mut query = LinkMessage::default();
        query.header.index = index;
        let link = single_link(self.request(RouteNetlinkMessage::GetLink(query), 0).ok()?).ok()?;
        link.attributes
            .into_iter()
            .find_map(|attribute| match attribute {
                LinkAttribute::IfName(name) => Some(name),
                _ => None,
            })
    }

    /// Turns a failure on link `index` into an error naming the device, resolving the index to
    /// a name (on this error path only) so the message says which device it was.
    fn error_for_index(&mut self, failure: Failure, operation: String, index: u32) -> LinkError {
        let device = self
            .name_of(index)
            .unwrap_or_else(|| format!("ifindex {index}"));
        link_error(failure, operation, device)
    }

    /// Sends `message` with NLM_F_REQUEST|NLM_F_ACK|`extra_flags` and collects the replies
    /// carrying its sequence number until the kernel's ack or error.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        extra_flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, Failure> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut packet =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(message));
        packet.header.flags = NLM_F_REQUEST | NLM_F_ACK | extra_flags;
        packet.header.sequence_number = sequence;
        packet.finalize();
        let mut buffer = vec![0; packet.buffer_len()];
        packet.serialize(&mut buffer);
        self.socket
            .send(&buffer, 0)
            .map_err(|source| Failure::Socket {
                step: "send",
                source,
            })?;

        let mut replies = Vec::new();
        loop {
            let (datagram, _) = self
                .socket
                .recv_from_full()
                .map_err(|source| Failure::Socket {
                    step: "receive",
                    source,
                })?;
            let mut offset = 0;
            while offset < datagram.len() {
                let reply: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&datagram[offset..])
                        .map_err(|e| Failure::BadReply(e.to_string()))?;
                let length = reply.header.length as usize;
                if length < NLMSG_HDRLEN {
                    return Err(Failure::BadReply(format!("message length {length}")));
                }
                offset += length.next_multiple_of(4);
                // Replies to an earlier request that was abandoned mid-way are skipped.
                if reply.header.sequence_number != sequence {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(error) => {
                        return match error.code {
                            None => Ok(replies),
                            Some(code) => Err(Failure::Kernel {
                                source: io::Error::from_raw_os_error(code.get().abs()),
                                kernel_message: extended_ack_message(
                                    reply.header.flags,
                                    &error.header,
                                ),
                            }),
                        };
                    }
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Noop | NetlinkPayload::Overrun(_) => {}
                    other => {
                        return Err(Failure::BadReply(format!("unexpected payload {other:?}")));
                    }
                }
            }
        }
    }
}

/// The character device of the macvtap with interface index `index` (`/dev/tapN`), which
/// libvirt opens for `<interface type='ethernet'>` on a macvtap target. The kernel's devtmpfs
/// creates it with the link.
pub fn macvtap_device_path(index: u32) -> PathBuf {
    PathBuf::from(format!("/dev/tap{index}"))
}

/// What one link notification says, as [`LinkMonitor`] reads it. `nsid` is the id of the
/// namespace the link is in, as our namespace knows it; `None` is our own namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkNotice {
    /// RTM_NEWLINK: link `name` appeared or changed; `up` is its administrative state
    /// (a TAP refuses frames with EIO while it is down).
    Changed {
        nsid: Option<i32>,
        index: u32,
        name: String,
        up: bool,
    },
    /// RTM_DELLINK: link `name` left that namespace: deleted, or moved to another one.
    Left {
        nsid: Option<i32>,
        index: u32,
        name: String,
    },
    /// RTM_DELNSID in our namespace: the namespace with id `nsid` is being destroyed
    /// (the kernel drops the id before it deletes the namespace's virtual links).
    NamespaceDestroyed { nsid: i32 },
    /// Notifications were lost (the socket's buffer overflowed): read the state again.
    Overrun,
}

/// The link notice in `message`, which came from the namespace with id `nsid`.
pub fn link_notice(nsid: Option<i32>, message: RouteNetlinkMessage) -> Option<LinkNotice> {
    let name_of = |link: &LinkMessage| {
        link.attributes
            .iter()
            .find_map(|attribute| match attribute {
                LinkAttribute::IfName(name) => Some(name.clone()),
                _ => None,
            })
    };
    match message {
        RouteNetlinkMessage::NewLink(link) => Some(LinkNotice::Changed {
            nsid,
            index: link.header.index,
            name: name_of(&link)?,
            up: link.header.flags.contains(LinkFlags::Up),
        }),
        RouteNetlinkMessage::DelLink(link) => Some(LinkNotice::Left {
            nsid,
            index: link.header.index,
            name: name_of(&link)?,
        }),
        // Ids other namespaces give each other are no concern of ours.
        RouteNetlinkMessage::DelNsId(message) if nsid.is_none() => message
            .attributes
            .iter()
            .find_map(|attribute| match attribute {
                NsidAttribute::Id(id) => Some(LinkNotice::NamespaceDestroyed { nsid: *id }),
                _ => None,
            }),
        _ => None,
    }
}

/// A NETLINK_ROUTE socket subscribed to link and namespace-id notifications of our own
/// namespace and, with `NETLINK_LISTEN_ALL_NSID`, of every namespace our namespace has an id
/// for ([`Netlink::netns_id`]). It lives in our namespace, so it keeps no other alive.
/// Open it while privileged: subscribing to other namespaces needs CAP_NET_BROADCAST then,
/// and not afterwards.
pub struct LinkMonitor {
    socket: Socket,
    buffer: Vec<u8>,
}

impl LinkMonitor {
    pub fn open() -> Result<Self, LinkError> {
        let open_err = |step| move |source| LinkError::Open { step, source };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(open_err("socket"))?;
        socket.bind_auto().map_err(open_err("bind"))?;
        for group in [libc::RTNLGRP_LINK, libc::RTNLGRP_NSID] {
            socket
                .add_membership(group)
                .map_err(open_err("joining a notification group"))?;
        }
        socket.set_listen_all_namespaces(true).map_err(open_err(
            "listening to all namespaces (NETLINK_LISTEN_ALL_NSID)",
        ))?;
        Ok(Self {
            socket,
            // A link message with all its attributes is a few KiB; several come at once.
            buffer: vec![0; 256 * 1024],
        })
    }

    /// A monitor socket handed over by the switch this process replaces (`upgrade`): opened
    /// there while privileged, it keeps listening to every namespace here.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Self {
        use std::os::fd::{FromRawFd, IntoRawFd};
        Self {
            // SAFETY: `fd` is an open socket we own; the Socket takes it over.
            socket: unsafe { Socket::from_raw_fd(fd.into_raw_fd()) },
            buffer: vec![0; 256 * 1024],
        }
    }

    /// A second descriptor of the socket, to hand to a successor process.
    pub fn try_clone_fd(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
        // SAFETY: the socket's fd is open for as long as `self` lives, beyond this call.
        let fd = unsafe { BorrowedFd::borrow_raw(self.socket.as_raw_fd()) };
        fd.as_fd().try_clone_to_owned()
    }

    /// The socket's descriptor, to wait on with [`wait_readable`] without holding the
    /// monitor (another thread may need to drain it meanwhile).
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.socket.as_raw_fd()
    }

    /// The notices of the next pending datagram, without waiting: `None` when nothing is
    /// pending. (A datagram may carry nothing of interest: `Some` of an empty list.)
    pub fn receive(&mut self) -> Result<Option<Vec<LinkNotice>>, LinkError> {
        let receive_error = |source| LinkError::Socket {
            operation: "watching links".to_owned(),
            device: "every port".to_owned(),
            step: "receive",
            source,
        };
        let fd = self.as_raw_fd();
        let mut iov = libc::iovec {
            iov_base: self.buffer.as_mut_ptr().cast(),
            iov_len: self.buffer.len(),
        };
        // Room for one cmsghdr carrying an int (the namespace id), suitably aligned.
        let mut control = [0u64; 8];
        // SAFETY: msghdr is plain data; zero is a valid starting value.
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_iov = &mut iov;
        header.msg_iovlen = 1;
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: `header` points at the live buffer and control array for the call.
        let received = unsafe { libc::recvmsg(fd, &mut header, libc::MSG_DONTWAIT) };
        if received < 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::ENOBUFS) => Ok(Some(vec![LinkNotice::Overrun])),
                Some(libc::EAGAIN) => Ok(None),
                Some(libc::EINTR) => Ok(Some(Vec::new())),
                _ => Err(receive_error(error)),
            };
        }
        let nsid = source_nsid(&header);
        let datagram = &self.buffer[..received as usize];
        let mut notices = Vec::new();
        let mut offset = 0;
        while offset + NLMSG_HDRLEN <= datagram.len() {
            let length =
                u32::from_ne_bytes(datagram[offset..offset + 4].try_into().expect("4 bytes"))
                    as usize;
            if length < NLMSG_HDRLEN || offset + length > datagram.len() {
                break;
            }
            // A message this crate cannot parse is one we do not need.
            if let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(
                &datagram[offset..offset + length],
            ) && let NetlinkPayload::InnerMessage(inner) = message.payload
                && let Some(notice) = link_notice(nsid, inner)
            {
                notices.push(notice);
            }
            offset += length.next_multiple_of(4);
        }
        Ok(Some(notices))
    }
}

/// Waits up to `timeout` for `fd` to become readable; false after the timeout (or a signal).
pub fn wait_readable(fd: std::os::fd::RawFd, timeout: std::time::Duration) -> io::Result<bool> {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one initialised pollfd, live for the call.
    let ready = unsafe { libc::poll(&mut poll, 1, millis) };
    if ready < 0 {
        let error = io::Error::last_os_error();
        return match error.kind() {
            io::ErrorKind::Interrupted => Ok(false),
            _ => Err(error),
        };
    }
    Ok(ready > 0)
}

/// The namespace id the kernel attached to a received datagram (`NETLINK_LISTEN_ALL_NSID`
/// ancillary data); none for our own namespace.
fn source_nsid(header: &libc::msghdr) -> Option<i32> {
    /// `NETLINK_LISTEN_ALL_NSID`, also the type of the ancillary message.
    const NETLINK_LISTEN_ALL_NSID: libc::c_int = 8;
    // SAFETY: `header` was filled by recvmsg; the CMSG macros walk its control buffer
    // within msg_controllen.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(header) };
    while !cmsg.is_null() {
        // SAFETY: non-null cmsg pointers from CMSG_FIRSTHDR/NXTHDR lie in the control buffer.
        let entry = unsafe { &*cmsg };
        if entry.cmsg_level == libc::SOL_NETLINK && entry.cmsg_type == NETLINK_LISTEN_ALL_NSID {
            // SAFETY: this ancillary message carries one int; read_unaligned tolerates
            // the data's alignment.
            return Some(unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>()) });
        }
        // SAFETY: as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(header, cmsg) };
    }
    None
}

/// An RTM_SETLINK body applying `settings` to link `index`.
fn settings_message(index: u32, settings: &LinkSettings) -> LinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = index;
    if let Some(up) = settings.up {
        link.header.change_mask = LinkFlags::Up;
        link.header.flags = if up {
            LinkFlags::Up
        } else {
            LinkFlags::empty()
        };
    }
    if let Some(mtu) = settings.mtu {
        link.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = settings.mac {
        link.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    if let Some(len) = settings.txqueuelen {
        link.attributes.push(LinkAttribute::TxQueueLen(len));
    }
    if let Some(alias) = &settings.alias {
        link.attributes.push(LinkAttribute::IfAlias(alias.clone()));
    }
    link
}

/// `tc filter add dev FROM ingress prio 1 protocol all u32 match u32 0 0
/// action mirred egress redirect dev TO`, as a netlink message.
fn redirect_all_filter(from: u32, to: u32) -> TcMessage {
    let mut filter = TcMessage::with_index(from as i32);
    filter.header.parent = INGRESS_QDISC_HANDLE;
    // tcm_info carries the priority in its upper half and the protocol, big-endian, below.
    filter.header.info = (u32::from(TAP_GLUE_FILTER_PRIORITY) << 16) | u32::from(ETH_P_ALL.to_be());

    // One key with mask 0 matches every frame; terminal stops the u32 walk at this match.
    let mut selector = TcU32Selector::default();
    selector.flags = TcU32SelectorFlags::Terminal;
    selector.nkeys = 1;
    selector.keys = vec![TcU32Key::default()];

    let mut mirror = TcMirror::default();
    // Stolen: the frame leaves this device's receive path once redirected.
    mirror.generic.action = TcActionType::Stolen;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = to;
    let mut action = TcAction::default();
    action.attributes = vec![
        TcActionAttribute::Kind("mirred".to_owned()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirror,
        ))]),
    ];

    filter.attributes = vec![
        TcAttribute::Kind("u32".to_owned()),
        TcAttribute::Options(vec![
            TcOption::U32(TcFilterU32Option::Selector(selector)),
            TcOption::U32(TcFilterU32Option::Action(vec![action])),
        ]),
    ];
    filter
}

fn link_error(failure: Failure, operation: String, device: String) -> LinkError {
    match failure {
        Failure::Kernel { source, .. } if source.raw_os_error() == Some(libc::ENODEV) => {
            LinkError::NotFound { operation, device }
        }
        Failure::Kernel {
            source,
            kernel_message,
        } => LinkError::Kernel {
            operation,
            device,
            source,
            kernel_message,
        },
        Failure::Socket { step, source } => LinkError::Socket {
            operation,
            device,
            step,
            source,
        },
        Failure::BadReply(reason) => LinkError::BadReply {
            operation,
            device,
            reason,
        },
    }
}

/// Extracts the kernel's NLMSGERR_ATTR_MSG from an error reply's echoed request + TLVs.
fn extended_ack_message(flags: u16, echoed: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || echoed.len() < NLMSG_HDRLEN {
        return None;
    }
    let echoed_len = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        u32::from_ne_bytes(echoed[..4].try_into().ok()?) as usize
    };
    let tlvs = echoed.get(echoed_len.next_multiple_of(4)..)?;
    NlasIterator::new(tlvs)
        .filter_map(Result::ok)
        .find(|nla: &NlaBuffer<&[u8]>| nla.kind() == NLMSGERR_ATTR_MSG)
        .map(|nla| {
            let text = nla.value();
            let text = text.split(|&b| b == 0).next().unwrap_or(text);
            String::from_utf8_lossy(text).into_owned()
        })
}

fn single_link(replies: Vec<RouteNetlinkMessage>) -> Result<LinkMessage, String> {
    let count = replies.len();
    let mut links = replies.into_iter().filter_map(|reply| match reply {
        RouteNetlinkMessage::NewLink(link) => Some(link),
        _ => None,
    });
    match (links.next(), links.next()) {
        (Some(link), None) => Ok(link),
        _ => Err(format!("expected one RTM_NEWLINK, got {count} replies")),
    }
}

fn link_info_from(link: LinkMessage) -> Result<LinkInfo, String> {
    let flags = link.header.flags;
    let mut info = LinkInfo {
        index: link.header.index,
        name: String::new(),
        mtu: 0,
        mac: None,
        up: flags.contains(LinkFlags::Up),
        carrier: flags.contains(LinkFlags::LowerUp),
        oper_state: "UNKNOWN".to_owned(),
        txqueuelen: 0,
        stats: LinkStats::default(),
        master: None,
    };
    for attribute in link.attributes {
        match attribute {
            LinkAttribute::IfName(name) => info.name = name,
            LinkAttribute::Mtu(mtu) => info.mtu = mtu,
            LinkAttribute::Address(bytes) => info.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            LinkAttribute::Carrier(carrier) => info.carrier |= carrier != 0,
            LinkAttribute::OperState(state) => info.oper_state = state.to_string(),
            LinkAttribute::TxQueueLen(len) => info.txqueuelen = len,
            LinkAttribute::Controller(index) if index != 0 => info.master = Some(index),
            LinkAttribute::Stats64(stats) => {
                info.stats = LinkStats {
                    rx_packets: stats.rx_packets,
                    tx_packets: stats.tx_packets,
                    rx_bytes: stats.rx_bytes,
                    tx_bytes: stats.tx_bytes,
                    rx_dropped: stats.rx_dropped,
                    tx_dropped: stats.tx_dropped,
                }
            }
            _ => {}
        }
    }
    if info.name.is_empty() {
        return Err("RTM_NEWLINK without IFLA_IFNAME".to_owned());
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::netns::fixtures::{TestNetns, socket_netns_inode, unique_name};
    use std::os::fd::AsFd;
    use std::process::Command;

    /// A persistent TAP made with `ip tuntap add`, deleted on drop (inside `netns` once the
    /// test has moved it there).
    struct TestTap {
        name: String,
        netns: Option<String>,
    }

    impl TestTap {
        fn new() -> Self {
            let name = unique_name("tl");
            run_ip(&["tuntap", "add", "dev", &name, "mode", "tap"]);
            Self { name, netns: None }
        }
    }

    impl Drop for TestTap {
        fn drop(&mut self) {
            let mut command = Command::new("ip");
            if let Some(netns) = &self.netns {
                command.args(["-n", netns]);
            }
            let _ = command.args(["link", "del", &self.name]).output();
        }
    }

    fn run_ip(args: &[&str]) -> String {
        let out = Command::new("ip").args(args).output().expect("running ip");
        assert!(
            out.status.success(),
            "ip {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The single object `ip -j ... show dev NAME` prints.
    fn ip_json_one(args: &[&str]) -> serde_json::Value {
        let parsed: serde_json::Value = serde_json::from_str(&run_ip(args)).unwrap();
        let mut list = parsed.as_array().expect("ip -j prints an array").clone();
        assert_eq!(list.len(), 1, "ip {args:?} gave {list:?}");
        list.remove(0)
    }

    fn ip_link_exists(name: &str) -> bool {
        Command::new("ip")
            .args(["link", "show", "dev", name])
            .output()
            .unwrap()
            .status
            .success()
    }

    #[test]
    fn index_of_finds_existing_links_and_reports_missing_ones() {
        let tap = TestTap::new();
        let mut netlink = Netlink::open().unwrap();
        let expected = ip_json_one(&["-j", "link", "show", "dev", &tap.name])["ifindex"]
            .as_u64()
            .unwrap();
        assert_eq!(u64::from(netlink.index_of(&tap.name).unwrap()), expected);
        assert_eq!(netlink.index_of("lo").unwrap(), 1);

        let missing = unique_name("tz");
        let err = netlink.index_of(&missing).unwrap_err();
        assert!(matches!(err, LinkError::NotFound { .. }), "{err:?}");
        assert!(err.to_string().contains(&missing), "{err}");
        // The socket stays usable after a refusal.
        assert_eq!(u64::from(netlink.index_of(&tap.name).unwrap()), expected);
    }

    #[test]
    fn existing_links_say_what_they_are_and_how_a_tap_was_made() {
        let mut netlink = Netlink::open().unwrap();
        assert_eq!(netlink.existing(&unique_name("tz")).unwrap(), None);

        let tap = TestTap::new();
        let found = netlink
            .existing(&tap.name)
            .unwrap()
            .expect("the TAP exists");
        assert_eq!(found.index, netlink.index_of(&tap.name).unwrap());
        assert_eq!(found.kind.as_deref(), Some("tun"));
        assert_eq!(found.alias, None);
        let tun = found.tun.expect("a tun device has IFLA_TUN_* data");
        assert!(tun.tap && tun.persistent, "{tun:?}");
        assert!(
            !tun.vnet_hdr && !tun.multi_queue && !tun.packet_info,
            "{tun:?}"
        );
        assert_eq!(tun.attached_queues, 0);
        assert_eq!(found.describe(), "a TAP device");

        let vnet = unique_name("tv");
        run_ip(&[
            "tuntap",
            "add",
            "dev",
            &vnet,
            "mode",
            "tap",
            "vnet_hdr",
            "multi_queue",
            "pi",
        ]);
        let _vnet = TestTap {
            name: vnet.clone(),
            netns: None,
        };
        let tun = netlink.existing(&vnet).unwrap().unwrap().tun.unwrap();
        assert!(
            tun.vnet_hdr && tun.multi_queue && tun.packet_info,
            "{tun:?}"
        );

        let layer3 = unique_name("tn");
        run_ip(&["tuntap", "add", "dev", &layer3, "mode", "tun"]);
        let _layer3 = TestTap {
            name: layer3.clone(),
            netns: None,
        };
        let found = netlink.existing(&layer3).unwrap().unwrap();
        assert!(!found.tun.unwrap().tap);
        assert!(found.describe().starts_with("a TUN device"), "{found:?}");

        let lo = netlink.existing("lo").unwrap().unwrap();
        assert_eq!((lo.kind.as_deref(), lo.tun), (None, None));
        assert!(lo.describe().contains("physical NIC or loopback"));
    }

    #[test]
    fn configure_applies_up_mtu_mac_and_txqueuelen_together() {
        let tap = TestTap::new();
        let mut netlink = Netlink::open().unwrap();
        let index = netlink.index_of(&tap.name).unwrap();
        let mac = [0x02, 0x5a, 0x11, 0x22, 0x33, 0x44];
        let settings = LinkSettings {
            up: Some(true),
            mtu: Some(9000),
            mac: Some(mac),
            txqueuelen: Some(4321),
            alias: Some("made by a test".to_owned()),
        };
        netlink.configure(index, &settings).unwrap();

        let info = netlink.info(&tap.name).unwrap();
        assert_eq!(info.index, index);
        assert_eq!(info.name, tap.name);
        assert_eq!(info.mtu, 9000);
        assert_eq!(info.mac, Some(mac));
        assert_eq!(info.txqueuelen, 4321);
        assert!(info.up);
        // No fd is attached to the persistent TAP, so it has no carrier.
        assert!(!info.carrier);
        assert_eq!(info.oper_state, "DOWN");

        let shown = ip_json_one(&["-j", "link", "show", "dev", &tap.name]);
        assert_eq!(shown["mtu"], 9000);
        assert_eq!(shown["address"], "02:5a:11:22:33:44");
        assert_eq!(shown["txqlen"], 4321);
        assert_eq!(shown["ifalias"], "made by a test");
        let flags: Vec<&str> = shown["flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert!(flags.contains(&"UP"), "{flags:?}");
        assert!(flags.contains(&"NO-CARRIER"), "{flags:?}");

        // Only `up` changes; the rest stays as set.
        netlink
            .configure(
                index,
                &LinkSettings {
                    up: Some(false),
                    ..LinkSettings::default()
                },
            )
            .unwrap();
        let info = netlink.info(&tap.name).unwrap();
        assert!(!info.up);
        assert_eq!(
            (info.mtu, info.txqueuelen, info.mac),
            (9000, 4321, Some(mac))
        );
    }

    #[test]
    fn a_refused_mtu_names_the_device_and_the_errno() {
        let tap = TestTap::new();
        let mut netlink = Netlink::open().unwrap();
        let index = netlink.index_of(&tap.name).unwrap();
        let before = netlink.info(&tap.name).unwrap().mtu;

        let err = netlink
            .configure(
                index,
                &LinkSettings {
                    mtu: Some(10),
                    ..LinkSettings::default()
                },
            )
            .unwrap_err();
        assert_eq!(err.errno(), Some(libc::EINVAL), "{err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "setting MTU 10 on {} failed: Invalid argument (os error 22)",
                tap.name
            )),
            "{message}"
        );
        assert_eq!(netlink.info(&tap.name).unwrap().mtu, before);
    }

    #[test]
    fn operations_on_a_missing_index_are_not_found() {
        let mut netlink = Netlink::open().unwrap();
        // Interface indexes are allocated upwards from 1; this one is far beyond any in use.
        let index = i32::MAX as u32 - 7;
        let err = netlink
            .configure(
                index,
                &LinkSettings {
                    up: Some(true),
                    ..LinkSettings::default()
                },
            )
            .unwrap_err();
        assert!(matches!(err, LinkError::NotFound { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&format!("ifindex {index}")),
            "{err}"
        );
        assert!(matches!(
            netlink.delete(index),
            Err(LinkError::NotFound { .. })
        ));
    }

    #[test]
    fn a_moved_link_is_managed_through_a_socket_in_its_namespace() {
        let netns = TestNetns::new();
        let mut tap = TestTap::new();
        let mut host = Netlink::open().unwrap();
        let index = host.index_of(&tap.name).unwrap();

        host.move_to_netns(index, &NetnsFd::open(&netns.name).unwrap())
            .unwrap();
        tap.netns = Some(netns.name.clone());
        assert!(matches!(
            host.index_of(&tap.name),
            Err(LinkError::NotFound { .. })
        ));
        assert!(!ip_link_exists(&tap.name));

        let mut inside = Netlink::open_in(&netns.name).unwrap();
        let ns_inode = std::fs::metadata(netns::netns_path(&netns.name).unwrap())
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap();
        assert_eq!(socket_netns_inode(inside.socket.as_fd()), ns_inode);

        let moved = inside.index_of(&tap.name).unwrap();
        inside
            .configure(
                moved,
                &LinkSettings {
                    up: Some(true),
                    mtu: Some(1400),
                    ..LinkSettings::default()
                },
            )
            .unwrap();
        let shown = ip_json_one(&["-n", &netns.name, "-j", "link", "show", "dev", &tap.name]);
        assert_eq!(shown["mtu"], 1400);
        assert!(
            shown["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
            "{shown}"
        );
    }

    #[test]
    fn add_address_in_a_namespace_shows_up_in_ip_addr() {
        let netns = TestNetns::new();
        let mut tap = TestTap::new();
        let mut host = Netlink::open().unwrap();
        let index = host.index_of(&tap.name).unwrap();
        host.move_to_netns(index, &NetnsFd::open(&netns.name).unwrap())
            .unwrap();
        tap.netns = Some(netns.name.clone());

        let mut inside = Netlink::open_in(&netns.name).unwrap();
        let index = inside.index_of(&tap.name).unwrap();
        let v4: IpAddr = "10.77.1.2".parse().unwrap();
        let v6: IpAddr = "fd00:77::2".parse().unwrap();
        inside.add_address(index, v4, 24).unwrap();
        inside.add_address(index, v6, 64).unwrap();

        let shown = ip_json_one(&["-n", &netns.name, "-j", "addr", "show", "dev", &tap.name]);
        let addresses: Vec<(String, u64)> = shown["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["local"].as_str().unwrap().to_owned(),
                    a["prefixlen"].as_u64().unwrap(),
                )
            })
            .collect();
        assert!(
            addresses.contains(&("10.77.1.2".to_owned(), 24)),
            "{addresses:?}"
        );
        assert!(
            addresses.contains(&("fd00:77::2".to_owned(), 64)),
            "{addresses:?}"
        );

        let err = inside.add_address(index, v4, 24).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EEXIST), "{err:?}");
        assert!(
            err.to_string()
                .contains(&format!("adding address 10.77.1.2/24 on {}", tap.name)),
            "{err}"
        );
        assert!(matches!(
            inside.add_address(index, v4, 33),
            Err(LinkError::InvalidPrefix { prefix_len: 33, .. })
        ));
    }

    #[test]
    fn delete_removes_the_link() {
        let tap = TestTap::new();
        let mut netlink = Netlink::open().unwrap();
        let index = netlink.index_of(&tap.name).unwrap();
        netlink.delete(index).unwrap();
        assert!(matches!(
            netlink.index_of(&tap.name),
            Err(LinkError::NotFound { .. })
        ));
        assert!(!ip_link_exists(&tap.name));
    }

    #[test]
    fn info_reports_the_traffic_counters_ip_reports() {
        let netns = TestNetns::new();
        let mut inside = Netlink::open_in(&netns.name).unwrap();
        let lo = inside.index_of("lo").unwrap();
        inside
            .configure(
                lo,
                &LinkSettings {
                    up: Some(true),
                    ..LinkSettings::default()
                },
            )
            .unwrap();

        const DATAGRAMS: u64 = 5;
        netns::run_in(&netns.name, || {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut buffer = [0u8; 100];
            for _ in 0..DATAGRAMS {
                socket
                    .send_to(&buffer, socket.local_addr().unwrap())
                    .unwrap();
                socket.recv(&mut buffer).unwrap();
            }
        })
        .unwrap();

        let info = inside.info("lo").unwrap();
        assert!(info.up && info.carrier, "{info:?}");
        assert_eq!(info.oper_state, "UNKNOWN");
        assert!(info.stats.tx_packets >= DATAGRAMS, "{info:?}");
        assert!(info.stats.rx_bytes >= DATAGRAMS * 100, "{info:?}");

        let shown = ip_json_one(&["-n", &netns.name, "-s", "-j", "link", "show", "dev", "lo"]);
        let stats = &shown["stats64"];
        assert_eq!(stats["rx"]["packets"], info.stats.rx_packets, "{stats}");
        assert_eq!(stats["tx"]["packets"], info.stats.tx_packets, "{stats}");
        assert_eq!(stats["rx"]["bytes"], info.stats.rx_bytes, "{stats}");
        assert_eq!(stats["tx"]["bytes"], info.stats.tx_bytes, "{stats}");
        assert_eq!(stats["rx"]["dropped"], info.stats.rx_dropped, "{stats}");
        assert_eq!(stats["tx"]["dropped"], info.stats.tx_dropped, "{stats}");
    }

    /// A TAP whose fd this test holds (no vnet header), with its netdev up; deleted on drop.
    fn open_test_tap(prefix: &str) -> (crate::sys::tap::Tap, u32) {
        let options = crate::sys::tap::TapOptions {
            vnet_hdr: false,
            ..crate::sys::tap::TapOptions::default()
        };
        let tap = crate::sys::tap::Tap::open(&unique_name(prefix), &options).unwrap();
        let mut netlink = Netlink::open().unwrap();
        let index = netlink.index_of(tap.name()).unwrap();
        netlink
            .configure(
                index,
                &LinkSettings {
                    up: Some(true),
                    ..LinkSettings::default()
                },
            )
            .unwrap();
        (tap, index)
    }

    /// A test frame: local-experimental ethertype, `marker` in the payload.
    fn marked_frame(src_last: u8, marker: u8) -> Vec<u8> {
        let mut frame = vec![0x02, 0x00, 0x00, 0xee, 0xee, 0xee];
        frame.extend_from_slice(&[0x02, 0x00, 0x00, 0x11, 0x11, src_last]);
        frame.extend_from_slice(&0x88b5u16.to_be_bytes());
        frame.resize(60, marker);
        frame
    }

    /// Reads with `read` (non-blocking) until a frame equal to `expected` after `skip` bytes
    /// of header arrives, or `timeout` passes. Other frames (IPv6 chatter of fresh links) are
    /// skipped.
    fn wait_for_frame(
        mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
        skip: usize,
        expected: &[u8],
        timeout: std::time::Duration,
    ) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut buffer = vec![0u8; 65_536];
        while std::time::Instant::now() < deadline {
            match read(&mut buffer) {
                Ok(n) if n >= skip && &buffer[skip..n] == expected => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("read failed: {e}"),
            }
        }
        false
    }

    /// A link made by the code under test, deleted on drop (by name, whatever its index).
    struct LinkGuard(String);

    impl Drop for LinkGuard {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).output();
        }
    }

    #[test]
    fn create_macvtap_stacks_a_passthru_macvtap_that_carries_frames_both_ways() {
        use std::io::{Read, Write};
        use std::os::unix::fs::OpenOptionsExt;

        let (tap, tap_index) = open_test_tap("tm");
        let mut netlink = Netlink::open().unwrap();
        let name = unique_name("mv");
        let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        let index = netlink.create_macvtap(&name, tap_index, Some(mac)).unwrap();
        let _guard = LinkGuard(name.clone());

        assert_eq!(netlink.index_of(&name).unwrap(), index);
        let shown = ip_json_one(&["-d", "-j", "link", "show", "dev", &name]);
        assert_eq!(shown["link"], tap.name(), "{shown}");
        assert_eq!(shown["address"], "52:54:00:12:34:56", "{shown}");
        assert_eq!(
            netlink.info(tap.name()).unwrap().mac,
            Some(mac),
            "passthru gives the MAC to the lower device"
        );
        assert_eq!(shown["linkinfo"]["info_kind"], "macvtap", "{shown}");
        assert_eq!(
            shown["linkinfo"]["info_data"]["mode"], "passthru",
            "{shown}"
        );

        let device = macvtap_device_path(index);
        assert_eq!(device, PathBuf::from(format!("/dev/tap{index}")));
        let sysfs = format!("/sys/class/net/{name}/macvtap/tap{index}");
        assert!(std::path::Path::new(&sysfs).exists(), "{sysfs} missing");

        netlink
            .configure(
                index,
                &LinkSettings {
                    up: Some(true),
                    ..LinkSettings::default()
                },
            )
            .unwrap();
        let mut queue = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&device)
            .unwrap_or_else(|e| panic!("opening {}: {e}", device.display()));
        // A macvtap queue prefixes frames with a 10-byte virtio_net_hdr by default.
        const MACVTAP_VNET_HDR: usize = 10;

        // Wire side of the TAP -> the macvtap's queue, as the switch's frames reach a guest.
        let to_guest = marked_frame(0x01, 0xa1);
        tap.write(&to_guest).unwrap();
        assert!(
            wait_for_frame(
                |buf| queue.read(buf),
                MACVTAP_VNET_HDR,
                &to_guest,
                std::time::Duration::from_secs(2)
            ),
            "a frame written to {}'s fd did not reach {}",
            tap.name(),
            device.display()
        );

        // The macvtap's queue -> the TAP's fd, as a guest's frames reach the switch.
        let from_guest = marked_frame(0x02, 0xb2);
        let mut with_header = vec![0u8; MACVTAP_VNET_HDR];
        with_header.extend_from_slice(&from_guest);
        queue.write_all(&with_header).unwrap();
        assert!(
            wait_for_frame(
                |buf| tap.read(buf),
                0,
                &from_guest,
                std::time::Duration::from_secs(2)
            ),
            "a frame written to {} did not reach {}'s fd",
            device.display(),
            tap.name()
        );

        let err = netlink.create_macvtap(&name, tap_index, None).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EEXIST), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&format!(
                "creating passthru macvtap {name} on {}",
                tap.name()
            )),
            "{message}"
        );
    }

    #[test]
    fn create_macvtap_on_a_missing_lower_link_fails() {
        let mut netlink = Netlink::open().unwrap();
        let name = unique_name("mv");
        let _guard = LinkGuard(name.clone());
        let err = netlink
            .create_macvtap(&name, i32::MAX as u32 - 7, None)
            .unwrap_err();
        assert!(err.errno().is_some(), "{err:?}");
        assert!(!ip_link_exists(&name));
    }

    /// `tc -j filter show dev NAME ingress`.
    fn ingress_filters(name: &str) -> Vec<serde_json::Value> {
        let out = run_ip_like("tc", &["-j", "filter", "show", "dev", name, "ingress"]);
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn run_ip_like(program: &str, args: &[&str]) -> String {
        let out = Command::new(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn has_ingress_qdisc(name: &str) -> bool {
        let out = run_ip_like("tc", &["-j", "qdisc", "show", "dev", name]);
        let qdiscs: serde_json::Value = serde_json::from_str(&out).unwrap();
        qdiscs
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["kind"] == "ingress")
    }

    #[test]
    fn tap_glue_redirects_every_frame_between_two_taps_until_removed() {
        let (a, a_index) = open_test_tap("ga");
        let (b, b_index) = open_test_tap("gb");
        let mut netlink = Netlink::open().unwrap();
        netlink.create_tap_glue(a_index, b_index).unwrap();

        for (from, to) in [(a.name(), b.name()), (b.name(), a.name())] {
            assert!(has_ingress_qdisc(from), "no ingress qdisc on {from}");
            let filters = ingress_filters(from);
            let rule = filters
                .iter()
                .find(|f| f["options"]["actions"].is_array())
                .unwrap_or_else(|| panic!("no filter with actions on {from}: {filters:?}"));
            assert_eq!(rule["kind"], "u32", "{rule}");
            assert_eq!(rule["protocol"], "all", "{rule}");
            assert_eq!(rule["pref"], u64::from(TAP_GLUE_FILTER_PRIORITY), "{rule}");
            let action = &rule["options"]["actions"][0];
            assert_eq!(action["kind"], "mirred", "{action}");
            assert_eq!(action["mirred_action"], "redirect", "{action}");
            assert_eq!(action["direction"], "egress", "{action}");
            assert_eq!(action["to_dev"], to, "{action}");
        }

        // A frame written to one wire side is received by that netdev, redirected out of the
        // other netdev, and read from the other wire side.
        let timeout = std::time::Duration::from_secs(2);
        let a_to_b = marked_frame(0x0a, 0xab);
        a.write(&a_to_b).unwrap();
        assert!(
            wait_for_frame(|buf| b.read(buf), 0, &a_to_b, timeout),
            "{} -> {}",
            a.name(),
            b.name()
        );
        let b_to_a = marked_frame(0x0b, 0xba);
        b.write(&b_to_a).unwrap();
        assert!(
            wait_for_frame(|buf| a.read(buf), 0, &b_to_a, timeout),
            "{} -> {}",
            b.name(),
            a.name()
        );

        netlink.remove_tap_glue(a_index, b_index).unwrap();
        assert!(!has_ingress_qdisc(a.name()) && !has_ingress_qdisc(b.name()));
        let after = marked_frame(0x0a, 0xcd);
        a.write(&after).unwrap();
        assert!(
            !wait_for_frame(
                |buf| b.read(buf),
                0,
                &after,
                std::time::Duration::from_millis(300)
            ),
            "a frame crossed after the glue was removed"
        );
        // Removing again, or after a device is gone, is not an error.
        netlink.remove_tap_glue(a_index, b_index).unwrap();
        drop(b);
        netlink.remove_tap_glue(a_index, b_index).unwrap();
    }

    #[test]
    fn tap_glue_to_a_missing_link_names_the_device() {
        let (a, a_index) = open_test_tap("ga");
        let mut netlink = Netlink::open().unwrap();
        let missing = i32::MAX as u32 - 7;
        let err = netlink.create_tap_glue(a_index, missing).unwrap_err();
        assert!(matches!(err, LinkError::NotFound { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "gluing ifindex {a_index} and ifindex {missing} failed: \
                 network device ifindex {missing} not found"
            )
        );
        assert!(
            !has_ingress_qdisc(a.name()),
            "nothing installed on {}",
            a.name()
        );
        netlink.remove_tap_glue(a_index, missing).unwrap();
    }

    #[test]
    fn link_info_serialises_the_mac_as_text() {
        let info = LinkInfo {
            index: 3,
            name: "tap0".to_owned(),
            mtu: 1500,
            mac: Some([0x02, 0, 0, 0, 0xab, 0x01]),
            up: true,
            carrier: false,
            oper_state: "DOWN".to_owned(),
            txqueuelen: 1000,
            stats: LinkStats::default(),
            master: None,
        };
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["mac"], "02:00:00:00:ab:01");
        assert_eq!(json["stats"]["rx_packets"], 0);
        let json = serde_json::to_value(LinkInfo { mac: None, ..info }).unwrap();
        assert!(json["mac"].is_null());
    }

    /// An NLA of type NLMSGERR_ATTR_MSG holding `text`, NUL-terminated and padded.
    fn ext_ack_msg_attribute(text: &str) -> Vec<u8> {
        let length = 4 + text.len() + 1;
        let mut nla = Vec::new();
        nla.extend_from_slice(&(length as u16).to_ne_bytes());
        nla.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        nla.extend_from_slice(text.as_bytes());
        nla.push(0);
        nla.resize(length.next_multiple_of(4), 0);
        nla
    }

    #[test]
    fn extended_ack_message_is_found_after_capped_and_full_echoes() {
        let mut capped = 16u32.to_ne_bytes().to_vec();
        capped.resize(NLMSG_HDRLEN, 0);
        capped.extend(ext_ack_msg_attribute("mtu too small"));
        assert_eq!(
            extended_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &capped).as_deref(),
            Some("mtu too small")
        );

        // Uncapped: the whole 22-byte request is echoed, padded to 24, before the attributes.
        let mut full = 22u32.to_ne_bytes().to_vec();
        full.resize(24, 0xee);
        full.extend(ext_ack_msg_attribute("bad address"));
        assert_eq!(
            extended_ack_message(NLM_F_ACK_TLVS, &full).as_deref(),
            Some("bad address")
        );

        assert_eq!(extended_ack_message(NLM_F_CAPPED, &capped), None);
    }

    #[test]
    fn link_notices_say_which_link_changed_where() {
        let link = |flags: LinkFlags, name: Option<&str>| {
            let mut link = LinkMessage::default();
            link.header.index = 7;
            link.header.flags = flags;
            if let Some(name) = name {
                link.attributes.push(LinkAttribute::IfName(name.to_owned()));
            }
            link
        };
        assert_eq!(
            link_notice(
                Some(2),
                RouteNetlinkMessage::NewLink(link(LinkFlags::Up | LinkFlags::LowerUp, Some("p1")))
            ),
            Some(LinkNotice::Changed {
                nsid: Some(2),
                index: 7,
                name: "p1".to_owned(),
                up: true
            })
        );
        // Down is the administrative state, whatever the carrier says.
        assert_eq!(
            link_notice(
                None,
                RouteNetlinkMessage::NewLink(link(LinkFlags::LowerUp, Some("p1")))
            ),
            Some(LinkNotice::Changed {
                nsid: None,
                index: 7,
                name: "p1".to_owned(),
                up: false
            })
        );
        assert_eq!(
            link_notice(
                Some(2),
                RouteNetlinkMessage::DelLink(link(LinkFlags::empty(), Some("p1")))
            ),
            Some(LinkNotice::Left {
                nsid: Some(2),
                index: 7,
                name: "p1".to_owned()
            })
        );
        assert_eq!(
            link_notice(
                None,
                RouteNetlinkMessage::NewLink(link(LinkFlags::Up, None))
            ),
            None,
            "a link without a name is no port's"
        );
        let deleted = || {
            let mut message = NsidMessage::default();
            message.attributes.push(NsidAttribute::Id(3));
            RouteNetlinkMessage::DelNsId(message)
        };
        assert_eq!(
            link_notice(None, deleted()),
            Some(LinkNotice::NamespaceDestroyed { nsid: 3 })
        );
        assert_eq!(
            link_notice(Some(2), deleted()),
            None,
            "ids of other namespaces are theirs"
        );
    }

    #[test]
    fn settings_describe_what_they_change() {
        let all = LinkSettings {
            up: Some(true),
            mtu: Some(9000),
            mac: Some([2, 0, 0, 0, 0, 1]),
            txqueuelen: Some(500),
            alias: Some("x".to_owned()),
        };
        assert_eq!(
            all.describe(),
            "setting link up, MTU 9000, MAC 02:00:00:00:00:01, txqueuelen 500, alias \"x\""
        );
        assert_eq!(
            LinkSettings::default().describe(),
            "configuring (no changes)"
        );
    }
}
