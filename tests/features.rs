//! Switch features end to end: VLANs across a trunk, anti-spoofing, storm control,
//! MAC limits and jumbo MTUs, through real TAPs between real network namespaces.
//! Needs root (CI runs as root).

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use tapswitch::config::Config;
use tapswitch::control::{PortList, Stats};
use tapswitch::dataplane::DropCounters;
use tapswitch::fdb::PortId;

fn neighbour_mac(netns: &str, addr: &str) -> Option<String> {
    let json = sh("ip", &["-n", netns, "-j", "neigh", "show", addr]);
    let value: serde_json::Value = serde_json::from_str(&json).expect("ip -j output is JSON");
    value[0]["lladdr"].as_str().map(str::to_owned)
}

/// Two switches, each with an access port on VLAN 10 and one on VLAN 20, joined by
/// their trunk ports through a plain Linux bridge (which carries tagged frames
/// untouched). Both VLANs use the same IP addresses: any leak would answer ARP
/// from the wrong VLAN.
#[test]
fn two_vlans_cross_a_trunk_tagged_and_without_leakage() {
    require_root!();
    let hosts: Vec<Netns> = (0..4).map(|_| Netns::new()).collect();
    let middle = Netns::new();
    // Host i: switch i / 2, VLAN 10 or 20.
    let mac = |i: usize| format!("02:{}:00:00:00:0{i}", if i % 2 == 0 { "10" } else { "20" });
    let vlan = |i: usize| if i % 2 == 0 { 10 } else { 20 };
    let switch_config = |side: usize| {
        let mut config = String::new();
        for i in [2 * side, 2 * side + 1] {
            config.push_str(&format!(
                "[[port]]\nname = \"h{i}\"\nnetns = \"{}\"\nmac = \"{}\"\nvlan_mode = \"access\"\nvlan = {}\n",
                hosts[i].name,
                mac(i),
                vlan(i)
            ));
        }
        config.push_str(&format!(
            "[[port]]\nname = \"trunk{side}\"\nnetns = \"{}\"\nvlan_mode = \"trunk\"\nallowed_vlans = [10, 20]\n",
            middle.name
        ));
        config
    };
    let mut left = start_with_config(&switch_config(0));
    let _right = start_with_config(&switch_config(1));
    let mid = middle.name.as_str();
    sh("ip", &["-n", mid, "link", "add", "br0", "type", "bridge"]);
    for dev in ["trunk0", "trunk1"] {
        sh("ip", &["-n", mid, "link", "set", dev, "master", "br0"]);
    }
    sh("ip", &["-n", mid, "link", "set", "br0", "up"]);
    for (i, host) in hosts.iter().enumerate() {
        let addr = format!("10.70.0.{}/24", i / 2 + 1);
        sh(
            "ip",
            &[
                "-n",
                &host.name,
                "addr",
                "add",
                &addr,
                "dev",
                &format!("h{i}"),
            ],
        );
    }
    let capture = Capture::open(mid, "trunk0");

    // Host 0 (left, VLAN 10) reaches host 2 (right, VLAN 10); host 1 reaches host 3 on 20.
    assert_eq!(
        ping(&hosts[0].name, "10.70.0.2", 3, "0.1"),
        3,
        "VLAN 10 across the trunk"
    );
    assert_eq!(
        ping(&hosts[1].name, "10.70.0.2", 3, "0.1"),
        3,
        "VLAN 20 across the trunk"
    );
    assert_eq!(neighbour_mac(&hosts[0].name, "10.70.0.2"), Some(mac(2)));
    assert_eq!(neighbour_mac(&hosts[1].name, "10.70.0.2"), Some(mac(3)));

    // On the trunk wire every host's frames carry its VLAN's 802.1Q tag.
    let frames = capture.drain();
    let mut seen = [0usize; 4];
    for frame in &frames {
        if let Some(i) = (0..4).find(|&i| frame.src() == mac_bytes(&mac(i))) {
            assert_eq!(frame.vlan, Some(vlan(i)), "frame from host {i}: {frame:?}");
            assert_eq!(frame.vlan_tpid.unwrap_or(0x8100), 0x8100);
            seen[i] += 1;
        }
    }
    assert!(
        seen.iter().all(|&n| n >= 3),
        "frames of every host on the trunk: {seen:?}"
    );

    // Frames the left trunk does not carry: untagged (no native VLAN), VLAN 30, and an
    // 802.1ad S-tag with VID 10, which is not 802.1Q VLAN 10.
    let rx_before = link_stats(&hosts[0].name, "h0").0;
    let dropped_before = left
        .snapshot()
        .dropped("trunk0", DropReason::VlanNotAllowed);
    let bogus = |ethertype: u16, tci: Option<u16>| {
        let mut bytes = frame([0xff; 6], [0x02, 0xad, 0, 0, 0, 1], 64);
        if let Some(tci) = tci {
            bytes.splice(
                12..12,
                ethertype.to_be_bytes().into_iter().chain(tci.to_be_bytes()),
            );
        }
        bytes
    };
    send_raw(
        mid,
        "trunk0",
        &[
            bogus(0, None),
            bogus(0x8100, Some(30)),
            bogus(0x88a8, Some(10)),
        ],
    );
    assert!(
        wait_for(Duration::from_secs(5), || {
            let snapshot = left.snapshot();
            snapshot.dropped("trunk0", DropReason::VlanNotAllowed) >= dropped_before + 3
        }),
        "the left switch did not drop the frames its trunk does not carry"
    );
    thread::sleep(Duration::from_millis(100));
    assert_eq!(
        link_stats(&hosts[0].name, "h0").0,
        rx_before,
        "a foreign frame reached VLAN 10"
    );

    // A tagged VLAN 20 broadcast injected on the trunk reaches only the VLAN 20 host, untagged.
    let vlan20 = Capture::open(&hosts[1].name, "h1");
    send_raw(mid, "trunk0", &[bogus(0x8100, Some(20))]);
    assert!(wait_for(Duration::from_secs(5), || {
        vlan20
            .drain()
            .iter()
            .any(|f| f.src() == [0x02, 0xad, 0, 0, 0, 1] && f.vlan.is_none())
    }));
    assert_eq!(link_stats(&hosts[0].name, "h0").0, rx_before);
}

