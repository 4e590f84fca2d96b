"""Recover everything a broker loss dropped, from SQL (the record of truth).

When Redis restarts without its data (``kill -9``, or a clean restart without persistence),
three things are gone: the pending list, the queued ``ecobatch.infer_batch`` messages and the
unacknowledged ones. :func:`recover` puts them back: pending prompts are re-enqueued
(:func:`pipeline.broker.restore.reconcile`), batches still ``dispatched`` are published again, and
so are batches left ``running`` for longer than a task may run (their worker is gone too).

A batch published twice is harmless: the second delivery finds it settled and skips it, or
runs it again and upserts the same rows (one per prompt).

The router notices a loss by a marker key (:data:`EPOCH_KEY`) it sets with ``NX``: on a fresh
or emptied Redis the set succeeds, which is also the case at the router's first start.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import redis
from redis.exceptions import RedisError
from sqlalchemy import Engine, and_, exists, or_, select
from sqlalchemy.exc import SQLAlchemyError

from pipeline.broker.restore import reconcile
from pipeline.errors import ServiceError
from pipeline.fleet.devices import device_queue
from pipeline.ledger.models import Batch, BatchStatus, Result
from router.live.route import Dispatch, PublishMany

log = logging.getLogger(__name__)
EPOCH_KEY = "ecobatch:epoch"
_BATCH = Batch.__table__.c  # type: ignore[attr-defined]
_RESULT = Result.__table__.c  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Recovery:
    """What :func:`recover` put back: prompt references and batch messages."""

    prompts: int
    batches: int

    def as_dict(self) -> dict[str, int]:
        """JSON-ready form."""
        return asdict(self)


def broker_was_reset(client: redis.Redis) -> bool:
    """True when Redis holds no epoch marker (new, emptied or restarted without data); sets it.

    Raises:
        ServiceError: Redis cannot be reached.
    """
    try:
        return bool(client.set(EPOCH_KEY, str(time.time()), nx=True))
    except RedisError as e:
        raise ServiceError(f"cannot reach Redis: {e}") from e


def unfinished_batches(engine: Engine, running_for_s: float,
                       now: datetime | None = None) -> list[Dispatch]:
    """Batches whose message may be lost: dispatched, or running for over ``running_for_s``.

    Raises:
        ServiceError: the database cannot be read.
    """
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=running_for_s)
    has_result = exists().where(_RESULT.batch_id == _BATCH.id)
    stmt = (select(_BATCH.id, _BATCH.device)
            .where(or_(_BATCH.status == BatchStatus.DISPATCHED,
                       and_(_BATCH.status == BatchStatus.RUNNING, _BATCH.started_at < cutoff)),
                   ~has_result)
            .order_by(_BATCH.created_at))
    try:
        with engine.connect() as conn:
            return [(str(bid), device_queue(str(dev))) for bid, dev in conn.execute(stmt)]
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot read unfinished batches: {e}") from e


def recover(engine: Engine, client: redis.Redis, publish: PublishMany,
            running_for_s: float) -> Recovery:
    """Re-enqueue pending prompts and republish batches that may have lost their message.

    Args:
        engine: the SQL ledger.
        client: the broker's Redis.
        publish: sends ``ecobatch.infer_batch`` for each ``(batch_id, queue)``.
        running_for_s: a ``running`` batch older than this (the task time limit) has no live
            worker and is published again.

    Raises:
        ServiceError: SQL or Redis failed.
    """
    n_prompts = reconcile(engine, client)
    dispatches = unfinished_batches(engine, running_for_s)
    if dispatches:
        publish(dispatches)
    if n_prompts or dispatches:
        log.warning("recovered from SQL: %d pending prompts re-enqueued, %d batches republished",
                    n_prompts, len(dispatches))
    return Recovery(prompts=n_prompts, batches=len(dispatches))


def recover_if_reset(engine: Engine, client: redis.Redis, publish: PublishMany,
                     running_for_s: float) -> Recovery | None:
    """:func:`recover` when :func:`broker_was_reset`; None when Redis kept its data."""
    if not broker_was_reset(client):
        return None
    return recover(engine, client, publish, running_for_s)
