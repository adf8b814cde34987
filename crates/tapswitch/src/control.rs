//! The control plane, off the packet path: it runs on its own threads and
//! reaches the dataplane only through [`DataplaneHandle`] (a channel plus a
//! mio waker), so nothing it does can stall forwarding.
//!
//! - Signals: SIGINT/SIGTERM/SIGQUIT stop the switch cleanly, SIGUSR1 prints a
//!   JSON snapshot (per-port counters and the MAC table) on stdout, SIGHUP reloads the
//!   config file (`reload`), and every other signal that would kill or stop a daemon is
//!   logged and ignored ([`signal_action`]).
//! - The control socket: a Unix stream socket speaking JSON lines. Each
//!   request line (`{"cmd":"port_list"}`) gets one reply line
//!   (`{"ok":true,"result":…}` or `{"ok":false,"error":"…"}`); an `events`
//!   request turns the connection into a stream of event lines. Every
//!   connection has its own thread with blocking I/O; changes are serialised
//!   by one lock that only control threads take. Slow work (opening a TAP,
//!   netlink) happens here; the dataplane receives finished ports.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libc::{
    SIGALRM, SIGHUP, SIGINT, SIGIO, SIGPROF, SIGPWR, SIGQUIT, SIGSTKFLT, SIGTERM, SIGTSTP, SIGUSR1,
    SIGUSR2, SIGVTALRM, SIGXCPU,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use signal_hook::iterator::{Handle, Signals};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::config::{Config, PortConfig, PortPatch, PortSettings};
use crate::dataplane::{
    Command, DataplaneHandle, Event, PortSnapshot, PortUpdate, RemovalCause, Snapshot,
};
use crate::fdb::PortId;
use crate::netlink::LinkMonitor;
use crate::netlink::LinkSettings;
use crate::port::Port;
use crate::port::vm as vmport;
use crate::state::{SAVE_INTERVAL, SavedState, StateDir};
use crate::switch::{self, LinkSockets};
use crate::sys::privileges::{self, CAP_CHOWN, CAP_SYS_ADMIN};
use crate::upgrade::{self, HandedEntry, Handover};
use crate::wire::MacAddr;

mod capture;
mod links;
pub mod protocol;
// ---- rates ----
pub mod rates;
// ---- reload ----
mod reload;
pub use reload::ReloadSource;
#[cfg(feature = "libvirt")]
mod vms;
// Built without libvirt: VM ports are refused with that reason.
#[cfg(not(feature = "libvirt"))]
#[path = "control/no_vms.rs"]
mod vms;

pub use protocol::{
    ErrorKind, EventLine, FdbShow, FdbShowEntry, PortList, PortListEntry, PortReply, Reply,
    Request, RequestError, Response, Stats, VERSION,
};

/// Where `tapswitch run` listens, and every other command connects, by default.
pub const DEFAULT_CONTROL_PATH: &str = "/run/tapswitch/tapswitch.sock";

/// Longest request line accepted; a longer one gets an error and the
/// connection is closed (there is no telling where the next request starts).
pub const MAX_REQUEST_LEN: usize = 64 * 1024;

/// Events the dataplane may queue for the control plane before it drops them.
pub const EVENT_QUEUE_LEN: usize = 4096;

/// Event lines queued for one `events` reader before it loses some.
const SUBSCRIBER_QUEUE_LEN: usize = 1024;

/// Connections served at once. Beyond it, the connection that has waited longest
/// for a request is closed to make room (hung clients cannot lock others out);
/// only when none waits (all are being served or stream events) is the new one
/// refused with an error line.
const MAX_CONNECTIONS: usize = 64;

/// A connection that sends nothing for this long (between requests, or in the
/// middle of one) is closed.
pub const CONNECTION_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A reply or event line the client does not take within this long closes its connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// At shutdown, how long connection threads get to end once told (their reads see end of
/// stream, event streams end, captures write their summary), and then again once their
/// sockets are shut down for writing too; still running after that, they are left to the
/// process exit.
const CONNECTION_STOP_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("installing signal handlers failed: {0}")]
    Signals(#[source] std::io::Error),
    #[error("starting the control thread failed: {0}")]
    Thread(#[source] std::io::Error),
    #[error("creating the control socket directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another tapswitch (pid {pid}) is serving the control socket {path}")]
    AlreadyServed { path: PathBuf, pid: String },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("control socket {path}: {step}: {source}")]
    Socket {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the switch refused the request: {0}")]
    Refused(RequestError),
    #[error(
        "control socket {path}: this client speaks control protocol version {client}, the \
         switch only {}; upgrade the switch (`tapswitch upgrade`) or use its own client",
        if *.daemon == 0 { "an unversioned one (before protocol versions)".to_owned() } else { format!("version {}", .daemon) }
    )]
    VersionMismatch {
        path: PathBuf,
        client: u32,
        daemon: u32,
    },
    #[error("control socket {path}: unexpected result {line:?}: {reason}")]
    BadResult {
        path: PathBuf,
        line: String,
        reason: String,
    },
    #[error("control socket {path}: bad reply {line:?}")]
    BadReply { path: PathBuf, line: String },
    #[error("VM port: {0}")]
    VmPort(RequestError),
}

/// What `tapswitch run` does on a signal (README, Signals, shows the same table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalAction {
    /// Stop cleanly: counters on stderr, exit status 0, the control socket, the
    /// non-persistent TAPs and their VM devices removed.
    Stop,
    /// One JSON line on stdout: per-port counters, drops by reason, the MAC table.
    Snapshot,
    /// Logged with this explanation; nothing changes and forwarding goes on.
    Log(&'static str),
    /// Read the config file again and apply the difference (`tapswitch reload`).
    Reload,
}

const NO_TIMERS: SignalAction = SignalAction::Log("ignored: the switch sets no timers");

/// Signals whose default action would kill, stop or core-dump the switch, and what it
/// does instead. Real-time signals are logged too ([`signal_action`]).
const SIGNAL_TABLE: [(libc::c_int, SignalAction); 14] = [
    (SIGINT, SignalAction::Stop),
    (SIGTERM, SignalAction::Stop),
    // Ctrl-\ at a terminal: the user wants it gone, not a core file and a stale socket.
    (SIGQUIT, SignalAction::Stop),
    // The soft CPU-time limit: the hard limit's SIGKILL follows, so stop while we can.
    (SIGXCPU, SignalAction::Stop),
    (SIGUSR1, SignalAction::Snapshot),
    // As every daemon: re-read the config file (a closed terminal's hangup too, which
    // changes nothing unless the file changed).
    (SIGHUP, SignalAction::Reload),
    (
        SIGTSTP,
        SignalAction::Log(
            "ignored: a suspended switch would stop forwarding for every port \
             (stop it with SIGTERM or Ctrl-C)",
        ),
    ),
    (
        SIGUSR2,
        SignalAction::Log("ignored: SIGUSR2 has no meaning here"),
    ),
    (SIGALRM, NO_TIMERS),
    (SIGVTALRM, NO_TIMERS),
    (SIGPROF, NO_TIMERS),
    (
        SIGIO,
        SignalAction::Log("ignored: the switch uses no signal-driven I/O"),
    ),
    (
        SIGPWR,
        SignalAction::Log("ignored: power events are for init"),
    ),
    (
        SIGSTKFLT,
        SignalAction::Log("ignored: SIGSTKFLT has no meaning here"),
    ),
];

/// Signals set to `SIG_IGN`, silently: each stands for a read or write that then fails
/// with an error instead (EIO, EFBIG, EPIPE), and a handler would log, which writes, which
/// could raise the same signal again. SIGTTIN/SIGTTOU: a background `run` touching its
/// terminal would otherwise be stopped; SIGXFSZ: a log file over its size limit would kill.
/// SIGPIPE is ignored by the Rust runtime already.
const IGNORED_SIGNALS: [libc::c_int; 3] = [libc::SIGTTIN, libc::SIGTTOU, libc::SIGXFSZ];

/// What the switch does on `signal`; `None` for a signal it leaves at its default (those
/// the default ignores, crashes such as SIGSEGV, and SIGKILL/SIGSTOP, which nobody can catch).
pub fn signal_action(signal: libc::c_int) -> Option<SignalAction> {
    SIGNAL_TABLE
        .iter()
        .find(|(number, _)| *number == signal)
        .map(|(_, action)| *action)
        .or_else(|| {
            realtime_signals()
                .contains(&signal)
                .then_some(SignalAction::Log(
                    "ignored: real-time signals have no meaning here",
                ))
        })
}

/// The real-time signals left to applications (the C library keeps the first few).
fn realtime_signals() -> std::ops::RangeInclusive<libc::c_int> {
    libc::SIGRTMIN()..=libc::SIGRTMAX()
}

/// `SIGHUP`, or `SIGRTMIN+3` for a real-time signal.
pub fn signal_name(signal: libc::c_int) -> String {
    // Linux-only signals signal-hook has no name for.
    let linux_only = match signal {
        SIGPWR => Some("SIGPWR"),
        SIGSTKFLT => Some("SIGSTKFLT"),
        _ => None,
    };
    match linux_only.or_else(|| signal_hook::low_level::signal_name(signal)) {
        Some(name) => name.to_owned(),
        None if realtime_signals().contains(&signal) => {
            format!("SIGRTMIN+{}", signal - libc::SIGRTMIN())
        }
        None => format!("signal {signal}"),
    }
}

/// Every signal with a [`SignalAction`], as a set.
fn handled_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset below initialises it whole.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live sigset_t; these only write into it.
    unsafe {
        libc::sigemptyset(&mut set);
        for signal in SIGNAL_TABLE
            .iter()
            .map(|(s, _)| *s)
            .chain(realtime_signals())
        {
            libc::sigaddset(&mut set, signal);
        }
    }
    set
}

