// One interface over both kinds of client, for the drivers that edit a
// document from many clients: join(docOrUrl, onChange) -> { change(fn), doc(), bytes(), close() }.
import { Automerge, BridgePeer, repoClient, repoFind, socketBytes } from "./common.mjs";

export async function bridgeClient(url, name) {
  const peer = await new BridgePeer(url, name).connect();
  return {
    peer,
    async join(docId, onChange) {
      await peer.open(docId, onChange);
      return {
        change: (fn) => peer.change(docId, fn),
        doc: () => peer.docs.get(docId).doc,
        flush: () => peer.flush(docId),
      };
    },
    bytes: () => socketBytes(peer.ws),
    close: () => peer.close(),
  };
}

export async function repoPeer(url, name) {
  const { repo, adapter, close } = await repoClient(url, name);
  return {
    repo,
    /** Create a document (it reaches the server with the first sync). */
    create(initial) {
      return repo.create(initial);
    },
    async join(docUrl, onChange) {
      const handle = await repoFind(repo, docUrl);
      handle.on("change", ({ doc }) => onChange(doc));
      return {
        handle,
        change: (fn) => handle.change(fn),
        doc: () => handle.doc(),
      };
    },
    bytes: () => socketBytes(adapter.socket),
    close,
  };
}

export const connect = (target, url, name) => (target === "bridge" ? bridgeClient(url, name) : repoPeer(url, name));

/** Append one character to the text at `key` (creating nothing). */
export function typeChar(d, key, ch = "x") {
  Automerge.splice(d, [key], d[key].length, 0, ch);
}
