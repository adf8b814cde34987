//! Remote MAC → VTEP entries programmed by hand (`fdb add MAC PORT --remote IP`): a TAP
//! port's endpoint (E1) switched over a vxlan port (sockets in H1) to a Linux vxlan device
//! with `nolearning` in H2, bridged to E2. Neither side learns its way or floods to the
//! other: the switch's flood list points at an address nobody answers, H2 has no flood
//! entry, and both endpoints know each other's MAC (static neighbours). Only the static
//! remote entries carry the traffic.

mod common;

use std::time::Duration;

use common::*;
use tapswitch::control::protocol::EntrySource;

const VNI: &str = "4343";
const H1_UNDERLAY: &str = "10.79.0.1";
const H2_UNDERLAY: &str = "10.79.0.2";
/// In the underlay's subnet, held by nobody: floods go there and are lost.
const NOBODY: &str = "10.79.0.99";
const E1_ADDR: &str = "192.168.79.1";
const E2_ADDR: &str = "192.168.79.2";
/// Fixed, so that H2's static entry for E1 stays right across the switch's restart.
const E1_MAC: &str = "02:79:00:00:00:01";

#[test]
fn static_remote_entries_alone_carry_traffic_to_a_nolearning_kernel_vtep() {
    require_root!();
    let (h1, h2, e1, e2) = (Netns::new(), Netns::new(), Netns::new(), Netns::new());
    let (under1, under2) = (unique("vru"), unique("vru"));
    sh(
        "ip",
        &[
            "link", "add", &under1, "netns", &h1.name, "type", "veth", "peer", "name", &under2,
            "netns", &h2.name,
        ],
    );
    for (ns, dev, addr) in [(&h1, &under1, H1_UNDERLAY), (&h2, &under2, H2_UNDERLAY)] {
        let cidr = format!("{addr}/24");
        sh("ip", &["-n", &ns.name, "addr", "add", &cidr, "dev", dev]);
        sh("ip", &["-n", &ns.name, "link", "set", dev, "up"]);
    }
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
            "nolearning",
        ],
    );
    let e2_dev = bridge_vxlan_to_endpoint(&h2.name, "vx", &e2.name, "vr");
    let e2_cidr = format!("{E2_ADDR}/24");
    sh(
        "ip",
        &["-n", &e2.name, "addr", "add", &e2_cidr, "dev", &e2_dev],
    );
    sh("ip", &["-n", &e2.name, "link", "set", &e2_dev, "up"]);

    let dir = TempDir::new("tsvr");
    let config = dir.path.join("switch.toml");
    std::fs::write(
        &config,
        format!(
            "[[port]]\nname = \"tp0\"\nnetns = \"{}\"\nmtu = 1450\nmac = \"{E1_MAC}\"\n\n\
             [[port]]\nname = \"vx0\"\nkind = \"vxlan\"\nvni = {VNI}\n\
             local = \"{H1_UNDERLAY}\"\nremotes = [\"{NOBODY}\"]\nnetns = \"{}\"\n",
            e1.name, h1.name
        ),
    )
    .unwrap();
    let state = dir.path.join("state");
    let start = || {
        let switch = Switch::start(&[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ]);
        let e1_cidr = format!("{E1_ADDR}/24");
        sh(
            "ip",
            &["-n", &e1.name, "addr", "add", &e1_cidr, "dev", "tp0"],
        );
        sh("ip", &["-n", &e1.name, "link", "set", "tp0", "up"]);
        switch
    };
    let switch = start();
    let (e1_mac, e2_mac) = (link_mac(&e1.name, "tp0"), link_mac(&e2.name, &e2_dev));
    assert_eq!(e1_mac, E1_MAC);
    let e1_knows_e2 = || {
        sh(
            "ip",
            &[
                "-n", &e1.name, "neigh", "add", E2_ADDR, "lladdr", &e2_mac, "dev", "tp0",
            ],
        )
    };
    e1_knows_e2();
    sh(
        "ip",
        &[
            "-n", &e2.name, "neigh", "add", E1_ADDR, "lladdr", &e1_mac, "dev", &e2_dev,
        ],
    );
    // Without any remote entry, nothing gets through: floods go nowhere.
    assert_eq!(ping(&e1.name, E2_ADDR, 2, "0.2"), 0, "no path yet");

    sh(
        "ip",
        &[
            "netns",
            "exec",
            &h2.name,
            "bridge",
            "fdb",
            "add",
            &e1_mac,
            "dev",
            "vx",
            "dst",
            H1_UNDERLAY,
            "static",
        ],
    );
    let (ok, _, err) = switch.ctl(&["fdb", "add", &e2_mac, "vx0", "--remote", H2_UNDERLAY]);
    assert!(ok, "{err}");
    // A remote VTEP on a port that is no tunnel is refused, saying why.
    let (ok, _, err) = switch.ctl(&[
        "fdb",
        "add",
        "02:00:00:00:00:09",
        "tp0",
        "--remote",
        H2_UNDERLAY,
    ]);
    assert!(!ok);
    assert!(
        err.contains("port tp0 is not a tunnel") && err.contains("vxlan"),
        "{err}"
    );

    assert!(
        wait_for(Duration::from_secs(5), || ping(&e1.name, E2_ADDR, 1, "0.2")
            == 1),
        "E1 reaches E2 through the static remote entry"
    );
    assert_eq!(ping(&e1.name, E2_ADDR, 3, "0.2"), 3);
    assert_eq!(ping(&e2.name, E1_ADDR, 3, "0.2"), 3);

    let fdb = switch.fdb();
    let entry = fdb
        .entries
        .iter()
        .find(|entry| entry.mac.to_string() == e2_mac)
        .unwrap_or_else(|| panic!("{e2_mac} missing: {fdb:?}"));
    assert_eq!(entry.port, "vx0", "{fdb:?}");
    assert_eq!(entry.source, EntrySource::Static, "{fdb:?}");
    assert_eq!(
        entry.remote.map(|ip| ip.to_string()).as_deref(),
        Some(H2_UNDERLAY),
        "{fdb:?}"
    );
    let local = fdb
        .entries
        .iter()
        .find(|entry| entry.mac.to_string() == e1_mac)
        .unwrap_or_else(|| panic!("{e1_mac} not learned: {fdb:?}"));
    assert_eq!(
        (local.port.as_str(), local.source),
        ("tp0", EntrySource::Learned)
    );

    // A restart restores the static entry with its VTEP from the state file.
    drop(switch);
    let switch = start();
    e1_knows_e2();
    assert!(
        wait_for(Duration::from_secs(5), || ping(&e1.name, E2_ADDR, 1, "0.2")
            == 1),
        "the restored static remote entry carries traffic: {:?}",
        switch.fdb()
    );
    let restored = switch.fdb();
    assert!(
        restored.entries.iter().any(|e| e.mac.to_string() == e2_mac
            && e.source == EntrySource::Static
            && e.remote.map(|ip| ip.to_string()).as_deref() == Some(H2_UNDERLAY)),
        "{restored:?}"
    );

    // Removing the entry removes the path (and the port's pin with it).
    let (ok, _, err) = switch.ctl(&["fdb", "del", &e2_mac]);
    assert!(ok, "{err}");
    assert_eq!(
        ping(&e1.name, E2_ADDR, 2, "0.2"),
        0,
        "the path went with the entry"
    );
    drop(switch);
}
