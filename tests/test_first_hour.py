"""The README's first-hour walkthrough, run as written, under a real `make run` (airflow standalone).

The commands come from the README block between ``walkthrough:begin`` and ``walkthrough:end``.
For isolation on a shared machine the test changes only where things live: free ports for the
feeds, the Slack stand-in and the UI (``MARSAD_UI_PORT``), its own Airflow home
(``MARSAD_AIRFLOW_HOME``), warehouse (``MARSAD_WAREHOUSE``) and a copy of the settings file
(``MARSAD_SETTINGS``, so the live-schedule test can edit it), and a copy of the example feeds file
with the feeds' port. Shell 4's commands run without the walkthrough's exports: what they see of
feeds and warehouse comes from what `make run` resolved.

The same Airflow then serves the other first-hour checks: a second `make run` is refused, and an
edit of the ingest schedule reaches Airflow's timetable without a restart.
"""
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, free_port, processes_with
from marsad.settings import ENV

pytestmark = pytest.mark.airflow
BIN = Path(sys.executable).parent


def walkthrough_commands() -> list[tuple[str, str]]:
    """(shell, command) for every command of the README's walkthrough block."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index("<!-- walkthrough:begin -->"):readme.index("<!-- walkthrough:end -->")]
    block = block[block.index("```sh") + 5:block.rindex("```")]
    shell, out = "", []
    for line in block.strip().splitlines():
        m = re.match(r"#\s*shell (\d)", line)
        if m:
            shell = m.group(1)
        elif line.strip() and not line.startswith("#"):
            out.append((shell, line.strip()))
    return out


class Run:
    """One walkthrough, started by the fixture and shared by the tests of this module."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.feeds_port, self.slack_port, self.ui_port = free_port(), free_port(), free_port()
        self.home = tmp / "airflow"
        self.settings = tmp / "settings.yaml"
        shutil.copy(REPO / "marsad" / "settings.yaml", self.settings)
        self.feeds = tmp / "feeds.yaml"
        self.feeds.write_text((REPO / "docs/example-feeds/feeds.yaml").read_text(encoding="utf-8").replace(":8765/", f":{self.feeds_port}/"))
        base = {k: v for k, v in os.environ.items() if k not in ENV.values() and k not in ("MARSAD_SETTINGS", "MARSAD_AIRFLOW_HOME")}
        self.base = {**base, "MARSAD_AIRFLOW_HOME": str(self.home), "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}"}
        self.procs: list[subprocess.Popen] = []
        self.make_run: subprocess.Popen | None = None
        self.started = self.first_alert = None

    def sub(self, cmd: str) -> str:
        return (cmd.replace("8765", str(self.feeds_port)).replace("8766", str(self.slack_port))
                .replace("docs/example-feeds/feeds.yaml", str(self.feeds)))

    def background(self, cmd: str, env: dict, name: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")
        p = subprocess.Popen(cmd, shell=True, executable="/bin/bash", cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    r = Run(tmp_path_factory.mktemp("first-hour"))
    shell3 = dict(r.base)
    # What the test changes for isolation (see the module docstring), and a shorter re-parse
    # interval so that the live-schedule test does not wait 30 s per parse.
    shell3.update({"MARSAD_UI_PORT": str(r.ui_port), "MARSAD_WAREHOUSE": str(r.tmp / "marsad.duckdb"),
                   "MARSAD_SETTINGS": str(r.settings), "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
                   "AIRFLOW__API__WORKERS": "1"})
    r.shell3 = shell3
    r.checks = []
    for shell, cmd in walkthrough_commands():
        cmd = r.sub(cmd)
        if shell in ("1", "2"):
            r.background(cmd, r.base, f"shell{shell}")
        elif cmd.startswith("export "):
            for assignment in shlex.split(cmd[len("export "):]):
                k, _, v = assignment.partition("=")
                shell3[k] = v
        elif cmd == "make run":
            r.started = time.monotonic()
            r.make_run = r.background("make run", shell3, "make-run")
        elif shell == "3":
            res = subprocess.run(cmd, shell=True, executable="/bin/bash", cwd=REPO, env=shell3, capture_output=True, text=True, timeout=300)
            r.config_check = res
            assert res.returncode == 0, f"{cmd}\n{res.stdout}\n{res.stderr}"
        else:
            r.checks.append(cmd)
    assert r.make_run is not None and len(r.checks) >= 3, walkthrough_commands()
    try:
        yield r
    finally:
        if r.make_run is not None and r.make_run.poll() is None:
            os.killpg(r.make_run.pid, signal.SIGINT)  # make run's own Ctrl-C: it stops Airflow's whole group
            try:
                r.make_run.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(r.make_run.pid, signal.SIGKILL)
        for p in r.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=30)
        time.sleep(1)
        assert processes_with(str(r.home)) == [], "make run left processes behind"


def _shell4(r: Run, cmd: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=True, executable="/bin/bash", cwd=REPO, env=r.base, capture_output=True, text=True, timeout=timeout)


def test_the_readme_walkthrough_brings_an_alert_to_the_slack_stand_in_and_finds_it_in_both_languages(run):
    r = run
    # make run's banner says what is in effect.
    until = time.monotonic() + 240
    while "Airflow is up" not in r.log("make-run"):
        assert time.monotonic() < until and r.make_run.poll() is None, r.log("make-run")[-3000:]
        time.sleep(1)
    banner = r.log("make-run")
    assert f"{r.feeds} (variable $MARSAD_FEEDS)" in banner, banner
    assert f"{REPO / 'docs/example-feeds/rules.yaml'} (variable $MARSAD_RULES)" in banner, banner
    assert "127.0.0.1/32 (variable $MARSAD_ALLOW_PRIVATE_FEEDS)" in banner, banner
    assert f"{r.tmp / 'marsad.duckdb'} (variable $MARSAD_WAREHOUSE)" in banner
    assert f"slack_api_default (from $AIRFLOW_CONN_SLACK_API_DEFAULT); base_url http://127.0.0.1:{r.slack_port}/api/" in banner, banner

    # The alert at the stand-in (the README's curl), as soon as it is there.
    from alerts.evaluate import indicator_names

    name = indicator_names(REPO / "alerts" / "indicators")["militia_attack_us_forces"]  # messages name the indicator
    (history,) = [c for c in r.checks if "conversations.history" in c]
    until = time.monotonic() + 900
    texts = ""
    while name not in texts:
        assert time.monotonic() < until, f"no alert at the stand-in\n{texts}\n" + r.log("make-run")[-2000:]
        assert r.make_run.poll() is None, r.log("make-run")[-3000:]
        res = _shell4(r, history, timeout=60)
        texts = res.stdout
        time.sleep(3)
    r.first_alert = time.monotonic() - r.started
    print(f"\nwalkthrough: make run to the first alert at the Slack stand-in: {r.first_alert:.0f} s")
    assert name in texts and "Ain al-Asad" in texts and "ar, en" in texts, texts  # one event, reported in both languages

    # Shell 4 has none of the exports: the CLI reads what make run resolved.
    show = _shell4(r, next(c for c in r.checks if "config show" in c))
    assert show.returncode == 0, show.stderr
    assert f"using the settings the running make run resolved ({r.home / 'marsad-resolved.json'})" in show.stderr
    rows = {line.split()[0]: line for line in show.stdout.splitlines() if line[:1].isalpha()}
    assert str(r.feeds) in rows["paths.feeds"] and "resolved by make run" in rows["paths.feeds"], show.stdout
    assert str(r.tmp / "marsad.duckdb") in rows["paths.warehouse"] and "resolved by make run" in rows["paths.warehouse"]
    assert "127.0.0.1/32" in rows["polling.allow_private"]

    # Search in Arabic and in English finds the two reports of the one attack (after a publish).
    searches = [c for c in r.checks if c.startswith(".venv/bin/marsad search")]
    assert len(searches) == 2
    found = {}
    until = time.monotonic() + 300
    for cmd in searches:
        while True:
            res = _shell4(r, cmd)
            if res.returncode == 0 and "example-" in res.stdout:
                break
            assert time.monotonic() < until, f"{cmd}\n{res.stdout}\n{res.stderr}"
            time.sleep(5)
        found[cmd] = res.stdout
    ar, en = found.values()
    assert "example-outlet-ar" in ar and "عين الأسد" in ar, ar
    assert "example-wire-en" in en and "Ain al-Asad" in en, en
    assert "book fair" not in ar + en and "الطماطم" not in ar + en


def test_a_second_make_run_is_refused_while_the_first_runs(run):
    r = run
    assert r.make_run.poll() is None
    # The same settings: the UI port is the first's.
    res = subprocess.run(["make", "run"], cwd=REPO, env=r.shell3, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "not starting Airflow: port 127.0.0.1:" in res.stderr, res.stdout + res.stderr
    assert f":{r.ui_port} is taken" in res.stderr and "airflow" in res.stderr.split("is taken", 1)[1], res.stderr
    # Another port, the same warehouse: the first make run holds it.
    res = subprocess.run(["make", "run"], cwd=REPO, env={**r.shell3, "MARSAD_UI_PORT": str(free_port())},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0, res.stdout + res.stderr
    assert f"warehouse {r.tmp / 'marsad.duckdb'} is in use by another make run (pid " in res.stderr, res.stderr
    assert f"port {r.ui_port}" in res.stderr
    assert "Airflow is up" not in res.stdout


def _api(r: Run, path: str) -> dict:
    base = f"http://127.0.0.1:{r.ui_port}"
    password = json.loads((r.home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
    req = urllib.request.Request(f"{base}/auth/token", data=json.dumps({"username": "admin", "password": password}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        token = json.loads(resp.read())["access_token"]
    with urllib.request.urlopen(urllib.request.Request(f"{base}{path}", headers={"Authorization": f"Bearer {token}"}), timeout=30) as resp:
        return json.loads(resp.read())


def _wait_for(what: str, check, timeout: float = 240):
    until = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < until, f"timed out waiting for {what}"
        time.sleep(3)


def _standalone(r: Run) -> list[int]:
    out = []
    for pid in processes_with(str(r.home)):
        try:
            if b"standalone" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except OSError:
            pass
    return sorted(out)


def test_a_schedule_edit_reaches_the_running_airflow_without_a_restart(run):
    r = run
    standalone = _standalone(r)
    assert standalone
    assert _api(r, "/api/v2/dags/marsad_ingest")["timetable_summary"] in ("*/5 * * * *",)
    original = r.settings.read_text(encoding="utf-8")
    edited = original.replace('ingest: "*/5 * * * *"', 'ingest: "*/20 * * * *"')
    assert edited != original
    r.settings.write_text(edited, encoding="utf-8")
    t0 = time.monotonic()
    _wait_for("the new timetable", lambda: _api(r, "/api/v2/dags/marsad_ingest")["timetable_summary"] == "*/20 * * * *")
    print(f"\nschedule edit seen in Airflow's timetable after {time.monotonic() - t0:.0f} s, no restart")

    # A broken edit: an import error in Airflow's UI naming the settings file and line.
    line = next(i for i, t in enumerate(edited.splitlines(), 1) if t.strip().startswith("ingest: \"*/20"))
    r.settings.write_text(edited.replace('ingest: "*/20 * * * *"', "ingest: */20 * * * *"), encoding="utf-8")

    def import_error():
        errs = _api(r, "/api/v2/importErrors")["import_errors"]
        return [e for e in errs if f"{r.settings}:{line}: schedules.ingest: a schedule must be in quotes" in e["stack_trace"]]

    # Every DAG file reads the live settings, and a syntax error leaves none readable.
    errs = _wait_for("the import errors", lambda: len(import_error()) == 3 and import_error())
    assert {Path(e["filename"]).name for e in errs} == {"marsad_ingest.py", "marsad_digest.py", "marsad_evaluate.py"}, errs
    dag = _api(r, "/api/v2/dags/marsad_ingest")
    print(f"with the broken edit: marsad_ingest is_stale={dag.get('is_stale')} has_import_errors={dag.get('has_import_errors')} "
          f"timetable={dag['timetable_summary']}")
    # Fixed again: the error goes, the schedule is the file's.
    r.settings.write_text(original, encoding="utf-8")
    _wait_for("the error to clear", lambda: not import_error() and _api(r, "/api/v2/dags/marsad_ingest")["timetable_summary"] == "*/5 * * * *")
    assert r.make_run.poll() is None and _standalone(r) == standalone, "the same airflow standalone all along: no restart"