/// The spoofer on port 1 sends with the honest endpoint's MAC; port security drops
/// those frames, the MAC stays on port 0, and the honest endpoint keeps working.
#[test]
fn spoofed_frames_are_dropped_while_the_honest_endpoint_works() {
    require_root!();
    let mac = |i: usize| format!("02:5e:00:00:00:0{i}");
    let mut bed = Bed::with_config(3, "", |i| {
        let binding = if i < 2 { "bind_mac = true" } else { "" };
        format!("mac = \"{}\"\n{binding}", mac(i))
    });
    assert_eq!(ping(bed.ns(0), &Bed::addr(2), 2, "0.1"), 2);
    let victim = mac_bytes(&mac(0));
    let target = mac_bytes(&mac(2));
    let spoofed: Vec<Vec<u8>> = (0..40)
        .map(|n| {
            if n % 2 == 0 {
                frame(target, victim, 60)
            } else {
                frame([0xff; 6], victim, 60)
            }
        })
        .collect();
    send_raw(bed.ns(1), "p1", &spoofed);
    assert!(wait_for(Duration::from_secs(5), || {
        bed.switch
            .snapshot()
            .dropped("p1", DropReason::SpoofedSource)
            == 40
    }));
    let snapshot = bed.switch.snapshot();
    let entry = snapshot
        .fdb
        .iter()
        .find(|e| e.mac.to_string() == mac(0))
        .expect("the honest MAC is learned");
    assert_eq!(entry.port, PortId(0), "the spoofer took the MAC: {entry:?}");
    assert_eq!(
        ping(bed.ns(0), &Bed::addr(2), 5, "0.05"),
        5,
        "the honest endpoint"
    );
    assert_eq!(
        ping(bed.ns(1), &Bed::addr(2), 2, "0.05"),
        2,
        "the spoofer's own address works"
    );
}

