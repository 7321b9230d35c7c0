"""The indicator board: its data (``alerts.board``) over a warehouse the real pipeline filled,
and the page (``plugins/marsad_board.py``) served by a real Airflow api-server, behind
Airflow's login, in headless Chromium from Debian's packages (screenshots: tests/artifacts/)."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from board_data import LATE_AR, populate
from conftest import REPO, FeedServer, free_port, processes_with
from slack_server import SlackServer

ARTIFACTS = Path(os.environ.get("MARSAD_TEST_ARTIFACTS") or REPO / "tests" / "artifacts")
CHROMIUM = Path(os.environ.get("MARSAD_CHROMIUM", "/usr/bin/chromium"))
# No sandbox (root in a container); nothing that phones home (the network is closed).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
RESOLVE_AFTER = timedelta(seconds=90)
FIRING, RESOLVED, QUIET = "militia_attack_us_forces", "us_strike_militia", "nuclear_talks"


@pytest.fixture(scope="module")
def board_slack():
    """The Slack stand-in the board's alerts were delivered to (their threads link there)."""
    srv = SlackServer().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def filled(tmp_path_factory, board_slack):
    """A warehouse and its read copy, filled once per module by fetching from loopback feeds."""
    from marsad import pipeline

    srv = FeedServer()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    tmp = tmp_path_factory.mktemp("board")
    settings = pipeline.Settings.from_env(tmp / "wh.duckdb")
    settings.staging = tmp / "staging"
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MARSAD_ALLOW_PRIVATE_FEEDS", "127.0.0.1/32")
            times = populate(settings, srv, tmp, resolve_after=RESOLVE_AFTER, slack=board_slack)
    finally:
        srv.shutdown()
        srv.server_close()
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    fired = dict(con.execute("SELECT rule_id, state FROM alerts").fetchall())
    con.close()
    # If fetching took longer than RESOLVE_AFTER the tripwire never fired: say so, not a riddle later.
    assert fired == {"militia-attack-campaign": "firing", "us-strikes-militias": "resolved"}, fired
    return settings, times


def _config(settings, read_copy=None):
    from alerts.board import BoardConfig

    return BoardConfig(Path(read_copy or settings.read_copy), settings.indicators, settings.rules, settings.feeds)


def _by_id(board):
    return {i["id"]: i for i in board["indicators"]}


def test_board_data_states_quiet_days_events_and_source_health(filled):
    from alerts.board import build

    settings, times = filled
    now = times["resolved_at"] + timedelta(minutes=1)
    board = build(_config(settings), now=now)
    assert board["status"] == "ok" and board["config_problems"] == []
    assert board["published"]["articles"] == 9
    ind = _by_id(board)
    assert len(ind) == 11, "every indicator of alerts/indicators/ has a row, with events or not"
    assert [i["state"] for i in board["indicators"]][:3] == ["firing", "resolved", "quiet"], "firing first, then resolved"

    firing = ind[FIRING]
    assert firing["state"] == "firing"
    assert [a["rule_id"] for a in firing["firing"]] == ["militia-attack-campaign"]
    assert [e["title"][:5] for e in firing["events"]] == ["سقوط ", "Rocke", "Drone", "Drone"], "newest event first"
    asad = firing["events"][0]
    # Two Arabic reports and the English wire copy are one event, shown by its first report (the
    # outlet added later, whose report moved the event's time): its title, link and outlet,
    # corroborated by three outlets in two languages.
    assert (asad["title"], asad["url"], asad["outlet"]) == (LATE_AR["title"], "https://late.example/asad", "Late AR")
    assert asad["at"] == times["late_report"]
    assert (asad["n_outlets"], asad["n_articles"], asad["languages"]) == (3, 3, ["ar", "en"])
    assert asad["outlets"] == ["Late AR", "Outlet AR", "Second Wire"]
    for e in (e for i in board["indicators"] for e in i["events"]):  # the title shown is the title linked, by the outlet shown
        first = e["reports"][0]
        assert (e["title"], e["url"], e["outlet"]) == (first["title"], first["url"], first["outlet"]), e
        assert first["published_at"] == min(r["published_at"] for r in e["reports"]) == e["at"]
    assert firing["events_7d"] == 3 and 0.09 < firing["days_since_last_event"] < 0.2  # three hours
    assert abs(firing["since_last_event_s"] - (now - times["late_report"]).total_seconds()) < 1

    resolved = ind[RESOLVED]
    assert resolved["state"] == "resolved" and resolved["firing"] == []
    assert resolved["last_resolved"]["rule_id"] == "us-strikes-militias"
    assert resolved["last_resolved"]["resolved_at"] == times["resolved_at"]

    quiet = ind[QUIET]
    assert quiet["state"] == "quiet" and quiet["firing"] == [] and quiet["last_resolved"] is None
    assert 19.95 < quiet["days_since_last_event"] < 20.05
    assert quiet["events"][0]["url"] == "https://en.example/talks" and quiet["events_30d"] == 1 and quiet["events_7d"] == 0
    never = ind["hormuz_threat"]
    assert (never["state"], never["last_event_at"], never["days_since_last_event"], never["events"]) == ("quiet", None, None, [])
    assert [r["id"] for r in never["rules"]] == ["hormuz-threat"]

    health = {s["source_id"]: s for s in board["sources"]}
    assert {k: s["health"] for k, s in health.items()} == {"broken": "failing", "wire-en": "ok", "outlet-ar": "ok", "second-wire": "ok",
                                                           "late-ar": "ok"}
    assert board["sources"][0]["source_id"] == "broken", "unhealthy sources first"
    assert health["broken"]["last_error"] == "HTTP 404" and health["broken"]["last_success_at"] is None
    assert health["wire-en"]["last_success_at"] is not None and health["wire-en"]["items_24h"] == 6
    assert board["counts"] == {"firing": 1, "resolved": 1, "quiet": 9, "sources_failing": 1, "sources_ok": 4}

    # Four days on: the resolved alert is old news, and no poll since then makes every source stale.
    later = build(_config(settings), now=times["resolved_at"] + timedelta(days=4))
    assert _by_id(later)[RESOLVED]["state"] == "quiet"
    assert {s["source_id"]: s["health"] for s in later["sources"]} == {
        "broken": "failing", "wire-en": "stale", "outlet-ar": "stale", "second-wire": "stale", "late-ar": "stale"}
    assert 23.9 < _by_id(later)[QUIET]["days_since_last_event"] < 24.1


