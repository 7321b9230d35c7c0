"""The primary's checkpoint policy (``warehouse.checkpoint_wal``, warehouse/db.py).

A close leaves the changes in the WAL (``<file>.wal``) instead of checkpointing every time;
DuckDB checkpoints when the WAL passes the setting. Everything that reads the primary must
see what is in the WAL: read-only connections (publishing, the CLI), a copy of the file
(``db.copy_file``), the next writer. Real DuckDB files throughout.
"""
from __future__ import annotations

import shutil
from datetime import datetime, timezone

import duckdb
import pytest

from warehouse import db

NOW = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)


def _add_articles(path, first: int, n: int) -> None:
    with db.connect(path) as con, db.transaction(con):
        con.execute(
            """INSERT INTO articles (article_id, source_id, guid, url, canonical_url, title, summary, lang,
                                     published_at, fetched_at, title_folded, text_folded, content_hash)
               SELECT 'a-' || i, 's', 'g-' || i, 'https://x.example/' || i, 'https://x.example/' || i,
                      'title ' || i, repeat('summary text ', 40) || i, 'en', ?, ?, 'title ' || i,
                      'title ' || i, md5('a-' || i)
               FROM range(?, ?) t(i)""", [NOW, NOW, first, first + n])


def _count(path, read_only=True) -> int:
    con = duckdb.connect(str(path), read_only=read_only)
    try:
        return con.execute("SELECT count(*) FROM articles").fetchone()[0]
    finally:
        con.close()


def test_a_close_leaves_the_wal_and_every_reader_sees_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MARSAD_CHECKPOINT_WAL", "16MB")
    path = tmp_path / "wh.duckdb"
    with db.connect(path):
        pass
    db.checkpoint(path)
    _add_articles(path, 0, 100)
    # The close did not checkpoint: the rows are in the WAL, not in the file.
    assert db.wal_path(path).exists() and db.wal_path(path).stat().st_size > 0
    alone = tmp_path / "alone.duckdb"
    shutil.copyfile(path, alone)
    assert _count(alone) == 0, "the file alone lacks the WAL's rows: why copies take both"
    # A read-only connection (publishing, marsad query's sources, the CLI) replays it in memory ...
    assert _count(path) == 100
    assert db.wal_path(path).stat().st_size > 0, "a reader never checkpoints"
    # ... a copy with its WAL holds everything ...
    both = tmp_path / "both.duckdb"
    db.copy_file(path, both)
    assert _count(both) == 100
    # ... and so does the next writer, which appends to the same WAL.
    _add_articles(path, 100, 50)
    assert _count(path) == 150
    # An explicit checkpoint writes it into the file: the file alone is then complete.
    db.checkpoint(path)
    assert not db.wal_path(path).exists() or db.wal_path(path).stat().st_size == 0
    shutil.copyfile(path, alone)
    db.wal_path(alone).unlink(missing_ok=True)
    assert _count(alone) == 150


def test_the_wal_is_checkpointed_when_it_passes_the_setting(tmp_path, monkeypatch):
    path = tmp_path / "wh.duckdb"
    monkeypatch.setenv("MARSAD_CHECKPOINT_WAL", "1MB")
    with db.connect(path):
        pass
    db.checkpoint(path)
    _add_articles(path, 0, 100)  # ~60 kB of WAL
    small = db.wal_path(path).stat().st_size
    assert 0 < small < 1_000_000
    _add_articles(path, 100, 5000)  # past 1 MB: DuckDB checkpoints at that commit
    assert not db.wal_path(path).exists() or db.wal_path(path).stat().st_size < small
    db.wal_path(path).unlink(missing_ok=True)
    assert _count(path) == 5100, "everything is in the file"


def test_zero_checkpoints_at_every_close(tmp_path, monkeypatch):
    path = tmp_path / "wh.duckdb"
    monkeypatch.setenv("MARSAD_CHECKPOINT_WAL", "0")
    _add_articles(path, 0, 100)
    assert not db.wal_path(path).exists()
    assert _count(path) == 100


def test_copy_file_replaces_a_stale_wal_of_the_destination(tmp_path, monkeypatch):
    monkeypatch.setenv("MARSAD_CHECKPOINT_WAL", "16MB")
    src, dst = tmp_path / "src.duckdb", tmp_path / "dst.duckdb"
    _add_articles(dst, 0, 10)  # dst has a WAL of its own
    _add_articles(src, 0, 20)
    db.checkpoint(src)
    db.copy_file(src, dst)  # src has no WAL now: dst's old one must not be replayed over it
    assert not db.wal_path(dst).exists()
    assert _count(dst) == 20


def test_the_publish_reads_what_the_wal_holds(tmp_path, monkeypatch):
    """The read copy is made from the primary opened read-only (warehouse.publish): rows a
    load left in the WAL are published, fully and incrementally."""
    from warehouse.publish import publish

    monkeypatch.setenv("MARSAD_CHECKPOINT_WAL", "16MB")
    path, copy = tmp_path / "wh.duckdb", tmp_path / "wh-read.duckdb"
    _add_articles(path, 0, 30)
    assert db.wal_path(path).exists()
    publish(path, copy)
    assert _count(copy) == 30
    _add_articles(path, 30, 12)
    publish(path, copy)
    assert _count(copy) == 42


@pytest.mark.parametrize("value", ["banana", "16", "-1MB"])
def test_a_bad_setting_is_refused_with_its_line(tmp_path, monkeypatch, value):
    from marsad.settings import ENV
    from sources.configfile import ConfigError

    for var in ENV.values():
        monkeypatch.delenv(var, raising=False)
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"warehouse:\n  checkpoint_wal: {value}\n", encoding="utf-8")
    monkeypatch.setenv("MARSAD_SETTINGS", str(settings))
    with pytest.raises(ConfigError, match=rf"{settings}:2: warehouse.checkpoint_wal"):
        db.checkpoint_wal()
