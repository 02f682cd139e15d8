// The SIP trunk end to end in a real Chromium: a real phone (baresip 1.0.0,
// Debian baresip-core) calls a dev number of a real `audin-server --dev
// --sip-listen … --dev-trunk sip:127.0.0.1:<baresip>`, and the browser SDK's
// operator answers. Issue 13's proof for the browser (the native SDK's twin
// is crates/testkit/tests/sip_e2e.rs):
// - the page gets incomingCall and accepts; it plays the caller's 440 Hz
//   and baresip records the page's 1 kHz microphone at the level sent;
// - the page's DTMF 5 reaches baresip as an RFC 4733 event;
// - the page hangs up → `hangup` on the page and in the call record;
//   baresip hangs up a second call → `remote_hangup` on both.
//
// Needs `npm run build`, a built audin-server and Chromium; skips when
// baresip or Chromium is absent, unless AUDIN_REQUIRE_SIP_TOOLS=1 (as
// `cargo xtask test` sets), where that is a failure.

import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import { analyseTone, baresipMissing, readWav, rmsDbfs, sipToolsRequired, startBaresip, zeroCrossingHz } from "./harness/baresip.mjs";
import { browserSkipReason, launchBrowser, makeToneWav } from "./harness/index.mjs";
import { openOperatorPage, startServer, toneMedian, waitForEvent } from "./sdk-support.mjs";

/** The whole test, start-up included, ends within this or fails. */
const TEST_BOUND_MS = 60_000;
/** A far end's or the service's reaction (a busy 2-core box included). */
const EVENT_MS = 8_000;
const MILANO = { id: "pn_dev_milano", phoneNumber: "+390299999999" };
/** The phone's own number (its SIP user part). */
const CALLER = "390211111111";
const CALLER_HZ = 440;
/** The phone's tone: -20 dBFS RMS, as in sip_e2e.rs. */
const CALLER_AMPLITUDE = 0.1 * Math.SQRT2;
const MIC_HZ = 1000;
const MIC_AMPLITUDE = 0.5;
/** How much of the page's tone baresip must have recorded before the digit and hang-up. */
const RECORD_SECONDS = 2.5;
// Raw microphone (no AGC / noise suppression / echo canceller) so the level
// baresip hears can be compared with the WAV's.
const RAW_MIC = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };

const required = sipToolsRequired();
// AUDIN_SKIP_BROWSER=1 is a deliberate choice and stays a skip; a missing
// Chromium or baresip is not, when the SIP tools are required.
const missing = [baresipMissing(), browserSkipReason()].filter((m) => m && m !== "AUDIN_SKIP_BROWSER=1");
const skip =
  browserSkipReason() === "AUDIN_SKIP_BROWSER=1"
    ? "AUDIN_SKIP_BROWSER=1"
    : missing.length > 0 && !required
      ? `${missing.join("; ")}; set AUDIN_REQUIRE_SIP_TOOLS=1 to make this a failure`
      : false;

/**
 * `audin-server --dev` with its SIP endpoint on a free loopback port and
 * `trunk` as the dev trunk. The stack binds UDP on a free port, then TCP on
 * the same number, which another socket on this busy box may hold: then it
 * starts again.
 */
async function startSipServer(trunk) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startServer({ args: ["--sip-listen", "127.0.0.1:0", "--dev-trunk", trunk] });
    } catch (e) {
      if (attempt >= 5 || !/Address already in use/.test(String(e))) throw e;
    }
  }
}

/**
 * The first capture group of the server's first stdout line matching `re`.
 * The lines hold the dev API key, so a miss names the line, never prints them.
 */
function printed(server, re, what) {
  for (const line of server.stdoutLines) {
    const m = re.exec(line);
    if (m) return /** @type {string} */ (m[1]);
  }
  throw new Error(`audin-server printed no ${what} line before its ready line`);
}

/**
 * Polls `measure` until `good(result)` (resolving to the result) or
 * `timeoutMs`, then fails with the last measurement: a wait with a bound,
 * never a fixed sleep.
 * @template T
 * @param {() => Promise<T> | T} measure
 * @param {(m: T) => boolean} good
 * @param {string} what
 */
