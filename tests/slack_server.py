"""A local HTTP server that speaks the parts of Slack's Web API Marsad uses.

It keeps channels and messages (with threads and message metadata), records every
request it receives, and can be told to fail the next calls of a method with a 429 and
Retry-After, a 5xx, a Slack error such as ``invalid_auth``, a stall (timeout), a dropped
answer, or a crash of the client; or to hang (accept every call and answer none).
Run it alone with ``python tests/slack_server.py PORT`` to point a dev setup at it.

Reading a channel follows Slack's documentation, because recovering a message after a lost
answer depends on it:

- ``conversations.history`` returns the channel's *parent* messages, newest first: replies in
  a thread are left out, except those also sent to the channel (``reply_broadcast``). A parent
  with replies carries ``thread_ts`` (its own ts), ``reply_count`` and ``latest_reply``.
- ``conversations.replies`` returns one thread, the parent first, then its replies oldest
  first (``ts`` may name the parent or any reply; an unknown ``ts`` is ``thread_not_found``).
- Both page with ``limit`` (history: default 100, at most 999; replies: default 1000) and an
  opaque ``cursor``: ``has_more`` and ``response_metadata.next_cursor`` say there is more.
  ``page_cap`` lowers every page further (Slack caps pages at 15 for some apps). ``oldest`` and
  ``latest`` bound the time range, exclusive unless ``inclusive`` is true.
- A message's metadata is returned only with ``include_all_metadata=true``.

Interactivity (buttons), as Slack documents it:

- ``chat.update`` needs ``channel`` and the ``ts`` of an existing message (``message_not_found``)
  that this app posted (``cant_update_message`` for anyone else's), and text or blocks
  (``no_text``). Blocks posted without a ``block_id`` get one from Slack, as in Slack.
- ``conversations.members`` (paged like history: ``limit`` default 100, at most 1000) and
  ``usergroups.users.list`` (``no_such_subteam``) say who may act.
- Tokens have types: the bot token (``xoxb-``) calls the Web API; the app-level token
  (``xapp-``) may call only ``apps.connections.open``, in the Authorization header; each
  refuses the other's methods with ``not_allowed_token_type``.
- ``apps.connections.open`` answers a ``ws://`` URL on loopback (a port other than 443, which
  slack-sdk's built-in client accepts without TLS) with a single-use ticket. The Socket Mode
  server sends ``hello`` on connect, then the envelopes a test pushes (``press``): type
  ``interactive``, an ``envelope_id``, ``accepts_response_payload`` and a ``block_actions``
  payload built from the stored message, so only a button that the message really carries can
  be pressed. Acknowledgements (``{"envelope_id": ...}``) are recorded (``acks``).
- Each press carries a ``response_url`` on this server; it takes at most 5 posts (Slack: five
  times within 30 minutes) and records them (``responses``): ephemeral replies to the presser.
- ``signed_request`` builds the HTTP form of an interaction (``payload=`` form body, signed
  with the signing secret: ``X-Slack-Signature``, ``X-Slack-Request-Timestamp``) for an app's
  request URL.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve as ws_serve

BOT_USER = "UMARSAD"
BOT_ID = "B0MARSAD"
APP_ID = "A0MARSAD"
TEAM = {"id": "T0MARSAD", "domain": "marsad-test"}
RESPONSE_URL_USES = 5  # Slack: a response_url takes up to five posts within 30 minutes


@dataclass
class Request:
    method: str  # Slack method, e.g. chat.postMessage
    http: str
    headers: dict
    params: dict


@dataclass
class SlackState:
    token: str = "xoxb-marsad-test"
    channels: dict[str, str] = field(default_factory=lambda: {"C0ALERTS": "marsad-alerts", "C0OPS": "marsad-ops"})
    messages: dict[str, list[dict]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    failures: dict[str, list] = field(default_factory=dict)
    uploads: dict[str, dict] = field(default_factory=dict)  # file id -> {filename, length, data}
    clock: float = 1_700_000_000.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    page_cap: int | None = None  # at most this many messages a page, whatever ``limit`` asks
    answering: threading.Event = field(default_factory=lambda: _set(threading.Event()))  # cleared: hang
    held: int = 0  # calls waiting for an answer while hung
    active: int = 0  # calls being handled (held ones included)
    tickets: int = 0  # held calls are carried out in the order they came, once released
    served: int = 0
    turns: threading.Condition = field(default_factory=threading.Condition)
    # Interactivity
    app_token: str = "xapp-1-A0MARSAD-1-marsadtest"
    # The bot token's scopes: every answer to it carries them in X-OAuth-Scopes, and a method
    # whose scope is missing answers missing_scope with needed/provided, as Slack documents.
    scopes: list[str] = field(default_factory=lambda: list(BOT_SCOPES))
    signing_secret: str = "8f742231b10e8888abcd99yyyzzz85a5"
    users: dict[str, str] = field(default_factory=lambda: {BOT_USER: "marsad", "U0ALICE": "alice", "U0BOB": "bob", "U0MALLORY": "mallory"})
    members: dict[str, list[str]] = field(default_factory=lambda: {"C0ALERTS": [BOT_USER, "U0ALICE", "U0BOB"], "C0OPS": [BOT_USER, "U0ALICE"]})
    usergroups: dict[str, list[str]] = field(default_factory=lambda: {"S0ONCALL": ["U0BOB"]})
    ws_tickets: set = field(default_factory=set)  # apps.connections.open tickets not used yet
    sockets: list = field(default_factory=list)  # open Socket Mode connections
    envelopes: list[dict] = field(default_factory=list)  # every envelope pushed
    acks: list[dict] = field(default_factory=list)  # every message the app sent back on the socket
    response_urls: dict[str, dict] = field(default_factory=dict)  # id -> {uses, channel, ts, user}
    responses: dict[str, list[dict]] = field(default_factory=dict)  # id -> what the app posted to it
    changed: threading.Condition = field(default_factory=threading.Condition)  # notified on acks and responses

    def next_ts(self) -> str:
        self.clock = max(self.clock + 0.000100, time.time())
        return f"{self.clock:.6f}"

    def channel_id(self, ref: str) -> str | None:
        if ref in self.channels:
            return ref
        name = ref.lstrip("#")
        for cid, cname in self.channels.items():
            if cname == name:
                return cid
        return None


def _set(event: threading.Event) -> threading.Event:
    event.set()
    return event


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true")


def _cursor(ts: str) -> str:
    return base64.b64encode(f"next_ts:{ts}".encode()).decode()


def _in_range(ts: str, p: dict) -> bool:
    """``oldest`` < ts < ``latest`` (``<=`` with ``inclusive``), as conversations.* take them."""
    t = float(ts)
    oldest = float(p["oldest"]) if p.get("oldest") not in (None, "") else None
    latest = float(p["latest"]) if p.get("latest") not in (None, "") else None
    inclusive = _truthy(p.get("inclusive"))
    if oldest is not None and (t < oldest or (t == oldest and not inclusive)):
        return False
    if latest is not None and (t > latest or (t == latest and not inclusive)):
        return False
    return True


# The scope each bot-token method of the stand-in needs (public channels; Slack's docs per method).
METHOD_SCOPES = {
    "chat.postMessage": "chat:write", "chat.update": "chat:write", "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write", "conversations.list": "channels:read", "conversations.members": "channels:read",
    "conversations.history": "channels:history", "conversations.replies": "channels:history", "usergroups.users.list": "usergroups:read",
}
BOT_SCOPES = ("chat:write", "channels:read", "channels:history", "files:write", "usergroups:read")


class _Handler(BaseHTTPRequestHandler):
    server: "SlackServer"

    def log_message(self, *args):  # quiet
        pass

    def _params(self) -> dict:
        url = urlsplit(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        ctype = self.headers.get("Content-Type", "")
        if body:
            if "json" in ctype:
                params.update(json.loads(body))
            else:
                params.update({k: v[0] for k, v in parse_qs(body.decode()).items()})
        for key in ("blocks", "metadata"):
            if isinstance(params.get(key), str):
                try:
                    params[key] = json.loads(params[key])
                except json.JSONDecodeError:
                    pass
        return params

    def _reply(self, status: int, obj: dict | None, headers: dict | None = None) -> None:
        data = json.dumps(obj or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def _handle(self, http: str) -> None:
        state = self.server.state
        with state.lock:
            state.active += 1
        try:
            self._handle_call(http)
        finally:
            with state.lock:
                state.active -= 1

    def _handle_call(self, http: str) -> None:
        state = self.server.state
        path = urlsplit(self.path).path
        if path.startswith("/upload/"):  # step 2 of files_upload_v2: raw bytes to the upload URL
            fid = path.rsplit("/", 1)[-1]
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with state.lock:
                state.requests.append(Request("upload", http, dict(self.headers), {"file_id": fid, "bytes": len(data)}))
                if fid not in state.uploads:
                    return self._reply(404, {"ok": False})
                state.uploads[fid]["data"] = data
            return self._reply(200, {"ok": True})
        if path.startswith("/actions/"):  # a press's response_url
            return self._response_url(path.rsplit("/", 1)[-1])
        if not path.startswith("/api/"):
            return self._reply(404, {"ok": False, "error": "unknown_method"})
        method = path[len("/api/"):]
        params = self._params()
        with state.lock:
            state.requests.append(Request(method, http, dict(self.headers), params))
            queue = state.failures.get(method) or []
            failure = queue.pop(0) if queue else None
        if not state.answering.is_set():  # hung: the call is taken, no answer until released
            with state.turns:
                turn = state.tickets
                state.tickets += 1
                state.held += 1
            state.answering.wait()
            with state.turns:
                state.turns.wait_for(lambda: state.served == turn)
            try:
                return self._answer(method, params, failure)
            finally:
                with state.turns:
                    state.held -= 1
                    state.served += 1
                    state.turns.notify_all()
        return self._answer(method, params, failure)

    def _response_url(self, rid: str) -> None:
        state = self.server.state
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with state.lock:
            hook = state.response_urls.get(rid)
            if hook is None:
                return self._reply(404, {"ok": False, "error": "no_active_hooks"})
            if hook["uses"] >= RESPONSE_URL_USES:
                return self._reply(404, {"ok": False, "error": "used_url"})
            try:
                msg = json.loads(body)
            except json.JSONDecodeError:
                return self._reply(400, {"ok": False, "error": "invalid_payload"})
            hook["uses"] += 1
            state.responses.setdefault(rid, []).append(msg)
        with state.changed:
            state.changed.notify_all()
        self._reply(200, {"ok": True})

    def _answer(self, method: str, params: dict, failure) -> None:
        state = self.server.state
        if failure is not None:
            kind = failure[0] if isinstance(failure, tuple) else failure
            if kind == "ratelimited":
                return self._reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(failure[1])})
            if kind == "server_error":
                return self._reply(failure[1] if isinstance(failure, tuple) else 500, {"ok": False, "error": "fatal_error"})
            if kind == "stall":  # do the work, then answer too late (the client has timed out)
                result = self._dispatch(method, params)
                time.sleep(failure[1])
                return self._reply(200, result)
            if kind == "drop":  # accept the call, post, but never answer (the connection drops)
                self._dispatch(method, params)
                self.close_connection = True
                return
            if kind == "crash":  # do the work, then run the callback (e.g. kill -9 the client), never answer
                self._dispatch(method, params)
                failure[1]()
                self.close_connection = True
                return
            return self._reply(200, {"ok": False, "error": kind})
        auth = self.headers.get("Authorization", "")
        if not auth:  # a token as a POST parameter is refused too: Slack wants the header for app tokens
            return self._reply(200, {"ok": False, "error": "not_authed"})
        token = auth.removeprefix("Bearer ")
        wants_app_token = method == "apps.connections.open"
        if token not in (state.token, state.app_token):
            return self._reply(200, {"ok": False, "error": "invalid_auth"})
        if (token == state.app_token) != wants_app_token:
            return self._reply(200, {"ok": False, "error": "not_allowed_token_type"})
        if wants_app_token:
            return self._reply(200, self._dispatch(method, params))
        granted = ",".join(state.scopes)
        needed = METHOD_SCOPES.get(method)
        if needed and needed not in state.scopes:
            return self._reply(200, {"ok": False, "error": "missing_scope", "needed": needed, "provided": granted},
                               {"X-OAuth-Scopes": granted})
        self._reply(200, self._dispatch(method, params), {"X-OAuth-Scopes": granted})

    def _dispatch(self, method: str, p: dict) -> dict:
        state = self.server.state
        with state.lock:
            if method == "auth.test":
                return {"ok": True, "user_id": "UMARSAD", "team": "test"}
            if method == "chat.postMessage":
                cid = state.channel_id(p.get("channel", ""))
                if cid is None:
                    return {"ok": False, "error": "channel_not_found"}
                msg = {"type": "message", "ts": state.next_ts(), "text": p.get("text", ""), "blocks": _with_block_ids(p.get("blocks")),
                       "thread_ts": p.get("thread_ts"), "metadata": p.get("metadata"), "user": BOT_USER, "bot_id": BOT_ID}
                if msg["thread_ts"] and _truthy(p.get("reply_broadcast")):
                    msg["subtype"] = "thread_broadcast"
                state.messages.setdefault(cid, []).append(msg)
                return {"ok": True, "channel": cid, "ts": msg["ts"], "message": msg}
            if method == "chat.update":
                if not p.get("channel") or not p.get("ts"):
                    return {"ok": False, "error": "invalid_arguments"}
                cid = state.channel_id(p["channel"])
                if cid is None:
                    return {"ok": False, "error": "channel_not_found"}
                msg = next((m for m in state.messages.get(cid, []) if m["ts"] == p["ts"]), None)
                if msg is None:
                    return {"ok": False, "error": "message_not_found"}
                if msg.get("user") != BOT_USER:
                    return {"ok": False, "error": "cant_update_message"}
                if not p.get("text") and not p.get("blocks"):
                    return {"ok": False, "error": "no_text"}
                msg.update(text=p.get("text", msg["text"]), blocks=_with_block_ids(p.get("blocks")) if p.get("blocks") else msg["blocks"],
                           edited={"user": BOT_USER, "ts": state.next_ts()})
                return {"ok": True, "channel": cid, "ts": msg["ts"], "text": msg["text"], "message": self._view(cid, msg, False)}
            if method == "apps.connections.open":
                ticket = secrets.token_hex(8)
                state.ws_tickets.add(ticket)
                return {"ok": True, "url": f"ws://127.0.0.1:{self.server.ws_port}/link/?ticket={ticket}&app_id={APP_ID}"}
            if method == "conversations.members":
                cid = state.channel_id(p.get("channel", ""))
                if cid is None:
                    return {"ok": False, "error": "channel_not_found"}
                return self._page_ids(state.members.get(cid, []), "members", p, default=100, most=1000)
            if method == "usergroups.users.list":
                if p.get("usergroup") not in state.usergroups:
                    return {"ok": False, "error": "no_such_subteam"}
                return {"ok": True, "users": list(state.usergroups[p["usergroup"]])}
            if method == "files.getUploadURLExternal":
                fid = f"F{len(state.uploads) + 1:06d}"
                state.uploads[fid] = {"filename": p.get("filename"), "length": int(p.get("length") or 0), "data": None}
                port = self.server.server_address[1]
                return {"ok": True, "file_id": fid, "upload_url": f"http://127.0.0.1:{port}/upload/{fid}"}
            if method == "files.completeUploadExternal":
                files = p.get("files")
                files = json.loads(files) if isinstance(files, str) else files
                cid = state.channel_id(p.get("channel_id", ""))
                if cid is None:
                    return {"ok": False, "error": "channel_not_found"}
                for f in files:
                    up = state.uploads.get(f["id"])
                    if up is None or up["data"] is None or len(up["data"]) != up["length"]:
                        return {"ok": False, "error": "file_upload_incomplete"}
                msg = {"type": "message", "ts": state.next_ts(), "text": p.get("initial_comment", ""), "thread_ts": p.get("thread_ts"), "user": BOT_USER,
                       "files": [{"id": f["id"], "title": f.get("title"), "name": state.uploads[f["id"]]["filename"]} for f in files]}
                state.messages.setdefault(cid, []).append(msg)
                return {"ok": True, "files": msg["files"]}
            if method == "conversations.list":
                return {"ok": True, "channels": [{"id": c, "name": n} for c, n in state.channels.items()], "response_metadata": {"next_cursor": ""}}
            if method == "conversations.history":
                cid = state.channel_id(p.get("channel", ""))
                if cid is None:
                    return {"ok": False, "error": "channel_not_found"}
                msgs = state.messages.get(cid, [])
                parents = [m for m in reversed(msgs)
                           if (not m.get("thread_ts") or m["thread_ts"] == m["ts"] or m.get("subtype") == "thread_broadcast") and _in_range(m["ts"], p)]
                return self._page(cid, parents, p, default=100, most=999)
            if method == "conversations.replies":
                cid = state.channel_id(p.get("channel", ""))
                if cid is None:
                    return {"ok": False, "error": "channel_not_found"}
                msgs = state.messages.get(cid, [])
                named = next((m for m in msgs if m["ts"] == p.get("ts")), None)
                if named is None:
                    return {"ok": False, "error": "thread_not_found"}
                root_ts = named.get("thread_ts") or named["ts"]
                parent = next((m for m in msgs if m["ts"] == root_ts), named)
                replies = [m for m in msgs if m.get("thread_ts") == root_ts and m["ts"] != root_ts and _in_range(m["ts"], p)]
                return self._page(cid, [parent, *replies], p, default=1000, most=1000)
            if method == "chat.getPermalink":  # the workspace "test": https://test.slack.com/archives/<channel>/p<ts without the dot>
                cid = state.channel_id(p.get("channel", ""))
                if cid is None:
                    return {"ok": False, "error": "channel_not_found"}
                msg = next((m for m in state.messages.get(cid, []) if m["ts"] == p.get("message_ts")), None)
                if msg is None:
                    return {"ok": False, "error": "message_not_found"}
                link = f"https://test.slack.com/archives/{cid}/p{msg['ts'].replace('.', '')}"
                if msg.get("thread_ts") and msg["thread_ts"] != msg["ts"]:
                    link += f"?thread_ts={msg['thread_ts']}&cid={cid}"
                return {"ok": True, "channel": cid, "permalink": link}
            return {"ok": False, "error": "unknown_method"}


    def _page_ids(self, ids: list[str], key: str, p: dict, default: int, most: int) -> dict:
        """A page of a list of ids (``conversations.members``), cursor as Slack's: opaque."""
        try:
            limit = int(p.get("limit") or default)
        except ValueError:
            return {"ok": False, "error": "invalid_limit"}
        limit = max(1, min(limit, most, self.server.state.page_cap or most))
        start = 0
        if p.get("cursor"):
            try:
                start = int(base64.b64decode(p["cursor"], validate=True).decode().removeprefix("offset:"))
            except Exception:
                return {"ok": False, "error": "invalid_cursor"}
        more = start + limit < len(ids)
        nxt = base64.b64encode(f"offset:{start + limit}".encode()).decode() if more else ""
        return {"ok": True, key: ids[start:start + limit], "response_metadata": {"next_cursor": nxt}}

    def _view(self, cid: str, msg: dict, metadata: bool) -> dict:
        """A stored message as Slack returns it: thread fields on a parent, metadata on request."""
        out = {k: v for k, v in msg.items() if v is not None and k != "metadata"}
        if metadata and msg.get("metadata"):
            out["metadata"] = msg["metadata"]
        if not msg.get("thread_ts"):
            replies = [m for m in self.server.state.messages.get(cid, []) if m.get("thread_ts") == msg["ts"]]
            if replies:
                out.update(thread_ts=msg["ts"], reply_count=len(replies), latest_reply=replies[-1]["ts"])
        return out

    def _page(self, cid: str, items: list[dict], p: dict, default: int, most: int) -> dict:
        """One page of ``items`` (already in the method's order) from ``cursor``, at most ``limit``."""
        state = self.server.state
        try:
            limit = int(p.get("limit") or default)
        except ValueError:
            return {"ok": False, "error": "invalid_limit"}
        limit = max(1, min(limit, most, state.page_cap or most))
        start = 0
        if p.get("cursor"):
            try:
                ts = base64.b64decode(p["cursor"], validate=True).decode().removeprefix("next_ts:")
                start = next(i for i, m in enumerate(items) if m["ts"] == ts)
            except Exception:
                return {"ok": False, "error": "invalid_cursor"}
        page = items[start:start + limit]
        more = start + limit < len(items)
        metadata = _truthy(p.get("include_all_metadata"))
        return {"ok": True, "messages": [self._view(cid, m, metadata) for m in page], "has_more": more,
                "response_metadata": {"next_cursor": _cursor(items[start + limit]["ts"]) if more else ""}}


