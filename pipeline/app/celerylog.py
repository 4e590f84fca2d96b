"""Keep routine Celery lines of periodic tasks out of an operator's log.

The router's beat sends ``ecobatch.route`` four times a second; at INFO Celery logs each
sending ("Scheduler: Sending due task"), each receipt and each success, which buries every
other line. :func:`quiet_task_info` drops those INFO lines for the named tasks only: their
warnings and errors, and every line of other tasks, still appear.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

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
