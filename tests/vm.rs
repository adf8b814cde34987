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
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tapswitch::control::protocol::LibvirtStatus;
use tapswitch::control::{ControlClient, PortReply, Request};
use tapswitch::netlink::{LinkSettings, Netlink};
use tapswitch::sys::tap::{Tap, TapOptions};
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

/// How a test's domain is created.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lifetime {
    /// `virsh define` + `virsh start`: the domain outlives a `destroy`.
    Persistent,
    /// `virsh create`: the domain is gone once it stops.
    Transient,
}

impl Guest {
    fn start(scratch: &ScratchDir, spec: &GuestSpec<'_>) -> Self {
        let interface = spec.interface.to_xml().expect("valid interface");
        Self::start_with(
            scratch,
            &unique("tsw-vm-"),
            spec.ip_with_prefix,
            spec.peer,
            &interface,
            Lifetime::Persistent,
        )
    }

    /// Starts domain `name` with `interface` (device XML, possibly empty) in its devices.
    fn start_with(
        scratch: &ScratchDir,
        name: &str,
        ip_with_prefix: &str,
        peer: Option<&str>,
        interface: &str,
        lifetime: Lifetime,
    ) -> Self {
        Self::start_as(scratch, name, ip_with_prefix, peer, interface, lifetime, "")
    }

