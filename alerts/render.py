"""Slack messages for alert notifications: Block Kit plus a plain-text fallback.

Feed titles are untrusted: a headline must never ping ``@channel``, mention a user or
forge a link, so every piece of feed text goes through ``escape`` and links are built
only from http(s) URLs. Link labels lose bidi controls and zero-width characters, and a
text longer than Slack allows is cut by ``clip``, never inside a link or an escape.

An alert's evidence is a list of *events* (one real-world occurrence each, however many
outlets reported it), newest first: when it was first reported, where, by whom, with what,
which outlets in which languages, and a link to each report. The header names the
indicator as the board does (its ``name``), not its id.

Buttons (the contract with the Slack interaction handler, ``alerts.slack_actions``): the
first message of an alert carries an actions block ``marsad_actions:<alert_id>`` with
*Acknowledge* (``marsad_ack``) and *Silence 6 h / 24 h* (``marsad_silence_6h`` /
``marsad_silence_24h``, the alert's rule), values the alert id; a rule alert's event
sections (``marsad_event:<event_id>``) each carry *Not an event* (``marsad_not_event``,
value ``<alert_id>|<event_id>``), in the first message and in the thread's updates and repeats. Digests and deadline notices have no buttons.
``MessageState`` is what ops did since: ``render`` with it draws the edited message.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, is_dataclass
from urllib.parse import urlsplit

SECTION_MAX = 3000  # Slack's limit on a section's (or a context element's) text
FIELD_MAX = 2000  # and on a section field's
HEADER_MAX = 150  # and on a header's plain text
BLOCKS_MAX = 50  # and on the blocks of one message
TEXT_MAX = 3000  # the notification fallback: Slack truncates ``text`` past 40,000; keep it readable
MAX_EVENTS = 10  # event sections in one message; the rest are counted ("and N more")
LABEL_MAX = 200  # a report title shown as a link label
MAX_EVIDENCE = MAX_EVENTS  # old name

ACK = "marsad_ack"
SILENCE_6H = "marsad_silence_6h"
SILENCE_24H = "marsad_silence_24h"
NOT_EVENT = "marsad_not_event"
ACTIONS_BLOCK = "marsad_actions:"
EVENT_BLOCK = "marsad_event:"
SILENCE_SECONDS = {SILENCE_6H: 6 * 3600, SILENCE_24H: 24 * 3600}

OPS_KINDS = frozenset({"source_down", "source_silent", "config_error"})  # Acknowledge and Silence, no events
NO_BUTTONS = frozenset({"digest", "deadline"})

_STATE_ICON = {"firing": ":rotating_light:", "update": ":heavy_plus_sign:", "repeat": ":repeat:", "resolved": ":white_check_mark:",
               "deadline": ":hourglass:"}
# Bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) and zero-width
# characters (U+200B-U+200D, U+2060, U+FEFF): in a link label they can make it read as
# something else ("\u202egpj.exe" shows as "exe.jpg") or hide text, and an unterminated
# override also turns the rest of the line around. Stripped from labels only: in Arabic
# (or Persian) text ZWNJ and ZWJ carry meaning, and body text keeps them.
_LABEL_INVISIBLE = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF])
_ENTITY = re.compile(r"&(?:amp|lt|gt);")
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,30}$")


@dataclass
class MessageState:
    """What ops did to an alert since its message was posted, drawn into the edited message."""

    acked_by: str | None = None  # Slack user id (or a CLI user name)
    acked_at: str | None = None  # ISO 8601
    silenced_until: str | None = None
    silenced_by: str | None = None
    not_events: dict[str, str] = field(default_factory=dict)  # event_id -> user id


def escape(text: str | None) -> str:
    """Slack's three control characters; what is left cannot mention anyone or make a link."""
    return (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int = SECTION_MAX) -> str:
    """``text`` cut to at most ``limit`` characters, at a line end when one is near, never
    inside a link (``<url|label>``: an unclosed one swallows the rest of the message) nor
    inside an escape (``&amp;``); an ellipsis marks the cut."""
    if len(text) <= limit:
        return text
    cut = limit - 1  # room for the ellipsis
    line_end = text.rfind("\n", 0, cut)
    if line_end >= limit // 2:
        cut = line_end
    opening = text.rfind("<", 0, cut)  # feed text is escaped: every "<" left opens one of our links
    if opening != -1 and text.find(">", opening, cut) == -1:
        cut = opening
    entity = _ENTITY.search(text, max(0, cut - 4))
    if entity and entity.start() < cut < entity.end():
        cut = entity.start()
    return text[:cut].rstrip() + "…"


def _shorten(text: str, limit: int) -> str:
    """Plain text (before escaping) cut to ``limit`` characters with an ellipsis."""
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def link(url: str | None, label: str) -> str:
    label = escape((label or "").translate(_LABEL_INVISIBLE)).replace("|", "¦")
    if not url:
        return label
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return label
    safe = url.strip().replace("<", "%3C").replace(">", "%3E").replace("|", "%7C").replace(" ", "%20")
    return f"<{safe}|{label}>"


