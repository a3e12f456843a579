"""``partnerbill import``: a CSV or JSON Lines file of invoices, payments or memos sent through
the HTTP API in parallel bulk calls.

Every row carries an idempotency key: its own ``idempotencyKey`` when the file gives one,
otherwise one derived from the file's key prefix, the row's number and its content. So a run
that was interrupted (or whose answer was lost) can simply be run again: rows already written
are answered from their keys and written once. Rows the service refuses go to a failed-rows
file, in the input's format with their errors, which the same command takes back after they
are corrected (its rows keep their original numbers and key prefix).

The file is read as a stream, one batch at a time, so memory does not grow with its size.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx
from rich.console import Console

from db.statuses import ImportKind
from server.api_client import (
    ABORT_CODES,
    RETRY_CODES,
    ApiAborted,
    Refused,
    backoff,
    client,
    execute,
    post,
)
from server.progress import rows_progress

FAILED_SUFFIX = ".failed"
# Columns a failed-rows file adds to the input's (CSV), or keys (JSON Lines).
ROW_COLUMN = "_row"
ERROR_COLUMN = "_errors"


@dataclass(frozen=True)
class BulkMutation:
    """How one kind of row is sent: the mutation, its input type and the list it fills.

    The call asks for each row's errors only: the service then builds no documents for the
    answer, a good part of a bulk call's cost (a row written is one without errors)."""

    name: str
    input_type: str
    rows_field: str

    def document(self) -> str:
        return (
            f"mutation($rows: [{self.input_type}!]!, $dryRun: Boolean!) {{ "
            f"{self.name}(input: {{ {self.rows_field}: $rows, errorPolicy: REJECT_FAILED_ROWS, "
            "dryRun: $dryRun }) { count results { errors { code message field retryable } } } }"
        )


MUTATIONS: dict[ImportKind, BulkMutation] = {
    ImportKind.INVOICES: BulkMutation(
        "createStandaloneInvoices", "CreateStandaloneInvoiceInput", "invoices"
    ),
    ImportKind.PAYMENTS: BulkMutation("createPayments", "CreatePaymentInput", "payments"),
    ImportKind.CREDIT_MEMOS: BulkMutation(
        "createCreditMemos", "CreateCreditMemoInput", "creditMemos"
    ),
    ImportKind.DEBIT_MEMOS: BulkMutation("createDebitMemos", "CreateDebitMemoInput", "debitMemos"),
}

# CSV columns of each kind (README, "Migrating data"). Empty cells are left out of the input.
# Invoices: consecutive lines with the same invoiceNumber are the items of one invoice.
# Payments: one application per line (invoiceNumber or debitMemoNumber, with appliedAmount).
INVOICE_COLUMNS = ("accountNumber", "invoiceNumber", "invoiceDate", "dueDate", "status",
                   "currency", "idempotencyKey")  # fmt: skip
ITEM_COLUMNS = ("chargeName", "quantity", "unitPrice", "amount", "serviceStartDate",
                "serviceEndDate")  # fmt: skip
PAYMENT_COLUMNS = ("accountNumber", "amount", "effectiveDate", "method", "currency", "reference",
                   "idempotencyKey")  # fmt: skip
MEMO_COLUMNS = ("accountNumber", "invoiceNumber", "amount", "reasonCode", "memoDate", "autoPost",
                "idempotencyKey")  # fmt: skip
CSV_COLUMNS: dict[ImportKind, tuple[str, ...]] = {
    ImportKind.INVOICES: INVOICE_COLUMNS + ITEM_COLUMNS,
    ImportKind.PAYMENTS: (*PAYMENT_COLUMNS, "invoiceNumber", "debitMemoNumber", "appliedAmount"),
    ImportKind.CREDIT_MEMOS: MEMO_COLUMNS,
    ImportKind.DEBIT_MEMOS: MEMO_COLUMNS,
}


class ImportFileError(ValueError):
    """The file cannot be read as rows of this kind (says the line)."""


