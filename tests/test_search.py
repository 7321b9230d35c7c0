"""The search index of our own (warehouse.search) ranks exactly as DuckDB's fts index does on the
same text: same articles, same BM25 scores, for Arabic and English queries; and the index's
short-cut split (index_words) gives the words of the whole path for every text we hold."""
import json

import duckdb
import pytest

from sources.normalize import fold
from test_publish import FIXTURES, QUERIES, _add, _article, _reports
from warehouse import db
from warehouse.publish import open_read_copy, publish
from warehouse.search import PLAIN, STEMMER, TOKENIZE, index_words, load_fts, macros


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


def _texts() -> list[str]:
    """Titles and summaries (each alone, and the two together) of every labelled text we hold:
    tests/fixtures and ../shared's rss-captures and dev-headlines."""
    from conftest import CORPORA

    paths = [*sorted(FIXTURES.glob("*.jsonl")), CORPORA / "rss-captures" / "items.jsonl",
             CORPORA / "dev-headlines" / "headlines.jsonl"]
    out = []
    for path in paths:
        assert path.exists(), path
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict):
                title, summary = str(r.get("title") or ""), str(r.get("summary") or "")
                out += [title, summary, f"{title} {summary}"]
    assert len(out) > 8_000
    return out


def _bench_texts(tmp_path, n: int = 20_000) -> list[str]:
    """The folded texts of the first ``n`` articles the publish bench generates."""
    from bench.publish import _articles_sql, _vocab

    ar, en = _vocab()
    with db.connect(tmp_path / "bench.duckdb") as con:
        con.execute("CREATE TEMP TABLE _vocab AS SELECT ?::VARCHAR[] AS ar, ?::VARCHAR[] AS en", [ar, en])
        con.execute(_articles_sql(0, n))
        return [r[0] for r in con.execute("SELECT text_folded FROM articles").fetchall()]


def test_index_words_short_cuts_split_every_text_as_the_whole_path(tmp_path):
    """index_words skips lower, strip_accents, the non-letter replacement and (for plain ASCII)
    the clitic rules where they cannot change a text: the words must be those of the whole path
    (TOKENIZE of marsad_index_text) for every text, folded or not."""
    con = duckdb.connect()
    load_fts(con)
    macros(con)
    plain = [chr(c) for c in (*range(ord("a"), ord("z") + 1), *range(ord("0"), ord("9") + 1), 0x20, 0x621,
                               *range(0x627, 0x63B), *range(0x641, 0x64B))]
    assert con.execute(f"SELECT regexp_full_match(?, '[{PLAIN}]*')", ["".join(plain)]).fetchone()[0]
    # every character of PLAIN and every pair (composition acts on neighbours), with the clitics
    # and the article before them, and runs of spaces
    pairs = [a + b for a in plain for b in plain]
    probes = pairs + [f"{'وبلكف'[i % 5]}{p}{p[1]} و{p}{p[1]} ال{p}  {p[0]}" for i, p in enumerate(pairs)]
    folded = _bench_texts(tmp_path)
    texts = _texts()
    texts += [fold(t) for t in texts] + folded + probes + ["", " ", "  a  b ", "ABC", "é", "اَ", "آ", "ـ", "a_b", "ٱلقاعدة"]
    # one string parameter split in SQL (a list parameter of 50k strings binds slowly)
    assert not any("\x01" in x for x in texts)
    con.execute("CREATE TABLE t AS SELECT unnest(string_split(?, chr(1))) AS text UNION ALL SELECT NULL", ["\x01".join(texts)])
    whole = TOKENIZE.format("marsad_index_text(text)")
    differ = con.execute(f"""SELECT text FROM t WHERE list_filter({whole}, w -> w <> '')
                             IS DISTINCT FROM list_filter({index_words('text')}, w -> w <> '')""").fetchall()
    assert differ == []
    # the short cuts are taken: by the bench's texts and most folded ones
    share = con.execute(f"SELECT avg(regexp_full_match(x, '[{PLAIN}]*')::INT) FROM unnest(string_split(?, chr(1))) u(x)",
                        ["\x01".join(folded + [fold(t) for t in _texts()])]).fetchone()[0]
    assert share > 0.9, share
