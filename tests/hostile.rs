//! Hostile traffic from one port, through real TAPs, with a raw-frame injector
//! (`common::Injector`) on the attacker's netdev, so frames reach the switch's TAP fd
//! exactly as a hostile guest's would. For each class: how many frames were tried,
//! how many the kernel refused on the send path, how many the TAP queue dropped, how
//! many the switch read and under which drop reason it counted them; the switch
//! stays up, a flow between two other ports keeps going, and no attack frame shows up
//! where it must not (another VLAN, an isolated port, with an 802.1Q tag it should not
//! have, or bigger than the port's MTU).
//!
//! What the kernel does with a lying `virtio_net_hdr` before the switch sees it
//! (measured on kernel 6.18; `AF_PACKET` with `PACKET_VNET_HDR`, and QEMU through a
//! macvtap or a tc-glued TAP, all go through `virtio_net_hdr_to_skb` and the TAP's
//! `tun_put_user` rebuilds the header the switch reads from the skb):
//! - refused on the send path, never reaching the switch: with EINVAL by the socket
//!   (gso_size 0, hdr_len past the end of the frame, csum_start + csum_offset outside
//!   the frame, unknown gso_type, the ECN bit without TCP), or dropped on transmit,
//!   ENOBUFS to the sender and `tx_dropped` (counted twice) on the netdev, by the
//!   kernel's segmentation checks (UDP segmentation of a TCP packet, TCP segmentation
//!   of UDP);
//! - rewritten: a too-short hdr_len becomes the linear length (the switch sees a valid
//!   header); unknown flags are cleared; a gso_size larger than the payload makes a
//!   plain frame (here bigger than the MTU, so the switch counts it `oversize`);
//! - passed as sent: a checksum request at a wrong place inside the frame, a gso_size
//!   of 1 (legal to the kernel, but each such frame would cost the switch one write
//!   per payload byte towards a port without offloads, so the switch counts a TCP
//!   gso_size below Linux's `TCP_MIN_MSS` of 88 `too_many_segments`), and segments
//!   bigger than the port's MTU (which the switch counts `oversize`).
//!
//! The switch's own checks of those headers (`vnet::VnetHeader::validate`) are unit
//! tested and fuzzed; here the point is what really arrives.
//!
//! Needs root (CI runs as root).

mod common;

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tapswitch::dataplane::{PortCounters, Snapshot};
use tapswitch::fdb::{FdbEntry, PortId};

/// Ports of the scene, by role.
const ATTACKER: usize = 0;
/// Isolated like the attacker, in its VLAN: must never hear it.
const ISOLATED: usize = 1;
/// In the attacker's VLAN, not isolated: hears its floods.
const UPLINK: usize = 2;
/// The flow pair, in VLAN 20.
const FLOW: (usize, usize) = (3, 4);
/// A trunk with native VLAN 10 (the attacker's) that also carries VLAN 20 tagged.
const TRUNK: usize = 5;
/// In the attacker's VLAN without offloads: super-frames reach it cut in software.
const PLAIN: usize = 6;
const PORTS: usize = 7;

fn port_mac(i: usize) -> [u8; 6] {
    [0x02, 0x00, 0x00, 0x00, 0x00, i as u8 + 1]
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// Source address `n` of the attacker's own range 02:ba:…
fn attack_src(n: u64) -> [u8; 6] {
    let [_, _, _, _, a, b, c, d] = n.to_be_bytes();
    [0x02, 0xba, a, b, c, d]
}

fn is_attack(frame: &Captured) -> bool {
    frame.bytes.len() >= 12 && frame.bytes[6..8] == [0x02, 0xba]
}

/// A unicast address nobody has.
const NOBODY: [u8; 6] = [0x02, 0xee, 0, 0, 0, 1];
const BROADCAST: [u8; 6] = [0xff; 6];
const MULTICAST: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x42];

