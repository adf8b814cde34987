//! EVPN routes as tapswitch means them, and their gobgp encoding.
//!
//! tapswitch speaks two route types (RFC 7432 §7, VXLAN per RFC 8365):
//! - type 2, MAC/IP advertisement: "MAC m on VNI v is behind VTEP t";
//! - type 3, inclusive multicast Ethernet tag: "VTEP t floods VNI v" (ingress replication).
//!
//! Conventions, chosen to interoperate with FRR's `advertise-all-vni`:
//! - the Ethernet tag is 0 (VLAN-based service: one VNI per EVI, RFC 8365 §5.1.2);
//! - the VNI travels in the 24-bit label field (MPLS label 1 of type 2, the PMSI tunnel
//!   attribute's label of type 3) — gobgp writes and reads that field as a plain 24-bit number;
//! - the route distinguisher is `VTEP:VNI` (type 1, so a VNI must fit 16 bits) and the route
//!   target `ASN:VNI` (FRR's auto-derived RT);
//! - every route carries the VXLAN encapsulation extended community (tunnel type 8).
//!
//! Decoding is lenient about what it does not need (other communities, an RD of another
//! type) and strict about what it does: a route without a usable next hop or VNI is an error,
//! never a guess.

use std::net::{IpAddr, Ipv4Addr};

use prost::Message;
use prost_types::Any;
use thiserror::Error;

use crate::api;

/// The largest VNI: the field is 24 bits.
pub const MAX_VNI: u32 = 0x00ff_ffff;
/// BGP tunnel encapsulation type "VXLAN" (RFC 9012 §14 / RFC 8365 §5.1.3).
const TUNNEL_TYPE_VXLAN: u32 = 8;
/// PMSI tunnel type "ingress replication" (RFC 6514 §5).
const PMSI_INGRESS_REPLICATION: u32 = 6;
/// Extended community sub-type "route target" (RFC 4360 §4).
const SUBTYPE_ROUTE_TARGET: u32 = 0x02;
/// BGP ORIGIN "IGP": locally originated.
const ORIGIN_IGP: u32 = 0;
/// The `Any` type URL prefix protobuf uses for packed messages.
const TYPE_URL_PREFIX: &str = "type.googleapis.com/apipb.";

/// Errors of encoding or decoding a route.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("VNI {0} is outside 1..=16777215")]
    VniOutOfRange(u32),
    #[error(
        "VNI {0} does not fit the 16-bit field of a VTEP:VNI route distinguisher; VNIs above 65535 need an explicit one"
    )]
    VniTooLargeForRd(u32),
    #[error("the path has no NLRI")]
    NoNlri,
    #[error("the path is not an EVPN route tapswitch uses (NLRI type {0})")]
    UnsupportedNlri(String),
    #[error("decoding {what} from the path failed: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("the route has no IPv4 next hop (got {0:?})")]
    BadNextHop(String),
    #[error("the MAC address {0:?} is not six hex bytes separated by colons")]
    BadMac(String),
    #[error("the route carries no label, so its VNI is unknown")]
    NoLabel,
    #[error("the IP address {0:?} of a MAC/IP route does not parse")]
    BadIp(String),
}

/// A route distinguisher of type 1 (`IP:N`), the form tapswitch originates.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteDistinguisher {
    pub ip: Ipv4Addr,
    pub assigned: u16,
}

impl RouteDistinguisher {
    /// `VTEP:VNI`, refused for a VNI that does not fit.
    pub fn for_vni(vtep: Ipv4Addr, vni: u32) -> Result<Self, RouteError> {
        let assigned = u16::try_from(vni).map_err(|_| RouteError::VniTooLargeForRd(vni))?;
        Ok(RouteDistinguisher { ip: vtep, assigned })
    }
}

/// A two-octet-AS route target `ASN:N`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteTarget {
    pub asn: u16,
    pub local_admin: u32,
}

