"""``get``: receive from a Piping path into a file, a folder (tar sent by ``send``), a stream, or memory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ._channel import widen_pipe
from ._common import check_transfer_path, is_tar, parse_filename, safe_filename
from ._errors import PipingError, UsageError
from ._http import HttpConnection
from ._openpgp import Decryptor
from ._progress import Reporter
from ._tar import TarUnpacker
from ._url import resolve_url

__all__ = ["GetResult", "get", "get_async"]


@dataclass
class GetResult:
    """What arrived: the URL, the payload size (after decryption), where it went, the sender's file name."""

    url: str
    size: int
    archive: bool
    filename: str | None
    paths: list[Path] = field(default_factory=list)
    data: bytes | None = None


def _plan_destination(dest: str | os.PathLike[str], create_dirs: bool) -> tuple[Path, bool]:
    """Check ``-o DEST`` before joining a transfer; return the path and whether it names a folder.

    curl's rule: ``DEST`` (or, for ``DEST/`` and an existing folder, ``DEST`` itself) must be in a
    folder that exists, unless ``create_dirs`` asks to create the missing folders; existing files
    are overwritten later, and existing folders receive what arrives.
    """
    path = Path(dest)
    names_folder = str(dest).endswith(("/", os.sep)) or path.is_dir()
    folder = path if names_folder else path.parent
    if not folder.is_dir():
        if folder.exists() or folder.is_symlink():
            raise UsageError(f"'{folder}' is not a folder")
        if not create_dirs:
            raise UsageError(f"the folder '{folder}' does not exist (--create-dirs creates it)")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create the folder '{folder}': {e.strerror or e}") from None
    return path, names_folder


class _FileSink:
    """Writes to a hidden temporary file next to the target, renamed into place only on success."""

    def __init__(self, dest: Path, dest_is_dir: bool) -> None:
        self._dest = dest
        self._dest_is_dir = dest_is_dir
        self._tmp: Path | None = None
        self._f: BinaryIO | None = None
        self.final: Path | None = None

    def open(self, name: str | None) -> None:
        target = self._dest / safe_filename(name) if self._dest_is_dir else self._dest
        if target.is_dir() and not target.is_symlink():
            # An existing file is overwritten (as curl -o does), a folder never.
            raise UsageError(f"'{target}' is a folder; a file of that name is arriving")
        self._tmp = target.parent / f".{target.name}.piping-partial-{secrets.token_hex(4)}"
        self._f = open(self._tmp, "xb")  # noqa: SIM115 - closed in commit/abort
        self.final = target

    def write(self, data: bytes, name: str | None) -> None:
        if self._f is None:
            self.open(name)
        assert self._f is not None
        self._f.write(data)

    def commit(self, name: str | None) -> Path:
        if self._f is None:
            self.open(name)  # an empty transfer still makes an (empty) file
        assert self._f is not None and self._tmp is not None and self.final is not None
        self._f.close()
        os.replace(self._tmp, self.final)
        return self.final

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.unlink()


