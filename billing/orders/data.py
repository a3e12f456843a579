"""An order's input as plain data: the shape of CreateOrderInput, checked once.

An order arrives as plain data (snake_case keys), so the synchronous mutation and the
asynchronous job share one path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import Enum
from typing import Any

from billing import accounts
from billing.errors import LimitExceeded, ValidationFailed

ACTION_TYPES: dict[str, str] = {
    "create_subscription": "CreateSubscription",
    "add_product": "AddProduct",
    "update_product": "UpdateProduct",
    "remove_product": "RemoveProduct",
    "suspend": "Suspend",
    "resume": "Resume",
    "cancel_subscription": "CancelSubscription",
    "renew_subscription": "RenewSubscription",
    "terms_and_conditions": "TermsAndConditions",
    "owner_transfer": "OwnerTransfer",
}
TERM_TYPES = ("TERMED", "EVERGREEN")
CANCEL_POLICIES = ("END_OF_CURRENT_TERM", "END_OF_LAST_INVOICE_PERIOD", "SPECIFIC_DATE")
MAX_ACTIONS = 1000


# --------------------------------------------------------------------------- plain data


def jsonable(value: Any) -> Any:
    """Input data as JSON-safe values (Decimal and dates as strings, enums as values)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal | date):
        return str(value) if isinstance(value, Decimal) else value.isoformat()
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


_CONTACT_KEYS = {
    "first_name": "firstName", "last_name": "lastName", "work_email": "workEmail",
    "work_phone": "workPhone", "postal_code": "postalCode",
}  # fmt: skip


def _contact(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    return {_CONTACT_KEYS.get(k, k): v for k, v in raw.items() if v is not None}


def account_data(d: dict[str, Any]) -> accounts.AccountData:
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


@dataclass
class Action:
    kind: str
    body: dict[str, Any]
    effective_date: date
    path: list[str]


@dataclass
class Group:
    subscription_number: str | None
    actions: list[Action]
    path: list[str]
    sub: dict[str, Any] | None = None


def parse_groups(data: dict[str, Any], order_date: date) -> list[Group]:
    """The order's subscriptions and their actions, checked for shape (oneOf included)."""
    raw = data.get("subscriptions") or []
    if not raw:
        raise ValidationFailed("An order needs at least one subscription", ["subscriptions"])
    groups: list[Group] = []
    count = 0
    seen: set[str] = set()
    for gi, g in enumerate(raw):
        gpath = ["subscriptions", str(gi)]
        acts = g.get("order_actions") or []
        if not acts:
            raise ValidationFailed(
                "Each subscription needs at least one order action", [*gpath, "orderActions"]
            )
        actions = []
        for ai, a in enumerate(acts):
            path = [*gpath, "orderActions", str(ai)]
            chosen = [(k, v) for k, v in (a or {}).items() if k in ACTION_TYPES and v is not None]
            if len(chosen) != 1:
                raise ValidationFailed(
                    "Exactly one action must be set in each OrderActionInput", path
                )
            kind, body = chosen[0]
            eff = parse_date(body.get("effective_date"), [*path, "effectiveDate"]) or order_date
            actions.append(Action(kind, dict(body), eff, path))
        count += len(actions)
        creates = [i for i, a in enumerate(actions) if a.kind == "create_subscription"]
        if creates and creates != [0]:
            raise ValidationFailed(
                "createSubscription must be the first action of its subscription, once", gpath
            )
        number = g.get("subscription_number")
        if creates:
            given = actions[0].body.get("subscription_number")
            if number and given and number != given:
                raise ValidationFailed(
                    "Two different subscription numbers are given", [*gpath, "subscriptionNumber"]
                )
            number = number or given
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
        groups.append(Group(number, actions, gpath))
    if count > MAX_ACTIONS:
        raise LimitExceeded(f"An order may carry at most {MAX_ACTIONS} actions", ["subscriptions"])
    return groups
