//! BGP EVPN end to end: hosts A and B each run tapswitch (a TAP endpoint, a vxlan port with
//! no static remotes, `[evpn]`) and gobgpd; with `frr`, host C runs FRR (zebra + bgpd,
//! `advertise-all-vni`) over a Linux bridge and a `nolearning` vxlan device. Every host is a
//! namespace of its own (its own loopback for gobgpd's API; tapswitch runs inside it), the
//! underlay a bridge in another. Checks: pings between all endpoints, what each side
//! programmed (tapswitch's `fdb show` sources, FRR's kernel FDB), a MAC moved from A to B,
//! and gobgpd on A stopped and started again (convergence times are printed, not asserted).

mod common;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use std::io::{BufRead, BufReader};
use std::sync::mpsc::Receiver;

use tapswitch::control::protocol::{EntrySource, Event, EventLine, EvpnStatus, StreamEvent};

const ASN: u16 = 65000;
const VNI: u32 = 100;
/// The hosts' underlay (VTEP) addresses: A, B, C.
const VTEPS: [&str; 3] = ["10.82.0.1", "10.82.0.2", "10.82.0.3"];
/// The endpoints' addresses: on A, B, C.
const ENDPOINTS: [&str; 3] = ["192.168.82.1", "192.168.82.2", "192.168.82.3"];
/// The station that moves from A to B (a second TAP port on each, one up at a time).
const MOVER_MAC: &str = "02:82:00:00:00:10";
const MOVER_ADDR: &str = "192.168.82.10";

/// A daemon started inside a namespace (`ip netns exec` execs it, so the PID is its own),
/// killed by that PID on drop.
struct Daemon(Child);

