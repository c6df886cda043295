"""Target architectures: the ViTs and GPT-2s whose parameters a GHN predicts.

An architecture is a small frozen dataclass (``ViTArch`` or ``GPT2Arch``) that round-trips
through JSON (``to_dict`` / ``arch_from_dict``), so architecture datasets are lists of records,
never pickled modules. ``build_model`` turns a record into the real library module:
torchvision's ``VisionTransformer`` or Hugging Face's ``GPT2LMHeadModel``. Building on the
``meta`` device (the default) allocates no memory and runs no random initialisation, which is
all the graph builder and the GHN need: a 774M-parameter GPT-2-L costs nothing to describe.

    >>> arch = NAMED_TARGETS["gpt2-l"]
    >>> model = build_model(arch)          # on meta: shapes only
    >>> count_params(arch)
    838359040
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Union

import torch
from torch import nn

from logah.errors import LogahError
from logah.io import read_json


@dataclass(frozen=True, kw_only=True)
class ViTArch:
    """A torchvision ``VisionTransformer``. Field names follow torchvision's constructor."""

    family: ClassVar[str] = "vit"
    num_layers: int
    hidden_dim: int
    num_heads: int
    mlp_dim: int
    image_size: int = 32
    patch_size: int = 2
    num_classes: int = 100

    def validate(self) -> None:
        _require_positive(self, ("num_layers", "hidden_dim", "num_heads", "mlp_dim",
                                 "image_size", "patch_size", "num_classes"))
        if self.hidden_dim % self.num_heads:
            raise LogahError(f"ViT: num_heads={self.num_heads} does not divide "
                             f"hidden_dim={self.hidden_dim}")
        if self.image_size % self.patch_size:
            raise LogahError(f"ViT: patch_size={self.patch_size} does not divide "
                             f"image_size={self.image_size}")

    @property
    def in_channels(self) -> int:
        """torchvision's ViT always reads 3-channel images; data loaders expand greyscale."""
        return 3

    @property
    def residual_projections(self) -> tuple[str, ...]:
        """Parameter-name suffixes that write into the residual stream (none scaled for ViT)."""
        return ()


@dataclass(frozen=True, kw_only=True)
class GPT2Arch:
    """A Hugging Face ``GPT2LMHeadModel``. Field names follow ``GPT2Config``; MLP width is 4·n_embd."""

    family: ClassVar[str] = "gpt2"
    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int = 50257
    n_positions: int = 1024
    tie_word_embeddings: bool = False

    def validate(self) -> None:
        _require_positive(self, ("n_layer", "n_embd", "n_head", "vocab_size", "n_positions"))
        if self.n_embd % self.n_head:
            raise LogahError(f"GPT-2: n_head={self.n_head} does not divide n_embd={self.n_embd}")

    @property
    def residual_projections(self) -> tuple[str, ...]:
        """GPT-2 scales the weights of ``c_proj`` (attention and MLP outputs) by 1/sqrt(2·n_layer)."""
        return ("c_proj.weight",)

    def hf_config(self):
        from transformers import GPT2Config

        return GPT2Config(n_layer=self.n_layer, n_embd=self.n_embd, n_head=self.n_head,
                          vocab_size=self.vocab_size, n_positions=self.n_positions,
                          tie_word_embeddings=self.tie_word_embeddings,
                          bos_token_id=self.vocab_size - 1, eos_token_id=self.vocab_size - 1)


Arch = Union[ViTArch, GPT2Arch]
ARCH_CLASSES: dict[str, type] = {"vit": ViTArch, "gpt2": GPT2Arch}