fn set_thread_mask(how: libc::c_int, set: &libc::sigset_t) -> Result<(), ControlError> {
    // SAFETY: `set` is a live, initialised sigset_t; the old mask is not asked for.
    let ret = unsafe { libc::pthread_sigmask(how, set, std::ptr::null_mut()) };
    if ret != 0 {
        return Err(ControlError::Signals(std::io::Error::from_raw_os_error(
            ret,
        )));
    }
    Ok(())
}

/// The switch's signal handlers, installed first thing (before the control socket and
/// any TAP exist) so no signal during setup kills the switch halfway; a signal that comes
/// before [`SignalHandlers::spawn`] waits for the signal thread.
pub struct SignalHandlers {
    signals: Signals,
}

impl SignalHandlers {
    /// Catches the signals of [`SIGNAL_TABLE`] (and real-time ones), ignores
    /// [`IGNORED_SIGNALS`], and blocks the caught ones on this thread, so threads started
    /// later inherit the block: only the signal thread takes them, and no dataplane system
    /// call is interrupted. Call while the process is single-threaded.
    pub fn install() -> Result<Self, ControlError> {
        set_thread_mask(libc::SIG_BLOCK, &handled_set())?;
        for signal in IGNORED_SIGNALS {
            // SAFETY: SIG_IGN installs no code of ours; the previous disposition is not needed.
            if unsafe { libc::signal(signal, libc::SIG_IGN) } == libc::SIG_ERR {
                return Err(ControlError::Signals(std::io::Error::last_os_error()));
            }
        }
        let handled = SIGNAL_TABLE
            .iter()
            .map(|(signal, _)| *signal)
            .chain(realtime_signals());
        let signals = Signals::new(handled).map_err(ControlError::Signals)?;
        Ok(Self { signals })
    }

    /// Starts the signal thread for `dataplane`, reloading through `reloader` (none:
    /// SIGHUP is logged only); signals that came during setup are served now (a SIGTERM
    /// then stops the switch as soon as it runs).
    pub fn spawn(
        self,
        dataplane: DataplaneHandle,
        reloader: Option<Reloader>,
    ) -> Result<SignalThread, ControlError> {
        let mut signals = self.signals;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("tapswitch-signals".into())
            .spawn(move || {
                // Only here: pending and future signals are delivered to this thread.
                if let Err(error) = set_thread_mask(libc::SIG_UNBLOCK, &handled_set()) {
                    warn!(%error, "signals cannot be served; only SIGKILL stops the switch");
                    return;
                }
                for signal in signals.forever() {
                    serve_signal(&dataplane, reloader.as_ref(), signal);
                }
            })
            .map_err(ControlError::Thread)?;
        Ok(SignalThread {
            signals: handle,
            thread,
        })
    }
}

fn serve_signal(dataplane: &DataplaneHandle, reloader: Option<&Reloader>, signal: libc::c_int) {
    let name = signal_name(signal);
    match signal_action(signal) {
        // Logged and published as an event by the reload, either way.
        Some(SignalAction::Reload) => match reloader {
            Some(reloader) => {
                info!(signal = %name, "reloading the configuration");
                let _ = reload::reload(&reloader.0, protocol::ReloadTrigger::Signal);
            }
            None => warn!(signal = %name, "ignored: no control server to reload the configuration"),
        },
        Some(SignalAction::Snapshot) => match dataplane.snapshot() {
            Ok(snapshot) => {
                let line = serde_json::to_string(&snapshot).expect("snapshots serialise to JSON");
                let mut stdout = std::io::stdout().lock();
                // stdout closed: the reader went away; nothing to report to.
                let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
            }
            Err(e) => warn!(error = %e, "snapshot failed"),
        },
        Some(SignalAction::Stop) => {
            info!(signal = %name, "stopping");
            // Already stopped is fine: we are stopping anyway.
            let _ = dataplane.shutdown();
        }
        Some(SignalAction::Log(what)) => warn!(signal = %name, "{what}"),
        None => warn!(signal = %name, "ignored: not a signal the switch handles"),
    }
}

/// What the signal thread reloads the configuration through ([`ControlServer::reloader`]).
pub struct Reloader(Arc<Shared>);

/// The running signal thread; [`SignalThread::stop`] ends it.
pub struct SignalThread {
    signals: Handle,
    thread: JoinHandle<()>,
}

impl SignalThread {
    /// Stops the thread and waits for it. Signals stay blocked elsewhere: one that comes
    /// during the rest of the shutdown waits, unserved, until the process exits.
    pub fn stop(self) {
        self.signals.close();
        // A panic in the signal thread has already been reported by the panic hook.
        let _ = self.thread.join();
    }
}

/// A bound control socket that nobody else serves.
pub struct ControlSocket {
    listener: UnixListener,
    file: SocketFile,
}

/// The control socket's file, removed when this is dropped if it is ours: a switch that
/// fails to start, or stops, leaves no socket file behind.
struct SocketFile {
    path: PathBuf,
    /// Ours to remove: we created it, or we serve it after a handover. Not a failed
    /// takeover's (the old switch still serves it), not once handed over to a new process.
    remove: bool,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl ControlSocket {
    /// Creates the directory, refuses a socket a live switch answers on,
    /// replaces a stale one, and binds with mode 0600.
    pub fn bind(path: &Path) -> Result<Self, ControlError> {
        let socket_error = |step, source| ControlError::Socket {
            path: path.to_owned(),
            step,
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| ControlError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(ControlError::NotASocket {
                    path: path.to_owned(),
                });
            }
            match ControlClient::connect(path) {
                Ok(mut client) => {
                    // A hung switch still counts as live; just do not wait forever for its pid.
                    let _ = client
                        .reader
                        .get_ref()
                        .set_read_timeout(Some(Duration::from_secs(2)));
                    let pid = client
                        .request_as::<protocol::Hello>(&Request::Hello {})
                        .ok()
                        .map(|hello| hello.pid)
                        .map_or_else(|| "unknown".to_owned(), |pid| pid.to_string());
                    return Err(ControlError::AlreadyServed {
                        path: path.to_owned(),
                        pid,
                    });
                }
                Err(_) => {
                    info!(path = %path.display(), "removing a stale control socket");
                    std::fs::remove_file(path)
                        .map_err(|source| socket_error("removing the stale socket", source))?;
                }
            }
        }
        // Created with mode 0600 (not chmod-ed after), so there is no moment
        // when others could connect. Only this thread runs setup code now.
        // SAFETY: umask only swaps the process's file mode mask; it cannot fail.
        let previous = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(previous) };
        let listener = bound.map_err(|source| socket_error("bind", source))?;
        let file = SocketFile {
            path: path.to_owned(),
            remove: true,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|source| socket_error("chmod 0600", source))?;
        Ok(Self { listener, file })
    }

    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// A socket handed over by the switch this process replaces (see `upgrade`). Its file
    /// stays the old switch's until this one serves it.
    pub fn from_listener(listener: UnixListener, path: &Path) -> Self {
        Self {
            listener,
            file: SocketFile {
                path: path.to_owned(),
                remove: false,
            },
        }
    }
}

/// What control threads share.
struct Shared {
    dataplane: DataplaneHandle,
    /// Serialises changes: the live configuration and the netlink sockets.
    state: Mutex<State>,
    subscribers: Mutex<Vec<Subscriber>>,
    connections: Mutex<Connections>,
    stopping: AtomicBool,
    /// The listening socket (owned by the accept thread), to hand over.
    listener_fd: RawFd,
    path: PathBuf,
    /// Set once a new process took over: this one leaves the socket to it.
    handed_over: AtomicBool,
    /// Written to stop the accept thread; it polls the other end with the
    /// listener. (Connecting to our own socket would not do: the file may be
    /// gone, or after a handover the new process would take the connection.)
    wake: UnixStream,
    /// libvirt for VM ports.
    // Only the libvirt client reads it; without the feature it holds nothing.
    #[cfg_attr(not(feature = "libvirt"), allow(dead_code))]
    vms: vms::Vms,
    /// The link monitor, read by `tapswitch-links`, and drained by the event fan-out too
    /// before it names why a port failed (see `links::cause_of_failure`).
    link_monitor: Mutex<Option<LinkMonitor>>,
    /// A second descriptor of the link monitor's socket, to hand over on upgrade.
    link_monitor_fd: Option<std::os::fd::OwnedFd>,
    /// The EVPN agent, with `[evpn]`.
    evpn: crate::evpn::EvpnLink,
    /// When this process began serving (`stats`' `started_at`, `uptime_secs`).
    started: SystemTime,
}

struct State {
    config: Config,
    links: LinkSockets,
    /// Names of the ports added at runtime (the state file records them).
    runtime_ports: Vec<String>,
    store: Option<StateDir>,
    /// What the state file says now, once written.
    saved: Option<SavedState>,
    /// The last write failed (said once, not every [`SAVE_INTERVAL`]).
    save_failing: bool,
    /// Ports whose namespace was destroyed after the dataplane had already removed them
    /// (their TAP failed first): their `port_removed` says `namespace_deleted`.
    destroyed: Vec<String>,
    // ---- reload ----
    /// What `reload` reads: unknown after a takeover from a switch that did not say.
    reload: Option<ReloadSource>,
}

/// What the control plane keeps on disk (see [`crate::state`]).
pub struct Persistence {
    pub store: StateDir,
    /// Ports of the configuration that were added at runtime (restored from the
    /// state file, or handed over by `upgrade`).
    pub runtime_ports: Vec<String>,
}

/// The open control connections.
#[derive(Default)]
struct Connections {
    next_id: u64,
    open: HashMap<u64, OpenConnection>,
    /// The `tapswitch-conn` threads not yet joined (at most [`MAX_CONNECTIONS`] running;
    /// those that ended are joined as new ones start and at [`ControlServer::stop`]).
    threads: Vec<JoinHandle<()>>,
}

