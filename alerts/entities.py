"""Which gazetteer entries an article names anywhere in its text: places, actors, weapons
and cue words, by stable id in either language.

``article_indicators.refs`` holds only the entries that made an indicator match (an
attack word near a base); event assignment also needs the actor a report names, the
weapon, and whether it looks back at an earlier attack. ``tag_articles`` stores those in
``article_entities`` for the articles that matched an indicator, each place with its role
(``place_roles``): where the attack landed (``target``), where it was fired from
(``launch``), or neither (``other``). Event identity never takes a launch place for the
place of the attack: "rockets fired from Zummar" names Zummar, not the base they hit.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from alerts.matching import Gazetteers, TermIndex, parse_term
from alerts.places import PlaceHierarchy
from sources.normalize import fold
from warehouse.load import bulk_insert

# article_published_at: the article's publication time, carried by every row (migration 0029)
ENTITY_COLUMNS = {"article_id": "VARCHAR", "gazetteer": "VARCHAR", "entity_id": "VARCHAR", "kind": "VARCHAR", "role": "VARCHAR",
                  "article_published_at": "TIMESTAMPTZ"}


@dataclass(frozen=True)
class Entity:
    gazetteer: str
    id: str
    kind: str


class EntityTagger:
    """Every gazetteer entry as a group of one shared term index (the matcher's): one pass over
    an article's words finds all the places, actors, weapons and cues it names."""

    def __init__(self, gazetteers: Gazetteers):
        self._index = TermIndex()
        self._entities: dict[int, Entity] = {}
        self.places = PlaceHierarchy.from_gazetteers(gazetteers)
        for name, entries in sorted(gazetteers.entries.items()):
            for e in entries:
                if not (e.en or e.ar):
                    continue
                uid = self._index.new_group()
                self._entities[uid] = Entity(name, e.id, e.kind)
                for alias in e.en + e.ar:
                    self._index.add(uid, parse_term(alias), e.id)

    def tag(self, title: str, summary: str = "") -> list[Entity]:
        return self.tag_folded(fold(f"{title} . {summary}"))

    def tag_folded(self, folded: str) -> list[Entity]:
        """``tag`` of text already folded (``articles.text_folded``)."""
        return [e for e, _ in self.tag_roles(folded)]

    def mentions(self, tokens: list[str]) -> list[tuple[Entity, int, int]]:
        """(entity, first token, end token) of every name found. A place name inside a longer
        place name of a nested place that does not contain it is a misreading and is dropped:
        "شرق سوريا" inside "جنوب شرق سوريا" (southeast Syria) is not northeast Syria, while
        "Hasakah" inside "Hasakah base" stays (the province contains the base)."""
        out = [
            (self._entities[uid], h.position, h.position + len(h.text.split()))
            for uid, hits in self._index.hits(tokens).items()
            for h in hits
        ]
        spans = [(e, a, b) for e, a, b in out if e.gazetteer == "places" and b - a > 1 and e.id in self.places.parent]
        if not spans:
            return out
        return [
            (e, a, b) for e, a, b in out
            if not (
                e.gazetteer == "places" and e.id in self.places.parent
                and any(
                    oa <= a and b <= ob and (ob - oa) > (b - a) and o.id != e.id and e.id not in self.places.ancestors(o.id)
                    for o, oa, ob in spans
                )
            )
        ]

    def tag_roles(self, folded: str) -> list[tuple[Entity, str | None]]:
        """The entities named in folded text, each place with its role (``place_roles``)."""
        tokens = folded.split()
        found = self.mentions(tokens)
        roles = place_roles(tokens, [(e.id, a, b) for e, a, b in found if e.gazetteer == "places"])
        entities = {(e.gazetteer, e.id): e for e, _, _ in found}
        return [(e, roles.get(e.id) if g == "places" else None) for (g, _), e in sorted(entities.items())]


def tag_articles(con, tagger: EntityTagger, rows: list[tuple[str, str, datetime]]) -> int:
    """Tag (article_id, text_folded, published_at) rows into ``article_entities`` (one set-based insert)."""
    out = [
        dict(article_id=article_id, gazetteer=e.gazetteer, entity_id=e.id, kind=e.kind, role=role, article_published_at=published)
        for article_id, folded, published in rows
        for e, role in tagger.tag_roles(folded)
    ]
    bulk_insert(con, "article_entities", out, ENTITY_COLUMNS)
    return len(out)


# --------------------------------------------------------------------------- place roles
# Shallow bilingual patterns over folded tokens (``sources.normalize.fold``: lower case,
# Arabic hamza/ta marbuta/alif maqsura folded, punctuation gone). Words are folded here too.

def _folded(words: str) -> frozenset[str]:
    return frozenset(fold(words).split())


# Words between a cue and the place name that do not change the role: "from the town of
# Zummar", "on the US air base at", "من ناحية زمار", "على قاعدة عين الأسد".
_FILLER = _folded(
    "the a an of town city village area district region province governorate countryside outskirts territory "
    "territories desert border us u s american coalition base bases air airbase airfield military garrison outpost "
    "camp field oil gas facility compound international airport iraqi syrian jordanian near its their "
    "منطقة بلدة مدينة قرية ناحية قضاء محافظة ريف أراضي الأراضي داخل محيط أطراف ضواحي جهة بادية إقليم "
    "قاعدة القاعدة قواعد معسكر مطار حقل الأمريكية الأميركية الأمريكي الأميركي أمريكية أميركية أمريكي أميركي "
    "التحالف الدولي قوات القوات للقوات الاحتلال الجوية العسكرية العراقية السورية الأردنية"
)
# Words that tie a place to the one just before it, which it then shares the role of:
# "from Zummar in Nineveh province", "على قاعدة رميلان في محافظة الحسكة".
_LINK = _FILLER | _folded(
    "in of northern southern eastern western north south east west northeast northwest southeast southwest "
    "في غرب شرق شمال جنوب غربي شرقي شمالي جنوبي"
)
_FROM = _folded("from من")
_LAUNCH_BEFORE_FROM = _folded(
    "launched fired came coming flew took off originated originating launch launching firing "
    "انطلقت انطلق أطلقت أطلق أطلقها أطلقه انطلاقا قادمة قادما قادمات آتية أتت جاءت مصدرها"
)
_ORIGIN = _folded("originating originated origin مصدرها مصدره مصدر")
# "from" that says where something is, or where someone left: "20 km from Tanf", "near".
_NOT_LAUNCH = _folded(
    "km kilometres kilometers kilometre kilometer miles mile metres meters away far withdraw withdrew withdrawal "
    "withdrawing pulled pull leave left evacuated evacuation moved relocated redeployed "
    "كم كيلومتر كيلومترات كيلومترا ميل أميال مسافة قرب بالقرب مقربة بعيدا انسحاب انسحبت انسحب الانسحاب "
    "إخلاء نقل خروج مغادرة"
)
# "launchers found in Zummar", "منصة إطلاق الصواريخ في زمار": where the launcher stood.
_LAUNCHER = ("launcher", "launchpad", "launch", "rails", "منصه", "منصات", "راجمه", "راجمات")
_AT = _folded("in at near outside في قرب بالقرب داخل")
_TARGET_CUE = _folded(
    "on at against targeting targeted targets target hit hitting hits struck toward towards into attacked "
    "attacking shelled shelling "
    "على استهداف استهدف استهدفت يستهدف تستهدف يستهدفان تستهدفان نحو باتجاه صوب طال طالت ضرب ضربت قصف قصفت "
    "هاجم هاجمت مهاجمة في"
)
_ATTACK_EN = ("attack", "rocket", "drone", "missile", "mortar", "shell", "strike", "struck", "hit", "target",
              "fire", "blast", "explosi", "bomb", "projectile", "barrage", "katyusha", "ied", "launch", "salvo", "uav")
_ATTACK_AR = tuple(fold(w) for w in (
    "هجوم", "هجم", "هاجم", "استهداف", "استهدف", "يستهدف", "تستهدف", "قصف", "صاروخ", "صواريخ", "قذيف", "قذائف",
    "مسير", "طائر", "انفجار", "عبو", "إطلاق", "أطلق", "انطلق", "ضرب", "غار", "رشق", "كاتيوش", "مفخخ"))
_CLITICS = ("و", "ف", "ب", "ل", "ك", "ال", "وال", "بال", "فال", "لل", "وب", "ول")
_NEAR = 8  # a target cue counts when an attack word is this close


def _attack_word(tok: str) -> bool:
    if tok.startswith(_ATTACK_EN):
        return True
    if tok.startswith(_ATTACK_AR):
        return True
    return any(tok.startswith(c) and tok[len(c):].startswith(_ATTACK_AR) for c in _CLITICS if len(tok) > len(c) + 2)


# Every place mention looks at the 17 words around it: the answer is remembered per word.
_is_attack = lru_cache(maxsize=16384)(_attack_word)


def _cue_before(tokens: Sequence[str], start: int, fillers: frozenset) -> int:
    """Index of the first token before ``start`` that is not filler (at most 4 skipped), or -1."""
    i = start - 1
    while i >= 0 and tokens[i] in fillers and start - i <= 4:
        i -= 1
    return i if i >= 0 and tokens[i] not in fillers else -1


def _launch(tokens: Sequence[str], start: int) -> bool:
    i = _cue_before(tokens, start, _FILLER)
    if i < 0:
        return False
    near = tokens[max(0, start - 5):start]
    if any(t in _AT and any(u.startswith(_LAUNCHER) for u in near[:k]) for k, t in enumerate(near)):
        return True
    cue = tokens[i]
    if cue in _ORIGIN:  # "originating in Zummar" is caught below; "مصدرها زمار" here
        return cue != "origin"
    if cue == "in" and i > 0 and tokens[i - 1] in _ORIGIN:
        return True
    if cue not in _FROM:
        return False
    before = tokens[max(0, i - 6):i]
    if before and (before[-1] in _NOT_LAUNCH or (len(before) > 1 and before[-2] in _NOT_LAUNCH)):
        return False
    if before and before[-1] in _LAUNCH_BEFORE_FROM:
        return True
    return any(_is_attack(t) or t in _LAUNCH_BEFORE_FROM for t in before)


def _target(tokens: Sequence[str], start: int) -> bool:
    i = _cue_before(tokens, start, _FILLER)
    if i < 0 or tokens[i] not in _TARGET_CUE:
        return False
    lo, hi = max(0, i - _NEAR), min(len(tokens), i + _NEAR + 1)
    return any(_is_attack(tokens[j]) for j in range(lo, hi))


def place_roles(tokens: Sequence[str], mentions: Iterable) -> dict[str, str]:
    """The role of each place an article names: ``"launch"`` (fired from there), ``"target"``
    (attacked there) or ``"other"``.

    ``tokens`` are the folded words of the text (``fold(text).split()``); ``mentions`` are
    ``(entity_id, start, end)`` token spans, or objects with ``ref``, ``position`` and ``text``
    (the matcher's ``Hit``). A place is a launch place after "from" / "من" when a launch or
    attack word comes just before ("rockets fired from Zummar", "صواريخ انطلقت من زمار"), or
    after "originating in" / "مصدرها". It is a target after "on", "at", "against",
    "targeting", "towards", "على", "استهداف", "نحو", "في"... when an attack word is within
    8 words ("drone attack on the US base at Rumailan"). A place joined to the one before it
    by "in", "of" or a direction ("from Zummar in Nineveh province") shares its role.
    A place named as a target anywhere is a target; one named only as a launch place (and
    otherwise in passing) is a launch place, so event identity never takes it for the target.
    """
    spans: list[tuple[int, int, str]] = []
    for m in mentions:
        if isinstance(m, tuple):
            eid, a, b = m
        else:
            eid, a = m.ref, m.position
            b = a + len(m.text.split())
        spans.append((a, b, eid))
    spans.sort()
    per: dict[str, set[str]] = {}
    prev: tuple[int, int, str] | None = None  # (start, end, role) of the mention before
    for a, b, eid in spans:
        role = None
        if prev is not None and prev[2] != "other":
            if prev[0] <= a < prev[1]:
                role = prev[2]  # a name inside a longer one
            elif prev[1] < a and a - prev[1] <= 4 and all(t in _LINK for t in tokens[prev[1]:a]):
                role = prev[2]
        if role is None:
            role = "launch" if _launch(tokens, a) else "target" if _target(tokens, a) else "other"
        per.setdefault(eid, set()).add(role)
        if prev is None or a >= prev[1] or role != "other":
            prev = (a, b, role)
    return {eid: "target" if "target" in rs else "launch" if "launch" in rs else "other" for eid, rs in per.items()}
