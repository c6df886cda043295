"""Architecture spaces: the distributions of ViTs and GPT-2s a GHN is trained on.

The paper trains its GHNs on *ViTs-1K* and *GPTs-1K* (App. E/F): 1000 small transformers whose
width shrinks as depth grows, so parameter counts spread evenly over ~1-10M (ViT) and ~8-28M
(GPT-2), all far below the targets the GHN later initialises. Here a space is a frozen,
keyword-only dataclass whose every field is a knob a study can sweep (depth range, width range and
step per depth band, heads rule, MLP ratio, patch sizes, image size, vocabulary, tying, parameter
cap, number of architectures, seed). Sampling is deterministic given the seed, and samples are
stored as small JSON/Parquet records (``targets.arch_to_dict``), never as pickled modules.

    >>> archs = sample_archs("vits-1k")            # 1000 ViTArch records, seed 1
    >>> save_archs("vits1k.json", archs)
    >>> print(format_description(describe_archs(load_archs("vits1k.json"))))

Presets: ``vits-1k`` / ``gpts-1k`` follow the paper exactly; ``vits-cpu`` / ``gpts-cpu`` are
laptop-sized (widths of tens, depths 1-4) and ``CPU_TARGETS`` holds deliberately wider and deeper
models to test the paper's point, generalisation to larger targets, in minutes on a CPU.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Union

import numpy as np

from logah.errors import LogahError
from logah.io import atomic_file
from logah.targets import Arch, GPT2Arch, ViTArch, arch_from_dict, arch_to_dict

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


@dataclass(frozen=True, kw_only=True)
class _Space(abc.ABC):
    """Fields and checks shared by both families. Construction validates: an impossible space
    cannot exist, so a sweep fails at its first trial with a message naming the setting."""

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
    def _make(self, depth: int, width: int, heads: int, rng: np.random.Generator) -> Arch:
        """One architecture of this family at ``depth`` x ``width`` with ``heads``."""

    @abc.abstractmethod
    def _extremes(self, depth: int, width: int) -> list[int]:
        """Parameter counts of every variant (e.g. patch size) at ``depth`` x ``width``."""

    def _validate_family(self) -> None:
        pass

    # -- shared logic -------------------------------------------------------------------------
    def validate(self) -> None:
        for field in ("depth_min", "depth_max", "num_archs"):
            _positive(self, field)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise LogahError(f"space {self.name}: seed must be a non-negative integer, got {self.seed!r}")
        if self.depth_min > self.depth_max:
            raise LogahError(f"space {self.name}: empty depth range depth_min={self.depth_min} > "
                             f"depth_max={self.depth_max}")
        if not self.width_bands:
            raise LogahError(f"space {self.name}: width_bands is empty")
        for band in self.width_bands:
            for field in ("depth_min", "depth_max", "width_min", "width_max", "width_step"):
                if not isinstance(getattr(band, field), int) or getattr(band, field) <= 0:
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
        self._validate_family()
        if self.max_params is not None:
            _positive(self, "max_params")
            smallest = self.min_params()
            if smallest > self.max_params:
                raise LogahError(f"space {self.name}: max_params={self.max_params:,} is below the "
                                 f"smallest model of the space ({smallest:,} parameters)")

    def band_for(self, depth: int) -> WidthBand:
        return next(b for b in self.width_bands if b.depth_min <= depth <= b.depth_max)

    def sampleable_widths(self, band: WidthBand) -> list[int]:
        return [w for w in band.widths() if heads_for(w, self.heads_rule)]

    def min_params(self) -> int:
        """Smallest parameter count in the space. Within a band, parameters grow with depth and
        width, so only each band's shallowest depth and narrowest width need checking."""
        best = []
        for band in self.width_bands:
            depth = max(band.depth_min, self.depth_min)
            if depth <= min(band.depth_max, self.depth_max):
                best.extend(self._extremes(depth, self.sampleable_widths(band)[0]))
        return min(best)

    def max_params_in_space(self) -> int:
        """Largest parameter count in the space (before the cap)."""
        best = []
        for band in self.width_bands:
            depth = min(band.depth_max, self.depth_max)
            if depth >= max(band.depth_min, self.depth_min):
                best.extend(self._extremes(depth, self.sampleable_widths(band)[-1]))
        return max(best)

    def draw(self, rng: np.random.Generator) -> Arch:
        """One architecture: depth uniform, then width uniform within its band, then heads."""
        depth = int(rng.integers(self.depth_min, self.depth_max + 1))
        widths = self.sampleable_widths(self.band_for(depth))
        width = widths[int(rng.integers(len(widths)))]
        heads = heads_for(width, self.heads_rule)
        return self._make(depth, width, heads[int(rng.integers(len(heads)))], rng)


