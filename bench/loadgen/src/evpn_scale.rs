//! EVPN scale simulation (issue 14): many VTEPs' routes reaching one host's agent, with no
//! real hosts.
//!
//! Two namespaces joined by a veth: `inj`, whose gobgpd stands for the whole fabric (every
//! simulated VTEP's type-3 and type-2 routes are added there, each with that VTEP as next
//! hop), and `host`, whose gobgpd is iBGP-peered with it and watched by a real
//! `tapswitch_evpn::AgentHandle` — the same agent the daemon runs — whose dataplane sink
//! records when each remote MAC and flood list arrives. So a route crosses what it crosses on
//! a real fabric: gRPC into a BGP speaker, a BGP session, the host's RIB and best-path
//! watch, the agent's import, and the call into the dataplane.
//!
//! Per round (fresh namespaces and daemons each time):
//! - bulk: every type-3 route, then the MACs in batches of `--batch`; the time to inject
//!   them and the time until the sink holds them all (convergence);
//! - probes: with the table loaded, `--probes` single new MACs one at a time (`AddPath`),
//!   each timed from the call until the sink has it, then withdrawn (`DeletePath`) and timed
//!   until the sink removes it: the route-to-dataplane latency of one change at scale, not
//!   the queueing of a bulk load;
//! - memory: RSS of both gobgpd processes, and this process's RSS growth (the agent and the
//!   recording sink, a `HashMap` entry per MAC, standing for the dataplane's table).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use tapswitch_evpn::route::{RouteDistinguisher, RouteTarget};
use tapswitch_evpn::{
    Action, AgentHandle, DataplaneSink, EvpnSettings, GobgpClient, MacRoute, MulticastRoute,
};

use crate::netns::OwnedNetns;
use crate::proc::{self, OwnedChild};
use crate::stats::{median, percentile_sorted};

const API: &str = "127.0.0.1:50051";
const ASN: u16 = 65000;
const INJECTOR: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
const HOST: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);
/// How long one probe may take to reach the sink before the run fails.
const PROBE_LIMIT: Duration = Duration::from_secs(30);

/// What one run simulates.
#[derive(Clone, Debug)]
pub struct ScaleConfig {
    pub macs: usize,
    pub vteps: usize,
    pub vnis: u32,
    pub batch: usize,
    pub probes: usize,
    pub rounds: u32,
}

/// One round's figures.
#[derive(Clone, Debug, Serialize)]
pub struct RoundReport {
    pub inject_s: f64,
    pub converge_s: f64,
    pub routes_per_s: f64,
    pub add_p50_ms: f64,
    pub add_p99_ms: f64,
    pub withdraw_p50_ms: f64,
    pub withdraw_p99_ms: f64,
    pub host_gobgpd_rss_mib: f64,
    pub injector_gobgpd_rss_mib: f64,
    pub agent_rss_growth_mib: f64,
    pub flood_lists_complete: bool,
}

/// The whole run: its configuration, every round, and the medians.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleReport {
    pub macs: usize,
    pub vteps: usize,
    pub vnis: u32,
    pub batch: usize,
    pub probes: usize,
    pub rounds: Vec<RoundReport>,
}

/// What the agent told the "dataplane", with the instant of each change.
#[derive(Default)]
struct Recorded {
    macs: HashMap<(u32, [u8; 6]), (Ipv4Addr, Instant)>,
    removed: HashMap<(u32, [u8; 6]), Instant>,
    flood: BTreeMap<u32, Vec<Ipv4Addr>>,
}

#[derive(Clone, Default)]
struct RecordingSink {
    state: Arc<(Mutex<Recorded>, Condvar)>,
}

