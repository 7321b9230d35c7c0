"""Evaluate the rule pack, deliver alerts, and publish the analysts' read copy, whenever the ingest DAG has loaded articles."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import Asset, dag, task
from marsad_airflow import DELIVERY, default_args

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
    @task(retry_exponential_backoff=2.0, **DELIVERY)
    def deliver(queued: int) -> dict:
        from marsad_airflow import deliver_outbox

        return deliver_outbox()

    # The analysts' read copy, with this run's articles, alert states and sent notifications.
    # Last, so copying the warehouse never delays an alert; and whatever the run's outcome
    # (all_done), so a broken rule file or a Slack outage never leaves analysts a stale copy.
    @task(trigger_rule="all_done", retries=0)
    def publish(delivered: dict | None = None) -> dict | None:
        from marsad.pipeline import Settings, publish_read_copy

        return publish_read_copy(Settings.from_env())

    publish(deliver(evaluate()))


marsad_evaluate()
