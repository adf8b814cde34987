//! Test bed for integration tests: real network namespaces, a real
//! `tapswitch` process, real traffic. Everything made here is removed by Drop
//! guards, also when a test fails; processes are stopped by their PID.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;
use tapswitch::config::Config;
use tapswitch::control::{ControlClient, FdbShow, PortList, PortReply, Request, Stats};
use tapswitch::dataplane::{PortCounters, PortSnapshot, Snapshot};
use tapswitch::fdb::{FdbEntry, PortId};
pub use tapswitch::forward::DropReason;

pub mod frr;
mod inject;
pub use inject::*;

/// Whether this process runs as root, which creating TAPs and namespaces takes.
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Skips the calling test, saying so on stderr, unless it runs as root: without root
/// nothing it needs (TAPs, namespaces, the switch) can be made. CI runs as root, so
/// there every test runs.
macro_rules! require_root {
    () => {
        if !$crate::common::running_as_root() {
            eprintln!(
                "skipped {}: needs root (it creates TAPs and network namespaces)",
                std::thread::current().name().unwrap_or("this test")
            );
            return;
        }
    };
}
pub(crate) use require_root;

/// A name unique to this process and call, short enough for an interface.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command and returns its stdout; panics with its stderr on failure.
pub fn sh(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a command in a namespace; returns whether it succeeded and its stdout.
pub fn exec_in(netns: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new("ip")
        .args(["netns", "exec", netns])
        .args(args)
        .output()
        .expect("running ip netns exec");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// A network namespace made with `ip netns add`, deleted on drop. IPv6 is
/// off inside so that no background chatter (router solicitations, DAD)
/// disturbs frame counts.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Self {
        let name = unique("tsit");
        sh("ip", &["netns", "add", &name]);
        let ns = Self { name };
        for key in ["all", "default"] {
            let setting = format!("net.ipv6.conf.{key}.disable_ipv6=1");
            sh(
                "ip",
                &["netns", "exec", &ns.name, "sysctl", "-qw", &setting],
            );
        }
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Interface statistics of `dev` in `netns`, from `ip -s -j link`.
pub fn link_stats(netns: &str, dev: &str) -> (u64, u64) {
    let json = sh("ip", &["-n", netns, "-s", "-j", "link", "show", "dev", dev]);
    let value: Value = serde_json::from_str(&json).expect("ip -j output is JSON");
    let stats = &value[0]["stats64"];
    (
        stats["rx"]["packets"].as_u64().expect("rx packets"),
        stats["tx"]["packets"].as_u64().expect("tx packets"),
    )
}

/// The MAC address of `dev` in `netns`.
pub fn link_mac(netns: &str, dev: &str) -> String {
    let json = sh("ip", &["-n", netns, "-j", "link", "show", "dev", dev]);
    let value: Value = serde_json::from_str(&json).expect("ip -j output is JSON");
    value[0]["address"].as_str().expect("address").to_owned()
}

/// Pings `count` times from `netns`; returns the number of replies.
pub fn ping(netns: &str, addr: &str, count: u32, interval: &str) -> u32 {
    ping_with(netns, addr, count, interval, &[])
}

/// [`ping`] with extra options (e.g. `["-s", "4000"]`); how many replies came back.
pub fn ping_with(netns: &str, addr: &str, count: u32, interval: &str, options: &[&str]) -> u32 {
    let count_arg = count.to_string();
    let mut args = vec!["ping", "-c", &count_arg, "-i", interval, "-W", "1", "-q"];
    args.extend_from_slice(options);
    args.push(addr);
    let (_, out) = exec_in(netns, &args);
    out.lines()
        .find(|l| l.contains("received"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A directory under the system temp dir, removed with its contents on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&path).expect("creating a temp dir");
        Self { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A running `tapswitch run` process, stopped (SIGTERM, then SIGKILL) on drop.
/// Each has its own control socket, so tests run side by side.
pub struct Switch {
    child: Child,
    lines: Receiver<String>,
    /// The switch's stderr so far, when started with it piped ([`Switch::start_capturing_log`]).
    log: Option<(
        std::sync::Arc<std::sync::Mutex<String>>,
        thread::JoinHandle<()>,
    )>,
    pub control: PathBuf,
    /// Its `--state-dir`.
    pub state_dir: PathBuf,
    // Dropped after the child is stopped (fields drop after Drop::drop runs).
    _dir: TempDir,
}

impl Switch {
    /// Starts the switch with `args` after `run` and waits for it to be ready.
    /// Without `--control` in `args`, it gets a socket in a fresh temp dir.
    pub fn start(args: &[&str]) -> Self {
        Self::start_configured(args, |_| {})
    }

    /// Like [`Switch::start`], with the switch's stderr (its log, and the counters it
    /// prints when it stops) kept for [`Switch::log`] and [`Switch::stop_logged`].
    pub fn start_capturing_log(args: &[&str]) -> Self {
        Self::start_configured(args, |command| {
            command.stderr(Stdio::piped());
        })
    }

    /// Like [`Switch::start`], with `configure` applied to the command last (its stdin,
    /// stderr, `pre_exec`); a piped stderr is collected as with [`Switch::start_capturing_log`].
    pub fn start_configured(args: &[&str], configure: impl FnOnce(&mut Command)) -> Self {
        let dir = TempDir::new("tsctl");
        let mut command = Command::new(env!("CARGO_BIN_EXE_tapswitch"));
        command.arg("run").args(args);
        let control = match args.iter().position(|a| *a == "--control") {
            Some(i) => PathBuf::from(args[i + 1]),
            None => {
                let control = dir.path.join("tapswitch.sock");
                command.arg("--control").arg(&control);
                control
            }
        };
        // Not the machine's /var/lib/tapswitch: a test's runtime ports and MAC table
        // are its own, and a test that restarts a switch names the directory itself.
        let state_dir = match args.iter().position(|a| *a == "--state-dir") {
            Some(i) => PathBuf::from(args[i + 1]),
            None => {
                let state_dir = dir.path.join("state");
                command.arg("--state-dir").arg(&state_dir);
                state_dir
            }
        };
        command.stdout(Stdio::piped()).stderr(Stdio::inherit());
        configure(&mut command);
        let mut child = command.spawn().expect("starting tapswitch");
        let log = child.stderr.take().map(|stderr| {
            let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
            let collected = std::sync::Arc::clone(&text);
            let reader = thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    // Still shown, as with an inherited stderr.
                    eprintln!("{line}");
                    let mut text = collected.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            });
            (text, reader)
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut switch = Self {
            child,
            lines,
            log,
            control,
            state_dir,
            _dir: dir,
        };
        let ready = switch.next_line(Duration::from_secs(20));
        assert!(
            ready
                .as_deref()
                .is_some_and(|l| l.starts_with("tapswitch ready")),
            "switch did not get ready: {ready:?}"
        );
        switch
    }

    /// Runs `tapswitch ARGS --control <this switch's socket>`; returns
    /// (success, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (bool, String, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_tapswitch"))
            .args(args)
            .arg("--control")
            .arg(&self.control)
            .output()
            .expect("running tapswitch");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Runs `tapswitch ARGS --json` against this switch; panics on failure.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let (ok, stdout, stderr) = self.ctl(&with_json);
        assert!(ok, "tapswitch {args:?} failed: {stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
    }

    /// Runs `tapswitch ARGS --json` against this switch and decodes what it prints as
    /// the protocol's reply type `T`; panics on failure.
    pub fn ctl_as<T: DeserializeOwned>(&self, args: &[&str]) -> T {
        let value = self.ctl_json(args);
        serde_json::from_value(value.clone()).unwrap_or_else(|e| {
            panic!(
                "{args:?}: not a {}: {e}: {value}",
                std::any::type_name::<T>()
            )
        })
    }

    /// `stats --json`.
    pub fn stats(&self) -> Stats {
        self.ctl_as(&["stats"])
    }

    /// `stats NAME --json`: that port's counters.
    pub fn port_stats(&self, name: &str) -> PortSnapshot {
        let mut stats: Stats = self.ctl_as(&["stats", name]);
        assert_eq!(stats.ports.len(), 1, "stats {name}: {stats:?}");
        stats.ports.remove(0)
    }

    /// `port list --json`.
    pub fn port_list(&self) -> PortList {
        self.ctl_as(&["port", "list"])
    }

    /// `fdb show --json`.
    pub fn fdb(&self) -> FdbShow {
        self.ctl_as(&["fdb", "show"])
    }

    /// `config show --json`.
    pub fn config(&self) -> Config {
        self.ctl_as(&["config", "show"])
    }

    /// `port ARGS --json` (`add`, `del`, `set`): the port as the switch reports it.
    pub fn port_cmd(&self, args: &[&str]) -> PortReply {
        let mut with_port = vec!["port"];
        with_port.extend_from_slice(args);
        self.ctl_as(&with_port)
    }

    /// Counters and MAC table, as printed on SIGUSR1.
    pub fn snapshot(&mut self) -> Snapshot {
        let value = self.snapshot_line();
        serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("the SIGUSR1 snapshot is not a Snapshot: {e}: {value}"))
    }

    fn next_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether the process has exited (it is reaped if so).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        let ret = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(ret, 0, "kill({}, {signal})", self.pid());
    }

    /// Counters and MAC table, as the JSON line printed on SIGUSR1.
    fn snapshot_line(&mut self) -> Value {
        self.signal(libc::SIGUSR1);
        let line = self
            .next_line(Duration::from_secs(10))
            .expect("a snapshot line after SIGUSR1");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("snapshot {line:?}: {e}"))
    }

    /// Stops the switch with SIGTERM and returns whether it exited cleanly.
    pub fn stop(mut self) -> bool {
        self.terminate()
    }

    /// The stderr so far of a switch started with [`Switch::start_capturing_log`].
    pub fn log(&self) -> String {
        let (text, _) = self.log.as_ref().expect("started with start_capturing_log");
        text.lock().unwrap().clone()
    }

    /// Like [`Switch::stop`], also returning the whole stderr (counters included).
    pub fn stop_logged(mut self) -> (bool, String) {
        let clean = self.terminate();
        let (text, reader) = self.log.take().expect("started with start_capturing_log");
        // The pipe closes when the process is gone: the reader has everything then.
        let _ = reader.join();
        let text = text.lock().unwrap().clone();
        (clean, text)
    }

    fn terminate(&mut self) -> bool {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.success();
        }
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Starts a second switch (a TAP port of its own, its own control socket) on the state
/// directory of `switch`, which must refuse to run; returns its stderr. It must leave
/// neither its TAP nor its socket file behind.
pub fn start_refused_on_state_dir_of(switch: &Switch) -> String {
    let port = unique("tssd");
    let dir = TempDir::new("tssd");
    let control = dir.path.join("second.sock");
    let output = Command::new(env!("CARGO_BIN_EXE_tapswitch"))
        .args(["run", "--port", &port, "--state-dir"])
        .arg(&switch.state_dir)
        .arg("--control")
        .arg(&control)
        .output()
        .expect("running tapswitch");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "a second switch ran on {}:\n{stderr}",
        switch.state_dir.display()
    );
    assert!(!control.exists(), "the refused switch left its socket file");
    let (left, _) = exec_in_host(&["ip", "link", "show", &port]);
    assert!(!left, "the refused switch left its TAP {port}");
    stderr
}

fn exec_in_host(args: &[&str]) -> (bool, String) {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// Port `name` of a snapshot's or `stats` reply's ports.
pub fn port_of<'a>(ports: &'a [PortSnapshot], name: &str) -> &'a PortSnapshot {
    ports
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no port {name} in {ports:?}"))
}

/// The ports of a SIGUSR1 [`Snapshot`] or a `stats` reply, by name.
pub trait PortsByName {
    fn ports(&self) -> &[PortSnapshot];

    /// Port `name`; panics when there is none.
    fn port_named(&self, name: &str) -> &PortSnapshot {
        port_of(self.ports(), name)
    }

    /// Port `name`'s counters.
    fn counters_of(&self, name: &str) -> &PortCounters {
        &self.port_named(name).counters
    }

    /// Port `name`'s drops for `reason`.
    fn dropped(&self, name: &str, reason: DropReason) -> u64 {
        self.counters_of(name).drops.get(reason)
    }

    /// Tunnel port `name`'s super-frame and train counters; panics for another port.
    fn tunnel_of(&self, name: &str) -> tapswitch::dataplane::TunnelCounters {
        let port = self.port_named(name);
        port.tunnel
            .clone()
            .unwrap_or_else(|| panic!("{name} has no tunnel counters: {port:?}"))
    }
}

impl PortsByName for Snapshot {
    fn ports(&self) -> &[PortSnapshot] {
        &self.ports
    }
}

impl PortsByName for Stats {
    fn ports(&self) -> &[PortSnapshot] {
        &self.ports
    }
}

/// The MAC table entries of a snapshot on port `id`.
pub fn fdb_of(snapshot: &Snapshot, id: u32) -> Vec<&FdbEntry> {
    snapshot
        .fdb
        .iter()
        .filter(|e| e.port == PortId(id))
        .collect()
}

/// The names of a `port list` reply's ports, in order.
pub fn names(list: &PortList) -> Vec<String> {
    list.iter().map(|p| p.name.clone()).collect()
}

/// `tapswitch events [--json]` as a child, its stdout read line by line on a thread;
/// stopped by its PID on drop.
pub struct EventsCommand {
    child: std::process::Child,
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl EventsCommand {
    pub fn start(switch: &Switch, json: bool) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tapswitch"));
        command.arg("events").arg("--control").arg(&switch.control);
        if json {
            command.arg("--json");
        }
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("running tapswitch events");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// The first line containing `wanted` within 10 s.
    pub fn line_with(&self, wanted: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            if line.contains(wanted) {
                return line;
            }
            seen.push(line);
        }
        panic!("no line with {wanted:?}; saw {seen:?}");
    }

    /// Its exit status once it has exited by itself, waiting up to `timeout`; `None`
    /// if it still runs then.
    pub fn exit_status(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for EventsCommand {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Namespaces, each holding one port of a running switch, addressed
/// 10.66.0.1, .2, … in port order. Port `i` is TAP `p{i}` in namespace `i`.
pub struct Bed {
    // Field order matters: the switch stops before the namespaces go.
    pub switch: Switch,
    pub namespaces: Vec<Netns>,
}

impl Bed {
    pub fn new(count: usize) -> Self {
        Self::with_args(count, &[])
    }

    pub fn with_args(count: usize, extra: &[&str]) -> Self {
        Self::with_starter(count, extra, Switch::start)
    }

    /// Like [`Bed::with_args`], with the switch started by `start` (e.g.
    /// [`Switch::start_capturing_log`]) on the `run` arguments.
    pub fn with_starter(
        count: usize,
        extra: &[&str],
        start: impl FnOnce(&[&str]) -> Switch,
    ) -> Self {
        let namespaces: Vec<Netns> = (0..count).map(|_| Netns::new()).collect();
        let mut args: Vec<String> = Vec::new();
        for (i, ns) in namespaces.iter().enumerate() {
            args.push("--port".into());
            args.push(format!("p{i}@{}", ns.name));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let switch = start(&args);
        Self::address(switch, namespaces)
    }

    /// A bed whose ports come from a TOML config file; port `i` has
    /// `offloads = offloads[i]` (false: no vnet header, no offloads).
    pub fn with_offloads(offloads: &[bool]) -> Self {
        let namespaces: Vec<Netns> = offloads.iter().map(|_| Netns::new()).collect();
        let mut config = String::new();
        for (i, (ns, offloads)) in namespaces.iter().zip(offloads).enumerate() {
            config.push_str(&format!(
                "[[port]]\nname = \"p{i}\"\nnetns = \"{}\"\noffloads = {offloads}\n\n",
                ns.name
            ));
        }
        let dir = TempDir::new("tsoff");
        let path = dir.path.join("ports.toml");
        std::fs::write(&path, config).expect("writing the config file");
        let switch = Switch::start(&["--config", path.to_str().expect("UTF-8 temp path")]);
        Self::address(switch, namespaces)
    }

    fn address(switch: Switch, namespaces: Vec<Netns>) -> Self {
        for (i, ns) in namespaces.iter().enumerate() {
            let addr = format!("{}/24", Self::addr(i));
            sh(
                "ip",
                &[
                    "-n",
                    &ns.name,
                    "addr",
                    "add",
                    &addr,
                    "dev",
                    &format!("p{i}"),
                ],
            );
        }
        Self { switch, namespaces }
    }

    pub fn addr(i: usize) -> String {
        format!("10.66.0.{}", i + 1)
    }

    pub fn ns(&self, i: usize) -> &str {
        &self.namespaces[i].name
    }

    pub fn dev(i: usize) -> String {
        format!("p{i}")
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn mac_bytes(mac: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (byte, part) in out.iter_mut().zip(mac.split(':')) {
        *byte = u8::from_str_radix(part, 16).expect("hex MAC");
    }
    out
}

/// An Ethernet frame with a local-experimental ethertype and `len` bytes in all.
pub fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(len.max(14));
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&0x88b5u16.to_be_bytes());
    frame.resize(len.max(14), 0xab);
    frame
}

/// Waits until `check` is true or `timeout` passes; returns the last result.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A program started in a namespace (`ip netns exec` execs it, so the child
/// is the program itself), killed by its PID on drop.
pub struct Background {
    child: Child,
}

impl Background {
    pub fn start_in(netns: &str, args: &[&str]) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", netns])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {args:?} in {netns}: {e}"));
        Self { child }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Child::kill signals exactly this child's PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A counter of `/proc/net/snmp` in `netns`, e.g. ("Tcp", "InCsumErrors").
pub fn snmp_counter(netns: &str, protocol: &str, field: &str) -> u64 {
    let (ok, snmp) = exec_in(netns, &["cat", "/proc/net/snmp"]);
    assert!(ok, "reading /proc/net/snmp in {netns}");
    let prefix = format!("{protocol}:");
    let mut lines = snmp.lines().filter(|l| l.starts_with(&prefix));
    let (names, values) = (
        lines.next().expect("header line"),
        lines.next().expect("value line"),
    );
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == field)
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or_else(|| panic!("no {protocol} {field} in /proc/net/snmp"))
}
/// The checksum-error counters of `netns`'s stack, as `nstat -azs` reads them:
/// (`TcpInCsumErrors`, `IpExtInCsumErrors`), segments and packets it received with a bad
/// transport or IP checksum.
pub fn csum_errors(netns: &str) -> (u64, u64) {
    let (ok, out) = exec_in(
        netns,
        &["nstat", "-azs", "TcpInCsumErrors", "IpExtInCsumErrors"],
    );
    assert!(ok, "nstat in {netns}: {out}");
    let counter = |name: &str| {
        out.lines()
            .filter_map(|line| line.split_once(char::is_whitespace))
            .find(|(field, _)| *field == name)
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in nstat's output: {out}"))
    };
    (counter("TcpInCsumErrors"), counter("IpExtInCsumErrors"))
}

/// Starts a switch on `config` (TOML text), which is written to a temporary file
/// for the switch to read at startup and removed once it is running.
pub fn start_with_config(config: &str) -> Switch {
    let dir = std::env::temp_dir().join(unique("tscfg"));
    std::fs::create_dir_all(&dir).expect("creating a config directory");
    let path = dir.join("switch.toml");
    std::fs::write(&path, config).expect("writing the config");
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir);
    Switch::start(&["--config", path.to_str().expect("UTF-8 temp path")])
}

impl Bed {
    /// Like [`Bed::new`], from a TOML config: `[switch]` settings in `switch`, and
    /// `port_settings(i)` appended to port `i`'s `[[port]]` table.
    pub fn with_config(
        count: usize,
        switch: &str,
        port_settings: impl Fn(usize) -> String,
    ) -> Self {
        let namespaces: Vec<Netns> = (0..count).map(|_| Netns::new()).collect();
        let mut config = format!("{switch}\n");
        for (i, ns) in namespaces.iter().enumerate() {
            config.push_str(&format!(
                "[[port]]\nname = \"p{i}\"\nnetns = \"{}\"\n{}\n",
                ns.name,
                port_settings(i)
            ));
        }
        let switch = start_with_config(&config);
        for (i, ns) in namespaces.iter().enumerate() {
            let addr = format!("{}/24", Self::addr(i));
            sh(
                "ip",
                &["-n", &ns.name, "addr", "add", &addr, "dev", &Self::dev(i)],
            );
        }
        Self { switch, namespaces }
    }
}

/// One frame seen by a [`Capture`].
#[derive(Debug, Clone)]
pub struct Captured {
    pub bytes: Vec<u8>,
    /// The 802.1Q VID the kernel took out of the frame into packet metadata.
    pub vlan: Option<u16>,
    /// The TPID of that tag.
    pub vlan_tpid: Option<u16>,
    /// The `virtio_net_hdr` the kernel put in front (a [`Capture::with_vnet_header`]
    /// capture only): whether the frame is a super-frame, and its segment size.
    pub vnet: Option<VirtioNetHdr>,
}

impl Captured {
    pub fn src(&self) -> [u8; 6] {
        self.bytes[6..12].try_into().expect("a frame has a source")
    }
}

/// `struct tpacket_auxdata` of `<linux/if_packet.h>`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

const PACKET_AUXDATA: libc::c_int = 8;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

/// A raw `AF_PACKET` capture on one interface of a namespace. On receive the kernel
/// moves a VLAN tag out of the bytes into metadata; this reads it back from
/// `PACKET_AUXDATA`.
pub struct Capture {
    fd: std::os::fd::OwnedFd,
    vnet_header: bool,
}

impl Capture {
    pub fn open(netns: &str, dev: &str) -> Self {
        Self::new(netns, dev, false)
    }

    /// A capture that also reads the `virtio_net_hdr` of each frame
    /// (`PACKET_VNET_HDR`): super-frames arrive whole, with their segment size.
    pub fn with_vnet_header(netns: &str, dev: &str) -> Self {
        Self::new(netns, dev, true)
    }

    fn new(netns: &str, dev: &str, vnet_header: bool) -> Self {
        use std::os::fd::FromRawFd;
        let dev = dev.to_owned();
        let fd = tapswitch::sys::netns::run_in(netns, move || {
            let ifindex = ifindex(&dev);
            let protocol = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket creation; the fd is owned below.
            let raw = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    i32::from(protocol),
                )
            };
            assert!(
                raw >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: raw is a fresh socket we own.
            let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
            // SAFETY: sockaddr_ll is plain data; zero is a valid starting value.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = protocol;
            addr.sll_ifindex = ifindex as i32;
            // SAFETY: addr is a live sockaddr_ll and its length is given.
            let ret = unsafe {
                libc::bind(
                    raw,
                    (&raw const addr).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(ret, 0, "bind: {}", std::io::Error::last_os_error());
            let mut options = vec![PACKET_AUXDATA];
            if vnet_header {
                options.push(PACKET_VNET_HDR);
            }
            enable_packet_options(raw, &options);
            fd
        })
        .expect("entering the namespace");
        Self { fd, vnet_header }
    }

    /// Every frame received (or sent) on the interface since the last call.
    pub fn drain(&self) -> Vec<Captured> {
        use std::os::fd::AsRawFd;
        let mut out = Vec::new();
        loop {
            let mut buffer = vec![0u8; 65536];
            let mut control = [0u64; 16];
            let mut iov = libc::iovec {
                iov_base: buffer.as_mut_ptr().cast(),
                iov_len: buffer.len(),
            };
            // SAFETY: msghdr is plain data; zero is a valid starting value.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control);
            // SAFETY: msg points at live buffers whose lengths it gives.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &raw mut msg, 0) };
            if n < 0 {
                let error = std::io::Error::last_os_error();
                assert_eq!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock,
                    "recvmsg: {error}"
                );
                return out;
            }
            buffer.truncate(n as usize);
            let vnet = self.vnet_header.then(|| {
                let header = VirtioNetHdr::from_bytes(&buffer[..VIRTIO_NET_HDR_LEN]);
                buffer.drain(..VIRTIO_NET_HDR_LEN);
                header
            });
            let mut captured = Captured {
                bytes: buffer,
                vlan: None,
                vlan_tpid: None,
                vnet,
            };
            // SAFETY: msg was filled by recvmsg; the CMSG macros walk its control buffer.
            let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
            while !cmsg.is_null() {
                // SAFETY: cmsg is non-null and points into `control`.
                let header = unsafe { &*cmsg };
                if header.cmsg_level == libc::SOL_PACKET && header.cmsg_type == PACKET_AUXDATA {
                    // SAFETY: a PACKET_AUXDATA message carries a tpacket_auxdata; read
                    // unaligned because the control buffer gives no alignment promise.
                    let aux: TpacketAuxdata = unsafe {
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<TpacketAuxdata>())
                    };
                    if aux.tp_status & TP_STATUS_VLAN_VALID != 0 {
                        captured.vlan = Some(aux.tp_vlan_tci & 0x0fff);
                        if aux.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                            captured.vlan_tpid = Some(aux.tp_vlan_tpid);
                        }
                    }
                }
                // SAFETY: as above, walking the control buffer recvmsg filled.
                cmsg = unsafe { libc::CMSG_NXTHDR(&raw const msg, cmsg) };
            }
            out.push(captured);
        }
    }
}

