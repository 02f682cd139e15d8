//! What the SIP test files share, so each says only what its tests are
//! about: a time bound, waits for the carrier's events, a trunk for far
//! ends on loopback, what an operator hears and a tone to send it, a
//! capture of the service's log lines, and the pieces
//! of SIPp caller (UAC) scenarios that every inbound test sends.

use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use audin_server::carrier::{
    CallMedia, CarrierEvent, CarrierLeg, EndCause, EventReceiver, OperatorAudio,
};
use bytes::Bytes;

use crate::audio::{Analysis, TELEPHONY_RATE, analyze, from_mulaw, sine, to_f32, to_mulaw};
use audin_server::sip::trunk::SipTrunkConfig;

use super::{AudioSource, Baresip, EventKind};

/// A far end's or the service's reaction (a busy 2-core box included).
pub const EVENT: Duration = Duration::from_secs(8);

/// Our number as the tests' callers dial it.
pub const OUR_E164: &str = "+390299999999";

/// A 440 Hz source lasting longer than any call of the tests.
pub const A440: AudioSource = AudioSource::Tone {
    hz: 440.0,
    rms_dbfs: -20.0,
    seconds: 40,
};

/// Runs `body`, failing if it takes longer than `bound`.
pub async fn bounded(
    test: &str,
    bound: Duration,
    body: impl Future<Output = Result<()>>,
) -> Result<()> {
    match tokio::time::timeout(bound, body).await {
        Ok(result) => result,
        Err(_) => bail!("{test} did not finish within {bound:?}"),
    }
}

/// A trunk for calls from loopback (baresip, a SIPp caller).
pub fn loopback_trunk() -> SipTrunkConfig {
    SipTrunkConfig::new("loop", "sip:127.0.0.1:5060")
        .and_then(|t| t.allow("127.0.0.0/8"))
        .expect("a valid trunk")
}

/// The next event of a call's carrier leg, within [`EVENT`].
pub async fn next_event(events: &mut EventReceiver) -> Result<CarrierEvent> {
    tokio::time::timeout(EVENT, events.recv())
        .await
        .context("no carrier event")?
        .context("event channel closed")
}

/// How the leg ended (digits on the way are skipped; anything else is an
/// error).
pub async fn ended(events: &mut EventReceiver) -> Result<EndCause> {
    loop {
        match next_event(events).await? {
            CarrierEvent::Ended(cause) => return Ok(cause),
            CarrierEvent::Dtmf(_) => {}
            other => bail!("expected Ended, got {other:?}"),
        }
    }
}

/// The reason baresip gives when its call closes (`486 Busy Here`, …).
pub async fn closed_reason(b: &Baresip) -> Result<String> {
    Ok(b.wait_event(EventKind::CallClosed, EVENT)
        .await?
        .param
        .unwrap_or_default())
}

/// Everything a test binary logs from the first [`log_capture`] on.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl std::fmt::Debug for LogCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogCapture").finish_non_exhaustive()
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log capture").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// All of it.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log capture")).into_owned()
    }

    /// The lines with the field `trunk=NAME` (tests run in parallel).
    pub fn lines_of_trunk(&self, name: &str) -> Vec<String> {
        let field = format!("trunk={name}");
        self.text()
            .lines()
            .filter(|l| l.ends_with(&field) || l.contains(&format!("{field} ")))
            .map(str::to_owned)
            .collect()
    }
}

/// The test binary's log lines at `trace` for our crates, from the first
/// call on. A global subscriber, not a per-thread one: tracing caches
/// per-callsite interest across threads, and a scoped subscriber missed
/// events under parallel tests.
pub fn log_capture() -> &'static LogCapture {
    static CAPTURE: OnceLock<LogCapture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = LogCapture::default();
        let writer = capture.clone();
        tracing_subscriber::fmt()
            .with_env_filter(audin_server::log_filter(Some("trace")))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        capture
    })
}

