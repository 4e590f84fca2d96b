"""Helpers shared by the CLI modules: error mapping and settings built from options."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

from pipeline.errors import EcobatchError
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
