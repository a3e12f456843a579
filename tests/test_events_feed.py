"""The event feed: each committed change writes its event in its own transaction, and a
poller that continues from its last cursor sees every event exactly once, even when
concurrent transactions commit out of order."""

from __future__ import annotations

import asyncio
import random
import time
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from billing import accounts as acc
from billing import events as ev
from tests.helpers import Gql
from tests.order_helpers import make_account

EVENTS = """query($after: String, $types: [EventType!], $accounts: [String!], $first: Int) {
  events(after: $after, types: $types, accountNumbers: $accounts, first: $first) {
    edges { cursor node { id cursor type occurredAt accountNumber data } }
    pageInfo { hasNextPage endCursor } } }"""
INVOICE = """mutation($input: CreateStandaloneInvoiceInput!) {
  createStandaloneInvoice(input: $input) { invoice { invoiceNumber } errors { code } } }"""
UNPOST = """mutation($n: String!) { unpostInvoice(input: {invoiceNumber: $n}) {
  invoice { status } errors { code } } }"""
CANCEL = """mutation($n: String!) { cancelInvoice(input: {invoiceNumber: $n}) {
  invoice { status } errors { code } } }"""
PAYMENT = """mutation($input: CreatePaymentInput!) {
  createPayment(input: $input) { payment { paymentNumber } errors { code } } }"""
UPDATE = """mutation($n: String!, $name: String!) { updateAccount(input: {accountNumber: $n,
  name: $name}) { account { name } errors { code } } }"""
REFRESH = """mutation($n: String!) { refreshAccountMetrics(input: {accountNumber: $n}) {
  account { accountNumber } errors { code } } }"""

WAIT = 30.0  # seconds: a transaction elsewhere on the server may hold the feed back a while


def _account(number: str) -> acc.AccountData:
    return acc.AccountData(
        account_number=number,
        name=number,
        currency="USD",
        bill_to={"firstName": "A", "lastName": "B"},
    )


@pytest.fixture
def gql(sessionmaker: Any, tenant: Any) -> Gql:
    return Gql(sessionmaker, tenant.id)


async def _all_events(gql: Gql, count: int, **filters: Any) -> list[dict[str, Any]]:
    """Poll the feed from the start until ``count`` events came (the watermark may lag)."""
    out: list[dict[str, Any]] = []
    after = None
    deadline = time.monotonic() + WAIT
    while len(out) < count and time.monotonic() < deadline:
        page = (await gql(EVENTS, after=after, **filters))["events"]
        out += [e["node"] for e in page["edges"]]
        after = page["pageInfo"]["endCursor"]
        if not page["edges"]:
            await asyncio.sleep(0.05)
    return out


async def test_writes_append_their_events_in_commit_order(gql: Gql) -> None:
    await make_account(gql, "EV-1")
    await make_account(gql, "EV-P", partner=True)
    inv = await gql(
        INVOICE,
        input={
            "accountNumber": "EV-1",
            "invoiceNumber": "EV-INV-1",
            "invoiceDate": "2026-11-02",
            "status": "POSTED",
            "items": [{"chargeName": "Seat", "quantity": "2", "unitPrice": "12.50"}],
        },
    )
    assert inv["createStandaloneInvoice"]["errors"] == []
    assert (await gql(UNPOST, n="EV-INV-1"))["unpostInvoice"]["errors"] == []
    assert (await gql(CANCEL, n="EV-INV-1"))["cancelInvoice"]["errors"] == []
    pay = await gql(
        PAYMENT, input={"accountNumber": "EV-P", "amount": "10.00", "effectiveDate": "2026-11-02"}
    )
    assert pay["createPayment"]["errors"] == []
    assert (await gql(UPDATE, n="EV-1", name="Renamed"))["updateAccount"]["errors"] == []
    assert (await gql(REFRESH, n="EV-P"))["refreshAccountMetrics"]["errors"] == []

    expected = [
        ("ACCOUNT_CREATED", "EV-1"),
        ("ACCOUNT_CREATED", "EV-P"),
        # One statement: its metrics CTE appends before the invoice trigger fires at its end.
        ("ACCOUNT_METRICS_CHANGED", "EV-1"),
        ("INVOICE_POSTED", "EV-1"),
        ("INVOICE_UNPOSTED", "EV-1"),
        ("ACCOUNT_METRICS_CHANGED", "EV-1"),
        ("INVOICE_CANCELED", "EV-1"),
        ("PAYMENT_CREATED", "EV-P"),  # a partner account: no synchronous metrics event
        ("ACCOUNT_UPDATED", "EV-1"),
        ("ACCOUNT_METRICS_REFRESHED", "EV-P"),
    ]
    events = await _all_events(gql, len(expected))
    end = (await gql(EVENTS, after=events[-1]["cursor"]))["events"]
    assert end["edges"] == [] and end["pageInfo"]["endCursor"] == events[-1]["cursor"]
    assert [(e["type"], e["accountNumber"]) for e in events] == expected
    changed, posted = events[2]["data"], events[3]["data"]
    assert posted["invoiceNumber"] == "EV-INV-1" and posted["status"] == "POSTED"
    assert Decimal(posted["amount"]) == Decimal("25")
    assert Decimal(changed["totalInvoiceBalance"]) == Decimal("25")
    assert Decimal(changed["balance"]) == Decimal("25")
    assert changed["lastMetricsUpdate"] is not None
    refreshed = events[-1]["data"]
    assert Decimal(refreshed["unappliedPaymentAmount"]) == Decimal("10")
    assert Decimal(refreshed["balance"]) == Decimal("-10")
    assert refreshed["lastMetricsUpdate"] is not None
    assert events[8]["data"]["name"] == "Renamed"

    # Filters, and paging from a cursor: what follows the third event, two at a time.
    only = await _all_events(gql, 2, types=["INVOICE_POSTED", "PAYMENT_CREATED"])
    assert [e["type"] for e in only] == ["INVOICE_POSTED", "PAYMENT_CREATED"]
    mine = await _all_events(gql, 1, accounts=["EV-P"], types=["ACCOUNT_CREATED"])
    assert [(e["type"], e["accountNumber"]) for e in mine] == [("ACCOUNT_CREATED", "EV-P")]
    page = (await gql(EVENTS, after=events[2]["cursor"], first=2))["events"]
    assert [e["node"]["id"] for e in page["edges"]] == [e["id"] for e in events[3:5]]
    assert page["pageInfo"]["hasNextPage"] is True


