import type { OperatorErrorCode } from "./types.js";

/**
 * The error a failed SDK request rejects (or throws) with: `dial()`,
 * `goOnline()`, `listPhoneNumbers()`, `sendDtmf()`, ... Inspect `code`.
 *
 * ```ts
 * try { await op.dial("+39021234567", { callerId }); }
 * catch (e) { if (e instanceof OperatorRequestError && e.code === "OPERATOR_BUSY") { … } }
 * ```
 */
export class OperatorRequestError extends Error {
  /** Stable error code, see {@link OperatorErrorCode}. */
  readonly code: OperatorErrorCode;
  /** The underlying exception, when there is one. */
  readonly cause?: unknown;

  /**
   * @param code - stable error code
   * @param message - human-readable description
   * @param cause - the underlying exception, if any
   */
  constructor(code: OperatorErrorCode, message: string, cause?: unknown) {
    super(message);
    this.name = "OperatorRequestError";
    this.code = code;
    if (cause !== undefined) this.cause = cause;
    // Keep `instanceof` working when compiled to ES5-style classes.
    Object.setPrototypeOf(this, new.target.prototype);
  }
}
