//! The switch's runtime state on disk, so that a switch restarted after a
//! crash (SIGKILL, OOM, a reboot) comes back as it was: the ports added at
//! runtime, with their whole configuration, and the MAC table.
//!
//! The ports of the configuration file are not recorded: the file says what
//! they are. The MAC table entries use the `upgrade` handover's form
//! ([`HandedEntry`]: port by name, age), plus the time the file was written,
//! so learned entries keep ageing while the switch is down.
//!
//! Written atomically (a temporary file, `fsync`, `rename`, `fsync` of the
//! directory): a crash leaves the old file or the new one, never half of
//! one. A file that does not parse is renamed aside for inspection, and the
//! switch starts without it.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::PortConfig;
use crate::fdb::{EntryKind, VlanId};
use crate::upgrade::HandedEntry;
use crate::wire::MacAddr;

/// Where the state file lives when `switch.state_dir` is unset.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tapswitch";

/// The file's name in the state directory.
pub const STATE_FILE: &str = "state.json";

/// The lock file in the state directory: `flock`ed by the switch that uses the directory,
/// for its whole life, and holding its PID (for the error a second switch gets).
pub const LOCK_FILE: &str = "lock";

/// How often the MAC table is written when it changed (ports are written at
/// once, on every change).
pub const SAVE_INTERVAL: Duration = Duration::from_secs(5);

/// The document version this switch writes and reads.
const VERSION: u32 = 1;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("creating the state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("giving the state directory {path} to the switch user: {source}")]
    Chown {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the state directory {dir} is in use by another tapswitch ({holder}); two switches \
         must not share one (their state files would overwrite each other): give this one \
         its own --state-dir (or switch.state_dir)"
    )]
    Locked { dir: PathBuf, holder: String },
    #[error("locking the state directory ({path}): {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the state file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the state file {path} is unreadable ({reason}); it was kept as {kept} and the switch \
         starts without it"
    )]
    Corrupt {
        path: PathBuf,
        kept: PathBuf,
        reason: String,
    },
    #[error("writing the state file {path}: {step}: {source}")]
    Write {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

/// What the state file holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SavedState {
    pub version: u32,
    /// When it was written, in milliseconds since the Unix epoch.
    pub saved_at_ms: u64,
    /// Ports added at runtime (`port add`), as they are now, in the order added.
    pub ports: Vec<PortConfig>,
    /// The MAC table, static and learned entries.
    pub fdb: Vec<HandedEntry>,
}

impl SavedState {
    /// The state of now.
    pub fn new(ports: Vec<PortConfig>, fdb: Vec<HandedEntry>) -> Self {
        Self {
            version: VERSION,
            saved_at_ms: unix_ms(SystemTime::now()),
            ports,
            fdb,
        }
    }

    /// How long ago it was written (zero if the clock went back).
    pub fn age(&self) -> Duration {
        Duration::from_millis(unix_ms(SystemTime::now()).saturating_sub(self.saved_at_ms))
    }

    /// Whether `self` says the same as `other` up to the passing of time: the
    /// same ports and entries, each entry last seen at the same second. An idle
    /// switch's file is then not rewritten just because its entries got older.
    pub fn same_as(&self, other: &SavedState) -> bool {
        self.ports == other.ports && self.entries() == other.entries()
    }

    fn entries(&self) -> Vec<(VlanId, MacAddr, &str, EntryKind, u64)> {
        self.fdb
            .iter()
            .map(|entry| {
                let last_seen_s = self.saved_at_ms.saturating_sub(entry.age_ms) / 1000;
                (
                    entry.vlan,
                    entry.mac,
                    entry.port.as_str(),
                    entry.kind,
                    last_seen_s,
                )
            })
            .collect()
    }
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// The state directory of one switch, locked for it ([`LOCK_FILE`]) while this lives.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    /// The lock file, `flock`ed: the lock goes with the last fd of this open file.
    lock: File,
}

