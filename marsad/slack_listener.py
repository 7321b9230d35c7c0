"""How Slack's button presses reach ``alerts.interact``: Socket Mode, or an HTTP request URL.

**Socket Mode** (``marsad slack listen``; ``make run`` starts it with Airflow when an app-level
token is configured): the listener opens an outbound WebSocket to Slack with slack-sdk's
built-in ``SocketModeClient`` (``apps.connections.open`` with the app-level token, then the
``wss://`` URL it answers), so it works where nothing can reach Airflow from the internet.
Each envelope is acknowledged at once (Slack wants the ack within 3 seconds), then handled.
Run exactly one listener per Slack app and warehouse.

**Request URL** (``marsad slack serve``): a small FastAPI app served by uvicorn, for a team
that prefers Slack's HTTP interactivity. Every request is checked by ``RequestGuard``
(signature, timestamp window, no replay) before its payload is read; it answers 200 at once
and handles the press after the answer.

Tokens, from the environment, else from the Airflow Slack connection (``ops.slack_conn_id``):

| what | variable | connection |
|---|---|---|
| bot token (``xoxb-``): Web API calls | ``MARSAD_SLACK_TOKEN`` | password |
| app-level token (``xapp-``, scope ``connections:write``) | ``MARSAD_SLACK_APP_TOKEN`` | extra ``app_token`` |
| signing secret (request URL only) | ``MARSAD_SLACK_SIGNING_SECRET`` | extra ``signing_secret`` |
| Web API base URL (tests, proxies) | ``MARSAD_SLACK_BASE_URL`` | extra ``base_url`` |
"""
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from alerts.delivery import slack_client
from alerts.interact import PENDING_EVERY_S, InteractionHandler, Refused, RequestGuard

log = logging.getLogger("marsad.slack_listener")


@dataclass
class SlackConfig:
    bot_token: str | None = None
    app_token: str | None = None
    signing_secret: str | None = None
    base_url: str | None = None
    source: str = "environment"


def _connection(conn_id: str) -> tuple[str | None, dict]:
    """(password, extra) of the Airflow connection, or (None, {}) when there is none or no Airflow."""
    try:
        from airflow.models.connection import Connection  # the metadata DB and the AIRFLOW_CONN_* variables

        conn = Connection.get_connection_from_secrets(conn_id)
    except Exception as exc:  # not configured, no metadata DB reachable: the variables are all there is
        log.debug("no Airflow connection %r: %s", conn_id, exc)
        return None, {}
    try:
        extra = conn.extra_dejson or {}
    except Exception:
        extra = {}
    return conn.password, extra


def slack_config(environ: Mapping[str, str] | None = None, use_airflow: bool = True) -> SlackConfig:
    """Tokens from the MARSAD_SLACK_* variables, else the Airflow connection (see the module doc)."""
    env = os.environ if environ is None else environ
    cfg = SlackConfig(env.get("MARSAD_SLACK_TOKEN") or None, env.get("MARSAD_SLACK_APP_TOKEN") or None,
                      env.get("MARSAD_SLACK_SIGNING_SECRET") or None, env.get("MARSAD_SLACK_BASE_URL") or None)
    if use_airflow and not (cfg.bot_token and cfg.app_token):
        conn_id = env.get("MARSAD_SLACK_CONN_ID") or "slack_api_default"
        password, extra = _connection(conn_id)
        if password or extra:
            cfg.source = f"Airflow connection {conn_id}"
        cfg.bot_token = cfg.bot_token or password
        cfg.app_token = cfg.app_token or extra.get("app_token")
        cfg.signing_secret = cfg.signing_secret or extra.get("signing_secret")
        cfg.base_url = cfg.base_url or extra.get("base_url")
    return cfg


def handler_from_settings(cfg: SlackConfig, warehouse: str | Path | None = None) -> InteractionHandler:
    from marsad.settings import load

    settings = load()
    wh = Path(warehouse) if warehouse else settings.path("paths.warehouse")
    client = slack_client(cfg.bot_token, cfg.base_url)
    return InteractionHandler(wh, client, actors=settings.get("ops.actors"))


