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
 * The sharer cannot read the server's answer while its upload runs (browsers hand out the response
 * of a streamed request once the request is over), so while it waits for its viewers it asks the
 * server about the path: `HEAD PATH` with `Piping-Ask: state` is answered 204 with `Piping-State:`
 * "waiting" while the upload waits and "running" once the viewers are there (docs/protocol.md
 * section 12, beyond the reference). The question joins nothing (no viewer can meet it instead of
 * the share) and no answer is an error, so a waiting sharer logs nothing. Recording starts when the
 * viewers are there, so nothing piles up before and each viewer starts at the live edge. Once they
 * watch, nothing is asked any more: when the last viewer leaves the server drops the upload and
 * answers it ("aborted halfway"), which the page then reads. A server that does not know the
 * question (405), or anything between that refuses it, leaves the sharer recording at once: the
 * server holds the upload until the viewers come.
 *
 * Live ("live: viewers may join any time", docs/protocol.md section 11): the upload is `POST PATH?live`,
 * and a viewer joins whenever it likes, somewhere inside the stream. WebM plays only after its
 * header (EBML, Segment, Tracks: the bytes before the first Cluster), so the sharer keeps that
 * header (a few hundred bytes) and offers it on PATH/live-header as ordinary transfers, one after
 * the other: each waits on the server until a viewer takes it, so every joiner gets its own copy
 * and nothing but the page holds it. The viewer takes the header, then GETs PATH?live, skips to
 * the next Cluster and plays from there; the recorder makes a key frame (so a Cluster) every
 * KEYFRAME_MS. Not with a passphrase: one OpenPGP message cannot be decrypted from its middle.
 */
