//! The MAC-flood scenario: does one port flooding the switch cost the other
//! ports their throughput?
//!
//! Four namespaces on one switch: a TCP flow (iperf3, one stream) from A to B,
//! a flooder in C and an idle bystander in D. Per system and round, three
//! conditions one after the other on the same switch instance:
//!
//! - **clean**: the flow alone;
//! - **flood**: C sends frames with random source MACs to a MAC nobody has, as
//!   fast as its netdev takes them (`flooder`: `sendmmsg` on an `AF_PACKET`
//!   socket that bypasses the qdisc);
//! - **equal load**: instead of the flood, a CPU burner in C that uses as much
//!   CPU as the flooder just did (`burn`, duty-cycled on its own CPU clock).
//!
//! flood/equal-load is what the flood costs beyond the CPU the flooder takes
//! from a two-core machine; flood/clean is what a tenant sees.
//!
//! `--attack` picks what C sends ([`Attack`]: the MAC flood, a broadcast storm, a
//! multicast storm, malformed frames); each attack is a flood condition with its
//! own equal-load twin, all on the same switch instance after one clean flow.
//! `--sender-twin` adds, per attack, the same sender writing into a dropping device
//! in C (the same syscalls and kernel work, no frame reaching the switch): what
//! the flooder's own kernel path costs the flow, as against the switch's work.

use crate::blast;
use crate::cpu;
use crate::iperf::{self, TcpReport, TcpTest};
use crate::netns::OwnedNetns;
use crate::proc::OwnedChild;
use crate::run::{self, RunError};
use crate::signals;
use crate::stats;
use crate::systems::{self, AttachedSystem, RunContext, SystemKind};
use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const IPERF_PORT: u16 = 5202;
/// Frames per `sendmmsg`.
const BATCH: usize = 64;
/// The destination of every flooded frame: locally administered, never an endpoint's.
const UNKNOWN_DESTINATION: [u8; 6] = [0x02, 0xfe, 0xed, 0x00, 0x00, 0x01];
/// The one source of the storms and bad frames (a random one would make them MAC floods).
const ATTACKER_SOURCE: [u8; 6] = [0x02, 0xba, 0xd0, 0x00, 0x00, 0x01];
const BROADCAST: [u8; 6] = [0xff; 6];
/// An IPv4-mapped group address nobody joined (239.127.0.1).
const MULTICAST_GROUP: [u8; 6] = [0x01, 0x00, 0x5e, 0x7f, 0x00, 0x01];
/// A local-experimental ethertype: nobody's stack does anything with it.
const EXPERIMENTAL_ETHERTYPE: u16 = 0x88b5;
/// The shortest Ethernet frame without FCS; also the stride of the send buffers.
const FRAME_LEN: usize = 60;
/// The device in C that `--sender-twin` floods into: one end of a veth pair whose
/// other end stays down, so every frame is dropped in the driver (the `dummy`
/// module may be missing).
const SINK_DEVICE: &str = "tsbsink";
const SINK_PEER: &str = "tsbsinkpeer";
/// The load starts this long before the flow and ends this long after it.
const LOAD_MARGIN: Duration = Duration::from_millis(500);

/// Failures of the in-namespace tools.
#[derive(Debug, thiserror::Error)]
pub enum FloodError {
    #[error("no network device {0} in this namespace")]
    NoDevice(String),
    #[error("packet socket on {device}: {source}")]
    Socket { device: String, source: io::Error },
    #[error("sending on {device}: {source}")]
    Send { device: String, source: io::Error },
}

/// What `flooder` did, printed as one JSON line.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct FloodReport {
    /// Frames the device took.
    pub sent: u64,
    /// `sendmmsg` calls refused (a full queue: ENOBUFS, EAGAIN).
    pub send_errors: u64,
    pub elapsed_s: f64,
    /// This process's CPU time (user + system) while flooding.
    pub cpu_s: f64,
}

