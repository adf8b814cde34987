//! Prometheus metrics over HTTP: a thread with a blocking `TcpListener` that
//! answers `GET /metrics` with the OpenMetrics text exposition, encoded by the
//! `prometheus-client` crate from a counters-only snapshot ([`Command::Counters`])
//! collected at each scrape, so a scrape costs the dataplane one copy of its
//! counters, never the MAC table. Besides the counters: `tapswitch_build_info`
//! (version, commit) and `tapswitch_start_time_seconds`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet, prometheus_text, text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use thiserror::Error;
use tracing::{info, warn};

use crate::dataplane::{
    BATCH_BUCKETS, Command, DataplaneHandle, PortCounters, PortSnapshot, Snapshot, TunnelCounters,
};
use crate::forward::DropReason;

/// How long a scraper may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("metrics endpoint {addr}: bind: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the metrics thread failed: {0}")]
    Thread(#[source] std::io::Error),
}

/// Adds to a counters snapshot what the dataplane does not count.
pub type Enrich = Arc<dyn Fn(&mut Snapshot) + Send + Sync>;

/// Where a scrape's numbers come from: the dataplane's counters, and what the control
/// plane adds to them off the packet path (the TAP netdevs' own drops, over netlink).
#[derive(Clone)]
pub struct Source {
    pub dataplane: DataplaneHandle,
    pub enrich: Option<Enrich>,
}

impl Source {
    /// The dataplane's counters alone.
    pub fn dataplane(dataplane: DataplaneHandle) -> Self {
        Self {
            dataplane,
            enrich: None,
        }
    }

    fn snapshot(&self) -> Result<Snapshot, crate::dataplane::DataplaneError> {
        let mut snapshot = self.dataplane.request(Command::Counters)?;
        if let Some(enrich) = &self.enrich {
            enrich(&mut snapshot);
        }
        Ok(snapshot)
    }
}

/// Binds `addr` and serves metrics from `source` on a thread of its own
/// (which lives as long as the process). Returns the bound address, which
/// differs from `addr` when that asked for port 0.
pub fn spawn(addr: SocketAddr, source: Source) -> Result<SocketAddr, MetricsError> {
    serve_on(bind(addr)?, source)
}

/// Binds the metrics listener (apart from [`serve_on`], so a switch can bind
/// before dropping privileges and start the thread after).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source })
}

/// Serves metrics on `listener` from a thread of its own; returns its address.
pub fn serve_on(listener: TcpListener, source: Source) -> Result<SocketAddr, MetricsError> {
    let bound = listener.local_addr().map_err(|source| MetricsError::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    std::thread::Builder::new()
        .name("tapswitch-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = serve(stream, &source) {
                            warn!(error = %e, "metrics request failed");
                        }
                    }
                    Err(e) => warn!(error = %e, "accepting a metrics connection failed"),
                }
            }
        })
        .map_err(MetricsError::Thread)?;
    info!(addr = %bound, "metrics endpoint ready");
    Ok(bound)
}

