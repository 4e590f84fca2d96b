"""Helpers shared by the CLI modules: error mapping and settings built from options."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from rich.console import Console

from pipeline.errors import ConfigError, EcobatchError
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


def routing_options(func: F) -> F:
    """The options saying how a job is routed and when it may run."""
    decorators = [
        click.option("--strategy", type=strategy_choice(), default=None, help=STRATEGY_HELP),
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
