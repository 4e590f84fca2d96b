"""The embedded default's Redis is a real server on a private socket that never evicts."""

from __future__ import annotations

import pytest
import redis

from pipeline.app.embedded import EmbeddedRedis
from pipeline.broker.queue import connect


@pytest.mark.slow
def test_embedded_redis_serves_on_a_private_socket_and_stops() -> None:
    with EmbeddedRedis() as server:
        assert server.url.startswith("redis+socket://")
        client = connect(server.url)
        client.rpush("k", "v")
        assert client.lrange("k", 0, -1) == ["v"]
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        socket_path = server.socket_path
    try:
        redis.Redis(unix_socket_path=str(socket_path)).ping()
        raise AssertionError("server still answering after stop")
    except (redis.ConnectionError, FileNotFoundError):
        pass
