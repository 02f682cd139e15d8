// The audio helpers of the package root, for integrators who build their own
// audio path. Each forwards to audin-codec (Rust, compiled into the core
// wasm module): G.711 bit-exact with ITU-T G.191, and a Kaiser-windowed sinc
// polyphase resampler. Floats are samples in [-1, 1].

import {
  Resampler as WasmResampler,
  decodeALaw as wasmDecodeALaw,
  decodeMuLaw as wasmDecodeMuLaw,
  encodeALaw as wasmEncodeALaw,
  encodeMuLaw as wasmEncodeMuLaw,
  resampleLinear as wasmResampleLinear,
} from "./generated/core/audin_operator_wasm.js";
import { loadCoreSync } from "./core.js";
import { OperatorRequestError } from "./errors.js";

function ready(): void {
  if (!loadCoreSync()) {
    throw new OperatorRequestError("AUDIO_FAILED", "the Audin wasm core could not be instantiated synchronously");
  }
}

/**
 * Encodes float samples (`[-1, 1]`, clamped) to G.711 **μ-law** bytes, one
 * byte per sample (bit-exact with the ITU-T G.191 reference encoder).
 *
 * @param samples - PCM samples in `[-1, 1]`
 * @returns one μ-law code per sample
 */
export function encodeMuLaw(samples: Float32Array): Uint8Array {
  ready();
  return wasmEncodeMuLaw(samples);
}

/**
 * Decodes G.711 **μ-law** bytes to float samples in `[-1, 1]`.
 *
 * @param codes - μ-law codes
 * @returns one sample per code
 */
export function decodeMuLaw(codes: Uint8Array): Float32Array {
  ready();
  return wasmDecodeMuLaw(codes);
}

/**
 * Encodes float samples (`[-1, 1]`, clamped) to G.711 **A-law** bytes
 * (bit-exact with ITU-T G.191).
 *
 * @param samples - PCM samples in `[-1, 1]`
 * @returns one A-law code per sample
 */
export function encodeALaw(samples: Float32Array): Uint8Array {
  ready();
  return wasmEncodeALaw(samples);
}

/**
 * Decodes G.711 **A-law** bytes to float samples in `[-1, 1]`.
 *
 * @param codes - A-law codes
 * @returns one sample per code
 */
export function decodeALaw(codes: Uint8Array): Float32Array {
  ready();
  return wasmDecodeALaw(codes);
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
  ready();
  return wasmResampleLinear(input, fromRate >>> 0, toRate >>> 0);
}

/**
 * Streaming anti-aliased resampler (rational polyphase FIR, Kaiser-windowed
 * sinc: pass band flat to 0.425 × the lower rate, > 80 dB stop band, about
 * 2.4 ms of delay). This is what the SDK's own audio path uses.
 *
 * Feed blocks of any length with {@link Resampler.process}; the filter
 * history carries across calls. It holds ~72 KiB of wasm memory: call
 * {@link Resampler.free} when done.
 *
 * ```ts
 * const down = new Resampler(48000, 8000);
 * const narrow = down.process(quantum); // 128 in → 21 or 22 out
 * ```
 */
export class Resampler {
  private inner: WasmResampler | undefined;

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
    ready();
    try {
      this.inner = new WasmResampler(fromRate >>> 0, toRate >>> 0);
    } catch (e) {
      throw new OperatorRequestError("INVALID_CONFIG", `unsupported resampling ${fromRate} Hz -> ${toRate} Hz`, e);
    }
  }

  /**
   * Resamples the next block of the stream.
   * @param input - the next samples at `fromRate` (any length)
   * @returns the samples at `toRate` that became available
   */
  process(input: Float32Array): Float32Array {
    if (!this.inner) throw new OperatorRequestError("INVALID_CONFIG", "Resampler was freed");
    return this.inner.process(input);
  }

  /** Forgets the stream history (as if new). */
  reset(): void {
    this.inner?.reset();
  }

  /** Group delay the filter adds, in seconds. */
  get latencySeconds(): number {
    return this.inner?.latencySeconds ?? 0;
  }

  /** Releases the wasm memory; the resampler is unusable afterwards. */
  free(): void {
    this.inner?.free();
    this.inner = undefined;
  }
}
