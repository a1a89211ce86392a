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

  /** An error the user can act on: `kind` is "wrong-passphrase", "not-encrypted" or "damaged". */
  class PassphraseError extends Error {
    constructor(kind, message) {
      super(message);
      this.name = "PassphraseError";
      this.kind = kind;
    }
  }

  const ARMOR = new TextEncoder().encode("-----BEGIN PGP MESSAGE-----");

  /**
   * Whether these first bytes of a stream start an encrypted OpenPGP message: a passphrase- or
   * key-encrypted session key packet (tags 3 and 1, in the old or the new packet format; gpg -c
   * writes 0x8c, OpenPGP.js 0xc3), or the armored form.
   */
  function looksEncrypted(bytes) {
    if (bytes.length === 0) return false;
    const first = bytes[0];
    if ((first & 0xc0) === 0xc0) return [1, 3].includes(first & 0x3f);
    if ((first & 0xc0) === 0x80) return [1, 3].includes((first >> 2) & 0x0f);
    return bytes.length >= ARMOR.length && ARMOR.every((byte, i) => bytes[i] === byte);
  }

  /** The first chunk of `stream` (skipping empty ones) and a stream that still yields everything. */
  async function peek(stream) {
    const reader = stream.getReader();
    let first = new Uint8Array(0);
    for (let i = 0; i < 64 && first.length === 0; i += 1) {
      const { value, done } = await reader.read();
      if (done) break;
      first = value;
    }
    const head = first;
    let sentHead = false;
    const whole = new ReadableStream({
      async pull(controller) {
        if (!sentHead) {
          sentHead = true;
          if (head.length > 0) {
            controller.enqueue(head);
            return;
          }
        }
        const { value, done } = await reader.read();
        if (done) controller.close();
        else controller.enqueue(value);
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    });
    return { head, stream: whole };
  }

  /**
   * Decrypt a ReadableStream of a binary OpenPGP message with `passphrase`.
   * Returns { data: ReadableStream of Uint8Array, filename }. The plaintext is released as it comes
   * (a received file is not held whole to be checked first): the integrity check is done at the
   * end, and a failed one errors the stream, which the caller reports.
   *
   * Errors are PassphraseErrors where the cause is known: data that is not OpenPGP at all, and a
   * failure before the first plaintext byte of data that is (OpenPGP.js then reports a format
   * error, since the wrong key yields garbage packets), which is what a wrong passphrase does.
   */
  async function decrypt(stream, passphrase) {
    const openpgp = await library();
    const { head, stream: whole } = await peek(stream);
    if (!looksEncrypted(head)) {
      throw new PassphraseError("not-encrypted", "This data is not encrypted (it is not OpenPGP): clear the passphrase.");
    }
    let released = 0;
    const explain = (error) => {
      if (error instanceof PassphraseError) return error;
      if (released === 0) return new PassphraseError("wrong-passphrase", "The passphrase is wrong.");
      return new PassphraseError("damaged", `The encrypted data was damaged or cut short (${error.message || error}).`);
    };
    let result;
    try {
      const message = await openpgp.readMessage({ binaryMessage: whole });
      result = await openpgp.decrypt({
        message,
        passwords: [passphrase],
        format: "binary",
        config: { allowUnauthenticatedStream: true },
      });
    } catch (error) {
      throw explain(error);
    }
    const reader = result.data.getReader();
    const data = new ReadableStream({
      async pull(controller) {
        try {
          const { value, done } = await reader.read();
          if (done) {
            controller.close();
            return;
          }
          released += value.length;
          controller.enqueue(value);
        } catch (error) {
          controller.error(explain(error));
        }
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    });
    return { data, filename: result.filename || "" };
  }

  /** Decrypt a small complete message (bytes) whole; errors as decrypt()'s. */
  async function decryptBytes(bytes, passphrase) {
    const source = new ReadableStream({
      start(controller) {
        controller.enqueue(bytes);
        controller.close();
      },
    });
    const { data } = await decrypt(source, passphrase);
    return new Uint8Array(await new Response(data).arrayBuffer());
  }

  return Object.freeze({ encrypt, decrypt, decryptBytes, looksEncrypted, peek, PassphraseError });
})();
