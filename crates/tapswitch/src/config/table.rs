//! The `[[port]]` table as written: every key once, each present or not, in the order
//! `config show` writes them. It is the wire form of [`PortConfig`] (config files, the
//! control protocol, the state file) and the one place the keys are declared: the
//! runtime patch ([`PortPatch`]), its key list and [`FIXED_AT_CREATION`] are generated
//! from the same declaration, so no key list is kept by hand.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{
    ConfigError, DEFAULT_MTU, DeviceConfig, MacAddr, NetdevConfig, PolicyConfig, PortConfig,
    PortKind, StormControlConfig, TapConfig, VlanId, VlanModeName, VlanSpec, VmConfig, VmMode,
    VxlanConfig, group_id, invalid, kind::DEFAULT_VXLAN_MTU, user_id,
};
use crate::policy::ViolationAction;

/// A field of the patch: given (`Some`) even when its value is `null`, which returns
/// the key to its default; serde's own `Option` would read `null` as not given.
fn given<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// Sorts the keys of [`port_table!`] into the runtime ones (fields of [`PortPatch`]) and
/// those fixed at creation, then generates the patch, its keys and [`FIXED_AT_CREATION`].
macro_rules! port_patch {
    (@sort [$($runtime:ident: $ty:ty,)*] [$($fixed:ident,)*]) => {
        /// A change to a running port (`port set`): each field is a runtime key of a
        /// `[[port]]` table, `None` when not given, `Some(None)` when given as `null` (the
        /// key removed: back to what a table without it means).
        #[derive(Clone, Debug, Default, Deserialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        pub struct PortPatch {
            $(
                #[serde(default, deserialize_with = "given")]
                pub $runtime: Option<Option<$ty>>,
            )*
        }

        impl PortPatch {
            /// The keys a running port can change: the fields of this struct.
            pub const KEYS: &[&str] = &[$(stringify!($runtime)),*];

            /// `table` with the given keys replaced (or removed), unchecked.
            pub(super) fn apply_to(&self, table: &mut PortTable) {
                $(
                    if let Some(value) = &self.$runtime {
                        table.$runtime = value.clone();
                    }
                )*
            }
        }

        /// The keys of a `[[port]]` table that only deleting and adding the port again can
        /// change: they say what the port is (its name, kind, device or tunnel, namespace)
        /// or shape the TAP itself (queues, owner, vnet header, who created it) or the VM
        /// device stacked on it.
        pub const FIXED_AT_CREATION: &[&str] = &["name", $(stringify!($fixed)),*];

        /// What differs between two tables of a port: the patch that turns `old`'s
        /// runtime keys into `new`'s, those keys, and the keys fixed at creation that differ.
        pub(super) fn table_difference(old: &PortTable, new: &PortTable) -> super::PortDifference {
            let mut difference = super::PortDifference::default();
            if old.name != new.name {
                difference.fixed.push("name");
            }
            $(
                if old.$runtime != new.$runtime {
                    difference.patch.$runtime = Some(new.$runtime.clone());
                    difference.runtime.push(stringify!($runtime));
                }
            )*
            $(
                if old.$fixed != new.$fixed {
                    difference.fixed.push(stringify!($fixed));
                }
            )*
            difference
        }
    };
    (@sort [$($runtime:tt)*] [$($fixed:tt)*] runtime $key:ident: $ty:ty, $($rest:tt)*) => {
        port_patch!(@sort [$($runtime)* $key: $ty,] [$($fixed)*] $($rest)*);
    };
    (@sort [$($runtime:tt)*] [$($fixed:tt)*] fixed $key:ident: $ty:ty, $($rest:tt)*) => {
        port_patch!(@sort [$($runtime)*] [$($fixed)* $key,] $($rest)*);
    };
}

