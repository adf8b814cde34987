//! FRR (zebra + bgpd, `advertise-all-vni`) as the Linux EVPN VTEP a hypervisor runs:
//! a kernel bridge holding a `vxlan` device, FRR on top. The root package's EVPN test and
//! tapswitch-evpn's FRR test both set it up; the latter includes this file by path (the
//! crates share no other test code), so it uses std only and starts processes through
//! the caller's own daemon guard.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The `ip` commands (each to run as `ip -n NETNS …`) that make bridge `br{vni}` with the
/// vxlan device `vxlan{vni}` (VNI `vni`, source `local`, port 4789, no data-plane
/// learning: FRR programs the FDB) and the existing devices `ports` in it, all up.
pub fn bridge_vxlan_commands(vni: u32, local: &str, ports: &[&str]) -> Vec<Vec<String>> {
    let (bridge, vxlan) = (format!("br{vni}"), format!("vxlan{vni}"));
    let words = |line: &[&str]| line.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    let mut commands = vec![
        words(&["link", "add", &bridge, "type", "bridge"]),
        words(&[
            "link",
            "add",
            &vxlan,
            "type",
            "vxlan",
            "id",
            &vni.to_string(),
            "local",
            local,
            "dstport",
            "4789",
            "nolearning",
        ]),
    ];
    for dev in std::iter::once(vxlan.as_str()).chain(ports.iter().copied()) {
        commands.push(words(&["link", "set", dev, "master", &bridge]));
    }
    for dev in [bridge.as_str(), vxlan.as_str()]
        .into_iter()
        .chain(ports.iter().copied())
    {
        commands.push(words(&["link", "set", dev, "up"]));
    }
    commands
}

/// Writes `dir/frr.conf` (iBGP in AS `asn`, router id `router_id`, an l2vpn evpn
/// session to each of `neighbors`, `advertise-all-vni`), gives `dir` to FRR's user (FRR
/// drops to it: it must read the config and write its sockets there), and starts zebra
/// and then, once zebra's socket is there, bgpd, each with `start(name, program, args)`
/// (in the VTEP's namespace, stopped by the caller).
pub fn start(
    dir: &Path,
    asn: impl std::fmt::Display,
    router_id: &str,
    neighbors: &[String],
    mut start: impl FnMut(&str, &str, &[&str]),
) {
    let mut config = format!(
        "hostname c\nrouter bgp {asn}\n bgp router-id {router_id}\n no bgp default ipv4-unicast\n"
    );
    for neighbor in neighbors {
        config.push_str(&format!(" neighbor {neighbor} remote-as {asn}\n"));
    }
    config.push_str(" address-family l2vpn evpn\n");
    for neighbor in neighbors {
        config.push_str(&format!("  neighbor {neighbor} activate\n"));
    }
    config.push_str("  advertise-all-vni\n exit-address-family\n");
    std::fs::write(dir.join("frr.conf"), config).expect("writing frr.conf");
    let chown = Command::new("chown")
        .args(["-R", "frr:frr"])
        .arg(dir)
        .status()
        .expect("running chown");
    assert!(chown.success(), "chown -R frr:frr {}", dir.display());
    let d = dir.to_str().expect("UTF-8 directory").to_owned();
    let (conf, zserv) = (format!("{d}/frr.conf"), format!("{d}/zserv.api"));
    for daemon in ["zebra", "bgpd"] {
        let (pid, log) = (
            format!("{d}/{daemon}.pid"),
            format!("file:{d}/{daemon}-frr.log"),
        );
        let program = format!("/usr/lib/frr/{daemon}");
        start(
            daemon,
            &program,
            &[
                "-f",
                &conf,
                "-i",
                &pid,
                "-z",
                &zserv,
                "--vty_socket",
                &d,
                "--log",
                &log,
            ],
        );
        // bgpd needs zebra's socket.
        if daemon == "zebra" {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !dir.join("zserv.api").exists() {
                assert!(Instant::now() < deadline, "zebra did not come up");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// `vtysh` arguments that run `command` on the FRR of `dir`.
pub fn vtysh_args(dir: &Path, command: &str) -> Vec<String> {
    let d = dir.to_str().expect("UTF-8 directory").to_owned();
    vec!["--vty_socket".into(), d, "-c".into(), command.into()]
}
