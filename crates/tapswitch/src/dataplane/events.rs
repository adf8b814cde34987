//! Events for `tapswitch events`, and the sink the workers emit them into.

use std::sync::mpsc::{SyncSender, TrySendError};

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::{PortSlot, PortUpdate};
use crate::fdb::{Learned, PortId, VlanId};
use crate::forward::{ForwardEvent, Forwarder, ViolationAction};
use crate::wire::MacAddr;

/// Why a port left the dataplane.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalCause {
    /// The control plane asked.
    Requested,
    /// Reading or writing failed with an error other than a full queue or a
    /// down link (e.g. the TAP was deleted under us).
    DeviceError,
    /// The network namespace the port's netdev was in was deleted, and the
    /// kernel deleted the netdev with it.
    NamespaceDeleted,
}

/// Something that changed in the switch, for `tapswitch events`. Ports are
/// named by id; the control plane adds names, keeping the packet path free of
/// string copies: what goes on the wire is [`crate::control::protocol::Event`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A source MAC not in the table was learned (`evicted_from`: a full
    /// table made room by evicting one of that port's entries).
    MacLearned {
        mac: MacAddr,
        port: PortId,
        #[serde(skip_serializing_if = "Option::is_none")]
        evicted_from: Option<PortId>,
    },
    /// A live learned MAC showed up on another port.
    MacMoved {
        mac: MacAddr,
        from: PortId,
        to: PortId,
    },
    PortAdded {
        port: PortId,
        name: String,
        mtu: u32,
    },
    PortRemoved {
        port: PortId,
        name: String,
        cause: RemovalCause,
    },
    /// Settings of a port changed (`port set`).
    PortChanged {
        port: PortId,
        name: String,
        update: PortUpdate,
    },
    /// Entries were flushed: all learned ones, or all of one port.
    FdbFlushed {
        #[serde(skip_serializing_if = "Option::is_none")]
        port: Option<PortId>,
        removed: usize,
    },
    FdbStaticAdded {
        vlan: VlanId,
        mac: MacAddr,
        port: PortId,
    },
    FdbRemoved {
        vlan: VlanId,
        mac: MacAddr,
    },
    /// `mac` moved between ports too often (`[switch.mac_flap]`): it stays on
    /// `held_on` and is not learned on `moved_to` while the hold lasts.
    MacFlap {
        vlan: VlanId,
        mac: MacAddr,
        held_on: PortId,
        moved_to: PortId,
        /// Flaps of this address so far.
        flaps: u64,
    },
    /// A new source would have exceeded the port's `mac_limit` (for `drop+log` at
    /// most one per port per second, `suppressed` counting the rest; `drop` is
    /// silent, counted only).
    MacLimitExceeded {
        port: PortId,
        vlan: VlanId,
        mac: MacAddr,
        limit: u32,
        action: ViolationAction,
        suppressed: u64,
    },
    /// The port's MAC limit (`mac_limit_action = "shutdown"`) disabled it;
    /// `port set NAME --enable` brings it back.
    PortShutdown {
        port: PortId,
    },
    /// The port's netdev went down (its endpoint set it down, or it is being
    /// moved): frames to it count as `link_down` drops until it is up.
    PortLinkDown {
        port: PortId,
    },
    /// The port's netdev is up again and forwarding.
    PortLinkUp {
        port: PortId,
    },
    /// The port's netdev moved to namespace `netns` (`null`: the switch's own).
    PortMoved {
        port: PortId,
        netns: Option<String>,
    },
    /// The EVPN agent has a session with gobgpd (again): it reconciled the routes.
    EvpnConnected {
        gobgp: String,
        sessions: u64,
    },
    /// The EVPN agent lost (or could not get) its session with gobgpd: the dataplane
    /// forwards on the last state it was given.
    EvpnDisconnected {
        gobgp: String,
        error: Option<String>,
    },
}

/// Where events go: a bounded channel filled with `try_send`, so a slow
/// reader costs lost events (counted), never a stalled loop. Every worker
/// holds a sender of the same channel.
#[derive(Default)]
pub(super) struct EventSink {
    pub(super) sender: Option<SyncSender<Event>>,
    pub(super) dropped: u64,
}

impl EventSink {
    pub(super) fn emit(&mut self, event: impl FnOnce() -> Event) {
        let Some(sender) = &self.sender else {
            return;
        };
        match sender.try_send(event()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped += 1,
            // The reader is gone: stop building events nobody will read.
            Err(TrySendError::Disconnected(_)) => self.sender = None,
        }
    }

    /// The event for what learning a frame's source address did, if it is news.
    pub(super) fn learned(&mut self, ingress: PortId, frame: &[u8], learned: Learned) {
        if !matches!(
            learned,
            Learned::New | Learned::Moved { .. } | Learned::Evicted { .. }
        ) {
            return;
        }
        // Learning happened, so the frame has a full Ethernet header.
        let mac = MacAddr::from_bytes(&frame[6..12]);
        self.emit(|| match learned {
            Learned::Moved { from } => Event::MacMoved {
                mac,
                from,
                to: ingress,
            },
            Learned::Evicted { victim_port } => Event::MacLearned {
                mac,
                port: ingress,
                evicted_from: Some(victim_port),
            },
            _ => Event::MacLearned {
                mac,
                port: ingress,
                evicted_from: None,
            },
        });
    }
}

/// Logs what the forwarder reported, counts it on the ports concerned and passes
/// it on as events.
pub(super) fn report_forward_events(
    forwarder: &mut Forwarder,
    ports: &mut [Option<PortSlot>],
    events: &mut EventSink,
) {
    let lost = forwarder.events_lost();
    for event in forwarder.drain_events() {
        let name = |id: PortId| match ports.get(id.index()) {
            Some(Some(slot)) => slot.port.name().to_owned(),
            _ => format!("#{id}"),
        };
        match event {
            ForwardEvent::MacLimitExceeded {
                port,
                vlan,
                mac,
                limit,
                action,
                suppressed,
            } => {
                let port_name = name(port);
                warn!(port = %port_name, vlan, %mac, limit, %action, suppressed, "MAC limit exceeded");
                events.emit(|| Event::MacLimitExceeded {
                    port,
                    vlan,
                    mac,
                    limit,
                    action,
                    suppressed,
                });
                if action == ViolationAction::Shutdown {
                    warn!(port = %port_name, "port shut down by its MAC limit");
                    if let Some(Some(slot)) = ports.get_mut(port.index()) {
                        slot.counters.shutdowns += 1;
                    }
                    events.emit(|| Event::PortShutdown { port });
                }
            }
            ForwardEvent::MacFlap {
                vlan,
                mac,
                held_on,
                moved_to,
                flaps,
            } => {
                warn!(vlan, %mac, held_on = %name(held_on), moved_to = %name(moved_to), flaps, "MAC flapping between ports; held");
                events.emit(|| Event::MacFlap {
                    vlan,
                    mac,
                    held_on,
                    moved_to,
                    flaps,
                });
                if let Some(Some(slot)) = ports.get_mut(moved_to.index()) {
                    slot.counters.mac_flaps += 1;
                }
            }
        }
    }
    if lost > 0 {
        debug!(lost, "forwarding events lost to a full queue");
    }
}