struct OpenConnection {
    /// The connection's socket, to shut it down when it must make room.
    socket: UnixStream,
    /// Since when it has waited for (the rest of) a request; `None` while a
    /// request is served or it streams events.
    waiting_since: Option<Instant>,
}

impl Connections {
    /// Takes `socket` in and returns its id, closing the connection that has
    /// waited longest for a request if there is no room; `None`: no room.
    fn admit(&mut self, socket: &UnixStream) -> Option<u64> {
        if self.open.len() >= MAX_CONNECTIONS {
            let (&longest, _) = self
                .open
                .iter()
                .filter_map(|(id, c)| c.waiting_since.map(|since| (id, since)))
                .min_by_key(|&(_, since)| since)?;
            let evicted = self.open.remove(&longest).expect("found above");
            debug!(
                waited = ?evicted.waiting_since.map(|since| since.elapsed()),
                "closing the control connection that waited longest for a request, to make room"
            );
            // Its thread's read returns end of stream, and it ends.
            let _ = evicted.socket.shutdown(std::net::Shutdown::Both);
        }
        let socket = socket.try_clone().ok()?;
        let id = self.next_id;
        self.next_id += 1;
        self.open.insert(
            id,
            OpenConnection {
                socket,
                waiting_since: Some(Instant::now()),
            },
        );
        Some(id)
    }

    fn set_waiting(&mut self, id: u64, waiting: bool) {
        if let Some(connection) = self.open.get_mut(&id) {
            connection.waiting_since = waiting.then(Instant::now);
        }
    }

    /// Keeps `thread`, joining those that have ended.
    fn keep_thread(&mut self, thread: JoinHandle<()>) {
        let (ended, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.threads)
            .into_iter()
            .partition(JoinHandle::is_finished);
        for ended in ended {
            let _ = ended.join();
        }
        self.threads = running;
        self.threads.push(thread);
    }

    /// Shuts every open connection's socket down in `how`.
    fn shut_down(&self, how: std::net::Shutdown) {
        for connection in self.open.values() {
            let _ = connection.socket.shutdown(how);
        }
    }
}

/// Ends the connection threads at shutdown (the accept thread is gone, so no new one
/// starts): first by shutting their sockets down for reading, which a read waiting for a
/// request sees as end of stream while a reply, an event line or a capture's end can
/// still be written, and ending the event streams; then, for those still running after
/// [`CONNECTION_STOP_GRACE`] (a client that does not read what it is sent), for writing
/// too. Each ending thread drops its socket, so its client sees end of stream. Returns
/// how many threads were joined and how many were left running.
fn stop_connections(shared: &Shared) -> (usize, usize) {
    let threads = std::mem::take(&mut lock(&shared.connections).threads);
    lock(&shared.connections).shut_down(std::net::Shutdown::Read);
    // `stopping` is set: a stream that subscribes after this sees it and ends.
    lock(&shared.subscribers).clear();
    let mut running = threads;
    let mut joined = 0;
    for how in [None, Some(std::net::Shutdown::Both)] {
        if let Some(how) = how {
            if running.is_empty() {
                break;
            }
            lock(&shared.connections).shut_down(how);
        }
        let deadline = Instant::now() + CONNECTION_STOP_GRACE;
        loop {
            let (ended, still): (Vec<_>, Vec<_>) =
                running.into_iter().partition(JoinHandle::is_finished);
            joined += ended.len();
            for thread in ended {
                let _ = thread.join();
            }
            running = still;
            if running.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    (joined, running.len())
}

struct Subscriber {
    lines: SyncSender<String>,
    /// Lines dropped since the last one delivered.
    lost: u64,
}

/// The control socket's server threads; [`ControlServer::stop`] ends them.
pub struct ControlServer {
    shared: Arc<Shared>,
    file: SocketFile,
    accept: JoinHandle<()>,
    vm_events: vms::EventsThread,
    /// Dropped to stop `tapswitch-state`.
    stop_saving: Option<SyncSender<()>>,
    saver: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// What metrics add to a counters snapshot before rendering it: each TAP port's
    /// `netdev_tx_dropped`, read on the scraping thread as `stats` reads it.
    pub fn netdev_drops(&self) -> impl Fn(&mut Snapshot) + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move |snapshot: &mut Snapshot| {
            add_netdev_drops(&mut lock(&shared.state), &mut snapshot.ports);
        }
    }
}

/// A control server made but not started: its state is ready (the configured VM ports have
/// their devices, which can take CAP_CHOWN) and no thread runs yet, so the privilege drop
/// can come between [`ControlServer::prepare`] and [`PreparedServer::spawn`]. Dropped
/// unstarted after a fresh start, it removes the VM devices it made (and the socket file).
pub struct PreparedServer {
    /// Taken by `spawn`; still here on drop means the start failed.
    parts: Option<Prepared>,
}

struct Prepared {
    socket: ControlSocket,
    dataplane: DataplaneHandle,
    events: Receiver<Event>,
    state: State,
    vms: vms::Vms,
    domain_events: vms::DomainEvents,
    monitor: Option<LinkMonitor>,
    /// A start of our own, not a takeover: on failure, what this start made goes again
    /// (the socket file with `socket`, the TAPs with the dataplane, VM devices here), as
    /// at a stop. A failed takeover leaves everything to the switch still serving it.
    fresh_start: bool,
    evpn: crate::evpn::EvpnLink,
}

impl Drop for PreparedServer {
    fn drop(&mut self) {
        if let Some(parts) = &mut self.parts
            && parts.fresh_start
        {
            vms::remove_unkept_devices(&mut parts.state);
        }
    }
}

impl ControlServer {
    /// Serves `socket` for the dataplane behind `dataplane`, whose ports are
    /// those of `config`; `events` come from [`crate::dataplane::Dataplane::subscribe_events`].
    pub fn spawn(
        socket: ControlSocket,
        dataplane: DataplaneHandle,
        config: Config,
        events: Receiver<Event>,
    ) -> Result<Self, ControlError> {
        Self::prepare(
            socket,
            dataplane,
            config,
            events,
            LinkSockets::default(),
            None,
            None,
        )?
        .spawn()
    }

    /// The server of [`Self::spawn`], with netlink sockets and namespace ids resolved
    /// earlier (a switch that dropped CAP_SYS_ADMIN can no longer enter its ports'
    /// namespaces to open them), with `persistence` a state file kept up to date, the
    /// configured VM ports' devices made, and `monitor` (opened while privileged) to
    /// follow the ports' netdevs: up, down, moved to another namespace, or gone with
    /// their namespace; but no thread started.
    pub fn prepare(
        socket: ControlSocket,
        dataplane: DataplaneHandle,
        config: Config,
        events: Receiver<Event>,
        links: LinkSockets,
        persistence: Option<Persistence>,
        monitor: Option<LinkMonitor>,
    ) -> Result<PreparedServer, ControlError> {
        let (vms, domain_events) = vms::Vms::new(&config.switch);
        let fresh_start = socket.file.remove;
        let (store, runtime_ports) = match persistence {
            Some(Persistence {
                store,
                runtime_ports,
            }) => (Some(store), runtime_ports),
            None => (None, Vec::new()),
        };
        let state = State {
            config,
            links,
            runtime_ports,
            store,
            saved: None,
            save_failing: false,
            destroyed: Vec::new(),
            reload: None,
        };
        let mut prepared = PreparedServer {
            parts: Some(Prepared {
                socket,
                dataplane,
                events,
                state,
                vms,
                domain_events,
                fresh_start,
                monitor,
                evpn: crate::evpn::EvpnLink::default(),
            }),
        };
        // The configured VM ports' TAPs exist: give them their VM devices before serving.
        let parts = prepared.parts.as_mut().expect("set above");
        vms::create_configured(&mut parts.state)?;
        Ok(prepared)
    }
}

impl PreparedServer {
    /// Where `evpn status` reads the EVPN agent (started after the privilege drop, so
    /// after [`ControlServer::prepare`]).
    pub fn set_evpn(&mut self, link: crate::evpn::EvpnLink) {
        if let Some(parts) = &mut self.parts {
            parts.evpn = link;
        }
    }

    // ---- reload ----
    /// What `reload` and SIGHUP read again.
    pub fn set_reload_source(&mut self, source: Option<ReloadSource>) {
        if let Some(parts) = &mut self.parts {
            parts.state.reload = source;
        }
    }

    /// Starts the server's threads (after the privilege drop: they inherit its sets).
    pub fn spawn(mut self) -> Result<ControlServer, ControlError> {
        // On error `self` still holds everything, and dropping it cleans up.
        let (wake_tx, wake_rx) = UnixStream::pair()
            .and_then(|(tx, rx)| {
                tx.set_nonblocking(true)?;
                Ok((tx, rx))
            })
            .map_err(ControlError::Thread)?;
        let Prepared {
            socket,
            dataplane,
            events,
            state,
            vms,
            domain_events,
            fresh_start,
            monitor,
            evpn,
        } = self.parts.take().expect("taken only here");
        let ControlSocket { listener, mut file } = socket;
        let saving = state.store.is_some();
        let shared = Arc::new(Shared {
            dataplane,
            state: Mutex::new(state),
            subscribers: Mutex::new(Vec::new()),
            connections: Mutex::new(Connections::default()),
            stopping: AtomicBool::new(false),
            listener_fd: listener.as_raw_fd(),
            path: file.path.clone(),
            handed_over: AtomicBool::new(false),
            wake: wake_tx,
            vms,
            link_monitor_fd: monitor
                .as_ref()
                .and_then(|monitor| monitor.try_clone_fd().ok()),
            link_monitor: Mutex::new(monitor),
            evpn,
            // The same instant as the metrics' `tapswitch_start_time_seconds`.
            started: crate::metrics::process_start(),
        });
        let started = (|| {
            let vm_events = vms::spawn(&shared, domain_events)?;
            links::spawn(&shared)?;
            let fan_out = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("tapswitch-events".into())
                .spawn(move || fan_out_events(&fan_out, &events))
                .map_err(ControlError::Thread)?;
            let acceptor = Arc::clone(&shared);
            let accept = std::thread::Builder::new()
                .name("tapswitch-control".into())
                .spawn(move || accept_connections(&acceptor, &listener, &wake_rx))
                .map_err(ControlError::Thread)?;
            let (stop_saving, saver) = if saving {
                let (stop, stopped) = mpsc::sync_channel(0);
                let saver = Arc::clone(&shared);
                let thread = std::thread::Builder::new()
                    .name("tapswitch-state".into())
                    .spawn(move || save_periodically(&saver, &stopped))
                    .map_err(ControlError::Thread)?;
                (Some(stop), Some(thread))
            } else {
                (None, None)
            };
            Ok((vm_events, accept, stop_saving, saver))
        })();
        let (vm_events, accept, stop_saving, saver) = match started {
            Ok(threads) => threads,
            Err(error) => {
                // Threads already started see `stopping` (or their channels close) and end.
                stop_accepting(&shared);
                if fresh_start {
                    vms::remove_unkept_devices(&mut lock(&shared.state));
                }
                return Err(error);
            }
        };
        // Served by us from now on, also a socket handed over by the switch we replace.
        file.remove = true;
        info!(path = %file.path.display(), "control socket ready");
        Ok(ControlServer {
            shared,
            file,
            accept,
            vm_events,
            stop_saving,
            saver,
        })
    }
}

impl ControlServer {
    /// What the signal thread reloads the configuration through.
    pub fn reloader(&self) -> Reloader {
        Reloader(Arc::clone(&self.shared))
    }

    /// Whether this switch handed everything over to a new process (`upgrade`).
    pub fn handed_over(&self) -> bool {
        self.shared.handed_over.load(Ordering::SeqCst)
    }

    /// Writes the state file from `last`, the dataplane's final snapshot (at exit,
    /// when it no longer answers). Nothing after a handover: the file is the new process's.
    pub fn save_state(&self, last: &Snapshot) {
        let mut state = lock(&self.shared.state);
        prune_config(&mut state, last);
        save_state(&self.shared, &mut state, last);
    }

    /// Stops accepting, removes the socket file and waits for the accept
    /// thread, then closes the open connections and joins their threads (within a
    /// bound: see [`stop_connections`]).
    pub fn stop(mut self) {
        drop(self.stop_saving.take());
        if let Some(saver) = self.saver.take() {
            let _ = saver.join();
        }
        stop_accepting(&self.shared);
        let _ = self.accept.join();
        let (joined, left) = stop_connections(&self.shared);
        if left > 0 {
            warn!(
                joined,
                left, "control connection threads still running at exit; leaving them"
            );
        } else {
            info!(joined, "control connections closed");
        }
        let mut file = self.file;
        // After a handover the socket file is the new process's.
        file.remove = !self.shared.handed_over.load(Ordering::SeqCst);
        drop(file);
        vms::stop(&self.shared, self.vm_events);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A control thread that panicked mid-change left nothing half-written
    // that the next request could trip over: the dataplane owns the real state.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Makes the accept thread return (connections already open are served on).
fn stop_accepting(shared: &Shared) {
    shared.stopping.store(true, Ordering::SeqCst);
    // A full buffer means a wake-up is already pending.
    let _ = (&shared.wake).write(&[1]);
}

fn accept_connections(shared: &Arc<Shared>, listener: &UnixListener, wake: &UnixStream) {
    // Non-blocking: after a handover two processes poll the same socket for a
    // moment, and the one that loses the race must not block in accept.
    if let Err(e) = listener.set_nonblocking(true) {
        warn!(error = %e, "the control socket cannot be made non-blocking; not serving it");
        return;
    }
    loop {
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is an array of two initialised pollfds, live for the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            warn!(%error, "waiting for control connections failed; not serving the socket");
            return;
        }
        if fds[1].revents != 0 || shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let mut stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                warn!(error = %e, "accepting a control connection failed");
                continue;
            }
        };
        // Accepted sockets inherit nothing from the listener's O_NONBLOCK on
        // Linux, but say it: connection threads use blocking I/O.
        let _ = stream.set_nonblocking(false);
        // A client that stops reading or sending cannot hold a thread for ever.
        let _ = stream.set_read_timeout(Some(CONNECTION_IDLE_TIMEOUT));
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        // The socket's mode keeps others out, unless someone loosened it (or its
        // directory): the peer's credentials, which the kernel vouches for, decide.
        if let Err(refusal) = check_peer_credentials(&stream) {
            warn!(%refusal, "control connection refused");
            let _ = write_line(&mut stream, &error_reply(refusal));
            continue;
        }
        let Some(id) = lock(&shared.connections).admit(&stream) else {
            let _ = write_line(
                &mut stream,
                &error_reply(RequestError::new(
                    ErrorKind::Unavailable,
                    "too many control connections (all of them busy)",
                )),
            );
            continue;
        };
        let connection = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("tapswitch-conn".into())
            .spawn(move || {
                serve_connection(&connection, stream, id);
                lock(&connection.connections).open.remove(&id);
            });
        match spawned {
            Ok(thread) => lock(&shared.connections).keep_thread(thread),
            Err(e) => {
                lock(&shared.connections).open.remove(&id);
                warn!(error = %e, "starting a control connection thread failed");
            }
        }
    }
}

