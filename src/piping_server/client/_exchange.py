"""``send_exchange`` / ``get_exchange``: end-to-end encryption without a passphrase, as Piping UI does it.

The two sides exchange signed ECDH keys on paths derived from the secret path (_keyexchange.py),
each shows the verification code, the sender confirms it with an encrypted "verified" message, and
the data goes OpenPGP-encrypted (passphrase: the shared key) in Piping UI Robust chunks
(_robust.py) under the derived main path. docs/key-exchange.md has the whole protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import PurePosixPath
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

from ._common import check_transfer_path
from ._errors import PipingError, ServerRejectedError, ServerUnreachableError, TransferInterruptedError, UsageError
from ._get import GetResult, _Landing, _plan_destination
from ._http import HttpConnection
from ._keyexchange import (
    MAX_PARCEL_BYTES,
    Exchanged,
    ExchangeError,
    Party,
    Role,
    exchange_paths,
    passphrase_of,
    read_verified_parcel,
    verified_parcel,
    verified_path,
)
from ._openpgp import Decryptor, decrypt_bytes, encrypt_bytes
from ._progress import Reporter
from ._robust import receive_chunks, send_chunks
from ._send import SendResult, SendSource, _counted, _encrypted, _prepare, send_async
from ._url import SERVER_ENV, resolve_url

__all__ = ["ExchangeError", "get_exchange_async", "send_exchange_async", "split_exchange_target"]

#: Piping UI retries the verified message every 2 s (src/piping-ui-auth/index.ts); bounded here.
_VERIFIED_RETRY_S = 2.0
_VERIFIED_TRIES = 30
#: how long a sender that refused the code waits for the receiver to take the "not verified" message
_REFUSAL_WAIT_S = 15.0
#: our own member of the verified extension: the data is a tar of a folder (Piping UI ignores it)
_ARCHIVE_MEMBER = "piping_python_archive"

Confirm = Callable[[str], Awaitable[bool]]
T = TypeVar("T")


def split_exchange_target(target: str, server: str | None) -> tuple[str, str]:
    """(server base URL, secret path) of what the user typed: a full URL is taken as server root + path."""
    full = resolve_url(target, server)
    check_transfer_path(full, target)
    parts = urlsplit(full)
    if parts.query:
        raise UsageError("a key-exchange path has no query ('?...'): Piping UI derives its paths from the path alone")
    if "://" in target:
        base = f"{parts.scheme}://{parts.netloc}"
    else:
        raw = server or os.environ.get(SERVER_ENV) or ""
        base = (raw if "://" in raw else "http://" + raw).rstrip("/")
    secret = full[len(base) :].strip("/")
    if not secret:
        raise UsageError("give a secret path for the key exchange, e.g. 'mypath'")
    return base, secret


async def _get_small(url: str, verify_tls: bool) -> bytes:
    """A whole small body (a parcel): more than MAX_PARCEL_BYTES is refused, not gathered."""
    conn = HttpConnection(url, verify=verify_tls)
    try:
        await conn.connect()
        await conn.send_head("GET", [])
        await conn.read_ok_head()
        out = bytearray()
        async for data in conn.iter_body():
            out += data
            if len(out) > MAX_PARCEL_BYTES:
                raise ExchangeError(f"the peer's message is larger than {MAX_PARCEL_BYTES} bytes: not a key exchange")
        return bytes(out)
    finally:
        conn.abort()


async def _exchange(role: Role, base: str, secret: str, verify_tls: bool) -> Exchanged:
    party = Party()
    mine, theirs = exchange_paths(role, secret)
    posted = asyncio.ensure_future(
        send_async(f"{base}/{mine}", party.parcel(), content_type="application/json", verify_tls=verify_tls)
    )
    fetched = asyncio.ensure_future(_get_small(f"{base}/{theirs}", verify_tls))
    try:
        done, _ = await asyncio.wait({posted, fetched}, return_when=asyncio.FIRST_COMPLETED)
        if posted in done:
            posted.result()  # our message was refused (e.g. another sender is on the path)
        # The peer's message is checked as soon as it is here: a bad one ends the exchange at once,
        # without waiting for the peer to take ours.
        exchanged = party.derive(await fetched)
        await posted
        return exchanged
    finally:
        for task in (posted, fetched):
            await _stop(task)


async def _stop(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait for its end. Python 3.11's wait_for (in HttpConnection.connect) can lose a
    cancellation that comes as the connection completes: cancel again until the task is over."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled():
        task.exception()  # retrieved: an ended task's error is not news here


async def _retrying(make: Callable[[], Awaitable[T]]) -> T:
    """Piping UI's loop for the verified message: try again every 2 s (here a bounded number of times)."""
    for tries in range(_VERIFIED_TRIES):
        try:
            return await make()
        except (ServerUnreachableError, ServerRejectedError, TransferInterruptedError):
            if tries == _VERIFIED_TRIES - 1:
                raise
        await asyncio.sleep(_VERIFIED_RETRY_S)
    raise AssertionError("unreachable")


