"""Admin-edited YAML files, validated with errors that name file, line and field.

``load_yaml`` keeps the line of every mapping key and sequence item while it builds
plain Python objects, and ``validate`` runs a pydantic model over the data and turns
each validation error into ``file:line: field: message``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]


class ConfigError(ValueError):
    """One or more problems in a config file; ``str()`` lists them one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class _LineLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when PyYAML has it
    """SafeLoader that refuses duplicate keys (a common silent editing mistake)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key]})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class Document:
    """Parsed YAML with a map from field path to line number."""

    def __init__(self, path: Path, data: Any, lines: dict[Loc, int]):
        self.path = path
        self.data = data
        self.lines = lines

    def line_of(self, loc: Loc) -> int:
        """Line of the deepest known ancestor of ``loc`` (1-based)."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), 1)

    def error(self, loc: Loc, message: str) -> str:
        field = ".".join(str(p) for p in loc) or "(top level)"
        return f"{self.path}:{self.line_of(loc)}: {field}: {message}"


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[loc + (key,)] = key_node.start_mark.line + 1
            _walk(value_node, loc + (key,), lines)
            lines[loc + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, loc + (i,), lines)


def load_yaml(path: str | Path) -> Document:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}:0: (file): cannot read: {exc.strerror or exc}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Name the line of the bad byte (a file cut inside an Arabic letter, a cp1256 save):
        # "line 0" sent admins looking nowhere.
        line = raw.count(b"\n", 0, exc.start) + 1
        what = "ends inside a character (truncated?)" if exc.reason == "unexpected end of data" else f"byte 0x{raw[exc.start]:02x} is not UTF-8"
        raise ConfigError([f"{path}:{line}: (file): not UTF-8: {what} (byte {exc.start})"]) from None
    loader = _LineLoader(text)
    try:  # one parse: the node tree gives the line numbers, then the data is built from it
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else text.count("\n") + 1
        raise ConfigError([f"{path}:{line}: (syntax): {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}:{text.count(chr(10)) + 1}: (syntax): {exc}"]) from None
    except ValueError as exc:  # a scalar that looks like a date but is none (2025-13-01)
        line = _bad_scalar_line(node) if node is not None else 0
        raise ConfigError([f"{path}:{line}: (value): {exc}"]) from None
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return Document(path, data, lines)


def _bad_scalar_line(node: yaml.Node) -> int:
    """The line of the first scalar under ``node`` that PyYAML cannot construct."""
    loader = yaml.SafeLoader("")
    stack = [node]
    while stack:
        n = stack.pop(0)
        if isinstance(n, yaml.ScalarNode):
            try:
                loader.construct_object(n)
            except ValueError:
                return n.start_mark.line + 1
        elif isinstance(n, yaml.MappingNode):
            stack.extend(v for pair in n.value for v in pair)
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
    return 0


def validate(doc: Document, model: type[M], data: Any = None, loc_prefix: Loc = ()) -> M:
    """Validate ``data`` (default: the whole document) against ``model``."""
    data = doc.data if data is None else data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = loc_prefix + tuple(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")  # pydantic's prefix for our own checks says nothing
            if err["type"] == "extra_forbidden":
                msg = "unknown field (check the spelling)"
            problems.append(doc.error(loc, msg))
        raise ConfigError(problems) from None


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> int:
    """Seconds in a duration written as ``90s``, ``15m``, ``72h``, ``14d``, ``2w`` (or a number of seconds)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 15m, 72h or 14d")
    if isinstance(value, (int, float)):
        seconds = int(value)
    else:
        text = str(value).strip().lower()
        if not text or text[-1] not in _UNITS or not text[:-1].strip().replace(".", "", 1).isdigit():
            raise ValueError(f"{value!r} is not a duration like 15m, 72h or 14d")
        seconds = int(float(text[:-1]) * _UNITS[text[-1]])
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


_CHANNEL_NAME = re.compile(r"^#?[a-z0-9][a-z0-9_-]{0,79}$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")


def slack_channel(value: Any) -> str:
    """A Slack channel as Slack accepts it: ``#name`` (lowercase letters, digits, ``-``, ``_``;
    at most 80) or a channel id such as ``C024BE91L``. Catches typos such as ``#Marsad Alerts``
    before the first alert is left queued with ``channel_not_found``."""
    text = str(value).strip() if isinstance(value, str) else value
    if not isinstance(text, str) or not (_CHANNEL_NAME.match(text) or _CHANNEL_ID.match(text)):
        raise ValueError(
            f"{value!r} is not a Slack channel: write #name (lowercase letters, digits, '-' or '_') or a channel id like C024BE91L"
        )
    return text


SLACK_USER_GROUP = re.compile(r"^S[A-Z0-9]{2,}$")


def slack_actors(value: Any) -> str | None:
    """Who may act on alerts in Slack: a channel (``#name`` or an id: its members) or a user
    group id (``S…``); empty: None (the members of the channel the alert was posted in)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip()
    if SLACK_USER_GROUP.match(text):
        return text
    try:
        return slack_channel(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is neither a Slack channel (#name or an id like C024BE91L) nor a user group id (S0614TZR7, "
            "from the group's profile: Copy group ID)"
        ) from None


def format_duration(seconds: int) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def validate_items(doc: Document, model: type[M], items: list, loc_prefix: Loc) -> tuple[list[M], list[str]]:
    """Validate each item of a list on its own, so that one bad entry does not hide the others."""
    valid: list[M] = []
    problems: list[str] = []
    for i, item in enumerate(items):
        try:
            valid.append(validate(doc, model, item, loc_prefix + (i,)))
        except ConfigError as exc:
            problems.extend(exc.problems)
    return valid, problems
