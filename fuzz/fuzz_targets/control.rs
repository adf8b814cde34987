//! Control requests: any line is a request or a clear error, never a panic.
//! A parsed request prints (as the client sends it) and parses back the same;
//! a port it adds or changes that passes the checks the server makes gives a
//! policy the forwarder takes and a configuration `config show` can write
//! and a restart read back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapswitch::config::{Config, PortConfig};
use tapswitch::control::{Request, parse_request};
use tapswitch::fdb::PortId;
use tapswitch::forward::Forwarder;

fn check_port(port: &PortConfig) {
    Forwarder::new(Default::default())
        .add_port(PortId(0), port.policy())
        .expect("the forwarder takes an accepted port's policy");
    let config = Config {
        ports: vec![port.clone()],
        ..Config::default()
    };
    let text = toml::to_string(&config).expect("an accepted port can be written out");
    let again = Config::from_toml(&text, "config show")
        .unwrap_or_else(|e| panic!("config show of an accepted port is refused: {e}\n{text}"));
    assert_eq!(
        again, config,
        "written out and read back differently:\n{text}"
    );
}

fn has_float(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Number(number) => number.is_f64(),
        serde_json::Value::Array(items) => items.iter().any(has_float),
        serde_json::Value::Object(map) => map.values().any(has_float),
        _ => false,
    }
}

fuzz_target!(|line: &[u8]| {
    let Ok(request) = parse_request(line) else {
        return;
    };
    let printed = serde_json::to_string(&request).expect("a request prints");
    let again = parse_request(printed.as_bytes())
        .unwrap_or_else(|e| panic!("a printed request is refused: {e}: {printed}"));
    // serde_json reads some floats back one bit off; no setting takes a float anyway.
    if !has_float(&serde_json::to_value(&request).unwrap()) {
        assert_eq!(
            again, request,
            "printed and parsed back differently: {printed}"
        );
    }
    match &request {
        Request::PortAdd { port } => {
            if port.validate("port").is_ok() {
                check_port(port);
            }
        }
        Request::PortSet { set, .. } => {
            if let Ok(port) = PortConfig::named("p0").with_runtime_settings(set) {
                port.validate("port").expect("a changed port validates");
                check_port(&port);
            }
        }
        _ => {}
    }
});
