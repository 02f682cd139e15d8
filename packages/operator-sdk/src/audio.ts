// The audio graph of one call: microphone → AudioWorklet (wasm: anti-aliased
// resampling to 8 kHz, G.711 μ-law, 20 ms frames) → audio WebSocket, and
// audio WebSocket → AudioWorklet (wasm: jitter buffer, decoding, upsampling)
// → speakers. The core decides when media starts, moves, mutes and stops;
// audio samples never pass through it.

import { workletModule } from "./core.js";
import { DEFAULT_DEVICE_ID, applySink, hasDevice, quoteId } from "./devices.js";
import { OperatorRequestError } from "./errors.js";
import type { AudioDevices, OperatorErrorCode, OperatorLogger } from "./types.js";
import { type AudioRoute, type Loopback, logFallback, openLoopback } from "./playback.js";
import { PROCESSOR_NAME, PROCESSOR_SOURCE } from "./worklet-source.js";

/**
 * A tap message of the worklet (test hook): a snapshot of recent samples.
 * Install `globalThis.__audinTestTap = (tap) => …` before a call starts to
 * receive them; the SDK then asks the worklet for periodic snapshots.
 */
export interface AudioTap {
  /** `playback`: what is sent to the speakers; `capture`: the microphone input. */
  kind: "playback" | "capture";
  /** The AudioContext rate of `samples`. */
  sampleRate: number;
  /** The most recent samples, oldest first. */
  samples: Float32Array;
}

/** @internal */
export interface MediaSessionOptions {
  /** The audio socket the frames go to at first. */
  socket: number;
  constraints: MediaTrackConstraints;
  logger: OperatorLogger;
  /** Sends one 160-byte frame on an audio socket (if it is open). */
  send(socket: number, frame: ArrayBuffer): void;
  /** The media could not start or broke: report to the core. */
  failed(code: OperatorErrorCode, message: string): void;
  /** `echo-safe`: the WebRTC loopback (fallback: direct); `direct`: Web Audio. */
  playbackRoute: "echo-safe" | "direct";
  /** RMS levels in [0, 1] from the worklet, about every 50 ms. */
  levels?(input: number, output: number): void;
  /** The jitter buffer's counters from the worklet, about once a second (call quality). */
  jitterStats?(played: number, concealed: number, delayMs: number): void;
  /** The microphone to open (`undefined`: the default). */
  inputDeviceId?: string | undefined;
  /** The speaker to play on (`undefined`: the default). */
  outputDeviceId?: string | undefined;
  /**
   * A chosen device could not be used or went away and the session fell
   * back to the default (`AUDIO_DEVICE_LOST`), or the route cannot choose
   * a speaker (`AUDIO_OUTPUT_NOT_SUPPORTED`). The call goes on.
   */
  deviceProblem?(kind: "input" | "output", code: OperatorErrorCode, message: string): void;
}

/** What `setSinkId` is called on: the loopback (its `<audio>` elements) or the AudioContext. */
type SinkTarget = { setSinkId?: (id: string) => Promise<void> };

/** Whether getUserMedia failed because the asked-for device does not exist (any more). */
function missingDevice(e: unknown): boolean {
  const name = e && typeof e === "object" && "name" in e ? String(e.name) : "";
  return name === "OverconstrainedError" || name === "NotFoundError";
}

/** `"default"` means no device constraint at all (see DEFAULT_DEVICE_ID). */
function normalise(deviceId: string | undefined): string | undefined {
  return deviceId === DEFAULT_DEVICE_ID ? undefined : deviceId;
}

type TapHook = (tap: AudioTap) => void;

function tapHook(): TapHook | undefined {
  const hook = (globalThis as { __audinTestTap?: unknown }).__audinTestTap;
  return typeof hook === "function" ? (hook as TapHook) : undefined;
}

/**
 * Test hooks of the playback route: `globalThis.__audinTestRoute = (route,
 * element) => …` learns which route a call's playback took (and the loopback's
 * <audio> element); `globalThis.__audinTestPlaybackRoute = "web-audio"`
 * forces the old direct route (the echo rig's control only).
 */
type RouteHook = (route: AudioRoute, element: HTMLAudioElement | undefined) => void;

