"""What the device task does with each failure: the policy's outcome, written to the ledger."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session

from pipeline.app.context import AppContext
from pipeline.errors import MemoryBudgetError, NotFoundError, RetryableError
from pipeline.fleet.devices import Device
from pipeline.ledger.db import session_scope
from pipeline.ledger.models import Batch, BatchStatus, Job, JobStatus, Prompt, PromptStatus
from pipeline.ledger.outcome import Action, decide
from pipeline.settings import Settings, load_settings
from workers.backends.base import BatchOutput, GenerationRequest
from workers.backends.echo import EchoBackend
from workers.service.infer import run_batch, settle_failure


class NeverFits(EchoBackend):
    """A backend whose batches never fit the device's memory."""

    def generate(self, requests: list[GenerationRequest]) -> BatchOutput:
        raise MemoryBudgetError("KV cache of one sequence needs 9 GiB, 1 GiB free")


def never_fits(device: Device, settings: Settings) -> NeverFits:
    """The plugin factory of :class:`NeverFits`."""
    del device
    return NeverFits(n_ctx_per_seq=settings.n_ctx_per_seq)


def _ctx(tmp_path: Path, backend: str, prompt: str = "hello") -> AppContext:
    ctx = AppContext(load_settings(database_url=f"sqlite:///{tmp_path / 'l.db'}",
                                   backend=backend, max_attempts=3))
    with session_scope(ctx.engine) as s:
        s.add(Job(id="j1", n_prompts=1))
        s.add(Batch(id="b1", device=ctx.registry.devices[0].name, size=1))
        s.flush()
        s.add(Prompt(id="j1:0", job_id="j1", position=0, external_id="1", prompt=prompt,
                     status=PromptStatus.BATCHED, batch_id="b1"))
    return ctx


def _fail(ctx: AppContext, batch_id: str, exc_type: type[Exception]) -> Exception:
    with pytest.raises(exc_type) as info:
        run_batch(ctx, batch_id)
    return info.value


def test_a_batch_that_never_fits_is_dead_lettered_at_once(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "tests.workers.test_failure_outcome:never_fits")
    exc = _fail(ctx, "b1", MemoryBudgetError)
    outcome = decide(exc, 1, ctx.worker_config.retry_policy)
    assert outcome.action == Action.DEAD_LETTER
    reply = settle_failure(ctx, "b1", exc, outcome)
    assert reply is not None and reply["status"] == "dead" and "9 GiB" in reply["error"]
    with Session(ctx.engine) as s:
        batch, job = s.get(Batch, "b1"), s.get(Job, "j1")
        assert batch is not None and batch.status == BatchStatus.DEAD and batch.attempts == 1
        assert job is not None and job.status == JobStatus.FAILED


def test_a_failed_decode_is_recorded_and_retried_after_the_backoff(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "tests.faultbackend:make_backend", "[raise] hello")
    exc = _fail(ctx, "b1", RetryableError)
    outcome = decide(exc, 1, ctx.worker_config.retry_policy)
    assert (outcome.action, outcome.delay_s) == (Action.RETRY, 2)
    assert settle_failure(ctx, "b1", exc, outcome) is None
    with Session(ctx.engine) as s:
        batch = s.get(Batch, "b1")
        assert batch is not None and batch.status == BatchStatus.DISPATCHED
        assert batch.error == "RuntimeError: injected fault" and batch.worker_id is None


def test_the_backoff_is_a_setting_doubled_for_each_attempt(tmp_path: Path) -> None:
    ctx = AppContext(load_settings(database_url=f"sqlite:///{tmp_path / 'l.db'}",
                                   retry_backoff_s=0.25))
    policy = ctx.worker_config.retry_policy
    assert [policy.backoff_s(n) for n in range(4)] == [0.25, 0.5, 1.0, 2.0]
    assert decide(RetryableError("decode failed", attempts=2), 1, policy).delay_s == 0.5


def test_an_unknown_batch_is_acknowledged(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "echo")
    exc = _fail(ctx, "nope", NotFoundError)
    outcome = decide(exc, 1, ctx.worker_config.retry_policy)
    assert outcome.action == Action.ACK
    assert settle_failure(ctx, "nope", exc, outcome) == {
        "batch_id": "nope", "status": "unknown", "error": "batch nope not found"}
