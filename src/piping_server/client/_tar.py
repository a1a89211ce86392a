"""Folders and several files as one streamed tar, packed and unpacked in a worker thread.

``tarfile`` is synchronous, so the packer runs in a thread that writes into a small bounded queue the
event loop drains (and the unpacker reads from a queue the event loop fills): the archive is never
written to a temporary file nor held whole in memory, and the slow side paces the other.

Unpacking is safe: every member goes through ``tarfile.data_filter`` (no absolute paths, no ``..``,
no links that point out of the destination, no device files) after our own stricter check, and
lands in a hidden temporary directory that is moved into place only once the whole stream (and, for
encrypted data, its integrity check) succeeded. Existing files are overwritten and existing folders
receive the arriving entries (as ``tar x`` does); a file where a folder is, or a folder where a file
or a link is, ends the transfer as soon as that entry arrives.

Modes travel without the bits that grant more than the sender's own rights could mean here
(setuid, setgid, sticky, group and other write): ``data_filter`` does so for files but drops folders'
modes, so a 0700 folder would arrive as 0755; folders keep theirs (the owner always keeps rwx, or
the unpacking could not fill them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import secrets
import shutil
import stat
import tarfile
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from ._bridge import Cancelled, Emit, iterate_in_thread
from ._errors import ArchiveError, PipingError, UsageError

__all__ = ["TarPacker", "TarUnpacker", "scan_sources"]

_CHUNK = 256 * 1024
_MAX_QUEUED = 8
# What of a mode travels and lands: permission bits, less group and other write (tarfile.data_filter's mask).
_SAFE_MODE = 0o755


def scan_sources(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[tuple[Path, str]], int]:
    """Check the inputs; return ``(path, name in the archive)`` pairs and the total size of regular files."""
    entries: list[tuple[Path, str]] = []
    names: set[str] = set()
    total = 0
    for raw in paths:
        p = Path(raw)
        if not p.exists() and not p.is_symlink():
            raise UsageError(f"no such file or directory: {raw}")
        name = p.name or p.resolve().name
        if not name or name in (".", ".."):
            name = p.resolve().name
        if not name:
            raise UsageError(f"cannot send the root directory '{raw}' as a folder")
        if name in names:
            raise UsageError(f"two inputs have the same name '{name}'")
        names.add(name)
        entries.append((p, name))
        if p.is_dir() and not p.is_symlink():
            for root, _dirs, files in os.walk(p):
                for f in files:
                    with contextlib.suppress(OSError):
                        st = os.lstat(os.path.join(root, f))
                        if stat.S_ISREG(st.st_mode):
                            total += st.st_size
        elif p.is_file():
            total += p.stat().st_size
    return entries, total


class TarPacker:
    """Packs files and folders into a tar stream, produced chunk by chunk by :meth:`chunks`."""

    def __init__(
        self,
        entries: list[tuple[Path, str]],
        on_file_bytes: Callable[[int], None] | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self._entries = entries
        self._on_file_bytes = on_file_bytes
        self._on_warning = on_warning
        self._buf = bytearray()
        self._emit: Emit | None = None

    def write(self, data: bytes) -> int:  # file-object protocol for tarfile (worker thread)
        assert self._emit is not None
        self._buf += data
        if len(self._buf) >= _CHUNK:
            self._emit(bytes(self._buf))
            self._buf.clear()
        return len(data)

    def _counting(self, f: BinaryIO) -> _CountingReader:
        return _CountingReader(f, self._on_file_bytes)

    def _add(self, tar: tarfile.TarFile, path: Path, arcname: str) -> None:
        st = os.lstat(path)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            if self._on_warning is not None:
                self._on_warning(f"skipping special file {path}")
            return
        info = tar.gettarinfo(str(path), arcname)
        info.mode &= 0o777  # never setuid, setgid or sticky
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        if stat.S_ISREG(st.st_mode):
            # Never a hard-link entry: each file travels whole, so any subset unpacks on its own.
            info.type, info.linkname, info.size = tarfile.REGTYPE, "", st.st_size
            with open(path, "rb") as f:
                tar.addfile(info, self._counting(f))
        elif stat.S_ISDIR(st.st_mode):
            tar.addfile(info)
            for child in sorted(os.listdir(path)):
                self._add(tar, path / child, f"{arcname}/{child}")
        else:
            tar.addfile(info)

    def _work(self, emit: Emit) -> None:
        self._emit = emit
        # PAX keeps long and non-ASCII names and large sizes exact.
        with tarfile.open(fileobj=self, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for path, name in self._entries:
                self._add(tar, path, name)
        if self._buf:
            emit(bytes(self._buf))

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in iterate_in_thread(self._work, "piping-tar-pack"):
                yield chunk
        except OSError as e:
            raise UsageError(f"cannot read {e.filename or 'a file'}: {e.strerror or e}") from None
        except (tarfile.TarError, ValueError) as e:
            raise UsageError(f"cannot pack the files: {e}") from None


class _CountingReader:
    def __init__(self, f: BinaryIO, on_bytes: Callable[[int], None] | None) -> None:
        self._f = f
        self._on_bytes = on_bytes

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        if self._on_bytes is not None and data:
            self._on_bytes(len(data))
        return data


def _strict_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    parts = member.name.replace("\\", "/").split("/")
    if member.name.startswith("/") or ".." in parts:
        raise ArchiveError(f"unsafe path in the received archive: {member.name!r}")
    if member.issym() and (member.linkname.startswith("/") or ".." in member.linkname.split("/")):
        # data_filter already refuses links that resolve outside; refuse ".." outright, it is never needed.
        raise ArchiveError(f"unsafe link in the received archive: {member.name!r} -> {member.linkname!r}")
    try:
        filtered = tarfile.data_filter(member, dest)
    except tarfile.FilterError as e:
        raise ArchiveError(f"unsafe entry in the received archive: {e}") from None
    if filtered is not None and filtered.isdir():
        # data_filter leaves a folder's mode out (None: the umask's); keep it, made safe.
        filtered = filtered.replace(mode=(member.mode & _SAFE_MODE) | 0o700, deep=False)
    return filtered


def _is_folder(p: Path) -> bool:
    return p.is_dir() and not p.is_symlink()


def _check_clash(dest: Path, member: tarfile.TarInfo) -> None:
    """Refuse an entry that would replace a folder by a file, or a file or link by a folder (at once)."""
    parts = [p for p in member.name.replace("\\", "/").split("/") if p not in ("", ".")]
    for i in range(1, len(parts) + 1):
        existing = dest.joinpath(*parts[:i])
        arriving_folder = i < len(parts) or member.isdir()
        if not (existing.exists() or existing.is_symlink()):
            return  # nothing there: nothing below it either
        if arriving_folder and not _is_folder(existing):
            raise UsageError(f"'{existing}' exists and is not a folder; a folder of that name is arriving")
        if not arriving_folder and _is_folder(existing):
            raise UsageError(f"'{existing}' is a folder; a file of that name is arriving")


def _merge(src: Path, dst: Path) -> None:
    """Move ``src``'s entries into the existing folder ``dst``: files replace files, folders merge."""
    for name in sorted(os.listdir(src)):
        s, d = src / name, dst / name
        if _is_folder(s) and _is_folder(d):
            _merge(s, d)
        elif _is_folder(d):
            raise UsageError(f"'{d}' is a folder; a file of that name arrived")
        elif _is_folder(s) and (d.exists() or d.is_symlink()):
            raise UsageError(f"'{d}' exists and is not a folder; a folder of that name arrived")
        else:
            os.replace(s, d)


