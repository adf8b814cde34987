//! The devices of a VM port (a `[[port]]` with `vm = "DOMAIN"`): what QEMU opens, next to the
//! port TAP whose fd the switch holds.
//!
//! - `vm_mode = "macvtap"`: a passthru macvtap stacked on the port TAP, with the guest's MAC;
//!   libvirt opens its `/dev/tapN`, which is chowned to the port's `owner`/`group` so an
//!   unprivileged QEMU may open it too.
//! - `vm_mode = "glue"`: the VM's own TAP (persistent, vnet header, multi-queue iff the guest
//!   has more than one queue pair, `TUNSETOWNER`/`TUNSETGROUP` to `owner`/`group`), glued to
//!   the port TAP with tc redirects.
//!
//! Both live in the host's network namespace, where libvirt looks the target device up.

use std::path::Path;

use thiserror::Error;
use tracing::info;

use crate::config::{PortConfig, VmMode};
use crate::netlink::{self as link, LinkError, LinkSettings, Netlink};
use crate::sys::tap::{Tap, TapError, TapOptions};
use crate::vm::{VmAttachment, VmInterface, port_alias};

/// Errors making or removing a VM port's devices; each names the port and the device.
#[derive(Debug, Error)]
pub enum VmPortError {
    #[error("port {port} is not bound to a VM (no vm = \"DOMAIN\")")]
    NotAVmPort { port: String },
    #[error("port {port}: VM device {device}: {source}")]
    Link {
        port: String,
        device: String,
        #[source]
        source: Box<LinkError>,
    },
    #[error("port {port}: VM TAP {device}: {source}")]
    Tap {
        port: String,
        device: String,
        #[source]
        source: TapError,
    },
    #[error(
        "port {port}: {device} already exists and is not a macvtap stacked on {port}; \
         remove it or choose another vm_device"
    )]
    DeviceTaken { port: String, device: String },
    #[error("port {port}: giving {path} to {owner}: {source}")]
    Chown {
        port: String,
        path: String,
        /// `uid 64055 gid 64055`, or only the one given.
        owner: String,
        #[source]
        source: std::io::Error,
    },
}

/// The libvirt `<interface>` of a VM port: target device, guest MAC, queues and the alias
/// tapswitch recognises in libvirt's device-removed events.
pub fn interface_of(port: &PortConfig) -> Result<VmInterface, VmPortError> {
    let Some(vm) = port.vm() else {
        return Err(VmPortError::NotAVmPort {
            port: port.name.clone(),
        });
    };
    let device = port.vm_device_name();
    let attachment = match port.vm_mode() {
        VmMode::Macvtap => VmAttachment::Macvtap { macvtap: device },
        VmMode::Glue => VmAttachment::Glue { vm_tap: device },
    };
    Ok(VmInterface {
        attachment,
        mac: port.vm_mac_or_derived(),
        queues: vm.queues.unwrap_or(1),
        alias: Some(port_alias(&port.name)),
    })
}

