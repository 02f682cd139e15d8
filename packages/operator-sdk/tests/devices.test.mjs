// Audio devices (issue 14, item 2) in a real Chromium against audin-server
// --dev and its simulated phone network: listing Chromium's fake
// microphones and speakers, choosing them before and during a call, a
// microphone switch mid-call that the far end does not hear as a gap, unknown
// ids rejected without touching the call, the speaker chosen on the
// echo-safe route's <audio> element, `audioDevicesChanged`, and falling back
// to the default device when the one in use disappears.
//
// Chromium's fake devices all play the same file (a 1 kHz tone here), so a
// switch is proven by the capture track's deviceId, and continuity by the
// far end's recording. Headless Chromium never fires `devicechange` by
// itself: those tests dispatch the event on navigator.mediaDevices (and, for
// a vanished device, answer enumerateDevices without it). Needs
// `npm run build` and a built audin-server.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { browserSkipReason, launchBrowser, makeToneWav } from "./harness/index.mjs";
import {
  openOperatorPage,
  seen,
  simCall,
  simRecording,
  simState,
  sleep,
  startServer,
  toneMedian,
  waitFor,
  waitForEvent,
} from "./sdk-support.mjs";

const MILANO = { id: "pn_dev_milano", phoneNumber: "+390299999999" };
const MIC_HZ = 1000;
// Raw microphone: noise suppression would fade a steady tone out.
const RAW_MIC = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };
/** Longest interruption of the far end's tone a switch may cause. */
const MAX_GAP_MS = 100;
/** Below this the recording counts as silent (the tone's peak is 0.5). */
const SILENCE = 0.05;

/**
 * The longest run of near-silence in 8 kHz samples, in ms. A 1 kHz tone
 * sampled at 8 kHz has at most one sample near zero in a row, so any run
 * longer than a sample or two is a real gap.
 */
function longestSilenceMs(samples) {
  let longest = 0;
  let run = 0;
  for (const x of samples) {
    run = Math.abs(x) < SILENCE ? run + 1 : 0;
    if (run > longest) longest = run;
  }
  return longest / 8;
}

