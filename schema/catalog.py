"""The product catalog: products, rate plans, charges."""

from __future__ import annotations

from decimal import Decimal
from enum import Enum

import strawberry

from schema.errors import UserError


@strawberry.enum(description="When a charge is billed: once, every period, or by usage.")
class ChargeType(Enum):
    ONE_TIME = "ONE_TIME"
    RECURRING = "RECURRING"
    USAGE = "USAGE"


@strawberry.enum(description="How a charge's amount is computed.")
class ChargeModel(Enum):
    FLAT_FEE = "FLAT_FEE"
    PER_UNIT = "PER_UNIT"


@strawberry.enum(description="Length of a recurring charge's billing period.")
class BillingPeriod(Enum):
    MONTH = "MONTH"
    QUARTER = "QUARTER"
    SEMI_ANNUAL = "SEMI_ANNUAL"
    ANNUAL = "ANNUAL"


@strawberry.enum(description="Whether a period is billed at its start or after its end.")
class BillingTiming(Enum):
    IN_ADVANCE = "IN_ADVANCE"
    IN_ARREARS = "IN_ARREARS"


@strawberry.type(description="A charge of a catalog rate plan.")
class ProductRatePlanCharge:
    id: strawberry.ID = strawberry.field(description="Opaque identifier.")
    product_rate_plan_charge_number: str = strawberry.field(
        description="Number orders reference (PRPC...)."
    )
    name: str = strawberry.field(description="Display name.")
    charge_type: ChargeType = strawberry.field(description="One-time, recurring or usage.")
    charge_model: ChargeModel = strawberry.field(description="Flat fee or per unit.")
    list_price: Decimal = strawberry.field(
        description="Price unless an order overrides it, at its own precision: up to 4 places "
        "(a catalog charge has no currency; trailing zeros dropped)."
    )
    billing_period: BillingPeriod = strawberry.field(
        description="Billing period of recurring charges."
    )
    billing_timing: BillingTiming = strawberry.field(description="In advance or in arrears.")
    default_quantity: Decimal = strawberry.field(
        description="Quantity unless an order overrides it (up to 4 places, trailing zeros "
        "dropped)."
    )
    uom: str | None = strawberry.field(description="Unit of measure.")


@strawberry.type(description="A rate plan of a product: what a subscription subscribes to.")
class ProductRatePlan:
    id: strawberry.ID = strawberry.field(description="Opaque identifier.")
    product_rate_plan_number: str = strawberry.field(
        description="Number orders reference (PRP...)."
    )
    name: str = strawberry.field(description="Display name.")
    charges: list[ProductRatePlanCharge] = strawberry.field(description="The plan's charges.")


@strawberry.type(description="A product of the catalog.")
class Product:
    id: strawberry.ID = strawberry.field(description="Opaque identifier.")
    product_number: str = strawberry.field(description="Business number (PC...).")
    name: str = strawberry.field(description="Display name.")
    sku: str | None = strawberry.field(description="Stock keeping unit.")
    description: str | None = strawberry.field(description="Free text.")
    rate_plans: list[ProductRatePlan] = strawberry.field(description="The product's rate plans.")


@strawberry.input(description="A charge of a new rate plan.")
class ProductRatePlanChargeInput:
    name: str
    charge_type: ChargeType
    charge_model: ChargeModel
    list_price: Decimal
    billing_period: BillingPeriod = BillingPeriod.MONTH
    billing_timing: BillingTiming = BillingTiming.IN_ADVANCE
    default_quantity: Decimal = Decimal(1)
    uom: str | None = None
    product_rate_plan_charge_number: str | None = strawberry.field(
        default=None, description="Given number; generated (PRPC...) when absent."
    )


@strawberry.input(description="A rate plan of a new product.")
class ProductRatePlanInput:
    name: str
    charges: list[ProductRatePlanChargeInput] = strawberry.field(default_factory=list)
    product_rate_plan_number: str | None = strawberry.field(
        default=None, description="Given number; generated (PRP...) when absent."
    )


@strawberry.input(description="A new product with its rate plans and charges.")
class CreateProductInput:
    name: str
    rate_plans: list[ProductRatePlanInput] = strawberry.field(default_factory=list)
    product_number: str | None = None
    sku: str | None = None
    description: str | None = None
    idempotency_key: str | None = None


@strawberry.type(description="Result of createProduct.")
class ProductPayload:
    product: Product | None = strawberry.field(default=None, description="The product created.")
    errors: list[UserError] = strawberry.field(
        default_factory=list, description="Why nothing was written."
    )