function routeHook(): RouteHook | undefined {
  const hook = (globalThis as { __audinTestRoute?: unknown }).__audinTestRoute;
  return typeof hook === "function" ? (hook as RouteHook) : undefined;
}

function describe(e: unknown): string {
  if (e && typeof e === "object" && "name" in e && "message" in e) return `${String(e.name)}: ${String(e.message)}`;
  return String(e);
}

/**
 * One call's capture and playback. Performs what the core asked
 * (`startMedia` / `setMuted` / `stopMedia`); holds no call logic.
 * @internal
 */
export class MediaSession {
  private socket: number;
  private muted = false;
  /** Microphone frames handed to the audio socket (call quality). */
  framesSent = 0;
  private stopped = false;
  private stream: MediaStream | undefined;
  private context: AudioContext | undefined;
  private source: MediaStreamAudioSourceNode | undefined;
  private node: AudioWorkletNode | undefined;
  private playbackSink: MediaStreamAudioDestinationNode | undefined;
  private loopback: Loopback | undefined;
  private removeGestureListeners: (() => void) | undefined;
  /** The microphone asked for (`undefined`: the default). */
  private inputDeviceId: string | undefined;
  /** The microphone `stream` was opened with. */
  private streamDeviceId: string | undefined;
  /** A stream already reported lost (one report per loss). */
  private lostStream: MediaStream | undefined;
  /** Stops watching the current microphone track's `ended`. */
  private unwatchTrack: (() => void) | undefined;
  /** Input switches run one after the other: each opens a stream. */
  private inputChain: Promise<void> = Promise.resolve();
  /** Settles once the microphone feeds the worklet, or the start gave up. */
  private readonly sourceReady: Promise<void>;
  private markSourceReady: () => void = () => undefined;
  /** The speaker asked for (`undefined`: the default). */
  private sinkId: string | undefined;
  /** Playback goes straight to the context's destination (no loopback). */
  private directRoute = false;

  constructor(private readonly opts: MediaSessionOptions) {
    this.socket = opts.socket;
    this.inputDeviceId = normalise(opts.inputDeviceId);
    this.sinkId = normalise(opts.outputDeviceId);
    this.sourceReady = new Promise<void>((resolve) => {
      this.markSourceReady = resolve;
    });
  }

  /** Opens the microphone and builds the audio graph (asynchronously). */
  start(): void {
    this.run()
      .catch((e: unknown) => {
        if (!this.stopped) this.opts.failed("AUDIO_FAILED", `audio graph failed: ${describe(e)}`);
      })
      .finally(() => this.markSourceReady());
  }

  private async run(): Promise<void> {
    const { logger } = this.opts;
    try {
      if (!navigator.mediaDevices?.getUserMedia) throw new Error("getUserMedia is not available (insecure context?)");
      this.stream = await this.openFirstInput();
    } catch (e) {
      if (!this.stopped) this.opts.failed("MEDIA_ACCESS_DENIED", `microphone unavailable: ${describe(e)}`);
      return;
    }
    if (this.stopped) return this.release();
    // Created only after the grant: a context created before it stays
    // suspended without a user gesture (Chromium).
    const ctx = new AudioContext({ latencyHint: "interactive" });
    this.context = ctx;
    // Not awaited here: under autoplay rules it resolves only after a user
    // gesture, and the graph can be built meanwhile.
    const resumed = ctx.resume().then(
      () => true,
      (e: unknown) => (logger.warn("audin: AudioContext.resume() failed", e), false),
    );
    const url = URL.createObjectURL(new Blob([PROCESSOR_SOURCE], { type: "text/javascript" }));
    try {
      await ctx.audioWorklet.addModule(url);
    } finally {
      URL.revokeObjectURL(url);
    }
    const module = await workletModule();
    if (this.stopped) return this.release();
    const tap = tapHook();
    const node = new AudioWorkletNode(ctx, PROCESSOR_NAME, {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { module, muted: this.muted, tap: tap !== undefined },
    });
    this.node = node;
    node.port.onmessage = (ev: MessageEvent) => {
      const data: unknown = ev.data;
      if (data instanceof ArrayBuffer) {
        this.framesSent++;
        this.opts.send(this.socket, data);
      } else if (data && typeof data === "object" && "type" in data) {
        const msg = data as {
          type: string;
          message?: string;
          input?: number;
          output?: number;
          played?: number;
          concealed?: number;
          delayMs?: number;
        } & AudioTap;
        if (msg.type === "level") {
          if (!this.stopped && typeof msg.input === "number" && typeof msg.output === "number") {
            this.opts.levels?.(msg.input, msg.output);
          }
        } else if (msg.type === "stats") {
          if (!this.stopped) this.opts.jitterStats?.(msg.played ?? 0, msg.concealed ?? 0, msg.delayMs ?? 0);
        } else if (msg.type === "tap") tapHook()?.({ kind: msg.kind, sampleRate: msg.sampleRate, samples: msg.samples });
        else if (msg.type === "error" && !this.stopped) this.opts.failed("AUDIO_FAILED", `audio worklet: ${msg.message}`);
      }
    };
    node.onprocessorerror = () => {
      if (!this.stopped) this.opts.failed("AUDIO_FAILED", "the audio worklet crashed");
    };
    this.source = ctx.createMediaStreamSource(this.stream);
    this.source.connect(node);
    this.watchTrack(this.stream);
    this.markSourceReady();
    await this.routePlayback(ctx, node);
    if (this.stopped) return;
    const running = await Promise.race([resumed, new Promise<boolean>((r) => setTimeout(r, 500, false))]);
    if (this.stopped) return;
    if (!running && ctx.state !== "running") this.resumeOnGesture(ctx);
    logger.debug(`audin: audio graph at ${ctx.sampleRate} Hz, context ${ctx.state}`);
  }

