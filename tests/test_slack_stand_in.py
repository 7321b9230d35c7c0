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


def test_token_types_chat_update_members_and_usergroups_as_slack_documents(slack):
    import warnings

    import pytest
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    bot = slack_client(slack.state.token, slack.base_url, timeout=2)
    app = WebClient(token=slack.state.app_token, base_url=slack.base_url, timeout=2)
    # apps.connections.open takes the app-level token only; the app-level token calls nothing else.
    url = bot.apps_connections_open(app_token=slack.state.app_token)["url"]
    assert url.startswith("ws://127.0.0.1:") and "ticket=" in url
    with pytest.raises(SlackApiError, match="not_allowed_token_type"):
        bot.apps_connections_open(app_token=slack.state.token)
    with pytest.raises(SlackApiError, match="invalid_auth"):
        bot.apps_connections_open(app_token="xapp-1-forged")
    with pytest.raises(SlackApiError, match="not_allowed_token_type"):
        app.chat_postMessage(channel="#marsad-alerts", text="x")

    ts = bot.chat_postMessage(channel="#marsad-alerts", text="ours", blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "ours"}}])["ts"]
    assert slack.message("C0ALERTS", ts)["blocks"][0]["block_id"]  # Slack names blocks that came without an id
    theirs = slack.post_as("U0ALICE", "#marsad-alerts", "a person's message")
    for kw, err in ((dict(channel="C0ALERTS", ts="1.000001", text="x"), "message_not_found"),
                    (dict(channel="C0NOPE", ts=ts, text="x"), "channel_not_found"),
                    (dict(channel="C0ALERTS", ts=theirs, text="x"), "cant_update_message"),
                    (dict(channel="C0ALERTS", ts=ts), "no_text")):
        with pytest.raises(SlackApiError, match=err), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # slack-sdk warns of the missing text: that is the point
            bot.chat_update(**kw)
    out = bot.chat_update(channel="C0ALERTS", ts=ts, text="edited")
    assert out["ts"] == ts and slack.message("C0ALERTS", ts)["text"] == "edited" and slack.message("C0ALERTS", ts)["edited"]["user"] == "UMARSAD"

    slack.state.members["C0ALERTS"] = [f"U{i:04d}" for i in range(5)]
    pages, cursor = [], None
    while True:
        resp = bot.conversations_members(channel="C0ALERTS", limit=2, cursor=cursor)
        pages.append(resp["members"])
        cursor = resp["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert pages == [["U0000", "U0001"], ["U0002", "U0003"], ["U0004"]]
    with pytest.raises(SlackApiError, match="channel_not_found"):
        bot.conversations_members(channel="C0NOPE")
    assert bot.usergroups_users_list(usergroup="S0ONCALL")["users"] == ["U0BOB"]
    with pytest.raises(SlackApiError, match="no_such_subteam"):
        bot.usergroups_users_list(usergroup="S0NOPE")


def test_socket_mode_hello_envelopes_acks_and_response_url(slack):
    """slack-sdk's built-in Socket Mode client connects to the stand-in, gets a real
    block_actions envelope for a button the message shows, and its ack is recorded."""
    import pytest
    from slack_sdk.socket_mode import SocketModeClient
    from slack_sdk.socket_mode.response import SocketModeResponse
    from slack_sdk.webhook import WebhookClient

    bot = slack_client(slack.state.token, slack.base_url, timeout=2)
    blocks = [{"type": "section", "block_id": "marsad_event:e1", "text": {"type": "mrkdwn", "text": "event"},
               "accessory": {"type": "button", "action_id": "marsad_not_event", "value": "a1|e1", "text": {"type": "plain_text", "text": "Not an event"}}},
              {"type": "actions", "block_id": "marsad_actions:a1", "elements": [
                  {"type": "button", "action_id": "marsad_ack", "value": "a1", "text": {"type": "plain_text", "text": "Acknowledge"}}]}]
    ts = bot.chat_postMessage(channel="#marsad-alerts", text="alert", blocks=blocks)["ts"]
    got = []
    client = SocketModeClient(app_token=slack.state.app_token, web_client=bot, auto_reconnect_enabled=False)

    def listener(c, req):
        got.append(req)
        c.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))

    client.socket_mode_request_listeners.append(listener)
    client.on_message_listeners.append(lambda raw: got.append(raw) if '"hello"' in raw else None)
    try:
        client.connect()
        assert slack.connected()
        assert slack.wait_for(lambda: any(isinstance(g, str) for g in got)), "no hello"
        with pytest.raises(AssertionError, match="shows no button"):
            slack.press("C0ALERTS", ts, "U0ALICE", "marsad_silence_6h")
        eid = slack.press("C0ALERTS", ts, "U0ALICE", "marsad_not_event", "a1|e1")
        assert slack.wait_for(lambda: slack.ack_of(eid)) == {"envelope_id": eid}
        (req,) = [g for g in got if not isinstance(g, str)]
        p = req.payload
        assert req.type == "interactive" and p["type"] == "block_actions" and p["user"]["id"] == "U0ALICE"
        assert p["container"] == {"type": "message", "message_ts": ts, "channel_id": "C0ALERTS", "is_ephemeral": False}
        assert p["actions"][0]["block_id"] == "marsad_event:e1" and p["actions"][0]["value"] == "a1|e1" and p["message"]["blocks"] == slack.message("C0ALERTS", ts)["blocks"]
        hook = WebhookClient(p["response_url"])
        for i in range(5):
            assert hook.send(text=f"only you see this {i}", response_type="ephemeral").status_code == 200
        assert hook.send(text="sixth").status_code == 404  # five uses, as Slack allows
        assert [r["text"] for r in slack.responses_to(p["response_url"])][0] == "only you see this 0"
    finally:
        client.close()
    # A ticket opens one connection.
    url = bot.apps_connections_open(app_token=slack.state.app_token)["url"]
    from websockets.sync.client import connect
    from websockets.exceptions import InvalidStatus

    with connect(url) as ws:
        assert '"hello"' in ws.recv(timeout=5)
    with pytest.raises(InvalidStatus):
        connect(url)
