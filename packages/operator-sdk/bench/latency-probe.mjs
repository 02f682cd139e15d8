// Latency probes for the browser SDK, installed from OUTSIDE the SDK: nothing
// here ships, and the SDK pays nothing when the probes are absent.
//
// Page side (`installPageProbe`, run in the page before a call starts):
// - `WebSocket` is replaced by a subclass that timestamps every binary frame
//   received on and sent to the audio socket (a `message` listener added in
//   the constructor runs before the SDK's `onmessage`; `send` is overridden);
// - `AudioWorklet.prototype.addModule` first adds the worklet probe below to
//   the same AudioWorkletGlobalScope;
// - `AudioWorkletNode` is replaced by a subclass that listens for the worklet
//   probe's messages on the node's port (the SDK ignores unknown types).
//
// Worklet side (`WORKLET_PROBE_SOURCE`): wraps `registerProcessor` so the
// SDK's processor is registered as a subclass that
// - finds the fake microphone's clicks in the worklet input (`inputs`),
// - timestamps the 160-byte frames the processor posts (wrapped
//   `port.postMessage`) and the frames it receives (wrapped `port.onmessage`),
// - finds the sim's clicks in the worklet output (`outputs`),
// - samples the jitter buffer through the module's `audin_stat_*` exports
//   (the instance is caught by wrapping `WebAssembly.Instance`).
//
// Clocks: `Temporal.Now.instant()` on both threads (the same system clock,
// 0.1 ms resolution in Chromium; AudioWorkletGlobalScope has no
// `performance`), and the worklet's `currentTime` (the audio clock).

