// Echo-safe playback: the far end's audio crosses an in-page
// RTCPeerConnection loopback (two local peer connections, host candidates
// only, no network) and plays in an <audio> element. Why: browsers' echo
// cancellers take their reference from WebRTC playout; plain Web Audio
// output is cancelled only by Chromium's "Chrome-wide echo cancellation"
// (measured: about 0 dB without it, crbug 687574), so an operator on laptop
// speakers would send the caller's own voice back. Every WebRTC softphone
// plays this way.
//
// Two ways across the loopback, the first where the browser allows it:
// - **Inserted** (RTCRtpScriptTransform): the loopback sends PCMU, the
//   wire's own codec and 20 ms frame, and a transform worker writes each
//   far-end frame, as it arrives from the audio socket, into the next
//   encoded frame the sender made, in place of what it encoded. The
//   receiver's jitter buffer (NetEq) is then the only one on the way and
//   the bytes arrive unchanged. Two streams take turns (see openLoopback)
//   so that NetEq plays near its floor: 15–32 ms of NetEq delay 7–9 s into
//   a call (49 where it aims at 40 ms), 33–38 ms on one stream from its
//   start, against about 80 ms for the worklet's buffer followed by the
//   encoded loopback (docs/performance-browser.md). The worklet still
//   decodes every frame, for the levels and the call-quality figures, but
//   its output is not heard.
// - **Encoded** (browsers without the transform, or pages whose CSP
//   refuses blob: workers): the worklet's output leaves the AudioContext
//   through a MediaStreamAudioDestinationNode and the loopback encodes it
//   (PCMU too, in 10 ms packets: 20 ms ones added about 12 ms more); the
//   worklet's jitter buffer plays, NetEq adds its own.

import type { OperatorLogger } from "./types.js";

/** Which route the far end's audio takes to the speakers. */
export type AudioRoute = "webrtc-loopback" | "web-audio";

/** How long the loopback may take to connect before the direct route is used. */
export const LOOPBACK_CONNECT_MS = 1500;

/**
 * The inserted route's transform worker (see the top of this file), one per
 * stream. `p` holds the sender's encoded frames not yet used, `q` a far-end
 * frame waiting for one. A far-end frame leaves the moment it comes as long
 * as the pool has a frame, so NetEq sees the audio socket's timing, not the
 * sender's (whose frames come in bursts of the render callbacks): the pool
 * gathers `k` = 6 before the first is used (the far end's frames meanwhile
 * are dropped, at the start of the call only), and while the stream rests
 * it fills up again (at most 12: older ones are dropped); a stream taking
 * the far end again first keeps the newest 6 (message `0`). The pool costs
 * no delay (a frame's RTP timestamp is all NetEq reads of it), so it is
 * deep enough for a render burst of 100 ms: a frame that waited for the
 * sender would arrive late, and NetEq keeps the time it was late for good,
 * as it does when a dropped one skips a timestamp. A second frame arriving
 * while one still waits means the pool ran dry (the far end's clock runs
 * faster than the sender's, and no move has re-filled it): the older frame
 * is dropped and the pool gathers 6 again, a glitch of about 140 ms,
 * rather than a delay that grows.
 */
const INSERT_WORKER =
  "postMessage(0);let w,v,k=6,p=[],q=[];onrtctransform=({transformer:t})=>{w=t.writable.getWriter();" +
  "t.readable.pipeTo(new WritableStream({write(x){p.push(x),s()}}))};" +
  "onmessage=({data:d})=>{d?(q.push(d),q[1]&&(q.shift(),k=6)):p.splice(0,p.length-6);s()};" +
  "function s(){if(p.length>=k)for(k=0;p[0]&&q[0];)(v=p.shift()).data=q.shift(),w.write(v);p[12]&&p.shift()}";

/**
 * Far-end frames the second stream carries muted at the start of a call
 * (1 s), its warm-up: NetEq starts with an 80 ms target and needs about 25
 * packets to come down, and it learns its target from how regularly they
 * arrive. The far end's own frames arrive as they will when that stream
 * carries them. The sender's own frames, passed through instead, come in
 * the bursts of the render callbacks: NetEq then learnt a 40 ms target in
 * some calls (more often on a busy machine) and played 37 ms after the
 * first move instead of 12-16.
 */
const WARM_FRAMES = 50;
/**
 * How long a stream must have carried nothing before the far end moves to
 * it: NetEq restarts playout (at its floor) after 1 s of concealment, and
 * forgets the arrival times it compares new packets with after 2 s.
 */
const REST_MS = 2200;
/** Quiet far-end frames in a row before a move: the old stream's unplayed ones too. */
const QUIET_FRAMES = 4;

