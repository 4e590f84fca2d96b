"""Keep routine Celery lines of periodic tasks out of an operator's log; JSON log lines.

The router's beat sends ``ecobatch.route`` four times a second; at INFO Celery logs each
sending ("Scheduler: Sending due task"), each receipt and each success, which buries every
other line. :func:`quiet_task_info` drops those INFO lines for the named tasks only: their
warnings and errors, and every line of other tasks, still appear.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Collection, Mapping, Sequence
from contextvars import Token
from typing import Any

from celery import Task
from celery.signals import after_setup_logger, after_setup_task_logger, task_postrun, task_prerun

from pipeline.app.celery_app import INFER_TASK, SUBMIT_TASK
from pipeline.logfields import pop_log_fields, push_log_fields, use_json

ROUTINE_LOGGERS = ("celery.beat", "celery.app.trace", "celery.worker.strategy")
"""Where Celery logs a beat's sending, a task's success, and a task's receipt."""


class RoutineTaskFilter(logging.Filter):
    """Drops INFO (and lower) records that name one of ``task_names``."""

    def __init__(self, task_names: Collection[str]) -> None:
        super().__init__()
        self.task_names = frozenset(task_names)

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a routine line about one of the tasks."""
        if record.levelno > logging.INFO:
            return True
        args = record.args
        if isinstance(args, Mapping):  # celery.app.trace and the worker: a context dict
            return args.get("name") not in self.task_names
        if isinstance(args, tuple):  # celery.beat: (entry name, task name)
            return not self.task_names.intersection(a for a in args if isinstance(a, str))
        return True


def quiet_task_info(task_names: Collection[str]) -> RoutineTaskFilter:
    """Install a :class:`RoutineTaskFilter` on Celery's routine loggers (in this process and
    the pool and beat processes it forks later); return it."""
    routine = RoutineTaskFilter(task_names)
    for name in ROUTINE_LOGGERS:
        logging.getLogger(name).addFilter(routine)
    return routine


def json_logs(loglevel: str, static: Mapping[str, str] | None = None) -> None:
    """Make this process, and the pool and beat processes it forks, log one JSON object a line
    (see :mod:`pipeline.logfields`), with ``static`` fields (a worker's device) on each.

    A JSON handler on the root logger from the start (Python warnings included) keeps Celery
    from adding its own; Celery's task logger, which it sets up apart, is turned to JSON, and
    each task names the batch (``ecobatch.infer_batch``) or job (``ecobatch.submit``) it runs.
    """
    handler = logging.StreamHandler(sys.stderr)
    use_json(handler, static)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(loglevel.upper())
    logging.captureWarnings(True)

    def to_json(logger: logging.Logger, **_: object) -> None:
        for h in logger.handlers:
            use_json(h, static)

    after_setup_logger.connect(to_json, weak=False)
    after_setup_task_logger.connect(to_json, weak=False)
    _name_tasks_in_logs()


def _name_tasks_in_logs() -> None:
    tokens: dict[str, Token[Mapping[str, str]]] = {}

    def prerun(task_id: str, task: Task, args: Sequence[Any] = (), **_: object) -> None:
        tokens[task_id] = push_log_fields(**task_log_fields(task.name, task_id, args))

    def postrun(task_id: str, **_: object) -> None:
        if (token := tokens.pop(task_id, None)) is not None:
            pop_log_fields(token)

    task_prerun.connect(prerun, weak=False)
    task_postrun.connect(postrun, weak=False)


def task_log_fields(name: str, task_id: str, args: Sequence[Any]) -> dict[str, str]:
    """What a task's lines are about: the batch of ``ecobatch.infer_batch``, the job of
    ``ecobatch.submit`` (its task id without dashes, as ``celery_app`` makes it)."""
    if name == INFER_TASK and args:
        return {"batch_id": str(args[0])}
    if name == SUBMIT_TASK:
        return {"job_id": task_id.replace("-", "")}
    return {}
