//! `tapswitch reload` and SIGHUP on a real switch: the config file read again and its
//! difference applied (ports added, VLANs changed, ports deleted), a bad file changing
//! nothing and saying where it is wrong, ports added at runtime kept, and forwarding
//! between the ports the file leaves alone going on throughout. Needs root.

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tapswitch::control::protocol::{PortKeysChanged, ReloadReply};

use common::*;

/// The file: ports `p0`, `p1` (untouched throughout) and `extra`, one `[[port]]` table per
/// (name, namespace, more keys).
fn write_config(path: &Path, ports: &[(&str, &str, &str)]) {
    let mut text = String::new();
    for (name, netns, more) in ports {
        text.push_str(&format!(
            "[[port]]\nname = \"{name}\"\nnetns = \"{netns}\"\n{more}\n\n"
        ));
    }
    std::fs::write(path, text).expect("writing the config file");
}

fn addr_add(netns: &str, dev: &str, i: usize) {
    let addr = format!("{}/24", Bed::addr(i));
    sh("ip", &["-n", netns, "addr", "add", &addr, "dev", dev]);
}

fn names_of(switch: &Switch) -> Vec<String> {
    let mut names = names(&switch.port_list());
    names.sort();
    names
}

fn wait_for_log(switch: &Switch, text: &str) {
    assert!(
        wait_for(Duration::from_secs(10), || switch.log().contains(text)),
        "no {text:?} in the log:\n{}",
        switch.log()
    );
}

