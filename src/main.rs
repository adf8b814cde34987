//! The `tapswitch` command.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use tapswitch::config::{Config, PortConfig};
use tapswitch::control::SignalThread;
use tapswitch::{demo, report, switch};

#[derive(Parser)]
#[command(
    name = "tapswitch",
    version,
    about = "A userspace L2 learning switch that owns its TAP devices"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, ports } => run(config, ports),
        Command::Demo => demo::run().map_err(|e| e.to_string()),
        Command::CheckConfig { config } => check_config(config),
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

fn run(path: Option<PathBuf>, ports: Vec<PortConfig>) -> Result<(), String> {
    let config = load_config(path, ports)?;
    if config.ports.is_empty() {
        return Err(
            "no ports configured: give --port NAME[@NETNS] or a [[port]] in the config".into(),
        );
    }
    let (mut dataplane, handle) = switch::build(&config).map_err(|e| e.to_string())?;
    let signals = SignalThread::spawn(handle).map_err(|e| e.to_string())?;
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