/// What `burn` did, printed as one JSON line.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct BurnReport {
    pub elapsed_s: f64,
    pub cpu_s: f64,
}

/// xorshift64*: cheap, and good enough to make every source MAC new.
struct Random(u64);

impl Random {
    fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Random((nanos ^ u64::from(std::process::id()) << 32) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A random locally administered unicast address.
fn random_source(random: &mut Random) -> [u8; 6] {
    let bits = random.next().to_be_bytes();
    [
        (bits[0] & 0xfc) | 0x02,
        bits[1],
        bits[2],
        bits[3],
        bits[4],
        bits[5],
    ]
}

/// What the flooder sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// A new random source MAC every frame, to an unknown unicast MAC: fills the
    /// FDB and floods as unknown unicast.
    MacFlood,
    /// Broadcasts from one source.
    Broadcast,
    /// Frames to a multicast group nobody joined, from one source.
    Multicast,
    /// Malformed frames from one source, cycling: header-only runts, a VLAN tag cut
    /// short, the reserved VID 4095, a multicast (group bit) source, an 802.3
    /// length field longer than the frame.
    BadFrames,
}

impl Attack {
    pub const ALL: [Attack; 4] = [
        Attack::MacFlood,
        Attack::Broadcast,
        Attack::Multicast,
        Attack::BadFrames,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Attack::MacFlood => "mac-flood",
            Attack::Broadcast => "broadcast",
            Attack::Multicast => "multicast",
            Attack::BadFrames => "bad-frames",
        }
    }
}

/// Writes frame number `index` of `attack` into `frame` (`FRAME_LEN` bytes, zeroed
/// beyond the header) and returns its length.
fn attack_frame(attack: Attack, index: u64, random: &mut Random, frame: &mut [u8]) -> usize {
    frame.fill(0);
    let mut header = |destination: &[u8; 6], source: &[u8; 6], ethertype: u16| {
        frame[0..6].copy_from_slice(destination);
        frame[6..12].copy_from_slice(source);
        frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
    };
    match attack {
        Attack::MacFlood => {
            header(
                &UNKNOWN_DESTINATION,
                &random_source(random),
                EXPERIMENTAL_ETHERTYPE,
            );
            FRAME_LEN
        }
        Attack::Broadcast => {
            header(&BROADCAST, &ATTACKER_SOURCE, EXPERIMENTAL_ETHERTYPE);
            FRAME_LEN
        }
        Attack::Multicast => {
            header(&MULTICAST_GROUP, &ATTACKER_SOURCE, EXPERIMENTAL_ETHERTYPE);
            FRAME_LEN
        }
        // An AF_PACKET socket refuses frames shorter than the Ethernet header, so
        // the runts are 14 bytes: a header and nothing else.
        Attack::BadFrames => match index % 5 {
            0 => {
                header(
                    &UNKNOWN_DESTINATION,
                    &ATTACKER_SOURCE,
                    EXPERIMENTAL_ETHERTYPE,
                );
                14
            }
            1 => {
                header(&UNKNOWN_DESTINATION, &ATTACKER_SOURCE, 0x8100);
                16
            }
            2 => {
                header(&UNKNOWN_DESTINATION, &ATTACKER_SOURCE, 0x8100);
                frame[14..16].copy_from_slice(&0x0fffu16.to_be_bytes());
                frame[16..18].copy_from_slice(&EXPERIMENTAL_ETHERTYPE.to_be_bytes());
                FRAME_LEN
            }
            3 => {
                let mut group_source = ATTACKER_SOURCE;
                group_source[0] |= 0x01;
                header(&UNKNOWN_DESTINATION, &group_source, EXPERIMENTAL_ETHERTYPE);
                FRAME_LEN
            }
            _ => {
                header(&UNKNOWN_DESTINATION, &ATTACKER_SOURCE, 1500);
                FRAME_LEN
            }
        },
    }
}

