"""End to end on real parts: Redis, Celery worker processes, llama.cpp, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import func, select
from sqlmodel import Session

from pipeline.client import Client
from pipeline.ledger.db import make_engine
from pipeline.ledger.models import Result
from pipeline.settings import load_settings
from tests.cluster import QuickStopGroup, clean_env, cluster_env, start_worker

FIXTURES = Path(__file__).parent / "fixtures"
PROMPTS20 = FIXTURES / "prompts20.jsonl"
WAIT_S = 300.0

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(redis_url: str, db_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A router and a CPU worker as real child processes on the test Redis and database."""
    env = cluster_env(redis_url, db_url)
    with QuickStopGroup(env=env, log_dir=tmp_path / "logs") as children:
        children.start("router", ["router"])
        start_worker(children)
        yield env


def test_twenty_prompts_in_twenty_results_out(cluster: dict[str, str]) -> None:
    settings = load_settings(redis_url=cluster["ECOBATCH_REDIS_URL"],
                             database_url=cluster["ECOBATCH_DATABASE_URL"])
    client = Client(settings)
    job_id = client.submit_file(str(PROMPTS20))
    client.wait(job_id, timeout_s=WAIT_S)
    rows = client.results(job_id)
    assert len(rows) == 20
    assert len({r["id"] for r in rows}) == 20
    for r in rows:
        assert r["output"].strip(), r
        assert r["energy_j"] > 0
        assert r["energy_source"]
        assert r["energy_measured"] is False  # no counter on this CPU: an honest estimate
        assert r["carbon_g"] > 0
        assert r["completion_tokens"] > 0
    with Session(make_engine(settings.database_url)) as s:
        n = s.execute(select(func.count()).select_from(Result)).scalar_one()
    assert n == 20  # upserts never double a row


def test_bare_celery_client_posts_by_task_name(cluster: dict[str, str]) -> None:
    bare = Celery(broker=cluster["ECOBATCH_REDIS_URL"])
    bare.conf.task_serializer = "json"
    prompts = [{"prompt": "Name a colour."}, "What is 2 plus 2?", {"messages": [
        {"role": "user", "content": "Say hello."}]}]
    sent = bare.send_task("ecobatch.submit", args=[prompts, {"max_tokens": 8}])
    job_id = sent.id.replace("-", "")
    engine = make_engine(cluster["ECOBATCH_DATABASE_URL"])
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        with Session(engine) as s:
            done = list(s.execute(select(Result).where(Result.job_id == job_id)).scalars())
        if len(done) == 3:
            break
        time.sleep(0.5)
    assert len(done) == 3
    assert all(r.output.strip() and r.energy_j > 0 for r in done)


def test_ecobatch_run_embedded_default_in_clean_directory(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.app.cli.main", "run", str(PROMPTS20), "-o", "out.jsonl"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == 20
    rows = [json.loads(x) for x in lines]
    assert all(r["output"].strip() and r["energy_j"] > 0 for r in rows)
    assert (tmp_path / "ecobatch.db").exists()
    assert "p95" in proc.stderr  # the summary table


@pytest.mark.parametrize("args, message", [
    (["worker", "--device", "nope"], "unknown device 'nope'"),
    (["run", str(PROMPTS20), "--batch-size", "0"], "batch_size"),
    (["run", str(PROMPTS20), "--batch-size", "-3"], "batch_size"),
    (["run", str(PROMPTS20), "--model", "missing.gguf"], "missing.gguf does not exist"),
])
def test_bad_settings_fail_clearly_before_anything_starts(
    tmp_path: Path, args: list[str], message: str
) -> None:
    proc = subprocess.run([sys.executable, "-m", "pipeline.app.cli.main", *args], cwd=tmp_path,
                          env=clean_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "ecobatch.db").exists()  # nothing was enqueued


def test_run_rejects_a_malformed_file_before_starting_anything(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": \n{"prompt": "also fine"}\n')
    proc = subprocess.run([sys.executable, "-m", "pipeline.app.cli.main", "run", str(bad)], cwd=tmp_path,
                          env=clean_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "line 2" in proc.stderr
    assert not (tmp_path / "ecobatch.db").exists()
    assert not (tmp_path / "results.jsonl").exists()


def test_run_refuses_a_quality_floor_no_model_meets_before_starting_anything(
        tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hello"}\n')
    proc = subprocess.run([sys.executable, "-m", "pipeline.app.cli.main", "run", str(prompts),
                           "--min-quality", "99"], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "min_quality" in proc.stderr and "99" in proc.stderr
    assert not (tmp_path / "ecobatch.db").exists()
