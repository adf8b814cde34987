//! The daemon's side of BGP EVPN (`[evpn]`): runs the `tapswitch-evpn` agent and joins
//! it to the dataplane, in both directions through the [`DataplaneHandle`] only.
//!
//! - Remote → dataplane: the agent's `InstallRemoteMac`/`RemoveRemoteMac`/`SetFloodList`
//!   become [`Command::SetRemoteMac`]/[`Command::SetFloodList`] on the VNI's vxlan port
//!   (sent without waiting for a reply: the agent never waits on the loop).
//! - Local → agent: the dataplane's events are best-effort (a full queue drops them), so
//!   they are not what EVPN relies on. A sync thread (`tapswitch-evpn-sync`) asks the
//!   dataplane every [`LOCAL_SYNC_INTERVAL`] for the MACs learned on non-tunnel ports
//!   ([`Command::LocalMacs`]) and reports the difference to the last answer as
//!   `Learned`/`Forgotten`: a lost event costs nothing, a learn is advertised within one
//!   interval. The same thread passes the agent's session state to the dataplane
//!   ([`Command::SetEvpnStatus`]) for `stats`, metrics and the connect/disconnect events.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tapswitch_evpn::{Action, AgentHandle, AgentStatus, DataplaneSink, EvpnSettings, LocalChange};
use tracing::{info, warn};

use crate::config::{EvpnPlan, EvpnVni};
use crate::dataplane::{Command, DataplaneHandle, EvpnSummary};
use crate::wire::MacAddr;

pub use tapswitch_evpn::{AgentStatus as Status, VniStatus};

/// How often the local MACs are compared with what the agent was told.
pub const LOCAL_SYNC_INTERVAL: Duration = Duration::from_millis(250);

/// The running agent, shared with the control server (`evpn status`).
#[derive(Clone, Default)]
pub struct EvpnLink(Arc<Mutex<Option<AgentHandle>>>);

impl EvpnLink {
    fn lock(&self) -> MutexGuard<'_, Option<AgentHandle>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The agent's status, while it runs.
    pub fn status(&self) -> Option<AgentStatus> {
        self.lock().as_ref().map(AgentHandle::status)
    }
}

/// EVPN's threads: the agent's and the sync thread.
pub struct EvpnService {
    link: EvpnLink,
    stop: Sender<()>,
    sync: JoinHandle<()>,
}

/// Turns the agent's dataplane actions into commands on the VNI's vxlan port.
struct Sink {
    dataplane: DataplaneHandle,
    vnis: BTreeMap<u32, EvpnVni>,
}

impl DataplaneSink for Sink {
    fn apply(&mut self, action: &Action) {
        let command = match action {
            Action::InstallRemoteMac { vni, mac, vtep } => {
                self.vnis
                    .get(vni)
                    .map(|EvpnVni { port, vlan }| Command::SetRemoteMac {
                        port: port.clone(),
                        vlan: *vlan,
                        mac: MacAddr(*mac),
                        vtep: Some(IpAddr::V4(*vtep)),
                    })
            }
            Action::RemoveRemoteMac { vni, mac } => {
                self.vnis
                    .get(vni)
                    .map(|EvpnVni { port, vlan }| Command::SetRemoteMac {
                        port: port.clone(),
                        vlan: *vlan,
                        mac: MacAddr(*mac),
                        vtep: None,
                    })
            }
            Action::SetFloodList { vni, vteps } => {
                self.vnis
                    .get(vni)
                    .map(|EvpnVni { port, .. }| Command::SetFloodList {
                        port: port.clone(),
                        vteps: vteps.iter().copied().map(IpAddr::V4).collect(),
                    })
            }
            // Routes are the agent's own business.
            Action::Advertise(_) | Action::Withdraw(_) => None,
        };
        if let Some(command) = command {
            // Fails only once the dataplane stopped, when there is nothing left to program.
            let _ = self.dataplane.send(command);
        }
    }
}

impl EvpnService {
    /// Starts the agent for `plan` (in this thread's namespace: where gobgpd's API is)
    /// and the sync thread. Call after the privilege drop, which must see one thread.
    pub fn start(plan: &EvpnPlan, dataplane: DataplaneHandle) -> std::io::Result<EvpnService> {
        let settings = EvpnSettings {
            asn: plan.asn,
            vtep: plan.vtep,
            vnis: plan.vnis.keys().copied().collect(),
        };
        let sink = Sink {
            dataplane: dataplane.clone(),
            vnis: plan.vnis.clone(),
        };
        let agent = AgentHandle::spawn(settings, plan.gobgp.clone(), sink)?;
        let link = EvpnLink::default();
        *link.lock() = Some(agent);
        let (stop, stopped) = mpsc::channel();
        let sync = {
            let link = link.clone();
            let plan = plan.clone();
            std::thread::Builder::new()
                .name("tapswitch-evpn-sync".into())
                .spawn(move || sync_local_macs(&plan, &dataplane, &link, &stopped))?
        };
        info!(gobgp = %plan.gobgp, vtep = %plan.vtep, asn = plan.asn,
            vnis = ?plan.vnis.keys().collect::<Vec<_>>(), "EVPN agent started");
        Ok(EvpnService { link, stop, sync })
    }

    pub fn link(&self) -> EvpnLink {
        self.link.clone()
    }

    /// Stops both threads. Routes stay in gobgpd, entries in the dataplane (a restarted
    /// switch reconciles them).
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.sync.join();
        if let Some(agent) = self.link.lock().take() {
            agent.stop();
        }
    }
}

/// The sync thread's loop (see the module documentation).
fn sync_local_macs(
    plan: &EvpnPlan,
    dataplane: &DataplaneHandle,
    link: &EvpnLink,
    stopped: &mpsc::Receiver<()>,
) {
    let mut told: HashSet<(u32, [u8; 6])> = HashSet::new();
    let mut reported: Option<EvpnSummary> = None;
    loop {
        let Ok(macs) = dataplane.request(Command::LocalMacs) else {
            return; // the dataplane stopped
        };
        let local: HashSet<(u32, [u8; 6])> = macs
            .into_iter()
            .filter_map(|(vlan, mac)| Some((plan.vni_of_vlan(vlan)?, mac.0)))
            .collect();
        let summary = {
            let agent = link.lock();
            let Some(agent) = agent.as_ref() else {
                return;
            };
            for &(vni, mac) in local.difference(&told) {
                agent.local_change(LocalChange::Learned { vni, mac });
            }
            for &(vni, mac) in told.difference(&local) {
                agent.local_change(LocalChange::Forgotten { vni, mac });
            }
            let status = agent.status();
            EvpnSummary {
                gobgp: status.gobgp,
                connected: status.connected,
                sessions: status.sessions,
                last_error: status.last_error,
            }
        };
        told = local;
        if reported.as_ref() != Some(&summary) {
            if dataplane
                .send(Command::SetEvpnStatus(summary.clone()))
                .is_err()
            {
                return;
            }
            reported = Some(summary);
        }
        match stopped.recv_timeout(LOCAL_SYNC_INTERVAL) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Logs why EVPN could not start; the switch forwards without it.
pub fn start_failed(error: &std::io::Error) {
    warn!(%error, "the EVPN agent could not start; forwarding without EVPN");
}
