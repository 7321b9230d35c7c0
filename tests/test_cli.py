"""The marsad CLI contract (parse, classify, replay), run as a user runs it."""
import contextlib
import io
import json
import re
import subprocess
import sys

import pytest

from conftest import CORPORA, TESTS, rss
from marsad.cli import main
from warehouse.db import connect as duckdb_connect

MARSAD = [sys.executable, "-m", "marsad.cli"]


def run(*args, **kw):
    return subprocess.run([*MARSAD, *map(str, args)], capture_output=True, text=True, **kw)


def test_parse_file_prints_normalised_articles(tmp_path):
    f = tmp_path / "feed.xml"
    f.write_text(rss([
        {"title": "هجوم على قاعدة عين الأسد", "link": "https://ar.example/1?utm_campaign=x", "guid": "g1",
         "description": "<b>نص</b> الخبر", "pubDate": "Mon, 05 Jan 2026 10:00:00 +0300"},
        {"title": "No date", "link": "https://ar.example/2", "guid": "g2", "description": "x"},
    ], lang="ar"), encoding="utf-8")
    res = run("parse", f)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(lines) == 2
    a = lines[0]
    assert a["canonical_url"] == "https://ar.example/1" and a["summary"] == "نص الخبر"
    assert a["published_at"] == "2026-01-05T07:00:00+00:00" and a["lang"] == "ar"
    assert {"title", "summary", "url", "canonical_url", "published_at", "lang", "source_id"} <= set(a)
    assert lines[1]["published_flag"] == "missing"


def test_parse_url_from_a_local_server(feed_server):
    url = feed_server.serve("/f.xml", rss([{"title": "Hello", "link": "https://e.example/1", "guid": "1"}]))
    res = run("parse", url)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["title"] == "Hello"


@pytest.mark.parametrize("content", [b"", b"not a feed at all", b"<html><body>page</body></html>", b"\x00\xff\xfe binary"])
def test_parse_bad_input_is_one_line_exit_2(tmp_path, content):
    f = tmp_path / "bad.xml"
    f.write_bytes(content)
    res = run("parse", f)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert res.stdout == ""


def test_parse_missing_file_and_dead_url():
    for target in ("/nonexistent/feed.xml", "http://127.0.0.1:9/feed.xml"):
        res = run("parse", target)
        assert res.returncode == 2 and "Traceback" not in res.stderr and res.stderr.count("\n") == 1


CORPUS = sorted(p for p in (CORPORA / "feedparser").rglob("*") if p.is_file() and p.name != "LICENSE")


def _expects_bozo(data: bytes) -> bool:
    """feedparser's own expectation for a corpus file says it is ill-formed (and not merely
    because of HTTP headers that only its test harness sends)."""
    m = re.search(rb"Expect:\s*(.*)", data)
    return bool(m) and re.match(rb"bozo\b", m.group(1).strip()) is not None and not re.search(rb"\nHeader:", data)


def _cli_parse(path) -> tuple[int, str, str]:
    """``marsad parse FILE`` in-process: the exact code path of the command."""
    from marsad.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["parse", str(path)])
    return code, out.getvalue(), err.getvalue()


def test_feedparser_corpus_through_the_parse_command():
    """Every file of feedparser's corpus through ``marsad parse``: JSON lines or a one-line
    error (exit 2), never a traceback or an unexpected failure (exit 1). Files feedparser
    calls ill-formed are either flagged (a warning line) or refused with a clean error."""
    assert len(CORPUS) > 2000
    entries, errors, flagged_ill, refused_ill = 0, [], 0, 0
    for path in CORPUS:
        code, out, err = _cli_parse(path)
        assert code in (0, 2), (path, err)
        assert "Traceback" not in err
        lines = out.splitlines()
        for line in lines:
            d = json.loads(line)
            assert d["title"] or d["summary"], path
            assert d["lang"] in ("ar", "en") and d["published_at"]
        entries += len(lines)
        if code == 2:
            assert err.count("\n") == 1 and out == "", path
            errors.append(path)
        if _expects_bozo(path.read_bytes()):
            if code == 2:
                refused_ill += 1
            else:
                assert err.startswith("marsad: warning:"), path
                assert all("feed_warning" in json.loads(line) for line in lines), path
                flagged_ill += 1
    assert entries > 500
    assert len(errors) < len(CORPUS) / 20  # feedparser is lenient: few files are no feed at all
    assert flagged_ill >= 10 and refused_ill >= 1