/// Creates (or takes over, after a restart) the device QEMU opens for `port`, whose TAP must
/// exist, and returns the interface to give libvirt. Nothing is left behind on error.
pub fn create_devices(
    port: &PortConfig,
    netlink: &mut Netlink,
) -> Result<VmInterface, VmPortError> {
    let interface = interface_of(port)?;
    let device = interface.attachment.target_device().to_owned();
    let link_error = |source| VmPortError::Link {
        port: port.name.clone(),
        device: device.clone(),
        source: Box::new(source),
    };
    let port_index = netlink.index_of(&port.name).map_err(link_error)?;
    match &interface.attachment {
        VmAttachment::Macvtap { macvtap } => {
            let index = match existing(netlink, macvtap).map_err(link_error)? {
                // A persistent port keeps its macvtap across restarts: take it over.
                Some(index) if is_stacked_on(macvtap, &port.name) => index,
                Some(_) => {
                    return Err(VmPortError::DeviceTaken {
                        port: port.name.clone(),
                        device: device.clone(),
                    });
                }
                None => netlink
                    .create_macvtap(macvtap, port_index, None)
                    .map_err(link_error)?,
            };
            let settings = LinkSettings {
                up: Some(true),
                mac: Some(interface.mac.0),
                ..LinkSettings::default()
            };
            let finish = netlink
                .configure(index, &settings)
                .map_err(link_error)
                .and_then(|()| chown_device(port, &link::macvtap_device_path(index)));
            if let Err(error) = finish {
                let _ = netlink.delete(index);
                return Err(error);
            }
        }
        VmAttachment::Glue { vm_tap } => {
            let options = TapOptions {
                vnet_hdr: true,
                multi_queue: interface.queues > 1,
                persistent: Some(true),
                owner: port.owner(),
                group: port.group(),
                sndbuf: None,
            };
            match Tap::open(vm_tap, &options) {
                // Closing our fd leaves the persistent TAP for QEMU.
                Ok(tap) => drop(tap),
                // QEMU already holds it (the switch restarted under a running guest).
                Err(TapError::Busy { .. }) => {}
                Err(source) => {
                    return Err(VmPortError::Tap {
                        port: port.name.clone(),
                        device: device.clone(),
                        source,
                    });
                }
            }
            let glue = (|| {
                let vm_index = netlink.index_of(vm_tap)?;
                let settings = LinkSettings {
                    up: Some(true),
                    mtu: Some(port.mtu),
                    ..LinkSettings::default()
                };
                netlink.configure(vm_index, &settings)?;
                // Start clean: a second glue would redirect every frame twice.
                netlink.remove_tap_glue(port_index, vm_index)?;
                netlink.create_tap_glue(port_index, vm_index)
            })();
            if let Err(source) = glue {
                let _ = remove_devices(port, netlink);
                return Err(link_error(source));
            }
        }
    }
    info!(port = %port.name, vm = port.vm().map_or("-", |vm| vm.domain.as_str()), device = %device,
        mac = %interface.mac, "VM device ready");
    Ok(interface)
}

/// Removes the device QEMU opens for `port` (and the glue); what is already gone is fine.
pub fn remove_devices(port: &PortConfig, netlink: &mut Netlink) -> Result<(), VmPortError> {
    let interface = interface_of(port)?;
    let device = interface.attachment.target_device();
    let link_error = |source| VmPortError::Link {
        port: port.name.clone(),
        device: device.to_owned(),
        source: Box::new(source),
    };
    let Some(index) = existing(netlink, device).map_err(link_error)? else {
        return Ok(());
    };
    match &interface.attachment {
        VmAttachment::Macvtap { macvtap } => {
            // Ours is stacked on the port (and goes with a deleted port TAP): anything else
            // under that name is someone else's.
            if !is_stacked_on(macvtap, &port.name) {
                return Ok(());
            }
        }
        VmAttachment::Glue { .. } => {
            // A persistent port TAP outlives this: take its half of the glue off too.
            if let Some(port_index) = existing(netlink, &port.name).map_err(link_error)? {
                netlink
                    .remove_tap_glue(port_index, index)
                    .map_err(link_error)?;
            }
        }
    }
    match netlink.delete(index) {
        Err(error) if error.errno() != Some(libc::ENODEV) => Err(link_error(error)),
        _ => Ok(()),
    }
}

