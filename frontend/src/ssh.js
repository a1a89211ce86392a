// Entry of the SSH bundle: a terminal (xterm.js + its fit addon) and an SSH client that runs in the
// page over any byte stream (@microsoft/dev-tunnels-ssh: WebCrypto, custom streams, tested against
// OpenSSH). The protocol (key exchange, ciphers, MACs, authentication, channels) is the library's;
// this file only plugs into its documented extension points what an OpenSSH server and OpenSSH
// keys need and the library lacks:
//   - Ed25519 (user keys and host keys), with the browser's own WebCrypto Ed25519;
//   - OpenSSH's own private key file ("BEGIN OPENSSH PRIVATE KEY", what ssh-keygen writes), also
//     passphrase-protected ones (bcrypt-pbkdf from npm, AES-CTR from WebCrypto); PEM keys
//     (PKCS#1, SEC1, PKCS#8) go to the library's key package;
//   - the "pty-req", "env" and "window-change" channel requests (RFC 4254 6.2, 6.4 and 6.7) a terminal needs.
import {
  BaseStream, BigInt as SshBigInt, ChannelRequestMessage, PublicKeyAlgorithm, SshAlgorithms,
  SshAuthenticationType, SshClientSession, SshDataReader, SshDataWriter, SshSessionConfiguration,
} from "@microsoft/dev-tunnels-ssh";
import { importKey } from "@microsoft/dev-tunnels-ssh-keys";
import { Buffer } from "buffer";
import { pbkdf as bcryptPbkdf } from "bcrypt-pbkdf";
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import xtermCss from "@xterm/xterm/css/xterm.css";

export { Terminal, FitAddon, xtermCss, Buffer };

// ---- Ed25519 through WebCrypto ----

const ED25519 = "ssh-ed25519";

