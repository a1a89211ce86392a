"""piping-server for Python: a streaming data relay over pure HTTP."""

from __future__ import annotations

from ._compiled import use_sources_if_stale

# Before any module of the package loads: compiled modules that no longer match their sources are
# replaced by those sources (see _compiled.py).
use_sources_if_stale()

__version__ = "0.1.0"

__all__ = ["__version__"]