/// Who may use the control socket: root and the user the switch runs as. `Err`
/// says why a peer may not.
fn check_peer_credentials(stream: &UnixStream) -> Result<(), RequestError> {
    let peer = peer_credentials(stream).map_err(|e| {
        RequestError::permission(format!("cannot tell who is connecting (SO_PEERCRED: {e})"))
    })?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let own = unsafe { libc::geteuid() };
    if peer.uid == 0 || peer.uid == own {
        return Ok(());
    }
    Err(RequestError::permission(format!(
        "permission denied: uid {} (pid {}) is neither root nor the switch's own uid {own}",
        peer.uid, peer.pid
    )))
}

/// The process at the other end of a Unix socket, as the kernel recorded it at connect.
fn peer_credentials(stream: &UnixStream) -> std::io::Result<libc::ucred> {
    let mut credentials = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes at most `len` bytes into `credentials`, a live ucred,
    // and stores the length it wrote in `len`; both pointers are valid for the call.
    let ret = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut credentials).cast(),
            &raw mut len,
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(credentials)
}

fn write_line(stream: &mut UnixStream, value: &Value) -> std::io::Result<()> {
    let mut line = value.to_string();
    line.push('\n');
    stream.write_all(line.as_bytes())
}

fn error_reply(error: RequestError) -> Value {
    Response::refusal(error).to_wire()
}

/// Reads one line of at most [`MAX_REQUEST_LEN`] bytes. `Ok(None)` at end of
/// stream; `Err(true)` when the line is too long, `Err(false)` on I/O errors.
fn read_request(reader: &mut BufReader<UnixStream>) -> Result<Option<Vec<u8>>, bool> {
    let mut line = Vec::new();
    let limit = MAX_REQUEST_LEN as u64 + 1;
    match reader.by_ref().take(limit).read_until(b'\n', &mut line) {
        Ok(0) => Ok(None),
        Ok(_) if line.last() == Some(&b'\n') => {
            line.pop();
            Ok(Some(line))
        }
        Ok(_) if line.len() > MAX_REQUEST_LEN => Err(true),
        // The peer closed without a newline: take what it sent as the last request.
        Ok(_) => Ok(Some(line)),
        Err(_) => Err(false),
    }
}

/// Parses one request line (without its newline), as the server does.
pub fn parse_request(line: &[u8]) -> Result<Request, serde_json::Error> {
    serde_json::from_slice::<Value>(line).and_then(|value| {
        // serde would also take a request as an array of its fields; only objects are requests.
        if value.is_object() {
            serde_json::from_value::<Request>(value)
        } else {
            Err(serde::de::Error::custom("a request is a JSON object"))
        }
    })
}

fn serve_connection(shared: &Arc<Shared>, stream: UnixStream, id: u64) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        lock(&shared.connections).set_waiting(id, true);
        let read = read_request(&mut reader);
        lock(&shared.connections).set_waiting(id, false);
        let line = match read {
            Ok(Some(line)) => line,
            Ok(None) | Err(false) => return,
            Err(true) => {
                let message = format!("request longer than {MAX_REQUEST_LEN} bytes; closing");
                let _ = write_line(
                    &mut writer,
                    &error_reply(RequestError::bad_request(message)),
                );
                return;
            }
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let request = match parse_request(&line) {
            Ok(request) => request,
            Err(e) => {
                let message = format!("bad request: {e}");
                if write_line(
                    &mut writer,
                    &error_reply(RequestError::bad_request(message)),
                )
                .is_err()
                {
                    return;
                }
                continue;
            }
        };
        debug!(?request, "control request");
        if let Request::Events {} = request {
            stream_events(shared, writer);
            return;
        }
        if let Request::Capture {
            port,
            drops,
            count,
            snaplen,
        } = request
        {
            match capture::start(shared, port, drops, count, snaplen) {
                Ok(started) => return capture::stream(shared, writer, started),
                Err(error) => {
                    if write_line(&mut writer, &error_reply(error)).is_err() {
                        return;
                    }
                    continue;
                }
            }
        }
        let upgrading = matches!(request, Request::Upgrade { .. });
        let reply =
            Response::new(handle_request(shared, request).and_then(|r| r.to_result())).to_wire();
        let written = write_line(&mut writer, &reply);
        if upgrading && shared.handed_over.load(Ordering::SeqCst) {
            // Only now: stopping first could end the process before the reply.
            let _ = shared.dataplane.shutdown();
        }
        if written.is_err() {
            return;
        }
    }
}

