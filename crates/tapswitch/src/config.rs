//! Switch configuration: the TOML file, the `NAME[@NETNS]` port syntax of the
//! command line, and the embedded default. Everything is validated as a whole
//! before anything is created, so a bad config never half-applies.

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::dataplane::MAX_QUEUES;
use crate::forward::MacFlapConfig;
use crate::policy::{
    FloodControl, MAX_VLAN, MIN_VLAN, PortPolicy, PortSecurity, StormControl, ViolationAction,
    VlanMode, VlanSet,
};
use crate::sys::privileges::{
    self, CAP_CHOWN, CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN, CAP_SYS_NICE, CapSet,
};
use crate::sys::sched::cpu_ranges;
use crate::sys::tap;
use crate::wire::MacAddr;

mod evpn;
mod kind;
mod patch;
mod table;
pub use evpn::{EvpnConfig, EvpnPlan, EvpnVni};
pub use kind::{DEFAULT_VXLAN_MTU, DEFAULT_VXLAN_UDP_PORT, MAX_VNI, PortKind};
pub use patch::{PortDifference, port_keys};
pub use table::{FIXED_AT_CREATION, PortPatch};

/// The configuration `tapswitch run` uses when given neither `--config` nor
/// `--port`: three host-side ports ready to be given to endpoints.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// Smallest MTU the kernel accepts for an Ethernet device carrying IPv4.
pub const MIN_MTU: u32 = 68;
/// Largest MTU of a TAP: the kernel's 65535 less the 14-byte Ethernet header
/// (`maxmtu 65521` in `ip -d link show`).
pub const MAX_MTU: u32 = 65521;

/// Largest MAC table. Beyond a million entries a table only gives a MAC flood room
/// to take the machine's memory.
pub const MAX_FDB_CAPACITY: usize = 1 << 20;

/// Errors in configuration: each names the field and the offending value.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config {origin}: {source}")]
    Parse {
        origin: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// A setting of one port, named by the port rather than its place in a file.
    #[error("port {port}: {source}")]
    Port {
        port: String,
        #[source]
        source: Box<ConfigError>,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The whole configuration of one switch.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(
    deny_unknown_fields,
    expecting = "a [switch] table and [[port]] tables"
)]
pub struct Config {
    #[serde(default)]
    pub switch: SwitchConfig,
    /// Each table read with its place in the file in errors (`port[2].device: ...`).
    #[serde(default, rename = "port", deserialize_with = "table::port_list")]
    pub ports: Vec<PortConfig>,
    /// BGP EVPN for the vxlan ports' VNIs (see [`EvpnConfig`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evpn: Option<EvpnConfig>,
}

/// Switch-wide settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default, expecting = "a table of switch settings")]
pub struct SwitchConfig {
    /// Seconds a learned MAC lives without being seen again.
    pub fdb_ageing_secs: u64,
    /// Total number of MAC table entries.
    pub fdb_capacity: usize,
    /// Default for ports that do not say: vnet header with checksum and
    /// segmentation offloads (64 KiB super-frames through the switch).
    pub offloads: bool,
    /// Work the loop does for one port before it turns to the next, so one
    /// busy port cannot starve the others: a frame costs one unit per port it
    /// is written to (a flood to N ports costs N), and at least one (read and
    /// dropped).
    pub poll_budget: usize,
    /// Microseconds the loop keeps polling without sleeping after it last
    /// forwarded a frame. Trades CPU under load for request/response latency;
    /// 0 sleeps in epoll at once. An idle switch always sleeps.
    pub idle_poll_us: u64,
    /// Percent of one CPU the loop may spend spinning ahead of frames it
    /// predicts: when traffic is sparse but steady (a ping every few ms, paced
    /// requests and their answers: up to four bursts per period), it learns
    /// the rhythm and wakes shortly before the next burst is due instead of
    /// paying a full wake-up for it. 0 turns prediction off; irregular or
    /// absent traffic opens no window, so an idle switch sleeps.
    pub adaptive_poll_pct: u32,
    /// Run the dataplane threads under `SCHED_FIFO` at this priority (1..=99).
    /// Unset: the normal scheduler. Needs CAP_SYS_NICE (kept after the drop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realtime_priority: Option<u8>,
    /// Which CPU each dataplane thread runs on. `"auto"` (the default): while
    /// it moves bulk traffic, one CPU each, the highest this process may use
    /// first (CPU 0 takes most of a host's housekeeping), and wherever the
    /// scheduler puts it when traffic is sparse (`dataplane::affinity`); never
    /// pinned when only one CPU is allowed. `"none"`: never pinned. A list
    /// (`[2, 3]`): dataplane thread i on the i-th (round robin), for good. A
    /// thread that migrates copies every frame through cold caches: pinned, TCP
    /// through the switch ran ~30% faster at ~20% less CPU per byte on a 2-CPU
    /// VM (bench/README.md, "CPU affinity").
    // Left out when "auto", so a default config handed over by `upgrade` still
    // reads in a binary from before this key.
    #[serde(skip_serializing_if = "CpuAffinity::is_auto")]
    pub cpu_affinity: CpuAffinity,
    /// Dataplane threads. Each port is read by one of them; all of them write
    /// to any port. See README (Performance) for when more than one pays.
    pub threads: usize,
    /// Serve Prometheus metrics over HTTP here: `HOST:PORT`, or a bare `PORT`
    /// on the loopback address. Off when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// MAC flap detection; off when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_flap: Option<MacFlapSettings>,
    /// Once the ports are up and the sockets bound, keep only the
    /// capabilities runtime changes need (see [`Config::runtime_capabilities`]).
    pub drop_privileges: bool,
    /// Keep CAP_SYS_ADMIN after the drop so `port add NAME@NETNS` can enter
    /// namespaces at runtime. Unset: on when a configured port is in a namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns_hotplug: Option<bool>,
    /// Keep CAP_CHOWN after the drop so `port add --vm DOMAIN --owner UID` (macvtap mode)
    /// can give the macvtap's `/dev/tapN` to QEMU's user at runtime. Unset: on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm_hotplug: Option<bool>,
    /// Run as this user after setup (needs `drop_privileges`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// ... and this group (default: the user's primary group).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// libvirt connection URI for VM ports (hot-plug, domain events); `qemu:///system` when
    /// unset. Only used once a port has `vm` set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub libvirt_uri: Option<String>,
    /// Directory of the state file (ports added at runtime, the MAC table), which a
    /// restarted switch restores; `/var/lib/tapswitch` when unset. One per switch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Storm-control caps of every port that does not set its own (per key).
    #[serde(skip_serializing_if = "StormControlConfig::is_empty")]
    pub storm_control: StormControlConfig,
}

/// `switch.cpu_affinity`: where the dataplane threads run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CpuAffinity {
    /// One CPU per dataplane thread, from the highest allowed down; none when one is allowed.
    #[default]
    Auto,
    /// Not pinned.
    None,
    /// Dataplane thread i on `cpus[i % len]`.
    Cpus(Vec<usize>),
}

/// Highest CPU number `switch.cpu_affinity` may name (the kernel's `CPU_SETSIZE` - 1).
pub const MAX_CPU: usize = 1023;

impl CpuAffinity {
    pub fn is_auto(&self) -> bool {
        *self == Self::Auto
    }

    /// The CPU of each of `threads` dataplane threads, given the CPUs this process may run
    /// on (ascending); empty when nothing is to be pinned. An explicit CPU outside
    /// `allowed` is an error that names it and what is allowed.
    pub fn plan(&self, allowed: &[usize], threads: usize) -> Result<Vec<usize>, String> {
        match self {
            Self::None => Ok(Vec::new()),
            // Pinning the only CPU there is changes nothing but what a later cpuset allows.
            Self::Auto if allowed.len() < 2 => Ok(Vec::new()),
            Self::Auto => Ok((0..threads)
                .map(|worker| allowed[allowed.len() - 1 - worker % allowed.len()])
                .collect()),
            Self::Cpus(cpus) => {
                if let Some(cpu) = cpus.iter().find(|cpu| !allowed.contains(cpu)) {
                    return Err(format!(
                        "CPU {cpu} is not one this process may run on (allowed: {})",
                        cpu_ranges(allowed)
                    ));
                }
                Ok((0..threads)
                    .map(|worker| cpus[worker % cpus.len()])
                    .collect())
            }
        }
    }

    fn validate(&self) -> Result<(), String> {
        let Self::Cpus(cpus) = self else {
            return Ok(());
        };
        if cpus.is_empty() {
            return Err("an empty list pins nothing; say \"none\" (or \"auto\")".into());
        }
        if let Some(cpu) = cpus.iter().find(|&&cpu| cpu > MAX_CPU) {
            return Err(format!("CPU {cpu} is above the maximum {MAX_CPU}"));
        }
        let mut seen = HashSet::new();
        if let Some(cpu) = cpus.iter().find(|&&cpu| !seen.insert(cpu)) {
            return Err(format!(
                "CPU {cpu} is listed twice (two dataplane threads on one CPU take turns; list \
                 it once and set fewer threads)"
            ));
        }
        Ok(())
    }
}

impl Serialize for CpuAffinity {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => serializer.serialize_str("auto"),
            Self::None => serializer.serialize_str("none"),
            Self::Cpus(cpus) => cpus.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for CpuAffinity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = CpuAffinity;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"auto\", \"none\" or a list of CPU numbers like [2, 3]")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<CpuAffinity, E> {
                match value {
                    "auto" => Ok(CpuAffinity::Auto),
                    "none" => Ok(CpuAffinity::None),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<CpuAffinity, A::Error> {
                let mut cpus = Vec::new();
                while let Some(cpu) = seq.next_element::<usize>()? {
                    cpus.push(cpu);
                }
                Ok(CpuAffinity::Cpus(cpus))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `[switch.mac_flap]`: `moves` moves of one MAC between ports within `window_ms`
/// is a flap; the MAC is then held on the port it was on for `hold_secs`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { moves = 4, window_ms = 1000, hold_secs = 30 }"
)]
pub struct MacFlapSettings {
    pub moves: u32,
    pub window_ms: u64,
    pub hold_secs: u64,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        Self {
            fdb_ageing_secs: 300,
            fdb_capacity: 8192,
            offloads: true,
            poll_budget: 64,
            idle_poll_us: DEFAULT_IDLE_POLL_US,
            adaptive_poll_pct: DEFAULT_ADAPTIVE_POLL_PCT,
            realtime_priority: None,
            cpu_affinity: CpuAffinity::Auto,
            threads: 1,
            mac_flap: None,
            metrics: None,
            drop_privileges: true,
            netns_hotplug: None,
            vm_hotplug: None,
            user: None,
            group: None,
            libvirt_uri: None,
            state_dir: None,
            storm_control: StormControlConfig::default(),
        }
    }
}

/// Parses a metrics address: `HOST:PORT` (`[V6]:PORT` for IPv6) or a bare
/// `PORT`, which means the loopback address: metrics stay on the machine
/// unless asked otherwise.
pub fn parse_metrics_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    text.parse().map_err(|_| {
        format!("{text:?} is neither HOST:PORT (an IP address and a port) nor a bare PORT")
    })
}

/// Chosen by measurement with `bench/run`; see README (Performance).
pub const DEFAULT_IDLE_POLL_US: u64 = 20;

/// Chosen by measurement with `bench/run` (bench/README.md, "Sparse traffic").
pub const DEFAULT_ADAPTIVE_POLL_PCT: u32 = 5;

/// More of one CPU than this spent waiting for predicted frames is polling, not prediction.
pub const MAX_ADAPTIVE_POLL_PCT: u32 = 50;

/// A sanity cap: each port queue is read by one worker ((port id + queue)
/// modulo threads), so workers beyond the port queues only sleep, and each
/// is an OS thread with its own epoll and decision cache.
pub const MAX_THREADS: usize = 64;

