"""One ``sentinel://`` setting read the same way by the broker (kombu) and redis-py."""

from __future__ import annotations

import pytest
from kombu import Connection

from pipeline.app.celery_app import create_app
from pipeline.broker.queue import redact_url
from pipeline.broker.sentinel import (
    SentinelUrl,
    is_sentinel_url,
    kombu_url,
    parse_sentinel_url,
    transport_options,
)
from pipeline.errors import ConfigError
from pipeline.settings import load_settings

URL = "sentinel://:s3cret@h1:26379/2;sentinel://h2:26380;sentinel://h3?master=prod"


def test_a_sentinel_url_names_every_sentinel_the_master_db_and_password() -> None:
    assert parse_sentinel_url(URL) == SentinelUrl(
        sentinels=(("h1", 26379), ("h2", 26380), ("h3", 26379)), master="prod", db=2,
        username=None, password="s3cret")


def test_kombu_gets_the_sentinels_without_the_master_parameter() -> None:
    broker = kombu_url(URL)
    assert "master" not in broker and broker.count("sentinel://") == 3
    conn = Connection(broker, transport_options=transport_options(URL))
    assert conn.transport_cls == "sentinel" and len(conn.alt) == 3
    assert conn.transport_options == {"master_name": "prod"}


def test_the_celery_app_uses_the_sentinel_transport() -> None:
    app = create_app(load_settings(redis_url=URL))
    assert app.conf.broker_transport_options["master_name"] == "prod"
    assert app.conf.broker_transport_options["visibility_timeout"] == 3600
    assert "master=" not in app.conf.broker_url


@pytest.mark.parametrize("bad", ["sentinel://h1:26379", "sentinel://h1;redis://h2?master=m",
                                 "sentinel://h1/x?master=m"])
def test_a_malformed_sentinel_url_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_sentinel_url(bad)


def test_plain_urls_are_left_alone() -> None:
    assert not is_sentinel_url("redis://h/0") and not is_sentinel_url(None)
    assert kombu_url("redis://h/0") == "redis://h/0" and transport_options("redis://h/0") == {}


def test_each_sentinel_is_redacted() -> None:
    shown = redact_url("sentinel://:pw@h1:26379;sentinel://:pw@h2:26379?master=m")
    assert "pw" not in shown and shown.count(":***@") == 2
