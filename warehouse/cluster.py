"""Event identity: which event a report belongs to, across outlets and languages.

An event is one real-world occurrence of one indicator (one attack, one strike). Reports
are taken in order of publication; each one joins the first event that the rules below
find, or opens a new event. The event's time is its earliest report, so reports that
join later never move it forward (a late or follow-up report cannot reset a quiet period).

What a report brings (``Report``): its indicator, time, canonical URL, content hash, a
MinHash sketch of its folded text (``warehouse.neardup``), and the gazetteer entries it
names anywhere (``alerts.entities``), by ids that are the same in Arabic and English:

* places: bases, diplomatic sites, cities, ports, areas (kind ``base`` ... ``area``), the
  towns, provinces and regions places.yaml nests (``within``: site -> town -> province ->
  region -> country; ``alerts.places``), and countries (kind ``country``). A place the
  report names only as where the attack came from ("rockets fired from Zummar", role
  ``launch`` in ``article_entities``, ``alerts.entities.place_roles``) is left out: the
  launch place is never taken for the place attacked. An ``unnamed_site`` ("a US base in
  Hasakah") counts as the place it is within. Actors: named groups and state forces (not descriptors
  such as "Iran-backed militia", not "US forces"); weapons (drone, rocket/missile, mortar,
  IED, gunfire); cues: ``followup`` (looks back: "last week's attack", arrests, satellite
  images) and ``renewed`` ("another attack", "هجوم جديد", "للمرة الثانية").

An event carries the union of its reports' places, actors, weapons and cues.

Two sets of places *agree* when a most specific place of one (one that contains none of the
others of its set) is, contains, or lies within a most specific place of the other: {the
base at Rumailan} agrees with {Hasakah province} and with {northeast Syria}, and all three
with {Rumailan, Hasakah}; {Shaddadi, Hasakah} does not agree with {Rumailan, Hasakah}: two
bases of one province are siblings, and siblings are not containment. Countries are not
compared this way (see rule 5). Without the nesting only identical places agree.

Decision rules, in this order (``how`` in ``event_articles`` records which one joined):

1. ``same_url`` / ``same_guid`` / ``same_content``: an exact copy (same canonical URL, same
   feed entry id, or the same folded title and summary) of a report of an event of the same indicator first reported within
   ``EXACT_HORIZON`` (7 days). Copies join whatever else they say.
2. Candidates: events of the same indicator first reported within ``WINDOW`` (36 h) of the
   report, either side. A candidate whose specific places do not agree with the report's
   (both name some) *conflicts* and is never joined by the rules below: a mortar attack on
   Harir is not the mortar attack on Ain al-Asad, however alike the text, and the attack on
   Shaddadi is not the one on Rumailan.
   Nor is one first reported ``RENEWED_GAP`` (6 h) or more before a report that says it is
   another attack (``renewed`` cue), unless the candidate is itself a renewed attack.
3. ``near_duplicate``: the report's text is a near-duplicate (MinHash LSH, estimated
   Jaccard >= 0.5 on character 3-grams, same numbers and negations) of a report of a
   candidate: syndicated and lightly edited copies, updated headlines.
4. ``same_place`` / ``nested_place``: the report's places agree with a candidate's, and
   they do not name disjoint weapons (a drone on Ain al-Asad is not a rocket on it) nor
   disjoint actors (Kataib Hezbollah's attack is not the IRGC's; an umbrella such as the
   Islamic Resistance in Iraq, which claims for its members, is compatible with any).
   ``same_place`` when they share a most specific place, ``nested_place`` when one contains
   the other ("rockets from Zummar at a US base in northeast Syria", "the base at
   Rumailan", "Hasakah province": one attack). This is what joins an Arabic report to an
   English one: the place ids are shared.
5. ``same_actor``: one side names no specific place, and they share a named actor and a
   country, and do not name disjoint weapons ("Kataib Hezbollah drone attack on US
   forces in Iraq" joins the Ain al-Asad event that Kataib Hezbollah claimed).
   Among several candidates of rules 4 and 5, the one first reported closest in time wins.
6. ``followup``: a report with a ``followup`` cue whose places agree with those of an event
   of the same indicator first reported up to ``FOLLOWUP_HORIZON`` (30 days) earlier
   attaches to the most recent such event (most follow-ups are already excluded by the
   indicator files; this catches those that get through).
7. Otherwise the report opens a new event (``first``).

So two attacks on the same base stay two events when they are more than 36 h apart,
name different weapons, or the later reports say "another attack"; two attacks on
different bases the same day stay apart by rule 2, also when they are in one province.
Iran's own strikes and a proxy's are different indicators, hence different events.
Known limits: two attacks on the same base within 36 h with the same weapon and no
"another attack" wording become one event, and a report naming only a province or a
region joins the closest in time of two attacks at sites within it (undercounts, never a
double count); an event first reported only by region ("a US base in northeast Syria")
can take a report of any site in that region within the window.
"""
from __future__ import annotations

