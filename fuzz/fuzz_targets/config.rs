//! Config parsing: any text is a configuration or a clear error, never a
//! panic. What is accepted validates again, gives every port a policy the
//! forwarder takes, and survives being written out (`config show`, a saved
//! config) and read back unchanged. The command-line forms (`--port
//! NAME@NETNS`, `port set KEY VALUE`) go through the same checks.
//!
//! Input: one selector byte (TOML file, port spec, or setting), then text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapswitch::config::{Config, PortConfig, PortSettings, port_keys, setting_value};
use tapswitch::fdb::PortId;
use tapswitch::forward::Forwarder;

/// A valid configuration: every check holds.
fn check_accepted(config: &Config) {
    config
        .validate()
        .expect("an accepted config validates again");
    let mut forwarder = Forwarder::new(Default::default());
    for (index, port) in config.ports.iter().enumerate() {
        port.validate("port")
            .expect("an accepted port validates alone");
        forwarder
            .add_port(PortId(index as u32), port.policy())
            .expect("the forwarder takes every accepted port's policy");
    }
    let text = toml::to_string(config).expect("an accepted config can be written out");
    let again = Config::from_toml(&text, "written out")
        .unwrap_or_else(|e| panic!("a written-out config is refused: {e}\n{text}"));
    assert_eq!(
        &again, config,
        "written out and read back differently:\n{text}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match selector % 3 {
        0 => {
            if let Ok(config) = Config::from_toml(text, "fuzz") {
                check_accepted(&config);
            }
        }
        1 => {
            if let Ok(port) = text.parse::<PortConfig>() {
                check_accepted(&Config {
                    ports: vec![port],
                    ..Config::default()
                });
            }
        }
        _ => {
            // KEY=VALUE, as `port set NAME KEY=VALUE` takes it.
            let (key, value) = text.split_once('=').unwrap_or((text, ""));
            let key = port_keys()
                .iter()
                .find(|known| known.eq_ignore_ascii_case(key.trim()))
                .copied()
                .unwrap_or(key);
            let mut settings = PortSettings::new();
            settings.insert(key.to_owned(), setting_value(key, value));
            if let Ok(port) = PortConfig::named("p0").with_settings(&settings) {
                check_accepted(&Config {
                    ports: vec![port],
                    ..Config::default()
                });
            }
        }
    }
});
