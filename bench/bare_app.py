"""A bare Starlette JSON endpoint doing the createStandaloneInvoice work directly (no
GraphQL): the yardstick of the framework-cost scenario.

    uvicorn --factory bench.bare_app:bare_app_from_env   (DATABASE_URL set)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from decimal import Decimal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from billing.errors import BillingError
from billing.invoices import ItemData, StandaloneInvoiceData, create_standalone_invoice
from billing.tenants import tenant_for_api_key
from db.engine import create_engine, create_sessionmaker


def bare_app_from_env() -> Starlette:
    engine = create_engine(os.environ["DATABASE_URL"])
    sm = create_sessionmaker(engine)

    async def invoice(request: Request) -> JSONResponse:
        key = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        body = await request.json()
        async with sm.begin() as s:
            tenant_id = await tenant_for_api_key(s, key)
            if tenant_id is None:
                return JSONResponse({"error": "unauthorized"}, status_code=401)
            data = StandaloneInvoiceData(
                account_number=body["accountNumber"],
                invoice_date=date.fromisoformat(body["invoiceDate"]),
                status=body.get("status", "DRAFT"),
                items=[
                    ItemData(
                        charge_name=i["chargeName"],
                        quantity=Decimal(i["quantity"]),
                        unit_price=Decimal(i["unitPrice"]),
                    )
                    for i in body["items"]
                ],
            )
            try:
                row = (await create_standalone_invoice(s, tenant_id, data)).row
            except BillingError as e:
                return JSONResponse({"errors": [{"code": getattr(e, "code", type(e).__name__)}]})
            return JSONResponse({"invoiceNumber": row["invoice_number"], "errors": []})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await engine.dispose()

    return Starlette(routes=[Route("/invoice", invoice, methods=["POST"])], lifespan=lifespan)
