// @audin.ai/operator-sdk — headless browser SDK for the Audin operator
// softphone. The public API is documented in README.md (the contract).

export { AudinOperator, SDK_VERSION } from "./operator.js";
export type { OperatorCall } from "./call.js";
export { OperatorRequestError } from "./errors.js";
export type {
  AudinOperatorConfig,
  AudioDevice,
  AudioDevices,
  AvailabilityChange,
  CallDirection,
  CallEndReason,
  CallState,
  ListAudioDevicesOptions,
  OperatorError,
  OperatorErrorCode,
  OperatorEvents,
  OperatorLogger,
  OperatorPhoneNumber,
  OperatorToken,
  PlaybackRoute,
  PresenceState,
  VolumeLevels,
} from "./types.js";
export type { AudioTap } from "./audio.js";
export type { CallStats, QualityWarning, QualityWarningName } from "./quality.js";
export type {
  PreflightOptions,
  PreflightReason,
  PreflightReasonCode,
  PreflightReport,
  PreflightVerdict,
} from "./preflight.js";
export { Resampler, decodeALaw, decodeMuLaw, encodeALaw, encodeMuLaw, resampleLinear } from "./codec.js";
// Diagnostics (also used by tests/smoke.test.mjs to check the inlined wasm).
export { coreProtocolVersion, workletModule } from "./core.js";
