#!/usr/bin/env node
// What one call costs the page's main thread: @audin.ai/operator-sdk in
// headless Chromium against `audin-server --dev`, the sim's echo as the far
// end (issue 16: "the SDK's main-thread CPU per active call").
//
//   node packages/operator-sdk/bench/main-thread-cpu.mjs [--seconds 20] [--repeat 3]
//
// Needs the built SDK (dist/) and a built audin-server (target/debug or
// target/release, or $AUDIN_SERVER_BIN). Prints one JSON document.
//
// Method: a plain page (no test hooks) loads the UMD bundle and goes online
// with the SDK's defaults (echo-safe playback route). Chromium's own
// accounting of the page's main thread (DevTools `Performance.getMetrics`:
// `TaskDuration`, all tasks; `ScriptDuration`, JavaScript) is read at the
// edges of two windows of the same length: online and idle, then in a call
// (the sim echoes the fake microphone's tone, so frames flow both ways at
// 50 a second). The call's cost is the difference per second of call. The
// AudioWorklet runs on its own thread and is not counted here; nor is the
// WebRTC loopback of the echo-safe route, which runs off the main thread.

import { parseArgs } from "node:util";

import { launchBrowser } from "../tests/harness/index.mjs";
import { UMD_PATH, simCall, sleep, startServer } from "../tests/sdk-support.mjs";

const MILANO = { id: "pn_dev_milano", phoneNumber: "+390299999999" };

/** Main-thread task and script time so far, seconds. */
async function mainThread(cdp) {
  const { metrics } = await cdp.send("Performance.getMetrics");
  const get = (name) => metrics.find((m) => m.name === name)?.value ?? 0;
  return { task: get("TaskDuration"), script: get("ScriptDuration") };
}

/** Main-thread ms per second over `seconds` from now. */
async function measure(cdp, seconds) {
  const a = await mainThread(cdp);
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const b = await mainThread(cdp);
  const dt = (performance.now() - t0) / 1000;
  return { taskMsPerS: ((b.task - a.task) * 1000) / dt, scriptMsPerS: ((b.script - a.script) * 1000) / dt };
}

async function once(context, base, seconds) {
  const page = await context.newPage();
  await page.goto(`${base}/healthz`);
  await page.addScriptTag({ url: `${base}${UMD_PATH}` });
  await page.evaluate(async (id) => {
    const w = /** @type {any} */ (window);
    const op = new w.AudinOperatorSDK.AudinOperator({
      coreUrl: location.origin,
      getToken: async () => {
        const r = await fetch("/api/operator/token", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ operatorRef: "cpu-bench", displayName: "CPU bench" }),
        });
        return r.json();
      },
    });
    w.started = new Promise((ok) => op.on("callStarted", ok));
    op.on("incomingCall", (call) => call.accept());
    await op.goOnline([id]);
    w.op = op;
  }, MILANO.id);
  const cdp = await context.newCDPSession(page);
  await cdp.send("Performance.enable", { timeDomain: "threadTicks" });
  await sleep(2000);
  const idle = await measure(cdp, seconds);
  await simCall(base, { to: MILANO.phoneNumber, behaviour: "echo" });
  await page.evaluate(() => /** @type {any} */ (window).started);
  await sleep(2000);
  const call = await measure(cdp, seconds);
  await page.evaluate(() => /** @type {any} */ (window).op.goOffline());
  await page.close();
  return {
    idle,
    call,
    perCallMsPerS: call.taskMsPerS - idle.taskMsPerS,
    scriptPerCallMsPerS: call.scriptMsPerS - idle.scriptMsPerS,
  };
}

const { values } = parseArgs({
  options: { seconds: { type: "string", default: "20" }, repeat: { type: "string", default: "3" } },
});
const server = await startServer();
const browser = await launchBrowser({});
try {
  const runs = [];
  for (let i = 0; i < Number(values.repeat); i++) {
    runs.push(await once(browser.context, server.url, Number(values.seconds)));
    process.stderr.write(`main-thread-cpu: run ${i + 1}: ${runs.at(-1).perCallMsPerS.toFixed(2)} ms per call-second\n`);
  }
  const chromium = browser.context.browser()?.version() ?? "";
  console.log(JSON.stringify({ chromium, seconds: Number(values.seconds), runs }, null, 2));
} finally {
  await browser.close();
  await server.kill();
}
