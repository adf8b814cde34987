//! Least privilege: once its TAPs are open and its sockets bound, the daemon
//! keeps only the capabilities later work needs (CAP_NET_ADMIN to create TAPs
//! and configure links; CAP_SYS_ADMIN too when ports may be added in other
//! network namespaces at runtime, because entering one takes `setns`; CAP_CHOWN
//! when VM ports may be added, to give a macvtap's `/dev/tapN` to QEMU), and
//! optionally becomes an unprivileged user.
//!
//! Capabilities are per thread and inherited by threads created later, so the
//! drop must happen while the process has a single thread: [`drop_privileges`]
//! refuses otherwise instead of leaving some threads privileged.
//!
//! Reading another process's capabilities (`/proc/PID/status`) lives here too,
//! for `tapswitch doctor` and the tests.

use std::ffi::CString;
use std::fmt;
use std::io;

use serde::{Serialize, Serializer};
use thiserror::Error;

/// `CAP_CHOWN`: give a file to another user (a VM port's `/dev/tapN` to QEMU's).
pub const CAP_CHOWN: u32 = 0;
/// `CAP_SETGID`: change group ids.
pub const CAP_SETGID: u32 = 6;
/// `CAP_SETUID`: change user ids.
pub const CAP_SETUID: u32 = 7;
/// `CAP_SETPCAP`: shrink the bounding set.
pub const CAP_SETPCAP: u32 = 8;
/// `CAP_NET_ADMIN`: create TAPs (`TUNSETIFF`), configure links over netlink.
pub const CAP_NET_ADMIN: u32 = 12;
/// `CAP_NET_RAW`: `AF_PACKET` sockets (netdev ports). VXLAN ports use plain UDP sockets.
pub const CAP_NET_RAW: u32 = 13;
/// `CAP_SYS_ADMIN`: `setns` into a network namespace.
pub const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_SYS_NICE`: `SCHED_FIFO` for the dataplane threads (`switch.realtime_priority`).
pub const CAP_SYS_NICE: u32 = 23;

/// Capability names in bit order, as `capabilities(7)` spells them.
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets as two 32-bit words.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Errors while dropping or reading privileges; each names the step.
#[derive(Debug, Error)]
pub enum PrivilegeError {
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    #[error("no group named {0:?}")]
    NoSuchGroup(String),
    #[error("looking up {what} {name:?}: {source}")]
    Lookup {
        what: &'static str,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "dropping privileges needs a single-threaded process, but {threads} threads run \
         (threads started before the drop would keep every capability)"
    )]
    Threaded { threads: usize },
    #[error(
        "switching to uid {uid} / gid {gid} needs CAP_SETUID and CAP_SETGID, which this process lacks"
    )]
    CannotSwitchUser { uid: u32, gid: u32 },
    #[error("dropping privileges: {step} failed: {source}")]
    Syscall {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {reason}")]
    BadStatus { path: String, reason: String },
}

/// A set of capabilities, one bit per capability number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSet(pub u64);

impl CapSet {
    /// The set holding exactly `caps`.
    pub fn of(caps: &[u32]) -> Self {
        Self(caps.iter().fold(0, |set, &cap| set | 1 << cap))
    }

    pub fn contains(self, cap: u32) -> bool {
        cap < 64 && self.0 & (1 << cap) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Capabilities in both sets.
    pub fn intersect(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// Capabilities in `self` but not in `other`.
    pub fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// Names of the members, in bit order (`CAP_40`-style for ones unknown here).
    pub fn names(self) -> Vec<String> {
        (0..64)
            .filter(|&cap| self.contains(cap))
            .map(|cap| match NAMES.get(cap as usize) {
                Some(name) => (*name).to_owned(),
                None => format!("CAP_{cap}"),
            })
            .collect()
    }

    /// Parses the hex masks of `/proc/PID/status` (`CapEff:\t0000000000001000`).
    pub fn from_hex(text: &str) -> Option<Self> {
        u64::from_str_radix(text.trim(), 16).ok().map(Self)
    }
}

impl fmt::Display for CapSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("(none)");
        }
        f.write_str(&self.names().join(","))
    }
}

/// Serialised as the list of names, which scripts can compare without bit tables.
impl Serialize for CapSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(serializer)
    }
}

/// Credentials and capabilities of a process, from `/proc/PID/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessPrivileges {
    pub pid: u32,
    /// Effective user and group id.
    pub uid: u32,
    pub gid: u32,
    pub effective: CapSet,
    pub permitted: CapSet,
    pub bounding: CapSet,
    pub ambient: CapSet,
}

