//! A running switch's life, end to end on a real `tapswitch run`: signals (every one a
//! daemon may get is handled: SIGHUP without a config file and the like change nothing,
//! SIGQUIT stops cleanly), the terminal of a foreground `run` closed under it, and starts that fail halfway (they
//! leave no socket file, TAP or VM device behind). Needs root.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;

/// The process state letter of `/proc/PID/stat` (`S` sleeping, `T` stopped, …).
fn process_state(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading stat");
    // "PID (comm) STATE …": comm may hold spaces, so look after its closing parenthesis.
    let after = &stat[stat.rfind(')').expect("comm in parentheses") + 1..];
    after.trim_start().chars().next().expect("a state letter")
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Links of `netns` (names), from `ip -j link`.
fn links_in(netns: &str) -> String {
    sh("ip", &["-n", netns, "-j", "link", "show"])
}

fn fdb_macs(switch: &Switch) -> Vec<String> {
    switch
        .fdb()
        .entries
        .iter()
        .map(|e| e.mac.to_string())
        .collect()
}

#[test]
fn sighup_without_a_file_is_logged_and_the_switch_forwards_on_with_nothing_lost() {
    require_root!();
    let bed = Bed::with_starter(2, &[], Switch::start_capturing_log);
    let switch = &bed.switch;
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 3, "0.1"), 3);
    // A glue-mode VM port: its VM TAP is persistent and carries a tc filter, which only a
    // clean stop removes. No domain of that name exists; libvirt may or may not run.
    let vm_port = unique("vh");
    let domain = unique("tsw-nodomain-");
    let (ok, _, stderr) = switch.ctl(&["port", "add", &vm_port, "--vm", &domain, "--mode", "glue"]);
    assert!(ok, "port add --vm --mode glue: {stderr}");
    let vm_tap = format!("vmt-{vm_port}");
    let filters = sh("tc", &["filter", "show", "dev", &vm_tap, "ingress"]);
    assert!(filters.contains("mirred"), "{filters}");
    let macs_before = fdb_macs(switch);
    assert!(macs_before.len() >= 2, "{macs_before:?}");

    switch.signal(libc::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || switch
            .log()
            .contains("signal=SIGHUP")),
        "no log line for SIGHUP:\n{}",
        switch.log()
    );
    // Started without a config file: SIGHUP's reload has nothing to read, says so, and
    // changes nothing (tests/reload.rs has reloads that do).
    assert!(
        wait_for(Duration::from_secs(10), || switch
            .log()
            .contains("started without a config file")),
        "{}",
        switch.log()
    );
    assert_ne!(process_state(switch.pid()), 'Z', "the switch died");

    // Everything is still there and forwarding.
    assert_eq!(
        ping(bed.ns(0), &Bed::addr(1), 3, "0.1"),
        3,
        "ping after SIGHUP"
    );
    let ports = switch.port_list();
    assert_eq!(ports.len(), 3, "{ports:?}");
    let macs_after = fdb_macs(switch);
    for mac in &macs_before {
        assert!(
            macs_after.contains(mac),
            "{mac} was forgotten: {macs_after:?}"
        );
    }
    assert!(link_exists(&vm_tap));

    let control = switch.control.clone();
    let Bed { switch, namespaces } = bed;
    let (clean, log) = switch.stop_logged();
    assert!(clean, "SIGTERM after SIGHUP: not a clean exit:\n{log}");
    assert!(
        log.contains("PORT             RX FRAMES"),
        "no counters:\n{log}"
    );
    assert!(log.contains("\np0 ") && log.contains("\np1 "), "{log}");
    assert!(
        !control.exists(),
        "the control socket file outlived the switch"
    );
    assert!(
        !link_exists(&vm_tap),
        "the VM TAP {vm_tap} outlived the switch"
    );
    for (i, ns) in namespaces.iter().enumerate() {
        let links = links_in(&ns.name);
        assert!(
            !links.contains(&format!("\"p{i}\"")),
            "TAP p{i} is left: {links}"
        );
    }
}

#[test]
fn signals_that_would_kill_or_suspend_a_daemon_change_nothing() {
    require_root!();
    let bed = Bed::with_starter(2, &[], Switch::start_capturing_log);
    let switch = &bed.switch;
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 2, "0.1"), 2);
    let harmless = [
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGIO,
        libc::SIGPWR,
        libc::SIGSTKFLT,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGXFSZ,
        libc::SIGPIPE,
        libc::SIGRTMIN() + 1,
    ];
    for signal in harmless {
        switch.signal(signal);
    }
    assert!(
        wait_for(Duration::from_secs(10), || {
            let log = switch.log();
            log.contains("signal=SIGUSR2") && log.contains("signal=SIGRTMIN+1")
        }),
        "the logged signals are not in the log:\n{}",
        switch.log()
    );
    let log = switch.log();
    assert!(
        log.contains("signal=SIGTSTP") && log.contains("a suspended switch"),
        "{log}"
    );
    // Neither stopped (SIGTSTP, SIGTTIN, SIGTTOU) nor killed (the others).
    let state = process_state(switch.pid());
    assert!(
        state == 'S' || state == 'R',
        "the switch is in state {state}"
    );
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 3, "0.1"), 3);
    let Bed { switch, .. } = bed;
    let (clean, log) = switch.stop_logged();
    assert!(clean, "{log}");
}

