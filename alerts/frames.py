"""Event frames: who did what to whom, and when, read from a headline in Arabic or English.

A keyword match says that an article *talks about* a base and a drone; a frame says whether
a drone *hit* the base, who sent it, and whether it happened now. Between normalisation and
the indicators, ``FrameReader`` reads each article into zero or more frames:

* ``action``: the class of what happened (``attack``, ``kill``, ``intercept``, ``seize``;
  statements: ``threat``, ``denial``, ``suspension``, ``talks``, ``deployment``; activity that
  is not an attack: ``training``, ``visit``, ``handover``, ``withdrawal``, ``sport`` ...);
* ``actor`` and ``target``: party classes (``us``, ``israel``, ``iran_state``, ``militia``,
  ``houthi``, ``hezbollah``, ``isis``, ``turkey`` ...) with the gazetteer entity when one is
  named; a place is a party (a US base is ``us``, Tel Aviv is ``israel``);
* ``places`` with their role: ``target`` or ``launch`` (where it was fired from);
* ``modality``: ``new``, ``intercepted``, ``background`` (a recent act given as the reason
  for the main one), or one that is not a new act (``MODALITIES``): ``cause``, ``threat``,
  ``future``, ``hypothetical``, ``denial``, ``suspension``, ``recalled``, ``past``, ``pause``,
  ``foiled``, ``non_act``;
* ``evidence``: the phrase that decided each slot.

How (shallow patterns in the spirit of TABARI/PETRARCH, since no Arabic parser runs
offline here; the vocabulary is ``alerts/frames.yaml``):

1. The title is read first, the summary only when the title has no frame; a title frame
   missing its actor or target takes it from a summary frame of the same action.
2. A text is cut into clauses at connectives: acts after "after" / "بعد" are ``background``
   (recent, they count), after "in retaliation for" / "رداً على" a ``cause`` (reported when it
   happened), after "weeks after" / "بعد أشهر" ``recalled``.
3. Each action word opens a frame. Its **actor** is a nationality on an attack noun ("US
   strike", "غارة أمريكية", "قصف مدفعي إيراني"), the party just before an active verb
   ("Iran fires", "الحوثيون يقصفون"), the party just after a clause-initial Arabic verb
   ("قصفت إيران"), an agent ("killed by a US drone"), or the clause's subject when the
   speaker says it did it ("Pentagon says it killed"). Its **target** is the party after
   "on / at / against / targeting", "على / ضد / استهداف", a verb's object, the party before a
   passive ("Al Asad attacked with rockets", "X wounded") or the victim of "مقتل X". A party
   after "from" / "من" is a launch place, never the target.
4. Shooting down drones or missiles is an attack by their owner on the defender,
   intercepted; shooting down a surveillance or manned aircraft is an attack on its owner.
5. **Modality**: a threat or suspension word before an act in its clause makes the act that
   ("vows to attack", "halts attacks"); a denial of carrying it out leaves it new with its
   denier noted; non-attack activity anywhere in the clause makes it ``non_act`` ("training
   against drone attacks"); a conditional ("if"), a future ("will", سـ), a time word
   ("last month's", "الشهر الماضي", "the January strike") or a report of no attacks likewise.

Indicators use frames as predicates (``alerts/matching.py``, key ``frame``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from sources.configfile import ConfigError, load_yaml, validate
from sources.normalize import fold

DEFAULT_LEXICON = Path(__file__).with_name("frames.yaml")

# Every modality a frame can have: new, intercepted and background acts count; the others
# (a cause cited, a threat, a dated or recalled act, a foiled plot ...) are not new acts.
MODALITIES = ("new", "intercepted", "background", "cause", "threat", "future", "hypothetical", "denial", "suspension",
              "recalled", "past", "pause", "foiled", "non_act")
# Downed things that are the victim, not the weapon: shooting one down attacks its owner.
_AIRCRAFT = frozenset(
    fold(w)
    for w in "spy surveillance reconnaissance jet jets fighter plane aircraft helicopter reaper hawk mq تجسس استطلاع "
    "مقاتله مروحيه".split()
)


# --------------------------------------------------------------------------- the lexicon file


class TermsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    en: list[str] = Field(default_factory=list)
    ar: list[str] = Field(default_factory=list)


class ActionSpec(TermsSpec):
    kind: str = Field(pattern="^(act|statement|non_act)$")
    ar_verbs: list[str] = Field(default_factory=list)


class PartySpec(TermsSpec):
    gazetteer: list[str] = Field(default_factory=list)


class LexiconSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    actions: dict[str, ActionSpec]
    parties: dict[str, PartySpec]
    roles: dict[str, TermsSpec]
    connectives: dict[str, TermsSpec]
    modality: dict[str, TermsSpec]


def arabic_verb_forms(lemma: str) -> tuple[list[str], list[str], list[str]]:
    """(perfect, imperfect, future) forms of an Arabic verb given as "past present" (3ms),
    folded: every person, gender and number (قصف → قصفت قصفوا قصفا قصفتا ...; يقصف → تقصف
    يقصفون تقصفان ...; future سيقصف ستقصف سنقصف ...). Clitics are added by the matcher."""
    parts = fold(lemma).split()
    if len(parts) != 2 or not parts[1].startswith("ي"):
        raise ValueError(f"an Arabic verb is 'past present' (3rd person masculine), e.g. 'قصف يقصف': {lemma!r}")
    past, present = parts
    stem = present[1:]
    if past.endswith("ي"):  # defective: نفى نفت نفوا; folded alef maqsura is ي
        base = past[:-1]
        perfect = [past, base + "ت", base + "وا", base + "يا", base + "يتا", base + "ينا", base + "يت"]
    else:
        perfect = [past + s for s in ("", "ت", "ا", "تا", "وا", "ن", "نا", "تم")]
    if stem.endswith("ي"):  # ينفي: تنفي ينفون ينفيان
        sbase = stem[:-1]
        endings = [(p, sbase + "ي") for p in "يتنا"] + [(p, sbase + s) for p in "يت" for s in ("ون", "يان", "وا")]
    else:
        endings = [(p, stem) for p in "يتنا"] + [(p, stem + s) for p in "يت" for s in ("ون", "ان", "وا", "ا", "ين", "ن")]
    imperfect = sorted({p + s for p, s in endings})
    future = sorted({"س" + f for f in imperfect})
    return sorted(set(perfect)), imperfect, future


def arabic_noun_forms(noun: str) -> list[str]:
    """A noun and its duals (مسيرة → مسيرتان مسيرتين مسيرتا مسيرتي; صاروخ → صاروخان صاروخين
    صاروخا صاروخي), folded; further words ("singular plural") are kept as they are."""
    words = fold(noun).split()
    if len(words) != 1:
        return [" ".join(words)]
    w = words[0]
    stem = w[:-1] + "ت" if w.endswith("ه") else w
    return [w] + [stem + s for s in ("ان", "ين", "ا", "ي")]


# --------------------------------------------------------------------------- frames


@dataclass
class Frame:
    action: str
    kind: str  # act, statement, non_act
    clause: int
    source: str  # title or summary
    position: int  # token index of the action word in its text
    actor: str | None = None
    actor_entity: str | None = None
    target: str | None = None
    target_entity: str | None = None
    places: list[tuple[str, str]] = field(default_factory=list)  # (entity id, target|launch|other)
    also: list[str] = field(default_factory=list)  # further targets named with the first ("X and Y")
    denied_by: str | None = None  # a party that denies having done it
    modality: str = "new"
    evidence: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """What the warehouse keeps (``article_indicators.frame``): who, what, whom, where, when."""
        return {
            "action": self.action, "actor": self.actor, "actor_entity": self.actor_entity, "target": self.target,
            "target_entity": self.target_entity, "also": self.also, "places": [list(p) for p in self.places],
            "modality": self.modality, "source": self.source, "denied_by": self.denied_by, "evidence": self.evidence,
        }

    def describe(self) -> str:
        who = self.actor or "?"
        whom = self.target or "?"
        ents = ""
        if self.actor_entity or self.target_entity:
            ents = f" [{self.actor_entity or '-'} → {self.target_entity or '-'}]"
        ev = "; ".join(f"{k}: {v!r}" for k, v in self.evidence.items())
        places = ", ".join(f"{p} ({r})" for p, r in self.places)
        denied = f", denied by {self.denied_by}" if self.denied_by else ""
        return f"{self.source}: {who} —{self.action}→ {whom}{ents} ({self.modality}{denied})" + (f" places {places}" if places else "") + (f" — {ev}" if ev else "")


@dataclass(slots=True)
class _Mention:
    start: int
    end: int  # exclusive
    cat: str  # action, party, role, connective, modality
    cls: str
    text: str
    entity: str | None = None
    form: str = ""  # for Arabic verbs: perfect, imperfect, future
    arabic: bool = False
    place: bool = False


def _absorb_flags(kept: list["_Mention"]) -> list["_Mention"]:
    """A warship takes the flag next to it ("US destroyer", "السفن الحربية الأمريكية"): the
    flag's mention is merged into the warship's."""
    for m in kept:
        if m.cat != "party" or m.cls != "warship":
            continue
        for n in kept:
            if n.cat == "party" and n is not m and n.entity is None and n.cls in _FLAGS and (n.start == m.end or n.end == m.start):
                m.cls = n.cls
                m.text = f"{m.text} {n.text}" if n.start == m.end else f"{n.text} {m.text}"
                m.start, m.end = min(m.start, n.start), max(m.end, n.end)
                n.cat = "absorbed"
                break
    return [m for m in kept if m.cat != "absorbed"]


class FrameReader:
    """Reads frames with one pass of a term index over each text (title, summary)."""

    def __init__(self, spec: LexiconSpec, gazetteers=None):
        from alerts.matching import TermIndex, parse_term  # matching imports this module

        self.spec = spec
        self.index = TermIndex()
        self._groups: dict[int, tuple[str, str, str, bool]] = {}  # uid -> (cat, cls, form, place)
        self.kinds = {name: a.kind for name, a in spec.actions.items()}

        def add(cat: str, cls: str, terms, form: str = "", refs=None, place: bool = False) -> None:
            uid = self.index.new_group()
            self._groups[uid] = (cat, cls, form, place)
            for t in terms:
                self.index.add(uid, parse_term(t), None if refs is None else refs.get(t))

        for name, a in spec.actions.items():
            nouns = [f for t in a.ar for f in arabic_noun_forms(t)]
            add("action", name, list(a.en) + nouns)
            for lemma in a.ar_verbs:
                perfect, imperfect, future = arabic_verb_forms(lemma)
                add("action", name, perfect, "perfect")
                add("action", name, imperfect, "imperfect")
                add("action", name, future, "future")
        for name, p in spec.parties.items():
            add("party", name, list(p.en) + list(p.ar))
            for ref in p.gazetteer:
                if gazetteers is None:
                    continue
                try:
                    entries = gazetteers.resolve(ref)
                except KeyError:
                    continue
                is_place = ref.startswith("places:")
                for e in entries:
                    refs = {alias: e.id for alias in e.en + e.ar}
                    add("party", name, list(refs), refs=refs, place=is_place)
        for cat, table in (("role", spec.roles), ("connective", spec.connectives), ("modality", spec.modality)):
            for name, t in table.items():
                add(cat, name, list(t.en) + list(t.ar))

    @classmethod
    def load(cls, path: str | Path = DEFAULT_LEXICON, gazetteers=None) -> "FrameReader":
        doc = load_yaml(path)
        spec = validate(doc, LexiconSpec)
        problems = []
        for name, a in spec.actions.items():
            for i, lemma in enumerate(a.ar_verbs):
                try:
                    arabic_verb_forms(lemma)
                except ValueError as exc:
                    problems.append(doc.error(("actions", name, "ar_verbs", i), str(exc)))
        if problems:
            raise ConfigError(problems)
        return cls(spec, gazetteers)

    # ------------------------------------------------------------------ mentions

    def _mentions(self, tokens: list[str], found, lo: int) -> list[_Mention]:
        """The lexicon's words in ``tokens``: ``found`` holds the index's hits over the whole
        article (title, then summary), of which ``tokens`` are the words from ``lo`` on."""
        hi = lo + len(tokens)
        groups = self._groups
        # Candidates as plain tuples, (start, -words, order found, ...): sorted as the rule wants
        # (by start, longest first, then in the order found) with no key function, and a
        # _Mention is made only for those kept.
        out: list[tuple] = []
        for uid, hits in found.items():
            cat, cls, form, place = groups[uid]
            for h in hits:
                pos = h.position
                if pos < lo or pos >= hi:
                    continue  # in the other text
                n = h.text.count(" ") + 1  # the words it matched (folded text: one space between)
                if pos + n > hi:
                    continue  # across the break between title and summary
                out.append((pos - lo, -n, len(out), cat, cls, h, form, place))
        # Longest mention wins where two of the same category overlap ("Iran backed" over "Iran").
        out.sort()
        kept: list[_Mention] = []
        spans: dict[str, list[tuple[int, int]]] = {}  # category -> spans kept
        seen: set[tuple] = set()  # (category, start, end, class) kept
        for start, neg, _, cat, cls, h, form, place in out:
            end = start - neg
            mine = spans.get(cat)
            if mine is not None:
                inside = False
                for a, b in mine:
                    if a <= start and end <= b and (b - a) > -neg:
                        inside = True
                        break
                if inside:
                    continue
            key = (cat, start, end, cls)
            if key in seen:
                continue
            seen.add(key)
            text = h.text
            kept.append(_Mention(start, end, cat, cls, text, h.ref, form, _is_arabic(text), place))
            if mine is None:
                spans[cat] = [(start, end)]
            else:
                mine.append((start, end))
        return _absorb_flags(kept)

    # ------------------------------------------------------------------ reading

    def read(self, title: str, summary: str = "") -> list[Frame]:
        """The title's frames (slots filled from the summary where it agrees), then the
        summary's: the title decides, the summary only where the title has no frame or
        leaves both actor and target open."""
        return self.read_words(fold(title).split(), fold(summary).split())

    def read_words(self, t: list[str], s: list[str]) -> list[Frame]:
        """``read`` of folded words: the title's, then the summary's."""
        found = self.index.hits(t + s)  # one pass over the article
        frames = self._read_text(t, "title", found, 0)
        if not frames:
            return self._read_text(s, "summary", found, len(t))
        if s:
            extra = self._read_text(s, "summary", found, len(t))
            for f in frames:
                same = [g for g in extra if g.action == f.action]
                if same:
                    _fill_from_summary(f, same, "actor", "target")
                    _fill_from_summary(f, same, "target", "actor")
            return frames + extra
        return frames

    def _read_text(self, tokens: list[str], source: str, found, lo: int) -> list[Frame]:
        if not tokens:
            return []
        mentions = self._mentions(tokens, found, lo)
        # Clauses: cut at connectives. Each clause carries how its acts relate to now.
        cuts = sorted((m for m in mentions if m.cat == "connective"), key=lambda m: m.start)
        bounds: list[tuple[int, int, str]] = []
        start, mode = 0, "new"
        for c in cuts:
            if c.start > start:
                bounds.append((start, c.start, mode))
            start, mode = c.end, {"distant": "recalled", "cause": "cause"}.get(c.cls, "background")
        bounds.append((start, len(tokens), mode))
        frames: list[Frame] = []
        for ci, (lo, hi, mode) in enumerate(bounds):
            ms = [m for m in mentions if lo <= m.start < hi and m.cat != "connective"]
            frames += self._clause(tokens, ms, ci, lo, hi, mode, source)
        return frames

    def _clause(self, tokens, ms: list[_Mention], ci: int, lo: int, hi: int, mode: str, source: str) -> list[Frame]:
        actions = [m for m in ms if m.cat == "action"]
        # An action word inside a party name ("Kataib Hezbollah" has no action; "Quds Force" none)
        # or a party word that is also an action ("strike" is not a party) are kept apart by category.
        parties = [m for m in ms if m.cat == "party"]
        roles = [m for m in ms if m.cat == "role"]
        mods = [m for m in ms if m.cat == "modality"]
        if not actions:
            # "Police find rockets ready for launch and defuse them", "no attacks since the truce":
            # no act, but the clause says what happened instead.
            stop = next((m for m in mods if m.cls in ("foiled", "pause")), None)
            if stop is None:
                return []
            f = Frame(stop.cls, "non_act", ci, source, stop.start, modality=stop.cls)
            f.evidence["action"] = stop.text
            return [f]

        def role_before(p: _Mention, reach: int | None = None) -> str | None:
            """The role word just before a party ("on US forces", "on a US base", "على قاعدة")."""
            if reach is None:
                reach = 1 if p.arabic else 2
            best = None
            for r in roles:
                if r.end <= p.start and p.start - r.end <= reach and not any(a.start >= r.end and a.end <= p.start for a in actions):
                    if best is None or r.end > best.end:
                        best = r
            return best.cls if best else None

        def between(a: int, b: int, cat: str) -> bool:
            return any(m.cat == cat and a <= m.start and m.end <= b for m in ms)

        speech = [m for m in mods if m.cls in ("statement", "claim")]

        def spoken_between(a: int, b: int) -> bool:
            """A speech verb between: "the coalition says rockets were fired", "Israel says it was"."""
            return any(a <= s.start and s.end <= b for s in speech)

        # The clause's subject: a party before the first action or statement word, not after a
        # role word ("attack on X" makes X a target, not a subject).
        first_act = min(a.start for a in actions)
        subject = None
        for p in parties:
            if p.end <= max(first_act, min((s.start for s in speech), default=first_act)) and role_before(p) is None:
                subject = p
                break

        # "X said ...": the speaker, the party just before a speech verb.
        speaker = None
        for s_ in speech:
            for p in reversed(parties):
                if p.end <= s_.start and s_.start - p.end <= 2 and not p.place:
                    speaker = p
                    break
            if speaker:
                break
        # "Iran blames Israel", "ظريف يتهم إسرائيل": the accused is the alleged author of the clause's acts.
        accused = None
        for r in roles:
            if r.cls == "accused":
                for p in parties:
                    if r.end <= p.start <= r.end + 1:
                        accused = p
                        break
        # The subject is the actor of what it says it did ("Pentagon says it killed") or claims or
        # announces ("الحرس الثوري يعلن ... بقصف"), not of what merely happened to it.
        subject_speaks = subject is not None and any(
            0 <= s.start - subject.end <= 3
            and (s.cls == "claim" or (not s.arabic and s.end < hi and tokens[s.end] in _PRONOUNS))
            for s in speech
        )
        party_starts = {p.start for p in parties}
        # Which named places are launch places: alerts.entities.place_roles decides, for the
        # frames as for the places event identity compares (rockets "fired from Zummar").
        from alerts.entities import place_roles  # entities imports matching, which imports this module

        launch_places = {
            eid for eid, r in place_roles(tokens, [(p.entity, p.start, p.end) for p in parties if p.place and p.entity]).items()
            if r == "launch"
        }
        frames: list[Frame] = []
        for a in actions:
            kind = self.kinds[a.cls]
            f = Frame(a.cls, kind, ci, source, a.start)
            f.evidence["action"] = a.text
            arabic = a.arabic
            passive = (not arabic) and (
                _english_passive(tokens, a, hi) or (a.cls == "kill" and _bare_participle(tokens, a, hi, party_starts))
            )
            # --- actor
            actor = None
            if arabic:
                # nationality on the attack noun: غارة أمريكية, قصف مدفعي إيراني (one word between at most)
                if a.form == "" and kind == "act" and a.cls != "kill":
                    for p in parties:
                        if a.end <= p.start <= a.end + 1 and role_before(p, 0) is None and _nisba(p):
                            actor = p
                            break
                # SVO: الحوثيون يقصفون (subject within 3 words before an imperfect verb)
                if actor is None and a.form in ("imperfect", "future"):
                    for p in reversed(parties):
                        if p.end <= a.start and a.start - p.end <= 3 and role_before(p) is None and (kind == "act" or not p.place):
                            actor = p
                            break
                # A statement's speaker just before it: "المقاومة جاهزة لاستئناف عملياتها", "الفصائل تتوعد"
                if actor is None and kind == "statement":
                    for p in reversed(parties):
                        if p.end <= a.start and a.start - p.end <= 2 and role_before(p) is None and not p.place:
                            actor = p
                            break
                # VSO: قصفت إيران (a clause-initial perfect verb)
                if actor is None and a.form == "perfect" and a.start - lo <= 1:
                    for p in parties:
                        if a.end <= p.start <= a.end + 2 and role_before(p) is None:
                            actor = p
                            break
            else:
                if not passive:
                    for p in reversed(parties):
                        if p.place and kind != "act":
                            continue
                        role = role_before(p)
                        if role == "agent" and p.end != a.start:
                            continue  # "by Iran's attacks", not "groups backed by Iran, which targeted"
                        if spoken_between(p.end, a.start):
                            break  # "the coalition says rockets were fired at its base": a speaker
                        if p.end <= a.start and a.start - p.end <= 3 and role in (None, "agent") and not between(p.end, a.start, "action"):
                            if not any(w in _NOT_AGENT for w in tokens[p.end:a.start]):
                                actor = p
                            break
                # agent: "killed by a US drone"
                for r in roles:
                    if r.cls == "agent" and a.end <= r.start <= a.end + 1:
                        for p in parties:
                            if r.end <= p.start <= r.end + 2:
                                actor = p
                                break
            if actor is None and kind == "statement" and speaker is not None and speaker.end <= a.start:
                actor = speaker  # "The militia said Iraqi forces should keep away": the militia's warning
            if actor is None and kind == "act" and accused is not None and accused.start > a.end:
                actor = accused
            if actor is None and subject is not None and subject.end <= a.start and not passive and subject_speaks:
                # "Pentagon says it killed ...", "الحرس الثوري يعلن ... بقصف": the subject acted,
                # unless another party stands between as the verb's own subject.
                if not any(p is not subject and subject.end <= p.start and p.end <= a.start and role_before(p) is None for p in parties):
                    actor = subject
            # --- target
            target = None
            if passive:
                for p in reversed(parties):
                    if spoken_between(p.end, a.start):
                        break  # "Israel says it was intercepted": the speaker, not what was hit
                    if p.end <= a.start and a.start - p.end <= 4 and p is not actor:
                        target = p
                        break
            if target is None:
                for p in parties:
                    if p.start < a.end or p is actor or p.start - a.end > 8:
                        continue
                    role = role_before(p)
                    if p.place and p.entity in launch_places:
                        role = "launch"  # the one reading of place roles event identity uses too
                    if role == "launch":
                        # "an attack from Iran", "drones launched from Yemen": where it came from
                        # names who sent it, unless it is a specific site (a town, a base).
                        f.places.append((p.entity or p.text, "launch"))
                        if actor is None and p.cls not in ("us",) and p.start - a.end <= 3:
                            actor = p
                        continue
                    if role == "agent":
                        continue
                    gap = p.start - a.end
                    direct = gap <= 3 if arabic else (gap == 0 or (gap == 1 and tokens[a.end] in _DETERMINERS))
                    if role == "target" or direct or (p.place and arabic):
                        target = p
                        break
            if actor is not None:
                f.actor, f.actor_entity = actor.cls, actor.entity
                f.evidence["actor"] = actor.text
            if target is not None:
                f.target, f.target_entity = target.cls, target.entity
                f.evidence["target"] = target.text
                prev = target
                for q in parties:  # "facilities of the IRGC and allied factions": every target counts
                    if q.start >= prev.end and q is not target and q.start - prev.end <= 2 and q is not actor:
                        joined = q.text.startswith("و") or any(w in ("and", "or") for w in tokens[prev.end:q.start])
                        if joined and not between(prev.end, q.start, "action") and q.cls != target.cls:
                            f.also.append(q.cls)
                            prev = q
                if target.place:
                    f.places.append((target.entity or target.text, "target"))
            if a.form == "future" or (
                not arabic and a.start > 0 and tokens[a.start - 1] == "to" and (a.start < 2 or tokens[a.start - 2] not in _PURPOSE)
            ):
                f.modality = "future"  # سيقصف, "US to strike", "vows to attack"
            if not any(g.action == f.action and g.position == f.position for g in frames):
                frames.append(f)

        # "fire interceptors at", "launched interceptors": the firing is the interception.
        intercepts = [f for f in frames if f.action == "intercept"]
        frames = [
            f for f in frames
            if not (f.action == "attack" and any(0 < g.position - f.position <= 2 for g in intercepts))
        ]

        # Shooting down: drones and missiles are the attacker's weapons (their owner attacked;
        # the target is where they were heading, not the defender), aircraft are the victim.
        for f in frames:
            if f.action != "intercept":
                continue
            after = tokens[f.position: min(hi, f.position + 6)]
            if any(w in _AIRCRAFT for w in after):
                f.action, f.kind = "attack", "act"
                continue
            if any(t == "target" for _, t in f.places):
                # shot down near a site: the site was the target; the owner of the drones is unknown
                f.evidence["defender"] = f.evidence.pop("actor", "")
                f.actor = f.actor_entity = None
                continue
            defender, owner = (f.actor, f.actor_entity), (f.target, f.target_entity)
            owner_ev = f.evidence.pop("target", None)
            defender_ev = f.evidence.pop("actor", None)
            f.actor, f.actor_entity = owner
            if owner_ev:
                f.evidence["actor"] = owner_ev
            if defender_ev:
                f.evidence["defender"] = defender_ev
            f.target = f.target_entity = None
            start = f.position + 1
            for p in parties:
                if p.start > start and p.start - f.position <= 10 and role_before(p) == "target" and p.cls != f.actor:
                    f.target, f.target_entity = p.cls, p.entity
                    f.evidence["target"] = p.text
                    break

        # Acts of one clause are one story: a victim or an attacker named once fills the others.
        acts = [f for f in frames if f.kind == "act"]
        for f in acts:
            for g in acts:
                if g is f or abs(g.position - f.position) > 6:
                    continue
                if f.target is None and g.target is not None and g.target != f.actor:
                    f.target, f.target_entity = g.target, g.target_entity
                    f.evidence["target"] = g.evidence.get("target", "")
                if f.actor is None and g.actor is not None and g.actor != f.target:
                    f.actor, f.actor_entity = g.actor, g.actor_entity
                    f.evidence["actor"] = g.evidence.get("actor", "")

        # Modality, from what else the clause says.
        intercepted = any(a.cls == "intercept" for a in actions)
        non_acts = [m for m in actions if self.kinds[m.cls] == "non_act"]
        for f in frames:
            if f.kind == "statement":
                # "Thousands rally ... vowing": a statement made at a rally is part of the rally
                before = [m for m in non_acts if m.start < f.position]
                if before:
                    f.modality = "non_act"
                    f.evidence["modality"] = before[0].text
                continue
            if f.kind != "act":
                continue
            if f.modality == "future":
                continue
            earlier = [
                m for m in actions
                if m.start < f.position and self.kinds[m.cls] == "statement" and m.cls in ("threat", "denial", "suspension")
                # "Iran denies involvement in the attack": the attack happened; "denies carrying out strikes": it did not
                and not (m.cls == "denial" and any(w in _ROLE_WORDS for w in tokens[m.end:f.position]))
            ]
            dated = [m for m in mods if m.cls == "dated" and (
                0 <= f.position - m.end <= 1 if not m.arabic else 0 <= m.start - (f.position + 1) <= 1
            )]
            cues = [m for m in mods if m.cls not in ("statement", "claim", "dated") and (
                m.start < f.position
                or (_is_arabic(m.text) and 0 < m.start - f.position <= 4)  # هجمات وشيكة
                or m.cls == "past"  # a time adverbial dates the whole clause: "... على القاعدة الأسبوع الماضي"
            )]
            if non_acts:
                f.modality = "non_act"
                f.evidence["modality"] = non_acts[0].text
            elif earlier and earlier[-1].cls == "denial":
                # "X denies carrying out the attack": the attack happened; X says it was not X.
                denial = next((g for g in frames if g.action == "denial" and g.position == earlier[-1].start), None)
                if denial is not None and denial.actor:
                    f.denied_by = denial.actor
                    f.evidence["denied by"] = denial.evidence.get("actor", "")
                    if f.actor == denial.actor:
                        f.actor = f.actor_entity = None
                if mode != "new":
                    f.modality = mode
            elif earlier:
                f.modality = earlier[-1].cls
                f.evidence["modality"] = earlier[-1].text
            elif dated:
                f.modality = "past"  # "the January drone strike" is not today's
                f.evidence["modality"] = dated[0].text
            elif any(m.cls == "pause" for m in mods):
                f.modality = "pause"
            elif cues:
                f.modality = cues[-1].cls
                f.evidence["modality"] = cues[-1].text
            elif mode != "new":
                f.modality = mode
            elif intercepted:
                f.modality = "intercepted"
        return frames


def _fill_from_summary(f: Frame, same: list[Frame], slot: str, other: str) -> None:
    """Fill ``f``'s open ``slot`` (actor or target) from the summary's frames of its action,
    when they tell the same story: they all name one class there, it is not ``f``'s ``other``
    slot, and they do not name another ``other`` than ``f`` does."""
    if getattr(f, slot) is not None:
        return
    classes = {getattr(g, slot) for g in same}
    if len(classes) != 1:
        return
    (cls,) = classes
    mine = getattr(f, other)
    if cls is None or cls == mine or (mine is not None and any(getattr(g, other) not in (None, mine) for g in same)):
        return
    g = same[0]
    setattr(f, slot, cls)
    setattr(f, f"{slot}_entity", getattr(g, f"{slot}_entity"))
    f.evidence[slot] = "summary: " + g.evidence.get(slot, "")


def _nisba(p: _Mention) -> bool:
    """A nationality adjective (أمريكية، الإيراني، إسرائيليين), not a noun phrase: "غارة أمريكية"
    names the attacker; "مقتل جنود أمريكيين", "استهداف القاعدة الأمريكية" name the victim."""
    words = p.text.split()
    return p.entity is None and not p.place and len(words) == 1 and words[0].endswith(("ي", "يه", "يين", "يون", "يان", "يتين"))


def _is_arabic(text: str) -> bool:
    return bool(text) and "\u0600" <= text[0] <= "\u06ff"


_PASSIVE_NEXT = frozenset({"by", "with", "in", "as", "during", "after", "near", "overnight", "on", "at"})
_PARTICIPLES = frozenset({"attacked", "targeted", "hit", "struck", "shelled", "bombed", "raided", "ambushed", "pounded"})
# Words between a party and an attack word that make the party its victim, not its author:
# "Israel faced a sophisticated attack", "base suffered a drone attack".
_NOT_AGENT = frozenset({"a", "an", "the", "faced", "faces", "face", "suffered", "suffers", "repelled", "repels", "foiled",
                        "thwarted", "survived", "survives", "blocked", "blocks", "weighs", "after",
                        # a preposition: the party belongs to another phrase ("deaths of US forces from hostile fire")
                        "of", "from", "for", "in", "to", "with", "by", "about", "over"})
_ROLE_WORDS = frozenset(fold(w) for w in (
    "involvement involved links link role responsibility ordering ordered behind connection ties "
    "علاقتها علاقته علاقه صلتها صلته صله مسؤوليتها مسؤوليته مسؤوليه تورطها تورطه تورط"
).split())
_FLAGS = frozenset({"us", "israel", "iran_state", "turkey", "gulf_state"})
_PURPOSE = frozenset({"used", "tried", "attempted", "sought", "launched", "sent", "fired", "deployed", "aimed"})
_PRONOUNS = frozenset({"it", "they", "we", "its"})
_AUX = frozenset({"was", "were", "is", "are", "been", "being", "be", "came", "comes", "under"})


def _english_passive(tokens: list[str], a: _Mention, hi: int) -> bool:
    """"Al Asad attacked with 10 rockets", "base was hit", "convoy came under fire"."""
    word = tokens[a.end - 1]
    if a.start > 0 and tokens[a.start - 1] in _AUX:
        return True
    if tokens[a.start] in ("came", "comes", "under"):
        return True
    if word in _PARTICIPLES:
        nxt = tokens[a.end] if a.end < hi else None
        return nxt is None or nxt in _PASSIVE_NEXT
    return False


_DETERMINERS = frozenset({"a", "an", "the", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                          "dozens", "scores", "several", "his", "its", "their", "top", "senior"})


def _bare_participle(tokens: list[str], a: _Mention, hi: int, party_starts: set[int]) -> bool:
    """"contractor killed in ...", "soldier wounded, ...": the party before was hit, unless the
    verb has an object ("strike killed three fighters", "Israel killed a commander")."""
    word = tokens[a.end - 1]
    if not word.endswith("ed") and word not in ("hurt",):
        return False
    if a.end >= hi:
        return True
    nxt = tokens[a.end]
    return not (a.end in party_starts or nxt in _DETERMINERS or nxt.isdigit())
