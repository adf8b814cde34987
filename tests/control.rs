//! The control plane end to end: a real `tapswitch run` with ports in real
//! namespaces, driven through its control socket (by the CLI and by raw JSON
//! lines) and scraped over HTTP. Needs root (CI runs as root).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::*;
use tapswitch::config::Config;
use tapswitch::control::protocol::FdbFlushed;
use tapswitch::control::{MAX_REQUEST_LEN, PortList, Stats};
use tapswitch::fdb::EntryKind;
use tapswitch::policy::ViolationAction;

/// A raw connection speaking JSON lines, for requests the CLI never sends. Its replies
/// stay JSON: these tests check the wire itself (`ok`, `error`, `result`).
struct Raw {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Raw {
    fn connect(switch: &Switch) -> Self {
        let stream = UnixStream::connect(&switch.control).expect("connecting");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Self { stream, reader }
    }

    fn send(&mut self, bytes: &[u8]) -> Value {
        self.stream.write_all(bytes).expect("sending");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a reply line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?}: {e}"))
    }

    /// Sends `request` and expects an error reply containing `expected`.
    fn refused(&mut self, request: &str, expected: &str) {
        let reply = self.send(format!("{request}\n").as_bytes());
        assert_eq!(reply["ok"], false, "{request} was accepted: {reply}");
        let error = reply["error"].as_str().expect("an error message");
        assert!(error.contains(expected), "{request}: {error}");
    }
}

#[test]
fn control_socket_round_trips() {
    require_root!();
    let mut bed = Bed::new(2);
    let socket_mode = std::fs::metadata(&bed.switch.control)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(socket_mode & 0o777, 0o600, "control socket mode");
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 2, "0.1"), 2);
    let switch = &bed.switch;

    let list = switch.port_list();
    assert_eq!(names(&list), ["p0", "p1"]);
    assert_eq!(list[0].netns.as_deref(), Some(bed.ns(0)));
    assert!(list[0].enabled);
    assert_eq!(list[1].mtu, 1500);
    let (ok, table, _) = switch.ctl(&["port", "list"]);
    assert!(ok);
    assert!(table.starts_with("PORT"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("p1 ")), "{table}");

    let fdb = switch.fdb();
    let entries = &fdb.entries;
    assert_eq!(entries.len(), 2, "{fdb:?}");
    let mac0 = link_mac(bed.ns(0), "p0");
    assert!(
        entries
            .iter()
            .any(|e| e.mac.to_string() == mac0 && e.port == "p0" && e.kind == EntryKind::Dynamic),
        "{fdb:?}"
    );

    let (ok, _, stderr) = switch.ctl(&["fdb", "add", "02:00:00:00:00:99", "p1"]);
    assert!(ok, "{stderr}");
    let fdb = switch.fdb();
    assert!(
        fdb.entries
            .iter()
            .any(|e| e.mac.to_string() == "02:00:00:00:00:99"
                && e.port == "p1"
                && e.kind == EntryKind::Static),
        "{fdb:?}"
    );
    // A flush forgets what was learned and keeps what was configured.
    let flushed: FdbFlushed = switch.ctl_as(&["fdb", "flush"]);
    assert_eq!(flushed.removed, 2);
    let fdb = switch.fdb();
    assert_eq!(fdb.entries.len(), 1, "{fdb:?}");
    let (ok, _, stderr) = switch.ctl(&["fdb", "del", "02:00:00:00:00:99"]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = switch.ctl(&["fdb", "del", "02:00:00:00:00:99"]);
    assert!(!ok, "deleting a missing entry succeeded");
    assert!(
        stderr.contains("no MAC table entry for 02:00:00:00:00:99"),
        "{stderr}"
    );
    let (ok, _, stderr) = switch.ctl(&["fdb", "add", "02:00:00:00:00:98", "nosuch"]);
    assert!(!ok);
    assert!(stderr.contains("\"nosuch\""), "{stderr}");

    let stats: Stats = switch.ctl_as(&["stats", "p0"]);
    assert_eq!(stats.ports.len(), 1, "{stats:?}");
    assert!(stats.counters_of("p0").rx_frames >= 2, "{stats:?}");
    assert!(stats.loop_stats.iterations > 0);
    let (ok, _, stderr) = switch.ctl(&["stats", "nosuch"]);
    assert!(!ok);
    assert!(stderr.contains("no port named \"nosuch\""), "{stderr}");
    // The SIGUSR1 snapshot still works next to the socket.
    assert!(bed.switch.snapshot().counters_of("p0").rx_frames >= 2);

    let switch = &bed.switch;
    let config = switch.config();
    assert_eq!(config.ports[1].name, "p1");
    assert_eq!(config.ports[1].netns.as_deref(), Some(bed.ns(1)));
    let (ok, toml, _) = switch.ctl(&["config", "show"]);
    assert!(ok);
    let parsed = Config::from_toml(&toml, "config show").expect("config show prints valid TOML");
    assert_eq!(parsed.ports.len(), 2);
}

