"""An order's input as typed data, decoded once from its plain form.

The plain form is the JSON-safe shape of CreateOrderInput (snake_case keys): what a
resolver makes of the GraphQL input, what an asynchronous order's job row keeps and what
idempotency keys hash. ``decode_order`` turns it into frozen dataclasses (dates and
Decimals parsed, the oneOf of each action resolved to its class) and checks the order's
shape; the rules that need the database or the catalog are checked where the order runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, ClassVar, Generic, TypeVar

from billing import accounts
from billing.errors import LimitExceeded, ValidationFailed
from db.statuses import TermType

TERM_TYPES = tuple(TermType)
CANCEL_POLICIES = ("END_OF_CURRENT_TERM", "END_OF_LAST_INVOICE_PERIOD", "SPECIFIC_DATE")
MAX_ACTIONS = 1000


# --------------------------------------------------------------------------- plain data


_KEEP_ALL = object()
# The field names of each dataclass met so far (None for other classes): dataclasses.fields()
# and asdict() cost more than the conversion itself on a 50-subscription order.
_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}


def _field_names(cls: type) -> tuple[str, ...] | None:
    try:
        return _FIELD_NAMES[cls]
    except KeyError:
        names = (
            tuple(f.name for f in dataclasses.fields(cls))
            if dataclasses.is_dataclass(cls)
            else None
        )
        _FIELD_NAMES[cls] = names
        return names


def jsonable(value: Any, *, drop: object = _KEEP_ALL) -> Any:
    """Input data as JSON-safe values: dataclasses as dicts of their fields (a field whose
    value is ``drop`` left out), Decimals and dates as strings, enums as their values."""
    names = _field_names(type(value))
    if names is not None:
        out = {}
        for name in names:
            field = getattr(value, name)
            if field is not drop:
                out[name] = jsonable(field, drop=drop)
        return out
    if isinstance(value, dict):
        return {k: jsonable(v, drop=drop) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, drop=drop) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def input_hash(data: Any) -> str:
    """A stable hash of an order input, for idempotency keys."""
    return hashlib.sha256(json.dumps(jsonable(data), sort_keys=True).encode()).hexdigest()


def parse_date(value: Any, path: list[str]) -> date | None:
    """A date of the input (a date or ISO text), None when absent; VALIDATION otherwise."""
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValidationFailed(f"{value!r} is not a date", path) from None


def parse_decimal(value: Any, path: list[str]) -> Decimal | None:
    """A number of the input (a Decimal or decimal text), None when absent; VALIDATION for a
    float or text that is no number. Its range is the business of whoever uses it."""
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        raise ValidationFailed("Amounts must be decimal strings, not floats", path)
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ValidationFailed(f"{value!r} is not a decimal number", path) from None


# --------------------------------------------------------------------------- the shapes
# Field names and order follow the GraphQL inputs, so an action's payload (its plain form,
# kept on its order_action row) is the input as given.


@dataclass(frozen=True)
class Terms:
    """TermsInput: what is not given keeps its default or current value."""

    term_type: str | None = None
    initial_term: int | None = None
    renewal_term: int | None = None
    auto_renew: bool | None = None


@dataclass(frozen=True)
class ChargeOverride:
    """ChargeOverrideInput: a catalog charge's price, quantity or period for this order."""

    product_rate_plan_charge_number: str | None
    price: Decimal | None = None
    quantity: Decimal | None = None
    billing_period: str | None = None


@dataclass(frozen=True)
class RatePlan:
    """RatePlanInput: a catalog rate plan for a subscription, with its overrides."""

    product_rate_plan_number: str | None
    charge_overrides: tuple[ChargeOverride, ...] = ()


@dataclass(frozen=True)
class CreateSubscription:
    """A new subscription on the order's account or the accounts it names."""

    key: ClassVar[str] = "create_subscription"
    action_type: ClassVar[str] = "CreateSubscription"
    subscription_number: str | None = None
    subscription_owner_account_number: str | None = None
    invoice_owner_account_number: str | None = None
    terms: Terms | None = None
    invoice_separately: bool = False
    rate_plans: tuple[RatePlan, ...] = ()
    effective_date: date | None = None


@dataclass(frozen=True)
class AddProduct:
    """A catalog rate plan added to a subscription."""

    key: ClassVar[str] = "add_product"
    action_type: ClassVar[str] = "AddProduct"
    product_rate_plan_number: str | None
    charge_overrides: tuple[ChargeOverride, ...] = ()
    effective_date: date | None = None


