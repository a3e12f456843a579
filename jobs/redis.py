"""Redis connection settings for arq, from a URL (redis://, rediss:// or unix://)."""

from __future__ import annotations

from urllib.parse import urlparse

from arq.connections import RedisSettings


def redis_settings_from_url(url: str) -> RedisSettings:
    """arq settings for ``url``; ``unix:///path/redis.sock`` selects a unix socket."""
    parsed = urlparse(url)
    if parsed.scheme == "unix":
        return RedisSettings(unix_socket_path=parsed.path, conn_timeout=5)
    return RedisSettings.from_dsn(url)
