"""Money: Decimal end to end, quantized to the currency's minor unit, ROUND_HALF_UP.

What the API answers is shaped here too: amounts at the currency's minor unit
(:func:`money_out`), figures finer than money (prices, quantities, MRR) at their own
precision without needless zeros (:func:`exact_out`)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from billing.errors import ValidationFailed

#: Minor-unit places of the currencies the service accepts (ISO 4217).
MINOR_UNITS: dict[str, int] = {
    "USD": 2, "EUR": 2, "GBP": 2, "CAD": 2, "AUD": 2, "CHF": 2, "CNY": 2, "INR": 2,
    "SEK": 2, "NOK": 2, "DKK": 2, "NZD": 2, "SGD": 2, "HKD": 2, "MXN": 2, "BRL": 2,
    "PLN": 2, "ZAR": 2, "JPY": 0, "KRW": 0, "BHD": 3, "KWD": 3,
}  # fmt: skip

ZERO = Decimal(0)
#: The one rounding rule: half away from zero (2.345 USD -> 2.35, -2.345 -> -2.35).
ROUNDING = ROUND_HALF_UP
#: MRR is a monthly share of a charge (an annual 100.00 is 8.333333 a month): finer than money.
MRR_PLACES = Decimal("0.000001")
#: Unit prices and quantities may be finer than the currency's minor unit.
PRICE_PLACES = Decimal("0.0001")
#: Bounds that keep one value inside its NUMERIC(20, 4) column (16 integer digits).
MAX_AMOUNT = Decimal("1e15")
MAX_QUANTITY = Decimal("1e12")
MAX_PRICE = Decimal("1e12")


def check_currency(currency: str, field: list[str] | None = None) -> str:
    """A supported ISO currency code, upper-cased."""
    code = (currency or "").strip().upper()
    if code not in MINOR_UNITS:
        raise ValidationFailed(f"Unsupported currency {currency!r}", field or ["currency"])
    return code


#: The smallest amount of each currency, made once: every amount in and out is quantized to it.
UNITS: dict[str, Decimal] = {c: Decimal(1).scaleb(-places) for c, places in MINOR_UNITS.items()}


def unit(currency: str) -> Decimal:
    """The smallest amount of the currency (0.01 for USD, 1 for JPY)."""
    return UNITS[currency]


def quantize(amount: Decimal, currency: str) -> Decimal:
    """Round to the currency's minor unit with the house rule (half up)."""
    return amount.quantize(unit(currency), rounding=ROUNDING)


def money_out(amount: Decimal, currency: str) -> Decimal:
    """An amount or metric as the API answers it: at the currency's minor unit, rounded with
    ROUNDING ("60.00" in USD, "60" in JPY, "60.000" in BHD)."""
    return quantize(amount, currency)


def exact_out(value: Decimal) -> Decimal:
    """A price, quantity or MRR as the API answers it: every significant place kept, trailing
    zeros dropped, and a whole number never in exponent form ("10", not "1E+1")."""
    d = value.normalize()
    exponent = d.as_tuple().exponent
    assert isinstance(exponent, int)
    return d.quantize(Decimal(1)) if exponent > 0 else d


def to_decimal(value: object, field: list[str]) -> Decimal:
    """Parse a decimal, refusing floats, NaN and infinities."""
    if isinstance(value, float):
        raise ValidationFailed("Amounts must be decimal strings, not floats", field)
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ValidationFailed(f"{value!r} is not a decimal number", field) from None
    if not d.is_finite():
        raise ValidationFailed("Amounts must be finite", field)
    return d


def check_amount(
    value: object, currency: str, field: list[str], *, allow_zero: bool = False
) -> Decimal:
    """A positive amount with at most the currency's minor-unit places."""
    d = to_decimal(value, field)
    if d < 0 or (d == 0 and not allow_zero):
        raise ValidationFailed(
            f"Amount must be {'zero or more' if allow_zero else 'positive'}, got {d}", field
        )
    if d >= MAX_AMOUNT:  # before any quantize: a huge exponent makes quantize raise
        raise ValidationFailed(f"Amount must be less than {MAX_AMOUNT:,.0f}", field)
    exponent = d.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > MINOR_UNITS[currency] and d != d.quantize(unit(currency)):
        raise ValidationFailed(
            f"{d} has more than {MINOR_UNITS[currency]} decimal places for {currency}", field
        )
    return quantize(d, currency)


def check_quantity(value: object, field: list[str]) -> Decimal:
    """A positive quantity with at most four decimal places."""
    d = to_decimal(value, field)
    if d <= 0:
        raise ValidationFailed("Quantity must be positive", field)
    if d >= MAX_QUANTITY:  # before quantize, which raises on a huge exponent ("1e309")
        raise ValidationFailed(f"Quantity must be less than {MAX_QUANTITY:,.0f}", field)
    if d != d.quantize(PRICE_PLACES):
        raise ValidationFailed("Quantity has more than 4 decimal places", field)
    return d


def check_price(value: object, field: list[str]) -> Decimal:
    """A price of zero or more with at most four decimal places (unit prices may be finer than
    the currency; amounts never are)."""
    d = to_decimal(value, field)
    if d < 0:
        raise ValidationFailed("Price must not be negative", field)
    if d >= MAX_PRICE:  # before quantize, which raises on a huge exponent ("1e309")
        raise ValidationFailed(f"Price must be less than {MAX_PRICE:,.0f}", field)
    if d != d.quantize(PRICE_PLACES):
        raise ValidationFailed("Price has more than 4 decimal places", field)
    return d
