"""Layer rules of design.md: resolvers | jobs -> billing -> db; schema holds shapes."""

from __future__ import annotations

import ast
from pathlib import Path

import billing.errors as be
from resolvers.errors import CODE_OF

ROOT = Path(__file__).resolve().parent.parent
PROJECT = {"schema", "resolvers", "jobs", "db", "billing", "server"}

# package -> what it may not import (project packages and frameworks)
FORBIDDEN: dict[str, set[str]] = {
    "db": {"billing", "resolvers", "schema", "jobs", "server", "strawberry", "starlette", "arq"},
    "billing": {"resolvers", "schema", "jobs", "server", "strawberry", "starlette", "arq"},
    "schema": {"billing", "db", "jobs", "server", "starlette", "arq"},
    "resolvers": {"server", "starlette", "arq"},
    "jobs": {"resolvers", "schema", "server", "strawberry", "starlette"},
}
# The composition of the Schema is the one place schema/ meets resolvers/.
ALLOWED = {("schema/root.py", "resolvers")}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_imports_follow_the_layers() -> None:
    wrong = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("db/migrations/"):
                continue
            for name in imports_of(path) & forbidden:
                if (rel, name) not in ALLOWED:
                    wrong.append(f"{rel} imports {name}")
    assert wrong == []


def test_resolvers_import_jobs_only_through_enqueue() -> None:
    wrong = []
    for path in sorted((ROOT / "resolvers").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jobs"):
                names = {node.module} | {f"{node.module}.{a.name}" for a in node.names}
                if not any(n in ("jobs.enqueue",) or n.startswith("jobs.enqueue") for n in names):
                    wrong.append(f"{path.name}: from {node.module} import ...")
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("jobs") and not a.name.startswith("jobs.enqueue"):
                        wrong.append(f"{path.name}: import {a.name}")
    assert wrong == []


def _subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out.add(sub)
        out |= _subclasses(sub)
    return out


def test_every_domain_error_maps_to_an_error_code() -> None:
    missing = [
        c.__name__ for c in _subclasses(be.BillingError) if not any(k in CODE_OF for k in c.__mro__)
    ]
    assert missing == []
    assert set(be.ALL_ERRORS) <= set(CODE_OF)


def test_public_billing_functions_state_their_rule() -> None:
    """Every public function in billing/ has a docstring (design.md, Habits)."""
    missing = []
    for path in sorted((ROOT / "billing").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(
                node, ast.FunctionDef | ast.AsyncFunctionDef
            ) and not node.name.startswith("_"):
                if ast.get_docstring(node) is None:
                    missing.append(f"{path.name}:{node.name}")
    assert missing == []


SQL_BUILDERS = {"text", "select", "insert", "update", "delete"}


def sql_in(path: Path) -> list[str]:
    """SQL builders imported from sqlalchemy, and ``.execute(`` calls, in a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] == "sqlalchemy"
        ):
            found += [f"imports {a.name}" for a in node.names if a.name in SQL_BUILDERS]
        elif isinstance(node, ast.Attribute) and node.attr == "execute":
            found.append(f"calls .execute( (line {node.lineno})")
    return found


def test_sql_lives_in_billing_not_in_resolvers_or_schema() -> None:
    wrong = [
        f"{path.relative_to(ROOT).as_posix()} {what}"
        for package in ("resolvers", "schema")
        for path in sorted((ROOT / package).rglob("*.py"))
        for what in sql_in(path)
    ]
    assert wrong == []


def test_the_sql_check_sees_sql(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from sqlalchemy import select, text\n"
        "async def f(s):\n"
        "    await s.execute(text('SELECT 1'))\n"
    )
    assert sql_in(module) == ["imports select", "imports text", "calls .execute( (line 3)"]