/// An `AF_PACKET` socket bound to `device` that hands frames straight to the
/// driver (no qdisc): what a hostile endpoint writing to its NIC does.
fn packet_socket(device: &str) -> Result<OwnedFd, FloodError> {
    let name = std::ffi::CString::new(device).map_err(|_| FloodError::NoDevice(device.into()))?;
    // SAFETY: `name` is a valid NUL-terminated string for the call.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(FloodError::NoDevice(device.into()));
    }
    let error = |source| FloodError::Socket {
        device: device.into(),
        source,
    };
    // SAFETY: plain socket creation; the fd is owned below. Protocol 0: send only.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(error(io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh socket nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; zero is a valid starting value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: `addr` is a live sockaddr_ll whose size is given.
    let bound = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if bound < 0 {
        return Err(error(io::Error::last_os_error()));
    }
    let on: libc::c_int = 1;
    // SAFETY: the option value is a live c_int whose size is given.
    let set = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set < 0 {
        return Err(error(io::Error::last_os_error()));
    }
    Ok(fd)
}

/// Sends `attack`'s frames on `device` for `duration`, as fast as it takes them.
pub fn flooder(
    device: &str,
    attack: Attack,
    duration: Duration,
) -> Result<FloodReport, FloodError> {
    let socket = packet_socket(device)?;
    let mut random = Random::seeded();
    let mut buffers = vec![0u8; BATCH * FRAME_LEN];
    let mut lengths = [0usize; BATCH];
    let (mut sent, mut send_errors, mut index) = (0u64, 0u64, 0u64);
    let cpu_before = cpu::own_cpu_seconds();
    let start = Instant::now();
    while start.elapsed() < duration {
        for (frame, length) in buffers.chunks_exact_mut(FRAME_LEN).zip(&mut lengths) {
            *length = attack_frame(attack, index, &mut random, frame);
            index += 1;
        }
        match blast::send_batch_sized(socket.as_raw_fd(), &mut buffers, FRAME_LEN, &lengths) {
            Ok(accepted) => sent += accepted as u64,
            Err(error)
                if matches!(
                    error.raw_os_error(),
                    Some(libc::ENOBUFS | libc::EAGAIN | libc::ENETDOWN)
                ) =>
            {
                send_errors += 1
            }
            Err(source) => {
                return Err(FloodError::Send {
                    device: device.into(),
                    source,
                });
            }
        }
    }
    Ok(FloodReport {
        sent,
        send_errors,
        elapsed_s: start.elapsed().as_secs_f64(),
        cpu_s: cpu::own_cpu_seconds() - cpu_before,
    })
}

