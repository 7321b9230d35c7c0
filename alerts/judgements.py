"""Key judgements as first-class objects: is an assessment holding, under pressure or wrong?

An analyst writes each assessment as a file in ``alerts/assessments/`` (``paths.assessments``
in marsad/settings.yaml): its title, source, cut-off date, the Slack channel that hears of it,
and its key judgements. Each judgement has its text, a likelihood from the ICD 203 yardstick,
a window that starts at the cut-off, and its indicators:

* ``contradicted_by``: indicators any event of which (after the cut-off, inside the window)
  contradicts the judgement ("US unlikely to strike IRGC units" and one ``us_strike_irgc``);
* ``supported_by``: indicators whose events bear it out (they are its evidence, and with
  ``requires_support: true`` the judgement holds at expiry only if one of them occurred:
  a judgement that something *will* happen);
* ``conditions``: rules in the rule language of ``alerts/rules.yaml`` (tripwire, threshold,
  resumption, spike, flatline with their window, count, quiet ...), each with an ``effect``:
  ``pressure`` (the judgement is under pressure while it holds: "no ``nuclear_talks`` event
  for 30 days") or ``contradict`` (it is contradicted: "militia attacks resume").

Every evaluation (the pipeline's ``evaluate`` step) computes each judgement's status with the
SAME evaluator as the rules (``alerts.evaluate.conditions``: the indicators become rules,
``contradicted_by`` and ``supported_by`` tripwires whose window runs from the cut-off):

* ``holding``; ``under_pressure`` (a pressure condition holds); ``contradicted`` (a
  contradicting event or condition; this stays: the judgement has failed, and its evidence
  is the events that did it, with their frames);
* ``expired`` once the window is over, with the outcome: ``failed`` (contradicted, or a
  required support never came), ``held``, or ``unobserved`` when Marsad did not watch the
  whole window (it started polling after the cut-off) and saw nothing that contradicts:
  an outcome Marsad cannot vouch for is kept out of the track record.

A status change is recorded (table ``judgement_history``, migration 0015) and notifies the
assessment's channel through the one alert lifecycle (``alerts.lifecycle.apply``, called in
``_notify``): an alert per episode away from ``holding`` (it fires when the judgement comes
under pressure or is contradicted, updates in its thread at the next change, resolves when
it holds again or expires), so silences, acknowledgements, delivery and threading are those
of every alert. An expiry with no alert open (the judgement held throughout) is a one-shot
notice of its own.

The track record (``report``): per likelihood band, the judgements that expired with an
outcome, how many held, and the Brier score of the stated likelihoods. The likelihood is the
probability of what the judgement states ("unlikely": 20-45 % that it happens), scored at the
band's midpoint; a judgement *holds* when things went the way it leaned (for "roughly even
chance": when what it states came about). Brier = mean((p - happened)^2), 0 is perfect, 0.25
is what always saying "even chance" scores.
"""
from __future__ import annotations

import calendar
import hashlib
import html
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import duckdb
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from alerts.evaluate import Condition, conditions, history_start
from alerts.lifecycle import Notice, Observation, Transition, apply
from alerts.rules import ALERTS_DIR, Kind, Rule
from sources.configfile import ConfigError, Document, format_duration, load_yaml, parse_duration, slack_channel, validate
from warehouse.db import transaction
from warehouse.load import bulk_insert

DEFAULT_ASSESSMENTS = ALERTS_DIR / "assessments"
INDICATOR = "judgement"  # the alerts' ``indicator``: `marsad silence add --indicator judgement` holds them all

# ICD 203 (US Intelligence Community Directive 203, "Analytic Standards"): its seven terms,
# each with the directive's paired alternative, and the probability range. The Brier score
# uses the midpoint. "highly likely"/"highly unlikely" (the UK yardstick's words, and common
# usage) are read as ICD 203's "very likely"/"very unlikely".
YARDSTICK: dict[str, tuple[float, float]] = {
    "almost no chance": (0.01, 0.05),
    "very unlikely": (0.05, 0.20),
    "unlikely": (0.20, 0.45),
    "roughly even chance": (0.45, 0.55),
    "likely": (0.55, 0.80),
    "very likely": (0.80, 0.95),
    "almost certain": (0.95, 0.99),
}
SYNONYMS = {
    "remote": "almost no chance",
    "highly improbable": "very unlikely",
    "highly unlikely": "very unlikely",
    "improbable": "unlikely",
    "roughly even odds": "roughly even chance",
    "even chance": "roughly even chance",
    "probable": "likely",
    "highly probable": "very likely",
    "highly likely": "very likely",
    "nearly certain": "almost certain",
}
STATUSES = ("holding", "under_pressure", "contradicted", "expired")
OUTCOMES = ("held", "failed", "unobserved")
EVIDENCE_MAX = 50  # events kept as the evidence of one status
_SEVERITY = {"under_pressure": "medium", "contradicted": "high", "expired": "info", "holding": "info"}


def midpoint(term: str) -> float:
    lo, hi = YARDSTICK[term]
    return round((lo + hi) / 2, 4)


