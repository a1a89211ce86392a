/*
 * vnc.js: the "vnc" mode. A VNC viewer (noVNC's RFB client) whose transport is two Piping
 * streams instead of a WebSocket, so that any VNC server becomes reachable from this page through
 * the `piping tunnel server` of the client (plain mode, docs/client.md):
 *
 *   on the machine to control:  piping tunnel server --port 5900 PATH1 PATH2
 *   this page:                  POSTs what the viewer sends to PATH1 (one streamed upload) and
 *                               GETs PATH2 for what the VNC server answers.
 *
 * The upload streams with fetch(), so this needs HTTP/2 (HTTPS); noVNC is loaded from the
 * server's bundled copy only when this mode connects.
 */
(() => {
  "use strict";

  // Without an answer on the tunnel within this long, say what to check instead of waiting on.
  // A "#vnc?wait=SECONDS" link changes it (tests use a short one).
  const DEFAULT_WAIT_S = 20;

  // Set by start(): fills the paths from a "#vnc?path1=...&path2=..." link.
  let applyParams = () => {};

  /**
   * A WebSocket look-alike (the properties noVNC's Websock.attach() checks) over two Piping paths.
   * noVNC sets the on* handlers after attaching; "open" is signalled once the download answered,
   * that is once the tunnel's far end connected to the VNC server.
   */
  function pipingChannel(upUrl, downUrl, onTrouble) {
    const controller = new AbortController();
    let upload = null;
    const channel = {
      binaryType: "arraybuffer",
      protocol: "",
      readyState: "connecting",
      onopen: null,
      onmessage: null,
      onclose: null,
      onerror: null,
      send(data) {
        if (upload !== null && channel.readyState === "open") upload.write(data);
      },
      close() {
        shut(1000, "closed by the viewer", true);
      },
    };

    function shut(code, reason, clean) {
      if (channel.readyState === "closed") return;
      channel.readyState = "closed";
      if (upload !== null) upload.close();
      controller.abort();
      // Like a WebSocket: the close event comes later, never from inside close().
      setTimeout(() => channel.onclose && channel.onclose({ code, reason, wasClean: clean }), 0);
    }

    async function run() {
      upload = Piping.streamingPost(upUrl, { contentType: "application/octet-stream" });
      upload.done.then(
        (response) => response.text(),
        (error) => {
          if (channel.readyState !== "closed") {
            onTrouble(Piping.explainStreamingFailure(error));
            shut(1006, "upload failed", false);
          }
        },
      );
      let received = false;
      try {
        const response = await fetch(downUrl, { signal: controller.signal, cache: "no-store" });
        if (!response.ok) throw new Error((await response.text()).trim() || `HTTP ${response.status}`);
        channel.readyState = "open";
        if (channel.onopen) channel.onopen();
        const reader = response.body.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          received = true;
          if (channel.onmessage) channel.onmessage({ data: value });
        }
        shut(1000, "the remote side closed the connection", true);
      } catch (error) {
        if (channel.readyState !== "closed") {
          // Cut before a byte: `piping tunnel server` cuts its stream when nothing listens behind it.
          onTrouble(received || controller.signal.aborted ? `The connection failed: ${error.message || error}`
            : "The tunnel was cut before the remote side said anything: is a VNC server listening on port 5900 " +
              "of the remote machine?");
          if (channel.onerror) channel.onerror(error);
          shut(1006, String(error.message || error), false);
        }
      }
    }

    // Start once noVNC has attached its handlers (it does so from a timer of its own).
    setTimeout(run, 0);
    return channel;
  }

  function start() {
    const $ = Piping.byId;
    const ui = {
      command: $("vnc-command"), path1: $("vnc-path1"), path2: $("vnc-path2"), password: $("vnc-password"),
      connect: $("vnc-connect"), disconnect: $("vnc-disconnect"), status: $("vnc-status"), screen: $("vnc-screen"),
    };
    const base = Piping.randomPath();
    ui.path1.value = `${base}/c-to-s`;
    ui.path2.value = `${base}/s-to-c`;
    let rfb = null;
    let waitS = DEFAULT_WAIT_S;
    applyParams = (params) => {
      if (rfb !== null) return;
      if (params.get("path1")) ui.path1.value = params.get("path1");
      if (params.get("path2")) ui.path2.value = params.get("path2");
      const wait = Number(params.get("wait"));
      if (wait > 0) waitS = wait;
      showCommand();
    };
    $("vnc-copy").addEventListener("click", () => Piping.copyText(ui.command, $("vnc-copy")));
    // Each connection is a new pair of requests on the same paths: the tunnel serves one at a time.
    let connections = 0;

    const status = (text, kind) => Piping.setStatus(ui.status, text, kind);

    function showCommand() {
      const server = Piping.config.baseUrl;
      const p1 = Piping.normalizePath(ui.path1.value) || "PATH1";
      const p2 = Piping.normalizePath(ui.path2.value) || "PATH2";
      ui.command.textContent = `piping tunnel server --port 5900 -s ${Piping.shellQuote(server)} ` +
        `${Piping.shellQuote(p1)} ${Piping.shellQuote(p2)}`;
    }
    ui.path1.addEventListener("input", showCommand);
    ui.path2.addEventListener("input", showCommand);
    showCommand();

    function setBusy(busy) {
      ui.connect.disabled = busy;
      ui.disconnect.hidden = !busy;
      for (const input of [ui.path1, ui.path2, ui.password]) input.disabled = busy;
    }

    async function connect() {
      if (rfb !== null) return;
      const p1 = Piping.normalizePath(ui.path1.value);
      const p2 = Piping.normalizePath(ui.path2.value);
      if (!p1 || !p2) {
        status("Enter both paths first.", "error");
        return;
      }
      const problem = Piping.uploadStreamingProblem();
      if (problem) {
        status(problem, "error");
        document.body.dataset.vncState = "unsupported";
        return;
      }
      setBusy(true);
      status("Loading the VNC viewer...", "");
      let RFB;
      try {
        ({ RFB } = await Piping.loadLibrary("novnc"));
      } catch (error) {
        setBusy(false);
        status(`The VNC viewer is not available: ${error.message || error}`, "error");
        return;
      }
      document.body.dataset.vncState = "connecting";
      let trouble = "";
      connections += 1;
      const again = connections > 1
        ? " The tunnel command carries one connection: after a disconnect, run it again on the remote machine."
        : "";
      const unanswered = setTimeout(() => {
        if (rfb === null || document.body.dataset.vncState !== "connecting") return;
        trouble = `No answer through the tunnel after ${waitS} s. Check that the command above runs on the ` +
          "remote machine (with these two paths and this server), and that a VNC server listens on its port 5900." +
          again;
        document.body.dataset.vncTimeout = "true";
        rfb.disconnect();
      }, waitS * 1000);
      status(`Waiting for the tunnel on the remote machine...${again}`, "");
      const channel = pipingChannel(Piping.pathUrl(p1).href, Piping.pathUrl(p2).href, (text) => {
        trouble = text;
      });
      ui.screen.textContent = "";
      rfb = new RFB(ui.screen, channel, {
        shared: true,
        credentials: ui.password.value ? { password: ui.password.value } : undefined,
      });
      rfb.scaleViewport = true;
      rfb.resizeSession = false;
      let reached = false;
      rfb.addEventListener("connect", () => {
        reached = true;
        clearTimeout(unanswered);
        status("Connected to the remote desktop.", "ok");
        ui.screen.scrollIntoView({ block: "nearest" });
        document.body.dataset.vncState = "connected";
      });
      rfb.addEventListener("disconnect", (event) => {
        clearTimeout(unanswered);
        rfb = null;
        setBusy(false);
        const clean = event.detail && event.detail.clean;
        const next = " To connect again, run the tunnel command on the remote machine again, then Connect.";
        if (!trouble && !reached && channel.readyState === "closed") {
          // The tunnel answered, then closed before any VNC greeting: nothing listens behind it.
          trouble = "The tunnel answered but closed at once: is a VNC server listening on port 5900 of the " +
            "remote machine?" + next;
        }
        status(trouble || (clean ? "Disconnected." + next : "The connection to the remote desktop was lost." + next),
          trouble || !clean ? "error" : "");
        document.body.dataset.vncState = "disconnected";
        // Plain tunnels carry one connection: the next one needs new paths on both sides.
      });
      rfb.addEventListener("credentialsrequired", () => {
        const password = ui.password.value || window.prompt("VNC password");
        if (password !== null) rfb.sendCredentials({ password });
      });
      rfb.addEventListener("securityfailure", (event) => {
        trouble = `The VNC server refused: ${(event.detail && event.detail.reason) || "authentication failed"}`;
      });
    }

    ui.connect.addEventListener("click", connect);
    ui.disconnect.addEventListener("click", () => rfb && rfb.disconnect());
  }

  Piping.registerMode({ name: "vnc", start, show: (params) => applyParams(params), wide: true });
})();
