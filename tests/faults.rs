//! Faults on a real switch: a crash (SIGKILL) and restart from the state file,
//! control clients that hang, stall mid-line or vanish, a TAP deleted under
//! load. After each, the remaining ports forward and the daemon's fds and
//! memory are back where they were.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use common::*;
use tapswitch::control::{FdbShowEntry, PortList};
use tapswitch::fdb::EntryKind;

/// The entries of `fdb show`.
fn fdb_entries(switch: &Switch) -> Vec<FdbShowEntry> {
    switch.fdb().entries
}

fn port_list(switch: &Switch) -> PortList {
    switch.port_list()
}

#[test]
fn a_killed_switch_restarts_with_its_runtime_ports_and_mac_table() {
    require_root!();
    let namespaces = [Netns::new(), Netns::new(), Netns::new()];
    let _taps = PersistentTaps(
        (0..3)
            .map(|i| (namespaces[i].name.clone(), Bed::dev(i)))
            .collect(),
    );
    let state = TempDir::new("tsst");
    let state_dir = state.path.to_str().unwrap();
    let config_dir = TempDir::new("tscf");
    let config_path = config_dir.path.join("switch.toml");
    let config = persistent_ports_config(&namespaces[..2]);
    std::fs::write(&config_path, config).unwrap();
    let args = [
        "--config",
        config_path.to_str().unwrap(),
        "--state-dir",
        state_dir,
    ];
    let mut switch = Switch::start(&args);
    // A port added at runtime, with settings of its own.
    let p2 = format!("p2@{}", namespaces[2].name);
    let (ok, _, stderr) = switch.ctl(&["port", "add", &p2, "--persistent", "--mac-limit", "8"]);
    assert!(ok, "{stderr}");
    address_ports(&namespaces);
    assert_eq!(ping(&namespaces[0].name, &Bed::addr(1), 2, "0.1"), 2);
    assert_eq!(ping(&namespaces[0].name, &Bed::addr(2), 2, "0.1"), 2);
    let (ok, _, stderr) = switch.ctl(&["fdb", "add", "02:00:00:00:00:99", "p2"]);
    assert!(ok, "{stderr}");
    let macs: Vec<String> = (0..3)
        .map(|i| link_mac(&namespaces[i].name, &Bed::dev(i)))
        .collect();
    let before = fdb_entries(&switch);
    for (i, mac) in macs.iter().enumerate() {
        assert!(
            before
                .iter()
                .any(|e| e.mac.to_string() == *mac && e.port == Bed::dev(i)),
            "{mac} not learned on p{i}: {before:?}"
        );
    }
    // The file is written on each change; it holds the table as of the last one.
    let file = state.path.join("state.json");
    let saved = std::fs::read_to_string(&file).expect("a state file");
    for mac in &macs {
        assert!(saved.contains(mac.as_str()), "{mac} not saved: {saved}");
    }

    // A crash: nothing runs at exit.
    switch.signal(libc::SIGKILL);
    assert!(wait_for(Duration::from_secs(5), || switch.exited()));

    let restarted = Switch::start(&args);
    // Before any frame: the table is the one saved, not learned again.
    let after = fdb_entries(&restarted);
    for (i, mac) in macs.iter().enumerate() {
        let entry = after
            .iter()
            .find(|e| e.mac.to_string() == *mac)
            .unwrap_or_else(|| panic!("{mac} not restored: {after:?}"));
        assert_eq!(entry.port, Bed::dev(i), "{mac} restored on the wrong port");
        assert_eq!(entry.kind, EntryKind::Dynamic);
    }
    assert!(
        after
            .iter()
            .any(|e| e.mac.to_string() == "02:00:00:00:00:99"
                && e.port == "p2"
                && e.kind == EntryKind::Static),
        "the static entry was not restored: {after:?}"
    );
    let ports = port_list(&restarted);
    let p2 = ports
        .iter()
        .find(|p| p.name == "p2")
        .unwrap_or_else(|| panic!("the runtime port is gone: {ports:?}"));
    assert_eq!(p2.netns.as_deref(), Some(namespaces[2].name.as_str()));
    assert!(p2.persistent);
    // Its whole configuration came back, not only its name.
    let config = restarted.config();
    let saved_p2 = config
        .ports
        .iter()
        .find(|p| p.name == "p2")
        .unwrap()
        .clone();
    assert_eq!(saved_p2.policy.mac_limit, Some(8), "{saved_p2:?}");

    assert_eq!(ping(&namespaces[0].name, &Bed::addr(2), 5, "0.05"), 5);
    assert_eq!(ping(&namespaces[1].name, &Bed::addr(0), 5, "0.05"), 5);
    assert_eq!(ping(&namespaces[2].name, &Bed::addr(1), 5, "0.05"), 5);
    // The restored entries were right: traffic moved none of them.
    let now = fdb_entries(&restarted);
    for (i, mac) in macs.iter().enumerate() {
        assert!(
            now.iter()
                .any(|e| e.mac.to_string() == *mac && e.port == Bed::dev(i)),
            "{mac} not on p{i} after traffic: {now:?}"
        );
    }
}

