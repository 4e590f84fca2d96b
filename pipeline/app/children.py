"""Child processes of ``ecobatch run``: the router and one worker per device."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from pipeline.errors import ServiceError

STOP_GRACE_S = 15.0


@dataclass
class Child:
    """One ``ecobatch`` sub-command running as a child process, logging to a file."""

    name: str
    proc: subprocess.Popen[bytes]
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
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.app.cli.main", *args], env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

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
        """Ask every child to shut down warmly (SIGTERM), then kill stragglers."""
        for c in self.children:
            if c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
        for c in self.children:
            try:
                c.proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait()
        self.children.clear()

    def __enter__(self) -> ChildGroup:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
