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
//   the bytes arrive unchanged: bench/neteq-route.mjs measured 38 ms from
//   the frame's hand-off to where the direct route's worklet output
//   starts, against 73 ms for the encoded route plus the worklet's buffer
//   (docs/performance-browser.md). The worklet still decodes every frame,
//   for the levels and the call-quality figures, but its output is not heard.
// - **Encoded**: the worklet's output leaves the AudioContext through a
//   MediaStreamAudioDestinationNode and the loopback encodes it (Opus,
//   10 ms packets); the worklet's jitter buffer plays, NetEq adds its own.

import type { OperatorLogger } from "./types.js";

/** Which route the far end's audio takes to the speakers. */
export type AudioRoute = "webrtc-loopback" | "web-audio";

/** How long the loopback may take to connect before the direct route is used. */
export const LOOPBACK_CONNECT_MS = 1500;

/**
 * The loopback's Opus settings, in place of the browser's fmtp on both
 * descriptions (the receiver's fmtp tells the sender how to encode): no
 * in-band FEC (nothing is lost on a loopback), 128 kbit/s so the extra
 * encode costs no audible quality. Left out means RFC 7587's defaults: no
 * DTX (it would cut the speech tails the canceller needs and add comfort
 * noise) and mono.
 */
const OPUS_FMTP = "maxaveragebitrate=128000;useinbandfec=0";

/**
 * Sets the Opus parameters (replacing the browser's own fmtp for it) and
 * 10 ms packets instead of 20: half the packetisation delay, and the
 * receiver's jitter buffer can run on a smaller target.
 * @internal
 */
export function mungeOpus(sdp: string): string {
  const pt = /^a=rtpmap:(\d+) opus\/48000/im.exec(sdp)?.[1];
  if (!pt) return sdp;
  return sdp
    .replace(new RegExp(`^a=(?:fmtp:${pt} .*|(?:max)?ptime:\\d+)\\r?\\n`, "gm"), "")
    .replace(/^a=rtpmap:\d+ opus\/48000.*\r?\n/im, `$&a=fmtp:${pt} ${OPUS_FMTP}\r\na=ptime:10\r\na=maxptime:10\r\n`);
}

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
  "let w,v,k=4,p=[],q=[];onrtctransform=({transformer:t})=>{w=t.writable.getWriter();" +
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

/** The PCMU codec when the browser can insert frames into a loopback. */
function insertCodec(): RTCRtpCodec | undefined {
  if (typeof RTCRtpScriptTransform !== "function") return undefined;
  return RTCRtpSender.getCapabilities("audio")?.codecs.find((c) => c.mimeType == "audio/PCMU");
}

/**
 * Carries `stream` through a local peer-connection pair into an <audio>
 * element. Rejects (after cleaning up) if RTCPeerConnection is missing or
 * the pair does not connect within `timeoutMs`.
 */
export async function openLoopback(stream: MediaStream, timeoutMs = LOOPBACK_CONNECT_MS): Promise<Loopback> {
  if (typeof RTCPeerConnection !== "function") throw new Error("RTCPeerConnection is not available");
  // No ICE servers: host candidates only, the two ends are in this page.
  const a = new RTCPeerConnection({ iceServers: [] });
  const b = new RTCPeerConnection({ iceServers: [] });
  const element = document.createElement("audio");
  const pcmu = insertCodec();
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
    if (pcmu) {
      a.getTransceivers()[0]?.setCodecPreferences([pcmu]);
      const url = URL.createObjectURL(new Blob([INSERT_WORKER], { type: "text/javascript" }));
      worker = new Worker(url);
      URL.revokeObjectURL(url);
      sender.transform = new RTCRtpScriptTransform(worker);
    }
    const offer = await a.createOffer();
    await a.setLocalDescription({ type: "offer", sdp: mungeOpus(offer.sdp ?? "") });
    await b.setRemoteDescription({ type: "offer", sdp: mungeOpus(offer.sdp ?? "") });
    const answer = await b.createAnswer();
    await b.setLocalDescription({ type: "answer", sdp: mungeOpus(answer.sdp ?? "") });
    await a.setRemoteDescription({ type: "answer", sdp: mungeOpus(answer.sdp ?? "") });
    // The fmtp asks for 128 kbit/s; the encoding cap must not be lower.
    const params = sender.getParameters();
    if (params.encodings?.[0]) {
      params.encodings[0].maxBitrate = 128_000;
      await sender.setParameters(params).catch(() => undefined);
    }
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