/// A switch started by a switch of this test (`tapswitch upgrade`): not our
/// child, so it is handled by its PID; stopped on drop (SIGTERM, then SIGKILL).
pub struct Successor(i32);

impl Successor {
    pub fn new(pid: i32) -> Self {
        Self(pid)
    }

    pub fn pid(&self) -> i32 {
        self.0
    }

    /// Whether the process still exists (an unreaped zombie counts as existing).
    pub fn alive(&self) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(self.0, 0) == 0 }
    }

    /// SIGTERM, then waits up to 10 s; whether it is gone.
    pub fn stop(&self) -> bool {
        // SAFETY: kill has no memory-safety preconditions; the pid is a switch
        // started (through our own switch) by this test.
        unsafe { libc::kill(self.0, libc::SIGTERM) };
        wait_for(Duration::from_secs(10), || !self.alive())
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        if self.alive() && !self.stop() {
            // SAFETY: as in `stop`.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

/// A TAP made outside the switch, as a user makes one: `ip -n NETNS tuntap add dev NAME
/// mode tap` plus `extra` options (persistent, as `ip` makes them). Deleted on drop,
/// which also proves the switch left it in place.
pub struct ForeignTap {
    pub netns: String,
    pub name: String,
}

impl ForeignTap {
    pub fn new(netns: &str, prefix: &str, extra: &[&str]) -> Self {
        let name = unique(prefix);
        let mut args = vec!["-n", netns, "tuntap", "add", "dev", &name, "mode", "tap"];
        args.extend_from_slice(extra);
        sh("ip", &args);
        Self {
            netns: netns.to_owned(),
            name,
        }
    }

    /// The TUN/TAP line of `ip -d link show` (`tun type tap pi off vnet_hdr off persist
    /// on ...`), or `None` when the device is gone.
    pub fn flags(&self) -> Option<String> {
        let (ok, details) = exec_in(&self.netns, &["ip", "-d", "link", "show", &self.name]);
        ok.then(|| {
            details
                .lines()
                .map(str::trim)
                .find(|line| line.starts_with("tun "))
                .map(|line| line.split(" addrgenmode").next().unwrap_or(line).to_owned())
                .unwrap_or_default()
        })
    }
}

impl Drop for ForeignTap {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["-n", &self.netns, "link", "del", &self.name])
            .output();
    }
}

