//! VXLAN ports configured in a file: a TAP port's endpoint (namespace E1) switched over a
//! `kind = "vxlan"` port whose sockets live in namespace H1 to a Linux vxlan device in H2,
//! bridged there with a veth to the endpoint E2. H1 and H2 share a veth underlay.

mod common;

use std::time::Duration;

use common::*;
use tapswitch::config::{DeviceConfig, PortConfig, PortKind, VxlanConfig};
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
    /// H1's underlay veth.
    under1: String,
    h1: Netns,
    _h2: Netns,
    dir: TempDir,
}

impl VxlanBed {
    /// With `vx0` in the config file.
    fn new() -> Self {
        Self::with(true)
    }

    /// With only the TAP port `tp0` when `configured_vxlan` is false (vx0 added at runtime).
    fn with(configured_vxlan: bool) -> Self {
        Self::with_switch(configured_vxlan, "")
    }

    /// [`Self::with`], with `switch` as the config file's `[switch]` table.
    fn with_switch(configured_vxlan: bool, switch: &str) -> Self {
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
        let e2_dev = bridge_vxlan_to_endpoint(&h2.name, "vx", &e2.name, "vx");
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
                "[switch]\n{switch}\n\n[[port]]\nname = \"tp0\"\nnetns = \"{}\"\nmtu = 1450\n\n{vxlan}",
                e1.name
            ),
        )
        .unwrap();
        let args = Self::args(&dir);
        let switch = Switch::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let bed = Self {
            switch,
            e1,
            e2,
            e2_dev,
            under1,
            h1,
            _h2: h2,
            dir,
        };
        bed.address_e1();
        bed
    }

    /// `tapswitch run` arguments: the bed's config file and a state directory of its own.
    fn args(dir: &TempDir) -> Vec<String> {
        ["switch.toml", "state"]
            .iter()
            .zip(["--config", "--state-dir"])
            .flat_map(|(file, option)| {
                [
                    option.to_owned(),
                    dir.path.join(file).to_str().unwrap().to_owned(),
                ]
            })
            .collect()
    }

    fn address_e1(&self) {
        let e1_cidr = format!("{E1_ADDR}/24");
        sh(
            "ip",
            &["-n", &self.e1.name, "addr", "add", &e1_cidr, "dev", "tp0"],
        );
        sh("ip", &["-n", &self.e1.name, "link", "set", "tp0", "up"]);
    }

    /// Stops the switch (its TAP goes with it) and starts it again on the same config
    /// file and state directory.
    fn restart(&mut self) {
        self.switch.signal(libc::SIGTERM);
        assert!(
            wait_for(Duration::from_secs(10), || self.switch.exited()),
            "the switch did not stop"
        );
        let args = Self::args(&self.dir);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.switch = Switch::start(&args);
        self.address_e1();
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

    // TCP E1 -> E2: the TAP hands the switch TSO super-frames, which reach vx0 whole; the
    // port cuts each into 1450-byte frames and sends their datagrams in UDP_SEGMENT trains.
    let _server = iperf3_server(&bed.e2.name, 5201);
    let before = bed.switch.snapshot();
    let sent = iperf3_client(&bed.e1.name, E2_ADDR, 5201, &[]);
    let after = bed.switch.snapshot();
    assert!(sent > 1_000_000, "E1 -> E2 moved only {sent} bytes");
    let (tunnel_before, tunnel) = (before.tunnel_of("vx0"), after.tunnel_of("vx0"));
    let datagrams = tunnel.tx_datagrams - tunnel_before.tx_datagrams;
    let super_frames = tunnel.tx_super_frames - tunnel_before.tx_super_frames;
    let trains = tunnel.tx_gso_messages - tunnel_before.tx_gso_messages;
    eprintln!(
        "TCP E1 -> E2: {sent} bytes in {datagrams} datagrams, {super_frames} super-frames, \
         {trains} UDP_SEGMENT trains"
    );
    assert!(
        datagrams * 1450 >= sent,
        "{datagrams} datagrams on vx0 cannot carry {sent} bytes at MTU 1450"
    );
    assert!(super_frames > 0 && trains > 0, "{tunnel:?}");
    assert!(!tunnel.tx_gso_refused, "{tunnel:?}");
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

/// doctor's findings about port `port`: (code, what, fix). doctor's report is not a
/// protocol reply: read as JSON.
fn doctor_findings(switch: &Switch, port: &str) -> Vec<(String, String, String)> {
    let (_, stdout, stderr) = switch.ctl(&["doctor", "--json"]);
    let report: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("doctor: {e}: {stdout} {stderr}"));
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["port"] == port)
        .map(|f| {
            let text = |key: &str| f[key].as_str().unwrap_or_default().to_owned();
            (text("code"), text("what"), text("fix"))
        })
        .collect()
}