/// Declares [`PortTable`]: `name`, then each key with whether a running port can change
/// it (`runtime`) or not (`fixed`), and the type of its value.
macro_rules! port_table {
    ($($(#[$attr:meta])* $when:ident $key:ident: $ty:ty,)*) => {
        /// One `[[port]]` table, each key as written (absent: `None`). Converted to and
        /// from [`PortConfig`], which holds what the keys mean.
        #[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
        #[serde(deny_unknown_fields, expecting = "a table of port settings")]
        pub(super) struct PortTable {
            /// TAP interface name (at most 15 bytes); for other kinds, the port's name.
            pub(super) name: String,
            $(
                $(#[$attr])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub(super) $key: Option<$ty>,
            )*
        }

        port_patch!(@sort [] [] $($when $key: $ty,)*);
    };
}

port_table! {
    /// `tap` (the default), `netdev` or `vxlan`.
    fixed kind: PortKind,
    /// The existing netdev of a netdev port.
    fixed device: String,
    /// The VNI of a vxlan port carrying one segment.
    fixed vni: u32,
    /// A vxlan trunk's VLAN → VNI map (`{ 100 = 5000 }`; keys are VLAN numbers, as text
    /// because TOML and JSON keys are strings), instead of `vni`.
    fixed vlan_vni: BTreeMap<String, u32>,
    /// The local VTEP address of a vxlan port.
    fixed local: Ipv4Addr,
    /// The UDP port of a vxlan port (4789 when absent).
    fixed udp_port: u16,
    /// The remote VTEPs of a vxlan port.
    fixed remotes: Vec<Ipv4Addr>,
    fixed netns: String,
    runtime mtu: u32,
    runtime mac: MacAddr,
    fixed persistent: bool,
    fixed adopt: bool,
    fixed offloads: bool,
    runtime txqueuelen: u32,
    fixed queues: usize,
    /// A name (looked up when the table is read) or a number.
    #[serde(deserialize_with = "user_id")]
    fixed owner: u32,
    #[serde(deserialize_with = "group_id")]
    fixed group: u32,
    runtime vlan_mode: VlanModeName,
    runtime vlan: i64,
    runtime allowed_vlans: Vec<VlanSpec>,
    runtime native_vlan: i64,
    runtime mac_limit: u32,
    runtime mac_limit_action: ViolationAction,
    runtime sticky_macs: bool,
    runtime allowed_macs: Vec<MacAddr>,
    runtime bind_mac: bool,
    runtime storm_control: StormControlConfig,
    runtime isolated: bool,
    runtime flood_unknown_unicast: bool,
    runtime flood_multicast: bool,
    runtime flood_broadcast: bool,
    runtime enabled: bool,
    fixed vm: String,
    fixed vm_mode: VmMode,
    fixed vm_mac: MacAddr,
    fixed vm_queues: u32,
    fixed vm_device: String,
}

impl PortTable {
    /// What these keys mean, or the first key that does not fit the port's kind;
    /// `prefix` comes before key names in errors (`port[2].`). Values are checked
    /// afterwards by [`PortConfig::validate`].
    pub(super) fn into_port(self, prefix: &str) -> Result<PortConfig, ConfigError> {
        let kind = self.kind.unwrap_or_default();
        if kind != PortKind::Vxlan {
            let vxlan_only = [
                ("vni", self.vni.is_some()),
                ("vlan_vni", self.vlan_vni.is_some()),
                ("local", self.local.is_some()),
                ("udp_port", self.udp_port.is_some()),
                ("remotes", self.remotes.is_some()),
            ];
            if let Some((key, _)) = vxlan_only.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    format!("{prefix}{key}"),
                    "only a kind = \"vxlan\" port has a vni, vlan_vni, local, udp_port or remotes",
                ));
            }
        }
        let device = match kind {
            PortKind::Tap => {
                if self.device.is_some() {
                    return Err(invalid(
                        format!("{prefix}device"),
                        "only a kind = \"netdev\" port has a device (a TAP port's device is its name)",
                    ));
                }
                DeviceConfig::Tap(self.tap(prefix)?)
            }
            PortKind::Netdev => {
                let Some(device) = self.device.clone() else {
                    return Err(invalid(
                        format!("{prefix}device"),
                        "a kind = \"netdev\" port needs the netdev it attaches to (device = \"eth1\")",
                    ));
                };
                self.refuse_tap_keys(
                    prefix,
                    "netdev",
                    "a netdev port leaves its device as it is (set it on the device itself)",
                )?;
                DeviceConfig::Netdev(NetdevConfig { device })
            }
            PortKind::Vxlan => DeviceConfig::Vxlan(self.vxlan(prefix)?),
        };
        let default_mtu = match kind {
            PortKind::Vxlan => DEFAULT_VXLAN_MTU,
            PortKind::Tap | PortKind::Netdev => DEFAULT_MTU,
        };
        // A vxlan trunk whose table says nothing of VLANs carries exactly its mapped ones,
        // all tagged; a table that does say is checked against the map (`validate_kind`).
        let vlan_keys_absent = self.vlan_mode.is_none()
            && self.vlan.is_none()
            && self.allowed_vlans.is_none()
            && self.native_vlan.is_none();
        let (vlan_mode, allowed_vlans) = match &device {
            DeviceConfig::Vxlan(vxlan) if !vxlan.vlan_vni.is_empty() && vlan_keys_absent => (
                Some(VlanModeName::Trunk),
                Some(
                    vxlan
                        .vlan_vni
                        .keys()
                        .map(|vlan| VlanSpec::Id(i64::from(vlan.get())))
                        .collect(),
                ),
            ),
            _ => (self.vlan_mode, self.allowed_vlans),
        };
        Ok(PortConfig {
            name: self.name,
            netns: self.netns,
            device,
            mtu: self.mtu.unwrap_or(default_mtu),
            enabled: self.enabled.unwrap_or(true),
            policy: PolicyConfig {
                vlan_mode,
                vlan: self.vlan,
                allowed_vlans,
                native_vlan: self.native_vlan,
                mac_limit: self.mac_limit,
                mac_limit_action: self.mac_limit_action,
                sticky_macs: self.sticky_macs.unwrap_or(false),
                allowed_macs: self.allowed_macs,
                bind_mac: self.bind_mac.unwrap_or(false),
                storm_control: self.storm_control,
                isolated: self.isolated.unwrap_or(false),
                flood_unknown_unicast: self.flood_unknown_unicast.unwrap_or(true),
                flood_multicast: self.flood_multicast.unwrap_or(true),
                flood_broadcast: self.flood_broadcast.unwrap_or(true),
            },
        })
    }

    /// A TAP port's shape; the `vm_*` keys only with `vm`.
    fn tap(&self, prefix: &str) -> Result<TapConfig, ConfigError> {
        let vm = match &self.vm {
            Some(domain) => Some(VmConfig {
                domain: domain.clone(),
                mode: self.vm_mode,
                mac: self.vm_mac,
                queues: self.vm_queues,
                device: self.vm_device.clone(),
            }),
            None => {
                for (key, set) in [
                    ("vm_mode", self.vm_mode.is_some()),
                    ("vm_mac", self.vm_mac.is_some()),
                    ("vm_queues", self.vm_queues.is_some()),
                    ("vm_device", self.vm_device.is_some()),
                ] {
                    if set {
                        return Err(invalid(
                            format!("{prefix}{key}"),
                            "only for a VM port (set vm = \"DOMAIN\")",
                        ));
                    }
                }
                None
            }
        };
        Ok(TapConfig {
            mac: self.mac,
            txqueuelen: self.txqueuelen,
            persistent: self.persistent.unwrap_or(false),
            adopt: self.adopt.unwrap_or(false),
            offloads: self.offloads,
            queues: self.queues.unwrap_or(1),
            owner: self.owner,
            group: self.group,
            vm,
        })
    }

    /// A vxlan port has a VNI, a local address and a flood list, no device and no TAP keys.
    fn vxlan(&self, prefix: &str) -> Result<VxlanConfig, ConfigError> {
        if self.device.is_some() {
            return Err(invalid(
                format!("{prefix}device"),
                "a kind = \"vxlan\" port has no device: its frames travel in UDP from `local`",
            ));
        }
        let vlan_vni = self.vlan_vni(prefix)?;
        match (self.vni, vlan_vni.is_empty()) {
            (None, true) => {
                return Err(invalid(
                    format!("{prefix}vni"),
                    format!(
                        "a kind = \"vxlan\" port needs its VNI (vni = 1..={}), or for a trunk \
                         its VLANs' VNIs (vlan_vni = {{ 100 = 5000, 200 = 5001 }})",
                        super::kind::MAX_VNI
                    ),
                ));
            }
            (Some(_), false) => {
                return Err(invalid(
                    format!("{prefix}vlan_vni"),
                    "a vxlan port has either one vni or a vlan_vni map (a trunk), not both",
                ));
            }
            _ => {}
        }
        let Some(local) = self.local else {
            return Err(invalid(
                format!("{prefix}local"),
                "a kind = \"vxlan\" port needs its local VTEP address (local = \"192.0.2.1\"), \
                 an IPv4 address of its namespace",
            ));
        };
        let Some(remotes) = self.remotes.clone() else {
            return Err(invalid(
                format!("{prefix}remotes"),
                "a kind = \"vxlan\" port needs its remote VTEPs (remotes = [\"192.0.2.2\"]): \
                 broadcast, multicast and unknown unicast go to each",
            ));
        };
        self.refuse_tap_keys(
            prefix,
            "vxlan",
            "a vxlan port has no netdev (its frames travel in UDP)",
        )?;
        Ok(VxlanConfig {
            vni: self.vni,
            vlan_vni,
            local,
            udp_port: self.udp_port,
            remotes,
        })
    }

    /// `vlan_vni` with its keys read as VLANs (empty when absent); `{}` is refused, as a
    /// trunk that carries nothing.
    fn vlan_vni(&self, prefix: &str) -> Result<BTreeMap<VlanId, u32>, ConfigError> {
        let Some(map) = &self.vlan_vni else {
            return Ok(BTreeMap::new());
        };
        if map.is_empty() {
            return Err(invalid(
                format!("{prefix}vlan_vni"),
                "is empty: a vxlan trunk maps at least one VLAN to a VNI ({ 100 = 5000 })",
            ));
        }
        let mut vlan_vni = BTreeMap::new();
        for (vlan, &vni) in map {
            let id = vlan
                .trim()
                .parse::<i64>()
                .map_err(|_| format!("{vlan:?} is not a VLAN number (1..=4094)"))
                .and_then(VlanId::try_from)
                .map_err(|reason| invalid(format!("{prefix}vlan_vni"), reason))?;
            if vlan_vni.insert(id, vni).is_some() {
                return Err(invalid(
                    format!("{prefix}vlan_vni"),
                    format!("VLAN {} is mapped twice", id.get()),
                ));
            }
        }
        Ok(vlan_vni)
    }

    /// Refuses, by name, the first TAP key set on a port of `kind`. `persistent = false`
    /// and `queues = 1` are what every port table says (`config show` writes them).
    fn refuse_tap_keys(&self, prefix: &str, kind: &str, why: &str) -> Result<(), ConfigError> {
        let tap_only = [
            ("mac", self.mac.is_some()),
            ("persistent", self.persistent == Some(true)),
            ("adopt", self.adopt == Some(true)),
            ("offloads", self.offloads.is_some()),
            ("txqueuelen", self.txqueuelen.is_some()),
            ("queues", self.queues.is_some_and(|queues| queues != 1)),
            ("owner", self.owner.is_some()),
            ("group", self.group.is_some()),
            ("vm", self.vm.is_some()),
            ("vm_mode", self.vm_mode.is_some()),
            ("vm_mac", self.vm_mac.is_some()),
            ("vm_queues", self.vm_queues.is_some()),
            ("vm_device", self.vm_device.is_some()),
        ];
        for (key, set) in tap_only {
            if set {
                return Err(invalid(
                    format!("{prefix}{key}"),
                    format!("not with kind = \"{kind}\": {key} is a TAP setting; {why}"),
                ));
            }
        }
        Ok(())
    }
}

