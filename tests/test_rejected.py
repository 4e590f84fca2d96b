"""A refused ``ecobatch.submit`` call is kept as a rejected job that ``ecobatch status`` shows.

Real processes: a router child serving the ``celery`` queue, a bare Celery client posting by
task name, and the CLI in a child process reading the ledger; SQLite and PostgreSQL, each
first made into a ledger of the previous version (no ``job.error`` column, no ``REJECTED``
status in PostgreSQL's enum type).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from pipeline.ledger.db import make_engine, normalise_url
from pipeline.ledger.migrations import HEAD_REVISION
from pipeline.ledger.models import JobStatus
from tests.cluster import QuickStopGroup, cluster_env, run_cli, run_clis, wait_until

HUGE_PROMPT = "word " * 1_000_000  # 5 MB: refused by its size, never tokenized
REFUSED: dict[str, tuple[list[Any], dict[str, Any], str]] = {
    "unknown strategy": (["hello"], {"strategy": "fastest"}, "field 'strategy'"),
    "max_tokens 10^9": (["hello"], {"max_tokens": 10**9}, "field 'max_tokens'"),
    "malformed record": ([{"prompt": "ok"}, {"prompt": "ok", "promt": "typo"}], {},
                         "line 2, field 'promt': unknown field"),
    "huge prompt": (["ok", HUGE_PROMPT], {}, "line 2, field 'prompt': prompt of 5,000,000 bytes"),
}


def _as_previous_version(url: str) -> None:
    """Make the ledger at ``url`` as the previous version left it: no ``job.error`` column,
    on PostgreSQL a ``jobstatus`` enum type without ``REJECTED``, and no schema revision."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE job DROP COLUMN error"))
        if engine.dialect.name == "postgresql":
            conn.execute(text("CREATE TYPE jobstatus_old AS ENUM "
                              "('QUEUED', 'DEFERRED', 'RUNNING', 'DONE', 'FAILED')"))
            conn.execute(text("ALTER TABLE job ALTER COLUMN status TYPE jobstatus_old "
                              "USING status::text::jobstatus_old"))
            conn.execute(text("DROP TYPE jobstatus"))
            conn.execute(text("ALTER TYPE jobstatus_old RENAME TO jobstatus"))
        conn.execute(text("DROP TABLE alembic_version"))
    engine.dispose()


def _jobs(plain: Engine) -> dict[str, tuple[str, str | None]]:
    """Jobs by id: stored status name and error, read without migrating anything (`ecobatch db
    upgrade` must have added the column); empty until it has."""
    try:
        with plain.connect() as conn:
            rows = conn.execute(text("SELECT id, status, error FROM job")).all()
    except DBAPIError:
        return {}
    return {row[0]: (row[1], row[2]) for row in rows}


def _status_json(job_ids: list[str], env: dict[str, str], cwd: Path) -> list[dict[str, Any]]:
    outs = run_clis([["status", job_id, "--json"] for job_id in job_ids], cwd, env)
    for out in outs:
        assert out.returncode == 0, out.stderr
    return [dict(json.loads(out.stdout)) for out in outs]


@pytest.mark.service
@pytest.mark.slow
def test_refused_submit_calls_are_rejected_jobs_shown_by_status(
    redis_url: str, db_url: str, tmp_path: Path
) -> None:
    _as_previous_version(db_url)
    env = cluster_env(redis_url, db_url)
    cli_env = {**os.environ, **env}
    upgraded = run_cli(["db", "upgrade"], tmp_path, cli_env)
    assert upgraded.returncode == 0 and f"to {HEAD_REVISION}" in upgraded.stdout, upgraded.stderr
    bare = Celery(broker=redis_url)
    with QuickStopGroup(env=env, log_dir=tmp_path / "logs") as children:
        router = children.start("router", ["router"])
        sent = {case: bare.send_task("ecobatch.submit", args=[prompts, options]).id
                for case, (prompts, options, _) in REFUSED.items()}
        accepted = bare.send_task("ecobatch.submit", args=[["a fine prompt"]]).id
        ids = {case: task_id.replace("-", "") for case, task_id in sent.items()}
        plain = create_engine(normalise_url(db_url))
        wait_until("every call taken in", lambda: len(_jobs(plain)) == len(sent) + 1, 120)
        # The same call again (as a redelivery would bring it), now with good prompts: the
        # job stays rejected with its first reason, and nothing of it is enqueued.
        again = bare.send_task("ecobatch.submit", args=[["now fine"]], task_id=sent["unknown strategy"])
        probe = bare.send_task("ecobatch.submit", args=[["probe"]]).id.replace("-", "")
        wait_until("the call after the repeat", lambda: probe in _jobs(plain), 120)
        log = router.log_tail(1_000_000)
    assert again.id == sent["unknown strategy"]
    jobs = _jobs(plain)
    assert jobs[accepted.replace("-", "")][0] == JobStatus.QUEUED.name
    views = dict(zip(REFUSED, _status_json([ids[case] for case in REFUSED], cli_env, tmp_path),
                     strict=True))
    for case, (_, _, reason) in REFUSED.items():
        status, error = jobs[ids[case]]
        assert status == JobStatus.REJECTED.name and error is not None and reason in error, case
        assert re.search(rf"WARNING/\S+\] ecobatch.submit: job {ids[case]} rejected", log), case
        view = views[case]
        assert view["status"] == "rejected" and reason in view["error"], (case, view)
    assert "stays rejected" in log
    with plain.connect() as conn:
        owners = set(conn.execute(text("SELECT DISTINCT job_id FROM prompt")).scalars())
    assert owners.isdisjoint(ids.values())
    table = run_cli(["status", ids["max_tokens 10^9"]], tmp_path, {**cli_env, "COLUMNS": "300"})
    assert table.returncode == 0 and "rejected" in table.stdout, table.stderr
    assert "rejected because" in table.stdout and "max_tokens" in table.stdout
    unseen = run_cli(["status", "0" * 32], tmp_path, cli_env)
    assert unseen.returncode == 1
    assert "not found: not yet taken in, or never submitted" in unseen.stderr
    plain.dispose()
