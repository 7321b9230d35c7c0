"""Event identity: which event a report belongs to, across outlets and languages.

An event is one real-world occurrence of one indicator (one attack, one strike). Reports
are taken in order of publication; each one joins the first event that the rules below
find, or opens a new event. The event's time is its earliest report, so reports that
join later never move it forward (a late or follow-up report cannot reset a quiet period).

What a report brings (``Report``): its indicator, time, canonical URL, content hash, a
MinHash sketch of its folded text (``warehouse.neardup``), and the gazetteer entries it
names anywhere (``alerts.entities``), by ids that are the same in Arabic and English:

* places: bases, diplomatic sites, cities, ports, areas (kind ``base`` ... ``area``), and
  countries (kind ``country``); actors: named groups and state forces (not descriptors
  such as "Iran-backed militia", not "US forces"); weapons (drone, rocket/missile, mortar,
  IED, gunfire); cues: ``followup`` (looks back: "last week's attack", arrests, satellite
  images) and ``renewed`` ("another attack", "هجوم جديد", "للمرة الثانية").

An event carries the union of its reports' places, actors, weapons and cues.

Decision rules, in this order (``how`` in ``event_articles`` records which one joined):

1. ``same_url`` / ``same_guid`` / ``same_content``: an exact copy (same canonical URL, same
   feed entry id, or the same folded title and summary) of a report of an event of the same indicator first reported within
   ``EXACT_HORIZON`` (7 days). Copies join whatever else they say.
2. Candidates: events of the same indicator first reported within ``WINDOW`` (36 h) of the
   report, either side. A candidate that names specific places none of which the report
   names (and the report names some) *conflicts* and is never joined by the rules below:
   a mortar attack on Harir is not the mortar attack on Ain al-Asad, however alike the text.
   Nor is one first reported ``RENEWED_GAP`` (6 h) or more before a report that says it is
   another attack (``renewed`` cue), unless the candidate is itself a renewed attack.
3. ``near_duplicate``: the report's text is a near-duplicate (MinHash LSH, estimated
   Jaccard >= 0.5 on character 3-grams, same numbers and negations) of a report of a
   candidate: syndicated and lightly edited copies, updated headlines.
4. ``same_place``: the report and a candidate name a common specific place, and they do
   not name disjoint weapons (a drone on Ain al-Asad is not a rocket on it).
   This is what joins an Arabic report to an English one: the place ids are shared.
5. ``same_actor``: one side names no specific place, and they share a named actor and a
   country, and do not name disjoint weapons ("Kataib Hezbollah drone attack on US
   forces in Iraq" joins the Ain al-Asad event that Kataib Hezbollah claimed).
   Among several candidates of rules 4 and 5, the one first reported closest in time wins.
6. ``followup``: a report with a ``followup`` cue that names a specific place of an event
   of the same indicator first reported up to ``FOLLOWUP_HORIZON`` (30 days) earlier
   attaches to the most recent such event (most follow-ups are already excluded by the
   indicator files; this catches those that get through).
7. Otherwise the report opens a new event (``first``).

So two attacks on the same base stay two events when they are more than 36 h apart,
name different weapons, or the later reports say "another attack"; two attacks on
different bases the same day stay apart by rule 2. Known limit: two attacks on the same
base within 36 h with the same weapon and no "another attack" wording become one event
(an undercount, never a double count).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from datasketch import MinHash

from warehouse.neardup import NearDupIndex

WINDOW = timedelta(hours=36)
EXACT_HORIZON = timedelta(days=7)
RENEWED_GAP = timedelta(hours=6)
FOLLOWUP_HORIZON = timedelta(days=30)

PLACE_KINDS = frozenset({"base", "diplomatic", "city", "port", "area"})
ACTOR_KINDS = frozenset({"militia", "militia_umbrella", "state_force"})


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
    sketch: MinHash
    entities: set[tuple[str, str, str]] = field(default_factory=set)  # (gazetteer, id, kind)

    def _ids(self, gazetteer: str, kinds: frozenset | None = None) -> set[str]:
        return {i for g, i, k in self.entities if g == gazetteer and (kinds is None or k in kinds)}

    @property
    def places(self) -> set[str]:
        return self._ids("places", PLACE_KINDS)

    @property
    def countries(self) -> set[str]:
        return self._ids("places", frozenset({"country"}))

    @property
    def actors(self) -> set[str]:
        return self._ids("actors", ACTOR_KINDS)

    @property
    def weapons(self) -> set[str]:
        return self._ids("weapons")

    @property
    def cues(self) -> set[str]:
        return self._ids("cues")

    def keys(self) -> list[tuple[str, str]]:
        keys = [("u:" + self.url, "same_url")] if self.url else []
        keys += [("g:" + self.guid, "same_guid")] if self.guid else []
        return keys + [("h:" + self.content_hash, "same_content")]


@dataclass
class Event:
    event_id: str
    indicator: str
    first_report_at: datetime
    first_seen_at: datetime
    title: str
    new: bool = False
    changed: bool = False
    places: set[str] = field(default_factory=set)
    countries: set[str] = field(default_factory=set)
    actors: set[str] = field(default_factory=set)
    weapons: set[str] = field(default_factory=set)
    cues: set[str] = field(default_factory=set)

    def absorb(self, r: Report) -> None:
        if r.published < self.first_report_at or r.fetched < self.first_seen_at:
            self.changed = not self.new
        self.first_report_at = min(self.first_report_at, r.published)
        self.first_seen_at = min(self.first_seen_at, r.fetched)
        self.places |= r.places
        self.countries |= r.countries
        self.actors |= r.actors
        self.weapons |= r.weapons
        self.cues |= r.cues


def event_id_for(indicator: str, article_id: str) -> str:
    return hashlib.sha1(f"{indicator}\x1f{article_id}".encode()).hexdigest()[:20]


def _disjoint(a: set, b: set) -> bool:
    return bool(a) and bool(b) and not (a & b)


class Clusterer:
    """Holds the recent events (and their reports) of some indicators; ``assign`` decides."""

    def __init__(self) -> None:
        self.events: dict[str, Event] = {}
        self._keys: dict[tuple[str, str], str] = {}  # (indicator, url/hash key) -> event_id
        self._index: dict[str, NearDupIndex] = {}  # per indicator, keyed by article_id
        self._event_of: dict[str, str] = {}  # article_id -> event_id (per indicator index)

    def add_event(self, ev: Event) -> None:
        self.events[ev.event_id] = ev

    def add_member(self, event_id: str, r: Report) -> None:
        """Record that ``r`` belongs to the event (existing links, or a decision just made)."""
        ev = self.events[event_id]
        ev.absorb(r)
        for key, _ in r.keys():
            self._keys.setdefault((r.indicator, key), event_id)
        idx = self._index.get(r.indicator)
        if idx is None:  # not setdefault(..., NearDupIndex()): that would build an LSH index per report
            idx = self._index[r.indicator] = NearDupIndex()
        member = f"{event_id}:{r.article_id}"
        idx.add(member, r.sketch, r.folded)
        self._event_of[member] = event_id

    def assign(self, r: Report) -> tuple[str, str]:
        """(event_id, how) for the report; the report is recorded as a member."""
        event_id, how = self._decide(r)
        if event_id is None:
            event_id, how = event_id_for(r.indicator, r.article_id), "first"
            self.add_event(Event(event_id, r.indicator, r.published, r.fetched, r.title, new=True))
        self.add_member(event_id, r)
        return event_id, how

    def _decide(self, r: Report) -> tuple[str | None, str | None]:
        for key, why in r.keys():
            eid = self._keys.get((r.indicator, key))
            if eid and abs(r.published - self.events[eid].first_report_at) <= EXACT_HORIZON:
                return eid, why
        places, actors, weapons, countries = r.places, r.actors, r.weapons, r.countries
        renewed = "renewed" in r.cues
        cands = [
            ev for ev in self.events.values()
            if ev.indicator == r.indicator and abs(r.published - ev.first_report_at) <= WINDOW
            and not _disjoint(places, ev.places)
            and not (renewed and "renewed" not in ev.cues and r.published - ev.first_report_at >= RENEWED_GAP)
        ]
        ok = {ev.event_id for ev in cands}
        idx = self._index.get(r.indicator)
        if idx is not None:
            for member, _sim in idx.query(r.sketch, r.folded):
                if self._event_of[member] in ok:
                    return self._event_of[member], "near_duplicate"

        def closest(evs: list[Event]) -> str | None:
            return min(evs, key=lambda e: (abs(r.published - e.first_report_at), e.event_id)).event_id if evs else None

        same_place = [ev for ev in cands if places & ev.places and not _disjoint(weapons, ev.weapons)]
        if same_place:
            return closest(same_place), "same_place"
        same_actor = [
            ev for ev in cands
            if not (places and ev.places) and actors & ev.actors and countries & ev.countries
            and not _disjoint(weapons, ev.weapons)
        ]
        if same_actor:
            return closest(same_actor), "same_actor"
        if "followup" in r.cues and places:
            older = [
                ev for ev in self.events.values()
                if ev.indicator == r.indicator and places & ev.places
                and timedelta(0) <= r.published - ev.first_report_at <= FOLLOWUP_HORIZON
            ]
            if older:
                return max(older, key=lambda e: (e.first_report_at, e.event_id)).event_id, "followup"
        return None, None