  /**
   * Connects the worklet's output to the speakers through the echo-safe
   * WebRTC loopback (see playback.ts), or directly to the context's
   * destination when the loopback is unavailable or does not connect in
   * time. Nothing plays until the route is chosen, so no far-end audio
   * bypasses the echo canceller's reference.
   */
  private async routePlayback(ctx: AudioContext, node: AudioWorkletNode): Promise<void> {
    const forced = (globalThis as { __audinTestPlaybackRoute?: unknown }).__audinTestPlaybackRoute;
    let reason = forced === "web-audio" ? "forced by __audinTestPlaybackRoute" : 'playbackRoute: "direct"';
    if (forced !== "web-audio" && this.opts.playbackRoute !== "direct") {
      const sink = ctx.createMediaStreamDestination();
      this.playbackSink = sink;
      node.connect(sink);
      try {
        const loopback = await openLoopback(sink.stream);
        if (this.stopped) return loopback.close();
        this.loopback = loopback;
        this.applyChosenSink(loopback);
        routeHook()?.("webrtc-loopback", loopback.element);
        this.opts.logger.debug("audin: playback through the WebRTC loopback");
        return;
      } catch (e) {
        if (this.stopped) return;
        reason = `WebRTC loopback unavailable: ${describe(e)}`;
        node.disconnect(sink);
        for (const t of sink.stream.getTracks()) t.stop();
        this.playbackSink = undefined;
      }
    }
    node.connect(ctx.destination);
    this.directRoute = true;
    this.applyChosenSink(ctx as SinkTarget);
    // Chosen by the application: no warning, it knows (see playbackRoute).
    if (forced !== "web-audio" && this.opts.playbackRoute === "direct") {
      this.opts.logger.debug("audin: playback through Web Audio (playbackRoute: direct)");
    } else {
      logFallback(this.opts.logger, reason);
    }
    routeHook()?.("web-audio", undefined);
  }

  /**
   * Autoplay policies keep a context suspended until the user interacts with
   * the page: resume it at the next gesture (listeners removed on stop).
   */
  private resumeOnGesture(ctx: AudioContext): void {
    const types = ["pointerdown", "keydown", "touchend"] as const;
    const onGesture = (): void => {
      this.removeGestureListeners?.();
      if (this.context === ctx && ctx.state === "suspended") ctx.resume().catch(() => undefined);
    };
    for (const t of types) addEventListener(t, onGesture, true);
    this.removeGestureListeners = () => {
      for (const t of types) removeEventListener(t, onGesture, true);
      this.removeGestureListeners = undefined;
    };
    this.opts.logger.warn("audin: the AudioContext is suspended (autoplay policy); audio starts at the next user gesture");
  }

  /** The audio socket the call's frames go to now. */
  get audioSocket(): number {
    return this.socket;
  }

