"""Exactly once when Slack's answer is lost, late or outlived by its client, for a first post and
for each kind of thread reply; and delivery never keeps the warehouse while Slack is slow.

Against the Slack stand-in, which reads channels as Slack documents (``conversations.history``:
parent messages only; ``conversations.replies``: one thread; both paged with cursors). The
crash is real: ``marsad deliver`` in a subprocess, killed with SIGKILL by the stand-in right
after it posted and before it answered."""
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from alerts.delivery import SlackSink, deliver, slack_client
from alerts.evaluate import NOTIFICATION_COLUMNS
from conftest import REPO
from test_delivery import payload
from warehouse import db
from warehouse.load import bulk_insert

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
MARSAD = [sys.executable, "-m", "marsad.cli"]


def queue(wh, alert="al1", seq=1, state="firing", channel="#marsad-alerts", at=NOW):
    with db.connect(wh) as con:
        bulk_insert(con, "notifications", [dict(notification_id=f"{alert}:{seq}", alert_id=alert, seq=seq, state=state,
                                                created_at=at + timedelta(minutes=seq), channel=channel, payload=payload(state))],
                    NOTIFICATION_COLUMNS)


def sink_for(slack, timeout=2):
    return SlackSink(slack_client(slack.state.token, slack.base_url, timeout=timeout))


def rows(wh):
    with db.connect(wh, read_only=True) as con:
        return {r[0]: r[1:] for r in con.execute("SELECT notification_id, status, slack_ts, thread_ts FROM notifications").fetchall()}


def posted(slack, nid):
    """Messages in the stand-in (any channel, any thread) that carry this notification id."""
    return [m for msgs in slack.state.messages.values() for m in msgs
            if ((m.get("metadata") or {}).get("event_payload") or {}).get("notification_id") == nid]


