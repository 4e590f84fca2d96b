"""Router, worker and CLI children forked from a server that has already imported ecobatch.

A router or worker started as ``python -m pipeline.app.cli.main`` spends about 1.9 s of CPU
importing (SQLAlchemy, Redis, pydantic, Celery, llama-cpp-python) before it does anything; the
suite starts about 250 ecobatch processes (routers, workers and CLI runs).
:class:`ForkedProcess` runs the same command line through the same ``main`` in a child forked
from multiprocessing's fork server, which imported those modules once (:data:`PRELOAD`), so
each child starts at the command itself. What a child runs is unchanged: its own environment
and argument list, ``main``'s exit code, its output in its log file, and a process tree of its
own that tests signal and kill. ``ecobatch run`` still starts its children with
:class:`pipeline.app.children.ChildGroup` (``test_e2e`` runs it).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

PRELOAD = [
    "pipeline.app.cli.main", "pipeline.app.celery_app", "pipeline.app.celerylog",
    "pipeline.metrics.serve", "pipeline.broker.alive", "pipeline.intake.limits",
    "celery.apps.worker", "celery.bin.celery", "workers.service.infer",
    "workers.service.heartbeat", "workers.backends.llama.tokenizer",
]
"""Imported once by the fork server: nothing here starts a thread or opens a connection."""

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(PRELOAD)


def _run_main(args: list[str], env: dict[str, str], streams: tuple[str, str, str],
              cwd: str | None) -> None:
    """In the forked child: the environment, working directory, stdin/stdout/stderr (file
    paths) and argv of the command, then ``ecobatch ARGS`` (its exit code is the child's)."""
    os.environ.clear()
    os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    stdin_path, stdout_path, stderr_path = streams
    write = os.O_WRONLY | os.O_APPEND  # created empty by the parent before the fork
    os.dup2(os.open(stdin_path, os.O_RDONLY), 0)
    os.dup2(os.open(stdout_path, write), 1)
    if stderr_path == stdout_path:
        os.dup2(1, 2)
    else:
        os.dup2(os.open(stderr_path, write), 2)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 (multiprocessing closed the old one)
    sys.argv = ["ecobatch", *args]
    from pipeline.app.cli.main import main

    main(args=args, prog_name="ecobatch")


class ForkedProcess:
    """A forked ``ecobatch ARGS`` child with the part of ``subprocess.Popen``'s interface the
    tests use (``pid``, ``returncode``, ``poll``, ``wait``, ``send_signal``, ``kill``)."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, *,
                 stderr_path: Path | None = None, stdin_path: Path | None = None,
                 cwd: Path | None = None) -> None:
        streams = (str(stdin_path or os.devnull), str(log_path), str(stderr_path or log_path))
        for path in streams[1:]:  # there when this returns, as with Popen: tests read it
            Path(path).write_bytes(b"")
        self._process = _CONTEXT.Process(
            target=_run_main, args=(args, env, streams, None if cwd is None else str(cwd)),
            daemon=False)
        self._process.start()
        assert self._process.pid is not None
        self.pid: int = self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code (negative: killed by that signal), None while it runs."""
        return self._process.exitcode

    def poll(self) -> int | None:
        """The exit code if the child has ended, else None."""
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to end and return its exit code.

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout`` seconds.
        """
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(["ecobatch"], timeout or 0.0)
        return self._process.exitcode

    def send_signal(self, sig: int) -> None:
        """Signal the child (nothing if it has ended)."""
        if self._process.exitcode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the child."""
        self.send_signal(signal.SIGKILL)


def run_forked(args: list[str], cwd: Path, env: dict[str, str], stdin: str | None,
               timeout_s: float) -> subprocess.CompletedProcess[str]:
    """``ecobatch ARGS`` forked, run to completion, its output captured: what
    ``subprocess.run(..., capture_output=True, text=True)`` returns.

    Raises:
        subprocess.TimeoutExpired: it ran past ``timeout_s`` (it is killed first).
    """
    with tempfile.TemporaryDirectory(prefix="ecobatch-cli-") as tmp:
        out, err, inp = (Path(tmp) / name for name in ("stdout", "stderr", "stdin"))
        inp.write_text(stdin or "")
        proc = ForkedProcess(args, env, out, stderr_path=err, stdin_path=inp, cwd=cwd)
        try:
            code = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        return subprocess.CompletedProcess(["ecobatch", *args], code, out.read_text(),
                                           err.read_text())
