"""send/get against real server processes: files, folders, stdin/stdout, curl peers, errors."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from conftest import env, needs, run_piping, start_piping, start_server_process
from piping_server.client import ServerRejectedError, get, get_async, send, send_async


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> kind + content digest, for every entry under root."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
            out[os.path.relpath(p, root)] = h.hexdigest()
    return out


def make_tree(root: Path, big: int = 0) -> Path:
    (root / "nested" / "deeper" / "deepest").mkdir(parents=True)
    (root / "empty dir").mkdir()
    (root / "empty.txt").write_bytes(b"")
    (root / "ünïcødé 名前.txt").write_text("héllo wörld\n" * 100, encoding="utf-8")
    (root / "nested" / "data.bin").write_bytes(os.urandom(300_000))
    (root / "nested" / "deeper" / "deepest" / "x").write_bytes(b"x")
    (root / "nested" / "link").symlink_to("data.bin")
    if big:
        with open(root / "big.bin", "wb") as f:
            block = os.urandom(1 << 20)
            for i in range(big >> 20):
                f.write(block[i % 256 :] + block[: i % 256])
    return root


def finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, bytes, bytes]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_bytes_api(server: str, path: str) -> None:
    async def main() -> None:
        sent, got = await asyncio.wait_for(
            asyncio.gather(send_async(server + path, b"hello piping"), get_async(server + path)), 30
        )
        assert got.data == b"hello piping"
        assert sent.size == 12
        assert any("received successfully" in line for line in sent.status_lines)

    asyncio.run(main())


def test_sync_api_with_bare_path_and_file(server: str, path: str, tmp_path: Path) -> None:
    src = tmp_path / "note.txt"
    src.write_text("note")
    (tmp_path / "out").mkdir()
    receiver = start_piping("get", "-q", path.lstrip("/"), "-o", str(tmp_path / "out"), "--server", server)
    time.sleep(0.3)
    result = send(path.lstrip("/"), src, server=server)
    assert result.size == 4
    code, _, err = finish(receiver)
    assert code == 0, err
    assert (tmp_path / "out" / "note.txt").read_text() == "note"


def test_single_file_reaches_curl_with_its_name(server: str, path: str, tmp_path: Path) -> None:
    curl = needs("curl")
    src = tmp_path / "report 2024.pdf"
    src.write_bytes(os.urandom(100_000))
    out = tmp_path / "out"
    out.mkdir()
    receiver = subprocess.Popen([curl, "-sSf", "-OJ", server + path], cwd=out)
    time.sleep(0.3)
    r = run_piping("send", "-q", server + path, str(src))
    assert r.returncode == 0, r.stderr
    assert receiver.wait(30) == 0
    assert (out / "report 2024.pdf").read_bytes() == src.read_bytes()


def test_folder_roundtrip_with_200mb_file(server: str, path: str, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "my folder", big=200 << 20)
    dest = tmp_path / "received"
    receiver = start_piping("get", "-q", server + path, "-o", str(dest))
    time.sleep(0.3)
    r = run_piping("send", "-q", server + path, str(src), timeout=240)
    assert r.returncode == 0, r.stderr
    code, _, err = finish(receiver, 240)
    assert code == 0, err
    assert tree_digest(dest / "my folder") == tree_digest(src)
    assert os.readlink(dest / "my folder" / "nested" / "link") == "data.bin"
    assert [p.name for p in dest.iterdir()] == ["my folder"]  # no leftovers


def test_several_files_into_existing_folder(server: str, path: str, tmp_path: Path) -> None:
    a = tmp_path / "a.txt"
    a.write_text("a")
    d = make_tree(tmp_path / "d")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "already.txt").write_text("keep")
    receiver = start_piping("get", "-q", server + path, "-o", str(dest))
    time.sleep(0.3)
    r = run_piping("send", "-q", server + path, str(a), str(d))
    assert r.returncode == 0, r.stderr
    code, _, err = finish(receiver)
    assert code == 0, err
    assert sorted(p.name for p in dest.iterdir()) == ["a.txt", "already.txt", "d"]
    assert tree_digest(dest / "d") == tree_digest(d)


def test_folder_to_curl_is_a_tar(server: str, path: str, tmp_path: Path) -> None:
    curl = needs("curl")
    src = make_tree(tmp_path / "src")
    receiver = subprocess.Popen([curl, "-sSf", "-D", "-", server + path], stdout=subprocess.PIPE)
    time.sleep(0.3)
    assert run_piping("send", "-q", server + path, str(src)).returncode == 0
    raw, _ = receiver.communicate(timeout=30)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"application/x-tar" in head.lower()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert "src/nested/data.bin" in tar.getnames()


def test_stdin_to_stdout(server: str, path: str) -> None:
    data = os.urandom(3_000_000)
    receiver = start_piping("get", "-q", server + path)
    time.sleep(0.3)
    r = run_piping("send", "-q", server + path, input=data)
    assert r.returncode == 0, r.stderr
    code, out, err = finish(receiver)
    assert code == 0, err
    assert out == data


def test_curl_sender_to_get(server: str, path: str, tmp_path: Path) -> None:
    curl = needs("curl")
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(500_000))
    sender = subprocess.Popen([curl, "-sS", "-T", str(src), server + path], stdout=subprocess.DEVNULL)
    r = run_piping("get", "-q", server + path, "-o", str(tmp_path / "got.bin"))
    assert r.returncode == 0, r.stderr
    assert sender.wait(30) == 0
    assert (tmp_path / "got.bin").read_bytes() == src.read_bytes()


def test_several_receivers(server: str, path: str) -> None:
    receivers = [start_piping("get", "-q", "--n", "2", server + path) for _ in range(2)]
    time.sleep(0.3)
    r = run_piping("send", "-q", "--n", "2", server + path, input=b"to both\n" * 1000)
    assert r.returncode == 0, r.stderr
    for p in receivers:
        code, out, err = finish(p)
        assert code == 0, err
        assert out == b"to both\n" * 1000


def test_status_lines_shown(server: str, path: str) -> None:
    receiver = start_piping("get", "-q", server + path)
    time.sleep(0.3)
    r = run_piping("send", server + path, input=b"x")
    assert r.returncode == 0
    assert b"[INFO] Start sending" in r.stderr
    finish(receiver)


def test_busy_path_is_one_line_error(server: str, path: str) -> None:
    first = start_piping("send", "-q", server + path, stdin=subprocess.PIPE)
    time.sleep(0.5)
    r = run_piping("send", "-q", server + path, input=b"second")
    assert r.returncode == 4
    assert r.stderr.decode().strip().splitlines() == [
        f"piping: error: [ERROR] Another sender has been connected on '{path}'."
    ]
    first.kill()
    first.wait(10)
    with pytest.raises(ServerRejectedError):
        send(server + "/help", b"x")


def test_unreachable_server(tmp_path: Path) -> None:
    r = run_piping("send", "http://127.0.0.1:9/x", input=b"x")
    assert r.returncode == 3
    assert r.stderr.decode().count("\n") == 1
    assert "cannot connect" in r.stderr.decode()
    r = run_piping("get", "mypath")  # no server given
    assert r.returncode == 2
    assert "PIPING_SERVER" in r.stderr.decode()


def test_receiver_killed_makes_send_fail(server: str, path: str) -> None:
    curl = needs("curl")
    receiver = subprocess.Popen([curl, "-sS", server + path], stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    sender = start_piping("send", "-q", server + path, stdin=subprocess.PIPE)
    assert sender.stdin is not None
    deadline = time.monotonic() + 10
    for _ in range(40):  # bounded: feed while the receiver is alive
        sender.stdin.write(b"y" * 65536)
        sender.stdin.flush()
        time.sleep(0.05)
        if time.monotonic() > deadline:
            break
    receiver.kill()
    receiver.wait(10)
    try:
        for _ in range(100):
            sender.stdin.write(b"y" * 65536)
            sender.stdin.flush()
            time.sleep(0.02)
            if sender.poll() is not None:
                break
        sender.stdin.close()
    except BrokenPipeError:
        pass
    code = sender.wait(30)
    assert sender.stderr is not None
    err = sender.stderr.read().decode()
    assert code != 0
    assert err.startswith("piping: error:") and err.count("\n") == 1, err
    # What a sender can know: its receiver went away (never "the sender ... went away").
    assert "receiver" in err and "sender" not in err, err


def test_cut_sender_blames_no_sender(path: str) -> None:
    """The server goes away mid-transfer: the sender says the delivery was not confirmed, not "the sender ..."."""
    curl = needs("curl")
    proc, server = start_server_process("ours")
    try:
        receiver = subprocess.Popen([curl, "-sS", server + path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sender = start_piping("send", "-q", server + path, stdin=subprocess.PIPE)
        assert sender.stdin is not None
        for _ in range(20):  # bounded: a transfer is running
            sender.stdin.write(b"s" * 65536)
            sender.stdin.flush()
            time.sleep(0.02)
        proc.kill()
        proc.wait(10)
        code, _, err = finish(sender, 30)
        receiver.wait(10)
        assert code == 5, err
        assert err.decode() == (
            "piping: error: the transfer was cut before the server confirmed delivery"
            " (a receiver or the connection went away)\n"
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_sender_killed_leaves_no_file(server: str, path: str, tmp_path: Path) -> None:
    curl = needs("curl")
    dest = tmp_path / "out.bin"
    receiver = start_piping("get", "-q", server + path, "-o", str(dest))
    time.sleep(0.3)
    sender = subprocess.Popen([curl, "-sS", "-T", "-", server + path], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert sender.stdin is not None
    for _ in range(20):
        sender.stdin.write(b"z" * 65536)
        sender.stdin.flush()
        time.sleep(0.02)
    time.sleep(0.5)
    sender.kill()
    sender.wait(10)
    code, _, err = finish(receiver, 30)
    assert code == 5, err
    assert err.decode().startswith("piping: error:")
    assert list(tmp_path.iterdir()) == []


def test_unsafe_archive_is_refused(server: str, path: str, tmp_path: Path) -> None:
    curl = needs("curl")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ok = tarfile.TarInfo("fine.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        evil = tarfile.TarInfo("../evil.txt")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
    tar_path = tmp_path / "evil.tar"
    tar_path.write_bytes(buf.getvalue())
    dest = tmp_path / "dest"
    sender = subprocess.Popen(
        [curl, "-sS", "-T", str(tar_path), "-H", "X-Piping: tar", server + path], stdout=subprocess.DEVNULL
    )
    r = run_piping("get", "-q", server + path, "-o", str(dest))
    sender.wait(30)
    assert r.returncode == 7, r.stderr
    assert b"unsafe" in r.stderr
    assert not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar"]


def test_link_out_of_destination_is_refused(server: str, path: str, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("d/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)

    async def main() -> None:
        async def body():  # type: ignore[no-untyped-def]
            yield buf.getvalue()

        receiver = asyncio.create_task(get_async(server + path, tmp_path / "dest"))
        await asyncio.sleep(0.2)
        conn_task = asyncio.create_task(_raw_send(server + path, buf.getvalue()))
        with pytest.raises(Exception, match="unsafe"):
            await asyncio.wait_for(receiver, 30)
        conn_task.cancel()

    asyncio.run(main())
    assert not (tmp_path / "dest").exists()
    assert list(tmp_path.iterdir()) == []


async def _raw_send(url: str, data: bytes) -> None:
    from piping_server.client._http import HttpConnection

    conn = HttpConnection(url)
    await conn.connect()
    await conn.send_head("POST", [("X-Piping", "tar")], len(data))
    await conn.send_body(_once(data))
    await conn.read_head()
    await conn.read_text()
    conn.abort()


async def _once(data: bytes):  # type: ignore[no-untyped-def]
    yield data


def test_get_sync_api_returns_bytes(server: str, path: str) -> None:
    import threading

    t = threading.Thread(target=lambda: send(server + path, [b"a", b"b", b"c"]), daemon=True)
    t.start()
    assert get(server + path).data == b"abc"
    t.join(10)


def test_env_server(server: str, path: str) -> None:
    e = env()
    e["PIPING_SERVER"] = server
    receiver = subprocess.Popen(
        [*start_cmd("get", "-q", path.lstrip("/"))], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    time.sleep(0.3)
    r = subprocess.run([*start_cmd("send", "-q", path.lstrip("/"))], env=e, input=b"env", capture_output=True)
    assert r.returncode == 0, r.stderr
    code, out, _ = finish(receiver)
    assert (code, out) == (0, b"env")


def start_cmd(*args: str) -> list[str]:
    from conftest import piping_cmd

    return piping_cmd(*args)


def test_ctrl_c_and_sigterm_end_a_transfer_cleanly(server: str, path: str, tmp_path: Path) -> None:
    """Ctrl-C on a receiver mid-transfer: 130; SIGTERM on its sender: 143; no traceback, no partial file."""
    dest = tmp_path / "out.bin"
    receiver = start_piping("get", "-q", server + path, "-o", str(dest))
    sender = start_piping("send", "-q", server + path, stdin=subprocess.PIPE)
    assert sender.stdin is not None and receiver.stderr is not None
    for _ in range(20):  # bounded: the transfer is running
        sender.stdin.write(b"c" * 65536)
        sender.stdin.flush()
        time.sleep(0.02)
    receiver.send_signal(signal.SIGINT)
    code, _, err = finish(receiver, 30)
    assert (code, err) == (130, b"piping: interrupted\n")
    sender.send_signal(signal.SIGTERM)
    code, _, err = finish(sender, 30)
    assert b"Traceback" not in err, err
    assert code in (143, 5), err  # the receiver's leaving may have ended it first
    assert list(tmp_path.iterdir()) == []
