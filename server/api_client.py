"""GraphQL over HTTP for the commands that talk to a running service (import, reconcile):
one POST, what its answer means, and the retries a transient failure deserves."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

import httpx

# Error codes (per row or for the whole request) that may pass if the same call is sent again.
RETRY_CODES = frozenset({"UNAVAILABLE", "RATE_LIMITED", "LOCK_COMPETITION"})
# Request-level codes that say nothing about the rows sent: the command cannot go on.
ABORT_CODES = frozenset({"QUERY_TOO_COMPLEX", "LIMIT_EXCEEDED", "UNAUTHENTICATED"})
ATTEMPTS = 8


class ApiAborted(RuntimeError):
    """The service refused the command itself (its key, its query)."""


@dataclass(frozen=True)
class Refused:
    """The call was answered with request-level errors instead of data."""

    message: str
    codes: frozenset[str | None]


def client(api_key: str | None, *, connections: int, timeout_s: float) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(headers=headers, timeout=timeout_s, limits=limits)


async def post(
    http: httpx.AsyncClient, url: str, query: str, variables: dict[str, Any]
) -> dict[str, Any] | Refused | None:
    """The answer's data; Refused; or None when the same call should be sent again later
    (no answer, 429, 5xx, or a retryable request-level error). Raises ApiAborted when the
    key is refused."""
    try:
        response = await http.post(url, json={"query": query, "variables": variables})
    except httpx.TransportError:
        return None
    if response.status_code in (401, 403):
        raise ApiAborted(f"the service refused the API key (HTTP {response.status_code})")
    if response.status_code == 429 or response.status_code >= 500:
        return None
    payload = response.json()
    if payload.get("errors"):
        codes = frozenset((e.get("extensions") or {}).get("code") for e in payload["errors"])
        if codes & RETRY_CODES:
            return None
        return Refused("; ".join(e.get("message", "?") for e in payload["errors"]), codes)
    data: dict[str, Any] = payload["data"]
    return data


async def backoff(attempt: int) -> None:
    """Exponential, with jitter so parallel callers do not come back together."""
    await asyncio.sleep(min(30.0, 0.5 * 2**attempt) * (0.5 + random.random()))


async def execute(
    http: httpx.AsyncClient, url: str, query: str, variables: dict[str, Any]
) -> dict[str, Any]:
    """The data of a query that must succeed: sent again on transient failures, ApiAborted
    when refused or when the service stays away."""
    for attempt in range(ATTEMPTS):
        answer = await post(http, url, query, variables)
        if isinstance(answer, Refused):
            raise ApiAborted(answer.message)
        if answer is not None:
            return answer
        await backoff(attempt)
    raise ApiAborted(f"no answer from {url} after {ATTEMPTS} attempts")
