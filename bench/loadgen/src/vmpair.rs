//! The VM pair (`run --vm`): two guests through libvirt, kernel bridge vs tapswitch, in the
//! same run, interleaved by round.
//!
//! - **bridge**: each guest on its own persistent TAP (`ip tuntap … vnet_hdr`), both TAPs in a
//!   Linux bridge: the kernel path a libvirt host uses without a switch.
//! - **tapswitch**: `tapswitch run` with two VM ports from a config file (`vm = "DOMAIN"`), so
//!   the switch makes the passthru macvtaps itself; each guest's `<interface>` is what
//!   `tapswitch libvirt-xml PORT` prints.
//!
//! The guests are the test bed's (`scripts/vm-testbed.sh`: Debian kernel, busybox initramfs)
//! with a second initramfs archive appended that replaces `/init` with a benchmark script.
//! Busybox has no iperf3, so TCP is measured with busybox itself: the source guest pipes
//! `dd if=/dev/zero` into `nc`, the sink guest's `nc -ll -e` counts the bytes with `wc -c`
//! and times the connection with `/proc/uptime` (10 ms resolution; transfers are sized to
//! take seconds). Round trips are busybox `ping -i 0.2` between the guests. The guests run
//! under TCG (software emulation): the numbers measure the emulated guests as much as the
//! switch, and only the ratio between the two paths in one run means anything.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::proc::{self, OwnedChild};
use crate::signals;

const CACHE_DIR: &str = "/var/cache/tapswitch-vm";
const LIBVIRT_URI: &str = "qemu:///system";
const SINK_PORT: u16 = 5001;
/// Boot, peer ping and all transfers of one round.
const ROUND_LIMIT: Duration = Duration::from_secs(600);
/// Virtio modules of the test bed's guest, in load order (`scripts/vm-testbed.sh`).
const GUEST_MODULES: &str = "virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net";

