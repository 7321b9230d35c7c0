"""Settings as Airflow sees them: the schedule in marsad/settings.yaml is the schedule Airflow
parses, and the ingest deadline tells ops in Slack while a slow run is still going."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from marsad.airflow_env import airflow_env
from marsad.settings import ENV

pytestmark = pytest.mark.airflow
BIN = Path(sys.executable).parent

# What the dag-processor does with each DAG file: parse it, serialize it (with its deadline
# alert) and read it back; the schedule is the deserialized timetable's.
PARSE = r"""
import json
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
from marsad.airflow_env import REPO
bag = DagBag(dag_folder=str(REPO / "dags"))
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}}
for dag_id in ("marsad_ingest", "marsad_digest"):
    if dag_id in bag.dags:
        data = DagSerialization.to_dict(bag.dags[dag_id])
        dag = DagSerialization.from_dict(data)
        deadlines = [{"interval": d["interval"]["__data__"], "reference": d["reference"]["reference_type"],
                      "callback": d["callback"]["__classname__"], **d["callback"]["__data__"]} for d in data["dag"].get("deadline") or []]
        out[dag_id] = {"timetable": type(dag.timetable).__name__, "summary": dag.timetable.summary,
                       "timeout": dag.dagrun_timeout.total_seconds() if dag.dagrun_timeout else None, "deadlines": deadlines}
