// Demo page: a shared text area, a to-do list and presence on the document
// named by the URL hash (default "demo"). A bridge with token auth takes the
// token from the page URL (`?token=...`): with read access only, the page is
// a live, read-only view; without access it says "forbidden". Uses the client the server serves
// next to this page (./client.js): the build maps the package import below
// to that file, so the demo shares its Automerge instance and wasm. Every
// path is relative to the page, so the demo also works when the bridge is
// mounted under a prefix (e.g. Mount("/bridge", app) -> /bridge/).

import {
  Automerge,
  BridgeClient,
  BridgeError,
  ForbiddenError,
  NotFoundError,
  UnauthorizedError,
  type BridgeDoc,
  type ClientStatus,
} from "automerge-bridge-client";

interface Todo {
  id: string;
  title: string;
  done: boolean;
}
interface DemoDoc {
  text: string;
  todos: Todo[];
}
interface Presence {
  type: "presence" | "leave";
  name?: string;
  color?: string;
}
interface Peer {
  name: string;
  color: string;
  seen: number;
}

const HEARTBEAT_MS = 5_000;
const PEER_TTL_MS = 15_000;
const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"];

const $ = <E extends HTMLElement>(id: string): E => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing #${id}`);
  return el as E;
};
const textarea = $<HTMLTextAreaElement>("text");
const statusEl = $<HTMLSpanElement>("status");
const nameInput = $<HTMLInputElement>("name");
const peopleEl = $<HTMLUListElement>("people");
const todoForm = $<HTMLFormElement>("todo-form");
const todoTitle = $<HTMLInputElement>("todo-title");
const todoAdd = $<HTMLButtonElement>("todo-add");
const todosEl = $<HTMLUListElement>("todos");
const accessEl = $<HTMLSpanElement>("access");
const readOnlyNote = $<HTMLParagraphElement>("readonly-note");
const mainEl = document.querySelector("main")!;
// The easiest way to see sync: the same document in a second tab.
const inviteEl = $<HTMLAnchorElement>("invite");
inviteEl.href = location.href;
const noticeEl = $<HTMLDivElement>("notice");

const docId = docIdFromHash();
$("doc-name").textContent = `#${docId}`;
document.title = `${docId} · automerge-bridge demo`;
window.addEventListener("hashchange", () => location.reload());

// The sync socket sits next to this page: <page's directory>/sync.
const syncUrl = new URL("sync", location.href);
syncUrl.protocol = location.protocol === "https:" ? "wss:" : "ws:";
syncUrl.hash = "";
syncUrl.search = "";
// A bridge with token auth: the token comes with the page's link. It goes
// to the server in `hello`, never to the console.
const token = new URLSearchParams(location.search).get("token") || undefined;
const client = new BridgeClient(syncUrl.href, { warnOnUnsaved: true, ...(token ? { token } : {}) });

/** What tests and the console can reach: the client, and the document once open. */
interface DemoHandle {
  client: BridgeClient;
  docId: string;
  doc: BridgeDoc<DemoDoc> | null;
  /** "loading" | "ready" | "forbidden" | "unauthorized" | "not-found" | "error" (also body[data-state]). */
  state: string;
}
const demo: DemoHandle = { client, docId, doc: null, state: "loading" };
const g = globalThis as { bridgeClient?: BridgeClient; bridgeDemo?: DemoHandle };
g.bridgeClient = client; // for tests and the console
g.bridgeDemo = demo;
document.body.dataset["state"] = demo.state;

// ------------------------------------------------------------ access

const SVG = (body: string): string =>
  `<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">${body}</svg>`;
const ICONS = {
  /** A no-entry sign. */
  forbidden: SVG('<circle cx="12" cy="12" r="9"/><path d="M5.6 5.6l12.8 12.8"/>'),
  /** A padlock. */
  locked: SVG('<rect x="5" y="11" width="14" height="10" rx="2"/><path d="M8 11V7a4 4 0 0 1 8 0v4"/>'),
  /** A magnifier. */
  search: SVG('<circle cx="11" cy="11" r="7"/><path d="M20 20l-4-4"/>'),
  /** A warning triangle. */
  warning: SVG('<path d="M12 3l10 18H2z"/><path d="M12 10v5M12 18h.01"/>'),
};

