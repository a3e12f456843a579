"""createOrderAsync: a job row, an arq job, and a real worker in burst mode."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq import create_pool
from arq.worker import Worker
from sqlalchemy import text

from jobs.redis import redis_settings_from_url
from jobs.worker import worker_kwargs
from tests.helpers import Gql
from tests.order_helpers import create_action, make_account, make_catalog, mrr, order

ASYNC = """
mutation($input: CreateOrderInput!) {
  createOrderAsync(input: $input) {
    job { id kind status orderNumber errors { code } } errors { __typename code }
  }
}"""
JOB = """query($id: ID!) {
  job(id: $id) { id status orderNumber errors { __typename code message field retryable } } }"""


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[Any]:
    p = await create_pool(redis_settings_from_url(redis_url))
    yield p
    await p.aclose()


@pytest.fixture
async def gql(sessionmaker: Any, tenant: Any, pool: Any) -> Gql:
    g = Gql(sessionmaker, tenant.id, redis=pool)
    await make_catalog(g)
    await make_account(g, "R")
    await make_account(g, "E1")
    return g


async def run_worker(database_url: str, redis_url: str) -> None:
    kwargs = worker_kwargs(database_url)
    kwargs.pop(
        "cron_jobs"
    )  # the metrics tick re-queues itself every second: burst mode would never end
    worker = Worker(
        **kwargs,
        redis_settings=redis_settings_from_url(redis_url),
        burst=True,
        handle_signals=False,
    )
    try:
        await worker.main()
    finally:
        await worker.close()


async def test_async_orders_complete_or_fail_with_typed_error(
    gql: Gql, sessionmaker: Any, tenant: Any, database_url: str, redis_url: str
) -> None:
    # Unique per run: arq keeps results (and so blocks the same job id) across test databases.
    key = f"k-{uuid.uuid4().hex}"
    good = await gql(
        ASYNC, input=order("R", [{"orderActions": [create_action("E1")]}], idempotencyKey=key)
    )
    bad = await gql(
        ASYNC,
        input=order(
            "R",
            [
                {
                    "orderActions": [
                        {
                            "createSubscription": {
                                "subscriptionOwnerAccountNumber": "E1",
                                "ratePlans": [{"productRatePlanNumber": "NOPE"}],
                            }
                        }
                    ]
                }
            ],
        ),
    )
    good_job, bad_job = good["createOrderAsync"]["job"], bad["createOrderAsync"]["job"]
    assert good["createOrderAsync"]["errors"] == bad["createOrderAsync"]["errors"] == []
    assert {k: v for k, v in good_job.items() if k != "id"} == {
        "kind": "create_order",
        "status": "QUEUED",
        "orderNumber": None,
        "errors": [],
    }
    # The same idempotency key gives the same job (and does not enqueue twice).
    again = await gql(
        ASYNC, input=order("R", [{"orderActions": [create_action("E1")]}], idempotencyKey=key)
    )
    assert again["createOrderAsync"]["job"]["id"] == good_job["id"]
    other = await gql(
        ASYNC,
        input=order("R", [{"orderActions": [create_action("E1", seats="2")]}], idempotencyKey=key),
    )
    assert other["createOrderAsync"] == {
        "job": None,
        "errors": [{"__typename": "IdempotencyKeyReusedError", "code": "IDEMPOTENCY_KEY_REUSED"}],
    }
    assert await mrr(gql, "E1") == "0"

    await run_worker(database_url, redis_url)

    done = (await gql(JOB, id=good_job["id"]))["job"]
    # The two jobs run concurrently: which one drew O00000001 from the sequence varies.
    assert done["orderNumber"] in ("O00000001", "O00000002")
    assert done == {
        "id": good_job["id"],
        "status": "COMPLETED",
        "orderNumber": done["orderNumber"],
        "errors": [],
    }
    placed = await gql(
        "query($n: String!) { order(orderNumber: $n) { accountNumber orderActions { type } } }",
        n=done["orderNumber"],
    )
    assert placed == {
        "order": {"accountNumber": "R", "orderActions": [{"type": "CreateSubscription"}]}
    }
    failed = (await gql(JOB, id=bad_job["id"]))["job"]
    assert failed == {
        "id": bad_job["id"],
        "status": "FAILED",
        "orderNumber": None,
        "errors": [
            {
                "__typename": "NotFoundError",
                "code": "NOT_FOUND",
                "message": "Product rate plan NOPE not found",
                "field": [
                    "subscriptions",
                    "0",
                    "orderActions",
                    "0",
                    "ratePlans",
                    "0",
                    "productRatePlanNumber",
                ],
                "retryable": False,
            }
        ],
    }
    assert await mrr(gql, "E1") == "40"
    async with sessionmaker() as s:
        n = (
            await s.execute(
                text("SELECT count(*) FROM subscription WHERE tenant_id = :t"), {"t": tenant.id}
            )
        ).scalar_one()
    assert n == 1

    # Running the job again (arq may) changes nothing.
    from jobs.tasks import create_order

    ctx = {"sessionmaker": sessionmaker}
    assert await create_order(ctx, good_job["id"]) == "COMPLETED"
    assert await create_order(ctx, bad_job["id"]) == "FAILED"
    assert await mrr(gql, "E1") == "40"
    assert (await gql('{ job(id: "nope") { id } }')) == {"job": None}
