//! A port on an existing netdev the switch did not create (a veth, a NIC or bond, or a
//! VM's own TAP that QEMU holds), through an `AF_PACKET` socket bound to it.
//!
//! The socket is opened inside the device's namespace (a socket keeps the namespace it
//! was made in for its netdev lookups, but the bound device is all it uses); the device
//! itself is never created, changed or deleted here, and the promiscuous membership
//! ends with the socket.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use super::Port;
use crate::sys::netns::{self, NetnsError};
use crate::sys::packet::{PacketError, PacketOptions, PacketSocket};
use crate::vnet::shift_frame_offsets;
use crate::wire::{ADDRESSES_LEN, VLAN_TAG_LEN, VlanTag};

/// Why a netdev port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    #[error("netdev port {port} ({place}): {source}")]
    Packet {
        port: String,
        /// `namespace NS`, or the switch's own.
        place: String,
        #[source]
        source: PacketError,
    },
    #[error("netdev port {port}: {source}")]
    Netns {
        port: String,
        #[source]
        source: NetnsError,
    },
}

/// A port whose frames are those of the netdev `device`, read and written through one
/// `AF_PACKET` socket.
#[derive(Debug)]
pub struct NetdevPort {
    name: String,
    socket: PacketSocket,
}

impl NetdevPort {
    /// Opens the port `name` on `device`, inside the namespace `netns` (`None`: ours).
    pub fn open(
        name: &str,
        device: &str,
        netns: Option<&str>,
        options: PacketOptions,
    ) -> Result<Self, NetdevError> {
        let packet = |source| NetdevError::Packet {
            port: name.to_owned(),
            place: match netns {
                Some(ns) => format!("namespace {ns}"),
                None => "the switch's namespace".to_owned(),
            },
            source,
        };
        let device_owned = device.to_owned();
        let socket = match netns {
            None => PacketSocket::open(device, options).map_err(packet)?,
            Some(ns) => netns::run_in(ns, move || PacketSocket::open(&device_owned, options))
                .map_err(|source| NetdevError::Netns {
                    port: name.to_owned(),
                    source,
                })?
                .map_err(packet)?,
        };
        Ok(Self::from_socket(name, socket))
    }

    /// The port `name` on an already opened socket (handed over by an upgrade).
    pub fn from_socket(name: &str, socket: PacketSocket) -> Self {
        Self {
            name: name.to_owned(),
            socket,
        }
    }

    pub fn socket(&self) -> &PacketSocket {
        &self.socket
    }

    pub fn device(&self) -> &str {
        self.socket.device()
    }
}

/// What a packet socket's errors mean in the terms the dataplane reads a TAP's in: a
/// device that is down (`ENETDOWN`, reported once on receive and on every send) is
/// EIO, as on a TAP; a frame the kernel could not describe in a vnet header (`EINVAL`
/// on receive; the frame is consumed) is skipped like an interrupted read.
fn as_tap_error(error: io::Error, receiving: bool) -> io::Error {
    match error.raw_os_error() {
        Some(libc::ENETDOWN) => io::Error::from_raw_os_error(libc::EIO),
        Some(libc::EINVAL) if receiving => io::Error::from_raw_os_error(libc::EINTR),
        _ => error,
    }
}

/// Puts the tag `(tpid, tci)` back between the MACs and the EtherType of the frame of
/// `len` bytes after a vnet header of `hdr_len` bytes in `buf`, moving the header's
/// offsets with it. Returns the new length; `buf` has room for the tag.
fn insert_tag(buf: &mut [u8], hdr_len: usize, len: usize, tpid: u16, tci: u16) -> usize {
    let at = hdr_len + ADDRESSES_LEN;
    if len < at {
        return len;
    }
    buf.copy_within(at..len, at + VLAN_TAG_LEN);
    buf[at..at + VLAN_TAG_LEN].copy_from_slice(&VlanTag::from_tci(tpid, tci).to_bytes());
    if hdr_len > 0 {
        let header: &mut [u8; crate::vnet::VNET_HDR_LEN] = (&mut buf[..hdr_len])
            .try_into()
            .expect("a netdev port's vnet header is virtio_net_hdr_v1");
        shift_frame_offsets(header, VLAN_TAG_LEN as isize);
    }
    len + VLAN_TAG_LEN
}

