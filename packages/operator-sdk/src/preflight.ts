// Preflight: performs the I/O of `AudinOperator.preflight()` — getToken, the
// presence round trip, the echo test over a real audio socket with the
// call audio graph (audio.ts) — and feeds what it observes to the wasm
// core's `WasmPreflight` (crates/operator/src/core/preflight.rs), which
// holds every figure (the call quality monitor's maths) and decides the
// verdict.

import { MediaSession } from "./audio.js";
import { loadCore, refusal } from "./core.js";
import { OperatorRequestError } from "./errors.js";
import { WasmPreflight } from "./generated/core/audin_operator_wasm.js";
import type { OperatorErrorCode, OperatorLogger, OperatorToken } from "./types.js";

/** Options of {@link AudinOperator.preflight}. */
export interface PreflightOptions {
  /** The service, as in {@link AudinOperatorConfig.coreUrl}. */
  coreUrl: string;
  /** Returns a session token, as in {@link AudinOperatorConfig.getToken}. */
  getToken: () => Promise<OperatorToken>;
  /** How long the echo test sends audio, ms: 2000 to 30000, default 10000. */
  durationMs?: number;
  /** `getUserMedia` audio constraints; default as for calls (echo cancellation, noise suppression, AGC). */
  audioConstraints?: MediaTrackConstraints;
  /** Where diagnostics go; default `console`. */
  logger?: OperatorLogger;
}

/** The overall judgement of a preflight, best first; `failed`: a step could not be done. */
export type PreflightVerdict = "excellent" | "good" | "fair" | "poor" | "failed";

/**
 * Why a preflight's verdict is not `excellent`. Failed steps:
 * `token-fetch-failed`, `token-rejected`, `presence-unreachable`,
 * `audio-unreachable`, `echo-unsupported` (the service has no preflight
 * echo), `microphone-unavailable`, `no-echo-received`. Figures:
 * `slow-token-fetch`, `high-presence-rtt`, `high-rtt`, `high-jitter`,
 * `high-packet-loss`, `low-mos`, `no-microphone-signal`.
 */
export type PreflightReasonCode =
  | "token-fetch-failed"
  | "token-rejected"
  | "presence-unreachable"
  | "audio-unreachable"
  | "echo-unsupported"
  | "microphone-unavailable"
  | "no-echo-received"
  | "slow-token-fetch"
  | "high-presence-rtt"
  | "high-rtt"
  | "high-jitter"
  | "high-packet-loss"
  | "low-mos"
  | "no-microphone-signal";

/** One reason of a {@link PreflightReport}. */
export interface PreflightReason {
  /** Which step or figure. */
  code: PreflightReasonCode;
  /** The grade this reason alone gives (`failed` for a failed step). */
  verdict: PreflightVerdict;
  /** For a failed step: what went wrong, for people. */
  message?: string;
  /** The figure (ms, %, or MOS), for a graded figure. */
  value?: number;
  /** The bound of the next better grade, which `value` missed. */
  threshold?: number;
}

/** What {@link AudinOperator.preflight} measured and concluded. Figures not measured are `null`. */
export interface PreflightReport {
  /** The worst grade of the figures, or `failed`. */
  verdict: PreflightVerdict;
  /** Every failed step and every figure worse than excellent, failures first. */
  reasons: PreflightReason[];
  /** How long `getToken` took, ms. */
  tokenFetchMs: number | null;
  /** One round trip through the presence socket, ms (without authenticating: no session is replaced, nobody goes online). */
  presenceRttMs: number | null;
  /** The audio socket's round trip (`ping` → `pong`), ms. */
  rttMs: number | null;
  /** Interarrival jitter of the echoed audio (RFC 3550), ms. */
  jitterMs: number | null;
  /** Echoed frames lost over the last 5 s of the test, percent. */
  packetLossPercent: number | null;
  /** E-model MOS estimate of the path (ITU-T G.107, G.711), 1 to 4.5. */
  mos: number | null;
  /** Whether the microphone's level moved during the test (a dead or OS-muted one reads a constant level). */
  microphoneSignal: boolean;
  /** Microphone frames (20 ms) sent to the echo. */
  framesSent: number;
  /** Echoed frames received. */
  framesReceived: number;
}

