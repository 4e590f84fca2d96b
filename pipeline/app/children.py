"""Child processes of ``ecobatch run``: the router and one worker per device."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol

import psutil

from pipeline.errors import ServiceError

STOP_GRACE_S = 15.0


class ChildProcess(Protocol):
    """What a group needs of a started child: ``subprocess.Popen``'s process interface."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


@dataclass
class Child:
    """One ``ecobatch`` sub-command running as a child process, logging to a file."""

    name: str
    proc: ChildProcess
    log_path: Path

    def log_tail(self, n_chars: int = 2000) -> str:
        """The end of the child's log, for error messages."""
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""


@dataclass
class ChildGroup:
    """Starts ``python -m pipeline.app.cli.main ARGS`` children with a shared environment; stops them all."""

    env: dict[str, str]
    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, args: list[str]) -> Child:
        """Start one child whose output goes to ``<log_dir>/<name>.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        child = Child(name, self.launch(args, {**os.environ, **self.env}, log_path), log_path)
        self.children.append(child)
        return child

    def launch(self, args: list[str], env: dict[str, str], log_path: Path) -> ChildProcess:
        """Run ``python -m pipeline.app.cli.main ARGS`` with ``env``, output to ``log_path``."""
        with log_path.open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "pipeline.app.cli.main", *args], env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )

    def check_alive(self) -> None:
        """Raise if any child has exited, with the end of its log.

        Raises:
            ServiceError: a child died.
        """
        for c in self.children:
            if c.proc.poll() is not None:
                raise ServiceError(
                    f"{c.name} exited with code {c.proc.returncode}; log {c.log_path}:\n"
                    f"{c.log_tail()}"
                )

    def stop(self) -> None:
        """Ask every child to shut down warmly (SIGTERM), then kill stragglers' whole trees.

        A straggler's own children go with it: the router's embedded beat is a process of its
        own, which outlived a router killed alone (it went on triggering routing passes).
        """
        for c in self.children:
            if c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
        for c in self.children:
            try:
                c.proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                kill_trees([c])
        self.children.clear()

    def kill(self) -> None:
        """Crash stop: SIGKILL every process of every child's tree at once, and reap them."""
        kill_trees(self.children)
        self.children.clear()

    def __enter__(self) -> ChildGroup:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def kill_trees(children: list[Child]) -> None:
    """SIGKILL each child and all its descendants at once, then reap them."""
    procs: list[psutil.Process] = []
    for c in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            main = psutil.Process(c.proc.pid)
            procs += [main, *main.children(recursive=True)]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=30)
    for c in children:
        c.proc.wait()
