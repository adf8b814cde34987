//! Sparse-traffic latency with the system's own `ping`: one echo request every
//! `interval` (2 ms, 10 ms), so a switch that sleeps between packets pays its
//! wake-up on each. Round-trip times come from ping's per-reply lines.

use crate::stats::percentile_sorted;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Round trips of one sparse ping series.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PingReport {
    pub interval_us: u64,
    pub sent: u32,
    pub received: u64,
    pub avg_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

/// `ip netns exec NETNS ping` arguments for `count` requests `interval` apart
/// (below 10 ms needs root, which the benchmark is).
pub fn ping_args(netns: &str, address: &str, interval: Duration, count: u32) -> Vec<String> {
    vec![
        "netns".into(),
        "exec".into(),
        netns.into(),
        "ping".into(),
        "-n".into(),
        "-c".into(),
        count.to_string(),
        "-i".into(),
        format!("{:.3}", interval.as_secs_f64()),
        "-W".into(),
        "1".into(),
        address.into(),
    ]
}

/// Summarises ping's output: every `time=X ms` line is one reply.
pub fn parse(output: &str, interval: Duration, sent: u32) -> Option<PingReport> {
    let mut rtts_ns: Vec<u64> = output
        .lines()
        .filter_map(|line| {
            let rest = line.split("time=").nth(1)?;
            let ms: f64 = rest.split_whitespace().next()?.parse().ok()?;
            Some((ms * 1e6) as u64)
        })
        .collect();
    if rtts_ns.is_empty() {
        return None;
    }
    rtts_ns.sort_unstable();
    let us = |ns: u64| ns as f64 / 1e3;
    let at = |pct| percentile_sorted(&rtts_ns, pct).map_or(0.0, us);
    Some(PingReport {
        interval_us: interval.as_micros() as u64,
        sent,
        received: rtts_ns.len() as u64,
        avg_us: rtts_ns.iter().sum::<u64>() as f64 / rtts_ns.len() as f64 / 1e3,
        p50_us: at(50.0),
        p99_us: at(99.0),
        max_us: us(*rtts_ns.last().expect("not empty")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reply_lines_and_ignores_the_rest() {
        let output = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\
            64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.050 ms\n\
            64 bytes from 10.0.0.2: icmp_seq=2 ttl=64 time=0.030 ms\n\
            64 bytes from 10.0.0.2: icmp_seq=3 ttl=64 time=0.100 ms\n\
            64 bytes from 10.0.0.2: icmp_seq=4 ttl=64 time=0.020 ms\n\
            \n--- 10.0.0.2 ping statistics ---\n\
            5 packets transmitted, 4 received, 20% packet loss, time 8ms\n\
            rtt min/avg/max/mdev = 0.020/0.050/0.100/0.031 ms\n";
        let report = parse(output, Duration::from_millis(2), 5).unwrap();
        assert_eq!(report.sent, 5);
        assert_eq!(report.received, 4);
        assert!((report.avg_us - 50.0).abs() < 1e-9, "{report:?}");
        assert_eq!(report.max_us, 100.0);
        assert_eq!(report.p99_us, 100.0);
        assert_eq!(report.interval_us, 2000);
    }

    #[test]
    fn no_reply_is_no_report() {
        assert_eq!(
            parse(
                "5 packets transmitted, 0 received",
                Duration::from_millis(2),
                5
            ),
            None
        );
    }

    #[test]
    fn interval_is_given_in_seconds() {
        let args = ping_args("ns", "10.0.0.2", Duration::from_millis(2), 100);
        assert!(args.windows(2).any(|w| w == ["-i", "0.002"]), "{args:?}");
    }
}
