//! The command line as a script and a new user meet it (issue 13, item 7): exit
//! statuses, JSON errors and layout, `TAPSWITCH_CONTROL`, idempotent add/del, what
//! changing commands say, `port show`/`port list` with the netdev's facts, `stats`
//! timestamps and byte counts as the kernel's, events for netdev changes and the end of
//! the switch, `check-config --json`, `--queues` without `--vm`, `demo --prefix`.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use common::*;
use tapswitch::config::Config;
use tapswitch::control::protocol::{PortVlanMode, StreamEvent};
use tapswitch::control::{PortReply, Stats};

/// Runs `tapswitch ARGS` with no `--control` added, `env` set.
fn tapswitch(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tapswitch"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("running tapswitch")
}

/// Runs `tapswitch ARGS --control <switch>`, returning the whole output.
fn ctl_output(switch: &Switch, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tapswitch"))
        .args(args)
        .arg("--control")
        .arg(&switch.control)
        .output()
        .expect("running tapswitch")
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The JSON error document a failed `--json` command printed.
fn json_error(output: &Output) -> Value {
    let text = stdout_of(output);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not a JSON error: {e}: {text:?}"))
}

/// `ip -j link show dev DEV` in `netns`: the one object.
fn ip_link(netns: &str, dev: &str) -> Value {
    let json = sh("ip", &["-n", netns, "-s", "-j", "link", "show", "dev", dev]);
    let mut value: Value = serde_json::from_str(&json).expect("ip -j output is JSON");
    value[0].take()
}

#[test]
fn refusals_and_unreachable_switches_have_their_own_exit_status_and_json_errors() {
    // No switch: "cannot reach the switch", 4, also as JSON.
    let dir = TempDir::new("tscli");
    let nowhere = dir.path.join("nobody.sock");
    let nowhere = nowhere.to_str().expect("UTF-8 temp path");
    let output = tapswitch(&["port", "list", "--json", "--control", nowhere], &[]);
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    let error = json_error(&output);
    assert_eq!(error["code"], "unreachable", "{error}");
    assert_eq!(error["exit_status"], 4, "{error}");
    assert!(
        error["error"].as_str().is_some_and(|e| e.contains(nowhere)),
        "{error}"
    );
    // Without --json: the message on stderr, stdout empty.
    let output = tapswitch(&["stats", "--control", nowhere], &[]);
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");

    // --help names the statuses; a bad command line is clap's 2.
    let help = stdout_of(&tapswitch(&["--help"], &[]));
    assert!(
        help.contains("Exit status") && help.contains("3 the switch refused"),
        "{help}"
    );
    assert_eq!(tapswitch(&["no-such-command"], &[]).status.code(), Some(2));

    require_root!();
    let bed = Bed::new(1);
    // A refusal: 3, with the switch's own code.
    let output = ctl_output(&bed.switch, &["port", "del", "nosuch", "--json"]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let error = json_error(&output);
    assert_eq!(error["code"], "not_found", "{error}");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("nosuch")),
        "{error}"
    );
    let output = ctl_output(&bed.switch, &["port", "set", "p0", "--mtu", "12", "--json"]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert_eq!(json_error(&output)["code"], "invalid_value");
    // A bad local file is neither: 1.
    let output = ctl_output(
        &bed.switch,
        &["check-config", "/nonexistent.toml", "--json"],
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(json_error(&output)["code"], "failed");
}

#[test]
fn json_is_compact_by_default_and_indented_with_pretty_and_the_control_socket_comes_from_the_environment()
 {
    require_root!();
    let bed = Bed::new(2);
    let control = bed.switch.control.to_str().expect("UTF-8 temp path");
    let environment = [("TAPSWITCH_CONTROL", control)];
    // No --control: TAPSWITCH_CONTROL says where.
    let compact = tapswitch(&["port", "list", "--json"], &environment);
    assert!(compact.status.success(), "{compact:?}");
    let compact = stdout_of(&compact);
    assert_eq!(compact.lines().count(), 1, "{compact}");
    let pretty = tapswitch(&["port", "list", "--pretty"], &environment);
    assert!(pretty.status.success(), "{pretty:?}");
    let pretty = stdout_of(&pretty);
    assert!(pretty.lines().count() > 10, "{pretty}");
    let compact: Value = serde_json::from_str(&compact).unwrap();
    let pretty: Value = serde_json::from_str(&pretty).unwrap();
    assert_eq!(compact, pretty);
    assert_eq!(
        names(&serde_json::from_value(compact).unwrap()),
        ["p0", "p1"]
    );
    // --control still wins over the environment.
    let elsewhere = [("TAPSWITCH_CONTROL", "/nonexistent/tapswitch.sock")];
    let output = Command::new(env!("CARGO_BIN_EXE_tapswitch"))
        .args(["stats", "--json", "--control", control])
        .envs(elsewhere)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let output = tapswitch(&["stats", "--json"], &elsewhere);
    assert_eq!(output.status.code(), Some(4), "{output:?}");
}

#[test]
fn may_exist_and_if_exists_make_add_and_del_idempotent_and_changes_say_what_they_did() {
    require_root!();
    let bed = Bed::new(1);
    let extra = Netns::new();
    let name = unique("tsid");
    let spec = format!("{name}@{}", extra.name);

    let added: PortReply = bed.switch.ctl_as(&["port", "add", &spec]);
    assert_eq!(added.port.name, name);
    // Again: refused as existing, unless --may-exist.
    let output = ctl_output(&bed.switch, &["port", "add", &spec, "--json"]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert_eq!(json_error(&output)["code"], "already_exists");
    let again: PortReply = bed.switch.ctl_as(&["port", "add", &spec, "--may-exist"]);
    assert_eq!(again.port.id, added.port.id, "the port was left as it is");
    let (ok, text, stderr) = bed.switch.ctl(&["port", "add", &spec, "--may-exist"]);
    assert!(ok, "{stderr}");
    assert!(text.contains("exists already"), "{text}");
    // A name taken by something else than a port is still refused with --may-exist.
    let (ok, _, stderr) = bed.switch.ctl(&["port", "add", "lo", "--may-exist"]);
    assert!(!ok, "adding over lo succeeded");
    assert!(stderr.contains("lo"), "{stderr}");

    // fdb add and del say what they did; del --if-exists of nothing is success.
    let (ok, text, stderr) = bed.switch.ctl(&["fdb", "add", "02:00:00:00:00:99", &name]);
    assert!(ok, "{stderr}");
    assert_eq!(
        text,
        format!("added static entry 02:00:00:00:00:99 on VLAN 0 -> port {name}\n")
    );
    let (ok, text, stderr) = bed.switch.ctl(&["fdb", "del", "02:00:00:00:00:99"]);
    assert!(ok, "{stderr}");
    assert_eq!(text, "removed entry 02:00:00:00:00:99 on VLAN 0\n");
    let output = ctl_output(&bed.switch, &["fdb", "del", "02:00:00:00:00:99"]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let (ok, text, stderr) = bed
        .switch
        .ctl(&["fdb", "del", "02:00:00:00:00:99", "--if-exists"]);
    assert!(ok, "{stderr}");
    assert!(text.contains("nothing to remove"), "{text}");

    // port del says so; again only with --if-exists.
    let (ok, text, stderr) = bed.switch.ctl(&["port", "del", &name]);
    assert!(ok, "{stderr}");
    assert!(
        text.starts_with(&format!("deleted port {name} (id ")),
        "{text}"
    );
    let output = ctl_output(&bed.switch, &["port", "del", &name]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let output = ctl_output(
        &bed.switch,
        &["port", "del", &name, "--if-exists", "--json"],
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout_of(&output), "null\n");
    assert_eq!(names(&bed.switch.port_list()), ["p0"]);
}

#[test]
fn port_list_and_show_have_the_netdevs_mac_ifindex_carrier_and_vlan_mode() {
    require_root!();
    let bed = Bed::new(1);
    let extra = Netns::new();
    let name = unique("tssh");
    let spec = format!("{name}@{}", extra.name);
    let (ok, _, stderr) = bed.switch.ctl(&[
        "port",
        "add",
        &spec,
        "--mac",
        "02:11:22:33:44:55",
        "--txqueuelen",
        "777",
        "--vlan-mode",
        "access",
        "--vlan",
        "42",
    ]);
    assert!(ok, "{stderr}");
    let kernel = ip_link(&extra.name, &name);
    let list = bed.switch.port_list();
    let entry = list.iter().find(|p| p.name == name).expect("the port");
    let netdev = entry.netdev.as_ref().expect("the netdev's facts");
    assert_eq!(
        u64::from(netdev.ifindex),
        kernel["ifindex"].as_u64().unwrap()
    );
    assert_eq!(
        netdev.mac.map(|m| m.to_string()).as_deref(),
        kernel["address"].as_str()
    );
    assert_eq!(netdev.mac.unwrap().to_string(), "02:11:22:33:44:55");
    assert_eq!(netdev.txqueuelen, 777);
    assert_eq!(netdev.oper_state, kernel["operstate"].as_str().unwrap());
    let lower_up = kernel["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "LOWER_UP");
    assert_eq!(netdev.carrier, lower_up, "{kernel}");
    assert!(netdev.carrier, "the switch holds the TAP's fd: {kernel}");
    assert_eq!(entry.vlan.mode, PortVlanMode::Access);
    assert_eq!(entry.vlan.vlan, Some(42));
    let p0 = list.iter().find(|p| p.name == "p0").expect("p0");
    assert_eq!(p0.vlan.mode, PortVlanMode::None);
    // The table for people has the same facts.
    let (ok, table, stderr) = bed.switch.ctl(&["port", "list"]);
    assert!(ok, "{stderr}");
    assert!(table.lines().next().unwrap().contains("IFINDEX"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no row for {name}: {table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert!(
        cells.contains(&netdev.ifindex.to_string().as_str()),
        "{row}"
    );
    assert!(cells.contains(&"02:11:22:33:44:55"), "{row}");
    assert!(cells.contains(&"access:42"), "{row}");

    // port show: the same entry with counters; for people, one fact a line.
    let shown: Value = bed.switch.ctl_json(&["port", "show", &name]);
    assert_eq!(shown["netdev"]["ifindex"], kernel["ifindex"], "{shown}");
    assert_eq!(shown["vlan"]["mode"], "access", "{shown}");
    assert!(shown["counters"]["rx_frames"].is_u64(), "{shown}");
    let (ok, text, stderr) = bed.switch.ctl(&["port", "show", &name]);
    assert!(ok, "{stderr}");
    assert!(text.contains("mac 02:11:22:33:44:55"), "{text}");
    assert!(
        text.contains(&format!("ifindex {}", netdev.ifindex)),
        "{text}"
    );
    assert!(text.contains("access, vlan 42"), "{text}");
    let output = ctl_output(&bed.switch, &["port", "show", "nosuch", "--json"]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert_eq!(json_error(&output)["code"], "not_found");
}

#[test]
fn stats_are_stamped_and_count_bytes_as_ip_s_link_does() {
    require_root!();
    let bed = Bed::new(2);
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 5, "0.05"), 5);
    let stats: Stats = bed.switch.stats();
    let (time, started, uptime) = (
        stats.time.expect("time"),
        stats.started_at.expect("started_at"),
        stats.uptime_secs.expect("uptime_secs"),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(started <= time && time <= now + 1.0, "{stats:?}");
    assert!((uptime - (time - started)).abs() < 0.01, "{stats:?}");
    // The switch reads what the netdev sent and writes what it receives: with the
    // vnet header left out, the byte counts are the kernel's. Nothing else runs in
    // these namespaces (IPv6 off), and the counters are read with no traffic.
    for (i, port) in ["p0", "p1"].iter().enumerate() {
        let kernel = ip_link(bed.ns(i), port);
        let switch = stats.counters_of(port);
        assert_eq!(
            switch.rx_bytes,
            kernel["stats64"]["tx"]["bytes"].as_u64().unwrap(),
            "{port}: {kernel}"
        );
        assert_eq!(
            switch.tx_bytes,
            kernel["stats64"]["rx"]["bytes"].as_u64().unwrap(),
            "{port}: {kernel}"
        );
    }
    let (ok, text, stderr) = bed.switch.ctl(&["stats"]);
    assert!(ok, "{stderr}");
    assert!(
        text.starts_with("at ") && text.contains(" UTC, up "),
        "{text}"
    );
}

#[test]
fn a_removed_port_is_listed_with_its_time() {
    require_root!();
    let bed = Bed::new(1);
    let extra = Netns::new();
    let name = unique("tsrm");
    let (ok, _, stderr) = bed
        .switch
        .ctl(&["port", "add", &format!("{name}@{}", extra.name)]);
    assert!(ok, "{stderr}");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // The TAP goes away under the switch: the port is removed after its I/O error.
    sh("ip", &["-n", &extra.name, "link", "del", &name]);
    let removed = wait_for(Duration::from_secs(10), || {
        bed.switch
            .stats()
            .removed_ports
            .iter()
            .any(|p| p.name == name)
    });
    assert!(removed, "{name} never showed as removed");
    let stats = bed.switch.stats();
    let gone = stats.removed_ports.iter().find(|p| p.name == name).unwrap();
    let at = gone.removed_at.expect("a removal time");
    assert!(at >= before - 1.0 && at <= stats.time.unwrap(), "{gone:?}");
    let (ok, text, stderr) = bed.switch.ctl(&["stats"]);
    assert!(ok, "{stderr}");
    assert!(text.contains(" (removed at "), "{text}");
}

#[test]
fn events_report_mac_and_txqueuelen_changes_and_end_with_an_error_when_the_switch_goes() {
    require_root!();
    let bed = Bed::new(1);
    let mut events = EventsCommand::start(&bed.switch, true);
    // It subscribes after it starts: change until it has printed a line.
    let mut set = Vec::new();
    let mut seen = None;
    for i in 0..50u32 {
        let mac = format!("02:00:00:00:01:{:02x}", 0x10 + i);
        let txqueuelen = 900 + i;
        let (ok, _, stderr) = bed.switch.ctl(&[
            "port",
            "set",
            "p0",
            "--mac",
            &mac,
            "--txqueuelen",
            &txqueuelen.to_string(),
        ]);
        assert!(ok, "{stderr}");
        set.push((Some(mac), Some(txqueuelen)));
        if let Ok(line) = events.lines.recv_timeout(Duration::from_millis(200)) {
            seen = Some(line);
            break;
        }
    }
    let line = seen.expect("the events command printed nothing");
    let event: StreamEvent = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
    let tapswitch::control::protocol::Event::PortChanged { port, update, .. } = event.event else {
        panic!("not port_changed: {line}");
    };
    assert_eq!(port, "p0");
    // One of the changes made, both settings in the one event.
    let changed = (update.mac.map(|m| m.to_string()), update.txqueuelen);
    assert!(set.contains(&changed), "{line} is none of {set:?}");
    assert_eq!(
        link_mac(bed.ns(0), "p0"),
        set.last().unwrap().0.clone().unwrap()
    );

    // The switch stops: `events` ends, with the "cannot reach the switch" status.
    let Bed { switch, namespaces } = bed;
    assert!(switch.stop(), "the switch did not stop cleanly");
    let status = events
        .exit_status(Duration::from_secs(10))
        .expect("events still runs after the switch stopped");
    assert_eq!(status.code(), Some(4), "{status:?}");
    drop(namespaces);
}

#[test]
fn check_config_prints_json_too() {
    let dir = TempDir::new("tscc");
    let path = dir.path.join("switch.toml");
    std::fs::write(
        &path,
        "[switch]\nfdb_capacity = 1234\n\n[[port]]\nname = \"cc0\"\nvlan_mode = \"access\"\nvlan = 7\n",
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let output = tapswitch(&["check-config", path, "--json"], &[]);
    if !output.status.success() && !running_as_root() {
        // The host preflight wants root for TAPs: without it the check is refused.
        eprintln!("skipped: {}", String::from_utf8_lossy(&output.stderr));
        return;
    }
    assert!(output.status.success(), "{output:?}");
    let text = stdout_of(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    let from_json: Config = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let toml = tapswitch(&["check-config", path], &[]);
    assert!(toml.status.success(), "{toml:?}");
    let from_toml = Config::from_toml(&stdout_of(&toml), "check-config output").unwrap();
    assert_eq!(from_json, from_toml);
    assert_eq!(from_json.ports[0].name, "cc0");
}

#[test]
fn queues_without_vm_make_a_multi_queue_tap() {
    require_root!();
    let bed = Bed::new(1);
    let extra = Netns::new();
    let name = unique("tsmq");
    let (ok, _, stderr) = bed.switch.ctl(&[
        "port",
        "add",
        &format!("{name}@{}", extra.name),
        "--queues",
        "2",
    ]);
    assert!(ok, "{stderr}");
    let config = bed.switch.config();
    let port = config.ports.iter().find(|p| p.name == name).unwrap();
    assert_eq!(port.queues(), 2, "{port:?}");
    let details = sh(
        "ip",
        &["-n", &extra.name, "-d", "-j", "link", "show", "dev", &name],
    );
    let details: Value = serde_json::from_str(&details).unwrap();
    let tun = &details[0]["linkinfo"]["info_data"];
    assert_eq!(tun["multi_queue"], true, "{details}");
    assert_eq!(tun["numqueues"], 2, "{details}");
}

#[test]
fn demo_names_and_addresses_as_asked() {
    require_root!();
    let prefix = unique("tsdm");
    let output = tapswitch(
        &["demo", "--prefix", &prefix, "--network", "10.203.7.0"],
        &[],
    );
    let text = stdout_of(&output);
    assert!(output.status.success(), "{output:?}");
    for letter in ["a", "b", "c"] {
        assert!(text.contains(&format!("{prefix}-{letter}")), "{text}");
    }
    for host in 1..=3 {
        assert!(text.contains(&format!("10.203.7.{host}/24")), "{text}");
    }
    assert!(text.contains("all 6 pairs reachable"), "{text}");
    let left = sh("ip", &["netns", "list"]);
    assert!(!left.contains(&prefix), "the demo left namespaces: {left}");
}
