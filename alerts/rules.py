"""Alert rules (``alerts/rules.yaml``): when counted events should page ops.

Every rule names an indicator and a kind; all kinds count *events* (not articles), an
event's time being its first report:

* ``tripwire``   any matching event in the last ``window`` (default 24h)
* ``threshold``  at least ``count`` events in ``window``
* ``resumption`` an event after at least ``quiet`` with none; fires only once Marsad has
  watched for at least ``quiet`` before that event; stays firing for ``window`` (default 72h)
* ``spike``      events in ``window`` at least ``ratio`` x the rate of the ``baseline``
  before it, and at least ``count`` of them
* ``flatline``   fewer than ``count`` events in ``window`` (needs ``window`` of history)

An alert fires once, follows up in its thread when new events join it, repeats every
``repeat`` while it keeps firing, and resolves when the condition clears.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from sources.configfile import ConfigError, load_yaml, parse_duration, slack_channel, validate, validate_items

Duration = Annotated[int, BeforeValidator(parse_duration)]
Channel = Annotated[str, BeforeValidator(slack_channel)]
ALERTS_DIR = Path(__file__).parent
DEFAULT_RULES = ALERTS_DIR / "rules.yaml"
DEFAULT_INDICATORS = ALERTS_DIR / "indicators"
Kind = Literal["tripwire", "threshold", "resumption", "spike", "flatline"]
Severity = Literal["info", "low", "medium", "high", "critical"]

_DEFAULT_WINDOW = {"tripwire": 86400, "resumption": 3 * 86400}


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{1,63}$")
    indicator: str
    kind: Kind
    rationale: str = Field(min_length=10)
    severity: Severity = "medium"
    channel: Channel | None = None
    repeat: Duration = 86400
    window: Duration | None = None
    count: int | None = Field(default=None, ge=1)
    quiet: Duration | None = None
    baseline: Duration | None = None
    ratio: float | None = Field(default=None, gt=1.0)
    enabled: bool = True

    @model_validator(mode="after")
    def _fields_for_kind(self) -> "Rule":
        need = {
            "tripwire": [],
            "threshold": ["count", "window"],
            "resumption": ["quiet"],
            "spike": ["window", "baseline", "ratio", "count"],
            "flatline": ["count", "window"],
        }[self.kind]
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.kind} rule needs {', '.join(missing)}")
        return self

    @property
    def window_s(self) -> int:
        return self.window or _DEFAULT_WINDOW.get(self.kind, 86400)


class RuleDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: Channel = "#marsad-alerts"
    # Per-severity channels, used when a rule names no channel of its own.
    routes: dict[Severity, Channel] = Field(default_factory=dict)
    # Where the daily digest and source-health notices go (default: channel).
    digest_channel: Channel | None = None
    ops_channel: Channel | None = None
    repeat: Duration = 86400
    severity: Severity = "medium"


class RulePack(BaseModel):
    model_config = ConfigDict(extra="forbid")
    defaults: RuleDefaults = Field(default_factory=RuleDefaults)
    rules: list[Rule]

    def channel_for(self, rule: Rule) -> str:
        return rule.channel or self.defaults.routes.get(rule.severity) or self.defaults.channel

    def active(self) -> list[Rule]:
        return [r for r in self.rules if r.enabled]


def rules_path() -> Path:
    """paths.rules as marsad.settings resolves it (``MARSAD_RULES`` > make run > settings.yaml)."""
    from marsad.settings import current

    return current("paths.rules").path("paths.rules")


def indicators_dir() -> Path:
    """paths.indicators as marsad.settings resolves it."""
    from marsad.settings import current

    return current("paths.indicators").path("paths.indicators")


def load_rules(path: str | Path | None = None, indicator_ids: list[str] | None = None) -> RulePack:
    doc = load_yaml(path or rules_path())
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise ConfigError([doc.error((), "expected a mapping with a 'rules' list")])
    extra = sorted(set(data) - {"defaults", "rules"})
    problems = [doc.error((k,), "unknown field (check the spelling)") for k in extra]
    try:
        defaults = validate(doc, RuleDefaults, data.get("defaults") or {}, ("defaults",))
    except ConfigError as exc:  # go on: the rules' own problems are listed too
        problems += exc.problems
        defaults = RuleDefaults()
    inherit = {k: v for k, v in (data.get("defaults") or {}).items() if k in ("repeat", "severity")}
    raw = [{**inherit, **r} if isinstance(r, dict) else r for r in data["rules"]]
    rules, bad = validate_items(doc, Rule, raw, ("rules",))
    problems += bad
    seen: set[str] = set()
    for i, r in enumerate(raw):
        if not isinstance(r, dict):
            continue
        if r.get("id") in seen:
            problems.append(doc.error(("rules", i, "id"), f"duplicate rule id {r['id']!r}"))
        seen.add(r.get("id"))
        if indicator_ids is not None and "indicator" in r and r["indicator"] not in indicator_ids:
            problems.append(
                doc.error(("rules", i, "indicator"), f"unknown indicator {r['indicator']!r} (known: {', '.join(sorted(indicator_ids))})")
            )
    if problems:
        raise ConfigError(sorted(problems, key=_line_order))
    return RulePack(defaults=defaults, rules=rules)


def _line_order(problem: str) -> tuple[int, str]:
    parts = problem.split(":")
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0, problem)
