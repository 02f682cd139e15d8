// Presence end to end in Chromium: reconnection across a server restart
// (availability re-announced), session tokens refreshed before they expire,
// and an expired token replaced by a fresh one. Needs `npm run build` and a
// built audin-server.

import assert from "node:assert/strict";
import { createServer } from "node:net";
import { after, before, describe, test } from "node:test";

import { browserSkipReason, launchBrowser } from "./harness/index.mjs";
import { eventNames, openOperatorPage, seen, sleep, startServer, waitFor, waitForEvent } from "./sdk-support.mjs";

const MILANO = "pn_dev_milano";
const FAST_BACKOFF = { reconnectBackoffMs: [200, 500, 1000] };

/** A loopback port that was free a moment ago. */
async function freePort() {
  const s = createServer();
  await new Promise((ok) => s.listen(0, "127.0.0.1", ok));
  const { port } = /** @type {import("node:net").AddressInfo} */ (s.address());
  await new Promise((ok) => s.close(ok));
  return port;
}

describe("presence", { skip: browserSkipReason() }, () => {
  let browser;

  before(async () => {
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
  });

  test("server restart: reconnecting, then online with availability re-announced", async () => {
    const port = await freePort();
    let server = await startServer({ port });
    try {
      const base = server.url;
      const { page, logs } = await openOperatorPage(browser.context, base, { operatorRef: "presence-restart", config: FAST_BACKOFF });
      await page.evaluate((id) => /** @type {any} */ (window).t.op.goOnline([id]), MILANO);
      assert.equal(await page.evaluate(() => /** @type {any} */ (window).t.op.state), "online");
      assert.equal((await seen(page, "availabilityChanged")).length, 1);

      await server.kill();
      await waitForEvent(page, "presenceStateChanged", { where: (s) => s === "reconnecting" });
      assert.equal(await page.evaluate(() => /** @type {any} */ (window).t.op.state), "reconnecting");
      await sleep(1500); // a few failed attempts while the service is down
      server = await startServer({ port });

      await waitForEvent(page, "availabilityChanged", { count: 2, timeoutMs: 15_000 });
      const states = await seen(page, "presenceStateChanged");
      assert.deepEqual(states.slice(0, 2), ["connecting", "online"]);
      assert.equal(states[2], "reconnecting");
      assert.equal(states.at(-1), "online", `states: ${states.join(" → ")}\n${logs.join("\n")}`);
      assert.ok(!states.slice(2).includes("offline"), "never offline while reconnecting");
      const [, again] = await seen(page, "availabilityChanged");
      assert.deepEqual(again, { accepted: [MILANO], rejected: [] });
      const errors = await seen(page, "error");
      assert.ok(errors.length >= 1, "the loss was reported as an error event");
      for (const e of errors) assert.match(e.code, /^[A-Z_]+$/);

      await page.close();
    } finally {
      await server.kill();
    }
  });

  describe("tokens", () => {
    let server;
    let base;

    before(async () => {
      // Tokens that live 4 s: the SDK must refresh them on the live socket.
      server = await startServer({ args: ["--token-ttl-secs", "4"] });
      base = server.url;
    });

    after(async () => {
      await server?.kill();
    });

    test("tokens are refreshed before they expire; the session stays up", async () => {
      const { page, logs } = await openOperatorPage(browser.context, base, { operatorRef: "presence-refresh" });
      await page.evaluate((id) => /** @type {any} */ (window).t.op.goOnline([id]), MILANO);
      await sleep(9000); // more than two lifetimes
      const tokens = await page.evaluate(() => /** @type {any} */ (window).t.tokens);
      assert.ok(tokens >= 3, `getToken called ${tokens} times in 9 s with a 4 s token lifetime`);
      const names = await eventNames(page);
      const states = await seen(page, "presenceStateChanged");
      assert.deepEqual(states, ["connecting", "online"], `no reconnect: ${names.join(", ")}\n${logs.join("\n")}`);
      assert.deepEqual(await seen(page, "error"), []);
      // The session still works: an outbound call (its audio leg authenticates
      // with yet another fresh token).
      await page.evaluate(() => /** @type {any} */ (window).t.op.dial("+15550100001", { callerId: "+390299999999" }));
      await waitForEvent(page, "callStarted");
      await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall.hangup());
      await waitForEvent(page, "callEnded");
      await page.close();
    });

    test("an expired token is replaced by a fresh one", async () => {
      const stale = await (
        await fetch(`${base}/api/operator/token`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ operatorRef: "presence-expired" }),
        })
      ).json();
      await sleep(5000); // let it expire
      const { page, logs } = await openOperatorPage(browser.context, base, {
        operatorRef: "presence-expired",
        config: FAST_BACKOFF,
      });
      await page.evaluate((stale) => {
        /** @type {any} */ (window).t.tokenHook = (n) => (n === 1 ? stale : undefined);
      }, stale);
      await page.evaluate((id) => /** @type {any} */ (window).t.op.goOnline([id]), MILANO);
      assert.equal(await page.evaluate(() => /** @type {any} */ (window).t.op.state), "online");
      const tokens = await page.evaluate(() => /** @type {any} */ (window).t.tokens);
      assert.ok(tokens >= 2, `a fresh token was fetched (${tokens} getToken calls)\n${logs.join("\n")}`);
      const errors = await seen(page, "error");
      assert.ok(
        errors.some((e) => e.code === "TOKEN_EXPIRED"),
        `TOKEN_EXPIRED reported: ${JSON.stringify(errors)}`,
      );
      await page.close();
    });
  });

  test("getToken failures are reported and retried", async () => {
    const server = await startServer();
    try {
      const { page } = await openOperatorPage(browser.context, server.url, {
        operatorRef: "presence-token-fail",
        config: FAST_BACKOFF,
      });
      await page.evaluate(() => {
        /** @type {any} */ (window).t.tokenHook = (n) => {
          if (n <= 2) throw new Error("backend down");
          return undefined;
        };
      });
      await page.evaluate((id) => /** @type {any} */ (window).t.op.goOnline([id]), MILANO);
      assert.equal(await page.evaluate(() => /** @type {any} */ (window).t.op.state), "online");
      const codes = (await seen(page, "error")).map((e) => e.code);
      assert.ok(codes.includes("TOKEN_FETCH_FAILED"), codes.join(", "));
      await waitFor(() => page.evaluate(() => /** @type {any} */ (window).t.tokens >= 3), { what: "third getToken" });
      await page.close();
    } finally {
      await server.kill();
    }
  });
});
