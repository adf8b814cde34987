//! The two-host VXLAN case (issue 11): tapswitch VTEPs against the Linux
//! kernel's VXLAN path, in the same run.
//!
//! Two "host" namespaces joined by a veth underlay (MTU 1500, 10.210.N.1 and
//! .2), each with one endpoint namespace; one L2 segment between the endpoints
//! (10.211.N.1 and .2, MTU 1450 on both systems) over VXLAN, VNI 42, UDP 4789,
//! made by either
//!
//! - **kernel**: on each host a Linux bridge holding a `vxlan` device (`remote`
//!   = the other host: its all-zeros FDB entry floods there) and the host end of
//!   the endpoint's veth; or
//! - **tapswitch**: on each host `ip netns exec HOST tapswitch run --config
//!   FILE` with a TAP port whose netdev is moved to the endpoint namespace and a
//!   `kind = "vxlan"` port to the other host; or
//! - **ovs**: on each host its own `ovsdb-server` and `ovs-vswitchd`
//!   (`ip netns exec HOST`, userspace TSO off: OVS 3.1 drops offloaded packets
//!   headed into a tunnel): a
//!   netdev bridge `br-int` with a `type=tap` port moved to the endpoint
//!   namespace and a `type=vxlan` port, and the underlay veth in a netdev bridge
//!   `br-phy` that holds the host's underlay address (OVS's userspace tunnels
//!   route and resolve the remote through it). Skipped when not installed.
//!
//! Per round and system (the order alternates between rounds, every system on
//! namespaces of its own made for the round): UDP request/response, TCP 1 and 4
//! streams A→B (iperf3), and the CPU time of both switch processes during the
//! TCP tests per GB received. The kernel's VXLAN work runs in softirq and inside
//! the senders' system calls, charged to whatever runs at the time, so that last
//! figure has no kernel counterpart.

use crate::cpu::{self, CpuTimes};
use crate::flood::Spread;
use crate::iperf::{self, TcpReport, TcpTest};
use crate::netns::{self, Endpoint, OwnedNetns};
use crate::proc::{self, OwnedChild};
use crate::report::{MachineInfo, RoundSample, iso8601_utc};
use crate::run::{self, RunError};
use crate::signals;
use crate::systems;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VNI: u32 = 42;
const VXLAN_PORT: u16 = 4789;
/// What the underlay veth carries; the inner MTU leaves room for the 50 bytes
/// of outer Ethernet, IPv4, UDP and VXLAN headers.
const UNDERLAY_MTU: u32 = 1500;
const INNER_MTU: u32 = 1450;
const RR_PORT: u16 = 9000;
const IPERF_PORT: u16 = 5203;

/// A way of joining the two hosts' endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VtepKind {
    /// Linux bridge + vxlan device on each host: the baseline.
    Kernel,
    /// tapswitch on each host: a TAP port and a vxlan port.
    Tapswitch,
    /// Open vSwitch's userspace datapath on each host.
    Ovs,
}

impl VtepKind {
    /// Short name used in tables, JSON and command lines.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::Tapswitch => "tapswitch",
            Self::Ovs => "ovs",
        }
    }

    /// Parses a short name.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Kernel, Self::Tapswitch, Self::Ovs]
            .into_iter()
            .find(|kind| kind.name() == name)
    }
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct VxlanConfig {
    pub rounds: u32,
    pub systems: Vec<VtepKind>,
    pub tcp_seconds: u32,
    pub rr_count: u32,
    pub rr_budget_ms: u64,
    pub tapswitch_bin: PathBuf,
    /// Passed to both `tapswitch run`s after the harness's own arguments.
    pub tapswitch_args: Vec<String>,
    pub output: PathBuf,
    /// Systems left out, with the reason (e.g. Open vSwitch not installed).
    pub skipped: Vec<(String, String)>,
}