const SUBPROTOCOL = "audin.operator.v1";
/** Longest wait for `getToken`, ms (as the operator's default `tokenTimeoutMs`). */
const TOKEN_TIMEOUT_MS = 10_000;
/** Longest wait for a socket to open and answer, ms. */
const STEP_TIMEOUT_MS = 5_000;
/** Steps of `P.Fail`. */
const TOKEN = 0;
const PRESENCE = 1;
const AUDIO = 2;
const MICROPHONE = 3;

/**
 * The kinds of `WasmPreflight.input`, one method for every step (same
 * numbers as `PreflightInput` in crates/wasm/src/lib.rs, which says what
 * each passes and returns): one exported method instead of one per step
 * keeps the bundle small.
 */
const enum P {
  PresenceUrl,
  AudioUrl,
  DurationMs,
  TokenFetched,
  Fail,
  PresenceProbe,
  PresenceText,
  PreflightMessage,
  AudioText,
  FrameReceived,
  Levels,
  PollPing,
  Sample,
  Report,
  Error,
}

const now = (): number => performance.now();

/** Feeds one step to the core at `now()`; the kind's text, if it has one. */
const step = (p: WasmPreflight, kind: P, x = 0, text = "", y = 0): string | undefined =>
  p.input(kind, now(), x, y, text);
/** Records that step `which` (TOKEN … MICROPHONE) failed, or its socket closed. */
const fail = (p: WasmPreflight, which: number, detail: string): void => void step(p, P.Fail, which, detail);
const describe = (e: unknown): string => String((e as Error)?.message ?? e);

