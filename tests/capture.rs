//! `tapswitch capture`: pcapng of the frames at a port as the switch sees them, read
//! back with a pcap library (pcap-parser, not the writer's crate) and with `tcpdump -r`;
//! drops with their reasons; `-c`; a slow reader loses capture frames, counted, while
//! the switch keeps forwarding; bad requests get precise errors.

mod common;

use std::io::Read;
use std::process::Command;
use std::time::Duration;

use common::*;
use pcap_parser::pcapng::Block;
use pcap_parser::{PcapBlockOwned, PcapNGSlice};

/// `epb_flags` direction bits.
const INBOUND: u32 = 1;
const OUTBOUND: u32 = 2;
/// Option codes: `opt_comment`, `if_name`, `epb_flags`, `isb_ifdrop`.
const OPT_COMMENT: u16 = 1;
const IF_NAME: u16 = 2;
const EPB_FLAGS: u16 = 2;
const ISB_IFDROP: u16 = 5;

/// One enhanced packet block.
#[derive(Debug)]
struct Packet {
    interface: String,
    flags: u32,
    comment: Option<String>,
    data: Vec<u8>,
}

impl Packet {
    fn direction(&self) -> u32 {
        self.flags & 0b11
    }

    fn ethertype(&self) -> u16 {
        u16::from_be_bytes([self.data[12], self.data[13]])
    }

    /// The ICMP type of an IPv4 ICMP frame (0 echo reply, 8 echo request).
    fn icmp_type(&self) -> Option<u8> {
        (self.ethertype() == 0x0800 && self.data.get(23) == Some(&1))
            .then(|| self.data.get(34).copied())
            .flatten()
    }
}

/// What a pcapng stream holds.
#[derive(Debug, Default)]
struct Pcapng {
    interfaces: Vec<String>,
    packets: Vec<Packet>,
    /// The last `isb_ifdrop` of interface 0: frames the capture lost.
    lost: Option<u64>,
}

fn option_u32(value: &[u8]) -> u32 {
    u32::from_be_bytes(value[..4].try_into().unwrap())
}

fn option_str(value: &[u8], len: u16) -> String {
    String::from_utf8(value[..len as usize].to_vec()).expect("UTF-8 option")
}

/// Parses a whole pcapng file (the switch writes big-endian sections).
fn parse(bytes: &[u8]) -> Pcapng {
    let mut out = Pcapng::default();
    for block in PcapNGSlice::from_slice(bytes).expect("a pcapng section header") {
        let PcapBlockOwned::NG(block) = block.expect("a whole, valid pcapng block") else {
            panic!("a legacy pcap block in pcapng");
        };
        match block {
            Block::SectionHeader(shb) => assert!(shb.big_endian()),
            Block::InterfaceDescription(idb) => {
                let name = idb.options.iter().find(|o| o.code.0 == IF_NAME);
                let name = name.expect("every interface has if_name");
                out.interfaces.push(option_str(name.value(), name.len));
                assert_eq!(idb.if_tsresol, 9, "nanosecond timestamps");
            }
            Block::EnhancedPacket(epb) => {
                let flags = epb.options.iter().find(|o| o.code.0 == EPB_FLAGS);
                let comment = epb.options.iter().find(|o| o.code.0 == OPT_COMMENT);
                out.packets.push(Packet {
                    interface: out.interfaces[epb.if_id as usize].clone(),
                    flags: option_u32(flags.expect("every frame has epb_flags").value()),
                    comment: comment.map(|c| option_str(c.value(), c.len)),
                    data: epb.data[..epb.caplen as usize].to_vec(),
                });
            }
            Block::InterfaceStatistics(isb) if isb.if_id == 0 => {
                if let Some(drop) = isb.options.iter().find(|o| o.code.0 == ISB_IFDROP) {
                    let value = drop.value();
                    out.lost = Some(u64::from_be_bytes(value[..8].try_into().unwrap()));
                }
            }
            _ => {}
        }
    }
    out
}

/// `tcpdump -n -r FILE` (plus `extra`): its lines; panics when tcpdump cannot read it.
fn tcpdump(path: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let output = Command::new("tcpdump")
        .args(["-n", "-r"])
        .arg(path)
        .args(extra)
        .output()
        .expect("running tcpdump (scripts/install-deps.sh installs it)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tcpdump -r failed: {stderr}");
    // One line per frame; tcpdump adds hex lines (tab-indented) for unknown EtherTypes.
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.starts_with('\t'))
        .map(str::to_owned)
        .collect()
}

