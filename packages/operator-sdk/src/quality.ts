// Call quality: performs the I/O of one call's quality monitor (the wasm
// core's `WasmQuality`, crates/operator/src/core/quality.rs). Every figure,
// the MOS and every warning decision are computed there; this file only
// feeds it what the audio path observes (frame arrivals, levels, the jitter
// buffer's counters, pongs), sends the pings it asks for, and hands on its
// stats and events.

import { WasmQuality } from "./generated/core/audin_operator_wasm.js";

/**
 * A snapshot of a call's audio quality ({@link OperatorCall.getStats}).
 * Counts are since the call's audio started; percentages cover the last
 * 5 seconds.
 */
export interface CallStats {
  /** Microphone frames (20 ms each) sent to the service. */
  framesSent: number;
  /** Far-end frames (20 ms each) received from the service. */
  framesReceived: number;
  /**
   * Far-end frames that never arrived: one frame is due every 20 ms after
   * the first, and the audio socket (TCP, no sequence numbers) loses none
   * itself, so `framesLost` = frames due − frames received (never below 0).
   * Frames held up behind a late one are not due yet: a gap counts as loss
   * once the stream has not caught up with it by the next snapshot (about
   * a second later), so jitter does not read as loss.
   */
  framesLost: number;
  /** 20 ms playout slots the jitter buffer filled by concealment (a missing or late frame). */
  framesConcealed: number;
  /** Far-end frames lost over the last 5 s, percent. */
  packetLossPercent: number;
  /** Playout slots concealed over the last 5 s, percent. */
  concealedPercent: number;
  /** Interarrival jitter of far-end frames (RFC 3550 §6.4.1), ms. */
  jitterMs: number;
  /** Current jitter-buffer playout delay, ms. */
  playoutDelayMs: number;
  /** Audio-socket round-trip time (`ping` → `pong`), ms; `null` before the first answer. */
  rttMs: number | null;
  /** E-model MOS estimate (ITU-T G.107, G.711 with PLC), 1 to 4.5; `null` before the first second. */
  mos: number | null;
  /** Microphone RMS level, `[0, 1]` (the latest ~50 ms). */
  inputLevel: number;
  /** Playback RMS level, `[0, 1]` (the latest ~50 ms). */
  outputLevel: number;
}

/** Names of the call quality warnings (thresholds: see the README). */
export type QualityWarningName =
  | "high-rtt"
  | "high-jitter"
  | "high-packet-loss"
  | "low-mos"
  | "constant-audio-input-level"
  | "no-audio-received";

/** Payload of the `qualityWarning` and `qualityWarningCleared` events. */
export interface QualityWarning {
  /** The call. */
  callSid: string;
  /** Which warning. */
  name: QualityWarningName;
  /** The measured value when it was raised or cleared (unit of the warning: ms, %, MOS, or the microphone level's spread in 16-bit steps). */
  value: number;
  /** The raise threshold (same unit). */
  threshold: number;
}

/** How often a sample is taken (the monitor's warnings assume 1 Hz). */
const SAMPLE_EVERY_MS = 1000;

/**
 * What the quality driver needs from its call.
 * @internal
 */
export interface QualityHost {
  /** Sends a text on the call's current audio socket (if open). */
  sendText(text: string): void;
  /** Microphone frames sent so far. */
  framesSent(): number;
  /** Whether the call is muted. */
  muted(): boolean;
  /** Whether the call is `active` (answered): only then is quality judged. */
  active(): boolean;
  /** A warning was raised (`true`) or cleared. */
  warning(raised: boolean, w: Omit<QualityWarning, "callSid">): void;
}

/**
 * One call's quality monitor driver.
 * @internal
 */
export class CallQualityDriver {
  private readonly q = new WasmQuality();
  private played = 0;
  private concealed = 0;
  private delayMs = 0;
  private timer: ReturnType<typeof setInterval> | undefined;
  private freed = false;
  /** The snapshot at `stop()`: a call's stats stay readable after it ends. */
  private final: CallStats | undefined;

  constructor(private readonly host: QualityHost) {
    this.timer = setInterval(() => this.tick(), SAMPLE_EVERY_MS);
    this.ping();
  }

  /** A far-end frame came off the audio socket. */
  frameReceived(now: number): void {
    if (!this.freed) this.q.frame_received(now);
  }

  /** A level reading of the worklet. */
  levels(now: number, input: number, output: number): void {
    if (!this.freed) this.q.levels(now, input, output);
  }

  /** The worklet's jitter-buffer counters (about once a second). */
  jitterBuffer(played: number, concealed: number, delayMs: number): void {
    this.played = played;
    this.concealed = concealed;
    this.delayMs = delayMs;
  }

  /** An audio-socket text: true if it was a `pong`, consumed here. */
  audioText(now: number, text: string): boolean {
    return !this.freed && this.q.audio_text(now, text);
  }

  /** The latest snapshot. */
  stats(): CallStats {
    if (this.final) return { ...this.final };
    return JSON.parse(this.q.stats_json()) as CallStats;
  }

  private ping(): void {
    const text = this.q.poll_ping(performance.now());
    if (text !== undefined) this.host.sendText(text);
  }

  private tick(): void {
    if (this.freed) return;
    const h = this.host;
    // Ringing has no far-end audio to judge; pings still measure the path.
    if (!h.active()) return this.ping();
    this.q.sample(performance.now(), h.framesSent(), this.played, this.concealed, this.delayMs, h.muted());
    this.ping();
    for (let e = this.q.poll_event(); e !== undefined; e = this.q.poll_event()) {
      const { name, raised, value, threshold } = JSON.parse(e) as {
        name: QualityWarningName;
        raised: boolean;
        value: number;
        threshold: number;
      };
      h.warning(raised, { name, value, threshold });
    }
  }

  /** Stops sampling and frees the wasm object. Idempotent. */
  stop(): void {
    if (this.freed) return;
    this.final = this.stats();
    this.freed = true;
    clearInterval(this.timer);
    this.q.free();
  }
}
