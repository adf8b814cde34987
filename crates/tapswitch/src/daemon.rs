//! The daemon's startup: from a configuration (or a running switch's handover)
//! to a switch that forwards, and back to a clean stop.
//!
//! A fresh start ([`run`]) loads and checks the configuration, binds the
//! control socket before any TAP exists (a second switch on the same socket
//! stops there), restores the state file's runtime ports and MAC table, and
//! builds the dataplane. A takeover ([`take_over`], `tapswitch upgrade`) builds
//! the same dataplane from the fds and document a running switch hands over
//! instead. Both then [`serve`]: metrics, link monitor, control server,
//! privilege drop, signals, and the event loop until a stop signal.

use std::io::{self, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use crate::config::{Config, ConfigError, PortConfig, parse_metrics_addr};
use crate::control::{
    ControlError, ControlServer, ControlSocket, EVENT_QUEUE_LEN, Persistence, ReloadSource,
    SignalHandlers,
};
use crate::dataplane::{Dataplane, DataplaneError, DataplaneHandle, Snapshot};
use crate::evpn::{self, EvpnService};
use crate::metrics::{self, MetricsError};
use crate::netlink::{LinkError, LinkMonitor};
use crate::notify;
use crate::port::TapPort;
use crate::state::{StateDir, StateError};
use crate::switch::{self, LinkSockets, SwitchError};
use crate::sys::privileges::{self, Identity, PrivilegeError};
use crate::sys::tap::Tap;
use crate::upgrade::{self, UpgradeError};

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("--metrics: {0}")]
    MetricsOption(String),
    #[error("metrics: {0}")]
    MetricsAddr(String),
    #[error("no ports configured: give --port NAME[@NETNS] or a [[port]] in the config")]
    NoPorts,
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Switch(#[from] SwitchError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
    #[error("port {port}: {source}")]
    PortNamespace {
        port: String,
        #[source]
        source: LinkError,
    },
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("chown {} to the switch user: {source}", path.display())]
    ChownControl {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} (set drop_privileges = false in [switch] to run without)")]
    DropPrivileges(#[source] PrivilegeError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

/// What `tapswitch run` was given on its command line.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RunOptions {
    /// The TOML configuration file.
    pub config: Option<PathBuf>,
    /// Ports added to those of the file.
    pub ports: Vec<PortConfig>,
    /// Overrides `switch.metrics`.
    pub metrics: Option<String>,
    /// Overrides `switch.state_dir`.
    pub state_dir: Option<PathBuf>,
}

/// The configuration `run` starts from: the file (the embedded default with
/// neither a file nor ports), the command line's ports and overrides, checked.
pub fn configure(options: RunOptions) -> Result<Config, DaemonError> {
    let mut config = match &options.config {
        Some(path) => Config::from_file(path)?,
        None if options.ports.is_empty() => Config::embedded_default(),
        None => Config::default(),
    };
    config.ports.extend(options.ports);
    config.validate()?;
    if let Some(addr) = options.metrics {
        parse_metrics_addr(&addr).map_err(DaemonError::MetricsOption)?;
        config.switch.metrics = Some(addr);
    }
    if options.state_dir.is_some() {
        config.switch.state_dir = options.state_dir;
    }
    if config.ports.is_empty() {
        return Err(DaemonError::NoPorts);
    }
    Ok(config)
}

/// Starts a switch afresh and serves it until it stops; returns its last counters.
pub fn run(options: RunOptions, control: &Path) -> Result<Snapshot, DaemonError> {
    metrics::record_start();
    // Before anything exists that a signal's default action would leave behind.
    let signals = SignalHandlers::install()?;
    let mut config = configure(options.clone())?;
    let reload = ReloadSource::new(options, &config);
    // Before any TAP exists: a second switch on the same socket stops here. From here on
    // a failed start removes the socket file (when `socket` is dropped) and its TAPs.
    let socket = ControlSocket::bind(control)?;
    // A misspelt user or a missing namespace stops the switch before it creates anything.
    let identity = switch::preflight(&config)?;
    let store = StateDir::open(
        config.switch.state_dir(),
        identity.as_ref().map(|i| (i.uid, i.gid)),
    )?;
    let saved = store.load().unwrap_or_else(|error| {
        tracing::error!(%error, "not restoring the switch state");
        None
    });
    let (mut dataplane, handle) = switch::build(&config)?;
    let mut runtime_ports = Vec::new();
    if let Some(saved) = saved {
        runtime_ports = restore_ports(&mut config, &mut dataplane, &saved.ports);
        let entries = upgrade::restore_fdb(
            &dataplane,
            &saved.fdb,
            saved.age(),
            config.switch.fdb_ageing(),
        );
        tracing::info!(
            path = %store.file().display(),
            ports = runtime_ports.len(),
            fdb_entries = entries,
            "switch state restored"
        );
    }
    let persistence = Persistence {
        store,
        runtime_ports,
    };
    let parts = Built {
        dataplane,
        handle,
        socket,
        identity,
    };
    serve(config, parts, signals, None, persistence, Some(reload))
}

