"""Orders: ordered actions on subscriptions, all-or-nothing, moving contractedMrr.

data.py              an order's input, checked once (the shape of CreateOrderInput)
checks.py            terms, rate plans and charge prices, shared by both write paths
create.py            create_order: any order, action by action
actions.py           what each action does to a subscription
new_subscriptions.py orders that only create subscriptions, written in one statement
facts.py             the accounts and rate plans such orders read, kept per process
reads.py             orders and their actions as read back
jobs.py              asynchronous orders' job rows
"""

from billing.orders.create import create_order
from billing.orders.data import OrderInput, decode_order, input_hash, jsonable
from billing.orders.jobs import (
    claim_job_any_tenant,
    create_order_job,
    get_job,
    order_job_id,
    set_job,
    unfinished_jobs,
)
from billing.orders.new_subscriptions import CreatedOrder, create_subscription_order, takes
from billing.orders.reads import get_order, order_actions, orders_of_account

__all__ = [
    "CreatedOrder",
    "OrderInput",
    "claim_job_any_tenant",
    "create_order",
    "create_order_job",
    "create_subscription_order",
    "decode_order",
    "get_job",
    "get_order",
    "input_hash",
    "jsonable",
    "order_actions",
    "order_job_id",
    "orders_of_account",
    "set_job",
    "takes",
    "unfinished_jobs",
]
