// The package as integrators get it: the README's Quick start from a plain
// <script> tag (UMD), a consumer .ts type-checked under --strict against
// dist/index.d.ts, and the `npm pack` tarball installed into a fresh folder
// and bundled with esbuild. Needs `npm run build` (and a built audin-server
// for the browser part).

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { SDK_ROOT, browserSkipReason, launchBrowser, startStaticServer } from "./harness/index.mjs";
import { startServer, waitFor } from "./sdk-support.mjs";

const bin = (name) => join(SDK_ROOT, "node_modules", ".bin", name);
const tmp = (what) => mkdtempSync(join(tmpdir(), `audin-sdk-${what}-`));

function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8", env: { ...process.env, npm_config_update_notifier: "false" } });
  if (r.error) throw r.error;
  return r;
}

/**
 * The README's Quick start, verbatim but for the global (UMD), the service
 * URL and the token endpoint (the page is served from another local origin,
 * like `npx serve .`, so both are absolute). `midCall` runs after `dial()`
 * resolves; the README calls mute / sendDtmf / hangup right away.
 */
function quickStartPage(base, { midCall }) {
  return `<!doctype html><meta charset="utf-8"><title>quick start</title>
<script src="/dist/audin-operator-sdk.umd.cjs"></script>
<script>
window.log = [];
(async () => {
  const { AudinOperator } = AudinOperatorSDK;
  const op = new AudinOperator({
    coreUrl: "${base}",
    getToken: async () => {
      const r = await fetch("${base}/api/operator/token", { method: "POST" });
      return r.json(); // { token, expiresAt? }
    },
  });
  op.on("incomingCall", (call) => { log.push("ringing from " + call.from); call.accept(); });
  op.on("callStarted", (call) => { log.push("connected: " + call.callSid + " " + call.direction); });
  op.on("callEnded", (call) => { log.push("ended: " + call.callSid + " reason: " + call.endReason); });
  op.on("error", (e) => log.push("error " + e.code + " " + e.message));
  const numbers = await op.listPhoneNumbers();
  const mine = numbers[0];
  await op.goOnline([mine.id]);
  const call = await op.dial("+15550100001", { callerId: mine.phoneNumber });
  ${midCall}
  call.mute(true);
  call.mute(false);
  call.sendDtmf("5");
  call.hangup();
  await op.goOffline();
  window.done = { ok: true, state: op.state, call: { sid: call.callSid, state: call.state, endReason: call.endReason } };
})().catch((e) => { window.done = { ok: false, error: String(e && e.code) + ": " + (e && e.message) }; });
</script>`;
}

describe("UMD bundle in a plain <script> tag", { skip: browserSkipReason() }, () => {
  let server;
  let pages;
  let browser;

  before(async () => {
    server = await startServer();
    pages = await startStaticServer({
      pages: {
        "/__test__/quickstart.html": quickStartPage(server.url, { midCall: "" }),
        "/__test__/quickstart-answered.html": quickStartPage(server.url, {
          midCall: 'await new Promise((ok) => (call.state === "active" ? ok() : op.once("callStarted", ok)));',
        }),
      },
    });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await pages?.close();
    await server?.kill();
  });

  async function runQuickStart(path) {
    const page = await browser.context.newPage();
    const consoleLines = [];
    page.on("console", (m) => consoleLines.push(m.text()));
    page.on("pageerror", (e) => consoleLines.push(`[pageerror] ${e.message}`));
    await page.goto(`${pages.url}${path}`);
    const done = await waitFor(() => page.evaluate(() => /** @type {any} */ (window).done), {
      timeoutMs: 15_000,
      what: "the Quick start to finish",
    }).catch(async (e) => {
      const log = await page.evaluate(() => /** @type {any} */ (window).log);
      throw new Error(`${e.message}\nlog: ${JSON.stringify(log)}\nconsole:\n${consoleLines.join("\n")}`);
    });
    const log = await page.evaluate(() => /** @type {any} */ (window).log);
    const context = `\nlog: ${JSON.stringify(log)}\nconsole:\n${consoleLines.join("\n")}`;
    await page.close();
    assert.equal(done.ok, true, `${done.error}${context}`);
    assert.equal(done.state, "offline");
    assert.equal(done.call.state, "ended", context);
    assert.equal(done.call.endReason, "hangup", context);
    assert.ok(log.some((l) => l.startsWith("ended: ") && l.endsWith("reason: hangup")), context);
    assert.ok(!log.some((l) => l.startsWith("error ")), context);
  }

  test("runs the README's Quick start once the call is answered (cross-origin page)", () =>
    runQuickStart("/__test__/quickstart-answered.html"));

  // The core holds DTMF sent while the audio leg attaches and sends it on
  // attach, so the seed's Quick start works as written.
  test("runs the README's Quick start verbatim (sendDtmf right after dial resolves)", () =>
    runQuickStart("/__test__/quickstart.html"));
});