/// Like [`spawn`], for a process taking over from another (`upgrade`) that
/// still listens on `addr`: binds in the background as soon as the address is
/// free, trying for [`TAKEOVER_BIND_PATIENCE`].
pub fn spawn_when_free(addr: SocketAddr, source: Source) {
    let started = std::thread::Builder::new()
        .name("tapswitch-metrics-bind".into())
        .spawn(move || {
            let deadline = std::time::Instant::now() + TAKEOVER_BIND_PATIENCE;
            loop {
                match spawn(addr, source.clone()) {
                    Ok(_) => return,
                    Err(e) if std::time::Instant::now() >= deadline => {
                        warn!(error = %e, "metrics endpoint not taken over");
                        return;
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        });
    if let Err(e) = started {
        warn!(error = %e, "starting the metrics binder failed");
    }
}

/// How long a taking-over process waits for the old one to free the metrics address.
pub const TAKEOVER_BIND_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Answers one HTTP request; the connection is closed after the reply.
fn serve(stream: TcpStream, source: &Source) -> std::io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Only Accept changes the answer (the format).
    let mut format = Format::PrometheusText;
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        if let Some((name, value)) = header.split_once(':')
            && name.trim().eq_ignore_ascii_case("accept")
        {
            format = Format::from_accept(value);
        }
        header.clear();
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, target) {
        ("GET", "/metrics") => match source.snapshot() {
            Ok(snapshot) => ("200 OK", format.content_type(), render(&snapshot, format)),
            Err(e) => (
                "503 Service Unavailable",
                "text/plain; charset=utf-8",
                format!("{e}\n"),
            ),
        },
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "metrics are at /metrics\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET is served\n".to_owned(),
        ),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// When this process started (its start, not its predecessor's after an `upgrade`), for
/// `tapswitch_start_time_seconds`; set by [`record_start`], else at the first scrape.
static STARTED: OnceLock<SystemTime> = OnceLock::new();

/// Records now as the process's start (call first thing in `run` and `take_over`).
pub fn record_start() {
    process_start();
}

/// When this process started ([`record_start`]; now, if it was not called), as
/// `tapswitch_start_time_seconds` and `stats`' `started_at` say.
pub fn process_start() -> SystemTime {
    *STARTED.get_or_init(SystemTime::now)
}

/// The commit the binary was built from, when the build said (`TAPSWITCH_COMMIT` in the
/// environment of `cargo build`), for `tapswitch_build_info`.
pub const BUILD_COMMIT: Option<&str> = option_env!("TAPSWITCH_COMMIT");

/// The exposition formats served, both encoded by `prometheus-client` from the same
/// collector: OpenMetrics 1.0 to a scraper that asks for it in `Accept` (Prometheus does),
/// else the Prometheus text format 0.0.4 (curl, older scrapers, `promtool check metrics`).
/// The sample names are the same in both; OpenMetrics names a counter's family without
/// its `_total` and an info's without its `_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    PrometheusText,
}

impl Format {
    /// What an `Accept` header's value asks for.
    pub fn from_accept(accept: &str) -> Self {
        if accept.contains("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::PrometheusText
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::PrometheusText => prometheus_text::CONTENT_TYPE,
        }
    }
}

/// A scrape: one snapshot's metrics, encoded by `prometheus-client` when it collects.
#[derive(Debug)]
struct SnapshotCollector {
    snapshot: Snapshot,
    started: SystemTime,
}

/// One metric family: name (without the `_total` that OpenMetrics adds to a counter's
/// samples), help, and a sample per label set.
fn family<'a, L: EncodeLabelSet + 'a, M: EncodeMetric + 'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (L, M)>,
) -> Result<(), std::fmt::Error> {
    let mut samples = samples.into_iter().peekable();
    let Some((_, first)) = samples.peek() else {
        return Ok(());
    };
    let mut metric = encoder.encode_descriptor(name, help, unit, first.metric_type())?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A family of one sample without labels.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, value.metric_type())?;
    value.encode(metric)
}

type PortLabel<'a> = [(&'static str, &'a str); 1];

