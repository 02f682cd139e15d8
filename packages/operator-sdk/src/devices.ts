// Audio devices: listing the microphones and speakers the browser offers
// and checking a chosen id against that list. Only I/O on
// `navigator.mediaDevices` and trivial membership checks live here; the
// audio graph (audio.ts) performs the switches, the facade (operator.ts)
// remembers the choices and reports losses.

import { OperatorRequestError } from "./errors.js";
import type { AudioDevice, AudioDevices } from "./types.js";

/**
 * The device id that always means "the system default": for a microphone
 * no `deviceId` constraint, for a speaker the sink `""`. Chromium lists a
 * device with this id too; other browsers do not, so it is accepted
 * whether listed or not.
 */
export const DEFAULT_DEVICE_ID = "default";

/** Longest device id echoed back in an error message. */
const MAX_ECHOED_ID = 64;

/** A client-supplied id, quoted and shortened for an error message. */
export function quoteId(id: unknown): string {
  const s = String(id);
  return JSON.stringify(s.length > MAX_ECHOED_ID ? `${s.slice(0, MAX_ECHOED_ID)}…` : s);
}

function mediaDevices(): MediaDevices | undefined {
  return typeof navigator === "object" ? navigator.mediaDevices : undefined;
}

/** The current audio devices. Throws `AUDIO_DEVICE_NOT_FOUND` if devices cannot be listed. */
export async function enumerateAudioDevices(): Promise<AudioDevices> {
  const md = mediaDevices();
  if (!md || typeof md.enumerateDevices !== "function") {
    throw new OperatorRequestError(
      "AUDIO_DEVICE_NOT_FOUND",
      "navigator.mediaDevices.enumerateDevices is not available (insecure context?)",
    );
  }
  const all = await md.enumerateDevices();
  const pick = (kind: MediaDeviceKind): AudioDevice[] =>
    all
      .filter((d) => d.kind === kind)
      .map((d) => ({ deviceId: d.deviceId, label: d.label, groupId: d.groupId }));
  return { inputs: pick("audioinput"), outputs: pick("audiooutput") };
}

/** Whether the browser hid the device details (no microphone grant yet). */
export function labelsHidden(devices: AudioDevices): boolean {
  const all = [...devices.inputs, ...devices.outputs];
  return all.length > 0 && all.every((d) => d.label === "");
}

/**
 * Opens the default microphone once and stops it at once, so the browser
 * reveals device labels and ids (it shows its permission prompt if the
 * user has not decided yet). Failures are ignored: the list then simply
 * stays without labels.
 */
export async function revealLabels(): Promise<void> {
  const md = mediaDevices();
  if (!md || typeof md.getUserMedia !== "function") return;
  try {
    const stream = await md.getUserMedia({ audio: true });
    for (const t of stream.getTracks()) t.stop();
  } catch {
    // Denied or no microphone: the caller lists without labels.
  }
}

/** Whether `id` is one of `list`'s ids (ids hidden before a grant never match). */
export function hasDevice(list: readonly AudioDevice[], id: string): boolean {
  return list.some((d) => d.deviceId !== "" && d.deviceId === id);
}

/**
 * Checks a client-supplied device id against the current list: the id to
 * use, `undefined` for `"default"`, or `AUDIO_DEVICE_NOT_FOUND` for
 * anything else (not a non-empty string, or not listed).
 */
export async function listed(deviceId: unknown, kind: keyof AudioDevices): Promise<string | undefined> {
  if (deviceId === DEFAULT_DEVICE_ID) return undefined;
  if (typeof deviceId === "string" && deviceId !== "" && hasDevice((await enumerateAudioDevices())[kind], deviceId)) {
    return deviceId;
  }
  throw new OperatorRequestError(
    "AUDIO_DEVICE_NOT_FOUND",
    `no audio ${kind === "inputs" ? "input" : "output"} device with deviceId ${quoteId(deviceId)} (see listAudioDevices())`,
  );
}

/** Output selection of a playback route: the element's or the context's `setSinkId`. */
type SinkTarget = { setSinkId?: (id: string) => Promise<void> };

/** Whether playback on `route` can be sent to a chosen speaker in this browser. */
export function sinkSupported(route: "echo-safe" | "direct"): boolean {
  if (route === "direct") {
    return typeof AudioContext === "function" && typeof (AudioContext.prototype as SinkTarget).setSinkId === "function";
  }
  return (
    typeof HTMLMediaElement === "function" && typeof (HTMLMediaElement.prototype as SinkTarget).setSinkId === "function"
  );
}

/**
 * Sends an `<audio>` element's or an AudioContext's output to `sinkId`
 * (`undefined`: the default speaker). Throws `AUDIO_OUTPUT_NOT_SUPPORTED`
 * where the target has no `setSinkId`.
 */
export async function applySink(target: SinkTarget, sinkId: string | undefined): Promise<void> {
  if (typeof target.setSinkId !== "function") {
    throw new OperatorRequestError("AUDIO_OUTPUT_NOT_SUPPORTED", "this browser cannot choose the audio output (no setSinkId)");
  }
  await target.setSinkId(sinkId === undefined || sinkId === DEFAULT_DEVICE_ID ? "" : sinkId);
}
