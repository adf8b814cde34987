//! Restart without loss: `tapswitch upgrade` under a steady flow.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use tapswitch::control::protocol::HandedOver;

#[test]
fn upgrade_under_a_ping_flow_loses_nothing_and_keeps_the_mac_table() {
    require_root!();
    upgrade_under_flow(Bed::new(2));
}

#[test]
fn upgrade_hands_over_every_queue_of_a_threaded_switch() {
    require_root!();
    upgrade_under_flow(Bed::with_config(2, "[switch]\nthreads = 2", |_| {
        "queues = 3".into()
    }));
}

fn upgrade_under_flow(mut bed: Bed) {
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 2, "0.1"), 2);
    let before = bed.switch.snapshot();
    assert_eq!(before.fdb.len(), 2);

    // 400 requests at 5 ms: the handover happens in the middle.
    let ns0 = bed.ns(0).to_owned();
    let flow = thread::spawn(move || ping(&ns0, &Bed::addr(1), 400, "0.005"));
    thread::sleep(Duration::from_millis(600));
    let started = Instant::now();
    let reply: HandedOver = bed.switch.ctl_as(&["upgrade"]);
    let handover_time = started.elapsed();
    let successor = Successor::new(reply.pid as i32);
    assert_ne!(successor.pid(), bed.switch.pid());
    let replies = flow.join().unwrap();
    assert_eq!(replies, 400, "frames were lost across the upgrade");
    eprintln!("handover took {handover_time:?}");

    // The old process is gone; the new one answers on the same socket.
    assert!(
        wait_for(Duration::from_secs(10), || bed.switch.exited()),
        "the old switch did not exit"
    );
    assert!(successor.alive());
    let stats = bed.switch.stats();
    let ports: Vec<&str> = stats.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(ports, ["p0", "p1"]);
    // The table came across: both endpoints are known to the new process.
    let fdb = bed.switch.fdb();
    let macs: Vec<String> = (0..2).map(|i| link_mac(bed.ns(i), &Bed::dev(i))).collect();
    for mac in &macs {
        assert!(
            fdb.entries.iter().any(|e| e.mac.to_string() == *mac),
            "{mac} not in the new table: {fdb:?}"
        );
    }
    // And it forwards.
    assert_eq!(ping(bed.ns(1), &Bed::addr(0), 5, "0.05"), 5);
    // It holds the state directory's lock (handed over, never released between the two).
    let refused = start_refused_on_state_dir_of(&bed.switch);
    assert!(
        refused.contains(&format!(
            "in use by another tapswitch (pid {})",
            successor.pid()
        )),
        "{refused}"
    );

    // Stopping the new switch removes the TAPs it inherited.
    assert!(successor.stop(), "the new switch did not stop on SIGTERM");
    let (ok, _) = exec_in(bed.ns(0), &["ip", "link", "show", "p0"]);
    assert!(!ok, "p0 outlived the switch");
}

#[test]
fn a_failed_upgrade_leaves_the_old_switch_forwarding() {
    require_root!();
    let mut bed = Bed::new(2);
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 2, "0.1"), 2);
    let (ok, _, stderr) = bed.switch.ctl(&["upgrade", "--binary", "/bin/false"]);
    assert!(!ok);
    assert!(stderr.contains("did not become ready"), "{stderr}");
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 5, "0.05"), 5);
    let snapshot = bed.switch.snapshot();
    assert_eq!(snapshot.ports.len(), 2);
}

#[test]
fn a_restarted_switch_reattaches_to_persistent_taps_after_a_crash() {
    require_root!();
    let namespaces = [Netns::new(), Netns::new()];
    let _taps = PersistentTaps(
        (0..2)
            .map(|i| (namespaces[i].name.clone(), Bed::dev(i)))
            .collect(),
    );
    let config = persistent_ports_config(&namespaces);
    let mut switch = start_with_config(&config);
    address_ports(&namespaces);
    assert_eq!(ping(&namespaces[0].name, &Bed::addr(1), 2, "0.1"), 2);

    // A crash: no cleanup runs. The persistent TAPs stay, without carrier.
    switch.signal(libc::SIGKILL);
    assert!(wait_for(Duration::from_secs(5), || switch.exited()));
    let (ok, link) = exec_in(&namespaces[0].name, &["ip", "link", "show", "p0"]);
    assert!(ok, "the persistent TAP went with the switch");
    assert!(link.contains("NO-CARRIER"), "{link}");

    // The restarted switch finds them by name and attaches again; the
    // endpoints kept their addresses, as their devices never went away.
    let _restarted = start_with_config(&config);
    assert_eq!(ping(&namespaces[0].name, &Bed::addr(1), 5, "0.05"), 5);
    assert_eq!(ping(&namespaces[1].name, &Bed::addr(0), 5, "0.05"), 5);
}
