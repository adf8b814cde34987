//! A port's netdev under its tenant's control: set down and up, moved to another
//! namespace, or gone with its deleted namespace. The port survives what it can survive,
//! the switch says where the netdev is, and it never keeps a deleted namespace alive.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use common::*;
use tapswitch::control::PortListEntry;
use tapswitch::control::protocol::{HandedOver, LinkState};

/// The `port list` entry of port `name`.
fn listed(bed: &Bed, name: &str) -> PortListEntry {
    let ports = bed.switch.port_list();
    ports
        .iter()
        .find(|p| p.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no port {name} in {ports:?}"))
}

/// Whether port `to`'s endpoint answers a ping from port 0's within a few seconds (a link
/// that just came up may still be settling).
fn answers_soon(bed: &Bed, to: usize) -> bool {
    wait_for(Duration::from_secs(5), || {
        ping(bed.ns(0), &Bed::addr(to), 1, "0.2") == 1
    })
}

#[test]
fn a_port_whose_link_goes_down_is_kept_and_forwards_again_once_up() {
    require_root!();
    let mut bed = Bed::new(2);
    let events = subscribe(&bed.switch);
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 3, "0.2"), 3);

    sh("ip", &["-n", bed.ns(1), "link", "set", "dev", "p1", "down"]);
    // The neighbour entry is fresh: these are unicast frames the switch writes to p1.
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 3, "0.2"), 0);
    let snapshot = bed.switch.snapshot();
    assert!(
        snapshot.dropped("p1", DropReason::LinkDown) > 0,
        "frames to a down link are counted as link_down: {:?}",
        snapshot.port_named("p1")
    );
    assert_eq!(snapshot.dropped("p1", DropReason::TxError), 0);
    assert_eq!(snapshot.removed_ports, [], "no port was removed");
    expect_event(&events, json!({"event": "port_link_down", "port": "p1"}));
    assert_eq!(listed(&bed, "p1").link, LinkState::Down);

    sh("ip", &["-n", bed.ns(1), "link", "set", "dev", "p1", "up"]);
    expect_event(&events, json!({"event": "port_link_up", "port": "p1"}));
    assert!(
        answers_soon(&bed, 1),
        "no ping through p1 after it came up again"
    );
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 3, "0.2"), 3);
    assert_eq!(listed(&bed, "p1").link, LinkState::Up);
}

#[test]
fn a_netdev_moved_to_another_namespace_is_followed_there() {
    require_root!();
    let bed = Bed::new(2);
    let elsewhere = Netns::new();
    let events = subscribe(&bed.switch);

    sh(
        "ip",
        &[
            "-n",
            bed.ns(1),
            "link",
            "set",
            "dev",
            "p1",
            "netns",
            &elsewhere.name,
        ],
    );
    assert!(
        wait_for(Duration::from_secs(5), || listed(&bed, "p1").netns
            == Some(elsewhere.name.clone())),
        "port list does not follow p1 to {}: {:?}",
        elsewhere.name,
        listed(&bed, "p1")
    );
    expect_event(
        &events,
        json!({"event": "port_moved", "port": "p1", "netns": elsewhere.name}),
    );
    let p1 = listed(&bed, "p1");
    assert_eq!(p1.netns.as_deref(), Some(elsewhere.name.as_str()), "{p1:?}");
    assert_eq!(
        p1.link,
        LinkState::Down,
        "a move takes the link down: {p1:?}"
    );
    let config = bed.switch.config();
    let recorded = config
        .ports
        .iter()
        .find(|p| p.name == "p1")
        .cloned()
        .unwrap_or_else(|| panic!("no p1 in {config:?}"));
    assert_eq!(
        recorded.netns.as_deref(),
        Some(elsewhere.name.as_str()),
        "a saved config would recreate p1 where it is now: {recorded:?}"
    );

    let (ok, _, stderr) = bed.switch.ctl(&["port", "set", "p1", "--mtu", "1400"]);
    assert!(ok, "port set --mtu in the new namespace: {stderr}");
    let shown = sh(
        "ip",
        &["-n", &elsewhere.name, "-j", "link", "show", "dev", "p1"],
    );
    let shown: Value = serde_json::from_str(&shown).expect("ip -j output is JSON");
    assert_eq!(shown[0]["mtu"], 1400, "{shown}");

    let addr = format!("{}/24", Bed::addr(1));
    sh(
        "ip",
        &["-n", &elsewhere.name, "addr", "add", &addr, "dev", "p1"],
    );
    sh(
        "ip",
        &["-n", &elsewhere.name, "link", "set", "dev", "p1", "up"],
    );
    expect_event(&events, json!({"event": "port_link_up", "port": "p1"}));
    assert!(answers_soon(&bed, 1), "no ping to p1 in its new namespace");
    assert_eq!(ping(&elsewhere.name, &Bed::addr(0), 3, "0.2"), 3);
}

