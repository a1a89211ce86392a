/*
 * chat.js: the "chat" mode. Two people join the same room; each side's typing streams to the
 * other keystroke by keystroke, over two long requests that stay open for the whole chat:
 *
 *   ROOM/hello  who comes first, as a live transfer (docs/protocol.md section 11), whose live
 *               receivers may be any number and are never refused: each side GETs ROOM/hello?live;
 *               one that no stream answers within a moment POSTs its own there (a random token,
 *               one line, written again every half second). Every side then reads the first whole
 *               line it gets: its own token makes it side "a", another's side "b". Side a ends
 *               its hello stream once side b is there, which ends every GET of it cleanly.
 *   ROOM/a      side a's typing, one streamed POST (fetch() with a ReadableStream body);
 *   ROOM/b      side b's typing; each side GETs the other's path and shows it as it comes. Side b
 *               starts its POST at once, side a once its GET of ROOM/b has answered: so a
 *               third person, who becomes an "a" of its own, is told the room is busy by that GET.
 *
 * So no request of a chat that works is refused (a 4xx, which the browser's console logs as an
 * error) or aborted: only two people who click within the same moment may both POST a hello, and
 * the second of those POSTs is refused (the page goes on as side b).
 *
 * The streams are plain UTF-8 text: characters as typed, "\b" (backspace) to take one back, "\n"
 * to end a line. So a terminal can join too, as side b: `curl -sSN URL/ROOM/a` to read and
 * `curl -sSNT - URL/ROOM/b` to type.
 *
 * With a passphrase (the same on both sides), each side's stream is a series of lines, each the
 * base64 of one whole OpenPGP message (as `gpg -c` writes) that holds what was typed since the
 * last one, in the same form as above. Each keystroke goes out at once as its own little message
 * (a message is sealed when it is written, so none waits for more input), and the server only
 * ever sees ciphertext. On the command line, each line decrypts with
 * `base64 -d | gpg -d`. The passphrase's key derivation (S2K, slow on purpose) runs once per chat:
 * one random session key per chat, whose passphrase-encrypted packet (the same bytes every time)
 * starts every message, and the reader derives each distinct packet's key once too. The first
 * line is an empty message, written at once: a side with another passphrase (or none) is told
 * before anyone types, and a side without a passphrase that receives it answers with one line of
 * plain text, so that the encrypting side is told too.
 *
 * Browsers stream a request body only over HTTP/2 (HTTPS); elsewhere the page says so.
 */
