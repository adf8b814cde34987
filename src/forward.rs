//! The forwarding decision for one frame: pure, no I/O, no clock reads.
//!
//! [`Forwarder::decide`] learns the source address, then picks the egress ports: the one
//! port a known unicast destination was learned on, or every other enabled port for
//! broadcast, multicast and unknown unicast (flooding). The ingress port is never an egress
//! port. For now every frame, tagged or not, is switched on VLAN key 0, as a Linux bridge
//! without VLAN filtering does.

use std::time::Instant;

use crate::fdb::{Fdb, FdbConfig, Learned, PortId, VlanId};
use crate::wire::EthernetFrame;

/// Highest number of port slots: port ids index a `Vec`.
pub const MAX_PORTS: usize = 4096;

/// The segment every frame is switched on until per-VLAN forwarding exists.
const TRANSPARENT_VLAN: VlanId = 0;

/// Per-port forwarding settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortPolicy {
    /// A disabled port neither receives nor sends frames.
    pub enabled: bool,
}

impl Default for PortPolicy {
    fn default() -> Self {
        PortPolicy { enabled: true }
    }
}

/// Why a frame was not forwarded.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than its Ethernet header.
    Runt,
    /// Arrived on a port the forwarder does not know.
    UnknownIngress,
    /// Arrived on a disabled port.
    IngressDisabled,
    /// The destination was learned on the ingress port: it already heard the frame.
    SameSegment,
    /// The destination is pinned (static entry) to a disabled port.
    EgressDisabled,
    /// A flood with no other enabled port to go to.
    NoEgress,
    // The reasons below are decided at the dataplane's edge (they depend on the
    // vnet header and on I/O results) but share the counters.
    /// Longer than the port's MTU allows and not an offload super-frame.
    Oversize,
    /// A super-frame that software segmentation cannot fit to a port without
    /// offloads: its MTU leaves no room for payload behind the headers, or is
    /// below the size of UDP datagrams (which must not be re-cut).
    NeedsOffload,
    /// The vnet header does not describe its frame (see `vnet::VnetError`).
    BadVnetHeader,
    /// The egress TAP's queue was full.
    TxQueueFull,
    /// The egress TAP refused the frame (e.g. an inconsistent vnet header).
    TxRejected,
    /// Writing failed because the egress device went away.
    TxError,
}

impl DropReason {
    /// Number of reasons, for `[u64; DropReason::COUNT]` counters.
    pub const COUNT: usize = 12;

    /// Every reason, in [`Self::index`] order.
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Runt,
        DropReason::UnknownIngress,
        DropReason::IngressDisabled,
        DropReason::SameSegment,
        DropReason::EgressDisabled,
        DropReason::NoEgress,
        DropReason::Oversize,
        DropReason::NeedsOffload,
        DropReason::BadVnetHeader,
        DropReason::TxQueueFull,
        DropReason::TxRejected,
        DropReason::TxError,
    ];

    /// Stable snake_case name, used as a counter label.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::UnknownIngress => "unknown_ingress",
            DropReason::IngressDisabled => "ingress_disabled",
            DropReason::SameSegment => "same_segment",
            DropReason::EgressDisabled => "egress_disabled",
            DropReason::NoEgress => "no_egress",
            DropReason::Oversize => "oversize",
            DropReason::NeedsOffload => "needs_offload",
            DropReason::BadVnetHeader => "bad_vnet_header",
            DropReason::TxQueueFull => "tx_queue_full",
            DropReason::TxRejected => "tx_rejected",
            DropReason::TxError => "tx_error",
        }
    }

    /// Position in [`Self::ALL`] and in counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// What to do with a frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it to the ports written into the egress list.
    Forward,
    /// Drop it; the egress list is empty.
    Drop(DropReason),
}

/// Errors from configuring ports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// Port ids are slots in a vector and must stay small.
    #[error("port id {port} is out of range: at most {MAX_PORTS} ports are supported")]
    PortOutOfRange { port: PortId },
    /// `add_port` on an id already in use.
    #[error("port {port} already exists")]
    PortExists { port: PortId },
    /// An operation named a port that was never added, or was removed.
    #[error("port {port} does not exist")]
    UnknownPort { port: PortId },
}

/// The switching logic: ports, their policies and the MAC table.
#[derive(Debug)]
pub struct Forwarder {
    fdb: Fdb,
    ports: Vec<Option<PortPolicy>>,
}

