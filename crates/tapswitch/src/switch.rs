//! Assembles a switch from a [`Config`]: creates each port's TAP, configures
//! its netdev over netlink, and hands the ports to a [`Dataplane`].
//!
//! A port bound to a namespace has its TAP created *here*, under a temporary name,
//! then moved and renamed into its namespace and configured there in one netlink
//! request: a TAP fd holds, for as long as it is open, the namespace it was opened
//! in, so a TAP opened inside would keep a deleted namespace alive. A TAP already
//! in the namespace (the switch's own persistent one, or an adopted one) is
//! attached from inside, by name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use thiserror::Error;
use tracing::info;

use crate::config::PortKind;
use crate::config::{Config, CpuAffinity, PortConfig, SwitchConfig};
use crate::dataplane::{Dataplane, DataplaneConfig, DataplaneError, DataplaneHandle, PortUpdate};
use crate::fdb::FdbConfig;
use crate::netlink::{ExistingLink, LinkError, LinkInfo, LinkSettings, Netlink, TunInfo};
use crate::port::netdev::NetdevError;
use crate::port::{NetdevPort, Port, TapPort, VxlanPort};
use crate::sys::netns::{self, NetnsError, NetnsFd};
use crate::sys::packet::PacketOptions;
use crate::sys::privileges::{self, Identity, PrivilegeError};
use crate::sys::sched;
use crate::sys::tap::{Tap, TapError, TapOptions};
use crate::sys::udp::UdpError;

/// Errors while building a switch; each names the port it concerns.
#[derive(Debug, Error)]
pub enum SwitchError {
    #[error("port {port}: {source}")]
    Tap {
        port: String,
        #[source]
        source: TapError,
    },
    #[error("port {port}: {source}")]
    Link {
        port: String,
        #[source]
        source: LinkError,
    },
    #[error("port {port}: namespace {netns}: {source}")]
    Netns {
        port: String,
        netns: String,
        #[source]
        source: NetnsError,
    },
    #[error(
        "port {port}: {place} already has a device named {port}, {what}, not a TAP; \
         choose another port name"
    )]
    NotATap {
        port: String,
        /// "namespace NAME" or "the host's namespace".
        place: String,
        what: String,
    },
    #[error(
        "port {port}: a TAP named {port} already exists and this switch did not create it; \
         add the port with --adopt (adopt = true) to use that device as it is (the switch then \
         keeps its flags and never deletes it), or choose another name"
    )]
    ForeignTap { port: String },
    #[error(
        "port {port}: the TAP {port} this switch left behind is {existing}, and the port now \
         asks for queues = {queues}; delete the device (ip link del {port}) or keep its queue mode"
    )]
    QueueModeChanged {
        port: String,
        existing: &'static str,
        queues: usize,
    },
    #[error("port {port}: adopt: there is no TAP named {port} to adopt")]
    NothingToAdopt { port: String },
    #[error("port {port}: cannot adopt the existing TAP {port} as it is: {reason}")]
    CannotAdopt { port: String, reason: String },
    #[error("switch.cpu_affinity: {reason}")]
    CpuAffinity { reason: String },
    #[error(transparent)]
    Sched(#[from] crate::sys::sched::SchedError),
    #[error("{field}: {source}")]
    Identity {
        /// `switch.user` or `switch.group`.
        field: &'static str,
        #[source]
        source: PrivilegeError,
    },
    #[error(transparent)]
    Netdev(#[from] NetdevError),
    #[error(
        "port {port}: a netdev port cannot be handed over by `tapswitch upgrade` yet; \
         restart the switch instead (the port is bound again by device name)"
    )]
    NetdevHandover { port: String },
    #[error(
        "port {port}: a vxlan port cannot be handed over by `tapswitch upgrade` yet; \
         restart the switch instead (its sockets are bound again from the configuration)"
    )]
    VxlanHandover { port: String },
    #[error(
        "port {port}: cannot bind UDP {local}: Linux vxlan device {device} of the same \
         namespace uses UDP port {dstport}, and Linux's vxlan binds 0.0.0.0:{dstport}, so the \
         two cannot share it. Give this port another dstport (udp_port), or run the switch \
         (or put this port, netns = ...) in another namespace",
        dstport = local.port()
    )]
    VxlanPortHeld {
        port: String,
        local: std::net::SocketAddrV4,
        device: String,
    },
    #[error("port {port}: {source}")]
    Vxlan {
        port: String,
        #[source]
        source: UdpError,
    },
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

