"""Rate-limited logging for lines that a peer, or anyone on the network, can cause.

A node facing the network logs every refused connection and every frame it
could not deliver; left alone, one misbehaving peer (or a port scanner) turns
that into thousands of lines a second. :class:`LogLimiter` lets the first
few lines of each kind through, counts the rest, and says how many were held
back on the next line of that kind that passes, so nothing disappears
without a trace.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable, Mapping
from typing import Any

DEFAULT_BURST = 5
DEFAULT_PERIOD = 10.0
_MAX_KEYS = 1024


class LogLimiter:
    """At most ``burst`` lines per key in each ``period`` seconds; the rest are counted.

    The key says which lines are "of a kind" (a peer and a reason, say). A
    line that passes after some were held back carries their count. Safe
    from any thread; the table of keys is bounded (the oldest window goes
    first when it is full).
    """

    def __init__(
        self,
        logger: logging.Logger,
        burst: int = DEFAULT_BURST,
        period: float = DEFAULT_PERIOD,
    ) -> None:
        self._logger = logger
        self._burst = burst
        self._period = period
        self._lock = threading.Lock()
        # key -> [window start, lines logged in it, lines held back since the last one logged]
        self._windows: dict[Hashable, list[Any]] = {}

    def log(
        self,
        level: int,
        key: Hashable,
        msg: str,
        *args: Any,
        extra: Mapping[str, Any] | None = None,
    ) -> bool:
        """Log ``msg % args`` unless this key is over its budget; True if it was logged.

        ``extra``: as for ``logging`` (the structured fields of a JSON line).
        """
        if not self._logger.isEnabledFor(level):
            return False
        now = time.monotonic()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window[0] >= self._period:
                held = window[2] if window is not None else 0
                if window is None and len(self._windows) >= _MAX_KEYS:
                    del self._windows[next(iter(self._windows))]
                window = self._windows[key] = [now, 0, held]
                self._windows[key] = self._windows.pop(key)  # newest last
            if window[1] >= self._burst:
                window[2] += 1
                return False
            window[1] += 1
            held, window[2] = window[2], 0
        if held:
            msg += " (and %d more like it since the last one, not logged)"
            args = (*args, held)
        self._logger.log(level, msg, *args, extra=extra)
        return True