async def test_bad_feed_arguments_are_typed_errors(gql: Gql) -> None:
    for args, code in (
        ({"after": "bm9wZQ=="}, "VALIDATION"),
        ({"first": 600}, "LIMIT_EXCEEDED"),
        ({"accounts": ["NOPE"]}, "NOT_FOUND"),
    ):
        res = await gql.raw(EVENTS, **args)
        assert res.errors and res.errors[0].extensions["code"] == code, (args, res.errors)


async def test_events_committed_out_of_order_reach_a_poller_exactly_once(
    sessionmaker: Any, tenant: Any
) -> None:
    """T1 writes first and commits last: a poller that read T2's commit before T1 committed
    would, with an id watermark, have moved past T1's event for good."""
    t = tenant.id

    async def poll(after: ev.FeedPosition) -> tuple[list[int], ev.FeedPosition]:
        async with sessionmaker() as s:
            page = await ev.read_events(s, t, after, 500)
        return [e.id for e in page.events], page.end

    async with sessionmaker() as s1, sessionmaker() as s2:
        await s1.begin()
        await acc.create_account(s1, t, _account("OOO-1"))  # T1: the older transaction id
        await s2.begin()
        await acc.create_account(s2, t, _account("OOO-2"))
        await s2.commit()  # T2 commits first
        seen, cursor = await poll(ev.START)
        assert seen == []  # T2's event waits behind T1, still open
        await s1.commit()
    seen_all: list[int] = list(seen)
    deadline = time.monotonic() + WAIT
    while len(seen_all) < 2 and time.monotonic() < deadline:
        more, cursor = await poll(cursor)
        seen_all += more
        await asyncio.sleep(0.02)
    async with sessionmaker() as s:
        ids = (
            await s.execute(
                text("SELECT id FROM event WHERE tenant_id = :t ORDER BY xid, id"), {"t": t}
            )
        ).scalars()
        assert seen_all == list(ids) and len(seen_all) == 2


async def test_a_poller_sees_every_event_once_under_concurrent_writers(
    sessionmaker: Any, tenant: Any
) -> None:
    """Writers hold their transactions open for random times, so commits land out of id and
    transaction order; a poller running all along ends with every event once, in feed order."""
    t = tenant.id
    rng = random.Random(14)
    done = asyncio.Event()

    async def writer(w: int) -> None:
        for i in range(8):
            async with sessionmaker.begin() as s:
                await acc.create_account(
                    s,
                    t,
                    _account(f"C-{w}-{i}"),
                )
                await asyncio.sleep(rng.random() * 0.05)

    seen: list[int] = []

    async def poller() -> None:
        cursor = ev.START
        while True:
            finished = done.is_set()
            async with sessionmaker() as s:
                page = await ev.read_events(s, t, cursor, 7)
            seen.extend(e.id for e in page.events)
            cursor = page.end
            if finished and not page.events and len(seen) >= 48:
                return
            await asyncio.sleep(0.005)

    polling = asyncio.create_task(poller())
    await asyncio.gather(*(writer(w) for w in range(6)))
    done.set()
    await asyncio.wait_for(polling, WAIT)
    async with sessionmaker() as s:
        ordered = list(
            (
                await s.execute(
                    text("SELECT id FROM event WHERE tenant_id = :t ORDER BY xid, id"), {"t": t}
                )
            ).scalars()
        )
    assert len(ordered) == 48
    assert seen == ordered  # every event, once, in feed order