test("a consumer .ts type-checks under --strict against dist/index.d.ts", () => {
  const dir = tmp("tsc");
  try {
    mkdirSync(join(dir, "node_modules", "@audin.ai"), { recursive: true });
    symlinkSync(SDK_ROOT, join(dir, "node_modules", "@audin.ai", "operator-sdk"), "dir");
    writeFileSync(
      join(dir, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2020",
          lib: ["ES2020", "DOM"],
          module: "ESNext",
          moduleResolution: "Bundler",
          strict: true,
          noEmit: true,
          types: [],
          skipLibCheck: false,
        },
        files: ["consumer.ts"],
      }),
    );
    writeFileSync(
      join(dir, "consumer.ts"),
      `import {
  AudinOperator,
  OperatorRequestError,
  Resampler,
  decodeALaw,
  decodeMuLaw,
  encodeALaw,
  encodeMuLaw,
  resampleLinear,
  type AudinOperatorConfig,
  type CallEndReason,
  type OperatorCall,
  type OperatorErrorCode,
  type OperatorEvents,
  type OperatorLogger,
  type OperatorPhoneNumber,
  type PresenceState,
} from "@audin.ai/operator-sdk";

const logger: OperatorLogger = console;
const config: AudinOperatorConfig = {
  coreUrl: "https://core.audin.ai",
  getToken: async () => {
    const r = await fetch("/api/operator/token", { method: "POST" });
    return r.json();
  },
  heartbeatIntervalMs: 25000,
  reconnectBackoffMs: [1000, 2000, 5000, 10000, 30000],
  audioConstraints: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  logger,
};
const op = new AudinOperator(config);

const off: () => void = op.on("incomingCall", (call: OperatorCall) => {
  const from: string | undefined = call.from;
  void from;
  call.accept();
});
off();
op.on("callStarted", (call) => console.log(call.callSid, call.direction));
op.on("callEnded", (call) => {
  const reason: CallEndReason | undefined = call.endReason;
  console.log(reason);
});
op.on("presenceStateChanged", (s: PresenceState) => console.log(s));
op.on("availabilityChanged", ({ accepted, rejected }) => console.log(accepted.length + rejected.length));
op.on("error", (e) => {
  const code: OperatorErrorCode = e.code;
  console.error(code, e.message, e.cause);
});
op.once("callReconnecting", (call) => console.log(call.state));
op.off("callReconnected", (call) => console.log(call.muted));

// @ts-expect-error: not an event
op.on("ringing", () => undefined);
// @ts-expect-error: the payload of presenceStateChanged is a string
op.on("presenceStateChanged", (s: number) => s);

async function main(): Promise<void> {
  const numbers: OperatorPhoneNumber[] = await op.listPhoneNumbers();
  const mine = numbers[0];
  if (!mine) return;
  await op.goOnline([mine.id]);
  const call: OperatorCall = await op.dial("+39021234567", { callerId: mine.phoneNumber });
  call.mute(true);
  call.mute(false);
  call.sendDtmf("5");
  call.hangup();
  const state: PresenceState = op.state;
  const current: OperatorCall | null = op.currentCall;
  console.log(state, current?.state);
  await op.goOffline();
  try {
    await op.dial("+1", { callerId: mine.phoneNumber });
  } catch (e) {
    if (e instanceof OperatorRequestError) {
      const c: OperatorErrorCode = e.code;
      console.log(c);
    }
  }
  // @ts-expect-error: callerId is required
  await op.dial("+39021234567", {});
}
void main();

const pcm = new Float32Array(960);
const ulaw: Uint8Array = encodeMuLaw(pcm);
const back: Float32Array = decodeMuLaw(ulaw);
const alaw: Uint8Array = encodeALaw(back);
const back2: Float32Array = decodeALaw(alaw);
const narrow: Float32Array = resampleLinear(back2, 48000, 8000);
const r = new Resampler(48000, 8000);
const out: Float32Array = r.process(pcm);
const delay: number = r.latencySeconds;
r.free();
console.log(narrow.length, out.length, delay);
type Payload = OperatorEvents["callEnded"];
const p: Payload | null = null;
void p;
`,
    );
    const r = run(bin("tsc"), ["-p", dir], dir);
    assert.equal(r.status, 0, `tsc failed:\n${r.stdout}\n${r.stderr}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("npm pack installs into a fresh folder and bundles with esbuild", async () => {
  const dir = tmp("pack");
  try {
    const packed = run("npm", ["pack", "--json", "--pack-destination", dir], SDK_ROOT);
    assert.equal(packed.status, 0, packed.stderr);
    const [info] = JSON.parse(packed.stdout);
    const files = info.files.map((f) => f.path);
    for (const f of ["package.json", "README.md", "dist/audin-operator-sdk.js", "dist/audin-operator-sdk.umd.cjs", "dist/index.d.ts"]) {
      assert.ok(files.includes(f), `${f} is in the tarball (${files.join(", ")})`);
    }
    assert.ok(!files.some((f) => f.startsWith("src/") || f.startsWith("tests/")), "no sources or tests in the tarball");

    const app = join(dir, "app");
    mkdirSync(app);
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "consumer-app", private: true, type: "module" }));
    const inst = run("npm", ["install", "--offline", "--no-audit", "--no-fund", join(dir, info.filename)], app);
    assert.equal(inst.status, 0, `${inst.stdout}\n${inst.stderr}`);
    const installed = JSON.parse(readFileSync(join(app, "node_modules/@audin.ai/operator-sdk/package.json"), "utf8"));
    assert.equal(installed.name, "@audin.ai/operator-sdk");
    assert.deepEqual(Object.keys(installed.dependencies ?? {}), [], "zero runtime dependencies");

    writeFileSync(
      join(app, "main.js"),
      `import { AudinOperator, encodeMuLaw } from "@audin.ai/operator-sdk";
export const op = new AudinOperator({ coreUrl: "https://core.audin.ai", getToken: async () => ({ token: "t" }) });
export const silence = encodeMuLaw(new Float32Array(160));
`,
    );
    const esbuild = await import(join(SDK_ROOT, "node_modules", "esbuild", "lib", "main.js"));
    const out = await esbuild.build({
      absWorkingDir: app,
      entryPoints: ["main.js"],
      bundle: true,
      format: "esm",
      platform: "browser",
      write: false,
      logLevel: "silent",
    });
    assert.deepEqual(out.errors, []);
    assert.deepEqual(out.warnings, []);
    const code = out.outputFiles[0].text;
    assert.ok(code.includes("audin.operator.v1"), "the SDK was bundled");
    assert.ok(!/from\s*["']node:|require\(["'](fs|path|crypto)["']\)/.test(code), "no Node built-ins in the browser bundle");

    // Node can load both entry points too (SSR imports, unit tests).
    const cjs = run(
      process.execPath,
      ["-e", `const m = require("@audin.ai/operator-sdk"); if (typeof m.AudinOperator !== "function") process.exit(1);`],
      app,
    );
    assert.equal(cjs.status, 0, `require(): ${cjs.stderr}`);
    const esm = run(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `import { encodeMuLaw } from "@audin.ai/operator-sdk"; const b = encodeMuLaw(new Float32Array([0, 1])); if (b[0] !== 0xff || b[1] !== 0x80) process.exit(1);`,
      ],
      app,
    );
    assert.equal(esm.status, 0, `import: ${esm.stderr}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
