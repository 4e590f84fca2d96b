"""Producer side on real Redis and real SQLite + PostgreSQL: rows, refs, reconcile, idempotency."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import Engine, func, select, text, update
from sqlmodel import SQLModel

from pipeline.broker.queue import PENDING_KEY, PromptRef
from pipeline.broker.restore import reconcile
from pipeline.errors import InputError, ServiceError
from pipeline.intake.parse import validate_records
from pipeline.intake.submit import (
    JobOptions,
    SubmitHandles,
    SubmitReceipt,
    estimate_prompt_tokens,
    submit_file,
    submit_records,
)
from pipeline.intake.submit_call import submit_task_payload
from pipeline.ledger.db import make_engine
from pipeline.ledger.models import Job, JobStatus, Prompt, PromptStatus
from pipeline.settings import load_settings
from workers.backends.llama.tokenizer import ModelTokenizer

pytestmark = pytest.mark.service
JOBS = SQLModel.metadata.tables["job"]
PROMPTS = SQLModel.metadata.tables["prompt"]


def _submit(engine: Engine, rclient: redis.Redis, items: list[Any], **kw: Any) -> SubmitReceipt:
    records = validate_records(items)
    args: dict[str, Any] = {"source": "test", "strategy": "carbon", "default_max_tokens": 64}
    args.update(kw)
    return submit_records(engine, rclient, records, **args)


def _refs(rclient: redis.Redis) -> list[PromptRef]:
    return [PromptRef.decode(r) for r in rclient.lrange(PENDING_KEY, 0, -1)]


def test_submit_writes_job_prompts_then_refs(engine: Engine, rclient: redis.Redis) -> None:
    items: list[Any] = [
        "a" * 10,
        {"prompt": "second", "id": "q2", "max_tokens": 8, "metadata": {"k": "v"}},
        {"messages": [{"role": "user", "content": "hello"}], "id": 3},
    ]
    receipt = _submit(engine, rclient, items)
    assert len(receipt.job_id) == 32 and receipt.n_prompts == 3 and not receipt.deferred
    with engine.connect() as conn:
        job = conn.execute(select(JOBS).where(JOBS.c.id == receipt.job_id)).one()
        prompts = conn.execute(select(PROMPTS).order_by(PROMPTS.c.position)).all()
        nulls = conn.execute(text("select count(*) from prompt where messages is null")).scalar()
    assert (job.n_prompts, job.status, job.strategy, job.max_tokens, job.source) == (
        3, JobStatus.QUEUED, "carbon", 64, "test")
    assert job.created_at is not None
    assert [p.id for p in prompts] == [f"{receipt.job_id}:{i}" for i in (1, 2, 3)]
    assert [p.external_id for p in prompts] == ["1", "q2", "3"]
    assert [p.max_tokens for p in prompts] == [64, 8, 64]
    assert [p.prompt_tokens_est for p in prompts] == [3, 2, 6]
    assert {p.status for p in prompts} == {PromptStatus.PENDING}
    assert prompts[1].metadata == {"k": "v"} and prompts[0].metadata is None
    assert prompts[2].messages == [{"role": "user", "content": "hello"}]
    assert nulls == 2  # absent JSON is SQL NULL, not the JSON literal null
    refs = _refs(rclient)
    assert [r.prompt_id for r in refs] == [p.id for p in prompts]
    assert [(r.prompt_tokens, r.max_tokens) for r in refs] == [(3, 64), (2, 8), (6, 64)]
    assert {r.job_id for r in refs} == {receipt.job_id}


def test_estimate_prompt_tokens_is_about_four_chars_per_token() -> None:
    recs = validate_records(["abcd", "abcde", {"messages": [{"role": "user", "content": "abcd"}]}])
    assert [estimate_prompt_tokens(r) for r in recs] == [1, 2, 5]


def test_submit_file_parses_then_submits(
    engine: Engine, rclient: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "p.csv"
    path.write_text("prompt,id\nhello,a\nworld,b\n")
    receipt = submit_file(SubmitHandles(load_settings(), ModelTokenizer(None), engine, rclient), path,
                          options=JobOptions(max_tokens=16, strategy="latency"))
    assert receipt.n_prompts == 2 and rclient.llen(PENDING_KEY) == 2
    with engine.connect() as conn:
        assert conn.execute(select(JOBS.c.source)).scalar_one() == str(path)


def test_submit_file_applies_the_limits_and_keeps_what_was_accepted(
    engine: Engine, rclient: redis.Redis, tmp_path: Path
) -> None:
    with ModelTokenizer(None) as tokenizer:  # the bundled model's, as workers count
        handles = SubmitHandles(load_settings(max_prompts_per_job=3), tokenizer, engine, rclient)
        good = tmp_path / "good.txt"
        good.write_text("one\ntwo\n")
        accepted = submit_file(handles, good)
        too_many = tmp_path / "many.txt"
        too_many.write_text("a\nb\nc\nd\n")
        with pytest.raises(InputError, match="4 prompts exceed the limit of 3"):
            submit_file(handles, too_many)
        oversize = tmp_path / "long.jsonl"
        oversize.write_text('{"prompt": "fine"}\n' + json.dumps({"prompt": "token " * 1500}) + "\n")
        with pytest.raises(InputError, match="1024-token context per sequence") as info:
            submit_file(handles, oversize)
        assert (info.value.line, info.value.field) == (2, "prompt")
        assert "line 2" in str(info.value)
    # the refused files wrote nothing; the job accepted before is whole, in SQL and in Redis
    with engine.connect() as conn:
        assert conn.execute(select(JOBS.c.id)).scalars().all() == [accepted.job_id]
        assert conn.execute(select(func.count()).select_from(PROMPTS)).scalar_one() == 2
    assert [r.prompt_id for r in _refs(rclient)] == [f"{accepted.job_id}:{i}" for i in (1, 2)]


def test_deferred_job_stays_in_sql(engine: Engine, rclient: redis.Redis) -> None:
    receipt = _submit(engine, rclient, ["x", "y"], deferred=True,
                      deadline=datetime.now(UTC) + timedelta(hours=8))
    assert receipt.deferred and rclient.llen(PENDING_KEY) == 0
    with engine.connect() as conn:
        assert conn.execute(select(JOBS.c.status)).scalar_one() == JobStatus.DEFERRED
    assert reconcile(engine, rclient) == 0  # the planner releases deferred jobs, not reconcile


def test_empty_records_rejected(engine: Engine, rclient: redis.Redis) -> None:
    with pytest.raises(InputError):
        submit_records(engine, rclient, [], source="t", strategy="carbon", default_max_tokens=1)


def test_reconcile_reenqueues_after_redis_lost_its_list(
    engine: Engine, rclient: redis.Redis
) -> None:
    receipt = _submit(engine, rclient, [f"p{i}" for i in range(25)])
    rclient.delete(PENDING_KEY)
    assert reconcile(engine, rclient) == 25
    assert [r.prompt_id for r in _refs(rclient)] == [f"{receipt.job_id}:{i}" for i in range(1, 26)]
    assert reconcile(engine, rclient) == 0  # nothing missing any more


def test_reconcile_skips_queued_and_batched_prompts(engine: Engine, rclient: redis.Redis) -> None:
    receipt = _submit(engine, rclient, [f"p{i}" for i in range(6)])
    rclient.ltrim(PENDING_KEY, 0, 1)  # 1 and 2 still queued; 3..6 lost
    with engine.begin() as conn:
        conn.execute(update(PROMPTS).where(PROMPTS.c.position.in_([3, 4]))
                     .values(status=PromptStatus.BATCHED, batch_id="b1"))
    assert reconcile(engine, rclient) == 2
    assert [r.prompt_id for r in _refs(rclient)] == [
        f"{receipt.job_id}:{i}" for i in (1, 2, 5, 6)]


def test_redis_down_after_commit_keeps_sql_and_reconcile_recovers(
    engine: Engine, rclient: redis.Redis
) -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5,
                       retry=Retry(NoBackoff(), 0))
    with pytest.raises(ServiceError, match="ecobatch reconcile") as info:
        _submit(engine, dead, ["a", "b", "c"])
    with engine.connect() as conn:
        job_id = conn.execute(select(JOBS.c.id)).scalar_one()
        n = conn.execute(select(func.count()).select_from(PROMPTS)
                         .where(PROMPTS.c.status == PromptStatus.PENDING)).scalar_one()
    assert job_id in str(info.value) and n == 3
    assert reconcile(engine, rclient) == 3
    assert rclient.llen(PENDING_KEY) == 3


def test_sql_failure_is_a_service_error_and_enqueues_nothing(rclient: redis.Redis,
                                                              tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as conn:
        conn.execute(text("drop table prompt"))
    with pytest.raises(ServiceError, match="cannot write job"):
        _submit(engine, rclient, ["a"])
    assert rclient.llen(PENDING_KEY) == 0
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Job)).scalar_one() == 0


def test_given_job_id_makes_submission_idempotent(engine: Engine, rclient: redis.Redis) -> None:
    job_id = "f" * 32
    first = _submit(engine, rclient, ["a", "b"], job_id=job_id)
    rclient.delete(PENDING_KEY)  # as if the first delivery died before its push
    again = _submit(engine, rclient, ["a", "b"], job_id=job_id)
    assert first == again
    assert rclient.llen(PENDING_KEY) == 2
    assert _submit(engine, rclient, ["a", "b"], job_id=job_id) == first
    assert rclient.llen(PENDING_KEY) == 2
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Prompt)).scalar_one() == 2
    with pytest.raises(InputError, match="job id"):
        _submit(engine, rclient, ["a"], job_id="x" * 33)


def test_submit_task_payload(engine: Engine, rclient: redis.Redis) -> None:
    ctx = SubmitHandles(load_settings(max_tokens=99, strategy="greedy"), ModelTokenizer(None),
                        engine, rclient)
    receipt = submit_task_payload(ctx, ["a", {"prompt": "b", "max_tokens": 5}], {})
    assert receipt.n_prompts == 2
    assert [r.max_tokens for r in _refs(rclient)] == [99, 5]
    with engine.connect() as conn:
        assert conn.execute(select(JOBS.c.strategy)).scalar_one() == "greedy"
    with pytest.raises(InputError, match="bad submit option") as info:
        submit_task_payload(ctx, ["a"], {"max_tokenz": 3})
    assert info.value.field == "max_tokenz"
    with pytest.raises(InputError, match="must be a list"):
        submit_task_payload(ctx, "a", {})
    with pytest.raises(InputError) as info:
        submit_task_payload(ctx, ["a", {"prompt": ""}], {"max_tokens": 4})
    assert info.value.line == 2


def test_unknown_strategy_is_refused_naming_the_field(engine: Engine, rclient: redis.Redis) -> None:
    with pytest.raises(InputError, match="field 'strategy'"):
        _submit(engine, rclient, ["hello"], strategy="fastest")
    assert rclient.llen(PENDING_KEY) == 0


def test_model_demands_are_stored_per_prompt_and_checked_against_the_registry(
    engine: Engine, rclient: redis.Redis, tmp_path: Path
) -> None:
    devices = tmp_path / "devices.toml"
    devices.write_text('[[device]]\nname = "box"\nkind = "cpu"\nzone = "GB"\n'
                       'models = ["smollm2-135m-instruct", "gemma3-270m"]\n', encoding="utf-8")
    ctx = SubmitHandles(load_settings(devices=devices), ModelTokenizer(None), engine, rclient)
    items = ["any", {"prompt": "named", "model": "smollm2-135m-instruct"},
             {"prompt": "floor", "min_quality": 67}]
    receipt = submit_task_payload(ctx, items, {"min_quality": 60.0})
    with engine.connect() as conn:
        rows = conn.execute(select(PROMPTS.c.external_id, PROMPTS.c.model, PROMPTS.c.min_quality)
                            .order_by(PROMPTS.c.position)).all()
    assert receipt.n_prompts == 3
    # the job's floor fills in; a record's own model or floor wins
    assert [tuple(r) for r in rows] == [("1", None, 60.0), ("2", "smollm2-135m-instruct", 60.0),
                                        ("3", None, 67.0)]
    with pytest.raises(InputError, match="no device serves a model with quality >= 90; "
                                         "served: gemma3-270m") as info:
        submit_task_payload(ctx, ["a"], {"min_quality": 90})
    assert info.value.field == "min_quality"
    with pytest.raises(InputError, match="model llama-70b"):
        submit_task_payload(ctx, [{"prompt": "a", "model": "llama-70b"}], {})
    with pytest.raises(InputError, match="min_quality"):
        submit_task_payload(ctx, [{"prompt": "a", "min_quality": 101}], {})
