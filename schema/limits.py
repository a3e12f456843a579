"""Refuse expensive or malformed requests before they run: tokens, depth, aliases, cost, NUL.

Every check here runs before graphql-core validates or executes the document, in time
linear in the size of the request (bounded by the token limit), and answers a GraphQL error
whose ``extensions.code`` says why: QUERY_TOO_COMPLEX for the limits, VALIDATION for text
holding a NUL character (PostgreSQL cannot store it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    Source,
    StringValueNode,
    TokenKind,
    ValueNode,
    VariableNode,
    get_named_type,
)
from graphql.language import Lexer

TOO_COMPLEX = "QUERY_TOO_COMPLEX"
NUL = "\x00"


@dataclass(frozen=True)
class QueryLimits:
    """What one operation may ask for. ``default_page`` is what a connection without
    ``first`` returns, so the cost counts it."""

    max_tokens: int = 20_000
    max_depth: int = 15
    max_aliases: int = 100
    max_cost: int = 100_000
    default_page: int = 50


def too_complex(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": TOO_COMPLEX, "retryable": False})


def over_token_limit(query: str, max_tokens: int) -> bool:
    """True when the query has more than ``max_tokens`` tokens; stops counting there, so a
    refused text costs at most the limit's worth of lexing. (schema.pipeline.DocumentCache
    calls it only for texts it has not parsed before.)"""
    lexer = Lexer(Source(query))
    count = 0
    try:
        while lexer.advance().kind != TokenKind.EOF:
            count += 1
            if count > max_tokens:
                return True
    except GraphQLError:  # a syntax error: the parser reports it
        return False
    return False


class _Walk:
    """Depth and cost of one operation, through fragments, stopping at the limits."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any],
        limits: QueryLimits,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.limits = limits
        self.cost = 0
        self.depth = 0

    def page_size(self, node: FieldNode, has_first: bool) -> int:
        if not has_first:
            return 1
        for arg in node.arguments or ():
            if arg.name.value != "first":
                continue
            value = arg.value
            if isinstance(value, IntValueNode):
                return max(int(value.value), 1)
            if isinstance(value, VariableNode):
                v = self.variables.get(value.name.value)
                if isinstance(v, int) and not isinstance(v, bool):
                    return max(v, 1)
        return self.limits.default_page

    def selection_set(
        self,
        sel: SelectionSetNode | None,
        parent: Any,
        scale: tuple[int, int],
        depth: int,
        seen: frozenset[str],
    ) -> None:
        """``scale`` is (how many times this selection runs, the page size its list
        fields return: a connection's ``first`` for its ``edges``)."""
        if sel is None:
            return
        for node in sel.selections:
            if isinstance(node, FieldNode):
                self.field(node, parent, scale, depth, seen)
            elif isinstance(node, InlineFragmentNode):
                cond = node.type_condition
                target = self.schema.get_type(cond.name.value) if cond else parent
                self.selection_set(node.selection_set, target, scale, depth, seen)
            elif isinstance(node, FragmentSpreadNode):
                name = node.name.value
                frag = self.fragments.get(name)
                if frag is None or name in seen:  # validation reports these
                    continue
                target = self.schema.get_type(frag.type_condition.name.value)
                self.selection_set(frag.selection_set, target, scale, depth, seen | {name})

    def field(
        self,
        node: FieldNode,
        parent: Any,
        scale: tuple[int, int],
        depth: int,
        seen: frozenset[str],
    ) -> None:
        name = node.name.value
        if name.startswith("__"):  # introspection is cheap and has a fixed shape
            return
        times, page = scale
        depth += 1
        self.depth = max(self.depth, depth)
        self.cost += times
        if self.depth > self.limits.max_depth or self.cost > self.limits.max_cost:
            raise _Stop
        fields = getattr(parent, "fields", None)
        definition = fields.get(name) if isinstance(fields, Mapping) else None
        if definition is None or node.selection_set is None:
            return
        of_type = definition.type
        if isinstance(of_type, GraphQLNonNull):
            of_type = of_type.of_type
        if isinstance(of_type, GraphQLList):
            times *= page
        child_page = self.page_size(node, "first" in definition.args)
        self.selection_set(
            node.selection_set, get_named_type(definition.type), (times, child_page), depth, seen
        )


class _Stop(Exception):
    """A limit was passed: the walk need not go on."""