/// Starts `tapswitch capture ARGS` and waits until the switch has started it.
fn start_capture(bed: &Bed, args: &[&str]) -> CtlProcess {
    let mut all = vec!["capture"];
    all.extend_from_slice(args);
    let capture = CtlProcess::start(&bed.switch, &all);
    let line = capture.stderr_line(Duration::from_secs(10));
    assert!(
        line.as_deref()
            .is_some_and(|l| l.starts_with("capturing at")),
        "capture did not start: {line:?}"
    );
    capture
}

/// Stops a capture with SIGINT, as Ctrl-C does; returns its summary line.
fn stop_capture(mut capture: CtlProcess) -> String {
    capture.signal(libc::SIGINT);
    let (ok, stderr) = capture
        .wait_for_exit(Duration::from_secs(10))
        .expect("capture stops after SIGINT");
    assert!(ok, "capture failed: {stderr}");
    stderr
}

#[test]
fn a_ping_is_captured_in_both_directions_and_count_stops_the_capture() {
    require_root!();
    let bed = Bed::new(2);
    // Addresses resolved first: the capture sees the pings only.
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 1, "0.2"), 1);
    let dir = TempDir::new("tscap");
    let file = dir.path.join("ping.pcapng");
    let file_arg = file.to_str().unwrap();
    let mut capture = start_capture(&bed, &["p0", "-w", file_arg, "-c", "6"]);
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 4, "0.2"), 4);
    // Eight frames crossed p0: the capture stops by itself after six.
    let (ok, stderr) = capture
        .wait_for_exit(Duration::from_secs(10))
        .expect("capture -c 6 stops by itself");
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("6 frames captured; 0 lost"),
        "summary: {stderr}"
    );

    let pcap = parse(&std::fs::read(&file).unwrap());
    assert_eq!(pcap.interfaces, ["p0"]);
    assert_eq!(pcap.packets.len(), 6, "{:#?}", pcap.packets);
    assert_eq!(pcap.lost, Some(0));
    let p0_mac = mac_bytes(&link_mac(bed.ns(0), "p0"));
    for packet in &pcap.packets {
        assert_eq!(packet.comment, None, "nothing was dropped");
        match packet.icmp_type() {
            // From the endpoint on p0 into the switch: inbound, from p0's MAC.
            Some(8) => {
                assert_eq!(packet.direction(), INBOUND, "{packet:?}");
                assert_eq!(packet.data[6..12], p0_mac);
            }
            // Towards p0's endpoint: outbound, to p0's MAC.
            Some(0) => {
                assert_eq!(packet.direction(), OUTBOUND, "{packet:?}");
                assert_eq!(packet.data[..6], p0_mac);
            }
            other => panic!("only pings crossed p0, got ICMP type {other:?}: {packet:?}"),
        }
        // Unicast both ways (reception type 1).
        assert_eq!((packet.flags >> 2) & 0b111, 1, "{packet:?}");
    }
    let requests = pcap.packets.iter().filter(|p| p.icmp_type() == Some(8));
    assert_eq!(requests.count(), 3);

    let lines = tcpdump(&file, &[]);
    assert_eq!(lines.len(), 6, "{lines:#?}");
    let request = format!("{} > {}: ICMP echo request", Bed::addr(0), Bed::addr(1));
    let reply = format!("{} > {}: ICMP echo reply", Bed::addr(1), Bed::addr(0));
    assert_eq!(lines.iter().filter(|l| l.contains(&request)).count(), 3);
    assert_eq!(lines.iter().filter(|l| l.contains(&reply)).count(), 3);
}

/// A tagged frame of VID `vid` (or untagged) from `src` to `dst`, EtherType 0x88b5
/// (local experimental: no endpoint stack answers it).
fn raw_frame(dst: [u8; 6], src: [u8; 6], vid: Option<u16>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(60);
    bytes.extend_from_slice(&dst);
    bytes.extend_from_slice(&src);
    if let Some(vid) = vid {
        bytes.extend_from_slice(&[0x81, 0x00]);
        bytes.extend_from_slice(&vid.to_be_bytes());
    }
    bytes.extend_from_slice(&[0x88, 0xb5]);
    bytes.resize(60, 0x5a);
    bytes
}

