"""Which gazetteer entries an article names anywhere in its text: places, actors, weapons
and cue words, by stable id in either language.

``article_indicators.refs`` holds only the entries that made an indicator match (an
attack word near a base); event assignment also needs the actor a report names, the
weapon, and whether it looks back at an earlier attack. ``tag_articles`` stores those in
``article_entities`` for the articles that matched an indicator.
"""
from __future__ import annotations

from dataclasses import dataclass

from alerts.matching import Gazetteers, TermIndex, parse_term
from sources.normalize import fold
from warehouse.load import bulk_insert

ENTITY_COLUMNS = {"article_id": "VARCHAR", "gazetteer": "VARCHAR", "entity_id": "VARCHAR", "kind": "VARCHAR"}


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
        found = self._index.hits(folded.split())
        return [self._entities[uid] for uid in sorted(found)]


def tag_articles(con, tagger: EntityTagger, rows: list[tuple[str, str]]) -> int:
    """Tag (article_id, text_folded) rows into ``article_entities`` (one set-based insert)."""
    out = [
        dict(article_id=article_id, gazetteer=e.gazetteer, entity_id=e.id, kind=e.kind)
        for article_id, folded in rows
        for e in tagger.tag_folded(folded)
    ]
    bulk_insert(con, "article_entities", out, ENTITY_COLUMNS)
    return len(out)
