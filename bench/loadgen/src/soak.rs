//! `tapswitch-bench soak`: one switch under mixed traffic for a long time,
//! proving that memory and file descriptors stay flat.
//!
//! Five namespaces, four of them with a port each (A..D), the fifth for port
//! churn. While the soak runs, at the same time and each in a loop:
//! - TCP bulk: iperf3 from A to B;
//! - request/response: UDP round trips from C to D (`rr-client`);
//! - a flood: paced UDP from C to an address whose MAC nobody has, so every
//!   frame is unknown unicast, flooded to every other port;
//! - port churn: a port in E added and deleted through the control socket;
//! - `port set`: C's MAC limit and A's queue length changed back and forth.
//!
//! The switch's fd count and RSS are taken with everything quiet after a
//! warm-up (the same load, so lazily made things exist) and again with
//! everything quiet at the end; the soak fails when fds grew at all or RSS
//! grew beyond the tolerance.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::iperf::{self, TcpTest};
use crate::netns::{self, Endpoint, OwnedNetns};
use crate::proc::{self, OwnedChild};
use crate::rr::RrReport;
use crate::signals;

/// Upper bounds (µs) of the switch's loop-turn histogram (`loop_stats.turn_us`).
const TURN_BUCKETS_US: [u64; 16] = [
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536,
];

/// The flood's target: an address in the endpoints' subnet whose MAC no port has.
const FLOOD_ADDRESS: &str = "10.77.0.200";
const FLOOD_MAC: &str = "02:00:5e:77:00:c8";

pub struct SoakConfig {
    pub duration: Duration,
    pub warmup: Duration,
    pub tapswitch_bin: PathBuf,
    pub output: PathBuf,
    /// RSS growth allowed between the quiet points, KiB.
    pub rss_tolerance_kib: u64,
    /// Packets per second of the unknown-unicast flood.
    pub flood_pps: u32,
}

/// The switch's resources at one quiet point.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Resources {
    pub fds: usize,
    pub rss_kib: u64,
}

/// One sample taken while the load runs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub at_s: f64,
    pub fds: usize,
    pub rss_kib: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct WorkloadCount {
    pub runs: u64,
    pub failures: u64,
    /// The last failure's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub duration_s: f64,
    pub start: Resources,
    pub end: Resources,
    pub rss_tolerance_kib: u64,
    pub samples: Vec<Sample>,
    /// Frames written to ports (each copy of a flood counts).
    pub forwarded_frames: u64,
    pub received_frames: u64,
    /// Drops over every port, by reason.
    pub drops: serde_json::Map<String, Value>,
    /// Loop latency: percentiles of the busy loop turns' durations (µs, bucket upper bounds).
    pub loop_turn_us: Vec<(String, Option<u64>)>,
    pub loop_turns: u64,
    /// Request/response round trips, median of the runs' percentiles (µs).
    pub rr_p50_us: Option<f64>,
    pub rr_p99_us: Option<f64>,
    pub tcp_gbps_median: Option<f64>,
    pub workloads: serde_json::Map<String, Value>,
    pub failures: Vec<String>,
}