/// Gives port `p{i}` in `namespaces[i]` the address [`Bed::addr`]`(i)`/24.
pub fn address_ports(namespaces: &[Netns]) {
    for (i, ns) in namespaces.iter().enumerate() {
        let addr = format!("{}/24", Bed::addr(i));
        sh(
            "ip",
            &["-n", &ns.name, "addr", "add", &addr, "dev", &Bed::dev(i)],
        );
    }
}

/// `[[port]]` tables for persistent ports `p0`, `p1`, … in `namespaces`, in order.
pub fn persistent_ports_config(namespaces: &[Netns]) -> String {
    namespaces
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            format!(
                "[[port]]\nname = \"p{i}\"\nnetns = \"{}\"\npersistent = true\n\n",
                ns.name
            )
        })
        .collect()
}

/// Deletes the given links (namespace, device) when dropped: persistent TAPs
/// outlive the switch by design.
pub struct PersistentTaps(pub Vec<(String, String)>);

impl Drop for PersistentTaps {
    fn drop(&mut self) {
        for (netns, dev) in &self.0 {
            let _ = Command::new("ip")
                .args(["-n", netns, "link", "del", dev])
                .status();
        }
    }
}

/// Open file descriptors of process `pid`.
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("reading /proc/PID/fd")
        .count()
}

