"""What only Airflow needs: Slack from the Airflow connection, and the shared DAG settings.

Imported lazily by task code (the plugins folder is on the task's ``sys.path``); the domain
packages never import Airflow.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger("marsad.airflow")

SLACK_CONN_ID = os.environ.get("MARSAD_SLACK_CONN_ID", "slack_api_default")
WAREHOUSE_POOL = os.environ.get("MARSAD_WAREHOUSE_POOL", "marsad_warehouse")


def alert_sink():
    """Slack via the Airflow Slack connection (apache-airflow-providers-slack) when it exists,
    else the local sink (log + warehouse table), so the embedded default works end to end."""
    from airflow.providers.slack.hooks.slack import SlackHook
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException
    from alerts.delivery import LocalSink, SlackSink, retry_handlers

    try:
        BaseHook.get_connection(SLACK_CONN_ID)
    except AirflowNotFoundException:
        log.warning("no Airflow connection %r: alerts go to the local sink", SLACK_CONN_ID)
        return LocalSink()
    hook = SlackHook(
        slack_conn_id=SLACK_CONN_ID,
        timeout=15,
        retry_handlers=retry_handlers(),
    )
    return SlackSink(hook.client)
