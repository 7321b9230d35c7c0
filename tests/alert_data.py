"""A small warehouse for alert tests: one source that has been polled, and events with one
report each, written as the loader writes them (tests of the lifecycle, feedback and buttons)."""
from __future__ import annotations

from datetime import datetime

from warehouse.events import EVENT_COLUMNS
from warehouse.load import bulk_insert


def watched_source(con, t: datetime, lang: str = "en", polled_at: datetime | None = None) -> None:
    """Source ``s1`` (Outlet One), polled successfully at ``polled_at`` (default ``t``): Marsad watches from then."""
    polled_at = polled_at or t
    con.execute("INSERT INTO fetch_log (fetch_id, source_id, started_at, finished_at, status) VALUES ('f0', 's1', ?, ?, 'ok')",
                [polled_at, polled_at])
    con.execute("INSERT INTO sources (source_id, name, lang, url, interval_s, reliability, enabled, updated_at) "
                "VALUES ('s1', 'Outlet One', ?, 'http://x', 900, 'B', true, ?)", [lang, t])


def add_event(con, eid: str, t: datetime, indicator: str = "ind", title: str = "Drone attack on a base", lang: str = "en") -> None:
    """Event ``eid`` of ``indicator`` at ``t`` with its one report from ``s1``."""
    bulk_insert(con, "events", [dict(event_id=eid, indicator=indicator, first_report_at=t, first_seen_at=t, title=title, created_at=t)],
                EVENT_COLUMNS)
    con.execute("INSERT INTO articles (article_id, source_id, guid, url, canonical_url, title, summary, lang, published_at, fetched_at, "
                "title_folded, text_folded, content_hash) VALUES (?, 's1', ?, ?, ?, ?, '', ?, ?, ?, '', '', ?)",
                [eid + "-a", eid, f"https://o.example/{eid}", f"https://o.example/{eid}", title, lang, t, t, eid])
    con.execute("INSERT INTO event_articles VALUES (?, ?, 'first', ?)", [eid, eid + "-a", t])