def test_parse_command_on_corpus_samples_as_a_process():
    """The installed command itself on a well-formed, an ill-formed and an unreadable sample."""
    well = next(p for p in CORPUS if "wellformed" in p.parts and p.name == "item_title.xml" and "rss" in p.parts)
    ill = next(p for p in CORPUS if p.name == "bozo_linenoise.xml")
    empty = next(p for p in CORPUS if p.name == "rss_empty_document.xml")
    res = run("parse", well)
    assert res.returncode == 0 and res.stderr == "" and json.loads(res.stdout)["title"] == "Item 1 title"
    res = run("parse", ill)
    assert res.returncode == 0 and res.stderr.startswith("marsad: warning:") and res.stderr.count("\n") == 1
    assert all("feed_warning" in json.loads(line) for line in res.stdout.splitlines())
    res = run("parse", empty)
    assert res.returncode == 2 and "not a feed" in res.stderr and res.stdout == "" and "Traceback" not in res.stderr


def test_classify_contract(tmp_path):
    f = tmp_path / "in.jsonl"
    items = [
        {"id": 1, "lang": "en", "title": "Drone attack targets US troops at Ain al-Asad air base in Iraq", "summary": ""},
        {"id": "b", "lang": "ar", "title": "هجوم بطائرة مسيّرة على قاعدة عين الأسد التي تضم قوات أمريكية", "summary": ""},
        {"id": "c", "lang": "en", "title": "Football scores from the weekend", "summary": "", "extra": "ignored"},
    ]
    f.write_text("\n".join(json.dumps(i, ensure_ascii=False) for i in items) + "\n", encoding="utf-8")
    res = run("classify", f)
    assert res.returncode == 0, res.stderr
    out = [json.loads(line) for line in res.stdout.splitlines()]
    assert [o["id"] for o in out] == [1, "b", "c"]
    assert out[0]["indicators"] == ["militia_attack_us_forces"]
    assert out[1]["indicators"] == ["militia_attack_us_forces"]
    assert out[2]["indicators"] == []