/// The configured user and group (`switch.user`, `switch.group`), looked up.
pub fn resolve_identity(config: &Config) -> Result<Option<Identity>, SwitchError> {
    let Some(user) = &config.switch.user else {
        return Ok(None);
    };
    privileges::resolve_identity(user, config.switch.group.as_deref())
        .map(Some)
        .map_err(|source| SwitchError::Identity {
            field: match source {
                PrivilegeError::NoSuchGroup(_) => "switch.group",
                _ => "switch.user",
            },
            source,
        })
}

/// What a configuration needs of this host before anything is created: its user and group
/// exist, and so does every port's namespace (the switch enters them, it does not make
/// them). `run` checks this first and `check-config` the same way, so a configuration
/// `check-config` accepts does not stop `run` for these reasons. Returns the identity.
pub fn preflight(config: &Config) -> Result<Option<Identity>, SwitchError> {
    let identity = resolve_identity(config)?;
    for port in &config.ports {
        if let Some(netns) = &port.netns {
            NetnsFd::open(netns).map_err(|source| SwitchError::Netns {
                port: port.name.clone(),
                netns: netns.clone(),
                source,
            })?;
        }
    }
    Ok(identity)
}

/// The switch's netlink sockets: one in its own namespace, one inside each named namespace
/// a port lives in, and the ids our namespace knows the ports' namespaces by.
///
/// A socket keeps its namespace alive, so a socket inside is let go as soon as the name it
/// was opened by is gone ([`Self::release_deleted`]): `ip netns del` then deletes the
/// namespace and the port's netdev with it. Reading link state needs no socket inside: our
/// own socket reads links anywhere by namespace id (`IFLA_TARGET_NETNSID`); changing a link
/// does (RTM_SETLINK takes no namespace id).
#[derive(Default)]
pub struct LinkSockets {
    own: Option<Netlink>,
    /// Sockets inside named namespaces, with the inode of the namespace they are in.
    inside: HashMap<String, (Netlink, u64)>,
    /// Namespace ids by the name a port records its namespace under (a `/run/netns` name,
    /// or [`crate::sys::netns::unnamed_key`]), as last resolved.
    ids: HashMap<String, i32>,
}

impl LinkSockets {
    /// The socket in our own namespace (opened on first use).
    pub fn own(&mut self) -> Result<&mut Netlink, LinkError> {
        if self.own.is_none() {
            self.own = Some(Netlink::open()?);
        }
        Ok(self.own.as_mut().expect("opened above"))
    }

    /// A socket operating in namespace `netns` (`None`: ours). One inside a named namespace
    /// is opened once (entering the namespace needs CAP_SYS_ADMIN) and reused while the name
    /// still means that namespace. The namespace gets an id too (see [`Self::netns_id`]).
    pub fn get(&mut self, netns: Option<&str>) -> Result<&mut Netlink, LinkError> {
        let Some(name) = netns else {
            return self.own();
        };
        let netns_fd = NetnsFd::open(name)?;
        let inode = netns_fd.inode().map_err(|source| NetnsError::Os {
            name: name.to_owned(),
            step: "reading the namespace's inode",
            source,
        })?;
        self.learn(name, &netns_fd)?;
        drop(netns_fd);
        if self.inside.get(name).is_none_or(|(_, held)| *held != inode) {
            let socket = Netlink::open_in(name)?;
            self.inside.insert(name.to_owned(), (socket, inode));
        }
        Ok(&mut self.inside.get_mut(name).expect("inserted above").0)
    }

    /// Lets go of sockets inside namespaces whose name is gone (or now means another
    /// namespace), so that no socket of ours keeps a deleted namespace alive; returns those
    /// namespaces' names and inodes.
    pub fn release_deleted(&mut self) -> Vec<(String, u64)> {
        let deleted: Vec<(String, u64)> = self
            .inside
            .iter()
            .filter(|(name, (_, inode))| {
                NetnsFd::open(name)
                    .ok()
                    .and_then(|fd| fd.inode().ok())
                    .is_none_or(|now| now != *inode)
            })
            .map(|(name, (_, inode))| (name.clone(), *inode))
            .collect();
        for (name, _) in &deleted {
            self.inside.remove(name);
        }
        deleted
    }

