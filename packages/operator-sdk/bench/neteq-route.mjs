#!/usr/bin/env node
// Candidate echo-safe routes, measured on the echo rig without the SDK:
// how long a far-end frame takes from the moment it is handed to the route
// until it would leave an AudioWorklet on the direct Web Audio route
// (the end point of audio-latency.mjs's "wire → playback" figure).
//
//   node packages/operator-sdk/bench/neteq-route.mjs [--calls 3] [--seconds 8] [--json FILE]
//
// Routes (one fresh browser per route and call):
// - `encoded`: the SDK's route where frames cannot be inserted
//   (playback.ts): the worklet's output → MediaStreamAudioDestinationNode →
//   an in-page RTCPeerConnection pair (PCMU, 10 ms packets) → <audio>. The
//   click is handed to the route when the worklet writes it; with the SDK,
//   the worklet's jitter buffer comes before this (audio-latency.mjs's
//   "wire → playback" figure).
// - `pcmu-insert`: the SDK's inserted route (playback.ts, its transform
//   worker's source read from src/playback.ts): the far end's G.711 frames
//   go into a PCMU loopback as they arrive, in place of what the sender
//   encoded, so the receiver's NetEq is the one jitter buffer. The far end
//   is a 20 ms timer on the page's main thread posting frames to the
//   worker, as the SDK posts them from the audio socket's message event;
//   a click is handed over when it is posted. (Chromium 156 does not send
//   frames made with `new RTCEncodedAudioFrame`, copy or new timestamp: 0
//   packets sent, hence the worker's pool of the sender's own frames.)
//
// Every page also plays reference clicks straight from its worklet into the
// AudioContext (opposite polarity, so the two never mix up); their round
// trip to the rig's microphone is the direct route's acoustic path. A
// route's figure is its click's hand-off → capture time minus that
// reference round trip, on the worklet's render clock (wall clock of a
// render quantum: the audio clock plus the smallest wall − audio offset
// seen, so the 10 ms callback bursts do not count). The `<audio>` element's
// own output stream is part of the route and is counted.
//
// Needs pulseaudio, pactl, espeak-ng, sox (cargo xtask setup); not the SDK.

import { readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { parseArgs } from "node:util";

import { launchRigBrowser, startPulse } from "../tests/harness/pulse.mjs";

const { values } = parseArgs({
  options: {
    calls: { type: "string", default: "3" },
    seconds: { type: "string", default: "8" },
    routes: { type: "string", default: "encoded,pcmu-insert" },
    json: { type: "string" },
  },
});

/** Runs in the page: window.measureRoute(route, seconds). */
function pageScript(WORKER) {
  const WORKLET = `
class Probe extends AudioWorkletProcessor {
  constructor() {
    super();
    this.clicks = 0; // reference (+) clicks to play
    this.offset = Infinity; // smallest wall − audio time, ms
    this.last = { 1: -1e9, "-1": -1e9 };
    this.port.onmessage = (e) => { this.clicks += e.data === "click" ? 1 : 0; this.route = e.data === "route-click" ? true : this.route; };
  }
  process(inputs, outputs) {
    const now = currentTime * 1000;
    this.offset = Math.min(this.offset, Number(Temporal.Now.instant().epochNanoseconds) / 1e6 - now);
    const input = inputs[0] && inputs[0][0];
    const ref = outputs[0] && outputs[0][0];
    const route = outputs[1] && outputs[1][0];
    if (this.clicks > 0 && ref) { ref[0] = 1; this.clicks--; this.port.postMessage({ k: "ref", t: now }); }
    // 0.5 ms long: a one-sample click would not survive the encoded route's 8 kHz.
    if (this.route && route) { route.fill(-1, 0, 22); this.route = false; this.port.postMessage({ k: "handed", t: now + this.offset }); }
    if (!input) return true;
    for (let i = 0; i < input.length; i++) {
      const sign = input[i] > 0.2 ? 1 : input[i] < -0.2 ? -1 : 0;
      if (!sign) continue;
      const t = now + (i * 1000) / sampleRate;
      if (t - this.last[sign] > 50) { this.last[sign] = t; this.port.postMessage({ k: "echo", sign, t, wall: t + this.offset }); }
    }
    return true;
  }
}
registerProcessor("probe", Probe);`;

  const url = (src) => URL.createObjectURL(new Blob([src], { type: "text/javascript" }));

  async function loopback(track, stream, { worker }) {
    const a = new RTCPeerConnection({ iceServers: [] });
    const b = new RTCPeerConnection({ iceServers: [] });
    a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
    b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
    const remote = new Promise((ok) => (b.ontrack = (ev) => ok(new MediaStream([ev.track]))));
    const tr = a.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    tr.setCodecPreferences(RTCRtpSender.getCapabilities("audio").codecs.filter((c) => c.mimeType === "audio/PCMU"));
    if (worker) tr.sender.transform = new RTCRtpScriptTransform(worker, {});
    // As playback.ts: no transport-wide congestion control (its probes are
    // padding NetEq takes for late packets), 10 ms packets when encoding.
    const munge = (s) => {
      const sdp = s.replace(/^a=.*transport-(cc|wide).*\r?\n/gm, "");
      return worker ? sdp : sdp.replace(/^m=audio.*\r?\n/m, "$&a=ptime:10\r\n");
    };
    const offer = await a.createOffer();
    await a.setLocalDescription({ type: "offer", sdp: munge(offer.sdp) });
    await b.setRemoteDescription({ type: "offer", sdp: munge(offer.sdp) });
    const answer = await b.createAnswer();
    await b.setLocalDescription({ type: "answer", sdp: munge(answer.sdp) });
    await a.setRemoteDescription({ type: "answer", sdp: munge(answer.sdp) });
    for (const r of b.getReceivers()) r.jitterBufferTarget = 0;
    const el = document.createElement("audio");
    el.autoplay = true;
    el.srcObject = await remote;
    el.play().catch(() => undefined);
    return { a, b, el };
  }

  window.measureRoute = async (route, seconds) => {
    const ctx = new AudioContext({ latencyHint: "interactive" });
    await ctx.audioWorklet.addModule(url(WORKLET));
    const mic = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    const node = new AudioWorkletNode(ctx, "probe", { numberOfInputs: 1, numberOfOutputs: 2, outputChannelCount: [1, 1] });
    ctx.createMediaStreamSource(mic).connect(node);
    node.connect(ctx.destination, 0);
    const ev = { ref: [], echo: [], handed: [] };
    node.port.onmessage = (e) => ev[e.data.k].push(e.data);
    const sink = ctx.createMediaStreamDestination();
    node.connect(sink, 1);
    const track = sink.stream.getAudioTracks()[0];
    let worker;
    const farEnd = [];
    if (route === "pcmu-insert") {
      worker = new Worker(url(WORKER));
      // The far end: a frame every 20 ms (a click every 25th), on the main thread.
      const t0 = performance.now();
      let n = 0;
      const frame = () => {
        n++;
        const bytes = new Uint8Array(160).fill(0xff); // μ-law silence
        if (n % 25 === 0) {
          bytes[0] = bytes[1] = 0x00; // μ-law −32124: a negative click
          ev.handed.push({ t: Number(Temporal.Now.instant().epochNanoseconds) / 1e6 });
        }
        worker.postMessage(bytes.buffer, [bytes.buffer]);
        farEnd[0] = setTimeout(frame, Math.max(0, t0 + n * 20 - performance.now()));
      };
      frame();
    }
    const pc = await loopback(track, sink.stream, { worker });
    await ctx.resume();
    // Reference clicks every 500 ms; the route's own every 500 ms, 250 ms apart.
    const timers = [setInterval(() => node.port.postMessage("click"), 500)];
    if (route === "encoded") {
      await new Promise((r) => setTimeout(r, 250));
      timers.push(setInterval(() => node.port.postMessage("route-click"), 500));
    }
    const neteq = async () => {
      for (const r of (await pc.b.getStats()).values()) {
        if (r.type === "inbound-rtp") return r;
      }
      return undefined;
    };
    await new Promise((r) => setTimeout(r, 4000)); // NetEq starts high and adapts down
    const s0 = await neteq();
    const mark = { ref: ev.ref.length, echo: ev.echo.length, handed: ev.handed.length };
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const s1 = await neteq();
    timers.forEach(clearInterval);
    clearTimeout(farEnd[0]);
    worker?.terminate();
    pc.a.close();
    pc.b.close();
    mic.getTracks().forEach((t) => t.stop());
    await ctx.close();
    const per = (k) => (1000 * (s1[k] - s0[k])) / (s1.jitterBufferEmittedCount - s0.jitterBufferEmittedCount);
    return {
      ref: ev.ref.slice(mark.ref),
      echo: ev.echo.slice(mark.echo),
      handed: ev.handed.slice(mark.handed),
      neteq: { delay: per("jitterBufferDelay"), target: per("jitterBufferTargetDelay"), minimum: per("jitterBufferMinimumDelay") },
    };
  };
}

/** The SDK's transform worker, as src/playback.ts builds it. */
function insertWorker() {
  const src = readFileSync(new URL("../src/playback.ts", import.meta.url), "utf8");
  const m = /const INSERT_WORKER =([\s\S]*?");\n/.exec(src);
  if (!m) throw new Error("src/playback.ts: INSERT_WORKER not found");
  return new Function(`return (${m[1]})`)();
}

const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
const f = (x) => (x === undefined || x === null || Number.isNaN(x) ? "–" : x.toFixed(1));

/** Delay from each event at `at(e)` to the first echo of `sign` within 450 ms. */
function lags(events, echoes, sign, at, echoAt) {
  const out = [];
  for (const e of events) {
    const hit = echoes.find((x) => x.sign === sign && echoAt(x) > at(e) + 1 && echoAt(x) < at(e) + 450);
    if (hit) out.push(echoAt(hit) - at(e));
  }
  return out;
}

const server = createServer((_req, res) => {
  res.setHeader("content-type", "text/html");
  res.end(`<!doctype html><body><script>(${pageScript.toString()})(${JSON.stringify(insertWorker())})</script></body>`);
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const pageUrl = `http://127.0.0.1:${server.address().port}/`;
const pulse = startPulse();
const results = {};
try {
  for (let k = 0; k < Number(values.calls); k++) {
    for (const route of values.routes.split(",")) {
      const browser = await launchRigBrowser(pulse, { args: ["--disable-features=ChromeWideEchoCancellation"] });
      try {
        const page = await browser.context.newPage();
        await page.goto(pageUrl);
        const r = await page.evaluate(([route, s]) => window.measureRoute(route, s), [route, Number(values.seconds)]);
        const reference = median(lags(r.ref, r.echo, 1, (e) => e.t, (x) => x.t));
        const routeMs = lags(r.handed, r.echo, -1, (e) => e.t, (x) => x.wall).map((ms) => ms - reference);
        const row = { referenceMs: reference, routeMs: median(routeMs), clicks: `${routeMs.length}/${r.handed.length}`, neteq: r.neteq };
        (results[route] ??= []).push(row);
        console.log(
          `${route} #${k + 1}: ${f(row.routeMs)} ms (${row.clicks} clicks; reference round trip ${f(reference)} ms); ` +
            `NetEq delay ${f(r.neteq.delay)} target ${f(r.neteq.target)} minimum ${f(r.neteq.minimum)}`,
        );
      } finally {
        await browser.close();
      }
    }
  }
  for (const [route, rows] of Object.entries(results)) {
    console.log(`${route}: median ${f(median(rows.map((r) => r.routeMs)))} ms over ${rows.length} calls`);
  }
  if (values.json) {
    const date = new Date().toISOString().slice(0, 10);
    writeFileSync(values.json, JSON.stringify({ date, seconds: Number(values.seconds), results }, null, 2) + "\n");
  }
} finally {
  pulse.stop();
  server.close();
}