#[test]
fn reload_applies_the_file_whole_or_not_at_all_and_forwarding_goes_on() {
    require_root!();
    let namespaces: Vec<Netns> = (0..4).map(|_| Netns::new()).collect();
    let ns = |i: usize| namespaces[i].name.as_str();
    let dir = TempDir::new("tsreload");
    let file = dir.path.join("switch.toml");
    let access = |vlan: u16| format!("vlan_mode = \"access\"\nvlan = {vlan}");
    let (vlan10, vlan20) = (access(10), access(20));
    let base = [("p0", ns(0), ""), ("p1", ns(1), ""), ("p2", ns(2), &vlan10)];
    write_config(&file, &base);
    let switch =
        Switch::start_capturing_log(&["--config", file.to_str().expect("UTF-8 temp path")]);
    for i in 0..3 {
        addr_add(ns(i), &format!("p{i}"), i);
    }
    assert_eq!(ping(ns(0), &Bed::addr(1), 2, "0.1"), 2);
    let ids_before: Vec<(String, u32)> = switch
        .port_list()
        .iter()
        .map(|p| (p.name.clone(), p.id.0))
        .collect();
    // A port added at runtime, not in the file: every reload keeps it.
    let runtime = unique("tsrt");
    let (ok, _, stderr) = switch.ctl(&["port", "add", &runtime]);
    assert!(ok, "port add {runtime}: {stderr}");
    let events = subscribe(&switch);
    // Frame by frame between the two ports the file never touches, for the whole test.
    let pinger = Pinger::start(ns(0), &Bed::addr(1), "0.05");

    // A port added to the file, then SIGHUP: it appears.
    let with_p3 = [base[0], base[1], base[2], ("p3", ns(3), &vlan20)];
    write_config(&file, &with_p3);
    switch.signal(libc::SIGHUP);
    let event = expect_event(
        &events,
        json!({"event": "config_reloaded", "trigger": "signal"}),
    );
    assert_eq!(event["added"], json!(["p3"]), "{event}");
    assert_eq!(event["kept"], json!([runtime]), "{event}");
    let mut wanted = vec!["p0", "p1", "p2", "p3", runtime.as_str()];
    wanted.sort();
    assert_eq!(names_of(&switch), wanted);
    addr_add(ns(3), "p3", 3);
    // p2 (VLAN 10) and p3 (VLAN 20) cannot reach each other yet.
    assert_eq!(ping(ns(2), &Bed::addr(3), 2, "0.1"), 0, "across VLANs");

    // p2 moved to VLAN 20 in the file, then `tapswitch reload`: applied, and the reply
    // says what changed.
    let p2_in_20 = [base[0], base[1], ("p2", ns(2), &vlan20), with_p3[3]];
    write_config(&file, &p2_in_20);
    let reply: ReloadReply = switch.ctl_as(&["reload"]);
    assert_eq!(
        reply,
        ReloadReply {
            file: file.clone(),
            added: vec![],
            removed: vec![],
            changed: vec![PortKeysChanged {
                port: "p2".into(),
                keys: vec!["vlan".into()],
            }],
            kept: vec![runtime.clone()],
        }
    );
    let p2 = switch.config().ports.into_iter().find(|p| p.name == "p2");
    assert_eq!(p2.and_then(|p| p.policy.vlan), Some(20));
    assert_eq!(
        ping(ns(2), &Bed::addr(3), 3, "0.1"),
        3,
        "p2 and p3 share VLAN 20"
    );
    // The same file again changes nothing, and says so.
    let (ok, stdout, stderr) = switch.ctl(&["reload"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("no changes"), "{stdout}");

    // A broken file: nothing changes, and the error says where.
    let good = std::fs::read_to_string(&file).unwrap();
    let broken_syntax = good.replacen("vlan = 20", "vlan = = 20", 1);
    let line = broken_syntax
        .lines()
        .position(|l| l.contains("= ="))
        .expect("the broken line")
        + 1;
    std::fs::write(&file, &broken_syntax).unwrap();
    let (ok, _, stderr) = switch.ctl(&["reload"]);
    assert!(!ok, "a broken file reloaded");
    assert!(stderr.contains(&format!("line {line}")), "{stderr}");
    expect_event(
        &events,
        json!({"event": "config_reload_failed", "trigger": "request"}),
    );
    // A bad value and a new port together: neither is applied, the key is named.
    let mut bad_value = p2_in_20.to_vec();
    bad_value[1] = ("p1", ns(1), "mtu = 10");
    bad_value.push(("p9", ns(3), ""));
    write_config(&file, &bad_value);
    let (ok, _, stderr) = switch.ctl(&["reload"]);
    assert!(!ok, "mtu = 10 reloaded");
    assert!(stderr.contains("port[1].mtu"), "{stderr}");
    // A key fixed at creation: refused by port and key, with what runs and what the file says.
    let mut moved = p2_in_20.to_vec();
    moved[2] = ("p2", ns(3), &vlan20);
    moved.push(("p9", ns(3), ""));
    write_config(&file, &moved);
    let (ok, _, stderr) = switch.ctl(&["reload"]);
    assert!(!ok, "a netns change reloaded");
    assert!(
        stderr.contains("port p2: netns: fixed at creation"),
        "{stderr}"
    );
    assert!(stderr.contains(ns(3)), "{stderr}");
    // A port that can be made, then one whose namespace does not exist: the first is
    // made, the second fails, and the first is deleted again.
    let missing = unique("tsnone");
    let mut half = p2_in_20.to_vec();
    half.push(("p9", ns(3), ""));
    half.push(("p8", &missing, ""));
    write_config(&file, &half);
    let (ok, _, stderr) = switch.ctl(&["reload"]);
    assert!(!ok, "a port in a missing namespace reloaded");
    assert!(
        stderr.contains("adding port p8") && stderr.contains(&missing),
        "{stderr}"
    );
    expect_event(&events, json!({"event": "port_added", "port": "p9"}));
    expect_event(&events, json!({"event": "port_removed", "port": "p9"}));
    // A switch-wide key: refused by name.
    std::fs::write(&file, format!("[switch]\nthreads = 2\n\n{good}")).unwrap();
    let (ok, _, stderr) = switch.ctl(&["reload"]);
    assert!(!ok, "a [switch] change reloaded");
    assert!(stderr.contains("switch.threads: cannot change"), "{stderr}");
    // SIGHUP with a broken file: logged, an event, nothing changes.
    std::fs::write(&file, &broken_syntax).unwrap();
    switch.signal(libc::SIGHUP);
    let event = expect_event(
        &events,
        json!({"event": "config_reload_failed", "trigger": "signal"}),
    );
    assert!(
        event["error"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("line {line}")),
        "{event}"
    );
    wait_for_log(&switch, "configuration not reloaded; nothing changed");
    assert_eq!(
        names_of(&switch),
        wanted,
        "a refused reload changed the ports"
    );
    let (p9_exists, _) = exec_in(ns(3), &["ip", "link", "show", "p9"]);
    assert!(!p9_exists, "p9 outlived the reloads that were refused");
    let p1 = switch.config().ports.into_iter().find(|p| p.name == "p1");
    assert_eq!(p1.map(|p| p.mtu), Some(1500));
    assert_eq!(
        ping(ns(2), &Bed::addr(3), 2, "0.1"),
        2,
        "p2 is still in VLAN 20"
    );

    // p3 taken out of the file: deleted; the runtime port stays.
    write_config(&file, &p2_in_20[..3]);
    switch.signal(libc::SIGHUP);
    let event = expect_event(
        &events,
        json!({"event": "config_reloaded", "trigger": "signal"}),
    );
    assert_eq!(event["removed"], json!(["p3"]), "{event}");
    let mut wanted = vec!["p0", "p1", "p2", runtime.as_str()];
    wanted.sort();
    assert_eq!(names_of(&switch), wanted);
    assert!(
        !sh("ip", &["-n", ns(3), "-j", "link", "show"]).contains("\"p3\""),
        "p3's TAP outlived its port"
    );

    // p0 and p1 were never touched: same ports (ids), and every ping went through.
    let (sent, received) = pinger.stop();
    assert!(sent >= 10, "only {sent} pings sent");
    // The last one may still be on its way when ping is interrupted.
    assert!(
        received + 1 >= sent,
        "{received} of {sent} pings between untouched ports came back"
    );
    let ids_after: Vec<(String, u32)> = switch
        .port_list()
        .iter()
        .filter(|p| p.name == "p0" || p.name == "p1")
        .map(|p| (p.name.clone(), p.id.0))
        .collect();
    let untouched: Vec<(String, u32)> = ids_before
        .into_iter()
        .filter(|(name, _)| name == "p0" || name == "p1")
        .collect();
    assert_eq!(ids_after, untouched, "p0 or p1 was recreated");
    drop(switch);
}

#[test]
fn a_switch_started_without_a_file_says_there_is_nothing_to_reload() {
    require_root!();
    let bed = Bed::with_starter(2, &[], Switch::start_capturing_log);
    let events = subscribe(&bed.switch);
    let (ok, _, stderr) = bed.switch.ctl(&["reload"]);
    assert!(!ok, "reload without a file succeeded");
    assert!(stderr.contains("without a config file"), "{stderr}");
    bed.switch.signal(libc::SIGHUP);
    expect_event(
        &events,
        json!({"event": "config_reload_failed", "trigger": "signal"}),
    );
    wait_for_log(&bed.switch, "without a config file");
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 3, "0.1"), 3);
}

