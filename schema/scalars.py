"""Scalars with stricter parsing than strawberry's built-ins."""

from __future__ import annotations

import re
from decimal import Decimal, DecimalException

from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.types.scalar import ScalarDefinition

# ASCII digits, an optional sign, decimal point and exponent. Python's Decimal() also takes
# other scripts' digits (Arabic-Indic U+0661...), underscores ("1_000"), surrounding
# spaces, NaN and Infinity: none of them is money.
DECIMAL_PATTERN = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_decimal(value: object) -> Decimal:
    """A Decimal from a string of ASCII digits (numbers are read through their text)."""
    if isinstance(value, bool):
        raise StrawberryInputCoercionError(f'Value cannot represent a Decimal: "{value}".')
    text = value if isinstance(value, str) else str(value)
    if not DECIMAL_PATTERN.fullmatch(text):
        raise StrawberryInputCoercionError(
            f'Value cannot represent a Decimal: "{text}". Write it with the digits 0-9, '
            'an optional sign and a decimal point, as in "1234.50".'
        )
    try:
        return Decimal(text)
    except DecimalException:  # pragma: no cover - the pattern admits only valid text
        raise StrawberryInputCoercionError(f'Value cannot represent a Decimal: "{text}".') from None


DecimalScalar = ScalarDefinition(
    name="Decimal",
    description="Decimal (fixed-point)",
    specified_by_url=None,
    serialize=str,
    parse_value=parse_decimal,
    parse_literal=None,
    origin=Decimal,
)

SCALAR_OVERRIDES: dict[object, ScalarDefinition] = {Decimal: DecimalScalar}
