"""What every architecture space has in common, whatever its family: depth bands, heads rules,
parameter caps and the draw.

The paper trains its GHNs on *ViTs-1K* and *GPTs-1K* (App. E/F): 1000 small transformers whose
width shrinks as depth grows, so parameter counts spread evenly over a range far below the
targets the GHN later initialises. A space is a frozen, keyword-only dataclass whose every field
is a knob a study can sweep (depth range, width range and step per depth band, heads rule,
parameter cap, number of architectures, seed); a family (``logah.families``) adds its own
fields (patch sizes, vocabulary, KV-head ratios, ...) and says how one architecture is made from
a depth, a width and a head count. Sampling and storage live in ``logah.archs``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np

from logah.errors import LogahError

HeadsRule = tuple[tuple[int, tuple[int, ...]], ...]
"""``((divisor, head_choices), ...)``: the first entry whose divisor divides the width gives the
head counts drawn uniformly for that width; choices that do not divide the width are dropped, and
a width left with no choice is never sampled. This encodes the paper's ViT rule
(``D % 12 == 0 -> {3, 6, 12}``, ``% 6 -> {3, 6}``, ``% 3 -> 3``, else ``{4, 8}``) and any other."""

PAPER_VIT_HEADS: HeadsRule = ((12, (3, 6, 12)), (6, (3, 6)), (3, (3,)), (1, (4, 8)))
PAPER_GPT2_HEADS: HeadsRule = ((8, (8,)), (6, (6,)), (4, (4,)))


@dataclass(frozen=True, kw_only=True)
class WidthBand:
    """Widths ``width_min, width_min + width_step, ... <= width_max`` for depths in
    ``depth_min..depth_max``.

    Bands let deeper networks be narrower, which is how the paper keeps parameter counts flat.
    """

    depth_min: int
    depth_max: int
    width_min: int
    width_max: int
    width_step: int

    def widths(self) -> list[int]:
        return list(range(self.width_min, self.width_max + 1, self.width_step))


def _band(record: WidthBand | dict | tuple | list) -> WidthBand:
    """A band as a dataclass, a dict or ``(depth_min, depth_max, width_min, width_max, step)``."""
    if isinstance(record, WidthBand):
        return record
    try:
        if isinstance(record, dict):
            return WidthBand(**record)
        if isinstance(record, (tuple, list)) and len(record) == 5:
            return WidthBand(**dict(zip(("depth_min", "depth_max", "width_min", "width_max",
                                         "width_step"), record)))
    except TypeError as err:
        raise LogahError(f"width_bands: {err}") from None
    raise LogahError(f"width_bands: each band must be a WidthBand, a dict or a 5-tuple, got {record!r}")


def _heads_rule(rule: Any) -> HeadsRule:
    try:
        out = tuple((int(div), tuple(int(h) for h in choices)) for div, choices in rule)
    except (TypeError, ValueError):
        raise LogahError(f"heads_rule must be a sequence of (divisor, (heads, ...)) pairs, "
                         f"got {rule!r}") from None
    if not out or any(div <= 0 or not choices or min(choices) <= 0 for div, choices in out):
        raise LogahError(f"heads_rule needs positive divisors and non-empty positive head choices, "
                         f"got {rule!r}")
    return out


def heads_for(width: int, rule: HeadsRule) -> tuple[int, ...]:
    """Head counts the rule allows for ``width`` (empty if none divides it)."""
    for divisor, choices in rule:
        if width % divisor == 0:
            return tuple(h for h in choices if width % h == 0)
    return ()


def positive(obj: Any, field: str, what: str) -> None:
    """``obj.field`` is a positive integer (a bool is not one), else a ``LogahError``."""
    value = getattr(obj, field)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise LogahError(f"{what}: {field} must be a positive integer, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class ArchSpace(abc.ABC):
    """Fields and checks shared by every family. Construction validates: an impossible space
    cannot exist, so a sweep fails at its first trial with a message naming the setting.

    A family's subclass sets ``family`` and implements ``make`` (one architecture at a depth,
    width and head count, drawing any other choice from ``rng``) and ``extremes`` (the parameter
    counts of every variant at a depth and width, for the cap)."""

    family = ""                # set by each family's subclass
    name: str = "custom"
    depth_min: int
    depth_max: int
    width_bands: tuple[WidthBand, ...]  # or (depth_min, depth_max, width_min, width_max, width_step)
    heads_rule: HeadsRule
    max_params: int | None = None
    num_archs: int = 1000
    seed: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "width_bands", tuple(_band(b) for b in self.width_bands))
        object.__setattr__(self, "heads_rule", _heads_rule(self.heads_rule))
        self.validate()

    # -- family hooks -------------------------------------------------------------------------
    @abc.abstractmethod
    def make(self, depth: int, width: int, heads: int, rng: np.random.Generator):
        """One architecture of this family at ``depth`` x ``width`` with ``heads``."""

    @abc.abstractmethod
    def extremes(self, depth: int, width: int) -> list[int]:
        """Parameter counts of every variant (e.g. patch size) at ``depth`` x ``width``."""

    def validate_family(self) -> None:  # noqa: B027 (a hook: nothing to check by default)
        """Checks of the family's own fields (called by ``validate``)."""

    # -- shared logic -------------------------------------------------------------------------
    def _check(self, field: str) -> None:
        positive(self, field, f"space {self.name}")

    def validate(self) -> None:
        for field in ("depth_min", "depth_max", "num_archs"):
            self._check(field)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise LogahError(f"space {self.name}: seed must be a non-negative integer, got {self.seed!r}")
        if self.depth_min > self.depth_max:
            raise LogahError(f"space {self.name}: empty depth range depth_min={self.depth_min} > "
                             f"depth_max={self.depth_max}")
        if not self.width_bands:
            raise LogahError(f"space {self.name}: width_bands is empty")
        for band in self.width_bands:
            for field in ("depth_min", "depth_max", "width_min", "width_max", "width_step"):
                value = getattr(band, field)
                if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                    raise LogahError(f"space {self.name}: width band {band}: {field} must be a "
                                     f"positive integer")
            if band.depth_min > band.depth_max or band.width_min > band.width_max:
                raise LogahError(f"space {self.name}: width band {band} has an empty depth or "
                                 f"width range")
            if not self.sampleable_widths(band):
                raise LogahError(f"space {self.name}: heads_rule {self.heads_rule} divides no width "
                                 f"in {band.widths()} (width band depths "
                                 f"{band.depth_min}..{band.depth_max})")
        for depth in range(self.depth_min, self.depth_max + 1):
            covering = [b for b in self.width_bands if b.depth_min <= depth <= b.depth_max]
            if len(covering) != 1:
                raise LogahError(f"space {self.name}: width_bands must cover each depth in "
                                 f"{self.depth_min}..{self.depth_max} exactly once; depth {depth} "
                                 f"is covered {len(covering)} times")
        self.validate_family()
        if self.max_params is not None:
            self._check("max_params")
            smallest = self.min_params()
            if smallest > self.max_params:
                raise LogahError(f"space {self.name}: max_params={self.max_params:,} is below the "
                                 f"smallest model of the space ({smallest:,} parameters)")

    def band_for(self, depth: int) -> WidthBand:
        return next(b for b in self.width_bands if b.depth_min <= depth <= b.depth_max)

    def sampleable_widths(self, band: WidthBand) -> list[int]:
        return [w for w in band.widths() if heads_for(w, self.heads_rule)]

    def widths(self) -> set[int]:
        """Every width the space can draw."""
        return {w for band in self.width_bands for w in self.sampleable_widths(band)}

    def head_counts(self) -> list[int]:
        """Every head count the space can draw."""
        return sorted({h for w in self.widths() for h in heads_for(w, self.heads_rule)})

    def min_params(self) -> int:
        """Smallest parameter count in the space. Within a band, parameters grow with depth and
        width, so only each band's shallowest depth and narrowest width need checking."""
        best = []
        for band in self.width_bands:
            depth = max(band.depth_min, self.depth_min)
            if depth <= min(band.depth_max, self.depth_max):
                best.extend(self.extremes(depth, self.sampleable_widths(band)[0]))
        return min(best)

    def max_params_in_space(self) -> int:
        """Largest parameter count in the space (before the cap)."""
        best = []
        for band in self.width_bands:
            depth = min(band.depth_max, self.depth_max)
            if depth >= max(band.depth_min, self.depth_min):
                best.extend(self.extremes(depth, self.sampleable_widths(band)[-1]))
        return max(best)

    def draw(self, rng: np.random.Generator):
        """One architecture: depth uniform, then width uniform within its band, then heads."""
        depth = int(rng.integers(self.depth_min, self.depth_max + 1))
        widths = self.sampleable_widths(self.band_for(depth))
        width = widths[int(rng.integers(len(widths)))]
        heads = heads_for(width, self.heads_rule)
        return self.make(depth, width, heads[int(rng.integers(len(heads)))], rng)
