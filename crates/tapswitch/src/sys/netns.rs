//! Named network namespaces, compatible with `ip netns`.
//!
//! A named namespace is a bind mount of a namespace file onto `/run/netns/NAME`. The network
//! namespace is a per-thread attribute, so [`run_in`] enters it on a short-lived helper thread
//! and never disturbs the caller: sockets created there stay bound to that namespace for life.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Directory where iproute2 keeps its named network namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// `f_type` of the nsfs filesystem that namespace files live on (`<linux/magic.h>`).
const NSFS_MAGIC: libc::c_long = 0x6e73_6673;
/// `_IO(0xb7, 0x3)` of `<linux/nsfs.h>`: the `CLONE_NEW*` type of a namespace fd.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Longest namespace name: it becomes one path component.
const NAME_MAX: usize = 255;

/// Serialises the one-time "make /run/netns a shared mount" step: two racing creators would
/// otherwise stack two self bind mounts on it.
static RUN_DIR_SETUP: Mutex<()> = Mutex::new(());

/// Errors from naming, opening, entering, creating or deleting a network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The name cannot be a file name under `/run/netns`.
    #[error("invalid network namespace name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// No namespace of that name is mounted under `/run/netns`.
    #[error("network namespace {name:?} does not exist ({} not found)", netns_display_path(.name))]
    NotFound {
        /// The missing namespace.
        name: String,
    },
    /// `create` found a namespace (or a stale file) of that name already.
    #[error("network namespace {name:?} already exists")]
    AlreadyExists {
        /// The existing namespace.
        name: String,
    },
    /// `/run/netns/NAME` is not the bind mount of a network namespace: a symbolic link
    /// (which could lead anywhere), a plain file, or another kind of namespace.
    #[error("{} is not a network namespace: {reason}", netns_display_path(.name))]
    NotANamespace {
        /// The namespace asked for.
        name: String,
        /// What the file is instead.
        reason: &'static str,
    },
    /// A system call failed; `step` says which and on what.
    #[error("network namespace {name:?}: {step} failed: {source}")]
    Os {
        /// The namespace being worked on.
        name: String,
        /// What was being done, e.g. "setns(CLONE_NEWNET)".
        step: &'static str,
        /// The kernel's error.
        source: io::Error,
    },
}

impl NetnsError {
    fn os(name: &str, step: &'static str, source: io::Error) -> Self {
        Self::Os {
            name: name.to_owned(),
            step,
            source,
        }
    }
}

fn netns_display_path(name: &str) -> String {
    format!("{NETNS_RUN_DIR}/{name}")
}

