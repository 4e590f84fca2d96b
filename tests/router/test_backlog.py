"""Per-device backlog from dispatched and running batches."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from pipeline.ledger.models import Batch, BatchStatus
from router.live.backlog import read_backlog_s


@pytest.mark.service
def test_backlog_sums_dispatched_and_running_per_device(engine: Engine) -> None:
    rows = [("a", BatchStatus.DISPATCHED, 2.0), ("a", BatchStatus.RUNNING, 3.0),
            ("a", BatchStatus.DONE, 100.0), ("b", BatchStatus.DEAD, 50.0),
            ("c", BatchStatus.DISPATCHED, 1.5)]
    with Session(engine) as s:
        s.add_all(Batch(id=f"b{i}", device=d, status=st, predicted_latency_s=lat)
                  for i, (d, st, lat) in enumerate(rows))
        s.commit()
    with engine.connect() as conn:
        backlog = read_backlog_s(conn, ["a", "b", "c", "d"])
    assert backlog == {"a": pytest.approx(5.0), "b": 0.0, "c": pytest.approx(1.5), "d": 0.0}
