//! `tapswitch reload` and `SIGHUP`: read the config file the switch was started with
//! again and apply the difference through the same code as `port add/del/set`, all of
//! it or none of it.
//!
//! The semantics (README, "Reloading the configuration"):
//! - The file is re-read with the same command line (`--config`, `--port`, `--metrics`,
//!   `--state-dir`), so ports given with `--port` stay.
//! - The file is the wanted state of the ports it lists: a port it adds is created, a
//!   port of the previous file it no longer has is deleted, and a running port's runtime
//!   keys (those `port set` changes) become what the file says, undoing a `port set`
//!   that the file does not repeat. A port the file lists again after a `port del` (or a
//!   device failure) is created again.
//! - Ports added at runtime (`port add`) that the file does not list are kept, as
//!   `ovs-vsctl`'s database keeps its ports whatever a file says; if the file now lists
//!   one by name, the file's table applies to it and it becomes one of the file's.
//! - A key fixed at creation ([`crate::config::FIXED_AT_CREATION`]: kind, netns,
//!   device, queues, ...) that differs is refused, naming the port and the key: it
//!   cannot change without deleting the port (and its netdev, addresses and MAC entries),
//!   which a reload does not do behind the operator's back.
//! - A switch-wide key (`[switch]`, `[evpn]`) that differs from the file as last
//!   loaded is refused the same way: none of them changes on a running switch.
//! - Whole or nothing: the file is parsed and validated, every difference planned and
//!   checked before anything changes; the changes are then made in the order adds, sets,
//!   deletes (adds are the steps most likely to fail: a missing namespace, a busy UDP
//!   port), and if one fails the ones already made are undone, so the switch runs as
//!   before. Every reload, applied or not, is an event (`config_reloaded`,
//!   `config_reload_failed`) and a log line.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::protocol::{Event, PortKeysChanged, ReloadReply, ReloadTrigger};
use super::{
    ErrorKind, RequestError, Shared, State, add_port_locked, counters, lock, prune_config, publish,
    remove_port, save_now, set_port_locked,
};
use crate::config::{Config, EvpnConfig, PortConfig, PortPatch, SwitchConfig};
use crate::daemon::RunOptions;
use crate::dataplane::RemovalCause;

/// What a reload reads: the command line the switch was started with, and the
/// switch-wide part of the configuration it loaded (a reload compares the file's with
/// it: the live one has the metrics address resolved). Handed over on `upgrade`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReloadSource {
    pub options: RunOptions,
    pub switch: SwitchConfig,
    #[serde(default)]
    pub evpn: Option<EvpnConfig>,
}

impl ReloadSource {
    /// The source of a switch started with `options`, which loaded `config`. A relative
    /// `--config` path is made absolute here, so it names the same file later.
    pub fn new(mut options: RunOptions, config: &Config) -> Self {
        if let Some(path) = &options.config
            && let Ok(absolute) = std::path::absolute(path)
        {
            options.config = Some(absolute);
        }
        Self {
            options,
            switch: config.switch.clone(),
            evpn: config.evpn.clone(),
        }
    }
}

/// What the file changes, checked, not yet applied.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    add: Vec<PortConfig>,
    /// Port, the patch of its runtime keys, and their names.
    set: Vec<(String, PortPatch, Vec<&'static str>)>,
    remove: Vec<String>,
    /// Ports added at runtime that the file now lists: they become the file's.
    claimed: Vec<String>,
    /// Ports added at runtime that the file does not list: kept.
    kept: Vec<String>,
}

