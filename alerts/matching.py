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
``صاروخ`` matches والصاروخ, بصاروخ, للصاروخ), and with a possessive pronoun behind
(``إصابة`` matches إصابتها). A group's ``ar_verbs`` lists Arabic verbs as lemmas, "past
present" in the 3rd person masculine (``"استهدف يستهدف"``): every person, gender and number
of both tenses matches (استهدفت، استهدفوا، تستهدفان، يستهدفون ...).

Frames and predicates
---------------------
Keywords say what an article talks about; they cannot say who did what to whom, or when.
``alerts/frames.py`` reads each article into **event frames** (vocabulary:
``alerts/frames.yaml``): an action (``attack``, ``kill``, ``intercept``, ``seize``, ``threat``,
``denial``, ``suspension``, ``talks``, ``deployment``; ``training``, ``visit``, ``handover``,
``withdrawal``, ``sport`` ... which are not attacks), its **actor** and **target** (party
classes: ``us``, ``israel``, ``iran_state``, ``militia``, ``hezbollah``, ``houthi``, ``fighters``,
``isis``, ``turkey``, ``kurdish``, ``iraqi_state``, ``gulf_state``, ``shipping``, ``warship``;
a place is a party: a US base is ``us``), the places with their role (``target`` or
``launch``), and a **modality**: ``new``, ``intercepted``, ``background`` (a recent act given
as the reason: "after rockets hit the base") or one that is not a new act: ``cause`` ("in
retaliation for the attack"), ``threat``, ``future``, ``hypothetical``, ``denial``,
``suspension``, ``recalled``, ``past``, ``pause``, ``foiled``, ``non_act``. The title decides;
the summary when the title has no frame, or fills an actor or target it leaves open.

An indicator's ``frame`` block is a predicate over those frames:

```yaml
frame:
  actions: [attack, kill, intercept, seize]   # the frames this indicator is about
  actor: [militia, hezbollah, fighters]        # accepted actors (a known other actor contradicts)
  target: [us]                                 # accepted targets
  actor_not: []  target_not: []                # or: classes that contradict
  modality: [new, intercepted, background]     # the default
  unclaimed: true       # an unknown or denying author still counts (militia attacks)
  accept: false         # true: a frame naming actor and target as required matches alone
  overrides: [us_is_attacker]   # clause exclusions that stood in for roles: a title frame naming
                                # this indicator's actor or target overrides them
  other_title: reject   # a keyword match whose title tells only of other actions is rejected
```

A keyword match stands when a frame of the deciding text with one of ``actions`` fits every
slot (unknown slots never contradict); it is rejected when every such frame contradicts one
("frame: actor us"), or when the title tells only of something else. ``marsad explain``
prints the frames, their deciding phrases and what the predicate did. Worked examples:

* "US drone strike kills Kataib Hezbollah commander in Baghdad": ``us —attack→ militia``.
  ``militia_attack_us_forces`` (actor must be a militia, target the US) rejects it;
  ``us_strike_militia`` (actor ``us``, target a militia) keeps it.
* "غارة أمريكية تقتل قياديا في كتائب حزب الله": the nationality on the attack noun (غارة
  أمريكية) names the actor; the same two verdicts follow.
* "Coalition advisers train Iraqi units in counter-drone defence at Ain al-Asad": the title's
  action is ``training``; a drone and a base in one sentence are not an attack.
* "مقتل ضابطين في الحرس الثوري بغارة إسرائيلية قرب دمشق": ``israel —kill→ iran_state``
  (مقتل X: X is the victim), so ``israel_strike_iran_assets`` matches.
* "كتائب حزب الله تنفي علاقتها بقصف مطار أربيل الشهر الماضي": ``الشهر الماضي`` dates the clause:
  ``past``, not a new attack. "Kataib Hezbollah denies carrying out drone attack on Erbil
  airport": the attack is new, denied by a militia; an unclaimed attack still counts.
* "Rockets fired from Nineveh Plains at Erbil airport": Nineveh Plains is a ``launch`` place,
  Erbil airport the ``target``.

No exclusion may name a person, an operation or a date: the frames tell new from old.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import compress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from alerts.frames import DEFAULT_LEXICON, MODALITIES, Frame, FrameReader, arabic_verb_forms
from sources.configfile import ConfigError, Document, load_yaml, validate
from sources.normalize import fold

_ARABIC = re.compile(r"[\u0600-\u06FF]")
# Clitics an Arabic word may carry in front: a conjunction, then a preposition and/or the
# article (و ف, then ب ك ل, ال, بال, كال, لل). Forms that carry the article are marked.
_CONJ = ("", "و", "ف")
# Possessive pronouns an Arabic noun may carry behind: ها هم هما هن نا (ه alone is also a
# folded taa marbuta, so it is not stripped).
_SUFFIXES = ("هما", "ها", "هم", "هن", "نا")
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
    """(core, has_article, stripped) readings of a token: itself, and for Arabic without clitics
    in front and without a possessive pronoun behind (إصابتها → إصابة, قواتهم → قوات)."""
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
    for core, article, _ in list(out):
        for suffix in _SUFFIXES:
            if core.endswith(suffix) and len(core) - len(suffix) >= 3 and not article:
                base = core[: -len(suffix)]
                out.append((base, False, True))
                if base.endswith("ت"):  # taa marbuta becomes ت before a pronoun (folded ة is ه)
                    out.append((base[:-1] + "ه", False, True))
    return out


class TermIndex:
    """Every term of every group, looked up word by word in one pass over the text."""

    def __init__(self) -> None:
        self.exact: dict[str, list[tuple[int, Term, str | None]]] = {}
        self.prefix: dict[str, list[tuple[int, Term, str | None]]] = {}
        self.prefix_lengths: list[int] = []  # the lengths that occur among wildcard first words
        self.groups = 0
        self._by_token: dict[str, tuple[dict[str, list], list]] = {}
        self._live: dict[str, bool] = {}  # token -> can it start a term at all
        self._pairs: dict[tuple[str, str | None], tuple] = {}  # (token, next token) -> resolved plan
        # groups -> (token -> can a term of them start at it, (token, next) -> does one start there)
        self._starts: dict[frozenset[int], tuple[dict[str, bool], dict[tuple[str, str | None], bool]]] = {}

    def new_group(self) -> int:
        self.groups += 1
        return self.groups

    def add(self, group: int, term: Term, ref: str | None) -> None:
        self._by_token.clear()
        self._live.clear()
        self._pairs.clear()
        self._starts.clear()
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

    def _plan(self, token: str, nxt: str | None) -> tuple:
        """The terms that start at a word ``token`` followed by ``nxt`` (None: the last word), in
        the order ``_starting`` gives them: ``(group, words, text, ref)`` where a term of one or
        two words is decided by the pair alone (``text``: the words it matched), and a longer one
        (``text`` None, ``ref`` then ``(words, ref)``) still has its words from the third on to
        check. Cached per pair, since news vocabulary repeats ("us forces", "drone attack")."""
        by_next, other = self._starting(token)
        cands = other
        if by_next and nxt is not None:
            more = by_next.get(nxt)
            if more:
                cands = cands + more
        plan = []
        decided: set[tuple[int, int]] = set()  # (group, words) of the one- and two-word terms planned
        for group, term, ref in cands:
            words = term.words
            if len(words) > 1:
                w = words[1]
                if nxt is None or not (nxt == w.text or (w.wild and nxt.startswith(w.text))):
                    continue
                if len(words) > 2:  # ``ref`` travels with the words still to check
                    plan.append((group, len(words), None, (words, ref)))
                    continue
            if (group, len(words)) in decided:
                continue  # the same words for the same group: the first term found keeps them
            decided.add((group, len(words)))
            plan.append((group, len(words), token if len(words) == 1 else f"{token} {nxt}", ref))
        out = tuple(plan)
        if len(self._pairs) < 100_000:  # bounded: a long-lived worker meets ever new word pairs
            self._pairs[(token, nxt)] = out
        return out

    def starts_any(self, tokens: list[str], groups: frozenset[int]) -> bool:
        """Whether a term of one of ``groups`` can start at some word of ``tokens``, decided on
        the word and the next as ``hits`` plans them (its longer terms not checked further): a
        text where none can has no hit of these groups, and no hit need be built to know it."""
        cache = self._starts.get(groups)
        if cache is None:
            cache = self._starts[groups] = ({}, {})
        by_word, by_pair = cache
        flags = list(map(by_word.get, tokens))
        if None in flags:
            for i, token in enumerate(tokens):
                if flags[i] is None:
                    by_next, other = self._starting(token)
                    flags[i] = any(e[0] in groups for e in other) or any(e[0] in groups for es in by_next.values() for e in es)
                    if len(by_word) < 200_000:
                        by_word[token] = flags[i]
        n = len(tokens)
        for i in compress(range(n), flags):
            key = (tokens[i], tokens[i + 1] if i + 1 < n else None)
            found = by_pair.get(key)
            if found is None:
                plan = self._pairs.get(key)
                if plan is None:
                    plan = self._plan(*key)
                found = any(p[0] in groups for p in plan)
                if len(by_pair) < 100_000:
                    by_pair[key] = found
            if found:
                return True
        return False

    def hits(self, tokens: list[str]) -> dict[int, list["Hit"]]:
        """Each group's hits in ``tokens``, by position; one per group and span of words."""
        found: dict[int, list[Hit]] = {}
        n = len(tokens)
        live = self._live
        pairs = self._pairs
        # Most words start no term: which do is looked up for all words at once (in C), and
        # only those are visited.
        flags = list(map(live.get, tokens))
        if None in flags:
            for i, token in enumerate(tokens):
                if flags[i] is None:
                    by_next, other = self._starting(token)
                    flags[i] = bool(by_next or other)
                    if len(live) < 200_000:
                        live[token] = flags[i]
        for i in compress(range(n), flags):
            token = tokens[i]
            nxt = tokens[i + 1] if i + 1 < n else None
            plan = pairs.get((token, nxt))
            if plan is None:
                plan = self._plan(token, nxt)
            for group, length, text, ref in plan:
                if text is None:  # three words or more: the third on are checked here
                    end = i + length
                    words, ref = ref
                    if end > n or not all(
                        tokens[i + j] == w.text or (w.wild and tokens[i + j].startswith(w.text)) for j, w in enumerate(words[2:], 2)
                    ):
                        continue
                    text = " ".join(tokens[i:end])
                    got = found.get(group)
                    if got is not None and any(h.position == i and h.text == text for h in got):
                        continue  # another term of the group matched these words first
                hs = found.get(group)
                if hs is None:
                    found[group] = [Hit("", text, i, ref)]
                else:
                    hs.append(Hit("", text, i, ref))
        # Hits go in by increasing position, so each group's list is in position order already.
        return found


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
    # Arabic verbs as lemmas, "past present" (3rd person masculine): every person, gender and
    # number of both tenses is matched (استهدف يستهدف → استهدفت استهدفوا تستهدفان يستهدفون ...).
    ar_verbs: list[str] = Field(default_factory=list)
    gazetteer: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> "GroupSpec":
        if not (self.en or self.ar or self.ar_verbs or self.gazetteer):
            raise ValueError("a group needs terms (en, ar) or gazetteer references")
        return self


class ClauseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    all: list[GroupSpec] = Field(min_length=1)
    within: int | None = Field(default=None, ge=1, le=400)
    none: list[GroupSpec] = Field(default_factory=list)


class FramePredicate(BaseModel):
    """What a frame of this indicator must say (see ``alerts/frames.py``).

    ``actions``: the frame actions this indicator is about. A keyword match stands when a
    frame of the deciding text (the title, else the summary) with one of these actions fits
    every slot below; it is rejected when all such frames contradict a slot, or when the
    title tells of something else (only frames of other actions). Unknown slots never
    contradict. With ``accept``, a frame that names an actor and a target as required
    matches without a keyword clause."""

    model_config = ConfigDict(extra="forbid")
    actions: list[str] = Field(min_length=1)
    actor: list[str] = Field(default_factory=list)  # accepted actor classes (empty: any)
    actor_not: list[str] = Field(default_factory=list)
    target: list[str] = Field(default_factory=list)  # accepted target classes (empty: any)
    target_not: list[str] = Field(default_factory=list)
    modality: list[str] = Field(default_factory=lambda: ["new", "intercepted", "background"])
    accept: bool = False
    # An attack nobody claims counts (militia attacks): a denial by one of ``actor`` does not
    # contradict. Otherwise a denial by the only possible actor ("the coalition denies carrying
    # out strikes") does.
    unclaimed: bool = False
    # Exclusion groups (by name) that stood in for roles before frames: a title frame that names
    # this indicator's actor or target overrides them ("What will Israel do after Iran's attacks"
    # is not vetoed by "Israel's attack" when the frame says Iran attacked).
    overrides: list[str] = Field(default_factory=list)
    other_title: str = Field(default="reject", pattern="^(reject|keep)$")  # a title about another action


class IndicatorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    name: str
    definition: str
    match: list[ClauseSpec] = Field(min_length=1)
    none: list[GroupSpec] = Field(default_factory=list)
    frame: FramePredicate | None = None


@dataclass(slots=True)
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
        for lemma in spec.ar_verbs:
            perfect, imperfect, _future = arabic_verb_forms(lemma)
            terms += [(t, None) for t in perfect + imperfect]
        for ref in spec.gazetteer:
            for entry in gaz.resolve(ref):
                terms += [(alias, entry.id) for alias in entry.en + entry.ar]
        for text, ref in terms:
            index.add(self.uid, parse_term(text), ref)

    def hits(self, found: dict[int, list[Hit]]) -> list[Hit]:
        hs = found.get(self.uid)
        if not hs:
            return []
        name = self.name
        return [Hit(name, h.text, h.position, h.ref) for h in hs]


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
    frame: Frame | None = None  # the frame that decided, when one did
    overridable: tuple | None = None  # (clause, vetoes, hits) of the first clause that only exclusions stopped
    frame_note: str = ""  # how the frame predicate decided (for explain)

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
        self.first_groups = frozenset(groups[0].uid for groups, _, _ in self.clauses)
        self.all_groups = frozenset(g.uid for groups, _, _ in self.clauses for g in groups)
        self.accepts_frames = bool(spec.frame and spec.frame.accept)

    def evaluate(self, folded: str, found: dict[int, list[Hit]] | None = None, frames: list[Frame] | None = None) -> Verdict:
        if found is None:
            found = self.index.hits(folded.split())
        vetoes = [h for g in self.none for h in g.hits(found)]  # the indicator's own exclusions
        verdict = self._keywords(found, vetoes)
        pred = self.spec.frame
        if pred is None or frames is None:
            return verdict
        return judge(pred, frames, verdict, vetoes)

    def _keywords(self, found: dict[int, list[Hit]], vetoes: list[Hit]) -> Verdict:
        verdict = Verdict(self.id, False)
        for ci, (groups, within, nones) in enumerate(self.clauses):
            # ``found`` holds only groups with hits: a clause missing one is decided without copying any
            missing = [g.name for g in groups if not found.get(g.uid)]
            if missing:
                verdict.near_misses.append(f"clause {ci + 1}: no {', '.join(missing)}")
                continue
            per_group = [g.hits(found) for g in groups]
            if not _window_ok(per_group, within):
                verdict.near_misses.append(f"clause {ci + 1}: groups not within {within} words")
                continue
            clause_vetoes = vetoes + [h for g in nones for h in g.hits(found)]
            if clause_vetoes:
                if verdict.overridable is None:
                    verdict.overridable = (ci, clause_vetoes, [h for hs in per_group for h in hs])
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


def _fits(pred: FramePredicate, f: Frame) -> str | None:
    """Why frame ``f`` contradicts ``pred`` (None: it does not)."""
    if f.modality not in pred.modality:
        return f"{f.modality}" + (f" ({f.evidence['modality']!r})" if "modality" in f.evidence else "")
    if f.denied_by and not f.actor and not pred.unclaimed and pred.actor and f.denied_by in pred.actor:
        return f"denied by {f.denied_by} ({f.evidence.get('denied by', '')!r})"
    if f.actor and (f.actor in pred.actor_not or (pred.actor and f.actor not in pred.actor)):
        return f"actor {f.actor} ({f.evidence.get('actor', '')!r})"
    if f.target:
        targets = [f.target, *f.also]
        if all(t in pred.target_not or (pred.target and t not in pred.target) for t in targets):
            return f"target {f.target} ({f.evidence.get('target', '')!r})"
    return None


def _strong(pred: FramePredicate, f: Frame) -> bool:
    """The frame names an actor and a target as the predicate requires."""
    if _fits(pred, f) is not None or not (f.actor or f.target):
        return False
    targets = [f.target, *f.also]
    return (not pred.actor or f.actor in pred.actor) and (not pred.target or any(t in pred.target for t in targets))


def judge(pred: FramePredicate, frames: list[Frame], verdict: Verdict, vetoes: list[Hit]) -> Verdict:
    """The keyword verdict, confirmed, rejected or made by the frames of the deciding text."""
    titled = [f for f in frames if f.source == "title"]
    summary = [f for f in frames if f.source == "summary"]
    frames = titled or summary  # the title decides; the summary when the title has no frame
    relevant = [f for f in frames if f.action in pred.actions]
    if titled and relevant and all(f.actor is None and f.target is None for f in relevant):
        # The title says something happened, not who did it to whom: the summary's frames tell.
        relevant = [f for f in summary if f.action in pred.actions] or relevant
    fitting = [f for f in relevant if _fits(pred, f) is None]
    if verdict.matched:
        if fitting:
            verdict.frame = fitting[0]
            verdict.frame_note = "frame fits"
            return verdict
        strong = [f for f in summary if f.action in pred.actions and _strong(pred, f) and f.actor and f.target]
        if relevant and strong and all(f.modality in pred.modality for f in relevant):
            # The title tells of another act (a strike in reply); the summary names this one in full.
            verdict.frame = strong[0]
            verdict.frame_note = "summary frame fits: " + strong[0].describe()
            return verdict
        if relevant:
            why = _fits(pred, relevant[0])
            note = f"frame: {why}"
        elif frames and pred.other_title == "reject":
            note = f"frame: the text tells of {', '.join(sorted({f.action for f in frames}))}"
        else:
            verdict.frame_note = "no frame: keywords decide"
            return verdict
        verdict.matched = False
        verdict.frame = relevant[0] if relevant else frames[0]
        verdict.frame_note = note
        verdict.near_misses.append(f"clause {(verdict.clause or 0) + 1}: rejected by {note}")
        return verdict
    if verdict.overridable and pred.overrides:
        ci, clause_vetoes, hits = verdict.overridable
        if all(h.group in pred.overrides for h in clause_vetoes):
            for f in fitting:
                if f.source == "title" and ((pred.actor and f.actor in pred.actor) or (pred.target and f.target in pred.target)):
                    verdict.matched = True
                    verdict.clause = ci
                    verdict.hits = hits
                    verdict.frame = f
                    verdict.frame_note = f"frame overrides {', '.join(sorted({h.group for h in clause_vetoes}))}: " + f.describe()
                    verdict.vetoes = []
                    return verdict
    if pred.accept and not vetoes:
        for f in fitting:
            if _strong(pred, f):
                verdict.matched = True
                verdict.clause = None
                verdict.frame = f
                verdict.frame_note = "frame alone: " + f.describe()
                verdict.vetoes = []
                return verdict
    return verdict


class Classifier:
    """All indicators of a pack; ``classify(title, summary)`` → matched indicator ids.

    The indicators share one term index, so a text is scanned once for all of them."""

    def __init__(self, indicators: list[Indicator], index: TermIndex | None = None, gazetteers: Gazetteers | None = None,
                 frames: FrameReader | None = None):
        self.indicators = indicators
        self.index = index or (indicators[0].index if indicators else TermIndex())
        self.gazetteers = gazetteers or Gazetteers()  # event assignment tags places and actors with them
        self.frames = frames  # None: keywords alone (packs without frame predicates)
        # The groups whose hits make an indicator eligible in ``classify_folded``.
        self._triggers = frozenset().union(*(ind.all_groups if ind.accepts_frames else ind.first_groups for ind in indicators))

    @classmethod
    def load(cls, directory: str | Path) -> "Classifier":
        directory = Path(directory)
        gaz = Gazetteers.load(directory.parent / "gazetteers") if (directory.parent / "gazetteers").is_dir() else Gazetteers()
        indicators: list[Indicator] = []
        docs: list[Document] = []
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
                docs.append(doc)
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)
        if not indicators:
            raise ConfigError([f"{directory}:0: (directory): no indicator files (*.yaml)"])
        reader = None
        if any(i.spec.frame for i in indicators):
            lexicon = directory.parent / "frames.yaml"
            reader = FrameReader.load(lexicon if lexicon.exists() else DEFAULT_LEXICON, gaz)
            for ind, doc in zip(indicators, docs):
                problems += _check_predicate(doc, ind.spec.frame, reader)
            if problems:
                raise ConfigError(problems)
        return cls(indicators, index, gaz, reader)

    @property
    def ids(self) -> list[str]:
        return [i.id for i in self.indicators]

    def read_frames(self, title: str, summary: str = "") -> list[Frame]:
        return self.frames.read(title, summary) if self.frames else []

    def explain(self, title: str, summary: str = "") -> list[Verdict]:
        folded = fold(f"{title} . {summary}")
        found = self.index.hits(folded.split())
        frames = self.read_frames(title, summary) if self.frames else None
        return [ind.evaluate(folded, found, frames) for ind in self.indicators]

    def classify(self, title: str, summary: str = "") -> list[Verdict]:
        folded_title = fold(title)
        return self.classify_folded(f"{folded_title} {fold(summary)}".strip(), title_words=len(folded_title.split()))

    def classify_folded(self, folded: str, title_words: int | None = None) -> list[Verdict]:
        """``classify`` of text already folded (``Article.text_folded`` is exactly that: the
        folded title, then the folded summary). ``title_words``: how many of its words are the
        title (None: all of it), for the frames, which read the title first."""
        words = folded.split()
        if not self.index.starts_any(words, self._triggers):
            return []  # no indicator is eligible (below): most texts, found without building their hits
        found = self.index.hits(words)
        reader = self.frames
        # An indicator none of whose clauses has a hit for its first group cannot match by
        # keywords; one whose predicate accepts frames alone may, if any of its terms is there
        # (an actor, a target, an act: frames are read for those articles only).
        eligible = [
            ind for ind in self.indicators
            if not ind.first_groups.isdisjoint(found) or (ind.accepts_frames and not ind.all_groups.isdisjoint(found))
        ]
        frames = None
        if reader is not None and any(ind.spec.frame for ind in eligible):
            n = len(words) if title_words is None else title_words
            frames = reader.read_words(words[:n], words[n:])
        out = []
        for ind in eligible:
            v = ind.evaluate(folded, found, frames)
            if v.matched:
                out.append(v)
        if len(out) > 1:
            order = {ind.id: i for i, ind in enumerate(self.indicators)}
            out.sort(key=lambda v: order[v.indicator])
        return out


def _check_predicate(doc: Document, pred: FramePredicate | None, reader: FrameReader) -> list[str]:
    """Every action, party class and modality a frame predicate names exists in the lexicon."""
    if pred is None:
        return []
    known = {
        "actions": set(reader.spec.actions),
        "actor": set(reader.spec.parties), "actor_not": set(reader.spec.parties),
        "target": set(reader.spec.parties), "target_not": set(reader.spec.parties),
        "modality": set(MODALITIES),
    }
    out = []
    for key, allowed in known.items():
        for i, v in enumerate(getattr(pred, key)):
            if v not in allowed:
                out.append(doc.error(("frame", key, i), f"unknown {v!r} (known: {', '.join(sorted(allowed))})"))
    return out


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
