// The `volume` event (issue 14, item 3) in a real Chromium against
// audin-server --dev and its simulated phone network: the input level follows
// the fake microphone's tone (a −6 dB tone reads half the 0 dB one), the
// output level follows what the far end plays (the sim's steady 440 Hz tone
// versus silence), about 20 events a second, the microphone still measured
// while muted, and nothing after the call ended. Needs `npm run build` and a
// built audin-server.

import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { SDK_ROOT, browserSkipReason, launchBrowser, makeToneWav } from "./harness/index.mjs";
import { openOperatorPage, rms, simCall, simRecording, sleep, startServer, waitFor, waitForEvent } from "./sdk-support.mjs";

const MILANO = { id: "pn_dev_milano", phoneNumber: "+390299999999" };
// Raw microphone: no AGC or noise suppression may change the tone's level.
const RAW_MIC = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };
const LOUD = 0.5; // peak of the "0 dB" tone
const QUIET = 0.25; // −6 dB
const SINE_RMS = Math.SQRT1_2; // RMS of a sine of peak 1
// The sim's tone: 440 Hz at a peak of 10000 / 32768 (crates/server/src/tone.rs).
const SIM_TONE_RMS = (10_000 / 32_768) * SINE_RMS;
const SETTLE_MS = 1_000;
const WINDOW_MS = 2_000;

/** The package README's meter example: its html and js blocks, verbatim. */
function readmeMeter() {
  const md = readFileSync(join(SDK_ROOT, "README.md"), "utf8");
  const at = md.indexOf("### Levels: the `volume` event");
  assert.ok(at >= 0, "README.md has no '### Levels: the `volume` event' section");
  const section = md.slice(at, md.indexOf("\n### ", at + 1));
  const block = (lang) => {
    const m = new RegExp("```" + lang + "\n([\\s\\S]*?)```").exec(section);
    assert.ok(m, `the Levels section has no ${lang} block`);
    return m[1];
  };
  return { html: block("html"), js: block("js") };
}

const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

