//! systemd's notification protocol (`Type=notify`, `NotifyAccess=main` in
//! debian/tapswitch.service), spoken to a socket of the test's own: this machine has
//! no running systemd. What systemd needs to hear, and from whom: READY=1 from the
//! switch once its control socket answers, STOPPING=1 when it stops, and across
//! `tapswitch upgrade` MAINPID=<new pid> from the old process (the main one then),
//! which then exits without STOPPING=1, and STOPPING=1 from the new one at the end.

mod common;

use std::time::Duration;

use common::*;
use tapswitch::control::protocol::HandedOver;

const WAIT: Duration = Duration::from_secs(20);

fn start(notify: &NotifySocket) -> Bed {
    Bed::with_starter(1, &[], |args| {
        Switch::start_configured(args, |command| {
            command.env("NOTIFY_SOCKET", &notify.path);
        })
    })
}

#[test]
fn the_switch_says_ready_once_it_answers_and_stopping_when_it_stops() {
    require_root!();
    let notify = NotifySocket::new();
    let bed = start(&notify);
    let ready = notify.next(WAIT).expect("no notification after the start");
    assert!(ready.has("READY=1"), "{ready:?}");
    assert_eq!(ready.pid, bed.switch.pid(), "{ready:?}");
    assert!(
        ready.lines.iter().any(|l| l.starts_with("STATUS=")),
        "{ready:?}"
    );
    // Ready means the control socket answers: a client may connect right away.
    let stats = bed.switch.stats();
    assert_eq!(stats.ports.len(), 1);

    let pid = bed.switch.pid();
    let Bed { switch, namespaces } = bed;
    assert!(switch.stop(), "the switch did not stop cleanly");
    drop(namespaces);
    let stopping = notify.next(WAIT).expect("no notification at the stop");
    assert!(stopping.has("STOPPING=1"), "{stopping:?}");
    assert_eq!(stopping.pid, pid, "{stopping:?}");
}

#[test]
fn an_upgrade_names_the_new_process_main_and_only_it_says_stopping() {
    require_root!();
    let notify = NotifySocket::new();
    let mut bed = start(&notify);
    let old = bed.switch.pid();
    let ready = notify.next(WAIT).expect("no notification after the start");
    assert!(ready.has("READY=1") && ready.pid == old, "{ready:?}");

    let reply: HandedOver = bed.switch.ctl_as(&["upgrade"]);
    let successor = Successor::new(reply.pid as i32);
    // From the old process, the main one until systemd reads this.
    let handed = notify.next(WAIT).expect("no notification at the upgrade");
    assert!(handed.has(&format!("MAINPID={}", reply.pid)), "{handed:?}");
    assert_eq!(handed.pid, old, "{handed:?}");
    assert!(
        wait_for(Duration::from_secs(10), || bed.switch.exited()),
        "the old switch did not exit"
    );
    // The new process serves the same socket.
    assert_eq!(bed.switch.stats().ports.len(), 1);

    // The next message is the successor's STOPPING=1: the old process exited above
    // without one (systemd would have begun stopping the service), and the successor
    // said nothing before (it was not the main process yet).
    assert!(successor.stop(), "the new switch did not stop on SIGTERM");
    let stopping = notify.next(WAIT).expect("no notification at the stop");
    assert!(stopping.has("STOPPING=1"), "{stopping:?}");
    assert_eq!(stopping.pid, successor.pid(), "{stopping:?}");
}

