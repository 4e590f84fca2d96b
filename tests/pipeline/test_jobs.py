"""Read side on real SQLite + PostgreSQL: job status, result export, job status update, Client."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, insert, select, update
from sqlmodel import SQLModel

from pipeline.client import Client
from pipeline.errors import NotFoundError, WaitTimeoutError
from pipeline.intake.parse import validate_records
from pipeline.intake.submit import submit_records
from pipeline.ledger.jobs import (
    EXPORT_FIELDS,
    decision_quality,
    derive_status,
    iter_results,
    job_status,
    refresh_job_status,
    write_results,
)
from pipeline.ledger.models import Batch, JobStatus, PromptStatus, Result
from pipeline.settings import load_settings

pytestmark = pytest.mark.service
PROMPTS = SQLModel.metadata.tables["prompt"]
JOBS = SQLModel.metadata.tables["job"]


@pytest.fixture
def job_id(engine: Engine, redis_url: str) -> str:
    """A job of four prompts: ids a, (2), c, d."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    records = validate_records([
        {"prompt": "first", "id": "a", "metadata": {"k": 1}}, "second",
        {"messages": [{"role": "user", "content": "third"}], "id": "c"}, {"prompt": "4", "id": "d"},
    ])
    receipt = submit_records(engine, client, records, source="t", strategy="carbon",
                             default_max_tokens=16)
    client.close()
    return receipt.job_id


def _answer(engine: Engine, job_id: str, positions: list[int], batch_id: str = "b1") -> None:
    """What a device worker does: result rows, prompts marked done."""
    rows = [_result_row(job_id, p, batch_id) for p in positions]
    with engine.begin() as conn:
        conn.execute(insert(Result), rows)
        conn.execute(update(PROMPTS).where(PROMPTS.c.job_id == job_id,
                                           PROMPTS.c.position.in_(positions))
                     .values(status=PromptStatus.DONE, batch_id=batch_id))


def _result_row(job_id: str, position: int, batch_id: str) -> dict[str, Any]:
    return {"prompt_id": f"{job_id}:{position}", "job_id": job_id, "batch_id": batch_id,
            "device": "cpu", "output": f"answer {position}", "finish_reason": "stop",
            "prompt_tokens": 5, "completion_tokens": 7, "ttft_s": 0.1, "latency_s": 0.5,
            "energy_j": 2.0, "energy_source": "tdp-estimate", "energy_measured": False,
            "carbon_g": 0.25, "embodied_carbon_g": 0.05, "water_l": 0.001, "cost_usd": 0.0001,
            "intensity_g_per_kwh": 300.0}


def _kill(engine: Engine, job_id: str, positions: list[int]) -> None:
    with engine.begin() as conn:
        conn.execute(update(PROMPTS).where(PROMPTS.c.job_id == job_id,
                                           PROMPTS.c.position.in_(positions))
                     .values(status=PromptStatus.DEAD, batch_id="b9"))


def test_status_of_a_fresh_job(engine: Engine, job_id: str) -> None:
    view = job_status(engine, job_id)
    assert view.status == JobStatus.QUEUED and view.total == 4 and view.done == 0
    assert view.counts == {"pending": 4, "batched": 0, "done": 0, "dead": 0}
    assert not view.finished and view.energy_j == 0.0
    assert view.cost_usd is None  # unknown, not free


def test_cost_stays_unknown_without_price_data(engine: Engine, job_id: str) -> None:
    row = {**_result_row(job_id, 1, "b1"), "cost_usd": None}
    with engine.begin() as conn:
        conn.execute(insert(Result), [row])
    view = job_status(engine, job_id)
    assert view.n_results == 1 and view.cost_usd is None and view.energy_j == 2.0
    assert next(iter_results(engine, job_id))["cost_usd"] is None


def test_status_totals_progress_and_derived_status(engine: Engine, job_id: str) -> None:
    _answer(engine, job_id, [1, 3])
    view = job_status(engine, job_id)
    assert view.status == JobStatus.RUNNING and view.n_results == 2
    assert view.fraction_done == 0.5
    assert view.energy_j == pytest.approx(4.0) and view.carbon_g == pytest.approx(0.5)
    assert view.water_l == pytest.approx(0.002) and view.cost_usd == pytest.approx(0.0002)
    assert view.embodied_carbon_g == pytest.approx(0.1)
    _answer(engine, job_id, [2])
    _kill(engine, job_id, [4])
    view = job_status(engine, job_id)
    assert view.finished and view.n_failed == 1 and view.status == JobStatus.DONE


def test_refresh_job_status_stores_done_and_failed(engine: Engine, job_id: str) -> None:
    assert refresh_job_status(engine, job_id) == JobStatus.QUEUED
    _answer(engine, job_id, [1, 2, 3])
    assert refresh_job_status(engine, job_id) == JobStatus.RUNNING
    _kill(engine, job_id, [4])
    assert refresh_job_status(engine, job_id) == JobStatus.DONE
    with engine.connect() as conn:
        assert conn.execute(select(JOBS.c.status)).scalar_one() == JobStatus.DONE


def test_derive_status() -> None:
    assert derive_status(JobStatus.QUEUED, 3, 0, 3, 3) == JobStatus.FAILED
    assert derive_status(JobStatus.DEFERRED, 3, 0, 0, 0) == JobStatus.DEFERRED
    assert derive_status(JobStatus.QUEUED, 3, 1, 0, 1) == JobStatus.RUNNING


