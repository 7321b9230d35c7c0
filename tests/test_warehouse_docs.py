"""Every SQL block in docs/warehouse.md runs against a warehouse the real pipeline filled,
through the same checks as `marsad query`, and the worked queries answer their questions."""
import re

import pytest

from analyst_data import shared  # noqa: F401  (a fixture)
from conftest import REPO
from warehouse.publish import open_read_copy
from warehouse.query import run

DOC = REPO / "docs" / "warehouse.md"


def sql_blocks() -> list[tuple[str, str]]:
    """(the heading above it, SQL) for each ```sql block of the page."""
    out, heading = [], ""
    for m in re.finditer(r"^(#+ [^\n]*)$|^```sql\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.M | re.S):
        if m.group(1):
            heading = m.group(1).lstrip("# ").strip()
        else:
            out.append((heading, m.group(2)))
    return out


BLOCKS = sql_blocks()


@pytest.fixture(scope="module")
def reader(shared):  # noqa: F811
    con = open_read_copy(shared.read_copy)
    yield con
    con.close()


def test_the_page_has_worked_queries():
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("heading, sql", BLOCKS, ids=[f"{i}-{h[:30]}" for i, (h, _) in enumerate(BLOCKS)])
def test_every_sql_block_runs(reader, heading, sql):
    columns, rows = run(reader, sql)  # refused statements would raise here too
    assert columns


def _results(reader, heading_start):
    return [run(reader, sql) for h, sql in BLOCKS if h.startswith(heading_start)]


def test_worked_queries_answer_their_questions(reader):
    (cols, rows), = _results(reader, "Attacks on US forces per week")
    by_province = {}
    for week, province, attacks in rows:
        by_province[province] = by_province.get(province, 0) + attacks
    # Ain al-Asad: the drone report ar-1 and en-4 (30 min apart, two languages) are one event; the
    # rocket reports ar-3 and ar-5 and the old ar-4 are three more. Harir: one event, two outlets.
    assert by_province == {"Anbar": 4, "Erbil": 1}

    (cols, rows), _ = _results(reader, "Which outlets reported an event first")
    firsts = [(r[cols.index("source_id")], r[cols.index("place")], r[cols.index("behind_first")].total_seconds()) for r in rows]
    # Harir (newest): the wire 25 min behind; Ain al-Asad: the Arabic outlet 30 min behind the English one.
    assert firsts == [("test-en", 1, 0), ("test-wire", 2, 25 * 60), ("test-en", 1, 0), ("test-ar", 2, 30 * 60)]

    (_, fts_rows), (_, gaz_rows) = _results(reader, "All Arabic reports")
    assert len(fts_rows) == 3 and len(gaz_rows) == 3  # ar-1, ar-3, ar-5; ar-4 is 40 days old

    (cols, rows), _ = _results(reader, "An indicator's timeline")
    # within 30 days: Ain al-Asad {ar-1, en-4}, ar-3, ar-5, and Harir (ar-4 is 40 days old)
    assert len(rows) == 30 and sum(r[cols.index("events")] for r in rows) == 4
