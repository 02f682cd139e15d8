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
//   the bytes arrive unchanged: bench/neteq-route.mjs measured 34 ms from
//   the frame's hand-off to where the direct route's worklet output
//   starts, against about 80 ms for the worklet's buffer followed by the
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
 * The inserted route's transform worker (see the top of this file). `p`
 * holds the sender's encoded frames not yet used, `q` a far-end frame
 * waiting for one. A far-end frame leaves the moment it comes as long as
 * the pool has a frame, so NetEq sees the audio socket's timing, not the
 * sender's (whose frames come in bursts of the render callbacks): the pool
 * gathers `k` = 4 before the first is used (the far end's frames meanwhile
 * are dropped, at the start of the call only), and during a pause of the
 * far end it fills up again (at most 8: older ones are dropped, which
 * NetEq takes for a gap). A second frame arriving while one still waits
 * means the pool ran dry (the far end's clock runs faster than the
 * sender's): the older frame is dropped and the pool gathers 4 again, a
 * glitch of about 100 ms every ten minutes or so at 100 ppm, rather than
 * a delay that grows.
 */
const INSERT_WORKER =
  "postMessage(0);let w,v,k=4,p=[],q=[];onrtctransform=({transformer:t})=>{w=t.writable.getWriter();" +
  "t.readable.pipeTo(new WritableStream({write(x){p.push(x),s()}}))};" +
  "onmessage=e=>{q.push(e.data);q[1]&&(q.shift(),k=4);s()};" +
  "function s(){if(p.length>=k)for(k=0;p[0]&&q[0];)(v=p.shift()).data=q.shift(),w.write(v);p[8]&&p.shift()}";

/** A connected loopback; `close()` releases every piece (idempotent). */
export interface Loopback {
  element: HTMLAudioElement;
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
 */
export async function openLoopback(stream: MediaStream, timeoutMs = LOOPBACK_CONNECT_MS): Promise<Loopback> {
  if (typeof RTCPeerConnection !== "function") throw new Error("RTCPeerConnection is not available");
  const insertUrl = await insertWorkerUrl();
  // No ICE servers: host candidates only, the two ends are in this page.
  const a = new RTCPeerConnection({ iceServers: [] });
  const b = new RTCPeerConnection({ iceServers: [] });
  const element = document.createElement("audio");
  let worker: Worker | undefined;
  let closed = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const close = (): void => {
    if (closed) return;
    closed = true;
    clearTimeout(timer);
    a.onicecandidate = b.onicecandidate = b.ontrack = null;
    a.close();
    b.close();
    worker?.terminate();
    if (insertUrl) URL.revokeObjectURL(insertUrl);
    element.pause();
    element.srcObject = null;
    element.remove();
  };
  try {
    a.onicecandidate = (e) => void (e.candidate && b.addIceCandidate(e.candidate).catch(() => undefined));
    b.onicecandidate = (e) => void (e.candidate && a.addIceCandidate(e.candidate).catch(() => undefined));
    const remote = new Promise<MediaStream>((ok) => {
      b.ontrack = (ev) => ok(ev.streams[0] ?? new MediaStream([ev.track]));
    });
    const track = stream.getAudioTracks()[0];
    if (!track) throw new Error("no playback track");
    const sender = a.addTrack(track, stream);
    // PCMU both ways: the wire's own codec and 20 ms frame, so inserted
    // frames go in unchanged, and an encoded worklet output (already 8 kHz
    // speech) loses nothing audible.
    const pcmu = RTCRtpSender.getCapabilities?.("audio")?.codecs.find((c) => c.mimeType == "audio/PCMU");
    if (pcmu) a.getTransceivers()[0]?.setCodecPreferences([pcmu]);
    if (pcmu && insertUrl) {
      worker = new Worker(insertUrl);
      sender.transform = new RTCRtpScriptTransform(worker);
    }
    // Encoding the worklet's output: 10 ms packets, half the wait.
    const ptime = (d: RTCSessionDescriptionInit): RTCSessionDescriptionInit =>
      worker ? d : { type: d.type, sdp: d.sdp?.replace(/^m=audio.*\r?\n/m, "$&a=ptime:10\r\n") };
    const offer = ptime(await a.createOffer());
    await a.setLocalDescription(offer);
    await b.setRemoteDescription(offer);
    const answer = ptime(await b.createAnswer());
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
    const [out] = await Promise.race([Promise.all([remote, connected]), deadline]);
    clearTimeout(timer);
    a.onconnectionstatechange = b.onconnectionstatechange = null;
    element.autoplay = true;
    element.muted = false;
    element.srcObject = out;
    // Autoplay rules may refuse until a gesture; the element then starts on
    // its own once allowed (autoplay), like the AudioContext does.
    element.play().catch(() => undefined);
    const w = worker;
    return { element, close, push: w && ((frame) => w.postMessage(frame, [frame])) };
  } catch (e) {
    close();
    throw e;
  }
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
