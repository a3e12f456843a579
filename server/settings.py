"""Settings of the composition root, read from the environment once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

DEV_KEY_FILE = "dev-api-key"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

# The asyncpg pool of the one-statement writes, per API process (Settings.pg_pool_size).
PG_POOL_SIZE = 4


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no)")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if value < 1:
        raise ValueError(f"{name} must be at least 1")
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = (env.get(name) or choices[0]).strip().lower()
    if value not in choices:
        raise ValueError(f"{name}={value!r}: use one of {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class Settings:
    """Where the database and Redis are, how to listen, and what the defaults allow.

    ``embedded`` is true when neither DATABASE_URL nor REDIS_URL is given: the CLI then
    starts PostgreSQL and Redis itself under ``data_dir``.
    """

    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".partnerbill")
    host: str = "127.0.0.1"
    port: int = 8000
    run_worker: bool = True
    allow_anonymous: bool = True
    max_batch: int = 100
    max_body_bytes: int = 10 * 1024 * 1024
    log_level: str = "info"
    log_format: str = "text"  # or "json": one object a line, with the request id
    # Requests refused before they run (README, "Configuration").
    max_tokens: int = 20_000
    max_depth: int = 15
    max_aliases: int = 100
    max_cost: int = 100_000
    max_inflight_per_tenant: int = 32
    max_bulk_rows: int = 1000  # rows one bulk mutation may carry (billing.bulk)
    # Connections per API process: SQLAlchemy's pool (db_pool_size plus as many again in
    # overflow) and the asyncpg pool of the one-statement writes (pg_pool_size). With N API
    # processes and the worker, N * (2 * db_pool_size + pg_pool_size) + worker must stay
    # under the server's max_connections (README, "Connections").
    db_pool_size: int = 10
    # Small on purpose: the one-statement writes keep PostgreSQL busy, and more of them at
    # once than the server has cores only adds context switches and contention. With 16
    # clients on one API process on 2 cores, a pool of 4 against 10 cut PostgreSQL's CPU per
    # createOrder by 15-23% and raised throughput 11-23% (BENCHMARKS.md, "Pool size").
    pg_pool_size: int = PG_POOL_SIZE
    statement_cache: int = 256  # asyncpg's prepared statements per connection; 0: none

    @property
    def embedded(self) -> bool:
        return self.database_url is None and self.redis_url is None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read PARTNERBILL_* , DATABASE_URL and REDIS_URL."""
        env = os.environ if env is None else env
        database_url = env.get("DATABASE_URL") or None
        redis_url = env.get("REDIS_URL") or None
        if (database_url is None) != (redis_url is None):
            raise ValueError(
                "Set both DATABASE_URL and REDIS_URL, or neither (then partnerbill starts "
                "embedded PostgreSQL and Redis)"
            )
        embedded = database_url is None
        max_batch = _int(env, "PARTNERBILL_MAX_BATCH", 100)
        if max_batch < 1:
            raise ValueError("PARTNERBILL_MAX_BATCH must be at least 1")
        return cls(
            database_url=database_url,
            redis_url=redis_url,
            data_dir=Path(env.get("PARTNERBILL_DATA_DIR") or ".partnerbill"),
            host=env.get("PARTNERBILL_HOST") or "127.0.0.1",
            port=_int(env, "PARTNERBILL_PORT", 8000),
            run_worker=_flag(env, "PARTNERBILL_RUN_WORKER", embedded),
            allow_anonymous=_flag(env, "PARTNERBILL_ALLOW_ANONYMOUS", embedded),
            max_batch=max_batch,
            max_body_bytes=_int(env, "PARTNERBILL_MAX_BODY_BYTES", 10 * 1024 * 1024),
            log_level=(env.get("PARTNERBILL_LOG_LEVEL") or "info").lower(),
            log_format=_choice(env, "PARTNERBILL_LOG_FORMAT", ("text", "json")),
            max_tokens=_positive(env, "PARTNERBILL_MAX_TOKENS", 20_000),
            max_depth=_positive(env, "PARTNERBILL_MAX_DEPTH", 15),
            max_aliases=_positive(env, "PARTNERBILL_MAX_ALIASES", 100),
            max_cost=_positive(env, "PARTNERBILL_MAX_COST", 100_000),
            max_inflight_per_tenant=_positive(env, "PARTNERBILL_MAX_INFLIGHT_PER_TENANT", 32),
            max_bulk_rows=_positive(env, "PARTNERBILL_MAX_BULK_ROWS", 1000),
            db_pool_size=_int(env, "PARTNERBILL_DB_POOL_SIZE", 10),
            pg_pool_size=_int(env, "PARTNERBILL_PG_POOL_SIZE", PG_POOL_SIZE),
            statement_cache=_int(env, "PARTNERBILL_STATEMENT_CACHE", 256),
        )

    def with_urls(self, database_url: str, redis_url: str | None) -> Settings:
        """A copy pointing at concrete servers (the embedded ones once started)."""
        return replace(self, database_url=database_url, redis_url=redis_url)


def read_dev_key(data_dir: Path) -> str | None:
    """The development tenant's API key saved by ``partnerbill serve``, if any."""
    try:
        return (Path(data_dir) / DEV_KEY_FILE).read_text().strip() or None
    except OSError:
        return None
