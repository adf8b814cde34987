//! The `tapswitch` command.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use report::reply;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tapswitch::config::{Config, PortConfig, PortSettings, VmMode, setting_value};
use tapswitch::control::protocol::{FdbFlushed, HandedOver, LibvirtXml};
use tapswitch::control::{
    ControlClient, DEFAULT_CONTROL_PATH, FdbShow, PortList, PortReply, Request, Stats,
};
use tapswitch::daemon::{self, DaemonError, RunOptions};
use tapswitch::dataplane::Snapshot;
use tapswitch::sys::privileges;
use tapswitch::wire::MacAddr;
use tapswitch::{doctor, switch};

mod demo;
mod report;

#[derive(Parser)]
#[command(
    name = "tapswitch",
    version,
    about = "A userspace L2 learning switch that owns its TAP devices"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Control socket of the switch (`run` listens there, the others connect).
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_CONTROL_PATH)]
    control: PathBuf,
    /// Print replies as JSON (one document, or one line per event) instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
// Built once from the command line: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run the switch in the foreground until SIGINT/SIGTERM/SIGQUIT.
    ///
    /// With neither --config nor --port it runs on the embedded default
    /// configuration. SIGUSR1 prints counters and the MAC table as one JSON line;
    /// SIGHUP and other signals are logged and change nothing (README, Signals).
    Run {
        /// TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// A port: NAME creates TAP NAME here; NAME@NETNS creates it in the
        /// existing network namespace NETNS. Repeatable; adds to --config.
        #[arg(long = "port", short, value_name = "NAME[@NETNS]")]
        ports: Vec<PortConfig>,
        /// Serve Prometheus metrics at HOST:PORT (a bare PORT means 127.0.0.1);
        /// overrides `switch.metrics` of the config.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
        /// Keep the state file (ports added at runtime, the MAC table) here, and
        /// restore it at start; overrides `switch.state_dir` (default /var/lib/tapswitch).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// (Internal, set by `upgrade`) take over a running switch's ports,
        /// control socket and MAC table from this inherited socket.
        #[arg(long, hide = true, value_name = "FD", conflicts_with_all = ["config", "ports", "state_dir"])]
        takeover_fd: Option<i32>,
    },
    /// Restart the running switch without losing a frame: start BINARY (by
    /// default the running one's) and hand it every TAP, the control socket
    /// and the MAC table; the old process exits once the new one forwards.
    Upgrade {
        #[arg(long)]
        binary: Option<PathBuf>,
    },
    /// Add, remove, change or list ports of a running switch.
    #[command(subcommand)]
    Port(PortCommand),
    /// Show or change the MAC table of a running switch.
    #[command(subcommand)]
    Fdb(FdbCommand),
    /// Per-port counters, drops by reason, MAC table and loop totals.
    Stats {
        /// Only this port.
        port: Option<String>,
    },
    /// Stream events (MACs learned and moved, ports added, removed, changed,
    /// MAC table flushes) until interrupted.
    Events,
    /// The configuration of a running switch.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The libvirt `<interface>` element of a VM port (`port add --vm`), to put into the
    /// domain's `<devices>`.
    LibvirtXml {
        /// The VM port.
        port: String,
    },
    /// Create three namespaces, connect them through the switch, prove all
    /// pairs can ping, show the MAC table and counters, and clean up.
    Demo,
    /// Inspect the running switch and its ports; name misconfigurations and their fixes.
    ///
    /// Exits 1 when any finding is an error. Run as root: it enters the ports'
    /// namespaces and reads the switch's /proc entries.
    Doctor,
    /// Validate a configuration file and print it with defaults filled in.
    CheckConfig {
        /// TOML configuration file (the embedded default when omitted).
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
// Built once from the command line: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum PortCommand {
    /// Create a TAP port (in namespace NETNS with NAME@NETNS) and start forwarding on it.
    ///
    /// With --vm DOMAIN the port is a libvirt domain's NIC: the switch also creates the device
    /// QEMU opens (a passthru macvtap on the port, or with --mode glue the VM's own TAP glued
    /// to it), hot-plugs it when the domain runs, and otherwise waits for the domain (see
    /// `libvirt-xml`). --mac is then the guest's MAC.
    ///
    /// With --netdev DEV the port is an existing netdev the switch binds an AF_PACKET socket
    /// to (`tapswitch port add up0 --netdev eth1`); `port del` leaves the device as it is.
    Add {
        #[arg(value_name = "NAME[@NETNS]")]
        port: PortConfig,
        #[command(flatten)]
        options: PortOptions,
        #[command(flatten)]
        features: FeatureOptions,
        #[command(flatten)]
        vm: VmOptions,
    },
    /// Stop forwarding on a port and close its TAP (deleting it unless persistent or adopted).
    Del { name: String },
    /// Change a running port, as a whole or not at all.
    ///
    /// Options are the `[[port]]` keys of the config file with the same values
    /// (`--mac-limit 16` is `mac_limit = 16`); `none` removes a setting, as if
    /// the key were not in the table.
    Set {
        name: String,
        /// MTU of the netdev and of the switch's frame-length check.
        #[arg(long, value_name = "N")]
        mtu: Option<String>,
        /// MAC of the netdev (the endpoint's address, the one `bind_mac` binds).
        #[arg(long, value_name = "MAC")]
        mac: Option<String>,
        /// Transmit queue length of the netdev.
        #[arg(long, value_name = "N")]
        txqueuelen: Option<String>,
        /// Forward frames from and to the port (also after a MAC-limit shutdown).
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Keep the TAP but drop every frame from and to it.
        #[arg(long)]
        disable: bool,
        #[command(flatten)]
        features: FeatureOptions,
    },
    /// The ports and their settings.
    List,
}

