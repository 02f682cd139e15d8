// The audio helpers of the package root, for integrators who build their own
// audio path. Each runs on the worklet wasm module (crates/worklet, the
// audin-codec maths the SDK's AudioWorklet uses): G.711 bit-exact with
// ITU-T G.191, and a Kaiser-windowed sinc polyphase resampler. Floats are
// samples in [-1, 1].
//
// The stateless helpers share one instance of the module; every
// `Resampler` owns its own instance (its filter history lives in the
// module's static state). Buffers cross through the module's codec area
// (see the crate docs).

import { workletModuleSync } from "./core.js";
import { OperatorRequestError } from "./errors.js";

/** The exports of the worklet module the helpers use. */
interface Codec {
  memory: WebAssembly.Memory;
  audin_codec_reserve(inBytes: number, outBytes: number): number;
  audin_codec_in_ptr(): number;
  audin_codec_out_ptr(): number;
  audin_encode_mulaw(n: number): number;
  audin_decode_mulaw(n: number): number;
  audin_encode_alaw(n: number): number;
  audin_decode_alaw(n: number): number;
  audin_linear_len(n: number, from: number, to: number): number;
  audin_resample_linear(n: number, from: number, to: number): number;
  audin_resampler_configure(from: number, to: number): number;
  audin_resampler_output_len(n: number): number;
  audin_resampler_process(n: number): number;
  audin_resampler_reset(): void;
  audin_resampler_latency(): number;
}

function instance(): Codec {
  const module = workletModuleSync();
  if (!module) {
    throw new OperatorRequestError("AUDIO_FAILED", "the Audin codec wasm could not be compiled synchronously");
  }
  return new WebAssembly.Instance(module, {}).exports as unknown as Codec;
}

let shared: Codec | undefined;

/** Copies `input` into the codec area, which is reserved for `outBytes` of output. */
function load(c: Codec, input: Float32Array | Uint8Array, outBytes: number): void {
  if (c.audin_codec_reserve(input.byteLength, outBytes) !== 0) {
    throw new OperatorRequestError("AUDIO_FAILED", "out of wasm memory");
  }
  const view = input instanceof Float32Array ? Float32Array : Uint8Array;
  new view(c.memory.buffer, c.audin_codec_in_ptr(), input.length).set(input);
}

const f32 = (x: ArrayLike<number>): Float32Array => (x instanceof Float32Array ? x : Float32Array.from(x));
const u8 = (x: ArrayLike<number>): Uint8Array => (x instanceof Uint8Array ? x : Uint8Array.from(x));

/** Runs a per-sample codec: n inputs → n outputs of `out`'s type. */
function map<T extends Float32Array | Uint8Array>(
  input: Float32Array | Uint8Array,
  out: { new (buffer: ArrayBuffer, offset: number, length: number): T; BYTES_PER_ELEMENT: number },
  run: (c: Codec, n: number) => number,
): T {
  const c = (shared ??= instance());
  const n = input.length;
  load(c, input, n * out.BYTES_PER_ELEMENT);
  run(c, n);
  return new out(c.memory.buffer as ArrayBuffer, c.audin_codec_out_ptr(), n).slice() as T;
}

/**
 * Encodes float samples (`[-1, 1]`, clamped) to G.711 **μ-law** bytes, one
 * byte per sample (bit-exact with the ITU-T G.191 reference encoder).
 *
 * @param samples - PCM samples in `[-1, 1]`
 * @returns one μ-law code per sample
 */
export function encodeMuLaw(samples: Float32Array): Uint8Array {
  return map(f32(samples), Uint8Array, (c, n) => c.audin_encode_mulaw(n));
}

/**
 * Decodes G.711 **μ-law** bytes to float samples in `[-1, 1]`.
 *
 * @param codes - μ-law codes
 * @returns one sample per code
 */
export function decodeMuLaw(codes: Uint8Array): Float32Array {
  return map(u8(codes), Float32Array, (c, n) => c.audin_decode_mulaw(n));
}

