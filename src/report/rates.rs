//! `stats --rate` and `top`: per-port rates, one port per line.

use std::fmt::Write;

use tapswitch::control::rates::{PortRates, Rates};

/// What `top` sorts its rows by (the biggest first, names ascending).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    Rx,
    Tx,
    Drops,
    Name,
}

impl SortKey {
    /// The key a line typed while `top` runs asks for.
    pub fn from_key(text: &str) -> Option<SortKey> {
        match text.trim() {
            "r" | "rx" => Some(SortKey::Rx),
            "t" | "tx" => Some(SortKey::Tx),
            "d" | "drops" => Some(SortKey::Drops),
            "n" | "name" => Some(SortKey::Name),
            _ => None,
        }
    }

    fn sort(self, ports: &mut [&PortRates]) {
        let by = |value: fn(&PortRates) -> f64| {
            move |a: &&PortRates, b: &&PortRates| {
                value(b)
                    .total_cmp(&value(a))
                    .then_with(|| a.name.cmp(&b.name))
            }
        };
        match self {
            SortKey::Rx => ports.sort_by(by(|p| p.rx_frames_per_sec)),
            SortKey::Tx => ports.sort_by(by(|p| p.tx_frames_per_sec)),
            SortKey::Drops => ports.sort_by(by(|p| p.drops_per_sec)),
            SortKey::Name => ports.sort_by(|a, b| a.name.cmp(&b.name)),
        }
    }
}

/// Bytes per second with a binary-free SI suffix: `1.2M`.
fn si(value: f64) -> String {
    let (scaled, suffix) = if value >= 1e9 {
        (value / 1e9, "G")
    } else if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "k")
    } else {
        return format!("{value:.0}");
    };
    format!("{scaled:.1}{suffix}")
}

/// The rates table, sorted by `sort`.
pub fn rates(rates: &Rates, sort: SortKey) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<15} {:>10} {:>10} {:>10} {:>10} {:>9}  DROPS BY REASON",
        "PORT", "RX FR/S", "RX B/S", "TX FR/S", "TX B/S", "DROPS/S"
    );
    let mut ports: Vec<&PortRates> = rates.ports.iter().collect();
    sort.sort(&mut ports);
    for port in ports {
        let reasons: Vec<String> = port
            .drops_by_reason
            .iter()
            .map(|(reason, rate)| format!("{reason}={rate:.1}"))
            .collect();
        let line = format!(
            "{:<15} {:>10.1} {:>10} {:>10.1} {:>10} {:>9.1}  {}",
            port.name,
            port.rx_frames_per_sec,
            si(port.rx_bytes_per_sec),
            port.tx_frames_per_sec,
            si(port.tx_bytes_per_sec),
            port.drops_per_sec,
            reasons.join(" ")
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let l = &rates.loop_load;
    let _ = writeln!(
        out,
        "MAC table: {} entries, {:.1} learned/s; loop: {:.0} wakeups/s ({:.0} polls/s, {:.1}% spinning ahead), {:.0} port visits/s, {:.1} frames/visit (over {:.1}s)",
        rates.fdb_size,
        rates.fdb_learned_per_sec,
        l.wakeups_per_sec,
        l.iterations_per_sec,
        l.idle_window_spin_share * 100.0,
        l.port_visits_per_sec,
        l.frames_per_visit,
        rates.interval_secs
    );
    out
}
