#!/usr/bin/env node
// Builds the publishable bundles of @audin.ai/operator-sdk into dist/:
//
//   dist/audin-operator-sdk.js        ESM, minified, es2020
//   dist/audin-operator-sdk.umd.cjs   UMD (global `AudinOperatorSDK`), minified, es2020
//   dist/index.d.ts (+ siblings)      declarations from `tsc -p tsconfig.build.json`
//
// then prints the gzipped sizes and fails when the ESM bundle exceeds its
// budget. The wasm modules are inlined from src/generated/ (written by
// `cargo xtask wasm`), so the bundles are self-contained: no .wasm fetch.
//
// Usage: node scripts/build.mjs [--no-types]

import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import * as esbuild from "esbuild";

const pkgDir = join(dirname(fileURLToPath(import.meta.url)), "..");
const srcDir = join(pkgDir, "src");
const distDir = join(pkgDir, "dist");

/** The global the UMD bundle defines when loaded from a plain <script>. */
export const UMD_GLOBAL = "AudinOperatorSDK";
/** Budget for the gzipped ESM bundle (both wasm modules included). */
export const ESM_GZIP_BUDGET = 60 * 1024;

const ESM_FILE = "audin-operator-sdk.js";
const UMD_FILE = "audin-operator-sdk.umd.cjs";
const TARGET = "es2020";

function fail(message) {
  console.error(`\nbuild: error: ${message}`);
  process.exit(1);
}

function checkGenerated() {
  const needed = ["generated/core-wasm.ts", "generated/worklet-wasm.ts", "generated/core/audin_operator_wasm.js"];
  const missing = needed.filter((f) => !existsSync(join(srcDir, f)));
  if (missing.length > 0) {
    fail(
      `missing ${missing.map((f) => `src/${f}`).join(", ")}: ` +
        "run `cargo xtask wasm` (or `cargo xtask test`) from the repository root first",
    );
  }
}

const common = {
  entryPoints: [join(srcDir, "index.ts")],
  bundle: true,
  minify: true,
  target: TARGET,
  platform: "browser",
  legalComments: "none",
  charset: "utf8",
  logLevel: "warning",
  write: false,
};

/**
 * The worklet's source text ships as a string (src/worklet-source.ts), which
 * the bundler cannot minify: minify it here, at load time, so the bundles
 * carry it without comments and long names (about 2 KiB less). The one
 * interpolation, the processor's name, is kept as a concatenation.
 */
const minifyWorkletSource = {
  name: "minify-worklet-source",
  setup(build) {
    build.onLoad({ filter: /worklet-source\.ts$/ }, async (args) => {
      const text = readFileSync(args.path, "utf8");
      const m = /PROCESSOR_SOURCE = `([^`]*)`;/.exec(text);
      if (!m) fail("worklet-source.ts: PROCESSOR_SOURCE is not one template literal");
      const [head, tail, ...rest] = m[1].split("${PROCESSOR_NAME}");
      if (tail === undefined || rest.length > 0 || /[\\$]\{?/.test(head + tail)) {
        fail("worklet-source.ts: expected exactly one ${PROCESSOR_NAME} and no other escapes");
      }
      const marker = "__AUDIN_PROCESSOR_NAME__";
      // An AudioWorklet script is an ES module: its top-level names are its
      // own (renamed, the unused ones dropped) and it is strict already.
      const min = (
        await esbuild.transform(head + marker + tail, { minify: true, target: TARGET, loader: "js", format: "esm", treeShaking: true })
      ).code;
      const [a, b] = min.split(marker);
      if (b === undefined) fail("worklet-source.ts: the minifier lost the processor name");
      const replaced = `PROCESSOR_SOURCE = ${JSON.stringify(a)} + PROCESSOR_NAME + ${JSON.stringify(b)};`;
      return { contents: text.replace(m[0], replaced), loader: "ts" };
    });
  },
};

async function bundle(options) {
  const result = await esbuild.build({ ...common, plugins: [minifyWorkletSource], ...options });
  // A warning is almost always a real problem in a library bundle (e.g.
  // `import.meta` in the iife build): fail instead of shipping it.
  if (result.warnings.length > 0) {
    fail(`esbuild reported ${result.warnings.length} warning(s) for ${options.format}; fix them`);
  }
  const file = result.outputFiles?.[0];
  if (!file) fail(`esbuild produced no output for ${options.format}`);
  return file.text;
}

/** Wraps an iife that assigns `var <name> = ...` in a standard UMD header. */
function umd(iife, name) {
  return (
    "(function (root, factory) {\n" +
    '  if (typeof define === "function" && define.amd) define([], factory);\n' +
    '  else if (typeof module === "object" && module.exports) module.exports = factory();\n' +
    `  else root.${UMD_GLOBAL} = factory();\n` +
    '})(typeof globalThis !== "undefined" ? globalThis : typeof self !== "undefined" ? self : this, function () {\n' +
    iife.trimEnd() +
    `\nreturn ${name};\n});\n`
  );
}

function assertClean(name, code) {
  // Consumers' bundlers resolve `new URL(..., import.meta.url)` as assets we
  // do not ship, and a UMD script cannot contain it at all.
  if (code.includes("import.meta")) fail(`${name} contains import.meta`);
  if (/\.wasm["'`]/.test(code)) fail(`${name} references a .wasm file; wasm must be inlined`);
}

function runTsc() {
  const tsc = join(pkgDir, "node_modules", ".bin", process.platform === "win32" ? "tsc.cmd" : "tsc");
  const r = spawnSync(tsc, ["-p", "tsconfig.build.json"], { cwd: pkgDir, stdio: "inherit" });
  if (r.error) fail(`could not run tsc: ${r.error.message} (run npm ci)`);
  if (r.status !== 0) fail("tsc (declarations) failed");
  if (!existsSync(join(distDir, "index.d.ts"))) fail("tsc did not produce dist/index.d.ts");
}

function kib(n) {
  return `${(n / 1024).toFixed(1)} KiB`.padStart(10);
}

async function main() {
  const withTypes = !process.argv.includes("--no-types");
  checkGenerated();
  rmSync(distDir, { recursive: true, force: true });
  mkdirSync(distDir, { recursive: true });

  const esm = await bundle({ format: "esm" });
  const tmpGlobal = `__${UMD_GLOBAL}`;
  const iife = await bundle({ format: "iife", globalName: tmpGlobal });
  const umdCode = umd(iife, tmpGlobal);
  assertClean(ESM_FILE, esm);
  assertClean(UMD_FILE, umdCode);
  writeFileSync(join(distDir, ESM_FILE), esm);
  writeFileSync(join(distDir, UMD_FILE), umdCode);

  if (withTypes) runTsc();

  console.log("\nbuild: bundle sizes");
  let over = false;
  for (const file of [ESM_FILE, UMD_FILE]) {
    const code = readFileSync(join(distDir, file));
    const gz = gzipSync(code, { level: 9 }).length;
    const budget = file === ESM_FILE ? ESM_GZIP_BUDGET : undefined;
    const verdict = budget === undefined ? "" : gz > budget ? `  OVER BUDGET (${kib(budget).trim()})` : `  (budget ${kib(budget).trim()})`;
    if (budget !== undefined && gz > budget) over = true;
    console.log(`  ${relative(pkgDir, join(distDir, file)).padEnd(34)} ${kib(code.length)} raw ${kib(gz)} gzip${verdict}`);
  }
  if (over) fail(`the gzipped ESM bundle exceeds ${ESM_GZIP_BUDGET / 1024} KiB`);
}

main().catch((err) => fail(err?.stack ?? String(err)));
