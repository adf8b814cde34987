//! The forwarding decision over random sequences of frames, port additions and
//! removals, policy changes, static entries, flushes and time: whatever
//! happens, a frame never goes back out of its ingress port, never to a
//! disabled or removed port, never outside its VLAN or between two isolated
//! ports, never flooded from one split-horizon (tunnel) port into another (only a
//! known unicast may go there), never to a port that switched that kind of flood off; storm-control
//! rates and MAC limits are never exceeded; the table never outgrows its
//! capacity or points at a removed port; a refused policy changes nothing.
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tapswitch::fdb::{FdbConfig, PortId, VlanId};
use tapswitch::forward::{
    DropReason, Egress, FloodControl, Forwarder, MacFlapConfig, PortPolicy, PortSecurity,
    StormControl, TagAction, Tagging, Verdict, ViolationAction, VlanMode, VlanSet,
};
use tapswitch::wire::{ETHERTYPE_QINQ, ETHERTYPE_VLAN, EthernetFrame, MacAddr};

const PORTS: u8 = 8;

#[derive(Arbitrary, Debug)]
enum Vlans {
    Transparent,
    Access(u8),
    Trunk(Vec<u8>, Option<u8>),
}

#[derive(Arbitrary, Debug)]
struct Policy {
    enabled: bool,
    vlans: Vlans,
    mac_limit: Option<u8>,
    violation: u8,
    sticky: bool,
    allowed_macs: Vec<u8>,
    broadcast_pps: Option<u8>,
    multicast_pps: Option<u8>,
    unknown_unicast_pps: Option<u8>,
    isolated: bool,
    split_horizon: bool,
    flood: (bool, bool, bool),
}

#[derive(Arbitrary, Debug)]
enum Tag {
    None,
    Dot1q(u16),
    Dot1ad(u16),
}