def test_flagged_events_leave_the_counts_and_cards_say_when_rules_are_armed_and_how_judgements_stand(filled, tmp_path):
    """A flag "not an event" (alerts/feedback.py) takes the event out of the card's counts and
    the timeline but keeps it listed, struck; each rule says whether it can fire now
    (alerts/armed.py); the key judgements panel (alerts/judgements.py) is on the board."""
    import dataclasses
    import shutil

    from alerts.board import BoardConfig, build
    from alerts.feedback import flag_not_event
    from marsad import pipeline
    from warehouse import db

    settings, times = filled
    now = times["resolved_at"] + timedelta(minutes=1)
    mine = dataclasses.replace(settings, warehouse=tmp_path / "wh.duckdb", read_copy=tmp_path / "wh-read.duckdb")
    shutil.copyfile(settings.warehouse, mine.warehouse)
    cfg = BoardConfig(mine.read_copy, mine.indicators, mine.rules, mine.feeds, mine.assessments)
    pipeline.publish_read_copy(mine)
    before = _by_id(build(cfg, now=now))[FIRING]
    flagged = before["events"][1]["event_id"]
    with db.connect(mine.warehouse) as con:
        assert flag_not_event(con, flagged, None, "U0ANALYST", now)
    pipeline.publish_read_copy(mine)
    board = build(cfg, now=now)
    after = _by_id(board)[FIRING]
    assert after["events_7d"] == before["events_7d"] - 1 and after["events_total"] == before["events_total"] - 1
    assert sum(d["events"] for d in after["timeline"]["days"]) == sum(d["events"] for d in before["timeline"]["days"]) - 1
    shown = {e["event_id"]: e for e in after["events"]}
    assert shown[flagged]["flagged"]["by"] == "U0ANALYST", "still listed, marked"
    assert [e["event_id"] for e in after["events"] if e.get("flagged")] == [flagged]

    # Rules on every card carry their status; the resumption rule cannot fire on a short history.
    rules = {r["id"]: r for i in board["indicators"] for r in i["rules"]}
    assert rules["militia-attack-campaign"]["state"] == "firing"
    assert rules["militia-attacks-resume"]["state"] == "not armed" and "history since" in rules["militia-attacks-resume"]["detail"]
    from alerts.judgements import load_assessments

    shipped = sum(len(a.judgements) for a in load_assessments(mine.assessments))
    assert board["judgements"]["errors"] == [] and len(board["judgements"]["judgements"]) == shipped
    page = _render(board)
    assert 'class="event flagged"' in page and "flagged not an event by U0ANALYST" in page
    assert '<section class="marsad-judgements">' in page and 'data-rule="militia-attacks-resume"' in page


