//! TAP devices opened through `/dev/net/tun`.
//!
//! tapswitch holds the *wire side* of each port TAP (the file descriptor); the
//! endpoint lives on the *kernel side* (the netdev), which the caller may move
//! into a network namespace. Everything here is plain `ioctl`s on the fd; link
//! settings such as MTU, MAC and up/down are netlink's job (see `link`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use thiserror::Error;

/// Constants from `linux/if_tun.h`. Kept here rather than taken from `libc`
/// so the crate does not depend on which `libc` release carries them; they are
/// kernel ABI and never change.
mod sys {
    use libc::{c_int, c_uint, c_ulong};

    pub const IFF_TAP: c_int = 0x0002;
    pub const IFF_MULTI_QUEUE: c_int = 0x0100;
    pub const IFF_NO_PI: c_int = 0x1000;
    pub const IFF_VNET_HDR: c_int = 0x4000;

    pub const TUN_F_CSUM: c_uint = 0x01;
    pub const TUN_F_TSO4: c_uint = 0x02;
    pub const TUN_F_TSO6: c_uint = 0x04;
    pub const TUN_F_TSO_ECN: c_uint = 0x08;
    pub const TUN_F_USO4: c_uint = 0x20;
    pub const TUN_F_USO6: c_uint = 0x40;

    // _IOW('T', n, int) / _IOR('T', n, unsigned int): direction << 30 | size 4 << 16 | 'T' << 8 | n.
    const fn iow(nr: c_ulong) -> c_ulong {
        (1 << 30) | (4 << 16) | ((b'T' as c_ulong) << 8) | nr
    }
    const fn ior(nr: c_ulong) -> c_ulong {
        (2 << 30) | (4 << 16) | ((b'T' as c_ulong) << 8) | nr
    }
    pub const TUNSETIFF: c_ulong = iow(202);
    pub const TUNSETPERSIST: c_ulong = iow(203);
    pub const TUNSETOWNER: c_ulong = iow(204);
    pub const TUNSETGROUP: c_ulong = iow(206);
    pub const TUNGETFEATURES: c_ulong = ior(207);
    pub const TUNGETIFF: c_ulong = ior(210);
    pub const TUNGETVNETHDRSZ: c_ulong = ior(215);
    pub const TUNSETOFFLOAD: c_ulong = iow(208);
    pub const TUNSETSNDBUF: c_ulong = iow(212);
    pub const TUNSETVNETHDRSZ: c_ulong = iow(216);
    /// _IO('T', 227): no argument, returns a new fd.
    pub const TUNGETDEVNETNS: c_ulong = ((b'T' as c_ulong) << 8) | 227;
}

/// Length of the `virtio_net_hdr_v1` that precedes every frame on a port
/// opened with a vnet header; defined with the header's view in the core.
pub use tapswitch_core::vnet::VNET_HDR_LEN;

/// The offloads tapswitch asks for when a port carries a vnet header: checksum
/// offload plus TCP and UDP segmentation, so endpoint stacks hand over 64 KiB
/// super-frames instead of MTU-sized ones.
pub const FULL_OFFLOADS: u32 = sys::TUN_F_CSUM
    | sys::TUN_F_TSO4
    | sys::TUN_F_TSO6
    | sys::TUN_F_TSO_ECN
    | sys::TUN_F_USO4
    | sys::TUN_F_USO6;

/// The same without UDP segmentation, for kernels older than 6.2.
const OFFLOADS_WITHOUT_USO: u32 =
    sys::TUN_F_CSUM | sys::TUN_F_TSO4 | sys::TUN_F_TSO6 | sys::TUN_F_TSO_ECN;

/// `IFNAMSIZ` counts the terminating NUL: a name holds at most 15 bytes.
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// Errors of the TAP device layer.
#[derive(Debug, Error)]
pub enum TapError {
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("cannot open /dev/net/tun (is the tun module loaded and are we CAP_NET_ADMIN?): {0}")]
    OpenTun(#[source] io::Error),
    #[error("TAP {name}: {op} failed: {source}")]
    Ioctl {
        name: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("TAP {name} is already attached to another process (a single-queue TAP takes one fd)")]
    Busy { name: String },
    #[error("TAP {name}: the kernel's TUN driver lacks {feature}")]
    Unsupported { name: String, feature: &'static str },
}

/// How to open a TAP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapOptions {
    /// Prefix every frame with a `virtio_net_hdr_v1` and enable offloads.
    pub vnet_hdr: bool,
    /// Open with `IFF_MULTI_QUEUE` (each open of the same name adds a queue).
    pub multi_queue: bool,
    /// Keep the netdev after the fd closes (`TUNSETPERSIST`), or not; `None` leaves the
    /// device's flag as it is (a device the switch adopted keeps its creator's choice).
    pub persistent: Option<bool>,
    /// Owner and group allowed to attach later (`TUNSETOWNER`/`TUNSETGROUP`).
    pub owner: Option<u32>,
    pub group: Option<u32>,
    /// Socket send buffer of the TAP, in bytes (`TUNSETSNDBUF`).
    pub sndbuf: Option<i32>,
}

