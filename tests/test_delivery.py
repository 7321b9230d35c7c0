"""Alert delivery against a local server speaking Slack's Web API: exactly once, in order, safe text."""
from datetime import datetime, timezone

import pytest

from alerts.delivery import SlackSink, deliver, slack_client
from alerts.evaluate import NOTIFICATION_COLUMNS
from warehouse import db
from warehouse.load import bulk_insert

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def payload(state="firing", title="Drone attack on Ain al-Asad", url="https://example.com/a1"):
    return {
        "indicator": "militia_attack_us_forces", "rule": "militia-attack-campaign", "kind": "threshold", "state": state,
        "at": NOW.isoformat(), "severity": "high", "summary": "militia_attack_us_forces: 3 events in 3d (threshold 3)",
        "rationale": "three attacks in three days", "facts": {"window": "3d", "events": 3, "threshold": 3},
        "events": ["e1"], "corroboration": {"outlets": 2, "languages": ["ar", "en"]},
        "evidence": [{"event_id": "e1", "article_id": "a1", "guid": "g1", "source_id": "s1", "source": "Outlet",
                      "reliability": "B", "lang": "en", "title": title, "url": url, "published_at": NOW.isoformat()}],
    }


@pytest.fixture
def con(tmp_path):
    with db.connect(tmp_path / "wh.duckdb") as c:
        yield c


def queue(con, alert="al1", seq=1, state="firing", channel="#marsad-alerts", **kw):
    bulk_insert(con, "notifications", [dict(notification_id=f"{alert}:{seq}", alert_id=alert, seq=seq, state=state,
                                            created_at=NOW, channel=channel, payload=payload(state, **kw))], NOTIFICATION_COLUMNS)


def sink_for(slack, token=None):
    return SlackSink(slack_client(token or slack.state.token, slack.base_url, timeout=2))


def statuses(con):
    return dict(con.execute("SELECT notification_id, status FROM notifications").fetchall())


def test_posts_once_with_metadata_and_blocks(con, slack):
    queue(con)
    rep = deliver(con, sink_for(slack))
    assert rep.sent == 1
    (post,) = slack.posts()
    assert post["channel"] == "#marsad-alerts"
    assert post["metadata"]["event_payload"]["notification_id"] == "al1:1"
    assert post["blocks"][0]["type"] == "header" and "militia_attack_us_forces" in post["blocks"][0]["text"]["text"]
    assert "Drone attack on Ain al-Asad" in str(post["blocks"]) and post["text"]
    # Delivering again (a retried task) posts nothing more.
    assert deliver(con, sink_for(slack)).sent == 0
    assert len(slack.posts()) == 1


def test_follow_ups_go_to_the_thread_after_the_parent(con, slack):
    queue(con, seq=1)
    queue(con, seq=2, state="update")
    deliver(con, sink_for(slack))
    first, second = slack.posts()
    assert first.get("thread_ts") is None
    parent_ts = slack.state.messages["C0ALERTS"][0]["ts"]
    assert second["thread_ts"] == parent_ts


def test_crash_between_post_and_record_does_not_double_post(con, slack):
    """Slack posts the message but the answer never arrives (as if the worker died)."""
    queue(con)
    slack.fail_next("chat.postMessage", "drop")
    rep = deliver(con, sink_for(slack), tries=1)
    assert rep.failed == 1 and statuses(con)["al1:1"] == "sending"
    assert len(slack.state.messages["C0ALERTS"]) == 1  # it did land
    rep = deliver(con, sink_for(slack))
    assert rep.recovered == 1 and rep.sent == 0
    assert len(slack.state.messages["C0ALERTS"]) == 1
    assert len(slack.calls("conversations.history")) == 1
    assert statuses(con)["al1:1"] == "sent"


def test_server_error_is_retried_after_checking_history(con, slack):
    queue(con)
    slack.fail_next("chat.postMessage", ("server_error", 503))
    rep = deliver(con, sink_for(slack), backoff_s=0.01)
    assert rep.sent == 1
    assert len(slack.calls("chat.postMessage")) == 2
    assert len(slack.calls("conversations.history")) == 1  # looked before re-posting
    assert len(slack.state.messages["C0ALERTS"]) == 1


def test_rate_limit_honours_retry_after(con, slack):
    import time

    queue(con)
    slack.fail_next("chat.postMessage", ("ratelimited", 1))
    t0 = time.monotonic()
    rep = deliver(con, sink_for(slack))
    assert rep.sent == 1
    assert time.monotonic() - t0 >= 1.0  # waited as told
    assert len(slack.calls("chat.postMessage")) == 2
    assert len(slack.state.messages["C0ALERTS"]) == 1


