//! VXLAN ports configured in a file: a TAP port's endpoint (namespace E1) switched over a
//! `kind = "vxlan"` port whose sockets live in namespace H1 to a Linux vxlan device in H2,
//! bridged there with a veth to the endpoint E2. H1 and H2 share a veth underlay.

mod common;

use std::time::Duration;

use common::*;
use tapswitch::config::{PortConfig, PortKind};
use tapswitch::control::{ControlClient, ControlError, ErrorKind, PortReply, Request};

const VNI: &str = "4242";
const H1_UNDERLAY: &str = "10.78.0.1";
const H2_UNDERLAY: &str = "10.78.0.2";
const E1_ADDR: &str = "192.168.78.1";
const E2_ADDR: &str = "192.168.78.2";

struct VxlanBed {
    switch: Switch,
    e1: Netns,
    e2: Netns,
    e2_dev: String,
    h1: Netns,
    _h2: Netns,
    _dir: TempDir,
}

impl VxlanBed {
    /// With `vx0` in the config file.
    fn new() -> Self {
        Self::with(true)
    }

    /// With only the TAP port `tp0` when `configured_vxlan` is false (vx0 added at runtime).
    fn with(configured_vxlan: bool) -> Self {
        let (h1, h2, e1, e2) = (Netns::new(), Netns::new(), Netns::new(), Netns::new());
        let (under1, under2) = (unique("vxu"), unique("vxu"));
        sh(
            "ip",
            &[
                "link", "add", &under1, "netns", &h1.name, "type", "veth", "peer", "name", &under2,
                "netns", &h2.name,
            ],
        );
        let h1_cidr = format!("{H1_UNDERLAY}/24");
        let h2_cidr = format!("{H2_UNDERLAY}/24");
        sh(
            "ip",
            &["-n", &h1.name, "addr", "add", &h1_cidr, "dev", &under1],
        );
        sh(
            "ip",
            &["-n", &h2.name, "addr", "add", &h2_cidr, "dev", &under2],
        );
        sh("ip", &["-n", &h1.name, "link", "set", &under1, "up"]);
        sh("ip", &["-n", &h2.name, "link", "set", &under2, "up"]);
        // H2: the kernel VTEP (MTU 1450 on its 1500 underlay), flooding to H1, bridged with
        // a veth to E2.
        sh(
            "ip",
            &[
                "-n",
                &h2.name,
                "link",
                "add",
                "vx",
                "type",
                "vxlan",
                "id",
                VNI,
                "dstport",
                "4789",
                "local",
                H2_UNDERLAY,
                "dev",
                &under2,
            ],
        );
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &h2.name,
                "bridge",
                "fdb",
                "append",
                "00:00:00:00:00:00",
                "dev",
                "vx",
                "dst",
                H1_UNDERLAY,
            ],
        );
        let (bridge_end, e2_dev) = (unique("vxb"), unique("vxe"));
        sh(
            "ip",
            &[
                "link",
                "add",
                &bridge_end,
                "netns",
                &h2.name,
                "mtu",
                "1450",
                "type",
                "veth",
                "peer",
                "name",
                &e2_dev,
                "netns",
                &e2.name,
                "mtu",
                "1450",
            ],
        );
        sh(
            "ip",
            &[
                "-n", &h2.name, "link", "add", "name", "vxbr", "type", "bridge",
            ],
        );
        for dev in ["vx", bridge_end.as_str()] {
            sh(
                "ip",
                &["-n", &h2.name, "link", "set", dev, "master", "vxbr", "up"],
            );
        }
        sh("ip", &["-n", &h2.name, "link", "set", "vxbr", "up"]);
        let e2_cidr = format!("{E2_ADDR}/24");
        sh(
            "ip",
            &["-n", &e2.name, "addr", "add", &e2_cidr, "dev", &e2_dev],
        );
        sh("ip", &["-n", &e2.name, "link", "set", &e2_dev, "up"]);
        // A veth hands its peer a TCP checksum still to be filled in (CHECKSUM_PARTIAL), and
        // nothing fills it on the way through H2's vxlan and the veth underlay, as a NIC
        // would: the segment would reach our UDP socket, and E1, with a wrong checksum.
        // E2 computes its own checksums instead.
        sh(
            "ip",
            &[
                "netns", "exec", &e2.name, "ethtool", "-K", &e2_dev, "tx", "off",
            ],
        );

        let dir = TempDir::new("tsvx");
        let config = dir.path.join("switch.toml");
        let vxlan = if configured_vxlan {
            format!(
                "[[port]]\nname = \"vx0\"\nkind = \"vxlan\"\nvni = {VNI}\n\
                 local = \"{H1_UNDERLAY}\"\nremotes = [\"{H2_UNDERLAY}\"]\nnetns = \"{}\"\n",
                h1.name
            )
        } else {
            String::new()
        };
        std::fs::write(
            &config,
            format!(
                "[[port]]\nname = \"tp0\"\nnetns = \"{}\"\nmtu = 1450\n\n{vxlan}",
                e1.name
            ),
        )
        .unwrap();
        let switch = Switch::start(&["--config", config.to_str().unwrap()]);
        let e1_cidr = format!("{E1_ADDR}/24");
        sh(
            "ip",
            &["-n", &e1.name, "addr", "add", &e1_cidr, "dev", "tp0"],
        );
        sh("ip", &["-n", &e1.name, "link", "set", "tp0", "up"]);
        Self {
            switch,
            e1,
            e2,
            e2_dev,
            h1,
            _h2: h2,
            _dir: dir,
        }
    }
}

