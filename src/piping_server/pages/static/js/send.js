/*
 * send.js: the "send" mode. POSTs a file with XMLHttpRequest, because only XHR reports upload
 * progress, and a text with fetch() of a Blob, because only fetch() hands out the server's lines
 * while the request is still on ("[INFO] Waiting for 1 receiver(s)...", then the rest): XHR shows
 * them at the end only. Shows the command a receiver runs.
 * With a passphrase the data goes encrypted (pgp.js): a file then streams with fetch() where the
 * connection can stream uploads (HTTP/2), and is encrypted into a Blob first where it cannot.
 * With "key exchange" instead (keyexchange.js, Piping UI's way) the two sides exchange keys, the user
 * compares the verification code, and the data goes encrypted in chunks under the derived path.
 */
(() => {
  "use strict";

  // Set by start(): fills the form from a "#send?path=..." link (each time one is opened).
  let applyParams = () => {};

  function start() {
    const $ = Piping.byId;
    const ui = {
      path: $("path"), newPath: $("new-path"),
      modeFile: $("mode-file"), modeText: $("mode-text"),
      filePane: $("file-pane"), file: $("file"), fileInfo: $("file-info"),
      textPane: $("text-pane"), text: $("text"),
      send: $("send"), cancel: $("cancel"), pass: $("send-pass"), exchange: $("send-exchange"),
      code: $("send-code"), codeValue: $("send-code-value"), codeOk: $("send-code-ok"), codeNo: $("send-code-no"),
      progress: $("progress"), progressText: $("progress-text"), status: $("status"),
      curl: $("curl"), copy: $("copy"), receiveLink: $("receive-link"),
    };
    let request = null; // the transfer in flight, if any

    // ---- path and the receive command ----

    function showReceive() {
      const path = Piping.normalizePath(ui.path.value) || "mypath";
      ui.pass.disabled = ui.exchange.checked || request !== null;
      if (ui.exchange.checked) {
        const url = Piping.pathUrl(path);
        ui.curl.textContent = "piping get --exchange " + Piping.shellQuote(Piping.config.baseUrl + url.pathname);
        ui.receiveLink.href = "#receive?path=" + encodeURIComponent(path);
        return;
      }
      // With a passphrase, what comes is OpenPGP: the command decrypts it (gpg asks for the passphrase).
      ui.curl.textContent = Piping.curlCommand(path) + (ui.pass.value !== "" ? " | gpg -d" : "");
      ui.receiveLink.href = Piping.pathUrl(path).href;
    }

    if (ui.path.value === "") ui.path.value = Piping.randomPath();
    ui.path.addEventListener("input", showReceive);
    ui.pass.addEventListener("input", showReceive);
    ui.exchange.addEventListener("change", showReceive);
    ui.newPath.addEventListener("click", () => {
      ui.path.value = Piping.randomPath();
      showReceive();
    });
    showReceive();
    applyParams = (params) => {
      if (params.get("path") && request === null) {
        ui.path.value = params.get("path");
        showReceive();
      }
    };

    ui.copy.addEventListener("click", () => Piping.copyText(ui.curl, ui.copy));

    // ---- a file or a text ----

    function syncMode() {
      const isText = ui.modeText.checked;
      ui.textPane.hidden = !isText;
      ui.text.disabled = !isText;
      ui.filePane.hidden = isText;
      ui.file.disabled = isText;
    }

    function showFile() {
      const file = ui.file.files[0];
      ui.fileInfo.textContent = file ? `${file.name}, ${Piping.formatBytes(file.size)}` : "or drop a file here";
    }

    ui.modeFile.addEventListener("change", syncMode);
    ui.modeText.addEventListener("change", syncMode);
    syncMode(); // a reload may restore the other choice
    ui.file.addEventListener("change", showFile);
    showFile();

    ui.filePane.addEventListener("dragover", (event) => {
      event.preventDefault();
      ui.filePane.classList.add("over");
    });
    ui.filePane.addEventListener("dragleave", () => ui.filePane.classList.remove("over"));
    ui.filePane.addEventListener("drop", (event) => {
      event.preventDefault();
      ui.filePane.classList.remove("over");
      const dropped = event.dataTransfer && event.dataTransfer.files[0];
      if (!dropped) return;
      // The input takes one file: keep the first of several.
      const one = new DataTransfer();
      one.items.add(dropped);
      ui.file.files = one.files;
      showFile();
    });
    // Anywhere else on the page, a dropped file must not navigate away.
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => event.preventDefault());

    // ---- sending ----

    function setStatus(text, kind) {
      ui.status.textContent = text;
      ui.status.className = kind || "";
    }

    function setBusy(busy) {
      ui.send.disabled = busy;
      ui.cancel.hidden = !busy;
      for (const input of [ui.path, ui.newPath, ui.modeFile, ui.modeText, ui.pass, ui.exchange]) input.disabled = busy;
      if (!busy) ui.pass.disabled = ui.exchange.checked;
    }

    function showProgress(loaded, total) {
      ui.progress.hidden = false;
      ui.progress.max = total > 0 ? total : 1;
      ui.progress.value = total > 0 ? loaded : 0;
      const percent = total > 0 ? ` (${Math.floor((loaded / total) * 100)}%)` : "";
      ui.progressText.textContent = `${Piping.formatBytes(loaded)} of ${Piping.formatBytes(total)}${percent}`;
    }

    /** The request body and its headers, or an error message for the user. */
    function readBody() {
      if (ui.modeText.checked) {
        // A Blob, not the string: the browser encodes it to UTF-8 once, natively, and sends it as
        // fast as a file (a string body was several times slower for tens of megabytes).
        const body = new Blob([ui.text.value], { type: "text/plain;charset=utf-8" });
        return { body, size: body.size, headers: {}, text: true };
      }
      const file = ui.file.files[0];
      if (!file) return { error: "Choose a file first.", focus: ui.file };
      const headers = {
        // Receivers get the name too (curl -OJ, or a browser's "Save as").
        "Content-Disposition": `inline; filename*=UTF-8''${encodeURIComponent(file.name)}`,
      };
      // With no type, XHR would send no Content-Type at all (docs/protocol.md section 2).
      if (file.type === "") headers["Content-Type"] = "application/octet-stream";
      return { body: file, size: file.size, headers };
    }

    /** Above this, encrypting into page memory first gets a warning (no streaming upload here). */
    const LARGE_IN_MEMORY_BYTES = 256 * 1000 * 1000;

    /** The input, encrypted: a Blob to XHR, or a stream to fetch() when uploads can stream. */
    async function encryptInput(input, passphrase) {
      // Like `piping send --pass`: the name travels inside the encrypted data, not in a header.
      const headers = { "Content-Type": "application/octet-stream" };
      if (ui.modeText.checked) {
        const encrypted = await PipingPgp.encrypt(new Uint8Array(await input.body.arrayBuffer()), passphrase);
        return { body: new Blob([encrypted]), size: encrypted.length, headers, text: true };
      }
      const file = input.body;
      let read = 0;
      const counted = file.stream().pipeThrough(new TransformStream({
        transform(chunk, controller) {
          read += chunk.length;
          showProgress(read, file.size);
          controller.enqueue(chunk);
        },
      }));
      const encrypted = await PipingPgp.encrypt(counted, passphrase, file.name);
      if (Piping.uploadStreamingProblem() === "") return { stream: encrypted, size: file.size, headers };
      if (file.size > LARGE_IN_MEMORY_BYTES) {
        setStatus(`Encrypting ${Piping.formatBytes(file.size)} in page memory first: this connection cannot ` +
          "stream uploads (HTTP/2 over HTTPS can).", "");
      } else {
        setStatus("Encrypting...", "");
      }
      const blob = await new Response(encrypted).blob();
      return { body: blob, size: blob.size, headers };
    }

    /** Send an encrypted stream with fetch(); the server's lines come once the upload is done. */
    function sendStream(url, input) {
      const controller = new AbortController();
      request = { abort: () => controller.abort() };
      setStatus("Waiting for the receiver, then sending (encrypted, streaming)...", "");
      fetch(url, { method: "POST", body: input.stream, duplex: "half", headers: input.headers, signal: controller.signal })
        .then(async (response) => {
          const text = await response.text();
          const failed = response.status !== 200 || /\[ERROR\]|aborted halfway/.test(text);
          if (!failed) showProgress(input.size, input.size);
          finish(text || `HTTP ${response.status}`, failed ? "error" : "ok");
        })
        .catch((error) => {
          if (controller.signal.aborted) finish("Cancelled.", "error");
          else finish(Piping.explainStreamingFailure(error), "error");
        });
    }

    /** A body the browser has whole (a text): fetch() shows the server's lines as they come. */
    function sendWhole(url, input) {
      const controller = new AbortController();
      request = { abort: () => controller.abort() };
      setStatus("Waiting for the receiver...", "");
      fetch(url, { method: "POST", body: input.body, headers: input.headers, signal: controller.signal })
        .then(async (response) => {
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          let text = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            text += value;
            setStatus(serverSays(text), "");
          }
          const failed = response.status !== 200 || /\[ERROR\]|aborted halfway/.test(text);
          if (!failed) showProgress(input.size, input.size);
          finish(text || `HTTP ${response.status}`, failed ? "error" : "ok");
        })
        .catch((error) => {
          if (controller.signal.aborted) finish("Cancelled.", "error");
          else finish(`The upload failed: ${error.message || error}`, "error");
        });
    }

    /** The server's lines so far, under a first line that says what is going on. */
    function serverSays(text) {
      if (/Sent successfully|\[ERROR\]/.test(text)) return text;
      if (/Start sending/.test(text)) return "Sending...\n" + text;
      const waiting = /Waiting for (\d+) receiver/.exec(text);
      if (!waiting) return text;
      // "?n=N": the server says each receiver that comes; the transfer starts with the last one.
      const missing = Number(waiting[1]) - (text.match(/A receiver was connected/g) || []).length;
      const who = missing === 1 && waiting[1] === "1" ? "the receiver" : `${missing} more receiver(s)`;
      return `Waiting for ${who}...\n` + text;
    }

    /** Wait for the user's answer to the verification code: true for "same". */
    function askCode(signal) {
      return new Promise((resolve, reject) => {
        ui.codeOk.onclick = () => resolve(true);
        ui.codeNo.onclick = () => resolve(false);
        signal.addEventListener("abort", () => reject(new DOMException("cancelled", "AbortError")), { once: true });
      });
    }

    /** What the data is, as Piping UI's sender describes it in its "verified" message (data_meta). */
    function dataMeta(input) {
      if (input.text) return { mime_type: "text/plain", size: input.size, file_extension: "txt" };
      const file = input.body;
      const dot = file.name.lastIndexOf(".");
      return {
        mime_type: file.type || undefined,
        size: file.size,
        file_name: file.name,
        file_extension: dot > 0 ? file.name.slice(dot + 1) : undefined,
      };
    }

    /** Key exchange with the receiver, the user's yes or no to the code, then the encrypted chunks. */
    async function sendByExchange(path, input) {
      const controller = new AbortController();
      request = { abort: () => controller.abort() };
      setBusy(true);
      setStatus("Waiting for the receiver's key (key exchange)...", "");
      document.body.dataset.sendExchange = "waiting";
      try {
        const exchanged = await PipingKeyExchange.exchange("sender", path, controller.signal);
        ui.codeValue.textContent = exchanged.code;
        ui.code.hidden = false;
        document.body.dataset.sendExchange = "code";
        setStatus("Compare the verification code with the receiver's.", "");
        const same = await askCode(controller.signal);
        ui.code.hidden = true;
        setStatus(same ? "Waiting for the receiver to take the confirmation..." : "Telling the receiver...", "");
        await PipingKeyExchange.sendVerified(exchanged, same, dataMeta(input), controller.signal);
        if (!same) {
          finish("Not sent: the verification codes differ (the receiver was told).", "error");
          return;
        }
        let read = 0;
        const plain = input.body.stream().pipeThrough(new TransformStream({
          transform(chunk, out) {
            read += chunk.length;
            showProgress(read, input.size);
            out.enqueue(chunk);
          },
        }));
        const name = input.text ? "" : input.body.name;
        const encrypted = await PipingPgp.encrypt(plain, PipingKeyExchange.passphraseOf(exchanged.key), name);
        setStatus("Sending, end-to-end encrypted by key exchange...", "");
        await PipingKeyExchange.sendChunks(exchanged.mainPath, encrypted, controller.signal);
        showProgress(input.size, input.size);
        finish(`Sent, end-to-end encrypted (verification code ${exchanged.code}).`, "ok");
      } catch (error) {
        ui.code.hidden = true;
        const text = controller.signal.aborted ? "Cancelled."
          : error instanceof PipingKeyExchange.ExchangeError ? error.message : `Key exchange failed: ${error.message || error}`;
        finish(text, "error");
      } finally {
        document.body.dataset.sendExchange = "";
      }
    }

    async function send() {
      if (request !== null) return;
      const path = Piping.normalizePath(ui.path.value);
      if (path === "") {
        setStatus("Enter a path first.", "error");
        ui.path.focus();
        return;
      }
      let input = readBody();
      if (input.error) {
        setStatus(input.error, "error");
        input.focus.focus();
        return;
      }
      if (ui.exchange.checked) {
        sendByExchange(path, input);
        return;
      }
      const url = Piping.pathUrl(path).href;
      const passphrase = ui.pass.value;
      if (passphrase !== "") {
        request = { abort() {} }; // busy while encrypting
        setBusy(true);
        setStatus("Encrypting...", "");
        try {
          input = await encryptInput(input, passphrase);
        } catch (error) {
          finish(`Encryption failed: ${error.message}`, "error");
          return;
        }
        if (input.stream) {
          sendStream(url, input);
          return;
        }
      }
      if (input.text) {
        setBusy(true);
        sendWhole(url, input);
        return;
      }

      const xhr = new XMLHttpRequest();
      request = xhr;
      xhr.open("POST", url);
      for (const [name, value] of Object.entries(input.headers)) xhr.setRequestHeader(name, value);
      // Upload listeners must be in place before send(), or the browser may not report progress.
      xhr.upload.addEventListener("progress", (event) => {
        showProgress(event.loaded, event.lengthComputable ? event.total : input.size);
      });
      // The server streams its lines while the transfer runs; XHR shows them once the upload is done.
      xhr.addEventListener("progress", () => setStatus(serverSays(xhr.responseText), ""));
      xhr.upload.addEventListener("load", () => {
        if (xhr.responseText === "") setStatus("Sent; the receiver is taking the last bytes...", "");
      });
      xhr.addEventListener("load", () => {
        const text = xhr.responseText;
        const failed = xhr.status !== 200 || /\[ERROR\]|aborted halfway/.test(text);
        if (!failed) showProgress(input.size, input.size);
        finish(text || `HTTP ${xhr.status}`, failed ? "error" : "ok");
      });
      xhr.addEventListener("error", () => finish("The upload failed: the connection was lost.", "error"));
      xhr.addEventListener("abort", () => finish("Cancelled.", "error"));

      setBusy(true);
      showProgress(0, input.size);
      // The browser pushes what the connection buffers at once; the rest waits for the receiver.
      setStatus("Waiting for the receiver...", "");
      xhr.send(input.body);
    }

    function finish(text, kind) {
      request = null;
      setBusy(false);
      if (kind === "error") ui.progress.hidden = true;
      setStatus(text, kind);
    }

    ui.send.addEventListener("click", send);
    ui.cancel.addEventListener("click", () => request && request.abort());
    ui.text.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) send();
    });
    ui.path.addEventListener("keydown", (event) => {
      if (event.key === "Enter") send();
    });
  }

  Piping.registerMode({ name: "send", start, show: (params) => applyParams(params) });
})();
