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
import sqlalchemy as sa
from openai.types.chat import ChatCompletion

from pipeline.app.children import ChildGroup
from pipeline.app.serve.auth import key_hash
from tests.cluster import QuickStopGroup, cluster_env, run_cli, start_worker, wait_until

pytestmark = pytest.mark.slow
KEY, OTHER_KEY, THIRD_KEY = "sk-test-one", "sk-test-two", "sk-test-three"
WAIT_S = 240.0
RATE_PER_MIN = 6  # batches a key may create a minute (ECOBATCH_SUBMIT_RATE_PER_MIN)


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
    env = cluster_env(redis_url, db_url, ECOBATCH_API_KEYS=f"{KEY},{OTHER_KEY},{THIRD_KEY}",
                      ECOBATCH_BATCH_SIZE="2", ECOBATCH_SUBMIT_RATE_PER_MIN=str(RATE_PER_MIN),
                      ECOBATCH_PLANNER_INTERVAL_S="1")
    port = free_port()
    with QuickStopGroup(env=env, log_dir=tmp_path / "logs") as children:
        children.start("router", ["router"])
        start_worker(children)
        children.start("serve", ["serve", "--port", str(port), "--files-dir",
                                 str(tmp_path / "files"), "--max-file-bytes", "20000",
                                 "--sweep-interval-s", "0.5"])
        url = f"http://127.0.0.1:{port}/v1"
        wait_until("the service", lambda: _up(url), 60, poll_s=0.2)
        yield Served(url, env, children, tmp_path)


def batch_lines(n: int, max_tokens: int = 8) -> list[dict[str, object]]:
    return [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "SmolLM2-135M-Instruct.Q4_1", "max_tokens": max_tokens,
                      "messages": [{"role": "user", "content": f"Say the number {i}."}]}}
            for i in range(n)]


def write_lines(path: Path, lines: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def batch_file(path: Path, n: int, max_tokens: int = 8) -> Path:
    return write_lines(path, batch_lines(n, max_tokens))


def stored_batch(served: Served, batch_id: str, key: str = KEY) -> dict[str, object]:
    """The batch record as the service keeps it on disk, read without asking the service
    (a GET would settle the batch itself)."""
    path = served.tmp / "files" / key_hash(key)[:32] / "batches" / f"{batch_id}.json"
    return dict(json.loads(path.read_text()))


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
    held = client.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions",
                                 completion_window="24h", metadata={"ecobatch_defer": "true"})
    done = poll(client, batch.id, ("completed", "failed"))
    assert done.status == "completed" and done.request_counts is not None
    assert extension(done) == {"deferred": False}
    plan = _planned(client, held.id)
    assert held.created_at <= plan["planned_start_at"] <= plan["planned_end_at"] <= held.expires_at
    assert plan["carbon_saved_g"] == pytest.approx(plan["carbon_now_g"] - plan["carbon_g"])
    assert plan["carbon_saved_g"] >= -1e-9 and plan["devices"]
    assert str(plan["basis"]).startswith("estimated")
    client.batches.cancel(held.id)
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
    assert {b.id for b in client.batches.list(limit=1)} == {batch.id, held.id, second.id}
    client.files.delete(up.id)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(up.id)


def extension(batch: openai.types.Batch) -> dict[str, object]:
    """ecobatch's extension key of a batch object (an extra field to the SDK)."""
    return dict((batch.model_extra or {})["ecobatch"])


def _planned(client: openai.OpenAI, batch_id: str) -> dict[str, float]:
    """The plan of a deferred batch, once the router's planner has made it."""
    wait_until("the deferred batch's plan", lambda: extension(
        client.batches.retrieve(batch_id)).get("planned_start_at") is not None, WAIT_S, poll_s=0.5)
    plan = extension(client.batches.retrieve(batch_id))
    assert plan["deferred"] is True
    return plan  # type: ignore[return-value]


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
    jobs_before = _n_jobs(served)
    unknown = batch_lines(3)
    unknown[1]["body"]["model"] = "gpt-4o"  # type: ignore[index]
    assert _failed_line(client, served.tmp / "model.jsonl", unknown, "gpt-4o") == 2
    twice = batch_lines(3)
    twice[2]["custom_id"] = "r0"
    assert _failed_line(client, served.tmp / "twice.jsonl", twice, "duplicate id 'r0'") == 3
    assert _n_jobs(served) == jobs_before  # refused files submit nothing
    _each_key_is_a_client_of_the_rate_limit(served, up.id)


def _failed_line(client: openai.OpenAI, path: Path, lines: list[dict[str, object]],
                 says: str) -> int | None:
    """Create a batch of ``lines``; it must fail with an error saying ``says``; its line."""
    up = client.files.create(file=write_lines(path, lines).open("rb"), purpose="batch")
    failed = client.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions",
                                   completion_window="24h")
    assert failed.status == "failed" and failed.errors and failed.errors.data
    assert says in str(failed.errors.data[0].message), failed.errors.data[0].message
    return failed.errors.data[0].line


def _n_jobs(served: Served) -> int:
    engine = sa.create_engine(served.env["ECOBATCH_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM job")).scalar_one())
    finally:
        engine.dispose()


def _each_key_is_a_client_of_the_rate_limit(served: Served, bad_file_id: str) -> None:
    """Past RATE_PER_MIN creates a minute a key gets 429 in OpenAI's shape, and nothing is
    created; another key still creates. 2N+1 calls overrun one minute even across a boundary."""
    third = served.client(THIRD_KEY)
    up = third.files.create(file=(served.tmp / "bad.jsonl").open("rb"), purpose="batch")
    created: list[str] = []
    with pytest.raises(openai.RateLimitError) as refused:
        for _ in range(2 * RATE_PER_MIN + 1):
            created.append(third.batches.create(input_file_id=up.id, completion_window="24h",
                                                endpoint="/v1/chat/completions").id)
    error = refused.value.response.json()["error"]
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
    assert {b.id for b in third.batches.list()} == set(created)
    again = served.client(KEY).batches.create(input_file_id=bad_file_id, completion_window="24h",
                                              endpoint="/v1/chat/completions")
    assert again.status == "failed"  # refused for its file, not for the other key's rate


def test_a_batch_whose_window_passes_expires_unread(served: Served) -> None:
    client = served.client()
    up = client.files.create(file=batch_file(served.tmp / "e.jsonl", 40, 64).open("rb"),
                             purpose="batch")
    batch = client.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions",
                                  completion_window="4s")  # type: ignore[arg-type]
    assert batch.expires_at == batch.created_at + 4
    # nobody reads the batch: the service's sweeper expires and finalises it on its own
    wait_until("the sweeper's expiry", lambda: "finalizing_at" in stored_batch(served, batch.id),
               WAIT_S, poll_s=0.5)
    assert "expired_at" in stored_batch(served, batch.id)
    ended = client.batches.retrieve(batch.id)
    assert ended.status == "expired" and ended.expired_at and ended.error_file_id
    counts = ended.request_counts
    assert counts is not None and counts.completed < 40
    errors = _lines(client, ended.error_file_id)
    assert len(errors) == 40 - counts.completed
    assert all(e["error"]["code"] == "batch_expired" for e in errors)  # type: ignore[index]
    shown = run_cli(["status", batch.id], served.tmp, served.env)
    assert "cancelled" in shown.stdout
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        client.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions",
                              completion_window="2d")  # type: ignore[arg-type]
