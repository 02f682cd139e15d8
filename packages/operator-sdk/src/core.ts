// Loading of the two inlined wasm modules. Nothing here decides anything:
// the core module (crates/wasm) holds the client logic, the worklet module
// (crates/worklet) the audio maths of the AudioWorklet and of the codec
// helpers of the package root.
//
// Both are inlined raw-DEFLATE compressed (then base64) and inflated
// synchronously on first use (see inflate.ts). Compilation is synchronous
// where the engine allows it on the main thread (Chrome since 2023 up to
// 8 MB, Firefox, Safari; the core is ~100 KB), so `new AudinOperator()` can
// validate its configuration in the core and throw at once; engines that
// refuse (older Chromium/WebViews: 4 KB) fall back to asynchronous
// compilation, and the operator waits for it before its first call.

import initCore, { initSync, protocol_version } from "./generated/core/audin_operator_wasm.js";
import { CORE_WASM_BYTE_LENGTH, CORE_WASM_DEFLATED_BASE64 } from "./generated/core-wasm.js";
import { WORKLET_WASM_BYTE_LENGTH, WORKLET_WASM_DEFLATED_BASE64 } from "./generated/worklet-wasm.js";
import { inflateRaw } from "./inflate.js";
import { OperatorRequestError } from "./errors.js";
import type { OperatorErrorCode } from "./types.js";

/**
 * The error the wasm core refused a configuration or an input with, from
 * its `{code, message}` JSON (the core returns refusals rather than
 * throwing them), as the public error type.
 * @internal
 */
export function refusal(json: string): OperatorRequestError {
  const e = JSON.parse(json) as { code: OperatorErrorCode; message: string };
  return new OperatorRequestError(e.code, e.message);
}

/**
 * Decodes standard base64 (main thread only: worklets have no `atob`).
 * @internal
 */
export function base64ToBytes(base64: string): Uint8Array<ArrayBuffer> {
  const binary = atob(base64);
  const bytes = new Uint8Array(new ArrayBuffer(binary.length));
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

const coreBytes = (): Uint8Array<ArrayBuffer> =>
  inflateRaw(base64ToBytes(CORE_WASM_DEFLATED_BASE64), CORE_WASM_BYTE_LENGTH);

let coreReady = false;
let corePromise: Promise<void> | undefined;

/**
 * Instantiates the wasm core synchronously if it is not yet. Returns
 * `false` when the engine refuses synchronous compilation on this thread,
 * in which case {@link loadCore} must be awaited.
 * @internal
 */
export function loadCoreSync(): boolean {
  if (coreReady) return true;
  try {
    initSync({ module: coreBytes() });
    coreReady = true;
  } catch {
    // e.g. an engine with a main-thread limit on synchronous compilation.
  }
  return coreReady;
}

/**
 * Instantiates the wasm core once (asynchronously when the synchronous path
 * is refused).
 * @internal
 */
export function loadCore(): Promise<void> {
  if (coreReady || loadCoreSync()) return Promise.resolve();
  corePromise ??= initCore({ module_or_path: coreBytes() }).then(() => {
    coreReady = true;
  });
  return corePromise;
}

/**
 * Diagnostics: instantiates the wasm core and returns the wire protocol
 * version it speaks, e.g. `"v1"`.
 */
export async function coreProtocolVersion(): Promise<string> {
  await loadCore();
  return protocol_version();
}

let workletCompiled: WebAssembly.Module | undefined;
let workletPromise: Promise<WebAssembly.Module> | undefined;

const workletBytes = (): Uint8Array<ArrayBuffer> =>
  inflateRaw(base64ToBytes(WORKLET_WASM_DEFLATED_BASE64), WORKLET_WASM_BYTE_LENGTH);

/**
 * The worklet module compiled synchronously (for the codec helpers), or
 * `undefined` when the engine refuses synchronous compilation here.
 * @internal
 */
export function workletModuleSync(): WebAssembly.Module | undefined {
  if (!workletCompiled) {
    try {
      workletCompiled = new WebAssembly.Module(workletBytes());
    } catch {
      return undefined;
    }
  }
  return workletCompiled;
}

/**
 * Diagnostics: the AudioWorklet's wasm module (audio maths, no imports),
 * compiled on the main thread. The SDK passes it to its worklet in
 * `processorOptions` (an AudioWorkletGlobalScope cannot decode base64).
 */
export function workletModule(): Promise<WebAssembly.Module> {
  if (workletCompiled) return Promise.resolve(workletCompiled);
  workletPromise ??= WebAssembly.compile(workletBytes()).then((m) => (workletCompiled = m));
  return workletPromise;
}