/// Runs the soak; `Err` for setup failures, `Ok` with `failures` listing what
/// went wrong under load.
pub fn run(config: &SoakConfig) -> Result<SoakReport, String> {
    let tag = std::process::id() % 100_000;
    let names: Vec<String> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| format!("tss-{tag}-{n}"))
        .collect();
    let namespaces = names
        .iter()
        .map(|name| OwnedNetns::create(name))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let work = WorkDir::create(&format!("/tmp/tapswitch-soak-{tag}"))?;
    let devices: Vec<String> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| format!("tss{tag}{n}"))
        .collect();
    let control = work.0.join("control.sock");
    let mut switch = start_switch(config, &work.0, &control, &devices, &names)?;
    let pid = switch.pid();
    let endpoints: Vec<Endpoint> = (0..4)
        .map(|i| Endpoint {
            netns: names[i].clone(),
            device: devices[i].clone(),
            address: format!("10.77.0.{}", i + 1),
        })
        .collect();
    netns::configure_pair(&endpoints[0], &endpoints[1]).map_err(|e| e.to_string())?;
    netns::configure_pair(&endpoints[2], &endpoints[3]).map_err(|e| e.to_string())?;
    proc::ip(&[
        "-n",
        &names[2],
        "neigh",
        "replace",
        FLOOD_ADDRESS,
        "lladdr",
        FLOOD_MAC,
        "dev",
        &devices[2],
        "nud",
        "permanent",
    ])
    .map_err(|e| e.to_string())?;
    let self_exe = std::env::current_exe().map_err(|e| format!("finding our own binary: {e}"))?;
    let rr_server_addr = format!("{}:7001", endpoints[3].address);
    let mut rr_server = Command::new("ip");
    rr_server
        .args(["netns", "exec", &names[3]])
        .arg(&self_exe)
        .args(["rr-server", "--bind", &rr_server_addr])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _rr_server =
        OwnedChild::spawn(rr_server, Duration::from_secs(2)).map_err(|e| e.to_string())?;

    let load = Load {
        bin: config.tapswitch_bin.clone(),
        control: control.clone(),
        self_exe,
        endpoints,
        churn_port: format!("{}@{}", devices[4], names[4]),
        churn_name: devices[4].clone(),
        rr_server: rr_server_addr,
        flood_pps: config.flood_pps,
    };
    let load = Arc::new(load);

    eprintln!(
        "tapswitch-bench soak: warm-up {} s, then {} s of TCP bulk, request/response, \
         unknown-unicast flood ({} pps), port churn and port set",
        config.warmup.as_secs(),
        config.duration.as_secs(),
        config.flood_pps
    );
    let warmup = run_load(&load, config.warmup, pid, &mut Vec::new());
    let mut failures = Vec::new();
    if !switch_alive(&mut switch) {
        return Err("the switch exited during the warm-up".into());
    }
    drop(warmup);
    let start = quiet_resources(pid)?;
    let before = stats(&load)?;
    let started = Instant::now();
    let mut samples = Vec::new();
    let counts = run_load(&load, config.duration, pid, &mut samples);
    let duration = started.elapsed();
    if !switch_alive(&mut switch) {
        failures.push("the switch exited under load".to_owned());
        return Err(failures.join("; "));
    }
    let end = quiet_resources(pid)?;
    let after = stats(&load)?;

    let (forwarded, received, drops) = port_totals(&before, &after);
    let turns = histogram_delta(&before, &after);
    let loop_turns = turns.iter().sum();
    let loop_turn_us = [50.0, 90.0, 99.0, 99.9]
        .iter()
        .map(|&pct| (format!("p{pct}"), histogram_percentile(&turns, pct)))
        .collect();
    if end.fds > start.fds {
        failures.push(format!(
            "fds grew from {} to {} (quiet before and after)",
            start.fds, end.fds
        ));
    }
    if end.rss_kib > start.rss_kib + config.rss_tolerance_kib {
        failures.push(format!(
            "RSS grew from {} KiB to {} KiB, beyond the tolerance of {} KiB",
            start.rss_kib, end.rss_kib, config.rss_tolerance_kib
        ));
    }
    let mut workloads = serde_json::Map::new();
    for (name, count) in [
        ("tcp_bulk", &counts.tcp),
        ("request_response", &counts.rr),
        ("flood", &counts.flood),
        ("port_churn", &counts.churn),
        ("port_set", &counts.set),
    ] {
        if count.runs == 0 {
            failures.push(format!(
                "{name} never completed a run (last failure: {})",
                count.last_failure.as_deref().unwrap_or("none")
            ));
        }
        workloads.insert(
            name.to_owned(),
            serde_json::to_value(count).expect("plain struct"),
        );
    }
    let report = SoakReport {
        duration_s: duration.as_secs_f64(),
        start,
        end,
        rss_tolerance_kib: config.rss_tolerance_kib,
        samples,
        forwarded_frames: forwarded,
        received_frames: received,
        drops,
        loop_turn_us,
        loop_turns,
        rr_p50_us: crate::stats::median(&counts.rr_p50_us),
        rr_p99_us: crate::stats::median(&counts.rr_p99_us),
        tcp_gbps_median: crate::stats::median(&counts.tcp_gbps),
        workloads,
        failures,
    };
    let json = serde_json::to_string_pretty(&report).expect("plain struct");
    if let Some(dir) = config.output.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&config.output, json + "\n")
        .map_err(|e| format!("writing {}: {e}", config.output.display()))?;
    drop(switch);
    drop(namespaces);
    Ok(report)
}