    /// Like [`Guest::start_with`], with `seclabel` (a `<seclabel>` element, or nothing) in
    /// the domain: QEMU runs as root by the testbed's qemu.conf unless it says otherwise.
    fn start_as(
        scratch: &ScratchDir,
        name: &str,
        ip_with_prefix: &str,
        peer: Option<&str>,
        interface: &str,
        lifetime: Lifetime,
        seclabel: &str,
    ) -> Self {
        let name = name.to_owned();
        let console = scratch.0.join(format!("{name}.console"));
        let mut cmdline =
            format!("console=ttyS0 quiet panic=-1 tsw.ip={ip_with_prefix} tsw.echo={ECHO_PORT}");
        if let Some(peer) = peer {
            cmdline.push_str(&format!(" tsw.peer={peer} tsw.ping_secs=100"));
        }
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
  {seclabel}
</domain>
",
            domain_type = testbed(),
            console = console.display(),
        );
        let xml_path = scratch.0.join(format!("{name}.xml"));
        std::fs::write(&xml_path, &xml).expect("writing domain XML");
        let xml_arg = xml_path.to_str().expect("UTF-8 path");
        if lifetime == Lifetime::Transient {
            let guest = Self { name, console };
            let (ok, _, err) = virsh(&["create", xml_arg]);
            assert!(ok, "virsh create {} failed: {err}\n{xml}", guest.name);
            return guest;
        }
        let (ok, _, err) = virsh(&["define", xml_arg]);
        assert!(ok, "virsh define {name} failed: {err}\n{xml}");
        let guest = Self { name, console };
        let (ok, _, err) = virsh(&["start", &guest.name]);
        assert!(ok, "virsh start {} failed: {err}\n{xml}", guest.name);
        guest
    }

    /// Waits until the console shows `marker` at least `count` times.
    fn wait_console_count(&self, marker: &str, count: usize, timeout: Duration) {
        assert!(
            wait_for(timeout, || self.console_text().matches(marker).count()
                >= count),
            "guest {} did not print {marker:?} {count} times within {timeout:?}; console:\n{}",
            self.name,
            self.console_text()
        );
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

/// Whether `addr` answers a ping from `netns` within `timeout` (one try at a time).
fn answers_ping(netns: &str, addr: &str, timeout: Duration) -> bool {
    wait_for(timeout, || ping(netns, addr, 1, "0.2") == 1)
}

/// Sends `payload` to the guest's TCP echo server from inside `netns` and returns the reply.
fn tcp_echo(netns: &str, guest_ip: &str, payload: &[u8]) -> Vec<u8> {
    let address: SocketAddr = format!("{guest_ip}:{ECHO_PORT}").parse().unwrap();
    let payload = payload.to_vec();
    tapswitch::sys::netns::run_in(netns, move || {
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
    snapshot
        .fdb
        .iter()
        .find(|entry| entry.mac.to_string() == mac)
        .map(|entry| u64::from(entry.port.0))
}

#[test]
fn two_guests_on_macvtaps_ping_each_other_and_a_namespace_talks_to_both() {
    require_root!();
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
    require_root!();
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
        persistent: Some(true),
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
        answers_ping(&netns.name, "10.68.0.1", Duration::from_secs(10)),
        "glued again"
    );
    assert_eq!(tcp_echo(&netns.name, "10.68.0.1", payload), payload);
    assert!(guest.is_running());
}

#[test]
fn a_guest_nic_hot_unplugged_and_replugged_on_its_macvtap_comes_back() {
    require_root!();
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
        answers_ping(&netns.name, "10.69.0.1", Duration::from_secs(20)),
        "no ping after replug"
    );
    let payload = b"hello replugged guest";
    assert_eq!(tcp_echo(&netns.name, "10.69.0.1", payload), payload);
}

// --- VM ports through the daemon: `port add --vm`, `libvirt-xml`, domain events ------------

/// The switch's event stream (`events`), read on a thread, as JSON values: the tests
/// check the lines' keys as scripts see them.
fn subscribe(switch: &Switch) -> Receiver<Value> {
    let mut client = ControlClient::connect(&switch.control).expect("connecting for events");
    client
        .request_as::<()>(&Request::Events {})
        .expect("subscribing to events");
    let (lines, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        // Ends when the switch stops (end of stream) or the test drops the receiver.
        while let Ok(line) = client.next_line() {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

/// The first event for which `matches` holds, within `timeout`; panics with what came instead.
fn wait_event(
    events: &Receiver<Value>,
    timeout: Duration,
    matches: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match events.recv_timeout(left) {
            Ok(event) if matches(&event) => return event,
            Ok(event) => seen.push(event.to_string()),
            Err(_) => break,
        }
    }
    panic!(
        "no matching event within {timeout:?}; saw:\n{}",
        seen.join("\n")
    )
}

/// Names of the switch's ports.
fn port_names(switch: &Switch) -> Vec<String> {
    names(&switch.port_list())
}

/// `virsh dumpxml --inactive`: the stored definition of a persistent domain.
fn stored_xml(domain: &str) -> String {
    let (ok, xml, err) = virsh(&["dumpxml", "--inactive", domain]);
    assert!(ok, "virsh dumpxml --inactive {domain}: {err}");
    xml
}

fn link_exists(name: &str) -> bool {
    Netlink::open().unwrap().index_of(name).is_ok()
}

/// `tapswitch libvirt-xml PORT` on `switch`.
fn libvirt_xml(switch: &Switch, port: &str) -> String {
    let (ok, xml, err) = switch.ctl(&["libvirt-xml", port]);
    assert!(ok, "libvirt-xml {port}: {err}");
    xml
}

/// A switch with one namespace port `n0` at `ns_ip`/24, for guests to talk to.
fn switch_with_namespace(ns_ip: &str) -> (Switch, Netns) {
    let netns = Netns::new();
    let switch = Switch::start(&["--port", &format!("n0@{}", netns.name)]);
    sh(
        "ip",
        &[
            "-n",
            &netns.name,
            "addr",
            "add",
            &format!("{ns_ip}/24"),
            "dev",
            "n0",
        ],
    );
    (switch, netns)
}

#[test]
fn daemon_vm_ports_made_before_their_domains_carry_traffic_and_go_with_the_domains() {
    require_root!();
    testbed();
    let (switch, netns) = switch_with_namespace("10.70.0.100");
    let events = subscribe(&switch);
    let ports = [unique("va"), unique("va")];
    let domains = [unique("tsw-vm-"), unique("tsw-vm-")];
    // As Nova plugs VIFs: the port and its device exist before the domain does.
    for (port, domain) in ports.iter().zip(&domains) {
        let (ok, out, err) = switch.ctl(&["port", "add", port, "--vm", domain]);
        assert!(ok, "port add {port} --vm {domain}: {err}");
        assert!(
            out.contains(&format!("vm {domain}: waiting for the domain")),
            "{out}"
        );
    }
    let devices: Vec<String> = ports.iter().map(|p| format!("mvt-{p}")).collect();
    for device in &devices {
        assert!(link_exists(device), "{device} was not created");
    }
    let xml: Vec<String> = ports.iter().map(|p| libvirt_xml(&switch, p)).collect();
    assert!(
        xml[0].contains(&format!("<target dev='{}' managed='no'/>", devices[0])),
        "{}",
        xml[0]
    );

    // Guest 0 is persistent (define + start), guest 1 transient (create).
    let scratch = ScratchDir::new();
    let lifetimes = [Lifetime::Persistent, Lifetime::Transient];
    let guests: Vec<Guest> = (0..2)
        .map(|i| {
            Guest::start_with(
                &scratch,
                &domains[i],
                &format!("10.70.0.{}/24", i + 1),
                Some(&format!("10.70.0.{}", 2 - i)),
                &xml[i],
                lifetimes[i],
            )
        })
        .collect();
    guests[0].wait_console("TSW-PING-OK 10.70.0.2", "TSW-PING-FAIL", GUEST_TIMEOUT);
    guests[1].wait_console("TSW-PING-OK 10.70.0.1", "TSW-PING-FAIL", GUEST_TIMEOUT);
    for i in 0..2 {
        assert_eq!(
            ping(&netns.name, &format!("10.70.0.{}", i + 1), 2, "0.2"),
            2
        );
    }

    // A persistent domain that stops keeps its port: destroy + start works again.
    let (ok, _, err) = virsh(&["destroy", &domains[0]]);
    assert!(ok, "virsh destroy: {err}");
    wait_event(&events, Duration::from_secs(20), |e| {
        e["event"] == "vm_domain_event"
            && e["domain"] == domains[0].as_str()
            && e["kind"] == "stopped"
    });
    assert!(
        port_names(&switch).contains(&ports[0]),
        "kept for a restart"
    );
    assert!(link_exists(&devices[0]));
    let (ok, _, err) = virsh(&["start", &domains[0]]);
    assert!(ok, "virsh start after destroy: {err}");
    assert!(
        answers_ping(&netns.name, "10.70.0.1", GUEST_TIMEOUT),
        "no ping after the restart; console:\n{}",
        guests[0].console_text()
    );

    // A transient domain that stops is gone: so is its port, device and all.
    let (ok, _, err) = virsh(&["destroy", &domains[1]]);
    assert!(ok, "virsh destroy: {err}");
    let removed = wait_event(&events, Duration::from_secs(20), |e| {
        e["event"] == "vm_port_removed"
    });
    assert_eq!(removed["port"], ports[1].as_str());
    assert_eq!(removed["reason"], "domain_gone");
    assert!(!port_names(&switch).contains(&ports[1]));
    assert!(!link_exists(&devices[1]), "{} is left", devices[1]);

    // Destroyed and undefined: the persistent one's port goes too.
    virsh(&["destroy", &domains[0]]);
    let (ok, _, err) = virsh(&["undefine", &domains[0]]);
    assert!(ok, "virsh undefine: {err}");
    let removed = wait_event(&events, Duration::from_secs(20), |e| {
        e["event"] == "vm_port_removed"
    });
    assert_eq!(removed["port"], ports[0].as_str());
    assert_eq!(port_names(&switch), vec!["n0".to_owned()]);
    assert!(!link_exists(&devices[0]) && !link_exists(&ports[0]));
    drop(guests);
    assert!(switch.stop(), "switch exits cleanly");
}

#[test]
fn a_daemon_vm_port_hot_plugs_into_a_running_guest_and_leaves_with_its_nic() {
    require_root!();
    testbed();
    let (switch, netns) = switch_with_namespace("10.71.0.100");
    let events = subscribe(&switch);
    let scratch = ScratchDir::new();
    let domain = unique("tsw-vm-");
    // A guest without a NIC: its init finds no eth0 and keeps looking (no peer to ping, so
    // it goes straight to that loop).
    let guest = Guest::start_with(
        &scratch,
        &domain,
        "10.71.0.1/24",
        None,
        "",
        Lifetime::Persistent,
    );
    guest.wait_console_count("TSW-ERROR configuring eth0", 1, GUEST_TIMEOUT);

    let port = unique("vh");
    let (ok, out, err) = switch.ctl(&["port", "add", &port, "--vm", &domain]);
    assert!(ok, "port add --vm on a running domain: {err}");
    assert!(out.contains("hot-plugged into the running domain"), "{out}");
    let device = format!("mvt-{port}");
    assert_eq!(guest.interface_targets(), vec![device.clone()]);
    // LIVE and CONFIG: the persistent definition has the NIC too.
    let target = format!("<target dev='{device}'");
    assert!(
        stored_xml(&domain).contains(&target),
        "not in the stored definition"
    );
    let net_up = "TSW-NET-UP 10.71.0.1/24";
    guest.wait_console_count(net_up, 1, GUEST_TIMEOUT);
    assert!(
        answers_ping(&netns.name, "10.71.0.1", Duration::from_secs(30)),
        "no ping after the hot-plug; console:\n{}",
        guest.console_text()
    );
    assert_eq!(
        tcp_echo(&netns.name, "10.71.0.1", b"hot-plugged"),
        b"hot-plugged"
    );

    // Unplugged behind the switch's back (virsh, as Nova detaches): the port goes with the NIC.
    let xml = libvirt_xml(&switch, &port);
    let xml_path = scratch.0.join("nic.xml");
    std::fs::write(&xml_path, &xml).unwrap();
    let (ok, _, err) = virsh(&[
        "detach-device",
        &domain,
        xml_path.to_str().unwrap(),
        "--live",
    ]);
    assert!(ok, "virsh detach-device: {err}");
    let removed = wait_event(&events, Duration::from_secs(60), |e| {
        e["event"] == "vm_port_removed"
    });
    assert_eq!(removed["reason"], "device_removed");
    assert_eq!(removed["port"], port.as_str());
    assert!(!port_names(&switch).contains(&port));
    assert!(!link_exists(&device));
    assert_eq!(ping(&netns.name, "10.71.0.1", 2, "0.2"), 0, "unplugged");

    // Plugged again through the switch: the guest configures the new NIC and answers.
    let (ok, out, err) = switch.ctl(&["port", "add", &port, "--vm", &domain]);
    assert!(ok, "port add again: {err}");
    assert!(out.contains("hot-plugged"), "{out}");
    guest.wait_console_count(net_up, 2, GUEST_TIMEOUT);
    assert!(
        answers_ping(&netns.name, "10.71.0.1", Duration::from_secs(30)),
        "no ping after the replug"
    );

    // `port del` takes the NIC out of the running guest first.
    let (ok, out, err) = switch.ctl(&["port", "del", &port]);
    assert!(ok, "port del: {err}");
    assert!(out.contains("unplugged from the domain"), "{out}");
    assert!(
        !stored_xml(&domain).contains(&target),
        "left in the stored definition"
    );
    assert!(
        wait_for(Duration::from_secs(60), || guest
            .interface_targets()
            .is_empty()),
        "the NIC is still in the guest: {:?}",
        guest.interface_targets()
    );
    assert!(!link_exists(&device));
    assert!(guest.is_running());
}

#[test]
fn a_daemon_glue_port_carries_a_transient_guest_and_removes_its_vm_tap() {
    require_root!();
    testbed();
    let (switch, netns) = switch_with_namespace("10.72.0.100");
    let port = unique("vg");
    let domain = unique("tsw-vm-");
    let (ok, _, err) = switch.ctl(&[
        "port",
        "add",
        &port,
        "--vm",
        &domain,
        "--mode",
        "glue",
        "--mac",
        "52:54:00:72:00:01",
    ]);
    assert!(ok, "port add --mode glue: {err}");
    let vm_tap = format!("vmt-{port}");
    let _vm_tap_guard = LinkGuard(vm_tap.clone());
    assert!(link_exists(&vm_tap));
    let xml = libvirt_xml(&switch, &port);
    assert!(xml.contains("<mac address='52:54:00:72:00:01'/>"), "{xml}");
    let scratch = ScratchDir::new();
    let guest = Guest::start_with(
        &scratch,
        &domain,
        "10.72.0.1/24",
        Some("10.72.0.100"),
        &xml,
        Lifetime::Transient,
    );
    guest.wait_console("TSW-PING-OK 10.72.0.100", "TSW-PING-FAIL", GUEST_TIMEOUT);
    assert!(
        guest
            .console_text()
            .contains("TSW-NET-UP 10.72.0.1/24 52:54:00:72:00:01")
    );
    assert_eq!(
        tcp_echo(&netns.name, "10.72.0.1", b"glued by the daemon"),
        b"glued by the daemon"
    );

    let (ok, out, err) = switch.ctl(&["port", "del", &port]);
    assert!(ok, "port del: {err}");
    assert!(out.contains("unplugged from the domain"), "{out}");
    assert!(!link_exists(&vm_tap), "the VM TAP is left");
    assert_eq!(ping(&netns.name, "10.72.0.1", 2, "0.2"), 0);
}

#[test]
fn without_libvirt_a_vm_port_still_gets_its_devices_and_says_so() {
    require_root!();
    let dir = TempDir::new("tsnolv");
    let config = dir.path.join("switch.toml");
    std::fs::write(
        &config,
        "[switch]\nlibvirt_uri = \"qemu+unix:///system?socket=/nonexistent/libvirt-sock\"\n\n\
         [[port]]\nname = \"n0\"\n",
    )
    .unwrap();
    let switch = Switch::start(&["--config", config.to_str().unwrap()]);
    let port = unique("vu");
    let (ok, out, err) = switch.ctl(&["port", "add", &port, "--vm", "nowhere", "--json"]);
    assert!(ok, "port add --vm without libvirt: {err}");
    let reply: PortReply = serde_json::from_str(&out).unwrap();
    let vm = reply.vm.as_ref().expect("the VM NIC's status");
    assert_eq!(vm.libvirt, Some(LibvirtStatus::Unreachable), "{reply:?}");
    let action = vm.action.as_str();
    assert!(
        action.starts_with("devices created; could not reach libvirt at qemu+unix:///system?socket=/nonexistent/libvirt-sock"),
        "{action}"
    );
    let device = format!("mvt-{port}");
    assert!(link_exists(&device));
    let config_text = switch.ctl(&["config", "show"]).1;
    assert!(config_text.contains("vm = \"nowhere\""), "{config_text}");
    let (ok, _, err) = switch.ctl(&["port", "del", &port]);
    assert!(ok, "port del: {err}");
    assert!(!link_exists(&device) && !link_exists(&port));
    // A plain port has no libvirt XML.
    let (ok, _, err) = switch.ctl(&["libvirt-xml", "n0"]);
    assert!(!ok);
    assert!(err.contains("port n0 is not bound to a VM"), "{err}");
    assert!(switch.stop());
}

#[test]
fn a_daemon_vm_port_goes_into_a_stopped_domains_definition_and_out_again() {
    require_root!();
    testbed();
    let (switch, _netns) = switch_with_namespace("10.74.0.100");
    // Defined, never started: libvirt only validates the definition.
    let scratch = ScratchDir::new();
    let domain = unique("tsw-vm-");
    let xml = format!(
        "<domain type='{}'><name>{domain}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{CACHE_DIR}/vmlinuz</kernel></os>\
         <devices><controller type='usb' model='none'/><memballoon model='none'/></devices></domain>",
        testbed()
    );
    let path = scratch.0.join("stopped.xml");
    std::fs::write(&path, xml).unwrap();
    let (ok, _, err) = virsh(&["define", path.to_str().unwrap()]);
    assert!(ok, "virsh define: {err}");
    let _guest = Guest {
        name: domain.clone(),
        console: scratch.0.join("unused"),
    };

    let port = unique("vs");
    let (ok, out, err) = switch.ctl(&["port", "add", &port, "--vm", &domain]);
    assert!(ok, "port add --vm on a stopped domain: {err}");
    assert!(out.contains("added to the domain's definition"), "{out}");
    let stored = stored_xml(&domain);
    assert!(
        stored.contains(&format!("<target dev='mvt-{port}' managed='no'/>")),
        "{stored}"
    );
    assert!(
        stored.contains(&format!("<alias name='ua-tsw-{port}'/>")),
        "{stored}"
    );
    let (ok, out, err) = switch.ctl(&["port", "del", &port]);
    assert!(ok, "port del: {err}");
    assert!(out.contains("unplugged from the domain"), "{out}");
    assert!(!stored_xml(&domain).contains(&format!("mvt-{port}")));
    assert_eq!(port_names(&switch), vec!["n0".to_owned()]);
}

/// The uid and gid of user `name`.
fn user_ids(name: &str) -> (u32, u32) {
    let id = |flag| sh("id", &[flag, name]).trim().parse::<u32>().unwrap();
    (id("-u"), id("-g"))
}

/// The QEMU process of running domain `domain`, from libvirt's pid file.
fn qemu_pid(domain: &str) -> u32 {
    let path = format!("/run/libvirt/qemu/{domain}.pid");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .parse()
        .expect("a pid")
}

#[test]
fn a_vm_port_given_to_libvirt_qemu_hot_plugs_into_a_guest_whose_qemu_runs_unprivileged() {
    require_root!();
    use std::os::unix::fs::MetadataExt;
    use tapswitch::sys::privileges::{
        CAP_CHOWN, CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN, CapSet, read_process,
    };
    testbed();
    // Debian's libvirt runs QEMU as libvirt-qemu; only this test's domain does here (its
    // seclabel), so the testbed's qemu.conf and the other tests stay as they are.
    let (uid, gid) = user_ids("libvirt-qemu");
    for file in ["vmlinuz", "initrd.img"] {
        let mode = std::fs::metadata(Path::new(CACHE_DIR).join(file))
            .unwrap()
            .mode();
        assert_eq!(
            mode & 0o004,
            0o004,
            "{file} is not readable by libvirt-qemu"
        );
    }
    let (switch, netns) = switch_with_namespace("10.75.0.100");
    // A default switch: what VM hot-plug needs stays after the drop, nothing more.
    let kept = read_process(switch.pid() as u32).unwrap();
    assert_eq!(
        kept.effective,
        CapSet::of(&[CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN, CAP_CHOWN])
    );
    let scratch = ScratchDir::new();
    let domain = unique("tsw-vm-");
    let seclabel = format!(
        "<seclabel type='static' model='dac' relabel='no'><label>+{uid}:+{gid}</label></seclabel>"
    );
    let guest = Guest::start_as(
        &scratch,
        &domain,
        "10.75.0.1/24",
        None,
        "",
        Lifetime::Persistent,
        &seclabel,
    );
    guest.wait_console_count("TSW-ERROR configuring eth0", 1, GUEST_TIMEOUT);
    let qemu = read_process(qemu_pid(&domain)).unwrap();
    assert_eq!(
        (qemu.uid, qemu.gid),
        (uid, gid),
        "QEMU runs as libvirt-qemu"
    );
    assert!(qemu.effective.is_empty(), "QEMU holds {}", qemu.effective);

    let port = unique("vq");
    let (uid_text, gid_text) = (uid.to_string(), gid.to_string());
    let (ok, out, err) = switch.ctl(&[
        "port", "add", &port, "--vm", &domain, "--owner", &uid_text, "--group", &gid_text,
    ]);
    assert!(ok, "port add --vm --owner on a default switch: {err}");
    assert!(!err.contains("Some("), "{err}");
    assert!(out.contains("hot-plugged into the running domain"), "{out}");
    let device = format!("mvt-{port}");
    let index = Netlink::open().unwrap().index_of(&device).unwrap();
    let node = std::fs::metadata(format!("/dev/tap{index}")).unwrap();
    assert_eq!(
        (node.uid(), node.gid()),
        (uid, gid),
        "/dev/tap{index} owner"
    );
    guest.wait_console_count("TSW-NET-UP 10.75.0.1/24", 1, GUEST_TIMEOUT);
    assert!(
        answers_ping(&netns.name, "10.75.0.1", Duration::from_secs(30)),
        "no ping to the unprivileged guest; console:\n{}",
        guest.console_text()
    );
    assert_eq!(
        tcp_echo(&netns.name, "10.75.0.1", b"unprivileged QEMU"),
        b"unprivileged QEMU"
    );
    let (ok, out, err) = switch.ctl(&["port", "del", &port]);
    assert!(ok, "port del: {err}");
    assert!(out.contains("unplugged from the domain"), "{out}");
    assert!(!link_exists(&device));
    assert!(guest.is_running());
    assert!(switch.stop(), "switch exits cleanly");
}
