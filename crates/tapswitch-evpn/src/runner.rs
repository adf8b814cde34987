//! The EVPN agent's thread: a tokio runtime of its own that keeps gobgpd's RIB and the
//! dataplane in step with [`EvpnState`].
//!
//! Local MAC changes come in through [`AgentHandle::local_change`] (callable from any
//! thread: the daemon forwards the dataplane's learn/forget events); dataplane actions go
//! out through the [`DataplaneSink`] the daemon gives (it turns them into commands on the
//! dataplane's channel — never a call on the packet path). While gobgpd is unreachable the
//! dataplane keeps its last state, local changes keep updating [`EvpnState`], and the agent
//! retries with a growing delay; once connected it reconciles: routes of ours gobgpd holds
//! but we no longer want are withdrawn (also those a previous tapswitch left), every route
//! we want is added, and remote routes are read afresh (entries whose routes went away
//! meanwhile are removed).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::agent::{Action, EvpnSettings, EvpnState, LocalChange, VniMac};
use crate::api;
use crate::client::{ClientError, GobgpClient};
use crate::route::EvpnRoute;

/// First retry delay after gobgpd could not be reached; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// How often the shared status is refreshed while the state changes.
const STATUS_INTERVAL: Duration = Duration::from_millis(100);

/// Where the agent's dataplane actions go (`InstallRemoteMac`, `RemoveRemoteMac`,
/// `SetFloodList`; route actions stay inside the agent).
pub trait DataplaneSink: Send + 'static {
    fn apply(&mut self, action: &Action);
}

/// One VNI in [`AgentStatus`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VniStatus {
    pub remote_vteps: Vec<Ipv4Addr>,
    pub local_macs: usize,
    pub remote_macs: usize,
}

/// What `tapswitch evpn status` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentStatus {
    pub gobgp: String,
    pub connected: bool,
    /// Why the last connection attempt or session failed.
    pub last_error: Option<String>,
    /// Sessions with gobgpd so far (1 after the first connect).
    pub sessions: u64,
    pub vnis: BTreeMap<u32, VniStatus>,
    /// Paths from gobgpd that did not decode as routes tapswitch uses (and were ignored).
    pub undecodable_paths: u64,
}

enum Input {
    Local(LocalChange),
    Stop,
}

/// The running agent.
pub struct AgentHandle {
    input: mpsc::UnboundedSender<Input>,
    status: Arc<Mutex<AgentStatus>>,
    thread: Option<JoinHandle<()>>,
}