async def test_events_can_be_switched_off_and_are_pruned(sessionmaker: Any, tenant: Any) -> None:
    t = tenant.id
    async with sessionmaker.begin() as s:
        await s.execute(text("SET LOCAL partnerbill.events = 'off'"))
        await acc.create_account(
            s,
            t,
            _account("OFF"),
        )
    async with sessionmaker.begin() as s:
        await acc.create_account(
            s,
            t,
            _account("ON"),
        )
        await s.execute(
            text("UPDATE event SET occurred_at = now() - interval '31 days' WHERE tenant_id = :t"),
            {"t": t},
        )
    async with sessionmaker() as s:
        n = await s.execute(text("SELECT count(*) FROM event WHERE tenant_id = :t"), {"t": t})
        assert n.scalar_one() == 1
    async with sessionmaker.begin() as s:
        assert await ev.prune_events(s, 30) >= 1
    async with sessionmaker() as s:
        n = await s.execute(text("SELECT count(*) FROM event WHERE tenant_id = :t"), {"t": t})
        assert n.scalar_one() == 0


def test_the_graphql_event_types_are_the_stored_ones() -> None:
    from db.statuses import EventType as Stored
    from schema.events import EventType as Shown

    assert {m.value for m in Shown} == {m.value for m in Stored}


async def test_memo_payment_and_order_events(sessionmaker: Any, tenant: Any) -> None:
    from tests.order_helpers import CREATE_ORDER, create_action, make_catalog, order
    from tests.test_memos import Api

    gql = Gql(sessionmaker, tenant.id)
    api = Api(gql, sessionmaker, tenant.id)
    await make_account(gql, "EM")
    await api("invoice", accountNumber="EM", invoiceNumber="EM-I", invoiceDate="2026-11-01",
              status="POSTED", items=[{"chargeName": "S", "amount": "100"}])  # fmt: skip
    cm = await api("createCreditMemo", accountNumber="EM", amount="10", autoPost=True)
    dm = await api("createDebitMemo", accountNumber="EM", amount="9")
    await api("postDebitMemo", memoNumber=dm["memoNumber"])
    await api("unpostDebitMemo", memoNumber=dm["memoNumber"])
    await api("cancelDebitMemo", memoNumber=dm["memoNumber"])
    pay = await api("createPayment", accountNumber="EM", amount="50", effectiveDate="2026-11-02")
    number = pay["paymentNumber"]
    await api("applyPayment", paymentNumber=number,
              invoices=[{"invoiceNumber": "EM-I", "amount": "20"}])  # fmt: skip
    await api("unapplyPayment", paymentNumber=number,
              invoices=[{"invoiceNumber": "EM-I", "amount": "20"}])  # fmt: skip
    await api("refundPayment", paymentNumber=number, amount="5")
    other = await api("createPayment", accountNumber="EM", amount="1", effectiveDate="2026-11-02")
    await api("cancelPayment", paymentNumber=other["paymentNumber"])
    await make_catalog(gql)
    made = await gql(CREATE_ORDER, input=order("EM", [{"orderActions": [create_action()]}]))
    assert made["createOrder"]["errors"] == []

    quiet = {"ACCOUNT_CREATED", "ACCOUNT_METRICS_CHANGED"}
    want = [
        "INVOICE_POSTED", "CREDIT_MEMO_POSTED", "DEBIT_MEMO_POSTED", "DEBIT_MEMO_UNPOSTED",
        "DEBIT_MEMO_CANCELED", "PAYMENT_CREATED", "PAYMENT_APPLIED", "PAYMENT_UNAPPLIED",
        "PAYMENT_REFUNDED", "PAYMENT_CREATED", "PAYMENT_CANCELED", "ORDER_COMPLETED",
    ]  # fmt: skip
    deadline = time.monotonic() + WAIT
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        seen = [e for e in await _all_events(gql, 1) if e["type"] not in quiet]
        if len(seen) >= len(want):
            break
        await asyncio.sleep(0.1)
    assert [e["type"] for e in seen] == want
    assert seen[1]["data"]["memoNumber"] == cm["memoNumber"]
    assert Decimal(seen[8]["data"]["refundAmount"]) == Decimal(5)
    assert {e["accountNumber"] for e in seen} == {"EM"}


async def test_each_tables_event_data_is_the_generic_rows_data(
    sessionmaker: Any, tenant: Any
) -> None:
    """Migration 0012's per-table pb_event_data(row) gives what 0011's generic
    pb_event_data(to_jsonb(row)) gives, for real rows of every table with events: a column
    added to one of these tables without its key in the per-table function fails here."""
    from tests.test_memos import Api
    from tests.test_rules import World

    world = World(Gql(sessionmaker, tenant.id), sessionmaker, tenant.id)
    await world.build()  # accounts, invoices, memos and payments in every state
    await Api.__call__(world, "refundPayment", paymentNumber="P00000001", amount="1")
    async with sessionmaker() as s:
        for table in ("account", "invoice", "credit_memo", "debit_memo", "payment"):
            rows = (
                await s.execute(
                    text(
                        f"SELECT pb_event_data(t) AS per_table, "
                        f"pb_event_data(to_jsonb(t)) AS generic FROM {table} t "
                        "WHERE t.tenant_id = :t"
                    ),
                    {"t": tenant.id},
                )
            ).all()
            assert rows, table
            for per_table, generic in rows:
                assert per_table == generic, (table, per_table, generic)
