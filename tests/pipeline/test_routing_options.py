"""A job's routing options (strategy, weights, SLO, deadline, defer) are validated at submit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from sqlalchemy import Engine
from sqlmodel import Session

from pipeline.app.cli.main import main
from pipeline.errors import ConfigError, InputError
from pipeline.intake.parse import validate_records
from pipeline.intake.submit import SubmitHandles, submit_records
from pipeline.intake.submit_call import submit_task_payload
from pipeline.ledger.models import Job, JobStatus
from pipeline.policy import check_deadline
from pipeline.settings import load_settings
from workers.backends.llama.tokenizer import ModelTokenizer


def _submit(engine: Engine, rclient: redis.Redis, **kw: Any) -> str:
    records = validate_records(["a", "b"])
    args: dict[str, Any] = {"source": "t", "strategy": "carbon", "default_max_tokens": 8} | kw
    return submit_records(engine, rclient, records, **args).job_id


def test_routing_options_are_stored_on_the_job(engine: Engine, rclient: redis.Redis) -> None:
    deadline = datetime.now(UTC) + timedelta(hours=3)
    job_id = _submit(engine, rclient, strategy="weighted", weights={"carbon": 3, "water": 1},
                     slo_s=12.5, deadline=deadline, deferred=True)
    with Session(engine) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.status == JobStatus.DEFERRED
        assert job.weights == {"carbon": 0.75, "water": 0.25} and job.slo_s == 12.5
        assert job.deadline is not None


@pytest.mark.parametrize(("kw", "field", "msg"), [
    ({"strategy": "fastest"}, "strategy", "unknown strategy"),
    ({"weights": {"speed": 1}}, "weights", "unknown metric"),
    ({"slo_s": 0.0}, "slo_s", "> 0"),
    ({"deferred": True}, "deadline", "needs a deadline"),
    ({"deadline": datetime(2020, 1, 1, tzinfo=UTC)}, "deadline", "in the past"),
    ({"deadline": datetime(2099, 1, 1)}, "deadline", "no time zone"),
])
def test_bad_routing_option_names_its_field(engine: Engine, rclient: redis.Redis,
                                            kw: dict[str, Any], field: str, msg: str) -> None:
    with pytest.raises(InputError, match=msg) as err:
        _submit(engine, rclient, **kw)
    assert err.value.field == field


def test_settings_check_strategy_and_weights() -> None:
    assert load_settings(strategy="round_robin").strategy == "round_robin"
    assert load_settings(weights={"carbon": 1, "cost": 1}).weights == {"carbon": 0.5, "cost": 0.5}
    with pytest.raises(ConfigError, match="'strategy'"):
        load_settings(strategy="fastest")
    with pytest.raises(ConfigError, match="'weights'"):
        load_settings(weights={"carbon": -1})


def test_check_deadline_returns_utc() -> None:
    now = datetime(2026, 11, 22, 18, tzinfo=UTC)
    local = datetime.fromisoformat("2026-11-23T08:00+01:00")
    assert check_deadline(local, now) == datetime(2026, 11, 23, 7, tzinfo=UTC)


def test_submit_task_takes_defer_and_deadline(engine: Engine, rclient: redis.Redis) -> None:
    ctx = SubmitHandles(load_settings(), ModelTokenizer(None), engine, rclient)
    deadline = (datetime.now(UTC) + timedelta(hours=5)).isoformat()
    receipt = submit_task_payload(ctx, ["x"], {"defer": True, "deadline": deadline,
                                               "strategy": "latency", "slo_s": 3})
    assert receipt.deferred
    with pytest.raises(InputError, match="deadline"):
        submit_task_payload(ctx, ["x"], {"defer": True})


def test_cli_submit_defer_and_weights(tmp_path: Path, redis_url: str, db_url: str) -> None:
    f = tmp_path / "p.txt"
    f.write_text("one\ntwo\n")
    base = ["submit", str(f), "--redis-url", redis_url, "--database-url", db_url]
    ok = CliRunner().invoke(main, [*base, "--strategy", "weighted", "--weights",
                                   "carbon=3,latency=1", "--defer", "--deadline",
                                   "2099-01-01T07:00Z"])
    assert ok.exit_code == 0, ok.output
    assert "deferred" in ok.output
    bad = CliRunner().invoke(main, [*base, "--weights", "speed=1"])
    assert bad.exit_code == 2 and "unknown metric" in bad.output
    naive = CliRunner().invoke(main, [*base, "--deadline", "2099-01-01T07:00"])
    assert naive.exit_code == 2 and "no time zone" in naive.output
    nodl = CliRunner().invoke(main, [*base, "--defer"])
    assert nodl.exit_code == 1 and "needs a deadline" in nodl.output
