/*
 * pgp.js: end-to-end encryption with a passphrase, OpenPGP as `gpg -c` (and `piping send --pass`)
 * makes it, on streams, so that nothing is whole in memory. OpenPGP.js is loaded only when a
 * passphrase is used (Piping.loadLibrary). Its one global is `PipingPgp`.
 *
 * What is written: a passphrase-encrypted session key (AES-256, iterated and salted S2K) and an
 * integrity-protected (MDC) packet around uncompressed literal data, which `gpg -d` and
 * `piping get --pass` read; what is read: that, and whatever `gpg -c` writes (compressed too).
 */
const PipingPgp = (() => {
  "use strict";

  async function library() {
    return Piping.loadLibrary("openpgp");
  }

  function settings(openpgp) {
    return {
      // SEIPD v1 + MDC: what gpg 2.2+ and the piping client read (v2/AEAD packets they may not).
      aeadProtect: false,
      preferredSymmetricAlgorithm: openpgp.enums.symmetric.aes256,
      preferredCompressionAlgorithm: openpgp.enums.compression.uncompressed,
    };
  }

  /**
   * Encrypt a stream (a ReadableStream of Uint8Array) or bytes with `passphrase`.
   * Returns a ReadableStream of the binary OpenPGP message (or a Uint8Array for bytes).
   */
  async function encrypt(data, passphrase, filename = "") {
    const openpgp = await library();
    const message = await openpgp.createMessage({ binary: data, filename, format: "binary" });
    return openpgp.encrypt({ message, passwords: [passphrase], format: "binary", config: settings(openpgp) });
  }

  /**
   * Decrypt a ReadableStream of a binary OpenPGP message with `passphrase`.
   * Returns { data: ReadableStream of Uint8Array, filename }. The plaintext is released as it comes
   * (a received file is not held whole to be checked first): the integrity check is done at the
   * end, and a failed one errors the stream, which the caller reports.
   */
  async function decrypt(stream, passphrase) {
    const openpgp = await library();
    const message = await openpgp.readMessage({ binaryMessage: stream });
    const result = await openpgp.decrypt({
      message,
      passwords: [passphrase],
      format: "binary",
      config: { allowUnauthenticatedStream: true },
    });
    return { data: result.data, filename: result.filename || "" };
  }

  return Object.freeze({ encrypt, decrypt });
})();
