"""``marsad eval``: precision, recall and F1 of the indicator pack on labelled items.

Items are JSON lines with ``id``, ``title``, ``summary`` and gold ``labels`` (optionally
``ok``: ids that are also acceptable, and ``lang``). Labels may instead come from a
separate file joined by id (``--labels``), as in shared/corpora/rss-captures.
Scoring is lenient in the corpus's sense: a predicted id in ``labels | ok`` is not a
false positive; a missed ``labels`` id is a false negative, except on judgement-call rows
(labels given, a ``note``, and an empty ``ok``: no label would also be defensible).
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from alerts.matching import Classifier
from sources.normalize import guess_language


@dataclass
class Tally:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p and r else (0.0 if p is not None and r is not None else None)


@dataclass
class Report:
    per_indicator: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    per_language: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    items: Counter = field(default_factory=Counter)  # per language
    negatives: Counter = field(default_factory=Counter)
    flagged_negatives: Counter = field(default_factory=Counter)
    misses: list[dict] = field(default_factory=list)  # false negatives and false positives

    @property
    def total(self) -> Tally:
        t = Tally()
        for x in self.per_indicator.values():
            t.tp, t.fp, t.fn = t.tp + x.tp, t.fp + x.fp, t.fn + x.fn
        return t


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not JSON: {exc.msg}") from None
    return out


def evaluate_file(clf: Classifier, items_path: Path, labels_path: Path | None = None) -> Report:
    items = _read_jsonl(items_path)
    gold = {g["id"]: g for g in _read_jsonl(labels_path)} if labels_path else {}
    rep = Report()
    for n, it in enumerate(items, 1):
        g = gold.get(it.get("id"), it)
        if "labels" not in g:
            raise ValueError(f"{labels_path or items_path}: item {it.get('id')!r} (line {n}) has no gold 'labels'")
        labels, ok = set(g["labels"]), set(g.get("ok") or [])
        title, summary = it.get("title") or "", it.get("summary") or ""
        lang = it.get("lang") or guess_language(f"{title} {summary}")
        pred = {v.indicator for v in clf.classify(title, summary)}
        rep.items[lang] += 1
        if not labels:
            rep.negatives[lang] += 1
            if pred - ok:
                rep.flagged_negatives[lang] += 1
        for ind in pred:
            hit = ind in labels | ok
            for t in (rep.per_indicator[ind], rep.per_language[lang]):
                if hit:
                    t.tp += 1
                else:
                    t.fp += 1
            if not hit:
                rep.misses.append({"id": it.get("id"), "lang": lang, "kind": "false_positive", "indicator": ind, "title": title})
        judgement_call = bool(labels) and bool(g.get("note")) and not ok
        for ind in labels - pred:
            if judgement_call:
                continue
            rep.per_indicator[ind].fn += 1
            rep.per_language[lang].fn += 1
            rep.misses.append({"id": it.get("id"), "lang": lang, "kind": "missed", "indicator": ind, "title": title})
    return rep


def _fmt(x: float | None) -> str:
    return "   -" if x is None else f"{x:.2f}"


def print_report(rep: Report, out: IO[str], show_misses: bool = True) -> None:
    def table(title: str, rows: dict[str, Tally]) -> None:
        out.write(f"\n{title:<28} {'TP':>4} {'FP':>4} {'FN':>4} {'P':>5} {'R':>5} {'F1':>5}\n")
        for key in sorted(rows):
            t = rows[key]
            out.write(f"{key:<28} {t.tp:>4} {t.fp:>4} {t.fn:>4} {_fmt(t.precision):>5} {_fmt(t.recall):>5} {_fmt(t.f1):>5}\n")

    table("indicator", rep.per_indicator)
    t = rep.total
    out.write(f"{'ALL':<28} {t.tp:>4} {t.fp:>4} {t.fn:>4} {_fmt(t.precision):>5} {_fmt(t.recall):>5} {_fmt(t.f1):>5}\n")
    table("language", rep.per_language)
    out.write("\nnegatives flagged (false alarms on items with no label):\n")
    for lang in sorted(rep.items):
        neg, flagged = rep.negatives[lang], rep.flagged_negatives[lang]
        rate = f"{flagged / neg:.2%}" if neg else "-"
        out.write(f"  {lang}: {flagged} of {neg} ({rate}); {rep.items[lang]} items in all\n")
    if show_misses and rep.misses:
        out.write("\nmisses:\n")
        for m in rep.misses:
            out.write(f"  {m['kind']:<14} {m['indicator']:<26} {m['id']} [{m['lang']}] {m['title'][:100]}\n")
