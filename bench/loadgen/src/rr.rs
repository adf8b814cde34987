//! UDP request/response latency: one request outstanding at a time, 64-byte
//! payloads, nanosecond round-trip times, exact percentiles.

use crate::stats::percentile_sorted;
use serde::{Deserialize, Serialize};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Payload size of every request and response.
pub const PAYLOAD_BYTES: usize = 64;

/// Failures of the request/response tool.
#[derive(Debug, thiserror::Error)]
pub enum RrError {
    #[error("rr socket on {addr}: {source}")]
    Socket { addr: SocketAddr, source: io::Error },
    #[error("rr send to {addr}: {source}")]
    Send { addr: SocketAddr, source: io::Error },
    #[error("rr receive from {addr}: {source}")]
    Receive { addr: SocketAddr, source: io::Error },
    #[error("no response from {addr} to any of the {attempts} warm-up requests")]
    NoServer { addr: SocketAddr, attempts: u32 },
}

/// Echoes every datagram back to its sender, forever.
pub fn serve(bind: SocketAddr) -> Result<(), RrError> {
    let socket = UdpSocket::bind(bind).map_err(|source| RrError::Socket { addr: bind, source })?;
    let mut buffer = [0u8; 2048];
    loop {
        let (len, peer) = socket
            .recv_from(&mut buffer)
            .map_err(|source| RrError::Receive { addr: bind, source })?;
        socket
            .send_to(&buffer[..len], peer)
            .map_err(|source| RrError::Send { addr: peer, source })?;
    }
}

/// How long and how hard the client measures.
#[derive(Debug, Clone, Copy)]
pub struct ClientParams {
    pub server: SocketAddr,
    /// Measured requests (after warm-up).
    pub count: u32,
    /// Stop measuring after this long even if `count` is not reached.
    pub budget: Duration,
    /// Unmeasured requests first (caches, switch learning, CPU frequency).
    pub warmup: u32,
    /// A request with no response after this long counts as lost.
    pub timeout: Duration,
    /// Paced: measured requests start this far apart (on a fixed schedule, so a
    /// slow answer does not shift the later ones); back to back when `None`.
    pub interval: Option<Duration>,
}

/// Latency summary printed by `rr-client` as one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RrReport {
    pub samples: u64,
    pub lost: u64,
    pub min_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    pub mean_ns: f64,
}

impl RrReport {
    /// Summarises raw round-trip times (any order).
    pub fn from_samples(mut rtts_ns: Vec<u64>, lost: u64) -> Self {
        rtts_ns.sort_unstable();
        let at = |pct| percentile_sorted(&rtts_ns, pct).unwrap_or(0);
        let mean_ns = if rtts_ns.is_empty() {
            0.0
        } else {
            rtts_ns.iter().sum::<u64>() as f64 / rtts_ns.len() as f64
        };
        Self {
            samples: rtts_ns.len() as u64,
            lost,
            min_ns: rtts_ns.first().copied().unwrap_or(0),
            p50_ns: at(50.0),
            p90_ns: at(90.0),
            p99_ns: at(99.0),
            p999_ns: at(99.9),
            max_ns: rtts_ns.last().copied().unwrap_or(0),
            mean_ns,
        }
    }
}

