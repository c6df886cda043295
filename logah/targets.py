"""Target architectures, whatever their family: records, names, the real module, its forward.

An architecture is a small frozen record of its family (``logah.families``: ``ViTArch``,
``GPT2Arch``, ``LlamaArch``) that round-trips through JSON (``arch_to_dict`` /
``arch_from_dict``), so architecture datasets are lists of records, never pickled modules.
``build_model`` turns a record into the library's own module (torchvision's
``VisionTransformer``, Hugging Face's ``GPT2LMHeadModel`` or ``LlamaForCausalLM``). Building on
the ``meta`` device (the default) allocates no memory and runs no random initialisation, which is
all the graph builder and the GHN need: an 8B-parameter Llama costs nothing to describe.

    >>> arch = resolve_target("gpt2-l")
    >>> model = build_model(arch)          # on meta: shapes only
    >>> count_params(arch)
    838359040

Every function here asks the family registry; none knows a family itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from logah.errors import LogahError
from logah.families import TargetArch, family_of, family_of_record, named_targets, target_notes
from logah.io import read_json, reading

Arch = TargetArch
NAMED_TARGETS: dict[str, TargetArch] = named_targets()
TARGET_NOTES: dict[str, str] = target_notes()


def arch_to_dict(arch: TargetArch) -> dict[str, Any]:
    """JSON-ready record of an architecture, with its ``family`` first."""
    return arch.to_dict()


def arch_from_dict(record: dict[str, Any]) -> TargetArch:
    """Inverse of ``arch_to_dict``; validates and raises ``LogahError`` naming what is wrong."""
    family = family_of_record(record)
    return family.arch_from_fields({k: v for k, v in record.items() if k != "family"})


def load_arch_json(path: str | Path) -> TargetArch:
    """Read one architecture record from a JSON file (as written by ``logah predict`` or by hand)."""
    record = read_json(path, "architecture file")
    with reading(path):
        return arch_from_dict(record)


def resolve_target(spec: str | Path) -> TargetArch:
    """A named target of any family (``vit-s``, ``gpt2-cpu-target``, ``llama-3.1-8b``, ...) or the
    path of an architecture JSON file."""
    if str(spec) in NAMED_TARGETS:
        return NAMED_TARGETS[str(spec)]
    if str(spec).endswith(".json") or Path(spec).exists():
        return load_arch_json(spec)
    raise LogahError(f"unknown target {str(spec)!r}: use one of {sorted(NAMED_TARGETS)} "
                     f"or the path of an architecture .json file")


def build_model(arch: TargetArch, device: Any = "meta"):
    """The library's own module for ``arch``. On a real device it carries the library's default init."""
    arch.validate()
    return family_of(arch).build_model(arch, device)


def example_input(arch: TargetArch, device: Any = "meta", batch: int = 1, seq_len: int = 8):
    """A dummy input for one forward pass (used to trace the computational graph)."""
    return family_of(arch).example_input(arch, device, batch, seq_len)


def forward(model, arch: TargetArch, inputs):
    """Logits of ``model`` on ``inputs``: (B, classes) for images, (B, T, vocab) for text."""
    return family_of(arch).forward(model, arch, inputs)


def count_params(arch: TargetArch) -> int:
    """Number of parameters of ``arch`` (tied embeddings counted once), computed on ``meta``."""
    return sum(p.numel() for p in build_model(arch, "meta").parameters())