/** Show why there is no document to show: the page's main part gives way to a notice. */
function showProblem(state: string, icon: keyof typeof ICONS, title: string, text: string): void {
  demo.state = state;
  document.body.dataset["state"] = state;
  noticeEl.dataset["kind"] = state;
  noticeEl.querySelector(".icon")!.innerHTML = ICONS[icon]; // our own constant markup
  $("notice-title").textContent = title;
  $("notice-text").textContent = text;
  noticeEl.hidden = false;
  mainEl.hidden = true;
  accessEl.hidden = true;
}

/** The page's answer to an error that leaves no document to show. */
function showError(e: unknown): void {
  const where = `#${docId}`;
  if (e instanceof ForbiddenError) {
    showProblem("forbidden", "forbidden", "Forbidden", `Your link does not give access to ${where}. Ask its owner for a link that does.`);
  } else if (e instanceof UnauthorizedError || (e instanceof BridgeError && e.httpStatus === 401)) {
    showProblem(
      "unauthorized",
      "locked",
      "Sign-in needed",
      token
        ? "The token in this link is not valid (any more): it may have expired. Open a fresh link."
        : "This bridge needs a token: open the page with ?token=... in its address.",
    );
  } else if (e instanceof NotFoundError) {
    showProblem("not-found", "search", "No such document", `${where} does not exist, and your link may only read documents, not create them.`);
  } else {
    const msg = e instanceof BridgeError ? e.message : String(e);
    showProblem("error", "warning", "Cannot open this document", msg);
  }
}

// ------------------------------------------------------------ status

const STATUS_TEXT: Record<ClientStatus, string> = {
  connecting: "connecting…",
  offline: "offline",
  saving: "saving…",
  saved: "saved",
  failed: "failed",
  closed: "closed",
};
// Edits made here that the server has not confirmed yet: counted per local
// change, cleared once everything is saved.
let waiting = 0;
function statusText(s: ClientStatus): string {
  if (s !== "offline" && s !== "connecting") return STATUS_TEXT[s];
  // Which side is unreachable: the browser knows when it has no network at all.
  const why = navigator.onLine ? (s === "offline" ? "server unreachable, retrying" : "connecting…") : "offline: no network";
  return waiting ? `${why} · ${waiting} edit${waiting === 1 ? "" : "s"} waiting` : why;
}
function showStatus(s: ClientStatus): void {
  if (s === "saved") waiting = 0;
  statusEl.dataset["status"] = s;
  statusEl.dataset["network"] = navigator.onLine ? "online" : "offline";
  statusEl.textContent = statusText(s);
  statusEl.title = statusEl.textContent;
}
function edited(): void {
  waiting += 1;
  showStatus(client.status);
}
window.addEventListener("online", () => showStatus(client.status));
window.addEventListener("offline", () => showStatus(client.status));
showStatus(client.status);
client.on("status", (s) => {
  showStatus(s);
  if (s === "saved" || s === "saving") announce(); // (re)connected: tell the others
});
client.on("error", (e) => {
  console.warn("automerge-bridge:", e.code, e.message);
  // Refused for good (e.g. the token expired): say so, rather than a page that silently stopped.
  if (client.status === "failed" && demo.state === "ready") showError(e);
});

// ------------------------------------------------------------ presence

const me = { name: loadName(), color: COLORS[Math.floor(Math.random() * COLORS.length)]! };
const peers = new Map<string, Peer>();
nameInput.value = me.name;
nameInput.addEventListener("input", () => {
  me.name = nameInput.value.trim() || "anonymous";
  try {
    localStorage.setItem("bridge-demo-name", me.name);
  } catch {
    // storage may be unavailable (private mode)
  }
  announce();
  renderPeople();
});

let opened = false; // the server relays presence only for an open document

function announce(): void {
  if (!opened) return;
  const msg: Presence = { type: "presence", name: me.name, color: me.color };
  client.ephemeral(docId, msg);
}

client.on("ephemeral", ({ doc, from, value }) => {
  if (doc !== docId || typeof value !== "object" || value === null) return;
  const p = value as Presence;
  if (p.type === "leave") peers.delete(from);
  else if (p.type === "presence") {
    const isNew = !peers.has(from);
    peers.set(from, { name: String(p.name ?? "anonymous").slice(0, 40), color: String(p.color ?? "#888"), seen: Date.now() });
    if (isNew) announce(); // let the newcomer see us without waiting for a heartbeat
  }
  renderPeople();
});

setInterval(() => {
  announce();
  const now = Date.now();
  for (const [id, p] of peers) if (now - p.seen > PEER_TTL_MS) peers.delete(id);
  renderPeople();
}, HEARTBEAT_MS);
window.addEventListener("pagehide", () => client.ephemeral(docId, { type: "leave" } satisfies Presence));

