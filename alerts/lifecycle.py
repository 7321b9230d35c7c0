"""Silences and acknowledgements, set by ops with the CLI and recorded in the warehouse.

A *silence* (by indicator or by rule, time-boxed, with a reason) keeps the notifications
created inside it out of Slack: they stay in the outbox marked ``silenced``, so nothing is
lost and the history shows what was held back. An *acknowledgement* of a firing alert stops
its repeats; new evidence and the resolution are still posted.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import duckdb

from warehouse.db import transaction


class LifecycleError(ValueError):
    pass


def add_silence(
    con: duckdb.DuckDBPyConnection, matcher: str, value: str, duration_s: int, reason: str, by: str, now: datetime
) -> str:
    if matcher not in ("indicator", "rule"):
        raise LifecycleError("a silence matches an indicator or a rule")
    if not reason.strip():
        raise LifecycleError("a silence needs a reason")
    sid = hashlib.sha1(f"{matcher}\x1f{value}\x1f{now.isoformat()}".encode()).hexdigest()[:12]
    con.execute(
        "INSERT INTO silences VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [sid, matcher, value, now, now + timedelta(seconds=duration_s), reason.strip(), by, now],
    )
    return sid


def expire_silence(con: duckdb.DuckDBPyConnection, silence_id: str, now: datetime) -> None:
    n = con.execute(
        "UPDATE silences SET ends_at = ? WHERE silence_id = ? AND ends_at > ? RETURNING silence_id", [now, silence_id, now]
    ).fetchall()
    if not n:
        raise LifecycleError(f"no active silence {silence_id!r}")


def list_silences(con: duckdb.DuckDBPyConnection, now: datetime, active_only: bool = True) -> list[tuple]:
    where = "WHERE ends_at > ?" if active_only else "WHERE ? IS NOT NULL"
    return con.execute(
        f"SELECT silence_id, matcher, value, starts_at, ends_at, reason, created_by FROM silences {where} ORDER BY starts_at",
        [now],
    ).fetchall()


def ack(con: duckdb.DuckDBPyConnection, alert_id: str, by: str, note: str | None, now: datetime) -> None:
    with transaction(con):
        row = con.execute("SELECT state FROM alerts WHERE alert_id = ?", [alert_id]).fetchone()
        if row is None:
            raise LifecycleError(f"no alert {alert_id!r}")
        if row[0] != "firing":
            raise LifecycleError(f"alert {alert_id} is {row[0]}, not firing")
        con.execute("UPDATE alerts SET acked_at = ?, acked_by = ?, ack_note = ? WHERE alert_id = ?", [now, by, note, alert_id])


def list_alerts(con: duckdb.DuckDBPyConnection, firing_only: bool = False, limit: int = 50) -> list[tuple]:
    where = "WHERE state = 'firing'" if firing_only else ""
    return con.execute(
        f"""SELECT alert_id, rule_id, indicator, severity, state, started_at, resolved_at, acked_by, summary
            FROM alerts {where} ORDER BY started_at DESC LIMIT ?""",
        [limit],
    ).fetchall()


def check_target(matcher: str, value: str, indicators: set[str], rules: set[str], rule_prefixes: tuple[str, ...] = ()) -> None:
    """A silence must name an indicator or rule that exists: a typo would otherwise hold back
    nothing while ops believe the channel is quiet. ``rule_prefixes`` admit families of rules
    named at run time (``source-down:<feed>``)."""
    known = indicators if matcher == "indicator" else rules
    if value in known or (matcher == "rule" and value.startswith(rule_prefixes)):
        return
    import difflib

    close = difflib.get_close_matches(value, sorted(known), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known {matcher}s: {', '.join(sorted(known)[:20])}"
    raise LifecycleError(f"no {matcher} {value!r}{hint}")
