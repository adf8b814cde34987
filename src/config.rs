//! Switch configuration: the TOML file, the `NAME[@NETNS]` port syntax of the
//! command line, and the embedded default. Everything is validated as a whole
//! before anything is created, so a bad config never half-applies.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::tap;
use crate::wire::MacAddr;

/// The configuration `tapswitch run` uses when given neither `--config` nor
/// `--port`: three host-side ports ready to be given to endpoints.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// Smallest MTU the kernel accepts for an Ethernet device carrying IPv4.
pub const MIN_MTU: u32 = 68;
/// Largest MTU of a TAP (and of any frame the switch handles, jumbo included).
pub const MAX_MTU: u32 = 65535;

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
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The whole configuration of one switch.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub switch: SwitchConfig,
    #[serde(default, rename = "port")]
    pub ports: Vec<PortConfig>,
}

/// Switch-wide settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SwitchConfig {
    /// Seconds a learned MAC lives without being seen again.
    pub fdb_ageing_secs: u64,
    /// Total number of MAC table entries.
    pub fdb_capacity: usize,
    /// Default for ports that do not say: vnet header with checksum and
    /// segmentation offloads (64 KiB super-frames through the switch).
    pub offloads: bool,
    /// Frames read from one port before the loop turns to the next, so one
    /// busy port cannot starve the others.
    pub poll_budget: usize,
    /// Microseconds the loop keeps polling without sleeping after it last
    /// forwarded a frame. Trades CPU under load for request/response latency;
    /// 0 sleeps in epoll at once. An idle switch always sleeps.
    pub idle_poll_us: u64,
    /// Serve Prometheus metrics over HTTP here: `HOST:PORT`, or a bare `PORT`
    /// on the loopback address. Off when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        Self {
            fdb_ageing_secs: 300,
            fdb_capacity: 8192,
            offloads: true,
            poll_budget: 64,
            idle_poll_us: DEFAULT_IDLE_POLL_US,
            metrics: None,
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

/// Longer windows buy nothing and burn a core after every burst.
pub const MAX_IDLE_POLL_US: u64 = 10_000;

impl SwitchConfig {
    pub fn fdb_ageing(&self) -> Duration {
        Duration::from_secs(self.fdb_ageing_secs)
    }

    pub fn idle_poll(&self) -> Duration {
        Duration::from_micros(self.idle_poll_us)
    }
}

/// One port: a TAP whose fd the switch holds and whose netdev is the endpoint.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// TAP interface name (at most 15 bytes).
    pub name: String,
    /// Network namespace (as in `ip netns`) to move the netdev into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// MTU of the netdev; frames longer than this (plus Ethernet header and
    /// one VLAN tag) that are not segmentation-offload super-frames are dropped.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// MAC address of the netdev (the endpoint's MAC); kernel-chosen if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// Keep the TAP when the switch exits, to re-attach on restart.
    #[serde(default)]
    pub persistent: bool,
    /// Overrides `switch.offloads` for this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offloads: Option<bool>,
    /// Transmit queue length of the netdev (frames the kernel queues towards the switch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txqueuelen: Option<u32>,
    /// User and group allowed to attach to the TAP later (e.g. an unprivileged QEMU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<u32>,
    /// A disabled port keeps its TAP but neither receives nor sends frames.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
}

fn default_enabled() -> bool {
    true
}

fn default_mtu() -> u32 {
    1500
}

impl PortConfig {
    /// A port with every setting at its default.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            netns: None,
            mtu: default_mtu(),
            mac: None,
            persistent: false,
            offloads: None,
            txqueuelen: None,
            owner: None,
            group: None,
            enabled: true,
        }
    }

    /// Whether this port opens with a vnet header and offloads.
    pub fn offloads_enabled(&self, switch: &SwitchConfig) -> bool {
        self.offloads.unwrap_or(switch.offloads)
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
        tap::validate_name(&self.name)
            .map_err(|e| invalid(format!("{field}.name"), e.to_string()))?;
        if let Some(netns) = &self.netns {
            validate_netns_name(netns)
                .map_err(|reason| invalid(format!("{field}.netns"), reason))?;
        }
        validate_mtu(self.mtu).map_err(|reason| invalid(format!("{field}.mtu"), reason))?;
        if let Some(mac) = self.mac
            && !mac.is_unicast()
        {
            return Err(invalid(
                format!("{field}.mac"),
                format!("{mac} is not a unicast address"),
            ));
        }
        if self.txqueuelen == Some(0) {
            return Err(invalid(format!("{field}.txqueuelen"), "must be at least 1"));
        }
        Ok(())
    }
}

/// The MTU range of a TAP netdev.
pub fn validate_mtu(mtu: u32) -> Result<(), String> {
    if (MIN_MTU..=MAX_MTU).contains(&mtu) {
        Ok(())
    } else {
        Err(format!("{mtu} is outside {MIN_MTU}..={MAX_MTU}"))
    }
}

/// Namespace names become paths under `/run/netns`: keep them to one plain component.
fn validate_netns_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty namespace name".into());
    }
    if name.len() > 255 || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(format!("{name:?} is not a valid namespace name"));
    }
    Ok(())
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
        if switch.fdb_capacity == 0 {
            return Err(invalid("switch.fdb_capacity", "must be at least 1"));
        }
        if switch.fdb_ageing_secs == 0 {
            return Err(invalid("switch.fdb_ageing_secs", "must be at least 1"));
        }
        if switch.poll_budget == 0 {
            return Err(invalid("switch.poll_budget", "must be at least 1"));
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
        if let Some(metrics) = &switch.metrics {
            parse_metrics_addr(metrics).map_err(|reason| invalid("switch.metrics", reason))?;
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
        Ok(())
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
            config.ports[0].mac,
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
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml("[[port]]\nname = \"a\"\nmtuu = 1500", "test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mtuu"), "{err}");
    }
}
