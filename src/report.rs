//! Tables for people: the MAC table and per-port counters of a [`Snapshot`].
use tapswitch::dataplane::Snapshot;

/// The learned MAC table, one entry per line (the same table as `fdb show`).
pub fn fdb_table(snapshot: &Snapshot) -> String {
    reply::fdb(&tapswitch::control::fdb_show(snapshot))
}

/// Per-port counters, one port per line (the same table as `stats`).
pub fn port_table(snapshot: &Snapshot) -> String {
    reply::port_counters(&snapshot.ports, &snapshot.removed_ports)
}

/// Tables of control-socket replies (typed, as `tapswitch … --json` prints them in JSON).
pub mod reply {
    use std::fmt::Write;

    use serde_json::Value;

    use tapswitch::control::protocol::{Event, EventLine, LinkState, PortVlan, PortVlanMode};
    use tapswitch::control::{FdbShow, PortListEntry, PortReply, Stats};
    use tapswitch::dataplane::PortSnapshot;
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
            "{:<15} {:>4} {:<20} {:>6} {:<8} {:>7} {:<17} {:<7} {:<14} {:<8} {:<10} VM",
            "PORT",
            "ID",
            "NETNS",
            "MTU",
            "STATE",
            "IFINDEX",
            "MAC",
            "CARRIER",
            "VLAN",
            "OFFLOADS",
            "PERSISTENT"
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
            let (ifindex, mac, carrier) = match &port.netdev {
                Some(dev) => (
                    dev.ifindex.to_string(),
                    dev.mac
                        .map_or_else(|| "-".to_owned(), |mac| mac.to_string()),
                    yes_no(dev.carrier),
                ),
                None => ("-".to_owned(), "-".to_owned(), "-"),
            };
            let _ = writeln!(
                out,
                "{:<15} {:>4} {:<20} {:>6} {:<8} {:>7} {:<17} {:<7} {:<14} {:<8} {:<10} {}",
                port.name,
                port.id.0,
                or_dash(port.netns.as_deref()),
                port.mtu,
                state,
                ifindex,
                mac,
                carrier,
                vlan_summary(&port.vlan),
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

    /// Seconds since the Unix epoch as the UTC time of day, `12:09:28.163`.
    pub fn time_of_day(epoch_secs: f64) -> String {
        let millis = (epoch_secs * 1000.0).round() as u64;
        let day_millis = millis % 86_400_000;
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            day_millis / 3_600_000,
            day_millis / 60_000 % 60,
            day_millis / 1000 % 60,
            day_millis % 1000,
        )
    }

    /// A port's VLAN mode in a word: `-`, `access:10`, `trunk:10,20` (`/n5`: native 5).
    pub fn vlan_summary(vlan: &PortVlan) -> String {
        let id = |id: Option<u16>| id.map_or_else(|| "-".to_owned(), |id| id.to_string());
        match vlan.mode {
            PortVlanMode::None => "-".to_owned(),
            PortVlanMode::Access => format!("access:{}", id(vlan.vlan)),
            PortVlanMode::Trunk => {
                let native = vlan
                    .native_vlan
                    .map(|n| format!("/n{n}"))
                    .unwrap_or_default();
                format!(
                    "trunk:{}{native}",
                    vlan.allowed_vlans.as_deref().unwrap_or("-")
                )
            }
            PortVlanMode::Other => "?".to_owned(),
        }
    }

    /// One port of a `stats`, `port add`, `port del` or `port set` reply.
    fn port_counters_line(out: &mut String, port: &PortSnapshot, note: &str) {
        let c = &port.counters;
        let drops: Vec<String> = DropReason::ALL
            .iter()
            .filter_map(|r| {
                let n = c.drops.get(*r);
                (n > 0).then(|| format!("{}={n}", r.name()))
            })
            .collect();
        let drops = if drops.is_empty() {
            "0".to_owned()
        } else {
            drops.join(" ")
        };
        // Lost before the switch: the TAP's queue was full (not one of the switch's drops).
        let netdev_drops = port
            .netdev_tx_dropped
            .map_or_else(|| "-".to_owned(), |n| n.to_string());
        let _ = writeln!(
            out,
            "{:<15} {:>10} {:>12} {:>10} {:>12} {:>8} {:>12}  {}{}",
            port.name,
            c.rx_frames,
            c.rx_bytes,
            c.tx_frames,
            c.tx_bytes,
            c.mac_moves,
            netdev_drops,
            drops,
            note
        );
    }