/// Pieces of a SIPp caller (UAC) scenario calling `[service]` (the number
/// given with `SippOptions::service`) from `+390211111117`.
pub mod uac {
    /// The head of the initial INVITE, up to its own headers and body.
    pub const INVITE_HEAD: &str = "INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n\
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
From: <sip:+390211111117@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]\n\
To: <sip:[service]@[remote_ip]:[remote_port]>\n\
Call-ID: [call_id]\n\
CSeq: 1 INVITE\n\
Contact: <sip:sipp@[local_ip]:[local_port]>\n\
Max-Forwards: 70\n";

    /// A PCMU + telephone-event offer (headers and body), `a=DIRECTION`.
    pub fn sdp(direction: &str) -> String {
        format!(
            "Content-Type: application/sdp\nContent-Length: [len]\n\nv=0\no=- 7 7 IN IP4 [local_ip]\n\
             s=-\nc=IN IP4 [media_ip]\nt=0 0\nm=audio [media_port] RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\n\
             a=rtpmap:101 telephone-event/8000\na={direction}\n"
        )
    }

    /// An in-dialog request (`rest`: its last headers and body).
    pub fn in_dialog(method: &str, cseq: u32, rest: &str) -> String {
        // An ACK gets no response: nothing would stop its retransmission.
        let retrans = if method == "ACK" {
            ""
        } else {
            " retrans=\"500\""
        };
        format!(
            "  <send{retrans}><![CDATA[\n{method} [next_url] SIP/2.0\n\
             Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
             From: <sip:+390211111117@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]\n\
             To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]\nCall-ID: [call_id]\n\
             CSeq: {cseq} {method}\nContact: <sip:sipp@[local_ip]:[local_port]>\nMax-Forwards: 70\n{rest}\n]]></send>\n"
        )
    }

    /// The ACK of a final response to the INVITE (or a re-INVITE).
    pub fn ack(cseq: u32) -> String {
        in_dialog("ACK", cseq, "Content-Length: 0\n")
    }

    /// The caller ends the call and expects our 200.
    pub fn bye(cseq: u32) -> String {
        format!(
            "{}  <recv response=\"200\"/>\n",
            in_dialog("BYE", cseq, "Content-Length: 0\n")
        )
    }
}

/// The operator's side of a call's audio path: collects the far end's
/// frames (in place of the audio socket's queue).
#[derive(Debug, Default)]
struct Collector(Mutex<Vec<u8>>);

impl OperatorAudio for Collector {
    fn push(&self, frame: Bytes) {
        self.0.lock().unwrap().extend_from_slice(&frame);
    }
}

/// What the operator of a carrier-level call hears.
#[derive(Debug)]
pub struct Operator {
    audio: Arc<Collector>,
    heard: Vec<u8>,
}

impl Operator {
    /// Routes the call's audio toward the operator here.
    pub fn attach(media: &CallMedia) -> Self {
        let audio = Arc::new(Collector::default());
        media.route_to_operator(Some(audio.clone()));
        Self {
            audio,
            heard: Vec::new(),
        }
    }

    /// Keeps the frames that arrive during the next `d`.
    pub async fn listen(&mut self, d: Duration) {
        self.audio.0.lock().unwrap().clear();
        tokio::time::sleep(d).await;
        self.heard
            .extend_from_slice(&std::mem::take(&mut *self.audio.0.lock().unwrap()));
    }

    /// Frequency and level of everything kept so far.
    pub fn analysis(&self) -> Analysis {
        analyze(&to_f32(&from_mulaw(&self.heard)), TELEPHONY_RATE)
    }
}

/// Sends a 1 kHz tone to the leg every 20 ms until the task is aborted.
pub fn play_tone(leg: Arc<dyn CarrierLeg>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let tone = to_mulaw(&sine(1000.0, -20.0, Duration::from_secs(1), TELEPHONY_RATE));
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut offset = 0;
        loop {
            tick.tick().await;
            leg.send_audio(Bytes::copy_from_slice(&tone[offset..offset + 160]));
            offset = (offset + 160) % tone.len();
        }
    })
}