import bisect
import hashlib
import math
import heapq
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from datasketch import MinHash, MinHashLSH

from alerts.places import PlaceHierarchy
from warehouse import _kernels, neardup

WINDOW = timedelta(hours=36)
EXACT_HORIZON = timedelta(days=7)
RENEWED_GAP = timedelta(hours=6)
FOLLOWUP_HORIZON = timedelta(days=30)
CLOSE_AFTER = FOLLOWUP_HORIZON + WINDOW  # no rule reaches an event first reported longer before

PLACE_KINDS = frozenset({"base", "diplomatic", "city", "port", "area"})
# Places that count only where places.yaml nests them (``within``): the towns, provinces and
# regions around the sites. A region nobody nested ("northern Israel") is not compared.
NESTED_KINDS = frozenset({"town", "district", "province", "region", "unnamed_site"})
ACTOR_KINDS = frozenset({"militia", "militia_umbrella", "state_force"})
NO_PLACES = PlaceHierarchy()
_NONE: frozenset[str] = frozenset()  # shared by the many reports that name nothing


class cached_property:  # noqa: N801 - functools.cached_property without its lock: a Report is never shared between threads
    def __init__(self, fn) -> None:
        self.fn, self.name = fn, fn.__name__

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value


@dataclass
class Report:
    article_id: str
    indicator: str
    published: datetime
    fetched: datetime
    title: str
    url: str | None
    content_hash: str
    folded: str
    guid: str | None
    sketch: MinHash | np.ndarray  # a MinHash, or its hash values (one row of ``neardup.signatures``)
    entities: set[tuple[str, str, str]] = field(default_factory=set)  # (gazetteer, id, kind)
    launch: frozenset[str] = frozenset()  # places named only as where the attack came from

    def __post_init__(self) -> None:
        if not self.entities:  # most reports name nothing: their sets are known without a look
            self.__dict__.update(_NOTHING_NAMED)

    def _ids(self, gazetteer: str, kinds: frozenset | None = None) -> frozenset[str]:
        if not self.entities:
            return _NONE
        return frozenset(i for g, i, k in self.entities if g == gazetteer and (kinds is None or k in kinds)) or _NONE

    @cached_property
    def places(self) -> frozenset[str]:
        """The specific places the report names, launch places excepted (no nesting known)."""
        return self.where(NO_PLACES)

    def where(self, h: PlaceHierarchy) -> frozenset[str]:
        """The specific places of the attack: sites, and the towns, provinces and regions that
        ``h`` nests; never a launch place; an ``unnamed_site`` as the place it is within."""
        if not self.entities:
            return _NONE
        return frozenset(
            h.resolve(i) for g, i, k in self.entities
            if g == "places" and i not in self.launch and (k in PLACE_KINDS or (k in NESTED_KINDS and i in h.parent))
        ) or _NONE

    @cached_property
    def claim(self) -> tuple:
        """Its numbers and reversal words (``neardup.claim``), computed once."""
        return neardup.claim(self.folded)

    @cached_property
    def countries(self) -> frozenset[str]:
        found = self._ids("places", frozenset({"country"}))
        return found - self.launch if found and self.launch else found

    @cached_property
    def umbrella(self) -> bool:
        """Names an umbrella of groups ("Islamic Resistance in Iraq"), which claims for its members."""
        return any(g == "actors" and k == "militia_umbrella" for g, _, k in self.entities)

    @cached_property
    def actors(self) -> frozenset[str]:
        return self._ids("actors", ACTOR_KINDS)

    @cached_property
    def weapons(self) -> frozenset[str]:
        return self._ids("weapons")

    @cached_property
    def cues(self) -> frozenset[str]:
        return self._ids("cues")

    def keys(self) -> list[tuple[str, str]]:
        keys = [("u:" + self.url, "same_url")] if self.url else []
        keys += [("g:" + self.guid, "same_guid")] if self.guid else []
        return keys + [("h:" + self.content_hash, "same_content")]


