"""Reload the config file when it changes on disk or on SIGHUP, without dropping a transfer.

The file is polled (mtime, size, inode) rather than watched with inotify: no dependency, and it
works on every platform and through the symlink swaps of configuration managers. A new file that
does not load or validate is rejected with one ``ERROR`` line, and the old configuration stays in
force. Settings of the listeners (``server.*`` but ``shutdown_grace``, ``metrics.*``) need a restart;
a change to them is logged and otherwise ignored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Callable

from ._config import Config, ConfigError

log = logging.getLogger("piping_server.config")

#: How often the config file's metadata is checked (seconds).
RELOAD_POLL_S = 1.0


def _stamp(path: str) -> tuple[float, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime, st.st_size, st.st_ino)


def keep_restart_only(old: Config, new: Config) -> Config:
    """``new`` with the listener settings of ``old`` (they cannot change in a running process)."""
    kept = dataclasses.replace(old.server, shutdown_grace=new.server.shutdown_grace)
    changed = [
        f"server.{f.name}" for f in dataclasses.fields(kept) if getattr(kept, f.name) != getattr(new.server, f.name)
    ]
    changed += [
        f"metrics.{f.name}"
        for f in dataclasses.fields(old.metrics)
        if getattr(old.metrics, f.name) != getattr(new.metrics, f.name)
    ]
    if changed:
        log.warning("config: %s changed; a restart is needed for that, the old value stays", ", ".join(changed))
    return dataclasses.replace(new, server=kept, metrics=old.metrics)


class ConfigReloader:
    """Loads the file again when asked or when it changes, and hands a valid result to ``apply``."""

    def __init__(self, path: str, load: Callable[[], Config], apply: Callable[[Config], None]) -> None:
        self.path = path
        self._load = load
        self._apply = apply
        self._stamp = _stamp(path)
        self.reloads = 0
        self.rejected = 0

    def reload(self, why: str) -> bool:
        """Load and apply now; False (and the old config kept) when the new one is invalid."""
        self._stamp = _stamp(self.path)
        try:
            config = self._load()
        except ConfigError as exc:
            self.rejected += 1
            log.error("config reload (%s) rejected: %s; the previous configuration stays in force", why, exc)
            return False
        try:
            self._apply(config)
        except (ConfigError, ValueError) as exc:
            self.rejected += 1
            log.error("config reload (%s) rejected: %s; the previous configuration stays in force", why, exc)
            return False
        self.reloads += 1
        log.info("config reloaded from %s (%s)", self.path, why)
        return True

    async def watch(self) -> None:
        """Poll the file until cancelled."""
        while True:
            await asyncio.sleep(RELOAD_POLL_S)
            stamp = _stamp(self.path)
            if stamp is not None and stamp != self._stamp:
                self.reload("file changed")
