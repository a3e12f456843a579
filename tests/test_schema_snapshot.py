"""The committed schema.graphql is the schema: no drift."""

from __future__ import annotations

from pathlib import Path

from schema.export import sdl


def test_schema_graphql_matches_the_schema() -> None:
    committed = (Path(__file__).resolve().parent.parent / "schema.graphql").read_text()
    assert committed == sdl(), (
        "schema.graphql is stale: run `python -m schema.export > schema.graphql`"
    )
