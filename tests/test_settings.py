"""Deployment settings (marsad/settings.yaml and its MARSAD_* variables) and `marsad config check`,
run on real files with deliberate mistakes, as an admin runs them."""
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from conftest import REPO, write_feeds_yaml
from marsad.airflow_env import airflow_env
from marsad.settings import DEFAULT_SETTINGS, ENV, LIVE, Deployment, check_schedule, load, next_run, schedule_period
from sources.configfile import ConfigError

MARSAD = [sys.executable, "-m", "marsad.cli"]


def clean_env(**extra) -> dict:
    """The test process's environment without any Marsad setting (fixtures may have set some)."""
    env = {k: v for k, v in os.environ.items() if k not in ENV.values() and k != "MARSAD_SETTINGS"}
    return {**env, **{k: str(v) for k, v in extra.items()}}


def config_check(env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run([*MARSAD, "config", "check", *args], capture_output=True, text=True, env=env, timeout=120)


def test_shipped_settings_file_states_every_default_and_names_its_variable():
    loaded = load({})
    assert loaded.values == Deployment(), "the shipped file must say what the built-in defaults are"
    lines = DEFAULT_SETTINGS.read_text(encoding="utf-8").splitlines()
    for name, var in ENV.items():
        kind, line = loaded.source[name]
        assert kind == "file", f"{name} is not written in {DEFAULT_SETTINGS}"
        assert var in lines[line - 1], f"line {line} ({name}) should name its variable {var}"


def test_readme_documents_every_setting_and_variable():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    admin = readme[readme.index("## For admins"):]
    for name, var in ENV.items():
        assert f"`{name}`" in admin and f"`{var}`" in admin, (name, var)


@pytest.mark.parametrize("value, canonical, period", [
    ("*/5 * * * *", "*/5 * * * *", 300),
    ("0  6 * * *", "0 6 * * *", 86400),
    ("0 9-17 * * 1-5", "0 9-17 * * 1-5", 3600),
    ("@hourly", "@hourly", 3600),
    ("90s", "90s", 90),
    ("1.5h", "90m", 5400),
    (600, "10m", 600),
    ("none", "none", None),
    (None, "none", None),
    ("@once", "@once", None),
])
def test_schedules_that_airflow_takes(value, canonical, period):
    assert check_schedule(value) == canonical
    assert schedule_period(canonical) == period


@pytest.mark.parametrize("text, after, expected", [
    ("*/5 * * * *", "14:02:50", "14:05:00"),
    ("*/5 * * * *", "14:05:00", "14:10:00"),  # a run at 14:05 waits for the next one
    ("@hourly", "14:02:50", "15:00:00"),
    ("10m", "14:02:50", "14:12:50"),  # a duration: one period on
    ("@continuous", "14:02:50", "14:02:50"),
    ("none", "14:02:50", None),
    ("@once", "14:02:50", None),
])
def test_next_run_of_a_schedule(text, after, expected):
    day = "2026-12-07T{}+00:00"
    want = datetime.fromisoformat(day.format(expected)) if expected else None
    assert next_run(text, datetime.fromisoformat(day.format(after))) == want


@pytest.mark.parametrize("value, message", [
    ("61 * * * *", "not a valid cron expression"),
    ("*/5 * * *", "not a schedule"),
    ("0 0 * * * *", "not a schedule"),
    ("@dayly", "unknown preset '@dayly'"),
    ("every five minutes", "not a schedule"),
    (True, "expected a cron expression"),
])
def test_schedules_that_airflow_would_refuse(value, message):
    with pytest.raises(ValueError, match=message):
        check_schedule(value)


BAD_SETTINGS = """\
schedules:
  ingest: "61 * * * *"
  digest: "@dayly"
ingest:
  deadline: soon
  timeout: 20m
  handover: smoke-signals
paths:
  warehouse: var/marsad.duckdb
warehous:
  pool: typo
tasks:
  retries: -1
ops:
  channel: "#Marsad Ops"
"""


def test_config_check_lists_every_settings_error_by_file_line_and_field(tmp_path):
    bad = tmp_path / "settings.yaml"
    bad.write_text(BAD_SETTINGS, encoding="utf-8")
    res = config_check(clean_env(MARSAD_SETTINGS=bad, MARSAD_TASK_RETRIES="many", MARSAD_INGEST_DEADLINE="5"))
    assert res.returncode == 1, res.stdout + res.stderr
    err = res.stderr
    for expected in (
        f"{bad}:2: schedules.ingest: '61 * * * *' is not a valid cron expression",
        f"{bad}:3: schedules.digest: unknown preset '@dayly'",
        f"{bad}:5: ingest.deadline: 'soon' is not a duration",
        f"{bad}:7: ingest.handover: Input should be 'files' or 'xcom'",
        f"{bad}:10: warehous: unknown field (check the spelling)",
        f"{bad}:13: tasks.retries: Input should be greater than or equal to 0",
        f"{bad}:15: ops.channel: '#Marsad Ops' is not a Slack channel",
        "$MARSAD_TASK_RETRIES: tasks.retries: Input should be a valid integer",
        "$MARSAD_INGEST_DEADLINE: ingest.deadline: '5' is not a duration",
    ):
        assert expected in err, f"missing: {expected}\n{err}"
    assert "9 error(s)" in err
    # The rest was still checked, on the valid part of the settings.
    assert "ok   feeds:" in res.stdout and "ok   rules:" in res.stdout


def test_an_unquoted_cron_expression_is_a_yaml_error_with_its_line(tmp_path):
    bad = tmp_path / "settings.yaml"
    bad.write_text("schedules:\n  digest: '0 6 * * *'\n  ingest: */5 * * * *\n", encoding="utf-8")
    res = config_check(clean_env(MARSAD_SETTINGS=bad))
    assert res.returncode == 1
    assert f"{bad}:3: (syntax):" in res.stderr, res.stderr


def test_config_check_lists_problems_of_every_file_in_one_run(tmp_path):
    """Settings, feeds, gazetteers, indicators and rules all broken at once: every problem is listed."""
    ind = tmp_path / "alerts" / "indicators"
    gaz = tmp_path / "alerts" / "gazetteers"
    ind.mkdir(parents=True)
    gaz.mkdir()
    (gaz / "places.yaml").write_text("entries:\n  - id: ain_al_asad\n    kind: base\n    en: [Ain al-Asad]\n    colour: red\n", encoding="utf-8")
    (ind / "drone_attack.yaml").write_text(
        "id: drone_attack\nname: Drone attack\ndefinition: d\nmatch:\n  - all:\n      - name: drone\n        en: [drone]\n"
        "    within: 0\n", encoding="utf-8")
    rules = tmp_path / "alerts" / "rules.yaml"
    rules.write_text(
        "defaults:\n  channel: \"#marsad-alerts\"\n  routes:\n    critical: \"alerts room\"\n"
        "rules:\n"
        "  - id: drones\n    indicator: drone_attack\n    kind: tripwire\n    rationale: any drone attack matters here\n"
        "  - id: ghosts\n    indicator: no_such_indicator\n    kind: tripwire\n    channel: \"#Ops\"\n    rationale: a rule naming nothing real\n",
        encoding="utf-8")
    feeds = tmp_path / "feeds.yaml"
    feeds.write_text("feeds:\n  - id: f1\n    name: F\n    lang: fr\n    url: https://e.example/rss\n", encoding="utf-8")
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"schedules:\n  ingest: \"@hourlyy\"\npaths:\n  feeds: {feeds}\n  rules: {rules}\n  indicators: {ind}\n", encoding="utf-8")
    res = config_check(clean_env(MARSAD_SETTINGS=settings))
    assert res.returncode == 1
    err = res.stderr
    for expected in (
        f"{settings}:2: schedules.ingest: unknown preset '@hourlyy'",
        f"{feeds}:4: feeds.0.lang:",
        f"{gaz / 'places.yaml'}:5: entries.0.colour: unknown field",
        f"{ind / 'drone_attack.yaml'}:8: match.0.within:",
        f"{rules}:4: defaults.routes.critical: 'alerts room' is not a Slack channel",
        f"{rules}:11: rules.1.indicator: unknown indicator 'no_such_indicator' (known: drone_attack)",
        f"{rules}:13: rules.1.channel: '#Ops' is not a Slack channel",
    ):
        assert expected in err, f"missing: {expected}\n{err}"
    assert {line.split()[0] for line in res.stdout.splitlines() if line.strip() and not line.startswith(" ")} == {"BAD"}