/** Source of the worklet probe module (added before the SDK's processor). */
export const WORKLET_PROBE_SOURCE = `"use strict";
const wall = () => Number(Temporal.Now.instant().epochNanoseconds / 1000n) / 1000;
const IN_THRESHOLD = 0.3;   // fake-microphone pulse
const OUT_THRESHOLD = 0.3;  // sim click after upsampling
const QUIET_S = 0.1;        // a new click needs 100 ms of quiet before it
const PEAK_WINDOW_S = 0.002;
function ulaw(b) {
  b = ~b & 0xff;
  const t = (((b & 0x0f) << 3) + 0x84) << ((b >> 4) & 7);
  return ((b & 0x80) ? 0x84 - t : t - 0x84) / 32768;
}
function framePeak(bytes) {
  let best = 0, at = -1, sign = 1;
  for (let i = 0; i < bytes.length; i++) {
    const v = ulaw(bytes[i]);
    if (Math.abs(v) > best) { best = Math.abs(v); at = i; sign = v < 0 ? -1 : 1; }
  }
  return { peak: best * sign, at };
}
function key(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return s;
}
let caught = null;
const NativeInstance = WebAssembly.Instance;
function ProbeInstance(module, imports) {
  const inst = new NativeInstance(module, imports);
  caught = inst.exports;
  return inst;
}
ProbeInstance.prototype = NativeInstance.prototype;
WebAssembly.Instance = ProbeInstance;
const nativeRegister = globalThis.registerProcessor;
globalThis.registerProcessor = function (name, Base) {
  class Probed extends Base {
    constructor(options) {
      caught = null;
      super(options);
      const w = caught;
      this.probe = { w, ev: [], quanta: 0, posted: 0, received: 0,
        inQuiet: 1e9, inClick: null, outQuiet: 1e9, outClick: null };
      const port = this.port;
      const post = port.postMessage.bind(port);
      this.probePost = post;
      port.postMessage = (msg, transfer) => {
        if (msg instanceof ArrayBuffer && msg.byteLength === 160) this.probeSent(new Uint8Array(msg));
        return post(msg, transfer);
      };
      const onmessage = port.onmessage;
      port.onmessage = (ev) => {
        const d = ev.data;
        const buf = d instanceof ArrayBuffer ? d : d && d.frame instanceof ArrayBuffer ? d.frame : null;
        if (buf && buf.byteLength === 160) this.probeReceived(new Uint8Array(buf), d.at);
        if (onmessage) onmessage.call(port, ev);
      };
      this.probeEmit({ type: "init", sampleRate, quantum: 128,
        captureLatencyMs: w && w.audin_capture_latency_ms ? w.audin_capture_latency_ms() : null,
        playbackLatencyMs: w && w.audin_playback_latency_ms ? w.audin_playback_latency_ms() : null });
    }
    probeEmit(e) { this.probe.ev.push(e); }
    probeSent(bytes) {
      const p = this.probe;
      p.posted++;
      const { peak, at } = framePeak(bytes);
      if (Math.abs(peak) < 0.02) return;
      this.probeEmit({ type: "post", wall: wall(), ct: currentTime, ctEnd: currentTime + this.probeN / sampleRate,
        peak, at, key: key(bytes), index: p.posted - 1 });
    }
    probeReceived(bytes, at) {
      const p = this.probe;
      p.received++;
      const { peak } = framePeak(bytes);
      if (Math.abs(peak) < 0.5) return;
      this.probeEmit({ type: "recv", wall: wall(), ct: currentTime, at: Number.isFinite(at) ? at / 1000 : null,
        index: p.received - 1 });
    }
    process(inputs, outputs) {
      const p = this.probe;
      const t0 = currentTime;
      const input = inputs[0] && inputs[0][0];
      const n = outputs[0] && outputs[0][0] ? outputs[0][0].length : 128;
      this.probeN = n;
      if (input) this.probeScanInput(input, t0);
      const alive = super.process(inputs, outputs);
      const out = outputs[0] && outputs[0][0];
      if (out) this.probeScanOutput(out, t0);
      p.quanta++;
      const w = p.w;
      if (w && p.quanta % 7 === 0) {
        this.probeEmit({ type: "stats", ct: t0, played: w.audin_stat_played(), concealed: w.audin_stat_concealed(),
          late: w.audin_stat_late(), duplicate: w.audin_stat_duplicate(), dropped: w.audin_stat_dropped(),
          buffered: w.audin_stat_buffered(), delay: w.audin_stat_delay_ms(), target: w.audin_stat_target_ms(),
          compressedMs: w.audin_stat_compressed_ms ? w.audin_stat_compressed_ms() : 0,
          jitter: w.audin_stat_jitter_ms(), posted: p.posted, received: p.received });
      }
      if (p.quanta % 35 === 0 && p.ev.length) {
        this.probePost({ type: "audin-probe", events: p.ev });
        p.ev = [];
      }
      return alive;
    }
    probeScanInput(x, t0) {
      const p = this.probe;
      for (let i = 0; i < x.length; i++) {
        const t = t0 + i / sampleRate;
        const loud = Math.abs(x[i]) >= IN_THRESHOLD;
        if (p.inClick) {
          if (loud) p.inClick.last = t;
          else if (t - p.inClick.last > 0.002) {
            this.probeEmit({ type: "mic", ct: (p.inClick.first + p.inClick.last) / 2, first: p.inClick.first,
              last: p.inClick.last, wall: p.inClick.wall });
            p.inClick = null;
            p.inQuiet = 0;
          }
        } else if (loud && p.inQuiet >= QUIET_S) {
          p.inClick = { first: t, last: t, wall: wall() };
        } else if (loud) {
          p.inQuiet = 0;
        } else {
          p.inQuiet += 1 / sampleRate;
        }
      }
    }
    probeScanOutput(y, t0) {
      const p = this.probe;
      for (let i = 0; i < y.length; i++) {
        const t = t0 + i / sampleRate;
        const a = Math.abs(y[i]);
        if (p.outClick) {
          if (a > p.outClick.peak) { p.outClick.peak = a; p.outClick.ct = t; p.outClick.wall = wall(); p.outClick.q = t0; }
          if (t - p.outClick.start > PEAK_WINDOW_S) {
            this.probeEmit({ type: "play", ct: p.outClick.ct, quantumCt: p.outClick.q, wall: p.outClick.wall, peak: p.outClick.peak });
            p.outClick = null;
            p.outQuiet = 0;
          }
        } else if (a >= OUT_THRESHOLD && p.outQuiet >= QUIET_S) {
          p.outClick = { start: t, ct: t, peak: a, wall: wall(), q: t0 };
        } else if (a >= OUT_THRESHOLD) {
          p.outQuiet = 0;
        } else {
          p.outQuiet += 1 / sampleRate;
        }
      }
    }
  }
  return nativeRegister.call(globalThis, name, Probed);
};
`;

