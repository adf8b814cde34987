//! Prometheus metrics over HTTP: a thread with a blocking `TcpListener` that
//! answers `GET /metrics` with the text exposition format, rendered from a
//! counters-only snapshot ([`Command::Counters`]) so a scrape costs the
//! dataplane one copy of its counters, never the MAC table.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tracing::{info, warn};

use crate::dataplane::{BATCH_BUCKETS, Command, DataplaneHandle, Snapshot};
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
    // Headers are read and ignored: nothing in them changes the answer.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, target) {
        ("GET", "/metrics") => match source.snapshot() {
            Ok(snapshot) => (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                render(&snapshot),
            ),
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

/// Escapes a label value for the text format.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The snapshot in the Prometheus text exposition format.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let per_port = |get: &dyn Fn(&crate::dataplane::PortCounters) -> u64| -> Vec<(String, u64)> {
        snapshot
            .ports
            .iter()
            .map(|p| (format!("{{port=\"{}\"}}", label(&p.name)), get(&p.counters)))
            .collect()
    };
    family(
        "tapswitch_port_rx_frames_total",
        "counter",
        "Frames read from the port.",
        &per_port(&|c| c.rx_frames),
    );
    family(
        "tapswitch_port_rx_bytes_total",
        "counter",
        "Bytes read from the port (vnet header included).",
        &per_port(&|c| c.rx_bytes),
    );
    family(
        "tapswitch_port_tx_frames_total",
        "counter",
        "Frames written to the port.",
        &per_port(&|c| c.tx_frames),
    );
    family(
        "tapswitch_port_tx_bytes_total",
        "counter",
        "Bytes written to the port (vnet header included).",
        &per_port(&|c| c.tx_bytes),
    );
    family(
        "tapswitch_port_mac_moves_total",
        "counter",
        "Source MACs that moved onto the port.",
        &per_port(&|c| c.mac_moves),
    );
    let drops: Vec<(String, u64)> = snapshot
        .ports
        .iter()
        .flat_map(|p| {
            DropReason::ALL.iter().map(move |r| {
                (
                    format!("{{port=\"{}\",reason=\"{}\"}}", label(&p.name), r.name()),
                    p.counters.drops.get(*r),
                )
            })
        })
        .collect();
    family(
        "tapswitch_port_drops_total",
        "counter",
        "Frames dropped, by port and reason.",
        &drops,
    );
    let netdev_drops: Vec<(String, u64)> = snapshot
        .ports
        .iter()
        .filter_map(|p| {
            Some((
                format!("{{port=\"{}\"}}", label(&p.name)),
                p.netdev_tx_dropped?,
            ))
        })
        .collect();
    family(
        "tapswitch_port_netdev_tx_dropped_total",
        "counter",
        "Frames the port's TAP netdev dropped on transmit because its queue was full: the endpoint's loss before the switch, in none of the switch's counters.",
        &netdev_drops,
    );
    let enabled: Vec<(String, u64)> = snapshot
        .ports
        .iter()
        .map(|p| {
            (
                format!("{{port=\"{}\"}}", label(&p.name)),
                u64::from(p.enabled),
            )
        })
        .collect();
    family(
        "tapswitch_port_enabled",
        "gauge",
        "1 when the port forwards, 0 when disabled.",
        &enabled,
    );
    let link_up: Vec<(String, u64)> = snapshot
        .ports
        .iter()
        .map(|p| {
            (
                format!("{{port=\"{}\"}}", label(&p.name)),
                u64::from(p.link_up),
            )
        })
        .collect();
    family(
        "tapswitch_port_link_up",
        "gauge",
        "1 when the port's netdev is up, 0 when it is down (frames to it count as link_down).",
        &link_up,
    );
    let plain = |value: u64| vec![(String::new(), value)];
    family(
        "tapswitch_ports",
        "gauge",
        "Ports in the switch.",
        &plain(snapshot.ports.len() as u64),
    );
    family(
        "tapswitch_ports_removed_total",
        "counter",
        "Ports removed after a device error.",
        &plain(snapshot.removed_ports.len() as u64),
    );
    family(
        "tapswitch_fdb_entries",
        "gauge",
        "Entries in the MAC table.",
        &plain(snapshot.fdb_size as u64),
    );
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
        family(
            &format!("tapswitch_fdb_{name}_total"),
            "counter",
            help,
            &plain(value),
        );
    }
    let stats = &snapshot.loop_stats;
    family(
        "tapswitch_loop_iterations_total",
        "counter",
        "Returns of the dataplane loop from epoll_wait.",
        &plain(stats.iterations),
    );
    let mut buckets = Vec::new();
    let mut cumulative = 0;
    for (i, count) in stats.batch_sizes.iter().enumerate() {
        cumulative += count;
        let bound = BATCH_BUCKETS
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
        buckets.push((format!("_bucket{{le=\"{bound}\"}}"), cumulative));
    }
    buckets.push(("_sum".to_owned(), stats.batch_frames));
    buckets.push(("_count".to_owned(), stats.batches));
    family(
        "tapswitch_batch_frames",
        "histogram",
        "Frames read from one ready port in one visit of the loop.",
        &buckets,
    );
    family(
        "tapswitch_events_dropped_total",
        "counter",
        "Events lost because the control plane fell behind.",
        &plain(snapshot.events_dropped),
    );
    if let Some(evpn) = &snapshot.evpn {
        let gobgp = format!("{{gobgp=\"{}\"}}", label(&evpn.gobgp));
        family(
            "tapswitch_evpn_connected",
            "gauge",
            "1 while the EVPN agent has a session with gobgpd (else forwarding uses the last state).",
            &[(gobgp.clone(), u64::from(evpn.connected))],
        );
        family(
            "tapswitch_evpn_sessions_total",
            "counter",
            "Sessions the EVPN agent has had with gobgpd.",
            &[(gobgp, evpn.sessions)],
        );
    }
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
        let text = render(&snapshot);
        for line in [
            "tapswitch_port_rx_frames_total{port=\"p\\\"0\"} 7",
            "tapswitch_port_drops_total{port=\"p\\\"0\",reason=\"oversize\"} 1",
            "tapswitch_fdb_entries 4",
            "tapswitch_port_netdev_tx_dropped_total{port=\"p\\\"0\"} 5",
            "tapswitch_batch_frames_bucket{le=\"1\"} 1",
            "tapswitch_batch_frames_bucket{le=\"128\"} 1",
            "tapswitch_batch_frames_bucket{le=\"+Inf\"} 3",
            "tapswitch_batch_frames_sum 70",
            "# TYPE tapswitch_batch_frames histogram",
            "tapswitch_evpn_connected{gobgp=\"127.0.0.1:50051\"} 1",
            "tapswitch_evpn_sessions_total{gobgp=\"127.0.0.1:50051\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