/// A scratch directory removed at the end.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create(path: &str) -> Result<Self, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("creating {path}: {e}"))?;
        Ok(Self(PathBuf::from(path)))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start_switch(
    config: &SoakConfig,
    work: &Path,
    control: &Path,
    devices: &[String],
    names: &[String],
) -> Result<OwnedChild, String> {
    let log = work.join("tapswitch.log");
    let log_file = std::fs::File::create(&log).map_err(|e| format!("creating log: {e}"))?;
    let mut command = Command::new(&config.tapswitch_bin);
    command
        .arg("--control")
        .arg(control)
        .arg("run")
        .arg("--state-dir")
        .arg(work.join("state"));
    for i in 0..4 {
        command
            .arg("--port")
            .arg(format!("{}@{}", devices[i], names[i]));
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file);
    let mut child =
        OwnedChild::spawn(command, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let stdout = child.child_mut().stdout.take().expect("stdout was piped");
    let (ready_tx, ready_rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("tapswitch ready") {
                let _ = ready_tx.send(());
            }
        }
    });
    if ready_rx.recv_timeout(Duration::from_secs(15)).is_err() {
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        return Err(format!("tapswitch did not get ready; its log:\n{tail}"));
    }
    Ok(child)
}

fn switch_alive(switch: &mut OwnedChild) -> bool {
    matches!(switch.try_status(), Ok(None))
}

/// What the load threads need.
struct Load {
    bin: PathBuf,
    control: PathBuf,
    self_exe: PathBuf,
    endpoints: Vec<Endpoint>,
    churn_port: String,
    churn_name: String,
    rr_server: String,
    flood_pps: u32,
}

impl Load {
    /// `tapswitch ARGS --json` against the soak's switch.
    fn ctl(&self, args: &[&str]) -> Result<Value, String> {
        let output = Command::new(&self.bin)
            .arg("--control")
            .arg(&self.control)
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running tapswitch: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "tapswitch {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| format!("tapswitch {}: {e}", args.join(" ")))
    }

    fn in_netns(&self, netns: &str, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["netns", "exec", netns];
        full.extend_from_slice(args);
        proc::run("ip", &full).map_err(|e| e.to_string())
    }
}

/// Counts of one load phase.
#[derive(Default)]
struct Counts {
    tcp: WorkloadCount,
    rr: WorkloadCount,
    flood: WorkloadCount,
    churn: WorkloadCount,
    set: WorkloadCount,
    tcp_gbps: Vec<f64>,
    rr_p50_us: Vec<f64>,
    rr_p99_us: Vec<f64>,
}

fn record<T>(count: &mut WorkloadCount, result: Result<T, String>) -> Option<T> {
    match result {
        Ok(value) => {
            count.runs += 1;
            Some(value)
        }
        Err(message) => {
            count.failures += 1;
            count.last_failure = Some(message);
            None
        }
    }
}