impl Forwarder {
    /// A forwarder with no ports and an empty table.
    pub fn new(config: FdbConfig) -> Forwarder {
        Forwarder {
            fdb: Fdb::new(config),
            ports: Vec::new(),
        }
    }

    /// Adds port `id` with `policy`.
    pub fn add_port(&mut self, id: PortId, policy: PortPolicy) -> Result<(), ForwardError> {
        if id.index() >= MAX_PORTS {
            return Err(ForwardError::PortOutOfRange { port: id });
        }
        if self.ports.len() <= id.index() {
            self.ports.resize(id.index() + 1, None);
        }
        let slot = &mut self.ports[id.index()];
        if slot.is_some() {
            return Err(ForwardError::PortExists { port: id });
        }
        *slot = Some(policy);
        Ok(())
    }

    /// Removes port `id` and every FDB entry pointing at it; returns its policy.
    pub fn remove_port(&mut self, id: PortId) -> Result<PortPolicy, ForwardError> {
        let policy = self
            .ports
            .get_mut(id.index())
            .and_then(Option::take)
            .ok_or(ForwardError::UnknownPort { port: id })?;
        self.fdb.flush_port(id);
        Ok(policy)
    }

    /// Replaces the policy of port `id`. Disabling a port forgets what was learned on it,
    /// as a Linux bridge does, so its stations are flooded to until heard again.
    pub fn set_policy(&mut self, id: PortId, policy: PortPolicy) -> Result<(), ForwardError> {
        let slot = self
            .ports
            .get_mut(id.index())
            .and_then(Option::as_mut)
            .ok_or(ForwardError::UnknownPort { port: id })?;
        let disabling = slot.enabled && !policy.enabled;
        *slot = policy;
        if disabling {
            self.fdb.flush_port_dynamic(id);
        }
        Ok(())
    }

    /// The policy of port `id`, if it exists.
    pub fn port(&self, id: PortId) -> Option<&PortPolicy> {
        self.ports.get(id.index()).and_then(Option::as_ref)
    }

    /// Ids of the existing ports, ascending.
    pub fn port_ids(&self) -> impl Iterator<Item = PortId> + '_ {
        self.ports
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.is_some())
            .map(|(index, _)| PortId(index as u32))
    }

    /// The MAC table.
    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// The MAC table, for static entries, flushes and periodic expiry.
    pub fn fdb_mut(&mut self) -> &mut Fdb {
        &mut self.fdb
    }

    /// Decides where `frame`, received on `ingress` at `now`, goes.
    ///
    /// `egress` is cleared and filled with the egress ports in ascending order; the caller
    /// reuses it across frames so that deciding allocates nothing. Also returns what
    /// learning the source address did ([`Learned::Ignored`] when the frame was dropped
    /// before learning), so the caller can count and log station moves.
    pub fn decide(
        &mut self,
        ingress: PortId,
        frame: &[u8],
        now: Instant,
        egress: &mut Vec<PortId>,
    ) -> (Verdict, Learned) {
        egress.clear();
        let Ok(frame) = EthernetFrame::new_checked(frame) else {
            return (Verdict::Drop(DropReason::Runt), Learned::Ignored);
        };
        match self.port(ingress) {
            None => return (Verdict::Drop(DropReason::UnknownIngress), Learned::Ignored),
            Some(policy) if !policy.enabled => {
                return (Verdict::Drop(DropReason::IngressDisabled), Learned::Ignored);
            }
            Some(_) => {}
        }

        let learned = self
            .fdb
            .learn(TRANSPARENT_VLAN, frame.src_addr(), ingress, now);

        let destination = frame.dst_addr();
        let known = if destination.is_multicast() {
            None
        } else {
            self.fdb.lookup(TRANSPARENT_VLAN, destination, now)
        };
        let verdict = match known {
            Some(port) if port == ingress => Verdict::Drop(DropReason::SameSegment),
            // Only a static entry can point at a disabled or removed port: disabling and
            // removing flush the dynamic ones.
            Some(port) if !self.is_enabled(port) => Verdict::Drop(DropReason::EgressDisabled),
            Some(port) => {
                egress.push(port);
                Verdict::Forward
            }
            None => {
                egress.extend(
                    self.ports
                        .iter()
                        .enumerate()
                        .filter(|(index, slot)| {
                            *index != ingress.index()
                                && slot.as_ref().is_some_and(|policy| policy.enabled)
                        })
                        .map(|(index, _)| PortId(index as u32)),
                );
                if egress.is_empty() {
                    Verdict::Drop(DropReason::NoEgress)
                } else {
                    Verdict::Forward
                }
            }
        };
        (verdict, learned)
    }

    fn is_enabled(&self, id: PortId) -> bool {
        self.port(id).is_some_and(|policy| policy.enabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MacAddr;
    use proptest::prelude::*;
    use std::time::Duration;

    const P0: PortId = PortId(0);
    const P1: PortId = PortId(1);
    const P2: PortId = PortId(2);
    const P3: PortId = PortId(3);

    fn host(n: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, n])
    }

    /// A minimal untagged IPv4 frame header plus two payload bytes.
    fn frame(src: MacAddr, dst: MacAddr) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(16);
        bytes.extend_from_slice(&dst.0);
        bytes.extend_from_slice(&src.0);
        bytes.extend_from_slice(&[0x08, 0x00, 0x45, 0x00]);
        bytes
    }

    fn forwarder(ports: &[PortId]) -> Forwarder {
        let mut forwarder = Forwarder::new(FdbConfig::default());
        for &port in ports {
            forwarder.add_port(port, PortPolicy::default()).unwrap();
        }
        forwarder
    }

    #[test]
    fn drop_reason_tables_agree() {
        for (position, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), position);
        }
        let names: std::collections::HashSet<_> =
            DropReason::ALL.iter().map(|reason| reason.name()).collect();
        assert_eq!(names.len(), DropReason::COUNT);
        assert_eq!(DropReason::SameSegment.name(), "same_segment");
    }

    #[test]
    fn unknown_unicast_floods_then_reply_is_unicast() {
        let now = Instant::now();
        let mut forwarder = forwarder(&[P0, P1, P2, P3]);
        let mut egress = Vec::new();
        let (verdict, learned) = forwarder.decide(P1, &frame(host(1), host(2)), now, &mut egress);
        assert_eq!((verdict, learned), (Verdict::Forward, Learned::New));
        assert_eq!(egress, vec![P0, P2, P3]);
        let (verdict, _) = forwarder.decide(P3, &frame(host(2), host(1)), now, &mut egress);
        assert_eq!(verdict, Verdict::Forward);
        assert_eq!(egress, vec![P1]);
        forwarder.decide(P1, &frame(host(1), host(2)), now, &mut egress);
        assert_eq!(egress, vec![P3]);
    }

    #[test]
    fn broadcast_and_multicast_always_flood() {
        let now = Instant::now();
        let mut forwarder = forwarder(&[P0, P1, P2]);
        let mut egress = Vec::new();
        for destination in [MacAddr::BROADCAST, MacAddr([0x01, 0x00, 0x5e, 0, 0, 0xfb])] {
            let (verdict, _) = forwarder.decide(P2, &frame(host(1), destination), now, &mut egress);
            assert_eq!(verdict, Verdict::Forward);
            assert_eq!(egress, vec![P0, P1]);
        }
    }

    #[test]
    fn tagged_frames_are_switched_transparently() {
        let now = Instant::now();
        let mut forwarder = forwarder(&[P0, P1, P2]);
        let mut egress = Vec::new();
        forwarder.decide(P0, &frame(host(1), MacAddr::BROADCAST), now, &mut egress);
        let mut tagged = frame(host(2), host(1));
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x64]);
        let (verdict, learned) = forwarder.decide(P2, &tagged, now, &mut egress);
        assert_eq!((verdict, learned), (Verdict::Forward, Learned::New));
        assert_eq!(egress, vec![P0]);
        assert_eq!(forwarder.fdb().lookup(0, host(2), now), Some(P2));
    }

    #[test]
    fn drops_with_reasons() {
        let now = Instant::now();
        let mut forwarder = forwarder(&[P0, P1]);
        let mut egress = vec![P3];
        let short = &frame(host(1), host(2))[..13];
        assert_eq!(
            forwarder.decide(P0, short, now, &mut egress).0,
            Verdict::Drop(DropReason::Runt)
        );
        assert!(egress.is_empty(), "egress is cleared on every decision");
        let mut tagged_runt = frame(host(1), host(2));
        tagged_runt[12..14].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(
            forwarder.decide(P0, &tagged_runt[..16], now, &mut egress).0,
            Verdict::Drop(DropReason::Runt)
        );
        assert_eq!(
            forwarder.decide(P2, &frame(host(1), host(2)), now, &mut egress),
            (Verdict::Drop(DropReason::UnknownIngress), Learned::Ignored)
        );
        assert!(
            forwarder.fdb().is_empty(),
            "nothing learned from dropped frames"
        );

        // Both hosts on P0: their traffic stays on that segment.
        forwarder.decide(P0, &frame(host(1), host(2)), now, &mut egress);
        assert_eq!(
            forwarder
                .decide(P0, &frame(host(2), host(1)), now, &mut egress)
                .0,
            Verdict::Drop(DropReason::SameSegment)
        );
        assert!(egress.is_empty());

        forwarder
            .set_policy(P1, PortPolicy { enabled: false })
            .unwrap();
        assert_eq!(
            forwarder.decide(P1, &frame(host(3), host(1)), now, &mut egress),
            (Verdict::Drop(DropReason::IngressDisabled), Learned::Ignored)
        );
        assert_eq!(
            forwarder
                .decide(P0, &frame(host(1), host(9)), now, &mut egress)
                .0,
            Verdict::Drop(DropReason::NoEgress)
        );
    }

    #[test]
    fn static_entry_on_disabled_port_drops() {
        let now = Instant::now();
        let mut forwarder = forwarder(&[P0, P1, P2]);
        forwarder.fdb_mut().add_static(0, host(5), P1).unwrap();
        forwarder
            .set_policy(P1, PortPolicy { enabled: false })
            .unwrap();
        let mut egress = Vec::new();
        assert_eq!(
            forwarder
                .decide(P0, &frame(host(1), host(5)), now, &mut egress)
                .0,
            Verdict::Drop(DropReason::EgressDisabled)
        );
        assert!(egress.is_empty());
    }

    #[test]
    fn disabling_a_port_forgets_its_stations() {
        let now = Instant::now();
        let mut forwarder = forwarder(&[P0, P1, P2]);
        let mut egress = Vec::new();
        forwarder.decide(P1, &frame(host(1), MacAddr::BROADCAST), now, &mut egress);
        forwarder
            .set_policy(P1, PortPolicy { enabled: false })
            .unwrap();
        assert_eq!(forwarder.fdb().lookup(0, host(1), now), None);
        forwarder.decide(P0, &frame(host(2), host(1)), now, &mut egress);
        assert_eq!(egress, vec![P2]);
    }

    #[test]
    fn port_management() {
        let now = Instant::now();
        let mut forwarder = forwarder(&[P0, P2]);
        assert_eq!(
            forwarder.add_port(P0, PortPolicy::default()),
            Err(ForwardError::PortExists { port: P0 })
        );
        assert_eq!(
            forwarder.add_port(PortId(MAX_PORTS as u32), PortPolicy::default()),
            Err(ForwardError::PortOutOfRange {
                port: PortId(MAX_PORTS as u32)
            })
        );
        assert_eq!(
            forwarder
                .set_policy(P1, PortPolicy::default())
                .unwrap_err()
                .to_string(),
            "port 1 does not exist"
        );
        assert_eq!(forwarder.port_ids().collect::<Vec<_>>(), vec![P0, P2]);
        let mut egress = Vec::new();
        forwarder.decide(P2, &frame(host(1), MacAddr::BROADCAST), now, &mut egress);
        forwarder.fdb_mut().add_static(0, host(7), P2).unwrap();
        assert_eq!(forwarder.remove_port(P2), Ok(PortPolicy::default()));
        assert!(
            forwarder.fdb().is_empty(),
            "removing a port flushes its entries"
        );
        assert_eq!(
            forwarder.remove_port(P2),
            Err(ForwardError::UnknownPort { port: P2 })
        );
        assert_eq!(forwarder.port(P2), None);
        forwarder.add_port(P2, PortPolicy::default()).unwrap();
        assert!(forwarder.port(P2).is_some_and(|policy| policy.enabled));
    }

    #[test]
    fn moves_are_reported() {
        let now = Instant::now();
        let mut forwarder = forwarder(&[P0, P1]);
        let mut egress = Vec::new();
        forwarder.decide(P0, &frame(host(1), MacAddr::BROADCAST), now, &mut egress);
        let (_, learned) =
            forwarder.decide(P1, &frame(host(1), MacAddr::BROADCAST), now, &mut egress);
        assert_eq!(learned, Learned::Moved { from: P0 });
    }

    #[test]
    fn entries_age_out_and_destination_is_flooded_again() {
        let t0 = Instant::now();
        let mut forwarder = Forwarder::new(FdbConfig {
            ageing: Duration::from_secs(10),
            capacity: 16,
        });
        for port in [P0, P1, P2] {
            forwarder.add_port(port, PortPolicy::default()).unwrap();
        }
        let mut egress = Vec::new();
        forwarder.decide(P1, &frame(host(1), MacAddr::BROADCAST), t0, &mut egress);
        forwarder.decide(P0, &frame(host(2), host(1)), t0, &mut egress);
        assert_eq!(egress, vec![P1]);
        let later = t0 + Duration::from_secs(10);
        forwarder.decide(P0, &frame(host(2), host(1)), later, &mut egress);
        assert_eq!(egress, vec![P1, P2]);
    }

    #[derive(Clone, Debug)]
    enum Step {
        Frame {
            ingress: u32,
            src: u8,
            dst: u8,
            advance_ms: u64,
        },
        Disable {
            port: u32,
        },
        Enable {
            port: u32,
        },
        Remove {
            port: u32,
        },
        Add {
            port: u32,
        },
    }

    /// Small address pools so that sources and destinations collide; 0xff and 0x01
    /// stand for broadcast and a multicast group, 0 for the zero address.
    fn address(n: u8) -> MacAddr {
        match n {
            0 => MacAddr::ZERO,
            1 => MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]),
            0xff => MacAddr::BROADCAST,
            n => host(n),
        }
    }

    fn step() -> impl Strategy<Value = Step> {
        let addr = prop_oneof![8 => 2u8..16, 1 => Just(0u8), 1 => Just(1u8), 1 => Just(0xffu8)];
        prop_oneof![
            30 => (0..8u32, addr.clone(), addr, 0..2000u64).prop_map(
                |(ingress, src, dst, advance_ms)| Step::Frame { ingress, src, dst, advance_ms }
            ),
            1 => (0..8u32).prop_map(|port| Step::Disable { port }),
            1 => (0..8u32).prop_map(|port| Step::Enable { port }),
            1 => (0..8u32).prop_map(|port| Step::Remove { port }),
            1 => (0..8u32).prop_map(|port| Step::Add { port }),
        ]
    }

    proptest! {
        /// Whatever the traffic and port churn: the ingress port is never an egress port,
        /// egress holds only existing enabled ports, ascending and without repeats, and
        /// the table stays within its cap.
        #[test]
        fn egress_is_always_sane(
            initial_ports in proptest::collection::btree_set(0..8u32, 0..8),
            capacity in 0usize..10,
            steps in proptest::collection::vec(step(), 1..200),
        ) {
            let mut now = Instant::now();
            let mut forwarder = Forwarder::new(FdbConfig { ageing: Duration::from_secs(5), capacity });
            for &port in &initial_ports {
                forwarder.add_port(PortId(port), PortPolicy::default()).unwrap();
            }
            let mut egress = Vec::new();
            for step in steps {
                match step {
                    Step::Frame { ingress, src, dst, advance_ms } => {
                        now += Duration::from_millis(advance_ms);
                        let ingress = PortId(ingress);
                        let bytes = frame(address(src), address(dst));
                        let (verdict, _) = forwarder.decide(ingress, &bytes, now, &mut egress);
                        prop_assert!(!egress.contains(&ingress));
                        prop_assert!(egress.windows(2).all(|pair| pair[0] < pair[1]));
                        for &port in &egress {
                            prop_assert!(forwarder.port(port).is_some_and(|p| p.enabled), "{port} in {egress:?}");
                        }
                        prop_assert_eq!(verdict == Verdict::Forward, !egress.is_empty());
                        let ingress_enabled = forwarder.port(ingress).is_some_and(|p| p.enabled);
                        if !ingress_enabled {
                            prop_assert!(matches!(verdict, Verdict::Drop(DropReason::UnknownIngress | DropReason::IngressDisabled)));
                        }
                    }
                    Step::Disable { port } => {
                        let _ = forwarder.set_policy(PortId(port), PortPolicy { enabled: false });
                    }
                    Step::Enable { port } => {
                        let _ = forwarder.set_policy(PortId(port), PortPolicy { enabled: true });
                    }
                    Step::Remove { port } => {
                        let _ = forwarder.remove_port(PortId(port));
                        prop_assert_eq!(forwarder.fdb().dynamic_count(PortId(port)), 0);
                    }
                    Step::Add { port } => {
                        let _ = forwarder.add_port(PortId(port), PortPolicy::default());
                    }
                }
                prop_assert!(forwarder.fdb().len() <= capacity);
            }
        }

        /// After A sends to x and x answers from another port, traffic to A goes to A's
        /// port only, whatever came before.
        #[test]
        fn reply_reaches_only_the_sender(
            ports in proptest::collection::btree_set(0..8u32, 2..8),
            history in proptest::collection::vec((0..8u32, 2u8..16, 2u8..16), 0..100),
            pick in (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
            a in 2u8..16,
            x in 2u8..16,
        ) {
            prop_assume!(a != x);
            let ports: Vec<PortId> = ports.into_iter().map(PortId).collect();
            let port_a = ports[pick.0.index(ports.len())];
            let port_x = ports[pick.1.index(ports.len())];
            prop_assume!(port_a != port_x);
            let now = Instant::now();
            let mut forwarder = forwarder(&ports);
            let mut egress = Vec::new();
            for (ingress, src, dst) in history {
                forwarder.decide(PortId(ingress), &frame(host(src), host(dst)), now, &mut egress);
            }
            forwarder.decide(port_a, &frame(host(a), host(x)), now, &mut egress);
            let (verdict, _) = forwarder.decide(port_x, &frame(host(x), host(a)), now, &mut egress);
            prop_assert_eq!(verdict, Verdict::Forward);
            prop_assert_eq!(&egress, &vec![port_a]);
        }

        /// Flood sets are exactly the other enabled ports.
        #[test]
        fn floods_reach_every_other_enabled_port(
            ports in proptest::collection::btree_map(0..16u32, any::<bool>(), 1..16),
            ingress_pick in any::<prop::sample::Index>(),
        ) {
            let now = Instant::now();
            let mut forwarder = Forwarder::new(FdbConfig::default());
            for (&port, &enabled) in &ports {
                forwarder.add_port(PortId(port), PortPolicy { enabled }).unwrap();
            }
            let enabled: Vec<PortId> = ports.iter().filter(|(_, on)| **on).map(|(p, _)| PortId(*p)).collect();
            prop_assume!(!enabled.is_empty());
            let ingress = enabled[ingress_pick.index(enabled.len())];
            let mut egress = Vec::new();
            let (verdict, _) = forwarder.decide(ingress, &frame(host(1), MacAddr::BROADCAST), now, &mut egress);
            let expected: Vec<PortId> = enabled.iter().copied().filter(|&p| p != ingress).collect();
            prop_assert_eq!(&egress, &expected);
            let expected_verdict = if expected.is_empty() { Verdict::Drop(DropReason::NoEgress) } else { Verdict::Forward };
            prop_assert_eq!(verdict, expected_verdict);
        }
    }

    /// Through the forwarder: a port flooding random sources leaves a quieter
    /// neighbour's stations reachable.
    #[test]
    fn flooding_port_does_not_evict_neighbours() {
        let now = Instant::now();
        let mut forwarder = Forwarder::new(FdbConfig {
            ageing: Duration::from_secs(300),
            capacity: 64,
        });
        for port in [P0, P1, P2] {
            forwarder.add_port(port, PortPolicy::default()).unwrap();
        }
        let mut egress = Vec::new();
        for n in 2..12 {
            forwarder.decide(P1, &frame(host(n), MacAddr::BROADCAST), now, &mut egress);
        }
        for n in 0..5000u32 {
            let [_, b, c, d] = n.to_be_bytes();
            let source = MacAddr([0x06, 0xee, 0, b, c, d]);
            forwarder.decide(P0, &frame(source, MacAddr::BROADCAST), now, &mut egress);
        }
        assert_eq!(forwarder.fdb().len(), 64);
        assert_eq!(forwarder.fdb().counters().evicted, 5000 - 54);
        for n in 2..12 {
            forwarder.decide(P2, &frame(host(100), host(n)), now, &mut egress);
            assert_eq!(egress, vec![P1], "station {n}");
        }
    }

    #[test]
    fn zero_source_is_forwarded_but_not_learned() {
        let now = Instant::now();
        let mut forwarder = forwarder(&[P0, P1]);
        let mut egress = Vec::new();
        let (verdict, learned) =
            forwarder.decide(P0, &frame(MacAddr::ZERO, host(2)), now, &mut egress);
        assert_eq!((verdict, learned), (Verdict::Forward, Learned::Ignored));
        assert!(forwarder.fdb().is_empty());
    }
}