fn lock(state: &Mutex<Recorded>) -> MutexGuard<'_, Recorded> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl DataplaneSink for RecordingSink {
    fn apply(&mut self, action: &Action) {
        let (state, changed) = &*self.state;
        let now = Instant::now();
        let mut recorded = lock(state);
        match action {
            Action::InstallRemoteMac { vni, mac, vtep } => {
                recorded.removed.remove(&(*vni, *mac));
                recorded.macs.insert((*vni, *mac), (*vtep, now));
            }
            Action::RemoveRemoteMac { vni, mac } => {
                recorded.macs.remove(&(*vni, *mac));
                recorded.removed.insert((*vni, *mac), now);
            }
            Action::SetFloodList { vni, vteps } => {
                recorded.flood.insert(*vni, vteps.clone());
            }
            Action::Advertise(_) | Action::Withdraw(_) => {}
        }
        drop(recorded);
        changed.notify_all();
    }
}

impl RecordingSink {
    /// Waits until `done` holds of what was recorded, or `limit` passes.
    fn wait(&self, limit: Duration, mut done: impl FnMut(&Recorded) -> bool) -> bool {
        let (state, changed) = &*self.state;
        let deadline = Instant::now() + limit;
        let mut recorded = lock(state);
        loop {
            if done(&recorded) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || crate::signals::stop_requested() {
                return false;
            }
            // Woken at least every 200 ms, so Ctrl-C ends the wait (and the round's
            // namespaces and daemons are removed on the way out).
            recorded = changed
                .wait_timeout(recorded, left.min(Duration::from_millis(200)))
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

/// The `index`-th simulated VTEP (10.251.0.1 onwards).
fn vtep(index: usize) -> Ipv4Addr {
    let n = index as u32 + 1;
    Ipv4Addr::new(10, 251, (n >> 8) as u8, n as u8)
}

/// The `index`-th simulated MAC: locally administered, unicast, unique per index.
fn mac(index: usize) -> [u8; 6] {
    let n = index as u32;
    [
        0x02,
        0x5c,
        (n >> 24) as u8,
        (n >> 16) as u8,
        (n >> 8) as u8,
        n as u8,
    ]
}

fn mac_route(vni: u32, mac: [u8; 6], vtep: Ipv4Addr) -> MacRoute {
    MacRoute {
        vni,
        mac,
        ip: None,
        vtep,
        rd: RouteDistinguisher::for_vni(vtep, vni).ok(),
        route_targets: vec![RouteTarget::auto(ASN, vni)],
        mobility_seq: None,
    }
}

fn gobgpd_config(router_id: Ipv4Addr, neighbor: Ipv4Addr) -> String {
    format!(
        "[global.config]\nas = {ASN}\nrouter-id = \"{router_id}\"\nlocal-address-list = [\"{router_id}\"]\n\
         [[neighbors]]\n[neighbors.config]\nneighbor-address = \"{neighbor}\"\npeer-as = {ASN}\n\
         [neighbors.transport.config]\nlocal-address = \"{router_id}\"\n\
         [[neighbors.afi-safis]]\n[neighbors.afi-safis.config]\nafi-safi-name = \"l2vpn-evpn\"\n"
    )
}

/// Runs `body` on a new thread inside namespace `netns`, on a current-thread tokio runtime
/// (so every socket it opens, the gRPC connection included, is that namespace's).
fn in_netns<F, Fut, T>(netns: &str, body: F) -> Result<T, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let file = File::open(format!("/run/netns/{netns}")).map_err(|e| format!("{netns}: {e}"))?;
    thread::spawn(move || {
        enter(&file)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        Ok(runtime.block_on(body()))
    })
    .join()
    .map_err(|_| "a namespace thread panicked".to_owned())?
}

/// Moves the calling thread into the namespace `file` is open on.
fn enter(file: &File) -> Result<(), String> {
    // SAFETY: `file` is an open namespace file; setns changes only the calling thread, which
    // callers create for work in that namespace alone.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("setns: {}", std::io::Error::last_os_error()))
    }
}

fn start_gobgpd(netns: &str, dir: &Path, config: &str) -> Result<OwnedChild, String> {
    let path = dir.join(format!("{netns}.toml"));
    std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
    let log = File::create(dir.join(format!("{netns}.log"))).map_err(|e| e.to_string())?;
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", netns, "gobgpd", "-p", "--pprof-disable"])
        .args(["--api-hosts", API, "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    let child = OwnedChild::spawn(command, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    let name = netns.to_owned();
    let answered = proc::wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        in_netns(&name, || async {
            match GobgpClient::connect(API).await {
                Ok(mut client) => client.global().await.is_ok(),
                Err(_) => false,
            }
        })
        .unwrap_or(false)
    });
    if !answered {
        return Err(format!("gobgpd in {netns} did not answer on {API}"));
    }
    Ok(child)
}

fn rss_mib(pid: u32) -> Result<f64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

fn micros(duration: Duration) -> u64 {
    duration.as_micros() as u64
}

fn pct_ms(sorted_us: &[u64], pct: f64) -> f64 {
    percentile_sorted(sorted_us, pct).unwrap_or(0) as f64 / 1000.0
}

/// One round in fresh namespaces.
fn round(config: &ScaleConfig, tag: &str) -> Result<RoundReport, String> {
    let injector = OwnedNetns::create(&format!("tsevi{tag}")).map_err(|e| e.to_string())?;
    let host = OwnedNetns::create(&format!("tsevh{tag}")).map_err(|e| e.to_string())?;
    let (veth_i, veth_h) = (format!("tsev{tag}i"), format!("tsev{tag}h"));
    let ip = |args: &[&str]| proc::ip(args).map(drop).map_err(|e| e.to_string());
    ip(&[
        "-n",
        injector.name(),
        "link",
        "add",
        &veth_i,
        "type",
        "veth",
        "peer",
        "name",
        &veth_h,
        "netns",
        host.name(),
    ])?;
    for (netns, dev, addr) in [
        (injector.name(), &veth_i, INJECTOR),
        (host.name(), &veth_h, HOST),
    ] {
        ip(&[
            "-n",
            netns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            dev,
        ])?;
        ip(&["-n", netns, "link", "set", dev, "up"])?;
    }
    let dir = std::env::temp_dir().join(format!("tapswitch-evpn-scale-{tag}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let injector_gobgpd = start_gobgpd(injector.name(), &dir, &gobgpd_config(INJECTOR, HOST))?;
    let host_gobgpd = start_gobgpd(host.name(), &dir, &gobgpd_config(HOST, INJECTOR))?;

    let vnis: BTreeSet<u32> = (1..=config.vnis).collect();
    let sink = RecordingSink::default();
    let rss_before = rss_mib(std::process::id())?;
    let agent = {
        let file = File::open(format!("/run/netns/{}", host.name())).map_err(|e| e.to_string())?;
        let settings = EvpnSettings {
            asn: ASN,
            vtep: HOST,
            vnis: vnis.clone(),
        };
        let sink = sink.clone();
        // The agent's thread opens its gRPC connection in the namespace it starts from.
        thread::spawn(move || {
            enter(&file)?;
            AgentHandle::spawn(settings, API.to_owned(), sink).map_err(|e| e.to_string())
        })
        .join()
        .map_err(|_| "the agent's starter thread panicked".to_owned())??
    };

    // Every (VTEP, VNI) membership, then the MACs spread over VTEPs and VNIs.
    let mut memberships = Vec::new();
    for v in 0..config.vteps {
        for vni in &vnis {
            memberships.push(MulticastRoute {
                vni: *vni,
                vtep: vtep(v),
                rd: RouteDistinguisher::for_vni(vtep(v), *vni).ok(),
                route_targets: vec![RouteTarget::auto(ASN, *vni)],
            });
        }
    }
    let macs: Vec<(u32, [u8; 6], Ipv4Addr)> = (0..config.macs)
        .map(|i| {
            let vni = 1 + (i / config.vteps) as u32 % config.vnis;
            (vni, mac(i), vtep(i % config.vteps))
        })
        .collect();
    let mut paths = Vec::with_capacity(memberships.len() + macs.len());
    for route in &memberships {
        paths.push(route.to_path().map_err(|e| e.to_string())?);
    }
    for (vni, m, v) in &macs {
        paths.push(
            mac_route(*vni, *m, *v)
                .to_path()
                .map_err(|e| e.to_string())?,
        );
    }
    let routes = paths.len();
    let batch = config.batch;
    let started = Instant::now();
    in_netns(injector.name(), move || async move {
        let mut client = GobgpClient::connect(API).await?;
        client.add_paths(paths, batch).await
    })?
    .map_err(|e| format!("injecting: {e}"))?;
    let inject = started.elapsed();

    let expected_flood: Vec<Ipv4Addr> = {
        let mut all: Vec<Ipv4Addr> = (0..config.vteps).map(vtep).collect();
        all.sort();
        all
    };
    let loaded = sink.wait(Duration::from_secs(600), |recorded| {
        recorded.macs.len() >= macs.len()
            && vnis.iter().all(|vni| {
                recorded
                    .flood
                    .get(vni)
                    .is_some_and(|list| list.len() == expected_flood.len())
            })
    });
    let converge = started.elapsed();
    if !loaded {
        return Err(format!(
            "not converged after {converge:?}: {} of {} MACs",
            lock(&sink.state.0).macs.len(),
            macs.len()
        ));
    }
    let flood_lists_complete = {
        let recorded = lock(&sink.state.0);
        vnis.iter().all(|vni| {
            let mut list = recorded.flood.get(vni).cloned().unwrap_or_default();
            list.sort();
            list == expected_flood
        }) && macs
            .iter()
            .all(|(vni, m, v)| recorded.macs.get(&(*vni, *m)).map(|(at, _)| at) == Some(v))
    };
    let host_rss = rss_mib(host_gobgpd.pid())?;
    let injector_rss = rss_mib(injector_gobgpd.pid())?;
    let agent_growth = rss_mib(std::process::id())? - rss_before;

    // Probes: one change at a time on the loaded table.
    let probe_sink = sink.clone();
    let (probes, vteps, probe_vnis) = (config.probes, config.vteps, config.vnis);
    let first_probe = config.macs;
    let (mut adds, mut withdraws) = in_netns(injector.name(), move || async move {
        let mut client = GobgpClient::connect(API).await.map_err(|e| e.to_string())?;
        let (mut adds, mut withdraws) = (Vec::new(), Vec::new());
        for p in 0..probes {
            let key = (1 + p as u32 % probe_vnis, mac(first_probe + p));
            let route = mac_route(key.0, key.1, vtep(p % vteps))
                .to_path()
                .map_err(|e| e.to_string())?;
            let sent = Instant::now();
            client
                .add_path(route.clone())
                .await
                .map_err(|e| e.to_string())?;
            if !probe_sink.wait(PROBE_LIMIT, |r| r.macs.contains_key(&key)) {
                return Err(format!("probe {p}: not installed within {PROBE_LIMIT:?}"));
            }
            adds.push(micros(lock(&probe_sink.state.0).macs[&key].1 - sent));
            let sent = Instant::now();
            client.delete_path(route).await.map_err(|e| e.to_string())?;
            if !probe_sink.wait(PROBE_LIMIT, |r| r.removed.contains_key(&key)) {
                return Err(format!("probe {p}: not removed within {PROBE_LIMIT:?}"));
            }
            withdraws.push(micros(lock(&probe_sink.state.0).removed[&key] - sent));
        }
        Ok::<_, String>((adds, withdraws))
    })?
    .map_err(|e| format!("probing: {e}"))?;
    adds.sort_unstable();
    withdraws.sort_unstable();
    agent.stop();
    drop(host_gobgpd);
    drop(injector_gobgpd);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(RoundReport {
        inject_s: inject.as_secs_f64(),
        converge_s: converge.as_secs_f64(),
        routes_per_s: routes as f64 / converge.as_secs_f64(),
        add_p50_ms: pct_ms(&adds, 50.0),
        add_p99_ms: pct_ms(&adds, 99.0),
        withdraw_p50_ms: pct_ms(&withdraws, 50.0),
        withdraw_p99_ms: pct_ms(&withdraws, 99.0),
        host_gobgpd_rss_mib: host_rss,
        injector_gobgpd_rss_mib: injector_rss,
        agent_rss_growth_mib: agent_growth,
        flood_lists_complete,
    })
}

/// Runs every round; each in namespaces of its own, removed when it ends.
pub fn run(config: &ScaleConfig) -> Result<ScaleReport, String> {
    if config.vteps == 0 || config.vnis == 0 || config.macs == 0 {
        return Err("--vteps, --vnis and --macs must be at least 1".into());
    }
    if config.vteps > 65_000 {
        return Err("--vteps is at most 65000 (their addresses are 10.251.x.y)".into());
    }
    if !proc::on_path("gobgpd") {
        return Err(
            "gobgpd is not installed (Debian package gobgpd; scripts/install-deps.sh)".into(),
        );
    }
    crate::signals::install();
    let mut rounds = Vec::new();
    for n in 0..config.rounds {
        if crate::signals::stop_requested() {
            return Err("interrupted".into());
        }
        let tag = format!("{}{n}", std::process::id() % 10_000);
        let report = round(config, &tag)?;
        eprintln!(
            "round {}: converged in {:.1} s, add p50 {:.1} ms",
            n + 1,
            report.converge_s,
            report.add_p50_ms
        );
        rounds.push(report);
    }
    Ok(ScaleReport {
        macs: config.macs,
        vteps: config.vteps,
        vnis: config.vnis,
        batch: config.batch,
        probes: config.probes,
        rounds,
    })
}

/// How a table row reads its figure off a round.
type Figure = fn(&RoundReport) -> f64;

/// Medians (min–max) of each figure across rounds, for people.
pub fn table(report: &ScaleReport) -> String {
    let column = |pick: Figure| -> String {
        let values: Vec<f64> = report.rounds.iter().map(pick).collect();
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!(
            "{:.1} ({low:.1}–{high:.1})",
            median(&values).unwrap_or(f64::NAN)
        )
    };
    let rows: [(&str, Figure); 11] = [
        ("inject, s", |r| r.inject_s),
        ("converge (all MACs + flood lists in the sink), s", |r| {
            r.converge_s
        }),
        ("routes/s to the dataplane", |r| r.routes_per_s),
        ("one new MAC: route → dataplane p50, ms", |r| r.add_p50_ms),
        ("one new MAC: p99, ms", |r| r.add_p99_ms),
        ("one withdrawal: route → dataplane p50, ms", |r| {
            r.withdraw_p50_ms
        }),
        ("one withdrawal: p99, ms", |r| r.withdraw_p99_ms),
        ("host gobgpd RSS, MiB", |r| r.host_gobgpd_rss_mib),
        ("injector gobgpd RSS, MiB", |r| r.injector_gobgpd_rss_mib),
        ("agent + sink RSS growth, MiB", |r| r.agent_rss_growth_mib),
        ("flood lists and MAC→VTEP complete (1 = yes)", |r| {
            f64::from(u8::from(r.flood_lists_complete))
        }),
    ];
    let mut out = format!(
        "EVPN scale: {} VTEPs, {} VNIs, {} remote MACs ({} type-3 routes), batches of {}, {} probes, {} rounds\n",
        report.vteps,
        report.vnis,
        report.macs,
        report.vteps * report.vnis as usize,
        report.batch,
        report.probes,
        report.rounds.len()
    );
    for (name, pick) in rows {
        out.push_str(&format!("  {name:<52} {}\n", column(pick)));
    }
    out
}

/// Writes the report as JSON.
pub fn write(report: &ScaleReport, path: &PathBuf) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    std::fs::write(path, json + "\n").map_err(|e| format!("{}: {e}", path.display()))
}
