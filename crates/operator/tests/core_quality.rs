//! The call-quality monitor in simulated time: figures, warnings raised
//! under a sustained condition, no flapping around a threshold, and
//! clearing with hysteresis.

use audin_operator::core::quality::{QualityEvent, QualityMonitor, Sample, Warning, mos};

/// A simulated call: 50 far-end frames a second, 1 Hz samples, pings
/// answered after `rtt` ms.
struct Call {
    q: QualityMonitor,
    t: f64,
    frame: u64,
    sent: u64,
    played: u64,
    concealed: u64,
    events: Vec<(f64, QualityEvent)>,
    pending_pong: Vec<(f64, u32)>,
    /// Far-end frames on their way: arrival times, in order.
    in_flight: std::collections::VecDeque<f64>,
    last_arrival: f64,
    rng: u64,
}

#[derive(Clone, Copy)]
struct Net {
    /// Drop every n-th frame.
    lose_every: Option<u64>,
    /// Extra delay of odd frames, ms (order kept).
    jitter: f64,
    /// Instead: a random extra delay in `[0, spread]` ms per frame, order
    /// kept as over TCP (a frame never overtakes the one before it).
    spread: f64,
    /// Pong delay; `None`: never answered.
    rtt: Option<f64>,
    /// No far-end frames at all.
    silent: bool,
    /// Microphone level: constant or varying.
    mic_constant: bool,
    /// Microphone level instead: this level, moving by this share of it
    /// (a live microphone's noise floor, a steady tone, a stuck value).
    mic: Option<(f64, f64)>,
    muted: bool,
}

const CLEAN: Net = Net {
    lose_every: None,
    jitter: 0.0,
    spread: 0.0,
    rtt: Some(40.0),
    silent: false,
    mic_constant: false,
    mic: None,
    muted: false,
};