/// A family's name and help, with how to read its value.
type Described<F> = (&'static str, &'static str, F);
type CounterOf = fn(&PortCounters) -> u64;
type FlagOf = fn(&PortSnapshot) -> bool;
type TunnelCounterOf = fn(&TunnelCounters) -> u64;

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = &self.snapshot;
        let encoder = &mut encoder;
        let commit = BUILD_COMMIT.unwrap_or("unknown");
        single(
            encoder,
            "tapswitch_build",
            "The running binary: its version and the commit it was built from.",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", commit),
            ]),
        )?;
        let started = self
            .started
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        let start_encoder = encoder.encode_descriptor(
            "tapswitch_start_time",
            "When this switch process started, in seconds since the Unix epoch.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        ConstGauge::new(started).encode(start_encoder)?;
        let per_port = |get: fn(&PortCounters) -> u64| {
            snapshot.ports.iter().map(move |p| -> (PortLabel<'_>, _) {
                (
                    [("port", p.name.as_str())],
                    ConstCounter::new(get(&p.counters)),
                )
            })
        };
        let counters: [Described<CounterOf>; 7] = [
            (
                "tapswitch_port_rx_frames",
                "Frames read from the port.",
                |c| c.rx_frames,
            ),
            (
                "tapswitch_port_rx_bytes",
                "Bytes read from the port (vnet header included).",
                |c| c.rx_bytes,
            ),
            (
                "tapswitch_port_tx_frames",
                "Frames written to the port.",
                |c| c.tx_frames,
            ),
            (
                "tapswitch_port_tx_bytes",
                "Bytes written to the port (vnet header included).",
                |c| c.tx_bytes,
            ),
            (
                "tapswitch_port_mac_moves",
                "Source MACs that moved onto the port.",
                |c| c.mac_moves,
            ),
            (
                "tapswitch_port_mac_flaps",
                "MAC flaps held on another port that the port's frames would have moved.",
                |c| c.mac_flaps,
            ),
            (
                "tapswitch_port_shutdowns",
                "Times the port's MAC limit shut it down (mac_limit_action = \"shutdown\").",
                |c| c.shutdowns,
            ),
        ];
        for (name, help, get) in counters {
            family(encoder, name, help, None, per_port(get))?;
        }
        family(
            encoder,
            "tapswitch_port_drops",
            "Frames dropped, by port and reason.",
            None,
            snapshot.ports.iter().flat_map(|p| {
                DropReason::ALL.iter().map(move |reason| {
                    (
                        [("port", p.name.as_str()), ("reason", reason.name())],
                        ConstCounter::new(p.counters.drops.get(*reason)),
                    )
                })
            }),
        )?;
        family(
            encoder,
            "tapswitch_port_netdev_tx_dropped",
            "Frames the port's TAP netdev dropped on transmit because its queue was full: the \
             endpoint's loss before the switch, in none of the switch's counters.",
            None,
            snapshot.ports.iter().filter_map(|p| {
                Some((
                    [("port", p.name.as_str())],
                    ConstCounter::new(p.netdev_tx_dropped?),
                ))
            }),
        )?;
        // Tunnel ports only: how much of their traffic went as super-frames and trains.
        let tunnel_counters: [Described<TunnelCounterOf>; 7] = [
            (
                "tapswitch_tunnel_tx_super_frames",
                "Super-frames a tunnel port encapsulated whole (cut into segments by the port).",
                |t| t.tx_super_frames,
            ),
            (
                "tapswitch_tunnel_tx_gso_messages",
                "Messages a tunnel port sent with UDP_SEGMENT (a train of datagrams in one pass).",
                |t| t.tx_gso_messages,
            ),
            (
                "tapswitch_tunnel_tx_datagrams",
                "Datagrams a tunnel port sent, every copy counted.",
                |t| t.tx_datagrams,
            ),
            (
                "tapswitch_tunnel_rx_reads",
                "Reads of a tunnel port's socket that returned datagrams.",
                |t| t.rx_reads,
            ),
            (
                "tapswitch_tunnel_rx_datagrams",
                "Datagrams those reads returned (more than the reads: UDP_GRO trains).",
                |t| t.rx_datagrams,
            ),
            (
                "tapswitch_tunnel_rx_super_frames",
                "Super-frames a tunnel port coalesced from received segments.",
                |t| t.rx_super_frames,
            ),
            (
                "tapswitch_tunnel_rx_coalesced",
                "Received segments that went into those super-frames.",
                |t| t.rx_coalesced,
            ),
        ];
        for (name, help, get) in tunnel_counters {
            family(
                encoder,
                name,
                help,
                None,
                snapshot.ports.iter().filter_map(move |p| {
                    let tunnel = p.tunnel.as_ref()?;
                    Some(([("port", p.name.as_str())], ConstCounter::new(get(tunnel))))
                }),
            )?;
        }
        family(
            encoder,
            "tapswitch_tunnel_tx_gso_refused",
            "1 when the kernel refused UDP_SEGMENT and the tunnel port sends one datagram per \
             segment.",
            None,
            snapshot.ports.iter().filter_map(|p| {
                let tunnel = p.tunnel.as_ref()?;
                Some((
                    [("port", p.name.as_str())],
                    ConstGauge::new(i64::from(tunnel.tx_gso_refused)),
                ))
            }),
        )?;
        let flags: [Described<FlagOf>; 2] = [
            (
                "tapswitch_port_enabled",
                "1 when the port forwards, 0 when disabled.",
                |p| p.enabled,
            ),
            (
                "tapswitch_port_link_up",
                "1 when the port's netdev is up, 0 when it is down (frames to it count as link_down).",
                |p| p.link_up,
            ),
        ];
        for (name, help, get) in flags {
            family(
                encoder,
                name,
                help,
                None,
                snapshot.ports.iter().map(|p| -> (PortLabel<'_>, _) {
                    (
                        [("port", p.name.as_str())],
                        ConstGauge::new(i64::from(get(p))),
                    )
                }),
            )?;
        }
        single(
            encoder,
            "tapswitch_ports",
            "Ports in the switch.",
            ConstGauge::new(snapshot.ports.len() as u64),
        )?;
        single(
            encoder,
            "tapswitch_ports_removed",
            "Ports removed after a device error.",
            ConstCounter::new(snapshot.removed_ports.len() as u64),
        )?;
        single(
            encoder,
            "tapswitch_fdb_entries",
            "Entries in the MAC table.",
            ConstGauge::new(snapshot.fdb_size as u64),
        )?;
        let fdb = &snapshot.fdb_counters;
        for (name, help, value) in [
            ("learned", "Dynamic MAC entries created.", fdb.learned),
            ("moved", "Live MAC entries that changed port.", fdb.moved),
            (
                "evicted",
                "MAC entries evicted from a full table.",
                fdb.evicted,
            ),
            ("aged_out", "MAC entries that expired.", fdb.aged_out),
        ] {
            single(
                encoder,
                &format!("tapswitch_fdb_{name}"),
                help,
                ConstCounter::new(value),
            )?;
        }
        let stats = &snapshot.loop_stats;
        single(
            encoder,
            "tapswitch_loop_iterations",
            "Returns of the dataplane loop from epoll_wait, spinning polls included.",
            ConstCounter::new(stats.iterations),
        )?;
        for (name, help, value) in [
            (
                "tapswitch_loop_wakeups",
                "Returns of the dataplane loop from an epoll_wait that slept (thread wake-ups).",
                stats.wakeups,
            ),
            (
                "tapswitch_idle_windows",
                "Windows of spinning ahead of a predicted burst of sparse traffic.",
                stats.idle_windows,
            ),
            (
                "tapswitch_idle_window_hits",
                "Bursts that arrived while the loop spun in a predicted window.",
                stats.idle_window_hits,
            ),
            (
                "tapswitch_idle_poll_hits",
                "Spins after frames (idle_poll_us) that saw the next frame before they ended.",
                stats.idle_poll_hits,
            ),
            (
                "tapswitch_idle_poll_misses",
                "Spins after frames that ended without a frame (the loop then slept).",
                stats.idle_poll_misses,
            ),
        ] {
            single(encoder, name, help, ConstCounter::new(value))?;
        }
        single(
            encoder,
            "tapswitch_idle_window_spin_seconds",
            "Time the dataplane loop spent spinning in predicted windows.",
            ConstCounter::new(stats.idle_window_spin_ns as f64 / 1e9),
        )?;
        // Per bucket (the encoder sums them): the last one is +Inf.
        let buckets: Vec<(f64, u64)> = stats
            .batch_sizes
            .iter()
            .enumerate()
            .map(|(i, count)| {
                let bound = BATCH_BUCKETS.get(i).map_or(f64::INFINITY, |b| *b as f64);
                (bound, *count)
            })
            .collect();
        encoder
            .encode_descriptor(
                "tapswitch_batch_frames",
                "Frames read from one ready port in one visit of the loop.",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(
                stats.batch_frames as f64,
                stats.batches,
                &buckets,
                None,
            )?;
        single(
            encoder,
            "tapswitch_events_dropped",
            "Events lost because the control plane fell behind.",
            ConstCounter::new(snapshot.events_dropped),
        )?;
        if let Some(evpn) = &snapshot.evpn {
            let gobgp = [("gobgp", evpn.gobgp.as_str())];
            family(
                encoder,
                "tapswitch_evpn_connected",
                "1 while the EVPN agent has a session with gobgpd (else forwarding uses the last state).",
                None,
                [(gobgp, ConstGauge::new(i64::from(evpn.connected)))],
            )?;
            family(
                encoder,
                "tapswitch_evpn_sessions",
                "Sessions the EVPN agent has had with gobgpd.",
                None,
                [(gobgp, ConstCounter::new(evpn.sessions))],
            )?;
        }
        Ok(())
    }
}

