"""Lock namespaces come from db/locks only; the migrations that pin one in SQL pin its value."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import db.locks as locks

ROOT = Path(__file__).resolve().parent.parent
NAMESPACES = {name: value for name, value in vars(locks).items() if name.startswith("NS_")}
LOCK_IN_SQL = re.compile(
    r"pg_(?:try_)?advisory_xact_lock(?:_shared)?\((\d+),\s*(.*?)\)\s*(?:THEN|$)"
)


def test_namespaces_are_distinct() -> None:
    assert len(set(NAMESPACES.values())) == len(NAMESPACES)


def test_code_takes_namespaces_from_db_locks() -> None:
    """No module but db/locks spells a namespace as a number."""
    wrong = []
    for package in ("billing", "db", "jobs", "resolvers", "schema", "server"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "db/locks.py" or rel.startswith("db/migrations/"):
                continue
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if isinstance(node, ast.Constant) and node.value in NAMESPACES.values():
                    wrong.append(f"{rel}:{node.lineno} {node.value}")
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    wrong += [
                        f"{rel}:{node.lineno} {m[0]}" for m in LOCK_IN_SQL.findall(node.value)
                    ]
    assert wrong == []


def test_migrations_pin_the_namespaces_of_db_locks() -> None:
    """pb_refresh_account (0002, and 0003's downgrade) locks the account's metrics the way
    billing does: NS_ACCOUNT_METRICS and db.locks.key_of, written out in SQL."""
    pinned = []
    for path in sorted((ROOT / "db" / "migrations" / "versions").glob("*.py")):
        for ns, key in LOCK_IN_SQL.findall(path.read_text()):
            pinned.append((path.name[:4], int(ns), key))
    assert {(rev, ns) for rev, ns, _ in pinned} == {
        ("0002", locks.NS_ACCOUNT_METRICS),
        ("0003", locks.NS_ACCOUNT_METRICS),
    }
    for _, _, key in pinned:
        assert key == "((p_account + 2147483648) % 4294967296 - 2147483648)::integer"
    for ident in (0, 1, 2**31 - 1, 2**31, 2**32 + 5, 2**62):
        assert locks.key_of(ident) == ((ident + 2147483648) % 4294967296 - 2147483648)


def test_bench_uses_the_namespaces_of_db_locks() -> None:
    """bench/bare_writes.py imports nothing of the application, so it copies two values."""
    source = (ROOT / "bench" / "bare_writes.py").read_text()
    copied = dict(re.findall(r"^(NS_\w+) = (\d+)", source, re.MULTILINE))
    assert {name: int(value) for name, value in copied.items()} == {
        name: NAMESPACES[name] for name in ("NS_ACCOUNT_METRICS", "NS_ACCOUNT_MODE")
    }