/** Calls `getToken` with a timeout: the token, or `undefined` after recording the failure. */
async function fetchToken(p: WasmPreflight, getToken: () => Promise<OperatorToken>): Promise<string | undefined> {
  const t0 = now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const grant = await Promise.race([
      Promise.resolve().then(getToken),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${TOKEN_TIMEOUT_MS} ms`)), TOKEN_TIMEOUT_MS);
      }),
    ]);
    const token: unknown = grant?.token;
    if (typeof token !== "string" || token === "") throw new Error("it returned no token");
    step(p, P.TokenFetched, now() - t0);
    return token;
  } catch (e) {
    fail(p, TOKEN, describe(e));
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Opens a socket of the service and runs `session` on it until it calls
 * `done` or the socket closes (reported through `closed`); then the
 * cleanup `session` returned runs, once. Never rejects.
 */
function withSocket(
  url: string,
  closed: (detail: string) => void,
  session: (ws: WebSocket, done: () => void) => () => void,
): Promise<void> {
  return new Promise<void>((resolve) => {
    let ws: WebSocket;
    try {
      ws = new WebSocket(url, SUBPROTOCOL);
    } catch (e) {
      closed(describe(e));
      return resolve();
    }
    ws.binaryType = "arraybuffer";
    let over = false;
    let cleanup = (): void => undefined;
    const done = (): void => {
      if (over) return;
      over = true;
      ws.onclose = ws.onmessage = ws.onopen = null;
      if (ws.readyState <= WebSocket.OPEN) ws.close(1000);
      cleanup();
      resolve();
    };
    ws.onclose = (ev) => {
      closed(ev.code === 1006 ? "could not connect, or the connection failed" : `closed ${ev.code} ${ev.reason}`.trim());
      done();
    };
    cleanup = session(ws, done);
  });
}

/** One round trip through the presence socket, without authenticating. */
function presenceRoundTrip(p: WasmPreflight): Promise<void> {
  const closed = (d: string): void => fail(p, PRESENCE, d);
  return withSocket(step(p, P.PresenceUrl) as string, closed, (ws, done) => {
    const timer = setTimeout(() => (closed(`no answer within ${STEP_TIMEOUT_MS} ms`), done()), STEP_TIMEOUT_MS);
    ws.onopen = () => ws.send(step(p, P.PresenceProbe) as string);
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string" && step(p, P.PresenceText, 0, ev.data) !== undefined) done();
    };
    return () => clearTimeout(timer);
  });
}

/** The echo test: the call audio graph's microphone frames to a preflight audio socket and back. */
function echoTest(p: WasmPreflight, token: string, o: PreflightOptions, logger: OperatorLogger): Promise<void> {
  return withSocket(
    step(p, P.AudioUrl) as string,
    (d) => fail(p, AUDIO, d),
    (ws, done) => {
      let started = false;
      let sent = 0;
      const timers: ReturnType<typeof setTimeout>[] = [];
      const ping = (): void => {
        const text = step(p, P.PollPing);
        if (text !== undefined && ws.readyState === WebSocket.OPEN) ws.send(text);
      };
      timers.push(
        setTimeout(() => {
          if (!started) (fail(p, AUDIO, `no preflightStarted within ${STEP_TIMEOUT_MS} ms`), done());
        }, STEP_TIMEOUT_MS),
      );
      // Opened at once, while the socket connects: the test then measures
      // running audio from its first frame.
      const session = new MediaSession({
        socket: 0,
        constraints: o.audioConstraints ?? { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
        // Echoed frames are measured, never played: the graph's output stays silent.
        playbackRoute: "direct",
        logger,
        send: (_socket, frame) => {
          if (started && ws.readyState === WebSocket.OPEN) (ws.send(frame), sent++);
        },
        failed: (_code: OperatorErrorCode, message: string) => (fail(p, MICROPHONE, message), done()),
        levels: (input, output) => step(p, P.Levels, input, "", output),
      });
      session.start();
      ws.onopen = () => ws.send(step(p, P.PreflightMessage, 0, token) as string);
      ws.onmessage = (ev) => {
        if (typeof ev.data !== "string") return void step(p, P.FrameReceived);
        const what = step(p, P.AudioText, 0, ev.data);
        if (what === "stop") return done();
        if (what !== "started") return;
        started = true;
        ping();
        timers.push(setInterval(() => (step(p, P.Sample, sent), ping()), 1_000));
        // The last sample ends the test: echoes after it would be judged
        // against a sender that stopped.
        timers.push(setTimeout(() => (step(p, P.Sample, sent), done()), Number(step(p, P.DurationMs))));
      };
      return () => {
        for (const t of timers) clearTimeout(t);
        session.stop();
      };
    },
  );
}

/**
 * Runs a preflight (see {@link AudinOperator.preflight}).
 * @internal
 */
export async function runPreflight(o: PreflightOptions): Promise<PreflightReport> {
  const bad = (m: string): never => {
    throw new OperatorRequestError("INVALID_CONFIG", m);
  };
  if (!o || typeof o !== "object") bad("preflight needs { coreUrl, getToken, durationMs? }");
  if (typeof o.getToken !== "function") bad("getToken must be a function returning { token }");
  if (typeof o.coreUrl !== "string") bad("coreUrl must be a string");
  if (o.durationMs !== undefined && typeof o.durationMs !== "number") bad("durationMs must be a number");
  await loadCore();
  const p = new WasmPreflight(o.coreUrl, o.durationMs);
  const refused = step(p, P.Error);
  if (refused !== undefined) {
    p.free();
    throw refusal(refused);
  }
  try {
    const token = await fetchToken(p, o.getToken);
    await presenceRoundTrip(p);
    if (token !== undefined) await echoTest(p, token, o, o.logger ?? console);
    return JSON.parse(step(p, P.Report) as string) as PreflightReport;
  } finally {
    p.free();
  }
}
