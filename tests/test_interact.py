"""Slack buttons end to end: a real alert evaluated and delivered into the Slack stand-in, a
person pressing its buttons (a block_actions envelope over the stand-in's Socket Mode
websocket, or a signed request to the HTTP request URL), the warehouse changed, the envelope
acknowledged, the message edited, and a second press changing nothing."""
import json
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from alert_data import add_event as _add_event, watched_source
from alerts.delivery import SlackSink, deliver, slack_client
from alerts.evaluate import evaluate
from alerts.interact import InteractionHandler
from alerts.rules import Rule, RuleDefaults, RulePack
from marsad.slack_listener import SocketModeListener, http_app
from warehouse import db

NOW = datetime.now(timezone.utc).replace(microsecond=0)
T0 = NOW - timedelta(hours=3)


def add_event(con, eid, t, title):
    _add_event(con, eid, t, "ind", title)


PACK = RulePack(defaults=RuleDefaults(), rules=[Rule(id="r1", indicator="ind", rationale="two attacks in a day", severity="high",
                                                     kind="threshold", count=2, window="24h")])


@pytest.fixture
def alert(tmp_path, slack):
    """A threshold alert on two events, evaluated and delivered as the pipeline does it: the
    warehouse file, the alert id, the posted message's ts, and the event ids."""
    path = tmp_path / "wh.duckdb"
    with db.connect(path) as con:
        watched_source(con, T0, polled_at=T0 - timedelta(days=30))
        add_event(con, "e1", T0 + timedelta(hours=1), "Drone attack on Harir base")
        add_event(con, "e2", T0 + timedelta(hours=2), "Rocket attack on Ain al-Asad")
        evaluate(con, PACK, NOW)
    sink = SlackSink(slack_client(slack.state.token, slack.base_url, timeout=5), run_url="http://127.0.0.1:8080/dags/marsad_evaluate/runs/r1")
    assert deliver(path, sink).sent == 1
    with db.connect(path, read_only=True) as con:
        alert_id, ts = con.execute("SELECT alert_id, slack_ts FROM notifications").fetchone()
    return path, alert_id, ts


@pytest.fixture
def listening(alert, slack):
    """The handler behind slack-sdk's Socket Mode client, connected to the stand-in."""
    handler = InteractionHandler(alert[0], slack_client(slack.state.token, slack.base_url, timeout=5), lock_wait_s=0.5)
    listener = SocketModeListener(handler, slack.state.app_token, pending_every_s=0.2).start()
    assert slack.connected(), "the listener did not open a Socket Mode connection"
    yield handler
    listener.stop()


def buttons(msg) -> list[tuple[str, str]]:
    out = []
    for b in msg["blocks"]:
        els = b.get("elements", []) if b["type"] == "actions" else [b["accessory"]] if b.get("accessory") else []
        out += [(e["action_id"], e.get("value")) for e in els if e.get("type") == "button"]
    return out


def one(con, sql, params=()):
    return con.execute(sql, list(params)).fetchone()


def test_acknowledge_over_socket_mode_edits_the_message_and_a_second_press_changes_nothing(alert, listening, slack):
    path, alert_id, ts = alert
    assert ("marsad_ack", alert_id) in buttons(slack.message("C0ALERTS", ts))
    # Two presses from the same view (a double click, or a colleague at the same moment).
    first = slack.block_actions("C0ALERTS", ts, "U0ALICE", "marsad_ack", alert_id)
    second = slack.block_actions("C0ALERTS", ts, "U0BOB", "marsad_ack", alert_id)
    e1 = slack.push(first)
    assert slack.wait_for(lambda: slack.ack_of(e1)) == {"envelope_id": e1}
    assert slack.wait_for(lambda: slack.calls("chat.update")), "the message was not edited"
    with db.connect(path, read_only=True) as con:
        acked_by, acked_at, note = one(con, "SELECT acked_by, acked_at, ack_note FROM alerts WHERE alert_id = ?", [alert_id])
    assert acked_by == "U0ALICE" and "@alice" in note
    msg = slack.message("C0ALERTS", ts)
    assert "Acknowledged by <@U0ALICE>" in json.dumps(msg["blocks"]) and "Acknowledged by <@U0ALICE>" in msg["text"]
    assert ("marsad_ack", alert_id) not in buttons(msg) and ("marsad_silence_6h", alert_id) in buttons(msg)
    assert "dags/marsad_evaluate/runs/r1" in json.dumps(msg["blocks"])  # the run link survives the edit

    e2 = slack.push(second)
    assert slack.wait_for(lambda: slack.ack_of(e2))
    told = slack.wait_for(lambda: slack.responses_to(second["response_url"]))
    assert "Already acknowledged by <@U0ALICE>" in told[0]["text"] and told[0]["response_type"] == "ephemeral"
    assert len(slack.calls("chat.update")) == 1  # no second edit
    with db.connect(path, read_only=True) as con:
        assert one(con, "SELECT acked_by, acked_at FROM alerts WHERE alert_id = ?", [alert_id]) == ("U0ALICE", acked_at)


