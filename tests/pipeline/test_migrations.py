"""Schema migrations: a ledger made by the release before Alembic (commit 79802b8), with data in
it, upgrades in place on SQLite and PostgreSQL and loses nothing; an outdated ledger is refused.

The 79802b8 schema is its own DDL, emitted from that commit's ``pipeline/models.py`` by
``create_all`` for each dialect and kept in ``tests/fixtures/ledger_79802b8/``.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import Engine, MetaData, func, inspect, select, text
from sqlmodel import Session, SQLModel

from pipeline.app.cli.main import main
from pipeline.errors import LedgerSchemaError, OutdatedLedgerError
from pipeline.ledger.db import connect_engine, make_engine, refuse_outdated_ledger
from pipeline.ledger.migrations import HEAD_REVISION, MIGRATIONS_DIR, alembic_config
from pipeline.ledger.models import Batch, Job, JobStatus, Result
from pipeline.ledger.schema import LedgerState, read_revision
from tests.cluster import clean_env, run_cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ledger_79802b8"
T0 = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
OLD_TABLES = ("job", "prompt", "batch", "result", "deviceprofile", "jobplan")


def old_ddl(dialect: str) -> list[str]:
    """The 79802b8 ledger's CREATE statements for ``dialect`` (sqlite or postgresql)."""
    sql = (FIXTURES / f"{dialect}.sql").read_text(encoding="utf-8")
    return [s.strip() for s in sql.split(";\n") if s.strip()]


def _rows() -> dict[str, list[dict[str, Any]]]:
    """Two jobs (one done on two devices, one deferred with a plan), prompts, batches,
    results and a device profile, as the 79802b8 release wrote them."""
    jobs = [dict(id="a" * 32, created_at=T0, source="p.jsonl", n_prompts=3, status="DONE",
                 strategy="carbon", max_tokens=16, weights={"carbon": 1.0}, slo_s=30.0),
            dict(id="b" * 32, created_at=T0, source="-", n_prompts=1, status="DEFERRED",
                 max_tokens=8, deadline=T0 + timedelta(hours=6))]
    prompts = [dict(id=f"{'a' * 32}:{i}", job_id="a" * 32, position=i, external_id=f"x{i}",
                    prompt=f"why {i}?", max_tokens=16, metadata={"k": i}, prompt_tokens_est=3,
                    status="DONE", batch_id=f"batch{i % 2}") for i in range(3)]
    prompts.append(dict(id=f"{'b' * 32}:0", job_id="b" * 32, position=0, external_id="y",
                        messages=[{"role": "user", "content": "hi"}], max_tokens=8,
                        prompt_tokens_est=2, status="PENDING"))
    batches = [dict(id=f"batch{i}", created_at=T0, device=f"dev{i}", strategy="carbon", size=2 - i,
                    status="DONE" if i == 0 else "DEAD", attempts=1 + i, predicted_latency_s=1.5,
                    predicted_energy_j=10.0, predicted_carbon_g=0.01, prediction_source="profile",
                    started_at=T0, finished_at=T0 + timedelta(seconds=2), latency_s=2.0,
                    energy_j=12.5, energy_source="rapl", energy_measured=True,
                    error=None if i == 0 else "gave up", scores={"dev0": {"carbon_g": 0.01}})
               for i in range(2)]
    results = [dict(prompt_id=f"{'a' * 32}:{i}", job_id="a" * 32, batch_id="batch0", device="dev0",
                    output=f"answer {i}", finish_reason="stop", prompt_tokens=3, completion_tokens=5,
                    ttft_s=0.1, latency_s=2.0, energy_j=6.25, energy_source="rapl",
                    energy_measured=True, carbon_g=0.002, embodied_carbon_g=0.0001, water_l=0.001,
                    cost_usd=None, intensity_g_per_kwh=412.0, created_at=T0) for i in (0, 2)]
    profiles = [dict(device="dev0", model="m.gguf", batch_size=4, created_at=T0, repeats=3,
                     prompt_tokens=10.0, completion_tokens=20.0, ttft_s=0.2, latency_s=1.0,
                     tokens_per_s=20.0, energy_j=5.0, j_per_token=0.25, avg_power_w=5.0,
                     peak_memory_bytes=1 << 30, energy_source="rapl", energy_measured=True)]
    plans = [dict(job_id="b" * 32, updated_at=T0, start_at=T0 + timedelta(hours=2),
                  end_at=T0 + timedelta(hours=3), deadline=T0 + timedelta(hours=6),
                  devices=["dev0"], energy_j=5.0, carbon_g=0.001, carbon_now_g=0.002,
                  forecast_digest="abc", note="window 08-09")]
    return {"job": jobs, "prompt": prompts, "batch": batches, "result": results,
            "deviceprofile": profiles, "jobplan": plans}


