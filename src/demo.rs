//! `tapswitch demo`: the newcomer's first command. It builds three network
//! namespaces, attaches one port of the embedded default config to each,
//! proves every pair can ping, prints the learned MAC table and counters, and
//! removes everything it created, also when something fails on the way.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::thread;

use thiserror::Error;

use crate::report;
use tapswitch::config::Config;
use tapswitch::dataplane::DataplaneError;
use tapswitch::netlink::{LinkError, Netlink};
use tapswitch::switch::{self, SwitchError};
use tapswitch::sys::netns::{self, NetnsError};

#[derive(Debug, Error)]
pub enum DemoError {
    #[error("the demo creates namespaces and TAPs: run it as root")]
    NotRoot,
    #[error("creating namespace {name}: {source}")]
    Netns {
        name: String,
        #[source]
        source: NetnsError,
    },
    #[error(transparent)]
    Switch(#[from] SwitchError),
    #[error("addressing {port}: {source}")]
    Link {
        port: String,
        #[source]
        source: LinkError,
    },
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("running ping: {0}")]
    Ping(#[source] std::io::Error),
    #[error("{failed} of {total} ping pairs failed")]
    Unreachable { failed: usize, total: usize },
}

/// Namespaces made by the demo; deleted on drop, whatever happened.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            if let Err(e) = netns::delete(name) {
                eprintln!("tapswitch demo: could not delete namespace {name}: {e}");
            }
        }
    }
}

/// What the demo names and addresses, so that it can run beside other things.
#[derive(clap::Args, Clone, Debug)]
pub struct DemoArgs {
    /// Start of the demo's namespace names (PREFIX-a, PREFIX-b, ...; default
    /// `tsdemo-PID`).
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// The /24 network the namespaces get addresses in (.1, .2, ...).
    #[arg(long, value_name = "A.B.C.0", default_value = "10.199.0.0", value_parser = network)]
    pub network: Ipv4Addr,
}

/// A /24 network address (A.B.C.0).
fn network(text: &str) -> Result<Ipv4Addr, String> {
    let text = text.strip_suffix("/24").unwrap_or(text);
    let address: Ipv4Addr = text
        .parse()
        .map_err(|e| format!("{text:?} is not an IPv4 network (A.B.C.0): {e}"))?;
    if address.octets()[3] != 0 {
        return Err(format!(
            "{address} is not the address of a /24 network: its last byte must be 0"
        ));
    }
    Ok(address)
}

impl DemoArgs {
    /// The address of the demo's port `i`: host `i + 1` of the network.
    fn address(&self, i: usize) -> Ipv4Addr {
        let [a, b, c, _] = self.network.octets();
        Ipv4Addr::new(a, b, c, i as u8 + 1)
    }

    /// The name of the demo's namespace `i`.
    fn namespace(&self, i: usize) -> String {
        let letter = (b'a' + i as u8) as char;
        match &self.prefix {
            Some(prefix) => format!("{prefix}-{letter}"),
            None => format!("tsdemo-{}-{letter}", std::process::id()),
        }
    }
}

pub fn run(args: &DemoArgs) -> Result<(), DemoError> {
    if tapswitch::sys::privileges::effective_uid() != 0 {
        return Err(DemoError::NotRoot);
    }
    let mut config = Config::embedded_default();
    let address = |i| args.address(i);
    let mut namespaces = Namespaces(Vec::new());
    for (i, port) in config.ports.iter_mut().enumerate() {
        let name = args.namespace(i);
        netns::create(&name).map_err(|source| DemoError::Netns {
            name: name.clone(),
            source,
        })?;
        namespaces.0.push(name.clone());
        port.netns = Some(name);
    }

    let (mut dataplane, handle) = switch::build(&config)?;
    for (i, port) in config.ports.iter().enumerate() {
        let link_error = |source| DemoError::Link {
            port: port.name.clone(),
            source,
        };
        // Addresses are added from inside (RTM_NEWADDR takes no namespace id); the demo
        // holds its namespaces only while it runs.
        let mut netlink = match &port.netns {
            Some(netns) => Netlink::open_in(netns),
            None => Netlink::open(),
        }
        .map_err(link_error)?;
        let index = netlink.index_of(&port.name).map_err(link_error)?;
        netlink
            .add_address(index, IpAddr::V4(address(i)), 24)
            .map_err(link_error)?;
    }
    println!("switch up: {} ports", config.ports.len());
    for (i, port) in config.ports.iter().enumerate() {
        println!(
            "  {} in namespace {} has {}/24",
            port.name,
            port.netns.as_deref().unwrap_or("-"),
            address(i)
        );
    }

    let forwarding = thread::spawn(move || dataplane.run());
    let pings = ping_all_pairs(&config, address);
    let snapshot = handle.snapshot();
    handle.shutdown()?;
    let stopped = forwarding
        .join()
        .expect("the dataplane thread does not panic");
    let snapshot = snapshot?;
    stopped?;

    println!("\nlearned MAC table:");
    print!("{}", report::fdb_table(&snapshot));
    println!("\nport counters:");
    print!("{}", report::port_table(&snapshot));
    let (failed, total) = pings?;
    drop(namespaces);
    println!("\nremoved the demo's namespaces and TAPs");
    if failed > 0 {
        return Err(DemoError::Unreachable { failed, total });
    }
    println!("all {total} pairs reachable through tapswitch");
    Ok(())
}

/// Pings every ordered pair; returns (failed, total).
fn ping_all_pairs(
    config: &Config,
    address: impl Fn(usize) -> Ipv4Addr,
) -> Result<(usize, usize), DemoError> {
    println!("\nping, every namespace to every other:");
    let mut failed = 0;
    let mut total = 0;
    for (i, from) in config.ports.iter().enumerate() {
        for (j, _) in config.ports.iter().enumerate().filter(|(j, _)| *j != i) {
            total += 1;
            let netns = from
                .netns
                .as_deref()
                .expect("the demo puts every port in a namespace");
            let output = Command::new("ip")
                .args([
                    "netns", "exec", netns, "ping", "-c", "2", "-i", "0.2", "-W", "2", "-q",
                ])
                .arg(address(j).to_string())
                .output()
                .map_err(DemoError::Ping)?;
            let ok = output.status.success();
            if !ok {
                failed += 1;
            }
            let summary = String::from_utf8_lossy(&output.stdout);
            let rtt = summary
                .lines()
                .find(|l| l.starts_with("rtt") || l.starts_with("round-trip"))
                .and_then(|l| l.split('=').nth(1))
                .map(|v| format!("rtt min/avg/max/mdev ={v}"))
                .unwrap_or_default();
            println!(
                "  {} -> {}: {}  {rtt}",
                address(i),
                address(j),
                if ok { "ok" } else { "FAILED" }
            );
        }
    }
    Ok((failed, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_and_network_name_and_address_the_namespaces() {
        let args = DemoArgs {
            prefix: Some("lab".into()),
            network: network("192.168.7.0/24").unwrap(),
        };
        assert_eq!(args.namespace(1), "lab-b");
        assert_eq!(args.address(2), Ipv4Addr::new(192, 168, 7, 3));
        assert!(network("10.0.0.5").unwrap_err().contains("last byte"));
        assert!(network("ten").is_err());
    }
}
