#!/usr/bin/env node
// Latency the echo-safe playback route adds, measured on the echo rig
// (tests/harness/pulse.mjs: a private PulseAudio whose null sink's monitor is
// Chromium's real microphone). The sim far end plays `click` (one
// full-scale sample every 500 ms); with the echo canceller off, each click
// the worklet plays comes back into the worklet's input. The worklet tap's
// playback and capture snapshots cover the same samples, so the lag of the
// best cross-correlation between them is the acoustic round trip inside
// Chromium: output route → PulseAudio → capture. The capture half is the
// same for both routes, so the difference between the WebRTC loopback and
// the direct Web Audio route is what the loopback adds.
//
//   node packages/operator-sdk/bench/route-latency.mjs [--calls 3] [--jitter-buffer-target 0|N|unset] [--encoded]
//        [--json FILE] (for audio-latency.mjs --route-json)
//
// The loopback inserts the far end's frames where the browser has
// RTCRtpScriptTransform (playback.ts); --encoded hides it, so the loopback
// encodes the worklet's output (the route of browsers without it). On the
// inserted route the worklet's output is not what is heard, but it is the
// same frames through a buffer whose delay audio-latency.mjs measures, so
// "added" is again what to put on top of that figure.
//
// --jitter-buffer-target replaces what the SDK asks of the loopback
// receiver's jitterBufferTarget (it sets 0): a number of ms, or `unset` to
// leave Chromium's default; the loopback's own jitter buffer (NetEq) is
// then reported from getStats() (its mean delay, target and minimum per
// emitted sample) next to the round trip.
//
// ROUTE_SETTLE_MS (default 7000) is how long into the call measuring starts:
// on the inserted route the far end first moves to the loopback's rested
// second stream about 3–4 s in (playback.ts), and that is what is measured;
// ROUTE_STATS=1 prints the loopback's getStats() (jitter buffer, playout).
//
// Needs pulseaudio, pactl, espeak-ng, sox (cargo xtask setup), the built SDK
// and a built audin-server. The wire → worklet-output figures are
// bench/audio-latency.mjs's; they end before the route.

import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { launchRigBrowser, startPulse } from "../tests/harness/pulse.mjs";
import {
  inboundStreams,
  openOperatorPage,
  recordPeerConnections,
  simCall,
  sleep,
  startServer,
  waitForEvent,
} from "../tests/sdk-support.mjs";

const { values } = parseArgs({
  options: {
    calls: { type: "string", default: "3" },
    "jitter-buffer-target": { type: "string" },
    encoded: { type: "boolean", default: false },
    json: { type: "string" },
  },
});
const CALLS = Number(values.calls);
/** undefined: as the SDK does; "unset": never set; else ms. */
const JB_TARGET = values["jitter-buffer-target"];
const MAX_LAG_MS = 450;

/** Lag (samples) maximising the correlation of `cap` with `play`. */
function bestLag(play, cap, maxLag) {
  let best = 0;
  let bestV = -Infinity;
  for (let lag = 0; lag <= maxLag; lag++) {
    let v = 0;
    for (let i = 0; i + lag < cap.length; i++) v += Math.abs(play[i]) * Math.abs(cap[i + lag]);
    if (v > bestV) {
      bestV = v;
      best = lag;
    }
  }
  return best;
}

