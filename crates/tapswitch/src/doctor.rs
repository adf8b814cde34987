//! `tapswitch doctor`: looks at a running switch and its ports and names the
//! misconfigurations behind most "it is slow" and "big packets vanish"
//! reports, each with its fix.
//!
//! Two halves: [`inspect`] gathers facts (the switch's live config and port
//! list over its control socket, each port's netdev over netlink in its
//! namespace, the endpoint's offload state over the ethtool ioctl, the TUN
//! driver's features, the daemon's credentials from `/proc`), and
//! [`diagnose`] turns an [`Inspection`] into [`Finding`]s without any I/O, so
//! every rule is tested on hand-built inspections.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use serde::Serialize;
use thiserror::Error;

use crate::config::{Config, PortConfig, PortKind, SwitchConfig};
use crate::control::protocol::{Hello, PortList};
use crate::control::{ControlClient, ControlError, Request};
use crate::netlink::{LinkInfo, Netlink};
use crate::sys::netns;
use crate::sys::privileges::{
    self, CAP_CHOWN, CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN, CapSet, ProcessPrivileges,
};

/// `IFF_MULTI_QUEUE` and `IFF_VNET_HDR` of `linux/if_tun.h` (kernel ABI).
const IFF_MULTI_QUEUE: u32 = 0x0100;
const IFF_VNET_HDR: u32 = 0x4000;
/// `TUNGETFEATURES`: `_IOR('T', 207, unsigned int)`.
const TUNGETFEATURES: libc::c_ulong = (2 << 30) | (4 << 16) | ((b'T' as libc::c_ulong) << 8) | 207;
/// `SIOCETHTOOL` and the legacy one-feature ethtool getters of `linux/ethtool.h`.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_GSG: u32 = 0x18;
const ETHTOOL_GTSO: u32 = 0x1e;
/// `CAP_DAC_OVERRIDE`: file permissions do not apply.
const CAP_DAC_OVERRIDE: u32 = 1;
/// Below this a TAP's queue towards the switch overflows in bursts of super-frames.
pub const MIN_OFFLOAD_TXQUEUELEN: u32 = 1000;

/// Errors that stop the inspection as a whole (per-port problems become findings).
#[derive(Debug, Error)]
pub enum DoctorError {
    #[error("asking the switch: {0} (is `tapswitch run` serving this --control socket?)")]
    Control(#[from] ControlError),
}

/// How much a finding matters. Any [`Severity::Error`] makes `doctor` exit 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// One diagnosis: what is wrong (or worth knowing) and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable name of the rule (`mtu_netdev_above_switch`), for scripts.
    pub code: &'static str,
    /// The port concerned; `None` for the switch as a whole.
    pub port: Option<String>,
    pub what: String,
    pub fix: String,
}

/// Makes every `tapswitch …` command in the fixes name `control` when it is not the
/// default socket, so that a fix can be pasted as it is.
pub fn point_fixes_at(findings: &mut [Finding], control: &Path) {
    if control == Path::new(crate::control::DEFAULT_CONTROL_PATH) {
        return;
    }
    let with_control = format!("tapswitch --control {} ", control.display());
    for finding in findings {
        finding.fix = with_control_option(&finding.fix, &with_control);
    }
}

/// `fix` with each `tapswitch ` that starts a command (at the start, or after a space
/// or a backquote) replaced by `with_control`.
fn with_control_option(fix: &str, with_control: &str) -> String {
    let mut out = String::with_capacity(fix.len() + with_control.len());
    let mut rest = fix;
    while let Some(at) = rest.find("tapswitch ") {
        out.push_str(&rest[..at]);
        let starts_command = out
            .chars()
            .next_back()
            .is_none_or(|before| matches!(before, ' ' | '`' | '('));
        out.push_str(if starts_command {
            with_control
        } else {
            "tapswitch "
        });
        rest = &rest[at + "tapswitch ".len()..];
    }
    out.push_str(rest);
    out
}

/// Everything the rules look at.
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    /// The switch-wide settings in force.
    pub switch: SwitchConfig,
    /// Credentials and capabilities of the switch process, or why they are unknown.
    pub daemon: Result<ProcessPrivileges, String>,
    pub tun: TunFacts,
    pub ports: Vec<PortFacts>,
}

/// The TUN driver, as a fresh `/dev/net/tun` fd sees it.
#[derive(Clone, Debug, Serialize)]
pub struct TunFacts {
    /// `TUNGETFEATURES` flags, or why `/dev/net/tun` could not be asked.
    pub features: Result<u32, String>,
    /// The device node's permissions, when it exists.
    pub device: Option<DeviceNode>,
}

/// Mode and ownership of a device node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceNode {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl DeviceNode {
    /// Whether a process with these ids may open the node read-write by its mode bits.
    fn allows_rw(&self, uid: u32, gid: u32) -> bool {
        let shift = if uid == self.uid {
            6
        } else if gid == self.gid {
            3
        } else {
            0
        };
        (self.mode >> shift) & 0o6 == 0o6
    }
}

/// One port: its configuration, the switch's view of it, and its netdev.
#[derive(Clone, Debug, Serialize)]
pub struct PortFacts {
    pub config: PortConfig,
    /// MTU the switch checks frames from this port against.
    pub switch_mtu: u32,
    /// Whether the switch reads this port with a vnet header and offloads.
    pub offloads: bool,
    pub enabled: bool,
    /// TAP fds the switch process holds for this port, when `/proc` tells.
    pub switch_queues: Option<usize>,
    /// The netdev (the endpoint's side), or why it could not be read.
    pub netdev: Result<NetdevFacts, String>,
    /// A vxlan port's underlay: the device holding its `local` address, or why there is
    /// none (`None` for other kinds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub underlay: Option<Result<UnderlayFacts, String>>,
}

/// The device a vxlan port's datagrams leave by: the one holding its local address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnderlayFacts {
    pub device: String,
    pub mtu: u32,
}

/// Outer IPv4 (20), UDP (8) and VXLAN (8) headers and the inner Ethernet header (14): what
/// the underlay's MTU must hold beyond a vxlan port's inner MTU.
pub const VXLAN_OVERHEAD: u32 = 50;

/// The endpoint's side of a port (a netdev port's `device`).
#[derive(Clone, Debug, Serialize)]
pub struct NetdevFacts {
    pub link: LinkInfo,
    /// Offloads the endpoint's stack uses on this netdev, or why they are unknown.
    pub offloads: Result<EndpointOffloads, String>,
    /// The device the netdev is enslaved to (its IFLA_MASTER), when it is.
    pub master: Option<MasterFacts>,
}

/// A netdev's master: a kernel bridge, bond, team or VRF.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MasterFacts {
    pub name: String,
    /// IFLA_INFO_KIND (`bridge`, `bond`...), when known.
    pub kind: Option<String>,
}

/// ethtool's view of the netdev (`ethtool -k`): what the endpoint's stack hands down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointOffloads {
    pub tx_checksumming: bool,
    pub scatter_gather: bool,
    pub tcp_segmentation_offload: bool,
}