@dataclass
class Row:
    """One input of the bulk mutation and the lines of the file it came from."""

    number: int  # the row's number in the original file: part of its derived key
    input: dict[str, Any]
    lines: list[dict[str, str]] | None = None  # CSV: the lines as read, for the failed file


@dataclass
class Outcome:
    rows: int = 0
    written: int = 0  # written by this run or earlier (answered from their keys)
    failed: int = 0
    failed_file: Path | None = None
    dry_run: bool = False
    recorded: bool = False  # the service's feed holds this run's IMPORT_FINISHED event


# -- reading ---------------------------------------------------------------------------------


def file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise ImportFileError(f"{path.name}: name a .csv or .jsonl file")


def key_prefix(path: Path) -> str:
    """The prefix of derived keys: the file's name without its extension and without the
    failed-rows suffix, so a failed-rows file derives the keys its rows had."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return stem[: -len(FAILED_SUFFIX)] if stem.endswith(FAILED_SUFFIX) else stem


def derived_key(prefix: str, kind: ImportKind, row: Row) -> str:
    content = json.dumps(row.input, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(f"{prefix}\0{kind}\0{row.number}\0{content}".encode()).hexdigest()
    return f"import:{digest[:48]}"


def _csv_cells(line: dict[str, str], columns: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in columns:
        value = (line.get(c) or "").strip()
        if value:
            out[c] = value == "true" if c == "autoPost" else value
    return out


def _csv_rows(kind: ImportKind, f: TextIO, name: str) -> Iterator[Row]:
    reader = csv.DictReader(f)
    known = set(CSV_COLUMNS[kind]) | {ROW_COLUMN, ERROR_COLUMN}
    unknown = [c for c in reader.fieldnames or () if c not in known]
    if unknown:
        raise ImportFileError(
            f"{name}: unknown column(s) {', '.join(unknown)}; {kind} takes "
            f"{', '.join(CSV_COLUMNS[kind])}"
        )
    pending: Row | None = None
    for line_number, line in enumerate(reader, start=1):
        number = int(line[ROW_COLUMN]) if (line.get(ROW_COLUMN) or "").isdigit() else line_number
        if kind is ImportKind.INVOICES:
            item = _csv_cells(line, ITEM_COLUMNS)
            head = _csv_cells(line, INVOICE_COLUMNS)
            same = (
                pending is not None
                and head.get("invoiceNumber")
                and pending.input.get("invoiceNumber") == head["invoiceNumber"]
            )
            if same and pending is not None and pending.lines is not None:
                pending.input["items"].append(item)
                pending.lines.append(line)
                continue
            if pending is not None:
                yield pending
            pending = Row(number, {**head, "items": [item]}, [line])
            continue
        if kind is ImportKind.PAYMENTS:
            row_input = _csv_cells(line, PAYMENT_COLUMNS)
            target = _csv_cells(line, ("invoiceNumber", "debitMemoNumber", "appliedAmount"))
            amount = target.get("appliedAmount")
            if "invoiceNumber" in target:
                row_input["invoices"] = [{"invoiceNumber": target["invoiceNumber"],
                                          "amount": amount}]  # fmt: skip
            if "debitMemoNumber" in target:
                row_input["debitMemos"] = [{"memoNumber": target["debitMemoNumber"],
                                            "amount": amount}]  # fmt: skip
            yield Row(number, row_input, [line])
            continue
        yield Row(number, _csv_cells(line, MEMO_COLUMNS), [line])
    if pending is not None:
        yield pending


def _jsonl_rows(f: TextIO, name: str) -> Iterator[Row]:
    for line_number, text in enumerate(f, start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise ImportFileError(f"{name} line {line_number}: not JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise ImportFileError(f"{name} line {line_number}: a JSON object per line, please")
        number = obj.pop(ROW_COLUMN, line_number)
        obj.pop(ERROR_COLUMN, None)
        yield Row(number if isinstance(number, int) else line_number, obj)


def read_rows(kind: ImportKind, path: Path) -> Iterator[Row]:
    """The file's rows, streamed, each with its idempotency key."""
    prefix = key_prefix(path)
    fmt = file_format(path)
    with path.open(encoding="utf-8", newline="") as f:
        rows = _csv_rows(kind, f, path.name) if fmt == "csv" else _jsonl_rows(f, path.name)
        for row in rows:
            if not row.input.get("idempotencyKey"):
                row.input["idempotencyKey"] = derived_key(prefix, kind, row)
            yield row