/// The process's effective user id (0 when it runs as root).
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Parses the text of `/proc/PID/status`.
pub fn parse_status(pid: u32, text: &str) -> Result<ProcessPrivileges, String> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .ok_or_else(|| format!("no {name} line"))
    };
    let caps = |name: &str| {
        let value = field(name)?;
        CapSet::from_hex(value).ok_or_else(|| format!("{name} {value:?} is not a hex mask"))
    };
    // "Uid:\treal\teffective\tsaved\tfs": the effective id decides permissions.
    let effective_id = |name: &str| {
        let value = field(name)?;
        value
            .split_whitespace()
            .nth(1)
            .and_then(|id| id.parse::<u32>().ok())
            .ok_or_else(|| format!("{name} {value:?} has no effective id"))
    };
    Ok(ProcessPrivileges {
        pid,
        uid: effective_id("Uid")?,
        gid: effective_id("Gid")?,
        effective: caps("CapEff")?,
        permitted: caps("CapPrm")?,
        bounding: caps("CapBnd")?,
        // Absent before Linux 4.3: nobody can have had ambient capabilities then.
        ambient: caps("CapAmb").unwrap_or_default(),
    })
}

/// Reads the privileges of process `pid` (of its main thread).
pub fn read_process(pid: u32) -> Result<ProcessPrivileges, PrivilegeError> {
    read_status_file(pid, &format!("/proc/{pid}/status"))
}

/// Reads the privileges of every thread of process `pid`: they can differ.
pub fn read_threads(pid: u32) -> Result<Vec<ProcessPrivileges>, PrivilegeError> {
    let dir = format!("/proc/{pid}/task");
    let entries = std::fs::read_dir(&dir).map_err(|source| PrivilegeError::Read {
        path: dir.clone(),
        source,
    })?;
    let mut threads = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| PrivilegeError::Read {
            path: dir.clone(),
            source,
        })?;
        let tid = entry.file_name().to_string_lossy().parse().unwrap_or(pid);
        let path = format!("{dir}/{}/status", entry.file_name().to_string_lossy());
        match read_status_file(tid, &path) {
            Ok(thread) => threads.push(thread),
            // The thread ended between listing and reading.
            Err(PrivilegeError::Read { source, .. })
                if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(threads)
}

