"""Slack buttons on alert messages: who may press them, what each press does, the edited message.

The transport does not matter here: ``marsad.slack_listener`` feeds this module the
``block_actions`` payloads it receives over Socket Mode (no public URL needed) or on an HTTP
request URL (checked first by :class:`RequestGuard`: Slack's signature, a timestamp window,
and no request twice). Plain Python: no Airflow.

A press (action ids and values: the contract in ``alerts.render``):

1. **Who.** Only members of ``ops.actors`` (marsad/settings.yaml) may act: a channel's members
   (``conversations.members``) or a user group's (``usergroups.users.list``); without the
   setting, the members of the channel the alert was posted in. Anyone else is told why,
   ephemerally (the press's ``response_url``), and nothing changes.
2. **What.** In one short warehouse transaction: the message must be an alert message this
   warehouse delivered (its channel and ts are in ``notifications``) and the button's alert id
   must be that message's, so a forged value cannot reach another alert. Then *Acknowledge*
   (``alerts.lifecycle.ack``), *Silence 6 h / 24 h* (``alerts.lifecycle.add_silence`` on the
   alert's rule) or *Not an event* (``alerts.feedback.flag_not_event``). Each is idempotent:
   a second press (a stale view, a re-sent request) finds it done, changes nothing, edits
   nothing, and tells the presser who did it and when.
3. **The edit.** With the warehouse closed again (never held over a Slack call), the message
   is redrawn by ``alerts.render.render`` with a ``MessageState`` read back from the warehouse
   (acknowledged by, silenced until, events struck through) and replaced with ``chat.update``.

DuckDB has a single writer. A press waits for the write lock a few seconds (``lock_wait_s``);
if a load or an evaluation keeps the file longer, the press is **queued**, not lost: one JSON
line appended (and fsynced) to ``<warehouse>.presses.jsonl`` next to the warehouse, and the
presser hears that it will be applied. The queue is drained, oldest first, before the next
press is handled and every ``PENDING_EVERY_S`` by the listener; a drained press is applied as
of the time it was made and its message edited then.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import parse_qs

import duckdb
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from alerts.feedback import FeedbackError, flag_not_event, flagged
from alerts.lifecycle import LifecycleError, ack, active_silence, add_silence, message_state, shown_events
from alerts.render import ACK, NOT_EVENT, SILENCE_6H, SILENCE_24H, SILENCE_SECONDS, MessageState, render, who
from sources.configfile import SLACK_USER_GROUP, slack_actors
from warehouse import db

log = logging.getLogger("marsad.interact")
ACTIONS = (ACK, SILENCE_6H, SILENCE_24H, NOT_EVENT)
LOCK_WAIT_S = 10.0  # how long a press waits for the warehouse before it is queued
PENDING_EVERY_S = 30.0  # the listener drains queued presses this often
SIGNATURE_WINDOW_S = 300  # Slack's: a request older than 5 minutes is refused (SignatureVerifier)
_RUN_LINK = re.compile(r"<(https?://[^|>]+)\|Airflow run>")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(timezone.utc).isoformat() if t is not None else None


def _when(t: datetime | None) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if t is not None else "?"


@dataclass
class Press:
    """One button press: what the handler needs of a ``block_actions`` payload."""

    action_id: str
    value: str
    user: str  # Slack user id
    username: str
    channel: str  # channel id of the message
    message_ts: str
    response_url: str | None
    action_ts: str
    at: str  # ISO time the press was received (a queued press is applied as of then)
    run_url: str | None = None  # the Airflow run the message links, kept in the edit

    @classmethod
    def from_payload(cls, payload: Mapping, now: datetime) -> list["Press"]:
        user = payload.get("user") or {}
        container = payload.get("container") or {}
        message = payload.get("message") or {}
        run = _RUN_LINK.search(json.dumps(message.get("blocks") or [], ensure_ascii=False))
        out = []
        for a in payload.get("actions") or []:
            out.append(cls(
                action_id=str(a.get("action_id") or ""), value=str(a.get("value") or ""), user=str(user.get("id") or ""),
                username=str(user.get("username") or user.get("name") or user.get("id") or ""),
                channel=str(container.get("channel_id") or (payload.get("channel") or {}).get("id") or ""),
                message_ts=str(container.get("message_ts") or message.get("ts") or ""), response_url=payload.get("response_url"),
                action_ts=str(a.get("action_ts") or ""), at=now.isoformat(), run_url=run.group(1) if run else None,
            ))
        return out

    @property
    def alert_id(self) -> str:
        return self.value.split("|", 1)[0]

    @property
    def event_id(self) -> str | None:
        parts = self.value.split("|", 1)
        return parts[1] if len(parts) == 2 else None


@dataclass
class Outcome:
    """What a press did: ``applied`` (state changed, message edited), ``unchanged`` (done
    before: nothing changed), ``refused`` (not allowed, or not a button of this message),
    ``queued`` (the warehouse was busy: applied later), ``ignored`` (not a Marsad button)."""

    status: str
    told: str = ""  # what the presser was told (ephemerally)
    edited: bool = False


@dataclass
class _Drawn:
    payload: dict
    state: MessageState
    resolved_at: str | None


class Refused(Exception):
    pass


# ----------------------------------------------------------------------------- who may act


class Access:
    """Who may press Marsad's buttons: members of ``actors`` (a channel or a user group), or,
    without it, of the channel the message is in. Asked of Slack at each press (presses are
    rare; a member removed a minute ago can no longer act)."""

    def __init__(self, client: WebClient, actors: str | None = None):
        self.client = client
        self.actors = slack_actors(actors)  # validated as the settings validate ops.actors

    def describe(self, channel: str) -> str:
        if self.actors and SLACK_USER_GROUP.match(self.actors):
            return f"the user group <!subteam^{self.actors}>"
        return f"<#{self._channel_id(self.actors) if self.actors else channel}>"

    def allowed(self, user: str, channel: str) -> bool:
        if not user:
            return False
        if self.actors and SLACK_USER_GROUP.match(self.actors):
            return user in self.client.usergroups_users_list(usergroup=self.actors).get("users", [])
        cid = self._channel_id(self.actors) if self.actors else channel
        if cid is None:
            return False
        cursor = None
        while True:
            resp = self.client.conversations_members(channel=cid, limit=200, cursor=cursor)
            if user in resp.get("members", []):
                return True
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return False

    def _channel_id(self, ref: str) -> str | None:
        if not ref.startswith("#"):
            return ref
        cursor = None
        while True:
            resp = self.client.conversations_list(types="public_channel,private_channel", limit=200, cursor=cursor)
            for ch in resp.get("channels", []):
                if ch.get("name") == ref[1:]:
                    return ch["id"]
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None


# ----------------------------------------------------------------------------- the handler


class InteractionHandler:
    """Applies presses to the warehouse and edits their messages (see the module doc)."""

    def __init__(self, warehouse: str | Path, client: WebClient, actors: str | None = None,
                 lock_wait_s: float = LOCK_WAIT_S, clock: Callable[[], datetime] = utcnow):
        self.warehouse = Path(warehouse)
        self.client = client
        self.access = Access(client, actors)
        self.lock_wait_s = lock_wait_s
        self.clock = clock
        # Presses arrive on several threads (slack-sdk's workers, the queue drainer); one at a
        # time here, so two presses of one alert never race in one DuckDB instance.
        self._one_at_a_time = threading.Lock()

    # -- entry points

    def handle_payload(self, payload: Mapping) -> list[Outcome]:
        """A ``block_actions`` payload (from Socket Mode or the request URL): each of its actions."""
        if payload.get("type") != "block_actions":
            return []
        presses = Press.from_payload(payload, self.clock())
        if any(p.action_id in ACTIONS for p in presses):
            self.apply_pending()  # earlier presses first
        return [self.handle(p) for p in presses]

    def handle(self, press: Press, queued: bool = False) -> Outcome:
        if press.action_id not in ACTIONS:
            return Outcome("ignored")
        if not queued:
            try:
                allowed = self.access.allowed(press.user, press.channel)
            except SlackApiError as exc:
                err = exc.response.get("error") if exc.response is not None else str(exc)
                log.error("could not check who may act (%s): refusing the press of %s", err, press.user)
                return self._tell(press, Outcome("refused", f"Marsad could not check who may act ({err}): nothing was changed. "
                                                             "Tell the Marsad admins (ops.actors, the bot's scopes)."))
            if not allowed:
                return self._tell(press, Outcome("refused", f"Only members of {self.access.describe(press.channel)} can act on Marsad "
                                                             "alerts; nothing was changed. Ask to be added, or ask a member."))
        try:
            outcome, drawn = self._apply(press)
        except db.WarehouseBusy:
            if queued:
                raise
            self._queue(press)
            return self._tell(press, Outcome("queued", "Marsad's warehouse is busy (a load is running): your press is saved and "
                                                       "will be applied within a minute; this message will change then."))
        except Refused as exc:
            return self._tell(press, Outcome("refused", str(exc)))
        if drawn is not None:
            outcome.edited = self._edit(press, drawn)
        if outcome.told:
            self._tell(press, outcome)
        return outcome

    # -- the warehouse part

    def _apply(self, press: Press) -> tuple[Outcome, _Drawn | None]:
        now = datetime.fromisoformat(press.at)
        with self._one_at_a_time:
            con = db.open_db(self.warehouse, wait_s=self.lock_wait_s)
            try:
                con.execute("SET TimeZone = 'UTC'")
                db.migrate(con)
                return self._apply_on(con, press, now)
            finally:
                con.close()

    def _apply_on(self, con: duckdb.DuckDBPyConnection, press: Press, now: datetime) -> tuple[Outcome, _Drawn | None]:
        note = con.execute(
            """SELECT alert_id, payload FROM notifications WHERE slack_channel = ? AND slack_ts = ? AND status = 'sent'""",
            [press.channel, press.message_ts],
        ).fetchone()
        if note is None:
            raise Refused("This is not a Marsad alert message this warehouse sent; nothing was changed.")
        alert_id, payload = note[0], json.loads(note[1]) if isinstance(note[1], str) else note[1]
        if press.alert_id != alert_id:
            raise Refused("That button does not belong to this message; nothing was changed.")
        row = con.execute(
            "SELECT rule_id, indicator, state, resolved_at, acked_at, acked_by FROM alerts WHERE alert_id = ?", [alert_id]
        ).fetchone()
        if row is None:
            raise Refused(f"Marsad has no alert {alert_id}; nothing was changed.")
        rule_id, indicator, state, resolved_at, acked_at, acked_by = row
        if press.action_id == ACK:
            if acked_at is not None:
                outcome = Outcome("unchanged", f"Already acknowledged by {who(acked_by)} at {_when(acked_at)}.")
            elif state != "firing":
                outcome = Outcome("unchanged", f"This alert is {state}: there is nothing to acknowledge.")
            else:
                try:
                    ack(con, alert_id, press.user, f"from Slack by @{press.username}", now)
                except LifecycleError as exc:
                    raise Refused(f"{exc}; nothing was changed.") from None
                outcome = Outcome("applied")
        elif press.action_id in SILENCE_SECONDS:
            active = active_silence(con, rule_id, indicator, now)
            if active is not None:
                outcome = Outcome("unchanged", f"Already silenced until {_when(active[0])} by {who(active[1])}.")
            else:
                hours = SILENCE_SECONDS[press.action_id] // 3600
                add_silence(con, "rule", rule_id, SILENCE_SECONDS[press.action_id],
                            f"Slack: Silence {hours} h on alert {alert_id} by @{press.username}", press.user, now)
                outcome = Outcome("applied")
        else:  # NOT_EVENT
            event_id = press.event_id
            told = con.execute("SELECT 1 FROM alert_events WHERE alert_id = ? AND event_id = ?", [alert_id, event_id]).fetchone()
            if not event_id or told is None:
                raise Refused("That event is not one this alert told about; nothing was changed.")
            try:
                done = flag_not_event(con, event_id, alert_id, press.user, now, note=f"from Slack by @{press.username}")
            except FeedbackError as exc:
                raise Refused(f"{exc}; nothing was changed.") from None
            if done:
                outcome = Outcome("applied", "Flagged not an event: it no longer counts for any rule. Rules are re-evaluated at the "
                                             "next cycle (a threshold that no longer holds resolves). `marsad feedback undo` reverses it.")
            else:
                by = flagged(con).get(event_id)
                outcome = Outcome("unchanged", f"Already flagged not an event by {who(by)}.")
        if outcome.status != "applied":
            return outcome, None
        return outcome, self._drawn(con, alert_id, payload, rule_id, indicator, now)

    def _drawn(self, con, alert_id: str, payload: dict, rule_id: str, indicator: str, now: datetime) -> _Drawn:
        state, resolved_at = con.execute("SELECT state, resolved_at FROM alerts WHERE alert_id = ?", [alert_id]).fetchone()
        return _Drawn(payload, message_state(con, alert_id, now, shown_events(payload)), _iso(resolved_at) if state == "resolved" else None)

    # -- Slack calls (no warehouse connection open)

    def _edit(self, press: Press, drawn: _Drawn) -> bool:
        text, blocks = render(drawn.payload, press.run_url, resolved_at=drawn.resolved_at, state=drawn.state)
        try:
            self.client.chat_update(channel=press.channel, ts=press.message_ts, text=text, blocks=blocks)
            return True
        except SlackApiError as exc:  # the state changed; the message shows it at the next edit
            log.error("press %s by %s applied, but the message %s could not be edited: %s", press.action_id, press.user,
                      press.message_ts, exc.response.get("error") if exc.response is not None else exc)
            return False

    def _tell(self, press: Press, outcome: Outcome) -> Outcome:
        """An ephemeral reply to the presser through the press's response_url."""
        if not press.response_url or not outcome.told:
            return outcome
        try:
            resp = WebhookClient(press.response_url, timeout=10).send(text=outcome.told, response_type="ephemeral", replace_original=False)
            if resp.status_code != 200:
                log.warning("response_url answered %s to the reply for %s: %s", resp.status_code, press.user, resp.body)
        except Exception as exc:
            log.warning("could not reply to %s through the response_url: %s", press.user, exc)
        return outcome

    # -- presses queued while the warehouse was busy

    @property
    def queue_file(self) -> Path:
        return self.warehouse.with_name(self.warehouse.name + ".presses.jsonl")

    def _queue_lock(self):
        fd = os.open(self.warehouse.with_name(self.warehouse.name + ".presses.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _queue(self, press: Press) -> None:
        fd = self._queue_lock()
        try:
            with open(self.queue_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(asdict(press), ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
        finally:
            os.close(fd)
        log.warning("warehouse busy: press %s of %s by %s queued in %s", press.action_id, press.value, press.user, self.queue_file)

    def pending(self) -> list[Press]:
        try:
            lines = self.queue_file.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for n, line in enumerate(lines, 1):
            if line.strip():
                try:
                    out.append(Press(**json.loads(line)))
                except (TypeError, ValueError) as exc:
                    log.error("%s:%d: not a queued press, left out: %s", self.queue_file, n, exc)
        return out

    def apply_pending(self) -> list[Outcome]:
        """Apply queued presses, oldest first; those the warehouse still refuses stay queued."""
        if not self.queue_file.exists():
            return []
        fd = self._queue_lock()
        try:
            presses = self.pending()
            done: list[Outcome] = []
            for i, press in enumerate(presses):
                try:
                    done.append(self.handle(press, queued=True))
                except db.WarehouseBusy:
                    break
            left = presses[len(done):]
            tmp = self.queue_file.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(asdict(p), ensure_ascii=False) + "\n" for p in left), encoding="utf-8")
            os.replace(tmp, self.queue_file)
            if not left:
                self.queue_file.unlink(missing_ok=True)
            return done
        finally:
            os.close(fd)


# ----------------------------------------------------------------------------- HTTP request URL


class RequestGuard:
    """Checks an interaction POSTed to a request URL before anything reads it: Slack's
    signature over the raw body (slack-sdk's ``SignatureVerifier``: HMAC-SHA256 with the app's
    signing secret, timestamp within 5 minutes), and no signature seen before within that
    window, so a captured request sent again is refused even while its timestamp is fresh."""

    def __init__(self, signing_secret: str, clock: Callable[[], float] = time.time):
        self.verifier = SignatureVerifier(signing_secret)
        self.clock = clock
        self._seen: dict[str, float] = {}

    def payload(self, body: bytes, headers: Mapping[str, str]) -> dict:
        """The interaction payload of a genuine, first-seen request; ``Refused`` otherwise."""
        h = {k.lower(): v for k, v in headers.items()}
        if not self.verifier.is_valid_request(body, h):
            raise Refused("bad or stale signature")
        sig = h["x-slack-signature"]
        now = self.clock()
        self._seen = {s: t for s, t in self._seen.items() if now - t <= SIGNATURE_WINDOW_S * 2}
        if sig in self._seen:
            raise Refused("replayed request")
        self._seen[sig] = now
        form = parse_qs(body.decode("utf-8", "replace"))
        try:
            return json.loads(form["payload"][0])
        except (KeyError, IndexError, ValueError):
            raise Refused("no interaction payload") from None
