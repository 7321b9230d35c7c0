"""Event assignment in the steady state (issue 17, items 1 and 3): 10k new reports assigned
into a warehouse whose events already hold ``history`` reports, against the same 10k into an
empty warehouse. Each in a fresh process; the warehouse is built in SQL (history at 500
reports a day, five reports an event, one in five naming a place, random stored sketches),
checkpointed and reopened before the timed call, so only assignment is measured. The new
reports are classified at the load's time and assigned as a load does (``this_load=True``),
not by the whole-history repair scope."""
from __future__ import annotations

import json
import subprocess
import sys

_CHILD = r"""
import json, shutil, sys, time, tempfile
from datetime import datetime, timezone
from pathlib import Path
from warehouse import db
from warehouse.events import assign_events
from warehouse.load import id_key_sql
history, new = int(sys.argv[1]), int(sys.argv[2])
d = tempfile.mkdtemp()
T0 = "TIMESTAMPTZ '2026-01-01'"
STEP = 86400 // 500
NOW = datetime(2036, 1, 1, tzinfo=timezone.utc)  # the load's classified_at: what a load assigns (marsad.pipeline.load)
try:
    with db.connect(Path(d) / "wh.duckdb") as con:
        # history: h0..; five reports an event, already linked, sketched and (one in five) placed
        con.execute(f'''INSERT INTO articles SELECT 'h' || i, 's' || (i % 50), 'gh' || i, 'https://h.example/' || i, 'https://h.example/' || i,
            't' || i, '', 'en', {T0} + to_seconds(i * {STEP}), NULL, {T0} + to_seconds(i * {STEP}), 't' || i, 'old report ' || i,
            md5('h' || i), {T0}, {id_key_sql("'h' || i")} FROM range(?) t(i)''', [history])
        con.execute('''INSERT INTO article_indicators (article_id, indicator, clause, hits, refs, article_published_at)
                       SELECT article_id, 'militia_attack_us_forces', 0, '[]', '[]', published_at FROM articles''')
        con.execute(f'''INSERT INTO events SELECT 'e' || (i // 5), 'militia_attack_us_forces', min(published_at), min(fetched_at), 't', {T0}
                        FROM (SELECT CAST(substr(article_id, 2) AS BIGINT) AS i, published_at, fetched_at FROM articles) GROUP BY i // 5''')
        con.execute("INSERT INTO event_articles SELECT 'e' || (CAST(substr(article_id, 2) AS BIGINT) // 5), article_id, 'first', published_at FROM articles")
        con.execute('''INSERT INTO article_entities (article_id, gazetteer, entity_id, kind, role, article_published_at)
                       SELECT article_id, 'places', 'site' || (hash(article_id) % 40), 'base', 'target', published_at FROM articles
                       WHERE CAST(substr(article_id, 2) AS BIGINT) % 5 = 0''')
        con.execute('''INSERT INTO article_sketches SELECT article_id, list_transform(range(128), k -> hash(article_id, k) % 4294967296),
                       published_at FROM articles''')
        # the new reports: published after the history, at the same pace; every 5th a copy of the one before
        con.execute(f'''INSERT INTO articles SELECT 'n' || i, 's' || (i % 50), 'gn' || i, 'https://n.example/' || i, 'https://n.example/' || i,
            't' || i, '', 'en', {T0} + to_seconds((? + i) * {STEP}), NULL, {T0} + to_seconds((? + i) * {STEP}),
            (SELECT string_agg(substr(md5(CAST(j AS VARCHAR)), 1, 6), ' ') FROM range(8 * (i - (i % 5 = 0)::INT), 8 * (i - (i % 5 = 0)::INT) + 8) r(j)),
            (SELECT string_agg(substr(md5(CAST(j AS VARCHAR)), 1, 6), ' ') FROM range(8 * (i - (i % 5 = 0)::INT), 8 * (i - (i % 5 = 0)::INT) + 8) r(j)),
            md5(CAST(i - (i % 5 = 0)::INT AS VARCHAR)), ?, {id_key_sql("'n' || i")} FROM range(?) t(i)''', [history, history, NOW, new])
        con.execute('''INSERT INTO article_indicators (article_id, indicator, clause, hits, refs, article_published_at)
                       SELECT article_id, 'militia_attack_us_forces', 0, '[]', '[]', published_at FROM articles WHERE article_id LIKE 'n%' ''')
        con.execute("CHECKPOINT")
    with db.connect(Path(d) / "wh.duckdb") as con:
        t = time.perf_counter()
        opened = assign_events(con, NOW, this_load=True)
        took = time.perf_counter() - t
        linked = con.execute("SELECT count(*) FROM event_articles WHERE article_id LIKE 'n%'").fetchone()[0]
    assert linked == new, (linked, new)
    print(json.dumps({"history": history, "new": new, "seconds": took, "events": opened}))
finally:
    shutil.rmtree(d)
"""


def _run(history: int, new: int) -> dict:
    from bench.run import REPO

    res = subprocess.run([sys.executable, "-c", _CHILD, str(history), str(new)], capture_output=True, text=True, cwd=REPO, timeout=3600)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_events_history(history: int, new: int = 10_000, repeats: int = 2) -> list:
    """The steady-state row: assignment of ``new`` reports over a history of ``history``
    reports against the same over none (the median of ``repeats`` fresh runs each, alternated)."""
    from bench.run import Row

    empty, full = [], []
    for _ in range(repeats):
        empty.append(_run(0, new))
        full.append(_run(history, new))
    e = sorted(r["seconds"] for r in empty)[len(empty) // 2]
    f = sorted(r["seconds"] for r in full)[len(full) // 2]
    return [Row("events", f"assign_events, {new:,} new reports over {history:,} held in events", round(f, 3), round(e, 3), "s",
                round(f / e, 2), "<= 1.2x the empty warehouse", f / e <= 1.2,
                f"baseline: the same {new:,} new reports into an empty warehouse (median of {repeats} runs each, "
                f"alternated; assigned as a load does, this_load=True: the articles classified at its time); {full[0]['events']:,} events opened over the history, {empty[0]['events']:,} over none")]
