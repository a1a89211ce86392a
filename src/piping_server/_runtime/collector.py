"""Python's cyclic garbage collector set for a relay: many short-lived objects, few cycles.

A small transfer allocates some hundreds of container objects (exchanges, parsers, heads, handles),
nearly all freed by reference counting as soon as the transfer ends. At Python's default (a young
collection every 700 allocations) a collection ran every few transfers and took some 5 % of a
small transfer's CPU, traversing objects that reference counting was about to free anyway. Fewer,
larger young collections do the same work less often; the garbage they leave waiting is bounded
by the threshold (some megabytes at most), and a quiet server collects it
(``malloc.release_when_quiet``).
"""

from __future__ import annotations

import gc

#: Allocations of container objects between two young collections (Python's default: 700).
YOUNG_THRESHOLD = 20_000


def tune_gc(young_threshold: int = YOUNG_THRESHOLD) -> None:
    """Collect less often, and never again traverse what start-up loaded (modules, pages, config)."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, older, oldest)
