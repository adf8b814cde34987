//! Per-port forwarding policy: VLAN membership, port security, storm control,
//! isolation and flood controls. A [`PortPolicy`] is validated as a whole
//! ([`PortPolicy::validate`]) before the forwarder takes it, so a control plane
//! can build a new policy, check it, and swap it in one step.
//!
//! Also the pure [`TokenBucket`] behind storm control: its state advances only by
//! the `now` it is given.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::fdb::VlanId;
use crate::wire::{ETHERTYPE_VLAN, MacAddr, VlanTag};

/// Lowest VLAN a port can carry (0 means "priority tag only" on the wire).
pub const MIN_VLAN: VlanId = 1;
/// Highest VLAN a port can carry (4095 is reserved).
pub const MAX_VLAN: VlanId = 4094;
/// The segment of ports without VLAN settings: every frame, tagged or not, as it is.
pub const TRANSPARENT_VLAN: VlanId = 0;

/// Errors in a port policy; each names the setting and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{setting}: VLAN {vlan} is outside {MIN_VLAN}..={MAX_VLAN}")]
    VlanOutOfRange { setting: &'static str, vlan: VlanId },
    #[error("trunk carries no VLAN: give allowed VLANs or a native VLAN")]
    EmptyTrunk,
    #[error("mac_limit: must be at least 1")]
    ZeroMacLimit,
    #[error("{setting}: rate must be at least 1 packet per second")]
    ZeroRate { setting: &'static str },
    #[error("allowed_macs: {mac} is not a unicast station address")]
    BadAllowedMac { mac: MacAddr },
}

/// A set of VLAN ids, one bit each: membership tests cost one load.
#[derive(Clone, PartialEq, Eq)]
pub struct VlanSet(Box<[u64; 64]>);

impl Default for VlanSet {
    fn default() -> Self {
        VlanSet(Box::new([0; 64]))
    }
}

impl VlanSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `vid`; ids above 4095 do not exist on the wire and are ignored.
    pub fn insert(&mut self, vid: VlanId) {
        if vid <= 4095 {
            let vid = usize::from(vid);
            self.0[vid / 64] |= 1 << (vid % 64);
        }
    }

    /// Whether `vid` is in the set.
    pub fn contains(&self, vid: VlanId) -> bool {
        let vid = usize::from(vid);
        vid <= 4095 && self.0[vid / 64] & (1 << (vid % 64)) != 0
    }

    /// True when no VLAN is in the set.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|word| *word == 0)
    }

    /// The members, ascending.
    pub fn iter(&self) -> impl Iterator<Item = VlanId> + '_ {
        (0..4096u16).filter(|vid| self.contains(*vid))
    }
}

impl FromIterator<VlanId> for VlanSet {
    fn from_iter<I: IntoIterator<Item = VlanId>>(iter: I) -> Self {
        let mut set = VlanSet::new();
        for vid in iter {
            set.insert(vid);
        }
        set
    }
}

impl fmt::Debug for VlanSet {
    /// Ranges, e.g. `{1, 10-20}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ranges: Vec<(VlanId, VlanId)> = Vec::new();
        for vid in self.iter() {
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == vid => *end = vid,
                _ => ranges.push((vid, vid)),
            }
        }
        let parts: Vec<String> = ranges
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        write!(f, "{{{}}}", parts.join(", "))
    }
}

/// How a port takes part in VLANs.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum VlanMode {
    /// No VLAN processing: every frame is switched on [`TRANSPARENT_VLAN`] with its tags
    /// untouched, among transparent ports only.
    #[default]
    Transparent,
    /// One VLAN, untagged on the wire; 802.1Q-tagged frames (other than priority tags)
    /// are not accepted.
    Access { vlan: VlanId },
    /// 802.1Q-tagged frames of the allowed VLANs; untagged frames belong to the native
    /// VLAN, which is sent untagged (and without one, untagged frames are dropped).
    Trunk {
        allowed: VlanSet,
        native: Option<VlanId>,
    },
}