def check_operation(
    schema: GraphQLSchema,
    document: Any,
    operation_name: str | None,
    variables: Mapping[str, Any],
    limits: QueryLimits,
) -> None:
    """Raise a QUERY_TOO_COMPLEX error when the document passes a limit."""
    fragments: dict[str, FragmentDefinitionNode] = {}
    operations: list[OperationDefinitionNode] = []
    aliases = 0
    for definition in document.definitions:
        if isinstance(definition, FragmentDefinitionNode):
            fragments[definition.name.value] = definition
        elif isinstance(definition, OperationDefinitionNode):
            operations.append(definition)
        aliases += sum(1 for f in _fields(getattr(definition, "selection_set", None)) if f.alias)
    if aliases > limits.max_aliases:
        raise too_complex(
            f"The query uses {aliases} aliases; at most {limits.max_aliases} are allowed."
        )
    for op in operations:
        if operation_name is not None and (op.name is None or op.name.value != operation_name):
            continue
        root: GraphQLObjectType | None = schema.get_root_type(op.operation)
        walk = _Walk(schema, fragments, variables, limits)
        try:
            walk.selection_set(op.selection_set, root, (1, 1), 0, frozenset())
        except _Stop:
            pass
        if walk.depth > limits.max_depth:
            raise too_complex(
                f"The query is more than {limits.max_depth} fields deep; at most "
                f"{limits.max_depth} are allowed. Ask for nested objects in separate queries."
            )
        if walk.cost > limits.max_cost:
            raise too_complex(
                f"The query could return more than {limits.max_cost} fields (page sizes "
                f"multiplied through the nesting; a connection without `first` counts "
                f"{limits.default_page}); at most {limits.max_cost} are allowed. Ask for "
                "smaller pages or fewer nested connections."
            )


def _fields(sel: SelectionSetNode | None) -> Iterator[FieldNode]:
    if sel is None:
        return
    for node in sel.selections:
        if isinstance(node, FieldNode):
            yield node
        yield from _fields(getattr(node, "selection_set", None))


BLANK_KEY = "idempotencyKey"


def _bad_value(value: Any, path: str) -> tuple[str, str] | None:
    """(path, problem) of the first string holding a NUL, or of a blank idempotency key."""
    found = _bad_part(value)
    if found is None:
        return None
    parts, problem = found
    return path + "".join(f".{p}" for p in reversed(parts)), problem


def _bad_part(value: Any) -> tuple[list[object], str] | None:
    """The reversed path below ``value`` to the first bad string, and its problem. The path
    is built only on the way out of a find: a bulk call's variables hold thousands of
    values, and every one is walked on every request."""
    if type(value) is str:  # JSON gives exact types: no isinstance on ABCs per value
        return ([], "nul") if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if key == BLANK_KEY and isinstance(item, str) and not item.strip():
                return [key], "blank"
            if item is not None and (found := _bad_part(item)) is not None:
                found[0].append(key)
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if (found := _bad_part(item)) is not None:
                found[0].append(index)
                return found
    elif isinstance(value, str):
        return ([], "nul") if NUL in value else None
    return None


def _literal(node: ValueNode) -> Any:
    """The strings, lists and objects of a literal, as plain data (variables: None)."""
    if isinstance(node, StringValueNode):
        return node.value
    if isinstance(node, ListValueNode):
        return [_literal(v) for v in node.values]
    if isinstance(node, ObjectValueNode):
        return {f.name.value: _literal(f.value) for f in node.fields}
    return None


def check_values(document: Any, variables: Mapping[str, Any] | None) -> None:
    """Raise a VALIDATION error when a variable or literal string holds a NUL character
    (PostgreSQL cannot store it), or an idempotency key is empty or blank (it would be
    taken for no key, and the repeats would write again)."""
    found = _bad_value(dict(variables or {}), "")
    if found is None:
        for definition in document.definitions:
            for f in _fields(getattr(definition, "selection_set", None)):
                args = {a.name.value: _literal(a.value) for a in f.arguments or ()}
                if (found := _bad_value(args, f".{f.name.value}")) is not None:
                    break
            if found is not None:
                break
    if found is None:
        return
    where, problem = found
    message = (
        "Text must not contain the NUL character (U+0000)"
        if problem == "nul"
        else "An idempotency key must not be empty or blank (leave it out for none)"
    )
    raise GraphQLError(
        f"{message}: at '{where[1:]}'.", extensions={"code": "VALIDATION", "retryable": False}
    )


__all__ = [
    "TOO_COMPLEX",
    "QueryLimits",
    "check_operation",
    "check_values",
    "over_token_limit",
    "too_complex",
]
