"""The indicator board in the Airflow UI: a FastAPI app on the api-server, and nav entries.

* ``/marsad/board/``: the board as a page (``marsad_board.html``): per indicator its state
  (quiet / firing / resolved), time since its last event, a 90-day timeline (an SVG drawn
  here: events per day, quiet spells, alerts, rule thresholds) and its last events, each
  opening to its reports, frame, corroboration and alerts; per source its health.
* ``/marsad/board/day?indicator=..&day=YYYY-MM-DD``: one indicator's events of one day (a
  bar of the timeline links there).
* ``/marsad/board/slack/<alert_id>``: to the alert's Slack thread, by the permalink Slack
  gives for its first message (``chat.getPermalink`` through the Airflow Slack connection).
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
from datetime import date, datetime, timezone
from pathlib import Path
from urllib.parse import quote, urlsplit

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


def _since(seconds: float | None) -> str:
    """Time since the last event: hours within a day ("5 h", "under an hour"), days after."""
    if seconds is None:
        return "–"
    if seconds < 3600:
        return "under an hour"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h"
    d = seconds / 86400
    return f"{d:.1f} days" if d < 10 else f"{d:.0f} days"


def _frame(frame: dict | None) -> str:
    """An event frame (alerts/frames.py) in words: who did what to whom, where, how certain."""
    if not frame:
        return "no frame (matched on keywords)"
    def party(cls, entity, unknown):
        return f"{cls} ({entity})" if cls and entity and entity != cls else (cls or entity or unknown)

    actor = party(frame.get("actor"), frame.get("actor_entity"), "unknown actor")
    target = party(frame.get("target"), frame.get("target_entity"), "unknown target")
    action = frame.get("action") or "?"
    places = ", ".join(f"{p[0]} ({p[1]})" for p in frame.get("places") or [] if len(p) == 2)
    text = f"{actor} — {action} → {target}"
    if places:
        text += f" at {places}"
    text += f" · {frame.get('modality') or '?'}"
    if frame.get("denied_by"):
        text += f", denied by {frame['denied_by']}"
    return text

# ----------------------------------------------------------------------------- the timeline (SVG, drawn here)

TL_W, TL_H = 560, 168                      # the SVG's own units; it scales to the card's width
TL_LEFT, TL_RIGHT, TL_TOP, TL_BOTTOM = 30, 10, 26, 20   # plot area margins (alerts lane on top, dates below)


def _span(seconds: float) -> str:
    """A length of time for a label: whole days, or hours below two days."""
    return f"{seconds / 86400:.0f} d" if seconds >= 2 * 86400 else f"{seconds / 3600:.0f} h"


def _dur(seconds: int | None) -> str:
    from sources.configfile import format_duration

    return format_duration(int(seconds)) if seconds else "?"


def timeline_svg(tl: dict | None, indicator: dict, now: datetime) -> str:
    """The indicator's last days as an inline SVG: a bar per day with events, shaded quiet
    spells labelled with their length, each alert as a span from fired (▲) to resolved (●)
    in a lane above (linking to its Slack thread when it has one), and the counting rules'
    thresholds as dashed lines with the most events their window held each day.
    Every piece has a <title> (a tooltip, and what a screen reader says)."""
    from markupsafe import Markup, escape

    if not tl:
        return Markup("")
    days = tl["days"]
    n_days = len(days)
    first = datetime.combine(tl["first_day"], datetime.min.time(), tzinfo=timezone.utc)
    x0, x1 = TL_LEFT, TL_W - TL_RIGHT
    y_top, y_base = TL_TOP, TL_H - TL_BOTTOM
    day_w = (x1 - x0) / n_days
    ymax = max([tl["max_events"], 1] + [t["count"] for t in tl["thresholds"]] + [max(t["peaks"] or [0]) for t in tl["thresholds"]])

    def x(t: datetime) -> float:
        return min(max(x0 + (t - first).total_seconds() / 86400 * day_w, x0), x1)

    def y(v: float) -> float:
        return y_base - (y_base - y_top - 6) * v / ymax

    iid = escape(indicator["id"])
    out = [f'<svg class="timeline" viewBox="0 0 {TL_W} {TL_H}" role="img" aria-labelledby="tl-{iid}-t tl-{iid}-d" '
           f'data-timeline="{iid}" xmlns="http://www.w3.org/2000/svg">']
    spells = tl["quiet_spells"]
    desc = [f"{tl['events']} events from {tl['first_day']} to {tl['last_day']}"]
    if spells:
        desc.append("quiet spells: " + "; ".join(f"{_span(s['seconds'])} from {s['start']:%Y-%m-%d}" + (" (ongoing)" if s["ongoing"] else "")
                                                   for s in spells))
    if tl["alerts"]:
        desc.append("alerts: " + "; ".join(f"{a['rule_id']} {a['state']}" for a in tl["alerts"]))
    out.append(f'<title id="tl-{iid}-t">Events per day over the last {n_days} days: {escape(indicator["name"])}</title>')
    out.append(f'<desc id="tl-{iid}-d">{escape(". ".join(desc))}.</desc>')

    # Quiet spells first (behind everything).
    for s in spells:
        sx, ex = x(s["start"]), x(s["end"])
        label = f"quiet {_span(s['seconds'])}" + (" so far" if s["ongoing"] else "")
        since = "since Marsad started watching" if s["since_watch_start"] else f"from {_utc(s['start'])}"
        until = "until now" if s["ongoing"] else f"to {_utc(s['end'])}"
        out.append(f'<g class="quiet" data-start="{s["start"]:%Y-%m-%d}" data-seconds="{s["seconds"]}">'
                   f'<title>No event for {_span(s["seconds"])}: {escape(since)} {escape(until)}</title>'
                   f'<rect x="{sx:.1f}" y="{y_top:.1f}" width="{max(ex - sx, 1):.1f}" height="{y_base - y_top:.1f}"/>')
        if ex - sx >= 44:
            out.append(f'<text x="{(sx + ex) / 2:.1f}" y="{(y_top + y_base) / 2:.1f}" text-anchor="middle" dy="0.32em">{escape(label)}</text>')
        out.append("</g>")

    # Axes: baseline, the largest count, dates.
    out.append(f'<g class="axis"><line x1="{x0}" y1="{y_base}" x2="{x1}" y2="{y_base}"/>'
               f'<text x="{x0 - 4}" y="{y_base}" text-anchor="end" dy="0.32em">0</text>'
               f'<text x="{x0 - 4}" y="{y(ymax):.1f}" text-anchor="end" dy="0.32em">{ymax}</text>')
    for k in range(0, n_days, 30):
        d = days[k]["day"]
        out.append(f'<line class="tick" x1="{x0 + k * day_w:.1f}" y1="{y_base}" x2="{x0 + k * day_w:.1f}" y2="{y_base + 3}"/>'
                   f'<text x="{x0 + k * day_w:.1f}" y="{TL_H - 5}" text-anchor="start">{d:%d %b}</text>')
    out.append(f'<text x="{x1}" y="{TL_H - 5}" text-anchor="end">today</text></g>')

    # Bars: one per day with events, linking to that day's events.
    for k, d in enumerate(days):
        if not d["events"]:
            continue
        bx, by = x0 + k * day_w + 0.5, y(d["events"])
        n = d["events"]
        out.append(f'<a href="day?indicator={escape(quote(indicator["id"]))}&amp;day={d["day"]:%Y-%m-%d}" class="bar-link">'
                   f'<rect class="bar" data-day="{d["day"]:%Y-%m-%d}" data-events="{n}" x="{bx:.1f}" y="{by:.1f}" '
                   f'width="{max(day_w - 1, 1):.1f}" height="{y_base - by:.1f}">'
                   f'<title>{d["day"]:%Y-%m-%d}: {n} event{"s" if n != 1 else ""} (open the day)</title></rect></a>')

    # Counting rules: the threshold, and the most events the rule's window held each day.
    for t in tl["thresholds"]:
        ty = y(t["count"])
        word = {"threshold": "fires at", "tripwire": "fires at", "spike": "needs at least", "flatline": "fires below"}[t["kind"]]
        label = f"{t['rule_id']}: {word} {t['count']} in {_dur(t['window_s'])}"
        out.append(f'<g class="threshold" data-rule="{escape(t["rule_id"])}" data-count="{t["count"]}"><title>{escape(label)}</title>'
                   f'<line x1="{x0}" y1="{ty:.1f}" x2="{x1}" y2="{ty:.1f}"/>'
                   f'<text x="{x0 + 3}" y="{ty - 3:.1f}">{escape(label)}</text></g>')
        if t["peaks"]:
            pts = []
            for k, v in enumerate(t["peaks"]):
                pts += [f"{x0 + k * day_w:.1f},{y(v):.1f}", f"{x0 + (k + 1) * day_w:.1f},{y(v):.1f}"]
            out.append(f'<polyline class="window-peak" data-rule="{escape(t["rule_id"])}" points="{" ".join(pts)}">'
                       f'<title>{escape(t["rule_id"])}: most events in its {_dur(t["window_s"])} window each day</title></polyline>')

    # Alerts: a span in the lane above the plot, fired ▲ to resolved ● (or to now, still firing).
    for a in tl["alerts"]:
        sx = x(a["started_at"])
        ex = x(a["resolved_at"] or now)
        ly = y_top - 9
        what = (f"{a['rule_id']} ({a['kind']}, {a['severity']}) fired {_utc(a['started_at'])}"
                + (f", resolved {_utc(a['resolved_at'])}" if a["resolved_at"] else ", firing now"))
        href = f"slack/{escape(a['alert_id'])}" if a["slack"] else None
        out.append(f'<g class="alert {escape(a["state"])}" data-alert="{escape(a["alert_id"])}" data-rule="{escape(a["rule_id"])}">'
                   + (f'<a href="{href}" target="_blank" rel="noopener noreferrer">' if href else "")
                   + f'<title>{escape(what)}{" — open its Slack thread" if href else ""}</title>'
                   f'<line x1="{sx:.1f}" y1="{ly}" x2="{max(ex, sx + 1):.1f}" y2="{ly}"/>'
                   + (f'<circle class="resolved" cx="{ex:.1f}" cy="{ly}" r="3.5"/>' if a["resolved_at"] else "")
                   + f'<path class="fired" d="M{sx - 4:.1f},{ly + 4} L{sx + 4:.1f},{ly + 4} L{sx:.1f},{ly - 4} Z"/>'
                   + ("</a>" if href else "") + "</g>")
    out.append("</svg>")
    return Markup("".join(out))


_ENV = None


def render(board: dict, page: str = "board") -> str:
    """The board page, or (``page="day"``) one indicator's events of one day, from
    ``alerts.board.day_events`` (Jinja2 with autoescaping: every feed text is escaped)."""
    global _ENV
    if _ENV is None:
        import jinja2

        env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        env.filters.update(utc=_utc, href=_href, since=_since, frame=_frame, span=_span)
        _ENV = env
    now = board["generated_at"]
    template = _ENV.from_string(TEMPLATE.read_text(encoding="utf-8"))
    return template.render(b=board, page=page, ago=lambda t: _ago(t, now), refresh_s=REFRESH_S,
                           timeline=lambda i: timeline_svg(i.get("timeline"), i, now))


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

    @app.get("/day", response_class=HTMLResponse)
    def day_page(indicator: str, day: date) -> HTMLResponse:
        """One indicator's events of one UTC day, each with its reports, frame and alerts."""
        from alerts.board import day_events

        board = day_events(BoardConfig.from_env(), indicator, day)
        return HTMLResponse(render(board, page="day"), status_code=404 if board["status"] == "error" else 200,
                            headers={"Cache-Control": "no-store"})

    @app.get("/slack/{alert_id}")
    def slack_thread_link(alert_id: str) -> Response:
        """To the alert's thread in Slack: the permalink Slack gives (``chat.getPermalink``) for
        the message that opened it, asked through the Airflow Slack connection."""
        from alerts.board import slack_thread

        msg = slack_thread(BoardConfig.from_env(), alert_id)
        if msg is None:
            return _problem(404, f"Alert {alert_id} has no message in Slack: it went to the local sink, or is not delivered yet.")
        try:
            client = _slack_client()
        except LookupError as exc:
            return _problem(503, str(exc))
        from slack_sdk.errors import SlackApiError

        try:
            resp = client.chat_getPermalink(channel=msg["channel"], message_ts=msg["ts"])
        except SlackApiError as exc:
            return _problem(502, f"Slack answered {exc.response.get('error')} to chat.getPermalink for channel {msg['channel']}, "
                                 f"message {msg['ts']}.")
        except Exception as exc:  # network: Slack unreachable, timeout
            return _problem(502, f"Cannot reach Slack for chat.getPermalink ({type(exc).__name__}: {exc}).")
        link = _href(resp.get("permalink"))
        if link is None:
            return _problem(502, f"Slack gave no usable permalink for channel {msg['channel']}, message {msg['ts']}.")
        return RedirectResponse(link, status_code=303)

    @app.get("/icon.svg")
    def icon() -> Response:
        return Response(ICON, media_type="image/svg+xml")

    return app


def _problem(status: int, message: str):
    from fastapi.responses import HTMLResponse
    from markupsafe import escape

    return HTMLResponse(f'<!doctype html><meta charset="utf-8"><title>Marsad · Slack thread</title>'
                        f'<p class="problem">{escape(message)}</p><p><a href="../">Back to the board</a></p>', status_code=status)


def _slack_client():
    """A slack-sdk client from the Airflow Slack connection (as delivery uses it), or LookupError."""
    from marsad_airflow import SLACK_CONN_ID, _slack_connection_exists

    if not _slack_connection_exists():
        raise LookupError(f"No Airflow connection {SLACK_CONN_ID!r}: the board cannot ask Slack for the thread's link.")
    from airflow.providers.slack.hooks.slack import SlackHook

    return SlackHook(slack_conn_id=SLACK_CONN_ID, timeout=15).client


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