/// As an operator reads it: `transparent`, `access 10`, `trunk {10, 20} native 1`.
impl fmt::Display for VlanMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VlanMode::Transparent => f.write_str("transparent"),
            VlanMode::Access { vlan } => write!(f, "access {vlan}"),
            VlanMode::Trunk { allowed, native } => {
                write!(f, "trunk {allowed:?}")?;
                match native {
                    Some(native) => write!(f, " native {native}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// How a port wants a frame of some VLAN on the wire.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Tagging {
    /// Exactly as received (transparent ports).
    AsReceived,
    /// Without an 802.1Q tag.
    Untagged,
    /// With an 802.1Q tag carrying the VLAN.
    Tagged,
}

impl VlanMode {
    /// The VLAN a frame whose outer tag is `outer` belongs to when received on this port,
    /// or `None` when the port does not carry it. Only an 802.1Q tag (TPID 0x8100) names a
    /// VLAN: an 802.1ad service tag is payload to this customer-VLAN switch, so such a
    /// frame counts as untagged. A tag with VID 0 is a priority tag: untagged too.
    pub fn classify(&self, outer: Option<VlanTag>) -> Option<VlanId> {
        let tagged_vid = outer
            .filter(|tag| tag.tpid == ETHERTYPE_VLAN && tag.vid != 0)
            .map(|tag| tag.vid);
        match (self, tagged_vid) {
            (VlanMode::Transparent, _) => Some(TRANSPARENT_VLAN),
            (VlanMode::Access { vlan }, None) => Some(*vlan),
            (VlanMode::Access { .. }, Some(_)) => None,
            (VlanMode::Trunk { native, .. }, None) => *native,
            (VlanMode::Trunk { allowed, native }, Some(vid)) => {
                (allowed.contains(vid) || *native == Some(vid)).then_some(vid)
            }
        }
    }

    /// How a frame of `vid` leaves this port, or `None` when the port does not carry it.
    pub fn egress(&self, vid: VlanId) -> Option<Tagging> {
        match self {
            VlanMode::Transparent => (vid == TRANSPARENT_VLAN).then_some(Tagging::AsReceived),
            VlanMode::Access { vlan } => (vid == *vlan).then_some(Tagging::Untagged),
            VlanMode::Trunk { native, .. } if *native == Some(vid) => Some(Tagging::Untagged),
            VlanMode::Trunk { allowed, .. } => {
                (vid != TRANSPARENT_VLAN && allowed.contains(vid)).then_some(Tagging::Tagged)
            }
        }
    }

    fn validate(&self) -> Result<(), PolicyError> {
        let check = |setting, vlan: VlanId| {
            if (MIN_VLAN..=MAX_VLAN).contains(&vlan) {
                Ok(())
            } else {
                Err(PolicyError::VlanOutOfRange { setting, vlan })
            }
        };
        match self {
            VlanMode::Transparent => Ok(()),
            VlanMode::Access { vlan } => check("vlan", *vlan),
            VlanMode::Trunk { allowed, native } => {
                if let Some(native) = native {
                    check("native_vlan", *native)?;
                }
                for vid in [0, 4095] {
                    if allowed.contains(vid) {
                        check("allowed_vlans", vid)?;
                    }
                }
                if allowed.is_empty() && native.is_none() {
                    return Err(PolicyError::EmptyTrunk);
                }
                Ok(())
            }
        }
    }
}

/// What a port does when a new source address would exceed its MAC limit.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum ViolationAction {
    /// Drop the frame (counted as `mac_limit`).
    #[default]
    Drop,
    /// Drop and log (at most one log line per port per second, with a count of the rest).
    DropLog,
    /// Drop, log, and disable the port until it is enabled again.
    Shutdown,
}

impl ViolationAction {
    /// The configuration spelling: `drop`, `drop+log`, `shutdown`.
    pub const fn name(self) -> &'static str {
        match self {
            ViolationAction::Drop => "drop",
            ViolationAction::DropLog => "drop+log",
            ViolationAction::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for ViolationAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ViolationAction {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "drop" => Ok(ViolationAction::Drop),
            "drop+log" => Ok(ViolationAction::DropLog),
            "shutdown" => Ok(ViolationAction::Shutdown),
            other => Err(format!(
                "unknown action {other:?}: expected \"drop\", \"drop+log\" or \"shutdown\""
            )),
        }
    }
}

impl Serialize for ViolationAction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ViolationAction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Which source addresses a port accepts and how many it may hold.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PortSecurity {
    /// Most MAC table entries (over all VLANs) pointing at this port.
    pub mac_limit: Option<u32>,
    /// What a violation of `mac_limit` does.
    pub violation: ViolationAction,
    /// Learned addresses never age out or move (they count towards `mac_limit`).
    pub sticky: bool,
    /// Anti-spoofing: when not empty, frames with any other source address are dropped.
    pub allowed_macs: Box<[MacAddr]>,
}

/// Ingress caps in packets per second; `None` is unlimited. Each bucket holds one
/// second's worth of packets, so a burst of up to the rate passes at once.
///
/// The default caps broadcast and unknown unicast (see [`DEFAULT_BROADCAST_PPS`],
/// [`DEFAULT_UNKNOWN_UNICAST_PPS`]): every flooded frame costs the switch one write per
/// other port, on the one thread that serves every port, so without a cap one port can
/// buy a share of the dataplane many times its own. Multicast is not capped by
/// default: a multicast stream (video, market data) may legitimately be fast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StormControl {
    pub broadcast_pps: Option<u32>,
    pub multicast_pps: Option<u32>,
    pub unknown_unicast_pps: Option<u32>,
}

