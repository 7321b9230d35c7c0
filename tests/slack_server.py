"""A local HTTP server that speaks the parts of Slack's Web API Marsad uses.

It keeps channels and messages (with threads and message metadata), records every
request it receives, and can be told to fail the next calls of a method with a 429 and
Retry-After, a 5xx, a Slack error such as ``invalid_auth``, or a stall (timeout).
Run it alone with ``python tests/slack_server.py PORT`` to point a dev setup at it.
"""
from __future__ import annotations

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
            if kind == "drop":  # accept the call, post, but never answer (crash between post and record)
                self._dispatch(method, params)
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
                oldest = float(p.get("oldest") or 0)
                msgs = [
                    {k: v for k, v in m.items() if k != "metadata" or str(p.get("include_all_metadata")).lower() in ("1", "true")}
                    for m in reversed(state.messages.get(cid, [])) if float(m["ts"]) >= oldest
                ]
                return {"ok": True, "messages": msgs, "has_more": False}
            return {"ok": False, "error": "unknown_method"}


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
        self.shutdown()
        self.server_close()

    # helpers for assertions
    def calls(self, method: str) -> list[Request]:
        return [r for r in self.state.requests if r.method == method]

    def posts(self) -> list[dict]:
        return [r.params for r in self.calls("chat.postMessage")]

    def fail_next(self, method: str, *failures) -> None:
        self.state.failures.setdefault(method, []).extend(failures)


if __name__ == "__main__":
    import sys

    srv = SlackServer(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0).start()
    print(f"Slack Web API stand-in at {srv.base_url} (token {srv.state.token})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()