impl Default for TapOptions {
    fn default() -> Self {
        Self {
            vnet_hdr: true,
            multi_queue: false,
            persistent: Some(false),
            owner: None,
            group: None,
            sndbuf: None,
        }
    }
}

/// A TAP device whose wire side this process holds. Dropping it closes the
/// fd; the kernel then deletes the netdev unless it was made persistent.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    vnet_hdr_len: usize,
    offloads: u32,
}

/// Checks an interface name the way the kernel's `dev_valid_name` does, and a
/// little stricter: only `[A-Za-z0-9._-]`, so the name is safe in shell
/// commands, file names and the `NAME@NETNS` port syntax.
pub fn validate_name(name: &str) -> Result<(), TapError> {
    let invalid = |reason| {
        Err(TapError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return invalid("longer than 15 bytes (IFNAMSIZ)");
    }
    if name == "." || name == ".." {
        return invalid("reserved by the kernel");
    }
    if name.bytes().any(|b| b == 0) {
        return invalid("contains a NUL byte");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return invalid("only letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

/// Builds the `struct ifreq` for `TUNSETIFF`, in the manner of Firecracker's
/// `IfReqBuilder`: zeroed, then the name and flags.
struct IfReqBuilder(libc::ifreq);

impl IfReqBuilder {
    fn new() -> Self {
        // SAFETY: ifreq is a plain C struct of integers and byte arrays; all-zero is valid.
        Self(unsafe { std::mem::zeroed() })
    }

    fn name(mut self, name: &str) -> Self {
        // validate_name guarantees len <= 15 and no NUL, so a terminator remains.
        for (dst, src) in self.0.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        self
    }

    fn flags(mut self, flags: libc::c_int) -> Self {
        self.0.ifr_ifru.ifru_flags = flags as libc::c_short;
        self
    }

    fn build(self) -> libc::ifreq {
        self.0
    }
}

impl Tap {
    /// Creates (or attaches to, if it exists and is free) the TAP `name`.
    pub fn open(name: &str, options: &TapOptions) -> Result<Self, TapError> {
        validate_name(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut tap = Tap {
            file,
            name: name.to_owned(),
            vnet_hdr_len: 0,
            offloads: 0,
        };

        let features = tap.features()?;
        let mut flags = sys::IFF_TAP | sys::IFF_NO_PI;
        if options.vnet_hdr {
            tap.require(features, sys::IFF_VNET_HDR, "IFF_VNET_HDR")?;
            flags |= sys::IFF_VNET_HDR;
        }
        if options.multi_queue {
            tap.require(features, sys::IFF_MULTI_QUEUE, "IFF_MULTI_QUEUE")?;
            flags |= sys::IFF_MULTI_QUEUE;
        }
        let mut ifreq = IfReqBuilder::new().name(name).flags(flags).build();
        // SAFETY: TUNSETIFF reads an ifreq; `ifreq` is a valid, initialised ifreq
        // that outlives the call, and the fd is an open /dev/net/tun.
        let ret = unsafe { libc::ioctl(tap.file.as_raw_fd(), sys::TUNSETIFF, &mut ifreq) };
        if ret < 0 {
            let source = io::Error::last_os_error();
            if source.raw_os_error() == Some(libc::EBUSY) {
                return Err(TapError::Busy {
                    name: name.to_owned(),
                });
            }
            return Err(tap.ioctl_error("TUNSETIFF", source));
        }

        if options.vnet_hdr {
            tap.ioctl_int("TUNSETVNETHDRSZ", sys::TUNSETVNETHDRSZ, VNET_HDR_LEN as i32)?;
            tap.vnet_hdr_len = VNET_HDR_LEN;
        }
        // Offload flags outlive the fd on a persistent TAP (a previous holder such
        // as QEMU may have set them), so set them on every open, even to zero.
        tap.set_offloads(if options.vnet_hdr { FULL_OFFLOADS } else { 0 })?;
        if let Some(persistent) = options.persistent {
            tap.set_persistent(persistent)?;
        }
        if let Some(uid) = options.owner {
            tap.ioctl_ulong("TUNSETOWNER", sys::TUNSETOWNER, uid.into())?;
        }
        if let Some(gid) = options.group {
            tap.ioctl_ulong("TUNSETGROUP", sys::TUNSETGROUP, gid.into())?;
        }
        if let Some(bytes) = options.sndbuf {
            tap.ioctl_int("TUNSETSNDBUF", sys::TUNSETSNDBUF, bytes)?;
        }
        Ok(tap)
    }

    /// Adopts an fd of an attached TAP that another process handed over (see
    /// `upgrade`). Name, vnet header and queue mode are read from the fd;
    /// the offloads are set again, as on every open.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, TapError> {
        let file = File::from(fd);
        let mut ifreq = IfReqBuilder::new().build();
        // SAFETY: TUNGETIFF writes one ifreq through the pointer, which points
        // at `ifreq`, live for the call.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), sys::TUNGETIFF, &mut ifreq) };
        if ret < 0 {
            return Err(TapError::Ioctl {
                name: format!("fd {}", file.as_raw_fd()),
                op: "TUNGETIFF",
                source: io::Error::last_os_error(),
            });
        }
        let name: String = ifreq
            .ifr_name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8 as char)
            .collect();
        // SAFETY: TUNGETIFF filled the flags member of the union.
        let flags = libc::c_int::from(unsafe { ifreq.ifr_ifru.ifru_flags });
        let mut tap = Tap {
            file,
            name,
            vnet_hdr_len: 0,
            offloads: 0,
        };
        if flags & sys::IFF_VNET_HDR != 0 {
            let mut size: libc::c_int = 0;
            // SAFETY: TUNGETVNETHDRSZ writes one int through the pointer, which
            // points at `size`, live for the call.
            let ret = unsafe { libc::ioctl(tap.file.as_raw_fd(), sys::TUNGETVNETHDRSZ, &mut size) };
            if ret < 0 {
                return Err(tap.ioctl_error("TUNGETVNETHDRSZ", io::Error::last_os_error()));
            }
            tap.vnet_hdr_len = size as usize;
        }
        tap.set_offloads(if tap.vnet_hdr_len > 0 {
            FULL_OFFLOADS
        } else {
            0
        })?;
        Ok(tap)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same TAP, known as `name` from now on: its netdev was renamed over netlink
    /// (a TAP made under a temporary name, then moved into its namespace).
    pub fn renamed(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// Bytes of vnet header before each frame: 0 or [`VNET_HDR_LEN`].
    pub fn vnet_hdr_len(&self) -> usize {
        self.vnet_hdr_len
    }

    /// The `TUN_F_*` offloads in force.
    pub fn offloads(&self) -> u32 {
        self.offloads
    }

    /// Marks the netdev persistent (it survives this fd) or not.
    pub fn set_persistent(&self, persistent: bool) -> Result<(), TapError> {
        self.ioctl_ulong("TUNSETPERSIST", sys::TUNSETPERSIST, persistent.into())
    }

    /// Sets the offloads the reader accepts. Falls back to no UDP segmentation
    /// on kernels that reject USO.
    pub fn set_offloads(&mut self, offloads: u32) -> Result<(), TapError> {
        match self.ioctl_ulong("TUNSETOFFLOAD", sys::TUNSETOFFLOAD, offloads.into()) {
            Ok(()) => self.offloads = offloads,
            Err(TapError::Ioctl { source, .. })
                if source.raw_os_error() == Some(libc::EINVAL)
                    && offloads & (sys::TUN_F_USO4 | sys::TUN_F_USO6) != 0 =>
            {
                let reduced = offloads & OFFLOADS_WITHOUT_USO;
                self.ioctl_ulong("TUNSETOFFLOAD", sys::TUNSETOFFLOAD, reduced.into())?;
                self.offloads = reduced;
            }
            Err(other) => return Err(other),
        }
        Ok(())
    }

    /// Reads one frame (with its vnet header, if any). Non-blocking:
    /// `WouldBlock` means the queue is empty.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the pointer and length describe `buf`, which is valid for writes
        // of `buf.len()` bytes for the duration of the call.
        let n = unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Writes one frame (with its vnet header, if any). The kernel drops
    /// rather than blocks when the netdev's queue is full.
    pub fn write(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: the pointer and length describe `frame`, valid for reads.
        let n = unsafe { libc::write(self.file.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Writes one frame gathered from two parts (a vnet header built here and
    /// a frame read elsewhere) without copying them together.
    pub fn write_parts(&self, head: &[u8], body: &[u8]) -> io::Result<usize> {
        let iov = [
            libc::iovec {
                iov_base: head.as_ptr() as *mut libc::c_void,
                iov_len: head.len(),
            },
            libc::iovec {
                iov_base: body.as_ptr() as *mut libc::c_void,
                iov_len: body.len(),
            },
        ];
        // SAFETY: both iovecs describe live slices; writev only reads through them.
        let n = unsafe { libc::writev(self.file.as_raw_fd(), iov.as_ptr(), iov.len() as i32) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Writes one frame gathered from any number of parts (e.g. a vnet header, the
    /// addresses, a new VLAN tag and the rest) without copying them together.
    pub fn write_vectored(&self, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let count = libc::c_int::try_from(parts.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: `IoSlice` is guaranteed ABI-compatible with `iovec` on Unix, and every
        // slice is live for the call; writev only reads through the pointers.
        let n = unsafe {
            libc::writev(
                self.file.as_raw_fd(),
                parts.as_ptr().cast::<libc::iovec>(),
                count,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn features(&self) -> Result<libc::c_int, TapError> {
        let mut features: libc::c_uint = 0;
        // SAFETY: TUNGETFEATURES writes one unsigned int through the pointer,
        // which points at `features`, live for the call.
        let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), sys::TUNGETFEATURES, &mut features) };
        if ret < 0 {
            return Err(self.ioctl_error("TUNGETFEATURES", io::Error::last_os_error()));
        }
        Ok(features as libc::c_int)
    }

    fn require(
        &self,
        features: libc::c_int,
        flag: libc::c_int,
        feature: &'static str,
    ) -> Result<(), TapError> {
        if features & flag == 0 {
            return Err(TapError::Unsupported {
                name: self.name.clone(),
                feature,
            });
        }
        Ok(())
    }

    /// For ioctls that take their argument by value (persist, owner, offload).
    fn ioctl_ulong(
        &self,
        op: &'static str,
        request: libc::c_ulong,
        value: libc::c_ulong,
    ) -> Result<(), TapError> {
        // SAFETY: these TUN ioctls take an integer argument by value and do not
        // dereference it; the fd is an attached TAP.
        let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), request, value) };
        if ret < 0 {
            return Err(self.ioctl_error(op, io::Error::last_os_error()));
        }
        Ok(())
    }

    /// For ioctls that read an `int` through a pointer (vnet header size, sndbuf).
    fn ioctl_int(
        &self,
        op: &'static str,
        request: libc::c_ulong,
        value: libc::c_int,
    ) -> Result<(), TapError> {
        // SAFETY: the kernel reads one int through the pointer, which points at
        // `value`, live for the duration of the call.
        let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), request, &value) };
        if ret < 0 {
            return Err(self.ioctl_error(op, io::Error::last_os_error()));
        }
        Ok(())
    }

    fn ioctl_error(&self, op: &'static str, source: io::Error) -> TapError {
        TapError::Ioctl {
            name: self.name.clone(),
            op,
            source,
        }
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl From<Tap> for OwnedFd {
    fn from(tap: Tap) -> Self {
        tap.file.into()
    }
}

/// The network namespace TAP fd `fd` itself belongs to (`SIOCGSKNS`): the one it was opened
/// in, which it holds for as long as it is open, wherever its netdev went. Needs CAP_NET_ADMIN.
pub fn fd_netns(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: SIOCGSKNS takes no argument and returns a new descriptor or -1.
    let ns = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGSKNS) };
    if ns < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(ns) })
}

/// The network namespace the netdev of TAP fd `fd` is in now (`TUNGETDEVNETNS`; it may have
/// been moved since it was made). Needs CAP_NET_ADMIN. EBADFD once the netdev is deleted.
pub fn device_netns(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: TUNGETDEVNETNS takes no argument and returns a new descriptor or -1.
    let ns = unsafe { libc::ioctl(fd.as_raw_fd(), sys::TUNGETDEVNETNS) };
    if ns < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(ns) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn unique_name() -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        format!(
            "tt{}x{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn link_exists(name: &str) -> bool {
        std::path::Path::new("/sys/class/net").join(name).exists()
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("tap0").is_ok());
        assert!(validate_name("a-b_c.d").is_ok());
        assert!(validate_name("123456789012345").is_ok());
        for bad in [
            "",
            "1234567890123456",
            ".",
            "..",
            "a/b",
            "a b",
            "a\0b",
            "a:b",
            "tap@ns",
        ] {
            let err = validate_name(bad).unwrap_err();
            assert!(
                matches!(err, TapError::InvalidName { .. }),
                "{bad:?} accepted"
            );
        }
        let msg = validate_name("1234567890123456").unwrap_err().to_string();
        assert!(msg.contains("IFNAMSIZ"), "{msg}");
    }

    #[test]
    fn open_creates_a_tap_that_vanishes_on_drop() {
        let name = unique_name();
        let tap = Tap::open(&name, &TapOptions::default()).expect("open tap");
        assert_eq!(tap.name(), name);
        assert_eq!(tap.vnet_hdr_len(), 12);
        assert_ne!(tap.offloads() & sys::TUN_F_TSO4, 0);
        assert!(link_exists(&name));
        let flags = std::fs::read_to_string(format!("/sys/class/net/{name}/tun_flags")).unwrap();
        let flags = i32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
        assert_eq!(flags & sys::IFF_TAP, sys::IFF_TAP);
        assert_eq!(flags & sys::IFF_VNET_HDR, sys::IFF_VNET_HDR);
        drop(tap);
        assert!(!link_exists(&name));
    }

    #[test]
    fn second_single_queue_attach_is_busy() {
        let name = unique_name();
        let _first = Tap::open(&name, &TapOptions::default()).expect("open tap");
        let err = Tap::open(&name, &TapOptions::default()).unwrap_err();
        assert!(matches!(err, TapError::Busy { .. }), "{err}");
    }

    #[test]
    fn persistent_tap_survives_and_reattaches() {
        let name = unique_name();
        let options = TapOptions {
            persistent: Some(true),
            vnet_hdr: false,
            ..TapOptions::default()
        };
        let tap = Tap::open(&name, &options).expect("open tap");
        drop(tap);
        assert!(link_exists(&name), "persistent TAP was deleted");
        let tap = Tap::open(&name, &options).expect("re-attach");
        assert_eq!(tap.vnet_hdr_len(), 0);
        assert_eq!(tap.offloads(), 0);
        tap.set_persistent(false).unwrap();
        drop(tap);
        assert!(!link_exists(&name));
    }

    #[test]
    fn multi_queue_opens_several_queues() {
        let name = unique_name();
        let options = TapOptions {
            multi_queue: true,
            ..TapOptions::default()
        };
        let q1 = Tap::open(&name, &options).expect("queue 1");
        let q2 = Tap::open(&name, &options).expect("queue 2");
        // Opening the multi-queue TAP as single-queue is refused.
        let err = Tap::open(&name, &TapOptions::default()).unwrap_err();
        assert!(
            matches!(
                err,
                TapError::Ioctl {
                    op: "TUNSETIFF",
                    ..
                }
            ),
            "{err}"
        );
        drop((q1, q2));
    }

    #[test]
    fn a_handed_over_fd_is_the_same_tap() {
        let name = unique_name();
        let tap = Tap::open(&name, &TapOptions::default()).expect("open tap");
        let fd = tap.file.try_clone().unwrap();
        let adopted = Tap::from_fd(fd.into()).expect("adopt");
        assert_eq!(adopted.name(), name);
        assert_eq!(adopted.vnet_hdr_len(), VNET_HDR_LEN);
        assert_eq!(adopted.offloads(), tap.offloads());
        drop(tap);
        // The adopted fd keeps the non-persistent TAP alive.
        assert!(link_exists(&name));
        drop(adopted);
        assert!(!link_exists(&name));
    }

    #[test]
    fn empty_queue_reads_would_block() {
        let name = unique_name();
        let tap = Tap::open(&name, &TapOptions::default()).expect("open tap");
        let mut buf = [0u8; 2048];
        let err = tap.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }
}
