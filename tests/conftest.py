from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
REPO = TESTS.parent
SHARED = REPO.parent / "shared"
CORPORA = SHARED / "corpora"
sys.path.insert(0, str(TESTS))

from slack_server import SlackServer  # noqa: E402


@dataclass
class Route:
    body: bytes
    content_type: str = "application/rss+xml; charset=utf-8"
    status: int = 200
    delay: float = 0.0
    etag: str | None = None
    last_modified: str | None = None
    headers: dict = field(default_factory=dict)


class FeedServer(ThreadingHTTPServer):
    """Serves feeds on loopback like a well-behaved news site: ETag, Last-Modified, 304."""

    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1"):
        super().__init__((host, 0), _FeedHandler)
        self.routes: dict[str, Route] = {}
        self.hits: list[tuple[str, dict]] = []

    def url(self, path: str) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}{path}"

    def serve(self, path: str, body: bytes | str, **kw) -> str:
        if isinstance(body, str):
            body = body.encode("utf-8")
        route = Route(body, **kw)
        if route.etag is None and route.status == 200:
            route.etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
        if route.last_modified is None:
            route.last_modified = formatdate(time.time() - 60, usegmt=True)
        self.routes[path] = route
        return self.url(path)

    def hits_for(self, path: str) -> list[dict]:
        return [h for p, h in self.hits if p == path]


class _FeedHandler(BaseHTTPRequestHandler):
    server: FeedServer

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.path.split("?")[0]
        self.server.hits.append((path, {k.lower(): v for k, v in self.headers.items()}))
        route = self.server.routes.get(path)
        if route is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if route.delay:
            time.sleep(route.delay)
        if route.status == 200 and (
            (route.etag and self.headers.get("If-None-Match") == route.etag)
            or (not route.etag and route.last_modified and self.headers.get("If-Modified-Since") == route.last_modified)
        ):
            self.send_response(304)
            self.send_header("ETag", route.etag or "")
            self.end_headers()
            return
        self.send_response(route.status)
        self.send_header("Content-Type", route.content_type)
        self.send_header("Content-Length", str(len(route.body)))
        if route.etag:
            self.send_header("ETag", route.etag)
        if route.last_modified:
            self.send_header("Last-Modified", route.last_modified)
        for k, v in route.headers.items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(route.body)
        except (BrokenPipeError, ConnectionResetError):
            pass


class Listener:
    """A loopback TCP port that counts the connections made to it and answers nothing: the
    place a test says must never be reached."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.sock = socket.create_server((host, port))
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self):
        self.sock.close()


@pytest.fixture
def feed_server(monkeypatch):
    """A feed server on 127.0.0.1. Feeds on private and loopback addresses are refused unless
    allowed, so this allows exactly 127.0.0.1 (tests of the refusal change the setting)."""
    monkeypatch.setenv("MARSAD_ALLOW_PRIVATE_FEEDS", "127.0.0.1/32")
    srv = FeedServer()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def slack():
    srv = SlackServer().start()
    yield srv
    srv.stop()


def rss(items: list[dict], lang: str = "en", title: str = "Test feed") -> str:
    """A small RSS 2.0 document (our own test content)."""
    from xml.sax.saxutils import escape

    parts = [f'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>{escape(title)}</title><language>{lang}</language>']
    for it in items:
        parts.append("<item>")
        for tag in ("title", "link", "guid", "description", "pubDate"):
            if it.get(tag) is not None:
                parts.append(f"<{tag}>{escape(it[tag])}</{tag}>")
        parts.append("</item>")
    parts.append("</channel></rss>")
    return "".join(parts)


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """Pipeline settings on a fresh warehouse, with the repository's indicators and rules."""
    from marsad.pipeline import Settings

    monkeypatch.setenv("MARSAD_WAREHOUSE", str(tmp_path / "wh.duckdb"))
    s = Settings.from_env(tmp_path / "wh.duckdb")
    s.staging = tmp_path / "staging"
    return s


def write_feeds_yaml(path: Path, feeds: list[dict]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"feeds": feeds}, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_with(marker: str) -> list[int]:
    """Processes whose environment contains this marker (what a test started, by AIRFLOW_HOME or a run id)."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            try:
                if marker.encode() in (p / "environ").read_bytes():
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids
