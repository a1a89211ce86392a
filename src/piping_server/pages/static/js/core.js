/*
 * core.js: what every mode of the top page shares. It defines the page's one global, `Piping`:
 * the server's values, DOM and formatting helpers, paths and URLs, and the mode registry.
 * A mode (send.js today; receive, chat, screen share later) is a file that calls
 * Piping.registerMode({ name, start }) and keeps everything else to itself.
 */
const Piping = (() => {
  "use strict";

  // Values from the server come in data attributes (HTML-escaped there), never as script text,
  // so a strange Host header cannot turn into code.
  const root = document.getElementById("app");
  const config = Object.freeze({
    baseUrl: (root && root.dataset.baseUrl) || location.origin,
    version: (root && root.dataset.version) || "",
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

  /**
   * The URL of a path, resolved against the page itself so that it still works behind a reverse
   * proxy that adds a prefix. A "?n=3" typed into the path is kept: it is how several receivers
   * are asked for.
   */
  function pathUrl(path) {
    return new URL("./" + normalizePath(path), document.baseURI);
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

  const modes = [];

  /** Add a mode; `mode.start()` is called once the whole page is there. */
  function registerMode(mode) {
    if (typeof mode.start !== "function") throw new Error(`mode ${mode.name} has no start()`);
    modes.push(mode);
  }

  function start() {
    for (const mode of modes) mode.start();
  }

  return Object.freeze({
    config, byId, randomPath, normalizePath, pathUrl, shellQuote, curlCommand, formatBytes,
    registerMode, start,
  });
})();
