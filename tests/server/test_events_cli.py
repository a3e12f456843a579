"""``partnerbill events tail`` against the real app over HTTP, and ``partnerbill webhooks
verify`` on a signature made the way the worker makes it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from billing.events import sign
from server.cli import main
from server.events_cli import tail
from server.settings import Settings
from tests.server.test_subscriptions import gql, new_account, serve


@pytest.fixture(scope="module")
async def base(database_url: str, redis_url: str) -> AsyncIterator[str]:
    settings = Settings(
        database_url=database_url, redis_url=redis_url, run_worker=False, allow_anonymous=False
    )
    async with serve(settings) as addr:
        yield addr


async def _tail(base: str, key: str, want: int, **kw: Any) -> list[str]:
    lines: list[str] = []
    await asyncio.wait_for(
        tail(
            f"http://{base}/graphql", key, out=lines.append, poll=0.05,
            stop=lambda: len(lines) >= want, **kw,
        ),
        30,
    )  # fmt: skip
    return lines


async def test_tail_prints_the_feed_and_follows_it(base: str, tenant: Any) -> None:
    await new_account(base, tenant.api_key, "TAIL-1")
    await new_account(base, tenant.api_key, "TAIL-2")
    common = {"types": ["ACCOUNT_CREATED"], "accounts": None, "after": None}
    lines = await _tail(base, tenant.api_key, 2, from_start=True, as_json=False, **common)
    assert [line.split()[1:3] for line in lines] == [
        ["ACCOUNT_CREATED", "TAIL-1"], ["ACCOUNT_CREATED", "TAIL-2"]
    ]  # fmt: skip

    first = await gql(base, tenant.api_key, "{ events(first: 1) { edges { cursor } } }")
    after = first["events"]["edges"][0]["cursor"]
    follow = asyncio.create_task(
        _tail(base, tenant.api_key, 2, from_start=False, as_json=True,
              types=["ACCOUNT_CREATED"], accounts=None, after=after)
    )  # fmt: skip
    await new_account(base, tenant.api_key, "TAIL-3")  # committed while the tail follows
    events = [json.loads(line) for line in await follow]
    assert [e["accountNumber"] for e in events] == ["TAIL-2", "TAIL-3"]


def test_webhooks_verify(tmp_path: Path, capsys: Any) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(b'{"id":"7","type":"INVOICE_POSTED"}')
    header = sign("whsec_abc", body.read_bytes())
    args = ["webhooks", "verify", "--secret", "whsec_abc", "--header", header]
    assert main([*args, "--body-file", str(body)]) == 0
    assert "valid" in capsys.readouterr().out
    body.write_bytes(b'{"id":"7","type":"INVOICE_POSTED"} ')
    assert main([*args, "--body-file", str(body)]) == 1
    old = sign("whsec_abc", body.read_bytes(), at=1_000)
    assert main([*args[:-1], old, "--body-file", str(body)]) == 0  # any age by default
    assert main([*args[:-1], old, "--body-file", str(body), "--tolerance", "300"]) == 1