  /** Moves the call's audio onto another socket (after a reattach). */
  bind(socket: number): void {
    this.socket = socket;
  }

  /**
   * A binary frame from the far end (on any socket of this call), handed to
   * the worklet with its arrival time on the audio clock, and on the
   * inserted loopback route (playback.ts) a copy to the loopback, which
   * plays it.
   *
   * Why stamp here: the jitter buffer measures jitter from arrival times,
   * and the worklet's own `currentTime` moves in the device's render
   * callbacks (about 10 ms in Chromium), which alone read as ~10 ms of
   * jitter and raise the buffer's target; a frame that arrived just after a
   * callback also waited for the next one uncounted. One reused message
   * object per frame; nothing else is allocated but the loopback's copy.
   */
  receive(_socket: number, frame: ArrayBuffer): void {
    const node = this.node;
    if (!node) return;
    // The inserted loopback plays the frame; the worklet still meters it.
    this.loopback?.push?.(frame.slice(0));
    const msg = this.frameMessage;
    msg.frame = frame;
    msg.at = this.arrivalOnAudioClock();
    node.port.postMessage(msg, [frame]);
    msg.frame = null;
  }

  /** The reused main → worklet frame message (`at`: NaN, the worklet stamps it). */
  private readonly frameMessage: { frame: ArrayBuffer | null; at: number } = { frame: null, at: Number.NaN };
  /** Audio clock minus `performance.now()`, ms (NaN: unknown). */
  private clockOffset = Number.NaN;
  /** Frames until `clockOffset` is measured again. */
  private clockOffsetAge = 0;

  /**
   * Now, in ms on the worklet's audio clock (its `currentTime`), or NaN when
   * that cannot be known (the context is not running, or the browser lacks
   * `getOutputTimestamp`).
   *
   * The buffer compares arrival stamps with the time it is pulled, so the
   * clocks' offset matters, not only their rate. `getOutputTimestamp()`
   * gives a smooth clock: the output position at a wall-clock time. The
   * render clock (`currentTime`) leads it by the output latency at the
   * start of each render callback and by up to a callback more just after,
   * so `currentTime` read here cannot say which; Chromium's `outputLatency`
   * is that lead at the start of a callback (measured: 30.0 ms vs 30.2 ms
   * observed), kept within one callback (12 ms) below the lead observed.
   * Measured again every 50 frames (1 s): the offset drifts only with the
   * device clock, and one `getOutputTimestamp()` object a second is the
   * only allocation.
   */
  private arrivalOnAudioClock(): number {
    const ctx = this.context;
    if (!ctx || ctx.state !== "running") return Number.NaN;
    const now = performance.now();
    if (--this.clockOffsetAge <= 0) {
      this.clockOffsetAge = 50;
      const ts = typeof ctx.getOutputTimestamp === "function" ? ctx.getOutputTimestamp() : undefined;
      const perf = ts?.performanceTime ?? 0;
      if (ts && perf > 0) {
        const output = (ts.contextTime ?? 0) * 1000 + (now - perf);
        const lead = ctx.currentTime * 1000 - output;
        const latency = Number.isFinite(ctx.outputLatency) ? ctx.outputLatency * 1000 : lead;
        this.clockOffset = output + Math.max(Math.min(latency, lead), lead - 12) - now;
      } else {
        this.clockOffset = Number.NaN;
      }
    }
    return now + this.clockOffset;
  }

  /** Muted: the worklet sends silence frames (`0xFF`) instead of the microphone. */
  setMuted(muted: boolean): void {
    this.muted = muted;
    this.node?.port.postMessage({ type: "mute", muted });
  }

  // ── devices (see devices.ts) ────────────────────────────────────────

  /**
   * The configured constraints with the device pinned `exact`ly: a missing
   * device then fails instead of the browser quietly opening another.
   */
  private constraintsFor(deviceId: string | undefined): MediaTrackConstraints {
    if (deviceId === undefined) return this.opts.constraints;
    return { ...this.opts.constraints, deviceId: { exact: deviceId } };
  }