impl EndpointOffloads {
    /// The ethtool names of the offloads that are off.
    fn off(&self) -> Vec<&'static str> {
        [
            ("tx", self.tx_checksumming),
            ("sg", self.scatter_gather),
            ("tso", self.tcp_segmentation_offload),
        ]
        .into_iter()
        .filter(|(_, on)| !on)
        .map(|(name, _)| name)
        .collect()
    }
}

/// Applies every rule to `inspection`; errors first, then warnings, then notes.
pub fn diagnose(inspection: &Inspection) -> Vec<Finding> {
    let mut findings = Vec::new();
    check_tun(inspection, &mut findings);
    check_daemon(inspection, &mut findings);
    for port in &inspection.ports {
        check_port(&inspection.switch, port, &mut findings);
    }
    check_ports_together(&inspection.ports, &mut findings);
    // Stable: within a severity, switch-wide findings and then ports in order.
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    findings
}

fn finding(
    severity: Severity,
    code: &'static str,
    port: Option<&str>,
    what: String,
    fix: String,
) -> Finding {
    Finding {
        severity,
        code,
        port: port.map(str::to_owned),
        what,
        fix,
    }
}

/// `ip -n NS` or `ip`, for fixes that run on the endpoint's side.
fn ip(port: &PortConfig) -> String {
    match &port.netns {
        Some(netns) => format!("ip -n {netns}"),
        None => "ip".to_owned(),
    }
}

/// `ip netns exec NS ` or nothing, before tools without a namespace option.
fn in_netns(port: &PortConfig) -> String {
    match &port.netns {
        Some(netns) => format!("ip netns exec {netns} "),
        None => String::new(),
    }
}

fn check_tun(inspection: &Inspection, out: &mut Vec<Finding>) {
    let wants_vnet = inspection.ports.iter().filter(|p| p.offloads).count();
    let wants_mq = inspection
        .ports
        .iter()
        .filter(|p| p.config.queues() > 1)
        .count();
    match &inspection.tun.features {
        Err(reason) => out.push(finding(
            Severity::Error,
            "tun_unavailable",
            None,
            format!("/dev/net/tun cannot be used: {reason}; no port can be added"),
            "load the driver (modprobe tun) and create the node \
             (mkdir -p /dev/net && mknod /dev/net/tun c 10 200)"
                .into(),
        )),
        Ok(features) => {
            if features & IFF_VNET_HDR == 0 && wants_vnet > 0 {
                out.push(finding(
                    Severity::Error,
                    "tun_no_vnet_hdr",
                    None,
                    format!(
                        "the TUN driver lacks IFF_VNET_HDR, which {wants_vnet} port(s) with \
                         offloads need: adding them fails"
                    ),
                    "set offloads = false on those ports, or use a kernel with IFF_VNET_HDR".into(),
                ));
            }
            if features & IFF_MULTI_QUEUE == 0 && wants_mq > 0 {
                out.push(finding(
                    Severity::Error,
                    "tun_no_multi_queue",
                    None,
                    format!(
                        "the TUN driver lacks IFF_MULTI_QUEUE, which {wants_mq} port(s) with \
                         queues > 1 need"
                    ),
                    "set queues = 1 on those ports".into(),
                ));
            }
        }
    }
    if let (Ok(daemon), Some(device)) = (&inspection.daemon, inspection.tun.device)
        && !daemon.effective.contains(CAP_DAC_OVERRIDE)
        && !device.allows_rw(daemon.uid, daemon.gid)
    {
        out.push(finding(
            Severity::Warning,
            "tun_device_denied",
            None,
            format!(
                "the switch runs as uid {} gid {} without CAP_DAC_OVERRIDE and /dev/net/tun is \
                 mode {:04o} owned by {}:{}: `port add` at runtime fails with permission denied",
                daemon.uid, daemon.gid, device.mode, device.uid, device.gid
            ),
            "chmod 0666 /dev/net/tun (the udev default; creating a TAP still needs \
             CAP_NET_ADMIN), or give the node the switch's group with mode 0660"
                .into(),
        ));
    }
}

fn check_daemon(inspection: &Inspection, out: &mut Vec<Finding>) {
    let daemon = match &inspection.daemon {
        Ok(daemon) => daemon,
        Err(reason) => {
            out.push(finding(
                Severity::Warning,
                "daemon_unreadable",
                None,
                format!("the switch's credentials could not be read: {reason}"),
                "run doctor as root on the switch's host".into(),
            ));
            return;
        }
    };
    let needed = CapSet::of(&[CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN, CAP_CHOWN]);
    let uses: Vec<&str> = CAPABILITY_USES
        .iter()
        .filter(|(cap, _)| daemon.effective.contains(*cap))
        .map(|(_, what)| *what)
        .collect();
    let uses = if uses.is_empty() {
        String::new()
    } else {
        format!(" ({})", uses.join("; "))
    };
    out.push(finding(
        Severity::Info,
        "daemon_privileges",
        None,
        format!(
            "the switch (pid {}) runs as uid {} gid {} with capabilities {}{uses}",
            daemon.pid, daemon.uid, daemon.gid, daemon.effective
        ),
        "nothing to do".into(),
    ));
    if !daemon.effective.contains(CAP_NET_ADMIN) {
        out.push(finding(
            Severity::Error,
            "caps_no_net_admin",
            None,
            "the switch lacks CAP_NET_ADMIN: `port add` and `port set --mtu` fail with \
             \"operation not permitted\""
                .into(),
            "start it as root, or give its unit AmbientCapabilities=CAP_NET_ADMIN".into(),
        ));
    }
    if !daemon.effective.contains(CAP_SYS_ADMIN) {
        out.push(finding(
            Severity::Info,
            "caps_no_netns_hotplug",
            None,
            "the switch lacks CAP_SYS_ADMIN: `port add NAME@NETNS` is refused at runtime \
             (entering a namespace takes setns)"
                .into(),
            "list such ports in the config file, or set switch.netns_hotplug = true".into(),
        ));
    }
    if !daemon.effective.contains(CAP_CHOWN) {
        let refused = "`port add NAME --vm DOMAIN --owner UID` (macvtap mode) is refused at \
                       runtime: giving the macvtap's /dev/tapN to QEMU's user takes CAP_CHOWN";
        // Wanted but never held: started without it (e.g. a unit's capability lines).
        let wanted = inspection.switch.vm_hotplug.unwrap_or(true);
        out.push(if wanted {
            finding(
                Severity::Warning,
                "caps_no_vm_owner",
                None,
                format!("switch.vm_hotplug is on, but the switch lacks CAP_CHOWN: {refused}"),
                "start it with CAP_CHOWN (systemd: add it to CapabilityBoundingSet= and \
                 AmbientCapabilities=), or use vm_mode = glue, whose TAP owner needs none"
                    .into(),
            )
        } else {
            finding(
                Severity::Info,
                "caps_no_vm_owner",
                None,
                format!("the switch lacks CAP_CHOWN (switch.vm_hotplug = false): {refused}"),
                "list such VM ports in the config file, set switch.vm_hotplug = true, or use \
                 vm_mode = glue, whose TAP owner needs no extra capability"
                    .into(),
            )
        });
    }
    let excess = daemon.effective.without(needed);
    if !excess.is_empty() {
        let names = excess.names();
        let shown: Vec<&str> = names.iter().take(4).map(String::as_str).collect();
        let more = names.len().saturating_sub(shown.len());
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        out.push(finding(
            Severity::Warning,
            "caps_excess",
            None,
            format!(
                "the switch holds {} capabilities it never uses after setup ({}{tail}): \
                 least privilege is off",
                names.len(),
                shown.join(", ")
            ),
            if inspection.switch.drop_privileges {
                "drop_privileges is on but did not take effect: check the switch's log".into()
            } else {
                "set drop_privileges = true in [switch] (the default)".into()
            },
        ));
    }
}

