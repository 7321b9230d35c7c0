"""The place hierarchy of ``alerts/gazetteers/places.yaml``: which place lies within which.

An entry may say ``within: <id of the enclosing place>``: a base within its town or
district, the town within its province, the province within a region ("northeast Syria",
"western Iraq"), the region within its country. Event identity (``warehouse.cluster``)
uses it to know that "the base at Rumailan", "Hasakah province" and "a US base in
northeast Syria" can name one place, while two bases of one province are two places.

``marsad config check`` reports, with file and line, a ``within`` that names no entry of
places.yaml and any cycle (``check_places_file``). At run time a broken link is ignored
(the place is then a root), so a bad edit cannot hang event assignment.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sources.configfile import ConfigError, load_yaml


def _links(entries: Iterable) -> tuple[dict[str, str], dict[str, str], list[tuple[int, str]]]:
    """(parent by id, kind by id, problems as (entry index, message)) of places entries,
    given as GazetteerEntry objects or the plain dicts of the YAML file."""
    entries = list(entries)

    def get(e, name):
        return e.get(name) if isinstance(e, dict) else getattr(e, name, None)

    kinds = {str(get(e, "id")): str(get(e, "kind")) for e in entries if get(e, "id") is not None}
    parent: dict[str, str] = {}
    problems: list[tuple[int, str]] = []
    for i, e in enumerate(entries):
        pid, within = get(e, "id"), get(e, "within")
        if pid is None or within is None:
            continue
        if within not in kinds:
            problems.append((i, f"within: no place with id {within!r} in places.yaml"))
        elif within == pid:
            problems.append((i, f"within: {pid!r} cannot be within itself"))
        else:
            parent[str(pid)] = str(within)
    index = {str(get(e, "id")): i for i, e in enumerate(entries) if get(e, "id") is not None}
    reported: set[str] = set()
    for start in parent:
        seen: list[str] = []
        node = start
        while node in parent and node not in seen:
            seen.append(node)
            node = parent[node]
        if node in seen:  # a cycle: report it once, at its first member in file order
            cycle = seen[seen.index(node):]
            if not reported & set(cycle):
                first = min(cycle, key=lambda c: index[c])
                loop = cycle[cycle.index(first):] + cycle[: cycle.index(first)] + [first]
                problems.append((index[first], "within: cycle " + " -> ".join(loop)))
                reported |= set(cycle)
    for c in reported:  # a cycle has no root: drop the link that closes it
        parent.pop(c, None)
    return parent, kinds, problems


def check_places_file(path: Path) -> list[str]:
    """``file:line: entries.N.within: problem`` for each unknown parent and each cycle."""
    path = Path(path)
    if not path.is_file():
        return []
    doc = load_yaml(path)
    entries = (doc.data or {}).get("entries") if isinstance(doc.data, dict) else None
    if not isinstance(entries, list):
        return []
    at = [n for n, e in enumerate(entries) if isinstance(e, dict)]  # position in the file of each mapping
    _, _, problems = _links(entries[n] for n in at)
    return [doc.error(("entries", at[i], "within"), msg.partition(": ")[2]) for i, msg in problems]


class PlaceHierarchy:
    """Parent links between place ids; ancestors are cached (the tree is small)."""

    def __init__(self, parent: dict[str, str] | None = None, kinds: dict[str, str] | None = None):
        self.parent = dict(parent or {})
        self.kinds = dict(kinds or {})
        self._anc: dict[str, tuple[str, ...]] = {}

    @classmethod
    def from_entries(cls, entries: Iterable) -> "PlaceHierarchy":
        parent, kinds, _ = _links(entries)
        return cls(parent, kinds)

    @classmethod
    def from_gazetteers(cls, gazetteers) -> "PlaceHierarchy":
        return cls.from_entries(gazetteers.entries.get("places", []))

    @classmethod
    def load(cls, directory: Path) -> "PlaceHierarchy":
        """From ``<directory>/places.yaml`` (the gazetteers directory)."""
        path = Path(directory) / "places.yaml"
        if not path.is_file():
            return cls()
        doc = load_yaml(path)
        entries = doc.data.get("entries") if isinstance(doc.data, dict) else None
        if not isinstance(entries, list):
            raise ConfigError([doc.error(("entries",), "a list of entries is required")])
        return cls.from_entries(e for e in entries if isinstance(e, dict))

    def ancestors(self, place: str) -> tuple[str, ...]:
        """The enclosing places, nearest first (not the place itself)."""
        got = self._anc.get(place)
        if got is None:
            out: list[str] = []
            node = self.parent.get(place)
            while node is not None and node not in out and node != place:
                out.append(node)
                node = self.parent.get(node)
            got = self._anc[place] = tuple(out)
        return got

    def resolve(self, place: str) -> str:
        """The place an entry names for event identity: an ``unnamed_site`` ("a US base in
        Hasakah") names no particular site, so it stands for the place it is within."""
        seen = 0
        while self.kinds.get(place) == "unnamed_site" and place in self.parent and seen < 8:
            place, seen = self.parent[place], seen + 1
        return place

    def related(self, a: str, b: str) -> bool:
        """One place contains the other (or they are the same). Siblings are not related."""
        return a == b or a in self.ancestors(b) or b in self.ancestors(a)

    def most_specific(self, places: Iterable[str]) -> set[str]:
        """The places of a set that contain none of the others: {Rumailan, Hasakah province,
        northeast Syria} -> {Rumailan}."""
        places = set(places)
        enclosing = {a for p in places for a in self.ancestors(p)}
        return places - enclosing
