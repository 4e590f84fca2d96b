"""What the logs say while the database is away: one line when it goes, one when it is back.

A real router and worker (at INFO) reach PostgreSQL through a TCP proxy that refuses every
connection for a few seconds; their log files are read and their lines counted.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from pipeline.client import Client
from pipeline.settings import load_settings
from tests.cluster import ForkedGroup, fault_env, wait_until
from tests.servers import TcpProxy

pytestmark = [pytest.mark.service, pytest.mark.slow]
WAIT_S = 120.0
OUTAGE_S = 4.0


def _count(log_path: Path, needle: str) -> int:
    return log_path.read_text(errors="replace").count(needle)


def test_database_away_is_said_once_and_its_return_once(
    redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    proxy, via_proxy = TcpProxy.in_front_of(pg_url)
    proxy.cut()  # the database is on a port that refuses connections
    env = fault_env(redis_url, via_proxy)
    try:
        with ForkedGroup(env=env, log_dir=tmp_path / "logs") as children, \
                Client(load_settings(redis_url=redis_url, database_url=pg_url)) as client:
            router = children.start("router", ["router", "--loglevel", "INFO"])
            worker = children.start("worker", ["worker", "--device", "cpu", "--loglevel", "INFO"])
            for child in (router, worker):
                wait_until(f"{child.name} to notice", lambda c=child: _count(
                    c.log_path, "database unavailable") > 0, WAIT_S)
            job_id = client.submit([f"question {i}" for i in range(8)])
            time.sleep(OUTAGE_S)  # the outage itself: the router keeps trying all along
            proxy.restore()
            client.wait(job_id, timeout_s=WAIT_S)
            for child in (router, worker):
                wait_until(f"{child.name} to say it is back", lambda c=child: _count(
                    c.log_path, "database available again") > 0, WAIT_S)
    finally:
        proxy.close()
    router_log = router.log_path.read_text(errors="replace")
    for child in (router, worker):
        assert _count(child.log_path, "database unavailable") == 1
        assert _count(child.log_path, "database available again") == 1
        assert "Traceback" not in child.log_path.read_text(errors="replace")
    failed = re.search(r"database available again after [0-9.]+ s \((\d+) failed attempts?\)",
                       router_log)
    assert failed is not None and int(failed.group(1)) >= 2  # it kept trying, quietly
    assert "Sending due task" not in router_log and "ecobatch.route[" not in router_log
    assert re.search(r"routed \d+ batches \(\d+ prompts: cpu \d+\)", router_log)
