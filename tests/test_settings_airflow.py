"""Settings as Airflow sees them: the schedule in marsad/settings.yaml is the schedule Airflow
parses, and the ingest deadline tells ops in Slack while a slow run is still going."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from marsad.airflow_env import airflow_env
from marsad.settings import ENV

pytestmark = pytest.mark.airflow
BIN = Path(sys.executable).parent

# What the dag-processor does with each DAG file: parse it, serialize it (with its deadline
# alert) and read it back; the schedule is the deserialized timetable's.
PARSE = r"""
import json
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
from marsad.airflow_env import REPO
bag = DagBag(dag_folder=str(REPO / "dags"))
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}}
for dag_id in ("marsad_ingest", "marsad_digest"):
    if dag_id in bag.dags:
        data = DagSerialization.to_dict(bag.dags[dag_id])
        dag = DagSerialization.from_dict(data)
        deadlines = [{"interval": d.interval.total_seconds(), "reference": type(d.reference).__name__,
                      "callback": d.callback.path, "kwargs": d.callback.kwargs} for d in (dag.deadline or [])]
        out[dag_id] = {"timetable": type(dag.timetable).__name__, "summary": dag.timetable.summary,
                       "timeout": dag.dagrun_timeout.total_seconds() if dag.dagrun_timeout else None, "deadlines": deadlines}
print(json.dumps(out))
"""


def parse(env: dict) -> dict:
    res = subprocess.run([sys.executable, "-c", PARSE], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def bare_env(**extra) -> dict:
    return {k: v for k, v in os.environ.items() if k not in ENV.values() and k != "MARSAD_SETTINGS"} | extra


def test_the_schedule_in_the_settings_file_is_the_schedule_airflow_parses(tmp_path):
    home = tmp_path / "airflow"
    settings = tmp_path / "settings.yaml"

    def parsed_with(text: str) -> dict:
        settings.write_text(text, encoding="utf-8")
        return parse(airflow_env(home, base=bare_env(MARSAD_SETTINGS=str(settings))))

    info = parsed_with("schedules:\n  ingest: \"*/5 * * * *\"\n")
    assert info["errors"] == {}
    assert (info["marsad_ingest"]["timetable"], info["marsad_ingest"]["summary"]) == ("CronTriggerTimetable", "*/5 * * * *")
    assert info["marsad_digest"]["summary"] == "0 6 * * *"
    assert info["marsad_ingest"]["timeout"] == 1200

    # An admin edits the file; nothing else changes.
    info = parsed_with("schedules:\n  ingest: \"@hourly\"\n  digest: 12h\ningest:\n  timeout: 45m\n")
    assert info["errors"] == {}
    assert info["marsad_ingest"]["summary"] == "0 * * * *"  # Airflow's own reading of @hourly
    assert (info["marsad_digest"]["timetable"], info["marsad_digest"]["summary"]) == ("DeltaTriggerTimetable", "12:00:00")
    assert info["marsad_ingest"]["timeout"] == 45 * 60

    info = parsed_with("schedules:\n  ingest: none\n")
    assert (info["marsad_ingest"]["timetable"], info["marsad_ingest"]["summary"]) == ("NullTimetable", "None")


def test_without_marsad_variables_the_dags_fall_back_to_the_settings_defaults(tmp_path):
    """An Airflow started without airflow_env gets the same defaults as marsad/settings.py, and a
    schedule variable that is not a schedule stops its DAG file with an error naming it."""
    env = airflow_env(tmp_path / "airflow", base=bare_env())
    defaults = parse(env)
    env = {k: v for k, v in env.items() if k not in ENV.values()}
    bare = parse({**env, "MARSAD_DIGEST_SCHEDULE": "daily at six"})
    assert bare["marsad_ingest"] == defaults["marsad_ingest"]
    assert "marsad_digest" not in bare
    (error,) = bare["errors"].values()
    assert "MARSAD_DIGEST_SCHEDULE='daily at six' is not a schedule" in error