/// What each capability a dropped switch may keep is kept for (README, Least privilege).
const CAPABILITY_USES: [(u32, &str); 4] = [
    (
        CAP_NET_ADMIN,
        "CAP_NET_ADMIN: TAPs, VM devices and links at runtime",
    ),
    (
        CAP_NET_RAW,
        "CAP_NET_RAW: AF_PACKET sockets of netdev ports at runtime",
    ),
    (
        CAP_SYS_ADMIN,
        "CAP_SYS_ADMIN: entering namespaces for `port add NAME@NETNS` (switch.netns_hotplug)",
    ),
    (
        CAP_CHOWN,
        "CAP_CHOWN: giving a new VM port's /dev/tapN to QEMU's user (switch.vm_hotplug)",
    ),
];

fn check_port(switch: &SwitchConfig, port: &PortFacts, out: &mut Vec<Finding>) {
    let name = port.config.name.as_str();
    let here = Some(name);
    if !port.enabled {
        out.push(finding(
            Severity::Info,
            "port_disabled",
            here,
            "the port is disabled: the switch drops every frame from and to it".into(),
            format!("tapswitch port set {name} --enable"),
        ));
    }
    // A netdev port holds a packet socket, no TAP fd.
    if let Some(held) = port.switch_queues
        && port.config.kind().is_tap()
        && held != port.config.queues()
    {
        out.push(finding(
            Severity::Error,
            "queues_mismatch",
            here,
            format!(
                "configured with {} queue(s) but the switch holds {held} TAP fd(s) for it",
                port.config.queues()
            ),
            format!("re-create the port: tapswitch port del {name}, then port add"),
        ));
    }
    if port.config.queues() > 1 && switch.threads == 1 {
        out.push(finding(
            Severity::Warning,
            "queues_single_thread",
            here,
            format!(
                "{} queues but one dataplane thread: every queue is read by the same thread, \
                 so the extra queues add fds, not throughput",
                port.config.queues()
            ),
            format!(
                "set switch.threads = {} (up to the number of cores), or queues = 1",
                port.config.queues()
            ),
        ));
    }
    if port.config.kind() == PortKind::Vxlan {
        // No netdev: its sockets are the port, and the underlay is not the switch's; only
        // whether the underlay can carry the port's frames encapsulated.
        check_vxlan_underlay(port, out);
        return;
    }
    let netdev = match &port.netdev {
        Ok(netdev) => netdev,
        Err(reason) => {
            out.push(finding(
                Severity::Error,
                "netdev_missing",
                here,
                format!("the port's netdev cannot be read: {reason}"),
                format!(
                    "if the netdev or its namespace was deleted, remove the port \
                     (tapswitch port del {name}) and add it again"
                ),
            ));
            return;
        }
    };
    if port.config.kind() == PortKind::Netdev {
        check_netdev_port(port, netdev, out);
        return;
    }
    let link = &netdev.link;
    if !link.up {
        out.push(finding(
            Severity::Error,
            "link_down",
            here,
            "the netdev is administratively down: the endpoint neither sends nor receives".into(),
            format!("{} link set dev {name} up", ip(&port.config)),
        ));
    } else if !link.carrier {
        out.push(finding(
            Severity::Error,
            "no_carrier",
            here,
            "the netdev has no carrier: no TAP queue is attached, so no frame reaches the switch"
                .into(),
            format!("re-create the port: tapswitch port del {name}, then port add"),
        ));
    }
    if link.mtu > port.switch_mtu {
        out.push(finding(
            Severity::Error,
            "mtu_netdev_above_switch",
            here,
            format!(
                "the netdev's MTU is {} but the switch's is {}: frames the endpoint sends above \
                 {} bytes of payload are dropped (counted as oversize)",
                link.mtu, port.switch_mtu, port.switch_mtu
            ),
            format!(
                "tapswitch port set {name} --mtu {} (sets both sides), or {} link set dev {name} mtu {}",
                link.mtu,
                ip(&port.config),
                port.switch_mtu
            ),
        ));
    } else if link.mtu < port.switch_mtu {
        out.push(finding(
            Severity::Warning,
            "mtu_netdev_below_switch",
            here,
            format!(
                "the netdev's MTU is {} but the switch's is {}: frames of up to {} bytes of \
                 payload are delivered to an endpoint that expects at most {}",
                link.mtu, port.switch_mtu, port.switch_mtu, link.mtu
            ),
            format!("tapswitch port set {name} --mtu {}", link.mtu),
        ));
    }
    if let Some(configured) = port.config.txqueuelen()
        && configured != link.txqueuelen
    {
        out.push(finding(
            Severity::Warning,
            "txqueuelen_changed",
            here,
            format!(
                "txqueuelen is {} but the config says {configured}: someone changed it",
                link.txqueuelen
            ),
            format!(
                "{} link set dev {name} txqueuelen {configured}",
                ip(&port.config)
            ),
        ));
    } else if port.offloads && link.txqueuelen < MIN_OFFLOAD_TXQUEUELEN {
        out.push(finding(
            Severity::Warning,
            "txqueuelen_small",
            here,
            format!(
                "txqueuelen {} with offloads: the TAP queues at most {} frames (of up to 64 KiB) \
                 for the switch and drops the rest of a burst",
                link.txqueuelen, link.txqueuelen
            ),
            format!(
                "txqueuelen = {MIN_OFFLOAD_TXQUEUELEN} or more for this port in the config, or \
                 {} link set dev {name} txqueuelen {MIN_OFFLOAD_TXQUEUELEN}",
                ip(&port.config)
            ),
        ));
    }
    if link.stats.tx_dropped > 0 {
        out.push(finding(
            Severity::Info,
            "netdev_tx_dropped",
            here,
            format!(
                "the netdev dropped {} frames on their way to the switch (its queue was full)",
                link.stats.tx_dropped
            ),
            "a longer txqueuelen absorbs bursts; a switch thread per busy port keeps up".into(),
        ));
    }
    match &netdev.offloads {
        Ok(offloads) if port.offloads && !offloads.off().is_empty() => {
            let off = offloads.off();
            out.push(finding(
                Severity::Warning,
                "endpoint_offloads_off",
                here,
                format!(
                    "the switch takes offloaded super-frames on this port but the endpoint turned \
                     off {}: its stack does that work per packet itself, a large cost in TCP \
                     throughput",
                    off.join(", ")
                ),
                format!(
                    "{}ethtool -K {name} {}",
                    in_netns(&port.config),
                    off.iter()
                        .map(|o| format!("{o} on"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            ));
        }
        Ok(_) => {}
        Err(reason) => out.push(finding(
            Severity::Info,
            "endpoint_offloads_unknown",
            here,
            format!("the endpoint's offload settings could not be read: {reason}"),
            format!("check by hand: {}ethtool -k {name}", in_netns(&port.config)),
        )),
    }
}

/// A netdev port's device is not the switch's: the fixes go to the device or to the
/// port's `mtu`, and the TAP rules (queues, carrier from a TAP fd) do not apply.
fn check_netdev_port(port: &PortFacts, netdev: &NetdevFacts, out: &mut Vec<Finding>) {
    let name = port.config.name.as_str();
    let here = Some(name);
    let device = port.config.link_name().unwrap_or(name);
    let link = &netdev.link;
    let ip = ip(&port.config);
    if !link.up {
        out.push(finding(
            Severity::Error,
            "link_down",
            here,
            format!(
                "device {device} is administratively down: the port neither sends nor receives"
            ),
            format!("{ip} link set dev {device} up"),
        ));
    } else if !link.carrier {
        out.push(finding(
            Severity::Error,
            "no_carrier",
            here,
            format!(
                "device {device} has no carrier (cable, peer or lower device down): frames \
                 to the port count link_down"
            ),
            format!("check the device's other end: {ip} link show dev {device}"),
        ));
    }
    if link.mtu != port.switch_mtu {
        let (severity, effect) = if link.mtu > port.switch_mtu {
            (
                Severity::Error,
                format!(
                    "frames the device receives above {} bytes of payload are dropped \
                     (counted as oversize)",
                    port.switch_mtu
                ),
            )
        } else {
            (
                Severity::Warning,
                format!(
                    "frames of up to {} bytes of payload are sent to a device that carries at \
                     most {} (the kernel drops them)",
                    port.switch_mtu, link.mtu
                ),
            )
        };
        out.push(finding(
            severity,
            "netdev_device_mtu_differs",
            here,
            format!(
                "device {device}'s MTU is {} but the port's mtu is {}: {effect}",
                link.mtu, port.switch_mtu
            ),
            format!(
                "tapswitch port set {name} --mtu {} (the switch's check only; the device is \
                 left as it is), or {ip} link set dev {device} mtu {}",
                link.mtu, port.switch_mtu
            ),
        ));
    }
    if let Some(master) = &netdev.master {
        let what = match master.kind.as_deref() {
            Some("bridge") => format!(
                "device {device} is a port of kernel bridge {}: every frame it receives is \
                 also taken by the bridge, which forwards and floods it on its other ports \
                 as well (duplicates, loops)",
                master.name
            ),
            kind => format!(
                "device {device} is enslaved to {} ({}): its frames belong to that device too, \
                 and the switch sees only what reaches this one",
                master.name,
                kind.unwrap_or("unknown kind")
            ),
        };
        out.push(finding(
            Severity::Warning,
            "netdev_enslaved",
            here,
            what,
            format!(
                "{ip} link set dev {device} nomaster, or attach the port to {} itself \
                 (tapswitch port add {name} --netdev {})",
                master.name, master.name
            ),
        ));
    }
}

/// A vxlan port's inner MTU against its underlay's: each frame grows by
/// [`VXLAN_OVERHEAD`] bytes on the way out.
fn check_vxlan_underlay(port: &PortFacts, out: &mut Vec<Finding>) {
    let name = port.config.name.as_str();
    let local = port
        .config
        .vxlan()
        .map(|vxlan| vxlan.local.to_string())
        .unwrap_or_default();
    match &port.underlay {
        None => {}
        Some(Err(reason)) => out.push(finding(
            Severity::Error,
            "vxlan_local_missing",
            Some(name),
            format!(
                "no device of the port's namespace holds its local address {local} ({reason}): \
                 nothing for that address reaches the port, and what it sends is refused \
                 (counted as tx_rejected) or leaves with a source no peer knows"
            ),
            format!(
                "{} addr add {local}/PREFIX dev UNDERLAY, or re-create the port with the \
                 address it has now (tapswitch port del {name}, then port add)",
                ip(&port.config)
            ),
        )),
        Some(Ok(underlay)) if underlay.mtu < port.switch_mtu + VXLAN_OVERHEAD => {
            let device = &underlay.device;
            out.push(finding(
                Severity::Warning,
                "vxlan_underlay_mtu_too_small",
                Some(name),
                format!(
                    "the port's mtu is {} but its underlay {device} (holding {local}) has MTU \
                     {}, which carries inner frames of at most {} bytes of payload: larger ones \
                     leave as IP fragments (dropped where the underlay does not reassemble)",
                    port.switch_mtu,
                    underlay.mtu,
                    underlay.mtu.saturating_sub(VXLAN_OVERHEAD)
                ),
                format!(
                    "tapswitch port set {name} --mtu {} and the same MTU on the endpoints, or \
                     {} link set dev {device} mtu {}",
                    underlay.mtu.saturating_sub(VXLAN_OVERHEAD),
                    ip(&port.config),
                    port.switch_mtu + VXLAN_OVERHEAD
                ),
            ));
        }
        Some(Ok(_)) => {}
    }
}

fn check_ports_together(ports: &[PortFacts], out: &mut Vec<Finding>) {
    let live: Vec<&PortFacts> = ports.iter().filter(|p| p.enabled).collect();
    if let Some(offloaded) = live.iter().find(|p| p.offloads) {
        // A vxlan port carries super-frames whole (it segments them for the underlay
        // itself), so it never is the port without offloads this is about.
        for port in live
            .iter()
            .filter(|p| !p.offloads && p.config.kind() != PortKind::Vxlan)
        {
            let name = &port.config.name;
            out.push(finding(
                Severity::Warning,
                "offloads_mixed",
                Some(name),
                format!(
                    "offloads are off here but on for {}: every super-frame \
                     from those ports to this one is segmented and checksummed in software by \
                     the switch, and TCP from this endpoint is not offloaded at all",
                    offloaded.config.name
                ),
                format!(
                    "offloads = true on {name} (port del and add it with --offloads true), or \
                     false on every port"
                ),
            ));
        }
    }
    let Some(largest) = live.iter().max_by_key(|p| p.switch_mtu) else {
        return;
    };
    for port in live.iter().filter(|p| p.switch_mtu < largest.switch_mtu) {
        let name = &port.config.name;
        out.push(finding(
            Severity::Warning,
            "mtu_ports_differ",
            Some(name),
            format!(
                "MTU {} here but {} on {}: frames between the two sizes are forwarded here \
                 unchanged; an endpoint that enforces its MTU drops them silently and path MTU \
                 discovery cannot tell",
                port.switch_mtu, largest.switch_mtu, largest.config.name
            ),
            format!(
                "one MTU per L2 domain: tapswitch port set {name} --mtu {} (or lower {})",
                largest.switch_mtu, largest.config.name
            ),
        ));
    }
}

/// Whether any finding is an error (doctor's exit status 1).
pub fn has_errors(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}

/// Asks the switch at `control` for its configuration and ports and reads
/// the facts behind them. Must run as root to enter the ports' namespaces
/// and read the switch's `/proc` entries; what it cannot read becomes a finding.
pub fn inspect(control: &Path) -> Result<Inspection, DoctorError> {
    let mut client = ControlClient::connect(control)?;
    let hello: Hello = client.request_as(&Request::Hello {})?;
    let config: Config = client.request_as(&Request::ConfigShow {})?;
    let live: PortList = client.request_as(&Request::PortList {})?;
    let daemon = privileges::read_process(hello.pid).map_err(|e| e.to_string());
    let queues_held = tap_fds_of(hello.pid).ok();
    let mut ports = Vec::new();
    for port in config.ports {
        let Some(view) = live.iter().find(|p| p.name == port.name) else {
            // Removed between the two requests.
            continue;
        };
        let netdev = netdev_facts(&port);
        let underlay = port.vxlan().map(|vxlan| underlay_facts(&port, vxlan.local));
        ports.push(PortFacts {
            underlay,
            switch_mtu: view.mtu,
            offloads: view.offloads,
            enabled: view.enabled,
            switch_queues: queues_held
                .as_ref()
                .map(|held| held.get(&port.name).copied().unwrap_or(0)),
            netdev,
            config: port,
        });
    }
    Ok(Inspection {
        switch: config.switch,
        daemon,
        tun: tun_facts(),
        ports,
    })
}

/// Reads the netdev of `port` (its TAP, or a netdev port's device) in its namespace.
fn netdev_facts(port: &PortConfig) -> Result<NetdevFacts, String> {
    let name = port
        .link_name()
        .ok_or("a vxlan port has no netdev")?
        .to_owned();
    let read = move || -> Result<NetdevFacts, String> {
        let mut netlink = Netlink::open().map_err(|e| e.to_string())?;
        let link = netlink.info(&name).map_err(|e| e.to_string())?;
        let master = link.master.and_then(|index| {
            let name = netlink.name_of(index)?;
            let kind = netlink.existing(&name).ok().flatten().and_then(|l| l.kind);
            Some(MasterFacts { name, kind })
        });
        let offloads = endpoint_offloads(&name).map_err(|e| format!("ethtool ioctl: {e}"));
        Ok(NetdevFacts {
            link,
            offloads,
            master,
        })
    };
    match &port.netns {
        Some(netns) => netns::run_in(netns, read).map_err(|e| e.to_string())?,
        None => read(),
    }
}

/// The device holding `local` in `port`'s namespace, and its MTU.
fn underlay_facts(port: &PortConfig, local: Ipv4Addr) -> Result<UnderlayFacts, String> {
    let read = move || -> Result<UnderlayFacts, String> {
        let device = interface_with(local)
            .map_err(|e| format!("getifaddrs: {e}"))?
            .ok_or_else(|| "no interface has it".to_owned())?;
        let mut netlink = Netlink::open().map_err(|e| e.to_string())?;
        let link = netlink.info(&device).map_err(|e| e.to_string())?;
        Ok(UnderlayFacts {
            device,
            mtu: link.mtu,
        })
    };
    match &port.netns {
        Some(netns) => netns::run_in(netns, read).map_err(|e| e.to_string())?,
        None => read(),
    }
}

/// The name of the interface of the calling thread's namespace that has IPv4 address `ip`.
fn interface_with(ip: Ipv4Addr) -> io::Result<Option<String>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `list`; it is freed below.
    if unsafe { libc::getifaddrs(&raw mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = None;
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list getifaddrs made, not yet freed.
        let ifaddr = unsafe { &*entry };
        entry = ifaddr.ifa_next;
        if ifaddr.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: a non-null ifa_addr points at a sockaddr of at least its family's header.
        let family = unsafe { (*ifaddr.ifa_addr).sa_family };
        if i32::from(family) != libc::AF_INET {
            continue;
        }
        // SAFETY: an AF_INET ifa_addr is a sockaddr_in.
        let address = unsafe { &*ifaddr.ifa_addr.cast::<libc::sockaddr_in>() };
        if Ipv4Addr::from(u32::from_be(address.sin_addr.s_addr)) == ip {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { std::ffi::CStr::from_ptr(ifaddr.ifa_name) };
            found = Some(name.to_string_lossy().into_owned());
            break;
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once; nothing borrows it now.
    unsafe { libc::freeifaddrs(list) };
    Ok(found)
}

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// The endpoint-side offloads of netdev `name` in the calling thread's namespace.
fn endpoint_offloads(name: &str) -> io::Result<EndpointOffloads> {
    // SAFETY: plain socket creation; the fd is owned right below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh socket nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    let get = |cmd: u32| -> io::Result<bool> {
        let mut value = EthtoolValue { cmd, data: 0 };
        // SAFETY: ifreq is plain data; all-zero is valid.
        let mut ifreq: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifreq.ifr_name.iter_mut().zip(name.bytes().take(15)) {
            *dst = src as libc::c_char;
        }
        ifreq.ifr_ifru.ifru_data = (&raw mut value).cast();
        // SAFETY: SIOCETHTOOL reads the ifreq and reads/writes the ethtool_value its
        // data pointer names; both are live locals for the call.
        let ret = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL, &mut ifreq) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(value.data != 0)
    };
    Ok(EndpointOffloads {
        tx_checksumming: get(ETHTOOL_GTXCSUM)?,
        scatter_gather: get(ETHTOOL_GSG)?,
        tcp_segmentation_offload: get(ETHTOOL_GTSO)?,
    })
}

/// The TUN driver's features and the device node's permissions.
pub fn tun_facts() -> TunFacts {
    let path = "/dev/net/tun";
    let device = std::fs::metadata(path).ok().map(|meta| DeviceNode {
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    });
    let features = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("opening {path}: {e}"))
        .and_then(|file| {
            let mut features: libc::c_uint = 0;
            // SAFETY: TUNGETFEATURES writes one unsigned int through the pointer,
            // which points at `features`, live for the call.
            let ret = unsafe { libc::ioctl(file.as_raw_fd(), TUNGETFEATURES, &mut features) };
            if ret < 0 {
                Err(format!("TUNGETFEATURES: {}", io::Error::last_os_error()))
            } else {
                Ok(features)
            }
        });
    TunFacts { features, device }
}

/// TAP fds process `pid` holds, by interface name (tun's `fdinfo` names it: `iff:\tNAME`).
fn tap_fds_of(pid: u32) -> io::Result<HashMap<String, usize>> {
    let mut held = HashMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target != Path::new("/dev/net/tun") {
            continue;
        }
        let info_path = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        let Ok(info) = std::fs::read_to_string(info_path) else {
            continue;
        };
        if let Some(name) = info.lines().find_map(|line| line.strip_prefix("iff:")) {
            *held.entry(name.trim().to_owned()).or_insert(0) += 1;
        }
    }
    Ok(held)
}

#[cfg(test)]
mod tests {

    #[test]
    fn fixes_name_a_control_socket_that_is_not_the_default() {
        let finding = |fix: &str| Finding {
            severity: Severity::Error,
            code: "x",
            port: None,
            what: String::new(),
            fix: fix.to_owned(),
        };
        let mut findings = vec![
            finding(
                "tapswitch port set p0 --mtu 9000 (sets both sides), or ip link set p0 mtu 1500",
            ),
            finding("run `tapswitch port set p1 --enable`"),
            finding("ip -n ns link set dev eth1 up"),
            finding("restart mytapswitch thing"),
        ];
        let mut unchanged = findings.clone();
        point_fixes_at(
            &mut unchanged,
            Path::new(crate::control::DEFAULT_CONTROL_PATH),
        );
        assert_eq!(unchanged, findings);
        point_fixes_at(&mut findings, Path::new("/tmp/t.sock"));
        assert_eq!(
            findings[0].fix,
            "tapswitch --control /tmp/t.sock port set p0 --mtu 9000 (sets both sides), or ip link set p0 mtu 1500"
        );
        assert_eq!(
            findings[1].fix,
            "run `tapswitch --control /tmp/t.sock port set p1 --enable`"
        );
        assert_eq!(findings[2].fix, "ip -n ns link set dev eth1 up");
        assert_eq!(findings[3].fix, "restart mytapswitch thing");
    }

    use super::*;
    use crate::config::{DeviceConfig, NetdevConfig, VxlanConfig};
    use crate::netlink::LinkStats;

    fn healthy_port(name: &str) -> PortFacts {
        let mut config = PortConfig::named(name);
        config.netns = Some(format!("ns-{name}"));
        PortFacts {
            switch_mtu: config.mtu,
            offloads: true,
            enabled: true,
            switch_queues: Some(1),
            netdev: Ok(NetdevFacts {
                link: LinkInfo {
                    index: 7,
                    name: name.to_owned(),
                    mtu: 1500,
                    mac: None,
                    up: true,
                    carrier: true,
                    oper_state: "UP".into(),
                    txqueuelen: 1000,
                    stats: LinkStats::default(),
                    master: None,
                },
                offloads: Ok(EndpointOffloads {
                    tx_checksumming: true,
                    scatter_gather: true,
                    tcp_segmentation_offload: true,
                }),
                master: None,
            }),
            underlay: None,
            config,
        }
    }

    fn healthy() -> Inspection {
        Inspection {
            switch: SwitchConfig::default(),
            daemon: Ok(ProcessPrivileges {
                pid: 42,
                uid: 0,
                gid: 0,
                effective: CapSet::of(&[CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_CHOWN]),
                permitted: CapSet::of(&[CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_CHOWN]),
                bounding: CapSet::of(&[CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_CHOWN]),
                ambient: CapSet::default(),
            }),
            tun: TunFacts {
                features: Ok(IFF_VNET_HDR | IFF_MULTI_QUEUE | 0x1002),
                device: Some(DeviceNode {
                    mode: 0o600,
                    uid: 0,
                    gid: 0,
                }),
            },
            ports: vec![healthy_port("p0"), healthy_port("p1")],
        }
    }

    fn netdev(inspection: &mut Inspection, port: usize) -> &mut NetdevFacts {
        inspection.ports[port].netdev.as_mut().unwrap()
    }

    /// (code, port) of the findings above info level.
    fn problems(inspection: &Inspection) -> Vec<(&'static str, Option<String>)> {
        diagnose(inspection)
            .into_iter()
            .filter(|f| f.severity > Severity::Info)
            .map(|f| (f.code, f.port))
            .collect()
    }

    fn one(code: &'static str, port: &str) -> Vec<(&'static str, Option<String>)> {
        vec![(code, Some(port.to_owned()))]
    }

    #[test]
    fn a_healthy_switch_has_only_notes() {
        let findings = diagnose(&healthy());
        assert!(!has_errors(&findings));
        let codes: Vec<_> = findings.iter().map(|f| f.code).collect();
        assert_eq!(codes, ["daemon_privileges"]);
        assert!(findings[0].what.contains("CAP_NET_ADMIN,CAP_SYS_ADMIN"));
    }

    #[test]
    fn netdev_mtu_above_the_switch_is_an_error_with_both_fixes() {
        let mut inspection = healthy();
        netdev(&mut inspection, 0).link.mtu = 9000;
        assert_eq!(problems(&inspection), one("mtu_netdev_above_switch", "p0"));
        let findings = diagnose(&inspection);
        assert!(has_errors(&findings));
        assert_eq!(
            findings[0].fix,
            "tapswitch port set p0 --mtu 9000 (sets both sides), or ip -n ns-p0 link set dev p0 mtu 1500"
        );
    }

    #[test]
    fn netdev_mtu_below_the_switch_is_a_warning() {
        let mut inspection = healthy();
        netdev(&mut inspection, 1).link.mtu = 1400;
        assert_eq!(problems(&inspection), one("mtu_netdev_below_switch", "p1"));
        assert!(!has_errors(&diagnose(&inspection)));
    }

    #[test]
    fn ports_with_different_mtus_warn_on_the_smaller() {
        let mut inspection = healthy();
        inspection.ports[1].switch_mtu = 9000;
        netdev(&mut inspection, 1).link.mtu = 9000;
        let findings = diagnose(&inspection);
        let found = findings
            .iter()
            .find(|f| f.code == "mtu_ports_differ")
            .unwrap();
        assert_eq!(found.port.as_deref(), Some("p0"));
        assert!(
            found.what.contains("MTU 1500 here but 9000 on p1"),
            "{found:?}"
        );
        // A disabled port does not take part.
        inspection.ports[1].enabled = false;
        assert!(problems(&inspection).is_empty());
    }

    #[test]
    fn offloads_on_one_port_only_warn_on_the_other() {
        let mut inspection = healthy();
        inspection.ports[1].offloads = false;
        assert_eq!(problems(&inspection), one("offloads_mixed", "p1"));
        // Off everywhere is consistent.
        inspection.ports[0].offloads = false;
        assert!(problems(&inspection).is_empty());
    }

    #[test]
    fn endpoint_offloads_off_name_the_ethtool_fix() {
        let mut inspection = healthy();
        netdev(&mut inspection, 0).offloads = Ok(EndpointOffloads {
            tx_checksumming: true,
            scatter_gather: true,
            tcp_segmentation_offload: false,
        });
        let findings = diagnose(&inspection);
        let found = findings
            .iter()
            .find(|f| f.code == "endpoint_offloads_off")
            .unwrap();
        assert_eq!(found.fix, "ip netns exec ns-p0 ethtool -K p0 tso on");
        // Without offloads on the switch's side there is nothing to use.
        inspection.ports[0].offloads = false;
        inspection.ports[1].offloads = false;
        assert!(problems(&inspection).is_empty());
    }

    #[test]
    fn link_state_problems_are_errors() {
        let mut inspection = healthy();
        netdev(&mut inspection, 0).link.up = false;
        netdev(&mut inspection, 1).link.carrier = false;
        assert_eq!(
            problems(&inspection),
            vec![
                ("link_down", Some("p0".into())),
                ("no_carrier", Some("p1".into()))
            ]
        );
        inspection.ports[1].netdev = Err("network device p1 not found".into());
        assert!(problems(&inspection).contains(&("netdev_missing", Some("p1".into()))));
    }

    #[test]
    fn short_queues_warn_only_with_offloads() {
        let mut inspection = healthy();
        netdev(&mut inspection, 0).link.txqueuelen = 100;
        assert_eq!(problems(&inspection), one("txqueuelen_small", "p0"));
        inspection.ports[0].offloads = false;
        inspection.ports[1].offloads = false;
        assert!(problems(&inspection).is_empty());
        // A configured length that the netdev no longer has is a change behind our back.
        inspection.ports[0].config.tap_mut().unwrap().txqueuelen = Some(5000);
        assert_eq!(problems(&inspection), one("txqueuelen_changed", "p0"));
    }

    #[test]
    fn queue_problems() {
        let mut inspection = healthy();
        inspection.ports[0].config.tap_mut().unwrap().queues = 4;
        inspection.ports[0].switch_queues = Some(3);
        assert_eq!(
            problems(&inspection),
            vec![
                ("queues_mismatch", Some("p0".into())),
                ("queues_single_thread", Some("p0".into()))
            ]
        );
        inspection.switch.threads = 2;
        inspection.ports[0].switch_queues = Some(4);
        assert!(problems(&inspection).is_empty());
    }

    #[test]
    fn missing_tun_features_are_errors_when_ports_need_them() {
        let mut inspection = healthy();
        inspection.tun.features = Ok(0x1002);
        assert_eq!(
            problems(&inspection),
            vec![("tun_no_vnet_hdr", None)],
            "no port has queues > 1, so IFF_MULTI_QUEUE is not needed"
        );
        inspection.ports[0].config.tap_mut().unwrap().queues = 2;
        inspection.ports[0].switch_queues = Some(2);
        inspection.switch.threads = 2;
        assert!(problems(&inspection).contains(&("tun_no_multi_queue", None)));
        inspection.tun.features = Err("opening /dev/net/tun: No such file".into());
        assert_eq!(problems(&inspection), vec![("tun_unavailable", None)]);
    }

    #[test]
    fn capability_findings() {
        let mut inspection = healthy();
        let daemon = inspection.daemon.as_mut().unwrap();
        daemon.effective = CapSet(0x1ff_ffff_ffff);
        inspection.switch.drop_privileges = false;
        let findings = diagnose(&inspection);
        let excess = findings.iter().find(|f| f.code == "caps_excess").unwrap();
        assert!(excess.what.contains("37 capabilities"), "{excess:?}");
        assert!(excess.fix.contains("drop_privileges = true"));

        let daemon = inspection.daemon.as_mut().unwrap();
        daemon.effective = CapSet::default();
        let codes: Vec<_> = diagnose(&inspection).iter().map(|f| f.code).collect();
        assert!(codes.contains(&"caps_no_net_admin") && codes.contains(&"caps_no_netns_hotplug"));
    }

    #[test]
    fn doctor_says_what_each_capability_is_kept_for_and_when_vm_owners_fail() {
        let inspection = healthy();
        let findings = diagnose(&inspection);
        let privileges = findings
            .iter()
            .find(|f| f.code == "daemon_privileges")
            .unwrap();
        assert!(
            privileges
                .what
                .contains("CAP_CHOWN: giving a new VM port's /dev/tapN")
                && privileges.what.contains("(switch.vm_hotplug)"),
            "{privileges:?}"
        );
        assert!(!findings.iter().any(|f| f.code == "caps_no_vm_owner"));

        // Without CAP_CHOWN although vm_hotplug is on (a unit without it): a warning.
        let mut inspection = healthy();
        let daemon = inspection.daemon.as_mut().unwrap();
        daemon.effective = CapSet::of(&[CAP_NET_ADMIN, CAP_SYS_ADMIN]);
        assert_eq!(problems(&inspection), vec![("caps_no_vm_owner", None)]);
        let warning = diagnose(&inspection)
            .into_iter()
            .find(|f| f.code == "caps_no_vm_owner")
            .unwrap();
        assert!(warning.fix.contains("AmbientCapabilities="), "{warning:?}");
        assert!(!warning.what.contains("CAP_CHOWN: giving"), "{warning:?}");

        // Turned off on purpose: a note with the ways out.
        inspection.switch.vm_hotplug = Some(false);
        assert!(problems(&inspection).is_empty());
        let note = diagnose(&inspection)
            .into_iter()
            .find(|f| f.code == "caps_no_vm_owner")
            .unwrap();
        assert_eq!(note.severity, Severity::Info);
        assert!(note.fix.contains("vm_mode = glue"), "{note:?}");
    }

    #[test]
    fn an_unprivileged_switch_needs_access_to_the_tun_node() {
        let mut inspection = healthy();
        let daemon = inspection.daemon.as_mut().unwrap();
        (daemon.uid, daemon.gid) = (65534, 65534);
        assert_eq!(problems(&inspection), vec![("tun_device_denied", None)]);
        inspection.tun.device = Some(DeviceNode {
            mode: 0o666,
            uid: 0,
            gid: 0,
        });
        assert!(problems(&inspection).is_empty());
        inspection.tun.device = Some(DeviceNode {
            mode: 0o660,
            uid: 0,
            gid: 65534,
        });
        assert!(problems(&inspection).is_empty());
    }

    #[test]
    fn a_netdev_mtu_above_the_switch_is_found_with_its_fix() {
        // The same inspection as the CLI's table test (`report::findings`).
        let mut inspection = healthy();
        netdev(&mut inspection, 0).link.mtu = 9000;
        inspection.ports[1].offloads = false;
        let findings = diagnose(&inspection);
        let first = &findings[0];
        assert_eq!(first.code, "mtu_netdev_above_switch");
        assert_eq!(first.severity, Severity::Error);
        assert_eq!(first.port.as_deref(), Some("p0"));
        assert!(
            first.what.starts_with("the netdev's MTU is 9000"),
            "{first:?}"
        );
        assert!(
            first.fix.starts_with("tapswitch port set p0 --mtu 9000"),
            "{first:?}"
        );
        let count = |severity| findings.iter().filter(|f| f.severity == severity).count();
        assert_eq!(
            [
                count(Severity::Error),
                count(Severity::Warning),
                count(Severity::Info)
            ],
            [1, 1, 1]
        );
    }

    /// p1 as a netdev port on veth `eth1` (in p1's namespace).
    fn with_netdev_port() -> Inspection {
        let mut inspection = healthy();
        let port = &mut inspection.ports[1];
        port.config.device = DeviceConfig::Netdev(NetdevConfig {
            device: "eth1".into(),
        });
        port.netdev.as_mut().unwrap().link.name = "eth1".into();
        inspection
    }

    /// Port 1 a vxlan port of mtu 1450 on `local` 10.1.0.1, its underlay `eth0` of MTU
    /// `underlay_mtu`.
    fn with_vxlan_port(underlay_mtu: u32) -> Inspection {
        let mut inspection = healthy();
        // The endpoints have the segment's MTU too.
        for port in &mut inspection.ports {
            port.config.mtu = 1450;
            port.switch_mtu = 1450;
            if let Ok(netdev) = &mut port.netdev {
                netdev.link.mtu = 1450;
            }
        }
        let port = &mut inspection.ports[1];
        port.config.device = DeviceConfig::Vxlan(VxlanConfig {
            vni: Some(100),
            vlan_vni: Default::default(),
            local: Ipv4Addr::new(10, 1, 0, 1),
            udp_port: None,
            remotes: vec![Ipv4Addr::new(10, 1, 0, 2)],
        });
        port.config.mtu = 1450;
        port.switch_mtu = 1450;
        port.switch_queues = Some(0);
        port.netdev = Err("a vxlan port has no netdev".into());
        port.underlay = Some(Ok(UnderlayFacts {
            device: "eth0".into(),
            mtu: underlay_mtu,
        }));
        inspection
    }

    #[test]
    fn a_vxlan_port_whose_underlay_carries_its_mtu_has_no_findings() {
        // Without offloads (as every vxlan port) among TAP ports with: nothing to fix.
        let mut inspection = with_vxlan_port(1500);
        inspection.ports[1].offloads = false;
        assert!(problems(&inspection).is_empty());
        assert!(problems(&with_vxlan_port(9000)).is_empty());
    }

    #[test]
    fn a_vxlan_port_above_its_underlays_mtu_less_50_is_found_with_both_fixes() {
        let inspection = with_vxlan_port(1400);
        assert_eq!(
            problems(&inspection),
            one("vxlan_underlay_mtu_too_small", "p1")
        );
        let findings = diagnose(&inspection);
        let found = &findings[0];
        assert_eq!(found.severity, Severity::Warning);
        assert_eq!(
            found.what,
            "the port's mtu is 1450 but its underlay eth0 (holding 10.1.0.1) has MTU 1400, \
             which carries inner frames of at most 1350 bytes of payload: larger ones leave as \
             IP fragments (dropped where the underlay does not reassemble)"
        );
        assert_eq!(
            found.fix,
            "tapswitch port set p1 --mtu 1350 and the same MTU on the endpoints, or \
             ip -n ns-p1 link set dev eth0 mtu 1500"
        );
        // Exactly 50 bytes more is enough.
        assert!(problems(&with_vxlan_port(1500)).is_empty());
        assert_eq!(
            problems(&with_vxlan_port(1499)),
            one("vxlan_underlay_mtu_too_small", "p1")
        );
    }

    #[test]
    fn a_vxlan_port_whose_local_address_is_gone_is_an_error() {
        let mut inspection = with_vxlan_port(1500);
        inspection.ports[1].underlay = Some(Err("no interface has it".into()));
        assert_eq!(problems(&inspection), one("vxlan_local_missing", "p1"));
        assert!(has_errors(&diagnose(&inspection)));
    }

    #[test]
    fn a_healthy_netdev_port_has_no_findings() {
        assert!(problems(&with_netdev_port()).is_empty());
    }

    #[test]
    fn a_netdev_port_device_mtu_other_than_the_ports_is_found_with_its_fixes() {
        let mut inspection = with_netdev_port();
        netdev(&mut inspection, 1).link.mtu = 9000;
        assert_eq!(
            problems(&inspection),
            one("netdev_device_mtu_differs", "p1")
        );
        let findings = diagnose(&inspection);
        let found = &findings[0];
        assert_eq!(found.severity, Severity::Error);
        assert_eq!(
            found.what,
            "device eth1's MTU is 9000 but the port's mtu is 1500: frames the device receives \
             above 1500 bytes of payload are dropped (counted as oversize)"
        );
        assert_eq!(
            found.fix,
            "tapswitch port set p1 --mtu 9000 (the switch's check only; the device is left as \
             it is), or ip -n ns-p1 link set dev eth1 mtu 1500"
        );

        netdev(&mut inspection, 1).link.mtu = 1400;
        let findings = diagnose(&inspection);
        let found = findings
            .iter()
            .find(|f| f.code == "netdev_device_mtu_differs")
            .unwrap();
        assert_eq!(found.severity, Severity::Warning);
        assert!(found.what.contains("carries at most 1400"), "{found:?}");
        assert!(!has_errors(&findings));
    }

    #[test]
    fn a_netdev_port_on_a_bridge_port_is_found_with_its_fix() {
        let mut inspection = with_netdev_port();
        netdev(&mut inspection, 1).master = Some(MasterFacts {
            name: "br0".into(),
            kind: Some("bridge".into()),
        });
        assert_eq!(problems(&inspection), one("netdev_enslaved", "p1"));
        let found = diagnose(&inspection)
            .into_iter()
            .find(|f| f.code == "netdev_enslaved")
            .unwrap();
        assert!(
            found.what.contains("kernel bridge br0")
                && found.what.contains("also taken by the bridge"),
            "{found:?}"
        );
        assert_eq!(
            found.fix,
            "ip -n ns-p1 link set dev eth1 nomaster, or attach the port to br0 itself \
             (tapswitch port add p1 --netdev br0)"
        );
        // A bond's slave: named with its kind.
        netdev(&mut inspection, 1).master = Some(MasterFacts {
            name: "bond0".into(),
            kind: Some("bond".into()),
        });
        let found = diagnose(&inspection)
            .into_iter()
            .find(|f| f.code == "netdev_enslaved")
            .unwrap();
        assert!(found.what.contains("enslaved to bond0 (bond)"), "{found:?}");
    }

    #[test]
    fn a_netdev_port_down_is_fixed_on_its_device_and_tap_rules_stay_out() {
        let mut inspection = with_netdev_port();
        let link = &mut netdev(&mut inspection, 1).link;
        link.up = false;
        link.txqueuelen = 10;
        inspection.ports[1].switch_queues = Some(0);
        assert_eq!(problems(&inspection), one("link_down", "p1"));
        let found = diagnose(&inspection).remove(0);
        assert_eq!(found.fix, "ip -n ns-p1 link set dev eth1 up");
    }
}
