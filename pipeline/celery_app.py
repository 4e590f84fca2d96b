"""The Celery app: reliability settings, queues and the task list (the one place naming all three
packages besides the CLI).

Tasks are thin: they load by id, call plain functions and map errors to retries.
Task names and queues are a public contract: ``ecobatch.submit`` (default queue ``celery``, so a
bare client needs no routing), ``ecobatch.route`` (queue ``router``) and ``ecobatch.infer_batch``
(queue ``device.<name>``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery, Task

from pipeline.context import AppContext
from pipeline.errors import ConfigError, InputError
from pipeline.settings import Settings

SUBMIT_TASK = "ecobatch.submit"
ROUTE_TASK = "ecobatch.route"
INFER_TASK = "ecobatch.infer_batch"
ROUTER_QUEUE = "router"
INTAKE_QUEUE = "celery"
RETRY_DELAY_S = 2


class EcobatchCelery(Celery):
    """A Celery app carrying the process's :class:`AppContext`."""

    ctx: AppContext


def reliability_conf(settings: Settings) -> dict[str, Any]:
    """Celery settings that DESIGN.md makes non-optional.

    Raises:
        ConfigError: the visibility timeout would not outlast the longest batch.
    """
    if settings.visibility_timeout_s <= settings.task_time_limit_s:
        raise ConfigError(
            "visibility_timeout_s must exceed task_time_limit_s, else a long batch runs twice"
        )
    return {
        "task_serializer": "json", "result_serializer": "json", "accept_content": ["json"],
        "task_acks_late": True, "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout_s},
        "task_time_limit": settings.task_time_limit_s,
        "task_soft_time_limit": max(1, settings.task_time_limit_s - 30),
        "task_ignore_result": True, "task_default_queue": INTAKE_QUEUE,
        "task_routes": {ROUTE_TASK: {"queue": ROUTER_QUEUE}},
        "broker_connection_retry_on_startup": True, "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }


def create_app(settings: Settings) -> EcobatchCelery:
    """Build the app for ``settings`` and register the three tasks on it."""
    app = EcobatchCelery("ecobatch", broker=settings.require_redis_url(), set_as_current=False)
    app.conf.update(reliability_conf(settings))
    app.conf.beat_schedule = {
        "route": {"task": ROUTE_TASK, "schedule": timedelta(seconds=settings.router_interval_s),
                  "options": {"queue": ROUTER_QUEUE, "expires": 10 * settings.router_interval_s}},
    }
    app.ctx = AppContext(settings)
    _register(app)
    return app


def _register(app: EcobatchCelery) -> None:
    app.task(name=SUBMIT_TASK, bind=True, acks_late=True)(_submit)
    app.task(name=ROUTE_TASK, bind=True, ignore_result=True)(_route)
    app.task(name=INFER_TASK, bind=True, max_retries=None)(_infer_batch)


def _submit(self: Task, prompts: list[Any], options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Accept prompts posted by name; the task id doubles as the job id, so redelivery is idempotent."""
    from pipeline.submit import submit_task_payload

    ctx: AppContext = self.app.ctx
    try:
        receipt = submit_task_payload(ctx, prompts, options or {}, job_id=_job_id(self))
    except InputError as e:
        return {"error": str(e)}
    return {"job_id": receipt.job_id, "n_prompts": receipt.n_prompts}


def _job_id(task: Task) -> str | None:
    tid = task.request.id
    return tid.replace("-", "") if tid else None


def _route(self: Task) -> dict[str, Any]:
    """Batch pending prompts and publish each batch to its device queue."""
    from router.service import route_pass

    ctx: AppContext = self.app.ctx
    return route_pass(ctx, publisher_for(self.app))


def _infer_batch(self: Task, batch_id: str) -> dict[str, Any]:
    """Run one batch on this worker's device and write its results."""
    from workers.infer import RetryableError, run_batch

    ctx: AppContext = self.app.ctx
    try:
        return run_batch(ctx, batch_id)
    except RetryableError as e:
        raise self.retry(exc=e, countdown=RETRY_DELAY_S) from e


def publisher_for(app: Celery) -> Any:
    """Return ``publish_many(pairs)`` sending ``ecobatch.infer_batch`` over one producer."""

    def publish_many(pairs: list[tuple[str, str]]) -> None:
        # producer.batch() sends a pass's messages in one Redis round trip (kombu >= 5.7).
        with app.producer_or_acquire() as producer, producer.batch():
            for batch_id, queue in pairs:
                app.send_task(INFER_TASK, args=[batch_id], queue=queue, producer=producer)

    return publish_many
