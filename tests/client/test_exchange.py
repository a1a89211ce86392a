"""`piping send/get --exchange`: Piping UI's key exchange between two clients, through our server and
the reference; and a man in the middle on the server's paths gets nothing it can read."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import env, needs, piping_cmd, run_piping, start_piping
from piping_server.client._exchange import get_exchange_async, send_exchange_async, split_exchange_target
from piping_server.client._keyexchange import (
    ExchangeError,
    Party,
    exchange_paths,
    passphrase_of,
    read_verified_parcel,
    verified_path,
)
from piping_server.client._openpgp import decrypt_bytes
from piping_server.client._send import send_async

CODE = re.compile(rb"verification code: ([0-9a-f]{32})")
TIMEOUT = 60


def _code(stderr: bytes) -> str:
    match = CODE.search(stderr)
    assert match, stderr.decode(errors="replace")
    return match.group(1).decode()


def test_a_file_between_two_clients(server: str, path: str, tmp_path: Path) -> None:
    source = tmp_path / "report.bin"
    source.write_bytes(os.urandom(2_500_000 + 7))  # several Robust chunks
    out = tmp_path / "out"
    out.mkdir()
    sender = start_piping("send", "--exchange", "--yes", "-q", "-s", server, path, str(source))
    got = run_piping("get", "--exchange", "--yes", "-q", "-s", server, path, "-o", f"{out}/", timeout=TIMEOUT)
    _, send_err = sender.communicate(timeout=TIMEOUT)
    assert sender.returncode == 0, send_err.decode(errors="replace")
    assert got.returncode == 0, got.stderr.decode(errors="replace")
    assert (out / "report.bin").read_bytes() == source.read_bytes()
    assert _code(send_err) == _code(got.stderr)


def test_a_folder_and_stdin_to_stdout(server: str, path: str, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (folder / "sub" / "b.bin").write_bytes(os.urandom(5000))
    out = tmp_path / "out"
    out.mkdir()
    sender = start_piping("send", "-x", "-y", "-q", "-s", server, path, str(folder))
    got = run_piping("get", "-x", "-y", "-q", "-s", server, path, "-o", f"{out}/", timeout=TIMEOUT)
    assert sender.wait(TIMEOUT) == 0 and got.returncode == 0, got.stderr.decode(errors="replace")
    assert (out / "photos" / "a.txt").read_text() == "a"
    assert (out / "photos" / "sub" / "b.bin").read_bytes() == (folder / "sub" / "b.bin").read_bytes()

    data = os.urandom(300_000)
    sender = start_piping("send", "-x", "-y", "-q", "-s", server, path + "-stdin", stdin=subprocess.PIPE)
    assert sender.stdin is not None
    sender.stdin.write(data)
    sender.stdin.close()
    got = run_piping("get", "-x", "-y", "-q", "-s", server, path + "-stdin", timeout=TIMEOUT)
    assert sender.wait(TIMEOUT) == 0 and got.returncode == 0, got.stderr.decode(errors="replace")
    assert got.stdout == data


def test_confirmation_needs_a_terminal_or_yes(server: str, path: str) -> None:
    """Without a terminal to ask on, no --yes is a usage error before anything is exchanged."""
    result = subprocess.run(
        ["setsid", *piping_cmd("get", "-x", "-s", server, path)],
        capture_output=True,
        timeout=TIMEOUT,
        env=env(),
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2, result.stderr
    assert b"pass --yes" in result.stderr and b"Traceback" not in result.stderr


@pytest.mark.parametrize("flags", [["--pass", "x"], ["--n", "2"]])
def test_exchange_refuses_passphrase_and_n(server: str, path: str, flags: list[str], tmp_path: Path) -> None:
    result = run_piping("send", "-x", "-y", *flags, "-s", server, path, "-", input=b"", timeout=TIMEOUT)
    assert result.returncode == 2 and b"--exchange" in result.stderr, result.stderr


def test_sender_refusing_the_code_tells_the_receiver(server: str, path: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async def no(code: str) -> bool:
            return False

        send = asyncio.ensure_future(send_exchange_async(path, b"secret data", server=server, confirm=no))
        with pytest.raises(ExchangeError, match="did not confirm"):
            await get_exchange_async(path, tmp_path / "out.bin", server=server)
        with pytest.raises(ExchangeError, match="not confirmed"):
            await send

    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))
    assert list(tmp_path.iterdir()) == []


def test_split_exchange_target() -> None:
    assert split_exchange_target("https://ppng.io/my/path", None) == ("https://ppng.io", "my/path")
    assert split_exchange_target("abc", "http://127.0.0.1:8080/") == ("http://127.0.0.1:8080", "abc")


async def _get_body(url: str) -> bytes:
    from piping_server.client._exchange import _get_small

    return await _get_small(url, True)


def test_a_swapped_encryption_key_breaks_the_signature(server: str, path: str) -> None:
    """A man in the middle takes the sender's message off the server and puts it back with its own ECDH
    key: the receiver finds the payload no longer signed by the sender's key, and stops."""

    async def scenario() -> None:
        secret = path.strip("/")
        sender_path, _ = exchange_paths("sender", secret)
        intercept = asyncio.ensure_future(_get_body(f"{server}/{sender_path}"))
        await asyncio.sleep(0.3)  # the attacker waits on the path first
        send = asyncio.ensure_future(send_exchange_async(path, b"secret data", server=server))
        parcel = json.loads(await intercept)
        payload = json.loads(parcel["payload"])
        payload["public_encrypt_jwk"] = json.loads(json.loads(Party().parcel())["payload"])["public_encrypt_jwk"]
        parcel["payload"] = json.dumps(payload, separators=(",", ":"))
        forward = asyncio.ensure_future(send_async(f"{server}/{sender_path}", json.dumps(parcel).encode()))
        with pytest.raises(ExchangeError, match="not signed"):
            await get_exchange_async(path, None, server=server)
        await forward
        send.cancel()

    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))