/// Uses `fraction` of one CPU for `duration`: whenever its CPU time is behind
/// `fraction` of the time elapsed it spins, otherwise it sleeps a millisecond.
/// Catching up (rather than a fixed duty cycle) keeps it at its share on a busy
/// machine, where a sleeper gets the CPU back later than it asked.
pub fn burn(fraction: f64, duration: Duration) -> BurnReport {
    let fraction = fraction.clamp(0.0, 1.0);
    let cpu_before = cpu::own_cpu_seconds();
    let start = Instant::now();
    let mut x = 1u64;
    while start.elapsed() < duration {
        let behind =
            fraction * start.elapsed().as_secs_f64() - (cpu::own_cpu_seconds() - cpu_before);
        if behind > 0.0 {
            for _ in 0..20_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    BurnReport {
        elapsed_s: start.elapsed().as_secs_f64(),
        cpu_s: cpu::own_cpu_seconds() - cpu_before,
    }
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct FloodConfig {
    pub rounds: u32,
    pub systems: Vec<SystemKind>,
    pub tcp_seconds: u32,
    pub tapswitch_bin: PathBuf,
    /// A second tapswitch build (e.g. of main) measured in the same rounds, right
    /// after the first, as system `tapswitch-baseline`.
    pub baseline_tapswitch: Option<PathBuf>,
    pub tapswitch_args: Vec<String>,
    /// The attacks, each a flood condition with its equal-load twin, in this order.
    pub attacks: Vec<Attack>,
    /// Also run each attack's sender into a dropping device in C (see the module doc).
    pub sender_twin: bool,
    pub output: PathBuf,
}

/// One condition of one round.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConditionSample {
    pub tcp: Option<TcpReport>,
    /// The switch process's CPU share during the flow (tapswitch only).
    pub switch_cpu: Option<f64>,
    pub flooder: Option<FloodReport>,
    pub burner: Option<BurnReport>,
}

/// One attack in one round: the flood, its equal-load twin and (with
/// `--sender-twin`) the same sender into a dropping device.
#[derive(Debug, Clone, Serialize)]
pub struct AttackSample {
    pub attack: Attack,
    pub flood: ConditionSample,
    pub equal_load: ConditionSample,
    pub sender_twin: Option<ConditionSample>,
}

/// One system in one round.
#[derive(Debug, Clone, Serialize)]
pub struct FloodSample {
    pub round: u32,
    pub system: String,
    pub clean: ConditionSample,
    pub attacks: Vec<AttackSample>,
    pub error: Option<String>,
    pub warnings: Vec<String>,
}

fn gbps(condition: &ConditionSample) -> Option<f64> {
    condition.tcp.map(|tcp| tcp.gbps)
}

impl FloodSample {
    fn attack(&self, attack: Attack) -> Option<&AttackSample> {
        self.attacks.iter().find(|a| a.attack == attack)
    }
}

/// Median and range of some per-round values.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub rounds: usize,
}

impl Spread {
    /// `None` for no values.
    pub(crate) fn of(values: &[f64]) -> Option<Spread> {
        Some(Spread {
            median: stats::median(values)?,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            rounds: values.len(),
        })
    }
}

/// Per system and attack: medians and spreads over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct FloodSummary {
    pub system: String,
    pub attack: Attack,
    pub clean_gbps: Option<Spread>,
    pub equal_load_gbps: Option<Spread>,
    pub flood_gbps: Option<Spread>,
    pub flood_vs_equal_load: Option<Spread>,
    pub flood_vs_clean: Option<Spread>,
    pub equal_load_vs_clean: Option<Spread>,
    pub flooder_cpu: Option<Spread>,
    pub burner_cpu: Option<Spread>,
    pub flooder_mpps: Option<Spread>,
    pub switch_cpu_flood: Option<Spread>,
    pub switch_cpu_equal_load: Option<Spread>,
    pub sender_twin_gbps: Option<Spread>,
    /// The flow beside the sender into the sink, over the flow beside the burner.
    pub sender_twin_vs_equal_load: Option<Spread>,
    pub sender_twin_cpu: Option<Spread>,
}

/// The results file.
#[derive(Debug, Clone, Serialize)]
pub struct FloodResults {
    pub config: FloodConfig,
    pub summaries: Vec<FloodSummary>,
    pub rounds: Vec<FloodSample>,
}

