"""The embedded default deployment: Airflow standalone with Marsad's DAGs, inside the repo.

``airflow_env`` is the single definition of how Airflow is configured for Marsad (used by
``make run`` and by the tests); ``scaled_env`` layers the scaled deployment on top of it
(PostgreSQL, CeleryExecutor, a warehouse queue; see docs/operations.md) and ``worker_env``
names one Celery worker. ``main`` is ``make run``: it prepares the Airflow home,
starts ``airflow standalone`` in its own process group, prints where the UI is and how
to log in, and on Ctrl-C stops the whole group so that nothing is left running.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POOL = "marsad_warehouse"


def airflow_env(home: Path, warehouse: Path | None = None, port: int = 8080, base: dict | None = None) -> dict[str, str]:
    """Environment for every Airflow command Marsad runs (CLI, standalone, tests).

    It carries Marsad's deployment settings (marsad/settings.yaml, each overridden by its
    MARSAD_* variable; ``warehouse`` wins over both), validated and resolved: the settings that
    apply at a restart as MARSAD_* variables (tasks read only those), and ``MARSAD_SETTINGS``, the
    absolute path of the settings file, from which the DAG files read the live settings
    (schedules, deadline, timeout, retries) at every parse. A live setting given as a variable
    is passed on and wins over the file. Raises ``ConfigError`` (every problem, by file, line and
    field, or by variable) rather than start Airflow with invalid settings.
    """
    env = dict(os.environ if base is None else base)
    if warehouse is not None:
        env["MARSAD_WAREHOUSE"] = str(warehouse)
    env.update(exported(resolve(env)))
    venv_bin = str(Path(sys.executable).parent)
    env.update(
        {
            "PATH": venv_bin + os.pathsep + env.get("PATH", ""),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # The embedded default polls as soon as it is up.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": env.get("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "False"),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # Sized for a 2-core machine: 4 concurrent task processes in all.
            "AIRFLOW__CORE__PARALLELISM": env.get("AIRFLOW__CORE__PARALLELISM", "4"),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": env.get("AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG", "4"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home}/airflow.db"),
            "AIRFLOW__API__HOST": env.get("AIRFLOW__API__HOST", "127.0.0.1"),
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "60",
        }
    )
    return env


def resolve(env: dict[str, str]):
    """The settings ``make run`` starts Airflow with (never another make run's snapshot)."""
    from marsad.settings import load

    return load(env, read_file=True, snapshot=False)


def exported(loaded) -> dict[str, str]:
    """The MARSAD_* variables Airflow's components get: every restart setting; a live setting
    only when a variable gave it (else the DAG files read it from the file at parse time)."""
    from marsad.settings import ENV, LIVE, SETTINGS_ENV

    out = loaded.to_env()
    for name in LIVE:
        if loaded.source[name][0] != "env":
            out.pop(ENV[name])
    out[SETTINGS_ENV] = str(loaded.file)
    return out


def scaled_env(
    home: Path,
    *,
    sql_alchemy_conn: str,
    broker_url: str,
    jwt_secret: str,
    api_host: str = "127.0.0.1",
    port: int = 8080,
    result_backend: str | None = None,
    warehouse: Path | None = None,
    worker_concurrency: int = 2,
    base: dict | None = None,
) -> dict[str, str]:
    """The scaled deployment: the same DAGs with a PostgreSQL metadata DB and the CeleryExecutor.

    Every component (api-server, scheduler, dag-processor, each Celery worker) runs with this
    environment. Workers run tasks through the execution API of the api-server at
    ``api_host:port``; it checks the tokens the scheduler signs, so all components need the same
    ``jwt_secret``. Tasks that open the DuckDB file go to the queue ``warehouse``, served only by
    the worker on the host that owns the file (``worker_env(..., warehouse=True)``).
    """
    env = airflow_env(home, warehouse=warehouse, port=port, base=base)
    api = f"http://{api_host}:{port}"
    env.update(
        {
            # The api-server listens where the workers reach it, unless AIRFLOW__API__HOST says otherwise.
            "AIRFLOW__API__HOST": dict(os.environ if base is None else base).get("AIRFLOW__API__HOST", api_host),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn,
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            # Task states go to the metadata DB (db+postgresql+psycopg2://...). Name the driver:
            # SQLAlchemy 2.1's default for postgresql:// is psycopg 3, which is not installed.
            "AIRFLOW__CELERY__RESULT_BACKEND": result_backend or "db+" + sql_alchemy_conn,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(worker_concurrency),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__API__BASE_URL": api,
            "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "marsad_airflow.worker_hostname",
            "MARSAD_WAREHOUSE_QUEUE": "warehouse",
            "MARSAD_HANDOVER": "xcom",  # fetch workers hand staged articles to the warehouse host via XCom
        }
    )
    return env


def worker_env(env: dict[str, str], name: str, staging: Path | None = None, log_port: int | None = None) -> dict[str, str]:
    """One Celery worker's environment: its name (task_instance.hostname, via
    ``marsad_airflow.worker_hostname``), its own staging directory, and the port it serves
    task logs on (default 8793; two workers on one machine need two ports)."""
    env = dict(env, MARSAD_WORKER_NAME=name)
    if staging is not None:
        env["MARSAD_STAGING"] = str(staging)
    if log_port is not None:
        env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(log_port)
    return env


def worker_command(name: str, warehouse: bool) -> list[str]:
    """``airflow celery worker`` for one worker: the warehouse host also serves the queue ``warehouse``."""
    queues = "default,warehouse" if warehouse else "default"
    return [str(Path(sys.executable).parent / "airflow"), "celery", "worker", "--queues", queues, "--celery-hostname", f"{name}@%h"]


def airflow(args: list[str], env: dict[str, str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "airflow"), *args], env=env, check=check, **kw)