#[test]
fn doctor_finds_a_vxlan_port_mtu_its_underlay_cannot_carry() {
    require_root!();
    let mut bed = VxlanBed::new();
    assert_eq!(
        doctor_findings(&bed.switch, "vx0"),
        [],
        "1450 inside a 1500 underlay"
    );
    sh(
        "ip",
        &[
            "-n",
            &bed.h1.name,
            "link",
            "set",
            &bed.under1,
            "mtu",
            "1400",
        ],
    );
    let found = doctor_findings(&bed.switch, "vx0");
    assert_eq!(found.len(), 1, "{found:?}");
    let (code, what, fix) = &found[0];
    assert_eq!(code, "vxlan_underlay_mtu_too_small");
    assert!(
        what.contains(&format!(
            "the port's mtu is 1450 but its underlay {} (holding {H1_UNDERLAY}) has MTU 1400",
            bed.under1
        )),
        "{what}"
    );
    assert!(
        // The test's socket is not the default: the fix names it.
        fix.starts_with(&format!(
            "tapswitch --control {} port set vx0 --mtu 1350",
            bed.switch.control.display()
        )),
        "{fix}"
    );
    // Its local address gone from the namespace: an error.
    let cidr = format!("{H1_UNDERLAY}/24");
    sh(
        "ip",
        &["-n", &bed.h1.name, "addr", "del", &cidr, "dev", &bed.under1],
    );
    let found = doctor_findings(&bed.switch, "vx0");
    assert_eq!(
        found.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        ["vxlan_local_missing"],
        "{found:?}"
    );
    // As the finding says: what vx0 sends now is refused, and counted.
    let before = bed.switch.snapshot().dropped("vx0", DropReason::TxRejected);
    ping(&bed.e1.name, E2_ADDR, 1, "0.2");
    assert!(bed.switch.snapshot().dropped("vx0", DropReason::TxRejected) > before);
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
    // Two dataplane threads: the other worker holds the port too until it lets go.
    let mut bed = VxlanBed::with_switch(false, "threads = 2");
    let bound = format!("{H1_UNDERLAY}:4789");
    assert!(!udp_bound(&bed.h1.name, &bound));
    let (ok, _, stderr) = add_vx0(&bed, &[]);
    assert!(ok, "port add --vxlan: {stderr}");
    let config = bed.switch.config();
    let port = config.ports.iter().find(|p| p.name == "vx0").unwrap();
    assert_eq!(port.kind(), PortKind::Vxlan);
    let vxlan = port.vxlan().expect("a vxlan port");
    assert_eq!(vxlan.vni, Some(VNI.parse::<u32>().unwrap()));
    assert_eq!(
        vxlan.remotes,
        vec![H2_UNDERLAY.parse::<std::net::Ipv4Addr>().unwrap()]
    );
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
fn a_runtime_vxlan_trunk_is_added_from_the_command_line_as_a_trunk_of_its_vlans() {
    require_root!();
    let bed = VxlanBed::with(false);
    let (ok, _, stderr) = bed.switch.ctl(&[
        "port",
        "add",
        "vx0",
        "--vxlan",
        "100=5000,200=5001",
        "--local",
        H1_UNDERLAY,
        "--remote",
        H2_UNDERLAY,
        "--netns",
        &bed.h1.name,
    ]);
    assert!(ok, "port add --vxlan VLAN=VNI,...: {stderr}");
    let config = bed.switch.config();
    let port = config.ports.iter().find(|p| p.name == "vx0").unwrap();
    let vxlan = port.vxlan().expect("a vxlan port");
    assert_eq!(vxlan.vni, None);
    let map: Vec<(u16, u32)> = vxlan
        .vlan_vni
        .iter()
        .map(|(vlan, &vni)| (vlan.get(), vni))
        .collect();
    assert_eq!(map, vec![(100, 5000), (200, 5001)]);
    assert_eq!(
        port.policy.vlan_mode,
        Some(tapswitch::config::VlanModeName::Trunk)
    );
    assert_eq!(port.mtu, 1450);
}

#[test]
fn a_runtime_vxlan_port_comes_back_from_the_state_file_after_a_restart() {
    require_root!();
    let mut bed = VxlanBed::with(false);
    let (ok, _, stderr) = add_vx0(&bed, &[]);
    assert!(ok, "port add --vxlan: {stderr}");
    bed.restart();
    let ports = names(&bed.switch.port_list());
    assert!(ports.contains(&"vx0".to_owned()), "{ports:?}");
    let config = bed.switch.config();
    let port = config.ports.iter().find(|p| p.name == "vx0").unwrap();
    assert_eq!(
        (
            port.kind(),
            port.vxlan().and_then(|vxlan| vxlan.vni),
            port.mtu
        ),
        (PortKind::Vxlan, Some(VNI.parse().unwrap()), 1450)
    );
    assert!(udp_bound(&bed.h1.name, &format!("{H1_UNDERLAY}:4789")));
    assert!(
        wait_for(Duration::from_secs(5), || ping(
            &bed.e1.name,
            E2_ADDR,
            1,
            "0.2"
        ) == 1),
        "E1 reaches E2 over the restored vxlan port"
    );
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
    let twice = format!("{H2_UNDERLAY},{H2_UNDERLAY}");
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
            &twice,
        ],
        &["remotes[1]", "listed twice"],
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
    port.device = DeviceConfig::Vxlan(VxlanConfig {
        vni: Some(5),
        vlan_vni: Default::default(),
        local: H1_UNDERLAY.parse().unwrap(),
        udp_port: None,
        remotes: vec![H2_UNDERLAY.parse().unwrap()],
    });
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

// ---------------------------------------------------------------------------------------
// Interop: namespaces as hosts on a shared underlay (a Linux bridge in a namespace of its
// own, standing for the physical network), each a VTEP: tapswitch, or Linux vxlan + bridge.

const SEGMENT_VNI: u32 = 5151;

/// The underlay address of host `i`.
fn vtep(i: usize) -> String {
    format!("10.79.0.{}", i + 1)
}

/// An endpoint on the segment: a namespace, its device and its address.
struct Endpoint {
    ns: Netns,
    dev: String,
    addr: String,
}

impl Endpoint {
    fn mac(&self) -> String {
        link_mac(&self.ns.name, &self.dev)
    }

    fn address(&self, addr: &str) {
        let cidr = format!("{addr}/24");
        sh(
            "ip",
            &["-n", &self.ns.name, "addr", "add", &cidr, "dev", &self.dev],
        );
        sh("ip", &["-n", &self.ns.name, "link", "set", &self.dev, "up"]);
    }
}

/// Hosts joined by veths to one bridge in the `fabric` namespace; host `i` has underlay
/// device `underlay[i]` with address [`vtep`]`(i)`.
struct Fabric {
    hosts: Vec<Netns>,
    underlay: Vec<String>,
    _fabric: Netns,
}

impl Fabric {
    fn new(count: usize) -> Self {
        let fabric = Netns::new();
        sh(
            "ip",
            &[
                "-n",
                &fabric.name,
                "link",
                "add",
                "name",
                "fab",
                "type",
                "bridge",
            ],
        );
        sh("ip", &["-n", &fabric.name, "link", "set", "fab", "up"]);
        let mut hosts = Vec::new();
        let mut underlay = Vec::new();
        for i in 0..count {
            let host = Netns::new();
            let (dev, port) = (unique("vxu"), unique("vxf"));
            sh(
                "ip",
                &[
                    "link",
                    "add",
                    &dev,
                    "netns",
                    &host.name,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &port,
                    "netns",
                    &fabric.name,
                ],
            );
            sh(
                "ip",
                &[
                    "-n",
                    &fabric.name,
                    "link",
                    "set",
                    &port,
                    "master",
                    "fab",
                    "up",
                ],
            );
            let cidr = format!("{}/24", vtep(i));
            sh("ip", &["-n", &host.name, "addr", "add", &cidr, "dev", &dev]);
            sh("ip", &["-n", &host.name, "link", "set", &dev, "up"]);
            hosts.push(host);
            underlay.push(dev);
        }
        Self {
            hosts,
            underlay,
            _fabric: fabric,
        }
    }
}

/// A tapswitch VTEP on host `host`: TAP endpoints (MTU 1450) and `vx0` flooding to `remotes`.
struct TapswitchHost {
    switch: Switch,
    endpoints: Vec<Endpoint>,
    _dir: TempDir,
}

impl TapswitchHost {
    fn start(fabric: &Fabric, host: usize, endpoints: &[&str], remotes: &[usize]) -> Self {
        Self::start_with(fabric, host, endpoints, remotes, "")
    }

    /// [`Self::start`], with `policy` (`[[port]]` lines) on every port, `vx0` included.
    fn start_with(
        fabric: &Fabric,
        host: usize,
        endpoints: &[&str],
        remotes: &[usize],
        policy: &str,
    ) -> Self {
        let endpoints: Vec<(&str, &str)> = endpoints.iter().map(|addr| (*addr, policy)).collect();
        let vx0 = format!("vni = {SEGMENT_VNI}\n{policy}");
        Self::start_keyed(fabric, host, &endpoints, remotes, &vx0)
    }

    /// Endpoints given as (address, their port's policy lines); `vx0` has `vx0_keys`
    /// (its VNI or VNIs, its policy) besides `local`, `remotes` and `netns`.
    fn start_keyed(
        fabric: &Fabric,
        host: usize,
        endpoints: &[(&str, &str)],
        remotes: &[usize],
        vx0_keys: &str,
    ) -> Self {
        let namespaces: Vec<Netns> = endpoints.iter().map(|_| Netns::new()).collect();
        let mut config = String::new();
        for (i, (ns, (_, policy))) in namespaces.iter().zip(endpoints).enumerate() {
            config.push_str(&format!(
                "[[port]]\nname = \"t{host}e{i}\"\nnetns = \"{}\"\nmtu = 1450\n{policy}\n",
                ns.name
            ));
        }
        let remotes: Vec<String> = remotes
            .iter()
            .map(|&r| format!("\"{}\"", vtep(r)))
            .collect();
        config.push_str(&format!(
            "[[port]]\nname = \"vx0\"\nkind = \"vxlan\"\nlocal = \"{}\"\n\
             remotes = [{}]\nnetns = \"{}\"\n{vx0_keys}",
            vtep(host),
            remotes.join(", "),
            fabric.hosts[host].name
        ));
        let dir = TempDir::new("tsvx");
        let path = dir.path.join("switch.toml");
        std::fs::write(&path, config).unwrap();
        let switch = Switch::start(&["--config", path.to_str().unwrap()]);
        let endpoints = namespaces
            .into_iter()
            .zip(endpoints)
            .enumerate()
            .map(|(i, (ns, (addr, _)))| {
                let endpoint = Endpoint {
                    ns,
                    dev: format!("t{host}e{i}"),
                    addr: (*addr).to_owned(),
                };
                endpoint.address(addr);
                endpoint
            })
            .collect();
        Self {
            switch,
            endpoints,
            _dir: dir,
        }
    }

    /// The MAC table entry for `mac`, if any.
    fn entry(&self, mac: &str) -> Option<tapswitch::control::FdbShowEntry> {
        self.switch
            .fdb()
            .entries
            .into_iter()
            .find(|entry| entry.mac.to_string() == mac)
    }
}

/// A Linux VTEP on host `host`: vxlan device `vx` (dstport 4789, flooding to `remotes`) in
/// bridge `br` with one veth endpoint.
struct LinuxHost {
    endpoint: Endpoint,
}

impl LinuxHost {
    fn start(fabric: &Fabric, host: usize, addr: &str, remotes: &[usize]) -> Self {
        Self::start_vni(fabric, host, addr, remotes, SEGMENT_VNI, "vx")
    }

    /// [`Self::start`] for VNI `vni`: vxlan device `dev` in bridge `br{dev}`.
    fn start_vni(
        fabric: &Fabric,
        host: usize,
        addr: &str,
        remotes: &[usize],
        vni: u32,
        dev: &str,
    ) -> Self {
        let ns = &fabric.hosts[host].name;
        let local = vtep(host);
        let vni_text = vni.to_string();
        let (vxlan_dev, bridge) = (dev, format!("br{dev}"));
        sh(
            "ip",
            &[
                "-n",
                ns,
                "link",
                "add",
                vxlan_dev,
                "type",
                "vxlan",
                "id",
                &vni_text,
                "dstport",
                "4789",
                "local",
                &local,
                "dev",
                &fabric.underlay[host],
            ],
        );
        for &remote in remotes {
            sh(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns,
                    "bridge",
                    "fdb",
                    "append",
                    "00:00:00:00:00:00",
                    "dev",
                    vxlan_dev,
                    "dst",
                    &vtep(remote),
                ],
            );
        }
        let endpoint_ns = Netns::new();
        let dev = bridge_vxlan_to_endpoint_in(ns, &bridge, vxlan_dev, &endpoint_ns.name, "vx");
        // As in VxlanBed: nothing on this path fills in a partial TCP checksum.
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &endpoint_ns.name,
                "ethtool",
                "-K",
                &dev,
                "tx",
                "off",
            ],
        );
        let endpoint = Endpoint {
            ns: endpoint_ns,
            dev,
            addr: addr.to_owned(),
        };
        endpoint.address(addr);
        Self { endpoint }
    }
}