/// Longer windows buy nothing and burn a core after every burst.
pub const MAX_IDLE_POLL_US: u64 = 10_000;

/// The libvirt URI used when `switch.libvirt_uri` is unset.
pub const DEFAULT_LIBVIRT_URI: &str = "qemu:///system";

impl SwitchConfig {
    /// Where the state file is kept.
    pub fn state_dir(&self) -> &Path {
        self.state_dir
            .as_deref()
            .unwrap_or(Path::new(crate::state::DEFAULT_STATE_DIR))
    }

    /// Where VM ports talk to libvirt.
    pub fn libvirt_uri(&self) -> &str {
        self.libvirt_uri.as_deref().unwrap_or(DEFAULT_LIBVIRT_URI)
    }

    pub fn fdb_ageing(&self) -> Duration {
        Duration::from_secs(self.fdb_ageing_secs)
    }

    pub fn idle_poll(&self) -> Duration {
        Duration::from_micros(self.idle_poll_us)
    }
    /// The forwarder's flap detection settings, if on.
    pub fn mac_flap_config(&self) -> Option<MacFlapConfig> {
        self.mac_flap.as_ref().map(|flap| MacFlapConfig {
            moves: flap.moves,
            window: Duration::from_millis(flap.window_ms),
            hold: Duration::from_secs(flap.hold_secs),
        })
    }
}

/// How a port takes part in VLANs (`vlan_mode`); ports without one are transparent.
#[derive(Copy, Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum VlanModeName {
    Access,
    Trunk,
}

/// One item of `allowed_vlans`: a VLAN id (`10`) or an inclusive range (`"100-200"`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(
    untagged,
    expecting = "a VLAN id (10) or a range of them (\"100-200\")"
)]
pub enum VlanSpec {
    Id(i64),
    Range(String),
}

/// A VLAN id a port can be in: `MIN_VLAN..=MAX_VLAN` (1..=4094). The config keeps the
/// number as written (`vlan`, `native_vlan`, `allowed_vlans`), so that validation can name
/// the key; what the switch uses of it goes through this type, never through a cast that
/// could wrap an out-of-range number into a valid VLAN.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VlanId(u16);

impl VlanId {
    /// The id as the forwarder takes it.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<i64> for VlanId {
    type Error = String;

    fn try_from(id: i64) -> Result<Self, Self::Error> {
        if (i64::from(MIN_VLAN)..=i64::from(MAX_VLAN)).contains(&id) {
            // In range, so it fits a u16.
            Ok(Self(id as u16))
        } else {
            Err(format!("VLAN {id} is outside {MIN_VLAN}..={MAX_VLAN}"))
        }
    }
}

impl VlanSpec {
    /// The inclusive range this item names, or why it names none.
    fn range(&self) -> Result<(u16, u16), String> {
        let check = |id: i64| VlanId::try_from(id).map(VlanId::get);
        match self {
            VlanSpec::Id(id) => check(*id).map(|id| (id, id)),
            VlanSpec::Range(text) => {
                let parse = |part: &str| {
                    part.trim().parse::<i64>().map_err(|_| {
                        format!("{text:?} is not a VLAN id or a range like \"100-200\"")
                    })
                };
                let (first, last) = match text.split_once('-') {
                    Some((first, last)) => (parse(first)?, parse(last)?),
                    None => (parse(text)?, parse(text)?),
                };
                let (first, last) = (check(first)?, check(last)?);
                if first > last {
                    return Err(format!("range {text:?} is reversed"));
                }
                Ok((first, last))
            }
        }
    }
}

/// `storm_control = { ... }`: ingress caps in packets per second, in a `[[port]]`
/// table or as the defaults in `[switch]`. A key a port leaves out takes the
/// `[switch]` value, and one left out there the built-in default
/// ([`StormControl::default`]: broadcast and unknown unicast capped, multicast not).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(
    deny_unknown_fields,
    expecting = "a table of rates like { broadcast_pps = 100, multicast_pps = 50, \
                 unknown_unicast_pps = 50 }"
)]
pub struct StormControlConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast_pps: Option<StormRate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multicast_pps: Option<StormRate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_unicast_pps: Option<StormRate>,
}

impl StormControlConfig {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn rates(&self) -> [(&'static str, Option<StormRate>); 3] {
        [
            ("broadcast_pps", self.broadcast_pps),
            ("multicast_pps", self.multicast_pps),
            ("unknown_unicast_pps", self.unknown_unicast_pps),
        ]
    }

    /// Every rate at least 1; `prefix` names the table in errors.
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        for (key, rate) in self.rates() {
            if rate == Some(StormRate::Pps(0)) {
                return Err(invalid(
                    format!("{prefix}storm_control.{key}"),
                    "must be at least 1 packet per second (turn the flood off with flood_* = false, the cap with \"unlimited\")",
                ));
            }
        }
        Ok(())
    }

    /// The caps for a port with these settings under `defaults` (the `[switch]` table).
    pub fn resolve(&self, defaults: &StormControlConfig) -> StormControl {
        let builtin = StormControl::default();
        let pick =
            |port: Option<StormRate>, switch: Option<StormRate>, builtin: Option<u32>| match port
                .or(switch)
            {
                Some(StormRate::Pps(rate)) => Some(rate),
                Some(StormRate::Unlimited) => None,
                None => builtin,
            };
        StormControl {
            broadcast_pps: pick(
                self.broadcast_pps,
                defaults.broadcast_pps,
                builtin.broadcast_pps,
            ),
            multicast_pps: pick(
                self.multicast_pps,
                defaults.multicast_pps,
                builtin.multicast_pps,
            ),
            unknown_unicast_pps: pick(
                self.unknown_unicast_pps,
                defaults.unknown_unicast_pps,
                builtin.unknown_unicast_pps,
            ),
        }
    }
}

/// One storm-control rate: packets per second, or `"unlimited"`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum StormRate {
    Pps(u32),
    Unlimited,
}

impl Serialize for StormRate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            StormRate::Pps(rate) => serializer.serialize_u32(*rate),
            StormRate::Unlimited => serializer.serialize_str("unlimited"),
        }
    }
}

impl<'de> Deserialize<'de> for StormRate {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RateVisitor;
        impl serde::de::Visitor<'_> for RateVisitor {
            type Value = StormRate;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("packets per second (a whole number) or \"unlimited\"")
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<StormRate, E> {
                u32::try_from(value).map(StormRate::Pps).map_err(|_| {
                    E::custom(format!(
                        "{value} is outside 0..={} packets per second",
                        u32::MAX
                    ))
                })
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<StormRate, E> {
                self.visit_i64(i64::try_from(value).unwrap_or(i64::MAX))
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<StormRate, E> {
                match value {
                    "unlimited" => Ok(StormRate::Unlimited),
                    other => Err(E::custom(format!(
                        "{other:?} is not a rate: give packets per second or \"unlimited\""
                    ))),
                }
            }
        }
        deserializer.deserialize_any(RateVisitor)
    }
}

/// One port: its name and namespace, what it is ([`DeviceConfig`]), its MTU and state,
/// and its forwarding policy. Read and written as one flat `[[port]]` table (the wire
/// form, in `config/table.rs`), so files, the control protocol and the state file keep
/// their keys; the kind's rules (a netdev port has a device and no TAP keys, a vxlan port
/// its tunnel) are the shape of [`DeviceConfig`], checked when a table is read.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(try_from = "table::PortTable", into = "table::PortTable")]
pub struct PortConfig {
    /// TAP interface name (at most 15 bytes); for a netdev or vxlan port, the port's name.
    pub name: String,
    /// Network namespace (as in `ip netns`) the netdev is in (a TAP is moved there; a
    /// vxlan port's sockets are opened there).
    pub netns: Option<String>,
    /// What the port is: a TAP, an existing netdev or a VXLAN tunnel.
    pub device: DeviceConfig,
    /// MTU of the netdev; frames longer than this (plus Ethernet header and one VLAN tag)
    /// that are not segmentation-offload super-frames are dropped. A vxlan port's inner
    /// MTU ([`kind::DEFAULT_VXLAN_MTU`] when its table has none).
    pub mtu: u32,
    /// A disabled port keeps its TAP but neither receives nor sends frames.
    pub enabled: bool,
    /// How the switch forwards to and from the port.
    pub policy: PolicyConfig,
}

/// What a port is attached to (`kind` and its keys).
#[derive(Clone, Debug, PartialEq)]
pub enum DeviceConfig {
    /// A TAP whose fd the switch holds (made, or re-attached, by the switch).
    Tap(TapConfig),
    /// An existing netdev the switch did not create and never changes.
    Netdev(NetdevConfig),
    /// A VXLAN tunnel: UDP sockets on `local`, frames of `vni` to and from `remotes`.
    Vxlan(VxlanConfig),
}

impl DeviceConfig {
    /// The `kind` key of this device.
    pub fn kind(&self) -> PortKind {
        match self {
            DeviceConfig::Tap(_) => PortKind::Tap,
            DeviceConfig::Netdev(_) => PortKind::Netdev,
            DeviceConfig::Vxlan(_) => PortKind::Vxlan,
        }
    }
}

/// A TAP port's TAP and netdev: the keys other kinds refuse.
#[derive(Clone, Debug, PartialEq)]
pub struct TapConfig {
    /// MAC address of the netdev (the endpoint's MAC); kernel-chosen if unset.
    pub mac: Option<MacAddr>,
    /// Transmit queue length of the netdev (frames the kernel queues towards the switch).
    pub txqueuelen: Option<u32>,
    /// Keep the TAP when the switch exits, to re-attach on restart.
    pub persistent: bool,
    /// Use an existing TAP of this name that the switch did not create (e.g. made with
    /// `ip tuntap add`) as it is: its flags (vnet header, queues, persistence, owner) stay,
    /// and the switch never deletes it. Without it such a device is refused.
    pub adopt: bool,
    /// Overrides `switch.offloads` for this port.
    pub offloads: Option<bool>,
    /// Queues of the TAP (`IFF_MULTI_QUEUE` when more than one): the netdev
    /// spreads its flows over them and each is read by one dataplane thread.
    pub queues: usize,
    /// User and group allowed to attach to the TAP later (e.g. an unprivileged QEMU):
    /// in a file, a name (looked up when the configuration is read) or a number.
    pub owner: Option<u32>,
    pub group: Option<u32>,
    /// The guest NIC this TAP is, when it is a VM's (the `vm*` keys).
    pub vm: Option<VmConfig>,
}

impl Default for TapConfig {
    fn default() -> Self {
        Self {
            mac: None,
            txqueuelen: None,
            persistent: false,
            adopt: false,
            offloads: None,
            queues: 1,
            owner: None,
            group: None,
            vm: None,
        }
    }
}

/// A netdev port: the existing device (`device`) its `AF_PACKET` socket is bound to.
#[derive(Clone, Debug, PartialEq)]
pub struct NetdevConfig {
    pub device: String,
}

/// A vxlan port's tunnel.
#[derive(Clone, Debug, PartialEq)]
pub struct VxlanConfig {
    /// The VNI (1..=16777215) of a port carrying one segment; `None` for a trunk
    /// (`vlan_vni`).
    pub vni: Option<u32>,
    /// A trunk's VNIs: each VLAN of the switch the port carries, and the VNI its frames
    /// travel in (`vlan_vni = { 100 = 5000, 200 = 5001 }`). Empty for a one-VNI port.
    pub vlan_vni: BTreeMap<VlanId, u32>,
    /// The local VTEP address (an address of the port's namespace).
    pub local: Ipv4Addr,
    /// The UDP port it listens on and sends to ([`kind::DEFAULT_VXLAN_UDP_PORT`] when unset).
    pub udp_port: Option<u16>,
    /// The remote VTEPs: its flood list.
    pub remotes: Vec<Ipv4Addr>,
}

