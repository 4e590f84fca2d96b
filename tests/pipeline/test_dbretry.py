"""Retrying through a database outage, and the backoff and time limits of batch tasks."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from pipeline.app.celery_app import reliability_conf
from pipeline.ledger.db import make_engine
from pipeline.ledger.outcome import RetryPolicy
from pipeline.ledger.retry import retry_db
from pipeline.settings import load_settings, soft_time_limit_s


def test_a_locked_sqlite_database_is_retried_until_it_is_free(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    holder = make_engine(url).connect()
    holder.exec_driver_sql("BEGIN EXCLUSIVE")  # another process holds the file
    engine = make_engine(url)
    engine.dispose()
    waits: list[float] = []

    def write() -> int:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA busy_timeout=10")  # fail fast instead of waiting 30 s
            conn.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))
            conn.commit()
        return 1

    def sleep(s: float) -> None:
        waits.append(s)
        if len(waits) == 3:
            holder.rollback()  # the lock is released while we back off

    assert retry_db(write, total_s=60, sleep=sleep) == 1
    assert waits == [0.5, 1.0, 2.0]  # exponential backoff


def test_gives_up_after_total_time_and_never_retries_integrity_errors() -> None:
    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise OperationalError("connect", {}, Exception("connection refused"))

    with pytest.raises(OperationalError):
        retry_db(down, total_s=0.0, sleep=lambda s: None)
    assert len(calls) == 1

    def duplicate() -> None:
        calls.append(1)
        raise IntegrityError("insert", {}, Exception("duplicate key"))

    with pytest.raises(IntegrityError):
        retry_db(duplicate, total_s=60, sleep=lambda s: None)
    assert len(calls) == 2


def test_backoff_time_limits_and_restore_sweep() -> None:
    assert [RetryPolicy().backoff_s(n) for n in range(7)] == [2, 4, 8, 16, 32, 60, 60]
    assert soft_time_limit_s(1800) == 1770 and soft_time_limit_s(10) == 8
    assert soft_time_limit_s(3) == 2 and soft_time_limit_s(1) == 1
    conf = reliability_conf(load_settings(redis_url="redis://x", visibility_timeout_s=20,
                                          task_time_limit_s=15))
    assert conf["task_acks_on_timeout"] is False  # a hard-killed batch goes back to the queue
    assert conf["broker_transport_options"] == {
        "visibility_timeout": 20, "unacked_restore_interval": 2, "unacked_restore_throttle": 1}