def test_a_man_in_the_middle_shows_different_codes_and_reads_nothing(server: str, path: str) -> None:
    """The attacker exchanges keys with each side in turn, with its own signed messages on the server's
    paths (receiver to the sender, then sender to the receiver). The two users see different codes;
    comparing them, they refuse: the attacker gets a "not verified" message and no data."""
    secret = path.strip("/")
    codes: dict[str, str] = {}
    both_shown = asyncio.Event()

    def shown(who: str) -> object:
        def on_code(code: str) -> None:
            codes[who] = code
            if len(codes) == 2:
                both_shown.set()

        return on_code

    async def compare(code: str) -> bool:
        await both_shown.wait()  # the users read their codes to each other
        return codes["sender"] == codes["receiver"]

    async def attacker_as(role: str) -> tuple[Party, bytes]:
        party = Party()
        mine, theirs = exchange_paths(role, secret)  # type: ignore[arg-type]
        _, peer = await asyncio.gather(send_async(f"{server}/{mine}", party.parcel()), _get_body(f"{server}/{theirs}"))
        return party, peer

    async def scenario() -> None:
        # 1. The attacker plays the receiver to the sender.
        toward_sender = asyncio.ensure_future(attacker_as("receiver"))
        await asyncio.sleep(0.3)
        send = asyncio.ensure_future(
            send_exchange_async(path, b"the secret", server=server, on_code=shown("sender"), confirm=compare)
        )
        party_s, sender_parcel = await toward_sender
        with_sender = party_s.derive(sender_parcel)
        # 2. Then the sender to the receiver.
        toward_receiver = asyncio.ensure_future(attacker_as("sender"))
        await asyncio.sleep(0.3)
        get = asyncio.ensure_future(
            get_exchange_async(path, None, server=server, on_code=shown("receiver"), confirm=compare)
        )
        await toward_receiver
        # The sender, seeing a code other than the receiver's, refuses: the attacker learns only that.
        sealed = await _get_body(f"{server}/{verified_path(with_sender.main_path)}")
        verified, _ = read_verified_parcel(decrypt_bytes(sealed, passphrase_of(with_sender.key)))
        assert verified is False
        with pytest.raises(ExchangeError, match="not confirmed"):
            await send
        with pytest.raises(ExchangeError, match="not confirmed"):
            await get
        assert codes["sender"] != codes["receiver"]

    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))