async function until(measure, good, what, timeoutMs = EVENT_MS) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await measure();
      if (good(last)) return last;
    } catch (e) {
      last = `error: ${/** @type {Error} */ (e).message}`;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last measured: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * What the page played in its last second (four 0.25 s worklet snapshots
 * after page time `since`): the `hz` tone's median share and amplitude per
 * 100 ms block, and the median frequency of those blocks by zero crossings.
 */
async function pagePlayed(page, since, hz) {
  const snaps = await page.evaluate(
    (since) =>
      /** @type {any} */ (window).t.taps.playback
        .filter((/** @type {any} */ x) => x.at > since)
        .slice(-4)
        .map((/** @type {any} */ x) => ({ sampleRate: x.sampleRate, samples: x.samples })),
    since,
  );
  if (snaps.length < 4) return { snapshots: snaps.length, share: 0, amp: 0, hz: null };
  const rate = snaps[0].sampleRate;
  const all = Float32Array.from(snaps.flatMap((s) => s.samples));
  const tone = toneMedian(all, rate, hz);
  // Per 100 ms block, like the share: one late packet's concealment on a
  // busy box moves a block, not the median.
  const block = Math.round(rate / 10);
  const freqs = [];
  for (let i = 0; i + block <= all.length; i += block) {
    const f = zeroCrossingHz(all.subarray(i, i + block), rate);
    if (f !== null) freqs.push(f);
  }
  freqs.sort((a, b) => a - b);
  return { snapshots: snaps.length, share: tone.share, amp: tone.amp, hz: freqs.length ? freqs[Math.floor(freqs.length / 2)] : null };
}

/** baresip's newest recording of what it heard, analysed for the page's tone. */
function recordedByPhone(phone) {
  const files = phone.heardRecordings();
  if (files.length === 0) return null;
  const wav = readWav(readFileSync(/** @type {string} */ (files.at(-1))));
  return { sampleRate: wav.sampleRate, ...analyseTone(wav.samples, wav.sampleRate, MIC_HZ) };
}

/** The call record of `sid` once it is closed (record updates are queued). */
async function closedRecord(base, apiKey, sid) {
  return until(
    async () => {
      const r = await fetch(`${base}/v1/calls?limit=1000`, { headers: { "x-api-key": apiKey } });
      if (!r.ok) throw new Error(`GET /v1/calls answered ${r.status}`);
      return (await r.json()).find((/** @type {any} */ c) => c.callSid === sid) ?? null;
    },
    (rec) => rec !== null && typeof rec === "object" && rec.endReason != null,
    `the record of ${sid} to be closed`,
  );
}

const pageNow = (page) => page.evaluate(() => performance.now());

test(
  "SIP: baresip calls a dev number, the browser operator answers: audio both ways, DTMF, either side hangs up",
  { skip, timeout: TEST_BOUND_MS },
  async (t) => {
    assert.deepEqual(missing, [], `AUDIN_REQUIRE_SIP_TOOLS is set but: ${missing.join("; ")}`);
    const dir = mkdtempSync(join(tmpdir(), "audin-sip-test-"));
    // Longer than both calls: baresip's aufile hangs up at the end of its file.
    const callerWav = makeToneWav(join(dir, "caller-440.wav"), { freqHz: CALLER_HZ, seconds: 120, sampleRate: 8000, amplitude: CALLER_AMPLITUDE });
    const micWav = makeToneWav(join(dir, "mic-1khz.wav"), { freqHz: MIC_HZ, seconds: 30, amplitude: MIC_AMPLITUDE });
    const micDbfs = rmsDbfs(readWav(readFileSync(micWav)).samples);
    let phone;
    let server;
    let browser;
    let failed = true;
    const cleanup = async () => {
      await browser?.close().catch(() => {});
      await phone?.stop({ keep: failed }).catch(() => {});
      await server?.kill().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    };
    // Also on a timeout, where the body may still be waiting.
    t.after(cleanup);
    try {
      phone = await startBaresip({ user: CALLER, sourceWav: callerWav, sourceRate: 8000 });
      server = await startSipServer(`sip:${phone.sipAddr}`);
      const base = /** @type {string} */ (server.url);
      const sipAddr = printed(server, /^audin-server SIP on udp\+tcp (\S+)$/, "`audin-server SIP on udp+tcp ADDR`");
      const apiKey = printed(server, /^AUDIN_DEV_API_KEY=(\S+)$/, "`AUDIN_DEV_API_KEY=…`");
      browser = await launchBrowser({ wavPath: micWav });
      const { page, logs } = await openOperatorPage(browser.context, base, { operatorRef: "op-sip-browser", audioConstraints: RAW_MIC });
      const ctx = () => `\npage console:\n${logs.slice(-20).join("\n")}\nbaresip log:\n${phone.logTail(15)}`;
      await page.evaluate(async (id) => {
        const t = /** @type {any} */ (window).t;
        t.op.on("incomingCall", (/** @type {any} */ call) => call.accept());
        await t.op.goOnline([id]);
      }, MILANO.id);
      const numberUri = `sip:${MILANO.phoneNumber.slice(1)}@${sipAddr}`;

      // 1. The phone calls; the page rings, accepts and plays its 440 Hz.
      await phone.dial(numberUri);
      const [offer] = await waitForEvent(page, "incomingCall", { timeoutMs: EVENT_MS });
      assert.equal(offer.direction, "inbound");
      assert.equal(offer.from, `+${CALLER}`);
      assert.equal(offer.to, MILANO.phoneNumber);
      const [started] = await waitForEvent(page, "callStarted", { timeoutMs: EVENT_MS });
      assert.equal(started.callSid, offer.callSid);
      await phone.waitEvent("CALL_ESTABLISHED", { timeoutMs: EVENT_MS });
      const played = await until(
        () => pagePlayed(page, 0, CALLER_HZ),
        (p) => p.share > 0.9,
        "the page to play the caller's 440 Hz",
      ).catch((e) => assert.fail(`${e.message}${ctx()}`));
      assert.ok(played.hz !== null && Math.abs(played.hz - CALLER_HZ) <= 5, `the page plays ${played.hz} Hz, not ${CALLER_HZ}`);
      const playedDb = 20 * Math.log10(played.amp / CALLER_AMPLITUDE);
      assert.ok(Math.abs(playedDb) <= 3, `the page plays the caller's tone ${playedDb.toFixed(2)} dB from what it sent (±3 dB)`);
      t.diagnostic(`page played ${played.hz?.toFixed(1)} Hz, ${playedDb.toFixed(2)} dB from the caller's -20 dBFS tone (share ${played.share.toFixed(3)})`);

      // 2. The phone hears the page's microphone (its recording grows as it
      // hears), then the page's DTMF 5 reaches it.
      await until(
        () => recordedByPhone(phone),
        (r) => r !== null && r.activeSeconds >= RECORD_SECONDS && r.hz !== null && Math.abs(r.hz - MIC_HZ) <= 5,
        `baresip to record ${RECORD_SECONDS} s of the page's ${MIC_HZ} Hz`,
        EVENT_MS + RECORD_SECONDS * 1000,
      ).catch((e) => assert.fail(`${e.message}${ctx()}`));
      await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall.sendDtmf("5"));
      const digit = await phone.waitEvent("CALL_DTMF_START", { timeoutMs: EVENT_MS });
      assert.equal(digit.param, "5", "baresip reports the digit the page sent");

      // 3. The page hangs up: `hangup` on the page and in the record; the
      // phone's call is closed.
      await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall.hangup());
      const [ended] = await waitForEvent(page, "callEnded", { timeoutMs: EVENT_MS });
      assert.equal(ended.callSid, offer.callSid);
      assert.equal(ended.endReason, "hangup");
      const closed = await phone.waitEvent("CALL_CLOSED", { timeoutMs: EVENT_MS });
      let rec = await closedRecord(base, apiKey, offer.callSid);
      assert.equal(rec.endReason, "hangup", `record ${JSON.stringify(rec)} (baresip closed with ${JSON.stringify(closed.param)})`);
      assert.equal(rec.direction, "inbound");
      assert.equal(rec.operatorRef, "op-sip-browser");

      // The whole recording, complete now that the call's audio closed: the
      // page's 1 kHz at the level of its microphone WAV.
      const heard = recordedByPhone(phone);
      assert.ok(heard !== null, "baresip left a recording");
      assert.equal(heard.sampleRate, 8000);
      assert.ok(heard.activeSeconds >= RECORD_SECONDS, `baresip recorded ${heard.activeSeconds.toFixed(2)} s of sound`);
      assert.ok(heard.hz !== null && Math.abs(heard.hz - MIC_HZ) <= 5, `baresip heard ${heard.hz} Hz, not ${MIC_HZ}`);
      assert.ok(heard.share > 0.9, `baresip's recording is mostly the ${MIC_HZ} Hz tone (share ${heard.share.toFixed(3)})`);
      const heardDb = heard.rmsDbfs - micDbfs;
      assert.ok(
        Math.abs(heardDb) <= 3,
        `baresip heard the page ${heard.rmsDbfs.toFixed(2)} dBFS, the microphone WAV is ${micDbfs.toFixed(2)} dBFS (±3 dB)`,
      );
      t.diagnostic(
        `baresip recorded ${heard.hz.toFixed(1)} Hz at ${heard.rmsDbfs.toFixed(2)} dBFS (mic WAV ${micDbfs.toFixed(2)} dBFS, ` +
          `${heardDb.toFixed(2)} dB; share ${heard.share.toFixed(3)}; ${heard.activeSeconds.toFixed(2)} s)`,
      );

      // 4. A second call, which the phone ends: `remote_hangup` on the page
      // and in the record.
      const since = await pageNow(page);
      await phone.dial(numberUri);
      const offers = await waitForEvent(page, "incomingCall", { count: 2, timeoutMs: EVENT_MS });
      const second = /** @type {any} */ (offers[1]);
      assert.notEqual(second.callSid, offer.callSid);
      await waitForEvent(page, "callStarted", { count: 2, timeoutMs: EVENT_MS });
      await phone.waitEvent("CALL_ESTABLISHED", { timeoutMs: EVENT_MS });
      // Talk a moment first, as a caller does.
      await until(
        () => pagePlayed(page, since, CALLER_HZ),
        (p) => p.share > 0.9,
        "the page to play the second call's 440 Hz",
      ).catch((e) => assert.fail(`${e.message}${ctx()}`));
      await phone.hangup();
      const ends = await waitForEvent(page, "callEnded", { count: 2, timeoutMs: EVENT_MS });
      const end2 = /** @type {any} */ (ends[1]);
      assert.equal(end2.callSid, second.callSid);
      assert.equal(end2.endReason, "remote_hangup");
      await phone.waitEvent("CALL_CLOSED", { timeoutMs: EVENT_MS });
      rec = await closedRecord(base, apiKey, second.callSid);
      assert.equal(rec.endReason, "remote_hangup", `record ${JSON.stringify(rec)}`);
      assert.equal(await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall), null);
      failed = false;
    } finally {
      await cleanup();
    }
  },
);
