/*
 * ssh.js: the "ssh" mode. A terminal (xterm.js) and an SSH client that both run in this page, over
 * two Piping streams, so the server only ever carries SSH's ciphertext:
 *
 *   on the machine to log into:  piping tunnel server --port 22 PATH1 PATH2
 *   this page:                   POSTs what the client sends to PATH1 (one streamed upload) and
 *                                GETs PATH2 for what sshd answers.
 *
 * The library (bundled from npm as "ssh", loaded when this mode connects) does the protocol; this
 * file wires it to the two paths and the terminal. The password and the private key go nowhere
 * but into the handshake. Keep-alives (keepalive@openssh.com every 15 s) keep bytes flowing both
 * ways on a quiet session, so neither fetch is ended for idling.
 */
(() => {
  "use strict";

  // How often the page sends a keep-alive (keepalive@openssh.com, which sshd answers), so that a
  // quiet session still moves bytes both ways; "&keepalive=S" in the fragment changes it.
  const KEEPALIVE_S = 15;
  // How long to wait for sshd's first bytes before saying the tunnel is not there.
  const DEFAULT_WAIT_S = 30;
  // The disconnect reason "by application" (RFC 4253 11.1).
  const DISCONNECT_BY_APPLICATION = 11;
  const REJECTED = "You rejected the server's host key: neither password nor key was sent.";
  const KNOWN_HOSTS_KEY = "piping-ssh-known-host-keys";

  function knownHostKeys() {
    try {
      return new Set(JSON.parse(localStorage.getItem(KNOWN_HOSTS_KEY) || "[]"));
    } catch {
      return new Set();
    }
  }

  function rememberHostKey(fingerprint) {
    const known = knownHostKeys();
    known.add(fingerprint);
    try {
      localStorage.setItem(KNOWN_HOSTS_KEY, JSON.stringify([...known]));
    } catch {
      // storage may be off (private mode): the user is asked again next time
    }
  }

  /**
   * The LANG an OpenSSH client on this user's machine would send: the browser's language as a
   * UTF-8 locale, "en-US" -> "en_US.UTF-8". Without it a server with no default locale runs the
   * shell in "C", and typed non-ASCII text comes out garbled. A bare language ("de") takes the
   * region of a later entry of the same language ("de-DE"); if none, C.UTF-8 (a locale without a
   * region, "de.UTF-8", does not exist on most systems: the shell would fall back to "C").
   */
  function browserLang(languages = navigator.languages || [navigator.language]) {
    const tags = languages.filter(Boolean).map((tag) => {
      const parts = tag.split("-");
      const region = parts.slice(1).find((part) => /^([A-Za-z]{2}|\d{3})$/.test(part));
      return { language: parts[0].toLowerCase(), region: region && region.toUpperCase() };
    }).filter(({ language }) => /^[a-z]{2,3}$/.test(language));
    if (tags.length === 0) return "C.UTF-8";
    const { language } = tags[0];
    const match = tags.find((tag) => tag.language === language && tag.region);
    return match ? `${language}_${match.region}.UTF-8` : "C.UTF-8";
  }

  // Set by start(): fills the form from a "#ssh?path1=...&path2=...&user=..." link.
  let applyParams = () => {};

  function start() {
    const $ = Piping.byId;
    const ui = {
      command: $("ssh-command"), copy: $("ssh-copy"), path1: $("ssh-path1"), path2: $("ssh-path2"),
      user: $("ssh-user"), password: $("ssh-password"), key: $("ssh-key"), keyFile: $("ssh-key-file"),
      keyPass: $("ssh-key-pass"), connect: $("ssh-connect"), disconnect: $("ssh-disconnect"),
      status: $("ssh-status"), hostKey: $("ssh-host-key"), fingerprint: $("ssh-fingerprint"),
      accept: $("ssh-accept"), reject: $("ssh-reject"), terminal: $("ssh-terminal"),
    };
    const base = Piping.randomPath();
    ui.path1.value = `${base}/c-to-s`;
    ui.path2.value = `${base}/s-to-c`;
    let waitSeconds = DEFAULT_WAIT_S;
    let keepAliveSeconds = KEEPALIVE_S;
    let current = null; // { session, transport, term, ... } while connected or connecting
    // Runs on every showing (core.js passes the fragment's parameters), so a "#ssh?path1=...&user=..."
    // link opened in a page already open fills the form too; never while a session is up.
    applyParams = (params) => {
      if (current !== null) return;
      if (params.get("path1")) ui.path1.value = params.get("path1");
      if (params.get("path2")) ui.path2.value = params.get("path2");
      if (params.get("user")) ui.user.value = params.get("user");
      if (Number(params.get("wait")) > 0) waitSeconds = Number(params.get("wait"));
      if (Number(params.get("keepalive")) > 0) keepAliveSeconds = Number(params.get("keepalive"));
      showCommand();
    };

    const status = (text, kind) => Piping.setStatus(ui.status, text, kind);
    const setState = (state) => {
      document.body.dataset.sshState = state;
    };

    function showCommand() {
      const p1 = Piping.normalizePath(ui.path1.value) || "PATH1";
      const p2 = Piping.normalizePath(ui.path2.value) || "PATH2";
      ui.command.textContent = `piping tunnel server --port 22 -s ${Piping.shellQuote(Piping.config.baseUrl)} ` +
        `${Piping.shellQuote(p1)} ${Piping.shellQuote(p2)}`;
    }
    ui.path1.addEventListener("input", showCommand);
    ui.path2.addEventListener("input", showCommand);
    showCommand();
    ui.copy.addEventListener("click", () => {
      navigator.clipboard.writeText(ui.command.textContent).then(
        () => status("Command copied.", ""),
        () => status("Copying failed: select the command and copy it.", "error"),
      );
    });

    ui.keyFile.addEventListener("change", async () => {
      const file = ui.keyFile.files[0];
      if (file) ui.key.value = await file.text();
    });

    function setBusy(busy) {
      ui.connect.disabled = busy;
      ui.disconnect.hidden = !busy;
      for (const input of [ui.path1, ui.path2, ui.user, ui.password, ui.key, ui.keyFile, ui.keyPass]) {
        input.disabled = busy;
      }
    }

    /** Ask the user about a host key seen for the first time; resolves true to go on. */
    function confirmHostKey({ algorithm, fingerprint }) {
      if (knownHostKeys().has(fingerprint)) {
        ui.fingerprint.textContent = `${algorithm} ${fingerprint} (accepted before)`;
        return Promise.resolve(true);
      }
      ui.fingerprint.textContent = `${algorithm} ${fingerprint}`;
      ui.hostKey.hidden = false;
      status("First contact with this server: compare its host key with the one on the remote machine " +
        "(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) before you accept it.", "");
      setState("host-key");
      return new Promise((resolve) => {
        const answer = (ok) => {
          ui.hostKey.hidden = true;
          ui.accept.onclick = ui.reject.onclick = null;
          if (ok) rememberHostKey(fingerprint);
          resolve(ok);
        };
        ui.accept.onclick = () => answer(true);
        ui.reject.onclick = () => {
          if (current) current.hostKeyRejected = true;
          answer(false);
        };
        if (current) current.rejectHostKey = () => answer(false);
      });
    }

    /** The two Piping streams, as the library's byte stream. */
    function openTransport(lib, upUrl, downUrl) {
      const controller = new AbortController();
      const upload = Piping.streamingPost(upUrl, { signal: controller.signal });
      let firstBytes = false;
      const transport = {
        stream: null,
        trouble: "",
        gotBytes: () => firstBytes,
        close() {
          upload.close();
          controller.abort();
        },
      };
      transport.stream = new lib.CallbackStream((bytes) => upload.write(bytes), () => transport.close());
      upload.done.then(
        (response) => response.text(),
        (error) => {
          if (!controller.signal.aborted) {
            transport.trouble = Piping.explainStreamingFailure(error);
            transport.stream.fail(new Error(transport.trouble));
          }
        },
      );
      (async () => {
        try {
          const response = await fetch(downUrl, { signal: controller.signal, cache: "no-store" });
          if (!response.ok) throw new Error((await response.text()).trim() || `HTTP ${response.status}`);
          const reader = response.body.getReader();
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            firstBytes = true;
            transport.stream.push(value);
          }
          transport.stream.end();
        } catch (error) {
          if (!controller.signal.aborted) {
            transport.trouble = transport.trouble || `The connection to the tunnel failed: ${error.message || error}`;
            transport.stream.fail(new Error(transport.trouble));
          }
        }
      })();
      return transport;
    }

    function ensureTerminal(lib) {
      if (!document.getElementById("piping-xterm-css")) {
        const style = document.createElement("style");
        style.id = "piping-xterm-css";
        style.textContent = lib.xtermCss;
        document.head.append(style);
      }
      ui.terminal.textContent = "";
      ui.terminal.hidden = false;
      const term = new lib.Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000 });
      const fit = new lib.FitAddon();
      term.loadAddon(fit);
      term.open(ui.terminal);
      fit.fit();
      ui.terminal.dataset.size = `${term.cols}x${term.rows}`;
      return { term, fit };
    }

    function finish(text, kind) {
      const was = current;
      current = null;
      if (was) {
        clearTimeout(was.waitTimer);
        if (was.rejectHostKey) was.rejectHostKey();
        if (was.resizeObserver) was.resizeObserver.disconnect();
        if (was.session) was.session.dispose();
        if (was.transport) was.transport.close();
        if (was.term) was.term.options.disableStdin = true;
      }
      ui.hostKey.hidden = true;
      setBusy(false);
      status(text, kind);
      setState(kind === "error" ? "failed" : "disconnected");
    }

    async function readKey(lib) {
      const text = ui.key.value.trim();
      if (!text) return null;
      return lib.readPrivateKey(text, ui.keyPass.value);
    }

    async function connect() {
      if (current !== null) return;
      const p1 = Piping.normalizePath(ui.path1.value);
      const p2 = Piping.normalizePath(ui.path2.value);
      const username = ui.user.value.trim();
      if (!p1 || !p2) return status("Enter both paths first.", "error");
      if (!username) return status("Enter the user name to log in as.", "error");
      if (!ui.password.value && !ui.key.value.trim()) return status("Enter a password or a private key.", "error");
      const problem = Piping.uploadStreamingProblem();
      if (problem) {
        status(problem, "error");
        setState("unsupported");
        return;
      }
      const attempt = {};
      current = attempt;
      setBusy(true);
      setState("connecting");
      status("Loading the SSH client...", "");
      let lib;
      let key = null;
      try {
        lib = await Piping.loadLibrary("ssh");
      } catch (error) {
        finish(`The SSH client is not available: ${error.message || error}`, "error");
        return;
      }
      try {
        key = await readKey(lib);
      } catch (error) {
        finish(error instanceof lib.KeyError ? error.message
          : `The private key could not be read: ${error.message || error}`, "error");
        return;
      }
      if (current !== attempt) return;
      status(`Waiting for the tunnel on the remote machine (${ui.command.textContent})...`, "");
      const transport = openTransport(lib, Piping.pathUrl(p1).href, Piping.pathUrl(p2).href);
      attempt.transport = transport;
      attempt.waitTimer = setTimeout(() => {
        if (current === attempt && !transport.gotBytes()) {
          finish(`No answer from the remote machine within ${waitSeconds} s: run the command above there ` +
            "(again: a tunnel carries one connection) with an SSH server on its port 22, then connect.", "error");
        }
      }, waitSeconds * 1000);
      try {
        const session = await lib.connect(transport.stream, { checkHostKey: confirmHostKey, keepAliveSeconds });
        if (current !== attempt) return session.dispose();
        attempt.session = session;
        // Each keep-alive sshd answered, for whoever looks (the tests do).
        session.onKeepAliveSucceeded((count) => {
          ui.terminal.dataset.keepAlives = String(count);
        });
        session.onClosed((event) => {
          if (current !== attempt) return;
          if (attempt.leaving) return finish("Disconnected.", "");
          if (attempt.hostKeyRejected) return finish(REJECTED, "error");
          const reason = event.error ? event.error.message : event.message;
          finish(transport.trouble || (reason ? `The connection closed: ${reason}` : "The connection closed."),
            transport.trouble || event.error ? "error" : "");
        });
        status(`Logging in as ${username}...`, "");
        setState("authenticating");
        const ok = await lib.login(session, { username, password: key ? undefined : ui.password.value, key });
        if (current !== attempt) return;
        if (!ok) {
          finish(`The server refused the login of ${username}: wrong ${key ? "key" : "password"} or user name.`,
            "error");
          return;
        }
        const { term, fit } = ensureTerminal(lib);
        attempt.term = term;
        const shell = await lib.openShell(session, {
          columns: term.cols,
          rows: term.rows,
          // As OpenSSH's SendEnv LANG (Debian's sshd accepts it: AcceptEnv LANG LC_*).
          env: { LANG: browserLang() },
          // A copy: the library reuses its buffer once this returns, and xterm.js parses later.
          onData: (data) => term.write(new Uint8Array(data)),
        });
        if (current !== attempt) return;
        const channel = shell.channel;
        channel.onClosed(() => {
          if (current === attempt) finish(attempt.leaving ? "Disconnected." : "The session ended.", "");
        });
        // One send at a time, in order: keystrokes typed while one is on its way wait for it.
        let sending = Promise.resolve();
        const send = (bytes) => {
          sending = sending.then(() => channel.send(bytes)).catch(() => {});
        };
        term.onData((text) => send(lib.Buffer.from(text, "utf8")));
        term.onBinary((text) => send(lib.Buffer.from(text, "latin1")));
        term.onResize(({ cols, rows }) => {
          ui.terminal.dataset.size = `${cols}x${rows}`;
          shell.resize(cols, rows).catch(() => {});
        });
        attempt.resizeObserver = new ResizeObserver(() => fit.fit());
        attempt.resizeObserver.observe(ui.terminal);
        term.focus();
        status(`Logged in as ${username}.`, "ok");
        setState("connected");
      } catch (error) {
        if (current !== attempt) return;
        const text = error && error.message ? error.message : String(error);
        finish(attempt.hostKeyRejected ? REJECTED : transport.trouble || `The SSH connection failed: ${text}`, "error");
      }
    }

    ui.connect.addEventListener("click", connect);
    ui.disconnect.addEventListener("click", async () => {
      const attempt = current;
      if (attempt) attempt.leaving = true;
      if (attempt && attempt.session) {
        // Say goodbye to sshd (briefly: a dead tunnel must not hold the button).
        const bye = attempt.session.close(DISCONNECT_BY_APPLICATION).catch(() => {});
        await Promise.race([bye, new Promise((resolve) => setTimeout(resolve, 1000))]);
      }
      if (current === attempt) finish("Disconnected.", "");
    });
  }

  Piping.registerMode({ name: "ssh", start, show: (params) => applyParams(params), wide: true });
})();