def prepare(env: dict[str, str]) -> None:
    """Migrate the metadata DB and create the warehouse pool (one writer at a time)."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    airflow(["db", "migrate"], env, stdout=subprocess.DEVNULL)
    pool = env.get("MARSAD_WAREHOUSE_POOL") or POOL
    airflow(["pools", "set", pool, "1", "Marsad: one DuckDB writer at a time"], env, stdout=subprocess.DEVNULL)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _password(home: Path) -> str | None:
    f = home / "simple_auth_manager_passwords.json.generated"
    try:
        return json.loads(f.read_text()).get("admin")
    except (OSError, ValueError):
        return None


def stop_group(proc: subprocess.Popen, grace: float = 30.0, settle: float = 5.0) -> None:
    """Stop standalone and everything it started: SIGINT to the group, then SIGTERM, then SIGKILL.

    Standalone exits once every component has and every pipe they shared is closed. The
    api-server, triggerer and dag-processor stop on SIGINT within seconds; the scheduler
    (LocalExecutor) keeps scheduling through SIGINT and standalone's own SIGTERM, and its task
    workers ignore both, so waiting for standalone took the whole ``grace`` on every stop. The
    wait now ends at ``grace`` or as soon as none of the leader's live children has exited for
    ``settle`` seconds (those left are not stopping on SIGINT), then SIGTERM and SIGKILL as
    before. A leader without children (the listener) gets the whole grace."""
    if proc.poll() is not None:
        _kill_group(proc.pid, signal.SIGKILL)
        return
    _kill_group(proc.pid, signal.SIGINT)
    until = time.monotonic() + grace
    alive, changed = set(_live_children(proc.pid)), time.monotonic()
    while proc.poll() is None and time.monotonic() < until:
        time.sleep(0.2)
        now = set(_live_children(proc.pid))
        if now != alive:
            alive, changed = now, time.monotonic()
        elif alive and time.monotonic() - changed >= settle:
            break
    if proc.poll() is None:
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    # LocalExecutor workers ignore SIGTERM; make sure nothing of the group survives.
    time.sleep(0.5)
    _kill_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _live_children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` and that have not exited (zombies left out)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            state, ppid = (p / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if int(ppid) == pid and state not in ("Z", "X"):
            out.append(int(p.name))
    return out


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def start_slack_listener(env: dict[str, str], home: Path) -> tuple[subprocess.Popen | None, str]:
    """``marsad slack listen`` (Socket Mode: Slack button presses) alongside Airflow, in its own
    process group so that it stops with it; only when an app-level token is configured
    (MARSAD_SLACK_APP_TOKEN, or the extra ``app_token`` of the Airflow Slack connection)."""
    cli = [sys.executable, "-m", "marsad.cli", "slack", "listen"]
    try:
        check = subprocess.run([*cli, "--check"], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return None, "off (checking the Slack tokens took too long)"
    if check.returncode != 0:
        why = (check.stdout.strip().splitlines() or check.stderr.strip().splitlines() or ["no tokens"])[-1]
        return None, f"off: {why}. Buttons need a Socket Mode listener (README, Slack)."
    out = open(home / "slack-listener.log", "ab")
    proc = subprocess.Popen(cli, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    return proc, f"listening over Socket Mode ({check.stdout.strip()}); log {home}/slack-listener.log"


class Taken(RuntimeError):
    """The UI port or the warehouse is in use by something else: ``make run`` does not start."""


def _listener_pids(port: int) -> list[str]:
    """Who listens on ``port`` (Linux /proc): "pid N (command)" for each process we can see."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{f[9]}]")
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                found.append(f"pid {proc.name} ({cmd[:120]})")
        except OSError:
            continue
    return found