#[test]
fn bad_requests_get_errors_and_change_nothing() {
    require_root!();
    let bed = Bed::new(2);
    let before = bed.switch.port_list();
    let mut raw = Raw::connect(&bed.switch);
    raw.refused("{not json", "bad request");
    raw.refused(r#"{"cmd":"reboot"}"#, "unknown variant `reboot`");
    raw.refused(r#"["port_list"]"#, "bad request");
    raw.refused(r#"{"cmd":"port_list","all":true}"#, "unknown field `all`");
    raw.refused(r#"{"cmd":"port_del"}"#, "missing field `name`");
    raw.refused(
        r#"{"cmd":"port_del","name":"nosuch"}"#,
        "no port named \"nosuch\"",
    );
    raw.refused(
        r#"{"cmd":"port_add","port":{"name":"much-too-long-name"}}"#,
        "port.name",
    );
    raw.refused(
        r#"{"cmd":"port_add","port":{"name":"p1","netns":"elsewhere"}}"#,
        "already exists",
    );
    raw.refused(
        r#"{"cmd":"port_add","port":{"name":"tsnew","netns":"no-such-netns-here"}}"#,
        "no-such-netns-here",
    );
    raw.refused(
        r#"{"cmd":"port_set","name":"p0","set":{"mtu":10}}"#,
        "mtu: 10",
    );
    raw.refused(
        r#"{"cmd":"port_set","name":"p0","set":{}}"#,
        "nothing to change",
    );
    raw.refused(
        r#"{"cmd":"port_set","name":"p0","set":{"speed":10}}"#,
        "port p0: speed: unknown setting",
    );
    raw.refused(
        r#"{"cmd":"port_set","name":"p0","set":{"netns":"elsewhere"}}"#,
        "port p0: netns: cannot change on a running port",
    );
    raw.refused(
        r#"{"cmd":"port_set","name":"p0","set":{"mtu":9000,"mac_limit":0}}"#,
        "port p0: mac_limit: must be at least 1",
    );
    raw.refused(
        r#"{"cmd":"fdb_add","mac":"ff:ff:ff:ff:ff:ff","port":"p0"}"#,
        "multicast",
    );
    // The connection survives bad requests.
    let reply = raw.send(b"{\"cmd\":\"port_list\"}\n");
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(
        serde_json::from_value::<PortList>(reply["result"].clone()).unwrap(),
        before
    );

    // An oversized request is refused and the connection closed.
    let mut huge = vec![b' '; MAX_REQUEST_LEN + 10];
    huge.push(b'\n');
    let reply = raw.send(&huge);
    assert_eq!(reply["ok"], false);
    assert!(
        reply["error"].as_str().unwrap().contains("longer than"),
        "{reply}"
    );
    let mut rest = String::new();
    assert_eq!(raw.reader.read_to_string(&mut rest).unwrap_or(0), 0);

    assert_eq!(bed.switch.port_list(), before);
    let ns0_links = sh("ip", &["-n", bed.ns(0), "-j", "link", "show"]);
    assert!(!ns0_links.contains("tsnew"), "a refused port was created");
    assert_eq!(
        ping(bed.ns(0), &Bed::addr(1), 2, "0.1"),
        2,
        "forwarding broke"
    );
}

#[test]
fn a_live_socket_is_refused_and_a_stale_one_replaced() {
    require_root!();
    let dir = TempDir::new("tssock");
    let path = dir.path.join("sub").join("switch.sock");
    let path_arg = path.to_str().unwrap();
    let here = unique("tsso");
    let first = Switch::start(&["--port", &here, "--control", path_arg]);

    let other = unique("tsso");
    let output = Command::new(env!("CARGO_BIN_EXE_tapswitch"))
        .args(["run", "--port", &other, "--control", path_arg])
        .output()
        .unwrap();
    assert!(!output.status.success(), "a second switch started");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let pid = format!("pid {}", first.pid());
    assert!(
        stderr.contains("another tapswitch") && stderr.contains(&pid),
        "{stderr}"
    );
    assert!(
        !std::path::Path::new("/sys/class/net").join(&other).exists(),
        "the refused switch created its TAP"
    );
    assert_eq!(names(&first.port_list()), std::slice::from_ref(&here));
    assert!(first.stop(), "the switch did not stop cleanly");
    assert!(!path.exists(), "the socket outlived its switch");

    // A socket file nobody listens on (a crashed switch) is replaced.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let second = Switch::start(&["--port", &here, "--control", path_arg]);
    assert_eq!(names(&second.port_list()), [here]);
}

#[test]
fn hot_plug_under_traffic_loses_nothing_on_other_ports() {
    require_root!();
    const PINGS: u32 = 150;
    let bed = Bed::new(2);
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 2, "0.1"), 2);
    let switch = &bed.switch;
    let before = switch.stats();

    let ns0 = bed.ns(0).to_owned();
    let flow = thread::spawn(move || ping(&ns0, &Bed::addr(1), PINGS, "0.02"));
    let started = Instant::now();

    let extra = [Netns::new(), Netns::new()];
    let mut cycles = 0;
    while !flow.is_finished() && cycles < 20 {
        cycles += 1;
        let names = [unique("tshp"), unique("tshp")];
        for (name, ns) in names.iter().zip(&extra) {
            let spec = format!("{name}@{}", ns.name);
            let (ok, _, stderr) = switch.ctl(&["port", "add", &spec]);
            assert!(ok, "port add {spec}: {stderr}");
        }
        for (i, (name, ns)) in names.iter().zip(&extra).enumerate() {
            let addr = format!("10.66.1.{}/24", i + 1);
            sh("ip", &["-n", &ns.name, "addr", "add", &addr, "dev", name]);
        }
        // The new ports forward between themselves while the flow goes on.
        assert_eq!(
            ping(&extra[0].name, "10.66.1.2", 2, "0.02"),
            2,
            "hot-plugged ports do not forward"
        );
        let (ok, _, stderr) = switch.ctl(&["port", "set", &names[0], "--mtu", "9000"]);
        assert!(ok, "{stderr}");
        let netdev_mtu = sh(
            "ip",
            &["-n", &extra[0].name, "-j", "link", "show", &names[0]],
        );
        assert!(netdev_mtu.contains("\"mtu\":9000"), "{netdev_mtu}");
        let list = switch.port_list();
        let set = list.iter().find(|p| p.name == names[0]).unwrap();
        assert_eq!(set.mtu, 9000, "{list:?}");
        let (ok, _, stderr) = switch.ctl(&["port", "set", &names[1], "--disable"]);
        assert!(ok, "{stderr}");
        assert_eq!(
            ping(&extra[0].name, "10.66.1.2", 1, "0.02"),
            0,
            "a disabled port forwarded"
        );
        let (ok, _, stderr) = switch.ctl(&["port", "set", &names[1], "--enable"]);
        assert!(ok, "{stderr}");
        for name in &names {
            let (ok, _, stderr) = switch.ctl(&["port", "del", name]);
            assert!(ok, "port del {name}: {stderr}");
        }
        for (name, ns) in names.iter().zip(&extra) {
            let (exists, _) = exec_in(&ns.name, &["ip", "link", "show", name]);
            assert!(!exists, "TAP {name} left behind after port del");
        }
    }
    let replies = flow.join().unwrap();
    let elapsed = started.elapsed();
    assert!(cycles >= 1);
    assert_eq!(
        replies, PINGS,
        "the flow between p0 and p1 lost pings during {cycles} hot-plug cycles"
    );

    let after = switch.stats();
    assert_eq!(names(&switch.port_list()), ["p0", "p1"]);
    for name in ["p0", "p1"] {
        let now = after.counters_of(name);
        let then = before.counters_of(name);
        for (key, delta) in [
            ("rx_frames", now.rx_frames - then.rx_frames),
            ("tx_frames", now.tx_frames - then.tx_frames),
        ] {
            assert!(
                delta >= PINGS as u64,
                "{name} {key} grew by {delta} for {PINGS} pings"
            );
        }
    }
    for name in ["p0", "p1"] {
        assert_eq!(
            after.counters_of(name).drops.total(),
            before.counters_of(name).drops.total(),
            "{name} dropped frames during hot-plug: {after:?}"
        );
    }
    eprintln!("{cycles} hot-plug cycles in {elapsed:?} under a {PINGS}-ping flow");
}

/// The `events` command renders the typed events for people, and passes the JSON lines
/// on as the switch sent them with `--json`.
#[test]
fn the_events_command_prints_lines_for_people_and_json() {
    require_root!();
    let bed = Bed::new(1);
    let table = EventsCommand::start(&bed.switch, false);
    let json = EventsCommand::start(&bed.switch, true);
    // Each command subscribes after it starts: flush until both have printed a line.
    let mut printed = [false, false];
    for _ in 0..50 {
        let (ok, _, stderr) = bed.switch.ctl(&["fdb", "flush"]);
        assert!(ok, "{stderr}");
        for (done, command) in printed.iter_mut().zip([&table, &json]) {
            *done |= command
                .lines
                .recv_timeout(Duration::from_millis(200))
                .is_ok();
        }
        if printed == [true, true] {
            break;
        }
    }
    assert_eq!(printed, [true, true], "the events commands printed nothing");
    let extra = Netns::new();
    let name = unique("tsec");
    let spec = format!("{name}@{}", extra.name);
    let (ok, _, stderr) = bed.switch.ctl(&["port", "add", &spec]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = bed.switch.ctl(&["port", "del", &name]);
    assert!(ok, "{stderr}");
    let line = table.line_with("port_added");
    let (time, rest) = line.split_once(' ').expect("a time and the event");
    assert_eq!(time.len(), "12:09:28.163".len(), "{line}");
    assert_eq!(rest, format!("port_added mtu=1500 port={name}"), "{line}");
    let removed = table.line_with("port_removed");
    assert!(
        removed.ends_with(&format!("port_removed cause=requested port={name}")),
        "{removed}"
    );
    let line = json.line_with("port_added");
    let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
    assert_eq!(event["port"], name.as_str(), "{line}");
    assert_eq!(event["mtu"], 1500, "{line}");
    assert!(
        event["port_id"].is_u64() && event["time"].is_f64(),
        "{line}"
    );
}

#[test]
fn events_stream_learning_moves_and_port_changes() {
    require_root!();
    let bed = Bed::new(3);
    let events = subscribe(&bed.switch);
    let watcher = subscribe(&bed.switch);
    let switch = &bed.switch;

    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 1, "0.1"), 1);
    let mac0 = link_mac(bed.ns(0), "p0");
    let mac1 = link_mac(bed.ns(1), "p1");
    let learned = expect_event(
        &events,
        json!({"event": "mac_learned", "mac": mac0, "port": "p0"}),
    );
    assert_eq!(learned["port_id"], 0);
    assert!(learned["time"].as_f64().unwrap() > 1.0e9);
    expect_event(
        &events,
        json!({"event": "mac_learned", "mac": mac1, "port": "p1"}),
    );

    // p0's station shows up behind p2.
    send_raw(
        bed.ns(2),
        "p2",
        &[frame(mac_bytes(&mac1), mac_bytes(&mac0), 60)],
    );
    expect_event(
        &events,
        json!({"event": "mac_moved", "mac": mac0, "from": "p0", "to": "p2"}),
    );

    let flushed: FdbFlushed = switch.ctl_as(&["fdb", "flush"]);
    expect_event(
        &events,
        json!({"event": "fdb_flushed", "removed": flushed.removed}),
    );

    let extra = Netns::new();
    let name = unique("tsev");
    let (ok, _, stderr) = switch.ctl(&["port", "add", &format!("{name}@{}", extra.name)]);
    assert!(ok, "{stderr}");
    expect_event(
        &events,
        json!({"event": "port_added", "port": name, "mtu": 1500}),
    );
    let (ok, _, stderr) = switch.ctl(&["port", "set", &name, "--disable"]);
    assert!(ok, "{stderr}");
    expect_event(
        &events,
        json!({"event": "port_changed", "port": name, "update": {"enabled": false}}),
    );
    let (ok, _, stderr) = switch.ctl(&["port", "del", &name]);
    assert!(ok, "{stderr}");
    expect_event(
        &events,
        json!({"event": "port_removed", "port": name, "cause": "requested"}),
    );

    // A TAP deleted under the switch is reported too.
    sh("ip", &["-n", bed.ns(2), "link", "del", "p2"]);
    expect_event(
        &events,
        json!({"event": "port_removed", "port": "p2", "cause": "device_error"}),
    );
    // A second subscriber saw the same stream.
    expect_event(
        &watcher,
        json!({"event": "port_removed", "port": "p2", "cause": "device_error"}),
    );
    assert_eq!(switch.stats().events_dropped, 0);
}

/// Scrapes `path` over HTTP/1.1; returns the status line and the body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connecting to the metrics endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("headers and body");
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// Parses the Prometheus text format into `series -> value`, checking that
/// every sample belongs to a family declared with `# TYPE`.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut families = Vec::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(declaration) = line.strip_prefix("# TYPE ") {
            let mut parts = declaration.split_whitespace();
            families.push(parts.next().unwrap().to_owned());
            let kind = parts.next().unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        let name = series.split('{').next().unwrap();
        assert!(
            families.iter().any(|f| name == f
                || name
                    .strip_prefix(f.as_str())
                    .is_some_and(|rest| { ["_bucket", "_sum", "_count"].contains(&rest) })),
            "sample {name} has no # TYPE"
        );
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "duplicate {series}"
        );
    }
    samples
}

