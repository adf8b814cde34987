//! Results: raw per-round samples, medians, ratios against the bridge, the
//! machine they were measured on, and the printed table.

use crate::iperf::TcpReport;
use crate::ping::PingReport;
use crate::rr::RrReport;
use crate::run::RunConfig;
use crate::search::{SearchResult, TrialOutcome};
use crate::stats::{median, median_of_ratios};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Metric names and how to read them.
#[derive(Debug, Clone, Serialize)]
pub struct MetricSpec {
    pub key: String,
    pub label: String,
    pub higher_is_better: bool,
}

/// The metrics of a run, in table order.
pub fn metric_specs(frame_sizes: &[usize]) -> Vec<MetricSpec> {
    let spec = |key: &str, label: &str, higher_is_better| MetricSpec {
        key: key.to_owned(),
        label: label.to_owned(),
        higher_is_better,
    };
    let mut specs = vec![
        spec("tcp_1_stream_gbps", "TCP 1 stream, Gb/s", true),
        spec("tcp_4_streams_gbps", "TCP 4 streams, Gb/s", true),
        spec("rr_p50_us", "UDP RR 64 B p50, µs", false),
        spec("rr_p99_us", "UDP RR 64 B p99, µs", false),
        spec("ping_2ms_avg_us", "ping every 2 ms avg, µs", false),
        spec("ping_2ms_p99_us", "ping every 2 ms p99, µs", false),
        spec("ping_2ms_cpu_pct", "ping every 2 ms: switch CPU, %", false),
        spec("ping_10ms_avg_us", "ping every 10 ms avg, µs", false),
        spec("ping_10ms_p99_us", "ping every 10 ms p99, µs", false),
        spec(
            "ping_10ms_cpu_pct",
            "ping every 10 ms: switch CPU, %",
            false,
        ),
        spec("rr_1k_avg_us", "UDP RR paced 1k/s avg, µs", false),
        spec("rr_1k_p99_us", "UDP RR paced 1k/s p99, µs", false),
        spec("rr_1k_cpu_pct", "UDP RR paced 1k/s: switch CPU, %", false),
    ];
    for size in frame_sizes {
        specs.push(spec(
            &format!("zero_loss_kpps_{size}"),
            &format!("zero-loss {size} B, kpps"),
            true,
        ));
    }
    for size in frame_sizes {
        specs.push(spec(
            &format!("unpaced_delivered_kpps_{size}"),
            &format!("unpaced {size} B delivered, kpps"),
            true,
        ));
        specs.push(spec(
            &format!("unpaced_loss_pct_{size}"),
            &format!("unpaced {size} B loss, %"),
            false,
        ));
    }
    specs.push(spec(
        "switch_cpu_s_per_gb",
        "switch CPU s per GB (TCP)",
        false,
    ));
    specs
}

/// One blast series (one frame size) in one round.
#[derive(Debug, Clone, Serialize)]
pub struct BlastDetails {
    pub frame_size: usize,
    pub unpaced: TrialOutcome,
    pub search: SearchResult,
}

/// Raw tool reports behind a sample's metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SampleDetails {
    pub rr: Option<RrReport>,
    pub pings: Vec<PingReport>,
    pub rr_paced: Option<RrReport>,
    pub tcp: Vec<TcpReport>,
    pub blasts: Vec<BlastDetails>,
}

/// Everything measured for one system in one round.
#[derive(Debug, Clone, Serialize)]
pub struct RoundSample {
    pub round: u32,
    pub system: String,
    pub metrics: BTreeMap<String, f64>,
    pub details: SampleDetails,
    pub error: Option<String>,
    pub warnings: Vec<String>,
}

impl RoundSample {
    /// An empty sample.
    pub fn new(round: u32, system: &str) -> Self {
        Self {
            round,
            system: system.to_owned(),
            metrics: BTreeMap::new(),
            details: SampleDetails::default(),
            error: None,
            warnings: Vec::new(),
        }
    }

    /// Records one metric.
    pub fn set(&mut self, key: &str, value: f64) {
        self.metrics.insert(key.to_owned(), value);
    }
}

/// What the numbers were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct MachineInfo {
    pub nproc: usize,
    pub kernel: String,
    pub cpu_model: String,
    pub iperf3: String,
    pub ovs: Option<String>,
    pub tapswitch_bin: String,
}

