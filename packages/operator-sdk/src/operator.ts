// AudinOperator: the public facade. It performs the I/O the wasm core asks
// for (WebSockets, fetch, getToken, timers, the audio graph) and presents the
// typed API. Every decision — presence, heartbeats, reconnects, token
// refresh, call states, validation — is the core's (crates/operator).

import { WasmOperator } from "./generated/core/audin_operator_wasm.js";
import { MediaSession } from "./audio.js";
import { Call, type CallController, type CallInfo, type OperatorCall } from "./call.js";
import { loadCore, loadCoreSync } from "./core.js";
import { Emitter } from "./emitter.js";
import { OperatorRequestError } from "./errors.js";
import type {
  AudinOperatorConfig,
  OperatorErrorCode,
  OperatorEvents,
  OperatorLogger,
  OperatorPhoneNumber,
  PresenceState,
} from "./types.js";
import type { CoreEvent, CoreOutput, OpValue, SocketKind } from "./wire.js";

/** The SDK version, sent to the service as `client: "operator-sdk/<version>"`. */
export const SDK_VERSION = "0.1.0";

/** The WebSocket subprotocol of the wire protocol v1. */
const SUBPROTOCOL = "audin.operator.v1";
/** How often an audio socket tells the core that frames are arriving. */
const AUDIO_REPORT_EVERY_MS = 250;

/** Default `getUserMedia` audio constraints (the README's defaults). */
const DEFAULT_AUDIO_CONSTRAINTS: MediaTrackConstraints = {
  echoCancellation: true,
  noiseSuppression: true,
  autoGainControl: true,
};

interface Pending {
  resolve: (value: OpValue) => void;
  reject: (error: OperatorRequestError) => void;
}

interface Socket {
  ws: WebSocket;
  kind: SocketKind;
}

const now = (): number => performance.now();

/** Turns what the core threw (an `Error` with a `code`) into the public error type. */
function toRequestError(e: unknown): OperatorRequestError {
  if (e instanceof OperatorRequestError) return e;
  const err = e as { code?: unknown; message?: unknown } | null;
  if (err && typeof err.code === "string") {
    return new OperatorRequestError(err.code as OperatorErrorCode, String(err.message ?? err.code));
  }
  return new OperatorRequestError("INTERNAL", `unexpected SDK fault: ${String(e)}`, e);
}

/**
 * A headless operator softphone: presence, inbound and outbound calls, audio.
 *
 * ```ts
 * const op = new AudinOperator({ coreUrl: "https://core.audin.ai", getToken });
 * op.on("incomingCall", (call) => call.accept());
 * await op.goOnline([numberId]);
 * ```
 */
export class AudinOperator {
  private core: WasmOperator | null = null;
  private readonly ready: Promise<void>;
  private readonly config: AudinOperatorConfig;
  private readonly logger: OperatorLogger;
  private readonly emitter: Emitter<OperatorEvents>;
  private readonly calls = new Map<string, Call>();
  private readonly pending = new Map<number, Pending>();
  private readonly sockets = new Map<number, Socket>();
  private readonly media = new Map<string, MediaSession>();
  private readonly controller: CallController;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timerAt: number | undefined;
  private pumping = false;

  /**
   * Creates an operator in state `offline`. Nothing connects until
   * {@link AudinOperator.goOnline} or {@link AudinOperator.listPhoneNumbers}.
   *
   * @param config - see {@link AudinOperatorConfig}
   * @throws {@link OperatorRequestError} `INVALID_CONFIG` for an invalid value
   */
  constructor(config: AudinOperatorConfig) {
    if (!config || typeof config.getToken !== "function") {
      throw new OperatorRequestError("INVALID_CONFIG", "getToken must be a function returning { token }");
    }
    const route: unknown = config.playbackRoute;
    if (route !== undefined && route !== "echo-safe" && route !== "direct") {
      throw new OperatorRequestError(
        "INVALID_CONFIG",
        `playbackRoute must be "echo-safe" or "direct", got ${JSON.stringify(String(route).slice(0, 40))}`,
      );
    }
    this.config = config;
    this.logger = config.logger ?? console;
    this.emitter = new Emitter<OperatorEvents>(() => this.logger);
    this.controller = {
      accept: (sid) => this.input((c) => c.accept(now(), sid)),
      reject: (sid) => this.input((c) => c.reject(now(), sid)),
      mute: (sid, on) => this.input((c) => c.mute(now(), sid, !!on)),
      hangup: (sid) => this.input((c) => c.hangup(now(), sid)),
      sendDtmf: (sid, digit) => {
        const core = this.core;
        if (!core) throw new OperatorRequestError("CALL_NOT_FOUND", "no call");
        try {
          core.send_dtmf(now(), sid, String(digit));
        } catch (e) {
          throw toRequestError(e);
        } finally {
          this.pump();
        }
      },
    };
    if (loadCoreSync()) {
      this.core = this.createCore();
      this.ready = Promise.resolve();
    } else {
      this.ready = loadCore().then(() => {
        this.core = this.createCore();
      });
      this.ready.catch(() => undefined);
    }
  }

