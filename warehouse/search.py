"""Full-text search over the warehouse, in Arabic and English, with DuckDB's fts extension.

The index lives in the analysts' read copy (built by ``warehouse.publish``), never in the
primary file. It covers ``articles.text_folded`` (title + summary, already folded: hamza,
taa marbuta, alef maqsura, diacritics and tatweel variants are one form), passed through
``marsad_light``: a light Arabic prefix stemmer in SQL that drops the conjunction و and
the article forms ال / بال / كال / فال / لل when enough of the word is left, so that
"والأسد", "بالأسد" and "الأسد" all index as "اسد" (and words behind ب ل ك ف are also
indexed without that letter, see ``LIGHT_MACROS``). English words go through Snowball's
Porter stemmer (the measurements that chose it are in docs/warehouse.md). Queries are
folded with ``sources.normalize.fold`` and go through the same macro, so both sides
always agree.

The extension is loaded from its PyPI package (``duckdb-extension-fts``); DuckDB is never
allowed to download anything.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from sources.normalize import fold

SEARCH_TABLE = "article_search"
INDEX_SCHEMA = f"fts_main_{SEARCH_TABLE}"
STEMMER = "porter"

# RE2 in DuckDB counts characters, not bytes: .{3,} is three letters.
# marsad_light: the query side and the base of the index side (light stemming, one form per word).
# marsad_index_text: the index side also adds, after a word that starts with one of the
# clitics ب ل ك ف, the word without it ("بعين" -> "بعين عين"), since those letters also
# start ordinary words ("بغداد") and cannot simply be dropped. Searching "عين الأسد" then
# finds "بعين الأسد" while "بغداد" still finds "بغداد".
LIGHT_MACROS = [
    r"""CREATE OR REPLACE MACRO marsad_light_word(w) AS CASE WHEN left(w, 1) IN ('و', 'ا', 'ب', 'ك', 'ف', 'ل')
        THEN regexp_replace(regexp_replace(w, '^و(.{3,})$', '\1'), '^(ال|بال|كال|فال|لل)(.{2,})$', '\2') ELSE w END""",
    """CREATE OR REPLACE MACRO marsad_light(t) AS
        array_to_string(list_transform(string_split(t, ' '), w -> marsad_light_word(w)), ' ')""",
    r"""CREATE OR REPLACE MACRO marsad_index_text(t) AS
        array_to_string(list_transform(list_transform(string_split(t, ' '), w -> marsad_light_word(w)),
            w -> CASE WHEN left(w, 1) IN ('ب', 'ل', 'ك', 'ف') AND length(w) >= 4 THEN w || ' ' || substr(w, 2) ELSE w END), ' ')""",
]


def fts_extension_path() -> Path:
    import duckdb_extension_fts

    return next(Path(duckdb_extension_fts.__file__).parent.rglob("fts.duckdb_extension"))


def load_fts(con: duckdb.DuckDBPyConnection) -> None:
    """Load fts from the installed package; turn off every automatic download first."""
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute(f"INSTALL '{fts_extension_path()}'")
    con.execute("LOAD fts")


def build_index(con: duckdb.DuckDBPyConnection, stemmer: str = STEMMER) -> int:
    """(Re)build the search table and its fts index in the database ``con`` writes; returns rows indexed."""
    load_fts(con)
    for macro in LIGHT_MACROS:
        con.execute(macro)
    con.execute(
        f"CREATE OR REPLACE TABLE {SEARCH_TABLE} AS SELECT article_id, marsad_index_text(text_folded) AS body FROM articles"
    )
    # The default ignore pattern keeps only a-z (it would drop every Arabic word), and the
    # default English stopword list holds "us" (as in "US forces"): neither suits us.
    con.execute(
        f"PRAGMA create_fts_index('{SEARCH_TABLE}', 'article_id', 'body', stemmer = '{stemmer}', "
        r"ignore = '[^\p{L}\p{N}]+', stopwords = 'none', overwrite = 1)"
    )
    return con.execute(f"SELECT count(*) FROM {SEARCH_TABLE}").fetchone()[0]


@dataclass
class Hit:
    published_at: datetime
    source_id: str
    lang: str
    title: str
    url: str | None
    score: float
    article_id: str

    def as_dict(self) -> dict:
        d = self.__dict__.copy()
        d["published_at"] = self.published_at.isoformat()
        return d


def search(
    con: duckdb.DuckDBPyConnection,
    query: str,
    since: datetime | None = None,
    lang: str | None = None,
    limit: int = 20,
) -> list[Hit]:
    """Articles holding every word of ``query`` (any spelling variant), best first.

    Ranked by BM25; reports that hold the words as one phrase come before those that only
    hold them all somewhere.
    """
    terms = con.execute("SELECT marsad_light(?)", [fold(query)]).fetchone()[0].strip()
    if not terms:
        return []
    rows = con.execute(
        f"""
        SELECT a.published_at, a.source_id, a.lang, a.title, a.url, s.score, a.article_id
        FROM (SELECT article_id, body,
                     {INDEX_SCHEMA}.match_bm25(article_id, $terms, conjunctive := 1) AS score
              FROM {SEARCH_TABLE}) s
        JOIN articles a USING (article_id)
        WHERE s.score IS NOT NULL
          AND ($since IS NULL OR a.published_at >= $since)
          AND ($lang IS NULL OR a.lang = $lang)
        ORDER BY contains(' ' || s.body || ' ', ' ' || $terms || ' ') DESC, s.score DESC, a.published_at DESC
        LIMIT $limit
        """,
        {"terms": terms, "since": since, "lang": lang, "limit": limit},
    ).fetchall()
    return [Hit(*r) for r in rows]