/// `frame` with `tags` (TPID, TCI) inserted after the source address.
fn tagged(mut frame: Vec<u8>, tags: &[(u16, u16)]) -> Vec<u8> {
    let bytes: Vec<u8> = tags
        .iter()
        .flat_map(|(tpid, tci)| tpid.to_be_bytes().into_iter().chain(tci.to_be_bytes()))
        .collect();
    frame.splice(12..12, bytes);
    frame
}

/// What one attack class did.
#[derive(Debug)]
struct Outcome {
    tried: u64,
    /// Refused by the kernel on the send path, by errno. ENOBUFS: dropped on the way
    /// into the TAP (its queue was full, or the kernel's own segmentation checks
    /// failed), which the netdev also counts in `tx_dropped`.
    refused: Vec<(i32, u64)>,
    /// The attacker netdev's `tx_dropped` (for the record: the kernel counts some
    /// drops twice; the ENOBUFS refusals are exact).
    queue_dropped: u64,
    /// Frames of the attacker endpoint's own stack (ARP and the like) among those its
    /// netdev counted.
    background: u64,
    /// Read by the switch from the attacker's port.
    read: u64,
    /// The attacker port's drops by reason (only reasons that moved).
    drops: BTreeMap<String, u64>,
    /// Frames the switch passed on (each flood reaches the uplink once).
    forwarded: u64,
    /// Frames written (or dropped) towards the port without offloads: super-frames
    /// arrive there cut into segments.
    to_plain: u64,
}

impl Outcome {
    fn dropped(&self, reason: &str) -> u64 {
        self.drops.get(reason).copied().unwrap_or(0)
    }

    /// Drops under a storm or flood bound: storm control, or any bound on floods a
    /// later version adds under its own name.
    fn flood_drops(&self) -> u64 {
        self.drops
            .iter()
            .filter(|(reason, _)| reason.contains("storm") || reason.contains("flood"))
            .map(|(_, n)| n)
            .sum()
    }

    fn refused_total(&self) -> u64 {
        self.refused.iter().map(|(_, n)| n).sum()
    }