    /// Link `name`'s state in namespace `netns`, read through our own socket by namespace
    /// id, so that it needs no socket (nor privilege to enter) in there.
    pub fn info(&mut self, netns: Option<&str>, name: &str) -> Result<LinkInfo, LinkError> {
        let nsid = match netns {
            Some(netns) => Some(self.netns_id(netns)?),
            None => None,
        };
        self.own()?.info_in(nsid, name)
    }

    /// The id of namespace `name`, assigned if it has none: looked up through its
    /// `/run/netns` file (a namespace deleted and made again under the same name has a new
    /// id), or the one recorded for a namespace without such a file.
    pub fn netns_id(&mut self, name: &str) -> Result<i32, LinkError> {
        match NetnsFd::open(name) {
            Ok(netns) => self.learn(name, &netns),
            Err(NetnsError::NotFound { .. }) if self.ids.contains_key(name) => Ok(self.ids[name]),
            Err(error) => Err(error.into()),
        }
    }

    /// Records `netns` under `name` and returns its id.
    pub fn learn(&mut self, name: &str, netns: &NetnsFd) -> Result<i32, LinkError> {
        let id = self.own()?.netns_id(netns)?;
        self.ids.insert(name.to_owned(), id);
        Ok(id)
    }

    /// The id last resolved for namespace `netns`: `Some(None)` for our own namespace,
    /// `None` when it was never resolved.
    pub fn known_id(&self, netns: Option<&str>) -> Option<Option<i32>> {
        match netns {
            None => Some(None),
            Some(name) => self.ids.get(name).map(|&id| Some(id)),
        }
    }

    /// Forgets id `nsid` (its namespace is being destroyed); returns the names it had.
    pub fn forget_id(&mut self, nsid: i32) -> Vec<String> {
        let names: Vec<String> = self
            .ids
            .iter()
            .filter(|&(_, &id)| id == nsid)
            .map(|(name, _)| name.clone())
            .collect();
        self.ids.retain(|_, id| *id != nsid);
        for name in &names {
            self.inside.remove(name);
        }
        names
    }
}

/// A name for a TAP made in our namespace before it moves into its own, unique to this
/// process and call and short enough for an interface name.
fn temporary_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "tsw{}x{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The transmit queue length of a TAP the switch makes when its port sets none. The
/// netdev's queue is where the endpoint's frames wait for the switch to read them, and a
/// TAP drops (its `tx_dropped`) rather than pushes back when it is full: the kernel's
/// 1000 frames last ~3 ms at 64-byte rates, less than the switch thread can be kept off
/// a busy CPU, so bursts were lost at rates the switch sustains (bench/README.md, "Where
/// the time goes"). A deeper queue costs nothing while the switch keeps up; TCP cannot
/// fill it (TCP small queues) and a UDP sender only up to its socket's send buffer.
pub const DEFAULT_TXQUEUELEN: u32 = 10_000;

/// The alias (`ip link show` prints it) the switch gives every TAP it creates. A TAP
/// that exists when a port is opened is the switch's own only if it carries this alias
/// (a persistent port's TAP, or one left by a crash): it is re-attached as before. Any
/// other TAP of that name is somebody else's and is refused unless the port adopts it.
pub const OWN_TAP_ALIAS: &str = "tapswitch port";

/// Whether the port's TAP is to be created (or is the switch's own), or is a device of
/// somebody else's that the port adopts as it is.
#[derive(Debug)]
enum Claim {
    Own,
    Adopted(TunInfo),
}

