"""Log lines as JSON objects carrying the job, batch and device they are about.

With ``ECOBATCH_LOG_FORMAT=json`` every line a router or worker logs is one JSON object:
``{"time": ..., "level": ..., "logger": ..., "message": ..., "job_id": ..., "batch_id": ...,
"device": ...}``; the last three appear where they apply. Code that handles a job or a batch
names it with :func:`log_fields` (or :func:`add_log_fields` inside a scope opened by the
caller); :class:`FieldsFilter` copies the names onto every record logged meanwhile, in that
thread or task, whatever logger (ecobatch's, Celery's, SQLAlchemy's) logs it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType

FIELDS = ("job_id", "batch_id", "device")
FORMATS = ("text", "json")

# A context variable is a key into each thread's or task's context, not shared state: what
# one batch names never shows on another's lines.
_FIELDS: ContextVar[Mapping[str, str]] = ContextVar(
    "ecobatch_log_fields", default=MappingProxyType({}))


def _clean(fields: Mapping[str, object]) -> dict[str, str]:
    return {k: str(v) for k, v in fields.items() if k in FIELDS and v not in (None, "")}


def push_log_fields(**fields: object) -> Token[Mapping[str, str]]:
    """Name a job, batch or device for the lines logged from now on; undo with
    :func:`pop_log_fields` and the token returned."""
    return _FIELDS.set({**_FIELDS.get(), **_clean(fields)})


def pop_log_fields(token: Token[Mapping[str, str]]) -> None:
    """Restore the names from before :func:`push_log_fields` (and any added since)."""
    _FIELDS.reset(token)


def add_log_fields(**fields: object) -> None:
    """Add names to the current scope, which the caller undoes (a task's scope, say)."""
    push_log_fields(**fields)


@contextmanager
def log_fields(**fields: object) -> Iterator[None]:
    """Name a job, batch or device on every line logged inside the ``with`` block."""
    token = push_log_fields(**fields)
    try:
        yield
    finally:
        pop_log_fields(token)


def current_log_fields() -> dict[str, str]:
    """The names in scope now."""
    return dict(_FIELDS.get())


def job_ids_field(job_ids: Iterable[object]) -> str:
    """One ``job_id`` value for lines about several jobs: their ids, sorted, comma-separated."""
    return ",".join(sorted({str(j) for j in job_ids}))


class FieldsFilter(logging.Filter):
    """Copies the names in scope (and ``static`` ones, e.g. a worker's device) onto records."""

    def __init__(self, static: Mapping[str, object] | None = None) -> None:
        super().__init__()
        self.static = _clean(static or {})

    def filter(self, record: logging.LogRecord) -> bool:
        """Always True: it only adds attributes the record does not have yet."""
        for key, value in {**self.static, **_FIELDS.get()}.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback goes in ``exc``)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as compact JSON."""
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "process": record.processName, "pid": record.process,
        }
        out.update({k: v for k in FIELDS if (v := getattr(record, k, None))})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def use_json(handler: logging.Handler, static: Mapping[str, object] | None = None) -> None:
    """Make ``handler`` write JSON lines with the names in scope (idempotent)."""
    handler.setFormatter(JsonFormatter())
    if not any(isinstance(f, FieldsFilter) for f in handler.filters):
        handler.addFilter(FieldsFilter(static))
