// PLACEHOLDER entry point, written by the build pipeline owner so that
// `cargo xtask test` runs end to end before the real SDK facade lands.
// The real src/index.ts replaces this file; it must keep equivalents of
// `coreProtocolVersion()` and `workletModule()`, which tests/smoke.test.mjs
// calls through the UMD global `AudinOperatorSDK`.

import initCore, { protocol_version } from "./generated/core/audin_operator_wasm.js";
import { CORE_WASM_BASE64 } from "./generated/core-wasm.js";
import { WORKLET_WASM_BASE64 } from "./generated/worklet-wasm.js";

/** Decodes standard base64 (main thread only: worklets have no `atob`). */
export function base64ToBytes(base64: string): Uint8Array<ArrayBuffer> {
  const binary = atob(base64);
  const bytes = new Uint8Array(new ArrayBuffer(binary.length));
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

let core: Promise<void> | undefined;

/** Instantiates the wasm core once (async: no main-thread size limit). */
export function loadCore(): Promise<void> {
  core ??= initCore({ module_or_path: base64ToBytes(CORE_WASM_BASE64) }).then(() => undefined);
  return core;
}

/** The wire protocol version of the wasm core, e.g. `"v1"`. */
export async function coreProtocolVersion(): Promise<string> {
  await loadCore();
  return protocol_version();
}

let worklet: Promise<WebAssembly.Module> | undefined;

/**
 * The AudioWorklet codec module, compiled on the main thread; pass it to the
 * worklet in `processorOptions` (AudioWorkletGlobalScope cannot decode it).
 */
export function workletModule(): Promise<WebAssembly.Module> {
  worklet ??= WebAssembly.compile(base64ToBytes(WORKLET_WASM_BASE64));
  return worklet;
}
