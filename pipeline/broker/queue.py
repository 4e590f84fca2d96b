"""Redis side of the pipeline: the pending list of prompt references.

Redis only carries small references; the prompt text stays in SQL. A reference is compact JSON:
``{"id": prompt_id, "job": job_id, "t": enqueued_unix_s, "pt": prompt_tokens, "mt": max_tokens}``,
with ``"tp": traceparent`` added only while tracing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from urllib.parse import parse_qs, urlsplit, urlunsplit

import redis
from redis.exceptions import RedisError

from pipeline.broker.sentinel import is_sentinel_url, sentinel_client
from pipeline.errors import ServiceError
from pipeline.tracing import current_traceparent

PENDING_KEY = "ecobatch:pending"
ROUTER_LOCK_KEY = "ecobatch:router-lock"
PIPELINE_CHUNK = 10_000


@dataclass(frozen=True, slots=True)
class PromptRef:
    """A pending prompt as the router sees it."""

    prompt_id: str
    job_id: str
    enqueued_unix_s: float
    prompt_tokens: int
    max_tokens: int
    trace: str | None = None
    """W3C ``traceparent`` of the span that enqueued it, only while tracing (pipeline.tracing)."""

    def encode(self) -> str:
        """Compact JSON for the Redis list.

        Built by hand rather than through ``json.dumps`` of a dict: intake encodes one ref per
        prompt, and this is measurably faster at 100k prompts while giving identical JSON.
        """
        tp = f',"tp":{json.dumps(self.trace)}' if self.trace else ""
        return (f'{{"id":{json.dumps(self.prompt_id)},"job":{json.dumps(self.job_id)},'
                f'"t":{self.enqueued_unix_s!r},"pt":{self.prompt_tokens},"mt":{self.max_tokens}'
                f'{tp}}}')

    @classmethod
    def decode(cls, raw: str | bytes) -> PromptRef:
        """Inverse of :meth:`encode`."""
        d = json.loads(raw)
        return cls(d["id"], d["job"], float(d["t"]), int(d["pt"]), int(d["mt"]), d.get("tp"))


def redis_py_url(url: str) -> str:
    """Translate kombu's Unix-socket form (``redis+socket://PATH``) to redis-py's (``unix://PATH``)."""
    if url.startswith("redis+socket://"):
        return "unix://" + url.removeprefix("redis+socket://")
    return url


def redact_url(url: str) -> str:
    """``url`` with its password shown as ``***``: the only form messages and logs may carry.

    Each ``;``-separated part of a list of URLs (several sentinels) is redacted on its own.
    """
    if ";" in url:
        return ";".join(redact_url(part) for part in url.split(";"))
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def secure_url(url: str) -> str:
    """Make a ``rediss://`` URL verify the server's certificate unless it says otherwise.

    redis-py checks the certificate by default but kombu (the broker side) connects over TLS
    without any check when the URL has no ``ssl_cert_reqs``; one rule for both: required. Give
    ``ssl_ca_certs=PATH`` for a private CA.
    """
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return url
    query = parse_qs(parts.query)
    if "ssl_cert_reqs" in query:
        return url
    sep = "&" if parts.query else ""
    return urlunsplit(parts._replace(query=f"{parts.query}{sep}ssl_cert_reqs=required"))


def connect(url: str) -> redis.Redis:
    """Open a Redis client (any broker URL form, ``sentinel://`` included: then a client of
    the current master, see :mod:`pipeline.broker.sentinel`) and check that it answers.

    Raises:
        ServiceError: the server cannot be reached, refuses the password or fails the TLS
            certificate check; the message never shows the password.
    """
    if is_sentinel_url(url):
        client = sentinel_client(url)
    else:
        client = redis.Redis.from_url(redis_py_url(secure_url(url)), decode_responses=True)
    try:
        client.ping()
    except RedisError as e:
        raise ServiceError(f"cannot reach Redis at {redact_url(url)}: {e}") from e
    return client


def push_refs(client: redis.Redis, refs: Iterable[PromptRef], key: str = PENDING_KEY) -> int:
    """Append references to the pending list in pipelined chunks; return how many were pushed.

    While a span is in progress, each reference carries its trace (see :mod:`pipeline.tracing`).
    """
    if tp := current_traceparent():
        refs = (r if r.trace else replace(r, trace=tp) for r in refs)
    pushed = 0
    chunk: list[str] = []
    try:
        for ref in refs:
            chunk.append(ref.encode())
            if len(chunk) >= PIPELINE_CHUNK:
                pushed += _push_chunk(client, key, chunk)
                chunk = []
        if chunk:
            pushed += _push_chunk(client, key, chunk)
    except RedisError as e:
        raise ServiceError(f"cannot enqueue prompts in Redis: {e}") from e
    return pushed


def _push_chunk(client: redis.Redis, key: str, chunk: Sequence[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for i in range(0, len(chunk), 1000):
        pipe.rpush(key, *chunk[i : i + 1000])
    pipe.execute()
    return len(chunk)


def peek_refs(client: redis.Redis, n: int, key: str = PENDING_KEY) -> list[PromptRef]:
    """Read (without removing) the first ``n`` pending references."""
    return [PromptRef.decode(r) for r in client.lrange(key, 0, n - 1)]


def pop_refs(client: redis.Redis, n: int, key: str = PENDING_KEY) -> list[PromptRef]:
    """Remove and return the first ``n`` pending references atomically."""
    pipe = client.pipeline(transaction=True)
    pipe.lrange(key, 0, n - 1)
    pipe.ltrim(key, n, -1)
    raw, _ = pipe.execute()
    return [PromptRef.decode(r) for r in raw]


def pending_count(client: redis.Redis, key: str = PENDING_KEY) -> int:
    """Number of references waiting for the router."""
    return int(client.llen(key))
