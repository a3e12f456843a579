"""Expensive queries are refused before they run, with a clear message (issue 11, 4)."""

from __future__ import annotations

from typing import Any

import pytest

from resolvers.context import Context, Services
from schema.limits import QueryLimits
from schema.root import build_schema, schema
from tests.test_graphql_accounts import CREATE, account_input

TOO_COMPLEX = {"code": "QUERY_TOO_COMPLEX", "retryable": False}


async def run(sessionmaker: Any, tenant_id: int, query: str, s: Any = schema, **v: Any) -> Any:
    ctx = Context(tenant_id=tenant_id, services=Services(sessionmaker=sessionmaker))
    return await s.execute(query, variable_values=v, context_value=ctx)


def fan_out(levels: int, first: int = 500) -> str:
    inner = "accountNumber"
    for _ in range(levels):
        inner = f"invoices(first: {first}) {{ edges {{ node {{ account {{ {inner} }} }} }} }}"
    return f'{{ account(accountNumber: "ACC") {{ {inner} }} }}'


def refused(res: Any, words: str) -> None:
    assert res.data is None
    assert res.errors is not None and len(res.errors) == 1
    assert res.errors[0].extensions == TOO_COMPLEX
    assert words in res.errors[0].message, res.errors[0].message


@pytest.fixture
async def account(sessionmaker: Any, tenant: Any) -> None:
    res = await run(sessionmaker, tenant.id, CREATE, input=account_input(accountNumber="ACC"))
    assert res.errors is None


async def test_a_nine_level_fan_out_is_refused(sessionmaker: Any, tenant: Any) -> None:
    res = await run(sessionmaker, tenant.id, fan_out(9))
    refused(res, "")
    # One invoice a level costs little, but the depth alone is refused.
    res = await run(sessionmaker, tenant.id, fan_out(9, first=1))
    refused(res, "fields deep")


async def test_a_ten_megabyte_query_is_refused(sessionmaker: Any, tenant: Any) -> None:
    query = "{ " + "__typename " * 1_000_000 + "}"
    assert len(query) > 10_000_000
    res = await run(sessionmaker, tenant.id, query)
    refused(res, "tokens")


async def test_a_thousand_aliases_are_refused(sessionmaker: Any, tenant: Any) -> None:
    query = "{ " + " ".join(f'a{i}: account(accountNumber: "ACC") {{ name }}' for i in range(1000))
    res = await run(sessionmaker, tenant.id, query + " }")
    refused(res, "1000 aliases")


async def test_nested_pages_are_refused_by_cost(sessionmaker: Any, tenant: Any) -> None:
    query = """query($n: Int) { accounts(first: $n) { edges { node {
        invoices(first: 500) { edges { node { invoiceNumber amount balance } } } } } } }"""
    res = await run(sessionmaker, tenant.id, query, n=500)
    refused(res, "page sizes")
    # Without `first` a connection counts its default page: still far too much.
    res = await run(sessionmaker, tenant.id, query.replace("(first: $n)", ""))
    refused(res, "page sizes")


async def test_ordinary_queries_run(sessionmaker: Any, tenant: Any, account: None) -> None:
    res = await run(sessionmaker, tenant.id, fan_out(1))
    assert res.errors is None
    query = """{ accounts(first: 100) { totalCount edges { node { accountNumber
        metrics { balance } invoices(first: 20) { edges { node { invoiceNumber } } } } } } }"""
    res = await run(sessionmaker, tenant.id, query)
    assert res.errors is None
    assert res.data["accounts"]["totalCount"] == 1


async def test_introspection_is_not_limited_by_depth(sessionmaker: Any, tenant: Any) -> None:
    from graphql import get_introspection_query

    res = await run(sessionmaker, tenant.id, get_introspection_query())
    assert res.errors is None


async def test_the_limits_are_configurable(sessionmaker: Any, tenant: Any, account: None) -> None:
    strict = build_schema(QueryLimits(max_depth=2, max_aliases=1, max_tokens=40, max_cost=10))
    res = await run(sessionmaker, tenant.id, '{ account(accountNumber: "ACC") { name } }', strict)
    assert res.errors is None
    res = await run(sessionmaker, tenant.id, fan_out(1), strict)
    refused(res, "more than 2 fields deep")
    res = await run(sessionmaker, tenant.id, "{ a: __typename b: __typename }", strict)
    refused(res, "2 aliases")
    res = await run(sessionmaker, tenant.id, "{ " + "__typename " * 50 + "}", strict)
    refused(res, "more than 40 tokens")
    cheap = build_schema(QueryLimits(max_cost=10))
    query = "{ accounts(first: 20) { edges { node { name } } } }"
    refused(await run(sessionmaker, tenant.id, query, cheap), "at most 10 are allowed")


async def test_a_cached_text_is_limited_and_validated_as_when_it_was_new(
    sessionmaker: Any, tenant: Any, account: None
) -> None:
    """schema.pipeline keeps each text's document and validation errors: the second time a
    text comes, it gets the same answer as the first, and the limits that depend on the
    variables still run."""
    s = build_schema(QueryLimits(max_cost=1_000))
    bad = "{ account(accountNumber: $n) { nonexistentField } }"
    first = await run(sessionmaker, tenant.id, bad, s)
    again = await run(sessionmaker, tenant.id, bad, s)
    assert first.errors and again.errors
    assert [e.message for e in first.errors] == [e.message for e in again.errors]
    assert any("nonexistentField" in e.message for e in first.errors)

    paged = "query($k: Int) { accounts(first: $k) { edges { node { accountNumber } } } }"
    assert (await run(sessionmaker, tenant.id, paged, s, k=10)).errors is None
    refused(await run(sessionmaker, tenant.id, paged, s, k=5_000), "more than 1000 fields")
    assert (await run(sessionmaker, tenant.id, paged, s, k=10)).errors is None


def test_the_document_cache_is_bounded_and_keeps_no_refused_text() -> None:
    from graphql import GraphQLError

    from schema.pipeline import DocumentCache

    limits = QueryLimits(max_tokens=50)
    cache = DocumentCache(maxsize=2)
    for n in range(5):
        cache.parsed(f"{{ a{n} }}", limits)
    assert len(cache._entries) == 2
    assert list(cache._entries) == ["{ a3 }", "{ a4 }"]
    with pytest.raises(GraphQLError, match="more than 50 tokens"):
        cache.parsed("{ " + "a " * 60 + "}", limits)
    with pytest.raises(GraphQLError, match="Syntax Error"):
        cache.parsed("{ a", limits)
    assert list(cache._entries) == ["{ a3 }", "{ a4 }"]