/// Recreates the ports added at runtime before a restart (persistent TAPs are
/// attached again by name), after those of the configuration, whose names win.
/// A port that cannot be made is skipped with an error: the switch starts
/// without it. Returns the names of those restored.
fn restore_ports(
    config: &mut Config,
    dataplane: &mut Dataplane,
    saved: &[PortConfig],
) -> Vec<String> {
    let mut links = LinkSockets::default();
    let mut restored = Vec::new();
    for port in saved {
        if config.ports.iter().any(|p| p.name == port.name) {
            tracing::warn!(port = %port.name, "the configuration has this port now; not restoring the saved one");
            continue;
        }
        let added = (|| -> Result<(), DaemonError> {
            port.validate("port")?;
            let opened = switch::open_port(&config.switch, port, &mut links)?;
            let id = dataplane.add_port(opened, port.mtu)?;
            dataplane.update_port(id, &switch::settings_of(&config.switch, port))?;
            Ok(())
        })();
        match added {
            Ok(()) => {
                config.ports.push(port.clone());
                restored.push(port.name.clone());
            }
            Err(error) => {
                let saved = serde_json::to_string(port).expect("port configs serialise");
                tracing::error!(port = %port.name, %error, %saved,
                    "a port added at runtime before the restart could not be made again; add it with `port add`");
            }
        }
    }
    restored
}

/// Becomes the switch a running one hands over to (`tapswitch upgrade`) from the
/// socket `fd` it inherited, and serves until it stops; returns its last counters.
/// Whatever stops it before it forwards is also told to the old process, which then
/// keeps forwarding.
pub fn take_over(fd: i32, control: &Path) -> Result<Snapshot, DaemonError> {
    metrics::record_start();
    let signals = SignalHandlers::install()?;
    let (handover, fds, answer_socket) = upgrade::take_over(fd)?;
    let built = (|| {
        let mut fds = fds.into_iter();
        let listener = UnixListener::from(fds.next().expect("take_over checked the count"));
        let socket = ControlSocket::from_listener(listener, control);
        let mut queues = handover.queues.iter();
        let (dataplane, handle) = switch::build_with(&handover.config, |port| {
            match port.kind() {
                crate::config::PortKind::Tap => {}
                crate::config::PortKind::Netdev => {
                    return Err(SwitchError::NetdevHandover {
                        port: port.name.clone(),
                    });
                }
                crate::config::PortKind::Vxlan => {
                    return Err(SwitchError::VxlanHandover {
                        port: port.name.clone(),
                    });
                }
            }
            let count = *queues.next().expect("one queue count per port");
            let taps = fds
                .by_ref()
                .take(count)
                .map(Tap::from_fd)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| SwitchError::Tap {
                    port: port.name.clone(),
                    source,
                })?;
            Ok(Box::new(TapPort::with_queues(taps)) as Box<dyn crate::port::Port>)
        })?;
        upgrade::restore_fdb(
            &dataplane,
            &handover.fdb,
            Duration::ZERO,
            handover.config.switch.fdb_ageing(),
        );
        let identity = switch::resolve_identity(&handover.config)?;
        let monitor = handover
            .link_monitor
            .then(|| fds.next().map(LinkMonitor::from_fd))
            .flatten();
        // The old process made the directory (and gave it to the switch user), and
        // hands over its lock; one from before the lock has none, so it is taken here.
        let state_dir = handover.config.switch.state_dir();
        let store = match handover.state_lock.then(|| fds.next()).flatten() {
            Some(lock) => StateDir::adopt(state_dir, std::fs::File::from(lock))?,
            None => StateDir::open(state_dir, None)?,
        };
        let parts = Built {
            dataplane,
            handle,
            socket,
            identity,
        };
        Ok::<_, DaemonError>((parts, store, monitor))
    })();
    match built {
        Ok((parts, store, monitor)) => {
            let persistence = Persistence {
                store,
                runtime_ports: handover.runtime_ports,
            };
            let handed_over = HandedOver {
                answer: answer_socket,
                monitor,
            };
            serve(
                handover.config,
                parts,
                signals,
                Some(handed_over),
                persistence,
                handover.reload_source,
            )
        }
        Err(error) => {
            upgrade::answer(&answer_socket, Err(error.to_string()));
            Err(error)
        }
    }
}