describe("volume levels", { skip: browserSkipReason() }, () => {
  let server;
  let base;
  let dir;
  const browsers = {};
  let n = 0;

  before(async () => {
    server = await startServer();
    base = server.url;
    dir = mkdtempSync(join(tmpdir(), "audin-levels-test-"));
  });

  after(async () => {
    for (const b of Object.values(browsers)) await b.close();
    await server?.kill();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** One Chromium per microphone level (the fake capture file is per process). */
  async function browserWith(amplitude) {
    browsers[amplitude] ??= await launchBrowser({
      wavPath: makeToneWav(join(dir, `mic-${amplitude}.wav`), { freqHz: 1000, seconds: 30, amplitude }),
    });
    return browsers[amplitude];
  }

  /**
   * An inbound sim call with `behaviour`, accepted on a fresh operator page
   * whose microphone is a 1 kHz tone of `amplitude`. Collects every `volume`
   * event; `during(page, sid)` runs after the settle + measuring window,
   * `afterEnd(page)` once the call ended.
   * @returns the events of the measuring window, all events, the callSid,
   *   and the page time the call ended.
   */
  async function call(amplitude, behaviour, { during, afterEnd } = {}) {
    const browser = await browserWith(amplitude);
    const { page, logs } = await openOperatorPage(browser.context, base, {
      operatorRef: `levels-${++n}`,
      audioConstraints: RAW_MIC,
    });
    try {
      await page.evaluate(async (id) => {
        const t = /** @type {any} */ (window).t;
        t.volumes = [];
        t.op.on("volume", (v) => t.volumes.push({ ...v, at: performance.now() }));
        t.op.on("incomingCall", (c) => c.accept());
        await t.op.goOnline([id]);
      }, MILANO.id);
      const sid = await simCall(base, { to: MILANO.phoneNumber, behaviour });
      await waitForEvent(page, "callStarted");
      await waitFor(() => page.evaluate(() => /** @type {any} */ (window).t.volumes.length > 0), {
        what: `a first volume event\n${logs.join("\n")}`,
      });
      await sleep(SETTLE_MS);
      const from = await page.evaluate(() => performance.now());
      await sleep(WINDOW_MS);
      const to = await page.evaluate(() => performance.now());
      const extra = during ? await during(page, sid) : undefined;
      await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall.hangup());
      const [ended] = await waitForEvent(page, "callEnded");
      assert.equal(ended.callSid, sid);
      const endedAt = await page.evaluate(() => /** @type {any} */ (window).t.events.find((e) => e[0] === "callEnded")[2]);
      await sleep(500); // room for any straggler to show up
      const ending = afterEnd ? await afterEnd(page) : undefined;
      const all = await page.evaluate(() => /** @type {any} */ (window).t.volumes);
      const measured = all.filter((v) => v.at >= from && v.at <= to);
      return { sid, all, window: measured, seconds: (to - from) / 1000, endedAt, extra, ending };
    } finally {
      await page.close();
    }
  }

  test("input follows the microphone: a −6 dB tone reads half the 0 dB one", async () => {
    const loud = await call(LOUD, "silence");
    const quiet = await call(QUIET, "silence");
    const loudIn = mean(loud.window.map((v) => v.input));
    const quietIn = mean(quiet.window.map((v) => v.input));
    console.log(`levels: input 0 dB ${loudIn.toFixed(4)}, −6 dB ${quietIn.toFixed(4)}, ratio ${(quietIn / loudIn).toFixed(3)}`);
    assert.ok(
      Math.abs(loudIn / (LOUD * SINE_RMS) - 1) <= 0.1,
      `0 dB tone: input ${loudIn.toFixed(4)}, expected its RMS ${(LOUD * SINE_RMS).toFixed(4)} ±10 %`,
    );
    const ratio = quietIn / loudIn;
    assert.ok(Math.abs(ratio / 0.5 - 1) <= 0.1, `−6 dB / 0 dB input ratio ${ratio.toFixed(3)}, expected 0.5 ±10 %`);
    for (const v of [...loud.window, ...quiet.window]) {
      assert.ok(v.input >= 0 && v.input <= 1 && v.output >= 0 && v.output <= 1, `levels in [0, 1]: ${JSON.stringify(v)}`);
    }
  });

  test("output follows what is played: the sim's tone is steady and non-zero, silence ~0; the README's meter", async () => {
    const { html, js } = readmeMeter();
    const meters = (page) =>
      page.evaluate(() => ({
        mic: /** @type {any} */ (document.getElementById("mic")).value,
        speaker: /** @type {any} */ (document.getElementById("speaker")).value,
        hint: !(/** @type {any} */ (document.getElementById("muted-hint")).hidden),
      }));
    const tone = await call(QUIET, "tone", {
      // The README's meter example, verbatim, on the call's page.
      during: async (page) => {
        await page.evaluate((h) => document.body.insertAdjacentHTML("beforeend", h), html);
        await page.evaluate(() => {
          /** @type {any} */ (window).op = /** @type {any} */ (window).t.op;
        });
        await page.addScriptTag({ content: js });
        await sleep(300);
        const live = await meters(page);
        await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall.mute(true));
        await sleep(300);
        return { live, muted: await meters(page) };
      },
      afterEnd: meters,
    });
    const silence = await call(QUIET, "silence");
    const outs = tone.window.map((v) => v.output);
    const med = median(outs);
    const steady = outs.filter((x) => Math.abs(x / med - 1) <= 0.2).length / outs.length;
    const silent = Math.max(...silence.window.map((v) => v.output));
    console.log(
      `levels: output tone median ${med.toFixed(4)} (expected ${SIM_TONE_RMS.toFixed(4)}), ` +
        `${(steady * 100).toFixed(0)} % within ±20 %; silence max ${silent.toExponential(2)}`,
    );
    assert.ok(Math.abs(med / SIM_TONE_RMS - 1) <= 0.2, `tone: output ${med.toFixed(4)}, expected ${SIM_TONE_RMS.toFixed(4)} ±20 %`);
    assert.ok(steady >= 0.8, `tone: ${(steady * 100).toFixed(0)} % of the events within ±20 % of the median (want ≥ 80 %)`);
    assert.ok(silent < 0.001, `silence: output level ${silent} (want < 0.001)`);

    // README meter: −13 dBFS of speaker reads ~0.78, the −15 dBFS microphone ~0.75.
    const { live, muted } = tone.extra;
    console.log(`levels: README meter ${JSON.stringify(live)}, muted ${JSON.stringify(muted)}, ended ${JSON.stringify(tone.ending)}`);
    assert.ok(live.speaker > 0.7 && live.speaker < 0.85, `README meter: speaker ${live.speaker}`);
    assert.ok(live.mic > 0.7 && live.mic < 0.8, `README meter: mic ${live.mic}`);
    assert.equal(live.hint, false, "README meter: no muted hint while unmuted");
    assert.equal(muted.hint, true, "README meter: the muted hint shows when muted and talking");
    assert.deepEqual(tone.ending, { mic: 0, speaker: 0, hint: false }, "README meter: reset at callEnded");
  });

  test("about 20 events a second for the call, the microphone measured while muted, none after the end", async () => {
    const muted = { from: 0, to: 0 };
    const run = await call(LOUD, "tone", {
      during: async (page, sid) => {
        await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall.mute(true));
        await sleep(500);
        muted.from = await page.evaluate(() => performance.now());
        const heardBefore = (await simRecording(base, sid)).samples.length;
        await sleep(1_000);
        muted.to = await page.evaluate(() => performance.now());
        const heard = (await simRecording(base, sid)).samples.subarray(heardBefore);
        return { heardWhileMuted: rms(heard) };
      },
    });
    const rate = run.window.length / run.seconds;
    console.log(`levels: ${run.window.length} events in ${run.seconds.toFixed(2)} s = ${rate.toFixed(1)}/s`);
    assert.ok(rate >= 15 && rate <= 25, `${rate.toFixed(1)} volume events per second (want 15–25)`);
    assert.ok(
      run.all.every((v) => v.callSid === run.sid && Object.keys(v).sort().join() === "at,callSid,input,output"),
      `every payload is { callSid, input, output } of the call: ${JSON.stringify(run.all[0])}`,
    );

    const whileMuted = run.all.filter((v) => v.at >= muted.from && v.at <= muted.to).map((v) => v.input);
    const mutedIn = mean(whileMuted);
    assert.ok(whileMuted.length >= 10, `volume events kept coming while muted (${whileMuted.length})`);
    assert.ok(run.extra.heardWhileMuted < 0.001, `the far end heard silence while muted (rms ${run.extra.heardWhileMuted})`);
    assert.ok(
      Math.abs(mutedIn / (LOUD * SINE_RMS) - 1) <= 0.1,
      `muted: input still reads the microphone (${mutedIn.toFixed(4)}, expected ${(LOUD * SINE_RMS).toFixed(4)} ±10 %)`,
    );

    const late = run.all.filter((v) => v.at > run.endedAt);
    assert.equal(late.length, 0, `no volume event after callEnded (got ${late.length})`);
  });
});
