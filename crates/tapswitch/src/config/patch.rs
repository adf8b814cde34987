//! `port set`: a typed change to a running port ([`PortPatch`], generated with the
//! `[[port]]` table it patches in `table.rs`, where each key is declared once as runtime
//! or fixed at creation). A patch is applied to the port's table, which is then read
//! again like a file's, so a change is checked by the same rules and reaches the nested
//! model only through its one conversion.

use serde::Deserialize;
use serde::de::{self, Visitor};

use super::table::{FIXED_AT_CREATION, PortPatch, PortTable};
use super::{ConfigError, PortConfig, PortSettings, invalid};

/// The names of the fields `T`'s derived `Deserialize` reads, as it hands them to
/// `deserialize_struct` (after any `rename`).
fn field_names<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    /// A deserializer that only records the field list a struct asks for.
    struct Recorder(&'static [&'static str]);

    impl<'de> de::Deserializer<'de> for &mut Recorder {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(de::Error::custom("field names recorded"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut recorder = Recorder(&[]);
    // The error is the point: the recorder stops the struct before it reads anything.
    let _ = T::deserialize(&mut recorder);
    recorder.0
}

/// Every key of a `[[port]]` table, as its reader knows them.
pub fn port_keys() -> &'static [&'static str] {
    field_names::<PortTable>()
}

impl PortPatch {
    /// The patch `settings` (JSON, as `port_set` carries them) describe for the running
    /// port `port`. Errors name the port and the key: `port p1: netns: cannot change on
    /// a running port`, `port p1: mac_limit: invalid type: ...`.
    pub fn from_settings(port: &str, settings: &PortSettings) -> Result<Self, ConfigError> {
        let in_port = |source: ConfigError| ConfigError::Port {
            port: port.to_owned(),
            source: Box::new(source),
        };
        if let Some(key) = settings
            .keys()
            .find(|key| FIXED_AT_CREATION.contains(&key.as_str()))
        {
            return Err(in_port(invalid(
                key.clone(),
                "cannot change on a running port; delete the port and add it again",
            )));
        }
        for (key, value) in settings {
            if !Self::KEYS.contains(&key.as_str()) {
                return Err(in_port(invalid(
                    key.clone(),
                    format!("unknown setting; the keys are {}", port_keys().join(", ")),
                )));
            }
            // Read alone first, so that a value of the wrong type is blamed on its key.
            serde_json::from_value::<Self>(serde_json::json!({ key.as_str(): value }))
                .map_err(|e| in_port(invalid(key.clone(), e.to_string())))?;
        }
        serde_json::from_value(serde_json::Value::Object(settings.clone()))
            .map_err(|e| in_port(invalid("settings", e.to_string())))
    }

    /// Whether the patch gives `enabled` (even to the value the port has already).
    pub fn sets_enabled(&self) -> bool {
        self.enabled.is_some()
    }
}

/// How a port's new configuration differs from its running one (`tapswitch reload`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PortDifference {
    /// The change to the runtime keys, as `port set` would apply it.
    pub patch: PortPatch,
    /// The runtime keys that differ, in table order.
    pub runtime: Vec<&'static str>,
    /// The keys of [`FIXED_AT_CREATION`] that differ: only deleting and adding the port
    /// again changes them.
    pub fixed: Vec<&'static str>,
}

impl PortDifference {
    /// Nothing differs.
    pub fn is_empty(&self) -> bool {
        self.runtime.is_empty() && self.fixed.is_empty()
    }
}

impl PortConfig {
    /// What differs between this port and `new`, key by key of their `[[port]]` tables
    /// (so a key absent in one and set to its default in the other does not differ).
    pub fn difference(&self, new: &PortConfig) -> PortDifference {
        super::table::table_difference(
            &PortTable::from(self.clone()),
            &PortTable::from(new.clone()),
        )
    }

    /// This port with `patch` applied, checked as a whole by the same rules as the config
    /// file; errors name the port and the key. `self` is left as it is either way.
    pub fn patched(&self, patch: &PortPatch) -> Result<PortConfig, ConfigError> {
        let mut table = PortTable::from(self.clone());
        patch.apply_to(&mut table);
        table
            .into_port("")
            .and_then(|port| {
                port.validate_keys("")
                    .and_then(|()| port.validate_policy("policy"))
                    .map(|()| port)
            })
            .map_err(|source| ConfigError::Port {
                port: self.name.clone(),
                source: Box::new(source),
            })
    }

