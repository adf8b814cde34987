//! Restart without loss: the running switch starts a new binary and hands it
//! every TAP fd, the control socket and the MAC table over a Unix socket
//! (`SCM_RIGHTS`). The old process keeps forwarding until the new one says it
//! is ready, then stops reading and exits.
//!
//! Why nothing is lost: a passed fd is the *same* open file, so the TAP's
//! queue is shared. While both processes read, each frame is read (and
//! forwarded) by exactly one of them; frames that arrive while neither reads
//! wait in the kernel's queue. A non-persistent TAP is deleted only when its
//! last fd closes, and the new process holds one before the old one exits.
//!
//! The wire format on the socket: an 8-byte header (fd count, JSON length,
//! both u32 little-endian), the fds in batches of one byte each carrying up
//! to [`FDS_PER_MESSAGE`] rights, then the JSON [`Handover`]. The new process
//! answers `ready\n` once its dataplane is built, or `error: …\n`.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::{Config, ConfigError};
use crate::dataplane::{Dataplane, MAX_QUEUES, Snapshot};
use crate::fdb::{EntryKind, FdbEntry, PortId, VlanId};
use crate::wire::MacAddr;

/// Rights per `sendmsg`: below the kernel's `SCM_MAX_FD` (253).
pub const FDS_PER_MESSAGE: usize = 200;

/// How long the old process waits for the new one to be forwarding.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest handover document accepted (a full 1M-entry table is ~100 MB; the
/// default 8192 entries about 1 MB).
const MAX_JSON_LEN: usize = 256 << 20;

#[derive(Debug, Error)]
pub enum UpgradeError {
    #[error("creating the handover socket failed: {0}")]
    Socket(#[source] io::Error),
    #[error("starting {binary} failed: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: io::Error,
    },
    #[error("sending the handover failed: {0}")]
    Send(#[source] io::Error),
    #[error("receiving the handover failed: {0}")]
    Receive(#[source] io::Error),
    #[error("the handover document is invalid: {0}")]
    Document(#[source] serde_json::Error),
    #[error("expected {expected} fds in the handover, got {got}")]
    FdCount { expected: usize, got: usize },
    #[error("the handover gives {counts} queue counts for {ports} ports")]
    QueueCounts { ports: usize, counts: usize },
    #[error("the handover gives port {port} {queues} queues, not 1..={MAX_QUEUES}")]
    QueueCount { port: String, queues: usize },
    #[error("the handed-over configuration is invalid: {0}")]
    Config(#[source] ConfigError),
    #[error(
        "the handover is format version {got}; this build understands only version {supported}"
    )]
    Version { got: u32, supported: u32 },
    #[error("the new process did not become ready: {reason}")]
    NotReady { reason: String },
}

/// The handover format this build writes and understands. Raised whenever a
/// successor built from older code could misread the document: it then refuses
/// the handover (and the old process keeps forwarding) instead of guessing.
pub const HANDOVER_VERSION: u32 = 1;

/// Documents without a `version` are those of builds before it existed: the
/// same format as version 1.
fn unversioned() -> u32 {
    1
}

/// What the old process tells the new one besides the fds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Handover {
    /// The format of this document ([`HANDOVER_VERSION`] of the old process).
    #[serde(default = "unversioned")]
    pub version: u32,
    /// The live configuration (hot-plugged ports included), ports in fd order.
    pub config: Config,
    /// Queues per port, in `config.ports` order: the fds after the control
    /// listener are each port's queues, in this order.
    pub queues: Vec<usize>,
    /// The MAC table.
    pub fdb: Vec<HandedEntry>,
    /// The ports of `config` that were added at runtime: the ones the state
    /// file records (see [`crate::state`]).
    #[serde(default)]
    pub runtime_ports: Vec<String>,
    /// Whether the last fd is the link monitor's socket (`link::LinkMonitor`): opened
    /// while privileged, it can listen to other namespaces, which the successor, started
    /// with fewer capabilities, could not subscribe to itself.
    #[serde(default)]
    pub link_monitor: bool,
    /// Whether the fd after those (after the link monitor's, if any) is the state
    /// directory's lock file (`state::LOCK_FILE`): its `flock` comes with it, so the
    /// directory is never unlocked between the two processes.
    #[serde(default)]
    pub state_lock: bool,
    /// What `reload` reads (absent from a switch before reloads: it cannot reload then).
    #[serde(default)]
    pub reload_source: Option<crate::control::ReloadSource>,
}

/// One MAC table entry, its port named (ids are per process).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HandedEntry {
    pub vlan: VlanId,
    pub mac: MacAddr,
    pub port: String,
    pub kind: EntryKind,
    /// Time since last seen, so ageing continues where it was.
    pub age_ms: u64,
    /// The remote VTEP of a static entry on a vxlan port (`fdb add --remote`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<IpAddr>,
}