@dataclass(frozen=True)
class UpdateProduct:
    """A new price and/or quantity of one charge, from a date."""

    key: ClassVar[str] = "update_product"
    action_type: ClassVar[str] = "UpdateProduct"
    charge_number: str | None
    price: Decimal | None = None
    quantity: Decimal | None = None
    effective_date: date | None = None


@dataclass(frozen=True)
class RemoveProduct:
    """A rate plan ended on a date."""

    key: ClassVar[str] = "remove_product"
    action_type: ClassVar[str] = "RemoveProduct"
    product_rate_plan_number: str | None
    effective_date: date | None = None


@dataclass(frozen=True)
class Suspend:
    """An ACTIVE subscription suspended from a date."""

    key: ClassVar[str] = "suspend"
    action_type: ClassVar[str] = "Suspend"
    effective_date: date | None = None


@dataclass(frozen=True)
class Resume:
    """A SUSPENDED subscription resumed from a date."""

    key: ClassVar[str] = "resume"
    action_type: ClassVar[str] = "Resume"
    effective_date: date | None = None


@dataclass(frozen=True)
class CancelSubscription:
    """A subscription cancelled by a policy (or on a given date)."""

    key: ClassVar[str] = "cancel_subscription"
    action_type: ClassVar[str] = "CancelSubscription"
    cancellation_policy: str | None = None
    cancellation_effective_date: date | None = None
    effective_date: date | None = None


@dataclass(frozen=True)
class RenewSubscription:
    """A TERMED subscription's next term."""

    key: ClassVar[str] = "renew_subscription"
    action_type: ClassVar[str] = "RenewSubscription"
    effective_date: date | None = None


@dataclass(frozen=True)
class TermsAndConditions:
    """New terms of a subscription."""

    key: ClassVar[str] = "terms_and_conditions"
    action_type: ClassVar[str] = "TermsAndConditions"
    term_type: str | None = None
    initial_term: int | None = None
    renewal_term: int | None = None
    auto_renew: bool | None = None
    effective_date: date | None = None


@dataclass(frozen=True)
class OwnerTransfer:
    """A subscription moved to another owner and/or invoice owner."""

    key: ClassVar[str] = "owner_transfer"
    action_type: ClassVar[str] = "OwnerTransfer"
    destination_account_number: str | None = None
    destination_invoice_account_number: str | None = None
    effective_date: date | None = None


ActionInput = (
    CreateSubscription
    | AddProduct
    | UpdateProduct
    | RemoveProduct
    | Suspend
    | Resume
    | CancelSubscription
    | RenewSubscription
    | TermsAndConditions
    | OwnerTransfer
)
B = TypeVar("B", bound=ActionInput)


@dataclass(frozen=True)
class Action(Generic[B]):
    """One action of an order: its input, the date it takes effect (the order's date when
    the input gives none) and where it sits in the input (for errors)."""

    body: B
    effective_date: date
    path: list[str]


@dataclass(frozen=True)
class OrderSubscription:
    """The actions of an order on one subscription; its number is None for a new
    subscription that draws one."""

    subscription_number: str | None
    actions: tuple[Action[Any], ...]
    path: list[str]

    @property
    def creates(self) -> bool:
        """Whether the group starts by creating its subscription."""
        return isinstance(self.actions[0].body, CreateSubscription)


@dataclass(frozen=True)
class ProcessingOptions:
    """runBilling and its options."""

    run_billing: bool = False
    target_date: date | None = None
    generate_draft_invoice: bool = False


@dataclass(frozen=True)
class OrderInput:
    """A whole order, shape checked: one of an existing account and a new one, at least one
    subscription, each with its actions."""

    order_date: date
    subscriptions: tuple[OrderSubscription, ...]
    order_number: str | None = None
    existing_account_number: str | None = None
    new_account: accounts.AccountData | None = None
    processing_options: ProcessingOptions = ProcessingOptions()


def payload(body: ActionInput) -> dict[str, Any]:
    """An action's input in its plain form, as its order_action row keeps it."""
    out: dict[str, Any] = jsonable(body)
    return out


# --------------------------------------------------------------------------- decoding

Plain = Mapping[str, Any]