async function roundTrip(pulse, base, route, k) {
  const browser = await launchRigBrowser(pulse, { args: ["--disable-features=ChromeWideEchoCancellation"] });
  try {
    const { page } = await openOperatorPage(browser.context, base, {
      operatorRef: `lat-${route}-${k}`,
      audioConstraints: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    await recordPeerConnections(page);
    await page.evaluate(async ([route, jbTarget, encoded]) => {
      const w = /** @type {any} */ (window);
      if (route === "web-audio") w.__audinTestPlaybackRoute = "web-audio";
      const d = Object.getOwnPropertyDescriptor(RTCRtpReceiver.prototype, "jitterBufferTarget");
      if (jbTarget !== null && d?.set) {
        Object.defineProperty(RTCRtpReceiver.prototype, "jitterBufferTarget", {
          configurable: true,
          get: d.get,
          set(v) {
            if (jbTarget !== "unset") d.set.call(this, Number(jbTarget));
          },
        });
      }
      if (encoded) w.RTCRtpScriptTransform = undefined;
      w.__audinTestRoute = (r) => (w.t.route = r);
      w.t.op.on("incomingCall", (call) => call.accept());
      await w.t.op.goOnline(["pn_dev_milano"]);
    }, [route, JB_TARGET ?? null, values.encoded]);
    const sid = await simCall(base, { behaviour: "click" });
    await waitForEvent(page, "callStarted");
    // NetEq starts with a large target and adapts down, and the far end
    // moves to the rested stream about 3–4 s in: measure after that.
    await sleep(Number(process.env.ROUTE_SETTLE_MS ?? 7_000));
    if (process.env.ROUTE_STATS) {
      const st = await page.evaluate(async () => {
        const out = [];
        for (const pc of /** @type {any} */ (window).t.pcs) {
          for (const r of (await pc.getStats()).values()) {
            if (r.type === "inbound-rtp" || r.type === "outbound-rtp" || r.type === "media-playout" || r.type === "codec") out.push(r);
          }
        }
        return out;
      });
      console.log(JSON.stringify(st));
    }
    // The loopback receiver's NetEq over the next 2 s: mean delay, target
    // and minimum per emitted sample (ms), from the inbound-rtp counters of
    // the stream that carried the far end most (the inserted route has two,
    // see playback.ts; the other one rests).
    const c0 = await inboundStreams(page);
    await sleep(2000);
    const c1 = await inboundStreams(page);
    const busiest = Object.keys(c1)
      .filter((mid) => c0[mid])
      .sort((x, y) => c1[y].packets - c0[y].packets - (c1[x].packets - c0[x].packets))[0];
    const a = c0[busiest];
    const b = c1[busiest];
    const per = (k) => (b[k] === undefined ? null : (1000 * (b[k] - a[k])) / (b.emitted - a.emitted));
    const neteq = a && b && b.emitted > a.emitted ? { delay: per("delay"), target: per("target"), minimum: per("minimum") } : null;
    // Last: copying the taps out blocks the page's main thread for tens of
    // ms, a stall the inserted route's NetEq would answer with a higher target.
    const snap = await page.evaluate(() => {
      const t = /** @type {any} */ (window).t;
      const n = Math.min(t.taps.playback.length, t.taps.capture.length, 12);
      return {
        route: t.route,
        sampleRate: t.taps.playback.at(-1).sampleRate,
        play: t.taps.playback.slice(-n).flatMap((x) => x.samples),
        cap: t.taps.capture.slice(-n).flatMap((x) => x.samples),
      };
    });
    await fetch(`${base}/dev/sim/calls/${sid}/hangup`, { method: "POST" });
    if (snap.route !== route) throw new Error(`asked for ${route}, got ${snap.route}`);
    const lag = bestLag(snap.play, snap.cap, Math.round((snap.sampleRate * MAX_LAG_MS) / 1000));
    return { ms: (lag * 1000) / snap.sampleRate, neteq };
  } finally {
    await browser.close();
  }
}

const pulse = startPulse();
const server = await startServer();
try {
  const out = { "web-audio": [], "webrtc-loopback": [] };
  for (let k = 0; k < CALLS; k++) {
    for (const route of Object.keys(out)) out[route].push(await roundTrip(pulse, server.url, route, k));
  }
  const med = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
  const f = (x) => (x === null || x === undefined ? "–" : x.toFixed(1));
  console.log(`jitterBufferTarget: ${JB_TARGET ?? "0 (as the SDK sets it)"}; loopback ${values.encoded ? "encoded" : "inserted"}`);
  for (const [route, v] of Object.entries(out)) {
    const ms = v.map((x) => x.ms);
    console.log(`${route}: round trip ${ms.map(f).join(", ")} ms (median ${f(med(ms))})`);
    const nq = v.map((x) => x.neteq).filter(Boolean);
    if (nq.length) {
      const line = (k) => nq.map((x) => f(x[k])).join(", ");
      console.log(`  loopback NetEq per emitted sample, ms: delay ${line("delay")}; target ${line("target")}; minimum ${line("minimum")}`);
    }
  }
  const added = med(out["webrtc-loopback"].map((x) => x.ms)) - med(out["web-audio"].map((x) => x.ms));
  console.log(`added by the loopback: ${f(added)} ms (median)`);
  if (values.json) {
    const report = {
      date: new Date().toISOString().slice(0, 10),
      jitterBufferTarget: JB_TARGET ?? "0",
      loopback: values.encoded ? "encoded" : "inserted",
      calls: CALLS,
      webAudioMs: out["web-audio"].map((x) => x.ms),
      loopbackMs: out["webrtc-loopback"].map((x) => x.ms),
      neteq: out["webrtc-loopback"].map((x) => x.neteq),
      addedMs: added,
    };
    writeFileSync(values.json, JSON.stringify(report, null, 2) + "\n");
  }
} finally {
  await server.kill();
  pulse.stop();
}
