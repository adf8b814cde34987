//! Netdev ports: an `AF_PACKET` port on one end of a veth pair (namespace A) whose other
//! end is an endpoint (namespace B), switched with a TAP port's endpoint (namespace C).

mod common;

use std::time::Duration;

use common::*;

/// Namespaces A (the veth end the switch binds), B (the veth endpoint) and C (a TAP port).
struct VethBed {
    switch: Switch,
    veth: String,
    a: Netns,
    b: Netns,
    c: Netns,
    _dir: TempDir,
}

impl VethBed {
    /// With `up0` on the veth in the config file.
    fn new() -> Self {
        Self::with(true)
    }

    /// With only the TAP port `tp0` when `configured_netdev` is false (up0 added at runtime).
    fn with(configured_netdev: bool) -> Self {
        let (a, b, c) = (Netns::new(), Netns::new(), Netns::new());
        let veth = unique("nda");
        let peer = unique("ndb");
        sh(
            "ip",
            &[
                "link", "add", &veth, "netns", &a.name, "type", "veth", "peer", "name", &peer,
                "netns", &b.name,
            ],
        );
        sh("ip", &["-n", &a.name, "link", "set", &veth, "up"]);
        sh(
            "ip",
            &["-n", &b.name, "addr", "add", "10.67.0.2/24", "dev", &peer],
        );
        sh("ip", &["-n", &b.name, "link", "set", &peer, "up"]);
        let dir = TempDir::new("tsnd");
        let config = dir.path.join("switch.toml");
        let netdev = if configured_netdev {
            format!(
                "[[port]]\nname = \"up0\"\nkind = \"netdev\"\ndevice = \"{veth}\"\nnetns = \"{}\"\n\n",
                a.name
            )
        } else {
            String::new()
        };
        std::fs::write(
            &config,
            format!("{netdev}[[port]]\nname = \"tp0\"\nnetns = \"{}\"\n", c.name),
        )
        .unwrap();
        let switch = Switch::start(&["--config", config.to_str().unwrap()]);
        sh(
            "ip",
            &["-n", &c.name, "addr", "add", "10.67.0.3/24", "dev", "tp0"],
        );
        sh("ip", &["-n", &c.name, "link", "set", "tp0", "up"]);
        Self {
            switch,
            veth,
            a,
            b,
            c,
            _dir: dir,
        }
    }
}

#[test]
fn a_veth_end_as_a_netdev_port_switches_with_a_tap_port_and_goes_with_its_device() {
    require_root!();
    let mut bed = VethBed::new();
    assert!(
        wait_for(Duration::from_secs(5), || ping(
            &bed.b.name,
            "10.67.0.3",
            1,
            "0.2"
        ) == 1),
        "the veth endpoint reaches the TAP endpoint"
    );
    assert_eq!(ping(&bed.b.name, "10.67.0.3", 3, "0.2"), 3);
    assert_eq!(ping(&bed.c.name, "10.67.0.2", 3, "0.2"), 3);
    // Large pings both ways (fragments at MTU 1500).
    assert_eq!(
        ping_with(&bed.c.name, "10.67.0.2", 2, "0.2", &["-s", "4000"]),
        2
    );

    let snapshot = bed.switch.snapshot();
    // The switch wrote frames to the veth and never read them back: everything it read
    // on up0 came from B (B's veth sent at least that much).
    let read = snapshot.counters_of("up0").rx_frames;
    let written = snapshot.counters_of("up0").tx_frames;
    let peer = sh(
        "ip",
        &["-n", &bed.b.name, "-j", "link", "show", "type", "veth"],
    );
    let peer: serde_json::Value = serde_json::from_str(&peer).unwrap();
    let peer = peer[0]["ifname"].as_str().unwrap().to_owned();
    let (b_rx, b_tx) = link_stats(&bed.b.name, &peer);
    assert!(written > 0 && read > 0, "{snapshot:?}");
    assert!(read <= b_tx, "read {read} on up0 but B sent only {b_tx}");
    assert!(
        b_rx >= written,
        "wrote {written} to up0 but B received {b_rx}"
    );
    // B's MAC is learned on the netdev port.
    let b_mac = link_mac(&bed.b.name, &peer);
    let fdb = &snapshot.fdb;
    assert!(
        fdb.iter().any(|e| e.mac.to_string() == b_mac),
        "{b_mac} not learned: {fdb:?}"
    );

    // TCP both ways; B's stack hands the veth TSO super-frames, which reach up0 with
    // their vnet header (frames far above the MTU on average) and pass to the TAP.
    // The server runs in this test's own namespace C: the port number cannot clash.
    let port = 5201;
    let _server = iperf3_server(&bed.c.name, port);
    let before = bed.switch.snapshot();
    let sent = iperf3_client(&bed.b.name, "10.67.0.3", port, &[]);
    let after = bed.switch.snapshot();
    assert!(sent > 10_000_000, "B -> C moved only {sent} bytes");
    let frames = after.counters_of("up0").rx_frames - before.counters_of("up0").rx_frames;
    let bytes = after.counters_of("up0").rx_bytes - before.counters_of("up0").rx_bytes;
    eprintln!(
        "TCP B -> C: {sent} bytes; {frames} frames of {} bytes on average read on up0",
        bytes / frames.max(1)
    );
    assert!(
        bytes / frames.max(1) > 2 * 1514,
        "no super-frames came in on up0"
    );
    let back = iperf3_client(&bed.b.name, "10.67.0.3", port, &["-R"]);
    assert!(back > 10_000_000, "C -> B moved only {back} bytes");
    eprintln!("TCP C -> B: {back} bytes");
    assert_eq!(
        bed.switch
            .snapshot()
            .dropped("up0", DropReason::BadVnetHeader),
        0
    );

    // The device set down: frames to it count link_down, the port stays and recovers.
    sh("ip", &["-n", &bed.a.name, "link", "set", &bed.veth, "down"]);
    assert!(
        wait_for(Duration::from_secs(5), || {
            ping(&bed.c.name, "10.67.0.2", 1, "0.2");
            bed.switch.snapshot().dropped("up0", DropReason::LinkDown) > 0
        }),
        "frames to a down netdev count link_down"
    );
    sh("ip", &["-n", &bed.a.name, "link", "set", &bed.veth, "up"]);
    assert!(
        wait_for(Duration::from_secs(10), || ping(
            &bed.c.name,
            "10.67.0.2",
            1,
            "0.2"
        ) == 1),
        "the netdev port forwards again once its device is up"
    );

    // The device deleted: the port goes, the TAP port stays.
    sh("ip", &["-n", &bed.a.name, "link", "del", &bed.veth]);
    assert!(
        wait_for(Duration::from_secs(5), || {
            let ports = names(&bed.switch.port_list());
            !ports.contains(&"up0".to_owned()) && ports.contains(&"tp0".to_owned())
        }),
        "up0 removed with its device"
    );
}

