//! Least privilege on a real `tapswitch run`: after setup the process (every
//! thread of it) holds exactly the capabilities it keeps, runs as the
//! configured user, and hot-plugging still works where it is supported.
//! Needs root.

mod common;

use std::process::Command;

use serde_json::Value;

use common::*;
use tapswitch::control::protocol::HandedOver;
use tapswitch::sys::privileges::{
    CAP_CHOWN, CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN, CapSet, ProcessPrivileges, read_process,
    read_threads,
};

/// The privileges of the switch's main thread, after checking that every other
/// thread has the same capability sets (they are per thread).
fn privileges_of(switch: &Switch) -> ProcessPrivileges {
    let pid = switch.pid() as u32;
    let main = read_process(pid).expect("reading the switch's /proc status");
    let threads = read_threads(pid).expect("reading the switch's threads");
    assert!(threads.len() > 1, "the switch runs several threads");
    for thread in &threads {
        assert_eq!(
            (thread.effective, thread.permitted, thread.bounding),
            (main.effective, main.permitted, main.bounding),
            "thread {} differs from the main thread",
            thread.pid
        );
    }
    main
}

fn port_names(switch: &Switch) -> Vec<String> {
    names(&switch.port_list())
}

/// doctor's findings from its `--json` report, which is for people and scripts and not
/// a protocol reply: read as JSON.
fn doctor_findings(switch: &Switch) -> Vec<Value> {
    let (_, stdout, stderr) = switch.ctl(&["doctor", "--json"]);
    let report: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("doctor: {e}: {stdout} {stderr}"));
    report["findings"].as_array().expect("findings").clone()
}

fn doctor_codes(switch: &Switch) -> Vec<String> {
    doctor_findings(switch)
        .iter()
        .map(|f| f["code"].as_str().expect("code").to_owned())
        .collect()
}

/// (uid, gid) of the macvtap character device of link `name`.
fn macvtap_device_owner(name: &str) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let index = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .unwrap_or_else(|e| panic!("no link {name}: {e}"));
    let device = std::fs::metadata(format!("/dev/tap{}", index.trim())).unwrap();
    (device.uid(), device.gid())
}

/// A `[switch]` line that makes VM ports skip libvirt (tests here need no libvirtd).
const NO_LIBVIRT: &str = "libvirt_uri = \"qemu+unix:///system?socket=/nonexistent/libvirt-sock\"";

#[test]
fn by_default_cap_net_admin_and_cap_chown_remain_and_hot_plug_works() {
    require_root!();
    let first = unique("tspv");
    let switch = start_with_config(&format!(
        "[switch]\n{NO_LIBVIRT}\n[[port]]\nname = \"{first}\"\n"
    ));
    let privileges = privileges_of(&switch);
    let kept = CapSet::of(&[CAP_NET_ADMIN, CAP_NET_RAW, CAP_CHOWN]);
    assert_eq!(privileges.uid, 0);
    assert_eq!(privileges.effective, kept);
    assert_eq!(privileges.permitted, kept);
    assert_eq!(privileges.bounding, kept);
    assert!(privileges.ambient.is_empty());

    // A VM port whose macvtap goes to QEMU's user (Debian's libvirt-qemu is 64055).
    let vm_port = unique("tsm");
    let (ok, _, stderr) = switch.ctl(&[
        "port",
        "add",
        &vm_port,
        "--vm",
        "some-domain",
        "--owner",
        "64055",
        "--group",
        "64056",
    ]);
    assert!(ok, "port add --vm --owner after the drop: {stderr}");
    assert_eq!(
        macvtap_device_owner(&format!("mvt-{vm_port}")),
        (64055, 64056)
    );
    let (ok, _, stderr) = switch.ctl(&["port", "del", &vm_port]);
    assert!(ok, "{stderr}");
    let findings = doctor_findings(&switch);
    let privileges_note = findings
        .iter()
        .find(|f| f["code"] == "daemon_privileges")
        .expect("a daemon_privileges finding");
    let what = privileges_note["what"].as_str().unwrap();
    assert!(
        what.contains("CAP_CHOWN: giving a new VM port's /dev/tapN"),
        "{what}"
    );
    assert!(
        !findings.iter().any(|f| f["code"] == "caps_excess"),
        "{findings:?}"
    );

    // A TAP in the switch's own namespace needs CAP_NET_ADMIN only.
    let second = unique("tspv");
    let (ok, _, stderr) = switch.ctl(&["port", "add", &second]);
    assert!(ok, "hot-plug after the drop: {stderr}");
    assert_eq!(port_names(&switch), [first.clone(), second.clone()]);
    let link = sh("ip", &["-j", "link", "show", "dev", &second]);
    assert!(link.contains("\"LOWER_UP\""), "{link}");

    // A namespaced one would need setns: refused with the reason and the way out.
    let ns = Netns::new();
    let spec = format!("{}@{}", unique("tspv"), ns.name);
    let (ok, _, stderr) = switch.ctl(&["port", "add", &spec]);
    assert!(!ok);
    assert!(
        stderr.contains("needs CAP_SYS_ADMIN") && stderr.contains("netns_hotplug = true"),
        "{stderr}"
    );
    assert!(doctor_codes(&switch).contains(&"caps_no_netns_hotplug".to_owned()));
    assert!(switch.stop(), "the switch exits cleanly");
}