@dataclass(frozen=True, kw_only=True)
class ViTSpace(_Space):
    """torchvision ViTs. ``mlp_dim = round(mlp_ratio * width)``; one patch size drawn per model."""

    mlp_ratio: float = 4.0
    patch_sizes: tuple[int, ...] = (2,)
    image_size: int = 32
    num_classes: int = 100

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "patch_sizes", tuple(int(p) for p in self.patch_sizes))
        except (TypeError, ValueError):
            raise LogahError(f"space {self.name}: patch_sizes must be integers, "
                             f"got {self.patch_sizes!r}") from None
        super().__post_init__()

    def _validate_family(self) -> None:
        _positive(self, "image_size")
        _positive(self, "num_classes")
        if not isinstance(self.mlp_ratio, (int, float)) or self.mlp_ratio <= 0:
            raise LogahError(f"space {self.name}: mlp_ratio must be positive, got {self.mlp_ratio!r}")
        if not self.patch_sizes or any(p <= 0 or self.image_size % p for p in self.patch_sizes):
            raise LogahError(f"space {self.name}: patch_sizes {self.patch_sizes} must be non-empty "
                             f"and divide image_size={self.image_size}")

    def _mlp(self, width: int) -> int:
        return max(1, round(self.mlp_ratio * width))

    def _make(self, depth, width, heads, rng) -> ViTArch:
        patch = self.patch_sizes[int(rng.integers(len(self.patch_sizes)))]
        return ViTArch(num_layers=depth, hidden_dim=width, num_heads=heads, mlp_dim=self._mlp(width),
                       image_size=self.image_size, patch_size=patch, num_classes=self.num_classes)

    def _extremes(self, depth, width):
        return [vit_params(num_layers=depth, hidden_dim=width, mlp_dim=self._mlp(width),
                           image_size=self.image_size, patch_size=p, num_classes=self.num_classes)
                for p in self.patch_sizes]


@dataclass(frozen=True, kw_only=True)
class GPT2Space(_Space):
    """Hugging Face GPT-2s. The MLP is fixed at 4·n_embd by ``GPT2Arch`` (no ratio to sweep)."""

    vocab_size: int = 50257
    n_positions: int = 1024
    tie_word_embeddings: bool = False

    def _validate_family(self) -> None:
        _positive(self, "vocab_size")
        _positive(self, "n_positions")

    def _make(self, depth, width, heads, rng) -> GPT2Arch:
        return GPT2Arch(n_layer=depth, n_embd=width, n_head=heads, vocab_size=self.vocab_size,
                        n_positions=self.n_positions, tie_word_embeddings=self.tie_word_embeddings)

    def _extremes(self, depth, width):
        return [gpt2_params(n_layer=depth, n_embd=width, vocab_size=self.vocab_size,
                            n_positions=self.n_positions, tie_word_embeddings=self.tie_word_embeddings)]


Space = Union[ViTSpace, GPT2Space]
SPACE_CLASSES: dict[str, type] = {"vit": ViTSpace, "gpt2": GPT2Space}


def _positive(obj: Any, field: str) -> None:
    value = getattr(obj, field)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise LogahError(f"space {getattr(obj, 'name', '?')}: {field} must be a positive integer, "
                         f"got {value!r}")