/// The metrics, in table order: (key, label, higher is better).
pub const METRICS: [(&str, &str, bool); 9] = [
    ("tcp_1_stream_gbps", "TCP 1 stream, Gb/s", true),
    ("tcp_4_streams_gbps", "TCP 4 streams, Gb/s", true),
    ("rr_p50_us", "UDP RR 64 B p50, µs", false),
    ("rr_p99_us", "UDP RR 64 B p99, µs", false),
    (
        "switch_cpu_s_per_gb",
        "switch CPU s per GB (both hosts)",
        false,
    ),
    ("switch_a_cpu_s_per_gb", "  host A (encapsulates)", false),
    ("switch_b_cpu_s_per_gb", "  host B (decapsulates)", false),
    (
        "switch_system_share",
        "  share in the kernel (stime)",
        false,
    ),
    (
        "switch_a_cores_tcp_1",
        "host A switch, cores busy (1 stream)",
        false,
    ),
];

/// Per system and metric: the median and range over the rounds.
type Summaries = BTreeMap<String, BTreeMap<String, Spread>>;

/// The results file.
#[derive(Debug, Clone, Serialize)]
pub struct VxlanResults {
    pub timestamp: String,
    pub complete: bool,
    pub elapsed_s: f64,
    pub machine: MachineInfo,
    /// /proc/loadavg at the start and at the end: the machine may be shared.
    pub load_average: (String, String),
    pub config: VxlanConfig,
    pub summaries: Summaries,
    /// Per system other than the kernel, per metric: the per-round ratios
    /// system / kernel (same round), their median and range.
    pub ratios_vs_kernel: Summaries,
    pub rounds: Vec<RoundSample>,
}