#[test]
fn namespaced_ports_keep_sys_admin_for_hot_plug_into_namespaces() {
    require_root!();
    let bed = Bed::new(2);
    let privileges = privileges_of(&bed.switch);
    let kept = CapSet::of(&[CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN, CAP_CHOWN]);
    assert_eq!((privileges.effective, privileges.permitted), (kept, kept));

    let extra = Netns::new();
    let (ok, _, stderr) = bed
        .switch
        .ctl(&["port", "add", &format!("p2@{}", extra.name)]);
    assert!(ok, "namespaced hot-plug after the drop: {stderr}");
    sh(
        "ip",
        &[
            "-n",
            &extra.name,
            "addr",
            "add",
            "10.66.0.3/24",
            "dev",
            "p2",
        ],
    );
    assert_eq!(ping(&extra.name, &Bed::addr(0), 3, "0.1"), 3);
    // Changing the MTU of a port in a namespace uses the netlink socket opened before the drop.
    let (ok, _, stderr) = bed.switch.ctl(&["port", "set", "p0", "--mtu", "1400"]);
    assert!(ok, "{stderr}");
    let link = sh("ip", &["-n", bed.ns(0), "-j", "link", "show", "dev", "p0"]);
    assert!(link.contains("\"mtu\":1400"), "{link}");
}

#[test]
fn without_vm_hotplug_cap_chown_goes_owned_macvtaps_are_refused_and_glue_still_works() {
    require_root!();
    let (configured, refused, glued) = (unique("tsc"), unique("tsr"), unique("tsg"));
    // A configured VM port with an owner gets its device before the drop.
    let switch = start_with_config(&format!(
        "[switch]\nvm_hotplug = false\n{NO_LIBVIRT}\n\
         [[port]]\nname = \"{configured}\"\nvm = \"dom-c\"\nowner = 64055\n"
    ));
    let privileges = privileges_of(&switch);
    assert_eq!(
        privileges.effective,
        CapSet::of(&[CAP_NET_ADMIN, CAP_NET_RAW])
    );
    assert_eq!(macvtap_device_owner(&format!("mvt-{configured}")).0, 64055);

    // At runtime the macvtap of a new one could not be given away: refused, nothing made.
    let (ok, _, stderr) = switch.ctl(&[
        "port", "add", &refused, "--vm", "dom-r", "--owner", "64055", "--group", "64056",
    ]);
    assert!(!ok, "an owned macvtap VM port was added without CAP_CHOWN");
    assert!(
        stderr.contains("to uid 64055 gid 64056 at runtime needs CAP_CHOWN")
            && stderr.contains("switch.vm_hotplug = true")
            && stderr.contains("--mode glue"),
        "{stderr}"
    );
    assert!(!stderr.contains("Some("), "{stderr}");
    assert!(
        !std::path::Path::new("/sys/class/net")
            .join(&refused)
            .exists()
    );

    // A glue TAP's owner is TUNSETOWNER, which CAP_NET_ADMIN covers.
    let (ok, _, stderr) = switch.ctl(&[
        "port", "add", &glued, "--vm", "dom-g", "--mode", "glue", "--owner", "64055",
    ]);
    assert!(ok, "glue VM port with an owner: {stderr}");
    let owner = std::fs::read_to_string(format!("/sys/class/net/vmt-{glued}/owner")).unwrap();
    assert_eq!(owner.trim(), "64055");
    assert!(doctor_codes(&switch).contains(&"caps_no_vm_owner".to_owned()));
    assert!(switch.stop(), "the switch exits cleanly");
}

