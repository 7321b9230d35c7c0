"""What only Airflow needs: Slack through the Airflow connection, delivery as a task,
failure and missed-deadline notices through the Slack provider's notifier, and the
deployment settings as the DAG files see them.

Imported by DAG files at parse time, so this module imports nothing heavy at the top;
the domain packages never import Airflow.

Settings come from marsad.settings, their one owner. The live ones (schedules.*, ingest.deadline,
ingest.timeout, tasks.retries) are read from marsad/settings.yaml (``$MARSAD_SETTINGS``) at every
DAG parse, so an admin's edit applies at the next parse without a restart; a variable still wins
over the file. Reading it is one small YAML file and pydantic (which Airflow has loaded anyway):
no heavy import. A broken edit raises ``ConfigError`` here, which Airflow shows as the DAG file's
import error with the settings file's line. The other settings come as the MARSAD_* variables
that ``make run`` (marsad.airflow_env) exported when Airflow started.
"""
from __future__ import annotations

import logging
import os
from datetime import timedelta

log = logging.getLogger("marsad.airflow")


def _settings(*needed: str) -> "_Live":
    """marsad.settings.load for these settings: the file is read only when one lacks its variable."""
    from marsad.settings import load
    from sources.configfile import ConfigError

    try:
        return _Live(load(os.environ, needed=needed or None, snapshot=False), [])
    except ConfigError as exc:
        return _Live(exc.partial, exc.problems)


_cache: dict = {}


def live():
    """The settings as of now, the file read at this parse (cached while file and variables are unchanged)."""
    from marsad.settings import ENV, LIVE, settings_path

    path = settings_path()
    try:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = None
    key = (str(path), stamp, tuple(os.environ.get(ENV[n]) for n in LIVE))
    if key not in _cache:
        _cache.clear()
        _cache[key] = _settings(*LIVE)
    return _cache[key]


class _Live:
    """The live settings; reading one that has a problem raises it (``file:line: field: ...``),
    so a mistake stops only the DAG files that use that setting. A file that cannot be read at
    all (a YAML syntax error) stops them all."""

    def __init__(self, loaded, problems: list[str]):
        self.loaded, self.problems = loaded, problems

    def _check(self, name: str) -> None:
        from marsad.settings import ENV
        from sources.configfile import ConfigError

        mine = [p for p in self.problems if f" {name}:" in p or f" {name} " in p or "(syntax)" in p or "(file)" in p
                or not any(f" {other}:" in p for other in ENV)]
        if mine:
            raise ConfigError(mine)

    def get(self, name: str):
        self._check(name)
        return self.loaded.get(name)

    def text(self, name: str) -> str:
        self._check(name)
        return self.loaded.text(name)


_restart = _settings("ops.slack_conn_id", "warehouse.pool", "ops.channel", "warehouse.queue")
SLACK_CONN_ID = _restart.get("ops.slack_conn_id")
WAREHOUSE_POOL = _restart.get("warehouse.pool")
OPS_CHANNEL = _restart.get("ops.channel")
# The Celery queue served only by the worker on the host that owns the DuckDB file (the
# scaled deployment sets it to "warehouse"); "default" everywhere in the embedded default.
WAREHOUSE_QUEUE = _restart.get("warehouse.queue")
# Task arguments for every task that opens the warehouse: one writer at a time, on its host.
ON_WAREHOUSE = {"pool": WAREHOUSE_POOL, "queue": WAREHOUSE_QUEUE}
# Delivery waits on Slack, which can be slow or hang. It runs on the warehouse's host (it opens
# the file, for short transactions only) but outside the one-slot pool, so that it never keeps
# a load waiting; delivery runs take turns by themselves (alerts.delivery).
DELIVERY = {"pool": "default_pool", "queue": WAREHOUSE_QUEUE}


def retries(default: int) -> int:
    """Task retries: tasks.retries (MARSAD_TASK_RETRIES) overrides every DAG's default (0 in tests)."""
    value = live().get("tasks.retries")
    return default if value is None else value


def schedule(name: str):
    """A DAG's schedule (``schedules.ingest``, ``schedules.digest``) as validated by marsad.settings:
    None for ``none`` (triggered runs only), a timedelta for a duration, else the cron expression
    or preset, which Airflow parses."""
    from sources.configfile import parse_duration

    text = live().get(name)
    if text == "none":
        return None
    if text[:1].isdigit() and len(text.split()) == 1:
        return timedelta(seconds=parse_duration(text))
    return text


def duration(name: str) -> timedelta | None:
    """A duration setting (``ingest.timeout``, ``ingest.deadline``); None for ``none``."""
    seconds = live().get(name)
    return None if seconds is None else timedelta(seconds=seconds)


def default_args(retries_default: int, retry_delay, on_warehouse: bool = False) -> dict:
    """Task defaults every Marsad DAG shares: retries, failure notices to ops, and for DAGs whose
    every task opens the warehouse, its pool and queue (``ON_WAREHOUSE``)."""
    args = {"retries": retries(retries_default), "retry_delay": retry_delay, "on_failure_callback": notify_failure}
    if on_warehouse:
        args.update(ON_WAREHOUSE)
    return args


def worker_hostname() -> str:
    """[core] hostname_callable: MARSAD_WORKER_NAME if set (two workers on one machine can be
    told apart in task_instance.hostname), else the machine's FQDN as Airflow's default."""
    import socket

    return os.environ.get("MARSAD_WORKER_NAME") or socket.getfqdn()


def _slack_connection_exists() -> bool:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(SLACK_CONN_ID)
        return True
    except AirflowNotFoundException:
        return False


