// `AudinOperator.preflight()` (issue 14, item 5) in a real Chromium against
// audin-server --dev: a clean path is excellent or good with every figure
// measured and the fake microphone's signal seen; the dev-only preflight
// impairment (loss and jitter on the echo) makes it fair or poor with the
// matching reasons; an unreachable service gives verdict `failed` with
// reasons instead of a rejection; invalid arguments reject with
// INVALID_CONFIG. Each preflight runs 4 s. Needs `npm run build` and a
// built audin-server.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { browserSkipReason, launchBrowser } from "./harness/index.mjs";
import { UMD_PATH, startServer } from "./sdk-support.mjs";

const DURATION_MS = 4_000;

describe("preflight", { skip: browserSkipReason() }, () => {
  let server;
  let base;
  let browser;
  let page;
  const logs = [];

  before(async () => {
    server = await startServer();
    base = server.url;
    // Chromium's default fake microphone: a beep every second.
    browser = await launchBrowser();
    page = await browser.context.newPage();
    page.on("console", (m) => logs.push(`[${m.type()}] ${m.text()}`));
    page.on("pageerror", (e) => logs.push(`[pageerror] ${e.stack ?? e.message}`));
    await page.goto(`${base}/healthz`);
    await page.addScriptTag({ url: `${base}${UMD_PATH}` });
  });

  after(async () => {
    await browser?.close();
    await server?.kill();
  });

  /** Runs a preflight in the page; `coreUrl` defaults to the server, getToken to its dev token endpoint. */
  async function preflight(options = {}) {
    const started = Date.now();
    const result = await page.evaluate(async (o) => {
      const { AudinOperator } = /** @type {any} */ (window).AudinOperatorSDK;
      const getToken = o.fakeToken
        ? async () => ({ token: "not-a-real-token" })
        : async () => {
            const r = await fetch("/api/operator/token", {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: JSON.stringify({ operatorRef: "preflight-op" }),
            });
            return r.json();
          };
      try {
        const report = await AudinOperator.preflight({ coreUrl: o.coreUrl ?? location.origin, getToken, durationMs: o.durationMs });
        return { report };
      } catch (e) {
        return { error: { name: e.name, code: e.code, message: e.message } };
      }
    }, options);
    return { ...result, ms: Date.now() - started };
  }

  async function impair(body) {
    const r = await fetch(`${base}/dev/sim/preflight/impair`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    assert.equal(r.status, 200, await r.text());
  }

  const codes = (report) => report.reasons.map((r) => r.code);

  test("a clean path is excellent or good, every figure measured, nobody left online", async () => {
    const { report, error, ms } = await preflight({ durationMs: DURATION_MS });
    assert.equal(error, undefined, JSON.stringify(error));
    console.log(`preflight clean (${ms} ms): ${JSON.stringify(report)}`);
    assert.ok(["excellent", "good"].includes(report.verdict), `${JSON.stringify(report)}\n${logs.join("\n")}`);
    for (const k of ["tokenFetchMs", "presenceRttMs", "rttMs", "jitterMs", "packetLossPercent", "mos"]) {
      assert.equal(typeof report[k], "number", `${k}: ${JSON.stringify(report)}`);
    }
    assert.equal(report.microphoneSignal, true, "the fake microphone's beeps are signal");
    // 4 s of 20 ms frames, all echoed (the graph needs a moment to start).
    assert.ok(report.framesSent >= 120 && report.framesSent <= 205, `framesSent ${report.framesSent}`);
    assert.ok(report.framesReceived >= report.framesSent - 3, `${report.framesReceived} of ${report.framesSent} echoed`);
    assert.ok(report.mos >= 4.0, `mos ${report.mos}`);
    assert.ok(ms < DURATION_MS + 5_000, `took ${ms} ms`);
    // Nothing stays behind: no operator online, no socket open.
    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, /^audin_operators_online 0$/m);
    await waitForNoSockets();
  });

  async function waitForNoSockets() {
    for (let i = 0; i < 30; i++) {
      const m = await (await fetch(`${base}/metrics`)).text();
      const open = [...m.matchAll(/^audin_sockets_open\{[^}]*\} (\d+)$/gm)].reduce((a, x) => a + Number(x[1]), 0);
      if (open === 0) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.fail("sockets still open after the preflight");
  }

  test("an impaired path (5 % loss, 60 ms jitter on the echo) is fair or poor, with its reasons", async () => {
    await impair({ lossPercent: 5, jitterMs: 60, seed: 7 });
    try {
      const { report, error } = await preflight({ durationMs: DURATION_MS });
      assert.equal(error, undefined, JSON.stringify(error));
      console.log(`preflight impaired: ${JSON.stringify(report)}`);
      assert.ok(["fair", "poor"].includes(report.verdict), JSON.stringify(report));
      assert.ok(codes(report).includes("high-packet-loss"), JSON.stringify(report.reasons));
      assert.ok(report.packetLossPercent >= 2 && report.packetLossPercent <= 10, `loss ${report.packetLossPercent}`);
      assert.ok(report.jitterMs > 5, `jitter ${report.jitterMs}`);
      for (const r of report.reasons) assert.notEqual(r.verdict, "failed", JSON.stringify(r));
    } finally {
      await impair({});
    }
  });

  test("an unreachable service gives verdict failed with reasons, not a rejection", async () => {
    const { report, error, ms } = await preflight({ coreUrl: "http://127.0.0.1:9", fakeToken: true, durationMs: DURATION_MS });
    assert.equal(error, undefined, JSON.stringify(error));
    assert.equal(report.verdict, "failed", JSON.stringify(report));
    assert.deepEqual(codes(report), ["presence-unreachable", "audio-unreachable"]);
    assert.ok(report.reasons.every((r) => r.verdict === "failed" && r.message.length > 0), JSON.stringify(report.reasons));
    assert.equal(report.rttMs, null);
    assert.ok(ms < 6_000, `took ${ms} ms`);
  });

  test("a refused token gives verdict failed with token-rejected", async () => {
    const { report } = await preflight({ fakeToken: true, durationMs: DURATION_MS });
    assert.equal(report.verdict, "failed", JSON.stringify(report));
    assert.deepEqual(codes(report), ["token-rejected"]);
    assert.equal(typeof report.presenceRttMs, "number", "the presence round trip needs no valid token");
  });

  test("invalid arguments reject with INVALID_CONFIG", async () => {
    for (const o of [{ coreUrl: "not a url" }, { durationMs: 100 }, { durationMs: 60_000 }, { coreUrl: "ftp://x" }]) {
      const { error } = await preflight(o);
      assert.equal(error?.code, "INVALID_CONFIG", `${JSON.stringify(o)}: ${JSON.stringify(error)}`);
      assert.equal(error?.name, "OperatorRequestError");
    }
  });
});
