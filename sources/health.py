"""Per-source health: is each feed answering, and publishing at its usual rate?

The numbers come from the warehouse's ``source_health_at(t)`` table macro (migration
0002). A source is

* ``down`` when every poll has failed for at least ``health.down_after`` (feeds.yaml);
* ``silent`` when it answers but has brought nothing new for ``silent_factor`` times its
  usual gap between items (over the last 30 days), and at least ``silent_min``. A source
  needs ``min_items`` items in 30 days before its usual rate is trusted.

``alerts.ops`` turns these verdicts into ops alerts through the indicator alert path.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sources.registry import HealthSettings

_COLUMNS = (
    "source_id", "name", "lang", "url", "enabled", "interval_s", "last_attempt_at", "last_success_at", "last_status",
    "last_http_status", "last_error", "consecutive_failures", "next_due_at", "failing_since", "items_24h", "items_7d",
    "items_30d", "first_item_30d", "last_item_at", "median_lag_s",
)


@dataclass
class SourceHealth:
    source_id: str
    name: str
    lang: str
    url: str
    enabled: bool
    interval_s: int
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    last_status: str | None
    last_http_status: int | None
    last_error: str | None
    consecutive_failures: int
    next_due_at: datetime | None
    failing_since: datetime | None
    items_24h: int
    items_7d: int
    items_30d: int
    first_item_30d: datetime | None
    last_item_at: datetime | None
    median_lag_s: float | None
    problem: str | None = None  # None | 'down' | 'silent'
    detail: str = ""

    @property
    def usual_gap(self) -> timedelta | None:
        if self.items_30d < 2 or not (self.first_item_30d and self.last_item_at):
            return None
        return (self.last_item_at - self.first_item_30d) / (self.items_30d - 1)


def human(seconds: float | None) -> str:
    """A short duration: 45s, 12m, 5h, 3d."""
    if seconds is None:
        return "-"
    s = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.0f}{unit}" if s / size >= 10 or unit == "m" else f"{s / size:.1f}{unit}"
    return f"{s:.0f}s"


def judge(h: SourceHealth, cfg: HealthSettings, now: datetime) -> SourceHealth:
    """Set ``problem`` and ``detail`` on one source's health row."""
    h.problem, h.detail = None, ""
    if not h.enabled:
        return h
    if h.failing_since is not None and h.consecutive_failures > 0:
        failing_for = (now - h.failing_since).total_seconds()
        if failing_for >= cfg.down_after:
            h.problem = "down"
            h.detail = (
                f"every poll has failed for {human(failing_for)} ({h.consecutive_failures} in a row); "
                f"last error: {(h.last_error or '?')[:200]}"
            )
        return h
    gap = h.usual_gap
    if gap is None or h.items_30d < cfg.min_items or h.last_item_at is None:
        return h
    quiet = (now - h.last_item_at).total_seconds()
    limit = max(cfg.silent_min, cfg.silent_factor * gap.total_seconds())
    if quiet > limit:
        h.problem = "silent"
        h.detail = f"nothing new for {human(quiet)}; it usually brings an item every {human(gap.total_seconds())}"
    return h


def source_health(con, now: datetime, cfg: HealthSettings | None = None) -> list[SourceHealth]:
    """Every registered (non-replay) source's health at ``now``, judged by ``cfg``."""
    cfg = cfg or HealthSettings()
    rows = con.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM source_health_at(?::TIMESTAMPTZ) ORDER BY source_id", [now]
    ).fetchall()
    return [judge(SourceHealth(*r), cfg, now) for r in rows]


# One vocabulary for a source's state, used by ``marsad sources status`` and the board.
# ``problem`` (down, silent) is what ops alerts fire on; ``state`` also says what is not yet
# an alert: a feed failing for less than ``down_after`` (or one that has never answered once)
# is "failing", never "ok".
STATES = ("failing", "silent", "stale", "never polled", "ok", "disabled")


def assess(h: SourceHealth, now: datetime) -> tuple[str, str]:
    """(state, detail) of one judged source: one of ``STATES`` and a sentence for people."""
    detail = h.detail
    if not h.enabled:
        return "disabled", detail
    if h.last_attempt_at is None:
        return "never polled", detail or "not polled yet"
    if h.consecutive_failures > 0:
        if not detail:
            since = h.failing_since or h.last_attempt_at
            n = h.consecutive_failures
            polls = f"{n} failed poll{'s' if n != 1 else ''} in a row"
            if h.last_success_at is None:
                detail = f"has never succeeded ({polls} since {human((now - since).total_seconds())} ago)"
            else:
                detail = f"failing for {human((now - since).total_seconds())} ({polls})"
            if h.last_error:
                detail += f"; last error: {h.last_error[:200]}"
        return "failing", detail
    if h.problem == "silent":
        return "silent", detail
    if h.last_success_at is not None and now - h.last_success_at > timedelta(seconds=3 * h.interval_s):
        return "stale", (f"no successful poll for {human((now - h.last_success_at).total_seconds())} "
                         f"(interval {human(h.interval_s)}): is the pipeline running?")
    return "ok", detail


_MARKS = {"failing": "!!", "silent": "!!", "stale": "! ", "never polled": "..", "ok": "ok", "disabled": "--"}


def format_table(rows: list[SourceHealth], now: datetime, removed: int = 0) -> str:
    """The ``marsad sources status`` table. Failing and silent sources are marked ``!!`` and
    explained (a feed that has never answered is failing, not ok); the last line counts every state."""
    head = ("", "source", "state", "last attempt", "last success", "fails", "24h", "7d", "lag", "problem")
    lines = [head]
    counts: dict[str, int] = {}
    for h in rows:
        state, detail = assess(h, now)
        counts[state] = counts.get(state, 0) + 1
        ago = lambda t: human((now - t).total_seconds()) + " ago" if t else "never"  # noqa: E731
        problem = f"{h.problem.upper()}: {detail}" if h.problem else detail
        lines.append((_MARKS[state], h.source_id, state, ago(h.last_attempt_at), ago(h.last_success_at), str(h.consecutive_failures),
                      str(h.items_24h), str(h.items_7d), human(h.median_lag_s), problem))
    widths = [max(len(r[i]) for r in lines) for i in range(len(head) - 1)]
    out = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + ("  " + r[-1] if r[-1] else "") for r in lines]
    bad = counts.get("failing", 0) + counts.get("silent", 0)
    tally = ", ".join(f"{counts[s]} {s}" for s in STATES if counts.get(s))
    summary = f"{len(rows)} source(s): {tally or 'none'}; {bad} unhealthy" + (" (marked !!)" if bad else "")
    if removed:
        summary += f"; {removed} removed from the feeds file not shown (their articles are kept)"
    out.append(summary)
    return "\n".join(line.rstrip() for line in out)