/// Broadcasts per second a port may flood by default. Normal broadcast is ARP
/// requests (one per new neighbour, a few retries), DHCP (a handful per boot) and
/// the odd discovery protocol: a Linux host keeps at most 1,024 neighbours
/// (`gc_thresh3`), so even one that resolved its whole table anew every second
/// would stay under half of this. A VM booting sends tens.
pub const DEFAULT_BROADCAST_PPS: u32 = 2_000;

/// Unknown-unicast frames per second a port may flood by default. A destination is
/// unknown only until it sends once (its ARP reply, its SYN-ACK), or after it was
/// silent for the ageing time: a few thousand new flows per second to stations not
/// yet learned flood one or two frames each. Above this a port is sending to
/// addresses that never answer: a MAC flood or a scan.
pub const DEFAULT_UNKNOWN_UNICAST_PPS: u32 = 5_000;

impl StormControl {
    /// No caps at all.
    pub const UNLIMITED: StormControl = StormControl {
        broadcast_pps: None,
        multicast_pps: None,
        unknown_unicast_pps: None,
    };
}

impl Default for StormControl {
    fn default() -> Self {
        StormControl {
            broadcast_pps: Some(DEFAULT_BROADCAST_PPS),
            multicast_pps: None,
            unknown_unicast_pps: Some(DEFAULT_UNKNOWN_UNICAST_PPS),
        }
    }
}

/// Which floods a port receives (as egress). Known unicast is never affected.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FloodControl {
    pub unknown_unicast: bool,
    pub multicast: bool,
    pub broadcast: bool,
}

impl Default for FloodControl {
    fn default() -> Self {
        FloodControl {
            unknown_unicast: true,
            multicast: true,
            broadcast: true,
        }
    }
}

/// Per-port forwarding settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortPolicy {
    /// A disabled port neither receives nor sends frames.
    pub enabled: bool,
    pub vlan: VlanMode,
    pub security: PortSecurity,
    pub storm: StormControl,
    /// Isolated ports exchange frames only with non-isolated ones.
    pub isolated: bool,
    /// Split horizon (tunnel ports): a flood that arrived on such a port never
    /// leaves on another one, since every remote VTEP got its own copy from
    /// the sender (head-end replication); flooding it back would loop.
    pub split_horizon: bool,
    pub flood: FloodControl,
}

impl Default for PortPolicy {
    fn default() -> Self {
        PortPolicy {
            enabled: true,
            vlan: VlanMode::Transparent,
            security: PortSecurity::default(),
            storm: StormControl::default(),
            isolated: false,
            split_horizon: false,
            flood: FloodControl::default(),
        }
    }
}