fn summarise(system: &str, attack: Attack, samples: &[FloodSample]) -> FloodSummary {
    let mine: Vec<(&FloodSample, &AttackSample)> = samples
        .iter()
        .filter(|s| s.system == system)
        .filter_map(|s| Some((s, s.attack(attack)?)))
        .collect();
    let spread = |value: &dyn Fn(&FloodSample, &AttackSample) -> Option<f64>| {
        let values: Vec<f64> = mine.iter().filter_map(|(s, a)| value(s, a)).collect();
        Spread::of(&values)
    };
    let flooder_share = |f: &FloodReport| f.cpu_s / f.elapsed_s;
    let twin = |a: &AttackSample| a.sender_twin.as_ref().and_then(gbps);
    FloodSummary {
        system: system.to_owned(),
        attack,
        clean_gbps: spread(&|s, _| gbps(&s.clean)),
        equal_load_gbps: spread(&|_, a| gbps(&a.equal_load)),
        flood_gbps: spread(&|_, a| gbps(&a.flood)),
        flood_vs_equal_load: spread(&|_, a| Some(gbps(&a.flood)? / gbps(&a.equal_load)?)),
        flood_vs_clean: spread(&|s, a| Some(gbps(&a.flood)? / gbps(&s.clean)?)),
        equal_load_vs_clean: spread(&|s, a| Some(gbps(&a.equal_load)? / gbps(&s.clean)?)),
        flooder_cpu: spread(&|_, a| a.flood.flooder.as_ref().map(flooder_share)),
        burner_cpu: spread(&|_, a| a.equal_load.burner.map(|b| b.cpu_s / b.elapsed_s)),
        flooder_mpps: spread(&|_, a| a.flood.flooder.map(|f| f.sent as f64 / f.elapsed_s / 1e6)),
        switch_cpu_flood: spread(&|_, a| a.flood.switch_cpu),
        switch_cpu_equal_load: spread(&|_, a| a.equal_load.switch_cpu),
        sender_twin_gbps: spread(&|_, a| twin(a)),
        sender_twin_vs_equal_load: spread(&|_, a| Some(twin(a)? / gbps(&a.equal_load)?)),
        sender_twin_cpu: spread(&|_, a| {
            a.sender_twin.as_ref()?.flooder.as_ref().map(flooder_share)
        }),
    }
}

/// Runs the scenario and writes the results file.
pub fn run(config: FloodConfig) -> Result<FloodResults, RunError> {
    let (run_id, mut work_dir_guard) = run::start_run(&config.systems)?;
    let work_dir = work_dir_guard.path().to_owned();
    let names = ["a", "b", "c", "d"].map(|side| format!("tsb-{run_id}-{side}"));
    let namespaces = names
        .iter()
        .map(|name| OwnedNetns::create(name))
        .collect::<Result<Vec<_>, _>>()?;
    if config.sender_twin {
        // Goes with C's namespace when that is deleted.
        let netns = namespaces[2].name();
        crate::proc::ip(&[
            "-n",
            netns,
            "link",
            "add",
            SINK_DEVICE,
            "type",
            "veth",
            "peer",
            "name",
            SINK_PEER,
        ])?;
        crate::proc::ip(&["-n", netns, "link", "set", SINK_DEVICE, "up"])?;
    }
    let ctx = RunContext {
        run_id,
        netns_a: namespaces[0].name().to_owned(),
        netns_b: namespaces[1].name().to_owned(),
        work_dir,
        tapswitch_bin: config.tapswitch_bin.clone(),
        tapswitch_args: config.tapswitch_args.clone(),
        extra_netns: vec![
            namespaces[2].name().to_owned(),
            namespaces[3].name().to_owned(),
        ],
    };
    // (system, its name in the results, its context): the baseline build is
    // tapswitch with another binary.
    let mut entrants: Vec<(SystemKind, String, RunContext)> = Vec::new();
    for &kind in &config.systems {
        entrants.push((kind, kind.name().to_owned(), ctx.clone()));
        if let (SystemKind::Tapswitch, Some(baseline)) = (kind, &config.baseline_tapswitch) {
            let mut baseline_ctx = ctx.clone();
            baseline_ctx.tapswitch_bin = baseline.clone();
            entrants.push((kind, "tapswitch-baseline".to_owned(), baseline_ctx));
        }
    }
    let self_exe = std::env::current_exe().map_err(RunError::SelfPath)?;
    let started = Instant::now();
    let mut samples = Vec::new();
    'rounds: for round in 1..=config.rounds {
        for (kind, name, ctx) in &entrants {
            let kind = *kind;
            if signals::stop_requested() {
                break 'rounds;
            }
            eprintln!(
                "[{:>5.0}s] flood round {round}/{} {name}",
                started.elapsed().as_secs_f64(),
                config.rounds,
            );
            let mut sample = FloodSample {
                round,
                system: name.clone(),
                clean: ConditionSample::default(),
                attacks: Vec::new(),
                error: None,
                warnings: Vec::new(),
            };
            let label = format!("flood-r{round}-{name}");
            let outcome = systems::attach(kind, ctx, &label)
                .map_err(RunError::from)
                .and_then(|mut system| {
                    let measured = measure(&mut system, ctx, &config, &self_exe, &mut sample);
                    sample.warnings.extend(system.detach());
                    measured
                });
            if let Err(error) = outcome {
                sample.error = Some(error.to_string());
            }
            run::print_round_problems(name, round, &sample.error, &sample.warnings);
            samples.push(sample);
        }
    }
    work_dir_guard.keep_if(
        samples
            .iter()
            .any(|s| s.error.is_some() || !s.warnings.is_empty()),
    );
    let summaries = config
        .attacks
        .iter()
        .flat_map(|&attack| {
            let samples = &samples;
            entrants
                .iter()
                .map(move |(_, name, _)| summarise(name, attack, samples))
        })
        .collect();
    let results = FloodResults {
        config: config.clone(),
        summaries,
        rounds: samples,
    };
    run::write_results(&results, &config.output)?;
    if signals::stop_requested() {
        return Err(RunError::Interrupted);
    }
    Ok(results)
}

