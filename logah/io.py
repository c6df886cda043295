"""Writing outputs: atomically, under one overwrite rule, with one set of permissions.

Everything the platform writes (checkpoints, predicted parameters, architecture files, reports,
run records) goes through these helpers:

* **atomic**: the content is written under a temporary name in the same folder and renamed into
  place, so an interrupted or failed command never leaves a half-written file or folder that a
  later command could mistake for a good one;
* **one overwrite rule** (``check_replaceable``): an existing output is refused unless
  ``overwrite`` is given, and even then a file never replaces a folder or the reverse. The final
  rename itself refuses to replace an existing output, so two commands racing for one path
  cannot both succeed with one silently replacing the other;
* **one set of permissions**: files ``0666`` and folders ``0777`` less the process umask, whatever
  library wrote them (``mkstemp``/``mkdtemp`` would leave ``0600``/``0700``);
* **valid JSON** (``dumps``): a non-finite number is written as ``null``, never as ``NaN``;
* **operating-system errors** on an output (``output_errors``) become one ``LogahError`` naming
  the path, whether the OS error reached Python as an ``OSError`` or inside a library's own
  exception (safetensors' ``SafetensorError: No space left on device``).

And reading what the platform wrote (or a user hands it): every JSON file is read with
``read_json`` and its fields through ``Fields``, which checks each value's JSON type where it is
read (``metadata`` an object, ``num_outputs`` an integer, ...), so a hand-edited file is one
``LogahError`` naming the file, the field, the type expected and the value found, never an
``AttributeError`` deep in a library.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import math
import os
import shutil
import tempfile
import types
import typing
from pathlib import Path
from typing import Callable, Iterator

from logah.errors import LogahError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


def _library_io_errors() -> tuple[type, ...]:
    """Exception types that libraries raise for what is an operating-system error underneath
    (a full disk, a file over the size limit): safetensors reports its writes' failures as
    ``SafetensorError``, not as ``OSError``."""
    from safetensors import SafetensorError

    return (SafetensorError,)


@contextlib.contextmanager
def output_errors(path: str | Path) -> Iterator[None]:
    """Turn an operating-system error raised while writing ``path`` into one ``LogahError``
    naming the path that failed (no space, no permission, a parent that is a file, ...)."""
    try:
        yield
    except OSError as err:
        reason = err.strerror or str(err)
        if isinstance(err, (FileExistsError, NotADirectoryError)):
            blocking = next((p for p in Path(path).parents if p.exists() and not p.is_dir()), None)
            if blocking is not None:
                reason = f"{blocking} is a file, not a folder"
        raise LogahError(f"cannot write {path}: {reason}") from None
    except _library_io_errors() as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise LogahError(f"cannot write {path}: {reason}") from None


def output_path(text: str) -> str:
    """The ``type`` of every output option (``--out``, ``--storage``, ...): an empty path names
    no output (the operating system would read it as the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path names no output; give a file or folder")
    return text


def check_replaceable(path: str | Path, kind: str, overwrite: bool, *, marker: str | None = None) -> None:
    """The overwrite rule of every command that writes: ``path`` (a ``"file"`` or a ``"folder"``
    output) may exist only with ``overwrite``, and then only as the same kind (and, for a folder,
    as ``check_may_replace`` allows). An empty folder counts as absent."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    is_dir = path.is_dir()
    if is_dir != (kind == "folder"):
        raise LogahError(f"output {path} exists and is {'a folder' if is_dir else 'not a folder'}; "
                         f"this command writes a {kind} there")
    if is_dir and not any(path.iterdir()):
        return
    if not overwrite:
        raise LogahError(f"output {path} already exists (use --overwrite to replace it)")
    if is_dir:
        check_may_replace(path, marker)


def check_may_replace(path: Path, marker: str | None) -> None:
    """``--overwrite`` removes everything in the folder ``path``: never the current folder or a
    folder holding it (``--out . --overwrite`` would empty the user's working folder), and, with
    ``marker`` (a file this command always writes), only a folder holding that file: one that
    does not is not an earlier output of this command."""
    here, target = Path.cwd().resolve(), path.resolve()
    if target == here or target in here.parents:
        raise LogahError(f"--overwrite would remove {path}, which holds the current folder; "
                         f"give the output a folder of its own")
    if marker is not None and any(path.iterdir()) and not (path / marker).exists():
        raise LogahError(f"--overwrite would remove {path}, which does not look like this "
                         f"command's output (no {marker}); remove it yourself or choose another output")


def _set_modes(root: Path) -> None:
    os.chmod(root, DIR_MODE if root.is_dir() else FILE_MODE)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), DIR_MODE)
        for name in files:
            os.chmod(os.path.join(folder, name), FILE_MODE)


def _already_exists(path: Path) -> LogahError:
    return LogahError(f"output {path} already exists (another command wrote it meanwhile; "
                      f"use --overwrite to replace it)")


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = False, cache: bool = False,
               marker: str | None = None) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``path`` when the block succeeds.

    Without ``overwrite`` an existing non-empty ``path`` is an error, before and at the final
    rename. With ``overwrite`` an existing folder is replaced (the old one is removed only after
    the new one is complete). With ``cache`` (cache entries that any process may build), losing
    a race to another process that created ``path`` meanwhile is fine: theirs is kept.
    ``marker`` is a file the block always writes: a folder without it is not replaced
    (``check_may_replace``).
    """
    path = Path(path)
    if not cache:
        check_replaceable(path, "folder", overwrite, marker=marker)
    with output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        with output_errors(path):   # what the block writes into tmp is written to path
            yield tmp
            _set_modes(tmp)
            _rename_into_place(tmp, path, overwrite=overwrite, cache=cache)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _rename_into_place(tmp: Path, path: Path, *, overwrite: bool, cache: bool) -> None:
    if overwrite and path.is_dir() and any(path.iterdir()):
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.rename(tmp, path)   # replaces an empty folder, never a non-empty one or a file
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        if not cache:
            raise _already_exists(path) from None


def atomic_file(path: str | Path, write: Callable[[Path], None], *, overwrite: bool = True) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path`` (same suffix), then rename it into
    place. Without ``overwrite`` an existing ``path`` is refused, also at the rename (a hard link,
    which fails if another process created ``path`` meanwhile)."""
    path = Path(path)
    check_replaceable(path, "file", overwrite)
    with output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=path.suffix, dir=path.parent)
        os.close(fd)
    try:
        with output_errors(path):
            write(Path(tmp))
            os.chmod(tmp, FILE_MODE)
            if overwrite:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise _already_exists(path) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def _finite(value):
    """``value`` with every non-finite float replaced by None (JSON has no NaN or infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(value, indent: int | None = None) -> str:
    """Valid JSON for ``value``: non-finite numbers become ``null``."""
    return json.dumps(_finite(value), indent=indent, allow_nan=False)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    atomic_file(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, dumps(obj, indent=2) + "\n")


def read_json(path: str | Path, what: str) -> dict:
    """Read a JSON object; a missing or malformed file is a ``LogahError`` naming ``what``."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise LogahError(f"{what}: {path} not found") from None
    except IsADirectoryError:
        raise LogahError(f"{what}: {path} is a folder, not a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LogahError(f"{what}: {path} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise LogahError(f"{what}: {path} must hold a JSON object")
    return value


_JSON_TYPES = {dict: "a JSON object", list: "a list", str: "a string", bool: "true or false",
               int: "an integer", float: "a number"}


def json_type(value) -> str:
    """What ``value`` is, in a user's words: ``"no" (a string)``, ``null``, ``[...] (a list)``."""
    if value is None:
        return "null"
    kind = next((name for t, name in _JSON_TYPES.items()
                 if isinstance(value, t) and not (t is int and isinstance(value, bool))), None)
    shown = json.dumps(value, default=str)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"{shown} ({kind or type(value).__name__})"


def is_json_type(value, kind: type) -> bool:
    """Whether ``value`` is a JSON value of ``kind`` (``dict``, ``list``, ``str``, ``bool``,
    ``int`` or ``float``): a bool is not a number, an integer is a number (``float``)."""
    if kind in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if kind is float else kind)


class Fields:
    """Typed reading of a JSON object that came from a file: ``get`` returns a field after
    checking its JSON type, so a wrong type is one ``LogahError`` naming the file, the field,
    the type expected and the value found, at the place the field is read.

        meta = Fields(read_json(path, "GHN checkpoint config"), path).object("metadata")
        meta.object("trained_on").get("num_outputs", int)   # None when absent or null

    ``where`` names the file (and, for a nested object, the path of fields to it)."""

    _REQUIRED = object()

    def __init__(self, record, where: str | Path, prefix: str = ""):
        if not isinstance(record, dict):
            what = f"{prefix.rstrip('.')} must be" if prefix else "expected"
            raise LogahError(f"{where}: {what} a JSON object, got {json_type(record)}")
        self.record, self.where, self.prefix = record, str(where), prefix

    def get(self, name: str, kind: type, default=None, *, required: bool = False):
        """The field ``name``, which must be of ``kind`` (see ``is_json_type``); ``default``
        when it is absent or null, unless ``required``."""
        value = self.record.get(name)
        if value is None:
            if required:
                raise LogahError(f"{self.where}: {self.prefix}{name} is missing "
                                 f"(expected {_JSON_TYPES[kind]})")
            return default
        if not is_json_type(value, kind):
            raise LogahError(f"{self.where}: {self.prefix}{name} must be {_JSON_TYPES[kind]}, "
                             f"got {json_type(value)}")
        return value

    def check(self, schema: dict[str, type], required: tuple[str, ...] = ()) -> dict:
        """Check every field that ``schema`` names (field -> JSON type; those in ``required``
        must be there) and return the record: for a file whose fields are read in many places."""
        for name, kind in schema.items():
            self.get(name, kind, required=name in required)
        return self.record

    def object(self, name: str) -> "Fields":
        """The nested object ``name`` (empty when absent or null), itself read as ``Fields``."""
        return Fields(self.get(name, dict, {}), self.where, f"{self.prefix}{name}.")


@contextlib.contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Name ``path`` in a ``LogahError`` raised while its content is interpreted (a record
    built from it that fails validation), so the user knows which file to fix."""
    try:
        yield
    except LogahError as err:
        if str(path) in str(err):
            raise
        raise LogahError(f"{path}: {err}") from None


@dataclasses.dataclass(frozen=True)
class Interval:
    """Allowed values of a numeric config field, e.g. ``Interval(0, low_open=True)`` for > 0."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return (f"in {'(' if self.low_open else '['}{self.low:g}, "
                f"{self.high:g}{')' if self.high_open else ']'}")


POSITIVE = Interval(0, low_open=True)
NON_NEGATIVE = Interval(0)
FRACTION = Interval(0, 1, high_open=True)       # [0, 1): decays, momenta
SEED = Interval(0, 2**32 - 1)                    # what numpy and torch both accept


class ConfigRecord:
    """Mixin for the config dataclasses that are stored as JSON: ``to_dict``, a validating
    ``from_dict``, and the one check of every numeric field (``validate``), which the CLI, the
    Python API and the studies all go through.

    A subclass names itself in error messages (``record_name``), lists its fields that are
    config records themselves (``nested_records``: field name -> class) and the allowed range of
    its numeric fields (``bounds``: field name -> ``Interval``). Every ``int`` / ``float`` field
    must hold a finite number of its type (an ``int`` is a ``float`` too; a bool is neither);
    a subclass's own ``validate`` calls ``super().validate()`` and then checks what relates
    fields to each other.
    """

    record_name = "config"
    nested_records: dict[str, type] = {}
    bounds: dict[str, Interval] = {}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, ConfigRecord):
                value.validate()
                continue
            kind = hints.get(f.name)
            if kind not in (int, float):
                self._check_type(f.name, value, kind)
                continue
            allowed = (int,) if kind is int else (int, float)
            if isinstance(value, bool) or not isinstance(value, allowed):
                expected = "an integer" if kind is int else "a number"
                raise LogahError(f"{self.record_name}: {f.name} must be {expected}, got {value!r}")
            if not math.isfinite(value):
                raise LogahError(f"{self.record_name}: {f.name} must be a finite number, got {value!r}")
            interval = self.bounds.get(f.name)
            if interval is not None and value not in interval:
                raise LogahError(f"{self.record_name}: {f.name} must be {interval}, got {value!r}")

    def _check_type(self, name: str, value, kind) -> None:
        """A non-numeric field holds its annotated JSON type: ``str``, ``bool``, ``dict``,
        ``list``, one of a ``Literal``'s values, or ``X | None``."""
        options = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) \
            else (kind,)
        if value is None and type(None) in options:
            return
        for option in options:
            if typing.get_origin(option) is typing.Literal:
                if value in typing.get_args(option):
                    return
            elif option in _JSON_TYPES:
                if is_json_type(value, option):
                    return
            else:
                return        # a type this check does not know: the record's own validate's
        expected = " or ".join(" or ".join(repr(v) for v in typing.get_args(o))
                               if typing.get_origin(o) is typing.Literal
                               else "null" if o is type(None) else _JSON_TYPES[o] for o in options)
        raise LogahError(f"{self.record_name}: {name} must be {expected}, got {value!r}")

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
        config.validate()
        return config