/// Serves one request that is not `events`.
fn handle_request(shared: &Shared, request: Request) -> Result<Reply, RequestError> {
    let dataplane = &shared.dataplane;
    match request {
        Request::Hello {} => {
            let state = lock(&shared.state);
            Ok(Reply::Hello(protocol::Hello {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                metrics: state.config.switch.metrics.clone(),
            }))
        }
        Request::PortAdd { port } => add_port(shared, port).map(Reply::Port),
        Request::Upgrade { binary } => upgrade(shared, binary).map(Reply::HandedOver),
        Request::PortDel { name } => {
            let mut state = lock(&shared.state);
            let reply = remove_port(shared, &mut state, &name, true, RemovalCause::Requested)?;
            info!(port = %name, "port deleted by request");
            Ok(Reply::Port(reply))
        }
        Request::PortSet { name, set } => set_port(shared, &name, set).map(Reply::Port),
        Request::PortList {} => {
            let counters = counters(dataplane)?;
            let mut state = lock(&shared.state);
            prune_config(&mut state, &counters);
            let ports: PortList = counters
                .ports
                .iter()
                .map(|live| port_list_entry(&mut state, live))
                .collect();
            Ok(Reply::PortList(ports))
        }
        Request::FdbShow {} => {
            let snapshot = dataplane.snapshot()?;
            Ok(Reply::FdbShow(fdb_show(&snapshot)))
        }
        Request::FdbAdd {
            mac,
            port,
            vlan,
            remote,
        } => {
            dataplane.request(|reply| Command::FdbAdd {
                vlan,
                mac,
                port,
                remote,
                reply,
            })??;
            save_now(shared, &mut lock(&shared.state));
            Ok(Reply::Done)
        }
        Request::FdbDel { mac, vlan } => {
            let removed = dataplane.request(|reply| Command::FdbRemove { vlan, mac, reply })?;
            if removed {
                save_now(shared, &mut lock(&shared.state));
                Ok(Reply::Done)
            } else {
                Err(RequestError::not_found(format!(
                    "no MAC table entry for {mac} on VLAN {vlan}"
                )))
            }
        }
        Request::FdbFlush { port } => {
            let removed = dataplane.request(|reply| Command::FdbFlush { port, reply })??;
            save_now(shared, &mut lock(&shared.state));
            Ok(Reply::FdbFlushed(protocol::FdbFlushed {
                removed: removed as u64,
            }))
        }
        Request::Stats { port } => {
            let mut counters = counters(dataplane)?;
            if let Some(name) = port {
                counters.ports.retain(|p| p.name == name);
                counters.removed_ports.retain(|p| p.name == name);
                if counters.ports.is_empty() && counters.removed_ports.is_empty() {
                    return Err(RequestError::not_found(format!("no port named {name:?}")));
                }
            }
            add_netdev_drops(&mut lock(&shared.state), &mut counters.ports);
            // Counters only: the MAC table is `fdb_show`'s.
            Ok(Reply::Stats(Stats::from(counters).stamped(shared.started)))
        }
        Request::Events {} | Request::Capture { .. } => {
            unreachable!("served by serve_connection")
        }
        Request::ConfigShow {} => {
            let counters = counters(dataplane)?;
            let mut state = lock(&shared.state);
            prune_config(&mut state, &counters);
            Ok(Reply::Config(state.config.clone()))
        }
        Request::LibvirtXml { name } => {
            let counters = counters(dataplane)?;
            let mut state = lock(&shared.state);
            prune_config(&mut state, &counters);
            vms::libvirt_xml(&state, &name).map(Reply::LibvirtXml)
        }
        Request::EvpnStatus {} => evpn_status(shared).map(Reply::EvpnStatus),
        // ---- trace ----
        Request::Trace { port, frame } => {
            let frame = protocol::parse_hex_frame(&frame).map_err(RequestError::invalid_value)?;
            let frame_len = frame.len();
            let traced = dataplane.request(|reply| Command::Trace { port, frame, reply })??;
            Ok(Reply::Trace(protocol::TraceReply {
                frame_len,
                ..protocol::TraceReply::from(traced)
            }))
        }
        // ---- reload ----
        Request::Reload {} => {
            reload::reload(shared, protocol::ReloadTrigger::Request).map(Reply::Reloaded)
        }
    }
}

/// The `evpn_status` reply: the agent's status with the VNIs' ports.
fn evpn_status(shared: &Shared) -> Result<protocol::EvpnStatus, RequestError> {
    let plan = lock(&shared.state)
        .config
        .evpn_plan()
        .map_err(|e| RequestError::internal(e.to_string()))?;
    let plan = plan.ok_or_else(|| {
        RequestError::new(
            ErrorKind::Unsupported,
            "EVPN is off: the configuration has no [evpn] table",
        )
    })?;
    let status = shared.evpn.status().ok_or_else(|| {
        RequestError::new(
            ErrorKind::Unavailable,
            "the EVPN agent is not running (it failed to start, or the switch is stopping)",
        )
    })?;
    let vnis = plan
        .vnis
        .iter()
        .map(|(&vni, on)| {
            let known = status.vnis.get(&vni).cloned().unwrap_or_default();
            protocol::EvpnVniStatus {
                vni,
                port: on.port.clone(),
                remote_vteps: known.remote_vteps,
                local_macs: known.local_macs,
                remote_macs: known.remote_macs,
            }
        })
        .collect();
    Ok(protocol::EvpnStatus {
        gobgp: status.gobgp,
        vtep: plan.vtep,
        asn: plan.asn,
        connected: status.connected,
        last_error: status.last_error,
        sessions: status.sessions,
        vnis,
        undecodable_paths: status.undecodable_paths,
    })
}

/// Hands everything to a new process; once it forwards, this one stops.
fn upgrade(shared: &Shared, binary: Option<PathBuf>) -> Result<protocol::HandedOver, RequestError> {
    let binary = match binary {
        Some(binary) => binary,
        None => std::env::current_exe()
            .map_err(|e| RequestError::internal(format!("finding our own binary: {e}")))?,
    };
    check_upgrade_binary(&binary)?;
    // Held throughout: no port comes or goes during the handover.
    let state = lock(&shared.state);
    let dataplane = &shared.dataplane;
    let snapshot = dataplane.snapshot().map_err(RequestError::from)?;
    let ports = dataplane
        .request(Command::ExportPorts)
        .map_err(RequestError::from)?;
    let mut config = state.config.clone();
    config
        .ports
        .retain(|p| ports.iter().any(|port| port.name() == p.name));
    let mut fds = vec![shared.listener_fd];
    let mut queues = Vec::with_capacity(config.ports.len());
    for configured in &config.ports {
        let port = ports
            .iter()
            .find(|port| port.name() == configured.name)
            .expect("kept above only ports that exist");
        queues.push(port.queues());
        fds.extend((0..port.queues()).map(|queue| port.raw_fd(queue)));
    }
    let names = port_names(&snapshot);
    let fdb = HandedEntry::all(&snapshot, &names);
    let runtime_ports = state
        .runtime_ports
        .iter()
        .filter(|name| config.ports.iter().any(|p| p.name == **name))
        .cloned()
        .collect();
    if let Some(monitor) = &shared.link_monitor_fd {
        fds.push(monitor.as_raw_fd());
    }
    let state_lock = state.store.as_ref().map(StateDir::lock_fd);
    if let Some(lock) = &state_lock {
        fds.push(lock.as_raw_fd());
    }
    let handover = Handover {
        version: upgrade::HANDOVER_VERSION,
        config,
        queues,
        fdb,
        runtime_ports,
        link_monitor: shared.link_monitor_fd.is_some(),
        state_lock: state_lock.is_some(),
        reload_source: state.reload.clone(),
    };
    let args = ["--control".to_owned(), shared.path.display().to_string()];
    let child = upgrade::hand_over(&binary, &args, &fds, &handover).map_err(RequestError::from)?;
    // The new process forwards: new connections are its; our dataplane
    // stops once this reply is written (see `serve_connection`).
    shared.handed_over.store(true, Ordering::SeqCst);
    // systemd keeps the service: the new process is its main process from now on.
    crate::notify::main_pid(child.id());
    stop_accepting(shared);
    info!(pid = child.id(), binary = %binary.display(), "handed over; stopping");
    Ok(protocol::HandedOver {
        pid: child.id(),
        binary,
    })
}

/// What `upgrade` may start, with every TAP and this socket: an executable file by
/// absolute path (not relative to wherever the switch was started), owned by root or
/// the switch's user and writable by nobody else, so nobody else decides what runs.
fn check_upgrade_binary(binary: &Path) -> Result<(), RequestError> {
    use std::os::unix::fs::MetadataExt;
    let shown = binary.display();
    if !binary.is_absolute() {
        return Err(RequestError::invalid_value(format!(
            "upgrade: binary {shown} is not an absolute path"
        )));
    }
    let meta = std::fs::metadata(binary).map_err(|e| {
        RequestError::new(
            if e.kind() == std::io::ErrorKind::NotFound {
                ErrorKind::NotFound
            } else {
                ErrorKind::InvalidValue
            },
            format!("upgrade: binary {shown}: {e}"),
        )
    })?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let own = unsafe { libc::geteuid() };
    let mode = meta.mode() & 0o7777;
    let refusal = if !meta.is_file() {
        format!("upgrade: binary {shown} is not a regular file")
    } else if mode & 0o111 == 0 {
        format!("upgrade: binary {shown} is not executable (mode {mode:04o})")
    } else if mode & 0o022 != 0 {
        format!(
            "upgrade: binary {shown} is writable by users other than its owner (mode {mode:04o})"
        )
    } else if meta.uid() != 0 && meta.uid() != own {
        format!(
            "upgrade: binary {shown} belongs to uid {}, neither root nor the switch's own uid {own}",
            meta.uid()
        )
    } else {
        return Ok(());
    };
    Err(RequestError::invalid_value(refusal))
}