impl Call {
    fn new() -> Self {
        Self {
            q: QualityMonitor::new(),
            t: 1_000.0,
            frame: 0,
            sent: 0,
            played: 0,
            concealed: 0,
            events: Vec::new(),
            pending_pong: Vec::new(),
            in_flight: std::collections::VecDeque::new(),
            last_arrival: 0.0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn run(&mut self, seconds: u32, net: Net) {
        for _ in 0..seconds {
            let mut rx = 0;
            for i in 0..50u64 {
                let now = self.t + i as f64 * 20.0;
                self.frame += 1;
                self.sent += 1;
                let lost = net.lose_every.is_some_and(|n| self.frame % n == 0);
                if !net.silent && !lost {
                    if net.spread > 0.0 {
                        let arrival = (now + self.random() * net.spread).max(self.last_arrival);
                        self.last_arrival = arrival;
                        self.in_flight.push_back(arrival);
                    } else {
                        let late = if self.frame % 2 == 1 { net.jitter } else { 0.0 };
                        self.q.frame_received(now + late);
                        rx += 1;
                    }
                }
                while self.in_flight.front().is_some_and(|&at| at <= now) {
                    let at = self.in_flight.pop_front().unwrap();
                    self.q.frame_received(at);
                    rx += 1;
                }
                if i % 2 == 0 {
                    let level = if let Some((level, wobble)) = net.mic {
                        level * (1.0 + wobble * ((self.frame % 7) as f64 / 6.0 - 0.5))
                    } else if net.mic_constant {
                        0.0
                    } else {
                        0.05 + (self.frame % 7) as f64 * 0.01
                    };
                    self.q.levels(now, level, 0.1);
                }
                if let Some(text) = self.q.poll_ping(now) {
                    let id: u32 = text
                        .trim_start_matches(r#"{"type":"ping","id":"#)
                        .trim_end_matches('}')
                        .parse()
                        .unwrap();
                    if let Some(rtt) = net.rtt {
                        self.pending_pong.push((now + rtt, id));
                    }
                }
                let due: Vec<_> = self
                    .pending_pong
                    .iter()
                    .copied()
                    .filter(|p| p.0 <= now)
                    .collect();
                self.pending_pong.retain(|p| p.0 > now);
                for (at, id) in due {
                    let text = format!(r#"{{"type":"pong","id":{id}}}"#);
                    assert!(self.q.audio_text(at, &text));
                }
            }
            self.t += 1_000.0;
            self.played += rx;
            self.concealed += 50u64.saturating_sub(rx);
            self.q.sample(
                self.t,
                Sample {
                    frames_sent: self.sent,
                    played: self.played,
                    concealed: self.concealed,
                    playout_delay_ms: 40.0,
                    muted: net.muted,
                },
            );
            while let Some(e) = self.q.poll_event() {
                self.events.push((self.t, e));
            }
        }
    }

    /// Uniform in `[0, 1)` (xorshift64*: repeatable).
    fn random(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn of(&self, w: Warning) -> Vec<bool> {
        self.events
            .iter()
            .filter(|(_, e)| e.warning == w)
            .map(|(_, e)| e.raised)
            .collect()
    }
}

#[test]
fn a_clean_call_raises_nothing_and_scores_well() {
    let mut c = Call::new();
    c.run(60, CLEAN);
    assert!(c.events.is_empty(), "{:?}", c.events);
    let s = c.q.stats();
    assert_eq!(s.frames_sent, 3_000);
    assert_eq!(s.frames_received, 3_000);
    assert!(s.frames_lost <= 1, "{}", s.frames_lost);
    assert!(s.packet_loss_percent < 0.5);
    assert!(s.jitter_ms < 1.0);
    assert_eq!(s.rtt_ms, Some(40.0));
    assert!(s.mos.unwrap() > 4.3, "{:?}", s.mos);
    assert!(s.input_level > 0.0 && s.output_level > 0.0);
    let json = s.to_json();
    assert!(
        json.starts_with(r#"{"framesSent":3000,"framesReceived":3000,"#),
        "{json}"
    );
    assert!(json.contains(r#""rttMs":40,"#), "{json}");
}

#[test]
fn loss_is_measured_raised_after_3_of_5_samples_and_cleared_with_hysteresis() {
    let mut c = Call::new();
    c.run(10, CLEAN);
    // 5 % loss: every 20th frame.
    c.run(
        2,
        Net {
            lose_every: Some(20),
            ..CLEAN
        },
    );
    assert!(
        c.of(Warning::HighPacketLoss).is_empty(),
        "not after 2 samples"
    );
    c.run(
        8,
        Net {
            lose_every: Some(20),
            ..CLEAN
        },
    );
    assert_eq!(c.of(Warning::HighPacketLoss), [true]);
    let s = c.q.stats();
    assert!(
        (s.packet_loss_percent - 5.0).abs() < 1.0,
        "{}",
        s.packet_loss_percent
    );
    // 25 lost; the last second's 2 or 3 are confirmed at the next sample.
    assert!((22..=26).contains(&s.frames_lost), "{}", s.frames_lost);
    assert!((s.concealed_percent - 5.0).abs() < 1.0);
    // MOS: Ppl 5 % costs about 16 R points.
    assert!((s.mos.unwrap() - mos(20.0 + 40.0 + 20.0, 5.0)).abs() < 0.15);
    // The window still holds lossy seconds for a while: no clear at once.
    c.run(5, CLEAN);
    assert_eq!(c.of(Warning::HighPacketLoss), [true]);
    c.run(10, CLEAN);
    assert_eq!(c.of(Warning::HighPacketLoss), [true, false]);
    let (_, cleared) = c.events.last().unwrap();
    assert_eq!(cleared.threshold, 1.0);
}

/// Frames held up behind a late one (in-order delivery, as on the audio
/// socket) are in flight, not lost: up to 200 ms of jitter read as 8–16 %
/// loss before the lag allowance.
#[test]
fn in_order_jitter_reads_as_jitter_not_loss() {
    let mut c = Call::new();
    let mut readings = Vec::new();
    for _ in 0..20 {
        c.run(
            1,
            Net {
                spread: 200.0,
                ..CLEAN
            },
        );
        let s = c.q.stats();
        readings.push((s.packet_loss_percent, s.frames_lost));
    }
    // The first sample's window is one second: a frame or two still in
    // flight is a few percent of it.
    for &(loss, lost) in &readings[1..] {
        assert!(loss < 2.0 && lost <= 3, "{readings:?}");
    }
    assert!(c.of(Warning::HighPacketLoss).is_empty());
    // Seen as jitter instead.
    let jitter = c.q.stats().jitter_ms;
    assert!(jitter > 15.0, "{jitter}");
}

/// Real loss under the same jitter is still measured: the lag allowance
/// does not hide lost frames.
#[test]
fn loss_under_in_order_jitter_is_still_measured() {
    let mut c = Call::new();
    c.run(5, CLEAN);
    let mut readings = Vec::new();
    for _ in 0..15 {
        c.run(
            1,
            Net {
                spread: 200.0,
                lose_every: Some(20),
                ..CLEAN
            },
        );
        readings.push(c.q.stats().packet_loss_percent);
    }
    // The window (5 s) is all lossy from the 5th lossy second on.
    for loss in &readings[5..] {
        assert!((loss - 5.0).abs() < 1.5, "{readings:?}");
    }
    assert_eq!(c.of(Warning::HighPacketLoss), [true]);
}

#[test]
fn heavy_loss_also_lowers_the_mos_below_3_5() {
    let mut c = Call::new();
    c.run(
        10,
        Net {
            lose_every: Some(8),
            ..CLEAN
        },
    );
    assert_eq!(c.of(Warning::LowMos), [true]);
    assert!(c.q.stats().mos.unwrap() < 3.5);
    c.run(20, CLEAN);
    assert_eq!(c.of(Warning::LowMos), [true, false]);
}

#[test]
fn jitter_is_raised_and_cleared() {
    let mut c = Call::new();
    c.run(
        5,
        Net {
            jitter: 19.0,
            ..CLEAN
        },
    );
    // |D| alternates 39 / 1 ms … a mean of 20 ms: below 30.
    assert!(c.of(Warning::HighJitter).is_empty());
    assert!(
        (c.q.stats().jitter_ms - 19.0).abs() < 3.0,
        "{}",
        c.q.stats().jitter_ms
    );
    c.run(
        10,
        Net {
            jitter: 60.0,
            ..CLEAN
        },
    );
    assert_eq!(c.of(Warning::HighJitter), [true]);
    assert!(c.q.stats().jitter_ms > 45.0);
    c.run(10, CLEAN);
    assert_eq!(c.of(Warning::HighJitter), [true, false]);
}

#[test]
fn rtt_is_raised_does_not_flap_and_clears_below_the_lower_threshold() {
    let mut c = Call::new();
    c.run(
        12,
        Net {
            rtt: Some(500.0),
            ..CLEAN
        },
    );
    assert_eq!(c.of(Warning::HighRtt), [true]);
    // 350 ms: under the raise threshold but above the clear one.
    c.run(
        20,
        Net {
            rtt: Some(350.0),
            ..CLEAN
        },
    );
    assert_eq!(
        c.of(Warning::HighRtt),
        [true],
        "no flapping between 300 and 400"
    );
    c.run(12, CLEAN);
    assert_eq!(c.of(Warning::HighRtt), [true, false]);
    // A path that stops answering: the unanswered ping's age is the figure.
    c.run(8, Net { rtt: None, ..CLEAN });
    assert_eq!(c.of(Warning::HighRtt), [true, false, true]);
    assert!(c.q.stats().rtt_ms.unwrap() > 400.0);
}

#[test]
fn a_value_hovering_at_the_threshold_raises_once() {
    let mut c = Call::new();
    for k in 0..30 {
        let rtt = if k % 2 == 0 { 380.0 } else { 420.0 };
        c.run(
            2,
            Net {
                rtt: Some(rtt),
                ..CLEAN
            },
        );
    }
    assert!(
        c.of(Warning::HighRtt).len() <= 1,
        "{:?}",
        c.of(Warning::HighRtt)
    );
}

#[test]
fn a_constant_microphone_is_raised_after_10_s_unless_muted() {
    let mut c = Call::new();
    let dead = Net {
        mic_constant: true,
        ..CLEAN
    };
    c.run(9, dead);
    assert!(c.of(Warning::ConstantAudioInputLevel).is_empty());
    c.run(1, dead);
    assert_eq!(c.of(Warning::ConstantAudioInputLevel), [true]);
    c.run(3, CLEAN);
    assert_eq!(c.of(Warning::ConstantAudioInputLevel), [true, false]);
    // Muted: the far end hears silence anyway; no news.
    let mut m = Call::new();
    m.run(
        30,
        Net {
            muted: true,
            ..dead
        },
    );
    assert!(m.events.is_empty(), "{:?}", m.events);
}

#[test]
fn no_audio_received_is_raised_when_frames_stop_and_cleared_when_they_flow() {
    let mut c = Call::new();
    c.run(5, CLEAN);
    c.run(
        1,
        Net {
            silent: true,
            ..CLEAN
        },
    );
    assert!(c.of(Warning::NoAudioReceived).is_empty());
    c.run(
        2,
        Net {
            silent: true,
            ..CLEAN
        },
    );
    assert_eq!(c.of(Warning::NoAudioReceived), [true]);
    let (_, e) = c
        .events
        .iter()
        .find(|(_, e)| e.warning == Warning::NoAudioReceived)
        .unwrap();
    assert!(e.value >= 1_000.0 && e.threshold == 1_000.0, "{e:?}");
    c.run(3, CLEAN);
    assert_eq!(c.of(Warning::NoAudioReceived), [true, false]);
    // And a call that never receives a frame.
    let mut n = Call::new();
    n.run(
        4,
        Net {
            silent: true,
            ..CLEAN
        },
    );
    assert_eq!(n.of(Warning::NoAudioReceived), [true]);
}

#[test]
fn events_and_stats_serialise_for_the_driver() {
    let mut c = Call::new();
    c.run(
        4,
        Net {
            silent: true,
            ..CLEAN
        },
    );
    // 100 % concealment is also a low MOS.
    assert_eq!(c.of(Warning::LowMos), [true]);
    let (_, e) = c
        .events
        .iter()
        .find(|(_, e)| e.warning == Warning::NoAudioReceived)
        .unwrap();
    let json = e.to_json();
    assert!(
        json.starts_with(r#"{"name":"no-audio-received","raised":true,"value":"#),
        "{json}"
    );
    assert!(json.ends_with(r#","threshold":1000}"#), "{json}");
    let v: serde_json::Value = serde_json::from_str(&c.q.stats().to_json()).unwrap();
    assert_eq!(v["framesReceived"], 0);
    assert!(v["mos"].as_f64().is_some());
    // Not a pong, or a stale one: left for the operator core / ignored.
    assert!(!c.q.audio_text(
        0.0,
        r#"{"type":"attached","callSid":"c","answered":true,"resumed":false}"#
    ));
    assert!(c.q.audio_text(0.0, r#"{"type":"pong","id":999999}"#));
    assert!(!c.q.pong(0.0, 999_999));
}

#[test]
fn a_live_microphone_is_not_constant_however_quiet_a_stuck_one_is() {
    // A quiet room at −60 and −90 dBFS (the noise moves by a few percent
    // from one reading to the next), a steady test tone (its 50 ms readings
    // move by about 0.3 %): the operator listening is not a dead microphone.
    for (level, wobble) in [(0.001, 0.05), (0.000_03, 0.05), (0.177, 0.003)] {
        let mut c = Call::new();
        c.run(
            15,
            Net {
                mic: Some((level, wobble)),
                ..CLEAN
            },
        );
        assert!(c.events.is_empty(), "level {level}: {:?}", c.events);
    }
    // A stuck value, not only silence, is dead: it does not move at all.
    let mut c = Call::new();
    c.run(
        10,
        Net {
            mic: Some((0.25, 0.0)),
            ..CLEAN
        },
    );
    assert_eq!(c.of(Warning::ConstantAudioInputLevel), [true]);
    let (_, e) = c.events.last().unwrap();
    assert_eq!((e.value, e.threshold), (0.0, 0.01));
}

#[test]
fn a_ping_lost_with_a_replaced_socket_does_not_read_as_the_round_trip() {
    let mut c = Call::new();
    c.run(5, CLEAN);
    // The audio socket dies: the ping sent on it is never answered. The
    // call's audio is reattached on a new socket, whose pongs come back.
    c.run(2, Net { rtt: None, ..CLEAN });
    c.run(15, CLEAN);
    assert!(c.of(Warning::HighRtt).is_empty(), "{:?}", c.events);
    assert_eq!(c.q.stats().rtt_ms, Some(40.0));
}
