"""The indicator board: its data (``alerts.board``) over a warehouse the real pipeline filled."""
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from board_data import populate
from conftest import FeedServer

RESOLVE_AFTER = timedelta(seconds=90)
FIRING, RESOLVED, QUIET = "militia_attack_us_forces", "us_strike_militia", "nuclear_talks"


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
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
            times = populate(settings, srv, tmp, resolve_after=RESOLVE_AFTER)
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
    assert board["published"]["articles"] == 7
    ind = _by_id(board)
    assert len(ind) == 11, "every indicator of alerts/indicators/ has a row, with events or not"
    assert [i["state"] for i in board["indicators"]][:3] == ["firing", "resolved", "quiet"], "firing first, then resolved"

    firing = ind[FIRING]
    assert firing["state"] == "firing"
    assert [a["rule_id"] for a in firing["firing"]] == ["militia-attack-campaign"]
    assert [e["title"][:5] for e in firing["events"]] == ["هجوم ", "Rocke", "Drone"], "newest event first"
    asad = firing["events"][0]
    # The Arabic report and the English wire copy are one event: first report's outlet and link,
    # corroborated by two outlets in two languages.
    assert (asad["outlet"], asad["url"]) == ("Outlet AR", "https://ar.example/asad")
    assert (asad["n_outlets"], asad["n_articles"], asad["languages"]) == (2, 2, ["ar", "en"])
    assert asad["outlets"] == ["Outlet AR", "Second Wire"]
    assert firing["events_7d"] == 3 and 0.05 < firing["days_since_last_event"] < 0.15  # two hours

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
    assert {k: s["health"] for k, s in health.items()} == {"broken": "failing", "wire-en": "ok", "outlet-ar": "ok", "second-wire": "ok"}
    assert board["sources"][0]["source_id"] == "broken", "unhealthy sources first"
    assert health["broken"]["last_error"] == "HTTP 404" and health["broken"]["last_success_at"] is None
    assert health["wire-en"]["last_success_at"] is not None and health["wire-en"]["items_24h"] == 5
    assert board["counts"] == {"firing": 1, "resolved": 1, "quiet": 9, "sources_failing": 1, "sources_ok": 3}

    # Four days on: the resolved alert is old news, and no poll since then makes every source stale.
    later = build(_config(settings), now=times["resolved_at"] + timedelta(days=4))
    assert _by_id(later)[RESOLVED]["state"] == "quiet"
    assert {s["source_id"]: s["health"] for s in later["sources"]} == {
        "broken": "failing", "wire-en": "stale", "outlet-ar": "stale", "second-wire": "stale"}
    assert 23.9 < _by_id(later)[QUIET]["days_since_last_event"] < 24.1


def test_board_without_a_read_copy_says_so(filled, tmp_path):
    from alerts.board import build

    settings, _ = filled
    board = build(_config(settings, read_copy=tmp_path / "none-read.duckdb"))
    assert board["status"] == "no_read_copy" and board["indicators"] == [] and board["sources"] == []
    assert str(tmp_path / "none-read.duckdb") in board["message"] and "marsad publish" in board["message"]


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
        assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 5  # the old copy stays readable
    finally:
        reader.close()
