//! vnet-header validation: a hostile header in front of any frame is refused
//! or yields an Offload that stays inside the frame, behind its Ethernet
//! header; what the switch then sends to a port without offloads (segments,
//! completed checksums) is well-formed and within that port's MTU, and a
//! super-frame retagged for a port with offloads keeps a header that
//! describes it.
//!
//! Input: 12 header bytes, then the frame.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use tapswitch::gso::Segmenter;
use tapswitch::vnet::VNET_HDR_LEN;

thread_local! {
    static SEGMENTER: RefCell<Segmenter> = RefCell::new(Segmenter::new());
}

fuzz_target!(|data: &[u8]| {
    let Some((header, frame)) = data.split_first_chunk::<VNET_HDR_LEN>() else {
        return;
    };
    SEGMENTER.with_borrow_mut(|segmenter| {
        tapswitch_fuzz::check_vnet(segmenter, header, frame);
    });
});