/**
 * Whether a μ-law frame is quiet: every sample within exponent 1 (|x| ≤ 372
 * of 32 767, peaks below −39 dBFS), line noise between words, not speech.
 */
function quiet(frame: ArrayBuffer): boolean {
  for (const b of new Uint8Array(frame)) if ((b & 0x70) < 0x60) return false;
  return true;
}

/** A connected loopback; `close()` releases every piece (idempotent). */
export interface Loopback {
  /** The <audio> element that plays the far end (the inserted route's second stream has its own). */
  element: HTMLAudioElement;
  /** Plays every stream on one speaker (where the browser has `setSinkId`). */
  setSinkId?: (id: string) => Promise<void>;
  /** Inserted route only: hands one far-end frame (160 bytes μ-law) to the loopback. */
  push?: (frame: ArrayBuffer) => void;
  close(): void;
}

/**
 * A blob: URL of the inserted route's worker where frames can be inserted,
 * else `undefined`: no RTCRtpScriptTransform, or a page whose CSP refuses
 * blob: workers (Chromium reports that with an error event, not a throw),
 * or a worker not running within 500 ms. A first worker only answers
 * whether workers run here, before the loopback exists: the route's own
 * worker is made with its transform right after the track is added
 * (measured in Chromium 156: a transform set after awaiting anything since
 * `addTrack`, or made for a worker already running, was given no frame,
 * and one set on a refused worker and then removed left the sender
 * sending nothing).
 */
async function insertWorkerUrl(): Promise<string | undefined> {
  if (typeof RTCRtpScriptTransform !== "function") return undefined;
  const url = URL.createObjectURL(new Blob([INSERT_WORKER], { type: "text/javascript" }));
  let probe: Worker | undefined;
  const up = await new Promise((ok) => {
    try {
      probe = new Worker(url);
      probe.onmessage = ok;
      probe.onerror = () => ok(0);
      setTimeout(ok, 500, 0);
    } catch {
      ok(0); // refused at once
    }
  });
  probe?.terminate();
  if (up) return url;
  URL.revokeObjectURL(url);
  return undefined;
}

/**
 * Carries `stream` through a local peer-connection pair into an <audio>
 * element. Rejects (after cleaning up) if RTCPeerConnection is missing or
 * the pair does not connect within `timeoutMs`.
 *
 * The inserted route has two streams (transceivers), each with its own
 * worker and <audio> element, and the far end on one of them. Why: NetEq
 * holds a delay anywhere between 15 and 40 ms once its target is 20 (it
 * time-stretches only outside that band), and where it lands depends on
 * its start (it starts at an 80 ms target, so it comes down from above,
 * measured 33–38 ms) and on every late frame since (each one adds the time
 * it was late, for good). A stream that has rested restarts at the floor
 * (measured 12–16 ms). So once the other stream has rested `REST_MS`,
 * the far end moves to it, at a quiet moment so that nothing audible is cut:
 * the old stream's few unplayed frames were quiet too.
 */