def test_board_without_a_read_copy_says_so(filled, tmp_path):
    from alerts.board import build

    settings, _ = filled
    board = build(_config(settings, read_copy=tmp_path / "none-read.duckdb"))
    assert board["status"] == "no_read_copy" and board["indicators"] == [] and board["sources"] == []
    assert str(tmp_path / "none-read.duckdb") in board["message"] and "marsad publish" in board["message"]
    page = _render(board)
    assert 'data-status="no_read_copy"' in page and str(tmp_path / "none-read.duckdb") in page and "section class=\"card" not in page


def test_board_never_waits_for_the_pipeline_and_never_holds_it_up(filled, tmp_path):
    """The board opens only the read copy: a writer holding the primary (another process, as a
    load does) does not slow it, and a board reading the copy does not stop a publish."""
    from alerts.board import build
    from marsad.pipeline import publish_read_copy

    settings, times = filled
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(60)",
         str(settings.warehouse)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t = time.perf_counter()
        board = build(_config(settings), now=times["resolved_at"])
        took = time.perf_counter() - t
        assert board["status"] == "ok" and _by_id(board)[FIRING]["state"] == "firing"
        assert took < 5, f"the board took {took:.1f}s while the primary was locked"
    finally:
        holder.kill()
        holder.wait()

    reader = duckdb.connect(str(settings.read_copy), read_only=True)  # a board request in the middle of its query
    try:
        before = os.stat(settings.read_copy).st_ino
        assert publish_read_copy(settings) is not None, "publishing failed while the board held the read copy"
        assert os.stat(settings.read_copy).st_ino != before, "a new copy was swapped in"
        assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 6  # the old copy stays readable
    finally:
        reader.close()


def _render(board, page="board"):
    sys.path.insert(0, str(REPO / "plugins"))
    try:
        import marsad_board
    finally:
        sys.path.remove(str(REPO / "plugins"))
    return marsad_board.render(board, page=page)


def test_page_escapes_feed_text_and_links_only_http(filled):
    from alerts.board import build

    settings, times = filled
    board = build(_config(settings), now=times["resolved_at"])
    event = _by_id(board)[FIRING]["events"][1]
    event["title"] = '<img src=x onerror="alert(1)">Rockets'
    event["url"] = "javascript:alert(1)"
    page = _render(board)
    assert '<img src=x onerror="alert(1)">' not in page
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;Rockets" in page
    assert "javascript:" not in page
    assert 'href="https://late.example/asad"' in page  # an http(s) link is a link
    assert 'data-state="firing"' in page and 'data-health="failing"' in page


def _utc_day(t):
    return t.astimezone(timezone.utc).date()


def _event_times(times):
    """The militia attacks' first reports (board_data): 40 days ago, then three in 30 hours."""
    t0 = times["t0"]
    return [times["old_attack"], t0 - timedelta(hours=30), t0 - timedelta(hours=20), times["late_report"]]


def test_timeline_counts_events_per_day_and_shades_quiet_spells(filled):
    from alerts.board import build

    settings, times = filled
    now = times["resolved_at"] + timedelta(minutes=1)
    ind = _by_id(build(_config(settings), now=now))
    tl = ind[FIRING]["timeline"]
    days = [d["day"] for d in tl["days"]]
    assert len(days) == 90 and days[-1] == _utc_day(now) and days == [days[0] + timedelta(days=k) for k in range(90)]
    expected = Counter(_utc_day(t) for t in _event_times(times))
    assert {d["day"]: d["events"] for d in tl["days"] if d["events"]} == expected
    assert (tl["events"], tl["max_events"]) == (4, max(expected.values()))
    assert all(i["timeline"]["events"] == 0 and i["timeline"]["quiet_spells"] == [] for i in ind.values() if i["last_event_at"] is None)

    # The resumption rule's quiet (14 days) marks the 38-day gap before the three attacks; the
    # last attack was three hours ago, so nothing is quiet now.
    assert (tl["quiet_s"], tl["quiet_from_rule"], tl["quiet_rule"]) == (14 * 86400, True, "militia-attacks-resume")
    first_of_three = times["t0"] - timedelta(hours=30)
    assert tl["quiet_spells"] == [{"start": times["old_attack"], "end": first_of_three,
                                   "seconds": round((first_of_three - times["old_attack"]).total_seconds()),
                                   "ongoing": False, "since_watch_start": False}]
    # Nuclear talks have no resumption rule: the board's default (7 days) marks the 20 days since the talks.
    talks = ind[QUIET]["timeline"]
    assert (talks["quiet_s"], talks["quiet_from_rule"], talks["quiet_rule"]) == (7 * 86400, False, None)
    (spell,) = talks["quiet_spells"]
    assert (spell["start"], spell["end"], spell["ongoing"]) == (times["t0"] - timedelta(days=20), now, True)

    # Ten days on, an indicator that never had an event has been quiet since Marsad started watching.
    later = times["resolved_at"] + timedelta(days=10)
    never = _by_id(build(_config(settings), now=later))["hormuz_threat"]["timeline"]
    (spell,) = never["quiet_spells"]
    assert spell["since_watch_start"] and spell["ongoing"] and spell["end"] == later
    assert times["t0"] < spell["start"] < times["evaluated_at"], "watching began with the first successful poll"
    # And the militia attacks' last quiet spell is the one running since the last attack.
    spells = _by_id(build(_config(settings), now=later))[FIRING]["timeline"]["quiet_spells"]
    assert [(s["start"], s["ongoing"]) for s in spells] == [(times["old_attack"], False)], "10 days is shorter than 14"


