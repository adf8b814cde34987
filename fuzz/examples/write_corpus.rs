//! Writes the seed corpora under `fuzz/corpus/<target>/` from real frames and
//! the repository's own configurations and requests:
//! `cargo run --manifest-path fuzz/Cargo.toml --example write-corpus`.
//! Seeds are named by content, so running it again changes nothing.

use std::fs;
use std::path::{Path, PathBuf};

use etherparse::{PacketBuilder, TcpHeader};
use tapswitch::config::Config;
use tapswitch::upgrade::{HandedEntry, Handover};
use tapswitch::vnet::VNET_HDR_LEN;
use tapswitch::wire::MacAddr;
use tapswitch_fuzz::naive_sum;

const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

#[derive(Clone, Copy)]
struct Shape {
    v6: bool,
    udp: bool,
    vlan: bool,
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// A frame with a complete checksum, as etherparse builds it.
fn complete_frame(shape: Shape, payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(SRC, DST);
    let mut frame = Vec::new();
    macro_rules! finish {
        ($ip:expr) => {
            if shape.udp {
                $ip.udp(40000, 5201).write(&mut frame, payload).unwrap()
            } else {
                let mut tcp = TcpHeader::new(40000, 5201, 0xffff_f000, 512);
                tcp.ack = true;
                tcp.psh = true;
                tcp.set_options_raw(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2])
                    .unwrap();
                $ip.tcp_header(tcp).write(&mut frame, payload).unwrap()
            }
        };
    }
    let (v4s, v4d) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let (v6s, v6d) = ([0xfd; 16], [0xfe; 16]);
    match (shape.vlan, shape.v6) {
        (false, false) => finish!(eth.ipv4(v4s, v4d, 64)),
        (false, true) => finish!(eth.ipv6(v6s, v6d, 64)),
        (true, false) => finish!(eth.single_vlan(42.try_into().unwrap()).ipv4(v4s, v4d, 64)),
        (true, true) => finish!(eth.single_vlan(42.try_into().unwrap()).ipv6(v6s, v6d, 64)),
    }
    frame
}

fn offsets(shape: Shape) -> (usize, usize, usize) {
    let l3 = if shape.vlan { 18 } else { 14 };
    let l4 = l3 + if shape.v6 { 40 } else { 20 };
    let l4_len = if shape.udp { 8 } else { 32 };
    (l3, l4, l4_len)
}