_NOTHING_NAMED = dict(places=_NONE, countries=_NONE, umbrella=False, actors=_NONE, weapons=_NONE, cues=_NONE)


@dataclass(slots=True)
class Event:
    """One event while it can still be joined. Slotted, and its sets are the shared empty
    set until a report names something (most events name few places and no cues)."""
    event_id: str
    indicator: str
    first_report_at: datetime
    first_seen_at: datetime
    title: str
    new: bool = False
    changed: bool = False
    places: frozenset[str] = _NONE
    countries: frozenset[str] = _NONE
    actors: frozenset[str] = _NONE
    weapons: frozenset[str] = _NONE
    cues: frozenset[str] = _NONE
    umbrella: bool = False
    core: frozenset[str] = _NONE  # the most specific of ``places`` (kept by the Clusterer)

    def absorb(self, r: Report, where: frozenset[str] | None = None) -> None:
        if r.published < self.first_report_at or r.fetched < self.first_seen_at:
            self.changed = not self.new
        self.first_report_at = min(self.first_report_at, r.published)
        self.first_seen_at = min(self.first_seen_at, r.fetched)
        where = r.places if where is None else where
        if where and not where <= self.places:
            self.places = self.places | where
        self.umbrella |= r.umbrella
        if r.entities:
            if r.countries and not r.countries <= self.countries:
                self.countries = self.countries | r.countries
            if r.actors and not r.actors <= self.actors:
                self.actors = self.actors | r.actors
            if r.weapons and not r.weapons <= self.weapons:
                self.weapons = self.weapons | r.weapons
            if r.cues and not r.cues <= self.cues:
                self.cues = self.cues | r.cues

    def row(self) -> dict:
        """The ``events`` table's columns."""
        return dict(event_id=self.event_id, indicator=self.indicator, first_report_at=self.first_report_at,
                    first_seen_at=self.first_seen_at, title=self.title)


def event_id_for(indicator: str, article_id: str) -> str:
    return hashlib.sha1(f"{indicator}\x1f{article_id}".encode()).hexdigest()[:20]


def _disjoint(a: set, b: set) -> bool:
    return bool(a) and bool(b) and not (a & b)


def _other_actors(r: Report, ev: "Event") -> bool:
    """Both name groups or state forces, none in common, and neither names an umbrella that
    claims for its members: Kataib Hezbollah's attack is not the IRGC's."""
    return _disjoint(r.actors, ev.actors) and not (r.umbrella or ev.umbrella)


