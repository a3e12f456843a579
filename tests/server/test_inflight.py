"""One tenant's requests in flight are capped: the next answers 429, retryable (issue 11, 4)."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from server.settings import Settings
from tests.server import fake_schema
from tests.server.test_app import bearer, serve

HOLD = "mutation($g: String!) { hold(gate: $g) }"


async def test_a_tenant_over_its_in_flight_limit_gets_a_retryable_429(
    database_url: str, redis_url: str, sessionmaker: Any, tenant: Any
) -> None:
    from billing.tenants import create_tenant

    async with sessionmaker.begin() as s:
        _, other_key = await create_tenant(s, f"other-{secrets.token_hex(4)}")
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        run_worker=False,
        allow_anonymous=False,
        max_inflight_per_tenant=2,
    )
    gate = secrets.token_hex(4)
    fake_schema.GATE[gate] = asyncio.Event()
    async with serve(settings) as client:
        view = client._transport.app.state.view  # type: ignore[attr-defined]
        held = [
            asyncio.create_task(
                client.post("/graphql", json={"query": HOLD, "variables": {"g": gate}},
                            headers=bearer(tenant.api_key))
            )
            for _ in range(2)
        ]  # fmt: skip
        for _ in range(500):
            if view.inflight.running.get(tenant.id) == 2:
                break
            await asyncio.sleep(0.01)
        assert view.inflight.running.get(tenant.id) == 2

        refused = await client.post(
            "/graphql", json={"query": "{ tenantId }"}, headers=bearer(tenant.api_key)
        )
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        [error] = refused.json()["errors"]
        assert error["extensions"] == {"code": "RATE_LIMITED", "retryable": True}
        assert "in flight" in error["message"]

        # Another tenant is not held up by the first one's load.
        other = await client.post(
            "/graphql", json={"query": "{ tenantId }"}, headers=bearer(other_key)
        )
        assert other.status_code == 200

        fake_schema.GATE[gate].set()
        done = await asyncio.gather(*held)
        assert [r.json() for r in done] == [{"data": {"hold": gate}}] * 2
        assert view.inflight.running == {}
        again = await client.post(
            "/graphql", json={"query": "{ tenantId }"}, headers=bearer(tenant.api_key)
        )
        assert again.json() == {"data": {"tenantId": tenant.id}}
