// Calls end to end in a real Chromium against a real audin-server --dev and
// its simulated phone network: inbound and outbound, two-way audio (a 1 kHz
// fake microphone, the sim's 440 Hz tone), mute, DTMF, end reasons and the
// one-call-at-a-time rule. Needs `npm run build` and a built audin-server.

import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { browserSkipReason, launchBrowser, makeToneWav } from "./harness/index.mjs";
import {
  dB,
  openOperatorPage,
  seen,
  simCall,
  simRecording,
  simState,
  sleep,
  startServer,
  tapSamples,
  rms,
  toneMedian,
  waitFor,
  waitForEvent,
} from "./sdk-support.mjs";

const MIC_HZ = 1000;
const MIC_AMPLITUDE = 0.5;
const SIM_TONE_HZ = 440;
const MILANO = { id: "pn_dev_milano", phoneNumber: "+390299999999" };
// Raw microphone (no AGC / noise suppression / echo canceller) so the level
// the far end hears can be compared with the WAV's.
const RAW_MIC = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };

describe("calls", { skip: browserSkipReason() }, () => {
  let server;
  let browser;
  let base;
  let n = 0;
  const ref = (what) => `calls-${what}-${++n}`;

  before(async () => {
    server = await startServer({ args: ["--ring-timeout-ms", "2500"] });
    base = server.url;
    const dir = mkdtempSync(join(tmpdir(), "audin-sdk-test-"));
    const wavPath = makeToneWav(join(dir, "mic-1khz.wav"), { freqHz: MIC_HZ, seconds: 30, amplitude: MIC_AMPLITUDE });
    browser = await launchBrowser({ wavPath });
  });

  after(async () => {
    await browser?.close();
    await server?.kill();
  });

  /** A fresh operator page that is online on Milano. */
  async function online(what, options = {}) {
    const op = await openOperatorPage(browser.context, base, { operatorRef: ref(what), ...options });
    await op.page.evaluate((id) => /** @type {any} */ (window).t.op.goOnline([id]), MILANO.id);
    return op;
  }

  test("inbound: ring, accept, two-way audio, mute, DTMF, hang up", async () => {
    const { page, logs } = await online("inbound", { audioConstraints: RAW_MIC });
    const ctx = () => `\npage console:\n${logs.join("\n")}`;
    await page.evaluate(() => {
      const t = /** @type {any} */ (window).t;
      t.op.on("incomingCall", (call) => {
        t.ringing = call;
        call.accept();
      });
    });
    const sid = await simCall(base, { to: MILANO.phoneNumber });
    const [offer] = await waitForEvent(page, "incomingCall");
    assert.equal(offer.callSid, sid);
    assert.equal(offer.direction, "inbound");
    assert.equal(offer.from, "+14155550100");
    assert.equal(offer.to, MILANO.phoneNumber);
    assert.equal(offer.state, "ringing");
    const [started] = await waitForEvent(page, "callStarted");
    assert.equal(started.callSid, sid);
    assert.equal(started.state, "active");
    const same = await page.evaluate(() => {
      const t = /** @type {any} */ (window).t;
      return t.op.currentCall === t.ringing && t.ringing.state === "active";
    });
    assert.ok(same, "one OperatorCall object per callSid, kept current");

    // Capture: the far end hears the operator's 1 kHz microphone.
    await sleep(2000);
    const heard = await simRecording(base, sid);
    assert.equal(heard.sampleRate, 8000);
    const speech = heard.samples.subarray(Math.max(0, heard.samples.length - 8000)); // last second
    const cap = toneMedian(speech, 8000, MIC_HZ);
    assert.ok(cap.share > 0.9, `far end hears the 1 kHz tone (share ${cap.share.toFixed(3)})${ctx()}`);
    const level = dB(cap.amp, MIC_AMPLITUDE);
    assert.ok(Math.abs(level) <= 3, `far-end level ${level.toFixed(2)} dB from the microphone's (±3 dB)`);

    // Playback: the sim's 440 Hz tone reaches the speakers (worklet tap).
    const play = await tapSamples(page, "playback", { last: 2 });
    assert.ok(play.samples.length > 0, `the playback tap delivered samples${ctx()}`);
    const pt = toneMedian(play.samples, play.sampleRate, SIM_TONE_HZ);
    assert.ok(pt.share > 0.9, `playback carries the 440 Hz tone (share ${pt.share.toFixed(3)}, rms ${pt.total.toFixed(3)})`);

    // Mute: the far end records silence; unmute: the tone again.
    const segment = async (fn) => {
      const before = (await simRecording(base, sid)).samples.length;
      await fn();
      await sleep(1500);
      const all = (await simRecording(base, sid)).samples;
      return all.subarray(before + 2400, all.length); // skip 300 ms of transition
    };
    const muted = await segment(() => page.evaluate(() => /** @type {any} */ (window).t.op.currentCall.mute(true)));
    assert.ok(muted.length > 4000, `recording advanced while muted (${muted.length})`);
    const mutedLevel = { total: rms(muted) };
    assert.ok(mutedLevel.total < 0.001, `silence while muted (rms ${mutedLevel.total})`);
    assert.equal(await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall.muted), true);
    const unmuted = await segment(() => page.evaluate(() => /** @type {any} */ (window).t.op.currentCall.mute(false)));
    assert.ok(toneMedian(unmuted, 8000, MIC_HZ).share > 0.9, "the tone is back after unmute");

    // DTMF: a valid digit reaches the far end; an invalid one throws INVALID_DTMF.
    await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall.sendDtmf("5"));
    await waitFor(async () => (await simState(base, sid)).dtmf === "5", { what: 'sim recorded DTMF "5"' });
    const bad = await page.evaluate(() => {
      try {
        /** @type {any} */ (window).t.op.currentCall.sendDtmf("x");
        return null;
      } catch (e) {
        return { name: e.name, code: e.code, isError: e instanceof Error };
      }
    });
    assert.deepEqual(bad, { name: "OperatorRequestError", code: "INVALID_DTMF", isError: true });

    // Hang up: callEnded "hangup", the sim sees the end, the microphone is released.
    await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall.hangup());
    const [ended] = await waitForEvent(page, "callEnded");
    assert.equal(ended.endReason, "hangup");
    assert.equal(ended.state, "ended");
    await waitFor(async () => (await simState(base, sid)).state === "ended", { what: "sim call ended" });
    const released = await waitFor(
      () =>
        page.evaluate(() => {
          const t = /** @type {any} */ (window).t;
          const tracks = t.streams.flatMap((s) => s.getTracks());
          return tracks.length > 0 && tracks.every((tr) => tr.readyState === "ended") && t.op.currentCall === null;
        }),
      { what: "every microphone track stopped" },
    );
    assert.ok(released);
    await page.close();
  });

  test("outbound: dial the echo number with a listed caller ID", async () => {
    const { page, logs } = await online("outbound", { audioConstraints: RAW_MIC });
    const result = await page.evaluate(async () => {
      const t = /** @type {any} */ (window).t;
      const numbers = await t.op.listPhoneNumbers();
      const mine = numbers.find((x) => x.id === "pn_dev_milano");
      const call = await t.op.dial("+15550100001", { callerId: mine.phoneNumber });
      t.dialled = call;
      return { numbers, call: JSON.parse(JSON.stringify(call)) };
    });
    assert.ok(result.numbers.some((x) => x.id === MILANO.id && x.phoneNumber === MILANO.phoneNumber && x.displayName));
    assert.equal(result.call.direction, "outbound");
    assert.equal(result.call.from, MILANO.phoneNumber);
    assert.equal(result.call.to, "+15550100001");
    assert.ok(["connecting", "active"].includes(result.call.state), result.call.state);
    const [started] = await waitForEvent(page, "callStarted");
    assert.equal(started.callSid, result.call.callSid);
    // The echo sends our own 1 kHz microphone back: it arrives in playback.
    await sleep(1500);
    const play = await tapSamples(page, "playback", { last: 2 });
    const echo = toneMedian(play.samples, play.sampleRate, MIC_HZ);
    assert.ok(echo.share > 0.8, `the echo of the microphone plays back (share ${echo.share.toFixed(3)})\n${logs.join("\n")}`);
    assert.ok(await page.evaluate(() => /** @type {any} */ (window).t.dialled === /** @type {any} */ (window).t.op.currentCall));
    await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall.hangup());
    const [ended] = await waitForEvent(page, "callEnded");
    assert.equal(ended.endReason, "hangup");
    await page.close();
  });

  for (const [number, reason, what] of [
    ["+15550100003", "rejected", "busy"],
    ["+15550100005", "rejected", "declines after ringing"],
    ["+15550100004", "no_answer", "never answers"],
    ["+15550100006", "failed", "carrier error"],
    ["+15550100007", "remote_hangup", "hangs up after 3 s"],
  ]) {
    test(`outbound: ${number} (${what}) ends "${reason}"`, async () => {
      const { page } = await online(`end-${reason}`);
      const sid = await page.evaluate(
        async ({ number, callerId }) => (await /** @type {any} */ (window).t.op.dial(number, { callerId })).callSid,
        { number, callerId: MILANO.phoneNumber },
      );
      const [ended] = await waitForEvent(page, "callEnded", { timeoutMs: 15_000 });
      assert.equal(ended.callSid, sid);
      assert.equal(ended.endReason, reason);
      const started = await seen(page, "callStarted");
      assert.equal(started.length, reason === "remote_hangup" ? 1 : 0);
      assert.equal(await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall), null);
      await page.close();
    });
  }

  test("busy: a second inbound call is declined without incomingCall, dial() rejects", async () => {
    const { page } = await online("busy");
    await page.evaluate(() => {
      const t = /** @type {any} */ (window).t;
      t.op.on("incomingCall", (call) => call.accept());
    });
    const first = await simCall(base, { to: MILANO.phoneNumber });
    await waitForEvent(page, "callStarted");
    const second = await simCall(base, { from: "+14155550199", to: MILANO.phoneNumber });
    const end = await waitFor(
      async () => {
        const s = await simState(base, second);
        return s.state === "ended" ? s : null;
      },
      { what: "the second call to end" },
    );
    assert.equal(end.endReason, "rejected");
    const offers = await seen(page, "incomingCall");
    assert.deepEqual(
      offers.map((o) => o.callSid),
      [first],
      "no incomingCall for the second call",
    );
    const err = await page.evaluate(async () => {
      try {
        await /** @type {any} */ (window).t.op.dial("+15550100001", { callerId: "+390299999999" });
        return null;
      } catch (e) {
        return { name: e.name, code: e.code };
      }
    });
    assert.deepEqual(err, { name: "OperatorRequestError", code: "OPERATOR_BUSY" });
    assert.equal((await simState(base, first)).state, "answered", "the first call is untouched");
    await page.evaluate(() => /** @type {any} */ (window).t.op.goOffline());
    const [ended] = await waitForEvent(page, "callEnded");
    assert.equal(ended.endReason, "offline");
    assert.equal(await page.evaluate(() => /** @type {any} */ (window).t.op.state), "offline");
    await page.close();
  });

  test("inbound: reject() ends the offer \"rejected\"", async () => {
    const { page } = await online("reject");
    await page.evaluate(() => {
      const t = /** @type {any} */ (window).t;
      t.op.on("incomingCall", (call) => call.reject());
    });
    const sid = await simCall(base, { to: MILANO.phoneNumber });
    const [ended] = await waitForEvent(page, "callEnded");
    assert.equal(ended.callSid, sid);
    assert.equal(ended.endReason, "rejected");
    await waitFor(async () => (await simState(base, sid)).state === "ended", { what: "sim call ended" });
    assert.equal((await seen(page, "callStarted")).length, 0);
    await page.close();
  });
});
