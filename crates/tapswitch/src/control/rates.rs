//! Rates from two `stats` replies: what `stats --rate` prints and `top` redraws. Pure:
//! the client takes the snapshots and measures the interval between them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::protocol::Stats;
use crate::dataplane::PortSnapshot;
use crate::fdb::PortId;
use crate::forward::DropReason;

/// Per-second rates over one interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub interval_secs: f64,
    /// Ports present at the end of the interval, in id order.
    pub ports: Vec<PortRates>,
    /// MAC table entries at the end.
    pub fdb_size: usize,
    pub fdb_learned_per_sec: f64,
    pub loop_load: LoopLoad,
}

/// One port's rates; a port added during the interval counts from zero.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortRates {
    pub name: String,
    pub id: PortId,
    pub rx_frames_per_sec: f64,
    pub rx_bytes_per_sec: f64,
    pub tx_frames_per_sec: f64,
    pub tx_bytes_per_sec: f64,
    pub drops_per_sec: f64,
    /// Drops per second by reason (counter name), only the reasons that dropped any.
    pub drops_by_reason: BTreeMap<String, f64>,
}

/// How busy the dataplane loop was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoopLoad {
    /// Returns from `epoll_wait` per second, spinning polls included.
    pub iterations_per_sec: f64,
    /// Wake-ups from a sleeping `epoll_wait` per second.
    #[serde(default)]
    pub wakeups_per_sec: f64,
    /// Share of one CPU spent spinning in predicted windows (0..=1 per thread).
    #[serde(default)]
    pub idle_window_spin_share: f64,
    /// Visits to a ready port per second.
    pub port_visits_per_sec: f64,
    /// Frames read per visit (0 when no visit).
    pub frames_per_visit: f64,
}

impl Rates {
    /// The rates from `before` to `after`, `interval` apart. A counter that went down
    /// (the switch restarted, or a port was replaced by a namesake) counts as zero.
    pub fn between(before: &Stats, after: &Stats, interval: Duration) -> Rates {
        let secs = interval.as_secs_f64().max(1e-9);
        let per_sec = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
        let ports = after
            .ports
            .iter()
            .map(|port| {
                let old = before
                    .ports
                    .iter()
                    .find(|old| old.id == port.id && old.name == port.name);
                port_rates(port, old, &per_sec)
            })
            .collect();
        let (b, a) = (&before.loop_stats, &after.loop_stats);
        let visits = a.batches.saturating_sub(b.batches);
        let frames = a.batch_frames.saturating_sub(b.batch_frames);
        Rates {
            interval_secs: secs,
            ports,
            fdb_size: after.fdb_size,
            fdb_learned_per_sec: per_sec(after.fdb_counters.learned, before.fdb_counters.learned),
            loop_load: LoopLoad {
                iterations_per_sec: per_sec(a.iterations, b.iterations),
                wakeups_per_sec: per_sec(a.wakeups, b.wakeups),
                idle_window_spin_share: per_sec(a.idle_window_spin_ns, b.idle_window_spin_ns) / 1e9,
                port_visits_per_sec: per_sec(a.batches, b.batches),
                frames_per_visit: if visits == 0 {
                    0.0
                } else {
                    frames as f64 / visits as f64
                },
            },
        }
    }
}

fn port_rates(
    port: &PortSnapshot,
    old: Option<&PortSnapshot>,
    per_sec: &impl Fn(u64, u64) -> f64,
) -> PortRates {
    let now = &port.counters;
    let zero = Default::default();
    let then = old.map_or(&zero, |old| &old.counters);
    let drops_by_reason: BTreeMap<String, f64> = DropReason::ALL
        .iter()
        .filter_map(|&reason| {
            let rate = per_sec(now.drops.get(reason), then.drops.get(reason));
            (rate > 0.0).then(|| (reason.name().to_owned(), rate))
        })
        .collect();
    PortRates {
        name: port.name.clone(),
        id: port.id,
        rx_frames_per_sec: per_sec(now.rx_frames, then.rx_frames),
        rx_bytes_per_sec: per_sec(now.rx_bytes, then.rx_bytes),
        tx_frames_per_sec: per_sec(now.tx_frames, then.tx_frames),
        tx_bytes_per_sec: per_sec(now.tx_bytes, then.tx_bytes),
        drops_per_sec: per_sec(now.drops.total(), then.drops.total()),
        drops_by_reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{LoopStats, PortCounters};
    use crate::fdb::FdbCounters;

    fn stats(rx: u64, drops: u64, learned: u64) -> Stats {
        let mut counters = PortCounters {
            rx_frames: rx,
            rx_bytes: rx * 100,
            ..PortCounters::default()
        };
        for _ in 0..drops {
            counters.drops.count(DropReason::StormBroadcast);
        }
        Stats {
            ports: vec![PortSnapshot {
                id: PortId(0),
                name: "p0".into(),
                mtu: 1500,
                vnet_hdr: true,
                enabled: true,
                link_up: true,
                counters,
                netdev_tx_dropped: None,
                removed_at: None,
                tunnel: None,
            }],
            removed_ports: Vec::new(),
            fdb_size: 3,
            fdb_counters: FdbCounters {
                learned,
                ..FdbCounters::default()
            },
            mac_flaps: Vec::new(),
            loop_stats: LoopStats {
                iterations: rx * 50,
                wakeups: rx,
                idle_window_spin_ns: rx * 1_000_000,
                ..LoopStats::default()
            },
            events_dropped: 0,
            time: None,
            started_at: None,
            uptime_secs: None,
            evpn: None,
        }
    }

    #[test]
    fn rates_are_deltas_per_second_and_never_negative() {
        let rates = Rates::between(&stats(10, 1, 0), &stats(30, 5, 4), Duration::from_secs(2));
        let port = &rates.ports[0];
        assert_eq!(port.rx_frames_per_sec, 10.0);
        assert_eq!(port.rx_bytes_per_sec, 1000.0);
        assert_eq!(port.drops_per_sec, 2.0);
        assert_eq!(
            port.drops_by_reason,
            BTreeMap::from([("storm_broadcast".to_owned(), 2.0)])
        );
        assert_eq!(rates.fdb_learned_per_sec, 2.0);
        assert_eq!(rates.fdb_size, 3);
        // Wake-ups from sleep, not the spinning polls between them.
        assert_eq!(rates.loop_load.wakeups_per_sec, 10.0);
        assert_eq!(rates.loop_load.iterations_per_sec, 500.0);
        assert_eq!(rates.loop_load.idle_window_spin_share, 0.01);
        // A restarted switch counts from zero again: no negative rates.
        let rates = Rates::between(&stats(30, 5, 4), &stats(10, 1, 0), Duration::from_secs(1));
        assert_eq!(rates.ports[0].rx_frames_per_sec, 0.0);
        assert!(rates.ports[0].drops_by_reason.is_empty());
    }
}
