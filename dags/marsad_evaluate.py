"""Evaluate the rule pack and deliver alerts, whenever the ingest DAG has loaded articles."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import Asset, dag, task
from marsad_airflow import default_args

ARTICLES = Asset("marsad_articles")


@dag(
    dag_id="marsad_evaluate",
    schedule=[ARTICLES],
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(3, timedelta(seconds=20), on_warehouse=True),
    tags=["marsad"],
    doc_md=__doc__,
)
def marsad_evaluate():
    @task
    def evaluate() -> int:
        from marsad.pipeline import Settings, evaluate

        return len(evaluate(Settings.from_env()))

    # Delivery is idempotent (outbox + Slack message metadata): retries never double-post.
    @task(retry_exponential_backoff=2.0)
    def deliver(queued: int) -> dict:
        from marsad_airflow import deliver_outbox

        return deliver_outbox()

    deliver(evaluate())


marsad_evaluate()
