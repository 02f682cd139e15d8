// The SDK's synchronous raw-DEFLATE decoder (src/inflate.ts), which inflates
// the inlined wasm modules, against Node's zlib: stored, fixed and dynamic
// Huffman blocks, long matches, every compression level, and corrupt input.
// Compiles the TypeScript with esbuild (no `npm run build` needed).

import assert from "node:assert/strict";
import { join } from "node:path";
import { before, test } from "node:test";
import { constants, deflateRawSync } from "node:zlib";
import * as esbuild from "esbuild";

import { SDK_ROOT } from "./harness/index.mjs";

/** @type {(src: Uint8Array, size: number) => Uint8Array} */
let inflateRaw;

before(async () => {
  const result = await esbuild.build({
    entryPoints: [join(SDK_ROOT, "src", "inflate.ts")],
    bundle: true,
    format: "esm",
    write: false,
    logLevel: "silent",
  });
  const code = result.outputFiles[0].text;
  ({ inflateRaw } = await import(`data:text/javascript;base64,${Buffer.from(code).toString("base64")}`));
});

let seed = 7;
const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;

function samples() {
  const out = [new Uint8Array(0), new Uint8Array([42]), new Uint8Array(70_000)];
  // Random bytes (stored blocks), text-like data, long runs and repeats.
  out.push(Uint8Array.from({ length: 100_000 }, () => (rnd() * 256) | 0));
  const words = ["audin", "operator", "wasm", "call", "presence", "\u00e9", "0123456789"];
  out.push(new TextEncoder().encode(Array.from({ length: 20_000 }, () => words[(rnd() * words.length) | 0]).join(" ")));
  out.push(Uint8Array.from({ length: 200_000 }, (_, i) => (i % 251 < 200 ? i % 7 : (rnd() * 256) | 0)));
  out.push(Uint8Array.from({ length: 5_000 }, (_, i) => (i * i) & 0xff));
  return out;
}

test("inflates what zlib deflates, at every level and strategy", () => {
  for (const input of samples()) {
    for (const level of [0, 1, 6, 9]) {
      for (const strategy of [constants.Z_DEFAULT_STRATEGY, constants.Z_FIXED, constants.Z_HUFFMAN_ONLY, constants.Z_RLE]) {
        const packed = deflateRawSync(input, { level, strategy });
        const got = inflateRaw(packed, input.length);
        assert.ok(got.buffer instanceof ArrayBuffer && got.length === input.length);
        assert.ok(Buffer.from(got).equals(Buffer.from(input)), `level ${level} strategy ${strategy}, ${input.length} bytes`);
      }
    }
  }
});

test("refuses corrupt or truncated input and a wrong size", () => {
  const input = new TextEncoder().encode("hello hello hello hello, audin ".repeat(200));
  const packed = deflateRawSync(input, { level: 9 });
  assert.throws(() => inflateRaw(packed.subarray(0, packed.length >> 1), input.length));
  assert.throws(() => inflateRaw(packed, input.length - 1));
  assert.throws(() => inflateRaw(packed, input.length + 1));
  assert.throws(() => inflateRaw(new Uint8Array([0xff, 0xff, 0xff]), 10));
  // A stored block whose length check is wrong.
  assert.throws(() => inflateRaw(new Uint8Array([1, 3, 0, 3, 0, 1, 2, 3]), 3));
  assert.deepEqual([...inflateRaw(new Uint8Array([1, 3, 0, 0xfc, 0xff, 1, 2, 3]), 3)], [1, 2, 3]);
  // Random garbage never hangs or writes out of bounds: it throws or returns `size` bytes.
  for (let i = 0; i < 2000; i++) {
    const junk = Uint8Array.from({ length: 1 + ((rnd() * 64) | 0) }, () => (rnd() * 256) | 0);
    try {
      assert.equal(inflateRaw(junk, 100).length, 100);
    } catch (e) {
      assert.ok(e instanceof Error);
    }
  }
});
