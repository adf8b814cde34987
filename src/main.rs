//! The `tapswitch` command.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use tracing_subscriber::EnvFilter;

use tapswitch::config::{Config, PortConfig, VmMode, parse_metrics_addr};
use tapswitch::control::{
    ControlClient, ControlServer, ControlSocket, DEFAULT_CONTROL_PATH, EVENT_QUEUE_LEN, Request,
    SignalThread,
};
use tapswitch::dataplane::PortUpdate;
use tapswitch::report::reply;
use tapswitch::wire::MacAddr;
use tapswitch::{demo, metrics, report, switch};

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
    /// Run the switch in the foreground until SIGINT/SIGTERM.
    ///
    /// With neither --config nor --port it runs on the embedded default
    /// configuration. SIGUSR1 prints counters and the MAC table as one JSON line.
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
    Add {
        #[arg(value_name = "NAME[@NETNS]")]
        port: PortConfig,
        #[command(flatten)]
        options: PortOptions,
        #[command(flatten)]
        vm: VmOptions,
    },
    /// Stop forwarding on a port and close its TAP (deleting it unless persistent).
    Del { name: String },
    /// Change a running port.
    Set {
        name: String,
        /// MTU of the netdev and of the switch's frame-length check.
        #[arg(long)]
        mtu: Option<u32>,
        /// Forward frames from and to the port.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Keep the TAP but drop every frame from and to it.
        #[arg(long)]
        disable: bool,
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
    /// uid allowed to attach to the TAP.
    #[arg(long)]
    owner: Option<u32>,
    /// gid allowed to attach to the TAP.
    #[arg(long)]
    group: Option<u32>,
    /// Create the port disabled.
    #[arg(long)]
    disabled: bool,
}