    /// Like [`Self::with_settings`] for a running port: only [`PortPatch::KEYS`] may change.
    pub fn with_runtime_settings(
        &self,
        settings: &PortSettings,
    ) -> Result<PortConfig, ConfigError> {
        self.patched(&PortPatch::from_settings(&self.name, settings)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_MTU, setting_value};

    #[test]
    fn every_port_key_is_patchable_or_fixed_at_creation() {
        let keys = port_keys();
        assert!(
            keys.contains(&"name") && keys.contains(&"vm_device"),
            "{keys:?}"
        );
        for key in keys {
            let patchable = PortPatch::KEYS.contains(key);
            let fixed = FIXED_AT_CREATION.contains(key);
            assert!(
                patchable != fixed,
                "{key}: patchable {patchable}, fixed at creation {fixed}"
            );
        }
        for key in PortPatch::KEYS.iter().chain(FIXED_AT_CREATION) {
            assert!(keys.contains(key), "{key} is not a key of a [[port]] table");
        }
    }

    #[test]
    fn every_patch_key_reaches_the_running_port() {
        // A value for each runtime key, different from a plain port's; each, applied
        // alone (with what it needs), is what the patched port's table then says.
        let values = [
            ("mtu", "9000"),
            ("mac", "02:00:00:00:00:07"),
            ("txqueuelen", "77"),
            ("vlan_mode", "access"),
            ("vlan", "5"),
            ("allowed_vlans", "[7]"),
            ("native_vlan", "3"),
            ("mac_limit", "9"),
            ("mac_limit_action", "shutdown"),
            ("sticky_macs", "true"),
            ("allowed_macs", "02:00:00:00:00:08"),
            ("bind_mac", "true"),
            ("storm_control", "broadcast_pps = 3"),
            ("isolated", "true"),
            ("flood_unknown_unicast", "false"),
            ("flood_multicast", "false"),
            ("flood_broadcast", "false"),
            ("enabled", "false"),
        ];
        let mut covered: Vec<&str> = values.iter().map(|(key, _)| *key).collect();
        covered.sort_unstable();
        let mut keys = PortPatch::KEYS.to_vec();
        keys.sort_unstable();
        assert_eq!(covered, keys, "a value for each key of the patch");
        let needs = |key: &str| -> &[(&str, &str)] {
            match key {
                "vlan" => &[("vlan_mode", "access")],
                "allowed_vlans" | "native_vlan" => &[("vlan_mode", "trunk")],
                "vlan_mode" => &[("vlan", "5")],
                "mac_limit_action" => &[("mac_limit", "9")],
                "bind_mac" => &[("mac", "02:00:00:00:00:07")],
                _ => &[],
            }
        };
        for (key, text) in values {
            let settings: PortSettings = [(key, text)]
                .iter()
                .chain(needs(key))
                .map(|(key, text)| ((*key).to_owned(), setting_value(key, text)))
                .collect();
            let patched = PortConfig::named("p1")
                .with_runtime_settings(&settings)
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            let table = serde_json::to_value(&patched).unwrap();
            assert_eq!(table[key], settings[key], "{key}");
        }
    }

    #[test]
    fn null_returns_a_key_to_its_default_and_absent_leaves_it() {
        let mut port = PortConfig::named("p1");
        port.mtu = 9000;
        port.enabled = false;
        port.policy.flood_broadcast = false;
        port.policy.mac_limit = Some(5);
        let settings = serde_json::json!({ "mtu": null, "enabled": null, "mac_limit": null });
        let serde_json::Value::Object(settings) = settings else {
            unreachable!()
        };
        let patch = PortPatch::from_settings("p1", &settings).unwrap();
        assert_eq!(patch.mtu, Some(None));
        assert_eq!(patch.flood_broadcast, None);
        let patched = port.patched(&patch).unwrap();
        assert_eq!(patched.mtu, DEFAULT_MTU);
        assert!(patched.enabled);
        assert_eq!(patched.policy.mac_limit, None);
        assert!(!patched.policy.flood_broadcast, "a key not given stays");
    }
}
