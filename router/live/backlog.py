"""Per-device backlog: predicted seconds of work already sent to each device.

The router reads it once per :func:`router.live.route.route_once` call with one grouped query, then
advances it in memory as it assigns batches, so that the latency strategy spreads a burst of
batches over devices instead of sending all of it to the one that was idle at the start.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import SQLAlchemyError

from pipeline.errors import ServiceError
from pipeline.ledger.models import Batch, BatchStatus

QUEUED_STATUSES = (BatchStatus.DISPATCHED, BatchStatus.RUNNING)


def read_backlog_s(conn: Connection, device_names: Iterable[str]) -> dict[str, float]:
    """Sum of ``predicted_latency_s`` of dispatched and running batches, per device.

    A running batch counts in full: the estimate errs towards a busier device, which the
    latency strategy then avoids. Devices without queued work get 0.

    Raises:
        ServiceError: the database cannot be read.
    """
    batch = Batch.__table__.c  # type: ignore[attr-defined]
    stmt = (
        select(batch.device, func.coalesce(func.sum(batch.predicted_latency_s), 0.0))
        .where(batch.status.in_(QUEUED_STATUSES))
        .group_by(batch.device)
    )
    try:
        queued = {str(name): float(total) for name, total in conn.execute(stmt)}
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot read the device backlog: {e}") from e
    return {name: queued.get(name, 0.0) for name in device_names}
