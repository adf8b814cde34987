//! libvirt for VM ports, on control-plane threads only: hot-plug and unplug a port's
//! `<interface>` into a domain, and domain lifecycle events.
//!
//! - Plugging uses `virDomainAttachDeviceFlags` (not `virDomainAttachDevice`, whose wrapper
//!   drops errors): `LIVE` when the domain runs and its live definition lacks the NIC,
//!   `CONFIG` when the domain is persistent and its stored definition lacks it. A domain that
//!   already has the NIC (it was defined with `tapswitch libvirt-xml`'s element) is left alone;
//!   a domain that does not exist yet is waited for.
//! - Events: libvirt's default event loop runs on the `tapswitch-libvirt` thread (registered
//!   before the first connection, as libvirt requires); lifecycle and device-removed callbacks,
//!   registered through the raw `virConnectDomainEventRegisterAny`, only turn each event into a
//!   [`DomainEvent`] on a channel. Whoever reads the channel decides what to do.
//! - libvirt is optional: the connection is opened on first use and again after it breaks
//!   (keepalive), and every call says when libvirt cannot be reached.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use thiserror::Error;
use tracing::{info, warn};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::sys;

use crate::vm::VmInterface;

/// Errors talking to libvirt; each names the URI or the domain.
#[derive(Debug, Error)]
pub enum LibvirtError {
    #[error("cannot reach libvirt at {uri}: {message}")]
    Unreachable { uri: String, message: String },
    #[error("starting the libvirt event loop failed: {0}")]
    EventLoop(String),
    #[error("libvirt at {uri}: registering for domain events failed: {message}")]
    Events { uri: String, message: String },
    #[error("domain {domain}: {operation} failed: {message}")]
    Domain {
        domain: String,
        operation: &'static str,
        message: String,
    },
    #[error("VM interface: {0}")]
    Interface(#[from] crate::vm::VmError),
}

pub use crate::control::protocol::{DeviceChange, DomainState};

/// A domain event, reduced to what VM ports care about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainEventKind {
    Started,
    Stopped,
    Undefined,
    /// A device left the running domain (hot-unplug finished); libvirt names it by alias.
    DeviceRemoved {
        alias: String,
    },
}

/// One event of one domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainEvent {
    pub domain: String,
    pub kind: DomainEventKind,
}

struct Connection {
    connect: Connect,
    callbacks: Vec<c_int>,
}

/// A lazily opened, self-healing libvirt connection that reports domain events to a channel.
pub struct Libvirt {
    uri: String,
    events: Sender<DomainEvent>,
    connection: Mutex<Option<Connection>>,
    /// Connections opened so far: a change means events may have been missed in between.
    generation: AtomicU64,
}

impl Libvirt {
    /// Connects nowhere yet: the first call that needs libvirt does.
    pub fn new(uri: &str, events: Sender<DomainEvent>) -> Self {
        Self {
            uri: uri.to_owned(),
            events,
            connection: Mutex::new(None),
            generation: AtomicU64::new(0),
        }
    }