    fn counters_header(out: &mut String) {
        let _ = writeln!(
            out,
            "{:<15} {:>10} {:>12} {:>10} {:>12} {:>8} {:>12}  DROPS",
            "PORT", "RX FRAMES", "RX BYTES", "TX FRAMES", "TX BYTES", "MOVES", "NETDEV DROPS"
        );
    }

    /// A single port as the switch reports it after `port add/del/set`.
    pub fn port(reply: &PortReply) -> String {
        let port = &reply.port;
        let mut out = format!(
            "{} (id {}): mtu {}, {}, offloads {}\n",
            port.name,
            port.id.0,
            port.mtu,
            if port.enabled { "enabled" } else { "disabled" },
            if port.vnet_hdr { "on" } else { "off" },
        );
        if let Some(vm) = &reply.vm {
            let _ = writeln!(out, "vm {}: {}", vm.domain, vm.action);
        }
        counters_header(&mut out);
        port_counters_line(&mut out, port, "");
        out
    }

    /// `stats`: per-port counters, then the MAC table and loop totals.
    /// The per-port counter lines of a snapshot or `stats` reply, removed ports last.
    pub fn port_counters(ports: &[PortSnapshot], removed_ports: &[PortSnapshot]) -> String {
        let mut out = String::new();
        counters_header(&mut out);
        for port in ports {
            port_counters_line(&mut out, port, "");
        }
        for port in removed_ports {
            let note = match port.removed_at {
                Some(at) => format!(" (removed at {} UTC)", time_of_day(at)),
                None => " (removed)".to_owned(),
            };
            port_counters_line(&mut out, port, &note);
        }
        out
    }