/// A broadcast storm from port 0 is held to its cap while unicast between the same
/// endpoints keeps flowing.
#[test]
fn a_broadcast_storm_is_held_to_its_cap_while_unicast_flows() {
    require_root!();
    const CAP: u64 = 200;
    const STORM: u64 = 4000;
    let mut bed = Bed::with_config(2, "", |i| {
        if i == 0 {
            format!("storm_control = {{ broadcast_pps = {CAP} }}\ntxqueuelen = 10000")
        } else {
            String::new()
        }
    });
    assert_eq!(
        ping(bed.ns(0), &Bed::addr(1), 2, "0.1"),
        2,
        "ARP resolved before the storm"
    );
    let to_p1_before = bed.switch.snapshot().counters_of("p1").tx_frames;
    let src = mac_bytes(&link_mac(bed.ns(0), "p0"));
    let ns0 = bed.ns(0).to_owned();
    let started = Instant::now();
    let storm = thread::spawn(move || {
        let burst: Vec<Vec<u8>> = (0..STORM / 4).map(|_| frame([0xff; 6], src, 60)).collect();
        for _ in 0..4 {
            send_raw(&ns0, "p0", &burst);
            thread::sleep(Duration::from_millis(100));
        }
    });
    let replies = ping(bed.ns(0), &Bed::addr(1), 20, "0.02");
    storm.join().unwrap();
    // The TAP may drop part of the storm before the switch reads it: wait until the
    // switch has read what it will.
    let mut last_rx = 0;
    assert!(wait_for(Duration::from_secs(5), || {
        thread::sleep(Duration::from_millis(100));
        let rx = bed.switch.snapshot().counters_of("p0").rx_frames;
        std::mem::replace(&mut last_rx, rx) == rx
    }));
    let elapsed = started.elapsed().as_secs_f64();
    let snapshot = bed.switch.snapshot();
    let dropped = snapshot.dropped("p0", DropReason::StormBroadcast);
    // Everything p1 got besides the 20 echo requests (and an ARP refresh or two) is storm.
    let to_p1 = snapshot.counters_of("p1").tx_frames - to_p1_before;
    let allowed = CAP + (CAP as f64 * elapsed).ceil() as u64 + 20 + 4;
    assert!(
        to_p1 <= allowed,
        "{to_p1} frames reached p1 in {elapsed:.2}s, the cap allows {allowed}"
    );
    assert!(
        to_p1 >= CAP / 2,
        "storm control dropped nearly everything: {to_p1} passed"
    );
    assert!(dropped >= STORM / 4, "only {dropped} broadcasts dropped");
    assert_eq!(replies, 20, "unicast during the storm");
}

/// A flood of random source MACs from port 0 fills only port 0's share of the table.
#[test]
fn a_mac_flood_is_contained_to_the_port_limit() {
    require_root!();
    const LIMIT: usize = 16;
    const FLOOD: usize = 300;
    let mut bed = Bed::with_config(3, "", |i| {
        if i == 0 {
            format!("mac_limit = {LIMIT}")
        } else {
            String::new()
        }
    });
    assert_eq!(ping(bed.ns(1), &Bed::addr(2), 1, "0.1"), 1);
    let flood: Vec<Vec<u8>> = (0..FLOOD)
        .map(|n| {
            let [_, _, hi, lo] = (n as u32).to_be_bytes();
            frame([0xff; 6], [0x02, 0xf1, 0x00, 0x00, hi, lo], 60)
        })
        .collect();
    send_raw(bed.ns(0), "p0", &flood);
    assert!(wait_for(Duration::from_secs(5), || {
        bed.switch.snapshot().counters_of("p0").rx_frames >= FLOOD as u64
    }));
    let snapshot = bed.switch.snapshot();
    let on_port0 = fdb_of(&snapshot, 0).len();
    assert!(
        on_port0 <= LIMIT,
        "{on_port0} MACs learned on a port limited to {LIMIT}"
    );
    assert!(
        on_port0 >= LIMIT - 1,
        "the limit was not filled: {on_port0}"
    );
    assert!(snapshot.dropped("p0", DropReason::MacLimit) >= (FLOOD - LIMIT) as u64);
    assert_eq!(fdb_of(&snapshot, 1).len(), 1);
    assert_eq!(fdb_of(&snapshot, 2).len(), 1);
    assert_eq!(ping(bed.ns(1), &Bed::addr(2), 3, "0.05"), 3);
}