#[derive(Arbitrary, Debug)]
enum Op {
    AddPort(u8, Policy),
    RemovePort(u8),
    SetPolicy(u8, Policy),
    Frame {
        ingress: u8,
        src: u8,
        dst: u8,
        tag: Tag,
        cut: Option<u8>,
        advance_ms: u16,
    },
    AddStatic(u8, u8, u8),
    RemoveStatic(u8, u8),
    Flush,
    FlushPort(u8),
    Expire(u16),
    MacFlap(Option<(u8, u16, u8)>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    capacity: u8,
    ageing_secs: u8,
    ops: Vec<Op>,
}

/// Mostly VLANs 1..=4, where ports meet; sometimes one that must be refused.
fn vlan(byte: u8) -> VlanId {
    match byte {
        0..=249 => 1 + VlanId::from(byte % 4),
        250 => 0,
        251 => 4095,
        252 => 5000,
        _ => 4094,
    }
}

/// A few stations, broadcast, a multicast group and the zero address.
fn mac(byte: u8) -> MacAddr {
    match byte {
        0xff => MacAddr::BROADCAST,
        0xfe => MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
        0xfd => MacAddr::ZERO,
        n => MacAddr([0x02, 0, 0, 0, 0, n % 12]),
    }
}

fn rate(byte: Option<u8>) -> Option<u32> {
    byte.map(|b| u32::from(b % 8))
}

impl Policy {
    fn build(&self) -> PortPolicy {
        let vlan = match &self.vlans {
            Vlans::Transparent => VlanMode::Transparent,
            Vlans::Access(v) => VlanMode::Access { vlan: vlan(*v) },
            Vlans::Trunk(allowed, native) => VlanMode::Trunk {
                allowed: allowed
                    .iter()
                    .take(6)
                    .map(|&v| vlan(v))
                    .collect::<VlanSet>(),
                native: native.map(vlan),
            },
        };
        PortPolicy {
            enabled: self.enabled,
            vlan,
            security: PortSecurity {
                mac_limit: self.mac_limit.map(|l| u32::from(l % 6)),
                violation: [
                    ViolationAction::Drop,
                    ViolationAction::DropLog,
                    ViolationAction::Shutdown,
                ][usize::from(self.violation % 3)],
                sticky: self.sticky,
                allowed_macs: self.allowed_macs.iter().take(4).map(|&m| mac(m)).collect(),
            },
            storm: StormControl {
                broadcast_pps: rate(self.broadcast_pps),
                multicast_pps: rate(self.multicast_pps),
                unknown_unicast_pps: rate(self.unknown_unicast_pps),
            },
            isolated: self.isolated,
            split_horizon: self.split_horizon,
            flood: FloodControl {
                unknown_unicast: self.flood.0,
                multicast: self.flood.1,
                broadcast: self.flood.2,
            },
        }
    }
}

/// Storm-control floods a port's policy let through since it was set.
#[derive(Clone, Copy)]
struct StormLedger {
    since: Instant,
    broadcast: u64,
    multicast: u64,
}

impl StormLedger {
    fn new(now: Instant) -> Self {
        Self {
            since: now,
            broadcast: 0,
            multicast: 0,
        }
    }
}

/// Most a token bucket of `rate` (full at `since`) can have let through by `now`.
fn bucket_allows(rate: u32, since: Instant, now: Instant) -> u64 {
    let earned = now.saturating_duration_since(since).as_nanos() * u128::from(rate) / 1_000_000_000;
    u64::from(rate) + earned as u64
}

fn port(byte: u8) -> PortId {
    PortId(u32::from(byte % PORTS))
}

/// The 802.1Q VID on the wire after `action`, for a frame that carried `dot1q`.
fn wire_vid(dot1q: Option<VlanId>, action: TagAction) -> Option<VlanId> {
    match action {
        TagAction::AsIs => dot1q,
        TagAction::Push(vid) | TagAction::SetVid(vid) => Some(vid),
        TagAction::Pop => None,
    }
}

fn frame_bytes(src: MacAddr, dst: MacAddr, tag: &Tag, cut: Option<u8>) -> Vec<u8> {
    let mut bytes = dst.0.to_vec();
    bytes.extend_from_slice(&src.0);
    match *tag {
        Tag::None => {}
        Tag::Dot1q(tci) => {
            bytes.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
            bytes.extend_from_slice(&(tci % 6 | tci & 0xf000).to_be_bytes());
        }
        Tag::Dot1ad(tci) => {
            bytes.extend_from_slice(&ETHERTYPE_QINQ.to_be_bytes());
            bytes.extend_from_slice(&(tci % 6).to_be_bytes());
        }
    }
    bytes.extend_from_slice(&[0x08, 0x00, 0x45, 0x00]);
    if let Some(cut) = cut {
        bytes.truncate(usize::from(cut) % bytes.len());
    }
    bytes
}

fuzz_target!(|input: Input| {
    let start = Instant::now();
    let mut now = start;
    let capacity = usize::from(input.capacity % 32) + 1;
    let mut forwarder = Forwarder::new(FdbConfig {
        ageing: Duration::from_secs(u64::from(input.ageing_secs % 10) + 1),
        capacity,
    });
    let mut ledgers: Vec<Option<StormLedger>> = vec![None; usize::from(PORTS)];
    let mut egress: Vec<Egress> = Vec::new();
    for op in input.ops.iter().take(300) {
        match op {
            Op::AddPort(id, policy) => {
                let id = port(*id);
                let policy = policy.build();
                let existed = forwarder.port(id).is_some();
                let before = forwarder.port(id).cloned();
                match forwarder.add_port(id, policy.clone()) {
                    Ok(()) => {
                        assert!(!existed && policy.validate().is_ok());
                        ledgers[id.index()] = Some(StormLedger::new(now));
                    }
                    Err(_) => assert_eq!(forwarder.port(id).cloned(), before),
                }
            }
            Op::RemovePort(id) => {
                let id = port(*id);
                let existed = forwarder.port(id).is_some();
                assert_eq!(forwarder.remove_port(id).is_ok(), existed);
                assert!(forwarder.port(id).is_none());
                assert_eq!(
                    forwarder.fdb().port_count(id),
                    0,
                    "entries outlive their port"
                );
                ledgers[id.index()] = None;
            }
            Op::SetPolicy(id, policy) => {
                let id = port(*id);
                let policy = policy.build();
                let before = forwarder.port(id).cloned();
                match forwarder.set_policy(id, policy.clone()) {
                    Ok(()) => {
                        assert_eq!(forwarder.port(id), Some(&policy));
                        ledgers[id.index()] = Some(StormLedger::new(now));
                    }
                    Err(_) => assert_eq!(
                        forwarder.port(id).cloned(),
                        before,
                        "a refused policy changed the port"
                    ),
                }
            }
            Op::Frame {
                ingress,
                src,
                dst,
                tag,
                cut,
                advance_ms,
            } => {
                now += Duration::from_millis(u64::from(*advance_ms % 3000));
                let ingress = port(*ingress);
                let bytes = frame_bytes(mac(*src), mac(*dst), tag, *cut);
                let in_policy = forwarder.port(ingress).cloned();
                let count_before = forwarder.fdb().port_count(ingress);
                let (verdict, _) = forwarder.decide(ingress, &bytes, now, &mut egress);
                assert_eq!(
                    verdict == Verdict::Forward,
                    !egress.is_empty(),
                    "{verdict:?} {egress:?}"
                );
                let Ok(view) = EthernetFrame::new_checked(&bytes[..]) else {
                    assert_eq!(verdict, Verdict::Drop(DropReason::Runt));
                    continue;
                };
                let Some(in_policy) = in_policy else {
                    assert_eq!(verdict, Verdict::Drop(DropReason::UnknownIngress));
                    continue;
                };
                if !in_policy.enabled {
                    assert_eq!(verdict, Verdict::Drop(DropReason::IngressDisabled));
                    continue;
                }
                if let Some(limit) = in_policy.security.mac_limit {
                    let count = forwarder.fdb().port_count(ingress);
                    assert!(
                        count <= count_before.max(limit as usize),
                        "port {ingress} went from {count_before} to {count} entries past its limit {limit}"
                    );
                }
                let outer = view.vlan();
                let Some(vlan) = in_policy.vlan.classify(outer) else {
                    assert_eq!(verdict, Verdict::Drop(DropReason::VlanNotAllowed));
                    continue;
                };
                let dot1q = outer.filter(|t| t.tpid == ETHERTYPE_VLAN).map(|t| t.vid);
                let dst = view.dst_addr();
                for pair in egress.windows(2) {
                    assert!(
                        pair[0].port < pair[1].port,
                        "egress not ascending: {egress:?}"
                    );
                }
                for out in &egress {
                    assert_ne!(
                        out.port, ingress,
                        "a frame went back out of its ingress port"
                    );
                    let out_policy = forwarder.port(out.port).expect("egress to a removed port");
                    assert!(out_policy.enabled, "egress to disabled port {}", out.port);
                    assert!(
                        !(in_policy.isolated && out_policy.isolated),
                        "isolated {ingress} reached isolated {}",
                        out.port
                    );
                    // Between tunnel ports only a known unicast: one egress, where the
                    // table has the destination. (The lookup after the decision sees what
                    // the decision's did: the source is learned before the lookup, and
                    // nothing can put the destination behind this port after it.)
                    if in_policy.split_horizon && out_policy.split_horizon {
                        assert!(
                            !dst.is_multicast()
                                && egress.len() == 1
                                && forwarder.fdb().lookup(vlan, dst, now) == Some(out.port),
                            "split-horizon {ingress} flooded into split-horizon {}: {egress:?}",
                            out.port
                        );
                    }
                    if dst.is_broadcast() {
                        assert!(out_policy.flood.broadcast);
                    } else if dst.is_multicast() {
                        assert!(out_policy.flood.multicast);
                    }
                    match out_policy.vlan.egress(vlan) {
                        None => panic!(
                            "VLAN {vlan} left on port {} ({:?})",
                            out.port, out_policy.vlan
                        ),
                        Some(Tagging::AsReceived) => assert_eq!(out.tag, TagAction::AsIs),
                        Some(Tagging::Tagged) => assert_eq!(wire_vid(dot1q, out.tag), Some(vlan)),
                        Some(Tagging::Untagged) => assert_eq!(wire_vid(dot1q, out.tag), None),
                    }
                }
                if verdict == Verdict::Forward {
                    let ledger = ledgers[ingress.index()]
                        .as_mut()
                        .expect("a port has a ledger");
                    let (count, rate) = if dst.is_broadcast() {
                        ledger.broadcast += 1;
                        (ledger.broadcast, in_policy.storm.broadcast_pps)
                    } else if dst.is_multicast() {
                        ledger.multicast += 1;
                        (ledger.multicast, in_policy.storm.multicast_pps)
                    } else {
                        (0, None)
                    };
                    if let Some(rate) = rate {
                        let allowed = bucket_allows(rate, ledger.since, now);
                        assert!(
                            count <= allowed,
                            "port {ingress}: {count} floods past a rate of {rate}/s ({allowed})"
                        );
                    }
                }
            }
            Op::AddStatic(vid, m, p) => {
                // As `fdb add` does: only for a port that exists.
                if forwarder.port(port(*p)).is_some() {
                    let _ = forwarder
                        .fdb_mut()
                        .add_static(vlan(*vid), mac(*m), port(*p));
                }
            }
            Op::RemoveStatic(vid, m) => {
                forwarder.fdb_mut().remove(vlan(*vid), mac(*m));
            }
            Op::Flush => {
                forwarder.fdb_mut().flush();
            }
            Op::FlushPort(p) => {
                forwarder.fdb_mut().flush_port_dynamic(port(*p));
                assert_eq!(forwarder.fdb().dynamic_count(port(*p)), 0);
            }
            Op::Expire(ms) => {
                now += Duration::from_millis(u64::from(*ms) * 10);
                forwarder.fdb_mut().expire(now);
            }
            Op::MacFlap(config) => {
                forwarder.set_mac_flap(config.map(|(moves, window, hold)| MacFlapConfig {
                    moves: u32::from(moves % 5) + 1,
                    window: Duration::from_millis(u64::from(window) + 1),
                    hold: Duration::from_secs(u64::from(hold % 20) + 1),
                }))
            }
        }
        let _ = forwarder.drain_events().count();
        assert!(
            forwarder.fdb().len() <= capacity,
            "the table outgrew its capacity"
        );
        for entry in forwarder.fdb().entries(now) {
            assert!(
                forwarder.port(entry.port).is_some(),
                "an entry points at removed port {}: {entry:?}",
                entry.port
            );
        }
    }
});