/// Compares the file's configuration `file` with what runs (`live` ports, of which
/// `runtime` were added at runtime; `source` as last loaded). Refusals name the key.
fn plan(
    source: &ReloadSource,
    file: &Config,
    live: &Config,
    runtime: &[String],
) -> Result<Plan, RequestError> {
    refuse_switch_changes(source, file)?;
    let mut plan = Plan::default();
    for port in &file.ports {
        let Some(running) = live.ports.iter().find(|p| p.name == port.name) else {
            plan.add.push(port.clone());
            continue;
        };
        let difference = running.difference(port);
        if let Some(key) = difference.fixed.first() {
            return Err(RequestError::invalid_value(format!(
                "port {}: {key}: fixed at creation, cannot change on a running port (the \
                 switch runs {}, the file says {}); put it back, or delete the port and add \
                 it again (take it out of the file, reload, put it back, reload)",
                port.name,
                key_value(running, key),
                key_value(port, key),
            )));
        }
        if runtime.contains(&port.name) {
            plan.claimed.push(port.name.clone());
        }
        if !difference.runtime.is_empty() {
            plan.set
                .push((port.name.clone(), difference.patch, difference.runtime));
        }
    }
    for port in &live.ports {
        if file.ports.iter().any(|p| p.name == port.name) {
            continue;
        }
        if runtime.contains(&port.name) {
            plan.kept.push(port.name.clone());
        } else {
            plan.remove.push(port.name.clone());
        }
    }
    // The switch as it would run afterwards, checked whole like a file (duplicate VTEPs,
    // an EVPN VNI without its port, ...) before anything changes.
    let mut after = live.clone();
    after.ports.retain(|p| !plan.remove.contains(&p.name));
    for port in after.ports.iter_mut() {
        if let Some(wanted) = file.ports.iter().find(|p| p.name == port.name) {
            *port = wanted.clone();
        }
    }
    after.ports.extend(plan.add.iter().cloned());
    after.validate().map_err(|e| {
        RequestError::invalid_value(format!(
            "the switch would not be valid with the file's ports and those added at runtime: {e}"
        ))
    })?;
    Ok(plan)
}

/// `key` of `port`'s `[[port]]` table as JSON text (`none` when absent).
fn key_value(port: &PortConfig, key: &str) -> String {
    match serde_json::to_value(port) {
        Ok(serde_json::Value::Object(table)) => table
            .get(key)
            .map_or_else(|| "none".to_owned(), |value| value.to_string()),
        _ => "?".to_owned(),
    }
}

/// Refuses a file whose `[switch]` or `[evpn]` differs from what the switch loaded.
fn refuse_switch_changes(source: &ReloadSource, file: &Config) -> Result<(), RequestError> {
    let table = |switch: &SwitchConfig| match serde_json::to_value(switch) {
        Ok(serde_json::Value::Object(table)) => table,
        _ => serde_json::Map::new(),
    };
    let (loaded, wanted) = (table(&source.switch), table(&file.switch));
    let mut keys: Vec<&String> = loaded.keys().chain(wanted.keys()).collect();
    keys.sort();
    keys.dedup();
    // Keys at their default may be left out of the table (`cpu_affinity = "auto"`).
    let shown = |value: Option<&serde_json::Value>| {
        value.map_or_else(|| "the default".to_owned(), ToString::to_string)
    };
    if let Some(key) = keys
        .into_iter()
        .find(|key| loaded.get(*key) != wanted.get(*key))
    {
        return Err(RequestError::invalid_value(format!(
            "switch.{key}: cannot change on a running switch (it runs with {}, the file says \
             {}); put it back to reload the ports, and restart the switch to change it",
            shown(loaded.get(key)),
            shown(wanted.get(key)),
        )));
    }
    if source.evpn != file.evpn {
        return Err(RequestError::invalid_value(
            "evpn: the [evpn] table cannot change on a running switch; put it back to reload \
             the ports, and restart the switch to change it",
        ));
    }
    Ok(())
}

/// A change already made, and how to undo it.
enum Undo {
    /// A port added: delete it.
    Delete(String),
    /// A port's runtime keys changed: this patch puts them back.
    Set(String, PortPatch),
    /// A port deleted: add it again.
    Add(PortConfig),
}

/// Reloads the config file (for `trigger`): the reply, or why nothing changed. Logged
/// and published as an event either way.
pub(super) fn reload(shared: &Shared, trigger: ReloadTrigger) -> Result<ReloadReply, RequestError> {
    let result = reload_file(shared);
    match &result {
        Ok(reply) => {
            info!(
                ?trigger,
                file = %reply.file.display(),
                added = ?reply.added,
                removed = ?reply.removed,
                changed = ?reply.changed.iter().map(|c| &c.port).collect::<Vec<_>>(),
                kept = ?reply.kept,
                "configuration reloaded"
            );
            publish(
                shared,
                Event::ConfigReloaded {
                    trigger,
                    changes: reply.clone(),
                },
            );
        }
        Err(error) => {
            warn!(?trigger, %error, "configuration not reloaded; nothing changed");
            publish(
                shared,
                Event::ConfigReloadFailed {
                    trigger,
                    error: error.message.clone(),
                },
            );
        }
    }
    result
}