function renderPeople(): void {
  const rows: [string, string, boolean][] = [[me.name, me.color, true]];
  for (const p of peers.values()) rows.push([p.name, p.color, false]);
  peopleEl.replaceChildren(
    ...rows.map(([name, color, you]) => {
      const li = document.createElement("li");
      const dot = document.createElement("span");
      dot.className = "dot";
      dot.style.background = color;
      const label = document.createElement("span");
      label.textContent = name;
      li.append(dot, label);
      if (you) {
        const tag = document.createElement("span");
        tag.className = "you";
        tag.textContent = "(you)";
        li.append(tag);
      }
      return li;
    }),
  );
}
renderPeople();

// ------------------------------------------------------------ document

const doc: BridgeDoc<DemoDoc> = await client.open<DemoDoc>(docId).catch((e: unknown) => {
  showError(e);
  // Nothing more to set up: the notice says why (and the console's warning above).
  return new Promise<never>(() => {});
});
demo.doc = doc;
opened = true;
announce();
if (!doc.readOnly) ensureShape(doc);

/** The text area's content as last synced with the document. */
let shownText = currentText();
textarea.value = shownText;
textarea.disabled = false;
applyAccess();
renderTodos();
demo.state = "ready";
document.body.dataset["state"] = "ready";

/** Editable, or a live read-only view (the server decides: `opened {access}`). */
function applyAccess(): void {
  const ro = doc.readOnly;
  document.body.dataset["access"] = ro ? "read" : "write";
  accessEl.hidden = !ro;
  readOnlyNote.hidden = !ro;
  textarea.readOnly = ro;
  textarea.setAttribute("aria-readonly", String(ro));
  textarea.placeholder = ro ? "Nothing here yet: you will see it as soon as someone writes." : "Type here; everyone on this document sees it.";
  todoTitle.disabled = ro;
  todoAdd.disabled = ro;
  todoForm.hidden = ro;
  renderTodos();
}
doc.on("access", () => {
  applyAccess();
  if (!doc.readOnly) ensureShape(doc);
});
// The server closed it (a refreshed token lost its access): not an empty page.
doc.on("error", (e) => {
  if (e instanceof ForbiddenError || e instanceof NotFoundError) showError(e);
});

textarea.addEventListener("input", () => {
  if (doc.readOnly) {
    textarea.value = shownText; // belt and braces: a read-only view never diverges
    return;
  }
  const next = textarea.value;
  const edit = minimalSplice(shownText, next);
  shownText = next;
  if (!edit) return;
  doc.change((d) => {
    if (typeof d.text !== "string") d.text = shownText; // not a Text field: replace it
    else Automerge.splice(d, ["text"], edit.index, edit.remove, edit.insert);
  });
});

doc.on("change", ({ patches, origin }) => {
  renderTodos();
  if (origin === "remote") applyRemoteText(patches);
  else if (client.status !== "saved") edited();
});
// A reconnect may bring in a doc created elsewhere in the meantime.
doc.on("synced", () => {
  if (!doc.readOnly) ensureShape(doc);
  applyRemoteText([]);
});

todoForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const title = todoTitle.value.trim();
  if (!title || doc.readOnly) return;
  doc.change((d) => {
    d.todos.push({ id: randomId(), title, done: false });
  });
  todoTitle.value = "";
});

function ensureShape(d: BridgeDoc<DemoDoc>): void {
  const v = d.value as Partial<DemoDoc>;
  if (v.text === undefined || !Array.isArray(v.todos)) {
    d.change((m) => {
      if (m.text === undefined) m.text = "";
      if (!Array.isArray(m.todos)) m.todos = [];
    });
  }
}

function currentText(): string {
  const t = (doc.value as Partial<DemoDoc>).text;
  return t === undefined ? "" : String(t);
}

