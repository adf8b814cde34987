//! The `[evpn]` table: BGP EVPN through gobgpd for the VNIs of the `kind = "vxlan"` ports.
//!
//! ```toml
//! [evpn]
//! gobgp = "127.0.0.1:50051"   # gobgpd's gRPC API
//! asn = 65000                 # route targets ASN:VNI, route distinguishers VTEP:VNI
//! # vtep = "10.1.0.1"         # defaults to the vxlan ports' `local`
//! ```

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, PortKind, invalid};
use crate::fdb::VlanId;
use crate::policy::VlanMode;

/// The `[evpn]` table.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, expecting = "a table of EVPN settings")]
pub struct EvpnConfig {
    /// gobgpd's gRPC API, `HOST:PORT`.
    pub gobgp: String,
    /// The BGP AS of the route targets (`ASN:VNI`, as FRR's auto-RT): 2 bytes.
    pub asn: u32,
    /// This host's VTEP address (next hop of its routes); by default the vxlan ports'
    /// `local`, which must then all be the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep: Option<Ipv4Addr>,
}

/// One VNI under EVPN: the vxlan port that carries it and the VLAN (the MAC table's
/// segment) it joins on the switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvpnVni {
    pub port: String,
    pub vlan: VlanId,
}

/// What the daemon runs the agent with: `[evpn]` resolved against the ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvpnPlan {
    pub gobgp: String,
    pub asn: u16,
    pub vtep: Ipv4Addr,
    pub vnis: BTreeMap<u32, EvpnVni>,
}

impl EvpnPlan {
    /// The VNI whose vxlan port joins VLAN `vlan`.
    pub fn vni_of_vlan(&self, vlan: VlanId) -> Option<u32> {
        self.vnis
            .iter()
            .find(|(_, v)| v.vlan == vlan)
            .map(|(&vni, _)| vni)
    }
}

