"""``piping get -o DEST``: curl's rule (overwrite files, create no missing folder unless asked), decided
before the data is taken; folders keep their modes."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from conftest import run_piping, start_piping

BIG = 32 << 20  # more than every socket buffer between sender and receiver: a cut is seen by the sender


def _send(server: str, path: str, *files: Path) -> subprocess.CompletedProcess[bytes]:
    return run_piping("send", "-q", server + path, *map(str, files))


def _get(*args: str) -> subprocess.Popen[bytes]:
    return start_piping("get", "-q", *args)


def _finish(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise
    return proc.returncode, err.decode()


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if "piping-partial" in p.name]


def test_an_existing_file_is_overwritten(server: str, path: str, tmp_path: Path) -> None:
    src = tmp_path / "report.txt"
    src.write_text("new")
    dest = tmp_path / "dest"
    dest.mkdir()
    for target, written in ((str(dest / "named.txt"), dest / "named.txt"), (f"{dest}/", dest / "report.txt")):
        written.write_text("old contents, longer")
        receiver = _get(server + path, "-o", target)
        assert _send(server, path, src).returncode == 0
        assert _finish(receiver) == (0, "")
        assert written.read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_a_missing_folder_is_refused_before_joining(server: str, path: str, tmp_path: Path) -> None:
    for dest in (tmp_path / "no" / "such" / "file.txt", f"{tmp_path / 'nofolder'}/"):
        # No sender comes: the refusal must not wait for one.
        r = run_piping("get", server + path, "-o", str(dest), timeout=30)
        assert r.returncode == 2, r.stderr
        assert b"does not exist (--create-dirs creates it)" in r.stderr
        assert r.stderr.count(b"\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_create_dirs(server: str, path: str, tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("a")
    receiver = _get(server + path, "--create-dirs", "-o", str(tmp_path / "x" / "y" / "z.txt"))
    assert _send(server, path, src).returncode == 0
    assert _finish(receiver) == (0, "")
    assert (tmp_path / "x" / "y" / "z.txt").read_text() == "a"


def test_a_folder_arrives_into_its_existing_namesake(server: str, path: str, tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    (proj / "sub").mkdir(parents=True)
    (proj / "same.txt").write_text("new")
    (proj / "sub" / "new.txt").write_text("new")
    dest = tmp_path / "dest"
    (dest / "proj" / "sub").mkdir(parents=True)
    (dest / "proj" / "same.txt").write_text("old")
    (dest / "proj" / "sub" / "kept.txt").write_text("kept")
    receiver = _get(server + path, "-o", f"{dest}/")
    assert _send(server, path, proj).returncode == 0
    assert _finish(receiver) == (0, "")
    assert (dest / "proj" / "same.txt").read_text() == "new"
    assert sorted(p.name for p in (dest / "proj" / "sub").iterdir()) == ["kept.txt", "new.txt"]
    assert _leftovers(tmp_path) == []


def test_a_clash_ends_the_transfer_before_its_data(server: str, path: str, tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "big.bin").write_bytes(os.urandom(1 << 20) * (BIG >> 20))
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "proj").write_text("a file where a folder arrives")
    receiver = _get(server + path, "-o", str(dest))
    sent = _send(server, path, proj)
    code, err = _finish(receiver)
    assert (code, err) == (
        2,
        f"piping: error: '{dest / 'proj'}' exists and is not a folder; a folder of that name is arriving\n",
    )
    assert sent.returncode == 5, sent.stderr  # the sender is told: the data is not lost
    assert (dest / "proj").read_text() == "a file where a folder arrives"
    assert _leftovers(tmp_path) == []


def test_modes_travel_without_their_dangerous_bits(server: str, path: str, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    modes = {"private": 0o700, "group": 0o750, "shared": 0o2775}
    for name, mode in modes.items():
        (src / name).mkdir(parents=True)
        (src / name / "f").write_text(name)
        os.chmod(src / name, mode)
    for name, mode in {"secret": 0o600, "tool": 0o4755, "notes": 0o640}.items():
        (src / name).write_text(name)
        os.chmod(src / name, mode)
    os.chmod(src, 0o710)
    receiver = _get(server + path, "-o", str(tmp_path / "got"))
    assert _send(server, path, src).returncode == 0
    assert _finish(receiver) == (0, "")
    got = tmp_path / "got" / "tree"

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    assert mode(got) == 0o710
    assert {n: mode(got / n) for n in modes} == {"private": 0o700, "group": 0o750, "shared": 0o755}
    assert {n: mode(got / n) for n in ("secret", "tool", "notes")} == {"secret": 0o600, "tool": 0o755, "notes": 0o640}