#[test]
fn a_netdev_port_added_at_runtime_forwards_and_its_removal_leaves_the_device() {
    require_root!();
    let bed = VethBed::with(false);
    let before = veth_state(&bed.a.name, &bed.veth);
    // After the privilege drop: the AF_PACKET socket needs the CAP_NET_RAW the switch kept.
    let (ok, _, stderr) = bed.switch.ctl(&[
        "port",
        "add",
        "up0",
        "--netdev",
        &bed.veth,
        "--netns",
        &bed.a.name,
    ]);
    assert!(ok, "port add --netdev: {stderr}");
    assert!(
        wait_for(Duration::from_secs(5), || ping(
            &bed.b.name,
            "10.67.0.3",
            1,
            "0.2"
        ) == 1),
        "the veth endpoint reaches the TAP endpoint through the runtime netdev port"
    );
    assert_eq!(ping(&bed.c.name, "10.67.0.2", 3, "0.2"), 3);
    let ports = names(&bed.switch.port_list());
    assert!(ports.contains(&"up0".to_owned()), "{ports:?}");

    // `port set --mtu` changes the switch's check only, never the device.
    let (ok, _, stderr) = bed.switch.ctl(&["port", "set", "up0", "--mtu", "1400"]);
    assert!(ok, "port set up0 --mtu: {stderr}");
    let (flags, mtu, _) = veth_state(&bed.a.name, &bed.veth);
    assert_eq!((flags, mtu), (before.0.clone(), before.1.clone()));

    let (ok, _, stderr) = bed.switch.ctl(&["port", "del", "up0"]);
    assert!(ok, "port del up0: {stderr}");
    let ports = names(&bed.switch.port_list());
    assert!(
        !ports.contains(&"up0".to_owned()) && ports.contains(&"tp0".to_owned()),
        "{ports:?}"
    );
    // The device is not the switch's: it stays, as it was (up, no promiscuous membership).
    assert_eq!(veth_state(&bed.a.name, &bed.veth), before);
    assert_eq!(
        ping(&bed.c.name, "10.67.0.2", 1, "0.2"),
        0,
        "up0 no longer forwards"
    );
}

