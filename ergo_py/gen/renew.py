"""Automatic certificate renewal for a cert manager (``manager.set_renew``).

:class:`RenewSchedule` says when: at ``at`` of the certificate's lifetime,
plus or minus ``jitter`` of it, drawn once per certificate, so that a fleet
issued at the same moment spreads its renewals over a window instead of
asking its CA all at once. It is a pure computation (clock and randomness
are passed in), tested without waiting.

:class:`Renewer` does it: one thread per manager, started by ``set_renew``
and ended (and joined) by ``set_renew(None)`` or ``manager.close()``. It
sleeps until the due moment, calls the renew function on its own thread (it
may block: a CA over the network), and hands the result to
``manager.update()``, which validates it like any other change. A failure is
logged, kept in :attr:`Renewer.last_error`, and tried again after a tenth of
the time left (between 0.5 s and 5 min); a refused update is also reported
to the manager's listeners (``EventCertRejected``).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ergo_py.gen.errors import ErrIncorrect

if TYPE_CHECKING:
    from ergo_py.gen.cert import Certificate
    from ergo_py.gen.certmanager import CertManager

__all__ = ["DEFAULT_RENEW_AT", "DEFAULT_RENEW_JITTER", "RenewSchedule", "Renewer"]

log = logging.getLogger(__name__)

DEFAULT_RENEW_AT = 2 / 3
DEFAULT_RENEW_JITTER = 0.1
_RETRY_MIN = 0.5
_RETRY_MAX = 300.0
_MAX_SLEEP = 60.0  # wake up at least this often (clock jumps, a missed wake-up)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class RenewSchedule:
    """When to renew: ``at`` of the lifetime, ± ``jitter`` of the lifetime."""

    at: float = DEFAULT_RENEW_AT
    jitter: float = DEFAULT_RENEW_JITTER

    def __post_init__(self) -> None:
        for what, value in (("at", self.at), ("jitter", self.jitter)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ErrIncorrect(f"renew {what} must be a number, not {value!r}")
        if not 0 < self.at < 1:
            raise ErrIncorrect(f"renew at must be a fraction of the lifetime in (0, 1): {self.at}")
        if not 0 <= self.jitter < min(self.at, 1 - self.at):
            raise ErrIncorrect(
                f"renew jitter must be >= 0 and keep at ± jitter inside (0, 1): {self.jitter}"
            )

    def window(self, cert: Certificate) -> tuple[datetime, datetime]:
        """The earliest and latest moment a renewal of ``cert`` can be due."""
        life = cert.not_after - cert.not_before
        return (
            cert.not_before + life * (self.at - self.jitter),
            cert.not_before + life * (self.at + self.jitter),
        )

    def due(self, cert: Certificate, installed_at: datetime, rand: random.Random) -> datetime:
        """When to renew ``cert``, which became current at ``installed_at``.

        A certificate that arrives past its own due moment (backdated, or
        applied late) is renewed at the same fraction of the time it has
        left, never at once: otherwise each renewal could trigger the next.
        """
        fraction = self.at + rand.uniform(-self.jitter, self.jitter)
        due = cert.not_before + (cert.not_after - cert.not_before) * fraction
        if due <= installed_at:
            due = installed_at + (cert.not_after - installed_at) * fraction
        return due


def retry_after(cert: Certificate, now: datetime) -> float:
    """Seconds until the next attempt after a failed renewal."""
    left = (cert.not_after - now).total_seconds()
    return max(_RETRY_MIN, min(left / 10, _RETRY_MAX))


class Renewer:
    """Renews one manager's certificate on schedule (see the module docstring).

    ``clock`` and ``rand`` are injectable for tests. Attributes a caller may
    read: ``renewals`` (successful ones), ``last_error`` (the last failure,
    None after a success), :meth:`planned` (the next due moment).
    """

    def __init__(
        self,
        manager: CertManager,
        func: Callable[[], Certificate],
        schedule: RenewSchedule,
        *,
        clock: Callable[[], datetime] = _now,
        rand: random.Random | None = None,
    ) -> None:
        self.manager = manager
        self.func = func
        self.schedule = schedule
        self._clock = clock
        self._rand = rand or random.Random()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._plan: tuple[str, datetime] | None = None  # (fingerprint, due)
        self._unsubscribe: Callable[[], None] | None = None
        self.renewals = 0
        self.last_error: str | None = None

    def planned(self) -> datetime | None:
        """When the current certificate is due for renewal (None before the first plan)."""
        plan = self._plan
        return plan[1] if plan is not None else None

    def plan(self) -> datetime:
        """The due moment for the current certificate (drawn once per certificate)."""
        cert = self.manager.get_certificate()
        plan = self._plan
        if plan is None or plan[0] != cert.fingerprint:
            plan = (cert.fingerprint, self.schedule.due(cert, self._clock(), self._rand))
            self._plan = plan
            log.info(
                "certificate %.16s (valid until %s) renews at %s",
                cert.fingerprint,
                cert.not_after.isoformat(),
                plan[1].isoformat(),
            )
        return plan[1]

    def start(self) -> None:
        self.plan()
        self._unsubscribe = self.manager.subscribe(lambda _state: self._wake.set())
        self._thread = threading.Thread(target=self._run, name="ergo-py cert renew", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the thread and wait for it (a renewal under way completes first)."""
        self._stopping = True
        self._wake.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    def _run(self) -> None:
        while not self._stopping:
            wait = (self.plan() - self._clock()).total_seconds()
            if wait > 0:
                self._wake.wait(min(wait, _MAX_SLEEP))
                self._wake.clear()
                continue
            self.renew_now()

    def renew_now(self) -> bool:
        """One renewal attempt, on the calling thread; True if the certificate changed."""
        current = self.manager.get_certificate()
        try:
            self.manager.update(self.func())
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            delay = retry_after(current, self._clock())
            log.warning(
                "certificate renewal failed (%s); retrying in %.1f s", self.last_error, delay
            )
            if self.manager.get_certificate().fingerprint == current.fingerprint:
                self._plan = (current.fingerprint, self._clock() + timedelta(seconds=delay))
            return False
        self.renewals += 1
        self.last_error = None
        return True