/// The snapshot in `format` (OpenMetrics ends in `# EOF`).
pub fn render(snapshot: &Snapshot, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector {
        snapshot: snapshot.clone(),
        started: process_start(),
    }));
    let mut out = String::new();
    // Writing into a String cannot fail, and every value here encodes.
    match format {
        Format::OpenMetrics => text::encode(&mut out, &registry),
        Format::PrometheusText => prometheus_text::encode(&mut out, &registry),
    }
    .expect("metrics encode into a string");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{LoopStats, PortCounters, PortSnapshot};
    use crate::fdb::{FdbCounters, PortId};

    #[test]
    fn renders_every_family_with_labels() {
        let mut counters = PortCounters {
            rx_frames: 7,
            ..PortCounters::default()
        };
        counters.drops.count(DropReason::Oversize);
        let mut loop_stats = LoopStats {
            batches: 3,
            batch_frames: 70,
            wakeups: 5,
            idle_windows: 9,
            idle_window_hits: 8,
            idle_window_spin_ns: 1_500_000,
            idle_poll_hits: 6,
            idle_poll_misses: 5,
            ..LoopStats::default()
        };
        loop_stats.batch_sizes[0] = 1;
        loop_stats.batch_sizes[BATCH_BUCKETS.len()] = 2;
        let snapshot = Snapshot {
            ports: vec![PortSnapshot {
                id: PortId(0),
                name: "p\"0".into(),
                mtu: 1500,
                vnet_hdr: true,
                enabled: true,
                link_up: true,
                counters,
                netdev_tx_dropped: Some(5),
                removed_at: None,
                tunnel: Some(TunnelCounters {
                    tx_super_frames: 11,
                    rx_datagrams: 40,
                    tx_gso_refused: true,
                    ..TunnelCounters::default()
                }),
            }],
            removed_ports: vec![],
            fdb: vec![],
            fdb_remotes: vec![],
            fdb_size: 4,
            fdb_counters: FdbCounters::default(),
            mac_flaps: vec![],
            loop_stats,
            events_dropped: 0,
            evpn: Some(crate::dataplane::EvpnSummary {
                gobgp: "127.0.0.1:50051".into(),
                connected: true,
                sessions: 2,
                last_error: None,
            }),
        };
        let classic = render(&snapshot, Format::PrometheusText);
        for line in [
            "# TYPE tapswitch_port_rx_frames_total counter",
            "tapswitch_port_rx_frames_total{port=\"p\\\"0\"} 7",
            "tapswitch_batch_frames_bucket{le=\"1\"} 1",
            "tapswitch_batch_frames_bucket{le=\"+Inf\"} 3",
            "# TYPE tapswitch_build_info gauge",
            "# TYPE tapswitch_start_time_seconds gauge",
        ] {
            assert!(
                classic.lines().any(|l| l == line),
                "{line} missing in\n{classic}"
            );
        }
        assert!(!classic.contains("# EOF"), "{classic}");
        let text = render(&snapshot, Format::OpenMetrics);
        for line in [
            "# TYPE tapswitch_port_rx_frames counter",
            "tapswitch_port_rx_frames_total{port=\"p\\\"0\"} 7",
            "tapswitch_port_drops_total{port=\"p\\\"0\",reason=\"oversize\"} 1",
            "tapswitch_port_shutdowns_total{port=\"p\\\"0\"} 0",
            "tapswitch_port_mac_flaps_total{port=\"p\\\"0\"} 0",
            "tapswitch_fdb_entries 4",
            "tapswitch_port_netdev_tx_dropped_total{port=\"p\\\"0\"} 5",
            "tapswitch_tunnel_tx_super_frames_total{port=\"p\\\"0\"} 11",
            "tapswitch_tunnel_rx_datagrams_total{port=\"p\\\"0\"} 40",
            "tapswitch_tunnel_rx_reads_total{port=\"p\\\"0\"} 0",
            "tapswitch_tunnel_tx_gso_refused{port=\"p\\\"0\"} 1",
            "tapswitch_batch_frames_bucket{le=\"1.0\"} 1",
            "tapswitch_batch_frames_bucket{le=\"128.0\"} 1",
            "tapswitch_batch_frames_bucket{le=\"+Inf\"} 3",
            "tapswitch_batch_frames_sum 70.0",
            "tapswitch_loop_wakeups_total 5",
            "tapswitch_idle_windows_total 9",
            "tapswitch_idle_window_hits_total 8",
            "tapswitch_idle_window_spin_seconds_total 0.0015",
            "tapswitch_idle_poll_hits_total 6",
            "tapswitch_idle_poll_misses_total 5",
            "# TYPE tapswitch_batch_frames histogram",
            "tapswitch_evpn_connected{gobgp=\"127.0.0.1:50051\"} 1",
            "tapswitch_evpn_sessions_total{gobgp=\"127.0.0.1:50051\"} 2",
            "# TYPE tapswitch_build info",
            &format!(
                "tapswitch_build_info{{version=\"{}\",commit=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION"),
                BUILD_COMMIT.unwrap_or("unknown")
            ),
            "# UNIT tapswitch_start_time_seconds seconds",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert_eq!(text.lines().last(), Some("# EOF"), "{text}");
        let started = text
            .lines()
            .find_map(|l| l.strip_prefix("tapswitch_start_time_seconds "))
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no start time in\n{text}"));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!(started > 1.0e9 && started <= now.as_secs_f64(), "{started}");
    }
}
