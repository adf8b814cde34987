//! The sockets of a VXLAN port: a UDP socket bound to the local VTEP address
//! (receive), and a pool of send-only UDP sockets on the same address, each
//! with its own source port, so that a flow hashed to one of them keeps its
//! UDP source port (the entropy the underlay spreads flows on) while every
//! send is an ordinary UDP send: one `sendmsg` with `UDP_SEGMENT` carries a
//! whole train of datagrams, and the kernel (or the device) computes the
//! outer checksum.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    #[error(
        "cannot bind UDP {local} for the VXLAN port: the port is taken. A Linux vxlan device \
         with this dstport in the same namespace holds 0.0.0.0:{port} (Linux's own default \
         dstport is 8472, tapswitch's 4789): use another udp_port, or run the switch in \
         another namespace"
    )]
    PortInUse { local: SocketAddrV4, port: u16 },
    #[error(
        "cannot bind UDP {local} for the VXLAN port: {local_ip} is not an address of this \
         namespace (add it to an interface, e.g. the underlay veth or lo)"
    )]
    NotLocal {
        local: SocketAddrV4,
        local_ip: Ipv4Addr,
    },
    #[error("cannot bind UDP {local} for the VXLAN port: {source}")]
    Bind {
        local: SocketAddrV4,
        source: io::Error,
    },
    #[error("cannot open a UDP send socket of the VXLAN port on {local}: {source}")]
    Sender { local: Ipv4Addr, source: io::Error },
}

/// A nonblocking UDP socket bound to `local`.
pub fn bind_receiver(local: SocketAddrV4) -> Result<UdpSocket, UdpError> {
    let socket = UdpSocket::bind(local).map_err(|source| match source.raw_os_error() {
        Some(libc::EADDRINUSE) => UdpError::PortInUse {
            local,
            port: local.port(),
        },
        Some(libc::EADDRNOTAVAIL) => UdpError::NotLocal {
            local,
            local_ip: *local.ip(),
        },
        _ => UdpError::Bind { local, source },
    })?;
    socket
        .set_nonblocking(true)
        .map_err(|source| UdpError::Bind { local, source })?;
    grow_receive_buffer(&socket, RECEIVE_BUFFER_BYTES);
    Ok(socket)
}

/// The receive buffer a VXLAN port asks for. Measured (bench/README.md, "VXLAN"): with
/// the default (~212 KB) a TCP stream's bursts of encapsulated segments overflowed the
/// socket, 13–18% of datagrams were dropped and TCP ran at 0.08x the kernel path; at
/// 8 MiB no drops, and 2x the throughput.
const RECEIVE_BUFFER_BYTES: libc::c_int = 8 << 20;

