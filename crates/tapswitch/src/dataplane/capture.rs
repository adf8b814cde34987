//! Capture sessions (`tapswitch capture`): copies of the frames a worker reads and
//! writes at a port, and of those it drops with the reason, handed to a control
//! connection through a bounded queue.
//!
//! Forwarding never waits for a capture: a worker offers each copy with
//! `try_send` and counts what does not fit (the queue holds [`QUEUE_FRAMES`]
//! frames and [`QUEUE_BYTES`] bytes) as the session's `lost`. With no session
//! the cost is one relaxed atomic load per batch ([`CaptureHub::is_active`]) and
//! a test of a `bool` per frame.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::fdb::PortId;
use crate::forward::{DropReason, TagAction};
use crate::wire::HEADER_LEN;

/// Frames a session's queue holds before the workers count the next ones lost.
pub const QUEUE_FRAMES: usize = 1024;
/// Bytes of frame data a session's queue holds before the workers count the next
/// frames lost (bounds a capture of 64 KiB super-frames to this much memory).
pub const QUEUE_BYTES: usize = 8 << 20;
/// Bytes of each frame kept when the request does not say (a whole super-frame).
pub const DEFAULT_SNAPLEN: u32 = 262_144;

/// Which way a captured frame crossed its port, as the switch sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Read from the port (sent by its endpoint).
    Inbound,
    /// Written to the port (towards its endpoint).
    Outbound,
}

/// What a session wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureFilter {
    /// One port, or every port (`None`).
    pub port: Option<PortId>,
    /// Dropped frames too, with their reason.
    pub drops: bool,
    /// Bytes of each frame kept (at least 1).
    pub snaplen: u32,
}

/// One frame as a worker saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedFrame {
    pub port: PortId,
    pub direction: Direction,
    /// Why the switch dropped it (for an outbound frame: the write failed).
    pub drop: Option<DropReason>,
    pub time: SystemTime,
    /// Length of the whole frame (without a vnet header); `data` is at most the snap length.
    pub original_len: u32,
    pub data: Vec<u8>,
}

/// What the consumer and the workers share of one session.
#[derive(Default)]
struct SessionState {
    /// Frames that did not fit the queue.
    lost: AtomicU64,
    /// Bytes of frame data in the queue.
    queued_bytes: AtomicUsize,
}

/// A worker's end of a session.
struct Producer {
    filter: CaptureFilter,
    frames: SyncSender<CapturedFrame>,
    state: Arc<SessionState>,
}

/// Every capture session, shared by the workers.
#[derive(Default)]
pub(super) struct CaptureHub {
    /// Whether any session exists: read once per batch on the hot path.
    active: AtomicBool,
    sessions: Mutex<Vec<Producer>>,
}

impl CaptureHub {
    /// Whether frames are to be offered at all (relaxed: a session started or
    /// stopped a batch late loses or gains a batch, nothing else).
    #[inline]
    pub(super) fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    fn sessions(&self) -> MutexGuard<'_, Vec<Producer>> {
        // A worker that panicked while offering a frame left nothing half-done.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session; it ends when the returned [`CaptureSession`] is dropped.
    pub(super) fn start(self: &Arc<Self>, filter: CaptureFilter) -> CaptureSession {
        let (frames, receiver) = mpsc::sync_channel(QUEUE_FRAMES);
        let state = Arc::new(SessionState::default());
        let mut sessions = self.sessions();
        sessions.push(Producer {
            filter: CaptureFilter {
                snaplen: filter.snaplen.max(1),
                ..filter
            },
            frames,
            state: Arc::clone(&state),
        });
        self.active.store(true, Ordering::Relaxed);
        CaptureSession {
            frames: receiver,
            state,
            hub: Arc::clone(self),
        }
    }