/// A switch started as systemd starts a service whose stderr is the journal's stream:
/// `JOURNAL_STREAM` names its stderr, and the journal's socket is at
/// /run/systemd/journal/socket. That path is the test's own socket, in a mount
/// namespace of the switch's own (a tmpfs over /run there; the host's /run is untouched).
fn start_with_journal(
    journal_stream: impl FnOnce(&std::fs::File) -> String,
) -> (Switch, JournalSocket, std::path::PathBuf) {
    use std::ffi::CString;
    use std::os::unix::process::CommandExt;
    let journal = JournalSocket::new();
    let stderr_path = journal.dir.path.join("stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("creating the stderr file");
    let stream = journal_stream(&stderr);
    let target = CString::new(journal.path.to_str().expect("UTF-8 temp path")).unwrap();
    let port = unique("tj");
    let switch = Switch::start_configured(&["--port", &port], |command| {
        command.stderr(stderr).env("JOURNAL_STREAM", stream);
        // SAFETY: the hook runs in the forked child before exec and only makes system
        // calls on strings made before the fork.
        unsafe {
            command.pre_exec(move || {
                let check = |ret: libc::c_int| {
                    if ret == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                };
                check(libc::unshare(libc::CLONE_NEWNS))?;
                check(libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/run".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                ))?;
                check(libc::mkdir(c"/run/systemd".as_ptr(), 0o755))?;
                check(libc::mkdir(c"/run/systemd/journal".as_ptr(), 0o755))?;
                check(libc::symlink(
                    target.as_ptr(),
                    c"/run/systemd/journal/socket".as_ptr(),
                ))
            })
        };
    });
    (switch, journal, stderr_path)
}

/// The journal's native protocol socket (`systemd-journald.socket`), the test's own.
struct JournalSocket {
    socket: std::os::unix::net::UnixDatagram,
    path: std::path::PathBuf,
    dir: TempDir,
}

impl JournalSocket {
    fn new() -> Self {
        let dir = TempDir::new("tsjournal");
        let path = dir.path.join("journal.socket");
        let socket =
            std::os::unix::net::UnixDatagram::bind(&path).expect("binding the journal socket");
        Self { socket, path, dir }
    }

    /// The next journal entry with a MESSAGE, its fields decoded from the journal's
    /// native protocol (`systemd-journald.socket`'s `/run/systemd/journal/socket`): each
    /// field `NAME=value\n`, or, for values that may hold a newline, `NAME\n`, the
    /// length as 64-bit little-endian, the value and `\n`. (Entries here are small:
    /// none comes as a memfd.)
    fn next_entry(&self, timeout: Duration) -> Option<Vec<(String, String)>> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let len = self.socket.recv(&mut buf).ok()?;
            let fields = journal_fields(&buf[..len]);
            // tracing-journald first sends an empty datagram to see that the journal listens.
            if fields.iter().any(|(name, _)| name == "MESSAGE") {
                return Some(fields);
            }
        }
    }
}

fn journal_fields(mut data: &[u8]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    while !data.is_empty() {
        let end = data
            .iter()
            .position(|&b| b == b'\n')
            .expect("a field ends in a newline");
        let line = &data[..end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            let name = String::from_utf8_lossy(&line[..eq]).into_owned();
            fields.push((name, String::from_utf8_lossy(&line[eq + 1..]).into_owned()));
            data = &data[end + 1..];
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let rest = &data[end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let value = String::from_utf8_lossy(&rest[8..8 + len]).into_owned();
            assert_eq!(
                rest[8 + len],
                b'\n',
                "field {name} does not end in a newline"
            );
            fields.push((name, value));
            data = &rest[8 + len + 1..];
        }
    }
    fields
}

fn stream_of(file: &std::fs::File) -> String {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().expect("stat of the stderr file");
    format!("{}:{}", meta.dev(), meta.ino())
}

#[test]
fn under_systemd_the_log_goes_to_the_journal_natively() {
    require_root!();
    let (switch, journal, stderr) = start_with_journal(stream_of);
    let field = |entry: &[(String, String)], name: &str| {
        entry
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut entries = Vec::new();
    let dropped = loop {
        let Some(entry) = journal.next_entry(WAIT) else {
            let text = std::fs::read_to_string(&stderr).unwrap_or_default();
            panic!("no 'privileges dropped' entry in the journal: {entries:?}; stderr: {text}");
        };
        if field(&entry, "MESSAGE").as_deref() == Some("privileges dropped") {
            break entry;
        }
        entries.push(entry);
    };
    // Native: a priority (info is syslog's 6) and the event's fields of their own.
    assert_eq!(
        field(&dropped, "PRIORITY").as_deref(),
        Some("6"),
        "{dropped:?}"
    );
    assert_eq!(
        field(&dropped, "SYSLOG_IDENTIFIER").as_deref(),
        Some("tapswitch"),
        "{dropped:?}"
    );
    let kept = field(&dropped, "F_KEPT").unwrap_or_else(|| panic!("no F_KEPT: {dropped:?}"));
    assert!(kept.contains("CAP_NET_ADMIN"), "{dropped:?}");
    assert!(switch.stop(), "the switch did not stop cleanly");
    // Nothing of the log went to stderr as text (the counters table at exit does).
    let text = std::fs::read_to_string(&stderr).unwrap();
    assert!(!text.contains("privileges dropped"), "{text}");
}

#[test]
fn a_journal_stream_that_is_not_our_stderr_means_text_on_stderr() {
    require_root!();
    // What a child of a service whose stderr was redirected inherits.
    let (switch, _journal, stderr) = start_with_journal(|_| "1:1".to_owned());
    assert!(switch.stop(), "the switch did not stop cleanly");
    let text = std::fs::read_to_string(&stderr).unwrap();
    assert!(text.contains("privileges dropped"), "{text}");
}
