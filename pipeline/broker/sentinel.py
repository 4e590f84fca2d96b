"""Redis Sentinel URLs: one setting for the Celery broker and ecobatch's own Redis client.

``ECOBATCH_REDIS_URL=sentinel://:PASSWORD@h1:26379/0;sentinel://h2:26379;sentinel://h3:26379?master=mymaster``
names every sentinel (``;`` between them, each ``sentinel://host:port``), the database after the
first host, and the name the sentinels monitor the master under as the ``master`` parameter (on
any one of them). The password, if any, is the master's (and its replicas'); the sentinels are
asked without one.

The broker gets kombu's ``sentinel://`` transport (the URL without ``master``, which becomes the
transport option ``master_name``); the pending list, locks and heartbeats get redis-py's
:class:`redis.sentinel.Sentinel` client of the current master. Both ask the sentinels again
when their master goes away, so a promoted replica takes over without any process restarting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import redis
from redis.sentinel import Sentinel

from pipeline.errors import ConfigError

SCHEME = "sentinel"
DEFAULT_PORT = 26379
SOCKET_TIMEOUT_S = 5.0
"""A command to a master that went away fails after this long, so a client asks again."""


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """The parts of a sentinel URL that clients need."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int
    username: str | None
    password: str | None


def is_sentinel_url(url: str | None) -> bool:
    """True for a ``sentinel://`` URL (one or several, separated by ``;``)."""
    return bool(url) and str(url).startswith(f"{SCHEME}://")


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Split a sentinel URL into its sentinels, master name, database and credentials.

    Raises:
        ConfigError: a part is not ``sentinel://``, or no part names the master.
    """
    parts = [urlsplit(p) for p in url.split(";") if p.strip()]
    if not parts or any(p.scheme != SCHEME for p in parts):
        raise ConfigError("a sentinel URL is sentinel://HOST:PORT[;sentinel://HOST:PORT...]")
    masters = [m for p in parts for m in parse_qs(p.query).get("master", [])]
    if not masters:
        raise ConfigError("a sentinel URL needs ?master=NAME, the name the sentinels monitor")
    first = parts[0]
    db = first.path.strip("/") or "0"
    if not db.isdigit():
        raise ConfigError(f"the database of a sentinel URL is a number, not {db!r}")
    hosts = tuple((p.hostname or "127.0.0.1", p.port or DEFAULT_PORT) for p in parts)
    return SentinelUrl(hosts, masters[0], int(db), first.username or None, first.password)


def kombu_url(url: str) -> str:
    """The broker URL kombu expects: the same sentinels without the ``master`` parameter."""
    if not is_sentinel_url(url):
        return url
    return ";".join(_without_master(p) for p in url.split(";") if p.strip())


def _without_master(part: str) -> str:
    split = urlsplit(part)
    query = [(k, v) for k, vs in parse_qs(split.query).items() if k != "master" for v in vs]
    return urlunsplit(split._replace(query=urlencode(query)))


def transport_options(url: str | None) -> dict[str, Any]:
    """kombu transport options a sentinel broker needs (``master_name``); none otherwise."""
    if url is None or not is_sentinel_url(url):
        return {}
    return {"master_name": parse_sentinel_url(url).master}


def sentinel_client(url: str) -> redis.Redis:
    """A decoding redis-py client of the master the sentinels of ``url`` name now.

    Raises:
        ConfigError: the URL is malformed (see :func:`parse_sentinel_url`).
    """
    s = parse_sentinel_url(url)
    manager = Sentinel(list(s.sentinels), sentinel_kwargs={"socket_timeout": SOCKET_TIMEOUT_S},
                       socket_timeout=SOCKET_TIMEOUT_S, db=s.db,
                       username=s.username, password=s.password)
    return manager.master_for(s.master, decode_responses=True)
