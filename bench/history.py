"""The cost of a load cycle against the history already stored (#17 item 1).

Warehouses holding 0, 1M and 2M articles are grown in SQL (``INSERT ... SELECT FROM range()``):
one year of synthetic history from 200 sources, realistic text lengths, ~5% matched in
``article_indicators``, every matched article in an event (``event_articles``, a few
reports per event) with its sketch and entities. Each is built once per size and copied for
every measurement. Then, per size:

* a load of 10k new staged entries (``pipeline.stage`` with the classifier, as the fetch
  tasks stage them; 5% attack reports; times at the head of the history), opening and
  closing the warehouse as ``pipeline.load`` does, into a fresh copy (checkpointed: no WAL to
  replay at the open; written to disk before the load is timed, ``_settle``). DuckDB checkpoints when the connection closes (or, before it, at a
  commit that takes the WAL past its ``checkpoint_threshold``); whether this load did is in
  the row;
* a load with nothing new (200 manifests, all 304 Not Modified);
* ten loads of 10k in a row: the first and the last, and their mean, which is the amortised
  cost of a load: it includes the checkpoints that happen among the ten (named in the row:
  a load whose commit or close found the WAL shorter than before it) and every open's replay
  of the WAL the loads before it left.

The baseline of every row is the same measurement on the empty warehouse, in the same run.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

N_SOURCES = 200  # the bench feeds' sources (bench-0 .. bench-199): the history is theirs too
NEW = 10_000
NOW = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)

_WORDS_EN = ("drone attack rocket base forces officials said report market oil prices parliament budget protest league "
             "floods traffic capital ministers electricity imports militia statement security sources local witnesses "
             "government week city province border talks minister army police strike air defence region").split()
_WORDS_AR = ("هجوم طائرة مسيرة قاعدة قوات أمريكية صواريخ مصادر محلية الحادث مزيد التفاصيل المسؤولين أسعار النفط "
             "البرلمان الموازنة احتجاجات الفريق الدوري أمطار العاصمة وزراء الكهرباء فصائل بيان الأمن الحكومة "
             "المحافظة الحدود الجيش الشرطة ضربة الدفاع الجوي المنطقة الأسبوع المدينة").split()


def _text(n_words: int, salt: int) -> str:
    """SQL: ``n_words`` words of row ``i`` in its language (``ar`` on odd sources)."""
    return (f"array_to_string(list_transform(range({n_words}), k -> CASE WHEN i % 2 = 1 "
            f"THEN $ar[1 + (hash(i, k, {salt}) % {len(_WORDS_AR)})::INT] "
            f"ELSE $en[1 + (hash(i, k, {salt}) % {len(_WORDS_EN)})::INT] END), ' ')")


def _pub() -> str:
    """SQL: the publication time of history row ``i`` (one year before ``$now``, oldest first)."""
    return "$now - to_microseconds(CAST(($n - i) * (365 * 86400 * 1e6) / $n AS BIGINT))"


def build(path: Path, n: int, indicators: list[str], now: datetime = NOW) -> None:
    """A warehouse at ``path`` holding ``n`` articles of the year before ``now``."""
    from warehouse import db
    from warehouse.load import id_key_sql

    with db.connect(path) as con:
        con.execute(
            """INSERT INTO sources (source_id, name, lang, url, interval_s, reliability, enabled, updated_at)
               SELECT 'bench-' || i, 'Bench ' || i, CASE WHEN i % 2 = 1 THEN 'ar' ELSE 'en' END,
                      'https://bench' || i || '.example/feed', 300, 'B', true, ?
               FROM range(?) t(i)""", [now, N_SOURCES])
        if not n:
            con.execute("CHECKPOINT")
            return
        # One year of history, oldest first; 5% matched (every 20th row).
        con.execute(
            f"""INSERT INTO articles
                SELECT article_id, 'bench-' || (i % $src), guid, url, url, title, summary,
                       CASE WHEN i % 2 = 1 THEN 'ar' ELSE 'en' END, pub, NULL, pub + INTERVAL 5 MINUTE,
                       lower(title), lower(title || ' ' || summary), md5(title || summary), pub + INTERVAL 5 MINUTE,
                       {id_key_sql()}
                FROM (SELECT i, md5('hist-' || i) AS article_id, 'hist-' || i AS guid,
                             'https://bench' || (i % $src) || '.example/hist-' || i AS url,
                             {_text(10, 1)} || ' ' || i AS title, {_text(45, 2)} AS summary,
                             {_pub()} AS pub
                      FROM range($n) t(i))""",
            {"n": n, "now": now, "ar": _WORDS_AR, "en": _WORDS_EN, "src": N_SOURCES},
        )
        # Matched articles: every 20th; events of 4 reports each (consecutive matched rows).
        # The link rows carry their article's published_at (migration 0029): the history's
        # times, looked up by id (``_pub`` below).
        con.execute(
            f"""INSERT INTO article_indicators (article_id, indicator, clause, hits, refs, frame, article_published_at)
               SELECT md5('hist-' || i), $ind[1 + ((i // 20) % len($ind))::INT], 0,
                      '[{{"group": "attack", "text": "drone attack"}}]', '["base:ain_al_asad"]', NULL, {_pub()}
               FROM range(0, $n, 20) t(i)""", {"n": n, "ind": indicators, "now": now})
        con.execute(
            """INSERT INTO events (event_id, indicator, first_report_at, first_seen_at, title, created_at)
               SELECT md5('ev-' || e), any_value(ai.indicator), min(a.published_at), min(a.fetched_at), arg_min(a.title, a.published_at), min(a.fetched_at)
               FROM (SELECT i, (i // 20) // 4 AS e FROM range(0, $n, 20) t(i)) m
               JOIN articles a ON a.article_id = md5('hist-' || m.i)
               JOIN article_indicators ai ON ai.article_id = a.article_id
               GROUP BY e""", {"n": n})
        con.execute(
            f"""INSERT INTO event_articles (event_id, article_id, how, article_published_at)
               SELECT md5('ev-' || ((i // 20) // 4)), md5('hist-' || i), CASE WHEN (i // 20) % 4 = 0 THEN 'first' ELSE 'same_place' END, {_pub()}
               FROM range(0, $n, 20) t(i)""", {"n": n, "now": now})
        con.execute(
            f"""INSERT INTO article_sketches (article_id, minhash, article_published_at)
               SELECT md5('hist-' || i), list_transform(range(128), k -> hash(i, k) % 4294967296)::UINTEGER[128],  -- MinHash values are 32-bit (warehouse.neardup)
                      {_pub()}
               FROM range(0, $n, 20) t(i)""", {"n": n, "now": now})
        con.execute(
            f"""INSERT INTO article_entities (article_id, gazetteer, entity_id, kind, role, article_published_at)
               SELECT md5('hist-' || i), g, g || '-' || (hash(i, g) % 40), CASE g WHEN 'places' THEN 'us_base' WHEN 'actors' THEN 'militia' ELSE 'drone' END,
                      CASE g WHEN 'places' THEN 'target' END, {_pub()}
               FROM range(0, $n, 20) t(i), (VALUES ('places'), ('actors'), ('weapons')) g(g)""", {"n": n, "now": now})
        con.execute("CHECKPOINT")


def _staged_sets(k: int) -> list[list]:
    """``k`` sets of 10k parsed articles (200 feeds x 50 entries, 5% attack reports), new to
    each other and to the history: parsed once, staged again for every measurement."""
    from bench.feeds import feed_xml
    from sources.parse import parse_feed

    sets = []
    for seed in range(k):
        feeds = []
        for f in range(N_SOURCES):
            parsed = parse_feed(feed_xml(f, NEW // N_SOURCES, seed=seed + 1, now=NOW), f"bench-{f}", None, NOW)
            feeds.append(parsed.articles)
        sets.append(feeds)
    return sets


def _stage(s, feeds: list[list], clf, now: datetime) -> None:
    from marsad import pipeline

    for f, articles in enumerate(feeds):
        meta = dict(source_id=f"bench-{f}", url=f"https://bench{f}.example/feed", status="ok" if articles else "not_modified",
                    http_status=200 if articles else 304, started_at=now.isoformat(), finished_at=now.isoformat())
        pipeline.stage(s, meta, articles, clf if articles else None)


def _settle(path: Path) -> None:
    """Write the fresh copy to disk before a load is timed. ``shutil.copyfile`` leaves the copy
    in the page cache, dirty (1 GB at 2M articles); the load's first fsync (its commit's WAL, on
    ext4's ordered journal, or the checkpoint at its close) would then write the whole copy and
    the kernel bills that writeback to the load: 0.5 s of wall and 0.2-0.4 s of CPU at 2M, none
    at 0 (a 1.5 MB file). A deployment loads into a warehouse that has long been on disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _wal(path: Path) -> Path:
    return Path(f"{path}.wal")


def _wal_bytes(s) -> int:
    p = _wal(s.warehouse)
    return p.stat().st_size if p.exists() else 0


def _timed_load(s, clf, now: datetime) -> tuple[float, object, bool]:
    """A load's wall time, its report, and whether it checkpointed (its WAL is shorter after
    it than before: a load always writes, so without a checkpoint the WAL only grows)."""
    from marsad import pipeline

    before = _wal_bytes(s)
    t = time.perf_counter()
    rep = pipeline.load(s, now, clf)
    took = time.perf_counter() - t
    after = _wal_bytes(s)
    return took, rep, after == 0 or after < before


def measure(sizes: list[int], rounds: int = 10, repeats: int = 2) -> dict:
    """Per size: best of ``repeats`` 10k loads, best of ``repeats`` all-304 loads, and ``rounds``
    10k loads in a row; each on a fresh copy of the size's warehouse."""
    from bench.run import _settings
    from marsad.pipeline import Settings  # noqa: F401  (import cost outside the timings)

    out: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="marsad-history-") as d:
        d = Path(d)
        s = _settings(d / "work")
        clf = s.classifier()
        sets = _staged_sets(max(rounds, repeats))
        # The indicators the bench's attack reports match: the history's matches are of the same.
        from marsad.pipeline import _verdicts

        inds = sorted({v["indicator"] for feeds in sets[:1] for arts in feeds for a in arts
                       for v in _verdicts(clf, a.text_folded, a.title_folded)}) or list(clf.ids)[:3]
        for n in sizes:
            base = d / f"base-{n}.duckdb"
            t0 = time.perf_counter()
            build(base, n, inds)
            built_s = time.perf_counter() - t0
            r: dict = {"build_s": built_s, "mb": base.stat().st_size / 1e6}

            def fresh():
                shutil.rmtree(s.staging, ignore_errors=True)
                s.warehouse.unlink(missing_ok=True)
                _wal(s.warehouse).unlink(missing_ok=True)
                s.warehouse.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(base, s.warehouse)
                _settle(s.warehouse)

            loads, idle, load_ckpts = [], [], []
            for k in range(repeats):
                fresh()
                _stage(s, sets[k], clf, NOW)
                t, rep, ckpt = _timed_load(s, clf, NOW)
                assert rep.new_articles == NEW, rep
                loads.append(t)
                load_ckpts.append(ckpt)
                # An all-304 cycle right after it (the WAL holds the 10k load, as in production).
                later = NOW + timedelta(minutes=5)
                _stage(s, [[] for _ in range(N_SOURCES)], clf, later)
                t, rep, _ = _timed_load(s, clf, later)
                assert rep.new_articles == 0, rep
                idle.append(t)
            fresh()
            row, ckpts = [], []
            for k in range(rounds):
                at = NOW + timedelta(minutes=5 * k)
                _stage(s, sets[k], clf, at)
                t, rep, ckpt = _timed_load(s, clf, at)
                assert rep.new_articles == NEW, rep
                row.append(t)
                if ckpt:
                    ckpts.append(k + 1)
            r.update(load=min(loads), loads=loads, load_ckpts=load_ckpts, idle=min(idle), idles=idle, rounds=row,
                     ckpts=ckpts, events=rep.new_events)
            out[n] = r
            print(f"history: {n:,} articles (built {built_s:.1f} s, {r['mb']:.0f} MB): load 10k {min(loads):.3f} s {loads} "
                  f"(checkpointed: {load_ckpts}), all-304 {min(idle):.3f} s, ten in a row {[round(x, 2) for x in row]} "
                  f"(mean {sum(row) / len(row):.3f} s, checkpoints at loads {ckpts})", flush=True)
            base.unlink()
    return out


def _which(flags: list[bool]) -> str:
    return "in all" if all(flags) else "in none" if not any(flags) else f"in {sum(flags)} of {len(flags)}"


def _loads(ks: list[int], rounds: int) -> str:
    if ks == list(range(1, rounds + 1)) and rounds > 2:
        return f"all (#1-#{rounds})"
    return ", ".join(f"#{k}" for k in ks) if ks else "none"


def bench_history(sizes: list[int]) -> list:
    from bench.run import Row

    got = measure(sizes)
    zero, top = got[sizes[0]], got[sizes[-1]]
    rows = []
    for n in sizes[1:]:
        r = got[n]
        ratio = r["load"] / zero["load"]
        target = 1.2 if n == sizes[-1] else None
        rows.append(Row("history", f"load of 10k new into {n:,} articles (open, load, classify, events, close)", round(r["load"], 3),
                        round(zero["load"], 3), "s", round(ratio, 2), "<= 1.2 x empty" if target else "-",
                        ratio <= target if target else None,
                        f"baseline: the same 10k load into an empty warehouse, same run; best of {len(r['loads'])} "
                        f"({', '.join(f'{x:.2f}' for x in r['loads'])} vs {', '.join(f'{x:.2f}' for x in zero['loads'])}); "
                        f"each into a freshly checkpointed copy (no WAL to replay); "
                        f"checkpointed at its close {_which(r['load_ckpts'])} (vs {_which(zero['load_ckpts'])} empty); "
                        f"warehouse {r['mb']:.0f} MB, built in SQL in {r['build_s']:.0f} s"))
        mean, mean0 = sum(r["rounds"]) / len(r["rounds"]), sum(zero["rounds"]) / len(zero["rounds"])
        rows.append(Row("history", f"amortised load of 10k into {n:,} articles: mean of ten in a row, checkpoints and WAL replays included",
                        round(mean, 3), round(mean0, 3), "s", round(mean / mean0, 2), "<= 1.2 x empty" if target else "-",
                        mean / mean0 <= target if target else None,
                        f"baseline: the same ten loads on an empty warehouse, same run; "
                        f"loads that checkpointed: {_loads(r['ckpts'], len(r['rounds']))} at {n:,}, {_loads(zero['ckpts'], len(zero['rounds']))} empty; "
                        f"all: {', '.join(f'{x:.2f}' for x in r['rounds'])} vs {', '.join(f'{x:.2f}' for x in zero['rounds'])}"))
    rows.append(Row("history", f"all-304 load (nothing new) at {sizes[-1]:,} articles", round(top["idle"], 3), round(zero["idle"], 3), "s",
                    round(top["idle"] / zero["idle"], 2), "<= 0.15 s", top["idle"] <= 0.15,
                    "baseline: the same all-304 load on an empty warehouse; 200 manifests, right after a 10k load"))
    for n in (sizes[0], sizes[-1]):
        r = got[n]
        rows.append(Row("history", f"ten loads of 10k in a row at {n:,}: last vs first", round(r["rounds"][-1], 3), round(r["rounds"][0], 3), "s",
                        round(r["rounds"][-1] / r["rounds"][0], 2), "-", None,
                        f"baseline: the first of the ten; all: {', '.join(f'{x:.2f}' for x in r['rounds'])}; "
                        f"checkpointed: {_loads(r['ckpts'], len(r['rounds']))}"))
    return rows
