//! `AF_PACKET` sockets bound to an existing netdev (a veth, a NIC or bond, or a VM's
//! own TAP that QEMU holds): the wire of a netdev port.
//!
//! The socket is opened with protocol 0 (it receives nothing), set up, and only then
//! bound to the device with `ETH_P_ALL`, so no frame of another device is ever queued.
//! `PACKET_IGNORE_OUTGOING` keeps the switch from reading back what it (or the host
//! stack) sends on the device; `PACKET_AUXDATA` gives back the VLAN tag the kernel took
//! out of received frames; `PACKET_VNET_HDR_SZ` puts the same 12-byte `virtio_net_hdr_v1`
//! as a TAP's before every frame, so super-frames pass with their offload metadata.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use thiserror::Error;

use super::tap::VNET_HDR_LEN;

/// Constants from `linux/if_packet.h` and `linux/if_ether.h`: kernel ABI, kept here so
/// the crate does not depend on which `libc` release carries them.
mod abi {
    use libc::c_int;

    pub const SOL_PACKET: c_int = 263;
    pub const PACKET_ADD_MEMBERSHIP: c_int = 1;
    pub const PACKET_MR_PROMISC: libc::c_ushort = 1;
    pub const PACKET_AUXDATA: c_int = 8;
    pub const PACKET_QDISC_BYPASS: c_int = 20;
    pub const PACKET_IGNORE_OUTGOING: c_int = 23;
    pub const PACKET_VNET_HDR_SZ: c_int = 24;
    pub const ETH_P_ALL: u16 = 0x0003;
    pub const ETH_P_8021Q: u16 = 0x8100;
    pub const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
    pub const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

    /// `struct tpacket_auxdata`.
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    pub struct TpacketAuxdata {
        pub tp_status: u32,
        pub tp_len: u32,
        pub tp_snaplen: u32,
        pub tp_mac: u16,
        pub tp_net: u16,
        pub tp_vlan_tci: u16,
        pub tp_vlan_tpid: u16,
    }

    /// `struct packet_mreq`.
    #[repr(C)]
    pub struct PacketMreq {
        pub mr_ifindex: c_int,
        pub mr_type: libc::c_ushort,
        pub mr_alen: libc::c_ushort,
        pub mr_address: [u8; 8],
    }
}

/// Errors of the packet socket layer.
#[derive(Debug, Error)]
pub enum PacketError {
    #[error("device {device:?} not found in the namespace: {source}")]
    NoDevice {
        device: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot open an AF_PACKET socket (CAP_NET_RAW is needed): {0}")]
    Socket(#[source] io::Error),
    #[error("AF_PACKET socket on {device}: {op} failed: {source}")]
    Option {
        device: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

/// How to open a packet socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketOptions {
    /// Ask for a vnet header before every frame (falls back to none where the kernel
    /// lacks `PACKET_VNET_HDR_SZ`).
    pub vnet_hdr: bool,
    /// Send straight to the driver, past the device's qdisc.
    pub qdisc_bypass: bool,
}

impl Default for PacketOptions {
    fn default() -> Self {
        Self {
            vnet_hdr: true,
            qdisc_bypass: false,
        }
    }
}

/// What one read returned: the bytes written at the start of the buffer and the VLAN tag
/// the kernel took out of the frame (TPID, TCI), to be put back before the EtherType.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub len: usize,
    pub vlan: Option<(u16, u16)>,
    /// The frame was longer than the buffer (and is cut).
    pub truncated: bool,
}

/// An `AF_PACKET` raw socket bound to one device, in promiscuous membership. Dropping it
/// closes the socket, which ends the membership; the device is left as it was.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    device: String,
    ifindex: u32,
    vnet_hdr_len: usize,
}

/// The index of `device` in the calling thread's namespace.
pub fn ifindex(device: &str) -> Result<u32, PacketError> {
    let no_device = |source| PacketError::NoDevice {
        device: device.to_owned(),
        source,
    };
    let name = std::ffi::CString::new(device)
        .map_err(|_| no_device(io::Error::from_raw_os_error(libc::EINVAL)))?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(no_device(io::Error::last_os_error()));
    }
    Ok(index)
}