def test_silence_buttons_silence_the_rule_once(alert, listening, slack):
    path, alert_id, ts = alert
    stale = slack.block_actions("C0ALERTS", ts, "U0BOB", "marsad_silence_24h", alert_id)
    e = slack.press("C0ALERTS", ts, "U0BOB", "marsad_silence_6h", alert_id)
    assert slack.wait_for(lambda: slack.ack_of(e))
    assert slack.wait_for(lambda: slack.calls("chat.update"))
    with db.connect(path, read_only=True) as con:
        rows = con.execute("SELECT matcher, value, ends_at - starts_at, created_by FROM silences").fetchall()
    assert rows == [("rule", "r1", timedelta(hours=6), "U0BOB")]
    msg = slack.message("C0ALERTS", ts)
    assert "Silenced until" in json.dumps(msg["blocks"]) and "<@U0BOB>" in json.dumps(msg["blocks"])
    assert not [b for b in buttons(msg) if b[0].startswith("marsad_silence")] and ("marsad_ack", alert_id) in buttons(msg)
    slack.push(stale)  # Silence 24 h from a view taken before the edit
    assert "Already silenced until" in slack.wait_for(lambda: slack.responses_to(stale["response_url"]))[0]["text"]
    with db.connect(path, read_only=True) as con:
        assert one(con, "SELECT count(*) FROM silences")[0] == 1
    assert len(slack.calls("chat.update")) == 1


def test_not_an_event_flags_the_event_strikes_it_through_and_the_rule_resolves(alert, listening, slack):
    path, alert_id, ts = alert
    assert ("marsad_not_event", f"{alert_id}|e1") in buttons(slack.message("C0ALERTS", ts))
    e = slack.press("C0ALERTS", ts, "U0ALICE", "marsad_not_event", f"{alert_id}|e1")
    assert slack.wait_for(lambda: slack.ack_of(e))
    assert slack.wait_for(lambda: slack.calls("chat.update"))
    with db.connect(path, read_only=True) as con:
        assert con.execute("SELECT event_id, alert_id, flagged_by FROM event_feedback WHERE undone_at IS NULL").fetchall() == [("e1", alert_id, "U0ALICE")]
    msg = slack.message("C0ALERTS", ts)
    (line,) = [b for b in msg["blocks"] if b.get("block_id") == "marsad_event:e1"]
    assert line["text"]["text"].startswith("~") and "flagged not an event by <@U0ALICE>" in line["text"]["text"] and "accessory" not in line
    assert ("marsad_not_event", f"{alert_id}|e2") in buttons(msg)  # the other event keeps its button
    # The next cycle re-evaluates without it: 1 event of 2 needed, the alert resolves in its thread.
    with db.connect(path) as con:
        evaluate(con, PACK, NOW + timedelta(minutes=5))
    deliver(path, SlackSink(slack_client(slack.state.token, slack.base_url, timeout=5)))
    replies = [m for m in slack.state.messages["C0ALERTS"] if m.get("thread_ts") == ts]
    # (The reply names who flagged it; how the mention is drawn is the renderer's business.)
    assert replies and "flagged not an event" in replies[-1]["text"] and "U0ALICE" in replies[-1]["text"]
    with db.connect(path, read_only=True) as con:
        assert one(con, "SELECT state FROM alerts WHERE alert_id = ?", [alert_id])[0] == "resolved"
    # The resolution edits the first message again, and keeps the event struck through.
    msg = slack.message("C0ALERTS", ts)
    assert msg["blocks"][0]["text"]["text"].startswith("RESOLVED") and not buttons(msg)
    assert "flagged not an event by <@U0ALICE>" in json.dumps(msg["blocks"])