/// A VM port's guest NIC (`vm`, `vm_mode`, `vm_mac`, `vm_queues`, `vm_device`).
#[derive(Clone, Debug, PartialEq)]
pub struct VmConfig {
    /// The libvirt domain whose NIC this port is: the switch creates the device QEMU opens
    /// (see `mode`), hot-plugs it into the domain when it runs, and removes the port when
    /// the domain goes away.
    pub domain: String,
    /// How the guest's NIC reaches the port: `macvtap` (default) or `glue`.
    pub mode: Option<VmMode>,
    /// The guest NIC's MAC; derived from the port name when unset.
    pub mac: Option<MacAddr>,
    /// virtio-net queue pairs of the guest NIC (default 1).
    pub queues: Option<u32>,
    /// Name of the device QEMU opens (the macvtap or the VM's TAP); derived from the port
    /// name when unset (`mvt-NAME`, `vmt-NAME`).
    pub device: Option<String>,
}

/// A port's forwarding settings as written (VLAN numbers as given, so validation names
/// the key); [`PortConfig::policy_in`] makes the forwarder's [`PortPolicy`] of them.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    /// `access` (one VLAN, untagged) or `trunk` (tagged VLANs, optional native one).
    pub vlan_mode: Option<VlanModeName>,
    /// The VLAN of an access port.
    pub vlan: Option<i64>,
    /// The tagged VLANs of a trunk port.
    pub allowed_vlans: Option<Vec<VlanSpec>>,
    /// The VLAN a trunk sends and receives untagged.
    pub native_vlan: Option<i64>,
    /// Most MAC addresses (over all VLANs) the switch learns on this port.
    pub mac_limit: Option<u32>,
    /// What exceeding `mac_limit` does: `drop` (default), `drop+log`, `shutdown`.
    pub mac_limit_action: Option<ViolationAction>,
    /// Learned MACs stay (never age out, never move) until the port is removed.
    pub sticky_macs: bool,
    /// Anti-spoofing: only these source MACs are accepted.
    pub allowed_macs: Option<Vec<MacAddr>>,
    /// Anti-spoofing: only `mac` (the endpoint's declared address) is accepted as a
    /// source, besides any `allowed_macs`.
    pub bind_mac: bool,
    pub storm_control: Option<StormControlConfig>,
    /// Isolated ports exchange frames only with non-isolated ones.
    pub isolated: bool,
    /// Whether this port receives floods of unknown unicast, multicast, broadcast.
    pub flood_unknown_unicast: bool,
    pub flood_multicast: bool,
    pub flood_broadcast: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            vlan_mode: None,
            vlan: None,
            allowed_vlans: None,
            native_vlan: None,
            mac_limit: None,
            mac_limit_action: None,
            sticky_macs: false,
            allowed_macs: None,
            bind_mac: false,
            storm_control: None,
            isolated: false,
            flood_unknown_unicast: true,
            flood_multicast: true,
            flood_broadcast: true,
        }
    }
}

/// `vm_mode`: how a guest NIC is joined to its port (see [`crate::vm`]).
#[derive(Copy, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum VmMode {
    /// A passthru macvtap stacked on the port TAP.
    #[default]
    Macvtap,
    /// The VM's own TAP, joined to the port TAP by tc redirects.
    Glue,
}

impl FromStr for VmMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "macvtap" => Ok(Self::Macvtap),
            "glue" => Ok(Self::Glue),
            other => Err(format!("unknown VM mode {other:?} (macvtap or glue)")),
        }
    }
}

/// A user or group as the config file and the command line give it: a number or a name.
#[derive(Deserialize)]
#[serde(untagged, expecting = "a name or a number")]
enum NameOrId {
    Id(u32),
    Name(String),
}

/// `owner = 64055` or `owner = "libvirt-qemu"`: the uid, a name looked up now.
fn user_id<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    name_or_id(deserializer, privileges::user_id)
}

/// `group = 64055` or `group = "kvm"`: the gid, a name looked up now.
fn group_id<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    name_or_id(deserializer, privileges::group_id)
}

fn name_or_id<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
    look_up: fn(&str) -> Result<u32, privileges::PrivilegeError>,
) -> Result<Option<u32>, D::Error> {
    match Option::<NameOrId>::deserialize(deserializer)? {
        None => Ok(None),
        Some(NameOrId::Id(id)) => Ok(Some(id)),
        Some(NameOrId::Name(name)) => look_up(&name).map(Some).map_err(serde::de::Error::custom),
    }
}

/// The MTU of a port whose table has none (a vxlan port's is [`kind::DEFAULT_VXLAN_MTU`]).
pub const DEFAULT_MTU: u32 = 1500;

impl PortConfig {
    /// A TAP port with every setting at its default.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            netns: None,
            device: DeviceConfig::Tap(TapConfig::default()),
            mtu: DEFAULT_MTU,
            enabled: true,
            policy: PolicyConfig::default(),
        }
    }

    /// The `kind` of this port.
    pub fn kind(&self) -> PortKind {
        self.device.kind()
    }

    /// The TAP of a TAP port.
    pub fn tap(&self) -> Option<&TapConfig> {
        match &self.device {
            DeviceConfig::Tap(tap) => Some(tap),
            _ => None,
        }
    }

    /// The tunnel of a vxlan port.
    pub fn vxlan(&self) -> Option<&VxlanConfig> {
        match &self.device {
            DeviceConfig::Vxlan(vxlan) => Some(vxlan),
            _ => None,
        }
    }

    /// The TAP of a TAP port, to change.
    pub fn tap_mut(&mut self) -> Option<&mut TapConfig> {
        match &mut self.device {
            DeviceConfig::Tap(tap) => Some(tap),
            _ => None,
        }
    }

    /// The guest NIC of a VM port.
    pub fn vm(&self) -> Option<&VmConfig> {
        self.tap().and_then(|tap| tap.vm.as_ref())
    }

    /// The libvirt domain of a VM port (`vm`).
    pub fn vm_domain(&self) -> Option<&str> {
        self.vm().map(|vm| vm.domain.as_str())
    }

    /// The guest NIC of a VM port, to change.
    pub fn vm_mut(&mut self) -> Option<&mut VmConfig> {
        self.tap_mut().and_then(|tap| tap.vm.as_mut())
    }

    /// The netdev's configured MAC (a TAP port's `mac`).
    pub fn mac(&self) -> Option<MacAddr> {
        self.tap().and_then(|tap| tap.mac)
    }

    /// The netdev's configured transmit queue length (a TAP port's `txqueuelen`).
    pub fn txqueuelen(&self) -> Option<u32> {
        self.tap().and_then(|tap| tap.txqueuelen)
    }

    /// The user allowed to attach to the port's TAP (or a VM port's device).
    pub fn owner(&self) -> Option<u32> {
        self.tap().and_then(|tap| tap.owner)
    }

    /// The group allowed to attach to the port's TAP (or a VM port's device).
    pub fn group(&self) -> Option<u32> {
        self.tap().and_then(|tap| tap.group)
    }

    /// Queues of the port's TAP; one for other kinds.
    pub fn queues(&self) -> usize {
        self.tap().map_or(1, |tap| tap.queues)
    }

    /// Whether the switch keeps the port's TAP when it exits (never for other kinds).
    pub fn persistent(&self) -> bool {
        self.tap().is_some_and(|tap| tap.persistent)
    }

    /// Whether the port's TAP was made outside the switch and is used as it is.
    pub fn adopted(&self) -> bool {
        self.tap().is_some_and(|tap| tap.adopt)
    }

    /// Whether this port opens with a vnet header and offloads.
    pub fn offloads_enabled(&self, switch: &SwitchConfig) -> bool {
        self.tap()
            .and_then(|tap| tap.offloads)
            .unwrap_or(switch.offloads)
    }
}

/// Keys whose value is a list: on the command line, a comma-separated one.
const LIST_KEYS: &[&str] = &["allowed_vlans", "allowed_macs"];

/// Keys whose value is a table: on the command line the braces may be left out.
const TABLE_KEYS: &[&str] = &["storm_control"];

/// New values for keys of a `[[port]]` table, in JSON form (as `port_set` and
/// `port_add` carry them). `null` removes a key: the port gets the value a table
/// without that key has (unset for optional keys, the default otherwise).
pub type PortSettings = serde_json::Map<String, serde_json::Value>;

/// The value of `key` written on the command line, in TOML syntax: `20`, `true`,
/// `{ broadcast_pps = 100 }`, `[10, "100-200"]`; a bare word that is not TOML
/// (`access`, `drop+log`, `02:00:00:00:00:01`) is a string. A list key also takes
/// comma-separated items (`10,20,100-200`), a table key its contents without braces
/// (`broadcast_pps = 100, multicast_pps = 50`). `none` removes the key (see
/// [`PortSettings`]). What the value means is checked where the port's
/// configuration is built, by the same code that reads the config file.
pub fn setting_value(key: &str, text: &str) -> serde_json::Value {
    let text = text.trim();
    if text == "none" {
        return serde_json::Value::Null;
    }
    if TABLE_KEYS.contains(&key) && !text.starts_with('{') {
        return toml_scalar(&format!("{{ {text} }}"));
    }
    if LIST_KEYS.contains(&key) && !text.starts_with('[') {
        let items = text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(toml_scalar)
            .collect();
        return serde_json::Value::Array(items);
    }
    toml_scalar(text)
}

/// `text` as a TOML value, or as a string when it is not one.
fn toml_scalar(text: &str) -> serde_json::Value {
    let parsed = toml::from_str::<toml::Table>(&format!("value = {text}"))
        .ok()
        .and_then(|mut table| table.remove("value"))
        .and_then(|value| serde_json::to_value(value).ok());
    parsed.unwrap_or_else(|| serde_json::Value::String(text.to_owned()))
}

impl PortConfig {
    /// This port with `settings` applied, checked as a whole by the same rules as the
    /// config file. Errors name the port and the key: `port p1: mac_limit: must be at
    /// least 1`. `self` is left as it is either way.
    pub fn with_settings(&self, settings: &PortSettings) -> Result<PortConfig, ConfigError> {
        let in_port = |source: ConfigError| ConfigError::Port {
            port: self.name.clone(),
            source: Box::new(source),
        };
        let serde_json::Value::Object(mut table) =
            serde_json::to_value(self).expect("a port config serialises to JSON")
        else {
            unreachable!("a port config serialises to a JSON object");
        };
        for (key, value) in settings {
            if !port_keys().contains(&key.as_str()) {
                return Err(in_port(invalid(
                    key.clone(),
                    format!("unknown setting; the keys are {}", port_keys().join(", ")),
                )));
            }
            if value.is_null() {
                table.remove(key);
                continue;
            }
            // Read alone first, so that a value of the wrong type is blamed on its key.
            let alone = serde_json::json!({ "name": self.name, key.as_str(): value });
            serde_json::from_value::<table::PortTable>(alone)
                .map_err(|e| in_port(invalid(key.clone(), e.to_string())))?;
            table.insert(key.clone(), value.clone());
        }
        let port = serde_json::from_value::<table::PortTable>(serde_json::Value::Object(table))
            .map_err(|e| in_port(invalid("settings", e.to_string())))?
            .into_port("")
            .map_err(in_port)?;
        port.validate_keys("")
            .and_then(|()| port.validate_policy("policy"))
            .map_err(in_port)?;
        Ok(port)
    }
}

/// The command-line port syntax `NAME[@NETNS]`.
impl FromStr for PortConfig {
    type Err = ConfigError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (name, netns) = match spec.split_once('@') {
            Some((name, netns)) => (name, Some(netns)),
            None => (spec, None),
        };
        let mut port = PortConfig::named(name);
        port.netns = netns.map(str::to_owned);
        port.validate(&format!("--port {spec}"))?;
        Ok(port)
    }
}

