//! The systems under test and their topologies. Each attaches one endpoint
//! netdev in namespace A and one in namespace B; dropping the attachment stops
//! every process it started (by PID) and removes every link it made.

use crate::netns::{self, Endpoint, NetnsError, OwnedNetns};
use crate::proc::{self, OwnedChild, ProcError};
use serde::Serialize;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Failures of bringing a system up.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Command(#[from] ProcError),
    #[error(
        "tapswitch exited ({status}) before printing `tapswitch ready`; stderr tail ({log}):\n{tail}"
    )]
    SwitchExited {
        status: String,
        log: String,
        tail: String,
    },
    #[error(
        "tapswitch did not print `tapswitch ready` within {seconds} s; stderr tail ({log}):\n{tail}"
    )]
    SwitchNotReady {
        seconds: u64,
        log: String,
        tail: String,
    },
    #[error("{system} is ready but its port {device} is not in namespace {netns}")]
    PortMissing {
        system: &'static str,
        device: String,
        netns: String,
    },
    #[error("{system} is wired with two ports only here; leave it out of scenarios with more")]
    TwoPortsOnly { system: &'static str },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{daemon} did not create {path} within {seconds} s (see {log})")]
    OvsNotStarted {
        daemon: &'static str,
        path: String,
        seconds: u64,
        log: String,
    },
}

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemKind {
    /// veth pairs into a Linux bridge: the baseline.
    Bridge,
    /// The switch under development, with two TAP ports.
    Tapswitch,
    /// Open vSwitch's userspace (netdev) datapath with TAP ports and userspace TSO.
    Ovs,
}

impl SystemKind {
    /// Short name used in tables, JSON and command lines.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bridge => "bridge",
            Self::Tapswitch => "tapswitch",
            Self::Ovs => "ovs",
        }
    }

    /// Parses a short name.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Bridge, Self::Tapswitch, Self::Ovs]
            .into_iter()
            .find(|kind| kind.name() == name)
    }

    fn subnet_index(self) -> u8 {
        match self {
            Self::Bridge => 0,
            Self::Tapswitch => 1,
            Self::Ovs => 2,
        }
    }
}

/// Everything the topologies share within one run.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// Makes names unique on the host (the harness's PID).
    pub run_id: u32,
    pub netns_a: String,
    pub netns_b: String,
    /// Scratch directory for logs and OVS's database and sockets.
    pub work_dir: PathBuf,
    pub tapswitch_bin: PathBuf,
    /// Passed through to `tapswitch run` after the ports.
    pub tapswitch_args: Vec<String>,
    /// Namespaces of further ports beyond A and B (the flood scenario's flooder and
    /// bystander): each gets one netdev, up, without an address.
    pub extra_netns: Vec<String>,
}

impl RunContext {
    /// Endpoint netdev names; the same for every system so that runs read alike.
    fn device_a(&self) -> String {
        format!("tsb{}a", self.run_id)
    }

    fn device_b(&self) -> String {
        format!("tsb{}b", self.run_id)
    }

    /// The extra ports: (namespace, device), devices `tsb<id>c`, `tsb<id>d`, ...
    pub fn extra_ports(&self) -> Vec<(String, String)> {
        self.extra_netns
            .iter()
            .zip(b'c'..=b'z')
            .map(|(netns, letter)| {
                (
                    netns.clone(),
                    format!("tsb{}{}", self.run_id, char::from(letter)),
                )
            })
            .collect()
    }

    fn endpoints(&self, kind: SystemKind) -> (Endpoint, Endpoint) {
        let prefix = format!("10.{}.{}", 200 + kind.subnet_index(), self.run_id % 256);
        (
            Endpoint {
                netns: self.netns_a.clone(),
                device: self.device_a(),
                address: format!("{prefix}.1"),
            },
            Endpoint {
                netns: self.netns_b.clone(),
                device: self.device_b(),
                address: format!("{prefix}.2"),
            },
        )
    }
}

/// A system wired between the two namespaces.
pub struct AttachedSystem {
    pub kind: SystemKind,
    pub a: Endpoint,
    pub b: Endpoint,
    /// The process that forwards (tapswitch or ovs-vswitchd); none for the bridge.
    switch: Option<OwnedChild>,
    ovs: Option<OvsDaemons>,
    /// Links to remove on detach if the system left them behind: (namespace, device).
    leftover_candidates: Vec<(Option<String>, String)>,
    bridge_netns: Option<OwnedNetns>,
    warnings: Vec<String>,
}

