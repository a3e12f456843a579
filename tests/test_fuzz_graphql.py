"""Every query and mutation fuzzed through the HTTP app (issue 11, item 9).

schemathesis loads the schema from the running ASGI app by introspection and generates, for
each root field of Query and Mutation, documents with arbitrary arguments: text with NUL and
other control characters, numbers at and beyond Int's range, decimals with huge exponents,
dates that do not exist. Whatever the input, the app must answer below 500 and never mask a
client's mistake as "Unexpected error.".

The budget is bounded: a few examples per operation (FUZZ_EXAMPLES, default 25), no shrinking
time limit beyond hypothesis's own, so the module runs in well under two minutes. The tenant is
seeded with an account, an invoice and a payment, and the String strategy draws their numbers
now and then, so generated operations reach past "not found" into the write paths.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
import schemathesis
from graphql import GraphQLSchema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.graphql import nodes
from schemathesis.python import asgi as schemathesis_asgi

from schema.root import schema as served
from server.app import create_app
from server.settings import Settings
from tests.helpers import Gql
from tests.test_bad_input import invoice_input
from tests.test_graphql_accounts import CREATE, INVOICE, PAYMENT, account_input

MASKED = "Unexpected error."
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))

# Identifiers that exist in the fuzzed tenant (filled in by the seed fixture; the strategies
# read the list when they draw, so one registration serves every test).
KNOWN: list[str] = ["ACC"]

WEIRD_TEXT = [
    "", " ", "\x00", "a\x00b", "\u0661\u0660\u0660", "1_000", "NaN", "Infinity", "-0",
    "1e309", "-1e309", "1e-400", "9" * 40, "0." + "0" * 40 + "1", "\ud7ff", "\U0010ffff",
    "' OR 1=1 --", "%s%s", "\\", '"', "x" * 5000,
]  # fmt: skip


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, drawn in proportion to its weight."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(min_value=0, max_value=len(table) - 1).flatmap(lambda i: table[i])


def _known() -> st.SearchStrategy[str]:
    return st.integers(min_value=0, max_value=10_000).map(lambda i: KNOWN[i % len(KNOWN)])


# Mostly plausible values, so that operations get past their first coercion error and into
# the resolvers; hostile values (NUL, other scripts' digits, huge exponents) a fair share.
TEXT = weighted(
    (4, _known()),
    (4, st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=40)),
    (1, st.sampled_from(WEIRD_TEXT)),
    (1, st.text(max_size=40)),
)

DECIMAL_TEXT = weighted(
    (4, st.decimals(min_value=-(10**6), max_value=10**6, places=2).map(str)),
    (2, st.from_regex(r"[+-]?[0-9]{1,40}(\.[0-9]{0,20})?([eE][+-]?[0-9]{1,6})?", fullmatch=True)),
    (1, st.decimals(allow_nan=True, allow_infinity=True).map(str)),
    (1, st.sampled_from(WEIRD_TEXT)),
    (1, st.text(max_size=12)),
)

DATE_TEXT = weighted(
    (6, st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 31)).map(str)),
    (1, st.dates().map(str)),
    (1, st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", fullmatch=True)),
    (1, st.sampled_from(["2026-02-30", "0000-01-01", "9999-12-31", "2026-13-01", "", "today"])),
    (1, st.text(max_size=12)),
)

DATETIME_TEXT = weighted(
    (4, st.datetimes().map(lambda d: d.isoformat())),
    (1, st.sampled_from(["2026-02-30T00:00:00", "2026-01-01T25:00:00Z", "", "now"])),
    (1, st.text(max_size=20)),
)

INTS = weighted(
    (4, st.integers(min_value=-5, max_value=400)),
    (1, st.integers(min_value=-(2**31), max_value=2**31 - 1)),
    (1, st.sampled_from([0, -1, 1, 2**31 - 1, -(2**31), 2**31, -(2**31) - 1, 10**6])),
).map(nodes.Int)

schemathesis.graphql.scalar("String", TEXT.map(nodes.String))
schemathesis.graphql.scalar("ID", TEXT.map(nodes.String))
schemathesis.graphql.scalar(
    "Decimal",
    st.one_of(
        DECIMAL_TEXT.map(nodes.String),
        st.integers().map(nodes.Int),
        st.floats(allow_nan=False, allow_infinity=False).map(nodes.Float),
    ),
)
schemathesis.graphql.scalar("Date", DATE_TEXT.map(nodes.String))
schemathesis.graphql.scalar("DateTime", DATETIME_TEXT.map(nodes.String))
schemathesis.graphql.scalar("Int", INTS)


@pytest.fixture(scope="module")
def fuzz_app(database_url: str, redis_url: str) -> Iterator[Any]:
    """One app for the module; schemathesis runs its lifespan on its own event loop."""
    app = create_app(
        Settings(
            database_url=database_url,
            redis_url=redis_url,
            run_worker=False,
            allow_anonymous=False,
            db_pool_size=4,
            pg_pool_size=4,
        )
    )
    try:
        yield app
    finally:
        schemathesis_asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
async def api_key(sessionmaker: Any) -> str:
    """The fuzzed tenant, seeded with documents the generated operations can find."""
    from billing.tenants import create_tenant

    async with sessionmaker.begin() as s:
        tenant_id, key = await create_tenant(s, f"fuzz-{secrets.token_hex(4)}")
    g = Gql(sessionmaker, tenant_id)
    await g(CREATE, input=account_input(accountNumber="ACC"))
    inv = await g(INVOICE, input=invoice_input())
    pay = await g(PAYMENT, input={"accountNumber": "ACC", "amount": "5.00",
                                  "effectiveDate": "2026-11-01"})  # fmt: skip
    KNOWN[:] = [
        "ACC",
        inv["createStandaloneInvoice"]["invoice"]["invoiceNumber"],
        pay["createPayment"]["payment"]["paymentNumber"],
    ]
    return str(key)


@pytest.fixture(scope="module")
def loaded(fuzz_app: Any, api_key: str) -> Any:
    """The schema as the app serves it, read by introspection over HTTP."""
    return schemathesis.graphql.from_asgi("/graphql", fuzz_app, headers=_auth(api_key))


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _root_fields() -> list[str]:
    gs: GraphQLSchema = served._schema
    assert gs.query_type is not None and gs.mutation_type is not None
    return [f"Query.{f}" for f in gs.query_type.fields] + [
        f"Mutation.{f}" for f in gs.mutation_type.fields
    ]


def test_every_query_and_mutation_is_fuzzed(loaded: Any) -> None:
    labels = {result.ok().label for result in loaded.get_all_operations()}
    assert labels == set(_root_fields())


def _strategy(operation: Any) -> st.SearchStrategy[Any]:
    """Mostly well-formed documents with hostile values, sometimes ill-typed arguments."""
    positive = operation.as_strategy(GenerationMode.POSITIVE)
    try:
        negative = operation.as_strategy(GenerationMode.NEGATIVE)
    except Exception:  # no argument to violate
        return positive
    return weighted((3, positive), (1, negative))


@pytest.mark.parametrize("label", _root_fields())
def test_no_input_answers_5xx_or_unexpected_error(loaded: Any, api_key: str, label: str) -> None:
    operation = loaded.find_operation_by_label(label)
    assert operation is not None, label

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_strategy(operation))
    def fuzz(case: Any) -> None:
        response = case.call(headers=_auth(api_key), timeout=30)
        sent = f"to this document:\n{case.body}\n"
        status = response.status_code
        assert status < 500, f"{label} answered {status} {sent}{response.text[:2000]}"
        body = response.json()
        for payload in body if isinstance(body, list) else [body]:
            for error in payload.get("errors") or []:
                assert error.get("message") != MASKED, f"{label} answered {error} {sent}"

    fuzz()
