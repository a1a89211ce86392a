/*
 * share.js: the "share" mode. One side captures its screen (getDisplayMedia) or camera
 * (getUserMedia), records it with MediaRecorder into WebM pieces and streams them as one long
 * upload (fetch() with a ReadableStream body, HTTP/2 only); viewers GET the same path and play it
 * live with Media Source Extensions. `n` viewers at once: the path gets `?n=N` on both sides.
 */
(() => {
  "use strict";

  // MediaRecorder hands out a piece this often: the delay a viewer sees is about this much more.
  const TIMESLICE_MS = 200;
  // A viewer further behind the live edge than this jumps forward (e.g. after joining late).
  const MAX_LAG_S = 3;
  // Played media older than this is dropped from the viewer's buffer, so memory stays bounded.
  const KEEP_BEHIND_S = 20;
  const CANDIDATE_TYPES = [
    'video/webm;codecs="vp8,opus"', 'video/webm;codecs="vp9,opus"', 'video/webm;codecs="vp8"',
    'video/webm;codecs="vp9"', "video/webm",
  ];

  function start() {
    const $ = Piping.byId;
    const ui = {
      path: $("share-path"), n: $("share-n"), screen: $("share-screen"), camera: $("share-camera"),
      watch: $("share-watch"), stop: $("share-stop"), status: $("share-status"), video: $("share-video"),
    };
    const preset = new URLSearchParams(location.hash.split("?")[1] || "");
    ui.path.value = preset.get("path") || Piping.randomPath();
    if (preset.get("n")) ui.n.value = preset.get("n");
    let running = null; // { stop() }

    const status = (text, kind) => Piping.setStatus(ui.status, text, kind);

    function url() {
      const path = Piping.normalizePath(ui.path.value).split("?")[0];
      if (path === "") throw new Error("Enter a path first.");
      const n = Math.max(1, Math.floor(Number(ui.n.value) || 1));
      return Piping.pathUrl(n > 1 ? `${path}?n=${n}` : path).href;
    }

    function setBusy(busy) {
      for (const button of [ui.screen, ui.camera, ui.watch]) button.disabled = busy;
      ui.path.disabled = busy;
      ui.n.disabled = busy;
      ui.stop.hidden = !busy;
    }

    function finish(text, kind) {
      if (running !== null) {
        const current = running;
        running = null;
        current.stop();
      }
      setBusy(false);
      status(text, kind);
      document.body.dataset.shareState = kind === "error" ? "failed" : "stopped";
    }

    // ---- sharing ----

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
        document.body.dataset.shareState = "unsupported";
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
      const upload = Piping.streamingPost(target, { contentType: mimeType });
      const recorder = new MediaRecorder(media, { mimeType, videoBitsPerSecond: 1_500_000 });
      let sent = 0;
      recorder.addEventListener("dataavailable", async (event) => {
        if (event.data.size === 0) return;
        const bytes = new Uint8Array(await event.data.arrayBuffer());
        sent += bytes.length;
        upload.write(bytes);
        status(`Sharing your ${source} to ${target} (${Piping.formatBytes(sent)} so far). Viewers open ` +
          `this page's Screen share, with path "${Piping.normalizePath(ui.path.value)}" and ${ui.n.value} viewer(s).`, "ok");
      });
      // The browser's own "Stop sharing" button ends the track: end the stream with it.
      media.getVideoTracks()[0].addEventListener("ended", () => finish("Sharing stopped.", ""));
      running = {
        stop() {
          if (recorder.state !== "inactive") recorder.stop();
          media.getTracks().forEach((track) => track.stop());
          // Let the recorder's last piece out before the body ends.
          setTimeout(() => upload.close(), TIMESLICE_MS);
          ui.video.srcObject = null;
        },
      };
      upload.done.then(
        () => {},
        (error) => {
          if (running !== null) finish(Piping.explainStreamingFailure(error), "error");
        },
      );
      ui.video.hidden = false;
      ui.video.srcObject = media;
      ui.video.play().catch(() => {});
      recorder.start(TIMESLICE_MS);
      setBusy(true);
      status(`Sharing your ${source}: waiting for ${ui.n.value} viewer(s) on ${target}...`, "");
      document.body.dataset.shareState = "sharing";
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
      running = {
        stop() {
          controller.abort();
          ui.video.pause();
          ui.video.removeAttribute("src");
          ui.video.load();
          URL.revokeObjectURL(objectUrl);
        },
      };
      setBusy(true);
      status(`Waiting for the sharer on ${target}...`, "");
      document.body.dataset.shareState = "waiting";
      try {
        const response = await fetch(target, { signal: controller.signal, cache: "no-store" });
        if (!response.ok) throw new Error((await response.text()).trim() || `HTTP ${response.status}`);
        const type = response.headers.get("Content-Type") || "video/webm";
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
        status("Playing the shared screen live.", "ok");
        document.body.dataset.shareState = "playing";
        const reader = response.body.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
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
        document.body.dataset.shareState = "stopped";
      } catch (error) {
        if (!controller.signal.aborted) finish(`Watching failed: ${error.message || error}`, "error");
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
  }

  Piping.registerMode({ name: "share", start, wide: true });
})();
