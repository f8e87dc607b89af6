// Wire protocol v1: message types and MessagePack encode/decode.
//
// Every frame is one binary WebSocket message holding one MessagePack map
// with a `t` field. Heads travel as arrays of 32-byte binary hashes; inside
// this library (as in Automerge JS) heads are lowercase hex strings.

import { decode, encode } from "@msgpack/msgpack";

export const PROTOCOL_VERSION = 1;

/** Hex-encoded 32-byte change hashes, as Automerge JS uses them. */
export type HexHeads = string[];

// ---------------------------------------------------------------- client -> server

export interface HelloMsg {
  t: "hello";
  v: number[];
  peer: string;
  token?: string;
  caps: string[];
}
export interface OpenMsg {
  t: "open";
  doc: string;
}
export interface ClientSyncMsg {
  t: "sync";
  doc: string;
  data: Uint8Array;
}
export interface FlushMsg {
  t: "flush";
  id: number;
  docs: Record<string, HexHeads>;
}
export interface CloseMsg {
  t: "close";
  doc: string;
}
export interface ClientEphMsg {
  t: "eph";
  doc: string;
  data: Uint8Array;
}
export interface ByeMsg {
  t: "bye";
}
/** Replace the connection's token before it expires (no answer when accepted; close 4401 when refused). */
export interface AuthMsg {
  t: "auth";
  token: string;
}
export type ClientMessage =
  | HelloMsg
  | OpenMsg
  | ClientSyncMsg
  | FlushMsg
  | CloseMsg
  | ClientEphMsg
  | ByeMsg
  | AuthMsg;

// ---------------------------------------------------------------- server -> client

export interface WelcomeMsg {
  t: "welcome";
  v: number;
  peer: string;
  session: string;
  caps: string[];
  limits: Record<string, unknown>;
  /** Who the server takes this connection for (the `from` of our relayed eph); absent from older servers. */
  identity?: string;
  /** Seconds until the token expires (the server then closes 4401 unless `auth` brought a fresh one). */
  expires_in?: number;
}
/** What this connection may do with a document. */
export type Access = "read" | "write";
/** The answer to `open` (before its first `saved`); sent again when an `auth` changed the access. */
export interface OpenedMsg {
  t: "opened";
  doc: string;
  access: Access;
}
export interface ServerSyncMsg {
  t: "sync";
  doc: string;
  data: Uint8Array;
}
export interface SavedMsg {
  t: "saved";
  doc: string;
  heads: HexHeads;
}
export interface FlushedMsg {
  t: "flushed";
  id: number;
  docs: Record<string, HexHeads>;
}
export interface ServerEphMsg {
  t: "eph";
  doc: string;
  from: string;
  data: Uint8Array;
}
export interface ErrorMsg {
  t: "error";
  code: string;
  msg: string;
  doc?: string;
  id?: number;
}
export type ServerMessage =
  | WelcomeMsg
  | OpenedMsg
  | ServerSyncMsg
  | SavedMsg
  | FlushedMsg
  | ServerEphMsg
  | ErrorMsg;

/** A frame from the server that does not follow the protocol. */
export class ProtocolError extends Error {
  override name = "ProtocolError";
}

// ---------------------------------------------------------------- heads

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

export function bytesToHex(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i++) out += HEX[bytes[i]!];
  return out;
}

export function hexToBytes(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new ProtocolError(`not a hex string: ${hex}`);
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const headsToWire = (heads: HexHeads): Uint8Array[] => heads.map(hexToBytes);

// ---------------------------------------------------------------- document ids

const DOC_ID = /^[A-Za-z0-9._:~-]{1,256}$/;

export function isValidDocId(id: unknown): id is string {
  return typeof id === "string" && DOC_ID.test(id);
}

export function assertDocId(id: unknown): asserts id is string {
  if (!isValidDocId(id)) {
    throw new TypeError(`invalid document id ${JSON.stringify(id)}: 1-256 chars of [A-Za-z0-9._:~-]`);
  }
}

// ---------------------------------------------------------------- encode

export function encodeClientMessage(msg: ClientMessage): Uint8Array {
  let wire: Record<string, unknown>;
  if (msg.t === "flush") {
    const docs: Record<string, Uint8Array[]> = {};
    for (const [doc, heads] of Object.entries(msg.docs)) docs[doc] = headsToWire(heads);
    wire = { t: "flush", id: msg.id, docs };
  } else {
    wire = { ...msg };
  }
  return encode(wire, { ignoreUndefined: true });
}

// ---------------------------------------------------------------- decode

type Fields = Record<string, unknown>;

function str(m: Fields, k: string): string {
  const v = m[k];
  if (typeof v !== "string") throw new ProtocolError(`field ${k} must be a string`);
  return v;
}
function optStr(m: Fields, k: string): string | undefined {
  return m[k] == null ? undefined : str(m, k);
}
function optNum(m: Fields, k: string): number | undefined {
  const v = m[k];
  if (v == null) return undefined;
  if (typeof v === "bigint") return Number(v);
  if (typeof v !== "number" || !Number.isFinite(v)) throw new ProtocolError(`field ${k} must be a number`);
  return v;
}
function int(m: Fields, k: string): number {
  const v = m[k];
  if (typeof v === "bigint") return Number(v);
  if (typeof v !== "number" || !Number.isInteger(v)) throw new ProtocolError(`field ${k} must be an int`);
  return v;
}
function optInt(m: Fields, k: string): number | undefined {
  return m[k] == null ? undefined : int(m, k);
}
function bin(m: Fields, k: string): Uint8Array {
  const v = m[k];
  if (!(v instanceof Uint8Array)) throw new ProtocolError(`field ${k} must be binary`);
  return v;
}
function strList(m: Fields, k: string): string[] {
  const v = m[k] ?? [];
  if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) {
    throw new ProtocolError(`field ${k} must be a list of strings`);
  }
  return v as string[];
}
function heads(v: unknown, k: string): HexHeads {
  if (!Array.isArray(v)) throw new ProtocolError(`field ${k} must be a list of hashes`);
  return v.map((h) => {
    if (!(h instanceof Uint8Array) || h.length !== 32) {
      throw new ProtocolError(`field ${k} must hold 32-byte hashes`);
    }
    return bytesToHex(h);
  });
}
function headsMap(m: Fields, k: string): Record<string, HexHeads> {
  const v = m[k] ?? {};
  if (typeof v !== "object" || v === null || Array.isArray(v) || v instanceof Uint8Array) {
    throw new ProtocolError(`field ${k} must be a map`);
  }
  const out: Record<string, HexHeads> = {};
  for (const [doc, hs] of Object.entries(v as Fields)) out[doc] = heads(hs, `${k}.${doc}`);
  return out;
}