def test_classify_bad_line_is_a_clean_error(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text('{"id": 1, "title": "x", "summary": ""}\nnot json\n', encoding="utf-8")
    res = run("classify", f)
    assert res.returncode == 2 and f"{f}:2: not JSON" in res.stderr


REPLAY = TESTS / "fixtures" / "replay_militia.jsonl"


def _alerts(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_replay_quiet_spell_and_resumption_exact_times(tmp_path):
    """Three months: three attacks in 72 h, 22 quiet days and a resumption, an attack 7 days
    later (no resumption), 37 quiet days and a second resumption, then follow-up reports."""
    res = run("replay", REPLAY, "--db", tmp_path / "r.duckdb", "--poll-interval", "15m")
    assert res.returncode == 0, res.stderr
    got = [(a["rule"], a["kind"], a["state"], a["at"], sorted(a["evidence"])) for a in _alerts(res.stdout) if a["indicator"] == "militia_attack_us_forces"]
    assert got == [
        # the syndicated copy t-05 joins t-04's event: three events, four reports
        ("militia-attack-campaign", "threshold", "firing", "2026-01-03T06:00:00+00:00", ["t-01", "t-03", "t-04", "t-05"]),
        ("militia-attack-campaign", "threshold", "repeat", "2026-01-04T06:00:00+00:00", ["t-01", "t-03", "t-04", "t-05"]),
        # t-01 (10:05) leaves the 72 h window; the 10:15 poll sees only two events
        ("militia-attack-campaign", "threshold", "resolved", "2026-01-04T10:15:00+00:00", ["t-01", "t-03", "t-04", "t-05"]),
        # 22 days after the last attack, with more than 14 days watched: resumption
        ("militia-attacks-resume", "resumption", "firing", "2026-01-25T14:45:00+00:00", ["t-07"]),
        ("militia-attacks-resume", "resumption", "resolved", "2026-01-28T14:45:00+00:00", ["t-07"]),
        # 37 quiet days after t-08: the second resumption; the arrest report (t-10) and the
        # "no attacks since" report (t-11) are not attacks and change nothing
        ("militia-attacks-resume", "resumption", "firing", "2026-03-10T12:00:00+00:00", ["t-09"]),
        ("militia-attacks-resume", "resumption", "resolved", "2026-03-13T12:00:00+00:00", ["t-09"]),
    ]
    # The first attack (no history yet) and t-08 (7 days after t-07) never fire a resumption.
    assert all("t-01" not in a["evidence"] or a["rule"] != "militia-attacks-resume" for a in _alerts(res.stdout))
    others = {a["indicator"] for a in _alerts(res.stdout)} - {"militia_attack_us_forces"}
    assert others <= {"nuclear_talks"}  # the 30-day flatline: no talks reporting in the timeline
    summary = res.stderr
    assert "militia-attacks-resume" in summary and "2026-01-25 14:45" in summary and "2026-03-10 12:00" in summary


def test_replay_a_directory_of_captured_feed_files(tmp_path):
    cap = tmp_path / "captures"
    cap.mkdir()
    (cap / "wire.xml").write_text(rss([
        {"title": "Drone attack targets US forces at Harir air base in northern Iraq", "guid": "w1", "link": "https://w.example/1",
         "description": "The drone was downed near the base hosting US troops.", "pubDate": "Thu, 01 Jan 2026 10:05:00 +0000"},
        {"title": "Rockets fired at US base at al-Tanf garrison in Syria", "guid": "w2", "link": "https://w.example/2",
         "description": "Rockets were launched at the base where US forces are stationed.", "pubDate": "Sat, 03 Jan 2026 06:00:00 +0000"},
    ]), encoding="utf-8")
    (cap / "outlet.rss").write_text(rss([
        {"title": "هجوم بطائرة مسيّرة على قاعدة عين الأسد التي تضم قوات أمريكية", "guid": "o1", "link": "https://o.example/1",
         "description": "سقطت طائرة مسيرة داخل القاعدة.", "pubDate": "Fri, 02 Jan 2026 08:00:00 +0000"},
    ], "ar"), encoding="utf-8")
    res = run("replay", cap, "--db", tmp_path / "r.duckdb", "--to", "2026-01-03T12:00:00Z")
    assert res.returncode == 0, res.stderr
    (alert,) = _alerts(res.stdout)
    assert (alert["rule"], alert["state"], alert["at"], sorted(alert["evidence"])) == (
        "militia-attack-campaign", "firing", "2026-01-03T06:00:00+00:00", ["o1", "w1", "w2"])
    assert "militia-attack-campaign" in res.stderr and "first firing" in res.stderr


def test_eval_prints_scores_per_indicator_and_language_with_misses(tmp_path):
    f = tmp_path / "gold.jsonl"
    rows = [
        {"id": "p1", "title": "Drone attack targets US troops at Ain al-Asad air base in Iraq", "summary": "", "labels": ["militia_attack_us_forces"]},
        {"id": "p2", "lang": "ar", "title": "هجوم بطائرة مسيّرة على قاعدة عين الأسد التي تضم قوات أمريكية", "summary": "", "labels": ["militia_attack_us_forces"]},
        {"id": "m1", "title": "Something vague happened somewhere", "summary": "", "labels": ["hormuz_threat"]},
        {"id": "n1", "title": "Football scores", "summary": "", "labels": []},
    ]
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    res = run("eval", f)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    row = next(l for l in lines if l.startswith("militia_attack_us_forces")).split()
    assert row[1:4] == ["2", "0", "0"] and row[4:] == ["1.00", "1.00", "1.00"]
    assert next(l for l in lines if l.startswith("hormuz_threat")).split()[1:4] == ["0", "0", "1"]
    assert any(l.startswith("ar ") for l in lines) and any(l.startswith("en ") for l in lines)
    assert any("missed" in l and "m1" in l for l in lines)
    assert "0 of 1 (0.00%)" in res.stdout


def test_explain_a_text_and_an_article_id(tmp_path, settings):
    res = run("explain", "Drone attack targets US troops at Ain al-Asad air base in Iraq")
    assert res.returncode == 0
    line = next(l for l in res.stdout.splitlines() if "militia_attack_us_forces" in l)
    assert line.startswith("MATCH")
    from datetime import datetime, timezone

    from marsad import pipeline
    from sources.parse import make_article

    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    art = make_article("s", "en", "A year after the drone attack on Tower 22 that killed US soldiers, families remember", "", None, "g-1", t, None, t)
    pipeline.stage(settings, dict(source_id="s", url="x", status="ok", started_at=t.isoformat(), finished_at=t.isoformat()), [art])
    pipeline.load(settings, t)
    res = run("explain", "g-1", "--db", settings.warehouse, "-v")
    assert res.returncode == 0, res.stderr
    assert "article g-1 (s)" in res.stdout
    line = [l for l in res.stdout.splitlines() if l.endswith("militia_attack_us_forces")][0]
    assert not line.startswith("MATCH") and "excluded by" in res.stdout


def test_replay_skipping_idle_polls_changes_nothing(tmp_path):
    args = ["replay", REPLAY, "--poll-interval", "1h", "--to", "2026-01-05T00:00:00Z"]
    fast = run(*args, "--db", tmp_path / "a.duckdb")
    full = run(*args, "--db", tmp_path / "b.duckdb", "--exhaustive")
    assert fast.returncode == full.returncode == 0
    assert fast.stdout == full.stdout and fast.stdout.count("\n") == 3
    assert json.loads(fast.stderr.splitlines()[-1])["replay"]["evaluations"] < json.loads(full.stderr.splitlines()[-1])["replay"]["evaluations"]


def test_replay_refuses_a_live_warehouse_and_bad_input(tmp_path, settings):
    from marsad import pipeline
    from sources.parse import make_article
    from datetime import datetime, timezone

    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    pipeline.stage(settings, dict(source_id="s", url="x", status="ok", started_at=t.isoformat(), finished_at=t.isoformat()),
                   [make_article("s", "en", "t", "s", None, "g", t, None, t)])
    pipeline.load(settings, t)
    res = run("replay", REPLAY, "--db", settings.warehouse)
    assert res.returncode == 2 and "not a replay database" in res.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "source": "s", "published": "yesterday", "title": "t"}\n')
    res = run("replay", bad, "--db", tmp_path / "n.duckdb")
    assert res.returncode == 2 and "bad.jsonl:1: published" in res.stderr and "Traceback" not in res.stderr


def test_silence_of_an_unknown_indicator_or_rule_is_refused_with_suggestions(settings, capsys):
    db_ = str(settings.warehouse)
    assert main(["silence", "--db", db_, "add", "--indicator", "militia_attack_us_force", "--for", "6h", "--reason", "x"]) == 2
    err = capsys.readouterr().err
    assert "no indicator 'militia_attack_us_force'" in err and "did you mean militia_attack_us_forces" in err
    assert main(["silence", "--db", db_, "add", "--rule", "militia-attack-resume", "--for", "6h", "--reason", "x"]) == 2
    assert "did you mean militia-attacks-resume" in capsys.readouterr().err
    assert main(["silence", "--db", db_, "list"]) == 0 and "no active silences" in capsys.readouterr().out  # nothing was written
    # Real names, ops rules of a registered feed and config rules are accepted.
    assert main(["silence", "--db", db_, "add", "--rule", "militia-attacks-resume", "--for", "6h", "--reason", "drill week"]) == 0
    feed = settings.registry().feeds[0].id
    assert main(["silence", "--db", db_, "add", "--rule", f"source-down:{feed}", "--for", "1h", "--reason", "maintenance"]) == 0
    assert main(["silence", "--db", db_, "add", "--indicator", "source_health", "--for", "1h", "--reason", "maintenance"]) == 0
    out = capsys.readouterr().out
    assert out.count("silence ") == 3


def test_digest_says_when_there_is_nothing_to_sum_up_or_it_was_already_sent(settings, feed_server, tmp_path, monkeypatch, capsys):
    import yaml

    from marsad import pipeline

    db_ = str(settings.warehouse)
    assert main(["digest", "--db", db_]) == 0  # the first `make run`, before any poll
    out, err = capsys.readouterr()
    assert out.startswith("marsad: no digest: Marsad has not polled any feed successfully yet") and '"sent"' not in out
    with duckdb_connect(settings.warehouse) as con:
        assert con.execute("SELECT count(*) FROM notifications").fetchone()[0] == 0

    feeds = tmp_path / "feeds.yaml"
    feeds.write_text(yaml.safe_dump({"feeds": [{"id": "wire", "name": "Wire", "lang": "en", "url": feed_server.serve(
        "/wire.xml", rss([{"title": "Hello", "link": "https://e.example/1", "guid": "1", "description": "x"}]))}]}))
    monkeypatch.setenv("MARSAD_FEEDS", str(feeds))
    settings.feeds = feeds
    now = pipeline.utcnow()
    pipeline.fetch_stage(settings, pipeline.due_sources(settings, now))
    pipeline.load(settings, now)
    assert main(["digest", "--db", db_]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Marsad digest: 0 events in the last 24 hours (Marsad has watched only since ") and '"sent": 1' in out
    assert main(["digest", "--db", db_]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("marsad: today's digest (") and "was already queued at" in out and "and sent at" in out and "nothing new" in out
    assert '"sent"' not in out
