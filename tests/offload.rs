//! Software offload end to end: port A has a vnet header and offloads (its
//! endpoint sends 64 KiB super-frames and partial checksums), port B has
//! none, so the switch must segment and complete checksums for B. Needs root.

mod common;

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use common::*;
use tapswitch::dataplane::Snapshot;

const A: usize = 0;
const B: usize = 1;

/// `UDP_SEGMENT` from `linux/udp.h`: the socket option for UDP GSO.
const UDP_SEGMENT: libc::c_int = 103;

fn bed() -> Bed {
    let bed = Bed::with_offloads(&[true, false]);
    // Learn both MACs and fill the ARP caches before measuring.
    assert_eq!(ping(bed.ns(A), &Bed::addr(B), 2, "0.1"), 2);
    bed
}

/// A TCP/UDP port number unique within this test process.
fn unique_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    5300 + NEXT.fetch_add(1, Ordering::Relaxed)
}

fn offload_setting(netns: &str, dev: &str, feature: &str) -> String {
    let (ok, out) = exec_in(netns, &["ethtool", "-k", dev]);
    assert!(ok, "ethtool -k {dev}");
    out.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{feature}: ")))
        .unwrap_or_else(|| panic!("no {feature} in ethtool -k {dev}: {out}"))
        .to_owned()
}

/// Every port's drops for the reasons software offload must make vanish.
fn assert_no_offload_drops(snapshot: &Snapshot) {
    for name in ["p0", "p1"] {
        for reason in [
            DropReason::NeedsOffload,
            DropReason::BadVnetHeader,
            DropReason::TooManySegments,
            DropReason::Oversize,
        ] {
            assert_eq!(
                snapshot.dropped(name, reason),
                0,
                "{name} dropped {}: {snapshot:?}",
                reason.name()
            );
        }
    }
}

/// rx bytes per rx frame on `port` between two snapshots.
fn mean_rx_frame(before: &Snapshot, after: &Snapshot, port: &str) -> u64 {
    let (after, before) = (after.counters_of(port), before.counters_of(port));
    let frames = after.rx_frames - before.rx_frames;
    let bytes = after.rx_bytes - before.rx_bytes;
    assert!(frames > 0, "no frames from {port}");
    bytes / frames
}

#[test]
fn tcp_both_ways_between_offload_and_plain_ports() {
    require_root!();
    let mut bed = bed();
    assert_eq!(
        offload_setting(bed.ns(A), "p0", "tcp-segmentation-offload"),
        "on"
    );
    assert_eq!(
        offload_setting(bed.ns(B), "p1", "tcp-segmentation-offload"),
        "off"
    );
    let port = unique_port();
    let _server = iperf3_server(bed.ns(B), port);

    // A sends: TSO super-frames into p0, segments out of p1.
    let before = bed.switch.snapshot();
    let received = iperf3_client(bed.ns(A), &Bed::addr(B), port, &[]);
    let after = bed.switch.snapshot();
    assert!(received > 10_000_000, "A -> B moved only {received} bytes");
    let mean = mean_rx_frame(&before, &after, "p0");
    assert!(
        mean > 4 * 1514,
        "A's frames averaged {mean} bytes: no super-frames came in"
    );
    let segments = after.counters_of("p1").tx_frames - before.counters_of("p1").tx_frames;
    let super_frames = after.counters_of("p0").rx_frames - before.counters_of("p0").rx_frames;
    assert!(
        segments > 2 * super_frames,
        "{super_frames} frames in, only {segments} segments out"
    );
    eprintln!(
        "TCP A -> B: {received} bytes; {super_frames} frames of {mean} bytes on average in, {segments} out"
    );

    // B sends plain frames; A's ACKs come with partial checksums.
    let received = iperf3_client(bed.ns(A), &Bed::addr(B), port, &["-R"]);
    let last = bed.switch.snapshot();
    assert!(received > 10_000_000, "B -> A moved only {received} bytes");
    eprintln!("TCP B -> A: {received} bytes");

    assert_no_offload_drops(&last);
    for i in [A, B] {
        assert_eq!(
            snmp_counter(bed.ns(i), "Tcp", "InCsumErrors"),
            0,
            "TCP checksum errors in namespace {i}"
        );
    }
}

