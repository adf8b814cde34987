//! Zero-copy views of Ethernet frames (with their outer 802.1Q / 802.1ad tag),
//! IPv4, IPv6, TCP and UDP headers, MAC addresses, and internet checksum helpers.
//!
//! [`EthernetFrame`] wraps any byte buffer and reads fields in place, in the style of
//! smoltcp's `wire` module: construct with [`EthernetFrame::new_checked`] once, then the
//! accessors cannot panic. Only the outer 802.1Q / 802.1ad tag is interpreted; an inner
//! (Q-in-Q) tag is part of the payload.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub mod checksum;
mod ip;
mod tcp_udp;
pub mod vxlan;

pub use ip::{
    ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPPROTO_TCP, IPPROTO_UDP, IPV4_MIN_HEADER_LEN, IPV6_HEADER_LEN,
    Ipv4Packet, Ipv6Packet,
};
pub use tcp_udp::{
    TCP_CHECKSUM_OFFSET, TCP_MIN_HEADER_LEN, TcpSegment, UDP_CHECKSUM_OFFSET, UDP_HEADER_LEN,
    UdpDatagram, tcp_flags,
};

/// TPID of a customer VLAN tag (802.1Q).
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// TPID of a service VLAN tag (802.1ad, "Q-in-Q").
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
/// Length of an untagged Ethernet header: destination, source, ethertype.
pub const HEADER_LEN: usize = 14;
/// Length of one VLAN tag: TPID and TCI.
pub const VLAN_TAG_LEN: usize = 4;

/// Errors from parsing frames and addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the header it announces.
    #[error("runt frame: {len} bytes, its header needs at least {min}")]
    Runt { len: usize, min: usize },
    /// A header's own length field (IPv4 IHL, TCP data offset) is below its minimum.
    #[error("{header} header length field says {len} bytes, below the {min}-byte minimum")]
    HeaderLength {
        header: &'static str,
        len: usize,
        min: usize,
    },
    /// A VXLAN header without the I flag: its VNI field is not valid.
    #[error("VXLAN header without the I flag (flags {flags:#04x}): no valid VNI")]
    VxlanNoVni { flags: u8 },
    /// A VXLAN header with flags other than I (an extension such as GBP or GPE).
    #[error("VXLAN header with flags {flags:#04x}: only the I flag (0x08) is understood")]
    VxlanFlags { flags: u8 },
    /// A VXLAN header whose reserved fields are not zero.
    #[error("VXLAN header with reserved bits set")]
    VxlanReserved,
    /// A MAC address string did not parse.
    #[error("invalid MAC address `{input}`: {reason}")]
    BadMacAddr { input: String, reason: String },
}

