"""`marsad slack test`: one message through the configured Slack setup, and what fails named
(base URL, token, scopes, channel), against the loopback Slack stand-in."""
import json
import os
import subprocess
import sys

from conftest import free_port

MARSAD = [sys.executable, "-m", "marsad.cli"]


def slack_test(tmp_path, *args, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MARSAD_SLACK", "AIRFLOW_CONN_", "AIRFLOW_HOME"))}
    base.update(MARSAD_AIRFLOW_HOME=str(tmp_path / "airflow"), **env)
    return subprocess.run([*MARSAD, "slack", "test", *args], capture_output=True, text=True, env=base, timeout=120)


def test_the_cli_variables_post_one_message_to_the_ops_channel(slack, tmp_path):
    res = slack_test(tmp_path, MARSAD_SLACK_TOKEN=slack.state.token, MARSAD_SLACK_BASE_URL=slack.base_url)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines()[0] == f"Slack setup: MARSAD_SLACK_TOKEN and MARSAD_SLACK_BASE_URL (the CLI's variables), base URL {slack.base_url}"
    assert "ok      channel: posted a test message to #marsad-ops" in res.stdout and res.stdout.rstrip().endswith("Slack works.")
    (post,) = slack.posts()
    assert post["channel"] == "#marsad-ops" and post["text"].startswith("Marsad test message")


def test_the_airflow_connection_with_a_base_url_is_what_the_dags_use(slack, tmp_path):
    conn = json.dumps({"conn_type": "slack", "password": slack.state.token, "extra": {"base_url": slack.base_url}})
    res = slack_test(tmp_path, "--channel", "#marsad-alerts", AIRFLOW_CONN_SLACK_API_DEFAULT=conn)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("Slack setup: Airflow connection 'slack_api_default'")
    assert [p["channel"] for p in slack.posts()] == ["#marsad-alerts"]


def test_each_failure_is_named_by_what_to_fix(slack, tmp_path):
    ok_env = dict(MARSAD_SLACK_TOKEN=slack.state.token, MARSAD_SLACK_BASE_URL=slack.base_url)
    res = slack_test(tmp_path, **{**ok_env, "MARSAD_SLACK_TOKEN": "xoxb-wrong"})
    assert res.returncode == 1 and "FAILED  token: Slack refused the token (invalid_auth)" in res.stdout

    res = slack_test(tmp_path, "--channel", "#no-such-channel", **ok_env)
    assert res.returncode == 1 and "FAILED  channel: #no-such-channel: channel_not_found" in res.stdout
    assert "ok      token: valid" in res.stdout

    dead = f"http://127.0.0.1:{free_port()}/api/"
    res = slack_test(tmp_path, **{**ok_env, "MARSAD_SLACK_BASE_URL": dead})
    assert res.returncode == 1 and f"FAILED  base URL: cannot reach {dead}" in res.stdout
    assert slack.state.messages == {}  # nothing reached a channel

    res = slack_test(tmp_path)  # nothing configured at all
    assert res.returncode == 1
    assert "no Slack setup: MARSAD_SLACK_TOKEN is not set and the Airflow connection 'slack_api_default' cannot be read" in res.stderr
    assert "$AIRFLOW_CONN_SLACK_API_DEFAULT" in res.stderr


def test_missing_scopes_are_named_with_what_marsad_needs_them_for(slack, tmp_path):
    ok_env = dict(MARSAD_SLACK_TOKEN=slack.state.token, MARSAD_SLACK_BASE_URL=slack.base_url)
    slack.state.scopes = ["chat:write", "channels:read"]  # no history, no files
    res = slack_test(tmp_path, **ok_env)
    assert res.returncode == 1
    (line,) = [x for x in res.stdout.splitlines() if "scopes:" in x]
    assert line.strip().startswith("FAILED  scopes: missing channels:history (to find a message already posted")
    assert "files:write (to attach the digest chart" in line and "reinstall it" in line
    assert "ok      channel: posted a test message to #marsad-ops" in res.stdout  # posting itself is allowed

    slack.state.scopes = ["channels:read"]  # not even chat:write: Slack's missing_scope answer is named
    res = slack_test(tmp_path, **ok_env)
    assert res.returncode == 1 and "FAILED  scopes: posting needs chat:write (the token has channels:read)" in res.stdout