def who(user: str | None) -> str:
    """A Slack user id as a mention; anything else (a CLI user name) as plain text."""
    if user and _SLACK_USER.match(user):
        return f"<@{user}>"
    return escape(user or "someone")


def _when(iso: str | None) -> str:
    return (iso or "?")[:16].replace("T", " ") + " UTC"


def _as_dict(payload) -> dict:
    if isinstance(payload, dict):
        return payload
    if hasattr(payload, "to_payload"):
        return payload.to_payload()
    if is_dataclass(payload):
        return asdict(payload)
    raise TypeError(f"cannot render {type(payload).__name__}")


def events_of(payload: dict) -> list[dict]:
    """The payload's evidence (one entry per report) as events, newest first: first report
    time, title and link of the first report, place/actor/weapon when known, outlets,
    languages and every report."""
    per: dict[str, list[dict]] = {}
    for e in payload.get("evidence") or []:
        per.setdefault(e.get("event_id") or e.get("article_id") or "?", []).append(e)
    extra = {c["event_id"]: c for c in (payload.get("corroboration") or {}).get("events") or [] if isinstance(c, dict) and "event_id" in c}
    out = []
    for event_id, reports in per.items():
        reports = sorted(reports, key=lambda r: (r.get("published_at") or "", r.get("article_id") or ""))
        first = reports[0]
        x = extra.get(event_id, {})
        out.append({
            "event_id": event_id, "at": first.get("published_at"), "title": x.get("title") or first.get("title") or "",
            "url": first.get("url"), "place": x.get("place"), "actor": x.get("actor"), "weapon": x.get("weapon"),
            "outlets": sorted({r.get("source") or r.get("source_id") or "?" for r in reports}),
            "languages": sorted({r.get("lang") or "?" for r in reports}), "reports": reports,
        })
    out.sort(key=lambda ev: (ev["at"] or "", ev["event_id"]), reverse=True)
    return out


def _event_text(ev: dict, flagged_by: str | None) -> str:
    """One event as mrkdwn, at most SECTION_MAX characters, report links whole or left out."""
    head = f"*{_when(ev['at'])}* · {link(ev['url'], _shorten(ev['title'], LABEL_MAX))}"
    if flagged_by is not None:
        head = f"~{head}~ · _flagged not an event by {who(flagged_by)}_"
    lines = [head]
    what = [f"{k} {escape(_shorten(ev[key], 80))}" for k, key in (("where:", "place"), ("who:", "actor"), ("weapon:", "weapon")) if ev.get(key)]
    if what:
        lines.append(" · ".join(what))
    n = len(ev["reports"])
    outlets = ", ".join(escape(_shorten(o, 60)) for o in ev["outlets"][:8]) + (f" +{len(ev['outlets']) - 8}" if len(ev["outlets"]) > 8 else "")
    rel = sorted({r.get("reliability") for r in ev["reports"] if r.get("reliability")})
    lines.append(f"{n} report{'s' if n != 1 else ''} from {len(ev['outlets'])} outlet{'s' if len(ev['outlets']) != 1 else ''}: "
                 f"{outlets} · {', '.join(ev['languages'])}" + (f" · reliability {'/'.join(rel)}" if rel else ""))
    text = "\n".join(lines)
    if len(text) > SECTION_MAX - 40:
        text = clip(text, SECTION_MAX - 40)
    links, left = [], 0
    budget = SECTION_MAX - len(text) - len("\nreports: ") - 20
    for i, r in enumerate(ev["reports"]):
        label = f"{_shorten(r.get('source') or r.get('source_id') or '?', 40)} ({r.get('lang') or '?'}, {(r.get('published_at') or '?')[11:16]})"
        piece = link(r.get("url"), label)
        if len(piece) + 3 > budget:
            left = n - i
            break
        links.append(piece)
        budget -= len(piece) + 3
    if links or left:
        text += "\nreports: " + " · ".join(links) + (f" · +{left} more" if left else "")
    return text


def _kind_name(payload: dict) -> str:
    return payload.get("indicator_name") or payload.get("indicator") or "Marsad"


def _buttons(payload: dict, state: MessageState) -> list[dict]:
    alert_id = payload.get("alert_id")
    elements = []
    if not state.acked_by:
        elements.append({"type": "button", "action_id": ACK, "text": {"type": "plain_text", "text": "Acknowledge"}, "value": alert_id,
                         "style": "primary"})
    if not state.silenced_until:
        for action, label in ((SILENCE_6H, "Silence 6 h"), (SILENCE_24H, "Silence 24 h")):
            elements.append({"type": "button", "action_id": action, "text": {"type": "plain_text", "text": label}, "value": alert_id})
    return [{"type": "actions", "block_id": f"{ACTIONS_BLOCK}{alert_id}", "elements": elements}] if elements else []


