"""A raw HTTP/2 client for the tests: the ``h2`` library over a blocking socket, every frame in view.

curl and httpx hide what these tests look at (which stream is acknowledged, resets, GOAWAY), so the
client here decides itself when to give flow-control windows back, stream by stream.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings

from ..helpers import WAIT_S, Target


@dataclass
class StreamState:
    """What the client has seen on one stream."""

    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None  # the error code of a RST_STREAM from the server
    unacked: int = 0  # flow-controlled bytes not yet given back

    @property
    def status(self) -> int:
        for name, value in self.headers:
            if name == b":status":
                return int(value)
        return 0


class H2Client:
    """One HTTP/2 connection (h2c prior knowledge, or TLS with ALPN h2) to ``target``."""

    def __init__(self, target: Target, *, auto_ack: bool = True, connection_window: int = 1 << 30) -> None:
        raw = socket.create_connection((target.host, target.port), timeout=WAIT_S)
        if target.base_url.startswith("https"):
            ctx = ssl.create_default_context(cafile=target.ca_path)
            ctx.set_alpn_protocols(["h2"])
            self.sock: socket.socket = ctx.wrap_socket(raw, server_hostname=target.host)
            assert self.sock.selected_alpn_protocol() == "h2"  # type: ignore[attr-defined]
        else:
            self.sock = raw
        self.authority = f"{target.host}:{target.port}".encode()
        self.scheme = b"https" if target.base_url.startswith("https") else b"http"
        self.auto_ack = auto_ack
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        # a large connection window: only stream windows hold data back in these tests
        self.conn.increment_flow_control_window(connection_window)
        self.streams: dict[int, StreamState] = {}
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self, method: str, path: str, *, headers: list[tuple[bytes, bytes]] | None = None, end: bool = True
    ) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            stream_id,
            [
                (b":method", method.encode()),
                (b":path", path.encode()),
                (b":scheme", self.scheme),
                (b":authority", self.authority),
                *(headers or []),
            ],
            end_stream=end,
        )
        self.streams[stream_id] = StreamState()
        self.flush()
        return stream_id

    def send(self, stream_id: int, data: bytes, *, end: bool = False) -> None:
        """Send ``data`` on the stream as the windows allow (pumping the connection meanwhile)."""
        view = memoryview(data)
        deadline = time.monotonic() + WAIT_S
        while view:
            window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if window <= 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("no window to send in")
                self.pump(0.05)
                continue
            self.conn.send_data(stream_id, bytes(view[:window]))
            view = view[window:]
            self.flush()
        if end:
            self.conn.end_stream(stream_id)
            self.flush()

    def ack(self, stream_id: int) -> None:
        """Give back the stream's window for everything read so far."""
        state = self.streams[stream_id]
        if state.unacked:
            self.conn.acknowledge_received_data(state.unacked, stream_id)
            state.unacked = 0
            self.flush()

    def reset(self, stream_id: int) -> None:
        self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        self.flush()

    def pump(self, timeout: float) -> bool:
        """Read and handle what arrives within ``timeout``; False when the server closed."""
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except (TimeoutError, ssl.SSLWantReadError):
            return True
        except OSError:
            self.closed = True
            return False
        if not data:
            self.closed = True
            return False
        for event in self.conn.receive_data(data):
            self._handle(event)
        self.flush()
        return True

    def pump_until(self, predicate: object, timeout: float = WAIT_S) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():  # type: ignore[operator]
                return True
            if not self.pump(0.05) and not predicate():  # type: ignore[operator]
                return False
        return bool(predicate())  # type: ignore[operator]

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self.streams[event.stream_id].headers = list(event.headers)  # type: ignore[index, arg-type]
        elif isinstance(event, h2.events.DataReceived):
            state = self.streams[event.stream_id]  # type: ignore[index]
            state.data += event.data or b""
            state.unacked += event.flow_controlled_length or 0
            if self.auto_ack:
                self.ack(event.stream_id)  # type: ignore[arg-type]
        elif isinstance(event, h2.events.StreamEnded):
            self.streams[event.stream_id].ended = True  # type: ignore[index]
        elif isinstance(event, h2.events.StreamReset):
            self.streams[event.stream_id].reset = int(event.error_code)  # type: ignore[index, arg-type]
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = event

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
