"""Slack messages for alert notifications: Block Kit plus a plain-text fallback.

Feed titles are untrusted: a headline must never ping ``@channel``, mention a user or
forge a link, so every piece of feed text goes through ``escape`` and links are built
only from http(s) URLs.
"""
from __future__ import annotations

from urllib.parse import urlsplit

MAX_EVIDENCE = 5
_STATE_ICON = {"firing": ":rotating_light:", "update": ":heavy_plus_sign:", "repeat": ":repeat:", "resolved": ":white_check_mark:"}


def escape(text: str | None) -> str:
    """Slack's three control characters; what is left cannot mention anyone or make a link."""
    return (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def link(url: str | None, label: str) -> str:
    label = escape(label).replace("|", "¦")
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
        {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f[:2000]} for f in fields[:10]]},
    ]
    ev = payload.get("evidence") or []
    if ev and state != "resolved":
        lines = []
        for e in ev[:MAX_EVIDENCE]:
            when = e["published_at"][:16].replace("T", " ")
            lines.append(f"• {link(e.get('url'), e['title'])} — {escape(e['source'])} ({e['lang']}, {when} UTC, reliability {e.get('reliability') or '?'})")
        if len(ev) > MAX_EVIDENCE:
            lines.append(f"… and {len(ev) - MAX_EVIDENCE} more report(s)")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:3000]}})
    context = f"rule `{escape(payload['rule'])}` · {escape(payload.get('rationale', ''))}"
    if run_url:
        context += f" · {link(run_url, 'Airflow run')}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context[:3000]}]})
    return text, blocks