def cli_env(slack, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARSAD_")}
    env.update(MARSAD_SLACK_TOKEN=slack.state.token, MARSAD_SLACK_BASE_URL=slack.base_url, PYTHONPATH=str(REPO), **extra)
    return env


def crash_after_post(slack, wh):
    """`marsad deliver` in a process of its own; the stand-in posts, then kills it (SIGKILL)
    before answering: nothing of the answer is recorded."""
    victim: dict = {}
    slack.fail_next("chat.postMessage", ("crash", lambda: os.kill(victim["pid"], signal.SIGKILL)))
    proc = subprocess.Popen([*MARSAD, "deliver", "--db", str(wh)], env=cli_env(slack), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim["pid"] = proc.pid
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, out, err[-2000:])


KINDS = {"firing": None, "update": "update", "repeat": "repeat", "resolved": "resolved"}


@pytest.mark.parametrize("fault", ["lost_answer", "timeout", "crash"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_exactly_one_message_after_an_uncertain_failure(tmp_path, slack, kind, fault):
    wh = tmp_path / "wh.duckdb"
    queue(wh, seq=1)
    if kind != "firing":  # the alert's first message is in the channel; the reply is the one at stake
        assert deliver(wh, sink_for(slack)).sent == 1
        queue(wh, seq=2, state=kind)
    nid = "al1:1" if kind == "firing" else "al1:2"
    if fault == "lost_answer":  # Slack posts, the connection drops before the answer
        slack.fail_next("chat.postMessage", "drop")
        rep = deliver(wh, sink_for(slack), backoff_s=0.01)
    elif fault == "timeout":  # Slack posts, answers after the client gave up
        slack.fail_next("chat.postMessage", ("stall", 2))
        rep = deliver(wh, sink_for(slack, timeout=1), backoff_s=0.01)
    else:
        crash_after_post(slack, wh)
        assert rows(wh)[nid][0] == "sending" and len(posted(slack, nid)) == 1
        rep = deliver(wh, sink_for(slack))
    assert (rep.recovered, rep.sent, rep.failed) == (1, 0, 0), rep
    (msg,) = posted(slack, nid)
    status, ts, thread_ts = rows(wh)[nid]
    assert status == "sent" and ts == msg["ts"]
    if kind == "firing":
        assert msg.get("thread_ts") is None and thread_ts is None
        assert slack.calls("conversations.replies") == []
    else:
        parent_ts = rows(wh)["al1:1"][1]
        assert msg["thread_ts"] == parent_ts == thread_ts
        assert [c.params["ts"] for c in slack.calls("conversations.replies")] == [parent_ts]
    # Nothing more on a further run (a retried task).
    rep = deliver(wh, sink_for(slack))
    assert (rep.sent, rep.recovered) == (0, 0)
    assert sum(len(m) for m in slack.state.messages.values()) == (1 if kind == "firing" else 2)
    if kind == "resolved":
        (edit,) = slack.calls("chat.update")  # the first message shows RESOLVED, edited once
        assert edit.params["ts"] == rows(wh)["al1:1"][1]


def test_recovery_follows_cursors_through_history_and_a_long_thread(tmp_path, slack):
    """Slack pages its answers (at most 15 messages a page for some apps): the lost message is
    several pages away, in the channel and in a thread."""
    wh = tmp_path / "wh.duckdb"
    slack.state.page_cap = 2
    queue(wh, alert="lost", seq=1)
    for i in range(5):
        queue(wh, alert=f"other{i}", seq=1, at=NOW + timedelta(seconds=i + 1))
    slack.fail_next("chat.postMessage", "drop")
    rep = deliver(wh, sink_for(slack), tries=1)
    assert (rep.sent, rep.failed) == (5, 1)  # the other alerts went on; "lost" is the oldest in the channel
    rep = deliver(wh, sink_for(slack))
    assert (rep.recovered, rep.sent) == (1, 0)
    assert len(slack.calls("conversations.history")) > 1 and len(posted(slack, "lost:1")) == 1
    # A thread of 6 replies, the 7th answer lost: found on the 4th page of conversations.replies.
    for seq in range(2, 8):
        queue(wh, alert="lost", seq=seq, state="update")
    assert deliver(wh, sink_for(slack)).sent == 6
    queue(wh, alert="lost", seq=8, state="update")
    slack.fail_next("chat.postMessage", "drop")
    rep = deliver(wh, sink_for(slack), backoff_s=0.01)
    assert (rep.recovered, rep.sent) == (1, 0)
    assert len(posted(slack, "lost:8")) == 1
    assert len(slack.calls("conversations.replies")) == 4
    assert all(len(posted(slack, f"lost:{s}")) == 1 for s in range(1, 9))


def wait_for(cond, what, proc=None, limit=120.0):
    end = time.monotonic() + limit
    while not cond():
        assert proc is None or proc.poll() is None, f"{what}: the process ended first ({proc.returncode}): {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < end, f"gave up waiting: {what}"
        time.sleep(0.05)


LOAD = "import sys; from marsad.pipeline import Settings, load; print(load(Settings.from_env(sys.argv[1])).new_articles)"


def test_a_hung_slack_does_not_stop_a_load_and_nothing_is_sent_twice(tmp_path, slack, feed_server):
    """Slack takes the calls and answers none. `marsad deliver` runs in a process of its own; a
    load in another process must get the warehouse while the delivery still waits on Slack."""
    from conftest import rss, write_feeds_yaml
    from marsad import pipeline

    wh = tmp_path / "wh.duckdb"
    for i in range(3):
        queue(wh, alert=f"al{i}", at=NOW + timedelta(seconds=i))
    # Something to load: one feed fetched and staged, as the ingest DAG's fetch leaves it.
    settings = pipeline.Settings.from_env(wh)
    settings.staging = tmp_path / "staging"
    items = [{"title": f"Report {i}", "link": f"https://en.example/{i}", "guid": f"g{i}", "description": "text"} for i in range(4)]
    settings.feeds = write_feeds_yaml(tmp_path / "feeds.yaml", [{"id": "f1", "name": "F1", "lang": "en", "url": feed_server.serve("/f.xml", rss(items))}])
    pipeline.fetch_stage(settings, pipeline.due_sources(settings))

    slack.hang()
    deliverer = subprocess.Popen([*MARSAD, "deliver", "--db", str(wh)], env=cli_env(slack, MARSAD_DELIVER_BUDGET="60s"), cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: slack.held() >= 1, "the delivery calls Slack", deliverer)
        loader = subprocess.run([sys.executable, "-c", LOAD, str(wh)], env=cli_env(slack, MARSAD_STAGING=str(settings.staging)),
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        # The load is done while the delivery is still waiting on Slack's first answer.
        assert deliverer.poll() is None and slack.held() >= 1, "the load only finished once the delivery had given up"
        assert loader.returncode == 0, loader.stderr[-2000:]
        assert loader.stdout.split()[-1] == "4"
        slack.release()  # Slack answers again; what it held is carried out now, in order (a late post)
        out, err = deliverer.communicate(timeout=180)
    finally:
        slack.release()
        if deliverer.poll() is None:
            deliverer.kill()
    assert deliverer.returncode == 0, err[-2000:]
    slack.settle()
    rep = deliver(wh, sink_for(slack))
    assert rep.failed == 0
    assert all(len(posted(slack, f"al{i}:1")) == 1 for i in range(3)), [m["metadata"] for m in slack.state.messages["C0ALERTS"]]
    assert {r[0] for r in rows(wh).values()} == {"sent"}
    with db.connect(wh, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM articles").fetchone()[0] == 4


def test_a_delivery_run_starts_no_slack_call_after_its_budget(tmp_path, slack):
    """Slack hangs: the run gives up after its budget (plus the call under way), leaves the rest
    queued, and the next run, with Slack back, sends each alert once."""
    wh = tmp_path / "wh.duckdb"
    for i in range(5):
        queue(wh, alert=f"al{i}", at=NOW + timedelta(seconds=i))
    slack.hang()
    budget, timeout = 2.0, 1
    t0 = time.monotonic()
    rep = deliver(wh, sink_for(slack, timeout=timeout), backoff_s=0.01, budget_s=budget)
    elapsed = time.monotonic() - t0
    # After the budget no call starts; the one under way (a lookup: channel list + history) may finish.
    assert elapsed < budget + 2 * timeout + 2.0, elapsed
    assert rep.sent == 0 and rep.failed + rep.deferred == 5 and rep.deferred >= 3, rep
    statuses = [rows(wh)[f"al{i}:1"][0] for i in range(5)]
    assert statuses[0] == "sending" and set(statuses[1:]) == {"pending"}, statuses  # never tried: as before
    slack.release()
    slack.settle()
    rep = deliver(wh, sink_for(slack))
    assert rep.failed == rep.deferred == 0 and rep.sent + rep.recovered == 5
    assert all(len(posted(slack, f"al{i}:1")) == 1 for i in range(5))


class Terminated(BaseException):
    """What a task runner raises on SIGTERM (Airflow: AirflowTaskTerminated), mid-call."""


def test_a_run_terminated_during_a_slack_call_leaves_that_row_to_be_looked_for(tmp_path, slack):
    """SIGTERM arrives while chat.postMessage is under way, after Slack posted: the exception
    unwinds the run. The claimed rows it never tried go back to pending; the one it was posting
    stays ``sending``, so the next run finds it instead of posting it again."""
    wh = tmp_path / "wh.duckdb"
    for i in range(3):
        queue(wh, alert=f"al{i}", at=NOW + timedelta(seconds=i))

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        slack.fail_next("chat.postMessage", ("crash", lambda: os.kill(os.getpid(), signal.SIGTERM)))
        with pytest.raises(Terminated):
            deliver(wh, sink_for(slack, timeout=5))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert [rows(wh)[f"al{i}:1"][0] for i in range(3)] == ["sending", "pending", "pending"]
    slack.settle()
    rep = deliver(wh, sink_for(slack))
    assert (rep.recovered, rep.sent) == (1, 2), rep
    assert all(len(posted(slack, f"al{i}:1")) == 1 for i in range(3))