impl Daemon {
    fn start(netns: &str, log: &Path, program: &str, args: &[&str]) -> Daemon {
        let log = File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", netns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        Daemon(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gobgpd_config(router_id: &str, neighbors: &[&str]) -> String {
    let mut config = format!(
        "[global.config]\nas = {ASN}\nrouter-id = \"{router_id}\"\nlocal-address-list = [\"{router_id}\"]\n"
    );
    for neighbor in neighbors {
        config.push_str(&format!(
            "[[neighbors]]\n[neighbors.config]\nneighbor-address = \"{neighbor}\"\npeer-as = {ASN}\n\
             [neighbors.transport.config]\nlocal-address = \"{router_id}\"\n\
             [[neighbors.afi-safis]]\n[neighbors.afi-safis.config]\nafi-safi-name = \"l2vpn-evpn\"\n"
        ));
    }
    config
}

/// One host: its namespace, its files, its daemons.
struct Host {
    ns: Netns,
    dir: TempDir,
    vtep: &'static str,
    neighbors: Vec<&'static str>,
    gobgpd: Option<Daemon>,
}

impl Host {
    fn new(fabric: &Netns, index: usize, peers: &[usize]) -> Host {
        let ns = Netns::new();
        sh("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        let (here, there) = (unique("evu"), unique("evf"));
        sh(
            "ip",
            &[
                "link",
                "add",
                &here,
                "netns",
                &ns.name,
                "type",
                "veth",
                "peer",
                "name",
                &there,
                "netns",
                &fabric.name,
            ],
        );
        let cidr = format!("{}/24", VTEPS[index]);
        sh("ip", &["-n", &ns.name, "addr", "add", &cidr, "dev", &here]);
        sh("ip", &["-n", &ns.name, "link", "set", &here, "up"]);
        sh(
            "ip",
            &[
                "-n",
                &fabric.name,
                "link",
                "set",
                &there,
                "master",
                "fabric",
                "up",
            ],
        );
        Host {
            ns,
            dir: TempDir::new("tsev"),
            vtep: VTEPS[index],
            neighbors: peers.iter().map(|&i| VTEPS[i]).collect(),
            gobgpd: None,
        }
    }

    fn start_gobgpd(&mut self) {
        let config = self.dir.path.join("gobgpd.toml");
        std::fs::write(&config, gobgpd_config(self.vtep, &self.neighbors)).unwrap();
        let log = self.dir.path.join("gobgpd.log");
        self.gobgpd = Some(Daemon::start(
            &self.ns.name,
            &log,
            "gobgpd",
            &[
                "-p",
                "--pprof-disable",
                "--api-hosts",
                "127.0.0.1:50051",
                "-f",
                config.to_str().unwrap(),
            ],
        ));
        let ready = wait_for(Duration::from_secs(20), || {
            exec_in(&self.ns.name, &["gobgp", "global"]).0
        });
        assert!(
            ready,
            "gobgpd in {} did not answer: {}",
            self.ns.name,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn stop_gobgpd(&mut self) {
        self.gobgpd = None;
    }

    /// tapswitch inside this host's namespace: endpoint port tp0 in `endpoint`, the
    /// mover's port tp1 in `mover`, vx0 with no remotes, `[evpn]`.
    fn start_tapswitch(&self, endpoint: &Netns, mover: &Netns) -> Switch {
        let config = self.dir.path.join("switch.toml");
        std::fs::write(
            &config,
            format!(
                "[evpn]\ngobgp = \"127.0.0.1:50051\"\nasn = {ASN}\n\n\
                 [[port]]\nname = \"tp0\"\nnetns = \"{}\"\nmtu = 1450\n\n\
                 [[port]]\nname = \"tp1\"\nnetns = \"{}\"\nmtu = 1450\n\n\
                 [[port]]\nname = \"vx0\"\nkind = \"vxlan\"\nvni = {VNI}\n\
                 local = \"{}\"\nremotes = []\n",
                endpoint.name, mover.name, self.vtep
            ),
        )
        .unwrap();
        let netns = File::open(format!("/run/netns/{}", self.ns.name)).unwrap();
        Switch::start_configured(&["--config", config.to_str().unwrap()], move |command| {
            // SAFETY: between fork and exec only setns runs, an async-signal-safe system
            // call on a descriptor the closure owns; nothing allocates or locks.
            unsafe {
                command.pre_exec(move || {
                    if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        })
    }

    /// Host C: FRR over a Linux bridge and vxlan device, its endpoint a veth in `endpoint`.
    fn start_frr(&mut self, endpoint: &Netns, endpoint_dev: &str) -> Vec<Daemon> {
        let ns = self.ns.name.clone();
        let run = |args: &[&str]| {
            let mut full = vec!["-n", ns.as_str()];
            full.extend_from_slice(args);
            sh("ip", &full);
        };
        let bridge_end = unique("evc");
        veth_pair_1450(&ns, &bridge_end, &endpoint.name, endpoint_dev);
        for command in frr::bridge_vxlan_commands(VNI, self.vtep, &[&bridge_end]) {
            let command: Vec<&str> = command.iter().map(String::as_str).collect();
            run(&command);
        }
        let neighbors: Vec<String> = self.neighbors.iter().map(|n| n.to_string()).collect();
        let mut daemons = Vec::new();
        frr::start(
            &self.dir.path,
            ASN,
            self.vtep,
            &neighbors,
            |daemon, program, args| {
                let out = self.dir.path.join(format!("{daemon}.out"));
                daemons.push(Daemon::start(&ns, &out, program, args));
            },
        );
        daemons
    }

    fn vtysh(&self, command: &str) -> String {
        let args = frr::vtysh_args(&self.dir.path, command);
        let mut all = vec!["vtysh"];
        all.extend(args.iter().map(String::as_str));
        exec_in(&self.ns.name, &all).1
    }
}

/// `tapswitch events --json` on a switch, its lines decoded; stopped by its PID on drop.
struct Events {
    child: Child,
    lines: Receiver<EventLine>,
}

impl Events {
    /// Subscribed once it returns: it flushes the MAC table until the stream shows it.
    fn start(switch: &Switch) -> Events {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tapswitch"))
            .args(["events", "--json", "--control"])
            .arg(&switch.control)
            .stdout(Stdio::piped())
            .spawn()
            .expect("running tapswitch events");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let line = serde_json::from_str(&line).expect("an event line");
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let events = Events { child, lines };
        let subscribed = wait_for(Duration::from_secs(10), || {
            switch.ctl(&["fdb", "flush"]);
            events
                .lines
                .recv_timeout(Duration::from_millis(200))
                .is_ok()
        });
        assert!(subscribed, "the events stream never started");
        events
    }

    /// The first event `wanted` accepts within 30 s.
    fn wait(&self, wanted: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(EventLine::Known(StreamEvent { event, .. })) if wanted(&event) => return event,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("no such event; saw {seen:?}");
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn evpn_status(switch: &Switch) -> EvpnStatus {
    switch.ctl_as(&["evpn", "status"])
}

fn remote_vteps(switch: &Switch) -> Vec<String> {
    let status = evpn_status(switch);
    let vni = status.vnis.iter().find(|v| v.vni == VNI).expect("VNI 100");
    vni.remote_vteps.iter().map(|v| v.to_string()).collect()
}

/// Whether `mac` is an EVPN entry behind `vtep` in `switch`'s MAC table.
fn evpn_entry(switch: &Switch, mac: &str, vtep: &str) -> bool {
    switch.fdb().entries.iter().any(|e| {
        e.mac.to_string() == mac
            && e.source == EntrySource::Evpn
            && e.remote.map(|r| r.to_string()).as_deref() == Some(vtep)
    })
}

/// An endpoint namespace whose TAP port `dev` (made by the switch) gets `addr`, up.
fn address(ns: &Netns, dev: &str, addr: &str, mac: Option<&str>) {
    if let Some(mac) = mac {
        sh("ip", &["-n", &ns.name, "link", "set", dev, "address", mac]);
    }
    let cidr = format!("{addr}/24");
    sh("ip", &["-n", &ns.name, "addr", "add", &cidr, "dev", dev]);
    sh("ip", &["-n", &ns.name, "link", "set", dev, "up"]);
}

fn reaches(from: &Netns, addr: &str) -> bool {
    wait_for(Duration::from_secs(15), || {
        ping(&from.name, addr, 1, "0.2") == 1
    })
}

/// gobgpd (and FRR) must be installed: a missing one fails the test rather than skip it.
fn require_tools(frr: bool) {
    assert!(
        Command::new("gobgpd").arg("--version").output().is_ok(),
        "gobgpd is not installed (Debian package gobgpd; scripts/install-deps.sh)"
    );
    if frr {
        assert!(
            Path::new("/usr/lib/frr/bgpd").exists(),
            "FRR is not installed (Debian package frr; scripts/install-deps.sh)"
        );
    }
}

/// The underlay: a namespace holding the bridge every host's veth is plugged into.
fn fabric() -> Netns {
    let fabric = Netns::new();
    sh(
        "ip",
        &[
            "-n",
            &fabric.name,
            "link",
            "add",
            "fabric",
            "type",
            "bridge",
        ],
    );
    sh("ip", &["-n", &fabric.name, "link", "set", "fabric", "up"]);
    fabric
}

fn log_of(path: PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn two_tapswitch_hosts_learn_move_and_survive_a_gobgpd_restart() {
    require_root!();
    require_tools(false);
    let fabric = fabric();
    let mut a = Host::new(&fabric, 0, &[1]);
    let mut b = Host::new(&fabric, 1, &[0]);
    a.start_gobgpd();
    b.start_gobgpd();
    let (ea, eb, ma, mb) = (Netns::new(), Netns::new(), Netns::new(), Netns::new());
    let switch_a = a.start_tapswitch(&ea, &ma);
    let switch_b = b.start_tapswitch(&eb, &mb);
    address(&ea, "tp0", ENDPOINTS[0], None);
    address(&eb, "tp0", ENDPOINTS[1], None);

    // Type-3 routes: each switch floods to the other.
    let flooding = wait_for(Duration::from_secs(60), || {
        remote_vteps(&switch_a) == [VTEPS[1]] && remote_vteps(&switch_b) == [VTEPS[0]]
    });
    assert!(
        flooding,
        "flood lists never converged: A {:?}, B {:?}\nA's gobgpd: {}",
        evpn_status(&switch_a),
        evpn_status(&switch_b),
        log_of(a.dir.path.join("gobgpd.log"))
    );
    assert!(evpn_status(&switch_a).connected);
    assert!(reaches(&ea, ENDPOINTS[1]), "A's endpoint reaches B's");
    assert_eq!(ping(&eb.name, ENDPOINTS[0], 3, "0.2"), 3);

    // Type-2 routes: each endpoint's MAC is an EVPN entry on the other switch.
    let (ea_mac, eb_mac) = (link_mac(&ea.name, "tp0"), link_mac(&eb.name, "tp0"));
    assert!(
        wait_for(Duration::from_secs(20), || evpn_entry(
            &switch_a, &eb_mac, VTEPS[1]
        ) && evpn_entry(
            &switch_b, &ea_mac, VTEPS[0]
        )),
        "EVPN entries missing: A {:?}\nB {:?}",
        switch_a.fdb(),
        switch_b.fdb()
    );
    let status = evpn_status(&switch_a);
    assert_eq!(
        (status.vnis[0].local_macs, status.vnis[0].port.as_str()),
        (1, "vx0"),
        "{status:?}"
    );
    let stats = switch_a.stats();
    assert!(
        stats.evpn.as_ref().is_some_and(|e| e.connected),
        "{stats:?}"
    );

    // The mover lives on A, then on B (same MAC and address; A's side goes down first).
    address(&ma, "tp1", MOVER_ADDR, Some(MOVER_MAC));
    assert!(
        reaches(&ma, ENDPOINTS[1]),
        "the mover on A reaches B's endpoint"
    );
    assert!(
        wait_for(Duration::from_secs(20), || evpn_entry(
            &switch_b, MOVER_MAC, VTEPS[0]
        )),
        "B never got the mover behind A: {:?}",
        switch_b.fdb()
    );
    sh("ip", &["-n", &ma.name, "link", "set", "tp1", "down"]);
    let moved = Instant::now();
    address(&mb, "tp1", MOVER_ADDR, Some(MOVER_MAC));
    // Its first frames on B (ARP, ping) are what B learns it from.
    assert_eq!(ping(&mb.name, ENDPOINTS[1], 1, "0.2"), 1);
    let converged = wait_for(Duration::from_secs(30), || {
        evpn_entry(&switch_a, MOVER_MAC, VTEPS[1])
    });
    let took = moved.elapsed();
    assert!(
        converged,
        "A never moved the mover behind B: {:?}",
        switch_a.fdb()
    );
    eprintln!("EVPN MAC move A -> B converged on A in {took:?} (B's learn + route + A's install)");
    assert!(
        reaches(&ea, MOVER_ADDR),
        "A's endpoint reaches the mover on B"
    );

    // gobgpd on A goes away: A keeps its last state and says so.
    let events = Events::start(&switch_a);
    a.stop_gobgpd();
    let event = events.wait(|e| matches!(e, Event::EvpnDisconnected { .. }));
    assert!(
        matches!(&event, Event::EvpnDisconnected { error: Some(_), .. }),
        "{event:?}"
    );
    assert!(
        wait_for(Duration::from_secs(20), || !evpn_status(&switch_a)
            .connected),
        "A did not notice gobgpd stopped"
    );
    let status = evpn_status(&switch_a);
    assert!(status.last_error.is_some(), "{status:?}");
    assert!(
        wait_for(Duration::from_secs(5), || switch_a
            .stats()
            .evpn
            .is_some_and(|e| !e.connected)),
        "stats do not show EVPN disconnected"
    );
    assert!(
        evpn_entry(&switch_a, &eb_mac, VTEPS[1]),
        "A keeps its EVPN entries: {:?}",
        switch_a.fdb()
    );
    assert_eq!(remote_vteps(&switch_a), [VTEPS[1]], "and its flood list");
    // B withdrew A's routes with the session; A's frames still reach B by A's state, and B
    // answers by what it learns from them.
    assert!(reaches(&ea, ENDPOINTS[1]), "A forwards on its last state");

    // gobgpd back on A: the agent reconnects and everything is advertised again.
    let restarted = Instant::now();
    a.start_gobgpd();
    let reconnected = wait_for(Duration::from_secs(30), || {
        let status = evpn_status(&switch_a);
        status.connected && status.sessions >= 2
    });
    assert!(reconnected, "A's agent never reconnected");
    eprintln!(
        "EVPN agent on A reconnected {:?} after gobgpd was started again",
        restarted.elapsed()
    );
    let resynced = wait_for(Duration::from_secs(60), || {
        let status = evpn_status(&switch_a);
        status.connected
            && status.sessions >= 2
            && remote_vteps(&switch_b) == [VTEPS[0]]
            && evpn_entry(&switch_b, &ea_mac, VTEPS[0])
    });
    let took = restarted.elapsed();
    let event = events.wait(|e| matches!(e, Event::EvpnConnected { .. }));
    assert!(
        matches!(event, Event::EvpnConnected { sessions: 2.., .. }),
        "{event:?}"
    );
    assert!(
        resynced,
        "no resync after gobgpd came back: A {:?}\nB {:?}\nB's table {:?}",
        evpn_status(&switch_a),
        evpn_status(&switch_b),
        switch_b.fdb()
    );
    eprintln!(
        "EVPN resync after gobgpd restarted on A: {took:?} (gobgpd start, the agent's retry and, dominating, the BGP session with B)"
    );
    assert!(reaches(&eb, ENDPOINTS[0]), "B's endpoint reaches A's again");
    assert_eq!(ping(&ea.name, ENDPOINTS[1], 3, "0.2"), 3);
    drop((switch_a, switch_b));
}

#[test]
fn two_tapswitch_hosts_and_an_frr_host_share_one_evpn_segment() {
    require_root!();
    require_tools(true);
    let fabric = fabric();
    let mut a = Host::new(&fabric, 0, &[1, 2]);
    let mut b = Host::new(&fabric, 1, &[0, 2]);
    let mut c = Host::new(&fabric, 2, &[0, 1]);
    a.start_gobgpd();
    b.start_gobgpd();
    let (ea, eb, ec) = (Netns::new(), Netns::new(), Netns::new());
    let (ma, mb) = (Netns::new(), Netns::new());
    let ec_dev = unique("eve");
    let _frr = c.start_frr(&ec, &ec_dev);
    let switch_a = a.start_tapswitch(&ea, &ma);
    let switch_b = b.start_tapswitch(&eb, &mb);
    address(&ea, "tp0", ENDPOINTS[0], None);
    address(&eb, "tp0", ENDPOINTS[1], None);
    address(&ec, &ec_dev, ENDPOINTS[2], None);

    // Both tapswitch hosts flood to each other and to C (FRR's type-3 for VNI 100).
    let flooding = wait_for(Duration::from_secs(90), || {
        remote_vteps(&switch_a) == [VTEPS[1], VTEPS[2]]
            && remote_vteps(&switch_b) == [VTEPS[0], VTEPS[2]]
    });
    assert!(
        flooding,
        "flood lists never converged: A {:?}\nB {:?}\nFRR: {}",
        evpn_status(&switch_a),
        evpn_status(&switch_b),
        c.vtysh("show bgp l2vpn evpn")
    );

    // Every pair of endpoints, both ways.
    let all = [(&ea, 0), (&eb, 1), (&ec, 2)];
    for &(from, i) in &all {
        for &(_, j) in &all {
            if i != j {
                assert!(
                    reaches(from, ENDPOINTS[j]),
                    "endpoint {i} does not reach endpoint {j}\nFRR: {}\nC's FDB: {}",
                    c.vtysh("show bgp l2vpn evpn"),
                    exec_in(&c.ns.name, &["bridge", "fdb", "show", "dev", "vxlan100"]).1
                );
            }
        }
    }

    // FRR programmed the kernel VTEP from tapswitch's routes: both MACs and both flood entries.
    let (ea_mac, eb_mac) = (link_mac(&ea.name, "tp0"), link_mac(&eb.name, "tp0"));
    let ec_mac = link_mac(&ec.name, &ec_dev);
    let wanted = [
        format!("{ea_mac} dst {}", VTEPS[0]),
        format!("{eb_mac} dst {}", VTEPS[1]),
        format!("00:00:00:00:00:00 dst {}", VTEPS[0]),
        format!("00:00:00:00:00:00 dst {}", VTEPS[1]),
    ];
    let mut fdb = String::new();
    let programmed = wait_for(Duration::from_secs(30), || {
        fdb = exec_in(&c.ns.name, &["bridge", "fdb", "show", "dev", "vxlan100"]).1;
        wanted.iter().all(|line| fdb.contains(line.as_str()))
    });
    assert!(programmed, "C's kernel FDB lacks {wanted:?}:\n{fdb}");

    // And tapswitch programmed FRR's station as an EVPN entry behind C.
    assert!(
        wait_for(Duration::from_secs(30), || evpn_entry(
            &switch_a, &ec_mac, VTEPS[2]
        ) && evpn_entry(
            &switch_b, &ec_mac, VTEPS[2]
        )),
        "C's endpoint is no EVPN entry: A {:?}\nB {:?}",
        switch_a.fdb(),
        switch_b.fdb()
    );
    // The routes as the BGP speakers show them: gobgpd's RIB on A, FRR's table on C.
    let rib = exec_in(&a.ns.name, &["gobgp", "global", "rib", "-a", "evpn"]).1;
    for wanted in [ea_mac.as_str(), eb_mac.as_str(), ec_mac.as_str(), VTEPS[2]] {
        assert!(
            rib.contains(wanted),
            "A's gobgpd RIB lacks {wanted}:\n{rib}"
        );
    }
    let frr_table = c.vtysh("show bgp l2vpn evpn");
    for wanted in [ea_mac.as_str(), eb_mac.as_str(), VTEPS[0], VTEPS[1]] {
        assert!(
            frr_table.contains(wanted),
            "FRR's table lacks {wanted}:\n{frr_table}"
        );
    }
    let status = evpn_status(&switch_a);
    assert!(status.connected, "{status:?}");
    assert_eq!(
        status.vnis[0].remote_macs, 2,
        "B's and C's endpoints: {status:?}"
    );
    let (ok, table, _) = switch_a.ctl(&["evpn", "status"]);
    assert!(ok);
    assert!(
        table.contains(&format!("{} {}", VTEPS[1], VTEPS[2])),
        "{table}"
    );

    // A MAC moved from A to B: FRR follows the mobility sequence number to B.
    address(&ma, "tp1", MOVER_ADDR, Some(MOVER_MAC));
    assert!(
        reaches(&ma, ENDPOINTS[2]),
        "the mover on A reaches C's endpoint"
    );
    let behind = |vtep: &str| {
        let fdb = exec_in(&c.ns.name, &["bridge", "fdb", "show", "dev", "vxlan100"]).1;
        fdb.contains(&format!("{MOVER_MAC} dst {vtep}"))
    };
    assert!(
        wait_for(Duration::from_secs(30), || behind(VTEPS[0])),
        "C never put the mover behind A"
    );
    sh("ip", &["-n", &ma.name, "link", "set", "tp1", "down"]);
    let moved = Instant::now();
    address(&mb, "tp1", MOVER_ADDR, Some(MOVER_MAC));
    assert_eq!(ping(&mb.name, ENDPOINTS[1], 1, "0.2"), 1);
    let converged = wait_for(Duration::from_secs(30), || behind(VTEPS[1]));
    let took = moved.elapsed();
    assert!(
        converged,
        "C never moved the mover behind B:\n{}",
        c.vtysh("show bgp l2vpn evpn")
    );
    eprintln!("EVPN MAC move A -> B converged in FRR's kernel FDB on C in {took:?}");
    assert!(
        reaches(&ec, MOVER_ADDR),
        "C's endpoint reaches the mover on B"
    );
    drop((switch_a, switch_b));
}
