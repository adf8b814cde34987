//! VM ports on the control plane: their devices, their place in libvirt domains, and ports
//! that come and go with their VMs. All libvirt work happens on control threads (a request's
//! connection thread, or `tapswitch-vms` for domain events), never in the dataplane.
//!
//! The model is Nova's plug/unplug: a VM port's devices are created before the domain uses
//! them (`port add --vm` works before the domain exists or runs) and stay while the domain
//! exists, so `virsh destroy` followed by `virsh start` finds them again. The port is removed
//! when
//! - the domain is undefined and not running, or a transient domain stops (it no longer
//!   exists: nothing will use the port again);
//! - the port's NIC is hot-unplugged from the running domain (libvirt's device-removed event
//!   for the port's alias), as Nova unplugs a detached interface's VIF;
//! - `port del`, which also unplugs the NIC from the domain first.
//!
//! When the domain starts without the NIC, it is hot-plugged. Events missed while libvirt was
//! unreachable are replayed from the domains' state after a reconnect: ports of domains that
//! this switch saw exist and that no longer do are removed (a port made before its domain
//! keeps waiting for it), and every other VM port is plugged again where it is missing.

use std::collections::HashSet;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::protocol::{Event, VmDomainEventKind};
use super::protocol::{LibvirtStatus, LibvirtXml, VmNic};
use super::{ControlError, RequestError, Shared, State, lock, publish, remove_port};
use crate::config::{PortConfig, SwitchConfig};
use crate::dataplane::RemovalCause;
use crate::port::vm as vmport;
use crate::vm::libvirt::{
    DeviceChange, DomainEvent, DomainEventKind, DomainState, Libvirt, LibvirtError,
};
use crate::vm::{VmInterface, port_alias};

/// How often the events thread checks the libvirt connection while VM ports exist.
const RECONNECT_INTERVAL: Duration = Duration::from_secs(5);

/// libvirt's domain events, for [`spawn`].
pub(super) type DomainEvents = Receiver<DomainEvent>;

/// The thread [`spawn`] starts.
pub(super) type EventsThread = JoinHandle<()>;

/// libvirt, shared by the control threads.
pub(super) struct Vms {
    libvirt: Libvirt,
    /// Domains this switch has seen exist. Only their ports are removed when a reconnect
    /// finds the domain gone: a port made before its domain waits for it.
    seen: Mutex<HashSet<String>>,
}

impl Vms {
    fn saw(&self, domain: &str, state: &DomainState) {
        if *state != DomainState::Absent {
            lock(&self.seen).insert(domain.to_owned());
        }
    }
}

impl Vms {
    /// A libvirt client for `switch.libvirt_uri` (not connected yet) and its event stream.
    pub(super) fn new(switch: &SwitchConfig) -> (Self, Receiver<DomainEvent>) {
        let (sender, events) = mpsc::channel();
        let libvirt = Libvirt::new(switch.libvirt_uri(), sender);
        (
            Self {
                libvirt,
                seen: Mutex::new(HashSet::new()),
            },
            events,
        )
    }
}

/// The VM ports of the configuration, copied (their handling changes the configuration).
fn vm_ports(state: &State) -> Vec<PortConfig> {
    state
        .config
        .ports
        .iter()
        .filter(|p| p.vm().is_some())
        .cloned()
        .collect()
}

/// Creates the devices of the configured VM ports (`run` with `vm = …` in the config), whose
/// TAPs exist by now.
pub(super) fn create_configured(state: &mut State) -> Result<(), ControlError> {
    let ports = vm_ports(state);
    for port in &ports {
        create_devices(state, port).map_err(ControlError::VmPort)?;
    }
    Ok(())
}

/// Creates the device QEMU opens for `port`, if it is a VM port.
pub(super) fn create_devices(
    state: &mut State,
    port: &PortConfig,
) -> Result<Option<VmInterface>, RequestError> {
    if port.vm().is_none() {
        return Ok(None);
    }
    let netlink = state.links.own().map_err(RequestError::from)?;
    vmport::create_devices(port, netlink)
        .map(Some)
        .map_err(RequestError::from)
}

/// Removes the device QEMU opens for `port`, if it is a VM port; failures are logged, as the
/// port is going away regardless.
pub(super) fn remove_devices(state: &mut State, port: &PortConfig) {
    if port.vm().is_none() {
        return;
    }
    let removed = state
        .links
        .own()
        .map_err(RequestError::from)
        .and_then(|netlink| vmport::remove_devices(port, netlink).map_err(RequestError::from));
    if let Err(error) = removed {
        warn!(port = %port.name, %error, "removing the VM device failed");
    }
}

