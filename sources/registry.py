"""The feed registry: ``sources/feeds.yaml``, edited by admins, validated on load."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from sources.configfile import ConfigError, load_yaml, parse_duration, slack_channel, validate, validate_items

DEFAULT_FEEDS = Path(__file__).with_name("feeds.yaml")
Duration = Annotated[int, BeforeValidator(parse_duration)]
Channel = Annotated[str, BeforeValidator(slack_channel)]
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")


class Feed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str = Field(min_length=1)
    lang: Literal["ar", "en"]
    url: str
    interval: Duration = 900
    enabled: bool = True
    # Admiralty-style source reliability (A completely reliable ... F cannot be judged).
    reliability: Literal["A", "B", "C", "D", "E", "F"] = "F"
    covers: list[str] = Field(default_factory=list)
    homepage: str | None = None
    notes: str | None = None

    @field_validator("id")
    @classmethod
    def _id_shape(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("ids are 2-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit")
        return v

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v.strip(), re.I):
            raise ValueError("must be an http:// or https:// URL")
        return v.strip()


class Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    interval: Duration = 900
    reliability: Literal["A", "B", "C", "D", "E", "F"] = "F"


class HealthSettings(BaseModel):
    """When a source's health pages ops (the ``health:`` section of feeds.yaml; see sources/health.py)."""

    model_config = ConfigDict(extra="forbid")
    down_after: Duration = 6 * 3600  # every poll failing for this long: source down
    silent_factor: float = Field(default=8.0, gt=1)  # nothing new for this many times its usual gap: silent
    silent_min: Duration = 12 * 3600  # ... and never sooner than this
    min_items: int = Field(default=10, ge=2)  # items in 30 days needed to know a source's usual rate
    channel: Channel = "#marsad-ops"
    repeat: Duration = 86400


class Registry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    defaults: Defaults = Field(default_factory=Defaults)
    health: HealthSettings = Field(default_factory=HealthSettings)
    feeds: list[Feed]

    def enabled(self) -> list[Feed]:
        return [f for f in self.feeds if f.enabled]

    def get(self, feed_id: str) -> Feed:
        for f in self.feeds:
            if f.id == feed_id:
                return f
        raise KeyError(feed_id)


def feeds_path() -> Path:
    """paths.feeds as marsad.settings resolves it (``MARSAD_FEEDS`` > make run > settings.yaml)."""
    from marsad.settings import current

    return current("paths.feeds").path("paths.feeds")


def load_registry(path: str | Path | None = None) -> Registry:
    """Load and validate the registry; ``ConfigError`` lists every problem with file:line: field."""
    doc = load_yaml(path or feeds_path())
    data = doc.data
    if not isinstance(data, dict):
        raise ConfigError([doc.error((), "expected a mapping with a 'feeds' list")])
    # Apply defaults before validation so each feed validates on its own.
    defaults = data.get("defaults") or {}
    if isinstance(defaults, dict) and isinstance(data.get("feeds"), list):
        data = dict(data)
        data["feeds"] = [
            {**{k: v for k, v in defaults.items() if k in ("interval", "reliability")}, **f} if isinstance(f, dict) else f
            for f in data["feeds"]
        ]
    extra = sorted(set(data) - {"defaults", "health", "feeds"})
    problems = [doc.error((k,), "unknown field (check the spelling)") for k in extra]
    if not isinstance(data.get("feeds"), list):
        raise ConfigError(problems + [doc.error(("feeds",), "expected a list of feeds")])
    defaults_model = validate(doc, Defaults, data.get("defaults") or {}, ("defaults",))
    try:
        health = validate(doc, HealthSettings, data.get("health") or {}, ("health",))
    except ConfigError as exc:
        problems += exc.problems
        health = HealthSettings()
    feeds, bad = validate_items(doc, Feed, data["feeds"], ("feeds",))
    problems += bad
    seen: dict[str, int] = {}
    for i, f in enumerate(data["feeds"]):
        fid = f.get("id") if isinstance(f, dict) else None
        if fid in seen:
            problems.append(doc.error(("feeds", i, "id"), f"duplicate id {fid!r} (also feeds.{seen[fid]})"))
        elif fid is not None:
            seen[fid] = i
    if problems:
        raise ConfigError(problems)
    return Registry(defaults=defaults_model, health=health, feeds=feeds)
