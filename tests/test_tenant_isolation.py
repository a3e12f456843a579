"""Tenant isolation over every root field: one tenant never reads, lists or changes another
tenant's objects, even when it names them by their numbers.

Tenant A holds an object of every kind; tenant B asks for each of them by A's numbers through
every root query (answered null or an empty page) and tries every money-moving mutation on
them (answered NOT_FOUND, and A's rows are unchanged). The test reads the schema's root fields
and fails when one is added without a case here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import create_pool

from jobs.redis import redis_settings_from_url
from schema.root import schema
from tests.helpers import Gql
from tests.order_helpers import CREATE_ORDER, create_action, make_account, make_catalog, order
from tests.test_rules import World, snapshot

# Root queries that look one object up by its number, with the variable that names it.
LOOKUPS: dict[str, tuple[str, str]] = {
    "account": ("accountNumber", "{ accountNumber }"),
    "invoice": ("invoiceNumber", "{ invoiceNumber }"),
    "payment": ("paymentNumber", "{ paymentNumber }"),
    "creditMemo": ("memoNumber", "{ memoNumber }"),
    "debitMemo": ("memoNumber", "{ memoNumber }"),
    "refund": ("refundNumber", "{ refundNumber }"),
    "subscription": ("subscriptionNumber", "{ subscriptionNumber }"),
    "order": ("orderNumber", "{ orderNumber }"),
    "billRun": ("billRunNumber", "{ billRunNumber }"),
    "job": ("id", "{ id }"),
}
# Root queries that list the tenant's own objects (and what B may see of its own).
LISTS = {
    "accounts": "accounts(first: 100) { edges { node { accountNumber } } }",
    "products": "products(first: 100) { edges { node { productNumber } } }",
    "metricsReconciliation": "metricsReconciliation(first: 100) { edges { node { "
    "account { accountNumber } matches } } }",
}
# Root queries about the caller itself: B's own settings, never A's.
OWN = {"tenantSettings": "tenantSettings { metricsRefreshInterval lockWait }"}

# The event feed and webhook endpoints: tried with their own fixtures in tests/test_webhooks.py
# (test_another_tenant_neither_sees_nor_changes_an_endpoint).
WEBHOOK_CASES = {
    "events", "webhookEndpoints", "webhookDeliveries", "createWebhookEndpoint",
    "updateWebhookEndpoint", "deleteWebhookEndpoint", "rotateWebhookSecret",
}  # fmt: skip

# Mutations on A's objects by number: every one must be NOT_FOUND for B and change nothing.
ERR = "errors { __typename code field message }"
MUTATIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("updateAccount", "UpdateAccountInput", {"accountNumber": "U", "name": "stolen"}),
    ("refreshAccountMetrics", "RefreshAccountMetricsInput", {"accountNumber": "U"}),
    ("postInvoice", "InvoiceNumberInput", {"invoiceNumber": "INV-D"}),
    ("unpostInvoice", "InvoiceNumberInput", {"invoiceNumber": "INV-P"}),
    ("cancelInvoice", "InvoiceNumberInput", {"invoiceNumber": "INV-D"}),
    (
        "createStandaloneInvoice",
        "CreateStandaloneInvoiceInput",
        {
            "accountNumber": "U",
            "invoiceDate": "2026-11-01",
            "items": [{"chargeName": "x", "amount": "1"}],
        },
    ),
    (
        "createPayment",
        "CreatePaymentInput",
        {"accountNumber": "U", "amount": "1", "effectiveDate": "2026-11-02"},
    ),
    (
        "applyPayment",
        "PaymentApplicationInput",
        {"paymentNumber": "P00000001", "invoices": [{"invoiceNumber": "INV-P", "amount": "1"}]},
    ),
    (
        "unapplyPayment",
        "PaymentApplicationInput",
        {"paymentNumber": "P00000001", "invoices": [{"invoiceNumber": "INV-P", "amount": "1"}]},
    ),
    ("cancelPayment", "PaymentNumberInput", {"paymentNumber": "P00000001"}),
    ("refundPayment", "RefundPaymentInput", {"paymentNumber": "P00000001", "amount": "1"}),
    ("createCreditMemo", "CreateCreditMemoInput", {"accountNumber": "U", "amount": "1"}),
    ("createDebitMemo", "CreateDebitMemoInput", {"accountNumber": "U", "amount": "1"}),
    ("postCreditMemo", "MemoNumberInput", {"memoNumber": "CM00000002"}),
    ("cancelCreditMemo", "MemoNumberInput", {"memoNumber": "CM00000002"}),
    ("unpostDebitMemo", "MemoNumberInput", {"memoNumber": "DM00000002"}),
    ("postDebitMemo", "MemoNumberInput", {"memoNumber": "DM00000002"}),
    ("cancelDebitMemo", "MemoNumberInput", {"memoNumber": "DM00000002"}),
    ("unpostCreditMemo", "MemoNumberInput", {"memoNumber": "CM00000001"}),
    (
        "applyCreditMemo",
        "CreditMemoApplicationInput",
        {"memoNumber": "CM00000001", "invoices": [{"invoiceNumber": "INV-P", "amount": "1"}]},
    ),
    (
        "unapplyCreditMemo",
        "CreditMemoApplicationInput",
        {"memoNumber": "CM00000001", "debitMemos": [{"memoNumber": "DM00000001", "amount": "1"}]},
    ),
    ("refundCreditMemo", "RefundCreditMemoInput", {"memoNumber": "CM00000001", "amount": "1"}),
    # B has a catalog of its own with the same numbers: only A's account is out of reach.
    ("createOrder", "CreateOrderInput", order("U", [{"orderActions": [create_action()]}])),
    (
        "createOrder",
        "CreateOrderInput",
        order("B1", [{"orderActions": [create_action(invoice_owner="U")]}]),
    ),
    (
        "createSubscription",
        "CreateSubscriptionInput",
        {
            "accountNumber": "U",
            "orderDate": "2026-01-01",
            "ratePlans": [{"productRatePlanNumber": "PRP-BASIC"}],
        },
    ),
    ("createBillRun", "CreateBillRunInput", {"targetDate": "2026-12-01", "accountNumbers": ["U"]}),
]


# Bulk mutations: (mutation, input type, list field, one row naming A's account).
BULK: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "createStandaloneInvoices",
        "CreateStandaloneInvoicesInput",
        "invoices",
        {"accountNumber": "U", "invoiceDate": "2026-11-01",
         "items": [{"chargeName": "x", "amount": "1"}]},
    ),
    (
        "createPayments",
        "CreatePaymentsInput",
        "payments",
        {"accountNumber": "U", "amount": "1", "effectiveDate": "2026-11-02"},
    ),
    ("createCreditMemos", "CreateCreditMemosInput", "creditMemos",
     {"accountNumber": "U", "amount": "1"}),
    ("createDebitMemos", "CreateDebitMemosInput", "debitMemos",
     {"accountNumber": "U", "amount": "1"}),
]  # fmt: skip


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[Any]:
    p = await create_pool(redis_settings_from_url(redis_url))
    yield p
    await p.aclose()


@pytest.fixture
async def two_tenants(
    sessionmaker: Any, tenant: Any, pool: Any
) -> tuple[World, Gql, dict[str, str]]:
    """Tenant A (the fixture's tenant) with an object of every kind; a Gql for tenant B."""
    from billing.tenants import create_tenant

    a = World(Gql(sessionmaker, tenant.id, redis=pool), sessionmaker, tenant.id)
    await a.build()
    await make_catalog(a.gql)
    placed = await a.gql(
        CREATE_ORDER, input=order("U", [{"orderActions": [create_action(number="S-A")]}])
    )
    assert placed["createOrder"]["errors"] == []
    refund = await a("refundPayment", paymentNumber="P00000001", amount="1")
    job = await a.gql(
        "mutation($input: CreateOrderInput!) { createOrderAsync(input: $input) "
        "{ job { id } errors { code } } }",
        input=order("V", [{"orderActions": [create_action()]}]),
    )
    run = await a.gql(
        'mutation { createBillRun(input: { targetDate: "2026-12-01" }) '
        "{ billRun { billRunNumber } errors { code } } }"
    )
    names = {
        "account": "U",
        "invoice": "INV-P",
        "payment": "P00000001",
        "creditMemo": "CM00000001",
        "debitMemo": "DM00000001",
        "refund": refund["refundNumber"],
        "subscription": "S-A",
        "order": placed["createOrder"]["order"]["orderNumber"],
        "billRun": run["createBillRun"]["billRun"]["billRunNumber"],
        "job": job["createOrderAsync"]["job"]["id"],
    }
    # A sees each of its own objects: the lookups below are not vacuously null.
    for field, (var, sel) in LOOKUPS.items():
        data = await a.gql(
            f"query($n: String!) {{ {field}({var}: $n) {sel} }}".replace(
                "$n: String!", "$n: ID!" if var == "id" else "$n: String!"
            ),
            n=names[field],
        )
        assert data[field] is not None, field
    async with sessionmaker.begin() as s:
        b_id, _ = await create_tenant(s, "tenant-b")
    b = Gql(sessionmaker, b_id, redis=pool)
    await make_catalog(b)
    await make_account(b, "B1")
    return a, b, names


def test_every_root_field_has_a_case() -> None:
    """A new root query or mutation must say how it keeps tenants apart."""
    gql_schema = schema._schema
    assert gql_schema.query_type is not None and gql_schema.mutation_type is not None
    covered_queries = set(LOOKUPS) | set(LISTS) | set(OWN) | set(WEBHOOK_CASES)
    assert set(gql_schema.query_type.fields) - covered_queries == set()
    # Mutations that take no other object's number (they create from scratch or act on the
    # caller's own settings) cannot reach another tenant; every other one is tried below.
    creates_only = {
        "createAccount",
        "createProduct",
        "updateTenantSettings",
        # Its order is refused by the job that runs it (tests/test_orders_async.py).
        "createOrderAsync",
        # Appends an event of the caller's own (tests/server/test_import.py).
        "recordImportFinished",
    }
    tried = {m for m, _, _ in MUTATIONS} | {"postBillRun", "cancelBillRun", "createOrders"}
    tried |= {m for m, _, _, _ in BULK} | set(WEBHOOK_CASES)
    untried = set(gql_schema.mutation_type.fields) - tried - creates_only
    assert untried == set(), f"add a case for {sorted(untried)}"


async def test_another_tenant_reads_nothing_by_number(
    two_tenants: tuple[World, Gql, dict[str, str]],
) -> None:
    a, b, names = two_tenants
    for field, (var, sel) in LOOKUPS.items():
        kind = "ID!" if var == "id" else "String!"
        data = await b(f"query($n: {kind}) {{ {field}({var}: $n) {sel} }}", n=names[field])
        assert data[field] is None, (field, data)
    # B's lists hold B's own account and product (same product number as A's) and no more.
    listed = {field: (await b(f"{{ {sel} }}"))[field]["edges"] for field, sel in LISTS.items()}
    assert [e["node"]["accountNumber"] for e in listed["accounts"]] == ["B1"]
    assert [e["node"]["productNumber"] for e in listed["products"]] == ["PC-FLEET"]
    reconciled = [e["node"]["account"]["accountNumber"] for e in listed["metricsReconciliation"]]
    assert reconciled == ["B1"]
    named = await b.raw('{ metricsReconciliation(accountNumbers: ["U"]) { totalCount } }')
    assert named.errors[0].extensions["code"] == "NOT_FOUND"
    mine = await b(f"{{ {OWN['tenantSettings']} }}")
    theirs = await a.gql(f"{{ {OWN['tenantSettings']} }}")
    assert mine["tenantSettings"] is not None and theirs["tenantSettings"] is not None


async def test_another_tenant_changes_nothing_by_number(
    sessionmaker: Any, two_tenants: tuple[World, Gql, dict[str, str]]
) -> None:
    a, b, names = two_tenants
    before = await snapshot(sessionmaker, a.tenant_id)
    for op, input_type, input_ in MUTATIONS:
        res = await b(
            f"mutation($input: {input_type}!) {{ {op}(input: $input) {{ {ERR} }} }}",
            input=input_,
        )
        codes = [e["code"] for e in res[op]["errors"]]
        assert codes == ["NOT_FOUND"], (op, res)
    for op in ("postBillRun", "cancelBillRun"):
        res = await b(
            f"mutation($n: String!) {{ {op}(input: {{ billRunNumber: $n }}) {{ {ERR} }} }}",
            n=names["billRun"],
        )
        assert [e["code"] for e in res[op]["errors"]] == ["NOT_FOUND"], (op, res)
    res = await b(
        "mutation($input: CreateOrdersInput!) { createOrders(input: $input) "
        "{ count results { errors { code } } } }",
        input={
            "orders": [order("U", [{"orderActions": [create_action()]}])],
            "errorPolicy": "REJECT_FAILED_ROWS",
        },
    )
    assert res["createOrders"]["count"] == 0
    assert [e["code"] for e in res["createOrders"]["results"][0]["errors"]] == ["NOT_FOUND"]
    for op, input_type, rows_field, row in BULK:
        res = await b(
            f"mutation($input: {input_type}!) {{ {op}(input: $input) "
            "{ count results { errors { code } } } }",
            input={rows_field: [row], "errorPolicy": "REJECT_FAILED_ROWS"},
        )
        assert res[op]["count"] == 0, (op, res)
        assert [e["code"] for e in res[op]["results"][0]["errors"]] == ["NOT_FOUND"], (op, res)
    assert await snapshot(sessionmaker, a.tenant_id) == before
