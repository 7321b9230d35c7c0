"""``marsad dedupe-eval``: how well Marsad counts events, measured on labelled data.

* A labelled fixture (JSON lines in the ``marsad replay`` format plus ``"event"``: the id of
  the real-world occurrence the item reports) is replayed through the real pipeline into a
  scratch warehouse; then every pair of items is scored: same gold event vs linked to a
  common Marsad event. Pairwise precision and recall, and the gold and predicted event
  counts, are printed as one JSON object.
* ``--ans DIR`` scores the near-duplicate test alone (``warehouse.neardup``) on the ANS
  stance pairs of real Arabic headlines: 'agree' (paraphrase) pairs should be near-duplicates,
  'disagree' (look-alike) and 'other' pairs should not.
"""
from __future__ import annotations

import csv
import io
import json
import tempfile
from itertools import combinations
from pathlib import Path

from marsad.replay import ReplayError, read_items, replay
from sources.normalize import fold
from warehouse import db, neardup


def _prf(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return {"precision": round(p, 3), "recall": round(r, 3), "f1": round(2 * p * r / (p + r), 3) if p + r else 0.0,
            "tp": tp, "fp": fp, "fn": fn}


def gold_labels(path: Path) -> dict[str, str]:
    labels = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                obj = json.loads(line)
                if not obj.get("event"):
                    raise ReplayError(f"{path}:{n}: missing event (the gold event label)")
                labels[str(obj["id"])] = str(obj["event"])
    return labels


def evaluate_fixture(path: Path, poll_interval: int = 900) -> dict:
    """Replay the fixture into a scratch warehouse and score Marsad's events pairwise."""
    path = Path(path)
    read_items(path)  # the replay format's own checks, with file:line errors
    gold = gold_labels(path)
    with tempfile.TemporaryDirectory(prefix="marsad-dedupe-") as tmp:
        db_path = Path(tmp) / "eval.duckdb"
        replay(path, db_path, poll_interval=poll_interval, out=io.StringIO())
        with db.connect(db_path, read_only=True) as con:
            rows = con.execute(
                "SELECT a.guid, ea.event_id, ea.how FROM event_articles ea JOIN articles a USING (article_id)"
            ).fetchall()
    predicted: dict[str, set[str]] = {}
    how: dict[str, int] = {}
    for guid, event_id, h in rows:
        predicted.setdefault(guid, set()).add(event_id)
        how[h] = how.get(h, 0) + 1
    tp = fp = fn = 0
    for a, b in combinations(sorted(gold), 2):
        same_gold = gold[a] == gold[b]
        same_pred = bool(predicted.get(a, set()) & predicted.get(b, set()))
        tp += same_gold and same_pred
        fp += same_pred and not same_gold
        fn += same_gold and not same_pred
    return {
        "file": str(path),
        "items": len(gold),
        "items_in_events": sum(1 for g in gold if g in predicted),
        "gold_events": len(set(gold.values())),
        "marsad_events": len({e for es in predicted.values() for e in es}),
        "pairwise": _prf(tp, fp, fn),
        "joined_by": dict(sorted(how.items())),
    }


def ans_pairs(directory: Path, splits: tuple[str, ...] = ("test",)) -> list[tuple[str, str, str]]:
    out = []
    for split in splits:
        with open(Path(directory) / f"stance-{split}.csv", encoding="utf-8", newline="") as fh:
            out += [(r["s1"], r["s2"], r["stance"]) for r in csv.DictReader(fh)]
    return out


def evaluate_ans(directory: Path, splits: tuple[str, ...] = ("test",), threshold: float = neardup.THRESHOLD) -> dict:
    """Near-duplicate precision and recall of "same story" on ANS pairs, with and without
    the same-claim guard (numbers and negations)."""
    pairs = ans_pairs(directory, splits)
    counts = {"text_only": [0, 0, 0], "with_guard": [0, 0, 0]}
    for s1, s2, stance in pairs:
        a, b = fold(s1), fold(s2)
        sim = neardup.similarity(neardup.sketch(a), neardup.sketch(b))
        same = stance == "agree"
        for name, pred in (("text_only", sim >= threshold), ("with_guard", sim >= threshold and neardup.same_claim(a, b))):
            c = counts[name]
            c[0] += pred and same
            c[1] += pred and not same
            c[2] += same and not pred
    return {
        "corpus": str(directory),
        "splits": list(splits),
        "pairs": len(pairs),
        "agree": sum(1 for p in pairs if p[2] == "agree"),
        "threshold": threshold,
        **{name: _prf(*c) for name, c in counts.items()},
    }
