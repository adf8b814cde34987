//! `kind`: what a `[[port]]` is attached to — a TAP the switch holds (the default), an
//! existing netdev it binds an `AF_PACKET` socket to (`kind = "netdev"`, `device = ...`),
//! or a VXLAN tunnel to remote VTEPs (`kind = "vxlan"`, `vni`, `local`, `remotes`).

use std::net::SocketAddrV4;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    ConfigError, DeviceConfig, PortConfig, SwitchConfig, VlanModeName, VxlanConfig, invalid,
};
use crate::port::vxlan::VxlanSettings;
use crate::sys::tap;

/// The UDP port of a vxlan port without `udp_port` (IANA's VXLAN port).
pub const DEFAULT_VXLAN_UDP_PORT: u16 = 4789;

/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// The inner MTU of a vxlan port without `mtu`: a 1500-byte underlay less the 50 bytes of
/// outer IPv4, UDP and VXLAN headers and inner Ethernet header.
pub const DEFAULT_VXLAN_MTU: u32 = 1450;

/// `kind` of a port: which [`super::DeviceConfig`] its table describes.
#[derive(Copy, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    /// A TAP whose fd the switch holds (made, or re-attached, by the switch).
    #[default]
    Tap,
    /// An existing netdev (`device`) the switch did not create and never changes.
    Netdev,
    /// A VXLAN tunnel: UDP sockets on `local`, frames of `vni` to and from `remotes`.
    Vxlan,
}

impl PortKind {
    pub fn is_tap(&self) -> bool {
        *self == PortKind::Tap
    }
}

impl PortConfig {
    /// The netdev whose link notices concern this port: its TAP, or its `device`; a
    /// vxlan port has none (its sockets carry frames whatever the underlay's links do).
    pub fn link_name(&self) -> Option<&str> {
        match &self.device {
            DeviceConfig::Tap(_) => Some(&self.name),
            DeviceConfig::Netdev(netdev) => Some(&netdev.device),
            DeviceConfig::Vxlan(_) => None,
        }
    }

    /// What a vxlan port is made of (`None` for another kind).
    pub fn vxlan_settings(&self, switch: &SwitchConfig) -> Option<VxlanSettings> {
        let DeviceConfig::Vxlan(vxlan) = &self.device else {
            return None;
        };
        Some(VxlanSettings {
            name: self.name.clone(),
            vni: vxlan.vni,
            vlan_vni: vxlan
                .vlan_vni
                .iter()
                .map(|(vlan, &vni)| (vlan.get(), vni))
                .collect(),
            local: SocketAddrV4::new(
                vxlan.local,
                vxlan.udp_port.unwrap_or(DEFAULT_VXLAN_UDP_PORT),
            ),
            remotes: vxlan.remotes.clone(),
            ageing: Duration::from_secs(switch.fdb_ageing_secs),
        })
    }

    /// The values of the kind's own keys: a netdev port's `device` is an interface name;
    /// a vxlan port's VNI fits 24 bits, its addresses are unicast and the remotes are not
    /// itself. Which keys each kind has is the shape of [`DeviceConfig`].
    pub(super) fn validate_kind(&self, prefix: &str) -> Result<(), ConfigError> {
        match &self.device {
            DeviceConfig::Tap(_) => Ok(()),
            DeviceConfig::Netdev(netdev) => tap::validate_name(&netdev.device)
                .map_err(|e| invalid(format!("{prefix}device"), e.to_string())),
            DeviceConfig::Vxlan(vxlan) => {
                vxlan.validate(prefix)?;
                self.validate_vxlan_trunk(vxlan, prefix)
            }
        }
    }

