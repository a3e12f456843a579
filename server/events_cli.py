"""``partnerbill events tail`` and ``partnerbill webhooks verify``: the feed live in a
terminal through the public API, and a webhook signature checked by hand."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from billing.events import verify
from server.api_client import client, execute

FEED = """query($after: String, $types: [EventType!], $accounts: [String!]) {
  events(after: $after, first: 500, types: $types, accountNumbers: $accounts) {
    edges { node { id cursor type occurredAt accountNumber data } }
    pageInfo { hasNextPage endCursor } } }"""


def line_of(event: dict[str, Any]) -> str:
    """One event as a terminal line: when, type, account, then its data."""
    data = json.dumps(event["data"], separators=(",", ":"), sort_keys=True)
    return f"{event['occurredAt']}  {event['type']:<26} {event['accountNumber'] or '-':<14} {data}"


async def tail(
    url: str,
    api_key: str | None,
    *,
    after: str | None,
    from_start: bool,
    types: list[str] | None,
    accounts: list[str] | None,
    as_json: bool,
    out: Callable[[str], None],
    poll: float = 1.0,
    stop: Callable[[], bool] = lambda: False,
) -> str | None:
    """Print the events after ``after`` (the feed's current end unless ``from_start``), then
    keep polling from the last cursor; returns the last cursor once ``stop()`` says so."""
    variables: dict[str, Any] = {"after": after, "types": types, "accounts": accounts}
    async with client(api_key, connections=1, timeout_s=30.0) as http:
        skipping = after is None and not from_start
        while not stop():
            page = (await execute(http, url, FEED, variables))["events"]
            if not skipping:
                for edge in page["edges"]:
                    node = edge["node"]
                    out(json.dumps(node, separators=(",", ":")) if as_json else line_of(node))
            variables["after"] = page["pageInfo"]["endCursor"]
            if not page["pageInfo"]["hasNextPage"]:
                skipping = False
                await asyncio.sleep(poll)
    cursor: str | None = variables["after"]
    return cursor


def verify_file(secret: str, header: str, body_file: Path, tolerance: int | None) -> bool:
    """True when ``header`` (Partnerbill-Signature) signs the file's bytes with ``secret``;
    ``tolerance`` None skips the timestamp's age check (for a body saved earlier)."""
    body = body_file.read_bytes()
    if tolerance is None:
        return verify(secret, header, body, tolerance=10**12)
    return verify(secret, header, body, tolerance=tolerance)
