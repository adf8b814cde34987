//! tapswitch-bench: compares tapswitch with the Linux kernel bridge (and Open
//! vSwitch's userspace datapath when installed) in one interleaved run, and
//! provides the load tools it runs inside the namespaces.

mod blast;
mod chart;
mod cpu;
mod evpn_scale;
mod flood;
mod iperf;
mod netns;
mod ping;
mod proc;
mod report;
mod rr;
mod run;
mod search;
mod signals;
mod soak;
mod stats;
mod systems;
mod vmpair;
mod vxlan;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use systems::SystemKind;

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Tool,
}

#[derive(Subcommand)]
enum Tool {
    /// Run the benchmark (root): interleaved rounds, table on stdout, JSON file.
    Run(RunArgs),
    /// Soak (root): one switch under mixed traffic (TCP bulk, request/response,
    /// an unknown-unicast flood, port churn, port set) for --duration; reports
    /// frames, drops by reason, fds, RSS and loop latency, and exits non-zero
    /// when fds grew or RSS grew beyond the tolerance.
    Soak(SoakArgs),
    /// The MAC-flood scenario (root): a TCP flow between two ports, clean, under a
    /// flood from a third port, and under an equal CPU load; table on stdout, JSON file.
    Flood(FloodArgs),
    /// EVPN scale simulation (root, gobgpd): VTEPs' type-2/type-3 routes injected into one
    /// gobgpd, carried over iBGP to a host gobgpd watched by the real EVPN agent; bulk
    /// convergence, one-change latency at scale, memory. Table on stdout, JSON file.
    EvpnScale(EvpnScaleArgs),
    /// The two-host VXLAN case (root): tapswitch VTEPs vs Linux vxlan + bridge on
    /// both hosts, interleaved rounds; table on stdout, JSON file.
    Vxlan(VxlanArgs),
    /// Send an attack's frames on DEVICE as fast as it takes them (mac-flood: 60-byte
    /// frames with random source MACs to an unknown MAC); prints one JSON line.
    Flooder {
        #[arg(long)]
        device: String,
        #[arg(long, value_enum, default_value_t = flood::Attack::MacFlood)]
        attack: flood::Attack,
        #[arg(long, default_value_t = 5_000)]
        duration_ms: u64,
    },
    /// Use FRACTION of one CPU (0..=1) for the duration; prints one JSON line.
    Burn {
        #[arg(long)]
        fraction: f64,
        #[arg(long, default_value_t = 5_000)]
        duration_ms: u64,
    },
    /// Echo UDP datagrams back (request/response server).
    RrServer {
        #[arg(long)]
        bind: SocketAddr,
    },
    /// Measure UDP request/response round trips; prints one JSON line.
    RrClient {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long, default_value_t = 20_000)]
        count: u32,
        /// Stop after this long even if --count is not reached.
        #[arg(long, default_value_t = 5_000)]
        budget_ms: u64,
        #[arg(long, default_value_t = 500)]
        warmup: u32,
        #[arg(long, default_value_t = 200)]
        timeout_ms: u64,
        /// Pace the measured requests this many µs apart (back to back when absent).
        #[arg(long)]
        interval_us: Option<u64>,
    },
    /// Send sequence-numbered UDP datagrams with sendmmsg; prints one JSON line.
    Blast {
        #[arg(long)]
        dst: SocketAddr,
        /// Ethernet frame size including FCS (64..=1518).
        #[arg(long)]
        frame_size: usize,
        /// Target packets per second; unpaced when absent.
        #[arg(long)]
        pps: Option<f64>,
        #[arg(long, default_value_t = 1_000)]
        duration_ms: u64,
        #[arg(long, default_value_t = 1)]
        trial: u32,
    },
    /// Count datagrams per trial; driven by `begin N` / `end N` lines on stdin.
    Sink {
        #[arg(long)]
        bind: SocketAddr,
        /// On `end`, wait until the port has been quiet this long.
        #[arg(long, default_value_t = 50)]
        quiet_ms: u64,
    },
}