/// An Open vSwitch VTEP on host `host` (userspace datapath: this kernel has no openvswitch
/// module): ovsdb-server and ovs-vswitchd run in the host's namespace with every file in a
/// directory of their own (as bench/loadgen's systems.rs starts them, without systemd);
/// bridge `brphy` holds the underlay device and its address (OVS's tunnels route and resolve
/// ARP through it), bridge `brint` the vxlan port `vx` (VNI `vni`, to `remote`) and a veth
/// to one endpoint.
struct OvsHost {
    /// First: the daemons stop before their directory goes.
    _daemons: Vec<Background>,
    endpoint: Endpoint,
    dir: TempDir,
}

impl OvsHost {
    fn start(fabric: &Fabric, host: usize, addr: &str, remote: usize, vni: u32) -> Self {
        for program in ["ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-appctl"] {
            assert!(
                std::process::Command::new("which")
                    .arg(program)
                    .output()
                    .is_ok_and(|out| out.status.success()),
                "{program} is missing: scripts/install-deps.sh installs openvswitch-switch"
            );
        }
        let ns = fabric.hosts[host].name.clone();
        let dir = TempDir::new("tsovs");
        let file = |name: &str| dir.path.join(name).to_str().unwrap().to_owned();
        let (db, sock) = (file("conf.db"), file("db.sock"));
        let env: Vec<String> = ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"]
            .iter()
            .map(|var| format!("{var}={}", dir.path.display()))
            .collect();
        let daemon = |program: &str, args: &[String]| {
            let mut command: Vec<&str> = vec!["env"];
            command.extend(env.iter().map(String::as_str));
            command.push(program);
            command.extend(args.iter().map(String::as_str));
            Background::start_in(&ns, &command)
        };
        let tool = std::process::Command::new("ovsdb-tool")
            .envs(env.iter().map(|kv| kv.split_once('=').unwrap()))
            .args(["create", &db])
            .output()
            .unwrap();
        assert!(tool.status.success(), "ovsdb-tool create: {tool:?}");
        let mut daemons = vec![daemon(
            "ovsdb-server",
            &[
                db.clone(),
                format!("--remote=punix:{sock}"),
                format!("--unixctl={}", file("db.ctl")),
                format!("--log-file={}", file("db.log")),
                "-vconsole:off".into(),
            ],
        )];
        assert!(
            wait_for(Duration::from_secs(10), || std::path::Path::new(&sock)
                .exists()),
            "ovsdb-server did not start"
        );
        daemons.push(daemon(
            "ovs-vswitchd",
            &[
                format!("unix:{sock}"),
                format!("--unixctl={}", file("vs.ctl")),
                format!("--log-file={}", file("vs.log")),
                "-vconsole:off".into(),
            ],
        ));
        let mut host_ovs = Self {
            _daemons: daemons,
            endpoint: Endpoint {
                ns: Netns::new(),
                dev: String::new(),
                addr: addr.to_owned(),
            },
            dir,
        };
        host_ovs.vsctl(&["--no-wait", "init"]);
        let underlay = &fabric.underlay[host];
        let local = vtep(host);
        host_ovs.vsctl(&[
            "add-br",
            "brphy",
            "--",
            "set",
            "bridge",
            "brphy",
            "datapath_type=netdev",
        ]);
        host_ovs.vsctl(&["add-port", "brphy", underlay]);
        sh("ip", &["-n", &ns, "addr", "flush", "dev", underlay]);
        let cidr = format!("{local}/24");
        sh("ip", &["-n", &ns, "addr", "add", &cidr, "dev", "brphy"]);
        sh("ip", &["-n", &ns, "link", "set", "brphy", "up"]);
        host_ovs.vsctl(&[
            "add-br",
            "brint",
            "--",
            "set",
            "bridge",
            "brint",
            "datapath_type=netdev",
        ]);
        let (remote_ip, local_ip, key) = (
            format!("options:remote_ip={}", vtep(remote)),
            format!("options:local_ip={local}"),
            format!("options:key={vni}"),
        );
        host_ovs.vsctl(&[
            "add-port",
            "brint",
            "vx",
            "--",
            "set",
            "interface",
            "vx",
            "type=vxlan",
            &remote_ip,
            &local_ip,
            &key,
            "options:dst_port=4789",
        ]);
        let (bridge_end, endpoint_dev) = (unique("ovb"), unique("ove"));
        veth_pair_1450(&ns, &bridge_end, &host_ovs.endpoint.ns.name, &endpoint_dev);
        sh("ip", &["-n", &ns, "link", "set", &bridge_end, "up"]);
        host_ovs.vsctl(&["add-port", "brint", &bridge_end]);
        // OVS's userspace datapath fills in no partial checksum either (see VxlanBed).
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &host_ovs.endpoint.ns.name,
                "ethtool",
                "-K",
                &endpoint_dev,
                "tx",
                "off",
            ],
        );
        host_ovs.endpoint.dev = endpoint_dev;
        host_ovs.endpoint.address(addr);
        host_ovs
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"]
            .iter()
            .map(|var| (*var, self.dir.path.display().to_string()))
            .collect()
    }

    fn run(&self, program: &str, args: &[&str]) -> String {
        let output = std::process::Command::new(program)
            .envs(self.env())
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{program} {args:?}: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.dir.path.join("vs.log")).unwrap_or_default()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `ovs-vsctl` against this host's database, waiting for ovs-vswitchd to apply it.
    fn vsctl(&self, args: &[&str]) -> String {
        let db = format!("--db=unix:{}", self.dir.path.join("db.sock").display());
        let mut all = vec![db.as_str(), "--timeout=30"];
        all.extend_from_slice(args);
        self.run("ovs-vsctl", &all)
    }

    /// `ovs-appctl` to this host's ovs-vswitchd.
    fn appctl(&self, args: &[&str]) -> String {
        let target = self.dir.path.join("vs.ctl").display().to_string();
        let mut all = vec!["-t", target.as_str()];
        all.extend_from_slice(args);
        self.run("ovs-appctl", &all)
    }
}

/// `bridge fdb show dev vx` on a Linux host: (MAC, dst) of the entries with a remote.
fn kernel_vxlan_fdb(host: &Netns) -> Vec<(String, String)> {
    let (ok, out) = exec_in(&host.name, &["bridge", "fdb", "show", "dev", "vx"]);
    assert!(ok);
    out.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let mac = fields.next()?.to_owned();
            let rest: Vec<&str> = fields.collect();
            let dst = rest.iter().position(|f| *f == "dst")?;
            Some((mac, rest.get(dst + 1)?.to_string()))
        })
        .collect()
}

/// Every endpoint pings every other one (after a first exchange that may wait for ARP).
fn all_pairs_ping(endpoints: &[&Endpoint]) {
    for a in endpoints {
        for b in endpoints {
            if a.addr == b.addr {
                continue;
            }
            assert!(
                wait_for(Duration::from_secs(5), || ping(
                    &a.ns.name, &b.addr, 1, "0.2"
                ) == 1),
                "{} cannot reach {}",
                a.addr,
                b.addr
            );
            assert_eq!(
                ping(&a.ns.name, &b.addr, 2, "0.2"),
                2,
                "{} -> {}",
                a.addr,
                b.addr
            );
        }
    }
}

