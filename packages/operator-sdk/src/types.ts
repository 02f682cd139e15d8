// Public types of @audin.ai/operator-sdk. Names, options and defaults follow
// the package README (the contract); codes and reasons follow
// docs/protocol-v1.md.

import type { QualityWarning } from "./quality.js";
import type { OperatorCall } from "./call.js";

/**
 * State of the presence channel.
 *
 * - `offline`: not connected (initial state, after `goOffline()`, or after the
 *   session was replaced by another tab/device).
 * - `connecting`: `goOnline()` is opening the presence channel.
 * - `online`: connected and authenticated.
 * - `reconnecting`: the channel dropped; the SDK reconnects on the
 *   `reconnectBackoffMs` schedule.
 */
export type PresenceState = "offline" | "connecting" | "online" | "reconnecting";

/**
 * Why a call ended (`OperatorCall.endReason`).
 *
 * - `hangup`: the operator hung up.
 * - `remote_hangup`: the far end hung up, or the caller gave up while ringing.
 * - `taken_by_other`: another operator accepted the inbound offer first.
 * - `rejected`: declined by every operator, or the far end was busy or declined.
 * - `no_answer`: nobody answered before the ring timeout.
 * - `failed`: carrier error, audio lost past the grace window, server restart.
 * - `offline`: the operator went offline during the call.
 */
export type CallEndReason =
  | "hangup"
  | "remote_hangup"
  | "taken_by_other"
  | "rejected"
  | "no_answer"
  | "failed"
  | "offline";

/** Direction of a call, seen from the operator. */
export type CallDirection = "inbound" | "outbound";

/**
 * Lifecycle state of an {@link OperatorCall}:
 * `ringing` (inbound offer) → `connecting` (accepted / dialled, audio opening)
 * → `active` (audio established and, outbound, answered) → `ended`.
 */
export type CallState = "ringing" | "connecting" | "active" | "ended";

/** One phone number of the account, as listed by `listPhoneNumbers()`. */
export interface OperatorPhoneNumber {
  /** Stable id; pass it to `goOnline([...])`. */
  readonly id: string;
  /** The number in E.164 (e.g. `"+390299999999"`); use it as `callerId`. */
  readonly phoneNumber: string;
  /** Label chosen by the account. */
  readonly displayName: string;
}

/**
 * Every error code the SDK reports, in `error` events and as
 * {@link OperatorRequestError.code}. Stable: never renamed or reused; new
 * codes may be added in a minor release. See docs/protocol-v1.md.
 */
export type OperatorErrorCode =
  // input
  | "INVALID_JSON"
  | "UNKNOWN_MESSAGE"
  | "INVALID_MESSAGE"
  | "BINARY_NOT_ALLOWED"
  | "INVALID_FRAME"
  | "MESSAGE_TOO_LARGE"
  | "INVALID_NUMBER"
  | "INVALID_DTMF"
  | "UNSUPPORTED_PROTOCOL"
  // authentication and authorisation
  | "NOT_AUTHENTICATED"
  | "UNAUTHORIZED"
  | "TOKEN_EXPIRED"
  | "FORBIDDEN"
  | "NUMBER_NOT_OWNED"
  | "RATE_LIMITED"
  // calls
  | "CALL_NOT_FOUND"
  | "OPERATOR_BUSY"
  | "NOT_ONLINE"
  // session lifecycle
  | "REPLACED"
  | "HEARTBEAT_TIMEOUT"
  | "SERVER_SHUTDOWN"
  | "INTERNAL"
  // SDK-side
  | "TOKEN_FETCH_FAILED"
  | "REQUEST_FAILED"
  | "CONNECTION_LOST"
  | "AUDIO_CONNECTION_LOST"
  | "TIMEOUT"
  | "CANCELLED"
  | "MEDIA_ACCESS_DENIED"
  | "AUDIO_FAILED"
  | "INVALID_CONFIG"
  // SDK-side: audio devices (additive)
  | "AUDIO_DEVICE_NOT_FOUND"
  | "AUDIO_DEVICE_LOST"
  | "AUDIO_OUTPUT_NOT_SUPPORTED";