/// Puts the NIC of the new VM port `port` into its domain where it is missing. `Err` when the
/// domain refused it; an unreachable libvirt is reported in the `Ok` value.
pub(super) fn plug(
    shared: &Shared,
    port: &PortConfig,
    interface: &VmInterface,
) -> Result<VmNic, RequestError> {
    let domain = port.vm_domain().unwrap_or_default();
    match shared.vms.libvirt.plug(domain, interface) {
        Ok(change) => {
            shared.vms.saw(domain, &change.state);
            let action = if change.live {
                "hot-plugged into the running domain"
            } else if change.config {
                "added to the domain's definition"
            } else if change.state == DomainState::Absent {
                "waiting for the domain (define it with the element of `tapswitch libvirt-xml`)"
            } else {
                "already in the domain"
            };
            if change.live || change.config {
                publish(shared, plugged_event(port, &change));
            }
            Ok(status(domain, &change, action))
        }
        Err(LibvirtError::Unreachable { uri, message }) => Ok(VmNic {
            domain: domain.to_owned(),
            action: format!("devices created; could not reach libvirt at {uri} ({message})"),
            change: None,
            libvirt: Some(LibvirtStatus::Unreachable),
        }),
        Err(error) => Err(error.into()),
    }
}

/// Takes the NIC of VM port `port` out of its domain (for `port del`); the outcome, or why
/// not, for the reply.
pub(super) fn unplug(shared: &Shared, port: &PortConfig) -> Option<VmNic> {
    let domain = port.vm_domain()?;
    let interface = vmport::interface_of(port).ok()?;
    Some(match shared.vms.libvirt.unplug(domain, &interface) {
        Ok(change) => {
            let action = if change.live || change.config {
                "unplugged from the domain"
            } else {
                "not in the domain"
            };
            status(domain, &change, action)
        }
        Err(error) => {
            warn!(port = %port.name, %error, "unplugging the VM interface failed");
            VmNic {
                domain: domain.to_owned(),
                action: format!("not unplugged: {error}"),
                change: None,
                libvirt: None,
            }
        }
    })
}

fn status(domain: &str, change: &DeviceChange, action: &str) -> VmNic {
    VmNic {
        domain: domain.to_owned(),
        action: action.to_owned(),
        change: Some(*change),
        libvirt: None,
    }
}

fn plugged_event(port: &PortConfig, change: &DeviceChange) -> Event {
    Event::VmInterfacePlugged {
        port: port.name.clone(),
        domain: port.vm_domain().map(str::to_owned),
        live: change.live,
        config: change.config,
    }
}

/// `libvirt-xml PORT`: the `<interface>` element for the port's domain.
pub(super) fn libvirt_xml(state: &State, name: &str) -> Result<LibvirtXml, RequestError> {
    let port = state
        .config
        .ports
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| RequestError::not_found(format!("no port named {name:?}")))?;
    let interface = vmport::interface_of(port).map_err(RequestError::from)?;
    let xml = interface.to_xml().map_err(RequestError::from)?;
    Ok(LibvirtXml {
        port: port.name.clone(),
        domain: port.vm_domain().map(str::to_owned),
        device: interface.attachment.target_device().to_owned(),
        mac: interface.mac,
        xml,
    })
}

/// Starts `tapswitch-vms`: domain events, and the libvirt connection while VM ports exist.
pub(super) fn spawn(
    shared: &Arc<Shared>,
    events: Receiver<DomainEvent>,
) -> Result<JoinHandle<()>, ControlError> {
    let shared = Arc::clone(shared);
    std::thread::Builder::new()
        .name("tapswitch-vms".into())
        .spawn(move || serve_events(&shared, &events))
        .map_err(ControlError::Thread)
}

fn serve_events(shared: &Shared, events: &Receiver<DomainEvent>) {
    let mut reconciled_generation = 0;
    let mut next_check = Instant::now();
    while !shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
        match events.recv_timeout(Duration::from_millis(500)) {
            Ok(event) => handle_event(shared, &event),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if Instant::now() < next_check {
            continue;
        }
        next_check = Instant::now() + RECONNECT_INTERVAL;
        let has_vm_ports = lock(&shared.state)
            .config
            .ports
            .iter()
            .any(|p| p.vm().is_some());
        if !has_vm_ports {
            continue;
        }
        if let Err(error) = shared.vms.libvirt.connect() {
            // Logged once per outage would be nicer; every 5 s is still quiet enough.
            warn!(%error, "VM ports: libvirt unreachable");
            continue;
        }
        let generation = shared.vms.libvirt.generation();
        if generation != reconciled_generation {
            reconciled_generation = generation;
            reconcile(shared);
        }
    }
}

/// After (re)connecting, events missed while libvirt was unreachable are replayed from
/// the domains' state as it is now: a port whose domain no longer exists is removed (as
/// its undefine or stop event would have), and every other VM port's NIC goes into its
/// domain where it is missing.
fn reconcile(shared: &Shared) {
    let mut guard = lock(&shared.state);
    let state = &mut *guard;
    let ports = vm_ports(state);
    for port in &ports {
        let domain = port.vm_domain().unwrap_or_default();
        match shared.vms.libvirt.domain_state(domain) {
            Ok(DomainState::Absent) => {
                // Gone while we were away; a domain never seen is still to come.
                if lock(&shared.vms.seen).remove(domain) {
                    remove_vm_port(shared, state, port, domain, "domain_gone");
                }
            }
            Ok(known) => {
                shared.vms.saw(domain, &known);
                ensure_plugged(shared, port);
            }
            Err(error) => {
                warn!(port = %port.name, domain, %error, "cannot tell whether the domain still exists; keeping the port");
            }
        }
    }
}