/// The VXLAN datagrams on a capture whose inner source MAC is `src` (IPv4 without options).
fn tunnelled_from(captured: &[Captured], src: [u8; 6]) -> usize {
    const INNER: usize = 14 + 20 + 8 + 8;
    captured
        .iter()
        .filter(|c| {
            c.bytes.len() >= INNER + 12
                && c.bytes[12..14] == [0x08, 0x00]
                && c.bytes[23] == 17
                && c.bytes[36..38] == 4789u16.to_be_bytes()
                && c.bytes[INNER + 6..INNER + 12] == src
        })
        .count()
}

/// The frames on a capture with source MAC `src`.
fn frames_from(captured: &[Captured], src: [u8; 6]) -> usize {
    captured.iter().filter(|c| c.src() == src).count()
}

/// Drains `capture` until `count(...)` reaches `expected` (or 5 s), then once more after
/// the segment had time to deliver duplicates; returns the final count.
fn settled_count(
    capture: &Capture,
    expected: usize,
    count: impl Fn(&[Captured]) -> usize,
) -> usize {
    let mut seen = Vec::new();
    wait_for(Duration::from_secs(5), || {
        seen.extend(capture.drain());
        count(&seen) >= expected
    });
    std::thread::sleep(Duration::from_millis(300));
    seen.extend(capture.drain());
    count(&seen)
}

#[test]
fn tapswitch_and_a_linux_vtep_share_a_segment_learn_both_ways_and_replicate_once() {
    require_root!();
    let fabric = Fabric::new(2);
    let a = TapswitchHost::start(&fabric, 0, &["192.168.79.11", "192.168.79.12"], &[1]);
    let b = LinuxHost::start(&fabric, 1, "192.168.79.21", &[0]);
    all_pairs_ping(&[&a.endpoints[0], &a.endpoints[1], &b.endpoint]);
    // Full-size frames both ways: a 1450-byte IP packet (DF) is a 1500-byte datagram on
    // the 1500-byte underlay.
    for (from, to) in [
        (&a.endpoints[0], &b.endpoint),
        (&b.endpoint, &a.endpoints[0]),
    ] {
        assert_eq!(
            ping_with(
                &from.ns.name,
                &to.addr,
                2,
                "0.2",
                &["-s", "1422", "-M", "do"]
            ),
            2,
            "{} -> {} at MTU 1450",
            from.addr,
            to.addr
        );
    }

    // Learning on A: B's endpoint behind B's VTEP.
    let eb = b.endpoint.mac();
    let entry = a
        .entry(&eb)
        .unwrap_or_else(|| panic!("{eb} not learned on A"));
    assert_eq!(entry.port, "vx0");
    assert_eq!(entry.remote.map(|ip| ip.to_string()), Some(vtep(1)));
    // Learning on B: A's endpoints behind A's VTEP.
    let kernel = kernel_vxlan_fdb(&fabric.hosts[1]);
    for endpoint in &a.endpoints {
        let mac = endpoint.mac();
        assert!(
            kernel.contains(&(mac.clone(), vtep(0))),
            "{mac} dst {} not in B's fdb: {kernel:?}",
            vtep(0)
        );
    }

    // A broadcast from A's endpoint crosses the underlay once to B's one remote.
    let marker = [0x02, 0x79, 0, 0, 0, 1];
    let on_underlay = Capture::open(&fabric.hosts[1].name, &fabric.underlay[1]);
    let at_endpoint = Capture::open(&b.endpoint.ns.name, &b.endpoint.dev);
    let broadcasts: Vec<Vec<u8>> = (0..20).map(|_| frame([0xff; 6], marker, 60)).collect();
    send_raw(&a.endpoints[0].ns.name, &a.endpoints[0].dev, &broadcasts);
    assert_eq!(
        settled_count(&on_underlay, 20, |c| tunnelled_from(c, marker)),
        20,
        "one datagram per broadcast on B's underlay"
    );
    assert_eq!(
        settled_count(&at_endpoint, 20, |c| frames_from(c, marker)),
        20,
        "B's endpoint got each broadcast once"
    );

    // A MAC that moves host is relearned on both: first behind B, then on A's second
    // endpoint, then behind B again.
    let mover = [0x02, 0x79, 0, 0, 0, 2];
    let mover_text = "02:79:00:00:00:02";
    let hello = vec![frame([0xff; 6], mover, 60)];
    send_raw(&b.endpoint.ns.name, &b.endpoint.dev, &hello);
    assert!(
        wait_for(Duration::from_secs(5), || a.entry(mover_text).is_some_and(
            |e| e.port == "vx0" && e.remote.map(|ip| ip.to_string()) == Some(vtep(1))
        )),
        "A learns the mover behind B: {:?}",
        a.entry(mover_text)
    );
    send_raw(&a.endpoints[1].ns.name, &a.endpoints[1].dev, &hello);
    assert!(
        wait_for(Duration::from_secs(5), || a.entry(mover_text).is_some_and(
            |e| e.port == a.endpoints[1].dev && e.remote.is_none()
        )),
        "A relearns the mover on its endpoint: {:?}",
        a.entry(mover_text)
    );
    assert!(
        wait_for(Duration::from_secs(5), || kernel_vxlan_fdb(
            &fabric.hosts[1]
        )
        .contains(&(mover_text.to_owned(), vtep(0)))),
        "B relearns the mover behind A: {:?}",
        kernel_vxlan_fdb(&fabric.hosts[1])
    );
    // Back on B: unicast from A to the mover must go to B again.
    send_raw(&b.endpoint.ns.name, &b.endpoint.dev, &hello);
    assert!(
        wait_for(Duration::from_secs(5), || a.entry(mover_text).is_some_and(
            |e| e.port == "vx0" && e.remote.map(|ip| ip.to_string()) == Some(vtep(1))
        )),
        "A relearns the mover behind B: {:?}",
        a.entry(mover_text)
    );
    let unicast = vec![frame(mover, marker, 60)];
    let at_endpoint = Capture::open(&b.endpoint.ns.name, &b.endpoint.dev);
    send_raw(&a.endpoints[0].ns.name, &a.endpoints[0].dev, &unicast);
    assert_eq!(
        settled_count(&at_endpoint, 1, |c| frames_from(c, marker)),
        1,
        "unicast to the mover reaches B"
    );
}

#[test]
fn two_tapswitch_vteps_and_a_linux_vtep_form_one_segment_with_head_end_replication() {
    require_root!();
    let fabric = Fabric::new(3);
    let a = TapswitchHost::start(&fabric, 0, &["192.168.79.11", "192.168.79.12"], &[1, 2]);
    let b = LinuxHost::start(&fabric, 1, "192.168.79.21", &[0, 2]);
    let c = TapswitchHost::start(&fabric, 2, &["192.168.79.31"], &[0, 1]);
    all_pairs_ping(&[
        &a.endpoints[0],
        &a.endpoints[1],
        &b.endpoint,
        &c.endpoints[0],
    ]);
    // Full-size frames between the two tapswitch VTEPs, both ways.
    for (from, to) in [
        (&a.endpoints[0], &c.endpoints[0]),
        (&c.endpoints[0], &a.endpoints[0]),
    ] {
        assert_eq!(
            ping_with(
                &from.ns.name,
                &to.addr,
                2,
                "0.2",
                &["-s", "1422", "-M", "do"]
            ),
            2,
            "{} -> {} at MTU 1450",
            from.addr,
            to.addr
        );
    }
    // TCP between them: A's TAP hands its switch super-frames, segmented and checksummed
    // in software for vx0; C's endpoint receives them with correct checksums.
    let server = iperf3_server(&c.endpoints[0].ns.name, 5201);
    let bad_before = snmp_counter(&c.endpoints[0].ns.name, "Tcp", "InCsumErrors");
    let sent = iperf3_client(&a.endpoints[0].ns.name, &c.endpoints[0].addr, 5201, &[]);
    assert!(sent > 1_000_000, "A -> C moved only {sent} bytes");
    assert_eq!(
        snmp_counter(&c.endpoints[0].ns.name, "Tcp", "InCsumErrors"),
        bad_before,
        "TCP checksum errors at C"
    );
    drop(server);
    for (host, remote) in [(&a, 2), (&c, 0)] {
        let other = if remote == 2 { &c } else { &a };
        let mac = other.endpoints[0].mac();
        let entry = host
            .entry(&mac)
            .unwrap_or_else(|| panic!("{mac} not learned"));
        assert_eq!(entry.remote.map(|ip| ip.to_string()), Some(vtep(remote)));
    }

    // A's broadcasts: one copy to each remote, none back from one tunnel into another.
    let marker = [0x02, 0x79, 0, 0, 0, 3];
    let to_b = Capture::open(&fabric.hosts[1].name, &fabric.underlay[1]);
    let to_c = Capture::open(&fabric.hosts[2].name, &fabric.underlay[2]);
    let at_b = Capture::open(&b.endpoint.ns.name, &b.endpoint.dev);
    let at_c = Capture::open(&c.endpoints[0].ns.name, &c.endpoints[0].dev);
    let broadcasts: Vec<Vec<u8>> = (0..20).map(|_| frame([0xff; 6], marker, 60)).collect();
    let before = a.switch.stats();
    send_raw(&a.endpoints[0].ns.name, &a.endpoints[0].dev, &broadcasts);
    for (capture, what) in [(&to_b, "B's underlay"), (&to_c, "C's underlay")] {
        assert_eq!(
            settled_count(capture, 20, |c| tunnelled_from(c, marker)),
            20,
            "one datagram per broadcast on {what}"
        );
    }
    for (capture, what) in [(&at_b, "B's endpoint"), (&at_c, "C's endpoint")] {
        assert_eq!(
            settled_count(capture, 20, |c| frames_from(c, marker)),
            20,
            "{what} got each broadcast once"
        );
    }
    let after = a.switch.stats();
    // 20 frames (and whatever the endpoints said meanwhile), not 40 copies.
    let sent = after.counters_of("vx0").tx_frames - before.counters_of("vx0").tx_frames;
    assert!(
        (20..40).contains(&sent),
        "vx0 counts frames, not copies: {sent}"
    );
}

