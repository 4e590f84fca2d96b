"""``ecobatch health`` against real Redis, SQL and real router and worker processes."""

from __future__ import annotations

import json
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlmodel import Session

from pipeline.app.cli.main import main
from pipeline.app.health import Limits, check_cluster, check_dead_letters, check_ledger
from pipeline.ledger.db import make_engine
from pipeline.ledger.models import Batch, BatchStatus, utc_now
from pipeline.settings import load_settings
from tests.cluster import fault_env, running_cluster, wait_until


def _health(redis_url: str, db_url: str, *extra: str) -> tuple[int, dict[str, object]]:
    out = CliRunner().invoke(main, ["health", "--json", "--redis-url", redis_url,
                                    "--database-url", db_url, *extra])
    return out.exit_code, json.loads(out.output)


def _checks(report: dict[str, object]) -> dict[str, dict[str, object]]:
    return {c["name"]: c for c in report["checks"]}  # type: ignore[attr-defined, index]


@pytest.mark.service
@pytest.mark.slow
def test_a_running_cluster_is_healthy_until_its_worker_stops(redis_url: str, sqlite_url: str,
                                                            tmp_path: Path) -> None:
    settings = load_settings(redis_url=redis_url, database_url=sqlite_url)
    make_engine(sqlite_url).dispose()
    with running_cluster(fault_env(redis_url, sqlite_url), tmp_path / "logs") as cluster:
        wait_until("a healthy cluster", lambda: check_cluster(
            settings, [_cpu(settings)], Limits()).healthy, timeout_s=90, poll_s=0.5)
        code, report = _health(redis_url, sqlite_url)
        assert code == 0 and report["healthy"] is True
        device = _checks(report)["device cpu"]
        assert 0 <= device["heartbeat_age_s"] <= settings.heartbeat_ttl_s  # type: ignore[operator]
        assert _checks(report)["router"]["routers"]
        worker = cluster.workers[0].proc
        worker.send_signal(signal.SIGTERM)  # a warm stop withdraws the heartbeat at once
        worker.wait(timeout=60)
        code, report = _health(redis_url, sqlite_url)
    assert code == 1 and report["healthy"] is False
    device = _checks(report)["device cpu"]
    assert device["ok"] is False and device["heartbeat_age_s"] is None
    assert "no heartbeat" in str(device["detail"])
    assert _checks(report)["broker"]["ok"] and _checks(report)["ledger"]["ok"]


def _cpu(settings: object) -> object:
    from pipeline.grid.data import checked_registry

    return checked_registry(settings).get("cpu")  # type: ignore[arg-type]


@pytest.mark.service
def test_nothing_running_is_unhealthy_and_says_what(redis_url: str, db_url: str) -> None:
    make_engine(db_url).dispose()
    out = CliRunner().invoke(main, ["health", "--redis-url", redis_url, "--database-url", db_url])
    assert out.exit_code == 1
    assert "UNHEALTHY" in out.output and "no router answered" in out.output
    assert "no heartbeat" in out.output


@pytest.mark.service
def test_dead_letters_within_the_window_fail_beyond_the_limit(db_url: str) -> None:
    engine = make_engine(db_url)
    with Session(engine) as s:
        s.add(Batch(id="old", device="cpu", status=BatchStatus.DEAD,
                    finished_at=utc_now() - timedelta(hours=2)))
        s.add(Batch(id="new", device="cpu", status=BatchStatus.DEAD, finished_at=utc_now()))
        s.commit()
    check = check_dead_letters(engine, Limits(dead_window_s=3600, max_dead=0))
    assert not check.ok and check.figures["dead_batches"] == 1
    assert check_dead_letters(engine, Limits(dead_window_s=3600, max_dead=1)).ok


@pytest.mark.service
def test_an_outdated_ledger_fails_the_ledger_check(db_url: str) -> None:
    engine = make_engine(db_url)
    assert check_ledger(engine).ok
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    check = check_ledger(engine)
    assert not check.ok and "ecobatch db upgrade" in check.detail
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0002'"))


@pytest.mark.service
def test_a_broker_that_is_away_fails_fast_without_pinging(sqlite_url: str) -> None:
    make_engine(sqlite_url).dispose()
    started = time.monotonic()
    code, report = _health("redis://127.0.0.1:1/0", sqlite_url)
    assert code == 1 and time.monotonic() - started < 30
    checks = _checks(report)
    assert not checks["broker"]["ok"] and "unreachable" in str(checks["broker"]["detail"])
    assert "not checked" in str(checks["router"]["detail"]) and checks["ledger"]["ok"]