/// A MAC flood to an unknown destination, from one port of a switch with the default
/// configuration: the switch floods at most the default unknown-unicast rate of it to
/// the other ports and counts the rest (`storm_unknown_unicast`); the other ports' MACs
/// stay learned and they keep reaching each other. `unknown_unicast_pps = "unlimited"`
/// set at runtime turns the cap off again.
#[test]
fn a_mac_flood_to_an_unknown_destination_is_capped_by_default() {
    require_root!();
    const FLOOD: usize = 30_000;
    let mut bed = Bed::new(4);
    // A longer TAP queue, so that the kernel keeps most of the flood for the switch to
    // police rather than dropping it before the switch reads it.
    sh(
        "ip",
        &["-n", bed.ns(0), "link", "set", "p0", "txqueuelen", "10000"],
    );
    assert_eq!(
        ping(bed.ns(1), &Bed::addr(2), 2, "0.1"),
        2,
        "before the flood"
    );
    let flow_macs = [link_mac(bed.ns(1), "p1"), link_mac(bed.ns(2), "p2")];
    let mut next_source = 0u32;
    let mut flood = |count: usize| -> Vec<Vec<u8>> {
        (0..count)
            .map(|_| {
                next_source += 1;
                let [a, b, c, d] = next_source.to_be_bytes();
                frame([0x02, 0xfe, 0xed, 0, 0, 1], [0x02, a, b, c, d, 0x5a], 60)
            })
            .collect()
    };
    // Reads the switch made from p0, floods that reached the bystander p3, and drops.
    // From `stats` (counters only): a full snapshot of a full MAC table would stall
    // the loop it measures.
    let flood_counts = |bed: &mut Bed| {
        let snapshot = bed.switch.stats();
        (
            snapshot.counters_of("p0").rx_frames,
            snapshot.counters_of("p3").tx_frames,
            snapshot.dropped("p0", DropReason::StormUnknownUnicast),
        )
    };
    let settle = |bed: &mut Bed| {
        let mut last_rx = 0;
        assert!(wait_for(Duration::from_secs(10), || {
            thread::sleep(Duration::from_millis(100));
            let rx = bed.switch.stats().counters_of("p0").rx_frames;
            std::mem::replace(&mut last_rx, rx) == rx
        }));
    };

    let (rx_before, to_p3_before, dropped_before) = flood_counts(&mut bed);
    let started = Instant::now();
    flood_raw(bed.ns(0), "p0", &flood(FLOOD));
    settle(&mut bed);
    let elapsed = started.elapsed().as_secs_f64();
    let (rx, to_p3, dropped) = flood_counts(&mut bed);
    let (read, to_p3, dropped) = (
        rx - rx_before,
        to_p3 - to_p3_before,
        dropped - dropped_before,
    );
    let cap = u64::from(tapswitch::policy::DEFAULT_UNKNOWN_UNICAST_PPS);
    // The bucket starts full (one second's worth) and refills at the rate.
    let allowed = cap + (cap as f64 * elapsed).ceil() as u64;
    assert!(
        dropped > 0,
        "no flood frame was dropped as storm_unknown_unicast ({read} read in {elapsed:.2}s, {to_p3} reached p3)"
    );
    assert!(
        to_p3 <= allowed + 10,
        "{to_p3} flood frames reached p3 in {elapsed:.2}s, the cap allows {allowed}"
    );
    assert!(
        read - dropped <= allowed,
        "{} passed in {elapsed:.2}s, the cap allows {allowed}",
        read - dropped
    );
    assert!(
        to_p3 >= cap / 2,
        "the cap let almost nothing through: {to_p3}"
    );

    let snapshot = bed.switch.snapshot();
    for (id, mac) in [(1, &flow_macs[0]), (2, &flow_macs[1])] {
        assert!(
            fdb_of(&snapshot, id)
                .iter()
                .any(|e| e.mac.to_string() == *mac),
            "port {id}'s MAC {mac} was forgotten during the flood"
        );
    }
    assert_eq!(ping(bed.ns(1), &Bed::addr(2), 3, "0.05"), 3, "p1 to p2");
    assert_eq!(ping(bed.ns(3), &Bed::addr(1), 3, "0.05"), 3, "p3 to p1");

    // The cap can be turned off per port.
    let (ok, _, stderr) = bed.switch.ctl(&[
        "port",
        "set",
        "p0",
        "--storm-control",
        "unknown_unicast_pps = \"unlimited\"",
    ]);
    assert!(ok, "{stderr}");
    let (_, _, dropped_before) = flood_counts(&mut bed);
    flood_raw(bed.ns(0), "p0", &flood(2 * cap as usize));
    settle(&mut bed);
    let (_, _, dropped) = flood_counts(&mut bed);
    assert_eq!(dropped, dropped_before, "the cap is still on");
}