def _require_positive(arch: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(arch, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise LogahError(f"{type(arch).__name__}: {name} must be a positive integer, got {value!r}")


def arch_to_dict(arch: Arch) -> dict[str, Any]:
    """JSON-ready record of an architecture, with its ``family`` first."""
    return {"family": arch.family, **dataclasses.asdict(arch)}


def arch_from_dict(record: dict[str, Any]) -> Arch:
    """Inverse of ``arch_to_dict``; validates and raises ``LogahError`` naming what is wrong."""
    if not isinstance(record, dict):
        raise LogahError(f"an architecture record must be a JSON object, got {type(record).__name__}")
    fields = dict(record)
    family = fields.pop("family", None)
    if family not in ARCH_CLASSES:
        raise LogahError(f"architecture record: 'family' must be one of {sorted(ARCH_CLASSES)}, "
                         f"got {family!r}")
    cls = ARCH_CLASSES[family]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise LogahError(f"architecture record ({family}): unknown fields {unknown}; "
                         f"expected some of {sorted(known)}")
    try:
        arch = cls(**fields)
    except TypeError as err:
        raise LogahError(f"architecture record ({family}): {err}") from None
    arch.validate()
    return arch


def load_arch_json(path: str | Path) -> Arch:
    """Read one architecture record from a JSON file (as written by ``logah predict`` or by hand)."""
    return arch_from_dict(read_json(path, "architecture file"))


# Paper targets (App. C, Tabs. 6-7). ViTs at CIFAR resolution (32x32, patch 2, 100 classes):
# the paper's ViT-B is a ViT-B/2, not torchvision's ImageNet ViT-B/16; those are here too, under
# torchvision's names with dashes. GPT-2s untied, as the paper evaluates them.
NAMED_TARGETS: dict[str, Arch] = {
    "vit-s": ViTArch(num_layers=12, hidden_dim=384, num_heads=6, mlp_dim=1536),
    "vit-b": ViTArch(num_layers=12, hidden_dim=768, num_heads=12, mlp_dim=3072),
    "vit-l": ViTArch(num_layers=24, hidden_dim=1024, num_heads=16, mlp_dim=4096),
    **{f"vit-{size}-{patch}": ViTArch(num_layers=layers, hidden_dim=width, num_heads=heads,
                                      mlp_dim=4 * width, image_size=224, patch_size=patch,
                                      num_classes=1000)
       for size, layers, width, heads, patches in (("b", 12, 768, 12, (16, 32)),
                                                   ("l", 24, 1024, 16, (16, 32)),
                                                   ("h", 32, 1280, 16, (14,)))
       for patch in patches},
    "gpt2-s": GPT2Arch(n_layer=12, n_embd=768, n_head=12),
    "gpt2-m": GPT2Arch(n_layer=24, n_embd=1024, n_head=16),
    "gpt2-l": GPT2Arch(n_layer=36, n_embd=1280, n_head=20),
}

TARGET_NOTES: dict[str, str] = {
    "vit-s": "the paper's CIFAR ViT-S/2: 12 layers, width 384, 32 px, patch 2, 100 classes",
    "vit-b": "the paper's CIFAR ViT-B/2: 12 layers, width 768, 32 px, patch 2, 100 classes",
    "vit-l": "the paper's CIFAR ViT-L/2: 24 layers, width 1024, 32 px, patch 2, 100 classes",
    **{f"vit-{s}-{p}": f"torchvision's vit_{s}_{p}: ImageNet, 224 px, patch {p}, 1000 classes"
       for s, p in (("b", 16), ("b", 32), ("l", 16), ("l", 32), ("h", 14))},
    "gpt2-s": "GPT-2 small (124M with tied embeddings; untied here, as in the paper)",
    "gpt2-m": "GPT-2 medium, untied",
    "gpt2-l": "GPT-2 large, untied",
}


def resolve_target(spec: str | Path) -> Arch:
    """A named target (``vit-s`` ..., or a CPU study target such as ``vit-cpu-target``) or the
    path of an architecture JSON file."""
    from logah.archs import CPU_TARGETS   # defined beside the CPU spaces they are wider than

    named = {**NAMED_TARGETS, **CPU_TARGETS}
    if str(spec) in named:
        return named[str(spec)]
    if str(spec).endswith(".json") or Path(spec).exists():
        return load_arch_json(spec)
    raise LogahError(f"unknown target {str(spec)!r}: use one of {sorted(named)} "
                     f"or the path of an architecture .json file")


def build_model(arch: Arch, device: str | torch.device = "meta") -> nn.Module:
    """The library's own module for ``arch``. On a real device it carries the library's default init."""
    arch.validate()
    with torch.device(device):
        if isinstance(arch, ViTArch):
            from torchvision.models import VisionTransformer

            return VisionTransformer(image_size=arch.image_size, patch_size=arch.patch_size,
                                     num_layers=arch.num_layers, num_heads=arch.num_heads,
                                     hidden_dim=arch.hidden_dim, mlp_dim=arch.mlp_dim,
                                     num_classes=arch.num_classes)
        from transformers import GPT2LMHeadModel
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            return GPT2LMHeadModel(arch.hf_config())
        finally:
            hf_logging.set_verbosity(verbosity)


def example_input(arch: Arch, device: str | torch.device = "meta", batch: int = 1,
                  seq_len: int = 8) -> torch.Tensor:
    """A dummy input for one forward pass (used to trace the computational graph)."""
    if isinstance(arch, ViTArch):
        return torch.zeros(batch, 3, arch.image_size, arch.image_size, device=device)
    return torch.zeros(batch, min(seq_len, arch.n_positions), dtype=torch.long, device=device)


def forward(model: nn.Module, arch: Arch, inputs: torch.Tensor) -> torch.Tensor:
    """Logits of ``model`` on ``inputs``: (B, classes) for ViT, (B, T, vocab) for GPT-2."""
    if isinstance(arch, ViTArch):
        return model(inputs)
    return model(input_ids=inputs, use_cache=False).logits


def trace_output(model: nn.Module, arch: Arch) -> torch.Tensor:
    """Output of one forward pass on a dummy input, on the model's device (``meta`` when tracing).

    GPT-2 is traced with its KV cache on: without a cache, transformers checks position ids for
    packed sequences with a data-dependent ``.item()``, which the meta device cannot answer. The
    cache only adds concatenations with empty tensors, which the graph reduction drops.
    """
    device = next(model.parameters()).device
    inputs = example_input(arch, device=device)
    if isinstance(arch, ViTArch):
        return model(inputs)
    return model(input_ids=inputs, use_cache=True).logits


def count_params(arch: Arch) -> int:
    """Number of parameters of ``arch`` (tied embeddings counted once), computed on ``meta``."""
    return sum(p.numel() for p in build_model(arch, "meta").parameters())


def spatial_side(num_tokens: int) -> int:
    """Side of the square patch grid behind ``num_tokens`` position embeddings (class token excluded)."""
    return max(1, math.isqrt(max(num_tokens - 1, 1)))
