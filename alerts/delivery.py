"""Deliver queued notifications from the outbox, each exactly once.

A notification moves ``pending -> sending -> sent``. ``sending`` is committed *before*
the post, so a crash or a retried task between posting and recording leaves it marked;
the next delivery then looks for the message in the channel's history (every post
carries Slack message metadata with its notification id) instead of posting again.
A Slack error that proves nothing was posted (``invalid_auth``, ``channel_not_found``)
puts the notification back to ``pending`` with the error, so nothing is lost.

Follow-ups (``update``, ``repeat``, ``resolved``) go into the thread of the alert's first
message, which must have been delivered first.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Protocol

import duckdb
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from alerts.digest import chart_png, render_digest
from alerts.render import render

log = logging.getLogger("marsad.delivery")
METADATA_EVENT = "marsad_alert"
# Errors after which Slack certainly did not post: fix the setup, the alert stays queued.
PERMANENT = {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "channel_not_found", "not_in_channel", "is_archived", "missing_scope"}


@dataclass
class Posted:
    channel: str | None
    ts: str | None


class DeliveryError(Exception):
    def __init__(self, message: str, certain_not_posted: bool):
        super().__init__(message)
        self.certain_not_posted = certain_not_posted


class Sink(Protocol):
    name: str

    def find(self, notification_id: str, channel: str, since: datetime) -> Posted | None: ...

    def post(self, notification_id: str, alert_id: str, channel: str, payload: dict, thread_ts: str | None) -> Posted: ...

    def update(self, channel: str | None, ts: str | None, payload: dict, resolved_at: str) -> None: ...


class LocalSink:
    """No Slack configured: alerts are logged (and stay recorded in the warehouse)."""

    name = "local"

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream

    def find(self, notification_id, channel, since):
        return None  # nothing external to double-post to

    def post(self, notification_id, alert_id, channel, payload, thread_ts):
        text, _ = render(payload)
        log.warning("ALERT %s %s: %s", channel, payload["state"], text)
        if self.stream is not None:
            self.stream.write(f"[{channel}] {payload['state']}: {payload['summary']}\n")
        return Posted(None, None)

    def update(self, channel, ts, payload, resolved_at):
        return None


class JsonLinesSink:
    """One JSON line per notification (``marsad replay``'s alert stream)."""

    name = "jsonl"

    def __init__(self, stream: IO[str] = sys.stdout):
        self.stream = stream

    def find(self, notification_id, channel, since):
        return None

    def post(self, notification_id, alert_id, channel, payload, thread_ts):
        line = {
            "indicator": payload["indicator"],
            "rule": payload["rule"],
            "kind": payload["kind"],
            "state": payload["state"],
            "at": payload["at"],
            "evidence": [e.get("guid") or e["article_id"] for e in payload.get("evidence", [])],
        }
        self.stream.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.stream.flush()
        return Posted(None, None)

    def update(self, channel, ts, payload, resolved_at):
        return None


def retry_handlers(max_retries: int = 5) -> list:
    """Only 429s are retried inside slack-sdk: Slack refused the call, so re-sending cannot
    double-post. After a 5xx or a lost connection the post may have landed; those are
    retried by ``deliver``, which first looks for the message in the channel."""
    return [RateLimitErrorRetryHandler(max_retry_count=max_retries)]


def slack_client(token: str, base_url: str | None = None, timeout: int = 15) -> WebClient:
    kw = {"base_url": base_url} if base_url else {}
    return WebClient(token=token, timeout=timeout, retry_handlers=retry_handlers(), **kw)


class SlackSink:
    name = "slack"

    def __init__(self, client: WebClient, run_url: str | None = None):
        """``run_url``: link to the Airflow run that delivers (shown in each message's context line)."""
        self.client = client
        self.run_url = run_url
        self._channel_ids: dict[str, str] = {}

    def _channel_id(self, channel: str) -> str | None:
        if not channel.startswith("#"):
            return channel
        if channel not in self._channel_ids:
            cursor = None
            while True:
                resp = self.client.conversations_list(types="public_channel,private_channel", limit=200, cursor=cursor)
                for ch in resp.get("channels", []):
                    self._channel_ids["#" + ch["name"]] = ch["id"]
                cursor = (resp.get("response_metadata") or {}).get("next_cursor")
                if not cursor:
                    break
        return self._channel_ids.get(channel)

    def find(self, notification_id, channel, since):
        channel_id = self._channel_id(channel)
        if channel_id is None:
            return None
        cursor = None
        while True:
            resp = self.client.conversations_history(
                channel=channel_id, oldest=f"{since.timestamp() - 60:.6f}", include_all_metadata=True, limit=200, cursor=cursor
            )
            for msg in resp.get("messages", []):
                meta = msg.get("metadata") or {}
                if meta.get("event_type") == METADATA_EVENT and (meta.get("event_payload") or {}).get("notification_id") == notification_id:
                    return Posted(channel_id, msg.get("ts"))
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not resp.get("has_more") or not cursor:
                return None

    def post(self, notification_id, alert_id, channel, payload, thread_ts):
        if payload.get("state") == "digest":
            text, blocks = render_digest(payload)
        else:
            text, blocks = render(payload, self.run_url)
        try:
            resp = self.client.chat_postMessage(
                channel=channel,
                text=text,
                blocks=blocks,
                thread_ts=thread_ts,
                unfurl_links=False,
                unfurl_media=False,
                metadata={"event_type": METADATA_EVENT, "event_payload": {"notification_id": notification_id, "alert_id": alert_id}},
            )
        except SlackApiError as exc:
            err = exc.response.get("error", "unknown_error") if exc.response is not None else "unknown_error"
            status = exc.response.status_code if exc.response is not None else None
            # A 4xx answer with ok=false means the message was refused; 5xx/429 after retries may be uncertain.
            certain = err in PERMANENT or (status is not None and 400 <= status < 500 and status != 429)
            raise DeliveryError(f"Slack refused chat.postMessage: {err}", certain) from None
        except Exception as exc:  # timeouts, connection resets after the retries
            raise DeliveryError(f"Slack unreachable: {type(exc).__name__}: {exc}", False) from None
        posted = Posted(resp.get("channel"), resp.get("ts"))
        if payload.get("state") == "digest":
            self._attach_chart(posted, payload)
        return posted

    def _attach_chart(self, posted: Posted, payload: dict) -> None:
        """Upload the digest chart into the digest's thread (files API v2). A failed upload
        does not undo the digest, which says everything the chart shows."""
        try:
            self.client.files_upload_v2(
                channel=posted.channel,
                thread_ts=posted.ts,
                content=chart_png(payload),
                filename=f"marsad-digest-{payload['at'][:10]}.png",
                title="Events per indicator, last 24 hours",
                alt_txt="Bar chart of events per indicator in the last 24 hours",
            )
        except Exception as exc:
            log.error("digest chart upload failed: %s", exc)

    def update(self, channel, ts, payload, resolved_at):
        """Edit the alert's first message so the channel shows at a glance that it is over."""
        if not (channel and ts):
            return
        text, blocks = render(payload, self.run_url, resolved_at=resolved_at)
        self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)


