//! Tables for people: the MAC table and per-port counters of a [`Snapshot`].
use tapswitch::dataplane::Snapshot;

/// The learned MAC table, one entry per line (the same table as `fdb show`).
pub fn fdb_table(snapshot: &Snapshot) -> String {
    reply::fdb(&tapswitch::control::fdb_show(snapshot))
}

/// Per-port counters, one port per line (the same table as `stats`).
pub fn port_table(snapshot: &Snapshot) -> String {
    let json = serde_json::to_value(snapshot).expect("snapshots serialise to JSON");
    reply::port_counters(&json)
}

/// Tables of control-socket replies (JSON, as `tapswitch … --json` prints them).
pub mod reply {
    use std::fmt::Write;

    use serde_json::Value;

    use tapswitch::control::protocol::LinkState;
    use tapswitch::control::{FdbShow, PortListEntry};
    use tapswitch::fdb::EntryKind;
    use tapswitch::forward::DropReason;

    fn text(value: &Value) -> String {
        match value {
            Value::String(s) => s.clone(),
            Value::Null => "-".to_owned(),
            other => other.to_string(),
        }
    }

    fn or_dash(text: Option<&str>) -> &str {
        text.unwrap_or("-")
    }

    /// `port list`: one port per line.
    pub fn port_list(ports: &[PortListEntry]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<15} {:>4} {:<20} {:>6} {:<8} {:<8} {:<10} VM",
            "PORT", "ID", "NETNS", "MTU", "STATE", "OFFLOADS", "PERSISTENT"
        );
        for port in ports {
            // "down": enabled, but its netdev is down (frames to it count as link_down).
            let state = if !port.enabled {
                "disabled"
            } else if port.link == LinkState::Down {
                "down"
            } else {
                "enabled"
            };
            let yes_no = |yes: bool| if yes { "yes" } else { "no" };
            let _ = writeln!(
                out,
                "{:<15} {:>4} {:<20} {:>6} {:<8} {:<8} {:<10} {}",
                port.name,
                port.id.0,
                or_dash(port.netns.as_deref()),
                port.mtu,
                state,
                yes_no(port.offloads),
                // An adopted TAP outlives the port too, but it is its creator's.
                if port.adopted {
                    "adopted"
                } else {
                    yes_no(port.persistent)
                },
                or_dash(port.vm.as_deref())
            );
        }
        out
    }

    /// One port of a `stats`, `port add`, `port del` or `port set` reply.
    fn port_counters_line(out: &mut String, port: &Value, note: &str) {
        let c = &port["counters"];
        let drops: Vec<String> = DropReason::ALL
            .iter()
            .filter_map(|r| {
                let n = c["drops"][r.name()].as_u64().unwrap_or(0);
                (n > 0).then(|| format!("{}={n}", r.name()))
            })
            .collect();
        let drops = if drops.is_empty() {
            "0".to_owned()
        } else {
            drops.join(" ")
        };
        let _ = writeln!(
            out,
            "{:<15} {:>10} {:>12} {:>10} {:>12} {:>8}  {}{}",
            text(&port["name"]),
            text(&c["rx_frames"]),
            text(&c["rx_bytes"]),
            text(&c["tx_frames"]),
            text(&c["tx_bytes"]),
            text(&c["mac_moves"]),
            drops,
            note
        );
    }

    fn counters_header(out: &mut String) {
        let _ = writeln!(
            out,
            "{:<15} {:>10} {:>12} {:>10} {:>12} {:>8}  DROPS",
            "PORT", "RX FRAMES", "RX BYTES", "TX FRAMES", "TX BYTES", "MOVES"
        );
    }

    /// A single port as the switch reports it after `port add/del/set`.
    pub fn port(port: &Value) -> String {
        let mut out = format!(
            "{} (id {}): mtu {}, {}, offloads {}\n",
            text(&port["name"]),
            text(&port["id"]),
            text(&port["mtu"]),
            if port["enabled"] == true {
                "enabled"
            } else {
                "disabled"
            },
            if port["vnet_hdr"] == true {
                "on"
            } else {
                "off"
            },
        );
        if let Some(vm) = port.get("vm") {
            let _ = writeln!(out, "vm {}: {}", text(&vm["domain"]), text(&vm["action"]));
        }
        counters_header(&mut out);
        port_counters_line(&mut out, port, "");
        out
    }

    /// `stats`: per-port counters, then the MAC table and loop totals.
    /// The per-port counter lines of a snapshot or `stats` reply, removed ports last.
    pub fn port_counters(stats: &Value) -> String {
        let mut out = String::new();
        counters_header(&mut out);
        for port in stats["ports"].as_array().into_iter().flatten() {
            port_counters_line(&mut out, port, "");
        }
        for port in stats["removed_ports"].as_array().into_iter().flatten() {
            port_counters_line(&mut out, port, " (removed)");
        }
        out
    }

    pub fn stats(stats: &Value) -> String {
        let mut out = port_counters(stats);
        let f = &stats["fdb_counters"];
        let _ = writeln!(
            out,
            "MAC table: {} entries; learned {}, moved {}, evicted {}, aged out {}",
            text(&stats["fdb_size"]),
            text(&f["learned"]),
            text(&f["moved"]),
            text(&f["evicted"]),
            text(&f["aged_out"])
        );
        let l = &stats["loop_stats"];
        let batches = l["batches"].as_u64().unwrap_or(0);
        let frames = l["batch_frames"].as_u64().unwrap_or(0);
        let mean = if batches > 0 {
            frames as f64 / batches as f64
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "loop: {} iterations, {batches} port visits, {mean:.1} frames per visit; events dropped {}",
            text(&l["iterations"]),
            text(&stats["events_dropped"])
        );
        out
    }

    /// `fdb show`: one entry per line.
    pub fn fdb(fdb: &FdbShow) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<6} {:<19} {:<15} {:<8} {:>8}",
            "VLAN", "MAC", "PORT", "TYPE", "AGE(s)"
        );
        for entry in &fdb.entries {
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
                entry.port,
                kind,
                entry.age_secs
            );
        }
        let c = &fdb.counters;
        let _ = writeln!(
            out,
            "{} entries; learned {}, moved {}, evicted {}, aged out {}",
            fdb.entries.len(),
            c.learned,
            c.moved,
            c.evicted,
            c.aged_out
        );
        out
    }

    /// One event line for people: `time event key=value …`.
    pub fn event(event: &Value) -> String {
        // Wall-clock time of day (UTC) to the millisecond: enough to line
        // events up with logs; the JSON form has the full timestamp.
        let millis = (event["time"].as_f64().unwrap_or(0.0) * 1000.0).round() as u64;
        let day_millis = millis % 86_400_000;
        let mut out = format!(
            "{:02}:{:02}:{:02}.{:03} {}",
            day_millis / 3_600_000,
            day_millis / 60_000 % 60,
            day_millis / 1000 % 60,
            day_millis % 1000,
            text(&event["event"])
        );
        if let Some(fields) = event.as_object() {
            for (key, value) in fields {
                if key == "time" || key == "event" || key.ends_with("_id") {
                    continue;
                }
                let value = match value {
                    Value::Object(_) => value.to_string(),
                    _ => text(value),
                };
                let _ = write!(out, " {key}={value}");
            }
        }
        out
    }
}
