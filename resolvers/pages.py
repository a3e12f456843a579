"""The page sizes of the connections, for the schema's cost limit."""

from __future__ import annotations

from billing.pages import DEFAULT_PAGE, MAX_PAGE

__all__ = ["DEFAULT_PAGE", "MAX_PAGE"]
