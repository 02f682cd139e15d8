// HTTPS/WSS end to end in a real Chromium (issue 15, TLS): audin-server
// serves https and wss itself (`--tls-cert`, `--tls-key`, a test CA made
// here with openssl); the page comes from the server over https (a secure
// context, where getUserMedia is allowed), the SDK is given
// `coreUrl: "https://127.0.0.1:PORT"` and upgrades it to wss, goes online,
// takes a sim inbound call and hears its tone.
//
// Chromium trusts exactly our test leaf through
// --ignore-certificate-errors-spki-list (its SPKI's SHA-256), not by
// ignoring certificate errors wholesale.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { SDK_ROOT, browserSkipReason, launchBrowser, startAudinServer } from "./harness/index.mjs";
import { openOperatorPage, serverBinary, tapSamples, toneMedian, waitFor, waitForEvent } from "./sdk-support.mjs";

const OPENSSL = "/usr/bin/openssl";
const MILANO = { id: "pn_dev_milano", phoneNumber: "+390299999999" };
const SIM_TONE_HZ = 440;

function skipReason() {
  if (!existsSync(OPENSSL)) return `no ${OPENSSL}`;
  return browserSkipReason();
}

/** Runs openssl in `dir`; throws with its stderr on failure. */
function openssl(dir, args, input) {
  const r = spawnSync(OPENSSL, args, { cwd: dir, input, timeout: 30_000 });
  if (r.status !== 0) throw new Error(`openssl ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** A test CA and a leaf for 127.0.0.1 it signed; the leaf's SPKI pin. */
function makePki(dir) {
  writeFileSync(
    join(dir, "leaf.ext"),
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n" +
      "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
  );
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  openssl(dir, ["req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Audin Test CA"]);
  openssl(dir, ["req", ...ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1"]);
  openssl(dir, [
    "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
    "-set_serial", "4242", "-days", "2", "-extfile", "leaf.ext", "-out", "leaf.pem",
  ]);
  const pub = openssl(dir, ["x509", "-in", "leaf.pem", "-pubkey", "-noout"]);
  const der = openssl(dir, ["pkey", "-pubin", "-outform", "der"], pub);
  const spki = openssl(dir, ["dgst", "-sha256", "-binary"], der).toString("base64");
  return { cert: join(dir, "leaf.pem"), key: join(dir, "leaf.key"), spki };
}

describe("https and wss served by audin-server", { skip: skipReason() }, () => {
  let dir;
  let server;
  let browser;
  let base;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "audin-https-test-"));
    const pki = makePki(dir);
    server = await startAudinServer({
      binary: serverBinary(),
      args: [
        "--dev", "--listen", "127.0.0.1:0", "--database", ":memory:", "--static-dir", SDK_ROOT,
        // No --allowed-origins: --dev allows https://127.0.0.1:* too.
        "--tls-cert", pki.cert, "--tls-key", pki.key,
      ],
      readyPattern: /audin-server listening on (https?:\/\/[^\s/]+)/,
    });
    base = server.url;
    browser = await launchBrowser({ args: [`--ignore-certificate-errors-spki-list=${pki.spki}`] });
  });

  after(async () => {
    await browser?.close();
    await server?.kill();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("the SDK given an https coreUrl goes online over wss and hears an inbound call", { timeout: 60_000 }, async () => {
    assert.match(base, /^https:\/\/127\.0\.0\.1:\d+$/, "the server serves https");
    const sockets = [];
    const { page, logs } = await openOperatorPage(browser.context, base, {
      operatorRef: "https-op",
      config: { coreUrl: base },
    });
    page.on("websocket", (ws) => sockets.push(ws.url()));
    const ctx = () => `\nsockets: ${sockets.join(" ")}\npage console:\n${logs.join("\n")}`;
    const where = await page.evaluate(() => ({ secure: window.isSecureContext, protocol: location.protocol }));
    assert.deepEqual(where, { secure: true, protocol: "https:" }, "getUserMedia needs a secure context");

    await page.evaluate((id) => /** @type {any} */ (window).t.op.goOnline([id]), MILANO.id);
    await waitForEvent(page, "presenceStateChanged", { where: (s) => s === "online" }).catch((e) => {
      throw new Error(`${e.message}${ctx()}`);
    });
    await page.evaluate(() => {
      const t = /** @type {any} */ (window).t;
      t.op.on("incomingCall", (call) => call.accept());
    });
    // From the page: Node's fetch does not trust the test CA.
    const sid = await page.evaluate(async (to) => {
      const r = await fetch("/dev/sim/calls", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ from: "+14155550100", to }),
      });
      if (!r.ok) throw new Error(`POST /dev/sim/calls: ${r.status}`);
      return (await r.json()).callSid;
    }, MILANO.phoneNumber);
    const [started] = await waitForEvent(page, "callStarted");
    assert.equal(started.callSid, sid);

    // The sim's 440 Hz tone reaches the speakers (worklet tap).
    const tone = await waitFor(
      async () => {
        const play = await tapSamples(page, "playback", { last: 2 });
        if (play.samples.length === 0) return null;
        const t = toneMedian(play.samples, play.sampleRate, SIM_TONE_HZ);
        return t.share > 0.9 ? t : null;
      },
      { timeoutMs: 15_000, what: "the 440 Hz tone in playback" },
    ).catch((e) => {
      throw new Error(`${e.message}${ctx()}`);
    });
    assert.ok(tone.share > 0.9);

    // Every socket the SDK opened went over TLS: presence and audio.
    assert.ok(sockets.length >= 2, `presence and audio sockets${ctx()}`);
    for (const url of sockets) assert.match(url, /^wss:\/\/127\.0\.0\.1:\d+\/v1\//, `only wss${ctx()}`);

    await page.evaluate(() => /** @type {any} */ (window).t.op.currentCall.hangup());
    await waitForEvent(page, "callEnded");
  });
});
