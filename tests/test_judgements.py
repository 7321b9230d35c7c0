"""Key judgements (alerts/judgements.py): files validated with file:line errors, statuses from
the rules' own evaluator over real DuckDB files, notices through the outbox to the Slack
stand-in, a replay of our own timeline through the real pipeline, the track record."""
import io
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from alerts.delivery import SlackSink, deliver, slack_client
from alerts.judgements import (DEFAULT_ASSESSMENTS, YARDSTICK, format_report, format_status, load_assessments, midpoint,
                               panel_html, report, status_rows, evaluate_judgements)
from alerts.matching import Classifier
from alerts.rules import DEFAULT_INDICATORS
from marsad.configcheck import check
from marsad.replay import replay
from sources.configfile import ConfigError
from warehouse import db
from warehouse.events import EVENT_COLUMNS
from warehouse.load import bulk_insert

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "replay_judgements.jsonl"
UTC = timezone.utc
IDS = Classifier.load(DEFAULT_INDICATORS).ids


def write(tmp_path: Path, name: str, text: str) -> Path:
    d = tmp_path / "assessments"
    d.mkdir(exist_ok=True)
    (d / name).write_text(text, encoding="utf-8")
    return d


TALKS = """\
id: test-talks
title: Talks outlook
source: a test
cutoff: 2025-03-01
channel: "#marsad-alerts"
judgements:
  - id: talks-go-on
    text: The talks are very likely to go on for the next two months.
    likelihood: very likely
    window: 2mo
    supported_by: [nuclear_talks]
    conditions:
      - {effect: pressure, kind: flatline, indicator: nuclear_talks, count: 1, window: 20d}
  - id: no-irgc-strike
    text: A direct US strike on the IRGC is unlikely within 60 days.
    likelihood: unlikely
    window: 60d
    contradicted_by: [us_strike_irgc]
"""
CUT = datetime(2025, 3, 2, tzinfo=UTC)  # the end of the cut-off day


@pytest.fixture
def con(tmp_path):
    with db.connect(tmp_path / "wh.duckdb") as c:
        yield c


def watched_from(con, t):
    con.execute("INSERT INTO fetch_log (fetch_id, source_id, started_at, finished_at, status) VALUES ('f0', 's', ?, ?, 'ok')", [t, t])


def add_events(con, indicator, times):
    bulk_insert(con, "events", [dict(event_id=f"{indicator}-{t:%m%d%H}", indicator=indicator, first_report_at=t, first_seen_at=t,
                                     title=f"{indicator} at {t:%Y-%m-%d}", created_at=t) for t in times], EVENT_COLUMNS)


def statuses(con):
    return {f"{a}/{j}": (s, o) for a, j, s, o in con.execute(
        "SELECT assessment_id, judgement_id, status, outcome FROM judgement_status_v").fetchall()}


# ----------------------------------------------------------------------------- files


def test_shipped_assessments_validate_and_watch_real_indicators():
    shipped = {a.id: a for a in load_assessments(DEFAULT_ASSESSMENTS, IDS)}
    assert set(shipped) == {"us-iran-2023-05", "us-iran-2020-01", "militia-pause-2024-02"}
    may = {j.id: j for j in shipped["us-iran-2023-05"].judgements}
    assert may["us-no-direct-irgc-strike"].contradicted_by == ["us_strike_irgc"]
    assert may["us-no-direct-irgc-strike"].likelihood == "unlikely" and may["us-no-direct-irgc-strike"].probability == 0.325
    assert may["interim-talks-continue"].likelihood == "very likely"  # written "highly likely"
    assert [(c.effect, c.kind, c.indicator) for c in may["interim-talks-continue"].conditions] == [
        ("pressure", "flatline", "nuclear_talks"), ("contradict", "flatline", "nuclear_talks")]
    assert may["proxies-strike-israeli-positions"].requires_support
    pause = shipped["militia-pause-2024-02"]
    (j,) = pause.judgements
    assert [(c.effect, c.kind, c.indicator) for c in j.conditions][0] == ("contradict", "resumption", "militia_attack_us_forces")
    assert str(j.window) == "3 month(s)" and j.window.end(pause.cutoff) == datetime(2024, 5, 21, tzinfo=UTC)