impl AttachedSystem {
    /// PID whose CPU time is charged to the system.
    pub fn switch_pid(&self) -> Option<u32> {
        self.switch.as_ref().map(OwnedChild::pid)
    }

    /// Whether the forwarding process is still alive (the bridge always is).
    pub fn switch_alive(&mut self) -> bool {
        self.switch
            .as_mut()
            .is_none_or(|child| matches!(child.try_status(), Ok(None)))
    }

    /// Tears the system down and returns what looked wrong while doing so.
    pub fn detach(mut self) -> Vec<String> {
        self.teardown();
        std::mem::take(&mut self.warnings)
    }

    fn teardown(&mut self) {
        if let Some(mut switch) = self.switch.take() {
            let name = self.kind.name();
            match switch.stop() {
                Ok((_, true)) => self
                    .warnings
                    .push(format!("{name} ignored SIGTERM for 5 s and was killed")),
                Ok((status, false)) if self.kind == SystemKind::Tapswitch && !status.success() => {
                    // SIGTERM is the documented way to stop it: a clean stop exits 0.
                    self.warnings
                        .push(format!("{name} exited with {status} after SIGTERM"))
                }
                Ok(_) => {}
                Err(error) => self.warnings.push(error.to_string()),
            }
        }
        // The contract says tapswitch removes its TAPs on SIGTERM; give it a moment.
        let candidates = std::mem::take(&mut self.leftover_candidates);
        proc::wait_until(Duration::from_secs(1), Duration::from_millis(20), || {
            candidates
                .iter()
                .all(|(ns, dev)| !netns::link_exists(ns.as_deref(), dev))
        });
        for (ns, device) in candidates {
            if netns::delete_link_if_present(ns.as_deref(), &device)
                && self.kind == SystemKind::Tapswitch
            {
                let place = ns.as_deref().unwrap_or("the root namespace");
                self.warnings
                    .push(format!("tapswitch left {device} in {place} after stopping"));
            }
        }
        self.ovs = None;
        self.bridge_netns = None;
    }
}

impl Drop for AttachedSystem {
    fn drop(&mut self) {
        self.teardown();
        for warning in self.warnings.drain(..) {
            eprintln!("warning: {warning}");
        }
    }
}

/// Wires `kind` between the run's namespaces and waits until A can ping B.
pub fn attach(
    kind: SystemKind,
    ctx: &RunContext,
    label: &str,
) -> Result<AttachedSystem, SystemError> {
    let (a, b) = ctx.endpoints(kind);
    let mut system = AttachedSystem {
        kind,
        a,
        b,
        switch: None,
        ovs: None,
        leftover_candidates: Vec::new(),
        bridge_netns: None,
        warnings: Vec::new(),
    };
    system.leftover_candidates = vec![
        (Some(ctx.netns_a.clone()), ctx.device_a()),
        (Some(ctx.netns_b.clone()), ctx.device_b()),
    ];
    system.leftover_candidates.extend(
        ctx.extra_ports()
            .into_iter()
            .map(|(netns, device)| (Some(netns), device)),
    );
    match kind {
        SystemKind::Bridge => attach_bridge(&mut system, ctx)?,
        SystemKind::Tapswitch => attach_tapswitch(&mut system, ctx, label)?,
        SystemKind::Ovs if !ctx.extra_netns.is_empty() => {
            return Err(SystemError::TwoPortsOnly { system: "ovs" });
        }
        SystemKind::Ovs => attach_ovs(&mut system, ctx, label)?,
    }
    for (netns, device) in ctx.extra_ports() {
        proc::ip(&["-n", &netns, "link", "set", "dev", &device, "up"])?;
    }
    netns::configure_pair(&system.a, &system.b)?;
    Ok(system)
}