def _terms(raw: Plain | None) -> Terms | None:
    if raw is None:
        return None
    return Terms(
        term_type=raw.get("term_type"),
        initial_term=raw.get("initial_term"),
        renewal_term=raw.get("renewal_term"),
        auto_renew=raw.get("auto_renew"),
    )


def _overrides(raw: list[Plain] | None, path: list[str]) -> tuple[ChargeOverride, ...]:
    out = []
    for i, o in enumerate(raw or []):
        opath = [*path, "chargeOverrides", str(i)]
        out.append(
            ChargeOverride(
                product_rate_plan_charge_number=o.get("product_rate_plan_charge_number"),
                price=parse_decimal(o.get("price"), [*opath, "price"]),
                quantity=parse_decimal(o.get("quantity"), [*opath, "quantity"]),
                billing_period=o.get("billing_period"),
            )
        )
    return tuple(out)


def _create_subscription(b: Plain, path: list[str], eff: date | None) -> CreateSubscription:
    return CreateSubscription(
        subscription_number=b.get("subscription_number"),
        subscription_owner_account_number=b.get("subscription_owner_account_number"),
        invoice_owner_account_number=b.get("invoice_owner_account_number"),
        terms=_terms(b.get("terms")),
        invoice_separately=bool(b.get("invoice_separately")),
        rate_plans=tuple(
            RatePlan(
                product_rate_plan_number=rp.get("product_rate_plan_number"),
                charge_overrides=_overrides(
                    rp.get("charge_overrides"), [*path, "ratePlans", str(i)]
                ),
            )
            for i, rp in enumerate(b.get("rate_plans") or [])
        ),
        effective_date=eff,
    )


def _add_product(b: Plain, path: list[str], eff: date | None) -> AddProduct:
    return AddProduct(
        product_rate_plan_number=b.get("product_rate_plan_number"),
        charge_overrides=_overrides(b.get("charge_overrides"), path),
        effective_date=eff,
    )


def _update_product(b: Plain, path: list[str], eff: date | None) -> UpdateProduct:
    return UpdateProduct(
        charge_number=b.get("charge_number"),
        price=parse_decimal(b.get("price"), [*path, "price"]),
        quantity=parse_decimal(b.get("quantity"), [*path, "quantity"]),
        effective_date=eff,
    )


def _remove_product(b: Plain, path: list[str], eff: date | None) -> RemoveProduct:
    return RemoveProduct(
        product_rate_plan_number=b.get("product_rate_plan_number"), effective_date=eff
    )


def _cancel_subscription(b: Plain, path: list[str], eff: date | None) -> CancelSubscription:
    return CancelSubscription(
        cancellation_policy=b.get("cancellation_policy"),
        cancellation_effective_date=parse_date(
            b.get("cancellation_effective_date"), [*path, "cancellationEffectiveDate"]
        ),
        effective_date=eff,
    )


def _terms_and_conditions(b: Plain, path: list[str], eff: date | None) -> TermsAndConditions:
    return TermsAndConditions(
        term_type=b.get("term_type"),
        initial_term=b.get("initial_term"),
        renewal_term=b.get("renewal_term"),
        auto_renew=b.get("auto_renew"),
        effective_date=eff,
    )


def _owner_transfer(b: Plain, path: list[str], eff: date | None) -> OwnerTransfer:
    return OwnerTransfer(
        destination_account_number=b.get("destination_account_number"),
        destination_invoice_account_number=b.get("destination_invoice_account_number"),
        effective_date=eff,
    )


# The input key of each action (OrderActionInput's oneOf) and how its body is read.
DECODERS: dict[str, Callable[[Plain, list[str], date | None], ActionInput]] = {
    CreateSubscription.key: _create_subscription,
    AddProduct.key: _add_product,
    UpdateProduct.key: _update_product,
    RemoveProduct.key: _remove_product,
    Suspend.key: lambda b, path, eff: Suspend(effective_date=eff),
    Resume.key: lambda b, path, eff: Resume(effective_date=eff),
    CancelSubscription.key: _cancel_subscription,
    RenewSubscription.key: lambda b, path, eff: RenewSubscription(effective_date=eff),
    TermsAndConditions.key: _terms_and_conditions,
    OwnerTransfer.key: _owner_transfer,
}


_CONTACT_KEYS = {
    "first_name": "firstName", "last_name": "lastName", "work_email": "workEmail",
    "work_phone": "workPhone", "postal_code": "postalCode",
}  # fmt: skip