#[test]
fn metrics_endpoint_is_scraped_and_parsed() {
    require_root!();
    let bed = Bed::with_args(2, &["--metrics", "127.0.0.1:0"]);
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 5, "0.05"), 5);
    let addr = bed
        .switch
        .config()
        .switch
        .metrics
        .expect("the bound metrics address");
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );

    let (status, body) = http_get(&addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let metrics = parse_metrics(&body);
    let get = |series: &str| {
        *metrics
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in\n{body}"))
    };
    assert!(get("tapswitch_port_rx_frames_total{port=\"p0\"}") >= 5.0);
    assert!(get("tapswitch_port_tx_frames_total{port=\"p1\"}") >= 5.0);
    assert!(get("tapswitch_port_rx_bytes_total{port=\"p0\"}") >= 5.0 * 98.0);
    assert_eq!(
        get("tapswitch_port_drops_total{port=\"p0\",reason=\"oversize\"}"),
        0.0
    );
    assert_eq!(get("tapswitch_port_enabled{port=\"p1\"}"), 1.0);
    assert_eq!(get("tapswitch_ports"), 2.0);
    assert_eq!(get("tapswitch_fdb_entries"), 2.0);
    assert!(get("tapswitch_fdb_learned_total") >= 2.0);
    assert_eq!(get("tapswitch_fdb_moved_total"), 0.0);
    assert!(get("tapswitch_loop_iterations_total") > 0.0);
    // Every frame read is counted once in both the ports' and the loop's books.
    let rx_total = get("tapswitch_port_rx_frames_total{port=\"p0\"}")
        + get("tapswitch_port_rx_frames_total{port=\"p1\"}");
    assert_eq!(get("tapswitch_batch_frames_sum"), rx_total);
    let count = get("tapswitch_batch_frames_count");
    assert_eq!(get("tapswitch_batch_frames_bucket{le=\"+Inf\"}"), count);
    let mut previous = 0.0;
    for le in ["1", "2", "4", "8", "16", "32", "64", "128", "+Inf"] {
        let cumulative = get(&format!("tapswitch_batch_frames_bucket{{le=\"{le}\"}}"));
        assert!(cumulative >= previous, "bucket {le} is not cumulative");
        previous = cumulative;
    }

    // Counters move with traffic between scrapes.
    assert_eq!(ping(bed.ns(1), &Bed::addr(0), 3, "0.05"), 3);
    let (_, body) = http_get(&addr, "/metrics");
    let again = parse_metrics(&body);
    assert!(
        again["tapswitch_port_rx_frames_total{port=\"p1\"}"]
            >= get("tapswitch_port_rx_frames_total{port=\"p1\"}") + 3.0
    );

    let (status, _) = http_get(&addr, "/nothing-here");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}