fn attach_bridge(system: &mut AttachedSystem, ctx: &RunContext) -> Result<(), SystemError> {
    let bridge_ns = OwnedNetns::create(&format!("tsb-{}-br", ctx.run_id))?;
    let ns = bridge_ns.name().to_owned();
    system.bridge_netns = Some(bridge_ns);
    proc::ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"])?;
    let mut ports = vec![
        (
            "pa".to_owned(),
            system.a.netns.clone(),
            system.a.device.clone(),
        ),
        (
            "pb".to_owned(),
            system.b.netns.clone(),
            system.b.device.clone(),
        ),
    ];
    for (index, (netns, device)) in ctx.extra_ports().into_iter().enumerate() {
        ports.push((format!("px{index}"), netns, device));
    }
    for (port, netns, device) in &ports {
        let port = port.as_str();
        proc::ip(&[
            "-n", &ns, "link", "add", port, "type", "veth", "peer", "name", device, "netns", netns,
        ])?;
        proc::ip(&["-n", &ns, "link", "set", port, "master", "br0", "up"])?;
    }
    proc::ip(&["-n", &ns, "link", "set", "br0", "up"])?;
    Ok(())
}

fn attach_tapswitch(
    system: &mut AttachedSystem,
    ctx: &RunContext,
    label: &str,
) -> Result<(), SystemError> {
    let log_path = ctx.work_dir.join(format!("tapswitch-{label}.log"));
    let log = File::create(&log_path).map_err(|source| SystemError::Io {
        what: log_path.display().to_string(),
        source,
    })?;
    let mut command = Command::new(&ctx.tapswitch_bin);
    // A control socket of its own, so a switch running elsewhere on the machine
    // (at the default path) does not stop the benchmark's from starting.
    command
        .arg("--control")
        .arg(ctx.work_dir.join(format!("tapswitch-{label}.sock")))
        .arg("run")
        .arg("--port")
        .arg(format!("{}@{}", system.a.device, system.a.netns))
        .arg("--port")
        .arg(format!("{}@{}", system.b.device, system.b.netns))
        // Its own state file: not the machine's /var/lib/tapswitch.
        .arg("--state-dir")
        .arg(ctx.work_dir.join(format!("state-{label}")));
    for (netns, device) in ctx.extra_ports() {
        command.arg("--port").arg(format!("{device}@{netns}"));
    }
    command
        .args(&ctx.tapswitch_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    let child = spawn_tapswitch(command, &log_path)?;
    system.switch = Some(child);
    for end in [&system.a, &system.b] {
        if !netns::link_exists(Some(&end.netns), &end.device) {
            return Err(SystemError::PortMissing {
                system: "tapswitch",
                device: end.device.clone(),
                netns: end.netns.clone(),
            });
        }
    }
    Ok(())
}

/// Starts a `tapswitch run` command (stdout piped, stderr to `log_path`) and
/// waits until it prints `tapswitch ready`; the child is stopped if it does not.
pub(crate) fn spawn_tapswitch(
    command: Command,
    log_path: &Path,
) -> Result<OwnedChild, SystemError> {
    let mut child = OwnedChild::spawn(command, Duration::from_secs(5))?;
    let stdout = child.child_mut().stdout.take().expect("stdout was piped");
    let (ready_tx, ready_rx) = mpsc::channel();
    // Keeps reading after `ready` so that a chatty switch never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("tapswitch ready") {
                let _ = ready_tx.send(());
            }
        }
    });
    let limit = Duration::from_secs(15);
    let deadline = Instant::now() + limit;
    let log_name = log_path.display().to_string();
    loop {
        if ready_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
            break;
        }
        if let Some(status) = child.try_status()? {
            return Err(SystemError::SwitchExited {
                status: status.to_string(),
                log: log_name,
                tail: tail(log_path),
            });
        }
        if Instant::now() >= deadline {
            return Err(SystemError::SwitchNotReady {
                seconds: limit.as_secs(),
                log: log_name,
                tail: tail(log_path),
            });
        }
    }
    Ok(child)
}

/// The last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// ovsdb-server, whose database, sockets and logs live in the run's scratch
/// directory. ovs-vswitchd is held by the `AttachedSystem` (it is the switch)
/// and is stopped first.
struct OvsDaemons {
    _db_server: OwnedChild,
}

pub(crate) fn ovs_command(program: &str, dir: &Path) -> Command {
    let mut command = Command::new(program);
    // Keep every runtime file in our own directory, away from a system OVS.
    for var in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
        command.env(var, dir);
    }
    command.stdin(Stdio::null());
    command
}

