//! Real VMs through libvirt (`qemu:///system`) on a running `tapswitch run`: guests started the
//! way Nova starts them, with `<interface type='ethernet'><target dev=… managed='no'/>` on a
//! device stacked on (macvtap) or glued to (tc redirects) a switch port's TAP, while the switch
//! keeps the only fd of that TAP.
//!
//! Needs root. Each test runs `scripts/vm-testbed.sh` first (idempotent; installs QEMU and
//! libvirt, starts the daemons, builds the tiny guest once), so `cargo test` alone works; the
//! daemons it starts keep running (`scripts/vm-testbed.sh --stop`; `scripts/test.sh` does it).
//! The guests run under TCG and boot in a few seconds. libvirt is driven with `virsh`: the
//! interface XML under test is [`VmInterface::to_xml`]'s, in the domain and in hot-plugs.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use tapswitch::link::{LinkSettings, Netlink};
use tapswitch::tap::{Tap, TapOptions};
use tapswitch::vm::{VmAttachment, VmInterface};

const CACHE_DIR: &str = "/var/cache/tapswitch-vm";
const LIBVIRT_URI: &str = "qemu:///system";
/// Port of the TCP echo server the guest's init starts (busybox nc).
const ECHO_PORT: u16 = 7;
/// Boot (~3-6 s under TCG) plus the first successful ping, with two guests sharing two cores.
const GUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `scripts/vm-testbed.sh` once per test binary and returns the libvirt domain type it
/// found usable ("kvm" or "qemu").
fn testbed() -> &'static str {
    static DOMAIN_TYPE: OnceLock<String> = OnceLock::new();
    DOMAIN_TYPE.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/vm-testbed.sh");
        let output = Command::new("bash")
            .arg(&script)
            .output()
            .expect("running scripts/vm-testbed.sh");
        assert!(
            output.status.success(),
            "scripts/vm-testbed.sh failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::read_to_string(Path::new(CACHE_DIR).join("domain-type"))
            .expect("vm-testbed.sh records the domain type")
            .trim()
            .to_owned()
    })
}

