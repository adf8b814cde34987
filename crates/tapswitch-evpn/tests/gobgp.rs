//! The client against real gobgpd daemons, each in a network namespace of its own.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{API, ASN, Host, gobgpd_config, ip};
use tapswitch_evpn::route::RouteTarget;
use tapswitch_evpn::{EvpnRoute, GobgpClient, MacRoute, MulticastRoute};

fn mac_route(vtep: Ipv4Addr, last: u8, vni: u32) -> MacRoute {
    MacRoute {
        vni,
        mac: [0x02, 0xee, 0, 0, 0, last],
        ip: None,
        vtep,
        rd: None,
        route_targets: vec![RouteTarget::auto(ASN, vni)],
        mobility_seq: None,
    }
}

fn multicast_route(vtep: Ipv4Addr, vni: u32) -> MulticastRoute {
    MulticastRoute {
        vni,
        vtep,
        rd: None,
        route_targets: vec![RouteTarget::auto(ASN, vni)],
    }
}

#[test]
fn routes_added_through_the_api_are_listed_back_decoded_and_withdrawn() {
    require_root_and_gobgpd!();
    let mut host = Host::new();
    let vtep = Ipv4Addr::new(10, 77, 0, 1);
    // gobgpd binds its BGP port to the router id, as a VTEP's address lives on loopback.
    ip(&[
        "-n",
        &host.netns,
        "addr",
        "add",
        "10.77.0.1/32",
        "dev",
        "lo",
    ]);
    host.start_gobgpd(&gobgpd_config(vtep, &[]));
    let listed = host.run(move || async move {
        let mut client = GobgpClient::connect(API).await.unwrap();
        client
            .add_path(multicast_route(vtep, 100).to_path().unwrap())
            .await
            .unwrap();
        for last in 1..=3 {
            client
                .add_path(mac_route(vtep, last, 100).to_path().unwrap())
                .await
                .unwrap();
        }
        let (mut routes, refused) = client.evpn_routes().await.unwrap();
        assert!(refused.is_empty(), "{refused:?}");
        client
            .delete_path(mac_route(vtep, 2, 100).to_path().unwrap())
            .await
            .unwrap();
        let (after, _) = client.evpn_routes().await.unwrap();
        routes.sort_by_key(|(_, r)| format!("{r:?}"));
        (
            routes.into_iter().map(|(_, r)| r).collect::<Vec<_>>(),
            after.len(),
        )
    });
    let (routes, after_withdraw) = listed;
    assert_eq!(routes.len(), 4, "{routes:?}");
    assert_eq!(after_withdraw, 3);
    let macs: Vec<[u8; 6]> = routes
        .iter()
        .filter_map(|r| match r {
            EvpnRoute::Mac(m) => Some(m.mac),
            _ => None,
        })
        .collect();
    assert_eq!(macs.len(), 3);
    for route in &routes {
        assert_eq!((route.vni(), route.vtep()), (100, vtep), "{route:?}");
        let targets = match route {
            EvpnRoute::Mac(m) => &m.route_targets,
            EvpnRoute::Multicast(m) => &m.route_targets,
        };
        assert_eq!(targets, &[RouteTarget::auto(ASN, 100)]);
    }
}

#[test]
fn a_peer_learns_the_routes_and_watching_best_paths_sees_them_arrive_and_go() {
    require_root_and_gobgpd!();
    let mut a = Host::new();
    let mut b = Host::new();
    let (ip_a, ip_b) = (Ipv4Addr::new(10, 78, 0, 1), Ipv4Addr::new(10, 78, 0, 2));
    common::connect(&a, ip_a, &b, ip_b);
    a.start_gobgpd(&gobgpd_config(ip_a, &[ip_b]));
    b.start_gobgpd(&gobgpd_config(ip_b, &[ip_a]));

    // B watches its best paths while A advertises.
    let (tell_learned, mac_learned) = std::sync::mpsc::channel();
    let watcher = b.spawn(move || async move {
        let mut client = GobgpClient::connect(API).await.unwrap();
        let mut events = client.watch_best(true).await.unwrap();
        let mut seen = Vec::new();
        let mut withdrawn = Vec::new();
        let mut undecodable = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while withdrawn.is_empty() {
            let next = tokio::time::timeout_at(deadline, events.message()).await;
            let Ok(Ok(Some(event))) = next else {
                panic!(
                    "no withdrawal seen (seen: {seen:?}, undecodable: {undecodable:?}): {next:?}"
                );
            };
            let Some(tapswitch_evpn::api::watch_event_response::Event::Table(table)) = event.event
            else {
                continue;
            };
            for path in table.paths {
                let route = match EvpnRoute::from_path(&path) {
                    Ok(route) => route,
                    Err(error) => {
                        undecodable.push(format!("{error}: {path:?}"));
                        continue;
                    }
                };
                if path.is_withdraw {
                    withdrawn.push(route);
                } else {
                    if matches!(&route, EvpnRoute::Mac(_)) {
                        let _ = tell_learned.send(());
                    }
                    seen.push((route, path.neighbor_ip.clone()));
                }
            }
        }
        (seen, withdrawn)
    });
    a.run(move || async move {
        let mut client = GobgpClient::connect(API).await.unwrap();
        client
            .add_path(multicast_route(ip_a, 200).to_path().unwrap())
            .await
            .unwrap();
        client
            .add_path(mac_route(ip_a, 9, 200).to_path().unwrap())
            .await
            .unwrap();
    });
    // Withdraw the MAC only once B has it; the watcher then ends on the withdrawal.
    let learned = mac_learned.recv_timeout(Duration::from_secs(60)).is_ok();
    a.run(move || async move {
        let mut client = GobgpClient::connect(API).await.unwrap();
        client
            .delete_path(mac_route(ip_a, 9, 200).to_path().unwrap())
            .await
            .unwrap();
    });
    assert!(learned, "B never learned A's MAC route");
    let (seen, withdrawn) = watcher.join().expect("watcher panicked");
    let from_a: Vec<&EvpnRoute> = seen
        .iter()
        .filter(|(_, neighbor)| neighbor == &ip_a.to_string())
        .map(|(route, _)| route)
        .collect();
    assert!(
        from_a.contains(&&EvpnRoute::Multicast(MulticastRoute {
            rd: Some(tapswitch_evpn::route::RouteDistinguisher {
                ip: ip_a,
                assigned: 200
            }),
            ..multicast_route(ip_a, 200)
        })),
        "B did not learn A's type-3 route from A: {seen:?}"
    );
    assert!(
        from_a
            .iter()
            .any(|r| matches!(r, EvpnRoute::Mac(m) if m.mac == [0x02, 0xee, 0, 0, 0, 9] && m.vtep == ip_a)),
        "B did not learn A's type-2 route: {seen:?}"
    );
    assert!(
        withdrawn
            .iter()
            .any(|r| matches!(r, EvpnRoute::Mac(m) if m.mac[5] == 9)),
        "{withdrawn:?}"
    );
}