impl MachineInfo {
    /// Reads /proc and asks the tools for their versions.
    pub fn collect(tapswitch_bin: &Path) -> Self {
        let first_line = |program: &str, arg: &str| {
            std::process::Command::new(program)
                .arg(arg)
                .output()
                .ok()
                .filter(|out| out.status.success())
                .and_then(|out| {
                    String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .next()
                        .map(str::to_owned)
                })
        };
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self {
            nproc: std::thread::available_parallelism().map_or(0, usize::from),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            cpu_model: cpuinfo
                .lines()
                .find_map(|line| {
                    line.strip_prefix("model name")
                        .and_then(|rest| rest.split_once(':'))
                })
                .map_or_else(String::new, |(_, model)| model.trim().to_owned()),
            iperf3: first_line("iperf3", "--version").unwrap_or_default(),
            ovs: first_line("ovs-vswitchd", "--version"),
            tapswitch_bin: tapswitch_bin.display().to_string(),
        }
    }
}

/// The results file.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub timestamp: String,
    pub timestamp_unix: u64,
    pub complete: bool,
    pub elapsed_s: f64,
    pub machine: MachineInfo,
    pub config: RunConfig,
    pub metrics: Vec<MetricSpec>,
    /// Median over rounds, per system and metric.
    pub medians: BTreeMap<String, BTreeMap<String, f64>>,
    /// Median over rounds of (system / bridge in the same round), per system and metric.
    pub ratios_vs_bridge: BTreeMap<String, BTreeMap<String, f64>>,
    pub rounds: Vec<RoundSample>,
}

impl Results {
    /// Computes medians and ratios from the raw samples.
    pub fn build(
        config: &RunConfig,
        machine: MachineInfo,
        rounds: Vec<RoundSample>,
        interrupted: bool,
        elapsed_s: f64,
    ) -> Self {
        let metrics = metric_specs(&config.frame_sizes);
        let names = config.system_names();
        let (medians, ratios_vs_bridge) = summarise(&names, &metrics, &rounds, config.rounds);
        let timestamp_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            timestamp: iso8601_utc(timestamp_unix),
            timestamp_unix,
            complete: !interrupted,
            elapsed_s,
            machine,
            config: config.clone(),
            metrics,
            medians,
            ratios_vs_bridge,
            rounds,
        }
    }
}

type PerSystem = BTreeMap<String, BTreeMap<String, f64>>;

/// Medians per system and metric, and medians of per-round ratios against "bridge".
pub fn summarise(
    systems: &[&str],
    metrics: &[MetricSpec],
    samples: &[RoundSample],
    rounds: u32,
) -> (PerSystem, PerSystem) {
    let series = |system: &str, key: &str| -> Vec<Option<f64>> {
        (1..=rounds)
            .map(|round| {
                samples
                    .iter()
                    .find(|s| s.round == round && s.system == system)
                    .and_then(|s| s.metrics.get(key).copied())
            })
            .collect()
    };
    let mut medians = PerSystem::new();
    let mut ratios = PerSystem::new();
    for &system in systems {
        for metric in metrics {
            let values = series(system, &metric.key);
            let present: Vec<f64> = values.iter().flatten().copied().collect();
            if let Some(m) = median(&present) {
                medians
                    .entry(system.to_owned())
                    .or_default()
                    .insert(metric.key.clone(), m);
            }
            if system != "bridge" {
                if let Some(r) = median_of_ratios(&values, &series("bridge", &metric.key)) {
                    ratios
                        .entry(system.to_owned())
                        .or_default()
                        .insert(metric.key.clone(), r);
                }
            }
        }
    }
    (medians, ratios)
}

/// Writes `results` as pretty JSON, creating the directory if needed.
pub fn write_json<T: Serialize + ?Sized>(results: &T, path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_string_pretty(results).map_err(std::io::Error::other)?;
    std::fs::write(path, json + "\n")
}

