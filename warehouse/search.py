"""Full-text search over the warehouse, in Arabic and English: an incremental BM25 index.

The index lives in the analysts' read copy (kept up to date by ``warehouse.publish``),
never in the primary file. It covers ``articles.text_folded`` (title + summary, already
folded: hamza, taa marbuta, alef maqsura, diacritics and tatweel variants are one form),
passed through ``marsad_light``: a light Arabic prefix stemmer in SQL that drops the
conjunction و and the article forms ال / بال / كال / فال / لل when enough of the word is
left, so that "والأسد", "بالأسد" and "الأسد" all index as "اسد" (and words behind ب ل ك ف
are also indexed without that letter, see ``LIGHT_MACROS``). Words are then split and
stemmed exactly as DuckDB's fts extension does (its tokenizer, Snowball's Porter stemmer;
the measurements that chose it are in docs/warehouse.md). Queries are folded with
``sources.normalize.fold`` and go through the same macros, so both sides always agree.

Why not fts's own index: ``PRAGMA create_fts_index`` can only rebuild the whole index,
which at a million articles takes most of a minute. The index here is three plain tables
that a publish updates with only the articles that changed (``update_index``):

* ``search_dict (term, termid)``: every term ever indexed;
* ``search_docs (docid, article_id, len)``: one row per indexed article (``len``: terms);
* ``search_postings (termid, docid, tf)``: one row per term of an article;
* ``search_gone (docid)``: documents replaced since the last full build (a corrected
  article gets a new docid; its old postings stay until then and are skipped).

Scores are fts's BM25 (k1 = 1.2, b = 0.75, the same idf), with document frequencies and
average length counted when the query runs, so they are always those of the whole copy.
``marsad_match(terms)`` (a table macro stored in the read copy) returns
``(article_id, score)`` of the articles holding every term. The stemmer comes from the fts
extension (its ``stem`` function), loaded from its PyPI package (``duckdb-extension-fts``);
DuckDB is never allowed to download anything.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from sources.normalize import fold
from warehouse.db import ROW_GROUP

STEMMER = "porter"
# Changes whenever the index tables or macros change: a read copy with another version is rebuilt whole.
INDEX_VERSION = 4  # 4: publish_info holds what the copy was synced to (warehouse.publish)
BM25_K1, BM25_B = 1.2, 0.75
INDEX_TABLES = ("search_dict", "search_docs", "search_postings", "search_gone")

# RE2 in DuckDB counts characters, not bytes: \S{3,} is three letters. Each rule is one
# regexp_replace over the whole text, word by word (a word starts at the text's start or
# after a space and runs to the next space); a list of words with a lambda per word is
# several times slower at 10k articles a cycle.
# marsad_light: the query side and the base of the index side (light stemming, one form
# per word): a leading و when three letters remain, then ال / بال / كال / فال / لل when two do.
# marsad_index_text: the index side also adds, after a word that starts with one of the
# clitics ب ل ك ف, the word without it ("بعين" -> "بعين عين"), since those letters also
# start ordinary words ("بغداد") and cannot simply be dropped. Searching "عين الأسد" then
# finds "بعين الأسد" while "بغداد" still finds "بغداد".
# marsad_terms: the terms of a text, as fts splits and stems them (its tokenizer, with the
# token pattern that keeps every letter and digit of any script, and no stopwords).
# fts splits on '\s+' after replacing every run of characters other than letters and digits
# by one space: what is left holds single spaces only (RE2's \s is ASCII whitespace, none of
# it a letter or digit, and the runs replaced are maximal), so splitting on ' ' gives the
# same lists, with string_split instead of string_split_regex (0.017 s against 0.14 s of CPU
# for 10k texts; the same lists for 114k texts: a tenth of the bench's 1M, titles, the texts of
# tests/fixtures, and tabs, no-break spaces, marks, digits and empty texts).
TOKENIZE = r"string_split(regexp_replace(lower(strip_accents(CAST({} AS VARCHAR))), '[^\p{{L}}\p{{N}}]+', ' ', 'g'), ' ')"
# The index side's words of a folded text (before stemming, ``index_words``): TOKENIZE of marsad_index_text,
# with the passes that cannot change a text skipped where they provably do not (a cycle's
# splitting is most of a publish's CPU: ~60 us an article, 0.48 -> 0.24 s of CPU for the
# bench's 10k texts on one thread). A folded text (sources.normalize.fold) is words of letters
# and digits joined by single spaces, so for most texts every character is in ``PLAIN``:
# ASCII lower-case letters, digits, the space, and the Arabic letters that have no
# decomposition and no case. On such a text lower() and strip_accents() change nothing and
# the non-letter replacement only turns runs of spaces into one, which splitting on ' '
# and dropping empty words undoes; marsad_index_text only removes and repeats letters and
# adds spaces, so its output stays in ``PLAIN``. A text of ASCII letters, digits and spaces
# alone holds no Arabic letter for the clitic rules to match, so marsad_index_text leaves
# it as it is. Every other text (and NULL) takes the whole path. Equal lists for every
# character of PLAIN and every pair of them, and for the texts of the bench, tests/fixtures
# and ../shared's captures: tests/test_search.py.
PLAIN = r"a-z0-9 \x{0621}\x{0627}-\x{063A}\x{0641}-\x{064A}"


def index_words(col: str) -> str:
    """SQL: the list of words (before stemming; empty ones to be dropped) that the index
    takes from the folded text ``col``: TOKENIZE of marsad_index_text, short-cut (see PLAIN)."""
    return (f"CASE WHEN regexp_full_match({col}, '[a-z0-9 ]*') THEN string_split({col}, ' ') "
            f"WHEN regexp_full_match({col}, '[{PLAIN}]*') THEN string_split(marsad_index_text({col}), ' ') "
            f"ELSE {TOKENIZE.format(f'marsad_index_text({col})')} END")


LIGHT_MACROS = [
    r"""CREATE OR REPLACE MACRO marsad_light(t) AS
        regexp_replace(regexp_replace(t, '(^| )و(\S{3,})', '\1\2', 'g'), '(^| )(ال|بال|كال|فال|لل)(\S{2,})', '\1\3', 'g')""",
    r"""CREATE OR REPLACE MACRO marsad_index_text(t) AS
        regexp_replace(marsad_light(t), '(^| )([بلكف])(\S{3,})', '\1\2\3 \3', 'g')""",
    "CREATE OR REPLACE MACRO marsad_terms(t) AS list_filter(list_transform(" + TOKENIZE.format("t")
    + f", w -> stem(w, '{STEMMER}')), w -> w <> '')",
    # The articles holding every term of ``q`` (already folded and light-stemmed), with fts's BM25.
    f"""CREATE OR REPLACE MACRO marsad_match(q) AS TABLE
        WITH qterms AS (SELECT DISTINCT unnest(marsad_terms(q)) AS term),
             qids AS (SELECT d.termid FROM search_dict d JOIN qterms USING (term)),
             hits AS (SELECT p.termid, p.docid, p.tf FROM search_postings p SEMI JOIN qids USING (termid)
                      ANTI JOIN search_gone USING (docid)),
             df AS (SELECT termid, count(*) AS df FROM hits GROUP BY termid),
             stats AS (SELECT count(*) AS n, avg(len) AS avgdl FROM search_docs),
             whole AS (SELECT docid FROM hits GROUP BY docid
                       HAVING count(*) = (SELECT count(*) FROM qterms) AND (SELECT count(*) FROM qterms) > 0)
        SELECT d.article_id,
               sum(log((stats.n - df.df + 0.5) / (df.df + 0.5) + 1)
                   * (h.tf * ({BM25_K1} + 1)) / (h.tf + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * d.len / stats.avgdl))) AS score
        FROM hits h JOIN whole USING (docid) JOIN df USING (termid) JOIN search_docs d USING (docid), stats
        GROUP BY d.article_id""",
]


def fts_extension_path() -> Path:
    import duckdb_extension_fts

    return next(Path(duckdb_extension_fts.__file__).parent.rglob("fts.duckdb_extension"))


def load_fts(con: duckdb.DuckDBPyConnection) -> None:
    """Load fts (for its ``stem``) from the installed package; turn off every automatic download first."""
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute(f"INSTALL '{fts_extension_path()}'")
    con.execute("LOAD fts")


def build_index(con: duckdb.DuckDBPyConnection, db: str | None = None) -> int:
    """(Re)build the whole search index in database ``db`` (default: the current one) from its
    ``articles``; postings sorted by term, so a query reads only the blocks of its terms.
    Returns the number of articles indexed."""
    load_fts(con)
    macros(con)
    db = db or con.execute("SELECT current_database()").fetchone()[0]
    p = f'"{db}".main.'
    con.execute(f"DROP TABLE IF EXISTS {p}article_search")  # the fts-based index of earlier versions
    con.execute(f'DROP SCHEMA IF EXISTS "{db}".fts_main_article_search CASCADE')
    con.execute(f"CREATE OR REPLACE TABLE {p}search_dict (term VARCHAR, termid INTEGER)")
    con.execute(f"CREATE OR REPLACE TABLE {p}search_docs (docid BIGINT, article_id VARCHAR, len INTEGER)")
    con.execute(f"CREATE OR REPLACE TABLE {p}search_postings (termid INTEGER, docid BIGINT, tf INTEGER)")
    con.execute(f"CREATE OR REPLACE TABLE {p}search_gone (docid BIGINT)")
    n = _index(con, p, f"SELECT row_number() OVER (ORDER BY article_id) AS docid, article_id, text_folded FROM {p}articles")
    macros(con, db)
    return n


def update_index(con: duckdb.DuckDBPyConnection, db: str, changed: str, texts: str | None = None,
                 held: str | None = None) -> int:
    """Bring the index of database ``db`` up to date for the article ids in table ``changed``
    (new, corrected or removed articles; ``db``'s ``articles`` already updated): their old
    entries go, their current text (if any) is indexed. ``texts``: a table holding the
    current rows of the changed articles (default: ``db``'s ``articles``; a table of just
    those rows spares a scan of every text in ``db``). ``held``: a table (or a subquery with
    an alias) of the ids among them that ``db`` held before (default: all of ``changed``):
    only those can have entries to go. Returns the number indexed."""
    load_fts(con)
    macros(con)
    p = f'"{db}".main.'
    # The postings of a replaced article stay (deleting them would read every posting) and
    # its old docid is listed in search_gone, which queries skip; a full build drops both.
    # New docids start after every docid ever given (a gone one reused would be skipped).
    # One read of search_docs' article ids (a million strings at 1M) finds the replaced rows;
    # they are deleted by row id, not by a second such read.
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _marsad_gone AS
        SELECT rowid AS rid, docid FROM {p}search_docs SEMI JOIN {held or changed} USING (article_id)""")
    con.execute(f"INSERT INTO {p}search_gone SELECT docid FROM _marsad_gone")
    con.execute(f"DELETE FROM {p}search_docs WHERE rowid IN (SELECT rid FROM _marsad_gone)")
    con.execute("DROP TABLE _marsad_gone")
    return _index(con, p, f"""
        SELECT (SELECT coalesce(max(docid), 0) FROM (SELECT docid FROM {p}search_docs UNION ALL SELECT docid FROM {p}search_gone))
               + row_number() OVER (ORDER BY article_id) AS docid,
               article_id, text_folded
        FROM {texts or p + 'articles'} SEMI JOIN {changed} USING (article_id)""")


