"""Poll due feeds (mapped fetch tasks, a batch of feeds each), then load them with a single writer.

The fetch tasks run on any worker; the tasks that open the DuckDB file run on its host
(``ON_WAREHOUSE``: pool and queue). Each fetch hands its staged result over as its return
value, so the loader needs no disk shared with the fetch workers.
Thin on purpose: the work is in marsad.pipeline, imported inside the tasks.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import Asset, dag, task
from marsad_airflow import ON_WAREHOUSE, default_args, duration, ingest_deadline, live, notify_failure, schedule

ARTICLES = Asset("marsad_articles")
# The schedule's text (marsad/settings.yaml, this parse): due_sources polls each feed at the run
# nearest its due time, which needs to know when the next run comes.
INGEST_SCHEDULE = live().get("schedules.ingest")


@dag(
    dag_id="marsad_ingest",
    # marsad/settings.yaml, read at every parse: an edit applies at the next parse, no restart
    schedule=schedule("schedules.ingest"),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=duration("ingest.timeout"),
    on_failure_callback=notify_failure,  # a run that times out fails with no task failing
    deadline=ingest_deadline(),  # ops hear of a run still going after ingest.deadline
    default_args=default_args(2, timedelta(seconds=30)),
    tags=["marsad"],
    doc_md=__doc__,
)
def marsad_ingest():
    # Due feeds in batches (MARSAD_FETCH_TASKS, MARSAD_FETCH_BATCH): a task per feed spent more
    # on task start-up than on fetching; each batch is fetched concurrently, errors per feed.
    @task(**ON_WAREHOUSE)
    def due_sources() -> list[list[dict]]:
        from marsad.pipeline import Settings, due_sources, fetch_batches

        settings = Settings.from_env()
        return fetch_batches(due_sources(settings, schedule=INGEST_SCHEDULE), settings.fetch_batch, settings.fetch_tasks)

    @task(max_active_tis_per_dagrun=8, execution_timeout=timedelta(minutes=5),
          map_index_template="{{ task.op_kwargs['batch'] | length }} feeds from {{ task.op_kwargs['batch'][0]['source_id'] }}")
    def fetch(batch: list[dict]) -> list[dict]:
        from marsad.pipeline import Settings, fetch_stage, hand_over

        return [hand_over(m) for m in fetch_stage(Settings.from_env(), batch)]

    # Runs even when some fetches failed: their errors are staged and recorded too.
    @task(**ON_WAREHOUSE, outlets=[ARTICLES], trigger_rule="all_done", execution_timeout=timedelta(minutes=10))
    def load(staged: list[list[dict] | None]) -> dict:
        from marsad.pipeline import Settings, load, take_over

        settings = Settings.from_env()
        take_over(settings, [item for batch in staged if batch for item in batch])  # into this host's staging; a failed load leaves them for the next run
        return load(settings).as_dict()

    load(fetch.expand(batch=due_sources()))


marsad_ingest()