impl PacketSocket {
    /// Opens a socket on `device` in the calling thread's namespace.
    pub fn open(device: &str, options: PacketOptions) -> Result<Self, PacketError> {
        let ifindex = ifindex(device)?;
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(PacketError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a freshly opened fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut socket = Self {
            fd,
            device: device.to_owned(),
            ifindex,
            vnet_hdr_len: 0,
        };
        socket.set_int("PACKET_IGNORE_OUTGOING", abi::PACKET_IGNORE_OUTGOING, 1)?;
        socket.set_int("PACKET_AUXDATA", abi::PACKET_AUXDATA, 1)?;
        if options.vnet_hdr {
            match socket.set_int(
                "PACKET_VNET_HDR_SZ",
                abi::PACKET_VNET_HDR_SZ,
                VNET_HDR_LEN as i32,
            ) {
                Ok(()) => socket.vnet_hdr_len = VNET_HDR_LEN,
                // Older kernels know only the 10-byte header: run without one.
                Err(PacketError::Option { source, .. })
                    if matches!(
                        source.raw_os_error(),
                        Some(libc::ENOPROTOOPT | libc::EINVAL)
                    ) => {}
                Err(other) => return Err(other),
            }
        }
        if options.qdisc_bypass {
            socket.set_int("PACKET_QDISC_BYPASS", abi::PACKET_QDISC_BYPASS, 1)?;
        }
        let membership = abi::PacketMreq {
            mr_ifindex: ifindex as libc::c_int,
            mr_type: abi::PACKET_MR_PROMISC,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        socket.set_option(
            "PACKET_ADD_MEMBERSHIP",
            abi::PACKET_ADD_MEMBERSHIP,
            &membership,
        )?;
        socket.bind()?;
        Ok(socket)
    }

    /// Adopts a socket another process handed over (see `upgrade`): a packet socket
    /// already set up and bound to `device`, with `vnet_hdr_len` bytes of header.
    pub fn from_fd(fd: OwnedFd, device: &str, ifindex: u32, vnet_hdr_len: usize) -> Self {
        Self {
            fd,
            device: device.to_owned(),
            ifindex,
            vnet_hdr_len,
        }
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Bytes of vnet header before each frame: 0 or [`VNET_HDR_LEN`].
    pub fn vnet_hdr_len(&self) -> usize {
        self.vnet_hdr_len
    }

    fn bind(&self) -> Result<(), PacketError> {
        // SAFETY: sockaddr_ll is plain integers and bytes; all-zero is valid.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = abi::ETH_P_ALL.to_be();
        address.sll_ifindex = self.ifindex as i32;
        // SAFETY: the pointer and length describe `address`, live for the call.
        let ret = unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&raw const address).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if ret < 0 {
            return Err(self.error("bind", io::Error::last_os_error()));
        }
        Ok(())
    }

    fn set_int(&self, op: &'static str, name: libc::c_int, value: i32) -> Result<(), PacketError> {
        self.set_option(op, name, &value)
    }

    fn set_option<T>(
        &self,
        op: &'static str,
        name: libc::c_int,
        value: &T,
    ) -> Result<(), PacketError> {
        // SAFETY: the pointer and length describe `value`, live for the call; the kernel
        // only reads through it.
        let ret = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                abi::SOL_PACKET,
                name,
                (value as *const T).cast(),
                std::mem::size_of::<T>() as libc::socklen_t,
            )
        };
        if ret < 0 {
            return Err(self.error(op, io::Error::last_os_error()));
        }
        Ok(())
    }

    fn error(&self, op: &'static str, source: io::Error) -> PacketError {
        PacketError::Option {
            device: self.device.clone(),
            op,
            source,
        }
    }

    /// Reads one frame (with its vnet header, if any) and the VLAN tag the kernel took
    /// out of it. Non-blocking: `WouldBlock` means nothing is queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // Room for one cmsghdr carrying a tpacket_auxdata, aligned for cmsghdr.
        let mut control = [0u64; 8];
        // SAFETY: msghdr is plain integers and pointers; all-zero is valid.
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_iov = &raw mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: `message` points at `iov` (describing `buf`) and `control`, all live
        // and writable for the call.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut message, libc::MSG_TRUNC) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        let mut received = Received {
            len: n.min(buf.len()),
            vlan: None,
            truncated: n > buf.len() || message.msg_flags & libc::MSG_TRUNC != 0,
        };
        // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, bounded by
        // msg_controllen; each header is checked before its data is read (unaligned).
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&message);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == abi::SOL_PACKET && (*cmsg).cmsg_type == abi::PACKET_AUXDATA
                {
                    let aux: abi::TpacketAuxdata =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    received.vlan = vlan_of(&aux);
                }
                cmsg = libc::CMSG_NXTHDR(&message, cmsg);
            }
        }
        Ok(received)
    }

    /// Sends the concatenation of `parts` as one frame (with its vnet header, if any).
    pub fn send_vectored(&self, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: msghdr is plain integers and pointers; all-zero is valid.
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        // `IoSlice` is ABI-compatible with `iovec` on Unix; sendmsg only reads through it.
        message.msg_iov = parts.as_ptr() as *mut libc::iovec;
        message.msg_iovlen = parts.len();
        // SAFETY: `message` points at `parts`, live for the call; the socket is bound, so
        // no address is needed.
        let n = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &message, 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Sends one frame (with its vnet header, if any).
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: the pointer and length describe `frame`, valid for reads.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The tag described by `aux`, if the kernel took one out of the frame.
fn vlan_of(aux: &abi::TpacketAuxdata) -> Option<(u16, u16)> {
    if aux.tp_status & abi::TP_STATUS_VLAN_VALID == 0 {
        return None;
    }
    let tpid = if aux.tp_status & abi::TP_STATUS_VLAN_TPID_VALID != 0 {
        aux.tp_vlan_tpid
    } else {
        abi::ETH_P_8021Q
    };
    Some((tpid, aux.tp_vlan_tci))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_reported_only_when_the_kernel_says_it_is_valid() {
        let mut aux = abi::TpacketAuxdata {
            tp_vlan_tci: 5,
            ..Default::default()
        };
        assert_eq!(vlan_of(&aux), None);
        aux.tp_status = abi::TP_STATUS_VLAN_VALID;
        assert_eq!(vlan_of(&aux), Some((0x8100, 5)));
        aux.tp_status |= abi::TP_STATUS_VLAN_TPID_VALID;
        aux.tp_vlan_tpid = 0x88a8;
        assert_eq!(vlan_of(&aux), Some((0x88a8, 5)));
    }

    #[test]
    fn a_missing_device_is_named_in_the_error() {
        let error = PacketSocket::open("nosuchdev0", PacketOptions::default()).unwrap_err();
        assert!(error.to_string().contains("nosuchdev0"), "{error}");
    }
}
