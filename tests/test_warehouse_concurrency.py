"""Analysts query while the pipeline writes: neither side waits on, breaks or loses the other."""
import json
import logging
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from conftest import TESTS, rss, write_feeds_yaml
from marsad import pipeline
from test_pipeline import AR_ITEMS, EN_ITEMS
from warehouse import db
from warehouse.publish import open_read_copy, publish


def _feeds(tmp_path, feed_server, with_en: bool):
    feeds = [{"id": "test-ar", "name": "Test Arabic", "lang": "ar", "url": feed_server.serve("/ar.xml", rss(AR_ITEMS, "ar")), "interval": "5m"}]
    if with_en:
        feeds.append({"id": "test-en", "name": "Test English", "lang": "en", "url": feed_server.serve("/en.xml", rss(EN_ITEMS)), "interval": "5m"})
    return write_feeds_yaml(tmp_path / "feeds.yaml", feeds)


def _cycle(settings):
    now = datetime.now(timezone.utc)
    pipeline.fetch_stage(settings, pipeline.due_sources(settings, now))
    report = pipeline.load(settings, now)
    pipeline.evaluate(settings, now)
    pipeline.publish_read_copy(settings)
    return report


def _wait_for(path, proc, what):
    while not path.exists():
        assert proc.poll() is None, f"{what} exited early: {proc.communicate()}"
        time.sleep(0.02)


def test_analyst_session_survives_a_full_ingest_and_evaluate_cycle(tmp_path, feed_server, settings):
    settings.feeds = _feeds(tmp_path, feed_server, with_en=False)
    assert _cycle(settings).new_articles == 2
    assert settings.read_copy.exists()

    work = tmp_path / "analyst"
    work.mkdir()
    analyst = subprocess.Popen([sys.executable, str(TESTS / "analyst_session.py"), str(settings.read_copy), str(work)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(work / "ready", analyst, "analyst session")
        (work / "cycle").touch()
        settings.feeds = _feeds(tmp_path, feed_server, with_en=True)
        report = _cycle(settings)  # due -> fetch -> load -> evaluate -> publish
        (work / "stop").touch()
        out, err = analyst.communicate(timeout=60)
    finally:
        analyst.kill()
    assert analyst.returncode == 0, err
    session = json.loads(out)

    # The pipeline side: the cycle succeeded and its data landed in the primary.
    assert report.new_articles == 2
    with db.connect(settings.warehouse, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM articles").fetchone()[0] == 4
        assert con.execute("SELECT count(*) FROM fetch_log").fetchone()[0] == 2  # test-ar was not due again

    # The analyst side: queried all along without one error, on a stable snapshot ...
    assert session["errors"] == []
    assert session["during_cycle"] > 0
    assert session["seen"] == [2]
    # ... and a new connection sees the new data, searchable.
    assert session["after"]["articles"] == 4
    assert len(session["after"]["hits"]) == 1


def test_analyst_wrongly_holding_the_primary_makes_the_writer_wait_not_fail(tmp_path, feed_server, settings):
    settings.feeds = _feeds(tmp_path, feed_server, with_en=True)
    with db.connect(settings.warehouse):
        pass  # the warehouse exists, migrated
    manifests = pipeline.fetch_stage(settings, pipeline.due_sources(settings))
    assert len(manifests) == 2

    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time; con = duckdb.connect(sys.argv[1], read_only=True); "
         "print('holding', flush=True); time.sleep(2); con.close()", str(settings.warehouse)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(db.WarehouseBusy):  # the conflict is real ...
            db.open_db(settings.warehouse, wait_s=0.1)
        report = pipeline.load(settings)  # ... and the writer waits it out
    finally:
        holder.wait(timeout=30)
    assert holder.returncode == 0
    assert report.new_articles == 4
    with db.connect(settings.warehouse, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM articles").fetchone()[0] == 4
    assert not list(settings.staging.glob("*.json"))  # staged files consumed, nothing left behind
    pipeline.publish_read_copy(settings)
    con = open_read_copy(settings.read_copy)
    assert con.execute("SELECT articles FROM publish_info").fetchone()[0] == 4
    con.close()


def test_a_failed_publish_is_logged_and_the_step_still_succeeds(tmp_path, feed_server, settings, caplog):
    settings.feeds = _feeds(tmp_path, feed_server, with_en=False)
    settings.read_copy = tmp_path / "no-such-dir" / "read.duckdb"
    with caplog.at_level(logging.ERROR, logger="marsad.pipeline"):
        assert _cycle(settings).new_articles == 2
    assert "publishing the read copy" in caplog.text
    with db.connect(settings.warehouse, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM articles").fetchone()[0] == 2
    assert not list((tmp_path).glob("**/*.tmp"))


def test_publish_clears_what_a_killed_publisher_left(tmp_path, feed_server, settings):
    settings.feeds = _feeds(tmp_path, feed_server, with_en=False)
    _cycle(settings)
    stale = settings.read_copy.with_name(f".{settings.read_copy.name}.99999-deadbeef.tmp")
    fresh = settings.read_copy.with_name(f".{settings.read_copy.name}.99998-cafecafe.tmp")
    stale.write_bytes(b"half a database")
    fresh.write_bytes(b"another publisher at work")
    os.utime(stale, (time.time() - 2 * 3600,) * 2)
    publish(settings.warehouse, settings.read_copy)
    assert not stale.exists() and fresh.exists()
