//! iperf3 TCP throughput between two namespaces, read from its `-J` report.

use crate::proc::{self, OwnedChild, ProcError};
use serde::Serialize;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Failures of an iperf3 measurement.
#[derive(Debug, thiserror::Error)]
pub enum IperfError {
    #[error("iperf3: {0}")]
    Command(#[from] ProcError),
    #[error("iperf3 server in namespace {netns} was not listening on port {port} after 5 s")]
    ServerNotListening { netns: String, port: u16 },
    #[error("iperf3 -J report: {0}")]
    Report(String),
}

/// One TCP test's result.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TcpReport {
    pub streams: u32,
    /// Receiver-side goodput.
    pub gbps: f64,
    /// Bytes the receiver got.
    pub bytes: u64,
    pub retransmits: u64,
    pub seconds: f64,
}

/// Where and how long to test.
#[derive(Debug, Clone)]
pub struct TcpTest {
    pub server_netns: String,
    pub client_netns: String,
    pub server_address: String,
    pub port: u16,
    pub streams: u32,
    pub seconds: u32,
}

/// Runs one iperf3 test: a one-shot server in the server namespace, the client
/// in the other, and the receiver's totals from the client's JSON.
pub fn run_tcp(test: &TcpTest) -> Result<TcpReport, IperfError> {
    let port = test.port.to_string();
    let mut server = Command::new("ip");
    server
        .args([
            "netns",
            "exec",
            &test.server_netns,
            "iperf3",
            "-s",
            "-1",
            "-B",
            &test.server_address,
            "-p",
            &port,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut server = OwnedChild::spawn(server, Duration::from_secs(2))?;
    let filter = format!("sport = :{port}");
    let listening = proc::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        proc::run(
            "ip",
            &["netns", "exec", &test.server_netns, "ss", "-Hltn", &filter],
        )
        .is_ok_and(|out| !out.trim().is_empty())
    });
    if !listening {
        return Err(IperfError::ServerNotListening {
            netns: test.server_netns.clone(),
            port: test.port,
        });
    }
    let streams = test.streams.to_string();
    let seconds = test.seconds.to_string();
    let json = proc::run(
        "ip",
        &[
            "netns",
            "exec",
            &test.client_netns,
            "iperf3",
            "-c",
            &test.server_address,
            "-p",
            &port,
            "-P",
            &streams,
            "-t",
            &seconds,
            "-J",
        ],
    )?;
    let report = parse_report(&json, test.streams)?;
    // The one-shot server exits by itself once the client is done.
    server.wait_for_exit(Duration::from_secs(2))?;
    Ok(report)
}

/// Extracts the receiver's totals from an iperf3 `-J` client report.
pub fn parse_report(json: &str, streams: u32) -> Result<TcpReport, IperfError> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| IperfError::Report(e.to_string()))?;
    if let Some(error) = value["error"].as_str() {
        return Err(IperfError::Report(format!("iperf3 says: {error}")));
    }
    let received = &value["end"]["sum_received"];
    let field = |name: &str| {
        received[name]
            .as_f64()
            .ok_or_else(|| IperfError::Report(format!("end.sum_received.{name} missing")))
    };
    Ok(TcpReport {
        streams,
        gbps: field("bits_per_second")? / 1e9,
        bytes: field("bytes")? as u64,
        retransmits: value["end"]["sum_sent"]["retransmits"]
            .as_u64()
            .unwrap_or(0),
        seconds: field("seconds")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_receiver_totals() {
        let json = r#"{"start":{},"intervals":[],"end":{
            "sum_sent":{"start":0,"end":3.0,"seconds":3.0,"bytes":6600000000,"bits_per_second":17600000000.0,"retransmits":12},
            "sum_received":{"start":0,"end":3.0,"seconds":3.0002,"bytes":6590000000,"bits_per_second":17572000000.0}}}"#;
        let report = parse_report(json, 4).unwrap();
        assert_eq!(report.streams, 4);
        assert_eq!(report.bytes, 6_590_000_000);
        assert_eq!(report.retransmits, 12);
        assert!((report.gbps - 17.572).abs() < 1e-9);
    }

    #[test]
    fn surfaces_iperf_errors() {
        let error = parse_report(
            r#"{"start":{},"end":{},"error":"unable to connect to server"}"#,
            1,
        )
        .unwrap_err();
        assert!(error.to_string().contains("unable to connect"), "{error}");
        assert!(parse_report("{}", 1).is_err());
    }
}