/// Port security set at runtime and MAC flap detection, as seen by an `events`
/// subscriber: a MAC bouncing between p0 and p1 is reported as a flap; p2, given a
/// MAC limit of 1 with `shutdown` by `port set`, reports the violation and its
/// shutdown, and `port set --enable` brings it back.
#[test]
fn events_report_flaps_violations_and_shutdowns() {
    require_root!();
    let bed = Bed::with_config(
        3,
        "[switch.mac_flap]\nmoves = 3\nwindow_ms = 5000\nhold_secs = 30\n",
        |_| String::new(),
    );
    let events = subscribe(&bed.switch);
    let switch = &bed.switch;

    let roamer = "02:f1:a9:00:00:01";
    for _ in 0..3 {
        for i in 0..2 {
            send_raw(
                bed.ns(i),
                &Bed::dev(i),
                &[frame([0xff; 6], mac_bytes(roamer), 60)],
            );
            thread::sleep(Duration::from_millis(30));
        }
    }
    // Learned on p0, then three moves: p1, p0, p1. The third is the flap.
    let flap = expect_event(
        &events,
        json!({"event": "mac_flap", "mac": roamer, "held_on": "p0", "moved_to": "p1"}),
    );
    assert_eq!(flap["flaps"], 1, "{flap}");
    assert_eq!(
        (flap["held_on_id"].as_u64(), flap["moved_to_id"].as_u64()),
        (Some(0), Some(1))
    );

    let (ok, _, stderr) = switch.ctl(&[
        "port",
        "set",
        "p2",
        "--mac-limit",
        "1",
        "--mac-limit-action",
        "shutdown",
    ]);
    assert!(ok, "{stderr}");
    expect_event(
        &events,
        json!({"event": "port_changed", "port": "p2", "update": {"policy": true}}),
    );
    let first = "02:f1:a9:00:00:02";
    let second = "02:f1:a9:00:00:03";
    for mac in [first, second] {
        send_raw(bed.ns(2), "p2", &[frame([0xff; 6], mac_bytes(mac), 60)]);
    }
    expect_event(
        &events,
        json!({"event": "mac_limit_exceeded", "port": "p2", "mac": second, "limit": 1,
               "action": "shutdown"}),
    );
    expect_event(&events, json!({"event": "port_shutdown", "port": "p2"}));
    let p2 = switch.port_stats("p2");
    assert!(!p2.enabled, "{p2:?}");
    assert_eq!(p2.counters.shutdowns, 1, "{p2:?}");

    let (ok, out, stderr) = switch.ctl(&["port", "set", "p2", "--enable"]);
    assert!(ok, "{stderr}");
    assert!(out.starts_with("p2 (id 2): mtu 1500, enabled"), "{out}");
    expect_event(
        &events,
        json!({"event": "port_changed", "port": "p2", "update": {"enabled": true}}),
    );
    let config = switch.config();
    assert_eq!(config.ports[2].policy.mac_limit, Some(1), "{config:?}");
    assert_eq!(
        config.ports[2].policy.mac_limit_action,
        Some(ViolationAction::Shutdown),
        "{config:?}"
    );
}

