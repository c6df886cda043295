"""A network's weight matrices grouped by role across its layers, and how alike the layers are.

A *role* is a parameter name with its layer index replaced by ``*``: the first number of a
block parameter's name is its block's index in every family
(``encoder.layers.encoder_layer_3.mlp.0.weight``, ``transformer.h.3.mlp.c_fc.weight``,
``model.layers.3.self_attn.q_proj.weight``), so ``encoder.layers.encoder_layer_*.mlp.0.weight``
collects one matrix per block.

Why it matters: a GHN trained on small networks predicts nearly the same matrix for every layer
of a role (mean cosine 0.9998 between layers on ViT, against about 0 for a random init), so the
predicted network is weight-tied and fine-tuning has to untie it. ``layer_alikeness`` measures
that and is differentiable, so GHN training can also penalise it (``TrainConfig.layer_diversity``
in ``logah.training``).
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from typing import Iterable

import torch

LAYER_INDEX = re.compile(r"\d+")


def is_weight_matrix(name: str, param: torch.Tensor) -> bool:
    """Every ≥ 2-D ``weight`` (linear, convolution, embedding, classifier), not biases, norms,
    class tokens or position embeddings."""
    return name.endswith("weight") and param.dim() >= 2


def in_block(name: str) -> bool:
    """Whether the parameter ``name`` belongs to one of the network's blocks (it has a layer
    index), not to its stem (patch or token embeddings, class token, position embeddings), its
    final norm or its head."""
    return LAYER_INDEX.search(name) is not None


def roles(params: Iterable[tuple[str, torch.Tensor]]) -> dict[str, list[torch.Tensor]]:
    """The weight matrices of ``(name, tensor)`` pairs grouped by role, in layer order; the
    tensors are the given ones (not detached), so what is computed from them keeps its graph."""
    grouped = defaultdict(list)
    for name, param in params:
        if is_weight_matrix(name, param):
            grouped[LAYER_INDEX.sub("*", name, count=1)].append(param)
    return dict(grouped)


def layer_similarity(tensors: list[torch.Tensor]) -> float:
    """Mean cosine similarity of the tensors, over every pair (NaN for fewer than two): 1.0 when
    every layer has the same weights, about 0 for independent random ones."""
    pairs = list(itertools.combinations(tensors, 2))
    if not pairs:
        return float("nan")
    return sum(float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))
               for a, b in pairs) / len(pairs)


def layer_alikeness(params: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The mean, over the roles with at least two layers, of the mean squared cosine similarity
    between the role's matrices in every pair of layers: 1 for copies (or sign-flipped copies)
    of one matrix in every layer, about 1 / size for independent random matrices. Squared, so
    that layers cannot lower it by alternating signs. Differentiable in ``params``. None for a
    network with no role of two layers (one block): it has nothing to compare, and a 0 would
    pull an average toward 'untied'."""
    terms = []
    for tensors in roles(params.items()).values():
        if len(tensors) < 2:
            continue
        unit = torch.nn.functional.normalize(torch.stack([t.flatten().float() for t in tensors]), dim=1)
        cosines = unit @ unit.T
        off_diagonal = ~torch.eye(len(tensors), dtype=torch.bool, device=cosines.device)
        terms.append(cosines[off_diagonal].pow(2).mean())
    return torch.stack(terms).mean() if terms else None