/// Resident set size of process `pid` in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// An iperf3 server in `netns`, listening before this returns.
pub fn iperf3_server(netns: &str, port: u16) -> Background {
    let port_arg = port.to_string();
    let server = Background::start_in(netns, &["iperf3", "-s", "-p", &port_arg]);
    let filter = format!("sport = :{port}");
    assert!(
        wait_for(Duration::from_secs(5), || {
            let (_, out) = exec_in(netns, &["ss", "-Htln", &filter]);
            !out.trim().is_empty()
        }),
        "iperf3 server did not listen on {port}"
    );
    server
}

/// Runs an iperf3 client for 2 s; returns the bytes the receiving side got.
pub fn iperf3_client(netns: &str, server: &str, port: u16, extra: &[&str]) -> u64 {
    iperf3_client_for(netns, server, port, 2, extra)
}

/// Runs an iperf3 client for `seconds`; returns the bytes the receiving side got.
pub fn iperf3_client_for(
    netns: &str,
    server: &str,
    port: u16,
    seconds: u32,
    extra: &[&str],
) -> u64 {
    let port_arg = port.to_string();
    let seconds_arg = seconds.to_string();
    let mut args = vec![
        "timeout",
        "30",
        "iperf3",
        "-c",
        server,
        "-p",
        &port_arg,
        "-t",
        &seconds_arg,
        "-J",
    ];
    args.extend_from_slice(extra);
    let (ok, out) = exec_in(netns, &args);
    let json: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("iperf3 {extra:?} output is not JSON ({e}): {out}"));
    assert!(ok, "iperf3 {extra:?} failed: {}", json["error"]);
    json["end"]["sum_received"]["bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no received bytes in iperf3 output: {json}"))
}

