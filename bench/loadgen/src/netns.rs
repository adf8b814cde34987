//! Network namespaces owned by this run, and the few link operations the
//! topologies need, done through `ip` so that every step is a command a
//! reader can replay by hand.

use crate::proc::{self, ProcError};
use std::time::Duration;

/// Failures of namespace and link setup.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("namespace setup: {0}")]
    Command(#[from] ProcError),
    #[error("could not parse `ip -j link show` output for {device} in namespace {netns}: {detail}")]
    LinkJson {
        netns: String,
        device: String,
        detail: String,
    },
    #[error("{target} did not answer ping from namespace {netns} within {seconds} s")]
    Unreachable {
        netns: String,
        target: String,
        seconds: u64,
    },
}

/// A network namespace created by this run; dropping it deletes it (and with
/// it every link still inside).
pub struct OwnedNetns {
    name: String,
}

impl OwnedNetns {
    /// Creates namespace `name` and brings its loopback up.
    pub fn create(name: &str) -> Result<Self, NetnsError> {
        proc::ip(&["netns", "add", name])?;
        let netns = Self {
            name: name.to_owned(),
        };
        proc::ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for OwnedNetns {
    fn drop(&mut self) {
        if let Err(error) = proc::ip(&["netns", "del", &self.name]) {
            eprintln!("warning: could not delete namespace {}: {error}", self.name);
        }
    }
}

/// Whether link `device` exists in namespace `netns` (`None`: the root namespace).
pub fn link_exists(netns: Option<&str>, device: &str) -> bool {
    let mut args = Vec::new();
    if let Some(netns) = netns {
        args.extend(["-n", netns]);
    }
    args.extend(["link", "show", "dev", device]);
    proc::output("ip", &args).is_ok()
}

/// Deletes link `device` in `netns` if it is there; returns whether it was.
pub fn delete_link_if_present(netns: Option<&str>, device: &str) -> bool {
    if !link_exists(netns, device) {
        return false;
    }
    let mut args = Vec::new();
    if let Some(netns) = netns {
        args.extend(["-n", netns]);
    }
    args.extend(["link", "del", "dev", device]);
    if let Err(error) = proc::ip(&args) {
        eprintln!("warning: {error}");
    }
    true
}

/// The MAC address of `device` in `netns`.
pub fn link_mac(netns: &str, device: &str) -> Result<String, NetnsError> {
    let json = proc::ip(&["-n", netns, "-j", "link", "show", "dev", device])?;
    let bad = |detail: String| NetnsError::LinkJson {
        netns: netns.to_owned(),
        device: device.to_owned(),
        detail,
    };
    let value: serde_json::Value = serde_json::from_str(&json).map_err(|e| bad(e.to_string()))?;
    value[0]["address"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| bad(format!("no \"address\" in {json}")))
}

/// One end host: a netdev inside a namespace with an IPv4 address.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub netns: String,
    pub device: String,
    pub address: String,
}

/// Gives both endpoints their /24 addresses, brings them up, pins each other's
/// MAC as a permanent neighbour (so no blast ever waits on ARP), and waits
/// until `a` can ping `b`.
pub fn configure_pair(a: &Endpoint, b: &Endpoint) -> Result<(), NetnsError> {
    configure_pair_with_mtu(a, b, 1500)
}

/// [`configure_pair`] with another MTU on both endpoints (a tunnel's inner MTU).
pub fn configure_pair_with_mtu(a: &Endpoint, b: &Endpoint, mtu: u32) -> Result<(), NetnsError> {
    let mtu = mtu.to_string();
    for end in [a, b] {
        proc::ip(&[
            "-n",
            &end.netns,
            "link",
            "set",
            "dev",
            &end.device,
            "mtu",
            &mtu,
            "up",
        ])?;
        proc::ip(&[
            "-n",
            &end.netns,
            "addr",
            "add",
            &format!("{}/24", end.address),
            "dev",
            &end.device,
        ])?;
    }
    let mac_a = link_mac(&a.netns, &a.device)?;
    let mac_b = link_mac(&b.netns, &b.device)?;
    for (end, peer, peer_mac) in [(a, b, &mac_b), (b, a, &mac_a)] {
        proc::ip(&[
            "-n",
            &end.netns,
            "neigh",
            "replace",
            &peer.address,
            "lladdr",
            peer_mac,
            "dev",
            &end.device,
            "nud",
            "permanent",
        ])?;
    }
    wait_reachable(a, b, Duration::from_secs(10))
}

/// Pings `b` from `a` until one reply comes back (the switch may still be
/// learning or settling) or `limit` passes.
pub fn wait_reachable(a: &Endpoint, b: &Endpoint, limit: Duration) -> Result<(), NetnsError> {
    let reachable = proc::wait_until(limit, Duration::from_millis(50), || {
        proc::output(
            "ip",
            &[
                "netns", "exec", &a.netns, "ping", "-c", "1", "-W", "1", "-q", &b.address,
            ],
        )
        .is_ok()
    });
    if reachable {
        Ok(())
    } else {
        Err(NetnsError::Unreachable {
            netns: a.netns.clone(),
            target: b.address.clone(),
            seconds: limit.as_secs(),
        })
    }
}