/// Decides whether `port` may take the device `existing` (`None`: there is none).
fn claim(port: &PortConfig, existing: Option<&ExistingLink>) -> Result<Claim, SwitchError> {
    let Some(link) = existing else {
        if port.adopted() {
            return Err(SwitchError::NothingToAdopt {
                port: port.name.clone(),
            });
        }
        return Ok(Claim::Own);
    };
    let Some(tun) = link.tun.filter(|tun| tun.tap) else {
        return Err(SwitchError::NotATap {
            port: port.name.clone(),
            place: match &port.netns {
                Some(netns) => format!("namespace {netns}"),
                None => "the host's namespace".to_owned(),
            },
            what: link.describe(),
        });
    };
    if port.adopted() {
        adoptable(port, &tun).map_err(|reason| SwitchError::CannotAdopt {
            port: port.name.clone(),
            reason,
        })?;
        return Ok(Claim::Adopted(tun));
    }
    if link.alias.as_deref() == Some(OWN_TAP_ALIAS) {
        // TUNSETIFF refuses a change of queue mode with a bare EINVAL.
        if tun.multi_queue != (port.queues() > 1) {
            return Err(SwitchError::QueueModeChanged {
                port: port.name.clone(),
                existing: if tun.multi_queue {
                    "multi-queue"
                } else {
                    "single-queue"
                },
                queues: port.queues(),
            });
        }
        return Ok(Claim::Own);
    }
    Err(SwitchError::ForeignTap {
        port: port.name.clone(),
    })
}

/// Why the port's settings cannot run on the device `tun` as it is, if they cannot.
fn adoptable(port: &PortConfig, tun: &TunInfo) -> Result<(), String> {
    if tun.packet_info {
        return Err(
            "its frames carry packet-information headers (made without IFF_NO_PI, \
                    as `ip tuntap add ... pi` does), which the switch does not read"
                .to_owned(),
        );
    }
    match port.tap().and_then(|tap| tap.offloads) {
        Some(true) if !tun.vnet_hdr => {
            return Err(
                "offloads = true needs a vnet header, which the device was made \
                        without (`ip tuntap add ... vnet_hdr` makes one); leave offloads \
                        unset to follow the device"
                    .to_owned(),
            );
        }
        Some(false) if tun.vnet_hdr => {
            return Err(
                "offloads = false, but the device carries a vnet header; leave \
                        offloads unset to follow the device"
                    .to_owned(),
            );
        }
        _ => {}
    }
    if port.queues() > 1 && !tun.multi_queue {
        return Err(format!(
            "queues = {} needs a multi-queue device (`ip tuntap add ... multi_queue`); \
             this one has one queue",
            port.queues()
        ));
    }
    Ok(())
}

