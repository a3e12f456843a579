"""Print the GraphQL SDL: ``python -m schema.export > schema.graphql``."""

from __future__ import annotations

from strawberry.printer import print_schema

from schema.root import schema


def sdl() -> str:
    """The schema as committed in schema.graphql."""
    return print_schema(schema) + "\n"


if __name__ == "__main__":
    print(sdl(), end="")