def _likelihood(value: Any) -> str:
    text = " ".join(str(value).lower().replace("-", " ").split()) if isinstance(value, str) else None
    if text in YARDSTICK:
        return text
    if text in SYNONYMS:
        return SYNONYMS[text]
    raise ValueError(f"{value!r} is not on the ICD 203 yardstick: write one of {', '.join(YARDSTICK)}")


_MONTHS = re.compile(r"^\s*(\d+)\s*(mo|mos|month|months)\s*$", re.I)


@dataclass(frozen=True)
class Window:
    """How long a judgement runs from its cut-off: calendar months, or a duration."""

    months: int = 0
    seconds: int = 0

    def end(self, start: datetime) -> datetime:
        if not self.months:
            return start + timedelta(seconds=self.seconds)
        m = start.month - 1 + self.months
        year, month = start.year + m // 12, m % 12 + 1
        return start.replace(year=year, month=month, day=min(start.day, calendar.monthrange(year, month)[1]))

    def __str__(self) -> str:
        return f"{self.months} month(s)" if self.months else format_duration(self.seconds)


def _window(value: Any) -> Window:
    if isinstance(value, Window):
        return value
    m = _MONTHS.match(value) if isinstance(value, str) else None
    if m:
        if int(m.group(1)) <= 0:
            raise ValueError("a window must be positive")
        return Window(months=int(m.group(1)))
    try:
        return Window(seconds=parse_duration(value))
    except ValueError:
        raise ValueError(f"{value!r} is not a window: write 3mo (calendar months), 90d, 12w or 72h") from None


def _cutoff(value: Any) -> datetime:
    """A date means the end of that day (UTC): what was known up to and including it."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime.combine(value + timedelta(days=1), time(0), tzinfo=timezone.utc)
    if isinstance(value, str):
        try:
            return _cutoff(datetime.fromisoformat(value.strip().replace("Z", "+00:00")) if "T" in value else date.fromisoformat(value.strip()))
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not a date: write 2023-05-15 (or an ISO time 2023-05-15T12:00:00Z)")


Likelihood = Annotated[str, BeforeValidator(_likelihood)]
WindowField = Annotated[Window, BeforeValidator(_window)]
Cutoff = Annotated[datetime, BeforeValidator(_cutoff)]
Channel = Annotated[str, BeforeValidator(slack_channel)]
Duration = Annotated[int, BeforeValidator(parse_duration)]
Id = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]


class JudgementCondition(BaseModel):
    """A rule of the rule language (``alerts/rules.py``) and what it does to the judgement."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    effect: Literal["pressure", "contradict"]
    indicator: str
    kind: Kind
    window: Duration | None = None
    count: int | None = Field(default=None, ge=1)
    quiet: Duration | None = None
    baseline: Duration | None = None
    ratio: float | None = Field(default=None, gt=1.0)

    @model_validator(mode="after")
    def _as_rule(self) -> "JudgementCondition":
        self.rule("check")  # the rule language's own check of the fields each kind needs
        return self

    def rule(self, rule_id: str) -> Rule:
        fields = self.model_dump(exclude={"effect"}, exclude_none=True)
        return Rule(id=rule_id, rationale=f"judgement condition ({self.effect})", **fields)

    def describe(self) -> str:
        parts = [f"{k} {format_duration(v) if k in ('window', 'quiet', 'baseline') else v}"
                 for k, v in self.model_dump(exclude={"effect", "indicator", "kind"}, exclude_none=True).items()]
        return f"{self.kind} {self.indicator}" + (f" ({', '.join(parts)})" if parts else "")


class Judgement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Id
    text: str = Field(min_length=10)
    likelihood: Likelihood
    window: WindowField
    contradicted_by: list[str] = Field(default_factory=list)
    supported_by: list[str] = Field(default_factory=list)
    requires_support: bool = False
    conditions: list[JudgementCondition] = Field(default_factory=list)

    @model_validator(mode="after")
    def _watchable(self) -> "Judgement":
        if not (self.contradicted_by or self.supported_by or self.conditions):
            raise ValueError("a judgement needs indicators to watch: contradicted_by, supported_by or conditions")
        if self.requires_support and not self.supported_by:
            raise ValueError("requires_support needs supported_by")
        return self

    @property
    def probability(self) -> float:
        return midpoint(self.likelihood)


class Assessment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Id
    title: str = Field(min_length=3)
    source: str = Field(min_length=2)
    cutoff: Cutoff
    channel: Channel
    judgements: list[Judgement] = Field(min_length=1)

    @field_validator("judgements")
    @classmethod
    def _unique(cls, v: list[Judgement]) -> list[Judgement]:
        ids = [j.id for j in v]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate judgement id(s): {', '.join(dup)}")
        return v

    def key(self, j: Judgement) -> str:
        return f"{self.id}/{j.id}"

    @property
    def cutoff_day(self) -> str:
        """The cut-off as the analysts wrote it: the last day of what they knew."""
        return f"{self.cutoff - timedelta(microseconds=1):%Y-%m-%d}"