/// Checks that `name` is usable as a namespace name: one non-empty path component, as
/// iproute2 requires.
pub fn validate_name(name: &str) -> Result<(), NetnsError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it is a relative directory reference")
    } else if name.contains('/') {
        Some("it contains '/'")
    } else if name.contains('\0') {
        Some("it contains a NUL byte")
    } else if name.len() > NAME_MAX {
        Some("it is longer than 255 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NetnsError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The bind-mount path of namespace `name` (`/run/netns/NAME`, as iproute2), after checking
/// the name cannot escape that directory.
pub fn netns_path(name: &str) -> Result<PathBuf, NetnsError> {
    validate_name(name)?;
    Ok(Path::new(NETNS_RUN_DIR).join(name))
}

/// An open handle on a network namespace, usable with `setns` or `IFLA_NET_NS_FD`.
#[derive(Debug)]
pub struct NetnsFd(OwnedFd);

impl NetnsFd {
    /// Opens the named namespace `/run/netns/NAME`: that file itself (never what a
    /// symbolic link there points to), and only if it is a network namespace.
    pub fn open(name: &str) -> Result<Self, NetnsError> {
        let path = netns_path(name)?;
        let not_a_namespace = |reason| NetnsError::NotANamespace {
            name: name.to_owned(),
            reason,
        };
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|source| match source.raw_os_error() {
                _ if source.kind() == io::ErrorKind::NotFound => NetnsError::NotFound {
                    name: name.to_owned(),
                },
                Some(libc::ELOOP) => not_a_namespace("it is a symbolic link"),
                _ => NetnsError::os(name, "opening the namespace file", source),
            })?;
        let fd = OwnedFd::from(file);
        // SAFETY: statfs is plain data; all-zero is a valid value for fstatfs to overwrite.
        let mut fs_info: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: fd is open for the call and fs_info is a live statfs it may write.
        if unsafe { libc::fstatfs(fd.as_raw_fd(), &raw mut fs_info) } != 0 {
            return Err(NetnsError::os(name, "fstatfs", io::Error::last_os_error()));
        }
        if fs_info.f_type != NSFS_MAGIC {
            return Err(not_a_namespace("it is a plain file, not a namespace mount"));
        }
        // SAFETY: NS_GET_NSTYPE takes no argument and returns the namespace type.
        let kind = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) };
        if kind != libc::CLONE_NEWNET {
            return Err(not_a_namespace("it is another kind of namespace"));
        }
        Ok(NetnsFd(fd))
    }

    /// Opens the network namespace of the calling thread.
    pub fn current() -> Result<Self, NetnsError> {
        open_ns_file(Path::new("/proc/thread-self/ns/net")).map_err(|source| {
            NetnsError::os("<current>", "opening /proc/thread-self/ns/net", source)
        })
    }

    /// The namespace's inode number (what `/proc/PID/ns/net` shows as `net:[INODE]`).
    pub fn inode(&self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(fs::File::from(self.0.try_clone()?).metadata()?.ino())
    }

    /// The raw descriptor, valid as long as `self` lives.
    pub fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl From<OwnedFd> for NetnsFd {
    /// A namespace descriptor from elsewhere, e.g. `tap::device_netns`.
    fn from(fd: OwnedFd) -> Self {
        Self(fd)
    }
}

/// Where a network namespace is, as far as names go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// The namespace this process's threads were started in.
    Own,
    /// Mounted as `/run/netns/NAME`.
    Named(String),
    /// Neither (e.g. a container's): its key [`unnamed_key`] of its inode.
    Unnamed(String),
}

/// The name a namespace without a `/run/netns` name is recorded under: `net:[INODE]`, as
/// `/proc/PID/ns/net` shows it. No `ip netns` name can be confused with it, and a
/// configuration naming it fails with "does not exist" rather than meaning another one.
pub fn unnamed_key(inode: u64) -> String {
    format!("net:[{inode}]")
}

/// Names namespace `netns`: ours, one under `/run/netns` (compared by device and inode,
/// which needs no privilege), or an unnamed one.
pub fn locate(netns: &NetnsFd) -> io::Result<Location> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::File::from(netns.0.try_clone()?).metadata()?;
    let same = |m: &fs::Metadata| m.dev() == meta.dev() && m.ino() == meta.ino();
    if fs::metadata("/proc/self/ns/net").is_ok_and(|m| same(&m)) {
        return Ok(Location::Own);
    }
    if let Ok(entries) = fs::read_dir(NETNS_RUN_DIR) {
        for entry in entries.flatten() {
            if fs::metadata(entry.path()).is_ok_and(|m| same(&m))
                && let Some(name) = entry.file_name().to_str()
            {
                return Ok(Location::Named(name.to_owned()));
            }
        }
    }
    Ok(Location::Unnamed(unnamed_key(meta.ino())))
}

impl AsFd for NetnsFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for NetnsFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

fn open_ns_file(path: &Path) -> io::Result<NetnsFd> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    Ok(NetnsFd(OwnedFd::from(file)))
}