/// Runs `tapswitch ARGS` against `switch`; expects it to fail with `expected` in its message.
fn ctl_refused(switch: &Switch, args: &[&str], expected: &str) -> String {
    let (ok, _, stderr) = switch.ctl(args);
    assert!(!ok, "{args:?} was accepted");
    assert!(stderr.contains(expected), "{args:?}: {stderr}");
    stderr
}

#[test]
fn a_tap_the_switch_did_not_create_is_refused_unless_adopted_and_then_kept() {
    require_root!();
    let mut bed = Bed::new(1);
    let home = Netns::new();
    let user_tap = ForeignTap::new(&home.name, "ut", &[]);
    let name = user_tap.name.as_str();
    let spec = format!("{name}@{}", home.name);
    let flags = user_tap.flags().expect("the user's TAP exists");
    assert!(
        flags.contains("vnet_hdr off") && flags.contains("persist on"),
        "{flags}"
    );

    // Not asked to adopt: refused, and the device is exactly as it was.
    let error = ctl_refused(
        &bed.switch,
        &["port", "add", &spec],
        "this switch did not create it",
    );
    assert!(error.contains("--adopt"), "{error}");
    assert_eq!(user_tap.flags().as_deref(), Some(flags.as_str()));
    assert!(!names(&bed.switch.port_list()).contains(&name.to_owned()));

    // Adopted: the port forwards on the device as it is (no vnet header, still persistent).
    let added = bed.switch.ctl(&["port", "add", &spec, "--adopt"]);
    assert!(added.0, "adopting failed: {}", added.2);
    assert_eq!(user_tap.flags().as_deref(), Some(flags.as_str()));
    let list = bed.switch.port_list();
    let port = list
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no adopted port in {list:?}"));
    assert!(port.adopted, "{port:?}");
    assert!(!port.offloads, "follows the device's flags: {port:?}");
    let addr = format!("{}/24", Bed::addr(5));
    sh("ip", &["-n", &home.name, "addr", "add", &addr, "dev", name]);
    assert_eq!(ping(&home.name, &Bed::addr(0), 2, "0.1"), 2);

    // Deleting the port leaves the user's device, persistence included.
    let (ok, _, stderr) = bed.switch.ctl(&["port", "del", name]);
    assert!(ok, "{stderr}");
    assert_eq!(
        user_tap.flags().as_deref(),
        Some(flags.as_str()),
        "port del deleted or changed the user's TAP"
    );

    // So does a switch that stops with the device adopted.
    let (ok, _, stderr) = bed.switch.ctl(&["port", "add", &spec, "--adopt"]);
    assert!(ok, "{stderr}");
    bed.switch.signal(libc::SIGTERM);
    assert!(wait_for(Duration::from_secs(10), || bed.switch.exited()));
    assert_eq!(
        user_tap.flags().as_deref(),
        Some(flags.as_str()),
        "the switch's shutdown deleted or changed the user's TAP"
    );
}