class Clusterer:
    """Holds the recent events (and their reports) of some indicators; ``assign`` decides.

    Reports are assigned in order of publication, so what a report is compared with is
    bounded by the time windows above, not by how much history is loaded: near-duplicates
    are looked up in a MinHash LSH index per indicator from which reports of events older
    than ``WINDOW`` are evicted as time advances; events that name a place or an actor are
    found through an index by that id (places also under each place containing them), kept
    in time order so a lookup reads only the window; exact-copy keys expire after
    ``EXACT_HORIZON``.
    So each report costs about the same however many reports the warehouse holds.

    Memory is bounded the same way: an event first reported more than ``CLOSE_AFTER``
    before the report being assigned can be joined by no rule (every index entry of it is
    older than any rule looks back), so it leaves ``events``; if it is new or moved, it
    waits in ``closed`` until the caller writes it (``take_closed``).
    """

    def __init__(self, places: PlaceHierarchy | None = None) -> None:
        self.places = places or NO_PLACES  # the nesting of places.yaml (``within``)
        self.events: dict[str, Event] = {}
        self._keys: dict[tuple[str, str], str] = {}  # (indicator, url/guid/hash key) -> event_id
        self._key_expiry: deque[tuple[datetime, tuple[str, str], str]] = deque()  # (event time, key, event_id)
        self._pools: dict[str, _Pool] = {}  # per indicator: the reports near-duplicates are sought among
        self._live: list[tuple[datetime, str, str]] = []  # heap of (event time when added, indicator, member id)
        # (indicator, id) -> [(event time when indexed, event id)] in time order: the events
        # that name a place, name a place within it (_by_area), or name an actor.
        self._by_place: dict[tuple[str, str], list[tuple[datetime, str]]] = {}
        self._by_area: dict[tuple[str, str], list[tuple[datetime, str]]] = {}
        self._by_actor: dict[tuple[str, str], list[tuple[datetime, str]]] = {}
        self._ages: list[tuple[datetime, str]] = []  # heap of (event time when added, event id)
        self.closed: list[Event] = []  # new or moved events no report can join any more

    def add_event(self, ev: Event) -> None:
        self.events[ev.event_id] = ev
        heapq.heappush(self._ages, (ev.first_report_at, ev.event_id))
        self._index_event(ev)

    def take_closed(self) -> list[Event]:
        out, self.closed = self.closed, []
        return out

    def _index_event(self, ev: Event, places: set[str] | None = None, actors: set[str] | None = None) -> None:
        entry = (ev.first_report_at, ev.event_id)
        for p in ev.places if places is None else places:
            bisect.insort(self._by_place.setdefault((ev.indicator, p), []), entry)
            for a in self._areas(p):
                bisect.insort(self._by_area.setdefault((ev.indicator, a), []), entry)
        for a in ev.actors if actors is None else actors:
            bisect.insort(self._by_actor.setdefault((ev.indicator, a), []), entry)

    def add_known_event(self, ev: Event, entities) -> None:
        """An event already linked to reports, given the entities its reports name instead of
        the reports: ``(gazetteer, id, kind, launch)`` rows, ``launch`` when that report names
        the id as a launch place. Its places, countries, actors, weapons, cues and umbrella are
        the union over its reports of what ``add_member`` would take from each report, so
        rules 2 to 6, which read only these sets and the event's time, decide as if its
        reports had been added; its members' keys and sketches are added apart
        (``add_member_keys``, ``add_member_sketch``) only where a rule still reads them."""
        h = self.places
        places, countries, actors, weapons, cues = set(), set(), set(), set(), set()
        for g, i, k, launch in entities:
            if g == "places":
                if launch:
                    continue
                if k in PLACE_KINDS or (k in NESTED_KINDS and i in h.parent):
                    places.add(h.resolve(i))
                elif k == "country":
                    countries.add(i)
            elif g == "actors":
                if k in ACTOR_KINDS:
                    actors.add(i)
                ev.umbrella |= k == "militia_umbrella"
            elif g == "weapons":
                weapons.add(i)
            elif g == "cues":
                cues.add(i)
        ev.places, ev.countries = frozenset(places) or _NONE, frozenset(countries) or _NONE
        ev.actors, ev.weapons, ev.cues = frozenset(actors) or _NONE, frozenset(weapons) or _NONE, frozenset(cues) or _NONE
        if ev.places:
            ev.core = frozenset(h.most_specific(ev.places))
        self.add_event(ev)

    def add_member(self, event_id: str, r: Report, where: frozenset[str] | None = None) -> None:
        """Record that ``r`` belongs to the event (existing links, or a decision just made)."""
        ev = self.events[event_id]
        where = r.where(self.places) if where is None else where
        # (most reports name nothing: no set made for them)
        new_places, new_actors = (where - ev.places) if where else _NONE, (r.actors - ev.actors) if r.actors else _NONE
        ev.absorb(r, where)
        if new_places:
            ev.core = frozenset(self.places.most_specific(ev.places))
        if new_places or new_actors:
            self._index_event(ev, new_places, new_actors)
        self.add_member_keys(event_id, r.indicator, r.url, r.guid, r.content_hash)
        self.add_member_sketch(event_id, r.indicator, r.article_id, r.sketch, r.__dict__.get("claim") or r.folded)

    def add_member_keys(self, event_id: str, indicator: str, url: str | None, guid: str | None, content_hash: str) -> None:
        """Rule 1's keys of a report of the event (canonical URL, entry id, content hash): the
        first event to hold a key keeps it until it expires (``EXACT_HORIZON`` after the event)."""
        keys, at = self._keys, self.events[event_id].first_report_at
        for key in (("u:" + url) if url else None, ("g:" + guid) if guid else None, "h:" + content_hash):
            if key is not None and (key := (indicator, key)) not in keys:
                keys[key] = event_id
                self._key_expiry.append((at, key, event_id))

    def add_member_sketch(self, event_id: str, indicator: str, article_id: str, sketch, claim: tuple | str) -> None:
        """A report of the event among those near-duplicates are sought in (rule 3), until the
        event is older than ``WINDOW``; ``claim`` is its ``neardup.claim``, or its folded text
        to take the claim from when a near-duplicate search first needs it."""
        pool = self._pools.get(indicator)
        if pool is None:
            pool = self._pools[indicator] = _Pool()
        member = f"{event_id}:{article_id}"
        if pool.add(member, event_id, sketch, claim):
            heapq.heappush(self._live, (self.events[event_id].first_report_at, indicator, member))

    def _advance(self, now: datetime) -> None:
        """Forget what no report at or after ``now`` can match. An event's time only moves
        earlier, so the time it had when indexed is a safe (late) bound."""
        live, since = self._live, now - WINDOW
        while live and live[0][0] < since:
            _, indicator, member = heapq.heappop(live)
            self._pools[indicator].remove(member)
        expiry, since = self._key_expiry, now - EXACT_HORIZON
        while expiry and expiry[0][0] < since:
            _, key, event_id = expiry.popleft()
            if self._keys.get(key) == event_id:  # not a later event's claim on the same key
                del self._keys[key]
        # Every index entry of an event is at or before the time it was added with, and no
        # rule looks further back than CLOSE_AFTER (a key older than EXACT_HORIZON is
        # refused by its time, see _decide), so such an event can be joined no more.
        since = now - CLOSE_AFTER
        while self._ages and self._ages[0][0] < since:
            _, event_id = heapq.heappop(self._ages)
            ev = self.events.pop(event_id, None)
            if ev is not None and (ev.new or ev.changed):
                self.closed.append(ev)

    def assign(self, r: Report) -> tuple[str, str]:
        """(event_id, how) for the report; the report is recorded as a member.
        Reports must come in order of publication (``assign_events`` sorts them)."""
        self._advance(r.published)
        where = r.where(self.places)
        event_id, how = self._decide(r, where)
        if event_id is None:
            event_id, how = event_id_for(r.indicator, r.article_id), "first"
            self.add_event(Event(event_id, r.indicator, r.published, r.fetched, r.title, new=True))
        self.add_member(event_id, r, where)
        return event_id, how

    def _since(self, index: dict, key: tuple[str, str], since: datetime) -> list[str]:
        """The ids under ``key`` of events indexed at a time at or after ``since`` (an event's
        time only moves earlier, so one that belongs is never left out), and forgets the
        entries no rule can reach any more (older than ``FOLLOWUP_HORIZON`` + ``WINDOW``
        before ``since``): a lookup costs what the window holds, not all history."""
        entries = index.get(key)
        if not entries:
            return []
        stale = bisect.bisect_left(entries, (since - FOLLOWUP_HORIZON - WINDOW,))
        if stale:
            del entries[:stale]
        return [e for _, e in entries[bisect.bisect_left(entries, (since,)):]]

    def _indexed(self, index: dict, indicator: str, ids: set[str], since: datetime) -> list[Event]:
        found = {e for i in ids for e in self._since(index, (indicator, i), since)}
        return [self.events[e] for e in sorted(found)]

    def _areas(self, place: str) -> tuple[str, ...]:
        """The places that contain ``place``, countries excepted (countries are compared apart)."""
        return tuple(a for a in self.places.ancestors(place) if self.places.kinds.get(a) != "country")

    def _nested(self, indicator: str, places: set[str], since: datetime) -> list[Event]:
        """Events (indexed at or after ``since``) that name one of ``places``, a place
        containing one, or a place within one."""
        if not places:
            return []
        found: set[str] = set()
        for p in places:
            for q in (p, *self._areas(p)):
                found.update(self._since(self._by_place, (indicator, q), since))
            found.update(self._since(self._by_area, (indicator, p), since))
        return [self.events[e] for e in sorted(found)]

    def _apart(self, a: frozenset[str], b: frozenset[str]) -> bool:
        """Both name specific places and none of the most specific places of one side (``a``,
        ``b``: ``core``) contains, or lies within, one of the other's: a report of Shaddadi is
        apart from an event at Rumailan (two bases of one province), one of "Hasakah
        province" is not."""
        if not a or not b or not a.isdisjoint(b):
            return False
        related = self.places.related
        return not any(related(x, y) for x in a for y in b)

    def _decide(self, r: Report, where: set[str]) -> tuple[str | None, str | None]:
        for key, why in r.keys():
            ev = self.events.get(self._keys.get((r.indicator, key)))  # a closed event's key: too old anyway
            if ev is not None and abs(r.published - ev.first_report_at) <= EXACT_HORIZON:
                return ev.event_id, why
        places, actors, weapons, countries = where, r.actors, r.weapons, r.countries
        core = frozenset(self.places.most_specific(places)) if places else _NONE  # most reports name no place
        renewed = "renewed" in r.cues

        def candidate(ev: Event) -> bool:
            return (
                ev.indicator == r.indicator and abs(r.published - ev.first_report_at) <= WINDOW
                and not self._apart(core, ev.core)
                and not (renewed and "renewed" not in ev.cues and r.published - ev.first_report_at >= RENEWED_GAP)
            )

        near = self._near_duplicate(r, candidate)
        if near is not None:
            return near, "near_duplicate"

        def closest(evs: list[Event]) -> str | None:
            return min(evs, key=lambda e: (abs(r.published - e.first_report_at), e.event_id)).event_id if evs else None

        same_place = [
            ev for ev in self._nested(r.indicator, places, r.published - WINDOW)
            if candidate(ev) and not _disjoint(weapons, ev.weapons) and not _other_actors(r, ev)
        ]
        if same_place:
            best = closest(same_place)
            return best, "same_place" if core & self.events[best].core else "nested_place"
        same_actor = [
            ev for ev in (self._indexed(self._by_actor, r.indicator, actors, r.published - WINDOW) if actors else ())
            if candidate(ev) and not (places and ev.places) and countries & ev.countries
            and not _disjoint(weapons, ev.weapons)
        ]
        if same_actor:
            return closest(same_actor), "same_actor"
        if "followup" in r.cues and places:
            older = [
                ev for ev in self._nested(r.indicator, places, r.published - FOLLOWUP_HORIZON)
                if timedelta(0) <= r.published - ev.first_report_at <= FOLLOWUP_HORIZON
                and not self._apart(core, ev.core)
            ]
            if older:
                return max(older, key=lambda e: (e.first_report_at, e.event_id)).event_id, "followup"
        return None, None

    def _near_duplicate(self, r: Report, candidate) -> str | None:
        """The event of the most similar near-duplicate among the candidates' reports
        (ties: the smallest member id), or None."""
        pool = self._pools.get(r.indicator)
        if pool is None:
            return None
        rows, sims = pool.similar(r.sketch)
        if not len(rows):
            return None
        # During a campaign a report has hundreds of near-duplicates: their claims and events
        # are compared as codes, one numpy comparison each, not one Python call per row.
        claims = pool.claim_codes(rows)
        mine = pool.claim_code_of.get(r.claim)
        if mine is None:  # no row has this claim
            return None
        keep = claims == mine
        rows, sims = rows[keep], sims[keep]
        if not len(rows):
            return None
        codes, which = np.unique(pool.events[rows], return_inverse=True)
        ok = np.array([candidate(self.events[pool.event_ids[c]]) for c in codes.tolist()], dtype=bool)
        keep = ok[which]
        rows, sims = rows[keep], sims[keep]
        if not len(rows):
            return None
        top = rows[sims == sims.max()]
        member = min(pool.members[i] for i in top.tolist())
        return pool.event_ids[pool.events[pool.row_of[member]]]


