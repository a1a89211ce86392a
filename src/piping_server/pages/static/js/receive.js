/*
 * receive.js: the "receive" mode. GETs /<path> with fetch() and reads the body as it arrives:
 * progress against Content-Length, the sender's file name (Content-Disposition, or the name inside
 * an encrypted message), and a SHA-256 computed chunk by chunk. With "key exchange" (keyexchange.js,
 * Piping UI's way) it exchanges keys with the sender, shows the verification code, waits for the
 * sender's confirmation and takes the encrypted chunks under the derived path instead.
 *
 * Where the data goes, as the browser allows:
 * - "disk": the File System Access API (showSaveFilePicker, Chromium over HTTPS): each chunk is
 *   written to the chosen file as it arrives, so any size works and memory stays flat;
 * - "memory": chunks are gathered into Blobs (which the browser may keep on disk past a size), then
 *   offered with a Save link. A download streamed by a service worker would avoid that, but the
 *   server rejects service-worker scripts (docs/protocol.md section 6), so it is not an option.
 */
(() => {
  "use strict";

  // Small pieces are folded into one Blob every this many bytes: the bytes leave the JavaScript
  // heap for the browser's blob storage (which spills to disk), so the page never holds them all.
  const BLOB_FOLD_BYTES = 16 * 1024 * 1024;
  // A received text up to this size is also shown in the page.
  const TEXT_PREVIEW_BYTES = 1024 * 1024;
  // Without a disk sink, warn before gathering more than this.
  const LARGE_IN_MEMORY_BYTES = 512 * 1000 * 1000;

  // Set by start(): fills the form from a "#receive?path=..." link.
  let applyParams = () => {};

  function start() {
    const $ = Piping.byId;
    const ui = {
      path: $("recv-path"), pass: $("recv-pass"), exchange: $("recv-exchange"), code: $("recv-code"),
      codeValue: $("recv-code-value"), sinkDisk: $("recv-sink-disk"), sinkMemory: $("recv-sink-memory"),
      sinkHint: $("recv-sink-hint"), start: $("recv-start"), saveDisk: $("recv-save-disk"), cancel: $("recv-cancel"),
      progress: $("recv-progress"), progressText: $("recv-progress-text"), facts: $("recv-facts"),
      name: $("recv-name"), type: $("recv-type"), size: $("recv-size"), sha256: $("recv-sha256"),
      save: $("recv-save"), text: $("recv-text"), status: $("recv-status"),
    };
    const canWriteToDisk = typeof window.showSaveFilePicker === "function";
    let transfer = null; // { controller } while receiving
    let savedUrl = null;

    ui.sinkDisk.disabled = !canWriteToDisk;
    (canWriteToDisk ? ui.sinkDisk : ui.sinkMemory).checked = true;
    ui.sinkHint.textContent = canWriteToDisk
      ? "Large files: choose the disk, so that they are written as they arrive."
      : "This browser cannot write a file as it arrives (no File System Access API here): the data is " +
        "gathered in the page first, so keep to sizes your memory allows.";
    // A link such as /#receive?path=abc fills the path in, also in a page already open.
    applyParams = (params) => {
      if (params.get("path") && transfer === null) ui.path.value = params.get("path");
    };

    const status = (text, kind) => Piping.setStatus(ui.status, text, kind);

    function showProgress(loaded, total) {
      ui.progress.hidden = false;
      ui.progress.max = total > 0 ? total : 1;
      ui.progress.value = total > 0 ? Math.min(loaded, total) : 0;
      const of = total > 0 ? ` of ${Piping.formatBytes(total)} (${Math.floor((loaded / total) * 100)}%)` : "";
      ui.progressText.textContent = `${Piping.formatBytes(loaded)}${of}`;
    }

    function setBusy(busy) {
      ui.start.disabled = busy;
      ui.cancel.hidden = !busy;
      for (const input of [ui.path, ui.pass, ui.exchange, ui.sinkDisk, ui.sinkMemory]) input.disabled = busy;
      if (!busy) {
        ui.sinkDisk.disabled = !canWriteToDisk;
        ui.pass.disabled = ui.exchange.checked;
      }
    }

    function reset() {
      if (savedUrl !== null) URL.revokeObjectURL(savedUrl);
      savedUrl = null;
      ui.facts.hidden = true;
      ui.save.hidden = true;
      ui.text.hidden = true;
      ui.text.textContent = "";
      ui.saveDisk.hidden = true;
      ui.sha256.textContent = "";
      ui.progress.hidden = true;
      ui.progressText.textContent = "";
      ui.code.hidden = true;
      document.body.dataset.receiveState = "";
      document.body.dataset.receiveEncrypted = "";
    }

    /** Wait for a click on "Save to disk…", then ask where (the picker needs that click). */
    function chooseFile(name) {
      return new Promise((resolve, reject) => {
        ui.saveDisk.hidden = false;
        ui.saveDisk.textContent = `Save ${name} to disk…`;
        ui.saveDisk.onclick = async () => {
          try {
            const handle = await window.showSaveFilePicker({ suggestedName: name });
            ui.saveDisk.hidden = true;
            resolve(await handle.createWritable());
          } catch (error) {
            if (error.name !== "AbortError") reject(error); // closing the picker: they may click again
          }
        };
        transfer.controller.signal.addEventListener("abort", () => reject(new Error("cancelled")));
      });
    }

    ui.exchange.addEventListener("change", () => {
      ui.pass.disabled = ui.exchange.checked;
    });

    /**
     * Key exchange with the sender: the code is shown, and once the sender confirmed it, the decrypted
     * chunks. Resolves to what the plain GET gives: { stream, length, type, name }.
     */
    async function openByExchange(path, signal) {
      status("Waiting for the sender's key (key exchange)...", "");
      const exchanged = await PipingKeyExchange.exchange("receiver", path, signal);
      ui.codeValue.textContent = exchanged.code;
      ui.code.hidden = false;
      status("Compare the verification code with the sender's: the sender sends once it confirmed it.", "");
      const { verified, dataMeta } = await PipingKeyExchange.receiveVerified(exchanged, signal);
      if (!verified) throw new PipingKeyExchange.ExchangeError("The sender did not confirm the verification code: nothing was sent.");
      const encrypted = PipingKeyExchange.receiveChunks(exchanged.mainPath, signal);
      const decrypted = await PipingPgp.decrypt(encrypted, PipingKeyExchange.passphraseOf(exchanged.key));
      // Without a name (a text), Piping UI names the data after the path, with the sender's extension.
      let name = typeof dataMeta.file_name === "string" ? dataMeta.file_name : "";
      if (name === "") {
        name = path.split("/").pop();
        if (typeof dataMeta.file_extension === "string" && !/^.+\..+$/.test(name)) name += `.${dataMeta.file_extension}`;
      }
      const size = Number.isInteger(dataMeta.size) ? dataMeta.size : 0;
      return { stream: decrypted.data, length: size, type: typeof dataMeta.mime_type === "string" ? dataMeta.mime_type : "", name };
    }

    async function receive() {
      if (transfer !== null) return;
      const path = Piping.normalizePath(ui.path.value);
      if (path === "") {
        status("Enter the sender's path first.", "error");
        ui.path.focus();
        return;
      }
      reset();
      const controller = new AbortController();
      transfer = { controller };
      setBusy(true);
      status("Waiting for the sender...", "");
      document.body.dataset.receiveState = "waiting";
      let writable = null;
      const exchange = ui.exchange.checked;
      try {
        const opened = exchange ? await openByExchange(path, controller.signal) : await openPlain(path, controller.signal);
        const { length, type } = opened;
        let { name, stream } = opened;
        const fallbackName = path.split("?")[0].split("/").pop() || "received";
        let received = 0;
        // Progress counts what comes over the wire (the encrypted size, with a passphrase).
        stream = stream.pipeThrough(new TransformStream({
          transform(chunk, out) {
            received += chunk.length;
            showProgress(received, length);
            out.enqueue(chunk);
          },
        }));
        const passphrase = exchange ? "" : ui.pass.value;
        let encryptedButNoPassphrase = false;
        if (exchange) {
          // decrypted already (the name and type came in the sender's confirmation)
        } else if (passphrase !== "") {
          status("Decrypting...", "");
          const decrypted = await PipingPgp.decrypt(stream, passphrase);
          stream = decrypted.data;
          name = decrypted.filename || name;
        } else {
          // Encrypted data taken as plain would be saved as gibberish without a word: look first.
          const peeked = await PipingPgp.peek(stream);
          stream = peeked.stream;
          encryptedButNoPassphrase = PipingPgp.looksEncrypted(peeked.head);
        }
        name = Piping.safeFilename(name, fallbackName);
        ui.facts.hidden = false;
        ui.name.textContent = name;
        ui.type.textContent = exchange ? `${type || "(none given)"}, decrypted` : passphrase !== "" ? "(decrypted)"
          : encryptedButNoPassphrase ? "OpenPGP, encrypted" : type || "(none given)";
        ui.size.textContent = length > 0 ? Piping.formatBytes(length) : "(not announced)";
        showProgress(0, length);

        const toDisk = ui.sinkDisk.checked && canWriteToDisk;
        if (toDisk) {
          status(`Receiving ${name}: choose where to save it.`, "");
          writable = await chooseFile(name);
        } else if (length > LARGE_IN_MEMORY_BYTES) {
          status(`Receiving ${Piping.formatBytes(length)} into page memory: this browser may run out. ` +
            "A browser with the File System Access API (Chromium over HTTPS) writes it to disk instead.", "");
        } else {
          status(`Receiving ${name}...`, "");
        }
        document.body.dataset.receiveState = "receiving";

        const hash = new Sha256();
        let size = 0;
        let parts = [];
        let pending = [];
        let pendingBytes = 0;
        let preview = [];
        const reader = stream.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          hash.update(value);
          size += value.length;
          if (size <= TEXT_PREVIEW_BYTES) preview.push(value);
          else preview = null;
          if (writable !== null) {
            await writable.write(value);
          } else {
            pending.push(value);
            pendingBytes += value.length;
            if (pendingBytes >= BLOB_FOLD_BYTES) {
              parts.push(new Blob(pending));
              pending = [];
              pendingBytes = 0;
            }
          }
        }
        const digest = hash.hex();
        if (writable !== null) {
          await writable.close();
          writable = null;
        } else {
          parts.push(new Blob(pending));
          // No type given: octet-stream, or Chromium sniffs the bytes and adds ".txt" to the name.
          const blob = new Blob(parts, { type: passphrase !== "" || exchange || type === "" ? "application/octet-stream" : type });
          parts = [];
          savedUrl = URL.createObjectURL(blob);
          ui.save.href = savedUrl;
          ui.save.download = name;
          ui.save.textContent = `Save ${name} (${Piping.formatBytes(size)})`;
          ui.save.hidden = false;
        }
        if (preview !== null && !encryptedButNoPassphrase && (passphrase !== "" || /^text\//i.test(type) || type === "")) {
          const text = new TextDecoder("utf-8", { fatal: true });
          try {
            ui.text.textContent = text.decode(new Uint8Array(await new Blob(preview).arrayBuffer()));
            ui.text.hidden = false;
          } catch {
            // binary data: no preview
          }
        }
        ui.size.textContent = Piping.formatBytes(size) + ` (${size} bytes)`;
        ui.sha256.textContent = digest;
        showProgress(size, length || size);
        if (length > 0 && size !== length) throw new Error(`the stream ended early: ${size} of ${length} bytes`);
        if (encryptedButNoPassphrase) {
          status(`Received ${name}, ${Piping.formatBytes(size)}, but it is encrypted (OpenPGP): ask the sender ` +
            "to send it again and enter the passphrase here, or save it and run gpg -d on it.", "error");
          document.body.dataset.receiveEncrypted = "true";
        } else {
          status(`Received ${name}, ${Piping.formatBytes(size)}.`, "ok");
        }
        document.body.dataset.receiveState = "done";
      } catch (error) {
        if (writable !== null) await writable.abort().catch(() => {});
        const text = controller.signal.aborted ? "Cancelled."
          : error instanceof PipingPgp.PassphraseError || error instanceof PipingKeyExchange.ExchangeError ? error.message
            : `Receiving failed: ${error.message || error}`;
        status(text, "error");
        ui.saveDisk.hidden = true;
        document.body.dataset.receiveState = "failed";
      } finally {
        transfer = null;
        setBusy(false);
      }
    }

    /** The plain GET of `path`: { stream, length, type, name } from the response. */
    async function openPlain(path, signal) {
      const response = await fetch(Piping.pathUrl(path).href, { signal, cache: "no-store" });
      if (!response.ok) throw new Error((await response.text()).trim() || `HTTP ${response.status}`);
      return {
        stream: response.body,
        length: Number(response.headers.get("Content-Length") || 0),
        type: response.headers.get("Content-Type") || "",
        name: Piping.dispositionFilename(response.headers.get("Content-Disposition")),
      };
    }

    ui.start.addEventListener("click", receive);
    ui.cancel.addEventListener("click", () => transfer && transfer.controller.abort());
    ui.path.addEventListener("keydown", (event) => {
      if (event.key === "Enter") receive();
    });
  }

  Piping.registerMode({ name: "receive", start, show: (params) => applyParams(params) });
})();
