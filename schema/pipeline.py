"""What every operation goes through around graphql-core: ONE Strawberry extension.

In order: the token limit, parsing, the request limits and the NUL check
(``schema.limits``), validation, and on the way out the error policy
(``resolvers.errors.ErrorPolicy``: only unexpected errors are masked).

Why one extension and not Strawberry's ParserCache, ValidationCache and MaskErrors beside a
limiter: Strawberry builds a context manager per extension and hook on every request, and
with four extensions that machinery was about 14 % of the API's CPU on a plain read (py-spy,
BENCHMARKS.md). One text cache also serves parsing, validation and the token limit: a text
found there was counted and parsed before, so only new texts are lexed twice.

Beside it, the executor class (``Executor``): graphql-core's, without the reference cycle it
makes for every operation.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from graphql import DocumentNode, GraphQLError, GraphQLResolveInfoHelpers, parse
from graphql.pyutils import gather_with_cancel
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext, validate_document

from resolvers.errors import ErrorPolicy
from schema.limits import QueryLimits, check_operation, check_values, over_token_limit, too_complex


@dataclass
class _Parsed:
    """A query text as parsed, with its validation errors once validated."""

    document: DocumentNode
    rules: tuple[Any, ...] | None = None
    errors: list[GraphQLError] | None = None


class DocumentCache:
    """Query text -> parsed document and validation errors, least recently used out.

    Bounded, so a client sending ever new texts cannot grow the process; only texts within
    the token limit that parse are kept."""

    def __init__(self, maxsize: int = 1024) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[str, _Parsed] = OrderedDict()

    def parsed(self, query: str, limits: QueryLimits) -> _Parsed:
        entry = self._entries.get(query)
        if entry is not None:
            self._entries.move_to_end(query)
            return entry
        if over_token_limit(query, limits.max_tokens):
            raise too_complex(
                f"The query has more than {limits.max_tokens} tokens; at most "
                f"{limits.max_tokens} are allowed. Send values as variables."
            )
        entry = _Parsed(parse(query, max_tokens=limits.max_tokens))
        self._entries[query] = entry
        if len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
        return entry


class RequestPolicy(ErrorPolicy):
    """The limits, the caches and the error policy of every operation (HTTP and
    subscriptions). Strawberry makes one per request; the cache is the schema's."""

    def __init__(self, limits: QueryLimits, documents: DocumentCache) -> None:
        super().__init__()
        self.limits = limits
        self.documents = documents
        self._parsed: _Parsed | None = None

    def on_parse(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.query:  # without one, Strawberry answers "No GraphQL query found"
            self._parsed = self.documents.parsed(ctx.query, self.limits)
            ctx.graphql_document = self._parsed.document
        yield

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        document = ctx.graphql_document
        if document is not None:
            # The limits first: a refusal here is the request's only error.
            variables = ctx.variables or {}
            check_values(document, variables)
            schema = ctx.schema._schema
            check_operation(schema, document, ctx.operation_name, variables, self.limits)
            parsed = self._parsed
            rules = tuple(ctx.validation_rules)
            if parsed is None or parsed.document is not document:
                ctx.pre_execution_errors = validate_document(schema, document, rules)
            else:
                if parsed.rules != rules:
                    parsed.errors = validate_document(schema, document, rules)
                    parsed.rules = rules
                ctx.pre_execution_errors = parsed.errors
        yield

    def _process_result(self, result: object) -> None:
        # MaskErrors checks a runtime Protocol here, a slow isinstance on every request.
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = self._process_errors(errors)  # type: ignore[attr-defined]


async def _gather(values: Sequence[Awaitable[Any]]) -> list[Any]:
    return await gather_with_cancel(*values)


def _tracker(executor: weakref.ref[Executor]) -> Callable[[Sequence[Any]], None]:
    def track(values: Sequence[Any]) -> None:
        live = executor()
        if live is not None:  # resolvers run only while their executor does
            live.track_async_work(values)

    return track


class Executor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's graphql-core executor, whose resolver helpers hold it weakly.

    graphql-core stores ``GraphQLResolveInfoHelpers(self.gather_async_work,
    self.track_async_work)`` on the executor: bound methods of itself, a reference cycle
    that kept each operation's executor, context and request (about a hundred objects) for
    the garbage collector instead of freeing them when the answer was sent. The same
    helpers, minus the cycle."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.async_helpers = GraphQLResolveInfoHelpers(
            gather=_gather, track=_tracker(weakref.ref(self))
        )


__all__ = ["DocumentCache", "Executor", "RequestPolicy"]
