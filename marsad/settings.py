"""Deployment settings: ``marsad/settings.yaml`` (or ``$MARSAD_SETTINGS``), edited by admins.

Every field has a ``MARSAD_*`` environment variable (``ENV``). Precedence: a variable that is
set > the file > the built-in default. An empty variable counts as unset, except for the
schedules, where it means "none" (only triggered runs), as it always has.

How the values reach Airflow: ``marsad.airflow_env.airflow_env`` (``make run``, the tests, and
``scaled_env`` for the scaled deployment) calls ``load`` once, refuses to start Airflow when
anything is invalid, and exports every setting, resolved, as a ``MARSAD_*`` variable. The DAG
files read those variables at parse time (no file I/O there, see plugins/marsad_airflow.py), and
tasks resolve their paths from them. So Airflow applies an edit of this file when it is
restarted, and every component on every host sees the same values. The ``marsad`` command
reads the file each time it runs.

``load`` reads the file only for settings the environment does not carry: an Airflow task,
whose environment carries all of them, never depends on the file (a half-edited file cannot
break running tasks).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from sources.configfile import ConfigError, Document, format_duration, load_yaml, parse_duration, slack_channel

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SETTINGS = Path(__file__).with_name("settings.yaml")
SETTINGS_ENV = "MARSAD_SETTINGS"

# Airflow's cron presets (airflow.sdk.definitions.timetables._cron.CRON_PRESETS) and its two
# special schedules.
CRON_PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
}
SPECIAL = ("@once", "@continuous")
_DURATION = re.compile(r"^\d+(\.\d+)?\s*[smhdw]$")


def check_schedule(value: Any) -> str:
    """A DAG schedule in its canonical text: a 5-field cron expression, a preset, a duration
    (``10m``: every ten minutes) or ``none``. Cron expressions are checked with croniter, the
    parser Airflow itself uses."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        raise ValueError("expected a cron expression, a preset, a duration or none")
    if isinstance(value, (int, float)):
        return format_duration(parse_duration(value))
    text = " ".join(str(value).split())
    if text.lower() in ("", "none"):
        return "none"
    if text.startswith("@"):
        if text in CRON_PRESETS or text in SPECIAL:
            return text
        raise ValueError(f"unknown preset {text!r} (Airflow has {', '.join([*CRON_PRESETS, *SPECIAL])})")
    if _DURATION.match(text.lower()):
        return format_duration(parse_duration(text.lower().replace(" ", "")))
    from croniter import croniter

    fields = text.split()
    if len(fields) != 5:
        raise ValueError(
            f"{text!r} is not a schedule: write a cron expression of 5 fields in quotes (\"*/5 * * * *\"), "
            "a preset (@hourly), a duration (10m) or none"
        )
    try:
        croniter(text)
    except Exception as exc:  # croniter's CroniterBadCronError and friends
        raise ValueError(f"{text!r} is not a valid cron expression: {exc}") from None
    return text


def schedule_period(text: str) -> int | None:
    """Shortest gap in seconds between two runs of a schedule (None: it never repeats)."""
    if text in ("none", "@once"):
        return None
    if text == "@continuous":
        return 0
    if _DURATION.match(text):
        return parse_duration(text)
    from croniter import croniter

    # From a fixed date, so that the answer does not depend on today; 600 runs cover a year of
    # daily runs and every irregular gap of the common cron forms (weekdays, office hours).
    it = croniter(CRON_PRESETS.get(text, text), datetime(2026, 1, 1, tzinfo=timezone.utc))
    times = [it.get_next(float) for _ in range(600)]
    return int(min(b - a for a, b in zip(times, times[1:])))


