"""Root fields of webhook endpoints."""

from __future__ import annotations

from typing import Any

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from billing import webhooks as wh
from db.statuses import EventType as StoredEventType
from resolvers.base import in_transaction, read
from resolvers.convert import connection
from schema.common import Connection
from schema.events import EventType
from schema.webhooks import (
    CreateWebhookEndpointInput,
    UpdateWebhookEndpointInput,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointInput,
    WebhookEndpointPayload,
)


def endpoint(row: Any) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=strawberry.ID(str(row["id"])),
        url=row["url"],
        event_types=[EventType(t) for t in row["event_types"]],
        description=row["description"],
        enabled=row["enabled"],
        disabled_reason=row["disabled_reason"],
        failing_since=row["failing_since"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
    )


def delivery(row: Any) -> WebhookDelivery:
    return WebhookDelivery(
        id=strawberry.ID(str(row["id"])),
        event_id=strawberry.ID(str(row["event_id"])),
        event_type=EventType(row["event_type"]),
        attempt=row["attempt"],
        succeeded=row["succeeded"],
        status_code=row["status_code"],
        duration_ms=row["duration_ms"],
        error=row["error"],
        attempted_at=row["created_at"],
    )


def _stored(types: list[EventType] | None) -> list[StoredEventType] | None:
    return None if types is None else [StoredEventType(t.value) for t in types]


async def _payload(ctx: Any, work: Any) -> WebhookEndpointPayload:
    result, errors = await in_transaction(ctx, work)
    if errors or result is None:
        return WebhookEndpointPayload(errors=errors)
    row, secret = result
    return WebhookEndpointPayload(webhook_endpoint=endpoint(row), secret=secret)


@strawberry.type
class WebhookQueries:
    @strawberry.field(description="The tenant's webhook endpoints, in creation order.")
    async def webhook_endpoints(
        self, info: strawberry.Info, first: int | None = None, after: str | None = None
    ) -> Connection[WebhookEndpoint]:
        async def go(s: AsyncSession) -> Connection[WebhookEndpoint]:
            page = await wh.list_endpoints(s, info.context.tenant_id, first, after)
            return connection(page, endpoint)

        return await read(info.context, go)

    @strawberry.field(
        description="Every attempt to deliver to an endpoint, oldest first: status code, "
        "duration and error of each."
    )
    async def webhook_deliveries(
        self,
        info: strawberry.Info,
        endpoint_id: strawberry.ID,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[WebhookDelivery]:
        async def go(s: AsyncSession) -> Connection[WebhookDelivery]:
            page = await wh.list_deliveries(s, info.context.tenant_id, endpoint_id, first, after)
            return connection(page, delivery)

        return await read(info.context, go)


@strawberry.type
class WebhookMutations:
    @strawberry.mutation(
        description="A new endpoint, delivered the events committed from now on; the payload "
        "carries its signing secret, shown this once."
    )
    async def create_webhook_endpoint(
        self, info: strawberry.Info, input: CreateWebhookEndpointInput
    ) -> WebhookEndpointPayload:
        data = wh.EndpointData(input.url, _stored(input.event_types) or [], input.description)

        async def go(s: AsyncSession) -> Any:
            return await wh.create_endpoint(s, info.context.tenant_id, data)

        return await _payload(info.context, go)

    @strawberry.mutation(description="Change an endpoint, disable it, or enable it again.")
    async def update_webhook_endpoint(
        self, info: strawberry.Info, input: UpdateWebhookEndpointInput
    ) -> WebhookEndpointPayload:
        changes = wh.EndpointChanges(
            input.url, _stored(input.event_types), input.description, input.enabled
        )

        async def go(s: AsyncSession) -> Any:
            return await wh.update_endpoint(s, info.context.tenant_id, input.id, changes), None

        return await _payload(info.context, go)

    @strawberry.mutation(description="Remove an endpoint and its recorded attempts.")
    async def delete_webhook_endpoint(
        self, info: strawberry.Info, input: WebhookEndpointInput
    ) -> WebhookEndpointPayload:
        async def go(s: AsyncSession) -> Any:
            return await wh.delete_endpoint(s, info.context.tenant_id, input.id), None

        return await _payload(info.context, go)

    @strawberry.mutation(
        description="A new signing secret, shown this once; the old one stops signing at once."
    )
    async def rotate_webhook_secret(
        self, info: strawberry.Info, input: WebhookEndpointInput
    ) -> WebhookEndpointPayload:
        async def go(s: AsyncSession) -> Any:
            return await wh.rotate_secret(s, info.context.tenant_id, input.id)

        return await _payload(info.context, go)
