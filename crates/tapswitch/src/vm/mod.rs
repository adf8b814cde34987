//! Attaching VMs started by libvirt (as OpenStack Nova starts them) to a switch port, while the
//! switch keeps the only fd of its port TAP.
//!
//! Two ways to put a guest's NIC on a port whose TAP the switch holds:
//! - **macvtap**: a `passthru` macvtap stacked on the port TAP ([`crate::netlink::Netlink::create_macvtap`]);
//!   libvirt opens its `/dev/tapN` and hands that fd to QEMU. The guest's frames leave the
//!   macvtap onto the port TAP's netdev and arrive at the switch's fd.
//! - **glue**: the VM has a TAP of its own (Nova's `vif_type=tap`), which QEMU holds; it is
//!   joined to the port TAP in the kernel by tc redirects
//!   ([`crate::netlink::Netlink::create_tap_glue`]).
//!
//! Either way libvirt sees an `<interface type='ethernet'>` whose target it must not create
//! or delete (`managed='no'`): [`VmInterface::to_xml`] writes it.

#[cfg(feature = "libvirt")]
pub mod libvirt;

use std::fmt::Write as _;

use thiserror::Error;

use crate::sys::tap;
use crate::wire::MacAddr;

/// Most queues virtio-net (and a multi-queue TAP) supports.
pub const MAX_QUEUES: u32 = 256;

/// Errors in a VM interface description; each names the field and the value.
#[derive(Debug, Error)]
pub enum VmError {
    /// The target device name is not a usable interface name.
    #[error("VM interface target device: {source}")]
    InvalidDevice {
        /// Why, as the interface name validation says (it names the device).
        #[source]
        source: tap::TapError,
    },
    /// libvirt (and Ethernet) require a unicast guest MAC.
    #[error("VM interface MAC {mac}: a guest NIC needs a unicast address (multicast bit set)")]
    MulticastMac {
        /// The rejected address.
        mac: MacAddr,
    },
    /// The all-zero MAC means "no address".
    #[error("VM interface MAC 00:00:00:00:00:00: a guest NIC needs a non-zero address")]
    ZeroMac,
    /// libvirt accepts only `ua-` aliases of letters, digits, `_` and `-` from users.
    #[error(
        "VM interface alias {alias:?}: must start with \"ua-\" and hold only letters, digits, '_' and '-'"
    )]
    InvalidAlias {
        /// The rejected alias.
        alias: String,
    },
    /// Queue count outside 1..=MAX_QUEUES.
    #[error("VM interface queues {queues}: must be between 1 and {MAX_QUEUES}")]
    InvalidQueues {
        /// The rejected count.
        queues: u32,
    },
}

/// How the guest's NIC reaches the switch port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmAttachment {
    /// A passthru macvtap stacked on the port TAP; libvirt opens the macvtap's `/dev/tapN`.
    Macvtap {
        /// The macvtap's interface name.
        macvtap: String,
    },
    /// The VM's own TAP, glued to the port TAP with tc redirects; libvirt opens it by name.
    Glue {
        /// The VM TAP's interface name.
        vm_tap: String,
    },
}

impl VmAttachment {
    /// The device libvirt attaches the guest NIC to.
    pub fn target_device(&self) -> &str {
        match self {
            Self::Macvtap { macvtap } => macvtap,
            Self::Glue { vm_tap } => vm_tap,
        }
    }
}

/// A guest NIC on a switch port, as libvirt must be told about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmInterface {
    /// How the NIC reaches the port.
    pub attachment: VmAttachment,
    /// The guest's MAC address.
    pub mac: MacAddr,
    /// virtio-net queue pairs; more than one needs a multi-queue target.
    pub queues: u32,
    /// libvirt device alias (`<alias name='ua-…'/>`): libvirt names the device by it in
    /// events, so a removed NIC can be told apart from the domain's other devices.
    pub alias: Option<String>,
}

/// The device alias tapswitch gives the NIC of port `port`: `ua-tsw-` and the port name, with
/// `.` (not allowed in aliases) written as `_`.
pub fn port_alias(port: &str) -> String {
    format!("ua-tsw-{}", port.replace('.', "_"))
}

impl VmInterface {
    /// Checks the target device name, the MAC and the queue count.
    pub fn validate(&self) -> Result<(), VmError> {
        let device = self.attachment.target_device();
        tap::validate_name(device).map_err(|source| VmError::InvalidDevice { source })?;
        if self.mac.is_zero() {
            return Err(VmError::ZeroMac);
        }
        if self.mac.is_multicast() {
            return Err(VmError::MulticastMac { mac: self.mac });
        }
        if !(1..=MAX_QUEUES).contains(&self.queues) {
            return Err(VmError::InvalidQueues {
                queues: self.queues,
            });
        }
        if let Some(alias) = &self.alias {
            let valid = alias.strip_prefix("ua-").is_some_and(|rest| {
                !rest.is_empty()
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
            });
            if !valid {
                return Err(VmError::InvalidAlias {
                    alias: alias.clone(),
                });
            }
        }
        Ok(())
    }

