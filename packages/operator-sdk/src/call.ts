import type { CallStats } from "./quality.js";
import type { CallDirection, CallEndReason, CallState } from "./types.js";

/**
 * One phone call, inbound or outbound. The SDK keeps **one object per
 * `callSid`** for the call's whole life and keeps its fields current, so the
 * object you got from `incomingCall` is the same one `callStarted` and
 * `callEnded` hand you (`===` holds).
 */
export interface OperatorCall {
  /** The platform's call id. */
  readonly callSid: string;
  /** `inbound` (the phone network called you) or `outbound` (you dialled). */
  readonly direction: CallDirection;
  /** Caller, E.164 (inbound: the remote party; outbound: your caller id). */
  readonly from?: string;
  /** Callee, E.164 (inbound: your number; outbound: the dialled number). */
  readonly to?: string;
  /** Lifecycle state: `ringing` → `connecting` → `active` → `ended`. */
  readonly state: CallState;
  /** Why the call ended; set once `state` is `ended`. */
  readonly endReason?: CallEndReason;
  /** Whether the microphone is muted (the far end hears silence). */
  readonly muted: boolean;
  /** Answers an inbound offer (no-op unless ringing). */
  accept(): void;
  /** Declines an inbound offer (no-op unless ringing). */
  reject(): void;
  /** Mutes (`true`) or unmutes (`false`) the microphone for the far end. */
  mute(on: boolean): void;
  /**
   * Sends one DTMF digit (`"0"`-`"9"`, `"*"`, `"#"`) to the far end.
   * @throws {@link OperatorRequestError} with code `INVALID_DTMF` for any
   * other string.
   */
  sendDtmf(digit: string): void;
  /** Ends the call (or cancels an outbound call that is still ringing). */
  hangup(): void;
  /**
   * A snapshot of the call's audio quality: frames, loss, jitter, playout
   * delay, round-trip time, MOS and levels (see {@link CallStats}). After
   * the call ended it gives the last figures.
   * @throws {@link OperatorRequestError} (rejects) with code `CALL_NOT_FOUND`
   * while the call's audio has not started yet.
   */
  getStats(): Promise<CallStats>;
}

/**
 * The call snapshot the core emits (`CallInfo`); keys are camelCase.
 * @internal
 */
export interface CallInfo {
  callSid: string;
  direction: CallDirection;
  from?: string | null;
  to?: string | null;
  state: CallState;
  endReason?: CallEndReason | null;
  muted: boolean;
}

/**
 * What a call forwards its methods to (the operator's core driver).
 * @internal
 */
export interface CallController {
  accept(callSid: string): void;
  reject(callSid: string): void;
  mute(callSid: string, on: boolean): void;
  sendDtmf(callSid: string, digit: string): void;
  hangup(callSid: string): void;
  getStats(callSid: string): Promise<CallStats>;
}

/**
 * The one implementation of {@link OperatorCall}: a view over the core's call
 * snapshots. It holds no state machine: every method goes to the core.
 * @internal
 */
export class Call implements OperatorCall {
  readonly callSid: string;
  readonly direction: CallDirection;
  from?: string;
  to?: string;
  state: CallState;
  endReason?: CallEndReason;
  muted: boolean;
  /** The quality figures when the call's audio ended. @internal */
  finalStats: CallStats | undefined;

  constructor(
    info: CallInfo,
    private readonly controller: CallController,
  ) {
    this.callSid = info.callSid;
    this.direction = info.direction;
    this.state = info.state;
    this.muted = info.muted;
    this.update(info);
  }

  /** Copies a fresh core snapshot into this object. */
  update(info: CallInfo): void {
    if (info.from != null) this.from = info.from;
    if (info.to != null) this.to = info.to;
    this.state = info.state;
    if (info.endReason != null) this.endReason = info.endReason;
    this.muted = info.muted;
  }

  accept(): void {
    this.controller.accept(this.callSid);
  }

  reject(): void {
    this.controller.reject(this.callSid);
  }

  mute(on: boolean): void {
    this.controller.mute(this.callSid, on);
  }

  sendDtmf(digit: string): void {
    this.controller.sendDtmf(this.callSid, digit);
  }

  hangup(): void {
    this.controller.hangup(this.callSid);
  }

  getStats(): Promise<CallStats> {
    if (this.finalStats) return Promise.resolve({ ...this.finalStats });
    return this.controller.getStats(this.callSid);
  }

  /** A plain snapshot for `JSON.stringify` and logging. */
  toJSON(): Omit<OperatorCall, "accept" | "reject" | "mute" | "sendDtmf" | "hangup" | "getStats"> {
    return {
      callSid: this.callSid,
      direction: this.direction,
      from: this.from,
      to: this.to,
      state: this.state,
      endReason: this.endReason,
      muted: this.muted,
    };
  }
}
