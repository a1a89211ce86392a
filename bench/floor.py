"""The floor of a small transfer on our stack: the least relay that uvloop and httptools allow.

    python bench/floor.py --port 8081            # serve; then bench/run.py-style light clients

One process, plain HTTP/1.1, ``Content-Length`` uploads only, one receiver per path, no checks,
no progress lines beyond the two the light clients wait for, no limits: everything that a real
server adds is left out. What remains is what every Python server on this stack pays per small
transfer (accept, one read and one parse per request, the heads, the data, close), so its CPU per
transfer is the floor that ``piping-server``'s own is measured against (bench/README.md,
"CPU per small transfer against Rust"). Not a server to use: it answers nothing but this.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import cast

import httptools
import uvloop

_RECEIVER_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
)
_SENDER_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
_SENDER_DONE = b"[INFO] All receiver(s) was/were received successfully.\n"
#: Paths with a party waiting: the receiver's transport, or the sender's (transport, body).
_waiting: dict[bytes, object] = {}


class FloorProtocol(asyncio.Protocol):
    __slots__ = ("_transport", "_parser", "_url", "_body", "_length")

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._body = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._transport.close()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        path = self._url
        if path == b"/version":  # bench/run.py asks it once, to know the server is up
            self._transport.write(_SENDER_HEAD % 6 + b"floor\n")
            self._transport.close()
            return
        party = _waiting.pop(path, None)
        if self._parser.get_method() == b"GET":
            if party is None:
                _waiting[path] = self._transport
            else:
                sender, body = cast(tuple[asyncio.Transport, bytes], party)
                _deliver(sender, body, self._transport)
        elif party is None:
            _waiting[path] = (self._transport, bytes(self._body))
        else:
            _deliver(self._transport, bytes(self._body), cast(asyncio.Transport, party))

    def connection_lost(self, exc: Exception | None) -> None:
        pass


def _deliver(sender: asyncio.Transport, body: bytes, receiver: asyncio.Transport) -> None:
    receiver.write(_RECEIVER_HEAD % len(body) + body)
    receiver.close()
    sender.write(_SENDER_HEAD % len(_SENDER_DONE) + _SENDER_DONE)
    sender.close()


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FloorProtocol, host, port, backlog=1024, reuse_address=True)
    for sock in server.sockets:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", "--port", dest="port", type=int, default=8081)
    args = parser.parse_args()
    uvloop.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
