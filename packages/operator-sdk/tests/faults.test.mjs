// Network faults under the browser SDK, in a real Chromium: the testkit's
// fault-injecting proxy (`fault-proxy`, crates/testkit) sits between the
// SDK's real bundle (coreUrl = the proxy) and a real audin-server --dev
// started with short timings. What is checked is what a user notices:
//
// - a half-open presence path (black hole) is detected by the heartbeat
//   within one interval of the first lost heartbeat, the SDK never claims to
//   be online while it lasts, and once the path heals it is back online and
//   receives a call;
// - an audio socket reset mid-call is reattached (callReconnecting →
//   callReconnected, no callEnded) and audio flows both ways again;
// - an audio path black-holed past the server's grace window ends the call
//   `failed` while presence stays online, and the next call works.
//
// Every wait is bounded. The measured figures are printed as test
// diagnostics (docs/reliability.md lists them). Needs `npm run build`, a
// built audin-server, and cargo (the harness builds fault-proxy on demand).

import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { browserSkipReason, launchBrowser, makeToneWav, startFaultProxy } from "./harness/index.mjs";
import {
  openOperatorPage,
  simCall,
  simState,
  sleep,
  startServer,
  tapSamples,
  toneMedian,
  waitFor,
} from "./sdk-support.mjs";

const PRESENCE = "/v1/operator/presence";
const AUDIO = "/v1/operator/audio";
const MILANO = { id: "pn_dev_milano", phoneNumber: "+390299999999" };
const MIC_HZ = 1000;
const SIM_TONE_HZ = 440;
const RAW_MIC = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };

/** The SDK's presence heartbeat in these tests. */
const HEARTBEAT_MS = 400;
const BACKOFF_MS = [200, 400, 800];
/** Server timings (as the native reliability suites use). */
const SILENCE_MS = 750;
const AUDIO_SILENCE_MS = 750;
const AUDIO_GRACE_MS = 1000;
/** A server-initiated close waits up to 1 s for the peer's close frame (R4). */
const CLOSE_WAIT_MS = 1000;
/** Scheduling slack on a loaded 2-core machine running Chromium. */
const SLACK_MS = 250;

const SERVER_ARGS = [
  "--silence-timeout-ms",
  String(SILENCE_MS),
  "--audio-silence-ms",
  String(AUDIO_SILENCE_MS),
  "--audio-grace-ms",
  String(AUDIO_GRACE_MS),
  "--ring-timeout-ms",
  "3000",
];

/**
 * Every event the page saw with its time as Unix-epoch ms (the page's
 * `performance.now()` stamp moved onto the wall clock, comparable with
 * `Date.now()` here and the proxy's `…AtMs`), and the page time itself.
 * @returns {Promise<{ name: string, payload: any, at: number, pageAt: number }[]>}
 */
async function events(page) {
  return page.evaluate(() =>
    /** @type {any} */ (window).t.events.map((e) => ({
      name: e[0],
      payload: e[1],
      pageAt: e[2],
      at: performance.timeOrigin + e[2],
    })),
  );
}

/** The events `name` seen at or after `since` (epoch ms). */
async function eventsSince(page, name, since) {
  return (await events(page)).filter((e) => e.name === name && e.at >= since);
}

/** Waits (bounded) for the first event `name` at or after `since` matching `where`. */
async function eventAfter(page, name, since, { where = () => true, timeoutMs = 10_000 } = {}) {
  return waitFor(async () => (await eventsSince(page, name, since)).find((e) => where(e.payload)), {
    timeoutMs,
    intervalMs: 25,
    what: `"${name}" after the fault`,
  });
}

const state = (page) => page.evaluate(() => /** @type {any} */ (window).t.op.state);