fn read_status_file(pid: u32, path: &str) -> Result<ProcessPrivileges, PrivilegeError> {
    let text = std::fs::read_to_string(path).map_err(|source| PrivilegeError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_status(pid, &text).map_err(|reason| PrivilegeError::BadStatus {
        path: path.to_owned(),
        reason,
    })
}

/// The user and group to run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// Looks up `user` (and `group`, else the user's primary group) in the
/// system's user database.
pub fn resolve_identity(user: &str, group: Option<&str>) -> Result<Identity, PrivilegeError> {
    let (uid, primary_gid) = lookup_user(user)?;
    let gid = match group {
        Some(group) => lookup_group(group)?,
        None => primary_gid,
    };
    Ok(Identity { uid, gid })
}

/// The uid of `user`: a user name, or a number taken as it is (as `chown` does).
pub fn user_id(user: &str) -> Result<u32, PrivilegeError> {
    match user.parse() {
        Ok(uid) => Ok(uid),
        Err(_) => lookup_user(user).map(|(uid, _)| uid),
    }
}

/// The gid of `group`: a group name, or a number taken as it is.
pub fn group_id(group: &str) -> Result<u32, PrivilegeError> {
    match group.parse() {
        Ok(gid) => Ok(gid),
        Err(_) => lookup_group(group),
    }
}

/// Enough room for any passwd or group entry of a normal system.
const LOOKUP_BUFFER_LEN: usize = 16 * 1024;

fn lookup_error(what: &'static str, name: &str, source: io::Error) -> PrivilegeError {
    PrivilegeError::Lookup {
        what,
        name: name.to_owned(),
        source,
    }
}

/// `user`'s uid and primary gid (getpwnam_r).
fn lookup_user(user: &str) -> Result<(u32, u32), PrivilegeError> {
    let c_user = CString::new(user)
        .map_err(|_| lookup_error("user", user, io::ErrorKind::InvalidInput.into()))?;
    let mut buffer = vec![0u8; LOOKUP_BUFFER_LEN];
    // SAFETY: passwd is plain data; all-zero is a valid value to be overwritten.
    let mut passwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live local of the right type; the buffer's
    // length is passed with it; getpwnam_r writes only within them.
    let ret = unsafe {
        libc::getpwnam_r(
            c_user.as_ptr(),
            &mut passwd,
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            &mut found,
        )
    };
    if ret != 0 {
        return Err(lookup_error(
            "user",
            user,
            io::Error::from_raw_os_error(ret),
        ));
    }
    if found.is_null() {
        return Err(PrivilegeError::NoSuchUser(user.to_owned()));
    }
    Ok((passwd.pw_uid, passwd.pw_gid))
}

/// `group`'s gid (getgrnam_r).
fn lookup_group(group: &str) -> Result<u32, PrivilegeError> {
    let c_group = CString::new(group)
        .map_err(|_| lookup_error("group", group, io::ErrorKind::InvalidInput.into()))?;
    let mut buffer = vec![0u8; LOOKUP_BUFFER_LEN];
    // SAFETY: group is plain data; all-zero is a valid value to be overwritten.
    let mut entry: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live local of the right type; the buffer's
    // length is passed with it; getgrnam_r writes only within them.
    let ret = unsafe {
        libc::getgrnam_r(
            c_group.as_ptr(),
            &mut entry,
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            &mut found,
        )
    };
    if ret != 0 {
        return Err(lookup_error(
            "group",
            group,
            io::Error::from_raw_os_error(ret),
        ));
    }
    if found.is_null() {
        return Err(PrivilegeError::NoSuchGroup(group.to_owned()));
    }
    Ok(entry.gr_gid)
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`; version 3 takes two (low and high 32 bits).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's (effective, permitted) capabilities.
pub fn current_thread_caps() -> Result<(CapSet, CapSet), PrivilegeError> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget reads the header and writes two CapData (version 3) through
    // pointers to live locals of exactly those layouts.
    let ret = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if ret != 0 {
        return Err(syscall_error("capget"));
    }
    let join = |low: u32, high: u32| CapSet(u64::from(low) | u64::from(high) << 32);
    Ok((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
    ))
}

/// Whether the calling thread has `cap` in its effective set (false if unreadable).
pub fn thread_has(cap: u32) -> bool {
    current_thread_caps().is_ok_and(|(effective, _)| effective.contains(cap))
}

/// Sets the calling thread's effective and permitted sets to `caps`.
pub(crate) fn set_thread_caps(caps: CapSet) -> Result<(), PrivilegeError> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let low = caps.0 as u32;
    let high = (caps.0 >> 32) as u32;
    let data = [
        CapData {
            effective: low,
            permitted: low,
            inheritable: 0,
        },
        CapData {
            effective: high,
            permitted: high,
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads the header and two CapData (version 3) from live locals
    // of exactly those layouts.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if ret != 0 {
        return Err(syscall_error("capset"));
    }
    Ok(())
}

fn syscall_error(step: &'static str) -> PrivilegeError {
    PrivilegeError::Syscall {
        step,
        source: io::Error::last_os_error(),
    }
}

fn prctl(
    step: &'static str,
    option: libc::c_int,
    arg: libc::c_ulong,
) -> Result<(), PrivilegeError> {
    // SAFETY: the options used here take integer arguments only and touch no memory of ours.
    let ret = unsafe { libc::prctl(option, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0) };
    if ret != 0 {
        return Err(syscall_error(step));
    }
    Ok(())
}

/// Threads of this process, from `/proc/self/task`.
fn thread_count() -> Result<usize, PrivilegeError> {
    std::fs::read_dir("/proc/self/task")
        .map(Iterator::count)
        .map_err(|source| PrivilegeError::Read {
            path: "/proc/self/task".into(),
            source,
        })
}

/// Highest capability number this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(NAMES.len() as u32 - 1)
}

/// What [`drop_privileges`] left in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// The effective (= permitted) capabilities now.
    pub kept: CapSet,
    /// Asked for but not held to begin with, so not kept.
    pub missing: CapSet,
    /// Now running as this user and group, if one was asked for.
    pub identity: Option<Identity>,
}

/// Lets the capabilities this thread holds survive an `execve` by a
/// non-root user: inheritable = permitted, then each raised into the ambient
/// set. Meant for a `pre_exec` hook (the forked child of `tapswitch upgrade`):
/// only system calls, no allocation. For root it changes nothing that matters.
pub fn keep_across_exec() -> io::Result<()> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget reads the header and writes two CapData (version 3) through
    // pointers to live locals of exactly those layouts.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    for half in &mut data {
        half.inheritable = half.permitted;
    }
    // SAFETY: capset reads the header and two CapData from live locals.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let permitted = u64::from(data[0].permitted) | u64::from(data[1].permitted) << 32;
    for cap in (0..64).filter(|cap| permitted & (1 << cap) != 0) {
        // SAFETY: prctl with integer arguments only.
        let ret = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                cap as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Reduces this (single-threaded) process to `keep` ∩ what it holds, with an
/// empty inheritable and ambient set and, when allowed, a bounding set of
/// `keep`; first switches to `identity` if given, keeping capabilities across
/// the switch (`PR_SET_KEEPCAPS`).
pub fn drop_privileges(
    keep: CapSet,
    identity: Option<&Identity>,
) -> Result<Dropped, PrivilegeError> {
    // A helper thread that was just joined can stay listed for a moment.
    let mut threads = thread_count()?;
    for _ in 0..50 {
        if threads == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        threads = thread_count()?;
    }
    if threads != 1 {
        return Err(PrivilegeError::Threaded { threads });
    }
    let (effective, permitted) = current_thread_caps()?;
    let kept = keep.intersect(permitted);
    // An old kernel without ambient capabilities has none to clear.
    let _ = prctl(
        "clearing ambient capabilities",
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    );
    // Without CAP_SETPCAP (e.g. started unprivileged by systemd, whose
    // CapabilityBoundingSet already did this) the bounding set stays as it is.
    if effective.contains(CAP_SETPCAP) {
        for cap in (0..=last_cap()).filter(|&cap| !kept.contains(cap)) {
            prctl(
                "shrinking the bounding set",
                libc::PR_CAPBSET_DROP,
                cap.into(),
            )?;
        }
    }
    // A process started by `upgrade` already runs as the identity.
    // SAFETY: getuid/getgid cannot fail.
    let already =
        identity.is_some_and(|i| unsafe { libc::getuid() == i.uid && libc::getgid() == i.gid });
    if let Some(identity) = identity.filter(|_| !already) {
        if !(effective.contains(CAP_SETUID) && effective.contains(CAP_SETGID)) {
            return Err(PrivilegeError::CannotSwitchUser {
                uid: identity.uid,
                gid: identity.gid,
            });
        }
        prctl("PR_SET_KEEPCAPS", libc::PR_SET_KEEPCAPS, 1)?;
        let groups = [identity.gid];
        // SAFETY: setgroups reads one gid from a live array whose length is passed.
        if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
            return Err(syscall_error("setgroups"));
        }
        let (uid, gid) = (identity.uid, identity.gid);
        // SAFETY: setresgid/setresuid take plain integers.
        if unsafe { libc::setresgid(gid, gid, gid) } != 0 {
            return Err(syscall_error("setresgid"));
        }
        // SAFETY: as above.
        if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
            return Err(syscall_error("setresuid"));
        }
        prctl("PR_SET_KEEPCAPS off", libc::PR_SET_KEEPCAPS, 0)?;
    }
    set_thread_caps(kept)?;
    let (effective, permitted) = current_thread_caps()?;
    if effective != kept || permitted != kept {
        return Err(PrivilegeError::Syscall {
            step: "verifying the capability sets",
            source: io::Error::other(format!(
                "effective {effective}, permitted {permitted}, wanted {kept}"
            )),
        });
    }
    Ok(Dropped {
        kept,
        missing: keep.without(permitted),
        identity: identity.cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\ttapswitch\nUmask:\t0022\nState:\tS (sleeping)\n\
        Uid:\t0\t65534\t65534\t65534\nGid:\t0\t65534\t65534\t65534\n\
        CapInh:\t0000000000000000\nCapPrm:\t0000000000201000\nCapEff:\t0000000000001000\n\
        CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\n";

    #[test]
    fn status_lines_give_ids_and_sets() {
        let status = parse_status(7, STATUS).unwrap();
        assert_eq!((status.pid, status.uid, status.gid), (7, 65534, 65534));
        assert_eq!(status.effective, CapSet::of(&[CAP_NET_ADMIN]));
        assert_eq!(
            status.permitted,
            CapSet::of(&[CAP_NET_ADMIN, CAP_SYS_ADMIN])
        );
        assert_eq!(status.bounding.names().len(), 41);
        assert!(status.ambient.is_empty());
    }

    #[test]
    fn bad_status_names_the_line() {
        let err = parse_status(1, "Uid:\t0\t0\t0\t0\n").unwrap_err();
        assert!(err.contains("Gid"), "{err}");
        let broken = STATUS.replace("CapEff:\t0000000000001000", "CapEff:\tzz");
        let err = parse_status(1, &broken).unwrap_err();
        assert!(err.contains("CapEff \"\\tzz\""), "{err}");
    }

    #[test]
    fn sets_print_and_serialise_as_names() {
        let set = CapSet::of(&[CAP_SYS_ADMIN, CAP_NET_ADMIN]);
        assert_eq!(set.to_string(), "CAP_NET_ADMIN,CAP_SYS_ADMIN");
        assert_eq!(
            serde_json::to_value(set).unwrap(),
            serde_json::json!(["CAP_NET_ADMIN", "CAP_SYS_ADMIN"])
        );
        assert_eq!(CapSet::default().to_string(), "(none)");
        assert_eq!(CapSet(1 << 50).names(), ["CAP_50"]);
        assert_eq!(set.without(CapSet::of(&[CAP_SYS_ADMIN])), CapSet::of(&[12]));
    }

    #[test]
    fn this_thread_caps_match_proc() {
        let (effective, permitted) = current_thread_caps().unwrap();
        // The test harness runs tests on threads; each reads its own task status.
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let own = read_status_file(tid as u32, "/proc/thread-self/status").unwrap();
        assert_eq!((effective, permitted), (own.effective, own.permitted));
    }

    #[test]
    fn users_resolve_from_the_user_database() {
        let root = resolve_identity("root", None).unwrap();
        assert_eq!(root, Identity { uid: 0, gid: 0 });
        let nobody = resolve_identity("nobody", Some("root")).unwrap();
        assert_eq!(nobody.gid, 0);
        assert_ne!(nobody.uid, 0);
        assert!(matches!(
            resolve_identity("no-such-user-here", None),
            Err(PrivilegeError::NoSuchUser(_))
        ));
        assert!(matches!(
            resolve_identity("root", Some("no-such-group-here")),
            Err(PrivilegeError::NoSuchGroup(_))
        ));
    }

    #[test]
    fn dropping_refuses_a_threaded_process() {
        // The test harness itself runs several threads.
        let other =
            std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
        let err = drop_privileges(CapSet::of(&[CAP_NET_ADMIN]), None).unwrap_err();
        assert!(matches!(err, PrivilegeError::Threaded { .. }), "{err}");
        other.join().unwrap();
    }
}