#[derive(clap::Args)]
struct SoakArgs {
    /// How long the load runs, in seconds.
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// Warm-up under the same load before the starting point is taken, in seconds
    /// (default: a sixth of --duration, 5 to 60).
    #[arg(long)]
    warmup: Option<u64>,
    /// The tapswitch binary.
    #[arg(long, default_value = "target/release/tapswitch")]
    tapswitch: PathBuf,
    /// RSS growth allowed between start and end, in MiB.
    #[arg(long, default_value_t = 4)]
    rss_tolerance_mib: u64,
    /// Packets per second of the unknown-unicast flood.
    #[arg(long, default_value_t = 20_000)]
    flood_pps: u32,
    /// Where to write the results.
    #[arg(long, default_value = "bench/results/soak.json")]
    output: PathBuf,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Smoke run of about two minutes (fewer rounds, shorter tests).
    #[arg(long)]
    quick: bool,
    /// Rounds of A B C …; default 5 (quick: 2).
    #[arg(long)]
    rounds: Option<u32>,
    /// Systems to compare; the bridge is the baseline and must be included.
    #[arg(long, value_delimiter = ',', default_value = "bridge,tapswitch,ovs")]
    systems: Vec<String>,
    /// The tapswitch binary.
    #[arg(long, default_value = "target/release/tapswitch")]
    tapswitch: PathBuf,
    /// Extra argument passed to `tapswitch run` (repeat for several, e.g. --switch-arg=--config --switch-arg=FILE).
    #[arg(long = "switch-arg", allow_hyphen_values = true)]
    switch_args: Vec<String>,
    /// Where to write the results.
    #[arg(long, default_value = "bench/results/latest.json")]
    output: PathBuf,
    /// Seconds per iperf3 test; default 3 (quick: 2).
    #[arg(long)]
    tcp_seconds: Option<u32>,
    /// Request/response samples; default 20000 (quick: 5000).
    #[arg(long)]
    rr_count: Option<u32>,
    /// Time cap for the request/response samples, ms; default 3000 (quick: 1000).
    #[arg(long)]
    rr_budget_ms: Option<u64>,
    /// Length of one blast trial, ms; default 1000 (quick: 500).
    #[arg(long)]
    trial_ms: Option<u64>,
    /// Paced trials per zero-loss search; default 5 (quick: 3).
    #[arg(long)]
    search_trials: Option<u32>,
    /// Pings per 2 ms series (the 10 ms series sends a quarter as many), and paced
    /// 1k/s requests; default 1500 (quick: 500).
    #[arg(long)]
    sparse_pings: Option<u32>,
    /// Only the latency tests (RR, sparse ping, paced RR): no TCP, no packet rates.
    #[arg(long)]
    sparse_only: bool,
    /// Run tapswitch at each of these `switch.threads` settings, as systems
    /// `tapswitch-tN` in the same rounds (e.g. --threads 1,2).
    #[arg(long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// tapswitch at other `[switch]` settings as system `tapswitch-NAME` in the same rounds:
    /// NAME:KEY=VALUE[,KEY=VALUE] (repeat; e.g. --variant fixed:adaptive_poll_pct=0).
    #[arg(long = "variant")]
    variants: Vec<String>,
    /// Frame sizes for the packet-rate tests.
    #[arg(long, value_delimiter = ',', default_value = "64,512,1518")]
    frame_sizes: Vec<usize>,
    /// Another tapswitch build (e.g. of an older commit) measured in the same rounds right
    /// after `--tapswitch`, as system `tapswitch-baseline`: before/after in one run.
    #[arg(long)]
    baseline_tapswitch: Option<PathBuf>,
    /// Also run the VM pair: two libvirt guests, kernel bridge vs tapswitch (needs
    /// scripts/vm-testbed.sh; skipped with a note otherwise).
    #[arg(long)]
    vm: bool,
    /// Run only the VM pair.
    #[arg(long)]
    vm_only: bool,
    /// VM pair rounds; default 3 (quick: 1).
    #[arg(long)]
    vm_rounds: Option<u32>,
    /// MiB per VM-to-VM TCP transfer; default 32 (quick: 16): TCG guests move ~40 Mb/s.
    #[arg(long)]
    vm_mb: Option<u32>,
    /// Where to write the VM pair's results.
    #[arg(long, default_value = "bench/results/latest-vm.json")]
    vm_output: PathBuf,
}

