//! Follows the ports' netdevs (`tapswitch-links`): link notifications from every namespace
//! a port lives in ([`LinkMonitor`]) become link state in the dataplane (`port_link_down`,
//! `port_link_up`), a netdev moved to another namespace is found there (`TUNGETDEVNETNS` on
//! its TAP fd) and recorded (`port_moved`, `port list`, `config show`, later `port set`),
//! and a port whose namespace is destroyed is removed with that cause.
//!
//! Nothing here holds a namespace: the monitor and the netlink socket live in the switch's
//! own namespace and reach the others by namespace id; a namespace fd from
//! `TUNGETDEVNETNS` is closed as soon as the namespace has an id and a name.

use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::{ControlError, Shared, State, lock, remove_port};
use crate::config::PortKind;
use crate::dataplane::{Command, DataplaneError, RemovalCause};
use crate::netlink::{LinkMonitor, LinkNotice, wait_readable};
use crate::sys::netns::{self, Location, NetnsFd};
use crate::sys::tap;

/// How often the thread looks whether the switch is stopping while no notice comes.
const STOP_CHECK: Duration = Duration::from_secs(1);

/// Starts `tapswitch-links` if there is a link monitor.
pub(super) fn spawn(shared: &Arc<Shared>) -> Result<(), ControlError> {
    let Some(fd) = lock(&shared.link_monitor)
        .as_ref()
        .map(LinkMonitor::as_raw_fd)
    else {
        return Ok(());
    };
    let shared = Arc::clone(shared);
    std::thread::Builder::new()
        .name("tapswitch-links".into())
        .spawn(move || watch(&shared, fd))
        .map_err(ControlError::Thread)?;
    Ok(())
}

/// Waits on the monitor's socket `fd` without holding the monitor, then drains it.
fn watch(shared: &Shared, fd: RawFd) {
    if resync(shared).is_err() {
        return;
    }
    while !shared.stopping.load(Ordering::SeqCst) {
        if let Err(DataplaneError::Stopped) = release_deleted(shared) {
            return;
        }
        match wait_readable(fd, STOP_CHECK) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                warn!(%error, "waiting for link notifications failed; ports' link state is no longer followed");
                return;
            }
        }
        if let Err(DataplaneError::Stopped) = drain(shared) {
            return;
        }
        if lock(&shared.link_monitor).is_none() {
            return;
        }
    }
}

/// Handles every notice pending on the monitor. A monitor that fails is dropped (and
/// with it the following of link state), with a warning.
fn drain(shared: &Shared) -> Result<(), DataplaneError> {
    let mut guard = lock(&shared.link_monitor);
    let Some(monitor) = guard.as_mut() else {
        return Ok(());
    };
    loop {
        match monitor.receive() {
            Ok(Some(notices)) => {
                for notice in notices {
                    handle(shared, notice)?;
                }
            }
            Ok(None) => return Ok(()),
            Err(error) => {
                warn!(%error, "link notifications failed; ports' link state is no longer followed");
                *guard = None;
                return Ok(());
            }
        }
    }
}

/// Why port `name`'s device failed: `NamespaceDeleted` when its namespace is being
/// destroyed, else `DeviceError`. The kernel announces a dying namespace (RTM_DELNSID)
/// before it deletes the links in it, so by the time the dataplane has seen the TAP fail,
/// that notice is pending or handled: drain it first.
pub(super) fn cause_of_failure(shared: &Shared, name: &str) -> RemovalCause {
    // A stopped dataplane cannot be told anything more; the cause is still found.
    let _ = drain(shared);
    let mut state = lock(&shared.state);
    match state.destroyed.iter().position(|port| port == name) {
        Some(index) => {
            state.destroyed.remove(index);
            RemovalCause::NamespaceDeleted
        }
        None => RemovalCause::DeviceError,
    }
}

fn handle(shared: &Shared, notice: LinkNotice) -> Result<(), DataplaneError> {
    match notice {
        LinkNotice::Changed { nsid, name, up, .. } => {
            let state = lock(&shared.state);
            if let Some(index) = port_at(&state, nsid, &name) {
                let name = state.config.ports[index].name.clone();
                shared.dataplane.send(Command::SetLinkState { name, up })?;
            }
        }
        LinkNotice::Left { nsid, name, .. } => {
            let mut state = lock(&shared.state);
            if let Some(index) = port_at(&state, nsid, &name) {
                if state.config.ports[index].kind() == PortKind::Netdev {
                    // Its socket is bound to a device that left (deleted, or moved away,
                    // which unbinds it): the port cannot carry frames any more.
                    let port = state.config.ports[index].name.clone();
                    warn!(port = %port, device = %name, "the netdev port's device is gone; port removed");
                    if let Err(error) =
                        remove_port(shared, &mut state, &port, false, RemovalCause::DeviceError)
                    {
                        debug!(port = %port, %error, "port already gone");
                    }
                } else {
                    follow(shared, &mut state, index)?;
                }
            }
        }
        LinkNotice::NamespaceDestroyed { nsid } => {
            let mut state = lock(&shared.state);
            let gone = state.links.forget_id(nsid);
            let ports: Vec<String> = state
                .config
                .ports
                .iter()
                .filter(|p| p.netns.as_ref().is_some_and(|ns| gone.contains(ns)))
                .map(|p| p.name.clone())
                .collect();
            for name in ports {
                let netns = state
                    .config
                    .ports
                    .iter()
                    .find(|p| p.name == name)
                    .and_then(|p| p.netns.clone())
                    .unwrap_or_default();
                // The kernel deletes the netdev with the namespace; the port cannot stay.
                match remove_port(
                    shared,
                    &mut state,
                    &name,
                    false,
                    RemovalCause::NamespaceDeleted,
                ) {
                    Ok(_) => {
                        warn!(port = %name, %netns, "the port's namespace was deleted; port removed")
                    }
                    Err(error) => {
                        // Its TAP failed first: the dataplane's removal event gets this cause.
                        debug!(port = %name, %error, "port already gone with its namespace");
                        state.destroyed.push(name);
                    }
                }
            }
        }
        LinkNotice::Overrun => {
            warn!("link notifications were lost; reading every port's link state again");
            resync(shared)?;
        }
    }
    Ok(())
}

