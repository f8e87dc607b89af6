// automerge-bridge browser/Node client: public API.

export { Automerge } from "./automerge.js";
export { BridgeClient } from "./client.js";
export type { BridgeClientOptions, ClientEvents, ClientStatus, EphemeralEvent, TokenSource, WelcomeInfo } from "./client.js";
export { BridgeDoc } from "./doc.js";
export type { ChangeOrigin, DocChangeEvent, DocEvents } from "./doc.js";
export {
  BridgeError,
  ForbiddenError,
  NotFoundError,
  QuotaExceededError,
  ReadOnlyError,
  UnauthorizedError,
  bridgeError,
} from "./errors.js";
export { IndexedDbStore, MemoryStore } from "./persistence.js";
export type { StoredChunk, UnsavedStore } from "./persistence.js";
export {
  PROTOCOL_VERSION,
  ProtocolError,
  bytesToHex,
  decodeClientMessage,
  decodeServerMessage,
  encodeClientMessage,
  encodeServerMessage,
  hexToBytes,
  isValidDocId,
} from "./protocol.js";
export type { Access, ClientMessage, HexHeads, ServerMessage } from "./protocol.js";
export type { WebSocketConstructor, WebSocketLike } from "./transport.js";