#[derive(clap::Args)]
struct EvpnScaleArgs {
    /// Remote MACs (type-2 routes), spread over the VTEPs and VNIs.
    #[arg(long, default_value_t = 10_000)]
    macs: usize,
    /// Simulated VTEPs (each also advertises a type-3 route per VNI).
    #[arg(long, default_value_t = 200)]
    vteps: usize,
    /// VNIs.
    #[arg(long, default_value_t = 10)]
    vnis: u32,
    /// Paths per AddPathStream message in the bulk load.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Single-route changes timed one at a time on the loaded table.
    #[arg(long, default_value_t = 200)]
    probes: usize,
    /// Rounds, each in fresh namespaces with fresh daemons.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Where to write the results.
    #[arg(long, default_value = "bench/results/evpn-scale.json")]
    output: PathBuf,
}

#[derive(clap::Args)]
struct VxlanArgs {
    /// Rounds; each runs every system once, the order reversed every other round.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Systems to compare; the kernel is the baseline and must be included.
    #[arg(long, value_delimiter = ',', default_value = "kernel,tapswitch,ovs")]
    systems: Vec<String>,
    /// Seconds per iperf3 test.
    #[arg(long, default_value_t = 5)]
    tcp_seconds: u32,
    /// Request/response samples.
    #[arg(long, default_value_t = 20_000)]
    rr_count: u32,
    /// Time cap for the request/response samples, ms.
    #[arg(long, default_value_t = 3_000)]
    rr_budget_ms: u64,
    /// The tapswitch binary.
    #[arg(long, default_value = "target/release/tapswitch")]
    tapswitch: PathBuf,
    /// Extra argument passed to both `tapswitch run`s (repeat for several).
    #[arg(long = "switch-arg", allow_hyphen_values = true)]
    switch_args: Vec<String>,
    /// Where to write the results.
    #[arg(long, default_value = "bench/results/vxlan.json")]
    output: PathBuf,
}

