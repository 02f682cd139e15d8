#!/usr/bin/env node
// Browser audio latency and jitter of @audin.ai/operator-sdk, measured in
// headless Chromium against `audin-server --dev` and its sim network.
//
//   node packages/operator-sdk/bench/audio-latency.mjs [--out FILE.md] [--json FILE.json]
//        [--seconds 15] [--warmup 3] [--repeat 2] [--priority NICE]
//        [--scenarios baseline,jitter30,...] [--worklet-stamps]
//   node packages/operator-sdk/bench/audio-latency.mjs --from-json FILE.json --out FILE.md
//
// Needs the built SDK (dist/) and a built audin-server (target/debug or
// target/release, or $AUDIN_SERVER_BIN). Prints a JSON document and a
// Markdown report; --out writes the report (docs/performance-browser.md).
//
// Method (details in latency-probe.mjs and the report):
// - capture → wire: the fake microphone is a WAV of 0.5 ms pulses every
//   507 ms (so pulses sweep every position in the 20 ms frame); the probe
//   finds each pulse in the worklet input, the posted frame carrying it, and
//   that frame's WebSocket.send();
// - wire → playback: the sim far end plays `click` (one full-scale sample
//   every 500 ms); the probe timestamps the click frame's WebSocket message
//   event, its arrival in the worklet and the click's peak in the worklet
//   output;
// - jitter: the sim impairs the frames toward the operator
//   (POST /dev/sim/calls/{sid}/impair); the jitter buffer's counters and
//   delays are sampled through the worklet module's audin_stat_* exports.

import { existsSync, mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { getPriority, loadavg, setPriority, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import { launchBrowser } from "../tests/harness/index.mjs";
import { openOperatorPage, serverBinary, simCall, sleep, startServer, waitForEvent } from "../tests/sdk-support.mjs";
import {
  WORKLET_PROBE_SOURCE,
  captureFigures,
  installPageProbe,
  jitterFigures,
  playbackFigures,
  poolJitter,
  readProbe,
  summary,
} from "./latency-probe.mjs";

export const SCENARIOS = [
  { name: "baseline", jitterMs: 0, lossPercent: 0, distribution: "uniform" },
  { name: "jitter30", jitterMs: 30, lossPercent: 0, distribution: "uniform" },
  { name: "jitter30-loss1", jitterMs: 30, lossPercent: 1, distribution: "uniform" },
  { name: "jitter60-loss2", jitterMs: 60, lossPercent: 2, distribution: "uniform" },
  { name: "pareto60", jitterMs: 60, lossPercent: 0, distribution: "pareto" },
];

export const MILANO = { id: "pn_dev_milano", phoneNumber: "+390299999999" };
/** Raw microphone: no APM between the fake device and the worklet. */
export const RAW_MIC = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };

/**
 * A 44.1 kHz mono WAV of 0.5 ms pulses (0.9 of full scale) every `periodMs`,
 * `count` of them (Chromium loops the file, so the period holds across the
 * loop). 507 ms = 25 frames + 7 ms: successive pulses land 7 ms further into
 * the 20 ms frame, covering every position.
 */
export function makeClickWav(path, { periodMs = 507, count = 40, sampleRate = 44100 } = {}) {
  const period = Math.round((periodMs / 1000) * sampleRate);
  const frames = period * count;
  const pulse = Math.round(0.0005 * sampleRate);
  const buf = Buffer.alloc(44 + frames * 2);
  buf.write("RIFF", 0, "ascii");
  buf.writeUInt32LE(36 + frames * 2, 4);
  buf.write("WAVEfmt ", 8, "ascii");
  buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20);
  buf.writeUInt16LE(1, 22);
  buf.writeUInt32LE(sampleRate, 24);
  buf.writeUInt32LE(sampleRate * 2, 28);
  buf.writeUInt16LE(2, 32);
  buf.writeUInt16LE(16, 34);
  buf.write("data", 36, "ascii");
  buf.writeUInt32LE(frames * 2, 40);
  for (let k = 0; k < count; k++) {
    for (let i = 0; i < pulse; i++) buf.writeInt16LE(Math.round(0.9 * 32767), 44 + (k * period + period / 2 + i) * 2);
  }
  writeFileSync(path, buf);
  return path;
}

/** POST /dev/sim/calls/{sid}/impair. */
export async function impair(base, callSid, body) {
  const r = await fetch(`${base}/dev/sim/calls/${callSid}/impair`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!r.ok) throw new Error(`impair: ${r.status} ${await r.text()}`);
  return r.json();
}

/**
 * One call on a fresh operator page with the probes installed: accepted,
 * impaired as `scenario` says; returns the page and the call sid.
 */
export async function probedCall(context, base, { operatorRef, behaviour = "click", scenario, workletStamps = false }) {
  const { page, logs } = await openOperatorPage(context, base, { operatorRef, audioConstraints: RAW_MIC });
  await page.evaluate(installPageProbe, WORKLET_PROBE_SOURCE);
  if (workletStamps) {
    // Without getOutputTimestamp the SDK leaves arrival stamps to the
    // worklet's currentTime (its fallback): measures what main-thread
    // stamps buy.
    await page.evaluate(() => {
      /** @type {any} */ (AudioContext.prototype).getOutputTimestamp = undefined;
    });
  }
  await page.evaluate(async (id) => {
    const t = /** @type {any} */ (window).t;
    t.op.on("incomingCall", (call) => call.accept());
    await t.op.goOnline([id]);
  }, MILANO.id);
  const sid = await simCall(base, { to: MILANO.phoneNumber, behaviour });
  await waitForEvent(page, "callStarted", { timeoutMs: 15_000 });
  const imp = { jitterMs: scenario.jitterMs, lossPercent: scenario.lossPercent, seed: scenario.seed ?? 1, distribution: scenario.distribution };
  await impair(base, sid, imp);
  return { page, logs, sid };
}

