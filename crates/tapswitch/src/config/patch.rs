//! `port set`: a typed change to a running port ([`PortPatch`]). The keys a running port
//! can change are the fields of [`PortPatch`], declared once in [`port_patch!`], and the
//! keys of a `[[port]]` table are read off [`PortConfig`]'s own `Deserialize`, so neither
//! list is kept by hand next to the struct it describes.

use serde::Deserialize;
use serde::de::{self, Visitor};

use super::{
    ConfigError, MacAddr, PortConfig, PortSettings, StormControlConfig, VlanModeName, VlanSpec,
    default_enabled, default_mtu, invalid, yes,
};
use crate::policy::ViolationAction;

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

/// Every key of a `[[port]]` table: the fields of [`PortConfig`].
pub fn port_keys() -> &'static [&'static str] {
    field_names::<PortConfig>()
}

/// The keys of a `[[port]]` table that only deleting and adding the port again can
/// change: they shape the TAP itself (its name, namespace, queues, owner, vnet header,
/// who created it) or the VM device stacked on it. A test checks that every key of
/// [`PortConfig`] is here or in [`PortPatch::KEYS`], and none in both.
pub const FIXED_AT_CREATION: &[&str] = &[
    "name",
    "kind",
    "device",
    "vni",
    "local",
    "udp_port",
    "remotes",
    "netns",
    "persistent",
    "adopt",
    "offloads",
    "queues",
    "owner",
    "group",
    "vm",
    "vm_mode",
    "vm_mac",
    "vm_queues",
    "vm_device",
];

/// A field of the patch: given (`Some`) even when its value is `null`, which returns
/// the key to its default; serde's own `Option` would read `null` as not given.
fn given<'de, D: de::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// The new value of a patched field: `value` itself for a key whose `[[port]]` value is
/// optional, `value` or `reset` (the default of an absent key) for one that is not.
macro_rules! patched_value {
    ($value:expr) => {
        $value
    };
    ($value:expr, $reset:expr) => {
        $value.unwrap_or_else(|| $reset)
    };
}

/// Declares each runtime-settable key of a `[[port]]` table once, with the type of its
/// value and, for a key that is not optional in [`PortConfig`], the default `null`
/// returns it to; generates [`PortPatch`], its key list and the code applying it.
macro_rules! port_patch {
    ($($field:ident: $ty:ty $(= $reset:expr)?),* $(,)?) => {
        /// A change to a running port (`port set`): each field is a `[[port]]` key,
        /// `None` when not given, `Some(None)` when given as `null` (back to its default).
        #[derive(Clone, Debug, Default, Deserialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        pub struct PortPatch {
            $(
                #[serde(default, deserialize_with = "given")]
                pub $field: Option<Option<$ty>>,
            )*
        }

        impl PortPatch {
            /// The keys a running port can change: the fields of this struct.
            pub const KEYS: &[&str] = &[$(stringify!($field)),*];

            /// `port` with the given fields replaced, unchecked.
            fn apply_to(&self, port: &mut PortConfig) {
                $(
                    if let Some(value) = &self.$field {
                        port.$field = patched_value!(value.clone() $(, $reset)?);
                    }
                )*
            }
        }
    };
}

port_patch! {
    mtu: u32 = default_mtu(),
    mac: MacAddr,
    txqueuelen: u32,
    vlan_mode: VlanModeName,
    vlan: i64,
    allowed_vlans: Vec<VlanSpec>,
    native_vlan: i64,
    mac_limit: u32,
    mac_limit_action: ViolationAction,
    sticky_macs: bool = false,
    allowed_macs: Vec<MacAddr>,
    bind_mac: bool = false,
    storm_control: StormControlConfig,
    isolated: bool = false,
    flood_unknown_unicast: bool = yes(),
    flood_multicast: bool = yes(),
    flood_broadcast: bool = yes(),
    enabled: bool = default_enabled(),
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

impl PortConfig {
    /// This port with `patch` applied, checked as a whole by the same rules as the config
    /// file; errors name the port and the key. `self` is left as it is either way.
    pub fn patched(&self, patch: &PortPatch) -> Result<PortConfig, ConfigError> {
        let mut port = self.clone();
        patch.apply_to(&mut port);
        port.validate_keys("")
            .and_then(|()| port.validate_policy("policy"))
            .map_err(|source| ConfigError::Port {
                port: self.name.clone(),
                source: Box::new(source),
            })?;
        Ok(port)
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
    fn null_returns_a_key_to_its_default_and_absent_leaves_it() {
        let mut port = PortConfig::named("p1");
        port.mtu = 9000;
        port.enabled = false;
        port.flood_broadcast = false;
        port.mac_limit = Some(5);
        let settings = serde_json::json!({ "mtu": null, "enabled": null, "mac_limit": null });
        let serde_json::Value::Object(settings) = settings else {
            unreachable!()
        };
        let patch = PortPatch::from_settings("p1", &settings).unwrap();
        assert_eq!(patch.mtu, Some(None));
        assert_eq!(patch.flood_broadcast, None);
        let patched = port.patched(&patch).unwrap();
        assert_eq!(patched.mtu, default_mtu());
        assert!(patched.enabled);
        assert_eq!(patched.mac_limit, None);
        assert!(!patched.flood_broadcast, "a key not given stays");
    }
}
