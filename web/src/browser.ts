// Browser-only hooks, all feature-detected so the library also runs in Node.

interface PageHandlers {
  /** The page is going away (tab closed, navigation, bfcache). */
  pagehide(): void;
  /** The browser thinks the network is back. */
  online(): void;
  /** The browser thinks the network is gone. */
  offline(): void;
}

export interface PageHooks {
  /** Show the "leave page?" prompt while `unsaved` (only if warnOnUnsaved). */
  setUnsaved(unsaved: boolean): void;
  remove(): void;
}

interface EventHost {
  addEventListener(type: string, cb: (ev: Event) => void): void;
  removeEventListener(type: string, cb: (ev: Event) => void): void;
}

function windowLike(): EventHost | null {
  const g = globalThis as { addEventListener?: unknown; removeEventListener?: unknown; document?: unknown };
  if (typeof g.addEventListener !== "function" || typeof g.removeEventListener !== "function") return null;
  if (typeof g.document === "undefined") return null; // workers, Deno, Node with shims
  return g as unknown as EventHost;
}

export function installPageHooks(handlers: PageHandlers, warnOnUnsaved: boolean): PageHooks {
  const win = windowLike();
  if (!win) return { setUnsaved() {}, remove() {} };

  const onPageHide = (): void => handlers.pagehide();
  const onOnline = (): void => handlers.online();
  const onOffline = (): void => handlers.offline();
  const onBeforeUnload = (ev: Event): string => {
    ev.preventDefault();
    // Older browsers need returnValue set to show the prompt.
    (ev as unknown as { returnValue: string }).returnValue = "";
    return "";
  };
  win.addEventListener("pagehide", onPageHide);
  win.addEventListener("online", onOnline);
  win.addEventListener("offline", onOffline);

  // The beforeunload listener is only present while something is unsaved:
  // a permanent one would keep pages out of the back/forward cache.
  let warning = false;
  return {
    setUnsaved(unsaved: boolean): void {
      const want = warnOnUnsaved && unsaved;
      if (want === warning) return;
      warning = want;
      if (want) win.addEventListener("beforeunload", onBeforeUnload);
      else win.removeEventListener("beforeunload", onBeforeUnload);
    },
    remove(): void {
      win.removeEventListener("pagehide", onPageHide);
      win.removeEventListener("online", onOnline);
      win.removeEventListener("offline", onOffline);
      if (warning) win.removeEventListener("beforeunload", onBeforeUnload);
      warning = false;
    },
  };
}

/** navigator.sendBeacon where available; false otherwise or when the browser refuses. */
export function sendBeacon(url: string, data: Uint8Array): boolean {
  const nav = (globalThis as { navigator?: { sendBeacon?: (url: string, data?: BodyInit | null) => boolean } }).navigator;
  if (!nav || typeof nav.sendBeacon !== "function") return false;
  try {
    // A fresh ArrayBuffer-backed copy: a plain BufferSource, no Content-Type,
    // so it is never a CORS-preflighted request.
    return nav.sendBeacon(url, data.slice());
  } catch {
    return false;
  }
}
