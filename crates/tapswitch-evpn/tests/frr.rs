//! Interoperability of tapswitch's EVPN routes with FRR, the reference Linux EVPN VTEP.
//!
//! Host A runs gobgpd and advertises through our client; host C runs FRR (zebra + bgpd,
//! `advertise-all-vni`) over a kernel bridge and `vxlan` device, as a Linux hypervisor does.
//! Each direction is checked where it lands: A's routes in C's kernel FDB (what the Linux
//! VTEP then forwards by), C's routes decoded by [`EvpnRoute`] from A's RIB.

mod common;
// Shared with the root package's EVPN test (tests/evpn.rs).
#[path = "../../../tests/common/frr.rs"]
mod frr;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{API, ASN, Host, gobgpd_config, ip, wait_for};
use tapswitch_evpn::route::RouteTarget;
use tapswitch_evpn::{EvpnRoute, GobgpClient, MacRoute, MulticastRoute};

const VNI: u32 = 100;
const A: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 1);
const C: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 3);
const A_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 0x01];
const C_MAC: &str = "02:cc:00:00:00:01";

/// C: a Linux bridge with a vxlan device (VNI 100, dstport 4789, no data-plane learning),
/// a bridged veth end holding a static MAC (a local station FRR advertises), FRR on top.
fn start_frr(host: &mut Host) {
    let ns = host.netns.clone();
    let run = |args: &[&str]| {
        let mut full = vec!["-n", ns.as_str()];
        full.extend_from_slice(args);
        ip(&full);
    };
    run(&[
        "link", "add", "stac", "type", "veth", "peer", "name", "stacpeer",
    ]);
    for command in frr::bridge_vxlan_commands(VNI, &C.to_string(), &["stac"]) {
        let command: Vec<&str> = command.iter().map(String::as_str).collect();
        run(&command);
    }
    run(&["link", "set", "stacpeer", "up"]);
    let status = std::process::Command::new("bridge")
        .args([
            "-n", &ns, "fdb", "add", C_MAC, "dev", "stac", "master", "static",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let dir = host.dir.clone();
    frr::start(
        &dir,
        ASN,
        &C.to_string(),
        &[A.to_string()],
        |daemon, program, args| host.start_daemon(daemon, program, args),
    );
}

#[test]
fn routes_pass_both_ways_between_gobgpd_and_frr() {
    require_root_and_gobgpd!();
    assert!(
        std::path::Path::new("/usr/lib/frr/bgpd").exists(),
        "FRR is not installed (Debian package frr; scripts/install-deps.sh)"
    );
    let mut a = Host::new();
    let mut c = Host::new();
    common::connect(&a, A, &c, C);
    a.start_gobgpd(&gobgpd_config(A, &[C]));
    start_frr(&mut c);

    a.run(|| async {
        let mut client = GobgpClient::connect(API).await.unwrap();
        let targets = vec![RouteTarget::auto(ASN, VNI)];
        let multicast = MulticastRoute {
            vni: VNI,
            vtep: A,
            rd: None,
            route_targets: targets.clone(),
        };
        let mac = MacRoute {
            vni: VNI,
            mac: A_MAC,
            ip: None,
            vtep: A,
            rd: None,
            route_targets: targets,
            mobility_seq: None,
        };
        client.add_path(multicast.to_path().unwrap()).await.unwrap();
        client.add_path(mac.to_path().unwrap()).await.unwrap();
    });

    // A → C: FRR programs the Linux VTEP: A's MAC behind A, and A in VNI 100's flood list.
    let fdb = wait_for(Duration::from_secs(60), || {
        let fdb = c.output("bridge", &["fdb", "show", "dev", "vxlan100"]);
        (fdb.contains("02:ee:00:00:00:01 dst 10.79.0.1")
            && fdb.contains("00:00:00:00:00:00 dst 10.79.0.1"))
        .then_some(fdb)
    });
    assert!(
        fdb.is_some(),
        "C's kernel FDB never got A's routes: {}\nFRR's table: {}",
        c.output("bridge", &["fdb", "show", "dev", "vxlan100"]),
        {
            let args = frr::vtysh_args(&c.dir, "show bgp l2vpn evpn");
            c.output(
                "vtysh",
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        }
    );

    // C → A: FRR's type-2 (the static station) and type-3 decode as tapswitch routes.
    let routes = wait_for(Duration::from_secs(60), || {
        let routes = a.run(|| async {
            let mut client = GobgpClient::connect(API).await.unwrap();
            client.evpn_routes().await.unwrap()
        });
        let (routes, refused) = routes;
        assert!(refused.is_empty(), "undecodable FRR routes: {refused:?}");
        let from_c: Vec<EvpnRoute> = routes
            .into_iter()
            .map(|(_, route)| route)
            .filter(|route| route.vtep() == C)
            .collect();
        let has_mac = from_c.iter().any(
            |r| matches!(r, EvpnRoute::Mac(m) if m.vni == VNI && m.mac == [0x02, 0xcc, 0, 0, 0, 1]),
        );
        let has_multicast = from_c
            .iter()
            .any(|r| matches!(r, EvpnRoute::Multicast(m) if m.vni == VNI));
        (has_mac && has_multicast).then_some(from_c)
    });
    let routes = routes.expect("A never got C's type-2 and type-3 routes");
    for route in &routes {
        let targets = match route {
            EvpnRoute::Mac(m) => &m.route_targets,
            EvpnRoute::Multicast(m) => &m.route_targets,
        };
        assert!(
            targets.contains(&RouteTarget::auto(ASN, VNI)),
            "FRR's auto RT is ASN:VNI: {route:?}"
        );
    }
}
