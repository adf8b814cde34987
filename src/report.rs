//! Tables for people: the MAC table and per-port counters of a [`Snapshot`].

use std::fmt::Write;

use crate::dataplane::Snapshot;
use crate::fdb::EntryKind;

/// The learned MAC table, one entry per line.
pub fn fdb_table(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:<19} {:<15} {:<8} {:>8}",
        "VLAN", "MAC", "PORT", "TYPE", "AGE(s)"
    );
    for entry in &snapshot.fdb {
        let port = port_name(snapshot, entry.port.0);
        let kind = match entry.kind {
            EntryKind::Dynamic => "dynamic",
            EntryKind::Static => "static",
            EntryKind::Sticky => "sticky",
        };
        let _ = writeln!(
            out,
            "{:<6} {:<19} {:<15} {:<8} {:>8.1}",
            entry.vlan,
            entry.mac.to_string(),
            port,
            kind,
            entry.age.as_secs_f64()
        );
    }
    let c = &snapshot.fdb_counters;
    let _ = writeln!(
        out,
        "{} entries; learned {}, moved {}, evicted {}, aged out {}",
        snapshot.fdb.len(),
        c.learned,
        c.moved,
        c.evicted,
        c.aged_out
    );
    out
}

/// Per-port counters, one port per line; drops are listed by reason when any.
pub fn port_table(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<15} {:>10} {:>12} {:>10} {:>12} {:>8}  DROPS",
        "PORT", "RX FRAMES", "RX BYTES", "TX FRAMES", "TX BYTES", "MOVES"
    );
    let all = snapshot
        .ports
        .iter()
        .map(|p| (p, ""))
        .chain(snapshot.removed_ports.iter().map(|p| (p, " (removed)")));
    for (port, note) in all {
        let c = &port.counters;
        let drops: Vec<String> = crate::forward::DropReason::ALL
            .iter()
            .filter(|r| c.drops.get(**r) > 0)
            .map(|r| format!("{}={}", r.name(), c.drops.get(*r)))
            .collect();
        let drops = if drops.is_empty() {
            "0".to_owned()
        } else {
            drops.join(" ")
        };
        let _ = writeln!(
            out,
            "{:<15} {:>10} {:>12} {:>10} {:>12} {:>8}  {}{}",
            port.name, c.rx_frames, c.rx_bytes, c.tx_frames, c.tx_bytes, c.mac_moves, drops, note
        );
    }
    out
}

fn port_name(snapshot: &Snapshot, id: u32) -> String {
    snapshot
        .ports
        .iter()
        .find(|p| p.id.0 == id)
        .map(|p| p.name.clone())
        .unwrap_or_else(|| format!("#{id}"))
}
