"""The DAGs under a real Airflow 3 (``airflow dags test``), and ``make run``'s standalone launcher."""
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import REPO, free_port as _free_port, processes_with as _processes_with, rss, write_feeds_yaml
from marsad.airflow_env import airflow_env, prepare

pytestmark = pytest.mark.airflow
HEAVY = ("duckdb", "feedparser", "httpx", "slack_sdk", "marsad.pipeline", "alerts", "sources", "warehouse")
SETTINGS_READERS = ("sources", "sources.configfile")


@pytest.fixture(scope="module")
def af_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow")
    env = airflow_env(home, warehouse=home / "wh.duckdb")
    prepare(env)
    return home


def _env(af_home, tmp_path, **extra):
    env = airflow_env(af_home, warehouse=tmp_path / "wh.duckdb")
    # `airflow dags test` of a DAG with a deadline alert exits 1 after a successful run in Airflow
    # 3.3.2 (apache/airflow#73428), and without a scheduler no deadline is processed anyway.
    # The deadline is tested under standalone in test_settings_airflow.py.
    env.update({"MARSAD_STAGING": str(tmp_path / "staging"), "MARSAD_INGEST_DEADLINE": "none", **extra})
    return env


def test_dag_files_parse_without_heavy_imports_or_io(af_home, tmp_path):
    code = f"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
bag = DagBag(dag_folder={str(REPO / 'dags')!r})
added = set(sys.modules) - before  # what parsing our DAG files imported (Airflow itself uses httpx)
# The settings file is read at parse time (live settings): marsad.settings and
# sources.configfile (PyYAML and pydantic, which Airflow has loaded already) are allowed.
heavy = sorted(m for m in added if (m.split('.')[0] in {HEAVY!r} or m in {HEAVY!r}) and m not in {SETTINGS_READERS!r})
ingest, evaluate = bag.dags['marsad_ingest'], bag.dags['marsad_evaluate']
print(json.dumps(dict(errors={{k: str(v) for k, v in bag.import_errors.items()}}, dags=sorted(bag.dags), heavy=heavy,
    load_outlets=[o.name for o in ingest.get_task('load').outlets],
    evaluate_schedule=[a.name for a in evaluate.timetable.asset_condition.objects],
    load_pool=ingest.get_task('load').pool,
    queues={{d.dag_id + '.' + t.task_id: [t.queue, t.pool] for d in bag.dags.values() for t in d.tasks}})))
