"""The Celery app carries docs/architecture.md's reliability settings and the public task names."""

from __future__ import annotations

import pytest

from pipeline.app.celery_app import INFER_TASK, ROUTE_TASK, SUBMIT_TASK, create_app, reliability_conf
from pipeline.errors import ConfigError
from pipeline.settings import load_settings


def test_reliability_settings_are_on() -> None:
    app = create_app(load_settings(redis_url="redis://127.0.0.1:6379/14"))
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert conf.task_routes[ROUTE_TASK] == {"queue": "router"}
    assert {SUBMIT_TASK, ROUTE_TASK, INFER_TASK} <= set(app.tasks)
    assert conf.worker_send_task_events and conf.task_send_sent_event  # Flower sees the tasks


def test_visibility_timeout_must_outlast_the_longest_batch() -> None:
    settings = load_settings(redis_url="redis://x", visibility_timeout_s=60, task_time_limit_s=120)
    with pytest.raises(ConfigError, match="visibility_timeout_s"):
        reliability_conf(settings)


@pytest.mark.parametrize("field, value", [("batch_size", 0), ("batch_size", -2),
                                          ("max_wait_s", 0), ("strategy", "fastest")])
def test_bad_settings_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        load_settings(**{field: value})