def _duration_or_none(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    return parse_duration(value)


Schedule = Annotated[str, BeforeValidator(check_schedule)]
Duration = Annotated[int, BeforeValidator(parse_duration)]
OptionalDuration = Annotated[int | None, BeforeValidator(_duration_or_none)]
Channel = Annotated[str, BeforeValidator(slack_channel)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,249}$")]


def _path_or_none(value: Any) -> Any:
    return None if value is None or (isinstance(value, str) and not value.strip()) else value


OptionalPath = Annotated[str | None, BeforeValidator(_path_or_none)]
PathText = Annotated[str, Field(min_length=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Schedules(_Section):
    ingest: Schedule = "*/5 * * * *"
    digest: Schedule = "0 6 * * *"


class Ingest(_Section):
    deadline: OptionalDuration = 600
    timeout: Duration = 1200
    handover: Literal["files", "xcom"] = "files"
    fetch_tasks: int = Field(default=4, ge=1, le=256)
    fetch_batch: int = Field(default=50, ge=1, le=10_000)


class Paths(_Section):
    warehouse: PathText = "var/marsad.duckdb"
    staging: OptionalPath = None
    read_copy: OptionalPath = None
    feeds: PathText = "sources/feeds.yaml"
    rules: PathText = "alerts/rules.yaml"
    indicators: PathText = "alerts/indicators"
    assessments: PathText = "alerts/assessments"


class Warehouse(_Section):
    fetch_log_retention: Duration = 30 * 86400
    pool: Name = "marsad_warehouse"
    queue: Name = "default"


class Delivery(_Section):
    budget: Duration = 120


class Tasks(_Section):
    retries: int | None = Field(default=None, ge=0, le=20)


def _actors(value: Any) -> str | None:
    from alerts.interact import check_actors

    return check_actors(value)


class Ops(_Section):
    channel: Channel = "#marsad-ops"
    slack_conn_id: Name = "slack_api_default"
    # Who may press the alert buttons: a channel's members or a user group (S...); empty: the alert's channel.
    actors: Annotated[str | None, BeforeValidator(_actors)] = None


class Deployment(_Section):
    schedules: Schedules = Field(default_factory=Schedules)
    ingest: Ingest = Field(default_factory=Ingest)
    paths: Paths = Field(default_factory=Paths)
    warehouse: Warehouse = Field(default_factory=Warehouse)
    delivery: Delivery = Field(default_factory=Delivery)
    tasks: Tasks = Field(default_factory=Tasks)
    ops: Ops = Field(default_factory=Ops)


# Field -> the environment variable that overrides it (the names Marsad has always used).
ENV: dict[str, str] = {
    "schedules.ingest": "MARSAD_INGEST_SCHEDULE",
    "schedules.digest": "MARSAD_DIGEST_SCHEDULE",
    "ingest.deadline": "MARSAD_INGEST_DEADLINE",
    "ingest.timeout": "MARSAD_INGEST_TIMEOUT",
    "ingest.handover": "MARSAD_HANDOVER",
    "ingest.fetch_tasks": "MARSAD_FETCH_TASKS",
    "ingest.fetch_batch": "MARSAD_FETCH_BATCH",
    "paths.warehouse": "MARSAD_WAREHOUSE",
    "paths.staging": "MARSAD_STAGING",
    "paths.read_copy": "MARSAD_READ_COPY",
    "paths.feeds": "MARSAD_FEEDS",
    "paths.rules": "MARSAD_RULES",
    "paths.indicators": "MARSAD_INDICATORS",
    "paths.assessments": "MARSAD_ASSESSMENTS",
    "warehouse.fetch_log_retention": "MARSAD_FETCH_LOG_RETENTION",
    "warehouse.pool": "MARSAD_WAREHOUSE_POOL",
    "warehouse.queue": "MARSAD_WAREHOUSE_QUEUE",
    "delivery.budget": "MARSAD_DELIVER_BUDGET",
    "tasks.retries": "MARSAD_TASK_RETRIES",
    "ops.channel": "MARSAD_OPS_CHANNEL",
    "ops.slack_conn_id": "MARSAD_SLACK_CONN_ID",
    "ops.actors": "MARSAD_SLACK_ACTORS",
}
PATHS = ("paths.warehouse", "paths.staging", "paths.read_copy", "paths.feeds", "paths.rules", "paths.indicators",
         "paths.assessments")


@dataclass
class Loaded:
    """The resolved settings and where each value came from: ``("env", VAR)``,
    ``("file", line)`` or ``("default", None)``."""

    values: Deployment
    file: Path
    source: dict[str, tuple[str, Any]] = field(default_factory=dict)
    document: Document | None = None
    overridden: dict[str, str] = field(default_factory=dict)  # fields the file sets and a variable overrides

    def get(self, name: str) -> Any:
        section, key = name.split(".")
        return getattr(getattr(self.values, section), key)

    def path(self, name: str) -> Path | None:
        """A path setting: relative paths from the file (or defaults) resolve against the
        repository; relative paths from a variable against the current directory."""
        value = self.get(name)
        if value is None:
            return None
        p = Path(value).expanduser()
        if not p.is_absolute() and self.source.get(name, ("default",))[0] != "env":
            p = REPO / p
        return p

    def where(self, name: str) -> str:
        """Where a problem with this field is to be fixed, as ``file:line: field`` or ``$VAR: field``."""
        kind, ref = self.source.get(name, ("default", None))
        if kind == "env":
            return f"${ref}: {name}"
        if kind == "file":
            return f"{self.file}:{ref}: {name}"
        return f"{self.file}: {name} (default)"

    def to_env(self) -> dict[str, str]:
        """Every setting as the MARSAD_* variable Airflow components read (canonical text;
        paths absolute; "" for an empty optional setting, meaning its default)."""
        out: dict[str, str] = {}
        for name, var in ENV.items():
            value = self.get(name)
            if name in PATHS:
                p = self.path(name)
                out[var] = str(p.absolute()) if p is not None else ""
            elif name in ("warehouse.fetch_log_retention", "ingest.timeout", "delivery.budget"):
                out[var] = format_duration(value)
            elif name == "ingest.deadline":
                out[var] = format_duration(value) if value is not None else "none"
            elif value is None:
                out[var] = ""
            else:
                out[var] = str(value)
        return out


def settings_path(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get(SETTINGS_ENV) or DEFAULT_SETTINGS)


def _message(err: dict) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field (check the spelling)"
    return err["msg"].removeprefix("Value error, ")


def _line_order(problem: str) -> int:
    parts = problem.split(":")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def load(environ: Mapping[str, str] | None = None, *, read_file: bool | None = None) -> Loaded:
    """Resolve every setting (variable > file > default). ``ConfigError`` lists every problem,
    each as ``file:line: field: message`` or ``$VARIABLE: field: message``.

    The file is read when some setting has no variable (or ``read_file=True``)."""
    environ = os.environ if environ is None else environ
    path = settings_path(environ)
    if read_file is None:
        read_file = any(var not in environ for var in ENV.values())
    problems: list[str] = []
    data: dict = {}
    doc: Document | None = None
    if read_file and (path.exists() or SETTINGS_ENV in environ and environ[SETTINGS_ENV]):
        try:
            doc = load_yaml(path)
        except ConfigError as exc:
            problems.extend(exc.problems)
        if doc is not None:
            if doc.data is None:
                data = {}
            elif isinstance(doc.data, dict):
                data = doc.data
            else:
                problems.append(doc.error((), "expected a mapping of sections (schedules, ingest, paths, ...)"))
    # The file alone: errors point at its lines. The fields in error are left at their
    # defaults, so that ``marsad config check`` can go on checking with the rest.
    file_model = Deployment()
    if doc is not None and data:
        try:
            file_model = Deployment.model_validate(data)
        except ValidationError as exc:
            data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
            for err in exc.errors():
                loc = tuple(err["loc"])
                problems.append(doc.error(loc, _message(err)))
                if len(loc) >= 2 and isinstance(data.get(loc[0]), dict):
                    data[loc[0]].pop(loc[1], None)
                else:
                    data.pop(loc[0], None) if loc else data.clear()
            try:
                file_model = Deployment.model_validate(data)
            except ValidationError:
                data, file_model = {}, Deployment()
    problems.sort(key=_line_order)
    loaded = Loaded(values=file_model, file=path, document=doc)
    for name in ENV:
        section, key = name.split(".")
        if isinstance(data.get(section), dict) and key in data[section]:
            loaded.source[name] = ("file", doc.line_of((section, key)) if doc else 0)
        else:
            loaded.source[name] = ("default", None)
    # Each variable on its own: errors name the variable.
    merged = file_model.model_dump()
    for name, var in ENV.items():
        if var not in environ:
            continue
        section, key = name.split(".")
        raw = environ[var]
        if not raw.strip() and not name.startswith("schedules."):
            continue  # empty: as if unset (the file, else the default)
        value = "none" if not raw.strip() else raw
        try:
            checked = getattr(type(file_model).model_fields[section].annotation.model_validate({key: value}), key)
        except ValidationError as exc:
            for err in exc.errors():
                msg = _message(err)
                problems.append(f"${var}: {name}: {msg}" + ("" if repr(environ[var]) in msg else f" (value {environ[var]!r})"))
            continue
        if loaded.source[name][0] == "file":
            loaded.overridden[name] = var
        merged[section][key] = checked
        loaded.source[name] = ("env", var)
    loaded.values = Deployment.model_validate(merged)
    if problems:
        exc = ConfigError(problems)
        exc.partial = loaded  # what is valid, the rest at defaults (for marsad config check)
        raise exc
    return loaded


def describe_schedule(text: str) -> str:
    if text == "none":
        return "none (triggered runs only)"
    period = schedule_period(text)
    if text in SPECIAL or period is None:
        return text
    return f"{text} (at most every {format_duration(period)})" if period else text