describe("faults (browser SDK through fault-proxy)", { skip: browserSkipReason() }, () => {
  let browser;
  let n = 0;

  before(async () => {
    const dir = mkdtempSync(join(tmpdir(), "audin-sdk-faults-"));
    const wavPath = makeToneWav(join(dir, "mic-1khz.wav"), { freqHz: MIC_HZ, seconds: 30, amplitude: 0.5 });
    browser = await launchBrowser({ wavPath });
  });

  after(async () => {
    await browser?.close();
  });

  /**
   * A fresh server and proxy, and an operator page whose SDK talks to the
   * server through the proxy; `run` gets them, everything is torn down after.
   */
  async function withSetup(what, run) {
    const server = await startServer({ args: SERVER_ARGS });
    let proxy;
    let page;
    let logs = [];
    try {
      proxy = await startFaultProxy(server.url);
      ({ page, logs } = await openOperatorPage(browser.context, server.url, {
        operatorRef: `faults-${what}-${++n}`,
        audioConstraints: RAW_MIC,
        config: { coreUrl: proxy.url, heartbeatIntervalMs: HEARTBEAT_MS, reconnectBackoffMs: BACKOFF_MS },
      }));
      const ctx = () => `\npage console:\n${logs.slice(-40).join("\n")}\nserver stderr:\n${server.stderrLines.slice(-20).join("\n")}`;
      await page.evaluate((id) => /** @type {any} */ (window).t.op.goOnline([id]), MILANO.id);
      assert.equal(await state(page), "online");
      await run({ base: server.url, proxy, page, ctx });
    } finally {
      await page?.close().catch(() => undefined);
      await proxy?.close();
      await server.kill();
    }
  }

  /** Accepts every offer on the page. */
  async function autoAccept(page) {
    await page.evaluate(() => {
      const t = /** @type {any} */ (window).t;
      t.op.on("incomingCall", (call) => call.accept());
    });
  }

  /**
   * An inbound call from the sim (its far end plays a 440 Hz tone), accepted
   * and checked to carry audio both ways: the tone in the page's playback and
   * the far end hearing the operator's microphone.
   */
  async function answeredToneCall({ base, page, ctx }, since = 0) {
    const sid = await simCall(base, { to: MILANO.phoneNumber });
    const started = await eventAfter(page, "callStarted", since, { where: (c) => c.callSid === sid, timeoutMs: 10_000 });
    await audioFlows({ base, page, ctx }, sid, started.pageAt);
    return { sid, started };
  }

  /**
   * Asserts that audio flows both ways after page time `sincePageAt`: the
   * far end keeps hearing frames (≥ 25 in a second, 50/s nominal) and the
   * playback tap carries the sim's tone.
   */
  async function audioFlows({ base, page, ctx }, sid, sincePageAt) {
    const heard0 = (await simState(base, sid)).framesHeard;
    await sleep(1000);
    const heard1 = (await simState(base, sid)).framesHeard;
    assert.ok(heard1 - heard0 >= 25, `the far end hears the operator (${heard1 - heard0} frames in 1 s)${ctx()}`);
    const play = await tapSamples(page, "playback", { since: sincePageAt, last: 2 });
    assert.ok(play.samples.length > 0, `the playback tap delivered samples${ctx()}`);
    const tone = toneMedian(play.samples, play.sampleRate, SIM_TONE_HZ);
    assert.ok(tone.share > 0.8, `playback carries the far end's 440 Hz tone (share ${tone.share.toFixed(3)})${ctx()}`);
    return { framesPerSecond: heard1 - heard0, toneShare: tone.share };
  }

  test("half-open presence: reconnecting within a heartbeat of the first lost one, back online once the path heals", async (t) => {
    await withSetup("half-open", async ({ base, proxy, page, ctx }) => {
      await sleep(HEARTBEAT_MS * 3); // a few heartbeats pass normally
      assert.equal(await state(page), "online");

      // The presence path goes half-open: nothing passes, nothing is
      // refused, and new connections vanish the same way.
      const faultAt = Date.now();
      await proxy.setFor(PRESENCE, "blackhole", "all");
      const detected = await eventAfter(page, "presenceStateChanged", faultAt, {
        where: (s) => s === "reconnecting",
        timeoutMs: 5_000,
      });
      const live = (await proxy.connsAll(PRESENCE)).filter((c) => c.acceptedAtMs < faultAt);
      const swallowed = live
        .flatMap((c) => [c.firstSwallowedToTargetAtMs, c.firstSwallowedToClientAtMs])
        .filter((x) => x !== null);
      assert.ok(swallowed.length > 0, `the live presence connection swallowed a ping or a pong: ${JSON.stringify(live)}`);
      const firstLost = Math.min(...swallowed);
      const sinceFault = detected.at - faultAt;
      const sinceLost = detected.at - firstLost;
      t.diagnostic(
        `half-open presence detected ${sinceFault.toFixed(0)} ms after the fault, ${sinceLost.toFixed(0)} ms after the first lost heartbeat (interval ${HEARTBEAT_MS} ms)`,
      );
      // No pong before the next ping is due => dead: within one interval of
      // the first lost heartbeat, two of the fault at worst.
      assert.ok(sinceLost <= HEARTBEAT_MS + SLACK_MS, `detected ${sinceLost} ms after the first lost heartbeat${ctx()}`);
      assert.ok(sinceFault <= 2.5 * HEARTBEAT_MS, `detected ${sinceFault} ms after the fault${ctx()}`);
      const errors = await eventsSince(page, "error", faultAt);
      assert.ok(
        errors.some((e) => e.payload.code === "HEARTBEAT_TIMEOUT"),
        `a HEARTBEAT_TIMEOUT error event: ${JSON.stringify(errors.map((e) => e.payload))}`,
      );

      // Still black-holed: the SDK keeps trying, stays `reconnecting`, never
      // claims to be online.
      await sleep(1_500);
      assert.equal(await state(page), "reconnecting");
      const attempts = (await proxy.connsAll(PRESENCE)).filter((c) => c.acceptedAtMs >= faultAt);
      assert.ok(attempts.length >= 1, "the SDK tried to reconnect through the black hole");
      assert.deepEqual(
        (await eventsSince(page, "presenceStateChanged", faultAt)).map((e) => e.payload),
        ["reconnecting"],
        "never online (nor offline) while black-holed",
      );

      // The path heals: the stuck connections drop, new ones pass.
      const healAt = Date.now();
      await proxy.set("drop", "existing");
      await proxy.set("pass", "new");
      const back = await eventAfter(page, "presenceStateChanged", healAt, { where: (s) => s === "online", timeoutMs: 6_000 });
      const recovery = back.at - healAt;
      t.diagnostic(`back online ${recovery.toFixed(0)} ms after the path healed`);
      // The dropped attempt fails at once; then at most the schedule's
      // longest step and a handshake.
      assert.ok(recovery <= BACKOFF_MS.at(-1) + 1_000 + SLACK_MS, `online ${recovery} ms after the heal${ctx()}`);
      const again = await eventAfter(page, "availabilityChanged", healAt, { timeoutMs: 3_000 });
      assert.deepEqual(again.payload, { accepted: [MILANO.id], rejected: [] }, "availability re-announced");

      // The operator is reachable again: an inbound call rings and connects.
      await autoAccept(page);
      const { sid } = await answeredToneCall({ base, page, ctx }, healAt);
      await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall.hangup());
      const ended = await eventAfter(page, "callEnded", healAt, { timeoutMs: 5_000 });
      assert.equal(ended.payload.callSid, sid);
      assert.equal(ended.payload.endReason, "hangup");
    });
  });

  test("audio socket reset mid-call: reattached, no callEnded, audio flows again", async (t) => {
    await withSetup("audio-reset", async ({ base, proxy, page, ctx }) => {
      await autoAccept(page);
      const { sid } = await answeredToneCall({ base, page, ctx });
      const before = await proxy.conns(AUDIO);
      assert.equal(before.length, 1, `one audio connection: ${JSON.stringify(before)}`);

      const resetAt = Date.now();
      await proxy.setFor(AUDIO, "reset", "existing");
      await proxy.setFor(AUDIO, "pass", "new");
      const reconnecting = await eventAfter(page, "callReconnecting", resetAt, { timeoutMs: 5_000 });
      const reconnected = await eventAfter(page, "callReconnected", resetAt, { timeoutMs: 5_000 });
      assert.equal(reconnecting.payload.callSid, sid);
      assert.equal(reconnected.payload.callSid, sid);
      assert.ok(reconnecting.at <= reconnected.at, "callReconnecting comes first");
      const reattach = reconnected.at - resetAt;
      t.diagnostic(
        `audio reset: callReconnecting after ${(reconnecting.at - resetAt).toFixed(0)} ms, callReconnected after ${reattach.toFixed(0)} ms`,
      );
      // Inside the server's grace window, or the call would have failed.
      assert.ok(reattach <= AUDIO_GRACE_MS, `reattached ${reattach} ms after the reset${ctx()}`);
      const now = await proxy.conns(AUDIO);
      assert.ok(
        now.length === 1 && now[0].id !== before[0].id,
        `a new audio connection replaced the reset one: ${JSON.stringify(now)}`,
      );

      // Audio flows both ways again on the new socket.
      const flow = await audioFlows({ base, page, ctx }, sid, reconnected.pageAt);
      t.diagnostic(`after the reattach: ${flow.framesPerSecond} frames/s heard by the far end, playback tone share ${flow.toneShare.toFixed(3)}`);
      // Past the server's grace window: the call is still up on both sides.
      await sleep(Math.max(0, resetAt + AUDIO_GRACE_MS + SLACK_MS - Date.now()));
      assert.deepEqual(await eventsSince(page, "callEnded", 0), [], `no callEnded${ctx()}`);
      assert.equal(await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall?.state), "active");
      assert.equal((await simState(base, sid)).state, "answered");
      assert.equal((await eventsSince(page, "callReconnected", 0)).length, 1, "reattached once");

      await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall.hangup());
      const ended = await eventAfter(page, "callEnded", resetAt, { timeoutMs: 5_000 });
      assert.equal(ended.payload.endReason, "hangup");
      assert.deepEqual(
        (await eventsSince(page, "presenceStateChanged", resetAt)).map((e) => e.payload),
        [],
        "presence untouched",
      );
    });
  });

  test("audio black-holed past the server's grace window: callEnded failed, presence stays online, the next call works", async (t) => {
    await withSetup("audio-blackhole", async ({ base, proxy, page, ctx }) => {
      await autoAccept(page);
      const { sid } = await answeredToneCall({ base, page, ctx });

      const faultAt = Date.now();
      await proxy.setFor(AUDIO, "blackhole", "all");
      // Server: no frame for the audio silence timeout → close (waiting up
      // to 1 s for the close frame the black hole eats) → grace window →
      // `failed`, told to the SDK over presence.
      const bound = AUDIO_SILENCE_MS + CLOSE_WAIT_MS + AUDIO_GRACE_MS + 4 * SLACK_MS;
      const ended = await eventAfter(page, "callEnded", faultAt, { timeoutMs: bound + 5_000 });
      const endedAfter = ended.at - faultAt;
      const reattempts = (await eventsSince(page, "callReconnecting", faultAt)).length;
      t.diagnostic(`audio black hole: callEnded "${ended.payload.endReason}" ${endedAfter.toFixed(0)} ms after the fault (${reattempts} callReconnecting before)`);
      assert.equal(ended.payload.callSid, sid);
      assert.equal(ended.payload.endReason, "failed", `${JSON.stringify(ended.payload)}${ctx()}`);
      assert.ok(endedAfter >= AUDIO_SILENCE_MS, `not before the server's audio silence timeout (${endedAfter} ms)`);
      assert.ok(endedAfter <= bound, `callEnded ${endedAfter} ms after the fault (bound ${bound} ms)${ctx()}`);
      assert.equal(await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall), null);
      await waitFor(async () => (await simState(base, sid)).state === "ended", { timeoutMs: 3_000, what: "the sim call to end" });

      // Presence was never touched.
      assert.equal(await state(page), "online");
      assert.deepEqual(
        (await eventsSince(page, "presenceStateChanged", faultAt)).map((e) => e.payload),
        [],
        "presence stays online",
      );
      // A reattach attempt the SDK had in flight (black-holed, never
      // answered) is abandoned with the call, not left connecting.
      const attempts = (await proxy.connsAll(AUDIO)).filter((c) => c.acceptedAtMs >= faultAt);
      await waitFor(
        async () => (await proxy.connsAll(AUDIO)).filter((c) => c.acceptedAtMs >= faultAt && !c.closed).length === 0,
        { timeoutMs: 2_000, what: "the SDK to close its pending audio sockets" },
      );
      t.diagnostic(`${attempts.length} audio reattach connection(s) made into the black hole, all closed after callEnded`);

      // The audio path heals; the next call works, audio included.
      const healAt = Date.now();
      await proxy.setFor(AUDIO, "drop", "existing");
      await proxy.setFor(AUDIO, "pass", "new");
      const next = await answeredToneCall({ base, page, ctx }, healAt);
      assert.notEqual(next.sid, sid);
      await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall.hangup());
      const done = await eventAfter(page, "callEnded", healAt, { timeoutMs: 5_000 });
      assert.equal(done.payload.endReason, "hangup");
    });
  });
});