def build_old_ledger(engine: Engine) -> None:
    """Create the 79802b8 schema on ``engine`` and fill it with :func:`_rows`."""
    with engine.begin() as conn:
        for statement in old_ddl(engine.dialect.name):
            conn.execute(text(statement))
    old = MetaData()
    old.reflect(engine)
    with engine.begin() as conn:
        for table, rows in _rows().items():
            for row in rows:  # one by one: the rows leave different columns to their defaults
                conn.execute(old.tables[table].insert(), row)


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows per table of the old ledger."""
    with engine.connect() as conn:
        return {t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())
                for t in OLD_TABLES}


def _drop_everything(url: str) -> None:
    engine = connect_engine(url)
    SQLModel.metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


@pytest.fixture
def ledger_url(db_url: str) -> Iterator[str]:
    """An empty database on SQLite and on PostgreSQL, also without an ``alembic_version``."""
    _drop_everything(db_url)
    yield db_url
    _drop_everything(db_url)


@pytest.fixture
def old_ledger(ledger_url: str) -> Iterator[str]:
    """A 79802b8 ledger with data in it; yields its URL."""
    engine = connect_engine(ledger_url)
    build_old_ledger(engine)
    engine.dispose()
    yield ledger_url


def _schema_diffs(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)


def test_head_revision_is_the_newest_script() -> None:
    assert ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head() == HEAD_REVISION


def test_the_79802b8_fixture_lacks_what_came_since(old_ledger: str) -> None:
    engine = connect_engine(old_ledger)
    columns = {t: {c["name"] for c in inspect(engine).get_columns(t)} for t in OLD_TABLES}
    assert "error" not in columns["job"] and "worker_id" not in columns["batch"]
    assert "intensity_signal" not in columns["result"]
    with engine.connect() as conn:
        assert read_revision(conn).state is LedgerState.UNVERSIONED


def test_an_old_ledger_upgrades_in_place_and_loses_nothing(old_ledger: str) -> None:
    before = row_counts(connect_engine(old_ledger))
    assert before == {"job": 2, "prompt": 4, "batch": 2, "result": 2, "deviceprofile": 1,
                      "jobplan": 1}
    out = CliRunner().invoke(main, ["db", "upgrade", "--database-url", old_ledger])
    assert out.exit_code == 0, out.output
    assert f"to {HEAD_REVISION}" in out.output
    engine = make_engine(old_ledger)  # no longer refused
    assert row_counts(engine) == before
    assert _schema_diffs(engine) == []  # exactly the models' schema, indexes and types
    with Session(engine) as s:
        job = s.get(Job, "a" * 32)
        assert job is not None and job.status is JobStatus.DONE and job.error is None
        assert job.weights == {"carbon": 1.0} and job.created_at == T0
        batch = s.get(Batch, "batch1")
        assert batch is not None and batch.error == "gave up" and batch.worker_id is None
        energy = s.execute(select(func.sum(Result.energy_j))).scalar_one()
        assert energy == pytest.approx(12.5)


def test_an_upgraded_ledger_takes_the_rows_of_today(old_ledger: str) -> None:
    CliRunner().invoke(main, ["db", "upgrade", "--database-url", old_ledger])
    engine = make_engine(old_ledger)
    with Session(engine) as s:
        s.add(Job(id="c" * 32, status=JobStatus.REJECTED, error="bad prompt"))
        s.commit()
        rejected = s.get(Job, "c" * 32)
        assert rejected is not None and rejected.status is JobStatus.REJECTED


def test_an_outdated_ledger_is_refused_naming_the_command(old_ledger: str) -> None:
    with pytest.raises(OutdatedLedgerError, match="ecobatch db upgrade"):
        make_engine(old_ledger)
    out = CliRunner().invoke(main, ["status", "x", "--database-url", old_ledger])
    assert out.exit_code == 1 and "ecobatch db upgrade" in out.output
    assert "error" not in {c["name"] for c in inspect(connect_engine(old_ledger)).get_columns("job")}


def test_a_ledger_stamped_at_an_older_revision_is_refused_then_upgraded(old_ledger: str) -> None:
    engine = connect_engine(old_ledger)
    with engine.begin() as conn:
        command.stamp(alembic_config(conn), "0001")
    with pytest.raises(OutdatedLedgerError, match="revision 0001"):
        make_engine(old_ledger)
    assert "0001: older than head" in CliRunner().invoke(
        main, ["db", "current", "--database-url", old_ledger]).output
    make_engine(old_ledger, upgrade=True)
    with engine.connect() as conn:
        assert read_revision(conn).state is LedgerState.HEAD


def test_a_ledger_of_a_release_after_79802b8_upgrades_too(old_ledger: str) -> None:
    """Releases between 79802b8 and Alembic added some of the columns at start-up."""
    engine = connect_engine(old_ledger)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE job ADD COLUMN error TEXT"))
        conn.execute(text("ALTER TABLE batch ADD COLUMN worker_id VARCHAR(200)"))
    make_engine(old_ledger, upgrade=True)
    assert _schema_diffs(engine) == []
    assert row_counts(engine)["prompt"] == 4


def test_a_new_database_is_created_at_head(ledger_url: str) -> None:
    engine = make_engine(ledger_url)
    assert _schema_diffs(engine) == []
    out = CliRunner().invoke(main, ["db", "current", "--database-url", ledger_url])
    assert out.output.strip() == f"{HEAD_REVISION} (head)"


def test_replaying_every_revision_gives_the_models_schema(ledger_url: str) -> None:
    engine = connect_engine(ledger_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    assert _schema_diffs(engine) == []
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    assert not set(inspect(engine).get_table_names()) & set(OLD_TABLES)


def test_a_revision_unknown_to_this_release_is_refused(ledger_url: str) -> None:
    engine = make_engine(ledger_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(LedgerSchemaError, match="upgrade ecobatch"):
        make_engine(ledger_url, upgrade=True)


def test_history_lists_the_revisions() -> None:
    out = CliRunner().invoke(main, ["db", "history"])
    assert out.exit_code == 0
    lines = out.output.splitlines()
    assert f" -> {HEAD_REVISION} (head)" in lines[0]
    assert lines[-1].startswith("<base> -> 0001")


@pytest.mark.slow
def test_ecobatch_run_upgrades_its_own_old_sqlite_ledger(tmp_path: Path) -> None:
    """The embedded default (no ECOBATCH_REDIS_URL, SQLite) is the one process that upgrades."""
    engine = connect_engine(f"sqlite:///{tmp_path / 'ecobatch.db'}")
    build_old_ledger(engine)
    before = row_counts(engine)
    (tmp_path / "p.jsonl").write_text('{"prompt": "one"}\n{"prompt": "two"}\n')
    proc = run_cli(["run", "p.jsonl", "-o", "out.jsonl"], cwd=tmp_path,
                   env={**clean_env(), "ECOBATCH_BACKEND": "echo"}, timeout_s=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = row_counts(engine)
    assert after["job"] == before["job"] + 1 and after["prompt"] == before["prompt"] + 2
    # Two new answers, and the old deferred job's prompt: its window is long past, so the
    # planner released it from the upgraded ledger and it was answered too.
    assert after["result"] == before["result"] + 3 and after["jobplan"] == before["jobplan"]
    with engine.connect() as conn:
        assert read_revision(conn).state is LedgerState.HEAD
        assert conn.execute(text("SELECT released_at FROM jobplan")).scalar() is not None


@pytest.mark.parametrize("command_args", [["router"], ["worker", "--device", "cpu"]])
def test_router_and_worker_refuse_an_outdated_ledger_before_starting(
        old_ledger: str, redis_url: str, command_args: list[str]) -> None:
    out = CliRunner().invoke(main, [*command_args, "--redis-url", redis_url,
                                    "--database-url", old_ledger])
    assert out.exit_code == 1 and "run `ecobatch db upgrade --database-url" in out.output


def test_a_database_away_at_start_is_not_refused(old_ledger: str) -> None:
    """Router and worker start without their database and wait for it, as before."""
    refuse_outdated_ledger("postgresql+psycopg://postgres@127.0.0.1:1/away")
    with pytest.raises(OutdatedLedgerError):
        refuse_outdated_ledger(old_ledger)


def _open_ledger(url: str, start_at: float) -> str:
    while time.time() < start_at:
        pass
    try:
        make_engine(url).dispose()
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return "ok"


def test_processes_opening_a_new_database_together_create_it_once(ledger_url: str) -> None:
    """A router and workers started at once on a new ledger (compose, `ecobatch run`)."""
    start_at = time.time() + 1.5
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        outcomes = pool.starmap(_open_ledger, [(ledger_url, start_at)] * 4)
    assert outcomes == ["ok"] * 4
    assert _schema_diffs(connect_engine(ledger_url)) == []


def test_upgrading_a_ledger_at_head_changes_nothing(ledger_url: str) -> None:
    make_engine(ledger_url).dispose()
    out = CliRunner().invoke(main, ["db", "upgrade", "--database-url", ledger_url])
    assert out.exit_code == 0 and out.output.strip() == f"ledger already at {HEAD_REVISION} (head)"
