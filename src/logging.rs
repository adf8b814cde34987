//! Where the log goes: the systemd journal, natively (fields and priorities, not
//! text lines), when this process's stderr is the journal's stream; plain text on
//! stderr otherwise.
//!
//! systemd sets `JOURNAL_STREAM=DEVICE:INODE` for a service whose stderr it
//! connected to the journal. The variable is inherited by children whose stderr
//! may go elsewhere (a shell redirect), so, as `systemd.exec(5)` advises, it
//! counts only when it names the stderr this process really has.

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;

use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber; the filter is `RUST_LOG`, `info` by default.
pub fn init() {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_the_journal() {
        // Fails when nobody listens on the journal's socket: then text, still to the journal.
        if let Ok(journald) = tracing_journald::layer() {
            tracing_subscriber::registry()
                .with(filter())
                .with(
                    journald
                        .with_syslog_identifier("tapswitch".to_owned())
                        .with_priority_mappings(priorities()),
                )
                .init();
            return;
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::stderr().is_terminal())
        // A log line that cannot be written (the terminal of a foreground `run` was
        // closed: EIO) is lost, not reported on that same stderr, which would panic.
        .log_internal_errors(false)
        .init();
}

/// syslog's levels as `journalctl -p` filters them: the switch's routine `info` lines
/// (a port added, a MAC moved) are informational, not notices.
fn priorities() -> PriorityMappings {
    PriorityMappings {
        error: Priority::Error,
        warn: Priority::Warning,
        info: Priority::Informational,
        debug: Priority::Debug,
        trace: Priority::Debug,
    }
}

/// Whether `JOURNAL_STREAM` names the device and inode of our stderr.
fn stderr_is_the_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    // The stream is a socket: /proc/self/fd/2 is how std stats an fd that has no path.
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream
        .to_str()
        .and_then(parse_stream)
        .is_some_and(|(dev, ino)| dev == stderr.dev() && ino == stderr.ino())
}

/// `DEVICE:INODE`, both decimal, as systemd writes `JOURNAL_STREAM`.
fn parse_stream(text: &str) -> Option<(u64, u64)> {
    let (dev, ino) = text.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_is_device_colon_inode() {
        assert_eq!(parse_stream("8:123456"), Some((8, 123456)));
        assert_eq!(parse_stream("8"), None);
        assert_eq!(parse_stream("8:x"), None);
        assert_eq!(parse_stream(":1"), None);
    }
}