/// The loop charges a port's turn by the writes it causes: a frame flooded to three
/// ports costs three of the 64 units a turn has, so a port flooding (with its
/// storm-control cap lifted, so every frame is flooded) is served at most 22 frames
/// per turn, where a port sending unicast gets 64.
#[test]
fn a_flooding_ports_turn_is_charged_per_write() {
    require_root!();
    const FLOOD: u32 = 20_000;
    let bed = Bed::with_config(4, "", |i| {
        if i == 0 {
            "storm_control = { unknown_unicast_pps = 4000000000 }\ntxqueuelen = 10000".into()
        } else {
            String::new()
        }
    });
    let visits = |stats: &Stats| -> Vec<u64> { stats.loop_stats.batch_sizes.to_vec() };
    // Counters from `stats`: a full snapshot of a full MAC table would stall the loop.
    let snapshot = bed.switch.stats();
    let (visits_before, to_p3_before) = (visits(&snapshot), snapshot.counters_of("p3").tx_frames);
    let flood: Vec<Vec<u8>> = (0..FLOOD)
        .map(|n| {
            let [a, b, c, d] = n.to_be_bytes();
            frame([0x02, 0xfe, 0xed, 0, 0, 2], [0x02, a, b, c, d, 0x5b], 60)
        })
        .collect();
    flood_raw(bed.ns(0), "p0", &flood);
    let mut last_rx = 0;
    assert!(wait_for(Duration::from_secs(10), || {
        thread::sleep(Duration::from_millis(100));
        let rx = bed.switch.stats().counters_of("p0").rx_frames;
        std::mem::replace(&mut last_rx, rx) == rx
    }));
    let snapshot = bed.switch.stats();
    let to_p3 = snapshot.counters_of("p3").tx_frames - to_p3_before;
    let read = snapshot.counters_of("p0").rx_frames;
    assert!(
        to_p3 + 50 >= read && read > 1_000,
        "the flood was not flooded: {read} read, {to_p3} reached p3"
    );
    let visits: Vec<u64> = visits(&snapshot)
        .iter()
        .zip(&visits_before)
        .map(|(after, before)| after - before)
        .collect();
    // Buckets: at most 1, 2, 4, 8, 16, 32, 64, 128 frames, more.
    let small: u64 = visits[..6].iter().sum();
    assert!(small > 0, "no visits counted: {visits:?}");
    assert_eq!(
        visits[6..].iter().sum::<u64>(),
        0,
        "visits that read more than 32 flooded frames: {visits:?}"
    );
}

