"""``marsad config check``: every admin-edited file, the environment overrides, and how they fit.

Errors (exit 1) and warnings name the file, line and field (or the variable) to fix, and the
check goes on after an error, so that one run lists every problem:

* settings: marsad/settings.yaml and the MARSAD_* variables that override it (schedules are
  checked with croniter, the parser Airflow uses)
* feeds: sources/feeds.yaml; gazetteers: alerts/gazetteers/*.yaml; indicators:
  alerts/indicators/*.yaml; rules: alerts/rules.yaml, with its channels and the indicators its
  rules name; assessments: alerts/assessments/*.yaml (key judgements), with the indicators they watch
* how they fit: the warehouse, staging and read-copy directories are writable; a feed polled
  more often than the ingest schedule runs; a feed on a loopback or private address that
  polling would refuse (polling.allow_private / MARSAD_ALLOW_PRIVATE_FEEDS); an ingest deadline
  that the run timeout makes moot; ops notices split over several channels
* what applies when: the live settings (next DAG parse) and, while a make run is alive, each
  restart setting edited since it started (it applies when Airflow restarts)
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from sources.configfile import ConfigError, format_duration, load_yaml


@dataclass
class Report:
    ok: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def good(self, what: str, summary: str) -> None:
        self.ok.append(f"ok   {what}: {summary}")

    def bad(self, what: str, problems: list[str], summary: str = "") -> None:
        self.ok.append(f"BAD  {what}: {len(problems)} error(s)" + (f"; {summary}" if summary else ""))
        self.errors.extend(problems)


def _unwritable(path: Path, is_dir: bool) -> str | None:
    """Why Marsad could not create or write ``path`` (a file, or a directory), or None."""
    target = path if is_dir else path.parent
    probe = target
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"directory {probe} is not writable" + (f" (to create {target})" if probe != target else "")
    if not is_dir and path.exists() and not os.access(path, os.W_OK):
        return f"{path} is not writable"
    return None


def check(environ: Mapping[str, str] | None = None) -> Report:
    from marsad import settings as st

    environ = os.environ if environ is None else environ
    r = Report()

    # --- deployment settings and their variables (and what a running make run resolved)
    try:
        s = st.load(environ, read_file=True)
        problems: list[str] = []
    except ConfigError as exc:
        s, problems = exc.partial, exc.problems
    summary = (
        f"{s.file}: ingest {st.describe_schedule(s.get('schedules.ingest'))}, deadline "
        f"{format_duration(s.get('ingest.deadline')) if s.get('ingest.deadline') else 'none'}, timeout "
        f"{format_duration(s.get('ingest.timeout'))}; digest {st.describe_schedule(s.get('schedules.digest'))}; "
        f"warehouse {s.path('paths.warehouse')}"
    )
    if not s.file.exists() and st.SETTINGS_ENV not in environ:
        r.warnings.append(f"{s.file}: (file): missing; every setting is its default or its variable")
    r.bad("settings", problems, str(s.file)) if problems else r.good("settings", summary)
    for name, var in s.overridden.items():
        line = s.document.line_of(tuple(name.split("."))) if s.document else 0
        r.ok.append(f"     {s.file}:{line}: {name} is overridden by ${var}={environ[var]!r}")
    _check_applied(r, s, environ)

    # --- warehouse, staging and read copy: can the pipeline write them?
    wh = s.path("paths.warehouse")
    why = _unwritable(wh, is_dir=False)
    if why:
        r.errors.append(f"{s.where('paths.warehouse')}: {why}")
    for name, derived, is_dir in (
        ("paths.staging", wh.parent / "staging", True),
        ("paths.read_copy", wh.with_name(f"{wh.stem}-read{wh.suffix or '.duckdb'}"), False),
    ):
        if s.path(name) is None and why:
            continue  # next to the warehouse: the same problem, already reported
        other = _unwritable(s.path(name) or derived, is_dir)
        if other:
            r.errors.append(f"{s.where(name)}: {other}")

    # --- feeds
    from sources.registry import load_registry

    feeds_path = s.path("paths.feeds")
    registry = None
    try:
        registry = load_registry(feeds_path)
        enabled = registry.enabled()
        r.good("feeds", f"{feeds_path}: {len(registry.feeds)} ({len(enabled)} enabled)")
    except ConfigError as exc:
        r.bad("feeds", exc.problems, str(feeds_path))
    if registry is not None:
        _check_feed_intervals(r, s, registry, feeds_path)
        _check_private_feeds(r, s, registry, feeds_path)

    # --- gazetteers, indicators
    from alerts.matching import Classifier, Gazetteers, IndicatorSpec

    ind_dir = s.path("paths.indicators")
    gaz_dir = ind_dir.parent / "gazetteers"
    gazetteers_ok = True
    if gaz_dir.is_dir():
        try:
            gaz = Gazetteers.load(gaz_dir)
            r.good("gazetteers", f"{gaz_dir}: {len(gaz.entries)} files, {sum(len(v) for v in gaz.entries.values())} entries")
            from alerts.places import check_places_file

            nesting = check_places_file(gaz_dir / "places.yaml")  # `within`: parents exist, no cycles
            if nesting:
                r.bad("gazetteers", nesting, str(gaz_dir / "places.yaml"))
        except ConfigError as exc:
            gazetteers_ok = False
            r.bad("gazetteers", exc.problems, str(gaz_dir))
    indicator_ids: list[str] | None = None
    if gazetteers_ok:
        try:
            clf = Classifier.load(ind_dir)
            indicator_ids = clf.ids
            r.good("indicators", f"{ind_dir}: {len(clf.ids)}")
        except ConfigError as exc:
            r.bad("indicators", exc.problems, str(ind_dir))
    else:
        # Without gazetteers the indicators cannot be compiled; still check each file's shape.
        from sources.configfile import validate

        bad: list[str] = []
        for path in sorted(ind_dir.glob("*.yaml")):
            try:
                validate(load_yaml(path), IndicatorSpec)
            except ConfigError as exc:
                bad.extend(exc.problems)
        r.bad("indicators", bad, f"{ind_dir}: not compiled (the gazetteers have errors)") if bad else r.ok.append(
            f"--   indicators: {ind_dir}: each file's fields are valid; not compiled (the gazetteers have errors)"
        )
    if indicator_ids is None and ind_dir.is_dir():
        indicator_ids = sorted(p.stem for p in ind_dir.glob("*.yaml"))  # still catch rules naming no indicator file

    # --- rules and their routing
    from alerts.rules import load_rules

    rules_path = s.path("paths.rules")
    pack = None
    try:
        pack = load_rules(rules_path, indicator_ids=indicator_ids)
        channels: dict[str, int] = {}
        for rule in pack.active():
            channels[pack.channel_for(rule)] = channels.get(pack.channel_for(rule), 0) + 1
        routing = ", ".join(f"{c} {n}" for c, n in sorted(channels.items()))
        r.good("rules", f"{rules_path}: {len(pack.rules)} ({len(pack.active())} active; routed to {routing or 'nothing'})")
    except ConfigError as exc:
        r.bad("rules", exc.problems, str(rules_path))

    # --- key judgements (alerts/assessments/*.yaml) and the indicators they watch
    from alerts.judgements import load_assessments

    ass_dir = s.path("paths.assessments")
    try:
        assessments = load_assessments(ass_dir, indicator_ids=indicator_ids)
        r.good("assessments", f"{ass_dir}: {len(assessments)} ({sum(len(a.judgements) for a in assessments)} judgements)"
               if ass_dir.is_dir() else f"{ass_dir}: none (no such directory)")
    except ConfigError as exc:
        r.bad("assessments", exc.problems, str(ass_dir))

    # --- ingest deadline against the run timeout
    deadline, timeout = s.get("ingest.deadline"), s.get("ingest.timeout")
    if deadline is not None and deadline >= timeout:
        r.warnings.append(
            f"{s.where('ingest.deadline')}: {format_duration(deadline)} is not shorter than ingest.timeout "
            f"({format_duration(timeout)}): a run that slow is failed (and reported) first, so the deadline never fires"
        )

    # --- where ops notices go
    ops = {f"{s.where('ops.channel')} (task failures, missed deadlines)": s.get("ops.channel")}
    if registry is not None:
        ops[f"{feeds_path}: health.channel (source health)"] = registry.health.channel
    if pack is not None and pack.defaults.ops_channel:
        ops[f"{rules_path}: defaults.ops_channel"] = pack.defaults.ops_channel
    if len({c.lstrip('#') for c in ops.values()}) > 1:
        r.warnings.append("ops notices go to different channels: " + "; ".join(f"{c} from {w}" for w, c in ops.items()))

    return r


def _check_feed_intervals(r: Report, s, registry, feeds_path: Path) -> None:
    from marsad.settings import schedule_period

    enabled = registry.enabled()
    if not enabled:
        r.warnings.append(f"{feeds_path}: feeds: no feed is enabled; ingest runs will fetch nothing")
        return
    ingest = s.get("schedules.ingest")
    period = schedule_period(ingest)
    if not period:
        return  # none, @once, @continuous: nothing to compare with
    try:
        doc = load_yaml(feeds_path)
    except ConfigError:
        return
    index = {f.get("id"): i for i, f in enumerate(doc.data.get("feeds") or []) if isinstance(f, dict)}
    for feed in enabled:
        if feed.interval < period:
            i = index.get(feed.id)
            own = i is not None and "interval" in doc.data["feeds"][i]
            loc = ("feeds", i, "interval") if own else (("defaults", "interval") if "interval" in (doc.data.get("defaults") or {}) else ("feeds", i))
            r.warnings.append(
                doc.error(loc, f"{feed.id} polls every {format_duration(feed.interval)}, but ingest runs at most every "
                               f"{format_duration(period)} ({s.where('schedules.ingest')} {ingest!r}): it is fetched every "
                               f"{format_duration(period)} at best")
            )


def _check_applied(r: Report, s, environ) -> None:
    """Which settings apply without a restart, and edits the running Airflow has not applied yet."""
    from marsad import settings as st

    r.ok.append(f"     live (apply at the next DAG parse, no restart): {', '.join(st.LIVE)}; every other setting applies when Airflow restarts")
    if s.snapshot is None:
        return
    r.ok.append(f"     the running make run's settings are in effect: {s.snapshot}")
    try:
        now = st.load(environ, read_file=True, snapshot=False)
    except ConfigError as exc:
        now = exc.partial
    for name in st.ENV:
        if name in st.LIVE or s.source[name][0] != "make-run":
            continue
        if now.text(name) != s.text(name):
            r.warnings.append(f"{now.where(name)}: is now {now.text(name)!r}, but the running Airflow uses {s.text(name)!r} "
                              f"(resolved by make run, {s.snapshot}): this setting applies when Airflow restarts (Ctrl-C, make run)")


def _feed_lines(feeds_path: Path) -> tuple[object, dict]:
    try:
        doc = load_yaml(feeds_path)
    except ConfigError:
        return None, {}
    feeds = doc.data.get("feeds") if isinstance(doc.data, dict) else None
    return doc, {f.get("id"): i for i, f in enumerate(feeds or []) if isinstance(f, dict)}


def _check_private_feeds(r: Report, s, registry, feeds_path: Path) -> None:
    """Enabled feeds on loopback or private addresses that polling would refuse (only addresses
    written in the URL, and ``localhost``: no DNS lookups here)."""
    import ipaddress
    from urllib.parse import urlsplit

    from sources.safety import AddressPolicy

    try:
        policy = AddressPolicy.from_env(s.get("polling.allow_private"))
    except ValueError:
        return  # reported with the settings
    doc, index = _feed_lines(feeds_path)
    for feed in registry.enabled():
        host = (urlsplit(feed.url).hostname or "").lower()
        if host == "localhost" or host.endswith(".localhost"):
            ips = [ipaddress.ip_address("127.0.0.1")]
        else:
            try:
                ips = [ipaddress.ip_address(host)]
            except ValueError:
                continue
        refused = [ip for ip in ips if not policy.permits(ip)]
        if not refused:
            continue
        msg = (f"{feed.id}: {feed.url} is on {refused[0]}, a loopback or private address, which polling refuses: "
               f"allow it with polling.allow_private in {s.file} or MARSAD_ALLOW_PRIVATE_FEEDS "
               f"(1, or a network such as {refused[0]}/{refused[0].max_prefixlen}); now {s.where('polling.allow_private')} = "
               f"{s.get('polling.allow_private') or 'empty (public only)'}")
        i = index.get(feed.id)
        r.errors.append(doc.error(("feeds", i, "url"), msg) if doc is not None and i is not None else f"{feeds_path}: feeds: {msg}")
