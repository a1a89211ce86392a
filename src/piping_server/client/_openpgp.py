"""Streaming OpenPGP symmetric (passphrase) encryption, as used by ``gpg -c`` and the Piping UI app.

Written from RFC 4880 / RFC 9580; only what passphrase encryption needs:

* encrypt: SKESK v4 (AES-256, iterated+salted S2K with SHA-256) followed by a SEIPD v1 packet
  (AES-256 CFB, MDC) holding an uncompressed literal data packet. Both the SEIPD and the literal packet
  use partial body lengths, so the output is produced while the input streams in, in constant memory.
  This is the shape openpgp.js (Piping UI, armor off) produces, and ``gpg -d`` reads it.
* decrypt: SKESK v4 (simple, salted or iterated S2K; with or without an encrypted session key), SEIPD v1
  with any AES/Camellia key size, old and new packet headers, partial and indeterminate lengths,
  compressed packets (ZIP, ZLIB, BZip2: ``gpg -c`` compresses by default), literal data. The MDC is
  checked at the very end: plaintext is released before that (streaming), so a caller that writes a
  file must delete it when :meth:`Decryptor.close` raises.

Integrity-less (SED, tag 9) data is refused, as modern gpg does. AEAD packets are not supported.
"""

from __future__ import annotations

import bz2
import hashlib
import hmac
import os
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms

try:  # cryptography >= 47 moved CFB (OpenPGP's mode) and Camellia to "decrepit"; the old names warn.
    from cryptography.hazmat.decrepit.ciphers.algorithms import Camellia
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import Camellia  # type: ignore[assignment,no-redef,unused-ignore]
    from cryptography.hazmat.primitives.ciphers.modes import CFB  # type: ignore[assignment,no-redef,unused-ignore]

from ._errors import BadPassphraseError, DecryptionError, IntegrityError

__all__ = ["Decryptor", "Encryptor", "decrypt_bytes", "encrypt_bytes"]

# Algorithm registries (RFC 9580 section 9).
_CIPHERS: dict[int, tuple[str, int]] = {
    7: ("AES", 16),
    8: ("AES", 24),
    9: ("AES", 32),
    11: ("Camellia", 16),
    12: ("Camellia", 24),
    13: ("Camellia", 32),
}
_HASHES: dict[int, str] = {1: "md5", 2: "sha1", 3: "ripemd160", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}

_AES256 = 9
_SHA256 = 8
# 0xE0 encodes 16,777,216 hashed bytes: what openpgp.js uses; about 40 ms of SHA-256.
_S2K_COUNT_BYTE = 0xE0
_MDC_HEADER = b"\xd3\x14"
_MDC_LEN = 22
_MAX_NESTING = 8


#: below this, hashing in another thread costs more than it saves
_PARALLEL_HASH_MIN = 64 * 1024
_hash_pool: ThreadPoolExecutor | None = None
_hash_pool_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _hash_pool
    with _hash_pool_lock:
        if _hash_pool is None:
            _hash_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="piping-mdc")
        return _hash_pool


