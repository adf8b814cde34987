//! `tapswitch capture`: asks the switch for a capture and passes its pcapng stream on
//! to a file or stdout unchanged, block by block (a file ends on a whole block,
//! whenever it is stopped), reading the blocks as they go by for the summary
//! (frames captured, frames the switch could not queue for the capture). Ctrl-C
//! (or SIGTERM) half-closes the connection: the switch ends the stream with its
//! final statistics, so the summary is exact; a second Ctrl-C stops at once.

use std::fs::File;
use std::io::{BufReader, IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use pcap_file::PcapError;
use pcap_file::pcapng::PcapNgParser;
use pcap_file::pcapng::blocks::Block;
use pcap_file::pcapng::blocks::interface_statistics::InterfaceStatisticsOption;
use serde::Serialize;
use tapswitch::control::{ControlClient, Request};

use crate::outcome::CliError;

#[derive(Args)]
pub struct CaptureArgs {
    /// The port to capture at.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    port: Option<String>,
    /// Capture at every port (one pcapng interface per port, named after it).
    #[arg(long)]
    all: bool,
    /// Also the frames the switch dropped, each with its reason (e.g. `dropped:
    /// vlan_not_allowed`) as its packet comment (Wireshark: `frame.comment`).
    #[arg(long)]
    drops: bool,
    /// Write the pcapng to FILE instead of stdout (`-`: stdout).
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    write: Option<PathBuf>,
    /// Stop after N frames.
    #[arg(short = 'c', long = "count", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Keep at most this many bytes of each frame (default: whole frames, up to 262144).
    #[arg(short = 's', long = "snaplen", value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(1..=262_144))]
    snaplen: Option<u32>,
}

/// What `capture` says when it ends (on stderr: stdout may be the capture).
#[derive(Debug, Default, Serialize)]
struct Summary {
    /// Frames written.
    frames: u64,
    /// Frames the switch forwarded but could not queue for this capture.
    lost: u64,
}

/// Fails as the other commands do: a refusal (no such port, …) with the switch's code,
/// no switch to reach (or a stream that breaks off) as unreachable, the rest (stdout a
/// terminal, a file that cannot be made) as a plain failure.
pub fn run(control: &Path, json: bool, args: &CaptureArgs) -> Result<(), CliError> {
    let to_stdout = args.write.as_deref().is_none_or(|w| w == Path::new("-"));
    if to_stdout && std::io::stdout().is_terminal() {
        return Err(CliError::from(
            "pcapng is binary: give -w FILE, or pipe it (e.g. `| tcpdump -n -r -`)".to_owned(),
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // The second one ends the process at once; the first asks the switch to stop.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)))
            .map_err(|e| CliError::from(format!("cannot handle signals: {e}")))?;
    }
    let client = ControlClient::connect(control)?;
    let request = Request::Capture {
        port: args.port.clone(),
        drops: args.drops,
        count: args.count,
        snaplen: args.snaplen,
    };
    let (reply, stream) = client.capture(&request)?;
    let mut out: Box<dyn Write> = match &args.write {
        Some(path) if !to_stdout => Box::new(
            File::create(path)
                .map_err(|e| CliError::from(format!("cannot create {}: {e}", path.display())))?,
        ),
        _ => Box::new(std::io::stdout().lock()),
    };
    if json {
        let line = serde_json::to_string(&reply).unwrap_or_default();
        let _ = writeln!(std::io::stderr(), "{line}");
    } else {
        let where_ = match &args.port {
            Some(port) => port.clone(),
            None => format!("every port ({})", reply.ports.join(", ")),
        };
        let _ = writeln!(
            std::io::stderr(),
            "capturing at {where_}{}, {} bytes per frame",
            if args.drops { ", drops too" } else { "" },
            reply.snaplen
        );
    }
    let summary = pass_on(stream, &mut out, &stop)?;
    let mut stderr = std::io::stderr();
    let _ = if json {
        writeln!(
            stderr,
            "{}",
            serde_json::to_string(&summary).unwrap_or_default()
        )
    } else {
        writeln!(
            stderr,
            "{} frames captured; {} lost (the switch forwarded them, the capture could not keep up)",
            summary.frames, summary.lost
        )
    };
    Ok(())
}

/// Copies the stream to `out` as it comes, block by block as far as the summary goes.
fn pass_on(
    mut stream: BufReader<UnixStream>,
    out: &mut dyn Write,
    stop: &AtomicBool,
) -> Result<Summary, CliError> {
    // Reads wake up this often to see whether Ctrl-C came.
    stream
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| CliError::from(format!("cannot set up the capture stream: {e}")))?;
    let mut summary = Summary::default();
    let mut parser: Option<PcapNgParser> = None;
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut stopping = false;
    loop {
        if !stopping && stop.load(Ordering::Relaxed) {
            // The switch finishes the stream (final statistics) and closes it.
            stopping = true;
            let _ = stream.get_ref().shutdown(std::net::Shutdown::Write);
        }
        let read = match stream.read(&mut chunk) {
            Ok(0) => return Ok(summary),
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            // The switch went away mid-stream: the whole blocks that came are written.
            Err(e) => {
                return Err(CliError::unreachable(format!(
                    "the capture stream broke off: {e}"
                )));
            }
        };
        pending.extend_from_slice(&chunk[..read]);
        let whole = account(&mut parser, &pending, &mut summary).map_err(CliError::from)?;
        if out
            .write_all(&pending[..whole])
            .and_then(|()| out.flush())
            .is_err()
        {
            // The reader (e.g. `| head`, tcpdump -c) is done.
            return Ok(summary);
        }
        pending.drain(..whole);
    }
}

/// Reads the complete blocks at the start of `bytes` into `summary`; returns how many
/// bytes they took.
fn account(
    parser: &mut Option<PcapNgParser>,
    bytes: &[u8],
    summary: &mut Summary,
) -> Result<usize, String> {
    let bad = |e: PcapError| format!("the switch sent a capture that is not pcapng: {e}");
    let mut rest = bytes;
    if parser.is_none() {
        match PcapNgParser::new(rest) {
            Ok((after, new)) => {
                *parser = Some(new);
                rest = after;
            }
            Err(PcapError::IncompleteBuffer) => return Ok(0),
            Err(e) => return Err(bad(e)),
        }
    }
    let parser = parser.as_mut().expect("set above");
    loop {
        match parser.next_block(rest) {
            Ok((after, block)) => {
                match block {
                    Block::EnhancedPacket(_) => summary.frames += 1,
                    Block::InterfaceStatistics(isb) => {
                        for option in &isb.options {
                            if let InterfaceStatisticsOption::IsbIfDrop(lost) = option {
                                summary.lost = summary.lost.max(*lost);
                            }
                        }
                    }
                    _ => {}
                }
                rest = after;
            }
            Err(PcapError::IncompleteBuffer) => return Ok(bytes.len() - rest.len()),
            Err(e) => return Err(bad(e)),
        }
    }
}