def test_errors_name_file_line_and_field(tmp_path):
    d = write(tmp_path, "bad.yaml", """\
id: bad
title: A bad file
source: a test
cutoff: 15 May 2025
channel: "#Marsad Alerts"
judgements:
  - id: one
    text: A judgement with a likelihood off the yardstick.
    likelihood: pretty likely
    window: soon
    contradicted_by: [us_strike_irgc]
  - id: two
    text: A judgement whose indicators do not exist.
    likelihood: likely
    window: 3mo
    contradicted_by: [us_strikes_irgc]
    conditions:
      - {effect: pressure, kind: flatline, indicator: nuclear_talks, window: 30d}
      - {effect: maybe, kind: tripwire, indicator: nuclear_talk}
""")
    with pytest.raises(ConfigError) as exc:
        load_assessments(d, IDS)
    got = str(exc.value)
    f = d / "bad.yaml"
    assert f"{f}:4: cutoff: '15 May 2025' is not a date" in got
    assert f"{f}:5: channel: '#Marsad Alerts' is not a Slack channel" in got
    assert f"{f}:9: judgements.0.likelihood: 'pretty likely' is not on the ICD 203 yardstick" in got
    assert f"{f}:10: judgements.0.window: 'soon' is not a window" in got
    assert f"{f}:18: judgements.1.conditions.0: a flatline rule needs count" in got
    assert f"{f}:19: judgements.1.conditions.1.effect:" in got
    # Shape first: the unknown indicators are reported once the file validates.
    (d / "bad.yaml").write_text((d / "bad.yaml").read_text().replace("15 May 2025", "2025-12-01").replace("#Marsad Alerts", "#marsad-alerts")
                                .replace("pretty likely", "likely").replace("soon", "90d").replace("window: 30d}", "window: 30d, count: 1}")
                                .replace("effect: maybe", "effect: contradict"), encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_assessments(d, IDS)
    assert str(exc.value).splitlines() == [
        f"{f}:16: judgements.1.contradicted_by.0: unknown indicator 'us_strikes_irgc' (known: {', '.join(sorted(IDS))})",
        f"{f}:19: judgements.1.conditions.1.indicator: unknown indicator 'nuclear_talk' (known: {', '.join(sorted(IDS))})",
    ]


def test_a_date_yaml_cannot_build_is_a_file_line_error(tmp_path):
    d = write(tmp_path, "date.yaml", TALKS.replace("cutoff: 2025-03-01", "cutoff: 2025-13-01"))
    with pytest.raises(ConfigError) as exc:
        load_assessments(d, IDS)
    assert str(exc.value) == f"{d / 'date.yaml'}:4: (value): month must be in 1..12"


def test_config_check_validates_the_assessments(tmp_path):
    d = write(tmp_path, "x.yaml", TALKS.replace("likelihood: unlikely", "likelihood: 30%"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARSAD_")} | {"MARSAD_ASSESSMENTS": str(d)}
    r = check(env)
    assert any(line.startswith("BAD  assessments:") for line in r.ok)
    assert any(e.startswith(f"{d / 'x.yaml'}:16: judgements.1.likelihood: '30%' is not on the ICD 203 yardstick") for e in r.errors)
    assert any(line.startswith("ok   assessments:") and "3 (6 judgements)" in line for line in check({k: v for k, v in env.items() if k != "MARSAD_ASSESSMENTS"}).ok)


def test_yardstick_midpoints():
    assert [midpoint(t) for t in YARDSTICK] == [0.03, 0.125, 0.325, 0.5, 0.675, 0.875, 0.97]


# ----------------------------------------------------------------------------- statuses


def test_flatline_puts_a_judgement_under_pressure_and_an_event_lifts_it(con, tmp_path):
    (a,) = load_assessments(write(tmp_path, "t.yaml", TALKS), IDS)
    watched_from(con, CUT - timedelta(days=40))
    add_events(con, "nuclear_talks", [CUT - timedelta(days=5), CUT + timedelta(days=30)])
    seen = []
    for day in range(0, 45):
        now = CUT + timedelta(days=day, hours=12)
        for n in evaluate_judgements(con, [a], now):
            seen.append((day, n["judgement"]["id"], n["state"], n["judgement"]["status"]))
    # 20 quiet days after the event 5 days before the cut-off: under pressure on day 15;
    # the talks event of day 30 lifts it (the same alert resolves in its thread).
    assert seen == [(15, "talks-go-on", "firing", "under_pressure"), (30, "talks-go-on", "resolved", "holding")]
    assert statuses(con) == {"test-talks/talks-go-on": ("holding", None), "test-talks/no-irgc-strike": ("holding", None)}
    # Evaluating again at the same time adds nothing.
    assert evaluate_judgements(con, [a], CUT + timedelta(days=44, hours=12)) == []
    hist = con.execute("SELECT status, previous, facts FROM judgement_history WHERE judgement_id = 'talks-go-on' ORDER BY changed_at").fetchall()
    assert [(s, p) for s, p, _ in hist] == [("holding", None), ("under_pressure", "holding"), ("holding", "under_pressure")]
    pressure = json.loads(hist[1][2])["pressure"][0]
    assert pressure["what"].startswith("flatline nuclear_talks") and pressure["events"] == 0


def test_contradicted_on_the_event_and_failed_at_expiry_with_its_evidence(con, tmp_path):
    (a,) = load_assessments(write(tmp_path, "t.yaml", TALKS), IDS)
    watched_from(con, CUT - timedelta(days=40))
    strike = CUT + timedelta(days=20, hours=3)
    add_events(con, "us_strike_irgc", [CUT - timedelta(days=2), strike])  # the one before the cut-off does not count
    add_events(con, "nuclear_talks", [CUT + timedelta(days=d) for d in range(-3, 60, 10)])
    assert evaluate_judgements(con, [a], CUT + timedelta(days=1)) == []
    (n,) = evaluate_judgements(con, [a], strike + timedelta(minutes=5))
    assert n["judgement"]["status"] == "contradicted" and n["state"] == "firing"
    assert n["events"] == [f"us_strike_irgc-{strike:%m%d%H}"] and n["severity"] == "high"
    # Contradicted stays contradicted (the tripwire's facts are kept), and expires as failed.
    assert evaluate_judgements(con, [a], strike + timedelta(days=10)) == []
    got = {n["judgement"]["id"]: (n["state"], n["judgement"]["status"], n["judgement"]["outcome"])
           for n in evaluate_judgements(con, [a], CUT + timedelta(days=70))}
    # The contradiction's alert resolves in its thread; the held judgement, never told about
    # before, is a one-shot notice (its state is its kind, as for the digest).
    assert got == {"no-irgc-strike": ("resolved", "expired", "failed"), "talks-go-on": ("judgement", "expired", "held")}
    ev = con.execute("SELECT event_ids FROM judgement_status_v WHERE judgement_id = 'no-irgc-strike'").fetchone()[0]
    assert ev == [f"us_strike_irgc-{strike:%m%d%H}"]
    # Expired judgements are not evaluated again.
    assert evaluate_judgements(con, [a], CUT + timedelta(days=90)) == []
    rep = report(con)
    assert rep["n"] == 2 and rep["held"] == 1
    assert rep["brier"] == round(((0.325 - 1) ** 2 + (0.875 - 1) ** 2) / 2, 4)


def test_a_contradiction_whose_events_are_flagged_not_an_event_is_withdrawn_and_comes_back_on_undo(con, tmp_path):
    from alerts.feedback import flag_not_event, undo

    (a,) = load_assessments(write(tmp_path, "t.yaml", TALKS), IDS)
    watched_from(con, CUT - timedelta(days=40))
    add_events(con, "nuclear_talks", [CUT + timedelta(days=d) for d in range(-3, 60, 10)])
    first, second = CUT + timedelta(days=5), CUT + timedelta(days=8)
    add_events(con, "us_strike_irgc", [first])
    (n,) = evaluate_judgements(con, [a], first + timedelta(hours=1))
    assert n["judgement"]["status"] == "contradicted"
    eid = f"us_strike_irgc-{first:%m%d%H}"
    # An analyst says the strike was not one: nothing contradicts the judgement any more.
    assert flag_not_event(con, eid, None, "U0ANALYST", first + timedelta(hours=2))
    (n,) = evaluate_judgements(con, [a], first + timedelta(hours=3))
    assert (n["state"], n["judgement"]["status"]) == ("resolved", "holding")
    assert "no longer contradicted" in n["summary"] and "U0ANALYST" in n["summary"]
    assert statuses(con)["test-talks/no-irgc-strike"] == ("holding", None)
    rows = {r["judgement"]: r for r in status_rows(con, [a], first + timedelta(hours=3))}
    assert "flagged not an event by U0ANALYST" in (rows["no-irgc-strike"]["note"] or "")
    # The flag undone: the strike counts again, and contradicts again.
    assert undo(con, eid, "U0ANALYST", first + timedelta(hours=4))
    (n,) = evaluate_judgements(con, [a], first + timedelta(hours=5))
    assert (n["state"], n["judgement"]["status"]) == ("firing", "contradicted")
    # Two contradicting events, one flagged: still contradicted, by the one that counts.
    add_events(con, "us_strike_irgc", [second])
    assert evaluate_judgements(con, [a], second + timedelta(hours=1)) == []
    prev = con.execute("SELECT event_ids FROM judgement_status_v WHERE judgement_id = 'no-irgc-strike'").fetchone()[0]
    assert flag_not_event(con, eid, None, "U0ANALYST", second + timedelta(hours=2))
    assert evaluate_judgements(con, [a], second + timedelta(hours=3)) == []
    assert statuses(con)["test-talks/no-irgc-strike"] == ("contradicted", None)
    assert prev  # the evidence it was contradicted by


def test_a_window_marsad_did_not_watch_is_unobserved_and_kept_out_of_the_record(con, tmp_path):
    (a,) = load_assessments(write(tmp_path, "t.yaml", TALKS), IDS)
    watched_from(con, CUT + timedelta(days=10))  # started polling after the cut-off
    assert evaluate_judgements(con, [a], CUT + timedelta(days=100)) == []  # nothing to tell about an unwatched window
    assert statuses(con) == {"test-talks/talks-go-on": ("expired", "unobserved"), "test-talks/no-irgc-strike": ("expired", "unobserved")}
    rep = report(con)
    assert rep["n"] == 0 and rep["brier"] is None and rep["unobserved"] == 2
    text = format_report(rep)
    assert "no judgement has expired with an outcome yet" in text and "2 expired judgement(s) left out" in text


def test_a_judgement_that_something_will_happen_fails_without_it(con, tmp_path):
    shipped = [a for a in load_assessments(DEFAULT_ASSESSMENTS, IDS) if a.id == "us-iran-2023-05"]
    cut = shipped[0].cutoff
    watched_from(con, cut - timedelta(days=60))
    add_events(con, "nuclear_talks", [cut + timedelta(days=d) for d in range(0, 95, 14)])
    got = {n["judgement"]["id"]: n["judgement"]["outcome"] for n in evaluate_judgements(con, shipped, cut + timedelta(days=95))}
    assert got == {"proxies-strike-israeli-positions": "failed", "interim-talks-continue": "held", "us-no-direct-irgc-strike": "held"}
    assert "no iran_proxy_strike_israel event in the window" in format_status(status_rows(con, shipped, cut + timedelta(days=95)))


def test_the_pause_is_contradicted_by_a_resumption_and_stays_so(con):
    (pause,) = [a for a in load_assessments(DEFAULT_ASSESSMENTS, IDS) if a.id == "militia-pause-2024-02"]
    watched_from(con, datetime(2024, 1, 1, tzinfo=UTC))
    add_events(con, "militia_attack_us_forces", [datetime(2024, 2, 1, 20, tzinfo=UTC)])
    attack = datetime(2024, 3, 20, 22, tzinfo=UTC)
    add_events(con, "militia_attack_us_forces", [attack])
    assert evaluate_judgements(con, [pause], datetime(2024, 3, 1, tzinfo=UTC)) == []
    (n,) = evaluate_judgements(con, [pause], attack + timedelta(hours=1))
    assert n["judgement"]["status"] == "contradicted"
    why = n["judgement"]["why"]["contradicted_by"][0]
    assert why["what"].startswith("resumption militia_attack_us_forces") and why["days_since_previous"] == 48.1
    # The resumption's 72 h pass: still contradicted; then the window ends: failed.
    assert evaluate_judgements(con, [pause], attack + timedelta(days=5)) == []
    (n,) = evaluate_judgements(con, [pause], datetime(2024, 5, 22, tzinfo=UTC))
    assert (n["state"], n["judgement"]["outcome"]) == ("resolved", "failed")


# ----------------------------------------------------------------------------- replay, CLI, board, Slack


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """Our own timeline (May-August 2023, Arabic and English) through the real pipeline,
    judged against the shipped May 2023 assessment."""
    path = tmp_path_factory.mktemp("jreplay") / "replay.duckdb"
    out = io.StringIO()
    replay(FIXTURE, path, poll_interval=3600, out=out)
    return path, [json.loads(line) for line in out.getvalue().splitlines()]


def test_replay_contradicts_on_the_day_of_the_strike_and_expires_held(replayed):
    path, stream = replayed
    got = [(n["rule"].removeprefix("judgement:us-iran-2023-05/"), n["state"], n["at"][:16], n["evidence"])
           for n in stream if n["indicator"] == "judgement"]
    assert got == [
        # The US strike on a militia depot (a weak signal) puts the IRGC judgement under pressure,
        ("us-no-direct-irgc-strike", "firing", "2023-06-25T03:00", ["j-05"]),
        # the strike on the IRGC contradicts it the day it is reported (Arabic first, 04:00),
        ("us-no-direct-irgc-strike", "update", "2023-06-29T04:00", ["j-06"]),
        # and at the window's end it has failed (with both reports of the strike, Arabic and
        # English), while the talks and the proxy fire held: one-shot notices of their own.
        ("us-no-direct-irgc-strike", "resolved", "2023-08-16T00:00", ["j-06", "j-07"]),
        ("interim-talks-continue", "judgement", "2023-08-16T00:00", ["j-10", "j-09", "j-08", "j-04", "j-02"]),
        ("proxies-strike-israeli-positions", "judgement", "2023-08-16T00:00", ["j-03"]),
    ]
    with db.connect(path, read_only=True) as con:
        hist = con.execute("""SELECT judgement_id, status, outcome, changed_at FROM judgement_history
                              WHERE assessment_id = 'us-iran-2023-05' ORDER BY judgement_id, changed_at""").fetchall()
        contradicted = con.execute("""SELECT payload FROM notifications WHERE json_extract_string(payload, '$.rule') LIKE '%irgc-strike'
                                      AND json_extract_string(payload, '$.judgement.status') = 'contradicted'""").fetchone()[0]
    assert [(j, s, o, t.date().isoformat()) for j, s, o, t in hist if j == "us-no-direct-irgc-strike"] == [
        ("us-no-direct-irgc-strike", "holding", None, "2023-05-16"),
        ("us-no-direct-irgc-strike", "under_pressure", None, "2023-06-25"),
        ("us-no-direct-irgc-strike", "contradicted", None, "2023-06-29"),
        ("us-no-direct-irgc-strike", "expired", "failed", "2023-08-16"),
    ]
    assert [(s, o) for j, s, o, _ in hist if j == "interim-talks-continue"] == [("holding", None), ("expired", "held")]
    # The contradicting event comes with its frame: who did what to whom.
    frames = json.loads(contradicted)["judgement"]["frames"]
    assert frames and frames[0]["frame"]["actor"] == "us" and frames[0]["frame"]["target"] == "iran_state"


def test_report_over_the_replay_gives_the_expected_brier(replayed):
    path, _ = replayed
    with db.connect(path, read_only=True) as con:
        rep = report(con)
    bands = {b["band"]: b for b in rep["bands"]}
    assert (bands["unlikely"]["n"], bands["unlikely"]["held"], bands["unlikely"]["brier"]) == (1, 0, 0.4556)
    assert (bands["very likely"]["n"], bands["very likely"]["held"], bands["very likely"]["brier"]) == (2, 2, 0.0156)
    assert bands["likely"]["n"] == 0 and bands["likely"]["brier"] is None
    # (0.325 - 1)^2 for the strike that came, (0.875 - 1)^2 twice for what held.
    assert rep["n"] == 3 and rep["brier"] == 0.1623
    # The January 2020 assessment lies before the timeline: recorded unobserved, kept out.
    assert rep["unobserved"] == 2


def test_cli_status_and_report(replayed):
    path, _ = replayed
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARSAD_")}
    run = lambda *a: subprocess.run([sys.executable, "-m", "marsad.cli", "judgements", *a, "--db", str(path)],
                                    capture_output=True, text=True, env=env, cwd=REPO)
    st = run("status")
    assert st.returncode == 0, st.stderr
    lines = st.stdout.splitlines()
    assert lines[0].split()[:4] == ["status", "likelihood", "window", "left"]
    row = next(i for i, line in enumerate(lines) if line.endswith("us-iran-2023-05/us-no-direct-irgc-strike"))
    assert lines[row].startswith("expired: failed") and "over" in lines[row]
    assert "us_strike_irgc: غارات أمريكية تستهدف مقرا للحرس الثوري الإيراني في دير الزور [us attack iran_state]" in lines[row + 1]
    rep = run("report")
    assert rep.returncode == 0 and "0.1623" in rep.stdout.splitlines()[-3]
    as_json = json.loads(run("report", "--json").stdout)
    assert as_json["brier"] == 0.1623


def test_board_panel_rows_and_escaped_fragment(replayed):
    path, _ = replayed
    shipped = load_assessments(DEFAULT_ASSESSMENTS, IDS)
    with db.connect(path, read_only=True) as con:
        rows = status_rows(con, shipped, datetime(2023, 7, 1, tzinfo=UTC))
    by = {r["key"]: r for r in rows}
    irgc = by["us-iran-2023-05/us-no-direct-irgc-strike"]
    # (The statuses are the last recorded: this replay ran to the end of the window.)
    assert irgc["window_left"] == "46 d" and irgc["last_evidence"]["indicator"] == "us_strike_irgc"
    assert by["militia-pause-2024-02/attacks-stay-paused"]["status"] == "not started"
    hostile = dict(irgc, text="<script>alert(1)</script> judgement", last_evidence=dict(irgc["last_evidence"], url="javascript:alert(1)"))
    frag = panel_html([hostile, by["us-iran-2023-05/interim-talks-continue"]])
    assert "<script>" not in frag and "&lt;script&gt;" in frag and 'href="javascript' not in frag
    assert frag.count('dir="auto"') >= 4 and 'href="https://ar.example/j10"' in frag
    assert "expired: failed" in frag and "<table>" in frag and frag.startswith("<section")
    assert "No judgements" in panel_html([])


def test_a_status_change_reaches_the_assessment_channel_in_its_thread(con, tmp_path, slack):
    slack.state.channels["C0ASSESS"] = "marsad-assessments"
    (a,) = load_assessments(write(tmp_path, "t.yaml", TALKS.replace("#marsad-alerts", "#marsad-assessments")), IDS)
    watched_from(con, CUT - timedelta(days=40))
    add_events(con, "nuclear_talks", [CUT - timedelta(days=5)])
    add_events(con, "us_strike_irgc", [CUT + timedelta(days=21)])
    for day in (1, 16, 22):
        evaluate_judgements(con, [a], CUT + timedelta(days=day))
    rep = deliver(con, SlackSink(slack_client(slack.state.token, slack.base_url, timeout=2)))
    assert rep.sent == 2 and rep.failed == 0
    first, second = slack.posts()
    assert first["channel"] == second["channel"] == "#marsad-assessments"
    assert "under pressure" in first["text"] and "CONTRADICTED" in second["text"]
    # Two judgements, two alerts: each opens its own thread.
    assert first.get("thread_ts") is None and second.get("thread_ts") is None
    # A silence on the judgement holds its next notice back, as for any alert.
    from alerts.lifecycle import add_silence
    add_silence(con, "rule", "judgement:test-talks/talks-go-on", 86400 * 30, "analyst reviewing", "test", CUT + timedelta(days=29))
    add_events(con, "nuclear_talks", [CUT + timedelta(days=30)])
    assert [n["state"] for n in evaluate_judgements(con, [a], CUT + timedelta(days=30, hours=1))] == ["resolved"]
    assert deliver(con, SlackSink(slack_client(slack.state.token, slack.base_url, timeout=2))).silenced == 1


def test_the_readme_example_is_a_valid_assessment(tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## For analysts: key judgements"):]
    block = section[section.index("```yaml\n") + 8:]
    d = write(tmp_path, "example.yaml", block[:block.index("```")])
    (a,) = load_assessments(d, IDS)
    assert [(j.id, j.likelihood, str(j.window)) for j in a.judgements] == [
        ("talks-go-on", "likely", "3 month(s)"), ("no-direct-strike", "unlikely", "3 month(s)")]
    assert a.cutoff == datetime(2025, 6, 11, tzinfo=UTC)


def test_a_broken_assessment_file_is_reported_and_the_last_good_copy_still_judges(tmp_path, settings):
    from marsad import pipeline

    now = datetime.now(UTC).replace(microsecond=0)
    text = TALKS.replace("cutoff: 2025-03-01", f"cutoff: {(now - timedelta(days=3)):%Y-%m-%d}")
    settings.assessments = write(tmp_path, "talks.yaml", text)
    settings.read_copy = None
    assert pipeline.evaluate(settings, now) == []  # holding: recorded, nothing to tell; the file is kept as good
    (settings.assessments / "talks.yaml").write_text(text.replace("likelihood: unlikely", "likelihood: doubtful"), encoding="utf-8")
    with db.connect(settings.warehouse) as con:
        add_events(con, "us_strike_irgc", [now + timedelta(minutes=30)])
    queued = pipeline.evaluate(settings, now + timedelta(hours=1))
    config = [n for n in queued if n["indicator"] == "config"]
    judged = [n for n in queued if n["indicator"] == "judgement"]
    assert len(config) == 1 and "talks.yaml:16: judgements.1.likelihood: 'doubtful'" in config[0]["summary"]
    assert "last good copy" in config[0]["summary"]
    assert [(n["judgement"]["id"], n["judgement"]["status"]) for n in judged] == [("no-irgc-strike", "contradicted")]


def test_board_panel_never_raises_and_lists_file_errors(tmp_path, replayed):
    path, _ = replayed
    from alerts.judgements import board_panel

    bad = write(tmp_path, "bad.yaml", TALKS.replace("window: 2mo", "window: forever"))
    with db.connect(path, read_only=True) as con:
        got = board_panel(con, bad, datetime(2023, 7, 1, tzinfo=UTC))
        ok = board_panel(con, DEFAULT_ASSESSMENTS, datetime(2023, 7, 1, tzinfo=UTC))
    assert got["judgements"] == [] and got["errors"] == [f"{bad / 'bad.yaml'}:10: judgements.0.window: 'forever' is not a window: "
                                                        "write 3mo (calendar months), 90d, 12w or 72h"]
    assert len(ok["judgements"]) == 6 and ok["errors"] == [] and ok["html"].startswith("<section")
    with db.connect(tmp_path / "old.duckdb") as con:
        con.execute("DROP VIEW judgement_status_v")  # a read copy published before judgements existed
        assert board_panel(con, DEFAULT_ASSESSMENTS)["judgements"] == []
