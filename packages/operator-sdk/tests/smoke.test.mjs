// Smoke test of the built bundles in a real Chromium: the UMD bundle loads
// from a plain <script>, the wasm core instantiates, and the worklet wasm
// compiles on the main thread with no imports. Builds nothing: run
// `npm run build` (or `cargo xtask test`) first.

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { SDK_ROOT, browserSkipReason, collectConsole, launchBrowser, startStaticServer } from "./harness/index.mjs";

const UMD = "dist/audin-operator-sdk.umd.cjs";
const ESM = "dist/audin-operator-sdk.js";

const PAGES = {
  "/__test__/umd.html": `<!doctype html><meta charset="utf-8"><title>umd</title>
<script src="/${UMD}"></script>`,
  "/__test__/esm.html": `<!doctype html><meta charset="utf-8"><title>esm</title>
<script type="module">
  import * as sdk from "/${ESM}";
  window.esmSdk = sdk;
  window.dispatchEvent(new Event("esm-ready"));
</script>`,
};

test("bundles were built", () => {
  for (const f of [UMD, ESM, "dist/index.d.ts"]) {
    assert.ok(existsSync(join(SDK_ROOT, f)), `${f} is missing: run npm run build`);
  }
});

describe("in Chromium", { skip: browserSkipReason() }, () => {
  let server;
  let browser;
  let logs;

  before(async () => {
    server = await startStaticServer({ pages: PAGES });
    browser = await launchBrowser();
    logs = collectConsole(browser.page);
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  test("UMD bundle: global, wasm core, worklet module", async () => {
    const { page } = browser;
    await page.goto(`${server.url}/__test__/umd.html`);
    const result = await page.evaluate(async () => {
      const sdk = /** @type {any} */ (window).AudinOperatorSDK;
      if (!sdk) return { hasGlobal: false };
      const version = await sdk.coreProtocolVersion();
      const mod = await sdk.workletModule();
      return {
        hasGlobal: true,
        version,
        isModule: mod instanceof WebAssembly.Module,
        imports: WebAssembly.Module.imports(mod),
        exports: WebAssembly.Module.exports(mod).map((e) => `${e.kind}:${e.name}`),
      };
    });
    const context = `\npage console:\n${logs.join("\n")}`;
    assert.equal(result.hasGlobal, true, `window.AudinOperatorSDK is missing${context}`);
    assert.equal(result.version, "v1", context);
    assert.equal(result.isModule, true, context);
    assert.deepEqual(result.imports, [], `the worklet wasm must have no imports${context}`);
  });

  test("ESM bundle loads as a module and instantiates the core", async () => {
    const { page } = browser;
    await page.goto(`${server.url}/__test__/esm.html`);
    await page.waitForFunction(() => /** @type {any} */ (window).esmSdk !== undefined, null, { timeout: 10_000 });
    const version = await page.evaluate(() => /** @type {any} */ (window).esmSdk.coreProtocolVersion());
    assert.equal(version, "v1", `page console:\n${logs.join("\n")}`);
  });
});