#[test]
fn adopting_refuses_settings_the_device_does_not_have() {
    require_root!();
    let bed = Bed::new(1);
    let home = Netns::new();
    let plain = ForeignTap::new(&home.name, "ua", &[]);
    let spec = format!("{}@{}", plain.name, home.name);
    ctl_refused(
        &bed.switch,
        &["port", "add", &spec, "--adopt", "--offloads", "true"],
        "offloads = true needs a vnet header, which the device was made without",
    );
    ctl_refused(
        &bed.switch,
        &["port", "add", &spec, "--adopt", "--persistent"],
        "persistent: not with adopt = true",
    );
    let missing = format!("{}@{}", unique("un"), home.name);
    ctl_refused(
        &bed.switch,
        &["port", "add", &missing, "--adopt"],
        "there is no TAP named",
    );
    // A vnet-header device is adopted with its header: offloads follow it.
    let vnet = ForeignTap::new(&home.name, "uv", &["vnet_hdr"]);
    let flags = vnet.flags().unwrap();
    let spec = format!("{}@{}", vnet.name, home.name);
    let (ok, _, stderr) = bed.switch.ctl(&["port", "add", &spec, "--adopt"]);
    assert!(ok, "{stderr}");
    let list = bed.switch.port_list();
    assert!(
        list.iter().any(|p| p.name == vnet.name && p.offloads),
        "{list:?}"
    );
    assert_eq!(vnet.flags(), Some(flags));
    // The switch goes before the devices the guards delete.
    drop(bed);
}