def _agreements(matrix: np.ndarray, row: np.ndarray) -> np.ndarray:
    """How many of its hash values each row of ``matrix`` shares with ``row``: as
    ``np.count_nonzero(matrix == row, axis=1)``, twice as fast. The 0/1 flags are read 8 to a
    64-bit word and the words summed (each byte ends at most 16, so no carries), then the
    bytes of each sum are added by one multiplication."""
    eq = np.ascontiguousarray(matrix == row).view(np.uint64)
    return ((eq.sum(axis=1, dtype=np.uint64) * np.uint64(0x0101010101010101)) >> np.uint64(56)).astype(np.int64)


_AGREE = math.ceil(neardup.THRESHOLD * neardup.NUM_PERM)  # hash values two near-duplicates share, at least
# The first pass compares the low bytes of the first ``_LOW`` hash values only: two sketches
# that share at least ``_AGREE`` of all ``NUM_PERM`` values share at least ``_LOW_AGREE`` =
# ``_AGREE - (NUM_PERM - _LOW)`` of the first ``_LOW`` (and their low bytes agree wherever the
# values do), so no near-duplicate is missed. Texts of one language share common 3-grams, so
# unrelated sketches agree on a few values (about 5 of 128 in the dedupe bench); 16 of the
# first 80 is far above that (and above chance agreement of low bytes, 1 in 256), so almost
# no row is let through to the full comparison, and the pass reads 80 bytes a row, not 128.
_LOW = neardup.NUM_PERM - _AGREE + 16
_LOW_AGREE = _AGREE - (neardup.NUM_PERM - _LOW)
_NO_SIMS = np.empty(0)
_NO_ROWS = np.empty(0, dtype=np.int64)