/// Runs every workload for `length`, sampling the switch's fds and RSS every
/// 10 s into `samples`; returns once all of them stopped.
fn run_load(load: &Arc<Load>, length: Duration, pid: u32, samples: &mut Vec<Sample>) -> Counts {
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + length;
    let running = |stop: &AtomicBool| !stop.load(Ordering::SeqCst) && !signals::stop_requested();
    let spawn = |work: fn(&Load, &AtomicBool, &mut Counts, Instant)| -> JoinHandle<Counts> {
        let load = Arc::clone(load);
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut counts = Counts::default();
            work(&load, &stop, &mut counts, deadline);
            counts
        })
    };
    let threads = [
        spawn(tcp_bulk),
        spawn(request_response),
        spawn(flood),
        spawn(port_churn),
        spawn(port_set),
    ];
    let started = Instant::now();
    let sampled = AtomicU64::new(0);
    while Instant::now() < deadline && running(&stop) {
        thread::sleep(Duration::from_millis(200));
        let second = started.elapsed().as_secs();
        if second / 10 > sampled.load(Ordering::Relaxed) {
            sampled.store(second / 10, Ordering::Relaxed);
            if let Ok(now) = resources(pid) {
                samples.push(Sample {
                    at_s: started.elapsed().as_secs_f64(),
                    fds: now.fds,
                    rss_kib: now.rss_kib,
                });
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut total = Counts::default();
    for thread in threads {
        let Ok(counts) = thread.join() else { continue };
        for (mine, theirs) in [
            (&mut total.tcp, counts.tcp),
            (&mut total.rr, counts.rr),
            (&mut total.flood, counts.flood),
            (&mut total.churn, counts.churn),
            (&mut total.set, counts.set),
        ] {
            mine.runs += theirs.runs;
            mine.failures += theirs.failures;
            if theirs.last_failure.is_some() {
                mine.last_failure = theirs.last_failure;
            }
        }
        total.tcp_gbps.extend(counts.tcp_gbps);
        total.rr_p50_us.extend(counts.rr_p50_us);
        total.rr_p99_us.extend(counts.rr_p99_us);
    }
    total
}

/// Seconds left before `deadline`, at most `cap`; `None` when under one.
fn seconds_left(deadline: Instant, cap: u64) -> Option<u64> {
    let left = deadline.saturating_duration_since(Instant::now()).as_secs();
    (left >= 1).then(|| left.min(cap))
}

fn tcp_bulk(load: &Load, stop: &AtomicBool, counts: &mut Counts, deadline: Instant) {
    while !stop.load(Ordering::SeqCst) {
        let Some(seconds) = seconds_left(deadline, 10) else {
            return;
        };
        let test = TcpTest {
            server_netns: load.endpoints[1].netns.clone(),
            client_netns: load.endpoints[0].netns.clone(),
            server_address: load.endpoints[1].address.clone(),
            port: 5201,
            streams: 1,
            seconds: seconds as u32,
        };
        let result = iperf::run_tcp(&test).map_err(|e| e.to_string());
        if let Some(report) = record(&mut counts.tcp, result) {
            counts.tcp_gbps.push(report.gbps);
        }
    }
}

fn request_response(load: &Load, stop: &AtomicBool, counts: &mut Counts, deadline: Instant) {
    let exe = load.self_exe.to_string_lossy().into_owned();
    while !stop.load(Ordering::SeqCst) {
        let Some(seconds) = seconds_left(deadline, 3) else {
            return;
        };
        let budget = (seconds * 1000).to_string();
        let result = load
            .in_netns(
                &load.endpoints[2].netns,
                &[
                    &exe,
                    "rr-client",
                    "--server",
                    &load.rr_server,
                    "--count",
                    "1000000",
                    "--budget-ms",
                    &budget,
                    "--warmup",
                    "100",
                ],
            )
            .and_then(|out| {
                serde_json::from_str::<RrReport>(out.trim()).map_err(|e| format!("{e}: {out}"))
            });
        if let Some(report) = record(&mut counts.rr, result) {
            counts.rr_p50_us.push(report.p50_ns as f64 / 1000.0);
            counts.rr_p99_us.push(report.p99_ns as f64 / 1000.0);
        }
    }
}

fn flood(load: &Load, stop: &AtomicBool, counts: &mut Counts, deadline: Instant) {
    let exe = load.self_exe.to_string_lossy().into_owned();
    let dst = format!("{FLOOD_ADDRESS}:9");
    let pps = load.flood_pps.to_string();
    while !stop.load(Ordering::SeqCst) {
        let Some(seconds) = seconds_left(deadline, 3) else {
            return;
        };
        let duration = (seconds * 1000).to_string();
        let result = load.in_netns(
            &load.endpoints[2].netns,
            &[
                &exe,
                "blast",
                "--dst",
                &dst,
                "--frame-size",
                "64",
                "--pps",
                &pps,
                "--duration-ms",
                &duration,
            ],
        );
        record(&mut counts.flood, result);
    }
}

fn port_churn(load: &Load, stop: &AtomicBool, counts: &mut Counts, deadline: Instant) {
    while !stop.load(Ordering::SeqCst) && seconds_left(deadline, 1).is_some() {
        let result = load.ctl(&["port", "add", &load.churn_port]).and_then(|_| {
            thread::sleep(Duration::from_millis(300));
            load.ctl(&["port", "del", &load.churn_name])
        });
        record(&mut counts.churn, result);
        thread::sleep(Duration::from_millis(300));
    }
}

fn port_set(load: &Load, stop: &AtomicBool, counts: &mut Counts, deadline: Instant) {
    let changes: [(&str, &[&str]); 4] = [
        (&load.endpoints[2].device, &["--mac-limit", "32"]),
        (&load.endpoints[0].device, &["--txqueuelen", "2000"]),
        (&load.endpoints[2].device, &["--mac-limit", "none"]),
        (&load.endpoints[0].device, &["--txqueuelen", "1000"]),
    ];
    let mut next = 0;
    while !stop.load(Ordering::SeqCst) && seconds_left(deadline, 1).is_some() {
        let (port, settings) = changes[next % changes.len()];
        next += 1;
        let mut args = vec!["port", "set", port];
        args.extend_from_slice(settings);
        record(&mut counts.set, load.ctl(&args));
        thread::sleep(Duration::from_millis(500));
    }
}

/// The switch's fds and RSS now.
fn resources(pid: u32) -> Result<Resources, String> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| format!("/proc/{pid}/fd: {e}"))?
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))?;
    Ok(Resources { fds, rss_kib })
}

