// Throughput of the AudioWorklet wasm module in Node (V8, one core).
//
//   cargo build -p audin-operator-worklet --target wasm32-unknown-unknown --profile wasm-release
//   node crates/worklet/bench/node-bench.mjs [path/to/audin_operator_worklet.wasm]
//
// Instantiates the module exactly as the AudioWorklet does (no imports),
// checks that it has none, then measures mu-law encode/decode in samples/s
// (bulk 16,384-sample calls and 160-sample frame calls) and the cost of the
// capture and playback paths per 128-frame render quantum at 48 and 44.1 kHz
// (best batch of 50, robust to a busy machine).
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, resolve } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const path =
  process.argv[2] ??
  resolve(here, "../../../target/wasm32-unknown-unknown/wasm-release/audin_operator_worklet.wasm");
const bytes = readFileSync(path);
const module = new WebAssembly.Module(bytes);
const imports = WebAssembly.Module.imports(module);
if (imports.length !== 0) throw new Error(`module has imports: ${JSON.stringify(imports)}`);
const w = new WebAssembly.Instance(module, {}).exports;

// Best batch average: `iterations` calls split into 50 batches, the fastest
// batch wins, which filters out preemption on a busy machine.
function time(label, iterations, fn) {
  for (let i = 0; i < Math.min(iterations, 200); i++) fn(); // warm-up (JIT tiers)
  const per = Math.max(1, Math.floor(iterations / 50));
  let best = Infinity;
  for (let b = 0; b < 50; b++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < per; i++) fn();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / per);
  }
  return best;
}

const N = 16384;
let seed = 12345;
const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
// The codec area: f32 input (decode reads its first N bytes as codes), and
// room for N f32 outputs.
if (w.audin_codec_reserve(N * 4, N * 4) !== 0) throw new Error("codec area");
new Float32Array(w.memory.buffer, w.audin_codec_in_ptr(), N).set(
  Float32Array.from({ length: N }, () => rnd() * Math.pow(2, -8 * Math.random())),
);
if (w.audin_encode_mulaw(N) !== N || w.audin_decode_mulaw(N) !== N) throw new Error("codec area calls");

// Bit-identity with the native build: the scenario of
// `cross_platform_checksum` in crates/worklet/tests/worklet.rs.
const CROSS_CHECK = 0x938b3efc;
function fnv(h, bytes) {
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h;
}
function crossPlatformChecksum() {
  if (w.audin_init(48000) !== 0) throw new Error("init failed");
  let h = 0x811c9dc5;
  const frames = [];
  for (let q = 0; q < 100; q++) {
    const input = new Float32Array(w.memory.buffer, w.audin_capture_input_ptr(), 128);
    for (let i = 0; i < 128; i++) input[i] = ((((q * 128 + i) * 7919) % 2001) - 1000) / 1024;
    const n = w.audin_capture(128);
    const bytes = new Uint8Array(w.memory.buffer, w.audin_capture_frames_ptr(), n * 160);
    for (let f = 0; f < n; f++) {
      const frame = bytes.slice(f * 160, (f + 1) * 160);
      h = fnv(h, frame);
      frames.push(frame);
    }
  }
  let next = 0;
  for (let q = 0; q < 200; q++) {
    const now = (q * 128) / 48;
    while (next < frames.length && next * 20 <= now) {
      new Uint8Array(w.memory.buffer, w.audin_playback_frame_ptr(), 160).set(frames[next]);
      w.audin_playback_push(next, now);
      next++;
    }
    w.audin_playback_pull(128, now);
    const out = new Float32Array(w.memory.buffer, w.audin_playback_output_ptr(), 128);
    h = fnv(h, new Uint8Array(out.buffer, out.byteOffset, 512).slice());
  }
  return h;
}
const checksum = crossPlatformChecksum();

const rows = [];
const perSample = (ns, n) => (n / ns) * 1e3; // M samples/s
let ns = time("encode", 4000, () => w.audin_encode_mulaw(N));
rows.push(["mu-law encode f32, 16384-sample calls", `${perSample(ns, N).toFixed(0)} M samples/s`]);
ns = time("decode", 4000, () => w.audin_decode_mulaw(N));
rows.push(["mu-law decode f32, 16384-sample calls", `${perSample(ns, N).toFixed(0)} M samples/s`]);
ns = time("encode160", 200000, () => w.audin_encode_mulaw(160));
rows.push(["mu-law encode f32, 160-sample calls", `${perSample(ns, 160).toFixed(0)} M samples/s`]);
ns = time("decode160", 200000, () => w.audin_decode_mulaw(160));
rows.push(["mu-law decode f32, 160-sample calls", `${perSample(ns, 160).toFixed(0)} M samples/s`]);

for (const rate of [48000, 44100]) {
  if (w.audin_init(rate) !== 0) throw new Error("init failed");
  const input = new Float32Array(w.memory.buffer, w.audin_capture_input_ptr(), 128);
  for (let i = 0; i < 128; i++) input[i] = 0.5 * Math.sin((2 * Math.PI * 1000 * i) / rate);
  ns = time("capture", 100000, () => w.audin_capture(128));
  const quanta20ms = rate / 50 / 128;
  rows.push([
    `capture ${rate / 1000} kHz -> 8 kHz -> mu-law, per 128-frame quantum`,
    `${(ns / 1e3).toFixed(2)} us (${((ns * quanta20ms) / 1e3).toFixed(1)} us per 20 ms, ${(20e6 / (ns * quanta20ms)).toFixed(0)}x real time)`,
  ]);
  const frame = new Uint8Array(w.memory.buffer, w.audin_playback_frame_ptr(), 160);
  frame.fill(0x80);
  let seq = 0;
  let now = 0;
  ns = time("playback", 100000, () => {
    now += (128 / rate) * 1000;
    while (seq * 20 <= now) w.audin_playback_push(seq++, now);
    w.audin_playback_pull(128, now);
  });
  rows.push([
    `playback jitter -> decode -> 8 kHz -> ${rate / 1000} kHz, per 128-frame quantum`,
    `${(ns / 1e3).toFixed(2)} us (${((ns * quanta20ms) / 1e3).toFixed(1)} us per 20 ms, ${(20e6 / (ns * quanta20ms)).toFixed(0)}x real time)`,
  ]);
}

console.log(`module: ${path} (${bytes.length} bytes, imports: [])`);
console.log(`node ${process.version}`);
console.log(
  `cross-platform checksum ${checksum.toString(16)}: ${checksum === CROSS_CHECK ? "identical to the native build" : "MISMATCH (expected " + CROSS_CHECK.toString(16) + ")"}`,
);
if (checksum !== CROSS_CHECK) process.exitCode = 1;
console.log("| measurement (wasm in Node, one core) | result |");
console.log("|---|---|");
for (const [k, v] of rows) console.log(`| ${k} | ${v} |`);