def run_url(context) -> str | None:
    base = os.environ.get("AIRFLOW__API__BASE_URL")
    if not base or not context:
        return None
    return f"{base.rstrip('/')}/dags/{context['dag'].dag_id}/runs/{context['run_id']}"


def alert_sink(context=None):
    """Slack via the Airflow Slack connection (apache-airflow-providers-slack) when it exists,
    else the local sink (log + warehouse table), so the embedded default works end to end."""
    from alerts.delivery import LocalSink, SlackSink, retry_handlers

    if not _slack_connection_exists():
        log.warning("no Airflow connection %r: alerts go to the local sink", SLACK_CONN_ID)
        return LocalSink()
    from airflow.providers.slack.hooks.slack import SlackHook

    hook = SlackHook(slack_conn_id=SLACK_CONN_ID, timeout=15, retry_handlers=retry_handlers())
    return SlackSink(hook.client, run_url=run_url(context))


def deliver_outbox() -> dict:
    """Task body shared by the DAGs that deliver: send the outbox, fail (and retry) if anything is left."""
    from airflow.sdk import get_current_context

    from marsad.pipeline import Settings, deliver

    report = deliver(Settings.from_env(), alert_sink(get_current_context()))
    if report.failed:  # still queued; fail so Airflow retries and the run shows red
        raise RuntimeError(f"{report.failed} notification(s) not delivered yet: {report.as_dict()}")
    return report.as_dict()


def notify_failure(context) -> None:
    """on_failure_callback: tell ops in Slack with the provider's SlackNotifier (if Slack is set up)."""
    if not _slack_connection_exists():
        log.error("task failed and no Slack connection %r to notify ops", SLACK_CONN_ID)
        return
    from airflow.providers.slack.notifications.slack import SlackNotifier

    ti = context.get("ti") or context.get("task_instance")
    what = f"{context['dag'].dag_id}.{ti.task_id}" if ti else context["dag"].dag_id
    url = run_url(context)
    text = f":x: Marsad task failed: {what} (run {context.get('run_id')})" + (f" <{url}|open the run>" if url else "")
    exc = context.get("exception")
    if exc is not None:
        text += f"\n> {str(exc)[:300].replace('<', '&lt;').replace('>', '&gt;')}"
    SlackNotifier(slack_conn_id=SLACK_CONN_ID, channel=OPS_CHANNEL, text=text).notify(context)


def ingest_deadline():
    """The ingest DAG's deadline (ingest.deadline, MARSAD_INGEST_DEADLINE): when a run has not
    finished that long after it was queued, the scheduler marks the deadline missed and the
    triggerer runs ``notify_deadline_missed``, which tells ops in Slack while the run goes on.
    None when the setting is ``none``."""
    interval = duration("ingest.deadline")
    if interval is None:
        return None
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=interval,
        callback=AsyncCallback(
            notify_deadline_missed,
            kwargs={
                "after": live().text("ingest.deadline"),
                "channel": OPS_CHANNEL,
                "slack_conn_id": SLACK_CONN_ID,
                "base_url": os.environ.get("AIRFLOW__API__BASE_URL"),
            },
        ),
        name="ingest run not finished in time",
    )


async def notify_deadline_missed(context=None, *, after: str = "", channel: str = OPS_CHANNEL,
                                 slack_conn_id: str = SLACK_CONN_ID, base_url: str | None = None) -> str:
    """Deadline-alert callback (an AsyncCallback: the triggerer awaits it). ``context`` is what
    Airflow 3.3 gives deadline callbacks: ``dag_run`` (the REST API's view of the run, as JSON)
    and ``deadline`` (id, deadline_time). Posts with the Slack provider's SlackNotifier."""
    import asyncio
    import importlib

    # Imported in a thread: a first import of the Slack provider takes about a second, which
    # would block the triggerer's event loop (and every other trigger on it) that long.
    notifications = await asyncio.to_thread(importlib.import_module, "airflow.providers.slack.notifications.slack")
    SlackNotifier = notifications.SlackNotifier
    from airflow.sdk.exceptions import AirflowNotFoundException

    from datetime import datetime, timezone

    lifecycle = await asyncio.to_thread(importlib.import_module, "alerts.lifecycle")  # imports DuckDB: not in the loop
    from alerts.render import render

    run = (context or {}).get("dag_run") or {}
    deadline = (context or {}).get("deadline") or {}
    dag_id, run_id = run.get("dag_id", "?"), run.get("dag_run_id") or run.get("run_id", "?")
    at = deadline.get("deadline_time")
    at = at.strftime("%H:%M:%S UTC") if hasattr(at, "strftime") else str(at or "?")
    now = datetime.now(timezone.utc)
    # The same payload, renderer and silences as every other notice (alerts.lifecycle explains
    # why this one does not go through the outbox).
    notice = lifecycle.deadline_notice(dag_id, run_id, after, at, run.get("state", "?"), now)
    if await asyncio.to_thread(lifecycle.silenced_in_read_copy, notice, os.environ.get("MARSAD_READ_COPY"), now):
        log.warning("ingest deadline missed (%s %s); held back by a silence", dag_id, run_id)
        return "silenced"
    run_url = f"{base_url.rstrip('/')}/dags/{dag_id}/runs/{run_id}" if base_url else None
    text, blocks = render(notice, run_url)
    try:
        await SlackNotifier(slack_conn_id=slack_conn_id, channel=channel, text=text, blocks=blocks).async_notify(context or {})
    except AirflowNotFoundException:
        log.error("ingest deadline missed (%s %s) and no Slack connection %r to tell ops", dag_id, run_id, slack_conn_id)
        return f"not posted: no Slack connection {slack_conn_id!r}"
    return f"posted to {channel}"
