"""The Slack stand-in reads channels as Slack's Web API documents it (tests/slack_server.py):
delivery's recovery after a lost answer is only as good as this."""
from alerts.delivery import slack_client


def test_history_has_parents_replies_have_the_thread_both_paged(slack):
    client = slack_client(slack.state.token, slack.base_url, timeout=2)
    meta = {"event_type": "t", "event_payload": {"n": 0}}
    parent = client.chat_postMessage(channel="#marsad-alerts", text="parent", metadata=meta)["ts"]
    replies = [client.chat_postMessage(channel="#marsad-alerts", text=f"r{i}", thread_ts=parent)["ts"] for i in range(4)]
    broadcast = client.chat_postMessage(channel="#marsad-alerts", text="also in channel", thread_ts=parent, reply_broadcast=True)["ts"]
    other = client.chat_postMessage(channel="#marsad-alerts", text="other")["ts"]

    hist = client.conversations_history(channel="C0ALERTS")
    assert [m["ts"] for m in hist["messages"]] == [other, broadcast, parent]  # newest first, no plain replies
    top = hist["messages"][2]
    assert top["thread_ts"] == parent and top["reply_count"] == 5 and top["latest_reply"] == broadcast
    assert "metadata" not in top  # only when asked for
    assert client.conversations_history(channel="C0ALERTS", include_all_metadata=True)["messages"][2]["metadata"] == meta

    thread = client.conversations_replies(channel="C0ALERTS", ts=replies[1])  # any ts of the thread names it
    assert [m["ts"] for m in thread["messages"]] == [parent, *replies, broadcast]

    pages, cursor = [], None
    while True:
        resp = client.conversations_replies(channel="C0ALERTS", ts=parent, limit=2, cursor=cursor)
        pages.append([m["ts"] for m in resp["messages"]])
        cursor = resp["response_metadata"]["next_cursor"]
        assert resp["has_more"] == bool(cursor)
        if not cursor:
            break
    assert pages == [[parent, replies[0]], replies[1:3], [replies[3], broadcast]]

    slack.state.page_cap = 1  # whatever limit asks
    resp = client.conversations_history(channel="C0ALERTS", oldest=parent, limit=100)  # oldest is exclusive
    assert [m["ts"] for m in resp["messages"]] == [other] and resp["has_more"]
    resp = client.conversations_history(channel="C0ALERTS", oldest=parent, cursor=resp["response_metadata"]["next_cursor"])
    assert [m["ts"] for m in resp["messages"]] == [broadcast] and not resp["has_more"]
    resp = client.conversations_history(channel="C0ALERTS", oldest=parent, latest=parent, inclusive=True)
    assert [m["ts"] for m in resp["messages"]] == [parent]

    from slack_sdk.errors import SlackApiError
    import pytest

    with pytest.raises(SlackApiError, match="thread_not_found"):
        client.conversations_replies(channel="C0ALERTS", ts="1.000001")
    with pytest.raises(SlackApiError, match="invalid_cursor"):
        client.conversations_history(channel="C0ALERTS", cursor="bm9wZQ==")