impl PortConfig {
    /// Checks this port on its own; `field` names it in errors (`port[2]`).
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        self.validate_keys(&format!("{field}."))
            .and_then(|()| self.validate_policy(field))
    }

    /// Checks every value; `prefix` comes before each key name in errors
    /// (`port[2].` in a file, empty when the port is named some other way). Which keys
    /// a port of its kind has was checked when its table was read (the shape of
    /// [`DeviceConfig`]).
    fn validate_keys(&self, prefix: &str) -> Result<(), ConfigError> {
        tap::validate_name(&self.name)
            .map_err(|e| invalid(format!("{prefix}name"), e.to_string()))?;
        if let Some(netns) = &self.netns {
            validate_netns_name(netns)
                .map_err(|reason| invalid(format!("{prefix}netns"), reason))?;
        }
        validate_mtu(self.mtu).map_err(|reason| invalid(format!("{prefix}mtu"), reason))?;
        if let Some(mac) = self.mac() {
            validate_station_mac(mac).map_err(|reason| invalid(format!("{prefix}mac"), reason))?;
        }
        self.validate_kind(prefix)?;
        if let Some(tap) = self.tap() {
            tap.validate_adopt(prefix)?;
            if tap.txqueuelen == Some(0) {
                return Err(invalid(format!("{prefix}txqueuelen"), "must be at least 1"));
            }
            if !(1..=MAX_QUEUES).contains(&tap.queues) {
                return Err(invalid(
                    format!("{prefix}queues"),
                    format!("{} is outside 1..={MAX_QUEUES}", tap.queues),
                ));
            }
        }
        self.policy.validate_vlans(prefix)?;
        self.validate_security(prefix)?;
        self.validate_vm(prefix)?;
        if let Some(storm) = &self.policy.storm_control {
            storm.validate(prefix)?;
        }
        Ok(())
    }

    /// The forwarder's own check of the policy these keys make, so the two can never
    /// disagree about what is valid. After [`Self::validate_keys`], which names fields.
    fn validate_policy(&self, field: &str) -> Result<(), ConfigError> {
        self.policy()
            .validate()
            .map_err(|e| invalid(field.to_owned(), e.to_string()))
    }

    fn validate_security(&self, prefix: &str) -> Result<(), ConfigError> {
        let policy = &self.policy;
        if policy.mac_limit == Some(0) {
            return Err(invalid(format!("{prefix}mac_limit"), "must be at least 1"));
        }
        if policy.mac_limit_action.is_some() && policy.mac_limit.is_none() {
            return Err(invalid(
                format!("{prefix}mac_limit_action"),
                "has no effect without mac_limit",
            ));
        }
        for (index, mac) in policy.allowed_macs.iter().flatten().enumerate() {
            validate_station_mac(*mac)
                .map_err(|reason| invalid(format!("{prefix}allowed_macs[{index}]"), reason))?;
        }
        if policy.bind_mac && self.mac().is_none() && self.vm().is_none() {
            return Err(invalid(
                format!("{prefix}bind_mac"),
                format!(
                    "needs {prefix}mac (or vm, whose guest MAC it binds), the address to bind to"
                ),
            ));
        }
        Ok(())
    }

    fn validate_vm(&self, prefix: &str) -> Result<(), ConfigError> {
        let Some(vm) = self.vm() else {
            return Ok(());
        };
        let domain = &vm.domain;
        if domain.is_empty() || domain.len() > 255 || domain.contains(['/', '\0']) {
            return Err(invalid(
                format!("{prefix}vm"),
                format!("{domain:?} is not a libvirt domain name"),
            ));
        }
        if self.netns.is_some() {
            return Err(invalid(
                format!("{prefix}netns"),
                "a VM port lives in the host's namespace, where libvirt looks its device up",
            ));
        }
        if let Some(mac) = vm.mac {
            validate_station_mac(mac)
                .map_err(|reason| invalid(format!("{prefix}vm_mac"), reason))?;
        }
        if let Some(queues) = vm.queues
            && !(1..=crate::vm::MAX_QUEUES).contains(&queues)
        {
            return Err(invalid(
                format!("{prefix}vm_queues"),
                format!("{queues} is outside 1..={}", crate::vm::MAX_QUEUES),
            ));
        }
        let device = self.vm_device_name();
        tap::validate_name(&device)
            .map_err(|e| invalid(format!("{prefix}vm_device"), e.to_string()))?;
        if device == self.name {
            return Err(invalid(
                format!("{prefix}vm_device"),
                format!("{device:?} is the port TAP's own name"),
            ));
        }
        if vm.mode.unwrap_or_default() == VmMode::Macvtap
            && let (Some(mac), Some(vm_mac)) = (self.mac(), vm.mac)
            && mac != vm_mac
        {
            return Err(invalid(
                format!("{prefix}mac"),
                format!(
                    "{mac} differs from vm_mac {vm_mac}: a passthru macvtap gives the port TAP \
                     the guest's MAC; leave mac unset"
                ),
            ));
        }
        Ok(())
    }

    /// The guest NIC's MAC: `vm_mac`, else one derived from the port name (`52:54:00` and
    /// three bytes of a hash, as libvirt's prefix), so it stays the same across restarts.
    pub fn vm_mac_or_derived(&self) -> MacAddr {
        if let Some(mac) = self.vm().and_then(|vm| vm.mac) {
            return mac;
        }
        // FNV-1a: stable across builds and platforms, unlike the std hasher.
        let hash = self.name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let [a, b, c, ..] = hash.to_be_bytes();
        MacAddr([0x52, 0x54, 0x00, a, b, c])
    }

    /// The device QEMU opens for this VM port: `vm_device`, else `mvt-NAME` (macvtap) or
    /// `vmt-NAME` (glue), shortened to 15 bytes with a hash of the name when needed.
    pub fn vm_device_name(&self) -> String {
        if let Some(device) = self.vm().and_then(|vm| vm.device.as_ref()) {
            return device.clone();
        }
        let prefix = match self.vm_mode() {
            VmMode::Macvtap => "mvt-",
            VmMode::Glue => "vmt-",
        };
        if prefix.len() + self.name.len() <= tap::MAX_NAME_LEN {
            return format!("{prefix}{}", self.name);
        }
        let hash = self.name.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        // 4 + 5 + 6 = 15 bytes: a readable start of the name and a hash of all of it.
        format!("{prefix}{}{:06x}", &self.name[..5], hash & 0x00ff_ffff)
    }

    /// How this VM port's guest NIC reaches it (`vm_mode`, macvtap when unset).
    pub fn vm_mode(&self) -> VmMode {
        self.vm().and_then(|vm| vm.mode).unwrap_or_default()
    }

    /// The forwarding policy this port's settings describe under a default
    /// `[switch]` table. Only meaningful once the config validated.
    pub fn policy(&self) -> PortPolicy {
        self.policy_in(&SwitchConfig::default())
    }

    /// The forwarding policy this port's settings describe on a switch whose
    /// `[switch]` table is `switch` (it holds the storm-control defaults).
    pub fn policy_in(&self, switch: &SwitchConfig) -> PortPolicy {
        let policy = &self.policy;
        let vlan = match policy.vlan_mode {
            None => VlanMode::Transparent,
            Some(VlanModeName::Access) => VlanMode::Access {
                // 0 (no VLAN, refused by the policy's own check) for what is not a VLAN id.
                vlan: vlan_id_or_zero(policy.vlan),
            },
            Some(VlanModeName::Trunk) => {
                let mut allowed = VlanSet::new();
                for spec in policy.allowed_vlans.iter().flatten() {
                    if let Ok((first, last)) = spec.range() {
                        (first..=last).for_each(|vid| allowed.insert(vid));
                    }
                }
                VlanMode::Trunk {
                    allowed,
                    native: policy.native_vlan.map(|vid| vlan_id_or_zero(Some(vid))),
                }
            }
        };
        let mut allowed_macs: Vec<MacAddr> = policy.allowed_macs.clone().unwrap_or_default();
        if policy.bind_mac
            && let Some(mac) = self.mac().or(self.vm().map(|_| self.vm_mac_or_derived()))
            && !allowed_macs.contains(&mac)
        {
            allowed_macs.push(mac);
        }
        let storm = policy
            .storm_control
            .clone()
            .unwrap_or_default()
            .resolve(&switch.storm_control);
        PortPolicy {
            enabled: true,
            vlan,
            security: PortSecurity {
                mac_limit: policy.mac_limit,
                violation: policy.mac_limit_action.unwrap_or_default(),
                sticky: policy.sticky_macs,
                allowed_macs: allowed_macs.into_boxed_slice(),
            },
            storm,
            isolated: policy.isolated,
            // Set by the dataplane from what the port is (a tunnel or not).
            split_horizon: false,
            flood: FloodControl {
                unknown_unicast: policy.flood_unknown_unicast,
                multicast: policy.flood_multicast,
                broadcast: policy.flood_broadcast,
            },
        }
    }
}

impl TapConfig {
    /// An adopted device keeps what its creator set: settings that would change it are refused.
    fn validate_adopt(&self, prefix: &str) -> Result<(), ConfigError> {
        if !self.adopt {
            return Ok(());
        }
        let conflicts = [
            (
                "persistent",
                self.persistent,
                "an adopted TAP keeps its own persistence and is never deleted by the switch",
            ),
            (
                "owner",
                self.owner.is_some(),
                "an adopted TAP keeps the owner its creator gave it",
            ),
            (
                "group",
                self.group.is_some(),
                "an adopted TAP keeps the group its creator gave it",
            ),
            (
                "vm",
                self.vm.is_some(),
                "a VM port's TAP is the switch's own; adopt is for a TAP made outside it",
            ),
        ];
        for (key, set, reason) in conflicts {
            if set {
                return Err(invalid(
                    format!("{prefix}{key}"),
                    format!("not with adopt = true: {reason}"),
                ));
            }
        }
        Ok(())
    }
}