"""
    res = subprocess.run([sys.executable, "-c", code], env=_env(af_home, tmp_path, MARSAD_WAREHOUSE_QUEUE="warehouse"), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["errors"] == {}
    assert info["dags"] == ["marsad_digest", "marsad_evaluate", "marsad_ingest"]
    assert info["heavy"] == [], "DAG files must not import the pipeline at parse time"
    assert info["load_outlets"] == ["marsad_articles"]
    assert info["evaluate_schedule"] == ["marsad_articles"]
    assert info["load_pool"] == "marsad_warehouse"
    # Scaled out: every task that opens the DuckDB file runs on its host's queue, one at a time;
    # the fetches run on any worker.
    on_warehouse = {t for t, (queue, pool) in info["queues"].items() if queue == "warehouse" and pool == "marsad_warehouse"}
    delivery = {"marsad_evaluate.deliver", "marsad_digest.deliver"}
    assert on_warehouse == set(info["queues"]) - {"marsad_ingest.fetch"} - delivery, info["queues"]
    # Delivery waits on Slack: on the warehouse's host, outside its pool (a hung Slack never holds up a load).
    assert all(info["queues"][t] == ["warehouse", "default_pool"] for t in delivery), info["queues"]
    assert info["queues"]["marsad_ingest.fetch"][0] == "default"


def _pub(dt):
    return dt.strftime("%a, %d %b %Y %H:%M:%S +0000")


def test_ingest_and_evaluate_dags_post_to_slack_exactly_once(af_home, tmp_path, feed_server, slack):
    now = datetime.now(timezone.utc)
    attacks = [
        {"title": "Drone attack targets US forces at Harir air base in northern Iraq", "link": "https://en.example/1", "guid": "a1",
         "description": "Officials said the drone was shot down near the base hosting US troops.", "pubDate": _pub(now - timedelta(hours=30))},
        {"title": "Rockets fired at US base at al-Tanf garrison in Syria", "link": "https://en.example/2", "guid": "a2",
         "description": "Rockets were launched at the base where US forces are stationed.", "pubDate": _pub(now - timedelta(hours=20))},
    ]
    arabic = [
        {"title": "هجوم بطائرة مسيّرة على قاعدة عين الأسد التي تضم قوات أمريكية", "link": "https://ar.example/3", "guid": "a3",
         "description": "أفادت مصادر أمنية بسقوط طائرة مسيرة داخل القاعدة.", "pubDate": _pub(now - timedelta(hours=2))},
        {"title": "<!channel> افتتاح معرض الكتاب في بغداد", "link": "https://ar.example/4", "guid": "a4", "description": "x", "pubDate": _pub(now)},
    ]
    feeds = write_feeds_yaml(tmp_path / "feeds.yaml", [
        {"id": "wire-en", "name": "Wire EN", "lang": "en", "url": feed_server.serve("/en.xml", rss(attacks)), "reliability": "B"},
        {"id": "outlet-ar", "name": "Outlet AR", "lang": "ar", "url": feed_server.serve("/ar.xml", rss(arabic, "ar"))},
        {"id": "broken", "name": "Broken", "lang": "en", "url": feed_server.url("/404.xml")},
    ])
    conn = json.dumps({"conn_type": "slack", "password": slack.state.token, "extra": {"base_url": slack.base_url}})
    env = _env(af_home, tmp_path, MARSAD_FEEDS=str(feeds), AIRFLOW_CONN_SLACK_API_DEFAULT=conn)

    def dags_test(dag_id):
        res = subprocess.run([str(Path(sys.executable).parent / "airflow"), "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
        assert "state=success" in res.stdout + res.stderr, (res.stdout + res.stderr)[-4000:]

    dags_test("marsad_ingest")
    import duckdb

    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM articles").fetchone()[0] == 4
    assert dict(con.execute("SELECT source_id, last_status FROM source_state").fetchall()) == {"wire-en": "ok", "outlet-ar": "ok", "broken": "error"}
    con.close()
    assert not any((tmp_path / "staging").glob("*.json")), "the load handed over every staged file"

    dags_test("marsad_evaluate")
    posts = slack.posts()
    campaign = [p for p in posts if p["metadata"]["event_payload"]["notification_id"] and "militia-attack-campaign" in json.dumps(p["blocks"])]
    assert len(campaign) == 1, [p["text"] for p in posts]
    body = json.dumps(campaign[0]["blocks"], ensure_ascii=False)
    for a in attacks + arabic[:1]:
        assert a["title"] in body and a["link"] in body  # evidence: titles, outlets, links
    assert "Wire EN" in body and "Outlet AR" in body
    assert "<!channel>" not in json.dumps(posts, ensure_ascii=False)

    # Re-running evaluate-and-deliver (as a retry would) never posts the same alert twice.
    dags_test("marsad_evaluate")
    assert len(slack.posts()) == len(posts)


def _dags_test(env, dag_id, expect="success"):
    res = subprocess.run([str(Path(sys.executable).parent / "airflow"), "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert f"state={expect}" in out, out[-4000:]
    return out


def test_digest_dag_posts_with_a_chart(af_home, tmp_path, slack, feed_server):
    from marsad import pipeline

    conn = json.dumps({"conn_type": "slack", "password": slack.state.token, "extra": {"base_url": slack.base_url}})
    env = _env(af_home, tmp_path, AIRFLOW_CONN_SLACK_API_DEFAULT=conn)
    # A digest sums up a day Marsad watched (before its first poll there is none): poll once.
    s = pipeline.Settings.from_env(tmp_path / "wh.duckdb")
    s.staging, s.allow_private = tmp_path / "poll-staging", "127.0.0.1/32"
    s.feeds = write_feeds_yaml(tmp_path / "feeds.yaml", [{"id": "wire", "name": "Wire", "lang": "en", "url": feed_server.serve(
        "/wire.xml", rss([{"title": "Markets open higher", "link": "https://en.example/m", "guid": "m1", "description": "x"}]))}])
    now = datetime.now(timezone.utc)
    pipeline.fetch_stage(s, pipeline.due_sources(s, now))
    pipeline.load(s, now)
    _dags_test(env, "marsad_digest")
    (post,) = slack.posts()
    assert "Marsad daily digest" in json.dumps(post["blocks"])
    (upload,) = slack.state.uploads.values()
    assert upload["data"].startswith(b"\x89PNG")


def test_task_failure_notifies_ops_through_the_slack_notifier(af_home, tmp_path, slack):
    # A broken rules.yaml no longer fails a task (the last good pack is used and ops are told
    # through the outbox); a warehouse that cannot be opened does.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the warehouse's directory should be\n")
    conn = json.dumps({"conn_type": "slack", "password": slack.state.token, "extra": {"base_url": slack.base_url}})
    env = _env(af_home, tmp_path, AIRFLOW_CONN_SLACK_API_DEFAULT=conn, MARSAD_TASK_RETRIES="0")
    env["MARSAD_WAREHOUSE"] = str(blocker / "wh.duckdb")
    _dags_test(env, "marsad_evaluate", expect="failed")
    posts = slack.posts()
    assert posts and all(p["channel"] == "#marsad-ops" for p in posts)
    assert any("marsad_evaluate.evaluate" in p["text"] and "not-a-directory" in p["text"] for p in posts), [p["text"] for p in posts]


def test_make_run_starts_standalone_and_ctrl_c_leaves_nothing_behind(tmp_path):
    home = tmp_path / "af-run"
    port = _free_port()
    env = {**os.environ, "MARSAD_AIRFLOW_HOME": str(home), "MARSAD_UI_PORT": str(port), "MARSAD_WAREHOUSE": str(tmp_path / "wh.duckdb"),
           "MARSAD_FEEDS": str(write_feeds_yaml(tmp_path / "feeds.yaml", [{"id": "none", "name": "Nothing", "lang": "en", "url": "http://127.0.0.1:9/x", "enabled": False}]))}
    proc = subprocess.Popen([sys.executable, "-m", "marsad.airflow_env"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 240
    try:
        for line in proc.stdout:
            lines.append(line)
            if "is up at" in line or time.monotonic() > deadline:
                break
        assert any(f"http://127.0.0.1:{port}/" in line and "admin /" in line for line in lines), "".join(lines)
        assert _processes_with(str(home)), "standalone should be running"
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0, out
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(1)
    assert _processes_with(str(home)) == [], "orphaned Airflow processes"
