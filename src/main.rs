//! The `tapswitch` command.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use report::reply;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tapswitch::config::{
    Config, DEFAULT_VXLAN_MTU, MAX_VNI, PortConfig, PortSettings, VmMode, setting_value,
};
use tapswitch::control::protocol::{FdbFlushed, HandedOver, LibvirtXml, TraceReply};
use tapswitch::control::rates::Rates;
use tapswitch::control::{
    ControlClient, ControlError, DEFAULT_CONTROL_PATH, ErrorKind, FdbShow, PortList, PortReply,
    Request, Stats,
};
use tapswitch::daemon::{self, DaemonError, RunOptions};
use tapswitch::dataplane::Snapshot;
use tapswitch::sys::privileges;
use tapswitch::wire::MacAddr;
use tapswitch::{doctor, switch};

mod capture;
mod demo;
mod generate;
mod logging;
mod outcome;
mod report;

use outcome::{CliError, json_text};

#[derive(Parser)]
#[command(
    name = "tapswitch",
    // The package version and, from a git checkout, the commit (build.rs).
    version = env!("TAPSWITCH_VERSION"),
    about = "A userspace L2 learning switch that owns its TAP devices",
    after_help = outcome::EXIT_STATUS_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Control socket of the switch (`run` listens there, the others connect).
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "TAPSWITCH_CONTROL",
        default_value = DEFAULT_CONTROL_PATH
    )]
    control: PathBuf,
    /// Print replies as JSON (one compact line per document or event) instead of
    /// tables; a failure is printed as `{"error", "code", "exit_status"}` on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Indent JSON for people (implies --json), as iproute2's `-j -p`.
    #[arg(long, global = true)]
    pretty: bool,
}

#[derive(Subcommand)]
// Built once from the command line: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run the switch in the foreground until SIGINT/SIGTERM/SIGQUIT.
    ///
    /// With neither --config nor --port it runs on the embedded default
    /// configuration. SIGUSR1 prints counters and the MAC table as one JSON line;
    /// SIGHUP reloads the config file (as `tapswitch reload`); other signals are logged
    /// and change nothing (README, Signals).
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
        /// The program to start (default: the running switch's own file).
        #[arg(long, value_name = "PATH")]
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
        /// Rates instead of totals: two snapshots --interval apart, as per-second deltas
        /// (frames, bytes, drops by reason), with the MAC table size and the loop's load.
        #[arg(long)]
        rate: bool,
        /// Seconds between the two snapshots of --rate.
        #[arg(long, value_name = "SECS", default_value_t = 1.0, requires = "rate")]
        interval: f64,
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
    Demo(demo::DemoArgs),
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
    /// BGP EVPN (`[evpn]`): the agent's session with gobgpd and what it learned.
    #[command(subcommand)]
    Evpn(EvpnCommand),
    // ---- trace, rates, top ----
    /// What the switch would do with a frame arriving on PORT now, step by step: VLAN
    /// classification, port security, storm control, MAC table lookup, learning, each
    /// egress port with its tag action or why not, and the verdict. Runs the switch's
    /// own forwarding decision on its live state without changing it (nothing is
    /// learned, no storm token taken).
    Trace(TraceArgs),
    /// Frames as the switch sees them at PORT (or every port): read from it and written
    /// to it, and with --drops those it dropped, each with the reason. Writes pcapng
    /// (a file, or stdout for `tcpdump -r -` or Wireshark) until Ctrl-C or -c N frames.
    /// Capturing never slows forwarding: frames the capture cannot keep up with are
    /// counted as lost and said at the end.
    Capture(capture::CaptureArgs),
    /// Live per-port rates (frames/s, bytes/s, drops/s by reason), the MAC table size
    /// and the loop's load, redrawn every --interval seconds until q (then Enter) or
    /// Ctrl-C. Typing r, t, d or n (then Enter) sorts by rx, tx, drops or name.
    Top {
        /// Sort rows by this (largest first; names ascending).
        #[arg(long, value_enum, default_value = "rx")]
        sort: report::rates::SortKey,
        /// Seconds between redraws.
        #[arg(long, value_name = "SECS", default_value_t = 1.0)]
        interval: f64,
        /// Draw once (after one interval) and exit.
        #[arg(long, conflicts_with = "iterations")]
        once: bool,
        /// Draw this many times and exit.
        #[arg(long, value_name = "N")]
        iterations: Option<u64>,
    },
    // ---- reload ----
    /// Read the running switch's config file again (as SIGHUP does) and apply the
    /// difference: ports added, deleted, runtime keys changed; all of it or, when the file
    /// is bad or asks for a change a running switch cannot make, none of it (the error
    /// says why). Ports added with `port add` that the file does not list are kept.
    Reload,

    // ---- packaging: man pages, completions ----
    /// Print the completion script for SHELL on stdout, e.g.
    /// `tapswitch completions bash > /etc/bash_completion.d/tapswitch` (the package installs
    /// those of bash, zsh and fish).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// (Packaging) write the man pages, tapswitch.1 and one per subcommand, into DIR.
    #[command(hide = true)]
    GenerateMan {
        /// Where the pages go (created if needed).
        dir: PathBuf,
    },
}

