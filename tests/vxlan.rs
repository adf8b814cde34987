//! VXLAN ports configured in a file: a TAP port's endpoint (namespace E1) switched over a
//! `kind = "vxlan"` port whose sockets live in namespace H1 to a Linux vxlan device in H2,
//! bridged there with a veth to the endpoint E2. H1 and H2 share a veth underlay.

mod common;

use std::time::Duration;

use common::*;

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
    _h1: Netns,
    _h2: Netns,
    _dir: TempDir,
}

impl VxlanBed {
    fn new() -> Self {
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
        std::fs::write(
            &config,
            format!(
                "[[port]]\nname = \"tp0\"\nnetns = \"{}\"\nmtu = 1450\n\n\
                 [[port]]\nname = \"vx0\"\nkind = \"vxlan\"\nvni = {VNI}\n\
                 local = \"{H1_UNDERLAY}\"\nremotes = [\"{H2_UNDERLAY}\"]\nnetns = \"{}\"\n",
                e1.name, h1.name
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
            _h1: h1,
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
