"""Search spaces over the fields of ``TrialConfig``, named by dotted paths.

A study declares what it sweeps as ``{dotted name: parameter}``:

    {"ghn_training.ghn.rank": Choice(4, 8, 16),
     "finetune.lr": FloatRange(1e-3, 1e-1, log=True),
     "decoder": Variants(low_rank={"ghn_training.ghn": "logah-cpu", "finetune.init": "logah"},
                         tiled={"ghn_training.ghn": "ghn3-cpu", "finetune.init": "ghn3"})}

A dotted name addresses a field of the trial config's JSON record (``TrialConfig.to_dict()``),
so every field is sweepable, including the architecture-sampling settings
(``ghn_training.space.num_archs``), with ``logah.settings``'s rules (the same as every
command's ``--set``). ``Variants`` ties several settings to one named choice, for settings that
only make sense together (a decoder and the init that uses it). Values of ``ghn_training.ghn``,
``ghn_training.space`` and ``finetune.target`` may be preset names.

Parameters suggest through Optuna's define-by-run API (``suggest``) and list their values for a
grid (``grid``). An empty or inverted range is a ``LogahError`` when the study starts, before any
trial runs.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from logah.errors import LogahError
from logah.settings import flatten, parse_value, set_dotted

__all__ = ["Choice", "FloatRange", "IntRange", "Param", "Variants", "apply_settings", "flatten",
           "grid_size", "panel", "parse_param", "parse_value"]


@dataclass(frozen=True)
class Choice:
    """One of a few values (categorical)."""

    values: tuple

    def __init__(self, *values):
        object.__setattr__(self, "values", tuple(values))

    def check(self, name: str) -> None:
        if not self.values:
            raise LogahError(f"search space: {name} has no values")
        if len(set(map(repr, self.values))) != len(self.values):
            raise LogahError(f"search space: {name} lists a value twice: {self.values}")

    def suggest(self, trial, name: str):
        return trial.suggest_categorical(name, list(self.values))

    def grid(self) -> list:
        return list(self.values)

    def corners(self) -> list:
        return list(self.values)


@dataclass(frozen=True)
class IntRange:
    """An integer in [low, high] (both included), every ``step``."""

    low: int
    high: int
    step: int = 1

    def check(self, name: str) -> None:
        if self.step <= 0:
            raise LogahError(f"search space: {name} has step {self.step}; a step must be a positive integer")
        if self.low > self.high:
            raise LogahError(f"search space: {name} is an empty range "
                             f"[{self.low}, {self.high}] (step {self.step})")

    def suggest(self, trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step)

    def grid(self) -> list:
        return list(range(self.low, self.high + 1, self.step))

    def corners(self) -> list:
        return [self.low, self.grid()[-1]]


@dataclass(frozen=True)
class FloatRange:
    """A real number in [low, high], uniform or (``log``) log-uniform. Not for grids."""

    low: float
    high: float
    log: bool = False

    def check(self, name: str) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise LogahError(f"search space: {name} is an empty range [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise LogahError(f"search space: {name} is log-scaled but starts at {self.low} <= 0")

    def suggest(self, trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def grid(self) -> list:
        raise LogahError("a FloatRange has no grid: use Choice for --search grid")

    def corners(self) -> list:
        return [self.low, self.high]


@dataclass(frozen=True)
class Variants:
    """Named bundles of settings: the study samples a name, the trial gets its settings."""

    options: dict

    def __init__(self, **options: dict):
        object.__setattr__(self, "options", options)

    def check(self, name: str) -> None:
        if not self.options:
            raise LogahError(f"search space: {name} has no variants")

    def suggest(self, trial, name: str) -> str:
        return trial.suggest_categorical(name, list(self.options))

    def grid(self) -> list:
        return list(self.options)

    def corners(self) -> list:
        return list(self.options)

    def narrowed(self, name: str, choice: "Choice") -> "Variants":
        """These variants restricted to the names ``choice`` lists
        (``--sweep init=random,logah``)."""
        unknown = [v for v in choice.values if v not in self.options]
        if unknown:
            raise LogahError(f"--sweep {name}: no variant {unknown[0]!r}; this study's variants "
                             f"are {', '.join(self.options)}")
        return Variants(**{v: self.options[v] for v in choice.values})


Param = Choice | IntRange | FloatRange | Variants


def panel(name: str) -> Choice:
    """The targets of a named panel (``logah.families``: ``vit-cpu-panel``, ...) as a choice of
    ``finetune.target``: a comparison run on several shapes, reported per target and as their
    mean (``logah.analysis.stats.at_best_setting_per_target``)."""
    from logah.families import panels

    if name not in panels():
        raise LogahError(f"unknown target panel {name!r}: use one of {', '.join(panels())}")
    return Choice(*panels()[name])


def parse_param(text: str) -> Param:
    """A parameter from the command line: ``a,b,c`` (choice), ``lo:hi`` or ``lo:hi:step``
    (integers), ``lo:hi`` / ``lo:hi:log`` with a decimal point or exponent (reals)."""
    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise LogahError(f"cannot read range {text!r}: use lo:hi, lo:hi:step or lo:hi:log")
        log = len(parts) == 3 and parts[2] == "log"
        real = any(c in "".join(parts[:2]) for c in ".eE") or log
        if real and len(parts) == 3 and not log:
            raise LogahError(f"cannot read range {text!r}: a range of reals takes no step "
                             f"({parts[2]!r}); use lo:hi, lo:hi:log, or list the values a,b,c")
        try:
            if real:
                return FloatRange(float(parts[0]), float(parts[1]), log=log)
            return IntRange(int(parts[0]), int(parts[1]), int(parts[2]) if len(parts) == 3 else 1)
        except ValueError:
            raise LogahError(f"cannot read range {text!r}: bounds must be numbers") from None
    return Choice(*(parse_value(v) for v in text.split(",")))


def apply_settings(base: dict, settings: dict[str, Any], space: dict[str, Param]) -> dict:
    """The trial record ``base`` with ``settings`` applied; a ``Variants`` name expands to its
    bundle of settings, applied first so that explicit settings can refine it."""
    record = copy.deepcopy(base)
    ordered = sorted(settings.items(), key=lambda item: not isinstance(space.get(item[0]), Variants))
    for name, value in ordered:
        param = space.get(name)
        if isinstance(param, Variants):
            for path, setting in param.options[value].items():
                set_dotted(record, path, setting)
        else:
            set_dotted(record, name, value)
    return record


def grid_size(space: dict[str, Param]) -> int:
    return math.prod(len(param.grid()) for param in space.values())
