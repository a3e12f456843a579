"""Logs an operator can read (issue 11, 8): request ids, JSON lines, a quiet cron tick,
one shutdown line, the limits read from the environment."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from server.app import InProcessWorker
from server.logs import REQUEST_ID, JsonFormatter, QuietCronTick, RequestIdFilter
from server.settings import Settings
from tests.server.test_app import bearer, serve


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(RequestIdFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return Settings(
        database_url=database_url, redis_url=redis_url, run_worker=False, allow_anonymous=False
    )


async def test_the_request_id_is_taken_or_made_returned_and_logged(
    settings: Settings, tenant: Any
) -> None:
    capture = Capture()
    logger = logging.getLogger("partnerbill.graphql")
    logger.addHandler(capture)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        async with serve(settings, schema=None) as client:
            given = await client.post(
                "/graphql",
                json={"query": "{ nope }"},
                headers={**bearer(tenant.api_key), "X-Request-Id": "req-42.a"},
            )
            made = await client.post(
                "/graphql", json={"query": "{ nope }"}, headers=bearer(tenant.api_key)
            )
            bad = await client.get("/healthz", headers={"X-Request-Id": "x" * 500})
    finally:
        logger.removeHandler(capture)
        logger.setLevel(old_level)
    assert given.headers["x-request-id"] == "req-42.a"
    assert len(made.headers["x-request-id"]) == 16
    assert made.headers["x-request-id"] != given.headers["x-request-id"]
    assert len(bad.headers["x-request-id"]) == 16
    ids = [r.request_id for r in capture.records if "nope" in r.getMessage()]  # type: ignore[attr-defined]
    assert ids == ["req-42.a", made.headers["x-request-id"]]
    assert all(r.levelno < logging.ERROR for r in capture.records)


def test_json_lines_carry_the_request_id() -> None:
    record = logging.LogRecord("partnerbill.x", logging.INFO, __file__, 1, "hello %s", ("w",), None)
    token = REQUEST_ID.set("abc")
    try:
        RequestIdFilter().filter(record)
    finally:
        REQUEST_ID.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "hello w"
    assert line["level"] == "INFO"
    assert line["logger"] == "partnerbill.x"
    assert line["request_id"] == "abc"
    assert line["time"].endswith("Z")


def test_the_cron_tick_is_not_logged_at_info() -> None:
    f = QuietCronTick()

    def rec(level: int, msg: str, *args: Any) -> logging.LogRecord:
        return logging.LogRecord("arq.worker", level, __file__, 1, msg, args, None)

    assert not f.filter(rec(logging.INFO, "%6.2fs → %s()%s", 0.1, "cron:refresh_due_tenants", ""))
    assert not f.filter(rec(logging.INFO, "%6.2fs ← %s ● %s", 0.1, "cron:refresh_due_tenants", 1))
    assert f.filter(rec(logging.INFO, "%6.2fs → %s()%s", 0.1, "abc:run_bill_run", ""))
    assert f.filter(rec(logging.ERROR, "%6.2fs ! %s failed", 0.1, "cron:refresh_due_tenants"))


async def test_the_in_process_worker_logs_its_shutdown_once(
    database_url: str, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    worker = InProcessWorker(database_url, redis_url)
    with caplog.at_level(logging.INFO, logger="arq"):
        worker.start()
        await worker.stop()
    lines = [r.getMessage() for r in caplog.records if "shutdown on" in r.getMessage()]
    assert len(lines) == 1, lines


def test_limits_and_log_format_come_from_the_environment() -> None:
    s = Settings.from_env(
        {
            "PARTNERBILL_LOG_FORMAT": "json",
            "PARTNERBILL_MAX_DEPTH": "7",
            "PARTNERBILL_MAX_ALIASES": "8",
            "PARTNERBILL_MAX_TOKENS": "900",
            "PARTNERBILL_MAX_COST": "1000",
            "PARTNERBILL_MAX_INFLIGHT_PER_TENANT": "4",
        }
    )
    assert (s.log_format, s.max_depth, s.max_aliases, s.max_tokens, s.max_cost) == (
        "json", 7, 8, 900, 1000,
    )  # fmt: skip
    assert s.max_inflight_per_tenant == 4
    with pytest.raises(ValueError, match="PARTNERBILL_LOG_FORMAT"):
        Settings.from_env({"PARTNERBILL_LOG_FORMAT": "xml"})
    with pytest.raises(ValueError, match="PARTNERBILL_MAX_DEPTH"):
        Settings.from_env({"PARTNERBILL_MAX_DEPTH": "0"})
