//! What the EVPN agent decides, as pure state: local MAC changes and remote best paths in,
//! route and dataplane actions out. No I/O, so every rule here is unit- and property-tested;
//! the thread that talks to gobgpd and to the dataplane only carries the actions out.
//!
//! Rules:
//! - every VNI of a vxlan port is advertised once as a type-3 route (ingress replication);
//! - every MAC learned locally on such a VNI is advertised as a type-2 route, and withdrawn
//!   when the dataplane forgets it (age-out, port removal) or it moves behind a remote VTEP;
//! - MAC mobility (RFC 7432 §15): a MAC learned locally while a remote VTEP advertises it is
//!   advertised with that route's sequence number + 1, so every VTEP prefers the new place;
//!   a remote route for a MAC advertised here wins only with a higher sequence number (or the
//!   same one from a lower VTEP address, the RFC's tie-break);
//! - remote routes are imported when their route target is `ASN:VNI` of a local VNI; our own
//!   routes (next hop = our VTEP) are ignored; remote MACs never age by data-plane timers —
//!   they go when their route is withdrawn;
//! - a VNI's flood list is the set of remote VTEPs with a type-3 route for it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use crate::route::{EvpnRoute, MacRoute, MulticastRoute, RouteTarget};

/// A MAC on a VNI: the key of the EVPN MAC table.
pub type VniMac = (u32, [u8; 6]);

/// What the agent is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvpnSettings {
    pub asn: u16,
    /// This host's VTEP address: the next hop of every route it originates.
    pub vtep: Ipv4Addr,
    pub vnis: BTreeSet<u32>,
}

/// A change of the local MAC table, as the dataplane reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalChange {
    /// Learned on (or moved between) local ports of the VNI.
    Learned { vni: u32, mac: [u8; 6] },
    /// Aged out, flushed, or its port went away.
    Forgotten { vni: u32, mac: [u8; 6] },
}

