"""Task events are on: Celery's event stream (what Flower reads) shows ecobatch's tasks."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from pipeline.app.celery_app import INFER_TASK, SUBMIT_TASK, create_app
from pipeline.ledger.db import make_engine
from pipeline.settings import load_settings
from tests.cluster import fault_env, running_cluster, wait_until


class EventTap:
    """Every event on the broker's event exchange, captured on a thread until stopped."""

    def __init__(self, app: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.connection = app.connection_for_read()
        self.receiver = app.events.Receiver(self.connection, handlers={"*": self.events.append})
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def of_task(self, task_id: str) -> list[str]:
        """The types of the events seen about ``task_id``, in order."""
        return [e["type"] for e in list(self.events) if e.get("uuid") == task_id]

    def stop(self) -> None:
        """Stop capturing and close the connection."""
        self.receiver.should_stop = True
        self.thread.join(timeout=10)
        self.connection.close()


def _infer_tasks(tap: EventTap) -> dict[str, list[str]]:
    names = {e["uuid"]: e["name"] for e in list(tap.events) if e["type"] == "task-sent"}
    return {uuid: tap.of_task(uuid) for uuid, name in names.items() if name == INFER_TASK}


@pytest.mark.service
@pytest.mark.slow
def test_every_task_of_a_job_shows_on_the_event_stream(
        redis_url: str, sqlite_url: str, tmp_path: Path) -> None:
    """submit (sent by this process), then the router's infer_batch (sent inside the router's
    batched producer) run by a real worker: each sent, received, started and succeeded."""
    make_engine(sqlite_url).dispose()
    app = create_app(load_settings(redis_url=redis_url, database_url=sqlite_url))
    tap = EventTap(app)
    tap.thread.start()
    try:
        with running_cluster(fault_env(redis_url, sqlite_url), tmp_path / "logs"):
            wait_until("the first worker event", lambda: any(
                e["type"].startswith("worker-") for e in list(tap.events)), timeout_s=90)
            task_id = app.send_task(SUBMIT_TASK, args=[["why is the sky blue?"]]).id
            wait_until("the batch to succeed", lambda: any(
                "task-succeeded" in seen for seen in _infer_tasks(tap).values()), timeout_s=90)
    finally:
        tap.stop()
        app.close()
    # Each set, not an order: Celery publishes task-sent after the task's message, so the
    # consumer's task-received can reach the stream first (seen on a loaded 2-core machine).
    submit = tap.of_task(task_id)
    assert {"task-sent", "task-received", "task-started", "task-succeeded"} <= set(submit)
    sent = next(e for e in tap.events if e.get("uuid") == task_id and e["type"] == "task-sent")
    assert sent["name"] == SUBMIT_TASK and sent["queue"] == "celery"
    (infer,) = _infer_tasks(tap).values()
    assert {"task-sent", "task-started", "task-succeeded"} <= set(infer)
