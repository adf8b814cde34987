//! The orchestrator: interleaved rounds over the systems under test, every
//! metric measured per system per round, results written as JSON.

use crate::blast::{BlastReport, SinkReport};
use crate::cpu::{self, CpuError};
use crate::iperf::{self, IperfError, TcpReport, TcpTest};
use crate::netns::{NetnsError, OwnedNetns};
use crate::ping;
use crate::proc::{self, OwnedChild, ProcError};
use crate::report::{self, MachineInfo, Results, RoundSample};
use crate::rr::RrReport;
use crate::search::{self, SearchParams, SearchResult, TrialOutcome};
use crate::signals;
use crate::systems::{self, AttachedSystem, RunContext, SystemError, SystemKind};
use serde::Serialize;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const RR_PORT: u16 = 9000;
const SINK_PORT: u16 = 9001;
const IPERF_PORT: u16 = 5201;
/// Request/response at 1k requests per second.
const PACED_RR_INTERVAL: Duration = Duration::from_millis(1);

/// Failures that end a system's round (or, for setup, the run).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("interrupted")]
    Interrupted,
    #[error("the run must include the bridge: every ratio is against it")]
    NoBaseline,
    #[error(transparent)]
    System(#[from] SystemError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Command(#[from] ProcError),
    #[error(transparent)]
    Iperf(#[from] IperfError),
    #[error(transparent)]
    Cpu(#[from] CpuError),
    #[error("{tool} printed something that is not its JSON report: {detail}: {text}")]
    ToolOutput {
        tool: &'static str,
        detail: String,
        text: String,
    },
    #[error("sink: {0}")]
    Sink(String),
    #[error("{system} stopped forwarding: its process exited during the round")]
    SwitchDied { system: &'static str },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot find this program's own path to run its subcommands: {0}")]
    SelfPath(std::io::Error),
}

/// What to run and how long each measurement lasts.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    pub rounds: u32,
    pub systems: Vec<SystemKind>,
    pub tcp_seconds: u32,
    pub rr_count: u32,
    pub rr_budget_ms: u64,
    pub trial_ms: u64,
    pub search_trials: u32,
    pub frame_sizes: Vec<usize>,
    /// Pings per 2 ms series (the 10 ms series sends a quarter), and paced requests.
    pub sparse_pings: u32,
    /// Only the latency tests (RR, sparse ping, paced RR): no TCP, no packet rates.
    pub sparse_only: bool,
    /// tapswitch at several settings, each a system of its own in every round
    /// (`--threads`, `--variant`); plain `tapswitch` at the defaults when empty.
    pub variants: Vec<Variant>,
    pub tapswitch_bin: PathBuf,
    pub tapswitch_args: Vec<String>,
    /// Another tapswitch build measured in the same rounds, right after `tapswitch`, as
    /// system `tapswitch-baseline`: a before/after comparison within one run.
    pub baseline_tapswitch: Option<PathBuf>,
    pub output: PathBuf,
    /// Systems left out, with the reason (e.g. Open vSwitch not installed).
    pub skipped: Vec<(String, String)>,
}

/// The name of the baseline build's entry in the results.
pub const BASELINE: &str = "tapswitch-baseline";

/// tapswitch at some `[switch]` settings, measured as a system of its own.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Variant {
    /// Its name in the results (leaked once: names are `&'static str` throughout).
    pub name: &'static str,
    /// `KEY=VALUE` lines of the `[switch]` table of its config file.
    pub settings: Vec<String>,
}

impl Variant {
    /// `NAME:KEY=VALUE,KEY=VALUE` (e.g. `fixed:adaptive_poll_pct=0`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, settings) = text
            .split_once(':')
            .ok_or_else(|| format!("variant `{text}`: expected NAME:KEY=VALUE[,KEY=VALUE]"))?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!(
                "variant `{text}`: the name must be letters, digits and `-`"
            ));
        }
        let settings: Vec<String> = settings.split(',').map(str::to_owned).collect();
        if let Some(bad) = settings.iter().find(|s| {
            s.split_once('=')
                .is_none_or(|(k, v)| k.is_empty() || v.is_empty())
        }) {
            return Err(format!("variant `{text}`: `{bad}` is not KEY=VALUE"));
        }
        Ok(Self::new(&format!("tapswitch-{name}"), settings))
    }

    /// tapswitch with `threads = N`.
    pub fn threads(threads: usize) -> Self {
        Self::new(
            &format!("tapswitch-t{threads}"),
            vec![format!("threads={threads}")],
        )
    }

    fn new(name: &str, settings: Vec<String>) -> Self {
        Self {
            name: Box::leak(name.to_owned().into_boxed_str()),
            settings,
        }
    }

    /// The config file's text.
    pub fn config_text(&self) -> String {
        let mut text = String::from("[switch]\n");
        for setting in &self.settings {
            let (key, value) = setting.split_once('=').expect("checked by parse");
            text.push_str(&format!("{} = {}\n", key.trim(), value.trim()));
        }
        text
    }
}