def count_rows(kind: ImportKind, path: Path) -> int:
    """How many rows the file holds (a first, cheap pass for the progress bar)."""
    return sum(1 for _ in read_rows(kind, path))


def batches(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# -- the failed-rows file ------------------------------------------------------------------


def failed_path(path: Path) -> Path:
    return path.with_name(f"{key_prefix(path)}{FAILED_SUFFIX}{path.suffix}")


def _error_text(errors: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{e['code']}{' at ' + '.'.join(e['field']) if e.get('field') else ''}: {e['message']}"
        for e in errors
    )


def _derived(name: str, value: Any) -> bool:
    return name == "idempotencyKey" and isinstance(value, str) and value.startswith("import:")


class FailedRows:
    """Refused rows in the input's format, with their original numbers and errors."""

    def __init__(self, path: Path, kind: ImportKind, fmt: str) -> None:
        self.path, self.kind, self.fmt = path, kind, fmt
        self.file: TextIO | None = None
        self.csv: csv.DictWriter[str] | None = None
        self.count = 0

    def add(self, row: Row, errors: list[dict[str, Any]]) -> None:
        if self.file is None:
            self.file = self.path.open("w", encoding="utf-8", newline="")
            if self.fmt == "csv":
                columns = [*CSV_COLUMNS[self.kind], ROW_COLUMN, ERROR_COLUMN]
                self.csv = csv.DictWriter(self.file, columns, lineterminator="\n")
                self.csv.writeheader()
        self.count += 1
        message = _error_text(errors)
        if self.csv is not None and row.lines is not None:
            # The lines as read: a derived key is derived again from the row number.
            for line in row.lines:
                out = {c: line.get(c, "") for c in CSV_COLUMNS[self.kind]}
                self.csv.writerow({**out, ROW_COLUMN: str(row.number), ERROR_COLUMN: message})
            return
        assert self.file is not None
        given = {k: v for k, v in row.input.items() if not _derived(k, v)}
        self.file.write(json.dumps({**given, ROW_COLUMN: row.number, ERROR_COLUMN: errors}))
        self.file.write("\n")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


# -- sending ---------------------------------------------------------------------------------


@dataclass
class Sender:
    client: httpx.AsyncClient
    url: str
    mutation: BulkMutation
    dry_run: bool
    attempts: int = 8

    async def send(self, rows: list[Row]) -> list[tuple[Row, dict[str, Any]]]:
        """Each row with its result.

        Rows whose failure is transient are sent again with backoff (their keys make that
        safe). A call refused as a whole (a value in one row that GraphQL cannot read, such
        as the date 2026-11-31) is split in halves until the rows at fault stand alone, so
        one bad row never holds back the others."""
        done: dict[int, dict[str, Any]] = {}
        todo = list(range(len(rows)))
        for attempt in range(self.attempts):
            answer = await self._post([rows[i] for i in todo])
            if isinstance(answer, Refused):
                if answer.codes & ABORT_CODES:
                    raise ApiAborted(answer.message)
                if len(todo) == 1:
                    done[todo[0]] = {"errors": [{"code": "VALIDATION", "field": None,
                                                 "retryable": False,
                                                 "message": answer.message}]}  # fmt: skip
                else:
                    half = len(todo) // 2
                    for part in (todo[:half], todo[half:]):
                        for i, (_, result) in zip(part, await self.send([rows[i] for i in part]),
                                                  strict=True):  # fmt: skip
                            done[i] = result
                todo = []
            elif answer is not None:
                again = []
                for i, result in zip(todo, answer, strict=True):
                    codes = {e["code"] for e in result["errors"]}
                    if codes & RETRY_CODES and attempt + 1 < self.attempts:
                        again.append(i)
                    else:
                        done[i] = result
                todo = again
            if not todo:
                break
            await backoff(attempt)
        for i in todo:
            done[i] = {"errors": [{"code": "UNAVAILABLE", "field": None, "retryable": True,
                                   "message": "not sent: the service did not answer"}]}  # fmt: skip
        return [(rows[i], done[i]) for i in range(len(rows))]

    async def _post(self, rows: list[Row]) -> list[dict[str, Any]] | Refused | None:
        """The per-row results of one call; Refused; or None to send it again."""
        variables = {"rows": [r.input for r in rows], "dryRun": self.dry_run}
        answer = await post(self.client, self.url, self.mutation.document(), variables)
        if answer is None or isinstance(answer, Refused):
            return answer
        results: list[dict[str, Any]] = answer[self.mutation.name]["results"]
        return results


RECORD_FINISHED = """
mutation($input: RecordImportFinishedInput!) {
  recordImportFinished(input: $input) { recorded errors { code message } } }"""


async def record_finished(
    http: httpx.AsyncClient, url: str, kind: ImportKind, path: Path, outcome: Outcome
) -> bool:
    """Tell the service the file is done (an IMPORT_FINISHED event for the feed and its
    webhooks). The rows are in whatever this answers: a failure here costs only the event."""
    summary = {"kind": str(kind), "file": path.name, "rows": outcome.rows,
               "written": outcome.written, "failed": outcome.failed}  # fmt: skip
    try:
        data = await execute(http, url, RECORD_FINISHED, {"input": summary})
    except ApiAborted:
        return False
    return bool(data["recordImportFinished"]["recorded"])


async def run_import(
    kind: ImportKind,
    path: Path,
    *,
    url: str,
    api_key: str | None,
    batch_size: int,
    concurrency: int,
    dry_run: bool,
    console: Console,
    failed_to: Path | None = None,
    timeout_s: float = 300.0,
) -> Outcome:
    """Send every row of the file; returns what happened. Raises ImportFileError for a file
    that cannot be read and ApiAborted when the service refuses the import itself."""
    fmt = file_format(path)
    total = count_rows(kind, path)
    outcome = Outcome(rows=total, dry_run=dry_run)
    failed = FailedRows(failed_to or failed_path(path), kind, fmt)
    queue: asyncio.Queue[list[Row] | None] = asyncio.Queue(maxsize=concurrency * 2)
    async with client(api_key, connections=concurrency, timeout_s=timeout_s) as http:
        sender = Sender(http, url, MUTATIONS[kind], dry_run)
        with rows_progress(console) as progress:
            task = progress.add_task(
                f"{'check' if dry_run else 'import'} {kind}", total=total, failed=0
            )

            async def work() -> None:
                while (batch := await queue.get()) is not None:
                    for row, result in await sender.send(batch):
                        if result["errors"]:
                            failed.add(row, result["errors"])
                        else:
                            outcome.written += 1
                    progress.update(task, advance=len(batch), failed=failed.count)

            async def feed() -> None:
                for batch in batches(read_rows(kind, path), batch_size):
                    await queue.put(batch)
                for _ in range(concurrency):
                    await queue.put(None)

            workers = [asyncio.create_task(work()) for _ in range(concurrency)]
            try:
                await asyncio.gather(feed(), *workers)
            finally:
                for w in workers:
                    w.cancel()
                failed.close()
        outcome.failed = failed.count
        outcome.failed_file = failed.path if failed.count else None
        if not dry_run:
            outcome.recorded = await record_finished(http, url, kind, path, outcome)
    return outcome