export async function openLoopback(stream: MediaStream, timeoutMs = LOOPBACK_CONNECT_MS): Promise<Loopback> {
  if (typeof RTCPeerConnection !== "function") throw new Error("RTCPeerConnection is not available");
  const insertUrl = await insertWorkerUrl();
  // No ICE servers: host candidates only, the two ends are in this page.
  const a = new RTCPeerConnection({ iceServers: [] });
  const b = new RTCPeerConnection({ iceServers: [] });
  const elements: HTMLAudioElement[] = [];
  const workers: Worker[] = [];
  let closed = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const close = (): void => {
    if (closed) return;
    closed = true;
    clearTimeout(timer);
    a.onicecandidate = b.onicecandidate = null;
    a.close();
    b.close();
    for (const w of workers) w.terminate();
    if (insertUrl) URL.revokeObjectURL(insertUrl);
    for (const e of elements) {
      e.pause();
      e.srcObject = null;
      e.remove();
    }
  };
  try {
    a.onicecandidate = (e) => void (e.candidate && b.addIceCandidate(e.candidate).catch(() => undefined));
    b.onicecandidate = (e) => void (e.candidate && a.addIceCandidate(e.candidate).catch(() => undefined));
    const track = stream.getAudioTracks()[0];
    if (!track) throw new Error("no playback track");
    // PCMU both ways: the wire's own codec and 20 ms frame, so inserted
    // frames go in unchanged, and an encoded worklet output (already 8 kHz
    // speech) loses nothing audible.
    const pcmu = RTCRtpSender.getCapabilities?.("audio")?.codecs.find((c) => c.mimeType == "audio/PCMU");
    const insert = pcmu && insertUrl;
    for (let i = 0; i < (insert ? 2 : 1); i++) {
      const t = a.addTransceiver(track);
      if (pcmu) t.setCodecPreferences([pcmu]);
      // Made right after the transceiver, before any await (see insertWorkerUrl).
      if (insert) {
        const w = new Worker(insertUrl);
        workers.push(w);
        t.sender.transform = new RTCRtpScriptTransform(w);
      }
    }
    // No transport-wide congestion control: its bandwidth probes are RTP
    // padding on the audio stream (9 empty packets at once, 6.4 s into a
    // call, measured), which NetEq took for late packets. Encoding the
    // worklet's output: 10 ms packets, half the wait.
    const munge = (d: RTCSessionDescriptionInit): RTCSessionDescriptionInit => {
      const sdp = d.sdp?.replace(/^a=.*transport-(cc|wide).*\r?\n/gm, "");
      return { type: d.type, sdp: insert ? sdp : sdp?.replace(/^m=audio.*\r?\n/m, "$&a=ptime:10\r\n") };
    };
    const offer = munge(await a.createOffer());
    await a.setLocalDescription(offer);
    await b.setRemoteDescription(offer);
    const answer = munge(await b.createAnswer());
    await b.setLocalDescription(answer);
    await a.setRemoteDescription(answer);
    // A loopback has no network jitter: ask the receiver for the smallest
    // playout buffer (Chromium's jitterBufferTarget, ms; ignored elsewhere).
    for (const r of b.getReceivers()) {
      const rx = r as RTCRtpReceiver & { jitterBufferTarget?: number | null };
      if ("jitterBufferTarget" in rx) rx.jitterBufferTarget = 0;
    }
    const connected = new Promise<void>((ok, fail) => {
      const check = (): void => {
        if (a.connectionState === "connected" && b.connectionState === "connected") ok();
        else if (a.connectionState === "failed" || b.connectionState === "failed") fail(new Error("ICE failed"));
      };
      a.onconnectionstatechange = b.onconnectionstatechange = check;
      check();
    });
    const deadline = new Promise<never>((_ok, fail) => {
      timer = setTimeout(() => fail(new Error(`not connected within ${timeoutMs} ms`)), timeoutMs);
    });
    await Promise.race([connected, deadline]);
    clearTimeout(timer);
    a.onconnectionstatechange = b.onconnectionstatechange = null;
    for (const r of b.getReceivers()) {
      const element = document.createElement("audio");
      elements.push(element);
      element.autoplay = true;
      // The second stream is heard from its first move on (see pusher).
      element.muted = !!insert && elements.length > 1;
      element.srcObject = new MediaStream([r.track]);
      // Autoplay rules may refuse until a gesture; the element then starts on
      // its own once allowed (autoplay), like the AudioContext does.
      element.play().catch(() => undefined);
    }
    const element = elements[0]!;
    return {
      element,
      close,
      setSinkId: element.setSinkId && (async (id) => void (await Promise.all(elements.map((e) => e.setSinkId(id))))),
      push: insert ? pusher(workers, elements[1]!) : undefined,
    };
  } catch (e) {
    close();
    throw e;
  }
}

/**
 * The inserted route's frame hand-off: each far-end frame to the stream
 * that carries the far end, which changes (see openLoopback) once the
 * other stream has rested and the far end has been quiet for a moment.
 * The second stream first gets a copy of the far end's first frames, its
 * warm-up, on an element muted until the far end moves there (the warm-up
 * is over 2 s by then, so none of the copy is left to play).
 */
function pusher(workers: Worker[], second: HTMLAudioElement): (frame: ArrayBuffer) => void {
  // When each stream last carried a frame: the second one rests from the
  // end of its warm-up.
  const last = [0, Infinity];
  let warm = WARM_FRAMES;
  let live = 0;
  let calm = 0;
  return (frame) => {
    const now = performance.now();
    if (warm > 0) {
      workers[1]!.postMessage(frame.slice(0));
      if (--warm == 0) last[1] = now;
    }
    calm = quiet(frame) ? calm + 1 : 0;
    if (calm >= QUIET_FRAMES && now - last[1 - live]! > REST_MS) {
      live = 1 - live;
      second.muted = false;
      workers[live]!.postMessage(0);
    }
    last[live] = now;
    workers[live]!.postMessage(frame, [frame]);
  };
}

/** Logged once per page: the fallback is a property of the browser. */
let fallbackLogged = false;

/** Warns once that playback uses the direct route, and why. */
export function logFallback(logger: OperatorLogger, reason: string): void {
  if (fallbackLogged) return;
  fallbackLogged = true;
  logger.warn(
    `audin: playing through Web Audio directly (${reason}): the echo canceller may not hear the far end; use a headset`,
  );
}
