"""Alert latency and memory under ``airflow standalone`` at the default schedule.

A feed on loopback gains an attack report at t0; latency is t0 until the local Slack
server receives the alert. Memory is the proportional set size (PSS) of every process of
standalone's group, at rest and at its peak while the DAGs run.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


class _Feed:
    def __init__(self):
        self.items: list[str] = []
        self.lock = threading.Lock()

    def add(self, title: str, summary: str) -> None:
        uid = f"lat-{len(self.items)}"
        now = format_datetime(datetime.now(timezone.utc))
        with self.lock:
            self.items.append(f"<item><title>{title}</title><guid>{uid}</guid><link>https://lat.example/{uid}</link>"
                              f"<description>{summary}</description><pubDate>{now}</pubDate></item>")

    def body(self) -> bytes:
        with self.lock:
            return ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>latency</title>'
                    + "".join(self.items) + "</channel></rss>").encode()


def _serve_feed(feed: _Feed) -> ThreadingHTTPServer:
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            body = feed.body()
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def group_pss_mb(pgid: int) -> float:
    total = 0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if os.getpgid(int(p.name)) != pgid:
                continue
            for line in (p / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except (OSError, ProcessLookupError, ValueError):
            continue
    return total / 1024


def _stages(warehouse: Path, t0: datetime, posted: datetime | None) -> str:
    """Where the latency went, from the warehouse's own timestamps: waiting for the poll,
    fetch to load, load to the alert queued, queued to posted."""
    import duckdb

    try:
        con = duckdb.connect(str(warehouse), read_only=True)
        fetched = con.execute("SELECT min(started_at) FROM fetch_log WHERE started_at >= ? AND status = 'ok' AND new_articles > 0", [t0]).fetchone()[0]
        loaded = con.execute("SELECT min(created_at) FROM events WHERE indicator = 'us_strike_irgc'").fetchone()[0]
        queued = con.execute("SELECT min(created_at) FROM notifications WHERE created_at >= ?", [t0]).fetchone()[0]
        con.close()
    except duckdb.Error as exc:
        return f"stages unknown ({exc})"

    def s(a, b):
        return f"{(b - a).total_seconds():.0f} s" if a and b else "?"

    return (f"poll wait {s(t0, fetched)}, fetch->loaded {s(fetched, loaded)}, loaded->alert queued {s(loaded, queued)}, "
            f"queued->posted {s(queued, posted)}")


def _airflow_stages(metadata_db: Path, t0: datetime) -> str:
    """The first ingest run after the item appeared, from Airflow's metadata DB: when it was
    queued, and when each of its tasks started and ended (seconds after t0)."""
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{metadata_db}?mode=ro", uri=True)
        run = con.execute(
            "SELECT run_id, queued_at, start_date FROM dag_run WHERE dag_id = 'marsad_ingest' AND queued_at >= ? ORDER BY queued_at LIMIT 1",
            [t0.strftime("%Y-%m-%d %H:%M:%S")],
        ).fetchone()
        if not run:
            return "ingest run: not found"
        tis = con.execute(
            "SELECT task_id, min(start_date), max(end_date) FROM task_instance WHERE dag_id = 'marsad_ingest' AND run_id = ? GROUP BY task_id",
            [run[0]],
        ).fetchall()
        con.close()
    except sqlite3.Error as exc:
        return f"ingest run: unknown ({exc})"

    def at(text):
        if not text:
            return "?"
        t = datetime.fromisoformat(str(text).replace(" ", "T"))
        t = t if t.tzinfo else t.replace(tzinfo=timezone.utc)
        return f"{(t - t0).total_seconds():.0f}"

    order = {"due_sources": 0, "fetch": 1, "load": 2}
    parts = [f"{task} {at(a)}-{at(b)} s" for task, a, b in sorted(tis, key=lambda r: order.get(r[0], 9))]
    return f"ingest run queued at +{at(run[1])} s, started +{at(run[2])} s: " + ", ".join(parts)


def bench_airflow(timeout_s: int = 900):
    import duckdb
    import yaml

    from bench.run import Row
    from marsad.airflow_env import airflow_env, prepare, stop_group
    from slack_server import SlackServer

    feed = _Feed()
    fsrv = _serve_feed(feed)
    slack = SlackServer().start()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        feeds = tmp / "feeds.yaml"
        feeds.write_text(yaml.safe_dump({"feeds": [{"id": "latency", "name": "Latency feed", "lang": "en",
                                                     "url": f"http://127.0.0.1:{fsrv.server_address[1]}/feed.xml", "interval": "5m"}]}))
        port = 18080 + os.getpid() % 1000
        env = airflow_env(tmp / "airflow", warehouse=tmp / "wh.duckdb", port=port)
        env.update({
            "MARSAD_FEEDS": str(feeds), "MARSAD_ALLOW_PRIVATE_FEEDS": "1",
            "AIRFLOW_CONN_SLACK_API_DEFAULT": f'{{"conn_type": "slack", "password": "{slack.state.token}", "extra": {{"base_url": "{slack.base_url}"}}}}',
        })
        prepare(env)
        log = open(tmp / "standalone.log", "wb")
        proc = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout_s
            # Wait for the first ingest run to have polled the (empty) feed.
            while time.monotonic() < deadline:
                time.sleep(5)
                try:
                    con = duckdb.connect(str(tmp / "wh.duckdb"), read_only=True)
                    polled = con.execute("SELECT count(*) FROM source_state").fetchone()[0]
                    con.close()
                    if polled:
                        break
                except (duckdb.Error, OSError):
                    continue
            time.sleep(20)
            rest = group_pss_mb(proc.pid)
            t0 = time.monotonic()
            t0_wall = datetime.now(timezone.utc)
            # A tripwire indicator (us-strikes-irgc): one report fires it, on a warehouse with no history.
            feed.add("US strikes IRGC headquarters in eastern Syria after drone attack",
                     "American jets struck facilities of the Islamic Revolutionary Guard Corps near Deir ez-Zor.")
            peak, latency = rest, None
            while time.monotonic() < deadline:
                peak = max(peak, group_pss_mb(proc.pid))
                if any("IRGC headquarters" in str(p.get("blocks")) + str(p.get("text")) for p in slack.posts()):
                    latency = time.monotonic() - t0
                    break
                time.sleep(2)
            posted_wall = datetime.now(timezone.utc)
        finally:
            stop_group(proc)
            log.close()
            slack.stop()
            fsrv.shutdown()
        stages = _stages(tmp / "wh.duckdb", t0_wall, posted_wall if latency is not None else None)
        stages += "; " + _airflow_stages(tmp / "airflow" / "airflow.db", t0_wall)
    target = 5 * 60 + 60
    if latency is None:
        rows.append(Row("latency", "feed item -> Slack post under standalone", -1, target, "s", None, "<= poll interval + 60 s", False, "baseline: the target itself; no alert arrived in time"))
    else:
        rows.append(Row("latency", "feed item -> Slack post under standalone (*/5 schedule, 5m interval)", round(latency, 1), target, "s",
                        round(latency / target, 2), "<= poll interval + 60 s", latency <= target, f"baseline: the target itself; {stages}"))
    rows.append(Row("airflow", "standalone PSS at rest", round(rest), None, "MB", None, "-", None, "all processes of the group"))
    rows.append(Row("airflow", "standalone PSS peak during ingest+evaluate", round(peak), round(rest), "MB", round(peak / rest, 2), "-", None, "baseline: PSS of the same group at rest"))
    return rows