#[test]
fn drops_show_a_vlan_violation_and_a_storm_limited_frame_with_their_reasons() {
    require_root!();
    // p0: access VLAN 10, at most one broadcast a second.
    let bed = Bed::with_config(2, "", |i| match i {
        0 => "vlan_mode = \"access\"\nvlan = 10\nstorm_control = { broadcast_pps = 1 }".into(),
        _ => "vlan_mode = \"access\"\nvlan = 10".into(),
    });
    let dir = TempDir::new("tscap");
    let file = dir.path.join("drops.pcapng");
    let file_arg = file.to_str().unwrap();
    let capture = start_capture(&bed, &["p0", "--drops", "-w", file_arg]);
    let sender = mac_bytes("02:7c:00:00:00:01");
    let tagged = raw_frame(mac_bytes("02:7c:00:00:00:02"), sender, Some(20));
    let broadcast = raw_frame([0xff; 6], sender, None);
    // One VLAN violation, then more broadcasts than one a second.
    send_raw(bed.ns(0), "p0", std::slice::from_ref(&tagged));
    send_raw(bed.ns(0), "p0", &vec![broadcast.clone(); 5]);
    assert!(
        wait_for(Duration::from_secs(10), || {
            let stats = bed.switch.stats();
            stats.dropped("p0", DropReason::VlanNotAllowed) == 1
                && stats.dropped("p0", DropReason::StormBroadcast) >= 1
        }),
        "the switch did not drop the frames: {:?}",
        bed.switch.port_stats("p0").counters.drops
    );
    let storm_drops = bed.switch.stats().dropped("p0", DropReason::StormBroadcast);
    let summary = stop_capture(capture);

    let pcap = parse(&std::fs::read(&file).unwrap());
    let ours: Vec<&Packet> = pcap
        .packets
        .iter()
        .filter(|p| p.data[6..12] == sender)
        .collect();
    let dropped = |reason: &str| {
        let comment = format!("dropped: {reason}");
        ours.iter()
            .filter(|p| p.comment.as_deref() == Some(comment.as_str()))
            .collect::<Vec<_>>()
    };
    let vlan = dropped("vlan_not_allowed");
    assert_eq!(vlan.len(), 1, "{ours:#?}");
    assert_eq!(vlan[0].data, tagged, "the frame as it arrived, tag and all");
    assert_eq!(vlan[0].direction(), INBOUND);
    let storm = dropped("storm_broadcast");
    assert_eq!(storm.len() as u64, storm_drops, "{ours:#?}");
    assert!(
        storm
            .iter()
            .all(|p| p.data == broadcast && p.direction() == INBOUND)
    );
    assert!(
        storm.iter().all(|p| (p.flags >> 2) & 0b111 == 3),
        "broadcast reception"
    );
    // The broadcasts storm control let through are there too, without a reason.
    let passed = ours.iter().filter(|p| p.comment.is_none()).count() as u64;
    assert_eq!(passed + storm_drops, 5, "{ours:#?}");
    assert!(
        summary.contains(&format!("{} frames captured; 0 lost", pcap.packets.len())),
        "{summary}"
    );

    // tcpdump reads the same file: the six frames from the sender, the tagged one as such.
    let lines = tcpdump(&file, &["-e", "ether", "src", "02:7c:00:00:00:01"]);
    assert_eq!(lines.len(), 6, "{lines:#?}");
    assert_eq!(
        lines.iter().filter(|l| l.contains("vlan 20")).count(),
        1,
        "{lines:#?}"
    );
}

#[test]
fn a_slow_reader_loses_capture_frames_counted_while_the_switch_forwards() {
    require_root!();
    let bed = Bed::new(2);
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 1, "0.2"), 1);
    // Nobody reads its stdout yet: the pipe, the socket and the switch's queue fill up.
    let mut capture = start_capture(&bed, &["--all"]);
    let before = bed.switch.port_stats("p1").counters.tx_frames;
    // Far more frames than the pipe, the socket buffers and the capture queue hold.
    let flood = ping_with(bed.ns(0), &Bed::addr(1), 3000, "0", &["-f"]);
    assert!(flood > 2900, "the flood got through: {flood}/3000");
    // With the capture stuck, the switch still forwards.
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 3, "0.2"), 3);
    let forwarded = bed.switch.port_stats("p1").counters.tx_frames - before;
    assert!(forwarded >= 3003, "{forwarded}");

    // Ctrl-C, then read: the switch ends the stream with its final statistics.
    capture.signal(libc::SIGINT);
    let mut stream = Vec::new();
    let mut stdout = capture.child.stdout.take().expect("piped stdout");
    stdout
        .read_to_end(&mut stream)
        .expect("reading the capture");
    let (ok, stderr) = capture
        .wait_for_exit(Duration::from_secs(10))
        .expect("capture stops after SIGINT");
    assert!(ok, "{stderr}");

    let pcap = parse(&stream);
    let mut interfaces = pcap.interfaces.clone();
    interfaces.sort();
    assert_eq!(interfaces, ["p0", "p1"]);
    let lost = pcap.lost.expect("statistics at the end");
    // 4 frames a ping at the two ports: 12,012 frames were offered.
    assert!(
        lost > 0,
        "nothing lost: {} frames captured",
        pcap.packets.len()
    );
    assert!(
        pcap.packets.len() as u64 + lost >= 4 * 3003,
        "{} + {lost}",
        pcap.packets.len()
    );
    assert!(
        stderr.contains(&format!(
            "{} frames captured; {lost} lost",
            pcap.packets.len()
        )),
        "summary: {stderr}"
    );
    // Both directions at both ports.
    for port in ["p0", "p1"] {
        for direction in [INBOUND, OUTBOUND] {
            assert!(
                pcap.packets
                    .iter()
                    .any(|p| p.interface == port && p.direction() == direction),
                "{port} {direction}"
            );
        }
    }
}

