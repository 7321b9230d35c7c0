"""``marsad backfill``: past items go through the pipeline's own stage/load/evaluate so that a
new install starts with history; what it would have notified is recorded as backfilled and
never sent; running it twice adds nothing; a live attack afterwards fires."""
import json
from datetime import datetime, timedelta, timezone

import pytest

from alerts.delivery import SlackSink, slack_client
from conftest import rss
from marsad import cli, pipeline
from marsad.replay import BACKFILLED, _article, Item
from warehouse import db

NOW = datetime.now(timezone.utc).replace(second=0, microsecond=0)
BASES = ["Harir air base in northern Iraq", "Ain al-Asad air base in western Iraq", "Tower 22 in Jordan",
         "the Green Village base in eastern Syria"]
QUIET = ["Iraqi parliament passes budget after months of wrangling", "Baghdad book fair opens with record attendance",
         "Oil exports from Basra rise for a third month", "Erbil hosts a regional football tournament"]


def attack(n, t, base):
    return {"id": f"atk-{n}", "source": "wire-en", "lang": "en", "published": t.isoformat(), "url": f"https://wire.example/atk-{n}",
            "title": f"Drone attack targets US forces at {base}",
            "summary": "A drone struck near the base hosting US troops; no casualties were reported."}


def history(days=20):
    """Quiet news every day for ``days`` days, and a campaign of three attacks 18 days ago."""
    items = [{"id": f"q-{d}", "source": "news-en", "lang": "en", "published": (NOW - timedelta(days=d, hours=3)).isoformat(),
              "url": f"https://news.example/q{d}", "title": QUIET[d % len(QUIET)] + f" ({d})", "summary": "Local news."}
             for d in range(days, 0, -1)]
    items += [attack(i, NOW - timedelta(days=18, hours=-5 * i), BASES[i]) for i in range(3)]
    return items


def write_jsonl(path, items):
    path.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    return path


def counts(path):
    with db.connect(path, read_only=True) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("articles", "events", "alerts", "notifications", "fetch_log", "sources", "source_state")}


def status(capsys, path, rule):
    assert cli.main(["rules", "status", "--db", str(path)]) == 0
    return next(line for line in capsys.readouterr().out.splitlines() if line.startswith(rule))


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("MARSAD_STAGING", str(tmp_path / "staging"))
    return tmp_path


def test_backfill_arms_the_resumption_sends_nothing_and_a_live_attack_fires(env, slack, capsys):
    path = env / "wh.duckdb"
    with db.connect(path):
        pass  # a fresh install: the schema, nothing polled yet
    assert "not armed" in status(capsys, path, "militia-attacks-resume") and "no history yet" in status(capsys, path, "militia-attacks-resume")

    src = write_jsonl(env / "past.jsonl", history())
    assert cli.main(["backfill", str(src), "--db", str(path)]) == 0
    stats = json.loads(capsys.readouterr().out)["backfill"]
    assert stats["new_articles"] == 23 and stats["known"] == 0
    line = status(capsys, path, "militia-attacks-resume")
    assert " armed " in line and "the next event fires" in line, line
    with db.connect(path, read_only=True) as con:
        # The campaign of 18 days ago fired (and resolved) in simulated time, silently.
        alerts = con.execute("SELECT rule_id, state, started_at FROM alerts ORDER BY started_at").fetchall()
        assert [(r, s) for r, s, _ in alerts] == [("militia-attack-campaign", "resolved")]
        assert alerts[0][2] < NOW - timedelta(days=17)
        notes = con.execute("SELECT state, status FROM notifications ORDER BY created_at").fetchall()
        assert notes[0][0] == "firing" and notes[-1][0] == "resolved" and {st for _, st in notes} == {BACKFILLED}
        # The sources the backfill brought are recorded disabled (never polled, never judged by
        # source health); it leaves no polling state behind.
        assert con.execute("SELECT list(source_id ORDER BY source_id), bool_or(enabled), min(url) FROM sources").fetchone() == (
            ["news-en", "wire-en"], False, "backfill:news-en")
        assert con.execute("SELECT count(*) FROM source_state").fetchone()[0] == 0

    settings = pipeline.Settings.from_env(path)
    sink = SlackSink(slack_client(slack.state.token, slack.base_url, timeout=2))
    report = pipeline.deliver(settings, sink)
    assert slack.posts() == [] and report.as_dict()["sent"] == 0  # nothing backfilled goes to Slack

    # Running it again adds nothing.
    before = counts(path)
    assert cli.main(["backfill", str(src), "--db", str(path)]) == 0
    again = json.loads(capsys.readouterr().out)["backfill"]
    assert again["new_articles"] == 0 and again["known"] == 23 and counts(path) == before

    # A live attack now: the resumption fires and is posted.
    live = _article(Item("live-1", "wire-en", "en", NOW - timedelta(minutes=10), attack(9, NOW, BASES[3])["title"],
                         "A drone struck near the base hosting US troops.", "https://wire.example/live-1"), NOW)
    pipeline.stage(settings, dict(source_id="wire-en", url="https://wire.example/rss", status="ok", http_status=200,
                                  started_at=NOW.isoformat(), finished_at=NOW.isoformat()), [live], settings.classifier())
    pipeline.load(settings, NOW)
    queued = pipeline.evaluate(settings, NOW + timedelta(minutes=1))
    assert [(q["rule"], q["state"]) for q in queued] == [("militia-attacks-resume", "firing")]
    assert queued[0]["facts"]["days_since_previous"] >= 17
    pipeline.deliver(settings, sink)
    (post,) = slack.posts()
    assert "resumed after a quiet period" in post["text"]