/// What the agent wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Add (or replace) a route in gobgpd.
    Advertise(EvpnRoute),
    /// Withdraw a route from gobgpd.
    Withdraw(EvpnRoute),
    /// Program "MAC on VNI is behind VTEP" into the dataplane (replacing any entry).
    InstallRemoteMac {
        vni: u32,
        mac: [u8; 6],
        vtep: Ipv4Addr,
    },
    /// Remove the remote entry of a MAC from the dataplane.
    RemoveRemoteMac { vni: u32, mac: [u8; 6] },
    /// Replace a VNI's flood list (head-end replication targets).
    SetFloodList { vni: u32, vteps: Vec<Ipv4Addr> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RemoteMac {
    vtep: Ipv4Addr,
    seq: u32,
}

/// The agent's view: what it advertises and what it imported.
#[derive(Clone, Debug)]
pub struct EvpnState {
    settings: EvpnSettings,
    /// Local MACs advertised, with the sequence number they were advertised with.
    local: HashMap<VniMac, u32>,
    /// The best remote route per MAC (kept while a local advertisement wins, so a later
    /// local forget can fall back to it).
    remote: HashMap<VniMac, RemoteMac>,
    /// Remote VTEPs with a type-3 route, per VNI.
    flood: BTreeMap<u32, BTreeSet<Ipv4Addr>>,
}

impl EvpnState {
    pub fn new(settings: EvpnSettings) -> EvpnState {
        EvpnState {
            settings,
            local: HashMap::new(),
            remote: HashMap::new(),
            flood: BTreeMap::new(),
        }
    }

    pub fn settings(&self) -> &EvpnSettings {
        &self.settings
    }

    fn targets(&self, vni: u32) -> Vec<RouteTarget> {
        vec![RouteTarget::auto(self.settings.asn, vni)]
    }

    fn mac_route(&self, (vni, mac): VniMac, seq: u32) -> EvpnRoute {
        EvpnRoute::Mac(MacRoute {
            vni,
            mac,
            ip: None,
            vtep: self.settings.vtep,
            rd: None,
            route_targets: self.targets(vni),
            // Sequence 0 is sent without the community, as FRR does.
            mobility_seq: (seq > 0).then_some(seq),
        })
    }

    fn multicast_route(&self, vni: u32) -> EvpnRoute {
        EvpnRoute::Multicast(MulticastRoute {
            vni,
            vtep: self.settings.vtep,
            rd: None,
            route_targets: self.targets(vni),
        })
    }

    /// Every route this host should have in gobgpd now: one type-3 per VNI, one type-2 per
    /// local MAC. On (re)connect the agent adds these and withdraws any other of its own.
    pub fn originated(&self) -> Vec<EvpnRoute> {
        let mut routes: Vec<EvpnRoute> = self
            .settings
            .vnis
            .iter()
            .map(|&vni| self.multicast_route(vni))
            .collect();
        let mut local: Vec<_> = self.local.iter().collect();
        local.sort();
        routes.extend(
            local
                .into_iter()
                .map(|(&key, &seq)| self.mac_route(key, seq)),
        );
        routes
    }

    /// The remote MAC entries the dataplane should hold, sorted.
    pub fn remote_macs(&self) -> Vec<(u32, [u8; 6], Ipv4Addr)> {
        let mut macs: Vec<_> = self
            .remote
            .iter()
            .filter(|(key, _)| !self.local.contains_key(key))
            .map(|(&(vni, mac), remote)| (vni, mac, remote.vtep))
            .collect();
        macs.sort();
        macs
    }

    /// A VNI's flood list.
    pub fn flood_list(&self, vni: u32) -> Vec<Ipv4Addr> {
        self.flood
            .get(&vni)
            .map(|vteps| vteps.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Counts for `evpn status`, per local VNI: (local MACs, remote MACs in the dataplane).
    /// One pass over the tables, so a status refresh costs O(MACs), not O(MACs × VNIs).
    pub fn mac_counts(&self) -> BTreeMap<u32, (usize, usize)> {
        let mut counts: BTreeMap<u32, (usize, usize)> = self
            .settings
            .vnis
            .iter()
            .map(|&vni| (vni, (0, 0)))
            .collect();
        for (vni, _) in self.local.keys() {
            if let Some(count) = counts.get_mut(vni) {
                count.0 += 1;
            }
        }
        for key in self.remote.keys() {
            if let Some(count) = counts.get_mut(&key.0)
                && !self.local.contains_key(key)
            {
                count.1 += 1;
            }
        }
        counts
    }

    /// After reading gobgpd's table afresh (a new session): forgets the remote MACs and
    /// flood-list members it no longer has, which went away while we were not watching.
    pub fn retain_remote(
        &mut self,
        macs: &BTreeSet<VniMac>,
        members: &BTreeSet<(u32, Ipv4Addr)>,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut gone: Vec<VniMac> = self
            .remote
            .keys()
            .filter(|key| !macs.contains(key))
            .copied()
            .collect();
        gone.sort();
        for key in gone {
            self.remote.remove(&key);
            if !self.local.contains_key(&key) {
                actions.push(Action::RemoveRemoteMac {
                    vni: key.0,
                    mac: key.1,
                });
            }
        }
        for (&vni, vteps) in &mut self.flood {
            let before = vteps.len();
            vteps.retain(|&vtep| members.contains(&(vni, vtep)));
            if vteps.len() != before {
                actions.push(Action::SetFloodList {
                    vni,
                    vteps: vteps.iter().copied().collect(),
                });
            }
        }
        actions
    }

    /// A change of the local MAC table.
    pub fn local_change(&mut self, change: LocalChange) -> Vec<Action> {
        match change {
            LocalChange::Learned { vni, mac } => {
                if !self.settings.vnis.contains(&vni) || self.local.contains_key(&(vni, mac)) {
                    return Vec::new();
                }
                // Learned here while a remote VTEP advertises it: the MAC moved here.
                let seq = self
                    .remote
                    .get(&(vni, mac))
                    .map_or(0, |remote| remote.seq.saturating_add(1));
                self.local.insert((vni, mac), seq);
                vec![Action::Advertise(self.mac_route((vni, mac), seq))]
            }
            LocalChange::Forgotten { vni, mac } => {
                let Some(seq) = self.local.remove(&(vni, mac)) else {
                    return Vec::new();
                };
                let mut actions = vec![Action::Withdraw(self.mac_route((vni, mac), seq))];
                // A remote route that lost to ours is the MAC's place again.
                if let Some(remote) = self.remote.get(&(vni, mac)) {
                    actions.push(Action::InstallRemoteMac {
                        vni,
                        mac,
                        vtep: remote.vtep,
                    });
                }
                actions
            }
        }
    }

    /// Whether a remote route is for us: not our own, and for a local VNI by route target.
    fn imports(&self, route: &EvpnRoute) -> bool {
        let vni = route.vni();
        let targets = match route {
            EvpnRoute::Mac(route) => &route.route_targets,
            EvpnRoute::Multicast(route) => &route.route_targets,
        };
        route.vtep() != self.settings.vtep
            && self.settings.vnis.contains(&vni)
            && targets.contains(&RouteTarget::auto(self.settings.asn, vni))
    }

    /// A best-path change from gobgpd: a route added (or replaced) or withdrawn.
    pub fn remote_change(&mut self, route: &EvpnRoute, withdrawn: bool) -> Vec<Action> {
        if !self.imports(route) {
            return Vec::new();
        }
        match route {
            EvpnRoute::Multicast(route) => {
                let vteps = self.flood.entry(route.vni).or_default();
                let changed = if withdrawn {
                    vteps.remove(&route.vtep)
                } else {
                    vteps.insert(route.vtep)
                };
                if !changed {
                    return Vec::new();
                }
                vec![Action::SetFloodList {
                    vni: route.vni,
                    vteps: self.flood_list(route.vni),
                }]
            }
            EvpnRoute::Mac(route) => {
                let key = (route.vni, route.mac);
                let (vni, mac) = key;
                if withdrawn {
                    // Only the withdrawal of the route we hold counts (a stale one from a
                    // VTEP the MAC already left must not remove the newer entry).
                    if self.remote.get(&key).map(|r| r.vtep) != Some(route.vtep) {
                        return Vec::new();
                    }
                    self.remote.remove(&key);
                    if self.local.contains_key(&key) {
                        return Vec::new();
                    }
                    return vec![Action::RemoveRemoteMac { vni, mac }];
                }
                let remote = RemoteMac {
                    vtep: route.vtep,
                    seq: route.mobility_seq.unwrap_or(0),
                };
                if self.remote.get(&key) == Some(&remote) {
                    return Vec::new();
                }
                self.remote.insert(key, remote);
                match self.local.get(&key) {
                    None => vec![Action::InstallRemoteMac {
                        vni,
                        mac,
                        vtep: remote.vtep,
                    }],
                    Some(&local_seq) => {
                        let remote_wins = remote.seq > local_seq
                            || (remote.seq == local_seq && remote.vtep < self.settings.vtep);
                        if !remote_wins {
                            return Vec::new();
                        }
                        // The MAC moved away: stop claiming it, send to its new place.
                        self.local.remove(&key);
                        vec![
                            Action::Withdraw(self.mac_route(key, local_seq)),
                            Action::InstallRemoteMac {
                                vni,
                                mac,
                                vtep: remote.vtep,
                            },
                        ]
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HERE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
    const LOW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const HIGH: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);
    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn state() -> EvpnState {
        EvpnState::new(EvpnSettings {
            asn: 65000,
            vtep: HERE,
            vnis: [100, 200].into(),
        })
    }

    fn remote_mac(vni: u32, mac: [u8; 6], vtep: Ipv4Addr, seq: u32) -> EvpnRoute {
        EvpnRoute::Mac(MacRoute {
            vni,
            mac,
            ip: None,
            vtep,
            rd: None,
            route_targets: vec![RouteTarget::auto(65000, vni)],
            mobility_seq: (seq > 0).then_some(seq),
        })
    }

    fn seq_of(action: &Action) -> Option<u32> {
        match action {
            Action::Advertise(EvpnRoute::Mac(route)) => Some(route.mobility_seq.unwrap_or(0)),
            _ => None,
        }
    }

    #[test]
    fn a_local_mac_is_advertised_once_and_withdrawn_when_forgotten() {
        let mut state = state();
        let learned = state.local_change(LocalChange::Learned { vni: 100, mac: MAC });
        assert_eq!(learned.len(), 1);
        assert_eq!(seq_of(&learned[0]), Some(0));
        assert!(
            state
                .local_change(LocalChange::Learned { vni: 100, mac: MAC })
                .is_empty()
        );
        let forgotten = state.local_change(LocalChange::Forgotten { vni: 100, mac: MAC });
        assert!(matches!(
            forgotten.as_slice(),
            [Action::Withdraw(EvpnRoute::Mac(_))]
        ));
        // A VNI that is not ours is none of EVPN's business.
        assert!(
            state
                .local_change(LocalChange::Learned { vni: 7, mac: MAC })
                .is_empty()
        );
    }

    #[test]
    fn a_mac_that_moves_here_is_advertised_with_the_next_sequence_number() {
        let mut state = state();
        state.remote_change(&remote_mac(100, MAC, LOW, 4), false);
        let learned = state.local_change(LocalChange::Learned { vni: 100, mac: MAC });
        assert_eq!(seq_of(&learned[0]), Some(5));
        assert_eq!(
            state.remote_macs(),
            vec![],
            "the local entry shadows the remote one"
        );
    }

    #[test]
    fn a_remote_route_wins_over_a_local_one_only_with_a_higher_sequence_or_the_tie_break() {
        let mut state = state();
        state.local_change(LocalChange::Learned { vni: 100, mac: MAC });
        // Same sequence (0) from a higher address: ours stays.
        assert!(
            state
                .remote_change(&remote_mac(100, MAC, HIGH, 0), false)
                .is_empty()
        );
        // Same sequence from a lower address: theirs wins (RFC 7432 §15.1).
        let actions = state.remote_change(&remote_mac(100, MAC, LOW, 0), false);
        assert!(matches!(
            actions.as_slice(),
            [
                Action::Withdraw(_),
                Action::InstallRemoteMac { vtep: LOW, .. }
            ]
        ));
        // Back here: advertised above the winner's sequence.
        let learned = state.local_change(LocalChange::Learned { vni: 100, mac: MAC });
        assert_eq!(seq_of(&learned[0]), Some(1));
        // A higher sequence elsewhere takes it again.
        let actions = state.remote_change(&remote_mac(100, MAC, HIGH, 2), false);
        assert!(matches!(
            actions.as_slice(),
            [
                Action::Withdraw(_),
                Action::InstallRemoteMac { vtep: HIGH, .. }
            ]
        ));
    }

    #[test]
    fn a_stale_withdrawal_does_not_remove_the_newer_entry() {
        let mut state = state();
        state.remote_change(&remote_mac(100, MAC, LOW, 0), false);
        state.remote_change(&remote_mac(100, MAC, HIGH, 1), false);
        assert!(
            state
                .remote_change(&remote_mac(100, MAC, LOW, 0), true)
                .is_empty()
        );
        assert_eq!(state.remote_macs(), vec![(100, MAC, HIGH)]);
        assert_eq!(
            state.remote_change(&remote_mac(100, MAC, HIGH, 1), true),
            vec![Action::RemoveRemoteMac { vni: 100, mac: MAC }]
        );
    }

    #[test]
    fn own_routes_other_vnis_and_foreign_route_targets_are_not_imported() {
        let mut state = state();
        assert!(
            state
                .remote_change(&remote_mac(100, MAC, HERE, 0), false)
                .is_empty()
        );
        assert!(
            state
                .remote_change(&remote_mac(300, MAC, LOW, 0), false)
                .is_empty()
        );
        let mut foreign = remote_mac(100, MAC, LOW, 0);
        if let EvpnRoute::Mac(route) = &mut foreign {
            route.route_targets = vec![RouteTarget::auto(65001, 100)];
        }
        assert!(state.remote_change(&foreign, false).is_empty());
    }

    #[test]
    fn the_flood_list_follows_type_3_routes() {
        let mut state = state();
        let member = |vtep| {
            EvpnRoute::Multicast(MulticastRoute {
                vni: 200,
                vtep,
                rd: None,
                route_targets: vec![RouteTarget::auto(65000, 200)],
            })
        };
        state.remote_change(&member(HIGH), false);
        let actions = state.remote_change(&member(LOW), false);
        assert_eq!(
            actions,
            vec![Action::SetFloodList {
                vni: 200,
                vteps: vec![LOW, HIGH]
            }]
        );
        assert!(state.remote_change(&member(LOW), false).is_empty());
        state.remote_change(&member(HIGH), true);
        assert_eq!(state.flood_list(200), vec![LOW]);
        assert_eq!(
            state.originated().len(),
            2,
            "one type-3 route per local VNI"
        );
    }

    #[test]
    fn a_resync_forgets_what_went_away_while_disconnected() {
        let mut state = state();
        let other = [2, 0, 0, 0, 0, 2];
        state.remote_change(&remote_mac(100, MAC, LOW, 0), false);
        state.remote_change(&remote_mac(100, other, LOW, 0), false);
        state.remote_change(
            &EvpnRoute::Multicast(MulticastRoute {
                vni: 100,
                vtep: LOW,
                rd: None,
                route_targets: vec![RouteTarget::auto(65000, 100)],
            }),
            false,
        );
        let actions = state.retain_remote(&[(100, other)].into(), &BTreeSet::new());
        assert_eq!(
            actions,
            vec![
                Action::RemoveRemoteMac { vni: 100, mac: MAC },
                Action::SetFloodList {
                    vni: 100,
                    vteps: vec![]
                }
            ]
        );
        assert_eq!(state.remote_macs(), vec![(100, other, LOW)]);
    }

    #[derive(Clone, Debug)]
    enum Step {
        Local(bool, u8),
        Remote(bool, u8, u8, u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (any::<bool>(), 0u8..4).prop_map(|(learn, mac)| Step::Local(learn, mac)),
            (any::<bool>(), 0u8..4, 0u8..3, 0u8..4)
                .prop_map(|(add, mac, vtep, seq)| Step::Remote(add, mac, vtep, seq)),
        ]
    }

    proptest! {
        /// Replaying the actions onto a model of gobgpd's RIB (our routes) and of the
        /// dataplane (remote entries) always gives what the state says it holds, and a MAC
        /// is never both advertised here and installed as remote.
        #[test]
        fn actions_keep_the_rib_and_the_dataplane_in_step(steps in proptest::collection::vec(step(), 1..60)) {
            let mut state = state();
            let mut rib: HashMap<VniMac, u32> = HashMap::new();
            let mut dataplane: BTreeMap<VniMac, Ipv4Addr> = BTreeMap::new();
            let vteps = [LOW, HIGH, Ipv4Addr::new(10, 0, 0, 7)];
            for step in steps {
                let actions = match step {
                    Step::Local(learn, mac) => {
                        let mac = [2, 0, 0, 0, 0, mac];
                        if learn {
                            // The dataplane learned it: a local entry replaces a remote one.
                            dataplane.remove(&(100, mac));
                            state.local_change(LocalChange::Learned { vni: 100, mac })
                        } else {
                            state.local_change(LocalChange::Forgotten { vni: 100, mac })
                        }
                    }
                    Step::Remote(add, mac, vtep, seq) => {
                        let route = remote_mac(100, [2, 0, 0, 0, 0, mac], vteps[vtep as usize], u32::from(seq));
                        state.remote_change(&route, !add)
                    }
                };
                for action in actions {
                    match action {
                        Action::Advertise(EvpnRoute::Mac(route)) => {
                            rib.insert((route.vni, route.mac), route.mobility_seq.unwrap_or(0));
                        }
                        Action::Withdraw(EvpnRoute::Mac(route)) => {
                            prop_assert!(rib.remove(&(route.vni, route.mac)).is_some(), "withdrew what it never advertised");
                        }
                        Action::InstallRemoteMac { vni, mac, vtep } => {
                            dataplane.insert((vni, mac), vtep);
                        }
                        Action::RemoveRemoteMac { vni, mac } => {
                            dataplane.remove(&(vni, mac));
                        }
                        other => prop_assert!(false, "unexpected {other:?}"),
                    }
                }
                let advertised: HashMap<VniMac, u32> = state.local.clone();
                prop_assert_eq!(&rib, &advertised);
                let remote: Vec<_> = dataplane.iter().map(|(&(v, m), &t)| (v, m, t)).collect();
                prop_assert_eq!(remote, state.remote_macs());
                for key in rib.keys() {
                    prop_assert!(!dataplane.contains_key(key));
                }
            }
        }
    }
}