pub(crate) fn run_ovs(program: &str, dir: &Path, args: &[&str]) -> Result<String, SystemError> {
    let output = ovs_command(program, dir)
        .args(args)
        .output()
        .map_err(|source| ProcError::Spawn {
            command: proc::describe(program, args),
            source,
        })?;
    if !output.status.success() {
        return Err(ProcError::Failed {
            command: proc::describe(program, args),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        }
        .into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn attach_ovs(
    system: &mut AttachedSystem,
    ctx: &RunContext,
    label: &str,
) -> Result<(), SystemError> {
    let dir = ctx.work_dir.join(format!("ovs-{label}"));
    std::fs::create_dir_all(&dir).map_err(|source| SystemError::Io {
        what: dir.display().to_string(),
        source,
    })?;
    let path = |name: &str| dir.join(name).display().to_string();
    let (db, sock) = (path("conf.db"), path("db.sock"));
    let db_arg = format!("--db=unix:{sock}");
    run_ovs("ovsdb-tool", &dir, &["create", &db])?;

    let mut db_server = ovs_command("ovsdb-server", &dir);
    db_server
        .arg(&db)
        .arg(format!("--remote=punix:{sock}"))
        .arg(format!("--pidfile={}", path("ovsdb-server.pid")))
        .arg(format!("--unixctl={}", path("ovsdb-server.ctl")))
        .arg(format!("--log-file={}", path("ovsdb-server.log")))
        .arg("-vconsole:off")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let db_server = OwnedChild::spawn(db_server, Duration::from_secs(5))?;
    system.ovs = Some(OvsDaemons {
        _db_server: db_server,
    });
    let seconds = 10;
    if !proc::wait_until(
        Duration::from_secs(seconds),
        Duration::from_millis(20),
        || Path::new(&sock).exists(),
    ) {
        return Err(SystemError::OvsNotStarted {
            daemon: "ovsdb-server",
            path: sock,
            seconds,
            log: path("ovsdb-server.log"),
        });
    }
    run_ovs("ovs-vsctl", &dir, &[&db_arg, "--no-wait", "init"])?;
    // Must be in the database before ovs-vswitchd reads it at start.
    run_ovs(
        "ovs-vsctl",
        &dir,
        &[
            &db_arg,
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            "other_config:userspace-tso-enable=true",
        ],
    )?;

    let mut vswitchd = ovs_command("ovs-vswitchd", &dir);
    vswitchd
        .arg(format!("unix:{sock}"))
        .arg(format!("--pidfile={}", path("ovs-vswitchd.pid")))
        .arg(format!("--unixctl={}", path("ovs-vswitchd.ctl")))
        .arg(format!("--log-file={}", path("ovs-vswitchd.log")))
        .arg("-vconsole:off")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    system.switch = Some(OwnedChild::spawn(vswitchd, Duration::from_secs(5))?);

    let bridge = format!("tsbo{}", ctx.run_id);
    system.leftover_candidates.push((None, bridge.clone()));
    system
        .leftover_candidates
        .push((None, system.a.device.clone()));
    system
        .leftover_candidates
        .push((None, system.b.device.clone()));
    // Without --no-wait, ovs-vsctl returns once ovs-vswitchd has applied the change.
    run_ovs(
        "ovs-vsctl",
        &dir,
        &[
            &db_arg,
            "--timeout=30",
            "add-br",
            &bridge,
            "--",
            "set",
            "bridge",
            &bridge,
            "datapath_type=netdev",
        ],
    )?;
    for end in [system.a.clone(), system.b.clone()] {
        run_ovs(
            "ovs-vsctl",
            &dir,
            &[
                &db_arg,
                "--timeout=30",
                "add-port",
                &bridge,
                &end.device,
                "--",
                "set",
                "Interface",
                &end.device,
                "type=tap",
            ],
        )?;
        if !proc::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            netns::link_exists(None, &end.device)
        }) {
            return Err(SystemError::PortMissing {
                system: "ovs",
                device: end.device.clone(),
                netns: "root".into(),
            });
        }
        proc::ip(&["link", "set", "dev", &end.device, "netns", &end.netns])?;
    }
    Ok(())
}