#[test]
fn a_switch_that_took_over_by_upgrade_reloads_the_file_it_was_started_with() {
    require_root!();
    let namespaces: Vec<Netns> = (0..2).map(|_| Netns::new()).collect();
    let ns = |i: usize| namespaces[i].name.as_str();
    let dir = TempDir::new("tsreload");
    let file = dir.path.join("switch.toml");
    let base = [("p0", ns(0), ""), ("p1", ns(1), "")];
    write_config(&file, &base);
    let mut switch = Switch::start(&["--config", file.to_str().expect("UTF-8 temp path")]);
    let reply: tapswitch::control::protocol::HandedOver = switch.ctl_as(&["upgrade"]);
    let successor = Successor::new(reply.pid as i32);
    assert!(
        wait_for(Duration::from_secs(10), || switch.exited()),
        "the old switch did not exit"
    );
    // The new process knows the file (and the command line) from the handover.
    write_config(&file, &[base[0], ("p1", ns(1), "mtu = 1400")]);
    let reply: ReloadReply = switch.ctl_as(&["reload"]);
    assert_eq!(
        reply.changed,
        [PortKeysChanged {
            port: "p1".into(),
            keys: vec!["mtu".into()],
        }]
    );
    let mtu = sh("ip", &["-n", ns(1), "-j", "link", "show", "p1"]);
    assert!(mtu.contains("\"mtu\":1400"), "{mtu}");
    assert!(successor.stop(), "the new switch did not stop on SIGTERM");
}