impl StateDir {
    /// Creates `dir` (mode 0700) if needed. `owner` (uid, gid): the user the
    /// switch becomes after setup, who must still be able to write there.
    /// Then takes the directory's lock: [`StateError::Locked`] (naming the holder's
    /// PID) when another switch holds it.
    pub fn open(dir: &Path, owner: Option<(u32, u32)>) -> Result<Self, StateError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StateError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|source| {
                StateError::Chown {
                    path: dir.to_owned(),
                    source,
                }
            })?;
        }
        let path = dir.join(LOCK_FILE);
        let lock_error = |source| StateError::Lock {
            path: path.clone(),
            source,
        };
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(lock_error)?;
        if !crate::sys::lock::try_lock_exclusive(&lock).map_err(lock_error)? {
            let holder = fs::read_to_string(&path)
                .ok()
                .and_then(|text| text.trim().parse::<u32>().ok())
                .map_or_else(|| "PID unknown".to_owned(), |pid| format!("pid {pid}"));
            return Err(StateError::Locked {
                dir: dir.to_owned(),
                holder,
            });
        }
        Self::adopt(dir, lock)
    }

    /// The directory `dir` whose lock this process already holds through `lock` (the
    /// lock file's fd, handed over by the switch `upgrade` replaces); records our PID.
    pub fn adopt(dir: &Path, lock: File) -> Result<Self, StateError> {
        let path = dir.join(LOCK_FILE);
        // Only the holder writes the file; readers parse what they find.
        (|| {
            lock.set_len(0)?;
            lock.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)
        })()
        .map_err(|source| StateError::Lock { path, source })?;
        Ok(Self {
            dir: dir.to_owned(),
            lock,
        })
    }

    /// The lock file's fd, to hand over with the rest (`upgrade`).
    pub fn lock_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.lock.as_fd()
    }

    /// The state file's path.
    pub fn file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The saved state, `None` when there is none. A file that does not parse
    /// (or is of another version) is renamed aside and reported as
    /// [`StateError::Corrupt`].
    pub fn load(&self) -> Result<Option<SavedState>, StateError> {
        let path = self.file();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let reason = match serde_json::from_slice::<SavedState>(&bytes) {
            Ok(state) if state.version == VERSION => return Ok(Some(state)),
            Ok(state) => format!(
                "version {} (this switch reads version {VERSION})",
                state.version
            ),
            Err(e) => e.to_string(),
        };
        let kept = self.dir.join(format!(
            "{STATE_FILE}.unreadable-{}",
            unix_ms(SystemTime::now()) / 1000
        ));
        fs::rename(&path, &kept).map_err(|source| StateError::Read {
            path: path.clone(),
            source,
        })?;
        Err(StateError::Corrupt { path, kept, reason })
    }

    /// Writes `state` atomically: a crash leaves the old file or the new one.
    pub fn save(&self, state: &SavedState) -> Result<(), StateError> {
        let path = self.file();
        let temporary = self.dir.join(format!("{STATE_FILE}.tmp"));
        let write_error = |step, source| StateError::Write {
            path: path.clone(),
            step,
            source,
        };
        let json = serde_json::to_vec_pretty(state).expect("the state serialises to JSON");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(|e| write_error("creating the temporary file", e))?;
        file.write_all(&json)
            .and_then(|()| file.write_all(b"\n"))
            .map_err(|e| write_error("writing", e))?;
        file.sync_all().map_err(|e| write_error("fsync", e))?;
        drop(file);
        fs::rename(&temporary, &path).map_err(|e| write_error("rename", e))?;
        // The rename itself is durable only once the directory is.
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| write_error("fsync of the directory", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(mac: u8, port: &str, age_ms: u64) -> HandedEntry {
        HandedEntry {
            vlan: 0,
            mac: MacAddr([2, 0, 0, 0, 0, mac]),
            port: port.to_owned(),
            kind: EntryKind::Dynamic,
            age_ms,
            remote: None,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tsw-state-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_saved_state_loads_back_and_the_file_is_private() {
        let dir = temp_dir("roundtrip");
        let store = StateDir::open(&dir.join("nested"), None).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let port: PortConfig = "tap9@ns9".parse().unwrap();
        let state = SavedState::new(vec![port], vec![entry(1, "tap9", 1500)]);
        store.save(&state).unwrap();
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), Some(state));
        let mode = |path: &Path| {
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(path).unwrap().permissions())
                & 0o777
        };
        assert_eq!(mode(&store.file()), 0o600);
        assert_eq!(mode(&dir.join("nested")), 0o700);
        assert!(!dir.join("nested").join("state.json.tmp").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_kept_aside_and_reported() {
        let dir = temp_dir("corrupt");
        let store = StateDir::open(&dir, None).unwrap();
        let full = serde_json::to_string(&SavedState::new(vec![], vec![entry(1, "a", 0)])).unwrap();
        // A file cut short, as a disk that lied about fsync might leave it.
        fs::write(store.file(), &full[..full.len() / 2]).unwrap();
        let err = store.load().unwrap_err();
        let StateError::Corrupt { kept, .. } = &err else {
            panic!("not reported as corrupt: {err}")
        };
        assert!(err.to_string().contains("starts without it"), "{err}");
        assert_eq!(fs::read_to_string(kept).unwrap(), full[..full.len() / 2]);
        assert!(!store.file().exists());
        assert_eq!(store.load().unwrap(), None);

        fs::write(store.file(), full.replace("\"version\":1", "\"version\":7")).unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("version 7"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_new_facts_make_a_state_different() {
        let mut a = SavedState::new(vec![], vec![entry(1, "p", 200), entry(2, "p", 0)]);
        a.saved_at_ms = 10_000;
        // Three seconds later, nothing seen since: the same.
        let mut later = a.clone();
        later.saved_at_ms = 13_000;
        later.fdb[0].age_ms += 3000;
        later.fdb[1].age_ms += 3000;
        assert!(later.same_as(&a));
        // MAC 2 was seen again.
        later.fdb[1].age_ms = 0;
        assert!(!later.same_as(&a));
        let mut moved = a.clone();
        moved.fdb[0].port = "q".into();
        assert!(!moved.same_as(&a));
    }
}
