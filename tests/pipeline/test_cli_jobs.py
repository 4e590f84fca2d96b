"""The submit, status and results commands through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from sqlalchemy import func, select

from pipeline.app.cli.jobs import reconcile_pending, results, status, submit
from pipeline.broker.queue import PENDING_KEY
from pipeline.ledger.db import make_engine
from pipeline.ledger.models import Job


def _services(redis_url: str, db_url: str) -> list[str]:
    return ["--redis-url", redis_url, "--database-url", db_url]


def test_help_states_units() -> None:
    runner = CliRunner()
    submit_help = runner.invoke(submit, ["--help"]).output
    assert "in tokens" in submit_help and "gCO2e" in submit_help
    results_help = runner.invoke(results, ["--help"]).output
    assert "joules" in results_help and "seconds" in results_help


def test_submit_missing_file_fails_cleanly(tmp_path: Path) -> None:
    res = CliRunner().invoke(submit, [str(tmp_path / "nope.jsonl")])
    assert res.exit_code == 1 and "cannot read" in res.output and "nope.jsonl" in res.output


@pytest.mark.service
@pytest.mark.parametrize(("name", "body", "line"), [
    ("bad.jsonl", '{"prompt": "ok"}\n{"prompt": "ok"}\n{"prompt": \n', 3),
    ("bad.jsonl", '{"prompt": "ok"}\n{"prompt": "ok", "max_tokens": -1}\n', 2),
    ("bad.csv", "prompt,id\nok,1\nok,1\n", 3),
    ("empty.txt", "", None),
])
def test_submit_bad_input_exits_nonzero_naming_the_line(
    tmp_path: Path, redis_url: str, db_url: str, name: str, body: str, line: int | None
) -> None:
    path = tmp_path / name
    path.write_text(body)
    res = CliRunner().invoke(submit, [str(path), *_services(redis_url, db_url)])
    assert res.exit_code != 0
    assert "Error:" in res.output
    assert (f"line {line}" in res.output) if line else ("no prompts" in res.output)
    assert redis.Redis.from_url(redis_url).llen(PENDING_KEY) == 0
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Job)).scalar_one() == 0
    engine.dispose()


@pytest.mark.service
def test_submit_stdin_then_status_and_results(
    tmp_path: Path, redis_url: str, db_url: str
) -> None:
    runner = CliRunner()
    res = runner.invoke(submit, ["-", "--max-tokens", "9", "--strategy", "latency",
                                 *_services(redis_url, db_url)],
                        input='{"prompt": "a"}\n{"prompt": "b", "id": "B"}\n')
    assert res.exit_code == 0, res.output
    job_id = res.stdout.strip()
    assert len(job_id) == 32
    assert redis.Redis.from_url(redis_url).llen(PENDING_KEY) == 2

    res = runner.invoke(status, [job_id, "--database-url", db_url])
    assert res.exit_code == 0, res.output
    assert job_id in res.output and "0/2" in res.output and "queued" in res.output
    res = runner.invoke(status, [job_id, "--json", "--database-url", db_url])
    data = json.loads(res.stdout)
    assert data["total"] == 2 and data["strategy"] == "latency" and data["finished"] is False

    out = tmp_path / "out.csv"
    res = runner.invoke(results, [job_id, "-o", str(out), "--database-url", db_url])
    assert res.exit_code == 0, res.output
    assert out.read_text().startswith("id,prompt_id,status")  # header only: nothing answered
    res = runner.invoke(results, [job_id, "--database-url", db_url])
    assert res.exit_code == 0 and res.stdout == ""


@pytest.mark.service
def test_stdin_text_with_explicit_format(redis_url: str, db_url: str) -> None:
    res = CliRunner().invoke(submit, ["-", "--format", "text", *_services(redis_url, db_url)],
                             input="{not json} but a prompt\nsecond\n")
    assert res.exit_code == 0, res.output
    assert redis.Redis.from_url(redis_url).llen(PENDING_KEY) == 2


@pytest.mark.service
def test_unknown_job_exits_nonzero(db_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    for cmd in (status, results):
        res = runner.invoke(cmd, ["0" * 32, "--database-url", db_url])
        assert res.exit_code == 1 and "not found" in res.output
    res = runner.invoke(results, ["0" * 32, "-o", str(tmp_path / "x.jsonl"),
                                  "--database-url", db_url])
    assert res.exit_code == 1 and not (tmp_path / "x.jsonl").exists()


def test_submit_without_redis_url_is_a_config_error(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ECOBATCH_REDIS_URL", raising=False)
    path = tmp_path / "ok.txt"
    path.write_text("a prompt\n")
    res = CliRunner().invoke(submit, [str(path), "--database-url",
                                      f"sqlite:///{tmp_path / 'l.db'}"])
    assert res.exit_code == 1 and "no Redis URL" in res.output


@pytest.mark.service
def test_reconcile_command_restores_the_pending_list(tmp_path: Path, redis_url: str,
                                                     db_url: str) -> None:
    runner = CliRunner()
    path = tmp_path / "p.txt"
    path.write_text("one\ntwo\nthree\n")
    assert runner.invoke(submit, [str(path), *_services(redis_url, db_url)]).exit_code == 0
    client = redis.Redis.from_url(redis_url)
    client.delete(PENDING_KEY)
    res = runner.invoke(reconcile_pending, _services(redis_url, db_url))
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == "3" and client.llen(PENDING_KEY) == 3