impl RouteTarget {
    /// FRR's auto-derived route target: `ASN:VNI`.
    pub fn auto(asn: u16, vni: u32) -> Self {
        RouteTarget {
            asn,
            local_admin: vni,
        }
    }
}

/// Type 2: a MAC (and optionally its IP) on a VNI, behind a VTEP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MacRoute {
    pub vni: u32,
    pub mac: [u8; 6],
    pub ip: Option<IpAddr>,
    pub vtep: Ipv4Addr,
    /// `None` when decoding a route whose RD is not of type 1 (it is not needed to use it).
    pub rd: Option<RouteDistinguisher>,
    pub route_targets: Vec<RouteTarget>,
    /// MAC mobility sequence number (RFC 7432 §15); absent means 0.
    pub mobility_seq: Option<u32>,
}

/// Type 3: a VTEP's membership in a VNI's flooding (ingress replication).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MulticastRoute {
    pub vni: u32,
    pub vtep: Ipv4Addr,
    pub rd: Option<RouteDistinguisher>,
    pub route_targets: Vec<RouteTarget>,
}

/// A route tapswitch uses, decoded from a gobgp path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvpnRoute {
    Mac(MacRoute),
    Multicast(MulticastRoute),
}

/// The address family of every EVPN path: L2VPN / EVPN.
pub fn evpn_family() -> api::Family {
    api::Family {
        afi: api::family::Afi::L2vpn as i32,
        safi: api::family::Safi::Evpn as i32,
    }
}

fn pack<M: Message>(name: &str, message: &M) -> Any {
    Any {
        type_url: format!("{TYPE_URL_PREFIX}{name}"),
        value: message.encode_to_vec(),
    }
}

/// The message name of a packed `Any` (`"EVPNMACIPAdvertisementRoute"`), if it is one of gobgp's.
fn packed_name(any: &Any) -> Option<&str> {
    any.type_url.strip_prefix(TYPE_URL_PREFIX)
}

fn unpack<M: Message + Default>(what: &'static str, any: &Any) -> Result<M, RouteError> {
    M::decode(any.value.as_slice()).map_err(|source| RouteError::Decode { what, source })
}

fn check_vni(vni: u32) -> Result<u32, RouteError> {
    if vni == 0 || vni > MAX_VNI {
        return Err(RouteError::VniOutOfRange(vni));
    }
    Ok(vni)
}

fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_mac(text: &str) -> Result<[u8; 6], RouteError> {
    let bad = || RouteError::BadMac(text.to_owned());
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

fn encode_rd(rd: RouteDistinguisher) -> Any {
    pack(
        "RouteDistinguisherIPAddress",
        &api::RouteDistinguisherIpAddress {
            admin: rd.ip.to_string(),
            assigned: u32::from(rd.assigned),
        },
    )
}

fn decode_rd(any: Option<&Any>) -> Option<RouteDistinguisher> {
    let any = any?;
    if packed_name(any) != Some("RouteDistinguisherIPAddress") {
        return None;
    }
    let rd: api::RouteDistinguisherIpAddress = unpack("route distinguisher", any).ok()?;
    Some(RouteDistinguisher {
        ip: rd.admin.parse().ok()?,
        assigned: u16::try_from(rd.assigned).ok()?,
    })
}

/// The attributes every route carries: ORIGIN, MP_REACH (next hop), extended communities.
fn common_attributes(
    nlri: &Any,
    vtep: Ipv4Addr,
    route_targets: &[RouteTarget],
    mobility_seq: Option<u32>,
) -> Vec<Any> {
    let mut communities: Vec<Any> = route_targets
        .iter()
        .map(|rt| {
            pack(
                "TwoOctetAsSpecificExtended",
                &api::TwoOctetAsSpecificExtended {
                    is_transitive: true,
                    sub_type: SUBTYPE_ROUTE_TARGET,
                    asn: u32::from(rt.asn),
                    local_admin: rt.local_admin,
                },
            )
        })
        .collect();
    communities.push(pack(
        "EncapExtended",
        &api::EncapExtended {
            tunnel_type: TUNNEL_TYPE_VXLAN,
        },
    ));
    if let Some(sequence_num) = mobility_seq {
        communities.push(pack(
            "MacMobilityExtended",
            &api::MacMobilityExtended {
                is_sticky: false,
                sequence_num,
            },
        ));
    }
    vec![
        pack(
            "OriginAttribute",
            &api::OriginAttribute { origin: ORIGIN_IGP },
        ),
        pack(
            "MpReachNLRIAttribute",
            &api::MpReachNlriAttribute {
                family: Some(evpn_family()),
                next_hops: vec![vtep.to_string()],
                nlris: vec![nlri.clone()],
            },
        ),
        pack(
            "ExtendedCommunitiesAttribute",
            &api::ExtendedCommunitiesAttribute { communities },
        ),
    ]
}

impl MacRoute {
    /// The gobgp path advertising this route (for `AddPath`/`DeletePath`).
    pub fn to_path(&self) -> Result<api::Path, RouteError> {
        let vni = check_vni(self.vni)?;
        let rd = match self.rd {
            Some(rd) => rd,
            None => RouteDistinguisher::for_vni(self.vtep, vni)?,
        };
        let nlri = pack(
            "EVPNMACIPAdvertisementRoute",
            &api::EvpnmacipAdvertisementRoute {
                rd: Some(encode_rd(rd)),
                esi: Some(api::EthernetSegmentIdentifier {
                    r#type: 0,
                    value: vec![0; 9],
                }),
                ethernet_tag: 0,
                mac_address: format_mac(&self.mac),
                ip_address: self.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                labels: vec![vni],
            },
        );
        let pattrs = common_attributes(&nlri, self.vtep, &self.route_targets, self.mobility_seq);
        Ok(api::Path {
            nlri: Some(nlri),
            pattrs,
            family: Some(evpn_family()),
            ..Default::default()
        })
    }
}

impl MulticastRoute {
    /// The gobgp path advertising this route (for `AddPath`/`DeletePath`).
    pub fn to_path(&self) -> Result<api::Path, RouteError> {
        let vni = check_vni(self.vni)?;
        let rd = match self.rd {
            Some(rd) => rd,
            None => RouteDistinguisher::for_vni(self.vtep, vni)?,
        };
        let nlri = pack(
            "EVPNInclusiveMulticastEthernetTagRoute",
            &api::EvpnInclusiveMulticastEthernetTagRoute {
                rd: Some(encode_rd(rd)),
                ethernet_tag: 0,
                ip_address: self.vtep.to_string(),
            },
        );
        let mut pattrs = common_attributes(&nlri, self.vtep, &self.route_targets, None);
        pattrs.push(pack(
            "PmsiTunnelAttribute",
            &api::PmsiTunnelAttribute {
                flags: 0,
                r#type: PMSI_INGRESS_REPLICATION,
                label: vni,
                id: self.vtep.octets().to_vec(),
            },
        ));
        Ok(api::Path {
            nlri: Some(nlri),
            pattrs,
            family: Some(evpn_family()),
            ..Default::default()
        })
    }
}

/// What the attributes of a path say that tapswitch needs.
#[derive(Default)]
struct Attributes {
    next_hop: Option<String>,
    route_targets: Vec<RouteTarget>,
    mobility_seq: Option<u32>,
    pmsi_label: Option<u32>,
}

fn decode_attributes(pattrs: &[Any]) -> Result<Attributes, RouteError> {
    let mut attributes = Attributes::default();
    for any in pattrs {
        match packed_name(any) {
            Some("MpReachNLRIAttribute") => {
                let reach: api::MpReachNlriAttribute = unpack("MP_REACH_NLRI", any)?;
                attributes.next_hop = reach.next_hops.into_iter().next();
            }
            Some("NextHopAttribute") if attributes.next_hop.is_none() => {
                let hop: api::NextHopAttribute = unpack("NEXT_HOP", any)?;
                attributes.next_hop = Some(hop.next_hop);
            }
            Some("ExtendedCommunitiesAttribute") => {
                let ext: api::ExtendedCommunitiesAttribute = unpack("extended communities", any)?;
                for community in &ext.communities {
                    match packed_name(community) {
                        Some("TwoOctetAsSpecificExtended") => {
                            let rt: api::TwoOctetAsSpecificExtended =
                                unpack("route target", community)?;
                            if rt.sub_type == SUBTYPE_ROUTE_TARGET
                                && let Ok(asn) = u16::try_from(rt.asn)
                            {
                                attributes.route_targets.push(RouteTarget {
                                    asn,
                                    local_admin: rt.local_admin,
                                });
                            }
                        }
                        Some("MacMobilityExtended") => {
                            let mobility: api::MacMobilityExtended =
                                unpack("MAC mobility", community)?;
                            attributes.mobility_seq = Some(mobility.sequence_num);
                        }
                        _ => {}
                    }
                }
            }
            Some("PmsiTunnelAttribute") => {
                let pmsi: api::PmsiTunnelAttribute = unpack("PMSI tunnel", any)?;
                attributes.pmsi_label = Some(pmsi.label);
            }
            _ => {}
        }
    }
    Ok(attributes)
}

fn ipv4_next_hop(next_hop: Option<String>) -> Result<Ipv4Addr, RouteError> {
    let text = next_hop.unwrap_or_default();
    match text.parse::<Ipv4Addr>() {
        Ok(ip) if !ip.is_unspecified() => Ok(ip),
        _ => Err(RouteError::BadNextHop(text)),
    }
}

impl EvpnRoute {
    /// Decodes a path from `ListPath` or `WatchEvent`.
    pub fn from_path(path: &api::Path) -> Result<EvpnRoute, RouteError> {
        let nlri = path.nlri.as_ref().ok_or(RouteError::NoNlri)?;
        let attributes = decode_attributes(&path.pattrs)?;
        match packed_name(nlri) {
            Some("EVPNMACIPAdvertisementRoute") => {
                let route: api::EvpnmacipAdvertisementRoute = unpack("type-2 NLRI", nlri)?;
                let vni = *route.labels.first().ok_or(RouteError::NoLabel)?;
                let ip = match route.ip_address.as_str() {
                    // gobgp renders an absent IP as Go's "<nil>".
                    "" | "<nil>" | "0.0.0.0" | "::" => None,
                    text => Some(
                        text.parse()
                            .map_err(|_| RouteError::BadIp(text.to_owned()))?,
                    ),
                };
                Ok(EvpnRoute::Mac(MacRoute {
                    vni: check_vni(vni)?,
                    mac: parse_mac(&route.mac_address)?,
                    ip,
                    vtep: ipv4_next_hop(attributes.next_hop)?,
                    rd: decode_rd(route.rd.as_ref()),
                    route_targets: attributes.route_targets,
                    mobility_seq: attributes.mobility_seq,
                }))
            }
            Some("EVPNInclusiveMulticastEthernetTagRoute") => {
                let route: api::EvpnInclusiveMulticastEthernetTagRoute =
                    unpack("type-3 NLRI", nlri)?;
                let vni = attributes.pmsi_label.ok_or(RouteError::NoLabel)?;
                // The originator's address is in the NLRI; the next hop says the same for
                // ingress replication, and is what a VTEP sends to.
                let vtep = ipv4_next_hop(attributes.next_hop.or(Some(route.ip_address)))?;
                Ok(EvpnRoute::Multicast(MulticastRoute {
                    vni: check_vni(vni)?,
                    vtep,
                    rd: decode_rd(route.rd.as_ref()),
                    route_targets: attributes.route_targets,
                }))
            }
            _ => Err(RouteError::UnsupportedNlri(nlri.type_url.clone())),
        }
    }

    pub fn vni(&self) -> u32 {
        match self {
            EvpnRoute::Mac(route) => route.vni,
            EvpnRoute::Multicast(route) => route.vni,
        }
    }

    pub fn vtep(&self) -> Ipv4Addr {
        match self {
            EvpnRoute::Mac(route) => route.vtep,
            EvpnRoute::Multicast(route) => route.vtep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VTEP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);

    fn mac_route() -> MacRoute {
        MacRoute {
            vni: 100,
            mac: [0x02, 0, 0, 0, 0xaa, 0x01],
            ip: None,
            vtep: VTEP,
            rd: None,
            route_targets: vec![RouteTarget::auto(65000, 100)],
            mobility_seq: Some(3),
        }
    }

    #[test]
    fn a_mac_route_round_trips_with_the_defaults_filled_in() {
        let route = mac_route();
        let decoded = EvpnRoute::from_path(&route.to_path().unwrap()).unwrap();
        let expected = MacRoute {
            rd: Some(RouteDistinguisher {
                ip: VTEP,
                assigned: 100,
            }),
            ..route
        };
        assert_eq!(decoded, EvpnRoute::Mac(expected));
    }

    #[test]
    fn a_multicast_route_round_trips_and_carries_its_vni_in_the_pmsi_label() {
        let route = MulticastRoute {
            vni: 4242,
            vtep: VTEP,
            rd: None,
            route_targets: vec![RouteTarget::auto(65000, 4242)],
        };
        let path = route.to_path().unwrap();
        let pmsi = path
            .pattrs
            .iter()
            .find(|a| packed_name(a) == Some("PmsiTunnelAttribute"))
            .unwrap();
        let pmsi: api::PmsiTunnelAttribute = unpack("pmsi", pmsi).unwrap();
        assert_eq!(
            (pmsi.r#type, pmsi.label, pmsi.id.as_slice()),
            (6, 4242, &[10, 1, 0, 1][..])
        );
        match EvpnRoute::from_path(&path).unwrap() {
            EvpnRoute::Multicast(decoded) => {
                assert_eq!((decoded.vni, decoded.vtep), (4242, VTEP));
                assert_eq!(decoded.route_targets, route.route_targets);
            }
            other => panic!("decoded as {other:?}"),
        }
    }

    #[test]
    fn out_of_range_vnis_are_refused_with_the_reason() {
        for (vni, error) in [
            (0, RouteError::VniOutOfRange(0)),
            (MAX_VNI + 1, RouteError::VniOutOfRange(MAX_VNI + 1)),
            (70_000, RouteError::VniTooLargeForRd(70_000)),
        ] {
            let route = MacRoute { vni, ..mac_route() };
            assert_eq!(route.to_path().unwrap_err(), error, "VNI {vni}");
        }
        // An explicit RD lifts the 16-bit limit.
        let route = MacRoute {
            vni: 70_000,
            rd: Some(RouteDistinguisher {
                ip: VTEP,
                assigned: 7,
            }),
            ..mac_route()
        };
        assert!(route.to_path().is_ok());
    }

    #[test]
    fn a_path_without_a_next_hop_or_with_another_nlri_is_an_error() {
        let mut path = mac_route().to_path().unwrap();
        path.pattrs
            .retain(|a| packed_name(a) != Some("MpReachNLRIAttribute"));
        assert_eq!(
            EvpnRoute::from_path(&path).unwrap_err(),
            RouteError::BadNextHop(String::new())
        );
        let path = api::Path {
            nlri: Some(pack("IPAddressPrefix", &api::IpAddressPrefix::default())),
            ..Default::default()
        };
        assert!(matches!(
            EvpnRoute::from_path(&path),
            Err(RouteError::UnsupportedNlri(_))
        ));
    }

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            parse_mac("02:00:00:00:aa:01").unwrap(),
            [2, 0, 0, 0, 0xaa, 1]
        );
        for bad in [
            "02:00:00:00:aa",
            "02:00:00:00:aa:01:02",
            "2:0:0:0:aa:1",
            "zz:00:00:00:00:00",
        ] {
            assert_eq!(parse_mac(bad), Err(RouteError::BadMac(bad.to_owned())));
        }
    }
}