/// What runs beside the flow in a condition.
enum Load {
    None,
    /// The attack into the switch port.
    Flood(Attack),
    /// The attack into the dropping device.
    SenderTwin(Attack),
    Burn {
        fraction: f64,
    },
}

/// The conditions for one attached system: clean, then per attack the flood, the
/// equal load (which needs the flooder's CPU share just measured) and the sender
/// twin if asked for.
fn measure(
    system: &mut AttachedSystem,
    ctx: &RunContext,
    config: &FloodConfig,
    self_exe: &Path,
    sample: &mut FloodSample,
) -> Result<(), RunError> {
    sample.clean = condition(system, ctx, config, self_exe, Load::None)?;
    for &attack in &config.attacks {
        let flood = condition(system, ctx, config, self_exe, Load::Flood(attack))?;
        let fraction = flood
            .flooder
            .map_or(1.0, |f| f.cpu_s / f.elapsed_s.max(1e-9));
        let equal_load = condition(system, ctx, config, self_exe, Load::Burn { fraction })?;
        let sender_twin = if config.sender_twin {
            Some(condition(
                system,
                ctx,
                config,
                self_exe,
                Load::SenderTwin(attack),
            )?)
        } else {
            None
        };
        sample.attacks.push(AttackSample {
            attack,
            flood,
            equal_load,
            sender_twin,
        });
    }
    Ok(())
}