  /**
   * The call's first microphone stream: the chosen device, or the default
   * one when the chosen device is gone (the call still gets audio, and the
   * application hears why).
   */
  private async openFirstInput(): Promise<MediaStream> {
    const md = navigator.mediaDevices;
    const wanted = this.inputDeviceId;
    if (wanted !== undefined) {
      try {
        const stream = await md.getUserMedia({ audio: this.constraintsFor(wanted) });
        this.streamDeviceId = wanted;
        return stream;
      } catch (e) {
        if (!missingDevice(e)) throw e;
        this.inputDeviceId = undefined;
        if (!this.stopped) {
          this.opts.deviceProblem?.(
            "input",
            "AUDIO_DEVICE_LOST",
            `the chosen microphone ${quoteId(wanted)} is not available (${describe(e)}); using the default microphone`,
          );
        }
      }
    }
    this.streamDeviceId = undefined;
    return md.getUserMedia({ audio: this.constraintsFor(undefined) });
  }

  /** Reports the current microphone lost when its track ends (unplugged, revoked). */
  private watchTrack(stream: MediaStream): void {
    this.unwatchTrack?.();
    const track = stream.getAudioTracks()[0];
    if (!track) return;
    const onEnded = (): void => this.inputLost(stream, "the microphone in use stopped (unplugged or disabled)");
    track.addEventListener("ended", onEnded);
    this.unwatchTrack = () => {
      track.removeEventListener("ended", onEnded);
      this.unwatchTrack = undefined;
    };
  }

  /** The microphone of `stream` went away: report once, then capture from the default one. */
  private inputLost(stream: MediaStream, reason: string): void {
    if (this.stopped || this.stream !== stream || this.lostStream === stream) return;
    this.lostStream = stream;
    this.unwatchTrack?.();
    this.opts.deviceProblem?.("input", "AUDIO_DEVICE_LOST", `${reason}; switching to the default microphone`);
    this.queueInput(undefined, true).catch((e: unknown) => {
      // Nothing to fall back to: the call goes on, sending silence.
      if (!this.stopped) this.opts.logger.warn(`audin: no microphone to fall back to: ${describe(e)}`);
    });
  }

  /**
   * Captures from another microphone (`undefined` or `"default"`: the
   * default one). Before the graph exists the choice is used when it opens;
   * during the call the new device's stream is opened first, then the
   * worklet's source is swapped, then the old tracks stop, so capture never
   * pauses longer than opening a stream takes in the background. Rejects
   * (keeping the current microphone) with `AUDIO_DEVICE_NOT_FOUND` or
   * `MEDIA_ACCESS_DENIED`.
   */
  setInputDevice(deviceId: string | undefined): Promise<void> {
    return this.queueInput(normalise(deviceId), false);
  }

  private queueInput(deviceId: string | undefined, force: boolean): Promise<void> {
    const run = this.inputChain.then(() => this.switchInput(deviceId, force));
    this.inputChain = run.catch(() => undefined);
    return run;
  }

