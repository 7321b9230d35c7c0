"""The daily digest: the last 24 hours per indicator, with a chart, and the unhealthy sources.

``build`` reads the warehouse and returns the digest as a ``Notice`` (the one alert
payload); ``queue`` hands it to the alert lifecycle (``alerts.lifecycle.apply``) as a
one-shot notice, queued once per day in the outbox like any notification (so it is
delivered exactly once, and a silence of ``digest`` holds it back), and the Slack sink
renders it with ``render_digest`` and uploads ``chart_png`` into its thread with the files API.
"""
from __future__ import annotations

import io
from datetime import datetime, timedelta

import duckdb

from alerts.lifecycle import Notice, Observation, apply
from alerts.render import clip, escape, link
from warehouse.db import transaction

UNHEALTHY_AFTER = timedelta(hours=6)


def build(con: duckdb.DuckDBPyConnection, now: datetime, indicators: list[str], names: dict[str, str] | None = None) -> Notice:
    since = now - timedelta(hours=24)
    rows = con.execute(
        """SELECT e.indicator, count(DISTINCT e.event_id), count(DISTINCT a.article_id), count(DISTINCT a.source_id)
           FROM counted_events e JOIN event_articles ea USING (event_id) JOIN articles a USING (article_id)
           WHERE e.first_report_at > ? AND e.first_report_at <= ?
           GROUP BY e.indicator""",
        [since, now],
    ).fetchall()
    counts = {ind: {"events": 0, "articles": 0, "outlets": 0} for ind in indicators}
    for ind, ev, arts, outs in rows:
        counts[ind] = {"events": ev, "articles": arts, "outlets": outs}
    top = con.execute(
        """SELECT e.indicator, e.title, a.url, coalesce(s.name, a.source_id), e.first_report_at
           FROM counted_events e JOIN event_articles ea USING (event_id) JOIN articles a USING (article_id)
           LEFT JOIN sources s USING (source_id)
           WHERE e.first_report_at > ? AND e.first_report_at <= ? AND ea.how = 'first'
           ORDER BY e.first_report_at DESC LIMIT 8""",
        [since, now],
    ).fetchall()
    unhealthy = con.execute(
        """SELECT s.source_id, s.name, st.last_status, st.consecutive_failures, st.last_success_at, st.last_error
           FROM sources s JOIN source_state st USING (source_id)
           WHERE s.enabled AND (st.consecutive_failures > 0 AND (st.last_success_at IS NULL OR st.last_success_at < ?))
           ORDER BY st.consecutive_failures DESC, s.source_id""",
        [now - UNHEALTHY_AFTER],
    ).fetchall()
    return Notice(
        indicator="digest", indicator_name="Marsad daily digest", rule="daily-digest", kind="digest", state="digest",
        severity="info", at=now.isoformat(),
        summary=f"Marsad digest: {sum(c['events'] for c in counts.values())} events in the last 24 hours",
        detail={
            "since": since.isoformat(),
            "counts": counts,
            "names": {ind: (names or {}).get(ind, ind) for ind in counts},
            "top": [{"indicator": i, "title": t, "url": u, "source": s, "at": at.isoformat()} for i, t, u, s, at in top],
            "unhealthy": [
                {"source_id": sid, "name": name, "status": st, "failures": f, "last_success": ls.isoformat() if ls else None,
                 "error": (err or "")[:200]}
                for sid, name, st, f, ls, err in unhealthy
            ],
        },
    )


def queue(con: duckdb.DuckDBPyConnection, now: datetime, indicators: list[str], channel: str,
          names: dict[str, str] | None = None) -> dict:
    """Queue today's digest, once per day. Returns ``{"status", "summary", "payload"}``:

    * ``queued``: queued now (``payload`` is the notice);
    * ``already``: today's digest was queued before (a re-run queues nothing; the summary says
      when, and whether it was sent);
    * ``not watching``: no feed has been polled successfully yet, so a digest would report
      "0 events" about a day Marsad did not watch (the first ``make run`` used to send one).

    When Marsad started watching less than 24 hours ago, the digest says since when."""
    from alerts.evaluate import history_start

    key = f"digest:{now.date().isoformat()}"
    prior = con.execute(
        "SELECT created_at, status, sent_at FROM notifications WHERE alert_id = ? ORDER BY seq LIMIT 1", [key]).fetchone()
    if prior is not None:
        created, status, sent = prior
        done = f"sent at {sent:%H:%M} UTC" if sent is not None else f"not sent yet ({status})"
        return {"status": "already", "payload": None,
                "summary": f"today's digest ({now.date().isoformat()}) was already queued at {created:%H:%M} UTC and {done}; nothing new"}
    watched = history_start(con)
    if watched is None or watched > now:
        return {"status": "not watching", "payload": None,
                "summary": "no digest: Marsad has not polled any feed successfully yet, so there is no day to sum up"}
    notice = build(con, now, indicators, names)
    if watched > now - timedelta(hours=24):
        notice.summary += f" (Marsad has watched only since {watched:%Y-%m-%d %H:%M} UTC)"
    with transaction(con):
        apply(con, [Observation(rule_id=key, indicator="digest", kind="digest", severity="info", channel=channel, active=True,
                                summary=notice.summary, oneshot=True)], now, lambda moves: {key: notice})
    return {"status": "queued", "summary": notice.summary, "payload": notice.to_payload()}


def render_digest(d: dict) -> tuple[str, list[dict]]:
    text = escape(d["summary"])
    names = d.get("names") or {}
    lines = [f"*{escape(names.get(ind, ind))}* {c['events']} event(s), {c['articles']} report(s), {c['outlets']} outlet(s)" for ind, c in sorted(d["counts"].items()) if c["events"]]
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Marsad daily digest", "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": clip(text + "\n" + ("\n".join(lines) or "_No indicator events in the last 24 hours._"))}},
    ]
    if d["top"]:
        top = "\n".join(f"• _{escape(names.get(e['indicator'], e['indicator']))}_ {link(e['url'], e['title'])} — {escape(e['source'])}" for e in d["top"])
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": clip("*Latest events*\n" + top)}})
    if d["unhealthy"]:
        bad = "\n".join(f"• {escape(s['name'])} (`{s['source_id']}`): {s['failures']} failure(s), {escape(s['error'])}" for s in d["unhealthy"])
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": clip("*:warning: Unhealthy sources*\n" + bad)}})
    else:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "All sources healthy."}]})
    return text, blocks


def chart_png(d: dict) -> bytes:
    """Bar chart of events per indicator over the digest's 24 hours (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names = sorted(d["counts"])
    values = [d["counts"][n]["events"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    try:
        ax.barh(names, values, color="#b03a2e")
        ax.set_xlabel("events (last 24 h)")
        ax.set_title(f"Marsad — events per indicator, to {d['at'][:16].replace('T', ' ')} UTC")
        ax.xaxis.get_major_locator().set_params(integer=True)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)