(() => {
  "use strict";

  // MediaRecorder hands out a piece this often: the delay a viewer sees is about this much more.
  const TIMESLICE_MS = 200;
  // How often the sharer asks whether its viewers are there.
  const PROBE_INTERVAL_MS = 500;
  // A viewer further behind the live edge than this jumps forward (e.g. after joining late).
  const MAX_LAG_S = 3;
  // A key frame this often (it starts a new WebM Cluster): a live joiner waits at most this long, and
  // a viewer whose player jumps to the live edge shows a picture again within it (the recorder's
  // default is one every ~9 s, frozen all that time).
  const KEYFRAME_MS = 1000;
  // Live: what the page holds while no viewer takes the stream (the server pauses the upload then);
  // past it, pieces are dropped up to the next Cluster, so a late viewer starts near the live edge.
  // "&backlog=BYTES" in the fragment changes it.
  const LIVE_BACKLOG_BYTES = 1 << 20;
  // Live: a viewer gives up when this much of the stream has no Cluster in it (not a live share).
  const MAX_SKIP_BYTES = 16 << 20;
  // Live: how often a viewer asks again for the header while another viewer is taking it.
  const HEADER_RETRY_MS = 500;
  const HEADER_TRIES = 240;
  const CANDIDATE_TYPES = [
    'video/webm;codecs="vp8,opus"', 'video/webm;codecs="vp9,opus"', 'video/webm;codecs="vp8"',
    'video/webm;codecs="vp9"', "video/webm",
  ];

  // Set by start(): fills the form from a "#share?path=...&n=...&live=1" link.
  let applyParams = () => {};

  /**
   * Where the first WebM Cluster starts in `bytes`, or -1: its ID (1F 43 B6 75), its size (an EBML
   * number), then its Timecode's ID (E7), which makes a match inside video data unlikely.
   */
  function clusterStart(bytes) {
    for (let i = 0; i + 5 < bytes.length; i += 1) {
      if (bytes[i] !== 0x1f || bytes[i + 1] !== 0x43 || bytes[i + 2] !== 0xb6 || bytes[i + 3] !== 0x75) continue;
      const sizeLength = Math.clz32(bytes[i + 4]) - 23; // 0x80.. -> 1, 0x01 -> 8
      if (sizeLength >= 1 && sizeLength <= 8 && bytes[i + 4 + sizeLength] === 0xe7) return i;
    }
    return -1;
  }

  function concat(a, b) {
    const joined = new Uint8Array(a.length + b.length);
    joined.set(a);
    joined.set(b, a.length);
    return joined;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function start() {
    const $ = Piping.byId;
    const ui = {
      path: $("share-path"), n: $("share-n"), screen: $("share-screen"), camera: $("share-camera"),
      watch: $("share-watch"), stop: $("share-stop"), status: $("share-status"), video: $("share-video"),
      pass: $("share-pass"), linkRow: $("share-link-row"), link: $("share-link"), copy: $("share-copy"),
      live: $("share-live"), liveHint: $("share-live-hint"),
    };
    ui.path.value = Piping.randomPath();
    let running = null; // { stop() }
    let liveBacklog = LIVE_BACKLOG_BYTES;
    applyParams = (params) => {
      if (running !== null) return;
      if (Number(params.get("backlog")) > 0) liveBacklog = Number(params.get("backlog"));
      if (params.get("path")) ui.path.value = params.get("path");
      if (params.get("n")) ui.n.value = params.get("n");
      if (params.has("live")) ui.live.checked = params.get("live") !== "0";
      syncLive();
    };
    // Live takes any number of viewers and no passphrase: those fields do not apply then.
    function syncLive() {
      const live = ui.live.checked;
      ui.liveHint.hidden = !live;
      if (running === null) ui.n.disabled = ui.pass.disabled = live;
    }
    ui.live.addEventListener("change", syncLive);
    ui.copy.addEventListener("click", () => Piping.copyText(ui.link, ui.copy));

    const status = (text, kind) => Piping.setStatus(ui.status, text, kind);
    const setState = (state) => { document.body.dataset.shareState = state; };

    function viewers() {
      return ui.live.checked ? 1 : Math.max(1, Math.floor(Number(ui.n.value) || 1));
    }

    function barePath() {
      const path = Piping.normalizePath(ui.path.value).split("?")[0];
      if (path === "") throw new Error("Enter a path first.");
      return path;
    }

    function url() {
      const path = barePath();
      if (ui.live.checked) {
        // Added after encoding: pathUrl() keeps no "?" but that of "?n=N".
        const live = Piping.pathUrl(path);
        live.search = "live";
        return live.href;
      }
      const n = viewers();
      return Piping.pathUrl(n > 1 ? `${path}?n=${n}` : path).href;
    }

    /** Live: where the sharer offers the WebM header, one copy per joiner. */
    function headerUrl() {
      return Piping.pathUrl(`${barePath()}/live-header`).href;
    }

    /** The page link a viewer opens: this page's Screen share with the path filled in. */
    function viewerLink() {
      const params = new URLSearchParams({ path: Piping.normalizePath(ui.path.value).split("?")[0] });
      if (viewers() > 1) params.set("n", String(viewers()));
      if (ui.live.checked) params.set("live", "1");
      return new URL(`#share?${params}`, document.baseURI).href;
    }

    function setBusy(busy) {
      for (const button of [ui.screen, ui.camera, ui.watch]) button.disabled = busy;
      for (const input of [ui.path, ui.n, ui.pass]) input.disabled = busy;
      ui.stop.hidden = !busy;
      ui.live.disabled = busy;
      if (!busy) syncLive();
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

    /**
     * What the server says of the path (docs/protocol.md section 12): "waiting", "running", "free",
     * "live", or "unknown" when it does not answer the question (another server, a proxy's refusal).
     */
    async function probe() {
      try {
        const response = await fetch(Piping.pathUrl(barePath()).href, {
          method: "HEAD", headers: { "Piping-Ask": "state" }, cache: "no-store",
        });
        const state = response.status === 204 ? response.headers.get("Piping-State") : null;
        return ["waiting", "running", "free", "live"].includes(state) ? state : "unknown";
      } catch {
        return "unknown";
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
      const live = ui.live.checked;
      const passphrase = live ? "" : ui.pass.value;
      let feed;
      // Live, the server reads nothing while no viewer is there: the queue's size tells (see below).
      const plain = new ReadableStream({ start(controller) { feed = controller; } },
        live ? new ByteLengthQueuingStrategy({ highWaterMark: liveBacklog }) : undefined);
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
      const recorder = new MediaRecorder(media, {
        mimeType, videoBitsPerSecond: 1_500_000, videoKeyFrameIntervalDuration: KEYFRAME_MS,
      });
      let sent = 0;
      let state = "waiting";
      let timer = 0;
      const headerOffers = new AbortController();
      const current = {
        stop() {
          clearTimeout(timer);
          headerOffers.abort();
          if (recorder.state !== "inactive") recorder.stop();
          media.getTracks().forEach((track) => track.stop());
          // Let the recorder's last piece out before the body ends.
          setTimeout(() => feed.close(), TIMESLICE_MS);
          ui.video.srcObject = null;
        },
      };
      running = current;
      const what = `your ${source}` + (passphrase !== "" ? ", end-to-end encrypted" : "");
      let joined = 0;
      const liveStatus = () => status(live
        ? `Live: sharing ${what}; viewers may join any time with the link below (${joined} joined so far, ` +
          `${Piping.formatBytes(sent)} sent).`
        // Not a count of who watches now: with several, one may have left (the others go on).
        : `Live: sharing ${what}` + (viewers() > 1 ? ` (started with ${viewers()} viewers, until the last leaves; `
          : " (") + `${Piping.formatBytes(sent)} sent).`, "ok");
      let head = new Uint8Array(0); // live: the first bytes, until the first Cluster shows the header's end
      // Live, when nobody takes the stream: "cutting" sends on up to the next Cluster (pieces end
      // anywhere, even inside an element), "dropping" drops up to a later one once there is room
      // again, so the stream stays whole WebM: Clusters of unknown size, each from a key frame.
      let cut = "none";
      let dropped = 0;
      recorder.addEventListener("dataavailable", async (event) => {
        if (event.data.size === 0 || running !== current) return;
        let bytes = new Uint8Array(await event.data.arrayBuffer());
        if (running !== current) return;
        if (live && head !== null) {
          head = concat(head, bytes);
          const end = clusterStart(head);
          if (end >= 0) {
            offerHeader(head.slice(0, end));
            head = null;
          }
        }
        if (live && cut === "none" && feed.desiredSize <= 0) cut = "cutting";
        if (cut !== "none") {
          let at = clusterStart(bytes);
          if (cut === "cutting") {
            if (at < 0) return enqueue(bytes); // the Cluster under way ends first
            enqueue(bytes.subarray(0, at));
            bytes = bytes.subarray(at);
            at = 0;
            cut = "dropping";
          }
          if (at < 0 || feed.desiredSize <= 0) {
            dropped += bytes.length;
            document.body.dataset.liveDropped = String(dropped); // for whoever looks: the tests do
            return undefined;
          }
          cut = "none";
          bytes = bytes.subarray(at);
        }
        return enqueue(bytes);
      });

      function enqueue(bytes) {
        if (bytes.length === 0) return;
        sent += bytes.length;
        feed.enqueue(bytes);
        liveStatus();
      }

      /** Live: offer the header on PATH/live-header, one ordinary transfer per joiner, until the end. */
      async function offerHeader(header) {
        const headerTarget = headerUrl();
        while (running === current) {
          try {
            const response = await fetch(headerTarget, {
              method: "POST", body: header, headers: { "Content-Type": "application/octet-stream" },
              signal: headerOffers.signal, cache: "no-store",
            });
            // The answer ends once a viewer has taken it.
            const text = await response.text();
            if (running !== current) return;
            if (response.ok && !/\[ERROR\]/.test(text)) {
              joined += 1;
              liveStatus();
            } else {
              await sleep(HEADER_RETRY_MS);
            }
          } catch {
            if (headerOffers.signal.aborted) return;
            await sleep(HEADER_RETRY_MS);
          }
        }
      }
      // The browser's own "Stop sharing" button ends the track: end the stream with it.
      media.getVideoTracks()[0].addEventListener("ended", () => {
        if (running === current) finish("Sharing stopped.", "");
      });
      upload.then(
        async (response) => {
          if (running !== current) return;
          const text = await response.text().catch(() => "");
          if (/aborted halfway/.test(text)) {
            finish(viewers() > 1 ? "All viewers left: sharing stopped." : "The viewer left: sharing stopped.", "",
              "viewer-left");
          } else {
            finish(/\[ERROR\]/.test(text) ? text.trim() : "The share ended.", /\[ERROR\]/.test(text) ? "error" : "");
          }
        },
        (error) => {
          if (running === current) finish(Piping.explainStreamingFailure(error), "error");
        },
      );

      async function watchViewers() {
        if (running !== current) return;
        const seen = await probe();
        if (running !== current) return;
        if (state === "waiting" && seen === "running") {
          state = "live";
          recorder.start(TIMESLICE_MS);
          liveStatus();
          setState("live");
          return; // from now on the upload's answer says when the viewers are gone
        } else if (state === "waiting" && seen === "unknown") {
          // The question is not answered (another server, a proxy, an operator's rule): record at
          // once, as the server holds the upload until the viewers come, and stop asking.
          state = "untracked";
          recorder.start(TIMESLICE_MS);
          setState("live");
          return;
        }
        timer = setTimeout(watchViewers, PROBE_INTERVAL_MS);
      }
      if (live) {
        // Viewers come and go: nothing to wait for, nothing to watch.
        state = "live";
        recorder.start(TIMESLICE_MS);
        setState("live");
      } else {
        timer = setTimeout(watchViewers, PROBE_INTERVAL_MS);
      }

      ui.video.hidden = false;
      ui.video.srcObject = media;
      ui.video.play().catch(() => {});
      setBusy(true);
      ui.link.textContent = viewerLink();
      ui.linkRow.hidden = false;
      if (live) {
        liveStatus();
        return;
      }
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
      const live = ui.live.checked;
      status(viewers() > 1
        ? `Waiting: the video starts once the sharer and all ${viewers()} viewers are on ${target}.`
        : `Waiting for the ${live ? "live " : ""}sharer on ${target}...`, "");
      setState("waiting");
      let playing = false;
      try {
        let response;
        let body;
        if (live) {
          ({ response, body } = await joinLive(target, controller.signal));
        } else {
          response = await fetchShare(target, controller.signal);
          body = response.body;
          if (response.headers.has("Piping-Live-Offset")) {
            // A live share, opened without "live": join it as such (its header first).
            await body.cancel().catch(() => {});
            ui.live.checked = true;
            ({ response, body } = await joinLive(target, controller.signal));
          }
        }
        let type = response.headers.get("Content-Type") || "video/webm";
        const passphrase = live ? "" : ui.pass.value;
        const peeked = await PipingPgp.peek(body);
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
        // Joined late, or fell behind: jump to just before the newest frame.
        const player = await Piping.livePlayer(ui.video, source, type, { maxLagS: MAX_LAG_S, leadS: 0.5 });
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
          await player.append(value);
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

    /** GET the share: its answer comes once the sharer and every viewer are there. */
    async function fetchShare(target, signal) {
      const response = await fetch(target, { signal, cache: "no-store" });
      if (!response.ok) throw new Error((await response.text()).trim() || `HTTP ${response.status}`);
      return response;
    }

    /**
     * Live: the header from the sharer (PATH/live-header), then the stream from where it is now
     * (PATH?live), from its next Cluster on: together a WebM stream that plays.
     */
    async function joinLive(target, signal) {
      let header = null;
      for (let tries = 0; header === null; tries += 1) {
        const answer = await fetch(headerUrl(), { signal, cache: "no-store" });
        // 400 while another viewer is taking its copy: the sharer offers the next one at once.
        if (answer.ok) header = new Uint8Array(await answer.arrayBuffer());
        else if (answer.status !== 400 || tries >= HEADER_TRIES) {
          throw new Error((await answer.text()).trim() || `HTTP ${answer.status}`);
        } else await sleep(HEADER_RETRY_MS);
      }
      const response = await fetch(target, { signal, cache: "no-store" });
      if (!response.ok) throw new Error((await response.text()).trim() || `HTTP ${response.status}`);
      // Where in the stream this viewer came in (for whoever looks: the tests do).
      ui.video.dataset.liveOffset = response.headers.get("Piping-Live-Offset") || "0";
      const reader = response.body.getReader();
      let pending = new Uint8Array(0);
      let skipped = 0;
      let found = false;
      const body = new ReadableStream({
        start(out) {
          out.enqueue(header);
        },
        async pull(out) {
          // Each call enqueues something (or ends): a pull that enqueues nothing is not called again.
          for (;;) {
            const { value, done } = await reader.read();
            if (done) return out.close();
            if (found) return out.enqueue(value);
            pending = concat(pending, value);
            const at = clusterStart(pending);
            if (at >= 0) {
              found = true;
              return out.enqueue(pending.subarray(at));
            }
            skipped += value.length;
            if (skipped > MAX_SKIP_BYTES) throw new Error("the stream has no WebM Cluster: is it a live share?");
            pending = pending.subarray(Math.max(0, pending.length - 16)); // a Cluster's start may be cut in two
          }
        },
        cancel(reason) {
          return reader.cancel(reason);
        },
      });
      return { response, body };
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