#[derive(Args)]
struct TraceArgs {
    /// The ingress port.
    port: String,
    /// Source MAC address.
    #[arg(long, required_unless_present = "frame")]
    src: Option<MacAddr>,
    /// Destination MAC address.
    #[arg(long, required_unless_present = "frame")]
    dst: Option<MacAddr>,
    /// Tag the frame with this 802.1Q VID (0: a priority tag).
    #[arg(long, value_name = "VID", value_parser = clap::value_parser!(u16).range(0..4096))]
    vlan: Option<u16>,
    /// EtherType behind the addresses (and tag): hex with 0x, or decimal.
    #[arg(long, value_name = "TYPE", default_value = "0x0800", value_parser = parse_ethertype)]
    ethertype: u16,
    /// The whole frame instead, as hex from the destination address on (spaces and
    /// colons allowed), e.g. as `tcpdump -xx` prints it.
    #[arg(long, value_name = "HEX", conflicts_with_all = ["src", "dst", "vlan", "ethertype"])]
    frame: Option<String>,
}

impl TraceArgs {
    /// The frame as hex: `--frame`, or one built from the addresses, tag and type,
    /// padded to the 60-byte Ethernet minimum.
    fn frame_hex(&self) -> String {
        if let Some(frame) = &self.frame {
            return frame.clone();
        }
        let (Some(src), Some(dst)) = (self.src, self.dst) else {
            unreachable!("clap requires --src and --dst without --frame")
        };
        let mut bytes = Vec::with_capacity(60);
        bytes.extend_from_slice(&dst.0);
        bytes.extend_from_slice(&src.0);
        if let Some(vid) = self.vlan {
            bytes.extend_from_slice(&0x8100u16.to_be_bytes());
            bytes.extend_from_slice(&vid.to_be_bytes());
        }
        bytes.extend_from_slice(&self.ethertype.to_be_bytes());
        bytes.resize(60, 0);
        tapswitch::control::protocol::hex_frame(&bytes)
    }
}

fn parse_ethertype(text: &str) -> Result<u16, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|e| format!("{text:?} is not an EtherType (0x0800, 2054, ...): {e}"))
}