/// Removes VM port `port` of `domain` because of `reason`, and says so.
fn remove_vm_port(
    shared: &Shared,
    state: &mut State,
    port: &PortConfig,
    domain: &str,
    reason: &str,
) {
    match remove_port(shared, state, &port.name, false, RemovalCause::Requested) {
        Ok(_) => {
            info!(port = %port.name, domain, reason, "VM port removed");
            publish(
                shared,
                Event::VmPortRemoved {
                    port: port.name.clone(),
                    domain: domain.to_owned(),
                    reason: reason.to_owned(),
                },
            );
        }
        Err(error) => warn!(port = %port.name, %error, "removing the VM port failed"),
    }
}

fn ensure_plugged(shared: &Shared, port: &PortConfig) {
    let Ok(interface) = vmport::interface_of(port) else {
        return;
    };
    let domain = port.vm_domain().unwrap_or_default();
    let plugged = shared.vms.libvirt.plug(domain, &interface);
    if let Ok(change) = &plugged {
        shared.vms.saw(domain, &change.state);
    }
    match plugged {
        Ok(change) if change.live || change.config => {
            info!(port = %port.name, domain, live = change.live, config = change.config,
                "VM interface plugged");
            publish(shared, plugged_event(port, &change));
        }
        Ok(_) => {}
        Err(error) => warn!(port = %port.name, domain, %error, "plugging the VM interface failed"),
    }
}

fn handle_event(shared: &Shared, event: &DomainEvent) {
    let mut guard = lock(&shared.state);
    let state = &mut *guard;
    let bound: Vec<PortConfig> = state
        .config
        .ports
        .iter()
        .filter(|p| p.vm_domain() == Some(event.domain.as_str()))
        .cloned()
        .collect();
    if bound.is_empty() {
        return;
    }
    let (kind, alias) = match &event.kind {
        DomainEventKind::Started => (VmDomainEventKind::Started, None),
        DomainEventKind::Stopped => (VmDomainEventKind::Stopped, None),
        DomainEventKind::Undefined => (VmDomainEventKind::Undefined, None),
        DomainEventKind::DeviceRemoved { alias } => {
            (VmDomainEventKind::DeviceRemoved, Some(alias.clone()))
        }
    };
    publish(
        shared,
        Event::VmDomainEvent {
            domain: event.domain.clone(),
            kind,
            alias,
        },
    );
    let libvirt = &shared.vms.libvirt;
    let (remove, reason): (Vec<&PortConfig>, &str) = match &event.kind {
        DomainEventKind::Started => {
            for port in &bound {
                ensure_plugged(shared, port);
            }
            return;
        }
        // A persistent domain that stops keeps its ports for its next start; one that no
        // longer exists (transient, or undefined once stopped) has no use for them.
        DomainEventKind::Stopped | DomainEventKind::Undefined => {
            match libvirt.domain_state(&event.domain) {
                Ok(DomainState::Absent) => (bound.iter().collect(), "domain_gone"),
                Ok(_) => return,
                Err(error) => {
                    warn!(domain = %event.domain, %error, "cannot tell whether the domain still exists; keeping its ports");
                    return;
                }
            }
        }
        DomainEventKind::DeviceRemoved { alias } => {
            let ports: Vec<&PortConfig> = bound
                .iter()
                .filter(|p| port_alias(&p.name) == *alias)
                // A NIC plugged again since (same alias) is not the one removed.
                .filter(|p| {
                    let target = p.vm_device_name();
                    !matches!(libvirt.has_live_interface(&event.domain, &target), Ok(true))
                })
                .collect();
            (ports, "device_removed")
        }
    };
    for port in remove {
        remove_vm_port(shared, state, port, &event.domain, reason);
    }
}

/// At switch exit: the devices of non-persistent VM ports go with their port TAPs; a
/// persistent port keeps them for the next run (a running guest keeps its NIC device).
pub(super) fn stop(shared: &Shared, thread: JoinHandle<()>) {
    let _ = thread.join();
    remove_unkept_devices(&mut lock(&shared.state));
}

/// Removes the devices of the non-persistent VM ports (what is already gone is fine).
pub(super) fn remove_unkept_devices(state: &mut State) {
    let ports: Vec<PortConfig> = state
        .config
        .ports
        .iter()
        .filter(|p| p.vm().is_some() && !p.persistent())
        .cloned()
        .collect();
    for port in &ports {
        remove_devices(state, port);
    }
}