impl RunConfig {
    /// Every system measured per round, in order, with its name in the results and the
    /// tapswitch binary it runs (the baseline build is a second tapswitch entry).
    pub fn entrants(&self) -> Vec<(SystemKind, &'static str, PathBuf, Option<&Variant>)> {
        let mut entrants = Vec::new();
        for &kind in &self.systems {
            if kind == SystemKind::Tapswitch && !self.variants.is_empty() {
                for variant in &self.variants {
                    entrants.push((
                        kind,
                        variant.name,
                        self.tapswitch_bin.clone(),
                        Some(variant),
                    ));
                }
            } else {
                entrants.push((kind, kind.name(), self.tapswitch_bin.clone(), None));
            }
            if let (SystemKind::Tapswitch, Some(baseline)) = (kind, &self.baseline_tapswitch) {
                entrants.push((kind, BASELINE, baseline.clone(), None));
            }
        }
        entrants
    }

    /// The names of [`RunConfig::entrants`], as the results and the table list them.
    pub fn system_names(&self) -> Vec<&'static str> {
        self.entrants()
            .into_iter()
            .map(|(_, name, _, _)| name)
            .collect()
    }
}

/// Runs the whole benchmark and writes the results file; returns the results.
pub fn run(config: RunConfig) -> Result<Results, RunError> {
    let (run_id, mut work_dir_guard) = start_run(&config.systems)?;
    let work_dir = work_dir_guard.path().to_owned();
    let netns_a = OwnedNetns::create(&format!("tsb-{run_id}-a"))?;
    let netns_b = OwnedNetns::create(&format!("tsb-{run_id}-b"))?;
    let ctx = RunContext {
        run_id,
        netns_a: netns_a.name().to_owned(),
        netns_b: netns_b.name().to_owned(),
        work_dir,
        tapswitch_bin: config.tapswitch_bin.clone(),
        tapswitch_args: config.tapswitch_args.clone(),
        extra_netns: Vec::new(),
    };
    let self_exe = std::env::current_exe().map_err(RunError::SelfPath)?;
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut trial_id = 0u32;
    let mut interrupted = false;
    'rounds: for round in 1..=config.rounds {
        for (kind, name, tapswitch_bin, variant) in config.entrants() {
            if signals::stop_requested() {
                interrupted = true;
                break 'rounds;
            }
            let label = format!("r{round}-{name}");
            eprintln!(
                "[{:>5.0}s] round {round}/{} {name}: setting up",
                started.elapsed().as_secs_f64(),
                config.rounds,
            );
            let mut sample = RoundSample::new(round, name);
            let mut tapswitch_args = ctx.tapswitch_args.clone();
            if let Some(variant) = variant {
                let path = ctx.work_dir.join(format!("{name}.toml"));
                std::fs::write(&path, variant.config_text()).map_err(|source| RunError::Write {
                    path: path.display().to_string(),
                    source,
                })?;
                tapswitch_args.extend(["--config".to_owned(), path.display().to_string()]);
            }
            let ctx = RunContext {
                tapswitch_bin,
                tapswitch_args,
                ..ctx.clone()
            };
            let outcome = systems::attach(kind, &ctx, &label)
                .map_err(RunError::from)
                .and_then(|mut system| {
                    let measured = measure(
                        &mut system,
                        &ctx,
                        &config,
                        &self_exe,
                        &mut trial_id,
                        &mut sample,
                        started,
                    );
                    sample.warnings.extend(system.detach());
                    measured
                });
            if let Err(error) = outcome {
                if signals::stop_requested() {
                    interrupted = true;
                    sample.error = Some("interrupted".into());
                    samples.push(sample);
                    break 'rounds;
                }
                sample.error = Some(error.to_string());
            }
            print_round_problems(name, round, &sample.error, &sample.warnings);
            samples.push(sample);
        }
    }
    work_dir_guard.keep_if(
        samples
            .iter()
            .any(|s| s.error.is_some() || !s.warnings.is_empty()),
    );
    let machine = MachineInfo::collect(&config.tapswitch_bin);
    let results = Results::build(
        &config,
        machine,
        samples,
        interrupted,
        started.elapsed().as_secs_f64(),
    );
    write_results(&results, &config.output)?;
    if interrupted {
        return Err(RunError::Interrupted);
    }
    Ok(results)
}