@dataclass
class DeliveryReport:
    sent: int = 0
    recovered: int = 0  # found already posted after an interrupted attempt
    failed: int = 0
    waiting: int = 0  # follow-ups waiting for an earlier message of their alert
    silenced: int = 0  # held back by a silence

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def deliver(con: duckdb.DuckDBPyConnection, sink: Sink, limit: int = 500, tries: int = 3, backoff_s: float = 1.0) -> DeliveryReport:
    """Send pending notifications in order; safe to repeat after a crash or a retried task.

    A failure that may have posted (5xx, timeout, lost connection) is retried up to
    ``tries`` times with exponential backoff, each time checking the channel first.
    Notifications created inside an active silence are kept back (``silenced``).
    """
    report = DeliveryReport()
    _hold_silenced(con, report)
    rows = con.execute(
        """SELECT n.notification_id, n.alert_id, n.seq, n.state, n.channel, n.payload, n.created_at
           FROM notifications n
           WHERE n.status IN ('pending', 'sending')
           ORDER BY n.created_at, n.alert_id, n.seq
           LIMIT ?""",
        [limit],
    ).fetchall()
    blocked_alerts: set[str] = set()
    for nid, alert_id, seq, state, channel, payload, created_at in rows:
        payload = json.loads(payload) if isinstance(payload, str) else payload
        earlier_unsent = con.execute(
            "SELECT count(*) FROM notifications WHERE alert_id = ? AND seq < ? AND status IN ('pending', 'sending')", [alert_id, seq]
        ).fetchone()[0]
        if alert_id in blocked_alerts or earlier_unsent:
            report.waiting += 1  # keep the thread in order
            blocked_alerts.add(alert_id)
            continue
        root = _thread_root(con, alert_id)
        if root is None and state == "resolved":
            # Nobody was told it fired (all silenced): a lone "resolved" would only confuse.
            con.execute("UPDATE notifications SET status = 'silenced' WHERE notification_id = ?", [nid])
            report.silenced += 1
            continue
        thread_ts = root[1] if root else None
        outcome = _deliver_one(con, sink, nid, alert_id, channel, payload, created_at, thread_ts, tries, backoff_s)
        if outcome == "failed":
            report.failed += 1
            blocked_alerts.add(alert_id)
            continue
        if outcome == "recovered":
            report.recovered += 1
        else:
            report.sent += 1
        if state == "resolved" and root is not None:
            _mark_parent_resolved(con, sink, root, payload)
    return report