/// Reads event lines from a subscribed client on a thread. They stay JSON: the tests of
/// events check the lines' keys (`port` a name, `port_id`, `time`) as scripts see them.
pub fn subscribe(switch: &Switch) -> mpsc::Receiver<Value> {
    let mut client = ControlClient::connect(&switch.control).expect("connecting");
    client
        .request_as::<()>(&Request::Events {})
        .expect("subscribing");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        while let Ok(event) = client.next_line() {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for an event matching every field of `expected`; returns it.
pub fn expect_event(events: &mpsc::Receiver<Value>, expected: Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    let wanted = expected.as_object().unwrap();
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(event) = events.recv_timeout(left) else {
            break;
        };
        if wanted.iter().all(|(k, v)| &event[k] == v) {
            return event;
        }
        seen.push(event);
    }
    panic!("no event {expected}; saw {seen:?}");
}

/// A Linux VTEP host's L2 side: a bridge `vxbr` in namespace `host` holding the vxlan device
/// `vxlan_dev` and one end of a veth (MTU 1450, the inner MTU of a 1500-byte underlay) whose
/// other end is in `endpoint`, where it is left down and unaddressed. Returns that end's name
/// (`{prefix}e…`; the bridge's end is `{prefix}b…`).
pub fn bridge_vxlan_to_endpoint(
    host: &str,
    vxlan_dev: &str,
    endpoint: &str,
    prefix: &str,
) -> String {
    bridge_vxlan_to_endpoint_in(host, "vxbr", vxlan_dev, endpoint, prefix)
}

/// [`bridge_vxlan_to_endpoint`] with a bridge named `bridge` (a host with several VNIs has
/// a bridge per VNI).
pub fn bridge_vxlan_to_endpoint_in(
    host: &str,
    bridge: &str,
    vxlan_dev: &str,
    endpoint: &str,
    prefix: &str,
) -> String {
    let (bridge_end, endpoint_dev) = (unique(&format!("{prefix}b")), unique(&format!("{prefix}e")));
    veth_pair_1450(host, &bridge_end, endpoint, &endpoint_dev);
    sh(
        "ip",
        &["-n", host, "link", "add", "name", bridge, "type", "bridge"],
    );
    for dev in [vxlan_dev, bridge_end.as_str()] {
        sh(
            "ip",
            &["-n", host, "link", "set", dev, "master", bridge, "up"],
        );
    }
    sh("ip", &["-n", host, "link", "set", bridge, "up"]);
    endpoint_dev
}

/// A `ping` running in a namespace until [`Pinger::stop`], to show that forwarding went
/// on, frame by frame, while something else happened. Stopped by its PID.
pub struct Pinger {
    child: Child,
}

impl Pinger {
    /// Pings `addr` from `netns` every `interval` seconds.
    pub fn start(netns: &str, addr: &str, interval: &str) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "ping", "-n", "-i", interval, addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting ping in {netns}: {e}"));
        Self { child }
    }

    /// Interrupts it (SIGINT, so it prints its summary) and returns (transmitted, received).
    pub fn stop(mut self) -> (u64, u64) {
        // SAFETY: kill only sends a signal to this child's PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let mut output = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            use std::io::Read;
            let _ = stdout.read_to_string(&mut output);
        }
        let _ = self.child.wait();
        let summary = output
            .lines()
            .find(|line| line.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no ping summary in {output:?}"));
        let number_before = |word: &str| -> u64 {
            let words: Vec<&str> = summary
                .split([' ', ','])
                .filter(|w| !w.is_empty())
                .collect();
            let at = words
                .iter()
                .position(|w| *w == word)
                .expect("the summary's words");
            words[at - 1].parse().expect("a count")
        };
        (number_before("packets"), number_before("received"))
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `tapswitch` client command left running against a switch (e.g. `capture`), its
/// stdout piped to the test (or to a file it names), stderr read line by line;
/// killed by its PID on drop.
pub struct CtlProcess {
    pub child: Child,
    stderr: Receiver<String>,
}

impl CtlProcess {
    /// Starts `tapswitch ARGS --control SOCKET` with stdout piped.
    pub fn start(switch: &Switch, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tapswitch"))
            .args(args)
            .arg("--control")
            .arg(&switch.control)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tapswitch");
        let stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
        let (lines, receiver) = mpsc::channel();
        thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            stderr: receiver,
        }
    }

    /// The next line it writes to stderr, waiting up to `timeout`.
    pub fn stderr_line(&self, timeout: Duration) -> Option<String> {
        self.stderr.recv_timeout(timeout).ok()
    }

    /// Sends it `signal` (by its PID).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the PID of our own child, which has not been reaped
        // (we hold its `Child` and wait for it only in `wait_for_exit`/drop).
        let sent = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(sent, 0, "signalling tapswitch");
    }

    /// Waits up to `timeout` for it to exit; its success and the rest of its stderr.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<(bool, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for tapswitch") {
                let rest: Vec<String> =
                    std::iter::from_fn(|| self.stderr.recv_timeout(Duration::from_secs(1)).ok())
                        .collect();
                return Some((status.success(), rest.join("\n")));
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for CtlProcess {
    fn drop(&mut self) {
        // Child::kill signals exactly this child's PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A service manager's notification socket (`NOTIFY_SOCKET`, `sd_notify(3)`): a Unix
/// datagram socket that, like systemd's, asks the kernel for each sender's credentials,
/// so a test sees which process said what (systemd with `NotifyAccess=main` heeds only
/// its main process).
pub struct NotifySocket {
    socket: std::os::unix::net::UnixDatagram,
    pub path: PathBuf,
    _dir: TempDir,
}

/// One notification: the sender's pid and the `KEY=VALUE` lines.
#[derive(Debug)]
pub struct Notification {
    pub pid: i32,
    pub lines: Vec<String>,
}

impl Notification {
    /// Whether it carries the line `line` (e.g. `READY=1`).
    pub fn has(&self, line: &str) -> bool {
        self.lines.iter().any(|l| l == line)
    }
}

impl NotifySocket {
    pub fn new() -> Self {
        use std::os::fd::AsRawFd;
        let dir = TempDir::new("tsnotify");
        let path = dir.path.join("notify");
        let socket =
            std::os::unix::net::UnixDatagram::bind(&path).expect("binding the notify socket");
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads one c_int from a live local of that size.
        let ret = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PASSCRED,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(ret, 0, "SO_PASSCRED: {}", std::io::Error::last_os_error());
        Self {
            socket,
            path,
            _dir: dir,
        }
    }

    /// The next notification, waiting up to `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Notification> {
        use std::os::fd::AsRawFd;
        self.socket
            .set_read_timeout(Some(timeout))
            .expect("setting a read timeout");
        let mut data = [0u8; 4096];
        // Room for one SCM_CREDENTIALS message, u64-aligned for cmsghdr.
        let mut control = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: an all-zero msghdr is valid (null name, no iovecs); fields are set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: msg points to live buffers of the lengths it gives.
        let len = unsafe { libc::recvmsg(self.socket.as_raw_fd(), &mut msg, 0) };
        if len < 0 {
            return None;
        }
        let mut pid = 0;
        // SAFETY: the kernel filled msg_control with msg_controllen bytes of cmsgs;
        // CMSG_FIRSTHDR/NXTHDR/DATA stay within it.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SCM_CREDENTIALS
                {
                    let cred: libc::ucred = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    pid = cred.pid;
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        let text = String::from_utf8_lossy(&data[..len as usize]);
        Some(Notification {
            pid,
            lines: text.lines().map(str::to_owned).collect(),
        })
    }
}

/// A veth pair with MTU 1450 (an inner segment over a 1500-byte VXLAN underlay): `a` in
/// namespace `a_ns`, its peer `b` in `b_ns`.
pub fn veth_pair_1450(a_ns: &str, a: &str, b_ns: &str, b: &str) {
    sh(
        "ip",
        &[
            "link", "add", a, "netns", a_ns, "mtu", "1450", "type", "veth", "peer", "name", b,
            "netns", b_ns, "mtu", "1450",
        ],
    );
}
