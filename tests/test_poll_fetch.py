"""The poll's fetch side at the HTTP level: what a cycle costs the sites it polls."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sources.fetch import FetchRequest, fetch_sync


class _KeepAliveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # persistent connections, as real news sites serve them

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def do_GET(self):
        etag = '"v1"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        body = b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>'
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.end_headers()
        self.wfile.write(body)


def _server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveHandler)
    srv.daemon_threads = True
    srv.connections, srv.lock = 0, threading.Lock()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_not_modified_polls_reuse_the_connection(monkeypatch):
    """An all-304 cycle keeps its connection to the host: a 304 has no body, and a response
    left unread made the pool close the connection, so every feed cost a new TCP connection."""
    monkeypatch.setenv("MARSAD_ALLOW_PRIVATE_FEEDS", "127.0.0.1/32")
    srv = _server()
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        reqs = [FetchRequest(f"s{i}", f"{base}/feed/{i}.xml", etag='"v1"') for i in range(6)]
        results = fetch_sync(reqs, concurrency=1, per_host=1)
        assert [r.status for r in results] == ["not_modified"] * 6
        assert srv.connections == 1
        fresh = fetch_sync([FetchRequest(f"s{i}", f"{base}/feed/{i}.xml") for i in range(3)], concurrency=1, per_host=1)
        assert [r.status for r in fresh] == ["ok"] * 3 and srv.connections == 2  # one more client, one more connection
    finally:
        srv.shutdown()
        srv.server_close()