/**
 * Decode one server frame. Returns `null` for a well-formed frame of a type
 * this client does not know (forward compatibility), after telling
 * `onUnknown` its type; throws ProtocolError for a malformed one. Unknown
 * fields are ignored.
 */
export function decodeServerMessage(frame: Uint8Array, onUnknown?: (t: string) => void): ServerMessage | null {
  let raw: unknown;
  try {
    raw = decode(frame, { useBigInt64: false });
  } catch (e) {
    throw new ProtocolError(`not MessagePack: ${(e as Error).message}`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw) || raw instanceof Uint8Array) {
    throw new ProtocolError("frame is not a map");
  }
  const m = raw as Fields;
  const t = str(m, "t");
  switch (t) {
    case "welcome": {
      const limits = m["limits"];
      const out: WelcomeMsg = {
        t,
        v: int(m, "v"),
        peer: str(m, "peer"),
        session: optStr(m, "session") ?? "",
        caps: strList(m, "caps"),
        limits: typeof limits === "object" && limits !== null ? (limits as Record<string, unknown>) : {},
      };
      const identity = optStr(m, "identity");
      const expiresIn = optNum(m, "expires_in");
      if (identity !== undefined) out.identity = identity;
      if (expiresIn !== undefined) out.expires_in = expiresIn;
      return out;
    }
    case "opened": {
      const access = str(m, "access");
      if (access !== "read" && access !== "write") throw new ProtocolError(`field access must be "read" or "write"`);
      return { t, doc: str(m, "doc"), access };
    }
    case "sync":
      return { t, doc: str(m, "doc"), data: bin(m, "data") };
    case "saved":
      return { t, doc: str(m, "doc"), heads: heads(m["heads"], "heads") };
    case "flushed":
      return { t, id: int(m, "id"), docs: headsMap(m, "docs") };
    case "eph":
      // An empty payload may be omitted by the sender's encoder.
      return { t, doc: str(m, "doc"), from: optStr(m, "from") ?? "", data: m["data"] == null ? new Uint8Array(0) : bin(m, "data") };
    case "error": {
      const out: ErrorMsg = { t, code: str(m, "code"), msg: optStr(m, "msg") ?? "" };
      const doc = optStr(m, "doc");
      const id = optInt(m, "id");
      if (doc !== undefined) out.doc = doc;
      if (id !== undefined) out.id = id;
      return out;
    }
    default:
      onUnknown?.(t);
      return null;
  }
}

/** Server-side frame encoder; used by tests and fake servers. */
export function encodeServerMessage(msg: ServerMessage): Uint8Array {
  let wire: Record<string, unknown>;
  if (msg.t === "saved") wire = { ...msg, heads: headsToWire(msg.heads) };
  else if (msg.t === "flushed") {
    const docs: Record<string, Uint8Array[]> = {};
    for (const [doc, hs] of Object.entries(msg.docs)) docs[doc] = headsToWire(hs);
    wire = { t: "flushed", id: msg.id, docs };
  } else wire = { ...msg };
  return encode(wire, { ignoreUndefined: true });
}

/** Client-frame decoder; used by tests and fake servers. Heads come back as hex. */
export function decodeClientMessage(frame: Uint8Array): ClientMessage {
  const m = decode(frame) as Fields;
  const t = str(m, "t");
  switch (t) {
    case "hello": {
      const v = m["v"];
      const out: HelloMsg = {
        t,
        v: Array.isArray(v) ? v.map(Number) : [],
        peer: str(m, "peer"),
        caps: strList(m, "caps"),
      };
      const token = optStr(m, "token");
      if (token !== undefined) out.token = token;
      return out;
    }
    case "open":
    case "close":
      return { t, doc: str(m, "doc") };
    case "sync":
    case "eph":
      return { t, doc: str(m, "doc"), data: bin(m, "data") };
    case "flush":
      return { t, id: int(m, "id"), docs: headsMap(m, "docs") };
    case "bye":
      return { t };
    case "auth":
      return { t, token: str(m, "token") };
    default:
      throw new ProtocolError(`unknown client message type ${t}`);
  }
}
