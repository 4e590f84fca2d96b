"""JSON log lines and the job, batch and device fields they carry."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from pipeline.app.celerylog import task_log_fields
from pipeline.logfields import (
    FieldsFilter,
    JsonFormatter,
    add_log_fields,
    current_log_fields,
    job_ids_field,
    log_fields,
    pop_log_fields,
    push_log_fields,
    use_json,
)


def _line(record: logging.LogRecord, static: dict[str, str] | None = None) -> dict[str, object]:
    FieldsFilter(static).filter(record)
    out: dict[str, object] = json.loads(JsonFormatter().format(record))
    return out


def _record(msg: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("ecobatch.test", logging.WARNING, __file__, 1, msg, args or ("x",),
                               None)
    record.__dict__.update(extra)
    return record


def test_a_line_is_one_json_object_with_the_fields_in_scope() -> None:
    with log_fields(job_id="j1", batch_id="b1"):
        line = _line(_record(), {"device": "gpu0"})
    assert line["message"] == "hello x" and line["level"] == "WARNING"
    assert (line["job_id"], line["batch_id"], line["device"]) == ("j1", "b1", "gpu0")
    assert "job_id" not in _line(_record())  # out of scope: not there at all


def test_extra_fields_of_one_call_win_over_the_scope() -> None:
    with log_fields(job_id="j1"):
        assert _line(_record(job_id="j2"))["job_id"] == "j2"


def test_a_pushed_scope_is_undone_with_whatever_was_added_inside() -> None:
    token = push_log_fields(batch_id="b1")
    add_log_fields(job_id="j1", device=None, other="ignored")
    assert current_log_fields() == {"batch_id": "b1", "job_id": "j1"}
    pop_log_fields(token)
    assert current_log_fields() == {}


def test_another_thread_does_not_see_the_fields() -> None:
    seen: list[dict[str, str]] = []
    with log_fields(batch_id="b1"):
        t = threading.Thread(target=lambda: seen.append(current_log_fields()))
        t.start()
        t.join()
    assert seen == [{}]


def test_a_traceback_stays_on_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = _record(exc_info=sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exc"]


def test_use_json_is_idempotent() -> None:
    handler = logging.StreamHandler()
    use_json(handler, {"device": "cpu"})
    use_json(handler, {"device": "cpu"})
    assert len(handler.filters) == 1 and isinstance(handler.formatter, JsonFormatter)


@pytest.mark.parametrize(("name", "args", "want"), [
    ("ecobatch.infer_batch", ["b1"], {"batch_id": "b1"}),
    ("ecobatch.submit", [["p"]], {"job_id": "abcd"}),
    ("ecobatch.route", [], {}),
])
def test_each_task_names_what_it_handles(name: str, args: list[object],
                                         want: dict[str, str]) -> None:
    assert task_log_fields(name, "ab-cd", args) == want


def test_several_jobs_in_one_field() -> None:
    assert job_ids_field(["b", "a", "b"]) == "a,b"