class _BehindHash:
    """The MDC's SHA-1, computed in a worker thread beside the cipher.

    SHA-1 and AES-CFB both release the GIL on large buffers, and the cipher is serial (each block
    depends on the one before): hashing a chunk while the caller encrypts or decrypts it uses a
    second core. At most one chunk is in flight, so the order holds and memory stays bounded; the
    caller must not modify a buffer it passed.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha1()
        self._pending: Future[None] | None = None

    def _settle(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def update(self, data: bytes | memoryview) -> None:
        self._settle()
        if len(data) < _PARALLEL_HASH_MIN:
            self._hash.update(data)
        else:
            self._pending = _pool().submit(self._hash.update, data)

    def digest(self) -> bytes:
        self._settle()
        return self._hash.digest()


def _s2k_count(c: int) -> int:
    return (16 + (c & 15)) << ((c >> 4) + 6)


def _block_cipher(algo: int, key: bytes) -> algorithms.AES | Camellia:
    name, _ = _CIPHERS[algo]
    return algorithms.AES(key) if name == "AES" else Camellia(key)


def _cfb(algo: int, key: bytes, encrypt: bool) -> CipherContext:
    cipher = Cipher(_block_cipher(algo, key), CFB(b"\0" * 16))
    return cipher.encryptor() if encrypt else cipher.decryptor()


def s2k(hash_algo: int, salt: bytes, passphrase: bytes, count: int | None, key_len: int) -> bytes:
    """Derive a key (RFC 9580 3.7.1): simple (no salt), salted, or iterated+salted (``count`` bytes hashed)."""
    name = _HASHES.get(hash_algo)
    if name is None:
        raise DecryptionError(f"unsupported S2K hash algorithm {hash_algo}")
    data = salt + passphrase
    total = len(data) if count is None else max(count, len(data))
    # Feed the repeated salt+passphrase in large blocks: hashing 65 MB byte-string by byte-string would be slow.
    reps = max(1, (1 << 16) // max(1, len(data)))
    block = data * reps
    out = b""
    preload = 0
    while len(out) < key_len:
        h = hashlib.new(name)
        h.update(b"\0" * preload)
        remaining = total
        if data:
            while remaining >= len(block):
                h.update(block)
                remaining -= len(block)
            h.update(block[:remaining])
        out += h.digest()
        preload += 1
    return out[:key_len]


def _encode_length(n: int) -> bytes:
    if n < 192:
        return bytes([n])
    if n < 8384:
        n -= 192
        return bytes([(n >> 8) + 192, n & 0xFF])
    return b"\xff" + n.to_bytes(4, "big")


def _packet(tag: int, body: bytes) -> bytes:
    return bytes([0xC0 | tag]) + _encode_length(len(body)) + body


class _PartialWriter:
    """Frames a packet body of unknown length with partial body lengths (2**power bytes per chunk)."""

    def __init__(self, tag: int, power: int = 16) -> None:
        self._tag = bytes([0xC0 | tag])
        self._power = power
        self._chunk = 1 << power
        self._buf = bytearray()
        self._started = False

    def write(self, data: bytes) -> bytes:
        buf, chunk = self._buf, self._chunk
        if len(buf) + len(data) <= chunk:
            buf += data
            return b""
        # Whole chunks are sliced from ``data`` as they are and joined once: one copy per byte.
        head = bytes([0xE0 | self._power])
        parts: list[bytes | memoryview] = []
        if not self._started:
            parts.append(self._tag)
            self._started = True
        view = memoryview(data)
        pos = 0
        if buf:
            pos = chunk - len(buf)
            parts += [head, bytes(buf), view[:pos]]
            buf.clear()
        # Keep at least one byte back: the packet must end with a definite-length chunk.
        while len(data) - pos > chunk:
            parts += [head, view[pos : pos + chunk]]
            pos += chunk
        buf += view[pos:]
        return b"".join(parts)

    def finish(self) -> bytes:
        out = b"" if self._started else self._tag
        body = bytes(self._buf)
        self._buf.clear()
        return out + _encode_length(len(body)) + body


class Encryptor:
    """Incremental encryptor: ``start()``, then ``update(data)`` for each chunk, then ``finish()``."""

    def __init__(self, passphrase: str, filename: str = "", *, power: int = 16) -> None:
        if not passphrase:
            raise ValueError("empty passphrase")
        self._passphrase = passphrase.encode("utf-8")
        self._filename = filename.encode("utf-8")[:255]
        self._power = power

    def start(self) -> bytes:
        salt = os.urandom(8)
        key = s2k(_SHA256, salt, self._passphrase, _s2k_count(_S2K_COUNT_BYTE), 32)
        skesk = _packet(3, bytes([4, _AES256, 3, _SHA256]) + salt + bytes([_S2K_COUNT_BYTE]))
        self._cipher = _cfb(_AES256, key, encrypt=True)
        self._mdc = _BehindHash()
        self._seipd = _PartialWriter(18, self._power)
        self._literal = _PartialWriter(11, self._power)
        prefix = os.urandom(16)
        prefix += prefix[-2:]  # the repeated bytes let a decryptor spot a wrong key at once
        out = skesk + self._seipd.write(b"\x01") + self._seal(prefix)
        header = b"b" + bytes([len(self._filename)]) + self._filename + int(time.time()).to_bytes(4, "big")
        return out + self._seal(self._literal.write(header))

    def _seal(self, plain: bytes) -> bytes:
        if not plain:
            return b""
        self._mdc.update(plain)
        return self._seipd.write(self._cipher.update(plain))

    def update(self, data: bytes) -> bytes:
        return self._seal(self._literal.write(data))

    def finish(self) -> bytes:
        out = self._seal(self._literal.finish())
        self._mdc.update(_MDC_HEADER)
        mdc = _MDC_HEADER + self._mdc.digest()
        out += self._seipd.write(self._cipher.update(mdc) + self._cipher.finalize())
        return out + self._seipd.finish()


# ---------------------------------------------------------------------------------------------- decryption


class _Handler(Protocol):
    def start(self, tag: int) -> None: ...
    def body(self, data: _Bytes) -> None: ...
    def end(self) -> None: ...


_HEADER, _BODY, _LENGTH = 0, 1, 2

#: what the parsers pass along: views into the decrypted chunks, so that bodies are not copied at each layer
_Bytes = bytes | memoryview


class _Splitter:
    """Push parser that cuts a byte stream into packets and hands their (de-chunked) bodies to a handler."""

    def __init__(self, handler: _Handler) -> None:
        self._handler = handler
        self._state = _HEADER
        self._pending = b""
        self._remaining = 0
        self._partial = False
        self._indeterminate = False

    def _parse_new_length(self, data: _Bytes, pos: int) -> int | None:
        """Parse a new-format length at ``pos``; set remaining/partial; return the new position."""
        if pos >= len(data):
            return None
        o1 = data[pos]
        if o1 < 192:
            self._remaining, self._partial = o1, False
            return pos + 1
        if o1 < 224:
            if pos + 2 > len(data):
                return None
            self._remaining, self._partial = ((o1 - 192) << 8) + data[pos + 1] + 192, False
            return pos + 2
        if o1 == 255:
            if pos + 5 > len(data):
                return None
            self._remaining, self._partial = int.from_bytes(data[pos + 1 : pos + 5], "big"), False
            return pos + 5
        self._remaining, self._partial = 1 << (o1 & 0x1F), True
        return pos + 1

    def _parse_header(self, data: _Bytes, pos: int) -> int | None:
        ctb = data[pos]
        if not ctb & 0x80:
            raise DecryptionError("the data is not an OpenPGP message (not encrypted, or ASCII-armored)")
        self._indeterminate = False
        if ctb & 0x40:
            tag = ctb & 0x3F
            new_pos = self._parse_new_length(data, pos + 1)
            if new_pos is None:
                return None
        else:
            tag, ltype = (ctb >> 2) & 0x0F, ctb & 3
            if ltype == 3:
                self._indeterminate, self._partial, self._remaining = True, False, 0
                new_pos = pos + 1
            else:
                size = (1, 2, 4)[ltype]
                if pos + 1 + size > len(data):
                    return None
                self._remaining = int.from_bytes(data[pos + 1 : pos + 1 + size], "big")
                self._partial = False
                new_pos = pos + 1 + size
        self._handler.start(tag)
        return new_pos

    def feed(self, data: _Bytes) -> None:
        if self._pending:
            data, self._pending = self._pending + data, b""
        pos, n = 0, len(data)
        while True:
            if self._state == _BODY:
                if self._indeterminate:
                    if pos < n:
                        self._handler.body(data[pos:])
                    return
                take = min(self._remaining, n - pos)
                if take:
                    self._handler.body(data[pos : pos + take])
                    pos += take
                    self._remaining -= take
                if self._remaining:
                    return
                if self._partial:
                    self._state = _LENGTH
                else:
                    self._handler.end()
                    self._state = _HEADER
            if pos >= n:
                return
            parsed = self._parse_header(data, pos) if self._state == _HEADER else self._parse_new_length(data, pos)
            if parsed is None:
                self._pending = bytes(data[pos:])
                return
            pos = parsed
            self._state = _BODY

    def close(self) -> None:
        if self._state == _BODY and self._indeterminate:
            self._handler.end()
            self._state = _HEADER
        if self._state != _HEADER or self._pending:
            raise IntegrityError("the encrypted stream is truncated")


_Sink = Callable[[_Bytes], None]


class _MessageHandler:
    """Plaintext layer: literal data (output), compressed data (recursed), signatures (skipped)."""

    def __init__(self, out: _Sink, owner: Decryptor, depth: int = 0) -> None:
        self._out = out
        self._owner = owner
        self._depth = depth
        self._tag = -1
        self._header = b""
        self._header_done = False
        self._zlib: zlib._Decompress | None = None
        self._bz2: bz2.BZ2Decompressor | None = None
        self._algo = -1
        self._nested: _Splitter | None = None
        self.saw_literal = False

    def start(self, tag: int) -> None:
        self._tag = tag
        self._header = b""
        self._header_done = False
        if tag == 8 and self._depth >= _MAX_NESTING:
            raise DecryptionError("too deeply nested compressed packets")
        if tag not in (8, 11, 2, 4):
            raise DecryptionError(f"unexpected OpenPGP packet (tag {tag}) inside the encrypted data")

    def body(self, data: _Bytes) -> None:
        if self._tag == 11:
            self._literal_body(data)
        elif self._tag == 8:
            self._compressed_body(data)

    def _literal_body(self, data: _Bytes) -> None:
        if not self._header_done:
            self._header += data
            if len(self._header) < 2 or len(self._header) < 6 + self._header[1]:
                return
            name_len = self._header[1]
            self._owner.filename = self._header[2 : 2 + name_len].decode("utf-8", "replace")
            data = self._header[6 + name_len :]
            self._header_done = True
            self.saw_literal = True
        if data:
            self._out(data)

    def _compressed_body(self, data: _Bytes) -> None:
        if self._algo < 0:
            self._algo = data[0]
            data = data[1:]
            if self._algo == 1:
                self._zlib = zlib.decompressobj(-15)
            elif self._algo == 2:
                self._zlib = zlib.decompressobj(15)
            elif self._algo == 3:
                self._bz2 = bz2.BZ2Decompressor()
            elif self._algo != 0:
                raise DecryptionError(f"unsupported compression algorithm {self._algo}")
            self._inner = _MessageHandler(self._out, self._owner, self._depth + 1)
            self._nested = _Splitter(self._inner)
        assert self._nested is not None
        try:
            if self._bz2 is not None:
                self._nested.feed(self._bz2.decompress(data))
                return
            if self._zlib is None:
                self._nested.feed(data)
                return
            # Bounded output per step, so a small highly compressed input cannot blow up memory at once.
            chunk = self._zlib.decompress(data, 1 << 20)
            while chunk:
                self._nested.feed(chunk)
                tail = self._zlib.unconsumed_tail
                chunk = self._zlib.decompress(tail, 1 << 20) if tail else b""
        except (zlib.error, OSError, EOFError) as e:
            raise IntegrityError(f"corrupt compressed data in the encrypted stream: {e}") from None

    def end(self) -> None:
        if self._tag == 8 and self._nested is not None:
            if self._zlib is not None:
                self._nested.feed(self._zlib.flush())
            self._nested.close()
            if self._inner.saw_literal:
                self.saw_literal = True
            self._nested, self._zlib, self._bz2, self._algo = None, None, None, -1
        elif self._tag == 11 and not self._header_done:
            raise IntegrityError("truncated literal data packet")


class _SeipdHandler:
    """SEIPD v1: CFB-decrypt, check the quick-check prefix, hold back and verify the trailing MDC packet."""

    def __init__(self, keys: list[tuple[int, bytes]], out: _Sink, owner: Decryptor) -> None:
        self._keys = keys
        self._version = -1
        self._prefix_ct = b""
        self._cipher: CipherContext | None = None
        self._mdc = _BehindHash()
        self._tail = b""
        self._inner = _MessageHandler(out, owner)
        self._splitter = _Splitter(self._inner)
        self.done = False

    def start(self, tag: int) -> None:  # pragma: no cover - not used as a splitter handler
        pass

    def body(self, data: _Bytes) -> None:
        if self._version < 0:
            self._version = data[0]
            data = data[1:]
            if self._version != 1:
                raise DecryptionError(f"unsupported encrypted data packet version {self._version} (AEAD)")
        if self._cipher is None:
            self._prefix_ct += data
            if len(self._prefix_ct) < 18:
                return
            data = self._choose_key()
        plain = self._cipher.update(data)  # type: ignore[union-attr]
        # The last 22 bytes may be the MDC packet: hold them back until more comes (or the end).
        if len(plain) < _MDC_LEN:
            plain = self._tail + plain
            if len(plain) <= _MDC_LEN:
                self._tail = plain
                return
            self._tail = b""
        if self._tail:
            self._release(self._tail)
        self._tail = plain[-_MDC_LEN:]
        self._release(memoryview(plain)[:-_MDC_LEN])  # (a view: the chunk is not copied)

    def _release(self, ready: bytes | memoryview) -> None:
        self._mdc.update(ready)
        self._splitter.feed(ready)

    def _choose_key(self) -> bytes:
        head, rest = self._prefix_ct[:18], self._prefix_ct[18:]
        for algo, key in self._keys:
            cipher = _cfb(algo, key, encrypt=False)
            prefix = cipher.update(head)
            if prefix[14:16] == prefix[16:18]:
                self._cipher = cipher
                self._mdc.update(prefix)
                return rest
        raise BadPassphraseError("wrong passphrase: the data cannot be decrypted with it")

    def end(self) -> None:
        if self._cipher is None:
            raise IntegrityError("the encrypted stream is truncated")
        tail = self._tail + self._cipher.finalize()
        self._mdc.update(_MDC_HEADER)
        if len(tail) != _MDC_LEN or tail[:2] != _MDC_HEADER or not hmac.compare_digest(tail[2:], self._mdc.digest()):
            raise IntegrityError("integrity check failed: the encrypted stream was modified or corrupted")
        self._splitter.close()
        if not self._inner.saw_literal:
            raise DecryptionError("the encrypted data holds no literal data")
        self.done = True


class _TopHandler:
    """Top level: SKESK packets, then one SEIPD packet."""

    def __init__(self, passphrase: bytes, out: _Sink, owner: Decryptor) -> None:
        self._passphrase = passphrase
        self._out = out
        self._owner = owner
        self._tag = -1
        self._skesk = b""
        self._keys: list[tuple[int, bytes]] = []
        self.seipd: _SeipdHandler | None = None

    def start(self, tag: int) -> None:
        self._tag = tag
        if self.seipd is not None:
            if self.seipd.done and tag == 10:
                return
            raise DecryptionError("unexpected data after the encrypted packet")
        if tag == 3:
            self._skesk = b""
        elif tag == 18:
            if not self._keys:
                raise DecryptionError("no passphrase-encrypted session key: this is not `gpg -c` style data")
            self.seipd = _SeipdHandler(self._keys, self._out, self._owner)
        elif tag == 9:
            raise DecryptionError("refusing data without integrity protection (old SED packet); re-encrypt with MDC")
        elif tag == 20:
            raise DecryptionError("AEAD-encrypted OpenPGP data is not supported; encrypt with `gpg -c --rfc4880`")
        elif tag == 1:
            raise DecryptionError("the data is encrypted to a public key, not with a passphrase")
        elif tag in (8, 11):
            raise DecryptionError("the data is an unencrypted OpenPGP message")
        elif tag != 10:
            raise DecryptionError(f"unexpected OpenPGP packet (tag {tag})")

    def body(self, data: _Bytes) -> None:
        if self._tag == 3:
            self._skesk += data
            if len(self._skesk) > 1024:
                raise DecryptionError("malformed passphrase packet")
        elif self._tag == 18 and self.seipd is not None:
            self.seipd.body(data)

    def end(self) -> None:
        if self._tag == 3:
            self._keys.extend(self._parse_skesk(self._skesk))
        elif self._tag == 18 and self.seipd is not None:
            self.seipd.end()

    def _parse_skesk(self, b: bytes) -> list[tuple[int, bytes]]:
        if len(b) < 4 or b[0] != 4:
            return []  # v5/v6 (AEAD) packets: skip; another SKESK may fit
        algo, s2k_type = b[1], b[2]
        if algo not in _CIPHERS:
            raise DecryptionError(f"unsupported cipher algorithm {algo}")
        key_len = _CIPHERS[algo][1]
        hash_algo = b[3]
        if s2k_type == 0:
            salt, count, pos = b"", None, 4
        elif s2k_type == 1:
            salt, count, pos = b[4:12], None, 12
        elif s2k_type == 3:
            salt, count, pos = b[4:12], _s2k_count(b[12]), 13
        else:
            raise DecryptionError(f"unsupported S2K type {s2k_type}")
        key = s2k(hash_algo, salt, self._passphrase, count, key_len)
        esk = b[pos:]
        if not esk:
            return [(algo, key)]
        dec = _cfb(algo, key, encrypt=False)
        session = dec.update(esk) + dec.finalize()
        if session[0] not in _CIPHERS or len(session) - 1 != _CIPHERS[session[0]][1]:
            return []  # wrong passphrase for this SKESK: its session key decrypts to garbage
        return [(session[0], session[1:])]


class Decryptor:
    """Incremental decryptor: ``feed(data) -> plaintext`` for each chunk, then ``close()``.

    ``close()`` raises if the stream is truncated or its MDC does not match; until it returns, the
    plaintext already released must be treated as unverified.
    """

    def __init__(self, passphrase: str) -> None:
        self.filename: str | None = None
        self._chunks: list[_Bytes] = []
        self._top = _TopHandler(passphrase.encode("utf-8"), self._chunks.append, self)
        self._splitter = _Splitter(self._top)
        self._closed = False

    def feed(self, data: bytes) -> bytes:
        self._splitter.feed(data)
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out

    def close(self) -> bytes:
        self._splitter.close()
        if self._top.seipd is None or not self._top.seipd.done:
            raise IntegrityError("the encrypted stream is truncated")
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out


def encrypt_bytes(data: bytes, passphrase: str, filename: str = "") -> bytes:
    """Encrypt a whole byte string (for tests and small payloads)."""
    enc = Encryptor(passphrase, filename)
    return enc.start() + enc.update(data) + enc.finish()


def decrypt_bytes(data: bytes, passphrase: str) -> bytes:
    """Decrypt a whole byte string (for tests and small payloads)."""
    dec = Decryptor(passphrase)
    return dec.feed(data) + dec.close()