# ---------------------------------------------------------------------------------------------
# Parameter counts, analytically (microseconds instead of building a module); tests check them
# against targets.count_params.

def vit_params(*, num_layers: int, hidden_dim: int, mlp_dim: int, image_size: int, patch_size: int,
               num_classes: int, channels: int = 3) -> int:
    d, m = hidden_dim, mlp_dim
    tokens = (image_size // patch_size) ** 2 + 1                # patches + class token
    stem = channels * patch_size ** 2 * d + d + d + tokens * d  # conv_proj, class token, pos emb
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * m + m) + (m * d + d)
    return stem + num_layers * block + 2 * d + d * num_classes + num_classes


def gpt2_params(*, n_layer: int, n_embd: int, vocab_size: int, n_positions: int,
                tie_word_embeddings: bool) -> int:
    d = n_embd
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (4 * d * d + 4 * d) + (4 * d * d + d)
    head = 0 if tie_word_embeddings else vocab_size * d
    return vocab_size * d + n_positions * d + n_layer * block + 2 * d + head


def arch_params(arch: Arch) -> int:
    """Parameter count of ``arch`` (tied embeddings once), equal to ``targets.count_params``."""
    if isinstance(arch, ViTArch):
        return vit_params(num_layers=arch.num_layers, hidden_dim=arch.hidden_dim, mlp_dim=arch.mlp_dim,
                          image_size=arch.image_size, patch_size=arch.patch_size,
                          num_classes=arch.num_classes)
    return gpt2_params(n_layer=arch.n_layer, n_embd=arch.n_embd, vocab_size=arch.vocab_size,
                       n_positions=arch.n_positions, tie_word_embeddings=arch.tie_word_embeddings)


# ---------------------------------------------------------------------------------------------
# Presets (small functions, like named model configs): the paper's two and CPU-scale ones.

def vits_1k() -> ViTSpace:
    """ViTs-1K (paper App. E): depth 3..9; width step 32 in 128..256 (L 6-9), 256..384 (L 4-5),
    384..512 (L 3); paper heads rule; MLP 4·D; 32x32 images, patch 2, 100 classes; 1.2M-9.7M
    parameters, so the paper's 10M cap never rejects anything."""
    return ViTSpace(name="vits-1k", depth_min=3, depth_max=9,
                    width_bands=((6, 9, 128, 256, 32),
                                 (4, 5, 256, 384, 32),
                                 (3, 3, 384, 512, 32)),
                    heads_rule=PAPER_VIT_HEADS, mlp_ratio=4.0, patch_sizes=(2,), image_size=32,
                    num_classes=100, max_params=10_000_000, num_archs=1000, seed=1)


def gpts_1k() -> GPT2Space:
    """GPTs-1K (paper App. F): n_layer 3..9; n_embd step 8 in 72..176 (L 6-9), 128..176 (L 4-5),
    176..256 (L 3); 8 heads; untied 50257-token embeddings, context 1024; 7.7M-28.4M parameters
    (the paper says "within 30M")."""
    return GPT2Space(name="gpts-1k", depth_min=3, depth_max=9,
                     width_bands=((6, 9, 72, 176, 8),
                                  (4, 5, 128, 176, 8),
                                  (3, 3, 176, 256, 8)),
                     heads_rule=PAPER_GPT2_HEADS, vocab_size=50257, n_positions=1024,
                     tie_word_embeddings=False, max_params=30_000_000, num_archs=1000, seed=1)


def vits_cpu() -> ViTSpace:
    """Laptop ViTs: depth 1..4, width 32..64 (L 1-2) or 16..48 (L 3-4) step 8, 2 or 4 heads,
    32x32 images in 4x4 or 8x8 patches, 10 classes (Fashion-MNIST, digits); 12k-124k parameters."""
    return ViTSpace(name="vits-cpu", depth_min=1, depth_max=4,
                    width_bands=((1, 2, 32, 64, 8),
                                 (3, 4, 16, 48, 8)),
                    heads_rule=((4, (2, 4)), (2, (2,)), (1, (1,))), mlp_ratio=4.0, patch_sizes=(4, 8),
                    image_size=32, num_classes=10, max_params=200_000, num_archs=100, seed=1)


