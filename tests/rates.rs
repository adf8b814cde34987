//! `stats --rate` and `top` against a switch carrying traffic.

mod common;

use common::*;
use tapswitch::control::rates::Rates;

/// A bed of three ports with p0 pinging p1 ten times a second meanwhile.
fn busy_bed() -> (Bed, Background) {
    let bed = Bed::new(3);
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 1, "0.1"), 1, "p0 reaches p1");
    let pinger = Background::start_in(bed.ns(0), &["ping", "-q", "-i", "0.1", &Bed::addr(1)]);
    (bed, pinger)
}

#[test]
fn stats_rate_reports_per_second_deltas() {
    require_root!();
    let (bed, _pinger) = busy_bed();
    let rates: Rates = bed.switch.ctl_as(&["stats", "--rate", "--interval", "1"]);
    assert!(rates.interval_secs >= 1.0, "{rates:?}");
    let rate_of = |name: &str| {
        rates
            .ports
            .iter()
            .find(|port| port.name == name)
            .unwrap_or_else(|| panic!("no {name} in {rates:?}"))
    };
    // Echo requests in, replies out on p0; the reverse on p1; p2 hears no unicast.
    for name in ["p0", "p1"] {
        let port = rate_of(name);
        assert!(port.rx_frames_per_sec > 0.0, "{port:?}");
        assert!(port.tx_frames_per_sec > 0.0, "{port:?}");
        assert!(
            port.rx_bytes_per_sec >= 60.0 * port.rx_frames_per_sec,
            "{port:?}"
        );
    }
    assert!(rates.fdb_size >= 2, "{rates:?}");
    assert!(rates.loop_load.port_visits_per_sec > 0.0, "{rates:?}");

    let (ok, _, stderr) = bed.switch.ctl(&["stats", "--rate", "--interval", "0"]);
    assert!(!ok);
    assert!(stderr.contains("--interval 0"), "{stderr}");
}

#[test]
fn top_draws_a_row_per_port_sorted() {
    require_root!();
    let (bed, _pinger) = busy_bed();
    let (ok, text, stderr) = bed.switch.ctl(&[
        "top",
        "--iterations",
        "2",
        "--interval",
        "0.5",
        "--sort",
        "name",
    ]);
    assert!(ok, "{stderr}");
    // Not a terminal: no screen clearing, one table per draw.
    assert!(!text.contains('\x1b'), "{text:?}");
    let tables: Vec<&str> = text.split("PORT ").skip(1).collect();
    assert_eq!(tables.len(), 2, "{text}");
    for table in tables {
        let rows: Vec<Vec<&str>> = table
            .lines()
            .skip(1)
            .filter(|line| line.starts_with('p'))
            .map(|line| line.split_whitespace().collect())
            .collect();
        let names: Vec<&str> = rows.iter().map(|row| row[0]).collect();
        assert_eq!(names, ["p0", "p1", "p2"], "{table}");
        let rx_of = |name: &str| -> f64 {
            rows.iter().find(|row| row[0] == name).expect("row")[1]
                .parse()
                .expect("RX FR/S is a number")
        };
        assert!(rx_of("p0") > 0.0, "{table}");
        assert!(rx_of("p1") > 0.0, "{table}");
        assert!(table.contains("MAC table: "), "{table}");
    }
    // --json: one typed line per draw.
    let (ok, text, stderr) = bed
        .switch
        .ctl(&["top", "--once", "--interval", "0.5", "--json"]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let rates: Rates = serde_json::from_str(lines[0]).expect("a Rates line");
    assert_eq!(rates.ports.len(), 3);
}