fn condition(
    system: &mut AttachedSystem,
    ctx: &RunContext,
    config: &FloodConfig,
    self_exe: &Path,
    load: Load,
) -> Result<ConditionSample, RunError> {
    run::check_stop()?;
    run::check_alive(system)?;
    let flooder_netns = &ctx.extra_netns[0];
    let (flooder_device, load_seconds) = (
        ctx.extra_ports()[0].1.clone(),
        Duration::from_secs(u64::from(config.tcp_seconds)) + 2 * LOAD_MARGIN,
    );
    let load_ms = load_seconds.as_millis().to_string();
    let flooder_args = |device: String, attack: Attack| {
        vec![
            "flooder".into(),
            "--device".into(),
            device,
            "--attack".into(),
            attack.name().into(),
            "--duration-ms".into(),
            load_ms.clone(),
        ]
    };
    let args: Option<Vec<String>> = match load {
        Load::None => None,
        Load::Flood(attack) => Some(flooder_args(flooder_device, attack)),
        Load::SenderTwin(attack) => Some(flooder_args(SINK_DEVICE.into(), attack)),
        Load::Burn { fraction } => Some(vec![
            "burn".into(),
            "--fraction".into(),
            format!("{fraction:.4}"),
            "--duration-ms".into(),
            load_ms.clone(),
        ]),
    };
    let mut background = match &args {
        Some(args) => {
            let mut command = run::self_in_netns(self_exe, flooder_netns, args);
            command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let child = OwnedChild::spawn(command, Duration::from_secs(2))?;
            std::thread::sleep(LOAD_MARGIN);
            Some(child)
        }
        None => None,
    };
    let switch_pid = system.switch_pid();
    let cpu_before = switch_pid.map(cpu::process_cpu_seconds).transpose()?;
    let flow_start = Instant::now();
    let tcp = iperf::run_tcp(&TcpTest {
        server_netns: system.b.netns.clone(),
        client_netns: system.a.netns.clone(),
        server_address: system.b.address.clone(),
        port: IPERF_PORT,
        streams: 1,
        seconds: config.tcp_seconds,
    });
    let flow_seconds = flow_start.elapsed().as_secs_f64();
    let switch_cpu = match (switch_pid, cpu_before) {
        (Some(pid), Some(before)) => Some((cpu::process_cpu_seconds(pid)? - before) / flow_seconds),
        _ => None,
    };
    let mut sample = ConditionSample {
        tcp: Some(tcp?),
        switch_cpu,
        ..ConditionSample::default()
    };
    if let Some(mut child) = background.take() {
        let limit = load_seconds + Duration::from_secs(5);
        if child.wait_for_exit(limit)?.is_none() {
            return Err(RunError::Sink(format!(
                "the load in {flooder_netns} did not stop within {} s",
                limit.as_secs()
            )));
        }
        let mut stdout = String::new();
        if let Some(mut pipe) = child.child_mut().stdout.take() {
            io::Read::read_to_string(&mut pipe, &mut stdout).map_err(|source| RunError::Write {
                path: "the load's output".into(),
                source,
            })?;
        }
        match load {
            Load::Flood(_) | Load::SenderTwin(_) => {
                sample.flooder = Some(run::parse_tool_json("flooder", &stdout)?)
            }
            Load::Burn { .. } => sample.burner = Some(run::parse_tool_json("burn", &stdout)?),
            Load::None => {}
        }
    }
    Ok(sample)
}

