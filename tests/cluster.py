"""Helpers for tests that run real router and worker processes (shared by e2e and fault tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from pipeline.app.children import Child, ChildGroup, ChildProcess, kill_trees
from pipeline.client import Client
from pipeline.ledger.models import Batch, BatchStatus, Prompt, Result
from pipeline.settings import load_settings
from tests.forked import ForkedProcess, run_forked

REPO_ROOT = Path(__file__).resolve().parent.parent
FAULT_BACKEND = "tests.faultbackend:make_backend"
TEST_LLAMA_THREADS = 1
"""llama.cpp threads of every model a test runs. ``make test`` runs two test processes on two
cores; llama.cpp's threads spin while they wait for each other, so two models of two threads
each on two busy cores take about twice as long as two of one thread each (measured: two
``ecobatch run`` of the 20 fixture prompts side by side, 25.5 s with two threads, 14.1 s with one).
"""


def cluster_env(redis_url: str, db_url: str, **extra: str) -> dict[str, str]:
    """Environment of router and worker children: the test services, quick partial batches,
    quick retries of a failed batch (0.2, 0.4, 0.8 s instead of 2, 4, 8 s) and one llama.cpp
    thread (see :data:`TEST_LLAMA_THREADS`).

    ``PYTHONPATH`` holds the repository root so that a child can import a test backend.
    """
    return {"ECOBATCH_REDIS_URL": redis_url, "ECOBATCH_DATABASE_URL": db_url,
            "ECOBATCH_MAX_WAIT_S": "0.2", "ECOBATCH_RETRY_BACKOFF_S": "0.2",
            "ECOBATCH_N_THREADS": str(TEST_LLAMA_THREADS), "PYTHONPATH": str(REPO_ROOT), **extra}


def fault_env(redis_url: str, db_url: str, **extra: str) -> dict[str, str]:
    """:func:`cluster_env` with the fault-injecting echo backend and short time limits."""
    defaults = {"ECOBATCH_BACKEND": FAULT_BACKEND, "ECOBATCH_TASK_TIME_LIMIT_S": "20",
                "ECOBATCH_VISIBILITY_TIMEOUT_S": "30", "ECOBATCH_MAX_ATTEMPTS": "3"}
    return cluster_env(redis_url, db_url, **{**defaults, **extra})


class ForkedGroup(ChildGroup):
    """A :class:`ChildGroup` whose children are forked from a server that has imported
    ecobatch already (:mod:`tests.forked`): the same command, without 1.9 s of imports each."""

    def launch(self, args: list[str], env: dict[str, str], log_path: Path) -> ChildProcess:
        """Fork ``ecobatch ARGS`` from the fork server."""
        return ForkedProcess(args, env, log_path)


class QuickStopGroup(ForkedGroup):
    """A :class:`ChildGroup` whose stop at the end of a test is a crash stop: SIGKILL to every
    process of every child's tree at once.

    A warm Celery shutdown costs about 2 s per cluster (billiard's pool join polls once a
    second), about a minute over the suite. No test asserts anything on the stop at its end;
    the tests that prove warm shutdown (``test_warm_shutdown_*``, the reconcile test) signal
    their children themselves, and ``ecobatch run``'s own warm stop is run by ``test_e2e``.
    """

    def stop(self) -> None:
        """Kill every child's tree and reap it, so nothing outlives the test."""
        self.kill()


def start_worker(children: ChildGroup, name: str = "worker", device: str = "cpu") -> Child:
    """Start ``ecobatch worker --device DEVICE`` as a child."""
    return children.start(name, ["worker", "--device", device])


@dataclass
class Cluster:
    """Router and worker children on the test services, with a Client of the same ledger."""

    children: ChildGroup
    client: Client
    router: Child
    workers: list[Child]


@contextmanager
def running_cluster(env: dict[str, str], log_dir: Path, *, workers: int = 1,
                    device: str = "cpu", client_db_url: str | None = None) -> Iterator[Cluster]:
    """Start a router and ``workers`` workers of ``device``; stop them all (warmly) at the end.

    ``client_db_url`` lets the test read the ledger directly while the children reach it
    another way (through a proxy the test cuts).
    """
    settings = load_settings(redis_url=env["ECOBATCH_REDIS_URL"],
                             database_url=client_db_url or env["ECOBATCH_DATABASE_URL"])
    with QuickStopGroup(env=env, log_dir=log_dir) as children, Client(settings) as client:
        router = children.start("router", ["router"])
        started = [start_worker(children, f"worker{i + 1}", device) for i in range(workers)]
        yield Cluster(children, client, router, started)


