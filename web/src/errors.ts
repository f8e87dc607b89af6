/** An error reported by the server (`error` frame), a close code, or the client itself. */
export class BridgeError extends Error {
  override name = "BridgeError";
  /**
   * Server error code (e.g. "flush_timeout", "forbidden", "read_only",
   * "not_found", "quota"), or a client code: "unauthorized" (4401),
   * "forbidden" (4403), "protocol" (4400 or a bad frame), "too_big"
   * (1009), "server_error" (1011), "http_error" (the WebSocket upgrade was
   * answered with an HTTP error, see `httpStatus`), "version", "storage",
   * "closed", "timeout". The codes with a subclass of their own (see
   * `bridgeError`) are also told apart with `instanceof`.
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

type Extra = ConstructorParameters<typeof BridgeError>[2];

// The typed errors keep `name` "BridgeError" (one family, as in stack traces
// and logs); `instanceof` and `code` tell them apart.

/**
 * No token, a bad or expired one (close 4401), or no fresh token to be had:
 * fatal unless the `token` option is a function that gives a fresh token.
 */
export class UnauthorizedError extends BridgeError {
  constructor(message: string, extra: Extra = {}) {
    super("unauthorized", message, extra);
  }
}

/**
 * The token does not let us read this document (`error forbidden`): `open()`
 * rejects with it, or an open document is closed when a refreshed token took
 * its access away. Also the connection-level refusal (close 4403).
 */
export class ForbiddenError extends BridgeError {
  constructor(message: string, extra: Extra = {}) {
    super("forbidden", message, extra);
  }
}

/**
 * The document is read-only for us: thrown by `doc.change()` before it
 * touches the local document, and sent by the server (`error read_only`) for
 * changes it refused.
 */
export class ReadOnlyError extends BridgeError {
  constructor(message: string, extra: Extra = {}) {
    super("read_only", message, extra);
  }
}

/** `open()` of a document that does not exist, by a client that may read but not create it. */
export class NotFoundError extends BridgeError {
  constructor(message: string, extra: Extra = {}) {
    super("not_found", message, extra);
  }
}

/** Over a quota (e.g. documents created per hour): `error quota`. */
export class QuotaExceededError extends BridgeError {
  constructor(message: string, extra: Extra = {}) {
    super("quota", message, extra);
  }
}

const BY_CODE: Record<string, new (message: string, extra?: Extra) => BridgeError> = {
  unauthorized: UnauthorizedError,
  forbidden: ForbiddenError,
  read_only: ReadOnlyError,
  not_found: NotFoundError,
  quota: QuotaExceededError,
};

/** The error for a code: its subclass when it has one, else a plain BridgeError (forward compatible). */
export function bridgeError(code: string, message: string, extra: Extra = {}): BridgeError {
  const Kind = Object.hasOwn(BY_CODE, code) ? BY_CODE[code] : undefined;
  return Kind ? new Kind(message, extra) : new BridgeError(code, message, extra);
}
