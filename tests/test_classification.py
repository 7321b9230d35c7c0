"""Indicator matching quality on real headlines (read from ../shared at run time) and our own fixtures."""
import json
from collections import Counter

import pytest

from alerts.matching import Classifier
from alerts.rules import DEFAULT_INDICATORS
from conftest import CORPORA, TESTS
from marsad.evaluation import evaluate_file


@pytest.fixture(scope="module")
def clf():
    return Classifier.load(DEFAULT_INDICATORS)


def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def score(clf, items, gold):
    """Lenient scoring as the corpus README defines it: predictions in labels | ok are not errors."""
    tp, fp, fn = Counter(), Counter(), Counter()
    flagged_negatives = 0
    for it in items:
        g = gold[it["id"]]
        labels, ok = set(g.get("labels", [])), set(g.get("ok", []))
        pred = {v.indicator for v in clf.classify(it["title"], it.get("summary", ""))}
        for p in pred:
            (tp if p in labels | ok else fp)[p] += 1
        for m in labels - pred:
            fn[m] += 1
        if not labels and pred - ok:
            flagged_negatives += 1
    return tp, fp, fn, flagged_negatives


def test_real_headlines_precision_recall_and_false_alarms(clf):
    root = CORPORA / "rss-captures"
    items = _jsonl(root / "items.jsonl")
    gold = {g["id"]: g for g in _jsonl(root / "labels.jsonl")}
    tp, fp, fn, flagged = score(clf, items, gold)
    negatives = sum(1 for it in items if not gold[it["id"]]["labels"])
    assert negatives > 2000
    assert flagged / negatives < 0.01, f"{flagged} of {negatives} real-news negatives flagged"
    # Scored as the corpus README defines it (judgement-call rows are not misses), as marsad eval
    # does: frames must not cost what the keyword pack had (P 0.99, R 0.91; issue 13).
    total = evaluate_file(clf, root / "items.jsonl", root / "labels.jsonl").total
    print(f"rss-captures: precision {total.precision:.3f} recall {total.recall:.3f}")
    assert total.precision >= 0.99 and total.recall >= 0.91, (total.precision, total.recall, dict(fn))


@pytest.mark.parametrize("lang", ["ar", "en"])
def test_own_fixtures_in_both_languages(clf, lang):
    items = _jsonl(TESTS / "fixtures" / f"classify_{lang}.jsonl")
    gold = {it["id"]: it for it in items}
    tp, fp, fn, flagged = score(clf, items, gold)
    positives = Counter(lab for it in items for lab in it["labels"])
    assert len(positives) == 11, "every indicator has positives in both languages"
    assert flagged == 0 and not fp, dict(fp)
    assert not fn, dict(fn)


def test_spelling_variants_do_not_matter(clf):
    base = "هجوم بطائرة مسيرة على قاعدة عين الاسد التي تضم قوات امريكية"
    variants = [
        "هُجُومٌ بِطَائِرَةٍ مُسَيَّرَةٍ عَلَى قَاعِدَةِ عَيْنِ الأَسَدِ الَّتِي تَضُمُّ قُوَّاتٍ أَمْرِيكِيَّةً",
        "هـجـوم بطائرة مسيّرة على قاعدة عين الأسد التي تضم قوات أمريكية",
        "هجوم بطائره مسيره علي قاعده عين الأسد التي تضم قوات أميركية",
    ]
    expected = [v.indicator for v in clf.classify(base)]
    assert expected == ["militia_attack_us_forces"]
    for v in variants:
        assert [x.indicator for x in clf.classify(v)] == expected, v


def test_explain_shows_terms_and_exclusions(clf):
    (v,) = [v for v in clf.explain("Drone attack targets US troops at Ain al-Asad air base in Iraq") if v.indicator == "militia_attack_us_forces"]
    assert v.matched and "ain_al_asad" in " ".join(v.refs).lower().replace("-", "_")
    recalled = [v for v in clf.explain("A year after the drone attack on Tower 22 that killed three US soldiers, families remember")
                if v.indicator == "militia_attack_us_forces"][0]
    assert not recalled.matched