class TarUnpacker:
    """Unpacks a tar stream fed with :meth:`feed` into ``dest``, atomically at :meth:`finish`."""

    def __init__(self, dest: Path) -> None:
        self._dest = dest
        if (dest.exists() or dest.is_symlink()) and not _is_folder(dest):
            raise UsageError(f"'{dest}' exists and is not a folder; a folder is arriving")
        parent = dest if dest.is_dir() else dest.parent
        self._tmp = parent / f".{dest.name or 'piping'}.piping-partial-{secrets.token_hex(4)}"
        self._tmp.mkdir()
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._slots = asyncio.Semaphore(_MAX_QUEUED)
        self._loop = asyncio.get_running_loop()
        self._stop = threading.Event()
        self._buf = b""
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="piping-tar-unpack", daemon=True)
        self._thread.start()

    # ---- worker thread side
    def read(self, n: int = -1) -> bytes:  # file-object protocol for tarfile
        while not self._buf:
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    raise Cancelled from None
                continue
            self._loop.call_soon_threadsafe(self._slots.release)
            if item is None:
                self._queue.put(None)  # stay at EOF for later reads
                return b""
            self._buf = item
        if n < 0 or n >= len(self._buf):
            data, self._buf = self._buf, b""
        else:
            data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _run(self) -> None:
        try:
            with tarfile.open(fileobj=self, mode="r|") as tar:  # type: ignore[call-overload]
                tar.extractall(self._tmp, filter=self._filter)
            while self.read(_CHUNK):  # drain the padding after the end-of-archive blocks
                pass
        except Cancelled:
            pass
        except BaseException as e:
            self._error = e
        finally:
            self._done.set()
            # Wake a feed() waiting for room in the queue: no one will take from it any more.
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                self._loop.call_soon_threadsafe(self._release_all)

    def _release_all(self) -> None:
        for _ in range(_MAX_QUEUED + 1):
            self._slots.release()

    def _filter(self, member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        filtered = _strict_filter(member, dest)
        if filtered is not None:
            _check_clash(self._dest, filtered)
        return filtered

    # ---- event loop side
    async def feed(self, data: bytes) -> None:
        if self._error is not None:
            self._raise()
        if self._done.is_set() or not data:
            return
        await self._slots.acquire()
        if self._error is not None:
            self._raise()
        if not self._done.is_set():
            self._queue.put(data)

    def _raise(self) -> None:
        e = self._error
        if isinstance(e, PipingError):
            raise e
        if isinstance(e, tarfile.TarError | EOFError):
            raise ArchiveError(f"the received archive is malformed: {e}")
        if isinstance(e, OSError):
            raise ArchiveError(f"cannot write {e.filename or 'a file'}: {e.strerror or e}")
        raise ArchiveError(f"cannot unpack the received archive: {e}")

    async def finish(self) -> list[Path]:
        """Wait for the worker, then move what was unpacked into place; return the top-level entries."""
        self._queue.put(None)
        while not self._done.is_set():
            await asyncio.sleep(0.02)
        if self._error is not None:
            self.abort()
            self._raise()
        try:
            return self._move_into_place()
        except BaseException:
            self.abort()
            raise

    def _move_into_place(self) -> list[Path]:
        if not (self._dest.exists() or self._dest.is_symlink()):
            self._tmp.rename(self._dest)
            return [self._dest / name for name in sorted(os.listdir(self._dest))]
        if not _is_folder(self._dest):
            raise UsageError(f"'{self._dest}' exists and is not a folder")
        names = sorted(os.listdir(self._tmp))
        _merge(self._tmp, self._dest)
        shutil.rmtree(self._tmp, ignore_errors=True)  # the folders whose entries were merged
        return [self._dest / name for name in names]

    def abort(self) -> None:
        """Stop the worker and delete everything unpacked so far."""
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout=5)
        shutil.rmtree(self._tmp, ignore_errors=True)
