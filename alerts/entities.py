"""Which gazetteer entries an article names anywhere in its text: places, actors, weapons
and cue words, by stable id in either language.

``article_indicators.refs`` holds only the entries that made an indicator match (an
attack word near a base); event assignment also needs the actor a report names, the
weapon, and whether it looks back at an earlier attack. ``tag_articles`` stores those in
``article_entities`` for the articles that matched an indicator.
"""
from __future__ import annotations

from dataclasses import dataclass

from alerts.matching import Gazetteers, compile_terms
from sources.normalize import fold
from warehouse.load import bulk_insert

ENTITY_COLUMNS = {"article_id": "VARCHAR", "gazetteer": "VARCHAR", "entity_id": "VARCHAR", "kind": "VARCHAR"}


@dataclass(frozen=True)
class Entity:
    gazetteer: str
    id: str
    kind: str


class EntityTagger:
    def __init__(self, gazetteers: Gazetteers):
        self._patterns = []
        for name, entries in sorted(gazetteers.entries.items()):
            for e in entries:
                rx = compile_terms(e.en + e.ar)
                if rx is not None:
                    self._patterns.append((Entity(name, e.id, e.kind), rx))

    def tag(self, title: str, summary: str = "") -> list[Entity]:
        folded = fold(f"{title} . {summary}")
        return [ent for ent, rx in self._patterns if rx.search(folded)]


def tag_articles(con, tagger: EntityTagger, rows: list[tuple[str, str, str]]) -> int:
    """Tag (article_id, title, summary) rows into ``article_entities`` (one set-based insert)."""
    out = [
        dict(article_id=article_id, gazetteer=e.gazetteer, entity_id=e.id, kind=e.kind)
        for article_id, title, summary in rows
        for e in tagger.tag(title, summary)
    ]
    bulk_insert(con, "article_entities", out, ENTITY_COLUMNS)
    return len(out)