def test_the_resolved_message_still_says_who_acknowledged_it(alert, listening, slack):
    path, alert_id, ts = alert
    slack.press("C0ALERTS", ts, "U0ALICE", "marsad_ack", alert_id)
    assert slack.wait_for(lambda: slack.calls("chat.update"))
    with db.connect(path) as con:
        con.execute("UPDATE events SET first_report_at = first_report_at - INTERVAL 2 DAY")  # both events leave the 24 h window
        evaluate(con, PACK, NOW + timedelta(minutes=5))
    deliver(path, SlackSink(slack_client(slack.state.token, slack.base_url, timeout=5)))
    assert len(slack.calls("chat.update")) == 2
    msg = slack.message("C0ALERTS", ts)
    assert msg["blocks"][0]["text"]["text"].startswith("RESOLVED") and "Acknowledged by <@U0ALICE>" in json.dumps(msg["blocks"])


def test_a_press_by_someone_outside_the_channel_or_group_is_refused(alert, listening, slack):
    path, alert_id, ts = alert
    p = slack.block_actions("C0ALERTS", ts, "U0MALLORY", "marsad_ack", alert_id)
    e = slack.push(p)
    assert slack.wait_for(lambda: slack.ack_of(e))  # acknowledged to Slack all the same
    told = slack.wait_for(lambda: slack.responses_to(p["response_url"]))
    assert "Only members of <#C0ALERTS>" in told[0]["text"] and "nothing was changed" in told[0]["text"]
    # A button value that is not this message's alert (a crafted payload) changes nothing either.
    p = slack.block_actions("C0ALERTS", ts, "U0ALICE", "marsad_ack", alert_id)
    p["actions"][0]["value"] = "0" * 20
    slack.push(p)
    assert "does not belong to this message" in slack.wait_for(lambda: slack.responses_to(p["response_url"]))[0]["text"]
    # With ops.actors a user group, a channel member outside it is refused too, and a member acts.
    listening.access.actors = "S0ONCALL"
    p = slack.block_actions("C0ALERTS", ts, "U0ALICE", "marsad_silence_6h", alert_id)
    slack.push(p)
    assert "<!subteam^S0ONCALL>" in slack.wait_for(lambda: slack.responses_to(p["response_url"]))[0]["text"]
    assert not slack.calls("chat.update")
    with db.connect(path, read_only=True) as con:
        assert one(con, "SELECT acked_by FROM alerts")[0] is None and one(con, "SELECT count(*) FROM silences")[0] == 0
    slack.press("C0ALERTS", ts, "U0BOB", "marsad_ack", alert_id)
    assert slack.wait_for(lambda: slack.calls("chat.update"))
    with db.connect(path, read_only=True) as con:
        assert one(con, "SELECT acked_by FROM alerts")[0] == "U0BOB"


def test_a_press_while_the_warehouse_is_busy_is_queued_and_applied_later(alert, listening, slack):
    path, alert_id, ts = alert
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.read()",
                               str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        p = slack.block_actions("C0ALERTS", ts, "U0ALICE", "marsad_ack", alert_id)
        e = slack.push(p)
        assert slack.wait_for(lambda: slack.ack_of(e))
        told = slack.wait_for(lambda: slack.responses_to(p["response_url"]))
        assert "busy" in told[0]["text"] and "saved" in told[0]["text"]
        (queued,) = listening.pending()
        assert (queued.action_id, queued.value, queued.user) == ("marsad_ack", alert_id, "U0ALICE")
        assert not slack.calls("chat.update")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    # The listener drains the queue once the warehouse is free: applied as of the press.
    assert slack.wait_for(lambda: slack.calls("chat.update")), "the queued press was never applied"
    assert not listening.pending()
    with db.connect(path, read_only=True) as con:
        acked_by, acked_at = one(con, "SELECT acked_by, acked_at FROM alerts WHERE alert_id = ?", [alert_id])
    assert acked_by == "U0ALICE" and acked_at == datetime.fromisoformat(queued.at)