def test_both_refusing_ends_both(server: str, path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both users see the codes differ and say no: the receiver never asks for the sender's answer,
    and the sender stops waiting to deliver its "not verified" (bounded) instead of hanging."""
    import piping_server.client._exchange as exchange_module

    monkeypatch.setattr(exchange_module, "_REFUSAL_WAIT_S", 2.0)

    async def no(code: str) -> bool:
        return False

    async def scenario() -> None:
        send = asyncio.ensure_future(send_exchange_async(path, b"secret data", server=server, confirm=no))
        with pytest.raises(ExchangeError, match="nothing was received"):
            await get_exchange_async(path, tmp_path / "out.bin", server=server, confirm=no)
        with pytest.raises(ExchangeError, match="nothing was sent$"):
            await send

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("parcel", "said"),
    [
        (b"hello, I am curl", b"is not JSON"),
        (b'{"format": "piping_ui_auth", "version": 3}', b"version 3"),
        (
            b'{"format": "piping_ui_auth", "version": 4, "payload": "{}", "signature": "AA==",'
            b' "public_signing_jwk": {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}}',
            b"not a valid public key",
        ),
        (b"[" * 70_000, b"larger than"),
    ],
)
def test_a_bad_peer_message_is_one_line(server: str, path: str, parcel: bytes, said: bytes) -> None:
    """Whatever a peer posts on the exchange path, the client ends with one line and exit code 6."""

    async def post() -> None:
        await send_async(f"{server}{path}", parcel)

    getter = start_piping("get", "-x", "-y", "-q", "-s", server, path)
    asyncio.run(asyncio.wait_for(post(), TIMEOUT))
    _, err = getter.communicate(timeout=TIMEOUT)
    assert getter.returncode == 6, err
    assert said in err and b"Traceback" not in err and len(err.strip().splitlines()) <= 2, err


def test_the_terminal_question(server: str, path: str, tmp_path: Path) -> None:
    """Without --yes the sender asks on its terminal: "n" sends nothing, "y" sends."""
    script = needs("script")
    source = tmp_path / "a.txt"
    source.write_text("asked first")

    def sender_answering(answer: bytes, sub: str) -> subprocess.Popen[bytes]:
        command = " ".join(piping_cmd("send", "-x", "-q", "-s", server, path + sub, str(source)))
        proc = subprocess.Popen(
            [script, "-qec", command, "/dev/null"],
            env=env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdin is not None and proc.stdout is not None
        seen = b""
        while b"[y/N]" not in seen:  # bounded: the getter below runs, and the read ends at EOF
            data = os.read(proc.stdout.fileno(), 4096)
            if not data:
                break
            seen += data
        proc.stdin.write(answer + b"\n")
        proc.stdin.flush()
        return proc

    for answer, sub, ok in [(b"n", "-no", False), (b"y", "-yes", True)]:
        out = tmp_path / f"out{sub}"
        out.mkdir()
        getter = start_piping("get", "-x", "-y", "-q", "-s", server, path + sub, "-o", f"{out}/")
        sender = sender_answering(answer, sub)
        _, err = getter.communicate(timeout=TIMEOUT)
        sender.communicate(timeout=TIMEOUT)
        assert (getter.returncode == 0) is ok, err
        assert [p.name for p in out.iterdir()] == (["a.txt"] if ok else [])
        assert (sender.returncode == 0) is ok
