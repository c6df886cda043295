"""Mimetic initialisation of attention: Trockman & Kolter, "Mimetic Initialization of
Self-Attention Layers" (ICML 2023).

Pre-trained vision transformers show two patterns in every attention layer: the product of the
query and key weights has a positive diagonal (a token attends to tokens like itself, and
through the position embeddings to its neighbours), and the product of the value and output
weights a negative one. Initialising a transformer so that it starts with these patterns,
without any data, trained ViTs on CIFAR-10 from scratch more than 5 points better in the
paper (smaller gains for language models). With row vectors ``x`` (the paper's convention) and
``Z`` a D×D matrix of independent N(0, 1/D) entries:

* each head's ``W_q W_kᵀ ≈ α₁ Z + β₁ I``: the target's SVD ``U Σ Vᵀ`` truncated to the head
  width d_h gives ``W_q = U Σ^½``, ``W_k = V Σ^½`` (a D×D product of rank d_h, so the best
  possible: the head's own d_h-dimensional slice of the identity, plus noise);
* the layer's ``W_v W_o ≈ α₂ Z − β₂ I`` over all heads at once (D×D, full rank: exact),
  ``W_v = U Σ^½``, ``W_o = Σ^½ Vᵀ``; head h takes the h-th block of d_h singular triplets, so
  its own product ``W_v^h W_o^h`` is a rank-d_h piece of the target with a negative diagonal.

The scalars are ``MimeticScalars``: α (the noise, which also makes heads differ) and β (the
diagonal) of each product. The defaults are the values the paper uses, α₁ = β₁ = 0.7 and
α₂ = β₂ = 0.4; a larger β / α makes the diagonal more prominent, and α → 0 leaves each head
exactly β × the projection on its subspace. Only the four projection matrices of each attention
layer change (``TargetFamily.attention_layers``: ViT, GPT-2, Llama alike); biases, norms,
embeddings and the MLPs keep the model's default init, so ``mimetic`` = ``random`` + attention
structure (GPT-2's 1/sqrt(2·n_layer) scale of the attention output projection is replaced too:
the product sets its scale). Cost: per layer, one D×D SVD per KV head and one more; no data.
Under Llama's rotary embeddings ``W_q W_kᵀ`` is the score's bilinear form at zero offset (other
offsets see it rotated).

Grouped-query attention (Llama, H query heads share H_kv < H key/value heads, g = H / H_kv per
group): the product *per query head* h is ``W_q^h W_k^{j}ᵀ`` and ``W_v^{j} W_o^h`` with j = h // g
the KV head it reads (Hugging Face's ``repeat_kv`` order). The shared factor of group j is made
as above from the target of the group's first query head (its key), or from the j-th block of
the layer's value target (its values; only H_kv·d_h of the D directions exist). Every other
query head h of the group draws its own target ``T_h`` (same β, independent Z) and fits its own
factor to it by least squares against the shared one, so its product is ``T_h`` restricted to the
group's subspace: the same identity part, a different noise part. That independent noise is
what breaks the symmetry between heads sharing a KV head (hence α > 0). With g = 1 the fit
reproduces the paper's factors exactly, so multi-head attention is the paper's construction,
and the layer's ``W_v W_o`` sums to ``−g β₂ ×`` a projection of rank H_kv·d_h = D / g: −β₂ on
average over the diagonal, as without grouping.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from logah.errors import LogahError
from logah.families import family_of
from logah.families.base import TargetArch


@dataclass(frozen=True)
class MimeticScalars:
    """α (noise) and β (identity) of ``W_q W_kᵀ ≈ α Z + β I`` and of ``W_v W_o ≈ α Z − β I``."""

    qk_alpha: float = 0.7
    qk_beta: float = 0.7
    vo_alpha: float = 0.4
    vo_beta: float = 0.4

    def validate(self) -> None:
        """α > 0 (it breaks the symmetry between heads), β ≥ 0, both finite numbers."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            low_open = f.name.endswith("alpha")
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value < 0 or (low_open and value == 0)):
                raise LogahError(f"mimetic {f.name} must be a finite number "
                                 f"{'> 0' if low_open else '≥ 0'}, got {value!r}")

    @classmethod
    def of(cls, record) -> "MimeticScalars":
        """The scalars a config names ``mimetic_qk_alpha``, ``mimetic_qk_beta``, ..."""
        return cls(**{f.name: getattr(record, f"mimetic_{f.name}")
                      for f in dataclasses.fields(cls)})


def _target(dim: int, alpha: float, beta: float, sign: int, generator) -> torch.Tensor:
    """``α Z + sign β I`` with Z of independent N(0, 1/D) entries, in float64."""
    noise = torch.randn(dim, dim, generator=generator, dtype=torch.float64) / math.sqrt(dim)
    return alpha * noise + sign * beta * torch.eye(dim, dtype=torch.float64)


@torch.no_grad()
def mimetic_attention(model: nn.Module, arch: TargetArch, seed: int,
                      scalars: MimeticScalars | None = None) -> nn.Module:
    """Give every attention layer of ``model`` (an ``arch`` of any family) the paper's
    structure, in place; everything else is left as it is. Reproducible from ``seed``."""
    scalars = scalars or MimeticScalars()
    scalars.validate()
    generator = torch.Generator().manual_seed(seed)
    for layer in family_of(arch).attention_layers(model, arch):
        dim = layer.q.shape[1]
        width = layer.q.shape[0] // layer.heads
        group = layer.heads // layer.kv_heads
        q, k, o = (torch.empty(t.shape, dtype=torch.float64) for t in (layer.q, layer.k, layer.o))
        v = torch.empty(layer.v.shape, dtype=torch.float64)
        # values: one target for the layer; KV head j owns its j-th block of singular triplets
        layer_goal = _target(dim, scalars.vo_alpha, scalars.vo_beta, -1, generator)
        u, s, _ = torch.linalg.svd(layer_goal)
        for j in range(layer.kv_heads):
            rows = slice(j * width, (j + 1) * width)
            value = u[:, rows] * s[rows].sqrt()                       # W_v^j, D × d_h
            v[rows] = value.T
            for h in range(j * group, (j + 1) * group):
                goal = (_target(dim, scalars.vo_alpha, scalars.vo_beta, -1, generator)
                        if h % group else layer_goal)
                # least squares against the shared values: (W_vᵀW_v)⁻¹ W_vᵀ T, W_vᵀW_v = Σ
                o[:, h * width:(h + 1) * width] = (value.T @ goal / s[rows, None]).T
        # queries and keys: one target per query head; KV head j takes its first head's keys
        for j in range(layer.kv_heads):
            first = _target(dim, scalars.qk_alpha, scalars.qk_beta, 1, generator)
            _, s, vh = torch.linalg.svd(first)
            key = vh[:width].T * s[:width].sqrt()                     # W_k^j, D × d_h
            k[j * width:(j + 1) * width] = key.T
            for h in range(j * group, (j + 1) * group):
                goal = first if h % group == 0 else _target(dim, scalars.qk_alpha,
                                                            scalars.qk_beta, 1, generator)
                # least squares against the shared keys: T W_k (W_kᵀW_k)⁻¹, W_kᵀW_k = Σ
                q[h * width:(h + 1) * width] = (goal @ key / s[:width]).T
        for view, value in ((layer.q, q), (layer.k, k), (layer.v, v), (layer.o, o)):
            view.copy_(value.to(view.dtype))
    return model