#[test]
fn with_a_user_the_switch_runs_as_that_user() {
    require_root!();
    let name = unique("tspu");
    let switch = start_with_config(&format!(
        "[switch]\nuser = \"nobody\"\n[[port]]\nname = \"{name}\"\n"
    ));
    let privileges = privileges_of(&switch);
    let status = std::fs::read_to_string(format!("/proc/{}/status", switch.pid())).unwrap();
    let nobody = sh("id", &["-u", "nobody"]).trim().parse::<u32>().unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let uids: Vec<u32> = uid_line
        .split_whitespace()
        .skip(1)
        .map(|id| id.parse().unwrap())
        .collect();
    assert_eq!(
        uids, [nobody; 4],
        "real, effective, saved and filesystem uid"
    );
    assert_eq!(privileges.uid, nobody);
    assert_eq!(
        privileges.effective,
        CapSet::of(&[CAP_NET_ADMIN, CAP_NET_RAW, CAP_CHOWN])
    );
    assert_eq!(
        privileges.permitted,
        CapSet::of(&[CAP_NET_ADMIN, CAP_NET_RAW, CAP_CHOWN])
    );
    assert_eq!(port_names(&switch), [name]);

    // TAP creation as this user also needs the device node: 0666 is the udev default,
    // but some hosts (this one) have 0600, and then doctor says so.
    let second = unique("tspu");
    let (ok, _, stderr) = switch.ctl(&["port", "add", &second]);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata("/dev/net/tun").unwrap().permissions(),
    );
    if mode & 0o006 == 0o006 {
        assert!(
            ok,
            "hot-plug as nobody with /dev/net/tun {mode:o}: {stderr}"
        );
    } else {
        assert!(!ok);
        assert!(stderr.contains("/dev/net/tun"), "{stderr}");
        assert!(doctor_codes(&switch).contains(&"tun_device_denied".to_owned()));
    }
    assert!(switch.stop(), "the switch exits cleanly as nobody");
}

#[test]
fn an_unknown_user_stops_the_switch_before_it_creates_anything() {
    require_root!();
    let dir = TempDir::new("tspx");
    let name = unique("tspx");
    let config = dir.path.join("switch.toml");
    std::fs::write(
        &config,
        format!("[switch]\nuser = \"no-such-user-x\"\n[[port]]\nname = \"{name}\"\n"),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tapswitch"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--control")
        .arg(dir.path.join("s.sock"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no user named \"no-such-user-x\""),
        "{stderr}"
    );
    let links = sh("ip", &["-j", "link", "show"]);
    assert!(!links.contains(&name), "no TAP was created: {links}");
}

#[test]
fn opting_out_keeps_every_capability_and_doctor_warns() {
    require_root!();
    let name = unique("tspo");
    let switch = start_with_config(&format!(
        "[switch]\ndrop_privileges = false\n[[port]]\nname = \"{name}\"\n"
    ));
    let own = read_process(std::process::id()).unwrap();
    let privileges = privileges_of(&switch);
    assert_eq!(privileges.effective, own.effective);
    assert!(
        privileges
            .effective
            .without(CapSet::of(&[CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN]))
            .0
            != 0
    );
    assert!(doctor_codes(&switch).contains(&"caps_excess".to_owned()));
}

#[test]
fn an_upgrade_as_a_user_keeps_the_user_and_cap_net_admin() {
    require_root!();
    let name = unique("tspg");
    let mut switch = start_with_config(&format!(
        "[switch]\nuser = \"nobody\"\n[[port]]\nname = \"{name}\"\n"
    ));
    let nobody = sh("id", &["-u", "nobody"]).trim().parse::<u32>().unwrap();
    let reply: HandedOver = switch.ctl_as(&["upgrade"]);
    let successor = Successor::new(reply.pid as i32);
    let pid = successor.pid() as u32;
    assert!(wait_for(std::time::Duration::from_secs(10), || switch.exited()));
    let successor = read_process(pid).expect("the new switch runs");
    assert_eq!(successor.uid, nobody);
    // Without ambient capabilities the exec would have left it with none.
    let kept = CapSet::of(&[CAP_NET_ADMIN, CAP_NET_RAW, CAP_CHOWN]);
    assert_eq!(successor.effective, kept);
    assert_eq!(successor.permitted, kept);
    assert!(
        successor.ambient.is_empty(),
        "ambient capabilities were cleared again"
    );
    assert_eq!(port_names(&switch), [name]);
}
