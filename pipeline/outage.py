"""Say once that something keeps failing, back off, and say once when it is over.

A process whose database or Redis is away fails the same way on every attempt; a line (or a
traceback) per attempt buries everything else in its log. :class:`Outages` logs ONE warning
when a kind of failure starts, nothing while it lasts, and one warning when a call succeeds
again (with how long it lasted and how many attempts failed), and says when the next attempt
is due: 1, 2, 4 ... at most :data:`MAX_DELAY_S` seconds apart.

One instance per process, kept in its router's or worker's state; nothing here is global.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from pipeline.errors import EcobatchError

log = logging.getLogger(__name__)
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
MAX_REASON_CHARS = 300
SERVICES = frozenset({"database", "redis"})


def failure_kind(exc: BaseException) -> str:
    """What failed, from the error or what caused it: ``database``, ``redis``, or the
    error's class name."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, SQLAlchemyError):
            return "database"
        if isinstance(cause, RedisError):
            return "redis"
        cause = cause.__cause__
    return type(exc).__name__


def reason(exc: BaseException) -> str:
    """The first line of an error's message, shortened for a log line."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return lines[0][:MAX_REASON_CHARS]


def _expected(exc: BaseException, kind: str) -> bool:
    return kind in SERVICES or isinstance(exc, EcobatchError)


@dataclass
class _Outage:
    started: float
    failures: int
    delay_s: float
    next_try: float


class Outages:
    """The kinds of failure going on in one process, and when to try again.

    Args:
        who: names the process in each line (``router``, ``worker cpu``).
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, who: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.who = who
        self.clock = clock
        self._open: dict[str, _Outage] = {}

    def due(self) -> bool:
        """True when nothing is failing, or the backoff of every failure has run out."""
        now = self.clock()
        return all(now >= o.next_try for o in self._open.values())

    def delay_s(self, kind: str) -> float:
        """The current backoff of ``kind`` (0 when it is not failing)."""
        outage = self._open.get(kind)
        return outage.delay_s if outage is not None else 0.0

    def failed(self, exc: BaseException, kind: str | None = None) -> None:
        """Note a failed attempt: one warning if this kind is new, then only a longer backoff.

        An error that is neither an outage of a service nor one of ecobatch's own (a bug,
        rather) is logged with its traceback, once.
        """
        kind = kind or failure_kind(exc)
        now = self.clock()
        outage = self._open.get(kind)
        if outage is None:
            self._open[kind] = _Outage(now, 1, FIRST_DELAY_S, now + FIRST_DELAY_S)
            what = f"{kind} unavailable" if kind in SERVICES else f"failing with {kind}"
            log.warning("%s: %s: %s; retrying with backoff (at most %g s apart), quiet until "
                        "it clears", self.who, what, reason(exc), MAX_DELAY_S,
                        exc_info=None if _expected(exc, kind) else exc)
            return
        outage.failures += 1
        outage.delay_s = min(MAX_DELAY_S, outage.delay_s * 2)
        outage.next_try = now + outage.delay_s
        log.debug("%s: %s still failing (%d failures): %s", self.who, kind,
                  outage.failures, reason(exc))

    def succeeded(self, kind: str | None = None) -> None:
        """Note a successful attempt: one line for each failure it clears (``kind``, or all)."""
        kinds = [kind] if kind is not None else list(self._open)
        for k in kinds:
            outage = self._open.pop(k, None)
            if outage is not None:
                what = f"{k} available again" if k in SERVICES else f"{k} cleared"
                log.warning("%s: %s after %.1f s (%d failed attempt%s)", self.who, what,
                            self.clock() - outage.started, outage.failures,
                            "" if outage.failures == 1 else "s")
