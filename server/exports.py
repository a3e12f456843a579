"""``partnerbill export``: a tenant's accounts, invoices or payments as CSV or JSON Lines.

The rows come from :mod:`billing.exports` (one snapshot, a server-side cursor); this module
writes them page by page, so memory stays constant whatever the tenant's size, and shows
a progress bar on stderr (the rows may go to stdout)."""

from __future__ import annotations

import csv
import enum
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.exports import ExportFilter, ExportKind, Row, count, header, rows
from server.progress import rows_progress


class ExportFormat(enum.StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


class _Writer:
    def __init__(self, out: IO[str], fmt: ExportFormat, columns: tuple[str, ...]) -> None:
        self.out, self.fmt, self.columns = out, fmt, columns
        self.csv = csv.writer(out, lineterminator="\n") if fmt is ExportFormat.CSV else None
        if self.csv is not None:
            self.csv.writerow(columns)

    def write(self, page: list[Row]) -> None:
        if self.csv is not None:
            # CSV has no null: an empty cell stands for it, as PostgreSQL's COPY writes it.
            self.csv.writerows(["" if c is None else c for c in row] for row in page)
            return
        for row in page:
            self.out.write(json.dumps(dict(zip(self.columns, row, strict=True))))
            self.out.write("\n")


@contextmanager
def _opened(output: IO[str] | Path) -> Iterator[IO[str]]:
    if not isinstance(output, Path):
        yield output
        output.flush()
        return
    with output.open("w", encoding="utf-8", newline="") as f:
        yield f


async def export(
    engine: AsyncEngine,
    tenant_id: int,
    kind: ExportKind,
    fmt: ExportFormat,
    where: ExportFilter,
    output: IO[str] | Path,
    console: Console,
) -> int:
    """Write every row of ``kind`` to ``output`` (a stream or a file); returns how many."""
    total = await count(engine, tenant_id, kind, where)
    written = 0
    with _opened(output) as out, rows_progress(console) as progress:
        task = progress.add_task(f"export {kind}", total=total, failed=0)
        writer = _Writer(out, fmt, header(kind))
        async for page in rows(engine, tenant_id, kind, where):
            writer.write(page)
            written += len(page)
            progress.update(task, completed=written)
    return written