/** Wall clock (ms), audio clock (s) and frames sent so far, in the page now. */
export async function mark(page) {
  return page.evaluate(() => {
    const p = /** @type {any} */ (window).__latencyProbe;
    return {
      wall: Number(Temporal.Now.instant().epochNanoseconds / 1000n) / 1000,
      ct: p.ctx?.currentTime ?? 0,
      sent: p.sendCount,
    };
  });
}

/** One call of `scenario`: the raw per-click rows and the jitter figures. */
async function runCall(context, base, scenario, { seconds, warmup, workletStamps }, n) {
  const { page, logs } = await probedCall(context, base, { operatorRef: `bench-${scenario.name}-${n}`, scenario, workletStamps });
  try {
    await sleep(warmup * 1000);
    const a = await mark(page);
    await sleep(seconds * 1000);
    const b = await mark(page);
    await sleep(400); // let the worklet flush its events
    const data = await readProbe(page);
    const init = data.worklet.find((e) => e.type === "init");
    await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall?.hangup());
    return {
      context: { ...data.context, captureResamplerMs: init?.captureLatencyMs, playbackResamplerMs: init?.playbackLatencyMs },
      capture: captureFigures(data, { from: a.wall, to: b.wall }),
      playback: playbackFigures(data, { from: a.wall, to: b.wall }),
      jitter: jitterFigures(data, { fromCt: a.ct, toCt: b.ct }),
      sentPerSecond: Math.round(((b.sent - a.sent) * 10000) / (b.wall - a.wall)) / 10,
    };
  } catch (e) {
    throw new Error(`${scenario.name}: ${e.message}\n${logs.join("\n")}`);
  } finally {
    await page.close().catch(() => undefined);
  }
}

/** `repeat` calls of `scenario`, pooled. */
async function runScenario(context, base, scenario, opts, repeat, counter) {
  const calls = [];
  for (let i = 0; i < repeat; i++) calls.push(await runCall(context, base, scenario, opts, ++counter.n));
  const cap = calls.flatMap((c) => c.capture);
  const play = calls.flatMap((c) => c.playback);
  const pick = (rows, k) => summary(rows.map((r) => r[k]));
  return {
    scenario,
    calls: repeat,
    context: calls[0].context,
    capture: {
      clicks: cap.length,
      oldestMs: pick(cap, "oldestMs"),
      clickMs: pick(cap, "clickMs"),
      inWorkletMs: pick(cap, "inWorkletMs"),
      handoffMs: pick(cap, "handoffMs"),
      wallMs: pick(cap, "wallMs"),
    },
    playback: {
      clicks: play.length,
      totalMs: pick(play, "totalMs"),
      totalP50PerCall: calls.map((c) => summary(c.playback.map((r) => r.totalMs)).p50),
      postMs: pick(play, "postMs"),
      inWorkletMs: pick(play, "inWorkletMs"),
      wallMs: pick(play, "wallMs"),
      fromNominalMs: pick(play, "fromNominalMs"),
      arrivalLateMs: pick(play, "arrivalLateMs"),
      stampLeadMs: summary(play.map((r) => r.stampLeadMs).filter((x) => x !== null)),
    },
    jitterBuffer: poolJitter(calls.map((c) => c.jitter)),
    sentPerSecond: calls.map((c) => c.sentPerSecond),
  };
}

const fmt = (x) => (x === null || x === undefined || !Number.isFinite(Number(x)) ? "–" : Number(x).toFixed(1));
const dist = (s) => (s && s.n ? `${fmt(s.p50)} / ${fmt(s.p95)} / ${fmt(s.max)}` : "–");

/** "met", or where it is missed, judged on p50 and p95. */
function verdict(s, limit) {
  if (!s || !s.n) return "no data";
  if (s.p95 <= limit) return s.max <= limit ? "**met** (every sample)" : `**met** at p50 and p95 (max ${fmt(s.max)})`;
  if (s.p50 <= limit) return `**met at p50, missed at p95** (by ${fmt(s.p95 - limit)} ms)`;
  return `**missed** (p50 over by ${fmt(s.p50 - limit)} ms)`;
}

