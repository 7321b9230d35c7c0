"""Incremental publishing of the analysts' read copy (warehouse.publish): after cycles of new,
corrected, re-classified and removed rows, the copy equals a full publish; a reader holding
a copy never blocks a publish and keeps reading; a migration forces a full publish."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from sources.normalize import fold
from warehouse import db
from warehouse.publish import COPY_ONLY, open_read_copy, publish, spare_path
from warehouse.search import search

FIXTURES = Path(__file__).parent / "fixtures"
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
QUERIES = ("عين الأسد", "طائرة مسيرة", "القوات الأمريكية", "قاعدة", "attack base", "US forces", "rockets")


def _reports() -> list[dict]:
    rows = []
    for name in ("classify_ar.jsonl", "classify_en.jsonl"):
        rows += [json.loads(line) for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows


def _article(r: dict, i: int, title: str | None = None, classified: datetime | None = None) -> tuple:
    title = title or r["title"]
    text = fold(f"{title} {r['summary']}")
    t = T0 + timedelta(minutes=i)
    aid = hashlib.sha1(f"{r['id']}".encode()).hexdigest()
    return (aid, f"src-{i % 5}", r["id"], f"https://example.invalid/{r['id']}", None, title, r["summary"], r["lang"],
            t, None, t, fold(title), text, hashlib.md5(text.encode()).hexdigest(), classified or t)


def _add(con, rows) -> None:
    con.executemany("INSERT INTO articles (article_id, source_id, guid, url, canonical_url, title, summary, lang, published_at, "
                    "published_flag, fetched_at, title_folded, text_folded, content_hash, classified_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    ids = [r[0] for r in rows]
    # every third article matches an indicator and opens an event (link tables grow with it)
    con.execute("""INSERT INTO article_indicators (article_id, indicator, clause, hits, refs, article_published_at)
                   SELECT article_id, 'attack', 1, '[]', '[]', published_at FROM articles WHERE list_contains(?, article_id) AND hash(article_id) % 3 = 0""", [ids])
    con.execute("""INSERT INTO events (event_id, indicator, first_report_at, first_seen_at, created_at, title)
                   SELECT 'ev-' || article_id, 'attack', published_at, fetched_at, fetched_at, title FROM articles
                   WHERE list_contains(?, article_id) AND hash(article_id) % 3 = 0""", [ids])
    con.execute("""INSERT INTO event_articles (event_id, article_id, how, article_published_at)
                   SELECT 'ev-' || article_id, article_id, 'first', published_at FROM articles
                   WHERE list_contains(?, article_id) AND hash(article_id) % 3 = 0""", [ids])


def _cycle(con, reports, k: int) -> None:
    """One load's worth of change, as the loader makes them (its time later than any before):
    new articles (one left unclassified, classified by the next load, when it joins an older
    event whose first report moves earlier), a correction still unclassified (classified at
    the next load), a correction that no longer matches (its derived rows and links go, its
    emptied event is deleted), new fetches and small tables changed in place."""
    now = T0 + timedelta(days=k + 1)
    late = [r[0] for r in con.execute("SELECT article_id FROM articles WHERE classified_at IS NULL ORDER BY 1").fetchall()]
    con.execute("UPDATE articles SET classified_at = ? WHERE classified_at IS NULL", [now])
    for aid in late:  # classified late: it matches, and joins the oldest event, which it predates
        con.execute("INSERT INTO article_indicators (article_id, indicator, clause, hits, refs, article_published_at) "
                    "SELECT ?, 'attack', 2, '[]', '[]', published_at FROM articles WHERE article_id = ?", [aid, aid])
        event = con.execute("SELECT min(event_id) FROM events").fetchone()[0]
        con.execute("INSERT INTO event_articles (event_id, article_id, how, article_published_at) "
                    "SELECT ?, ?, 'joined', published_at FROM articles WHERE article_id = ?", [event, aid, aid])
        con.execute("UPDATE events SET first_report_at = first_report_at - INTERVAL 1 DAY, first_seen_at = first_seen_at - INTERVAL 1 DAY "
                    "WHERE event_id = ?", [event])
    start = 40 + 15 * k
    rows = [_article(r, start + j, classified=now) for j, r in enumerate(reports[start:start + 15])]
    rows[0] = rows[0][:-1] + (None,)  # no indicator pack at this load
    _add(con, rows)
    old = reports[k]
    corrected = _article(old, k, title=f"{old['title']} تحديث {k}")  # corrected text: new hash, classified at the next load
    con.execute("UPDATE articles SET title = ?, title_folded = ?, text_folded = ?, content_hash = ?, classified_at = NULL WHERE article_id = ?",
                [corrected[5], corrected[11], corrected[12], corrected[13], corrected[0]])
    # a correction that no longer matches: derived rows deleted, its link and the event it alone held go
    aid = con.execute("""SELECT min(article_id) FROM event_articles WHERE event_id IN
                         (SELECT event_id FROM event_articles GROUP BY ALL HAVING count(*) = 1)""").fetchone()[0]
    con.execute("UPDATE articles SET text_folded = text_folded || ' تصحيح', content_hash = md5(text_folded || ' تصحيح'), classified_at = ? "
                "WHERE article_id = ?", [now, aid])
    for table in ("article_indicators", "article_entities", "article_sketches"):
        con.execute(f"DELETE FROM {table} WHERE article_id = ?", [aid])
    gone = con.execute("SELECT event_id FROM event_articles WHERE article_id = ?", [aid]).fetchone()[0]
    con.execute("DELETE FROM event_articles WHERE article_id = ?", [aid])
    con.execute("DELETE FROM events WHERE event_id = ?", [gone])
    con.execute("INSERT INTO fetch_log (fetch_id, source_id, started_at, finished_at, status) VALUES (?, 'src-1', ?, ?, 'ok')",
                [f"f-{k}", T0, T0])
    con.execute("INSERT OR REPLACE INTO source_state (source_id, last_status, consecutive_failures) VALUES ('src-1', ?, ?)", [f"ok-{k}", k])


@pytest.fixture
def primary(tmp_path):
    path = tmp_path / "wh.duckdb"
    with db.connect(path) as con:
        _add(con, [_article(r, i) for i, r in enumerate(_reports()[:40])])
    return path


def _contents(path: Path) -> dict:
    """Every table and view of a read copy (sorted rows), and the ranked hits of QUERIES."""
    con = open_read_copy(path)
    try:
        names = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' UNION ALL "
            "SELECT view_name FROM duckdb_views() WHERE schema_name = 'main' AND NOT internal ORDER BY 1").fetchall()]
        out = {n: sorted(map(repr, con.execute(f'SELECT * FROM "{n}"').fetchall()))
               for n in names if n not in COPY_ONLY and n != "source_health"}  # source_health counts against now()
        for q in QUERIES:
            out[f"search {q}"] = [(h.article_id, round(h.score, 9)) for h in search(con, q)]
        return out
    finally:
        con.close()


def test_incremental_publish_equals_a_full_publish(primary, tmp_path):
    reports = _reports()
    copy, full = tmp_path / "read.duckdb", tmp_path / "full.duckdb"
    assert publish(primary, copy).mode == "full"  # no read copy yet
    modes = []
    for k in range(4):
        with db.connect(primary) as con:
            _cycle(con, reports, k)
        rep = publish(primary, copy)
        modes.append((rep.mode, rep.reason))
        publish(primary, full, full=True)
        assert _contents(copy) == _contents(full), f"cycle {k}"
    assert all(m == "incremental" and r.endswith("watermark") for m, r in modes), modes
    # every publish started from the spare the one before it prepared (a copy of its read copy,
    # made after its swap), so none copied the read copy on its own path
    assert all(r.startswith("spare") for _, r in modes), modes
    con = open_read_copy(copy)
    # an article loaded in this cycle is found after this cycle's publish
    newest = reports[40 + 15 * 3 + 14]
    assert con.execute("SELECT count(*) FROM articles WHERE guid = ?", [newest["id"]]).fetchone()[0] == 1
    assert newest["id"] in {r[0] for r in con.execute(
        "SELECT guid FROM articles WHERE article_id IN (SELECT article_id FROM marsad_match(marsad_light(?)))",
        [fold(newest["title"].split()[0] + " " + newest["title"].split()[1])]).fetchall()}
    # the corrected title is searchable, the old text no longer is the article's
    assert {h.article_id for h in search(con, "تحديث 3")} == {_article(reports[3], 3)[0]}
    assert con.execute("SELECT mode FROM publish_info").fetchone()[0] == "incremental"
    con.close()


HOLDER = """
import sys
from warehouse.publish import open_read_copy
con = open_read_copy(sys.argv[1])
print(con.execute("SELECT count(*) FROM articles").fetchone()[0], flush=True)
sys.stdin.readline()
print(con.execute("SELECT count(*) FROM articles").fetchone()[0], flush=True)
"""


def test_changes_the_watermark_cannot_see_are_found_by_comparing_everything(primary, tmp_path):
    """An older article changed without a later classified_at (a clock set back), or one
    removed: the fingerprint of the older rows differs, every article is compared."""
    reports = _reports()
    copy, full = tmp_path / "read.duckdb", tmp_path / "full.duckdb"
    publish(primary, copy)
    with db.connect(primary) as con:
        _cycle(con, reports, 0)
    assert publish(primary, copy).reason.endswith("watermark")
    changes = [
        ("UPDATE articles SET text_folded = text_folded || ' مكرر', content_hash = 'x', classified_at = ? "
         "WHERE article_id = (SELECT max(article_id) FROM articles WHERE classified_at < ?)", [T0, T0 + timedelta(hours=1)]),
        ("DELETE FROM articles WHERE article_id = (SELECT min(article_id) FROM articles WHERE article_id NOT IN "
         "(SELECT article_id FROM event_articles))", []),
    ]
    for sql, params in changes:
        with db.connect(primary) as con:
            con.execute(sql, params)
        rep = publish(primary, copy)
        assert (rep.mode, rep.reason.split(", ")[-1]) == ("incremental", "full compare")
        publish(primary, full, full=True)
        assert _contents(copy) == _contents(full), sql
    # the spare is a copy of the read copy made after the deletion was published: the fast path again
    assert [publish(primary, copy).reason.split(", ")[-1] for _ in range(2)] == ["watermark", "watermark"]


def test_a_reader_holding_a_copy_never_blocks_publishing_and_keeps_reading(primary, tmp_path):
    copy = tmp_path / "read.duckdb"
    publish(primary, copy, full=True)
    reader = subprocess.Popen([sys.executable, "-c", HOLDER, str(copy)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).parent.parent)
    try:
        held = int(reader.stdout.readline())
        reports = _reports()
        reasons = []
        for k in range(3):
            with db.connect(primary) as con:
                _cycle(con, reports, k)
            rep = publish(primary, copy)
            reasons.append(rep.reason)
        # the spare is a file of its own (a copy made after each swap), never the generation a
        # reader opened: the reader costs no publish a file copy
        assert all(r.startswith("spare") for r in reasons), reasons
        assert spare_path(copy).stat().st_ino != copy.stat().st_ino
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert int(reader.stdout.readline()) == held  # the reader's copy is consistent and still readable
    finally:
        reader.stdin.close()
        reader.wait(timeout=60)
    assert reader.returncode == 0
    con = open_read_copy(copy)
    assert con.execute("SELECT count(*) FROM articles").fetchone()[0] == held + 3 * 15
    con.close()


def test_a_spare_someone_holds_open_is_left_alone_and_the_read_copy_copied(primary, tmp_path):
    """Nobody should open the hidden spare, but if a process does, DuckDB refuses the publish's
    read-write attach at once: the publish copies the read copy instead, and prepares a new spare."""
    copy, full = tmp_path / "read.duckdb", tmp_path / "full.duckdb"
    publish(primary, copy)
    held_spare = spare_path(copy)
    reader = subprocess.Popen([sys.executable, "-c", HOLDER, str(held_spare)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).parent.parent)
    try:
        held = int(reader.stdout.readline())
        with db.connect(primary) as con:
            _cycle(con, _reports(), 0)
        rep = publish(primary, copy)
        assert rep.reason.startswith("file copy"), rep.reason
        assert spare_path(copy).exists() and rep.prepare_s > 0
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert int(reader.stdout.readline()) == held
    finally:
        reader.stdin.close()
        reader.wait(timeout=60)
    publish(primary, full, full=True)
    assert _contents(copy) == _contents(full)
    assert publish(primary, copy).reason.startswith("spare")


def test_without_prepare_no_spare_is_left_and_the_next_publish_copies_the_file(primary, tmp_path):
    copy = tmp_path / "read.duckdb"
    publish(primary, copy, prepare=False)
    assert not spare_path(copy).exists()
    with db.connect(primary) as con:
        _cycle(con, _reports(), 0)
    rep = publish(primary, copy)
    assert rep.reason.startswith("file copy") and rep.prepare_s > 0 and spare_path(copy).exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_a_migration_forces_a_full_publish(primary, tmp_path):
    copy = tmp_path / "read.duckdb"
    publish(primary, copy)
    with db.connect(primary) as con:  # what a new migration does: a schema change and its version
        con.execute("ALTER TABLE events ADD COLUMN confidence DOUBLE")
        con.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'test_change')")
    rep = publish(primary, copy)
    assert (rep.mode, rep.reason) == ("full", "schema migrations differ from the primary's")
    con = open_read_copy(copy)
    assert "confidence" in [r[0] for r in con.execute("DESCRIBE events").fetchall()]
    con.close()
    assert publish(primary, copy).mode == "incremental"


def test_a_copy_from_an_older_version_is_rebuilt(primary, tmp_path):
    copy = tmp_path / "read.duckdb"
    publish(primary, copy)
    for made_by_the_older_version in (copy, spare_path(copy)):
        con = duckdb.connect(str(made_by_the_older_version))
        con.execute("ALTER TABLE publish_info DROP COLUMN index_version")
        con.close()
    rep = publish(primary, copy)
    assert (rep.mode, rep.reason) == ("full", "the read copy predates incremental publishing")


def test_the_base_is_the_cheaper_of_the_spare_and_a_file_copy(primary, tmp_path):
    """A spare three cycles behind (an older generation put back), the read copy one: with
    indexing dear and copying cheap (rates as publish_info records them), the publish copies
    the read copy instead."""
    reports = _reports()
    copy, old = tmp_path / "read.duckdb", tmp_path / "old-spare.duckdb"
    publish(primary, copy)
    shutil.copyfile(spare_path(copy), old)
    for k in range(2):
        with db.connect(primary) as con:
            _cycle(con, reports, k)
        publish(primary, copy)
    os.replace(old, spare_path(copy))
    con = duckdb.connect(str(spare_path(copy)))
    con.execute("UPDATE publish_info SET index_s_per_article = 10, copy_bytes_per_s = 1e12")
    con.close()
    with db.connect(primary) as con:
        _cycle(con, reports, 2)
    rep = publish(primary, copy)
    assert rep.reason.startswith("file copy (expected"), rep.reason
    full = tmp_path / "full.duckdb"
    publish(primary, full, full=True)
    assert _contents(copy) == _contents(full)
