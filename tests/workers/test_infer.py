"""The device task's body on the real model: results written, and a bad prompt refused alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session

from pipeline.app.context import AppContext
from pipeline.ledger.db import session_scope
from pipeline.ledger.jobs import iter_results
from pipeline.ledger.models import Batch, BatchStatus, Job, Prompt, PromptStatus, Result
from pipeline.settings import load_settings
from workers.service.infer import run_batch

pytestmark = pytest.mark.slow


def _seed(ctx: AppContext, texts: list[str]) -> None:
    with session_scope(ctx.engine) as s:
        s.add(Job(id="j1", n_prompts=len(texts)))
        s.add(Batch(id="b1", device="cpu", size=len(texts)))
        s.flush()
        s.add_all(Prompt(id=f"j1:{i}", job_id="j1", position=i, external_id=str(i + 1),
                         prompt=t, max_tokens=8, status=PromptStatus.BATCHED, batch_id="b1")
                  for i, t in enumerate(texts))


def test_a_prompt_too_long_is_refused_alone_and_its_batch_mates_are_answered(
    tmp_path: Path,
) -> None:
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'l.db'}", n_ctx_per_seq=256)
    ctx = AppContext(settings)
    _seed(ctx, ["Name a colour.", "word " * 400, "Name a fruit."])
    outcome = run_batch(ctx, "b1")
    assert outcome["status"] == "done" and outcome["rejected"] == 1
    with Session(ctx.engine) as s:
        results = {r.prompt_id: r for r in s.execute(select(Result)).scalars()}
        long_prompt = s.get(Prompt, "j1:1")
        batch = s.get(Batch, "b1")
    assert set(results) == {"j1:0", "j1:2"}
    assert all(r.output.strip() and r.energy_j > 0 and r.energy_source for r in results.values())
    assert long_prompt is not None and long_prompt.status == PromptStatus.DEAD
    assert "exceeds the 256-token context" in (long_prompt.error or "")
    assert batch is not None and batch.status == BatchStatus.DONE and batch.energy_j
    exported = {row["id"]: row for row in iter_results(ctx.engine, "j1")}
    assert exported["2"]["status"] == "dead" and "exceeds" in exported["2"]["error"]
    assert exported["1"]["status"] == "done" and exported["1"]["error"] is None
    assert run_batch(ctx, "b1")["status"] == "done"  # a redelivery writes nothing twice
    with Session(ctx.engine) as s:
        assert len(list(s.execute(select(Result)).scalars())) == 2