#[derive(Subcommand)]
enum EvpnCommand {
    /// Connected to gobgpd or not (and why), and per VNI the remote VTEPs and the counts
    /// of local and remote MACs.
    Status,
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
    ///
    /// With --vxlan VNI the port is a VXLAN tunnel (`kind = "vxlan"`): UDP on --local's
    /// address (and --dstport, 4789 by default) in the switch's namespace (or --netns's),
    /// flooding to each --remote VTEP (`tapswitch port add vx0 --vxlan 100 --local 10.1.0.1
    /// --remote 10.1.0.2,10.1.0.3`); its MTU is 1450 unless --mtu says otherwise. `port del`
    /// closes its sockets. --vxlan VLAN=VNI[,VLAN=VNI...] makes it a trunk of those VLANs,
    /// each in its VNI (`vlan_vni`: `--vxlan 100=5000,200=5001`).
    Add {
        /// The port's name (its TAP's, or the switch's name for --netdev/--vxlan), and
        /// the namespace of its netdev after @.
        #[arg(value_name = "NAME[@NETNS]")]
        port: PortConfig,
        /// A port of that name already there is success: it is left as it is and
        /// printed (as `ovs-vsctl --may-exist add-port`).
        #[arg(long)]
        may_exist: bool,
        #[command(flatten)]
        options: PortOptions,
        #[command(flatten)]
        vxlan: VxlanOptions,
        #[command(flatten)]
        features: FeatureOptions,
        #[command(flatten)]
        vm: VmOptions,
    },
    /// Stop forwarding on a port and close its TAP (deleting it unless persistent or adopted).
    Del {
        /// The port.
        name: String,
        /// No port of that name is success (`null` under --json), as `ovs-vsctl
        /// --if-exists del-port`.
        #[arg(long)]
        if_exists: bool,
    },
    /// Change a running port, as a whole or not at all.
    ///
    /// Options are the `[[port]]` keys of the config file with the same values
    /// (`--mac-limit 16` is `mac_limit = 16`); `none` removes a setting, as if
    /// the key were not in the table.
    Set {
        /// The port.
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
    /// One port: its settings, netdev (MAC, ifindex, carrier), VLAN mode and counters.
    Show {
        /// The port.
        name: String,
    },
}

/// The settings of a `[[port]]` in the config file, as options.
#[derive(Args)]
struct PortOptions {
    /// MTU of the netdev and of the switch's frame-length check (1500; 1450 for --vxlan).
    #[arg(long, value_name = "N")]
    mtu: Option<u32>,
    /// MAC of the netdev (the endpoint's address).
    #[arg(long, value_name = "MAC")]
    mac: Option<MacAddr>,
    /// Keep the TAP when it is deleted from the switch or the switch exits.
    #[arg(long)]
    persistent: bool,
    /// vnet header and offloads on this port (default: the switch's setting).
    #[arg(long, value_name = "BOOL")]
    offloads: Option<bool>,
    /// Transmit queue length of the netdev.
    #[arg(long, value_name = "N")]
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

/// A VXLAN port's settings (`kind = "vxlan"`, `vni`, `local`, `remotes`, `udp_port`).
#[derive(Args)]
#[command(next_help_heading = "VXLAN port (kind = \"vxlan\")")]
struct VxlanOptions {
    /// Make the port a VXLAN tunnel carrying this VNI (1..=16777215), or a trunk of
    /// VLANs each carried in its VNI (VLAN=VNI,...: `vlan_vni`).
    #[arg(
        long,
        value_name = "VNI|VLAN=VNI[,VLAN=VNI...]",
        value_parser = vni_spec,
        conflicts_with_all = ["netdev", "vm", "adopt", "persistent"]
    )]
    vxlan: Option<VniSpec>,
    /// The local VTEP address: an IPv4 address of the namespace the port's sockets live in.
    #[arg(long, value_name = "IP", requires = "vxlan")]
    local: Option<std::net::Ipv4Addr>,
    /// The remote VTEPs (the flood list): each gets a copy of every broadcast, multicast
    /// and unknown unicast.
    #[arg(
        long = "remote",
        value_name = "IP[,IP...]",
        value_delimiter = ',',
        requires = "vxlan"
    )]
    remotes: Vec<std::net::Ipv4Addr>,
    /// The UDP port bound on --local and sent to (`udp_port`; 4789 when left out, where
    /// Linux's own vxlan default is 8472).
    #[arg(
        long,
        value_name = "PORT",
        requires = "vxlan",
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    dstport: Option<u16>,
}

impl VxlanOptions {
    /// Adds the vxlan keys to `settings` (those of [`PortOptions::apply`]) if --vxlan was
    /// given; the MTU is the inner MTU of a 1500-byte underlay unless `mtu_given`.
    fn apply(self, settings: &mut PortSettings, mtu_given: bool) -> Result<(), String> {
        let Some(spec) = self.vxlan else {
            return Ok(());
        };
        let vni = spec.to_string();
        let Some(local) = self.local else {
            return Err(format!(
                "--vxlan {vni} needs --local IP: the local VTEP address, an IPv4 address of \
                 the namespace the port's sockets live in (the switch's, or --netns's)"
            ));
        };
        if self.remotes.is_empty() {
            return Err(format!(
                "--vxlan {vni} needs --remote IP[,IP...]: the remote VTEPs that broadcast, \
                 multicast and unknown unicast go to"
            ));
        }
        let remotes: Vec<String> = self.remotes.iter().map(ToString::to_string).collect();
        settings.insert("kind".to_owned(), "vxlan".into());
        match spec {
            VniSpec::One(vni) => {
                settings.insert("vni".to_owned(), vni.into());
            }
            VniSpec::Trunk(pairs) => {
                let map: serde_json::Map<String, serde_json::Value> = pairs
                    .into_iter()
                    .map(|(vlan, vni)| (vlan.to_string(), vni.into()))
                    .collect();
                settings.insert("vlan_vni".to_owned(), map.into());
            }
        }
        settings.insert("local".to_owned(), local.to_string().into());
        settings.insert("remotes".to_owned(), remotes.into());
        if let Some(udp_port) = self.dstport {
            settings.insert("udp_port".to_owned(), udp_port.into());
        }
        if !mtu_given {
            settings.insert("mtu".to_owned(), DEFAULT_VXLAN_MTU.into());
        }
        Ok(())
    }
}

