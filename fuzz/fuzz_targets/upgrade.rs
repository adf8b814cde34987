//! Upgrade handover messages: the new process decodes whatever arrives on its
//! handover socket (an 8-byte header of fd count and JSON length, then the
//! JSON) without panicking, and a document it accepts is one it can build a
//! switch from: one queue count per configured port, each a queue count a port
//! can have, together naming exactly the fds that came, and a valid
//! configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapswitch::dataplane::MAX_QUEUES;
use tapswitch::upgrade::Handover;

fuzz_target!(|data: &[u8]| {
    let Some((header, json)) = data.split_first_chunk::<8>() else {
        return;
    };
    // The fds themselves cannot come from bytes: the header says how many arrived.
    let fd_count = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize % 512;
    let json_len = u32::from_le_bytes(header[4..].try_into().unwrap()) as usize;
    let json = &json[..json_len.min(json.len())];
    let Ok(handover) = Handover::decode(json, fd_count) else {
        return;
    };
    assert_eq!(
        handover.queues.len(),
        handover.config.ports.len(),
        "one queue count per port"
    );
    for (port, &queues) in handover.config.ports.iter().zip(&handover.queues) {
        assert!(
            (1..=MAX_QUEUES).contains(&queues),
            "port {}: {queues} queues",
            port.name
        );
    }
    assert_eq!(1 + handover.queues.iter().sum::<usize>(), fd_count);
    handover
        .config
        .validate()
        .expect("a handed-over config is valid");
});