#[derive(clap::Args)]
struct FloodArgs {
    /// Rounds of bridge, tapswitch (each: clean, flood, equal load).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Systems to compare; the bridge is the baseline and must be included.
    #[arg(long, value_delimiter = ',', default_value = "bridge,tapswitch")]
    systems: Vec<String>,
    /// Seconds of each iperf3 flow.
    #[arg(long, default_value_t = 5)]
    tcp_seconds: u32,
    /// The tapswitch binary.
    #[arg(long, default_value = "target/release/tapswitch")]
    tapswitch: PathBuf,
    /// Another tapswitch build (e.g. of main) to measure in the same rounds, as
    /// `tapswitch-baseline`.
    #[arg(long)]
    baseline_tapswitch: Option<PathBuf>,
    /// Extra argument passed to `tapswitch run` (repeat for several).
    #[arg(long = "switch-arg", allow_hyphen_values = true)]
    switch_args: Vec<String>,
    /// What C sends, each with its equal-load twin (comma-separated, or `all`).
    #[arg(long, value_delimiter = ',', default_value = "mac-flood")]
    attack: Vec<String>,
    /// Per attack, also the same sender into a dropping device in C: the sender's own
    /// kernel work without the switch.
    #[arg(long)]
    sender_twin: bool,
    /// Where to write the results.
    #[arg(long, default_value = "bench/results/flood.json")]
    output: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<(), String> = match cli.command {
        Tool::Run(args) => run_benchmark(args),
        Tool::Soak(args) => run_soak(args),
        Tool::Flood(args) => run_flood(args),
        Tool::EvpnScale(args) => run_evpn_scale(args),
        Tool::Vxlan(args) => run_vxlan(args),
        Tool::Flooder {
            device,
            attack,
            duration_ms,
        } => flood::flooder(&device, attack, Duration::from_millis(duration_ms))
            .map(|report| print_json(&report))
            .map_err(|e| e.to_string()),
        Tool::Burn {
            fraction,
            duration_ms,
        } => {
            print_json(&flood::burn(fraction, Duration::from_millis(duration_ms)));
            Ok(())
        }
        Tool::RrServer { bind } => rr::serve(bind).map_err(|e| e.to_string()),
        Tool::RrClient {
            server,
            count,
            budget_ms,
            warmup,
            timeout_ms,
            interval_us,
        } => rr::client(rr::ClientParams {
            server,
            count,
            budget: Duration::from_millis(budget_ms),
            warmup,
            timeout: Duration::from_millis(timeout_ms),
            interval: interval_us.map(Duration::from_micros),
        })
        .map(|report| print_json(&report))
        .map_err(|e| e.to_string()),
        Tool::Blast {
            dst,
            frame_size,
            pps,
            duration_ms,
            trial,
        } => blast::blast(blast::BlastParams {
            destination: dst,
            frame_size,
            pps,
            duration: Duration::from_millis(duration_ms),
            trial,
        })
        .map(|report| print_json(&report))
        .map_err(|e| e.to_string()),
        Tool::Sink { bind, quiet_ms } => {
            blast::sink(bind, Duration::from_millis(quiet_ms)).map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tapswitch-bench: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A tool's report: one JSON line on stdout, for the orchestrator to read.
fn print_json(report: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string(report).expect("plain struct serialises")
    );
}

fn run_benchmark(args: RunArgs) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("run needs root (namespaces, veth, TAP devices)".into());
    }
    for size in &args.frame_sizes {
        blast::payload_len(*size).map_err(|e| e.to_string())?;
    }
    signals::install();
    let quick = args.quick;
    let vm = (args.vm || args.vm_only).then(|| vmpair::VmConfig {
        rounds: args.vm_rounds.unwrap_or(if quick { 1 } else { 3 }),
        megabytes: args.vm_mb.unwrap_or(if quick { 16 } else { 32 }),
        transfers: 3,
        pings: 20,
        tapswitch_bin: args.tapswitch.clone(),
        output: args.vm_output.clone(),
    });
    if args.vm_only {
        return run_vm_pair(vm.as_ref().expect("set above"));
    }
    let pick = |value: Option<u64>, full: u64, smoke: u64| {
        value.unwrap_or(if quick { smoke } else { full })
    };
    let mut systems = Vec::new();
    let mut skipped = Vec::new();
    for name in &args.systems {
        let kind = SystemKind::from_name(name).ok_or_else(|| {
            format!("unknown system `{name}` (expected bridge, tapswitch or ovs)")
        })?;
        if systems.contains(&kind) {
            return Err(format!("system `{name}` listed twice"));
        }
        match run::check_requirements(kind, &args.tapswitch) {
            Ok(()) => systems.push(kind),
            Err(reason) if kind == SystemKind::Ovs => {
                eprintln!("note: skipping ovs: {reason}");
                skipped.push((name.clone(), reason));
            }
            Err(reason) => return Err(format!("{name}: {reason}")),
        }
    }
    if let Some(baseline) = &args.baseline_tapswitch {
        if !systems.contains(&SystemKind::Tapswitch) {
            return Err("--baseline-tapswitch needs tapswitch among --systems".into());
        }
        run::check_requirements(SystemKind::Tapswitch, baseline)
            .map_err(|reason| format!("baseline: {reason}"))?;
    }
    let mut variants: Vec<run::Variant> = args
        .threads
        .iter()
        .map(|&n| run::Variant::threads(n))
        .collect();
    if !args.variants.is_empty() && args.threads.is_empty() {
        // The defaults stay in the run, as plain `tapswitch`, next to the variants.
        variants.push(run::Variant {
            name: "tapswitch",
            settings: Vec::new(),
        });
    }
    for text in &args.variants {
        variants.push(run::Variant::parse(text)?);
    }
    if !variants.is_empty() && !systems.contains(&SystemKind::Tapswitch) {
        return Err("--threads and --variant need tapswitch among --systems".into());
    }
    let config = run::RunConfig {
        rounds: pick(args.rounds.map(u64::from), 5, 2) as u32,
        systems,
        tcp_seconds: pick(args.tcp_seconds.map(u64::from), 3, 2) as u32,
        rr_count: pick(args.rr_count.map(u64::from), 20_000, 5_000) as u32,
        rr_budget_ms: pick(args.rr_budget_ms, 3_000, 1_000),
        trial_ms: pick(args.trial_ms, 1_000, 500),
        search_trials: pick(args.search_trials.map(u64::from), 5, 3) as u32,
        frame_sizes: args.frame_sizes,
        sparse_pings: pick(args.sparse_pings.map(u64::from), 1_500, 500) as u32,
        sparse_only: args.sparse_only,
        variants,
        tapswitch_bin: args.tapswitch,
        tapswitch_args: args.switch_args,
        baseline_tapswitch: args.baseline_tapswitch,
        output: args.output,
        skipped,
    };
    eprintln!(
        "tapswitch-bench: {} rounds of {}; TCP {} s, RR {} samples, {} ms trials, {} paced trials per frame size",
        config.rounds,
        config.system_names().join(" "),
        config.tcp_seconds,
        config.rr_count,
        config.trial_ms,
        config.search_trials
    );
    let output = config.output.clone();
    let results = run::run(config).map_err(|e| e.to_string())?;
    println!("\n{}", report::table(&results));
    println!("results: {}", output.display());
    let chart = chart::chart_path(&output);
    match chart::write_svg(&results, &chart) {
        Ok(()) => println!("chart: {}", chart.display()),
        Err(reason) => eprintln!("no chart: {reason}"),
    }
    match &vm {
        Some(vm) => run_vm_pair(vm),
        None => Ok(()),
    }
}

