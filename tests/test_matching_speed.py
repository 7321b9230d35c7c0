"""The fast paths of the term index and the frame reader find exactly what a plain scan finds.

``TermIndex.hits`` resolves the terms a pair of words starts once and caches that plan per
(word, next word); ``FrameReader._mentions`` checks overlaps per category. These tests run
the plain algorithms beside them (written out here) over real and fixture headlines read at
run time, for every index Marsad builds: the indicators', the frame lexicon's and the entity
tagger's. Any difference in a hit, its position, its reference or its order fails."""
from __future__ import annotations

import csv
import json
from dataclasses import astuple

import pytest

from alerts.entities import EntityTagger
from alerts.matching import Classifier, Hit, TermIndex, parse_term
from alerts.rules import DEFAULT_INDICATORS
from conftest import CORPORA, TESTS
from sources.normalize import fold


def _plain_hits(index: TermIndex, tokens: list[str]) -> dict[int, list[tuple]]:
    """Every term that starts at each word (``_starting``: clitics and article rules applied),
    checked word by word: the index's hits as (text, position, ref), per group, in order."""
    found: dict[int, dict[tuple[int, int], tuple]] = {}
    n = len(tokens)
    for i, token in enumerate(tokens):
        by_next, other = index._starting(token)
        cands = list(other)
        if i + 1 < n:
            cands += by_next.get(tokens[i + 1], [])
        for group, term, ref in cands:
            end = i + len(term.words)
            if end > n:
                continue
            if all(tokens[i + j] == w.text or (w.wild and tokens[i + j].startswith(w.text)) for j, w in enumerate(term.words)
                   if j > 0):
                found.setdefault(group, {}).setdefault((i, end), (" ".join(tokens[i:end]), i, ref))
    return {g: sorted(h.values(), key=lambda t: t[1]) for g, h in found.items()}


def _as_tuples(found: dict[int, list[Hit]]) -> dict[int, list[tuple]]:
    return {g: [(h.text, h.position, h.ref) for h in hs] for g, hs in found.items()}


def _texts() -> list[tuple[str, str]]:
    out = []
    for path in [CORPORA / "rss-captures" / "items.jsonl", CORPORA / "dev-headlines" / "headlines.jsonl",
                 *sorted((TESTS / "fixtures").glob("*.jsonl"))]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                if r.get("title"):
                    out.append((r["title"], r.get("summary") or ""))
    with open(CORPORA / "ans" / "stance-dev.csv", encoding="utf-8") as fh:
        out += [(r["s1"], r["s2"]) for r in csv.DictReader(fh)]
    return out


@pytest.fixture(scope="module")
def clf():
    return Classifier.load(DEFAULT_INDICATORS)


@pytest.fixture(scope="module")
def texts():
    items = _texts()
    assert len(items) > 3000  # the corpora are there: an empty loop would pass anything
    return items


def test_term_index_hits_equal_a_plain_scan_for_every_index(clf, texts):
    indexes = {"indicators": clf.index, "frames": clf.frames.index, "entities": EntityTagger(clf.gazetteers)._index}
    compared = 0
    for name, index in indexes.items():
        for title, summary in texts:
            tokens = fold(f"{title} . {summary}").split()
            got = index.hits(tokens)
            assert _as_tuples(got) == _plain_hits(index, tokens), (name, title)
            assert _as_tuples(index.hits(tokens)) == _as_tuples(got)  # cached plans read the same
            compared += bool(got)
    assert compared > 3000


def test_first_hit_of_a_span_wins_in_index_order():
    """Two terms of one group covering the same words: the first found keeps its reference,
    and a group's hits at one position stay in the order their terms were found."""
    index = TermIndex()
    g = index.new_group()
    for text, ref in [("drone*", "a"), ("drone attack", "b"), ("drones", "c"), ("drone attack*", "d"), ("us base", None)]:
        index.add(g, parse_term(text), ref)
    tokens = "drones attack us base and a drone attacks".split()
    got = index.hits(tokens)
    assert _as_tuples(got) == _plain_hits(index, tokens)
    # "drones": the exact term before the wildcard one; at "drone attacks" the terms whose first
    # word is exact ("drone attack*") come before the wildcard ones ("drone*")
    assert _as_tuples(got)[g] == [("drones", 0, "c"), ("us base", 2, None), ("drone attacks", 6, "d"), ("drone", 6, "a")]
    index.add(g, parse_term("attack* us base"), "e")  # adding a term drops the cached plans
    assert ("attack us base", 1, "e") in _as_tuples(index.hits(tokens))[g]


def test_frames_mentions_keep_the_longest_per_category(clf, texts):
    """The frame reader's mentions over real headlines equal the plain rule: a mention inside a
    longer one of its category is dropped, and a repeat of the same span and class too."""
    reader = clf.frames
    checked = 0
    for title, summary in texts[:1500]:
        t, s = fold(title).split(), fold(summary).split()
        found = reader.index.hits(t + s)
        for tokens, lo in ((t, 0), (s, len(t))):
            got = [astuple(m) for m in reader._mentions(tokens, found, lo)]
            assert got == [astuple(m) for m in _plain_mentions(reader, tokens, found, lo)], title
            checked += bool(got)
    assert checked > 500


def _plain_mentions(reader, tokens, found, lo):
    """The mentions rule written plainly: every kept mention compared with every other."""
    from alerts.frames import _absorb_flags, _is_arabic, _Mention

    hi = lo + len(tokens)
    out = []
    for uid, hits in found.items():
        cat, cls, form, place = reader._groups[uid]
        for h in hits:
            n = len(h.text.split())
            if lo <= h.position and h.position + n <= hi:
                start = h.position - lo
                out.append(_Mention(start, start + n, cat, cls, h.text, h.ref, form, _is_arabic(h.text), place))
    out.sort(key=lambda m: (m.start, -(m.end - m.start)))
    kept = []
    for m in out:
        if any(k.cat == m.cat and k.start <= m.start and m.end <= k.end and (k.end - k.start) > (m.end - m.start) for k in kept):
            continue
        if any(k.cat == m.cat and k.start == m.start and k.end == m.end and k.cls == m.cls for k in kept):
            continue
        kept.append(m)
    return _absorb_flags(kept)  # unchanged by the faster overlap check


def test_texts_no_indicator_can_start_in_classify_to_nothing(clf, texts):
    """``TermIndex.starts_any`` is a necessary condition: where it says no term of the groups
    starts, the full scan finds no hit of them; and the classifier, which skips the scan for
    such texts, returns what the full scan's eligibility rule returns for every text."""
    groups = [clf._triggers, *(ind.first_groups for ind in clf.indicators)]
    skipped = 0
    for title, summary in texts:
        tokens = fold(f"{title} . {summary}").split()
        found = clf.index.hits(tokens)
        for g in groups:
            if not clf.index.starts_any(tokens, g):
                assert g.isdisjoint(found), title
        if not clf.index.starts_any(tokens, clf._triggers):
            skipped += 1
            assert not [ind for ind in clf.indicators
                        if not ind.first_groups.isdisjoint(found) or (ind.accepts_frames and not ind.all_groups.isdisjoint(found))]
            assert clf.classify(title, summary) == []
    assert 1000 < skipped < len(texts)  # both paths taken
