"""Deliver queued notifications from the outbox, each exactly once.

A notification moves ``pending -> sending -> sent``. A run *claims* its batch in one short
transaction (``sending``, committed before any post), calls Slack holding no warehouse
connection, and records each result in another short transaction. So a crash, a lost answer
or a retried task between posting and recording leaves the notification ``sending``, and the
next attempt looks for the message before posting again: every post carries Slack message
metadata with its notification id. A first message is looked for in the channel
(``conversations.history``, which lists parent messages only), a reply in its thread
(``conversations.replies`` of the alert's first message), following Slack's cursors.
A Slack error that proves nothing was posted (``invalid_auth``, ``channel_not_found``) puts
the notification back to ``pending`` with the error, so nothing is lost. Claimed
notifications a run never got to go back to what they were.

Slack can hang: DuckDB lets one process write the file and no other even open it, so a
connection held across a Slack call would stop ingestion. A run starts no Slack call after
its time budget (``delivery.budget``) and leaves the rest queued. Runs take turns through a
lock file next to the warehouse (not the warehouse), so two runs never claim the same row.

Follow-ups (``update``, ``repeat``, ``resolved``) go into the thread of the alert's first
message, which must have been delivered first.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Iterator, Protocol

import duckdb
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from alerts.digest import chart_png, render_digest
from alerts.render import render
from alerts.lifecycle import message_state, messages_behind, record_drawn, shown_events
from warehouse import db

log = logging.getLogger("marsad.delivery")
METADATA_EVENT = "marsad_alert"
# Errors after which Slack certainly did not post: fix the setup, the alert stays queued.
PERMANENT = {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "channel_not_found", "not_in_channel", "is_archived", "missing_scope"}
DEFAULT_BUDGET_S = 120  # delivery.budget in marsad/settings.yaml


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

    def find(self, notification_id: str, channel: str, since: datetime, thread_ts: str | None = None) -> Posted | None: ...

    def post(self, notification_id: str, alert_id: str, channel: str, payload: dict, thread_ts: str | None) -> Posted: ...

    def update(self, channel: str | None, ts: str | None, payload: dict, resolved_at: str, state=None) -> None: ...


class LocalSink:
    """No Slack configured: alerts are logged (and stay recorded in the warehouse)."""

    name = "local"

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream

    def find(self, notification_id, channel, since, thread_ts=None):
        return None  # nothing external to double-post to

    def post(self, notification_id, alert_id, channel, payload, thread_ts):
        text, _ = render(payload)
        log.warning("ALERT %s %s: %s", channel, payload["state"], text)
        if self.stream is not None:
            self.stream.write(f"[{channel}] {payload['state']}: {payload['summary']}\n")
        return Posted(None, None)

    def update(self, channel, ts, payload, resolved_at, state=None):
        return None


class JsonLinesSink:
    """One JSON line per notification (``marsad replay``'s alert stream)."""

    name = "jsonl"

    def __init__(self, stream: IO[str] = sys.stdout):
        self.stream = stream

    def find(self, notification_id, channel, since, thread_ts=None):
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

    def update(self, channel, ts, payload, resolved_at, state=None):
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

    def find(self, notification_id, channel, since, thread_ts=None):
        """The message carrying this notification id, if Slack has it. A reply is looked for
        in its thread (``conversations.replies``): ``conversations.history`` lists parent
        messages only. Every page is read, following Slack's cursors."""
        channel_id = self._channel_id(channel)
        if channel_id is None:
            return None
        cursor = None
        while True:
            if thread_ts:
                # The whole thread, not from ``since``: a thread is short, and this way a clock
                # that differs from Slack's cannot hide the reply.
                try:
                    resp = self.client.conversations_replies(channel=channel_id, ts=thread_ts, include_all_metadata=True, limit=200, cursor=cursor)
                except SlackApiError as exc:
                    if exc.response is not None and exc.response.get("error") == "thread_not_found":
                        return None  # the first message was deleted: nothing was posted under it
                    raise
            else:
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

    def update(self, channel, ts, payload, resolved_at, state=None):
        """Edit the alert's first message so the channel shows at a glance that it is over
        (keeping what ops did to it: ``state``, an ``alerts.render.MessageState``)."""
        if not (channel and ts):
            return
        text, blocks = render(payload, self.run_url, resolved_at=resolved_at, state=state)
        self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)