/// The benchmark's `/init` for the guests; settings come from the kernel command line.
const BENCH_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for module in @MODULES@; do insmod /lib/modules/$module.ko || echo "TSW-ERROR insmod $module"; done
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    tsw.ip=*) ip=${arg#tsw.ip=} ;;
    tsw.role=*) role=${arg#tsw.role=} ;;
    tsw.peer=*) peer=${arg#tsw.peer=} ;;
    tsw.port=*) port=${arg#tsw.port=} ;;
    tsw.mb=*) mb=${arg#tsw.mb=} ;;
    tsw.transfers=*) transfers=${arg#tsw.transfers=} ;;
    tsw.pings=*) pings=${arg#tsw.pings=} ;;
  esac
done
ip link set lo up
for _ in $(seq 100); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
ip link set eth0 up && ip addr add "$ip" dev eth0 && echo "TSW-NET-UP $ip"
if [ "$role" = sink ]; then
  nc -ll -p "$port" -e /bin/sh -c 'a=$(cut -d" " -f1 /proc/uptime); n=$(wc -c); b=$(cut -d" " -f1 /proc/uptime); echo "TSW-TCP-RECV $n $a $b" >/dev/console' &
  echo "TSW-SINK-READY"
else
  end=$(( $(date +%s) + 120 ))
  until ping -c 1 -W 1 "$peer" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || { echo "TSW-ERROR peer $peer unreachable"; break; }
    sleep 0.2
  done
  until echo | nc -w 2 "$peer" "$port" 2>/dev/null; do sleep 0.5; done
  echo "TSW-RTT $(ping -q -c "$pings" -i 0.2 "$peer" | tail -n 1)"
  for _ in $(seq "$transfers"); do
    dd if=/dev/zero bs=65536 count=$(( mb * 16 )) 2>/dev/null | nc "$peer" "$port"
    sleep 1
  done
  echo "TSW-BENCH-DONE"
fi
while true; do sleep 60; done
"#;

/// Settings of the VM pair.
pub struct VmConfig {
    pub rounds: u32,
    /// MiB per TCP transfer.
    pub megabytes: u32,
    pub transfers: u32,
    pub pings: u32,
    pub tapswitch_bin: PathBuf,
    pub output: PathBuf,
}

/// One system's measurements in one round.
#[derive(Clone, Debug, Serialize)]
pub struct VmRound {
    pub system: &'static str,
    pub round: u32,
    /// Guest-to-guest TCP goodput of each transfer, Mb/s, as the sink timed it.
    pub tcp_mbps: Vec<f64>,
    /// Guest-to-guest ping round trip, ms.
    pub rtt_min_ms: f64,
    pub rtt_avg_ms: f64,
    pub rtt_max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct VmResults {
    pub note: &'static str,
    pub domain_type: String,
    pub megabytes_per_transfer: u32,
    pub rounds: Vec<VmRound>,
}

/// Why the VM pair cannot run here, if it cannot: the benchmark then skips it with this note.
pub fn unavailable(tapswitch_bin: &Path) -> Option<String> {
    for file in ["vmlinuz", "initrd.img", "domain-type"] {
        if !Path::new(CACHE_DIR).join(file).is_file() {
            return Some(format!(
                "no test-bed guest ({CACHE_DIR}/{file} missing; run scripts/vm-testbed.sh)"
            ));
        }
    }
    for tool in ["virsh", "busybox", "gzip"] {
        if !proc::on_path(tool) {
            return Some(format!(
                "{tool} not installed (scripts/vm-testbed.sh installs it)"
            ));
        }
    }
    if proc::run("virsh", &["-q", "-c", LIBVIRT_URI, "version"]).is_err() {
        return Some(format!(
            "libvirtd does not answer on {LIBVIRT_URI} (scripts/vm-testbed.sh starts it)"
        ));
    }
    if !tapswitch_bin.is_file() {
        return Some(format!("{} not built", tapswitch_bin.display()));
    }
    None
}

/// Runs the interleaved rounds and writes the results file.
pub fn run(config: &VmConfig) -> Result<VmResults, String> {
    let scratch = Scratch::new()?;
    let initrd = build_initrd(&scratch.0)?;
    let domain_type = std::fs::read_to_string(Path::new(CACHE_DIR).join("domain-type"))
        .map_err(|e| format!("reading the domain type: {e}"))?
        .trim()
        .to_owned();
    let mut rounds = Vec::new();
    for round in 1..=config.rounds {
        for system in ["bridge", "tapswitch"] {
            if signals::stop_requested() {
                return Err("interrupted".into());
            }
            eprintln!("vm round {round}/{}: {system}", config.rounds);
            let measured = run_round(config, &scratch.0, &initrd, &domain_type, system, round)?;
            eprintln!(
                "  TCP {:?} Mb/s, RTT avg {:.3} ms",
                measured.tcp_mbps, measured.rtt_avg_ms
            );
            rounds.push(measured);
        }
    }
    let results = VmResults {
        note: "busybox guests under TCG: dd|nc TCP timed by the sink with /proc/uptime, busybox ping; compare the two paths within this run only",
        domain_type,
        megabytes_per_transfer: config.megabytes,
        rounds,
    };
    if let Some(dir) = config.output.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let json = serde_json::to_string_pretty(&results).expect("plain structs serialise");
    std::fs::write(&config.output, json)
        .map_err(|e| format!("writing {}: {e}", config.output.display()))?;
    Ok(results)
}

/// Medians per system and the tapswitch/bridge ratios, for people.
pub fn table(results: &VmResults) -> String {
    let median = |mut values: Vec<f64>| -> f64 {
        if values.is_empty() {
            return f64::NAN;
        }
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let summary = |system: &str| {
        let rounds: Vec<&VmRound> = results
            .rounds
            .iter()
            .filter(|r| r.system == system)
            .collect();
        (
            median(
                rounds
                    .iter()
                    .flat_map(|r| r.tcp_mbps.iter().copied())
                    .collect(),
            ),
            median(rounds.iter().map(|r| r.rtt_avg_ms).collect()),
        )
    };
    let (bridge_tcp, bridge_rtt) = summary("bridge");
    let (switch_tcp, switch_rtt) = summary("tapswitch");
    let mut out = format!(
        "VM pair ({} guests, {} MiB per transfer; medians of {} rounds):\n",
        results.domain_type,
        results.megabytes_per_transfer,
        results.rounds.len() / 2
    );
    out.push_str(&format!(
        "{:<28} {:>12} {:>12} {:>8}\n",
        "metric", "bridge", "tapswitch", "ratio"
    ));
    out.push_str(&format!(
        "{:<28} {:>12.0} {:>12.0} {:>7.2}x\n",
        "VM-to-VM TCP (Mb/s)",
        bridge_tcp,
        switch_tcp,
        switch_tcp / bridge_tcp
    ));
    out.push_str(&format!(
        "{:<28} {:>12.3} {:>12.3} {:>7.2}x\n",
        "VM-to-VM ping avg (ms)",
        bridge_rtt,
        switch_rtt,
        switch_rtt / bridge_rtt
    ));
    out
}

/// The test bed's initramfs with a second archive appended that replaces `/init`.
fn build_initrd(scratch: &Path) -> Result<PathBuf, String> {
    let root = scratch.join("initramfs");
    std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let init = root.join("init");
    std::fs::write(&init, BENCH_INIT.replace("@MODULES@", GUEST_MODULES))
        .map_err(|e| format!("writing {}: {e}", init.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", init.display()))?;
    let archive = scratch.join("bench-init.cpio.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && echo init | busybox cpio -o -H newc 2>/dev/null | gzip -1 > '{}'",
            root.display(),
            archive.display()
        ))
        .status()
        .map_err(|e| format!("running cpio: {e}"))?;
    if !status.success() {
        return Err(format!("building {} failed ({status})", archive.display()));
    }
    // The kernel unpacks concatenated archives in order; later files replace earlier ones.
    let mut bytes = std::fs::read(Path::new(CACHE_DIR).join("initrd.img"))
        .map_err(|e| format!("reading the test-bed initrd: {e}"))?;
    bytes.extend(
        std::fs::read(&archive).map_err(|e| format!("reading {}: {e}", archive.display()))?,
    );
    let initrd = scratch.join("bench-initrd.img");
    std::fs::write(&initrd, bytes).map_err(|e| format!("writing {}: {e}", initrd.display()))?;
    Ok(initrd)
}

fn run_round(
    config: &VmConfig,
    scratch: &Path,
    initrd: &Path,
    domain_type: &str,
    system: &'static str,
    round: u32,
) -> Result<VmRound, String> {
    let pid = std::process::id() % 100_000;
    let tag = if system == "bridge" { 'b' } else { 's' };
    let domains = [
        format!("tsb-vm-{pid}-{tag}{round}-sink"),
        format!("tsb-vm-{pid}-{tag}{round}-src"),
    ];
    let macs = [
        format!("52:54:00:bb:{:02x}:01", round % 256),
        format!("52:54:00:bb:{:02x}:02", round % 256),
    ];
    // Kept until the end of the round: dropped in reverse, guests first.
    let mut links = Vec::new();
    let mut _switch = None;
    let interfaces: Vec<String> = if system == "bridge" {
        let bridge = format!("tsvbr{pid}");
        proc::ip(&["link", "add", &bridge, "type", "bridge"]).map_err(|e| e.to_string())?;
        links.push(Link(bridge.clone()));
        proc::ip(&["link", "set", &bridge, "up"]).map_err(|e| e.to_string())?;
        let mut xml = Vec::new();
        for (i, mac) in macs.iter().enumerate() {
            let tap = format!("tsvt{pid}{}", ['a', 'b'][i]);
            proc::ip(&["tuntap", "add", "dev", &tap, "mode", "tap", "vnet_hdr"])
                .map_err(|e| e.to_string())?;
            links.push(Link(tap.clone()));
            proc::ip(&["link", "set", &tap, "master", &bridge, "up"]).map_err(|e| e.to_string())?;
            xml.push(format!(
                "<interface type='ethernet'>\n  <mac address='{mac}'/>\n  <target dev='{tap}' managed='no'/>\n  <model type='virtio'/>\n</interface>\n"
            ));
        }
        xml
    } else {
        let ports = [format!("tsvp{pid}a"), format!("tsvp{pid}b")];
        let mut toml = String::new();
        for i in 0..2 {
            toml.push_str(&format!(
                "[[port]]\nname = \"{}\"\nvm = \"{}\"\nvm_mac = \"{}\"\n\n",
                ports[i], domains[i], macs[i]
            ));
        }
        let config_path = scratch.join(format!("switch-{round}.toml"));
        std::fs::write(&config_path, toml)
            .map_err(|e| format!("writing the switch config: {e}"))?;
        let control = scratch.join(format!("ctl-{round}.sock"));
        let switch = start_switch(
            &config.tapswitch_bin,
            &config_path,
            &control,
            scratch,
            round,
        )?;
        _switch = Some(switch);
        ports
            .iter()
            .map(|port| {
                proc::run(
                    &config.tapswitch_bin.display().to_string(),
                    &[
                        "libvirt-xml",
                        port,
                        "--control",
                        &control.display().to_string(),
                    ],
                )
                .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?
    };

    let roles = ["sink", "source"];
    let ips = ["10.73.0.2/24", "10.73.0.1/24"];
    let mut guests = Vec::new();
    for i in 0..2 {
        let cmdline = format!(
            "console=ttyS0 quiet panic=-1 tsw.ip={} tsw.role={} tsw.peer=10.73.0.2 tsw.port={SINK_PORT} tsw.mb={} tsw.transfers={} tsw.pings={}",
            ips[i], roles[i], config.megabytes, config.transfers, config.pings
        );
        guests.push(Guest::create(
            scratch,
            &domains[i],
            domain_type,
            initrd,
            &cmdline,
            &interfaces[i],
        )?);
    }
    let [sink, source] = &guests[..] else {
        unreachable!("two guests")
    };
    let deadline = Instant::now() + ROUND_LIMIT;
    loop {
        if signals::stop_requested() {
            return Err("interrupted".into());
        }
        let text = source.console();
        if text.contains("TSW-BENCH-DONE") {
            break;
        }
        if let Some(line) = text
            .lines()
            .chain(sink.console().lines())
            .find(|l| l.contains("TSW-ERROR"))
        {
            return Err(format!("{system} round {round}: guest error: {line}"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{system} round {round}: the guests did not finish within {ROUND_LIMIT:?}; source console:\n{text}"
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let (rtt_min_ms, rtt_avg_ms, rtt_max_ms) = parse_rtt(&source.console()).ok_or_else(|| {
        format!(
            "{system} round {round}: no round-trip line:\n{}",
            source.console()
        )
    })?;
    let minimum = u64::from(config.megabytes) << 20;
    let tcp_mbps = parse_transfers(&sink.console(), minimum);
    if tcp_mbps.len() != config.transfers as usize {
        return Err(format!(
            "{system} round {round}: {} of {} transfers arrived whole; sink console:\n{}",
            tcp_mbps.len(),
            config.transfers,
            sink.console()
        ));
    }
    Ok(VmRound {
        system,
        round,
        tcp_mbps,
        rtt_min_ms,
        rtt_avg_ms,
        rtt_max_ms,
    })
}

/// `TSW-RTT round-trip min/avg/max = 0.412/0.630/1.021 ms` → (min, avg, max).
fn parse_rtt(console: &str) -> Option<(f64, f64, f64)> {
    let line = console.lines().find(|l| l.starts_with("TSW-RTT"))?;
    let values = line.split('=').nth(1)?.split_whitespace().next()?;
    let mut parts = values.split('/').map(|v| v.parse::<f64>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// Goodput in Mb/s of every `TSW-TCP-RECV BYTES START END` of at least `minimum` bytes.
fn parse_transfers(console: &str, minimum: u64) -> Vec<f64> {
    console
        .lines()
        .filter_map(|line| {
            let mut fields = line.strip_prefix("TSW-TCP-RECV ")?.split_whitespace();
            let bytes: u64 = fields.next()?.parse().ok()?;
            let start: f64 = fields.next()?.parse().ok()?;
            let end: f64 = fields.next()?.parse().ok()?;
            (bytes >= minimum && end > start).then(|| bytes as f64 * 8.0 / (end - start) / 1e6)
        })
        .collect()
}

fn start_switch(
    binary: &Path,
    config: &Path,
    control: &Path,
    scratch: &Path,
    round: u32,
) -> Result<OwnedChild, String> {
    let log = scratch.join(format!("tapswitch-{round}.log"));
    let log_file =
        std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let ready = scratch.join(format!("tapswitch-{round}.out"));
    let ready_file =
        std::fs::File::create(&ready).map_err(|e| format!("creating {}: {e}", ready.display()))?;
    let mut command = Command::new(binary);
    command
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--control")
        .arg(control)
        // Its own state file: not the machine's /var/lib/tapswitch.
        .arg("--state-dir")
        .arg(scratch.join(format!("state-{round}")))
        .stdin(Stdio::null())
        .stdout(ready_file)
        .stderr(log_file);
    let mut child =
        OwnedChild::spawn(command, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let up = proc::wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        std::fs::read_to_string(&ready).is_ok_and(|text| text.contains("tapswitch ready"))
    });
    if !up {
        let status = child.try_status().ok().flatten();
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        return Err(format!(
            "tapswitch did not get ready (exit: {status:?}); its log:\n{tail}"
        ));
    }
    Ok(child)
}

/// A transient libvirt domain (`virsh create`), destroyed (and so gone) on drop.
struct Guest {
    name: String,
    console: PathBuf,
}

impl Guest {
    fn create(
        scratch: &Path,
        name: &str,
        domain_type: &str,
        initrd: &Path,
        cmdline: &str,
        interface: &str,
    ) -> Result<Self, String> {
        let console = scratch.join(format!("{name}.console"));
        let xml = format!(
            "<domain type='{domain_type}'>
  <name>{name}</name>
  <memory unit='MiB'>192</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{CACHE_DIR}/vmlinuz</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
{interface}
    <serial type='file'><source path='{console}'/><target port='0'/></serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
",
            initrd = initrd.display(),
            console = console.display(),
        );
        let path = scratch.join(format!("{name}.xml"));
        let mut file =
            std::fs::File::create(&path).map_err(|e| format!("writing {}: {e}", path.display()))?;
        file.write_all(xml.as_bytes())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        proc::run(
            "virsh",
            &[
                "-q",
                "-c",
                LIBVIRT_URI,
                "create",
                &path.display().to_string(),
            ],
        )
        .map_err(|e| format!("starting guest {name}: {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            console,
        })
    }

    fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = proc::run("virsh", &["-q", "-c", LIBVIRT_URI, "destroy", &self.name]);
    }
}

/// A link deleted on drop.
struct Link(String);

impl Drop for Link {
    fn drop(&mut self) {
        let _ = proc::ip(&["link", "del", &self.0]);
    }
}

/// The run's scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, String> {
        let path = std::env::temp_dir().join(format!("tsb-vm-{}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_lines_parse() {
        let console =
            "TSW-NET-UP 10.73.0.1/24\nTSW-RTT round-trip min/avg/max = 0.412/0.630/1.021 ms\n";
        assert_eq!(parse_rtt(console), Some((0.412, 0.630, 1.021)));
        assert_eq!(parse_rtt("TSW-RTT \n"), None);
        let sink = "TSW-TCP-RECV 1 10.00 10.01\nTSW-TCP-RECV 134217728 12.00 14.00\nnoise\n";
        assert_eq!(
            parse_transfers(sink, 128 << 20),
            vec![134217728.0 * 8.0 / 2.0 / 1e6]
        );
    }
}
