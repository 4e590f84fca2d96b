"""Take back batches whose worker died while running them.

A ``kill -9`` of a worker's main process (or of its host) leaves its batch ``running`` with its
Celery message unacknowledged: Redis gives the message back only after the visibility timeout
(an hour by default), and a restarted worker, with a new identity, does not get it sooner.
The worker that claimed a batch is recorded on it (``batch.worker_id``) and keeps a heartbeat
under that identity (``pipeline.broker.alive``). A running batch whose worker's heartbeat is gone
is taken back: set ``dispatched`` again, keeping its counted attempt and the lost worker's
name (which ``ecobatch status`` shows as "worker lost, redelivering"), and published again.

Exactly once: the take-back is one conditional ``UPDATE ... WHERE status = 'running' AND
worker_id = <the lost one>``, so of two routers (or a router and ``ecobatch reconcile``) one
takes a batch back and publishes it, and a batch that finished or was claimed meanwhile is
left alone. When the old message does come back, its claim finds the batch done and skips it,
or finds it running and backs off (``pipeline.ledger.batches.claim_batch``); it never runs it twice
at once on purpose.

A heartbeat is missed for two checks at least ``confirm_s`` apart before a batch is taken
back, so that a Redis restart (which empties every heartbeat key until the next beat) is not
mistaken for dead workers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from pipeline.broker.alive import live_workers
from pipeline.errors import ServiceError
from pipeline.fleet.devices import device_queue
from pipeline.ledger.models import Batch, BatchStatus
from pipeline.ledger.state import take_back_batch
from router.live.route import PublishMany

log = logging.getLogger(__name__)
_BATCH = Batch.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Claim:
    """A running batch and the worker that claimed it."""

    batch_id: str
    worker_id: str
    device: str
    attempts: int


def lost_claims(engine: Engine, client: redis.Redis) -> list[Claim]:
    """Running batches whose worker has no live heartbeat.

    Raises:
        ServiceError: SQL or Redis cannot be read.
    """
    c = _BATCH.c
    stmt = select(c.id, c.worker_id, c.device, c.attempts).where(
        c.status == BatchStatus.RUNNING, c.worker_id.is_not(None))
    try:
        with engine.connect() as conn:
            claims = [Claim(str(b), str(w), str(d), int(n)) for b, w, d, n in conn.execute(stmt)]
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot read running batches: {e}") from e
    alive = live_workers(client, {cl.worker_id for cl in claims})
    return [cl for cl in claims if cl.worker_id not in alive]


@dataclass
class LostWorkerWatch:
    """When each running batch's worker was first seen without a heartbeat.

    Args:
        confirm_s: how long a heartbeat must stay missing before its batch is taken back.
        clock: monotonic seconds.
    """

    confirm_s: float
    clock: Callable[[], float] = time.monotonic
    first_missing: dict[str, float] = field(default_factory=dict)

    def confirmed(self, lost: list[Claim]) -> list[Claim]:
        """The claims in ``lost`` whose worker has been missing for ``confirm_s`` or more."""
        now = self.clock()
        seen = {cl.batch_id for cl in lost}
        self.first_missing = {b: t for b, t in self.first_missing.items() if b in seen}
        for cl in lost:
            self.first_missing.setdefault(cl.batch_id, now)
        return [cl for cl in lost if now - self.first_missing[cl.batch_id] >= self.confirm_s]


def take_back(engine: Engine, publish: PublishMany, claims: list[Claim]) -> int:
    """Set each claimed batch ``dispatched`` again if it is still running under the lost
    worker, then publish the ones taken; return how many.

    Raises:
        ServiceError: the database cannot be written (nothing was taken back then).
    """
    taken = []
    try:
        with engine.begin() as conn:
            for cl in claims:
                if take_back_batch(conn, cl.batch_id, cl.worker_id, lost_note(cl)):
                    taken.append(cl)
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot take back batches of lost workers: {e}") from e
    if taken:
        publish([(cl.batch_id, device_queue(cl.device)) for cl in taken])
        log.warning("worker lost, redelivering %d batches: %s", len(taken),
                    ", ".join(sorted(f"{cl.batch_id} (worker {cl.worker_id})" for cl in taken)))
    return len(taken)


def lost_note(claim: Claim) -> str:
    """The batch's error after it was taken back (the dead-letter reason repeats it)."""
    return (f"attempt {claim.attempts} did not finish: worker {claim.worker_id} was lost "
            "(its heartbeat stopped); redelivering")


def take_back_lost(engine: Engine, client: redis.Redis, publish: PublishMany,
                   watch: LostWorkerWatch) -> int:
    """One check (the router's): take back the batches ``watch`` confirms lost.

    Raises:
        ServiceError: SQL or Redis failed.
    """
    return take_back(engine, publish, watch.confirmed(lost_claims(engine, client)))


def take_back_now(engine: Engine, client: redis.Redis, publish: PublishMany, confirm_s: float,
                  sleep: Callable[[float], None] = time.sleep) -> int:
    """By hand (``ecobatch reconcile``): check, and if some worker seems lost, check again
    ``confirm_s`` later and take back what is still lost.

    Raises:
        ServiceError: SQL or Redis failed.
    """
    watch = LostWorkerWatch(confirm_s)
    watch.confirmed(lost_claims(engine, client))
    if not watch.first_missing:
        return 0
    sleep(confirm_s)
    return take_back_lost(engine, client, publish, watch)