def assessments_dir() -> Path:
    """paths.assessments as marsad.settings resolves it."""
    from marsad.settings import current

    return current("paths.assessments").path("paths.assessments")


def load_assessment(path: str | Path, indicator_ids: list[str] | None = None) -> Assessment:
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.error((), "expected a mapping: id, title, source, cutoff, channel, judgements")])
    a = validate(doc, Assessment)
    if indicator_ids is not None:
        problems = _unknown_indicators(doc, a, set(indicator_ids))
        if problems:
            raise ConfigError(problems)
    return a


def _unknown_indicators(doc: Document, a: Assessment, known: set[str]) -> list[str]:
    out = []
    hint = f"(known: {', '.join(sorted(known))})"
    for i, j in enumerate(a.judgements):
        for field in ("contradicted_by", "supported_by"):
            for k, ind in enumerate(getattr(j, field)):
                if ind not in known:
                    out.append(doc.error(("judgements", i, field, k), f"unknown indicator {ind!r} {hint}"))
        for k, c in enumerate(j.conditions):
            if c.indicator not in known:
                out.append(doc.error(("judgements", i, "conditions", k, "indicator"), f"unknown indicator {c.indicator!r} {hint}"))
    return out


def load_assessments(directory: str | Path | None = None, indicator_ids: list[str] | None = None) -> list[Assessment]:
    """Every ``*.yaml`` of the directory (none: an empty list). ``ConfigError`` lists the
    problems of all files, each as ``file:line: field: message``; assessment ids are unique."""
    directory = Path(directory or assessments_dir())
    if not directory.is_dir():
        return []
    out, problems, seen = [], [], {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            a = load_assessment(path, indicator_ids)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if a.id in seen:
            problems.append(load_yaml(path).error(("id",), f"duplicate assessment id {a.id!r} (also in {seen[a.id]})"))
            continue
        seen[a.id] = path.name
        out.append(a)
    if problems:
        raise ConfigError(problems)
    return out


# ----------------------------------------------------------------------------- evaluation


@dataclass
class Verdict:
    key: str
    status: str
    outcome: str | None
    event_ids: list[str]
    facts: dict


def _rule_id(key: str, tag: str) -> str:
    return "j" + hashlib.sha1(key.encode()).hexdigest()[:12] + "-" + tag


def _rules_for(a: Assessment, j: Judgement, t: datetime) -> list[tuple[str, str, Rule]]:
    """(role, description, rule) for each thing the judgement watches, as of ``t``: its
    contradicting and supporting indicators as tripwires over the window so far, and its
    conditions as written."""
    key = a.key(j)
    out = []
    since = int((t - a.cutoff).total_seconds())
    if since > 0:
        for k, ind in enumerate(j.contradicted_by):
            out.append(("contradict", f"any {ind} event", Rule(id=_rule_id(key, f"c{k}"), indicator=ind, kind="tripwire",
                                                               window=since, rationale="judgement: contradicting indicator")))
        for k, ind in enumerate(j.supported_by):
            out.append(("support", f"any {ind} event", Rule(id=_rule_id(key, f"s{k}"), indicator=ind, kind="tripwire",
                                                          window=since, rationale="judgement: supporting indicator")))
    for k, c in enumerate(j.conditions):
        out.append((c.effect, c.describe(), c.rule(_rule_id(key, f"x{k}"))))
    return out


def _watch(con, specs: list[tuple[str, str, Rule]], t: datetime, watched: datetime | None) -> tuple[dict[str, Condition], dict[str, list[str]]]:
    """The conditions of ``specs`` at ``t`` (alerts.evaluate.conditions, the rules' evaluator)
    and, per rule, the events behind each (its ``_eval_cond`` rows)."""
    if not specs:
        return {}, {}
    # Judgements often watch the same thing (the talks' flatline in several assessments): each
    # distinct rule is evaluated once.
    unique: dict[tuple, Rule] = {}
    alias: dict[str, str] = {}
    for _, _, r in specs:
        alias[r.id] = unique.setdefault((r.indicator, r.kind, r.window_s, r.count, r.quiet, r.baseline, r.ratio), r).id
    conds = conditions(con, list(unique.values()), t, watched)
    events: dict[str, list[str]] = {}
    # The newest EVIDENCE_MAX events behind each rule are the evidence (a count says the rest).
    for rule_id, event_id in con.execute(
        f"""SELECT rule_id, event_id FROM _eval_cond
            QUALIFY row_number() OVER (PARTITION BY rule_id ORDER BY t DESC, event_id DESC) <= {EVIDENCE_MAX}
            ORDER BY t, event_id""").fetchall():
        events.setdefault(rule_id, []).append(event_id)
    for tmp in ("_eval_rules", "_eval_lookback", "_eval_cond"):
        con.execute(f"DROP TABLE IF EXISTS temp.{tmp}")
    return {k: conds[v] for k, v in alias.items()}, {k: events.get(v, []) for k, v in alias.items()}


def _judge(a: Assessment, j: Judgement, previous: dict | None, t: datetime, expired: bool, watched: datetime | None,
           conds: dict[str, Condition], events: dict[str, list[str]], specs: list[tuple[str, str, Rule]],
           withdrawn: dict[str, str] | None = None) -> Verdict:
    """``withdrawn``: event id -> who flagged it "not an event", for the events that no longer count."""
    why: dict[str, list] = {"contradict": [], "pressure": [], "support": []}
    ev: dict[str, dict[str, None]] = {"contradict": {}, "pressure": {}, "support": {}}  # ordered sets of event ids
    for role, desc, rule in specs:
        c = conds.get(rule.id)
        if c is None or not c.active:
            continue
        why[role].append({"what": desc, **{k: v for k, v in c.facts.items() if v is not None}})
        ev[role].update(dict.fromkeys(events.get(rule.id, [])))
    was = (previous or {}).get("status")
    facts = {"supporting_events": sum(conds[r.id].facts.get("events", 0) for role, _, r in specs if role == "support" and r.id in conds)}
    before = list((previous or {}).get("event_ids") or [])
    withdrawn = withdrawn or {}
    # A judgement once contradicted stays so: what contradicted it keeps its evidence. Unless
    # analysts said every event of that evidence was not an event: then nothing contradicted it.
    sticky = was == "contradicted" and not why["contradict"] and not (before and all(e in withdrawn for e in before))
    if was == "contradicted" and not why["contradict"] and not sticky:
        facts["withdrawn"] = {"events": before, "flagged_by": sorted({withdrawn[e] for e in before}),
                              "contradicted_by": (previous or {}).get("facts", {}).get("contradicted_by")}
    if sticky:
        status, event_ids = "contradicted", [e for e in before if e not in withdrawn]
        facts["contradicted_by"] = (previous or {}).get("facts", {}).get("contradicted_by")
        facts["contradicted_at"] = (previous or {}).get("facts", {}).get("contradicted_at")
    elif why["contradict"]:
        status, event_ids = "contradicted", list(ev["contradict"])
        facts["contradicted_by"] = why["contradict"]
        facts["contradicted_at"] = t.isoformat() if was != "contradicted" else (previous or {}).get("facts", {}).get("contradicted_at")
    elif why["pressure"]:
        status, event_ids = "under_pressure", list(ev["pressure"])
        facts["pressure"] = why["pressure"]
    else:
        status, event_ids = "holding", list(ev["support"])[-5:]
    outcome = None
    if expired:
        facts["was"] = status
        if status == "contradicted":
            outcome = "failed"
        elif watched is None or watched > a.cutoff:
            outcome = "unobserved"  # Marsad did not watch the whole window: it cannot say it held
            facts["watched_since"] = watched.isoformat() if watched else None
        elif j.requires_support and not ev["support"]:
            outcome, event_ids = "failed", []
            facts["missing_support"] = f"no {' or '.join(j.supported_by)} event in the window"
        else:
            outcome = "held"
        status = "expired"
    return Verdict(a.key(j), status, outcome, event_ids, facts)


HISTORY_COLUMNS = {
    "assessment_id": "VARCHAR", "judgement_id": "VARCHAR", "changed_at": "TIMESTAMPTZ", "status": "VARCHAR",
    "previous": "VARCHAR", "outcome": "VARCHAR", "likelihood": "VARCHAR", "probability": "DOUBLE",
    "window_end": "TIMESTAMPTZ", "event_ids": "VARCHAR[]", "facts": "JSON", "alert_id": "VARCHAR",
}


def latest(con) -> dict[str, dict]:
    """The last recorded status of every judgement, by ``assessment/judgement`` key."""
    rows = con.execute(
        """SELECT assessment_id || '/' || judgement_id, status, outcome, changed_at, event_ids, facts, alert_id,
                  likelihood, probability, window_end
           FROM judgement_status_v"""
    ).fetchall()
    keys = ("status", "outcome", "changed_at", "event_ids", "facts", "alert_id", "likelihood", "probability", "window_end")
    out = {}
    for key, *r in rows:
        d = dict(zip(keys, r))
        d["facts"] = json.loads(d["facts"]) if isinstance(d["facts"], str) else (d["facts"] or {})
        out[key] = d
    return out


def evaluate_judgements(con: duckdb.DuckDBPyConnection, assessments: list[Assessment], now: datetime) -> list[dict]:
    """Every judgement's status at ``now``; changes are recorded and queued for the assessment's
    channel. Returns the notifications queued. One transaction; a repeat at the same time adds nothing."""
    if not assessments:
        return []
    with transaction(con):
        watched = history_start(con)
        prev = latest(con)
        # Judgements still open, grouped by the time they are judged at: now, or the end of
        # their window for those that expired since the last evaluation (one evaluator call each).
        groups: dict[datetime, list[tuple[Assessment, Judgement, bool]]] = {}
        for a in assessments:
            if a.cutoff > now:
                continue  # its window has not begun
            for j in a.judgements:
                if (prev.get(a.key(j)) or {}).get("status") == "expired":
                    continue
                end = j.window.end(a.cutoff)
                t = min(now, end)
                groups.setdefault(t, []).append((a, j, now >= end))
        withdrawn = _withdrawn(con, [e for v in prev.values() if v.get("status") == "contradicted" for e in v.get("event_ids") or []])
        changes = []
        for t, items in sorted(groups.items()):
            specs = {a.key(j): _rules_for(a, j, t) for a, j, _ in items}
            conds, events = _watch(con, [s for ss in specs.values() for s in ss], t, watched)
            for a, j, expired in items:
                v = _judge(a, j, prev.get(a.key(j)), t, expired, watched, conds, events, specs[a.key(j)], withdrawn)
                old = prev.get(v.key)
                if old and old["status"] == v.status and old["outcome"] == v.outcome:
                    continue
                if old is None and (v.status == "holding" or v.outcome == "unobserved"):
                    # The first look finds nothing to tell: holding, or a window that ended before
                    # Marsad watched (an old assessment added to the directory). Recorded only.
                    _record(con, a, j, v, None, now, None)
                    continue
                changes.append((a, j, v, old))
        return _notify(con, changes, now)


def _withdrawn(con, event_ids: list[str]) -> dict[str, str]:
    """Of these events, those that no longer count (``counted_events``: flagged "not an event",
    or gone), with who flagged them."""
    if not event_ids:
        return {}
    return dict(con.execute(
        """SELECT u.event_id, coalesce(f.flagged_by, 'nobody (the event is gone)')
           FROM (SELECT DISTINCT unnest(?::VARCHAR[]) AS event_id) u
           LEFT JOIN event_feedback f ON f.event_id = u.event_id AND f.undone_at IS NULL
           WHERE u.event_id NOT IN (SELECT event_id FROM counted_events)""", [event_ids]).fetchall())


def _record(con, a: Assessment, j: Judgement, v: Verdict, old: dict | None, now: datetime, alert_id: str | None) -> None:
    bulk_insert(con, "judgement_history", [dict(
        assessment_id=a.id, judgement_id=j.id, changed_at=now, status=v.status, previous=(old or {}).get("status"),
        outcome=v.outcome, likelihood=j.likelihood, probability=j.probability, window_end=j.window.end(a.cutoff),
        event_ids=v.event_ids, facts=v.facts, alert_id=alert_id)], HISTORY_COLUMNS, conflict="DO NOTHING")


_EVIDENCE_SQL = """
SELECT e.event_id, e.indicator, e.first_report_at, e.title, e.n_outlets, e.languages, e.frame,
       a.article_id, a.guid, a.source_id, coalesce(s.name, a.source_id), s.reliability, a.lang, a.title, a.url, a.published_at
FROM events_v e
JOIN event_articles ea USING (event_id) JOIN articles a USING (article_id) LEFT JOIN sources s USING (source_id)
WHERE list_contains($ids, e.event_id)
ORDER BY e.first_report_at DESC, e.event_id, a.published_at, a.article_id
"""


def event_evidence(con, event_ids: list[str]) -> list[dict]:
    """The reports of the events behind a status (one dict per report: the shape of an
    alert's evidence), newest event first, each event's first report first, with the event's
    frame (``events_v.frame``)."""
    if not event_ids:
        return []
    out = []
    for (eid, ind, first, etitle, outlets, langs, frame, aid, guid, src, name, rel, lang, title, url, pub) in con.execute(
        _EVIDENCE_SQL, {"ids": list(event_ids)}
    ).fetchall():
        out.append(dict(event_id=eid, indicator=ind, first_report_at=first.isoformat(), n_outlets=outlets, languages=langs,
                        frame=json.loads(frame) if isinstance(frame, str) else frame, article_id=aid, guid=guid, source_id=src,
                        source=name, reliability=rel, lang=lang, title=title, url=url, published_at=pub.isoformat()))
    return out


def summary_line(a: Assessment, j: Judgement, status: str, outcome: str | None, facts: dict | None = None) -> str:
    what = {"holding": "holding again", "under_pressure": "under pressure", "contradicted": "CONTRADICTED",
            "expired": f"expired: {outcome}"}[status]
    back = (facts or {}).get("withdrawn")
    if back:  # the contradiction is withdrawn: say why, or ops see a failed judgement come back for no reason
        n = len(back["events"])
        what += (f", no longer contradicted: the {'event' if n == 1 else f'{n} events'} that contradicted it "
                 f"{'was' if n == 1 else 'were'} flagged not an event by {', '.join(back['flagged_by'])}")
    return f"{a.title} / {j.id}: {what} ({j.likelihood}: {j.text})"


def _rule(a: Assessment, j: Judgement) -> str:
    return f"judgement:{a.key(j)}"


def _notice(a: Assessment, j: Judgement, v: Verdict, old: dict | None, state: str, ev: list[dict], now: datetime) -> Notice:
    end = j.window.end(a.cutoff)
    per_event: dict[str, dict] = {}
    for e in ev:
        per_event.setdefault(e["event_id"], e)
    return Notice(
        indicator=INDICATOR, indicator_name="Key judgement", rule=_rule(a, j), kind="judgement", state=state, at=now.isoformat(),
        severity=_SEVERITY[v.status], summary=summary_line(a, j, v.status, v.outcome, v.facts),
        rationale=f"{a.title} ({a.source}, cut-off {a.cutoff_day}): {j.text}",
        facts={"window": f"{j.window} from the cut-off, until {end:%Y-%m-%d}", "events": len(v.event_ids) or None},
        events=list(v.event_ids),
        corroboration={"articles": len(ev), "outlets": len({e["source_id"] for e in ev}), "languages": sorted({e["lang"] for e in ev}),
                       "events": [{"event_id": k, "actor": (e.get("frame") or {}).get("actor_entity") or (e.get("frame") or {}).get("actor")}
                                  for k, e in per_event.items()]} if ev else {},
        evidence=ev,
        detail={"judgement": {
            "assessment": a.id, "id": j.id, "title": a.title, "text": j.text, "likelihood": j.likelihood, "probability": j.probability,
            "status": v.status, "previous": (old or {}).get("status"), "outcome": v.outcome, "window_end": end.isoformat(), "why": v.facts,
            "frames": [{"event_id": k, "frame": e["frame"]} for k, e in per_event.items() if e.get("frame")]}},
    )


def _notify(con, changes: list[tuple[Assessment, Judgement, Verdict, dict | None]], now: datetime) -> list[dict]:
    """Record status changes and tell the assessments' channels through the one alert
    lifecycle (``alerts.lifecycle.apply``): the judgement's alert fires when it comes under
    pressure or is contradicted, updates at the next change, and resolves when it holds again
    or expires. An expiry (or a return to holding) with no alert open is a one-shot notice.
    The ONE place where judgements reach the outbox."""
    if not changes:
        return []
    firing = {r[0] for r in con.execute(
        "SELECT rule_id FROM alerts WHERE state = 'firing' AND list_contains(?, rule_id)", [[_rule(a, j) for a, j, _, _ in changes]]
    ).fetchall()}
    observed, by_rule = [], {}
    for a, j, v, old in changes:
        active = v.status in ("under_pressure", "contradicted")
        rule_id = _rule(a, j)
        if not active and rule_id not in firing:
            if v.status == "holding":
                _record(con, a, j, v, old, now, None)  # back to holding with nothing told before: nothing to tell
                continue
            rule_id = f"{rule_id}:{v.status}"  # an expiry told on its own (once: the key names it)
        by_rule[rule_id] = (a, j, v, old)
        observed.append(Observation(rule_id=rule_id, indicator=INDICATOR, kind="judgement", severity=_SEVERITY[v.status],
                                    channel=a.channel, active=active or rule_id != _rule(a, j),
                                    summary=summary_line(a, j, v.status, v.outcome, v.facts), repeat_s=None, fresh=True,
                                    oneshot=rule_id != _rule(a, j)))
    told: dict[str, str] = {}

    def build(moves: list[Transition]) -> dict[str, Notice]:
        out = {}
        for m in moves:
            a, j, v, old = by_rule[m.obs.rule_id]
            ev = event_evidence(con, v.event_ids)
            out[m.alert_id] = _notice(a, j, v, old, m.state, ev, now)
            told[m.obs.rule_id] = m.alert_id
            if v.event_ids and not m.obs.oneshot:
                con.execute("INSERT INTO alert_events (alert_id, event_id, notified_at) SELECT ?, unnest(?::VARCHAR[]), ? "
                            "ON CONFLICT DO NOTHING", [m.alert_id, v.event_ids, now])
        return out

    queued = apply(con, observed, now, build)
    for rule_id, (a, j, v, old) in by_rule.items():
        _record(con, a, j, v, old, now, told.get(rule_id))
    return queued


def condition_rules(assessments: list[Assessment]) -> list[Rule]:
    """The judgements' conditions as rules, for ``marsad replay``'s boundaries (a flatline that
    starts, a pressure tripwire whose event leaves its window)."""
    return [c.rule(_rule_id(a.key(j), f"x{k}")) for a in assessments for j in a.judgements for k, c in enumerate(j.conditions)]


def window_ends(assessments: list[Assessment], horizon_end: datetime) -> list[datetime]:
    """Times at which a judgement's status changes without a new event (its window's start and
    end), for ``marsad replay``, which evaluates only when something can change."""
    return [t for a in assessments for j in a.judgements for t in (a.cutoff, j.window.end(a.cutoff)) if t <= horizon_end]


# ----------------------------------------------------------------------------- where people look


def _left(end: datetime, now: datetime) -> str:
    if now >= end:
        return "over"
    d = end - now
    return f"{d.days} d" if d.days >= 1 else f"{int(d.total_seconds() // 3600)} h"


def _why_text(status: str, outcome: str | None, facts: dict) -> str | None:
    """The evidence that is not an event: a condition's facts (a flatline's quiet spell)."""
    for key in ("contradicted_by", "pressure"):
        for w in facts.get(key) or []:
            if "last_event_at" in w or w.get("events") == 0:
                last = (w.get("last_event_at") or "")[:10] or "never"
                return f"{w['what']}: {w.get('events', 0)} event(s) in {w.get('window')}, last {last}"
    if facts.get("missing_support"):
        return facts["missing_support"]
    if facts.get("withdrawn") and status != "contradicted":
        return f"contradiction withdrawn: its event(s) flagged not an event by {', '.join(facts['withdrawn']['flagged_by'])}"
    if facts.get("watched_since") is not None or outcome == "unobserved":
        return "Marsad did not watch the whole window"
    return None


def status_rows(con, assessments: list[Assessment], now: datetime) -> list[dict]:
    """One plain dict per judgement of the files (for ``marsad judgements status`` and the
    board's panel): its status, the window left, and the last evidence (the newest event behind
    the status, with its frame, or the condition that holds). Works on the primary warehouse
    or the analysts' read copy."""
    prev = latest(con)
    ids = sorted({e for p in prev.values() for e in (p["event_ids"] or [])})
    ev: dict[str, dict] = {}
    for e in event_evidence(con, ids):
        ev.setdefault(e["event_id"], e)  # the event's first report
    order = {"contradicted": 0, "under_pressure": 1, "holding": 2, "not started": 3, "not evaluated": 4, "expired": 5}
    rows = []
    for a in assessments:
        for j in a.judgements:
            p = prev.get(a.key(j))
            end = j.window.end(a.cutoff)
            status = p["status"] if p else ("not started" if now < a.cutoff else "not evaluated")
            evs = sorted((ev[e] for e in (p or {}).get("event_ids") or [] if e in ev), key=lambda e: e["first_report_at"])
            last = evs[-1] if evs else None
            rows.append({
                "assessment": a.id, "assessment_title": a.title, "source": a.source, "cutoff": a.cutoff_day,
                "window_start": a.cutoff.isoformat(),
                "channel": a.channel, "judgement": j.id, "key": a.key(j), "text": j.text, "likelihood": j.likelihood,
                "probability": j.probability, "status": status, "outcome": (p or {}).get("outcome"),
                "since": p["changed_at"].isoformat() if p else None, "window_end": end.isoformat(), "window_left": _left(end, now),
                "events": len(evs),
                "last_evidence": {k: last.get(k) for k in ("event_id", "indicator", "first_report_at", "title", "url", "source", "lang", "frame")}
                if last else None,
                "note": _why_text(status, (p or {}).get("outcome"), (p or {}).get("facts") or {}),
            })
    rows.sort(key=lambda r: (order.get(r["status"], 9), r["window_end"], r["key"]))
    return rows


def _status_label(r: dict) -> str:
    return f"expired: {r['outcome']}" if r["status"] == "expired" else r["status"].replace("_", " ")


def _frame_text(frame: dict | None) -> str:
    if not frame:
        return ""
    parts = [frame.get("actor"), frame.get("action"), frame.get("target")]
    return " ".join(str(p) for p in parts if p)


def format_status(rows: list[dict]) -> str:
    """``marsad judgements status``: a table with a header, one line per judgement, and its
    evidence under it."""
    if not rows:
        return "no judgements (write one in the assessments directory: README, \"Key judgements\")"
    head = f"{'status':<20} {'likelihood':<20} {'window left':<11} {'since':<16}  judgement"
    out = [head, "-" * len(head)]
    for r in rows:
        since = (r["since"] or "-")[:16].replace("T", " ")
        out.append(f"{_status_label(r):<20} {r['likelihood']:<20} {r['window_left']:<11} {since:<16}  {r['key']}")
        e = r["last_evidence"]
        if e:
            frame = _frame_text(e.get("frame"))
            out.append(f"{'':<20} last evidence: {e['first_report_at'][:16].replace('T', ' ')} {e['indicator']}: {e['title']}"
                       + (f" [{frame}]" if frame else "") + (f" ({r['events']} events)" if r["events"] > 1 else ""))
        if r["note"]:
            out.append(f"{'':<20} {r['note']}")
    return "\n".join(out)


def report(con) -> dict:
    """The track record of the judgements that expired with an outcome (held or failed), per
    likelihood band: how many, how many held, what the band says should hold, and the Brier
    score of the stated likelihoods (the band's midpoint) against what happened."""
    rows = con.execute(
        """SELECT likelihood, probability, outcome FROM judgement_status_v WHERE status = 'expired'"""
    ).fetchall()
    bands = {term: {"band": term, "range": list(YARDSTICK[term]), "n": 0, "held": 0, "_sq": 0.0} for term in YARDSTICK}
    unobserved = 0
    for term, p, outcome in rows:
        if outcome not in ("held", "failed"):
            unobserved += 1
            continue
        b = bands.setdefault(term, {"band": term, "range": [p, p], "n": 0, "held": 0, "_sq": 0.0})
        held = outcome == "held"
        # The likelihood is that of what the judgement states; it held when things went the way it leaned.
        happened = held if p >= 0.5 else not held
        b["n"] += 1
        b["held"] += held
        b["_sq"] += (p - happened) ** 2
    out, total_sq, total_n = [], 0.0, 0
    for b in bands.values():
        lo, hi = b["range"]
        b["expected_held"] = [lo, hi] if (lo + hi) / 2 >= 0.5 else [round(1 - hi, 2), round(1 - lo, 2)]
        b["brier"] = round(b["_sq"] / b["n"], 4) if b["n"] else None
        total_sq, total_n = total_sq + b.pop("_sq"), total_n + b["n"]
        out.append(b)
    return {"bands": out, "n": total_n, "held": sum(b["held"] for b in out),
            "brier": round(total_sq / total_n, 4) if total_n else None, "unobserved": unobserved}


def format_report(rep: dict) -> str:
    head = f"{'likelihood':<20} {'stated':>9} {'should hold':>12} {'expired':>7} {'held':>5} {'brier':>7}"
    out = [head, "-" * len(head)]
    for b in rep["bands"]:
        lo, hi = b["range"]
        elo, ehi = b["expected_held"]
        brier = f"{b['brier']:.4f}" if b["brier"] is not None else "-"
        out.append(f"{b['band']:<20} {f'{lo:.0%}-{hi:.0%}':>9} {f'{elo:.0%}-{ehi:.0%}':>12} {b['n']:>7} {b['held']:>5} {brier:>7}")
    out.append("-" * len(head))
    if rep["n"]:
        out.append(f"{'all':<20} {'':>9} {'':>12} {rep['n']:>7} {rep['held']:>5} {rep['brier']:>7.4f}")
    else:
        out.append("no judgement has expired with an outcome yet: no track record, no Brier score")
    if rep["unobserved"]:
        out.append(f"{rep['unobserved']} expired judgement(s) left out: Marsad did not watch their whole window")
    out.append("Brier: mean (p - happened)^2 over the judgements, p the band's midpoint; 0 is perfect, 0.25 is always saying 'even chance'.")
    return "\n".join(out)


_STATUS_CLASS = {"contradicted": "contradicted", "under_pressure": "pressure", "holding": "holding", "expired": "expired"}


def panel_html(rows: list[dict]) -> str:
    """The board's judgements panel as an HTML fragment (a ``<section>``): status, window left,
    the last evidence. Every text is escaped; analysts' and feed text gets ``dir="auto"`` so
    Arabic reads right to left. Links only to http(s) URLs."""
    e = html.escape
    out = ['<section class="marsad-judgements"><h2>Key judgements</h2>']
    if not rows:
        out.append('<p class="empty">No judgements: write one in the assessments directory.</p></section>')
        return "".join(out)
    out.append('<table><thead><tr><th>status</th><th>judgement</th><th>likelihood</th><th>window left</th>'
               '<th>last evidence</th></tr></thead><tbody>')
    for r in rows:
        cls = _STATUS_CLASS.get(r["status"], "none")
        ev = r["last_evidence"]
        if ev:
            title = e(ev["title"] or "")
            url = ev.get("url") or ""
            label = f'<a href="{e(url)}" rel="noopener noreferrer" target="_blank">{title}</a>' if url.startswith(("http://", "https://")) else title
            frame = _frame_text(ev.get("frame"))
            evidence = (f'<span dir="auto">{label}</span> <small>{e(ev["first_report_at"][:16].replace("T", " "))} · '
                        f'{e(ev["indicator"])}{" · " + e(frame) if frame else ""}</small>')
        else:
            evidence = f'<span dir="auto">{e(r["note"] or "")}</span>'
        out.append(
            f'<tr class="judgement {cls}"><td>{e(_status_label(r))}</td>'
            f'<td><div dir="auto">{e(r["text"])}</div><small dir="auto">{e(r["assessment_title"])} · {e(r["judgement"])}</small></td>'
            f'<td>{e(r["likelihood"])}</td><td>{e(r["window_left"])}</td><td>{evidence}</td></tr>'
        )
    out.append("</tbody></table></section>")
    return "".join(out)


def board_panel(con, directory: str | Path | None = None, now: datetime | None = None) -> dict:
    """What the indicator board mounts (``alerts/board.py`` / ``plugins/marsad_board.py``):
    ``{"judgements": status_rows, "errors": [...], "html": panel_html}``, over the board's
    connection to the read copy. Never raises for a broken assessment file (the errors are
    listed, file:line) or a copy published before judgements existed (no rows)."""
    now = now or datetime.now(timezone.utc)
    errors: list[str] = []
    try:
        assessments = load_assessments(directory)
    except ConfigError as exc:
        assessments, errors = [], exc.problems
    if not con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'judgement_status_v'").fetchone()[0]:
        rows = []
    else:
        rows = status_rows(con, assessments, now)
    return {"judgements": rows, "errors": errors, "html": panel_html(rows)}
