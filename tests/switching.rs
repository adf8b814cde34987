//! End-to-end switching through real TAPs between real network namespaces.
//! Needs root (CI runs as root).

mod common;

use std::process::Command;
use std::thread;
use std::time::Duration;

use common::*;
use tapswitch::fdb::PortId;

#[test]
fn three_namespaces_ping_all_pairs() {
    require_root!();
    let mut bed = Bed::new(3);
    for i in 0..3 {
        for j in 0..3 {
            if i != j {
                let replies = ping(bed.ns(i), &Bed::addr(j), 3, "0.1");
                assert_eq!(replies, 3, "ping {} -> {}", Bed::addr(i), Bed::addr(j));
            }
        }
    }
    let snapshot = bed.switch.snapshot();
    let fdb = &snapshot.fdb;
    assert_eq!(fdb.len(), 3, "one learned MAC per endpoint: {fdb:?}");
    for i in 0..3 {
        let mac = link_mac(bed.ns(i), &Bed::dev(i));
        let entry = fdb
            .iter()
            .find(|e| e.mac.to_string() == mac)
            .expect("endpoint MAC learned");
        assert_eq!(entry.port, PortId(i as u32), "{mac} on port {i}");
    }
}

#[test]
fn learned_unicast_is_not_flooded_to_the_third_port() {
    require_root!();
    let mut bed = Bed::new(3);
    // Learn both ends (and their ARP entries).
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 2, "0.1"), 2);
    let before_switch = bed.switch.snapshot();
    let (third_rx_before, _) = link_stats(bed.ns(2), "p2");

    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 200, "0.005"), 200);

    let after_switch = bed.switch.snapshot();
    let (third_rx_after, _) = link_stats(bed.ns(2), "p2");
    let to_third =
        after_switch.counters_of("p2").tx_frames - before_switch.counters_of("p2").tx_frames;
    let to_second =
        after_switch.counters_of("p1").tx_frames - before_switch.counters_of("p1").tx_frames;
    assert!(to_second >= 200, "the flow reached p1: {to_second}");
    // A stray ARP refresh may be broadcast; 400 frames of flow must not be.
    assert!(
        to_third <= 2,
        "switch sent {to_third} frames of a learned flow to p2"
    );
    assert!(
        third_rx_after - third_rx_before <= 2,
        "p2's endpoint received the flow"
    );
}

#[test]
fn broadcast_reaches_every_other_port() {
    require_root!();
    let mut bed = Bed::new(3);
    let src = mac_bytes(&link_mac(bed.ns(0), "p0"));
    let frames: Vec<Vec<u8>> = (0..50).map(|_| frame([0xff; 6], src, 60)).collect();
    let before = [link_stats(bed.ns(1), "p1").0, link_stats(bed.ns(2), "p2").0];
    send_raw(bed.ns(0), "p0", &frames);
    assert!(
        wait_for(Duration::from_secs(5), || {
            link_stats(bed.ns(1), "p1").0 >= before[0] + 50
                && link_stats(bed.ns(2), "p2").0 >= before[1] + 50
        }),
        "broadcasts did not reach both other endpoints"
    );
    let snapshot = bed.switch.snapshot();
    assert!(snapshot.counters_of("p1").tx_frames >= 50);
    assert!(snapshot.counters_of("p2").tx_frames >= 50);
    // Never back out of the ingress port.
    assert_eq!(snapshot.counters_of("p0").tx_frames, 0);
}

#[test]
fn learned_entries_age_out() {
    require_root!();
    let dir = std::env::temp_dir().join(unique("tsage"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("ageing.toml");
    std::fs::write(&config, "[switch]\nfdb_ageing_secs = 1\n").unwrap();
    let mut bed = Bed::with_args(2, &["--config", config.to_str().unwrap()]);
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 1, "0.1"), 1);
    let learned = bed.switch.snapshot();
    assert_eq!(learned.fdb.len(), 2);
    // Expired entries vanish from view at once and are swept within a second.
    let aged_out = wait_for(Duration::from_secs(5), || {
        let snapshot = bed.switch.snapshot();
        snapshot.fdb.is_empty() && snapshot.fdb_counters.aged_out == 2
    });
    assert!(
        aged_out,
        "entries did not age out: {:?}",
        bed.switch.snapshot()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_mac_that_moves_port_is_relearned() {
    require_root!();
    let mut bed = Bed::new(3);
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 1, "0.1"), 1);
    let mac = link_mac(bed.ns(0), "p0");
    let peer = mac_bytes(&link_mac(bed.ns(1), "p1"));
    // The endpoint behind p0 "moves" behind p2: its MAC now arrives there.
    send_raw(bed.ns(2), "p2", &[frame(peer, mac_bytes(&mac), 60)]);
    assert!(wait_for(Duration::from_secs(5), || {
        let snapshot = bed.switch.snapshot();
        snapshot
            .fdb
            .iter()
            .any(|e| e.mac.to_string() == mac && e.port == PortId(2))
    }));
    let snapshot = bed.switch.snapshot();
    assert!(snapshot.fdb_counters.moved >= 1);
    assert_eq!(snapshot.counters_of("p2").mac_moves, 1);
}