  private async switchInput(deviceId: string | undefined, force: boolean): Promise<void> {
    if (this.stream === undefined && !this.stopped) this.inputDeviceId = deviceId; // not opened yet: use it then
    await this.sourceReady;
    const ctx = this.context;
    const node = this.node;
    const old = this.stream;
    if (this.stopped || !ctx || !node || !old) return;
    if (!force && deviceId === this.streamDeviceId && this.lostStream !== old) {
      this.inputDeviceId = deviceId;
      return;
    }
    let stream: MediaStream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: this.constraintsFor(deviceId) });
    } catch (e) {
      throw new OperatorRequestError(
        missingDevice(e) ? "AUDIO_DEVICE_NOT_FOUND" : "MEDIA_ACCESS_DENIED",
        `the microphone ${quoteId(deviceId ?? DEFAULT_DEVICE_ID)} could not be opened: ${describe(e)}`,
        e,
      );
    }
    if (this.stopped || this.context !== ctx || this.stream !== old) {
      for (const t of stream.getTracks()) t.stop();
      return;
    }
    const source = ctx.createMediaStreamSource(stream);
    // Disconnect and connect in one task: the worklet hears the new device
    // from the next render quantum (at worst one ~3 ms quantum of silence,
    // never both devices mixed).
    try {
      this.source?.disconnect();
    } catch {
      // already disconnected
    }
    source.connect(node);
    this.source = source;
    this.stream = stream;
    this.streamDeviceId = deviceId;
    this.inputDeviceId = deviceId;
    this.watchTrack(stream);
    for (const t of old.getTracks()) t.stop();
  }

  /**
   * A fresh device list (after `devicechange`): a microphone or speaker in
   * use that is no longer listed is reported lost and replaced by the
   * default one. Lists without ids (no grant) prove nothing and are ignored.
   */
  devicesChanged(devices: AudioDevices): void {
    if (this.stopped) return;
    const gone = (list: AudioDevices["inputs"], id: string | undefined): id is string =>
      id !== undefined && list.some((d) => d.deviceId !== "") && !hasDevice(list, id);
    const stream = this.stream;
    const inUse = stream?.getAudioTracks()[0]?.getSettings().deviceId;
    if (stream && gone(devices.inputs, inUse)) {
      this.inputLost(stream, `the microphone in use ${quoteId(inUse)} was removed`);
    }
    const sink = this.sinkId;
    if (gone(devices.outputs, sink)) {
      this.sinkId = undefined;
      this.opts.deviceProblem?.(
        "output",
        "AUDIO_DEVICE_LOST",
        `the speaker in use ${quoteId(sink)} was removed; playing on the default output`,
      );
      this.setOutputDevice(undefined).catch((e: unknown) => this.opts.logger.warn(`audin: default output: ${describe(e)}`));
    }
  }

  /** Where the chosen speaker is set: `undefined` until the playback route is chosen. */
  private sinkTarget(): SinkTarget | undefined {
    if (this.loopback) return this.loopback;
    if (this.directRoute && this.context) return this.context as SinkTarget;
    return undefined;
  }

  /**
   * Plays on another speaker (`undefined` or `"default"`: the default
   * output). Before the playback route is chosen the choice is applied when
   * it is. Rejects (keeping the current speaker) with
   * `AUDIO_OUTPUT_NOT_SUPPORTED` where the route cannot choose one, or
   * `AUDIO_DEVICE_NOT_FOUND` when the browser refuses the id.
   */
  async setOutputDevice(deviceId: string | undefined): Promise<void> {
    const id = normalise(deviceId);
    if (this.stopped) return;
    const target = this.sinkTarget();
    if (!target) {
      this.sinkId = id;
      return;
    }
    try {
      await applySink(target, id);
    } catch (e) {
      if (e instanceof OperatorRequestError) throw e;
      throw new OperatorRequestError(
        "AUDIO_DEVICE_NOT_FOUND",
        `the speaker ${quoteId(id ?? DEFAULT_DEVICE_ID)} could not be used: ${describe(e)}`,
        e,
      );
    }
    this.sinkId = id;
  }

  /** Applies the speaker chosen before the route existed; falls back to the default on failure. */
  private applyChosenSink(target: SinkTarget): void {
    const id = this.sinkId;
    if (id === undefined) return;
    applySink(target, id).catch((e: unknown) => {
      if (this.stopped || this.sinkId !== id) return;
      this.sinkId = undefined;
      const unsupported = e instanceof OperatorRequestError && e.code === "AUDIO_OUTPUT_NOT_SUPPORTED";
      this.opts.deviceProblem?.(
        "output",
        unsupported ? "AUDIO_OUTPUT_NOT_SUPPORTED" : "AUDIO_DEVICE_LOST",
        `the chosen speaker ${quoteId(id)} could not be used (${describe(e)}); playing on the default output`,
      );
    });
  }

  /** Stops capture and playback and releases the microphone. Idempotent. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.release();
  }

  private release(): void {
    this.removeGestureListeners?.();
    this.unwatchTrack?.();
    this.loopback?.close();
    this.loopback = undefined;
    for (const t of this.playbackSink?.stream.getTracks() ?? []) t.stop();
    this.playbackSink = undefined;
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.stream = undefined;
    try {
      this.source?.disconnect();
      if (this.node) {
        this.node.port.onmessage = null;
        this.node.port.postMessage({ type: "stop" });
        this.node.disconnect();
        this.node.port.close();
      }
    } catch {
      // already disconnected
    }
    this.source = undefined;
    this.node = undefined;
    const ctx = this.context;
    this.context = undefined;
    if (ctx && ctx.state !== "closed") ctx.close().catch(() => undefined);
  }
}
