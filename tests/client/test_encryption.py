"""End-to-end encryption through a real server, interoperating with the gpg and curl binaries."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from test_transfer import finish, make_tree, tree_digest

from conftest import env, needs, run_piping, start_piping
from piping_server.client._openpgp import encrypt_bytes


@pytest.fixture
def gpg(tmp_path: Path) -> list[str]:
    binary = needs("gpg")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    return [binary, "--homedir", str(home), "--batch", "--quiet", "--pinentry-mode", "loopback"]


def test_send_pass_is_readable_by_curl_and_gpg(server: str, path: str, tmp_path: Path, gpg: list[str]) -> None:
    curl = needs("curl")
    src = tmp_path / "secret.bin"
    src.write_bytes(os.urandom(5_000_000))
    out = tmp_path / "decrypted"
    receiver = subprocess.Popen(
        ["bash", "-c", f"{curl} -sSf {server}{path} | {' '.join(gpg)} --passphrase 'pä ss' -d > {out}"]
    )
    time.sleep(0.3)
    r = run_piping("send", "-q", "--pass", "pä ss", server + path, str(src))
    assert r.returncode == 0, r.stderr
    assert receiver.wait(60) == 0
    assert out.read_bytes() == src.read_bytes()


def test_get_pass_decrypts_gpg_c_sent_with_curl(server: str, path: str, tmp_path: Path, gpg: list[str]) -> None:
    curl = needs("curl")
    src = tmp_path / "plain.txt"
    src.write_bytes(b"compressible text\n" * 200_000 + os.urandom(100_000))
    sender = subprocess.Popen(
        ["bash", "-c", f"{' '.join(gpg)} --passphrase pw -c < {src} | {curl} -sS -T - {server}{path}"],
        stdout=subprocess.DEVNULL,
    )
    dest = tmp_path / "got.txt"
    r = run_piping("get", "-q", "--pass", "pw", server + path, "-o", str(dest))
    assert r.returncode == 0, r.stderr
    assert sender.wait(60) == 0
    assert dest.read_bytes() == src.read_bytes()


def test_encrypted_folder_roundtrip_with_env_passphrase(server: str, path: str, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "docs", big=20 << 20)
    dest = tmp_path / "out"
    e = env()
    e["PIPING_PASS"] = "from the environment"
    from conftest import piping_cmd

    receiver = subprocess.Popen(
        piping_cmd("get", "-q", server + path, "-o", str(dest)), env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    time.sleep(0.3)
    r = subprocess.run(piping_cmd("send", "-q", server + path, str(src)), env=e, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    code, _, err = finish(receiver, 120)
    assert code == 0, err
    assert tree_digest(dest / "docs") == tree_digest(src)


def test_wrong_passphrase_fails_cleanly(server: str, path: str, tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_bytes(b"top secret\n" * 10_000)
    out = tmp_path / "out"
    out.mkdir()
    receiver = start_piping("get", "-q", "--pass", "wrong", server + path, "-o", str(out))
    time.sleep(0.3)
    sender = start_piping("send", "-q", "--pass", "right", server + path, str(src))
    code, _, err = finish(receiver)
    assert code == 6
    assert err.decode() == "piping: error: wrong passphrase: the data cannot be decrypted with it\n"
    assert list(out.iterdir()) == []
    # (The sender may still succeed: the server delivered every byte, the receiver's decryption failed.)
    sender.wait(30)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_tampered_stream_leaves_no_file(server: str, path: str, tmp_path: Path, damage: str) -> None:
    curl = needs("curl")
    ct = bytearray(encrypt_bytes(os.urandom(300_000), "pw", "x.bin"))
    if damage == "flip":
        ct[-40] ^= 0x20
    else:
        del ct[-100:]
    bad = tmp_path / "bad.gpg"
    bad.write_bytes(bytes(ct))
    sender = subprocess.Popen([curl, "-sS", "-T", str(bad), server + path], stdout=subprocess.DEVNULL)
    dest = tmp_path / "dest.bin"
    r = run_piping("get", "-q", "--pass", "pw", server + path, "-o", str(dest))
    sender.wait(30)
    assert r.returncode == 6, r.stderr
    assert r.stderr.decode().startswith("piping: error:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gpg"]
