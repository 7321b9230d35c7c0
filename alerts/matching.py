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

import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sources.configfile import ConfigError, Document, load_yaml, validate
from sources.normalize import fold

_ARABIC = re.compile(r"[\u0600-\u06FF]")
# Clitics an Arabic word may carry in front: a conjunction, then a preposition and/or the
# article (و ف, then ب ك ل, ال, بال, كال, لل). Forms that carry the article are marked.
_CONJ = ("", "و", "ف")
_PREP = (("", False), ("ب", False), ("ك", False), ("ل", False), ("ال", True), ("بال", True), ("كال", True), ("لل", True))


@dataclass(frozen=True)
class Word:
    text: str
    wild: bool  # ``*``: any continuation


@dataclass(frozen=True)
class Term:
    """One analyst-written term, folded into words."""

    words: tuple[Word, ...]
    arabic: bool  # the first word is Arabic: it may carry clitics
    needs_article: bool  # written with ال: the text must have the article (or لل)


def parse_term(term: str) -> Term:
    words: list[Word] = []
    for raw in term.split():
        wild = raw.endswith("*")
        sub = fold(raw.rstrip("*")).split()  # "al-Asad" folds to two words
        if not sub:
            if wild:
                raise ValueError(f"a lone '*' in term {term!r}")
            continue
        words += [Word(w, False) for w in sub[:-1]] + [Word(sub[-1], wild)]
    if not words:
        raise ValueError(f"empty term {term!r}")
    first = words[0]
    arabic = bool(_ARABIC.match(first.text))
    needs_article = arabic and first.text.startswith("ال") and len(first.text) > 3
    if needs_article:
        words[0] = Word(first.text[2:], first.wild)
    return Term(tuple(words), arabic, needs_article)


def _forms(token: str) -> list[tuple[str, bool, bool]]:
    """(core, has_article, stripped) readings of a token: itself, and for Arabic without clitics."""
    out = [(token, False, False)]
    if not _ARABIC.match(token):
        return out
    for conj in _CONJ:
        if conj and not token.startswith(conj):
            continue
        rest = token[len(conj):]
        for prep, article in _PREP:
            if (conj or prep) and rest.startswith(prep) and len(rest) > len(prep) + 1:
                out.append((rest[len(prep):], article, True))
    return out


class TermIndex:
    """Every term of every group, looked up word by word in one pass over the text."""

    def __init__(self) -> None:
        self.exact: dict[str, list[tuple[int, Term, str | None]]] = {}
        self.prefix: dict[str, list[tuple[int, Term, str | None]]] = {}
        self.prefix_lengths: list[int] = []  # the lengths that occur among wildcard first words
        self.groups = 0
        self._by_token: dict[str, tuple[dict[str, list], list]] = {}

    def new_group(self) -> int:
        self.groups += 1
        return self.groups

    def add(self, group: int, term: Term, ref: str | None) -> None:
        self._by_token.clear()
        first = term.words[0]
        if first.wild:
            self.prefix.setdefault(first.text, []).append((group, term, ref))
            if len(first.text) not in self.prefix_lengths:
                self.prefix_lengths = sorted(self.prefix_lengths + [len(first.text)])
        else:
            self.exact.setdefault(first.text, []).append((group, term, ref))

    def _starting(self, token: str) -> tuple[dict[str, list], list]:
        """Terms whose first word this token can be (clitics and article rules applied),
        split into those whose second word is a plain word (keyed by it) and the rest.
        Cached per token, since news vocabulary repeats."""
        cached = self._by_token.get(token)
        if cached is not None:
            return cached
        by_next: dict[str, list] = {}
        other: list = []
        for core, article, stripped in _forms(token):
            cands = self.exact.get(core, [])
            for k in self.prefix_lengths:
                if k > len(core):
                    break
                more = self.prefix.get(core[:k])
                if more:
                    cands = cands + more
            for entry in cands:
                term = entry[1]
                if (stripped and not term.arabic) or (term.needs_article and not article):
                    continue  # clitics belong to Arabic terms; an ال-term needs the article
                if len(term.words) > 1 and not term.words[1].wild:
                    by_next.setdefault(term.words[1].text, []).append(entry)
                else:
                    other.append(entry)
        cached = (by_next, other)
        if len(self._by_token) < 200_000:
            self._by_token[token] = cached
        return cached

    def hits(self, tokens: list[str]) -> dict[int, list["Hit"]]:
        found: dict[int, dict[tuple[int, int], Hit]] = {}
        n = len(tokens)
        starting = self._starting
        for i, token in enumerate(tokens):
            by_next, other = starting(token)
            if not other and not by_next:  # most words start no term
                continue
            cands = other
            if by_next and i + 1 < n:
                more = by_next.get(tokens[i + 1])
                if more:
                    cands = cands + more
            for group, term, ref in cands:
                words = term.words
                end = i + len(words)
                if end > n or not all(
                    tokens[i + j] == w.text or (w.wild and tokens[i + j].startswith(w.text)) for j, w in enumerate(words[1:], 1)
                ):
                    continue
                g = found.get(group)
                if g is None:
                    g = found[group] = {}
                if (i, end) not in g:
                    g[(i, end)] = Hit("", " ".join(tokens[i:end]), i, ref)
        return {g: sorted(h.values(), key=lambda h: h.position) for g, h in found.items()}


# --------------------------------------------------------------------------- gazetteers


class GazetteerEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    kind: str
    country: str | None = None
    tags: list[str] = Field(default_factory=list)
    en: list[str] = Field(default_factory=list)
    ar: list[str] = Field(default_factory=list)
    within: str | None = None  # places: the id of the enclosing place (alerts/places.py)
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
    def __init__(self, spec: GroupSpec, gaz: Gazetteers, index: TermIndex):
        self.name = spec.name
        self.uid = index.new_group()
        terms: list[tuple[str, str | None]] = [(t, None) for t in list(spec.en) + list(spec.ar)]
        for ref in spec.gazetteer:
            for entry in gaz.resolve(ref):
                terms += [(alias, entry.id) for alias in entry.en + entry.ar]
        for text, ref in terms:
            index.add(self.uid, parse_term(text), ref)

    def hits(self, found: dict[int, list[Hit]]) -> list[Hit]:
        return [Hit(self.name, h.text, h.position, h.ref) for h in found.get(self.uid, ())]


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
    def __init__(self, spec: IndicatorSpec, gaz: Gazetteers, index: TermIndex | None = None):
        self.spec = spec
        self.id = spec.id
        self.index = index or TermIndex()

        def group(g: GroupSpec) -> Group:
            return Group(g, gaz, self.index)

        self.clauses = [([group(g) for g in c.all], c.within, [group(g) for g in c.none]) for c in spec.match]
        self.none = [group(g) for g in spec.none]

    def evaluate(self, folded: str, found: dict[int, list[Hit]] | None = None) -> Verdict:
        if found is None:
            found = self.index.hits(folded.split())
        verdict = Verdict(self.id, False)
        vetoes = [h for g in self.none for h in g.hits(found)]
        for ci, (groups, within, nones) in enumerate(self.clauses):
            per_group = [g.hits(found) for g in groups]
            missing = [g.name for g, hs in zip(groups, per_group) if not hs]
            if missing:
                verdict.near_misses.append(f"clause {ci + 1}: no {', '.join(missing)}")
                continue
            if not _window_ok(per_group, within):
                verdict.near_misses.append(f"clause {ci + 1}: groups not within {within} words")
                continue
            clause_vetoes = vetoes + [h for g in nones for h in g.hits(found)]
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
    """All indicators of a pack; ``classify(title, summary)`` → matched indicator ids.

    The indicators share one term index, so a text is scanned once for all of them."""

    def __init__(self, indicators: list[Indicator], index: TermIndex | None = None, gazetteers: Gazetteers | None = None):
        self.indicators = indicators
        self.index = index or (indicators[0].index if indicators else TermIndex())
        self.gazetteers = gazetteers or Gazetteers()  # event assignment tags places and actors with them

    @classmethod
    def load(cls, directory: str | Path) -> "Classifier":
        directory = Path(directory)
        gaz = Gazetteers.load(directory.parent / "gazetteers") if (directory.parent / "gazetteers").is_dir() else Gazetteers()
        indicators: list[Indicator] = []
        problems: list[str] = []
        seen: dict[str, Path] = {}
        index = TermIndex()
        for path in sorted(directory.glob("*.yaml")):
            try:
                doc: Document = load_yaml(path)
                spec = validate(doc, IndicatorSpec)
                if spec.id != path.stem:
                    raise ConfigError([doc.error(("id",), f"must equal the file name {path.stem!r}")])
                if spec.id in seen:
                    raise ConfigError([doc.error(("id",), f"duplicate indicator id (also in {seen[spec.id]})")])
                seen[spec.id] = path
                indicators.append(_build(doc, spec, gaz, index))
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)
        if not indicators:
            raise ConfigError([f"{directory}:0: (directory): no indicator files (*.yaml)"])
        return cls(indicators, index, gaz)

    @property
    def ids(self) -> list[str]:
        return [i.id for i in self.indicators]

    def explain(self, title: str, summary: str = "") -> list[Verdict]:
        folded = fold(f"{title} . {summary}")
        found = self.index.hits(folded.split())
        return [ind.evaluate(folded, found) for ind in self.indicators]

    def classify(self, title: str, summary: str = "") -> list[Verdict]:
        return self.classify_folded(fold(f"{title} . {summary}"))

    def classify_folded(self, folded: str) -> list[Verdict]:
        """``classify`` of text already folded (``Article.text_folded`` is exactly that)."""
        found = self.index.hits(folded.split())
        # An indicator none of whose clauses has a hit for its first group cannot match.
        return [
            v
            for ind in self.indicators
            if any(groups[0].uid in found for groups, _, _ in ind.clauses)
            for v in (ind.evaluate(folded, found),)
            if v.matched
        ]


def _build(doc: Document, spec: IndicatorSpec, gaz: Gazetteers, index: TermIndex) -> Indicator:
    """Compile, turning bad terms or gazetteer references into file:line errors."""
    try:
        # A bad file makes Classifier.load raise, discarding the shared index: no scratch build needed.
        return Indicator(spec, gaz, index)
    except (KeyError, ValueError, re.error) as exc:
        # Find the first offending group to point at its line.
        for ci, clause in enumerate(spec.match):
            for gi, g in enumerate(clause.all + clause.none):
                key = "all" if gi < len(clause.all) else "none"
                idx = gi if key == "all" else gi - len(clause.all)
                try:
                    Group(g, gaz, TermIndex())
                except (KeyError, ValueError, re.error) as inner:
                    raise ConfigError([doc.error(("match", ci, key, idx), str(inner).strip('"'))]) from None
        for gi, g in enumerate(spec.none):
            try:
                Group(g, gaz, TermIndex())
            except (KeyError, ValueError, re.error) as inner:
                raise ConfigError([doc.error(("none", gi), str(inner).strip('"'))]) from None
        raise ConfigError([doc.error((), str(exc))]) from None