/// Runs `f` on a short-lived thread that has entered network namespace `name`, and returns its
/// result. The calling thread's namespace is untouched; sockets `f` creates stay in `name`.
///
/// A panic in `f` is propagated to the caller.
pub fn run_in<F, R>(name: &str, f: F) -> Result<R, NetnsError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let netns = NetnsFd::open(name)?;
    on_helper_thread(name, move || {
        // SAFETY: `netns` is an open namespace descriptor owned for the whole call; setns only
        // reads it and changes the namespace of this helper thread alone.
        if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(NetnsError::os(
                name,
                "setns(CLONE_NEWNET)",
                io::Error::last_os_error(),
            ));
        }
        Ok(f())
    })
}

/// Runs `task` on a scoped helper thread so namespace changes die with that thread.
fn on_helper_thread<T, R>(name: &str, task: T) -> Result<R, NetnsError>
where
    T: FnOnce() -> Result<R, NetnsError> + Send,
    R: Send,
{
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn_scoped(scope, task)
            .map_err(|source| NetnsError::os(name, "spawning the helper thread", source))?;
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Creates named network namespace `name`, like `ip netns add NAME`.
pub fn create(name: &str) -> Result<(), NetnsError> {
    let path = netns_path(name)?;
    {
        let _setup = RUN_DIR_SETUP.lock().unwrap_or_else(|e| e.into_inner());
        make_run_dir_shared(name)?;
    }

    // The mount point must exist as a file; O_EXCL makes a concurrent or stale namesake an error
    // rather than something we silently mount over.
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                NetnsError::AlreadyExists {
                    name: name.to_owned(),
                }
            } else {
                NetnsError::os(name, "creating the mount point file", source)
            }
        })?;

    let target = path_cstring(&path);
    let mounted = on_helper_thread(name, || {
        // SAFETY: plain syscall without pointers; it only affects this helper thread, which
        // exits right after the bind mount below has pinned the new namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(NetnsError::os(
                name,
                "unshare(CLONE_NEWNET)",
                io::Error::last_os_error(),
            ));
        }
        let source = c"/proc/thread-self/ns/net";
        // SAFETY: both paths are NUL-terminated strings that outlive the call; a bind mount
        // ignores the filesystem type and data arguments, so null is allowed for them.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                c"none".as_ptr(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(NetnsError::os(
                name,
                "bind-mounting the new namespace",
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    });
    if mounted.is_err() {
        let _ = fs::remove_file(&path);
    }
    mounted
}

/// Creates `/run/netns` if needed and makes it a shared mount point, as iproute2 does, so
/// namespace mounts made here propagate to other mount namespaces (and vice versa).
fn make_run_dir_shared(name: &str) -> Result<(), NetnsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(NETNS_RUN_DIR)
        .map_err(|source| NetnsError::os(name, "creating /run/netns", source))?;
    let dir = path_cstring(Path::new(NETNS_RUN_DIR));
    let mut bound_onto_itself = false;
    loop {
        // SAFETY: `dir` is a NUL-terminated path that outlives the call; a propagation change
        // ignores source, type and data, so empty/null values are allowed for them.
        let rc = unsafe {
            libc::mount(
                c"".as_ptr(),
                dir.as_ptr(),
                c"none".as_ptr(),
                libc::MS_SHARED | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        // EINVAL means /run/netns is not a mount point yet: make it one, then retry once.
        if err.raw_os_error() != Some(libc::EINVAL) || bound_onto_itself {
            return Err(NetnsError::os(
                name,
                "making /run/netns a shared mount",
                err,
            ));
        }
        // SAFETY: `dir` is a NUL-terminated path that outlives the call; a bind mount ignores
        // type and data, so null is allowed for them.
        let rc = unsafe {
            libc::mount(
                dir.as_ptr(),
                dir.as_ptr(),
                c"none".as_ptr(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(NetnsError::os(
                name,
                "bind-mounting /run/netns onto itself",
                io::Error::last_os_error(),
            ));
        }
        bound_onto_itself = true;
    }
}

/// Deletes named network namespace `name`, like `ip netns del NAME`. The namespace itself
/// lives on while processes or descriptors still hold it.
pub fn delete(name: &str) -> Result<(), NetnsError> {
    let path = netns_path(name)?;
    let target = path_cstring(&path);
    // SAFETY: `target` is a NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOENT) => {
                return Err(NetnsError::NotFound {
                    name: name.to_owned(),
                });
            }
            // Not a mount point: a stale file left by a failed create; removing it is the fix.
            Some(libc::EINVAL) => {}
            _ => return Err(NetnsError::os(name, "unmounting the namespace", err)),
        }
    }
    fs::remove_file(&path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            NetnsError::NotFound {
                name: name.to_owned(),
            }
        } else {
            NetnsError::os(name, "removing the mount point file", source)
        }
    })
}

