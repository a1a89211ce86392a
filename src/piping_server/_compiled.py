"""The modules compiled with mypyc, and falling back to their sources when that build is stale.

A small transfer is mostly Python-level work (parse, rendezvous, heads, close: some 500 function
calls), so the transfer path is compiled to C by mypyc at install time (setup.py), where a C
compiler is found; everything else, and any install without a compiler, runs as plain Python.
The compiled modules share one library, ``SHARED_LIBRARY``, and call into each other directly, so
they are used all together or not at all: if one of them is older than its source in an editable
install (an edit since the last build), or the shared library is missing, or ``PIPING_PURE=1``,
every one of them is imported from its ``.py`` instead. Not itself compiled: it runs before any
compiled module loads.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

#: The transfer path (protocol engines, rendezvous, relay) and the modules whose classes extend it
#: (a compiled class may not be extended by interpreted code). Read by setup.py.
COMPILED_MODULES: tuple[str, ...] = (
    "piping_server.core._events",
    "piping_server.core._hub",
    "piping_server.core._paths",
    "piping_server.relay._exchange",
    "piping_server.relay._flow",
    "piping_server.relay._headers",
    "piping_server.relay._hooks",
    "piping_server.http1.protocol",
    "piping_server.http1._body",
    "piping_server.http1._fanout",
    "piping_server.http1._hangup",
    "piping_server.http1._idle",
    "piping_server.http1._rules",
    "piping_server.http1._splice",
    "piping_server.http2.protocol",
    "piping_server.http2._guard",
    "piping_server.http2._inbound",
    "piping_server.server._handover",
    "piping_server.server._owner_relay",
    "piping_server.ops._limits",
)
#: mypyc's library of the group (setup.py: ``group_name="piping_server"``), a top-level module.
SHARED_LIBRARY = "piping_server__mypyc"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
#: An editable install runs the checkout's ``src/piping_server`` (setup.py two levels up): only there
#: can a source change after its build. An installed wheel's files all date from the install, the
#: sources often a little after their compiled modules (pip writes them in the wheel's order).
_IN_CHECKOUT = os.path.exists(os.path.join(os.path.dirname(os.path.dirname(_PACKAGE_DIR)), "setup.py"))
#: Two reasons of ``why_sources`` that are no fault of the build: asked for, or nothing compiled.
_PURE = "PIPING_PURE=1"
_NOT_COMPILED = "not compiled at install"


def _paths(module: str) -> tuple[str, str]:
    """The module's source file and its compiled file (which may not exist)."""
    base = os.path.join(os.path.dirname(_PACKAGE_DIR), *module.split("."))
    return base + ".py", base + importlib.machinery.EXTENSION_SUFFIXES[0]


def why_sources() -> str | None:
    """Why the compiled modules are not used (None: they are), in a few words."""
    if os.environ.get("PIPING_PURE") == "1":
        return _PURE
    built = [(source, compiled) for source, compiled in map(_paths, COMPILED_MODULES) if os.path.exists(compiled)]
    if not built:
        return _NOT_COMPILED
    if len(built) < len(COMPILED_MODULES):
        return "only some modules are compiled"
    if importlib.util.find_spec(SHARED_LIBRARY) is None:
        return f"{SHARED_LIBRARY} is missing"
    for source, compiled in built if _IN_CHECKOUT else ():
        if os.path.exists(source) and os.path.getmtime(source) > os.path.getmtime(compiled):
            return f"{os.path.basename(source)} is newer than its compiled module (pip install -e . rebuilds)"
    return None


def needs_rebuild() -> bool:
    """The install compiled these modules, but that build no longer matches the sources."""
    return why_sources() not in (None, _PURE, _NOT_COMPILED)


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the compiled modules' sources ahead of the extension modules beside them."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in COMPILED_MODULES:
            return None
        source = _paths(fullname)[0]
        if not os.path.exists(source):  # a frozen executable: only what it holds can be imported
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def use_sources_if_stale() -> None:
    """Import every compiled module from its source if the compiled set cannot be used as a whole."""
    reason = why_sources()
    if reason is None or reason == _NOT_COMPILED:
        return
    sys.meta_path.insert(0, _SourceFinder())  # (with PIPING_PURE=1 and nothing compiled: the same imports)
    if reason != _PURE:
        print(f"piping_server: running the sources, not the compiled modules: {reason}", file=sys.stderr)
