//! A VXLAN port against a Linux kernel VTEP, with two namespaces as hosts
//! joined by a veth underlay: ARP through the tunnel both ways, the remote
//! VTEP learned, unknown-VNI and malformed packets counted and skipped.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use tapswitch::dataplane::DropCounters;
use tapswitch::forward::DropReason;
use tapswitch::port::Port;
use tapswitch::port::vxlan::{VxlanPort, VxlanSettings};
use tapswitch::sys::netns;
use tapswitch::wire::MacAddr;

fn ip(args: &str) {
    let status = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .expect("run ip");
    assert!(status.success(), "ip {args}");
}

/// Two namespaces and the veth between them; removed on drop, even on failure.
struct Hosts {
    h1: String,
    h2: String,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in [&self.h1, &self.h2] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

const OUR_MAC: MacAddr = MacAddr([0x02, 0x77, 0, 0, 0, 1]);
const KERNEL_MAC: &str = "02:77:00:00:00:02";

/// An ARP request from us (192.168.77.1) for 192.168.77.2.
fn arp_request() -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&OUR_MAC.0);
    frame.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&OUR_MAC.0);
    frame.extend_from_slice(&[192, 168, 77, 1]);
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&[192, 168, 77, 2]);
    frame.resize(60, 0);
    frame
}

/// Reads from `port` until a frame comes or `within` passes.
fn next_frame(port: &VxlanPort, within: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        match port.recv(0, &mut buf) {
            // The port hands frames out behind a vnet header, as a TAP does.
            Ok(len) => return Some(buf[port.vnet_hdr_len()..len].to_vec()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
    None
}

/// The next ARP reply within `within`, skipping what the kernel's side sends of
/// its own meanwhile (IPv6 MLD reports and router solicitations, ARP probes).
fn next_arp_reply(port: &VxlanPort, within: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + within;
    std::iter::from_fn(|| next_frame(port, deadline.saturating_duration_since(Instant::now())))
        .find(|frame| frame.len() >= 22 && frame[12..14] == [0x08, 0x06] && frame[20..22] == [0, 2])
}

#[test]
fn a_vxlan_port_talks_to_a_kernel_vtep() {
    if !nix_is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tag = format!("{}", std::process::id() % 100_000);
    let hosts = Hosts {
        h1: format!("tsvx1-{tag}"),
        h2: format!("tsvx2-{tag}"),
    };
    let (h1, h2) = (hosts.h1.clone(), hosts.h2.clone());
    ip(&format!("netns add {h1}"));
    ip(&format!("netns add {h2}"));
    ip(&format!(
        "link add vxu1-{tag} netns {h1} type veth peer name vxu2-{tag} netns {h2}"
    ));
    ip(&format!("-n {h1} addr add 10.77.0.1/24 dev vxu1-{tag}"));
    ip(&format!("-n {h2} addr add 10.77.0.2/24 dev vxu2-{tag}"));
    ip(&format!("-n {h1} link set vxu1-{tag} up"));
    ip(&format!("-n {h2} link set vxu2-{tag} up"));
    ip(&format!(
        "-n {h2} link add vx type vxlan id 100 dstport 4789 local 10.77.0.2 dev vxu2-{tag}"
    ));
    ip(&format!("-n {h2} link set vx address {KERNEL_MAC} up"));
    ip(&format!("-n {h2} addr add 192.168.77.2/24 dev vx"));
    let status = Command::new("ip")
        .args(["netns", "exec", &h2, "bridge", "fdb", "append"])
        .args(["00:00:00:00:00:00", "dev", "vx", "dst", "10.77.0.1"])
        .status()
        .unwrap();
    assert!(status.success());

    let settings = VxlanSettings {
        name: "vx0".into(),
        vni: Some(100),
        vlan_vni: Vec::new(),
        local: SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 4789),
        remotes: vec![Ipv4Addr::new(10, 77, 0, 2)],
        ageing: Duration::from_secs(300),
    };
    let port = netns::run_in(&h1, move || VxlanPort::open(settings))
        .unwrap()
        .unwrap();

    // Flooded to the kernel VTEP, answered through the tunnel.
    port.send(&with_vnet_header(&arp_request())).unwrap();
    let reply = next_arp_reply(&port, Duration::from_secs(5)).expect("an ARP reply");
    assert_eq!(&reply[0..6], &OUR_MAC.0, "{reply:02x?}");
    assert_eq!(&reply[12..14], &[0x08, 0x06]);
    assert_eq!(&reply[20..22], &[0, 2], "an ARP reply");
    let kernel_mac: MacAddr = KERNEL_MAC.parse().unwrap();
    assert_eq!(MacAddr::from_bytes(&reply[6..12]), kernel_mac);
    // Learned once the forwarding decision learns it (here: we say so, as the dataplane
    // does): the kernel's MAC lives behind its VTEP.
    assert_eq!(
        port.remote_of(kernel_mac),
        None,
        "learned before any decision"
    );
    port.source_learned(kernel_mac);
    assert_eq!(
        port.remote_of(kernel_mac),
        Some(Ipv4Addr::new(10, 77, 0, 2).into())
    );
    // And the kernel learned ours behind us.
    let fdb = Command::new("ip")
        .args(["netns", "exec", &h2, "bridge", "fdb", "show", "dev", "vx"])
        .output()
        .unwrap();
    let fdb = String::from_utf8_lossy(&fdb.stdout);
    assert!(
        fdb.lines()
            .any(|line| line.contains(&OUR_MAC.to_string()) && line.contains("dst 10.77.0.1")),
        "{fdb}"
    );

    // Another VNI, a missing I flag, reserved bits, a runt: counted, skipped.
    let inner = arp_request();
    let with_header = |header: [u8; 8]| [&header[..], &inner].concat();
    let bad: Vec<Vec<u8>> = vec![
        with_header([0x08, 0, 0, 0, 0, 0, 200, 0]),
        with_header([0x00, 0, 0, 0, 0, 0, 100, 0]),
        with_header([0x08, 0, 1, 0, 0, 0, 100, 0]),
        vec![0x08, 0, 0],
    ];
    netns::run_in(&h2, move || {
        let socket = UdpSocket::bind("10.77.0.2:0").unwrap();
        for packet in &bad {
            socket.send_to(packet, "10.77.0.1:4789").unwrap();
        }
    })
    .unwrap();
    // A good request after them: the port skips to it.
    port.send(&with_vnet_header(&arp_request())).unwrap();
    let second_reply = next_arp_reply(&port, Duration::from_secs(5));
    assert!(second_reply.is_some(), "the second ARP reply");
    let mut drops = DropCounters::default();
    port.drain_drops(&mut drops);
    assert_eq!(drops.get(DropReason::UnknownVni), 1);
    assert_eq!(drops.get(DropReason::BadVxlanHeader), 3);
    drop(port);
    drop(hosts);
}

/// `frame` behind a plain vnet header: the port takes frames as a TAP does.
fn with_vnet_header(frame: &[u8]) -> Vec<u8> {
    [&tapswitch::vnet::PLAIN_HEADER[..], frame].concat()
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