    /// The libvirt device XML for this NIC, for a domain definition or `attach-device`:
    ///
    /// ```xml
    /// <interface type='ethernet'>
    ///   <mac address='52:54:00:00:00:01'/>
    ///   <target dev='mvt0' managed='no'/>
    ///   <model type='virtio'/>
    /// </interface>
    /// ```
    ///
    /// `managed='no'`: libvirt opens the existing device and neither creates nor deletes it,
    /// so the switch's port (and its macvtap or VM TAP) outlives the domain. `<driver
    /// queues='N'/>` appears only for N > 1, as libvirt writes it, and `<alias name='…'/>` only
    /// with an alias. Every value is validated
    /// first; the validated names and MAC contain no character XML would need escaped.
    pub fn to_xml(&self) -> Result<String, VmError> {
        self.validate()?;
        let mut xml = String::new();
        let _ = writeln!(xml, "<interface type='ethernet'>");
        let _ = writeln!(xml, "  <mac address='{}'/>", self.mac);
        let _ = writeln!(
            xml,
            "  <target dev='{}' managed='no'/>",
            self.attachment.target_device()
        );
        let _ = writeln!(xml, "  <model type='virtio'/>");
        if self.queues > 1 {
            let _ = writeln!(xml, "  <driver queues='{}'/>", self.queues);
        }
        if let Some(alias) = &self.alias {
            let _ = writeln!(xml, "  <alias name='{alias}'/>");
        }
        let _ = writeln!(xml, "</interface>");
        Ok(xml)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn macvtap(name: &str, queues: u32) -> VmInterface {
        VmInterface {
            attachment: VmAttachment::Macvtap {
                macvtap: name.to_owned(),
            },
            mac: "52:54:00:ab:cd:01".parse().unwrap(),
            queues,
            alias: None,
        }
    }

    #[test]
    fn macvtap_interface_xml_is_ethernet_unmanaged_virtio() {
        assert_eq!(
            macvtap("mvt0", 1).to_xml().unwrap(),
            "<interface type='ethernet'>\n\
             \x20 <mac address='52:54:00:ab:cd:01'/>\n\
             \x20 <target dev='mvt0' managed='no'/>\n\
             \x20 <model type='virtio'/>\n\
             </interface>\n"
        );
    }

    #[test]
    fn glue_interface_targets_the_vm_tap_and_multiqueue_adds_driver_queues() {
        let interface = VmInterface {
            attachment: VmAttachment::Glue {
                vm_tap: "tap1234abcd-ef".to_owned(),
            },
            mac: "fa:16:3e:00:00:07".parse().unwrap(),
            queues: 4,
            alias: Some(port_alias("web.1")),
        };
        assert_eq!(
            interface.to_xml().unwrap(),
            "<interface type='ethernet'>\n\
             \x20 <mac address='fa:16:3e:00:00:07'/>\n\
             \x20 <target dev='tap1234abcd-ef' managed='no'/>\n\
             \x20 <model type='virtio'/>\n\
             \x20 <driver queues='4'/>\n\
             \x20 <alias name='ua-tsw-web_1'/>\n\
             </interface>\n"
        );
        assert_eq!(interface.attachment.target_device(), "tap1234abcd-ef");
    }

    #[test]
    fn invalid_values_are_refused_with_the_field_named() {
        let err = macvtap("x'/><evil", 1).to_xml().unwrap_err();
        assert!(matches!(err, VmError::InvalidDevice { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("VM interface target device: invalid interface name \"x'/><evil\""),
            "{err}"
        );
        assert!(matches!(
            macvtap("a-name-longer-than-15", 1).validate(),
            Err(VmError::InvalidDevice { .. })
        ));
        assert!(matches!(
            macvtap("", 1).validate(),
            Err(VmError::InvalidDevice { .. })
        ));

        let multicast = VmInterface {
            mac: "01:00:5e:00:00:01".parse().unwrap(),
            ..macvtap("mvt0", 1)
        };
        assert_eq!(
            multicast.to_xml().unwrap_err().to_string(),
            "VM interface MAC 01:00:5e:00:00:01: a guest NIC needs a unicast address \
             (multicast bit set)"
        );
        let zero = VmInterface {
            mac: MacAddr::ZERO,
            ..macvtap("mvt0", 1)
        };
        assert!(matches!(zero.validate(), Err(VmError::ZeroMac)));

        for queues in [0, MAX_QUEUES + 1] {
            let err = macvtap("mvt0", queues).to_xml().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("VM interface queues {queues}: must be between 1 and 256")
            );
        }
        assert!(macvtap("mvt0", MAX_QUEUES).validate().is_ok());

        for alias in ["net0", "ua-", "ua-a.b", "ua-x'/>"] {
            let interface = VmInterface {
                alias: Some(alias.to_owned()),
                ..macvtap("mvt0", 1)
            };
            assert!(
                matches!(interface.validate(), Err(VmError::InvalidAlias { .. })),
                "{alias}"
            );
        }
    }
}