  private createCore(): WasmOperator {
    const c = this.config;
    const json = JSON.stringify({
      coreUrl: c.coreUrl,
      heartbeatIntervalMs: c.heartbeatIntervalMs,
      reconnectBackoffMs: c.reconnectBackoffMs,
      clientName: `operator-sdk/${SDK_VERSION}`,
    });
    try {
      return new WasmOperator(json);
    } catch (e) {
      throw toRequestError(e);
    }
  }

  // ── public API ─────────────────────────────────────────────────────────

  /** The presence channel state. */
  get state(): PresenceState {
    return (this.core?.state() as PresenceState | undefined) ?? "offline";
  }

  /** The call in progress (ringing, connecting or active), or `null`. */
  get currentCall(): OperatorCall | null {
    const json = this.core?.current_call();
    return json ? this.track(JSON.parse(json) as CallInfo) : null;
  }

  /**
   * Lists the phone numbers of the account, using a session token from
   * `getToken` (no API key in the browser).
   *
   * @throws {@link OperatorRequestError} `UNAUTHORIZED` on a persistent 401,
   * `REQUEST_FAILED` on any other failure
   */
  async listPhoneNumbers(): Promise<OperatorPhoneNumber[]> {
    const value = await this.operation((c) => c.list_phone_numbers(now()));
    return value.type === "phoneNumbers" ? value.phoneNumbers : [];
  }

  /**
   * Connects the presence channel (if needed) and announces availability on
   * these number ids; resolves when the server confirmed (see
   * `availabilityChanged` for which were accepted). Call again to change the
   * set. While the channel reconnects the promise stays pending.
   *
   * @param phoneNumberIds - ids from {@link AudinOperator.listPhoneNumbers}
   * @throws {@link OperatorRequestError} e.g. `CANCELLED` (went offline
   * first), `REPLACED`
   */
  async goOnline(phoneNumberIds: string[]): Promise<void> {
    await this.operation((c) => c.go_online(now(), JSON.stringify(phoneNumberIds ?? [])));
  }

  /**
   * Drops availability, ends any active call (`endReason: "offline"`),
   * closes the presence channel and stops reconnecting.
   */
  async goOffline(): Promise<void> {
    await this.operation((c) => c.go_offline(now()));
  }

  /**
   * Places an outbound call. Resolves when the platform accepted it and the
   * audio bridge is opening (`state: "connecting"`); `callStarted` follows
   * when the far end answers. One call at a time.
   *
   * @param to - callee, E.164
   * @param options - `callerId`: one of the account's numbers, E.164
   * @throws {@link OperatorRequestError} `INVALID_NUMBER`, `OPERATOR_BUSY`,
   * `NOT_ONLINE`, `NUMBER_NOT_OWNED`, `TIMEOUT`, `CONNECTION_LOST`, …
   */
  async dial(to: string, options: { callerId: string }): Promise<OperatorCall> {
    const value = await this.operation((c) => c.dial(now(), String(to), String(options?.callerId ?? "")));
    if (value.type !== "call") throw new OperatorRequestError("INTERNAL", "dial completed without a call");
    return this.track(value.call);
  }

  /**
   * Subscribes to an event.
   * @returns a function that unsubscribes the listener
   */
  on<K extends keyof OperatorEvents>(event: K, listener: (payload: OperatorEvents[K]) => void): () => void {
    return this.emitter.on(event, listener);
  }

  /** Unsubscribes a listener added with {@link AudinOperator.on}. */
  off<K extends keyof OperatorEvents>(event: K, listener: (payload: OperatorEvents[K]) => void): void {
    this.emitter.off(event, listener);
  }