/// Runs `virsh -c qemu:///system ARGS`; returns success, stdout and stderr.
fn virsh(args: &[&str]) -> (bool, String, String) {
    let output = Command::new("virsh")
        .args(["-c", LIBVIRT_URI])
        .args(args)
        .output()
        .expect("running virsh");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A scratch directory for domain XML and console logs, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(unique("tapswitch-vm-"));
        std::fs::create_dir_all(&path).expect("creating scratch dir");
        Self(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A link deleted on drop (a macvtap or a VM TAP made for a test).
struct LinkGuard(String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// A guest's settings, read by its init from the kernel command line.
struct GuestSpec<'a> {
    ip_with_prefix: &'a str,
    /// Ping this address until it answers and report it on the console.
    peer: Option<&'a str>,
    interface: &'a VmInterface,
}

/// A libvirt domain defined and started for a test; destroyed and undefined on drop.
struct Guest {
    name: String,
    console: PathBuf,
}

impl Guest {
    fn start(scratch: &ScratchDir, spec: &GuestSpec<'_>) -> Self {
        let name = unique("tsw-vm-");
        let console = scratch.0.join(format!("{name}.console"));
        let mut cmdline = format!(
            "console=ttyS0 quiet panic=-1 tsw.ip={} tsw.echo={ECHO_PORT}",
            spec.ip_with_prefix
        );
        if let Some(peer) = spec.peer {
            cmdline.push_str(&format!(" tsw.peer={peer} tsw.ping_secs=100"));
        }
        let interface = spec.interface.to_xml().expect("valid interface");
        let xml = format!(
            "<domain type='{domain_type}'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{CACHE_DIR}/vmlinuz</kernel>
    <initrd>{CACHE_DIR}/initrd.img</initrd>
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
            domain_type = testbed(),
            console = console.display(),
        );
        let xml_path = scratch.0.join(format!("{name}.xml"));
        std::fs::write(&xml_path, &xml).expect("writing domain XML");
        let xml_arg = xml_path.to_str().expect("UTF-8 path");
        let (ok, _, err) = virsh(&["define", xml_arg]);
        assert!(ok, "virsh define {name} failed: {err}\n{xml}");
        let guest = Self { name, console };
        let (ok, _, err) = virsh(&["start", &guest.name]);
        assert!(ok, "virsh start {} failed: {err}\n{xml}", guest.name);
        guest
    }

    fn console_text(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// Waits until the console shows `marker`; panics with the console if it shows
    /// `failure` first or time runs out.
    fn wait_console(&self, marker: &str, failure: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.console_text();
            if text.contains(marker) {
                return;
            }
            assert!(
                !text.contains(failure) && !text.contains("TSW-ERROR"),
                "guest {} reported a failure waiting for {marker:?}:\n{text}",
                self.name
            );
            assert!(
                Instant::now() < deadline,
                "guest {} did not print {marker:?} within {timeout:?}; console:\n{text}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `virsh attach-device` or `detach-device` (`verb`) of `interface`, live only.
    fn change_device(&self, scratch: &ScratchDir, verb: &str, interface: &VmInterface) {
        let path = scratch.0.join(format!("{}-{verb}.xml", self.name));
        std::fs::write(&path, interface.to_xml().unwrap()).unwrap();
        let (ok, _, err) = virsh(&[verb, &self.name, path.to_str().unwrap(), "--live"]);
        assert!(ok, "virsh {verb} on {} failed: {err}", self.name);
    }

    /// The target devices of the guest's interfaces, from `virsh domiflist`.
    fn interface_targets(&self) -> Vec<String> {
        let (ok, out, err) = virsh(&["domiflist", &self.name]);
        assert!(ok, "virsh domiflist {}: {err}", self.name);
        out.lines()
            .skip(2)
            .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
            .collect()
    }

    fn is_running(&self) -> bool {
        let (_, state, _) = virsh(&["domstate", &self.name]);
        state.trim() == "running"
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.name]);
        let _ = virsh(&["undefine", &self.name]);
    }
}

fn netlink_up(netlink: &mut Netlink, index: u32) {
    netlink
        .configure(
            index,
            &LinkSettings {
                up: Some(true),
                ..LinkSettings::default()
            },
        )
        .expect("bringing the link up");
}

/// Sends `payload` to the guest's TCP echo server from inside `netns` and returns the reply.
fn tcp_echo(netns: &str, guest_ip: &str, payload: &[u8]) -> Vec<u8> {
    let address: SocketAddr = format!("{guest_ip}:{ECHO_PORT}").parse().unwrap();
    let payload = payload.to_vec();
    tapswitch::netns::run_in(netns, move || {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connecting to {address}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(&payload).unwrap();
        let mut reply = vec![0u8; payload.len()];
        stream
            .read_exact(&mut reply)
            .unwrap_or_else(|e| panic!("reading the echo from {address}: {e}"));
        reply
    })
    .expect("entering the namespace")
}

/// The port index the switch learned `mac` on, from a SIGUSR1 snapshot.
fn learned_port(switch: &mut Switch, mac: &str) -> Option<u64> {
    let snapshot = switch.snapshot();
    snapshot["fdb"]
        .as_array()
        .expect("fdb")
        .iter()
        .find(|entry| entry["mac"] == mac)
        .and_then(|entry| entry["port"].as_u64())
}

#[test]
fn two_guests_on_macvtaps_ping_each_other_and_a_namespace_talks_to_both() {
    testbed();
    let netns = Netns::new();
    let ports = [unique("vp"), unique("vp")];
    let switch_args = [
        "--port".to_owned(),
        ports[0].clone(),
        "--port".to_owned(),
        ports[1].clone(),
        "--port".to_owned(),
        format!("n0@{}", netns.name),
    ];
    let switch_args: Vec<&str> = switch_args.iter().map(String::as_str).collect();
    let mut switch = Switch::start(&switch_args);
    sh(
        "ip",
        &[
            "-n",
            &netns.name,
            "addr",
            "add",
            "10.67.0.100/24",
            "dev",
            "n0",
        ],
    );

    let mut netlink = Netlink::open().unwrap();
    let mut macvtap_guards = Vec::new();
    let mut interfaces = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let port_index = netlink.index_of(port).unwrap();
        let macvtap = unique("mvt");
        let index = netlink.create_macvtap(&macvtap, port_index, None).unwrap();
        macvtap_guards.push(LinkGuard(macvtap.clone()));
        netlink_up(&mut netlink, index);
        interfaces.push(VmInterface {
            attachment: VmAttachment::Macvtap { macvtap },
            mac: format!("52:54:00:67:00:{:02x}", i + 1).parse().unwrap(),
            queues: 1,
            alias: None,
        });
    }

    let scratch = ScratchDir::new();
    let guests: Vec<Guest> = (0..2)
        .map(|i| {
            Guest::start(
                &scratch,
                &GuestSpec {
                    ip_with_prefix: &format!("10.67.0.{}/24", i + 1),
                    peer: Some(&format!("10.67.0.{}", 2 - i)),
                    interface: &interfaces[i],
                },
            )
        })
        .collect();

    // Each guest pings the other through macvtap -> port TAP -> switch -> port TAP -> macvtap.
    guests[0].wait_console("TSW-PING-OK 10.67.0.2", "TSW-PING-FAIL", GUEST_TIMEOUT);
    guests[1].wait_console("TSW-PING-OK 10.67.0.1", "TSW-PING-FAIL", GUEST_TIMEOUT);
    for (i, guest) in guests.iter().enumerate() {
        let mac = interfaces[i].mac.to_string();
        assert!(
            guest
                .console_text()
                .contains(&format!("TSW-NET-UP 10.67.0.{}/24 {mac}", i + 1)),
            "guest {i} has the MAC from the interface XML:\n{}",
            guest.console_text()
        );
        // The switch learned each guest's MAC on the port its macvtap is stacked on.
        assert_eq!(learned_port(&mut switch, &mac), Some(i as u64), "{mac}");
    }

    // A namespace port on the same switch reaches both guests: ICMP and TCP.
    for i in 0..2 {
        let guest_ip = format!("10.67.0.{}", i + 1);
        assert_eq!(ping(&netns.name, &guest_ip, 3, "0.2"), 3, "ping {guest_ip}");
        let payload = format!("hello guest {i} through tapswitch");
        assert_eq!(
            tcp_echo(&netns.name, &guest_ip, payload.as_bytes()),
            payload.as_bytes(),
            "TCP echo from {guest_ip}"
        );
    }
    assert!(guests.iter().all(Guest::is_running));

    // libvirt leaves unmanaged devices alone: destroying a guest keeps its macvtap and port.
    drop(guests);
    for guard in &macvtap_guards {
        assert!(
            netlink.index_of(&guard.0).is_ok(),
            "{} was deleted",
            guard.0
        );
    }
    for port in &ports {
        assert!(
            netlink.index_of(port).is_ok(),
            "port TAP {port} was deleted"
        );
    }
    assert!(switch.stop(), "switch exits cleanly");
}

#[test]
fn a_guest_on_its_own_tap_glued_to_a_port_talks_to_a_namespace_until_unglued() {
    testbed();
    let netns = Netns::new();
    let port = unique("vg");
    let switch_args = [
        "--port".to_owned(),
        port.clone(),
        "--port".to_owned(),
        format!("n0@{}", netns.name),
    ];
    let switch_args: Vec<&str> = switch_args.iter().map(String::as_str).collect();
    let _switch = Switch::start(&switch_args);
    sh(
        "ip",
        &[
            "-n",
            &netns.name,
            "addr",
            "add",
            "10.68.0.100/24",
            "dev",
            "n0",
        ],
    );

    // The VM's own TAP, as Nova makes it for vif_type=tap: persistent, no fd until QEMU's.
    let vm_tap = unique("vt");
    let persistent = TapOptions {
        persistent: true,
        ..TapOptions::default()
    };
    drop(Tap::open(&vm_tap, &persistent).expect("creating the VM TAP"));
    let _vm_tap_guard = LinkGuard(vm_tap.clone());
    let mut netlink = Netlink::open().unwrap();
    let vm_index = netlink.index_of(&vm_tap).unwrap();
    let port_index = netlink.index_of(&port).unwrap();
    netlink_up(&mut netlink, vm_index);
    netlink.create_tap_glue(port_index, vm_index).unwrap();

    let interface = VmInterface {
        attachment: VmAttachment::Glue {
            vm_tap: vm_tap.clone(),
        },
        mac: "52:54:00:68:00:01".parse().unwrap(),
        queues: 1,
        alias: None,
    };
    let scratch = ScratchDir::new();
    let guest = Guest::start(
        &scratch,
        &GuestSpec {
            ip_with_prefix: "10.68.0.1/24",
            peer: Some("10.68.0.100"),
            interface: &interface,
        },
    );
    guest.wait_console("TSW-PING-OK 10.68.0.100", "TSW-PING-FAIL", GUEST_TIMEOUT);
    assert_eq!(ping(&netns.name, "10.68.0.1", 3, "0.2"), 3);
    let payload = b"hello glued guest";
    assert_eq!(tcp_echo(&netns.name, "10.68.0.1", payload), payload);

    // Unglued, the guest is cut off; glued again, it is back.
    netlink.remove_tap_glue(port_index, vm_index).unwrap();
    assert_eq!(ping(&netns.name, "10.68.0.1", 2, "0.2"), 0, "unglued");
    netlink.create_tap_glue(port_index, vm_index).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || ping(
            &netns.name,
            "10.68.0.1",
            1,
            "0.2"
        ) == 1),
        "glued again"
    );
    assert_eq!(tcp_echo(&netns.name, "10.68.0.1", payload), payload);
    assert!(guest.is_running());
}