impl HandedEntry {
    /// The entry of `entry`, with its port's name from `name_of`.
    pub fn new(entry: &FdbEntry, name_of: impl Fn(PortId) -> Option<String>) -> Option<Self> {
        Some(Self {
            vlan: entry.vlan,
            mac: entry.mac,
            port: name_of(entry.port)?,
            kind: entry.kind,
            age_ms: entry.age.as_millis() as u64,
            remote: None,
        })
    }

    /// Every entry of `snapshot` whose port `names` names; static ones with their remote
    /// VTEP (learned and EVPN ones are learned or advertised again).
    pub fn all(snapshot: &Snapshot, names: &HashMap<PortId, String>) -> Vec<HandedEntry> {
        let remotes: HashMap<(PortId, MacAddr), IpAddr> = snapshot
            .fdb_remotes
            .iter()
            .map(|r| ((r.port, r.mac), r.remote))
            .collect();
        snapshot
            .fdb
            .iter()
            .filter_map(|entry| {
                let mut handed = HandedEntry::new(entry, |id| names.get(&id).cloned())?;
                if entry.kind == EntryKind::Static {
                    handed.remote = remotes.get(&(entry.port, entry.mac)).copied();
                }
                Some(handed)
            })
            .collect()
    }
}

/// Puts `entries` into the MAC table of `dataplane` (before it runs), for
/// ports it has by name. `since`: how long ago the ages were taken (a restart
/// from the state file); learned entries that would be older than `ageing`
/// by now are left out.
pub fn restore_fdb(
    dataplane: &Dataplane,
    entries: &[HandedEntry],
    since: Duration,
    ageing: Duration,
) -> usize {
    let ports = dataplane.counters().ports;
    let now = Instant::now();
    let mut forwarder = dataplane.forwarder();
    let fdb = forwarder.fdb_mut();
    let mut restored = 0;
    for entry in entries {
        let Some(port) = ports.iter().find(|p| p.name == entry.port).map(|p| p.id) else {
            continue;
        };
        let age = Duration::from_millis(entry.age_ms).saturating_add(since);
        if entry.kind == EntryKind::Dynamic && age >= ageing {
            continue;
        }
        let seen = now.checked_sub(age).unwrap_or(now);
        match entry.kind {
            EntryKind::Static => {
                // A static entry the old switch held is valid here too.
                if fdb.add_static(entry.vlan, entry.mac, port).is_err() {
                    continue;
                }
                if let Some(vtep) = entry.remote
                    && let Err(error) = dataplane.pin_remote(port, entry.mac, vtep)
                {
                    tracing::warn!(mac = %entry.mac, %error, "static entry restored without its remote VTEP");
                }
            }
            EntryKind::Sticky => {
                fdb.learn_sticky(entry.vlan, entry.mac, port, seen);
            }
            EntryKind::Dynamic => {
                fdb.learn(entry.vlan, entry.mac, port, seen);
            }
            // The control plane that installed it (EVPN) installs it again on its
            // first session.
            EntryKind::Remote => continue,
        }
        restored += 1;
    }
    restored
}