impl Config {
    /// The `[evpn]` settings resolved against the vxlan ports (`None` without `[evpn]`),
    /// or the first reason they do not fit.
    pub fn evpn_plan(&self) -> Result<Option<EvpnPlan>, ConfigError> {
        let Some(evpn) = &self.evpn else {
            return Ok(None);
        };
        evpn.gobgp.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "evpn.gobgp",
                format!(
                    "{:?} is not HOST:PORT with an IP address (gobgpd's API, e.g. \"127.0.0.1:50051\")",
                    evpn.gobgp
                ),
            )
        })?;
        let asn = u16::try_from(evpn.asn)
            .ok()
            .filter(|&asn| asn != 0)
            .ok_or_else(|| {
                invalid(
                    "evpn.asn",
                    format!(
                        "{} is outside 1..=65535 (route targets ASN:VNI take a 2-byte AS number)",
                        evpn.asn
                    ),
                )
            })?;
        let mut vnis = BTreeMap::new();
        let mut locals: Vec<(String, Ipv4Addr)> = Vec::new();
        for (i, port) in self.ports.iter().enumerate() {
            if port.kind() != PortKind::Vxlan {
                continue;
            }
            let Some(settings) = port.vxlan_settings(&self.switch) else {
                continue;
            };
            let Some(vni) = settings.vni else {
                return Err(invalid(
                    format!("port[{i}].vlan_vni"),
                    "a vxlan trunk (vlan_vni) is not supported under [evpn] yet: its flood \
                     list is shared by its VNIs, where EVPN keeps one per VNI; use one vxlan \
                     port per VNI (vni = ...)",
                ));
            };
            let vlan = match port.policy().vlan {
                VlanMode::Transparent => 0,
                VlanMode::Access { vlan } => vlan,
                VlanMode::Trunk { .. } => {
                    return Err(invalid(
                        format!("port[{i}].vlan_mode"),
                        "a vxlan port under [evpn] carries one segment: transparent or access \
                         (its VNI maps to one VLAN), not trunk",
                    ));
                }
            };
            if let Some((other, _)) = vnis.iter().find(|(_, v): &(&u32, &EvpnVni)| v.vlan == vlan) {
                return Err(invalid(
                    format!("port[{i}]"),
                    format!(
                        "VNIs {other} and {} would share VLAN {vlan}: under [evpn] each vxlan \
                         port needs a VLAN of its own",
                        vni
                    ),
                ));
            }
            if vnis.contains_key(&vni) {
                return Err(invalid(
                    format!("port[{i}].vni"),
                    format!(
                        "VNI {} is carried by two vxlan ports: under [evpn] a VNI has one port",
                        vni
                    ),
                ));
            }
            vnis.insert(
                vni,
                EvpnVni {
                    port: port.name.clone(),
                    vlan,
                },
            );
            locals.push((port.name.clone(), *settings.local.ip()));
        }
        if vnis.is_empty() {
            return Err(invalid(
                "evpn",
                "no kind = \"vxlan\" port: EVPN's VNIs are those of the vxlan ports",
            ));
        }
        let vtep = match evpn.vtep {
            Some(vtep) if vtep.is_unspecified() || vtep.is_multicast() || vtep.is_broadcast() => {
                return Err(invalid(
                    "evpn.vtep",
                    format!("{vtep} is not a unicast VTEP address"),
                ));
            }
            Some(vtep) => vtep,
            None => {
                let (first_port, first) = &locals[0];
                if let Some((port, local)) = locals.iter().find(|(_, local)| local != first) {
                    return Err(invalid(
                        "evpn.vtep",
                        format!(
                            "ambiguous: the vxlan ports have different local addresses \
                             ({first_port}: {first}, {port}: {local}); say which is this host's VTEP"
                        ),
                    ));
                }
                *first
            }
        };
        Ok(Some(EvpnPlan {
            gobgp: evpn.gobgp.clone(),
            asn,
            vtep,
            vnis,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vxlan(name: &str, vni: u32, local: &str, extra: &str) -> String {
        format!(
            "[[port]]\nname = \"{name}\"\nkind = \"vxlan\"\nvni = {vni}\nlocal = \"{local}\"\n\
             remotes = []\n{extra}\n"
        )
    }

    fn plan(text: &str) -> Result<Option<EvpnPlan>, String> {
        let config = Config::from_toml(text, "test").map_err(|e| e.to_string())?;
        config.evpn_plan().map_err(|e| e.to_string())
    }

    #[test]
    fn the_vnis_are_the_vxlan_ports_and_the_vtep_their_local_address() {
        let text = format!(
            "[evpn]\ngobgp = \"127.0.0.1:50051\"\nasn = 65000\n\
             [[port]]\nname = \"tp0\"\n{}{}",
            vxlan("vx0", 100, "10.0.0.1", ""),
            vxlan("vx1", 200, "10.0.0.1", "vlan_mode = \"access\"\nvlan = 20")
        );
        let plan = plan(&text).unwrap().unwrap();
        assert_eq!(plan.vtep, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(plan.asn, 65000);
        assert_eq!(
            plan.vnis[&100],
            EvpnVni {
                port: "vx0".into(),
                vlan: 0
            }
        );
        assert_eq!(plan.vnis[&200].vlan, 20);
        assert_eq!(plan.vni_of_vlan(20), Some(200));
        assert_eq!(
            Config::from_toml(&vxlan("vx0", 1, "10.0.0.1", ""), "t")
                .unwrap()
                .evpn_plan()
                .unwrap(),
            None
        );
    }

    #[test]
    fn evpn_settings_that_do_not_fit_are_refused_naming_the_field() {
        let head =
            |extra: &str| format!("[evpn]\ngobgp = \"127.0.0.1:50051\"\nasn = 65000\n{extra}\n");
        let cases = [
            (head(""), "evpn: no kind = \"vxlan\" port"),
            (
                format!(
                    "[evpn]\ngobgp = \"gobgpd\"\nasn = 1\n{}",
                    vxlan("vx0", 1, "10.0.0.1", "")
                ),
                "evpn.gobgp: \"gobgpd\" is not HOST:PORT",
            ),
            (
                format!(
                    "[evpn]\ngobgp = \"127.0.0.1:1\"\nasn = 4200000000\n{}",
                    vxlan("vx0", 1, "10.0.0.1", "")
                ),
                "evpn.asn: 4200000000 is outside 1..=65535",
            ),
            (
                format!(
                    "{}{}{}",
                    head(""),
                    vxlan("vx0", 1, "10.0.0.1", ""),
                    vxlan("vx1", 2, "10.0.0.2", "vlan_mode = \"access\"\nvlan = 2")
                ),
                "evpn.vtep: ambiguous: the vxlan ports have different local addresses (vx0: 10.0.0.1, vx1: 10.0.0.2)",
            ),
            (
                format!(
                    "{}{}{}",
                    head(""),
                    vxlan("vx0", 1, "10.0.0.1", ""),
                    vxlan("vx1", 2, "10.0.0.1", "")
                ),
                "port[1]: VNIs 1 and 2 would share VLAN 0",
            ),
            (
                format!(
                    "{}{}",
                    head("vtep = \"0.0.0.0\""),
                    vxlan("vx0", 1, "10.0.0.1", "")
                ),
                "evpn.vtep: 0.0.0.0 is not a unicast VTEP address",
            ),
            (
                format!(
                    "{}{}",
                    head(""),
                    vxlan(
                        "vx0",
                        1,
                        "10.0.0.1",
                        "vlan_mode = \"trunk\"\nallowed_vlans = [2]"
                    )
                ),
                "port[0].vlan_mode: a vxlan port under [evpn] carries one segment",
            ),
            (
                format!(
                    "{}[[port]]\nname = \"vx0\"\nkind = \"vxlan\"\nlocal = \"10.0.0.1\"\n\
                     remotes = []\nvlan_vni = {{ 100 = 5000 }}\n",
                    head("")
                ),
                "port[0].vlan_vni: a vxlan trunk (vlan_vni) is not supported under [evpn] yet",
            ),
            (
                "[evpn]\ngobgp = \"127.0.0.1:1\"\nasn = 1\nrd = 3\n".to_owned(),
                "unknown field `rd`",
            ),
        ];
        for (text, expected) in cases {
            let error = plan(&text).unwrap_err();
            assert!(
                error.contains(expected),
                "{text}\n=> {error}\nwanted {expected}"
            );
        }
    }
}