/// Written as before the model was nested: `mtu`, `persistent`, `queues` and `enabled`
/// always, every other key only when it says something a table without it does not.
impl From<PortConfig> for PortTable {
    fn from(port: PortConfig) -> Self {
        let PortConfig {
            name,
            netns,
            device,
            mtu,
            enabled,
            policy,
        } = port;
        let mut table = PortTable {
            name,
            kind: (device.kind() != PortKind::Tap).then_some(device.kind()),
            netns,
            mtu: Some(mtu),
            persistent: Some(false),
            queues: Some(1),
            enabled: Some(enabled),
            vlan_mode: policy.vlan_mode,
            vlan: policy.vlan,
            allowed_vlans: policy.allowed_vlans,
            native_vlan: policy.native_vlan,
            mac_limit: policy.mac_limit,
            mac_limit_action: policy.mac_limit_action,
            sticky_macs: policy.sticky_macs.then_some(true),
            allowed_macs: policy.allowed_macs,
            bind_mac: policy.bind_mac.then_some(true),
            storm_control: policy.storm_control,
            isolated: policy.isolated.then_some(true),
            flood_unknown_unicast: (!policy.flood_unknown_unicast).then_some(false),
            flood_multicast: (!policy.flood_multicast).then_some(false),
            flood_broadcast: (!policy.flood_broadcast).then_some(false),
            ..PortTable::default()
        };
        match device {
            DeviceConfig::Tap(tap) => {
                table.mac = tap.mac;
                table.txqueuelen = tap.txqueuelen;
                table.persistent = Some(tap.persistent);
                table.adopt = tap.adopt.then_some(true);
                table.offloads = tap.offloads;
                table.queues = Some(tap.queues);
                table.owner = tap.owner;
                table.group = tap.group;
                if let Some(vm) = tap.vm {
                    table.vm = Some(vm.domain);
                    table.vm_mode = vm.mode;
                    table.vm_mac = vm.mac;
                    table.vm_queues = vm.queues;
                    table.vm_device = vm.device;
                }
            }
            DeviceConfig::Netdev(netdev) => table.device = Some(netdev.device),
            DeviceConfig::Vxlan(vxlan) => {
                table.vni = vxlan.vni;
                table.vlan_vni = (!vxlan.vlan_vni.is_empty()).then(|| {
                    vxlan
                        .vlan_vni
                        .iter()
                        .map(|(vlan, &vni)| (vlan.get().to_string(), vni))
                        .collect()
                });
                table.local = Some(vxlan.local);
                table.udp_port = vxlan.udp_port;
                table.remotes = Some(vxlan.remotes);
            }
        }
        table
    }
}

/// A port read from JSON (the control protocol, the state file) outside a file: errors
/// name its keys as `port.KEY`, as `port add` does.
impl TryFrom<PortTable> for PortConfig {
    type Error = ConfigError;

    fn try_from(table: PortTable) -> Result<Self, Self::Error> {
        table.into_port("port.")
    }
}

/// `[[port]]` tables of a config file, each read as a [`PortConfig`] with its place in
/// the file (`port[2].`) in errors.
pub(super) fn port_list<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<PortConfig>, D::Error> {
    Vec::<PortTable>::deserialize(deserializer)?
        .into_iter()
        .enumerate()
        .map(|(index, table)| table.into_port(&format!("port[{index}].")))
        .collect::<Result<_, _>>()
        .map_err(serde::de::Error::custom)
}