def gpts_cpu() -> GPT2Space:
    """Laptop GPT-2s: depth 1..4, width 32..64 (L 1-2) or 16..48 (L 3-4) step 8, 4 heads, untied
    4096-token vocabulary (the ``get_tokenizer("bpe")`` default), context 128; 143k-633k
    parameters, dominated (as in GPTs-1K) by the embeddings."""
    return GPT2Space(name="gpts-cpu", depth_min=1, depth_max=4,
                     width_bands=((1, 2, 32, 64, 8),
                                  (3, 4, 16, 48, 8)),
                     heads_rule=((4, (4,)), (2, (2,)), (1, (1,))), vocab_size=4096, n_positions=128,
                     tie_word_embeddings=False, max_params=1_000_000, num_archs=100, seed=1)


SPACES: dict[str, Callable[[], Space]] = {
    "vits-1k": vits_1k,
    "gpts-1k": gpts_1k,
    "vits-cpu": vits_cpu,
    "gpts-cpu": gpts_cpu,
}

# Targets for the CPU spaces, deliberately deeper and wider than anything the spaces contain
# (max depth 4, max width 64), so a CPU study measures generalisation to larger models, which is
# the paper's claim at scale (ViT-S/B/L from ViTs-1K). Image size, classes, vocabulary and context
# match the spaces so a GHN trained on them applies as is.
CPU_TARGETS: dict[str, Arch] = {
    "vit-cpu-target": ViTArch(num_layers=6, hidden_dim=96, num_heads=4, mlp_dim=384,
                              image_size=32, patch_size=4, num_classes=10),
    "vit-cpu-target-l": ViTArch(num_layers=8, hidden_dim=128, num_heads=4, mlp_dim=512,
                                image_size=32, patch_size=4, num_classes=10),
    "gpt2-cpu-target": GPT2Arch(n_layer=6, n_embd=96, n_head=4, vocab_size=4096, n_positions=128),
    "gpt2-cpu-target-l": GPT2Arch(n_layer=8, n_embd=128, n_head=4, vocab_size=4096, n_positions=128),
}


