//! The load report: JSON for tools (xtask, the doc generator) and a human
//! summary.

use crate::stats::Pcts;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::time::Duration;

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs_f64(f64::deserialize(d)?))
    }
}

/// Who answers the calls the load generator dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FarEnd {
    /// The server's simulated network: inbound calls through
    /// `POST /dev/sim/calls`, outbound ones to its echo number.
    #[default]
    Sim,
    /// SIPp as the far end of the server's dev trunk (see [`crate::sipp`]):
    /// every call is outbound and its audio crosses RTP both ways.
    Sipp,
}

impl FarEnd {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            FarEnd::Sim => "sim",
            FarEnd::Sipp => "sipp",
        }
    }
}

fn default_dial() -> String {
    crate::load::ECHO_NUMBER.to_owned()
}

/// What one load step does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadConfig {
    /// Concurrent calls.
    pub calls: usize,
    /// Operators online (≥ calls; one call per operator at most).
    pub operators: usize,
    /// Share of the calls that are inbound (the rest dial [`LoadConfig::dial`]).
    pub inbound_share: f64,
    /// Call starts are spread evenly over this long.
    #[serde(with = "secs")]
    pub ramp: Duration,
    /// Wait after the ramp before the window opens (outbound answer: 300 ms).
    #[serde(with = "secs")]
    pub settle: Duration,
    /// The steady measurement window.
    #[serde(with = "secs")]
    pub duration: Duration,
    /// Operators going online at the same time.
    pub online_concurrency: usize,
    /// A frame whose added delay exceeds this counts as late.
    pub late_ms: u64,
    /// How long echoes of window frames are awaited after the window.
    pub drain_ms: u64,
    /// Longest call setup accepted.
    #[serde(with = "secs")]
    pub setup_timeout: Duration,
    /// The number outbound calls dial (E.164).
    #[serde(default = "default_dial")]
    pub dial: String,
    /// Who answers them (and echoes their frames).
    #[serde(default)]
    pub far_end: FarEnd,
    /// The lean generator ([`crate::lean`]) instead of the SDK.
    #[serde(default)]
    pub lean: bool,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            calls: 100,
            operators: 100,
            inbound_share: 0.5,
            ramp: Duration::from_secs(10),
            settle: Duration::from_secs(3),
            duration: Duration::from_secs(20),
            online_concurrency: 64,
            late_ms: 20,
            drain_ms: 1_000,
            setup_timeout: Duration::from_secs(30),
            dial: default_dial(),
            far_end: FarEnd::Sim,
            lean: false,
        }
    }
}

/// Calls active during the window (sampled every 100 ms).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Concurrency {
    /// Fewest.
    pub min: i64,
    /// Most.
    pub max: i64,
}

/// Server counters from `/metrics`, as window deltas.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerCounters {
    /// `audin_frames_dropped_total`.
    pub frames_dropped: u64,
    /// `audin_frames_relayed_total{direction="to_carrier"}`.
    pub frames_to_carrier: u64,
    /// `audin_frames_relayed_total{direction="to_operator"}`.
    pub frames_to_operator: u64,
    /// `audin_calls_ended_total`.
    pub calls_ended: u64,
}

/// Frame accounting of the frames due inside the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Frames {
    /// Frames sent (handed to the SDK).
    pub sent: u64,
    /// Distinct frames echoed back.
    pub received: u64,
    /// Sent and never echoed (either leg, or the far end).
    pub lost: u64,
    /// Lost, less those the server (`frames_dropped`) and the SDK queues
    /// counted: lost in the far end or in transit (UDP to and from SIPp).
    pub lost_outside_server: u64,
    /// Echoed with a relay delay above `lateMs`.
    pub late: u64,
    /// Echoed twice.
    pub duplicates: u64,
    /// A frame of another call (must be 0).
    pub misrouted: u64,
    /// Echoed out of order.
    pub reordered: u64,
    /// Echoed with our stamp but other bytes changed (must be 0: the far
    /// ends return what they get, and PCMU crosses the server unchanged).
    #[serde(default)]
    pub altered: u64,
    /// Dropped by the SDK's bounded queues (load-generator side).
    pub sdk_dropped: u64,
    /// Echoed frames per second (all calls).
    pub echoed_per_second: f64,
    /// Frames per second through the server, both directions.
    pub relayed_per_second: f64,
    /// The server's own counters over the window.
    pub server_window: ServerCounters,
}