    /// A vxlan trunk's frames carry their VLAN as their VNI: the port is a trunk of
    /// exactly the mapped VLANs, with no native VLAN (an untagged frame has no VNI).
    fn validate_vxlan_trunk(&self, vxlan: &VxlanConfig, prefix: &str) -> Result<(), ConfigError> {
        if vxlan.vlan_vni.is_empty() {
            return Ok(());
        }
        let policy = &self.policy;
        let mapped: Vec<String> = vxlan
            .vlan_vni
            .keys()
            .map(|vlan| vlan.get().to_string())
            .collect();
        let mapped = mapped.join(", ");
        if policy.vlan_mode != Some(VlanModeName::Trunk) {
            return Err(invalid(
                format!("{prefix}vlan_mode"),
                format!(
                    "a vxlan port with vlan_vni is a trunk of its mapped VLANs ({mapped}): \
                     leave vlan_mode out or say \"trunk\""
                ),
            ));
        }
        if policy.native_vlan.is_some() {
            return Err(invalid(
                format!("{prefix}native_vlan"),
                "a vxlan trunk has no native VLAN: an untagged frame would have no VNI to \
                 travel in (map that VLAN in vlan_vni instead)",
            ));
        }
        let mut allowed = std::collections::BTreeSet::new();
        for spec in policy.allowed_vlans.iter().flatten() {
            if let Ok((first, last)) = spec.range() {
                allowed.extend(first..=last);
            }
        }
        if let Some(vlan) = vxlan
            .vlan_vni
            .keys()
            .find(|vlan| !allowed.contains(&vlan.get()))
        {
            return Err(invalid(
                format!("{prefix}allowed_vlans"),
                format!(
                    "leaves out VLAN {}, which vlan_vni maps to VNI {}: a vxlan trunk carries \
                     exactly its mapped VLANs ({mapped})",
                    vlan.get(),
                    vxlan.vlan_vni[vlan]
                ),
            ));
        }
        if let Some(vlan) = allowed
            .iter()
            .find(|&&vlan| !vxlan.vlan_vni.keys().any(|mapped| mapped.get() == vlan))
        {
            return Err(invalid(
                format!("{prefix}allowed_vlans"),
                format!(
                    "has VLAN {vlan}, which vlan_vni does not map to a VNI: a vxlan trunk \
                     carries exactly its mapped VLANs ({mapped})"
                ),
            ));
        }
        Ok(())
    }
}