impl Port for NetdevPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn raw_fd(&self, _queue: usize) -> RawFd {
        self.socket.as_raw_fd()
    }

    fn vnet_hdr_len(&self) -> usize {
        self.socket.vnet_hdr_len()
    }

    fn recv(&self, _queue: usize, buf: &mut [u8]) -> io::Result<usize> {
        // Keep room for a tag the kernel took out of the frame.
        let room = buf.len().saturating_sub(VLAN_TAG_LEN);
        let received = self
            .socket
            .recv(&mut buf[..room])
            .map_err(|error| as_tap_error(error, true))?;
        if received.truncated {
            // Larger than any frame a port carries: skip it.
            return Err(io::Error::from_raw_os_error(libc::EINTR));
        }
        Ok(match received.vlan {
            Some((tpid, tci)) => insert_tag(buf, self.vnet_hdr_len(), received.len, tpid, tci),
            None => received.len,
        })
    }

    fn send(&self, frame: &[u8]) -> io::Result<usize> {
        self.socket
            .send(frame)
            .map_err(|error| as_tap_error(error, false))
    }

    fn send_parts(&self, head: &[u8], body: &[u8]) -> io::Result<usize> {
        self.send_vectored(&[io::IoSlice::new(head), io::IoSlice::new(body)])
    }

    fn send_vectored(&self, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.socket
            .send_vectored(parts)
            .map_err(|error| as_tap_error(error, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vnet::VNET_HDR_LEN;

    #[test]
    fn a_tag_taken_out_by_the_kernel_goes_back_after_the_macs() {
        let frame: Vec<u8> = (0..20u8).collect();
        let mut buf = frame.clone();
        buf.resize(frame.len() + VLAN_TAG_LEN, 0);
        let len = insert_tag(&mut buf, 0, frame.len(), 0x8100, 0x0005);
        assert_eq!(len, frame.len() + 4);
        assert_eq!(&buf[..12], &frame[..12]);
        assert_eq!(&buf[12..16], &[0x81, 0x00, 0x00, 0x05]);
        assert_eq!(&buf[16..len], &frame[12..]);
    }

    #[test]
    fn the_vnet_offsets_move_with_the_tag() {
        let mut buf = vec![0u8; VNET_HDR_LEN + 60 + VLAN_TAG_LEN];
        // flags NEEDS_CSUM, gso none, hdr_len 54, csum_start 34, csum_offset 16.
        buf[0] = 1;
        buf[2..4].copy_from_slice(&54u16.to_le_bytes());
        buf[6..8].copy_from_slice(&34u16.to_le_bytes());
        buf[8..10].copy_from_slice(&16u16.to_le_bytes());
        insert_tag(&mut buf, VNET_HDR_LEN, VNET_HDR_LEN + 60, 0x8100, 7);
        assert_eq!(u16::from_le_bytes([buf[2], buf[3]]), 58);
        assert_eq!(u16::from_le_bytes([buf[6], buf[7]]), 38);
        assert_eq!(u16::from_le_bytes([buf[8], buf[9]]), 16);
    }

    #[test]
    fn a_down_device_reads_and_writes_as_a_down_tap() {
        let down = || io::Error::from_raw_os_error(libc::ENETDOWN);
        assert_eq!(as_tap_error(down(), true).raw_os_error(), Some(libc::EIO));
        assert_eq!(as_tap_error(down(), false).raw_os_error(), Some(libc::EIO));
        let gone = io::Error::from_raw_os_error(libc::ENXIO);
        assert_eq!(as_tap_error(gone, false).raw_os_error(), Some(libc::ENXIO));
    }
}