/// Runs the case and writes the results file.
pub fn run(config: VxlanConfig) -> Result<VxlanResults, RunError> {
    signals::install();
    let run_id = std::process::id();
    let mut work_dir = run::RemoveDirOnDrop::create(run_id)?;
    let self_exe = std::env::current_exe().map_err(RunError::SelfPath)?;
    let load_before = load_average();
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut interrupted = false;
    'rounds: for round in 1..=config.rounds {
        // ABBA: neither system always runs on a machine the other just warmed.
        let mut order = config.systems.clone();
        if round % 2 == 0 {
            order.reverse();
        }
        for kind in order {
            if signals::stop_requested() {
                interrupted = true;
                break 'rounds;
            }
            eprintln!(
                "[{:>5.0}s] vxlan round {round}/{} {}: setting up",
                started.elapsed().as_secs_f64(),
                config.rounds,
                kind.name()
            );
            let mut sample = RoundSample::new(round, kind.name());
            let label = format!("vxlan-r{round}-{}", kind.name());
            let outcome = TwoHosts::attach(kind, run_id, work_dir.path(), &config, &label)
                .and_then(|mut hosts| {
                    let measured = measure(&mut hosts, &config, &self_exe, &mut sample, started);
                    sample.warnings.extend(hosts.detach());
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
            run::print_round_problems(kind.name(), round, &sample.error, &sample.warnings);
            samples.push(sample);
        }
    }
    work_dir.keep_if(
        samples
            .iter()
            .any(|s| s.error.is_some() || !s.warnings.is_empty()),
    );
    let names: Vec<&str> = config.systems.iter().map(|kind| kind.name()).collect();
    let (summaries, ratios_vs_kernel) = summarise(&names, &samples, config.rounds);
    let results = VxlanResults {
        timestamp: iso8601_utc(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        ),
        complete: !interrupted,
        elapsed_s: started.elapsed().as_secs_f64(),
        machine: MachineInfo::collect(&config.tapswitch_bin),
        load_average: (load_before, load_average()),
        config: config.clone(),
        summaries,
        ratios_vs_kernel,
        rounds: samples,
    };
    run::write_results(&results, &config.output)?;
    if interrupted {
        return Err(RunError::Interrupted);
    }
    Ok(results)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Medians and ranges per system and metric, and of the per-round ratios to
/// the kernel (pairing by round cancels the drift that moves both alike).
pub fn summarise(systems: &[&str], samples: &[RoundSample], rounds: u32) -> (Summaries, Summaries) {
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
    let (mut summaries, mut ratios) = (Summaries::new(), Summaries::new());
    for &system in systems {
        for (key, _, _) in METRICS {
            let values = series(system, key);
            let present: Vec<f64> = values.iter().flatten().copied().collect();
            if let Some(spread) = Spread::of(&present) {
                summaries
                    .entry(system.to_owned())
                    .or_default()
                    .insert(key.to_owned(), spread);
            }
            if system == VtepKind::Kernel.name() {
                continue;
            }
            let per_round: Vec<f64> = values
                .iter()
                .zip(series(VtepKind::Kernel.name(), key))
                .filter_map(|pair| match pair {
                    (Some(s), Some(k)) if k != 0.0 => Some(s / k),
                    _ => None,
                })
                .collect();
            if let Some(spread) = Spread::of(&per_round) {
                ratios
                    .entry(system.to_owned())
                    .or_default()
                    .insert(key.to_owned(), spread);
            }
        }
    }
    (summaries, ratios)
}

/// One host's side of the underlay and its endpoint.
struct Host {
    /// `a` or `b`.
    side: char,
    netns: String,
    endpoint_netns: String,
    underlay_device: String,
    underlay_address: String,
    endpoint: Endpoint,
}

/// Both hosts of one system in one round. Dropping it stops the switches (by
/// PID) and then deletes the namespaces, and every link in them.
pub struct TwoHosts {
    kind: VtepKind,
    a: Endpoint,
    b: Endpoint,
    /// (host side, its switch process: tapswitch or ovs-vswitchd).
    switches: Vec<(char, OwnedChild)>,
    /// OVS's database servers, stopped after the switches.
    ovs_databases: Vec<OwnedChild>,
    namespaces: Vec<OwnedNetns>,
    warnings: Vec<String>,
}

impl TwoHosts {
    /// Makes the four namespaces and the underlay, puts `kind`'s VTEPs on both
    /// hosts, and waits until A's endpoint can ping B's.
    pub fn attach(
        kind: VtepKind,
        run_id: u32,
        work_dir: &Path,
        config: &VxlanConfig,
        label: &str,
    ) -> Result<TwoHosts, RunError> {
        let subnet = run_id % 256;
        let host = |side: char| Host {
            side,
            netns: format!("tsv-{run_id}-h{side}"),
            endpoint_netns: format!("tsv-{run_id}-e{side}"),
            underlay_device: format!("und{side}"),
            underlay_address: format!("10.210.{subnet}.{}", if side == 'a' { 1 } else { 2 }),
            endpoint: Endpoint {
                netns: format!("tsv-{run_id}-e{side}"),
                device: format!("tsv{run_id}{side}"),
                address: format!("10.211.{subnet}.{}", if side == 'a' { 1 } else { 2 }),
            },
        };
        let (host_a, host_b) = (host('a'), host('b'));
        let mut hosts = TwoHosts {
            kind,
            a: host_a.endpoint.clone(),
            b: host_b.endpoint.clone(),
            switches: Vec::new(),
            ovs_databases: Vec::new(),
            namespaces: Vec::new(),
            warnings: Vec::new(),
        };
        for name in [
            &host_a.netns,
            &host_b.netns,
            &host_a.endpoint_netns,
            &host_b.endpoint_netns,
        ] {
            hosts.namespaces.push(OwnedNetns::create(name)?);
        }
        proc::ip(&[
            "-n",
            &host_a.netns,
            "link",
            "add",
            &host_a.underlay_device,
            "mtu",
            &UNDERLAY_MTU.to_string(),
            "type",
            "veth",
            "peer",
            "name",
            &host_b.underlay_device,
            "netns",
            &host_b.netns,
            "mtu",
            &UNDERLAY_MTU.to_string(),
        ])?;
        for host in [&host_a, &host_b] {
            proc::ip(&[
                "-n",
                &host.netns,
                "addr",
                "add",
                &format!("{}/24", host.underlay_address),
                "dev",
                &host.underlay_device,
            ])?;
            proc::ip(&[
                "-n",
                &host.netns,
                "link",
                "set",
                &host.underlay_device,
                "up",
            ])?;
        }
        for (host, remote) in [(&host_a, &host_b), (&host_b, &host_a)] {
            match kind {
                VtepKind::Kernel => kernel_vtep(host, remote)?,
                VtepKind::Tapswitch => {
                    let switch = tapswitch_vtep(host, remote, work_dir, config, label)?;
                    hosts.switches.push((host.side, switch));
                    if !netns::link_exists(Some(&host.endpoint.netns), &host.endpoint.device) {
                        return Err(systems::SystemError::PortMissing {
                            system: "tapswitch",
                            device: host.endpoint.device.clone(),
                            netns: host.endpoint.netns.clone(),
                        }
                        .into());
                    }
                }
                VtepKind::Ovs => {
                    let (database, switch) = ovs_vtep(host, remote, work_dir, label)?;
                    hosts.ovs_databases.push(database);
                    hosts.switches.push((host.side, switch));
                }
            }
        }
        netns::configure_pair_with_mtu(&hosts.a, &hosts.b, INNER_MTU)?;
        Ok(hosts)
    }

    /// The switch process of host `side`, if the system has one.
    fn switch_pid(&self, side: char) -> Option<u32> {
        self.switches
            .iter()
            .find(|(s, _)| *s == side)
            .map(|(_, child)| child.pid())
    }

    /// Fails if a switch process has exited.
    fn check_alive(&mut self) -> Result<(), RunError> {
        for (_, child) in &mut self.switches {
            if !matches!(child.try_status(), Ok(None)) {
                return Err(RunError::SwitchDied {
                    system: self.kind.name(),
                });
            }
        }
        Ok(())
    }

    /// Tears both hosts down and returns what looked wrong while doing so.
    pub fn detach(mut self) -> Vec<String> {
        self.teardown();
        std::mem::take(&mut self.warnings)
    }

    fn teardown(&mut self) {
        let name = self.kind.name();
        for (side, mut switch) in self.switches.drain(..) {
            match switch.stop() {
                Ok((_, true)) => self.warnings.push(format!(
                    "{name} on host {side} ignored SIGTERM for 5 s and was killed"
                )),
                // SIGTERM is tapswitch's documented way to stop: a clean stop exits 0.
                Ok((status, false)) if self.kind == VtepKind::Tapswitch && !status.success() => {
                    self.warnings.push(format!(
                        "{name} on host {side} exited with {status} after SIGTERM"
                    ))
                }
                Ok(_) => {}
                Err(error) => self.warnings.push(error.to_string()),
            }
        }
        self.ovs_databases.clear();
        // Endpoints first: nothing of theirs then waits on a host that is gone.
        while let Some(netns) = self.namespaces.pop() {
            drop(netns);
        }
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        self.teardown();
        for warning in self.warnings.drain(..) {
            eprintln!("warning: {warning}");
        }
    }
}

/// A Linux bridge with a vxlan device flooding to `remote` and the host end of
/// a veth whose other end is the endpoint's netdev.
fn kernel_vtep(host: &Host, remote: &Host) -> Result<(), RunError> {
    let ns = host.netns.as_str();
    let inner_mtu = INNER_MTU.to_string();
    proc::ip(&[
        "-n",
        ns,
        "link",
        "add",
        "vx0",
        "mtu",
        &inner_mtu,
        "type",
        "vxlan",
        "id",
        &VNI.to_string(),
        "dstport",
        &VXLAN_PORT.to_string(),
        "local",
        &host.underlay_address,
        "remote",
        &remote.underlay_address,
        "dev",
        &host.underlay_device,
    ])?;
    proc::ip(&["-n", ns, "link", "add", "br0", "type", "bridge"])?;
    proc::ip(&[
        "-n",
        ns,
        "link",
        "add",
        "ep0",
        "mtu",
        &inner_mtu,
        "type",
        "veth",
        "peer",
        "name",
        &host.endpoint.device,
        "netns",
        &host.endpoint_netns,
        "mtu",
        &inner_mtu,
    ])?;
    for port in ["vx0", "ep0"] {
        proc::ip(&["-n", ns, "link", "set", port, "master", "br0", "up"])?;
    }
    proc::ip(&["-n", ns, "link", "set", "br0", "up"])?;
    Ok(())
}

/// The switch's configuration on `host`: the endpoint's TAP and the tunnel to `remote`.
fn tapswitch_config(host: &Host, remote: &Host) -> String {
    format!(
        "[[port]]\nname = \"{device}\"\nnetns = \"{endpoint_netns}\"\nmtu = {INNER_MTU}\n\n\
         [[port]]\nname = \"vx0\"\nkind = \"vxlan\"\nvni = {VNI}\nudp_port = {VXLAN_PORT}\n\
         local = \"{local}\"\nremotes = [\"{remote}\"]\nmtu = {INNER_MTU}\n",
        device = host.endpoint.device,
        endpoint_netns = host.endpoint_netns,
        local = host.underlay_address,
        remote = remote.underlay_address,
    )
}

/// `ip netns exec HOST tapswitch run --config FILE`, ready.
fn tapswitch_vtep(
    host: &Host,
    remote: &Host,
    work_dir: &Path,
    config: &VxlanConfig,
    label: &str,
) -> Result<OwnedChild, RunError> {
    let name = format!("{label}-{}", host.side);
    let config_path = work_dir.join(format!("{name}.toml"));
    let write_error = |path: &Path| {
        let path = path.display().to_string();
        move |source| RunError::Write { path, source }
    };
    std::fs::write(&config_path, tapswitch_config(host, remote))
        .map_err(write_error(&config_path))?;
    let log_path = work_dir.join(format!("tapswitch-{name}.log"));
    let log = File::create(&log_path).map_err(write_error(&log_path))?;
    let mut command = Command::new("ip");
    // `ip netns exec` execs the switch: the PID we hold (and measure) is its.
    command
        .args(["netns", "exec", &host.netns])
        .arg(&config.tapswitch_bin)
        .arg("--control")
        .arg(work_dir.join(format!("tapswitch-{name}.sock")))
        .arg("run")
        .arg("--config")
        .arg(&config_path)
        .arg("--state-dir")
        .arg(work_dir.join(format!("state-{name}")))
        .args(&config.tapswitch_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    Ok(systems::spawn_tapswitch(command, &log_path)?)
}

/// `program` (an OVS tool) inside `netns`, its runtime files in `dir`.
fn ovs_in_netns(program: &str, dir: &Path, netns: &str) -> Command {
    let mut command = systems::ovs_command("ip", dir);
    command.args(["netns", "exec", netns, program]);
    command
}

/// OVS on `host`: its database server and switch (returned in that order,
/// both running in the host's namespace), `br-phy` with the underlay and the
/// host's underlay address, `br-int` with the endpoint's TAP and the tunnel.
fn ovs_vtep(
    host: &Host,
    remote: &Host,
    work_dir: &Path,
    label: &str,
) -> Result<(OwnedChild, OwnedChild), RunError> {
    let dir = work_dir.join(format!("ovs-{label}-{}", host.side));
    std::fs::create_dir_all(&dir).map_err(|source| RunError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let path = |name: &str| dir.join(name).display().to_string();
    let (db, sock) = (path("conf.db"), path("db.sock"));
    let db_arg = format!("--db=unix:{sock}");
    systems::run_ovs("ovsdb-tool", &dir, &["create", &db])?;
    let mut db_server = ovs_in_netns("ovsdb-server", &dir, &host.netns);
    db_server
        .arg(&db)
        .arg(format!("--remote=punix:{sock}"))
        .arg(format!("--pidfile={}", path("ovsdb-server.pid")))
        .arg(format!("--unixctl={}", path("ovsdb-server.ctl")))
        .arg(format!("--log-file={}", path("ovsdb-server.log")))
        .arg("-vconsole:off")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let database = OwnedChild::spawn(db_server, Duration::from_secs(5))?;
    let seconds = 10;
    if !proc::wait_until(
        Duration::from_secs(seconds),
        Duration::from_millis(20),
        || Path::new(&sock).exists(),
    ) {
        return Err(systems::SystemError::OvsNotStarted {
            daemon: "ovsdb-server",
            path: sock,
            seconds,
            log: path("ovsdb-server.log"),
        }
        .into());
    }
    let vsctl = |args: &[&str]| -> Result<String, RunError> {
        let mut all = vec![db_arg.as_str(), "--timeout=30"];
        all.extend_from_slice(args);
        Ok(systems::run_ovs("ovs-vsctl", &dir, &all)?)
    };
    vsctl(&["--no-wait", "init"])?;
    // No userspace TSO (unlike the single-host case): OVS 3.1 drops every
    // packet with offload flags headed into a tunnel ("Tunneling packets with HW
    // offload flags is not supported"), so the endpoints segment and checksum.
    let mut vswitchd = ovs_in_netns("ovs-vswitchd", &dir, &host.netns);
    vswitchd
        .arg(format!("unix:{sock}"))
        .arg(format!("--pidfile={}", path("ovs-vswitchd.pid")))
        .arg(format!("--unixctl={}", path("ovs-vswitchd.ctl")))
        .arg(format!("--log-file={}", path("ovs-vswitchd.log")))
        .arg("-vconsole:off")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let switch = OwnedChild::spawn(vswitchd, Duration::from_secs(5))?;
    let ns = host.netns.as_str();
    // Without --no-wait, ovs-vsctl returns once ovs-vswitchd has applied the change.
    vsctl(&[
        "add-br",
        "br-phy",
        "--",
        "set",
        "bridge",
        "br-phy",
        "datapath_type=netdev",
    ])?;
    vsctl(&["add-port", "br-phy", &host.underlay_device])?;
    // The underlay address moves to br-phy (in a netdev bridge, a TAP of
    // ovs-vswitchd's): the host's own stack and the tunnels both reach the wire
    // through the switch.
    let cidr = format!("{}/24", host.underlay_address);
    proc::ip(&["-n", ns, "addr", "del", &cidr, "dev", &host.underlay_device])?;
    proc::ip(&["-n", ns, "addr", "add", &cidr, "dev", "br-phy"])?;
    proc::ip(&["-n", ns, "link", "set", "br-phy", "up"])?;
    vsctl(&[
        "add-br",
        "br-int",
        "--",
        "set",
        "bridge",
        "br-int",
        "datapath_type=netdev",
    ])?;
    vsctl(&[
        "add-port",
        "br-int",
        "vx0",
        "--",
        "set",
        "interface",
        "vx0",
        "type=vxlan",
        &format!("options:remote_ip={}", remote.underlay_address),
        &format!("options:local_ip={}", host.underlay_address),
        &format!("options:key={VNI}"),
        &format!("options:dst_port={VXLAN_PORT}"),
    ])?;
    let device = host.endpoint.device.as_str();
    vsctl(&[
        "add-port",
        "br-int",
        device,
        "--",
        "set",
        "interface",
        device,
        "type=tap",
    ])?;
    if !proc::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        netns::link_exists(Some(ns), device)
    }) {
        return Err(systems::SystemError::PortMissing {
            system: "ovs",
            device: device.to_owned(),
            netns: host.netns.clone(),
        }
        .into());
    }
    proc::ip(&[
        "-n",
        ns,
        "link",
        "set",
        "dev",
        device,
        "netns",
        &host.endpoint_netns,
    ])?;
    Ok((database, switch))
}

/// Everything for one system in one round, each metric recorded as soon as it
/// is known so that a later failure keeps the earlier numbers.
fn measure(
    hosts: &mut TwoHosts,
    config: &VxlanConfig,
    self_exe: &Path,
    sample: &mut RoundSample,
    started: Instant,
) -> Result<(), RunError> {
    let name = hosts.kind.name();
    let progress = |text: String| {
        eprintln!(
            "[{:>5.0}s]   {name}: {text}",
            started.elapsed().as_secs_f64()
        )
    };
    run::check_stop()?;
    run::rr_into_sample(
        self_exe,
        [&hosts.a.netns, &hosts.b.netns],
        &format!("{}:{RR_PORT}", hosts.b.address),
        (config.rr_count, config.rr_budget_ms),
        sample,
        &progress,
    )?;
    hosts.check_alive()?;

    let sides = ['a', 'b'];
    let mut spent = [CpuTimes::default(); 2];
    let mut tcp_bytes = 0u64;
    for streams in [1u32, 4] {
        run::check_stop()?;
        let before: Vec<Option<CpuTimes>> = sides
            .iter()
            .map(|&side| hosts.switch_pid(side).map(cpu::process_cpu_times))
            .map(Option::transpose)
            .collect::<Result<_, _>>()?;
        let flow_start = Instant::now();
        let tcp: TcpReport = iperf::run_tcp(&TcpTest {
            server_netns: hosts.b.netns.clone(),
            client_netns: hosts.a.netns.clone(),
            server_address: hosts.b.address.clone(),
            port: IPERF_PORT,
            streams,
            seconds: config.tcp_seconds,
        })?;
        let flow_seconds = flow_start.elapsed().as_secs_f64();
        for (index, &side) in sides.iter().enumerate() {
            if let (Some(pid), Some(before)) = (hosts.switch_pid(side), before[index]) {
                let used = cpu::process_cpu_times(pid)?.since(before);
                spent[index].user_s += used.user_s;
                spent[index].system_s += used.system_s;
                if streams == 1 && side == 'a' {
                    sample.set("switch_a_cores_tcp_1", used.total() / flow_seconds);
                }
            }
        }
        tcp_bytes += tcp.bytes;
        run::record_tcp(sample, streams, tcp, &progress);
        hosts.check_alive()?;
    }
    if !hosts.switches.is_empty() && tcp_bytes > 0 {
        let gb = tcp_bytes as f64 / 1e9;
        let total: f64 = spent.iter().map(|times| times.total()).sum();
        let system: f64 = spent.iter().map(|times| times.system_s).sum();
        sample.set("switch_cpu_s_per_gb", total / gb);
        sample.set("switch_a_cpu_s_per_gb", spent[0].total() / gb);
        sample.set("switch_b_cpu_s_per_gb", spent[1].total() / gb);
        if total > 0.0 {
            sample.set("switch_system_share", system / total);
        }
        progress(format!(
            "switch CPU {total:.2} s (A {:.2}, B {:.2}; {:.0}% in the kernel) for {gb:.1} GB = {:.3} s/GB",
            spent[0].total(),
            spent[1].total(),
            if total > 0.0 {
                system / total * 100.0
            } else {
                0.0
            },
            total / gb
        ));
    }
    Ok(())
}

/// The table for people: median (min–max) per system, and the per-round ratios
/// to the kernel.
pub fn table(results: &VxlanResults) -> String {
    let systems: Vec<&str> = results.config.systems.iter().map(|k| k.name()).collect();
    let fmt = |spread: Option<&Spread>| match spread {
        Some(s) => {
            let digits = if s.median.abs() >= 100.0 {
                0
            } else if s.median.abs() >= 10.0 {
                1
            } else {
                2
            };
            format!("{:.d$} ({:.d$}–{:.d$})", s.median, s.min, s.max, d = digits)
        }
        None => "-".into(),
    };
    let mut header = vec!["metric".to_owned(), "better".to_owned()];
    for system in &systems {
        header.push((*system).to_owned());
        if *system != VtepKind::Kernel.name() {
            header.push(format!("{system}/kernel"));
        }
    }
    let mut rows = vec![header];
    for (key, label, higher) in METRICS {
        let mut row = vec![
            label.to_owned(),
            if higher { "higher" } else { "lower" }.to_owned(),
        ];
        for system in &systems {
            row.push(fmt(results.summaries.get(*system).and_then(|m| m.get(key))));
            if *system != VtepKind::Kernel.name() {
                row.push(fmt(results
                    .ratios_vs_kernel
                    .get(*system)
                    .and_then(|m| m.get(key))));
            }
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|col| {
            rows.iter()
                .map(|r| r[col].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = format!(
        "VXLAN, two hosts over a veth underlay (MTU {UNDERLAY_MTU}, inner {INNER_MTU}): \
         median (min–max) of {} rounds; TCP {} s; load average {} at the start, {} at the end.\n",
        results.config.rounds,
        results.config.tcp_seconds,
        results.load_average.0,
        results.load_average.1
    );
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(col, (cell, width))| {
                let pad = " ".repeat(width - cell.chars().count());
                if col == 0 {
                    format!("{cell}{pad}")
                } else {
                    format!("{pad}{cell}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(
        "switch CPU: utime+stime of both switch processes (tapswitch, ovs-vswitchd) during the two TCP tests per GB \
         received; the kernel's VXLAN work is softirq and system-call time charged to \
         whatever runs, so it has no such figure.\n",
    );
    for (system, reason) in &results.config.skipped {
        out.push_str(&format!("skipped {system}: {reason}\n"));
    }
    for sample in results.rounds.iter().filter(|s| s.error.is_some()) {
        out.push_str(&format!(
            "round {} {} failed: {}\n",
            sample.round,
            sample.system,
            sample
                .error
                .as_deref()
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or("")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(round: u32, system: &str, gbps: Option<f64>) -> RoundSample {
        let mut sample = RoundSample::new(round, system);
        if let Some(gbps) = gbps {
            sample.set("tcp_1_stream_gbps", gbps);
        }
        sample
    }

    #[test]
    fn ratios_pair_rounds_and_skip_missing_ones() {
        let samples = [
            sample(1, "kernel", Some(10.0)),
            sample(1, "tapswitch", Some(5.0)),
            sample(2, "tapswitch", Some(8.0)),
            sample(2, "kernel", Some(20.0)),
            sample(3, "kernel", Some(4.0)),
            sample(3, "tapswitch", None),
        ];
        let (summaries, ratios) = summarise(&["kernel", "tapswitch"], &samples, 3);
        let kernel = &summaries["kernel"]["tcp_1_stream_gbps"];
        assert_eq!((kernel.median, kernel.min, kernel.max), (10.0, 4.0, 20.0));
        let ratio = &ratios["tapswitch"]["tcp_1_stream_gbps"];
        assert_eq!((ratio.min, ratio.max, ratio.rounds), (0.4, 0.5, 2));
        assert!((ratio.median - 0.45).abs() < 1e-12);
        assert!(!ratios.contains_key("kernel"));
    }

    #[test]
    fn the_switch_configuration_has_a_tap_port_and_a_tunnel_to_the_other_host() {
        let host = |side: char, address: &str| Host {
            side,
            netns: format!("h{side}"),
            endpoint_netns: format!("e{side}"),
            underlay_device: format!("und{side}"),
            underlay_address: address.to_owned(),
            endpoint: Endpoint {
                netns: format!("e{side}"),
                device: format!("tsv1{side}"),
                address: String::new(),
            },
        };
        let text = tapswitch_config(&host('a', "10.210.1.1"), &host('b', "10.210.1.2"));
        assert!(text.contains("name = \"tsv1a\"\nnetns = \"ea\"\nmtu = 1450"));
        assert!(text.contains("kind = \"vxlan\"\nvni = 42\nudp_port = 4789"));
        assert!(text.contains("local = \"10.210.1.1\"\nremotes = [\"10.210.1.2\"]"));
    }
}
