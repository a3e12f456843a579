"""/console: the billing operators' console, a client of the public GraphQL API.

The page and its modules are plain files in ``static/console`` (no build step, nothing loaded
from elsewhere). The only thing the server adds is the page's configuration: the development
key, handed over on the terms GraphiQL gets it (only while anonymous development access is
on, see ``server.app.create_app``); otherwise the operator types a key, which the browser keeps.
"""

from __future__ import annotations

import json
from functools import cache

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from server.graphql_view import STATIC_DIR, Runtime
from server.settings import Settings

CONSOLE_DIR = STATIC_DIR / "console"
CONFIG_MARK = "__CONSOLE_CONFIG__"


@cache
def _template() -> str:
    return (CONSOLE_DIR / "index.html").read_text(encoding="utf-8")


def console_html(dev_api_key: str | None, *, anonymous: bool) -> str:
    """The console page with its configuration inlined: the development key (or None), and
    whether requests without a key are served (then the page needs no key to start)."""
    config = json.dumps(
        {"devApiKey": dev_api_key, "anonymous": anonymous, "graphqlPath": "/graphql"}
    )
    # Inside <script type="application/json"> only "</" could end the element early.
    return _template().replace(CONFIG_MARK, config.replace("</", "<\\/"))


async def console_page(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    settings: Settings = request.app.state.settings
    return HTMLResponse(
        console_html(runtime.dev_api_key, anonymous=settings.allow_anonymous),
        # The page carries a key when anonymous access is on: never from a shared cache.
        headers={"Cache-Control": "no-store"},
    )


async def to_console(request: Request) -> Response:
    return RedirectResponse("/console/", status_code=307)


def console_routes() -> list[BaseRoute]:
    """The page at /console/ (its views are #fragments) and its assets."""
    return [
        Route("/console", to_console, methods=["GET"]),
        Route("/console/", console_page, methods=["GET"]),
        Mount(
            "/console/assets",
            app=StaticFiles(directory=CONSOLE_DIR / "assets"),
            name="console-assets",
        ),
    ]


__all__ = ["console_html", "console_routes"]