/// Resources once the load has stopped and the switch has settled (control
/// threads gone, the churned port's TAP closed).
fn quiet_resources(pid: u32) -> Result<Resources, String> {
    thread::sleep(Duration::from_secs(2));
    resources(pid)
}

fn stats(load: &Load) -> Result<Value, String> {
    load.ctl(&["stats"])
}

/// Frames written to and read from the ports, and drops by reason, between
/// two `stats` replies (ports present in both).
fn port_totals(before: &Value, after: &Value) -> (u64, u64, serde_json::Map<String, Value>) {
    let mut forwarded = 0;
    let mut received = 0;
    let mut drops: std::collections::BTreeMap<String, u64> = Default::default();
    let empty = Vec::new();
    let earlier = before["ports"].as_array().unwrap_or(&empty);
    for port in after["ports"].as_array().unwrap_or(&empty) {
        let was = earlier.iter().find(|p| p["name"] == port["name"]);
        let counter = |value: Option<&Value>, key: &str| {
            value.and_then(|v| v["counters"][key].as_u64()).unwrap_or(0)
        };
        forwarded += counter(Some(port), "tx_frames").saturating_sub(counter(was, "tx_frames"));
        received += counter(Some(port), "rx_frames").saturating_sub(counter(was, "rx_frames"));
        if let Some(reasons) = port["counters"]["drops"].as_object() {
            for (reason, count) in reasons {
                let old = was
                    .and_then(|w| w["counters"]["drops"][reason].as_u64())
                    .unwrap_or(0);
                *drops.entry(reason.clone()).or_default() +=
                    count.as_u64().unwrap_or(0).saturating_sub(old);
            }
        }
    }
    let drops = drops
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(reason, count)| (reason, Value::from(count)))
        .collect();
    (forwarded, received, drops)
}

/// The loop-turn histogram's growth between two `stats` replies.
fn histogram_delta(before: &Value, after: &Value) -> Vec<u64> {
    let buckets = |v: &Value| -> Vec<u64> {
        v["loop_stats"]["turn_us"]
            .as_array()
            .map(|a| a.iter().map(|n| n.as_u64().unwrap_or(0)).collect())
            .unwrap_or_default()
    };
    let (old, new) = (buckets(before), buckets(after));
    new.iter()
        .enumerate()
        .map(|(i, n)| n.saturating_sub(old.get(i).copied().unwrap_or(0)))
        .collect()
}

