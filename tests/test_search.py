"""The search index of our own (warehouse.search) ranks exactly as DuckDB's fts index does on the
same text: same articles, same BM25 scores, for Arabic and English queries."""
import duckdb
import pytest

from sources.normalize import fold
from test_publish import QUERIES, _add, _article, _reports
from warehouse import db
from warehouse.publish import open_read_copy, publish
from warehouse.search import STEMMER, load_fts


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    d = tmp_path_factory.mktemp("search")
    primary, copy = d / "wh.duckdb", d / "read.duckdb"
    with db.connect(primary) as con:
        _add(con, [_article(r, i) for i, r in enumerate(_reports())])
    publish(primary, copy)
    return copy


def test_scores_equal_an_fts_index_of_the_same_text(copies):
    con = open_read_copy(copies)
    ref = duckdb.connect()
    load_fts(ref)
    ref.execute("CREATE TABLE docs (article_id VARCHAR, body VARCHAR)")
    ref.executemany("INSERT INTO docs VALUES (?, ?)",
                    con.execute("SELECT article_id, marsad_index_text(text_folded) FROM articles").fetchall())
    ref.execute(f"PRAGMA create_fts_index('docs', 'article_id', 'body', stemmer = '{STEMMER}', "
                r"ignore = '[^\p{L}\p{N}]+', stopwords = 'none')")
    found = 0
    for q in QUERIES + ("بغداد", "صواريخ", "drone attack"):
        terms = con.execute("SELECT marsad_light(?)", [fold(q)]).fetchone()[0]
        ours = dict(con.execute("SELECT article_id, score FROM marsad_match(?)", [terms]).fetchall())
        theirs = dict(ref.execute("""SELECT article_id, s FROM (SELECT article_id, fts_main_docs.match_bm25(article_id, ?, conjunctive := 1) AS s
                                     FROM docs) WHERE s IS NOT NULL""", [terms]).fetchall())
        assert ours.keys() == theirs.keys(), q
        assert all(ours[k] == pytest.approx(theirs[k], rel=1e-9) for k in ours), q
        found += len(ours)
    assert found > 20  # the queries do find things
    con.close()


def test_light_stemming_one_form_per_clitic(copies):
    con = open_read_copy(copies)
    light = lambda t: con.execute("SELECT marsad_light(?), marsad_index_text(?)", [t, t]).fetchone()  # noqa: E731
    assert light("والاسد بالاسد الاسد للاسد") == ("اسد اسد اسد اسد",) * 2
    assert light("ولد وال") == ("ولد وال", "ولد وال")  # too short to lose a letter
    assert light("بعين بغداد") == ("بعين بغداد", "بعين عين بغداد غداد")
    con.close()