print(json.dumps(out))
"""


def parse(env: dict) -> dict:
    res = subprocess.run([sys.executable, "-c", PARSE], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def bare_env(**extra) -> dict:
    return {k: v for k, v in os.environ.items() if k not in ENV.values() and k != "MARSAD_SETTINGS"} | extra


def test_the_schedule_in_the_settings_file_is_the_schedule_airflow_parses(tmp_path):
    home = tmp_path / "airflow"
    settings = tmp_path / "settings.yaml"

    def parsed_with(text: str) -> dict:
        settings.write_text(text, encoding="utf-8")
        return parse(airflow_env(home, base=bare_env(MARSAD_SETTINGS=str(settings))))

    info = parsed_with("schedules:\n  ingest: \"*/5 * * * *\"\n")
    assert info["errors"] == {}
    assert (info["marsad_ingest"]["timetable"], info["marsad_ingest"]["summary"]) == ("CronTriggerTimetable", "*/5 * * * *")
    assert info["marsad_digest"]["summary"] == "0 6 * * *"
    assert info["marsad_ingest"]["timeout"] == 1200
    (deadline,) = info["marsad_ingest"]["deadlines"]
    assert deadline["interval"] == 600 and deadline["reference"] == "DagRunQueuedAtDeadline"
    assert (deadline["callback"], deadline["path"]) == ("airflow.sdk.definitions.callback.AsyncCallback", "marsad_airflow.notify_deadline_missed")
    assert deadline["kwargs"]["channel"] == "#marsad-ops" and deadline["kwargs"]["after"] == "10m"

    # An admin edits the file; nothing else changes.
    info = parsed_with("schedules:\n  ingest: \"@hourly\"\n  digest: 12h\ningest:\n  timeout: 45m\n  deadline: 3m\n"
                       "ops:\n  channel: \"#ops-test\"\n")
    assert info["errors"] == {}
    assert info["marsad_ingest"]["summary"] == "0 * * * *"  # Airflow's own reading of @hourly
    assert (info["marsad_digest"]["timetable"], info["marsad_digest"]["summary"]) == ("DeltaTriggerTimetable", "12:00:00")
    assert info["marsad_ingest"]["timeout"] == 45 * 60
    (deadline,) = info["marsad_ingest"]["deadlines"]
    assert deadline["interval"] == 180 and deadline["kwargs"]["channel"] == "#ops-test"

    info = parsed_with("schedules:\n  ingest: none\ningest:\n  deadline: none\n")
    assert (info["marsad_ingest"]["timetable"], info["marsad_ingest"]["summary"]) == ("NullTimetable", "None")
    assert info["marsad_ingest"]["deadlines"] == []


def test_without_marsad_variables_the_dags_fall_back_to_the_settings_defaults(tmp_path):
    """An Airflow started without airflow_env gets the same values as marsad/settings.py, and a
    schedule variable that is not a schedule stops its DAG file with an error naming it."""
    env = airflow_env(tmp_path / "airflow", base=bare_env())
    defaults = parse(env)
    env = {k: v for k, v in env.items() if k not in ENV.values() and k != "MARSAD_SETTINGS"}
    bare = parse({**env, "MARSAD_DIGEST_SCHEDULE": "daily at six"})
    assert bare["marsad_ingest"] == defaults["marsad_ingest"]
    assert "marsad_digest" not in bare
    (error,) = bare["errors"].values()
    assert "$MARSAD_DIGEST_SCHEDULE: schedules.digest: 'daily at six' is not a schedule" in error


def test_a_broken_settings_edit_is_a_dag_import_error_naming_file_and_line(tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text("schedules:\n  ingest: \"@hourly\"\n", encoding="utf-8")
    env = airflow_env(tmp_path / "airflow", base=bare_env(MARSAD_SETTINGS=str(settings)))
    settings.write_text("schedules:\n  ingest: \"@hourly\"\n  digest: */5 * * * *\n", encoding="utf-8")  # after make run started
    errors = parse(env)["errors"]
    assert errors and all(f"{settings}:3: schedules.digest: a schedule must be in quotes" in e for e in errors.values()), errors
    settings.write_text("schedules:\n  ingest: every hour\n", encoding="utf-8")
    errors = parse(env)["errors"]
    assert any(f"{settings}:2: schedules.ingest: 'every hour' is not a schedule" in e for e in errors.values()), errors


def _sqlite(db: Path, sql: str, *args):
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def _utc(text: str) -> float:
    """A timestamp as Airflow's SQLite metadata DB stores it (UTC, with or without an offset)."""
    from datetime import datetime, timezone

    dt = datetime.fromisoformat(text)
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def test_a_slow_ingest_run_misses_its_deadline_and_ops_hear_of_it_while_it_runs(tmp_path, feed_server, slack):
    """Under airflow standalone (scheduler, triggerer, dag-processor, api-server): the one feed
    answers after 15 s (its read timeout is 20 s), ingest.deadline is 4s. The scheduler marks the
    deadline missed, the triggerer awaits marsad_airflow.notify_deadline_missed, and the Slack
    provider's notifier posts in #marsad-ops while the fetch is still waiting; the run then
    finishes normally."""
    import time

    from conftest import free_port, processes_with, rss, write_feeds_yaml
    from marsad.airflow_env import prepare, stop_group

    delay, deadline_s = 15.0, 4
    feeds = write_feeds_yaml(tmp_path / "feeds.yaml", [
        {"id": "slow-wire", "name": "Slow wire", "lang": "en", "interval": "1m",
         "url": feed_server.serve("/slow.xml", rss([{"title": "Port reopens after storm", "link": "https://e.example/1", "guid": "s1"}]), delay=delay)},
    ])
    settings = tmp_path / "settings.yaml"
    settings.write_text(
        f"schedules:\n  ingest: none\n  digest: none\ningest:\n  deadline: {deadline_s}s\n  timeout: 20m\n"
        f"paths:\n  warehouse: {tmp_path}/wh.duckdb\n  feeds: {feeds}\ntasks:\n  retries: 0\n", encoding="utf-8")
    home, port = tmp_path / "airflow", free_port()
    conn = json.dumps({"conn_type": "slack", "password": slack.state.token, "extra": {"base_url": slack.base_url}})
    env = airflow_env(home, port=port, base=bare_env(MARSAD_SETTINGS=str(settings), AIRFLOW_CONN_SLACK_API_DEFAULT=conn,
                                                     AIRFLOW__API__WORKERS="1", MARSAD_ALLOW_PRIVATE_FEEDS="127.0.0.1/32"))
    # A live setting: the DAG file reads it from the settings file at parse time.
    assert "MARSAD_INGEST_DEADLINE" not in env and env["MARSAD_SETTINGS"] == str(settings)
    prepare(env)
    log = open(tmp_path / "standalone.log", "wb")
    proc = subprocess.Popen([str(BIN / "airflow"), "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    run_id = "deadline-test"
    try:
        until = time.monotonic() + 240
        while subprocess.run([str(BIN / "airflow"), "dags", "trigger", "marsad_ingest", "--run-id", run_id],
                             env=env, capture_output=True).returncode != 0:
            assert time.monotonic() < until and proc.poll() is None, (tmp_path / "standalone.log").read_text()[-4000:]
            time.sleep(3)

        def state() -> str | None:
            rows = _sqlite(home / "airflow.db", "SELECT state FROM dag_run WHERE dag_id = 'marsad_ingest' AND run_id = ?", run_id)
            return rows[0][0] if rows else None

        until = time.monotonic() + 240
        ops, state_when_posted = [], None
        while not ops and time.monotonic() < until:
            ops = slack.state.messages.get("C0OPS", [])
            if ops:
                state_when_posted = state()
            time.sleep(0.5)
        assert ops, "no deadline message in #marsad-ops\n" + (tmp_path / "standalone.log").read_text()[-4000:]
        assert state_when_posted == "running", "ops heard of it while the run was still going"
        until = time.monotonic() + 240
        while state() not in ("success", "failed") and time.monotonic() < until:
            time.sleep(1)
        assert state() == "success"
        ops = list(slack.state.messages["C0OPS"])  # before stopping: a task killed by the stop is reported too
    finally:
        stop_group(proc)
        log.close()

    assert len(ops) == 1, [m["text"] for m in ops]  # one notice, not one per scheduler loop
    (post,) = ops
    assert [m for m in slack.state.messages["C0OPS"] if "has not finished" in m["text"]] == [post], "and none later"
    assert f"marsad_ingest run {run_id} has not finished {deadline_s}s after it was queued" in post["text"], post["text"]
    assert f"http://127.0.0.1:{port}/dags/marsad_ingest/runs/{run_id}" in post["text"]
    posted = float(post["ts"])
    time.sleep(1)
    assert processes_with(str(home)) == [], "standalone left processes behind"
    (queued, deadline_at, missed, cb_type, cb_state, cb_output, ended), = _sqlite(
        home / "airflow.db",
        """SELECT r.queued_at, d.deadline_time, d.missed, c.type, c.state, c.output, r.end_date
           FROM deadline d JOIN dag_run r ON r.id = d.dagrun_id JOIN callback c ON c.id = d.callback_id
           WHERE r.run_id = ?""", run_id)
    # The AsyncCallback ran in the triggerer and returned what notify_deadline_missed returns.
    assert missed and (cb_type, cb_state) == ("triggerer", "success") and "posted to #marsad-ops" in cb_output
    assert _utc(deadline_at) - _utc(queued) == pytest.approx(deadline_s, abs=0.01)
    import duckdb

    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    (status, fetch_started, fetch_done), = con.execute(
        "SELECT status, epoch(started_at), epoch(finished_at) FROM fetch_log WHERE source_id = 'slow-wire'").fetchall()
    con.close()
    assert status == "ok" and fetch_done - fetch_started >= delay - 0.5, "the feed was slow, not broken"
    assert _utc(deadline_at) <= posted < fetch_done < _utc(ended), "after the deadline, while the slow fetch was still waiting"
    later = [m["text"][:100] for m in slack.state.messages["C0OPS"][1:]]
    print(f"\ndeadline {deadline_s}s after queued; Slack post {posted - _utc(deadline_at):.1f} s after the deadline; "
          f"the slow fetch answered {fetch_done - posted:.1f} s later; run ended {_utc(ended) - _utc(queued):.1f} s after queued; "
          f"posted to ops while stopping: {later}")