/// Timings of the window's frames.
///
/// - `rttMs`: echo round trip, stamp (frame handed to the SDK) → echo read
///   back from the SDK: uplink relay + the sim far end (which returns each
///   frame as it arrives) + downlink relay. With the SIPp far end it also
///   holds the server's RTP re-clocking: the wait for the call's next 20 ms
///   RTP tick on the way out and the RTP jitter buffer's depth on the way
///   back (see `docs/performance.md`, "SIP trunk path").
/// - `rttFloorMs`: the smallest round trip seen.
/// - `relayMs`: each echo's delay above the same call's best of the
///   previous second (see [`crate::load::relay_delays`]): the queueing and
///   scheduling delay the server and the SDKs add under load, both ways,
///   without the fixed transit time.
/// - `sendLatenessMs`: how late the load generator handed a frame to the
///   SDK (its own health: high values mean the generator is saturated).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    /// Echo round trip.
    pub rtt_ms: Pcts,
    /// Smallest round trip.
    pub rtt_floor_ms: f64,
    /// Round-trip delay above each call's best frame of the last second.
    pub relay_ms: Pcts,
    /// Load-generator send lateness.
    pub send_lateness_ms: Pcts,
}

/// Call setup times.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Setup {
    /// `POST /dev/sim/calls` sent → `IncomingCall` event.
    pub inbound_post_to_offer: Pcts,
    /// `IncomingCall` → `accept()` → `CallStarted` (audio attached).
    pub inbound_offer_to_started: Pcts,
    /// `POST` → `CallStarted`.
    pub inbound_total: Pcts,
    /// `dial()` → `dialAccepted`.
    pub outbound_dial_to_accepted: Pcts,
    /// `dial()` → `CallStarted` (includes the sim's 300 ms answer delay).
    pub outbound_dial_to_started: Pcts,
}

/// The server process over the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerFigures {
    /// utime + stime over the window / window length (1.0 = one core).
    pub cpu_cores: f64,
    /// CPU milliseconds per call per second.
    pub cpu_ms_per_call_second: f64,
    /// VmRSS before operators connected.
    pub rss_idle_kb: u64,
    /// VmRSS with every operator online, before calls.
    pub rss_online_kb: u64,
    /// VmRSS when the window opened.
    pub rss_window_start_kb: u64,
    /// VmRSS when it closed.
    pub rss_window_end_kb: u64,
    /// (online − idle) / operators: a presence session.
    pub rss_per_operator_kb: f64,
    /// (window start − online) / calls: a call (audio socket, call task,
    /// sim far end and what it recorded so far).
    pub rss_per_call_kb: f64,
    /// Estimated PCM the sim far end had recorded per call at the window
    /// start (16 KB/s): a sim artefact inside `rssPerCallKb` (0 when SIPp
    /// answers: no sim far end records anything then).
    pub sim_recording_per_call_kb_est: f64,
    /// (window end − window start) / calls / window: what a call grows
    /// by per second (the sim recording's 15.6 KiB/s shows up here).
    pub rss_growth_per_call_kb_s: f64,
    /// Threads at the end.
    pub threads: u64,
}

/// The load generator itself.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadgenFigures {
    /// CPU over the window (1.0 = one core).
    pub cpu_cores: f64,
    /// VmRSS at the window end.
    pub rss_kb: u64,
    /// CPU used by every other process of the machine over the window
    /// (cores): other work on a shared box skews the figures.
    #[serde(default)]
    pub other_processes_cores: f64,
}