/// A TCP transfer (iperf3, 2 s) from `from` to `to`: moves more than 1 MB and leaves
/// both stacks' checksum-error counters as they were (the data one way, the ACKs back).
fn tcp_with_checksums_right(from: &Endpoint, to: &Endpoint, port: u16) {
    let server = iperf3_server(&to.ns.name, port);
    let before = (csum_errors(&from.ns.name), csum_errors(&to.ns.name));
    let moved = iperf3_client(&from.ns.name, &to.addr, port, &[]);
    let after = (csum_errors(&from.ns.name), csum_errors(&to.ns.name));
    drop(server);
    assert!(
        moved > 1_000_000,
        "{} -> {} moved only {moved} bytes",
        from.addr,
        to.addr
    );
    assert_eq!(
        after, before,
        "{} -> {}: (TcpInCsumErrors, IpExtInCsumErrors) of (sender, receiver) changed",
        from.addr, to.addr
    );
}

/// What a tapswitch host's vx0 did between two snapshots: (super-frames sent whole,
/// UDP_SEGMENT trains sent, datagrams sent, datagrams read beyond one per read, super-frames
/// coalesced from what it read). The receiving counts need trains on the underlay: over a
/// veth, a sender's UDP_SEGMENT train reaches a UDP_GRO socket whole.
fn tunnel_delta(switch: &mut Switch, during: impl FnOnce()) -> [u64; 5] {
    let before = switch.snapshot().tunnel_of("vx0");
    during();
    let after = switch.snapshot().tunnel_of("vx0");
    assert!(!after.tx_gso_refused, "{after:?}");
    [
        after.tx_super_frames - before.tx_super_frames,
        after.tx_gso_messages - before.tx_gso_messages,
        after.tx_datagrams - before.tx_datagrams,
        (after.rx_datagrams - after.rx_reads) - (before.rx_datagrams - before.rx_reads),
        after.rx_super_frames - before.rx_super_frames,
    ]
}

#[test]
fn tcp_super_frames_cross_tapswitch_and_linux_vteps_whole_with_checksums_right_both_ways() {
    require_root!();
    let fabric = Fabric::new(3);
    let mut a = TapswitchHost::start(&fabric, 0, &["192.168.82.11"], &[1, 2]);
    let b = LinuxHost::start(&fabric, 1, "192.168.82.21", &[0, 2]);
    let mut c = TapswitchHost::start(&fabric, 2, &["192.168.82.31"], &[0, 1]);
    all_pairs_ping(&[&a.endpoints[0], &b.endpoint, &c.endpoints[0]]);
    let TapswitchHost {
        switch: switch_a,
        endpoints: at_a,
        ..
    } = &mut a;
    let TapswitchHost {
        switch: switch_c,
        endpoints: at_c,
        ..
    } = &mut c;
    let (a0, c0) = (&at_a[0], &at_c[0]);

    // tapswitch to tapswitch, both ways: the sender's super-frames leave whole (cut by
    // vx0 into UDP_SEGMENT trains), the receiver reads trains of several datagrams.
    for a_sends in [true, false] {
        let (sender, receiver, from, to) = if a_sends {
            (&mut *switch_a, &mut *switch_c, a0, c0)
        } else {
            (&mut *switch_c, &mut *switch_a, c0, a0)
        };
        let mut received = [0; 5];
        let sent = tunnel_delta(sender, || {
            received = tunnel_delta(receiver, || tcp_with_checksums_right(from, to, 5201));
        });
        eprintln!(
            "{} -> {}: sent {sent:?}, received {received:?}",
            from.addr, to.addr
        );
        let [super_frames, trains, datagrams, _, _] = sent;
        assert!(super_frames > 0, "no super-frame sent whole: {sent:?}");
        assert!(
            trains > 0 && datagrams > 2 * trains,
            "super-frames not sent as UDP_SEGMENT trains: {sent:?}"
        );
        assert!(received[3] > 0, "no UDP_GRO train read: {received:?}");
        // ...and writes each train's segments to its TAP as one coalesced super-frame.
        assert!(received[4] > 0, "no super-frame coalesced: {received:?}");
    }
    // tapswitch to and from Linux: the Linux VTEP takes each train's datagrams (its endpoint
    // checks every inner segment's checksum), and what it sends reaches A's endpoint right.
    let [super_frames, trains, ..] =
        tunnel_delta(switch_a, || tcp_with_checksums_right(a0, &b.endpoint, 5202));
    assert!(super_frames > 0 && trains > 0, "A -> Linux not sent whole");
    tcp_with_checksums_right(&b.endpoint, a0, 5203);
}

#[test]
fn a_vxlan_trunk_carries_tcp_super_frames_whole_between_two_tapswitch_vteps() {
    require_root!();
    let fabric = Fabric::new(2);
    // Both trunks map VLAN 100 to VNI 5000 and VLAN 200 to VNI 5001; the endpoints are
    // access ports of VLAN 200, so every super-frame is tagged on its way into vx0 (the
    // port takes the tag off and moves the vnet header's offsets) and tagged again on
    // its way out of the far one.
    let trunk = "vlan_vni = { 100 = 5000, 200 = 5001 }\n";
    let access = "vlan_mode = \"access\"\nvlan = 200\n";
    let mut a = TapswitchHost::start_keyed(&fabric, 0, &[("192.168.83.11", access)], &[1], trunk);
    let mut c = TapswitchHost::start_keyed(&fabric, 1, &[("192.168.83.31", access)], &[0], trunk);
    all_pairs_ping(&[&a.endpoints[0], &c.endpoints[0]]);
    let TapswitchHost {
        switch: switch_a,
        endpoints: at_a,
        ..
    } = &mut a;
    let TapswitchHost {
        switch: switch_c,
        endpoints: at_c,
        ..
    } = &mut c;
    for a_sends in [true, false] {
        let (sender, from, to) = if a_sends {
            (&mut *switch_a, &at_a[0], &at_c[0])
        } else {
            (&mut *switch_c, &at_c[0], &at_a[0])
        };
        let sent = tunnel_delta(sender, || tcp_with_checksums_right(from, to, 5201));
        let [super_frames, trains, ..] = sent;
        assert!(
            super_frames > 0 && trains > 0,
            "{} -> {}: the trunk did not send super-frames whole: {sent:?}",
            from.addr,
            to.addr
        );
    }
    let entry = a
        .entry(&c.endpoints[0].mac())
        .expect("C's endpoint learned on A");
    assert_eq!((entry.port.as_str(), entry.vlan), ("vx0", 200), "{entry:?}");
}

