//! The EVPN agent against two real gobgpd peers: what one host learns reaches the other's
//! dataplane sink, a MAC move converges by sequence number, and a gobgpd restart resyncs.
//! (The sink records actions: the daemon's sink, which turns them into dataplane commands,
//! is tested end to end with tapswitch itself.)

mod common;

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Host, gobgpd_config};
use tapswitch_evpn::{Action, AgentHandle, DataplaneSink, EvpnSettings, LocalChange};

const A: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 2);
const VNI: u32 = 100;
const MAC: [u8; 6] = [0x02, 0xab, 0, 0, 0, 1];

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Action>>>);

impl DataplaneSink for Recorder {
    fn apply(&mut self, action: &Action) {
        self.0.lock().unwrap().push(action.clone());
    }
}

impl Recorder {
    /// Waits (at most 60 s) until an action matching `want` was recorded after the first
    /// `skip` ones; returns how long it took and the index after it.
    fn wait(&self, skip: usize, want: impl Fn(&Action) -> bool) -> (Duration, usize) {
        let start = Instant::now();
        loop {
            {
                let actions = self.0.lock().unwrap();
                if let Some(i) = actions.iter().skip(skip).position(&want) {
                    return (start.elapsed(), skip + i + 1);
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "never happened; recorded: {:?}",
                    &actions[skip..]
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn agent(host: &Host, vtep: Ipv4Addr, sink: Recorder) -> AgentHandle {
    let settings = EvpnSettings {
        asn: common::ASN,
        vtep,
        vnis: [VNI].into(),
    };
    host.run(
        move || async move { AgentHandle::spawn(settings, common::API.to_owned(), sink).unwrap() },
    )
}

#[test]
fn learning_moves_and_a_gobgpd_restart_converge_between_two_agents() {
    require_root_and_gobgpd!();
    let mut a = Host::new();
    let mut b = Host::new();
    common::connect(&a, A, &b, B);
    a.start_gobgpd(&gobgpd_config(A, &[B]));
    b.start_gobgpd(&gobgpd_config(B, &[A]));
    let (sink_a, sink_b) = (Recorder::default(), Recorder::default());
    let agent_a = agent(&a, A, sink_a.clone());
    let agent_b = agent(&b, B, sink_b.clone());
    let flood = |vteps: Vec<Ipv4Addr>| {
        move |act: &Action| {
            act == &Action::SetFloodList {
                vni: VNI,
                vteps: vteps.clone(),
            }
        }
    };
    let behind = |vtep| {
        move |act: &Action| {
            act == &Action::InstallRemoteMac {
                vni: VNI,
                mac: MAC,
                vtep,
            }
        }
    };

    // Each joins the other's flood list.
    let (_, mut seen_b) = sink_b.wait(0, flood(vec![A]));
    let (_, mut seen_a) = sink_a.wait(0, flood(vec![B]));

    // Learned on A: B sends to A.
    agent_a.local_change(LocalChange::Learned { vni: VNI, mac: MAC });
    let (learn_time, next) = sink_b.wait(seen_b, behind(A));
    seen_b = next;

    // The station moves to B: B advertises it with sequence 1, A now sends to B.
    agent_b.local_change(LocalChange::Learned { vni: VNI, mac: MAC });
    let (move_time, next) = sink_a.wait(seen_a, behind(B));
    seen_a = next;
    // The status is refreshed every 100 ms: wait for it, boundedly.
    let counts = |agent: &AgentHandle| {
        let vni = agent.status().vnis[&VNI].clone();
        (vni.local_macs, vni.remote_macs)
    };
    let settled = common::wait_for(Duration::from_secs(5), || {
        (counts(&agent_a) == (0, 1) && counts(&agent_b) == (1, 0)).then_some(())
    });
    assert!(
        settled.is_some(),
        "A withdrew its claim and points at B: A {:?}, B {:?}",
        counts(&agent_a),
        counts(&agent_b)
    );

    // gobgpd on A restarts: B loses A (the session drops), then gets it back once A's
    // agent reconnects and re-advertises.
    a.stop_daemons();
    sink_b.wait(seen_b, flood(vec![]));
    let restarted = Instant::now();
    a.start_gobgpd(&gobgpd_config(A, &[B]));
    let (_, _) = sink_b.wait(seen_b, flood(vec![A]));
    let resync_time = restarted.elapsed();
    // And A relearns B's MAC from the new session.
    sink_a.wait(seen_a, behind(B));
    let status = agent_a.status();
    assert!(status.connected, "{status:?}");
    assert!(status.sessions >= 2, "{status:?}");
    eprintln!(
        "convergence: learn {learn_time:?}, move {move_time:?}, gobgpd restart to resync {resync_time:?}"
    );
    agent_a.stop();
    agent_b.stop();
}
