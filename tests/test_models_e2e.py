"""Two models on real parts: one CPU device serving SmolLM2-135M-Instruct and Gemma 3 270M
through llama.cpp, a real router and worker process, Redis and SQLite. Jobs with different
quality floors are answered by the right model, and ``ecobatch report`` shows each model's
quality next to its carbon."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlmodel import Session

from pipeline.app.cli.main import main
from pipeline.client import Client
from pipeline.ledger.db import make_engine
from pipeline.ledger.models import Batch, Prompt
from pipeline.settings import load_settings
from tests.cluster import QuickStopGroup, cluster_env, start_worker

pytestmark = pytest.mark.slow
WAIT_S = 120.0
# Gemma's nominal rate is set below SmolLM2's, so that a job with a floor both meet goes to
# the cheaper SmolLM2 (before a bench profile per model exists, the nominal rate predicts).
REGISTRY = """
[[device]]
name = "cpu"
kind = "cpu"
intensity_g_per_kwh = 300.0
max_batch_size = 4
nominal_tokens_per_s = 60.0
models = [{name = "smollm2-135m-instruct"}, {name = "gemma3-270m", nominal_tokens_per_s = 30.0}]
"""
QUESTIONS = ["Name a colour.", "What is 2 plus 2?", "Say hello."]


@pytest.fixture
def two_model_cluster(redis_url: str, sqlite_url: str,
                      tmp_path: Path) -> Iterator[dict[str, str]]:
    """A router and one CPU worker serving both bundled models, as real child processes."""
    devices = tmp_path / "devices.toml"
    devices.write_text(REGISTRY, encoding="utf-8")
    env = cluster_env(redis_url, sqlite_url, ECOBATCH_DEVICES=str(devices),
                      ECOBATCH_STRATEGY="carbon", ECOBATCH_BATCH_SIZE="4")
    with QuickStopGroup(env=env, log_dir=tmp_path / "logs") as children:
        children.start("router", ["router"])
        start_worker(children)
        yield env


def test_quality_floors_pick_the_model_and_the_report_shows_quality(
    two_model_cluster: dict[str, str],
) -> None:
    env = two_model_cluster
    settings = load_settings(redis_url=env["ECOBATCH_REDIS_URL"],
                             database_url=env["ECOBATCH_DATABASE_URL"],
                             devices=Path(env["ECOBATCH_DEVICES"]))
    with Client(settings) as client:
        high = client.submit(QUESTIONS, max_tokens=8, min_quality=67.0)  # only Gemma (67.7)
        low = client.submit(QUESTIONS, max_tokens=8, min_quality=60.0)  # both: SmolLM2 is cheaper
        named = client.submit([{"prompt": "Hi.", "model": "gemma3-270m"}], max_tokens=8)
        for job in (high, low, named):
            client.wait(job, timeout_s=WAIT_S)
        answers = {job: client.results(job) for job in (high, low, named)}
    assert all(r["output"].strip() and r["carbon_g"] > 0 for rows in answers.values()
               for r in rows)
    assert _models(settings.database_url) == {high: {"gemma3-270m"},
                                               low: {"smollm2-135m-instruct"},
                                               named: {"gemma3-270m"}}
    # each answer names the model that produced it, with that model's quality score
    assert {(r["model"], r["model_quality"]) for r in answers[high] + answers[named]} == {
        ("gemma3-270m", 67.7)}
    assert {(r["model"], r["model_quality"]) for r in answers[low]} == {
        ("smollm2-135m-instruct", 66.3)}
    for job, model, quality in ((high, "gemma3-270m", 67.7), (low, "smollm2-135m-instruct", 66.3)):
        out = CliRunner().invoke(main, ["report", job, "--json",
                                        "--database-url", settings.database_url])
        assert out.exit_code == 0, out.output
        per_model = next(s for s in json.loads(out.output) if s["title"] == "Per model")
        [row] = [dict(zip(per_model["columns"], r, strict=True)) for r in per_model["rows"]]
        assert (row["model"], row["quality"], row["prompts"]) == (model, quality, 3)
        assert row["carbon_g"] > 0
        print(f"\njob {job} (min_quality {67.0 if job == high else 60.0}):",
              json.dumps(row))


def _models(db_url: str) -> dict[str, set[str | None]]:
    """The models of the batches that answered each job."""
    with Session(make_engine(db_url)) as s:
        rows = s.execute(select(Prompt.job_id, Batch.model)  # type: ignore[call-overload]
                         .join(Batch, Batch.id == Prompt.batch_id)).all()
    out: dict[str, set[str | None]] = {}
    for job_id, model in rows:
        out.setdefault(job_id, set()).add(model)
    return out