    pub fn stats(stats: &Stats) -> String {
        let mut out = String::new();
        if let (Some(time), Some(uptime)) = (stats.time, stats.uptime_secs) {
            let _ = writeln!(
                out,
                "at {} UTC, up {uptime:.0} s (bytes without vnet headers, as `ip -s link`)",
                time_of_day(time)
            );
        }
        out.push_str(&port_counters(&stats.ports, &stats.removed_ports));
        let f = &stats.fdb_counters;
        let _ = writeln!(
            out,
            "MAC table: {} entries; learned {}, moved {}, evicted {}, aged out {}",
            stats.fdb_size, f.learned, f.moved, f.evicted, f.aged_out
        );
        let l = &stats.loop_stats;
        let batches = l.batches;
        let frames = l.batch_frames;
        let mean = if batches > 0 {
            frames as f64 / batches as f64
        } else {
            0.0
        };
        let pinned = match l.cpus.as_slice() {
            [] => String::new(),
            [cpu] => format!("; on CPU {cpu}"),
            cpus => format!(
                "; on CPUs {}",
                cpus.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        };
        let _ = writeln!(
            out,
            "loop: {} wake-ups from sleep, {} polls, {batches} port visits, {mean:.1} frames per visit; events dropped {}{pinned}",
            l.wakeups, l.iterations, stats.events_dropped
        );
        let _ = writeln!(
            out,
            "adaptive polling: {} windows ahead of predicted bursts, {} hits, {:.1} ms spun; \
             after frames {} spins hit, {} missed",
            l.idle_windows,
            l.idle_window_hits,
            l.idle_window_spin_ns as f64 / 1e6,
            l.idle_poll_hits,
            l.idle_poll_misses
        );
        if let Some(evpn) = &stats.evpn {
            let state = if evpn.connected {
                "connected".to_owned()
            } else {
                format!(
                    "NOT connected ({}); forwarding on the last state",
                    evpn.last_error.as_deref().unwrap_or("not yet")
                )
            };
            let _ = writeln!(
                out,
                "evpn: gobgpd {} {state}, {} sessions",
                evpn.gobgp, evpn.sessions
            );
        }
        out
    }

    /// `evpn status`: the session, then one line per VNI.
    pub fn evpn_status(status: &tapswitch::control::protocol::EvpnStatus) -> String {
        let mut out = String::new();
        let state = if status.connected {
            "connected".to_owned()
        } else {
            format!(
                "NOT connected: {}",
                status.last_error.as_deref().unwrap_or("not yet")
            )
        };
        let _ = writeln!(
            out,
            "gobgpd {} {state} ({} sessions); VTEP {}, AS {}",
            status.gobgp, status.sessions, status.vtep, status.asn
        );
        let _ = writeln!(
            out,
            "{:<10} {:<15} {:>10} {:>11}  REMOTE VTEPS",
            "VNI", "PORT", "LOCAL MACS", "REMOTE MACS"
        );
        for vni in &status.vnis {
            let vteps: Vec<String> = vni.remote_vteps.iter().map(|v| v.to_string()).collect();
            let line = format!(
                "{:<10} {:<15} {:>10} {:>11}  {}",
                vni.vni,
                vni.port,
                vni.local_macs,
                vni.remote_macs,
                vteps.join(" ")
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
        if status.undecodable_paths > 0 {
            let _ = writeln!(
                out,
                "{} paths from gobgpd were not EVPN routes tapswitch uses (ignored)",
                status.undecodable_paths
            );
        }
        out
    }

    /// `fdb show`: one entry per line.
    pub fn fdb(fdb: &FdbShow) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<6} {:<19} {:<15} {:<8} {:>8}  REMOTE",
            "VLAN", "MAC", "PORT", "TYPE", "AGE(s)"
        );
        for entry in &fdb.entries {
            let kind = match entry.kind {
                EntryKind::Dynamic => "dynamic",
                EntryKind::Static => "static",
                EntryKind::Sticky => "sticky",
                EntryKind::Remote => "evpn",
            };
            let remote = entry.remote.map(|ip| ip.to_string()).unwrap_or_default();
            let line = format!(
                "{:<6} {:<19} {:<15} {:<8} {:>8.1}  {remote}",
                entry.vlan,
                entry.mac.to_string(),
                entry.port,
                kind,
                entry.age_secs
            );
            let _ = writeln!(out, "{}", line.trim_end());
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

    /// One event line for people: `time event key=value …` (port ids left out: the
    /// names are there).
    pub fn event(line: &EventLine) -> String {
        let (time, kind, fields) = match line {
            EventLine::Known(known) => {
                let kind = serde_json::to_value(&known.event)
                    .ok()
                    .and_then(|v| v["event"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                (known.time, kind, event_fields(&known.event))
            }
            EventLine::Unknown(object) => {
                let fields = object
                    .iter()
                    .filter(|(key, _)| !(*key == "time" || *key == "event" || key.ends_with("_id")))
                    .map(|(key, value)| {
                        let value = match value {
                            Value::Object(_) => value.to_string(),
                            _ => text(value),
                        };
                        (key.clone(), value)
                    })
                    .collect();
                let time = object.get("time").and_then(Value::as_f64);
                let kind = object.get("event").map(text).unwrap_or_default();
                (time, kind, fields)
            }
        };
        // Wall-clock time of day (UTC) to the millisecond: enough to line
        // events up with logs; the JSON form has the full timestamp.
        let mut out = format!("{} {kind}", time_of_day(time.unwrap_or(0.0)));
        // In key order, as the lines have always been.
        let mut fields = fields;
        fields.sort();
        for (key, value) in fields {
            let _ = write!(out, " {key}={value}");
        }
        out
    }

    /// A known event's fields as `key=value` pairs.
    fn event_fields(event: &Event) -> Vec<(String, String)> {
        let field = |key: &str, value: &dyn std::fmt::Display| (key.to_owned(), value.to_string());
        let dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
        match event {
            Event::MacLearned {
                mac,
                port,
                evicted_from,
                ..
            } => {
                let mut fields = vec![field("mac", mac), field("port", port)];
                if let Some(victim) = evicted_from {
                    fields.push(field("evicted_from", victim));
                }
                fields
            }
            Event::MacMoved { mac, from, to, .. } => {
                vec![field("mac", mac), field("from", from), field("to", to)]
            }
            Event::PortAdded { port, mtu, .. } => vec![field("port", port), field("mtu", mtu)],
            Event::PortRemoved { port, cause, .. } => {
                let cause = serde_json::to_value(cause)
                    .map(|v| text(&v))
                    .unwrap_or_default();
                vec![field("port", port), field("cause", &cause)]
            }
            Event::PortChanged { port, update, .. } => {
                let update = serde_json::to_string(update).unwrap_or_default();
                vec![field("port", port), field("update", &update)]
            }
            Event::FdbFlushed { port, removed, .. } => {
                let mut fields = Vec::new();
                if let Some(port) = port {
                    fields.push(field("port", port));
                }
                fields.push(field("removed", removed));
                fields
            }
            Event::FdbStaticAdded {
                vlan, mac, port, ..
            } => vec![field("vlan", vlan), field("mac", mac), field("port", port)],
            Event::FdbRemoved { vlan, mac } => vec![field("vlan", vlan), field("mac", mac)],
            Event::MacFlap {
                vlan,
                mac,
                held_on,
                moved_to,
                flaps,
                ..
            } => vec![
                field("vlan", vlan),
                field("mac", mac),
                field("held_on", held_on),
                field("moved_to", moved_to),
                field("flaps", flaps),
            ],
            Event::MacLimitExceeded {
                port,
                vlan,
                mac,
                limit,
                action,
                suppressed,
                ..
            } => vec![
                field("port", port),
                field("vlan", vlan),
                field("mac", mac),
                field("limit", limit),
                field("action", action),
                field("suppressed", suppressed),
            ],
            Event::PortShutdown { port, .. }
            | Event::PortLinkDown { port, .. }
            | Event::PortLinkUp { port, .. } => vec![field("port", port)],
            Event::PortMoved { port, netns, .. } => {
                vec![field("port", port), field("netns", &dash(netns))]
            }
            Event::EventsLost { count } => vec![field("count", count)],
            Event::VmInterfacePlugged {
                port,
                domain,
                live,
                config,
            } => vec![
                field("port", port),
                field("domain", &dash(domain)),
                field("live", live),
                field("config", config),
            ],
            Event::VmDomainEvent {
                domain,
                kind,
                alias,
            } => {
                let kind = serde_json::to_value(kind)
                    .map(|v| text(&v))
                    .unwrap_or_default();
                let mut fields = vec![field("domain", domain), field("kind", &kind)];
                if let Some(alias) = alias {
                    fields.push(field("alias", alias));
                }
                fields
            }
            Event::VmPortRemoved {
                port,
                domain,
                reason,
            } => vec![
                field("port", port),
                field("domain", domain),
                field("reason", reason),
            ],
            Event::EvpnConnected { gobgp, sessions } => {
                vec![field("gobgp", gobgp), field("sessions", sessions)]
            }
            Event::EvpnDisconnected { gobgp, error } => {
                vec![field("gobgp", gobgp), field("error", &dash(error))]
            }
            // ---- reload ----
            Event::ConfigReloaded { trigger, changes } => {
                let list = |names: &[String]| {
                    if names.is_empty() {
                        "-".to_owned()
                    } else {
                        names.join(",")
                    }
                };
                let changed: Vec<String> = changes.changed.iter().map(|c| c.port.clone()).collect();
                vec![
                    field("trigger", &super::trigger_name(*trigger)),
                    field("file", &changes.file.display()),
                    field("added", &list(&changes.added)),
                    field("removed", &list(&changes.removed)),
                    field("changed", &list(&changed)),
                    field("kept", &list(&changes.kept)),
                ]
            }
            Event::ConfigReloadFailed { trigger, error } => vec![
                field("trigger", &super::trigger_name(*trigger)),
                field("error", &format!("{error:?}")),
            ],
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn events_render_with_names_and_unknown_ones_too() {
            let known: EventLine = serde_json::from_str(
                r#"{"event":"mac_moved","mac":"02:00:00:00:00:01","from":"p1","from_id":1,
                    "to":"p2","to_id":2,"time":3723.5}"#,
            )
            .unwrap();
            assert_eq!(
                event(&known),
                "01:02:03.500 mac_moved from=p1 mac=02:00:00:00:00:01 to=p2"
            );
            // The README's lines, as they always looked.
            let changed: EventLine = serde_json::from_str(
                r#"{"event":"port_changed","port":"c","port_id":2,
                    "update":{"mtu":1500,"enabled":false},"time":43768.167}"#,
            )
            .unwrap();
            assert_eq!(
                event(&changed),
                r#"12:09:28.167 port_changed port=c update={"enabled":false,"mtu":1500}"#
            );
            let added: EventLine = serde_json::from_str(
                r#"{"event":"port_added","port":"c","port_id":2,"mtu":9000,"time":43768.163}"#,
            )
            .unwrap();
            assert_eq!(event(&added), "12:09:28.163 port_added mtu=9000 port=c");
            let newer: EventLine = serde_json::from_str(
                r#"{"event":"vtep_up","remote":"192.0.2.1","vni_id":7,"extra":{"a":1},"time":1.0}"#,
            )
            .unwrap();
            assert!(matches!(newer, EventLine::Unknown(_)));
            assert_eq!(
                event(&newer),
                r#"00:00:01.000 vtep_up extra={"a":1} remote=192.0.2.1"#
            );
        }
    }
}

/// doctor's findings for people: a table with a fix under each finding, and the counts.
pub mod findings {
    use std::fmt::Write;

    use serde::Serialize;
    use tapswitch::doctor::{Finding, Severity};

    fn label(severity: Severity) -> &'static str {
        match severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    fn count(findings: &[Finding], severity: Severity) -> usize {
        findings.iter().filter(|f| f.severity == severity).count()
    }

    /// The findings as a table for people, with a summary line.
    pub fn table(findings: &[Finding]) -> String {
        let port_width = findings
            .iter()
            .filter_map(|f| f.port.as_ref().map(String::len))
            .max()
            .unwrap_or(0)
            .max(4);
        let mut out = format!("{:<8} {:<port_width$} FINDING / FIX\n", "SEVERITY", "PORT");
        for f in findings {
            let port = f.port.as_deref().unwrap_or("-");
            let _ = writeln!(
                out,
                "{:<8} {port:<port_width$} {} [{}]",
                label(f.severity),
                f.what,
                f.code
            );
            let _ = writeln!(out, "{:<8} {:<port_width$}   fix: {}", "", "", f.fix);
        }
        let _ = writeln!(
            out,
            "{} errors, {} warnings, {} notes",
            count(findings, Severity::Error),
            count(findings, Severity::Warning),
            count(findings, Severity::Info)
        );
        out
    }

    /// The report for `--json`: the findings and their counts (keys in the order
    /// they have always printed in).
    #[derive(Serialize)]
    pub struct Report<'a> {
        pub errors: usize,
        pub findings: &'a [Finding],
        pub notes: usize,
        pub warnings: usize,
    }

    /// The report for `--json`.
    pub fn to_json(findings: &[Finding]) -> Report<'_> {
        Report {
            errors: count(findings, Severity::Error),
            findings,
            notes: count(findings, Severity::Info),
            warnings: count(findings, Severity::Warning),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// What `doctor::diagnose` finds when p0's netdev has MTU 9000 and p1 no
        /// offloads (its test checks that it does).
        fn findings() -> Vec<Finding> {
            let finding = |severity, code, port: &str, what: &str, fix: &str| Finding {
                severity,
                code,
                port: Some(port.to_owned()),
                what: what.to_owned(),
                fix: fix.to_owned(),
            };
            vec![
                finding(
                    Severity::Error,
                    "mtu_netdev_above_switch",
                    "p0",
                    "the netdev's MTU is 9000, above the switch's 1500",
                    "tapswitch port set p0 --mtu 9000",
                ),
                finding(
                    Severity::Warning,
                    "offloads_mixed",
                    "p1",
                    "no offloads",
                    "fix it",
                ),
                finding(Severity::Info, "daemon_privileges", "p0", "note", "none"),
            ]
        }

        #[test]
        fn the_table_shows_every_finding_and_counts() {
            let table = table(&findings());
            assert!(
                table.starts_with("SEVERITY PORT FINDING / FIX\n"),
                "{table}"
            );
            assert!(
                table.contains("error    p0   the netdev's MTU is 9000"),
                "{table}"
            );
            assert!(
                table.contains("  fix: tapswitch port set p0 --mtu 9000"),
                "{table}"
            );
            assert!(
                table.ends_with("1 errors, 1 warnings, 1 notes\n"),
                "{table}"
            );
            let json = serde_json::to_value(to_json(&findings())).unwrap();
            assert_eq!(json["errors"], 1);
            assert_eq!(json["findings"][0]["code"], "mtu_netdev_above_switch");
            assert_eq!(json["findings"][0]["severity"], "error");
        }
    }
}

// ---- reload ----
/// `signal` or `request`, as on the wire.
fn trigger_name(trigger: tapswitch::control::protocol::ReloadTrigger) -> String {
    serde_json::to_value(trigger)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The `reload` reply for people: one line per change, or that the file changed nothing.
pub fn reload(reply: &tapswitch::control::protocol::ReloadReply) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for port in &reply.added {
        let _ = writeln!(out, "added    {port}");
    }
    for port in &reply.removed {
        let _ = writeln!(out, "removed  {port}");
    }
    for change in &reply.changed {
        let _ = writeln!(out, "changed  {}: {}", change.port, change.keys.join(", "));
    }
    for port in &reply.kept {
        let _ = writeln!(out, "kept     {port} (added at runtime, not in the file)");
    }
    if reply.is_empty() {
        let _ = writeln!(
            out,
            "{}: no changes: the switch runs what the file says",
            reply.file.display()
        );
    } else {
        let _ = writeln!(out, "{}: reloaded", reply.file.display());
    }
    out
}

// ---- trace, rates ----
pub mod rates;
pub mod said;
pub mod trace;