    /// Offers a frame read from `port` (or written to it, retagged by `tag`) to
    /// every session that wants it; `drop` says why the switch dropped it.
    pub(super) fn offer(
        &self,
        port: PortId,
        direction: Direction,
        drop: Option<DropReason>,
        frame: &[u8],
        tag: TagAction,
    ) {
        let mut sessions = self.sessions();
        let mut time = None;
        sessions.retain(|session| {
            let filter = &session.filter;
            if filter.port.is_some_and(|p| p != port) || (drop.is_some() && !filter.drops) {
                return true;
            }
            let (data, original_len) = retagged(frame, tag, filter.snaplen as usize);
            let state = &session.state;
            if state.queued_bytes.load(Ordering::Relaxed) + data.len() > QUEUE_BYTES {
                state.lost.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            let len = data.len();
            let captured = CapturedFrame {
                port,
                direction,
                drop,
                time: *time.get_or_insert_with(SystemTime::now),
                original_len,
                data,
            };
            match session.frames.try_send(captured) {
                Ok(()) => {
                    state.queued_bytes.fetch_add(len, Ordering::Relaxed);
                    true
                }
                Err(TrySendError::Full(_)) => {
                    state.lost.fetch_add(1, Ordering::Relaxed);
                    true
                }
                // The consumer went away without its session's drop (it cannot
                // happen, but then the session is over all the same).
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
        if sessions.is_empty() {
            self.active.store(false, Ordering::Relaxed);
        }
    }

    fn stop(&self, state: &Arc<SessionState>) {
        let mut sessions = self.sessions();
        sessions.retain(|session| !Arc::ptr_eq(&session.state, state));
        if sessions.is_empty() {
            self.active.store(false, Ordering::Relaxed);
        }
    }
}

/// The consumer's end of a capture: frames in the order the workers offered them
/// (per worker), and how many did not fit. Dropping it ends the session.
pub struct CaptureSession {
    frames: Receiver<CapturedFrame>,
    state: Arc<SessionState>,
    hub: Arc<CaptureHub>,
}

impl CaptureSession {
    /// The next frame, or `None` when there was none for `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<CapturedFrame> {
        let frame = self.frames.recv_timeout(timeout).ok()?;
        self.state
            .queued_bytes
            .fetch_sub(frame.data.len(), Ordering::Relaxed);
        Some(frame)
    }

    /// Frames the workers could not queue for this session (it was full).
    pub fn lost(&self) -> u64 {
        self.state.lost.load(Ordering::Relaxed)
    }
}

impl Drop for CaptureSession {
    fn drop(&mut self) {
        self.hub.stop(&self.state);
    }
}

/// The first `snaplen` bytes of `frame` as it leaves with `tag` applied, and the
/// length of the whole retagged frame.
fn retagged(frame: &[u8], tag: TagAction, snaplen: usize) -> (Vec<u8>, u32) {
    const ADDRESSES: usize = 12;
    let tagged = frame.len() >= HEADER_LEN + 4;
    let mut out = Vec::with_capacity(frame.len().min(snaplen) + 4);
    match tag {
        TagAction::Push(vid) if frame.len() >= ADDRESSES => {
            out.extend_from_slice(&frame[..ADDRESSES]);
            out.extend_from_slice(&[0x81, 0x00]);
            out.extend_from_slice(&vid.to_be_bytes());
            out.extend_from_slice(&frame[ADDRESSES..]);
        }
        TagAction::Pop if tagged => {
            out.extend_from_slice(&frame[..ADDRESSES]);
            out.extend_from_slice(&frame[ADDRESSES + 4..]);
        }
        TagAction::SetVid(vid) if tagged => {
            out.extend_from_slice(frame);
            let tci = u16::from_be_bytes([frame[14], frame[15]]);
            let tci = (tci & 0xf000) | (vid & 0x0fff);
            out[14..16].copy_from_slice(&tci.to_be_bytes());
        }
        _ => out.extend_from_slice(frame),
    }
    let original_len = out.len() as u32;
    out.truncate(snaplen);
    (out, original_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: Option<u16>) -> Vec<u8> {
        let mut bytes = vec![0xff; 6];
        bytes.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        if let Some(tci) = tag {
            bytes.extend_from_slice(&[0x81, 0x00]);
            bytes.extend_from_slice(&tci.to_be_bytes());
        }
        bytes.extend_from_slice(&[0x08, 0x00]);
        bytes.resize(bytes.len() + 46, 0xab);
        bytes
    }

    fn filter(port: Option<u32>, drops: bool, snaplen: u32) -> CaptureFilter {
        CaptureFilter {
            port: port.map(PortId),
            drops,
            snaplen,
        }
    }

    #[test]
    fn tag_actions_are_applied_to_the_copy_and_snaplen_cuts_it() {
        let untagged = frame(None);
        let (pushed, len) = retagged(&untagged, TagAction::Push(10), 1000);
        assert_eq!(pushed, frame(Some(10)));
        assert_eq!(len as usize, untagged.len() + 4);
        let (popped, _) = retagged(&frame(Some(0x200a)), TagAction::Pop, 1000);
        assert_eq!(popped, untagged);
        // A priority tag keeps its PCP.
        let (set, _) = retagged(&frame(Some(0xa000)), TagAction::SetVid(20), 1000);
        assert_eq!(set, frame(Some(0xa014)));
        let (cut, len) = retagged(&untagged, TagAction::AsIs, 14);
        assert_eq!(
            (cut.as_slice(), len as usize),
            (&untagged[..14], untagged.len())
        );
    }

    #[test]
    fn sessions_get_what_they_asked_for_and_a_full_queue_counts_losses() {
        let hub = Arc::new(CaptureHub::default());
        assert!(!hub.is_active());
        let one_port = hub.start(filter(Some(1), false, 64));
        let drops = hub.start(filter(None, true, 64));
        assert!(hub.is_active());
        let bytes = frame(None);
        hub.offer(PortId(1), Direction::Inbound, None, &bytes, TagAction::AsIs);
        hub.offer(
            PortId(2),
            Direction::Outbound,
            None,
            &bytes,
            TagAction::AsIs,
        );
        let reason = Some(DropReason::VlanNotAllowed);
        hub.offer(
            PortId(1),
            Direction::Inbound,
            reason,
            &bytes,
            TagAction::AsIs,
        );
        let ports = |session: &CaptureSession| {
            std::iter::from_fn(|| session.next(Duration::ZERO))
                .map(|f| (f.port.0, f.direction, f.drop))
                .collect::<Vec<_>>()
        };
        assert_eq!(ports(&one_port), [(1, Direction::Inbound, None)]);
        assert_eq!(
            ports(&drops),
            [
                (1, Direction::Inbound, None),
                (2, Direction::Outbound, None),
                (1, Direction::Inbound, reason),
            ]
        );
        for _ in 0..QUEUE_FRAMES + 5 {
            hub.offer(PortId(1), Direction::Inbound, None, &bytes, TagAction::AsIs);
        }
        assert_eq!((one_port.lost(), drops.lost()), (5, 5));
        drop(one_port);
        assert!(hub.is_active());
        drop(drops);
        assert!(!hub.is_active(), "the last session's end turns capture off");
    }
}