def _hold_silenced(con, report: "DeliveryReport") -> None:
    held = con.execute(
        """UPDATE notifications SET status = 'silenced'
           WHERE status = 'pending' AND EXISTS (
               SELECT 1 FROM silences s
               WHERE notifications.created_at >= s.starts_at AND notifications.created_at < s.ends_at
                 AND ((s.matcher = 'indicator' AND s.value = (notifications.payload->>'indicator'))
                   OR (s.matcher = 'rule' AND s.value = (notifications.payload->>'rule'))))
           RETURNING notification_id"""
    ).fetchall()
    report.silenced += len(held)


def _thread_root(con, alert_id: str) -> tuple | None:
    """(notification_id, slack_ts, slack_channel, payload) of the alert's first posted message."""
    return con.execute(
        """SELECT notification_id, slack_ts, slack_channel, payload FROM notifications
           WHERE alert_id = ? AND status = 'sent' ORDER BY seq LIMIT 1""",
        [alert_id],
    ).fetchone()


def _mark_parent_resolved(con, sink: Sink, root: tuple, resolved: dict) -> None:
    nid, ts, channel, payload = root
    payload = json.loads(payload) if isinstance(payload, str) else payload
    try:
        sink.update(channel, ts, payload, resolved_at=resolved["at"])
    except Exception as exc:  # the reply in the thread already says it; the edit is cosmetic
        log.error("could not mark the first message of %s resolved: %s", nid, exc)
        return
    con.execute("UPDATE notifications SET parent_updated = true WHERE notification_id = ?", [nid])


def _deliver_one(con, sink: Sink, nid, alert_id, channel, payload, created_at, thread_ts, tries: int, backoff_s: float) -> str:
    for attempt in range(tries):
        status = con.execute("SELECT status FROM notifications WHERE notification_id = ?", [nid]).fetchone()[0]
        try:
            if status == "sending":  # an earlier attempt may have posted: look before posting again
                found = sink.find(nid, channel, created_at)
                if found is not None:
                    _mark_sent(con, nid, sink.name, found, thread_ts)
                    return "recovered"
            con.execute("UPDATE notifications SET status = 'sending', attempts = attempts + 1 WHERE notification_id = ?", [nid])
            posted = sink.post(nid, alert_id, channel, payload, thread_ts)
        except DeliveryError as exc:
            new_status = "pending" if exc.certain_not_posted else "sending"
            con.execute("UPDATE notifications SET status = ?, last_error = ? WHERE notification_id = ?", [new_status, str(exc), nid])
            log.error("notification %s not delivered (attempt %d): %s", nid, attempt + 1, exc)
            if exc.certain_not_posted:
                return "failed"  # configuration problem: retrying now cannot help
        except Exception as exc:  # e.g. history lookup failed: leave as is, try again later
            con.execute("UPDATE notifications SET last_error = ? WHERE notification_id = ?", [f"{type(exc).__name__}: {exc}", nid])
            log.error("notification %s: %s", nid, exc)
        else:
            _mark_sent(con, nid, sink.name, posted, thread_ts)
            return "sent"
        if attempt + 1 < tries:
            time.sleep(backoff_s * (2**attempt))
    return "failed"


def _mark_sent(con, nid: str, sink: str, posted: Posted, thread_ts: str | None) -> None:
    con.execute(
        """UPDATE notifications SET status = 'sent', sink = ?, sent_at = ?, slack_channel = ?, slack_ts = ?,
               thread_ts = ?, last_error = NULL WHERE notification_id = ?""",
        [sink, datetime.now(timezone.utc), posted.channel, posted.ts, thread_ts, nid],
    )