describe("audio devices", { skip: browserSkipReason() }, () => {
  let server;
  let base;
  let browser;
  let dir;
  let n = 0;

  before(async () => {
    server = await startServer();
    base = server.url;
    dir = mkdtempSync(join(tmpdir(), "audin-devices-test-"));
    browser = await launchBrowser({
      wavPath: makeToneWav(join(dir, "mic.wav"), { freqHz: MIC_HZ, seconds: 30, amplitude: 0.5 }),
    });
  });

  after(async () => {
    await browser?.close();
    await server?.kill();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /**
   * A fresh operator page: `t.devices` collects `audioDevicesChanged`,
   * `t.element` is the echo-safe route's <audio> element once a call plays.
   */
  async function operatorPage(config = {}) {
    const op = await openOperatorPage(browser.context, base, {
      operatorRef: `devices-${++n}`,
      audioConstraints: RAW_MIC,
      config,
    });
    await op.page.evaluate(() => {
      const w = /** @type {any} */ (window);
      const t = w.t;
      t.devices = [];
      t.op.on("audioDevicesChanged", (d) => t.devices.push(JSON.parse(JSON.stringify(d))));
      w.__audinTestRoute = (route, element) => {
        t.route = route;
        t.element = element;
      };
      t.op.on("incomingCall", (c) => c.accept());
      // The capture track in use: the newest stream getUserMedia returned.
      t.mic = () => {
        const track = t.streams.at(-1)?.getAudioTracks()[0];
        return track && { deviceId: track.getSettings().deviceId, label: track.label, state: track.readyState };
      };
      t.oldTracksEnded = () =>
        t.streams.slice(0, -1).every((s) => s.getTracks().every((tr) => tr.readyState === "ended"));
      t.fail = async (p) => {
        try {
          await p;
          return null;
        } catch (e) {
          return { name: e.name, code: e.code, message: e.message, isError: e instanceof w.AudinOperatorSDK.OperatorRequestError };
        }
      };
    });
    return op;
  }

  /** Goes online, takes a sim call (far end silent) and waits until its tone is heard. */
  async function startCall(page, logs) {
    await page.evaluate((id) => /** @type {any} */ (window).t.op.goOnline([id]), MILANO.id);
    const sid = await simCall(base, { to: MILANO.phoneNumber, behaviour: "silence" });
    await waitForEvent(page, "callStarted");
    await waitFor(async () => (await simRecording(base, sid)).samples.length > 8000, {
      what: `a second of recording\n${logs.join("\n")}`,
    });
    return sid;
  }

  async function hangup(page) {
    await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall?.hangup());
    await waitForEvent(page, "callEnded");
  }

  /** The ids of the fake devices, by label. */
  async function fakeDevices(page) {
    const list = await page.evaluate(() => /** @type {any} */ (window).t.op.listAudioDevices());
    const id = (kind, label) => {
      const d = list[kind].find((x) => x.label === label);
      assert.ok(d, `${kind} "${label}" in ${JSON.stringify(list)}`);
      return d.deviceId;
    };
    return {
      list,
      input1: id("inputs", "Fake Audio Input 1"),
      input2: id("inputs", "Fake Audio Input 2"),
      output1: id("outputs", "Fake Audio Output 1"),
      output2: id("outputs", "Fake Audio Output 2"),
    };
  }

  /**
   * What the far end heard from `fromSample` on, after `settleMs`: the
   * longest silence and the tone's share of the last second.
   */
  async function continuity(sid, fromSample) {
    const all = (await simRecording(base, sid)).samples;
    const span = all.subarray(Math.max(0, fromSample));
    const tail = all.subarray(Math.max(0, all.length - 8000));
    return { gapMs: longestSilenceMs(span), spanMs: span.length / 8, tone: toneMedian(tail, 8000, MIC_HZ).share };
  }

  test("lists Chromium's fake microphones and speakers; requestPermission reveals hidden labels once", async () => {
    const { page } = await operatorPage();
    try {
      const { list } = await fakeDevices(page);
      console.log(`devices: inputs ${list.inputs.map((d) => d.label).join(", ")}; outputs ${list.outputs.map((d) => d.label).join(", ")}`);
      assert.ok(list.inputs.length >= 3 && list.outputs.length >= 3, JSON.stringify(list));
      for (const d of [...list.inputs, ...list.outputs]) {
        assert.deepEqual(Object.keys(d).sort(), ["deviceId", "groupId", "label"]);
        assert.ok(d.deviceId && d.label && d.groupId, `every field filled: ${JSON.stringify(d)}`);
      }
      assert.ok(!list.inputs.some((d) => d.label === "fake_device_0"), "no video device among the inputs");

      // A browser that hides labels until a grant (here: enumerateDevices
      // answers like one until getUserMedia ran once).
      const r = await page.evaluate(async () => {
        const t = /** @type {any} */ (window).t;
        const md = navigator.mediaDevices;
        const real = md.enumerateDevices.bind(md);
        const streamsBefore = t.streams.length;
        md.enumerateDevices = async () => {
          const l = await real();
          const granted = t.streams.length > streamsBefore;
          return granted ? l : l.map((d) => ({ kind: d.kind, deviceId: "", label: "", groupId: "" }));
        };
        const quiet = await t.op.listAudioDevices();
        const openedByQuiet = t.streams.length - streamsBefore;
        const revealed = await t.op.listAudioDevices({ requestPermission: true });
        const probes = t.streams.slice(streamsBefore);
        md.enumerateDevices = real;
        return {
          quietLabels: quiet.inputs.map((d) => d.label),
          openedByQuiet,
          revealedLabels: revealed.inputs.map((d) => d.label),
          probes: probes.length,
          probesStopped: probes.every((s) => s.getTracks().every((tr) => tr.readyState === "ended")),
        };
      });
      assert.ok(r.quietLabels.every((l) => l === ""), "labels hidden before the grant");
      assert.equal(r.openedByQuiet, 0, "listAudioDevices() never opens the microphone by itself");
      assert.equal(r.probes, 1, "requestPermission opened the microphone once");
      assert.ok(r.probesStopped, "and stopped it at once");
      assert.ok(r.revealedLabels.includes("Fake Audio Input 1"), `labels after the grant: ${r.revealedLabels}`);
    } finally {
      await page.close();
    }
  });

  test("switching the microphone mid-call: the new device captures, the far end's tone has no gap over 100 ms", async () => {
    const { page, logs } = await operatorPage();
    try {
      const sid = await startCall(page, logs);
      const { input1 } = await fakeDevices(page);
      const first = await page.evaluate(() => /** @type {any} */ (window).t.mic());
      assert.equal(first.deviceId, "default", "the call starts on the default microphone");

      const calm = (await simRecording(base, sid)).samples;
      const heardBefore = calm.length;
      // Control: the longest silence in the second before the switch.
      const controlMs = longestSilenceMs(calm.subarray(Math.max(0, heardBefore - 8000)));
      const framesBefore = (await simState(base, sid)).framesHeard;
      const t0 = Date.now();
      const took = await page.evaluate(async (id) => {
        const at = performance.now();
        await /** @type {any} */ (window).t.op.setInputDevice(id);
        return performance.now() - at;
      }, input1);
      await sleep(1500);
      const elapsedMs = Date.now() - t0;
      const framesAfter = (await simState(base, sid)).framesHeard;
      const c = await continuity(sid, heardBefore - 4000); // from 0.5 s before the switch
      const mic = await page.evaluate(() => /** @type {any} */ (window).t.mic());
      const missing = Math.round(elapsedMs / 20) - (framesAfter - framesBefore);
      console.log(
        `devices: input switch took ${took.toFixed(0)} ms; far end: longest silence ${c.gapMs.toFixed(1)} ms in ` +
          `${c.spanMs.toFixed(0)} ms around it, tone share ${c.tone.toFixed(3)}, frames ${framesAfter - framesBefore} ` +
          `in ${elapsedMs} ms (${missing} short); control without a switch: ${controlMs.toFixed(1)} ms`,
      );
      assert.equal(mic.deviceId, input1, "the capture track is the chosen device's");
      assert.equal(mic.label, "Fake Audio Input 1");
      assert.equal(mic.state, "live");
      assert.ok(await page.evaluate(() => /** @type {any} */ (window).t.oldTracksEnded()), "the old microphone was released");
      assert.ok(c.gapMs <= MAX_GAP_MS, `the far end heard ${c.gapMs} ms of silence around the switch (max ${MAX_GAP_MS})`);
      assert.ok(c.tone > 0.9, `the far end hears the tone after the switch (share ${c.tone.toFixed(3)})`);
      // Frames keep flowing: the far end's 20 ms grid is not short by more than 100 ms.
      assert.ok(missing <= 5 + 10, `${missing} frames short of ${Math.round(elapsedMs / 20)}`);
      assert.equal(await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall?.state), "active");
      assert.deepEqual(await seen(page, "error"), [], "no error event");
      await hangup(page);
    } finally {
      await page.close();
    }
  });

  test("unknown or invalid deviceIds reject AUDIO_DEVICE_NOT_FOUND and leave the call alone", async () => {
    const { page, logs } = await operatorPage();
    try {
      const sid = await startCall(page, logs);
      const r = await page.evaluate(async () => {
        const t = /** @type {any} */ (window).t;
        const long = `no-such-mic-"<script>${"x".repeat(200)}`;
        return {
          input: await t.fail(t.op.setInputDevice(long)),
          empty: await t.fail(t.op.setInputDevice("")),
          number: await t.fail(t.op.setInputDevice(42)),
          output: await t.fail(t.op.setOutputDevice("no-such-speaker")),
          streams: t.streams.length,
        };
      });
      for (const [what, e] of Object.entries(r).filter(([k]) => k !== "streams")) {
        assert.ok(e, `${what}: rejected`);
        assert.equal(e.code, "AUDIO_DEVICE_NOT_FOUND", `${what}: ${JSON.stringify(e)}`);
        assert.equal(e.isError, true, `${what}: an OperatorRequestError`);
      }
      assert.match(r.input.message, /"no-such-mic-\\"<script>x+…"/, "the id is quoted and cut");
      assert.ok(r.input.message.length < 160, `short message: ${r.input.message}`);
      assert.equal(r.streams, 1, "no microphone was opened for a bad id");
      const mic = await page.evaluate(() => /** @type {any} */ (window).t.mic());
      assert.deepEqual(mic, { deviceId: "default", label: "Fake Default Audio Input", state: "live" });
      const heard = (await simRecording(base, sid)).samples.length;
      await sleep(600);
      const c = await continuity(sid, heard);
      assert.ok(c.gapMs <= MAX_GAP_MS && c.tone > 0.9, `the call's audio goes on: ${JSON.stringify(c)}`);
      assert.equal(await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall?.state), "active");
      await hangup(page);
    } finally {
      await page.close();
    }
  });

  test("devices chosen before a call are used by it; the speaker via setSinkId on the echo-safe <audio> element", async () => {
    const { page, logs } = await operatorPage();
    try {
      const { input2, output1, output2 } = await fakeDevices(page);
      await page.evaluate(
        async ([i, o]) => {
          const t = /** @type {any} */ (window).t;
          await t.op.setInputDevice(i);
          await t.op.setOutputDevice(o);
        },
        [input2, output1],
      );
      assert.equal(await page.evaluate(() => /** @type {any} */ (window).t.streams.length), 0, "nothing opened before the call");
      const sid = await startCall(page, logs);
      const mic = await page.evaluate(() => /** @type {any} */ (window).t.mic());
      assert.equal(mic.deviceId, input2, "the call opened the chosen microphone");
      const sinkOf = () =>
        page.evaluate(() => {
          const t = /** @type {any} */ (window).t;
          return { route: t.route, sinkId: t.element?.sinkId };
        });
      const routed = await waitFor(async () => ((await sinkOf()).sinkId === output1 ? sinkOf() : null), {
        what: `the <audio> element on the chosen speaker: ${JSON.stringify(await sinkOf())}`,
      });
      assert.equal(routed.route, "webrtc-loopback");

      // During the call: another speaker, then back to the default.
      await page.evaluate((o) => /** @type {any} */ (window).t.op.setOutputDevice(o), output2);
      assert.equal((await sinkOf()).sinkId, output2);
      await page.evaluate(() => /** @type {any} */ (window).t.op.setOutputDevice("default"));
      assert.equal((await sinkOf()).sinkId, "", "default is the element's default sink");
      assert.equal(await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall?.state), "active");
      assert.ok((await continuity(sid, 0)).tone > 0.9);
      await hangup(page);
    } finally {
      await page.close();
    }
  });

  test("audioDevicesChanged fires on devicechange while online, not after goOffline", async () => {
    const { page } = await operatorPage();
    try {
      const dispatch = () => page.evaluate(() => navigator.mediaDevices.dispatchEvent(new Event("devicechange")));
      const count = () => page.evaluate(() => /** @type {any} */ (window).t.devices.length);
      await dispatch();
      await sleep(200);
      assert.equal(await count(), 0, "not watched while offline before goOnline");
      await page.evaluate((id) => /** @type {any} */ (window).t.op.goOnline([id]), MILANO.id);
      await dispatch();
      await waitFor(async () => (await count()) === 1, { what: "audioDevicesChanged" });
      const [payload] = await page.evaluate(() => /** @type {any} */ (window).t.devices);
      assert.ok(payload.inputs.some((d) => d.label === "Fake Audio Input 1"), JSON.stringify(payload));
      assert.ok(payload.outputs.some((d) => d.label === "Fake Audio Output 1"), JSON.stringify(payload));
      await page.evaluate(() => /** @type {any} */ (window).t.op.goOffline());
      await dispatch();
      await sleep(300);
      assert.equal(await count(), 1, "the listener is removed once offline");
    } finally {
      await page.close();
    }
  });

  test("a lost microphone or speaker: AUDIO_DEVICE_LOST, the default device takes over, the call goes on", async () => {
    const { page, logs } = await operatorPage();
    try {
      const sid = await startCall(page, logs);
      const { input1, output1 } = await fakeDevices(page);
      await page.evaluate(
        async ([i, o]) => {
          const t = /** @type {any} */ (window).t;
          await t.op.setInputDevice(i);
          await t.op.setOutputDevice(o);
        },
        [input1, output1],
      );
      assert.equal((await page.evaluate(() => /** @type {any} */ (window).t.mic())).deviceId, input1);

      // 1. The track in use ends (unplugged): back to the default microphone.
      let heard = (await simRecording(base, sid)).samples.length;
      await page.evaluate(() => {
        const t = /** @type {any} */ (window).t;
        t.streams.at(-1).getAudioTracks()[0].dispatchEvent(new Event("ended"));
      });
      const [lost] = await waitForEvent(page, "error", { where: (e) => e.code === "AUDIO_DEVICE_LOST" });
      assert.match(lost.message, /microphone/);
      const mic = await waitFor(
        async () => {
          const m = await page.evaluate(() => /** @type {any} */ (window).t.mic());
          return m.deviceId === "default" ? m : null;
        },
        { what: "capture back on the default microphone" },
      );
      assert.equal(mic.state, "live");
      await sleep(800);
      let c = await continuity(sid, heard - 4000);
      console.log(`devices: after a lost microphone the far end's longest silence is ${c.gapMs.toFixed(1)} ms`);
      assert.ok(c.gapMs <= MAX_GAP_MS && c.tone > 0.9, `audio goes on after the loss: ${JSON.stringify(c)}`);

      // 2. The chosen microphone and speaker vanish from the list (devicechange).
      await page.evaluate((i) => /** @type {any} */ (window).t.op.setInputDevice(i), input1);
      heard = (await simRecording(base, sid)).samples.length;
      await page.evaluate(
        ([i, o]) => {
          const md = navigator.mediaDevices;
          const real = md.enumerateDevices.bind(md);
          md.enumerateDevices = async () => (await real()).filter((d) => d.deviceId !== i && d.deviceId !== o);
          md.dispatchEvent(new Event("devicechange"));
        },
        [input1, output1],
      );
      const errors = await waitForEvent(page, "error", { count: 3, where: (e) => e.code === "AUDIO_DEVICE_LOST" });
      assert.ok(errors.some((e) => /speaker/.test(e.message)), JSON.stringify(errors));
      await waitFor(async () => (await page.evaluate(() => /** @type {any} */ (window).t.mic())).deviceId === "default", {
        what: "the default microphone after the list lost the chosen one",
      });
      await waitFor(() => page.evaluate(() => /** @type {any} */ (window).t.element.sinkId === ""), {
        what: "the default speaker after the list lost the chosen one",
      });
      await sleep(800);
      c = await continuity(sid, heard - 4000);
      assert.ok(c.gapMs <= MAX_GAP_MS && c.tone > 0.9, `audio goes on: ${JSON.stringify(c)}`);
      const devices = await page.evaluate(() => /** @type {any} */ (window).t.devices);
      assert.ok(devices.length >= 1 && !devices.at(-1).inputs.some((d) => d.deviceId === input1), "the event carried the new list");
      assert.equal(await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall?.state), "active");
      assert.ok(await page.evaluate(() => /** @type {any} */ (window).t.oldTracksEnded()), "lost tracks released");
      await hangup(page);
    } finally {
      await page.close();
    }
  });
});