/// Lets go of what holds namespaces whose name was deleted: our netlink sockets in there,
/// and a port whose TAP was attached from inside (a persistent TAP of an earlier run): its
/// fd holds the namespace, whose destruction would delete the netdev anyway.
fn release_deleted(shared: &Shared) -> Result<(), DataplaneError> {
    let mut state = lock(&shared.state);
    let deleted = state.links.release_deleted();
    if deleted.is_empty() {
        return Ok(());
    }
    let ports = shared.dataplane.request(Command::ExportPorts)?;
    let holding: Vec<(String, String)> = ports
        .iter()
        .filter_map(|port| {
            // SAFETY: the fd stays open while `ports` holds the port, for the whole call.
            let fd = unsafe { BorrowedFd::borrow_raw(port.raw_fd(0)) };
            let inode = NetnsFd::from(tap::fd_netns(fd).ok()?).inode().ok()?;
            let (name, _) = deleted.iter().find(|(_, gone)| *gone == inode)?;
            Some((port.name().to_owned(), name.clone()))
        })
        .collect();
    drop(ports);
    for (name, _) in &deleted {
        info!(netns = %name, "namespace deleted; the switch no longer holds it");
    }
    for (port, netns) in holding {
        warn!(port = %port, %netns, "the port's namespace was deleted and its TAP holds it; port removed");
        if let Err(error) = remove_port(
            shared,
            &mut state,
            &port,
            false,
            RemovalCause::NamespaceDeleted,
        ) {
            debug!(port = %port, %error, "port already gone");
        }
    }
    Ok(())
}

/// The configured port `name` whose namespace has id `nsid` (`None`: ours).
fn port_at(state: &State, nsid: Option<i32>, name: &str) -> Option<usize> {
    state.config.ports.iter().position(|p| {
        p.link_name() == Some(name) && state.links.known_id(p.netns.as_deref()) == Some(nsid)
    })
}

/// Reads every port's link state; a port not found where it was recorded is followed.
fn resync(shared: &Shared) -> Result<(), DataplaneError> {
    let mut state = lock(&shared.state);
    for index in 0..state.config.ports.len() {
        let port = &state.config.ports[index];
        let Some(link) = port.link_name().map(str::to_owned) else {
            continue;
        };
        let (name, netns) = (port.name.clone(), port.netns.clone());
        let found = state.links.info(netns.as_deref(), &link);
        match found {
            Ok(info) => shared
                .dataplane
                .send(Command::SetLinkState { name, up: info.up })?,
            Err(_) => follow(shared, &mut state, index)?,
        }
    }
    Ok(())
}

/// Finds where port `index`'s netdev is now, from its TAP fd, and records it; then its
/// link state there. A deleted netdev is left to the dataplane (its fd reports EBADFD).
fn follow(shared: &Shared, state: &mut State, index: usize) -> Result<(), DataplaneError> {
    let name = state.config.ports[index].name.clone();
    let ports = shared.dataplane.request(Command::ExportPorts)?;
    let Some(port) = ports.iter().find(|p| p.name() == name) else {
        return Ok(());
    };
    // SAFETY: the fd stays open while `ports` holds the port, for the whole call.
    let fd = unsafe { BorrowedFd::borrow_raw(port.raw_fd(0)) };
    let found = tap::device_netns(fd);
    // Only the control plane holds a port it no longer has: let it go now.
    drop(ports);
    let netns = match found {
        Ok(fd) => NetnsFd::from(fd),
        Err(error) => {
            debug!(port = %name, %error, "the port's netdev is gone");
            return Ok(());
        }
    };
    let now = match netns::locate(&netns) {
        Ok(Location::Own) => None,
        Ok(Location::Named(name) | Location::Unnamed(name)) => Some(name),
        Err(error) => {
            warn!(port = %name, %error, "naming the namespace the port's netdev moved to failed");
            return Ok(());
        }
    };
    if let Some(key) = &now
        && let Err(error) = state.links.learn(key, &netns)
    {
        warn!(port = %name, netns = %key, %error, "no namespace id for the port's new namespace; its link state is not followed there");
    }
    // Held no longer than needed: the namespace must be free to go.
    drop(netns);
    if state.config.ports[index].netns != now {
        info!(
            port = %name,
            from = state.config.ports[index].netns.as_deref().unwrap_or("-"),
            to = now.as_deref().unwrap_or("-"),
            "the port's netdev moved to another namespace"
        );
        state.config.ports[index].netns = now.clone();
        shared.dataplane.send(Command::PortMoved {
            name: name.clone(),
            netns: now.clone(),
        })?;
    }
    if let Ok(info) = state.links.info(now.as_deref(), &name) {
        shared
            .dataplane
            .send(Command::SetLinkState { name, up: info.up })?;
    }
    Ok(())
}
