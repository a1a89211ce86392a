/*
 * share.js: the "share" mode. One side captures its screen (getDisplayMedia) or camera
 * (getUserMedia), records it with MediaRecorder into WebM pieces and streams them as one long
 * upload (fetch() with a ReadableStream body, HTTP/2 only); viewers GET the same path and play it
 * live with Media Source Extensions. `n` viewers at once: the path gets `?n=N` on both sides.
 *
 * With a passphrase the upload is one OpenPGP message (as `gpg -c` writes, streamed), whose
 * literal data is the WebM stream and whose file name is its media type; viewers decrypt it as it
 * plays, and `curl URL | gpg -d | ffplay -` shows it on the command line.
 *
 * The sharer cannot read the server's answer while its upload runs (browsers hand out the
 * response of a streamed request once the request is over), so it asks the path itself: an empty
 * POST there is refused with "Another sender has been connected" while the upload waits for its
 * viewers, and with "has been established already" while they watch (PROTOCOL.md section 4). When
 * the viewers are gone the path is free and that POST becomes a waiting sender: it is dropped at
 * once, and the sharer says that the viewers left. Recording starts when the viewers are there, so
 * nothing piles up before and each viewer starts at the live edge.
 */
(() => {
  "use strict";

  // MediaRecorder hands out a piece this often: the delay a viewer sees is about this much more.
  const TIMESLICE_MS = 200;
  // How often the sharer asks whether its viewers are there (or still there).
  const PROBE_INTERVAL_MS = 1000;
  // A viewer further behind the live edge than this jumps forward (e.g. after joining late).
  const MAX_LAG_S = 3;
  // Played media older than this is dropped from the viewer's buffer, so memory stays bounded.
  const KEEP_BEHIND_S = 20;
  const CANDIDATE_TYPES = [
    'video/webm;codecs="vp8,opus"', 'video/webm;codecs="vp9,opus"', 'video/webm;codecs="vp8"',
    'video/webm;codecs="vp9"', "video/webm",
  ];

  // Set by start(): fills the form from a "#share?path=...&n=..." link.
  let applyParams = () => {};

  function start() {
    const $ = Piping.byId;
    const ui = {
      path: $("share-path"), n: $("share-n"), screen: $("share-screen"), camera: $("share-camera"),
      watch: $("share-watch"), stop: $("share-stop"), status: $("share-status"), video: $("share-video"),
      pass: $("share-pass"), linkRow: $("share-link-row"), link: $("share-link"), copy: $("share-copy"),
    };
    ui.path.value = Piping.randomPath();
    let running = null; // { stop() }
    applyParams = (params) => {
      if (running !== null) return;
      if (params.get("path")) ui.path.value = params.get("path");
      if (params.get("n")) ui.n.value = params.get("n");
    };
    ui.copy.addEventListener("click", () => Piping.copyText(ui.link, ui.copy));

    const status = (text, kind) => Piping.setStatus(ui.status, text, kind);
    const setState = (state) => { document.body.dataset.shareState = state; };

    function viewers() {
      return Math.max(1, Math.floor(Number(ui.n.value) || 1));
    }

    function url() {
      const path = Piping.normalizePath(ui.path.value).split("?")[0];
      if (path === "") throw new Error("Enter a path first.");
      const n = viewers();
      return Piping.pathUrl(n > 1 ? `${path}?n=${n}` : path).href;
    }

    /** The page link a viewer opens: this page's Screen share with the path filled in. */
    function viewerLink() {
      const params = new URLSearchParams({ path: Piping.normalizePath(ui.path.value).split("?")[0] });
      if (viewers() > 1) params.set("n", String(viewers()));
      return new URL(`#share?${params}`, document.baseURI).href;
    }

    function setBusy(busy) {
      for (const button of [ui.screen, ui.camera, ui.watch]) button.disabled = busy;
      for (const input of [ui.path, ui.n, ui.pass]) input.disabled = busy;
      ui.stop.hidden = !busy;
    }

    /** End what runs, say `text`, and leave no empty player behind. */
    function finish(text, kind, state) {
      if (running !== null) {
        const current = running;
        running = null;
        current.stop();
      }
      setBusy(false);
      ui.video.hidden = true;
      ui.linkRow.hidden = true;
      status(text, kind);
      setState(state || (kind === "error" ? "failed" : "stopped"));
    }

    // ---- sharing ----

    /** What an empty POST to the path says: "waiting", "live", or "free" (nobody is on it). */
    async function probe(target) {
      const controller = new AbortController();
      try {
        const response = await fetch(target, {
          method: "POST", body: "", headers: { "Content-Type": "text/plain" }, signal: controller.signal, cache: "no-store",
        });
        if (response.ok) return "free";
        const text = await response.text();
        if (/Another sender has been connected/.test(text)) return "waiting";
        if (/established already/.test(text)) return "live";
        return "unknown";
      } catch {
        return "unknown";
      } finally {
        controller.abort(); // a probe that became a sender must not stay one
      }
    }

    async function share(source) {
      if (running !== null) return;
      let target;
      try {
        target = url();
      } catch (error) {
        status(error.message, "error");
        return;
      }
      const problem = Piping.uploadStreamingProblem();
      if (problem) {
        status(problem, "error");
        setState("unsupported");
        return;
      }
      let media;
      try {
        media = source === "screen"
          ? await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: 15 }, audio: false })
          : await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
      } catch (error) {
        status(`No ${source} to share: ${error.message || error}`, "error");
        return;
      }
      const hasAudio = media.getAudioTracks().length > 0;
      const mimeType = CANDIDATE_TYPES.find((type) => (hasAudio || !type.includes("opus")) &&
        MediaRecorder.isTypeSupported(type));
      if (!mimeType) {
        media.getTracks().forEach((track) => track.stop());
        status("This browser cannot record WebM video (MediaRecorder).", "error");
        return;
      }
      const passphrase = ui.pass.value;
      let feed;
      const plain = new ReadableStream({ start(controller) { feed = controller; } });
      let body = plain;
      if (passphrase !== "") {
        try {
          // The media type rides inside, as the literal data's name: the server sees none of it.
          body = await PipingPgp.encrypt(plain, passphrase, mimeType);
        } catch (error) {
          media.getTracks().forEach((track) => track.stop());
          status(`Encryption failed: ${error.message || error}`, "error");
          return;
        }
      }
      const upload = fetch(target, {
        method: "POST", body, duplex: "half",
        headers: { "Content-Type": passphrase !== "" ? "application/octet-stream" : mimeType },
      });
      const recorder = new MediaRecorder(media, { mimeType, videoBitsPerSecond: 1_500_000 });
      let sent = 0;
      let state = "waiting";
      let timer = 0;
      const current = {
        stop() {
          clearTimeout(timer);
          if (recorder.state !== "inactive") recorder.stop();
          media.getTracks().forEach((track) => track.stop());
          // Let the recorder's last piece out before the body ends.
          setTimeout(() => feed.close(), TIMESLICE_MS);
          ui.video.srcObject = null;
        },
      };
      running = current;
      const what = `your ${source}` + (passphrase !== "" ? ", end-to-end encrypted" : "");
      const liveStatus = () => status(`Live: sharing ${what} with ${viewers()} viewer(s) ` +
        `(${Piping.formatBytes(sent)} sent).`, "ok");
      recorder.addEventListener("dataavailable", async (event) => {
        if (event.data.size === 0 || running !== current) return;
        const bytes = new Uint8Array(await event.data.arrayBuffer());
        if (running !== current) return;
        sent += bytes.length;
        feed.enqueue(bytes);
        liveStatus();
      });
      // The browser's own "Stop sharing" button ends the track: end the stream with it.
      media.getVideoTracks()[0].addEventListener("ended", () => {
        if (running === current) finish("Sharing stopped.", "");
      });
      upload.then(
        async (response) => {
          if (running !== current) return;
          const text = await response.text().catch(() => "");
          finish(/\[ERROR\]/.test(text) ? text.trim() : "The share ended.", /\[ERROR\]/.test(text) ? "error" : "");
        },
        (error) => {
          if (running === current) finish(Piping.explainStreamingFailure(error), "error");
        },
      );

      async function watchViewers() {
        if (running !== current) return;
        const seen = await probe(target);
        if (running !== current) return;
        if (state === "waiting" && seen === "live") {
          state = "live";
          recorder.start(TIMESLICE_MS);
          liveStatus();
          setState("live");
        } else if (state === "waiting" && seen === "unknown") {
          // Something between refuses the question (a proxy, an operator's rule): record at once,
          // as the server holds the upload until the viewers come, and stop asking.
          state = "untracked";
          recorder.start(TIMESLICE_MS);
          setState("live");
          return;
        } else if (state === "live" && seen === "free") {
          finish(viewers() > 1 ? "All viewers left: sharing stopped." : "The viewer left: sharing stopped.", "",
            "viewer-left");
          return;
        }
        timer = setTimeout(watchViewers, PROBE_INTERVAL_MS);
      }
      timer = setTimeout(watchViewers, PROBE_INTERVAL_MS);

      ui.video.hidden = false;
      ui.video.srcObject = media;
      ui.video.play().catch(() => {});
      setBusy(true);
      ui.link.textContent = viewerLink();
      ui.linkRow.hidden = false;
      status(`Waiting for ${viewers() === 1 ? "a viewer" : `${viewers()} viewers`}: send them the link below ` +
        (passphrase !== "" ? "and the passphrase " : "") + `(or: curl ${Piping.shellQuote(target)}` +
        (passphrase !== "" ? " | gpg -d" : "") + " | ffplay -).", "");
      setState("sharing");
    }

    // ---- watching ----

    async function watch() {
      if (running !== null) return;
      let target;
      try {
        target = url();
      } catch (error) {
        status(error.message, "error");
        return;
      }
      const controller = new AbortController();
      const source = new MediaSource();
      const objectUrl = URL.createObjectURL(source);
      const current = {
        stop() {
          controller.abort();
          ui.video.pause();
          ui.video.removeAttribute("src");
          ui.video.load();
          URL.revokeObjectURL(objectUrl);
        },
      };
      running = current;
      setBusy(true);
      // With n > 1 the server answers no viewer before all are there: the sharer may well be live.
      status(viewers() > 1
        ? `Waiting: the video starts once the sharer and all ${viewers()} viewers are on ${target}.`
        : `Waiting for the sharer on ${target}...`, "");
      setState("waiting");
      let playing = false;
      try {
        const response = await fetch(target, { signal: controller.signal, cache: "no-store" });
        if (!response.ok) throw new Error((await response.text()).trim() || `HTTP ${response.status}`);
        let type = response.headers.get("Content-Type") || "video/webm";
        const passphrase = ui.pass.value;
        const peeked = await PipingPgp.peek(response.body);
        let stream = peeked.stream;
        if (PipingPgp.looksEncrypted(peeked.head)) {
          if (passphrase === "") {
            throw new PipingPgp.PassphraseError("wrong-passphrase",
              "This share is encrypted: enter its passphrase, then Watch again.");
          }
          const decrypted = await PipingPgp.decrypt(stream, passphrase);
          stream = decrypted.data;
          type = decrypted.filename || "video/webm";
        } else if (passphrase !== "") {
          throw new PipingPgp.PassphraseError("not-encrypted",
            "This share is not encrypted: clear the passphrase, then Watch again.");
        }
        if (!window.MediaSource || !MediaSource.isTypeSupported(type)) {
          throw new Error(`this browser cannot play ${type} live (Media Source Extensions)`);
        }
        ui.video.srcObject = null;
        ui.video.src = objectUrl;
        ui.video.hidden = false;
        await new Promise((resolve) => source.addEventListener("sourceopen", resolve, { once: true }));
        const buffer = source.addSourceBuffer(type);
        buffer.mode = "sequence";
        const appended = () => new Promise((resolve, reject) => {
          buffer.addEventListener("updateend", resolve, { once: true });
          buffer.addEventListener("error", () => reject(new Error("the video data could not be decoded")), { once: true });
        });
        ui.video.play().catch(() => {});
        const reader = stream.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          if (!playing) {
            playing = true;
            status("Playing the shared screen live" + (passphrase !== "" ? " (decrypted here)." : "."), "ok");
            setState("playing");
          }
          const ready = appended();
          buffer.appendBuffer(value);
          await ready;
          await keepLive(buffer);
          if (ui.video.paused) ui.video.play().catch(() => {});
        }
        if (source.readyState === "open") source.endOfStream();
        running = null;
        setBusy(false);
        status("The sharer stopped.", "");
        setState("stopped");
      } catch (error) {
        if (controller.signal.aborted || running !== current) return;
        if (error instanceof PipingPgp.PassphraseError && error.kind !== "damaged") {
          finish(error.kind === "wrong-passphrase" && ui.pass.value !== "" ? "The passphrase is wrong." : error.message,
            "error", "wrong-passphrase");
        } else if (playing) {
          // The stream was cut, not ended: the sharer's tab closed or its network went.
          finish("The sharer went away (the stream was cut).", "", "stopped");
        } else {
          finish(`Watching failed: ${error.message || error}`, "error");
        }
      }
    }

    /** Stay near the live edge, and drop what was played long ago. */
    async function keepLive(buffer) {
      const video = ui.video;
      if (buffer.updating || buffer.buffered.length === 0) return;
      const start = buffer.buffered.start(0);
      const end = buffer.buffered.end(buffer.buffered.length - 1);
      // Joined late, or fell behind: jump to just before the newest frame.
      if (end - video.currentTime > MAX_LAG_S || video.currentTime < start) video.currentTime = Math.max(start, end - 0.5);
      if (video.currentTime - start > 2 * KEEP_BEHIND_S) {
        const removed = new Promise((resolve) => buffer.addEventListener("updateend", resolve, { once: true }));
        buffer.remove(start, video.currentTime - KEEP_BEHIND_S);
        await removed;
      }
    }

    ui.screen.addEventListener("click", () => share("screen"));
    ui.camera.addEventListener("click", () => share("camera"));
    ui.watch.addEventListener("click", watch);
    ui.stop.addEventListener("click", () => finish("Stopped.", ""));
    window.addEventListener("pagehide", () => {
      if (running !== null) running.stop();
    });
  }

  Piping.registerMode({ name: "share", start, show: (params) => applyParams(params), wide: true });
})();