def test_invalid_auth_keeps_the_alert_queued_with_a_clear_error(con, slack):
    queue(con)
    rep = deliver(con, sink_for(slack, token="xoxb-wrong"))
    assert rep.failed == 1
    status, err = con.execute("SELECT status, last_error FROM notifications").fetchone()
    assert status == "pending" and "invalid_auth" in err
    assert deliver(con, sink_for(slack)).sent == 1  # once the token is fixed
    assert len(slack.state.messages["C0ALERTS"]) == 1


def test_unknown_channel_keeps_the_alert_queued(con, slack):
    queue(con, channel="#no-such-channel")
    rep = deliver(con, sink_for(slack))
    assert rep.failed == 1
    status, err = con.execute("SELECT status, last_error FROM notifications").fetchone()
    assert status == "pending" and "channel_not_found" in err


def test_untrusted_feed_text_cannot_ping_or_forge_links(con, slack):
    queue(con, title="<!channel> hi <@U123> <http://evil.example|click here> & more", url="javascript:alert(1)")
    deliver(con, sink_for(slack))
    (post,) = slack.posts()
    text = str(post["blocks"]) + post["text"]
    assert "<!channel>" not in text and "<@U123>" not in text and "<http://evil.example|" not in text
    assert "&lt;!channel&gt;" in text and "&amp; more" in text
    assert "javascript:" not in text


def mrkdwn_texts(blocks):
    """(text, Slack's limit for it) of every mrkdwn element of a message."""
    for b in blocks:
        if b.get("text", {}).get("type") == "mrkdwn":
            yield b["text"]["text"], 3000
        for f in b.get("fields", []):
            yield f["text"], 2000
        for e in b.get("elements", []):
            if e.get("type") == "mrkdwn":
                yield e["text"], 3000


def assert_well_formed(blocks):
    import re

    for text, limit in mrkdwn_texts(blocks):
        assert len(text) <= limit
        outside_links = re.sub(r"<[^<>]*>", "", text)
        assert "<" not in outside_links and ">" not in outside_links, f"a link cut open: ...{text[-120:]!r}"
        assert "&" not in re.sub(r"&(?:amp|lt|gt);", "", outside_links), f"an escape cut in half: ...{text[-40:]!r}"


def test_sections_cut_at_the_limit_never_leave_a_link_or_an_escape_open(con, slack):
    from alerts.digest import render_digest
    from alerts.render import render

    base = payload()
    for n in range(520, 680, 3):  # the cut at 3,000 falls at every few characters of a link in the last line
        p = dict(base, evidence=[dict(base["evidence"][0], title=f"{i} " + "ع" * n, url=f"https://example.com/{i}/" + "x" * (n % 40))
                                 for i in range(5)])
        _, blocks = render(p, run_url="http://127.0.0.1:8080/dags/marsad_evaluate/runs/r1")
        assert_well_formed(blocks)
        digest = {"summary": "digest", "counts": {}, "unhealthy": [],
                  "top": [{"indicator": "x", "url": e["url"], "title": e["title"], "source": "Outlet"} for e in p["evidence"]]}
        assert_well_formed(render_digest(digest)[1])
    # One link longer than a whole section, and escapes across the cut.
    p = dict(base, summary="x" + "&" * 1000, evidence=[dict(base["evidence"][0], title="t" * 3500)])
    _, blocks = render(p)
    assert_well_formed(blocks)
    # And as posted to Slack.
    bulk_insert(con, "notifications", [dict(notification_id="al1:1", alert_id="al1", seq=1, state="firing", created_at=NOW,
                                            channel="#marsad-alerts", payload=dict(base, evidence=[
                                                dict(base["evidence"][0], title="ع" * 590, url=f"https://example.com/{i}")
                                                for i in range(5)]))], NOTIFICATION_COLUMNS)
    deliver(con, sink_for(slack))
    (post,) = slack.posts()
    assert_well_formed(post["blocks"])
    assert "https://example.com/0" in str(post["blocks"])


def test_link_labels_lose_bidi_overrides_and_zero_width_characters(con, slack):
    invisible = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200b\u200c\u200d\u2060\ufeff"
    title = "Invoice \u202egpj.exe\u202c from \u200bthe\u2066 base\u2069\ufeff \u2060هجوم على القاعدة\u200c"
    p = payload(title=title)
    p["evidence"][0]["source"] = "می\u200cخواهم"  # Persian with ZWNJ: body text, not a label
    bulk_insert(con, "notifications", [dict(notification_id="al1:1", alert_id="al1", seq=1, state="firing", created_at=NOW,
                                            channel="#marsad-alerts", payload=p)], NOTIFICATION_COLUMNS)
    deliver(con, sink_for(slack))
    (post,) = slack.posts()
    (line,) = [t for t, _ in mrkdwn_texts(post["blocks"]) if "https://example.com/a1" in t]
    label = line[line.index("|") + 1:line.index(">")]
    assert label == "Invoice gpj.exe from the base هجوم على القاعدة"
    assert not set(label) & set(invisible)
    assert "outlet: می\u200cخواهم ·" in line  # the ZWNJ outside the label is kept
