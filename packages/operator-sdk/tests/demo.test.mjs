// The manual-test demo page (examples/operator-demo.html) as served by the
// dev server under /sdk/: list numbers, go online, take an inbound call,
// mute, DTMF, hang up, dial out. Saves a screenshot of the page during the
// active call to test-results/demo-active-call.png. Needs `npm run build`
// and a built audin-server.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { SDK_ROOT, browserSkipReason, collectConsole, launchBrowser } from "./harness/index.mjs";
import { simCall, simState, startServer, waitFor } from "./sdk-support.mjs";

const RESULTS = join(SDK_ROOT, "test-results");

describe("demo page", { skip: browserSkipReason() }, () => {
  let server;
  let browser;

  before(async () => {
    server = await startServer();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.kill();
  });

  test("inbound call, mute, DTMF, hang up, then dial out", async () => {
    const base = server.url;
    const page = browser.page;
    const logs = collectConsole(page);
    const log = () => page.textContent("#log-text");
    const context = async () => `\ndemo log:\n${await log()}\nconsole:\n${logs.join("\n")}`;

    await page.goto(`${base}/sdk/examples/operator-demo.html?operatorRef=demo-test`);
    assert.equal(await page.inputValue("#core-url"), base);
    assert.equal(await page.inputValue("#token-url"), "/api/operator/token");
    await page.click("#list");
    await page.waitForSelector("#number:not([disabled])");
    await page.selectOption("#number", "pn_dev_milano");
    await page.click("#online");
    await page.waitForSelector("#presence.online");
    await page.waitForFunction(() => document.getElementById("log-text")?.textContent?.includes("online on pn_dev_milano"));

    const sid = await simCall(base, { to: "+390299999999" });
    await page.waitForSelector("#accept:not([disabled])");
    assert.match(await page.textContent("#call-box"), /\+14155550100/);
    await page.click("#accept");
    await page.waitForSelector('#call-state[data-state="active"]');
    await page.click("#mute");
    await page.waitForSelector('#mute[aria-pressed="true"]');
    await page.click("#mute");
    await page.waitForSelector('#mute[aria-pressed="false"]');
    await page.click("#keypad >> text=5");
    await waitFor(async () => (await simState(base, sid)).dtmf === "5", { what: "the sim to hear DTMF 5" });

    mkdirSync(RESULTS, { recursive: true });
    await page.screenshot({ path: join(RESULTS, "demo-active-call.png"), fullPage: true });

    await page.click("#hangup");
    await page.waitForSelector('#call-state[data-state="ended"]');
    assert.match(await log(), /call ended .*: hangup/, await context());

    await page.fill("#dial-to", "+15550100002");
    await page.click("#dial");
    await page.waitForSelector('#call-state[data-state="active"]');
    assert.match(await page.textContent("#call-box"), /to \+15550100002/);
    await page.click("#hangup");
    await page.waitForSelector('#call-state[data-state="ended"]');
    await page.click("#offline");
    await page.waitForSelector("#presence.offline");
    assert.doesNotMatch(await log(), /failed|error|unhandled/, await context());
  });
});