  /**
   * Subscribes to the next occurrence of an event only.
   * @returns a function that unsubscribes the listener before it fired
   */
  once<K extends keyof OperatorEvents>(event: K, listener: (payload: OperatorEvents[K]) => void): () => void {
    return this.emitter.once(event, listener);
  }

  // ── the driver loop ────────────────────────────────────────────────────

  /** Starts an operation in the core and waits for its `completed` output. */
  private async operation(start: (core: WasmOperator) => number): Promise<OpValue> {
    try {
      await this.ready;
    } catch (e) {
      throw toRequestError(e);
    }
    const core = this.core as WasmOperator;
    let op: number;
    try {
      op = start(core);
    } catch (e) {
      this.pump();
      throw toRequestError(e);
    }
    const done = new Promise<OpValue>((resolve, reject) => this.pending.set(op, { resolve, reject }));
    this.pump();
    return done;
  }

  /** Feeds one input to the core, then performs what it asks. */
  private input(feed: (core: WasmOperator) => void): void {
    const core = this.core;
    if (!core) return;
    try {
      feed(core);
    } catch (e) {
      this.logger.error("audin: core input failed", e);
    }
    this.pump();
  }

  /** Drains the core's outputs and re-arms the one timer. Not re-entrant. */
  private pump(): void {
    const core = this.core;
    if (!core || this.pumping) return;
    this.pumping = true;
    try {
      for (let json = core.poll_output(); json !== undefined; json = core.poll_output()) {
        try {
          this.perform(JSON.parse(json) as CoreOutput);
        } catch (e) {
          this.logger.error("audin: performing a core output failed", e);
        }
      }
    } finally {
      this.pumping = false;
    }
    const at = core.poll_timeout();
    if (at === this.timerAt) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = at;
    if (at !== undefined) {
      this.timer = setTimeout(
        () => {
          this.timer = undefined;
          this.timerAt = undefined;
          this.input((c) => c.handle_timeout(now()));
        },
        Math.max(0, at - now()),
      );
    }
  }

  private perform(out: CoreOutput): void {
    switch (out.type) {
      case "fetchToken":
        return this.fetchToken(out.id);
      case "openSocket":
        return this.openSocket(out.id, out.url, out.kind);
      case "sendText": {
        const s = this.sockets.get(out.socket);
        if (s && s.ws.readyState === WebSocket.OPEN) s.ws.send(out.text);
        return;
      }
      case "closeSocket":
        return this.closeSocket(out.socket, out.code, out.reason);
      case "httpRequest":
        return this.httpRequest(out.id, out.method, out.url, out.bearerToken);
      case "startMedia":
        return this.startMedia(out.callSid, out.socket);
      case "stopMedia": {
        const session = this.media.get(out.callSid);
        this.media.delete(out.callSid);
        session?.stop();
        return;
      }
      case "setMuted":
        this.media.get(out.callSid)?.setMuted(out.muted);
        return;
      case "event":
        return this.event(out.event);
      case "completed": {
        const p = this.pending.get(out.op);
        if (!p) return;
        this.pending.delete(out.op);
        if (out.result.ok) p.resolve(out.result.value);
        else p.reject(new OperatorRequestError(out.result.error.code, out.result.error.message));
        return;
      }
      case "log": {
        const log = this.logger[out.level] ?? this.logger.info;
        log.call(this.logger, `audin: ${out.message}`);
        return;
      }
    }
  }

  private fetchToken(id: number): void {
    let promise: Promise<unknown>;
    try {
      promise = Promise.resolve(this.config.getToken());
    } catch (e) {
      promise = Promise.reject(e);
    }
    promise.then(
      (grant) => this.input((c) => c.handle_token_grant(now(), Date.now(), id, JSON.stringify(grant ?? null))),
      (e: unknown) =>
        this.input((c) => c.handle_token_error(now(), Date.now(), id, `getToken failed: ${String((e as Error)?.message ?? e)}`)),
    );
  }