def test_cross_checks_warehouse_directory_poll_intervals_and_deadline(tmp_path):
    in_the_way = tmp_path / "not-a-dir"
    in_the_way.write_text("x")
    feeds = tmp_path / "feeds.yaml"
    feeds.write_text(
        "defaults:\n  interval: 15m\nfeeds:\n"
        "  - id: fast\n    name: Fast\n    lang: en\n    url: https://e.example/fast\n    interval: 2m\n"
        "  - id: slow\n    name: Slow\n    lang: en\n    url: https://e.example/slow\n"
        "  - id: paused\n    name: Paused\n    lang: en\n    url: https://e.example/paused\n    interval: 1m\n    enabled: false\n",
        encoding="utf-8")
    settings = tmp_path / "settings.yaml"
    settings.write_text(
        f"schedules:\n  ingest: \"*/10 * * * *\"\ningest:\n  deadline: 30m\n  timeout: 20m\n"
        f"paths:\n  warehouse: {in_the_way}/marsad.duckdb\n  feeds: {feeds}\n", encoding="utf-8")
    res = config_check(clean_env(MARSAD_SETTINGS=settings))
    assert res.returncode == 1, res.stderr
    err = res.stderr
    assert f"{settings}:7: paths.warehouse: {in_the_way} is not a directory" in err
    assert (f"warning: {feeds}:8: feeds.0.interval: fast polls every 2m, but ingest runs at most every 10m "
            f"({settings}:2: schedules.ingest '*/10 * * * *')") in err
    assert "feeds.1" not in err and "feeds.2" not in err, "15m is fine; a disabled feed is not polled"
    assert f"warning: {settings}:4: ingest.deadline: 30m is not shorter than ingest.timeout (20m)" in err
    assert "1 error(s), 2 warning(s)" in err
    # The warehouse moved somewhere writable: only the warnings are left, and they do not fail.
    settings.write_text(settings.read_text().replace(f"{in_the_way}/marsad.duckdb", str(tmp_path / "var" / "wh.duckdb")))
    res = config_check(clean_env(MARSAD_SETTINGS=settings))
    assert res.returncode == 0, res.stderr
    assert "0 error(s), 2 warning(s)" in res.stderr


