//! Per-call audio: two small frame queues between the application and the
//! call's audio socket task. Frames never pass through the core.

use audin_codec::mulaw;
use audin_protocol::FRAME_BYTES;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// One 20 ms frame of 8 kHz G.711 mu-law.
pub type Frame = [u8; FRAME_BYTES];
/// One 20 ms frame of 8 kHz 16-bit PCM.
pub type PcmFrame = [i16; FRAME_BYTES];

/// Frames a queue holds before dropping the oldest: 200 ms, like the
/// server's per-direction back-pressure, so a stalled reader adds at most
/// that much latency.
pub const QUEUE_FRAMES: usize = 10;

/// A bounded single-consumer queue that drops the oldest frame when full.
#[derive(Debug, Default)]
pub(crate) struct FrameQueue {
    state: Mutex<QueueState>,
    notify: Notify,
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct QueueState {
    frames: VecDeque<Frame>,
    closed: bool,
}

impl FrameQueue {
    pub(crate) fn push(&self, frame: Frame) {
        let mut state = self.state.lock().expect("queue lock");
        if state.closed {
            return;
        }
        if state.frames.len() >= QUEUE_FRAMES {
            state.frames.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        state.frames.push_back(frame);
        drop(state);
        self.notify.notify_one();
    }

    pub(crate) fn try_pop(&self) -> Option<Frame> {
        self.state.lock().expect("queue lock").frames.pop_front()
    }

    /// The next frame; None once the queue is closed and empty.
    pub(crate) async fn pop(&self) -> Option<Frame> {
        loop {
            {
                let mut state = self.state.lock().expect("queue lock");
                if let Some(frame) = state.frames.pop_front() {
                    return Some(frame);
                }
                if state.closed {
                    return None;
                }
            }
            // notify_one stores a permit, so a push between the check and
            // this await is not missed.
            self.notify.notified().await;
        }
    }

    pub(crate) fn close(&self) {
        self.state.lock().expect("queue lock").closed = true;
        self.notify.notify_one();
    }

    pub(crate) fn clear(&self) {
        self.state.lock().expect("queue lock").frames.clear();
    }
}

/// The shared audio state of one call.
#[derive(Debug, Default)]
pub(crate) struct CallMedia {
    /// Application → far end.
    pub(crate) outgoing: FrameQueue,
    /// Far end → application.
    pub(crate) incoming: FrameQueue,
    /// While set, the socket sends silence instead of `outgoing` frames.
    pub(crate) muted: AtomicBool,
}

impl CallMedia {
    /// The frame to put on the wire for `frame`, honouring mute.
    pub(crate) fn wire_frame(&self, frame: Frame) -> Frame {
        if self.muted.load(Ordering::Relaxed) {
            [mulaw::SILENCE; FRAME_BYTES]
        } else {
            frame
        }
    }

    pub(crate) fn close(&self) {
        self.outgoing.close();
        self.incoming.close();
    }
}

/// A call's audio: 20 ms frames of 8 kHz G.711 mu-law in both directions.
///
/// Send one frame every 20 ms (the socket forwards them as they come; it
/// does not pace). Each direction buffers at most [`QUEUE_FRAMES`] frames
/// and drops the oldest beyond that. While the call is muted the socket
/// sends silence whatever you send. Have one task receive: frames are not
/// duplicated between clones.
#[derive(Debug, Clone)]
pub struct AudioIo {
    pub(crate) media: Arc<CallMedia>,
}

impl AudioIo {
    /// Queues one mu-law frame for the far end.
    pub fn send_frame(&self, frame: Frame) {
        self.media.outgoing.push(frame);
    }

    /// The next mu-law frame from the far end; None once the call ended.
    pub async fn recv_frame(&self) -> Option<Frame> {
        self.media.incoming.pop().await
    }

    /// A frame from the far end if one is waiting.
    pub fn try_recv_frame(&self) -> Option<Frame> {
        self.media.incoming.try_pop()
    }

    /// Encodes 20 ms of 8 kHz PCM to mu-law (G.191-exact) and queues it.
    pub fn send_pcm(&self, pcm: &PcmFrame) {
        let mut frame = [0u8; FRAME_BYTES];
        mulaw::encode_slice(pcm, &mut frame);
        self.send_frame(frame);
    }

    /// The next frame from the far end, decoded to 8 kHz PCM.
    pub async fn recv_pcm(&self) -> Option<PcmFrame> {
        let frame = self.recv_frame().await?;
        let mut pcm = [0i16; FRAME_BYTES];
        mulaw::decode_slice(&frame, &mut pcm);
        Some(pcm)
    }

    /// Frames dropped so far because a queue was full (both directions).
    pub fn dropped_frames(&self) -> u64 {
        self.media.outgoing.dropped.load(Ordering::Relaxed)
            + self.media.incoming.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drops_oldest_and_closes() {
        let q = FrameQueue::default();
        for i in 0..(QUEUE_FRAMES as u8 + 3) {
            q.push([i; FRAME_BYTES]);
        }
        assert_eq!(q.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(q.pop().await.unwrap()[0], 3);
        q.close();
        let mut left = 0;
        while q.pop().await.is_some() {
            left += 1;
        }
        assert_eq!(left, QUEUE_FRAMES - 1);
    }

    #[test]
    fn mute_sends_silence() {
        let media = CallMedia::default();
        assert_eq!(media.wire_frame([1; FRAME_BYTES])[0], 1);
        media.muted.store(true, Ordering::Relaxed);
        assert_eq!(media.wire_frame([1; FRAME_BYTES]), [0xFF; FRAME_BYTES]);
    }
}