/// The old side: starts `binary` (with `args` before its own `run
/// --takeover-fd N`) and sends it `fds` (control listener first, then every
/// port queue) and `handover`. Returns the new process once it is ready.
pub fn hand_over(
    binary: &Path,
    args: &[String],
    fds: &[RawFd],
    handover: &Handover,
) -> Result<Child, UpgradeError> {
    let (ours, theirs) = UnixStream::pair().map_err(UpgradeError::Socket)?;
    // The child must inherit its end: clear close-on-exec on it.
    set_cloexec(theirs.as_raw_fd(), false).map_err(UpgradeError::Socket)?;
    let mut command = Command::new(binary);
    command
        .args(args)
        .arg("run")
        .arg("--takeover-fd")
        .arg(theirs.as_raw_fd().to_string());
    // A switch running as an unprivileged user would lose CAP_NET_ADMIN at exec.
    // SAFETY: the hook runs in the forked child before exec and only makes
    // system calls (capget, capset, prctl): no allocation, no locks.
    unsafe { command.pre_exec(crate::sys::privileges::keep_across_exec) };
    let mut child = command.spawn().map_err(|source| UpgradeError::Spawn {
        binary: binary.display().to_string(),
        source,
    })?;
    drop(theirs);
    match send_and_wait(&ours, fds, handover) {
        Ok(()) => Ok(child),
        Err(e) => {
            // The most useful thing to say about a child that died early is how.
            if let Ok(Some(status)) = child.try_wait() {
                return Err(UpgradeError::NotReady {
                    reason: format!("{} exited ({status}) before taking over", binary.display()),
                });
            }
            // We started it; it did not take over: stop it by its pid.
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

fn send_and_wait(
    socket: &UnixStream,
    fds: &[RawFd],
    handover: &Handover,
) -> Result<(), UpgradeError> {
    let json = serde_json::to_vec(handover).map_err(UpgradeError::Document)?;
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&(fds.len() as u32).to_le_bytes());
    header[4..].copy_from_slice(&(json.len() as u32).to_le_bytes());
    let mut writer = socket;
    writer.write_all(&header).map_err(UpgradeError::Send)?;
    for batch in fds.chunks(FDS_PER_MESSAGE) {
        send_fds(socket, batch).map_err(UpgradeError::Send)?;
    }
    writer.write_all(&json).map_err(UpgradeError::Send)?;

    socket
        .set_read_timeout(Some(READY_TIMEOUT))
        .map_err(UpgradeError::Send)?;
    let mut reply = String::new();
    let started = Instant::now();
    BufReader::new(socket)
        .read_line(&mut reply)
        .map_err(|e| UpgradeError::NotReady {
            reason: format!("no answer after {:?}: {e}", started.elapsed()),
        })?;
    match reply.trim_end() {
        "ready" => Ok(()),
        "" => Err(UpgradeError::NotReady {
            reason: "it exited without answering (see its log)".into(),
        }),
        other => Err(UpgradeError::NotReady {
            reason: other.to_owned(),
        }),
    }
}

/// The new side: reads the handover from the inherited socket `fd`. Returns
/// the document, the fds (control listener first) and the socket to answer on.
pub fn take_over(fd: RawFd) -> Result<(Handover, Vec<OwnedFd>, UnixStream), UpgradeError> {
    // SAFETY: the old process passed this fd number on our command line for
    // exactly this purpose; nothing else in this process owns it.
    let socket = unsafe { UnixStream::from_raw_fd(fd) };
    set_cloexec(fd, true).map_err(UpgradeError::Receive)?;
    let mut reader = &socket;
    let mut header = [0u8; 8];
    reader
        .read_exact(&mut header)
        .map_err(UpgradeError::Receive)?;
    let fd_count = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let json_len = u32::from_le_bytes(header[4..].try_into().expect("4 bytes")) as usize;
    let mut fds = Vec::with_capacity(fd_count);
    while fds.len() < fd_count {
        let batch = recv_fds(&socket).map_err(UpgradeError::Receive)?;
        if batch.is_empty() {
            break;
        }
        fds.extend(batch);
    }
    if fds.len() != fd_count {
        return Err(UpgradeError::FdCount {
            expected: fd_count,
            got: fds.len(),
        });
    }
    if json_len > MAX_JSON_LEN {
        return Err(UpgradeError::Receive(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("handover document of {json_len} bytes"),
        )));
    }
    let mut json = vec![0u8; json_len];
    reader
        .read_exact(&mut json)
        .map_err(UpgradeError::Receive)?;
    match Handover::decode(&json, fds.len()) {
        Ok(handover) => Ok((handover, fds, socket)),
        Err(error) => {
            // Refused with a reason, not by exiting: the old process reports it and
            // keeps forwarding.
            answer(&socket, Err(error.to_string()));
            Err(error)
        }
    }
}

impl Handover {
    /// Reads the JSON document of a handover that came with `fd_count` fds
    /// (control listener first, then every port queue) and checks that the
    /// switch can be built from it: a valid configuration, one queue count a
    /// port can have per configured port, together exactly those fds.
    pub fn decode(json: &[u8], fd_count: usize) -> Result<Handover, UpgradeError> {
        // The version alone first: another version's document may not parse as this one's.
        #[derive(Deserialize)]
        struct Versioned {
            #[serde(default = "unversioned")]
            version: u32,
        }
        let Versioned { version } = serde_json::from_slice(json).map_err(UpgradeError::Document)?;
        if version != HANDOVER_VERSION {
            return Err(UpgradeError::Version {
                got: version,
                supported: HANDOVER_VERSION,
            });
        }
        let handover: Handover = serde_json::from_slice(json).map_err(UpgradeError::Document)?;
        let ports = &handover.config.ports;
        if handover.queues.len() != ports.len() {
            return Err(UpgradeError::QueueCounts {
                ports: ports.len(),
                counts: handover.queues.len(),
            });
        }
        for (port, &queues) in ports.iter().zip(&handover.queues) {
            if !(1..=MAX_QUEUES).contains(&queues) {
                return Err(UpgradeError::QueueCount {
                    port: port.name.clone(),
                    queues,
                });
            }
        }
        // At most MAX_QUEUES per port: the sum cannot overflow.
        let expected = 1
            + handover.queues.iter().sum::<usize>()
            + usize::from(handover.link_monitor)
            + usize::from(handover.state_lock);
        if fd_count != expected {
            return Err(UpgradeError::FdCount {
                expected,
                got: fd_count,
            });
        }
        handover.config.validate().map_err(UpgradeError::Config)?;
        Ok(handover)
    }
}

/// The new side's answer: `Ok` means forwarding starts now.
pub fn answer(socket: &UnixStream, result: Result<(), String>) {
    let line = match result {
        Ok(()) => "ready\n".to_owned(),
        Err(reason) => format!("error: {}\n", reason.replace('\n', " ")),
    };
    let mut writer = socket;
    // If the old process is gone, nobody is waiting for the answer.
    let _ = writer.write_all(line.as_bytes());
}

fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD only read and write the fd's flag word.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Control-message buffer, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuffer([u8; 1024]);

/// Sends `fds` (at most [`FDS_PER_MESSAGE`]) with one data byte.
fn send_fds(socket: &UnixStream, fds: &[RawFd]) -> io::Result<()> {
    assert!(fds.len() <= FDS_PER_MESSAGE);
    let payload_len = std::mem::size_of_val(fds);
    let data = [b'F'];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut buffer = CmsgBuffer([0; 1024]);
    // SAFETY: CMSG_SPACE is pure arithmetic on its argument.
    let space = unsafe { libc::CMSG_SPACE(payload_len as u32) } as usize;
    assert!(space <= buffer.0.len());
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buffer.0.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: msg_control points at `buffer`, which has room for one cmsghdr
    // with `payload_len` bytes of data (checked against CMSG_SPACE above), so
    // CMSG_FIRSTHDR is non-null and CMSG_DATA has room for the fds.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(payload_len as u32) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast(), fds.len());
    }
    // SAFETY: msg and everything it points to (iov, data, buffer) live across the call.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one batch of fds (the kernel delivers each batch with its byte).
fn recv_fds(socket: &UnixStream) -> io::Result<Vec<OwnedFd>> {
    let mut data = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut buffer = CmsgBuffer([0; 1024]);
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buffer.0.as_mut_ptr().cast();
    msg.msg_controllen = buffer.0.len();
    // SAFETY: msg points at live buffers of the lengths it states.
    let received = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if received < 0 {
        return Err(io::Error::last_os_error());
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("fd batch truncated"));
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of
    // well-formed cmsghdrs; CMSG_FIRSTHDR/NXTHDR walk only within them.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = bytes / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..count {
                    // Each received right is a new fd this process owns.
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Seek;

    #[test]
    fn fds_cross_a_socket_in_batches_and_stay_the_same_file() {
        let (a, b) = UnixStream::pair().unwrap();
        let dir = std::env::temp_dir();
        let mut files = Vec::new();
        for i in 0..(FDS_PER_MESSAGE + 5) {
            let path = dir.join(format!("tsw-upgrade-{}-{i}", std::process::id()));
            let mut file = File::options()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            std::fs::remove_file(&path).unwrap();
            file.write_all(format!("file {i}").as_bytes()).unwrap();
            files.push(file);
        }
        let raw: Vec<RawFd> = files.iter().map(AsRawFd::as_raw_fd).collect();
        for batch in raw.chunks(FDS_PER_MESSAGE) {
            send_fds(&a, batch).unwrap();
        }
        let mut got = recv_fds(&b).unwrap();
        assert_eq!(got.len(), FDS_PER_MESSAGE);
        got.extend(recv_fds(&b).unwrap());
        assert_eq!(got.len(), files.len());
        for (i, fd) in got.into_iter().enumerate() {
            let mut file = File::from(fd);
            // The same open file: its offset is where our write left it.
            assert_eq!(
                file.stream_position().unwrap(),
                format!("file {i}").len() as u64
            );
            file.rewind().unwrap();
            let mut text = String::new();
            file.read_to_string(&mut text).unwrap();
            assert_eq!(text, format!("file {i}"));
        }
    }

    /// Found by `fuzz/` (target upgrade): `{"config":{},"queues":[0],...}`
    /// with one fd was accepted, and the new process then panicked building
    /// a port from the queue count of a port that does not exist (or from no
    /// fds: `TapPort::with_queues` of nothing). Queue counts that overflow
    /// their sum slipped past the fd count the same way.
    #[test]
    fn handovers_the_switch_cannot_be_built_from_are_refused() {
        let decode = |json: &str, fds| Handover::decode(json.as_bytes(), fds);
        let err = decode(r#"{"config":{},"queues":[0],"fdb":[]}"#, 1).unwrap_err();
        assert!(
            matches!(
                err,
                UpgradeError::QueueCounts {
                    ports: 0,
                    counts: 1
                }
            ),
            "{err}"
        );
        let one_port = |queues: &str| {
            format!(r#"{{"config":{{"port":[{{"name":"p1"}}]}},"queues":{queues},"fdb":[]}}"#)
        };
        let err = decode(&one_port("[0]"), 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the handover gives port p1 0 queues, not 1..=16"
        );
        let overflow = format!("[{}, 2]", usize::MAX);
        assert!(matches!(
            decode(&one_port(&overflow), 2).unwrap_err(),
            UpgradeError::QueueCounts { .. }
        ));
        let err = decode(&one_port(&format!("[{}]", usize::MAX)), 0).unwrap_err();
        assert!(matches!(err, UpgradeError::QueueCount { .. }), "{err}");
        let bad_config = r#"{"config":{"port":[{"name":"p1","mtu":1}]},"queues":[1],"fdb":[]}"#;
        assert!(matches!(
            decode(bad_config, 2).unwrap_err(),
            UpgradeError::Config(_)
        ));
        let handover = decode(&one_port("[1]"), 2).unwrap();
        assert_eq!(handover.queues, [1]);
        assert!(matches!(
            decode(&one_port("[1]"), 3).unwrap_err(),
            UpgradeError::FdCount {
                expected: 2,
                got: 3
            }
        ));
    }

    #[test]
    fn a_handover_of_another_version_is_refused_with_its_reason() {
        let one_port = |version: &str| {
            format!(
                r#"{{{version}"config":{{"port":[{{"name":"p1"}}]}},"queues":[1],"fdb":[],"future":{{"x":1}}}}"#
            )
        };
        // No version: a document of the builds before versioning, which is version 1.
        assert_eq!(
            Handover::decode(one_port("").as_bytes(), 2)
                .unwrap()
                .version,
            HANDOVER_VERSION
        );
        assert!(Handover::decode(one_port(r#""version":1,"#).as_bytes(), 2).is_ok());
        // A later format is refused before the rest is read (here `queues` is no list).
        let later = r#"{"version":2,"config":7,"queues":"all"}"#;
        let err = Handover::decode(later.as_bytes(), 2).unwrap_err();
        assert!(
            matches!(
                err,
                UpgradeError::Version {
                    got: 2,
                    supported: 1
                }
            ),
            "{err}"
        );
        // The successor answers the old process with the reason before it gives up.
        let (a, b) = UnixStream::pair().unwrap();
        let mut header = [0u8; 8];
        header[4..].copy_from_slice(&(later.len() as u32).to_le_bytes());
        (&a).write_all(&header).unwrap();
        (&a).write_all(later.as_bytes()).unwrap();
        let fd = b.as_raw_fd();
        std::mem::forget(b); // take_over owns the fd from here
        let err = take_over(fd).unwrap_err();
        assert!(matches!(err, UpgradeError::Version { .. }), "{err}");
        let mut answer = String::new();
        BufReader::new(&a).read_line(&mut answer).unwrap();
        assert_eq!(
            answer,
            "error: the handover is format version 2; this build understands only version 1\n"
        );
    }

    #[test]
    fn a_short_handover_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&3u32.to_le_bytes());
        (&a).write_all(&header).unwrap();
        drop(a);
        let fd = b.as_raw_fd();
        std::mem::forget(b); // take_over owns the fd from here
        let err = take_over(fd).unwrap_err();
        assert!(
            matches!(
                err,
                UpgradeError::FdCount {
                    expected: 3,
                    got: 0
                }
            ),
            "{err}"
        );
    }
}