/// The upper bound of the bucket holding percentile `pct`; `None` when empty
/// or in the open last bucket.
fn histogram_percentile(buckets: &[u64], pct: f64) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((pct / 100.0) * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, count) in buckets.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return TURN_BUCKETS_US.get(i).copied();
        }
    }
    None
}

/// The report for people.
pub fn table(report: &SoakReport) -> String {
    let mut out = String::new();
    let line = |out: &mut String, text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(&mut out, format!("soak: {:.0} s", report.duration_s));
    line(
        &mut out,
        format!(
            "fds: {} -> {}    RSS: {} KiB -> {} KiB (tolerance {} KiB)",
            report.start.fds,
            report.end.fds,
            report.start.rss_kib,
            report.end.rss_kib,
            report.rss_tolerance_kib
        ),
    );
    line(
        &mut out,
        format!(
            "frames: {} forwarded, {} received",
            report.forwarded_frames, report.received_frames
        ),
    );
    let drops: Vec<String> = report
        .drops
        .iter()
        .map(|(reason, count)| format!("{reason}={count}"))
        .collect();
    line(
        &mut out,
        format!(
            "drops: {}",
            if drops.is_empty() {
                "none".to_owned()
            } else {
                drops.join(" ")
            }
        ),
    );
    let turns: Vec<String> = report
        .loop_turn_us
        .iter()
        .map(|(name, bound)| match bound {
            Some(bound) => format!("{name} <= {bound} us"),
            None => format!("{name} > 65536 us or no turns"),
        })
        .collect();
    line(
        &mut out,
        format!(
            "loop latency ({} busy turns): {}",
            report.loop_turns,
            turns.join(", ")
        ),
    );
    let show = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.1}"));
    line(
        &mut out,
        format!(
            "request/response: p50 {} us, p99 {} us (medians of runs); TCP {} Gb/s (median)",
            show(report.rr_p50_us),
            show(report.rr_p99_us),
            show(report.tcp_gbps_median)
        ),
    );
    for (name, count) in &report.workloads {
        line(
            &mut out,
            format!(
                "  {name}: {} runs, {} failed{}",
                count["runs"],
                count["failures"],
                count["last_failure"]
                    .as_str()
                    .map(|f| format!(" (last: {f})"))
                    .unwrap_or_default()
            ),
        );
    }
    if report.failures.is_empty() {
        line(
            &mut out,
            "result: flat (fds did not grow, RSS within tolerance)".into(),
        );
    } else {
        for failure in &report.failures {
            line(&mut out, format!("FAILED: {failure}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_bucket_bounds() {
        let mut buckets = vec![0; TURN_BUCKETS_US.len() + 1];
        buckets[2] = 90; // <= 4 us
        buckets[6] = 9; // <= 64 us
        buckets[10] = 1; // <= 1024 us
        assert_eq!(histogram_percentile(&buckets, 50.0), Some(4));
        assert_eq!(histogram_percentile(&buckets, 90.0), Some(4));
        assert_eq!(histogram_percentile(&buckets, 99.0), Some(64));
        assert_eq!(histogram_percentile(&buckets, 99.9), Some(1024));
        assert_eq!(histogram_percentile(&[0; 17], 50.0), None);
    }

    #[test]
    fn totals_count_only_what_happened_between_the_replies() {
        let before = serde_json::json!({"ports": [
            {"name": "a", "counters": {"tx_frames": 10, "rx_frames": 5, "drops": {"no_egress": 1}}},
        ]});
        let after = serde_json::json!({"ports": [
            {"name": "a", "counters": {"tx_frames": 25, "rx_frames": 9, "drops": {"no_egress": 4}}},
            {"name": "e", "counters": {"tx_frames": 3, "rx_frames": 0, "drops": {"no_egress": 0}}},
        ]});
        let (forwarded, received, drops) = port_totals(&before, &after);
        assert_eq!((forwarded, received), (18, 4));
        assert_eq!(drops["no_egress"], 3);
        assert!(!drops.contains_key("storm"));
    }
}