/// Removes port `name` from the dataplane and closes its TAP here, off the packet path
/// (deleting a non-persistent netdev), with a VM port's devices. `unplug`: first take a VM
/// port's NIC out of its domain (not when the domain itself dropped it or went away).
fn remove_port(
    shared: &Shared,
    state: &mut State,
    name: &str,
    unplug: bool,
    cause: RemovalCause,
) -> Result<PortReply, RequestError> {
    let vm_port = state
        .config
        .ports
        .iter()
        .find(|p| p.name == name && p.vm().is_some())
        .cloned();
    let unplugged = match &vm_port {
        Some(port) if unplug => vms::unplug(shared, port),
        _ => None,
    };
    let removed = shared
        .dataplane
        .request(|reply| Command::RemovePort {
            name: name.to_owned(),
            cause,
            reply,
        })
        .map_err(RequestError::from)?
        .map_err(RequestError::from)?;
    release(removed.port);
    if let Some(port) = &vm_port {
        vms::remove_devices(state, port);
    }
    state.config.ports.retain(|p| p.name != name);
    save_now(shared, state);
    Ok(PortReply {
        port: removed.last,
        vm: unplugged,
    })
}

/// How long `port del` waits for the other dataplane workers to let go of a port.
const RELEASE_WAIT: Duration = Duration::from_secs(1);

/// Closes a removed port here, before the reply: the other workers drop their handle when
/// they read their `Detach`, so with several threads the last one may still be in flight.
/// Waiting (briefly) for it means a vxlan port's UDP port, a TAP's name, are free once
/// `port del` has answered.
fn release(port: Arc<dyn Port>) {
    let deadline = Instant::now() + RELEASE_WAIT;
    while Arc::strong_count(&port) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    if Arc::strong_count(&port) > 1 {
        warn!(
            port = port.name(),
            "a dataplane worker still holds the removed port; it closes when that one lets go"
        );
    }
    drop(port);
}

/// Writes the state file if it says something new.
fn save_state(shared: &Shared, state: &mut State, snapshot: &Snapshot) {
    // After a handover the file is the new process's.
    if shared.handed_over.load(Ordering::SeqCst) {
        return;
    }
    let Some(store) = &state.store else {
        return;
    };
    let names = port_names(snapshot);
    let fdb = HandedEntry::all(snapshot, &names);
    let config = &state.config;
    state
        .runtime_ports
        .retain(|name| config.ports.iter().any(|p| p.name == *name));
    let ports = state
        .runtime_ports
        .iter()
        .filter_map(|name| config.ports.iter().find(|p| p.name == *name).cloned())
        .collect();
    let saved = SavedState::new(ports, fdb);
    if state.saved.as_ref().is_some_and(|last| saved.same_as(last)) {
        return;
    }
    match store.save(&saved) {
        Ok(()) => {
            if state.save_failing {
                info!(path = %store.file().display(), "the state file is written again");
            }
            state.save_failing = false;
            state.saved = Some(saved);
        }
        Err(error) => {
            if !state.save_failing {
                warn!(%error, "saving the switch state failed; trying again on the next change");
            }
            state.save_failing = true;
        }
    }
}

/// Writes the state file after a change, with the MAC table as it is now.
fn save_now(shared: &Shared, state: &mut State) {
    if state.store.is_none() {
        return;
    }
    // A stopped dataplane: the final save at exit writes it.
    if let Ok(snapshot) = shared.dataplane.snapshot() {
        save_state(shared, state, &snapshot);
    }
}

/// `tapswitch-state`: the MAC table changes without requests (learning,
/// ageing, ports removed after errors), so it is written every
/// [`SAVE_INTERVAL`] when it has changed.
fn save_periodically(shared: &Shared, stop: &Receiver<()>) {
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(SAVE_INTERVAL) {
        let Ok(snapshot) = shared.dataplane.snapshot() else {
            return;
        };
        let mut state = lock(&shared.state);
        prune_config(&mut state, &snapshot);
        save_state(shared, &mut state, &snapshot);
    }
}

fn counters(dataplane: &DataplaneHandle) -> Result<Snapshot, RequestError> {
    Ok(dataplane.request(Command::Counters)?)
}

/// Sets `netdev_tx_dropped` of each TAP port in `ports` from its netdev's link statistics
/// (`IFLA_STATS64`, read by namespace id through our own netlink socket): the frames its
/// endpoint sent while the TAP's queue was full, which the switch never saw. On the control
/// thread, never on the packet path; a port whose netdev cannot be read keeps `None`.
fn add_netdev_drops(state: &mut State, ports: &mut [crate::dataplane::PortSnapshot]) {
    for port in ports {
        let Some(config) = state.config.ports.iter().find(|p| p.name == port.name) else {
            continue;
        };
        if config.tap().is_none() {
            continue;
        }
        let netns = config.netns.clone();
        match state.links.info(netns.as_deref(), &port.name) {
            Ok(info) => port.netdev_tx_dropped = Some(info.stats.tx_dropped),
            Err(error) => debug!(port = %port.name, %error, "reading the netdev's drops failed"),
        }
    }
}

/// Forgets configured ports the dataplane removed after a device error, so
/// the configuration says what runs and such a port can be added again; a VM
/// port's devices go with it.
fn prune_config(state: &mut State, counters: &Snapshot) {
    let gone: Vec<PortConfig> = state
        .config
        .ports
        .iter()
        .filter(|p| !counters.ports.iter().any(|live| live.name == p.name))
        .cloned()
        .collect();
    for port in &gone {
        vms::remove_devices(state, port);
    }
    state
        .config
        .ports
        .retain(|p| counters.ports.iter().any(|live| live.name == p.name));
}

fn add_port(shared: &Shared, port: PortConfig) -> Result<PortReply, RequestError> {
    let counters = counters(&shared.dataplane)?;
    let mut guard = lock(&shared.state);
    let state = &mut *guard;
    prune_config(state, &counters);
    let reply = add_port_locked(shared, state, port)?;
    save_now(shared, state);
    Ok(reply)
}

/// `port add` under the control mutex (of a `port_add` request or a reload), the
/// configuration pruned: nothing changed when it fails. The port is recorded as added at
/// runtime; the state file is not written.
fn add_port_locked(
    shared: &Shared,
    state: &mut State,
    port: PortConfig,
) -> Result<PortReply, RequestError> {
    port.validate("port").map_err(RequestError::from)?;
    if let Some(netns) = &port.netns
        && !privileges::thread_has(CAP_SYS_ADMIN)
    {
        return Err(RequestError::permission(format!(
            "port.netns: adding a port in namespace {netns} at runtime needs CAP_SYS_ADMIN \
             (to enter it), which this switch dropped after setup; list the port in the \
             config file, or set switch.netns_hotplug = true"
        )));
    }
    if vmport::needs_chown(&port) && !privileges::thread_has(CAP_CHOWN) {
        return Err(RequestError::permission(format!(
            "port.owner: giving VM port {}'s /dev/tapN to {} at runtime needs CAP_CHOWN, \
             which this switch dropped after setup; set switch.vm_hotplug = true (the \
             default), list the port in the config file, or use --mode glue (a glue TAP's \
             owner needs no extra capability)",
            port.name,
            vmport::owner_text(port.owner(), port.group())
        )));
    }
    if state.config.ports.iter().any(|p| p.name == port.name) {
        return Err(RequestError::new(
            ErrorKind::AlreadyExists,
            format!("port.name: a port named {:?} already exists", port.name),
        ));
    }
    // The slow part (TAP open in the namespace, netlink) runs here, not in the dataplane.
    let opened = switch::open_port(&state.config.switch, &port, &mut state.links)
        .map_err(RequestError::from)?;
    // On error the TAP is dropped, which deletes it (and a macvtap stacked on it).
    let vm_interface = vms::create_devices(state, &port)?;
    let added = shared
        .dataplane
        .request(|reply| Command::AddPort {
            port: opened,
            mtu: port.mtu,
            settings: switch::settings_of(&state.config.switch, &port),
            reply,
        })
        .map_err(RequestError::from)
        .and_then(|added| added.map_err(RequestError::from));
    let added = match added {
        Ok(added) => added,
        Err(error) => {
            vms::remove_devices(state, &port);
            return Err(error);
        }
    };
    info!(port = %port.name, netns = port.netns.as_deref().unwrap_or("-"), "port added by request");
    // A namesake that went with its namespace is not this port.
    state.destroyed.retain(|name| *name != port.name);
    state.config.ports.push(port.clone());
    state.runtime_ports.retain(|name| *name != port.name);
    state.runtime_ports.push(port.name.clone());
    let mut reply = PortReply {
        port: added,
        vm: None,
    };
    if let Some(interface) = vm_interface {
        // The port forwards before the guest sees its NIC.
        match vms::plug(shared, &port, &interface) {
            Ok(vm) => reply.vm = Some(vm),
            Err(error) => {
                let _ = remove_port(shared, state, &port.name, false, RemovalCause::Requested);
                return Err(error
                    .context(format_args!("port {}", port.name))
                    .suffixed("; the port was not added"));
            }
        }
    }
    Ok(reply)
}

fn set_port(
    shared: &Shared,
    name: &str,
    settings: PortSettings,
) -> Result<PortReply, RequestError> {
    if settings.is_empty() {
        return Err(RequestError::bad_request(format!(
            "port {name}: nothing to change (give settings such as mtu, enabled, vlan_mode, vlan, mac_limit)"
        )));
    }
    let patch = PortPatch::from_settings(name, &settings).map_err(RequestError::from)?;
    let counters = counters(&shared.dataplane)?;
    let mut guard = lock(&shared.state);
    let state = &mut *guard;
    prune_config(state, &counters);
    let reply = set_port_locked(shared, state, name, &patch)?;
    let settings = serde_json::to_string(&settings).expect("JSON values serialise");
    info!(port = %name, %settings, "port changed by request");
    save_now(shared, state);
    Ok(reply)
}