function base64Url(bytes) {
  return Buffer.from(bytes).toString("base64").replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

class Ed25519KeyPair {
  constructor() {
    this.comment = null;
    this.publicKey = null;
    this.privateKey = null;
    this.raw = null; // the 32 bytes of the public key
  }

  get keyAlgorithmName() {
    return ED25519;
  }

  get hasPublicKey() {
    return this.publicKey !== null;
  }

  get hasPrivateKey() {
    return this.privateKey !== null;
  }

  async setPublicKeyBytes(keyBytes) {
    const reader = new SshDataReader(Buffer.from(keyBytes));
    if (reader.readString("ascii") !== ED25519) throw new Error("not an ssh-ed25519 key");
    await this.setRaw(reader.readBinary());
  }

  async setRaw(raw, seed) {
    if (raw.length !== 32) throw new Error("an Ed25519 public key has 32 bytes");
    this.raw = Buffer.from(raw);
    this.publicKey = await crypto.subtle.importKey("raw", this.raw, { name: "Ed25519" }, true, ["verify"]);
    if (seed) {
      const jwk = { kty: "OKP", crv: "Ed25519", x: base64Url(raw), d: base64Url(seed) };
      this.privateKey = await crypto.subtle.importKey("jwk", jwk, { name: "Ed25519" }, false, ["sign"]);
    }
  }

  async getPublicKeyBytes() {
    if (this.raw === null) return null;
    const writer = new SshDataWriter(Buffer.alloc(64));
    writer.writeString(ED25519, "ascii");
    writer.writeBinary(this.raw);
    return writer.toBuffer();
  }

  async generate() {
    throw new Error("generating keys is not supported here");
  }

  async importParameters() {
    throw new Error("use an OpenSSH key file for Ed25519");
  }

  async exportParameters() {
    throw new Error("Ed25519 keys are not exported");
  }

  dispose() {}
}

class Ed25519 extends PublicKeyAlgorithm {
  constructor() {
    super(ED25519, ED25519, "SHA2-512");
  }

  createKeyPair() {
    return new Ed25519KeyPair();
  }

  async generateKeyPair() {
    throw new Error("generating keys is not supported here");
  }

  createSigner(keyPair) {
    return {
      digestLength: 64,
      sign: async (data) => Buffer.from(await crypto.subtle.sign("Ed25519", keyPair.privateKey, data)),
      dispose() {},
    };
  }

  createVerifier(keyPair) {
    return {
      digestLength: 64,
      verify: (data, signature) => crypto.subtle.verify("Ed25519", keyPair.publicKey, signature, data),
      dispose() {},
    };
  }
}

/** Whether this browser's WebCrypto has Ed25519 (Chromium 137+, Firefox 129+, Safari 17+). */
async function hasEd25519() {
  try {
    await crypto.subtle.importKey("raw", new Uint8Array(32), { name: "Ed25519" }, false, ["verify"]);
    return true;
  } catch {
    return false;
  }
}

// ---- the terminal's channel requests ----

/** "pty-req" (RFC 4254 6.2): a terminal of this many columns and rows, no special modes. */
class PtyRequestMessage extends ChannelRequestMessage {
  constructor(term, columns, rows) {
    super("pty-req", true);
    Object.assign(this, { term, columns, rows });
  }

  onWrite(writer) {
    super.onWrite(writer);
    writer.writeString(this.term, "ascii");
    writer.writeUInt32(this.columns);
    writer.writeUInt32(this.rows);
    writer.writeUInt32(0);
    writer.writeUInt32(0);
    writer.writeBinary(Buffer.from([0])); // encoded terminal modes: TTY_OP_END only
  }
}

/** "window-change" (RFC 4254 6.7): the terminal was resized. */
class WindowChangeMessage extends ChannelRequestMessage {
  constructor(columns, rows) {
    super("window-change", false);
    Object.assign(this, { columns, rows });
  }

  onWrite(writer) {
    super.onWrite(writer);
    writer.writeUInt32(this.columns);
    writer.writeUInt32(this.rows);
    writer.writeUInt32(0);
    writer.writeUInt32(0);
  }
}

/**
 * "env" (RFC 4254 6.4): one environment variable, before the shell starts. No reply asked, as
 * OpenSSH's client does it: sshd takes only the names its AcceptEnv lists and ignores the others.
 */
class EnvRequestMessage extends ChannelRequestMessage {
  constructor(name, value) {
    super("env", false);
    Object.assign(this, { name, value });
  }

  onWrite(writer) {
    super.onWrite(writer);
    writer.writeString(this.name, "utf8");
    writer.writeString(this.value, "utf8");
  }
}

// ---- private key files ----

const OPENSSH_MAGIC = "openssh-key-v1\0";

/** A clear error for a key the user gave: the page shows its message as it is. */
export class KeyError extends Error {}

function bigIntOf(reader) {
  return reader.readBigInt();
}

function nativeBig(value) {
  const hex = Buffer.from(value.toBytes({ unsigned: true })).toString("hex");
  return BigInt("0x" + (hex || "0"));
}

function sshBig(value) {
  let hex = value.toString(16);
  if (hex.length % 2) hex = "0" + hex;
  return SshBigInt.fromBytes(Buffer.from(hex, "hex"), { unsigned: true });
}

async function decryptOpenSsh(cipher, kdf, kdfOptions, encrypted, passphrase) {
  if (!passphrase) throw new KeyError("This key is protected by a passphrase: enter it in the key passphrase field.");
  // aes256-ctr with bcrypt is what ssh-keygen has written since OpenSSH 6.5.
  if (kdf !== "bcrypt" || cipher !== "aes256-ctr") {
    throw new KeyError(`This key is encrypted with ${cipher}/${kdf}, which this page cannot read ` +
      "(ssh-keygen -p -f KEY re-encrypts it with aes256-ctr).");
  }
  const options = new SshDataReader(kdfOptions);
  const salt = options.readBinary();
  const rounds = options.readUInt32();
  const pass = Buffer.from(passphrase, "utf8");
  const keyIv = new Uint8Array(48);
  if (bcryptPbkdf(pass, pass.length, salt, salt.length, keyIv, keyIv.length, rounds) !== 0) {
    throw new KeyError("The key's passphrase could not be applied.");
  }
  const key = await crypto.subtle.importKey("raw", keyIv.slice(0, 32), { name: "AES-CTR" }, false, ["decrypt"]);
  const counter = keyIv.slice(32, 48);
  return Buffer.from(await crypto.subtle.decrypt({ name: "AES-CTR", counter, length: 128 }, key, encrypted));
}

async function readOpenSshKey(text, passphrase) {
  const base64 = text.replace(/-----(BEGIN|END) OPENSSH PRIVATE KEY-----/g, "").replace(/\s+/g, "");
  const data = Buffer.from(base64, "base64");
  if (data.subarray(0, OPENSSH_MAGIC.length).toString("latin1") !== OPENSSH_MAGIC) {
    throw new KeyError("This is not an OpenSSH private key.");
  }
  const reader = new SshDataReader(data.subarray(OPENSSH_MAGIC.length));
  const cipher = reader.readString("ascii");
  const kdf = reader.readString("ascii");
  const kdfOptions = reader.readBinary();
  if (reader.readUInt32() !== 1) throw new KeyError("The key file holds several keys: give one.");
  reader.readBinary(); // the public key, again inside the private part
  let secret = reader.readBinary();
  if (cipher !== "none") secret = await decryptOpenSsh(cipher, kdf, kdfOptions, secret, passphrase);
  const inner = new SshDataReader(secret);
  if (inner.readUInt32() !== inner.readUInt32()) {
    throw new KeyError("The key's passphrase is wrong.");
  }
  const type = inner.readString("ascii");
  if (type === ED25519) {
    if (!(await hasEd25519())) throw new KeyError("This browser has no Ed25519 in WebCrypto: use a recent one.");
    const pub = inner.readBinary();
    const secretKey = inner.readBinary(); // seed, then the public key again
    const pair = new Ed25519KeyPair();
    await pair.setRaw(pub, secretKey.subarray(0, 32));
    pair.comment = inner.readString("utf8");
    return pair;
  }
  if (type.startsWith("ecdsa-sha2-")) {
    const curve = inner.readString("ascii");
    const point = inner.readBinary();
    const d = bigIntOf(inner);
    const n = (point.length - 1) / 2;
    const algorithm = { nistp256: "ecdsaSha2Nistp256", nistp384: "ecdsaSha2Nistp384", nistp521: "ecdsaSha2Nistp521" }[curve];
    if (!algorithm) throw new KeyError(`ECDSA keys on ${curve} are not supported here.`);
    const pair = SshAlgorithms.publicKey[algorithm].createKeyPair();
    await pair.importParameters({
      curve: { name: curve },
      x: SshBigInt.fromBytes(point.subarray(1, 1 + n), { unsigned: true }),
      y: SshBigInt.fromBytes(point.subarray(1 + n), { unsigned: true }),
      d,
    });
    return pair;
  }
  if (type === "ssh-rsa") {
    const [modulus, exponent, d, qi, p, q] = [0, 1, 2, 3, 4, 5].map(() => bigIntOf(inner));
    const [dN, pN, qN] = [d, p, q].map(nativeBig);
    const pair = SshAlgorithms.publicKey.rsaWithSha512.createKeyPair();
    await pair.importParameters({
      modulus, exponent, d, p, q, qi,
      dp: sshBig(dN % (pN - 1n)),
      dq: sshBig(dN % (qN - 1n)),
    });
    return pair;
  }
  throw new KeyError(`Keys of type ${type} are not supported here (use Ed25519, ECDSA or RSA).`);
}

/** A key pair from the text of a private key file (OpenSSH's own format, or PEM). */
export async function readPrivateKey(text, passphrase) {
  const trimmed = text.trim();
  if (trimmed.includes("BEGIN OPENSSH PRIVATE KEY")) return readOpenSshKey(trimmed, passphrase);
  if (trimmed.includes("PUBLIC KEY") || trimmed.startsWith("ssh-")) {
    throw new KeyError("This is a public key: give the private key (the file without .pub).");
  }
  try {
    return await importKey(trimmed, passphrase || null);
  } catch (error) {
    throw new KeyError(`The private key could not be read: ${error.message || error}`);
  }
}

// ---- the byte stream the session runs over ----

/**
 * The library's stream interface over two callbacks: `send(bytes)` carries what the client writes,
 * and the owner calls push(bytes) / end() / fail(error) with what comes back.
 */
export class CallbackStream extends BaseStream {
  constructor(send, close) {
    super();
    this.sendBytes = send;
    this.closeTransport = close;
  }

  push(bytes) {
    if (!this.disposed) this.onData(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  }

  end() {
    if (!this.disposed) this.onEnd();
  }

  fail(error) {
    if (!this.disposed) this.onError(error);
  }

  async write(data) {
    if (this.disposed) throw new Error("the connection is closed");
    this.sendBytes(new Uint8Array(data));
  }

  async close(error) {
    if (this.disposed) return;
    this.disposed = true;
    this.closeTransport(error);
    this.fireOnClose(error);
  }
}

// ---- the session ----

/** Base64 SHA-256 of the host key, as OpenSSH prints it ("SHA256:…"). */
async function fingerprint(keyPair) {
  const bytes = await keyPair.getPublicKeyBytes();
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return "SHA256:" + Buffer.from(digest).toString("base64").replace(/=+$/, "");
}

/**
 * Connect over `stream` (a CallbackStream). `checkHostKey({ algorithm, fingerprint })` resolves
 * true to go on. Returns the session once the server is verified (not yet logged in).
 */
export async function connect(stream, { checkHostKey, keepAliveSeconds = 15 }) {
  const config = new SshSessionConfiguration();
  // Ed25519 host keys first when the browser can (OpenSSH's default), the library's others after.
  if (await hasEd25519()) config.publicKeyAlgorithms.unshift(new Ed25519());
  config.keepAliveTimeoutInSeconds = keepAliveSeconds;
  const session = new SshClientSession(config);
  session.onAuthenticating((event) => {
    if (event.authenticationType !== SshAuthenticationType.serverPublicKey) return;
    event.authenticationPromise = (async () => {
      const key = event.publicKey;
      const ok = await checkHostKey({ algorithm: key.keyAlgorithmName, fingerprint: await fingerprint(key) });
      return ok ? {} : null;
    })();
  });
  await session.connect(stream);
  return session;
}

/** Log in with { username, password } or { username, key } (a key pair from readPrivateKey). */
export async function login(session, { username, password, key }) {
  const credentials = key ? { username, publicKeys: [key] } : { username, password };
  return session.authenticate(credentials);
}

/**
 * Open a shell with a terminal of `columns` x `rows` and the variables of `env` (e.g. { LANG }),
 * sent in OpenSSH's order: pty-req, env, shell. `onData(bytes)` gets its output from the very
 * first byte (the window is re-opened after it returns). Returns { channel, resize(columns, rows) }.
 */
export async function openShell(session, { columns, rows, term = "xterm-256color", env = {}, onData }) {
  const channel = await session.openChannel();
  channel.onDataReceived((data) => {
    onData(data);
    channel.adjustWindow(data.length);
  });
  if (!(await channel.request(new PtyRequestMessage(term, columns, rows)))) {
    throw new Error("the server refused a terminal (pty-req)");
  }
  for (const [name, value] of Object.entries(env)) await channel.request(new EnvRequestMessage(name, value));
  const shell = new ChannelRequestMessage("shell", true);
  if (!(await channel.request(shell))) throw new Error("the server refused a shell");
  return {
    channel,
    resize(c, r) {
      return channel.request(new WindowChangeMessage(c, r));
    },
  };
}
