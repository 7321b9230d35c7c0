"""Evaluate the rule pack and deliver alerts, whenever the ingest DAG has loaded articles."""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

from airflow.sdk import Asset, dag, task

ARTICLES = Asset("marsad_articles")
WAREHOUSE_POOL = os.environ.get("MARSAD_WAREHOUSE_POOL", "marsad_warehouse")


@dag(
    dag_id="marsad_evaluate",
    schedule=[ARTICLES],
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": timedelta(seconds=20), "pool": WAREHOUSE_POOL},
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
        from marsad.pipeline import Settings, deliver
        from marsad_airflow import alert_sink

        report = deliver(Settings.from_env(), alert_sink())
        if report.failed:  # still queued; fail so Airflow retries and the run shows red
            raise RuntimeError(f"{report.failed} notification(s) not delivered yet: {report.as_dict()}")
        return report.as_dict()

    deliver(evaluate())


marsad_evaluate()