impl PortPolicy {
    /// Checks the policy as a whole.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.vlan.validate()?;
        if self.security.mac_limit == Some(0) {
            return Err(PolicyError::ZeroMacLimit);
        }
        if let Some(&mac) = self
            .security
            .allowed_macs
            .iter()
            .find(|mac| !mac.is_unicast() || mac.is_zero())
        {
            return Err(PolicyError::BadAllowedMac { mac });
        }
        let rates = [
            ("storm_control.broadcast_pps", self.storm.broadcast_pps),
            ("storm_control.multicast_pps", self.storm.multicast_pps),
            (
                "storm_control.unknown_unicast_pps",
                self.storm.unknown_unicast_pps,
            ),
        ];
        for (setting, rate) in rates {
            if rate == Some(0) {
                return Err(PolicyError::ZeroRate { setting });
            }
        }
        Ok(())
    }
}

/// A token bucket refilled at `rate` tokens per second up to `rate` tokens. Pure: time
/// comes in as `now`, and a clock going backwards refills nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    rate: u32,
    tokens: u32,
    /// When the tokens were last counted; `None` until the first packet (full bucket).
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket of `rate` tokens per second (`rate` ≥ 1).
    pub fn new(rate: u32) -> Self {
        let rate = rate.max(1);
        TokenBucket {
            rate,
            tokens: rate,
            last: None,
        }
    }

    /// Tokens per second, and the most the bucket holds.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Tokens in the bucket as last counted (by [`TokenBucket::take`]).
    pub fn tokens(&self) -> u32 {
        self.tokens
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            false
        }
    }

    fn refill(&mut self, now: Instant) {
        let Some(last) = self.last else {
            self.last = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(last);
        let rate = u128::from(self.rate);
        // Whole tokens earned; the remainder of a token's time is kept by advancing
        // `last` only by the time those tokens took.
        let earned = elapsed.as_nanos() * rate / 1_000_000_000;
        if earned == 0 {
            return;
        }
        let room = u128::from(self.rate - self.tokens);
        if earned >= room {
            self.tokens = self.rate;
            self.last = Some(now);
        } else {
            self.tokens += earned as u32;
            let spent = earned * 1_000_000_000 / rate;
            self.last = Some(last + Duration::from_nanos(spent as u64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ETHERTYPE_QINQ;
    use proptest::prelude::*;

    fn tag(tpid: u16, vid: VlanId) -> Option<VlanTag> {
        Some(VlanTag {
            tpid,
            pcp: 0,
            dei: false,
            vid,
        })
    }

    fn trunk(allowed: &[VlanId], native: Option<VlanId>) -> VlanMode {
        VlanMode::Trunk {
            allowed: allowed.iter().copied().collect(),
            native,
        }
    }

    #[test]
    fn vlan_set_membership_and_debug() {
        let set: VlanSet = [1, 10, 11, 12, 4094].into_iter().collect();
        assert!(set.contains(10) && set.contains(4094) && !set.contains(13));
        assert_eq!(format!("{set:?}"), "{1, 10-12, 4094}");
        assert!(VlanSet::new().is_empty());
        assert_eq!(set.iter().count(), 5);
    }

    #[test]
    fn access_port_classification() {
        let access = VlanMode::Access { vlan: 10 };
        assert_eq!(access.classify(None), Some(10));
        assert_eq!(
            access.classify(tag(ETHERTYPE_VLAN, 0)),
            Some(10),
            "priority tag"
        );
        assert_eq!(access.classify(tag(ETHERTYPE_VLAN, 10)), None);
        assert_eq!(access.classify(tag(ETHERTYPE_QINQ, 20)), Some(10), "S-tag");
        assert_eq!(access.egress(10), Some(Tagging::Untagged));
        assert_eq!(access.egress(20), None);
    }

    #[test]
    fn trunk_port_classification() {
        let with_native = trunk(&[10, 20], Some(1));
        assert_eq!(with_native.classify(None), Some(1));
        assert_eq!(with_native.classify(tag(ETHERTYPE_VLAN, 20)), Some(20));
        assert_eq!(with_native.classify(tag(ETHERTYPE_VLAN, 1)), Some(1));
        assert_eq!(with_native.classify(tag(ETHERTYPE_VLAN, 30)), None);
        // An 802.1ad tag is never read as an 802.1Q VLAN.
        assert_eq!(with_native.classify(tag(ETHERTYPE_QINQ, 20)), Some(1));
        assert_eq!(with_native.egress(1), Some(Tagging::Untagged));
        assert_eq!(with_native.egress(20), Some(Tagging::Tagged));
        assert_eq!(with_native.egress(30), None);
        let no_native = trunk(&[10], None);
        assert_eq!(no_native.classify(None), None);
        assert_eq!(no_native.classify(tag(ETHERTYPE_QINQ, 10)), None);
        assert_eq!(no_native.classify(tag(ETHERTYPE_VLAN, 0)), None);
    }

    #[test]
    fn transparent_ports_carry_only_their_segment() {
        let transparent = VlanMode::Transparent;
        assert_eq!(transparent.classify(tag(ETHERTYPE_VLAN, 5)), Some(0));
        assert_eq!(transparent.egress(0), Some(Tagging::AsReceived));
        assert_eq!(transparent.egress(5), None);
        assert_eq!(trunk(&[5], None).egress(0), None);
    }

    #[test]
    fn validation_names_the_setting() {
        let mut policy = PortPolicy {
            vlan: VlanMode::Access { vlan: 4095 },
            ..PortPolicy::default()
        };
        assert_eq!(
            policy.validate().unwrap_err().to_string(),
            "vlan: VLAN 4095 is outside 1..=4094"
        );
        policy.vlan = trunk(&[], None);
        assert_eq!(policy.validate(), Err(PolicyError::EmptyTrunk));
        policy.vlan = trunk(&[0], Some(2));
        assert!(matches!(
            policy.validate(),
            Err(PolicyError::VlanOutOfRange {
                setting: "allowed_vlans",
                vlan: 0
            })
        ));
        policy.vlan = trunk(&[3], Some(0));
        assert!(policy.validate().is_err());
        policy.vlan = trunk(&[3], None);
        assert_eq!(policy.validate(), Ok(()));
        policy.security.mac_limit = Some(0);
        assert_eq!(policy.validate(), Err(PolicyError::ZeroMacLimit));
        policy.security.mac_limit = Some(1);
        policy.storm.multicast_pps = Some(0);
        assert_eq!(
            policy.validate().unwrap_err().to_string(),
            "storm_control.multicast_pps: rate must be at least 1 packet per second"
        );
        policy.storm.multicast_pps = None;
        policy.security.allowed_macs = Box::new([MacAddr::BROADCAST]);
        assert!(matches!(
            policy.validate(),
            Err(PolicyError::BadAllowedMac { .. })
        ));
    }

    #[test]
    fn violation_actions_parse() {
        for action in [
            ViolationAction::Drop,
            ViolationAction::DropLog,
            ViolationAction::Shutdown,
        ] {
            assert_eq!(action.name().parse::<ViolationAction>(), Ok(action));
        }
        assert!("block".parse::<ViolationAction>().is_err());
    }

    #[test]
    fn bucket_passes_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10);
        assert_eq!((0..100).filter(|_| bucket.take(t0)).count(), 10);
        assert!(!bucket.take(t0 + Duration::from_millis(99)));
        assert!(bucket.take(t0 + Duration::from_millis(100)));
        assert!(!bucket.take(t0 + Duration::from_millis(150)));
        // Fractions of a token are not lost between calls.
        assert!(bucket.take(t0 + Duration::from_millis(200)));
        // A long pause refills to the burst size, no more.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..100).filter(|_| bucket.take(later)).count(), 10);
    }

    proptest! {
        /// Over any schedule, a bucket passes at most `rate` (the burst) plus `rate`
        /// per second elapsed.
        #[test]
        fn bucket_never_exceeds_its_rate(
            rate in 1u32..2000,
            gaps_us in proptest::collection::vec(0u64..20_000, 1..2000),
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut bucket = TokenBucket::new(rate);
            let mut passed = 0u64;
            for gap in gaps_us {
                now += Duration::from_micros(gap);
                if bucket.take(now) {
                    passed += 1;
                }
                let elapsed = now.duration_since(t0).as_secs_f64();
                prop_assert!(passed as f64 <= f64::from(rate) * (1.0 + elapsed) + 1e-9);
            }
        }
    }
}
