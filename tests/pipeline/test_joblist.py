"""``ecobatch jobs`` and ``status --watch`` on real SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, update

from pipeline.app.cli.joblist import jobs, watch_job
from pipeline.app.cli.jobs import _status_table, status
from pipeline.errors import InputError
from pipeline.ledger.db import session_scope
from pipeline.ledger.joblist import recent_jobs
from pipeline.ledger.models import Job, JobStatus, Prompt, PromptStatus, utc_now


def _seed(engine: Engine) -> None:
    now = utc_now()
    with session_scope(engine) as s:
        s.add(Job(id="old", created_at=now - timedelta(hours=3), n_prompts=1))
        s.add(Job(id="refused", created_at=now - timedelta(minutes=5), status=JobStatus.REJECTED,
                  error="bad"))
        s.add(Job(id="new", created_at=now, n_prompts=2))
        s.flush()
        s.add(Prompt(id="old:1", job_id="old", position=1, external_id="1", prompt="a"))
        s.add_all(Prompt(id=f"new:{i}", job_id="new", position=i, external_id=str(i), prompt="b",
                         status=PromptStatus.DEAD if i == 1 else PromptStatus.PENDING)
                  for i in (1, 2))


def test_jobs_are_listed_newest_first_and_filtered_by_state(engine: Engine, db_url: str) -> None:
    _seed(engine)
    assert [v.job_id for v in recent_jobs(engine)] == ["new", "refused", "old"]
    assert [v.job_id for v in recent_jobs(engine, limit=1)] == ["new"]
    assert [v.job_id for v in recent_jobs(engine, state=JobStatus.REJECTED)] == ["refused"]
    with pytest.raises(InputError):
        recent_jobs(engine, limit=0)
    out = CliRunner().invoke(jobs, ["--database-url", db_url, "--json"])
    rows = [json.loads(x) for x in out.output.splitlines()]
    assert [r["job_id"] for r in rows] == ["new", "refused", "old"], out.output
    assert (rows[0]["total"], rows[0]["n_failed"]) == (2, 1)
    table = CliRunner().invoke(jobs, ["--database-url", db_url, "--state", "queued"]).output
    assert "old" in table and "3h" in table and "refused" not in table


def test_status_watch_redraws_until_the_job_ends(engine: Engine, db_url: str) -> None:
    _seed(engine)

    def finish_later() -> None:
        time.sleep(0.5)
        with session_scope(engine) as s:
            s.execute(update(Prompt).where(Prompt.job_id == "new")  # type: ignore[arg-type]
                      .values(status=PromptStatus.DEAD))

    worker = threading.Thread(target=finish_later)
    worker.start()
    view = watch_job(engine, "new", _status_table, interval_s=0.1)
    worker.join()
    assert view.finished and view.n_failed == 2
    out = CliRunner().invoke(status, ["refused", "--watch", "--database-url", db_url])
    assert out.exit_code == 0 and "rejected" in out.output