/// A switch built, not yet serving.
struct Built {
    dataplane: Dataplane,
    handle: DataplaneHandle,
    socket: ControlSocket,
    identity: Option<Identity>,
}

/// What a switch that hands over to this process gives it besides its ports.
struct HandedOver {
    /// Told once this process forwards.
    answer: UnixStream,
    /// Its link monitor socket, when it had one.
    monitor: Option<LinkMonitor>,
}

/// Serves a built switch until it stops: signals, metrics, control socket.
/// `handing_over` is what the process this one replaces handed over: its socket, told
/// once everything is up, and its link monitor.
fn serve(
    mut config: Config,
    built: Built,
    signals: SignalHandlers,
    handing_over: Option<HandedOver>,
    persistence: Persistence,
    reload: Option<ReloadSource>,
) -> Result<Snapshot, DaemonError> {
    let Built {
        mut dataplane,
        handle,
        socket,
        identity,
    } = built;
    let (handing_over, monitor) = match handing_over {
        Some(HandedOver { answer, monitor }) => (Some(answer), monitor),
        None => (None, None),
    };
    let events = dataplane.subscribe_events(EVENT_QUEUE_LEN);
    let metrics_listener = match &config.switch.metrics {
        // Taking over: the old process holds the address until it exits.
        Some(_) if handing_over.is_some() => None,
        Some(addr) => {
            let addr = parse_metrics_addr(addr).map_err(DaemonError::MetricsAddr)?;
            let listener = metrics::bind(addr)?;
            // `config show` tells where metrics really are (port 0 picks one).
            if let Ok(bound) = listener.local_addr() {
                config.switch.metrics = Some(bound.to_string());
            }
            Some(listener)
        }
        None => None,
    };
    // An id for every port's namespace, so that our own netlink socket reaches the links
    // in there (no socket inside: it would keep the namespace alive after `ip netns del`).
    let mut links = LinkSockets::default();
    for port in &config.ports {
        links
            .get(port.netns.as_deref())
            .map_err(|source| DaemonError::PortNamespace {
                port: port.name.clone(),
                source,
            })?;
    }
    // Subscribing to other namespaces' notifications needs CAP_NET_BROADCAST, now only.
    let monitor = match monitor.map_or_else(LinkMonitor::open, Ok) {
        Ok(monitor) => Some(monitor),
        Err(error) => {
            tracing::warn!(%error, "link notifications unavailable: ports' link state and namespace moves are not followed");
            None
        }
    };
    let control_path = socket.path().to_owned();
    // The configured VM ports' devices too (giving /dev/tapN away takes CAP_CHOWN).
    let evpn_plan = config.evpn_plan()?;
    let mut server = ControlServer::prepare(
        socket,
        handle.clone(),
        config.clone(),
        events,
        links,
        Some(persistence),
        monitor,
    )?;
    // Everything privileged is done; no other thread runs yet (capabilities are per thread).
    if config.switch.drop_privileges {
        drop_privileges(&config, identity.as_ref(), &control_path)?;
    }
    // After the privilege drop (it needs a single thread); it needs no privilege.
    let evpn = evpn_plan.and_then(|plan| {
        EvpnService::start(&plan, handle.clone())
            .inspect_err(evpn::start_failed)
            .ok()
    });
    if let Some(evpn) = &evpn {
        server.set_evpn(evpn.link());
    }
    server.set_reload_source(reload);
    let server = server.spawn()?;
    // After the server: SIGHUP reloads through it (a signal meanwhile waits, blocked).
    let signals = match signals.spawn(handle.clone(), Some(server.reloader())) {
        Ok(signals) => signals,
        Err(error) => {
            server.stop();
            return Err(error.into());
        }
    };
    let metrics_source = metrics::Source {
        dataplane: handle.clone(),
        enrich: Some(std::sync::Arc::new(server.netdev_drops())),
    };
    if let Some(listener) = metrics_listener {
        metrics::serve_on(listener, metrics_source)?;
    } else if let (Some(addr), Some(_)) = (&config.switch.metrics, &handing_over) {
        // The old process still listens there until it exits.
        let addr = parse_metrics_addr(addr).map_err(DaemonError::MetricsAddr)?;
        metrics::spawn_when_free(addr, metrics_source);
    }
    let names: Vec<&str> = config.ports.iter().map(|p| p.name.as_str()).collect();
    {
        let mut stdout = io::stdout().lock();
        // Scripts and tests wait for this line: the switch is forwarding.
        let _ = writeln!(
            stdout,
            "tapswitch ready: {} ports ({})",
            names.len(),
            names.join(", ")
        )
        .and_then(|()| stdout.flush());
    }
    match &handing_over {
        // Every port is registered: frames that arrive from now on are read
        // by whichever of the two processes gets them first. The old process tells
        // systemd this one is the service now (it is the one allowed to).
        Some(old) => upgrade::answer(old, Ok(())),
        None => notify::ready(names.len()),
    }
    // Once `run` returns, requests to the dataplane fail at once (it closed its command
    // channel), so the threads joined below cannot wait on it for ever.
    let result = dataplane.run();
    if !server.handed_over() {
        notify::stopping();
    }
    if let Ok(last) = &result {
        server.save_state(last);
    }
    server.stop();
    signals.stop();
    // Dropping the dataplane closes the TAP fds: non-persistent TAPs disappear.
    drop(dataplane);
    if let Some(evpn) = evpn {
        evpn.stop();
    }
    let snapshot = result?;
    Ok(snapshot)
}

