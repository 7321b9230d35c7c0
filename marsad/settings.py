"""Deployment settings: ``marsad/settings.yaml`` (or ``$MARSAD_SETTINGS``), edited by admins.

Every field has a ``MARSAD_*`` environment variable (``ENV``). Precedence: a variable that is
set > the file > the built-in default. An empty variable counts as unset, except for the
schedules, where it means "none" (only triggered runs), as it always has.

This module is the one owner of settings: the pipeline (``marsad.pipeline.Settings``), the
modules' default paths (``sources.registry.feeds_path``, ``alerts.rules.rules_path``,
``warehouse.db.default_path`` ...), the DAG files (``plugins/marsad_airflow.py``), ``make run``
and the CLI all resolve them here. Relative paths are always relative to the repository (the
directory that holds ``marsad/``), whether they come from the file or from a variable, never
to the current directory.

Two kinds of settings (``LIVE``):

* live: the schedules, the ingest deadline and timeout, the task retries. The DAG files read
  them from this file at every parse (``plugins/marsad_airflow.py``: a small YAML file, no heavy
  import), so an edit applies at the next DAG parse without a restart; a broken edit is a DAG
  import error naming file:line.
* restart: everything else (paths, pool, queue, Slack connection ...). ``make run``
  (``marsad.airflow_env``) resolves them once, exports them as ``MARSAD_*`` variables to every
  Airflow component, and writes what it resolved to ``<airflow home>/marsad-resolved.json``.
  Tasks read only those variables, so a half-edited file cannot break running tasks.

The ``marsad`` command in another shell reads that snapshot while the ``make run`` that wrote
it is alive (``resolved_snapshot``), so it sees the feeds, warehouse and rules Airflow uses;
its own variables still win. ``marsad config show`` prints every value and where it came from.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from sources.configfile import ConfigError, Document, format_duration, load_yaml, parse_duration, slack_actors, slack_channel

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


def next_run(text: str, after: datetime) -> datetime | None:
    """When a schedule next runs after ``after`` (None: never on its own, ``none`` and ``@once``).

    A cron expression or preset is read in UTC, as Airflow reads it for Marsad's DAGs (their
    start_date is UTC). For a duration, and for ``@continuous``, the next run is taken to be one
    period after ``after``: a run triggered in between is not known here."""
    if text in ("none", "@once"):
        return None
    if text == "@continuous" or _DURATION.match(text):
        return after + timedelta(seconds=schedule_period(text))
    from croniter import croniter

    return croniter(CRON_PRESETS.get(text, text), after.astimezone(timezone.utc)).get_next(datetime)


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


def check_private_networks(value: Any) -> str:
    """``MARSAD_ALLOW_PRIVATE_FEEDS``: empty/0 (public addresses only), 1 (every address), or
    networks such as ``127.0.0.1/32,10.0.0.0/8`` (the form sources.safety.AddressPolicy reads)."""
    import ipaddress

    if value is None or value is False:
        return ""
    if value is True or value == 1:
        return "1"
    text = str(value).strip()
    if text.lower() in ("", "0", "false", "no", "off"):
        return ""
    if text.lower() in ("1", "true", "yes", "on", "all"):
        return "1"
    nets = []
    for part in text.split(","):
        try:
            nets.append(str(ipaddress.ip_network(part.strip(), strict=False)))
        except ValueError:
            raise ValueError(f"{part.strip()!r} is not 1 or an IP network like 127.0.0.1/32") from None
    return ",".join(nets)


PrivateNetworks = Annotated[str, BeforeValidator(check_private_networks)]
PathText = Annotated[str, Field(min_length=1)]
MemorySize = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)? ?([KMGT]i?B)$")]  # as DuckDB's memory_limit takes it


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
    assign_memory: MemorySize = "160MB"


class Delivery(_Section):
    budget: Duration = 120


class Tasks(_Section):
    retries: int | None = Field(default=None, ge=0, le=20)


def _actors(value: Any) -> str | None:
    return slack_actors(value)


class Ops(_Section):
    channel: Channel = "#marsad-ops"
    slack_conn_id: Name = "slack_api_default"
    # Who may press the alert buttons: a channel's members or a user group (S...); empty: the alert's channel.
    actors: Annotated[str | None, BeforeValidator(_actors)] = None


class Polling(_Section):
    allow_private: PrivateNetworks = ""


class Deployment(_Section):
    schedules: Schedules = Field(default_factory=Schedules)
    ingest: Ingest = Field(default_factory=Ingest)
    paths: Paths = Field(default_factory=Paths)
    warehouse: Warehouse = Field(default_factory=Warehouse)
    delivery: Delivery = Field(default_factory=Delivery)
    tasks: Tasks = Field(default_factory=Tasks)
    ops: Ops = Field(default_factory=Ops)
    polling: Polling = Field(default_factory=Polling)


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
    "warehouse.assign_memory": "MARSAD_ASSIGN_MEMORY",
    "delivery.budget": "MARSAD_DELIVER_BUDGET",
    "tasks.retries": "MARSAD_TASK_RETRIES",
    "ops.channel": "MARSAD_OPS_CHANNEL",
    "ops.slack_conn_id": "MARSAD_SLACK_CONN_ID",
    "ops.actors": "MARSAD_SLACK_ACTORS",
    "polling.allow_private": "MARSAD_ALLOW_PRIVATE_FEEDS",
}
# What the DAG files read at parse time, from the file: an edit applies at the next DAG parse.
# Everything else applies when Airflow restarts (make run exports it once).
LIVE = ("schedules.ingest", "schedules.digest", "ingest.deadline", "ingest.timeout", "tasks.retries")
RESOLVED_NAME = "marsad-resolved.json"
AIRFLOW_HOME_ENV = "MARSAD_AIRFLOW_HOME"


def applies(name: str) -> str:
    return "at the next DAG parse" if name in LIVE else "when Airflow restarts"


PATHS = ("paths.warehouse", "paths.staging", "paths.read_copy", "paths.feeds", "paths.rules", "paths.indicators",
         "paths.assessments")


@dataclass
class Loaded:
    """The resolved settings and where each value came from: ``("env", VAR)``,
    ``("file", line)``, ``("make-run", "<snapshot>: <where make run had it>")`` or
    ``("default", None)``."""

    values: Deployment
    file: Path
    source: dict[str, tuple[str, Any]] = field(default_factory=dict)
    document: Document | None = None
    overridden: dict[str, str] = field(default_factory=dict)  # fields the file sets and a variable overrides
    snapshot: Path | None = None  # the make-run snapshot these settings took values from

    def get(self, name: str) -> Any:
        section, key = name.split(".")
        return getattr(getattr(self.values, section), key)

    def path(self, name: str) -> Path | None:
        """A path setting, absolute: a relative path (from the file, a variable or the default)
        is relative to the repository, never to the current directory."""
        value = self.get(name)
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else REPO / p

    def where(self, name: str) -> str:
        """Where a problem with this field is to be fixed, as ``file:line: field`` or ``$VAR: field``."""
        kind, ref = self.source.get(name, ("default", None))
        if kind == "env":
            return f"${ref}: {name}"
        if kind == "file":
            return f"{self.file}:{ref}: {name}"
        if kind == "make-run":
            return f"{ref}: {name}"
        return f"{self.file}: {name} (default)"

    def origin(self, name: str) -> str:
        """Where the value came from, for ``marsad config show``."""
        kind, ref = self.source.get(name, ("default", None))
        if kind == "env":
            return f"variable ${ref}"
        if kind == "file":
            return f"{self.file}:{ref}"
        if kind == "make-run":
            return f"resolved by make run ({ref})"
        return "default"

    def text(self, name: str) -> str:
        """The canonical text of a setting (what its MARSAD_* variable carries): paths absolute,
        durations like 10m, "none" for no deadline, "" for an empty optional setting."""
        value = self.get(name)
        if name in PATHS:
            p = self.path(name)
            return str(p) if p is not None else ""
        if name in ("warehouse.fetch_log_retention", "ingest.timeout", "delivery.budget"):
            return format_duration(value)
        if name == "ingest.deadline":
            return format_duration(value) if value is not None else "none"
        return "" if value is None else str(value)

    def to_env(self) -> dict[str, str]:
        """Every setting as the MARSAD_* variable Airflow components read."""
        return {var: self.text(name) for name, var in ENV.items()}


def settings_path(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    p = Path(environ.get(SETTINGS_ENV) or DEFAULT_SETTINGS).expanduser()
    return p if p.is_absolute() else REPO / p


def airflow_home(environ: Mapping[str, str] | None = None) -> Path:
    """The Airflow home of ``make run``: ``$MARSAD_AIRFLOW_HOME``, else ``.airflow/`` in the repository."""
    environ = os.environ if environ is None else environ
    p = Path(environ.get(AIRFLOW_HOME_ENV) or REPO / ".airflow").expanduser()
    return p if p.is_absolute() else REPO / p


def _pid_alive(pid: Any) -> bool:
    """Is ``pid`` a running make run (marsad.airflow_env)? A recycled pid is not."""
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    try:
        return b"airflow_env" in Path(f"/proc/{int(pid)}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid


def resolved_snapshot(environ: Mapping[str, str] | None = None) -> tuple[Path, dict] | None:
    """What the running ``make run`` resolved (``<airflow home>/marsad-resolved.json``), or None
    when there is none or the make run that wrote it has stopped."""
    path = airflow_home(environ) / RESOLVED_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not _pid_alive(data.get("pid")):
        return None
    return path, data


def write_snapshot(loaded: Loaded, home: Path, extra: dict | None = None) -> Path:
    """Record what ``make run`` resolved, for the ``marsad`` command in other shells."""
    home.mkdir(parents=True, exist_ok=True)
    data = {
        "written_by": "make run (marsad.airflow_env)",
        "pid": os.getpid(),
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings_file": str(loaded.file),
        "settings": {name: {"value": loaded.text(name), "variable": var, "from": loaded.origin(name),
                            "env": loaded.source[name][0] == "env"} for name, var in ENV.items()},
        **(extra or {}),
    }
    path = home / RESOLVED_NAME
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _message(err: dict) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field (check the spelling)"
    return err["msg"].removeprefix("Value error, ")


def _line_order(problem: str) -> int:
    parts = problem.split(":")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


_CRONISH = re.compile(r"^\s*[A-Za-z_][\w-]*\s*:\s*([*@][^#'\"]*|[0-9*/,-]+(\s+[0-9*/,?LW#-]+){4,5})\s*(#.*)?$")


def _syntax_hints(path: Path, problems: list[str]) -> list[str]:
    """A YAML syntax error on a line holding an unquoted schedule (``ingest: */5 * * * *``:
    YAML reads a leading ``*`` as an alias, a leading ``@`` as reserved) says to quote it."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return problems
    out = []
    for p in problems:
        parts = p.split(":")
        n = next((int(x) for x in parts[1:3] if x.strip().isdigit()), 0)
        if "(syntax)" in p:
            for line in (n, n - 1):  # libyaml may mark the line after the value
                if 0 < line <= len(lines) and _CRONISH.match(lines[line - 1]):
                    key, _, value = lines[line - 1].partition(":")
                    value = value.split(" #")[0].strip()
                    if key.startswith((" ", "\t")):  # name it by its section, as the other errors do
                        section = next((t.split(":")[0] for t in reversed(lines[:line - 1]) if t[:1].isalpha()), "")
                        key = f"{section}.{key.strip()}" if section else key
                    p = (f"{path}:{line}: {key.strip()}: a schedule must be in quotes: {key.strip().rsplit('.', 1)[-1]}: \"{value}\" "
                         f"(unquoted, YAML reads a leading * as an alias and @ as reserved) [{p}]")
                    break
        out.append(p)
    return out


