"""How each parameter tensor of a target is presented to, and rebuilt from, a GHN decoder.

Decoders do not know about torchvision or Hugging Face layouts. They predict a *canonical*
4-D tensor (C_out, C_in, h, w) per graph node, as GHN-2/3 do for convolutions, and this module
says, per parameter, which canonical shape to ask for and how to turn the prediction back into
the tensor the module stores:

=================  ==================  ========================  ==========================
parameter          stored shape         canonical (decoded)       shape-encoder features
=================  ==================  ========================  ==========================
Linear / Conv2d    (out, in[, h, w])    (out, in, h, w)           same
HF Conv1D weight   (in, out)            (out, in, 1, 1), as .T    (out, in, 1, 1)
Embedding          (V, D)               (V, D, 1, 1)              (V, D, 1, 1)
ViT pos_embedding  (1, T, D)            (T, D, 1, 1)              (1, D, s, s), s = sqrt(T-1)
ViT class_token    (1, 1, D)            (1, D, 1, 1)              (1, D, 1, 1)
bias               (c,)                 (c, 1, 1, 1)              (c, 1, 1, 1)
LayerNorm (w, b)   (c,), (c,)           (2c, 1, 1, 1): w then b   (c, 1, 1, 1)
=================  ==================  ========================  ==========================

The HF ``Conv1D`` transpose matters: without it the decoder would see GPT-2's (in, out) weights
with rows and columns swapped relative to every other linear layer (the anchor code ignores this).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# What a parameter is, which decides its post-processing (see ``postprocess``).
WEIGHT, BIAS, NORM, EMBEDDING = "weight", "bias", "norm", "embedding"


@dataclass(frozen=True)
class ParamSpec:
    """One parameter tensor of the target, as attached to a graph node."""

    name: str                      # dotted name in ``model.named_parameters()``
    shape: tuple[int, ...]         # stored shape
    kind: str                      # WEIGHT | BIAS | NORM | EMBEDDING
    transposed: bool = False       # stored as (in, out): HF Conv1D

    @property
    def canonical(self) -> tuple[int, int, int, int]:
        """The (C_out, C_in, h, w) tensor a decoder predicts for this parameter alone."""
        shape = self.shape
        if len(shape) == 1:
            return (shape[0], 1, 1, 1)
        if len(shape) == 2:
            out, inp = (shape[1], shape[0]) if self.transposed else shape
            return (out, inp, 1, 1)
        if len(shape) == 3:  # (1, T, D) learned tokens / position embeddings
            return (shape[0] * shape[1], shape[2], 1, 1)
        if len(shape) == 4:
            return tuple(shape)  # type: ignore[return-value]
        raise ValueError(f"parameter {self.name}: unsupported number of dimensions {len(shape)}")

    @property
    def feature_shape(self) -> tuple[int, int, int, int]:
        """The 4-D shape the GHN's shape encoder sees (GHN-3 convention)."""
        if len(self.shape) == 3:
            side = max(1, math.isqrt(max(self.shape[1] - 1, 1)))
            return (self.shape[0], self.shape[2], side, side)
        return self.canonical

    @property
    def fan_in(self) -> int:
        _, c_in, h, w = self.canonical
        return c_in * h * w

    def from_decoded(self, tensor: torch.Tensor) -> torch.Tensor:
        """Reshape a decoder output into the stored layout. Decoders already return transposed
        parameters as (in, out) (see ``DecodeTask.transposed``), so this never copies."""
        return tensor.reshape(self.shape)


def node_canonical(params: tuple[ParamSpec, ...]) -> tuple[int, int, int, int]:
    """Canonical shape decoded for a whole node: a LayerNorm node decodes weight and bias together."""
    if len(params) == 1:
        return params[0].canonical
    assert all(p.kind == NORM and len(p.shape) == 1 for p in params), params
    return (sum(p.shape[0] for p in params), 1, 1, 1)


def split_node(params: tuple[ParamSpec, ...], tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cut a node's canonical prediction into its parameters, in stored layout."""
    if len(params) == 1:
        return {params[0].name: params[0].from_decoded(tensor)}
    flat = tensor.reshape(-1)
    out, start = {}, 0
    for p in params:
        out[p.name] = flat[start:start + p.shape[0]]
        start += p.shape[0]
    return out
