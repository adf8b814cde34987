//! VM ports in a build without the `libvirt` feature: there is no libvirt client to
//! hot-plug a NIC or follow a domain, so every VM request is refused with that reason
//! and everything else of the control plane works as usual.

use std::sync::Arc;

use super::protocol::{ErrorKind, LibvirtXml, RequestError, VmNic};
use super::{ControlError, Shared, State};
use crate::config::{PortConfig, SwitchConfig};
use crate::vm::VmInterface;

/// Why a VM port or request is refused.
pub(super) const NO_LIBVIRT: &str =
    "built without libvirt support (rebuild tapswitch with the `libvirt` feature for VM ports)";

/// Nothing to follow: no libvirt connection.
pub(super) struct DomainEvents;

/// No events thread is started.
pub(super) struct EventsThread;

/// Stands where the libvirt client is in a build with the feature.
pub(super) struct Vms;

impl Vms {
    pub(super) fn new(_switch: &SwitchConfig) -> (Self, DomainEvents) {
        (Self, DomainEvents)
    }
}

/// A configuration with VM ports does not start.
pub(super) fn create_configured(state: &mut State) -> Result<(), ControlError> {
    match state.config.ports.iter().find(|p| p.vm().is_some()) {
        Some(port) => Err(ControlError::VmPort(unsupported(format!(
            "port {}: {NO_LIBVIRT}",
            port.name
        )))),
        None => Ok(()),
    }
}

/// `port add --vm` is refused (its TAP, just made, is dropped and so deleted).
pub(super) fn create_devices(
    _state: &mut State,
    port: &PortConfig,
) -> Result<Option<VmInterface>, RequestError> {
    match port.vm() {
        Some(_) => Err(unsupported(format!("port {}: {NO_LIBVIRT}", port.name))),
        None => Ok(None),
    }
}

/// No VM port exists, so there are no devices to remove.
pub(super) fn remove_devices(_state: &mut State, _port: &PortConfig) {}

/// Never reached: [`create_devices`] refused the port first.
pub(super) fn plug(
    _shared: &Shared,
    _port: &PortConfig,
    _interface: &VmInterface,
) -> Result<VmNic, RequestError> {
    Err(unsupported(NO_LIBVIRT))
}

pub(super) fn unplug(_shared: &Shared, port: &PortConfig) -> Option<VmNic> {
    let domain = port.vm_domain()?;
    Some(VmNic {
        domain: domain.to_owned(),
        action: format!("not unplugged: {NO_LIBVIRT}"),
        change: None,
        libvirt: None,
    })
}

pub(super) fn libvirt_xml(_state: &State, _name: &str) -> Result<LibvirtXml, RequestError> {
    Err(unsupported(NO_LIBVIRT))
}

fn unsupported(message: impl Into<String>) -> RequestError {
    RequestError::new(ErrorKind::Unsupported, message)
}

pub(super) fn spawn(
    _shared: &Arc<Shared>,
    _events: DomainEvents,
) -> Result<EventsThread, ControlError> {
    Ok(EventsThread)
}

pub(super) fn stop(_shared: &Shared, _thread: EventsThread) {}

pub(super) fn remove_unkept_devices(_state: &mut State) {}
