/** An error reported by the server (`error` frame), a close code, or the client itself. */
export class BridgeError extends Error {
  override name = "BridgeError";
  /**
   * Server error code (e.g. "flush_timeout"), or a client code: "unauthorized"
   * (4401), "forbidden" (4403), "protocol" (4400 or a bad frame), "too_big"
   * (1009), "server_error" (1011), "http_error" (the WebSocket upgrade was
   * answered with an HTTP error, see `httpStatus`), "version", "storage",
   * "closed", "timeout".
   */
  readonly code: string;
  /** The document the error is about, if any. */
  readonly doc: string | undefined;
  /** The request (flush id) the error answers, if any. */
  readonly id: number | undefined;
  /** WebSocket close code that caused this error, if any. */
  readonly closeCode: number | undefined;
  /** HTTP status the server answered the WebSocket upgrade with (code "http_error"), if any. */
  readonly httpStatus: number | undefined;

  constructor(
    code: string,
    message: string,
    extra: { doc?: string; id?: number; closeCode?: number; httpStatus?: number; cause?: unknown } = {},
  ) {
    super(message || code, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.code = code;
    this.doc = extra.doc;
    this.id = extra.id;
    this.closeCode = extra.closeCode;
    this.httpStatus = extra.httpStatus;
  }
}
