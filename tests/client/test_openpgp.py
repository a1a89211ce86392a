"""OpenPGP symmetric encryption: our encryptor/decryptor, and interop with the real gpg binary."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import needs
from piping_server.client import BadPassphraseError, DecryptionError, IntegrityError
from piping_server.client._openpgp import Decryptor, Encryptor, decrypt_bytes, encrypt_bytes

SIZES = [0, 1, 191, 192, 511, 512, 8383, 8384, 65535, 65536, 65537, 300_001]


@pytest.fixture
def gpg(tmp_path: Path) -> list[str]:
    binary = needs("gpg")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    return [binary, "--homedir", str(home), "--batch", "--quiet", "--pinentry-mode", "loopback"]


@pytest.mark.parametrize("size", SIZES)
def test_roundtrip(size: int) -> None:
    data = os.urandom(size)
    assert decrypt_bytes(encrypt_bytes(data, "pässword", "f.bin"), "pässword") == data


def test_streaming_in_odd_pieces() -> None:
    data = os.urandom(200_000)
    enc = Encryptor("pw", "x")
    ct = enc.start()
    for i in range(0, len(data), 7777):
        ct += enc.update(data[i : i + 7777])
    ct += enc.finish()
    dec = Decryptor("pw")
    out = b"".join(dec.feed(ct[i : i + 333]) for i in range(0, len(ct), 333)) + dec.close()
    assert out == data
    assert dec.filename == "x"


def test_streaming_in_mixed_pieces() -> None:
    # Large pieces are hashed (MDC) in a worker thread, small ones inline: the order must hold across both.
    sizes = [1, 70_000, 5, 200_000, 21, 22, 23, 65_536, 65_535, 300_000, 3]
    data = os.urandom(sum(sizes) * 2)
    enc = Encryptor("pw", "x")
    parts = [enc.start()]
    pos = 0
    for n in sizes * 2:
        parts.append(enc.update(data[pos : pos + n]))
        pos += n
    parts.append(enc.finish())
    ct = b"".join(parts)
    dec = Decryptor("pw")
    out, pos = [], 0
    for n in sizes * 4:
        out.append(dec.feed(ct[pos : pos + n]))
        pos += n
    out.append(dec.feed(ct[pos:]))
    assert b"".join(out) + dec.close() == data


def test_wrong_passphrase() -> None:
    with pytest.raises(BadPassphraseError):
        decrypt_bytes(encrypt_bytes(b"secret" * 100, "right"), "wrong")


@pytest.mark.parametrize("where", [-1, -10, -30, 60])
def test_tampering_is_detected(where: int) -> None:
    ct = bytearray(encrypt_bytes(b"a" * 5000, "pw"))
    ct[where] ^= 0x01
    with pytest.raises(DecryptionError):
        decrypt_bytes(bytes(ct), "pw")


@pytest.mark.parametrize("cut", [1, 10, 22, 23, 1000])
def test_truncation_is_detected(cut: int) -> None:
    ct = encrypt_bytes(b"a" * 5000, "pw")
    with pytest.raises(IntegrityError):
        decrypt_bytes(ct[:-cut], "pw")


def test_not_openpgp() -> None:
    with pytest.raises(DecryptionError):
        decrypt_bytes(b"hello world", "pw")


@pytest.mark.parametrize("size", [0, 1, 512, 65536, 300_001])
def test_gpg_decrypts_ours(gpg: list[str], size: int) -> None:
    data = os.urandom(size)
    r = subprocess.run([*gpg, "--passphrase", "pw", "-d"], input=encrypt_bytes(data, "pw"), capture_output=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--compress-algo", "none"],
        ["--compress-algo", "zlib"],
        ["--compress-algo", "bzip2"],
        ["--cipher-algo", "aes128", "--s2k-digest-algo", "sha512"],
        ["--s2k-mode", "1"],
    ],
)
@pytest.mark.parametrize("size", [0, 100, 70_000])
def test_we_decrypt_gpg(gpg: list[str], options: list[str], size: int) -> None:
    data = os.urandom(size // 2) + b"z" * (size - size // 2)
    r = subprocess.run([*gpg, "--passphrase", "pw", "-c", *options], input=data, capture_output=True)
    assert r.returncode == 0, r.stderr
    assert decrypt_bytes(r.stdout, "pw") == data


def test_gpg_wrong_passphrase(gpg: list[str]) -> None:
    ct = subprocess.run([*gpg, "--passphrase", "pw", "-c"], input=b"x", capture_output=True, check=True).stdout
    with pytest.raises(BadPassphraseError):
        decrypt_bytes(ct, "nope")
