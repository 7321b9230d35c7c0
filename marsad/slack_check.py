"""``marsad slack test``: one message through the Slack setup Marsad would use, and exactly
what is wrong when it fails: the base URL, the token, its scopes or the channel.

Which setup: the CLI's variables (``MARSAD_SLACK_TOKEN`` and ``MARSAD_SLACK_BASE_URL``, what
``marsad deliver`` uses) when the token is set; otherwise the Airflow Slack connection
(``ops.slack_conn_id``, default ``slack_api_default``) through the Slack provider's
``SlackHook``, exactly as the DAGs build their client: from an ``AIRFLOW_CONN_*`` variable or
from the metadata database of the Airflow that ``make run`` prepared.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

# What Marsad calls, and the scope each call needs (public channels; private ones need the
# groups:* twin). alerts/delivery.SlackSink is the caller.
SCOPES = {
    "chat:write": "post alerts and edit them when they resolve (chat.postMessage, chat.update)",
    "channels:read": "turn a channel name into its id (conversations.list)",
    "channels:history": "find a message already posted, so a retry never posts twice (conversations.history/replies)",
    "files:write": "attach the digest chart (files.uploadV2)",
}

# Slack's error codes, by what the user has to fix.
TOKEN_ERRORS = {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "not_allowed_token_type",
                "invalid_token", "no_permission", "org_login_required", "ekm_access_denied", "two_factor_setup_required"}
CHANNEL_ERRORS = {"channel_not_found", "not_in_channel", "is_archived", "restricted_action", "restricted_action_read_only_channel",
                  "restricted_action_thread_only_channel", "restricted_action_non_threadable_channel", "team_access_not_granted"}


@dataclass
class Setup:
    client: WebClient
    origin: str  # where the token and base URL came from, for people


@dataclass
class Report:
    origin: str = ""
    base_url: str = ""
    lines: list[tuple[str, bool, str]] = field(default_factory=list)  # (check, ok, detail)

    @property
    def ok(self) -> bool:
        return bool(self.lines) and all(ok for _, ok, _ in self.lines)

    def add(self, check: str, ok: bool, detail: str) -> bool:
        self.lines.append((check, ok, detail))
        return ok


class SetupError(Exception):
    """No usable Slack setup: nothing configured, or the connection cannot be read."""


def resolve(conn_id: str, airflow_home: Path | None = None, timeout: int = 10) -> Setup:
    """The client the CLI's variables, or else the Airflow connection ``conn_id``, give."""
    token = os.environ.get("MARSAD_SLACK_TOKEN")
    if token:
        base = os.environ.get("MARSAD_SLACK_BASE_URL")
        client = WebClient(token=token, base_url=base or WebClient.BASE_URL, timeout=timeout)
        return Setup(client, "MARSAD_SLACK_TOKEN" + (" and MARSAD_SLACK_BASE_URL" if base else "") + " (the CLI's variables)")
    if airflow_home is not None and "AIRFLOW_HOME" not in os.environ:
        # The metadata database of the Airflow `make run` prepared holds connections added in
        # its UI or with `airflow connections add`.
        os.environ["AIRFLOW_HOME"] = str(airflow_home)
        os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{airflow_home}/airflow.db")
    try:
        from airflow.providers.slack.hooks.slack import SlackHook
    except ImportError as exc:  # pragma: no cover - the provider is a dependency
        raise SetupError(f"the Slack provider cannot be imported: {exc}") from None
    try:
        client = SlackHook(slack_conn_id=conn_id, timeout=timeout).client
    except Exception as exc:  # AirflowNotFoundException, a malformed connection, no database
        env = f"AIRFLOW_CONN_{conn_id.upper()}"
        raise SetupError(
            f"no Slack setup: MARSAD_SLACK_TOKEN is not set and the Airflow connection {conn_id!r} cannot be read "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); define it as ${env} or in "
            "Airflow (Admin > Connections), see the README's Slack section"
        ) from None
    return Setup(client, f"Airflow connection {conn_id!r}")


def _error(exc: SlackApiError) -> tuple[str, dict]:
    data = exc.response.data if isinstance(exc.response.data, dict) else {}
    return str(data.get("error") or exc.response.status_code), data


def check(setup: Setup, channel: str, now: datetime | None = None) -> Report:
    """auth.test, then one chat.postMessage to ``channel``; each failure named by what to fix."""
    client = setup.client
    rep = Report(origin=setup.origin, base_url=client.base_url)
    try:
        auth = client.auth_test()
    except SlackApiError as exc:
        code, _ = _error(exc)
        if code in TOKEN_ERRORS:
            rep.add("token", False, f"Slack refused the token ({code}): set a valid bot token (xoxb-...) in {setup.origin}")
        else:
            rep.add("base URL", False, f"{client.base_url} answered auth.test with {code}: is this Slack's Web API?")
        return rep
    except (SlackClientError, OSError) as exc:
        rep.add("base URL", False, f"cannot reach {client.base_url} ({type(exc).__name__}: {exc}); check base_url in {setup.origin}")
        return rep
    rep.add("base URL", True, f"{client.base_url} answers")
    who = " ".join(str(auth.get(k)) for k in ("user", "team") if auth.get(k)) or str(auth.get("user_id", ""))
    rep.add("token", True, f"valid ({who})")
    headers = {k.lower(): v for k, v in (auth.headers or {}).items()}
    granted = headers.get("x-oauth-scopes")
    granted = granted[0] if isinstance(granted, list) else granted
    if granted is not None:
        have = {s.strip() for s in granted.split(",") if s.strip()}
        missing = [s for s in SCOPES if s not in have and s.replace("channels:", "groups:") not in have]
        rep.add("scopes", not missing, "all granted" if not missing else
                "missing " + "; ".join(f"{s} (to {SCOPES[s]})" for s in missing) + ": add them to the Slack app and reinstall it")
    now = now or datetime.now(timezone.utc)
    try:
        client.chat_postMessage(channel=channel, text=f"Marsad test message ({now:%Y-%m-%d %H:%M} UTC): Slack delivery works.")
    except SlackApiError as exc:
        code, data = _error(exc)
        if code == "missing_scope":
            rep.add("scopes", False, f"posting needs {data.get('needed', '?')} (the token has {data.get('provided', '?')})")
        elif code in CHANNEL_ERRORS:
            hint = " (invite the bot: /invite @<app> in that channel)" if code == "not_in_channel" else ""
            rep.add("channel", False, f"{channel}: {code}{hint}")
        elif code in TOKEN_ERRORS:
            rep.add("token", False, f"posting refused ({code})")
        else:
            rep.add("channel", False, f"{channel}: chat.postMessage failed with {code}")
        return rep
    except (SlackClientError, OSError) as exc:
        rep.add("channel", False, f"{channel}: the post did not complete ({type(exc).__name__}: {exc})")
        return rep
    rep.add("channel", True, f"posted a test message to {channel}")
    return rep


def format_report(rep: Report) -> str:
    out = [f"Slack setup: {rep.origin}" + (f", base URL {rep.base_url}" if rep.base_url else "")]
    out += [f"  {'ok    ' if ok else 'FAILED'}  {name}: {detail}" for name, ok, detail in rep.lines]
    out.append("Slack works." if rep.ok else "Slack does not work yet: fix the FAILED line above.")
    return "\n".join(out)
