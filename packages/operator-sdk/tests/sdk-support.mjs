// Shared helpers of the SDK's browser tests (not a test file itself): the
// audin-server binary, the simulated phone network's dev endpoints, WAV
// parsing, Goertzel tone detection and an instrumented operator page.
//
// Built on tests/harness/ (launchBrowser, startAudinServer, ...).

import { existsSync, statSync } from "node:fs";
import { join } from "node:path";

import { SDK_ROOT, cargoTargetDir, startAudinServer } from "./harness/index.mjs";

export const UMD_PATH = "/sdk/dist/audin-operator-sdk.umd.cjs";

/**
 * The audin-server binary: $AUDIN_SERVER_BIN, else the newest of
 * target/debug and target/release (`cargo xtask test` builds it first).
 */
export function serverBinary() {
  if (process.env.AUDIN_SERVER_BIN) return process.env.AUDIN_SERVER_BIN;
  const target = cargoTargetDir();
  const found = ["debug", "release"]
    .map((p) => join(target, p, "audin-server"))
    .filter((p) => existsSync(p))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  if (found.length === 0) throw new Error(`no audin-server under ${target}/{debug,release}: run cargo build -p audin-server`);
  return found[0];
}

/**
 * Starts `audin-server --dev` on an ephemeral (or the given) loopback port
 * with an in-memory database, serving this package under /sdk/.
 * @param {{ args?: string[], port?: number }} [options]
 */
export async function startServer({ args = [], port = 0 } = {}) {
  const server = await startAudinServer({
    binary: serverBinary(),
    args: ["--dev", "--listen", `127.0.0.1:${port}`, "--database", ":memory:", "--static-dir", SDK_ROOT, ...args],
    readyPattern: /audin-server listening on (http:\/\/[^\s/]+)/,
  });
  return server;
}

/** POST /dev/sim/calls: the simulated network calls one of the account's numbers. */
export async function simCall(base, { from = "+14155550100", to = "+390299999999", behaviour } = {}) {
  const r = await fetch(`${base}/dev/sim/calls`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(behaviour ? { from, to, behaviour } : { from, to }),
  });
  if (!r.ok) throw new Error(`POST /dev/sim/calls: ${r.status} ${await r.text()}`);
  return (await r.json()).callSid;
}

/** GET /dev/sim/calls/{sid}: `{callSid, state, endReason, dtmf, framesHeard}`. */
export async function simState(base, callSid) {
  const r = await fetch(`${base}/dev/sim/calls/${callSid}`);
  if (!r.ok) throw new Error(`GET /dev/sim/calls/${callSid}: ${r.status}`);
  return r.json();
}

/** What the sim far end heard so far, as 8 kHz float samples. */
export async function simRecording(base, callSid) {
  const r = await fetch(`${base}/dev/sim/calls/${callSid}/recording.wav`);
  if (!r.ok) throw new Error(`recording.wav: ${r.status}`);
  return parseWav(Buffer.from(await r.arrayBuffer()));
}

/** Parses a 16-bit PCM mono WAV into `{ sampleRate, samples: Float32Array }`. */
export function parseWav(buf) {
  if (buf.toString("ascii", 0, 4) !== "RIFF" || buf.toString("ascii", 8, 12) !== "WAVE") throw new Error("not a WAV");
  let p = 12;
  let sampleRate = 0;
  let channels = 1;
  while (p + 8 <= buf.length) {
    const id = buf.toString("ascii", p, p + 4);
    const size = buf.readUInt32LE(p + 4);
    if (id === "fmt ") {
      channels = buf.readUInt16LE(p + 10);
      sampleRate = buf.readUInt32LE(p + 12);
    } else if (id === "data") {
      const end = Math.min(buf.length, p + 8 + size);
      const n = Math.floor((end - p - 8) / 2 / channels);
      const samples = new Float32Array(n);
      for (let i = 0; i < n; i++) samples[i] = buf.readInt16LE(p + 8 + i * 2 * channels) / 32768;
      return { sampleRate, samples };
    }
    p += 8 + size + (size & 1);
  }
  throw new Error("WAV without data chunk");
}