#[test]
fn a_guest_nic_hot_unplugged_and_replugged_on_its_macvtap_comes_back() {
    testbed();
    let netns = Netns::new();
    let port = unique("vh");
    let switch_args = [
        "--port".to_owned(),
        port.clone(),
        "--port".to_owned(),
        format!("n0@{}", netns.name),
    ];
    let switch_args: Vec<&str> = switch_args.iter().map(String::as_str).collect();
    let _switch = Switch::start(&switch_args);
    sh(
        "ip",
        &[
            "-n",
            &netns.name,
            "addr",
            "add",
            "10.69.0.100/24",
            "dev",
            "n0",
        ],
    );
    let mut netlink = Netlink::open().unwrap();
    let port_index = netlink.index_of(&port).unwrap();
    let macvtap = unique("mvt");
    let index = netlink.create_macvtap(&macvtap, port_index, None).unwrap();
    let _macvtap_guard = LinkGuard(macvtap.clone());
    netlink_up(&mut netlink, index);
    let interface = VmInterface {
        attachment: VmAttachment::Macvtap {
            macvtap: macvtap.clone(),
        },
        mac: "52:54:00:69:00:01".parse().unwrap(),
        queues: 1,
        alias: None,
    };

    let scratch = ScratchDir::new();
    let guest = Guest::start(
        &scratch,
        &GuestSpec {
            ip_with_prefix: "10.69.0.1/24",
            peer: Some("10.69.0.100"),
            interface: &interface,
        },
    );
    guest.wait_console("TSW-PING-OK 10.69.0.100", "TSW-PING-FAIL", GUEST_TIMEOUT);
    assert_eq!(guest.interface_targets(), vec![macvtap.clone()]);

    // Unplug: the guest acknowledges through ACPI, libvirt drops the NIC and closes /dev/tapN.
    guest.change_device(&scratch, "detach-device", &interface);
    assert!(
        wait_for(Duration::from_secs(30), || guest
            .interface_targets()
            .is_empty()),
        "the NIC is still attached: {:?}",
        guest.interface_targets()
    );
    assert_eq!(ping(&netns.name, "10.69.0.1", 2, "0.2"), 0, "unplugged");
    assert!(
        netlink.index_of(&macvtap).is_ok(),
        "unplug left the macvtap in place"
    );

    // Replug the same XML: the guest's init configures the new eth0 again.
    guest.change_device(&scratch, "attach-device", &interface);
    let net_up = format!("TSW-NET-UP 10.69.0.1/24 {}", interface.mac);
    assert!(
        wait_for(GUEST_TIMEOUT, || guest
            .console_text()
            .matches(&net_up)
            .count()
            >= 2),
        "the replugged NIC was not configured; console:\n{}",
        guest.console_text()
    );
    assert_eq!(guest.interface_targets(), vec![macvtap.clone()]);
    assert!(
        wait_for(Duration::from_secs(20), || ping(
            &netns.name,
            "10.69.0.1",
            1,
            "0.2"
        ) == 1),
        "no ping after replug"
    );
    let payload = b"hello replugged guest";
    assert_eq!(tcp_echo(&netns.name, "10.69.0.1", payload), payload);
}
