"""The scaled deployment for real: PostgreSQL metadata DB, Redis broker, CeleryExecutor with two
workers, an ingest run through the scheduler. PostgreSQL and Redis come from Debian's packages
(``.ci/run`` installs them) and run here as this test's own processes on loopback."""
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import free_port as _free_port, processes_with as _processes_with, rss, write_feeds_yaml
from marsad.airflow_env import prepare, scaled_env, worker_command, worker_env

pytestmark = [pytest.mark.airflow, pytest.mark.scaleout]

# Mapped fetch tasks: more than one worker's slots, so both workers get some. A larger
# MARSAD_SCALEOUT_FEEDS measures a bigger cycle (docs/operations.md, sizing).
FEEDS = int(os.environ.get("MARSAD_SCALEOUT_FEEDS", "8"))
ITEMS = 5
RUN_ID = "scaleout_test"
BIN = Path(sys.executable).parent


def _pg_bin() -> Path | None:
    for d in [os.environ.get("MARSAD_PG_BIN"), *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]:
        if d and (Path(d) / "initdb").exists() and (Path(d) / "postgres").exists():
            return Path(d)
    return None


def _missing_or_skip(what: str):
    msg = f"{what}; .ci/run installs it (apt-get install postgresql redis-server)"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat[stat.rfind(")") + 2:].split()
    return (None if rest[0] == "Z" else (int(rest[1]), rest[19]))


def _descendants(roots: list[int]) -> dict[int, str]:
    """Every live process under these pids (themselves included), with its start time. Task
    processes get their own process group and setproctitle rewrites the environment some
    processes show, so only the process tree finds them all."""
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and (st := _stat(int(p.name))):
            children.setdefault(st[0], []).append(int(p.name))
    found, todo = {}, list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found and (st := _stat(pid)):
            found[pid] = st[1]
            todo.extend(children.get(pid, []))
    return found