    /// How many connections have been opened; changes after every (re)connect.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Whether the running domain `name` has an interface on `target` now.
    pub fn has_live_interface(&self, name: &str, target: &str) -> Result<bool, LibvirtError> {
        let (connect, _) = self.connect()?;
        match lookup(&connect, name)? {
            (Some(domain), DomainState::Running { .. }) => has_target(&domain, name, target, false),
            _ => Ok(false),
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Whether a connection is open and alive (no connection attempt is made).
    pub fn is_connected(&self) -> bool {
        let guard = self
            .connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard
            .as_ref()
            .is_some_and(|c| c.connect.is_alive().unwrap_or(false))
    }

    /// A live connection, opened (with event callbacks) when there is none or it broke.
    /// The flag is true when this call opened it, so events may have been missed before.
    pub fn connect(&self) -> Result<(Connect, bool), LibvirtError> {
        let mut guard = self
            .connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(connection) = guard.as_ref()
            && connection.connect.is_alive().unwrap_or(false)
        {
            return Ok((connection.connect.clone(), false));
        }
        if let Some(old) = guard.take() {
            warn!(uri = %self.uri, "libvirt connection lost; reconnecting");
            for id in old.callbacks {
                // SAFETY: `id` was returned by virConnectDomainEventRegisterAny on this
                // connection, which is still referenced by `old.connect`.
                unsafe { sys::virConnectDomainEventDeregisterAny(old.connect.as_ptr(), id) };
            }
        }
        ensure_event_loop()?;
        let connect = Connect::open(Some(&self.uri)).map_err(|e| LibvirtError::Unreachable {
            uri: self.uri.clone(),
            message: e.message().to_owned(),
        })?;
        // A dead daemon is noticed within ~15 s even when nothing is asked of it.
        let _ = connect.set_keep_alive(5, 3);
        let callbacks =
            register_callbacks(&connect, &self.events).map_err(|message| LibvirtError::Events {
                uri: self.uri.clone(),
                message,
            })?;
        info!(uri = %self.uri, "connected to libvirt");
        self.generation.fetch_add(1, Ordering::SeqCst);
        *guard = Some(Connection {
            connect: connect.clone(),
            callbacks,
        });
        Ok((connect, true))
    }

    /// Whether domain `name` exists and runs.
    pub fn domain_state(&self, name: &str) -> Result<DomainState, LibvirtError> {
        let (connect, _) = self.connect()?;
        Ok(lookup(&connect, name)?.1)
    }

    /// Adds `interface` to domain `name` where it is missing: the running domain and the
    /// stored definition. A domain that does not exist yet is left to be defined with it.
    pub fn plug(&self, name: &str, interface: &VmInterface) -> Result<DeviceChange, LibvirtError> {
        let xml = interface.to_xml()?;
        let (connect, _) = self.connect()?;
        let (domain, state) = lookup(&connect, name)?;
        let Some(domain) = domain else {
            return Ok(unchanged(state));
        };
        let target = interface.attachment.target_device();
        let (live, config) = match state {
            DomainState::Absent => (false, false),
            DomainState::Defined => (false, !has_target(&domain, name, target, true)?),
            DomainState::Running { persistent } => (
                !has_target(&domain, name, target, false)?,
                persistent && !has_target(&domain, name, target, true)?,
            ),
        };
        let flags = impact(live, config);
        if flags != 0 {
            domain
                .attach_device_flags(&xml, flags)
                .map_err(|e| domain_error(name, "attaching the interface", &e))?;
            info!(
                domain = name,
                device = target,
                live,
                config,
                "interface plugged"
            );
        }
        Ok(DeviceChange {
            state,
            live,
            config,
        })
    }

    /// Removes `interface` from domain `name` where it is present. Unplugging from a running
    /// guest is asynchronous: libvirt asks the guest and reports the removal as an event.
    pub fn unplug(
        &self,
        name: &str,
        interface: &VmInterface,
    ) -> Result<DeviceChange, LibvirtError> {
        let xml = interface.to_xml()?;
        let (connect, _) = self.connect()?;
        let (domain, state) = lookup(&connect, name)?;
        let Some(domain) = domain else {
            return Ok(unchanged(state));
        };
        let target = interface.attachment.target_device();
        let (live, config) = match state {
            DomainState::Absent => (false, false),
            DomainState::Defined => (false, has_target(&domain, name, target, true)?),
            DomainState::Running { persistent } => (
                has_target(&domain, name, target, false)?,
                persistent && has_target(&domain, name, target, true)?,
            ),
        };
        let flags = impact(live, config);
        if flags != 0 {
            domain
                .detach_device_flags(&xml, flags)
                .map_err(|e| domain_error(name, "detaching the interface", &e))?;
            info!(
                domain = name,
                device = target,
                live,
                config,
                "interface unplugged"
            );
        }
        Ok(DeviceChange {
            state,
            live,
            config,
        })
    }
}

impl Drop for Libvirt {
    fn drop(&mut self) {
        let connection = self
            .connection
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(old) = connection.take() {
            for id in old.callbacks {
                // SAFETY: as in `connect`: an id of this still-referenced connection.
                unsafe { sys::virConnectDomainEventDeregisterAny(old.connect.as_ptr(), id) };
            }
        }
    }
}

fn unchanged(state: DomainState) -> DeviceChange {
    DeviceChange {
        state,
        live: false,
        config: false,
    }
}

fn impact(live: bool, config: bool) -> u32 {
    let mut flags = 0;
    if live {
        flags |= sys::VIR_DOMAIN_AFFECT_LIVE;
    }
    if config {
        flags |= sys::VIR_DOMAIN_AFFECT_CONFIG;
    }
    flags
}

fn domain_error(domain: &str, operation: &'static str, error: &virt::error::Error) -> LibvirtError {
    LibvirtError::Domain {
        domain: domain.to_owned(),
        operation,
        message: error.message().to_owned(),
    }
}

/// The domain called `name` and its state; `None` when libvirt knows no such domain.
fn lookup(connect: &Connect, name: &str) -> Result<(Option<Domain>, DomainState), LibvirtError> {
    let domain = match connect.lookup_domain_by_name(name) {
        Ok(domain) => domain,
        Err(e) if e.code().to_raw() == sys::VIR_ERR_NO_DOMAIN => {
            return Ok((None, DomainState::Absent));
        }
        Err(e) => return Err(domain_error(name, "looking the domain up", &e)),
    };
    let active = domain
        .is_active()
        .map_err(|e| domain_error(name, "reading whether it runs", &e))?;
    let persistent = domain
        .is_persistent()
        .map_err(|e| domain_error(name, "reading whether it is persistent", &e))?;
    let state = if active {
        DomainState::Running { persistent }
    } else {
        DomainState::Defined
    };
    Ok((Some(domain), state))
}

/// Whether the live (or, with `inactive`, the stored) definition has an interface on `target`.
fn has_target(
    domain: &Domain,
    name: &str,
    target: &str,
    inactive: bool,
) -> Result<bool, LibvirtError> {
    let flags = if inactive {
        sys::VIR_DOMAIN_XML_INACTIVE
    } else {
        0
    };
    let xml = domain
        .xml_desc(flags)
        .map_err(|e| domain_error(name, "reading its XML", &e))?;
    // libvirt writes every attribute in single quotes; target names are validated interface
    // names, so this cannot match a longer name or another element's attribute.
    Ok(xml.contains(&format!("<target dev='{target}'")))
}

/// Registers libvirt's default event loop and runs it on its own thread, once per process.
fn ensure_event_loop() -> Result<(), LibvirtError> {
    static EVENT_LOOP: OnceLock<Result<(), String>> = OnceLock::new();
    EVENT_LOOP
        .get_or_init(|| {
            // libvirt prints every error to stderr by default; ours are returned and logged.
            virt::error::clear_error_callback();
            virt::event::event_register_default_impl().map_err(|e| e.message().to_owned())?;
            std::thread::Builder::new()
                .name("tapswitch-libvirt".into())
                .spawn(|| {
                    loop {
                        if let Err(e) = virt::event::event_run_default_impl() {
                            warn!(error = %e, "libvirt event loop iteration failed");
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }
                })
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(LibvirtError::EventLoop)
}

/// `virConnectDomainEventCallback`: the lifecycle event's callback type.
type LifecycleCallback =
    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, c_int, c_int, *mut c_void) -> c_int;
/// `virConnectDomainEventDeviceRemovedCallback`.
type DeviceRemovedCallback =
    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *const c_char, *mut c_void);
/// `virConnectDomainEventGenericCallback`, the type `RegisterAny` takes for every event.
type GenericCallback = unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void);

fn register_callbacks(
    connect: &Connect,
    events: &Sender<DomainEvent>,
) -> Result<Vec<c_int>, String> {
    // SAFETY: libvirt calls the callback of event id N with the signature documented for N
    // (VIR_DOMAIN_EVENT_CALLBACK is this cast in C); these two have those signatures.
    let (lifecycle, device_removed) = unsafe {
        (
            std::mem::transmute::<LifecycleCallback, GenericCallback>(on_lifecycle),
            std::mem::transmute::<DeviceRemovedCallback, GenericCallback>(on_device_removed),
        )
    };
    let mut ids = Vec::new();
    for (event_id, callback) in [
        (sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle),
        (sys::VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, device_removed),
    ] {
        let opaque = Box::into_raw(Box::new(events.clone())).cast::<c_void>();
        // SAFETY: the connection is open; a null domain means every domain; `opaque` is a
        // leaked Box<Sender<DomainEvent>> that libvirt hands to the callback and finally to
        // `free_sender`, which frees it exactly once.
        let id = unsafe {
            sys::virConnectDomainEventRegisterAny(
                connect.as_ptr(),
                std::ptr::null_mut(),
                event_id as c_int,
                Some(callback),
                opaque,
                Some(free_sender),
            )
        };
        if id < 0 {
            // SAFETY: libvirt did not take `opaque`: it is still ours to free.
            unsafe { free_sender(opaque) };
            for id in ids {
                // SAFETY: ids registered above on this open connection.
                unsafe { sys::virConnectDomainEventDeregisterAny(connect.as_ptr(), id) };
            }
            return Err(virt::error::Error::last_error().message().to_owned());
        }
        ids.push(id);
    }
    Ok(ids)
}

/// The name of the domain an event is about.
///
/// # Safety
/// `domain` must be the valid domain pointer libvirt passed to a callback.
unsafe fn domain_name(domain: sys::virDomainPtr) -> Option<String> {
    // SAFETY: `domain` is valid for the callback (caller's promise); the name it returns is
    // owned by the domain object and copied before the callback returns.
    let name = unsafe { sys::virDomainGetName(domain) };
    if name.is_null() {
        return None;
    }
    // SAFETY: non-null, NUL-terminated, alive as long as `domain`.
    Some(
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// # Safety
/// Called by libvirt with `opaque` from `register_callbacks` (a `Sender<DomainEvent>`).
unsafe extern "C" fn on_lifecycle(
    _connect: sys::virConnectPtr,
    domain: sys::virDomainPtr,
    event: c_int,
    _detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    let kind = match event as u32 {
        sys::VIR_DOMAIN_EVENT_STARTED => DomainEventKind::Started,
        sys::VIR_DOMAIN_EVENT_STOPPED => DomainEventKind::Stopped,
        sys::VIR_DOMAIN_EVENT_UNDEFINED => DomainEventKind::Undefined,
        _ => return 0,
    };
    // SAFETY: libvirt passes the domain the event is about, valid during the callback.
    if let Some(name) = unsafe { domain_name(domain) } {
        // SAFETY: `opaque` is the Box<Sender> registered with this callback, alive until
        // `free_sender`, which libvirt calls only after the last callback.
        let events = unsafe { &*opaque.cast::<Sender<DomainEvent>>() };
        // The reader is gone only when the switch is stopping.
        let _ = events.send(DomainEvent { domain: name, kind });
    }
    0
}

/// # Safety
/// As [`on_lifecycle`]; `alias` is the removed device's alias.
unsafe extern "C" fn on_device_removed(
    _connect: sys::virConnectPtr,
    domain: sys::virDomainPtr,
    alias: *const c_char,
    opaque: *mut c_void,
) {
    if alias.is_null() {
        return;
    }
    // SAFETY: non-null, NUL-terminated, valid during the callback.
    let alias = unsafe { CStr::from_ptr(alias) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: libvirt passes the domain the event is about, valid during the callback.
    if let Some(name) = unsafe { domain_name(domain) } {
        // SAFETY: as in `on_lifecycle`.
        let events = unsafe { &*opaque.cast::<Sender<DomainEvent>>() };
        let _ = events.send(DomainEvent {
            domain: name,
            kind: DomainEventKind::DeviceRemoved { alias },
        });
    }
}

/// # Safety
/// `opaque` must come from `Box::into_raw(Box<Sender<DomainEvent>>)` and not be used again.
unsafe extern "C" fn free_sender(opaque: *mut c_void) {
    // SAFETY: the caller's promise: a leaked Box<Sender<DomainEvent>>, freed once here.
    drop(unsafe { Box::from_raw(opaque.cast::<Sender<DomainEvent>>()) });
}

#[cfg(test)]
mod tests {
    //! Against libvirt's in-process test driver (`test:///default`): a real libvirt that
    //! touches no devices. Its default domain "test" runs and is persistent.
    use std::sync::mpsc;

    use super::*;
    use crate::vm::{VmAttachment, port_alias};

    fn interface(device: &str) -> VmInterface {
        VmInterface {
            attachment: VmAttachment::Macvtap {
                macvtap: device.to_owned(),
            },
            mac: "52:54:00:aa:bb:01".parse().unwrap(),
            queues: 1,
            alias: Some(port_alias("p1")),
        }
    }

    #[test]
    fn plug_and_unplug_follow_the_domain_and_events_arrive() {
        let (sender, events) = mpsc::channel();
        let libvirt = Libvirt::new("test:///default", sender);
        assert!(!libvirt.is_connected());
        let (connect, fresh) = libvirt.connect().unwrap();
        assert!(fresh && libvirt.is_connected());
        assert_eq!(libvirt.generation(), 1);
        assert!(!libvirt.connect().unwrap().1, "reused");

        assert_eq!(
            libvirt.plug("no-such-domain", &interface("mvt-x")).unwrap(),
            unchanged(DomainState::Absent)
        );
        let running = DomainState::Running { persistent: true };
        assert_eq!(libvirt.domain_state("test").unwrap(), running);
        let nic = interface("mvt-t1");
        // The test driver cannot hot-plug: the refusal comes back (virDomainAttachDevice's
        // wrapper would have swallowed it), naming the domain and the step.
        let err = libvirt.plug("test", &nic).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("domain test: attaching the interface failed: "),
            "{err}"
        );
        let domain = connect.lookup_domain_by_name("test").unwrap();
        assert!(!has_target(&domain, "test", "mvt-t1", false).unwrap());
        // Nothing to remove: an unplug changes nothing and asks nothing of the driver.
        assert_eq!(libvirt.unplug("test", &nic).unwrap(), unchanged(running));

        // Destroying the domain is reported as a lifecycle event through the event loop.
        domain.destroy().unwrap();
        let event = events
            .recv_timeout(Duration::from_secs(10))
            .expect("a lifecycle event");
        assert_eq!(
            event,
            DomainEvent {
                domain: "test".into(),
                kind: DomainEventKind::Stopped
            }
        );
        assert_eq!(libvirt.domain_state("test").unwrap(), DomainState::Defined);
        domain.create().unwrap();
        let event = events.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(event.kind, DomainEventKind::Started);
        assert_eq!(libvirt.domain_state("test").unwrap(), running);
    }

    #[test]
    fn an_unreachable_libvirt_says_where_it_looked() {
        let (sender, _events) = mpsc::channel();
        let uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock";
        let libvirt = Libvirt::new(uri, sender);
        let err = libvirt.domain_state("x").unwrap_err();
        assert!(matches!(err, LibvirtError::Unreachable { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot reach libvirt at {uri}: ")),
            "{err}"
        );
        assert!(!libvirt.is_connected());
    }
}