/** The Markdown report (docs/performance-browser.md). */
export function markdown(results, meta) {
  const by = (name) => results.find((r) => r.scenario.name === name);
  const base = by("baseline") ?? results[0];
  const j30 = by("jitter30");
  const perCall = base.playback.totalP50PerCall.map(fmt).join(", ");
  const ctx = base.context;
  const quantumMs = (128 / ctx.sampleRate) * 1000;
  const gdCap = ctx.captureResamplerMs;
  const gdPlay = ctx.playbackResamplerMs;
  const L = [];
  const p = (...xs) => L.push(...xs);
  p(
    "# Browser audio latency and jitter (`@audin.ai/operator-sdk`)",
    "",
    `Measured for issues "Performance at scale" (part 4) and 14 (item 6, latency) on ${meta.date} by`,
    "`" + meta.command + "`:",
    "headless Chromium " + meta.browser + " with a fake microphone",
    `(AudioContext at ${ctx.sampleRate} Hz, render quantum 128 frames = ${fmt(quantumMs)} ms, rendered in 10 ms`,
    `callbacks (measured); \`baseLatency\` ${fmt(ctx.baseLatency * 1000)} ms and \`outputLatency\` ${fmt(ctx.outputLatency * 1000)} ms are the`,
    "browser's and are **not** in any figure below), `audin-server --dev`",
    `(\`${meta.server}\`) on loopback, ${meta.repeat} call(s) per scenario, ${meta.seconds} s measured per call after ${meta.warmup} s of warm-up,`,
    `on 2 vCPUs shared with other builds (1-minute load average ${meta.loadAverage.join(" → ")}${meta.nice ? `; bench, browser and server at nice ${meta.nice}, so unrelated builds yield the CPU` : ""}). Figures`,
    "are **p50 / p95 / max in ms** over all clicks of all calls of a scenario. On",
    "this shared machine the tails (p95, max) mostly measure host scheduling:",
    "the arrival-jitter column shows what the hosts added even when the sim adds",
    "nothing.",
    "",
    "Far-end frames are stamped on the main thread at the WebSocket message",
    "(`performance.now()` mapped onto the audio clock), so a wire → playback",
    "figure starts when the frame reached the page, including the wait for the",
    "next render callback that the worklet's `currentTime` used to hide (the",
    "\"stamp lead\" row below).",
    "",
    "## Targets",
    "",
    "| What | Target | Measured (p50 / p95 / max) | Verdict | Anchor |",
    "|---|---|---|---|---|",
    `| capture → wire: the frame's oldest sample, from the worklet input to \`WebSocket.send\` | ≤ 25 ms | ${dist(base.capture.oldestMs)} | ${verdict(base.capture.oldestMs, 25)} | RFC 3551: 20 ms packetization, so 20 ms is the floor |`,
    `| wire → playback, no jitter: WebSocket message event → the click leaves the worklet | ≤ 30 ms | ${dist(base.playback.totalMs)} (p50 per call: ${base.playback.totalP50PerCall.map(fmt).join(", ")}) | ${verdict(base.playback.totalMs, 30)} | G.114: one way < 150 ms acceptable, > 400 ms unacceptable |`,
  );
  const route = sdkRoute(meta.routes);
  if (route) {
    const withRoute = base.playback.totalMs.p50 + route.addedMs;
    p(
      `| wire → playback, no jitter, **with the echo-safe route** (the worklet figure + what the loopback adds on top of it, \`bench/route-latency.mjs\`, ${route.date}; from 3–4 s into a call, see below) | ≤ 30 ms | ${fmt(withRoute)} at p50 (${fmt(base.playback.totalMs.p50)} ${route.addedMs < 0 ? "−" : "+"} ${fmt(Math.abs(route.addedMs))}) | ${withRoute <= 30 ? "**met**" : `**missed** (by ${fmt(withRoute - 30)} ms: see the loopback's NetEq delay below)`} | the `+"`"+`playbackRoute: "direct"`+"`"+` option meets it with headsets |`,
    );
  }
  if (j30?.jitterBuffer) {
    const c = j30.jitterBuffer.concealedPercent;
    p(
      `| 30 ms jitter: concealed frames | ≤ 1 % | ${fmt(c)} % (per call: ${j30.jitterBuffer.concealedPercentPerCall.map(fmt).join(", ")} %) | ${c <= 1 ? "**met**" : "**missed**"} | |`,
      `| 30 ms jitter: playout delay (frame due on the fastest path → its click leaves the worklet) | ≤ 80 ms | ${dist(j30.playback.fromNominalMs)} | ${verdict(j30.playback.fromNominalMs, 80)} | NetEq starts at an 80 ms target and adapts on the p95 of arrival jitter |`,
    );
  }
  p(
    "",
    "## Per scenario",
    "",
    "The sim impairs the far end's frames toward the operator",
    "(`POST /dev/sim/calls/{sid}/impair`, docs/protocol-v1.md): each frame gets an",
    "extra delay drawn from [0, jitter] but keeps its order (frames behind a",
    "delayed one wait, as over TCP), and is lost with the given probability.",
    "\"JB\" columns are the worklet jitter buffer's own figures (`audin_stat_*`),",
    "sampled every 7 render quanta (JB jitter p95 is its estimate of the arrival",
    "jitter, from the stamps it is given); concealed is the share of the frames pulled",
    "(played + concealed) that were concealment; given back is the playout time",
    "sub-frame time compression removed (ms per call-minute). Arrival jitter is how much later",
    "than the fastest click frame within ±2.5 s each click frame reached the",
    "socket: the impairment plus both hosts' scheduling (not zero in the",
    "baseline: the server and Chromium share two busy vCPUs). Re-primes are the",
    "buffer's resyncs after three late frames in a row (inferred from its",
    "reported delay dropping to 0; no export counts them).",
    ...(meta.workletStamps ? ["", "**This run stamped arrivals in the worklet (`--worklet-stamps`), as before main-thread stamps.**"] : []),
    "",
    "| scenario | capture → wire (oldest sample) | click frames' arrival jitter at the socket | wire → playback | playout delay over the fastest path | JB delay | JB target | JB jitter p95 | concealed | late / dropped | given back by compression | re-primes | max buffered |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  );
  for (const r of results) {
    const s = r.scenario;
    const jb = r.jitterBuffer;
    const label = `${s.name}: ${s.jitterMs} ms ${s.distribution}${s.lossPercent ? `, ${s.lossPercent} % loss` : ""}`;
    const perMinute = jb && jb.seconds > 0 ? `${fmt((60 * (jb.compressedMs ?? 0)) / jb.seconds)} ms/min` : "–";
    p(
      `| ${label} | ${dist(r.capture.oldestMs)} | ${dist(r.playback.arrivalLateMs)} | ${dist(r.playback.totalMs)} | ${dist(r.playback.fromNominalMs)} | ${dist(jb?.delayMs)} | ${dist(jb?.targetMs)} | ${dist(jb?.jitterP95Ms)} | ${jb ? `${fmt(jb.concealedPercent)} % (${jb.concealed} of ${jb.played + jb.concealed})` : "–"} | ${jb ? `${jb.late} / ${jb.dropped}` : "–"} | ${perMinute} | ${jb?.reprimes ?? "–"} | ${jb?.maxBuffered ?? "–"} |`,
    );
  }
  const bc = base.capture;
  const bp = base.playback;
  p(
    "",
    "## Where the time goes",
    "",
    `**Capture → wire** (baseline, ${bc.clicks} pulses):`,
    "",
    "| part | clock | p50 / p95 / max | expected |",
    "|---|---|---|---|",
    `| in the worklet: the pulse's centre in the input → end of the render quantum whose \`process()\` posted the frame carrying it | audio | ${dist(bc.inWorkletMs)} | resampler ${fmt(gdCap)} ms + wait for the rest of the frame (0–20 ms, by where the pulse falls) + quantum alignment (0–${fmt(quantumMs)} ms) |`,
    `| hand-off: that \`process()\` call → \`WebSocket.send\` (worklet → main postMessage, the SDK's main-thread hop, send) | wall | ${dist(bc.handoffMs)} | < 1 ms when the main thread is idle |`,
    `| the pulse (a sample at a random place in its frame) | | ${dist(bc.clickMs)} | |`,
    `| the frame's oldest sample (pulse + its offset in the frame) | | ${dist(bc.oldestMs)} | 19.9 ms accumulation + ${fmt(gdCap)} ms + 0–${fmt(quantumMs)} ms + hand-off = ${fmt(19.875 + gdCap)}–${fmt(19.875 + gdCap + quantumMs)} ms + hand-off |`,
    `| raw wall clock: \`process()\` that received the pulse → send | wall | ${dist(bc.wallMs)} | the same, quantised to the device's 10 ms callbacks |`,
    "",
    `**Wire → playback** (baseline, ${bp.clicks} clicks):`,
    "",
    "| part | clock | p50 / p95 / max | expected |",
    "|---|---|---|---|",
    `| main → worklet postMessage: message event → the worklet's port handler | wall | ${dist(bp.postMs)} | < 1 ms; messages wait while the render thread is inside a callback |`,
    `| stamp lead: the main thread's arrival stamp (the jitter buffer's) lies this much before the worklet's \`currentTime\` at the port handler | audio | ${dist(bp.stampLeadMs)} | 0 to one render callback (~10–12 ms): the wait for the next callback, now counted in the buffer's delay instead of hidden |`,
    `| in the worklet: the frame's arrival in the worklet (\`currentTime\`) → the click's peak in the output | audio | ${dist(bp.inWorkletMs)} | jitter-buffer delay (target ≥ 20 ms, counted from the stamp; playout starts within a 2.5 ms priming step of it and compression keeps it within 4 ms) − stamp lead + resampler ${fmt(gdPlay)} ms; pulls are timed to the sample, so no quantum alignment |`,
    `| total | | ${dist(bp.totalMs)} | |`,
    `| raw wall clock: message event → the \`process()\` call that output the peak | wall | ${dist(bp.wallMs)} | the same ± the 10 ms callbacks: a frame that arrives between callbacks is output from the next one on, a wait that belongs to the device's buffering (\`baseLatency\`), not to the SDK |`,
    "",
  );
  p(
    "## Why targets are missed, and what would fix it",
    "",
    "- **Capture → wire** is 20 ms of packetization (RFC 3551's 20 ms frames, fixed",
    `  by the protocol) + the anti-aliasing FIR's ${fmt(gdCap)} ms group delay + up to one`,
    `  render quantum (${fmt(quantumMs)} ms) of alignment + the hand-off. The oldest`,
    `  sample therefore lands between ${fmt(19.875 + gdCap)} and ${fmt(19.875 + gdCap + quantumMs)} ms plus the hand-off:`,
    "  within 25 ms when the frame boundary falls early in a quantum and the main",
    "  thread is free, up to ~1 ms over otherwise, more when the main thread is",
    "  busy (the max column). Room: a shorter or minimum-phase FIR would save most",
    "  of the 2.3 ms; the alignment is inherent (the worklet sees whole quanta).",
    `  Any other sample of the frame waits less (a pulse at a random place: p50 ${fmt(bc.clickMs.p50)} ms).`,
    "- **Wire → playback without jitter** is the jitter buffer's delay (its",
    "  target is at least 20 ms, `MIN_TARGET_MS`) minus the stamp lead, plus the",
    `  resampler's ${fmt(gdPlay)} ms. Three things used to add to it, now fixed in`,
    "  `audin-codec`'s `JitterBuffer` and the worklet:",
    "  1. *Delay left above the target.* Playout starts on the fastest path seen",
    "     so far; a faster path showing up later, or a stall for a late frame",
    "     (+20 ms), left the delay above the target, and the buffer only dropped",
    "     whole frames once it was more than 20 ms over, so up to a frame stayed",
    "     for the rest of the call (per call p50s of 22 to 41 ms before). Now",
    "     **sub-frame time compression** (`JitterBuffer::pull`) gives the excess",
    "     back once it has stayed over 4 ms for 0.5 s: a frame is shortened by",
    "     2.5–10 ms where it repeats itself (a pitch period, normalised",
    "     correlation ≥ 0.9) or is quiet, crossfading the removed period into",
    "     the next so the waveform stays continuous (NetEq's \"accelerate\",",
    "     simplified); never below the target (nor below the p95 jitter + 20 ms",
    "     when that exceeds the 70 ms cap). Playout also starts within 2.5 ms",
    "     of the target (silence in 2.5 ms pieces while priming, not 20 ms), and",
    "     every pull is timed to its first sample, not to the render quantum.",
    "  2. *Coarse arrival stamps.* The worklet stamped arrivals with its",
    "     `currentTime`, which moves once per device callback (10 ms here): the",
    "     callback period read as ~10 ms of p95 jitter (raising the target",
    "     under jitter), and a frame that arrived just after a callback waited",
    "     for the next one uncounted. The main thread now stamps each frame at",
    "     its WebSocket message with `performance.now()` mapped onto the audio",
    "     clock (`getOutputTimestamp()` for the smooth output clock, plus the",
    "     output latency by which `currentTime` leads it at a callback), see the",
    "     stamp-lead row; the buffer's jitter estimate is now the network's and",
    "     the hosts'. A frame is still pulled when the device callback that",
    "     renders its playout time runs, up to one callback early, so the",
    "     target's margin over the p95 jitter grew from 10 to 20 ms",
    "     (`TARGET_MARGIN_MS`: 10 ms of safety + one callback) and its cap from",
    "     60 to 70 ms: finer stamps alone would have traded that safety for",
    "     latency (measured: up to 3.5 % concealed under 30 ms of jitter with",
    "     the 10 ms margin).",
    "  3. *Loss looked like lateness.* Frames carry no sequence number and are",
    "     numbered on arrival, so one frame lost upstream made every later frame",
    "     look 20 ms late; with the delay near its target that meant three late",
    "     frames and a re-prime per loss. The buffer (`numbered_by_arrival`) now",
    "     takes a frame that turns up for a slot it just gave up for lost as the",
    "     next frame, so a loss costs one concealed frame; if the next arrivals",
    "     then come a frame earlier than the fastest path allows, the frame was",
    "     merely late and the renumbering is undone.",
    "  What remains is the target (its 20 ms floor, or the p95 jitter + 20 ms)",
    "  less the stamp lead, and the resampler.",
    "- **With the echo-safe route** the far end's frames cross an in-page",
    "  WebRTC loopback into an `<audio>` element, which is what makes the",
    "  echo canceller hear them (see \"The echo-safe route\" below). Where the",
    "  browser has `RTCRtpScriptTransform` they go in as they arrive, as PCMU,",
    "  and the loopback's receive jitter buffer (NetEq) is the only buffer on",
    "  the way, in place of the worklet's; this halved what the route costs",
    "  (it used to follow the worklet's buffer and add an Opus-encoded",
    "  loopback on top). What is left is NetEq's own floor: its target never",
    "  goes below 20 ms (it counts delay in 20 ms steps) and it plays in 10 ms",
    "  steps, so a frame waits about 30 ms in it even with no jitter at all;",
    "  `jitterBufferTarget = 0` cannot lower that, and 10 ms packets raised",
    "  its target to 40 ms (measured). The 30 ms target is therefore met only",
    "  on the direct route (`playbackRoute: \"direct\"`, the application's",
    "  choice for headsets).",
    "- **Concealment beyond the injected loss** now comes mostly from the",
    "  buffer's resync rule: three late frames in a row (a host stall of",
    "  ~100 ms, or jitter beyond the target) re-prime it (`RESYNC_AFTER_LATE`),",
    "  which also discards its 2 s jitter history, so the target falls back to",
    "  20 ms and the next burst is late again. Fixes: re-prime only when late",
    "  frames are far behind the playout point (a real timeline move); keep",
    "  the target across a re-prime; a sequence number on audio frames (a",
    "  protocol change) would make the renumbering guess unnecessary.",
    "- **Jitter beyond ~50 ms**: the target is capped at 70 ms (`MAX_TARGET_MS`:",
    "  50 ms of jitter + the 20 ms margin), so with 60 ms of jitter the frames in the tail arrive after their",
    "  playout time and are concealed: concealment is then the injected loss",
    "  plus those late frames. NetEq would raise its target instead; raising the",
    "  cap trades delay for fewer concealed frames. Under 60 ms of Pareto jitter",
    "  this buffer now conceals more than the old one (see \"What the changes",
    "  bought\"): at the cap, the delay that stalls used to leave above the",
    "  target by chance was a margin the capped target lacks.",
    "",
  );
  if (meta.routes?.length) {
    const med = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
    const nq = (r, k) =>
      r.neteq
        .filter(Boolean)
        .map((x) => fmt(x[k]))
        .join(", ");
    p(
      "## The echo-safe route",
      "",
      "The far end plays through an in-page WebRTC loopback (two local peer",
      "connections) into an `<audio>` element, so that the browser's echo",
      "canceller has it as its reference (\"Echo safety\" below). It crosses",
      "the loopback one of two ways (`src/playback.ts`):",
      "",
      "- **inserted** (the default where the browser has `RTCRtpScriptTransform`):",
      "  the loopback sends PCMU, and a transform worker writes each far-end",
      "  frame, the moment the audio socket delivers it, into one of the",
      "  sender's own encoded frames in place of what the sender encoded. The",
      "  bytes are the wire's, unchanged, and NetEq, the loopback receiver's",
      "  jitter buffer, sees the audio socket's timing: it is the only jitter",
      "  buffer on the way. The worklet still decodes every frame, for the",
      "  levels and the call-quality figures, but is not heard. (Chromium 156",
      "  does not send frames made with `new RTCEncodedAudioFrame`, hence the",
      "  worker's small pool of the sender's own frames.)",
      "",
      "  NetEq holds any delay between 15 and 40 ms once its target is 20 ms: it",
      "  time-stretches only outside that band. Where it lands depends on how it",
      "  started (at an 80 ms target, so it comes down from above: 33–38 ms) and",
      "  on every late frame since (each adds the time it was late, for good).",
      "  A stream that has carried nothing for a while restarts its playout at",
      "  the floor (12–16 ms). So the inserted loopback has two streams: the",
      "  second carries a muted copy of the far end's first second (its NetEq",
      "  comes down from the 80 ms start and learns the far end's timing) and",
      "  rests; once a stream has rested 2.2 s, the far end moves to it at a",
      "  quiet moment (4 frames in a row with peaks below −39 dBFS, so the old",
      "  stream's unplayed frames were quiet too), and back again later. The",
      "  first 3–4 s of a call play at the start's 33–38 ms. Where frames came",
      "  late (a busy machine), NetEq aims at 40 ms rather than 20 and a stream",
      "  restarts at 20–31 ms. The rows below are measured 7–9 s into the call.",
      "- **encoded** (browsers without the transform, or a page whose CSP",
      "  refuses `blob:` workers): the worklet's output, after its own jitter",
      "  buffer, is encoded by the loopback (PCMU in 10 ms packets; the rows",
      "  dated before the inserted route used Opus, 10 ms) and NetEq adds its",
      "  buffer on top.",
      "",
      "Measured by `node packages/operator-sdk/bench/route-latency.mjs` on the echo",
      "rig (a private PulseAudio whose null sink's monitor is Chromium's real",
      "microphone, echo canceller off): the round trip from a click in the",
      "worklet's output to its return in the worklet's input, once played",
      "directly through Web Audio and once through the loopback; the",
      "difference is what the loopback adds on top of the worklet figure",
      "(on the inserted route the click heard is the same frame's, played by",
      "NetEq from its arrival instead of by the worklet's buffer). NetEq is",
      "read from `getStats()` over 2 s after 7 s of settling (ms per emitted",
      "sample), on the stream that carried the far end most.",
      "",
      "| loopback | receiver `jitterBufferTarget` | Web Audio round trip | loopback round trip | added by the loopback (medians) | loopback NetEq delay | NetEq target | NetEq minimum |",
      "|---|---|---|---|---|---|---|---|",
    );
    for (const r of meta.routes) {
      const label = String(r.jitterBufferTarget) === "0" ? "0 (what the SDK sets)" : r.jitterBufferTarget === "unset" ? "not set (Chromium's default)" : `${r.jitterBufferTarget} ms`;
      const kind = r.loopback ?? "encoded (before the inserted route)";
      p(
        `| ${kind} (${r.date}) | ${label} | ${r.webAudioMs.map(fmt).join(", ")} (median ${fmt(med(r.webAudioMs))}) | ${r.loopbackMs.map(fmt).join(", ")} (median ${fmt(med(r.loopbackMs))}) | **${fmt(r.addedMs)}** | ${nq(r, "delay")} | ${nq(r, "target")} | ${nq(r, "minimum")} |`,
      );
    }
    p(
      "",
      "`jitterBufferTarget = 0` asks for no delay beyond what NetEq itself needs,",
      "and that is all it can do: it is a floor the page may raise (100 ms",
      "raises NetEq's target to 100 ms), not a way below NetEq's own minimum.",
      "NetEq counts arrival delay in 20 ms steps, so its target is at least",
      "20 ms, 40 ms when a frame in twenty comes 20 ms later than the fastest",
      "(a main-thread stall of the page does that: the inserted route's NetEq",
      "sees the audio socket's timing, so a page that blocks its main thread",
      "for 70 ms raises the target to 80–100 ms for seconds; the bench reads",
      "its taps only after NetEq for that reason).",
      "",
    );
    const probe = meta.neteqRoute;
    if (probe) {
      p(
        "Without the SDK, `bench/neteq-route.mjs` hands a click to each route",
        "and times it to where the direct route's worklet output would start",
        "(the same page's direct Web Audio round trip subtracted), so no",
        "worklet buffer is in it:",
        "",
        "| route | hand-off → heard, less the direct acoustic path, per call (ms) | median | NetEq delay | NetEq target |",
        "|---|---|---|---|---|",
      );
      for (const [name, rows] of Object.entries(probe.results)) {
        const what =
          name === "pcmu-insert"
            ? "inserted, one stream from its start (the SDK's worker; the far end's frames posted from the main thread every 20 ms): what the SDK's first stream plays in a call's first seconds"
            : "encoded: the loopback of a worklet's output (PCMU, 10 ms), its buffer not included";
        p(
          `| ${what} | ${rows.map((x) => fmt(x.routeMs)).join(", ")} | **${fmt(med(rows.map((x) => x.routeMs)))}** | ${rows.map((x) => fmt(x.neteq.delay)).join(", ")} | ${rows.map((x) => fmt(x.neteq.target)).join(", ")} |`,
        );
      }
      p("", `(${probe.date}, ${probe.seconds} s measured per call after 4 s.)`, "");
    }
  }
  if (meta.history?.length) {
    p(
      "## What the changes bought",
      "",
      "Wire → playback p50 / p95 in ms (per-call p50s in brackets) and the share of",
      "frames concealed, per scenario, as the changes went in (`bench/results/history*.json`):",
      "",
      "| step | baseline | JB jitter p95, baseline (p50 / p95) | jitter30 | jitter30-loss1 | jitter60-loss2 | pareto60 |",
      "|---|---|---|---|---|---|---|",
    );
    for (const h of meta.history) {
      const row = (name) => h.results.find((r) => r.scenario.name === name);
      const w = (r) => {
        if (!r) return "–";
        const t = r.playback.totalMs;
        const c = r.jitterBuffer ? `; ${fmt(r.jitterBuffer.concealedPercent)} %` : "";
        return `${fmt(t.p50)} / ${fmt(t.p95)} (${r.playback.totalP50PerCall.map(fmt).join(", ")})${c}`;
      };
      const jit = row("baseline")?.jitterBuffer?.jitterP95Ms;
      p(
        `| ${h.label} | ${w(row("baseline"))} | ${jit ? `${fmt(jit.p50)} / ${fmt(jit.p95)}` : "–"} | ${w(row("jitter30"))} | ${w(row("jitter30-loss1"))} | ${w(row("jitter60-loss2"))} | ${w(row("pareto60"))} |`,
      );
    }
    p("", ...(meta.historyNotes ?? []), "");
  }
  p(
    "## Method",
    "",
    "Everything is measured from outside the SDK (`bench/latency-probe.mjs`); the",
    "SDK ships no probe code and pays nothing for it.",
    "",
    "- **Page probe**, installed before the call: a `WebSocket` subclass",
    "  timestamps every binary frame received on the audio socket (a `message`",
    "  listener added in the constructor, so it runs before the SDK's",
    "  `onmessage`) and every frame sent (`send` overridden);",
    "  `AudioWorklet.prototype.addModule` first adds the worklet probe to the same",
    "  global scope; an `AudioWorkletNode` subclass collects the probe's messages",
    "  from the node's port (the SDK ignores unknown message types).",
    "- **Worklet probe**: wraps `registerProcessor`, so the SDK's processor runs",
    "  as a subclass that scans its input for the microphone's pulses and its",
    "  output for the sim's clicks, timestamps the frames it posts (wrapped",
    "  `port.postMessage`) and receives (wrapped `port.onmessage`), and samples",
    "  the jitter buffer through the module's `audin_stat_*` exports (the",
    "  instance is caught by wrapping `WebAssembly.Instance`).",
    "- **Capture stimulus**: the fake microphone plays a 44.1 kHz WAV of 0.5 ms",
    "  pulses every 507 ms (25 frames + 7 ms, so successive pulses fall 7 ms",
    "  further into the 20 ms frame and cover every position). The microphone is",
    "  raw (`echoCancellation`, `noiseSuppression`, `autoGainControl` off): with",
    "  Chromium's audio processing on, its own delay comes before the worklet and",
    "  is not the SDK's. A pulse is matched to the posted frame with the",
    "  strongest peak within 100 ms after it, and that frame to its `send` by",
    "  content.",
    "- **Playback stimulus**: the sim's `click` behaviour (one full-scale sample",
    "  at the start of every 25th frame, 500 ms apart); a click frame is matched",
    "  to its arrival in the worklet and to the first output peak after it.",
    "- **Clocks**: wall times are `Temporal.Now.instant()` on both threads (the",
    "  same system clock, 0.1 ms resolution here; AudioWorkletGlobalScope has no",
    "  `performance`); in-worklet spans use the audio clock (`currentTime` and the",
    "  sample index), which is exact and free of the 10 ms callback quantisation",
    "  that the raw wall-clock rows show. The probe also records the SDK's",
    "  main-thread arrival stamp sent with each frame (the stamp-lead row).",
    "- **Playout delay over the fastest path**: wire → playback of a click plus",
    "  how late its frame arrived compared with the earliest-arriving click",
    "  within 2.5 s either side (the sim sends them 500 ms apart; the window",
    "  absorbs its timer slipping): the delay a frame has",
    "  from the moment it would have arrived without jitter, as NetEq's target",
    "  delay is defined.",
    "",
    "Regenerate (needs `cargo build -p audin-server`, `cargo xtask wasm` and",
    "`npm run build` in packages/operator-sdk):",
    "",
    "```bash",
    "node packages/operator-sdk/bench/audio-latency.mjs --out docs/performance-browser.md",
    "# options: --repeat N (calls per scenario, default 2) --seconds S (default 15)",
    "#          --warmup S (default 3) --scenarios baseline,jitter30 --json FILE",
    "#          --priority=-10 (nice value for the bench, browser and server;",
    "#          negative values need privileges) to keep unrelated builds out",
    "#          --worklet-stamps (frames stamped on arrival in the worklet, as",
    "#          before main-thread stamps: what those buy)",
    "# the echo-safe route's rows (needs the echo rig: pulseaudio, cargo xtask setup):",
    "node packages/operator-sdk/bench/route-latency.mjs --calls 5 --json packages/operator-sdk/bench/results/route-inserted.json",
    "node packages/operator-sdk/bench/route-latency.mjs --encoded --json packages/operator-sdk/bench/results/route-encoded.json",
    "node packages/operator-sdk/bench/neteq-route.mjs --json packages/operator-sdk/bench/results/neteq-route.json",
    "```",
    "",
    "The report quotes what `bench/results/` holds: the route runs above and",
    "`history.json` (the steps' saved runs).",
    "",
    "The behaviour (not the timings) is guarded by",
    "`packages/operator-sdk/tests/latency.test.mjs`: with 30 ms jitter and 1 %",
    "loss the call keeps playing the tone, concealment stays under 5 % (in the",
    "calmest of three 3 s windows, plus what host stalls held back), the jitter",
    "buffer stays within its 16 frames and 70 ms target cap, capture keeps",
    "sending 50 frames a second, and once the impairment stops the buffer gives",
    "the delay back (within 5 ms of its target 3.5 s later). The jitter buffer's",
    "rules are unit-tested in simulated time in `crates/codec/tests/jitter.rs`.",
    "",
  );
  return L.join("\n");
}

/** The arguments that shape a measurement (not where its output goes). */
function measurementArgs(argv) {
  const out = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--out" || a === "--json" || a === "--from-json") i++;
    else if (!/^--(out|json|from-json)=/.test(a)) out.push(a);
  }
  return out;
}

/**
 * Saved measurements the report quotes (bench/results/): `route-*.json` from
 * `route-latency.mjs --json` (the echo-safe route's added latency),
 * `neteq-route.json` from `neteq-route.mjs --json` (the routes without the SDK) and
 * `history.json` (`{ notes: [...], steps: [{ label, file }] }`, each file an
 * `--json` report of this bench: what each latency change bought).
 */
function savedResults(dir) {
  if (!existsSync(dir)) return {};
  const read = (f) => JSON.parse(readFileSync(join(dir, f), "utf8"));
  const routes = readdirSync(dir)
    .filter((f) => /^route-.*\.json$/.test(f))
    .sort()
    .map(read);
  const neteqRoute = existsSync(join(dir, "neteq-route.json")) ? read("neteq-route.json") : undefined;
  let history;
  let historyNotes;
  if (existsSync(join(dir, "history.json"))) {
    const h = read("history.json");
    history = h.steps.map((st) => ({ label: st.label, results: read(st.file).results }));
    historyNotes = h.notes;
  }
  return { routes, neteqRoute, history, historyNotes };
}

/**
 * The route the SDK takes by default: inserted, `jitterBufferTarget` 0
 * (older saved runs: the encoded one); of several runs, the one with the
 * most calls.
 */
function sdkRoute(routes = []) {
  const at0 = routes.filter((r) => String(r.jitterBufferTarget) === "0");
  const inserted = at0.filter((r) => r.loopback === "inserted").sort((a, b) => b.calls - a.calls);
  return inserted[0] ?? at0[0] ?? routes[0];
}

const RESULTS_DIR = join(dirname(fileURLToPath(import.meta.url)), "results");

/** Writes the Markdown report (and prints it). */
function writeReport(report, outPath) {
  const md = markdown(report.results, { ...savedResults(RESULTS_DIR), ...report.meta });
  console.log(md);
  if (outPath) {
    const out = resolve(outPath);
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, md + keptTail(out));
  }
}