def _data_meta(name: str | None, content_type: str, size: int | None, archive: bool) -> dict[str, Any]:
    suffix = PurePosixPath(name).suffix.lstrip(".") if name else ""
    return {
        "mime_type": "application/x-tar" if archive else content_type,
        "size": None if archive else size,
        "file_name": name,
        "file_extension": suffix or None,
    }


def _name_from_path(secret: str, extension: str | None) -> str:
    """Piping UI's name for data sent without one (a text): the secret path, with the sender's extension
    if it has none (src/piping-ui-utils/decideFileName.ts)."""
    name = secret.rsplit("/", 1)[-1]
    if extension and not re.fullmatch(r".+\..+", name):
        name = f"{name}.{extension}"
    return name


async def send_exchange_async(
    target: str,
    source: SendSource = None,
    *,
    server: str | None = None,
    filename: str | None = None,
    content_type: str | None = None,
    on_code: Callable[[str], None] | None = None,
    confirm: Confirm | None = None,
    reporter: Reporter | None = None,
    verify_tls: bool = True,
) -> SendResult:
    """Exchange keys with the receiver on ``target``, confirm the verification code, send ``source``.

    ``on_code`` is given the verification code; ``confirm`` (default: yes) says whether it matches
    the receiver's. A refusal tells the receiver (as Piping UI's Cancel does) and raises
    :class:`ExchangeError`; nothing is sent.
    """
    reporter = reporter or Reporter()
    base, secret = split_exchange_target(target, server)
    payload = _prepare(source, reporter, filename, content_type)
    reporter.status("[INFO] Waiting for the receiver's key...")
    ex = await _exchange("sender", base, secret, verify_tls)
    if on_code is not None:
        on_code(ex.verification_code)
    verified = True if confirm is None else await confirm(ex.verification_code)
    passphrase = passphrase_of(ex.key)
    extra = {_ARCHIVE_MEMBER: "tar"} if payload.archive else None
    meta = _data_meta(payload.name, payload.content_type, payload.size, payload.archive)
    sealed = await asyncio.to_thread(encrypt_bytes, verified_parcel(verified, meta, extra), passphrase)
    reporter.status("[INFO] Waiting for the receiver to take the confirmation...")
    url = f"{base}/{verified_path(ex.main_path)}"
    if not verified:
        with contextlib.suppress(BaseException):
            await payload.body.aclose()  # type: ignore[attr-defined]
        # Tell the receiver, as Piping UI's Cancel does; one that refused too never asks: do not wait long.
        try:
            await asyncio.wait_for(send_async(url, sealed, verify_tls=verify_tls), _REFUSAL_WAIT_S)
            told = " (the receiver was told)"
        except (PipingError, TimeoutError):
            told = ""
        raise ExchangeError(f"the verification code was not confirmed: nothing was sent{told}")
    await _retrying(lambda: send_async(url, sealed, verify_tls=verify_tls))
    counter = [0]
    body: AsyncIterator[bytes] = _counted(payload.body, None if payload.archive else reporter, counter)
    reporter.begin(payload.size, payload.name or "sending")
    try:
        await send_chunks(base, ex.main_path, _encrypted(body, passphrase, payload.name), verify_tls=verify_tls)
    finally:
        reporter.end()
        with contextlib.suppress(BaseException):
            await body.aclose()  # type: ignore[attr-defined]
    return SendResult(f"{base}/{ex.main_path}", counter[0], payload.archive, [])