/**
 * Encodes float samples (`[-1, 1]`, clamped) to G.711 **A-law** bytes
 * (bit-exact with ITU-T G.191).
 *
 * @param samples - PCM samples in `[-1, 1]`
 * @returns one A-law code per sample
 */
export function encodeALaw(samples: Float32Array): Uint8Array {
  return map(f32(samples), Uint8Array, (c, n) => c.audin_encode_alaw(n));
}

/**
 * Decodes G.711 **A-law** bytes to float samples in `[-1, 1]`.
 *
 * @param codes - A-law codes
 * @returns one sample per code
 */
export function decodeALaw(codes: Uint8Array): Float32Array {
  return map(u8(codes), Float32Array, (c, n) => c.audin_decode_alaw(n));
}

/**
 * Linear-interpolation resampling of one block (the seed SDK's helper, kept
 * for compatibility). It has **no anti-aliasing filter**: 48 kHz → 8 kHz is
 * plain decimation and aliases; prefer {@link Resampler} for audio.
 *
 * @param input - samples at `fromRate`
 * @param fromRate - input rate in Hz
 * @param toRate - output rate in Hz
 * @returns `floor(input.length * toRate / fromRate)` samples at `toRate`
 */
export function resampleLinear(input: Float32Array, fromRate: number, toRate: number): Float32Array {
  const c = (shared ??= instance());
  const samples = f32(input);
  const [from, to] = [fromRate >>> 0, toRate >>> 0];
  const len = c.audin_linear_len(samples.length, from, to);
  load(c, samples, len * 4);
  const n = c.audin_resample_linear(samples.length, from, to);
  return new Float32Array(c.memory.buffer, c.audin_codec_out_ptr(), n).slice();
}

/**
 * Streaming anti-aliased resampler (rational polyphase FIR, Kaiser-windowed
 * sinc: pass band flat to 0.425 × the lower rate, > 80 dB stop band, about
 * 2.4 ms of delay). This is what the SDK's own audio path uses.
 *
 * Feed blocks of any length with {@link Resampler.process}; the filter
 * history carries across calls. Each resampler owns its own instance of the
 * SDK's audio wasm module (about 1.3 MiB of linear memory, committed by the
 * browser as it is touched): call {@link Resampler.free} when done (or let
 * it be garbage-collected).
 *
 * ```ts
 * const down = new Resampler(48000, 8000);
 * const narrow = down.process(quantum); // 128 in → 21 or 22 out
 * ```
 */
export class Resampler {
  private inner: Codec | undefined;

  /**
   * @param fromRate - input rate in Hz
   * @param toRate - output rate in Hz
   * @throws {@link OperatorRequestError} `INVALID_CONFIG` for an unsupported pair
   */
  constructor(
    /** Input rate in Hz. */
    readonly fromRate: number,
    /** Output rate in Hz. */
    readonly toRate: number,
  ) {
    const c = instance();
    if (c.audin_resampler_configure(fromRate >>> 0, toRate >>> 0) !== 0) {
      throw new OperatorRequestError("INVALID_CONFIG", `unsupported resampling ${fromRate} Hz -> ${toRate} Hz`);
    }
    this.inner = c;
  }

  /**
   * Resamples the next block of the stream.
   * @param input - the next samples at `fromRate` (any length)
   * @returns the samples at `toRate` that became available
   */
  process(input: Float32Array): Float32Array {
    const c = this.inner;
    if (!c) throw new OperatorRequestError("INVALID_CONFIG", "Resampler was freed");
    const samples = f32(input);
    load(c, samples, c.audin_resampler_output_len(samples.length) * 4);
    const n = c.audin_resampler_process(samples.length);
    return new Float32Array(c.memory.buffer, c.audin_codec_out_ptr(), n).slice();
  }

  /** Forgets the stream history (as if new). */
  reset(): void {
    this.inner?.audin_resampler_reset();
  }

  /** Group delay the filter adds, in seconds. */
  get latencySeconds(): number {
    return this.inner?.audin_resampler_latency() ?? 0;
  }

  /** Releases the wasm instance; the resampler is unusable afterwards. */
  free(): void {
    this.inner = undefined;
  }
}