#[test]
fn a_configured_vxlan_port_switches_a_tap_endpoint_with_a_kernel_vtep() {
    require_root!();
    let mut bed = VxlanBed::new();
    let ports = names(&bed.switch.port_list());
    assert!(ports.contains(&"vx0".to_owned()), "{ports:?}");
    assert_eq!(bed.switch.snapshot().port_named("vx0").mtu, 1450);

    assert!(
        wait_for(Duration::from_secs(5), || ping(
            &bed.e1.name,
            E2_ADDR,
            1,
            "0.2"
        ) == 1),
        "E1 reaches E2 over the vxlan port"
    );
    assert_eq!(ping(&bed.e1.name, E2_ADDR, 3, "0.2"), 3);
    assert_eq!(ping(&bed.e2.name, E1_ADDR, 3, "0.2"), 3);

    // E2's MAC is learned on vx0, behind H2's VTEP.
    let e2_mac = link_mac(&bed.e2.name, &bed.e2_dev);
    let fdb = bed.switch.fdb();
    let entry = fdb
        .entries
        .iter()
        .find(|entry| entry.mac.to_string() == e2_mac)
        .unwrap_or_else(|| panic!("{e2_mac} not learned: {fdb:?}"));
    assert_eq!(entry.port, "vx0", "{fdb:?}");
    assert_eq!(
        entry.remote.map(|ip| ip.to_string()).as_deref(),
        Some(H2_UNDERLAY),
        "{fdb:?}"
    );
    let (ok, table, _) = bed.switch.ctl(&["fdb", "show"]);
    assert!(ok);
    let line = table
        .lines()
        .find(|line| line.contains(&e2_mac))
        .unwrap_or_default();
    assert!(line.ends_with(H2_UNDERLAY), "{table}");

    // TCP E1 -> E2: the TAP hands the switch TSO super-frames, which the dataplane
    // segments to vx0's MTU before they are encapsulated.
    let _server = iperf3_server(&bed.e2.name, 5201);
    let before = bed.switch.snapshot();
    let sent = iperf3_client(&bed.e1.name, E2_ADDR, 5201, &[]);
    let after = bed.switch.snapshot();
    assert!(sent > 1_000_000, "E1 -> E2 moved only {sent} bytes");
    let frames = after.counters_of("vx0").tx_frames - before.counters_of("vx0").tx_frames;
    eprintln!("TCP E1 -> E2: {sent} bytes in {frames} frames sent on vx0");
    assert!(
        frames * 1450 >= sent,
        "{frames} frames on vx0 cannot carry {sent} bytes at MTU 1450"
    );
}