@pytest.fixture
def request_url(alert, slack):
    """The HTTP request-URL endpoint (FastAPI under uvicorn) on a loopback port."""
    import uvicorn

    handler = InteractionHandler(alert[0], slack_client(slack.state.token, slack.base_url, timeout=5))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(http_app(handler, slack.state.signing_secret), host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    end = time.monotonic() + 30
    while not server.started and time.monotonic() < end:
        time.sleep(0.02)
    assert server.started
    yield f"http://127.0.0.1:{port}/slack/interactions"
    server.should_exit = True
    t.join(timeout=10)


def test_request_url_acts_on_signed_requests_and_refuses_forged_stale_and_replayed_ones(alert, request_url, slack):
    path, alert_id, ts = alert
    press = slack.block_actions("C0ALERTS", ts, "U0ALICE", "marsad_ack", alert_id)
    body, headers = slack.signed_request(press, secret="not-the-signing-secret")
    assert httpx.post(request_url, content=body, headers=headers).status_code == 401  # forged
    body, headers = slack.signed_request(press, timestamp=int(time.time()) - 600)
    assert httpx.post(request_url, content=body, headers=headers).status_code == 401  # stale: outside Slack's 5 minutes
    body, headers = slack.signed_request(press)
    tampered = body.replace(b"U0ALICE", b"U0BOB__")
    assert httpx.post(request_url, content=tampered, headers=headers).status_code == 401  # body changed after signing
    assert httpx.post(request_url, content=body, headers=headers).status_code == 200
    assert slack.wait_for(lambda: slack.calls("chat.update"))
    assert httpx.post(request_url, content=body, headers=headers).status_code == 401  # the same request again: replayed
    with db.connect(path, read_only=True) as con:
        assert one(con, "SELECT acked_by FROM alerts")[0] == "U0ALICE"
    assert len(slack.calls("chat.update")) == 1


def test_make_run_starts_the_listener_with_airflow_and_stops_it(alert, slack, tmp_path):
    """``make run``'s launcher starts ``marsad slack listen`` (its own process group) when an
    app-level token is configured, the listener acts on a press, and stopping takes it down."""
    from marsad.airflow_env import airflow_env, start_slack_listener, stop_group

    path, alert_id, ts = alert
    home = tmp_path / "airflow"
    home.mkdir()
    env = airflow_env(home, warehouse=path)
    env.update(MARSAD_SLACK_TOKEN=slack.state.token, MARSAD_SLACK_BASE_URL=slack.base_url)
    env.pop("MARSAD_SLACK_APP_TOKEN", None)
    proc, note = start_slack_listener(env, home)
    assert proc is None and note.startswith("off: no app-level token")
    env["MARSAD_SLACK_APP_TOKEN"] = slack.state.app_token
    proc, note = start_slack_listener(env, home)
    try:
        assert proc is not None and "listening over Socket Mode" in note
        assert slack.connected(timeout=120), (home / "slack-listener.log").read_text()
        slack.press("C0ALERTS", ts, "U0ALICE", "marsad_ack", alert_id)
        assert slack.wait_for(lambda: slack.calls("chat.update"), timeout=60), (home / "slack-listener.log").read_text()
    finally:
        stop_group(proc, grace=15)
    assert proc.poll() is not None
    with db.connect(path, read_only=True) as con:
        assert one(con, "SELECT acked_by FROM alerts")[0] == "U0ALICE"


def test_ops_actors_is_validated_with_file_line_and_field(tmp_path):
    from marsad.settings import load
    from sources.configfile import ConfigError

    f = tmp_path / "settings.yaml"
    f.write_text('ops:\n  channel: "#marsad-ops"\n  actors: "Marsad Ops"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load({"MARSAD_SETTINGS": str(f)})
    assert f"{f}:3: ops.actors: 'Marsad Ops' is neither a Slack channel" in str(exc.value)
    f.write_text('ops:\n  actors: S0ONCALL\n', encoding="utf-8")
    assert load({"MARSAD_SETTINGS": str(f)}).get("ops.actors") == "S0ONCALL"
    assert load({"MARSAD_SETTINGS": str(f), "MARSAD_SLACK_ACTORS": "#marsad-alerts"}).get("ops.actors") == "#marsad-alerts"


def test_the_listener_follows_slacks_connection_refresh(alert, listening, slack):
    """Slack asks Socket Mode apps to reconnect regularly (``disconnect``): presses keep working."""
    path, alert_id, ts = alert
    first = slack.state.sockets[-1]
    e = slack.push({"type": "event_callback", "event": {"type": "app_home_opened", "user": "U0ALICE"}}, kind="events_api")
    assert slack.wait_for(lambda: slack.ack_of(e))  # any envelope is acknowledged; only button presses act
    slack.refresh()
    assert slack.wait_for(lambda: len(slack.calls("apps.connections.open")) == 2 and slack.state.sockets and slack.state.sockets[-1] is not first)
    e = slack.press("C0ALERTS", ts, "U0ALICE", "marsad_ack", alert_id)
    assert slack.wait_for(lambda: slack.ack_of(e)) and slack.wait_for(lambda: slack.calls("chat.update"))
    with db.connect(path, read_only=True) as con:
        assert one(con, "SELECT acked_by FROM alerts")[0] == "U0ALICE"


@pytest.mark.airflow
def test_make_run_reads_the_app_token_from_the_airflow_connection_and_stops_the_listener_with_airflow(tmp_path, slack):
    """``make run`` (marsad.airflow_env.main) under airflow standalone: the app-level token in the
    Slack connection's extra starts the listener (the banner says so), Ctrl-C stops both."""
    import os
    import signal

    from conftest import free_port, processes_with
    from marsad.settings import ENV

    home = tmp_path / "airflow"
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"schedules:\n  ingest: none\n  digest: none\ningest:\n  deadline: none\npaths:\n  warehouse: {tmp_path}/wh.duckdb\n",
                        encoding="utf-8")
    conn = json.dumps({"conn_type": "slack", "password": slack.state.token,
                       "extra": {"base_url": slack.base_url, "app_token": slack.state.app_token}})
    env = {k: v for k, v in os.environ.items() if k not in ENV.values() and not k.startswith("MARSAD_SLACK")}
    env.update(MARSAD_SETTINGS=str(settings), MARSAD_AIRFLOW_HOME=str(home), MARSAD_UI_PORT=str(free_port()),
               AIRFLOW_CONN_SLACK_API_DEFAULT=conn, AIRFLOW__API__WORKERS="1")
    out = open(tmp_path / "make-run.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "marsad.airflow_env"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert slack.connected(timeout=300), (tmp_path / "make-run.log").read_text()[-3000:]
        end = time.monotonic() + 300
        while "Slack buttons:" not in (tmp_path / "make-run.log").read_text() and proc.poll() is None and time.monotonic() < end:
            time.sleep(1)
        banner = (tmp_path / "make-run.log").read_text()
        assert "marsad: Slack buttons: listening over Socket Mode (tokens from Airflow connection slack_api_default)" in banner, banner[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal reaches the launcher's group
        proc.wait(timeout=120)
    time.sleep(1)
    assert processes_with(str(home)) == [], "make run left processes behind (the listener?)"
    assert "marsad: stopped." in (tmp_path / "make-run.log").read_text()


def test_an_event_told_in_a_thread_update_can_be_flagged_from_that_reply(alert, listening, slack):
    path, alert_id, ts = alert
    with db.connect(path) as con:
        add_event(con, "e3", T0 + timedelta(hours=2, minutes=30), "Drone exercise at Harir base")
        evaluate(con, PACK, NOW + timedelta(minutes=5))
    deliver(path, SlackSink(slack_client(slack.state.token, slack.base_url, timeout=5)))
    (reply,) = [m for m in slack.state.messages["C0ALERTS"] if m.get("thread_ts") == ts]
    assert ("marsad_not_event", f"{alert_id}|e3") in buttons(reply)
    assert not [b for b in buttons(reply) if b[0] in ("marsad_ack", "marsad_silence_6h")]  # those stay on the first message

    e = slack.press("C0ALERTS", reply["ts"], "U0ALICE", "marsad_not_event", f"{alert_id}|e3")
    assert slack.wait_for(lambda: slack.ack_of(e))
    assert slack.wait_for(lambda: slack.calls("chat.update"))
    with db.connect(path, read_only=True) as con:
        assert con.execute("SELECT event_id, flagged_by FROM event_feedback WHERE undone_at IS NULL").fetchall() == [("e3", "U0ALICE")]
    edited = slack.message("C0ALERTS", reply["ts"])
    (line,) = [b for b in edited["blocks"] if b.get("block_id") == "marsad_event:e3"]
    assert "flagged not an event by <@U0ALICE>" in line["text"]["text"] and "accessory" not in line