impl AgentHandle {
    /// Starts the agent's thread (in the calling thread's network namespace, where it
    /// reaches gobgpd's API).
    pub fn spawn(
        settings: EvpnSettings,
        gobgp: String,
        sink: impl DataplaneSink,
    ) -> std::io::Result<AgentHandle> {
        let (input, inputs) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(AgentStatus {
            gobgp: gobgp.clone(),
            ..Default::default()
        }));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let agent = Agent {
            state: EvpnState::new(settings),
            gobgp,
            sink: Box::new(sink),
            status: status.clone(),
            inputs,
            dirty: false,
        };
        let thread = std::thread::Builder::new()
            .name("evpn".into())
            .spawn(move || runtime.block_on(agent.run()))?;
        Ok(AgentHandle {
            input,
            status,
            thread: Some(thread),
        })
    }

    /// Reports a change of the local MAC table.
    pub fn local_change(&self, change: LocalChange) {
        // A send fails only once the agent stopped, when there is nobody left to tell.
        let _ = self.input.send(Input::Local(change));
    }

    pub fn status(&self) -> AgentStatus {
        lock(&self.status).clone()
    }

    /// Stops the agent. Routes stay in gobgpd (a restarted tapswitch reconciles them);
    /// the dataplane keeps its entries.
    pub fn stop(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        let _ = self.input.send(Input::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn lock(status: &Mutex<AgentStatus>) -> MutexGuard<'_, AgentStatus> {
    status.lock().unwrap_or_else(|e| e.into_inner())
}

struct Agent {
    state: EvpnState,
    gobgp: String,
    sink: Box<dyn DataplaneSink>,
    status: Arc<Mutex<AgentStatus>>,
    inputs: mpsc::UnboundedReceiver<Input>,
    /// The state changed since the status was last refreshed.
    dirty: bool,
}

/// How a session with gobgpd ended.
enum SessionEnd {
    Stopped,
    Failed(ClientError),
}

impl Agent {
    async fn run(mut self) {
        let mut retry = FIRST_RETRY;
        self.publish();
        loop {
            match GobgpClient::connect(&self.gobgp).await {
                Ok(client) => {
                    retry = FIRST_RETRY;
                    {
                        let mut status = lock(&self.status);
                        status.connected = true;
                        status.sessions += 1;
                    }
                    match self.session(client).await {
                        SessionEnd::Stopped => return,
                        SessionEnd::Failed(error) => self.disconnected(&error),
                    }
                }
                Err(error) => self.disconnected(&error),
            }
            // Wait before retrying, still taking local changes (and a stop).
            let deadline = tokio::time::Instant::now() + retry;
            retry = (retry * 2).min(MAX_RETRY);
            loop {
                match tokio::time::timeout_at(deadline, self.inputs.recv()).await {
                    Err(_elapsed) => break,
                    Ok(None | Some(Input::Stop)) => return,
                    Ok(Some(Input::Local(change))) => {
                        // Only the state changes: the routes go out at the next reconcile.
                        let actions = self.state.local_change(change);
                        self.apply_dataplane(&actions);
                        self.publish();
                    }
                }
            }
        }
    }

    fn disconnected(&mut self, error: &ClientError) {
        let mut status = lock(&self.status);
        status.connected = false;
        status.last_error = Some(error.to_string());
    }

    /// Refreshes the shared status from the state (O(MACs): done at most every
    /// [`STATUS_INTERVAL`] while routes stream in, not per route).
    fn publish(&mut self) {
        self.dirty = false;
        let counts = self.state.mac_counts();
        let mut status = lock(&self.status);
        status.vnis = counts
            .into_iter()
            .map(|(vni, (local_macs, remote_macs))| {
                let vni_status = VniStatus {
                    remote_vteps: self.state.flood_list(vni),
                    local_macs,
                    remote_macs,
                };
                (vni, vni_status)
            })
            .collect();
    }

    fn apply_dataplane(&mut self, actions: &[Action]) {
        for action in actions {
            if !matches!(action, Action::Advertise(_) | Action::Withdraw(_)) {
                self.sink.apply(action);
            }
        }
        self.dirty = true;
    }

    async fn apply(
        &mut self,
        client: &mut GobgpClient,
        actions: Vec<Action>,
    ) -> Result<(), ClientError> {
        for action in &actions {
            match action {
                Action::Advertise(route) => client.add_path(to_path(route)?).await?,
                Action::Withdraw(route) => client.delete_path(to_path(route)?).await?,
                _ => {}
            }
        }
        self.apply_dataplane(&actions);
        Ok(())
    }

    async fn session(&mut self, mut client: GobgpClient) -> SessionEnd {
        match self.session_inner(&mut client).await {
            Ok(()) => SessionEnd::Stopped,
            Err(error) => SessionEnd::Failed(error),
        }
    }

    async fn session_inner(&mut self, client: &mut GobgpClient) -> Result<(), ClientError> {
        // The watch replays the current best paths, then streams changes. It runs in a
        // task of its own (its call returns only with the first event) and queues paths
        // here; they are applied after the table read below, so a change that races the
        // read is applied after it, never lost.
        let (paths, mut watched) = mpsc::unbounded_channel();
        let watch = tokio::spawn(watch_paths(client.clone(), paths));
        let result = self.serve(client, &mut watched).await;
        watch.abort();
        result
    }

    async fn serve(
        &mut self,
        client: &mut GobgpClient,
        watched: &mut mpsc::UnboundedReceiver<Result<api::Path, ClientError>>,
    ) -> Result<(), ClientError> {
        self.reconcile(client).await?;
        let mut status_tick = tokio::time::interval(STATUS_INTERVAL);
        loop {
            tokio::select! {
                _ = status_tick.tick() => if self.dirty {
                    self.publish();
                },
                input = self.inputs.recv() => match input {
                    None | Some(Input::Stop) => return Ok(()),
                    Some(Input::Local(change)) => {
                        let actions = self.state.local_change(change);
                        self.apply(client, actions).await?;
                    }
                },
                path = watched.recv() => match path {
                    Some(Ok(path)) => self.remote_path(&path),
                    Some(Err(error)) => return Err(error),
                    None => {
                        return Err(ClientError::Call {
                            call: "WatchEvent",
                            status: tonic::Status::unavailable("the watch ended"),
                        });
                    }
                },
            }
        }
    }

    fn remote_path(&mut self, path: &api::Path) {
        match EvpnRoute::from_path(path) {
            Ok(route) => {
                let actions = self.state.remote_change(&route, path.is_withdraw);
                self.apply_dataplane(&actions);
            }
            Err(_) => lock(&self.status).undecodable_paths += 1,
        }
    }

    /// Makes gobgpd hold exactly our routes, and the state exactly gobgpd's remote ones.
    async fn reconcile(&mut self, client: &mut GobgpClient) -> Result<(), ClientError> {
        let vtep = self.state.settings().vtep;
        let wanted = self.state.originated();
        let all = client.list_evpn(false).await?;
        for path in &all {
            let Ok(route) = EvpnRoute::from_path(path) else {
                continue;
            };
            // Ours: added through the API (gobgpd gives those a uuid) with our next hop.
            let ours = !path.uuid.is_empty() && route.vtep() == vtep;
            if ours && !wanted.iter().any(|w| same_nlri(w, &route)) {
                client.delete_path(path.clone()).await?;
            }
        }
        for route in &wanted {
            client.add_path(to_path(route)?).await?;
        }
        // Remote routes afresh: what the state holds but gobgpd no longer has is withdrawn.
        let mut present: BTreeSet<VniMac> = BTreeSet::new();
        let mut members: BTreeSet<(u32, Ipv4Addr)> = BTreeSet::new();
        for path in all.iter().filter(|p| p.best) {
            if let Ok(route) = EvpnRoute::from_path(path) {
                match &route {
                    EvpnRoute::Mac(m) => {
                        present.insert((m.vni, m.mac));
                    }
                    EvpnRoute::Multicast(m) => {
                        members.insert((m.vni, m.vtep));
                    }
                }
            }
            self.remote_path(path);
        }
        let actions = self.state.retain_remote(&present, &members);
        self.apply_dataplane(&actions);
        self.publish();
        Ok(())
    }
}

/// Forwards every path of gobgpd's best-path watch (current ones first) to `paths`; ends
/// with the error that ended the watch.
async fn watch_paths(
    mut client: GobgpClient,
    paths: mpsc::UnboundedSender<Result<api::Path, ClientError>>,
) {
    let ended = async {
        let mut events = client.watch_best(true).await?;
        loop {
            let event = events.message().await.map_err(|status| ClientError::Call {
                call: "WatchEvent",
                status,
            })?;
            let Some(event) = event else {
                return Err(ClientError::Call {
                    call: "WatchEvent",
                    status: tonic::Status::unavailable("gobgpd ended the watch stream"),
                });
            };
            if let Some(api::watch_event_response::Event::Table(table)) = event.event {
                for path in table.paths {
                    if paths.send(Ok(path)).is_err() {
                        return Ok(());
                    }
                }
            }
        }
    };
    if let Err(error) = ended.await {
        let _ = paths.send(Err(error));
    }
}

fn to_path(route: &EvpnRoute) -> Result<api::Path, ClientError> {
    Ok(match route {
        EvpnRoute::Mac(route) => route.to_path()?,
        EvpnRoute::Multicast(route) => route.to_path()?,
    })
}

/// Whether two routes are the same NLRI (the same thing advertised, whatever its attributes).
fn same_nlri(a: &EvpnRoute, b: &EvpnRoute) -> bool {
    match (a, b) {
        (EvpnRoute::Mac(a), EvpnRoute::Mac(b)) => (a.vni, a.mac) == (b.vni, b.mac),
        (EvpnRoute::Multicast(a), EvpnRoute::Multicast(b)) => (a.vni, a.vtep) == (b.vni, b.vtep),
        _ => false,
    }
}