impl PortOptions {
    fn apply(self, port: &mut PortConfig) {
        if let Some(mtu) = self.mtu {
            port.mtu = mtu;
        }
        port.mac = self.mac.or(port.mac);
        port.persistent |= self.persistent;
        port.offloads = self.offloads.or(port.offloads);
        port.txqueuelen = self.txqueuelen.or(port.txqueuelen);
        port.owner = self.owner.or(port.owner);
        port.group = self.group.or(port.group);
        port.enabled &= !self.disabled;
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
    fn apply(self, port: &mut PortConfig) {
        if self.vm.is_none() {
            return;
        }
        port.vm = self.vm;
        port.vm_mode = self.mode.or(port.vm_mode);
        port.vm_queues = self.queues.or(port.vm_queues);
        // The endpoint of a VM port is the guest: --mac is its NIC's address.
        port.vm_mac = port.mac.take().or(port.vm_mac);
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
        .init();
    let cli = Cli::parse();
    let control = cli.control;
    let json = cli.json;
    let result = match cli.command {
        Command::Run {
            config,
            ports,
            metrics,
        } => run(config, ports, metrics, &control),
        Command::Demo => demo::run().map_err(|e| e.to_string()),
        Command::CheckConfig { config } => check_config(config),
        Command::Events => stream_events(&control, json),
        command => control_request(&control, json, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tapswitch: {message}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<PathBuf>, ports: Vec<PortConfig>) -> Result<Config, String> {
    let mut config = match &path {
        Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
        None if ports.is_empty() => Config::embedded_default(),
        None => Config::default(),
    };
    config.ports.extend(ports);
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

fn run(
    path: Option<PathBuf>,
    ports: Vec<PortConfig>,
    metrics_addr: Option<String>,
    control: &std::path::Path,
) -> Result<(), String> {
    let mut config = load_config(path, ports)?;
    if let Some(addr) = metrics_addr {
        parse_metrics_addr(&addr).map_err(|reason| format!("--metrics: {reason}"))?;
        config.switch.metrics = Some(addr);
    }
    if config.ports.is_empty() {
        return Err(
            "no ports configured: give --port NAME[@NETNS] or a [[port]] in the config".into(),
        );
    }
    // Before any TAP exists: a second switch on the same socket stops here.
    let socket = ControlSocket::bind(control).map_err(|e| e.to_string())?;
    let (mut dataplane, handle) = switch::build(&config).map_err(|e| e.to_string())?;
    let events = dataplane.subscribe_events(EVENT_QUEUE_LEN);
    let signals = SignalThread::spawn(handle.clone()).map_err(|e| e.to_string())?;
    if let Some(addr) = &config.switch.metrics {
        let addr = parse_metrics_addr(addr).expect("validated above");
        let bound = metrics::spawn(addr, handle.clone()).map_err(|e| e.to_string())?;
        // `config show` tells where metrics really are (port 0 picks one).
        config.switch.metrics = Some(bound.to_string());
    }
    let server =
        ControlServer::spawn(socket, handle, config.clone(), events).map_err(|e| e.to_string())?;
    let names: Vec<&str> = config.ports.iter().map(|p| p.name.as_str()).collect();
    {
        let mut stdout = std::io::stdout().lock();
        // Scripts and tests wait for this line: the switch is forwarding.
        let _ = writeln!(
            stdout,
            "tapswitch ready: {} ports ({})",
            names.len(),
            names.join(", ")
        )
        .and_then(|()| stdout.flush());
    }
    let result = dataplane.run();
    server.stop();
    signals.stop();
    let snapshot = result.map_err(|e| e.to_string())?;
    eprint!("{}", report::port_table(&snapshot));
    // Dropping the dataplane closes the TAP fds: non-persistent TAPs disappear.
    drop(dataplane);
    Ok(())
}

fn check_config(path: Option<PathBuf>) -> Result<(), String> {
    let config = match path {
        Some(path) => Config::from_file(&path).map_err(|e| e.to_string())?,
        None => Config::embedded_default(),
    };
    print!("{}", toml::to_string(&config).map_err(|e| e.to_string())?);
    Ok(())
}

/// Sends one request for `command` to the switch at `control` and prints the reply.
fn control_request(control: &std::path::Path, json: bool, command: Command) -> Result<(), String> {
    let (request, render): (Request, fn(&Value) -> String) = match command {
        Command::Port(PortCommand::Add {
            mut port,
            options,
            vm,
        }) => {
            options.apply(&mut port);
            vm.apply(&mut port);
            (Request::PortAdd { port }, reply::port)
        }
        Command::Port(PortCommand::Del { name }) => (Request::PortDel { name }, reply::port),
        Command::Port(PortCommand::Set {
            name,
            mtu,
            enable,
            disable,
        }) => {
            let enabled = match (enable, disable) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let set = PortUpdate { mtu, enabled };
            (Request::PortSet { name, set }, reply::port)
        }
        Command::Port(PortCommand::List) => (Request::PortList {}, reply::port_list),
        Command::Fdb(FdbCommand::Show) => (Request::FdbShow {}, reply::fdb),
        Command::Fdb(FdbCommand::Add { mac, port, vlan }) => {
            (Request::FdbAdd { mac, port, vlan }, |_| String::new())
        }
        Command::Fdb(FdbCommand::Del { mac, vlan }) => {
            (Request::FdbDel { mac, vlan }, |_| String::new())
        }
        Command::Fdb(FdbCommand::Flush { port }) => (Request::FdbFlush { port }, |r| {
            format!("flushed {} entries\n", r["removed"])
        }),
        Command::Stats { port } => (Request::Stats { port }, reply::stats),
        Command::LibvirtXml { port } => (Request::LibvirtXml { name: port }, |r| {
            r["xml"].as_str().unwrap_or_default().to_owned()
        }),
        Command::Config(ConfigCommand::Show) => (Request::ConfigShow {}, |r| {
            serde_json::from_value::<Config>(r.clone())
                .map_err(|e| e.to_string())
                .and_then(|config| toml::to_string(&config).map_err(|e| e.to_string()))
                .unwrap_or_else(|e| format!("unreadable config in the reply ({e}): {r}\n"))
        }),
        Command::Run { .. } | Command::Demo | Command::CheckConfig { .. } | Command::Events => {
            unreachable!("served in main")
        }
    };
    let mut client = ControlClient::connect(control).map_err(|e| e.to_string())?;
    let result = client.request(&request).map_err(|e| e.to_string())?;
    let out = if json {
        format!("{result:#}\n")
    } else {
        render(&result)
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
        .request(&Request::Events {})
        .map_err(|e| e.to_string())?;
    loop {
        let event = match client.next_line() {
            Ok(event) => event,
            // The switch stopped: the stream is over.
            Err(_) => return Ok(()),
        };
        let line = if json {
            event.to_string()
        } else {
            reply::event(&event)
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
