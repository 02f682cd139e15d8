// The public API without a browser or a server: the ESM bundle loaded in
// Node (codec exports, errors, configuration), and the public types checked
// against the wire protocol document (error codes, end reasons) and the
// golden fixtures. Needs `npm run build`.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { before, describe, test } from "node:test";

import { REPO_ROOT, SDK_ROOT } from "./harness/index.mjs";

/** @type {any} */
let sdk;

before(async () => {
  sdk = await import(join(SDK_ROOT, "dist", "audin-operator-sdk.js"));
});

describe("root exports", () => {
  test("names", () => {
    for (const name of [
      "AudinOperator",
      "OperatorRequestError",
      "encodeMuLaw",
      "decodeMuLaw",
      "encodeALaw",
      "decodeALaw",
      "resampleLinear",
      "Resampler",
    ]) {
      assert.equal(typeof sdk[name], "function", name);
    }
  });

  test("G.711 mu-law and A-law", () => {
    assert.deepEqual([...sdk.encodeMuLaw(new Float32Array([0, 1, -1]))], [0xff, 0x80, 0x00]);
    const dec = sdk.decodeMuLaw(new Uint8Array([0xff, 0x80, 0x00]));
    assert.ok(dec instanceof Float32Array);
    assert.deepEqual([...dec], [0, 32124 / 32768, -32124 / 32768]);
    assert.deepEqual([...sdk.encodeALaw(new Float32Array([0]))], [0xd5]);
    const a = sdk.decodeALaw(sdk.encodeALaw(new Float32Array([0.5, -0.25])));
    assert.ok(Math.abs(a[0] - 0.5) < 0.02 && Math.abs(a[1] + 0.25) < 0.02, String([...a]));
    // Round trip of a tone stays close (G.711 has ~38 dB SNR).
    const tone = Float32Array.from({ length: 800 }, (_, i) => 0.5 * Math.sin((2 * Math.PI * 440 * i) / 8000));
    const back = sdk.decodeMuLaw(sdk.encodeMuLaw(tone));
    let err = 0;
    for (let i = 0; i < tone.length; i++) err = Math.max(err, Math.abs(back[i] - tone[i]));
    assert.ok(err < 0.02, `max error ${err}`);
  });

  test("resampleLinear keeps the seed's signature and length", () => {
    const out = sdk.resampleLinear(new Float32Array(960), 48000, 8000);
    assert.ok(out instanceof Float32Array);
    assert.equal(out.length, 160);
    assert.deepEqual([...sdk.resampleLinear(new Float32Array([0, 1]), 8000, 16000)], [0, 0.5, 1, 1]);
  });

  test("Resampler: streaming 48 kHz -> 8 kHz keeps 1 kHz and rejects 6 kHz", () => {
    const r = new sdk.Resampler(48000, 8000);
    assert.ok(r.latencySeconds > 0 && r.latencySeconds < 0.01);
    const tone = (hz) => Float32Array.from({ length: 48000 }, (_, i) => 0.5 * Math.sin((2 * Math.PI * hz * i) / 48000));
    const run = (input) => {
      r.reset();
      const parts = [];
      for (let i = 0; i < input.length; i += 128) parts.push(r.process(input.subarray(i, i + 128)));
      const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
      let k = 0;
      for (const p of parts) {
        out.set(p, k);
        k += p.length;
      }
      return out;
    };
    const rms = (x) => Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length);
    const pass = run(tone(1000));
    assert.equal(pass.length, 8000);
    assert.ok(Math.abs(rms(pass.subarray(800)) - 0.5 / Math.SQRT2) < 0.01, `1 kHz passes (${rms(pass)})`);
    const stop = run(tone(6000)); // would alias to 2 kHz
    assert.ok(rms(stop.subarray(800)) < 0.5 / Math.SQRT2 / 1000, `6 kHz is rejected by > 60 dB (${rms(stop)})`);
    r.free();
    assert.throws(() => r.process(new Float32Array(1)));
    assert.throws(() => new sdk.Resampler(0, 8000), (e) => e instanceof sdk.OperatorRequestError && e.code === "INVALID_CONFIG");
  });
});