def _index(con: duckdb.DuckDBPyConnection, p: str, docs: str) -> int:
    """Add the ``(docid, article_id, text_folded)`` rows of query ``docs`` to the index tables
    (prefix ``p``). Words are split once, and each distinct word is stemmed once.

    A cycle's few thousand texts fit in one row group, which DuckDB scans as one task: the
    splitting (most of the cost) would run on one core while the others wait. So when the
    texts are fewer than a row group they are split as one part per thread (by row id),
    the parts a UNION ALL that DuckDB runs side by side."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE _marsad_docs AS SELECT docid, article_id, text_folded FROM ({docs})")
    n = con.execute("SELECT count(*) FROM _marsad_docs").fetchone()[0]
    threads = int(con.execute("SELECT current_setting('threads')").fetchone()[0])
    parts = max(1, threads) if n < ROW_GROUP else 1
    words = f"unnest({index_words('text_folded')}) AS word"
    split = " UNION ALL ".join(
        f"SELECT docid, {words} FROM _marsad_docs" + (f" WHERE rowid % {parts} = {i}" if parts > 1 else "")
        for i in range(parts))
    # One row per word occurrence (not grouped by document and word: grouping 700k strings cost
    # more than the join below, which then groups integers). Each distinct word is stemmed
    # once, and mapped to its termid once (_marsad_terms); a posting's tf is the number of its
    # document's words with that term, a document's len the number of its words.
    con.execute(f"CREATE OR REPLACE TEMP TABLE _marsad_words AS SELECT docid, word FROM ({split}) WHERE word <> ''")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _marsad_stems AS
        SELECT word, stem(word, '{STEMMER}') AS term FROM (SELECT DISTINCT word FROM _marsad_words)""")
    con.execute(f"""INSERT INTO {p}search_dict
        SELECT term, ((SELECT coalesce(max(termid), 0) FROM {p}search_dict) + row_number() OVER (ORDER BY term))::INTEGER
        FROM (SELECT DISTINCT term FROM _marsad_stems) ANTI JOIN {p}search_dict USING (term)""")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _marsad_terms AS
        SELECT s.word, t.termid FROM _marsad_stems s JOIN {p}search_dict t USING (term)""")
    con.execute(f"""INSERT INTO {p}search_docs
        SELECT d.docid, d.article_id, coalesce(w.len, 0)::INTEGER
        FROM _marsad_docs d LEFT JOIN (SELECT docid, count(*) AS len FROM _marsad_words GROUP BY docid) w USING (docid)""")
    con.execute(f"""INSERT INTO {p}search_postings
        SELECT t.termid, w.docid, count(*)::INTEGER
        FROM _marsad_words w JOIN _marsad_terms t USING (word)
        GROUP BY ALL ORDER BY 1, 2""")
    for table in ("_marsad_docs", "_marsad_words", "_marsad_stems", "_marsad_terms"):
        con.execute(f"DROP TABLE {table}")
    return n


def macros(con: duckdb.DuckDBPyConnection, db: str | None = None) -> None:
    """Create the macros: as temporary macros of this connection (``db`` None), or stored in
    database ``db`` (the read copy, for analysts; ``marsad_match`` reads its tables)."""
    for macro in LIGHT_MACROS:
        name = macro.split("MACRO", 1)[1].split("(", 1)[0].strip()
        if db is None and "AS TABLE" in macro:
            continue  # reads the index tables: only in the database that holds them
        where = f'TEMP MACRO {name}' if db is None else f'MACRO "{db}".main.{name}'
        con.execute(macro.replace(f"MACRO {name}", where, 1))


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
        """
        SELECT a.published_at, a.source_id, a.lang, a.title, a.url, s.score, a.article_id
        FROM marsad_match($terms) s
        JOIN articles a USING (article_id)
        WHERE ($since IS NULL OR a.published_at >= $since)
          AND ($lang IS NULL OR a.lang = $lang)
        ORDER BY contains(' ' || marsad_index_text(a.text_folded) || ' ', ' ' || $terms || ' ') DESC,
                 s.score DESC, a.published_at DESC
        LIMIT $limit
        """,
        {"terms": terms, "since": since, "lang": lang, "limit": limit},
    ).fetchall()
    return [Hit(*r) for r in rows]
