//! `tapswitch doctor` against a real switch whose ports are deliberately
//! misconfigured: it must find each problem, say how to fix it, exit 1 on
//! errors, and stop reporting a problem once the fix is applied. Needs root.

mod common;

use serde_json::Value;

use common::*;

/// Runs `tapswitch doctor --json`; returns (exit success, report).
fn doctor(bed: &Bed) -> (bool, Value) {
    let (ok, stdout, stderr) = bed.switch.ctl(&["doctor", "--json"]);
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}: {stdout} {stderr}"));
    (ok, report)
}

/// (code, port) of every finding above info level.
fn problems(report: &Value) -> Vec<(String, String)> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["severity"] != "info")
        .map(|f| {
            (
                f["code"].as_str().expect("code").to_owned(),
                f["port"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect()
}

fn pair(code: &str, port: &str) -> (String, String) {
    (code.to_owned(), port.to_owned())
}

#[test]
fn doctor_finds_mismatched_mtu_and_offloads_and_their_fixes_work() {
    require_root!();
    // p1 without offloads while p0 has them: one side only.
    let bed = Bed::with_config(2, "", |i| {
        if i == 1 {
            "offloads = false".into()
        } else {
            String::new()
        }
    });
    let (ok, report) = doctor(&bed);
    assert!(ok, "warnings alone exit 0: {report:#}");
    assert_eq!(problems(&report), [pair("offloads_mixed", "p1")]);

    // The endpoint behind p0 raises its MTU behind the switch's back and turns TSO off.
    sh("ip", &["-n", bed.ns(0), "link", "set", "p0", "mtu", "9000"]);
    sh(
        "ip",
        &[
            "netns",
            "exec",
            bed.ns(0),
            "ethtool",
            "-K",
            "p0",
            "tso",
            "off",
        ],
    );
    let (ok, report) = doctor(&bed);
    assert!(!ok, "an error-level finding exits 1: {report:#}");
    assert_eq!(report["errors"], 1);
    assert_eq!(
        problems(&report),
        [
            pair("mtu_netdev_above_switch", "p0"),
            pair("endpoint_offloads_off", "p0"),
            pair("offloads_mixed", "p1"),
        ]
    );
    let mtu = &report["findings"][0];
    // The switch's socket is not the default one: the fix names it, to be pasted as is.
    assert!(
        mtu["fix"].as_str().unwrap().starts_with(&format!(
            "tapswitch --control {} port set p0 --mtu 9000",
            bed.switch.control.display()
        )),
        "{mtu}"
    );

    // The table for people carries the same, with the fixes.
    let (ok, table, _) = bed.switch.ctl(&["doctor"]);
    assert!(!ok);
    assert!(table.contains("error    p0"), "{table}");
    assert!(
        table.contains(&format!(
            "fix: ip netns exec {} ethtool -K p0 tso on",
            bed.ns(0)
        )),
        "{table}"
    );

    // Applying the fixes: the MTU error is gone; the two ports now differ in MTU instead.
    let (ok, _, stderr) = bed.switch.ctl(&["port", "set", "p0", "--mtu", "9000"]);
    assert!(ok, "{stderr}");
    sh(
        "ip",
        &[
            "netns",
            "exec",
            bed.ns(0),
            "ethtool",
            "-K",
            "p0",
            "tso",
            "on",
        ],
    );
    let (ok, report) = doctor(&bed);
    assert!(ok, "{report:#}");
    assert_eq!(
        problems(&report),
        [pair("offloads_mixed", "p1"), pair("mtu_ports_differ", "p1")]
    );
}

#[test]
fn doctor_sees_link_state_and_queue_length() {
    require_root!();
    let bed = Bed::new(2);
    let (ok, report) = doctor(&bed);
    assert!(ok);
    assert!(problems(&report).is_empty(), "{report:#}");
    let privileges = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "daemon_privileges")
        .expect("the daemon's privileges are reported");
    assert!(
        privileges["what"].as_str().unwrap().contains(
            "capabilities CAP_CHOWN,CAP_NET_ADMIN,CAP_NET_RAW,CAP_SYS_ADMIN (CAP_NET_ADMIN: "
        ),
        "{privileges}"
    );

    sh("ip", &["-n", bed.ns(0), "link", "set", "p0", "down"]);
    sh(
        "ip",
        &["-n", bed.ns(1), "link", "set", "p1", "txqueuelen", "100"],
    );
    let (ok, report) = doctor(&bed);
    assert!(!ok);
    assert_eq!(
        problems(&report),
        [pair("link_down", "p0"), pair("txqueuelen_small", "p1")]
    );
}
