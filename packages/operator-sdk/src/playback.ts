// Echo-safe playback: the far end's audio leaves the AudioContext through a
// MediaStreamAudioDestinationNode, crosses an in-page RTCPeerConnection
// loopback (two local peer connections, host candidates only, no network)
// and plays in an <audio> element. Why: browsers' echo cancellers take
// their reference from WebRTC playout; plain Web Audio output is cancelled
// only by Chromium's "Chrome-wide echo cancellation" (measured: about 0 dB
// without it, crbug 687574), so an operator on laptop speakers would send the
// caller's own voice back. Every WebRTC softphone plays this way.

import type { OperatorLogger } from "./types.js";

/** Which route the far end's audio takes to the speakers. */
export type AudioRoute = "webrtc-loopback" | "web-audio";

/** How long the loopback may take to connect before the direct route is used. */
export const LOOPBACK_CONNECT_MS = 1500;

/**
 * The loopback's Opus settings, set on both descriptions (the receiver's
 * fmtp tells the sender how to encode): no DTX (it would cut the speech
 * tails the canceller needs and add comfort noise), no in-band FEC (nothing
 * is lost on a loopback), mono at 128 kbit/s so the extra encode costs no
 * audible quality.
 */
const OPUS_FMTP = "usedtx=0;stereo=0;sprop-stereo=0;maxaveragebitrate=128000;useinbandfec=0";

/** @internal */
export function mungeOpus(sdp: string): string {
  const m = /^a=rtpmap:(\d+) opus\/48000.*$/im.exec(sdp);
  if (!m) return sdp;
  const pt = m[1];
  const fmtp = new RegExp(`^a=fmtp:${pt} (.*)$`, "m");
  const drop = new Set(["usedtx", "stereo", "sprop-stereo", "maxaveragebitrate", "useinbandfec"]);
  sdp = withPtime(sdp);
  if (fmtp.test(sdp)) {
    return sdp.replace(fmtp, (_line, params: string) => {
      const kept = params
        .split(";")
        .map((p) => p.trim())
        .filter((p) => p && !drop.has((p.split("=")[0] ?? "").toLowerCase()));
      return `a=fmtp:${pt} ${[...kept, OPUS_FMTP].join(";")}`;
    });
  }
  return sdp.replace(m[0], `${m[0]}\r\na=fmtp:${pt} ${OPUS_FMTP}`);
}

/**
 * 10 ms Opus packets instead of 20: half the packetisation delay, and the
 * receiver's jitter buffer can run on a smaller target.
 */
function withPtime(sdp: string): string {
  const clean = sdp.replace(/^a=(?:max)?ptime:\d+\r?\n/gm, "");
  return clean.replace(/^(a=rtpmap:\d+ opus\/48000.*\r?\n)/im, "$1a=ptime:10\r\na=maxptime:10\r\n");
}

/** A connected loopback; `close()` releases every piece (idempotent). */
export interface Loopback {
  element: HTMLAudioElement;
  close(): void;
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
  let closed = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const close = (): void => {
    if (closed) return;
    closed = true;
    clearTimeout(timer);
    a.onicecandidate = b.onicecandidate = b.ontrack = null;
    a.close();
    b.close();
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
    return { element, close };
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