/// The frame as a sender with checksum offload hands it over: the transport
/// checksum field holds the pseudo-header sum.
fn partial_frame(shape: Shape, payload: &[u8]) -> Vec<u8> {
    let mut frame = complete_frame(shape, payload);
    let (l3, l4, _) = offsets(shape);
    let addresses = if shape.v6 {
        l3 + 8..l3 + 40
    } else {
        l3 + 12..l3 + 20
    };
    let protocol = if shape.udp { 17 } else { 6 };
    let sum = naive_sum(&frame[addresses], protocol + (frame.len() - l4) as u32);
    let field = l4 + if shape.udp { 6 } else { 16 };
    frame[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    frame
}

fn vnet_header(
    flags: u8,
    gso_type: u8,
    hdr_len: usize,
    gso_size: u16,
    start: usize,
    offset: usize,
) -> [u8; VNET_HDR_LEN] {
    let mut header = [0; VNET_HDR_LEN];
    header[0] = flags;
    header[1] = gso_type;
    header[2..4].copy_from_slice(&(hdr_len as u16).to_le_bytes());
    header[4..6].copy_from_slice(&gso_size.to_le_bytes());
    header[6..8].copy_from_slice(&(start as u16).to_le_bytes());
    header[8..10].copy_from_slice(&(offset as u16).to_le_bytes());
    header
}

fn gso_header(shape: Shape, gso_size: u16) -> [u8; VNET_HDR_LEN] {
    let (_, l4, l4_len) = offsets(shape);
    let gso_type = match (shape.udp, shape.v6) {
        (true, _) => 5,
        (false, false) => 1,
        (false, true) => 4,
    };
    vnet_header(
        1,
        gso_type,
        l4 + l4_len,
        gso_size,
        l4,
        if shape.udp { 6 } else { 16 },
    )
}

fn joined(header: &[u8], frame: &[u8]) -> Vec<u8> {
    [header, frame].concat()
}

/// 64 pseudo-random bytes per seed (xorshift), for targets that build their
/// input's structure from any bytes.
fn random_seeds(count: usize, len: usize, mut state: u64) -> Vec<Vec<u8>> {
    (0..count)
        .map(|_| {
            (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect()
        })
        .collect()
}

fn write(dir: &Path, seeds: &[Vec<u8>]) {
    fs::create_dir_all(dir).unwrap();
    for seed in seeds {
        // FNV-1a of the content: stable names, no duplicates.
        let hash = seed.iter().fold(0xcbf29ce484222325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        });
        fs::write(dir.join(format!("{hash:016x}")), seed).unwrap();
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
}

fn shapes() -> Vec<Shape> {
    let mut all = Vec::new();
    for v6 in [false, true] {
        for udp in [false, true] {
            for vlan in [false, true] {
                all.push(Shape { v6, udp, vlan });
            }
        }
    }
    all
}

/// The ```toml blocks of a Markdown file.
fn toml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

fn main() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let repo = fuzz.parent().unwrap().to_owned();
    let corpus = fuzz.join("corpus");

    // frame: real frames, tagged and not, and runts of every kind.
    let tcp4 = Shape {
        v6: false,
        udp: false,
        vlan: false,
    };
    let mut frames = vec![
        complete_frame(tcp4, &payload(100)),
        complete_frame(
            Shape {
                v6: true,
                udp: true,
                vlan: true,
            },
            &payload(60),
        ),
    ];
    let mut qinq = complete_frame(
        Shape {
            v6: false,
            udp: true,
            vlan: true,
        },
        &payload(20),
    );
    qinq[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
    qinq.splice(16..16, [0x81, 0x00, 0x00, 0x0a]);
    frames.push(qinq.clone());
    let arp: Vec<u8> = [
        [0xff; 6].as_slice(),
        &SRC,
        &[0x08, 0x06],
        &[0, 1, 8, 0, 6, 4, 0, 1],
    ]
    .concat();
    frames.push(arp.clone());
    for len in [0, 1, 6, 13, 14, 15, 17] {
        frames.push(qinq[..len].to_vec());
    }
    for text in [
        "02:00:00:00:00:01",
        "ff:ff:ff:ff:ff:ff",
        "2:0:a:bc:de:ff",
        "02:00:00:00:00",
        "02:00:0g:00:00:01",
    ] {
        frames.push(text.as_bytes().to_vec());
    }
    write(&corpus.join("frame"), &frames);

    // vnet: super-frames and checksum-only frames of every shape as a kernel sends
    // them, and the lying headers a hostile guest could write.
    let mut vnet = Vec::new();
    for shape in shapes() {
        let frame = partial_frame(shape, &payload(3000));
        vnet.push(joined(&gso_header(shape, 1448), &frame));
        let (_, l4, _) = offsets(shape);
        let csum = vnet_header(1, 0, 0, 0, l4, if shape.udp { 6 } else { 16 });
        vnet.push(joined(&csum, &partial_frame(shape, &payload(200))));
    }
    let frame = partial_frame(tcp4, &payload(3000));
    let good = gso_header(tcp4, 1448);
    let lie = |edit: &dyn Fn(&mut [u8; VNET_HDR_LEN])| {
        let mut header = good;
        edit(&mut header);
        joined(&header, &frame)
    };
    vnet.push(lie(&|h| h[4..6].fill(0))); // gso_size 0
    vnet.push(lie(&|h| h[2..4].copy_from_slice(&u16::MAX.to_le_bytes()))); // hdr_len past the end
    vnet.push(lie(&|h| h[6..8].copy_from_slice(&4000u16.to_le_bytes()))); // csum_start outside
    vnet.push(lie(&|h| h[1] = 5)); // UDP GSO on TCP
    vnet.push(lie(&|h| {
        h[1] = 0;
        h[6..8].fill(0);
    })); // checksum into the Ethernet header
    // The reserved ("evil") IPv4 flag bit: segments keep it (found by a long run,
    // where the check, not the switch, was wrong).
    let mut reserved_bit = frame.clone();
    reserved_bit[20] |= 0x80;
    vnet.push(joined(&good, &reserved_bit));
    vnet.push(joined(&[0; VNET_HDR_LEN], &arp));
    vnet.push(joined(&good, &qinq));
    vnet.push(joined(&good, &frame[..40]));
    write(&corpus.join("vnet"), &vnet);

    // gso, gro and forward build their structure from any bytes.
    write(
        &corpus.join("gso"),
        &random_seeds(16, 64, 0x9e3779b97f4a7c15),
    );
    write(
        &corpus.join("gro"),
        &random_seeds(16, 96, 0x6a09e667f3bcc908),
    );
    write(
        &corpus.join("forward"),
        &random_seeds(16, 512, 0x2545f4914f6cdd1d),
    );

    // config: the repository's configurations (selector 0), port specs (1), settings (2).
    let readme = fs::read_to_string(repo.join("README.md")).unwrap();
    let mut configs: Vec<Vec<u8>> = toml_blocks(&readme)
        .into_iter()
        .map(|t| [b"\0".as_slice(), t.as_bytes()].concat())
        .collect();
    let default = fs::read_to_string(repo.join("crates/tapswitch/src/default.toml")).unwrap();
    configs.push([b"\0".as_slice(), default.as_bytes()].concat());
    for spec in ["p1", "p1@ns1", "much-too-long-name@x", "a@", "p@../etc"] {
        configs.push([b"\x01".as_slice(), spec.as_bytes()].concat());
    }
    for setting in [
        "mtu=9000",
        "vlan_mode=trunk",
        "allowed_vlans=10,20,100-200",
        "storm_control=broadcast_pps = 100, multicast_pps = 50",
        "mac_limit=0",
        "allowed_macs=02:00:00:00:00:09",
        "mac_limit_action=drop+log",
        "vlan=none",
    ] {
        configs.push([b"\x02".as_slice(), setting.as_bytes()].concat());
    }
    write(&corpus.join("config"), &configs);

    // control: the request lines the CLI and the tests send.
    let requests = [
        r#"{"cmd":"hello"}"#,
        r#"{"cmd":"port_add","port":{"name":"p2","netns":"ns","vlan_mode":"access","vlan":10}}"#,
        r#"{"cmd":"port_del","name":"p3"}"#,
        r#"{"cmd":"port_set","name":"p0","set":{"mtu":9000,"mac_limit":4,"storm_control":{"broadcast_pps":100}}}"#,
        r#"{"cmd":"port_set","name":"p0","set":{"allowed_vlans":[10,"100-199"],"vlan_mode":"trunk","native_vlan":null}}"#,
        r#"{"cmd":"port_list"}"#,
        r#"{"cmd":"fdb_show"}"#,
        r#"{"cmd":"fdb_add","mac":"02:00:00:00:00:09","port":"p0","vlan":10}"#,
        r#"{"cmd":"fdb_del","mac":"02:00:00:00:00:09"}"#,
        r#"{"cmd":"fdb_flush","port":"p1"}"#,
        r#"{"cmd":"stats","port":"p1"}"#,
        r#"{"cmd":"events"}"#,
        r#"{"cmd":"config_show"}"#,
        r#"{"cmd":"upgrade","binary":"/usr/sbin/tapswitch"}"#,
        r#"{"cmd":"libvirt_xml","name":"vm1"}"#,
        r#"{"cmd":"reboot"}"#,
        r#"["port_del","p1"]"#,
    ];
    write(
        &corpus.join("control"),
        &requests
            .iter()
            .map(|r| r.as_bytes().to_vec())
            .collect::<Vec<_>>(),
    );

    // upgrade: a handover as a running switch sends it, and broken ones.
    let config = Config::from_toml(
        "[[port]]\nname = \"p1\"\nnetns = \"ns1\"\n[[port]]\nname = \"p2\"\nqueues = 2\nvlan_mode = \"access\"\nvlan = 10\n",
        "seed",
    )
    .unwrap();
    let handover = Handover {
        version: tapswitch::upgrade::HANDOVER_VERSION,
        config,
        queues: vec![1, 2],
        fdb: vec![HandedEntry {
            vlan: 10,
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            port: "p2".into(),
            kind: tapswitch::fdb::EntryKind::Dynamic,
            age_ms: 1200,
            remote: None,
        }],
        runtime_ports: vec!["p2".into()],
        link_monitor: false,
        state_lock: false,
        reload_source: None,
    };
    let json = serde_json::to_vec(&handover).unwrap();
    let message = |fds: u32, json: &[u8]| {
        let mut bytes = fds.to_le_bytes().to_vec();
        bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
        bytes.extend_from_slice(json);
        bytes
    };
    let upgrade = vec![
        message(4, &json),
        message(3, &json),
        message(1, br#"{"config":{},"queues":[],"fdb":[]}"#),
        message(1, br#"{"config":{},"queues":[0],"fdb":[]}"#),
        message(4, &json[..json.len() / 2]),
    ];
    write(&corpus.join("upgrade"), &upgrade);
}