#[test]
fn runt_and_oversized_frames_are_counted_and_dropped_while_traffic_flows() {
    require_root!();
    let mut bed = Bed::new(2);
    let src = mac_bytes(&link_mac(bed.ns(0), "p0"));
    let dst = mac_bytes(&link_mac(bed.ns(1), "p1"));
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 1, "0.1"), 1);

    // An 802.1Q ethertype promises 4 more header bytes than these frames have.
    // (The kernel pads anything shorter than 14 bytes before the TAP sees it.)
    let mut runts = Vec::new();
    for len in 14..18 {
        let mut runt = frame(dst, src, 14);
        runt[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
        runt.resize(len, 0);
        runts.push(runt);
    }
    send_raw(bed.ns(0), "p0", &runts);

    // The endpoint's MTU says 9000, the switch port's says 1500: too big.
    sh("ip", &["-n", bed.ns(0), "link", "set", "p0", "mtu", "9000"]);
    let oversized: Vec<Vec<u8>> = (0..3).map(|_| frame(dst, src, 4000)).collect();
    send_raw(bed.ns(0), "p0", &oversized);

    assert!(wait_for(Duration::from_secs(5), || {
        let snapshot = bed.switch.snapshot();
        snapshot.dropped("p0", DropReason::Runt) == 4
            && snapshot.dropped("p0", DropReason::Oversize) == 3
    }));
    assert_eq!(
        ping(bed.ns(0), &Bed::addr(1), 5, "0.1"),
        5,
        "traffic stopped after bad frames"
    );
    let snapshot = bed.switch.snapshot();
    assert!(snapshot.counters_of("p1").rx_frames >= 6);
}

#[test]
fn deleting_one_tap_under_traffic_leaves_the_others_forwarding() {
    require_root!();
    let mut bed = Bed::new(3);
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 1, "0.1"), 1);
    let ns0 = bed.ns(0).to_owned();
    let flow = thread::spawn(move || ping(&ns0, &Bed::addr(1), 60, "0.05"));
    thread::sleep(Duration::from_millis(800));
    sh("ip", &["-n", bed.ns(2), "link", "del", "p2"]);
    let replies = flow.join().unwrap();
    assert_eq!(replies, 60, "the flow between p0 and p1 lost frames");
    let snapshot = bed.switch.snapshot();
    assert!(
        snapshot.removed_ports.iter().any(|p| p.name == "p2"),
        "p2 not reported removed: {snapshot:?}"
    );
    assert_eq!(snapshot.ports.len(), 2);
    assert_eq!(ping(bed.ns(1), &Bed::addr(0), 3, "0.1"), 3);
}

#[test]
fn taps_are_removed_when_the_switch_stops() {
    require_root!();
    let ns = Netns::new();
    let here = unique("tsrm");
    let there = unique("tsrm");
    let switch = Switch::start(&["--port", &format!("{there}@{}", ns.name), "--port", &here]);
    let host_side = std::path::Path::new("/sys/class/net").join(&here);
    assert!(host_side.exists());
    let (ok, _) = exec_in(&ns.name, &["ip", "link", "show", &there]);
    assert!(ok, "TAP {there} not created in the namespace");
    assert!(switch.stop(), "the switch did not exit cleanly on SIGTERM");
    assert!(!host_side.exists(), "TAP {here} left behind");
    let (ok, _) = exec_in(&ns.name, &["ip", "link", "show", &there]);
    assert!(!ok, "TAP left behind in the namespace");
}