async def get_async(
    url: str,
    dest: str | os.PathLike[str] | BinaryIO | None = None,
    *,
    server: str | None = None,
    n: int | None = None,
    from_start: bool = False,
    passphrase: str | None = None,
    extract: bool = True,
    create_dirs: bool = False,
    reporter: Reporter | None = None,
    verify_tls: bool = True,
) -> GetResult:
    """Receive from ``url``.

    ``dest``: ``None`` returns the bytes in :attr:`GetResult.data`; a binary file object (``stdout``)
    gets the raw stream; a path gets a file, or, for a folder sent by :func:`send` (when ``extract``),
    the unpacked folder. An existing directory (or a path ending in ``/``) receives the file under the
    sender's name, or the folder's entries. Existing files are overwritten and existing folders
    receive what arrives; the folder ``dest`` is in must exist unless ``create_dirs``. That is checked
    before the transfer is joined, and a clash (a file where a folder is, or the reverse) ends it
    when the clashing entry arrives, so that the sender learns that it failed. The file or folder
    appears only once everything arrived (and was verified, with a ``passphrase``).
    """
    reporter = reporter or Reporter()
    if from_start and n is not None:
        raise UsageError("--from-start waits for a live sender, which has no number of receivers: drop --n")
    # ``from_start``: wait for a live sender with ``?live``, so as to get its stream from byte 0 (section 11)
    full_url = resolve_url(url, server, n, live=from_start)
    check_transfer_path(full_url, url)
    planned: tuple[Path, bool] | None = None
    if dest is not None and not hasattr(dest, "write"):
        planned = _plan_destination(dest, create_dirs)
    conn = HttpConnection(full_url, verify=verify_tls)
    try:
        await conn.connect()
        await conn.send_head("GET", [])
        head = await conn.read_ok_head()
        archive = is_tar(head.header_all("X-Piping"))
        header_name = parse_filename(head.header("Content-Disposition"))
        length = head.header("Content-Length")
        total = int(length) if length and length.isdigit() and not passphrase else None
        decryptor = Decryptor(passphrase) if passphrase else None
        result = GetResult(full_url, 0, archive, header_name)

        landing = _Landing(dest, planned, archive=archive, extract=extract)
        stream = landing.stream
        if landing.sink is not None and not passphrase:
            landing.sink.open(header_name)  # decide before taking the data (encrypted: the name is inside)

        def name() -> str | None:
            return (decryptor.filename if decryptor is not None else None) or header_name

        async def deliver(data: bytes) -> None:
            if data:
                result.size += len(data)
                await landing.deliver(data, name())

        reporter.begin(total, safe_filename(header_name, "receiving"))
        out_fd = _fileno(stream) if stream is not None else None
        if out_fd is not None:
            widen_pipe(out_fd)
        if decryptor is not None:
            out_fd = None  # the plaintext comes out of the decryptor, written below
        try:
            if out_fd is not None:
                assert stream is not None
                stream.flush()  # what the caller wrote before goes first
                # Straight to the descriptor: spliced into a pipe, else read and written in large slices.
                result.size = await conn.copy_body_to(out_fd, reporter.advance)
            else:
                async for chunk in conn.iter_body():
                    reporter.advance(len(chunk))
                    await deliver(decryptor.feed(chunk) if decryptor is not None else chunk)
            if decryptor is not None:
                # The integrity check (MDC) happens here; nothing is put in place before it passed.
                await deliver(decryptor.close())
            await landing.finish(result, name())
        except BaseException:
            landing.abort()
            raise
        finally:
            reporter.end()
        return result
    except OSError as e:
        if isinstance(e, BrokenPipeError):
            raise
        raise PipingError(f"cannot write {e.filename or 'the output'}: {e.strerror or e}") from None
    finally:
        conn.abort()


class _Landing:
    """Where a received body lands, put in place only at the end: in memory (no destination), a stream the
    caller gave, or a planned path (a tar unpacked into a folder, else one file)."""

    def __init__(self, dest: object, planned: tuple[Path, bool] | None, *, archive: bool, extract: bool) -> None:
        self.memory: list[bytes] | None = [] if dest is None else None
        self.stream: BinaryIO | None = dest if hasattr(dest, "write") else None  # type: ignore[assignment]
        self.unpacker: TarUnpacker | None = None
        self.sink: _FileSink | None = None
        if planned is not None and self.memory is None and self.stream is None:
            path, names_folder = planned
            if archive and extract:
                self.unpacker = TarUnpacker(path)
            else:
                self.sink = _FileSink(path, names_folder)

    async def deliver(self, data: bytes, name: str | None) -> None:
        if self.memory is not None:
            self.memory.append(data)
        elif self.stream is not None:
            self.stream.write(data)
        elif self.unpacker is not None:
            await self.unpacker.feed(data)
        elif self.sink is not None:
            self.sink.write(data, name)

    async def finish(self, result: GetResult, name: str | None) -> None:
        """Everything arrived (and was verified): put it in place and say where in ``result``."""
        if self.stream is not None:
            self.stream.flush()
        if self.unpacker is not None:
            result.paths = await self.unpacker.finish()
        elif self.sink is not None:
            result.paths = [self.sink.commit(name)]
        result.filename = name
        if self.memory is not None:
            result.data = b"".join(self.memory)

    def abort(self) -> None:
        if self.unpacker is not None:
            self.unpacker.abort()
        if self.sink is not None:
            self.sink.abort()


def _fileno(stream: BinaryIO) -> int | None:
    """The descriptor under a binary stream (stdout, an open file), or None (an in-memory buffer)."""
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the last two
        return None


def get(url: str, dest: str | os.PathLike[str] | BinaryIO | None = None, **kwargs: object) -> GetResult:
    """Blocking :func:`get_async` (same arguments)."""
    return asyncio.run(get_async(url, dest, **kwargs))  # type: ignore[arg-type]
