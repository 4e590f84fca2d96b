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

from pipeline.app.context import AppContext
from pipeline.broker.queue import secure_url
from pipeline.broker.sentinel import kombu_url, transport_options
from pipeline.errors import ConfigError, ServiceError
from pipeline.ledger.outcome import Action, RetryPolicy, decide
from pipeline.settings import Settings, soft_time_limit_s

SUBMIT_TASK = "ecobatch.submit"
ROUTE_TASK = "ecobatch.route"
INFER_TASK = "ecobatch.infer_batch"
ROUTER_QUEUE = "router"
INTAKE_QUEUE = "celery"
SUBMIT_POLICY = RetryPolicy(handles=(ServiceError,))
"""A submit call is retried while SQL or Redis is away, for as long as it takes."""


class EcobatchCelery(Celery):
    """A Celery app carrying the process's :class:`AppContext`."""

    ctx: AppContext


def reliability_conf(settings: Settings) -> dict[str, Any]:
    """Celery settings that docs/architecture.md makes non-optional.

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
        "broker_transport_options": {**_transport_options(settings.visibility_timeout_s),
                                     **transport_options(settings.redis_url)},
        "task_time_limit": settings.task_time_limit_s,
        "task_soft_time_limit": soft_time_limit_s(settings.task_time_limit_s),
        # A batch killed by the hard limit goes back to the queue; its next claim counts the
        # attempt in SQL, so a batch that always hangs is dead-lettered, never lost.
        "task_acks_on_timeout": False,
        "task_ignore_result": True, "task_default_queue": INTAKE_QUEUE,
        "task_routes": {ROUTE_TASK: {"queue": ROUTER_QUEUE}},
        "broker_connection_retry_on_startup": True, "worker_hijack_root_logger": False,
        # A worker outlives a Redis outage of any length instead of exiting after 100 tries.
        "broker_connection_max_retries": None,
        # Task events on, so Flower and `celery events` see every task; the sender's too.
        "worker_send_task_events": True, "task_send_sent_event": True,
    }


def _transport_options(visibility_timeout_s: int) -> dict[str, int]:
    """Redis transport options: the visibility timeout, and how often unacknowledged messages
    of dead workers are looked for.

    kombu's default sweep runs about every 100 s (10 s x a throttle of 10); a tenth of the
    visibility timeout, at most 10 s, brings a dead worker's batch back soon after it is due.
    """
    return {"visibility_timeout": visibility_timeout_s,
            "unacked_restore_interval": max(1, min(10, visibility_timeout_s // 10)),
            "unacked_restore_throttle": 1}


def create_app(settings: Settings) -> EcobatchCelery:
    """Build the app for ``settings`` and register the three tasks on it."""
    broker = kombu_url(secure_url(settings.require_redis_url()))
    app = EcobatchCelery("ecobatch", broker=broker, set_as_current=False)
    app.conf.update(reliability_conf(settings))
    app.conf.beat_schedule = {
        "route": {"task": ROUTE_TASK, "schedule": timedelta(seconds=settings.router_interval_s),
                  "options": {"queue": ROUTER_QUEUE, "expires": 10 * settings.router_interval_s}},
    }
    app.ctx = AppContext(settings)
    _register(app, settings)
    return app


def _register(app: EcobatchCelery, settings: Settings) -> None:
    # The router's tasks have their own limit: the global one is sized for a batch's decode.
    limits = {"time_limit": settings.router_time_limit_s,
              "soft_time_limit": soft_time_limit_s(settings.router_time_limit_s)}
    app.task(name=SUBMIT_TASK, bind=True, acks_late=True, max_retries=None, **limits)(_submit)
    app.task(name=ROUTE_TASK, bind=True, ignore_result=True, **limits)(_route)
    app.task(name=INFER_TASK, bind=True, max_retries=None)(_infer_batch)


def _submit(self: Task, prompts: list[Any], options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Accept prompts posted by name, or record the refusal as a rejected job.

    The task id doubles as the job id, so a redelivered call is idempotent either way.
    """
    from pipeline.intake.submit_call import SubmitCall, take_submit_call

    ctx: AppContext = self.app.ctx
    # a redelivery of a call is not a new call: its rate-limit token is already taken
    call = SubmitCall(job_id=_job_id(self), client=client_id(self), redelivered=_redelivered(self))
    try:
        return take_submit_call(ctx, prompts, options or {}, call)
    except Exception as e:  # SQL or Redis away: keep the call, try it again later
        outcome = decide(e, self.request.retries + 1, SUBMIT_POLICY)
        if outcome.action != Action.RETRY:
            raise
        raise self.retry(exc=e, countdown=outcome.delay_s) from e


def client_id(task: Task) -> str:
    """Who sent a submit call, for rate limiting: the message header ``client`` if the caller
    set one (``send_task(..., headers={"client": "svc-a"})``), else Celery's ``origin`` (the
    sending process, ``gen<pid>@<host>``)."""
    named = getattr(task.request, "client", None)
    return str(named or task.request.origin or "anonymous")[:200]


def _redelivered(task: Task) -> bool:
    info = task.request.delivery_info or {}
    return bool(info.get("redelivered")) or bool(task.request.retries)


def _job_id(task: Task) -> str | None:
    tid = task.request.id
    return tid.replace("-", "") if tid else None


def _route(self: Task) -> dict[str, Any]:
    """Batch pending prompts and publish each batch to its device queue."""
    from router.service import guarded_route_pass

    ctx: AppContext = self.app.ctx
    return guarded_route_pass(ctx, publisher_for(self.app))


def _infer_batch(self: Task, batch_id: str) -> dict[str, Any]:
    """Run one batch on this worker's device and write its results; on a failure, do what the
    retry policy decides (``pipeline.ledger.outcome``)."""
    from workers.service.infer import run_batch, settle_failure

    ctx: AppContext = self.app.ctx
    try:
        return run_batch(ctx, batch_id)
    except Exception as e:
        outcome = decide(e, self.request.retries + 1, ctx.worker_config.retry_policy)
        reply = settle_failure(ctx, batch_id, e, outcome)
        if reply is not None:
            return reply
        raise self.retry(exc=e, countdown=outcome.delay_s) from e


def publisher_for(app: Celery) -> Any:
    """Return ``publish_many(pairs)`` sending ``ecobatch.infer_batch`` over one producer."""

    def publish_many(pairs: list[tuple[str, str]]) -> None:
        # producer.batch() sends a pass's messages in one Redis round trip (kombu >= 5.7).
        with app.producer_or_acquire() as producer, producer.batch():
            for batch_id, queue in pairs:
                app.send_task(INFER_TASK, args=[batch_id], queue=queue, producer=producer)

    return publish_many