def check_port(host: str, port: int) -> None:
    """Raise ``Taken`` when ``host:port`` cannot be bound, saying which process holds it."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT leftover is no owner
        try:
            sock.bind((host, port))
            return
        except OSError as exc:
            why = exc.strerror or str(exc)
    who = _listener_pids(port)
    raise Taken(f"port {host}:{port} is taken ({why}) by {', '.join(who) if who else 'a process this user cannot see'}; "
                f"stop it, or start on another port: MARSAD_UI_PORT=8081 make run")


def lock_warehouse(warehouse: Path, info: dict):
    """Hold ``<warehouse>.run.lock`` for as long as this make run lives (flock: released when the
    process ends, however it ends). Raise ``Taken`` naming the make run that holds it, and also
    when another process holds the DuckDB file itself."""
    import fcntl

    warehouse.parent.mkdir(parents=True, exist_ok=True)
    lock = warehouse.with_name(warehouse.name + ".run.lock")
    fh = open(lock, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        try:
            holder = json.loads(fh.read() or "{}")
        except ValueError:
            holder = {}
        fh.close()
        desc = ", ".join(f"{k} {v}" for k, v in holder.items()) or "unknown"
        raise Taken(f"warehouse {warehouse} is in use by another make run ({desc}; lock {lock}); "
                    "stop it first, or give this one its own: MARSAD_WAREHOUSE=var/other.duckdb") from None
    if warehouse.exists():
        import duckdb

        try:
            duckdb.connect(str(warehouse), read_only=True).close()
        except duckdb.Error as exc:
            if "lock" in str(exc).lower():
                fh.close()
                raise Taken(f"warehouse {warehouse} is open in another process: {exc}") from None
            raise
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps(info))
    fh.flush()
    return fh


def slack_connection(env: dict[str, str]) -> str:
    """Which Slack connection alerts go through, and its base_url, for the banner."""
    conn_id = env.get("MARSAD_SLACK_CONN_ID") or "slack_api_default"
    var = f"AIRFLOW_CONN_{conn_id.upper()}"
    raw = env.get(var)
    if raw is None:
        return (f"{conn_id}: not in the environment (${var}); unless it is among Airflow's connections "
                "(`airflow connections add`), alerts go to the local sink (log + notifications table)")
    base = None
    try:
        extra = json.loads(raw).get("extra") or {}
        extra = json.loads(extra) if isinstance(extra, str) else extra
        base = extra.get("base_url")
    except (ValueError, AttributeError):
        from urllib.parse import parse_qs, urlsplit

        base = (parse_qs(urlsplit(raw).query).get("base_url") or [None])[0]
    return f"{conn_id} (from ${var}); base_url {base or 'https://www.slack.com/api/ (Slack itself)'}"


def banner(loaded, env: dict[str, str], home: Path, port: int, snapshot: Path) -> str:
    """What this make run uses: the files, the warehouse, Slack."""
    rows = [
        ("settings", f"{loaded.file}"),
        ("feeds", f"{loaded.path('paths.feeds')} ({loaded.origin('paths.feeds')})"),
        ("private feeds", f"{loaded.get('polling.allow_private') or 'refused (public addresses only)'} ({loaded.origin('polling.allow_private')})"),
        ("rules", f"{loaded.path('paths.rules')} ({loaded.origin('paths.rules')})"),
        ("indicators", f"{loaded.path('paths.indicators')}"),
        ("warehouse", f"{loaded.path('paths.warehouse')} ({loaded.origin('paths.warehouse')})"),
        ("schedules", f"ingest {loaded.text('schedules.ingest')}, digest {loaded.text('schedules.digest')} (edits apply at the next DAG parse)"),
        ("Slack", slack_connection(env)),
        ("resolved", f"{snapshot} (what `marsad` in another shell uses; `marsad config show`)"),
    ]
    return "\n".join(f"marsad: {k + ':':<15}{v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    port = int(os.environ.get("MARSAD_UI_PORT", "8080"))
    from marsad.settings import airflow_home, write_snapshot
    from sources.configfile import ConfigError

    home = airflow_home()
    try:
        env = airflow_env(home, port=port)
        loaded = resolve(env)
    except ConfigError as exc:
        print(f"marsad: not starting Airflow: the settings have errors (`marsad config check` lists them all):\n{exc}", file=sys.stderr)
        return 2
    warehouse = loaded.path("paths.warehouse")
    try:
        check_port(env["AIRFLOW__API__HOST"], port)
        held = lock_warehouse(warehouse, {"pid": os.getpid(), "airflow_home": str(home), "port": port,
                                          "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    except Taken as exc:
        print(f"marsad: not starting Airflow: {exc}", file=sys.stderr)
        return 3
    snapshot = write_snapshot(loaded, home, {"airflow_home": str(home), "port": port, "ui": f"http://127.0.0.1:{port}/",
                                             "slack": slack_connection(env)})
    print(f"marsad: preparing Airflow in {home} (SQLite, LocalExecutor, parallelism {env['AIRFLOW__CORE__PARALLELISM']})", flush=True)
    print(banner(loaded, env, home, port, snapshot), flush=True)
    prepare(env)
    log = open(home / "standalone.log", "ab")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "airflow"), "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    listener, listener_note = start_slack_listener(env, home)
    stopping = False

    def _stop(signum, frame):
        nonlocal stopping
        if not stopping:
            stopping = True
            print("\nmarsad: stopping Airflow ...", flush=True)

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    deadline = time.monotonic() + 180
    announced = False
    try:
        while not stopping and proc.poll() is None:
            if not announced and _healthy(port):
                announced = True
                pw = _password(home)
                print(
                    f"marsad: Airflow is up at http://127.0.0.1:{port}/ — log in as admin / {pw or '(see ' + str(home) + '/simple_auth_manager_passwords.json.generated)'}\n"
                    f"marsad: DAGs marsad_ingest (schedule {loaded.text('schedules.ingest')}) and marsad_evaluate (after each load) are running;\n"
                    f"marsad: warehouse {env['MARSAD_WAREHOUSE']}; logs {home}/standalone.log. Ctrl-C stops everything.\n"
                    f"marsad: Slack buttons: {listener_note}",
                    flush=True,
                )
            if not announced and time.monotonic() > deadline:
                print(f"marsad: Airflow did not become healthy in 180 s; see {home}/standalone.log", file=sys.stderr)
                break
            time.sleep(0.5)
    finally:
        if listener is not None:
            stop_group(listener, grace=15)
        stop_group(proc)
        log.close()
        snapshot.unlink(missing_ok=True)  # the CLI goes back to the file (it also ignores a dead make run's snapshot)
        held.close()
    if not stopping and proc.returncode not in (0, None, -signal.SIGINT, -signal.SIGKILL):
        print(f"marsad: airflow standalone exited with {proc.returncode}; see {home}/standalone.log", file=sys.stderr)
        return 1
    print("marsad: stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
