"""Atomic writes: outputs appear whole or not at all.

Everything the platform writes (checkpoints, predicted parameters, architecture files, reports)
goes through these helpers: the content is written under a temporary name in the same folder and
renamed into place, so an interrupted or failed command never leaves a half-written file or
folder that a later command could mistake for a good one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from logah.errors import LogahError


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = False, cache: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``path`` when the block succeeds.

    With ``overwrite`` an existing ``path`` is replaced (the old one is removed only after the
    new one is complete); without it, an existing non-empty ``path`` is an error. With ``cache``
    (cache entries that any process may build), losing a race to another process that created
    ``path`` meanwhile is fine: theirs is kept and ours discarded.
    """
    path = Path(path)
    if path.exists() and not (overwrite or cache) and (not path.is_dir() or any(path.iterdir())):
        raise LogahError(f"output {path} already exists (use --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    tmp.chmod(0o755)   # mkdtemp's 0700 would leave outputs unreadable to other users
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if cache:
        try:
            os.replace(tmp, path)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not path.exists():
                raise
        return
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        path.rename(old)
    tmp.rename(path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


def atomic_file(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path`` (same suffix), then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    atomic_file(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path, what: str) -> dict:
    """Read a JSON object; a missing or malformed file is a ``LogahError`` naming ``what``."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise LogahError(f"{what}: {path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LogahError(f"{what}: {path} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise LogahError(f"{what}: {path} must hold a JSON object")
    return value


class ConfigRecord:
    """Mixin for the config dataclasses that are stored as JSON: ``to_dict`` and a validating
    ``from_dict``. A subclass names itself in error messages (``record_name``) and lists its
    fields that are config records themselves (``nested_records``: field name -> class)."""

    record_name = "config"
    nested_records: dict[str, type] = {}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: dict):
        """Build and validate from a JSON record; unknown or missing fields are a ``LogahError``."""
        what = cls.record_name
        if not isinstance(record, dict):
            raise LogahError(f"{what}: expected a JSON object, got {type(record).__name__}")
        record = dict(record)
        unknown = sorted(set(record) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise LogahError(f"{what}: unknown fields {unknown}")
        for name, kind in cls.nested_records.items():
            if name in record:
                record[name] = kind.from_dict(record[name])
        try:
            config = cls(**record)
        except TypeError as err:
            raise LogahError(f"{what}: {err}") from None
        if hasattr(config, "validate"):
            config.validate()
        return config