    /// Refused by the socket itself, i.e. not for lack of room in the TAP queue.
    fn socket_refused(&self) -> u64 {
        self.refused
            .iter()
            .filter(|(errno, _)| *errno != libc::ENOBUFS)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Seven namespaces on one switch (see the role constants), a flow pair in VLAN 20,
/// and captures on every port that could show a leak.
struct Scene {
    bed: Bed,
    watched: Vec<(usize, Capture)>,
}

impl Scene {
    /// `switch`: the `[switch]` table; `attacker`: extra `[[port]]` settings of the
    /// attacker's port; `hearers`: of the ports that hear its floods (uplink, trunk,
    /// plain).
    fn new(switch: &str, attacker: &str, hearers: &str) -> Self {
        let bed = Bed::with_config(PORTS, switch, |i| {
            let vlan = match i {
                ATTACKER | ISOLATED | UPLINK => "vlan_mode = \"access\"\nvlan = 10",
                PLAIN => "vlan_mode = \"access\"\nvlan = 10\noffloads = false",
                TRUNK => "vlan_mode = \"trunk\"\nnative_vlan = 10\nallowed_vlans = [20]",
                _ => "vlan_mode = \"access\"\nvlan = 20",
            };
            let isolated = matches!(i, ATTACKER | ISOLATED);
            let extra = match i {
                ATTACKER => attacker,
                UPLINK | TRUNK | PLAIN => hearers,
                _ => "",
            };
            format!(
                "mac = \"{}\"\n{vlan}\nisolated = {isolated}\ntxqueuelen = 10000\n{extra}\n",
                mac_text(port_mac(i))
            )
        });
        assert_eq!(
            ping(bed.ns(FLOW.0), &Bed::addr(FLOW.1), 2, "0.1"),
            2,
            "the flow pair before any attack"
        );
        let watched = [ISOLATED, UPLINK, FLOW.0, FLOW.1, TRUNK, PLAIN]
            .into_iter()
            .map(|i| (i, Capture::with_vnet_header(bed.ns(i), &Bed::dev(i))))
            .collect();
        Self { bed, watched }
    }

    fn ns(&self, i: usize) -> &str {
        self.bed.ns(i)
    }

    /// A snapshot once the switch has read everything the attacker's TAP holds.
    fn settled(&mut self) -> Snapshot {
        let mut last = u64::MAX;
        assert!(
            wait_for(Duration::from_secs(20), || {
                thread::sleep(Duration::from_millis(150));
                let rx = self.bed.switch.snapshot().counters_of("p0").rx_frames;
                std::mem::replace(&mut last, rx) == rx
            }),
            "the switch kept reading for 20 s"
        );
        self.bed.switch.snapshot()
    }

    /// Runs one attack class: `send` injects from the attacker's netdev while the flow
    /// pair pings. Checks that every frame is accounted for, the switch lives, the flow
    /// kept going and nothing leaked; returns the figures for the class's own checks.
    fn attack(&mut self, class: &str, send: impl FnOnce(&str) -> Sent) -> Outcome {
        for (_, capture) in &self.watched {
            capture.drain();
        }
        let before = self.settled();
        let netdev_before = netdev_tx(self.ns(ATTACKER), "p0");
        let flow_ns = self.ns(FLOW.0).to_owned();
        let flow = thread::spawn(move || ping(&flow_ns, &Bed::addr(FLOW.1), 20, "0.05"));
        let started = Instant::now();
        let sent = send(self.ns(ATTACKER));
        let sending = started.elapsed();
        let during = flow.join().expect("the flow thread");
        // Every frame the kernel accepted is in the TAP's queue once `send` returns,
        // and the TAP counts it transmitted when the switch takes it: wait for that
        // before looking for quiet. (Quiet alone, no new frame read for 150 ms, also
        // came while a loaded machine kept the switch off the CPU with frames still
        // queued, and the counts below then disagreed.)
        let attacker_ns = self.ns(ATTACKER).to_owned();
        assert!(
            wait_for(Duration::from_secs(60), || {
                netdev_tx(&attacker_ns, "p0").0 - netdev_before.0 >= sent.accepted
            }),
            "{class}: the switch did not take the {} frames the kernel accepted",
            sent.accepted
        );
        let after = self.settled();
        assert!(!self.bed.switch.exited(), "{class}: the switch died");

        let delta = |port: &str, count: fn(&PortCounters) -> u64| {
            count(after.counters_of(port)) - count(before.counters_of(port))
        };
        let reasons = |snapshot: &Snapshot, port: &str| -> BTreeMap<String, u64> {
            let drops = &snapshot.counters_of(port).drops;
            DropReason::ALL
                .iter()
                .map(|reason| (reason.name().to_owned(), drops.get(*reason)))
                .collect()
        };
        let (drops_before, drops_after) = (reasons(&before, "p0"), reasons(&after, "p0"));
        let drops: BTreeMap<String, u64> = drops_after
            .iter()
            .map(|(reason, n)| {
                (
                    reason.clone(),
                    n - drops_before.get(reason).copied().unwrap_or(0),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        let written = |i: usize| {
            let dev = Bed::dev(i);
            delta(&dev, |c| c.tx_frames) + reasons(&after, &dev).values().sum::<u64>()
                - reasons(&before, &dev).values().sum::<u64>()
        };
        let netdev_after = netdev_tx(self.ns(ATTACKER), "p0");
        let (taken, queue_dropped) = (
            netdev_after.0 - netdev_before.0,
            netdev_after.1 - netdev_before.1,
        );
        let read = delta("p0", |c| c.rx_frames);
        // The TAP counts a frame as transmitted when its reader (the switch) takes it.
        assert_eq!(
            read, taken,
            "{class}: the switch read {read} frames, the TAP handed over {taken}"
        );
        // Every frame the kernel took reached the switch (a frame without room in the
        // TAP queue is refused with ENOBUFS on a socket that bypasses the qdisc).
        let background = taken.checked_sub(sent.accepted).unwrap_or_else(|| {
            panic!(
                "{class}: {} frames accepted by the kernel never reached the switch: {sent:?}",
                sent.accepted - taken
            )
        });
        let outcome = Outcome {
            tried: sent.accepted + sent.refused_total(),
            refused: sent.refused.clone(),
            queue_dropped,
            background,
            read,
            drops,
            forwarded: written(UPLINK),
            to_plain: written(PLAIN),
        };
        eprintln!(
            "{class}: tried {}, refused by the kernel {:?}, tx_dropped on the netdev {}, \
             of its own {}, read by the switch {} (sent in {:.2}s), dropped {:?}, forwarded {} \
             ({} frames to the port without offloads)",
            outcome.tried,
            outcome.refused,
            outcome.queue_dropped,
            outcome.background,
            outcome.read,
            sending.as_secs_f64(),
            outcome.drops,
            outcome.forwarded,
            outcome.to_plain
        );

        // Every frame is somewhere: refused on the send path, or read by the switch
        // (which also read a few frames of the endpoint's own stack); every frame read
        // is dropped under a reason or forwarded (every attack frame is a flood within
        // VLAN 10, which reaches the uplink once).
        assert!(
            background <= 10,
            "{class}: {background} frames more than sent reached the attacker's netdev"
        );
        let dropped: u64 = outcome.drops.values().sum();
        assert_eq!(
            outcome.read,
            dropped + outcome.forwarded,
            "{class}: frames read but neither dropped under a reason nor forwarded: {outcome:?}"
        );

        assert!(
            during >= 10,
            "{class}: the flow pair got {during} of 20 replies during the attack"
        );
        assert_eq!(
            ping(self.ns(FLOW.0), &Bed::addr(FLOW.1), 3, "0.05"),
            3,
            "{class}: the flow pair after the attack"
        );
        self.assert_no_leak(class);
        outcome
    }

    /// No attack frame on the isolated port or in VLAN 20; where attack frames may go
    /// (the uplink, the trunk's native VLAN) never with an 802.1Q tag (which would put
    /// them in another VLAN) and never bigger than the MTU.
    fn assert_no_leak(&self, class: &str) {
        for (i, capture) in &self.watched {
            for frame in capture.drain().iter().filter(|f| is_attack(f)) {
                assert!(
                    matches!(*i, UPLINK | TRUNK | PLAIN),
                    "{class}: an attack frame reached p{i}: {frame:?}"
                );
                // The outermost tag on the wire: the one the receiving kernel moved into
                // metadata, else none (it always does so for 802.1Q and 802.1ad).
                assert!(
                    frame.vlan.is_none() || frame.vlan_tpid == Some(0x88a8),
                    "{class}: an attack frame left p{i} with an 802.1Q tag (another VLAN): {frame:?}"
                );
                // 1500 bytes of MTU + Ethernet header + one (802.1ad) tag; a super-frame's
                // segments must fit too.
                let segment = match frame.vnet {
                    Some(vnet) if vnet.gso_type != VIRTIO_NET_HDR_GSO_NONE => {
                        headers_len(&frame.bytes) + usize::from(vnet.gso_size)
                    }
                    _ => frame.bytes.len(),
                };
                assert!(
                    segment <= 1500 + 14 + 4,
                    "{class}: p{i} got an attack frame of {segment} bytes on the wire"
                );
                if *i == PLAIN {
                    assert!(
                        frame
                            .vnet
                            .is_none_or(|v| v.gso_type == VIRTIO_NET_HDR_GSO_NONE),
                        "{class}: a super-frame reached the port without offloads: {frame:?}"
                    );
                    // An IPv4 segment says how long it is, and is that long.
                    if frame.bytes[12..14] == [0x08, 0x00] {
                        let total = u16::from_be_bytes([frame.bytes[16], frame.bytes[17]]);
                        assert_eq!(
                            usize::from(total),
                            frame.bytes.len() - 14,
                            "{class}: a malformed IPv4 frame on the port without offloads"
                        );
                    }
                }
            }
        }
    }
}

/// Ethernet, IPv4 and TCP or UDP headers of an untagged super-frame.
fn headers_len(frame: &[u8]) -> usize {
    let l3 = 14;
    let l4 = l3 + usize::from(frame[l3] & 0x0f) * 4;
    match frame[l3 + 9] {
        6 => l4 + usize::from(frame[l4 + 12] >> 4) * 4,
        _ => l4 + 8,
    }
}

/// (`tx_packets`, `tx_dropped`) of `dev` in `netns`: frames its TAP's reader took,
/// and frames that did not get into the TAP's queue.
fn netdev_tx(netns: &str, dev: &str) -> (u64, u64) {
    let json = sh("ip", &["-n", netns, "-s", "-j", "link", "show", "dev", dev]);
    let value: Value = serde_json::from_str(&json).expect("ip -j output is JSON");
    let tx = &value[0]["stats64"]["tx"];
    (
        tx["packets"].as_u64().expect("tx packets"),
        tx["dropped"].as_u64().expect("tx dropped"),
    )
}

/// 1,000,000 frames with random source MACs to an unknown destination: the MAC table
/// stays at its cap, the flow pair's addresses stay learned on their ports, and every
/// frame is accounted for. The ports that would hear the flood do not take unknown
/// unicast, so that the switch's time goes to the MAC table (what flooding costs is
/// the storm test's, and the benchmarks').
#[test]
fn a_million_random_source_macs_keep_the_table_at_its_cap() {
    require_root!();
    const FRAMES: u64 = 1_000_000;
    const CAPACITY: u64 = 1024;
    let mut scene = Scene::new(
        &format!("[switch]\nfdb_capacity = {CAPACITY}"),
        "",
        "flood_unknown_unicast = false",
    );
    let started = Instant::now();
    let outcome = scene.attack("random source MACs", |ns| {
        // xorshift: a different, unpredictable-enough address per frame.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        Injector::open(ns, "p0")
            .paced()
            .send_generated(FRAMES, |buffer| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *buffer = frame(NOBODY, attack_src(state & 0xffff_ffff), 60);
            })
    });
    eprintln!(
        "1,000,000 random MACs end to end in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(outcome.tried, FRAMES);
    assert_eq!(outcome.socket_refused(), 0, "{outcome:?}");
    assert!(
        outcome.read >= 10 * CAPACITY,
        "the switch read only {} frames",
        outcome.read
    );
    // Nobody takes the flood (a flood bound may drop some before that is found).
    assert_eq!(outcome.forwarded, 0);
    assert_eq!(
        outcome.dropped("no_egress") + outcome.flood_drops(),
        outcome.read,
        "{outcome:?}"
    );

    let snapshot = scene.bed.switch.snapshot();
    let fdb = &snapshot.fdb;
    assert!(
        fdb.len() as u64 <= CAPACITY,
        "{} entries in a table of {CAPACITY}",
        fdb.len()
    );
    assert!(
        fdb.len() as u64 >= CAPACITY / 2,
        "the flood did not fill the table: {}",
        fdb.len()
    );
    for i in [FLOW.0, FLOW.1] {
        let learned = fdb_of(&snapshot, i as u32);
        assert!(
            learned
                .iter()
                .any(|e| e.mac.to_string() == mac_text(port_mac(i))),
            "p{i}'s address was evicted: {learned:?}"
        );
    }
}

/// Broadcast and multicast storms are held to the attacker port's storm control and
/// stay in VLAN 10, away from the isolated port.
#[test]
fn broadcast_and_multicast_storms_are_policed_and_stay_in_their_vlan() {
    require_root!();
    const FRAMES: u64 = 100_000;
    const CAP: u64 = 500;
    let mut scene = Scene::new(
        "",
        &format!("storm_control = {{ broadcast_pps = {CAP}, multicast_pps = {CAP} }}"),
        "",
    );
    for (class, dst, reason) in [
        ("broadcast storm", BROADCAST, "storm_broadcast"),
        ("multicast storm", MULTICAST, "storm_multicast"),
    ] {
        let started = Instant::now();
        let outcome = scene.attack(class, |ns| {
            let mut n = 0;
            Injector::open(ns, "p0")
                .paced()
                .send_generated(FRAMES, |buffer| {
                    n += 1;
                    *buffer = frame(dst, attack_src(n % 4), 60);
                })
        });
        let elapsed = started.elapsed().as_secs_f64();
        assert_eq!(outcome.tried, FRAMES);
        assert_eq!(outcome.socket_refused(), 0);
        // The bucket holds a second's worth and refills at CAP per second.
        let allowed = CAP + (CAP as f64 * elapsed).ceil() as u64;
        assert!(
            outcome.forwarded <= allowed,
            "{class}: {} passed in {elapsed:.1}s, the cap allows {allowed}",
            outcome.forwarded
        );
        assert!(
            outcome.dropped(reason) > 0,
            "{class}: nothing counted as {reason}: {outcome:?}"
        );
        assert_eq!(
            outcome.flood_drops(),
            outcome.read - outcome.forwarded,
            "{class}: drops other than storm control: {outcome:?}"
        );
    }
}

/// Frames with the sources of other hosts (of the same VLAN, of the other VLAN, of
/// the isolated port) from a port bound to its own address: all dropped as spoofed,
/// nobody's address moves.
#[test]
fn spoofed_sources_are_dropped_and_move_no_address() {
    require_root!();
    const EACH: u64 = 5_000;
    let mut scene = Scene::new("", "bind_mac = true", "");
    let victims = [ISOLATED, UPLINK, FLOW.0, TRUNK];
    // Make sure every victim's address is learned where it lives.
    assert_eq!(ping(scene.ns(UPLINK), &Bed::addr(TRUNK), 1, "0.1"), 1);
    assert_eq!(ping(scene.ns(ISOLATED), &Bed::addr(UPLINK), 1, "0.1"), 1);
    let outcome = scene.attack("spoofed sources", |ns| {
        let mut n = 0u64;
        Injector::open(ns, "p0")
            .paced()
            .send_generated(EACH * victims.len() as u64, |buffer| {
                let victim = victims[(n % victims.len() as u64) as usize];
                let dst = if n % 2 == 0 {
                    BROADCAST
                } else {
                    port_mac(UPLINK)
                };
                n += 1;
                *buffer = frame(dst, port_mac(victim), 60);
            })
    });
    assert_eq!(outcome.socket_refused(), 0);
    assert_eq!(
        outcome.dropped("spoofed_source"),
        outcome.read,
        "{outcome:?}"
    );
    assert_eq!(outcome.forwarded, 0);
    let snapshot = scene.bed.switch.snapshot();
    for victim in victims {
        let entries: Vec<&FdbEntry> = snapshot
            .fdb
            .iter()
            .filter(|e| e.mac.to_string() == mac_text(port_mac(victim)))
            .collect();
        assert!(
            entries.iter().all(|e| e.port == PortId(victim as u32)),
            "p{victim}'s address moved: {entries:?}"
        );
    }
    // Spoofed frames are invisible to the victims too (checked by `attack`), and the
    // attacker's own address still works.
    assert_eq!(ping(scene.ns(ATTACKER), &Bed::addr(UPLINK), 2, "0.05"), 2);
}

/// Malformed Ethernet: runts, giants, tags for VLANs the port does not carry, cut-off
/// tags, 802.1ad stacks, and the double-tagging VLAN hop.
#[test]
fn runts_giants_and_bad_vlan_tags_are_counted_and_go_nowhere() {
    require_root!();
    const EACH: u64 = 2_000;
    let mut scene = Scene::new("", "", "");
    let one_class = |scene: &mut Scene, class: &str, make: &dyn Fn(u64) -> Vec<u8>| {
        scene.attack(class, |ns| {
            let mut n = 0;
            Injector::open(ns, "p0").send_generated(EACH, |buffer| {
                *buffer = make(n);
                n += 1;
            })
        })
    };
    let base = |n: u64| frame(BROADCAST, attack_src(n % 16), 64);

    // The kernel pads anything shorter than 14 bytes (as root, for AF_PACKET): frames
    // of 14..=17 bytes with an 802.1Q ethertype are runts the switch sees.
    let outcome = one_class(&mut scene, "runts (cut-off 802.1Q tag)", &|n| {
        let mut runt = base(n);
        runt[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
        runt.truncate(14 + (n % 4) as usize);
        runt
    });
    assert_eq!(outcome.dropped("runt"), outcome.read, "{outcome:?}");

    // A tag on an access port, VID 4095 (reserved), and a tag of the other VLAN.
    for (class, vid) in [
        ("802.1Q VLAN 20 on an access port", 20),
        ("802.1Q VID 4095", 4095),
    ] {
        let outcome = one_class(&mut scene, class, &|n| tagged(base(n), &[(0x8100, vid)]));
        assert_eq!(
            outcome.dropped("vlan_not_allowed"),
            outcome.read,
            "{outcome:?}"
        );
    }

    // The double-tagging VLAN hop: a priority tag (VID 0, which the port classifies
    // like an untagged frame) in front of a VLAN 20 tag. Popping the priority tag on
    // the way to the uplink or the native trunk would put the frame in VLAN 20.
    let outcome = one_class(&mut scene, "priority tag over 802.1Q VLAN 20", &|n| {
        tagged(base(n), &[(0x8100, 0), (0x8100, 20)])
    });
    assert_eq!(
        outcome.dropped("vlan_not_allowed"),
        outcome.read,
        "{outcome:?}"
    );
    assert_eq!(outcome.forwarded, 0);

    // An 802.1ad stack is not an 802.1Q tag: the frame stays in the port's VLAN 10,
    // as sent (checked by `attack`: never with an 802.1Q tag outside).
    let outcome = one_class(&mut scene, "802.1ad S-tag over 802.1Q VLAN 20", &|n| {
        tagged(base(n), &[(0x88a8, 20), (0x8100, 20)])
    });
    assert_eq!(outcome.forwarded, outcome.read, "{outcome:?}");

    // Giants: the tenant raises its own MTU; the switch port's is still 1500.
    sh(
        "ip",
        &["-n", scene.ns(ATTACKER), "link", "set", "p0", "mtu", "9000"],
    );
    let outcome = one_class(&mut scene, "giants (9000-byte frames)", &|n| {
        frame(BROADCAST, attack_src(n % 16), 9000)
    });
    assert_eq!(outcome.dropped("oversize"), outcome.read, "{outcome:?}");
    assert!(outcome.read > 0);
}

/// An IPv4 frame from the attacker to nobody: TCP or UDP with `payload` bytes.
fn ipv4(transport: u8, payload: usize, n: u64) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ethernet2(attack_src(n % 16), NOBODY).ipv4(
        [10, 66, 0, 1],
        [10, 66, 0, 99],
        64,
    );
    let data = vec![0x5a; payload];
    let mut out = Vec::new();
    match transport {
        6 => builder
            .tcp(40000, 5001, n as u32, 1024)
            .write(&mut out, &data),
        _ => builder.udp(40000, 5001).write(&mut out, &data),
    }
    .expect("building a frame");
    out
}

/// Lying `virtio_net_hdr`s, as a guest's virtio-net driver could write them: the
/// kernel refuses most on the send path; what reaches the switch is forwarded when its
/// header describes it, and counted `oversize` when its frames (or its segments) are
/// bigger than the port's MTU. Nothing malformed or oversized reaches another port.
#[test]
fn lying_vnet_headers_are_refused_or_counted_and_never_reach_another_port_oversized() {
    require_root!();
    const EACH: u64 = 500;
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    let mut scene = Scene::new("", "", "");
    let header = |flags, gso_type, hdr_len, gso_size, csum_start, csum_offset| VirtioNetHdr {
        flags,
        gso_type,
        hdr_len,
        gso_size,
        csum_start,
        csum_offset,
    };
    let csum = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    let (tso, uso, none) = (
        VIRTIO_NET_HDR_GSO_TCPV4,
        VIRTIO_NET_HDR_GSO_UDP_L4,
        VIRTIO_NET_HDR_GSO_NONE,
    );
    // (class, header, transport, payload, what becomes of it)
    enum Fate {
        Refused,
        TooManySegments,
        Forwarded,
        Oversize,
    }
    #[rustfmt::skip]
    let classes = [
        ("TSO with gso_size 0", header(csum, tso, 54, 0, 34, 16), TCP, 3000, Fate::Refused),
        ("hdr_len past the end", header(0, none, 5000, 0, 0, 0), TCP, 100, Fate::Refused),
        ("TSO hdr_len past the end", header(csum, tso, 5000, 1000, 34, 16), TCP, 3000, Fate::Refused),
        ("csum_start outside the frame", header(csum, none, 0, 0, 3000, 16), TCP, 100, Fate::Refused),
        ("UDP GSO on TCP", header(csum, uso, 54, 1000, 34, 6), TCP, 3000, Fate::Refused),
        ("TCP GSO on UDP", header(csum, tso, 42, 1000, 34, 16), UDP, 3000, Fate::Refused),
        ("unknown gso_type", header(csum, 7, 54, 1000, 34, 16), TCP, 3000, Fate::Refused),
        ("ECN without TCP", header(0, 0x80, 0, 0, 0, 0), TCP, 100, Fate::Refused),
        ("TSO hdr_len short of the headers", header(csum, tso, 14, 1000, 34, 16), TCP, 3000, Fate::Forwarded),
        ("checksum at a wrong place in the frame", header(csum, none, 0, 0, 20, 16), TCP, 100, Fate::Forwarded),
        ("unknown flags", header(0x80, none, 0, 0, 0, 0), TCP, 100, Fate::Forwarded),
        ("TSO gso_size 1", header(csum, tso, 54, 1, 34, 16), TCP, 300, Fate::TooManySegments),
        ("gso_size past the payload (a plain giant)", header(csum, tso, 54, 65000, 34, 16), TCP, 3000, Fate::Oversize),
        ("TSO segments over the MTU", header(csum, tso, 54, 4000, 34, 16), TCP, 12000, Fate::Oversize),
        ("UDP GSO segments over the MTU", header(csum, uso, 42, 4000, 34, 6), UDP, 12000, Fate::Oversize),
    ];
    for (class, vnet, transport, payload, fate) in classes {
        let outcome = scene.attack(class, |ns| {
            let mut n = 0;
            Injector::with_vnet_header(ns, "p0").send_generated(EACH, |buffer| {
                buffer.clear();
                buffer.extend_from_slice(&vnet.to_bytes());
                buffer.extend_from_slice(&ipv4(transport, payload, n));
                n += 1;
            })
        });
        assert_eq!(outcome.tried, EACH);
        match fate {
            Fate::Refused => {
                assert_eq!(outcome.refused_total(), EACH, "{class}: {outcome:?}");
                assert_eq!(outcome.read, 0, "{class}");
            }
            Fate::TooManySegments => {
                assert_eq!(outcome.socket_refused(), 0, "{class}: {outcome:?}");
                assert_eq!(
                    outcome.dropped("too_many_segments"),
                    outcome.read,
                    "{class}: {outcome:?}"
                );
                assert_eq!(outcome.forwarded, 0, "{class}: {outcome:?}");
                assert!(outcome.read > 0, "{class}");
            }
            Fate::Forwarded => {
                assert_eq!(outcome.socket_refused(), 0, "{class}: {outcome:?}");
                assert_eq!(outcome.forwarded, outcome.read, "{class}: {outcome:?}");
                assert!(outcome.read > 0, "{class}");
            }
            Fate::Oversize => {
                assert_eq!(outcome.socket_refused(), 0, "{class}: {outcome:?}");
                assert_eq!(
                    outcome.dropped("oversize"),
                    outcome.read,
                    "{class}: {outcome:?}"
                );
                assert!(outcome.read > 0, "{class}");
            }
        }
    }
}