impl VxlanConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if let Some(vni) = self.vni
            && !(1..=MAX_VNI).contains(&vni)
        {
            return Err(invalid(
                format!("{prefix}vni"),
                format!("{vni} is outside 1..={MAX_VNI}"),
            ));
        }
        let mut vlan_of = std::collections::BTreeMap::new();
        for (vlan, &vni) in &self.vlan_vni {
            if !(1..=MAX_VNI).contains(&vni) {
                return Err(invalid(
                    format!("{prefix}vlan_vni"),
                    format!("VLAN {}: VNI {vni} is outside 1..={MAX_VNI}", vlan.get()),
                ));
            }
            if let Some(other) = vlan_of.insert(vni, vlan.get()) {
                return Err(invalid(
                    format!("{prefix}vlan_vni"),
                    format!(
                        "VLANs {other} and {} both map to VNI {vni}: each VNI is one segment, \
                         so one VLAN",
                        vlan.get()
                    ),
                ));
            }
        }
        let local = self.local;
        if local.is_unspecified() || local.is_multicast() || local.is_broadcast() {
            return Err(invalid(
                format!("{prefix}local"),
                format!("{local} is not a unicast address this host can send from"),
            ));
        }
        if self.udp_port == Some(0) {
            return Err(invalid(
                format!("{prefix}udp_port"),
                "must be 1..=65535 (4789 when left out)",
            ));
        }
        for (i, remote) in self.remotes.iter().enumerate() {
            if remote.is_unspecified()
                || remote.is_multicast()
                || remote.is_broadcast()
                || *remote == local
            {
                return Err(invalid(
                    format!("{prefix}remotes[{i}]"),
                    format!("{remote} is not a remote unicast VTEP address"),
                ));
            }
            // Head-end replication sends one copy per entry: a repeated remote would get
            // every flood twice.
            if self.remotes[..i].contains(remote) {
                return Err(invalid(
                    format!("{prefix}remotes[{i}]"),
                    format!("{remote} is listed twice (each remote gets one copy of every flood)"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::{DEFAULT_VXLAN_MTU, DEFAULT_VXLAN_UDP_PORT};
    use crate::config::{Config, PortKind};

    const VXLAN: &str = "name = \"vx0\"\nkind = \"vxlan\"\nvni = 42\nlocal = \"10.0.0.1\"\n\
                         remotes = [\"10.0.0.2\", \"10.0.0.3\"]";

    fn parse(port: &str) -> Result<Config, String> {
        let config =
            Config::from_toml(&format!("[[port]]\n{port}\n"), "test").map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn a_netdev_port_names_its_device_and_kind_defaults_to_tap() {
        let config =
            parse("name = \"up0\"\nkind = \"netdev\"\ndevice = \"eth1\"\nnetns = \"a\"").unwrap();
        assert_eq!(config.ports[0].kind(), PortKind::Netdev);
        assert_eq!(config.ports[0].link_name(), Some("eth1"));
        let config = parse("name = \"tap0\"").unwrap();
        assert_eq!(config.ports[0].kind(), PortKind::Tap);
        assert_eq!(config.ports[0].link_name(), Some("tap0"));
    }

    #[test]
    fn a_netdev_port_without_a_device_or_a_tap_with_one_is_refused() {
        let error = parse("name = \"up0\"\nkind = \"netdev\"").unwrap_err();
        assert!(
            error.contains("device") && error.contains("needs the netdev"),
            "{error}"
        );
        let error = parse("name = \"tap0\"\ndevice = \"eth1\"").unwrap_err();
        assert!(
            error.contains("only a kind = \"netdev\" port has a device"),
            "{error}"
        );
        let error = parse("name = \"up0\"\nkind = \"netdev\"\ndevice = \"bad name\"").unwrap_err();
        assert!(error.contains("device"), "{error}");
        let error = parse("name = \"up0\"\nkind = \"vlan\"\ndevice = \"eth1\"").unwrap_err();
        assert!(error.contains("netdev"), "{error}");
    }

    #[test]
    fn tap_settings_on_a_netdev_port_are_refused_by_name() {
        for key in [
            "mac = \"02:00:00:00:00:01\"",
            "persistent = true",
            "adopt = true",
            "offloads = false",
            "txqueuelen = 10",
            "queues = 2",
            "owner = 0",
            "vm = \"guest\"",
        ] {
            let error = parse(&format!(
                "name = \"up0\"\nkind = \"netdev\"\ndevice = \"eth1\"\n{key}"
            ))
            .unwrap_err();
            let name = key.split(' ').next().unwrap();
            assert!(
                error.contains(&format!("{name}: not with kind = \"netdev\"")),
                "{key}: {error}"
            );
        }
    }

    #[test]
    fn a_vxlan_port_has_its_vni_local_address_remotes_and_defaults() {
        let config = parse(&format!("{VXLAN}\nnetns = \"under\"")).unwrap();
        let port = &config.ports[0];
        assert_eq!(port.kind(), PortKind::Vxlan);
        assert_eq!(port.link_name(), None);
        assert_eq!(port.mtu, DEFAULT_VXLAN_MTU);
        let settings = port.vxlan_settings(&config.switch).unwrap();
        assert_eq!(settings.vni, Some(42));
        assert_eq!(
            settings.local,
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), DEFAULT_VXLAN_UDP_PORT)
        );
        assert_eq!(
            settings.remotes,
            [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)]
        );
        let config = parse(&format!("{VXLAN}\nudp_port = 8472\nmtu = 8950")).unwrap();
        assert_eq!(config.ports[0].mtu, 8950);
        let settings = config.ports[0].vxlan_settings(&config.switch).unwrap();
        assert_eq!(settings.local.port(), 8472);
        let tap = parse("name = \"tap0\"").unwrap();
        assert_eq!(tap.ports[0].mtu, 1500);
        assert!(tap.ports[0].vxlan_settings(&tap.switch).is_none());
    }

    #[test]
    fn a_vxlan_port_missing_or_with_invalid_keys_is_refused_by_key() {
        let cases = [
            (
                "name = \"vx0\"\nkind = \"vxlan\"\nlocal = \"10.0.0.1\"\nremotes = []",
                "vni: a kind = \"vxlan\" port needs its VNI",
            ),
            (
                "name = \"vx0\"\nkind = \"vxlan\"\nvni = 0\nlocal = \"10.0.0.1\"\nremotes = []",
                "vni: 0 is outside 1..=16777215",
            ),
            (
                "name = \"vx0\"\nkind = \"vxlan\"\nvni = 16777216\nlocal = \"10.0.0.1\"\nremotes = []",
                "vni: 16777216 is outside 1..=16777215",
            ),
            (
                "name = \"vx0\"\nkind = \"vxlan\"\nvni = 1\nremotes = []",
                "local: a kind = \"vxlan\" port needs its local VTEP address",
            ),
            (
                "name = \"vx0\"\nkind = \"vxlan\"\nvni = 1\nlocal = \"0.0.0.0\"\nremotes = []",
                "local: 0.0.0.0 is not a unicast address",
            ),
            (
                "name = \"vx0\"\nkind = \"vxlan\"\nvni = 1\nlocal = \"10.0.0.1\"",
                "remotes: a kind = \"vxlan\" port needs its remote VTEPs",
            ),
            (
                "name = \"vx0\"\nkind = \"vxlan\"\nvni = 1\nlocal = \"10.0.0.1\"\n\
                 remotes = [\"10.0.0.2\", \"224.0.0.1\"]",
                "remotes[1]: 224.0.0.1 is not a remote unicast VTEP address",
            ),
            (
                "name = \"vx0\"\nkind = \"vxlan\"\nvni = 1\nlocal = \"10.0.0.1\"\n\
                 remotes = [\"10.0.0.1\"]",
                "remotes[0]: 10.0.0.1 is not a remote unicast VTEP address",
            ),
            (
                "name = \"vx0\"\nkind = \"vxlan\"\nvni = 1\nlocal = \"10.0.0.1\"\n\
                 remotes = [\"10.0.0.2\", \"10.0.0.3\", \"10.0.0.2\"]",
                "remotes[2]: 10.0.0.2 is listed twice",
            ),
            (
                &format!("{VXLAN}\nudp_port = 0"),
                "udp_port: must be 1..=65535",
            ),
            (
                &format!("{VXLAN}\ndevice = \"eth1\""),
                "device: a kind = \"vxlan\" port has no device",
            ),
            (
                "name = \"tap0\"\nvni = 5",
                "vni: only a kind = \"vxlan\" port",
            ),
            (
                "name = \"up0\"\nkind = \"netdev\"\ndevice = \"eth1\"\nremotes = [\"10.0.0.2\"]",
                "remotes: only a kind = \"vxlan\" port",
            ),
        ];
        for (port, expected) in cases {
            let error = parse(port).unwrap_err();
            assert!(error.contains(expected), "{port}: {error}");
        }
        let error =
            parse("name = \"vx0\"\nkind = \"vxlan\"\nvni = 1\nlocal = \"nope\"\nremotes = []")
                .unwrap_err();
        assert!(error.contains("local"), "{error}");
    }

    #[test]
    fn tap_settings_on_a_vxlan_port_are_refused_by_name() {
        for key in [
            "mac = \"02:00:00:00:00:01\"",
            "persistent = true",
            "offloads = false",
            "queues = 2",
            "vm = \"guest\"",
        ] {
            let error = parse(&format!("{VXLAN}\n{key}")).unwrap_err();
            let name = key.split(' ').next().unwrap();
            assert!(
                error.contains(&format!("{name}: not with kind = \"vxlan\"")),
                "{key}: {error}"
            );
        }
    }
}