def _with_block_ids(blocks):
    """Slack gives every block without a ``block_id`` one of its own."""
    if not isinstance(blocks, list):
        return blocks
    return [dict(b, block_id=b.get("block_id") or secrets.token_urlsafe(4)) if isinstance(b, dict) else b for b in blocks]


def _buttons(blocks) -> list[tuple[str, dict]]:
    """(block_id, element) of every button a message shows: in actions blocks and as section accessories."""
    out = []
    for b in blocks or []:
        if b.get("type") == "actions":
            out += [(b["block_id"], e) for e in b.get("elements", []) if e.get("type") == "button"]
        elif b.get("type") == "section" and (b.get("accessory") or {}).get("type") == "button":
            out.append((b["block_id"], b["accessory"]))
    return out


class SlackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__((host, port), _Handler)
        self.state = SlackState()
        self._thread: threading.Thread | None = None
        self._ws = ws_serve(self._socket_mode, "127.0.0.1", 0, process_request=self._ws_admit, ping_interval=None)
        self.ws_port = self._ws.socket.getsockname()[1]
        self._ws_thread: threading.Thread | None = None
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/"

    def start(self) -> "SlackServer":
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        self._ws_thread = threading.Thread(target=self._ws.serve_forever, daemon=True)
        self._ws_thread.start()
        return self

    def stop(self) -> None:
        self.release()
        self.shutdown()
        self.server_close()
        self._ws.shutdown()

    # Socket Mode

    def _ws_admit(self, connection, request):
        """Only a ticket from apps.connections.open opens a connection, once."""
        query = parse_qs(urlsplit(request.path).query)
        ticket = (query.get("ticket") or [""])[0]
        with self.state.lock:
            if ticket not in self.state.ws_tickets:
                return connection.respond(401, "invalid or used ticket\n")
            self.state.ws_tickets.discard(ticket)
        return None

    def _socket_mode(self, connection) -> None:
        state = self.state
        with state.lock:
            state.sockets.append(connection)
        try:
            connection.send(json.dumps({
                "type": "hello", "num_connections": len(state.sockets),
                "debug_info": {"host": "applink-stand-in", "build_number": 1, "approximate_connection_time": 18060},
                "connection_info": {"app_id": APP_ID},
            }))
            for raw in connection:
                try:
                    msg = json.loads(raw)
                except (TypeError, json.JSONDecodeError):
                    msg = {"unparsed": raw}
                with state.lock:
                    state.acks.append(msg)
                with state.changed:
                    state.changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            with state.lock:
                if connection in state.sockets:
                    state.sockets.remove(connection)

    def connected(self, timeout: float = 30.0) -> bool:
        """Wait until an app holds a Socket Mode connection."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.state.sockets:
                return True
            time.sleep(0.02)
        return False

    def block_actions(self, channel: str, ts: str, user: str, action_id: str, value: str | None = None) -> dict:
        """The ``block_actions`` payload Slack sends when ``user`` presses the button ``action_id``
        (with ``value``, if several share the id) of the stored message ``ts``: only a button the
        message shows can be pressed."""
        state = self.state
        with state.lock:
            cid = state.channel_id(channel)
            msg = next((m for m in state.messages.get(cid or "", []) if m["ts"] == ts), None)
            assert msg is not None, f"no message {ts} in {channel}"
            found = [(bid, e) for bid, e in _buttons(msg.get("blocks")) if e.get("action_id") == action_id and (value is None or e.get("value") == value)]
            assert found, f"the message shows no button {action_id} {value or ''}: {[e.get('action_id') for _, e in _buttons(msg.get('blocks'))]}"
            block_id, button = found[0]
            rid = f"{next(self._ids)}{secrets.token_hex(6)}"
            state.response_urls[rid] = {"uses": 0, "channel": cid, "ts": ts, "user": user}
            port = self.server_address[1]
            name = state.users.get(user, user.lower())
            view = {k: v for k, v in msg.items() if v is not None and k != "metadata"}
        return {
            "type": "block_actions",
            "user": {"id": user, "username": name, "name": name, "team_id": TEAM["id"]},
            "api_app_id": APP_ID,
            "token": "Shh_its_a_seekrit",  # the deprecated verification token Slack still sends
            "container": {"type": "message", "message_ts": ts, "channel_id": cid, "is_ephemeral": False},
            "trigger_id": f"{int(time.time())}.{secrets.token_hex(4)}",
            "team": dict(TEAM),
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": cid, "name": state.channels[cid]},
            "message": view,
            "state": {"values": {}},
            "response_url": f"http://127.0.0.1:{port}/actions/{TEAM['id']}/{rid}",
            "actions": [{"action_id": action_id, "block_id": block_id, "text": button.get("text"), "value": button.get("value"),
                         "style": button.get("style"), "type": "button", "action_ts": f"{time.time():.6f}"}],
        }

    def push(self, payload: dict, kind: str = "interactive") -> str:
        """Send an envelope over the app's Socket Mode connection; its ``envelope_id``."""
        with self.state.lock:
            assert self.state.sockets, "no Socket Mode connection: is the app listening?"
            connection = self.state.sockets[-1]
            envelope = {"envelope_id": str(uuid.uuid4()), "payload": payload, "type": kind, "accepts_response_payload": False}
            self.state.envelopes.append(envelope)
        connection.send(json.dumps(envelope))
        return envelope["envelope_id"]

    def refresh(self, reason: str = "refresh_requested") -> None:
        """Slack's ``disconnect`` message on every open connection (Slack refreshes connections
        regularly; the app must open a new one with apps.connections.open). The old connection
        stays open until the app closes it, as it may in Slack for a few seconds."""
        with self.state.lock:
            sockets = list(self.state.sockets)
        for connection in sockets:
            connection.send(json.dumps({"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-stand-in"}}))

    def press(self, channel: str, ts: str, user: str, action_id: str, value: str | None = None) -> str:
        """A user presses a button of a message: the envelope goes out over Socket Mode."""
        return self.push(self.block_actions(channel, ts, user, action_id, value))

    def wait_for(self, check, timeout: float = 30.0):
        """Wait until ``check()`` returns something true (an ack, a response, an edit) and return it."""
        end = time.monotonic() + timeout
        with self.state.changed:
            while True:
                got = check()
                if got or time.monotonic() >= end:
                    return got
                self.state.changed.wait(min(0.05, max(0.0, end - time.monotonic())))

    def ack_of(self, envelope_id: str) -> dict | None:
        return next((a for a in self.state.acks if a.get("envelope_id") == envelope_id), None)

    def responses_to(self, response_url: str) -> list[dict]:
        return self.state.responses.get(response_url.rsplit("/", 1)[-1], [])

    def message(self, channel: str, ts: str) -> dict | None:
        cid = self.state.channel_id(channel)
        return next((m for m in self.state.messages.get(cid or "", []) if m["ts"] == ts), None)

    def post_as(self, user: str, channel: str, text: str) -> str:
        """A message some person posted (the app may not edit it)."""
        with self.state.lock:
            cid = self.state.channel_id(channel)
            msg = {"type": "message", "ts": self.state.next_ts(), "text": text, "user": user}
            self.state.messages.setdefault(cid, []).append(msg)
            return msg["ts"]

    def signed_request(self, payload: dict, timestamp: int | None = None, secret: str | None = None) -> tuple[bytes, dict]:
        """An interaction as Slack POSTs it to a request URL: a form with ``payload``, signed."""
        body = urlencode({"payload": json.dumps(payload)}).encode()
        ts = str(int(time.time()) if timestamp is None else timestamp)
        base = f"v0:{ts}:".encode() + body
        sig = "v0=" + hmac.new((secret or self.state.signing_secret).encode(), base, hashlib.sha256).hexdigest()
        return body, {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig}

    # helpers for assertions
    def calls(self, method: str) -> list[Request]:
        return [r for r in self.state.requests if r.method == method]

    def posts(self) -> list[dict]:
        return [r.params for r in self.calls("chat.postMessage")]

    def fail_next(self, method: str, *failures) -> None:
        self.state.failures.setdefault(method, []).extend(failures)

    def hang(self) -> None:
        """Accept every call and answer none (a hung Slack) until ``release``."""
        self.state.answering.clear()

    def release(self) -> None:
        """Answer again: held calls are carried out now, in the order they came (a post may land
        after its client gave up, but before anything that client asked later)."""
        self.state.answering.set()

    def held(self) -> int:
        with self.state.turns:
            return self.state.held

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until every call taken has been carried out (after ``release``)."""
        end = time.monotonic() + timeout
        while self.state.active and time.monotonic() < end:
            time.sleep(0.01)
        assert not self.state.active, f"{self.state.active} call(s) still being handled"


if __name__ == "__main__":
    import sys

    srv = SlackServer(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0).start()
    print(f"Slack Web API stand-in at {srv.base_url} (token {srv.state.token})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()
