// The demo console (examples/operator-demo.html) as served by the dev server
// under /sdk/, driven like a newcomer would: list numbers, go online, see
// Chromium's fake devices in the pickers, choose devices, dial out, ring the
// page with the dev sim panel and take the call, switch microphone, watch
// the level meters and the quality panel, send DTMF from the keypad (and the
// keyboard), make the dev sim's network slow until the quality warning
// shows and clean again until it goes, mute, hang up, find both calls in
// the call log (newest first), and run the preflight button. Saves a screenshot of
// the active call to test-results/demo-active-call.png, and to
// docs/images/operator-console.png (the package README shows it) when that
// is missing or AUDIN_UPDATE_SCREENSHOTS=1. Needs `npm run build` and a
// built audin-server.

import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { REPO_ROOT, SDK_ROOT, browserSkipReason, collectConsole, launchBrowser, makeToneWav } from "./harness/index.mjs";
import { simState, startServer, waitFor } from "./sdk-support.mjs";

const RESULTS = join(SDK_ROOT, "test-results");
const DOC_IMAGE = join(REPO_ROOT, "docs", "images", "operator-console.png");
const CALLER = "+14155550100";
const MILANO = "+390299999999";

describe("demo console", { skip: browserSkipReason() }, () => {
  let server;
  let browser;
  let dir;

  before(async () => {
    server = await startServer();
    dir = mkdtempSync(join(tmpdir(), "audin-demo-test-"));
    // A steady tone as the microphone, so the input meter has something to show.
    browser = await launchBrowser({ wavPath: makeToneWav(join(dir, "mic.wav"), { freqHz: 600, seconds: 30, amplitude: 0.3 }) });
  });

  after(async () => {
    await browser?.close();
    await server?.kill();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Opens the console online on Milano; returns helpers. */
  async function openConsole(page, operatorRef) {
    const logs = collectConsole(page);
    const log = () => page.textContent("#log-text");
    const context = async () => `\ndemo log:\n${await log()}\nconsole:\n${logs.join("\n")}`;
    // Bounded: no step of a working console takes more than a few seconds.
    page.setDefaultTimeout(10_000);
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.goto(`${server.url}/sdk/examples/operator-demo.html?operatorRef=${operatorRef}`);
    assert.equal(await page.inputValue("#core-url"), server.url);
    assert.equal(await page.inputValue("#token-url"), "/api/operator/token");
    return { log, context };
  }

  async function goOnline(page) {
    await page.click("#list");
    await page.waitForSelector("#number:not([disabled])");
    await page.selectOption("#number", "pn_dev_milano");
    await page.click("#online");
    await page.waitForSelector("#presence.online");
    await page.waitForFunction(() => document.getElementById("log-text")?.textContent?.includes("online on pn_dev_milano"));
  }

  /** The call log's rows, newest first, as arrays of cell texts. */
  const callLog = (page) =>
    page.$$eval("#call-log tr", (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent.trim())));

  test("calls through the console: devices, dial out, then an inbound call with meters, quality warnings, keypad; the call log", async () => {
    const base = server.url;
    const page = browser.page;
    const { log, context } = await openConsole(page, "demo-test");
    await goOnline(page);

    // The device pickers list Chromium's fake devices (with names: the fake
    // media UI grants the microphone, so labels are not hidden).
    const options = (id) => page.$$eval(`#${id} option`, (os) => os.map((o) => o.textContent));
    await page.waitForFunction(() => document.querySelectorAll("#mic-select option").length > 1, null, { timeout: 10_000 });
    assert.ok((await options("mic-select")).includes("Fake Audio Input 1"), String(await options("mic-select")));
    assert.ok((await options("speaker-select")).includes("Fake Audio Output 1"), String(await options("speaker-select")));
    assert.equal(await page.getAttribute("#mic-meter", "data-level"), "0");
    // Choosing devices before a call (the SDK remembers them for the calls).
    const logged = (text) => page.waitForFunction((t) => document.getElementById("log-text")?.textContent?.includes(t), text, { timeout: 10_000 });
    await page.selectOption("#mic-select", { label: "Fake Audio Input 1" });
    await logged("microphone: Fake Audio Input 1");
    await page.selectOption("#speaker-select", { label: "Fake Audio Output 1" });
    await logged("speaker: Fake Audio Output 1");

    // Text from the user or the service is shown as text, never as markup:
    // the SDK's INVALID_NUMBER message echoes this input into the log.
    await page.fill("#dial-to", '<img id="injected" src="x">');
    await page.click("#dial");
    await page.waitForFunction(() => /dial failed: INVALID_NUMBER/.test(document.getElementById("log-text")?.textContent ?? ""));
    assert.equal(await page.$("#injected"), null, "markup from the input reached the DOM");
    assert.match(await log(), /<img id=\\?"injected\\?"/);
    await page.click("#clear");

    // A short call out first (the sim's tone number), so the call log has a row.
    await page.fill("#dial-to", "+15550100002");
    await page.click("#dial");
    await page.waitForSelector('#call-state[data-state="active"]');
    assert.match(await page.textContent("#call-box"), /to \+15550100002/);
    await page.click("#hangup");
    await page.waitForSelector('#call-state[data-state="ended"]');
    let rows = await callLog(page);
    assert.equal(rows.length, 1, JSON.stringify(rows));
    assert.deepEqual([rows[0][0].includes("outbound"), rows[0][1], rows[0][4]], [true, "+15550100002", "hangup"]);

    // The dev sim panel rings the page (a number it is online on is preselected).
    assert.equal(await page.inputValue("#sim-to"), MILANO);
    await page.fill("#sim-from", CALLER);
    await page.selectOption("#sim-behaviour", "tone");
    await page.click("#sim-ring");
    await page.waitForSelector("#accept:not([disabled])");
    const sid = (await page.textContent("#call-box .sid"))?.trim() ?? "";
    assert.match(sid, /^CA\w+$/);
    await logged(`sim call ${sid} from ${CALLER} to ${MILANO}`);
    assert.match(await page.textContent("#call-box"), new RegExp(`from \\${CALLER}`));
    assert.match(await page.textContent("#status"), /Ringing/);
    await page.click("#accept");
    await page.waitForSelector('#call-state[data-state="active"]');

    // Meters: the fake tone microphone and the sim's 440 Hz tone.
    await page.waitForFunction(
      () =>
        Number(document.getElementById("mic-meter")?.dataset.level) > 0 &&
        Number(document.getElementById("speaker-meter")?.dataset.level) > 0,
      null,
      { timeout: 10_000 },
    );
    // Another microphone mid-call: the call goes on and the meter keeps moving.
    await page.selectOption("#mic-select", { label: "Fake Audio Input 2" });
    await logged("microphone: Fake Audio Input 2");
    await page.evaluate(() => document.getElementById("mic-meter")?.setAttribute("data-level", "0"));
    await page.waitForFunction(() => Number(document.getElementById("mic-meter")?.dataset.level) > 0, null, { timeout: 5_000 });
    assert.equal(await page.getAttribute("#call-state", "data-state"), "active");

    // Quality: a MOS number after the first second.
    await page.waitForFunction(() => /^\d\.\d\d$/.test(document.getElementById("mos")?.textContent ?? ""), null, { timeout: 10_000 });
    assert.match(await page.textContent("#stat-loss"), /^\d+\.\d %$/);

    // Keypad and keyboard digits reach the far end.
    await page.click("#keypad >> text=5");
    await page.click("#log-text"); // focus on no field: typed digits are DTMF
    await page.keyboard.press("#");
    await waitFor(async () => (await simState(base, sid)).dtmf === "5#", { what: "the sim to hear DTMF 5#" });
    assert.equal(await page.textContent("#dtmf-sent"), "5#");

    await page.click("#mute");
    await page.waitForSelector('#mute[aria-pressed="true"]');
    await page.click("#mute");
    await page.waitForSelector('#mute[aria-pressed="false"]');

    // A slow network (the dev sim holds the audio socket's pongs 600 ms)
    // raises the round-trip warning, with its value and threshold; a clean
    // one removes it again. (Round trip rather than jitter or loss: the sim
    // controls it exactly, while a loaded CI machine adds jitter and loss
    // of its own.)
    await page.selectOption("#sim-impair", "rtt");
    await page.click("#sim-apply");
    const warning = await page.waitForSelector('#warnings li[data-name="high-rtt"]', { timeout: 15_000 }).catch(async (e) => {
      throw new Error(`${e.message}${await context()}`);
    });
    assert.match(await warning.textContent(), /high-rtt: 6\d\d ms \(threshold 400 ms\)/);

    mkdirSync(RESULTS, { recursive: true });
    mkdirSync(join(REPO_ROOT, "docs", "images"), { recursive: true });
    const shot = join(RESULTS, "demo-active-call.png");
    await page.screenshot({ path: shot, fullPage: true });
    // The docs' copy only when asked for (or missing): a fresh PNG on every
    // test run would leave the tracked image modified after each run.
    if (process.env.AUDIN_UPDATE_SCREENSHOTS === "1" || !existsSync(DOC_IMAGE)) copyFileSync(shot, DOC_IMAGE);

    await page.selectOption("#sim-impair", "clean");
    await page.click("#sim-apply");
    await page.waitForSelector('#warnings li[data-name="high-rtt"]', { state: "detached", timeout: 15_000 });

    await page.click("#hangup");
    await page.waitForSelector('#call-state[data-state="ended"]');
    assert.match(await log(), /call ended .*: hangup/, await context());
    assert.equal(await page.getAttribute("#mic-meter", "data-level"), "0", "meters rest after the call");
    rows = await callLog(page);
    assert.equal(rows.length, 2, JSON.stringify(rows));
    assert.match(rows[0][0], /inbound/, "newest first");
    assert.equal(rows[0][1], CALLER);
    assert.match(rows[0][3], /^0:(0[5-9]|[1-5]\d)$/, "the talk time");
    assert.equal(rows[0][4], "hangup");
    assert.match(rows[0][5], /high-rtt/, "the call log keeps the call's warnings");
    assert.equal(rows[1][1], "+15550100002");

    await page.click("#offline");
    await page.waitForSelector("#presence.offline");
    assert.doesNotMatch(await log(), /failed|error|unhandled/, await context());
  });

  test("the preflight button shows a verdict with its reasons while the page stays online (or says it is not available)", async () => {
    const page = await browser.context.newPage();
    try {
      const { log, context } = await openConsole(page, "demo-preflight");
      const available = await page.evaluate(() => typeof (/** @type {any} */ (window).AudinOperatorSDK.AudinOperator.preflight) === "function");
      await page.selectOption("#preflight-duration", "5000");
      if (!available) {
        await page.click("#preflight-run");
        await page.waitForFunction(() => /not available/.test(document.getElementById("preflight-result")?.textContent ?? ""), null, { timeout: 5_000 });
        return;
      }
      await goOnline(page);
      // A slow path (the dev sim holds the echo socket's pongs), so the
      // report has a reason to show.
      const impair = (body) =>
        fetch(`${server.url}/dev/sim/preflight/impair`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      assert.equal((await impair({ rttMs: 600 })).status, 200);
      await page.click("#preflight-run");
      assert.ok(await page.isDisabled("#preflight-run"), "one preflight at a time");
      // Settles within durationMs + 25 s at the latest (the SDK's bound).
      const verdict = await page.waitForSelector("#preflight-verdict", { timeout: 30_000 }).catch(async (e) => {
        throw new Error(`${e.message}${await context()}`);
      });
      await impair({});
      const result = await page.textContent("#preflight-result");
      // A local dev server is reachable and echoes: slow, but not "failed".
      assert.match(await verdict.textContent(), /^(excellent|good|fair|poor)$/, `${result}${await context()}`);
      assert.match(result, /MOS\s*\d\.\d\d/);
      assert.match(result, /Token fetch\s*\d+ ms/);
      const reasons = await page.$$eval("#preflight-reasons li", (li) => li.map((x) => x.textContent));
      assert.ok(
        reasons.some((r) => /^high-rtt — (fair|poor): 6\d\d ms \(threshold \d+ ms\)$/.test(r)),
        `the slow round trip as a reason with its value and threshold: ${JSON.stringify(reasons)}`,
      );
      assert.ok(!(await page.isDisabled("#preflight-run")));
      // The preflight did not replace this page's session.
      assert.equal(await page.textContent("#presence"), "online");
      assert.doesNotMatch(await log(), /REPLACED|failed|error|unhandled/, await context());
    } finally {
      await page.close();
    }
  });
});