#[test]
fn sigquit_and_sigxcpu_stop_the_switch_cleanly_like_sigterm() {
    require_root!();
    for signal in [libc::SIGQUIT, libc::SIGXCPU] {
        let port = unique("tslq");
        let mut switch = Switch::start_capturing_log(&["--port", &port]);
        let control = switch.control.clone();
        assert!(link_exists(&port));
        switch.signal(signal);
        assert!(
            wait_for(Duration::from_secs(10), || switch.exited()),
            "signal {signal} did not stop the switch"
        );
        let (clean, log) = switch.stop_logged();
        assert!(clean, "signal {signal}: not a clean exit:\n{log}");
        assert!(log.contains("stopping"), "{log}");
        assert!(
            log.contains("PORT             RX FRAMES"),
            "no counters:\n{log}"
        );
        assert!(
            !control.exists(),
            "signal {signal}: the socket file is left"
        );
        assert!(!link_exists(&port), "signal {signal}: TAP {port} is left");
    }
}

/// Keeps one control connection busy with `fdb add` and `fdb del` of its own MAC (each
/// then asks the dataplane for a snapshot to write the state file) until the switch stops
/// answering; counts the replies in `answered`.
fn write_state_until_refused(control: &Path, port: &str, client: u8, answered: &AtomicU64) {
    let Ok(stream) = UnixStream::connect(control) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = &stream;
    let mut reader = BufReader::new(&stream);
    let mac = format!("02:00:00:00:5e:{client:02x}");
    let add = format!("{{\"cmd\":\"fdb_add\",\"mac\":\"{mac}\",\"port\":\"{port}\"}}\n");
    let del = format!("{{\"cmd\":\"fdb_del\",\"mac\":\"{mac}\"}}\n");
    for request in [add, del].iter().cycle() {
        let mut reply = String::new();
        if writer.write_all(request.as_bytes()).is_err()
            || reader.read_line(&mut reply).unwrap_or(0) == 0
            || !reply.contains("\"ok\":true")
        {
            return;
        }
        answered.fetch_add(1, Ordering::Relaxed);
    }
}

/// SIGTERM while control requests keep writing the state file: a request the dataplane
/// gets after its loop ended must fail at once. It used to wait for ever, holding the
/// control mutex (which the final state save needs) or inside `tapswitch-state` (which
/// `ControlServer::stop` joins), and the switch never exited.
#[test]
fn sigterm_during_a_stream_of_state_writes_stops_the_switch() {
    require_root!();
    for round in 0..10 {
        let port = unique("tslw");
        let mut switch = Switch::start(&["--port", &port]);
        let answered = Arc::new(AtomicU64::new(0));
        let clients: Vec<_> = (0..3u8)
            .map(|client| {
                let (control, port) = (switch.control.clone(), port.clone());
                let answered = Arc::clone(&answered);
                std::thread::spawn(move || {
                    write_state_until_refused(&control, &port, client, &answered)
                })
            })
            .collect();
        assert!(
            wait_for(Duration::from_secs(20), || answered.load(Ordering::Relaxed)
                >= 30),
            "round {round}: the state-writing requests are not answered"
        );
        switch.signal(libc::SIGTERM);
        assert!(
            wait_for(Duration::from_secs(30), || switch.exited()),
            "round {round}: SIGTERM during state writes did not stop the switch"
        );
        for client in clients {
            client.join().unwrap();
        }
        assert!(switch.stop(), "round {round}: not a clean exit");
        assert!(!link_exists(&port), "round {round}: TAP {port} is left");
    }
}