/// Jumbo frames pass between ports with a 9000-byte MTU; the same frame towards a
/// 1500-byte port is dropped and counted there.
#[test]
fn jumbo_frames_pass_and_oversize_is_dropped_at_egress() {
    require_root!();
    let mut bed = Bed::with_config(3, "", |i| {
        format!("mtu = {}", if i < 2 { 9000 } else { 1500 })
    });
    for i in 0..2 {
        sh(
            "ip",
            &["-n", bed.ns(i), "link", "set", &Bed::dev(i), "mtu", "9000"],
        );
    }
    let jumbo = |from: usize, to: usize| {
        let (_, out) = exec_in(
            bed.ns(from),
            &[
                "ping",
                "-c",
                "2",
                "-i",
                "0.1",
                "-W",
                "1",
                "-q",
                "-M",
                "do",
                "-s",
                "8000",
                &Bed::addr(to),
            ],
        );
        out.contains(" 2 received")
    };
    assert!(jumbo(0, 1), "8000-byte pings between 9000-byte ports");
    assert!(!jumbo(0, 2), "an 8000-byte ping reached a 1500-byte port");
    let snapshot = bed.switch.snapshot();
    assert!(
        snapshot.dropped("p2", DropReason::Oversize) >= 2,
        "{snapshot:?}"
    );
    assert_eq!(
        ping(bed.ns(0), &Bed::addr(2), 2, "0.1"),
        2,
        "normal frames still pass"
    );
}

/// Pings from `netns` to `addr` in rounds of 25 at 20 ms until `stop` is set, and
/// returns (sent, received).
fn ping_flow(
    netns: String,
    addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> thread::JoinHandle<(u32, u32)> {
    thread::spawn(move || {
        let (mut sent, mut received) = (0, 0);
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            received += ping(&netns, &addr, 25, "0.02");
            sent += 25;
        }
        (sent, received)
    })
}

/// What a refused `port set` must leave as it was: the live configuration, the port
/// list, p0's drop counters and p0's MAC table entries.
fn observable_state(bed: &mut Bed) -> (Config, PortList, DropCounters, Vec<String>) {
    let config = bed.switch.config();
    let list = bed.switch.port_list();
    let snapshot = bed.switch.snapshot();
    let drops = snapshot.counters_of("p0").drops.clone();
    let mut fdb: Vec<String> = fdb_of(&snapshot, 0)
        .iter()
        .map(|e| format!("{} {}", e.vlan, e.mac))
        .collect();
    fdb.sort();
    (config, list, drops, fdb)
}