/// Keeps only [`Config::runtime_capabilities`], as `identity` when given.
fn drop_privileges(
    config: &Config,
    identity: Option<&Identity>,
    control: &Path,
) -> Result<(), DaemonError> {
    if let Some(identity) = identity {
        // The server wakes its own accept by connecting at shutdown; it must still
        // be allowed to once it is this user.
        std::os::unix::fs::chown(control, Some(identity.uid), Some(identity.gid)).map_err(
            |source| DaemonError::ChownControl {
                path: control.to_owned(),
                source,
            },
        )?;
    }
    let dropped = privileges::drop_privileges(config.runtime_capabilities(), identity)
        .map_err(DaemonError::DropPrivileges)?;
    if !dropped.missing.is_empty() {
        tracing::warn!(missing = %dropped.missing, "capabilities to keep were not held to begin with");
    }
    tracing::info!(
        kept = %dropped.kept,
        uid = dropped.identity.as_ref().map(|i| i.uid),
        gid = dropped.identity.as_ref().map(|i| i.gid),
        netns_hotplug = config.netns_hotplug(),
        "privileges dropped"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_file(text: &str) -> (PathBuf, impl Drop) {
        struct Remove(PathBuf);
        impl Drop for Remove {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        let path = std::env::temp_dir().join(format!(
            "tapswitch-daemon-test-{}-{}.toml",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).unwrap();
        (path.clone(), Remove(path))
    }

    #[test]
    fn the_command_line_adds_ports_and_overrides_the_file() {
        let (path, _remove) =
            config_file("[switch]\nmetrics = \"9100\"\n[[port]]\nname = \"p1\"\n");
        let config = configure(RunOptions {
            config: Some(path),
            ports: vec!["p2@ns2".parse().unwrap()],
            metrics: Some("127.0.0.1:0".into()),
            state_dir: Some("/run/ts-test".into()),
        })
        .unwrap();
        let names: Vec<_> = config.ports.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["p1", "p2"]);
        assert_eq!(config.ports[1].netns.as_deref(), Some("ns2"));
        assert_eq!(config.switch.metrics.as_deref(), Some("127.0.0.1:0"));
        assert_eq!(config.switch.state_dir(), Path::new("/run/ts-test"));
    }

    #[test]
    fn neither_file_nor_ports_means_the_embedded_default() {
        let config = configure(RunOptions::default()).unwrap();
        assert_eq!(config.ports.len(), Config::embedded_default().ports.len());
        assert!(!config.ports.is_empty());
    }

    #[test]
    fn a_start_without_ports_or_with_a_bad_metrics_address_is_refused() {
        let (path, _remove) = config_file("[switch]\n");
        let err = configure(RunOptions {
            config: Some(path.clone()),
            ..RunOptions::default()
        })
        .unwrap_err();
        assert!(matches!(err, DaemonError::NoPorts), "{err}");
        assert_eq!(
            err.to_string(),
            "no ports configured: give --port NAME[@NETNS] or a [[port]] in the config"
        );
        let err = configure(RunOptions {
            ports: vec!["p1".parse().unwrap()],
            metrics: Some("not an address".into()),
            ..RunOptions::default()
        })
        .unwrap_err();
        assert!(matches!(err, DaemonError::MetricsOption(_)), "{err}");
        assert!(err.to_string().starts_with("--metrics: "), "{err}");
    }
}
