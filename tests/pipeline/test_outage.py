"""An outage is said once when it starts and once when it clears, with a growing backoff."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.exc import OperationalError

from pipeline.errors import ConfigError, ServiceError
from pipeline.outage import MAX_DELAY_S, Outages, failure_kind


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def _refused() -> ServiceError:
    try:
        raise OperationalError("connect", {}, Exception("connection refused"))
    except OperationalError as e:
        try:
            raise ServiceError("cannot open database: connection refused") from e
        except ServiceError as wrapped:
            return wrapped


def test_one_line_per_outage_and_one_when_it_clears(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    outages = Outages("router", clock=clock)
    delays = []
    with caplog.at_level(logging.DEBUG, logger="pipeline.outage"):
        for _ in range(12):
            assert outages.due()
            outages.failed(_refused())
            delays.append(outages.delay_s("database"))
            assert not outages.due()
            clock.now_s += outages.delay_s("database")
        outages.succeeded()
        outages.succeeded()  # nothing open any more: silent
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert warnings[0].startswith("router: database unavailable: cannot open database")
    assert "database available again after" in warnings[1] and "(12 failed attempts)" in warnings[1]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0] and delays[-1] == MAX_DELAY_S


def test_kinds_are_told_apart_by_their_cause() -> None:
    assert failure_kind(_refused()) == "database"
    assert failure_kind(ConfigError("unknown grid zone 'SG'")) == "ConfigError"