/// What --vxlan says: one VNI, or a trunk's VLAN=VNI pairs (in the order given; the
/// switch checks the VLANs and refuses a VLAN or VNI given twice).
#[derive(Clone, Debug)]
enum VniSpec {
    One(u32),
    Trunk(Vec<(u16, u32)>),
}

impl std::fmt::Display for VniSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VniSpec::One(vni) => write!(f, "{vni}"),
            VniSpec::Trunk(pairs) => {
                let pairs: Vec<String> = pairs.iter().map(|(l, v)| format!("{l}={v}")).collect();
                f.write_str(&pairs.join(","))
            }
        }
    }
}

fn vni_spec(text: &str) -> Result<VniSpec, String> {
    if !text.contains('=') {
        return vni(text).map(VniSpec::One);
    }
    text.split(',')
        .map(|pair| {
            let (vlan, id) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not VLAN=VNI (as in 100=5000)"))?;
            let vlan: u16 = vlan
                .trim()
                .parse()
                .ok()
                .filter(|vlan| (1..=4094).contains(vlan))
                .ok_or_else(|| format!("{vlan:?} in {pair:?} is not a VLAN (1..=4094)"))?;
            Ok((vlan, vni(id.trim())?))
        })
        .collect::<Result<_, String>>()
        .map(VniSpec::Trunk)
}

fn vni(text: &str) -> Result<u32, String> {
    let vni: u32 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a VNI (a number 1..={MAX_VNI})"))?;
    if !(1..=MAX_VNI).contains(&vni) {
        return Err(format!(
            "{vni} is outside 1..={MAX_VNI} (a VNI has 24 bits)"
        ));
    }
    Ok(vni)
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
    /// Queues of the port's TAP (a multi-queue TAP, one fd per queue: `queues`); with
    /// --vm, virtio-net queue pairs of the guest NIC (`vm_queues`).
    #[arg(long, value_name = "N")]
    queues: Option<u32>,
}