/// `port set` under the control mutex (of a `port_set` request or a reload), the
/// configuration pruned: nothing changed when it fails. The state file is not written.
fn set_port_locked(
    shared: &Shared,
    state: &mut State,
    name: &str,
    patch: &PortPatch,
) -> Result<PortReply, RequestError> {
    let Some(index) = state.config.ports.iter().position(|p| p.name == name) else {
        return Err(RequestError::not_found(format!("no port named {name:?}")));
    };
    let old = &state.config.ports[index];
    let netns = old.netns.clone();
    // The port's whole new configuration, checked like a config file before anything
    // changes: a bad setting is refused with nothing applied.
    let new = old.patched(patch).map_err(RequestError::from)?;
    let old_policy = old.policy_in(&state.config.switch);
    let new_policy = new.policy_in(&state.config.switch);
    let update = PortUpdate {
        mtu: (new.mtu != old.mtu).then_some(new.mtu),
        // Given explicitly even when the config says so already: it is also what
        // brings back a port its MAC limit shut down.
        enabled: patch.sets_enabled().then_some(new.enabled),
        policy: (new_policy != old_policy).then_some(new_policy),
        ..PortUpdate::default()
    };
    // The netdev first: if the kernel refuses, nothing has changed.
    let netdev = netdev_changes(old, &new);
    let update = PortUpdate {
        mac: netdev.mac.map(MacAddr),
        txqueuelen: netdev.txqueuelen,
        ..update
    };
    if netdev != LinkSettings::default() {
        configure_netdev(&mut state.links, netns.as_deref(), name, &netdev)?;
    }
    let result = shared
        .dataplane
        .request(|reply| Command::UpdatePort {
            name: name.to_owned(),
            update,
            reply,
        })
        .map_err(RequestError::from)
        .and_then(|result| result.map_err(RequestError::from));
    let snapshot = match result {
        Ok(snapshot) => snapshot,
        Err(message) => {
            // The dataplane refuses only a port it no longer has or when it stops;
            // put the netdev back anyway, so nothing stays half-applied.
            let old = &state.config.ports[index];
            let undo = netdev_changes(&new, old);
            if undo != LinkSettings::default()
                && let Err(undo_error) =
                    configure_netdev(&mut state.links, netns.as_deref(), name, &undo)
            {
                warn!(port = %name, error = %undo_error, "restoring the netdev failed");
            }
            return Err(message);
        }
    };
    state.config.ports[index] = new;
    Ok(PortReply {
        port: snapshot,
        vm: None,
    })
}

/// The netdev settings that differ between two configurations of a port. A
/// setting `new` no longer has (`mac`, `txqueuelen` returned to "unset") leaves
/// the netdev as it is.
fn netdev_changes(old: &PortConfig, new: &PortConfig) -> LinkSettings {
    if !new.kind().is_tap() {
        // A netdev port's device is not the switch's: its `mtu` is only the switch's check.
        return LinkSettings::default();
    }
    LinkSettings {
        mtu: (new.mtu != old.mtu).then_some(new.mtu),
        mac: new
            .mac()
            .filter(|&mac| Some(mac) != old.mac())
            .map(|mac| mac.0),
        txqueuelen: new
            .txqueuelen()
            .filter(|&len| Some(len) != old.txqueuelen()),
        ..LinkSettings::default()
    }
}

/// Applies `settings` to port `name`'s netdev in namespace `netns`.
fn configure_netdev(
    links: &mut LinkSockets,
    netns: Option<&str>,
    name: &str,
    settings: &LinkSettings,
) -> Result<(), RequestError> {
    let link_error =
        |e: crate::netlink::LinkError| RequestError::from(e).context(format!("port {name}"));
    let netlink =
        links.get(netns).map_err(|error| match &error {
            crate::netlink::LinkError::Netns(crate::sys::netns::NetnsError::Os {
                source, ..
            }) if source.raw_os_error() == Some(libc::EPERM) => RequestError::permission(format!(
                "port {name}: its netdev is in namespace {}, which this switch cannot enter \
                 (CAP_SYS_ADMIN was dropped after setup): change it there, or set \
                 switch.netns_hotplug = true",
                netns.unwrap_or("-")
            )),
            _ => link_error(error),
        })?;
    let index = netlink.index_of(name).map_err(link_error)?;
    netlink.configure(index, settings).map_err(link_error)
}

/// One port of `port_list`: its live state, its configuration, and its netdev as
/// netlink reports it now.
fn port_list_entry(state: &mut State, live: &PortSnapshot) -> PortListEntry {
    let config = state
        .config
        .ports
        .iter()
        .find(|p| p.name == live.name)
        .cloned();
    let config = config.as_ref();
    let netdev = config.and_then(|config| port_netdev(&mut state.links, config));
    PortListEntry {
        name: live.name.clone(),
        id: live.id,
        netns: config.and_then(|c| c.netns.clone()),
        mtu: live.mtu,
        enabled: live.enabled,
        link: if live.link_up {
            protocol::LinkState::Up
        } else {
            protocol::LinkState::Down
        },
        offloads: live.vnet_hdr,
        persistent: config.is_some_and(|c| c.persistent()),
        adopted: config.is_some_and(|c| c.adopted()),
        vm: config.and_then(|c| c.vm_domain().map(str::to_owned)),
        netdev,
        vlan: config.map(port_vlan).unwrap_or_default(),
    }
}

/// The netdev of a TAP or netdev port, looked up in its namespace; `None` for a vxlan
/// port or one whose namespace or device the switch cannot reach now.
fn port_netdev(links: &mut LinkSockets, config: &PortConfig) -> Option<protocol::PortNetdev> {
    let device = match &config.device {
        crate::config::DeviceConfig::Tap(_) => config.name.as_str(),
        crate::config::DeviceConfig::Netdev(netdev) => netdev.device.as_str(),
        crate::config::DeviceConfig::Vxlan(_) => return None,
    };
    let info = links
        .get(config.netns.as_deref())
        .and_then(|netlink| netlink.info(device))
        .map_err(|error| debug!(port = %config.name, %error, "no netdev facts for port list"))
        .ok()?;
    Some(protocol::PortNetdev {
        name: info.name,
        ifindex: info.index,
        mac: info.mac.map(MacAddr),
        up: info.up,
        carrier: info.carrier,
        oper_state: info.oper_state,
        txqueuelen: info.txqueuelen,
    })
}