/// Three significant digits, enough for numbers that drift ±20% between runs.
fn format_value(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// Lowest and highest per-round ratio of `system` to the bridge for `key`
/// (rounds where either has no number are left out).
pub fn ratio_spread(results: &Results, system: &str, key: &str) -> Option<(f64, f64)> {
    let value = |round: u32, name: &str| {
        results
            .rounds
            .iter()
            .find(|s| s.round == round && s.system == name)
            .and_then(|s| s.metrics.get(key).copied())
    };
    let ratios: Vec<f64> = results
        .rounds
        .iter()
        .filter(|s| s.system == system)
        .filter_map(|s| {
            let bridge = value(s.round, "bridge").filter(|b| *b > 0.0)?;
            Some(value(s.round, system)? / bridge)
        })
        .collect();
    let low = ratios.iter().copied().reduce(f64::min)?;
    let high = ratios.iter().copied().reduce(f64::max)?;
    Some((low, high))
}

/// The final table: medians per system and, for each other system, the
/// median of its per-round ratios to the bridge.
pub fn table(results: &Results) -> String {
    let systems = results.config.system_names();
    let mut header = vec!["metric".to_owned(), "better".to_owned()];
    for system in &systems {
        header.push(system.to_string());
        if *system != "bridge" {
            header.push("×bridge (rounds min–max)".to_owned());
        }
    }
    let mut rows = vec![header];
    for metric in &results.metrics {
        // A metric this run did not measure (e.g. `--sparse-only`) gets no row.
        if !results
            .medians
            .values()
            .any(|m| m.contains_key(&metric.key))
        {
            continue;
        }
        let mut row = vec![
            metric.label.clone(),
            if metric.higher_is_better {
                "higher"
            } else {
                "lower"
            }
            .to_owned(),
        ];
        for system in &systems {
            let cell = |map: &PerSystem| {
                map.get(*system)
                    .and_then(|m| m.get(&metric.key))
                    .map_or_else(|| "-".to_owned(), |v| format_value(*v))
            };
            row.push(cell(&results.medians));
            if *system != "bridge" {
                let spread = ratio_spread(results, system, &metric.key)
                    .map_or_else(String::new, |(low, high)| {
                        format!(" ({}–{})", format_value(low), format_value(high))
                    });
                row.push(cell(&results.ratios_vs_bridge) + &spread);
            }
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|col| {
            rows.iter()
                .map(|row| row[col].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(col, (cell, width))| {
                let pad = width - cell.chars().count();
                if col == 0 {
                    format!("{cell}{}", " ".repeat(pad))
                } else {
                    format!("{}{cell}", " ".repeat(pad))
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    let failed: Vec<String> = results
        .rounds
        .iter()
        .filter_map(|s| {
            s.error.as_ref().map(|e| {
                format!(
                    "round {} {}: {}",
                    s.round,
                    s.system,
                    e.lines().next().unwrap_or("")
                )
            })
        })
        .collect();
    if !failed.is_empty() {
        out.push_str("\nfailed rounds (excluded from medians):\n");
        for line in failed {
            out.push_str(&format!("  {line}\n"));
        }
    }
    for (system, reason) in &results.config.skipped {
        out.push_str(&format!("skipped {system}: {reason}\n"));
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (civil-from-days, proleptic Gregorian).
pub fn iso8601_utc(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let seconds_of_day = unix_seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds_of_day / 3600,
        seconds_of_day / 60 % 60,
        seconds_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_known_dates() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601_utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    fn sample(round: u32, system: &str, value: Option<f64>) -> RoundSample {
        let mut s = RoundSample::new(round, system);
        if let Some(v) = value {
            s.set("tcp_1_stream_gbps", v);
        }
        s
    }

    #[test]
    fn summary_pairs_rounds_and_skips_failed_ones() {
        let metrics = metric_specs(&[64]);
        let samples = vec![
            sample(1, "bridge", Some(10.0)),
            sample(1, "tapswitch", Some(8.0)),
            sample(2, "bridge", Some(20.0)),
            sample(2, "tapswitch", None), // failed round
            sample(3, "bridge", Some(12.0)),
            sample(3, "tapswitch", Some(6.0)),
        ];
        let (medians, ratios) = summarise(&["bridge", "tapswitch"], &metrics, &samples, 3);
        assert_eq!(medians["bridge"]["tcp_1_stream_gbps"], 12.0);
        assert_eq!(medians["tapswitch"]["tcp_1_stream_gbps"], 7.0);
        // Ratios 0.8 and 0.5 (round 2 has no tapswitch number).
        assert!((ratios["tapswitch"]["tcp_1_stream_gbps"] - 0.65).abs() < 1e-12);
        assert!(!ratios.contains_key("bridge"));
    }

    #[test]
    fn value_formatting_keeps_three_significant_digits() {
        assert_eq!(format_value(17.64), "17.6");
        assert_eq!(format_value(812.4), "812");
        assert_eq!(format_value(0.8123), "0.812");
        assert_eq!(format_value(1.444), "1.44");
    }
}