def _validate_one(name: str, raw: Any) -> Any:
    section, key = name.split(".")
    return getattr(Deployment.model_fields[section].annotation.model_validate({key: raw}), key)


def load(environ: Mapping[str, str] | None = None, *, read_file: bool | None = None,
         needed: tuple[str, ...] | None = None, snapshot: bool = True) -> Loaded:
    """Resolve every setting: a variable > what a running ``make run`` resolved (restart
    settings, and live ones it had from a variable; ``snapshot=False`` skips it) > the file >
    the default. ``ConfigError`` lists every problem, each as ``file:line: field: message`` or
    ``$VARIABLE: field: message``.

    The file is read when one of the ``needed`` settings (default: all) has no variable, or
    ``read_file=True``."""
    environ = os.environ if environ is None else environ
    path = settings_path(environ)
    if read_file is None:
        read_file = any(ENV[name] not in environ for name in (needed or ENV))
    problems: list[str] = []
    data: dict = {}
    doc: Document | None = None
    if read_file and (path.exists() or SETTINGS_ENV in environ and environ[SETTINGS_ENV]):
        try:
            doc = load_yaml(path)
        except ConfigError as exc:
            problems.extend(_syntax_hints(path, exc.problems))
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
    merged = file_model.model_dump()
    # What the running make run resolved: Airflow's tasks use it until it restarts.
    snap = resolved_snapshot(environ) if snapshot else None
    if snap is not None:
        snap_path, snap_data = snap
        for name, entry in (snap_data.get("settings") or {}).items():
            if name not in ENV or ENV[name] in environ or not isinstance(entry, dict):
                continue
            if name in LIVE and not entry.get("env"):
                continue  # Airflow re-reads it from the file at every parse: the file is the truth
            try:
                checked = _validate_one(name, entry.get("value") if entry.get("value") != "" or name.startswith("schedules.") else None)
            except ValidationError:
                continue  # a snapshot of another release: ignore the field
            section, key = name.split(".")
            merged[section][key] = checked
            loaded.source[name] = ("make-run", f"{snap_path}; make run had it from {entry.get('from', '?')}")
            loaded.snapshot = snap_path
    # Each variable on its own: errors name the variable.
    for name, var in ENV.items():
        if var not in environ:
            continue
        section, key = name.split(".")
        raw = environ[var]
        if not raw.strip() and not name.startswith("schedules."):
            continue  # empty: as if unset (the file, else the default)
        value = "none" if not raw.strip() else raw
        try:
            checked = _validate_one(name, value)
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


def current(*names: str) -> Loaded:
    """The settings for the components (modules' default paths, the pipeline): only reads the
    file (and the make-run snapshot) for the ``names`` the environment does not carry."""
    return load(needed=names or None)


def describe_schedule(text: str) -> str:
    if text == "none":
        return "none (triggered runs only)"
    period = schedule_period(text)
    if text in SPECIAL or period is None:
        return text
    return f"{text} (at most every {format_duration(period)})" if period else text