def test_variables_override_the_file_which_overrides_the_defaults(tmp_path, monkeypatch):
    settings = tmp_path / "settings.yaml"
    settings.write_text("schedules:\n  ingest: \"@hourly\"\n  digest: \"0 7 * * *\"\npaths:\n  warehouse: data/wh.duckdb\n", encoding="utf-8")
    env = clean_env(MARSAD_SETTINGS=settings, MARSAD_DIGEST_SCHEDULE="0 8 * * *", MARSAD_STAGING="")
    s = load(env)
    assert s.get("schedules.ingest") == "@hourly" and s.source["schedules.ingest"] == ("file", 2)
    assert s.get("schedules.digest") == "0 8 * * *" and s.source["schedules.digest"] == ("env", "MARSAD_DIGEST_SCHEDULE")
    assert s.get("ingest.deadline") == 600 and s.source["ingest.deadline"] == ("default", None)
    assert s.path("paths.warehouse") == REPO / "data" / "wh.duckdb", "file paths are relative to the repository"
    assert s.path("paths.staging") is None, "an empty variable counts as unset"
    # An empty schedule variable keeps its old meaning: triggered runs only.
    assert load({**env, "MARSAD_INGEST_SCHEDULE": ""}).get("schedules.ingest") == "none"
    # A relative path in a variable is relative to the repository too: never to where the command runs.
    monkeypatch.chdir(tmp_path)
    assert load({**env, "MARSAD_WAREHOUSE": "here.duckdb"}).to_env()["MARSAD_WAREHOUSE"] == str(REPO / "here.duckdb")
    from warehouse.db import default_path

    monkeypatch.setenv("MARSAD_WAREHOUSE", "var/x.duckdb")
    assert default_path() == REPO / "var" / "x.duckdb", "the warehouse module resolves it the same way"
    # config check says which lines of the file a variable overrides.
    res = config_check(env)
    assert res.returncode == 0, res.stderr
    assert f"{settings}:3: schedules.digest is overridden by $MARSAD_DIGEST_SCHEDULE='0 8 * * *'" in res.stdout