#[test]
fn where_the_kernel_refuses_udp_segment_a_vxlan_port_falls_back_to_one_datagram_each() {
    require_root!();
    let fabric = Fabric::new(2);
    // A's underlay is narrower than vx0's records (1472-byte VXLAN datagrams, 1500 with
    // their headers, on a 1400-byte device): the kernel refuses such a UDP_SEGMENT train
    // (EMSGSIZE), the port sends each record on its own from then on, and the kernel
    // fragments those (no DF), so TCP still gets through, slower.
    sh(
        "ip",
        &[
            "-n",
            &fabric.hosts[0].name,
            "link",
            "set",
            &fabric.underlay[0],
            "mtu",
            "1400",
        ],
    );
    let mut a = TapswitchHost::start(&fabric, 0, &["192.168.84.11"], &[1]);
    let c = TapswitchHost::start(&fabric, 1, &["192.168.84.31"], &[0]);
    all_pairs_ping(&[&a.endpoints[0], &c.endpoints[0]]);
    let before = a.switch.snapshot().tunnel_of("vx0");
    tcp_with_checksums_right(&a.endpoints[0], &c.endpoints[0], 5201);
    let after = a.switch.snapshot().tunnel_of("vx0");
    assert!(
        after.tx_gso_refused,
        "UDP_SEGMENT was not refused: {after:?}"
    );
    assert!(after.tx_super_frames > before.tx_super_frames, "{after:?}");
    assert!(after.tx_datagrams > before.tx_datagrams, "{after:?}");
}

/// A UDP socket in `netns` bound to `local` (port chosen by the kernel).
fn udp_socket_in(netns: &str, local: &str) -> std::net::UdpSocket {
    let local = format!("{local}:0");
    tapswitch::sys::netns::run_in(netns, move || std::net::UdpSocket::bind(local).unwrap())
        .expect("entering the namespace")
}

#[test]
fn wrong_vni_malformed_and_oversized_vxlan_are_counted_by_reason_and_dropped() {
    require_root!();
    let fabric = Fabric::new(2);
    let mut a = TapswitchHost::start(&fabric, 0, &["192.168.79.11"], &[1]);
    let b = LinuxHost::start(&fabric, 1, "192.168.79.21", &[0]);
    all_pairs_ping(&[&a.endpoints[0], &b.endpoint]);

    let marker = [0x02, 0x79, 0, 0, 0, 4];
    let inner = frame([0xff; 6], marker, 60);
    let header = |flags: u8, reserved: [u8; 3], vni: u32, last: u8| {
        let vni = vni.to_be_bytes();
        vec![
            flags,
            reserved[0],
            reserved[1],
            reserved[2],
            vni[1],
            vni[2],
            vni[3],
            last,
        ]
    };
    let with_inner = |mut header: Vec<u8>, inner: &[u8]| {
        header.extend_from_slice(inner);
        header
    };
    let good = header(0x08, [0; 3], SEGMENT_VNI, 0);
    let cases: Vec<(DropReason, Vec<u8>)> = vec![
        (
            DropReason::UnknownVni,
            with_inner(header(0x08, [0; 3], SEGMENT_VNI + 1, 0), &inner),
        ),
        (
            DropReason::BadVxlanHeader,
            with_inner(header(0x00, [0; 3], SEGMENT_VNI, 0), &inner),
        ),
        (
            DropReason::BadVxlanHeader,
            with_inner(header(0x0c, [0; 3], SEGMENT_VNI, 0), &inner),
        ),
        (
            DropReason::BadVxlanHeader,
            with_inner(header(0x08, [0, 0, 1], SEGMENT_VNI, 0), &inner),
        ),
        (
            DropReason::BadVxlanHeader,
            with_inner(header(0x08, [0; 3], SEGMENT_VNI, 1), &inner),
        ),
        (DropReason::BadVxlanHeader, vec![0x08, 0, 0, 0]),
        (DropReason::BadVxlanHeader, Vec::new()),
        (
            DropReason::Oversize,
            with_inner(good.clone(), &frame([0xff; 6], marker, 1600)),
        ),
        // A well-formed header with no frame, or less than an Ethernet header, behind it.
        (DropReason::Runt, good.clone()),
        (DropReason::Runt, with_inner(good.clone(), &inner[..10])),
    ];
    let socket = udp_socket_in(&fabric.hosts[1].name, &vtep(1));
    let target = format!("{}:4789", vtep(0));
    let at_a = Capture::open(&a.endpoints[0].ns.name, &a.endpoints[0].dev);
    let before = a.switch.snapshot();
    let mut expected = std::collections::HashMap::<DropReason, u64>::new();
    for (reason, datagram) in &cases {
        for _ in 0..3 {
            socket.send_to(datagram, &target).unwrap();
        }
        *expected.entry(*reason).or_default() += 3;
    }
    // Nothing else is affected: the segment still works meanwhile.
    assert_eq!(ping(&b.endpoint.ns.name, &a.endpoints[0].addr, 3, "0.2"), 3);
    let mut after = a.switch.snapshot();
    assert!(wait_for(Duration::from_secs(5), || {
        after = a.switch.snapshot();
        expected
            .iter()
            .all(|(&reason, &n)| after.dropped("vx0", reason) - before.dropped("vx0", reason) >= n)
    }));
    for (&reason, &n) in &expected {
        assert_eq!(
            after.dropped("vx0", reason) - before.dropped("vx0", reason),
            n,
            "{reason:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        frames_from(&at_a.drain(), marker),
        0,
        "no dropped datagram's frame reached A's endpoint"
    );
    // A good datagram from the same socket does: the port still reads.
    socket.send_to(&with_inner(good, &inner), &target).unwrap();
    assert_eq!(settled_count(&at_a, 1, |c| frames_from(c, marker)), 1);
}

#[test]
fn tapswitch_and_an_open_vswitch_vtep_share_a_segment_and_learn_both_ways() {
    require_root!();
    let fabric = Fabric::new(2);
    let a = TapswitchHost::start(&fabric, 0, &["192.168.81.11", "192.168.81.12"], &[1]);
    let b = OvsHost::start(&fabric, 1, "192.168.81.21", 0, SEGMENT_VNI);
    all_pairs_ping(&[&a.endpoints[0], &a.endpoints[1], &b.endpoint]);

    // tapswitch learned OVS's endpoint behind OVS's VTEP...
    let entry = a
        .entry(&b.endpoint.mac())
        .expect("the OVS endpoint's MAC learned");
    assert_eq!(entry.port, "vx0");
    assert_eq!(entry.remote.map(|ip| ip.to_string()), Some(vtep(1)));
    // ...and OVS learned ours on its vxlan port.
    let vx = b.vsctl(&["get", "interface", "vx", "ofport"]);
    let vx = vx.trim();
    let fdb = b.appctl(&["fdb/show", "brint"]);
    for endpoint in &a.endpoints {
        let mac = endpoint.mac();
        let line = fdb
            .lines()
            .find(|line| line.contains(&mac))
            .unwrap_or_else(|| panic!("OVS did not learn {mac}: {fdb}"));
        assert_eq!(
            line.split_whitespace().next(),
            Some(vx),
            "{mac} is not on OVS's vxlan port (ofport {vx}): {fdb}"
        );
    }
}

#[test]
fn a_frame_the_decision_drops_moves_no_remote_mac_and_one_it_learns_does() {
    require_root!();
    let fabric = Fabric::new(3);
    // Access ports of VLAN 1: a tagged frame arriving over the tunnel is not carried.
    let mut a = TapswitchHost::start_with(
        &fabric,
        0,
        &["192.168.79.11"],
        &[1],
        "vlan_mode = \"access\"\nvlan = 1\n",
    );
    let b = LinuxHost::start(&fabric, 1, "192.168.79.21", &[0]);
    all_pairs_ping(&[&a.endpoints[0], &b.endpoint]);
    let mac_b = b.endpoint.mac();
    let remote_of_b = |a: &TapswitchHost| {
        a.entry(&mac_b)
            .and_then(|entry| entry.remote)
            .map(|ip| ip.to_string())
    };
    assert_eq!(remote_of_b(&a), Some(vtep(1)));

    // Host 2, a VTEP nobody configured, speaks for B's MAC in frames the decision drops
    // before learning: tagged with a VLAN vx0 does not carry.
    let mut vxlan = vec![0x08, 0, 0, 0];
    vxlan.extend_from_slice(&(SEGMENT_VNI << 8).to_be_bytes());
    let untagged = frame([0xff; 6], mac_bytes(&mac_b), 60);
    let mut tagged = untagged[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 30]);
    tagged.extend_from_slice(&untagged[12..]);
    let socket = udp_socket_in(&fabric.hosts[2].name, &vtep(2));
    let target = format!("{}:4789", vtep(0));
    let mut before = a.switch.snapshot();
    let dropped = |snapshot: &tapswitch::dataplane::Snapshot| {
        snapshot.dropped("vx0", DropReason::VlanNotAllowed)
    };
    for _ in 0..3 {
        socket
            .send_to(&[&vxlan[..], &tagged].concat(), &target)
            .unwrap();
    }
    assert!(wait_for(Duration::from_secs(5), || dropped(
        &a.switch.snapshot()
    ) >= dropped(&before)
        + 3));
    assert_eq!(
        remote_of_b(&a),
        Some(vtep(1)),
        "a dropped frame moved B's MAC to the VTEP it came from"
    );
    assert_eq!(ping(&a.endpoints[0].ns.name, &b.endpoint.addr, 2, "0.2"), 2);

    // The same MAC in a frame the decision learns does move (B's own traffic would move it
    // back: the exchange above is over, and ARP is cached).
    before = a.switch.snapshot();
    socket
        .send_to(&[&vxlan[..], &untagged].concat(), &target)
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || remote_of_b(&a) == Some(vtep(2))),
        "a learned frame did not move B's MAC: {:?}",
        remote_of_b(&a)
    );
    assert_eq!(dropped(&a.switch.snapshot()), dropped(&before));
}