def test_timeline_marks_alerts_with_their_slack_thread_and_rule_thresholds(filled, board_slack):
    from alerts.board import build

    settings, times = filled
    now = times["resolved_at"] + timedelta(minutes=1)
    ind = _by_id(build(_config(settings), now=now))
    parents = {m["ts"] for m in board_slack.state.messages["C0ALERTS"] if not m.get("thread_ts")}

    (campaign,) = ind[FIRING]["timeline"]["alerts"]
    assert (campaign["rule_id"], campaign["state"], campaign["started_at"], campaign["resolved_at"]) == (
        "militia-attack-campaign", "firing", times["evaluated_at"], None)
    assert campaign["slack"]["channel"] == "C0ALERTS" and campaign["slack"]["ts"] in parents
    assert ind[FIRING]["firing"][0]["slack"] == campaign["slack"], "the card's firing alert links the same thread"
    (strike,) = ind[RESOLVED]["timeline"]["alerts"]
    assert (strike["state"], strike["resolved_at"]) == ("resolved", times["resolved_at"])
    assert strike["slack"]["ts"] in parents and strike["slack"] != campaign["slack"]
    # Seen from before it resolved, the same alert is still firing.
    before = _by_id(build(_config(settings), now=times["evaluated_at"] + timedelta(seconds=1)))
    assert [(a["state"], a["resolved_at"]) for a in before[RESOLVED]["timeline"]["alerts"]] == [("firing", None)]

    # The Ain al-Asad event was told to ops by the campaign alert: the event links its thread.
    asad = ind[FIRING]["events"][0]
    assert [(a["rule_id"], a["slack"]) for a in asad["alerts"]] == [("militia-attack-campaign", campaign["slack"])]
    assert asad["frame"]["action"] == "attack" and asad["frame"]["target"] == "us"
    assert {r["lang"] for r in asad["reports"]} == {"ar", "en"} and all(r["frame"] for r in asad["reports"])

    # The campaign rule (3 events in 72 h): its line at 3, and each day the most events its window held.
    (th,) = ind[FIRING]["timeline"]["thresholds"]
    assert (th["rule_id"], th["kind"], th["count"], th["window_s"]) == ("militia-attack-campaign", "threshold", 3, 72 * 3600)
    window = timedelta(hours=72)
    attacks = _event_times(times)
    expected = []
    for d in ind[FIRING]["timeline"]["days"]:
        start = datetime.combine(d["day"], datetime.min.time(), tzinfo=timezone.utc)
        instants = [start] + [t for t in attacks if _utc_day(t) == d["day"]]
        expected.append(max(sum(1 for e in attacks if i - window < e <= i) for i in instants))
    assert th["peaks"] == expected and max(expected) == 3
    # A flatline rule has its line (fewer than 1 in 30 days) but no window peaks; a tripwire is a threshold of 1.
    assert [(t["rule_id"], t["kind"], t["count"], t["peaks"]) for t in ind[QUIET]["timeline"]["thresholds"]] == [
        ("nuclear-talks-silent", "flatline", 1, None)]
    assert [(t["rule_id"], t["count"], t["window_s"]) for t in ind[RESOLVED]["timeline"]["thresholds"]] == [
        ("us-strikes-militias", 1, 86400)]