  private openSocket(id: number, url: string, kind: SocketKind): void {
    let ws: WebSocket;
    try {
      ws = new WebSocket(url, SUBPROTOCOL);
    } catch (e) {
      // Reported asynchronously, like any other connection failure.
      setTimeout(() => this.input((c) => c.handle_socket_closed(now(), id, undefined, String(e))), 0);
      return;
    }
    ws.binaryType = "arraybuffer";
    this.sockets.set(id, { ws, kind });
    // The core only hears that audio arrives (a few times a second), so it
    // can tell a live audio socket from a silent, half-open one.
    let lastAudioReport = -Infinity;
    ws.onopen = () => this.input((c) => c.handle_socket_open(now(), id));
    ws.onmessage = (ev: MessageEvent) => {
      if (typeof ev.data === "string") {
        const text = ev.data;
        this.input((c) => c.handle_socket_text(now(), id, text));
      } else if (ev.data instanceof ArrayBuffer && kind.type === "audio") {
        this.media.get(kind.callSid)?.receive(id, ev.data);
        const t = now();
        if (t - lastAudioReport >= AUDIO_REPORT_EVERY_MS) {
          lastAudioReport = t;
          this.input((c) => c.handle_audio_received(t, id));
        }
      }
    };
    ws.onclose = (ev: CloseEvent) => {
      this.sockets.delete(id);
      // 1006: the connection failed without a close frame.
      const code = ev.code === 1006 ? undefined : ev.code;
      this.input((c) => c.handle_socket_closed(now(), id, code, ev.reason));
    };
  }

  private closeSocket(id: number, code: number, reason: string): void {
    const s = this.sockets.get(id);
    if (!s) return;
    this.sockets.delete(id);
    s.ws.onopen = s.ws.onmessage = s.ws.onclose = null;
    try {
      s.ws.close(code, reason);
    } catch {
      s.ws.close(); // a code the browser refuses to send (only 1000 and 3000-4999)
    }
  }

  private httpRequest(id: number, method: string, url: string, bearerToken: string): void {
    fetch(url, { method, headers: { Authorization: `Bearer ${bearerToken}` } })
      .then(async (res) => {
        const body = await res.text();
        this.input((c) => c.handle_http_response(now(), id, res.status, body));
      })
      .catch((e: unknown) =>
        this.input((c) => c.handle_http_error(now(), id, String((e as Error)?.message ?? e))),
      );
  }

  private startMedia(callSid: string, socket: number): void {
    const existing = this.media.get(callSid);
    if (existing) {
      existing.bind(socket); // reattached: move the audio onto the new socket
      return;
    }
    const session = new MediaSession({
      socket,
      constraints: this.config.audioConstraints ?? DEFAULT_AUDIO_CONSTRAINTS,
      playbackRoute: this.config.playbackRoute ?? "echo-safe",
      logger: this.logger,
      send: (sock, frame) => {
        const s = this.sockets.get(sock);
        if (s && s.ws.readyState === WebSocket.OPEN) s.ws.send(frame);
      },
      failed: (code, message) => {
        if (this.media.get(callSid) !== session) return;
        this.media.delete(callSid);
        session.stop();
        this.input((c) => c.handle_media_failed(now(), callSid, code, message));
      },
      levels: (input, output) => {
        // Only the session still in use speaks for the call: none after it ended.
        if (this.media.get(callSid) === session) this.emitter.emit("volume", { callSid, input, output });
      },
    });
    this.media.set(callSid, session);
    session.start();
  }

  private event(e: CoreEvent): void {
    switch (e.type) {
      case "presenceStateChanged":
        return this.emitter.emit("presenceStateChanged", e.state);
      case "availabilityChanged":
        return this.emitter.emit("availabilityChanged", { accepted: e.accepted, rejected: e.rejected });
      case "error": {
        const payload: OperatorEvents["error"] =
          e.cause === undefined ? { code: e.code, message: e.message } : { code: e.code, message: e.message, cause: e.cause };
        return this.emitter.emit("error", payload);
      }
      case "callUpdated":
        this.track(e.call);
        return;
      case "callEnded": {
        const call = this.track(e.call);
        this.calls.delete(call.callSid);
        return this.emitter.emit("callEnded", call);
      }
      case "incomingCall":
      case "callStarted":
      case "callReconnecting":
      case "callReconnected":
        return this.emitter.emit(e.type, this.track(e.call));
    }
  }

  /** The one `OperatorCall` object of a callSid, updated from a core snapshot. */
  private track(info: CallInfo): Call {
    let call = this.calls.get(info.callSid);
    if (call) call.update(info);
    else {
      call = new Call(info, this.controller);
      if (info.state !== "ended") this.calls.set(info.callSid, call);
    }
    return call;
  }
}