/// Whether anything of process `pid` (an fd, or a thread's namespace) is namespace `inode`.
fn holds_namespace(pid: i32, inode: u64) -> bool {
    let target = format!("net:[{inode}]");
    let mut links = Vec::new();
    for dir in [format!("/proc/{pid}/fd"), format!("/proc/{pid}/task")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if dir.ends_with("task") {
                links.push(entry.path().join("ns/net"));
            } else {
                links.push(entry.path());
            }
        }
    }
    links
        .iter()
        .filter_map(|link| std::fs::read_link(link).ok())
        .any(|to| to.to_string_lossy() == target)
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// A veth pair with one end in namespace `netns`; returns the name of the end out here,
/// which goes only when the namespace itself is destroyed, not when its name is unmounted.
fn witness_of(netns: &str) -> String {
    let witness = unique("tsw");
    sh(
        "ip",
        &[
            "link", "add", &witness, "type", "veth", "peer", "name", "inside", "netns", netns,
        ],
    );
    witness
}

#[test]
fn deleting_a_ports_namespace_deletes_it_and_removes_the_port() {
    require_root!();
    let bed = Bed::new(3);
    let events = subscribe(&bed.switch);
    let doomed = bed.ns(2).to_owned();
    let inode = std::fs::metadata(format!("/run/netns/{doomed}"))
        .expect("the namespace file")
        .ino();
    let witness = witness_of(&doomed);
    assert_eq!(ping(bed.ns(0), &Bed::addr(2), 2, "0.2"), 2);

    sh("ip", &["netns", "del", &doomed]);
    assert!(
        wait_for(Duration::from_secs(10), || !link_exists(&witness)),
        "namespace {doomed} lives on after ip netns del (its veth end {witness} is still here)"
    );
    let removed = expect_event(
        &events,
        json!({"event": "port_removed", "port": "p2", "cause": "namespace_deleted"}),
    );
    assert!(removed["time"].is_number(), "{removed}");
    assert!(
        !holds_namespace(bed.switch.pid(), inode),
        "the switch still refers to namespace net:[{inode}]"
    );
    let ports = bed.switch.port_list();
    assert_eq!(names(&ports), ["p0", "p1"], "{ports:?}");
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 3, "0.2"), 3);
}

/// A restarted switch attaches to a persistent TAP from inside its namespace (moving it out
/// and back would flush its addresses), so that TAP's fd holds the namespace: deleting the
/// namespace must still delete it, and remove the port.
#[test]
fn a_reattached_persistent_port_lets_its_deleted_namespace_go() {
    require_root!();
    let namespaces = [Netns::new(), Netns::new()];
    let config: String = namespaces
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            format!(
                "[[port]]\nname = \"p{i}\"\nnetns = \"{}\"\npersistent = true\n\n",
                ns.name
            )
        })
        .collect();
    let mut crashed = start_with_config(&config);
    crashed.signal(libc::SIGKILL);
    assert!(wait_for(Duration::from_secs(5), || crashed.exited()));
    let switch = start_with_config(&config);
    let events = subscribe(&switch);
    let doomed = &namespaces[1].name;
    let witness = witness_of(doomed);

    sh("ip", &["netns", "del", doomed]);
    assert!(
        wait_for(Duration::from_secs(10), || !link_exists(&witness)),
        "namespace {doomed} lives on after ip netns del (its veth end {witness} is still here)"
    );
    expect_event(
        &events,
        json!({"event": "port_removed", "port": "p1", "cause": "namespace_deleted"}),
    );
    assert_eq!(switch.port_list()[0].name, "p0", "the other port stays");
}

/// The link monitor listens to other namespaces thanks to a capability the upgraded
/// process no longer has: it is handed over with the ports.
#[test]
fn an_upgraded_switch_still_follows_its_ports_links() {
    require_root!();
    let mut bed = Bed::new(2);
    let reply: HandedOver = bed.switch.ctl_as(&["upgrade"]);
    let successor = Successor::new(reply.pid as i32);
    assert!(
        wait_for(Duration::from_secs(10), || bed.switch.exited()),
        "the old switch did not exit"
    );
    let events = subscribe(&bed.switch);
    sh("ip", &["-n", bed.ns(1), "link", "set", "dev", "p1", "down"]);
    expect_event(&events, json!({"event": "port_link_down", "port": "p1"}));
    sh("ip", &["-n", bed.ns(1), "link", "set", "dev", "p1", "up"]);
    expect_event(&events, json!({"event": "port_link_up", "port": "p1"}));
    assert!(successor.alive());
}

/// Without CAP_SYS_ADMIN (dropped after setup) the switch cannot enter a namespace it did
/// not know at startup: it still follows the netdev there, and `port set` says why it
/// cannot change it, changing nothing.
#[test]
fn a_switch_that_cannot_enter_the_new_namespace_says_so() {
    require_root!();
    let home = Netns::new();
    let elsewhere = Netns::new();
    let switch = start_with_config(&format!(
        "[switch]\nnetns_hotplug = false\n\n[[port]]\nname = \"p0\"\nnetns = \"{}\"\n",
        home.name
    ));
    sh(
        "ip",
        &[
            "-n",
            &home.name,
            "link",
            "set",
            "dev",
            "p0",
            "netns",
            &elsewhere.name,
        ],
    );
    let followed = wait_for(Duration::from_secs(5), || {
        switch.port_list()[0].netns == Some(elsewhere.name.clone())
    });
    assert!(followed, "{:?}", switch.port_list());
    let (ok, _, stderr) = switch.ctl(&["port", "set", "p0", "--mtu", "1400"]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("in namespace {}", elsewhere.name))
            && stderr.contains("CAP_SYS_ADMIN")
            && stderr.contains("netns_hotplug"),
        "{stderr}"
    );
    assert_eq!(switch.port_list()[0].mtu, 1500);
}