#[test]
fn an_unreadable_state_file_is_kept_aside_and_the_switch_starts() {
    require_root!();
    let state = TempDir::new("tsst");
    std::fs::write(state.path.join("state.json"), "{\"version\":1,\"ports\":[").unwrap();
    let name = unique("tsst");
    let switch = Switch::start(&["--port", &name, "--state-dir", state.path.to_str().unwrap()]);
    assert_eq!(names(&port_list(&switch)), [name.as_str()]);
    let kept: Vec<String> = std::fs::read_dir(&state.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.json.unreadable-"))
        .collect();
    assert_eq!(kept.len(), 1, "the broken file was not kept aside");
    let text = std::fs::read_to_string(state.path.join(&kept[0])).unwrap();
    assert_eq!(text, "{\"version\":1,\"ports\":[");
    // The switch writes a good one on its next change.
    let (ok, _, stderr) = switch.ctl(&["fdb", "add", "02:00:00:00:00:42", &name]);
    assert!(ok, "{stderr}");
    let saved = std::fs::read_to_string(state.path.join("state.json")).unwrap();
    assert!(saved.contains("02:00:00:00:00:42"), "{saved}");
}

#[test]
fn a_switch_that_became_nobody_still_writes_its_state() {
    require_root!();
    let state = TempDir::new("tsst");
    let dir = state.path.join("switch");
    let name = unique("tsst");
    let config = TempDir::new("tscf");
    let path = config.path.join("switch.toml");
    std::fs::write(
        &path,
        format!("[switch]\nuser = \"nobody\"\n[[port]]\nname = \"{name}\"\n"),
    )
    .unwrap();
    let switch = Switch::start(&[
        "--config",
        path.to_str().unwrap(),
        "--state-dir",
        dir.to_str().unwrap(),
    ]);
    let (ok, _, stderr) = switch.ctl(&["fdb", "add", "02:00:00:00:00:43", &name]);
    assert!(ok, "{stderr}");
    let saved = std::fs::read_to_string(dir.join("state.json")).expect("a state file");
    assert!(saved.contains("02:00:00:00:00:43"), "{saved}");
    let nobody = sh("id", &["-u", "nobody"]).trim().parse::<u32>().unwrap();
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&dir).unwrap());
    assert_eq!(
        owner, nobody,
        "the state directory belongs to the switch user"
    );
}

/// Connects to the switch's control socket.
fn connect(switch: &Switch) -> UnixStream {
    UnixStream::connect(&switch.control).expect("connecting to the control socket")
}