fn run_soak(args: SoakArgs) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("soak needs root (namespaces, TAP devices)".into());
    }
    for tool in ["iperf3", "ip"] {
        if !proc::on_path(tool) {
            return Err(format!("soak needs {tool} (scripts/install-deps.sh)"));
        }
    }
    if !proc::on_path(&args.tapswitch.to_string_lossy()) {
        return Err(format!(
            "no tapswitch binary at {} (cargo build --release, or --tapswitch PATH)",
            args.tapswitch.display()
        ));
    }
    signals::install();
    let config = soak::SoakConfig {
        duration: Duration::from_secs(args.duration),
        warmup: Duration::from_secs(args.warmup.unwrap_or((args.duration / 6).clamp(5, 60))),
        tapswitch_bin: args.tapswitch,
        output: args.output,
        rss_tolerance_kib: args.rss_tolerance_mib * 1024,
        flood_pps: args.flood_pps,
    };
    let report = soak::run(&config)?;
    println!("\n{}", soak::table(&report));
    println!("results: {}", config.output.display());
    if report.failures.is_empty() {
        Ok(())
    } else {
        Err(format!("soak failed: {}", report.failures.join("; ")))
    }
}

fn run_evpn_scale(args: EvpnScaleArgs) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("evpn-scale needs root (namespaces, veth)".into());
    }
    let report = evpn_scale::run(&evpn_scale::ScaleConfig {
        macs: args.macs,
        vteps: args.vteps,
        vnis: args.vnis,
        batch: args.batch,
        probes: args.probes,
        rounds: args.rounds.max(1),
    })?;
    print!("{}", evpn_scale::table(&report));
    evpn_scale::write(&report, &args.output)?;
    println!("results: {}", args.output.display());
    Ok(())
}

