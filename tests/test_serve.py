"""``ecobatch serve`` as a real process on a free port, with a real router and worker on the test
Redis and ledger, driven by the official ``openai`` client."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import requests
from openai.types.chat import ChatCompletion

from pipeline.app.children import ChildGroup
from tests.cluster import QuickStopGroup, cluster_env, run_cli, start_worker, wait_until

pytestmark = pytest.mark.slow
KEY, OTHER_KEY = "sk-test-one", "sk-test-two"
WAIT_S = 240.0


@dataclass
class Served:
    url: str
    env: dict[str, str]
    children: ChildGroup
    tmp: Path

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _up(url: str) -> bool:
    try:
        return requests.get(f"{url.removesuffix('/v1')}/healthz", timeout=1).ok
    except requests.RequestException:
        return False


@pytest.fixture
def served(redis_url: str, db_url: str, tmp_path: Path) -> Iterator[Served]:
    env = cluster_env(redis_url, db_url, ECOBATCH_API_KEYS=f"{KEY},{OTHER_KEY}",
                      ECOBATCH_BATCH_SIZE="2")
    port = free_port()
    with QuickStopGroup(env=env, log_dir=tmp_path / "logs") as children:
        children.start("router", ["router"])
        start_worker(children)
        children.start("serve", ["serve", "--port", str(port), "--files-dir",
                                 str(tmp_path / "files"), "--max-file-bytes", "20000"])
        url = f"http://127.0.0.1:{port}/v1"
        wait_until("the service", lambda: _up(url), 60, poll_s=0.2)
        yield Served(url, env, children, tmp_path)


def batch_file(path: Path, n: int, max_tokens: int = 8) -> Path:
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "SmolLM2-135M-Instruct.Q4_1", "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": f"Say the number {i}."}]}}
             for i in range(n)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def poll(client: openai.OpenAI, batch_id: str, ends: tuple[str, ...]) -> openai.types.Batch:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ends:
            return batch
        time.sleep(0.5)
    raise AssertionError(f"batch {batch_id} still {batch.status}")


def _lines(client: openai.OpenAI, file_id: str) -> list[dict[str, object]]:
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


def test_sdk_upload_create_poll_download_list_cancel(served: Served) -> None:
    client = served.client()
    up = client.files.create(file=batch_file(served.tmp / "b.jsonl", 4).open("rb"),
                             purpose="batch")
    assert client.files.retrieve(up.id).bytes == up.bytes
    batch = client.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"team": "green"})
    done = poll(client, batch.id, ("completed", "failed"))
    assert done.status == "completed" and done.request_counts is not None
    assert done.request_counts.completed == 4 and done.output_file_id
    for line in _lines(client, done.output_file_id):
        assert line["error"] is None
        ChatCompletion.model_validate(line["response"]["body"])  # type: ignore[index]
    assert done.error_file_id is None
    shown = run_cli(["status", batch.id], served.tmp, served.env)
    assert "done" in shown.stdout, shown.stderr
    big = client.files.create(file=batch_file(served.tmp / "c.jsonl", 40, 64).open("rb"),
                              purpose="batch")
    second = client.batches.create(input_file_id=big.id, endpoint="/v1/chat/completions",
                                   completion_window="24h")
    wait_until("a first answer", lambda: _completed(client, second.id) > 0, WAIT_S, poll_s=0.3)
    client.batches.cancel(second.id)
    ended = poll(client, second.id, ("cancelled",))
    assert ended.error_file_id and ended.request_counts is not None
    errors = _lines(client, ended.error_file_id)
    assert errors and all("cancelled" in json.dumps(e) for e in errors)
    assert ended.request_counts.completed + len(errors) == 40
    ids = [b.id for b in client.batches.list(limit=1).iter_pages().__next__().data]
    assert ids == [second.id]
    assert {b.id for b in client.batches.list(limit=1)} == {batch.id, second.id}
    client.files.delete(up.id)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(up.id)


def _completed(client: openai.OpenAI, batch_id: str) -> int:
    counts = client.batches.retrieve(batch_id).request_counts
    return counts.completed if counts else 0


def test_bad_input_through_the_api(served: Served) -> None:
    client = served.client()
    bad = served.tmp / "bad.jsonl"
    bad.write_text(batch_file(served.tmp / "ok.jsonl", 2).read_text() + "{not json\n")
    up = client.files.create(file=bad.open("rb"), purpose="batch")
    failed = client.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions",
                                   completion_window="24h")
    assert failed.status == "failed" and failed.errors and failed.errors.data
    assert failed.errors.data[0].line == 3
    with pytest.raises(openai.BadRequestError, match="endpoint"):
        client.batches.create(input_file_id=up.id, endpoint="/v1/embeddings",  # type: ignore[arg-type]
                              completion_window="24h")
    with pytest.raises(openai.APIStatusError, match="20000 bytes") as big:
        client.files.create(file=batch_file(served.tmp / "big.jsonl", 200).open("rb"),
                            purpose="batch")
    assert big.value.status_code == 413
    with pytest.raises(openai.APIStatusError, match="20000 bytes") as huge:  # refused unread
        client.files.create(file=batch_file(served.tmp / "huge.jsonl", 1000).open("rb"),
                            purpose="batch")
    assert huge.value.status_code == 413
    with pytest.raises(openai.AuthenticationError):
        served.client("sk-wrong").batches.list()
    assert requests.get(f"{served.url}/batches", timeout=5).json()["error"]["code"] == \
        "invalid_api_key"
    with pytest.raises(openai.NotFoundError):
        served.client(OTHER_KEY).batches.retrieve(failed.id)
    with pytest.raises(openai.NotFoundError):
        served.client(OTHER_KEY).files.retrieve(up.id)


def test_a_batch_whose_window_passes_expires(served: Served) -> None:
    client = served.client()
    up = client.files.create(file=batch_file(served.tmp / "e.jsonl", 40, 64).open("rb"),
                             purpose="batch")
    batch = client.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions",
                                  completion_window="4s")  # type: ignore[arg-type]
    assert batch.expires_at == batch.created_at + 4
    ended = poll(client, batch.id, ("expired", "completed"))
    assert ended.status == "expired" and ended.expired_at and ended.error_file_id
    counts = ended.request_counts
    assert counts is not None and counts.completed < 40
    errors = _lines(client, ended.error_file_id)
    assert len(errors) == 40 - counts.completed
    shown = run_cli(["status", batch.id], served.tmp, served.env)
    assert "cancelled" in shown.stdout
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        client.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions",
                              completion_window="2d")  # type: ignore[arg-type]
