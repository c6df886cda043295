"""Architecture spaces: the distributions of targets a GHN is trained on, by name, sampled,
stored and described, for every family.

A space is a frozen dataclass of its family (``logah.spaces.ArchSpace`` and the family's
subclass in ``logah.families``: ``ViTSpace``, ``GPT2Space``, ``LlamaSpace``) whose every field is
a knob a study can sweep. Sampling is deterministic given the seed, and samples are stored as
small JSON/Parquet records (``targets.arch_to_dict``), never as pickled modules.

    >>> archs = sample_archs("vits-1k")            # 1000 ViTArch records, seed 1
    >>> save_archs("vits1k.json", archs)
    >>> print(format_description(describe_archs(load_archs("vits1k.json"))))

Presets (``SPACES``): ``vits-1k`` / ``gpts-1k`` follow the paper exactly, ``llamas-1k`` is in
their spirit; ``vits-cpu`` / ``gpts-cpu`` / ``llamas-cpu`` are laptop-sized (widths of tens,
depths 1-4), and each family names CPU targets deliberately wider and deeper, to test the
paper's point, generalisation to larger targets, in minutes on a CPU.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from logah.errors import LogahError
from logah.families import family_of, family_of_record, named_spaces
from logah.io import atomic_file, reading
from logah.spaces import ArchSpace
from logah.targets import Arch, arch_from_dict, arch_to_dict

Space = ArchSpace
SPACES: dict[str, Callable[[], ArchSpace]] = named_spaces()


def arch_params(arch: Arch) -> int:
    """Parameter count of ``arch`` (tied embeddings once), equal to ``targets.count_params``."""
    return arch.num_params()


def get_space(space: str | ArchSpace, **overrides: Any) -> ArchSpace:
    """A preset by name (or a space), with any field overridden, e.g. for a sweep:
    ``get_space("vits-1k", depth_max=12, max_params=None)``. Validates the result."""
    if isinstance(space, str):
        if space not in SPACES:
            raise LogahError(f"unknown architecture space {space!r}: use one of {sorted(SPACES)}")
        space = SPACES[space]()
    if not isinstance(space, ArchSpace):
        raise LogahError(f"expected a space name or a space, got {type(space).__name__}")
    if not overrides:
        return space
    known = {f.name for f in dataclasses.fields(space)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise LogahError(f"space {space.name}: unknown settings {unknown}; "
                         f"expected some of {sorted(known)}")
    return dataclasses.replace(space, **overrides)


def space_to_dict(space: ArchSpace) -> dict[str, Any]:
    """JSON-ready record of a space (``family`` first), e.g. to log with a trial."""
    return {"family": space.family, **dataclasses.asdict(space)}


def space_from_dict(record: dict[str, Any]) -> ArchSpace:
    family = family_of_record(record)
    fields = {k: v for k, v in record.items() if k != "family"}
    try:
        return family.space_class(**fields)
    except TypeError as err:
        raise LogahError(f"space record ({family.name}): {err}") from None


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
    with reading(path):
        return [arch_from_dict(r) for r in records]


# ---------------------------------------------------------------------------------------------
# Description (``logah archs describe``).

def describe_archs(archs: list[Arch]) -> dict[str, Any]:
    """Summary of an architecture list: counts, ranges, histograms (int keys, sorted) and
    parameter-count statistics. ``params_median`` is the lower median (an actual model's count)."""
    if not archs:
        raise LogahError("no architectures to describe")
    shapes = [(a.depth, a.width, a.heads) for a in archs]
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
    families = {a.family for a in archs}
    if len(families) == 1:   # a family's own fields (patch sizes, KV heads, ...)
        extra = family_of(archs[0]).extra_histograms(archs)
        desc.update({f"{name}_hist": hist(values) for name, values in extra.items()})
    return desc


def format_description(desc: dict[str, Any]) -> str:
    """Human-readable text for ``describe_archs`` output (histograms as bars)."""
    families = ", ".join(f"{k}: {v}" for k, v in desc["families"].items())
    lines = [f"{desc['count']} architectures ({desc['distinct']} distinct; {families})",
             f"depth {desc['depth_min']}..{desc['depth_max']}, "
             f"width {desc['width_min']}..{desc['width_max']}",
             f"parameters: min {desc['params_min']:,}  median {desc['params_median']:,}  "
             f"max {desc['params_max']:,}  mean {desc['params_mean']:,}"]
    for key in [k for k in desc if k.endswith("_hist")]:
        title, hist = key.removesuffix("_hist"), desc[key]
        top = max(hist.values())
        lines.append(f"{title}:")
        for value, count in hist.items():
            bar = "#" * max(1, round(30 * count / top))
            lines.append(f"  {value!s:>6} {count:6d} {bar}")
    return "\n".join(lines)
