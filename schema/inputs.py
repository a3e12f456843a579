"""Input objects built by a converter compiled once per type.

Strawberry turns each argument's input value (already checked and coerced by graphql-core)
into its input dataclasses with a generic walk that inspects every field's type on every
request: generics, optionals, lazy types, enums and name conversion, about 0.1 ms per input
object. Strawberry lets a type build its own value (`StrawberryObjectDefinition.from_input`,
the hook its pydantic integration uses); here that hook is a converter that did the
inspection once, when first used, and then only copies fields: the same objects, built the
same way (fields the client left out keep their defaults, nulls stay None, UNSET stays
UNSET), without the per-request walk.

Only the shapes this schema uses are compiled: optional, list, nested input objects, and
leaves (scalars and enums, which graphql-core has already coerced). Anything else keeps
Strawberry's own conversion.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from graphql import GraphQLInputObjectType, GraphQLSchema
from strawberry.types.arguments import InputContext
from strawberry.types.base import (
    StrawberryList,
    StrawberryMaybe,
    StrawberryObjectDefinition,
    StrawberryOptional,
    has_object_definition,
)
from strawberry.types.enum import StrawberryEnumDefinition, has_enum_definition
from strawberry.types.lazy_type import LazyType
from strawberry.types.unset import UNSET

Convert = Callable[[Any], Any]
DEFINITION_BACKREF = "strawberry-definition"


class NotCompiled(Exception):
    """A type shape this module leaves to Strawberry."""


def _identity(value: Any) -> Any:
    return value


def _converter(type_: Any, name_of: Callable[[Any], str]) -> Convert:
    """A function converting an input value of ``type_`` (None and UNSET pass through)."""
    if isinstance(type_, StrawberryMaybe):
        raise NotCompiled("Maybe")
    if isinstance(type_, StrawberryOptional):
        return _converter(type_.of_type, name_of)
    if isinstance(type_, LazyType):
        return _converter(type_.resolve_type(), name_of)
    if isinstance(type_, StrawberryList):
        item = _converter(type_.of_type, name_of)
        if item is _identity:
            # Copied: graphql-core hands every request the same default list object.
            return lambda v: v if v is None or v is UNSET else list(v)
        return lambda v: v if v is None or v is UNSET else [item(x) for x in v]
    if isinstance(type_, StrawberryEnumDefinition) or has_enum_definition(type_):
        return _identity
    if has_object_definition(type_):
        definition: StrawberryObjectDefinition = type_.__strawberry_definition__
        if not definition.is_input:
            raise NotCompiled(f"{definition.name} is not an input")
        build = _object_builder(type_, definition, name_of)
        return lambda v: v if v is None or v is UNSET else build(v)
    return _identity  # a scalar: graphql-core's coercion made the Python value


def _object_builder(
    cls: type, definition: StrawberryObjectDefinition, name_of: Callable[[Any], str]
) -> Callable[[Mapping[str, Any]], Any]:
    fields: list[tuple[str, str, Convert]] = []
    required_none: dict[str, None] = {}
    for field in definition.fields:
        python_name = field.python_name
        fields.append(
            (
                name_of(field),
                python_name,
                _converter(field.resolve_type(type_definition=definition), name_of),
            )
        )
        if field.default_value is dataclasses.MISSING and (
            field.default_factory is dataclasses.MISSING
        ):
            # As Strawberry does: graphql-core has checked the required fields are there;
            # a nullable field without a default starts as None.
            required_none[python_name] = None

    def build(value: Mapping[str, Any]) -> Any:
        kwargs: dict[str, Any] = dict(required_none)
        for graphql_name, python_name, convert in fields:
            if graphql_name in value:
                kwargs[python_name] = convert(value[graphql_name])
        return cls(**kwargs)

    return build


def install(schema: GraphQLSchema, name_of: Callable[[Any], str]) -> list[str]:
    """Give every input object type of ``schema`` a compiled converter (Strawberry's
    from_input hook). ``name_of`` is the schema's name converter for fields. Returns the
    names of the types that keep Strawberry's own conversion."""
    kept: list[str] = []
    for gql_type in schema.type_map.values():
        if not isinstance(gql_type, GraphQLInputObjectType):
            continue
        definition = (gql_type.extensions or {}).get(DEFINITION_BACKREF)
        if not isinstance(definition, StrawberryObjectDefinition) or definition.from_input:
            continue
        cls = definition.origin
        try:
            build = _object_builder(cls, definition, name_of)
        except NotCompiled:
            kept.append(gql_type.name)
            continue

        def from_input(
            type_: type, value: Mapping[str, Any], context: InputContext, build: Any = build
        ) -> Any:
            return build(value)

        definition.from_input = from_input
    return kept