/// A line of the table: its label, the figure it shows, decimals.
type TableRow = (&'static str, fn(&FloodSummary) -> &Option<Spread>, usize);

/// The table for people.
pub fn table(results: &FloodResults) -> String {
    let fmt = |spread: &Option<Spread>, digits: usize| match spread {
        Some(s) => format!("{:.d$} ({:.d$}–{:.d$})", s.median, s.min, s.max, d = digits),
        None => "-".into(),
    };
    let rows: [TableRow; 14] = [
        ("TCP clean (Gb/s)", |s| &s.clean_gbps, 2),
        ("TCP under equal CPU load (Gb/s)", |s| &s.equal_load_gbps, 2),
        ("TCP under flood (Gb/s)", |s| &s.flood_gbps, 2),
        ("flood / equal load", |s| &s.flood_vs_equal_load, 2),
        ("flood / clean", |s| &s.flood_vs_clean, 2),
        ("equal load / clean", |s| &s.equal_load_vs_clean, 2),
        ("flooder CPU (share of a core)", |s| &s.flooder_cpu, 2),
        ("burner CPU (share of a core)", |s| &s.burner_cpu, 2),
        ("flooder rate (Mframes/s)", |s| &s.flooder_mpps, 2),
        ("switch CPU under flood", |s| &s.switch_cpu_flood, 2),
        (
            "switch CPU under equal load",
            |s| &s.switch_cpu_equal_load,
            2,
        ),
        ("TCP beside sender into a sink", |s| &s.sender_twin_gbps, 2),
        (
            "sender into a sink / equal load",
            |s| &s.sender_twin_vs_equal_load,
            2,
        ),
        ("sender into a sink CPU", |s| &s.sender_twin_cpu, 2),
    ];
    let mut out = format!(
        "Floods: TCP A→B (1 stream, {} s) while C attacks; D idle. Median (min–max) of {} rounds.\n",
        results.config.tcp_seconds, results.config.rounds
    );
    for &attack in &results.config.attacks {
        let summaries: Vec<&FloodSummary> = results
            .summaries
            .iter()
            .filter(|s| s.attack == attack)
            .collect();
        out.push_str(&format!("\n{:<34}", format!("attack: {}", attack.name())));
        for summary in &summaries {
            out.push_str(&format!("{:>22}", summary.system));
        }
        out.push('\n');
        for (label, get, digits) in rows {
            if !results.config.sender_twin && label.contains("sink") {
                continue;
            }
            out.push_str(&format!("{label:<34}"));
            for summary in &summaries {
                out.push_str(&format!("{:>22}", fmt(get(summary), digits)));
            }
            out.push('\n');
        }
    }
    for sample in results.rounds.iter().filter(|s| s.error.is_some()) {
        out.push_str(&format!(
            "round {} {} failed: {}\n",
            sample.round,
            sample.system,
            sample.error.as_deref().unwrap_or_default()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flood_sources_are_unicast_and_locally_administered() {
        let mut random = Random(42);
        let sources: std::collections::HashSet<[u8; 6]> =
            (0..1000).map(|_| random_source(&mut random)).collect();
        assert_eq!(sources.len(), 1000, "every source is new");
        for source in &sources {
            assert_eq!(source[0] & 0x01, 0, "unicast: {source:02x?}");
            assert_eq!(source[0] & 0x02, 0x02, "locally administered");
        }
    }

    #[test]
    fn attack_frames_have_their_destinations_and_shapes() {
        let mut random = Random(7);
        let mut frame = [0u8; FRAME_LEN];
        let mut shape = |attack, index| {
            let length = attack_frame(attack, index, &mut random, &mut frame);
            (length, frame)
        };
        let (length, broadcast) = shape(Attack::Broadcast, 0);
        assert_eq!((length, &broadcast[0..6]), (FRAME_LEN, &BROADCAST[..]));
        assert_eq!(&broadcast[6..12], &ATTACKER_SOURCE[..]);
        let (_, multicast) = shape(Attack::Multicast, 0);
        assert_eq!(multicast[0] & 0x01, 0x01, "group address");
        let lengths: Vec<usize> = (0..5).map(|i| shape(Attack::BadFrames, i).0).collect();
        assert_eq!(lengths, [14, 16, FRAME_LEN, FRAME_LEN, FRAME_LEN]);
        let (_, reserved_vid) = shape(Attack::BadFrames, 2);
        assert_eq!(&reserved_vid[12..16], &[0x81, 0x00, 0x0f, 0xff]);
        let (_, group_source) = shape(Attack::BadFrames, 3);
        assert_eq!(group_source[6] & 0x01, 0x01, "multicast source");
    }

    #[test]
    fn spread_is_median_and_range() {
        let spread = Spread::of(&[0.9, 0.5, 1.1]).unwrap();
        assert_eq!((spread.median, spread.min, spread.max), (0.9, 0.5, 1.1));
        assert!(Spread::of(&[]).is_none());
    }

    #[test]
    fn burner_uses_its_share() {
        let report = burn(0.5, Duration::from_millis(400));
        let share = report.cpu_s / report.elapsed_s;
        // The machine is shared, so the burner may get less than it asks for: only
        // "burns, and does not spin flat out" is checked.
        assert!(report.cpu_s > 0.0 && share <= 0.8, "share {share}");
    }
}