/** Payload of the `error` event: a non-fatal problem the app may surface. */
export interface OperatorError {
  /** Stable code, see {@link OperatorErrorCode}. */
  readonly code: OperatorErrorCode;
  /** Human-readable description (never contains a token). */
  readonly message: string;
  /** The underlying exception or its description, when there is one. */
  readonly cause?: unknown;
}

/** What `getToken` resolves to: the body of your backend's token endpoint. */
export interface OperatorToken {
  /** The session token (opaque to the SDK). */
  token: string;
  /** Its expiry (ISO 8601 / RFC 3339); optional but recommended. */
  expiresAt?: string;
}

/**
 * Diagnostic sink. `console` fits; so does any logger with these four
 * methods. Messages never contain a session token.
 */
export interface OperatorLogger {
  /** Fine-grained diagnostics (socket opens, state transitions). */
  debug(message: string, ...args: unknown[]): void;
  /** Notable lifecycle events. */
  info(message: string, ...args: unknown[]): void;
  /** Recoverable problems (reconnects, retried requests). */
  warn(message: string, ...args: unknown[]): void;
  /** Failures. */
  error(message: string, ...args: unknown[]): void;
}

/** Configuration of {@link AudinOperator}. */
export interface AudinOperatorConfig {
  /**
   * Audin operator service base URL, e.g. `"https://core.audin.ai"`.
   * `http(s)` is upgraded to `ws(s)` internally for the WebSockets.
   */
  coreUrl: string;
  /**
   * Fetches a fresh session token from **your** backend (which holds the
   * Account API Key). Called on connect, on reconnect, before expiry and when
   * a call's audio leg opens: always return a new token.
   */
  getToken: () => Promise<OperatorToken>;
  /** Presence keep-alive interval in ms. Default `25000`. */
  heartbeatIntervalMs?: number;
  /**
   * Backoff schedule for presence reconnects, in ms; the last value repeats.
   * Default `[1000, 2000, 5000, 10000, 30000]`.
   */
  reconnectBackoffMs?: number[];
  /**
   * Passed to `getUserMedia({ audio })`. Default
   * `{ echoCancellation: true, noiseSuppression: true, autoGainControl: true }`.
   */
  audioConstraints?: MediaTrackConstraints;
  /** Diagnostic sink. Default `console`. */
  logger?: OperatorLogger;
  /**
   * How the far end's audio reaches the speakers. Default `"echo-safe"`: an
   * in-page WebRTC loopback into an `<audio>` element, so the browser's
   * echo canceller always hears it as the reference and an operator on
   * laptop speakers never sends the caller's own voice back (measured 53–63
   * dB less echo in Chromium, with or without Chrome-wide echo
   * cancellation). Where the browser can insert the far end's frames into
   * the loopback (`RTCRtpScriptTransform`) it adds under 10 ms over the
   * direct route from 3–4 s into a call (about 20 ms before that);
   * where the loopback must encode them it adds about 60 ms (WebRTC's own
   * jitter buffer and output). `"direct"` plays through Web Audio, but only
   * browsers that cancel Web Audio output
   * (Chromium with its default Chrome-wide echo cancellation) keep the echo
   * out; meant for operators on headsets. Additive to the seed contract.
   */
  playbackRoute?: PlaybackRoute;
}

/** See {@link AudinOperatorConfig.playbackRoute}. */
export type PlaybackRoute = "echo-safe" | "direct";

/** Payload of `availabilityChanged`. */
export interface AvailabilityChange {
  /** Number ids the operator is now online on. */
  readonly accepted: string[];
  /** Number ids refused (not owned by the account or not granted by the token). */
  readonly rejected: string[];
}