#[test]
fn a_vxlan_port_without_its_remotes_is_refused_by_key() {
    let dir = TempDir::new("tsvx");
    let config = dir.path.join("switch.toml");
    std::fs::write(
        &config,
        "[[port]]\nname = \"vx0\"\nkind = \"vxlan\"\nvni = 1\nlocal = \"10.78.0.1\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tapswitch"))
        .args(["check-config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("port[0].remotes") && stderr.contains("remote VTEPs"),
        "{stderr}"
    );
}

/// Whether a UDP socket in `netns` is bound to `address` (`ip:port`), per `ss`.
fn udp_bound(netns: &str, address: &str) -> bool {
    let (ok, sockets) = exec_in(netns, &["ss", "-H", "-u", "-l", "-n"]);
    assert!(ok, "ss in {netns}");
    sockets
        .lines()
        .any(|line| line.split_whitespace().any(|field| field == address))
}

/// `tapswitch port add vx0 --vxlan ...` for the bed's H1 towards H2, with `extra` options.
fn add_vx0(bed: &VxlanBed, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec![
        "port",
        "add",
        "vx0",
        "--vxlan",
        VNI,
        "--local",
        H1_UNDERLAY,
        "--remote",
        H2_UNDERLAY,
        "--netns",
        &bed.h1.name,
    ];
    args.extend_from_slice(extra);
    bed.switch.ctl(&args)
}

#[test]
fn a_vxlan_port_added_at_runtime_forwards_and_its_removal_closes_its_sockets() {
    require_root!();
    let mut bed = VxlanBed::with(false);
    let bound = format!("{H1_UNDERLAY}:4789");
    assert!(!udp_bound(&bed.h1.name, &bound));
    let (ok, _, stderr) = add_vx0(&bed, &[]);
    assert!(ok, "port add --vxlan: {stderr}");
    let config = bed.switch.config();
    let port = config.ports.iter().find(|p| p.name == "vx0").unwrap();
    assert_eq!(port.kind, PortKind::Vxlan);
    assert_eq!(port.vni, Some(VNI.parse().unwrap()));
    assert_eq!(port.remotes, Some(vec![H2_UNDERLAY.parse().unwrap()]));
    // The inner MTU of a 1500-byte underlay, as in a config file.
    assert_eq!(bed.switch.snapshot().port_named("vx0").mtu, 1450);
    assert!(udp_bound(&bed.h1.name, &bound), "vx0 listens on {bound}");
    assert!(
        wait_for(Duration::from_secs(5), || ping(
            &bed.e1.name,
            E2_ADDR,
            1,
            "0.2"
        ) == 1),
        "E1 reaches E2 over the runtime vxlan port"
    );
    assert_eq!(ping(&bed.e2.name, E1_ADDR, 3, "0.2"), 3);

    let (ok, _, stderr) = bed.switch.ctl(&["port", "del", "vx0"]);
    assert!(ok, "port del vx0: {stderr}");
    assert!(
        !udp_bound(&bed.h1.name, &bound),
        "vx0's socket is closed when the reply comes"
    );
    assert_eq!(ping(&bed.e1.name, E2_ADDR, 1, "0.2"), 0, "vx0 is gone");
    // Its port is free again: the same port comes back, with another UDP port this time.
    let (ok, _, stderr) = add_vx0(&bed, &["--dstport", "4790", "--mtu", "1400"]);
    assert!(ok, "port add --vxlan again: {stderr}");
    assert!(udp_bound(&bed.h1.name, &format!("{H1_UNDERLAY}:4790")));
    assert_eq!(bed.switch.snapshot().port_named("vx0").mtu, 1400);
}

