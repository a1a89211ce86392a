/*
 * core.js: what every mode of the top page shares. It defines the page's one global, `Piping`:
 * the server's values, DOM and formatting helpers, paths and URLs, the bundled libraries, and the
 * mode registry. A mode (send, receive, chat, share, vnc) is a file that calls
 * Piping.registerMode({ name, start }) and keeps everything else to itself; the fragment of the
 * URL (#send, #receive, ...) picks the mode shown, and its start() runs the first time it is.
 */
const Piping = (() => {
  "use strict";

  // Values from the server come in data attributes (HTML-escaped there), never as script text,
  // so a strange Host header cannot turn into code.
  const root = document.getElementById("app");
  const config = Object.freeze({
    baseUrl: (root && root.dataset.baseUrl) || location.origin,
    version: (root && root.dataset.version) || "",
    // The server's HTTPS port when it has one, so that a page opened over plain HTTP can link there.
    httpsPort: Number((root && root.dataset.httpsPort) || 0),
  });

  /** The element with this id; a missing one is a bug in the page, so say which. */
  function byId(id) {
    const element = document.getElementById(id);
    if (element === null) throw new Error(`#${id} is missing from the page`);
    return element;
  }

  // No look-alikes (0/o, 1/l/i): a path is often read aloud or typed on another machine.
  const PATH_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789";
  const RANDOM_PATH_LENGTH = 6;

  /** A short random path to suggest; crypto, because a path is the only secret of a transfer. */
  function randomPath() {
    const bytes = crypto.getRandomValues(new Uint8Array(RANDOM_PATH_LENGTH));
    return Array.from(bytes, (b) => PATH_ALPHABET[b % PATH_ALPHABET.length]).join("");
  }

  /** What the user typed, as a path below this page: leading slashes would leave it. */
  function normalizePath(raw) {
    return raw.trim().replace(/^[/\\]+/, "");
  }

  // "?n=3" at the end of a typed path asks for several receivers: the one query a path may carry.
  const RECEIVERS_QUERY = /\?n=\d+$/;

  /**
   * A typed path as it goes into a URL. A "#" or a "?" would end the path there (the rest would be
   * cut off silently), so both are percent-encoded, except the "?n=N" that asks for N receivers.
   */
  function encodePath(raw) {
    const path = normalizePath(raw);
    const query = RECEIVERS_QUERY.exec(path);
    const bare = query ? path.slice(0, query.index) : path;
    const encoded = bare.replace(/%(?![0-9A-Fa-f]{2})/g, "%25").replace(/#/g, "%23").replace(/\?/g, "%3F");
    return encoded + (query ? query[0] : "");
  }

  /**
   * The URL of a path, resolved against the page itself so that it still works behind a reverse
   * proxy that adds a prefix. A "?n=3" typed into the path is kept: it is how several receivers
   * are asked for.
   */
  function pathUrl(path) {
    return new URL("./" + encodePath(path), document.baseURI);
  }

  /** Quote for a POSIX shell when needed: "?" and "&" of "?n=3" mean something to a shell. */
  function shellQuote(text) {
    return /^[\w@%+=:,./~-]+$/.test(text) ? text : "'" + text.replace(/'/g, "'\\''") + "'";
  }

  /** The command a receiver runs to get `path`. */
  function curlCommand(path) {
    // The server's base URL knows the scheme a proxy terminated (X-Forwarded-Proto).
    const url = pathUrl(path);
    return "curl " + shellQuote(config.baseUrl + url.pathname + url.search);
  }

  const UNITS = ["B", "kB", "MB", "GB", "TB"];

  /** 1536 -> "1.5 kB" (powers of 1000, as file managers show sizes). */
  function formatBytes(bytes) {
    let value = bytes;
    let unit = 0;
    while (value >= 1000 && unit < UNITS.length - 1) {
      value /= 1000;
      unit += 1;
    }
    return `${unit === 0 ? value : value.toFixed(value < 10 ? 2 : 1)} ${UNITS[unit]}`;
  }

  /** Show `text` in a status element; `kind` is "", "ok" or "error". */
  function setStatus(element, text, kind) {
    element.textContent = text;
    element.className = "status" + (kind ? " " + kind : "");
  }

  /** The file name a Content-Disposition header gives (RFC 6266: filename* wins), or "". */
  function dispositionFilename(header) {
    if (!header) return "";
    const extended = /filename\*\s*=\s*([^']*)'[^']*'([^;]+)/i.exec(header);
    if (extended) {
      try {
        return decodeURIComponent(extended[2].trim());
      } catch {
        // a malformed escape: fall through to the plain parameter
      }
    }
    const plain = /filename\s*=\s*("((?:[^"\\]|\\.)*)"|[^;]+)/i.exec(header);
    if (!plain) return "";
    return plain[2] !== undefined ? plain[2].replace(/\\(.)/g, "$1") : plain[1].trim();
  }

  /** A name safe to offer as a download: no directories, no control characters. */
  function safeFilename(name, fallback) {
    const base = String(name).split(/[/\\]/).pop().replace(/[\u0000-\u001f\u007f]/g, "").trim();
    return base && base !== "." && base !== ".." ? base : fallback;
  }

  // ---- streaming uploads ----

  /**
   * Whether this browser can stream a request body (fetch with a ReadableStream, duplex "half").
   * Even then, browsers do it only over HTTP/2 or HTTP/3, so never over plain HTTP (HTTP/1.1).
   */
  function browserStreamsUploads() {
    let duplexAsked = false;
    try {
      const hasContentType = new Request(location.href, {
        body: new ReadableStream(),
        method: "POST",
        get duplex() {
          duplexAsked = true;
          return "half";
        },
      }).headers.has("Content-Type");
      return duplexAsked && !hasContentType;
    } catch {
      return false;
    }
  }

  /** Why uploads cannot stream here, in words for the user, or "" when they can (as far as we know). */
  function uploadStreamingProblem() {
    if (!browserStreamsUploads()) {
      return "This browser cannot stream uploads (fetch() with a ReadableStream body): use a recent " +
        "Chromium-based browser (Chrome, Edge) for this mode.";
    }
    if (location.protocol !== "https:") {
      return "This connection cannot stream uploads: browsers stream a request body only over HTTP/2, and " +
        "this page came over plain HTTP (HTTP/1.1). Open it with an HTTPS address of a server " +
        "started with --enable-https.";
    }
    return "";
  }

  /** What a failed streaming fetch most likely means, for the user. */
  function explainStreamingFailure(error) {
    const problem = uploadStreamingProblem();
    if (problem) return problem;
    return `The streaming upload failed (${error && error.message ? error.message : error}). This connection ` +
      "cannot stream uploads if it is not HTTP/2 (a proxy in between may speak HTTP/1.1).";
  }

  /**
   * A streaming POST: returns { write(bytes|string), close(), abort(), done } where `done` settles
   * when the server has taken the whole body (or the request failed).
   */
  function streamingPost(url, { contentType = "application/octet-stream", headers = {}, signal } = {}) {
    let controller;
    const encoder = new TextEncoder();
    const body = new ReadableStream({
      start(c) {
        controller = c;
      },
    });
    const done = fetch(url, {
      method: "POST",
      body,
      duplex: "half",
      headers: { "Content-Type": contentType, ...headers },
      signal,
    });
    let closed = false;
    return {
      write(chunk) {
        if (closed) return;
        // Copy: callers (noVNC) reuse their buffers once this returns.
        controller.enqueue(typeof chunk === "string" ? encoder.encode(chunk) : new Uint8Array(chunk));
      },
      close() {
        if (closed) return;
        closed = true;
        controller.close();
      },
      abort(reason) {
        if (closed) return;
        closed = true;
        controller.error(reason || new Error("aborted"));
      },
      done,
    };
  }

  // ---- bundled libraries (noVNC, OpenPGP.js) ----

  const libs = new Set(((root && root.dataset.libs) || "").split(" ").filter(Boolean));
  const loaded = new Map();

  /**
   * Import a bundled library. "/" does not carry them (it stays small); "/?lib=NAME" is the same
   * page with that library inlined as inert text, which is fetched, parsed and imported from a
   * blob: URL. So every byte still comes from this server and from "/", and nothing else is asked.
   */
  function loadLibrary(name) {
    if (!loaded.has(name)) {
      loaded.set(name, importLibrary(name).catch((error) => {
        loaded.delete(name);
        throw error;
      }));
    }
    return loaded.get(name);
  }

  async function importLibrary(name) {
    if (!libs.has(name)) {
      throw new Error(`this server was installed without the ${name} library (its frontend build did not run)`);
    }
    let element = document.querySelector(`script[data-vendor="${name}"]`);
    if (element === null) {
      const url = new URL("./", document.baseURI);
      url.search = "?lib=" + encodeURIComponent(name);
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) throw new Error(`loading ${name}: HTTP ${response.status}`);
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      element = page.querySelector(`script[data-vendor="${name}"]`);
      if (element === null) throw new Error(`the server did not include the ${name} library`);
    }
    const blobUrl = URL.createObjectURL(new Blob([element.textContent], { type: "text/javascript" }));
    try {
      return await import(blobUrl);
    } finally {
      URL.revokeObjectURL(blobUrl);
    }
  }

  function hasLibrary(name) {
    return libs.has(name);
  }

  // ---- modes ----

  const modes = new Map();
  const started = new Set();
  const DEFAULT_MODE = "send";

  /** Add a mode; `mode.start()` runs the first time the mode is shown, `mode.show()` every time. */
  function registerMode(mode) {
    if (typeof mode.start !== "function") throw new Error(`mode ${mode.name} has no start()`);
    if (modes.has(mode.name)) throw new Error(`mode ${mode.name} is registered twice`);
    modes.set(mode.name, mode);
  }

  function currentModeName() {
    const name = decodeURIComponent(location.hash.replace(/^#/, "")).split(/[/?]/)[0];
    return modes.has(name) ? name : DEFAULT_MODE;
  }

  /** The parameters of the fragment: "#receive?path=abc" gives path=abc. */
  function hashParams() {
    const hash = location.hash;
    const at = hash.indexOf("?");
    return new URLSearchParams(at < 0 ? "" : hash.slice(at + 1));
  }

  function showMode() {
    const name = currentModeName();
    // Only the mode sections carry data-mode: the body's own marker is data-current-mode, or the
    // next switch would hide the whole page.
    for (const element of document.querySelectorAll("main [data-mode]")) element.hidden = element.dataset.mode !== name;
    for (const link of document.querySelectorAll("[data-mode-link]")) {
      if (link.dataset.modeLink === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    const mode = modes.get(name);
    if (root) root.classList.toggle("wide-mode", Boolean(mode && mode.wide));
    if (!mode) return;
    if (!started.has(name)) {
      started.add(name);
      mode.start();
    }
    // Every time, not only the first: a "#chat?room=x" link opened in this page fills the form.
    if (typeof mode.show === "function") mode.show(hashParams());
    document.body.dataset.currentMode = name;
  }

  // ---- plain HTTP ----

  /** The same page over HTTPS, when the server said it has an HTTPS port, or "". */
  function httpsUrl() {
    if (location.protocol === "https:" || !config.httpsPort) return "";
    const url = new URL(location.href);
    url.protocol = "https:";
    url.port = String(config.httpsPort);
    return url.href;
  }

  /**
   * Over plain HTTP, the modes that stream uploads say up front that they need HTTPS, with a link
   * to the server's HTTPS address when it has one: each such section has a [data-needs-https].
   */
  function showHttpsNotices() {
    const problem = uploadStreamingProblem();
    if (!problem) return;
    const target = httpsUrl();
    for (const element of document.querySelectorAll("[data-needs-https]")) {
      // The attribute's value, if any, says what still works here (watching a share does).
      element.textContent = problem.replace(/ Open it with .*$/, "") + " " +
        (element.dataset.needsHttps ? element.dataset.needsHttps + " " : "");
      if (target) {
        const link = document.createElement("a");
        link.href = target;
        link.textContent = "Open this page over HTTPS";
        link.dataset.httpsLink = "";
        link.addEventListener("click", () => { link.href = httpsUrl(); }); // the fragment may have changed
        element.append(link, ".");
      } else if (location.protocol !== "https:") {
        element.append("This server has no HTTPS address (start it with --enable-https).");
      }
      element.hidden = false;
    }
  }

  /** Copy an element's text; the clipboard API needs a secure context, hence the fallback. */
  function copyText(source, button) {
    const done = () => {
      // Remember the label once, so that two quick clicks do not make "Copied!" stick.
      if (!button.dataset.label) button.dataset.label = button.textContent;
      button.textContent = "Copied!";
      clearTimeout(Number(button.dataset.timer));
      button.dataset.timer = String(setTimeout(() => { button.textContent = button.dataset.label; }, COPIED_FEEDBACK_MS));
    };
    const text = source.textContent;
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, () => selectText(source));
      return;
    }
    selectText(source);
    if (document.execCommand("copy")) done();
  }

  function selectText(element) {
    const range = document.createRange();
    range.selectNodeContents(element);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  // Long enough to be seen, short enough that the button is soon usable again.
  const COPIED_FEEDBACK_MS = 1500;

  // Played media older than this is dropped from a live player's buffer, so memory stays bounded.
  const LIVE_KEEP_BEHIND_S = 20;

  /**
   * A live player on Media Source Extensions, shared by share's viewer and call: once `source` is
   * open, `append(bytes)` adds a piece of the WebM stream, waits until it is taken, keeps the video
   * near the live edge (a jump to `leadS` before the newest frame when more than `maxLagS` behind,
   * as after joining late) and drops what was played long ago.
   */
  async function livePlayer(video, source, type, { maxLagS, leadS }) {
    await new Promise((resolve) => source.addEventListener("sourceopen", resolve, { once: true }));
    const buffer = source.addSourceBuffer(type);
    buffer.mode = "sequence";
    const updated = () => new Promise((resolve, reject) => {
      buffer.addEventListener("updateend", resolve, { once: true });
      buffer.addEventListener("error", () => reject(new Error("the video data could not be decoded")), { once: true });
    });
    async function keepLive() {
      if (buffer.updating || buffer.buffered.length === 0) return;
      const first = buffer.buffered.start(0);
      const end = buffer.buffered.end(buffer.buffered.length - 1);
      if (end - video.currentTime > maxLagS || video.currentTime < first) video.currentTime = Math.max(first, end - leadS);
      if (video.currentTime - first > 2 * LIVE_KEEP_BEHIND_S) {
        const removed = new Promise((resolve) => buffer.addEventListener("updateend", resolve, { once: true }));
        buffer.remove(first, video.currentTime - LIVE_KEEP_BEHIND_S);
        await removed;
      }
    }
    return {
      async append(bytes) {
        const ready = updated();
        buffer.appendBuffer(bytes);
        await ready;
        await keepLive();
        if (video.paused) video.play().catch(() => {});
      },
    };
  }

  // ---- what every form does ----

  // The button each mode shows only while something runs (a transfer, a chat, a share, a call, a
  // session): while one is shown, leaving or reloading the page would cut it, so the browser asks first.
  const RUNNING_MARKERS = ["cancel", "recv-cancel", "chat-leave", "share-stop", "call-hangup", "ssh-disconnect",
    "vnc-disconnect"];

  function somethingRuns() {
    return RUNNING_MARKERS.some((id) => {
      const element = document.getElementById(id);
      return element !== null && !element.hidden;
    });
  }

  function askBeforeLeaving(event) {
    if (!somethingRuns()) return;
    event.preventDefault();
    event.returnValue = ""; // older Chromium asks only when this is set
  }

  /** Enter in an input with data-enter="ID" presses that button, as a form would. */
  function submitOnEnter(event) {
    const input = event.target;
    if (event.key !== "Enter" || event.isComposing || !(input instanceof HTMLInputElement)) return;
    const button = input.dataset.enter ? document.getElementById(input.dataset.enter) : null;
    if (button === null || button.disabled || button.hidden) return;
    event.preventDefault();
    button.click();
  }

  function start() {
    window.addEventListener("beforeunload", askBeforeLeaving);
    document.addEventListener("keydown", submitOnEnter);
    window.addEventListener("hashchange", showMode);
    showHttpsNotices();
    showMode();
  }

  return Object.freeze({
    config, byId, randomPath, normalizePath, encodePath, pathUrl, shellQuote, curlCommand, formatBytes, hashParams,
    httpsUrl, copyText,
    setStatus, dispositionFilename, safeFilename,
    browserStreamsUploads, uploadStreamingProblem, explainStreamingFailure, streamingPost,
    livePlayer, loadLibrary, hasLibrary, registerMode, start,
  });
})();
