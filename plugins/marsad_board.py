"""The indicator board in the Airflow UI: a FastAPI app on the api-server, and nav entries.

* ``/marsad/board/``: the board as a page (``marsad_board.html``): per indicator its state
  (quiet / firing / resolved), days since its last event and its last events with outlet,
  link and corroboration; per source its health.
* ``/marsad/board/data.json``: the same data as JSON, for ops.
* The Airflow UI gets a nav entry "Marsad" (left bar) that shows the page inside Airflow
  (an external view with a ``url_route``), and "Indicator board (new tab)" under Browse.
  Airflow frames plugin pages in a sandbox without ``allow-popups``: inside the frame a
  click on an article link opens nothing (checked in Chromium 156: neither a click nor a
  ctrl-click), so the framed page says to use "Open link in new tab" or the Browse entry;
  in its own tab links open normally.

The data comes from ``alerts.board`` (plain Python, no Airflow), which reads the analysts'
read copy, never the primary warehouse: the board can never hold up the pipeline.

Auth: Airflow mounts plugin apps without its own authentication (a mounted app inherits
none of the core API's dependencies), so this app declares it: every route needs a user
that the auth manager allows to see the Airflow UI (``AccessView.WEBSITE``), taken from the
UI's session cookie or an ``Authorization: Bearer`` token (``POST /auth/token``). Not
logged in, the page redirects to Airflow's login, the JSON answers 401.

Every Airflow component imports the plugins folder, so this module imports nothing heavy:
the FastAPI app is built on the api-server's first request to it.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger("marsad.board")

URL_PREFIX = "/marsad/board"
TEMPLATE = Path(__file__).with_name("marsad_board.html")
REFRESH_S = 60

ICON = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="#c62828" stroke-width="2"
 stroke-linecap="round" stroke-linejoin="round"><circle cx="12" cy="12" r="9"/><circle cx="12" cy="12" r="4"/>
<path d="M12 3v3M12 18v3M3 12h3M18 12h3"/></svg>"""


# ----------------------------------------------------------------------------- rendering


def _utc(t: datetime | None) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if t else "never"


def _ago(t: datetime | None, now: datetime) -> str:
    if t is None:
        return "never"
    from sources.health import human

    s = (now - t).total_seconds()
    return "just now" if abs(s) < 60 else (f"{human(s)} ago" if s > 0 else f"in {human(-s)}")


def _href(url: str | None) -> str | None:
    """Only http(s) links: a feed's URL is untrusted input (no javascript: in an href)."""
    if not url:
        return None
    try:
        return url if urlsplit(url).scheme.lower() in ("http", "https") else None
    except ValueError:
        return None


def _days(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


_ENV = None


def render(board: dict) -> str:
    """The board page (Jinja2 with autoescaping: every feed text is escaped)."""
    global _ENV
    if _ENV is None:
        import jinja2

        env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        env.filters.update(utc=_utc, href=_href, days=_days)
        _ENV = env
    now = board["generated_at"]
    template = _ENV.from_string(TEMPLATE.read_text(encoding="utf-8"))
    return template.render(b=board, ago=lambda t: _ago(t, now), refresh_s=REFRESH_S)


# ----------------------------------------------------------------------------- the app


def build_app():
    from fastapi import Depends, FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.exceptions import HTTPException

    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import requires_access_view

    from alerts.board import BoardConfig, build, jsonable

    app = FastAPI(
        title="Marsad indicator board",
        dependencies=[Depends(requires_access_view(AccessView.WEBSITE))],
        docs_url=None, redoc_url=None, openapi_url=None,
    )

    @app.exception_handler(HTTPException)
    async def _auth(request: Request, exc: HTTPException):
        # A person opening the page without a session goes to Airflow's login and back.
        if exc.status_code == 401 and request.url.path.rstrip("/") == URL_PREFIX:
            return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    # Plain ``def`` routes run in the api-server's thread pool: a DuckDB query never blocks
    # its event loop.
    @app.get("/", response_class=HTMLResponse)
    def board_page() -> HTMLResponse:
        return HTMLResponse(render(build(BoardConfig.from_env())), headers={"Cache-Control": "no-store"})

    @app.get("/data.json")
    def board_json() -> JSONResponse:
        return JSONResponse(jsonable(build(BoardConfig.from_env())), headers={"Cache-Control": "no-store"})

    @app.get("/icon.svg")
    def icon() -> Response:
        return Response(ICON, media_type="image/svg+xml")

    return app


class _BuiltOnFirstRequest:
    """An ASGI app that builds the real one when the api-server first routes a request to it."""

    def __init__(self, factory):
        self._factory, self._app = factory, None

    async def __call__(self, scope, receive, send):
        if self._app is None:
            self._app = self._factory()
        await self._app(scope, receive, send)

    def __repr__(self) -> str:
        return "marsad_board.build_app()"


class MarsadBoardPlugin(AirflowPlugin):
    name = "marsad_board"
    fastapi_apps = [{"app": _BuiltOnFirstRequest(build_app), "url_prefix": URL_PREFIX, "name": "Marsad indicator board"}]
    # Relative hrefs resolve against the UI's base URL, so they also work under a path prefix.
    external_views = [
        {"name": "Marsad", "href": "marsad/board/", "url_route": "marsad-board", "destination": "nav",
         "nav_top_level": True, "icon": "marsad/board/icon.svg"},
        {"name": "Indicator board (new tab)", "href": "marsad/board/", "category": "browse", "destination": "nav"},
    ]
