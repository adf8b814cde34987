//! What a changing command says it did (`fdb add/del`, `port del`), and `port show`.

use std::fmt::Write;

use serde::Serialize;
use tapswitch::control::protocol::{LinkState, PortVlanMode};
use tapswitch::control::{PortListEntry, PortReply, Request};
use tapswitch::dataplane::PortCounters;

/// `fdb add`: the entry made.
pub fn fdb_added(request: &Request) -> String {
    let Request::FdbAdd {
        mac,
        port,
        vlan,
        remote,
    } = request
    else {
        return String::new();
    };
    let behind = remote
        .map(|ip| format!(" behind VTEP {ip}"))
        .unwrap_or_default();
    format!("added static entry {mac} on VLAN {vlan} -> port {port}{behind}\n")
}

/// `fdb del`: the entry removed, or (`removed` false, with `--if-exists`) that there
/// was none.
pub fn fdb_deleted(request: &Request, removed: bool) -> String {
    let Request::FdbDel { mac, vlan } = request else {
        return String::new();
    };
    if removed {
        format!("removed entry {mac} on VLAN {vlan}\n")
    } else {
        format!("no entry {mac} on VLAN {vlan}: nothing to remove\n")
    }
}

/// `port del`: the port removed, with its last counters.
pub fn port_deleted(reply: &PortReply) -> String {
    format!(
        "deleted port {} (id {})\n{}",
        reply.port.name,
        reply.port.id.0,
        super::reply::port(reply)
    )
}

/// `port show`'s reply: the port as `port list` has it, and its counters.
#[derive(Debug, Serialize)]
pub struct PortShow {
    #[serde(flatten)]
    pub port: PortListEntry,
    pub counters: Option<PortCounters>,
}

/// `port show` for people: one `key: value` line each.
pub fn port_show(shown: &PortShow) -> String {
    let port = &shown.port;
    let mut out = String::new();
    let yes_no = |yes: bool| if yes { "yes" } else { "no" };
    let _ = writeln!(out, "port {} (id {})", port.name, port.id.0);
    let _ = writeln!(
        out,
        "  netns:      {}",
        port.netns.as_deref().unwrap_or("-")
    );
    let _ = writeln!(out, "  mtu:        {}", port.mtu);
    let _ = writeln!(
        out,
        "  state:      {}, link {}",
        if port.enabled { "enabled" } else { "disabled" },
        if port.link == LinkState::Up {
            "up"
        } else {
            "down"
        }
    );
    match &port.netdev {
        Some(dev) => {
            let mac = dev.mac.map(|m| m.to_string()).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "  netdev:     {} ifindex {} mac {mac} {} carrier {} ({}), txqueuelen {}",
                dev.name,
                dev.ifindex,
                if dev.up { "up" } else { "down" },
                if dev.carrier { "yes" } else { "no" },
                dev.oper_state,
                dev.txqueuelen
            );
        }
        None => {
            let _ = writeln!(out, "  netdev:     - (none, or out of the switch's reach)");
        }
    }
    let vlan = &port.vlan;
    let vlan_text = match vlan.mode {
        PortVlanMode::None => "none (transparent)".to_owned(),
        PortVlanMode::Access => format!(
            "access, vlan {}",
            vlan.vlan
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into())
        ),
        PortVlanMode::Trunk => format!(
            "trunk, allowed {}, native {}",
            vlan.allowed_vlans.as_deref().unwrap_or("-"),
            vlan.native_vlan
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into())
        ),
        PortVlanMode::Other => "(a mode this client does not know)".to_owned(),
    };
    let _ = writeln!(out, "  vlan mode:  {vlan_text}");
    let _ = writeln!(out, "  offloads:   {}", yes_no(port.offloads));
    let _ = writeln!(
        out,
        "  persistent: {}{}",
        yes_no(port.persistent),
        if port.adopted { " (adopted)" } else { "" }
    );
    let _ = writeln!(out, "  vm:         {}", port.vm.as_deref().unwrap_or("-"));
    if let Some(c) = &shown.counters {
        let _ = writeln!(
            out,
            "  rx:         {} frames, {} bytes\n  tx:         {} frames, {} bytes",
            c.rx_frames, c.rx_bytes, c.tx_frames, c.tx_bytes
        );
    }
    out
}
