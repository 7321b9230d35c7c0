"""Declarative keyword matching for indicators, in Arabic and English.

An indicator file (``alerts/indicators/<id>.yaml``) says when an article *matches*:

```yaml
id: militia_attack_us_forces
name: Militia attack on US forces
definition: A rocket, drone, missile, IED or gun attack on US forces ... (one line)
match:                      # a list of clauses; the article matches if any clause does
  - all:                    # every group of the clause must match ...
      - name: attack
        en: [rocket*, drone attack*, "attack* on"]
        ar: [صاروخ*, هجوم*]
      - name: us_site
        gazetteer: [places:us_site]      # every place tagged us_site, both languages
    within: 25              # ... with one hit of each group inside 25 words (optional)
    none: [...]             # exclusions for this clause only (optional)
none:                       # exclusions for the whole indicator: any hit vetoes the match
  - name: recalled
    en: [anniversary, "since february"]
    ar: [ذكرى]
```

Terms are written naturally (diacritics, hamza forms, tatweel, case do not matter: terms
and text are folded alike). A word ending in ``*`` matches any continuation. The first word
of an Arabic term also matches behind the clitics و ف ب ك ل and the article ال (so
``صاروخ`` matches والصاروخ, بصاروخ, للصاروخ).
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sources.configfile import ConfigError, Document, load_yaml, validate
from sources.normalize import fold

_ARABIC = re.compile(r"[\u0600-\u06FF]")
# Optional conjunction, then preposition and/or article, before an Arabic word.
_AR_CLITICS = r"(?:[وف]?(?:[بك]?ال|لل|[بكل])?)"
_AR_CLITICS_WITH_ARTICLE = r"(?:[وف]?(?:[بك]?ال|لل))"


def term_pattern(term: str) -> str:
    """Regex (over folded text) for one analyst-written term."""
    words: list[str] = []
    for raw in term.split():
        wild = raw.endswith("*")
        sub = fold(raw.rstrip("*")).split()  # "al-Asad" folds to two words
        if sub and wild:
            sub[-1] += "*"
        words.extend(sub)
    if not words:
        raise ValueError(f"empty term {term!r}")
    parts = []
    for i, word in enumerate(words):
        wild = word.endswith("*")
        core = re.escape(word.rstrip("*"))
        if not core:
            raise ValueError(f"a lone '*' in term {term!r}")
        piece = core + (r"\w*" if wild else "")
        if i == 0 and _ARABIC.match(word):
            if word.startswith("ال") and len(word.rstrip("*")) > 3:
                piece = _AR_CLITICS_WITH_ARTICLE + re.escape(word.rstrip("*")[2:]) + (r"\w*" if wild else "")
            else:
                piece = _AR_CLITICS + piece
        parts.append(piece)
    return " ".join(parts)


def compile_terms(terms: list[str]) -> re.Pattern[str] | None:
    if not terms:
        return None
    # Longest first so that a phrase wins over its own first word in the reported hit.
    alts = sorted({term_pattern(t) for t in terms}, key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(alts) + r")(?!\w)")


# --------------------------------------------------------------------------- gazetteers


class GazetteerEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    kind: str
    country: str | None = None
    tags: list[str] = Field(default_factory=list)
    en: list[str] = Field(default_factory=list)
    ar: list[str] = Field(default_factory=list)
    notes: str | None = None


class GazetteerFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entries: list[GazetteerEntry]


@dataclass
class Gazetteers:
    """Place and actor names (``alerts/gazetteers/<name>.yaml``), referenced as ``<name>:<tag>``."""

    entries: dict[str, list[GazetteerEntry]] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> "Gazetteers":
        out: dict[str, list[GazetteerEntry]] = {}
        problems: list[str] = []
        for path in sorted(directory.glob("*.yaml")):
            try:
                doc = load_yaml(path)
                out[path.stem] = validate(doc, GazetteerFile).entries
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)
        return cls(out)

    def resolve(self, ref: str) -> list[GazetteerEntry]:
        """``places:us_site`` → the entries of places.yaml tagged (or with id or kind) us_site."""
        name, _, tag = ref.partition(":")
        if name not in self.entries:
            raise KeyError(f"no gazetteer {name!r} (have {', '.join(sorted(self.entries)) or 'none'})")
        hits = [e for e in self.entries[name] if not tag or tag in e.tags or tag == e.id or tag == e.kind]
        if not hits:
            raise KeyError(f"gazetteer {name!r} has no entry tagged {tag!r}")
        return hits


# --------------------------------------------------------------------------- indicator files


class GroupSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    en: list[str] = Field(default_factory=list)
    ar: list[str] = Field(default_factory=list)
    gazetteer: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> "GroupSpec":
        if not (self.en or self.ar or self.gazetteer):
            raise ValueError("a group needs terms (en, ar) or gazetteer references")
        return self


class ClauseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    all: list[GroupSpec] = Field(min_length=1)
    within: int | None = Field(default=None, ge=1, le=400)
    none: list[GroupSpec] = Field(default_factory=list)


class IndicatorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    name: str
    definition: str
    match: list[ClauseSpec] = Field(min_length=1)
    none: list[GroupSpec] = Field(default_factory=list)


@dataclass
class Hit:
    group: str
    text: str  # the folded words that matched
    position: int  # word index in the folded text
    ref: str | None = None  # gazetteer entry id, when the hit came from a gazetteer


class Group:
    def __init__(self, spec: GroupSpec, gaz: Gazetteers):
        self.name = spec.name
        self.refs: dict[str, str] = {}  # folded alias -> gazetteer entry id
        terms = list(spec.en) + list(spec.ar)
        for ref in spec.gazetteer:
            for entry in gaz.resolve(ref):
                for alias in entry.en + entry.ar:
                    terms.append(alias)
                    self.refs[fold(alias)] = entry.id
        self.regex = compile_terms(terms)
        self._ref_regexes = [(re.compile(r"(?<!\w)" + term_pattern(a) + r"(?!\w)"), eid) for a, eid in self.refs.items()]

    def hits(self, text: str, starts: list[int]) -> list[Hit]:
        out = []
        if self.regex is None:
            return out
        for m in self.regex.finditer(text):
            ref = None
            if self.refs:
                for rx, eid in self._ref_regexes:
                    if rx.fullmatch(m.group(0)):
                        ref = eid
                        break
            out.append(Hit(self.name, m.group(0), bisect.bisect_right(starts, m.start()) - 1, ref))
        return out


def _window_ok(per_group: list[list[Hit]], within: int | None) -> bool:
    if within is None or len(per_group) < 2:
        return True
    events = sorted((h.position, gi) for gi, hits in enumerate(per_group) for h in hits)
    need = len(per_group)
    counts = [0] * need
    have = 0
    lo = 0
    for pos, gi in events:
        counts[gi] += 1
        if counts[gi] == 1:
            have += 1
        while have == need:
            if pos - events[lo][0] <= within:
                return True
            lg = events[lo][1]
            counts[lg] -= 1
            if counts[lg] == 0:
                have -= 1
            lo += 1
    return False


@dataclass
class Verdict:
    indicator: str
    matched: bool
    clause: int | None = None  # index of the clause that matched
    hits: list[Hit] = field(default_factory=list)  # hits of the matching clause's groups
    vetoes: list[Hit] = field(default_factory=list)  # exclusions that applied
    near_misses: list[str] = field(default_factory=list)  # why clauses failed (for explain)

    @property
    def refs(self) -> list[str]:
        return sorted({h.ref for h in self.hits if h.ref})


class Indicator:
    def __init__(self, spec: IndicatorSpec, gaz: Gazetteers):
        self.spec = spec
        self.id = spec.id
        self.clauses = [
            ([Group(g, gaz) for g in c.all], c.within, [Group(g, gaz) for g in c.none]) for c in spec.match
        ]
        self.none = [Group(g, gaz) for g in spec.none]

    def evaluate(self, folded: str) -> Verdict:
        starts = [0] + [i + 1 for i, ch in enumerate(folded) if ch == " "]
        verdict = Verdict(self.id, False)
        vetoes = [h for g in self.none for h in g.hits(folded, starts)]
        for ci, (groups, within, nones) in enumerate(self.clauses):
            per_group = [g.hits(folded, starts) for g in groups]
            missing = [g.name for g, hs in zip(groups, per_group) if not hs]
            if missing:
                verdict.near_misses.append(f"clause {ci + 1}: no {', '.join(missing)}")
                continue
            if not _window_ok(per_group, within):
                verdict.near_misses.append(f"clause {ci + 1}: groups not within {within} words")
                continue
            clause_vetoes = vetoes + [h for g in nones for h in g.hits(folded, starts)]
            if clause_vetoes:
                verdict.vetoes = clause_vetoes
                verdict.hits = [h for hs in per_group for h in hs]
                verdict.clause = ci
                verdict.near_misses.append(f"clause {ci + 1}: excluded by {', '.join(sorted({h.group for h in clause_vetoes}))}")
                continue
            verdict.matched = True
            verdict.clause = ci
            verdict.hits = [h for hs in per_group for h in hs]
            verdict.vetoes = []
            return verdict
        return verdict


class Classifier:
    """All indicators of a pack; ``classify(title, summary)`` → matched indicator ids."""

    def __init__(self, indicators: list[Indicator]):
        self.indicators = indicators
        self.gazetteers = Gazetteers()

    @classmethod
    def load(cls, directory: str | Path) -> "Classifier":
        directory = Path(directory)
        gaz = Gazetteers.load(directory.parent / "gazetteers") if (directory.parent / "gazetteers").is_dir() else Gazetteers()
        indicators: list[Indicator] = []
        problems: list[str] = []
        seen: dict[str, Path] = {}
        for path in sorted(directory.glob("*.yaml")):
            try:
                doc: Document = load_yaml(path)
                spec = validate(doc, IndicatorSpec)
                if spec.id != path.stem:
                    raise ConfigError([doc.error(("id",), f"must equal the file name {path.stem!r}")])
                if spec.id in seen:
                    raise ConfigError([doc.error(("id",), f"duplicate indicator id (also in {seen[spec.id]})")])
                seen[spec.id] = path
                indicators.append(_build(doc, spec, gaz))
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)
        if not indicators:
            raise ConfigError([f"{directory}:0: (directory): no indicator files (*.yaml)"])
        out = cls(indicators)
        out.gazetteers = gaz  # event assignment tags places and actors with the same names
        return out

    @property
    def ids(self) -> list[str]:
        return [i.id for i in self.indicators]

    def explain(self, title: str, summary: str = "") -> list[Verdict]:
        folded = fold(f"{title} . {summary}")
        return [ind.evaluate(folded) for ind in self.indicators]

    def classify(self, title: str, summary: str = "") -> list[Verdict]:
        return [v for v in self.explain(title, summary) if v.matched]


def _build(doc: Document, spec: IndicatorSpec, gaz: Gazetteers) -> Indicator:
    """Compile, turning bad terms or gazetteer references into file:line errors."""
    try:
        return Indicator(spec, gaz)
    except (KeyError, ValueError, re.error) as exc:
        # Find the first offending group to point at its line.
        for ci, clause in enumerate(spec.match):
            for gi, g in enumerate(clause.all + clause.none):
                key = "all" if gi < len(clause.all) else "none"
                idx = gi if key == "all" else gi - len(clause.all)
                try:
                    Group(g, gaz)
                except (KeyError, ValueError, re.error) as inner:
                    raise ConfigError([doc.error(("match", ci, key, idx), str(inner).strip('"'))]) from None
        for gi, g in enumerate(spec.none):
            try:
                Group(g, gaz)
            except (KeyError, ValueError, re.error) as inner:
                raise ConfigError([doc.error(("none", gi), str(inner).strip('"'))]) from None
        raise ConfigError([doc.error((), str(exc))]) from None