def test_timeline_svg_and_event_details_on_the_page(filled):
    import xml.etree.ElementTree as ET

    from alerts.board import build, day_events

    settings, times = filled
    now = times["resolved_at"] + timedelta(minutes=1)
    board = build(_config(settings), now=now)
    page = _render(board)
    ns = {"s": "http://www.w3.org/2000/svg"}
    svgs = {}
    for chunk in page.split('<svg class="timeline"')[1:]:
        svg = ET.fromstring('<svg class="timeline"' + chunk.split("</svg>")[0] + "</svg>")  # well-formed XML
        svgs[svg.get("data-timeline")] = svg
    assert set(svgs) == {i["id"] for i in board["indicators"]}
    firing = svgs[FIRING]
    assert firing.get("role") == "img" and firing.find("s:title", ns).text.startswith("Events per day over the last 90 days")
    bars = firing.findall(".//s:rect[@class='bar']", ns)
    assert {b.get("data-day"): int(b.get("data-events")) for b in bars} == {
        str(d): n for d, n in Counter(_utc_day(t) for t in _event_times(times)).items()}
    assert len(firing.findall(".//s:g[@class='quiet']", ns)) == 1
    assert firing.find(".//s:g[@class='quiet']/s:text", ns).text == "quiet 39 d"
    assert firing.find(".//s:g[@class='threshold']", ns).get("data-count") == "3"
    (alert,) = firing.findall(".//s:g[@data-alert]", ns)
    assert alert.find("s:a", ns).get("href") == f"slack/{board['indicators'][0]['firing'][0]['alert_id']}"
    assert svgs[QUIET].find(".//s:g[@class='quiet']/s:text", ns).text == "quiet 20 d so far"

    # Days since the last event read as hours within a day, as days after.
    assert '<b class="days">3 h</b> since the last event' in page
    assert '<b class="days">20 days</b> since the last event' in page
    # Every report of an event, in both languages, with its frame, behind the event's <details>.
    assert page.count('<li class="report" data-lang="ar"') >= 2 and '<li class="report" data-lang="en"' in page
    assert 'dir="auto" lang="ar"' in page and "unknown actor — attack → us (ain_al_asad)" in page

    # A bar opens its day: every event first reported that day, with its evidence.
    day = day_events(_config(settings), FIRING, _utc_day(times["late_report"]), now=now)
    assert day["status"] == "ok" and [e["event_id"] for e in day["events"]][-1] == board["indicators"][0]["events"][0]["event_id"]
    assert len(day["events"]) == Counter(_utc_day(t) for t in _event_times(times))[_utc_day(times["late_report"])]
    html = _render(day, page="day")
    assert html.count('<details class="event"') == html.count(" open>") == len(day["events"]), "a day's events open at once"
    assert day_events(_config(settings), "no_such", _utc_day(now))["status"] == "error"


def test_days_since_the_last_event_reads_as_hours_then_days():
    sys.path.insert(0, str(REPO / "plugins"))
    try:
        from marsad_board import _since
    finally:
        sys.path.remove(str(REPO / "plugins"))
    assert [_since(s) for s in (None, 0, 59 * 60, 3600, 5 * 3600 + 1800, 86399, 86400, 1.5 * 86400, 20.4 * 86400)] == [
        "–", "under an hour", "under an hour", "1 h", "5 h", "23 h", "1.0 days", "1.5 days", "20 days"]


# ----------------------------------------------------------------------------- in Airflow, in a browser


