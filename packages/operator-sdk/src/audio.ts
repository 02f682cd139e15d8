// The audio graph of one call: microphone → AudioWorklet (wasm: anti-aliased
// resampling to 8 kHz, G.711 μ-law, 20 ms frames) → audio WebSocket, and
// audio WebSocket → AudioWorklet (wasm: jitter buffer, decoding, upsampling)
// → speakers. The core decides when media starts, moves, mutes and stops;
// audio samples never pass through it.

import { workletModule } from "./core.js";
import type { OperatorErrorCode, OperatorLogger } from "./types.js";
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
  private stopped = false;
  private stream: MediaStream | undefined;
  private context: AudioContext | undefined;
  private source: MediaStreamAudioSourceNode | undefined;
  private node: AudioWorkletNode | undefined;
  private playbackSink: MediaStreamAudioDestinationNode | undefined;
  private loopback: Loopback | undefined;
  private removeGestureListeners: (() => void) | undefined;

  constructor(private readonly opts: MediaSessionOptions) {
    this.socket = opts.socket;
  }

  /** Opens the microphone and builds the audio graph (asynchronously). */
  start(): void {
    this.run().catch((e: unknown) => {
      if (!this.stopped) this.opts.failed("AUDIO_FAILED", `audio graph failed: ${describe(e)}`);
    });
  }

  private async run(): Promise<void> {
    const { constraints, logger } = this.opts;
    try {
      if (!navigator.mediaDevices?.getUserMedia) throw new Error("getUserMedia is not available (insecure context?)");
      this.stream = await navigator.mediaDevices.getUserMedia({ audio: constraints });
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
        this.opts.send(this.socket, data);
      } else if (data && typeof data === "object" && "type" in data) {
        const msg = data as { type: string; message?: string; input?: number; output?: number } & AudioTap;
        if (msg.type === "level") {
          if (!this.stopped && typeof msg.input === "number" && typeof msg.output === "number") {
            this.opts.levels?.(msg.input, msg.output);
          }
        } else if (msg.type === "tap") tapHook()?.({ kind: msg.kind, sampleRate: msg.sampleRate, samples: msg.samples });
        else if (msg.type === "error" && !this.stopped) this.opts.failed("AUDIO_FAILED", `audio worklet: ${msg.message}`);
      }
    };
    node.onprocessorerror = () => {
      if (!this.stopped) this.opts.failed("AUDIO_FAILED", "the audio worklet crashed");
    };
    this.source = ctx.createMediaStreamSource(this.stream);
    this.source.connect(node);
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

  /** Moves the call's audio onto another socket (after a reattach). */
  bind(socket: number): void {
    this.socket = socket;
  }

  /** A binary frame from the far end (on any socket of this call). */
  receive(_socket: number, frame: ArrayBuffer): void {
    this.node?.port.postMessage(frame, [frame]);
  }

  /** Muted: the worklet sends silence frames (`0xFF`) instead of the microphone. */
  setMuted(muted: boolean): void {
    this.muted = muted;
    this.node?.port.postMessage({ type: "mute", muted });
  }

  /** Stops capture and playback and releases the microphone. Idempotent. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.release();
  }

  private release(): void {
    this.removeGestureListeners?.();
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