fn run_flood(args: FloodArgs) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("flood needs root (namespaces, veth, TAP devices)".into());
    }
    let mut systems = Vec::new();
    for name in &args.systems {
        let kind = SystemKind::from_name(name)
            .filter(|kind| *kind != SystemKind::Ovs)
            .ok_or_else(|| format!("unknown system `{name}` (expected bridge or tapswitch)"))?;
        if systems.contains(&kind) {
            return Err(format!("system `{name}` listed twice"));
        }
        run::check_requirements(kind, &args.tapswitch)
            .map_err(|reason| format!("{name}: {reason}"))?;
        systems.push(kind);
    }
    let mut attacks = Vec::new();
    for name in &args.attack {
        let named: Vec<flood::Attack> = if name == "all" {
            flood::Attack::ALL.to_vec()
        } else {
            let attack = <flood::Attack as clap::ValueEnum>::from_str(name, false)
                .map_err(|_| format!("unknown attack `{name}` (expected mac-flood, broadcast, multicast, bad-frames or all)"))?;
            vec![attack]
        };
        for attack in named {
            if !attacks.contains(&attack) {
                attacks.push(attack);
            }
        }
    }
    let config = flood::FloodConfig {
        rounds: args.rounds,
        attacks,
        sender_twin: args.sender_twin,
        systems,
        tcp_seconds: args.tcp_seconds,
        tapswitch_bin: args.tapswitch,
        baseline_tapswitch: args.baseline_tapswitch,
        tapswitch_args: args.switch_args,
        output: args.output,
    };
    if let Some(baseline) = &config.baseline_tapswitch {
        run::check_requirements(SystemKind::Tapswitch, baseline)
            .map_err(|reason| format!("baseline: {reason}"))?;
    }
    eprintln!(
        "tapswitch-bench: flood, {} rounds; TCP {} s per condition",
        config.rounds, config.tcp_seconds
    );
    let output = config.output.clone();
    let results = flood::run(config).map_err(|e| e.to_string())?;
    println!("\n{}", flood::table(&results));
    println!("results: {}", output.display());
    Ok(())
}

fn run_vxlan(args: VxlanArgs) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("vxlan needs root (namespaces, veth, vxlan devices, TAP devices)".into());
    }
    let (mut systems, mut skipped) = (Vec::new(), Vec::new());
    for name in &args.systems {
        let kind = vxlan::VtepKind::from_name(name).ok_or_else(|| {
            format!("unknown system `{name}` (expected kernel, tapswitch or ovs)")
        })?;
        if systems.contains(&kind) {
            return Err(format!("system `{name}` listed twice"));
        }
        let requirement = match kind {
            vxlan::VtepKind::Kernel => Ok(()),
            vxlan::VtepKind::Tapswitch => {
                run::check_requirements(SystemKind::Tapswitch, &args.tapswitch)
            }
            vxlan::VtepKind::Ovs => run::check_requirements(SystemKind::Ovs, &args.tapswitch),
        };
        match requirement {
            Ok(()) => systems.push(kind),
            Err(reason) if kind == vxlan::VtepKind::Ovs => {
                eprintln!("note: skipping ovs: {reason}");
                skipped.push((name.clone(), reason));
            }
            Err(reason) => return Err(format!("{name}: {reason}")),
        }
    }
    if !systems.contains(&vxlan::VtepKind::Kernel) {
        return Err(
            "the kernel is the baseline (every ratio is against it): include it in --systems"
                .into(),
        );
    }
    for tool in ["ip", "iperf3", "ping", "ss"] {
        if !proc::on_path(tool) {
            return Err(format!("vxlan needs {tool} (scripts/install-deps.sh)"));
        }
    }
    let config = vxlan::VxlanConfig {
        rounds: args.rounds,
        systems,
        tcp_seconds: args.tcp_seconds,
        rr_count: args.rr_count,
        rr_budget_ms: args.rr_budget_ms,
        tapswitch_bin: args.tapswitch,
        tapswitch_args: args.switch_args,
        output: args.output,
        skipped,
    };
    eprintln!(
        "tapswitch-bench: vxlan, {} rounds of {}; TCP {} s, RR {} samples",
        config.rounds,
        config
            .systems
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(" "),
        config.tcp_seconds,
        config.rr_count
    );
    let output = config.output.clone();
    let results = vxlan::run(config).map_err(|e| e.to_string())?;
    println!("\n{}", vxlan::table(&results));
    println!("results: {}", output.display());
    Ok(())
}

/// The VM pair, or a note saying why it was skipped.
fn run_vm_pair(config: &vmpair::VmConfig) -> Result<(), String> {
    if let Some(reason) = vmpair::unavailable(&config.tapswitch_bin) {
        println!("\nnote: VM pair skipped: {reason}");
        return Ok(());
    }
    eprintln!(
        "tapswitch-bench: VM pair, {} rounds of bridge tapswitch; {} x {} MiB TCP, {} pings",
        config.rounds, config.transfers, config.megabytes, config.pings
    );
    let results = vmpair::run(config)?;
    println!("\n{}", vmpair::table(&results));
    println!("VM results: {}", config.output.display());
    Ok(())
}