impl VmOptions {
    /// Adds the VM keys to `settings` (those of [`PortOptions::apply`]); without --vm,
    /// --queues is the TAP's own `queues`.
    fn apply(self, settings: &mut PortSettings) {
        let Some(vm) = self.vm else {
            if let Some(queues) = self.queues {
                settings.insert("queues".to_owned(), queues.into());
            }
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
    /// Pin MAC to PORT with a static entry (replacing any entry of MAC on that VLAN, so
    /// adding it again is no error).
    Add {
        /// The MAC address.
        mac: MacAddr,
        /// The port it is pinned to.
        port: String,
        /// The VLAN of the entry (0: untagged, on ports without a VLAN mode).
        #[arg(long, default_value_t = 0)]
        vlan: u16,
        /// The remote VTEP MAC lives behind (PORT must be a vxlan port).
        #[arg(long, value_name = "IP")]
        remote: Option<std::net::IpAddr>,
    },
    /// Remove the entry for MAC, static or learned.
    Del {
        /// The MAC address.
        mac: MacAddr,
        /// The VLAN of the entry (0: untagged, on ports without a VLAN mode).
        #[arg(long, default_value_t = 0)]
        vlan: u16,
        /// No such entry is success (`null` under --json).
        #[arg(long)]
        if_exists: bool,
    },
    /// Forget learned entries (static ones stay); with --port, every entry of that port.
    Flush {
        /// Only this port's entries, static ones included.
        #[arg(long, value_name = "PORT")]
        port: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// The running configuration, hot-plugged ports included, as TOML.
    Show,
}

fn main() -> ExitCode {
    // The journal natively under systemd, text on stderr otherwise.
    logging::init();
    let cli = Cli::parse();
    let control = cli.control;
    let json = Json {
        on: cli.json || cli.pretty,
        pretty: cli.pretty,
    };
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
        Command::Demo(options) => demo::run(&options).map_err(|e| CliError::from(e.to_string())),
        Command::CheckConfig { config } => check_config(config, json),
        Command::Events => stream_events(&control, json),
        Command::Capture(args) => {
            return match capture::run(&control, json.on, &args) {
                Ok(()) => ExitCode::SUCCESS,
                // Its stdout may be the capture: under --json its error goes to stderr,
                // as its reply and summary do.
                Err(error) => fail_on(&error, json, &mut std::io::stderr()),
            };
        }
        Command::Doctor => return doctor(&control, json),
        // ---- packaging: man pages, completions ----
        Command::Completions { shell } => generate::completions(shell).map_err(CliError::from),
        Command::GenerateMan { dir } => generate::man_pages(&dir).map_err(CliError::from),
        command => control_request(&control, json, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error, json),
    }
}

/// How replies are printed: JSON or not (`--json`), indented or not (`--pretty`).
#[derive(Clone, Copy, Debug)]
struct Json {
    on: bool,
    pretty: bool,
}

/// Reports `error` (on stderr for people; also as JSON on stdout under `--json`) and
/// returns its exit status.
fn fail(error: &CliError, json: Json) -> ExitCode {
    fail_on(error, json, &mut std::io::stdout())
}

/// [`fail`] with the JSON document written to `json_out`.
fn fail_on(error: &CliError, json: Json, json_out: &mut dyn Write) -> ExitCode {
    // Unlike eprintln!, a closed or hung-up stderr does not turn this into a panic.
    let _ = writeln!(std::io::stderr(), "tapswitch: {}", error.message);
    if json.on {
        if let Ok(text) = json_text(&error.to_json(), json.pretty) {
            let _ = json_out.write_all(text.as_bytes());
        }
    }
    error.exit_code()
}

/// Serves the switch until it stops, then prints its last counters.
fn serve(started: Result<Snapshot, DaemonError>) -> Result<(), CliError> {
    let snapshot = started.map_err(|e| e.to_string())?;
    // The counters are for a reader; without one (a closed terminal) the stop is still clean.
    let _ = write!(std::io::stderr(), "{}", report::port_table(&snapshot));
    Ok(())
}

/// Prints doctor's findings; exit status 1 when any is an error.
fn doctor(control: &std::path::Path, json: Json) -> ExitCode {
    let inspection = match doctor::inspect(control) {
        Ok(inspection) => inspection,
        Err(doctor::DoctorError::Control(e)) => {
            let mut error = CliError::from(e);
            error.message = format!(
                "doctor: asking the switch: {} (is `tapswitch run` serving this --control socket?)",
                error.message
            );
            return fail(&error, json);
        }
    };
    let mut findings = doctor::diagnose(&inspection);
    doctor::point_fixes_at(&mut findings, control);
    let out = if json.on {
        match json_text(&report::findings::to_json(&findings), json.pretty) {
            Ok(text) => text,
            Err(e) => return fail(&e, json),
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

fn check_config(path: Option<PathBuf>, json: Json) -> Result<(), CliError> {
    let config = match path {
        Some(path) => Config::from_file(&path).map_err(|e| e.to_string())?,
        None => Config::embedded_default(),
    };
    // What `run` checks of the host before it creates anything.
    switch::preflight(&config).map_err(|e| e.to_string())?;
    let text = if json.on {
        json_text(&config, json.pretty)?
    } else {
        toml::to_string(&config).map_err(|e| e.to_string())?
    };
    print!("{text}");
    Ok(())
}

/// Asks the switch at `control` and decodes the reply as the typed reply `T` of its
/// request; the text is the reply as JSON with `json`, else `render`'s, for people.
fn ask<T: DeserializeOwned + Serialize>(
    control: &std::path::Path,
    request: &Request,
    json: Json,
    render: impl FnOnce(T) -> String,
) -> Result<String, CliError> {
    let mut client = ControlClient::connect(control)?;
    let reply: T = client.request_as(request)?;
    if json.on {
        json_text(&reply, json.pretty)
    } else {
        Ok(render(reply))
    }
}

/// Sends one request for `command` to the switch at `control` and prints the reply.
fn control_request(
    control: &std::path::Path,
    json: Json,
    command: Command,
) -> Result<(), CliError> {
    let out = match command {
        Command::Port(PortCommand::Add {
            mut port,
            may_exist,
            options,
            vxlan,
            features,
            vm,
        }) => {
            let mtu_given = options.mtu.is_some();
            let mut settings = options.apply(&mut port)?;
            vxlan.apply(&mut settings, mtu_given)?;
            vm.apply(&mut settings);
            settings.extend(features.settings());
            let port = port.with_settings(&settings).map_err(|e| e.to_string())?;
            port_add(control, json, port, may_exist)?
        }
        Command::Port(PortCommand::Del { name, if_exists }) => {
            port_del(control, json, name, if_exists)?
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
        Command::Port(PortCommand::Show { name }) => port_show(control, json, &name)?,
        Command::Fdb(FdbCommand::Show) => {
            ask(control, &Request::FdbShow {}, json, |fdb: FdbShow| {
                reply::fdb(&fdb)
            })?
        }
        Command::Fdb(FdbCommand::Add {
            mac,
            port,
            vlan,
            remote,
        }) => {
            let request = Request::FdbAdd {
                mac,
                port,
                vlan,
                remote,
            };
            let done = report::said::fdb_added(&request);
            ask(control, &request, json, |()| done)?
        }
        Command::Fdb(FdbCommand::Del {
            mac,
            vlan,
            if_exists,
        }) => fdb_del(control, json, Request::FdbDel { mac, vlan }, if_exists)?,
        Command::Fdb(FdbCommand::Flush { port }) => ask(
            control,
            &Request::FdbFlush { port },
            json,
            |f: FdbFlushed| format!("flushed {} entries\n", f.removed),
        )?,
        Command::Stats {
            port, rate: false, ..
        } => ask(control, &Request::Stats { port }, json, |s: Stats| {
            reply::stats(&s)
        })?,
        // ---- trace, rates, top ----
        Command::Stats {
            port,
            rate: true,
            interval,
        } => {
            let mut client = ControlClient::connect(control)?;
            let mut sampler = Sampler::new(port, seconds(interval)?);
            let rates = sampler.next(&mut client)?;
            if json.on {
                json_text(&rates, json.pretty)?
            } else {
                report::rates::rates(&rates, report::rates::SortKey::Name)
            }
        }
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
        Command::Evpn(EvpnCommand::Status) => ask(
            control,
            &Request::EvpnStatus {},
            json,
            |s: tapswitch::control::protocol::EvpnStatus| reply::evpn_status(&s),
        )?,
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
        // ---- trace, rates, top ----
        Command::Trace(args) => ask(
            control,
            &Request::Trace {
                frame: args.frame_hex(),
                port: args.port,
            },
            json,
            |reply: TraceReply| report::trace::trace(&reply),
        )?,
        Command::Top {
            sort,
            interval,
            once,
            iterations,
        } => {
            let draws = if once { Some(1) } else { iterations };
            return top(control, json, sort, seconds(interval)?, draws);
        }
        // ---- reload ----
        Command::Reload => ask(
            control,
            &Request::Reload {},
            json,
            |reply: tapswitch::control::protocol::ReloadReply| report::reload(&reply),
        )?,
        Command::Run { .. }
        | Command::Demo(_)
        | Command::CheckConfig { .. }
        | Command::Events
        | Command::Capture(_)
        | Command::Doctor
        | Command::Completions { .. }
        | Command::GenerateMan { .. } => {
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

// ---- idempotent add/del, port show ----

/// `port add`; with `may_exist`, a port of that name already there is success (its
/// current state is printed), as `ovs-vsctl --may-exist add-port`.
fn port_add(
    control: &std::path::Path,
    json: Json,
    port: PortConfig,
    may_exist: bool,
) -> Result<String, CliError> {
    let name = port.name.clone();
    match ask(control, &Request::PortAdd { port }, json, |r: PortReply| {
        reply::port(&r)
    }) {
        Err(error)
            if may_exist
                && error.kind == outcome::FailureKind::Refused(ErrorKind::AlreadyExists)
                && port_exists(control, &name)? =>
        {
            let mut client = ControlClient::connect(control)?;
            let mut stats: Stats = client.request_as(&Request::Stats {
                port: Some(name.clone()),
            })?;
            let Some(port) = stats.ports.pop() else {
                return Err(format!("port {name} exists but has no counters").into());
            };
            // The same type as a `port add` reply: the port as it is.
            let existing = PortReply { port, vm: None };
            if json.on {
                json_text(&existing, json.pretty)
            } else {
                Ok(format!(
                    "port {name} exists already: left as it is\n{}",
                    reply::port(&existing)
                ))
            }
        }
        other => other,
    }
}

/// `port del`; with `if_exists`, no port of that name is success (`null` under
/// `--json`), as `ovs-vsctl --if-exists del-port`.
fn port_del(
    control: &std::path::Path,
    json: Json,
    name: String,
    if_exists: bool,
) -> Result<String, CliError> {
    let asked = ask(
        control,
        &Request::PortDel { name: name.clone() },
        json,
        |r: PortReply| report::said::port_deleted(&r),
    );
    match asked {
        Err(error)
            if if_exists
                && error.kind == outcome::FailureKind::Refused(ErrorKind::NotFound)
                && !port_exists(control, &name)? =>
        {
            Ok(if json.on {
                json_text(&(), json.pretty)?
            } else {
                format!("no port {name}: nothing to delete\n")
            })
        }
        other => other,
    }
}

/// `fdb del`; with `if_exists`, no such entry is success.
fn fdb_del(
    control: &std::path::Path,
    json: Json,
    request: Request,
    if_exists: bool,
) -> Result<String, CliError> {
    let done = report::said::fdb_deleted(&request, true);
    match ask(control, &request, json, |()| done) {
        Err(error)
            if if_exists && error.kind == outcome::FailureKind::Refused(ErrorKind::NotFound) =>
        {
            Ok(if json.on {
                json_text(&(), json.pretty)?
            } else {
                report::said::fdb_deleted(&request, false)
            })
        }
        other => other,
    }
}

/// Whether the switch has a port called `name`.
fn port_exists(control: &std::path::Path, name: &str) -> Result<bool, CliError> {
    let mut client = ControlClient::connect(control)?;
    let ports: PortList = client.request_as(&Request::PortList {})?;
    Ok(ports.iter().any(|port| port.name == name))
}

/// `port show NAME`: that port of `port list`, with its counters.
fn port_show(control: &std::path::Path, json: Json, name: &str) -> Result<String, CliError> {
    let mut client = ControlClient::connect(control)?;
    let ports: PortList = client.request_as(&Request::PortList {})?;
    let Some(port) = ports.into_iter().find(|port| port.name == name) else {
        return Err(
            ControlError::Refused(tapswitch::control::RequestError::not_found(format!(
                "no port named {name:?}"
            )))
            .into(),
        );
    };
    let stats: Stats = client.request_as(&Request::Stats {
        port: Some(name.to_owned()),
    })?;
    let shown = report::said::PortShow {
        port,
        counters: stats.ports.into_iter().next().map(|p| p.counters),
    };
    if json.on {
        json_text(&shown, json.pretty)
    } else {
        Ok(report::said::port_show(&shown))
    }
}

// ---- trace, rates, top ----

fn seconds(secs: f64) -> Result<std::time::Duration, String> {
    if secs.is_finite() && secs > 0.0 && secs <= 3600.0 {
        Ok(std::time::Duration::from_secs_f64(secs))
    } else {
        Err(format!(
            "--interval {secs}: give seconds above 0, at most 3600"
        ))
    }
}

/// Successive `stats` replies, `interval` apart, as rates.
struct Sampler {
    port: Option<String>,
    interval: std::time::Duration,
    last: Option<(std::time::Instant, Stats)>,
}

impl Sampler {
    fn new(port: Option<String>, interval: std::time::Duration) -> Self {
        Sampler {
            port,
            interval,
            last: None,
        }
    }

    fn sample(&self, client: &mut ControlClient) -> Result<(std::time::Instant, Stats), CliError> {
        let stats: Stats = client.request_as(&Request::Stats {
            port: self.port.clone(),
        })?;
        Ok((std::time::Instant::now(), stats))
    }

    /// The rates since the previous sample; the first call takes two, `interval` apart.
    fn next(&mut self, client: &mut ControlClient) -> Result<Rates, CliError> {
        self.next_after(client, std::thread::sleep)
    }

    /// [`Sampler::next`], waiting with `wait` (which may return early).
    fn next_after(
        &mut self,
        client: &mut ControlClient,
        wait: impl FnOnce(std::time::Duration),
    ) -> Result<Rates, CliError> {
        let (then, before) = match self.last.take() {
            Some(last) => last,
            None => self.sample(client)?,
        };
        wait(self.interval.saturating_sub(then.elapsed()));
        let (now, after) = self.sample(client)?;
        let rates = Rates::between(&before, &after, now - then);
        self.last = Some((now, after));
        Ok(rates)
    }
}

/// `top`: redraws the rates until `draws` are done, q is typed, or stdout closes.
fn top(
    control: &std::path::Path,
    json: Json,
    mut sort: report::rates::SortKey,
    interval: std::time::Duration,
    draws: Option<u64>,
) -> Result<(), CliError> {
    let mut client = ControlClient::connect(control)?;
    let mut sampler = Sampler::new(None, interval);
    let redraw = std::io::stdout().is_terminal() && !json.on;
    // Lines typed while it runs (a terminal in canonical mode delivers them on Enter).
    let (keys_tx, keys) = std::sync::mpsc::channel::<String>();
    if std::io::stdin().is_terminal() {
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { return };
                if keys_tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
    let mut drawn = 0u64;
    loop {
        let mut quit = false;
        let rates = sampler.next_after(&mut client, |wait| {
            // A key cuts the wait short; its effect shows on this draw.
            if let Ok(line) = keys.recv_timeout(wait) {
                if line.trim() == "q" {
                    quit = true;
                } else if let Some(key) = report::rates::SortKey::from_key(&line) {
                    sort = key;
                }
            }
        })?;
        if quit {
            return Ok(());
        }
        let text = if json.on {
            json_text(&rates, json.pretty)?
        } else if redraw {
            // Home, clear the screen, then the table.
            format!(
                "\x1b[H\x1b[2J{}(sorted by {sort:?}; r/t/d/n + Enter to sort, q + Enter or Ctrl-C to quit)\n",
                report::rates::rates(&rates, sort)
            )
        } else {
            format!("{}\n", report::rates::rates(&rates, sort))
        };
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return Ok(());
        }
        drawn += 1;
        if draws.is_some_and(|draws| drawn >= draws) {
            return Ok(());
        }
    }
}

/// Prints events as they come until stdout closes; the switch going away ends the stream
/// with [`outcome::EXIT_UNREACHABLE`], so a script watching events learns of it.
fn stream_events(control: &std::path::Path, json: Json) -> Result<(), CliError> {
    let mut client = ControlClient::connect(control)?;
    client.request_as::<()>(&Request::Events {})?;
    loop {
        // `--json` passes each line on as the switch sent it: a newer switch may add keys
        // to an event, and decoding and encoding again would drop them.
        let line = if json.on {
            client.next_line().map(|line| line.to_string())
        } else {
            client.next_event().map(|event| reply::event(&event))
        };
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                return Err(CliError::unreachable(format!(
                    "events: the switch went away: {e}"
                )));
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument of every command, by its path (`tapswitch port add --mtu`), that
    /// has no help text.
    fn args_without_help(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in command.get_arguments() {
            if arg.is_hide_set() || ["help", "version"].contains(&arg.get_id().as_str()) {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {}", arg.get_id()));
            }
        }
        for sub in command.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            args_without_help(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }

    #[test]
    fn every_option_and_argument_has_help() {
        // The walk finds a bare argument, also in a subcommand.
        let bare = clap::Command::new("x")
            .subcommand(clap::Command::new("y").arg(clap::Arg::new("bare").long("bare")));
        let mut found = Vec::new();
        args_without_help(&bare, "x", &mut found);
        assert_eq!(found, ["x y bare"]);

        let command = Cli::command();
        command.clone().debug_assert();
        let mut missing = Vec::new();
        args_without_help(&command, "tapswitch", &mut missing);
        assert!(
            missing.is_empty(),
            "arguments without help text: {missing:#?}"
        );
    }

    #[test]
    fn the_help_documents_the_exit_statuses_and_usage_errors_exit_with_theirs() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit status"), "{help}");
        assert!(help.contains("TAPSWITCH_CONTROL"), "{help}");
        let Err(usage) = Cli::try_parse_from(["tapswitch", "no-such-command"]) else {
            panic!("an unknown command parses");
        };
        assert_eq!(usage.exit_code(), i32::from(outcome::EXIT_USAGE));
    }

    #[test]
    fn queues_without_vm_is_the_taps_own_and_with_vm_the_guests() {
        let Command::Port(PortCommand::Add { vm, .. }) =
            Cli::parse_from(["tapswitch", "port", "add", "p0", "--queues", "4"]).command
        else {
            panic!("not port add");
        };
        let mut settings = PortSettings::new();
        vm.apply(&mut settings);
        assert_eq!(settings.get("queues"), Some(&serde_json::json!(4)));
        let Command::Port(PortCommand::Add { vm, .. }) = Cli::parse_from([
            "tapswitch",
            "port",
            "add",
            "p0",
            "--vm",
            "d1",
            "--queues",
            "2",
        ])
        .command
        else {
            panic!("not port add");
        };
        let mut settings = PortSettings::new();
        vm.apply(&mut settings);
        assert_eq!(settings.get("vm_queues"), Some(&serde_json::json!(2)));
        assert_eq!(settings.get("queues"), None);
    }
}
