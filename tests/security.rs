//! Security checks against a real `tapswitch run`: the control socket serves only
//! root and the switch's own user (its mode, and the peer's credentials when the mode
//! was loosened), no request makes it open a namespace outside `/run/netns` or run a
//! binary others could have written, and metrics stay on loopback unless asked.
//! Needs root (CI runs as root).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;

use common::*;

/// The `nobody` user of Debian.
const NOBODY: u32 = 65534;

fn one_port_switch() -> (Netns, Switch) {
    let ns = Netns::new();
    let switch = Switch::start(&["--port", &format!("p0@{}", ns.name)]);
    (ns, switch)
}

/// Sends one raw request line on the control socket; returns the reply line as JSON (these
/// tests check the wire itself: what a client that is not ours sends and gets back).
fn raw_request(switch: &Switch, line: &str) -> serde_json::Value {
    let mut stream = UnixStream::connect(&switch.control).expect("connecting");
    writeln!(stream, "{line}").expect("writing the request");
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .expect("reading the reply");
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{reply:?}: {e}"))
}

#[test]
fn another_user_is_refused_even_when_the_socket_mode_is_loosened() {
    require_root!();
    let (_ns, switch) = one_port_switch();
    let mode = std::fs::metadata(&switch.control)
        .expect("the socket file")
        .mode();
    assert_eq!(mode & 0o777, 0o600, "control socket mode {mode:o}");

    // Someone makes the socket (and its directory) reachable for everyone.
    std::fs::set_permissions(&switch.control, std::fs::Permissions::from_mode(0o666)).unwrap();
    let dir = switch.control.parent().expect("a directory");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tapswitch"))
        .args(["port", "list", "--control"])
        .arg(&switch.control)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("running the client as nobody");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "uid {NOBODY} listed the ports: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        stderr.contains(&format!("permission denied: uid {NOBODY} (pid "))
            && stderr.contains("is neither root nor the switch's own uid 0"),
        "{stderr}"
    );
    // Root still is served, and nothing changed.
    let (ok, out, stderr) = switch.ctl(&["port", "list"]);
    assert!(ok, "{stderr}");
    assert!(out.contains("p0"), "{out}");
}

#[test]
fn namespaces_are_only_those_mounted_under_run_netns() {
    require_root!();
    let (_ns, switch) = one_port_switch();
    // A link to the host's own namespace, placed where names are looked up.
    let link = unique("tslnk");
    let link_path = std::path::Path::new("/run/netns").join(&link);
    std::os::unix::fs::symlink("/proc/1/ns/net", &link_path).expect("a link in /run/netns");
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _link = Remove(link_path);

    let port = unique("tsx");
    let refused = [
        (
            link.clone(),
            format!("/run/netns/{link} is not a network namespace: it is a symbolic link"),
        ),
        (
            "../../proc/1/ns/net".to_owned(),
            "invalid network namespace name \"../../proc/1/ns/net\": it contains '/'".to_owned(),
        ),
        (
            "/proc/1/ns/net".to_owned(),
            "invalid network namespace name \"/proc/1/ns/net\": it contains '/'".to_owned(),
        ),
        (
            "..".to_owned(),
            "invalid network namespace name \"..\": it is a relative directory reference"
                .to_owned(),
        ),
    ];
    for (netns, expected) in &refused {
        let (ok, _, stderr) = switch.ctl(&["port", "add", &format!("{port}@{netns}")]);
        assert!(!ok, "port add {port}@{netns} was accepted");
        assert!(stderr.contains(expected.as_str()), "{netns}: {stderr}");
    }
    // A NUL byte cannot be typed on a command line, but can be sent.
    let reply = raw_request(
        &switch,
        &format!(r#"{{"cmd":"port_add","port":{{"name":"{port}","netns":"a\u0000b"}}}}"#),
    );
    assert_eq!(reply["ok"], false, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.contains("it contains a NUL byte")),
        "{reply}"
    );
    // Nothing was made, here or in the host's namespace.
    assert!(!std::path::Path::new("/sys/class/net").join(&port).exists());
    let list = switch.port_list();
    assert_eq!(list.len(), 1, "{list:?}");
}

#[test]
fn upgrade_runs_only_a_binary_nobody_else_could_have_written() {
    require_root!();
    let (_ns, switch) = one_port_switch();
    let pid = raw_request(&switch, r#"{"cmd":"hello"}"#)["result"]["pid"].clone();
    let dir = TempDir::new("tsbin");
    let binary = dir.path.join("tapswitch-evil");
    std::fs::write(&binary, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o777)).unwrap();
    // Given relative to the client's directory: the switch is told the absolute path.
    let output = Command::new(env!("CARGO_BIN_EXE_tapswitch"))
        .args(["upgrade", "--binary", "./tapswitch-evil", "--control"])
        .arg(&switch.control)
        .current_dir(&dir.path)
        .output()
        .expect("running the client");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "upgrade: binary {} is writable by users other than its owner (mode 0777)",
            dir.path.join("tapswitch-evil").display()
        )),
        "{stderr}"
    );
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, _, stderr) = switch.ctl(&["upgrade", "--binary", binary.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("is not executable (mode 0644)"), "{stderr}");
    // Still the same switch, still serving.
    assert_eq!(
        raw_request(&switch, r#"{"cmd":"hello"}"#)["result"]["pid"],
        pid
    );
}

#[test]
fn metrics_bind_loopback_unless_told_otherwise() {
    require_root!();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().unwrap().port()
    };
    let ns = Netns::new();
    let switch = Switch::start(&[
        "--port",
        &format!("p0@{}", ns.name),
        "--metrics",
        &port.to_string(),
    ]);
    let listening = sh("ss", &["-Hltnp", &format!("sport = :{port}")]);
    let ours: Vec<&str> = listening
        .lines()
        .filter(|l| l.contains(&format!("pid={},", switch.pid())))
        .collect();
    assert_eq!(ours.len(), 1, "{listening}");
    assert!(
        ours[0].contains(&format!("127.0.0.1:{port}")),
        "the metrics endpoint is not on loopback: {listening}"
    );
}