/// Creates the TAP of `port` (or re-attaches the switch's own persistent one, or adopts an
/// existing one when `port.adopted()`) and brings its netdev up with the configured MTU, MAC
/// and queue length, in its namespace. A new TAP for a namespace is made here and moved
/// there (see the module comment).
pub fn create_tap_port(
    switch: &SwitchConfig,
    port: &PortConfig,
    links: &mut LinkSockets,
) -> Result<TapPort, SwitchError> {
    let link_error = |source| match source {
        LinkError::Netns(source) => SwitchError::Netns {
            port: port.name.clone(),
            netns: port.netns.clone().unwrap_or_default(),
            source,
        },
        source => SwitchError::Link {
            port: port.name.clone(),
            source,
        },
    };
    // Looked at before TUNSETIFF, which would attach to a free TAP of that name, set its
    // flags to ours and take its persistence away, or fail with a bare EINVAL on a device
    // that is no TAP.
    let existing = links
        .get(port.netns.as_deref())
        .map_err(link_error)?
        .existing(&port.name)
        .map_err(link_error)?;
    let claim = claim(port, existing.as_ref())?;
    let options = match claim {
        Claim::Own => TapOptions {
            vnet_hdr: port.offloads_enabled(switch),
            persistent: Some(port.persistent()),
            owner: port.owner(),
            group: port.group(),
            multi_queue: port.queues() > 1,
            ..TapOptions::default()
        },
        // The device keeps the flags its creator gave it: the same ones are asked for
        // (TUNSETIFF on an existing TAP replaces them), and persistence and owner are left.
        Claim::Adopted(tun) => TapOptions {
            vnet_hdr: tun.vnet_hdr,
            multi_queue: tun.multi_queue,
            persistent: None,
            owner: None,
            group: None,
            sndbuf: None,
        },
    };
    let tap_error = |source| SwitchError::Tap {
        port: port.name.clone(),
        source,
    };
    let netns_error = |netns: &str, source| SwitchError::Netns {
        port: port.name.clone(),
        netns: netns.to_owned(),
        source,
    };
    // A multi-queue TAP is opened once per queue: each open adds a queue.
    let open_queues = |name: &str| -> Result<Vec<Tap>, TapError> {
        (0..port.queues())
            .map(|_| Tap::open(name, &options))
            .collect()
    };
    let settings = LinkSettings {
        up: Some(true),
        mtu: Some(port.mtu),
        mac: port.mac().map(|mac| mac.0),
        txqueuelen: port.tap().and_then(|tap| tap.txqueuelen).or(match claim {
            Claim::Own => Some(DEFAULT_TXQUEUELEN),
            // Somebody else's device keeps its settings.
            Claim::Adopted(_) => None,
        }),
        alias: match claim {
            Claim::Own => Some(OWN_TAP_ALIAS.to_owned()),
            Claim::Adopted(_) => None,
        },
    };
    let queues = match (&port.netns, &existing) {
        (Some(netns), None) => {
            // Made here, so that its fd belongs to our namespace (see the module comment).
            let netns_fd = NetnsFd::open(netns).map_err(|source| netns_error(netns, source))?;
            let temporary = temporary_name();
            let queues = open_queues(&temporary).map_err(tap_error)?;
            let netlink = links.own().map_err(link_error)?;
            let index = netlink.index_of(&temporary).map_err(link_error)?;
            if let Err(error) = netlink.move_and_configure(index, &netns_fd, &port.name, &settings)
            {
                // Still here under the temporary name: a persistent one would stay.
                let _ = netlink.delete(index);
                return Err(link_error(error));
            }
            queues
                .into_iter()
                .map(|queue| queue.renamed(&port.name))
                .collect()
        }
        (Some(netns), Some(_)) => {
            // Already there (the switch's own persistent TAP of an earlier run, or an
            // adopted one): attached from inside, where it is, so that its endpoint keeps
            // its addresses (a move would flush them). This fd holds the namespace: the
            // link monitor removes the port once the namespace's name is deleted.
            let queues = netns::run_in(netns, || open_queues(&port.name))
                .map_err(|source| netns_error(netns, source))?
                .map_err(tap_error)?;
            let netlink = links.get(Some(netns)).map_err(link_error)?;
            let index = netlink.index_of(&port.name).map_err(link_error)?;
            netlink.configure(index, &settings).map_err(link_error)?;
            queues
        }
        (None, _) => {
            let queues = open_queues(&port.name).map_err(tap_error)?;
            let netlink = links.own().map_err(link_error)?;
            let index = netlink.index_of(&port.name).map_err(link_error)?;
            netlink.configure(index, &settings).map_err(link_error)?;
            queues
        }
    };
    let tap = TapPort::with_queues(queues);
    info!(
        port = %port.name,
        netns = port.netns.as_deref().unwrap_or("-"),
        mtu = port.mtu,
        vnet_hdr = tap.tap().vnet_hdr_len() > 0,
        queues = port.queues(),
        adopted = port.adopted(),
        "TAP ready"
    );
    Ok(tap)
}