#[test]
fn hung_stalled_and_vanishing_control_clients_lock_nobody_out_and_leak_nothing() {
    require_root!();
    let bed = Bed::new(2);
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 2, "0.1"), 2);
    let pid = bed.switch.pid();
    // Each request below has run once, so every lazily made thing exists already.
    assert_eq!(port_list(&bed.switch).len(), 2);
    let fds = fd_count(pid);
    let rss = rss_kib(pid);

    // More clients than the connection cap that connect and send nothing ...
    let hung: Vec<UnixStream> = (0..70).map(|_| connect(&bed.switch)).collect();
    // ... and some that send half a request and stall.
    let stalled: Vec<UnixStream> = (0..10)
        .map(|_| {
            let mut stream = connect(&bed.switch);
            stream.write_all(br#"{"cmd":"port_li"#).unwrap();
            stream
        })
        .collect();
    // Others still get answers, and the switch forwards.
    for _ in 0..3 {
        let (ok, _, stderr) = bed.switch.ctl(&["port", "list"]);
        assert!(ok, "a client was locked out by hung ones: {stderr}");
    }
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 5, "0.05"), 5);

    // Clients that go away in the middle of a request, or before reading the reply.
    for _ in 0..20 {
        let mut stream = connect(&bed.switch);
        stream.write_all(br#"{"cmd":"fdb_sh"#).unwrap();
        drop(stream);
        let mut stream = connect(&bed.switch);
        stream.write_all(b"{\"cmd\":\"fdb_show\"}\n").unwrap();
        drop(stream);
    }
    // A request completed by a client that stalled before: it is answered.
    let mut late = connect(&bed.switch);
    late.write_all(br#"{"cmd":"he"#).unwrap();
    thread::sleep(Duration::from_millis(200));
    late.write_all(b"llo\"}\n").unwrap();
    let mut reply = [0u8; 256];
    let n = late.read(&mut reply).unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.contains("\"ok\":true"), "{reply}");
    drop(late);

    drop(hung);
    drop(stalled);
    assert!(
        wait_for(Duration::from_secs(10), || fd_count(pid) <= fds),
        "the switch holds {} fds, {fds} before the clients came",
        fd_count(pid)
    );
    assert_eq!(ping(bed.ns(1), &Bed::addr(0), 5, "0.05"), 5);
    assert_eq!(port_list(&bed.switch).len(), 2);
    // Threads' stacks are returned; allow the allocator its slack.
    let grown = rss_kib(pid).saturating_sub(rss);
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB");
}

#[test]
fn a_tap_deleted_under_load_leaves_the_others_forwarding_and_nothing_behind() {
    require_root!();
    let bed = Bed::new(4);
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 2, "0.1"), 2);
    assert_eq!(ping(bed.ns(2), &Bed::addr(3), 2, "0.1"), 2);
    let pid = bed.switch.pid();
    assert_eq!(port_list(&bed.switch).len(), 4);
    let fds = fd_count(pid);
    let rss = rss_kib(pid);
    let _server = iperf3_server(bed.ns(1), 5201);
    let p3 = format!("p3@{}", bed.ns(3));
    // The endpoint comes back with the same address, so p2's ARP entry stays right.
    let p3_mac = link_mac(bed.ns(3), "p3");
    for round in 0..3 {
        // TCP bulk between p0 and p1 and a ping flow towards p3, whose TAP goes.
        let ns0 = bed.ns(0).to_owned();
        let bulk = thread::spawn(move || iperf3_client_for(&ns0, &Bed::addr(1), 5201, 3, &[]));
        let ns2 = bed.ns(2).to_owned();
        let pings = thread::spawn(move || ping(&ns2, &Bed::addr(3), 300, "0.01"));
        thread::sleep(Duration::from_millis(1000));
        sh("ip", &["-n", bed.ns(3), "link", "del", "p3"]);
        let received = bulk.join().unwrap();
        assert!(
            received > 1 << 20,
            "round {round}: the TCP flow between p0 and p1 stalled ({received} bytes)"
        );
        let answered = pings.join().unwrap();
        assert!(
            answered < 300,
            "round {round}: p3 answered after its TAP was deleted"
        );
        assert!(
            wait_for(Duration::from_secs(5), || port_list(&bed.switch).len() == 3),
            "round {round}: p3 still listed"
        );
        assert_eq!(ping(bed.ns(1), &Bed::addr(0), 3, "0.05"), 3);
        // Its fd is closed (and whatever else the switch held for it).
        assert!(
            wait_for(Duration::from_secs(5), || fd_count(pid) < fds),
            "round {round}: {} fds with p3 gone, {fds} with it",
            fd_count(pid)
        );
        // The port comes back, and with it exactly its fd.
        let (ok, _, stderr) = bed.switch.ctl(&["port", "add", &p3, "--mac", &p3_mac]);
        assert!(ok, "round {round}: {stderr}");
        let addr = format!("{}/24", Bed::addr(3));
        sh("ip", &["-n", bed.ns(3), "addr", "add", &addr, "dev", "p3"]);
        assert_eq!(ping(bed.ns(2), &Bed::addr(3), 3, "0.05"), 3);
        assert!(
            wait_for(Duration::from_secs(5), || fd_count(pid) == fds),
            "round {round}: {} fds with p3 back, {fds} before",
            fd_count(pid)
        );
    }
    let snapshot = bed.switch.stats();
    let removed = &snapshot.removed_ports;
    assert_eq!(removed.len(), 1, "one entry per removed name: {removed:?}");
    let grown = rss_kib(pid).saturating_sub(rss);
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB");
}