/**
 * Sections measured by other tools (the echo rig, the bundle build) live
 * below this marker in the report and survive a re-run of this bench.
 */
const KEPT_MARKER = "<!-- kept by audio-latency.mjs: measured elsewhere -->";

function keptTail(path) {
  if (!existsSync(path)) return "";
  const old = readFileSync(path, "utf8");
  const at = old.indexOf(KEPT_MARKER);
  return at < 0 ? "" : "\n" + old.slice(at);
}

async function main() {
  const { values } = parseArgs({
    options: {
      out: { type: "string" },
      json: { type: "string" },
      seconds: { type: "string", default: "15" },
      warmup: { type: "string", default: "3" },
      scenarios: { type: "string" },
      repeat: { type: "string", default: "2" },
      priority: { type: "string" },
      "from-json": { type: "string" },
      "worklet-stamps": { type: "boolean", default: false },
    },
  });
  if (values["from-json"]) {
    // Re-render a saved run (e.g. after editing the report's wording).
    writeReport(JSON.parse(readFileSync(values["from-json"], "utf8")), values.out);
    return;
  }
  // Inherited by the browser and the server spawned below.
  if (values.priority !== undefined) setPriority(Number(values.priority));
  const seconds = Number(values.seconds);
  const warmup = Number(values.warmup);
  const wanted = values.scenarios ? values.scenarios.split(",") : null;
  const scenarios = wanted ? SCENARIOS.filter((s) => wanted.includes(s.name)) : SCENARIOS;
  const dir = mkdtempSync(join(tmpdir(), "audin-latency-"));
  const wavPath = makeClickWav(join(dir, "clicks.wav"));
  const load = [loadavg()[0]];
  const server = await startServer();
  let browser;
  const results = [];
  try {
    browser = await launchBrowser({ wavPath });
    const version = browser.context.browser()?.version() ?? "";
    const repeat = Number(values.repeat);
    const counter = { n: 0 };
    for (const s of scenarios) {
      process.stderr.write(`audio-latency: ${s.name} (${repeat} x ${seconds} s) ...\n`);
      const opts = { seconds, warmup, workletStamps: values["worklet-stamps"] };
      results.push(await runScenario(browser.context, server.url, s, opts, repeat, counter));
    }
    load.push(loadavg()[0]);
    const meta = {
      date: new Date().toISOString().slice(0, 10),
      browser: version || "(Debian)",
      server: serverBinary().split("/").slice(-2).join("/"),
      seconds,
      warmup,
      repeat,
      loadAverage: load.map((x) => Math.round(x * 10) / 10),
      nice: getPriority(),
      workletStamps: values["worklet-stamps"],
      command: ["node", "packages/operator-sdk/bench/audio-latency.mjs", ...measurementArgs(process.argv.slice(2))].join(" "),
    };
    const report = { meta, results };
    console.log(JSON.stringify(report, null, 2));
    if (values.json) {
      mkdirSync(dirname(resolve(values.json)), { recursive: true });
      writeFileSync(resolve(values.json), JSON.stringify(report, null, 2) + "\n");
    }
    writeReport(report, values.out);
  } finally {
    await browser?.close();
    await server.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