/// Opens the port `port` is: a TAP ([`create_tap_port`]) or an `AF_PACKET` socket on an
/// existing netdev, opened in that device's namespace; the device is left as it is.
pub fn open_port(
    switch: &SwitchConfig,
    port: &PortConfig,
    links: &mut LinkSockets,
) -> Result<Box<dyn Port>, SwitchError> {
    match port.kind() {
        PortKind::Tap => Ok(Box::new(create_tap_port(switch, port, links)?)),
        PortKind::Netdev => {
            let device = port.link_name().unwrap_or(&port.name);
            let netdev = NetdevPort::open(
                &port.name,
                device,
                port.netns.as_deref(),
                PacketOptions::default(),
            )?;
            info!(
                port = %port.name,
                device,
                netns = port.netns.as_deref().unwrap_or("-"),
                vnet_hdr = netdev.socket().vnet_hdr_len() > 0,
                "netdev port bound"
            );
            Ok(Box::new(netdev))
        }
        PortKind::Vxlan => {
            let settings = port
                .vxlan_settings(switch)
                .expect("a validated vxlan port has its vni and local address");
            let (vni, local, remotes) = (settings.vni, settings.local, settings.remotes.len());
            let opened =
                match port.netns.as_deref() {
                    None => VxlanPort::open(settings),
                    Some(netns) => netns::run_in(netns, move || VxlanPort::open(settings))
                        .map_err(|source| SwitchError::Netns {
                            port: port.name.clone(),
                            netns: netns.to_owned(),
                            source,
                        })?,
                };
            let vxlan = opened.map_err(|source| match source {
                UdpError::PortInUse {
                    local,
                    port: udp_port,
                } => {
                    // Named when it is a kernel vxlan device: the usual culprit, and the one
                    // whose socket no `ss -p` shows an owner for.
                    let held_by = links
                        .get(port.netns.as_deref())
                        .and_then(|netlink| netlink.vxlan_devices_on_port(udp_port))
                        .ok()
                        .and_then(|devices| devices.into_iter().next());
                    match held_by {
                        Some(device) => SwitchError::VxlanPortHeld {
                            port: port.name.clone(),
                            local,
                            device,
                        },
                        None => SwitchError::Vxlan {
                            port: port.name.clone(),
                            source: UdpError::PortInUse {
                                local,
                                port: udp_port,
                            },
                        },
                    }
                }
                source => SwitchError::Vxlan {
                    port: port.name.clone(),
                    source,
                },
            })?;
            info!(
                port = %port.name,
                vni,
                %local,
                remotes,
                netns = port.netns.as_deref().unwrap_or("-"),
                mtu = port.mtu,
                "vxlan port bound"
            );
            Ok(Box::new(vxlan))
        }
    }
}

/// Builds a dataplane with every port of `config`. On error, the ports made so
/// far are dropped, which deletes their (non-persistent) TAPs.
pub fn build(config: &Config) -> Result<(Dataplane, DataplaneHandle), SwitchError> {
    let mut links = LinkSockets::default();
    build_with(config, |port| open_port(&config.switch, port, &mut links))
}

/// Builds a dataplane whose ports come from `open_port`, called for each
/// port of `config` in order (new TAPs, or fds handed over by `upgrade`).
pub fn build_with(
    config: &Config,
    mut open_port: impl FnMut(&PortConfig) -> Result<Box<dyn Port>, SwitchError>,
) -> Result<(Dataplane, DataplaneHandle), SwitchError> {
    // Read here, on the main thread, before any dataplane thread has pinned itself.
    let allowed = sched::allowed_cpus()?;
    let cpus = config
        .switch
        .cpu_affinity
        .plan(&allowed, config.switch.threads.max(1))
        .map_err(|reason| SwitchError::CpuAffinity { reason })?;
    let (mut dataplane, handle) = Dataplane::new(DataplaneConfig {
        poll_budget: config.switch.poll_budget,
        idle_poll: config.switch.idle_poll(),
        adaptive_poll_pct: config.switch.adaptive_poll_pct,
        realtime_priority: config.switch.realtime_priority,
        cpus,
        cpus_required: matches!(config.switch.cpu_affinity, CpuAffinity::Cpus(_)),
        allowed_cpus: allowed,
        threads: config.switch.threads,
        fdb: FdbConfig {
            ageing: config.switch.fdb_ageing(),
            capacity: config.switch.fdb_capacity,
        },
    })?;
    dataplane
        .forwarder()
        .set_mac_flap(config.switch.mac_flap_config());
    for port in &config.ports {
        let id = dataplane.add_port(open_port(port)?, port.mtu)?;
        // The loop is not running yet: the port's policy is in place before its first frame.
        dataplane.update_port(id, &settings_of(&config.switch, port))?;
    }
    Ok((dataplane, handle))
}

