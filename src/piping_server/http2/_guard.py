"""What one HTTP/2 connection may make the server do: refilling budgets for frames that cost work.

RFC 9113 section 10.5: an endpoint that does not watch the use of RST_STREAM, PING, SETTINGS and the
like "exposes itself to a risk of denial of service". Each kind of costly frame draws from a token
bucket: a burst a legitimate client never comes near (a browser cancelling a page's fetches, a
keep-alive PING), refilled at a steady rate; a connection that empties one is ended with GOAWAY
ENHANCE_YOUR_CALM. nghttp2 does the same for resets (burst 1,000, refill 33/s).
"""

from __future__ import annotations

__all__ = [
    "CONTROL_BURST",
    "CONTROL_RATE",
    "RESET_BURST",
    "RESET_RATE",
    "Budget",
]

#: Streams a client may reset (or have refused, or end before they are answered) at once, then per second.
#: CVE-2023-44487 (rapid reset) opened and reset hundreds of thousands of streams on one connection.
RESET_BURST = 1000
RESET_RATE = 100.0
#: PING and SETTINGS frames (each answered with an ACK) a client may send at once, then per second. A client
#: that sends them and never reads made the server queue every ACK.
CONTROL_BURST = 1000
CONTROL_RATE = 100.0


class Budget:
    """A token bucket: ``burst`` events at once, refilled by ``rate`` per second up to ``burst``."""

    __slots__ = ("_burst", "_rate", "_tokens", "_stamp")

    def __init__(self, burst: int, rate: float, now: float) -> None:
        self._burst = float(burst)
        self._rate = rate
        self._tokens = float(burst)
        self._stamp = now

    def spend(self, now: float, count: int = 1) -> bool:
        """Take ``count`` events out; False once the budget is overdrawn (and it stays so until refilled)."""
        tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate) - count
        self._stamp = now
        self._tokens = tokens
        return tokens >= 0