/** Show remote text edits, keeping the local selection where it belongs. */
function applyRemoteText(patches: Automerge.Patch[]): void {
  const next = currentText();
  if (next === textarea.value) {
    shownText = next;
    return;
  }
  const focused = document.activeElement === textarea;
  let start = textarea.selectionStart;
  let end = textarea.selectionEnd;
  const touchesText = patches.some((p) => p.path[0] === "text");
  const textPatches = patches.filter((p) => p.path[0] === "text" && p.path.length === 2);
  if (touchesText && textPatches.length === patches.filter((p) => p.path[0] === "text").length) {
    for (const p of textPatches) {
      const at = p.path[1] as number;
      if (p.action === "splice") {
        const n = p.value.length;
        if (at < start) start += n;
        if (at < end) end += n;
      } else if (p.action === "del") {
        const n = p.length ?? 1;
        if (at < start) start -= Math.min(n, start - at);
        if (at < end) end -= Math.min(n, end - at);
      }
    }
  } else {
    // The text was replaced wholesale (or we lack patches): map by diff.
    const edit = minimalSplice(textarea.value, next);
    if (edit) {
      const shift = (pos: number): number =>
        pos <= edit.index ? pos : pos >= edit.index + edit.remove ? pos + edit.insert.length - edit.remove : edit.index + edit.insert.length;
      start = shift(start);
      end = shift(end);
    }
  }
  const scroll = textarea.scrollTop;
  textarea.value = next;
  shownText = next;
  if (focused) textarea.setSelectionRange(clamp(start, next.length), clamp(end, next.length));
  textarea.scrollTop = scroll;
}

function renderTodos(): void {
  const todos = (doc.value as Partial<DemoDoc>).todos ?? [];
  const ro = doc.readOnly;
  if (!todos.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "Nothing to do.";
    todosEl.replaceChildren(li);
    return;
  }
  todosEl.replaceChildren(
    ...todos.map((t, i) => {
      const li = document.createElement("li");
      if (t.done) li.className = "done";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = t.done;
      box.disabled = ro;
      box.setAttribute("aria-label", `done: ${t.title}`);
      box.addEventListener("change", () => toggle(t.id, i, box.checked));
      const title = document.createElement("span");
      title.className = "title";
      title.textContent = String(t.title);
      const del = document.createElement("button");
      del.type = "button";
      del.textContent = "×";
      del.title = "Delete";
      del.disabled = ro;
      del.addEventListener("click", () => remove(t.id, i));
      li.append(box, title, del);
      return li;
    }),
  );
}

/** Index of a to-do by id (ids survive concurrent inserts; `hint` is where it was). */
function indexOf(todos: Todo[], id: string, hint: number): number {
  return todos[hint]?.id === id ? hint : todos.findIndex((t) => t.id === id);
}
function toggle(id: string, hint: number, done: boolean): void {
  doc.change((d) => {
    const i = indexOf(d.todos, id, hint);
    if (i >= 0) d.todos[i]!.done = done;
  });
}
function remove(id: string, hint: number): void {
  doc.change((d) => {
    const i = indexOf(d.todos, id, hint);
    if (i >= 0) d.todos.splice(i, 1);
  });
}

// ------------------------------------------------------------ helpers

/** The single splice turning `a` into `b`: common prefix and suffix kept. */
function minimalSplice(a: string, b: string): { index: number; remove: number; insert: string } | null {
  if (a === b) return null;
  let pre = 0;
  const max = Math.min(a.length, b.length);
  while (pre < max && a.charCodeAt(pre) === b.charCodeAt(pre)) pre++;
  if (pre > 0 && isHighSurrogate(a.charCodeAt(pre - 1))) pre--; // don't split a surrogate pair
  let suf = 0;
  while (suf < max - pre && a.charCodeAt(a.length - 1 - suf) === b.charCodeAt(b.length - 1 - suf)) suf++;
  if (suf > 0 && isLowSurrogate(a.charCodeAt(a.length - suf))) suf--;
  return { index: pre, remove: a.length - pre - suf, insert: b.slice(pre, b.length - suf) };
}

function isHighSurrogate(c: number): boolean {
  return c >= 0xd800 && c <= 0xdbff;
}
function isLowSurrogate(c: number): boolean {
  return c >= 0xdc00 && c <= 0xdfff;
}
function clamp(n: number, max: number): number {
  return Math.max(0, Math.min(n, max));
}

function docIdFromHash(): string {
  let raw = location.hash.slice(1);
  try {
    raw = decodeURIComponent(raw);
  } catch {
    // keep it as it is
  }
  return /^[A-Za-z0-9._:~-]{1,256}$/.test(raw) ? raw : "demo";
}

function loadName(): string {
  try {
    const saved = localStorage.getItem("bridge-demo-name");
    if (saved) return saved;
  } catch {
    // ignore
  }
  return `guest-${Math.floor(Math.random() * 9000 + 1000)}`;
}

function randomId(): string {
  return Math.random().toString(36).slice(2, 10) + Date.now().toString(36);
}