/// The dataplane settings of a port's configuration (MTU, state, forwarding
/// policy under the switch's defaults), applied when it is added, before its
/// first frame.
pub fn settings_of(switch: &SwitchConfig, port: &PortConfig) -> PortUpdate {
    PortUpdate {
        mtu: Some(port.mtu),
        enabled: Some(port.enabled),
        policy: Some(port.policy_in(switch)),
        ..PortUpdate::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(alias: Option<&str>, tun: TunInfo) -> ExistingLink {
        ExistingLink {
            index: 7,
            kind: Some("tun".into()),
            alias: alias.map(str::to_owned),
            tun: Some(tun),
        }
    }

    const USER_TAP: TunInfo = TunInfo {
        tap: true,
        packet_info: false,
        vnet_hdr: false,
        persistent: true,
        multi_queue: false,
        attached_queues: 0,
    };

    /// `port` with its TAP settings changed by `change`.
    fn with_tap(
        port: &PortConfig,
        change: impl FnOnce(&mut crate::config::TapConfig),
    ) -> PortConfig {
        let mut port = port.clone();
        change(port.tap_mut().expect("a TAP port"));
        port
    }

    #[test]
    fn only_the_switchs_own_taps_are_taken_without_adopt() {
        let port = PortConfig::named("p1");
        assert!(matches!(claim(&port, None), Ok(Claim::Own)));
        let own = tap(Some(OWN_TAP_ALIAS), USER_TAP);
        assert!(matches!(claim(&port, Some(&own)), Ok(Claim::Own)));
        let four = with_tap(&port, |tap| tap.queues = 4);
        let err = claim(&four, Some(&own)).unwrap_err().to_string();
        assert!(
            err.contains("is single-queue, and the port now asks for queues = 4"),
            "{err}"
        );
        for alias in [None, Some("uplink"), Some("tapswitch")] {
            let err = claim(&port, Some(&tap(alias, USER_TAP))).unwrap_err();
            assert!(matches!(err, SwitchError::ForeignTap { .. }), "{err}");
            assert!(err.to_string().contains("--adopt"), "{err}");
        }
    }

    #[test]
    fn adopting_keeps_the_devices_flags_or_says_why_it_cannot() {
        let port = with_tap(&PortConfig::named("p1"), |tap| tap.adopt = true);
        let err = claim(&port, None).unwrap_err();
        assert!(matches!(err, SwitchError::NothingToAdopt { .. }), "{err}");
        let Ok(Claim::Adopted(tun)) = claim(&port, Some(&tap(None, USER_TAP))) else {
            panic!("a plain user TAP is adoptable");
        };
        assert_eq!(tun, USER_TAP);
        let cases = [
            (
                TunInfo {
                    packet_info: true,
                    ..USER_TAP
                },
                port.clone(),
                "packet-information headers",
            ),
            (
                USER_TAP,
                with_tap(&port, |tap| tap.offloads = Some(true)),
                "offloads = true needs a vnet header",
            ),
            (
                TunInfo {
                    vnet_hdr: true,
                    ..USER_TAP
                },
                with_tap(&port, |tap| tap.offloads = Some(false)),
                "offloads = false, but the device carries a vnet header",
            ),
            (
                USER_TAP,
                with_tap(&port, |tap| tap.queues = 2),
                "queues = 2 needs a multi-queue device",
            ),
        ];
        for (tun, port, expected) in cases {
            let err = claim(&port, Some(&tap(None, tun))).unwrap_err();
            assert!(matches!(err, SwitchError::CannotAdopt { .. }), "{err}");
            assert!(err.to_string().contains(expected), "{err}");
        }
    }

    #[test]
    fn a_device_that_is_no_tap_is_named_by_its_kind() {
        let port = PortConfig {
            netns: Some("blue".into()),
            ..PortConfig::named("p1")
        };
        let veth = ExistingLink {
            index: 3,
            kind: Some("veth".into()),
            alias: None,
            tun: None,
        };
        let tun = tap(
            Some(OWN_TAP_ALIAS),
            TunInfo {
                tap: false,
                ..USER_TAP
            },
        );
        for (link, expected) in [
            (
                veth,
                "port p1: namespace blue already has a device named p1, a veth device, not a TAP",
            ),
            (
                tun,
                "a TUN device (IP packets, not Ethernet frames), not a TAP",
            ),
        ] {
            for adopt in [false, true] {
                let port = with_tap(&port, |tap| tap.adopt = adopt);
                let err = claim(&port, Some(&link)).unwrap_err().to_string();
                assert!(err.contains(expected), "{err}");
            }
        }
    }
}