def test_unknown_job_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFoundError):
        job_status(engine, "nope")
    with pytest.raises(NotFoundError):
        iter_results(engine, "nope")
    with pytest.raises(NotFoundError):
        refresh_job_status(engine, "nope")


def test_results_in_position_order_with_dead_and_without_pending(
    engine: Engine, job_id: str
) -> None:
    _answer(engine, job_id, [3, 1])
    _kill(engine, job_id, [2])
    rows = list(iter_results(engine, job_id))
    assert [r["id"] for r in rows] == ["a", "2", "c"]
    assert all(tuple(r) == EXPORT_FIELDS for r in rows)
    first, dead, chat = rows
    assert first["output"] == "answer 1" and first["status"] == "done"
    assert first["prompt"] == "first" and first["metadata"] == {"k": 1}
    assert first["energy_j"] == 2.0 and first["energy_measured"] is False
    assert first["batch_id"] == "b1" and first["device"] == "cpu"
    assert dead["status"] == "dead" and dead["output"] is None and dead["batch_id"] == "b9"
    assert chat["prompt"] is None and chat["messages"] == [{"role": "user", "content": "third"}]


def test_write_results_jsonl_and_csv(engine: Engine, job_id: str) -> None:
    _answer(engine, job_id, [1, 2, 3, 4])
    out = io.StringIO()
    assert write_results(iter_results(engine, job_id), out, "jsonl") == 4
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["id"] for x in lines] == ["a", "2", "c", "d"]
    out = io.StringIO(newline="")
    assert write_results(iter_results(engine, job_id), out, "csv") == 4
    table = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert tuple(table[0]) == EXPORT_FIELDS
    assert table[0]["metadata"] == '{"k": 1}' and table[0]["energy_measured"] == "false"
    assert json.loads(table[2]["messages"])[0]["content"] == "third"
    assert float(table[3]["carbon_g"]) == 0.25


def _batch(batch_id: str, model: str | None, scores: dict[str, Any] | None) -> dict[str, Any]:
    return {"id": batch_id, "device": "cpu", "model": model, "strategy": "carbon", "size": 2,
            "status": "done", "scores": scores}


TWO_MODELS = {"cpu/gemma3-270m": {"score": 1.0, "model": "gemma3-270m", "quality": 67.7},
              "cpu/smollm2-135m-instruct": {"score": 0.5, "model": "smollm2-135m-instruct",
                                            "quality": 66.3}}


def test_results_name_the_model_that_answered_with_its_quality(
    engine: Engine, job_id: str
) -> None:
    with engine.begin() as conn:
        conn.execute(insert(Batch), [
            _batch("b1", "gemma3-270m", TWO_MODELS),
            _batch("b2", "smollm2-135m-instruct", TWO_MODELS),
            _batch("b3", "mine", {"cpu/mine": {"model": "mine", "quality": None}}),
            _batch("b4", None, {"cpu": {"score": 1.0}})])  # routed before models were chosen
    for batch_id, positions in (("b1", [1]), ("b2", [2]), ("b3", [3])):
        _answer(engine, job_id, positions, batch_id)
    _kill(engine, job_id, [4])
    rows = list(iter_results(engine, job_id))
    assert [(r["model"], r["model_quality"]) for r in rows] == [
        ("gemma3-270m", 67.7), ("smollm2-135m-instruct", 66.3), ("mine", None), (None, None)]
    out = io.StringIO(newline="")
    write_results(iter(rows), out, "csv")
    table = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(t["model"], t["model_quality"]) for t in table] == [
        ("gemma3-270m", "67.7"), ("smollm2-135m-instruct", "66.3"), ("mine", ""), ("", "")]
    out = io.StringIO()
    write_results(iter(rows), out, "jsonl")
    assert json.loads(out.getvalue().splitlines()[0])["model"] == "gemma3-270m"


def test_a_batch_of_a_device_model_reads_its_quality(engine: Engine, job_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(insert(Batch), [_batch("b1", "smollm2-135m-instruct", {
            "cpu": {"model": "smollm2-135m-instruct", "quality": 66.3}})])
    _answer(engine, job_id, [1], "b1")
    first = next(iter_results(engine, job_id))
    assert (first["model"], first["model_quality"]) == ("smollm2-135m-instruct", 66.3)
    assert decision_quality("cpu", "gemma3-270m", TWO_MODELS) == 67.7
    assert decision_quality("cpu", "other", TWO_MODELS) is None


def test_client_submit_status_wait_results(db_url: str, redis_url: str) -> None:
    settings = load_settings(redis_url=redis_url, database_url=db_url, max_tokens=12)
    with Client(settings) as client:
        job_id = client.submit(["one", {"prompt": "two", "id": "x"}])
        view = client.status(job_id)
        assert view.total == 2 and view.status == JobStatus.QUEUED
        with pytest.raises(WaitTimeoutError, match="not finished") as info:
            client.wait(job_id, timeout_s=0.3, poll_s=0.05)
        assert isinstance(info.value, TimeoutError)
        _answer(client.engine, job_id, [1, 2])
        assert client.wait(job_id, timeout_s=5).finished
        rows = client.results(job_id)
        assert [r["id"] for r in rows] == ["1", "x"]
        assert [r["output"] for r in rows] == ["answer 1", "answer 2"]


def test_client_reads_without_a_broker(db_url: str) -> None:
    with Client(load_settings(database_url=db_url)) as client, pytest.raises(NotFoundError):
        client.status("missing")
