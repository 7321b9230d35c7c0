"""The admin-edited files as the pipeline steps read them: a broken file never stops a step.

A typo in ``feeds.yaml``, ``rules.yaml`` or an indicator file used to abort the step that
read it, and with it every alert waiting for delivery. Each step now reads its files through
``Guard``:

* a file that validates is used, and a copy of it is kept as the *last good* one
  (``last-good/`` next to the warehouse);
* a file that does not is reported (``file:line: field: message``, in the log and, once per
  file and error, to ops through the outbox: ``alerts.ops.report_config_errors``), and the
  step goes on with the last good copy, or without the broken part when there is none yet:
  no registry sync (the ``sources`` table keeps the last one), no classification (articles
  wait, unclassified, for a good pack), no rule evaluation (delivery still runs).

``marsad config check`` stays strict: it reads the files themselves and fails on errors.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sources.configfile import ConfigError

log = logging.getLogger("marsad.config")


@dataclass
class Problem:
    file: str  # the file (or indicator directory) as configured
    error: str  # ConfigError text: one "file:line: field: message" per line
    fallback: str  # what the step did instead


@dataclass
class Guard:
    """Loads config through ``load`` and falls back to the last good copies under ``store``."""

    store: Path
    problems: list[Problem] = field(default_factory=list)
    fine: set[str] = field(default_factory=set)  # files read without error in this step

    def read(self, name: str, path: Path, load: Callable[[Path], Any], without: str) -> Any | None:
        """``load(path)``; on ConfigError, ``load`` of the last good copy of ``path`` (a file or a
        directory of *.yaml), or None when there is none (``without`` says what the step skips)."""
        path = Path(path)
        good = self.store / name
        copy = good / name if path.is_dir() or (good / name).is_dir() else good / f"{name}.yaml"
        try:
            value = load(path)
        except ConfigError as exc:
            if copy.exists():
                try:
                    value = load(copy)
                except ConfigError as stale:  # a copy from an older release may not validate any more
                    log.error("the last good copy %s does not load either: %s", copy, stale)
                else:
                    self._problem(path, exc, f"using the last good copy ({_age(copy)})")
                    return value
            self._problem(path, exc, f"no usable last good copy: {without}")
            return None
        self.fine.add(str(path))
        try:
            _keep(path, good, copy)
        except OSError as exc:  # never fail a step for want of a backup copy
            log.warning("cannot keep a last good copy of %s in %s: %s", path, good, exc)
        return value

    def _problem(self, path: Path, exc: ConfigError, fallback: str) -> None:
        log.error("%s is invalid (%s); %s", path, "; ".join(exc.problems[:5]), fallback)
        self.problems.append(Problem(str(path), str(exc), fallback))


def _age(good: Path) -> str:
    minutes = int((time.time() - good.stat().st_mtime) // 60)
    return f"saved {minutes} min ago" if minutes < 120 else f"saved {minutes // 60} h ago"


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha1()
    for p in paths:
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _keep(path: Path, good: Path, copy: Path) -> None:
    """Copy ``path`` to ``copy`` (in ``good``) when it changed, atomically. An indicator directory
    goes with its sibling ``gazetteers/`` (what ``Classifier.load`` reads beside it), the whole
    set swapped in at once."""
    if not path.is_dir():
        good.mkdir(parents=True, exist_ok=True)
        target = copy
        data = path.read_bytes()
        if not (target.is_file() and target.read_bytes() == data):
            tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return
    sets = {copy.name: sorted(path.glob("*.yaml")), "gazetteers": sorted((path.parent / "gazetteers").glob("*.yaml"))}
    digest = _digest([p for files in sets.values() for p in files])
    if (good / ".digest").is_file() and (good / ".digest").read_text() == digest:
        return
    # Names of this process's own: parallel fetch tasks may keep the same copy at once.
    tmp, old = good.with_name(f"{good.name}.{os.getpid()}.tmp"), good.with_name(f"{good.name}.{os.getpid()}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub, files in sets.items():
        (tmp / sub).mkdir(parents=True)
        for p in files:
            shutil.copy2(p, tmp / sub / p.name)
    (tmp / ".digest").write_text(digest)
    shutil.rmtree(old, ignore_errors=True)
    if good.exists():
        os.replace(good, old)
    os.replace(tmp, good)
    shutil.rmtree(old, ignore_errors=True)
