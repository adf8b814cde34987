//! Assembles a switch from a [`Config`]: creates each port's TAP, configures
//! its netdev over netlink, and hands the ports to a [`Dataplane`].
//!
//! A port bound to a namespace has its TAP created *inside* that namespace
//! (the `/dev/net/tun` open and `TUNSETIFF` run on a thread that entered it).
//! The result is the same as creating it here and moving the netdev, without a
//! transient device in our namespace, and a persistent TAP left in the
//! namespace by an earlier run is found and re-attached by name.

use std::collections::HashMap;

use thiserror::Error;
use tracing::info;

use crate::config::{Config, PortConfig, SwitchConfig};
use crate::dataplane::{Dataplane, DataplaneConfig, DataplaneError, DataplaneHandle, PortUpdate};
use crate::fdb::FdbConfig;
use crate::link::{LinkError, LinkSettings, Netlink};
use crate::netns::{self, NetnsError};
use crate::port::TapPort;
use crate::tap::{Tap, TapError, TapOptions};

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
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

/// Netlink sockets by namespace (`None` is ours), opened once and reused.
#[derive(Default)]
pub struct LinkSockets {
    sockets: HashMap<Option<String>, Netlink>,
}

impl LinkSockets {
    pub fn get(&mut self, netns: Option<&str>) -> Result<&mut Netlink, LinkError> {
        let key = netns.map(str::to_owned);
        if !self.sockets.contains_key(&key) {
            let socket = match netns {
                Some(name) => Netlink::open_in(name)?,
                None => Netlink::open()?,
            };
            self.sockets.insert(key.clone(), socket);
        }
        Ok(self.sockets.get_mut(&key).expect("inserted above"))
    }
}

/// Creates the TAP of `port` and brings its netdev up with the configured
/// MTU, MAC and queue length, in its namespace.
pub fn create_tap_port(
    switch: &SwitchConfig,
    port: &PortConfig,
    links: &mut LinkSockets,
) -> Result<TapPort, SwitchError> {
    let options = TapOptions {
        vnet_hdr: port.offloads_enabled(switch),
        persistent: port.persistent,
        owner: port.owner,
        group: port.group,
        multi_queue: port.queues > 1,
        ..TapOptions::default()
    };
    let tap_error = |source| SwitchError::Tap {
        port: port.name.clone(),
        source,
    };
    // A multi-queue TAP is opened once per queue: each open adds a queue.
    let open_queues = || -> Result<Vec<Tap>, TapError> {
        (0..port.queues)
            .map(|_| Tap::open(&port.name, &options))
            .collect()
    };
    let queues = match &port.netns {
        Some(netns) => netns::run_in(netns, open_queues)
            .map_err(|source| SwitchError::Netns {
                port: port.name.clone(),
                netns: netns.clone(),
                source,
            })?
            .map_err(tap_error)?,
        None => open_queues().map_err(tap_error)?,
    };
    let tap = TapPort::with_queues(queues);

    let link_error = |source| SwitchError::Link {
        port: port.name.clone(),
        source,
    };
    let netlink = links.get(port.netns.as_deref()).map_err(link_error)?;
    let index = netlink.index_of(&port.name).map_err(link_error)?;
    let settings = LinkSettings {
        up: Some(true),
        mtu: Some(port.mtu),
        mac: port.mac.map(|mac| mac.0),
        txqueuelen: port.txqueuelen,
    };
    netlink.configure(index, &settings).map_err(link_error)?;
    info!(
        port = %port.name,
        netns = port.netns.as_deref().unwrap_or("-"),
        mtu = port.mtu,
        vnet_hdr = tap.tap().vnet_hdr_len() > 0,
        queues = port.queues,
        "TAP ready"
    );
    Ok(tap)
}

/// Builds a dataplane with every port of `config`. On error, the ports made so
/// far are dropped, which deletes their (non-persistent) TAPs.
pub fn build(config: &Config) -> Result<(Dataplane, DataplaneHandle), SwitchError> {
    let mut links = LinkSockets::default();
    build_with(config, |port| {
        create_tap_port(&config.switch, port, &mut links)
    })
}

/// Builds a dataplane whose ports come from `open_port`, called for each
/// port of `config` in order (new TAPs, or fds handed over by `upgrade`).
pub fn build_with(
    config: &Config,
    mut open_port: impl FnMut(&PortConfig) -> Result<TapPort, SwitchError>,
) -> Result<(Dataplane, DataplaneHandle), SwitchError> {
    let (mut dataplane, handle) = Dataplane::new(DataplaneConfig {
        poll_budget: config.switch.poll_budget,
        idle_poll: config.switch.idle_poll(),
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
        let tap_port = open_port(port)?;
        let id = dataplane.add_port(Box::new(tap_port), port.mtu)?;
        // The loop is not running yet: the port's policy is in place before its first frame.
        dataplane.update_port(id, &settings_of(port))?;
    }
    Ok((dataplane, handle))
}

/// The dataplane settings of a port's configuration (MTU, state, forwarding
/// policy), applied when it is added, before its first frame.
pub fn settings_of(port: &PortConfig) -> PortUpdate {
    PortUpdate {
        mtu: Some(port.mtu),
        enabled: Some(port.enabled),
        policy: Some(port.policy()),
    }
}