/// The settings of a `[[port]]` in the config file, as options.
#[derive(Args)]
struct PortOptions {
    #[arg(long)]
    mtu: Option<u32>,
    /// MAC of the netdev (the endpoint's address).
    #[arg(long)]
    mac: Option<MacAddr>,
    /// Keep the TAP when it is deleted from the switch or the switch exits.
    #[arg(long)]
    persistent: bool,
    /// vnet header and offloads on this port (default: the switch's setting).
    #[arg(long, value_name = "BOOL")]
    offloads: Option<bool>,
    #[arg(long)]
    txqueuelen: Option<u32>,
    /// User allowed to attach to the TAP: a name or a uid.
    #[arg(long, value_name = "USER", value_parser = user_id)]
    owner: Option<u32>,
    /// Group allowed to attach to the TAP: a name or a gid.
    #[arg(long, value_name = "GROUP", value_parser = group_id)]
    group: Option<u32>,
    /// Use an existing TAP of this name that the switch did not create (e.g. made with
    /// `ip tuntap add`) as it is: its flags stay and the switch never deletes it.
    #[arg(long)]
    adopt: bool,
    /// Create the port disabled.
    #[arg(long)]
    disabled: bool,
    /// Attach to this existing netdev (a NIC, bond, veth or someone else's TAP) with an
    /// AF_PACKET socket instead of creating a TAP (`kind = "netdev"`, `device = DEV`). The
    /// switch never changes or deletes the device.
    #[arg(long, value_name = "DEV", conflicts_with_all = ["vm", "adopt", "persistent"])]
    netdev: Option<String>,
    /// The namespace the port's netdev or TAP is in (the same as NAME@NETNS).
    #[arg(long, value_name = "NS")]
    netns: Option<String>,
}

impl PortOptions {
    /// Sets `port`'s namespace, MTU and state, and returns the other options as the
    /// `[[port]]` keys they are, for [`PortConfig::with_settings`], which checks them
    /// against the port's kind by name (`mac: not with kind = "netdev"`).
    fn apply(self, port: &mut PortConfig) -> Result<PortSettings, String> {
        if let Some(netns) = self.netns {
            if let Some(named) = port.netns.as_ref().filter(|named| **named != netns) {
                return Err(format!(
                    "--netns {netns} contradicts {}@{named}: give the namespace once",
                    port.name
                ));
            }
            port.netns = Some(netns);
        }
        if let Some(mtu) = self.mtu {
            port.mtu = mtu;
        }
        port.enabled &= !self.disabled;
        let given: [(&str, Option<serde_json::Value>); 9] = [
            ("kind", self.netdev.is_some().then(|| "netdev".into())),
            ("device", self.netdev.map(Into::into)),
            ("mac", self.mac.map(|mac| mac.to_string().into())),
            ("persistent", self.persistent.then_some(true.into())),
            ("offloads", self.offloads.map(Into::into)),
            ("txqueuelen", self.txqueuelen.map(Into::into)),
            ("owner", self.owner.map(Into::into)),
            ("group", self.group.map(Into::into)),
            ("adopt", self.adopt.then_some(true.into())),
        ];
        Ok(given
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_owned(), value?)))
            .collect())
    }
}

