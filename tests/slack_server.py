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
"""
from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


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
        if auth != f"Bearer {state.token}":
            return self._reply(200, {"ok": False, "error": "invalid_auth" if auth else "not_authed"})
        self._reply(200, self._dispatch(method, params))

    def _dispatch(self, method: str, p: dict) -> dict:
        state = self.server.state
        with state.lock:
            if method == "auth.test":
                return {"ok": True, "user_id": "UMARSAD", "team": "test"}
            if method == "chat.postMessage":
                cid = state.channel_id(p.get("channel", ""))
                if cid is None:
                    return {"ok": False, "error": "channel_not_found"}
                msg = {"type": "message", "ts": state.next_ts(), "text": p.get("text", ""), "blocks": p.get("blocks"),
                       "thread_ts": p.get("thread_ts"), "metadata": p.get("metadata")}
                if msg["thread_ts"] and _truthy(p.get("reply_broadcast")):
                    msg["subtype"] = "thread_broadcast"
                state.messages.setdefault(cid, []).append(msg)
                return {"ok": True, "channel": cid, "ts": msg["ts"], "message": msg}
            if method == "chat.update":
                cid = state.channel_id(p.get("channel", ""))
                for msg in state.messages.get(cid or "", []):
                    if msg["ts"] == p.get("ts"):
                        msg.update(text=p.get("text", msg["text"]), blocks=p.get("blocks", msg["blocks"]), edited=True)
                        return {"ok": True, "channel": cid, "ts": msg["ts"]}
                return {"ok": False, "error": "message_not_found"}
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
                msg = {"type": "message", "ts": state.next_ts(), "text": p.get("initial_comment", ""), "thread_ts": p.get("thread_ts"),
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


class SlackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__((host, port), _Handler)
        self.state = SlackState()
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/"

    def start(self) -> "SlackServer":
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        self.shutdown()
        self.server_close()

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
