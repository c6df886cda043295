"""One way to set a setting: ``NAME=VALUE`` on a config's record, by dotted name.

Every command and every study sets its config the same way. A dotted name addresses a field of a
config's JSON record (``TrainConfig.to_dict()``, ``FinetuneConfig.to_dict()``, a study's
``TrialConfig.to_dict()``), so every field is settable, nested ones included:

    logah train-ghn --set ghn.rank=8 --set space.num_archs=50 --out runs/ghn
    logah finetune --target vit-cpu-target --set lr=0.01 --set data.batch_size=32 --out runs/ft
    python studies/rank_sweep.py --set ghn_training.steps=100 --set finetune.lr=0.02

A value is read as JSON-ish text (``parse_value``: a number, true/false, none, or else a
string). A whole record may be named by its preset name: a field called ``ghn`` takes a GHN
preset (``logah-cpu``), ``space`` an architecture space (``vits-cpu``), ``target`` a target
(``vit-cpu-target`` or an architecture ``.json``). A name that is not a field is an error that
lists the fields there are, never a setting silently ignored.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

from logah.errors import LogahError


def parse_value(text: str) -> Any:
    """A command-line value: an int, a float, true/false/none, or else the string itself."""
    text = text.strip()
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise LogahError(f"value {text!r} is not a finite number")
        return value
    return text


def assignments(items: list[str], option: str, parse: Callable[[str], Any] = parse_value) -> dict:
    """``["a.b=1", ...]`` as ``{"a.b": parse("1"), ...}``; a malformed item or a name given twice
    is a ``LogahError`` naming ``option``."""
    settings: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise LogahError(f"{option} {item!r}: expected NAME=VALUE")
        if name in settings:
            raise LogahError(f"{option} sets {name} twice")
        settings[name] = parse(value)
    return settings


def named_record(field: str, value: Any) -> Any:
    """The record a preset name stands for, for the record fields that take one (module
    docstring); any other value as it is."""
    if not isinstance(value, str):
        return value
    if field == "ghn":
        from logah.presets import get_preset

        return get_preset(value).to_dict()
    if field == "space":
        from logah.archs import get_space, space_to_dict

        return space_to_dict(get_space(value))
    if field == "target":
        from logah.targets import resolve_target

        return resolve_target(value).to_dict()
    return value


def set_dotted(record: dict, path: str, value: Any) -> None:
    """Set ``record[a][b][c] = value`` for ``path`` "a.b.c"; every key must already exist (a
    typo is an error, not a silently ignored setting)."""
    *parents, leaf = path.split(".")
    node = record
    for depth, key in enumerate(parents):
        if not isinstance(node, dict) or key not in node or not isinstance(node[key], dict):
            raise LogahError(f"unknown setting {path!r}: "
                             f"{'.'.join(parents[:depth + 1])!r} is not a group of settings")
        node = node[key]
    if not isinstance(node, dict) or leaf not in node:
        known = sorted(node) if isinstance(node, dict) else []
        raise LogahError(f"unknown setting {path!r}; {'.'.join(parents) or 'the config'} has "
                         f"{known}")
    node[leaf] = named_record(leaf, value) if isinstance(node[leaf], dict) else value


def with_settings(record: dict, settings: dict[str, Any]) -> dict:
    """A copy of ``record`` with ``settings`` (dotted name -> value) applied in order."""
    record = copy.deepcopy(record)
    for name, value in settings.items():
        set_dotted(record, name, value)
    return record


def flatten(record: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values (a table cell each)."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
