"""Submission limits: prompt size in tokens, prompts per job, submit calls per client."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlmodel import Session

from pipeline.app.cli.main import main
from pipeline.broker.queue import PENDING_KEY
from pipeline.client import Client
from pipeline.errors import InputError
from pipeline.intake.limits import (
    RATE_WINDOW_S,
    byte_bound,
    check_prompt_sizes,
    check_submission,
    take_submit_token,
)
from pipeline.intake.parse import PromptIn, validate_records
from pipeline.intake.submit import JobOptions, check_job
from pipeline.ledger.db import make_engine
from pipeline.ledger.models import Job, JobStatus
from pipeline.settings import load_settings
from tests.cluster import QuickStopGroup, cluster_env, wait_until
from workers.backends.llama.tokenizer import ModelTokenizer

LONG = "token " * 1500  # about 1500 tokens: over the 1024-token default context


class NoCounter:
    """A tokenizer that must not be needed: every prompt is provably short enough."""

    def count_tokens(self, record: PromptIn) -> int:
        raise AssertionError(f"tokenized {record!r}")

    def max_token_bytes(self) -> int:
        raise AssertionError("read the vocabulary")


def test_short_prompts_are_accepted_without_loading_a_tokenizer() -> None:
    records = validate_records(["What is a joule?", {"messages": [
        {"role": "user", "content": "Define PUE."}]}])
    check_prompt_sizes(records, 128, 1024, NoCounter())
    assert byte_bound(records[0]) >= len("What is a joule?")


def test_oversize_prompt_is_refused_with_its_line_and_token_count(model_path: Path) -> None:
    records = validate_records(["short one", LONG, "short two"])
    with ModelTokenizer(model_path) as tokenizer, pytest.raises(InputError) as err:
        check_prompt_sizes(records, 128, 1024, tokenizer)
    assert err.value.line == 2 and err.value.field == "prompt"
    assert "1024-token context" in str(err.value) and "max_tokens 128" in str(err.value)


def test_max_tokens_counts_against_the_context(model_path: Path) -> None:
    # A prompt that fits alone no longer fits with a large max_tokens.
    records = validate_records([{"prompt": "word " * 600, "max_tokens": 500}])
    with ModelTokenizer(model_path) as tokenizer:
        assert tokenizer.count_tokens(records[0]) < 1024
        with pytest.raises(InputError, match="max_tokens 500"):
            check_prompt_sizes(records, 128, 1024, tokenizer)
        check_prompt_sizes(records, 128, 2048, tokenizer)  # a bigger context takes it


def test_too_many_prompts_per_job_is_refused() -> None:
    settings = load_settings(max_prompts_per_job=3)
    with pytest.raises(InputError, match="4 prompts exceed the limit of 3"):
        check_submission(validate_records(["a", "b", "c", "d"]), 128, settings, NoCounter())
    check_submission(validate_records(["a", "b", "c"]), 128, settings, NoCounter())


TWO_MODELS = """
[[device]]
name = "cpu"
kind = "cpu"
intensity_g_per_kwh = 300.0
models = ["smollm2-135m-instruct", "gemma3-270m"]
"""
# SmolLM2's tokenizer takes about 930 tokens for this, Gemma 3's (262k pieces) about 200: with
# max_tokens 128 it fits Gemma's 1024-token context per sequence and not SmolLM2's.
CJK = "你好世界" * 100
# Code the other way round (about 480 tokens in SmolLM2, 500 in Gemma): with max_tokens 530 it
# fits SmolLM2 only.
CODE = "def f(x):\n    return x\n" * 50


def _check_two(tmp_path: Path, records: list[Any], max_tokens: int = 128, **asked: Any) -> None:
    devices = tmp_path / "devices.toml"
    devices.write_text(TWO_MODELS, encoding="utf-8")
    settings = load_settings(devices=devices, max_tokens=max_tokens)
    with ModelTokenizer(None) as tokenizer:
        check_job(validate_records(records), settings, tokenizer, source="t",
                  options=JobOptions(**asked))


@pytest.mark.parametrize("asked", [{"model": "gemma3-270m"}, {"min_quality": 67.0}])
def test_a_prompt_fits_the_model_that_may_answer_it(tmp_path: Path,
                                                    asked: dict[str, Any]) -> None:
    _check_two(tmp_path, ["short", CJK], **asked)  # Gemma counts it, not the default SmolLM2
    _check_two(tmp_path, ["short", {"prompt": CJK, **asked}])  # asked by the record itself


@pytest.mark.parametrize("asked", [{"model": "smollm2-135m-instruct"}, {"min_quality": 60.0}, {}])
def test_a_prompt_one_model_that_may_answer_it_cannot_fit_is_refused(
    tmp_path: Path, asked: dict[str, Any]
) -> None:
    with pytest.raises(InputError) as err:
        _check_two(tmp_path, ["short", CJK], **asked)
    assert (err.value.line, err.value.field) == (2, "prompt")
    why = str(err.value)
    assert "in model smollm2-135m-instruct" in why and "1024-token context" in why
    if asked.get("model"):  # only SmolLM2 may answer: nothing else to suggest
        assert "shorten it" in why and "fits only" not in why
    else:  # SmolLM2 and Gemma may answer (quality >= 60, or any): Gemma is the way through
        assert "it fits only gemma3-270m" in why


def test_a_long_prompt_for_a_model_nobody_serves_is_refused_for_its_model(
    tmp_path: Path,
) -> None:
    with pytest.raises(InputError) as err:
        _check_two(tmp_path, [CJK], model="nope")
    assert err.value.field == "model" and "no device serves a model with model nope" in str(
        err.value)


def test_the_other_model_refuses_what_the_first_fits(tmp_path: Path) -> None:
    _check_two(tmp_path, [CODE], max_tokens=530, model="smollm2-135m-instruct")
    with pytest.raises(InputError) as err:
        _check_two(tmp_path, [CODE], max_tokens=530, min_quality=67.0)
    assert (err.value.line, err.value.field) == (1, "prompt")
    assert "in model gemma3-270m plus max_tokens 530" in str(err.value)


def test_client_refuses_an_oversize_prompt_before_writing_anything(
    redis_url: str, sqlite_url: str, rclient: redis.Redis
) -> None:
    with Client(load_settings(redis_url=redis_url, database_url=sqlite_url)) as client:
        with pytest.raises(InputError, match="line 3"):
            client.submit(["fine", "also fine", LONG])
        with Session(client.engine) as s:
            assert s.execute(select(func.count()).select_from(Job)).scalar_one() == 0
    assert rclient.llen(PENDING_KEY) == 0


def test_cli_submit_refuses_an_oversize_prompt(
    tmp_path: Path, redis_url: str, sqlite_url: str, rclient: redis.Redis
) -> None:
    path = tmp_path / "p.txt"
    path.write_text(f"fine\n{LONG}\n")
    res = CliRunner().invoke(main, ["submit", str(path), "--redis-url", redis_url,
                                    "--database-url", sqlite_url])
    assert res.exit_code == 1
    assert "line 2" in res.output and "tokens" in res.output
    assert rclient.llen(PENDING_KEY) == 0


def test_rate_limit_window_counts_per_client(rclient: redis.Redis) -> None:
    now_s = 1000 * RATE_WINDOW_S + 1.0
    for _ in range(3):
        take_submit_token(rclient, "svc-a", 3, now_s)
    with pytest.raises(InputError, match="rate limit: client 'svc-a'"):
        take_submit_token(rclient, "svc-a", 3, now_s)
    take_submit_token(rclient, "svc-b", 3, now_s)  # another client has its own budget
    take_submit_token(rclient, "svc-a", 3, now_s + RATE_WINDOW_S)  # the next minute


@pytest.mark.service
@pytest.mark.slow
def test_submit_task_is_rate_limited_per_client(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    if time.time() % RATE_WINDOW_S > RATE_WINDOW_S - 20:  # stay inside one window
        time.sleep(RATE_WINDOW_S - time.time() % RATE_WINDOW_S + 0.5)
    env = cluster_env(redis_url, sqlite_url, ECOBATCH_SUBMIT_RATE_PER_MIN="2")
    bare = Celery(broker=redis_url)
    with QuickStopGroup(env=env, log_dir=tmp_path / "logs") as children:
        router = children.start("router", ["router"])
        sent = {name: [bare.send_task("ecobatch.submit", args=[["hello"]],
                                      headers={"client": name}).id.replace("-", "")
                       for _ in range(n)]
                for name, n in (("svc-a", 4), ("svc-b", 1))}
        engine = make_engine(sqlite_url)

        def jobs(rejected: bool) -> dict[str, str | None]:
            with Session(engine) as s:
                return {j.id: j.error for j in s.execute(select(Job)).scalars()
                        if (j.status == JobStatus.REJECTED) == rejected}

        wait_until("the allowed jobs", lambda: len(jobs(rejected=False)) == 3, 60)
        wait_until("the refusals", lambda: router.log_tail(100_000).count("rate limit") == 2, 60)
    assert set(jobs(rejected=False)) == {*sent["svc-a"][:2], *sent["svc-b"]}
    # the refused calls are kept as rejected jobs, so their senders can see why
    refused = jobs(rejected=True)
    assert set(refused) == set(sent["svc-a"][2:])
    assert all("rate limit: client 'svc-a'" in (error or "") for error in refused.values())
