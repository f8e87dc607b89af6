/** An error reported by the server (`error` frame), a close code, or the client itself. */
export class BridgeError extends Error {
  override name = "BridgeError";
  /** Server error code (e.g. "flush_timeout"), or a client code: "unauthorized", "forbidden", "protocol", "storage", "closed", "version". */
  readonly code: string;
  /** The document the error is about, if any. */
  readonly doc: string | undefined;
  /** The request (flush id) the error answers, if any. */
  readonly id: number | undefined;
  /** WebSocket close code that caused this error, if any. */
  readonly closeCode: number | undefined;

  constructor(code: string, message: string, extra: { doc?: string; id?: number; closeCode?: number; cause?: unknown } = {}) {
    super(message || code, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.code = code;
    this.doc = extra.doc;
    this.id = extra.id;
    this.closeCode = extra.closeCode;
  }
}