/// A libvirtd of this test's own, beside the machine's (which is left alone): in a mount
/// namespace of its own, with its runtime, state, cache and domain-definition directories
/// bound to directories of `dir`, and its socket in `dir/run`. Stopped by its PID on drop.
struct OwnLibvirtd {
    child: Option<std::process::Child>,
    dir: std::path::PathBuf,
    uri: String,
}

impl OwnLibvirtd {
    fn new(dir: &std::path::Path) -> Self {
        for sub in ["run", "runtime", "definitions", "state", "cache"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let conf = dir.join("libvirtd.conf");
        std::fs::write(
            &conf,
            format!("unix_sock_dir = \"{}\"\n", dir.join("run").display()),
        )
        .unwrap();
        Self {
            child: None,
            dir: dir.to_owned(),
            uri: format!(
                "qemu+unix:///system?socket={}",
                dir.join("run/libvirt-sock").display()
            ),
        }
    }

    fn definitions(&self) -> std::path::PathBuf {
        self.dir.join("definitions")
    }

    fn virsh(&self, args: &[&str]) -> (bool, String) {
        let output = std::process::Command::new("virsh")
            .args(["-c", &self.uri])
            .args(args)
            .output()
            .expect("running virsh");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn start(&mut self) {
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        let script = format!(
            // libvirtd creates /etc/libvirt/qemu only when it first saves a domain, so a fresh
            // machine may lack the mount point.
            "mkdir -p /run/libvirt /etc/libvirt/qemu /var/lib/libvirt /var/cache/libvirt && \
             mount --bind {} /run/libvirt && mount --bind {} /etc/libvirt/qemu && \
             mount --bind {} /var/lib/libvirt && mount --bind {} /var/cache/libvirt && \
             exec libvirtd -f {} -p {}",
            d("runtime"),
            d("definitions"),
            d("state"),
            d("cache"),
            d("libvirtd.conf"),
            d("libvirtd.pid"),
        );
        let log = std::fs::File::create(self.dir.join("libvirtd.log")).unwrap();
        let child = std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting libvirtd (scripts/vm-testbed.sh installs it)");
        self.child = Some(child);
        assert!(
            wait_for(Duration::from_secs(30), || self.virsh(&["list"]).0),
            "our libvirtd did not answer: {}",
            std::fs::read_to_string(self.dir.join("libvirtd.log")).unwrap_or_default()
        );
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our own
            // unreaped child (sh exec-ed libvirtd).
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

impl Drop for OwnLibvirtd {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn a_vm_port_whose_domain_vanished_while_libvirtd_was_down_is_removed_after_reconnect() {
    require_root!();
    let dir = TempDir::new("tslv");
    let mut libvirtd = OwnLibvirtd::new(&dir.path);
    libvirtd.start();
    let domain = unique("tslv");
    let xml = dir.path.join("domain.xml");
    std::fs::write(
        &xml,
        format!(
            "<domain type='qemu'><name>{domain}</name><memory unit='MiB'>64</memory>\
             <vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><devices/></domain>"
        ),
    )
    .unwrap();
    let (ok, err) = libvirtd.virsh(&["define", xml.to_str().unwrap()]);
    assert!(ok, "virsh define: {err}");

    let bed = Bed::with_config(
        2,
        &format!("[switch]\nlibvirt_uri = \"{}\"", libvirtd.uri),
        |_| String::new(),
    );
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 2, "0.1"), 2);
    let vm_port = unique("tslv");
    let (ok, _, err) = bed.switch.ctl(&["port", "add", &vm_port, "--vm", &domain]);
    assert!(ok, "port add --vm: {err}");
    // A port made before its domain exists waits for it, across reconnects too.
    let waiting = unique("tslv");
    let future = unique("tslv");
    let (ok, _, err) = bed.switch.ctl(&["port", "add", &waiting, "--vm", &future]);
    assert!(ok, "port add --vm before the domain: {err}");
    assert_eq!(port_list(&bed.switch).len(), 4);

    // libvirtd goes away; meanwhile the domain's definition goes (as an undefine would).
    libvirtd.stop();
    std::fs::remove_file(libvirtd.definitions().join(format!("{domain}.xml")))
        .expect("the stored definition");
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 3, "0.05"), 3);
    assert_eq!(
        port_list(&bed.switch).len(),
        4,
        "removed before libvirt said so"
    );
    libvirtd.start();
    let (_, err) = libvirtd.virsh(&["dominfo", &domain]);
    assert!(
        err.contains("failed to get domain"),
        "the domain is still there: {err}"
    );

    // The switch reconnects and replays what it missed from the domains' state.
    assert!(
        wait_for(Duration::from_secs(60), || port_list(&bed.switch).len()
            == 3),
        "the VM port of a domain that no longer exists is still there: {:?}",
        port_list(&bed.switch)
    );
    let names = names(&port_list(&bed.switch));
    assert!(names.contains(&waiting), "{names:?}");
    assert!(!names.contains(&vm_port), "{names:?}");
    assert_eq!(ping(bed.ns(1), &Bed::addr(0), 3, "0.05"), 3);
}

/// A TAP whose queue is full drops what its endpoint sends before the switch sees it: the
/// switch's counters cannot have those frames, the netdev's `tx_dropped` does, and `stats`
/// (JSON and table) and the metrics show it per port as `netdev_tx_dropped`.
#[test]
fn frames_a_full_tap_queue_dropped_are_shown_as_the_netdevs_drops() {
    require_root!();
    const QUEUE: u32 = 4;
    const BURST: usize = 200;
    let bed = Bed::with_args(2, &["--metrics", "127.0.0.1:0"]);
    sh(
        "ip",
        &[
            "-n",
            bed.ns(0),
            "link",
            "set",
            "p0",
            "txqueuelen",
            &QUEUE.to_string(),
        ],
    );
    let before = bed.switch.port_stats("p0");
    let dropped_before = before
        .netdev_tx_dropped
        .expect("a TAP port's netdev drops are read");

    // The switch stops reading (stopped, by its PID), so the endpoint's frames can only
    // wait in the TAP's queue of QUEUE frames; the rest are the kernel's to drop.
    bed.switch.signal(libc::SIGSTOP);
    let src = mac_bytes(&link_mac(bed.ns(0), "p0"));
    let sent = flood_raw(bed.ns(0), "p0", &vec![frame([0xff; 6], src, 60); BURST]);
    bed.switch.signal(libc::SIGCONT);

    let after = bed.switch.port_stats("p0");
    let dropped = after.netdev_tx_dropped.expect("read again") - dropped_before;
    let read = after.counters.rx_frames - before.counters.rx_frames;
    assert!(
        dropped + u64::from(QUEUE) >= sent.accepted,
        "{} frames went out of p0 and at most {QUEUE} fit its queue, but the netdev \
         dropped only {dropped} (the switch read {read})",
        sent.accepted
    );
    // What the queue held, and perhaps a stray IPv6 frame of the endpoint after it.
    assert!(
        read <= u64::from(QUEUE) + 4,
        "the switch read {read} frames"
    );
    // None of it is a drop of the switch's own.
    assert_eq!(after.counters.drops.total(), before.counters.drops.total());
    assert_eq!(
        bed.switch.port_stats("p1").netdev_tx_dropped,
        Some(0),
        "p1's queue never filled"
    );

    // The table has the same figure in its NETDEV DROPS column.
    let (ok, table, stderr) = bed.switch.ctl(&["stats"]);
    assert!(ok, "{stderr}");
    let header = table
        .lines()
        .find(|line| line.starts_with("PORT "))
        .expect("a header line");
    assert!(header.contains("NETDEV DROPS"), "{table}");
    let row: Vec<&str> = table
        .lines()
        .find(|line| line.starts_with("p0 "))
        .expect("a row for p0")
        .split_whitespace()
        .collect();
    let total = dropped + dropped_before;
    assert_eq!(row[6], total.to_string(), "{table}");

    // And the metrics, for a scraper.
    let addr = bed.switch.config().switch.metrics.expect("metrics address");
    let mut stream = std::net::TcpStream::connect(&addr).expect("connecting to metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut body = String::new();
    stream.read_to_string(&mut body).expect("reply");
    let line = format!("tapswitch_port_netdev_tx_dropped_total{{port=\"p0\"}} {total}");
    assert!(body.lines().any(|l| l == line), "{line} missing in\n{body}");
}