/**
 * Payload of the `volume` event: the audio levels of the call in progress,
 * about 20 times a second. Levels are RMS over the last ~50 ms, linear in
 * `[0, 1]` (1 = a full-scale square wave; a full-scale sine is about 0.71;
 * `20 * Math.log10(level)` gives dBFS).
 */
export interface VolumeLevels {
  /** The call these levels belong to. */
  readonly callSid: string;
  /**
   * The microphone, as captured (after the browser's `audioConstraints`
   * processing). Reported **even while the call is muted** (the far end then
   * hears silence), so a UI can show "you are muted but talking".
   */
  readonly input: number;
  /** What is played to the speakers: the far end's audio. */
  readonly output: number;
}

/**
 * One microphone or speaker, as `navigator.mediaDevices.enumerateDevices()`
 * reports it.
 *
 * Before the page holds a microphone grant the browser hides the details:
 * `label` is `""` and there may be a single entry per kind with an empty
 * `deviceId` (see {@link AudinOperator.listAudioDevices}).
 */
export interface AudioDevice {
  /** Stable id of the device for this origin; pass it to `setInputDevice` / `setOutputDevice`. */
  readonly deviceId: string;
  /** Human-readable name (e.g. `"Jabra Evolve 40"`); `""` until the microphone was granted once. */
  readonly label: string;
  /** Devices of one physical unit (a headset's microphone and speaker) share a `groupId`. */
  readonly groupId: string;
}

/**
 * The audio devices of the machine: the payload of
 * {@link AudinOperator.listAudioDevices} and of the `audioDevicesChanged`
 * event.
 */
export interface AudioDevices {
  /** Microphones (`audioinput`), in the browser's order (the default first in Chromium). */
  readonly inputs: AudioDevice[];
  /** Speakers and headphones (`audiooutput`); empty where the browser does not list outputs. */
  readonly outputs: AudioDevice[];
}

/** Options of {@link AudinOperator.listAudioDevices}. */
export interface ListAudioDevicesOptions {
  /**
   * When the browser hides device labels (the page never held a microphone
   * grant), open the default microphone once — the browser shows its
   * permission prompt if the user has not decided yet — stop it at once and
   * list again. Default `false`: listing never prompts.
   */
  requestPermission?: boolean;
}

/**
 * The event map of {@link AudinOperator}: event name → payload type.
 * `callReconnecting` / `callReconnected` / `volume` / `audioDevicesChanged`
 * are additive to the seed contract.
 */
export interface OperatorEvents {
  /** The presence channel state changed. */
  presenceStateChanged: PresenceState;
  /** The server confirmed which numbers the operator is online on. */
  availabilityChanged: AvailabilityChange;
  /** An inbound call is ringing (never emitted while another call is live). */
  incomingCall: OperatorCall;
  /** Audio is established (after `accept()` / `dial()`). */
  callStarted: OperatorCall;
  /** A call terminated; inspect `endReason`. */
  callEnded: OperatorCall;
  /** A non-fatal error. */
  error: OperatorError;
  /** The call's audio channel dropped; the SDK is re-attaching it. */
  callReconnecting: OperatorCall;
  /** The call's audio channel was re-attached. */
  callReconnected: OperatorCall;
  /**
   * Input and output levels of the call whose audio is running, about 20
   * times a second from when its audio starts until it ends (none after
   * `callEnded`). Computed on the audio thread.
   */
  volume: VolumeLevels;
  /**
   * The machine's microphones or speakers changed (`devicechange`), with the
   * new list. Watched while the operator is not `offline` or a call's audio
   * runs. Additive.
   */
  audioDevicesChanged: AudioDevices;
  /**
   * A call quality warning was raised (`high-rtt`, `high-jitter`,
   * `high-packet-loss`, `low-mos`, `constant-audio-input-level`,
   * `no-audio-received`) after its condition held for a while; thresholds
   * in the README. Additive.
   */
  qualityWarning: QualityWarning;
  /** A call quality warning cleared (the condition has been good for a while). Additive. */
  qualityWarningCleared: QualityWarning;
}