/// What every run starts with: the bridge among the systems (every ratio is
/// against it), Ctrl-C handled, and a scratch directory named after the run id.
pub(crate) fn start_run(systems: &[SystemKind]) -> Result<(u32, RemoveDirOnDrop), RunError> {
    if !systems.contains(&SystemKind::Bridge) {
        return Err(RunError::NoBaseline);
    }
    signals::install();
    let run_id = std::process::id();
    Ok((run_id, RemoveDirOnDrop::create(run_id)?))
}

/// The run's scratch directory, removed at the end unless a round went wrong.
pub(crate) struct RemoveDirOnDrop {
    path: PathBuf,
    keep: bool,
}

impl RemoveDirOnDrop {
    /// Creates the run's scratch directory, `tsb-<run id>` in the temp directory.
    pub(crate) fn create(run_id: u32) -> Result<Self, RunError> {
        let path = std::env::temp_dir().join(format!("tsb-{run_id}"));
        std::fs::create_dir_all(&path).map_err(|source| RunError::Write {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self { path, keep: false })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Keeps the directory when a round went wrong: the switch and OVS logs there
    /// are what explains it.
    pub(crate) fn keep_if(&mut self, something_went_wrong: bool) {
        if something_went_wrong {
            self.keep = true;
            eprintln!("logs kept in {}", self.path.display());
        }
    }
}

/// Tells on stderr how a system's round went wrong, if it did.
pub(crate) fn print_round_problems(
    system: &str,
    round: u32,
    error: &Option<String>,
    warnings: &[String],
) {
    if let Some(error) = error {
        eprintln!("    {system} round {round} failed: {error}");
    }
    for warning in warnings {
        eprintln!("    warning: {warning}");
    }
}

impl Drop for RemoveDirOnDrop {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

pub(crate) fn check_stop() -> Result<(), RunError> {
    if signals::stop_requested() {
        Err(RunError::Interrupted)
    } else {
        Ok(())
    }
}

pub(crate) fn check_alive(system: &mut AttachedSystem) -> Result<(), RunError> {
    if system.switch_alive() {
        Ok(())
    } else {
        Err(RunError::SwitchDied {
            system: system.kind.name(),
        })
    }
}

/// A subcommand of this program run inside a namespace.
pub(crate) fn self_in_netns(self_exe: &std::path::Path, netns: &str, args: &[String]) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", netns])
        .arg(self_exe)
        .args(args);
    command
}

pub(crate) fn parse_tool_json<T: serde::de::DeserializeOwned>(
    tool: &'static str,
    text: &str,
) -> Result<T, RunError> {
    serde_json::from_str(text.trim()).map_err(|e| RunError::ToolOutput {
        tool,
        detail: e.to_string(),
        text: text.trim().to_owned(),
    })
}

pub(crate) fn run_to_string(mut command: Command, what: &str) -> Result<String, RunError> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ProcError::Spawn {
            command: what.to_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(ProcError::Failed {
            command: what.to_owned(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        }
        .into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// One request/response measurement: `rr-server` on `server` (ADDRESS:PORT) in
/// `server_netns`, `rr-client` in `client_netns`, `count` samples or `budget_ms`.
pub(crate) fn request_response(
    self_exe: &std::path::Path,
    client_netns: &str,
    server_netns: &str,
    server: &str,
    count: u32,
    budget_ms: u64,
    interval: Option<Duration>,
) -> Result<RrReport, RunError> {
    let rr_server_args = vec!["rr-server".into(), "--bind".into(), server.to_owned()];
    let mut rr_server = self_in_netns(self_exe, server_netns, &rr_server_args);
    rr_server.stdin(Stdio::null()).stdout(Stdio::null());
    let rr_server = OwnedChild::spawn(rr_server, Duration::from_secs(2))?;
    let mut client_args = vec![
        "rr-client".into(),
        "--server".into(),
        server.to_owned(),
        "--count".into(),
        count.to_string(),
        "--budget-ms".into(),
        budget_ms.to_string(),
    ];
    if let Some(interval) = interval {
        client_args.extend(["--interval-us".into(), interval.as_micros().to_string()]);
    }
    let rr_text = run_to_string(
        self_in_netns(self_exe, client_netns, &client_args),
        "rr-client",
    )?;
    drop(rr_server);
    parse_tool_json("rr-client", &rr_text)
}

/// The idle-path latency metrics: one [`request_response`] from `netns[0]` to `server`
/// in `netns[1]` with (count, budget in ms) `limits`, recorded in `sample` (`rr_p50_us`,
/// `rr_p99_us`, the report in its details) and told to `progress`.
pub(crate) fn rr_into_sample(
    self_exe: &std::path::Path,
    netns: [&str; 2],
    server: &str,
    limits: (u32, u64),
    sample: &mut RoundSample,
    progress: &dyn Fn(String),
) -> Result<(), RunError> {
    let rr = request_response(
        self_exe, netns[0], netns[1], server, limits.0, limits.1, None,
    )?;
    sample.set("rr_p50_us", rr.p50_ns as f64 / 1e3);
    sample.set("rr_p99_us", rr.p99_ns as f64 / 1e3);
    progress(format!(
        "RR p50 {:.1} µs, p99 {:.1} µs ({} samples, {} lost)",
        rr.p50_ns as f64 / 1e3,
        rr.p99_ns as f64 / 1e3,
        rr.samples,
        rr.lost
    ));
    sample.details.rr = Some(rr);
    Ok(())
}

/// One iperf3 TCP result of `streams` streams in `sample` (`tcp_1_stream_gbps` or
/// `tcp_4_streams_gbps`, the report in its details), told to `progress`.
pub(crate) fn record_tcp(
    sample: &mut RoundSample,
    streams: u32,
    tcp: TcpReport,
    progress: &dyn Fn(String),
) {
    let key = if streams == 1 {
        "tcp_1_stream_gbps"
    } else {
        "tcp_4_streams_gbps"
    };
    sample.set(key, tcp.gbps);
    progress(format!(
        "TCP {streams} stream(s) {:.2} Gb/s ({} retransmits)",
        tcp.gbps, tcp.retransmits
    ));
    sample.details.tcp.push(tcp);
}

/// `results` as pretty JSON at `path` ([`report::write_json`]), its failure a [`RunError`].
pub(crate) fn write_results<T: Serialize>(
    results: &T,
    path: &std::path::Path,
) -> Result<(), RunError> {
    report::write_json(results, path).map_err(|source| RunError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Measures everything for one system in one round, recording each metric in
/// `sample` as soon as it is known so that a later failure keeps earlier numbers.
fn measure(
    system: &mut AttachedSystem,
    ctx: &RunContext,
    config: &RunConfig,
    self_exe: &std::path::Path,
    trial_id: &mut u32,
    sample: &mut RoundSample,
    started: Instant,
) -> Result<(), RunError> {
    // The entrant's name (a variant of tapswitch is not plain `tapswitch`).
    let name = sample.system.clone();
    let progress = |text: String| {
        eprintln!(
            "[{:>5.0}s]   {name}: {text}",
            started.elapsed().as_secs_f64()
        )
    };
    let server = system.b.address.clone();

    // Latency first, on an idle path.
    check_stop()?;
    rr_into_sample(
        self_exe,
        [&ctx.netns_a, &ctx.netns_b],
        &format!("{server}:{RR_PORT}"),
        (config.rr_count, config.rr_budget_ms),
        sample,
        &progress,
    )?;
    check_alive(system)?;

    // Sparse traffic: a ping every 2 and 10 ms, requests paced at 1k/s, each
    // with the switch's CPU (utime + stime over the test, percent of one CPU).
    for (interval_ms, count) in [(2u64, config.sparse_pings), (10, config.sparse_pings / 4)] {
        check_stop()?;
        let interval = Duration::from_millis(interval_ms);
        let (text, cpu_pct) = with_cpu(system, || {
            let mut command = Command::new("ip");
            command.args(ping::ping_args(&ctx.netns_a, &server, interval, count));
            run_to_string(command, "ping")
        })?;
        let report = ping::parse(&text, interval, count).ok_or_else(|| RunError::ToolOutput {
            tool: "ping",
            detail: "no reply".into(),
            text: text.lines().last().unwrap_or("").to_owned(),
        })?;
        let key = format!("ping_{interval_ms}ms");
        sample.set(&format!("{key}_avg_us"), report.avg_us);
        sample.set(&format!("{key}_p99_us"), report.p99_us);
        if let Some(cpu_pct) = cpu_pct {
            sample.set(&format!("{key}_cpu_pct"), cpu_pct);
        }
        progress(format!(
            "ping every {interval_ms} ms: avg {:.1} µs, p99 {:.1} µs ({}/{} replies), switch CPU {}",
            report.avg_us,
            report.p99_us,
            report.received,
            report.sent,
            cpu_pct.map_or_else(|| "-".to_owned(), |c| format!("{c:.1}%")),
        ));
        sample.details.pings.push(report);
        check_alive(system)?;
    }
    check_stop()?;
    let paced_count = config.sparse_pings;
    let (paced, cpu_pct) = with_cpu(system, || {
        request_response(
            self_exe,
            &ctx.netns_a,
            &ctx.netns_b,
            &format!("{server}:{RR_PORT}"),
            paced_count,
            u64::from(paced_count) * 2 + 1_000,
            Some(PACED_RR_INTERVAL),
        )
    })?;
    sample.set("rr_1k_avg_us", paced.mean_ns / 1e3);
    sample.set("rr_1k_p99_us", paced.p99_ns as f64 / 1e3);
    if let Some(cpu_pct) = cpu_pct {
        sample.set("rr_1k_cpu_pct", cpu_pct);
    }
    progress(format!(
        "RR paced 1k/s: avg {:.1} µs, p99 {:.1} µs ({} samples, {} lost), switch CPU {}",
        paced.mean_ns / 1e3,
        paced.p99_ns as f64 / 1e3,
        paced.samples,
        paced.lost,
        cpu_pct.map_or_else(|| "-".to_owned(), |c| format!("{c:.1}%")),
    ));
    sample.details.rr_paced = Some(paced);
    check_alive(system)?;
    if config.sparse_only {
        return Ok(());
    }

    // TCP, with the switch's CPU time charged per GB delivered.
    let mut cpu_seconds = 0.0;
    let mut tcp_bytes = 0u64;
    for streams in [1u32, 4] {
        check_stop()?;
        let test = TcpTest {
            server_netns: ctx.netns_b.clone(),
            client_netns: ctx.netns_a.clone(),
            server_address: server.clone(),
            port: IPERF_PORT,
            streams,
            seconds: config.tcp_seconds,
        };
        let cpu_before = system
            .switch_pid()
            .map(cpu::process_cpu_seconds)
            .transpose()?;
        let tcp: TcpReport = iperf::run_tcp(&test)?;
        if let (Some(pid), Some(before)) = (system.switch_pid(), cpu_before) {
            cpu_seconds += cpu::process_cpu_seconds(pid)? - before;
        }
        tcp_bytes += tcp.bytes;
        record_tcp(sample, streams, tcp, &progress);
        check_alive(system)?;
    }
    if system.switch_pid().is_some() && tcp_bytes > 0 {
        let per_gb = cpu_seconds / (tcp_bytes as f64 / 1e9);
        sample.set("switch_cpu_s_per_gb", per_gb);
        progress(format!(
            "switch CPU {cpu_seconds:.2} s for {:.1} GB = {per_gb:.3} s/GB",
            tcp_bytes as f64 / 1e9
        ));
    }

    // Packet rates: unpaced blast, then the zero-loss search, per frame size.
    let sink_args = vec![
        "sink".into(),
        "--bind".into(),
        format!("{server}:{SINK_PORT}"),
    ];
    let mut sink = Sink::start(self_in_netns(self_exe, &ctx.netns_b, &sink_args))?;
    for &frame_size in &config.frame_sizes {
        let mut run_trial = |pps: Option<f64>| -> Result<TrialOutcome, RunError> {
            check_stop()?;
            *trial_id += 1;
            let trial = *trial_id;
            sink.begin(trial)?;
            let mut args = vec![
                "blast".into(),
                "--dst".into(),
                format!("{server}:{SINK_PORT}"),
                "--frame-size".into(),
                frame_size.to_string(),
                "--duration-ms".into(),
                config.trial_ms.to_string(),
                "--trial".into(),
                trial.to_string(),
            ];
            if let Some(pps) = pps {
                args.extend(["--pps".into(), format!("{pps:.0}")]);
            }
            let text = run_to_string(self_in_netns(self_exe, &ctx.netns_a, &args), "blast")?;
            let blast: BlastReport = parse_tool_json("blast", &text)?;
            let counted = sink.end(trial)?;
            Ok(TrialOutcome {
                target_pps: pps.unwrap_or(0.0),
                sent: blast.sent,
                received: counted.distinct,
                elapsed_s: blast.elapsed_s,
            })
        };
        let unpaced = run_trial(None)?;
        sample.set(
            &format!("unpaced_delivered_kpps_{frame_size}"),
            unpaced.delivered_pps() / 1e3,
        );
        sample.set(
            &format!("unpaced_loss_pct_{frame_size}"),
            unpaced.loss_fraction() * 100.0,
        );
        let params = SearchParams {
            max_pps: unpaced.sent_pps(),
            max_trials: config.search_trials,
            resolution: 0.01,
        };
        let found: SearchResult =
            search::find_zero_loss_rate(params, Some(unpaced), |pps| run_trial(Some(pps)))?;
        sample.set(
            &format!("zero_loss_kpps_{frame_size}"),
            found.zero_loss_pps / 1e3,
        );
        progress(format!(
            "{frame_size} B: unpaced sent {:.0} kpps, delivered {:.0} kpps ({:.1}% loss); zero-loss {:.0} kpps after {} paced trials",
            unpaced.sent_pps() / 1e3,
            unpaced.delivered_pps() / 1e3,
            unpaced.loss_fraction() * 100.0,
            found.zero_loss_pps / 1e3,
            found.trials.len()
        ));
        sample.details.blasts.push(report::BlastDetails {
            frame_size,
            unpaced,
            search: found,
        });
        check_alive(system)?;
    }
    Ok(())
}

/// Runs `test`, and measures the switch process's CPU over it (utime + stime
/// from /proc, as a percentage of one CPU over the wall time); none for the bridge.
fn with_cpu<T>(
    system: &AttachedSystem,
    test: impl FnOnce() -> Result<T, RunError>,
) -> Result<(T, Option<f64>), RunError> {
    let pid = system.switch_pid();
    let before = pid.map(cpu::process_cpu_seconds).transpose()?;
    let started = Instant::now();
    let result = test()?;
    let wall = started.elapsed().as_secs_f64();
    let cpu_pct = match (pid, before) {
        (Some(pid), Some(before)) => Some((cpu::process_cpu_seconds(pid)? - before) / wall * 100.0),
        _ => None,
    };
    Ok((result, cpu_pct))
}

/// The `sink` subcommand running in namespace B, driven over its stdin/stdout.
struct Sink {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    _child: OwnedChild,
}

impl Sink {
    fn start(mut command: Command) -> Result<Self, RunError> {
        command.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = OwnedChild::spawn(command, Duration::from_secs(2))?;
        let stdin = child.child_mut().stdin.take().expect("stdin was piped");
        let stdout = BufReader::new(child.child_mut().stdout.take().expect("stdout was piped"));
        Ok(Self {
            stdin,
            stdout,
            _child: child,
        })
    }

    fn exchange(&mut self, command: &str) -> Result<String, RunError> {
        writeln!(self.stdin, "{command}")
            .map_err(|e| RunError::Sink(format!("sending `{command}`: {e}")))?;
        self.stdin
            .flush()
            .map_err(|e| RunError::Sink(format!("sending `{command}`: {e}")))?;
        let mut line = String::new();
        let read = self
            .stdout
            .read_line(&mut line)
            .map_err(|e| RunError::Sink(format!("reply to `{command}`: {e}")))?;
        if read == 0 {
            return Err(RunError::Sink(format!(
                "exited instead of answering `{command}`"
            )));
        }
        Ok(line)
    }

    fn begin(&mut self, trial: u32) -> Result<(), RunError> {
        let reply = self.exchange(&format!("begin {trial}"))?;
        if reply.trim() != format!("ok {trial}") {
            return Err(RunError::Sink(format!(
                "answered `{}` to `begin {trial}`",
                reply.trim()
            )));
        }
        Ok(())
    }

    fn end(&mut self, trial: u32) -> Result<SinkReport, RunError> {
        let reply = self.exchange(&format!("end {trial}"))?;
        let report: SinkReport = parse_tool_json("sink", &reply)?;
        if report.trial != trial {
            return Err(RunError::Sink(format!(
                "reported trial {} for `end {trial}`",
                report.trial
            )));
        }
        Ok(report)
    }
}

/// Whether a program needed by `kind` is installed; `Err` names what is missing.
pub fn check_requirements(kind: SystemKind, tapswitch_bin: &std::path::Path) -> Result<(), String> {
    let missing: Vec<&str> = match kind {
        SystemKind::Bridge => vec![],
        SystemKind::Tapswitch => {
            if tapswitch_bin.is_file() {
                vec![]
            } else {
                return Err(format!(
                    "{} not found (build it with `cargo build --release`)",
                    tapswitch_bin.display()
                ));
            }
        }
        SystemKind::Ovs => ["ovs-vswitchd", "ovsdb-server", "ovsdb-tool", "ovs-vsctl"]
            .into_iter()
            .filter(|program| !proc::on_path(program))
            .collect(),
    };
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("not installed: {}", missing.join(", ")))
    }
}