def _contact(raw: Plain | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    return {_CONTACT_KEYS.get(k, k): v for k, v in raw.items() if v is not None}


def account_data(d: Plain) -> accounts.AccountData:
    """CreateAccountInput as plain data to AccountData."""
    return accounts.AccountData(
        name=d.get("name") or "",
        currency=d.get("currency") or "",
        bill_to=_contact(d.get("bill_to_contact")) or {},
        sold_to=_contact(d.get("sold_to_contact")),
        account_number=d.get("account_number"),
        bill_cycle_day=d.get("bill_cycle_day") or 1,
        payment_term=d.get("payment_term") or "DUE_UPON_RECEIPT",
        batch=d.get("batch") or "Batch1",
        partner_account=bool(d.get("partner_account")),
    )


def decode_order(data: Plain) -> OrderInput:
    """An order's plain form as an OrderInput: an orderDate, exactly one of
    existingAccountNumber and newAccount, and its subscriptions' actions checked for shape."""
    order_date = parse_date(data.get("order_date"), ["orderDate"])
    if order_date is None:
        raise ValidationFailed("orderDate is required", ["orderDate"])
    existing, new = data.get("existing_account_number"), data.get("new_account")
    if (existing is None) == (new is None):
        raise ValidationFailed(
            "Give exactly one of existingAccountNumber and newAccount", ["existingAccountNumber"]
        )
    subscriptions = decode_subscriptions(data, order_date)
    options = data.get("processing_options") or {}
    return OrderInput(
        order_date=order_date,
        subscriptions=subscriptions,
        order_number=data.get("order_number"),
        existing_account_number=existing,
        new_account=account_data(new) if new is not None else None,
        processing_options=ProcessingOptions(
            run_billing=bool(options.get("run_billing")),
            target_date=parse_date(options.get("target_date"), ["processingOptions", "targetDate"]),
            generate_draft_invoice=bool(options.get("generate_draft_invoice")),
        ),
    )


def decode_subscriptions(data: Plain, order_date: date) -> tuple[OrderSubscription, ...]:
    """The order's subscriptions and their actions: exactly one action set in each
    OrderActionInput, createSubscription first and once, each subscription named once, at
    most MAX_ACTIONS actions."""
    raw = data.get("subscriptions") or []
    if not raw:
        raise ValidationFailed("An order needs at least one subscription", ["subscriptions"])
    groups: list[OrderSubscription] = []
    count = 0
    seen: set[str] = set()
    for gi, g in enumerate(raw):
        gpath = ["subscriptions", str(gi)]
        acts = g.get("order_actions") or []
        if not acts:
            raise ValidationFailed(
                "Each subscription needs at least one order action", [*gpath, "orderActions"]
            )
        actions: list[Action[Any]] = []
        for ai, a in enumerate(acts):
            path = [*gpath, "orderActions", str(ai)]
            chosen = [(k, v) for k, v in (a or {}).items() if k in DECODERS and v is not None]
            if len(chosen) != 1:
                raise ValidationFailed(
                    "Exactly one action must be set in each OrderActionInput", path
                )
            key, body = chosen[0]
            given = parse_date(body.get("effective_date"), [*path, "effectiveDate"])
            actions.append(Action(DECODERS[key](body, path, given), given or order_date, path))
        count += len(actions)
        creates = [i for i, a in enumerate(actions) if isinstance(a.body, CreateSubscription)]
        if creates and creates != [0]:
            raise ValidationFailed(
                "createSubscription must be the first action of its subscription, once", gpath
            )
        number = g.get("subscription_number")
        if creates:
            first = actions[0].body
            assert isinstance(first, CreateSubscription)
            given_number = first.subscription_number
            if number and given_number and number != given_number:
                raise ValidationFailed(
                    "Two different subscription numbers are given", [*gpath, "subscriptionNumber"]
                )
            number = number or given_number
        elif not number:
            raise ValidationFailed(
                "subscriptionNumber is required for an existing subscription",
                [*gpath, "subscriptionNumber"],
            )
        if number:
            if number in seen:
                raise ValidationFailed(
                    f"Subscription {number} appears twice in the order",
                    [*gpath, "subscriptionNumber"],
                )
            seen.add(number)
        groups.append(OrderSubscription(number, tuple(actions), gpath))
    if count > MAX_ACTIONS:
        raise LimitExceeded(f"An order may carry at most {MAX_ACTIONS} actions", ["subscriptions"])
    return tuple(groups)
