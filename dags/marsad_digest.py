"""Post the daily digest: the last 24 hours per indicator, a chart, and unhealthy sources."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import dag, task
from marsad_airflow import DELIVERY, default_args, schedule


@dag(
    dag_id="marsad_digest",
    schedule=schedule("schedules.digest"),  # marsad/settings.yaml, read at every parse
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(3, timedelta(minutes=2), on_warehouse=True),
    tags=["marsad"],
    doc_md=__doc__,
)
def marsad_digest():
    @task
    def queue_digest() -> str:
        from marsad.pipeline import Settings, queue_digest

        return queue_digest(Settings.from_env())["summary"]

    @task(retry_exponential_backoff=2.0, **DELIVERY)
    def deliver(summary: str) -> dict:
        from marsad_airflow import deliver_outbox

        return deliver_outbox()

    deliver(queue_digest())


marsad_digest()