fn user_id(text: &str) -> Result<u32, String> {
    privileges::user_id(text).map_err(|e| e.to_string())
}

fn group_id(text: &str) -> Result<u32, String> {
    privileges::group_id(text).map_err(|e| e.to_string())
}

/// Switch features of a port, named and written as the `[[port]]` keys of the
/// config file (`--vlan-mode access` is `vlan_mode = "access"`); `none` removes a
/// setting. See README (Switch features).
#[derive(Args)]
#[command(next_help_heading = "Switch features (the [[port]] keys of the config file)")]
struct FeatureOptions {
    /// `access` (one untagged VLAN), `trunk` (tagged VLANs), `none` (transparent).
    #[arg(long, value_name = "MODE")]
    vlan_mode: Option<String>,
    /// The VLAN of an access port, 1..=4094.
    #[arg(long, value_name = "ID")]
    vlan: Option<String>,
    /// The tagged VLANs of a trunk: ids and ranges, `10,20,100-199`.
    #[arg(long, value_name = "LIST")]
    allowed_vlans: Option<String>,
    /// The VLAN a trunk sends and receives untagged.
    #[arg(long, value_name = "ID")]
    native_vlan: Option<String>,
    /// Most MAC addresses learned on the port.
    #[arg(long, value_name = "N")]
    mac_limit: Option<String>,
    /// Beyond the MAC limit: `drop` (default), `drop+log`, `shutdown`.
    #[arg(long, value_name = "ACTION")]
    mac_limit_action: Option<String>,
    /// Learned MACs never age out or move.
    #[arg(long, value_name = "BOOL")]
    sticky_macs: Option<String>,
    /// Anti-spoofing: the only source MACs accepted, `MAC,MAC`.
    #[arg(long, value_name = "LIST")]
    allowed_macs: Option<String>,
    /// Anti-spoofing: accept the port's `mac` as a source (besides `allowed_macs`).
    #[arg(long, value_name = "BOOL")]
    bind_mac: Option<String>,
    /// Ingress caps in packets per second:
    /// `broadcast_pps = N, multicast_pps = N, unknown_unicast_pps = N` (any of them).
    #[arg(long, value_name = "RATES")]
    storm_control: Option<String>,
    /// Isolated ports exchange frames only with non-isolated ones.
    #[arg(long, value_name = "BOOL")]
    isolated: Option<String>,
    /// Whether the port receives floods of unknown unicast.
    #[arg(long, value_name = "BOOL")]
    flood_unknown_unicast: Option<String>,
    /// Whether the port receives multicast floods.
    #[arg(long, value_name = "BOOL")]
    flood_multicast: Option<String>,
    /// Whether the port receives broadcasts.
    #[arg(long, value_name = "BOOL")]
    flood_broadcast: Option<String>,
}

impl FeatureOptions {
    /// The options given, as `[[port]]` keys and values.
    fn settings(self) -> PortSettings {
        let given = [
            ("vlan_mode", self.vlan_mode),
            ("vlan", self.vlan),
            ("allowed_vlans", self.allowed_vlans),
            ("native_vlan", self.native_vlan),
            ("mac_limit", self.mac_limit),
            ("mac_limit_action", self.mac_limit_action),
            ("sticky_macs", self.sticky_macs),
            ("allowed_macs", self.allowed_macs),
            ("bind_mac", self.bind_mac),
            ("storm_control", self.storm_control),
            ("isolated", self.isolated),
            ("flood_unknown_unicast", self.flood_unknown_unicast),
            ("flood_multicast", self.flood_multicast),
            ("flood_broadcast", self.flood_broadcast),
        ];
        given
            .into_iter()
            .filter_map(|(key, text)| Some((key.to_owned(), setting_value(key, &text?))))
            .collect()
    }
}

/// A VM port's settings (`vm`, `vm_mode`, `vm_queues` of a `[[port]]`).
#[derive(Args)]
struct VmOptions {
    /// The libvirt domain whose NIC this port is.
    #[arg(long, value_name = "DOMAIN")]
    vm: Option<String>,
    /// How the guest NIC reaches the port.
    #[arg(long, value_name = "macvtap|glue", requires = "vm")]
    mode: Option<VmMode>,
    /// virtio-net queue pairs of the guest NIC.
    #[arg(long, value_name = "N", requires = "vm")]
    queues: Option<u32>,
}