#[test]
fn a_vxlan_trunk_carries_two_vlans_in_two_vnis_to_linux_vteps_and_drops_an_unmapped_vni() {
    require_root!();
    let fabric = Fabric::new(2);
    // vx0 maps VLAN 100 to VNI 5000 and VLAN 200 to VNI 5001 (a trunk of exactly those:
    // derived, not written); the endpoints are access ports of the two VLANs. Host 1 has a
    // Linux VTEP per VNI, each in a bridge of its own. One subnet, so only the VLANs (and
    // VNIs) keep the two segments apart.
    let access = |vlan: u16| format!("vlan_mode = \"access\"\nvlan = {vlan}\n");
    let (access100, access200) = (access(100), access(200));
    let mut a = TapswitchHost::start_keyed(
        &fabric,
        0,
        &[("192.168.80.11", &access100), ("192.168.80.12", &access200)],
        &[1],
        "vlan_vni = { 100 = 5000, 200 = 5001 }\n",
    );
    let l5000 = LinuxHost::start_vni(&fabric, 1, "192.168.80.21", &[0], 5000, "vx5000");
    let l5001 = LinuxHost::start_vni(&fabric, 1, "192.168.80.22", &[0], 5001, "vx5001");
    let (e100, e200) = (&a.endpoints[0], &a.endpoints[1]);
    all_pairs_ping(&[e100, &l5000.endpoint]);
    all_pairs_ping(&[e200, &l5001.endpoint]);
    for (from, to) in [
        (e100, &l5001.endpoint),
        (e200, &l5000.endpoint),
        (e100, e200),
        (&l5000.endpoint, &l5001.endpoint),
    ] {
        assert_eq!(
            ping(&from.ns.name, &to.addr, 2, "0.2"),
            0,
            "{} reached {} across segments",
            from.addr,
            to.addr
        );
    }

    // Learned both ways, each MAC in its own VLAN (here) and VNI's device (there).
    for (endpoint, vlan) in [(&l5000.endpoint, 100), (&l5001.endpoint, 200)] {
        let entry = a
            .entry(&endpoint.mac())
            .expect("the Linux endpoint's MAC learned");
        assert_eq!(
            (entry.port.as_str(), entry.vlan),
            ("vx0", vlan),
            "{entry:?}"
        );
        assert_eq!(entry.remote.map(|ip| ip.to_string()), Some(vtep(1)));
    }
    for (dev, endpoint, other) in [("vx5000", e100, e200), ("vx5001", e200, e100)] {
        let (ok, out) = exec_in(
            &fabric.hosts[1].name,
            &["bridge", "fdb", "show", "dev", dev],
        );
        assert!(ok);
        let line = out
            .lines()
            .find(|line| line.starts_with(&endpoint.mac()) && line.contains(" dst "))
            .unwrap_or_else(|| panic!("{dev} did not learn {}: {out}", endpoint.mac()));
        assert!(line.contains(&format!("dst {}", vtep(0))), "{line}");
        assert!(
            !out.contains(&other.mac()),
            "{dev} learned the other VLAN's MAC: {out}"
        );
    }

    // A VNI the trunk does not map: counted, dropped, nothing else affected.
    let mut vxlan = vec![0x08, 0, 0, 0];
    vxlan.extend_from_slice(&(5002u32 << 8).to_be_bytes());
    let marker = [0x02, 0x80, 0, 0, 0, 9];
    let datagram = [&vxlan[..], &frame([0xff; 6], marker, 60)].concat();
    let socket = udp_socket_in(&fabric.hosts[1].name, &vtep(1));
    let captures = [
        Capture::open(&e100.ns.name, &e100.dev),
        Capture::open(&e200.ns.name, &e200.dev),
    ];
    let before = a.switch.snapshot().dropped("vx0", DropReason::UnknownVni);
    for _ in 0..3 {
        socket
            .send_to(&datagram, format!("{}:4789", vtep(0)))
            .unwrap();
    }
    assert!(wait_for(Duration::from_secs(5), || {
        a.switch.snapshot().dropped("vx0", DropReason::UnknownVni) >= before + 3
    }));
    assert_eq!(
        a.switch.snapshot().dropped("vx0", DropReason::UnknownVni),
        before + 3
    );
    assert_eq!(ping(&e100.ns.name, &l5000.endpoint.addr, 2, "0.2"), 2);
    for capture in &captures {
        assert_eq!(frames_from(&capture.drain(), marker), 0);
    }
}

#[test]
fn a_vxlan_trunk_map_is_refused_precisely_where_it_does_not_fit() {
    let dir = TempDir::new("tsvxc");
    let path = dir.path.join("switch.toml");
    let cases = [
        ("vlan_vni = {}", "port[0].vlan_vni", "is empty"),
        (
            "vlan_vni = { x = 5000 }",
            "port[0].vlan_vni",
            "\"x\" is not a VLAN",
        ),
        (
            "vlan_vni = { 4095 = 5000 }",
            "port[0].vlan_vni",
            "VLAN 4095 is outside",
        ),
        (
            "vlan_vni = { 100 = 16777216 }",
            "port[0].vlan_vni",
            "VNI 16777216 is outside",
        ),
        (
            "vlan_vni = { 100 = 5000, 200 = 5000 }",
            "port[0].vlan_vni",
            "VLANs 100 and 200 both map to VNI 5000",
        ),
        (
            "vni = 7\nvlan_vni = { 100 = 5000 }",
            "port[0].vlan_vni",
            "not both",
        ),
        (
            "vlan_vni = { 100 = 5000 }\nvlan_mode = \"access\"\nvlan = 100",
            "port[0].vlan_mode",
            "trunk of its mapped VLANs (100)",
        ),
        (
            "vlan_vni = { 100 = 5000 }\nvlan_mode = \"trunk\"\nallowed_vlans = [100]\nnative_vlan = 100",
            "port[0].native_vlan",
            "no native VLAN",
        ),
        (
            "vlan_vni = { 100 = 5000, 200 = 5001 }\nvlan_mode = \"trunk\"\nallowed_vlans = [100]",
            "port[0].allowed_vlans",
            "leaves out VLAN 200, which vlan_vni maps to VNI 5001",
        ),
        (
            "vlan_vni = { 100 = 5000 }\nvlan_mode = \"trunk\"\nallowed_vlans = [\"100-101\"]",
            "port[0].allowed_vlans",
            "has VLAN 101, which vlan_vni does not map",
        ),
    ];
    for (keys, key, reason) in cases {
        std::fs::write(
            &path,
            format!(
                "[[port]]\nname = \"vx0\"\nkind = \"vxlan\"\nlocal = \"10.80.0.1\"\n\
                 remotes = [\"10.80.0.2\"]\n{keys}\n"
            ),
        )
        .unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tapswitch"))
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{keys}: accepted");
        assert!(
            stderr.contains(key) && stderr.contains(reason),
            "{keys}: expected {key}: ...{reason}..., got {stderr}"
        );
    }
    // And the command line's form is the file's.
    let (ok, _, stderr) = cli(&[
        "port",
        "add",
        "vx0",
        "--vxlan",
        "100=5000,5001",
        "--local",
        "10.80.0.1",
        "--remote",
        "10.80.0.2",
    ]);
    assert!(
        !ok && stderr.contains("\"5001\" is not VLAN=VNI"),
        "{stderr}"
    );
    let (ok, _, stderr) = cli(&[
        "port",
        "add",
        "vx0",
        "--vxlan",
        "0=5000",
        "--local",
        "10.80.0.1",
        "--remote",
        "10.80.0.2",
    ]);
    assert!(
        !ok && stderr.contains("is not a VLAN (1..=4094)"),
        "{stderr}"
    );
}

