"""Move batches off a device whose worker died before it started them.

A batch waits in ``device.<name>`` until that device's worker takes it; if the worker is gone
(no heartbeat), it would wait for ever. Such batches are marked ``moved`` and their prompts go
back to pending, so the router routes them again among the live devices. A worker that comes
back later and receives the old message finds the batch settled and skips it
(``pipeline.ledger.batches.ClaimedBatch.settled``). Batches already running are left alone: their
message is redelivered after the visibility timeout, and moving them could count their energy
twice.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import redis
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from pipeline.broker.restore import reconcile
from pipeline.errors import ServiceError
from pipeline.ledger.models import Batch, BatchStatus
from pipeline.ledger.state import move_batch

log = logging.getLogger(__name__)

_BATCH = Batch.__table__  # type: ignore[attr-defined]


def move_from_dead(engine: Engine, redis_client: redis.Redis,
                   dead_devices: Collection[str]) -> int:
    """Re-route the not-yet-started batches of ``dead_devices``; return how many were moved.

    Raises:
        ServiceError: SQL or Redis failed (a batch is either fully moved or untouched).
    """
    if not dead_devices:
        return 0
    try:
        moved_jobs = _move_in_sql(engine, dead_devices)
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot move batches off dead devices: {e}") from e
    for job_id in sorted(set(moved_jobs.values())):
        reconcile(engine, redis_client, job_id=job_id)
    if moved_jobs:
        log.warning("moved %d batches off devices with no live worker: %s", len(moved_jobs),
                    ", ".join(sorted(dead_devices)))
    return len(moved_jobs)


def _move_in_sql(engine: Engine, dead_devices: Collection[str]) -> dict[str, str]:
    """Mark each waiting batch moved and its prompts pending; return batch id -> a job id."""
    moved: dict[str, str] = {}
    with engine.begin() as conn:
        waiting = conn.execute(select(_BATCH.c.id).where(
            _BATCH.c.device.in_(sorted(dead_devices)),
            _BATCH.c.status == BatchStatus.DISPATCHED)).scalars().all()
        for batch_id in waiting:
            # Guarded by status, so a batch a worker claimed meanwhile is left alone.
            for job_id in move_batch(conn, batch_id, "device had no live worker"):
                moved[batch_id] = job_id
    return moved
