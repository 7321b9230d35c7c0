"""Slack messages for alert notifications: Block Kit plus a plain-text fallback.

Feed titles are untrusted: a headline must never ping ``@channel``, mention a user or
forge a link, so every piece of feed text goes through ``escape`` and links are built
only from http(s) URLs. Link labels lose bidi controls and zero-width characters, and a
text longer than Slack allows is cut by ``clip``, never inside a link or an escape.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

MAX_EVIDENCE = 5
SECTION_MAX = 3000  # Slack's limit on a section's (or a context element's) text
FIELD_MAX = 2000  # and on a section field's
_STATE_ICON = {"firing": ":rotating_light:", "update": ":heavy_plus_sign:", "repeat": ":repeat:", "resolved": ":white_check_mark:"}
# Bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) and zero-width
# characters (U+200B-U+200D, U+2060, U+FEFF): in a link label they can make it read as
# something else ("\u202egpj.exe" shows as "exe.jpg") or hide text, and an unterminated
# override also turns the rest of the line around. Stripped from labels only: in Arabic
# (or Persian) text ZWNJ and ZWJ carry meaning, and body text keeps them.
_LABEL_INVISIBLE = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF])
_ENTITY = re.compile(r"&(?:amp|lt|gt);")


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


def link(url: str | None, label: str) -> str:
    label = escape((label or "").translate(_LABEL_INVISIBLE)).replace("|", "¦")
    if not url:
        return label
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return label
    safe = url.strip().replace("<", "%3C").replace(">", "%3E").replace("|", "%7C").replace(" ", "%20")
    return f"<{safe}|{label}>"


def render(payload: dict, run_url: str | None = None, resolved_at: str | None = None) -> tuple[str, list[dict]]:
    """Message for a notification; with ``resolved_at``, the alert's first message edited to show it is over."""
    state = payload["state"]
    icon = _STATE_ICON.get(state, "")
    head = f"{payload['indicator']} · {payload['severity']}" + ("" if state == "firing" else f" · {state}")
    text = f"{icon} [{payload['severity'].upper()}] {escape(payload['summary'])}"
    if resolved_at:
        icon = _STATE_ICON["resolved"]
        head = f"RESOLVED · {payload['indicator']} · {payload['severity']}"
        text = f"{icon} ~{escape(payload['summary'])}~ — resolved {resolved_at[:16].replace('T', ' ')} UTC"
    facts = payload.get("facts") or {}
    fields = [f"*Rule*\n{escape(payload['rule'])} ({payload['kind']})"]
    for key in ("window", "events", "threshold", "quiet", "baseline", "baseline_events", "expected", "minimum", "days_since_previous"):
        if facts.get(key) is not None:
            fields.append(f"*{key.replace('_', ' ').capitalize()}*\n{escape(str(facts[key]))}")
    corro = payload.get("corroboration") or {}
    if corro.get("outlets"):
        reports = f"{corro['articles']} report(s) from " if corro.get("articles") else ""
        fields.append(f"*Corroboration*\n{reports}{corro['outlets']} outlet(s), {', '.join(corro.get('languages', []))}")
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": head[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": clip(text)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": clip(f, FIELD_MAX)} for f in fields[:10]]},
    ]
    ev = payload.get("evidence") or []
    if ev and state != "resolved":
        lines = []
        for e in ev[:MAX_EVIDENCE]:
            when = e["published_at"][:16].replace("T", " ")
            lines.append(f"• {link(e.get('url'), e['title'])} — {escape(e['source'])} ({e['lang']}, {when} UTC, reliability {e.get('reliability') or '?'})")
        if len(ev) > MAX_EVIDENCE:
            lines.append(f"… and {len(ev) - MAX_EVIDENCE} more report(s)")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": clip("\n".join(lines))}})
    context = f"rule `{escape(payload['rule'])}` · {escape(payload.get('rationale', ''))}"
    if run_url:
        context += f" · {link(run_url, 'Airflow run')}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": clip(context)}]})
    return text, blocks