def _need(what: str):
    msg = f"{what}; .ci/run installs chromium (apt-get install chromium) and `make install` installs playwright"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def _get(url: str, token: str | None = None, follow: bool = True):
    """(status, headers, body) of a GET, without following redirects when ``follow`` is false."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **kw):
            return None

    opener = urllib.request.build_opener(*([] if follow else [NoRedirect()]))
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.mark.airflow
def test_board_in_the_airflow_ui_in_headless_chromium(filled, board_slack, tmp_path):
    if not CHROMIUM.exists():
        _need(f"{CHROMIUM} not found")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("playwright is not installed")
    from marsad.airflow_env import airflow_env, prepare

    settings, times = filled
    home, port = tmp_path / "airflow", free_port()
    env = airflow_env(home, warehouse=settings.warehouse, port=port)
    env["MARSAD_FEEDS"] = str(settings.feeds)
    # The Slack connection the pipeline delivered through: the board asks it for thread links.
    env["AIRFLOW_CONN_SLACK_API_DEFAULT"] = json.dumps(
        {"conn_type": "slack", "password": board_slack.state.token, "extra": {"base_url": board_slack.base_url}})
    base = f"http://127.0.0.1:{port}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = tmp_path / "api-server.log"
    t_start = time.monotonic()
    prepare(env)
    with open(log_path, "wb") as log:
        server = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), "api-server"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    # The pipeline's writer holds the primary for as long as the board is being looked at.
    writer = duckdb.connect(str(settings.warehouse))
    try:
        deadline = time.monotonic() + 180
        while not _healthy(base):
            assert server.poll() is None, "api-server exited\n" + log_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "api-server not healthy in 180 s\n" + log_path.read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        t_up = time.monotonic()

        # Not logged in: the page sends a person to Airflow's login and back; the JSON says 401.
        status, headers, _ = _get(f"{base}/marsad/board/", follow=False)
        assert status == 303 and "/auth/login?next=" in headers["location"], (status, headers)
        assert _get(f"{base}/marsad/board/data.json")[0] == 401

        password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        req = urllib.request.Request(f"{base}/auth/token", data=json.dumps({"username": "admin", "password": password}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            token = json.loads(r.read())["access_token"]
        status, _, body = _get(f"{base}/marsad/board/data.json", token)
        assert status == 200, body[:500]
        took = []
        for _ in range(5):
            t = time.perf_counter()
            assert _get(f"{base}/marsad/board/data.json", token)[0] == 200
            took.append(time.perf_counter() - t)
        data = json.loads(body)
        assert {i["id"]: i["state"] for i in data["indicators"]}[FIRING] == "firing"

        plugins = json.loads(_get(f"{base}/api/v2/plugins", token)[2])["plugins"]
        (ours,) = [p for p in plugins if p["name"] == "marsad_board"]
        assert {v["name"] for v in ours["external_views"]} == {"Marsad", "Indicator board (new tab)"}

        with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
            browser = pw.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, viewport={"width": 1440, "height": 1000})
            try:
                page = browser.new_page()
                page.goto(f"{base}/marsad/board/")
                # Airflow's own login form (SimpleAuthManager), then back to the board.
                page.wait_for_selector("input[name=username]", timeout=60_000)
                page.fill("input[name=username]", "admin")
                page.fill("input[name=password]", password)
                page.click("button[type=submit]")
                page.wait_for_url(f"{base}/marsad/board/", timeout=60_000)
                t_page = time.monotonic()
                _check_board(page, times)
                page.screenshot(path=str(ARTIFACTS / "board.png"), full_page=True)
                _check_details_and_slack_link(page, base, times, board_slack)
                page.locator(f'[data-indicator="{FIRING}"] .timeline-box').screenshot(path=str(ARTIFACTS / "board-timeline.png"))
                _check_day_page(page, times)
                page.screenshot(path=str(ARTIFACTS / "board-day.png"), full_page=True)

                # In the Airflow UI: the nav entry shows the board in Airflow's frame.
                page.goto(f"{base}/")
                page.get_by_role("link", name="Marsad", exact=True).click()
                page.wait_for_url("**/plugin/marsad-board**", timeout=60_000)
                frame = page.frame_locator('iframe[title="Marsad"]')
                frame.locator(f'[data-indicator="{FIRING}"][data-state="firing"]').wait_for(timeout=60_000)
                assert frame.locator("#framed-note").is_visible(), "inside the frame the page says how to open articles"
                page.screenshot(path=str(ARTIFACTS / "board-in-airflow.png"))

                # At 1280 px, inside Airflow's frame, headlines keep the card's width: an Arabic
                # headline takes a line or two, not a word a line.
                page.set_viewport_size({"width": 1280, "height": 1000})
                _check_layout(frame)
                _check_contrast(frame, dark=False)
                page.screenshot(path=str(ARTIFACTS / "board-1280.png"))

                # Airflow's dark theme (kept by its UI in localStorage "theme"): the board follows it.
                page.evaluate("localStorage.setItem('theme', 'dark')")
                page.reload()
                page.wait_for_function("document.documentElement.classList.contains('dark')", timeout=60_000)
                frame = page.frame_locator('iframe[title="Marsad"]')
                frame.locator(f'[data-indicator="{FIRING}"] svg.timeline').wait_for(timeout=60_000)
                _check_contrast(frame, dark=True)
                page.screenshot(path=str(ARTIFACTS / "board-dark.png"))
            finally:
                browser.close()
        print(f"\nboard test: api-server healthy after {t_up - t_start:.1f}s (incl. db migrate); data.json median "
              f"{sorted(took)[2] * 1000:.0f} ms; login + first board page {t_page - t_up:.1f}s; screenshots in {ARTIFACTS}")
    finally:
        writer.close()
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            try:
                os.killpg(server.pid, sig)
                server.wait(timeout=wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.5)
    assert processes_with(str(home)) == [], "api-server processes left behind"


def _healthy(base: str) -> bool:
    try:
        return _get(f"{base}/api/v2/monitor/health")[0] == 200
    except OSError:
        return False


def _check_board(page, times) -> None:
    """What a person sees: the firing indicator with its event and timeline, a quiet one with its days, the failing source."""
    firing = page.locator(f'[data-indicator="{FIRING}"]')
    assert firing.get_attribute("data-state") == "firing"
    assert firing.locator(".badge.state").inner_text().strip().upper() == "FIRING"
    assert "militia-attack-campaign" in firing.locator(".alerts").inner_text()
    assert firing.locator(".since .days").inner_text() == "3 h"
    asad = firing.locator("details.event").first
    link = asad.locator("summary .title a")
    # The title shown, the article it links to and the outlet beside it are one report's.
    assert link.inner_text().startswith(LATE_AR["title"][:30])
    assert link.get_attribute("href") == "https://late.example/asad"
    assert asad.locator("summary .outlet").inner_text() == "Late AR"
    assert asad.locator("summary .corr").inner_text().startswith("3 outlets · 3 reports")
    rockets = firing.locator("details.event").nth(1)
    assert rockets.locator("summary .title a").get_attribute("href") == "https://en.example/tanf"
    assert rockets.locator("summary .outlet").inner_text() == "Wire EN"

    # The timeline: a bar per day with events, the 39 quiet days before the attacks, the alert.
    svg = firing.locator("svg.timeline")
    assert svg.get_attribute("role") == "img" and svg.is_visible()
    days = Counter(_utc_day(t) for t in _event_times(times))
    assert svg.locator("rect.bar").count() == len(days)
    assert sorted(svg.locator("rect.bar").evaluate_all("els => els.map(e => e.dataset.day)")) == sorted(str(d) for d in days)
    assert svg.locator("g.quiet").count() == 1 and svg.locator("g.quiet text").text_content() == "quiet 39 d"
    assert svg.locator("g.threshold").get_attribute("data-count") == "3"
    assert svg.locator("g.alert.firing path.fired").count() == 1
    bar_h = svg.locator("rect.bar").evaluate_all("els => els.map(e => e.getBoundingClientRect().height)")
    assert min(bar_h) > 0

    assert page.locator(f'[data-indicator="{RESOLVED}"]').get_attribute("data-state") == "resolved"
    quiet = page.locator(f'[data-indicator="{QUIET}"]')
    assert quiet.get_attribute("data-state") == "quiet"
    assert quiet.locator(".days").inner_text() == "20 days"
    assert "since the last event" in quiet.locator(".since").inner_text()
    assert quiet.locator("svg.timeline g.quiet text").text_content() == "quiet 20 d so far"

    broken = page.locator('tr.source[data-source="broken"]')
    assert broken.get_attribute("data-health") == "failing"
    assert broken.locator(".badge.health").inner_text().strip().upper() == "FAILING"
    assert "HTTP 404" in broken.inner_text()
    assert page.locator('tr.source[data-source="wire-en"]').get_attribute("data-health") == "ok"
    assert page.locator("section.card").count() == 11


def _check_details_and_slack_link(page, base, times, slack) -> None:
    """A click on an event opens its reports in both languages, its frame, its corroboration and
    its alert, whose link leads (through chat.getPermalink) to the alert's thread in Slack."""
    asad = page.locator(f'[data-indicator="{FIRING}"] details.event').first
    evidence = asad.locator(".evidence")
    assert not evidence.is_visible()
    asad.locator("summary .meta").click()
    evidence.wait_for(state="visible")
    ar, en = evidence.locator('li.report[data-lang="ar"]'), evidence.locator('li.report[data-lang="en"]')
    assert ar.count() == 2 and en.count() == 1 and ar.first.is_visible() and en.first.is_visible()
    assert ar.nth(1).locator(".rtitle a").inner_text().startswith("هجوم بطائرة مسيّرة على قاعدة عين الأسد")
    assert en.locator(".rtitle a").get_attribute("href") == "https://wire.example/asad"
    assert "attack → us (ain_al_asad)" in evidence.locator(".frame").first.inner_text()
    assert evidence.locator(".corroboration").inner_text().startswith("3 reports from 3 outlets (Late AR, Outlet AR, Second Wire)")
    thread = evidence.locator("a.thread")
    assert thread.is_visible() and thread.inner_text().startswith("Slack thread")
    href = thread.get_attribute("href")
    alert_id = href.rsplit("/", 1)[1]
    resp = page.request.get(f"{base}/marsad/board/{href}", max_redirects=0)  # Slack itself is not reachable here
    root = next(m for m in slack.state.messages["C0ALERTS"] if not m.get("thread_ts") and alert_id in json.dumps(m.get("metadata")))
    assert resp.status == 303, resp.text()[:500]
    assert resp.headers["location"] == f"https://test.slack.com/archives/C0ALERTS/p{root['ts'].replace('.', '')}"
    assert slack.calls("chat.getPermalink")[-1].params == {"channel": "C0ALERTS", "message_ts": root["ts"]}
    missing = page.request.get(f"{base}/marsad/board/slack/no-such-alert", max_redirects=0)
    assert missing.status == 404 and "no message in Slack" in missing.text()
    # A thread deleted in Slack: the board says what Slack answered, and where it looked.
    strike = page.locator(f'[data-indicator="{RESOLVED}"] .alerts a.thread').get_attribute("href")
    with slack.state.lock:
        gone = [m for m in slack.state.messages["C0ALERTS"] if strike.rsplit("/", 1)[1] in json.dumps(m.get("metadata"))]
        slack.state.messages["C0ALERTS"] = [m for m in slack.state.messages["C0ALERTS"] if m not in gone]
    deleted = page.request.get(f"{base}/marsad/board/{strike}", max_redirects=0)
    assert deleted.status == 502 and "answered message_not_found" in deleted.text() and "C0ALERTS" in deleted.text(), deleted.text()


