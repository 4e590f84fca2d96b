"""A batch through ``ecobatch serve`` and the OpenAI SDK against the same file through
``ecobatch run``, both on the embedded default (own Redis, SQLite, router, one CPU worker).

Run: ``python -m tests.benchmarks.bench_serve [--requests N] [--max-tokens N]``.

``run`` is timed from its start to its exit (it starts its children itself); the API from the
upload to the downloaded output file, and, apart, from the service's start.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai
import requests

KEY = "sk-bench"


def write_file(path: Path, n: int, max_tokens: int) -> None:
    with path.open("w") as fh:
        for i in range(n):
            body = {"model": "SmolLM2-135M-Instruct.Q4_1", "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": f"Say the number {i}."}]}
            fh.write(json.dumps({"custom_id": f"r{i}", "method": "POST",
                                 "url": "/v1/chat/completions", "body": body}) + "\n")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOBATCH_")}
    return {**env, "ECOBATCH_API_KEYS": KEY}


def time_run(src: Path, work: Path) -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "pipeline.app.cli.main", "run", str(src), "-o",
                    str(work / "out.jsonl")], cwd=work, env=_env(), check=True,
                   capture_output=True)
    return time.monotonic() - t0


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    while proc.poll() is None:
        try:
            if requests.get(f"{url}/healthz", timeout=1).ok:
                return
        except requests.RequestException:
            time.sleep(0.2)
    raise RuntimeError("ecobatch serve exited")


def _through_api(client: openai.OpenAI, src: Path) -> int:
    up = client.files.create(file=src.open("rb"), purpose="batch")
    batch = client.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    while (batch := client.batches.retrieve(batch.id)).status not in ("completed", "failed"):
        time.sleep(0.5)
    assert batch.output_file_id, batch
    return len(client.files.content(batch.output_file_id).text.splitlines())


def time_serve(src: Path, work: Path, port: int = 8799) -> tuple[float, float, int]:
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.app.cli.main", "serve", "--port",
                             str(port)], cwd=work, env=_env(), stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_up(url, proc)
        t1 = time.monotonic()
        n = _through_api(openai.OpenAI(base_url=f"{url}/v1", api_key=KEY), src)
        t2 = time.monotonic()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    return t2 - t1, t2 - t0, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "batch.jsonl"
        write_file(src, args.requests, args.max_tokens)
        (Path(tmp) / "run").mkdir()
        (Path(tmp) / "serve").mkdir()
        run_s = time_run(src, Path(tmp) / "run")
        api_s, api_total_s, n = time_serve(src, Path(tmp) / "serve")
    print(f"requests {args.requests} x {args.max_tokens} tokens max")
    print(f"ecobatch run:   {run_s:.1f} s  ({args.requests / run_s:.1f} requests/s)")
    print(f"ecobatch serve: {api_s:.1f} s upload to download ({n} answers, "
          f"{n / api_s:.1f} requests/s); {api_total_s:.1f} s with the service's start")


if __name__ == "__main__":
    main()