fn path_cstring(path: &Path) -> CString {
    // Names are validated to contain no NUL, and the directory part is a constant.
    CString::new(path.as_os_str().as_bytes()).expect("validated path has no NUL byte")
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Namespaces for tests: unique names, removed on drop even when the test fails.

    use std::sync::atomic::{AtomicU32, Ordering};

    static COUNTER: AtomicU32 = AtomicU32::new(0);

    /// A unique short name `{prefix}{pid}x{counter}`, within IFNAMSIZ-1 for short prefixes.
    pub(crate) fn unique_name(prefix: &str) -> String {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}{}x{n}", std::process::id());
        assert!(name.len() <= 15, "test name {name} exceeds IFNAMSIZ");
        name
    }

    /// Inode of the network namespace a socket belongs to (SIOCGSKNS), for comparing with the
    /// inode of `/run/netns/NAME`.
    pub(crate) fn socket_netns_inode(socket: std::os::fd::BorrowedFd<'_>) -> u64 {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::os::unix::fs::MetadataExt;
        // SAFETY: SIOCGSKNS takes no argument and returns a new descriptor or -1.
        let fd = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGSKNS) };
        assert!(fd >= 0, "SIOCGSKNS: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
        let ns = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        ns.metadata().unwrap().ino()
    }

    /// A network namespace created with [`super::create`], deleted on drop.
    pub(crate) struct TestNetns {
        pub(crate) name: String,
    }

    impl TestNetns {
        pub(crate) fn new() -> Self {
            let name = unique_name("tsn");
            super::create(&name).unwrap_or_else(|e| panic!("creating test netns: {e}"));
            Self { name }
        }
    }

    impl Drop for TestNetns {
        fn drop(&mut self) {
            match super::delete(&self.name) {
                Ok(()) | Err(super::NetnsError::NotFound { .. }) => {}
                Err(_) => {
                    let _ = std::process::Command::new("ip")
                        .args(["netns", "del", &self.name])
                        .output();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{TestNetns, socket_netns_inode, unique_name};
    use super::*;
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    fn ip_netns_list() -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("running ip netns list");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
            .collect()
    }

    fn ns_inode_of_thread() -> u64 {
        fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
    }

    #[test]
    fn netns_path_accepts_plain_names_and_rejects_escapes() {
        assert_eq!(
            netns_path("blue").unwrap(),
            PathBuf::from("/run/netns/blue")
        );
        for bad in ["", ".", "..", "a/b", "../etc", "x\0y", &"n".repeat(256)] {
            let err = netns_path(bad).unwrap_err();
            assert!(
                matches!(err, NetnsError::InvalidName { .. }),
                "{bad:?} gave {err}"
            );
        }
    }

    #[test]
    fn create_is_visible_to_iproute2_and_delete_removes_it() {
        let ns = TestNetns::new();
        assert!(
            ip_netns_list().contains(&ns.name),
            "ip netns list lacks {}",
            ns.name
        );

        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name, "ip", "-o", "link", "show"])
            .output()
            .unwrap();
        assert!(out.status.success(), "ip netns exec failed: {out:?}");
        let links = String::from_utf8_lossy(&out.stdout);
        // A fresh namespace holds only its loopback device.
        assert_eq!(links.lines().count(), 1, "unexpected links: {links}");
        assert!(links.contains("lo:"), "{links}");

        delete(&ns.name).unwrap();
        assert!(!netns_path(&ns.name).unwrap().exists());
        assert!(!ip_netns_list().contains(&ns.name));
        assert!(matches!(delete(&ns.name), Err(NetnsError::NotFound { .. })));
    }

    #[test]
    fn namespace_made_by_ip_can_be_opened_and_entered() {
        let name = unique_name("tsi");
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(status.success());
        struct IpNetns(String);
        impl Drop for IpNetns {
            fn drop(&mut self) {
                let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
            }
        }
        let _guard = IpNetns(name.clone());

        let expected = fs::metadata(netns_path(&name).unwrap()).unwrap().ino();
        assert_eq!(run_in(&name, ns_inode_of_thread).unwrap(), expected);
    }

    #[test]
    fn create_twice_is_an_error() {
        let ns = TestNetns::new();
        assert!(matches!(
            create(&ns.name),
            Err(NetnsError::AlreadyExists { .. })
        ));
    }

    #[test]
    fn run_in_enters_the_namespace_without_moving_the_caller() {
        let ns = TestNetns::new();
        let before = ns_inode_of_thread();
        let target = fs::metadata(netns_path(&ns.name).unwrap()).unwrap().ino();
        assert_ne!(before, target);

        let inside = run_in(&ns.name, ns_inode_of_thread).unwrap();
        assert_eq!(inside, target);
        assert_eq!(ns_inode_of_thread(), before);
    }

    #[test]
    fn sockets_made_in_run_in_stay_in_the_namespace() {
        let ns = TestNetns::new();
        let unbound = run_in(&ns.name, || {
            // SAFETY: plain socket(2) call; the result is checked before being owned.
            let fd =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
            // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .unwrap();
        let target = fs::metadata(netns_path(&ns.name).unwrap()).unwrap().ino();
        assert_eq!(socket_netns_inode(unbound.as_fd()), target);
        assert_ne!(target, ns_inode_of_thread());
    }

    #[test]
    fn run_in_a_missing_namespace_is_not_found() {
        let name = unique_name("tsm");
        assert!(matches!(
            run_in(&name, || ()),
            Err(NetnsError::NotFound { .. })
        ));
        assert!(matches!(
            NetnsFd::open(&name),
            Err(NetnsError::NotFound { .. })
        ));
    }

    /// Removes a file of this test under `/run/netns` on drop.
    struct RunDirFile(PathBuf);

    impl Drop for RunDirFile {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0);
        }
    }

    #[test]
    fn only_namespace_mounts_under_run_netns_are_opened() {
        let _ns = TestNetns::new(); // makes sure /run/netns exists
        // A link to the host's own namespace: never followed.
        let link = unique_name("tsl");
        let link_file = RunDirFile(netns_path(&link).unwrap());
        std::os::unix::fs::symlink("/proc/1/ns/net", &link_file.0).unwrap();
        let error = NetnsFd::open(&link).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("/run/netns/{link} is not a network namespace: it is a symbolic link")
        );
        assert!(run_in(&link, || ()).is_err());
        // A plain file (a mount point whose mount is gone).
        let plain = unique_name("tsp");
        let plain_file = RunDirFile(netns_path(&plain).unwrap());
        fs::write(&plain_file.0, b"").unwrap();
        let error = NetnsFd::open(&plain).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "/run/netns/{plain} is not a network namespace: it is a plain file, not a namespace mount"
            )
        );
    }

    #[test]
    fn current_matches_the_thread_namespace() {
        let fd = NetnsFd::current().unwrap();
        let ino = fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap()
            .ino();
        assert_eq!(ino, ns_inode_of_thread());
    }
}
