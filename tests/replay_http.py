"""A real HTTP server on loopback replaying recorded answers and recording every request, for
tests of the live data clients (no mock of the HTTP layer)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

# (status, JSON body, delay before answering in s[, extra response headers])
Answer = tuple[Any, ...]


@dataclass(frozen=True)
class Request:
    """One request the server received."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    at_s: float  # time.monotonic() on arrival


@dataclass
class Replay:
    """Routes path -> list of answers; the last answer of a route repeats."""

    routes: dict[str, list[Answer]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set(self, path: str, *answers: Answer) -> None:
        """Answer ``path`` with ``answers`` in turn."""
        with self.lock:
            self.routes[path] = list(answers)

    def next(self, path: str) -> Answer:
        """The answer for the next request of ``path``."""
        with self.lock:
            answers = self.routes.get(path, [(404, {"error": "no route"}, 0.0)])
            return answers.pop(0) if len(answers) > 1 else answers[0]

    def count(self, path: str) -> int:
        """Requests of ``path`` received so far."""
        with self.lock:
            return sum(r.path == path for r in self.requests)


@contextmanager
def replay_server() -> Iterator[tuple[str, Replay]]:
    """``(base URL, Replay)`` of a threading HTTP server on 127.0.0.1, stopped at the end."""
    replay = Replay()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            with replay.lock:
                replay.requests.append(Request(url.path, parse_qs(url.query), {
                    k.lower(): v for k, v in self.headers.items()}, time.monotonic()))
            status, body, delay_s, *extra = replay.next(url.path)
            time.sleep(delay_s)
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in (extra[0] if extra else {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", replay
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