/** Peak amplitude of the `freq` component of `samples` (Goertzel, Hann-free). */
export function goertzel(samples, sampleRate, freq) {
  const n = samples.length;
  if (n === 0) return 0;
  const w = (2 * Math.PI * freq) / sampleRate;
  const c = 2 * Math.cos(w);
  let s1 = 0;
  let s2 = 0;
  for (let i = 0; i < n; i++) {
    const s0 = samples[i] + c * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  const power = s1 * s1 + s2 * s2 - c * s1 * s2;
  return (2 * Math.sqrt(Math.max(0, power))) / n;
}

/** RMS of `samples`. */
export function rms(samples) {
  let s = 0;
  for (const x of samples) s += x * x;
  return samples.length ? Math.sqrt(s / samples.length) : 0;
}

/**
 * How much of the signal is the `freq` tone: tone RMS / total RMS (1 for a
 * pure tone, ~0 for silence or another tone). Also returns the amplitude.
 */
export function toneShare(samples, sampleRate, freq) {
  const amp = goertzel(samples, sampleRate, freq);
  const total = rms(samples);
  return { amp, total, share: total > 0 ? amp / Math.SQRT2 / total : 0 };
}

/**
 * {@link toneShare} per block of `blockMs`, summarised by the median (robust
 * to the odd dropout when the machine is loaded): `{ amp, share, blocks }`.
 */
export function toneMedian(samples, sampleRate, freq, blockMs = 100) {
  const len = Math.round((sampleRate * blockMs) / 1000);
  const blocks = [];
  for (let i = 0; i + len <= samples.length; i += len) blocks.push(toneShare(samples.subarray(i, i + len), sampleRate, freq));
  if (blocks.length === 0) return { amp: 0, share: 0, total: 0, blocks: 0 };
  const med = (k) => {
    const v = blocks.map((b) => b[k]).sort((a, b) => a - b);
    return v[Math.floor(v.length / 2)];
  };
  return { amp: med("amp"), share: med("share"), total: med("total"), blocks: blocks.length };
}

/** Amplitude ratio in dB. */
export const dB = (a, b) => 20 * Math.log10(a / b);

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value (returned) or times out. */
export async function waitFor(fn, { timeoutMs = 10_000, intervalMs = 100, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/**
 * Opens a page on the server's origin with the UMD bundle and an
 * instrumented operator in `window.t`:
 * - `t.op`: the AudinOperator (getToken → the dev token endpoint);
 * - `t.events`: `[name, JSON snapshot]` of every event;
 * - `t.taps`: the latest playback/capture snapshots from the worklet tap;
 * - `t.streams`: every MediaStream getUserMedia returned;
 * - `t.tokens`: how many times getToken ran.
 *
 * @param {import("playwright-core").BrowserContext} context
 * @param {string} base server URL
 * @param {{ operatorRef: string, audioConstraints?: object, config?: object, tokenOverride?: string }} options
 */
export async function openOperatorPage(context, base, { operatorRef, audioConstraints, config = {} }) {
  const page = await context.newPage();
  const logs = [];
  page.on("console", (m) => logs.push(`[${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`[pageerror] ${e.stack ?? e.message}`));
  await page.goto(`${base}/healthz`);
  await page.addScriptTag({ url: `${base}${UMD_PATH}` });
  await page.evaluate(
    ({ operatorRef, audioConstraints, config }) => {
      const w = /** @type {any} */ (window);
      const { AudinOperator } = w.AudinOperatorSDK;
      const t = (w.t = { events: [], taps: { playback: [], capture: [] }, streams: [], tokens: 0, tokenHook: null });
      const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
      navigator.mediaDevices.getUserMedia = async (c) => {
        const s = await gum(c);
        t.streams.push(s);
        return s;
      };
      w.__audinTestTap = (tap) => {
        const list = t.taps[tap.kind];
        list.push({ at: performance.now(), sampleRate: tap.sampleRate, samples: Array.from(tap.samples) });
        if (list.length > 12) list.shift();
      };
      t.getToken = async () => {
        t.tokens++;
        if (t.tokenHook) {
          const v = await t.tokenHook(t.tokens);
          if (v !== undefined) return v;
        }
        const r = await fetch("/api/operator/token", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ operatorRef, displayName: operatorRef }),
        });
        if (!r.ok) throw new Error(`token endpoint: ${r.status}`);
        return r.json();
      };
      const cfg = { coreUrl: location.origin, getToken: () => t.getToken(), ...config };
      if (audioConstraints) cfg.audioConstraints = audioConstraints;
      t.op = new AudinOperator(cfg);
      const names = [
        "presenceStateChanged",
        "availabilityChanged",
        "incomingCall",
        "callStarted",
        "callEnded",
        "error",
        "callReconnecting",
        "callReconnected",
      ];
      for (const name of names) {
        t.op.on(name, (p) => t.events.push([name, JSON.parse(JSON.stringify(p)), performance.now()]));
      }
      t.seen = (name) => t.events.filter((e) => e[0] === name).map((e) => e[1]);
    },
    { operatorRef, audioConstraints, config },
  );
  return { page, logs };
}

/**
 * Collects every RTCPeerConnection the page makes from now on into
 * `window.t.pcs`; `window.t.onPeerConnection(pc)`, if the test sets it,
 * sees each one as it is made (before the SDK uses it).
 */
export async function recordPeerConnections(page) {
  await page.evaluate(() => {
    const w = /** @type {any} */ (window);
    const Orig = w.RTCPeerConnection;
    w.t.pcs = [];
    w.RTCPeerConnection = function (...a) {
      const pc = new Orig(...a);
      w.t.pcs.push(pc);
      w.t.onPeerConnection?.(pc);
      return pc;
    };
  });
}

/**
 * Each stream the page's peer connections receive (`window.t.pcs`, see
 * recordPeerConnections), by mid: its codec, packets received, and NetEq's
 * cumulative counters from `inbound-rtp` (samples emitted; delay, target
 * and minimum summed over them, in seconds).
 */
export function inboundStreams(page) {
  return page.evaluate(async () => {
    const out = {};
    for (const pc of /** @type {any} */ (window).t.pcs) {
      const stats = [...(await pc.getStats()).values()];
      for (const s of stats.filter((s) => s.type === "inbound-rtp")) {
        out[s.mid] = {
          codec: stats.find((c) => c.id === s.codecId)?.mimeType,
          packets: s.packetsReceived,
          emitted: s.jitterBufferEmittedCount,
          delay: s.jitterBufferDelay,
          target: s.jitterBufferTargetDelay,
          minimum: s.jitterBufferMinimumDelay,
        };
      }
    }
    return out;
  });
}

/** The names of the events the page saw, in order. */
export async function eventNames(page) {
  return page.evaluate(() => /** @type {any} */ (window).t.events.map((e) => e[0]));
}

/** The payloads of one event the page saw. */
export async function seen(page, name) {
  return page.evaluate((n) => /** @type {any} */ (window).t.seen(n), name);
}

/** Waits for the page to have seen `count` events `name` (payloads returned). */
export async function waitForEvent(page, name, { count = 1, timeoutMs = 10_000, where } = {}) {
  return waitFor(
    async () => {
      const list = await seen(page, name);
      const hits = where ? list.filter(where) : list;
      return hits.length >= count ? hits : null;
    },
    { timeoutMs, what: `${count}× "${name}"` },
  );
}

/** The worklet tap's latest snapshots of `kind`, concatenated (after `since`, page ms). */
export async function tapSamples(page, kind, { since = 0, last = 4 } = {}) {
  const r = await page.evaluate(
    ({ kind, since, last }) => {
      const list = /** @type {any} */ (window).t.taps[kind].filter((x) => x.at > since).slice(-last);
      return { sampleRate: list[0]?.sampleRate ?? 0, samples: list.flatMap((x) => x.samples) };
    },
    { kind, since, last },
  );
  return { sampleRate: r.sampleRate, samples: Float32Array.from(r.samples) };
}
