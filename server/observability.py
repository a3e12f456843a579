"""/metrics through prometheus_client: what each API process measures, and the gauges read
from the database and Redis when scraped.

Where each figure lives:

* Request counters and the per-operation latency histograms are counted by the process
  that answered. Under ``serve --workers N`` those processes (and the job worker) share a
  PROMETHEUS_MULTIPROC_DIR, and a scrape of any one of them sums every process's files
  (prometheus_client's multiprocess mode); in a single process they are its own registry.
* Per-tenant freshness (refresh lag, pending changes, set-aside accounts), running bill
  runs and the job queue's depth are state, not events: they are read at scrape time from
  the database (one grouped statement with a short timeout) and Redis, so any process
  answers the same. The readings are kept for a second: scrapers that come together cost
  one read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    parse,
)
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.gauges import GaugeReadings, read_gauges

log = logging.getLogger("partnerbill.server")

# The _created series double what a scrape carries and say nothing an operator asked for.
disable_created_metrics()  # type: ignore[no-untyped-call]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
READ_TIMEOUT_S = 2.0  # /metrics answers without the database's or Redis's lines past this
STATEMENT_TIMEOUT_MS = 1000
READINGS_TTL_S = 1.0

REQUESTS = Counter(
    "partnerbill_http_requests",
    "HTTP requests by route, method and status.",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Counter(
    "partnerbill_http_request_seconds",
    "Time spent answering, by route.",
    ["route"],
)
OPERATION_SECONDS = Histogram(
    "partnerbill_graphql_operation_seconds",
    "Time to parse, validate and execute one GraphQL operation, by operation type and root "
    "field (OperationLabels says which names are kept).",
    ["type", "operation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
START_TIME = Gauge(
    "partnerbill_start_time_seconds",
    "When the first API process started.",
    multiprocess_mode="min",
)

ROUTES = frozenset({"/graphql", "/healthz", "/metrics"})


def route_of(path: str) -> str:
    """The route label of a request path: the known routes, else one label for the rest."""
    return path if path in ROUTES else "other"


# -- operation labels ---------------------------------------------------------------------

UNKNOWN = "unknown"  # not parsed, no such operation or root field: one label for them all
MULTIPLE = "multiple"  # several root fields in one operation
INTROSPECTION = "introspection"


@dataclass(frozen=True)
class OperationLabel:
    type: str
    operation: str


UNKNOWN_LABEL = OperationLabel(UNKNOWN, UNKNOWN)


class OperationLabels:
    """The histogram labels of an operation: its type and its root field. A client names
    its operations freely and may send any text, so only root fields the schema has become
    label values; everything else shares ``unknown`` (and several root fields ``multiple``),
    which keeps the series bounded by the schema. Labels of recent query texts are kept,
    so a client repeating its operations parses each text once here."""

    def __init__(self, schema: GraphQLSchema, maxsize: int = 1024) -> None:
        self.maxsize = maxsize
        self._fields: dict[str, frozenset[str]] = {}
        for op, root in (
            (OperationType.QUERY, schema.query_type),
            (OperationType.MUTATION, schema.mutation_type),
            (OperationType.SUBSCRIPTION, schema.subscription_type),
        ):
            if root is not None:
                self._fields[op.value] = frozenset(root.fields)
        self._seen: OrderedDict[tuple[str, str | None], OperationLabel] = OrderedDict()

    def of(self, query: str | None, operation_name: str | None) -> OperationLabel:
        if not query:
            return UNKNOWN_LABEL
        key = (query, operation_name)
        label = self._seen.get(key)
        if label is not None:
            self._seen.move_to_end(key)
            return label
        label = self._label(query, operation_name)
        self._seen[key] = label
        if len(self._seen) > self.maxsize:
            self._seen.popitem(last=False)
        return label

    def _label(self, query: str, operation_name: str | None) -> OperationLabel:
        try:
            document = parse(query, max_tokens=10_000)
        except GraphQLError:
            return UNKNOWN_LABEL
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if operation_name is not None:
            operations = [o for o in operations if o.name and o.name.value == operation_name]
        if len(operations) != 1:
            return UNKNOWN_LABEL
        operation = operations[0]
        kind = operation.operation.value
        selections = operation.selection_set.selections
        if not all(isinstance(s, FieldNode) for s in selections):
            return OperationLabel(kind, UNKNOWN)  # fragments at the root: not worth resolving
        names = {s.name.value for s in selections if isinstance(s, FieldNode)}
        names.discard("__typename")
        if names and names <= {"__schema", "__type"}:
            return OperationLabel(kind, INTROSPECTION)
        if len(names) > 1:
            return OperationLabel(kind, MULTIPLE)
        if len(names) == 1 and (name := names.pop()) in self._fields.get(kind, frozenset()):
            return OperationLabel(kind, name)
        return OperationLabel(kind, UNKNOWN)


def observe_operation(label: OperationLabel, seconds: float) -> None:
    OPERATION_SECONDS.labels(label.type, label.operation).observe(seconds)


# -- scrape-time readings -----------------------------------------------------------------


@dataclass
class Readings:
    gauges: GaugeReadings | None = None  # None: the database did not answer in time
    queue_depth: int | None = None  # None: Redis did not answer in time
    queue_name: str = ""
    read_at: float = field(default_factory=time.monotonic)


class ScrapeReadings:
    """The database and Redis readings of the last second, read once for every scraper
    that arrives meanwhile."""

    def __init__(self, ttl: float = READINGS_TTL_S) -> None:
        self.ttl = ttl
        self._last: Readings | None = None
        self._reading: asyncio.Future[Readings] | None = None

    async def get(self, engine: AsyncEngine | None, redis: Any) -> Readings:
        last = self._last
        if last is not None and time.monotonic() - last.read_at < self.ttl:
            return last
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read(engine, redis))
            self._reading.add_done_callback(self._done)
        # Shielded: a scraper that goes away does not cancel the others' reading.
        return await asyncio.shield(self._reading)

    def _done(self, reading: asyncio.Future[Readings]) -> None:
        self._reading = None
        if not reading.cancelled() and reading.exception() is None:
            self._last = reading.result()

    async def _read(self, engine: AsyncEngine | None, redis: Any) -> Readings:
        readings = Readings()
        if engine is not None:
            try:
                async with asyncio.timeout(READ_TIMEOUT_S), engine.connect() as conn:
                    readings.gauges = await read_gauges(conn, timeout_ms=STATEMENT_TIMEOUT_MS)
            except Exception as e:
                log.warning("/metrics: database gauges not read: %r", e)
        if redis is not None:
            try:
                readings.queue_name = str(redis.default_queue_name)
                async with asyncio.timeout(READ_TIMEOUT_S):
                    readings.queue_depth = int(await redis.zcard(readings.queue_name))
            except Exception as e:
                log.warning("/metrics: job queue depth not read: %r", e)
        readings.read_at = time.monotonic()
        return readings


class ReadingsCollector(Collector):
    """The readings of one scrape as gauge families."""

    def __init__(self, readings: Readings) -> None:
        self.readings = readings

    def collect(self) -> Iterable[Metric]:
        g = self.readings.gauges
        if g is not None:
            lag = GaugeMetricFamily(
                "partnerbill_metrics_refresh_lag_seconds",
                "Age of the tenant's oldest metric change not yet folded into stored "
                "metrics (tenants with nothing pending are left out).",
                labels=["tenant"],
            )
            pending = GaugeMetricFamily(
                "partnerbill_metrics_pending_changes",
                "Metric changes of the tenant's partner accounts not yet folded.",
                labels=["tenant"],
            )
            interval = GaugeMetricFamily(
                "partnerbill_metrics_refresh_interval_seconds",
                "The tenant's metricsRefreshInterval, beside its lag for alerting.",
                labels=["tenant"],
            )
            failed_by_tenant = GaugeMetricFamily(
                "partnerbill_metrics_refresh_failed_accounts_by_tenant",
                "The same, per tenant.",
                labels=["tenant"],
            )
            for t in g.tenants:
                tenant = str(t.tenant_id)
                if t.pending_changes:
                    lag.add_metric([tenant], t.lag_s)
                    pending.add_metric([tenant], t.pending_changes)
                    interval.add_metric([tenant], t.refresh_interval_s)
                if t.set_aside:
                    failed_by_tenant.add_metric([tenant], t.set_aside)
            yield lag
            yield pending
            yield interval
            yield GaugeMetricFamily(
                "partnerbill_metrics_refresh_failed_accounts",
                "Partner accounts whose metrics refresh failed and was set aside (retried later).",
                value=sum(t.set_aside for t in g.tenants),
            )
            yield failed_by_tenant
            total = GaugeMetricFamily(
                "partnerbill_bill_run_accounts",
                "Invoice-owner accounts of a running bill run.",
                labels=["tenant", "bill_run", "status"],
            )
            processed = GaugeMetricFamily(
                "partnerbill_bill_run_accounts_processed",
                "Accounts of a running bill run rated so far.",
                labels=["tenant", "bill_run", "status"],
            )
            for run in g.bill_runs:
                labels = [str(run.tenant_id), run.bill_run_number, run.status.value]
                total.add_metric(labels, run.accounts_total)
                processed.add_metric(labels, run.accounts_processed)
            yield total
            yield processed
        if self.readings.queue_depth is not None:
            depth = GaugeMetricFamily(
                "partnerbill_job_queue_depth",
                "Jobs in the arq queue: waiting, deferred or running.",
                labels=["queue"],
            )
            depth.add_metric([self.readings.queue_name], self.readings.queue_depth)
            yield depth


class _ThisProcess(Collector):
    """The default registry of a single process (instruments and process figures)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def render(readings: Readings) -> bytes:
    """The scrape: every process's instruments (multiprocess mode when
    PROMETHEUS_MULTIPROC_DIR is set, else this process's) and the readings."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(MULTIPROC_ENV):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    registry.register(ReadingsCollector(readings))
    return generate_latest(registry)
