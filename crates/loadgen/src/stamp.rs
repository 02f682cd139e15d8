//! The stamped 160-byte audio frame: who sent it, its sequence number, when
//! it was due and when it actually left. The echo far ends (the sim's, and
//! SIPp's `-rtp_echo` behind PCMU, which the server passes through) return
//! the bytes unchanged, so the load generator can match every echo to its
//! send and check that nothing else in it changed.
//! The rest of the frame is mu-law silence (`0xFF`).

use audin_protocol::FRAME_BYTES;

/// Marks a load-generator frame.
pub const MAGIC: [u8; 4] = *b"ALG1";

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Which call sent it (the load generator's call index).
    pub call: u32,
    /// Sequence number within the call.
    pub seq: u32,
    /// When it was due (ns since the load generator's epoch).
    pub due_ns: u64,
    /// When it was handed to the SDK (ns since the epoch).
    pub sent_ns: u64,
}

impl Stamp {
    /// The frame that carries this stamp.
    pub fn encode(&self) -> [u8; FRAME_BYTES] {
        let mut f = [0xFF; FRAME_BYTES];
        f[0..4].copy_from_slice(&MAGIC);
        f[4..8].copy_from_slice(&self.call.to_le_bytes());
        f[8..12].copy_from_slice(&self.seq.to_le_bytes());
        f[12..20].copy_from_slice(&self.due_ns.to_le_bytes());
        f[20..28].copy_from_slice(&self.sent_ns.to_le_bytes());
        f
    }

    /// Whether `frame` is exactly the frame this stamp was sent in (the
    /// silence after the stamp included).
    pub fn is_intact(&self, frame: &[u8]) -> bool {
        frame == self.encode().as_slice()
    }

    /// The stamp of a frame, if it is one of ours.
    pub fn decode(f: &[u8]) -> Option<Stamp> {
        if f.len() < 28 || f[0..4] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(f[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(f[i..i + 8].try_into().expect("8 bytes"));
        Some(Stamp {
            call: u32_at(4),
            seq: u32_at(8),
            due_ns: u64_at(12),
            sent_ns: u64_at(20),
        })
    }
}

/// Nanoseconds since the process-wide epoch (first call).
pub fn now_ns() -> u64 {
    ns_since_epoch(std::time::Instant::now())
}

/// `t` as nanoseconds since the process-wide epoch.
pub fn ns_since_epoch(t: std::time::Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_nanos() as u64
}

/// The epoch (fixed at first use).
pub fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = Stamp {
            call: 7,
            seq: 123_456,
            due_ns: 1 << 40,
            sent_ns: (1 << 40) + 5,
        };
        let f = s.encode();
        assert_eq!(f.len(), 160);
        assert_eq!(f[100], 0xFF);
        assert_eq!(Stamp::decode(&f), Some(s));
        assert_eq!(Stamp::decode(&[0xFF; 160]), None);
    }

    #[test]
    fn a_frame_changed_after_the_stamp_is_not_intact() {
        let s = Stamp {
            call: 3,
            seq: 9,
            due_ns: 1_000,
            sent_ns: 1_001,
        };
        let mut f = s.encode();
        assert!(s.is_intact(&f));
        // One silence byte re-quantised (e.g. by a µ-law → A-law → µ-law
        // trip): the stamp still decodes, the frame is not what was sent.
        f[100] = 0x7F;
        assert_eq!(Stamp::decode(&f), Some(s));
        assert!(!s.is_intact(&f));
        assert!(!s.is_intact(&f[..28]), "a truncated frame");
    }
}