#[test]
fn bad_command_lines_get_precise_errors() {
    require_root!();
    let cases: [(&[&str], &str); 3] = [
        (&["run", "--port", "this-name-is-too-long"], "IFNAMSIZ"),
        (
            &["run", "--port", "a", "--port", "a"],
            "duplicate port name",
        ),
        (
            &["run", "--port", "tsx@no-such-namespace-here"],
            "no-such-namespace-here",
        ),
    ];
    let dir = TempDir::new("tsbad");
    for (args, expected) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_tapswitch"))
            .args(args)
            .arg("--control")
            .arg(dir.path.join("tapswitch.sock"))
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// With two dataplane threads each port is read by one thread and written by
/// both; counters from both threads must add up and port removal must reach
/// every thread.
#[test]
fn two_dataplane_threads_forward_count_and_remove_ports() {
    require_root!();
    let mut bed = Bed::with_config(3, "[switch]\nthreads = 2", |_| String::new());
    for (i, j) in [(0, 1), (1, 2), (2, 0)] {
        assert_eq!(
            ping(bed.ns(i), &Bed::addr(j), 20, "0.01"),
            20,
            "ping {i} -> {j}"
        );
    }
    let snapshot = bed.switch.snapshot();
    // Every frame read is either dropped at ingress or written somewhere:
    // the per-thread counters were merged, not overwritten.
    let rx: u64 = (0..3)
        .map(|i| snapshot.counters_of(&Bed::dev(i)).rx_frames)
        .sum();
    let tx: u64 = (0..3)
        .map(|i| snapshot.counters_of(&Bed::dev(i)).tx_frames)
        .sum();
    assert!(rx >= 120, "{snapshot:?}");
    assert!(
        tx >= rx,
        "fewer frames written ({tx}) than read ({rx}): {snapshot:?}"
    );
    assert_eq!(snapshot.fdb.len(), 3);

    // Port 1 is read by the second thread; deleting it must remove it everywhere.
    sh("ip", &["-n", bed.ns(1), "link", "del", "p1"]);
    assert!(wait_for(Duration::from_secs(5), || {
        bed.switch.snapshot().ports.len() == 2
    }));
    assert_eq!(ping(bed.ns(0), &Bed::addr(2), 10, "0.01"), 10);
    let snapshot = bed.switch.snapshot();
    assert!(
        snapshot.removed_ports.iter().any(|p| p.name == "p1"),
        "{snapshot:?}"
    );
    assert!(snapshot.fdb.iter().all(|e| e.port != PortId(1)));
}

/// A port with several queues is one multi-queue TAP whose queues are read by
/// different dataplane threads; every flow still gets through.
#[test]
fn multi_queue_ports_forward_across_threads() {
    require_root!();
    let mut bed = Bed::with_config(2, "[switch]\nthreads = 2", |_| "queues = 4".into());
    for i in 0..2 {
        let (ok, flags) = exec_in(
            bed.ns(i),
            &["cat", &format!("/sys/class/net/p{i}/tun_flags")],
        );
        assert!(ok);
        let flags = i64::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
        assert_ne!(flags & 0x100, 0, "p{i} is not multi-queue: {flags:#x}");
    }
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 20, "0.01"), 20);
    assert_eq!(ping(bed.ns(1), &Bed::addr(0), 20, "0.01"), 20);
    // Many TCP flows, spread over the queues by the kernel's flow hash.
    let _server = Background::start_in(bed.ns(1), &["iperf3", "-s", "-1", "-p", "5299"]);
    thread::sleep(Duration::from_millis(300));
    let (ok, out) = exec_in(
        bed.ns(0),
        &[
            "iperf3",
            "-c",
            &Bed::addr(1),
            "-p",
            "5299",
            "-t",
            "1",
            "-P",
            "8",
            "-J",
        ],
    );
    assert!(ok, "iperf3 failed: {out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let bytes = report["end"]["sum_received"]["bytes"].as_u64().unwrap();
    assert!(bytes > 1_000_000, "only {bytes} bytes crossed");
    let snapshot = bed.switch.snapshot();
    assert_eq!(snapshot.dropped("p1", DropReason::TxError), 0);
}

/// `Cpus_allowed_list` of one of the switch's threads (`/proc/PID/task/TID/status`).
fn thread_cpus(pid: i32, tid: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or_else(|| panic!("no Cpus_allowed_list in {status}"))
        .trim()
        .to_owned()
}

/// The thread of the switch named `name` (`/proc/PID/task/TID/comm`).
fn thread_named(pid: i32, name: &str) -> String {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|tid| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                .is_ok_and(|comm| comm.trim() == name)
        })
        .unwrap_or_else(|| panic!("the switch has no thread named {name}"))
}