/**
 * Installs the page side of the probes (pass to `page.evaluate` with the
 * worklet source). Results accumulate in `window.__latencyProbe`.
 * @param {string} workletSource
 */
export function installPageProbe(workletSource) {
  const w = /** @type {any} */ (window);
  if (w.__latencyProbe) return;
  const wall = () => Number(Temporal.Now.instant().epochNanoseconds / 1000n) / 1000;
  const probe = (w.__latencyProbe = { wsRecv: [], wsRecvAll: [], wsSend: [], sendCount: 0, worklet: [], mark: 0 });
  const ulaw = (b) => {
    b = ~b & 0xff;
    const t = (((b & 0x0f) << 3) + 0x84) << ((b >> 4) & 7);
    return ((b & 0x80) ? 0x84 - t : t - 0x84) / 32768;
  };
  const peakOf = (bytes) => {
    let best = 0;
    for (let i = 0; i < bytes.length; i++) best = Math.max(best, Math.abs(ulaw(bytes[i])));
    return best;
  };
  const key = (bytes) => {
    let s = "";
    for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
    return s;
  };
  const NativeWebSocket = WebSocket;
  class ProbedWebSocket extends NativeWebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      this.__audio = String(url).includes("/audio");
      this.__recv = 0;
      if (this.__audio) {
        this.addEventListener("message", (ev) => {
          if (!(ev.data instanceof ArrayBuffer) || ev.data.byteLength !== 160) return;
          const t = wall();
          const i = this.__recv++;
          probe.wsRecvAll.push(t);
          const bytes = new Uint8Array(ev.data);
          if (peakOf(bytes) >= 0.5) probe.wsRecv.push({ wall: t, index: i });
        });
      }
    }
    send(data) {
      if (this.__audio && data instanceof ArrayBuffer && data.byteLength === 160) {
        const t = wall();
        probe.sendCount++;
        const bytes = new Uint8Array(data);
        if (peakOf(bytes) >= 0.02) probe.wsSend.push({ wall: t, key: key(bytes) });
      }
      return super.send(data);
    }
  }
  w.WebSocket = ProbedWebSocket;
  const url = URL.createObjectURL(new Blob([workletSource], { type: "text/javascript" }));
  const done = new WeakSet();
  const addModule = AudioWorklet.prototype.addModule;
  AudioWorklet.prototype.addModule = async function (moduleUrl, options) {
    if (!done.has(this)) {
      done.add(this);
      await addModule.call(this, url);
    }
    return addModule.call(this, moduleUrl, options);
  };
  const NativeNode = AudioWorkletNode;
  class ProbedNode extends NativeNode {
    constructor(ctx, name, options) {
      super(ctx, name, options);
      probe.context = { sampleRate: ctx.sampleRate, baseLatency: ctx.baseLatency, outputLatency: ctx.outputLatency };
      this.port.addEventListener("message", (ev) => {
        const d = ev.data;
        if (d && d.type === "audin-probe") for (const e of d.events) probe.worklet.push(e);
      });
      probe.node = this;
      probe.ctx = ctx;
    }
  }
  w.AudioWorkletNode = ProbedNode;
}

// ── analysis (Node side) ──────────────────────────────────────────────────

