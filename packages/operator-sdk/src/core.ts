// Loading of the two inlined wasm modules. Nothing here decides anything:
// the core module (crates/wasm) holds the client logic, the worklet module
// (crates/worklet) the audio maths of the AudioWorklet.

import initCore, { initSync, protocol_version } from "./generated/core/audin_operator_wasm.js";
import { CORE_WASM_BASE64 } from "./generated/core-wasm.js";
import { WORKLET_WASM_BASE64 } from "./generated/worklet-wasm.js";

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

let coreReady = false;
let corePromise: Promise<void> | undefined;

/**
 * Instantiates the wasm core synchronously if it is not yet (browsers allow
 * synchronous compilation of a module this size on the main thread). Returns
 * `false` when the engine refuses, in which case {@link loadCore} must be
 * awaited.
 * @internal
 */
export function loadCoreSync(): boolean {
  if (coreReady) return true;
  try {
    initSync({ module: base64ToBytes(CORE_WASM_BASE64) });
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
  corePromise ??= initCore({ module_or_path: base64ToBytes(CORE_WASM_BASE64) }).then(() => {
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

/**
 * Diagnostics: the AudioWorklet's wasm module (audio maths, no imports),
 * compiled on the main thread. The SDK passes it to its worklet in
 * `processorOptions` (an AudioWorkletGlobalScope cannot decode base64).
 */
export function workletModule(): Promise<WebAssembly.Module> {
  if (workletCompiled) return Promise.resolve(workletCompiled);
  workletPromise ??= WebAssembly.compile(base64ToBytes(WORKLET_WASM_BASE64)).then((m) => (workletCompiled = m));
  return workletPromise;
}
