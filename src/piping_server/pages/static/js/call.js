/*
 * call.js: the "call" mode. Two people, each sending camera and microphone and seeing the other, in
 * one view. Each side records its camera and microphone with MediaRecorder into WebM pieces and
 * streams them as one long upload (fetch() with a ReadableStream body, HTTP/2 only), as the share
 * mode does, and plays the other's stream live with Media Source Extensions.
 *
 * One room name gives the two paths, and the button each person presses gives the direction:
 *   "I start the call"  sends on ROOM/call-1 and plays ROOM/call-2;
 *   "I join"            sends on ROOM/call-2 and plays ROOM/call-1.
 * With a passphrase both streams are OpenPGP messages (as `gpg -c` writes), as in the share mode:
 * both sides enter the same one.
 */
(() => {
  "use strict";

  // MediaRecorder hands out a piece this often: the delay the other side sees is about this much more.
  const TIMESLICE_MS = 200;
  // Further behind the live edge than this, the player jumps forward.
  const MAX_LAG_S = 2;
  // A key frame this often: a player that jumps to the live edge (or drops a piece) can only show a
  // picture again from the next key frame, and the recorder's default is one every ~9 s.
  const KEYFRAME_MS = 1000;
  const CANDIDATE_TYPES = ['video/webm;codecs="vp8,opus"', 'video/webm;codecs="vp9,opus"', "video/webm"];
  const PATHS = { first: ["call-1", "call-2"], second: ["call-2", "call-1"] };
  // How long a call that ended waits for its requests to end by themselves before it aborts them.
  const SETTLE_MS = 3000;

  // Set by start(): fills the room from a "#call?room=x" link.
  let applyParams = () => {};

  function start() {
    const $ = Piping.byId;
    const ui = {
      room: $("call-room"), pass: $("call-pass"), start: $("call-start"), join: $("call-join"),
      hangup: $("call-hangup"), mute: $("call-mute"), camera: $("call-camera"), status: $("call-status"),
      remote: $("call-remote"), local: $("call-local"), view: $("call-view"),
    };
    ui.room.value = Piping.randomPath();
    // The call in progress: { media, recorder, feed, controller, playController, uploadDone, playDone, objectUrl }
    let call = null;
    // Runs on every showing, so a "#call?room=x" link opened in a page already open fills the form
    // too; never during a call.
    applyParams = (params) => {
      if (params.get("room") && call === null) ui.room.value = params.get("room");
    };

    const status = (text, kind) => Piping.setStatus(ui.status, text, kind);
    const setState = (state) => {
      document.body.dataset.callState = state;
    };

    function setBusy(busy) {
      ui.start.disabled = ui.join.disabled = ui.room.disabled = ui.pass.disabled = busy;
      ui.hangup.hidden = !busy;
      ui.mute.disabled = ui.camera.disabled = !busy;
      if (!busy) {
        setPressed(ui.mute, false, "Mute", "Unmute");
        setPressed(ui.camera, false, "Camera off", "Camera on");
      }
    }

    function setPressed(button, pressed, off, on) {
      button.setAttribute("aria-pressed", String(pressed));
      button.textContent = pressed ? on : off;
    }

    /** End the call here: stop the camera, the upload and the player. */
    function finish(text, kind, state) {
      const current = call;
      call = null;
      if (current !== null) {
        if (current.recorder && current.recorder.state !== "inactive") current.recorder.stop();
        current.media.getTracks().forEach((track) => track.stop());
        if (current.feed) {
          try {
            current.feed.close();
          } catch {
            // already closed or errored
          }
        }
        // The upload was closed above: the other side sees a clean end, and the server answers it
        // (or has already). A request still running after a moment (a cut network) is aborted; the
        // other side's stream at once when this side hangs up (its own choice), else it ends by itself.
        const settle = (done) => Promise.race([done, new Promise((resolve) => setTimeout(resolve, SETTLE_MS))]);
        settle(current.uploadDone).then(() => current.controller.abort());
        if (state === "ended" || state === "failed" || state === "busy") current.playController.abort();
        else settle(current.playDone).then(() => current.playController.abort());
        ui.local.srcObject = null;
        ui.remote.pause();
        ui.remote.removeAttribute("src");
        ui.remote.load();
        if (current.objectUrl) URL.revokeObjectURL(current.objectUrl);
      }
      // No empty black player (and grey self-view) before or after a call.
      ui.view.hidden = true;
      setBusy(false);
      status(text, kind);
      setState(state);
    }

    async function begin(role) {
      if (call !== null) return;
      const room = Piping.normalizePath(ui.room.value).split("?")[0].replace(/\/+$/, "");
      if (room === "") {
        status("Enter a room name first.", "error");
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
        media = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
      } catch (error) {
        status(`No camera or microphone: ${error.message || error}`, "error");
        return;
      }
      const mimeType = CANDIDATE_TYPES.find((type) => MediaRecorder.isTypeSupported(type));
      if (!mimeType) {
        media.getTracks().forEach((track) => track.stop());
        status("This browser cannot record WebM video (MediaRecorder).", "error");
        return;
      }
      const [sendPath, receivePath] = PATHS[role].map((name) => `${room}/${name}`);
      // One controller for the upload, one for the other side's stream: they end at different times.
      const current = {
        media, controller: new AbortController(), playController: new AbortController(), role,
        uploadDone: Promise.resolve(), playDone: Promise.resolve(),
      };
      call = current;
      setBusy(true);
      ui.local.srcObject = media;
      ui.local.play().catch(() => {});
      ui.view.hidden = false;
      status(`Calling in room "${room}": waiting for the other side to ` +
        `${role === "first" ? "press \"I join\"" : "be there (it presses \"I start the call\")"}...`, "");
      setState("waiting");
      const passphrase = ui.pass.value;
      try {
        await send(current, Piping.pathUrl(sendPath).href, mimeType, passphrase);
      } catch (error) {
        if (call === current) finish(`The call could not start: ${error.message || error}`, "error", "failed");
        return;
      }
      current.playDone = play(current, Piping.pathUrl(receivePath).href, passphrase);
    }

    /** The server refused a path of the room: someone already has that side of the call. */
    function busy(role) {
      return `Someone else is already in this room as the one who ${role === "first" ? "starts" : "joins"}: ` +
        `if that is not you, press "${role === "first" ? "I join" : "I start the call"}" instead, or pick ` +
        "another room name.";
    }

    // ---- sending ----

    async function send(current, url, mimeType, passphrase) {
      const plain = new ReadableStream({ start(controller) { current.feed = controller; } });
      // The media type rides inside the encrypted message (its file name): the server sees none of it.
      const body = passphrase !== "" ? await PipingPgp.encrypt(plain, passphrase, mimeType) : plain;
      const upload = fetch(url, {
        method: "POST", body, duplex: "half", signal: current.controller.signal,
        headers: { "Content-Type": passphrase !== "" ? "application/octet-stream" : mimeType },
      });
      const recorder = new MediaRecorder(current.media, {
        mimeType, videoBitsPerSecond: 1_000_000, videoKeyFrameIntervalDuration: KEYFRAME_MS,
      });
      current.recorder = recorder;
      // Settled once the server's answer has been read to its end (after the body was closed).
      current.uploadDone = upload.then((response) => response.clone().text(), () => {}).catch(() => {});
      recorder.addEventListener("dataavailable", async (event) => {
        if (event.data.size === 0 || call !== current) return;
        const bytes = new Uint8Array(await event.data.arrayBuffer());
        if (call === current) current.feed.enqueue(bytes);
      });
      upload.then(
        async (response) => {
          if (!response.ok && call === current) {
            finish(busy(current.role), "error", "busy");
            return;
          }
          const text = await response.text().catch(() => "");
          if (call !== current) return;
          // The server answers the sender at the end: the other side stopped taking the stream.
          if (/\[ERROR\]/.test(text)) finish(`The call failed: ${text.trim()}`, "error", "failed");
          else finish("The other side left the call.", "", "peer-left");
        },
        (error) => {
          if (call !== current) return;
          if (current.remoteSeen) finish("The other side left the call.", "", "peer-left");
          else finish(Piping.explainStreamingFailure(error), "error", "failed");
        },
      );
      recorder.start(TIMESLICE_MS);
    }

    // ---- playing the other side ----

    async function play(current, url, passphrase) {
      const source = new MediaSource();
      current.objectUrl = URL.createObjectURL(source);
      try {
        const response = await fetch(url, { signal: current.playController.signal, cache: "no-store" });
        if (!response.ok) {
          if (call === current) finish(busy(current.role), "error", "busy");
          return;
        }
        let type = response.headers.get("Content-Type") || "video/webm";
        let stream = response.body;
        if (passphrase !== "") {
          const decrypted = await PipingPgp.decrypt(stream, passphrase).catch(() => {
            throw new Error("the other side's stream cannot be decrypted: the passphrases differ, or it sets none");
          });
          stream = decrypted.data;
          type = decrypted.filename || "video/webm";
        } else if (type === "application/octet-stream") {
          throw new Error("the other side encrypts its stream: enter the same passphrase, then call again");
        }
        if (!window.MediaSource || !MediaSource.isTypeSupported(type)) {
          throw new Error(`this browser cannot play ${type} live (Media Source Extensions)`);
        }
        ui.remote.src = current.objectUrl;
        const player = await Piping.livePlayer(ui.remote, source, type, { maxLagS: MAX_LAG_S, leadS: 0.3 });
        const reader = stream.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          if (call !== current) return;
          if (!current.remoteSeen) {
            current.remoteSeen = true;
            status("In the call" + (passphrase !== "" ? " (end-to-end encrypted)." : "."), "ok");
            setState("in-call");
          }
          await player.append(value);
        }
        if (call === current) finish("The other side left the call.", "", "peer-left");
      } catch (error) {
        if (call !== current) return;
        // A stream cut after it played: the other side's tab closed or its network went.
        if (current.remoteSeen) finish("The other side left the call.", "", "peer-left");
        else finish(`The call failed: ${error.message || error}`, "error", "failed");
      }
    }

    // ---- controls ----

    ui.start.addEventListener("click", () => begin("first"));
    ui.join.addEventListener("click", () => begin("second"));
    ui.hangup.addEventListener("click", () => finish("You left the call.", "", "ended"));
    ui.mute.addEventListener("click", () => {
      if (call === null) return;
      const muted = ui.mute.getAttribute("aria-pressed") !== "true";
      // A disabled track records silence: the stream goes on, the other side hears nothing.
      call.media.getAudioTracks().forEach((track) => { track.enabled = !muted; });
      setPressed(ui.mute, muted, "Mute", "Unmute");
    });
    ui.camera.addEventListener("click", () => {
      if (call === null) return;
      const off = ui.camera.getAttribute("aria-pressed") !== "true";
      // A disabled video track records black frames.
      call.media.getVideoTracks().forEach((track) => { track.enabled = !off; });
      setPressed(ui.camera, off, "Camera off", "Camera on");
    });
    // Closing the tab ends the upload, which the other side sees as the end of the call.
    window.addEventListener("pagehide", () => {
      if (call !== null) finish("You left the call.", "", "ended");
    });
  }

  Piping.registerMode({ name: "call", start, show: (params) => applyParams(params), wide: true });
})();