def test_backfill_reads_captured_feed_files_and_refuses_what_it_cannot_place(env, capsys):
    path = env / "wh.duckdb"
    feeds = env / "captures"
    feeds.mkdir()
    items = [dict(title=f"Attack on US forces at {b}", link=f"https://wire.example/f{i}", guid=f"f{i}",
                  description="A drone struck near the base hosting US troops.",
                  pubDate=(NOW - timedelta(days=30 - 4 * i)).strftime("%a, %d %b %Y %H:%M:%S +0000"))
             for i, b in enumerate(BASES)]
    (feeds / "wire-en.xml").write_text(rss(items), encoding="utf-8")
    assert cli.main(["backfill", str(feeds), "--db", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["backfill"]["new_articles"] == 4
    with db.connect(path, read_only=True) as con:
        assert con.execute("SELECT min(started_at) FROM fetch_log").fetchone()[0] <= NOW - timedelta(days=29)
        assert con.execute("SELECT count(*) FROM notifications WHERE status <> ?", [BACKFILLED]).fetchone()[0] == 0

    future = write_jsonl(env / "future.jsonl", [attack(1, NOW + timedelta(days=2), BASES[0])])
    assert cli.main(["backfill", str(future), "--db", str(path)]) == 2
    assert "no past items to backfill (1 in the future)" in capsys.readouterr().err
    bad = env / "bad.jsonl"
    bad.write_text('{"id": "x", "source": "s"}\n', encoding="utf-8")
    assert cli.main(["backfill", str(bad), "--db", str(path)]) == 2
    assert "bad.jsonl:1: missing published, title" in capsys.readouterr().err


def test_backfill_leaves_a_polled_feed_as_the_poller_knows_it(env, capsys):
    """Items of a registered feed that is already polled: its row in ``sources`` and its
    polling state (validators, last success, next poll) are what they were."""
    path = env / "wh.duckdb"
    settings = pipeline.Settings.from_env(path)
    with db.connect(path) as con:
        pipeline.sync_sources(con, settings.registry(), NOW)
        con.execute("""INSERT INTO source_state (source_id, etag, last_attempt_at, last_success_at, last_status, consecutive_failures, next_due_at)
                       VALUES ('bbc-ar', '"v1"', ?, ?, 'ok', 0, ?)""", [NOW, NOW, NOW + timedelta(minutes=5)])
        before = con.execute("SELECT * FROM source_state").fetchall(), con.execute("SELECT * FROM sources ORDER BY source_id").fetchall()
    items = [dict(attack(i, NOW - timedelta(days=10 - i), BASES[i]), source="bbc-ar") for i in range(3)]
    assert cli.main(["backfill", str(write_jsonl(env / "bbc.jsonl", items)), "--db", str(path)]) == 0
    with db.connect(path, read_only=True) as con:
        assert (con.execute("SELECT * FROM source_state").fetchall(), con.execute("SELECT * FROM sources ORDER BY source_id").fetchall()) == before
        assert con.execute("SELECT count(*) FROM articles WHERE source_id = 'bbc-ar'").fetchone()[0] == 3
        first_poll = con.execute("SELECT min(started_at) FROM fetch_log").fetchone()[0]
        assert NOW - timedelta(days=10) <= first_poll <= NOW - timedelta(days=10) + timedelta(minutes=15)  # history starts then