#[test]
fn a_runtime_netdev_port_on_a_missing_device_is_refused_and_changes_nothing() {
    require_root!();
    let bed = VethBed::with(false);
    let ports = bed.switch.port_list();
    let (ok, _, stderr) = bed.switch.ctl(&[
        "port",
        "add",
        "up1",
        "--netdev",
        "nosuch0",
        "--netns",
        &bed.a.name,
    ]);
    assert!(!ok, "a netdev port on a missing device was added");
    assert!(
        stderr.contains("nosuch0") && stderr.contains(&bed.a.name),
        "{stderr}"
    );
    assert_eq!(bed.switch.port_list(), ports);
    let (_, links) = exec_in(&bed.a.name, &["ip", "-o", "link", "show"]);
    assert!(!links.contains("up1"), "{links}");
    // The options a netdev port cannot have are refused before anything is opened.
    let (ok, _, stderr) = bed.switch.ctl(&[
        "port",
        "add",
        "up1",
        "--netdev",
        &bed.veth,
        "--netns",
        &bed.a.name,
        "--mtu",
        "9000",
        "--txqueuelen",
        "5",
    ]);
    assert!(!ok && stderr.contains("txqueuelen"), "{stderr}");
    assert_eq!(bed.switch.port_list(), ports);
}

#[test]
fn doctor_finds_a_netdev_port_device_mtu_and_a_bridge_that_takes_its_frames() {
    require_root!();
    let bed = VethBed::new();
    let codes = |bed: &VethBed| -> Vec<(String, String, String)> {
        // doctor's report for people and scripts, not a protocol reply: read as JSON.
        let (_, stdout, stderr) = bed.switch.ctl(&["doctor", "--json"]);
        let report: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("doctor: {e}: {stdout} {stderr}"));
        report["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .filter(|f| f["port"] == "up0")
            .map(|f| {
                let text = |key: &str| f[key].as_str().unwrap_or_default().to_owned();
                (text("code"), text("what"), text("fix"))
            })
            .collect()
    };
    // A healthy netdev port: its device is read (not a link named up0), no TAP rules.
    assert_eq!(codes(&bed), [], "a healthy netdev port has no findings");

    let bridge = unique("ndbr");
    sh(
        "ip",
        &["-n", &bed.a.name, "link", "add", &bridge, "type", "bridge"],
    );
    sh(
        "ip",
        &[
            "-n",
            &bed.a.name,
            "link",
            "set",
            &bed.veth,
            "master",
            &bridge,
        ],
    );
    sh(
        "ip",
        &["-n", &bed.a.name, "link", "set", &bed.veth, "mtu", "1400"],
    );
    let found = codes(&bed);
    let (code, what, fix) = found
        .iter()
        .find(|(code, ..)| code == "netdev_device_mtu_differs")
        .unwrap_or_else(|| panic!("no MTU finding: {found:?}"));
    assert!(
        what.contains(&format!(
            "device {}'s MTU is 1400 but the port's mtu is 1500",
            bed.veth
        )),
        "{code}: {what}"
    );
    assert!(
        // The test's socket is not the default: the fix names it.
        fix.starts_with(&format!(
            "tapswitch --control {} port set up0 --mtu 1400",
            bed.switch.control.display()
        )),
        "{fix}"
    );
    let (_, what, fix) = found
        .iter()
        .find(|(code, ..)| code == "netdev_enslaved")
        .unwrap_or_else(|| panic!("no bridge finding: {found:?}"));
    assert!(what.contains(&format!("kernel bridge {bridge}")), "{what}");
    assert!(fix.contains("nomaster"), "{fix}");
    assert_eq!(found.len(), 2, "{found:?}");
}

/// Flags, MTU and promiscuity of `dev` in `netns`: what `port del` of a netdev port must
/// leave as it found it.
fn veth_state(netns: &str, dev: &str) -> (serde_json::Value, serde_json::Value, serde_json::Value) {
    let out = sh("ip", &["-n", netns, "-d", "-j", "link", "show", "dev", dev]);
    let link: serde_json::Value = serde_json::from_str(&out).unwrap();
    let link = &link[0];
    (
        link["flags"].clone(),
        link["mtu"].clone(),
        link["promiscuity"].clone(),
    )
}

#[test]
fn a_netdev_port_on_a_missing_device_is_refused_by_name() {
    require_root!();
    let a = Netns::new();
    let dir = TempDir::new("tsnd");
    let config = dir.path.join("switch.toml");
    std::fs::write(
        &config,
        format!(
            "[[port]]\nname = \"up0\"\nkind = \"netdev\"\ndevice = \"nosuch0\"\nnetns = \"{}\"\n",
            a.name
        ),
    )
    .unwrap();
    let control = dir.path.join("ctl.sock");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tapswitch"))
        .args([
            "run",
            "--control",
            control.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nosuch0") && stderr.contains("up0"),
        "{stderr}"
    );
}