/// `port set` under traffic: p0 moves from access VLAN 10 (with p1) to VLAN 20 (with
/// p2 and p3) and isolation follows it; refused settings name their field and change
/// nothing; a storm-control rate set at runtime is enforced, and cleared again. A
/// ping flow between p2 and p3 runs throughout and loses nothing.
#[test]
fn port_settings_change_at_runtime_whole_or_not_at_all() {
    require_root!();
    const CAP: u64 = 50;
    const BURST: usize = 600;
    let mut bed = Bed::with_config(4, "", |i| {
        format!(
            "vlan_mode = \"access\"\nvlan = {}",
            if i < 2 { 10 } else { 20 }
        )
    });
    assert_eq!(ping(bed.ns(2), &Bed::addr(3), 2, "0.1"), 2, "VLAN 20");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flow = ping_flow(bed.ns(2).to_owned(), Bed::addr(3), stop.clone());

    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 2, "0.1"), 2, "VLAN 10");
    assert_eq!(
        ping(bed.ns(0), &Bed::addr(2), 1, "0.1"),
        0,
        "p0 reached VLAN 20"
    );

    let (ok, out, stderr) = bed.switch.ctl(&["port", "set", "p0", "--vlan", "20"]);
    assert!(ok, "{stderr}");
    assert!(out.starts_with("p0 (id 0): mtu 1500, enabled"), "{out}");
    assert_eq!(ping(bed.ns(0), &Bed::addr(2), 3, "0.1"), 3, "p0 in VLAN 20");
    assert_eq!(ping(bed.ns(0), &Bed::addr(3), 1, "0.1"), 1, "p0 in VLAN 20");
    // p1 still has p0's address in its ARP cache: its unicast stays in VLAN 10.
    assert_eq!(
        ping(bed.ns(1), &Bed::addr(0), 2, "0.1"),
        0,
        "VLAN 10 reached p0"
    );
    let config = bed.switch.config();
    assert_eq!(config.ports[0].policy.vlan, Some(20), "{config:?}");
    assert_eq!(config.ports[1].policy.vlan, Some(10), "{config:?}");

    let before = observable_state(&mut bed);
    let refused = [
        (
            vec!["--vlan", "5000"],
            "port p0: vlan: VLAN 5000 is outside 1..=4094",
        ),
        (
            vec!["--mac-limit", "0"],
            "port p0: mac_limit: must be at least 1",
        ),
        // Valid parts do not apply either when another part is refused.
        (
            vec!["--vlan", "10", "--mac-limit", "0"],
            "port p0: mac_limit: must be at least 1",
        ),
        (
            vec![
                "--vlan",
                "10",
                "--mtu",
                "9000",
                "--storm-control",
                "broadcast_pps = 0",
            ],
            "port p0: storm_control.broadcast_pps: must be at least 1",
        ),
        (
            vec!["--vlan-mode", "trunk", "--allowed-vlans", "10,30-20"],
            "port p0: vlan: only for vlan_mode = \"access\"",
        ),
        (
            vec![
                "--vlan-mode",
                "trunk",
                "--vlan",
                "none",
                "--allowed-vlans",
                "10,30-20",
            ],
            "port p0: allowed_vlans[1]: range \"30-20\" is reversed",
        ),
        (
            vec!["--isolated", "maybe"],
            "port p0: isolated: invalid type",
        ),
    ];
    for (options, expected) in &refused {
        let mut args = vec!["port", "set", "p0"];
        args.extend(options);
        let (ok, _, stderr) = bed.switch.ctl(&args);
        assert!(!ok, "{options:?} was accepted");
        assert!(stderr.contains(expected), "{options:?}: {stderr}");
    }
    assert_eq!(
        observable_state(&mut bed),
        before,
        "a refused change changed something"
    );
    assert_eq!(
        link_stats_mtu(bed.ns(0), "p0"),
        1500,
        "the netdev MTU changed"
    );
    assert_eq!(
        ping(bed.ns(0), &Bed::addr(2), 2, "0.05"),
        2,
        "p0 after refusals"
    );

    // Storm control set at runtime (with a longer TAP queue, so that the kernel
    // keeps the whole burst for the switch to police).
    let (ok, _, stderr) = bed.switch.ctl(&[
        "port",
        "set",
        "p0",
        "--storm-control",
        &format!("broadcast_pps = {CAP}"),
        "--txqueuelen",
        "20000",
    ]);
    assert!(ok, "{stderr}");
    let qlen = sh("ip", &["-n", bed.ns(0), "-j", "link", "show", "dev", "p0"]);
    // Not the switch's default for its TAPs (10000): the setting arrived.
    assert!(qlen.contains("\"txqlen\":20000"), "{qlen}");
    let burst_and_count = |bed: &mut Bed| {
        let snapshot = bed.switch.snapshot();
        let rx_before = snapshot.counters_of("p0").rx_frames;
        let dropped_before = snapshot.dropped("p0", DropReason::StormBroadcast);
        let src = mac_bytes(&link_mac(bed.ns(0), "p0"));
        let started = Instant::now();
        send_raw(bed.ns(0), "p0", &vec![frame([0xff; 6], src, 60); BURST]);
        let mut last_rx = 0;
        assert!(wait_for(Duration::from_secs(5), || {
            thread::sleep(Duration::from_millis(100));
            let rx = bed.switch.snapshot().counters_of("p0").rx_frames;
            std::mem::replace(&mut last_rx, rx) == rx
        }));
        let snapshot = bed.switch.snapshot();
        let read = snapshot.counters_of("p0").rx_frames - rx_before;
        let dropped = snapshot.dropped("p0", DropReason::StormBroadcast) - dropped_before;
        (read, dropped, started.elapsed().as_secs_f64())
    };
    let (read, dropped, elapsed) = burst_and_count(&mut bed);
    assert!(read >= BURST as u64, "the switch read {read} of {BURST}");
    let passed = read - dropped;
    let allowed = CAP + (CAP as f64 * elapsed).ceil() as u64 + 10;
    assert!(
        passed <= allowed,
        "{passed} broadcasts passed in {elapsed:.2}s, the cap allows {allowed}"
    );
    assert!(
        passed >= CAP / 2,
        "storm control dropped nearly everything: {passed}"
    );

    // `none` removes it again.
    let (ok, _, stderr) = bed
        .switch
        .ctl(&["port", "set", "p0", "--storm-control", "none"]);
    assert!(ok, "{stderr}");
    let (read, dropped, _) = burst_and_count(&mut bed);
    assert!(read >= BURST as u64);
    assert_eq!(dropped, 0, "storm control still on");
    let config = bed.switch.config();
    assert!(config.ports[0].policy.storm_control.is_none(), "{config:?}");
    assert_eq!(config.ports[0].txqueuelen(), Some(20000), "{config:?}");

    // `port add` takes the same settings: a hot-added port in VLAN 10 reaches p1 only.
    let extra = Netns::new();
    let spec = format!("p4@{}", extra.name);
    let (ok, _, stderr) = bed.switch.ctl(&[
        "port",
        "add",
        &spec,
        "--vlan-mode",
        "access",
        "--vlan",
        "10",
    ]);
    assert!(ok, "{stderr}");
    sh(
        "ip",
        &[
            "-n",
            &extra.name,
            "addr",
            "add",
            "10.66.0.5/24",
            "dev",
            "p4",
        ],
    );
    assert_eq!(
        ping(&extra.name, &Bed::addr(1), 2, "0.1"),
        2,
        "p4 in VLAN 10"
    );
    assert_eq!(
        ping(&extra.name, &Bed::addr(2), 1, "0.1"),
        0,
        "p4 reached VLAN 20"
    );
    let (ok, _, stderr) = bed.switch.ctl(&["port", "add", "p5", "--mac-limit", "0"]);
    assert!(!ok);
    assert!(
        stderr.contains("port p5: mac_limit: must be at least 1"),
        "{stderr}"
    );
    let (ok, _, stderr) = bed.switch.ctl(&["port", "del", "p4"]);
    assert!(ok, "{stderr}");

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (sent, received) = flow.join().unwrap();
    assert!(sent >= 100, "the flow ran for only {sent} pings");
    assert_eq!(
        received, sent,
        "the VLAN 20 flow lost pings during the changes"
    );
}

/// The MTU of `dev` in `netns`.
fn link_stats_mtu(netns: &str, dev: &str) -> u64 {
    let json = sh("ip", &["-n", netns, "-j", "link", "show", "dev", dev]);
    let value: serde_json::Value = serde_json::from_str(&json).expect("ip -j output is JSON");
    value[0]["mtu"].as_u64().expect("mtu")
}