/// The `tapswitch` command with `args`, no switch needed (argument errors).
fn cli(args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tapswitch"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------
// Netdev uplinks: two tapswitch "hosts" whose `kind = "netdev"` trunk ports sit on the two
// ends of a veth (the cable between them) carry an access VLAN and a trunk VLAN.

/// A switch whose uplink `up0` is veth end `uplink` in `uplink_ns` (a trunk of VLANs 10, 20,
/// 30), with TAP endpoints: `a10` access VLAN 10, `a30` access VLAN 30, `t20` a trunk of VLAN
/// 20 (its endpoint sends and reads tagged frames raw).
struct UplinkedHost {
    switch: Switch,
    access10: Endpoint,
    access30: Endpoint,
    trunk20: Endpoint,
    _dir: TempDir,
}

impl UplinkedHost {
    fn start(side: &str, uplink_ns: &Netns, uplink: &str, host: u8) -> Self {
        let (ns10, ns30, ns20) = (Netns::new(), Netns::new(), Netns::new());
        let (a10, a30, t20) = (
            format!("{side}a10"),
            format!("{side}a30"),
            format!("{side}t20"),
        );
        let config = format!(
            "[[port]]\nname = \"up0\"\nkind = \"netdev\"\ndevice = \"{uplink}\"\nnetns = \"{}\"\n\
             vlan_mode = \"trunk\"\nallowed_vlans = [10, 20, 30]\n\n\
             [[port]]\nname = \"{a10}\"\nnetns = \"{}\"\nvlan_mode = \"access\"\nvlan = 10\n\n\
             [[port]]\nname = \"{a30}\"\nnetns = \"{}\"\nvlan_mode = \"access\"\nvlan = 30\n\n\
             [[port]]\nname = \"{t20}\"\nnetns = \"{}\"\nvlan_mode = \"trunk\"\nallowed_vlans = [20]\n",
            uplink_ns.name, ns10.name, ns30.name, ns20.name
        );
        let dir = TempDir::new("tsup");
        let path = dir.path.join("switch.toml");
        std::fs::write(&path, config).unwrap();
        let switch = Switch::start(&["--config", path.to_str().unwrap()]);
        let access10 = Endpoint {
            ns: ns10,
            dev: a10,
            addr: format!("192.168.80.{host}"),
        };
        // On VLAN 30 but in VLAN 10's subnet: it must still not hear VLAN 10.
        let access30 = Endpoint {
            ns: ns30,
            dev: a30,
            addr: format!("192.168.80.{}", host + 100),
        };
        for endpoint in [&access10, &access30] {
            endpoint.address(&endpoint.addr);
        }
        // This kernel has no 802.1Q devices: the trunk endpoint sends and reads tagged
        // frames raw.
        sh("ip", &["-n", &ns20.name, "link", "set", &t20, "up"]);
        let trunk20 = Endpoint {
            ns: ns20,
            dev: t20,
            addr: String::new(),
        };
        Self {
            switch,
            access10,
            access30,
            trunk20,
            _dir: dir,
        }
    }
}

#[test]
fn netdev_uplinks_on_a_veth_carry_access_and_trunk_vlans_between_two_switches() {
    require_root!();
    let (left_ns, right_ns) = (Netns::new(), Netns::new());
    let (left, right) = (unique("upl"), unique("upr"));
    sh(
        "ip",
        &[
            "link",
            "add",
            &left,
            "netns",
            &left_ns.name,
            "type",
            "veth",
            "peer",
            "name",
            &right,
            "netns",
            &right_ns.name,
        ],
    );
    sh("ip", &["-n", &left_ns.name, "link", "set", &left, "up"]);
    sh("ip", &["-n", &right_ns.name, "link", "set", &right, "up"]);
    let a = UplinkedHost::start("l", &left_ns, &left, 1);
    let b = UplinkedHost::start("r", &right_ns, &right, 2);
    let cable = Capture::open(&right_ns.name, &right);

    all_pairs_ping(&[&a.access10, &b.access10]);
    all_pairs_ping(&[&a.access30, &b.access30]);
    // Frames tagged 20 from the left trunk endpoint reach the right one tagged 20, and no
    // access endpoint; then the answer comes back as unicast to the learned MAC.
    let (left_mac, right_mac) = ([0x02, 0x80, 0, 0, 0, 1], [0x02, 0x80, 0, 0, 0, 2]);
    let right_trunk = Capture::open(&b.trunk20.ns.name, &b.trunk20.dev);
    let right_access: Vec<Capture> = [&b.access10, &b.access30]
        .iter()
        .map(|e| Capture::open(&e.ns.name, &e.dev))
        .collect();
    let tagged = |dst, src, vid| {
        let mut frame = frame(dst, src, 64);
        frame.splice(12..12, [0x81, 0x00, 0x00, vid]);
        frame
    };
    let broadcasts: Vec<Vec<u8>> = (0..10).map(|_| tagged([0xff; 6], left_mac, 20)).collect();
    send_raw(&a.trunk20.ns.name, &a.trunk20.dev, &broadcasts);
    let count_tagged = |src: [u8; 6], vid: u16| {
        move |c: &[Captured]| {
            c.iter()
                .filter(|c| c.src() == src && c.vlan == Some(vid))
                .count()
        }
    };
    assert_eq!(
        settled_count(&right_trunk, 10, count_tagged(left_mac, 20)),
        10
    );
    for capture in &right_access {
        assert_eq!(frames_from(&capture.drain(), left_mac), 0, "VLAN 20 leaked");
    }
    let left_trunk = Capture::open(&a.trunk20.ns.name, &a.trunk20.dev);
    let replies: Vec<Vec<u8>> = (0..10).map(|_| tagged(left_mac, right_mac, 20)).collect();
    send_raw(&b.trunk20.ns.name, &b.trunk20.dev, &replies);
    assert_eq!(
        settled_count(&left_trunk, 10, count_tagged(right_mac, 20)),
        10
    );
    // A VLAN the trunk endpoints do not carry (10) is dropped at the trunk port.
    let wrong: Vec<Vec<u8>> = (0..5).map(|_| tagged([0xff; 6], left_mac, 10)).collect();
    send_raw(&a.trunk20.ns.name, &a.trunk20.dev, &wrong);
    std::thread::sleep(Duration::from_millis(300));
    for capture in &right_access {
        assert_eq!(
            frames_from(&capture.drain(), left_mac),
            0,
            "VLAN 10 from a trunk of 20"
        );
    }

    // Each VLAN crossed the cable tagged with its VID.
    let seen = cable.drain();
    let cable_macs = [
        (mac_bytes(&a.access10.mac()), 10),
        (left_mac, 20),
        (mac_bytes(&a.access30.mac()), 30),
    ];
    for (mac, vid) in cable_macs {
        assert!(
            seen.iter().any(|c| c.src() == mac && c.vlan == Some(vid)),
            "no frame of {mac:02x?} tagged {vid} on the cable"
        );
        assert!(
            !seen.iter().any(|c| c.src() == mac && c.vlan != Some(vid)),
            "a frame of {mac:02x?} crossed the cable without VID {vid}"
        );
    }
    // Across the VLANs nothing passes, neither locally nor over the uplink.
    for (from, to) in [
        (&a.access10, &b.access30),
        (&a.access30, &b.access10),
        (&a.access10, &a.access30),
    ] {
        assert_eq!(
            ping(&from.ns.name, &to.addr, 2, "0.2"),
            0,
            "{} reached {}",
            from.addr,
            to.addr
        );
    }
    // Learned on the uplinks, per VLAN.
    let fdb = a.switch.fdb();
    let b10 = b.access10.mac();
    assert!(
        fdb.entries
            .iter()
            .any(|e| e.mac.to_string() == b10 && e.port == "up0" && e.vlan == 10),
        "{b10} not learned on up0 in VLAN 10: {fdb:?}"
    );
}
