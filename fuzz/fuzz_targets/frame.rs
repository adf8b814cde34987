//! Frame views: any bytes either are refused as a runt or give a view whose
//! accessors agree with each other and never panic; MAC addresses parse only
//! from what they print as.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapswitch::wire::{
    ETHERTYPE_QINQ, ETHERTYPE_VLAN, EthernetFrame, HEADER_LEN, MacAddr, VLAN_TAG_LEN, WireError,
};

fuzz_target!(|data: &[u8]| {
    match EthernetFrame::new_checked(data) {
        Ok(frame) => {
            let tagged = matches!(frame.ethertype(), ETHERTYPE_VLAN | ETHERTYPE_QINQ);
            assert_eq!(frame.vlan().is_some(), tagged);
            let header_len = if tagged {
                HEADER_LEN + VLAN_TAG_LEN
            } else {
                HEADER_LEN
            };
            assert_eq!(frame.header_len(), header_len);
            assert_eq!(frame.header_len() + frame.payload().len(), frame.len());
            assert_eq!(frame.payload(), &data[header_len..]);
            assert_eq!(frame.dst_addr().as_bytes(), &data[..6]);
            assert_eq!(frame.src_addr().as_bytes(), &data[6..12]);
            if let Some(tag) = frame.vlan() {
                assert!(tag.vid <= 4095 && tag.pcp <= 7);
                let tci = u16::from_be_bytes([data[14], data[15]]);
                assert_eq!(
                    tci,
                    u16::from(tag.pcp) << 13 | u16::from(tag.dei) << 12 | tag.vid
                );
                assert_eq!(
                    frame.inner_ethertype(),
                    u16::from_be_bytes([data[16], data[17]])
                );
            } else {
                assert_eq!(frame.inner_ethertype(), frame.ethertype());
            }
            // Writing through a mutable view changes exactly the field written.
            let mut copy = data.to_vec();
            let mut view = EthernetFrame::new_checked(&mut copy[..]).unwrap();
            let swapped = (frame.src_addr(), frame.dst_addr());
            view.set_dst_addr(swapped.0);
            view.set_src_addr(swapped.1);
            assert_eq!(view.dst_addr(), frame.src_addr());
            assert_eq!(copy[12..], data[12..]);
        }
        Err(WireError::Runt { len, min }) => {
            assert_eq!(len, data.len());
            assert!(len < min && (min == HEADER_LEN || min == HEADER_LEN + VLAN_TAG_LEN));
        }
        Err(other) => panic!("a frame view failed with {other}"),
    }

    // MAC addresses: text that parses prints back as the canonical form of the
    // same address; the canonical form always parses.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(mac) = text.parse::<MacAddr>() {
            let printed = mac.to_string();
            assert_eq!(printed.parse::<MacAddr>().unwrap(), mac);
            assert_eq!(printed.len(), 17);
            assert!(
                text.eq_ignore_ascii_case(&printed) || text.len() < 17,
                "{text:?}"
            );
        }
    }
    if data.len() >= 6 {
        let mac = MacAddr::from_bytes(data);
        assert_eq!(mac.to_string().parse::<MacAddr>().unwrap(), mac);
        assert_eq!(mac.is_broadcast(), mac.0 == [0xff; 6]);
        assert_eq!(mac.is_zero(), mac.0 == [0; 6]);
        assert_eq!(mac.is_multicast(), !mac.is_unicast());
    }
});
