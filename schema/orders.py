"""Orders, order actions, subscriptions and asynchronous order jobs."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry import Private

from schema.accounts import CreateAccountInput
from schema.catalog import BillingPeriod, BillingTiming, ChargeModel, ChargeType
from schema.common import ErrorPolicy
from schema.errors import UserError

if TYPE_CHECKING:
    from schema.accounts import Account


@strawberry.enum(description="Lifecycle of a subscription.")
class SubscriptionStatus(Enum):
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    PENDING_ACTIVATION = "PENDING_ACTIVATION"


@strawberry.enum(description="Whether a subscription has a fixed term.")
class TermType(Enum):
    TERMED = "TERMED"
    EVERGREEN = "EVERGREEN"


@strawberry.enum(description="When a cancellation takes effect.")
class CancellationPolicy(Enum):
    END_OF_CURRENT_TERM = "END_OF_CURRENT_TERM"
    END_OF_LAST_INVOICE_PERIOD = "END_OF_LAST_INVOICE_PERIOD"
    SPECIFIC_DATE = "SPECIFIC_DATE"


@strawberry.enum(description="Which side of a subscription an account is on.")
class SubscriptionRole(Enum):
    OWNER = "OWNER"
    INVOICE_OWNER = "INVOICE_OWNER"


@strawberry.enum(description="Lifecycle of an order.")
class OrderStatus(Enum):
    COMPLETED = "COMPLETED"
    PENDING = "PENDING"
    FAILED = "FAILED"


@strawberry.enum(description="Lifecycle of an asynchronous job.")
class JobStatus(Enum):
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


@strawberry.type(description="One segment of a subscription charge; UpdateProduct opens the next.")
class SubscriptionCharge:
    id: strawberry.ID = strawberry.field(description="Opaque identifier of this segment.")
    charge_number: str = strawberry.field(
        description="Business number (C...), shared by its segments."
    )
    product_rate_plan_charge_number: str = strawberry.field(
        description="The catalog charge it copies."
    )
    segment: int = strawberry.field(description="1 for the first segment, then 2, 3, ...")
    is_last_segment: bool = strawberry.field(description="True for the latest segment.")
    name: str = strawberry.field(description="Display name.")
    charge_type: ChargeType = strawberry.field(description="One-time, recurring or usage.")
    charge_model: ChargeModel = strawberry.field(description="Flat fee or per unit.")
    price: Decimal = strawberry.field(
        description="Price of this segment, at its own precision: up to 4 places, finer than "
        "the currency's minor unit when it was given so (trailing zeros dropped)."
    )
    quantity: Decimal = strawberry.field(
        description="Quantity of this segment (up to 4 places, trailing zeros dropped)."
    )
    billing_period: BillingPeriod = strawberry.field(description="Billing period.")
    billing_timing: BillingTiming = strawberry.field(description="In advance or in arrears.")
    effective_start_date: date = strawberry.field(description="First day of this segment.")
    effective_end_date: date | None = strawberry.field(
        description="Day the segment ends (exclusive), if it does."
    )
    charged_through_date: date | None = strawberry.field(description="Billed up to (exclusive).")
    mrr: Decimal = strawberry.field(
        description="Monthly recurring revenue of this segment, to 6 decimal places and not "
        'rounded to the currency\'s minor unit (an annual 100.00 is "8.333333" a month); '
        "trailing zeros dropped."
    )


@strawberry.type(description="A rate plan of a subscription.")
class SubscriptionRatePlan:
    id: strawberry.ID = strawberry.field(description="Opaque identifier.")
    product_rate_plan_number: str = strawberry.field(description="The catalog rate plan.")
    name: str = strawberry.field(description="Display name.")
    effective_start_date: date = strawberry.field(description="Added from.")
    effective_end_date: date | None = strawberry.field(description="Removed from, if removed.")
    charges: list[SubscriptionCharge] = strawberry.field(description="Charge segments of the plan.")


@strawberry.type(
    description="A subscription: owned by one account, invoiced to another (or the same)."
)
class Subscription:
    db_id: Private[int]
    owner_id: Private[int]
    invoice_owner_id: Private[int]
    id: strawberry.ID = strawberry.field(description="Opaque identifier.")
    subscription_number: str = strawberry.field(description="Business number (S...).")
    subscription_owner_account_number: str = strawberry.field(
        description="Account carrying its contractedMrr."
    )
    invoice_owner_account_number: str = strawberry.field(
        description="Account receiving its invoices."
    )
    currency: str = strawberry.field(description="Currency of both owners.")
    status: SubscriptionStatus = strawberry.field(description="Lifecycle status.")
    term_type: TermType = strawberry.field(description="TERMED or EVERGREEN.")
    initial_term: int | None = strawberry.field(description="Months of the first term.")
    renewal_term: int | None = strawberry.field(description="Months of each renewal term.")
    auto_renew: bool = strawberry.field(description="Renews itself at term end.")
    contract_effective_date: date = strawberry.field(description="When the contract starts.")
    term_start_date: date = strawberry.field(description="Start of the current term.")
    term_end_date: date | None = strawberry.field(
        description="End of the current term (none when EVERGREEN)."
    )
    cancelled_date: date | None = strawberry.field(
        description="When the cancellation takes effect."
    )
    invoice_separately: bool = strawberry.field(description="Billed on its own invoice.")
    mrr: Decimal = strawberry.field(
        description="Sum of the MRR of its current recurring charges, to 6 decimal places and "
        "not rounded to the currency's minor unit (see SubscriptionCharge.mrr)."
    )
    version: int = strawberry.field(description="Incremented by amending actions.")
    rate_plans: list[SubscriptionRatePlan] = strawberry.field(description="Rate plans and charges.")

    @strawberry.field(description="The subscription owner.")
    async def subscription_owner(
        self, info: strawberry.Info
    ) -> Annotated[Account, strawberry.lazy("schema.accounts")]:
        return await info.context.fetch.account(self.owner_id)  # type: ignore[no-any-return]

    @strawberry.field(description="The invoice owner.")
    async def invoice_owner(
        self, info: strawberry.Info
    ) -> Annotated[Account, strawberry.lazy("schema.accounts")]:
        return await info.context.fetch.account(self.invoice_owner_id)  # type: ignore[no-any-return]


@strawberry.type(description="One action of an order, as applied.")
class OrderAction:
    sequence: int = strawberry.field(description="Position in the order (0-based).")
    type: str = strawberry.field(description="CreateSubscription, AddProduct, ... OwnerTransfer.")
    subscription_number: str = strawberry.field(description="The subscription it applied to.")
    effective_date: date = strawberry.field(description="When it takes effect.")


@strawberry.type(description="An order: ordered actions on subscriptions, applied all-or-nothing.")
class Order:
    db_id: Private[int]
    id: strawberry.ID = strawberry.field(description="Opaque identifier.")
    order_number: str = strawberry.field(description="Business number (O...) or the caller's own.")
    order_date: date = strawberry.field(description="Default effective date of its actions.")
    status: OrderStatus = strawberry.field(description="COMPLETED once applied.")
    account_number: str = strawberry.field(description="The order's account.")
    order_actions: list[OrderAction] = strawberry.field(description="Its actions, in order.")
    subscription_numbers: list[str] = strawberry.field(
        description="The subscriptions it touched, in order."
    )
    created_at: datetime = strawberry.field(description="When it was placed.")

    @strawberry.field(
        description="Numbers of the invoices processingOptions.runBilling generated, in order."
    )
    async def invoice_numbers(self, info: strawberry.Info) -> list[str]:
        return await info.context.fetch.order_invoice_numbers(self.db_id)  # type: ignore[no-any-return]

    @strawberry.field(
        description="The order's account, with its partnerAccount flag and metrics as they are now."
    )
    async def account(
        self, info: strawberry.Info
    ) -> Annotated[Account, strawberry.lazy("schema.accounts")]:
        return await info.context.fetch.account_by_number(self.account_number)  # type: ignore[no-any-return]


@strawberry.type(description="An asynchronous operation (createOrderAsync).")
class Job:
    id: strawberry.ID = strawberry.field(description="Poll with job(id).")
    kind: str = strawberry.field(description="What the job does (create_order).")
    status: JobStatus = strawberry.field(description="QUEUED, PROCESSING, COMPLETED or FAILED.")
    order_number: str | None = strawberry.field(description="The order made, once COMPLETED.")
    errors: list[UserError] = strawberry.field(description="Why it FAILED; nothing was written.")
    created_at: datetime = strawberry.field(description="When it was queued.")
    updated_at: datetime = strawberry.field(description="Last status change.")


# --------------------------------------------------------------------------- inputs


@strawberry.input(description="Term settings of a subscription.")
class TermsInput:
    term_type: TermType | None = None
    initial_term: int | None = None
    renewal_term: int | None = None
    auto_renew: bool | None = None


@strawberry.input(description="A catalog charge's price, quantity or period for this subscription.")
class ChargeOverrideInput:
    product_rate_plan_charge_number: str
    price: Decimal | None = None
    quantity: Decimal | None = None
    billing_period: BillingPeriod | None = None


@strawberry.input(description="A catalog rate plan to subscribe to.")
class RatePlanInput:
    product_rate_plan_number: str
    charge_overrides: list[ChargeOverrideInput] = strawberry.field(default_factory=list)


@strawberry.input(description="A new subscription.")
class CreateSubscriptionActionInput:
    subscription_number: str | None = None
    subscription_owner_account_number: str | None = strawberry.field(
        default=None, description="Defaults to the order's account."
    )
    invoice_owner_account_number: str | None = strawberry.field(
        default=None, description="Defaults to the order's account."
    )
    terms: TermsInput | None = None
    invoice_separately: bool = False
    rate_plans: list[RatePlanInput] = strawberry.field(default_factory=list)
    effective_date: date | None = strawberry.field(
        default=None, description="Defaults to orderDate."
    )


EFF = "Defaults to orderDate."


@strawberry.input(description="A rate plan added from a date.")
class AddProductInput:
    product_rate_plan_number: str
    charge_overrides: list[ChargeOverrideInput] = strawberry.field(default_factory=list)
    effective_date: date | None = strawberry.field(default=None, description=EFF)


@strawberry.input(
    description="A new price and/or quantity of a charge from a date (a new segment)."
)
class UpdateProductInput:
    charge_number: str
    price: Decimal | None = None
    quantity: Decimal | None = None
    effective_date: date | None = strawberry.field(default=None, description=EFF)


@strawberry.input(description="A rate plan ends on a date.")
class RemoveProductInput:
    product_rate_plan_number: str
    effective_date: date | None = strawberry.field(default=None, description=EFF)


@strawberry.input(description="Suspend or resume from a date.")
class SuspendResumeInput:
    effective_date: date | None = strawberry.field(default=None, description=EFF)


@strawberry.input(description="Cancel the subscription.")
class CancelSubscriptionInput:
    cancellation_policy: CancellationPolicy = CancellationPolicy.SPECIFIC_DATE
    cancellation_effective_date: date | None = strawberry.field(
        default=None, description="For SPECIFIC_DATE; defaults to effectiveDate."
    )
    effective_date: date | None = strawberry.field(default=None, description=EFF)


@strawberry.input(description="Start a new term of renewalTerm months.")
class RenewSubscriptionInput:
    effective_date: date | None = strawberry.field(default=None, description=EFF)


@strawberry.input(description="New term type, lengths or autoRenew.")
class TermsAndConditionsInput:
    term_type: TermType | None = None
    initial_term: int | None = None
    renewal_term: int | None = None
    auto_renew: bool | None = None
    effective_date: date | None = strawberry.field(default=None, description=EFF)


@strawberry.input(
    description="Move the subscription to a new subscription owner and/or invoice owner."
)
class OwnerTransferInput:
    destination_account_number: str | None = None
    destination_invoice_account_number: str | None = None
    effective_date: date | None = strawberry.field(default=None, description=EFF)


@strawberry.input(one_of=True, description="Exactly one order action.")
class OrderActionInput:
    create_subscription: CreateSubscriptionActionInput | None = strawberry.UNSET
    add_product: AddProductInput | None = strawberry.UNSET
    update_product: UpdateProductInput | None = strawberry.UNSET
    remove_product: RemoveProductInput | None = strawberry.UNSET
    suspend: SuspendResumeInput | None = strawberry.UNSET
    resume: SuspendResumeInput | None = strawberry.UNSET
    cancel_subscription: CancelSubscriptionInput | None = strawberry.UNSET
    renew_subscription: RenewSubscriptionInput | None = strawberry.UNSET
    terms_and_conditions: TermsAndConditionsInput | None = strawberry.UNSET
    owner_transfer: OwnerTransferInput | None = strawberry.UNSET


@strawberry.input(description="The actions of one subscription of an order.")
class OrderSubscriptionInput:
    order_actions: list[OrderActionInput]
    subscription_number: str | None = strawberry.field(
        default=None, description="Absent for a new subscription (or given to name it)."
    )


@strawberry.input(description="What to do after the order is applied.")
class ProcessingOptionsInput:
    run_billing: bool = False
    target_date: date | None = None
    generate_draft_invoice: bool = False


@strawberry.input(description="An order on an existing or a new account.")
class CreateOrderInput:
    order_date: date
    subscriptions: list[OrderSubscriptionInput]
    order_number: str | None = None
    existing_account_number: str | None = strawberry.field(
        default=None, description="Exactly one of this and newAccount."
    )
    new_account: CreateAccountInput | None = None
    processing_options: ProcessingOptionsInput | None = None
    idempotency_key: str | None = None


@strawberry.input(description="Shorthand: one order with one CreateSubscription.")
class CreateSubscriptionInput:
    account_number: str = strawberry.field(description="The order's account.")
    order_date: date | None = strawberry.field(
        default=None, description="Defaults to contractEffectiveDate."
    )
    contract_effective_date: date | None = None
    subscription_number: str | None = None
    subscription_owner_account_number: str | None = None
    invoice_owner_account_number: str | None = None
    terms: TermsInput | None = None
    invoice_separately: bool = False
    rate_plans: list[RatePlanInput] = strawberry.field(default_factory=list)
    order_number: str | None = None
    processing_options: ProcessingOptionsInput | None = None
    idempotency_key: str | None = None


@strawberry.input(description="Many orders at once.")
class CreateOrdersInput:
    orders: list[CreateOrderInput]
    error_policy: ErrorPolicy = ErrorPolicy.REJECT_EVERYTHING


@strawberry.type(description="Result of an order mutation.")
class OrderPayload:
    order: Order | None = strawberry.field(default=None, description="The order applied.")
    subscriptions: list[Subscription] = strawberry.field(
        default_factory=list, description="Subscriptions it touched."
    )
    errors: list[UserError] = strawberry.field(
        default_factory=list, description="Why nothing was written."
    )


@strawberry.type(description="One order of a bulk request.")
class BulkOrderResult:
    order: Order | None = strawberry.field(default=None, description="The order, when applied.")
    errors: list[UserError] = strawberry.field(
        default_factory=list, description="Why this order failed."
    )


@strawberry.type(description="Result of createOrders: one result per input, same order.")
class BulkOrderPayload:
    count: int = strawberry.field(description="Orders applied.")
    results: list[BulkOrderResult] = strawberry.field(description="One per input order.")


@strawberry.type(description="Result of createOrderAsync.")
class JobPayload:
    job: Job | None = strawberry.field(default=None, description="Poll it with job(id).")
    errors: list[UserError] = strawberry.field(
        default_factory=list,
        description="Why nothing was queued; or, beside the job, UNAVAILABLE when it is "
        "recorded but the job queue could not be reached: it starts once the queue is back.",
    )
