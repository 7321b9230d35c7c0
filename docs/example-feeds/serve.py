"""Serve the bundled example feeds on loopback, for the README's first-hour walkthrough.

    .venv/bin/python docs/example-feeds/serve.py [--port 8765]

Serves the RSS files of this directory at http://127.0.0.1:PORT/<name>.xml. Their dates are
written relative to the moment they are served (``{{ago 20d}}``, ``{{ago 45m}}``), so the story
they tell (a drone attack on a US base after three quiet weeks) is always recent. Standard
library only; Ctrl-C stops it.
"""
from __future__ import annotations

import argparse
import re
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
_AGO = re.compile(r"\{\{ago (\d+)([mhd])\}\}")
_UNIT = {"m": "minutes", "h": "hours", "d": "days"}


def render(text: str, now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return _AGO.sub(lambda m: format_datetime(now - timedelta(**{_UNIT[m.group(2)]: int(m.group(1))}), usegmt=True), text)


class Handler(SimpleHTTPRequestHandler):
    def do_GET(self):
        path = HERE / self.path.lstrip("/").split("?")[0]
        if path.suffix != ".xml" or path.parent != HERE or not path.is_file():
            self.send_error(404)
            return
        body = render(path.read_text(encoding="utf-8")).encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        print(f"example feeds: {self.address_string()} {fmt % args}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--bind", default="127.0.0.1")
    args = p.parse_args()
    srv = ThreadingHTTPServer((args.bind, args.port), partial(Handler, directory=str(HERE)))
    for f in sorted(HERE.glob("*.xml")):
        print(f"example feeds: http://{args.bind}:{srv.server_address[1]}/{f.name}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