#[test]
fn a_name_taken_by_a_device_that_is_no_tap_is_named_in_the_error() {
    require_root!();
    let bed = Bed::new(1);
    let home = Netns::new();
    let veth = unique("vx");
    let peer = unique("vy");
    sh(
        "ip",
        &[
            "-n", &home.name, "link", "add", &veth, "type", "veth", "peer", "name", &peer,
        ],
    );
    let error = ctl_refused(
        &bed.switch,
        &["port", "add", &format!("{veth}@{}", home.name)],
        "already has a device named",
    );
    assert!(error.contains("a veth device, not a TAP"), "{error}");
    assert!(!error.contains("Invalid argument"), "{error}");
    let tun = unique("tn");
    sh(
        "ip",
        &[
            "-n", &home.name, "tuntap", "add", "dev", &tun, "mode", "tun",
        ],
    );
    ctl_refused(
        &bed.switch,
        &["port", "add", &format!("{tun}@{}", home.name)],
        "a TUN device (IP packets, not Ethernet frames), not a TAP",
    );
    // Everything was left as it was; the namespace's deletion takes them.
    assert!(exec_in(&home.name, &["ip", "link", "show", &veth]).0);
    assert!(exec_in(&home.name, &["ip", "link", "show", &tun]).0);
}

#[test]
fn every_entry_point_validates_the_same_way() {
    require_root!();
    let bed = Bed::new(1);
    let switch = &bed.switch;
    let mac = "02:00:00:00:00:77";
    for vlan in ["4095", "5000", "65535"] {
        ctl_refused(
            switch,
            &["fdb", "add", mac, "p0", "--vlan", vlan],
            "VLANs are 1..=4094",
        );
    }
    for vlan in ["0", "4094"] {
        let (ok, _, stderr) = switch.ctl(&["fdb", "add", mac, "p0", "--vlan", vlan]);
        assert!(ok, "--vlan {vlan}: {stderr}");
    }
    ctl_refused(
        switch,
        &[
            "port",
            "set",
            "p0",
            "--vlan-mode",
            "access",
            "--vlan",
            "4095",
        ],
        "VLAN 4095 is outside 1..=4094",
    );

    // The TAP's real maximum MTU, everywhere.
    ctl_refused(
        switch,
        &["port", "set", "p0", "--mtu", "65535"],
        "65535 is outside 68..=65521",
    );
    let home = Netns::new();
    ctl_refused(
        switch,
        &[
            "port",
            "add",
            &format!("{}@{}", unique("mt"), home.name),
            "--mtu",
            "65535",
        ],
        "65535 is outside 68..=65521",
    );
    let (ok, _, stderr) = switch.ctl(&["port", "set", "p0", "--mtu", "65521"]);
    assert!(ok, "the largest MTU was refused: {stderr}");

    // An all-zero MAC is no station's, refused before the kernel sees it.
    ctl_refused(
        switch,
        &["port", "set", "p0", "--mac", "00:00:00:00:00:00"],
        "00:00:00:00:00:00 is not a unicast station address (all zeros)",
    );

    // Storm control in words, not Rust types.
    let error = ctl_refused(
        switch,
        &["port", "set", "p0", "--storm-control", "100"],
        "broadcast_pps = 100",
    );
    assert!(!error.contains("StormControlConfig"), "{error}");
    assert!(!error.contains("struct"), "{error}");

    // --owner and --group take names, as the config's user does.
    let owned = unique("ow");
    let spec = format!("{owned}@{}", home.name);
    let (ok, _, stderr) = switch.ctl(&["port", "add", &spec, "--owner", "nobody"]);
    assert!(ok, "{stderr}");
    let (_, details) = exec_in(&home.name, &["ip", "-d", "link", "show", &owned]);
    assert!(details.contains("user nobody"), "{details}");
    ctl_refused(
        switch,
        &["port", "add", &spec, "--owner", "no-such-user-x"],
        "no user named \"no-such-user-x\"",
    );
}