/// The far-end process over the window (it shares the machine's cores,
/// so its CPU is kept apart from the server's and from other processes').
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FarEndFigures {
    /// `sipp`.
    pub name: String,
    /// CPU over the window (1.0 = one core).
    pub cpu_cores: f64,
    /// VmRSS at the window end.
    pub rss_kb: u64,
    /// Its exit code after the step (SIPp: 0 = no call failed); `None`:
    /// it had to be killed, or the step has not ended yet.
    pub exit_code: Option<i32>,
    /// Calls it saw through its scenario (answered, our BYE answered).
    #[serde(default)]
    pub calls_successful: Option<u64>,
    /// Calls it saw fail.
    #[serde(default)]
    pub calls_failed: Option<u64>,
}

/// Once a second.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineSample {
    /// Seconds since the ramp started.
    pub t_s: f64,
    /// Calls active.
    pub active_calls: i64,
    /// Server utime + stime so far.
    pub server_cpu_s: f64,
    /// Server VmRSS.
    pub server_rss_kb: u64,
    /// Load-generator utime + stime so far.
    pub loadgen_cpu_s: f64,
}

/// One load step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    /// `sdk`: every leg through `audin-operator`.
    pub mode: String,
    /// What was asked.
    pub config: LoadConfig,
    /// Every call set up, carried audio and ended `hangup` (and a SIPp far
    /// end saw every call through its scenario).
    pub ok: bool,
    /// Calls that did.
    pub calls_ok: usize,
    /// Calls that did not.
    pub calls_failed: usize,
    /// The first failures.
    pub failures: Vec<String>,
    /// Calls active during the window.
    pub concurrent_calls: Concurrency,
    /// Frame accounting.
    pub frames: Frames,
    /// Frame timings.
    pub latency: Latency,
    /// Setup times (ms).
    pub setup_ms: Setup,
    /// `go_online` per operator (ms): token, presence socket, hello, goOnline.
    pub go_online_ms: Pcts,
    /// All operators online (s).
    pub go_online_total_s: f64,
    /// The server (when its pid is known).
    pub server: Option<ServerFigures>,
    /// The load generator.
    pub loadgen: LoadgenFigures,
    /// The far-end process (SIPp), when one ran beside the server.
    #[serde(default)]
    pub far_end: Option<FarEndFigures>,
    /// Once-a-second samples.
    pub timeline: Vec<TimelineSample>,
    /// Wall time of the step.
    pub wall_s: f64,
}

/// A set of steps with the machine they ran on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadRun {
    /// `nproc`, kernel, CPU model.
    pub machine: Machine,
    /// One per call count.
    pub steps: Vec<LoadReport>,
}

/// The machine.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Machine {
    /// Online CPUs.
    pub cpus: usize,
    /// `/proc/cpuinfo` model name.
    pub cpu_model: String,
    /// `uname -r` equivalent.
    pub kernel: String,
}

impl Machine {
    /// This machine.
    pub fn detect() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel,
        }
    }
}

