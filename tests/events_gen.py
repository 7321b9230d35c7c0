"""A generated, deterministic warehouse of reports for event assignment, and a fingerprint
of the memberships it gets (``membership_md5``): pins what ``warehouse.events.assign_events``
decides, so a change that makes it cheaper cannot silently make it decide otherwise.

The reports exercise every rule: exact copies (URL, GUID, content), near-duplicates
(edited copies, some with another number), places named at every level of the nesting
(sites, towns, provinces, regions, countries, launch places), actors with umbrellas, weapons,
``renewed`` and ``followup`` cues, two indicators, and late feeds (reports published long
before they are fetched, so events move back). They arrive in several loads, so events of
earlier loads are read back from the warehouse.

    .venv/bin/python tests/events_gen.py            # md5 of the generated set, the bench feeds and the replay fixtures
"""
from __future__ import annotations

import hashlib
import random
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The generator's own small gazetteer (not the shipped one, so editing places.yaml cannot move
# the pinned fingerprint): (id, kind, within) nested country -> region -> province -> town -> site.
PLACES = [
    ("iq", "country", None), ("sy", "country", None), ("jo", "country", None),
    ("w_iraq", "region", "iq"), ("n_iraq", "region", "iq"), ("ne_syria", "region", "sy"), ("e_syria", "region", "sy"),
    ("anbar", "province", "w_iraq"), ("erbil_p", "province", "n_iraq"), ("nineveh", "province", "n_iraq"),
    ("hasakah", "province", "ne_syria"), ("deir", "province", "e_syria"),
    ("baghdadi", "town", "anbar"), ("zummar", "town", "nineveh"), ("shaddadi_t", "town", "hasakah"),
    ("asad", "base", "baghdadi"), ("tanf", "base", "sy"), ("harir", "base", "erbil_p"), ("erbil_ab", "base", "erbil_p"),
    ("rumailan", "base", "hasakah"), ("shaddadi", "base", "shaddadi_t"), ("conoco", "base", "deir"), ("omar", "base", "deir"),
    ("tower22", "base", "jo"), ("baghdad_emb", "diplomatic", None), ("basra", "city", None), ("umm_qasr", "port", None),
    ("hasakah_site", "unnamed_site", "hasakah"), ("anbar_site", "unnamed_site", "anbar"), ("n_israel", "region", None),
]
ACTORS = [("iri", "militia_umbrella"), ("kh", "militia"), ("nujaba", "militia"), ("ksh", "militia"),
          ("irgc", "state_force"), ("houthis", "militia")]
WEAPONS = [("drone", "weapon"), ("rocket_missile", "weapon"), ("mortar", "weapon"), ("ied", "weapon"), ("gunfire", "weapon")]
INDICATORS = ("militia_attack_us_forces", "iran_strike_us_forces")
WORDS = ("drone rocket attack base forces officials said struck hit targeted near province region report local "
         "sources security killed wounded damage claimed group statement launched military convoy").split()


def hierarchy():
    from alerts.places import PlaceHierarchy

    return PlaceHierarchy.from_entries({"id": i, "kind": k, "within": w} for i, k, w in PLACES)