def _state_lines(state: MessageState) -> list[str]:
    lines = []
    if state.acked_by:
        lines.append(f":eyes: Acknowledged by {who(state.acked_by)}" + (f" at {_when(state.acked_at)}" if state.acked_at else ""))
    if state.silenced_until:
        lines.append(f":no_bell: Silenced until {_when(state.silenced_until)} by {who(state.silenced_by)}")
    return lines


def render(payload, run_url: str | None = None, resolved_at: str | None = None,
           state: MessageState | None = None) -> tuple[str, list[dict]]:
    """Message for a notification; with ``resolved_at``, the alert's first message edited to
    show it is over; with ``state``, edited to show what ops did (acknowledged, silenced,
    events flagged). Returns (fallback text, blocks)."""
    payload = _as_dict(payload)
    st = payload["state"]
    state = state or MessageState()
    icon = _STATE_ICON.get(st, "")
    name = _kind_name(payload)
    sev = payload.get("severity") or "info"
    suffix = f" · {sev}" + ("" if st == "firing" else f" · {st}")
    head = _shorten(name, HEADER_MAX - len(suffix)) + suffix
    text = f"{icon} [{sev.upper()}] {escape(payload['summary'])}"
    if resolved_at:
        icon = _STATE_ICON["resolved"]
        head = _shorten(f"RESOLVED · {name}", HEADER_MAX - len(f" · {sev}")) + f" · {sev}"
        text = f"{icon} ~{escape(payload['summary'])}~ — resolved {_when(resolved_at)}"
    facts = payload.get("facts") or {}
    fields = [f"*Rule*\n{escape(payload.get('rule'))} ({escape(payload.get('kind'))})"]
    for key in ("window", "events", "threshold", "quiet", "baseline", "baseline_events", "expected", "minimum", "days_since_previous"):
        if facts.get(key) is not None:
            fields.append(f"*{key.replace('_', ' ').capitalize()}*\n{escape(str(facts[key]))}")
    corro = payload.get("corroboration") or {}
    if corro.get("outlets"):
        reports = f"{corro['articles']} report(s) from " if corro.get("articles") else ""
        fields.append(f"*Corroboration*\n{reports}{corro['outlets']} outlet(s), {', '.join(corro.get('languages', []))}")
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": head[:HEADER_MAX], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": clip(text)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": clip(f, FIELD_MAX)} for f in fields[:10]]},
    ]
    kind = payload.get("kind") or ""
    open_alert = bool(payload.get("alert_id")) and not resolved_at and kind not in NO_BUTTONS
    interactive = open_alert and st == "firing"
    # An event told in a thread reply (an update, a repeat) can be flagged there too: the one
    # that tips a threshold often arrives after the first message.
    flaggable = open_alert and st in ("firing", "update", "repeat") and kind not in OPS_KINDS
    events = events_of(payload) if st != "resolved" else []
    shown = events[:MAX_EVENTS]
    fallback = [text]
    for ev in shown:
        flagged = state.not_events.get(ev["event_id"])
        block = {"type": "section", "block_id": f"{EVENT_BLOCK}{ev['event_id']}"[:255],
                 "text": {"type": "mrkdwn", "text": _event_text(ev, flagged)}}
        if flaggable and flagged is None:
            block["accessory"] = {"type": "button", "action_id": NOT_EVENT, "text": {"type": "plain_text", "text": "Not an event"},
                                  "value": f"{payload['alert_id']}|{ev['event_id']}"}
        blocks.append(block)
        line = f"• {_when(ev['at'])}: {escape(_shorten(ev['title'], LABEL_MAX))} ({', '.join(escape(o) for o in ev['outlets'][:4])}; {', '.join(ev['languages'])})"
        fallback.append(f"~{line}~ (not an event)" if flagged is not None else line)
    if len(events) > len(shown):
        more = f"… and {len(events) - len(shown)} more event(s) (the oldest): on the indicator board"
        if payload.get("alert_id"):
            more += (f", or `marsad query \"SELECT e.* FROM events_v e JOIN alert_events USING (event_id) "
                     f"WHERE alert_id = '{escape(payload['alert_id'])}' ORDER BY first_report_at DESC\"`")
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})
        fallback.append(more)
    lines = _state_lines(state)
    if st == "resolved" and payload.get("flagged_by"):  # resolved because analysts flagged its events
        lines.append(":wastebasket: Events flagged not an event by " + ", ".join(who(u) for u in payload["flagged_by"]))
    if lines:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": clip(line)} for line in lines]})
        fallback.extend(lines)
    if interactive:
        blocks.extend(_buttons(payload, state))
    context = f"rule `{escape(payload.get('rule'))}` · {escape(payload.get('rationale', ''))}"
    if run_url:
        context += f" · {link(run_url, 'Airflow run')}"
        fallback.append(link(run_url, "Airflow run"))
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": clip(context)}]})
    # At most 3 + MAX_EVENTS + 4 blocks, well under BLOCKS_MAX.
    return clip("\n".join(fallback), TEXT_MAX), blocks