fn reload_file(shared: &Shared) -> Result<ReloadReply, RequestError> {
    let counters = counters(&shared.dataplane)?;
    let mut guard = lock(&shared.state);
    let state = &mut *guard;
    let Some(source) = state.reload.clone() else {
        return Err(RequestError::new(
            ErrorKind::Unsupported,
            "this switch does not know the command line it was started with (it took over \
             from an older version with `upgrade`); restart it to reload its file",
        ));
    };
    let Some(file) = source.options.config.clone() else {
        return Err(RequestError::new(
            ErrorKind::Unsupported,
            "the switch was started without a config file (--config): there is nothing to \
             read again; change it with `tapswitch port add/del/set`",
        ));
    };
    let wanted = crate::daemon::configure(source.options.clone())
        .map_err(|e| RequestError::invalid_value(e.to_string()))?;
    prune_config(state, &counters);
    let plan = plan(&source, &wanted, &state.config, &state.runtime_ports)?;
    apply(shared, state, &plan)?;
    state
        .runtime_ports
        .retain(|name| !plan.claimed.contains(name) && !plan.add.iter().any(|p| p.name == *name));
    save_now(shared, state);
    Ok(reply(file, &plan))
}

/// Makes the changes of `plan`, undoing those made when one fails.
fn apply(shared: &Shared, state: &mut State, plan: &Plan) -> Result<(), RequestError> {
    let mut done = Vec::new();
    let result = (|| {
        for port in &plan.add {
            add_port_locked(shared, state, port.clone())
                .map_err(|e| e.context(format_args!("adding port {}", port.name)))?;
            done.push(Undo::Delete(port.name.clone()));
        }
        for (name, patch, _) in &plan.set {
            let old = state
                .config
                .ports
                .iter()
                .find(|p| p.name == *name)
                .cloned()
                .ok_or_else(|| RequestError::not_found(format!("no port named {name:?}")))?;
            set_port_locked(shared, state, name, patch)?;
            let new = state.config.ports.iter().find(|p| p.name == *name);
            if let Some(new) = new {
                done.push(Undo::Set(name.clone(), new.difference(&old).patch));
            }
        }
        for name in &plan.remove {
            let old = state.config.ports.iter().find(|p| p.name == *name).cloned();
            remove_port(shared, state, name, true, RemovalCause::Requested)
                .map_err(|e| e.context(format_args!("deleting port {name}")))?;
            done.extend(old.map(Undo::Add));
        }
        Ok(())
    })();
    if result.is_err() {
        for undo in done.into_iter().rev() {
            let undone = match &undo {
                Undo::Delete(name) => {
                    remove_port(shared, state, name, true, RemovalCause::Requested).map(drop)
                }
                Undo::Set(name, patch) => set_port_locked(shared, state, name, patch).map(drop),
                Undo::Add(port) => add_port_locked(shared, state, port.clone()).map(|_| {
                    // It was one of the file's ports, not one added at runtime.
                    state.runtime_ports.retain(|name| *name != port.name);
                }),
            };
            if let Err(error) = undone {
                warn!(%error, "undoing part of a failed reload failed");
            }
        }
    }
    result
}

