/*
 * keyexchange.js: end-to-end encryption without a passphrase, by Piping UI's key exchange (its
 * version 4), so that this page, Piping UI and `piping send/get --exchange` understand each other.
 * docs/key-exchange.md describes the protocol step by step, with the lines of Piping UI it follows.
 *
 * Both sides POST a signed message (an ECDH P-256 public key and a random "main path factor",
 * signed with an ECDSA P-384 key made once per page) on a path derived from the secret path and GET
 * the other's. Each derives the key (the ECDH secret), the main path (from both factors) and the
 * verification code (from both signing keys), which the users compare. The sender then POSTs an
 * encrypted "verified" message, and the data follows OpenPGP-encrypted in numbered chunks
 * ("Piping UI Robust"). Everything is WebCrypto but OpenPGP (pgp.js). Its one global is
 * `PipingKeyExchange`.
 */
const PipingKeyExchange = (() => {
  "use strict";

  const VERSION = 4;
  const FINISH_CONTENT_TYPE = "application/x-piping-finish";
  const INITIAL_CHUNK_BYTES = 1024;
  const CHUNK_BYTES = 1024 * 1024;
  // Piping UI retries forever; here each request is tried a bounded number of times.
  const MAX_TRIES = 8;
  const VERIFIED_RETRY_MS = 2000;
  const VERIFIED_TRIES = 30;
  // A key-exchange message is a few hundred bytes: a peer's larger "message" is refused.
  const MAX_PARCEL_BYTES = 64 * 1024;
  // Piping UI's chunks are about 1 MB: a far larger one is not gathered in the page.
  const MAX_CHUNK_BYTES = 64 * 1024 * 1024;

  const encoder = new TextEncoder();
  let signingKeys = null; // one signing key pair per page, as Piping UI makes one per app

  /** A failure the user can read: the peer's message is unusable, or a side refused the code. */
  class ExchangeError extends Error {
    constructor(message) {
      super(message);
      this.name = "ExchangeError";
    }
  }

  function hex(bytes) {
    return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function base64(bytes) {
    let text = "";
    for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
    return btoa(text);
  }

  function unbase64(text) {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  }

  async function sha256Hex(text) {
    return hex(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
  }

  /** The OpenPGP passphrase Piping UI gives OpenPGP.js for a key: `Uint8Array.toString()`. */
  function passphraseOf(key) {
    return Array.from(key).join(",");
  }

  /** RFC 7638 thumbprint (SHA-256, hex) of an EC JWK: what Piping UI's jwk-thumbprint computes. */
  function thumbprint(jwk) {
    return sha256Hex(JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }));
  }

  async function verificationCode(jwkA, jwkB) {
    const thumbs = [await thumbprint(jwkA), await thumbprint(jwkB)].sort();
    return (await sha256Hex(thumbs.join("-"))).slice(0, 32);
  }

  async function mainPathOf(factorA, factorB) {
    const digest = await crypto.subtle.digest("SHA-256", encoder.encode([factorA, factorB].sort().join("-")));
    return base64(new Uint8Array(digest).slice(0, 16)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=/g, "");
  }

  function url(path) {
    return Piping.pathUrl(path).href;
  }

  function sleep(ms, signal) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, ms);
      signal?.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(new DOMException("aborted", "AbortError"));
      }, { once: true });
    });
  }

  /** A body, refused past `limit` bytes instead of gathered. */
  async function boundedBytes(response, limit) {
    const reader = response.body.getReader();
    const parts = [];
    let size = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      size += value.length;
      if (size > limit) {
        await reader.cancel();
        throw new ExchangeError(`The other side sent more than ${limit} bytes where a key exchange sends less.`);
      }
      parts.push(value);
    }
    return new Uint8Array(await new Blob(parts).arrayBuffer());
  }

  function parseJson(text, what) {
    try {
      return JSON.parse(text);
    } catch {
      throw new ExchangeError(`The other side's ${what} is not JSON: is a key exchange running there?`);
    }
  }

  /**
   * Exchange keys as `role` ("sender" or "receiver") on the secret `path`. Resolves to
   * { key: Uint8Array(32), mainPath, code } once the other side's message arrived and checked out.
   */
  async function exchange(role, path, signal) {
    if (signingKeys === null) {
      signingKeys = crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-384" }, false, ["sign", "verify"]);
    }
    const signing = await signingKeys;
    const ecdh = await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, false, ["deriveKey", "deriveBits"]);
    const factor = hex(await crypto.subtle.digest("SHA-256", crypto.getRandomValues(new Uint8Array(32))));
    const payload = JSON.stringify({
      public_encrypt_jwk: await crypto.subtle.exportKey("jwk", ecdh.publicKey),
      main_path_factor: factor,
    });
    const signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-384" }, signing.privateKey, encoder.encode(payload));
    const signingJwk = await crypto.subtle.exportKey("jwk", signing.publicKey);
    const parcel = { format: "piping_ui_auth", version: VERSION, public_signing_jwk: signingJwk, payload, signature: base64(signature) };
    const [mine, theirs] = role === "sender" ? [path, `${path}/receiver-sender`] : [`${path}/receiver-sender`, path];
    // Indented, as Piping UI sends it (so that someone with curl on the path sees what it is).
    const posted = fetch(url(mine), { method: "POST", body: JSON.stringify(parcel, null, 2), signal });
    const fetched = fetch(url(theirs), { signal, cache: "no-store" });
    const postResponse = await posted;
    if (!postResponse.ok) throw new ExchangeError(`Sending the key failed: ${(await postResponse.text()).trim()}`);
    const [, peerResponse] = await Promise.all([postResponse.text(), fetched]);
    if (!peerResponse.ok) throw new ExchangeError(`Getting the other side's key failed: ${(await peerResponse.text()).trim()}`);
    const peer = parseJson(new TextDecoder().decode(await boundedBytes(peerResponse, MAX_PARCEL_BYTES)), "key-exchange message");
    if (!peer || typeof peer.format !== "string" || !peer.format.startsWith("piping_") || typeof peer.version !== "number") {
      throw new ExchangeError("The other side's message is not a Piping UI key exchange.");
    }
    if (peer.version !== VERSION) {
      throw new ExchangeError(`The other side speaks key exchange version ${peer.version}, this page ${VERSION}: update the older one.`);
    }
    if (typeof peer.payload !== "string" || typeof peer.signature !== "string" || typeof peer.public_signing_jwk !== "object") {
      throw new ExchangeError("The other side's key-exchange message lacks its payload, signature or key.");
    }
    let peerKey;
    try {
      const verifier = await crypto.subtle.importKey("jwk", peer.public_signing_jwk, { name: "ECDSA", namedCurve: "P-384" }, false, ["verify"]);
      const ok = await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-384" }, verifier, unbase64(peer.signature), encoder.encode(peer.payload));
      if (!ok) throw new Error("bad signature");
      const body = JSON.parse(peer.payload);
      if (typeof body.main_path_factor !== "string") throw new Error("no factor");
      peerKey = { factor: body.main_path_factor, ecdh: await crypto.subtle.importKey("jwk", body.public_encrypt_jwk, { name: "ECDH", namedCurve: "P-256" }, false, []) };
    } catch {
      throw new ExchangeError("The other side's key is not signed by it (or is not a valid key): stopped.");
    }
    const bits = await crypto.subtle.deriveBits({ name: "ECDH", public: peerKey.ecdh }, ecdh.privateKey, 256);
    return {
      key: new Uint8Array(bits),
      mainPath: await mainPathOf(factor, peerKey.factor),
      code: await verificationCode(signingJwk, peer.public_signing_jwk),
    };
  }

  function verifiedUrl(mainPath) {
    return sha256Hex(`${mainPath}/verified`).then(url);
  }

  /** The sender's answer to the code: `verified` and what the data is (Piping UI's "data_meta"). */
  async function sendVerified(exchanged, verified, dataMeta, signal) {
    const parcel = encoder.encode(JSON.stringify({ verified, extension: { version: 2, data_meta: dataMeta } }));
    const sealed = await PipingPgp.encrypt(parcel, passphraseOf(exchanged.key));
    const target = await verifiedUrl(exchanged.mainPath);
    for (let tries = 1; ; tries += 1) {
      try {
        const response = await fetch(target, { method: "POST", body: sealed, signal });
        await response.text();
        if (response.ok) return;
      } catch (error) {
        if (signal?.aborted) throw error;
      }
      if (tries >= VERIFIED_TRIES) throw new Error("the receiver did not take the confirmation");
      await sleep(VERIFIED_RETRY_MS, signal);
    }
  }

  /** The receiver's side: resolves to { verified, dataMeta } (dataMeta {} when the sender gave none). */
  async function receiveVerified(exchanged, signal) {
    const target = await verifiedUrl(exchanged.mainPath);
    let sealed = null;
    for (let tries = 1; sealed === null; tries += 1) {
      try {
        const response = await fetch(target, { signal, cache: "no-store" });
        if (response.ok) sealed = await boundedBytes(response, MAX_PARCEL_BYTES);
        else await response.text();
      } catch (error) {
        if (signal?.aborted || error instanceof ExchangeError) throw error;
      }
      if (sealed === null) {
        if (tries >= VERIFIED_TRIES) throw new Error("the sender's confirmation did not come");
        await sleep(VERIFIED_RETRY_MS, signal);
      }
    }
    let parcel;
    try {
      parcel = JSON.parse(new TextDecoder().decode(await PipingPgp.decryptBytes(sealed, passphraseOf(exchanged.key))));
    } catch {
      throw new ExchangeError("The sender's confirmation does not decrypt with the exchanged key.");
    }
    if (!parcel || typeof parcel.verified !== "boolean") throw new ExchangeError("The sender's confirmation is not Piping UI's.");
    const extension = parcel.extension && typeof parcel.extension === "object" ? parcel.extension : {};
    const dataMeta = extension.data_meta && typeof extension.data_meta === "object" ? extension.data_meta : {};
    return { verified: parcel.verified, dataMeta };
  }

  /** POST one chunk (a Blob) until the server took it, trying again after 10 ms, 40 ms, ... */
  async function postChunk(target, body, headers, signal) {
    for (let tries = 0; ; tries += 1) {
      try {
        const response = await fetch(target, { method: "POST", body, headers, signal });
        const text = await response.text();
        if (response.ok && !/\[ERROR\]/.test(text)) return;
      } catch (error) {
        if (signal?.aborted) throw error;
      }
      if (tries + 1 >= MAX_TRIES) throw new Error(`chunk ${target} could not be sent`);
      await sleep(Math.min(10 * 4 ** tries, 30000), signal);
    }
  }

  /**
   * Send a ReadableStream (the encrypted data) to mainPath/1, /2, ... as Piping UI Robust does: a
   * chunk ends with the read that takes it over 1 KB (the first) or 1 MB, then the finish mark.
   * Each chunk is a Blob, so that any connection (HTTP/1.1 too) carries it.
   */
  async function sendChunks(mainPath, stream, signal) {
    const reader = stream.getReader();
    let num = 1;
    let threshold = INITIAL_CHUNK_BYTES;
    let parts = [];
    let size = 0;
    const flush = async () => {
      await postChunk(url(`${mainPath}/${num}`), new Blob(parts), { "Content-Type": "application/octet-stream" }, signal);
      num += 1;
      parts = [];
      size = 0;
      threshold = CHUNK_BYTES;
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parts.push(value);
      size += value.length;
      if (size > threshold) await flush();
    }
    if (parts.length > 0) await flush();
    await postChunk(url(`${mainPath}/${num}`), new Blob([]), { "Content-Type": FINISH_CONTENT_TYPE }, signal);
  }

  /** GET one chunk; null at the finish mark. Tried again as postChunk does. */
  async function getChunk(target, signal) {
    for (let tries = 0; ; tries += 1) {
      try {
        const response = await fetch(target, { signal, cache: "no-store" });
        if (response.ok) {
          if ((response.headers.get("Content-Type") || "").toLowerCase() === FINISH_CONTENT_TYPE) {
            await response.arrayBuffer();
            return null;
          }
          return await boundedBytes(response, MAX_CHUNK_BYTES);
        }
        await response.text();
      } catch (error) {
        if (signal?.aborted) throw error;
      }
      if (tries + 1 >= MAX_TRIES) throw new Error(`chunk ${target} could not be received`);
      await sleep(Math.min(10 * 4 ** tries, 30000), signal);
    }
  }

  /** The bytes of mainPath/1, /2, ... up to the finish mark, as a ReadableStream. */
  function receiveChunks(mainPath, signal) {
    let num = 1;
    return new ReadableStream({
      async pull(controller) {
        const chunk = await getChunk(url(`${mainPath}/${num}`), signal);
        num += 1;
        if (chunk === null) controller.close();
        else controller.enqueue(chunk);
      },
    });
  }

  return Object.freeze({
    exchange, sendVerified, receiveVerified, sendChunks, receiveChunks, passphraseOf, ExchangeError,
  });
})();