describe("AudinOperator without a network", () => {
  const getToken = async () => ({ token: "t" });

  test("defaults: offline, no call", () => {
    const op = new sdk.AudinOperator({ coreUrl: "https://core.audin.ai", getToken });
    assert.equal(op.state, "offline");
    assert.equal(op.currentCall, null);
    const off = op.on("error", () => undefined);
    assert.equal(typeof off, "function");
    off();
  });

  test("invalid configuration throws INVALID_CONFIG", () => {
    const bad = [
      { coreUrl: "core.audin.ai", getToken },
      { coreUrl: "ftp://core.audin.ai", getToken },
      { coreUrl: "https://core.audin.ai", getToken, reconnectBackoffMs: [] },
      { coreUrl: "https://core.audin.ai", getToken, heartbeatIntervalMs: 0 },
      { coreUrl: "https://core.audin.ai", getToken, heartbeatIntervalMs: -5 },
      { coreUrl: "https://core.audin.ai" },
    ];
    for (const config of bad) {
      assert.throws(
        () => new sdk.AudinOperator(config),
        (e) => e instanceof sdk.OperatorRequestError && e instanceof Error && e.code === "INVALID_CONFIG",
        JSON.stringify(config),
      );
    }
  });

  test("dial() while offline rejects NOT_ONLINE at once; bad numbers INVALID_NUMBER", async () => {
    const op = new sdk.AudinOperator({ coreUrl: "https://core.audin.ai", getToken });
    await assert.rejects(op.dial("+15550100001", { callerId: "+390299999999" }), (e) => e.code === "NOT_ONLINE");
    await assert.rejects(op.dial("12345", { callerId: "+390299999999" }), (e) => e.code === "INVALID_NUMBER");
  });
});

describe("contract", () => {
  const protocol = readFileSync(join(REPO_ROOT, "docs", "protocol-v1.md"), "utf8");
  const types = readFileSync(join(SDK_ROOT, "dist", "types.d.ts"), "utf8");
  const unionOf = (name) => {
    const m = new RegExp(`export type ${name} =([^;]*);`).exec(types);
    assert.ok(m, `${name} in dist/types.d.ts`);
    return [...m[1].matchAll(/"([^"]+)"/g)].map((x) => x[1]).sort();
  };
  const section = (title) => {
    const start = protocol.indexOf(`## ${title}`);
    assert.ok(start >= 0, title);
    const end = protocol.indexOf("\n## ", start + 3);
    return protocol.slice(start, end < 0 ? undefined : end);
  };

  test("OperatorErrorCode is exactly the protocol's error code table", () => {
    const codes = [...section("Error codes").matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]).sort();
    assert.ok(codes.length >= 30, `${codes.length} codes in the table`);
    assert.deepEqual(unionOf("OperatorErrorCode"), codes);
  });

  test("CallEndReason is exactly the protocol's end reasons", () => {
    const reasons = [...section("End reasons").matchAll(/^\| `([a-z_]+)` \|/gm)].map((m) => m[1]).sort();
    assert.deepEqual(unionOf("CallEndReason"), reasons);
  });

  test("PresenceState is the seed's four states", () => {
    assert.deepEqual(unionOf("PresenceState"), ["connecting", "offline", "online", "reconnecting"]);
  });

  test("OperatorPhoneNumber has the fields of the golden HTTP fixture", () => {
    const http = JSON.parse(readFileSync(join(REPO_ROOT, "crates/protocol/tests/fixtures/http.json"), "utf8"));
    const fields = Object.keys(http.phoneNumbers[0]).sort();
    const m = /export interface OperatorPhoneNumber \{([^}]*)\}/.exec(types);
    assert.ok(m);
    const declared = [...m[1].matchAll(/readonly (\w+)\??:/g)].map((x) => x[1]).sort();
    assert.deepEqual(declared, fields);
  });

  test("every end reason of the golden fixtures is a CallEndReason", () => {
    const reasons = new Set(unionOf("CallEndReason"));
    const dir = join(REPO_ROOT, "crates/protocol/tests/fixtures");
    for (const f of ["presence-server.json", "audio-server.json", "http.json"]) {
      const text = readFileSync(join(dir, f), "utf8");
      for (const m of text.matchAll(/"(?:reason|endReason)":\s*"([a-z_]+)"/g)) assert.ok(reasons.has(m[1]), `${f}: ${m[1]}`);
      for (const m of text.matchAll(/"code":\s*"([A-Z_]+)"/g)) assert.ok(unionOf("OperatorErrorCode").includes(m[1]), `${f}: ${m[1]}`);
    }
  });
});