def generate(n: int, seed: int = 17, loads: int = 6, per_hour: int = 40) -> tuple[list[dict], list[dict], list[dict], list[datetime]]:
    """(articles, article_indicators, article_entities, load times) of ``n`` reports, about
    ``per_hour`` an hour (so many to a window at 40; months of them, and closed events, at 1)."""
    rng = random.Random(seed)
    places = [(i, k) for i, k, _ in PLACES]
    actors, weapons = ACTORS, WEAPONS
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    span = max(1, n // per_hour)  # hours
    stories: list[dict] = []
    arts, inds, ents = [], [], []
    for i in range(n):
        aid = f"a{i:07d}"
        if stories and rng.random() < 0.55:  # a report of a story already told
            st = rng.choice(stories[-60:])
            pub = st["t"] + timedelta(minutes=rng.randrange(-300, 60 * 48))
            words = list(st["words"])
            for _ in range(rng.choice((0, 1, 2, 5))):  # an edited copy, or a rewrite
                words[rng.randrange(len(words))] = rng.choice(WORDS)
            number = st["number"] if rng.random() < 0.8 else rng.randrange(1, 9)
            url = st["url"] if rng.random() < 0.1 else f"https://x{i % 7}.example/{i}"
            guid = st["guid"] if rng.random() < 0.1 else f"g{i}"
            text = " ".join(words) + f" {number}"
            if rng.random() < 0.1:
                text = st["text"]  # the same content
            ents_i = set(st["ents"]) if rng.random() < 0.7 else set()
            indicator = st["indicator"]
        else:
            pub = t0 + timedelta(minutes=rng.randrange(0, span * 60))
            words = [rng.choice(WORDS) for _ in range(12)]
            number = rng.randrange(1, 9)
            text = " ".join(words) + f" {number}"
            url, guid = f"https://x{i % 7}.example/{i}", f"g{i}"
            indicator = INDICATORS[0] if rng.random() < 0.8 else INDICATORS[1]
            ents_i = set()
            stories.append(dict(t=pub, words=words, number=number, url=url, guid=guid, text=text, ents=ents_i, indicator=indicator))
        # places, actors, weapons, cues: some of each, often none
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            pid, kind = rng.choice(places)
            ents_i.add(("places", pid, kind, "launch" if rng.random() < 0.1 else "target"))
        if rng.random() < 0.35:
            aid_, kind = rng.choice(actors)
            ents_i.add(("actors", aid_, kind, None))
        if rng.random() < 0.5:
            w, kind = rng.choice(weapons)
            ents_i.add(("weapons", w, kind, None))
        if rng.random() < 0.08:
            ents_i.add(("cues", "renewed", "renewed", None))
        if rng.random() < 0.06:
            ents_i.add(("cues", "followup", "followup", None))
        if stories and not stories[-1]["ents"] and stories[-1]["t"] == pub:
            stories[-1]["ents"] = set(ents_i)
        delay = timedelta(minutes=rng.randrange(1, 30)) if rng.random() < 0.9 else timedelta(hours=rng.randrange(12, 24 * 9))
        fetched = pub + delay
        arts.append(dict(article_id=aid, source_id=f"s{i % 13}", guid=guid, url=url, canonical_url=url, title=text[:40],
                         summary="", lang="ar" if i % 2 else "en", published_at=pub, fetched_at=fetched,
                         title_folded=text, text_folded=text, content_hash=hashlib.md5(text.encode()).hexdigest()))
        inds.append(dict(article_id=aid, indicator=indicator, article_published_at=pub))
        if rng.random() < 0.05:  # also matches the other indicator
            inds.append(dict(article_id=aid, indicator=INDICATORS[1] if indicator == INDICATORS[0] else INDICATORS[0], article_published_at=pub))
        # one row per (gazetteer, id), as the table's key wants
        seen = set()
        for g, e, k, role in sorted(ents_i, key=lambda x: (x[0], x[1], x[3] or "")):
            if (g, e) not in seen:
                seen.add((g, e))
                ents.append(dict(article_id=aid, gazetteer=g, entity_id=e, kind=k, role=role, article_published_at=pub))
    last = max(a["fetched_at"] for a in arts)
    first = min(a["fetched_at"] for a in arts)
    times = [first + (last - first) * (k + 1) / loads for k in range(loads)]
    return arts, inds, ents, times


def load_and_assign(db_path: Path, n: int, seed: int = 17, loads: int = 6, per_hour: int = 40) -> None:
    """Write the generated reports into a fresh warehouse in ``loads`` loads (by fetch time),
    assigning events after each, as the pipeline does."""
    import duckdb  # noqa: F401

    from warehouse import db
    from warehouse.events import assign_events

    arts, inds, ents, times = generate(n, seed, loads, per_hour)
    places = hierarchy()
    by_id = {a["article_id"]: a for a in arts}
    with db.connect(db_path) as con:
        done: set[str] = set()
        for t in times:
            batch = [a for a in arts if a["article_id"] not in done and a["fetched_at"] <= t]
            ids = {a["article_id"] for a in batch}
            done |= ids
            _insert(con, "articles", batch)
            _insert(con, "article_indicators", [r for r in inds if r["article_id"] in ids])
            _insert(con, "article_entities", [r for r in ents if r["article_id"] in ids])
            assign_events(con, t, places)
        assert done == set(by_id)


_TYPES = {"published_at": "TIMESTAMPTZ", "fetched_at": "TIMESTAMPTZ", "article_published_at": "TIMESTAMPTZ"}


def _insert(con, table: str, rows: list[dict]) -> None:
    from warehouse.load import bulk_insert

    if rows:
        bulk_insert(con, table, rows, {c: _TYPES.get(c, "VARCHAR") for c in rows[0]})


def membership_md5(db_path: Path) -> str:
    """md5 of the sorted memberships (event, article, how) and of the events (time, first
    seen, title): any change in what assignment decides changes it."""
    from warehouse import db

    with db.connect(db_path, read_only=True) as con:
        links = con.execute("SELECT event_id, article_id, how FROM event_articles ORDER BY ALL").fetchall()
        events = con.execute(
            "SELECT event_id, indicator, first_report_at, first_seen_at, title FROM events ORDER BY ALL").fetchall()
    h = hashlib.md5()
    for row in links:
        h.update(("\x1f".join(map(str, row)) + "\n").encode())
    h.update(b"--events--\n")
    for row in events:
        h.update(("\x1f".join(str(v) if not isinstance(v, datetime) else v.astimezone(timezone.utc).isoformat() for v in row) + "\n").encode())
    return h.hexdigest()


def generated_md5(n: int, tmp: Path, seed: int = 17, per_hour: int = 40) -> str:
    path = tmp / f"gen-{n}-{seed}-{per_hour}.duckdb"
    load_and_assign(path, n, seed, per_hour=per_hour)
    return membership_md5(path)


def bench_feeds_md5(tmp: Path, n_feeds: int, attack_share: float) -> str:
    """The bench's ingest (bench.run._ingest): n generated feeds staged and loaded once."""
    import os

    os.environ.setdefault("MARSAD_ALLOW_PRIVATE_FEEDS", "1")
    from bench.feeds import feed_xml
    from bench.run import _settings
    from marsad import pipeline
    from sources.parse import parse_feed

    d = tmp / f"bench-{n_feeds}-{attack_share}"
    d.mkdir()
    s = _settings(d)
    now = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    for i in range(n_feeds):
        feed = parse_feed(feed_xml(i, attack_share=attack_share), f"bench-{i}", None, now)
        meta = dict(source_id=f"bench-{i}", url="bench", status="ok", started_at=now.isoformat(), finished_at=now.isoformat())
        pipeline.stage(s, meta, feed.articles)
    pipeline.load(s, now, s.classifier())
    return membership_md5(s.warehouse)


def replay_md5(tmp: Path, fixture: Path) -> str:
    import io

    from marsad.replay import replay

    path = tmp / (fixture.stem + ".duckdb")
    replay(fixture, path, poll_interval=900, out=io.StringIO())
    return membership_md5(path)


def main() -> None:
    import argparse
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("--generated", type=int, nargs="*", default=[3000])
    ap.add_argument("--sparse", type=int, nargs="*", default=[3000])
    ap.add_argument("--bench-feeds", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for n in args.generated:
            print(f"generated {n}: {generated_md5(n, tmp)}", flush=True)
        for n in args.sparse:
            print(f"generated {n}, 1 an hour: {generated_md5(n, tmp, per_hour=1)}", flush=True)
        from bench.feeds import CAMPAIGN_SHARE, TYPICAL_SHARE

        for share in (TYPICAL_SHARE, CAMPAIGN_SHARE):
            print(f"bench feeds {args.bench_feeds} x {share}: {bench_feeds_md5(tmp, args.bench_feeds, share)}", flush=True)
        for fx in sorted((ROOT / "tests" / "fixtures").glob("*.jsonl")):
            if fx.stem.startswith(("replay_", "events_")):
                print(f"{fx.name}: {replay_md5(tmp, fx)}", flush=True)


if __name__ == "__main__":
    main()