/// A 48-bit IEEE 802 MAC address.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// `00:00:00:00:00:00`, never a valid source.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Reads an address from the first six bytes of `bytes`.
    ///
    /// # Panics
    /// When `bytes` is shorter than six bytes.
    pub fn from_bytes(bytes: &[u8]) -> MacAddr {
        let mut octets = [0; 6];
        octets.copy_from_slice(&bytes[..6]);
        MacAddr(octets)
    }

    /// The address as bytes.
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// Group (I/G) bit set: multicast, including broadcast.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// All ones.
    pub const fn is_broadcast(&self) -> bool {
        u64::from_be_bytes([
            0, 0, self.0[0], self.0[1], self.0[2], self.0[3], self.0[4], self.0[5],
        ]) == 0xffff_ffff_ffff
    }

    /// Group bit clear. The all-zero address counts as unicast here; see [`Self::is_zero`].
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// All zeros.
    pub const fn is_zero(&self) -> bool {
        u64::from_be_bytes([
            0, 0, self.0[0], self.0[1], self.0[2], self.0[3], self.0[4], self.0[5],
        ]) == 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

impl FromStr for MacAddr {
    type Err = WireError;

    /// Parses six `:`-separated octets of one or two hex digits, e.g. `02:00:00:00:00:01`.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| WireError::BadMacAddr {
            input: input.to_owned(),
            reason,
        };
        let mut octets = [0u8; 6];
        let mut count = 0;
        for (index, part) in input.split(':').enumerate() {
            if index >= 6 {
                count = index + 1;
                continue;
            }
            let hex_digits = !part.is_empty()
                && part.len() <= 2
                && part.bytes().all(|byte| byte.is_ascii_hexdigit());
            if !hex_digits {
                return Err(bad(format!(
                    "octet {} `{part}` is not one or two hex digits",
                    index + 1
                )));
            }
            octets[index] = u8::from_str_radix(part, 16).expect("checked hex digits");
            count = index + 1;
        }
        if count != 6 {
            return Err(bad(format!(
                "expected 6 `:`-separated octets, found {count}"
            )));
        }
        Ok(MacAddr(octets))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The fields of one VLAN tag.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct VlanTag {
    /// [`ETHERTYPE_VLAN`] or [`ETHERTYPE_QINQ`].
    pub tpid: u16,
    /// Priority code point, 0..=7.
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier, 0..=4095.
    pub vid: u16,
}

impl VlanTag {
    /// An 802.1Q tag ([`ETHERTYPE_VLAN`]) of VLAN `vid` with priority and DEI 0.
    pub const fn dot1q(vid: u16) -> Self {
        VlanTag {
            tpid: ETHERTYPE_VLAN,
            pcp: 0,
            dei: false,
            vid,
        }
    }

    /// The tag of `tpid` whose tag control information is `tci` (as a NIC or
    /// the kernel reports a tag it took out of a frame).
    pub const fn from_tci(tpid: u16, tci: u16) -> Self {
        VlanTag {
            tpid,
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            vid: tci & 0x0fff,
        }
    }

    /// The tag control information: PCP (3 bits), DEI, VID (12 bits).
    pub const fn tci(&self) -> u16 {
        ((self.pcp as u16 & 0x7) << 13) | ((self.dei as u16) << 12) | (self.vid & 0x0fff)
    }

    /// The tag as it sits on the wire after the addresses: TPID, then TCI.
    pub fn to_bytes(&self) -> [u8; VLAN_TAG_LEN] {
        let mut bytes = [0; VLAN_TAG_LEN];
        bytes[..2].copy_from_slice(&self.tpid.to_be_bytes());
        bytes[2..].copy_from_slice(&self.tci().to_be_bytes());
        bytes
    }
}

/// Bytes of the destination and source addresses, behind which a VLAN tag goes.
pub const ADDRESSES_LEN: usize = field::ADDRESSES.end;

/// Byte ranges of the header fields.
mod field {
    use std::ops::{Range, RangeFrom};

    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    /// Both addresses: where a VLAN tag is pushed behind.
    pub const ADDRESSES: Range<usize> = 0..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    /// Tag control information of the outer VLAN tag (when tagged).
    pub const TCI: Range<usize> = 14..16;
    /// Ethertype after the outer VLAN tag (when tagged).
    pub const INNER_ETHERTYPE: Range<usize> = 16..18;
    pub const PAYLOAD_UNTAGGED: RangeFrom<usize> = super::HEADER_LEN..;
    pub const PAYLOAD_TAGGED: RangeFrom<usize> = super::HEADER_LEN + super::VLAN_TAG_LEN..;
}

/// Whether `ethertype` is the TPID of an 802.1Q or 802.1ad tag.
pub fn is_vlan_tpid(ethertype: u16) -> bool {
    ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ
}

/// A read/write view of an Ethernet II frame, optionally carrying one outer VLAN tag.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` without checking its length: accessors may panic on a runt.
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps `buffer` after [`Self::check_len`], so that no accessor can panic.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Fails with [`WireError::Runt`] when the buffer is shorter than the Ethernet header,
    /// or than the header plus the VLAN tag its ethertype announces.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Runt {
                len,
                min: HEADER_LEN,
            });
        }
        let min = HEADER_LEN + VLAN_TAG_LEN;
        if is_vlan_tpid(self.ethertype()) && len < min {
            return Err(WireError::Runt { len, min });
        }
        Ok(())
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Length of the whole frame in bytes.
    pub fn len(&self) -> usize {
        self.buffer.as_ref().len()
    }

    /// True for an empty buffer (which [`Self::new_checked`] never accepts).
    pub fn is_empty(&self) -> bool {
        self.buffer.as_ref().is_empty()
    }

    /// Destination address.
    pub fn dst_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::DESTINATION])
    }

    /// Source address.
    pub fn src_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::SOURCE])
    }

    /// The outer ethertype (bytes 12..14): a TPID when the frame is tagged.
    pub fn ethertype(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ETHERTYPE.start)
    }

    /// The outer VLAN tag, when the outer ethertype is 802.1Q or 802.1ad.
    pub fn vlan(&self) -> Option<VlanTag> {
        let tpid = self.ethertype();
        if !is_vlan_tpid(tpid) {
            return None;
        }
        let tci = read_u16(self.buffer.as_ref(), field::TCI.start);
        Some(VlanTag {
            tpid,
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            vid: tci & 0x0fff,
        })
    }

    /// Both addresses (destination, source): the bytes before any VLAN tag.
    pub fn addresses(&self) -> &[u8] {
        &self.buffer.as_ref()[field::ADDRESSES]
    }

    /// Everything after the addresses, from the outer ethertype on: what
    /// follows a VLAN tag pushed onto the frame.
    pub fn from_ethertype(&self) -> &[u8] {
        &self.buffer.as_ref()[field::ETHERTYPE.start..]
    }

    /// Everything after the outer VLAN tag, from the inner ethertype on: the
    /// frame without that tag once [`Self::addresses`] go before it. Only
    /// meaningful when [`Self::vlan`] is `Some` (panics on a shorter buffer).
    pub fn after_vlan_tag(&self) -> &[u8] {
        &self.buffer.as_ref()[field::INNER_ETHERTYPE.start..]
    }

    /// Header length including the outer VLAN tag: 14 or 18.
    pub fn header_len(&self) -> usize {
        if is_vlan_tpid(self.ethertype()) {
            HEADER_LEN + VLAN_TAG_LEN
        } else {
            HEADER_LEN
        }
    }

    /// The ethertype after the outer VLAN tag, or the outer one when untagged.
    pub fn inner_ethertype(&self) -> u16 {
        if is_vlan_tpid(self.ethertype()) {
            read_u16(self.buffer.as_ref(), field::INNER_ETHERTYPE.start)
        } else {
            self.ethertype()
        }
    }

    /// Bytes after the header returned by [`Self::header_len`].
    pub fn payload(&self) -> &[u8] {
        let buffer = self.buffer.as_ref();
        if is_vlan_tpid(self.ethertype()) {
            &buffer[field::PAYLOAD_TAGGED]
        } else {
            &buffer[field::PAYLOAD_UNTAGGED]
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Overwrites the destination address.
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    /// Overwrites the source address.
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    /// Overwrites the outer ethertype.
    pub fn set_ethertype(&mut self, ethertype: u16) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&ethertype.to_be_bytes());
    }
}

