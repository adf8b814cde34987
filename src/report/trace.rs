//! `trace`: a frame's fate for people, one line per step of the forwarder's decision.

use std::fmt::Write;

use tapswitch::control::protocol::TraceReply;
use tapswitch::fdb::{EntryKind, Learned, PortId};
use tapswitch::forward::{
    DestinationKind, Exclusion, PortResult, StormLimit, TagAction, TraceStep, Verdict,
};
use tapswitch::wire::{ETHERTYPE_QINQ, ETHERTYPE_VLAN};

fn destination(kind: DestinationKind) -> &'static str {
    match kind {
        DestinationKind::KnownUnicast => "known unicast",
        DestinationKind::UnknownUnicast => "unknown unicast",
        DestinationKind::Multicast => "multicast",
        DestinationKind::Broadcast => "broadcast",
    }
}

fn tag(action: TagAction) -> String {
    match action {
        TagAction::AsIs => "as received".to_owned(),
        TagAction::Push(vid) => format!("push 802.1Q tag, VID {vid}"),
        TagAction::Pop => "pop the 802.1Q tag".to_owned(),
        TagAction::SetVid(vid) => format!("rewrite the tag's VID to {vid}"),
    }
}

fn exclusion(why: Exclusion) -> &'static str {
    match why {
        Exclusion::Ingress => "the ingress port",
        Exclusion::Disabled => "disabled",
        Exclusion::FloodOff => "takes no floods of this kind",
        Exclusion::Isolated => "isolated from the ingress port",
        Exclusion::SplitHorizon => "split horizon (tunnel to tunnel)",
        Exclusion::VlanNotCarried => "does not carry the VLAN",
    }
}

fn learned(reply: &TraceReply, learned: Learned) -> String {
    match learned {
        Learned::Ignored => "not learned (group or zero source)".to_owned(),
        Learned::Refreshed => "already known here: refreshed".to_owned(),
        Learned::New => "new entry".to_owned(),
        Learned::Moved { from } => format!("moves from {}", reply.port_name(from)),
        Learned::StaticHeld => "pinned to another port by a static entry: unchanged".to_owned(),
        Learned::Evicted { victim_port } => format!(
            "new entry, evicting one of {}'s",
            reply.port_name(victim_port)
        ),
        Learned::Full => "not stored: every slot holds a static entry".to_owned(),
        Learned::Held { on } => format!("held on {} after flapping", reply.port_name(on)),
    }
}

fn storm(limit: Option<StormLimit>) -> String {
    match limit {
        None => "unlimited".to_owned(),
        Some(limit) => format!(
            "{} pps: {}, {} tokens left",
            limit.rate_pps,
            if limit.passes {
                "passes"
            } else {
                "over the rate"
            },
            limit.tokens_left
        ),
    }
}

fn port(reply: &TraceReply, id: PortId) -> String {
    reply.port_name(id)
}

/// Each step, then the verdict.
pub fn trace(reply: &TraceReply) -> String {
    let mut out = format!(
        "{}-byte frame arriving on {}\n",
        reply.frame_len, reply.port
    );
    for step in &reply.steps {
        let (what, text) = match step {
            TraceStep::Frame {
                src,
                dst,
                tag,
                ethertype,
            } => {
                let tag = match tag {
                    None => "untagged".to_owned(),
                    Some(t) => {
                        let kind = match t.tpid {
                            ETHERTYPE_VLAN => "802.1Q".to_owned(),
                            ETHERTYPE_QINQ => "802.1ad".to_owned(),
                            other => format!("{other:#06x}"),
                        };
                        format!("{kind} VID {} PCP {}", t.vid, t.pcp)
                    }
                };
                (
                    "frame",
                    format!("{src} -> {dst}, {tag}, type {ethertype:#06x}"),
                )
            }
            TraceStep::Vlan { mode, vlan } => (
                "vlan",
                match vlan {
                    Some(0) => format!("port is {mode}: switched as is (VLAN key 0)"),
                    Some(vlan) => format!("port is {mode}: VLAN {vlan}"),
                    None => format!("port is {mode}: does not carry this frame"),
                },
            ),
            TraceStep::Security {
                allowed_macs,
                spoofed,
            } => (
                "security",
                match (allowed_macs, spoofed) {
                    (0, _) => "any source address".to_owned(),
                    (n, false) => format!("source is one of the {n} bound addresses"),
                    (n, true) => format!("source is none of the {n} bound addresses: spoofed"),
                },
            ),
            TraceStep::Destination { kind, entry } => (
                "destination",
                match entry {
                    Some(entry) => {
                        let kind_name = match entry.kind {
                            EntryKind::Dynamic => "dynamic",
                            EntryKind::Static => "static",
                            EntryKind::Sticky => "sticky",
                            EntryKind::Remote => "remote",
                        };
                        format!(
                            "{}: on {} ({kind_name}, age {:.1}s)",
                            destination(*kind),
                            port(reply, entry.port),
                            entry.age.as_secs_f64()
                        )
                    }
                    None => destination(*kind).to_owned(),
                },
            ),
            TraceStep::Storm { flood, limit } => (
                "storm",
                format!("{} flood: {}", destination(*flood), storm(*limit)),
            ),
            TraceStep::MacLimit {
                limit,
                count,
                exceeded,
                action,
            } => (
                "mac limit",
                format!(
                    "{count} of {limit} addresses{}",
                    if *exceeded {
                        format!(": a new one is over the limit ({action})")
                    } else {
                        String::new()
                    }
                ),
            ),
            TraceStep::Learn { learned: l, evicts } => (
                "learn",
                match evicts {
                    Some((vlan, mac)) => {
                        format!("{} ({mac} on VLAN {vlan})", learned(reply, *l))
                    }
                    None => learned(reply, *l),
                },
            ),
            TraceStep::DestinationAfterLearning { kind, port: on } => (
                "destination",
                match on {
                    Some(id) => format!(
                        "after learning: {} on {}",
                        destination(*kind),
                        port(reply, *id)
                    ),
                    None => format!("after learning: {}", destination(*kind)),
                },
            ),
            TraceStep::Port { port: id, result } => (
                "port",
                match result {
                    PortResult::Egress(action) => {
                        format!("{}: send, {}", port(reply, *id), tag(*action))
                    }
                    PortResult::Excluded(why) => {
                        format!("{}: no, {}", port(reply, *id), exclusion(*why))
                    }
                },
            ),
            TraceStep::InnerTagExposed { removed } => (
                "double tag",
                format!(
                    "popping would expose the inner tag: not sent to {}",
                    removed
                        .iter()
                        .map(|id| port(reply, *id))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        };
        let _ = writeln!(out, "  {what:<12} {text}");
    }
    match reply.verdict {
        Verdict::Forward => {
            let egress: Vec<String> = reply
                .egress
                .iter()
                .map(|out| format!("{} ({})", out.port, tag(out.tag)))
                .collect();
            let _ = writeln!(out, "verdict: forward to {}", egress.join(", "));
        }
        Verdict::Drop(reason) => {
            let _ = writeln!(out, "verdict: drop ({})", reason.name());
        }
    }
    out
}