impl PolicyConfig {
    fn validate_vlans(&self, prefix: &str) -> Result<(), ConfigError> {
        let vlan_id = |key: &str, id: i64| {
            VlanSpec::Id(id)
                .range()
                .map(|(id, _)| id)
                .map_err(|reason| invalid(format!("{prefix}{key}"), reason))
        };
        match self.vlan_mode {
            None => {
                for (key, set) in [
                    ("vlan", self.vlan.is_some()),
                    ("allowed_vlans", self.allowed_vlans.is_some()),
                    ("native_vlan", self.native_vlan.is_some()),
                ] {
                    if set {
                        return Err(invalid(
                            format!("{prefix}{key}"),
                            "needs vlan_mode = \"access\" or \"trunk\"",
                        ));
                    }
                }
            }
            Some(VlanModeName::Access) => {
                let Some(vlan) = self.vlan else {
                    return Err(invalid(
                        format!("{prefix}vlan"),
                        "an access port needs its VLAN",
                    ));
                };
                vlan_id("vlan", vlan)?;
                for (key, set) in [
                    ("allowed_vlans", self.allowed_vlans.is_some()),
                    ("native_vlan", self.native_vlan.is_some()),
                ] {
                    if set {
                        return Err(invalid(
                            format!("{prefix}{key}"),
                            "only for vlan_mode = \"trunk\"",
                        ));
                    }
                }
            }
            Some(VlanModeName::Trunk) => {
                if self.vlan.is_some() {
                    return Err(invalid(
                        format!("{prefix}vlan"),
                        "only for vlan_mode = \"access\"; a trunk has allowed_vlans and native_vlan",
                    ));
                }
                if let Some(native) = self.native_vlan {
                    vlan_id("native_vlan", native)?;
                }
                for (index, spec) in self.allowed_vlans.iter().flatten().enumerate() {
                    spec.range().map_err(|reason| {
                        invalid(format!("{prefix}allowed_vlans[{index}]"), reason)
                    })?;
                }
                let none_allowed = self.allowed_vlans.as_ref().is_none_or(Vec::is_empty);
                if none_allowed && self.native_vlan.is_none() {
                    return Err(invalid(
                        format!("{prefix}allowed_vlans"),
                        "a trunk needs allowed VLANs or a native_vlan",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `id` as the forwarder takes it, 0 when unset or out of range: never a wrapped number.
fn vlan_id_or_zero(id: Option<i64>) -> u16 {
    id.and_then(|id| VlanId::try_from(id).ok())
        .map_or(0, VlanId::get)
}

/// The MTU range of a TAP netdev.
pub fn validate_mtu(mtu: u32) -> Result<(), String> {
    if (MIN_MTU..=MAX_MTU).contains(&mtu) {
        Ok(())
    } else {
        Err(format!("{mtu} is outside {MIN_MTU}..={MAX_MTU}"))
    }
}

/// A station's own address (a port's or a guest's MAC, an allowed source): unicast and not
/// all zeros, which the kernel refuses as a device address and no station sends from.
pub fn validate_station_mac(mac: MacAddr) -> Result<(), String> {
    if mac.is_multicast() {
        Err(format!(
            "{mac} is not a unicast station address (the group bit of the first byte is set)"
        ))
    } else if mac.is_zero() {
        Err(format!(
            "{mac} is not a unicast station address (all zeros)"
        ))
    } else {
        Ok(())
    }
}

/// Namespace names become paths under `/run/netns`: keep them to one plain component.
fn validate_netns_name(name: &str) -> Result<(), String> {
    crate::sys::netns::validate_name(name).map_err(|e| e.to_string())
}

impl Config {
    /// Parses and validates TOML; `origin` names the source in messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            origin: origin.to_owned(),
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Self {
        Self::from_toml(DEFAULT_CONFIG, "(embedded default)")
            .expect("the embedded default config is valid (checked by a unit test)")
    }

    /// Checks the configuration as a whole.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let switch = &self.switch;
        if !(1..=MAX_FDB_CAPACITY).contains(&switch.fdb_capacity) {
            return Err(invalid(
                "switch.fdb_capacity",
                format!("{} is outside 1..={MAX_FDB_CAPACITY}", switch.fdb_capacity),
            ));
        }
        if switch.fdb_ageing_secs == 0 {
            return Err(invalid("switch.fdb_ageing_secs", "must be at least 1"));
        }
        if switch.poll_budget == 0 {
            return Err(invalid("switch.poll_budget", "must be at least 1"));
        }
        switch.storm_control.validate("switch.")?;
        if !(1..=MAX_THREADS).contains(&switch.threads) {
            return Err(invalid(
                "switch.threads",
                format!("{} is outside 1..={MAX_THREADS}", switch.threads),
            ));
        }
        if switch.idle_poll_us > MAX_IDLE_POLL_US {
            return Err(invalid(
                "switch.idle_poll_us",
                format!(
                    "{} is above the maximum {MAX_IDLE_POLL_US}",
                    switch.idle_poll_us
                ),
            ));
        }
        if switch.adaptive_poll_pct > MAX_ADAPTIVE_POLL_PCT {
            return Err(invalid(
                "switch.adaptive_poll_pct",
                format!(
                    "{} is above the maximum {MAX_ADAPTIVE_POLL_PCT} (percent of one CPU; 0 turns it off)",
                    switch.adaptive_poll_pct
                ),
            ));
        }
        switch
            .cpu_affinity
            .validate()
            .map_err(|reason| invalid("switch.cpu_affinity", reason))?;
        if let Some(priority) = switch.realtime_priority {
            if !(1..=99).contains(&priority) {
                return Err(invalid(
                    "switch.realtime_priority",
                    format!("{priority} is outside 1..=99 (SCHED_FIFO priorities)"),
                ));
            }
        }
        if let Some(flap) = &switch.mac_flap {
            let checks = [
                ("moves", flap.moves == 0),
                ("window_ms", flap.window_ms == 0),
                ("hold_secs", flap.hold_secs == 0),
            ];
            for (key, zero) in checks {
                if zero {
                    return Err(invalid(
                        format!("switch.mac_flap.{key}"),
                        "must be at least 1",
                    ));
                }
            }
        }
        if let Some(metrics) = &switch.metrics {
            parse_metrics_addr(metrics).map_err(|reason| invalid("switch.metrics", reason))?;
        }
        for (key, value) in [("user", &switch.user), ("group", &switch.group)] {
            match value {
                Some(name) if name.is_empty() || name.contains('\0') => {
                    return Err(invalid(
                        format!("switch.{key}"),
                        format!("{name:?} is not a {key} name"),
                    ));
                }
                Some(_) if !switch.drop_privileges => {
                    return Err(invalid(
                        format!("switch.{key}"),
                        "needs drop_privileges = true (a user switch without it would lose \
                         CAP_NET_ADMIN and every later port change)",
                    ));
                }
                _ => {}
            }
        }
        if switch.group.is_some() && switch.user.is_none() {
            return Err(invalid("switch.group", "needs switch.user"));
        }
        let mut names = HashSet::new();
        for (i, port) in self.ports.iter().enumerate() {
            let field = format!("port[{i}]");
            port.validate(&field)?;
            if !names.insert(port.name.as_str()) {
                return Err(invalid(
                    format!("{field}.name"),
                    format!("duplicate port name {:?}", port.name),
                ));
            }
        }
        self.evpn_plan()?;
        Ok(())
    }
}

impl Config {
    /// Whether ports may be added in namespaces at runtime (`switch.netns_hotplug`,
    /// by default whether any configured port is in one).
    pub fn netns_hotplug(&self) -> bool {
        self.switch
            .netns_hotplug
            .unwrap_or_else(|| self.ports.iter().any(|port| port.netns.is_some()))
    }

    /// Whether VM ports whose macvtap device goes to an owner may be added at runtime
    /// (`switch.vm_hotplug`, on by default: hot-plugging VM NICs is what a switch for
    /// libvirt guests does, and Debian's QEMU runs as `libvirt-qemu`).
    pub fn vm_hotplug(&self) -> bool {
        self.switch.vm_hotplug.unwrap_or(true)
    }

    /// What the switch keeps after setup when it drops privileges: CAP_NET_ADMIN
    /// (new TAPs, netlink), CAP_NET_RAW (the `AF_PACKET` socket of a netdev port added at
    /// runtime; a VXLAN port's sockets are plain UDP ones), plus CAP_SYS_ADMIN when [`Self::netns_hotplug`]
    /// (entering a namespace takes `setns`), plus CAP_CHOWN when [`Self::vm_hotplug`]
    /// (giving a new macvtap's `/dev/tapN` to QEMU's user), plus CAP_SYS_NICE when
    /// `switch.realtime_priority` is set (the workers' `SCHED_FIFO`). Nothing else VM ports do at
    /// runtime needs more: macvtaps, glue TAPs (their owner is `TUNSETOWNER`) and tc
    /// filters are CAP_NET_ADMIN, and libvirt is a Unix socket.
    pub fn runtime_capabilities(&self) -> CapSet {
        let mut keep = vec![CAP_NET_ADMIN, CAP_NET_RAW];
        if self.netns_hotplug() {
            keep.push(CAP_SYS_ADMIN);
        }
        if self.vm_hotplug() {
            keep.push(CAP_CHOWN);
        }
        // The workers set their scheduling policy when they start, after the drop.
        if self.switch.realtime_priority.is_some() {
            keep.push(CAP_SYS_NICE);
        }
        CapSet::of(&keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let config = Config::embedded_default();
        assert_eq!(config.ports.len(), 3);
        assert_eq!(config.switch, SwitchConfig::default());
    }

    #[test]
    fn port_spec_parses_name_and_namespace() {
        let port: PortConfig = "tap1@ns1".parse().unwrap();
        assert_eq!(port.name, "tap1");
        assert_eq!(port.netns.as_deref(), Some("ns1"));
        let port: PortConfig = "tap2".parse().unwrap();
        assert_eq!(port.netns, None);
        assert_eq!(port.mtu, 1500);
    }

    #[test]
    fn bad_port_specs_name_the_problem() {
        let err = "waytoolonginterfacename@ns"
            .parse::<PortConfig>()
            .unwrap_err();
        assert!(err.to_string().contains("IFNAMSIZ"), "{err}");
        let err = "tap1@".parse::<PortConfig>().unwrap_err();
        assert!(err.to_string().contains("netns"), "{err}");
        let err = "@ns".parse::<PortConfig>().unwrap_err();
        assert!(err.to_string().contains("name"), "{err}");
    }

    #[test]
    fn full_config_round_trips() {
        let text = r#"
            [switch]
            fdb_ageing_secs = 30
            fdb_capacity = 100
            offloads = false
            poll_budget = 8
            metrics = "127.0.0.1:9477"

            [[port]]
            name = "p1"
            netns = "ns1"
            mtu = 9000
            mac = "02:00:00:00:00:01"
            persistent = true
            offloads = true
            txqueuelen = 5000
            enabled = false

            [[port]]
            name = "p2"
        "#;
        let config = Config::from_toml(text, "test").unwrap();
        assert_eq!(config.switch.fdb_capacity, 100);
        assert!(!config.ports[1].offloads_enabled(&config.switch));
        assert!(config.ports[0].offloads_enabled(&config.switch));
        assert!(!config.ports[0].enabled);
        assert!(config.ports[1].enabled);
        assert_eq!(config.switch.metrics.as_deref(), Some("127.0.0.1:9477"));
        assert_eq!(
            config.ports[0].mac(),
            Some("02:00:00:00:00:01".parse().unwrap())
        );
        let again = toml::to_string(&config).unwrap();
        assert_eq!(Config::from_toml(&again, "again").unwrap(), config);
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let cases = [
            (
                "[[port]]\nname = \"a\"\n[[port]]\nname = \"a\"",
                "port[1].name",
            ),
            ("[[port]]\nname = \"a\"\nmtu = 10", "port[0].mtu"),
            ("[[port]]\nname = \"a\"\nmtu = 70000", "port[0].mtu"),
            (
                "[[port]]\nname = \"a\"\nmac = \"01:00:5e:00:00:01\"",
                "port[0].mac",
            ),
            ("[switch]\nfdb_capacity = 0", "switch.fdb_capacity"),
            ("[switch]\npoll_budget = 0", "switch.poll_budget"),
            ("[[port]]\nname = \"a\"\nnetns = \"x/y\"", "port[0].netns"),
            ("[switch]\nmetrics = \"localhost\"", "switch.metrics"),
        ];
        for (text, field) in cases {
            let err = Config::from_toml(text, "test").unwrap_err().to_string();
            assert!(err.contains(field), "{text:?}: {err}");
        }
    }

    #[test]
    fn cpu_affinity_reads_auto_none_or_a_list_and_refuses_anything_else_precisely() {
        let read = |text: &str| Config::from_toml(text, "test").map(|c| c.switch.cpu_affinity);
        assert_eq!(read("").unwrap(), CpuAffinity::Auto);
        assert_eq!(
            read("[switch]\ncpu_affinity = \"auto\"").unwrap(),
            CpuAffinity::Auto
        );
        assert_eq!(
            read("[switch]\ncpu_affinity = \"none\"").unwrap(),
            CpuAffinity::None
        );
        assert_eq!(
            read("[switch]\ncpu_affinity = [3, 1]").unwrap(),
            CpuAffinity::Cpus(vec![3, 1])
        );
        let cases = [
            (
                "[switch]\ncpu_affinity = \"all\"",
                "\"auto\", \"none\" or a list of CPU numbers",
            ),
            (
                "[switch]\ncpu_affinity = 1",
                "\"auto\", \"none\" or a list of CPU numbers",
            ),
            ("[switch]\ncpu_affinity = [-1]", "cpu_affinity"),
            (
                "[switch]\ncpu_affinity = []",
                "switch.cpu_affinity: an empty list pins nothing",
            ),
            (
                "[switch]\ncpu_affinity = [1024]",
                "switch.cpu_affinity: CPU 1024 is above the maximum 1023",
            ),
            (
                "[switch]\ncpu_affinity = [1, 2, 1]",
                "switch.cpu_affinity: CPU 1 is listed twice",
            ),
        ];
        for (text, expected) in cases {
            let err = Config::from_toml(text, "test").unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        // As a reload compares it, and as `config` prints it: the same words back.
        for (affinity, json) in [
            (CpuAffinity::Auto, "\"auto\""),
            (CpuAffinity::None, "\"none\""),
            (CpuAffinity::Cpus(vec![2, 3]), "[2,3]"),
        ] {
            assert_eq!(serde_json::to_string(&affinity).unwrap(), json);
            let back: CpuAffinity = serde_json::from_str(json).unwrap();
            assert_eq!(back, affinity);
        }
    }

    #[test]
    fn cpu_plans_pin_one_cpu_per_thread_from_the_highest_allowed() {
        let two = [0, 1];
        assert_eq!(CpuAffinity::Auto.plan(&two, 1).unwrap(), vec![1]);
        assert_eq!(CpuAffinity::Auto.plan(&two, 2).unwrap(), vec![1, 0]);
        assert_eq!(CpuAffinity::Auto.plan(&two, 3).unwrap(), vec![1, 0, 1]);
        assert_eq!(CpuAffinity::Auto.plan(&[4, 6, 7], 2).unwrap(), vec![7, 6]);
        assert!(CpuAffinity::Auto.plan(&[5], 1).unwrap().is_empty());
        assert!(CpuAffinity::Auto.plan(&[5], 4).unwrap().is_empty());
        assert!(CpuAffinity::None.plan(&two, 2).unwrap().is_empty());
        let listed = CpuAffinity::Cpus(vec![1]);
        assert_eq!(listed.plan(&two, 3).unwrap(), vec![1, 1, 1]);
        let listed = CpuAffinity::Cpus(vec![0, 1]);
        assert_eq!(listed.plan(&two, 1).unwrap(), vec![0]);
        let error = CpuAffinity::Cpus(vec![1, 5])
            .plan(&[0, 1, 2, 3, 8], 2)
            .unwrap_err();
        assert_eq!(
            error,
            "CPU 5 is not one this process may run on (allowed: 0-3,8)"
        );
        assert_eq!(cpu_ranges(&[]), "none");
        assert_eq!(cpu_ranges(&[2]), "2");
        assert_eq!(cpu_ranges(&[0, 2, 3, 4, 7, 8]), "0,2-4,7-8");
    }

    #[test]
    fn sparse_traffic_settings_are_validated_with_precise_errors() {
        let cases = [
            (
                "[switch]\nadaptive_poll_pct = 51",
                "switch.adaptive_poll_pct: 51 is above the maximum 50 (percent of one CPU; 0 turns it off)",
            ),
            (
                "[switch]\nrealtime_priority = 0",
                "switch.realtime_priority: 0 is outside 1..=99 (SCHED_FIFO priorities)",
            ),
            (
                "[switch]\nrealtime_priority = 100",
                "switch.realtime_priority: 100 is outside 1..=99 (SCHED_FIFO priorities)",
            ),
            ("[switch]\nadaptive_poll_pct = -1", "adaptive_poll_pct"),
            ("[switch]\nrealtime_priority = 300", "realtime_priority"),
        ];
        for (text, expected) in cases {
            let err = Config::from_toml(text, "test").unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        let config = Config::from_toml(
            "[switch]\nadaptive_poll_pct = 0\nrealtime_priority = 10",
            "test",
        )
        .unwrap();
        assert_eq!(config.switch.adaptive_poll_pct, 0);
        assert_eq!(config.switch.realtime_priority, Some(10));
        assert!(
            config
                .runtime_capabilities()
                .contains(crate::sys::privileges::CAP_SYS_NICE),
            "SCHED_FIFO is set by the workers after the privilege drop"
        );
        let default = Config::from_toml("", "test").unwrap();
        assert_eq!(default.switch.adaptive_poll_pct, DEFAULT_ADAPTIVE_POLL_PCT);
        assert_eq!(default.switch.realtime_priority, None);
        assert!(
            !default
                .runtime_capabilities()
                .contains(crate::sys::privileges::CAP_SYS_NICE)
        );
    }

    const FEATURES: &str = r#"
        [switch.mac_flap]
        moves = 3
        window_ms = 1000
        hold_secs = 30

        [[port]]
        name = "p1"
        netns = "ns1"          # optional
        vlan_mode = "access"   # "access" | "trunk"
        vlan = 10              # access VLAN
        mac_limit = 16         # optional, per-port
        storm_control = { broadcast_pps = 1000, multicast_pps = 1000, unknown_unicast_pps = 1000 }
        isolated = false

        [[port]]
        name = "p2"
        mac = "02:00:00:00:00:02"
        bind_mac = true
        allowed_macs = ["02:00:00:00:00:09"]
        mac_limit = 4
        mac_limit_action = "drop+log"
        sticky_macs = true
        isolated = true
        flood_unknown_unicast = false

        [[port]]
        name = "p3"
        vlan_mode = "trunk"
        allowed_vlans = [10, 20, "100-102"]
        native_vlan = 1        # optional: sent untagged
    "#;

    #[test]
    fn storm_control_defaults_come_from_the_switch_then_the_builtin_ones() {
        let text = r#"
            [switch]
            storm_control = { unknown_unicast_pps = 20000, multicast_pps = 300 }

            [[port]]
            name = "plain"

            [[port]]
            name = "own"
            storm_control = { broadcast_pps = "unlimited", multicast_pps = 50 }
        "#;
        let config = Config::from_toml(text, "test").unwrap();
        let switch = &config.switch;
        let plain = config.ports[0].policy_in(switch).storm;
        assert_eq!(
            plain,
            StormControl {
                broadcast_pps: Some(crate::policy::DEFAULT_BROADCAST_PPS),
                multicast_pps: Some(300),
                unknown_unicast_pps: Some(20000),
            }
        );
        let own = config.ports[1].policy_in(switch).storm;
        assert_eq!(
            own,
            StormControl {
                broadcast_pps: None,
                multicast_pps: Some(50),
                unknown_unicast_pps: Some(20000),
            }
        );
        // Under a default [switch], a port without settings gets the built-in caps.
        assert_eq!(config.ports[0].policy().storm, StormControl::default());
        // "unlimited" survives `config show`.
        let again = toml::to_string(&config).unwrap();
        assert!(again.contains(r#"broadcast_pps = "unlimited""#), "{again}");
        assert_eq!(Config::from_toml(&again, "again").unwrap(), config);

        for (text, expected) in [
            (
                "[switch]\nstorm_control = { broadcast_pps = 0 }",
                "switch.storm_control.broadcast_pps: must be at least 1",
            ),
            (
                "[switch]\nstorm_control = { broadcast_pps = \"lots\" }",
                "\"lots\" is not a rate",
            ),
            (
                "[[port]]\nname = \"p\"\nstorm_control = { unknown_unicast_pps = -5 }",
                "-5 is outside 0..=4294967295",
            ),
            (
                "[[port]]\nname = \"p\"\nstorm_control = { unknown_unicast_pps = true }",
                "packets per second (a whole number) or \"unlimited\"",
            ),
        ] {
            let error = Config::from_toml(text, "test").unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn feature_settings_become_policies() {
        let config = Config::from_toml(FEATURES, "test").unwrap();
        let access = config.ports[0].policy();
        assert_eq!(access.vlan, VlanMode::Access { vlan: 10 });
        assert_eq!(access.security.mac_limit, Some(16));
        assert_eq!(access.storm.unknown_unicast_pps, Some(1000));
        let secure = config.ports[1].policy();
        let macs: Vec<String> = secure
            .security
            .allowed_macs
            .iter()
            .map(|m| m.to_string())
            .collect();
        assert_eq!(macs, ["02:00:00:00:00:09", "02:00:00:00:00:02"]);
        assert_eq!(secure.security.violation, ViolationAction::DropLog);
        assert!(secure.security.sticky && secure.isolated);
        assert!(!secure.flood.unknown_unicast && secure.flood.broadcast);
        let VlanMode::Trunk { allowed, native } = config.ports[2].policy().vlan else {
            panic!("p3 is a trunk");
        };
        assert_eq!(
            allowed.iter().collect::<Vec<_>>(),
            vec![10, 20, 100, 101, 102]
        );
        assert_eq!(native, Some(1));
        let flap = config.switch.mac_flap_config().unwrap();
        assert_eq!((flap.moves, flap.hold), (3, Duration::from_secs(30)));
        let again = toml::to_string(&config).unwrap();
        assert_eq!(Config::from_toml(&again, "again").unwrap(), config);
        // No feature settings: a transparent port, as before.
        assert_eq!(PortConfig::named("x").policy(), PortPolicy::default());
    }

    #[test]
    fn invalid_feature_settings_name_the_field() {
        let port = |extra: &str| format!("[[port]]\nname = \"a\"\n{extra}");
        let cases = [
            (port("vlan = 10"), "port[0].vlan: needs vlan_mode"),
            (
                port("vlan_mode = \"access\""),
                "port[0].vlan: an access port needs",
            ),
            (
                port("vlan_mode = \"access\"\nvlan = 4095"),
                "port[0].vlan: VLAN 4095 is outside 1..=4094",
            ),
            (
                port("vlan_mode = \"access\"\nvlan = 5\nnative_vlan = 1"),
                "port[0].native_vlan: only for",
            ),
            (
                port("vlan_mode = \"trunk\"\nvlan = 5"),
                "port[0].vlan: only for",
            ),
            (
                port("vlan_mode = \"trunk\""),
                "port[0].allowed_vlans: a trunk needs",
            ),
            (
                port("vlan_mode = \"trunk\"\nallowed_vlans = [10, \"30-20\"]"),
                "port[0].allowed_vlans[1]: range \"30-20\" is reversed",
            ),
            (
                port("vlan_mode = \"trunk\"\nallowed_vlans = [\"1-5000\"]"),
                "port[0].allowed_vlans[0]: VLAN 5000 is outside",
            ),
            (
                port("vlan_mode = \"trunk\"\nallowed_vlans = [\"ten\"]"),
                "port[0].allowed_vlans[0]: \"ten\" is not a VLAN id",
            ),
            (
                port("vlan_mode = \"trunk\"\nallowed_vlans = [0]"),
                "port[0].allowed_vlans[0]: VLAN 0 is outside",
            ),
            (
                port("vlan_mode = \"trunk\"\nnative_vlan = -1"),
                "port[0].native_vlan: VLAN -1 is outside",
            ),
            (port("vlan_mode = \"hybrid\""), "hybrid"),
            (
                port("mac_limit = 0"),
                "port[0].mac_limit: must be at least 1",
            ),
            (
                port("mac_limit_action = \"drop\""),
                "port[0].mac_limit_action: has no effect",
            ),
            (
                port("mac_limit = 2\nmac_limit_action = \"block\""),
                "unknown action \"block\"",
            ),
            (
                port("bind_mac = true"),
                "port[0].bind_mac: needs port[0].mac",
            ),
            (
                port("allowed_macs = [\"ff:ff:ff:ff:ff:ff\"]"),
                "port[0].allowed_macs[0]: ff:ff:ff:ff:ff:ff is not",
            ),
            (
                port("storm_control = { broadcast_pps = 0 }"),
                "port[0].storm_control.broadcast_pps: must be at least 1",
            ),
            (port("storm_control = { broadcast = 10 }"), "broadcast"),
            (
                "[switch.mac_flap]\nmoves = 0\nwindow_ms = 1\nhold_secs = 1".to_owned(),
                "switch.mac_flap.moves",
            ),
        ];
        for (text, expected) in cases {
            let err = Config::from_toml(&text, "test").unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    fn settings(pairs: &[(&str, &str)]) -> PortSettings {
        pairs
            .iter()
            .map(|(key, text)| ((*key).to_owned(), setting_value(key, text)))
            .collect()
    }

    #[test]
    fn command_line_values_use_toml_syntax() {
        use serde_json::json;
        let cases = [
            ("vlan", "20", json!(20)),
            ("vlan_mode", "access", json!("access")),
            ("mac_limit_action", "drop+log", json!("drop+log")),
            ("isolated", "true", json!(true)),
            ("mac", "02:00:00:00:00:01", json!("02:00:00:00:00:01")),
            ("allowed_vlans", "10,20,100-200", json!([10, 20, "100-200"])),
            ("allowed_vlans", "[10, \"100-200\"]", json!([10, "100-200"])),
            ("allowed_vlans", "7", json!([7])),
            (
                "allowed_macs",
                "02:00:00:00:00:01, 02:00:00:00:00:02",
                json!(["02:00:00:00:00:01", "02:00:00:00:00:02"]),
            ),
            (
                "storm_control",
                "{ broadcast_pps = 100, multicast_pps = 50 }",
                json!({"broadcast_pps": 100, "multicast_pps": 50}),
            ),
            (
                "storm_control",
                "broadcast_pps=100,multicast_pps = 50",
                json!({"broadcast_pps": 100, "multicast_pps": 50}),
            ),
            ("mac_limit", "none", serde_json::Value::Null),
        ];
        for (key, text, expected) in cases {
            assert_eq!(setting_value(key, text), expected, "{key} = {text}");
        }
    }

    #[test]
    fn settings_change_a_port_as_a_whole() {
        let config = Config::from_toml(FEATURES, "test").unwrap();
        let access = &config.ports[0];
        let moved = access
            .with_runtime_settings(&settings(&[
                ("vlan", "20"),
                ("storm_control", "{ broadcast_pps = 50 }"),
                ("mac_limit", "none"),
                ("flood_multicast", "false"),
            ]))
            .unwrap();
        let policy = moved.policy();
        assert_eq!(policy.vlan, VlanMode::Access { vlan: 20 });
        assert_eq!(policy.storm.broadcast_pps, Some(50));
        assert_eq!(policy.storm.multicast_pps, None, "the table is replaced");
        assert_eq!(policy.security.mac_limit, None);
        assert!(!policy.flood.multicast);
        // Everything not named stays.
        assert_eq!(moved.netns, access.netns);
        assert_eq!(moved.policy.vlan_mode, access.policy.vlan_mode);
        // From access to trunk in one change; `none` drops the access VLAN.
        let trunk = access
            .with_runtime_settings(&settings(&[
                ("vlan_mode", "trunk"),
                ("vlan", "none"),
                ("allowed_vlans", "10,100-102"),
                ("native_vlan", "1"),
            ]))
            .unwrap();
        let VlanMode::Trunk { allowed, native } = trunk.policy().vlan else {
            panic!("not a trunk: {trunk:?}");
        };
        assert_eq!(allowed.iter().collect::<Vec<_>>(), [10, 100, 101, 102]);
        assert_eq!(native, Some(1));
        // A disabled port stays in the config as such; `enabled` is a setting like the others.
        let off = access
            .with_runtime_settings(&settings(&[("enabled", "false")]))
            .unwrap();
        assert!(!off.enabled);
        // Back to the defaults: a plain port again.
        let plain = access
            .with_runtime_settings(&settings(&[
                ("vlan_mode", "none"),
                ("vlan", "none"),
                ("mac_limit", "none"),
                ("storm_control", "none"),
            ]))
            .unwrap();
        assert_eq!(plain.policy(), PortPolicy::default());
        assert_eq!(config.ports[0], *access, "the original is untouched");
    }

    #[test]
    fn bad_settings_name_the_port_and_key() {
        let config = Config::from_toml(FEATURES, "test").unwrap();
        let access = &config.ports[0];
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("vlan", "5000")],
                "port p1: vlan: VLAN 5000 is outside 1..=4094",
            ),
            (
                &[("mac_limit", "0")],
                "port p1: mac_limit: must be at least 1",
            ),
            (
                &[("mac_limit", "lots")],
                "port p1: mac_limit: invalid type: string \"lots\"",
            ),
            (
                &[("vlan_mode", "hybrid")],
                "port p1: vlan_mode: unknown variant `hybrid`",
            ),
            (
                &[
                    ("vlan_mode", "trunk"),
                    ("vlan", "none"),
                    ("allowed_vlans", "1-5000"),
                ],
                "port p1: allowed_vlans[0]: VLAN 5000 is outside",
            ),
            (
                &[("vlan_mode", "trunk")],
                "port p1: vlan: only for vlan_mode = \"access\"",
            ),
            (
                &[("storm_control", "{ broadcast_pps = 0 }")],
                "port p1: storm_control.broadcast_pps: must be at least 1",
            ),
            (
                &[("storm_control", "{ broadcast = 10 }")],
                "port p1: storm_control: unknown field `broadcast`",
            ),
            (&[("bind_mac", "true")], "port p1: bind_mac: needs mac"),
            (
                &[("allowed_macs", "ff:ff:ff:ff:ff:ff")],
                "port p1: allowed_macs[0]: ff:ff:ff:ff:ff:ff is not",
            ),
            (
                &[("mac_limit_action", "shutdown"), ("mac_limit", "none")],
                "port p1: mac_limit_action: has no effect",
            ),
            (
                &[("isolated", "yes")],
                "port p1: isolated: invalid type: string \"yes\", expected a boolean",
            ),
            (&[("mtu", "10")], "port p1: mtu: 10 is outside 68..=65521"),
            (&[("speed", "10")], "port p1: speed: unknown setting"),
            (
                &[("netns", "\"other\"")],
                "port p1: netns: cannot change on a running port",
            ),
            (
                &[("queues", "4")],
                "port p1: queues: cannot change on a running port",
            ),
            (
                &[("name", "\"p9\"")],
                "port p1: name: cannot change on a running port",
            ),
            (
                &[("vm_mode", "glue")],
                "port p1: vm_mode: cannot change on a running port",
            ),
        ];
        for (pairs, expected) in cases {
            let err = access
                .with_runtime_settings(&settings(pairs))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(expected), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn vlan_ids_are_checked_not_wrapped() {
        assert_eq!(VlanId::try_from(1).map(VlanId::get), Ok(1));
        assert_eq!(VlanId::try_from(4094).map(VlanId::get), Ok(4094));
        for id in [0, 4095, -1, 65537] {
            assert_eq!(
                VlanId::try_from(id),
                Err(format!("VLAN {id} is outside 1..=4094"))
            );
        }
        // 65537 as u16 would be VLAN 1; an unchecked port's policy gets no VLAN instead.
        let mut port = PortConfig::named("p1");
        port.policy.vlan_mode = Some(VlanModeName::Access);
        port.policy.vlan = Some(65537);
        assert_eq!(port.policy().vlan, VlanMode::Access { vlan: 0 });
        assert!(port.validate("port").is_err());
    }

    /// Ports that between them set every key: a VM TAP port with every TAP and policy
    /// key, a netdev port, a vxlan port.
    const EVERY_KEY: &str = r#"
        [[port]]
        name = "p1"
        mtu = 9000
        mac = "02:00:00:00:00:01"
        persistent = true
        offloads = false
        txqueuelen = 10
        queues = 2
        owner = 1
        group = 1
        vlan_mode = "trunk"
        allowed_vlans = [1, "5-7"]
        native_vlan = 1
        mac_limit = 1
        mac_limit_action = "drop"
        sticky_macs = true
        allowed_macs = []
        bind_mac = true
        storm_control = { broadcast_pps = 5 }
        isolated = true
        flood_unknown_unicast = false
        flood_multicast = false
        flood_broadcast = false
        enabled = false
        vm = "domain"
        vm_mode = "glue"
        vm_mac = "02:00:00:00:00:01"
        vm_queues = 2
        vm_device = "vmt-p1"

        [[port]]
        name = "p2"
        vlan_mode = "access"
        vlan = 3
        kind = "netdev"
        device = "eth1"
        netns = "ns"

        [[port]]
        name = "p3"
        kind = "vxlan"
        vni = 1
        local = "192.0.2.1"
        udp_port = 4789
        remotes = []

        [[port]]
        name = "p4"
        adopt = true

        [[port]]
        name = "p5"
        kind = "vxlan"
        vlan_vni = { 100 = 5000, 200 = 5001 }
        local = "192.0.2.2"
        remotes = ["192.0.2.3"]
    "#;

    #[test]
    fn port_keys_are_every_key_of_a_port_table() {
        // Every key reaches the nested model and comes back out of it.
        let config = Config::from_toml(EVERY_KEY, "test").unwrap();
        let mut keys: Vec<String> = config
            .ports
            .iter()
            .flat_map(|port| {
                toml::Table::try_from(port)
                    .unwrap()
                    .into_iter()
                    .map(|(k, _)| k)
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut known: Vec<String> = port_keys().iter().map(|k| (*k).to_owned()).collect();
        known.sort_unstable();
        assert_eq!(keys, known);
    }

    #[test]
    fn every_example_config_round_trips_through_the_nested_model() {
        let examples = [
            (DEFAULT_CONFIG, "default.toml"),
            (FEATURES, "FEATURES"),
            (EVERY_KEY, "EVERY_KEY"),
        ];
        for (text, origin) in examples {
            let config = Config::from_toml(text, origin).unwrap();
            // As TOML (config show, check-config) and as JSON (control protocol, state).
            let toml_text = toml::to_string(&config).unwrap();
            let again = Config::from_toml(&toml_text, origin).unwrap();
            assert_eq!(again, config, "{origin}");
            assert_eq!(toml::to_string(&again).unwrap(), toml_text, "{origin}");
            let json = serde_json::to_string(&config).unwrap();
            let again: Config = serde_json::from_str(&json).unwrap();
            assert_eq!(again, config, "{origin}");
            assert_eq!(serde_json::to_string(&again).unwrap(), json, "{origin}");
            // Each table written as it was read, key for key.
            let raw: toml::Table = text.parse().unwrap();
            let written: toml::Table = toml_text.parse().unwrap();
            let (Some(toml::Value::Array(raw)), Some(toml::Value::Array(written))) =
                (raw.get("port"), written.get("port"))
            else {
                continue;
            };
            for (raw, written) in raw.iter().zip(written) {
                for (key, value) in raw.as_table().unwrap() {
                    // Left out only when it says what a table without it says.
                    let default = toml::Value::Boolean(key.starts_with("flood_"));
                    let written = written.get(key).unwrap_or(&default);
                    assert_eq!(written, value, "{origin}: {key}");
                }
            }
        }
    }

    #[test]
    fn the_nested_model_cannot_hold_a_key_of_another_kind() {
        // The JSON a client sends is read by the same rules as a file, keys named `port.`.
        let err = serde_json::from_value::<PortConfig>(serde_json::json!({
            "name": "up0", "kind": "netdev", "device": "eth1", "queues": 4
        }))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("port.queues: not with kind = \"netdev\": queues is a TAP setting"),
            "{err}"
        );
        let err = serde_json::from_value::<PortConfig>(serde_json::json!({
            "name": "p1", "vm_mac": "02:00:00:00:00:01"
        }))
        .unwrap_err()
        .to_string();
        assert!(err.contains("port.vm_mac: only for a VM port"), "{err}");
        // What every table says (`persistent = false`, `queues = 1`) is no TAP setting.
        let port: PortConfig = serde_json::from_value(serde_json::json!({
            "name": "vx0", "kind": "vxlan", "vni": 7, "local": "10.0.0.1", "remotes": [],
            "persistent": false, "queues": 1
        }))
        .unwrap();
        assert_eq!(port.kind(), PortKind::Vxlan);
        assert_eq!(port.mtu, kind::DEFAULT_VXLAN_MTU, "structural default");
        // `port add` settings that change the kind are checked by key too.
        let err = PortConfig::named("up0")
            .with_settings(&settings(&[
                ("kind", "netdev"),
                ("device", "eth1"),
                ("mac", "02:00:00:00:00:01"),
            ]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("port up0: mac: not with kind = \"netdev\""),
            "{err}"
        );
        let netdev = PortConfig::named("up0")
            .with_settings(&settings(&[("kind", "netdev"), ("device", "eth1")]))
            .unwrap();
        assert_eq!(netdev.link_name(), Some("eth1"));
    }

    #[test]
    fn vm_ports_parse_and_derive_their_device_and_mac() {
        let text = r#"
            [[port]]
            name = "web1"
            vm = "instance-00000001"

            [[port]]
            name = "a-long-name.12"
            vm = "db"
            vm_mode = "glue"
            vm_mac = "fa:16:3e:00:00:07"
            vm_queues = 4
            bind_mac = true

            [[port]]
            name = "n1"
            vm = "db"
            vm_device = "tap1234abcd-ef"
        "#;
        let config = Config::from_toml(text, "test").unwrap();
        let [web, db, nova] = &config.ports[..] else {
            panic!("three ports")
        };
        assert_eq!(web.vm_device_name(), "mvt-web1");
        assert_eq!(web.vm_mode(), VmMode::Macvtap);
        let derived = web.vm_mac_or_derived();
        assert_eq!(derived.0[..3], [0x52, 0x54, 0x00]);
        assert_eq!(derived, web.clone().vm_mac_or_derived(), "stable");
        assert_ne!(derived, PortConfig::named("web2").vm_mac_or_derived());
        // Too long for "vmt-" + name: a readable start and a hash, 15 bytes.
        let device = db.vm_device_name();
        assert!(
            device.starts_with("vmt-a-lon") && device.len() == 15,
            "{device}"
        );
        assert_ne!(
            device,
            PortConfig {
                name: "a-long-name.13".into(),
                ..db.clone()
            }
            .vm_device_name()
        );
        assert_eq!(db.vm_mac_or_derived().to_string(), "fa:16:3e:00:00:07");
        // bind_mac on a VM port binds the guest's MAC.
        assert_eq!(
            &*db.policy().security.allowed_macs,
            &[db.vm_mac_or_derived()]
        );
        assert_eq!(nova.vm_device_name(), "tap1234abcd-ef");
        let again = toml::to_string(&config).unwrap();
        assert_eq!(Config::from_toml(&again, "again").unwrap(), config);
    }

    #[test]
    fn invalid_vm_settings_name_the_field() {
        let port = |extra: &str| format!("[[port]]\nname = \"p1\"\n{extra}");
        let cases = [
            (
                port("vm_mode = \"glue\""),
                "port[0].vm_mode: only for a VM port",
            ),
            (
                port("vm_queues = 2"),
                "port[0].vm_queues: only for a VM port",
            ),
            (
                port("vm = \"\""),
                "port[0].vm: \"\" is not a libvirt domain name",
            ),
            (port("vm = \"d\"\nvm_mode = \"bridge\""), "bridge"),
            (
                port("vm = \"d\"\nnetns = \"ns1\""),
                "port[0].netns: a VM port lives in the host's namespace",
            ),
            (
                port("vm = \"d\"\nvm_mac = \"01:00:5e:00:00:01\""),
                "port[0].vm_mac: 01:00:5e:00:00:01 is not a unicast",
            ),
            (
                port("vm = \"d\"\nvm_queues = 0"),
                "port[0].vm_queues: 0 is outside 1..=256",
            ),
            (
                port("vm = \"d\"\nvm_device = \"p1\""),
                "port[0].vm_device: \"p1\" is the port TAP's own name",
            ),
            (
                port("vm = \"d\"\nvm_device = \"x/y\""),
                "port[0].vm_device: invalid interface name",
            ),
            (
                port("vm = \"d\"\nmac = \"02:00:00:00:00:01\"\nvm_mac = \"02:00:00:00:00:02\""),
                "port[0].mac: 02:00:00:00:00:01 differs from vm_mac",
            ),
        ];
        for (text, expected) in cases {
            let err = Config::from_toml(&text, "test").unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn metrics_addresses_default_to_loopback() {
        assert_eq!(
            parse_metrics_addr("9477").unwrap(),
            "127.0.0.1:9477".parse().unwrap()
        );
        assert_eq!(
            parse_metrics_addr("[::1]:9477").unwrap(),
            "[::1]:9477".parse().unwrap()
        );
        assert!(parse_metrics_addr("127.0.0.1").is_err());
    }

    #[test]
    fn privilege_settings_validate_and_pick_capabilities() {
        let config = Config::from_toml("[[port]]\nname = \"a\"", "test").unwrap();
        assert!(config.switch.drop_privileges);
        assert_eq!(
            config.runtime_capabilities(),
            CapSet::of(&[CAP_NET_ADMIN, CAP_NET_RAW, CAP_CHOWN])
        );
        let namespaced =
            Config::from_toml("[[port]]\nname = \"a\"\nnetns = \"n\"", "test").unwrap();
        assert_eq!(
            namespaced.runtime_capabilities(),
            CapSet::of(&[CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN, CAP_CHOWN])
        );
        let strict = Config::from_toml(
            "[switch]\nnetns_hotplug = false\nvm_hotplug = false\nuser = \"nobody\"\n\
             [[port]]\nname = \"a\"\nnetns = \"n\"",
            "test",
        )
        .unwrap();
        assert_eq!(
            strict.runtime_capabilities(),
            CapSet::of(&[CAP_NET_ADMIN, CAP_NET_RAW])
        );
        let again = toml::to_string(&strict).unwrap();
        assert_eq!(Config::from_toml(&again, "again").unwrap(), strict);
        let cases = [
            ("[switch]\nuser = \"\"", "switch.user"),
            (
                "[switch]\nuser = \"nobody\"\ndrop_privileges = false",
                "switch.user: needs drop_privileges",
            ),
            (
                "[switch]\ngroup = \"nogroup\"",
                "switch.group: needs switch.user",
            ),
        ];
        for (text, expected) in cases {
            let err = Config::from_toml(text, "test").unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn one_validation_per_concern_whatever_the_entry_point() {
        let config = Config::from_toml(FEATURES, "test").unwrap();
        let access = &config.ports[0];
        let file = |extra: &str| {
            Config::from_toml(&format!("[[port]]\nname = \"p1\"\n{extra}"), "test")
                .map(drop)
                .map_err(|e| e.to_string())
        };
        let set = |pairs: &[(&str, &str)]| {
            access
                .with_runtime_settings(&settings(pairs))
                .map(drop)
                .map_err(|e| e.to_string())
        };
        // A TAP's largest MTU is 65521, from the file and from `port set` alike.
        assert!(file("mtu = 65521").is_ok());
        assert!(set(&[("mtu", "65521")]).is_ok());
        for result in [file("mtu = 65535"), set(&[("mtu", "65535")])] {
            let err = result.unwrap_err();
            assert!(err.contains("65535 is outside 68..=65521"), "{err}");
        }
        // The zero MAC is nobody's address.
        for result in [
            file("mac = \"00:00:00:00:00:00\""),
            set(&[("mac", "00:00:00:00:00:00")]),
            "tap1"
                .parse::<PortConfig>()
                .and_then(|mut port| {
                    port.tap_mut().unwrap().mac = Some(MacAddr([0; 6]));
                    port.validate("--port tap1").map(|()| port)
                })
                .map(drop)
                .map_err(|e| e.to_string()),
        ] {
            let err = result.unwrap_err();
            assert!(err.contains("(all zeros)"), "{err}");
        }
        assert!(validate_station_mac(MacAddr([2, 0, 0, 0, 0, 1])).is_ok());
        assert!(validate_station_mac(MacAddr([1, 0, 0x5e, 0, 0, 1])).is_err());
        // Bad values are explained in words, never by Rust type names.
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("storm_control", "100")], "broadcast_pps = 100"),
            (&[("storm_control", "fast")], "broadcast_pps = 100"),
            (
                &[
                    ("vlan_mode", "trunk"),
                    ("vlan", "none"),
                    ("allowed_vlans", "[true]"),
                ],
                "a VLAN id (10) or a range",
            ),
        ];
        for (pairs, expected) in cases {
            let err = set(pairs).unwrap_err();
            assert!(err.contains(expected), "{pairs:?}: {err}");
            for type_name in ["struct", "enum", "StormControlConfig", "VlanSpec"] {
                assert!(!err.contains(type_name), "{pairs:?}: {err}");
            }
        }
        let err = Config::from_toml("[switch.mac_flap]\nmoves = 1", "test")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("MacFlapSettings"), "{err}");
        let err = Config::from_toml("port = 5", "test")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("PortConfig"), "{err}");
    }

    #[test]
    fn owners_are_names_or_numbers() {
        let config = Config::from_toml(
            "[[port]]\nname = \"a\"\nowner = \"root\"\ngroup = \"root\"\n\
             [[port]]\nname = \"b\"\nowner = 64055\ngroup = \"64055\"",
            "test",
        )
        .unwrap();
        assert_eq!(
            (config.ports[0].owner(), config.ports[0].group()),
            (Some(0), Some(0))
        );
        assert_eq!(
            (config.ports[1].owner(), config.ports[1].group()),
            (Some(64055), Some(64055))
        );
        // Written back as numbers, which read back the same.
        let again = toml::to_string(&config).unwrap();
        assert_eq!(Config::from_toml(&again, "again").unwrap(), config);
        for (extra, expected) in [
            (
                "owner = \"no-such-user-x\"",
                "no user named \"no-such-user-x\"",
            ),
            (
                "group = \"no-such-group-x\"",
                "no group named \"no-such-group-x\"",
            ),
            ("owner = true", "a name or a number"),
        ] {
            let err = Config::from_toml(&format!("[[port]]\nname = \"a\"\n{extra}"), "test")
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{extra}: {err}");
        }
    }

    #[test]
    fn the_mac_table_size_is_bounded() {
        let capacity = |n: u64| {
            Config::from_toml(&format!("[switch]\nfdb_capacity = {n}"), "test")
                .map(|c| c.switch.fdb_capacity)
                .map_err(|e| e.to_string())
        };
        assert_eq!(capacity(MAX_FDB_CAPACITY as u64), Ok(MAX_FDB_CAPACITY));
        for n in [0, MAX_FDB_CAPACITY as u64 + 1, 99_999_999_999] {
            let err = capacity(n).unwrap_err();
            assert!(
                err.contains(&format!("switch.fdb_capacity: {n} is outside 1..=1048576")),
                "{err}"
            );
        }
    }

    #[test]
    fn an_adopted_port_changes_nothing_of_its_device() {
        let port = |extra: &str| {
            Config::from_toml(
                &format!("[[port]]\nname = \"a\"\nadopt = true\n{extra}"),
                "test",
            )
            .map_err(|e| e.to_string())
        };
        let plain = port("").unwrap();
        assert!(plain.ports[0].adopted());
        assert!(port("offloads = false\nqueues = 2\nmtu = 9000").is_ok());
        for (extra, expected) in [
            (
                "persistent = true",
                "port[0].persistent: not with adopt = true",
            ),
            ("owner = 0", "port[0].owner: not with adopt = true"),
            ("group = 0", "port[0].group: not with adopt = true"),
            ("vm = \"d\"", "port[0].vm: not with adopt = true"),
        ] {
            let err = port(extra).unwrap_err();
            assert!(err.contains(expected), "{extra}: {err}");
        }
        // Not a runtime setting: it decides which device the port is.
        let err = PortConfig::named("a")
            .with_runtime_settings(&settings(&[("adopt", "true")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("adopt: cannot change on a running port"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml("[[port]]\nname = \"a\"\nmtuu = 1500", "test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mtuu"), "{err}");
    }
}
