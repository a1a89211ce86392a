"""What every transport's request does the same way: routing, the operator's view, the access record.

``Http1Exchange`` (one HTTP/1 request) and ``Http2Stream`` (one HTTP/2 stream) both derive from
``Exchange``. The routing of a request (an operator's refusal, a page, a sender, a receiver, a
preflight, an unsupported method) is the protocol's, not the transport's, so it lives here once;
each transport supplies how a whole response is written (``_respond``) and the few facts only it
knows (the client's address, the authority, what is still buffered).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, Final

from ..core import ReceiverArrived, SenderArrived, is_reserved, query_param, split_target
from ..pages import render_page
from ._headers import (
    ALLOWED_METHODS,
    MESSAGE_HEADERS,
    QUESTION_HEADER,
    QUESTION_VALUE,
    Headers,
    preflight_headers,
    state_headers,
)
from ._hooks import AccessRecord, Refusal, RequestView
from ._proxies import forwarded_origin

if TYPE_CHECKING:
    from ._flow import Pipe, Relay

_ABSOLUTE_FORM: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


class Exchange:
    """One request and its response, as the relay's endpoint; subclassed by each transport."""

    __slots__ = (
        "method",
        "target",
        "headers",
        "pipe",
        "request_complete",
        "response_ended",
        "_role",
        "_path",
        "_query",
        "_status",
        "_bytes_in",
        "_bytes_out",
        "_started_s",
        "_reported",
        "_origin",
    )

    def __init__(self, method: str, target: str, headers: Headers) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.pipe: Pipe | None = None
        self.request_complete = False
        self.response_ended = False
        self._role = ""  # "sender", "receiver", "page", "preflight", "refused"... once dispatched
        self._path = ""
        self._query = ""
        self._status = 0
        self._bytes_in = 0
        self._bytes_out = 0
        self._started_s = time.monotonic()
        self._reported = False
        self._origin: tuple[str, bool] | None = None  # (client, is_tls) once worked out

    # --- what the transport supplies -------------------------------------------------------------------

    @property
    def transport_name(self) -> str:
        """The transport, "h1" or "h2", for the operator's hooks (a property in every class: it may be compiled)."""
        return ""

    @property
    def relay(self) -> Relay:
        raise NotImplementedError

    @property
    def client(self) -> str:
        """The connection's peer address, "" when unknown (``view()`` sees through a trusted proxy)."""
        raise NotImplementedError

    @property
    def is_tls(self) -> bool:
        raise NotImplementedError

    def authority(self) -> bytes | None:
        """The host the client asked for (Host, or HTTP/2's :authority)."""
        return self.header(b"host")

    def connection_refusal(self) -> Refusal | None:
        """The operator's refusal of this whole connection (a connection limit), if any."""
        return None

    def refused_connection(self) -> None:
        """The connection's refusal was answered: close it once it is."""

    def on_sender(self) -> None:
        """Routed as a sender, before the hub hears of it: its body is to be held until the transfer starts."""

    def on_receiver(self) -> None:
        """Routed as a receiver, before the hub hears of it (a receiver's request body is of no use)."""

    def _respond(self, status: int, headers: Headers, body: bytes, *, head_only: bool = False) -> None:
        """Write a whole response at once: pages, preflights and refusals."""
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------------------------------

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def dispatch(self) -> None:
        """Route the request: an operator's refusal, a page, a sender, a receiver, a preflight, or a 405."""
        path, query = split_target(self.target)
        self._path, self._query = path, query
        method = self.method
        hooks = self.relay.hooks
        if not self._target_form_ok():
            # RFC 9112 3.2 / RFC 9113 8.3.1: never a page nor a transfer on "*" or "version"
            self.refuse(Refusal(status=400, message="[ERROR] Bad request: invalid request target.\n"))
            return
        closing = self.connection_refusal()
        if closing is not None:
            # the operator's connection limit: every request on it gets the refusal, then it closes
            self.refused_connection()
            self.refuse(closing)
            return
        if (
            hooks.forward is not None
            and (method in ("GET", "POST", "PUT") or self.is_question())
            and hooks.forward(self, path)
        ):
            return  # another worker owns the path (--workers): it serves the request, admission included
        if hooks.admit is not None:
            verdict = hooks.admit(self.view())
            if isinstance(verdict, asyncio.Future):
                # decided off the loop (a password hash): a sender's body is held meanwhile
                if method in ("POST", "PUT"):
                    self.on_sender()
                verdict.add_done_callback(self._admitted)
                return
            if verdict is not None:
                self.refuse(verdict)
                return
        self._route()

    def _admitted(self, verdict: asyncio.Future[Refusal | None]) -> None:
        """The operator's deferred answer: route the request, unless it is gone meanwhile (then it is reported)."""
        if self._reported:
            return
        if verdict.cancelled() or verdict.exception() is not None:
            refusal: Refusal | None = Refusal(status=503, message="[ERROR] The request could not be checked.\n")
        else:
            refusal = verdict.result()
        if refusal is not None:
            self.refuse(refusal)
        else:
            self._route()

    def is_question(self) -> bool:
        """``HEAD`` with ``Piping-Ask: state``: a question about the path, not a party (docs/protocol.md section 12)."""
        if self.method != "HEAD":
            return False
        value = self.header(QUESTION_HEADER)
        return value is not None and value.strip().lower() == QUESTION_VALUE

    def refuse(self, refusal: Refusal) -> None:
        """Answer with a refusal: neither a page nor a transfer."""
        self._role = "refused"
        self._respond(refusal.status, [*MESSAGE_HEADERS, *refusal.headers], refusal.message.encode())

    def _route(self) -> None:
        method, path, query = self.method, self._path, self._query
        hooks = self.relay.hooks
        if method in ("GET", "HEAD") and is_reserved(path):
            self._role = "page"
            page = render_page(path, base_url=self._base_url(), query=query, https_port=self.relay.https_port)
            self._respond(page.status, page.headers, page.body, head_only=method == "HEAD")
        elif method in ("POST", "PUT"):
            self._role = "sender"
            self.on_sender()
            self.relay.submit(
                SenderArrived(
                    peer=self,
                    path=path,
                    method=method,
                    n=query_param(query, "n"),
                    has_content_range=self.header(b"content-range") is not None,
                    live=query_param(query, "live"),
                )
            )
        elif method == "GET":
            self._role = "receiver"
            self.on_receiver()
            self.relay.submit(
                ReceiverArrived(
                    peer=self,
                    path=path,
                    n=query_param(query, "n"),
                    is_service_worker=self.header(b"service-worker") == b"script",
                    live=query_param(query, "live"),
                )
            )
        elif method == "HEAD" and self.is_question():
            # Told the path's state, nothing more; the hub is only read: no party waits, nothing is held.
            self._role = "question"
            self.on_receiver()  # a body sent with it is of no use: dropped
            self._respond(204, state_headers(self.relay.hub.path_state(path)), b"")
        elif method == "OPTIONS":
            self._role = "preflight"
            headers = preflight_headers(self.headers)
            allow = hooks.preflight_allow_headers
            if allow is not None:
                headers = [(k, allow if k == b"access-control-allow-headers" else v) for k, v in headers]
            self._respond(200, headers, b"")
        else:
            self._respond(
                405,
                [*MESSAGE_HEADERS, (b"allow", ALLOWED_METHODS)],
                f"[ERROR] Unsupported method: {method}.\n".encode(),
            )

    #: HTTP/1 takes absolute-form targets (``http://host/p``, RFC 9112 3.2.2); HTTP/2's :path never is one
    absolute_form = False

    def _target_form_ok(self) -> bool:
        """Origin-form (``/p``), ``*`` for OPTIONS, or absolute-form where the transport allows it."""
        target = self.target
        if target.startswith("/"):
            return True
        if target == "*":
            return self.method == "OPTIONS"
        return self.absolute_form and _ABSOLUTE_FORM.match(target) is not None

    def view(self) -> RequestView:
        """This request as the operator's hooks see it."""
        client, is_tls = self.origin()
        return RequestView(
            method=self.method,
            path=self._path,
            query=self._query,
            headers=self.headers,
            client=client,
            transport=self.transport_name,
            is_tls=is_tls,
        )

    def origin(self) -> tuple[str, bool]:
        """The client's address and whether it used TLS: the connection's, or a trusted proxy's word for them."""
        origin = self._origin
        if origin is None:
            trusted = self.relay.hooks.trusted_proxies
            origin = (self.client, self.is_tls)
            if trusted:
                origin = forwarded_origin(origin[0], origin[1], self.headers, trusted)
            self._origin = origin
        return origin

    def report(self) -> None:
        """Tell the access hook that this request is over (once)."""
        if self._reported:
            return
        self._reported = True
        on_access = self.relay.hooks.on_access
        if on_access is not None:
            on_access(
                AccessRecord(
                    request=self.view(),
                    status=self._status,
                    bytes_in=self._bytes_in,
                    bytes_out=self._bytes_out,
                    duration_s=time.monotonic() - self._started_s,
                    role=self._role or "other",
                )
            )

    def _base_url(self) -> str:
        """Scheme and host as the client reached us, for /help (docs/protocol.md section 2)."""
        proto = self.header(b"x-forwarded-proto") or b""
        scheme = "https" if self.is_tls or b"https" in proto else "http"
        host = (self.authority() or b"hostname").decode("latin-1")
        return f"{scheme}://{host}"