def clean_env() -> dict[str, str]:
    """The environment without any ECOBATCH_ setting (the embedded default), but for one
    llama.cpp thread (:data:`TEST_LLAMA_THREADS`)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("ECOBATCH_")},
            "ECOBATCH_N_THREADS": str(TEST_LLAMA_THREADS)}


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None,
            stdin: bytes | None = None, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``ecobatch ARGS`` to completion in ``cwd`` and capture its output (forked from the
    fork server, :func:`tests.forked.run_forked`)."""
    return run_forked(args, cwd, env or clean_env(),
                      stdin.decode() if stdin is not None else None, timeout_s)


def run_clis(arg_lists: Sequence[list[str]], cwd: Path, env: dict[str, str] | None = None,
             timeout_s: float = 120) -> list[subprocess.CompletedProcess[str]]:
    """:func:`run_cli` for each argument list, two children at a time, results in order.

    Each child spends about a second importing on one core, so on two cores a pair takes the
    wall time of one.
    """
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda args: run_cli(args, cwd, env, timeout_s=timeout_s), arg_lists))


def wait_until(what: str, check: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> None:
    """Poll ``check`` until it is true.

    Raises:
        AssertionError: still false after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def running_batch(engine: Engine) -> Batch | None:
    """Some batch in the ``running`` state, or None."""
    with Session(engine) as s:
        return s.execute(select(Batch).where(Batch.status == BatchStatus.RUNNING)).scalars().first()


def wait_for_running_batch(engine: Engine, timeout_s: float) -> Batch:
    """The first batch seen running."""
    found: list[Batch] = []

    def seen() -> bool:
        batch = running_batch(engine)
        if batch is not None:
            found.append(batch)
        return bool(found)

    wait_until("a batch to start running", seen, timeout_s)
    return found[0]


def kill_pool_children(worker: Child, sig: int = signal.SIGKILL) -> int:
    """Signal the prefork pool processes of a worker child (the ones running batches)."""
    victims = psutil.Process(worker.proc.pid).children()
    for child in victims:
        child.send_signal(sig)
    return len(victims)


def kill_tree(worker: Child) -> None:
    """SIGKILL a worker's main process first, then whatever pool processes it leaves behind."""
    pool = psutil.Process(worker.proc.pid).children(recursive=True)
    worker.proc.send_signal(signal.SIGKILL)
    worker.proc.wait()
    for p in pool:
        try:
            p.wait(timeout=30)  # an orphaned pool process may finish its batch first
        except psutil.TimeoutExpired:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def kill_all(worker: Child) -> None:
    """SIGKILL a worker's main process and its pool processes at once (a machine crash)."""
    kill_trees([worker])


def ledger_counts(engine: Engine, job_id: str | None = None) -> dict[str, int]:
    """Result rows, distinct prompts with a result, and prompts, for one job or all."""
    with Session(engine) as s:
        res = select(func.count(), func.count(func.distinct(Result.prompt_id))).select_from(Result)
        prompts = select(func.count()).select_from(Prompt)
        if job_id is not None:
            res = res.where(Result.job_id == job_id)
            prompts = prompts.where(Prompt.job_id == job_id)
        n_rows, n_distinct = s.execute(res).one()
        return {"rows": n_rows, "distinct": n_distinct,
                "prompts": s.execute(prompts).scalar_one()}


def energy_counted_once(engine: Engine) -> None:
    """Assert that every done batch's energy equals the sum over its result rows."""
    with Session(engine) as s:
        batches = s.execute(select(Batch).where(Batch.status == BatchStatus.DONE)).scalars().all()
        sums: dict[str, float] = dict(s.execute(select(Result.batch_id, func.sum(Result.energy_j))
                              .group_by(Result.batch_id)).all())
    for b in batches:
        got = sums.get(b.id, 0.0)
        assert b.energy_j is not None
        assert abs(got - b.energy_j) <= 1e-6 * max(1.0, b.energy_j), (b.id, got, b.energy_j)