@dataclass
class DeliveryReport:
    sent: int = 0
    recovered: int = 0  # found already posted after an interrupted attempt
    failed: int = 0
    waiting: int = 0  # follow-ups waiting for an earlier message of their alert
    silenced: int = 0  # held back by a silence
    deferred: int = 0  # left queued for the next run: the run's time budget was spent
    redrawn: int = 0  # first messages edited to show what ops did since (a CLI ack, a silence that ran out)

    def as_dict(self) -> dict:
        return self.__dict__.copy()


class _Budget:
    """The time a delivery run may spend; ``None``: unbounded."""

    def __init__(self, seconds: float | None):
        self.deadline = None if seconds is None else time.monotonic() + seconds

    def out(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def remaining(self) -> float:
        return float("inf") if self.deadline is None else max(0.0, self.deadline - time.monotonic())


@dataclass
class _Root:
    """The alert's first posted message: its thread takes the follow-ups."""

    nid: str
    ts: str | None
    channel: str | None
    payload: dict


@dataclass
class _Claim:
    nid: str
    alert_id: str
    seq: int
    state: str
    channel: str
    payload: dict
    created_at: datetime
    was: str  # status before the claim: ``sending`` means an earlier attempt may have posted
    done: bool = False  # its outcome is recorded
    tried: bool = False  # a Slack call was made for it: it may have been posted


@dataclass
class _Attempt:
    outcome: str  # sent | recovered | failed
    posted: Posted | None = None
    error: str | None = None
    posts: int = 0
    uncertain: bool = False  # a failed attempt may have posted: look before posting next time
    certain: bool = False  # Slack refused for good (configuration): retrying now cannot help
    attempted: bool = True  # some Slack call was made for it


def _warehouse_path(warehouse) -> Path:
    if isinstance(warehouse, (str, Path)):
        return Path(warehouse)
    if isinstance(warehouse, duckdb.DuckDBPyConnection):  # a caller's connection: only its file is used
        return Path(db.database_path(warehouse))
    raise TypeError(f"deliver needs the warehouse file, not {type(warehouse).__name__}")


def deliver(warehouse, sink: Sink, limit: int = 500, tries: int = 3, backoff_s: float = 1.0,
            budget_s: float | None = DEFAULT_BUDGET_S) -> DeliveryReport:
    """Send pending notifications in order; safe to repeat after a crash or a retried task.

    ``warehouse``: the DuckDB file (a connection to it is taken for its file). No warehouse
    connection is held while Slack is called: the batch is claimed in one short transaction
    and each result recorded in another, so a slow or hung Slack never blocks a load.
    A failure that may have posted (5xx, timeout, lost connection) is retried up to ``tries``
    times with exponential backoff, each time checking Slack first. No Slack call starts after
    ``budget_s`` seconds; what is left stays queued (``deferred``). Notifications created
    inside an active silence are kept back (``silenced``).
    """
    path = _warehouse_path(warehouse)
    budget = _Budget(budget_s)
    report = DeliveryReport()
    with _one_run_at_a_time(path, budget) as ours:
        if not ours:
            log.warning("another delivery run kept %s busy for the whole budget; the outbox waits for the next run", path)
            return report
        batch, roots = _claim(path, limit, report)
        try:
            _send(path, sink, batch, roots, report, tries, backoff_s, budget)
        finally:
            _release(path, batch)
        _redraw_behind(path, sink, report, budget)
    return report


@contextmanager
def _one_run_at_a_time(path: Path, budget: _Budget) -> Iterator[bool]:
    """Delivery runs take turns (a lock file next to the warehouse, released by the kernel if
    the process dies): two runs claiming the same rows could both post them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".deliver.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if budget.out():
                    yield False
                    return
                time.sleep(min(0.2, budget.remaining()))
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _claim(path: Path, limit: int, report: DeliveryReport) -> tuple[list[_Claim], dict[str, _Root]]:
    """One short transaction: hold back silenced notifications, pick the batch in order, mark it
    ``sending`` (durable before any post), and read the threads its follow-ups go into."""
    with db.connect(path) as con, db.transaction(con):
        _hold_silenced(con, report)
        rows = con.execute(
            """SELECT n.notification_id, n.alert_id, n.seq, n.state, n.channel, n.payload, n.created_at, n.status
               FROM notifications n
               WHERE n.status IN ('pending', 'sending')
               ORDER BY n.created_at, n.alert_id, n.seq
               LIMIT ?""",
            [limit],
        ).fetchall()
        if not rows:
            return [], {}
        ids = [r[0] for r in rows]
        # An earlier message of the alert still unsent and outside the batch keeps the thread in order.
        held = {a for (a,) in con.execute(
            """SELECT DISTINCT n.alert_id FROM notifications n JOIN notifications e ON e.alert_id = n.alert_id AND e.seq < n.seq
               WHERE list_contains(?, n.notification_id) AND e.status IN ('pending', 'sending') AND NOT list_contains(?, e.notification_id)""",
            [ids, ids],
        ).fetchall()}
        batch = []
        for nid, alert_id, seq, state, channel, payload, created_at, status in rows:
            if alert_id in held:
                report.waiting += 1
                continue
            payload = json.loads(payload) if isinstance(payload, str) else payload
            batch.append(_Claim(nid, alert_id, seq, state, channel, payload, created_at, status))
        roots = {}
        for alert_id in {c.alert_id for c in batch}:
            root = _thread_root(con, alert_id)
            if root is not None:
                roots[alert_id] = _Root(root[0], root[1], root[2], json.loads(root[3]) if isinstance(root[3], str) else root[3])
        if batch:
            con.execute("UPDATE notifications SET status = 'sending' WHERE list_contains(?, notification_id)", [[c.nid for c in batch]])
    return batch, roots


def _send(path: Path, sink: Sink, batch: list[_Claim], roots: dict[str, _Root], report: DeliveryReport,
          tries: int, backoff_s: float, budget: _Budget) -> None:
    """Call Slack for each claimed notification, no warehouse connection open; record each
    result as soon as it is known."""
    blocked: set[str] = set()
    for c in batch:
        if c.alert_id in blocked:
            report.waiting += 1  # keep the thread in order
            continue
        if budget.out():
            report.deferred += 1
            continue
        root = roots.get(c.alert_id)
        if root is None and c.state == "resolved":
            # Nobody was told it fired (all silenced): a lone "resolved" would only confuse.
            _record(path, "UPDATE notifications SET status = 'silenced' WHERE notification_id = ?", [c.nid])
            c.done = True
            report.silenced += 1
            continue
        thread_ts = root.ts if root else None
        # A follow-up goes where its thread is, and is looked for there.
        channel = root.channel if thread_ts and root.channel else c.channel
        att = _attempt(sink, c, channel, thread_ts, tries, backoff_s, budget)
        if not att.attempted:  # out of time before its first call
            report.deferred += 1
            blocked.add(c.alert_id)
            continue
        if att.outcome == "failed" and att.error is None:  # out of time between its lookup and its post
            report.deferred += 1  # stays sending, as it was
            blocked.add(c.alert_id)
            continue
        if att.outcome == "failed":
            status = "sending" if att.uncertain else "pending"
            _record(path, "UPDATE notifications SET status = ?, last_error = ?, attempts = attempts + ? WHERE notification_id = ?",
                    [status, att.error, att.posts, c.nid])
            c.done = True
            report.failed += 1
            blocked.add(c.alert_id)
            continue
        _record(path, """UPDATE notifications SET status = 'sent', sink = ?, sent_at = ?, slack_channel = ?, slack_ts = ?,
                             thread_ts = ?, last_error = NULL, attempts = attempts + ? WHERE notification_id = ?""",
                [sink.name, datetime.now(timezone.utc), att.posted.channel, att.posted.ts, thread_ts, att.posts, c.nid])
        c.done = True
        if att.outcome == "recovered":
            report.recovered += 1
        else:
            report.sent += 1
        if root is None:
            roots[c.alert_id] = _Root(c.nid, att.posted.ts, att.posted.channel, c.payload)
        elif c.state == "resolved":
            _mark_parent_resolved(path, sink, root, c.payload, budget)


def _attempt(sink: Sink, c: _Claim, channel: str, thread_ts: str | None, tries: int, backoff_s: float, budget: _Budget) -> _Attempt:
    """Slack calls only: look first when an earlier attempt may have posted, then post."""
    att = _Attempt("failed", uncertain=c.was == "sending", attempted=False)
    for attempt in range(tries):
        if budget.out():
            break
        att.attempted = c.tried = True  # from here on it may be in Slack, whatever happens to this run
        try:
            if att.uncertain:
                found = sink.find(c.nid, channel, c.created_at, thread_ts)
                if found is not None:
                    att.outcome, att.posted = "recovered", found
                    return att
                if budget.out():
                    break
            att.posts += 1
            att.posted = sink.post(c.nid, c.alert_id, channel, c.payload, thread_ts)
            att.outcome = "sent"
            return att
        except DeliveryError as exc:
            att.error = str(exc)
            log.error("notification %s not delivered (attempt %d): %s", c.nid, attempt + 1, exc)
            if exc.certain_not_posted:
                return att  # configuration problem: retrying now cannot help
            att.uncertain = True
        except Exception as exc:  # e.g. the lookup failed: leave as is, try again later
            att.error = f"{type(exc).__name__}: {exc}"
            log.error("notification %s: %s", c.nid, att.error)
        if attempt + 1 < tries:
            time.sleep(min(backoff_s * (2**attempt), budget.remaining()))
    return att


def _record(path: Path, sql: str, params: list) -> None:
    """One short transaction: a result, as soon as Slack gave it."""
    with db.connect(path, migrate_schema=False) as con:
        con.execute(sql, params)


def _release(path: Path, batch: list[_Claim]) -> None:
    """Claimed notifications the run never called Slack for go back to what they were (a
    ``sending`` one stays ``sending``: it may have been posted before). One whose call was made
    but whose result was not recorded (the run was stopped mid-call, or the warehouse stayed
    busy) stays ``sending``; so do all of them if this is never reached (the process was
    killed). The next run looks for those before posting: never twice."""
    back = [c.nid for c in batch if not c.done and not c.tried and c.was == "pending"]
    if not back:
        return
    try:
        _record(path, "UPDATE notifications SET status = 'pending' WHERE status = 'sending' AND list_contains(?, notification_id)", [back])
    except Exception as exc:
        log.error("could not put %d claimed notification(s) back to pending (they will be looked for in Slack first): %s", len(back), exc)


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


def _mark_parent_resolved(path: Path, sink: Sink, root: _Root, resolved: dict, budget: _Budget) -> None:
    if budget.out():
        log.warning("out of time: the first message of %s is not marked resolved (its thread says so)", root.nid)
        return
    state = _ops_state(path, root) if root.channel and root.ts else None  # nothing to edit for the local and replay sinks
    try:
        sink.update(root.channel, root.ts, root.payload, resolved_at=resolved["at"], state=state)
    except Exception as exc:  # the reply in the thread already says it; the edit is cosmetic
        log.error("could not mark the first message of %s resolved: %s", root.nid, exc)
        return
    with db.connect(path, migrate_schema=False) as con, db.transaction(con):  # marked resolved, and what it shows of ops' actions
        con.execute("UPDATE notifications SET parent_updated = true WHERE notification_id = ?", [root.nid])
        if state is not None:
            record_drawn(con, [(_root_alert(root), state)], datetime.now(timezone.utc))


def _ops_state(path: Path, root: _Root):
    """What ops did to the alert (acknowledged by, silence, events flagged), so that the
    resolution's edit of its first message keeps it; None if it cannot be read."""
    try:
        with db.connect(path, migrate_schema=False) as con:
            return message_state(con, _root_alert(root), datetime.now(timezone.utc), shown_events(root.payload))
    except Exception as exc:
        log.warning("the resolved first message of %s is drawn without what ops did to it: %s", root.nid, exc)
        return None


def _root_alert(root: _Root) -> str:
    return root.payload.get("alert_id") or root.nid.rsplit(":", 1)[0]


def _redraw_behind(path: Path, sink: Sink, report: DeliveryReport, budget: _Budget) -> None:
    """Edit the first messages that do not show what ops did as it stands now
    (``alerts.lifecycle.messages_behind``: an acknowledgement or a flag from the CLI, a silence
    that ran out), with what was drawn recorded; no warehouse connection during the edits."""
    if budget.out():
        return
    try:
        with db.connect(path, migrate_schema=False) as con:  # not read_only: DuckDB refuses that beside a writer of this process
            behind = messages_behind(con, datetime.now(timezone.utc))
    except Exception as exc:  # cosmetic: the state itself is in the warehouse, the next run tries again
        log.warning("could not read which alert messages to redraw: %s", exc)
        return
    drawn = []
    for r in behind:
        if budget.out():
            break
        try:
            sink.update(r.channel, r.ts, r.payload, resolved_at=r.resolved_at, state=r.state)
        except Exception as exc:
            log.error("could not redraw the first message of alert %s (what ops did stays in the warehouse): %s", r.alert_id, exc)
            continue
        drawn.append((r.alert_id, r.state))
    if drawn:
        with db.connect(path) as con, db.transaction(con):
            record_drawn(con, drawn, datetime.now(timezone.utc))
        report.redrawn += len(drawn)
