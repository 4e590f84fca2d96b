"""The expiry sweeper: a thread of ``ecobatch serve`` that settles every open batch on its own.

Without it a batch would expire, or get its output and error files, only when someone reads
it. Every ``interval_s`` the sweeper reads each batch not yet finalised, of every key, exactly
as ``GET /v1/batches/{id}`` would: one whose completion window has passed is expired (its job
cancelled, the requests that never started land in the error file as expired), and one whose
job has ended is finalised.
"""

from __future__ import annotations

import logging
import threading

from pipeline.app.serve.batches import BatchService, batch_object
from pipeline.errors import EcobatchError

log = logging.getLogger(__name__)


def sweep(svc: BatchService) -> int:
    """Settle every open batch once; return how many were looked at.

    A batch that fails to settle (its job unreadable, say) is logged and left for the next
    sweep; the others are still settled.
    """
    seen = 0
    for owner in svc.store.owners():
        for record in svc.store.batches(owner):
            if "failed_at" in record or "finalizing_at" in record:
                continue
            seen += 1
            try:
                batch_object(svc, owner, record)
            except (EcobatchError, OSError) as e:
                log.warning("expiry sweep: batch %s not settled this time: %s", record["id"], e)
    return seen


class Sweeper:
    """Runs :func:`sweep` every ``interval_s`` in a daemon thread until :meth:`stop`."""

    def __init__(self, svc: BatchService, interval_s: float) -> None:
        self._svc = svc
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="expiry-sweeper", daemon=True)

    def start(self) -> None:
        """Start sweeping."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the sweep in progress, if any."""
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                sweep(self._svc)
            except (EcobatchError, OSError) as e:  # the files folder away: try again later
                log.warning("expiry sweep failed: %s", e)