def get_space(space: str | Space, **overrides: Any) -> Space:
    """A preset by name (or a space), with any field overridden, e.g. for a sweep:
    ``get_space("vits-1k", depth_max=12, max_params=None)``. Validates the result."""
    if isinstance(space, str):
        if space not in SPACES:
            raise LogahError(f"unknown architecture space {space!r}: use one of {sorted(SPACES)}")
        space = SPACES[space]()
    if not isinstance(space, (ViTSpace, GPT2Space)):
        raise LogahError(f"expected a space name or a ViTSpace/GPT2Space, got {type(space).__name__}")
    if not overrides:
        return space
    known = {f.name for f in dataclasses.fields(space)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise LogahError(f"space {space.name}: unknown settings {unknown}; "
                         f"expected some of {sorted(known)}")
    return dataclasses.replace(space, **overrides)


def space_to_dict(space: Space) -> dict[str, Any]:
    """JSON-ready record of a space (``family`` first), e.g. to log with a trial."""
    family = "vit" if isinstance(space, ViTSpace) else "gpt2"
    return {"family": family, **dataclasses.asdict(space)}


def space_from_dict(record: dict[str, Any]) -> Space:
    fields = dict(record)
    family = fields.pop("family", None)
    if family not in SPACE_CLASSES:
        raise LogahError(f"space record: 'family' must be one of {sorted(SPACE_CLASSES)}, "
                         f"got {family!r}")
    try:
        return SPACE_CLASSES[family](**fields)
    except TypeError as err:
        raise LogahError(f"space record ({family}): {err}") from None


def sample_archs(space: str | Space, n: int | None = None, seed: int | None = None) -> list[Arch]:
    """``n`` architectures (default ``space.num_archs``) drawn with ``seed`` (default ``space.seed``).

    Deterministic: the same space and seed give the same list on any machine (numpy's PCG64).
    Models above ``max_params`` are rejected and redrawn; a cap that rejects almost everything
    fails after a bounded number of draws instead of looping. Duplicates are kept, as in the
    paper (ViTs-1K has far fewer than 1000 distinct configurations).
    """
    space = get_space(space)
    n = space.num_archs if n is None else n
    _check_count(n)
    archs: list[Arch] = []
    for arch in _accepted_draws(space, _seed(space, seed), max(1000, 100 * n)):
        archs.append(arch)
        if len(archs) == n:
            return archs
    raise LogahError(f"space {space.name}: max_params={space.max_params:,} rejects too many "
                     f"architectures ({len(archs)} of {n} accepted in {max(1000, 100 * n)} draws); "
                     f"raise the cap or narrow the widths/depths")


HELD_OUT_POOL = 10   # held-out candidates drawn: this many times the space's ``num_archs``


def sample_held_out(space: str | Space, exclude: Iterable[Arch], n: int, seed: int,
                    fit: Callable[[Arch], Arch] | None = None) -> list[Arch]:
    """Up to ``n`` distinct architectures of ``space`` that are not in ``exclude`` (a training
    list), in the order a draw with ``seed`` meets them; each passes through ``fit`` (e.g. a
    task's ``fit``) before it is compared, so records are compared as they will be trained.

    Records are compared, not seeds: the training list of every preset space covers most of its
    configurations (all of them for vits-1k, gpts-1k and gpts-cpu), so a second draw with another
    seed repeats training architectures. Candidates come from ``HELD_OUT_POOL · num_archs``
    draws (N = ``num_archs``): a configuration of probability p is missing from N draws with
    probability (1 - p)^N, so the missing ones are mostly those with p ≲ 1/N, and 10·N draws meet
    one with p = 1/N with probability 1 - e^-10. The result is shorter than ``n``, possibly
    empty, when fewer unseen configurations turn up.
    """
    space = get_space(space)
    if not isinstance(n, int) or n < 0:
        raise LogahError(f"number of held-out architectures must be a non-negative integer, got {n!r}")
    seen, found = set(exclude), []
    if n == 0:
        return found
    pool = HELD_OUT_POOL * space.num_archs
    for arch in _accepted_draws(space, _seed(space, seed), max(1000, 100 * pool), limit=pool):
        arch = fit(arch) if fit is not None else arch
        if arch not in seen:
            seen.add(arch)
            found.append(arch)
            if len(found) == n:
                break
    return found


def _seed(space: Space, seed: int | None) -> int:
    seed = space.seed if seed is None else seed
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise LogahError(f"seed must be a non-negative integer, got {seed!r}")
    return seed


def _check_count(n: Any) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise LogahError(f"number of architectures must be a positive integer, got {n!r}")


def _accepted_draws(space: Space, seed: int, max_draws: int, limit: int | None = None) -> Iterator[Arch]:
    """Architectures of ``space`` under its ``max_params``, in draw order: at most ``limit`` of
    them from at most ``max_draws`` draws of a generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    accepted = 0
    for _ in range(max_draws):
        arch = space.draw(rng)
        if space.max_params is None or arch_params(arch) <= space.max_params:
            yield arch
            accepted += 1
            if accepted == limit:
                return


# ---------------------------------------------------------------------------------------------
# Storage: small records, JSON (a list) or Parquet (one row each), written atomically.

def save_archs(path: str | Path, archs: list[Arch], *, overwrite: bool = False) -> Path:
    """Write ``archs`` to a .json or .parquet file atomically (``logah.io``'s overwrite rule)."""
    path = Path(path)
    records = [arch_to_dict(a) for a in archs]
    if path.suffix not in (".json", ".parquet"):
        raise LogahError(f"architecture file {path}: use a .json or .parquet suffix")

    def write(tmp: Path) -> None:
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            columns = list(dict.fromkeys(k for r in records for k in r))  # union over families
            pq.write_table(pa.table({c: [r.get(c) for r in records] for c in columns}), tmp)
        else:
            tmp.write_text(json.dumps(records, indent=0) + "\n")

    return atomic_file(path, write, overwrite=overwrite)


def load_archs(path: str | Path) -> list[Arch]:
    path = Path(path)
    if not path.exists():
        raise LogahError(f"architecture file not found: {path}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as err:  # pyarrow raises several types for a corrupt file
            raise LogahError(f"architecture file {path} is not valid Parquet: {err}") from None
        records = [{k: v for k, v in row.items() if v is not None} for row in rows]
    else:
        try:
            records = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise LogahError(f"architecture file {path} is not valid JSON: {err}") from None
        if isinstance(records, dict):  # a single architecture record
            records = [records]
        if not isinstance(records, list):
            raise LogahError(f"architecture file {path}: expected a JSON list of records")
    return [arch_from_dict(r) for r in records]


# ---------------------------------------------------------------------------------------------
# Description (``logah archs describe``).

def _shape(arch: Arch) -> tuple[int, int, int]:
    if isinstance(arch, ViTArch):
        return arch.num_layers, arch.hidden_dim, arch.num_heads
    return arch.n_layer, arch.n_embd, arch.n_head


def describe_archs(archs: list[Arch]) -> dict[str, Any]:
    """Summary of an architecture list: counts, ranges, histograms (int keys, sorted) and
    parameter-count statistics. ``params_median`` is the lower median (an actual model's count)."""
    if not archs:
        raise LogahError("no architectures to describe")
    shapes = [_shape(a) for a in archs]
    params = sorted(arch_params(a) for a in archs)
    hist = lambda values: dict(sorted(Counter(values).items()))  # noqa: E731
    desc: dict[str, Any] = {
        "count": len(archs),
        "distinct": len({json.dumps(arch_to_dict(a), sort_keys=True) for a in archs}),
        "families": hist(a.family for a in archs),
        "depth_min": min(s[0] for s in shapes), "depth_max": max(s[0] for s in shapes),
        "width_min": min(s[1] for s in shapes), "width_max": max(s[1] for s in shapes),
        "params_min": params[0], "params_median": statistics.median_low(params),
        "params_max": params[-1], "params_mean": round(statistics.fmean(params)),
        "depth_hist": hist(s[0] for s in shapes),
        "width_hist": hist(s[1] for s in shapes),
        "heads_hist": hist(s[2] for s in shapes),
    }
    patches = [a.patch_size for a in archs if isinstance(a, ViTArch)]
    if patches:
        desc["patch_hist"] = hist(patches)
    return desc


def format_description(desc: dict[str, Any]) -> str:
    """Human-readable text for ``describe_archs`` output (histograms as bars)."""
    families = ", ".join(f"{k}: {v}" for k, v in desc["families"].items())
    lines = [f"{desc['count']} architectures ({desc['distinct']} distinct; {families})",
             f"depth {desc['depth_min']}..{desc['depth_max']}, "
             f"width {desc['width_min']}..{desc['width_max']}",
             f"parameters: min {desc['params_min']:,}  median {desc['params_median']:,}  "
             f"max {desc['params_max']:,}  mean {desc['params_mean']:,}"]
    for key, title in (("depth_hist", "depth"), ("width_hist", "width"), ("heads_hist", "heads"),
                       ("patch_hist", "patch")):
        if key not in desc:
            continue
        hist = desc[key]
        top = max(hist.values())
        lines.append(f"{title}:")
        for value, count in hist.items():
            bar = "#" * max(1, round(30 * count / top))
            lines.append(f"  {value!s:>6} {count:6d} {bar}")
    return "\n".join(lines)
