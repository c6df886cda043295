"""Post-processing of raw decoder outputs into usable initial parameters (GHN-2/3 and LoGAH).

Decoders output numbers at an arbitrary scale; these fixed maps put each kind of tensor in the
range its layer expects, so that an untrained GHN already gives a network whose activations
neither explode nor vanish, and a trained one only has to learn directions:

* weights (≥ 2-D): rescaled to unit root-mean-square, then multiplied by sqrt(β / fan_in), β = 2,
  so every predicted weight has exactly the scale of He initialisation and the GHN controls its
  direction. GHN-3 applies the fan-in factor to the raw output, whose scale drifts with the
  decoder's; an untrained GHN then gives near-zero weights and vanishing gradients (we measured
  a loss stuck at ln(10) on Fashion-MNIST). LoGAH's own GPT-2 path also normalises by the std.
  The normalisation is folded into the decoders (an r × r computation for the low-rank one);
  GPT-2 residual projections (``c_proj``) are further divided by sqrt(2 · n_layer), GPT-2's rule;
* with ``GHNConfig.weight_scaling = "mean-field"`` (not the paper's; needs the low-rank decoder's
  unit grid of G rows) the fan-in factor is sqrt(β·G) / fan_in instead: He's at fan_in = G, but a
  sum over n inputs becomes an average. A predicted matrix is low rank, so the inputs it meets
  are aligned with its row space and its gain grows like sqrt(fan_in) under He's factor; with the
  unit grid a wider layer is a finer sampling of the same grid function, and the 1 / fan_in factor
  makes it compute (nearly) the same function at any width (a mean-field / integral-operator
  limit). On 6 × 96 targets (training space: width ≤ 64, depth ≤ 4), the same 2000-step run
  with He's factor gives a ViT 10.1% zero-shot test accuracy and with this one 42.8%; GPT-2
  validation perplexity goes from 347 to 230 (benchmarks/results/ghn_training.md);
* LayerNorm weights: 2·sigmoid(0.5·p), in (0, 2), equal to 1 at p = 0; LayerNorm biases and all
  other biases: tanh(0.2·p), in (-1, 1);
* embeddings (token, position, ViT position and class token): rescaled to root-mean-square 0.02,
  the scale of the init both torchvision's ViT and GPT-2 use (LoGAH leaves them raw). A pure
  rescaling (no centring) keeps the low-rank decoder's rank bound.

Every map is differentiable, so the task loss trains the GHN through them.
"""

from __future__ import annotations

import math

import torch

from logah.layout import BIAS, EMBEDDING, NORM, WEIGHT, ParamSpec

EMBEDDING_STD = 0.02


def weight_scale(spec: ParamSpec, *, beta: float, residual: bool, n_layer: int,
                 mean_field_width: int = 0) -> float:
    """The factor applied to a predicted weight. It is linear, so decoders fold it into a small
    factor of the prediction instead of touching the full tensor (GPT-2-L: 3 GB saved a pass).

    ``mean_field_width`` = R > 0 replaces He's sqrt(β / fan_in) by sqrt(β·R) / fan_in: equal at
    fan_in = R, but ∝ 1 / fan_in, so a sum over n inputs is an average (see the module docstring)."""
    if spec.kind != WEIGHT:
        return 1.0
    if mean_field_width:
        scale = math.sqrt(beta * mean_field_width) / spec.fan_in
    else:
        scale = math.sqrt(beta / spec.fan_in)
    return scale / math.sqrt(2 * n_layer) if residual else scale


def embedding_factor(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """The rescaling ``postprocess`` gives an embedding ``left @ rightᵀ``, computed from the
    factors (‖ABᵀ‖²_F = Σ (AᵀA) ⊙ (BᵀB): r × r work, not rows × cols)."""
    numel = left.shape[0] * right.shape[0]
    rms = torch.sqrt(((left.t() @ left) * (right.t() @ right)).sum() / numel)
    return EMBEDDING_STD / (rms + 1e-8)


def postprocess(spec: ParamSpec, raw: torch.Tensor, *, is_norm_bias: bool = False) -> torch.Tensor:
    """Map one raw predicted tensor (stored layout) to its initial value; weights come pre-scaled."""
    if spec.kind == WEIGHT:
        return raw
    if spec.kind == NORM:
        return torch.tanh(0.2 * raw) if is_norm_bias else 2 * torch.sigmoid(0.5 * raw)
    if spec.kind == BIAS:
        return torch.tanh(0.2 * raw)
    assert spec.kind == EMBEDDING, spec.kind
    rms = torch.linalg.vector_norm(raw) / math.sqrt(raw.numel())
    factor = EMBEDDING_STD / (rms + 1e-8)
    if raw.requires_grad:
        return raw * factor
    return raw.mul_(factor)   # inference: the decoder's fresh tensor is ours to rescale in place