async def get_exchange_async(
    target: str,
    dest: str | os.PathLike[str] | BinaryIO | None = None,
    *,
    server: str | None = None,
    extract: bool = True,
    create_dirs: bool = False,
    on_code: Callable[[str], None] | None = None,
    confirm: Confirm | None = None,
    reporter: Reporter | None = None,
    verify_tls: bool = True,
) -> GetResult:
    """Exchange keys with the sender on ``target``, wait for its confirmation, receive into ``dest``
    (as :func:`get_async` does). ``confirm`` (default: yes) may refuse the code: nothing is received."""
    reporter = reporter or Reporter()
    base, secret = split_exchange_target(target, server)
    planned = None if dest is None or hasattr(dest, "write") else _plan_destination(dest, create_dirs)
    ex = await _exchange("receiver", base, secret, verify_tls)
    if on_code is not None:
        on_code(ex.verification_code)
    if confirm is not None and not await confirm(ex.verification_code):
        raise ExchangeError("the verification code was not confirmed: nothing was received")
    passphrase = passphrase_of(ex.key)
    url = f"{base}/{verified_path(ex.main_path)}"
    sealed = await _retrying(lambda: _get_small(url, verify_tls))
    try:
        plain = await asyncio.to_thread(decrypt_bytes, sealed, passphrase)
    except PipingError:
        raise ExchangeError("the sender's confirmation does not decrypt with the exchanged key") from None
    verified, extension = read_verified_parcel(plain)
    if not verified:
        raise ExchangeError("the sender did not confirm the verification code: nothing was sent")
    meta = extension.get("data_meta") if isinstance(extension.get("data_meta"), dict) else {}
    assert isinstance(meta, dict)
    sender_name = meta.get("file_name") if isinstance(meta.get("file_name"), str) else None
    extension_hint = meta.get("file_extension") if isinstance(meta.get("file_extension"), str) else None
    sender_name = sender_name or _name_from_path(secret, extension_hint)
    size = meta.get("size") if isinstance(meta.get("size"), int) else None
    archive = extension.get(_ARCHIVE_MEMBER) == "tar"
    return await _receive(
        base, ex, passphrase, dest, planned, sender_name, size, archive, extract, reporter, verify_tls
    )


async def _receive(
    base: str,
    ex: Exchanged,
    passphrase: str,
    dest: object,
    planned: tuple[Any, bool] | None,
    sender_name: str | None,
    size: int | None,
    archive: bool,
    extract: bool,
    reporter: Reporter,
    verify_tls: bool,
) -> GetResult:
    result = GetResult(f"{base}/{ex.main_path}", 0, archive, sender_name)
    decryptor = Decryptor(passphrase)
    landing = _Landing(dest, planned, archive=archive, extract=extract)

    def name() -> str | None:
        return sender_name or decryptor.filename or None

    async def deliver(data: bytes) -> None:
        if data:
            result.size += len(data)
            reporter.advance(len(data))
            await landing.deliver(data, name())

    reporter.begin(None if archive else size, sender_name or "receiving")
    try:
        async for chunk in receive_chunks(base, ex.main_path, verify_tls=verify_tls):
            await deliver(decryptor.feed(chunk))
        await deliver(decryptor.close())  # the integrity check: nothing is put in place before it passed
        await landing.finish(result, name())
    except BaseException:
        landing.abort()
        raise
    finally:
        reporter.end()
    return result