#[test]
fn udp_both_ways_between_offload_and_plain_ports() {
    require_root!();
    let mut bed = bed();
    let port = unique_port();
    let _server = iperf3_server(bed.ns(B), port);
    let udp = ["-u", "-b", "300M", "-l", "1400"];
    let received = iperf3_client(bed.ns(A), &Bed::addr(B), port, &udp);
    assert!(
        received > 10_000_000,
        "A -> B moved only {received} UDP bytes"
    );
    let reverse = [&udp[..], &["-R"]].concat();
    let received = iperf3_client(bed.ns(A), &Bed::addr(B), port, &reverse);
    assert!(
        received > 10_000_000,
        "B -> A moved only {received} UDP bytes"
    );

    assert_no_offload_drops(&bed.switch.snapshot());
    for i in [A, B] {
        assert_eq!(snmp_counter(bed.ns(i), "Udp", "InCsumErrors"), 0);
    }
}

/// A UDP socket bound to `addr:port` inside `netns` (it stays there).
fn udp_socket_in(netns: &str, addr: &str, port: u16) -> UdpSocket {
    let bind = format!("{addr}:{port}");
    tapswitch::sys::netns::run_in(netns, move || UdpSocket::bind(&bind))
        .expect("entering the namespace")
        .expect("binding the UDP socket")
}

#[test]
fn udp_gso_super_frames_arrive_as_separate_datagrams() {
    require_root!();
    const DATAGRAM: usize = 1400;
    const PER_SEND: usize = 20;
    const SENDS: usize = 30;
    let mut bed = bed();
    let port = unique_port();
    let receiver = udp_socket_in(bed.ns(B), &Bed::addr(B), port);
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let sender = udp_socket_in(bed.ns(A), &Bed::addr(A), port);
    let segment = DATAGRAM as libc::c_int;
    // SAFETY: the fd is the sender's open socket; the option value is a live
    // c_int whose size is passed along.
    let ret = unsafe {
        libc::setsockopt(
            sender.as_raw_fd(),
            libc::SOL_UDP,
            UDP_SEGMENT,
            (&raw const segment).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
    sender.connect(format!("{}:{port}", Bed::addr(B))).unwrap();

    let before = bed.switch.snapshot();
    let mut buffer = [0u8; 65536];
    for send in 0..SENDS {
        // Each datagram is filled with its own number; the last is short.
        let mut message = Vec::new();
        for datagram in 0..PER_SEND {
            let len = if datagram + 1 == PER_SEND {
                999
            } else {
                DATAGRAM
            };
            message.extend(std::iter::repeat_n((send * PER_SEND + datagram) as u8, len));
        }
        assert_eq!(sender.send(&message).unwrap(), message.len());
        // Read this batch before the next: no socket buffer overflows.
        for datagram in 0..PER_SEND {
            let len = receiver
                .recv(&mut buffer)
                .unwrap_or_else(|e| panic!("datagram {datagram} of send {send}: {e}"));
            let expected = if datagram + 1 == PER_SEND {
                999
            } else {
                DATAGRAM
            };
            assert_eq!(len, expected, "datagram {datagram} of send {send}");
            let tag = (send * PER_SEND + datagram) as u8;
            assert!(
                buffer[..len].iter().all(|&b| b == tag),
                "datagram {datagram} of send {send} has foreign bytes"
            );
        }
    }
    let after = bed.switch.snapshot();
    assert_no_offload_drops(&after);
    let mean = mean_rx_frame(&before, &after, "p0");
    assert!(
        mean > 10 * 1514,
        "A's frames averaged {mean} bytes: the sends were not UDP super-frames"
    );
    let out = after.counters_of("p1").tx_frames - before.counters_of("p1").tx_frames;
    assert!(out >= (SENDS * PER_SEND) as u64, "only {out} frames to B");
    assert_eq!(snmp_counter(bed.ns(B), "Udp", "InCsumErrors"), 0);
}