class Group:
    """One component in its own process group (session), its output in a log file."""

    def __init__(self, name: str, cmd: list[str], env: dict, logdir: Path, stop_signal=signal.SIGTERM):
        self.name, self.stop_signal = name, stop_signal
        self.log = logdir / f"{name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def tail(self, n: int = 3000) -> str:
        try:
            return f"--- {self.name} ---\n" + self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, grace: float = 20.0) -> None:
        for sig, wait in ((self.stop_signal, grace), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # whatever the leader left in its group (pool processes, task supervisors)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait(what: str, cond, timeout: float, groups=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        for g in groups:
            assert g.proc.poll() is None, f"{g.name} exited with {g.proc.returncode} while waiting for {what}\n" + g.tail()
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n" + "\n".join(g.tail() for g in groups))


def _pg_connect(port: int, dbname: str = "postgres"):
    import psycopg2

    return psycopg2.connect(host="127.0.0.1", port=port, user="airflow", dbname=dbname, connect_timeout=3)


def _can(fn) -> bool:
    try:
        fn()
        return True
    except Exception:
        return False


def _redis_ping(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"PING\r\n")
        assert s.recv(16).startswith(b"+PONG")


def _start_postgres(base_env: dict, groups: list, tmp: Path) -> int:
    pg = _pg_bin()
    if pg is None:
        _missing_or_skip("PostgreSQL server binaries (initdb, postgres) not found under /usr/lib/postgresql/*/bin")
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None or _can(lambda: __import__("pwd").getpwnam("postgres")) is False:
            _missing_or_skip("running as root needs the 'postgres' user (Debian's postgresql package creates it) and runuser")
        shutil.chown(tmp, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = tmp / "data"
    res = subprocess.run([*as_user, str(pg / "initdb"), "-D", str(data), "-U", "airflow", "--auth=trust", "-E", "UTF8", "--no-sync"],
                         env=base_env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    port = _free_port()
    g = Group("postgres", [*as_user, str(pg / "postgres"), "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
                           "-c", f"unix_socket_directories={tmp}", "-c", "fsync=off", "-c", "max_connections=200"],
              base_env, tmp, stop_signal=signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
    groups.append(g)
    _wait("PostgreSQL to accept connections", lambda: _can(lambda: _pg_connect(port).close()), 60, [g])
    con = _pg_connect(port)
    con.autocommit = True
    con.cursor().execute("CREATE DATABASE airflow")
    con.close()
    return port


def _start_redis(base_env: dict, groups: list, logdir: Path) -> int:
    redis = shutil.which("redis-server")
    if redis is None:
        _missing_or_skip("redis-server not found")
    port = _free_port()
    g = Group("redis", [redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], base_env, logdir)
    groups.append(g)
    _wait("Redis to answer PING", lambda: _can(lambda: _redis_ping(port)), 30, [g])
    return port


def _airflow(args, env, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "airflow"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_ingest_runs_on_celery_workers_with_postgres_and_loads_everything_on_the_warehouse_host(tmp_path, feed_server):
    marker = f"marsad-scaleout-{uuid.uuid4().hex}"
    base = {**os.environ, "MARSAD_SCALEOUT_RUN": marker}
    pg_tmp = Path(tempfile.mkdtemp(prefix="marsad-pg-"))  # outside pytest's 0700 tmp: the postgres user must reach it
    logs = tmp_path / "logs"
    logs.mkdir()
    groups: list[Group] = []
    try:
        pg_port = _start_postgres(base, groups, pg_tmp)
        redis_port = _start_redis(base, groups, logs)

        feeds = []
        for i in range(FEEDS):
            items = [{"title": f"Report {i}-{j} from outlet {i}", "link": f"https://outlet{i}.example/{j}", "guid": f"{i}-{j}",
                      "description": f"Story {j} of outlet {i}.", "pubDate": "Sat, 21 Nov 2026 05:00:00 +0000"} for j in range(ITEMS)]
            # A short delay keeps each fetch busy long enough that one worker cannot take them all.
            feeds.append({"id": f"outlet-{i}", "name": f"Outlet {i}", "lang": "en", "url": feed_server.serve(f"/f{i}.xml", rss(items), delay=1.0)})
        feeds_yaml = write_feeds_yaml(tmp_path / "feeds.yaml", feeds)

        api_port = _free_port()
        env = scaled_env(
            tmp_path / "airflow",
            sql_alchemy_conn=f"postgresql+psycopg2://airflow@127.0.0.1:{pg_port}/airflow",
            broker_url=f"redis://127.0.0.1:{redis_port}/0",
            jwt_secret=secrets.token_urlsafe(32),
            port=api_port,
            warehouse=tmp_path / "wh.duckdb",
            base={**base, "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True", "AIRFLOW__API__WORKERS": "1",
                  "MARSAD_FEEDS": str(feeds_yaml), "MARSAD_TASK_RETRIES": "0",
                  "MARSAD_STAGING": str(tmp_path / "staging-none"),
                  "MARSAD_INGEST_SCHEDULE": ""},  # no scheduled run on unpause: only the run this test triggers
        )
        prepare(env)  # airflow db migrate on PostgreSQL, and the warehouse pool

        staging_wh, staging_fetch = tmp_path / "staging-warehouse", tmp_path / "staging-fetch"
        for name, cmd, cenv in [
            ("api-server", [str(BIN / "airflow"), "api-server"], env),
            ("scheduler", [str(BIN / "airflow"), "scheduler"], env),
            ("dag-processor", [str(BIN / "airflow"), "dag-processor"], env),
            ("worker-warehouse", worker_command("marsad-warehouse", warehouse=True), worker_env(env, "marsad-warehouse", staging_wh, _free_port())),
            ("worker-fetch", worker_command("marsad-fetch", warehouse=False), worker_env(env, "marsad-fetch", staging_fetch, _free_port())),
        ]:
            groups.append(Group(name, cmd, cenv, logs))
        airflow_groups = groups[2:]

        def ready(g: Group) -> bool:
            return " ready." in g.log.read_text(errors="replace")

        def healthy() -> bool:
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/api/v2/monitor/health", timeout=2) as r:
                return r.status == 200

        _wait("the api-server to be healthy", lambda: _can(healthy), 120, airflow_groups)
        _wait("both Celery workers to be ready", lambda: all(ready(g) for g in groups[-2:]), 120, airflow_groups)
        _wait("marsad_ingest to be parsed and unpaused", lambda: _airflow(["dags", "unpause", "marsad_ingest"], env).returncode == 0, 120, airflow_groups)
        res = _airflow(["dags", "trigger", "marsad_ingest", "--run-id", RUN_ID], env)
        assert res.returncode == 0, res.stdout + res.stderr
        triggered = time.monotonic()

        con = _pg_connect(pg_port, "airflow")
        con.autocommit = True

        def run_state():
            with con.cursor() as cur:
                cur.execute("SELECT state FROM dag_run WHERE dag_id = 'marsad_ingest' AND run_id = %s", (RUN_ID,))
                row = cur.fetchone()
            return row and row[0]

        _wait("the ingest run to finish", lambda: run_state() in ("success", "failed"), 240, airflow_groups)
        took = time.monotonic() - triggered
        with con.cursor() as cur:
            cur.execute("SELECT task_id, map_index, state, hostname, queue, extract(epoch FROM end_date - start_date) FROM task_instance"
                        " WHERE dag_id = 'marsad_ingest' AND run_id = %s ORDER BY task_id, map_index", (RUN_ID,))
            timed = cur.fetchall()
        state = run_state()
        con.close()
        tis = [t[:5] for t in timed]
        secs = {t[0]: [] for t in timed}
        for t in timed:
            secs[t[0]].append(float(t[5] or 0))
        per_host = {h: sum(1 for t in tis if t[0] == "fetch" and t[3] == h) for h in {t[3] for t in tis}}
        print(f"\nscale-out ingest of {FEEDS} feeds: {took:.1f}s from trigger to success; fetches per worker {per_host}; task seconds "
              + ", ".join(f"{k} {min(v):.1f}-{max(v):.1f}" for k, v in secs.items()))
        assert state == "success", f"{tis}\n" + "\n".join(g.tail() for g in airflow_groups)

        fetch = [t for t in tis if t[0] == "fetch"]
        assert len(fetch) == 4 and all(t[2] == "success" for t in fetch), tis  # MARSAD_FETCH_TASKS batches
        assert {t[3] for t in fetch} == {"marsad-warehouse", "marsad-fetch"}, f"fetches should spread over both workers: {fetch}"
        assert all(t[4] == "default" for t in fetch)
        for task_id in ("due_sources", "load"):
            (ti,) = [t for t in tis if t[0] == task_id]
            assert ti[2:] == ("success", "marsad-warehouse", "warehouse"), ti

        import duckdb

        wh = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
        assert wh.execute("SELECT count(*) FROM articles").fetchone()[0] == FEEDS * ITEMS
        assert wh.execute("SELECT count(DISTINCT source_id) FROM fetch_log WHERE status = 'ok'").fetchone()[0] == FEEDS
        wh.close()
        left = [p for d in (staging_wh, staging_fetch, tmp_path / "staging-none") if d.exists() for p in d.iterdir()]
        assert left == [], "every staged file was handed over and loaded"
    finally:
        started = _descendants([g.proc.pid for g in groups])
        for g in reversed(groups):  # Airflow components first, then Redis and PostgreSQL
            g.stop()
        time.sleep(1)
        orphans = {pid for pid, start in started.items() if (st := _stat(pid)) and st[1] == start}
        for pid in orphans:  # never leave them running, but fail below
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(pg_tmp, ignore_errors=True)
    assert not orphans, f"processes left running after their groups were stopped: {sorted(orphans)}"
    assert _processes_with(marker) == [], "orphaned processes of the scaled deployment"