class _Pool:
    """The reports of one indicator that near-duplicates are sought among (those of events
    within ``WINDOW``): their sketches as rows of one matrix, so similarities to all of them
    are one compiled scan (``warehouse/_kernels.c``, ``similar``), plus a MinHash LSH index over the same rows, used instead
    when there are so many that comparing with each costs more than an LSH lookup.
    Both find near-duplicates at estimated Jaccard >= ``neardup.THRESHOLD``; the matrix is
    exact where LSH may miss a pair just above the threshold. The LSH index exists only
    while there are more than ``SCAN_MAX`` live rows (built from the matrix when they pass
    it, dropped when they fall below half of it), so the common case pays no LSH inserts."""

    SCAN_MAX = 2048  # up to this many live rows, compare with all of them (~100 us at 2,048)

    def __init__(self) -> None:
        self.matrix = np.empty((64, neardup.NUM_PERM), dtype=neardup._DTYPE)
        # The low byte of each of the first ``_LOW`` hash values, one column per row: a cheap
        # first comparison (agreeing values agree in their low bytes, so it never undercounts)
        # whose sum over the ``_LOW`` rows is a fast vertical add; only the rows it lets
        # through are compared in full.
        self.low = np.empty((_LOW, 64), dtype=np.uint8)
        self.events = np.empty(64, dtype=np.int64)  # row -> event code
        self.alive = np.zeros(64, dtype=bool)
        self.members: list[str] = []  # row -> member id
        self.row_of: dict[str, int] = {}
        self.event_ids: list[str] = []  # event code -> event id
        self._event_code: dict[str, int] = {}
        self.claims: list[tuple | str] = []  # row -> its claim, or its folded text until the claim is needed
        # row -> a code of its claim (equal claims, equal codes; 0: not taken yet). The codes
        # are forgotten at each compaction, so claims of evicted rows are not kept.
        self.claim_ids = np.zeros(64, dtype=np.int64)
        self.claim_code_of: dict[tuple, int] = {}
        self._acc = np.empty(64, dtype=np.uint8)  # scratch of ``_kernels.similar``: a counter a row
        self._rows = np.empty(64, dtype=np.int64)  # ... and its results: rows, agreements
        self._agree = np.empty(64, dtype=np.int64)
        self.live = 0
        self.lsh: MinHashLSH | None = None

    def claim(self, row: int) -> tuple:
        """The row's ``neardup.claim`` (taken from its text the first time it is asked for:
        most reports are never compared with any other)."""
        c = self.claims[row]
        if isinstance(c, str):
            c = self.claims[row] = neardup.claim(c)
        return c

    def claim_codes(self, rows: np.ndarray) -> np.ndarray:
        """The codes of the rows' claims (each row's claim taken the first time it is asked for)."""
        codes = self.claim_ids[rows]
        todo = rows[codes == 0]
        if len(todo):
            of = self.claim_code_of
            for i in todo.tolist():
                self.claim_ids[i] = of.setdefault(self.claim(i), len(of) + 1)
            codes = self.claim_ids[rows]
        return codes

    def add(self, member: str, event_id: str, sketch: MinHash | np.ndarray, claim: tuple | str) -> bool:
        """Add a report (its sketch as a MinHash or as its hash values; its claim, or its
        folded text to take the claim from when needed)."""
        if member in self.row_of:
            return False
        n = len(self.members)
        if n == len(self.matrix):
            if self.live < n // 2:
                self._compact()
                n = len(self.members)
            else:
                self._grow()
        hashvalues = getattr(sketch, "hashvalues", sketch)
        code = self._event_code.get(event_id)
        if code is None:
            code = self._event_code[event_id] = len(self.event_ids)
            self.event_ids.append(event_id)
        hashvalues = np.ascontiguousarray(hashvalues, dtype=neardup._DTYPE)
        _kernels.put(self.low, self.matrix, n, hashvalues)  # its row of ``matrix``, its column of low bytes of ``low``
        self.events[n] = code
        self.claims.append(claim)
        self.claim_ids[n] = 0
        self.alive[n] = True
        self.members.append(member)
        self.row_of[member] = n
        self.live += 1
        if self.lsh is not None:
            self.lsh.insert(member, neardup.from_signature(hashvalues))
        elif self.live > self.SCAN_MAX:
            self.lsh = MinHashLSH(threshold=neardup.THRESHOLD, num_perm=neardup.NUM_PERM)
            with self.lsh.insertion_session() as session:
                for m, row in self.row_of.items():
                    session.insert(m, neardup.from_signature(self.matrix[row]))
        return True

    def remove(self, member: str) -> None:
        row = self.row_of.pop(member)
        self.alive[row] = False
        self.live -= 1
        # Every scan reads the dead rows too (80 bytes each, in a compiled loop: ~1 us per 300), and a
        # compaction rebuilds the row and event maps (~0.4 ms at 750 live rows): half as many dead rows
        # as live ones before it is done.
        if len(self.members) - self.live > max(self.live // 2, 64):
            self._compact()
        if self.lsh is not None:
            if self.live < self.SCAN_MAX // 2:
                self.lsh = None
            else:
                self.lsh.remove(member)

    def similar(self, sketch: MinHash | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, similarities) of the live reports at or above the threshold."""
        n = len(self.members)
        hashvalues = np.ascontiguousarray(getattr(sketch, "hashvalues", sketch), dtype=neardup._DTYPE)
        if self.lsh is None:
            # Both passes in one compiled loop (``warehouse/_kernels.c``): the low bytes' counts,
            # then the full comparison of the live rows that pass; no array made per call.
            found = _kernels.similar(self.low, self.matrix, self.alive, hashvalues, n, _LOW_AGREE, _AGREE,
                                     self._acc, self._rows, self._agree)
            if not found:
                return _NO_ROWS, _NO_SIMS
            return self._rows[:found].copy(), self._agree[:found] / neardup.NUM_PERM
        else:
            query = sketch if isinstance(sketch, MinHash) else neardup.from_signature(hashvalues)
            rows = np.fromiter((self.row_of[m] for m in self.lsh.query(query)), dtype=np.int64)
            agree = np.zeros(n, dtype=np.int64)
            if len(rows):
                agree[rows] = _agreements(self.matrix[rows], hashvalues)
            rows = rows[agree[rows] >= neardup.THRESHOLD * neardup.NUM_PERM]
        return rows, agree[rows] / neardup.NUM_PERM  # as MinHash.jaccard computes it

    def _grow(self) -> None:
        cap = 2 * len(self.matrix)
        matrix = np.empty((cap, neardup.NUM_PERM), dtype=self.matrix.dtype)
        matrix[: len(self.matrix)] = self.matrix
        self.matrix = matrix
        low = np.empty((_LOW, cap), dtype=np.uint8)
        low[:, : self.low.shape[1]] = self.low
        self.low = low
        for name in ("events", "alive", "claim_ids", "_acc", "_rows", "_agree"):
            arr = getattr(self, name)
            grown = np.zeros(cap, dtype=arr.dtype)
            grown[: len(arr)] = arr
            setattr(self, name, grown)

    def _compact(self) -> None:
        keep = np.flatnonzero(self.alive[: len(self.members)])
        k = len(keep)
        self.matrix[:k] = self.matrix[keep]
        self.low[:, :k] = self.low[:, keep]
        self.events[:k] = self.events[keep]
        self.alive[:k] = True
        self.alive[k:] = False
        kept = keep.tolist()
        self.members = [self.members[i] for i in kept]
        self.claims = [self.claims[i] for i in kept]
        self.claim_ids[:] = 0  # the live rows' claims are kept in ``claims``: their codes are cheap to take again
        self.claim_code_of = {}
        self.row_of = {m: i for i, m in enumerate(self.members)}
        # Renumber the events of the live rows and forget the others: codes of
        # evicted reports would otherwise be kept for ever (a leak that grows with the load).
        codes, self.events[:k] = np.unique(self.events[:k], return_inverse=True)
        self.event_ids = [self.event_ids[c] for c in codes.tolist()]
        self._event_code = {e: i for i, e in enumerate(self.event_ids)}

