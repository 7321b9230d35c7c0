"""Event assignment reads each part of the past at the horizon of the rule that needs it
(``warehouse.events._read_events``): exact copies reach the keys of events of 7 days,
near-duplicates the texts of events of 36 hours, follow-ups the places of events of 30 days,
without reading those events' reports. A small warehouse of earlier loads, then one load."""
import hashlib
from datetime import datetime, timedelta, timezone

import duckdb
import pytest
from events_gen import _insert, hierarchy

from warehouse import db
from warehouse.cluster import Clusterer
from warehouse.events import _read_events, assign_events

IND = "militia_attack_us_forces"
NOW = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
TEXTS = {  # unrelated texts; a pending report repeats one of them with one word changed
    "near30h": "mortar rounds struck the perimeter of the logistics hub overnight officials said 4",
    "near40h": "a convoy carrying fuel was hit by a roadside bomb on the desert highway 7",
}


def _article(aid: str, at: datetime, text: str, url: str) -> dict:
    return dict(article_id=aid, source_id="s1", guid=f"g-{aid}", url=url, canonical_url=url, title=text[:40],
                summary="", lang="en", published_at=at, fetched_at=at + timedelta(minutes=5), title_folded=text,
                text_folded=text, content_hash=hashlib.md5(text.encode()).hexdigest())


def _load(con, articles: list[dict], entities: list[dict], at: datetime) -> None:
    _insert(con, "articles", articles)
    _insert(con, "article_indicators", [dict(article_id=a["article_id"], indicator=IND, article_published_at=a["published_at"]) for a in articles])
    at_of = {a["article_id"]: a["published_at"] for a in articles}
    _insert(con, "article_entities", [e | {"article_published_at": at_of[e["article_id"]]} for e in entities])
    assign_events(con, at, hierarchy())


def _words(seed: str) -> str:
    return " ".join(hashlib.sha1(f"{seed}{k}".encode()).hexdigest()[:7] for k in range(10))


def test_each_rule_reads_the_past_at_its_own_horizon(tmp_path):
    days = timedelta(days=1)
    past = [
        _article("old40d", NOW - 40 * days, _words("z"), "https://x.example/forty-days"),
        _article("old10d", NOW - 10 * days, _words("a"), "https://x.example/ten-days"),
        _article("old5d", NOW - 5 * days, _words("b"), "https://x.example/five-days"),
        _article("old20d", NOW - 20 * days, _words("c"), "https://x.example/twenty-days"),
        _article("old30h", NOW - timedelta(hours=30), TEXTS["near30h"], "https://x.example/30h"),
        _article("old40h", NOW - timedelta(hours=40), TEXTS["near40h"], "https://x.example/40h"),
    ]
    rumailan = [dict(article_id="old20d", gazetteer="places", entity_id="rumailan", kind="base", role="target"),
                dict(article_id="old20d", gazetteer="weapons", entity_id="drone", kind="weapon", role=None)]
    pending = [
        _article("copy10d", NOW, _words("d"), "https://x.example/ten-days"),
        _article("copy5d", NOW + timedelta(minutes=1), _words("e"), "https://x.example/five-days"),
        _article("follow", NOW + timedelta(minutes=2), _words("f"), "https://x.example/follow"),
        _article("near30", NOW + timedelta(minutes=3), TEXTS["near30h"].replace("overnight", "at night"), "https://y.example/1"),
        _article("near40", NOW + timedelta(minutes=4), TEXTS["near40h"].replace("desert", "main"), "https://y.example/2"),
    ]
    follow = [dict(article_id="follow", gazetteer="places", entity_id="rumailan", kind="base", role="target"),
              dict(article_id="follow", gazetteer="cues", entity_id="followup", kind="followup", role=None)]
    path = tmp_path / "h.duckdb"
    with db.connect(path) as con:
        _load(con, past, rumailan, NOW - 2 * days)
        # What the reader gives the Clusterer for reports at NOW: events of 30 days with the
        # places of their reports, keys of 7 days, texts of 36 hours; nothing older.
        seen = Clusterer(hierarchy())
        _read_events(con, seen, [IND], NOW, NOW)
        event_of = dict(con.execute("SELECT article_id, event_id FROM event_articles").fetchall())
        assert set(seen.events) == {event_of[a] for a in ("old10d", "old5d", "old20d", "old30h", "old40h")}
        assert seen.events[event_of["old20d"]].places == {"rumailan"}
        assert seen.events[event_of["old20d"]].weapons == {"drone"}
        assert set(seen._keys.values()) == {event_of["old5d"], event_of["old30h"], event_of["old40h"]}
        assert [m.split(":")[1] for m in seen._pools[IND].members] == ["old30h"]

        _load(con, pending, follow, NOW + days)
        joined = dict(con.execute("SELECT article_id, how FROM event_articles").fetchall())
        event_of = dict(con.execute("SELECT article_id, event_id FROM event_articles").fetchall())
    assert joined["copy10d"] == "first"  # the same URL 10 days later is another event
    assert (joined["copy5d"], event_of["copy5d"]) == ("same_url", event_of["old5d"])
    assert (joined["follow"], event_of["follow"]) == ("followup", event_of["old20d"])
    assert (joined["near30"], event_of["near30"]) == ("near_duplicate", event_of["old30h"])
    assert joined["near40"] == "first"  # a near-duplicate of an event of 40 h ago: outside the window


def test_after_running_out_of_memory_under_the_setting_the_next_load_assigns_without_it(tmp_path, monkeypatch):
    """DuckDB aborts the load's transaction on an out-of-memory error, so nothing can be retried
    inside it: the marker next to the warehouse makes the next attempt assign without the lowered
    limit, until the setting changes."""
    from warehouse import db
    from warehouse.events import _limit_memory, _memory_marker

    monkeypatch.setenv("MARSAD_ASSIGN_MEMORY", "300MB")
    with db.connect(tmp_path / "wh.duckdb") as con:
        con.execute("SET memory_limit = '2GB'")
        marker = _memory_marker(con)
        assert marker == tmp_path / "wh.duckdb.assign-memory"
        restore, want = _limit_memory(con)  # no marker: lowered
        assert want == "300MB" and restore is not None
        assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0].startswith("286")  # 300 MB in MiB
        con.execute(f"SET memory_limit = '{restore}'")
        marker.write_text("300MB", encoding="utf-8")  # what assign_events writes when it runs out
        assert _limit_memory(con) == (None, "300MB")  # not lowered again under the value that failed
        assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0].endswith("GiB")  # left as it was
        monkeypatch.setenv("MARSAD_ASSIGN_MEMORY", "600MB")  # the admin raised it: the new value is tried
        restore, want = _limit_memory(con)
        assert want == "600MB" and restore is not None and not marker.exists()


def test_temporary_tables_dropped_after_an_aborted_transaction_leave_the_first_error_raised(tmp_path):
    """The loaders drop their temporary tables in ``finally``; after an error that aborted the
    transaction (out of memory, a constraint) DuckDB refuses the drop too, and that refusal
    must not replace the error that matters."""
    with db.connect(tmp_path / "wh.duckdb") as con:
        con.execute("BEGIN")
        con.execute("CREATE TEMP TABLE _marsad_probe AS SELECT 1 AS x")
        con.execute("INSERT INTO schema_migrations (version, name) VALUES (-1, 'probe')")
        with pytest.raises(duckdb.ConstraintException):
            try:
                con.execute("INSERT INTO schema_migrations (version, name) VALUES (-1, 'probe again')")
            finally:
                db.drop_temp(con, "_marsad_probe")
        con.execute("ROLLBACK")
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = '_marsad_probe'").fetchone() == (0,)
