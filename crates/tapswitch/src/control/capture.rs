//! `capture`: a control connection turned into a pcapng stream of the frames a
//! capture session ([`crate::dataplane::CaptureSession`]) hands over.
//!
//! After the [`CaptureReply`] line, the connection carries pcapng (big-endian, one
//! section): one interface block per port (`if_name`, nanosecond timestamps), an
//! enhanced packet block per frame with its direction in `epb_flags` (inbound 1,
//! outbound 2, and the reception type from the destination address) and, for a
//! dropped frame, `dropped: REASON` (the core's `DropReason` name) as its comment;
//! and every second interface statistics blocks: frames delivered per port
//! (`isb_usrdeliv`) and, on the first, the frames the switch could not queue for
//! this capture (`isb_ifdrop`, with a comment saying so). The stream ends, with
//! final statistics, after `count` frames or when the reader half-closes the
//! connection (or sends anything: `tapswitch capture` does on Ctrl-C), and without
//! them when the reader goes away; each ends the session, so the workers stop copying.
//! Unlike replies, the stream's writes have no timeout: a reader that pauses only
//! loses frames (counted).

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::interface_statistics::{
    InterfaceStatisticsBlock, InterfaceStatisticsOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use thiserror::Error;
use tracing::{debug, info};

use super::protocol::{CaptureReply, Reply, RequestError, Response};
use super::{Shared, write_line};
use crate::dataplane::{
    CaptureFilter, CaptureSession, CapturedFrame, Command, DEFAULT_SNAPLEN, Direction, QUEUE_FRAMES,
};
use crate::fdb::PortId;

/// Largest snap length a request may ask for (the largest frame a port hands over fits).
pub const MAX_SNAPLEN: u32 = DEFAULT_SNAPLEN;
/// How often statistics are written (and a reader that went away is noticed).
const STATISTICS_INTERVAL: Duration = Duration::from_secs(1);
/// How often, at most, an idle capture looks whether its reader asked it to stop.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// `epb_flags` direction bits.
const EPB_INBOUND: u32 = 0b01;
const EPB_OUTBOUND: u32 = 0b10;

/// Why a capture stream ended early.
#[derive(Debug, Error)]
enum StreamError {
    #[error("writing the capture failed: {0}")]
    Pcap(#[from] pcap_file::PcapError),
    #[error("writing the capture failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A capture the dataplane has started, not yet streaming.
pub(super) struct Started {
    session: CaptureSession,
    /// The ports with an interface block at the start, in that order.
    ports: Vec<(PortId, String)>,
    count: Option<u64>,
    snaplen: u32,
    /// Every port, for the names of ports added later (`--all`).
    names: HashMap<PortId, String>,
    /// Every port (`--all`): a port added later gets its interface block then.
    all: bool,
}

/// Checks a `capture` request and starts its session in the dataplane.
pub(super) fn start(
    shared: &Shared,
    port: Option<String>,
    drops: bool,
    count: Option<u64>,
    snaplen: Option<u32>,
) -> Result<Started, RequestError> {
    let snaplen = snaplen.unwrap_or(DEFAULT_SNAPLEN);
    if !(1..=MAX_SNAPLEN).contains(&snaplen) {
        return Err(RequestError::invalid_value(format!(
            "snaplen {snaplen} is out of range: a capture keeps 1 to {MAX_SNAPLEN} bytes of each frame"
        )));
    }
    if count == Some(0) {
        return Err(RequestError::invalid_value(
            "count 0 would capture nothing: give at least 1, or no count to capture until stopped",
        ));
    }
    let filter = CaptureFilter {
        port: None,
        drops,
        snaplen,
    };
    let started = shared.dataplane.request(|reply| Command::StartCapture {
        port: port.clone(),
        filter,
        reply,
    })??;
    let names: HashMap<PortId, String> = started.ports.iter().cloned().collect();
    let ports = match &port {
        Some(name) => started
            .ports
            .into_iter()
            .filter(|(_, n)| n == name)
            .collect(),
        None => started.ports,
    };
    info!(
        port = port.as_deref().unwrap_or("(all)"),
        drops,
        ?count,
        snaplen,
        "capture started"
    );
    Ok(Started {
        session: started.session,
        ports,
        count,
        snaplen,
        names,
        all: port.is_none(),
    })
}

/// Writes the reply line, then the pcapng stream until `count` frames, the
/// reader going away, or the switch stopping.
pub(super) fn stream(shared: &Shared, mut writer: UnixStream, started: Started) {
    let reply = CaptureReply {
        ports: started.ports.iter().map(|(_, name)| name.clone()).collect(),
        snaplen: started.snaplen,
        queue_frames: QUEUE_FRAMES,
    };
    let line = Response::new(Reply::Capture(reply).to_result()).to_wire();
    if write_line(&mut writer, &line).is_err() {
        return;
    }
    // A reader may pause (`| less`): the stream waits for it, and the workers count
    // what its queue cannot hold meanwhile, rather than ending the capture.
    let _ = writer.set_write_timeout(None);
    match write_pcapng(shared, writer, started) {
        Ok(summary) => info!(frames = summary.0, lost = summary.1, "capture ended"),
        // The reader went away: that is how most captures end.
        Err(error) => debug!(%error, "capture stream ended"),
    }
}

/// The pcapng writer and which interface each port is.
struct PcapStream {
    pcap: PcapNgWriter<BufWriter<UnixStream>>,
    interfaces: HashMap<PortId, u32>,
    /// Frames written, per interface.
    delivered: Vec<u64>,
    snaplen: u32,
}

impl PcapStream {
    fn add_interface(&mut self, id: PortId, name: &str) -> Result<u32, StreamError> {
        let idb = InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: self.snaplen,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(name.to_owned())),
                InterfaceDescriptionOption::IfDescription(Cow::Owned(format!(
                    "tapswitch port {name} (id {id})"
                ))),
                // pcap-file writes EPB timestamps in nanoseconds.
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        self.pcap.write_pcapng_block(idb)?;
        let index = self.delivered.len() as u32;
        self.interfaces.insert(id, index);
        self.delivered.push(0);
        Ok(index)
    }

    fn write_frame(&mut self, interface: u32, frame: &CapturedFrame) -> Result<(), StreamError> {
        let mut flags = match frame.direction {
            Direction::Inbound => EPB_INBOUND,
            Direction::Outbound => EPB_OUTBOUND,
        };
        flags |= reception_type(&frame.data) << 2;
        let mut options = vec![EnhancedPacketOption::Flags(flags)];
        if let Some(reason) = frame.drop {
            options.push(EnhancedPacketOption::Comment(Cow::Owned(format!(
                "dropped: {}",
                reason.name()
            ))));
        }
        let epb = EnhancedPacketBlock {
            interface_id: interface,
            timestamp: since_epoch(frame.time),
            original_len: frame.original_len,
            data: Cow::Borrowed(&frame.data),
            options,
        };
        self.pcap.write_pcapng_block(epb)?;
        self.delivered[interface as usize] += 1;
        Ok(())
    }

    fn write_statistics(&mut self, lost: u64) -> Result<(), StreamError> {
        let now = since_epoch(SystemTime::now()).as_nanos() as u64;
        for interface in 0..self.delivered.len() {
            let mut options = vec![InterfaceStatisticsOption::IsbUsrDeliv(
                self.delivered[interface],
            )];
            if interface == 0 {
                options.push(InterfaceStatisticsOption::IsbIfDrop(lost));
                options.push(InterfaceStatisticsOption::Comment(Cow::Owned(format!(
                    "tapswitch: {lost} frames (all ports) not captured: the capture queue was full; the switch forwarded them"
                ))));
            }
            self.pcap.write_pcapng_block(InterfaceStatisticsBlock {
                interface_id: interface as u32,
                // Big-endian section: the u64 is the spec's high word, then low word.
                timestamp: now,
                options,
            })?;
        }
        Ok(())
    }
}

/// Returns the frames written and lost.
fn write_pcapng(
    shared: &Shared,
    writer: UnixStream,
    started: Started,
) -> Result<(u64, u64), StreamError> {
    let Started {
        session,
        ports,
        count,
        snaplen,
        mut names,
        all,
    } = started;
    let section = SectionHeaderBlock {
        options: vec![SectionHeaderOption::UserApplication(Cow::Owned(format!(
            "tapswitch {}",
            env!("CARGO_PKG_VERSION")
        )))],
        ..SectionHeaderBlock::default()
    };
    let peer = writer.as_raw_fd();
    let mut out = PcapStream {
        pcap: PcapNgWriter::with_section_header(BufWriter::new(writer), section)?,
        interfaces: HashMap::new(),
        delivered: Vec::new(),
        snaplen,
    };
    for (id, name) in &ports {
        out.add_interface(*id, name)?;
    }
    out.write_statistics(0)?;
    out.pcap.get_mut().flush()?;
    let mut written = 0u64;
    let mut unflushed = false;
    let mut next_statistics = Instant::now() + STATISTICS_INTERVAL;
    // Asked to stop while frames kept coming: at most this many more, those queued then.
    let mut draining: Option<usize> = None;
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        // Flush as soon as the queue is empty: a reader sees a frame when it comes.
        let wait = if unflushed || draining.is_some() {
            Duration::ZERO
        } else {
            next_statistics
                .saturating_duration_since(Instant::now())
                .min(STOP_POLL_INTERVAL)
        };
        match session.next(wait) {
            Some(frame) => {
                let interface = match out.interfaces.get(&frame.port) {
                    Some(&interface) => interface,
                    None if !all => continue,
                    None => {
                        let name = port_name(shared, &mut names, frame.port);
                        out.add_interface(frame.port, &name)?
                    }
                };
                out.write_frame(interface, &frame)?;
                written += 1;
                unflushed = true;
                if count.is_some_and(|count| written >= count) {
                    break;
                }
                if let Some(left) = &mut draining {
                    *left -= 1;
                    if *left == 0 {
                        break;
                    }
                }
            }
            None if draining.is_some() => break,
            None if unflushed => {
                out.pcap.get_mut().flush()?;
                unflushed = false;
            }
            None if peer_asked_to_stop(peer) => break,
            None => {}
        }
        if draining.is_none() && Instant::now() >= next_statistics {
            if peer_asked_to_stop(peer) {
                draining = Some(QUEUE_FRAMES);
                continue;
            }
            out.write_statistics(session.lost())?;
            out.pcap.get_mut().flush()?;
            unflushed = false;
            next_statistics = Instant::now() + STATISTICS_INTERVAL;
        }
    }
    let lost = session.lost();
    // The session ends here, before the last write: the workers stop copying.
    drop(session);
    out.write_statistics(lost)?;
    out.pcap.get_mut().flush()?;
    Ok((written, lost))
}

/// Whether the reader half-closed the connection or sent something (it reads the
/// stream and asks for nothing more during a capture), or the connection failed.
fn peer_asked_to_stop(socket: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: `recv` writes at most one byte into `byte`, which outlives the call;
    // `socket` is the connection's descriptor, kept open by the writer that owns it.
    let received = unsafe {
        libc::recv(
            socket,
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    received >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock
}

/// The name of port `id`, asking the dataplane for ports added since the capture started.
fn port_name(shared: &Shared, names: &mut HashMap<PortId, String>, id: PortId) -> String {
    if !names.contains_key(&id)
        && let Ok(snapshot) = shared.dataplane.request(Command::Counters)
    {
        names.extend(snapshot.ports.iter().map(|p| (p.id, p.name.clone())));
    }
    names.get(&id).cloned().unwrap_or_else(|| format!("#{id}"))
}

/// The `epb_flags` reception type of a frame by its destination address:
/// 1 unicast, 2 multicast, 3 broadcast.
fn reception_type(frame: &[u8]) -> u32 {
    match frame.get(..6) {
        Some([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]) => 3,
        Some(dst) if dst[0] & 1 == 1 => 2,
        Some(_) => 1,
        None => 0,
    }
}

fn since_epoch(time: SystemTime) -> Duration {
    time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO)
}
