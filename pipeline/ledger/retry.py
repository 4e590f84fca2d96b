"""Retry a database call while the database is unreachable, with exponential backoff.

A worker that has already decoded a batch should not throw its answers away because the
database blinked: it keeps the results in memory and retries the write for a while.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError, ProgrammingError

from pipeline.errors import ServiceError
from pipeline.outage import Outages, reason

T = TypeVar("T")
log = logging.getLogger(__name__)
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 10.0
TRANSIENT = (OperationalError, InterfaceError, ServiceError)
"""Connection-level failures (refused, reset, locked); constraint errors are never retried."""


def is_permanent(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is a database error that would recur on retry:
    data the column cannot hold, a broken constraint, bad SQL."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, DataError | IntegrityError | ProgrammingError):
            return True
        cause = cause.__cause__
    return False


def retry_db(call: Callable[[], T], *, total_s: float, first_delay_s: float = FIRST_DELAY_S,
             sleep: Callable[[float], None] = time.sleep, outages: Outages | None = None) -> T:
    """Return ``call()``, retrying transient database errors for up to ``total_s`` seconds.

    With ``outages`` (the process's), an outage is logged once there and its end once, not
    each attempt.

    Raises:
        OperationalError, InterfaceError, ServiceError: still failing after ``total_s``.
    """
    deadline = time.monotonic() + total_s
    delay_s = first_delay_s
    attempt = 1
    while True:
        try:
            result = call()
        except TRANSIENT as e:
            if time.monotonic() + delay_s > deadline:
                raise
            if outages is not None:
                outages.failed(e, "database")
            else:
                log.warning("database unavailable (attempt %d: %s); retrying in %.1f s",
                            attempt, reason(e), delay_s)
        else:
            if outages is not None:
                outages.succeeded("database")
            return result
        sleep(delay_s)
        delay_s = min(MAX_DELAY_S, delay_s * 2)
        attempt += 1
