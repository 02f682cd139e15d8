// The AudioWorkletProcessor, as source text: it is loaded from a Blob URL
// (`audioWorklet.addModule`), so the bundles need no second file. It is plain
// ES2020 that never goes through the bundler: keep it self-contained.
//
// The audio maths run in the worklet wasm module (crates/worklet, raw
// `extern "C"` exports, no imports), compiled on the main thread and passed
// in `processorOptions.module` (AudioWorkletGlobalScope has no atob or
// TextDecoder to decode it itself). Calling convention: see the crate docs.
//
// Messages on the node's port:
//   main → worklet: {frame, at} (a 160-byte μ-law frame from the far end and
//                   its arrival time on the audio clock in ms, NaN if
//                   unknown; a bare ArrayBuffer is stamped on arrival here),
//                   {type:"mute", muted}, {type:"stop"}
//   worklet → main: ArrayBuffer (a 160-byte μ-law frame of the microphone),
//                   {type:"error", message},
//                   {type:"tap", kind, sampleRate, samples} (processorOptions.tap),
//                   {type:"level", input, output} (RMS in [0, 1] of the last
//                   ~50 ms of microphone input and of playback, every ~50 ms),
//                   {type:"stats", played, concealed, delayMs} (the jitter
//                   buffer's counters, about once a second, for the call
//                   quality monitor)
//
// Levels: one message per LEVEL_SECONDS window, about 20 a second: enough
// for a meter to look live, few enough that the main thread does no audio
// work. The sums of squares are plain numbers, so nothing is allocated per
// render quantum. The input level is the microphone's even while muted in
// the SDK (the far end then hears silence), so a UI can tell "you are muted
// but talking". (Comments stay out of the source text: it ships as is.)
//
// Arrival stamps: the main thread stamps each far-end frame at its
// WebSocket message event, on the audio clock (audio.ts
// `arrivalOnAudioClock`), because `currentTime` here only moves once per
// device render callback (10 ms in Chromium): stamped here, frames arriving
// anywhere between two callbacks all look alike and the callback period
// reads as jitter. Frames are numbered in arrival order (the wire has no
// sequence numbers); the jitter buffer undoes the shift a lost frame causes.

/** Registered name of the processor. @internal */
export const PROCESSOR_NAME = "audin-operator";

/** Source text of the processor module. @internal */
export const PROCESSOR_SOURCE = `"use strict";
const FRAME = 160;
const TAP_SECONDS = 0.25;
const LEVEL_SECONDS = 0.05;
const STATS_SECONDS = 1;
class AudinOperatorProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.muted = !!o.muted;
    this.alive = true;
    this.seq = 0;
    this.w = null;
    this.levelIn = 0;
    this.levelOut = 0;
    this.levelCount = 0;
    this.levelWindow = Math.max(1, Math.round(sampleRate * LEVEL_SECONDS));
    this.statCount = 0;
    this.statWindow = Math.round(sampleRate * STATS_SECONDS);
    try {
      const w = new WebAssembly.Instance(o.module, {}).exports;
      if (w.audin_init(sampleRate) !== 0) throw new Error("unsupported AudioContext rate " + sampleRate);
      const mem = w.memory.buffer;
      const max = w.audin_max_block();
      this.capIn = new Float32Array(mem, w.audin_capture_input_ptr(), max);
      this.capFrames = new Uint8Array(mem, w.audin_capture_frames_ptr(), FRAME * 8);
      this.playFrame = new Uint8Array(mem, w.audin_playback_frame_ptr(), FRAME);
      this.playOut = new Float32Array(mem, w.audin_playback_output_ptr(), max);
      this.max = max;
      this.w = w;
    } catch (e) {
      this.port.postMessage({ type: "error", message: String((e && e.message) || e) });
    }
    if (o.tap) {
      const len = Math.round(sampleRate * TAP_SECONDS);
      this.tap = { play: new Float32Array(len), cap: new Float32Array(len), at: 0 };
    }
    this.port.onmessage = (ev) => {
      const d = ev.data;
      if (d instanceof ArrayBuffer) this.receive(d, NaN);
      else if (d && d.frame instanceof ArrayBuffer) this.receive(d.frame, d.at);
      else if (d && d.type === "mute") this.muted = !!d.muted;
      else if (d && d.type === "stop") this.alive = false;
    };
  }
  receive(buf, at) {
    const w = this.w;
    if (!w || buf.byteLength !== FRAME) return;
    this.playFrame.set(new Uint8Array(buf));
    w.audin_playback_push(this.seq, Number.isFinite(at) ? at : currentTime * 1000);
    this.seq = (this.seq + 1) >>> 0;
  }
  process(inputs, outputs) {
    if (!this.alive) return false;
    const w = this.w;
    const out = outputs[0];
    if (!w) return true;
    const n = Math.min(out && out[0] ? out[0].length : 128, this.max);
    const input = inputs[0] && inputs[0][0];
    // Capture: microphone (or silence while muted) -> 8 kHz mu-law frames.
    if (input && !this.muted) this.capIn.set(input.length > n ? input.subarray(0, n) : input);
    else this.capIn.fill(0, 0, n);
    const frames = w.audin_capture(n);
    for (let i = 0; i < frames; i++) {
      const frame = this.capFrames.slice(i * FRAME, (i + 1) * FRAME);
      if (this.muted) frame.fill(0xff);
      this.port.postMessage(frame.buffer, [frame.buffer]);
    }
    // Playback: jitter buffer -> decode -> context rate.
    w.audin_playback_pull(n, currentTime * 1000);
    const played = n === this.max ? this.playOut : this.playOut.subarray(0, n);
    if (out) for (let c = 0; c < out.length; c++) out[c].set(played);
    this.level(input, played, n);
    if (this.tap) this.record(input, played, n);
    this.statCount += n;
    if (this.statCount >= this.statWindow) {
      this.statCount = 0;
      this.port.postMessage({
        type: "stats",
        played: w.audin_stat_played(),
        concealed: w.audin_stat_concealed(),
        delayMs: w.audin_stat_delay_ms(),
      });
    }
    return true;
  }
  level(input, played, n) {
    let si = 0;
    let so = 0;
    if (input) {
      const m = Math.min(n, input.length);
      for (let i = 0; i < m; i++) si += input[i] * input[i];
    }
    for (let i = 0; i < n; i++) so += played[i] * played[i];
    this.levelIn += si;
    this.levelOut += so;
    this.levelCount += n;
    if (this.levelCount < this.levelWindow) return;
    const k = this.levelCount;
    this.port.postMessage({
      type: "level",
      input: Math.min(1, Math.sqrt(this.levelIn / k)),
      output: Math.min(1, Math.sqrt(this.levelOut / k)),
    });
    this.levelIn = 0;
    this.levelOut = 0;
    this.levelCount = 0;
  }
  record(input, played, n) {
    const t = this.tap;
    const len = t.play.length;
    for (let i = 0; i < n; i++) {
      t.play[t.at] = played[i];
      t.cap[t.at] = input ? input[i] || 0 : 0;
      t.at++;
      if (t.at === len) {
        t.at = 0;
        this.port.postMessage({ type: "tap", kind: "playback", sampleRate, samples: t.play.slice() });
        this.port.postMessage({ type: "tap", kind: "capture", sampleRate, samples: t.cap.slice() });
      }
    }
  }
}
registerProcessor("${PROCESSOR_NAME}", AudinOperatorProcessor);
`;
