// The JSON the wasm core hands out (`WasmOperator.poll_output()`), typed.
// Mirrors `audin_operator::core::{Output, Event, OpValue, CallInfo}`; unknown
// `type`s are ignored by the driver so the core may add variants.

import type { CallInfo } from "./call.js";
import type { OperatorErrorCode, OperatorPhoneNumber, PresenceState } from "./types.js";

/** @internal */
export type SocketKind = { type: "presence" } | { type: "audio"; callSid: string };

/** @internal */
export type CoreEvent =
  | { type: "presenceStateChanged"; state: PresenceState }
  | { type: "availabilityChanged"; accepted: string[]; rejected: string[] }
  | {
      type: "incomingCall" | "callStarted" | "callEnded" | "callUpdated" | "callReconnecting" | "callReconnected";
      call: CallInfo;
    }
  | { type: "error"; code: OperatorErrorCode; message: string; cause?: string };

/** @internal */
export type OpValue =
  | { type: "none" }
  | { type: "availability"; accepted: string[]; rejected: string[] }
  | { type: "call"; call: CallInfo }
  | { type: "phoneNumbers"; phoneNumbers: OperatorPhoneNumber[] };

/** @internal */
export interface CoreErrorJson {
  code: OperatorErrorCode;
  message: string;
}

/** @internal */
export type CoreOutput =
  | { type: "fetchToken"; id: number }
  | { type: "openSocket"; id: number; url: string; kind: SocketKind }
  | { type: "sendText"; socket: number; text: string }
  | { type: "closeSocket"; socket: number; code: number; reason: string }
  | { type: "httpRequest"; id: number; method: string; url: string; bearerToken: string }
  | { type: "startMedia"; callSid: string; socket: number }
  | { type: "stopMedia"; callSid: string }
  | { type: "setMuted"; callSid: string; muted: boolean }
  | { type: "event"; event: CoreEvent }
  | {
      type: "completed";
      op: number;
      result: { ok: true; value: OpValue } | { ok: false; error: CoreErrorJson };
    }
  | { type: "log"; level: "debug" | "info" | "warn" | "error"; message: string };