#[test]
fn a_runtime_vxlan_port_is_refused_precisely_and_changes_nothing() {
    require_root!();
    let bed = VxlanBed::with(false);
    let ports = bed.switch.port_list();
    let refused = |args: &[&str], expected: &[&str]| {
        let (ok, _, stderr) = bed.switch.ctl(args);
        assert!(!ok, "{args:?} was accepted");
        for text in expected {
            assert!(stderr.contains(text), "{args:?}: {text:?} not in {stderr}");
        }
        assert_eq!(bed.switch.port_list(), ports, "{args:?} changed the ports");
    };
    let h1 = bed.h1.name.as_str();
    refused(
        &[
            "port",
            "add",
            "vx1",
            "--vxlan",
            "5",
            "--remote",
            H2_UNDERLAY,
        ],
        &["--vxlan 5 needs --local IP"],
    );
    refused(
        &["port", "add", "vx1", "--vxlan", "5", "--local", H1_UNDERLAY],
        &["--vxlan 5 needs --remote"],
    );
    for vni in ["0", "16777216", "ten"] {
        refused(
            &[
                "port",
                "add",
                "vx1",
                "--vxlan",
                vni,
                "--local",
                H1_UNDERLAY,
                "--remote",
                H2_UNDERLAY,
            ],
            &["--vxlan", "1..=16777215"],
        );
    }
    refused(
        &["port", "add", "vx1", "--local", H1_UNDERLAY],
        &["--vxlan"],
    );
    refused(
        &[
            "port",
            "add",
            "vx1",
            "--vxlan",
            "5",
            "--local",
            H1_UNDERLAY,
            "--remote",
            H2_UNDERLAY,
            "--dstport",
            "0",
        ],
        &["--dstport"],
    );
    // Keys a vxlan port cannot have, refused by the switch by name.
    refused(
        &[
            "port",
            "add",
            "vx1",
            "--vxlan",
            "5",
            "--local",
            H1_UNDERLAY,
            "--remote",
            H2_UNDERLAY,
            "--txqueuelen",
            "5",
        ],
        &["txqueuelen", "kind = \"vxlan\""],
    );
    refused(
        &[
            "port",
            "add",
            "vx1",
            "--vxlan",
            "5",
            "--local",
            "10.99.0.1",
            "--remote",
            H2_UNDERLAY,
            "--netns",
            h1,
        ],
        &["10.99.0.1", "not an address of this namespace"],
    );
    // A kernel vxlan device of H1 on UDP port 4789 holds 0.0.0.0:4789 while it is up.
    let kernel_vtep = unique("vxk");
    sh(
        "ip",
        &[
            "-n",
            h1,
            "link",
            "add",
            &kernel_vtep,
            "type",
            "vxlan",
            "id",
            "7",
            "dstport",
            "4789",
            "local",
            H1_UNDERLAY,
        ],
    );
    sh("ip", &["-n", h1, "link", "set", &kernel_vtep, "up"]);
    refused(
        &[
            "port",
            "add",
            "vx1",
            "--vxlan",
            "5",
            "--local",
            H1_UNDERLAY,
            "--remote",
            H2_UNDERLAY,
            "--netns",
            h1,
        ],
        &[
            &format!("Linux vxlan device {kernel_vtep}"),
            "binds 0.0.0.0:4789",
            "cannot share",
            "dstport",
        ],
    );
    // The same request on the wire: refused as a clash, not as a bad value.
    let mut port: PortConfig = format!("vx1@{h1}").parse().unwrap();
    port.kind = PortKind::Vxlan;
    port.vni = Some(5);
    port.local = Some(H1_UNDERLAY.parse().unwrap());
    port.remotes = Some(vec![H2_UNDERLAY.parse().unwrap()]);
    port.mtu = 1450;
    let refusal = ControlClient::connect(&bed.switch.control)
        .unwrap()
        .request_as::<PortReply>(&Request::PortAdd { port })
        .unwrap_err();
    let ControlError::Refused(refusal) = refusal else {
        panic!("not a refusal: {refusal}");
    };
    assert_eq!(refusal.kind, ErrorKind::AlreadyExists, "{refusal:?}");
    // Another UDP port does not clash.
    let (ok, _, stderr) = bed.switch.ctl(&[
        "port",
        "add",
        "vx1",
        "--vxlan",
        "5",
        "--local",
        H1_UNDERLAY,
        "--remote",
        H2_UNDERLAY,
        "--netns",
        h1,
        "--dstport",
        "4791",
    ]);
    assert!(ok, "vx1 on UDP port 4791: {stderr}");
}