fn reply(file: PathBuf, plan: &Plan) -> ReloadReply {
    ReloadReply {
        file,
        added: plan.add.iter().map(|p| p.name.clone()).collect(),
        removed: plan.remove.clone(),
        changed: plan
            .set
            .iter()
            .map(|(port, _, keys)| PortKeysChanged {
                port: port.clone(),
                keys: keys.iter().map(|key| (*key).to_owned()).collect(),
            })
            .collect(),
        kept: plan.kept.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml(text, "test").unwrap()
    }

    fn source(config: &Config) -> ReloadSource {
        ReloadSource::new(RunOptions::default(), config)
    }

    const TWO: &str = r#"
        [[port]]
        name = "p1"
        [[port]]
        name = "p2"
        vlan_mode = "access"
        vlan = 10
    "#;

    #[test]
    fn the_plan_adds_removes_and_patches_and_keeps_runtime_ports() {
        let mut live = config(TWO);
        live.ports.push(PortConfig::named("rt1"));
        live.ports.push(PortConfig::named("rt2"));
        let runtime = ["rt1".to_owned(), "rt2".to_owned()];
        let file = config(
            r#"
            [[port]]
            name = "p2"
            vlan_mode = "access"
            vlan = 20
            [[port]]
            name = "p3"
            [[port]]
            name = "rt2"
        "#,
        );
        let plan = plan(&source(&live), &file, &live, &runtime).unwrap();
        assert_eq!(
            plan.add.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["p3"]
        );
        assert_eq!(plan.remove, ["p1"]);
        assert_eq!(plan.kept, ["rt1"]);
        assert_eq!(plan.claimed, ["rt2"]);
        let [(name, patch, keys)] = &plan.set[..] else {
            panic!("{:?}", plan.set)
        };
        assert_eq!(
            (name.as_str(), keys.as_slice()),
            ("p2", ["vlan"].as_slice())
        );
        assert_eq!(patch.vlan, Some(Some(20)));
        assert_eq!(patch.vlan_mode, None);
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let live = config(TWO);
        let plan = plan(&source(&live), &live, &live, &[]).unwrap();
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn fixed_keys_and_switch_keys_are_refused_by_name() {
        let live = config(TWO);
        let file = config(&format!("{TWO}\nnetns = \"elsewhere\""));
        let error = plan(&source(&live), &file, &live, &[]).unwrap_err();
        assert!(
            error
                .message
                .starts_with("port p2: netns: fixed at creation"),
            "{error}"
        );
        assert!(error.message.contains("\"elsewhere\""), "{error}");
        let file = config(&format!("[switch]\nthreads = 2\n{TWO}"));
        let error = plan(&source(&live), &file, &live, &[]).unwrap_err();
        assert!(
            error.message.starts_with("switch.threads: cannot change"),
            "{error}"
        );
        assert!(
            error.message.contains("it runs with 1, the file says 2"),
            "{error}"
        );
        // A key left out of the table when at its default ("auto") is still compared.
        let file = config(&format!("[switch]\ncpu_affinity = [1]\n{TWO}"));
        let error = plan(&source(&live), &file, &live, &[]).unwrap_err();
        assert!(
            error
                .message
                .starts_with("switch.cpu_affinity: cannot change on a running switch (it runs with the default, the file says [1])"),
            "{error}"
        );
        let file = config(&format!("[switch]\ncpu_affinity = \"auto\"\n{TWO}"));
        assert!(plan(&source(&live), &file, &live, &[]).is_ok());
    }

    #[test]
    fn reload_events_are_flat_lines_that_read_back_as_known_events() {
        use super::super::protocol::{EventLine, StreamEvent};
        let changes = ReloadReply {
            file: "/etc/tapswitch/switch.toml".into(),
            added: vec!["p3".into()],
            removed: vec![],
            changed: vec![PortKeysChanged {
                port: "p2".into(),
                keys: vec!["vlan".into()],
            }],
            kept: vec!["rt".into()],
        };
        let reloaded = StreamEvent {
            event: Event::ConfigReloaded {
                trigger: ReloadTrigger::Signal,
                changes,
            },
            time: Some(1.5),
        };
        let wire = serde_json::to_value(&reloaded).unwrap();
        assert_eq!(wire["event"], "config_reloaded");
        assert_eq!(wire["trigger"], "signal");
        assert_eq!(wire["added"], serde_json::json!(["p3"]));
        assert_eq!(wire["changed"][0]["keys"], serde_json::json!(["vlan"]));
        let failed = StreamEvent {
            event: Event::ConfigReloadFailed {
                trigger: ReloadTrigger::Request,
                error: "line 3".into(),
            },
            time: Some(2.0),
        };
        for line in [reloaded, failed] {
            let wire = serde_json::to_value(&line).unwrap();
            assert_eq!(
                EventLine::deserialize(&wire).unwrap(),
                EventLine::Known(line),
                "{wire}"
            );
        }
    }
}