#[test]
fn check_config_refuses_what_run_refuses() {
    require_root!();
    let dir = TempDir::new("tschk");
    let check = |name: &str, text: &str| {
        let path = dir.path.join(name);
        std::fs::write(&path, text).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_tapswitch"))
            .arg("check-config")
            .arg(&path)
            .output()
            .expect("running tapswitch");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let missing = unique("nsgone");
    let cases = [
        (
            "[switch]\nuser = \"no-such-user-x\"\n[[port]]\nname = \"a\"".to_owned(),
            "switch.user: no user named \"no-such-user-x\"",
        ),
        (
            format!("[[port]]\nname = \"a\"\nnetns = \"{missing}\""),
            "does not exist",
        ),
        (
            "[switch]\nfdb_capacity = 99999999999\n[[port]]\nname = \"a\"".to_owned(),
            "switch.fdb_capacity: 99999999999 is outside 1..=1048576",
        ),
        (
            "[[port]]\nname = \"a\"\nowner = \"no-such-user-x\"".to_owned(),
            "no user named \"no-such-user-x\"",
        ),
    ];
    for (text, expected) in cases {
        let (ok, stderr) = check("bad.toml", &text);
        assert!(!ok, "check-config accepted {text:?}");
        assert!(stderr.contains(expected), "{text:?}: {stderr}");
        // `run` refuses the same file with the same words.
        let output = Command::new(env!("CARGO_BIN_EXE_tapswitch"))
            .args(["run", "--config"])
            .arg(dir.path.join("bad.toml"))
            .arg("--control")
            .arg(dir.path.join("run.sock"))
            .output()
            .expect("running tapswitch");
        let run_stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "run accepted {text:?}");
        assert!(run_stderr.contains(expected), "run, {text:?}: {run_stderr}");
    }
    // What exists passes.
    let home = Netns::new();
    let (ok, stderr) = check(
        "good.toml",
        &format!(
            "[switch]\nuser = \"nobody\"\n[[port]]\nname = \"a\"\nnetns = \"{}\"\nowner = \"nobody\"",
            home.name
        ),
    );
    assert!(ok, "{stderr}");
}