/// The master side of a pseudo-terminal, drained on a thread (a full terminal would block
/// the switch's log writes) until [`Terminal::close`] hangs it up.
struct Terminal {
    slave: File,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Terminal {
    fn open() -> Self {
        // Close-on-exec from the start (not openpty's plain fds): a master fd inherited by
        // any process spawned meanwhile (by a parallel test) would keep the terminal alive.
        // SAFETY: posix_openpt opens a new fd and touches no memory of ours.
        let raw = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
        assert!(
            raw >= 0,
            "posix_openpt: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: raw was just opened and is owned by nobody else.
        let master = unsafe { File::from_raw_fd(raw) };
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: grantpt/unlockpt take our open master fd; ptsname_r writes at most
        // name.len() bytes into the live buffer.
        let ret = unsafe {
            if libc::grantpt(raw) != 0 || libc::unlockpt(raw) != 0 {
                -1
            } else {
                libc::ptsname_r(raw, name.as_mut_ptr(), name.len())
            }
        };
        assert_eq!(
            ret,
            0,
            "setting up the terminal: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated path.
        let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path.to_str().expect("UTF-8 pts path"))
            .expect("opening the terminal's slave side");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let reader = std::thread::spawn(move || {
            let mut master = master;
            let fd = std::os::fd::AsRawFd::as_raw_fd(&master);
            // SAFETY: fcntl on our own open fd, integer arguments only.
            unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
            let mut buffer = [0u8; 4096];
            while !stopping.load(Ordering::SeqCst) {
                match master.read(&mut buffer) {
                    Ok(n) if n > 0 => {}
                    _ => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            // Dropping the last master fd hangs the terminal up.
        });
        Self {
            slave,
            stop,
            reader: Some(reader),
        }
    }

    fn slave(&self) -> Stdio {
        Stdio::from(OwnedFd::from(
            self.slave.try_clone().expect("dup of the slave"),
        ))
    }

    fn close(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.close();
    }
}

#[test]
fn closing_the_terminal_of_a_foreground_run_keeps_it_forwarding() {
    require_root!();
    let mut terminal = Terminal::open();
    let bed = Bed::with_starter(2, &[], |args| {
        Switch::start_configured(args, |command| {
            command.stdin(terminal.slave()).stderr(terminal.slave());
            // SAFETY: setsid and ioctl are async-signal-safe and touch no memory of ours.
            unsafe {
                command.pre_exec(|| {
                    // A session of its own with the terminal as its controlling one, as a
                    // shell's foreground job has: closing the terminal sends it SIGHUP.
                    if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        })
    });
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 2, "0.1"), 2);
    let control = bed.switch.control.clone();
    // SIGHUP (and SIGCONT) to the session; from now on every write to stderr fails (EIO).
    terminal.close();
    std::thread::sleep(Duration::from_millis(300));
    let state = process_state(bed.switch.pid());
    assert!(
        state == 'S' || state == 'R',
        "after the hangup the switch is in state {state}"
    );
    assert_eq!(
        ping(bed.ns(0), &Bed::addr(1), 3, "0.1"),
        3,
        "ping after the hangup"
    );
    // Changes still work, though each logs lines nobody can read.
    let extra = unique("tslt");
    let (ok, _, stderr) = bed.switch.ctl(&["port", "add", &extra]);
    assert!(ok, "port add after the hangup: {stderr}");
    let (ok, _, stderr) = bed.switch.ctl(&["port", "del", &extra]);
    assert!(ok, "port del after the hangup: {stderr}");
    let stats = bed.switch.stats();
    assert!(stats.counters_of("p1").rx_frames >= 5, "{stats:?}");
    let Bed { switch, .. } = bed;
    assert!(switch.stop(), "not a clean exit after the terminal closed");
    assert!(!control.exists(), "the socket file is left");
}

/// `tapswitch run ARGS --control PATH` to its end; (success, stderr).
fn run_to_end(args: &[&str], control: &Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tapswitch"))
        .arg("run")
        .args(args)
        .arg("--control")
        .arg(control)
        .output()
        .expect("running tapswitch");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_start_that_fails_after_binding_leaves_no_socket_file_or_tap() {
    require_root!();
    let dir = TempDir::new("tslf");
    let control = dir.path.join("s.sock");
    // The metrics address is taken: the switch fails after its socket and TAP exist.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = taken.local_addr().unwrap().to_string();
    let port = unique("tslf");
    let (ok, stderr) = run_to_end(&["--port", &port, "--metrics", &metrics], &control);
    assert!(!ok, "started although {metrics} is taken");
    assert!(stderr.contains(&metrics), "{stderr}");
    assert!(!control.exists(), "the failed start left its socket file");
    assert!(!link_exists(&port), "the failed start left TAP {port}");

    // So the next start on the same socket needs no cleanup and says nothing about it.
    drop(taken);
    let switch =
        Switch::start_capturing_log(&["--port", &port, "--control", control.to_str().unwrap()]);
    let (clean, log) = switch.stop_logged();
    assert!(clean);
    assert!(!log.contains("stale control socket"), "{log}");
}

#[test]
fn a_start_whose_vm_devices_fail_removes_the_ones_it_made() {
    require_root!();
    let dir = TempDir::new("tslv");
    let control = dir.path.join("s.sock");
    let (glued, blocked) = (unique("lg"), unique("lb"));
    // Someone else's device under the name the second VM port's macvtap wants.
    let foreign = unique("tslx");
    sh(
        "ip",
        &[
            "link",
            "add",
            &foreign,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{foreign}p"),
        ],
    );
    struct Foreign(String);
    impl Drop for Foreign {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).status();
        }
    }
    let _foreign = Foreign(foreign.clone());
    let config = dir.path.join("switch.toml");
    std::fs::write(
        &config,
        format!(
            "[switch]\nlibvirt_uri = \"qemu+unix:///system?socket=/nonexistent/libvirt-sock\"\n\n\
             [[port]]\nname = \"{glued}\"\nvm = \"dom-a\"\nvm_mode = \"glue\"\n\n\
             [[port]]\nname = \"{blocked}\"\nvm = \"dom-b\"\nvm_device = \"{foreign}\"\n"
        ),
    )
    .unwrap();
    let (ok, stderr) = run_to_end(&["--config", config.to_str().unwrap()], &control);
    assert!(!ok, "started although {foreign} is taken");
    assert!(stderr.contains("is not a macvtap stacked on"), "{stderr}");
    let vm_tap = format!("vmt-{glued}");
    assert!(
        vm_tap.len() <= 15,
        "{vm_tap} would be shortened: not the VM TAP's name"
    );
    assert!(
        !link_exists(&vm_tap),
        "the failed start left the VM TAP {vm_tap}"
    );
    assert!(
        !link_exists(&glued) && !link_exists(&blocked),
        "port TAPs are left"
    );
    assert!(link_exists(&foreign), "the foreign device was removed");
    assert!(!control.exists(), "the failed start left its socket file");
}

/// SIGTERM while a client sits idle on the control socket (it said hello and then nothing,
/// as an `nc -U` left open) and another streams events: the switch closes both
/// connections, joins their threads and exits cleanly; each client reads end of stream.
#[test]
fn sigterm_with_an_idle_connection_and_an_events_subscriber_closes_both_and_exits() {
    require_root!();
    let port = unique("tslc");
    let switch = Switch::start_capturing_log(&["--port", &port]);
    let mut idle = UnixStream::connect(&switch.control).expect("connecting");
    let hello = serde_json::to_string(&tapswitch::control::Request::Hello {}).unwrap();
    idle.write_all(format!("{hello}\n").as_bytes())
        .expect("sending hello");
    let mut idle = BufReader::new(idle);
    let mut hello = String::new();
    idle.read_line(&mut hello).expect("the hello reply");
    assert!(hello.contains("\"ok\":true"), "{hello}");
    // Subscribed once the reply is read; it reports how its stream ended.
    let mut subscriber =
        tapswitch::control::ControlClient::connect(&switch.control).expect("connecting");
    subscriber
        .request_as::<()>(&tapswitch::control::Request::Events {})
        .expect("subscribing");
    let (ended_tx, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let end = loop {
            if let Err(error) = subscriber.next_line() {
                let eof = matches!(&error, tapswitch::control::ControlError::Socket { source, .. }
                    if source.kind() == std::io::ErrorKind::UnexpectedEof);
                break (eof, error.to_string());
            }
        };
        let _ = ended_tx.send(end);
    });

    let (clean, log) = switch.stop_logged();
    assert!(clean, "not a clean exit:\n{log}");
    assert!(log.contains("control connections closed"), "{log}");
    assert!(!log.contains("still running at exit"), "{log}");
    // The idle client: end of stream, not an error (a reset) or its own read timeout.
    idle.get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = String::new();
    assert_eq!(
        idle.read_line(&mut rest).expect("end of stream"),
        0,
        "{rest}"
    );
    let end = ended
        .recv_timeout(Duration::from_secs(10))
        .expect("the event stream still runs");
    assert!(end.0, "the event stream ended otherwise: {}", end.1);
    assert!(!link_exists(&port), "TAP {port} is left");
}

/// A second `tapswitch run` on the state directory of a running switch (its own port and
/// control socket) is refused, naming the running one's PID; the first keeps forwarding.
#[test]
fn a_second_switch_on_the_same_state_directory_is_refused() {
    require_root!();
    let bed = Bed::new(2);
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 2, "0.1"), 2);
    let stderr = start_refused_on_state_dir_of(&bed.switch);
    assert!(
        stderr.contains(&format!(
            "the state directory {} is in use by another tapswitch (pid {})",
            bed.switch.state_dir.display(),
            bed.switch.pid()
        )),
        "{stderr}"
    );
    assert_eq!(ping(bed.ns(0), &Bed::addr(1), 5, "0.05"), 5);
}
