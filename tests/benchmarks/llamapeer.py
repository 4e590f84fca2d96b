"""Run llama.cpp's own tools as the peers of ecobatch: ``llama-server`` and ``llama-batched-bench``.

Both are the binaries :mod:`tests.benchmarks.llamabin` builds. The server is started on a free
port, asked for every prompt at once (one HTTP request per prompt on its own thread, so its
slots fill and refill as continuous batching does) and stopped; the batched bench is run once
and its JSONL rows parsed.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

HEALTH_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Completion:
    """One answer of the server, with its own token count."""

    text: str
    completion_tokens: int  # the server's tokens_predicted: counts an end-of-generation token
    stop_type: str  # "eos", "limit" or "word"


@dataclass(frozen=True)
class ServerRun:
    """All answers of one concurrent round, and its wall time from first send to last answer."""

    completions: list[Completion]
    wall_s: float

    @property
    def completion_tokens(self) -> int:
        """Completion tokens the server reported, summed over the answers."""
        return sum(c.completion_tokens for c in self.completions)


def free_port() -> int:
    """A TCP port nobody listens on now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def llama_server(binary: Path, model: Path, slots: int, ctx_per_seq: int,
                 threads: int) -> Iterator[str]:
    """A running ``llama-server`` with ``slots`` slots of ``ctx_per_seq`` tokens; yields its URL.

    Flash attention on, no web UI, the server's own defaults for everything else (continuous
    batching, prompt cache, batch sizes).
    """
    port = free_port()
    cmd = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
           "-np", str(slots), "-c", str(slots * ctx_per_seq), "-fa", "on", "-t", str(threads),
           "--no-webui"]
    with tempfile.TemporaryFile() as log, subprocess.Popen(cmd, stdout=log,
                                                           stderr=subprocess.STDOUT) as proc:
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, proc, log)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Any) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"llama-server exited {proc.returncode}:\n{log.read().decode()[-3000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"llama-server at {url} not healthy after {HEALTH_TIMEOUT_S:.0f} s")


def complete_all(url: str, prompts: list[list[int]], max_tokens: list[int]) -> ServerRun:
    """Send every prompt (token ids) at once to ``/completion``, greedy; wait for all answers."""
    def one(i: int) -> Completion:
        body: dict[str, Any] = {"prompt": prompts[i], "n_predict": max_tokens[i], "temperature": 0.0}
        reply = requests.post(f"{url}/completion", json=body, timeout=3600)
        reply.raise_for_status()
        out = reply.json()
        return Completion(out["content"], int(out["tokens_predicted"]), str(out["stop_type"]))

    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        t0 = time.perf_counter()
        completions = list(pool.map(one, range(len(prompts))))
        wall_s = time.perf_counter() - t0
    return ServerRun(completions, wall_s)


def batched_bench(binary: Path, model: Path, n_prompt: int, n_gen: int, n_parallel: list[int],
                  threads: int) -> dict[int, dict[str, float]]:
    """``llama-batched-bench`` rows by number of sequences: ``speed_tg`` is decode tokens/s.

    Each sequence has its own prompt of ``n_prompt`` tokens (not shared) and decodes ``n_gen``
    tokens in lockstep with the others; flash attention on.
    """
    n_ctx = max(n_parallel) * (n_prompt + n_gen)
    cmd = [str(binary), "-m", str(model), "-c", str(n_ctx), "-npp", str(n_prompt),
           "-ntg", str(n_gen), "-npl", ",".join(map(str, n_parallel)), "-fa", "on",
           "-t", str(threads), "--output-format", "jsonl"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in (done.stdout + done.stderr).splitlines()
            if line.startswith("{") and "speed_tg" in line]
    return {int(r["pl"]): r for r in rows}