/// A port's VLAN settings as `port_list` shows them.
fn port_vlan(config: &PortConfig) -> protocol::PortVlan {
    use crate::config::VlanModeName;
    let policy = &config.policy;
    let vid = |id: Option<i64>| id.and_then(|id| u16::try_from(id).ok());
    match policy.vlan_mode {
        None => protocol::PortVlan::default(),
        Some(VlanModeName::Access) => protocol::PortVlan {
            mode: protocol::PortVlanMode::Access,
            vlan: vid(policy.vlan),
            ..protocol::PortVlan::default()
        },
        Some(VlanModeName::Trunk) => protocol::PortVlan {
            mode: protocol::PortVlanMode::Trunk,
            native_vlan: vid(policy.native_vlan),
            allowed_vlans: policy.allowed_vlans.as_ref().map(|specs| {
                specs
                    .iter()
                    .map(|spec| match spec {
                        crate::config::VlanSpec::Id(id) => id.to_string(),
                        crate::config::VlanSpec::Range(range) => range.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            }),
            ..protocol::PortVlan::default()
        },
    }
}

fn port_names(snapshot: &Snapshot) -> HashMap<PortId, String> {
    snapshot
        .ports
        .iter()
        .map(|p| (p.id, p.name.clone()))
        .collect()
}

fn name_of(names: &HashMap<PortId, String>, id: PortId) -> String {
    names.get(&id).cloned().unwrap_or_else(|| format!("#{id}"))
}

/// Hands the connection to the fan-out as a subscriber and writes its lines
/// until the reader goes away or the switch stops.
fn stream_events(shared: &Shared, mut writer: UnixStream) {
    let (lines, receiver) = mpsc::sync_channel(SUBSCRIBER_QUEUE_LEN);
    lock(&shared.subscribers).push(Subscriber { lines, lost: 0 });
    // Shutdown clears the subscribers after setting `stopping`: subscribed too late to be
    // cleared, this stream ends here.
    if shared.stopping.load(Ordering::SeqCst) {
        return;
    }
    let ready = Response::new(Reply::Done.to_result()).to_wire();
    if write_line(&mut writer, &ready).is_err() {
        return;
    }
    for line in receiver {
        if writer.write_all(line.as_bytes()).is_err() {
            return;
        }
    }
}

/// Turns dataplane events into JSON lines with port names and a timestamp,
/// and offers each to every subscriber without waiting for any.
fn fan_out_events(shared: &Shared, events: &Receiver<Event>) {
    let mut names: HashMap<PortId, String> = HashMap::new();
    for mut event in events {
        if let Event::PortAdded { port, name, .. } = &event {
            names.insert(*port, name.clone());
        }
        if let Event::PortRemoved { name, cause, .. } = &mut event
            && *cause == RemovalCause::DeviceError
        {
            *cause = links::cause_of_failure(shared, name);
        }
        // Nobody to read it: not worth a line. (A MAC flood is one event per frame,
        // and rendering them all took a core from the dataplane.)
        if !lock(&shared.subscribers).is_empty() {
            let line = render_event(&event, &mut names, &shared.dataplane);
            offer_line(shared, &line);
        }
        if let Event::PortRemoved { port, .. } = &event {
            names.remove(port);
        }
    }
    // The dataplane is gone: dropping the senders ends every event stream.
    lock(&shared.subscribers).clear();
}

/// Offers one event line to every subscriber without waiting for any; a
/// subscriber whose queue is full loses it (and is told how many it lost).
fn offer_line(shared: &Shared, line: &str) {
    let mut subscribers = lock(&shared.subscribers);
    subscribers.retain_mut(|subscriber| {
        if subscriber.lost > 0 {
            let notice = protocol::StreamEvent {
                event: protocol::Event::EventsLost {
                    count: subscriber.lost,
                },
                time: None,
            };
            match subscriber.lines.try_send(event_line(&notice)) {
                Ok(()) => subscriber.lost = 0,
                Err(TrySendError::Full(_)) => {
                    subscriber.lost += 1;
                    return true;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        match subscriber.lines.try_send(line.to_owned()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                subscriber.lost += 1;
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    });
}

/// One event as a JSON line ([`protocol::StreamEvent`]): port ids become names, with
/// the id kept as `<key>_id`, and the time is added.
fn render_event(
    event: &Event,
    names: &mut HashMap<PortId, String>,
    dataplane: &DataplaneHandle,
) -> String {
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let event = protocol::Event::named(event, |id| {
        if !names.contains_key(&id) {
            // A port from before events were on: ask once for the names.
            if let Ok(snapshot) = dataplane.request(Command::Counters) {
                names.extend(port_names(&snapshot));
            }
        }
        name_of(names, id)
    });
    let line = protocol::StreamEvent {
        event,
        time: Some((time.as_millis() as f64) / 1000.0),
    };
    event_line(&line)
}

/// Offers a control-plane event line (with a timestamp) to every `events` subscriber.
fn publish(shared: &Shared, event: protocol::Event) {
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let line = protocol::StreamEvent {
        event,
        time: Some((time.as_millis() as f64) / 1000.0),
    };
    offer_line(shared, &event_line(&line));
}

/// An event line as it goes on the wire, with its newline.
fn event_line(line: &protocol::StreamEvent) -> String {
    let mut text = serde_json::to_string(line).expect("events serialise to JSON");
    text.push('\n');
    text
}

/// A connection to a switch's control socket.
pub struct ControlClient {
    path: PathBuf,
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl ControlClient {
    pub fn connect(path: &Path) -> Result<Self, ControlError> {
        let socket_error = |step, source| ControlError::Socket {
            path: path.to_owned(),
            step,
            source,
        };
        let writer = UnixStream::connect(path).map_err(|source| socket_error("connect", source))?;
        let reader = writer
            .try_clone()
            .map_err(|source| socket_error("clone", source))?;
        Ok(Self {
            path: path.to_owned(),
            writer,
            reader: BufReader::new(reader),
        })
    }

    /// Sends `request` and returns the `result` of a successful reply, as it came: the
    /// wire level under [`Self::request_as`].
    fn request(&mut self, request: &Request) -> Result<Value, ControlError> {
        let mut line = serde_json::to_string(request).expect("requests serialise to JSON");
        line.push('\n');
        if let Err(source) = self.writer.write_all(line.as_bytes()) {
            // A switch that refuses a connection says why and closes it, maybe before
            // the request arrived: its reason is what the caller needs to see.
            return match self.next_line() {
                Ok(reply) if reply["ok"] == false => self.outcome(reply),
                _ => Err(ControlError::Socket {
                    path: self.path.clone(),
                    step: "send",
                    source,
                }),
            };
        }
        let reply = self.next_line()?;
        self.outcome(reply)
    }

    /// Sends `request` and decodes the `result` of a successful reply as its typed
    /// reply `T` (the type [`protocol::Reply`] sends for that request; `()` for
    /// [`protocol::Reply::Done`]).
    pub fn request_as<T: DeserializeOwned>(
        &mut self,
        request: &Request,
    ) -> Result<T, ControlError> {
        let result = self.request(request)?;
        self.decode(result)
    }

    /// A reply's `result` as a `T`.
    fn decode<T: DeserializeOwned>(&self, result: Value) -> Result<T, ControlError> {
        protocol::decode(&result).map_err(|e| ControlError::BadResult {
            path: self.path.clone(),
            line: result.to_string(),
            reason: e.to_string(),
        })
    }

    /// A reply line as the request's result, or the switch's refusal; a switch
    /// speaking an older protocol than [`VERSION`] is refused whatever it answered.
    fn outcome(&self, reply: Value) -> Result<Value, ControlError> {
        let Some(response) = Response::from_wire(reply.clone()) else {
            return Err(ControlError::BadReply {
                path: self.path.clone(),
                line: reply.to_string(),
            });
        };
        match response.checked() {
            Ok(outcome) => outcome.map_err(ControlError::Refused),
            Err(daemon) => Err(ControlError::VersionMismatch {
                path: self.path.clone(),
                client: VERSION,
                daemon,
            }),
        }
    }

    /// Sends a [`Request::Capture`]; on success the rest of the connection, returned
    /// with the reply, is the capture's pcapng stream (`control::capture`).
    pub fn capture(
        mut self,
        request: &Request,
    ) -> Result<(protocol::CaptureReply, BufReader<UnixStream>), ControlError> {
        let reply = self.request_as::<protocol::CaptureReply>(request)?;
        Ok((reply, self.reader))
    }

    /// The next event after [`Request::Events`]; one of a kind this client does not
    /// know comes as [`EventLine::Unknown`].
    pub fn next_event(&mut self) -> Result<EventLine, ControlError> {
        let line = self.next_line()?;
        EventLine::deserialize(&line).map_err(|_| ControlError::BadReply {
            path: self.path.clone(),
            line: line.to_string(),
        })
    }

    /// The next line from the switch as JSON (a reply, or an event after
    /// [`Request::Events`]): the wire level under [`Self::next_event`].
    pub fn next_line(&mut self) -> Result<Value, ControlError> {
        let mut line = String::new();
        let read = self
            .reader
            .read_line(&mut line)
            .map_err(|source| ControlError::Socket {
                path: self.path.clone(),
                step: "receive",
                source,
            })?;
        if read == 0 {
            return Err(ControlError::Socket {
                path: self.path.clone(),
                step: "receive",
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        serde_json::from_str(&line).map_err(|_| ControlError::BadReply {
            path: self.path.clone(),
            line,
        })
    }
}

/// The MAC table as `fdb show` sends it: entries with port names, and counters.
pub fn fdb_show(snapshot: &Snapshot) -> FdbShow {
    let remotes: std::collections::HashMap<_, _> = snapshot
        .fdb_remotes
        .iter()
        .map(|r| ((r.port, r.mac), r.remote))
        .collect();
    let entries = snapshot
        .fdb
        .iter()
        .map(|entry| FdbShowEntry {
            source: entry.kind.into(),
            vlan: entry.vlan,
            mac: entry.mac,
            port: port_name(snapshot, entry.port.0),
            port_id: entry.port,
            kind: entry.kind,
            age_secs: entry.age.as_secs_f64(),
            remote: remotes.get(&(entry.port, entry.mac)).copied(),
        })
        .collect();
    FdbShow {
        entries,
        counters: snapshot.fdb_counters.clone(),
    }
}

fn port_name(snapshot: &Snapshot, id: u32) -> String {
    snapshot
        .ports
        .iter()
        .find(|p| p.id.0 == id)
        .map(|p| p.name.clone())
        .unwrap_or_else(|| format!("#{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_parse_from_json_lines() {
        let request: Request = serde_json::from_str(
            r#"{"cmd":"port_set","name":"p1","set":{"mtu":9000,"vlan":20,"mac_limit":null}}"#,
        )
        .unwrap();
        let Request::PortSet { name, set } = request else {
            panic!("not a port_set: {request:?}")
        };
        assert_eq!(name, "p1");
        assert_eq!(
            Value::Object(set),
            json!({"mtu": 9000, "vlan": 20, "mac_limit": null})
        );
        let request: Request =
            serde_json::from_str(r#"{"cmd":"port_add","port":{"name":"p2","netns":"ns"}}"#)
                .unwrap();
        let Request::PortAdd { port } = request else {
            panic!("not a port_add: {request:?}")
        };
        assert_eq!(port.netns.as_deref(), Some("ns"));
        assert!(port.enabled);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases = [
            (r#"{"cmd":"reboot"}"#, "unknown variant `reboot`"),
            (r#"{"cmd":"port_del"}"#, "missing field `name`"),
            (r#"{"cmd":"port_list","extra":1}"#, "unknown field `extra`"),
            (r#"{"cmd":"fdb_add","mac":"zz","port":"p"}"#, "zz"),
            (
                r#"{"cmd":"port_set","name":"p","set":[3]}"#,
                "invalid type: sequence, expected a map",
            ),
        ];
        for (line, expected) in cases {
            let err = serde_json::from_str::<Request>(line)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{line}: {err}");
        }
    }

    #[test]
    fn older_switches_get_an_error_naming_both_versions() {
        let (client_end, switch_end) = UnixStream::pair().unwrap();
        let client = ControlClient {
            path: PathBuf::from("/run/t.sock"),
            writer: client_end.try_clone().unwrap(),
            reader: BufReader::new(client_end),
        };
        drop(switch_end);
        let unversioned = client.outcome(json!({"ok": true, "result": null}));
        let message = unversioned.unwrap_err().to_string();
        assert!(message.contains(&format!("version {VERSION}")), "{message}");
        assert!(message.contains("unversioned"), "{message}");
        let older = client.outcome(json!({"ok": false, "error": "x", "version": 0}));
        assert!(matches!(
            older,
            Err(ControlError::VersionMismatch {
                client: VERSION,
                daemon: 0,
                ..
            })
        ));
        let refused = client.outcome(
            json!({"ok": false, "error": "gone", "code": "not_found", "version": VERSION}),
        );
        let Err(ControlError::Refused(error)) = refused else {
            panic!("not a refusal: {refused:?}")
        };
        assert_eq!(
            (error.kind, error.message.as_str()),
            (ErrorKind::NotFound, "gone")
        );
    }
}