#[test]
fn bad_capture_requests_get_precise_errors() {
    require_root!();
    let bed = Bed::new(1);
    let dir = TempDir::new("tscap");
    let file = dir.path.join("none.pcapng");
    let file_arg = file.to_str().unwrap();
    let (ok, _, stderr) = bed.switch.ctl(&["capture", "nosuch", "-w", file_arg]);
    assert!(!ok);
    assert!(stderr.contains("no port named \"nosuch\""), "{stderr}");
    assert!(!file.exists(), "no file for a capture that never started");
    // clap refuses what the switch would: no count of 0, no snap length of 0.
    for args in [["-c", "0"], ["-s", "0"]] {
        let (ok, _, stderr) = bed
            .switch
            .ctl(&["capture", "p0", args[0], args[1], "-w", file_arg]);
        assert!(
            !ok && stderr.contains("invalid value '0'"),
            "{args:?}: {stderr}"
        );
    }
    // The switch checks them too (a client of the protocol is not always this CLI).
    let mut client = tapswitch::control::ControlClient::connect(&bed.switch.control).unwrap();
    let request = tapswitch::control::Request::Capture {
        port: Some("p0".into()),
        drops: false,
        count: None,
        snaplen: Some(0),
    };
    let error = client
        .request_as::<tapswitch::control::protocol::CaptureReply>(&request)
        .unwrap_err()
        .to_string();
    assert!(error.contains("snaplen 0 is out of range"), "{error}");
    // Same connection, next request: it is still served.
    let request = tapswitch::control::Request::Capture {
        port: Some("nosuch".into()),
        drops: false,
        count: Some(1),
        snaplen: None,
    };
    let error = client
        .request_as::<tapswitch::control::protocol::CaptureReply>(&request)
        .unwrap_err()
        .to_string();
    assert!(error.contains("no port named \"nosuch\""), "{error}");
    // The switch forwards on: a capture at p0 still starts.
    let capture = start_capture(&bed, &["p0", "-w", file_arg]);
    let summary = stop_capture(capture);
    assert!(summary.contains("0 frames captured; 0 lost"), "{summary}");
    assert_eq!(parse(&std::fs::read(&file).unwrap()).interfaces, ["p0"]);
}

/// `capture` ends as the other commands do: 3 with the switch's code when it refuses, 4
/// with no switch to ask, 1 for a local failure; under `--json` the error document goes
/// to stderr (stdout may be the capture) and stdout stays empty.
#[test]
fn capture_failures_have_the_exit_status_of_their_kind() {
    let dir = TempDir::new("tscap");
    let file = dir.path.join("none.pcapng");
    let file_arg = file.to_str().unwrap();
    let nowhere = dir.path.join("nobody.sock");
    let capture = |args: &[&str], control: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_tapswitch"))
            .arg("capture")
            .args(args)
            .arg("--control")
            .arg(control)
            .output()
            .expect("running tapswitch capture")
    };
    // The JSON document on stderr (after the line for people).
    let json_error = |output: &std::process::Output| -> serde_json::Value {
        assert!(output.stdout.is_empty(), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let line = stderr
            .lines()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON error on stderr: {stderr}"));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    let output = capture(&["p0", "-w", file_arg, "--json"], &nowhere);
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    assert_eq!(json_error(&output)["code"], "unreachable");

    require_root!();
    let bed = Bed::new(1);
    let output = capture(&["nosuch", "-w", file_arg, "--json"], &bed.switch.control);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let error = json_error(&output);
    assert_eq!(error["code"], "not_found", "{error}");
    assert_eq!(error["exit_status"], 3, "{error}");
    let output = capture(&["nosuch", "-w", file_arg], &bed.switch.control);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(!file.exists(), "no file for a capture that never started");
    // A file that cannot be made: the capture's own failure.
    let output = capture(
        &["p0", "-w", "/nonexistent/dir/x.pcapng"],
        &bed.switch.control,
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot create /nonexistent/dir/x.pcapng"),
        "{output:?}"
    );
    // And the switch still captures.
    let started = start_capture(&bed, &["p0", "-w", file_arg]);
    let summary = stop_capture(started);
    assert!(summary.contains("0 frames captured; 0 lost"), "{summary}");
}
