/*
 * chat.js: the "chat" mode. Two people join the same room; each side's typing streams to the
 * other keystroke by keystroke, over two long requests that stay open for the whole chat:
 *
 *   ROOM/hello  who comes first: both POST a small body there; the server takes the first
 *               (it waits for a receiver) and refuses the second ("Another sender..."), which then
 *               GETs it. So the first is side "a", the second side "b", with no other coordination.
 *   ROOM/a      side a's typing, one streamed POST (fetch() with a ReadableStream body);
 *   ROOM/b      side b's typing; each side GETs the other's path and shows it as it comes.
 *
 * The streams are plain UTF-8 text: characters as typed, "\b" (backspace) to take one back, "\n"
 * to end a line. So a terminal can join too: `curl -sS URL/ROOM/hello` (as side b), then
 * `curl -sSN URL/ROOM/a` to read and `curl -sSNT - URL/ROOM/b` to type.
 *
 * Browsers stream a request body only over HTTP/2 (HTTPS); elsewhere the page says so.
 */
(() => {
  "use strict";

  const BACKSPACE = "\b";
  // The first sender waits for the second person at most this long before the page gives up.
  const HELLO_TIMEOUT_MS = 30 * 60 * 1000;

  function start() {
    const $ = Piping.byId;
    const ui = {
      room: $("chat-room"), join: $("chat-join"), leave: $("chat-leave"), status: $("chat-status"),
      log: $("chat-log"), live: $("chat-peer-live"), input: $("chat-input"),
    };
    const preset = new URLSearchParams(location.hash.split("?")[1] || "").get("room");
    ui.room.value = preset || Piping.randomPath();
    let session = null;

    const status = (text, kind) => Piping.setStatus(ui.status, text, kind);

    function addLine(text, who) {
      const line = document.createElement("p");
      line.className = who;
      line.textContent = text;
      ui.log.append(line);
      ui.log.scrollTop = ui.log.scrollHeight;
    }

    /** Be side "a" or "b" of the room (see the top of this file). */
    async function handshake(room, signal) {
      const helloUrl = Piping.pathUrl(`${room}/hello`).href;
      const response = await fetch(helloUrl, {
        method: "POST", body: "piping-chat\n", headers: { "Content-Type": "text/plain" }, signal,
      });
      if (response.ok) {
        // First here: the server answers at once and tells when the other side took the hello.
        status(`Waiting for someone to join room "${room}"...`, "");
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let text = "";
        const deadline = Date.now() + HELLO_TIMEOUT_MS;
        while (Date.now() < deadline) {
          const { value, done } = await reader.read();
          if (done) break;
          text += value;
          if (/\[INFO\] All receiver\(s\) was\/were received successfully\./.test(text)) return { me: "a", peer: "b" };
        }
        throw new Error("the other side did not arrive");
      }
      const refusal = await response.text();
      if (!/Another sender has been connected/.test(refusal)) throw new Error(refusal.trim() || `HTTP ${response.status}`);
      // Someone is already waiting: take their hello.
      const hello = await fetch(helloUrl, { signal, cache: "no-store" });
      if (!hello.ok) throw new Error(`the room is busy (${(await hello.text()).trim()})`);
      await hello.text();
      return { me: "b", peer: "a" };
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
      session = { controller, upload: null, typed: "" };
      ui.join.disabled = true;
      ui.room.disabled = true;
      ui.leave.hidden = false;
      document.body.dataset.chatState = "joining";
      status("Joining...", "");
      try {
        const roles = await handshake(room, controller.signal);
        if (session === null || session.controller !== controller) return;
        // No abort signal: leaving closes this body, so the other side sees a clean end, not a cut.
        const upload = Piping.streamingPost(Piping.pathUrl(`${room}/${roles.me}`).href, {
          contentType: "text/plain; charset=utf-8",
        });
        session.upload = upload;
        upload.done.then(
          () => {},
          (error) => {
            if (!controller.signal.aborted) end(Piping.explainStreamingFailure(error), "error");
          },
        );
        const response = await fetch(Piping.pathUrl(`${room}/${roles.peer}`).href, {
          signal: controller.signal, cache: "no-store",
        });
        if (!response.ok) throw new Error((await response.text()).trim() || `HTTP ${response.status}`);
        status(`Connected in room "${room}" (you are side ${roles.me}).`, "ok");
        document.body.dataset.chatState = "connected";
        ui.input.disabled = false;
        ui.input.focus();
        addLine("connected", "info");
        await readPeer(response.body);
        end("The other side left the chat.", "");
      } catch (error) {
        if (!controller.signal.aborted) end(`Chat failed: ${error.message || error}`, "error");
      }
    }

    /** Show the peer's stream: the current line live, finished lines in the log. */
    async function readPeer(body) {
      const reader = body.pipeThrough(new TextDecoderStream()).getReader();
      let line = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const ch of value) {
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
      }
      if (line) addLine(line, "peer");
      ui.live.textContent = "";
    }

    /** Send what changed in the input since the last keystroke: backspaces, then the new text. */
    function sendTyping() {
      if (session === null || session.upload === null) return;
      const before = Array.from(session.typed);
      const after = Array.from(ui.input.value);
      let same = 0;
      while (same < before.length && same < after.length && before[same] === after[same]) same += 1;
      const out = BACKSPACE.repeat(before.length - same) + after.slice(same).join("");
      if (out) session.upload.write(out);
      session.typed = ui.input.value;
    }

    function endLine() {
      if (session === null || session.upload === null) return;
      sendTyping();
      session.upload.write("\n");
      addLine(ui.input.value, "me");
      ui.input.value = "";
      session.typed = "";
    }

    function end(text, kind) {
      if (session === null) return;
      const { controller, upload } = session;
      session = null;
      if (upload !== null) upload.close();
      controller.abort();
      ui.input.disabled = true;
      ui.join.disabled = false;
      ui.room.disabled = false;
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

  Piping.registerMode({ name: "chat", start });
})();