(() => {
  "use strict";

  const BACKSPACE = "\b";
  // How long a side waits for a hello stream before it offers its own: random in this range, so
  // that two people who click at once rarely both offer one.
  const HELLO_PAUSE_MS = [400, 1000];
  // How often side a writes its token again (a side that joins a live stream reads from then on).
  const HELLO_REPEAT_MS = 500;
  // A hello line longer than this is not a token: the path is used by something else.
  const MAX_HELLO_CHARS = 256;
  // A line of the encrypted form longer than this is not ours: the stream is refused.
  const MAX_LINE_CHARS = 1 << 20;
  const BASE64_LINE = /^[A-Za-z0-9+/]+={0,2}$/;

  // Set by start(): fills the room from a "#chat?room=..." link.
  let applyParams = () => {};

  function fromBase64(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  function toBase64(bytes) {
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(binary);
  }

  function concat(a, b) {
    const joined = new Uint8Array(a.length + b.length);
    joined.set(a);
    joined.set(b, a.length);
    return joined;
  }

  function sameBytes(a, b) {
    return a.length === b.length && a.every((byte, i) => byte === b[i]);
  }

  /** What a side without a passphrase answers to an encrypted first line (see the top of this file). */
  const NOT_ENCRYPTING = "(this side has no passphrase: it cannot read an encrypted chat)\n";

  /** The OpenPGP settings of pgp.js: SEIPD v1 + MDC, AES-256, uncompressed (what gpg reads). */
  function pgpConfig(openpgp) {
    return {
      aeadProtect: false,
      preferredSymmetricAlgorithm: openpgp.enums.symmetric.aes256,
      preferredCompressionAlgorithm: openpgp.enums.compression.uncompressed,
    };
  }

  /** The length of the passphrase-encrypted session key packet that starts `bytes` (as OpenPGP.js writes it), or 0. */
  function keyPacketLength(bytes) {
    return bytes.length >= 2 && bytes[0] === 0xc3 && bytes[1] < 192 ? 2 + bytes[1] : 0;
  }

  /**
   * Sealing for one chat: `{ first, seal(bytes) }`, where `first` is an empty message (the first
   * line) and seal() makes a whole message without deriving a key again.
   */
  async function chatSealer(passphrase) {
    const openpgp = await Piping.loadLibrary("openpgp");
    const config = pgpConfig(openpgp);
    const sessionKey = { data: crypto.getRandomValues(new Uint8Array(32)), algorithm: "aes256" };
    const empty = await openpgp.createMessage({ binary: new Uint8Array(0), format: "binary" });
    const first = await openpgp.encrypt({ message: empty, passwords: [passphrase], sessionKey, format: "binary", config });
    const keyPacket = first.slice(0, keyPacketLength(first));
    if (keyPacket.length === 0) throw new Error("unexpected OpenPGP output");
    return {
      first,
      async seal(bytes) {
        const message = await openpgp.createMessage({ binary: bytes, format: "binary" });
        // A session key and no passwords: only the data packet, which the same key packet opens.
        return concat(keyPacket, await openpgp.encrypt({ message, sessionKey, format: "binary", config }));
      },
    };
  }

  /** Opening for one chat: open(bytes) decrypts a whole message; a key packet seen before is not derived again. */
  function chatOpener(passphrase) {
    let known = null; // { packet, sessionKey }
    let opened = 0;
    return async (bytes) => {
      if (!PipingPgp.looksEncrypted(bytes)) {
        throw new PipingPgp.PassphraseError("not-encrypted", "This data is not encrypted (it is not OpenPGP).");
      }
      const openpgp = await Piping.loadLibrary("openpgp");
      try {
        const message = await openpgp.readMessage({ binaryMessage: bytes });
        const length = keyPacketLength(bytes);
        if (known === null || length === 0 || !sameBytes(known.packet, bytes.subarray(0, length))) {
          const [sessionKey] = await message.decryptSessionKeys(undefined, [passphrase]);
          known = { packet: bytes.slice(0, length), sessionKey };
        }
        const { data } = await openpgp.decrypt({ message, sessionKeys: known.sessionKey, format: "binary" });
        opened += 1;
        return data;
      } catch (error) {
        // A wrong passphrase fails on the first message; later, a message was damaged.
        if (opened === 0) throw new PipingPgp.PassphraseError("wrong-passphrase", "The passphrase is wrong.");
        throw new PipingPgp.PassphraseError("damaged", `A message was damaged (${error.message || error}).`);
      }
    };
  }

  /** An error whose message is already the whole sentence for the user. */
  function chatError(message) {
    const error = new Error(message);
    error.chat = true;
    return error;
  }

  /** What the server's refusal of a room path means, in words for the user. */
  function explainRefusal(text, room) {
    if (/established already|Another sender has been connected/.test(text)) {
      return `Room "${room}" is busy: two people are already chatting in it. Pick another room name.`;
    }
    return text.trim();
  }

  function start() {
    const $ = Piping.byId;
    const ui = {
      room: $("chat-room"), join: $("chat-join"), leave: $("chat-leave"), status: $("chat-status"),
      log: $("chat-log"), live: $("chat-peer-live"), input: $("chat-input"), pass: $("chat-pass"),
    };
    ui.room.value = Piping.randomPath();
    applyParams = (params) => {
      if (params.get("room") && session === null) ui.room.value = params.get("room");
    };
    let session = null;

    const status = (text, kind) => Piping.setStatus(ui.status, text, kind);

    function addLine(text, who) {
      const line = document.createElement("p");
      line.className = who;
      line.textContent = text;
      ui.log.append(line);
      ui.log.scrollTop = ui.log.scrollHeight;
    }

    /**
     * Be side "a" or "b" of the room (see the top of this file): { me, peer, hello } where `hello`
     * is side a's own hello stream (its close() ends it), or null.
     */
    async function handshake(room, signal) {
      const helloUrl = Piping.pathUrl(`${room}/hello`);
      helloUrl.search = "live";
      const token = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0"))
        .join("");
      const answer = fetch(helloUrl.href, { signal, cache: "no-store" });
      const [low, high] = HELLO_PAUSE_MS;
      const pause = new Promise((resolve) => setTimeout(resolve, low + Math.random() * (high - low)));
      let mine = null;
      let repeat = 0;
      const stopOffering = () => {
        clearInterval(repeat);
        if (mine !== null) mine.close();
      };
      if (await Promise.race([answer.then(() => false, () => false), pause.then(() => true)])) {
        mine = Piping.streamingPost(helloUrl.href, { contentType: "text/plain; charset=utf-8" });
        // Its answer comes once the stream ends (a 400 if another side offered one first).
        mine.done.then((response) => response.text(), () => {}).catch(() => {});
        mine.write(`${token}\n`);
        repeat = setInterval(() => mine.write(`${token}\n`), HELLO_REPEAT_MS);
        signal.addEventListener("abort", stopOffering, { once: true });
      }
      try {
        const response = await answer;
        if (!response.ok) throw chatError(explainRefusal(await response.text(), room) || `HTTP ${response.status}`);
        // Joined a stream under way: its first bytes may be the end of a line.
        let skip = Number(response.headers.get("Piping-Live-Offset") || 0) > 0;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let text = "";
        let first = null;
        while (first === null) {
          const { value, done } = await reader.read();
          if (done) throw new Error("the hello stream ended before a whole line");
          text += value;
          let newline;
          while (first === null && (newline = text.indexOf("\n")) >= 0) {
            if (!skip) first = text.slice(0, newline);
            skip = false;
            text = text.slice(newline + 1);
          }
          if (text.length > MAX_HELLO_CHARS) throw chatError(`Room "${room}" is used by something else than a chat.`);
        }
        // Read to its end (side a ends it soon), so that the request ends cleanly, not cancelled.
        (async () => {
          for (;;) if ((await reader.read()).done) return;
        })().catch(() => {});
        if (first === token) return { me: "a", peer: "b", hello: { close: stopOffering } };
        stopOffering(); // another side was first (we both offered one: ours was refused)
        return { me: "b", peer: "a", hello: null };
      } catch (error) {
        stopOffering();
        throw error;
      }
    }

    async function join() {
      if (session !== null) return;
      const room = Piping.normalizePath(ui.room.value).replace(/\/+$/, "");
      if (room === "") {
        status("Enter a room name first.", "error");
        return;
      }
      const problem = Piping.uploadStreamingProblem();
      if (problem) {
        status(problem, "error");
        document.body.dataset.chatState = "unsupported";
        return;
      }
      const controller = new AbortController();
      const passphrase = ui.pass.value;
      session = { controller, upload: null, hello: null, typed: "", passphrase, outbox: "", sealing: null, sealer: null };
      ui.join.disabled = true;
      ui.room.disabled = true;
      ui.pass.disabled = true;
      ui.leave.hidden = false;
      document.body.dataset.chatState = "joining";
      status("Joining...", "");
      try {
        // Ready before anyone waits on us (the key derived once), so the first keystroke goes out at once.
        const sealer = passphrase ? await chatSealer(passphrase) : null;
        if (session === null || session.controller !== controller) return;
        session.sealer = sealer;
        const roles = await handshake(room, controller.signal);
        if (session === null || session.controller !== controller) {
          if (roles.hello !== null) roles.hello.close();
          return;
        }
        session.hello = roles.hello;
        const peerUrl = Piping.pathUrl(`${room}/${roles.peer}`).href;
        const startUpload = () => {
          // No abort signal: leaving closes this body, so the other side sees a clean end, not a cut.
          const upload = Piping.streamingPost(Piping.pathUrl(`${room}/${roles.me}`).href, {
            contentType: "text/plain; charset=utf-8",
          });
          session.upload = upload;
          // The empty first message: the other side checks the passphrase before anyone types.
          if (sealer !== null) upload.write(toBase64(sealer.first) + "\n");
          upload.done.then(
            (response) => response.text(),
            (error) => {
              if (!controller.signal.aborted) end(Piping.explainStreamingFailure(error), "error");
            },
          ).catch(() => {});
          return upload;
        };
        let upload = null;
        let response;
        if (roles.me === "a") {
          status(`Waiting for someone to join room "${room}"...`, "");
          // Side b streams first; a refusal here means two people already chat in this room.
          response = await fetch(peerUrl, { signal: controller.signal, cache: "no-store" });
          if (!response.ok) throw chatError(explainRefusal(await response.text(), room) || `HTTP ${response.status}`);
          upload = startUpload();
          roles.hello.close();
        } else {
          upload = startUpload();
          response = await fetch(peerUrl, { signal: controller.signal, cache: "no-store" });
          if (!response.ok) throw new Error((await response.text()).trim() || `HTTP ${response.status}`);
        }
        status(`Connected in room "${room}" (you are side ${roles.me})` +
          (passphrase ? ", end-to-end encrypted." : "."), "ok");
        document.body.dataset.chatState = "connected";
        ui.input.disabled = false;
        ui.input.focus();
        addLine("connected", "info");
        try {
          await (passphrase ? readEncryptedPeer(response.body, passphrase) : readPeer(response.body, upload));
        } catch (error) {
          if (controller.signal.aborted) return;
          if (error instanceof PipingPgp.PassphraseError || error.chat) throw error;
          // The peer's stream was cut, not ended: its tab closed or its network went.
          end("The other side went away (its connection was cut).", "error");
          return;
        }
        end("The other side left the chat.", "");
      } catch (error) {
        if (!controller.signal.aborted) end(error.chat ? error.message : `Chat failed: ${error.message || error}`, "error");
      }
    }

    /** Shows the peer's typing: the current line live, finished lines in the log. */
    function peerView() {
      let line = "";
      return {
        feed(text) {
          for (const ch of text) {
            if (ch === "\n") {
              addLine(line, "peer");
              line = "";
            } else if (ch === BACKSPACE || ch === "\x7f") {
              line = Array.from(line).slice(0, -1).join("");
            } else if (ch !== "\r") {
              line += ch;
            }
          }
          ui.live.textContent = line;
        },
        end() {
          if (line) addLine(line, "peer");
          ui.live.textContent = "";
        },
      };
    }

    /** A plain stream; one that turns out to be the encrypted form is refused, not shown. */
    async function readPeer(body, upload) {
      const reader = body.pipeThrough(new TextDecoderStream()).getReader();
      const view = peerView();
      let start = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        if (start !== null) {
          start += value;
          const newline = start.indexOf("\n");
          if (newline >= 0 || start.length > 64) {
            const first = (newline >= 0 ? start.slice(0, newline) : start).trim();
            if (BASE64_LINE.test(first) && first.length >= 64 && PipingPgp.looksEncrypted(fromBase64(first.slice(0, 64)))) {
              upload.write(NOT_ENCRYPTING); // so that the encrypting side is told too, at once
              throw chatError("The other side encrypts this chat: enter the same passphrase and join again.");
            }
            start = null;
          }
        }
        view.feed(value);
      }
      view.end();
    }

    /** The encrypted form: one base64 OpenPGP message per line, each decrypted as it comes. */
    async function readEncryptedPeer(body, passphrase) {
      const open = chatOpener(passphrase);
      const reader = body.pipeThrough(new TextDecoderStream()).getReader();
      const view = peerView();
      let pending = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        pending += value;
        let newline;
        while ((newline = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, newline).trim();
          pending = pending.slice(newline + 1);
          if (line === "") continue;
          if (!BASE64_LINE.test(line)) {
            throw chatError("The other side does not encrypt this chat (no passphrase there), or uses another format.");
          }
          let text;
          try {
            text = new TextDecoder().decode(await new Response(await open(fromBase64(line))).arrayBuffer());
          } catch (error) {
            if (error instanceof PipingPgp.PassphraseError && error.kind !== "damaged") {
              throw chatError(error.kind === "wrong-passphrase"
                ? "The passphrase is wrong: the other side uses another one."
                : "The other side does not encrypt this chat (no passphrase there).");
            }
            throw error;
          }
          view.feed(text);
        }
        if (pending.length > MAX_LINE_CHARS) throw chatError("The other side sends something that is not this chat.");
        if (pending !== "" && !BASE64_LINE.test(pending.trim())) {
          throw chatError("The other side does not encrypt this chat (no passphrase there).");
        }
      }
      view.end();
    }

    /** Send typed text: as is, or sealed into one OpenPGP message per batch, in order. */
    function put(text) {
      const current = session;
      if (!current.passphrase) {
        current.upload.write(text);
        return;
      }
      current.outbox += text;
      if (current.sealing !== null) return; // the loop below picks it up: what came meanwhile goes as one message
      current.sealing = (async () => {
        try {
          // Also after Leave: what was typed before goes out, then the stream ends (see end()).
          while (current.outbox !== "") {
            const batch = current.outbox;
            current.outbox = "";
            const sealed = await current.sealer.seal(new TextEncoder().encode(batch));
            current.upload.write(toBase64(sealed) + "\n");
          }
        } catch (error) {
          end(`Encryption failed: ${error.message || error}`, "error");
        } finally {
          current.sealing = null;
        }
      })();
    }

    /** Send what changed in the input since the last keystroke: backspaces, then the new text. */
    function sendTyping() {
      if (session === null || session.upload === null) return;
      const before = Array.from(session.typed);
      const after = Array.from(ui.input.value);
      let same = 0;
      while (same < before.length && same < after.length && before[same] === after[same]) same += 1;
      const out = BACKSPACE.repeat(before.length - same) + after.slice(same).join("");
      if (out) put(out);
      session.typed = ui.input.value;
    }

    function endLine() {
      if (session === null || session.upload === null) return;
      sendTyping();
      put("\n");
      addLine(ui.input.value, "me");
      ui.input.value = "";
      session.typed = "";
    }

    function end(text, kind) {
      if (session === null) return;
      const { controller, upload, sealing, hello } = session;
      session = null;
      if (hello !== null) hello.close();
      // A message still being sealed goes out first, then the body ends cleanly.
      if (upload !== null) Promise.resolve(sealing).finally(() => upload.close());
      controller.abort();
      ui.input.disabled = true;
      ui.join.disabled = false;
      ui.room.disabled = false;
      ui.pass.disabled = false;
      ui.leave.hidden = true;
      ui.live.textContent = "";
      status(text, kind);
      document.body.dataset.chatState = "ended";
    }

    ui.join.addEventListener("click", join);
    ui.room.addEventListener("keydown", (event) => {
      if (event.key === "Enter") join();
    });
    ui.leave.addEventListener("click", () => end("You left the chat.", ""));
    ui.input.addEventListener("input", (event) => {
      if (!event.isComposing) sendTyping();
    });
    ui.input.addEventListener("compositionend", sendTyping);
    ui.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.isComposing) {
        event.preventDefault();
        endLine();
      }
    });
    window.addEventListener("pagehide", () => end("", ""));
  }

  Piping.registerMode({ name: "chat", start, show: (params) => applyParams(params) });
})();