/// Runs the client: sequence-numbered requests, one at a time; responses with
/// a stale sequence number (a late answer to a timed-out request) are skipped.
pub fn client(params: ClientParams) -> Result<RrReport, RrError> {
    let server = params.server;
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("literal address");
    let socket = UdpSocket::bind(local).map_err(|source| RrError::Socket {
        addr: server,
        source,
    })?;
    socket.connect(server).map_err(|source| RrError::Socket {
        addr: server,
        source,
    })?;
    socket
        .set_read_timeout(Some(params.timeout))
        .map_err(|source| RrError::Socket {
            addr: server,
            source,
        })?;

    let mut request = [0u8; PAYLOAD_BYTES];
    let mut response = [0u8; 2048];
    let mut sequence: u64 = 0;
    let mut exchange = |sequence: u64| -> Result<Option<u64>, RrError> {
        request[..8].copy_from_slice(&sequence.to_le_bytes());
        let start = Instant::now();
        socket.send(&request).map_err(|source| RrError::Send {
            addr: server,
            source,
        })?;
        loop {
            match socket.recv(&mut response) {
                Ok(len) if len >= 8 && response[..8] == sequence.to_le_bytes() => {
                    return Ok(Some(start.elapsed().as_nanos() as u64));
                }
                Ok(_) => {
                    if start.elapsed() >= params.timeout {
                        return Ok(None);
                    }
                }
                // A refused port (ICMP unreachable: no server yet) is as unanswered as a timeout.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    return Ok(None);
                }
                Err(source) => {
                    return Err(RrError::Receive {
                        addr: server,
                        source,
                    });
                }
            }
        }
    };

    let mut answered_warmups = 0;
    for _ in 0..params.warmup.max(1) {
        sequence += 1;
        if exchange(sequence)?.is_some() {
            answered_warmups += 1;
        }
    }
    if answered_warmups == 0 {
        return Err(RrError::NoServer {
            addr: server,
            attempts: params.warmup.max(1),
        });
    }

    let mut rtts = Vec::with_capacity(params.count as usize);
    let mut lost = 0;
    let started = Instant::now();
    let mut sent = 0u32;
    while rtts.len() + (lost as usize) < params.count as usize && started.elapsed() < params.budget
    {
        if let Some(interval) = params.interval {
            let due = started + interval * sent;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        sent += 1;
        sequence += 1;
        match exchange(sequence)? {
            Some(rtt) => rtts.push(rtt),
            None => lost += 1,
        }
    }
    Ok(RrReport::from_samples(rtts, lost))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_uses_exact_percentiles_of_unsorted_samples() {
        let samples: Vec<u64> = (1..=1000).rev().map(|v| v * 1000).collect();
        let report = RrReport::from_samples(samples, 3);
        assert_eq!(report.samples, 1000);
        assert_eq!(report.lost, 3);
        assert_eq!(report.min_ns, 1000);
        assert_eq!(report.p50_ns, 500_000);
        assert_eq!(report.p99_ns, 990_000);
        assert_eq!(report.p999_ns, 999_000);
        assert_eq!(report.max_ns, 1_000_000);
        assert_eq!(report.mean_ns, 500_500.0);
    }

    #[test]
    fn client_and_server_on_loopback() {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        std::thread::spawn(move || serve(addr));
        std::thread::sleep(Duration::from_millis(50));
        let report = client(ClientParams {
            server: addr,
            count: 500,
            budget: Duration::from_secs(5),
            warmup: 10,
            timeout: Duration::from_millis(200),
            interval: None,
        })
        .unwrap();
        assert_eq!(report.samples + report.lost, 500);
        assert!(report.samples >= 490, "{report:?}");
        assert!(
            report.min_ns > 0 && report.min_ns <= report.p50_ns && report.p50_ns <= report.p99_ns
        );
    }

    #[test]
    fn paced_client_keeps_its_schedule() {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        std::thread::spawn(move || serve(addr));
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        let report = client(ClientParams {
            server: addr,
            count: 50,
            budget: Duration::from_secs(10),
            warmup: 5,
            timeout: Duration::from_millis(200),
            interval: Some(Duration::from_millis(2)),
        })
        .unwrap();
        assert_eq!(report.samples + report.lost, 50);
        // 49 gaps of 2 ms at least (the schedule never runs early).
        assert!(
            started.elapsed() >= Duration::from_millis(98),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn client_without_server_says_so() {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let error = client(ClientParams {
            server: addr,
            count: 10,
            budget: Duration::from_secs(1),
            warmup: 2,
            timeout: Duration::from_millis(20),
            interval: None,
        })
        .unwrap_err();
        assert!(
            matches!(error, RrError::NoServer { attempts: 2, .. }),
            "{error}"
        );
    }
}