def _check_day_page(page, times) -> None:
    """A bar of the timeline opens that day's events, each with its evidence."""
    bar = page.locator(f'[data-indicator="{FIRING}"] svg.timeline rect.bar[data-day="{_utc_day(times["late_report"])}"]')
    bar.click()
    page.wait_for_url("**/marsad/board/day?*", timeout=60_000)
    events = page.locator("details.event[open]")
    assert events.count() == Counter(_utc_day(t) for t in _event_times(times))[_utc_day(times["late_report"])]
    assert page.locator('details.event[open] li.report[data-lang="ar"]').count() >= 2
    assert page.locator("h1").inner_text().endswith(f"{_utc_day(times['late_report'])} (UTC)")


def _luminance(css: str) -> float:
    """WCAG relative luminance of a computed CSS colour "rgb(r, g, b)"."""
    r, g, b = (int(float(v)) / 255 for v in css[css.index("(") + 1:css.index(")")].split(",")[:3])
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def _contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _check_contrast(frame, dark: bool) -> None:
    """The board in Airflow's light or dark theme: dark background or not, and bars, threshold
    and text that stand out from the card (WCAG contrast: 3 for graphics, 4.5 for text)."""
    card = frame.locator(f'[data-indicator="{FIRING}"]')
    style = "(e, p) => getComputedStyle(e)[p]"
    card_bg = card.evaluate(style, "backgroundColor")
    assert (_luminance(frame.locator("body").evaluate(style, "backgroundColor")) < 0.1) == dark
    assert _contrast(card.locator("svg.timeline rect.bar").first.evaluate(style, "fill"), card_bg) >= 3
    assert _contrast(card.locator("svg.timeline g.threshold line").evaluate(style, "stroke"), card_bg) >= 3
    assert _contrast(card.locator("details.event summary .title a").first.evaluate(style, "color"), card_bg) >= 4.5
    assert _contrast(card.locator("h2").evaluate(style, "color"), card_bg) >= 4.5


def _check_layout(frame) -> None:
    """Inside Airflow's frame: the Arabic headline is at most two lines and takes most of its card."""
    card = frame.locator(f'[data-indicator="{FIRING}"]')
    card.wait_for()
    title = card.locator("details.event").first.locator("summary .title")
    box, card_box = title.bounding_box(), card.bounding_box()
    line = title.evaluate("e => parseFloat(getComputedStyle(e).lineHeight)")
    assert title.get_attribute("dir") == "auto" and title.evaluate("e => getComputedStyle(e).direction") == "rtl"
    assert box["height"] <= 2 * line + 1, f"the Arabic headline takes {box['height'] / line:.1f} lines"
    assert box["width"] >= 0.8 * (card_box["width"] - 40), (box, card_box)
    # Opened, its reports' headlines are as wide.
    card.locator("details.event").first.locator("summary .meta").click()
    for r in card.locator("li.report .rtitle").all():
        assert r.bounding_box()["height"] <= 2 * line + 1, r.inner_text()
