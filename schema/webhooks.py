"""Webhook endpoints and their delivery attempts: shapes only."""

from __future__ import annotations

from datetime import datetime

import strawberry

from schema.errors import UserError
from schema.events import EventType


@strawberry.type(
    description="Where the worker delivers the tenant's events: each matching event at least "
    "once, in order, signed in the Partnerbill-Signature header "
    "(t=<unix>,v1=<hex HMAC-SHA256(secret, t + '.' + body)>)."
)
class WebhookEndpoint:
    id: strawberry.ID = strawberry.field(description="The endpoint's id.")
    url: str = strawberry.field(description="Where events are POSTed.")
    event_types: list[EventType] = strawberry.field(
        description="The types delivered; empty: every type."
    )
    description: str | None = strawberry.field(description="The tenant's note.")
    enabled: bool = strawberry.field(
        description="False once it failed continuously for the retry window (24 hours by "
        "default) or the tenant disabled it; enable it again to resume where it stopped."
    )
    disabled_reason: str | None = strawberry.field(description="Why it is disabled.")
    failing_since: datetime | None = strawberry.field(
        description="The first failure of the current run of failures."
    )
    next_attempt_at: datetime = strawberry.field(description="When it is tried next.")
    created_at: datetime = strawberry.field(description="When it was created.")


@strawberry.type(description="Result of a webhook endpoint mutation.")
class WebhookEndpointPayload:
    webhook_endpoint: WebhookEndpoint | None = strawberry.field(
        default=None, description="The endpoint."
    )
    secret: str | None = strawberry.field(
        default=None,
        description="The signing secret: answered only by createWebhookEndpoint and "
        "rotateWebhookSecret, never again.",
    )
    errors: list[UserError] = strawberry.field(
        default_factory=list, description="Why nothing was written."
    )


@strawberry.type(description="One attempt to deliver one event to an endpoint.")
class WebhookDelivery:
    id: strawberry.ID = strawberry.field(description="The attempt's id.")
    event_id: strawberry.ID = strawberry.field(description="The event delivered.")
    event_type: EventType = strawberry.field(description="Its type.")
    attempt: int = strawberry.field(description="1 for the first try of this event.")
    succeeded: bool = strawberry.field(description="The endpoint answered 2xx in time.")
    status_code: int | None = strawberry.field(description="The HTTP status, if any came.")
    duration_ms: float = strawberry.field(description="How long the attempt took.")
    error: str | None = strawberry.field(description="What went wrong, if anything.")
    attempted_at: datetime = strawberry.field(description="When it was made.")


@strawberry.input(description="A new webhook endpoint.")
class CreateWebhookEndpointInput:
    url: str = strawberry.field(description="An http or https URL.")
    event_types: list[EventType] = strawberry.field(
        default_factory=list, description="The types to deliver; empty or absent: every type."
    )
    description: str | None = strawberry.field(default=None, description="A note.")


@strawberry.input(description="Changes to a webhook endpoint (absent fields stay).")
class UpdateWebhookEndpointInput:
    id: strawberry.ID = strawberry.field(description="The endpoint.")
    url: str | None = strawberry.field(default=None, description="A new URL.")
    event_types: list[EventType] | None = strawberry.field(
        default=None, description="New types; empty: every type."
    )
    description: str | None = strawberry.field(default=None, description="A new note.")
    enabled: bool | None = strawberry.field(
        default=None,
        description="false stops deliveries; true resumes a disabled endpoint where it stopped.",
    )


@strawberry.input(description="A webhook endpoint, by id.")
class WebhookEndpointInput:
    id: strawberry.ID = strawberry.field(description="The endpoint.")
