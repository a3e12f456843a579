"""Query.events: the tenant's event feed."""

from __future__ import annotations

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.scalars import JSON

from billing import events as ev
from billing.accounts import account_ids_by_numbers
from billing.errors import BillingError
from db.statuses import EventType as StoredEventType
from resolvers.base import in_transaction, read
from resolvers.errors import to_graphql_error
from schema.common import PageInfo
from schema.events import (
    Event,
    EventConnection,
    EventEdge,
    EventType,
    ImportFinishedPayload,
    RecordImportFinishedInput,
)


def event_node(e: ev.Event) -> Event:
    return Event(
        id=strawberry.ID(str(e.id)),
        cursor=e.position.cursor(),
        type=EventType(e.type.value),
        occurred_at=e.occurred_at,
        account_number=e.account_number,
        data=JSON(e.data),
    )


def event_connection(page: ev.EventPage) -> EventConnection:
    return EventConnection(
        edges=[EventEdge(cursor=e.position.cursor(), node=event_node(e)) for e in page.events],
        page_info=PageInfo(has_next_page=page.has_next, end_cursor=page.end.cursor()),
    )


@strawberry.type
class EventQueries:
    @strawberry.field(
        description="The tenant's events after `after` (from the oldest kept when absent), in "
        "commit order, narrowed to `types` and `accountNumbers` (an unknown account number is "
        "NOT_FOUND). An event is readable once every transaction that began before its own "
        "has ended; events are kept PARTNERBILL_EVENT_RETENTION_DAYS (30) days."
    )
    async def events(
        self,
        info: strawberry.Info,
        after: str | None = None,
        first: int | None = None,
        types: list[EventType] | None = None,
        account_numbers: list[str] | None = None,
    ) -> EventConnection:
        ctx = info.context

        async def go(s: AsyncSession) -> ev.EventPage:
            position = ev.decode_position(after)
            n = ev.check_first(first)
            ids = (
                None
                if account_numbers is None
                else await account_ids_by_numbers(s, ctx.tenant_id, account_numbers)
            )
            stored = None if types is None else [StoredEventType(t.value) for t in types]
            return await ev.read_events(
                s, ctx.tenant_id, position, n, types=stored, account_ids=ids
            )

        try:
            page = await read(ctx, go)
        except BillingError as exc:
            raise to_graphql_error(exc, info) from None
        return event_connection(page)


@strawberry.type
class EventMutations:
    @strawberry.mutation(
        description="Record that an import client finished a file (an IMPORT_FINISHED event "
        "with its counts): `partnerbill import` sends it once a file is done, so the feed and "
        "webhooks hear of it."
    )
    async def record_import_finished(
        self, info: strawberry.Info, input: RecordImportFinishedInput
    ) -> ImportFinishedPayload:
        ctx = info.context
        summary = ev.ImportSummary(input.kind, input.file, input.rows, input.written, input.failed)

        async def go(s: AsyncSession) -> bool:
            await ev.record_import_finished(s, ctx.tenant_id, summary)
            return True

        done, errors = await in_transaction(ctx, go)
        return ImportFinishedPayload(recorded=bool(done), errors=errors)
