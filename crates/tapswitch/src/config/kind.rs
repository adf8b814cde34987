//! `kind`: what a `[[port]]` is attached to — a TAP the switch holds (the default) or an
//! existing netdev it binds an `AF_PACKET` socket to (`kind = "netdev"`, `device = ...`).

use serde::{Deserialize, Serialize};

use super::{ConfigError, PortConfig, invalid};
use crate::sys::tap;

/// `kind` of a port.
#[derive(Copy, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    /// A TAP whose fd the switch holds (made, or re-attached, by the switch).
    #[default]
    Tap,
    /// An existing netdev (`device`) the switch did not create and never changes.
    Netdev,
}

impl PortKind {
    pub fn is_tap(&self) -> bool {
        *self == PortKind::Tap
    }
}

impl PortConfig {
    /// The netdev whose link notices concern this port: its TAP, or its `device`.
    pub fn link_name(&self) -> &str {
        match self.kind {
            PortKind::Tap => &self.name,
            PortKind::Netdev => self.device.as_deref().unwrap_or(&self.name),
        }
    }

    /// `kind` and `device` agree, and a netdev port has none of a TAP's keys: the switch
    /// neither makes nor changes that device.
    pub(super) fn validate_kind(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.kind == PortKind::Tap {
            if self.device.is_some() {
                return Err(invalid(
                    format!("{prefix}device"),
                    "only a kind = \"netdev\" port has a device (a TAP port's device is its name)",
                ));
            }
            return Ok(());
        }
        let Some(device) = &self.device else {
            return Err(invalid(
                format!("{prefix}device"),
                "a kind = \"netdev\" port needs the netdev it attaches to (device = \"eth1\")",
            ));
        };
        tap::validate_name(device)
            .map_err(|e| invalid(format!("{prefix}device"), e.to_string()))?;
        let not_for_netdev = "is a TAP setting; a netdev port leaves its device as it is \
                              (set it on the device itself)";
        let tap_only = [
            ("mac", self.mac.is_some()),
            ("persistent", self.persistent),
            ("adopt", self.adopt),
            ("offloads", self.offloads.is_some()),
            ("txqueuelen", self.txqueuelen.is_some()),
            ("queues", self.queues != 1),
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
                    format!("not with kind = \"netdev\": {key} {not_for_netdev}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, PortKind};

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
        assert_eq!(config.ports[0].kind, PortKind::Netdev);
        assert_eq!(config.ports[0].link_name(), "eth1");
        let config = parse("name = \"tap0\"").unwrap();
        assert_eq!(config.ports[0].kind, PortKind::Tap);
        assert_eq!(config.ports[0].link_name(), "tap0");
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
}