def test_the_cli_and_the_pipeline_take_their_paths_from_the_settings_file(tmp_path, monkeypatch):
    for var in [*ENV.values(), "MARSAD_SETTINGS"]:
        monkeypatch.delenv(var, raising=False)
    feeds = write_feeds_yaml(tmp_path / "feeds.yaml", [{"id": "only", "name": "Only", "lang": "en", "url": "https://e.example/rss"}])
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"paths:\n  warehouse: {tmp_path}/wh.duckdb\n  feeds: {feeds}\nwarehouse:\n  fetch_log_retention: 7d\n", encoding="utf-8")
    monkeypatch.setenv("MARSAD_SETTINGS", str(settings))
    from marsad.pipeline import Settings

    s = Settings.from_env()
    assert (s.warehouse, s.staging, s.feeds, s.read_copy) == (tmp_path / "wh.duckdb", tmp_path / "staging", feeds, tmp_path / "wh-read.duckdb")
    assert s.fetch_log_retention == 7 * 86400
    assert Settings.from_env(tmp_path / "other.duckdb").read_copy == tmp_path / "other-read.duckdb", "--db wins"
    res = subprocess.run([*MARSAD, "sources", "export"], capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert res.returncode == 0 and "https://e.example/rss" in res.stdout, res.stderr
    # An invalid settings file stops every command with the file, line and field, never silently.
    settings.write_text("paths:\n  warehouse: [not, a, path]\n", encoding="utf-8")
    res = subprocess.run([*MARSAD, "sources", "export"], capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert res.returncode == 2 and f"{settings}:2: paths.warehouse: Input should be a valid string" in res.stderr, res.stderr


def test_airflow_env_exports_the_settings_and_refuses_invalid_ones(tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text("schedules:\n  ingest: 15m\ningest:\n  deadline: none\nops:\n  channel: \"#ops-test\"\n", encoding="utf-8")
    env = airflow_env(tmp_path / "af", base=clean_env(MARSAD_SETTINGS=settings, MARSAD_TASK_RETRIES="0"))
    # Live settings (read by the DAG files at parse time) are not frozen into the environment,
    # unless a variable gave them; the DAG files find the file through MARSAD_SETTINGS.
    assert "MARSAD_INGEST_SCHEDULE" not in env and "MARSAD_INGEST_DEADLINE" not in env
    assert env["MARSAD_SETTINGS"] == str(settings) and env["MARSAD_TASK_RETRIES"] == "0"
    assert load(env).get("schedules.ingest") == "15m" and load(env).get("ingest.deadline") is None
    assert env["MARSAD_OPS_CHANNEL"] == "#ops-test"
    assert env["MARSAD_WAREHOUSE"] == str(REPO / "var" / "marsad.duckdb")
    assert set(ENV.values()) - {ENV[n] for n in LIVE} <= set(env)
    # The environment carries every setting a task needs, so Airflow's tasks never read the
    # file: editing it (even into something invalid) changes none of them until a restart ...
    from marsad.pipeline import Settings

    settings.write_text("schedules:\n  ingest: every now and then\npaths:\n  warehouse: elsewhere.duckdb\n", encoding="utf-8")
    assert load(env, needed=Settings.NEEDED).to_env() == load(env, needed=Settings.NEEDED, read_file=False).to_env()
    # ... while the live settings, read from the file, say exactly what is wrong where.
    with pytest.raises(ConfigError, match=rf"{settings}:2: schedules.ingest: 'every now and then' is not a schedule"):
        load(env)
    with pytest.raises(ConfigError, match=rf"{settings}:2: schedules.ingest: 'every now and then' is not a schedule"):
        airflow_env(tmp_path / "af", base=clean_env(MARSAD_SETTINGS=settings))



def test_make_run_refuses_to_start_airflow_with_invalid_settings(tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text("ops:\n  slack_conn_id: \"slack api\"\n", encoding="utf-8")
    home = tmp_path / "af"
    res = subprocess.run([sys.executable, "-m", "marsad.airflow_env"], capture_output=True, text=True, timeout=120,
                         env=clean_env(MARSAD_SETTINGS=settings, MARSAD_AIRFLOW_HOME=home))
    assert res.returncode == 2
    assert f"{settings}:2: ops.slack_conn_id: String should match pattern" in res.stderr, res.stderr
    assert not home.exists(), "nothing was prepared or started"


def test_config_env_prints_what_airflow_gets(tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text("schedules:\n  digest: none\n", encoding="utf-8")
    res = subprocess.run([*MARSAD, "config", "env"], capture_output=True, text=True, timeout=120,
                         env=clean_env(MARSAD_SETTINGS=settings, MARSAD_WAREHOUSE_QUEUE="warehouse"))
    assert res.returncode == 0, res.stderr
    out = dict(line.split("=", 1) for line in res.stdout.splitlines())
    assert set(out) == set(ENV.values())
    assert out["MARSAD_DIGEST_SCHEDULE"] == "none" and out["MARSAD_WAREHOUSE_QUEUE"] == "warehouse"
    assert out["MARSAD_INGEST_SCHEDULE"] == "'*/5 * * * *'"
    assert yaml.safe_load(settings.read_text()) == {"schedules": {"digest": "none"}}


@pytest.mark.parametrize("line, quoted", [("  ingest: */5 * * * *", '"*/5 * * * *"'), ("  digest: @daily   # mornings", '"@daily"')])
def test_an_unquoted_schedule_names_the_line_and_says_to_quote_it(tmp_path, line, quoted):
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"# mine\nschedules:\n{line}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load(clean_env(MARSAD_SETTINGS=settings))
    (problem,) = err.value.problems
    assert problem.startswith(f"{settings}:3: ") and f"must be in quotes" in problem and quoted in problem, problem
    res = config_check(clean_env(MARSAD_SETTINGS=settings))
    assert res.returncode == 1 and f"{settings}:3:" in res.stderr and quoted in res.stderr, res.stderr


def test_config_check_reports_feeds_on_loopback_that_polling_would_refuse(tmp_path):
    feeds = write_feeds_yaml(tmp_path / "feeds.yaml", [
        {"id": "public", "name": "Public", "lang": "en", "url": "https://news.example/rss"},
        {"id": "mine", "name": "Mine", "lang": "ar", "url": "http://127.0.0.1:8765/ar.xml"},
        {"id": "lab", "name": "Lab", "lang": "en", "url": "http://localhost:9000/en.xml"},
    ])
    lines = feeds.read_text().splitlines()
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"paths:\n  feeds: {feeds}\n  warehouse: {tmp_path}/wh.duckdb\n", encoding="utf-8")
    res = config_check(clean_env(MARSAD_SETTINGS=settings, MARSAD_ALLOW_PRIVATE_FEEDS=""))
    assert res.returncode == 1, res.stdout + res.stderr
    for feed_id, url in (("mine", "http://127.0.0.1:8765/ar.xml"), ("lab", "http://localhost:9000/en.xml")):
        line = next(i for i, text in enumerate(lines, 1) if url in text)
        assert f"{feeds}:{line}: feeds." in res.stderr and f"{feed_id}: {url} is on 127.0.0.1" in res.stderr, res.stderr
    assert "MARSAD_ALLOW_PRIVATE_FEEDS" in res.stderr and "polling.allow_private" in res.stderr
    assert "public" not in res.stderr.replace("public only", "").replace("public addresses", "")
    # Allowed in the settings file (or by the variable): no error.
    settings.write_text(settings.read_text() + "polling:\n  allow_private: 127.0.0.1/32\n", encoding="utf-8")
    res = config_check(clean_env(MARSAD_SETTINGS=settings))
    assert res.returncode == 0, res.stderr
    res = config_check(clean_env(MARSAD_SETTINGS=settings, MARSAD_ALLOW_PRIVATE_FEEDS="10.0.0.0/8"))
    assert res.returncode == 1 and "$MARSAD_ALLOW_PRIVATE_FEEDS: polling.allow_private = 10.0.0.0/8" in res.stderr, res.stderr


def test_a_second_make_run_refuses_a_taken_port_or_warehouse_and_says_by_what(tmp_path):
    """A real listener holds the UI port; then a real make-run lock holds the warehouse."""
    import socket

    settings = tmp_path / "settings.yaml"
    settings.write_text(f"paths:\n  warehouse: {tmp_path}/wh.duckdb\n", encoding="utf-8")
    base = clean_env(MARSAD_SETTINGS=settings, MARSAD_AIRFLOW_HOME=tmp_path / "af")

    def make_run(**extra):
        return subprocess.run([sys.executable, "-m", "marsad.airflow_env"], capture_output=True, text=True, timeout=120,
                              env={**base, **{k: str(v) for k, v in extra.items()}})

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        res = make_run(MARSAD_UI_PORT=port)
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"port 127.0.0.1:{port} is taken" in res.stderr and f"pid {os.getpid()} (" in res.stderr, res.stderr
    assert not (tmp_path / "af" / "airflow.db").exists(), "nothing was prepared or started"

    from conftest import free_port

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from marsad.airflow_env import lock_warehouse\n"
        f"h = lock_warehouse(Path({str(tmp_path / 'wh.duckdb')!r}), {{'pid': 4242, 'airflow_home': '/elsewhere', 'port': 8080}})\n"
        "print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = make_run(MARSAD_UI_PORT=free_port())
    finally:
        holder.kill()
        holder.wait()
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"warehouse {tmp_path / 'wh.duckdb'} is in use by another make run (pid 4242, airflow_home /elsewhere, port 8080" in res.stderr, res.stderr


def test_the_cli_reads_back_what_a_running_make_run_resolved_and_says_which_edits_need_a_restart(tmp_path):
    """A process stands in for make run: it resolves the settings (a feeds file given as a
    variable, the warehouse from the file) and writes the snapshot to its Airflow home, as
    marsad.airflow_env.main does. The CLI in another shell, without that variable, sees them."""
    feeds = write_feeds_yaml(tmp_path / "feeds.yaml", [{"id": "only", "name": "Only", "lang": "en", "url": "https://e.example/rss"}])
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"paths:\n  warehouse: {tmp_path}/wh.duckdb\nschedules:\n  ingest: \"*/10 * * * *\"\n", encoding="utf-8")
    home = tmp_path / "af"
    code = ("import sys, time; from pathlib import Path; from marsad.settings import load, write_snapshot\n"
            "write_snapshot(load(snapshot=False), Path(sys.argv[1])); print('written', flush=True); time.sleep(120)")
    make_run = subprocess.Popen([sys.executable, "-c", code, str(home), "marsad.airflow_env"], stdout=subprocess.PIPE, text=True,
                                env=clean_env(MARSAD_SETTINGS=settings, MARSAD_FEEDS=feeds, MARSAD_AIRFLOW_HOME=home))
    try:
        assert make_run.stdout.readline().strip() == "written"
        other_shell = clean_env(MARSAD_SETTINGS=settings, MARSAD_AIRFLOW_HOME=home)
        res = subprocess.run([*MARSAD, "config", "show", "--json"], capture_output=True, text=True, env=other_shell, timeout=120)
        assert res.returncode == 0, res.stderr
        assert f"using the settings the running make run resolved ({home / 'marsad-resolved.json'})" in res.stderr
        rows = {r["setting"]: r for r in json.loads(res.stdout)["settings"]}
        assert rows["paths.feeds"]["value"] == str(feeds) and rows["paths.feeds"]["from"].startswith("resolved by make run")
        assert "variable $MARSAD_FEEDS" in rows["paths.feeds"]["from"]
        # A live setting make run had from the file is the file's: Airflow re-reads it at each parse.
        assert rows["schedules.ingest"]["from"] == f"{settings}:4" and rows["schedules.ingest"]["applies"] == "at the next DAG parse"
        res = subprocess.run([*MARSAD, "sources", "export"], capture_output=True, text=True, env=other_shell, timeout=120)
        assert "https://e.example/rss" in res.stdout, "the CLI lists the feeds Airflow polls"
        # The admin edits a restart setting: config check says the running Airflow has not applied it.
        settings.write_text(f"paths:\n  warehouse: {tmp_path}/new.duckdb\nschedules:\n  ingest: \"*/15 * * * *\"\n", encoding="utf-8")
        res = config_check(other_shell)
        assert (f"{settings}:2: paths.warehouse: is now '{tmp_path}/new.duckdb', but the running Airflow uses '{tmp_path}/wh.duckdb'"
                in res.stderr and "applies when Airflow restarts" in res.stderr), res.stderr
        assert "schedules.ingest: is now" not in res.stderr, "a live setting needs no restart"
    finally:
        make_run.kill()
        make_run.wait()
    res = subprocess.run([*MARSAD, "config", "show"], capture_output=True, text=True, env=other_shell, timeout=120)
    assert "make run: none running" in res.stdout and "using the settings" not in res.stderr
    assert f"{tmp_path}/new.duckdb" in res.stdout and str(feeds) not in res.stdout


# A leader that stops like airflow standalone: on SIGINT it waits for its children, one of which
# (like the LocalExecutor scheduler and its workers) ignores SIGINT and SIGTERM; the other (like
# the api-server) exits on SIGINT. It writes what it received to a file.
_STANDALONE_LIKE = r"""
import signal, subprocess, sys, time
log = sys.argv[1]
stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                             "signal.signal(signal.SIGTERM, signal.SIG_IGN); open(%r, 'a').write('stubborn up\\n'); time.sleep(3600)" % log])
polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
try:
    while True:
        time.sleep(0.1)
except KeyboardInterrupt:
    open(log, "a").write("leader got SIGINT\n")
    polite.wait()
    stubborn.wait()
"""


def test_stop_group_does_not_wait_out_its_grace_for_children_that_ignore_sigint(tmp_path):
    """make run's Ctrl-C and every Airflow test stop standalone with stop_group: the wait ends
    once the children left stop exiting (not after the whole grace), and nothing of the group
    survives; a leader without children gets its grace to exit by itself."""
    import signal
    import threading
    import time
    import uuid

    from conftest import processes_with
    from marsad.airflow_env import stop_group

    log = tmp_path / "signals.log"
    marker = f"stop-group-test-{uuid.uuid4()}"  # this run's processes only
    proc = subprocess.Popen([sys.executable, "-c", _STANDALONE_LIKE, str(log)], start_new_session=True,
                            env={**os.environ, "MARSAD_TEST_MARKER": marker})
    until = time.monotonic() + 60
    while "stubborn up" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < until and proc.poll() is None
        time.sleep(0.1)
    done = threading.Thread(target=stop_group, args=(proc,), kwargs={"grace": 3600}, daemon=True)
    done.start()
    done.join(120)  # a hang guard, not a timing: the grace alone is an hour
    if done.is_alive():
        os.killpg(proc.pid, signal.SIGKILL)  # leave nothing behind for later runs
    assert not done.is_alive(), "stop_group waited out its grace for a child that ignores SIGINT"
    assert "leader got SIGINT" in log.read_text()
    assert proc.returncode is not None
    until = time.monotonic() + 10  # SIGKILLed children take a moment to be gone from /proc
    while processes_with(marker) and time.monotonic() < until:
        time.sleep(0.1)
    assert processes_with(marker) == []

    # No children: the leader exits by itself on SIGINT, with its own exit code.
    lone = subprocess.Popen([sys.executable, "-c", "import sys, time\ntry:\n    time.sleep(3600)\nexcept KeyboardInterrupt:\n    time.sleep(1); sys.exit(3)"],
                            start_new_session=True)
    time.sleep(1)
    stop_group(lone, grace=60)
    assert lone.returncode == 3