fn read_u16(buffer: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buffer[at], buffer[at + 1]])
}

fn write_u16(buffer: &mut [u8], at: usize, value: u16) {
    buffer[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ARP request from 02:00:00:00:00:01 to broadcast, untagged, truncated after 4 payload bytes.
    static UNTAGGED: [u8; 18] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // destination
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source
        0x08, 0x06, // ARP
        0x00, 0x01, 0x08, 0x00, // payload
    ];

    /// IPv4 on VLAN 100, PCP 5, DEI set.
    static DOT1Q: [u8; 20] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // destination
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source
        0x81, 0x00, // 802.1Q
        0xb0, 0x64, // PCP 5, DEI 1, VID 100
        0x08, 0x00, // IPv4
        0x45, 0x00, // payload
    ];

    /// 802.1ad S-tag VID 4095, C-tag VID 10 inside: only the outer tag is parsed.
    static QINQ: [u8; 22] = [
        0x01, 0x00, 0x5e, 0x00, 0x00, 0x01, // destination (IPv4 multicast)
        0x02, 0x00, 0x00, 0x00, 0x00, 0x03, // source
        0x88, 0xa8, // 802.1ad
        0x0f, 0xff, // PCP 0, DEI 0, VID 4095
        0x81, 0x00, // inner 802.1Q
        0x00, 0x0a, // inner VID 10
        0x86, 0xdd, // IPv6
    ];

    #[test]
    fn untagged_fields() {
        let frame = EthernetFrame::new_checked(&UNTAGGED[..]).unwrap();
        assert_eq!(frame.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(frame.src_addr(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(frame.ethertype(), 0x0806);
        assert_eq!(frame.inner_ethertype(), 0x0806);
        assert_eq!(frame.vlan(), None);
        assert_eq!(frame.header_len(), 14);
        assert_eq!(frame.payload(), &[0x00, 0x01, 0x08, 0x00]);
        assert_eq!(frame.len(), 18);
    }

    #[test]
    fn dot1q_fields() {
        let frame = EthernetFrame::new_checked(&DOT1Q[..]).unwrap();
        assert_eq!(frame.dst_addr(), MacAddr([2, 0, 0, 0, 0, 2]));
        assert_eq!(frame.ethertype(), ETHERTYPE_VLAN);
        assert_eq!(
            frame.vlan(),
            Some(VlanTag {
                tpid: ETHERTYPE_VLAN,
                pcp: 5,
                dei: true,
                vid: 100
            })
        );
        assert_eq!(frame.header_len(), 18);
        assert_eq!(frame.inner_ethertype(), 0x0800);
        assert_eq!(frame.payload(), &[0x45, 0x00]);
    }

    #[test]
    fn qinq_parses_outer_tag_only() {
        let frame = EthernetFrame::new_checked(&QINQ[..]).unwrap();
        assert!(frame.dst_addr().is_multicast());
        assert_eq!(
            frame.vlan(),
            Some(VlanTag {
                tpid: ETHERTYPE_QINQ,
                pcp: 0,
                dei: false,
                vid: 4095
            })
        );
        assert_eq!(frame.inner_ethertype(), ETHERTYPE_VLAN);
        assert_eq!(frame.payload(), &[0x00, 0x0a, 0x86, 0xdd]);
    }

    #[test]
    fn minimal_tagged_frame_has_empty_payload() {
        let frame = EthernetFrame::new_checked(&DOT1Q[..18]).unwrap();
        assert_eq!(frame.header_len(), 18);
        assert!(frame.payload().is_empty());
        let frame = EthernetFrame::new_checked(&UNTAGGED[..14]).unwrap();
        assert!(frame.payload().is_empty());
    }

    #[test]
    fn runts_are_rejected_at_every_length() {
        for len in 0..HEADER_LEN {
            for bytes in [&UNTAGGED[..len], &DOT1Q[..len]] {
                assert_eq!(
                    EthernetFrame::new_checked(bytes).unwrap_err(),
                    WireError::Runt { len, min: 14 },
                    "length {len}"
                );
            }
        }
        for len in HEADER_LEN..HEADER_LEN + VLAN_TAG_LEN {
            for bytes in [&DOT1Q[..len], &QINQ[..len]] {
                assert_eq!(
                    EthernetFrame::new_checked(bytes).unwrap_err(),
                    WireError::Runt { len, min: 18 },
                    "length {len}"
                );
            }
            // The same lengths are fine without a tag.
            assert!(EthernetFrame::new_checked(&UNTAGGED[..len]).is_ok());
        }
    }

    #[test]
    fn a_tag_from_its_tci_is_the_tag_on_the_wire() {
        // PCP 5, DEI 1, VID 0x123, as an 802.1ad tag.
        let tag = VlanTag::from_tci(ETHERTYPE_QINQ, 0xb123);
        assert_eq!((tag.pcp, tag.dei, tag.vid), (5, true, 0x123));
        assert_eq!(tag.to_bytes(), [0x88, 0xa8, 0xb1, 0x23]);
        assert_eq!(
            VlanTag::from_tci(ETHERTYPE_VLAN, 5),
            VlanTag {
                vid: 5,
                ..VlanTag::dot1q(0)
            }
        );
    }

    #[test]
    fn retagging_views_split_at_the_tag() {
        let tagged = EthernetFrame::new_checked(&DOT1Q[..]).unwrap();
        assert_eq!(tagged.addresses(), &DOT1Q[..12]);
        assert_eq!(tagged.from_ethertype(), &DOT1Q[12..]);
        assert_eq!(tagged.after_vlan_tag(), &[0x08, 0x00, 0x45, 0x00]);
        let tag = tagged.vlan().unwrap();
        assert_eq!(tag.tci(), 0xb064);
        assert_eq!(tag.to_bytes(), [0x81, 0x00, 0xb0, 0x64]);
        assert_eq!(
            VlanTag { vid: 7, ..tag }.to_bytes(),
            [0x81, 0x00, 0xb0, 0x07]
        );
        assert_eq!(VlanTag::dot1q(4094).to_bytes(), [0x81, 0x00, 0x0f, 0xfe]);

        let untagged = EthernetFrame::new_checked(&UNTAGGED[..]).unwrap();
        assert_eq!(
            untagged.from_ethertype(),
            &[0x08, 0x06, 0x00, 0x01, 0x08, 0x00]
        );
        // Addresses, a pushed tag and the rest are the tagged frame.
        let pushed: Vec<u8> = [
            untagged.addresses(),
            &VlanTag::dot1q(100).to_bytes(),
            untagged.from_ethertype(),
        ]
        .concat();
        assert_eq!(
            EthernetFrame::new_checked(&pushed[..]).unwrap().vlan(),
            Some(VlanTag::dot1q(100))
        );
        assert_eq!(&pushed[12..16], &[0x81, 0x00, 0x00, 0x64]);
    }

    #[test]
    fn setters_write_in_place() {
        let mut bytes = UNTAGGED;
        let mut frame = EthernetFrame::new_checked(&mut bytes[..]).unwrap();
        frame.set_dst_addr(MacAddr([2, 0, 0, 0, 0, 9]));
        frame.set_src_addr(MacAddr([2, 0, 0, 0, 0, 8]));
        frame.set_ethertype(0x86dd);
        assert_eq!(frame.dst_addr(), MacAddr([2, 0, 0, 0, 0, 9]));
        assert_eq!(frame.src_addr(), MacAddr([2, 0, 0, 0, 0, 8]));
        assert_eq!(frame.ethertype(), 0x86dd);
        assert_eq!(
            &bytes[..14],
            &[2, 0, 0, 0, 0, 9, 2, 0, 0, 0, 0, 8, 0x86, 0xdd]
        );
    }

    #[test]
    fn mac_classification() {
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!MacAddr::BROADCAST.is_unicast());
        let ipv6_multicast = MacAddr([0x33, 0x33, 0, 0, 0, 1]);
        assert!(ipv6_multicast.is_multicast());
        assert!(!ipv6_multicast.is_broadcast());
        let local = MacAddr([0x02, 0, 0, 0, 0, 1]);
        assert!(local.is_unicast() && !local.is_multicast() && !local.is_zero());
        assert!(MacAddr::ZERO.is_zero() && MacAddr::ZERO.is_unicast());
        assert!(!MacAddr([0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]).is_broadcast());
    }

    #[test]
    fn mac_display_and_parse_round_trip() {
        let mac = MacAddr([0x02, 0x00, 0x0a, 0xbc, 0xde, 0xff]);
        assert_eq!(mac.to_string(), "02:00:0a:bc:de:ff");
        assert_eq!("02:00:0a:bc:de:ff".parse::<MacAddr>().unwrap(), mac);
        assert_eq!("02:00:0A:BC:DE:FF".parse::<MacAddr>().unwrap(), mac);
        assert_eq!("2:0:a:bc:de:ff".parse::<MacAddr>().unwrap(), mac);
        assert_eq!(format!("{mac:?}"), "MacAddr(02:00:0a:bc:de:ff)");
    }

    #[test]
    fn mac_parse_errors_name_the_problem() {
        let message = |input: &str| input.parse::<MacAddr>().unwrap_err().to_string();
        assert_eq!(
            message("02:00:00:00:00"),
            "invalid MAC address `02:00:00:00:00`: expected 6 `:`-separated octets, found 5"
        );
        assert_eq!(
            message("02:00:00:00:00:01:02"),
            "invalid MAC address `02:00:00:00:00:01:02`: expected 6 `:`-separated octets, found 7"
        );
        assert_eq!(
            message("02:00:0g:00:00:01"),
            "invalid MAC address `02:00:0g:00:00:01`: octet 3 `0g` is not one or two hex digits"
        );
        assert_eq!(
            message("02:00::00:00:01"),
            "invalid MAC address `02:00::00:00:01`: octet 3 `` is not one or two hex digits"
        );
        assert_eq!(
            message("002:00:00:00:00:01"),
            "invalid MAC address `002:00:00:00:00:01`: octet 1 `002` is not one or two hex digits"
        );
        assert!("+2:00:00:00:00:01".parse::<MacAddr>().is_err());
        assert!("".parse::<MacAddr>().is_err());
    }

    #[test]
    fn mac_serde_as_string() {
        let mac = MacAddr([0x02, 0, 0, 0, 0, 1]);
        let json = serde_json::to_string(&mac).unwrap();
        assert_eq!(json, "\"02:00:00:00:00:01\"");
        assert_eq!(serde_json::from_str::<MacAddr>(&json).unwrap(), mac);
        let error = serde_json::from_str::<MacAddr>("\"02:00\"").unwrap_err();
        assert!(error.to_string().contains("found 2"), "{error}");
    }
}
