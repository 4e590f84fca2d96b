"""The ledger as the release before migrations made it (commit 79802b8).

A ledger made by ``create_all`` before Alembic came has no ``alembic_version`` table;
``ecobatch db upgrade`` stamps it with this revision and upgrades it from here.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_STATUS = sa.Enum("QUEUED", "DEFERRED", "RUNNING", "DONE", "FAILED", name="jobstatus")
PROMPT_STATUS = sa.Enum("PENDING", "BATCHED", "DONE", "DEAD", name="promptstatus")
BATCH_STATUS = sa.Enum("DISPATCHED", "RUNNING", "DONE", "DEAD", "MOVED", name="batchstatus")


def _utc(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _index(table: str, *columns: str, name: str | None = None) -> None:
    op.create_index(name or f"ix_{table}_{columns[0]}", table, list(columns))


def _job() -> None:
    op.create_table(
        "job",
        sa.Column("id", sa.String(length=32), nullable=False),
        _utc("created_at"),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("n_prompts", sa.Integer(), nullable=False),
        sa.Column("status", JOB_STATUS, nullable=False),
        sa.Column("strategy", sa.String(), nullable=True),
        sa.Column("max_tokens", sa.Integer(), nullable=False),
        sa.Column("weights", sa.JSON(), nullable=True),
        sa.Column("slo_s", sa.Float(), nullable=True),
        _utc("deadline"),
        sa.PrimaryKeyConstraint("id"),
    )
    _index("job", "created_at")
    _index("job", "status")


def _prompt() -> None:
    op.create_table(
        "prompt",
        sa.Column("id", sa.String(length=80), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("messages", sa.JSON(), nullable=True),
        sa.Column("max_tokens", sa.Integer(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("prompt_tokens_est", sa.Integer(), nullable=False),
        sa.Column("status", PROMPT_STATUS, nullable=False),
        sa.Column("batch_id", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    _index("prompt", "batch_id")
    _index("prompt", "job_id")
    _index("prompt", "job_id", "status", name="ix_prompt_job_status")
    _index("prompt", "status")


def _batch() -> None:
    op.create_table(
        "batch",
        sa.Column("id", sa.String(length=32), nullable=False),
        _utc("created_at"),
        sa.Column("device", sa.String(length=100), nullable=False),
        sa.Column("strategy", sa.String(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("status", BATCH_STATUS, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("predicted_latency_s", sa.Float(), nullable=False),
        sa.Column("predicted_energy_j", sa.Float(), nullable=False),
        sa.Column("predicted_carbon_g", sa.Float(), nullable=False),
        sa.Column("prediction_source", sa.String(), nullable=False),
        _utc("started_at"),
        _utc("finished_at"),
        sa.Column("latency_s", sa.Float(), nullable=True),
        sa.Column("energy_j", sa.Float(), nullable=True),
        sa.Column("energy_source", sa.String(), nullable=True),
        sa.Column("energy_measured", sa.Boolean(), nullable=True),
        sa.Column("peak_memory_bytes", sa.Integer(), nullable=True),
        sa.Column("host_energy_j", sa.Float(), nullable=True),
        sa.Column("host_energy_source", sa.String(), nullable=True),
        sa.Column("host_energy_measured", sa.Boolean(), nullable=True),
        sa.Column("energy_notes", sa.String(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("scores", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    _index("batch", "created_at")
    _index("batch", "device")
    _index("batch", "status")


def _result() -> None:
    op.create_table(
        "result",
        sa.Column("prompt_id", sa.String(length=80), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("batch_id", sa.String(length=32), nullable=False),
        sa.Column("device", sa.String(length=100), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("finish_reason", sa.String(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("ttft_s", sa.Float(), nullable=False),
        sa.Column("latency_s", sa.Float(), nullable=False),
        sa.Column("energy_j", sa.Float(), nullable=False),
        sa.Column("energy_source", sa.String(), nullable=False),
        sa.Column("energy_measured", sa.Boolean(), nullable=False),
        sa.Column("host_energy_j", sa.Float(), nullable=True),
        sa.Column("host_energy_source", sa.String(), nullable=True),
        sa.Column("host_energy_measured", sa.Boolean(), nullable=True),
        sa.Column("carbon_g", sa.Float(), nullable=False),
        sa.Column("embodied_carbon_g", sa.Float(), nullable=False),
        sa.Column("water_l", sa.Float(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("intensity_g_per_kwh", sa.Float(), nullable=False),
        _utc("created_at"),
        sa.PrimaryKeyConstraint("prompt_id"),
    )
    _index("result", "batch_id")
    _index("result", "job_id")


def _device_profile() -> None:
    op.create_table(
        "deviceprofile",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(length=100), nullable=False),
        sa.Column("model", sa.String(length=300), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        _utc("created_at"),
        sa.Column("repeats", sa.Integer(), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=False) for name in (
            "prompt_tokens", "completion_tokens", "ttft_s", "latency_s", "tokens_per_s",
            "energy_j", "j_per_token", "avg_power_w")),
        sa.Column("peak_memory_bytes", sa.Integer(), nullable=False),
        sa.Column("energy_source", sa.String(), nullable=False),
        sa.Column("energy_measured", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _index("deviceprofile", "device")


def _job_plan() -> None:
    op.create_table(
        "jobplan",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        _utc("updated_at"),
        _utc("start_at", nullable=False),
        _utc("end_at", nullable=False),
        _utc("deadline", nullable=False),
        sa.Column("devices", sa.JSON(), nullable=True),
        sa.Column("energy_j", sa.Float(), nullable=False),
        sa.Column("carbon_g", sa.Float(), nullable=False),
        sa.Column("carbon_now_g", sa.Float(), nullable=False),
        sa.Column("forecast_digest", sa.String(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        _utc("released_at"),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.PrimaryKeyConstraint("job_id"),
    )


def upgrade() -> None:
    """Create the six tables of the 79802b8 ledger with their indexes and status enums."""
    for create in (_job, _prompt, _batch, _result, _device_profile, _job_plan):
        create()


def downgrade() -> None:
    """Drop every table (and, on PostgreSQL, the status enums)."""
    for table in ("jobplan", "deviceprofile", "result", "batch", "prompt", "job"):
        op.drop_table(table)
    for enum in (BATCH_STATUS, PROMPT_STATUS, JOB_STATUS):
        enum.drop(op.get_bind(), checkfirst=True)