/** Percentile (nearest rank) of a numeric array. */
export function pct(values, p) {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

/** `{n, min, p50, p95, max, mean}` of an array (ms), rounded to 0.01. */
export function summary(values) {
  const r = (x) => (x === null ? null : Math.round(x * 100) / 100);
  if (values.length === 0) return { n: 0, min: null, p50: null, p95: null, max: null, mean: null };
  return {
    n: values.length,
    min: r(Math.min(...values)),
    p50: r(pct(values, 50)),
    p95: r(pct(values, 95)),
    max: r(Math.max(...values)),
    mean: r(values.reduce((a, b) => a + b, 0) / values.length),
  };
}

/**
 * Reads the probe's records from the page (worklet events are flushed every
 * ~100 ms; wait a little after the window before calling).
 * @param {import("playwright-core").Page} page
 */
export async function readProbe(page) {
  return page.evaluate(() => {
    const p = /** @type {any} */ (window).__latencyProbe;
    return {
      wsRecv: p.wsRecv,
      wsRecvAll: p.wsRecvAll,
      wsSend: p.wsSend,
      sendCount: p.sendCount,
      worklet: p.worklet,
      context: p.context,
    };
  });
}

/**
 * Capture → wire, per fake-microphone click inside [from, to] (wall ms):
 * - `inWorkletMs`: audio clock, from the click's centre in the worklet input
 *   to the end of the render quantum whose process() call posted the frame
 *   holding the click's peak (resampler group delay + frame accumulation +
 *   quantum alignment);
 * - `handoffMs`: wall clock, from that process() call to WebSocket.send()
 *   (worklet → main postMessage, the SDK's main-thread hop, send);
 * - `clickMs` = inWorklet + handoff: the delay of that click (a sample at a
 *   random place in its frame);
 * - `oldestMs` = clickMs + the peak's position in the frame / 8 kHz: the age
 *   of the frame's oldest sample when it is sent (full packetization);
 * - `wallMs`: raw wall clock from the process() call that received the click
 *   to send() (quantised by the audio device's callback period).
 */
export function captureFigures(data, { from = -Infinity, to = Infinity } = {}) {
  const mics = data.worklet.filter((e) => e.type === "mic");
  const posts = data.worklet.filter((e) => e.type === "post");
  const sends = new Map();
  for (const s of data.wsSend) if (!sends.has(s.key)) sends.set(s.key, s.wall);
  const rows = [];
  for (const m of mics) {
    if (m.wall < from || m.wall > to) continue;
    // The first posted frame after the click with a clear peak.
    const frame = posts
      .filter((p) => p.ctEnd > m.ct && p.ctEnd - m.ct < 0.1)
      .sort((a, b) => Math.abs(b.peak) - Math.abs(a.peak))[0];
    if (!frame) continue;
    const sent = sends.get(frame.key);
    if (sent === undefined) continue;
    const inWorklet = (frame.ctEnd - m.ct) * 1000;
    const handoff = sent - frame.wall;
    rows.push({
      inWorkletMs: inWorklet,
      handoffMs: handoff,
      clickMs: inWorklet + handoff,
      oldestMs: inWorklet + handoff + frame.at / 8,
      wallMs: sent - m.wall,
      peakAt: frame.at,
    });
  }
  return rows;
}

/**
 * Wire → playback, per sim click received inside [from, to] (wall ms):
 * - `postMs`: wall clock, WebSocket message event → the worklet's port
 *   handler (main → worklet postMessage);
 * - `inWorkletMs`: audio clock, from the frame's arrival in the worklet
 *   (`currentTime` then, the jitter buffer's arrival stamp) to the click's
 *   peak in the worklet output (jitter-buffer wait + pull alignment +
 *   resampler group delay + position in the output quantum);
 * - `totalMs` = post + inWorklet;
 * - `wallMs`: raw wall clock from the message event to the process() call
 *   that output the peak (quantised by the device's callback period);
 * - `arrivalLateMs`: how much later than the fastest click within 2.5 s
 *   (either side) this click frame reached the socket: the jitter the
 *   network and both hosts added (clicks leave the sim 500 ms apart; a
 *   sliding window absorbs the sim's timer slipping);
 * - `fromNominalMs` = totalMs + arrivalLateMs: the playout delay over the
 *   fastest path, i.e. from when the frame would have arrived without jitter.
 */
export function playbackFigures(data, { from = -Infinity, to = Infinity } = {}) {
  const recvs = data.worklet.filter((e) => e.type === "recv");
  const plays = data.worklet.filter((e) => e.type === "play");
  const base = data.wsRecv[0]?.wall ?? 0;
  const offsets = data.wsRecv.map((r) => {
    const k = Math.round((r.wall - base) / 500);
    return r.wall - base - k * 500;
  });
  const rows = [];
  data.wsRecv.forEach((r, j) => {
    if (r.wall < from || r.wall > to) return;
    const inW = recvs.find((x) => x.wall >= r.wall - 0.2 && x.wall - r.wall < 100);
    if (!inW) return;
    const play = plays.find((p) => p.ct >= inW.ct && p.ct - inW.ct < 0.3);
    if (!play) return;
    let fastest = offsets[j];
    data.wsRecv.forEach((o, i) => {
      if (Math.abs(o.wall - r.wall) <= 2500) fastest = Math.min(fastest, offsets[i]);
    });
    const post = inW.wall - r.wall;
    const inWorklet = (play.ct - inW.ct) * 1000;
    rows.push({
      postMs: post,
      inWorkletMs: inWorklet,
      totalMs: post + inWorklet,
      wallMs: play.wall - r.wall,
      arrivalLateMs: offsets[j] - fastest,
      fromNominalMs: post + inWorklet + (offsets[j] - fastest),
      // How much earlier the main thread's arrival stamp (the jitter
      // buffer's) lies than the worklet's currentTime when the frame got
      // there: the wait for the next render callback it no longer hides.
      stampLeadMs: inW.at === null || inW.at === undefined ? null : (inW.ct - inW.at) * 1000,
    });
  });
  return rows;
}

/**
 * Jitter-buffer figures between two stats samples inside [from, to] (audio
 * clock seconds): concealed share, late/dropped counts, the delay samples.
 */
export function jitterFigures(data, { fromCt = -Infinity, toCt = Infinity } = {}) {
  const stats = data.worklet.filter((e) => e.type === "stats" && e.ct >= fromCt && e.ct <= toCt);
  if (stats.length < 2) return null;
  const a = stats[0];
  const b = stats[stats.length - 1];
  const played = b.played - a.played;
  const concealed = b.concealed - a.concealed;
  // A re-prime (resync after a run of late frames) resets the reported delay
  // to 0 until playout restarts (at least one 20 ms pull): seen in the
  // samples (every ~20 ms) as a drop to 0. No export counts them directly.
  let reprimes = 0;
  for (let i = 1; i < stats.length; i++) if (stats[i].delay === 0 && stats[i - 1].delay > 0) reprimes++;
  return {
    seconds: Math.round((b.ct - a.ct) * 10) / 10,
    played,
    concealed,
    concealedPercent: played + concealed > 0 ? Math.round((10000 * concealed) / (played + concealed)) / 100 : null,
    late: b.late - a.late,
    dropped: b.dropped - a.dropped,
    duplicate: b.duplicate - a.duplicate,
    received: b.received - a.received,
    compressedMs: (b.compressedMs ?? 0) - (a.compressedMs ?? 0),
    reprimes,
    maxBuffered: Math.max(...stats.map((s) => s.buffered)),
    delayMs: summary(stats.map((s) => s.delay)),
    targetMs: summary(stats.map((s) => s.target)),
    jitterP95Ms: summary(stats.map((s) => s.jitter)),
    raw: { delay: stats.map((s) => s.delay), target: stats.map((s) => s.target), jitter: stats.map((s) => s.jitter) },
  };
}

/** Several calls' {@link jitterFigures} as one (counts added, samples pooled). */
export function poolJitter(list) {
  const ok = list.filter(Boolean);
  if (ok.length === 0) return null;
  const sum = (k) => ok.reduce((a, j) => a + j[k], 0);
  const played = sum("played");
  const concealed = sum("concealed");
  const raw = (k) => ok.flatMap((j) => j.raw[k]);
  return {
    calls: ok.length,
    seconds: Math.round(sum("seconds") * 10) / 10,
    played,
    concealed,
    concealedPercent: played + concealed > 0 ? Math.round((10000 * concealed) / (played + concealed)) / 100 : null,
    concealedPercentPerCall: ok.map((j) => j.concealedPercent),
    late: sum("late"),
    dropped: sum("dropped"),
    duplicate: sum("duplicate"),
    received: sum("received"),
    compressedMs: sum("compressedMs"),
    reprimes: sum("reprimes"),
    maxBuffered: Math.max(...ok.map((j) => j.maxBuffered)),
    delayMs: summary(raw("delay")),
    targetMs: summary(raw("target")),
    jitterP95Ms: summary(raw("jitter")),
  };
}
