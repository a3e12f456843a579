"""Scalars with stricter parsing than strawberry's built-ins."""

from __future__ import annotations

import re
from decimal import Decimal, DecimalException
from typing import Any

from graphql import FloatValueNode, IntValueNode, StringValueNode, ValueNode
from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.types.scalar import ScalarDefinition

# ASCII digits, an optional sign, decimal point and exponent. Python's Decimal() also takes
# other scripts' digits (Arabic-Indic U+0661...), underscores ("1_000"), surrounding
# spaces, NaN and Infinity: none of them is money.
DECIMAL_PATTERN = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

JSON_NUMBER = (
    'Write decimal values as JSON strings, as in "12.50": a JSON number may lose digits '
    "(it is read as a binary float)."
)

DECIMAL_DESCRIPTION = (
    "A decimal number written as a string of ASCII digits with an optional sign, decimal "
    'point and exponent, as in "12.50". In variables it must be a JSON string: a JSON '
    "number is refused for every Decimal (amounts, prices and quantities alike), because "
    "parsers read JSON numbers as binary floats, which lose digits. In the document itself "
    'a literal is read from its exact text (amount: 12.50 or amount: "12.50"). Amounts and '
    "metrics are answered at the minor unit of their document's or account's currency "
    '("60.00" in USD, "60" in JPY, "60.000" in BHD and KWD), rounded ROUND_HALF_UP (half '
    "away from zero); prices, quantities and MRR keep their own precision and say so in "
    "their description. Never in exponent notation."
)


def parse_decimal(value: object) -> Decimal:
    """A Decimal from a string of ASCII digits; a JSON number (int or float) is refused."""
    if not isinstance(value, str):
        raise StrawberryInputCoercionError(JSON_NUMBER)
    return decimal_from_text(value)


def decimal_from_text(text: str) -> Decimal:
    """A Decimal from its exact text, or a coercion error saying how to write it."""
    if not DECIMAL_PATTERN.fullmatch(text):
        raise StrawberryInputCoercionError(
            f'Value cannot represent a Decimal: "{text}". Write it with the digits 0-9, '
            'an optional sign and a decimal point, as in "1234.50".'
        )
    try:
        return Decimal(text)
    except DecimalException:  # pragma: no cover - the pattern admits only valid text
        raise StrawberryInputCoercionError(f'Value cannot represent a Decimal: "{text}".') from None


def parse_decimal_literal(node: ValueNode, _variables: Any = None) -> Decimal:
    """A literal of the document: its text as written (12.50 keeps both places, no float)."""
    if isinstance(node, StringValueNode | IntValueNode | FloatValueNode):
        return decimal_from_text(node.value)
    raise StrawberryInputCoercionError(
        'Value cannot represent a Decimal: write it as a number or a string, as in "12.50".'
    )


def serialize_decimal(value: object) -> str:
    """Plain digits, never an exponent ("10", not "1E+1")."""
    return format(value, "f") if isinstance(value, Decimal) else str(value)


DecimalScalar = ScalarDefinition(
    name="Decimal",
    description=DECIMAL_DESCRIPTION,
    specified_by_url=None,
    serialize=serialize_decimal,
    parse_value=parse_decimal,
    parse_literal=parse_decimal_literal,
    origin=Decimal,
)

SCALAR_OVERRIDES: dict[object, ScalarDefinition] = {Decimal: DecimalScalar}