/// Asks for a receive buffer of `bytes`: `SO_RCVBUFFORCE` (past `net.core.rmem_max`; needs
/// CAP_NET_ADMIN), else `SO_RCVBUF` (capped at rmem_max). Best effort: a smaller buffer
/// only means earlier drops under bursts, which the socket's own counters show.
fn grow_receive_buffer(socket: &UdpSocket, bytes: libc::c_int) {
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: `socket` is an open socket; the value is a c_int that lives across the
        // call, and its size is passed with it.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const bytes).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// Sockets a VXLAN port sends from: each its own UDP source port, so that a flow
/// (hashed to one of them) keeps its port and the underlay can spread flows.
pub const SENDER_POOL_SIZE: usize = 16;

/// The send buffer a VXLAN sender asks for: two 64 KiB messages per super-frame, times
/// the frames one loop turn may send, before `EAGAIN`.
const SEND_BUFFER_BYTES: libc::c_int = 4 << 20;

/// The two send-only sockets of one source port of a VXLAN port.
#[derive(Debug)]
pub struct Sender {
    /// Outer UDP checksum by the kernel (offloaded to the device where it can): the
    /// one `UDP_SEGMENT` accepts.
    pub checksummed: UdpSocket,
    /// Outer UDP checksum zero (`SO_NO_CHECK`), as RFC 7348 recommends for IPv4 and a
    /// Linux vxlan device sends by default: for single datagrams, so that a peer reading
    /// the underlay with `AF_PACKET` (Open vSwitch's userspace datapath on a veth, where
    /// an offloaded checksum is never filled in) can take them.
    pub unchecksummed: UdpSocket,
}

impl Sender {
    /// The two sockets on one port the kernel picks on `local` (`SO_REUSEPORT`), for
    /// sending only: their receive side gets a filter that accepts nothing (nothing is
    /// read from them, and a datagram sent to their port must not pile up). Datagrams
    /// leave without DF (`IP_PMTUDISC_DONT`), as a Linux vxlan device sends them by
    /// default (`df unset`): a narrower path fragments rather than drops, and what
    /// `UDP_SEGMENT` checks records against is the device's MTU, not a learned path MTU.
    pub fn open(local: Ipv4Addr) -> Result<Self, UdpError> {
        let checksummed = open_sender(SocketAddrV4::new(local, 0), false)?;
        let bound = checksummed
            .local_addr()
            .map_err(|source| UdpError::Sender { local, source })?;
        let unchecksummed = open_sender(SocketAddrV4::new(local, bound.port()), true)?;
        Ok(Sender {
            checksummed,
            unchecksummed,
        })
    }
}

fn open_sender(address: SocketAddrV4, no_check: bool) -> Result<UdpSocket, UdpError> {
    let fail = |source| UdpError::Sender {
        local: *address.ip(),
        source,
    };
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(fail(io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let socket = UdpSocket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let drop_all = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let program = libc::sock_fprog {
        len: 1,
        filter: drop_all.as_ptr().cast_mut(),
    };
    let on: libc::c_int = 1;
    set_option(&socket, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &program).map_err(fail)?;
    set_option(&socket, libc::SOL_SOCKET, libc::SO_REUSEPORT, &on).map_err(fail)?;
    set_option(
        &socket,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        &libc::IP_PMTUDISC_DONT,
    )
    .map_err(fail)?;
    if no_check {
        set_option(&socket, libc::SOL_SOCKET, libc::SO_NO_CHECK, &on).map_err(fail)?;
    }
    // Best effort, as for the receive buffer: a smaller one only means `EAGAIN` sooner.
    let _ = set_option(
        &socket,
        libc::SOL_SOCKET,
        libc::SO_SNDBUFFORCE,
        &SEND_BUFFER_BYTES,
    )
    .or_else(|_| {
        set_option(
            &socket,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            &SEND_BUFFER_BYTES,
        )
    });
    let raw = sockaddr(*address.ip(), address.port());
    // SAFETY: `raw` is a valid sockaddr_in of the length given.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const raw).cast(),
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if bound != 0 {
        return Err(fail(io::Error::last_os_error()));
    }
    Ok(socket)
}

/// `setsockopt(level, name, value)`.
fn set_option<T>(
    socket: &UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `socket` is an open socket; `value` is a live `T` whose size is passed with it,
    // and the kernel only reads (copies) it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One message for [`send_messages`]: `payload` to `destination`, as one datagram, or with
/// `segment_size` as a train of datagrams of that many bytes each (the last may be
/// shorter) that the kernel cuts (`UDP_SEGMENT`: one pass through the stack for all).
#[derive(Clone, Copy, Debug)]
pub struct OutMessage<'a> {
    pub destination: SocketAddrV4,
    pub payload: &'a [u8],
    pub segment_size: Option<u16>,
}

/// The message [`send_messages`] stopped at: `sent` messages went before it.
#[derive(Debug)]
pub struct SendFailed {
    pub sent: usize,
    pub error: io::Error,
}

impl SendFailed {
    /// For a message with a segment size: the kernel refused `UDP_SEGMENT` itself, not the
    /// destination: no checksum offload on the route's device (EIO), a segment size the
    /// device's MTU cannot carry (EMSGSIZE on this kernel, EINVAL on others), or
    /// segmentation refused for the socket (EINVAL).
    pub fn segmentation_refused(&self) -> bool {
        matches!(
            self.error.raw_os_error(),
            Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE)
        )
    }
}

/// A `UDP_SEGMENT` control message (`CMSG_SPACE(sizeof(u16))` bytes, 8-byte aligned).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct SegmentCmsg([u8; 24]);

/// Sends `messages` in order with `sendmmsg` over the UDP socket `fd`. Ok with their
/// count when all went; else where it stopped and why (the caller decides whether to
/// skip that message or resend it otherwise).
pub fn send_messages(fd: RawFd, messages: &[OutMessage<'_>]) -> Result<usize, SendFailed> {
    const CMSG_LEN: usize = mem::size_of::<libc::cmsghdr>() + mem::size_of::<u16>();
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as usize;
    debug_assert!(space <= mem::size_of::<SegmentCmsg>());
    let mut addresses: Vec<libc::sockaddr_in> = messages
        .iter()
        .map(|m| sockaddr(*m.destination.ip(), m.destination.port()))
        .collect();
    let mut iovecs: Vec<libc::iovec> = messages
        .iter()
        .map(|m| libc::iovec {
            iov_base: m.payload.as_ptr().cast_mut().cast(),
            iov_len: m.payload.len(),
        })
        .collect();
    let mut controls: Vec<SegmentCmsg> = messages
        .iter()
        .map(|m| {
            let mut control = SegmentCmsg([0; 24]);
            if let Some(size) = m.segment_size {
                // SAFETY: all-zero is a valid cmsghdr; written unaligned-safe below.
                let mut header: libc::cmsghdr = unsafe { mem::zeroed() };
                header.cmsg_level = libc::SOL_UDP;
                header.cmsg_type = libc::UDP_SEGMENT;
                header.cmsg_len = CMSG_LEN as _;
                // SAFETY: the buffer holds a cmsghdr followed by two data bytes (space >= CMSG_LEN);
                // `SegmentCmsg` is 8-byte aligned, as a cmsghdr needs.
                unsafe {
                    std::ptr::write(control.0.as_mut_ptr().cast::<libc::cmsghdr>(), header);
                }
                let data = mem::size_of::<libc::cmsghdr>();
                control.0[data..data + 2].copy_from_slice(&size.to_ne_bytes());
            }
            control
        })
        .collect();
    let mut headers: Vec<libc::mmsghdr> = (0..messages.len())
        .map(|i| {
            // SAFETY: all-zero is a valid mmsghdr; the pointers are set here.
            let mut header: libc::mmsghdr = unsafe { mem::zeroed() };
            header.msg_hdr.msg_name = (&raw mut addresses[i]).cast();
            header.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            header.msg_hdr.msg_iov = &raw mut iovecs[i];
            header.msg_hdr.msg_iovlen = 1;
            if messages[i].segment_size.is_some() {
                header.msg_hdr.msg_control = (&raw mut controls[i]).cast();
                header.msg_hdr.msg_controllen = space as _;
            }
            header
        })
        .collect();
    let mut next = 0;
    while next < headers.len() {
        let rest = &mut headers[next..];
        // SAFETY: every mmsghdr points at a live address, iovec and control buffer (the
        // vectors above, not moved while `headers` is used) whose payload the caller keeps
        // alive for the call; the kernel only reads them.
        let count = unsafe {
            libc::sendmmsg(
                fd,
                rest.as_mut_ptr(),
                rest.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if count <= 0 {
            let error = if count < 0 {
                io::Error::last_os_error()
            } else {
                io::Error::from(io::ErrorKind::WriteZero)
            };
            if error.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(SendFailed { sent: next, error });
        }
        next += count as usize;
    }
    Ok(next)
}

/// One datagram read by [`recv_split`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes of the datagram (header and body), as sent.
    pub len: usize,
    /// The sender's address.
    pub source: Ipv4Addr,
    /// The datagram was longer than `head` and `body` together.
    pub truncated: bool,
}

/// Reads one datagram from `fd`, its first `head.len()` bytes into `head` and
/// the rest into `body` (so the payload behind a header lands where the
/// caller wants it, without a copy). Nonblocking: `WouldBlock` when empty.
pub fn recv_split(fd: RawFd, head: &mut [u8], body: &mut [u8]) -> io::Result<Received> {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut source: libc::sockaddr_in = unsafe { mem::zeroed() };
    let mut iov = [
        libc::iovec {
            iov_base: head.as_mut_ptr().cast(),
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: body.as_mut_ptr().cast(),
            iov_len: body.len(),
        },
    ];
    // SAFETY: all-zero is a valid msghdr; the pointers are set below.
    let mut message: libc::msghdr = unsafe { mem::zeroed() };
    message.msg_name = (&raw mut source).cast();
    message.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    message.msg_iov = iov.as_mut_ptr();
    message.msg_iovlen = iov.len();
    // SAFETY: the msghdr points at the iovecs, buffers and address above, all live and
    // writable for the call; MSG_TRUNC makes the result the datagram's real length.
    let len = unsafe { libc::recvmsg(fd, &raw mut message, libc::MSG_DONTWAIT | libc::MSG_TRUNC) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = len as usize;
    Ok(Received {
        len,
        source: Ipv4Addr::from(u32::from_be(source.sin_addr.s_addr)),
        truncated: message.msg_flags & libc::MSG_TRUNC != 0 || len > head.len() + body.len(),
    })
}

/// What one [`recv_gro`] read: a single datagram, or a train of datagrams of
/// one sender that the kernel's UDP GRO joined end to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedTrain {
    /// Bytes written into the buffer (at most its length).
    pub len: usize,
    /// The sender's address.
    pub source: Ipv4Addr,
    /// With `Some(size)` the bytes are datagrams of `size` bytes each, the last
    /// one possibly shorter (the `UDP_GRO` control message); `None` is one datagram.
    pub segment_size: Option<usize>,
    /// The datagram or train was longer than the buffer: the tail is lost.
    pub truncated: bool,
}

/// Room for the control messages a receiver with `UDP_GRO` gets (one int),
/// aligned for `cmsghdr`.
type ControlBuffer = [u64; 8];

/// Lets the kernel hand `socket`'s reader several datagrams of one sender in
/// one read (`setsockopt(SOL_UDP, UDP_GRO, 1)`), each train's segment size in
/// a control message that [`recv_gro`] reads. Without it, a train sent with
/// `UDP_SEGMENT` arrives as separate datagrams.
pub fn enable_gro(socket: &UdpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `socket` is an open socket; the value is a c_int that lives across the
    // call, and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            (&raw const on).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads one datagram or GRO train from the UDP socket `fd` into `buf` with
/// one `recvmsg` (nonblocking: `WouldBlock` when empty), and the segment size
/// from the `UDP_GRO` control message if the kernel sent one. `buf` should
/// hold 65535 bytes: a train longer than it is cut, and what is cut is lost.
pub fn recv_gro(fd: RawFd, buf: &mut [u8]) -> io::Result<ReceivedTrain> {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut source: libc::sockaddr_in = unsafe { mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control: ControlBuffer = [0; 8];
    // SAFETY: all-zero is a valid msghdr; the pointers are set below.
    let mut message: libc::msghdr = unsafe { mem::zeroed() };
    message.msg_name = (&raw mut source).cast();
    message.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    message.msg_iov = &raw mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = mem::size_of_val(&control);
    // SAFETY: the msghdr points at the iovec (describing `buf`), the address and the
    // control buffer above, all live and writable for the call; MSG_TRUNC makes the
    // result the real length.
    let len = unsafe { libc::recvmsg(fd, &raw mut message, libc::MSG_DONTWAIT | libc::MSG_TRUNC) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = len as usize;
    Ok(ReceivedTrain {
        len: len.min(buf.len()),
        source: Ipv4Addr::from(u32::from_be(source.sin_addr.s_addr)),
        segment_size: gro_segment_size(&message),
        truncated: message.msg_flags & libc::MSG_TRUNC != 0 || len > buf.len(),
    })
}

/// The segment size in a `UDP_GRO` control message of `message`, if any.
fn gro_segment_size(message: &libc::msghdr) -> Option<usize> {
    // SAFETY: `message` was filled by recvmsg; the CMSG macros walk its control buffer
    // bounded by msg_controllen, and each header is checked before its data is read.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(message) };
    while !cmsg.is_null() {
        // SAFETY: non-null pointers from CMSG_FIRSTHDR/NXTHDR lie in the control buffer.
        let entry = unsafe { &*cmsg };
        if entry.cmsg_level == libc::SOL_UDP && entry.cmsg_type == libc::UDP_GRO {
            // SAFETY: CMSG_LEN has no preconditions.
            let data_len = entry.cmsg_len - unsafe { libc::CMSG_LEN(0) } as usize;
            // The kernel sends an int; read a u16 if ever sent as one (UDP_SEGMENT's width).
            // SAFETY: CMSG_DATA points at `data_len` bytes inside the control buffer;
            // the reads are unaligned and within that length.
            let size = unsafe {
                let data = libc::CMSG_DATA(cmsg);
                match data_len {
                    n if n >= mem::size_of::<libc::c_int>() => {
                        std::ptr::read_unaligned(data.cast::<libc::c_int>()) as usize
                    }
                    n if n >= mem::size_of::<u16>() => {
                        usize::from(std::ptr::read_unaligned(data.cast::<u16>()))
                    }
                    _ => return None,
                }
            };
            return (size > 0).then_some(size);
        }
        // SAFETY: as above: the next header, or null at the end of the buffer.
        cmsg = unsafe { libc::CMSG_NXTHDR(message, cmsg) };
    }
    None
}

/// Sends `buf` from the UDP socket `fd` to `destination` with one `sendmsg`,
/// as datagrams of `segment_size` bytes (the last one possibly shorter) that
/// the kernel cuts (`UDP_SEGMENT`, Linux's UDP GSO; at most 64 KiB and, on
/// older kernels, 64 datagrams at once). A receiver with [`enable_gro`] gets
/// them back as one train. Returns the bytes sent.
pub fn send_segmented(
    fd: RawFd,
    destination: SocketAddrV4,
    buf: &[u8],
    segment_size: usize,
) -> io::Result<usize> {
    let segment_size = u16::try_from(segment_size).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("UDP segment size {segment_size} does not fit UDP_SEGMENT's 16 bits"),
        )
    })?;
    let mut address = sockaddr(*destination.ip(), destination.port());
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    let mut control: ControlBuffer = [0; 8];
    // SAFETY: CMSG_SPACE has no preconditions.
    let control_len = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as usize;
    // SAFETY: all-zero is a valid msghdr; the pointers are set below.
    let mut message: libc::msghdr = unsafe { mem::zeroed() };
    message.msg_name = (&raw mut address).cast();
    message.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    message.msg_iov = &raw mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = control_len;
    // SAFETY: the control buffer is aligned for cmsghdr and longer than `control_len`, so
    // CMSG_FIRSTHDR returns a header inside it with room for the u16 written after it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&raw const message);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment_size);
    }
    // SAFETY: the msghdr points at the address, the iovec (describing `buf`, which the
    // kernel only reads) and the control message above, all live for the call.
    let sent = unsafe { libc::sendmsg(fd, &raw const message, libc::MSG_DONTWAIT) };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut address: libc::sockaddr_in = unsafe { mem::zeroed() };
    address.sin_family = libc::AF_INET as libc::sa_family_t;
    address.sin_port = port.to_be();
    address.sin_addr.s_addr = u32::from(ip).to_be();
    address
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive_buffer(socket: &UdpSocket) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `socket` is open; `value` and `len` outlive the call and `len` is its size.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw mut value).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "getsockopt: {}", io::Error::last_os_error());
        value
    }

    /// A receiver (with or without `UDP_GRO`) and a sender on loopback, ephemeral ports.
    fn loopback_pair(gro: bool) -> (UdpSocket, UdpSocket, SocketAddrV4) {
        let receiver = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        if gro {
            enable_gro(&receiver).unwrap();
        }
        let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let std::net::SocketAddr::V4(destination) = receiver.local_addr().unwrap() else {
            panic!("bound to IPv4")
        };
        (receiver, sender, destination)
    }

    /// Waits (up to 10 s, a bound on a hang rather than a timing claim) until `socket`
    /// is readable, then reads with [`recv_gro`].
    fn recv_when_ready(socket: &UdpSocket, buf: &mut [u8]) -> ReceivedTrain {
        let mut poll_fd = libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd that outlives the call.
        let ready = unsafe { libc::poll(&raw mut poll_fd, 1, 10_000) };
        assert_eq!(ready, 1, "nothing to read: {}", io::Error::last_os_error());
        recv_gro(socket.as_raw_fd(), buf).unwrap()
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 13 + i / 256) as u8).collect()
    }

    #[test]
    fn a_segmented_send_arrives_as_one_gro_train() {
        let (receiver, sender, destination) = loopback_pair(true);
        let data = pattern(20 * 1400);
        let sent = send_segmented(sender.as_raw_fd(), destination, &data, 1400).unwrap();
        assert_eq!(sent, data.len());
        let mut buf = vec![0; 65535];
        let train = recv_when_ready(&receiver, &mut buf);
        assert_eq!(
            train,
            ReceivedTrain {
                len: 28_000,
                source: Ipv4Addr::LOCALHOST,
                segment_size: Some(1400),
                truncated: false,
            }
        );
        assert_eq!(buf[..train.len], data[..]);

        // A short last datagram stays in the train.
        let data = pattern(3 * 1400 + 100);
        send_segmented(sender.as_raw_fd(), destination, &data, 1400).unwrap();
        let train = recv_when_ready(&receiver, &mut buf);
        assert_eq!((train.len, train.segment_size), (data.len(), Some(1400)));
        assert_eq!(buf[..train.len], data[..]);
    }

    #[test]
    fn a_plain_datagram_has_no_segment_size() {
        let (receiver, sender, destination) = loopback_pair(true);
        let data = pattern(1400);
        sender.send_to(&data, destination).unwrap();
        let mut buf = vec![0; 65535];
        let train = recv_when_ready(&receiver, &mut buf);
        assert_eq!((train.len, train.segment_size), (1400, None));
        assert!(!train.truncated);
        assert_eq!(buf[..train.len], data[..]);
    }

    #[test]
    fn without_gro_the_kernel_delivers_each_datagram() {
        let (receiver, sender, destination) = loopback_pair(false);
        let data = pattern(3 * 1400);
        send_segmented(sender.as_raw_fd(), destination, &data, 1400).unwrap();
        let mut buf = vec![0; 65535];
        for chunk in data.chunks(1400) {
            let train = recv_when_ready(&receiver, &mut buf);
            assert_eq!((train.len, train.segment_size), (1400, None));
            assert_eq!(&buf[..train.len], chunk);
        }
    }

    #[test]
    fn a_train_longer_than_the_buffer_is_reported_truncated() {
        let (receiver, sender, destination) = loopback_pair(true);
        let data = pattern(4 * 1400);
        send_segmented(sender.as_raw_fd(), destination, &data, 1400).unwrap();
        let mut buf = vec![0; 2000];
        let train = recv_when_ready(&receiver, &mut buf);
        assert!(train.truncated);
        assert_eq!(train.len, 2000);
        assert_eq!(buf[..], data[..2000]);
        // Nothing of it is left queued.
        assert_eq!(
            recv_gro(receiver.as_raw_fd(), &mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn a_segment_size_beyond_16_bits_is_refused() {
        let (_receiver, sender, destination) = loopback_pair(true);
        let error = send_segmented(sender.as_raw_fd(), destination, &[0; 10], 70_000).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_receiver_gets_the_large_receive_buffer_when_privileged() {
        // Bound on loopback with an ephemeral port; nothing is sent.
        let socket = bind_receiver(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap();
        let default = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let got = receive_buffer(&socket);
        assert!(got >= receive_buffer(&default), "{got}");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Root has CAP_NET_ADMIN, so SO_RCVBUFFORCE applies (the kernel reports double).
            assert!(
                got >= RECEIVE_BUFFER_BYTES,
                "{got} < {RECEIVE_BUFFER_BYTES}"
            );
        }
    }
}
