"""Crash recovery of the router: batches committed to SQL but never published.

The router commits a pass's batches before publishing them, so a crash in between leaves
``dispatched`` batches that no worker will ever receive. :func:`republish_stale` sends them
again. A batch that merely waits in a long device queue looks the same from SQL, so it may be
delivered twice; the worker's idempotent upserts (keyed by prompt id) make that harmless.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, exists, select
from sqlalchemy.exc import SQLAlchemyError

from pipeline.errors import ServiceError
from pipeline.fleet.devices import device_queue
from pipeline.ledger.models import Batch, BatchStatus, Result
from router.live.route import Dispatch, PublishMany

_BATCH = Batch.__table__.c  # type: ignore[attr-defined]
_RESULT = Result.__table__.c  # type: ignore[attr-defined]


def stale_batches(
    engine: Engine, older_than_s: float, now: datetime | None = None
) -> list[Dispatch]:
    """Dispatched batches older than ``older_than_s`` with no result row, oldest first.

    Raises:
        ServiceError: the database cannot be read.
    """
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=older_than_s)
    has_result = exists().where(_RESULT.batch_id == _BATCH.id)
    stmt = (
        select(_BATCH.id, _BATCH.device)
        .where(_BATCH.status == BatchStatus.DISPATCHED, _BATCH.created_at < cutoff, ~has_result)
        .order_by(_BATCH.created_at)
    )
    try:
        with engine.connect() as conn:
            return [(str(bid), device_queue(str(dev))) for bid, dev in conn.execute(stmt)]
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot read stale batches: {e}") from e


def republish_stale(
    engine: Engine, publish: PublishMany, older_than_s: float, now: datetime | None = None
) -> int:
    """Publish again every dispatched batch older than ``older_than_s`` that has no result.

    Call it when a router starts, or on a period longer than ``older_than_s``: a batch stays
    stale, and is sent again on every call, until a worker picks it up.

    Returns:
        The number of batches published.

    Raises:
        ServiceError: the database cannot be read.
    """
    dispatches = stale_batches(engine, older_than_s, now)
    if dispatches:
        publish(dispatches)
    return len(dispatches)
