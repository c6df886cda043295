"""Command-line settings of the commands that run a config (``train-ghn``, ``finetune``,
``evaluate``): ``--config FILE``, ``--set NAME=VALUE`` and short aliases, one syntax.

Every setting of the run's config is reachable as ``--set a.b=VALUE`` (``logah.settings``), as
in the studies. The flags users rely on (``--steps``, ``--lr``, ``--rank``, ...) are aliases of
one dotted name each (``Alias``), generated from the config's fields: an alias's type, and the
default its help shows, are the field's own, so no default is written twice. ``--config FILE``
reads a JSON object of settings (dotted names, or a whole record such as a run's own
``train_config.json``). Settings apply in that order (file, aliases, ``--set``); naming one
setting twice is an error, not a silent override.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logah.errors import LogahError
from logah.settings import assignments


@dataclass(frozen=True)
class Alias:
    """``flag`` stands for ``--set path=VALUE``; a bool field's flag sets the opposite of its
    default (``--no-final-test``)."""

    flag: str
    path: str
    help: str
    choices: tuple | None = None
    default: str | None = None      # what the help calls the default, when not the field's

    @property
    def dest(self) -> str:
        return "alias_" + self.flag.lstrip("-").replace("-", "_")


def field_of(config_class: type, path: str) -> tuple[dataclasses.Field, Any]:
    """The dataclass field a dotted ``path`` names, through the nested config records, and its
    type."""
    *parents, leaf = path.split(".")
    cls = config_class
    for name in parents:
        cls = cls.nested_records[name]
    return {f.name: f for f in dataclasses.fields(cls)}[leaf], typing.get_type_hints(cls)[leaf]


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def add_setting_options(parser: argparse.ArgumentParser, config_class: type,
                        aliases: list[Alias]) -> None:
    """``--config``, ``--set`` and the aliases, typed and documented from ``config_class``."""
    parser.add_argument("--config", metavar="FILE.json",
                        help="settings from a JSON object (dotted names, or a run's own config file)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="any setting of the run's config by dotted name, e.g. lr=0.01")
    for alias in aliases:
        field, kind = field_of(config_class, alias.path)
        default = _default(field)
        if kind is bool:
            parser.add_argument(alias.flag, dest=alias.dest, action="store_const",
                                const=not default, default=None,
                                help=f"{alias.help} (= --set {alias.path}={str(not default).lower()})")
            continue
        shown = "" if default is None or dataclasses.is_dataclass(default) or isinstance(
            default, (dict, list)) else f"; default {default}"
        shown = f"; default {alias.default}" if alias.default else shown
        parser.add_argument(alias.flag, dest=alias.dest, default=None, choices=alias.choices,
                            metavar=None if alias.choices else alias.path.split(".")[-1].upper(),
                            type=kind if kind in (int, float) else str,
                            help=f"{alias.help} (= --set {alias.path}=VALUE{shown})")


def settings_from_args(args: argparse.Namespace, aliases: list[Alias]) -> dict[str, Any]:
    """The settings the command line gives, in the order they apply (module docstring)."""
    settings: dict[str, Any] = {}

    def add(name: str, value: Any, source: str) -> None:
        if name in settings:
            raise LogahError(f"{source} sets {name}, which is already set (give each setting once)")
        settings[name] = value

    if args.config:
        for name, value in _read_settings_file(Path(args.config)).items():
            add(name, value, f"--config {args.config}")
    for alias in aliases:
        value = getattr(args, alias.dest)
        if value is not None:
            add(alias.path, value, alias.flag)
    for name, value in assignments(args.set, "--set").items():
        add(name, value, f"--set {name}")
    return settings


def _read_settings_file(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise LogahError(f"--config {path}: no such file") from None
    except (IsADirectoryError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LogahError(f"--config {path}: not a JSON file ({err})") from None
    if not isinstance(record, dict):
        raise LogahError(f"--config {path}: must hold a JSON object of settings")
    return record