/// `switch.cpu_affinity`, "auto" by default: a dataplane thread holds on to one CPU (the
/// highest allowed) while it moves bulk traffic and lets it go when traffic stops; the
/// control threads are never pinned; "none" pins nothing; a list pins what it says from
/// the start; a CPU the process may not use is refused at startup by number.
#[test]
fn dataplane_threads_hold_their_cpu_under_load_and_only_they_do() {
    require_root!();
    let allowed = thread_cpus(std::process::id() as i32, &std::process::id().to_string());
    let allowed_cpus: Vec<u32> = tapswitch::sys::sched::allowed_cpus()
        .unwrap()
        .into_iter()
        .map(|cpu| cpu as u32)
        .collect();
    let highest = *allowed_cpus.last().unwrap();

    let bed = Bed::new(2);
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 10, "0.01"), 10);
    let pid = bed.switch.pid();
    let main_thread = pid.to_string();
    let control = thread_named(pid, "tapswitch-contr");
    assert!(
        bed.switch.stats().loop_stats.cpus.is_empty(),
        "pinned while idle"
    );
    assert_eq!(thread_cpus(pid, &main_thread), allowed);
    // Bulk TCP in the background; the switch pins its thread within ~100 ms of it.
    let _server = iperf3_server(bed.ns(1), 5301);
    let ns0 = bed.ns(0).to_owned();
    let client = thread::spawn(move || iperf3_client_for(&ns0, &Bed::addr(1), 5301, 4, &[]));
    let mut seen_pinned = None;
    let loaded = wait_for(Duration::from_secs(3), || {
        let cpus = bed.switch.stats().loop_stats.cpus;
        if !cpus.is_empty() {
            seen_pinned = Some((cpus, thread_cpus(pid, &main_thread)));
        }
        seen_pinned.is_some()
    });
    if allowed_cpus.len() >= 2 {
        assert!(loaded, "not pinned under bulk TCP");
        let (cpus, mask) = seen_pinned.unwrap();
        assert_eq!(cpus, vec![highest]);
        assert_eq!(mask, highest.to_string());
        assert_eq!(thread_cpus(pid, &control), allowed, "control thread pinned");
        let (_, table, _) = bed.switch.ctl(&["stats"]);
        assert!(table.contains(&format!("; on CPU {highest}")), "{table}");
    } else {
        // One CPU allowed: pinning it would only get in the way of a later cpuset.
        assert!(!loaded, "pinned with one CPU allowed: {seen_pinned:?}");
    }
    assert!(client.join().unwrap() > 0);
    // Quiet again: let go within about a second.
    assert!(
        wait_for(Duration::from_secs(5), || bed
            .switch
            .stats()
            .loop_stats
            .cpus
            .is_empty()),
        "still pinned after the load stopped"
    );
    assert_eq!(thread_cpus(pid, &main_thread), allowed);
    let stats = bed.switch.stats().loop_stats;
    assert_eq!(stats.affinity_pins, u64::from(allowed_cpus.len() >= 2));
    drop(bed);

    let bed = Bed::with_config(2, "[switch]\ncpu_affinity = \"none\"", |_| String::new());
    let pid = bed.switch.pid();
    let _server = iperf3_server(bed.ns(1), 5302);
    assert!(iperf3_client(bed.ns(0), &Bed::addr(1), 5302, &[]) > 0);
    let stats = bed.switch.stats().loop_stats;
    assert!(
        stats.cpus.is_empty() && stats.affinity_pins == 0,
        "{stats:?}"
    );
    assert_eq!(thread_cpus(pid, &pid.to_string()), allowed);
    drop(bed);

    let first = allowed_cpus[0];
    let bed = Bed::with_config(2, &format!("[switch]\ncpu_affinity = [{first}]"), |_| {
        String::new()
    });
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 10, "0.01"), 10);
    let pid = bed.switch.pid();
    // Listed: pinned from the start, idle or not.
    assert_eq!(bed.switch.stats().loop_stats.cpus, vec![first]);
    assert_eq!(thread_cpus(pid, &pid.to_string()), first.to_string());
    drop(bed);

    let dir = TempDir::new("tscpu");
    let config = dir.path.join("switch.toml");
    std::fs::write(&config, "[switch]\ncpu_affinity = [1023]\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tapswitch"))
        .arg("--control")
        .arg(dir.path.join("tapswitch.sock"))
        // A port so that the switch gets as far as its dataplane (no TAP is made first).
        .args(["run", "--port", &unique("tc"), "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path.join("state"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "switch.cpu_affinity: CPU 1023 is not one this process may run on (allowed: {allowed})"
        )),
        "{stderr}"
    );
}