fn opt<T: std::fmt::Display>(x: Option<T>) -> String {
    x.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

fn p(x: &Pcts) -> String {
    format!(
        "p50 {:.2} / p99 {:.2} / p99.9 {:.2} / max {:.2}",
        x.p50, x.p99, x.p999, x.max
    )
}

impl LoadReport {
    /// A human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let c = &self.config;
        let _ = writeln!(
            s,
            "== {} calls ({} operators, {:.0}% inbound, outbound to {} via {}), window {:.0} s: {}",
            c.calls,
            c.operators,
            c.inbound_share * 100.0,
            c.dial,
            c.far_end.name(),
            c.duration.as_secs_f64(),
            if self.ok { "OK" } else { "FAILED" }
        );
        let _ = writeln!(
            s,
            "calls held      {}..{} concurrent; {} ok, {} failed",
            self.concurrent_calls.min, self.concurrent_calls.max, self.calls_ok, self.calls_failed
        );
        for f in self.failures.iter().take(5) {
            let _ = writeln!(s, "  failure: {f}");
        }
        let f = &self.frames;
        let _ = writeln!(
            s,
            "frames          sent {} echoed {} lost {} (outside the server {}) late(>{} ms) {} dup {} misrouted {} reordered {} altered {} sdk-dropped {}; server dropped {}",
            f.sent,
            f.received,
            f.lost,
            f.lost_outside_server,
            c.late_ms,
            f.late,
            f.duplicates,
            f.misrouted,
            f.reordered,
            f.altered,
            f.sdk_dropped,
            f.server_window.frames_dropped
        );
        let _ = writeln!(
            s,
            "throughput      {:.0} frames/s through the server ({:.0} echoed/s)",
            f.relayed_per_second, f.echoed_per_second
        );
        let l = &self.latency;
        let _ = writeln!(s, "relay ms        {}", p(&l.relay_ms));
        let _ = writeln!(
            s,
            "echo rtt ms     {}  (floor {:.3} ms)",
            p(&l.rtt_ms),
            l.rtt_floor_ms
        );
        let _ = writeln!(s, "send late ms    {}", p(&l.send_lateness_ms));
        let st = &self.setup_ms;
        let _ = writeln!(
            s,
            "setup ms        inbound offer->started p50 {:.1} p99 {:.1}; post->started p50 {:.1} p99 {:.1}; outbound dial->started p50 {:.1} p99 {:.1}",
            st.inbound_offer_to_started.p50,
            st.inbound_offer_to_started.p99,
            st.inbound_total.p50,
            st.inbound_total.p99,
            st.outbound_dial_to_started.p50,
            st.outbound_dial_to_started.p99
        );
        let _ = writeln!(
            s,
            "go online ms    p50 {:.1} p99 {:.1} max {:.1}; all {} in {:.1} s",
            self.go_online_ms.p50,
            self.go_online_ms.p99,
            self.go_online_ms.max,
            c.operators,
            self.go_online_total_s
        );
        if let Some(sv) = &self.server {
            let _ = writeln!(
                s,
                "server          cpu {:.0}% of a core ({:.3} ms per call-second); rss idle {} KiB, online {} KiB, window {}..{} KiB",
                sv.cpu_cores * 100.0,
                sv.cpu_ms_per_call_second,
                sv.rss_idle_kb,
                sv.rss_online_kb,
                sv.rss_window_start_kb,
                sv.rss_window_end_kb
            );
            let _ = writeln!(
                s,
                "server memory   {:.1} KiB per operator online; {:.1} KiB per call (of which ~{:.0} KiB sim recording), growing {:.1} KiB/s per call",
                sv.rss_per_operator_kb,
                sv.rss_per_call_kb,
                sv.sim_recording_per_call_kb_est,
                sv.rss_growth_per_call_kb_s
            );
        }
        if let Some(fe) = &self.far_end {
            let _ = writeln!(
                s,
                "far end         {} cpu {:.0}% of a core, rss {} KiB; exit code {}, calls {} ok, {} failed",
                fe.name,
                fe.cpu_cores * 100.0,
                fe.rss_kb,
                opt(fe.exit_code),
                opt(fe.calls_successful),
                opt(fe.calls_failed),
            );
        }
        let _ = writeln!(
            s,
            "load generator  {} cpu {:.0}% of a core ({:.3} ms per call-second), rss {} KiB; other processes {:.0}% of a core",
            self.mode,
            self.loadgen.cpu_cores * 100.0,
            self.generator_ms_per_call_second(),
            self.loadgen.rss_kb,
            self.loadgen.other_processes_cores * 100.0
        );
        s
    }

    /// The load generator's CPU per call-second over the window.
    pub fn generator_ms_per_call_second(&self) -> f64 {
        self.loadgen.cpu_cores * 1000.0 / self.concurrent_calls.max.max(1) as f64
    }
}