/// The index of link `name`, or `None` when there is no such link.
fn existing(netlink: &mut Netlink, name: &str) -> Result<Option<u32>, LinkError> {
    match netlink.index_of(name) {
        Ok(index) => Ok(Some(index)),
        Err(error) if error.errno() == Some(libc::ENODEV) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Whether link `upper` is stacked on link `lower` (sysfs `lower_<name>` link).
fn is_stacked_on(upper: &str, lower: &str) -> bool {
    Path::new("/sys/class/net")
        .join(upper)
        .join(format!("lower_{lower}"))
        .exists()
}

/// Gives the macvtap's character device to the port's owner and group, so a QEMU running as
/// that user can open it.
fn chown_device(port: &PortConfig, path: &Path) -> Result<(), VmPortError> {
    let (owner, group) = (port.owner(), port.group());
    if owner.is_none() && group.is_none() {
        return Ok(());
    }
    std::os::unix::fs::chown(path, owner, group).map_err(|source| VmPortError::Chown {
        port: port.name.clone(),
        path: path.display().to_string(),
        owner: owner_text(owner, group),
        source,
    })
}

/// `uid 64055 gid 64056`, `uid 64055` or `gid 64056`: who a device is given to.
pub fn owner_text(owner: Option<u32>, group: Option<u32>) -> String {
    let ids: Vec<String> = [("uid", owner), ("gid", group)]
        .into_iter()
        .filter_map(|(kind, id)| Some(format!("{kind} {}", id?)))
        .collect();
    ids.join(" ")
}

/// Whether making `port`'s VM device gives a character device to a user or group, which
/// takes CAP_CHOWN (a glue TAP's owner is `TUNSETOWNER`, which does not).
pub fn needs_chown(port: &PortConfig) -> bool {
    port.vm().is_some()
        && port.vm_mode() == VmMode::Macvtap
        && (port.owner().is_some() || port.group().is_some())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::config::VmConfig;
    use crate::port::TapPort;

    fn unique(prefix: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        format!(
            "{prefix}{}x{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Deletes links by name on drop, also when the test fails.
    struct Cleanup(Vec<String>);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Ok(mut netlink) = Netlink::open() {
                for name in &self.0 {
                    if let Ok(index) = netlink.index_of(name) {
                        let _ = netlink.delete(index);
                    }
                }
            }
        }
    }

    fn vm_port(name: &str, mode: VmMode) -> PortConfig {
        let mut port = PortConfig::named(name);
        let tap = port.tap_mut().unwrap();
        tap.vm = Some(VmConfig {
            domain: "some-domain".into(),
            mode: Some(mode),
            mac: Some("52:54:00:12:34:56".parse().unwrap()),
            queues: None,
            device: None,
        });
        tap.owner = Some(64055);
        tap.group = Some(64056);
        port
    }

    #[test]
    fn macvtap_devices_are_stacked_owned_and_removed() {
        let port = vm_port(&unique("vpm"), VmMode::Macvtap);
        let device = port.vm_device_name();
        let _cleanup = Cleanup(vec![device.clone(), port.name.clone()]);
        let _tap = TapPort::new(Tap::open(&port.name, &TapOptions::default()).unwrap());
        let mut netlink = Netlink::open().unwrap();

        let interface = create_devices(&port, &mut netlink).unwrap();
        assert_eq!(interface.attachment.target_device(), device);
        assert_eq!(interface.alias.as_deref(), Some(&*port_alias(&port.name)));
        assert!(is_stacked_on(&device, &port.name));
        let info = netlink.info(&device).unwrap();
        assert!(info.up);
        assert_eq!(info.mac, Some(interface.mac.0));
        let dev = std::fs::metadata(link::macvtap_device_path(info.index)).unwrap();
        assert_eq!((dev.uid(), dev.gid()), (64055, 64056));

        // Again (a restart with a persistent port): the same macvtap is taken over.
        let again = create_devices(&port, &mut netlink).unwrap();
        assert_eq!(netlink.index_of(&device).unwrap(), info.index);
        assert_eq!(again, interface);

        remove_devices(&port, &mut netlink).unwrap();
        assert!(existing(&mut netlink, &device).unwrap().is_none());
        remove_devices(&port, &mut netlink).unwrap();
    }

    #[test]
    fn a_foreign_device_under_the_macvtap_name_is_refused_and_kept() {
        let port = vm_port(&unique("vpf"), VmMode::Macvtap);
        let device = port.vm_device_name();
        let _cleanup = Cleanup(vec![device.clone(), port.name.clone()]);
        let _tap = TapPort::new(Tap::open(&port.name, &TapOptions::default()).unwrap());
        let persistent = TapOptions {
            persistent: Some(true),
            ..TapOptions::default()
        };
        drop(Tap::open(&device, &persistent).unwrap());
        let mut netlink = Netlink::open().unwrap();
        let err = create_devices(&port, &mut netlink).unwrap_err();
        assert!(matches!(err, VmPortError::DeviceTaken { .. }), "{err}");
        assert!(err.to_string().contains(&device), "{err}");
        remove_devices(&port, &mut netlink).unwrap();
        assert!(existing(&mut netlink, &device).unwrap().is_some(), "kept");
    }

    #[test]
    fn glue_devices_are_a_persistent_owned_vm_tap_glued_to_the_port() {
        let mut port = vm_port(&unique("vpg"), VmMode::Glue);
        port.vm_mut().unwrap().queues = Some(2);
        let device = port.vm_device_name();
        let _cleanup = Cleanup(vec![device.clone(), port.name.clone()]);
        let _tap = TapPort::new(Tap::open(&port.name, &TapOptions::default()).unwrap());
        let mut netlink = Netlink::open().unwrap();

        let interface = create_devices(&port, &mut netlink).unwrap();
        assert_eq!(interface.queues, 2);
        let sys = Path::new("/sys/class/net").join(&device);
        let read = |file: &str| std::fs::read_to_string(sys.join(file)).unwrap();
        assert_eq!(read("owner").trim(), "64055");
        assert_eq!(read("group").trim(), "64056");
        // IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE, and persistent (IFF_PERSIST).
        let flags =
            u32::from_str_radix(read("tun_flags").trim().trim_start_matches("0x"), 16).unwrap();
        assert_eq!(flags & 0x0002, 0x0002, "IFF_TAP: {flags:#x}");
        assert_ne!(flags & 0x4000, 0, "IFF_VNET_HDR: {flags:#x}");
        assert_ne!(flags & 0x0100, 0, "IFF_MULTI_QUEUE: {flags:#x}");
        assert_ne!(flags & 0x0800, 0, "IFF_PERSIST: {flags:#x}");
        // Both ends carry the ingress qdisc of the glue.
        for dev in [&port.name, &device] {
            let qdiscs = std::process::Command::new("tc")
                .args(["qdisc", "show", "dev", dev])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&qdiscs.stdout);
            assert!(text.contains("ingress"), "{dev}: {text}");
        }
        // Glued twice is still glued once: one redirect filter per end.
        create_devices(&port, &mut netlink).unwrap();
        let filters = std::process::Command::new("tc")
            .args(["filter", "show", "dev", &port.name, "ingress"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&filters.stdout);
        assert_eq!(text.matches("mirred").count(), 1, "{text}");

        remove_devices(&port, &mut netlink).unwrap();
        assert!(existing(&mut netlink, &device).unwrap().is_none());
        let qdiscs = std::process::Command::new("tc")
            .args(["qdisc", "show", "dev", &port.name])
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&qdiscs.stdout).contains("ingress"));
    }

    #[test]
    fn owners_read_as_ids_and_only_macvtap_owners_need_chown() {
        assert_eq!(owner_text(Some(64055), Some(64056)), "uid 64055 gid 64056");
        assert_eq!(owner_text(None, Some(7)), "gid 7");
        let err = VmPortError::Chown {
            port: "vp".into(),
            path: "/dev/tap9".into(),
            owner: owner_text(Some(64055), None),
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        };
        assert_eq!(
            err.to_string(),
            "port vp: giving /dev/tap9 to uid 64055: Operation not permitted (os error 1)"
        );
        assert!(needs_chown(&vm_port("a", VmMode::Macvtap)));
        assert!(!needs_chown(&vm_port("a", VmMode::Glue)));
        let mut unowned = vm_port("a", VmMode::Macvtap);
        let tap = unowned.tap_mut().unwrap();
        (tap.owner, tap.group) = (None, None);
        assert!(!needs_chown(&unowned));
        assert!(!needs_chown(&PortConfig::named("plain")));
    }

    #[test]
    fn a_port_without_vm_has_no_interface() {
        let err = interface_of(&PortConfig::named("plain")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "port plain is not bound to a VM (no vm = \"DOMAIN\")"
        );
    }
}