impl VmOptions {
    /// Adds the VM keys to `settings` (those of [`PortOptions::apply`]).
    fn apply(self, settings: &mut PortSettings) {
        let Some(vm) = self.vm else {
            return;
        };
        settings.insert("vm".to_owned(), vm.into());
        if let Some(mode) = self.mode {
            let mode = serde_json::to_value(mode).expect("a VM mode serialises");
            settings.insert("vm_mode".to_owned(), mode);
        }
        if let Some(queues) = self.queues {
            settings.insert("vm_queues".to_owned(), queues.into());
        }
        // The endpoint of a VM port is the guest: --mac is its NIC's address.
        if let Some(mac) = settings.remove("mac") {
            settings.insert("vm_mac".to_owned(), mac);
        }
    }
}

#[derive(Subcommand)]
enum FdbCommand {
    /// The MAC table.
    Show,
    /// Pin MAC to PORT with a static entry.
    Add {
        mac: MacAddr,
        port: String,
        #[arg(long, default_value_t = 0)]
        vlan: u16,
    },
    /// Remove the entry for MAC, static or learned.
    Del {
        mac: MacAddr,
        #[arg(long, default_value_t = 0)]
        vlan: u16,
    },
    /// Forget learned entries (static ones stay); with --port, every entry of that port.
    Flush {
        #[arg(long)]
        port: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// The running configuration, hot-plugged ports included, as TOML.
    Show,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::stderr().is_terminal())
        // A log line that cannot be written (the terminal of a foreground `run` was
        // closed: EIO) is lost, not reported on that same stderr, which would panic.
        .log_internal_errors(false)
        .init();
    let cli = Cli::parse();
    let control = cli.control;
    let json = cli.json;
    let result = match cli.command {
        Command::Run {
            config: _,
            ports: _,
            metrics: _,
            state_dir: _,
            takeover_fd: Some(fd),
        } => serve(daemon::take_over(fd, &control)),
        Command::Run {
            config,
            ports,
            metrics,
            state_dir,
            takeover_fd: None,
        } => {
            let options = RunOptions {
                config,
                ports,
                metrics,
                state_dir,
            };
            serve(daemon::run(options, &control))
        }
        Command::Demo => demo::run().map_err(|e| e.to_string()),
        Command::CheckConfig { config } => check_config(config),
        Command::Events => stream_events(&control, json),
        Command::Doctor => return doctor(&control, json),
        command => control_request(&control, json, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // Unlike eprintln!, a closed or hung-up stderr does not turn this into a panic.
            let _ = writeln!(std::io::stderr(), "tapswitch: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Serves the switch until it stops, then prints its last counters.
fn serve(started: Result<Snapshot, DaemonError>) -> Result<(), String> {
    let snapshot = started.map_err(|e| e.to_string())?;
    // The counters are for a reader; without one (a closed terminal) the stop is still clean.
    let _ = write!(std::io::stderr(), "{}", report::port_table(&snapshot));
    Ok(())
}

/// Prints doctor's findings; exit status 1 when any is an error.
fn doctor(control: &std::path::Path, json: bool) -> ExitCode {
    let inspection = match doctor::inspect(control) {
        Ok(inspection) => inspection,
        Err(e) => {
            eprintln!("tapswitch doctor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let findings = doctor::diagnose(&inspection);
    let out = if json {
        match serde_json::to_string_pretty(&report::findings::to_json(&findings)) {
            Ok(text) => format!("{text}\n"),
            Err(e) => {
                eprintln!("tapswitch doctor: the report does not serialise: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        report::findings::table(&findings)
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush());
    if doctor::has_errors(&findings) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn check_config(path: Option<PathBuf>) -> Result<(), String> {
    let config = match path {
        Some(path) => Config::from_file(&path).map_err(|e| e.to_string())?,
        None => Config::embedded_default(),
    };
    // What `run` checks of the host before it creates anything.
    switch::preflight(&config).map_err(|e| e.to_string())?;
    print!("{}", toml::to_string(&config).map_err(|e| e.to_string())?);
    Ok(())
}

/// Asks the switch at `control` and decodes the reply as the typed reply `T` of its
/// request; the text is the reply as JSON with `json`, else `render`'s, for people.
fn ask<T: DeserializeOwned + Serialize>(
    control: &std::path::Path,
    request: &Request,
    json: bool,
    render: fn(T) -> String,
) -> Result<String, String> {
    let mut client = ControlClient::connect(control).map_err(|e| e.to_string())?;
    let reply: T = client.request_as(request).map_err(|e| e.to_string())?;
    Ok(if json {
        let value = serde_json::to_value(&reply).map_err(|e| e.to_string())?;
        format!("{value:#}\n")
    } else {
        render(reply)
    })
}

/// Sends one request for `command` to the switch at `control` and prints the reply.
fn control_request(control: &std::path::Path, json: bool, command: Command) -> Result<(), String> {
    let out = match command {
        Command::Port(PortCommand::Add {
            mut port,
            options,
            features,
            vm,
        }) => {
            let mut settings = options.apply(&mut port)?;
            vm.apply(&mut settings);
            settings.extend(features.settings());
            let port = port.with_settings(&settings).map_err(|e| e.to_string())?;
            ask(control, &Request::PortAdd { port }, json, |r: PortReply| {
                reply::port(&r)
            })?
        }
        Command::Port(PortCommand::Del { name }) => {
            ask(control, &Request::PortDel { name }, json, |r: PortReply| {
                reply::port(&r)
            })?
        }
        Command::Port(PortCommand::Set {
            name,
            mtu,
            mac,
            txqueuelen,
            enable,
            disable,
            features,
        }) => {
            let mut set = features.settings();
            for (key, text) in [("mtu", mtu), ("mac", mac), ("txqueuelen", txqueuelen)] {
                if let Some(text) = text {
                    set.insert(key.to_owned(), setting_value(key, &text));
                }
            }
            if enable || disable {
                set.insert("enabled".to_owned(), enable.into());
            }
            ask(
                control,
                &Request::PortSet { name, set },
                json,
                |r: PortReply| reply::port(&r),
            )?
        }
        Command::Port(PortCommand::List) => {
            ask(control, &Request::PortList {}, json, |ports: PortList| {
                reply::port_list(&ports)
            })?
        }
        Command::Fdb(FdbCommand::Show) => {
            ask(control, &Request::FdbShow {}, json, |fdb: FdbShow| {
                reply::fdb(&fdb)
            })?
        }
        Command::Fdb(FdbCommand::Add { mac, port, vlan }) => {
            ask(control, &Request::FdbAdd { mac, port, vlan }, json, |()| {
                String::new()
            })?
        }
        Command::Fdb(FdbCommand::Del { mac, vlan }) => {
            ask(control, &Request::FdbDel { mac, vlan }, json, |()| {
                String::new()
            })?
        }
        Command::Fdb(FdbCommand::Flush { port }) => ask(
            control,
            &Request::FdbFlush { port },
            json,
            |f: FdbFlushed| format!("flushed {} entries\n", f.removed),
        )?,
        Command::Stats { port } => ask(control, &Request::Stats { port }, json, |s: Stats| {
            reply::stats(&s)
        })?,
        Command::Upgrade { binary } => {
            // The switch has its own working directory: a relative path means ours.
            let binary = binary
                .map(|path| {
                    std::path::absolute(&path)
                        .map_err(|e| format!("--binary {}: {e}", path.display()))
                })
                .transpose()?;
            ask(
                control,
                &Request::Upgrade { binary },
                json,
                |new: HandedOver| format!("handed over to pid {}\n", new.pid),
            )?
        }
        Command::LibvirtXml { port } => ask(
            control,
            &Request::LibvirtXml { name: port },
            json,
            |e: LibvirtXml| e.xml,
        )?,
        Command::Config(ConfigCommand::Show) => {
            ask(control, &Request::ConfigShow {}, json, |config: Config| {
                toml::to_string(&config)
                    .unwrap_or_else(|e| format!("the config does not render as TOML ({e})\n"))
            })?
        }
        Command::Run { .. }
        | Command::Demo
        | Command::CheckConfig { .. }
        | Command::Events
        | Command::Doctor => {
            unreachable!("served in main")
        }
    };
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) is the reader's choice, not an error.
    let _ = stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush());
    Ok(())
}

/// Prints events as they come until the switch stops or stdout closes.
fn stream_events(control: &std::path::Path, json: bool) -> Result<(), String> {
    let mut client = ControlClient::connect(control).map_err(|e| e.to_string())?;
    client
        .request_as::<()>(&Request::Events {})
        .map_err(|e| e.to_string())?;
    loop {
        // `--json` passes each line on as the switch sent it: a newer switch may add keys
        // to an event, and decoding and encoding again would drop them.
        let line = if json {
            client.next_line().map(|line| line.to_string())
        } else {
            client.next_event().map(|event| reply::event(&event))
        };
        // The switch stopped: the stream is over.
        let Ok(line) = line else {
            return Ok(());
        };
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return Ok(());
        }
    }
}