class SocketModeListener:
    """The Socket Mode connection: ack every envelope at once, hand block_actions to the handler,
    and drain presses queued while the warehouse was busy every ``PENDING_EVERY_S``."""

    def __init__(self, handler: InteractionHandler, app_token: str, pending_every_s: float = PENDING_EVERY_S):
        from slack_sdk.socket_mode import SocketModeClient  # the built-in client: no extra dependency

        self.handler = handler
        self.client = SocketModeClient(app_token=app_token, web_client=handler.client)
        self.client.socket_mode_request_listeners.append(self._on_request)
        self.pending_every_s = pending_every_s
        self._stop = threading.Event()
        self._drainer = threading.Thread(target=self._drain, name="marsad-pending-presses", daemon=True)

    def _on_request(self, client, req) -> None:
        from slack_sdk.socket_mode.response import SocketModeResponse

        client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
        if req.type != "interactive":
            return
        try:
            for outcome in self.handler.handle_payload(req.payload):
                log.info("press: %s%s", outcome.status, f" ({outcome.told})" if outcome.told else "")
        except Exception:
            log.exception("a press could not be handled")

    def _drain(self) -> None:
        while not self._stop.wait(self.pending_every_s):
            try:
                self.handler.apply_pending()
            except Exception:
                log.exception("applying queued presses failed; they stay queued")

    def start(self) -> "SocketModeListener":
        self.client.connect()
        self._drainer.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.client.close()


def http_app(handler: InteractionHandler, signing_secret: str, path: str = "/slack/interactions"):
    """The request-URL endpoint: refuses (401) anything not signed by Slack, stale, or seen before.
    (No ``from __future__ import annotations`` in this module: FastAPI reads the endpoint's
    annotations to inject the request.)"""
    from fastapi import BackgroundTasks, FastAPI, Request, Response

    guard = RequestGuard(signing_secret)
    app = FastAPI(title="Marsad Slack interactions", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post(path)
    async def interactions(request: Request, background: BackgroundTasks) -> Response:
        body = await request.body()
        try:
            payload = guard.payload(body, dict(request.headers))
        except Refused as exc:
            log.warning("refused a request to %s: %s", path, exc)
            return Response(status_code=401, content=f"refused: {exc}\n", media_type="text/plain")
        background.add_task(handler.handle_payload, payload)  # after the 200: Slack wants it within 3 s
        return Response(status_code=200)

    return app


# ----------------------------------------------------------------------------- CLI


def cmd_listen(args) -> int:
    cfg = slack_config()
    missing = [n for n, v in (("bot token (MARSAD_SLACK_TOKEN or the connection's password)", cfg.bot_token),
                              ("app-level token (MARSAD_SLACK_APP_TOKEN or the connection's extra app_token)", cfg.app_token)) if not v]
    if missing:
        print(f"no {' and no '.join(missing)}", file=sys.stderr if not args.check else sys.stdout)
        return 2
    if args.check:
        print(f"tokens from {cfg.source}")
        return 0
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before connecting: a stop never finds the default handler
        signal.signal(sig, lambda *_: done.set())
    handler = handler_from_settings(cfg, args.db)
    listener = SocketModeListener(handler, cfg.app_token).start()
    print(f"marsad: listening for Slack button presses over Socket Mode (tokens from {cfg.source}); warehouse {handler.warehouse}",
          flush=True)
    handler.apply_pending()
    done.wait()
    listener.stop()
    return 0


def cmd_serve(args) -> int:
    import uvicorn

    cfg = slack_config()
    if not (cfg.bot_token and cfg.signing_secret):
        print("marsad: not serving: needs a bot token and a signing secret (MARSAD_SLACK_SIGNING_SECRET or the connection's "
              "extra signing_secret)", file=sys.stderr)
        return 2
    handler = handler_from_settings(cfg, args.db)
    print(f"marsad: Slack request URL at http://{args.host}:{args.port}/slack/interactions (put it behind TLS)", flush=True)
    uvicorn.run(http_app(handler, cfg.signing_secret), host=args.host, port=args.port, log_level="warning")
    return 0


def add_commands(sub) -> None:
    """``marsad slack listen|serve`` into the ``slack`` command group's subparsers."""
    c = sub.add_parser("listen", help="receive Slack button presses over Socket Mode (needs an app-level token)")
    c.add_argument("--db", help="warehouse file (default: paths.warehouse in marsad/settings.yaml, $MARSAD_WAREHOUSE)")
    c.add_argument("--check", action="store_true", help="only say whether the tokens are configured (exit 0) or not (exit 2)")
    c.set_defaults(fn=cmd_listen)
    c = sub.add_parser("serve", help="receive Slack button presses on an HTTP request URL (needs the signing secret)")
    c.add_argument("--db")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, default=3000)
    c.set_defaults(fn=cmd_serve)
