"""What a GHN's prediction looks like next to the target's default init, per weight-matrix role.

    .venv/bin/python benchmarks/prediction_structure.py GHN [GHN ...] --target vit-cpu-target

GHN: a checkpoint folder, or a preset name for an untrained GHN of that preset (seed 0). For each
role of a weight matrix (the parameter name with its layer index replaced by ``*``, e.g.
``encoder.layers.encoder_layer_*.mlp.0.weight``) and each GHN checkpoint: the numerical rank
(singular values above 1e-3 of the largest; mean over layers), the RMS of the prediction and of
the library's default init (seed 0), and how alike the layers are: the mean cosine similarity of
the role's matrix in every pair of layers (1.0: every layer gets the same weights; about 0 for a
random init), and how strong one predicted direction is: the RMS of a matrix's non-zero
singular values over the RMS of the default init's (mean over layers; 1 is what
``--rescale-directions`` sets, a rank-r prediction of a full matrix's norm is about
√(min dim / r) × as strong). Why it matters: a prediction whose matrices have rank r and are copies of one
another across depth is a weight-tied, low-rank network, and fine-tuning has to break both
(benchmarks/results/init_study.md). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from logah.checkpoint import resolve_ghn  # noqa: E402
from logah.inits import default_model  # noqa: E402
from logah.layer_roles import layer_similarity, roles  # noqa: E402
from logah.predict import predict_params  # noqa: E402
from logah.targets import resolve_target  # noqa: E402


def numerical_rank(matrix: torch.Tensor) -> int:
    values = torch.linalg.svdvals(matrix.reshape(matrix.shape[0], -1).double())
    return int((values > 1e-3 * values[0]).sum())


def direction_strength(matrix: torch.Tensor, default: torch.Tensor) -> float:
    """RMS of ``matrix``'s non-zero singular values over the RMS of ``default``'s."""
    values = torch.linalg.svdvals(matrix.reshape(matrix.shape[0], -1).double())
    own = torch.linalg.svdvals(default.reshape(matrix.shape[0], -1).double())
    kept = values[values > 1e-3 * values[0]]
    if not own.max() > 0:      # a zero default (torchvision's classifier): no strength to compare
        return float("nan")
    return float(kept.pow(2).mean().sqrt() / own.pow(2).mean().sqrt())


def rms(tensors: list[torch.Tensor]) -> float:
    return float(torch.cat([t.flatten() for t in tensors]).pow(2).mean().sqrt())


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ghns", nargs="+", help="GHN checkpoint folders or preset names")
    parser.add_argument("--target", default="vit-cpu-target")
    args = parser.parse_args()
    arch = resolve_target(args.target)
    default = roles(default_model(arch, seed=0).named_parameters())
    print(f"target {args.target}; default init: seed 0\n")
    print("| role | layers | GHN | rank (of min dim) | RMS predicted / default "
          "| direction strength predicted / default | layer similarity predicted / default |")
    print("|---|---|---|---|---|---|---|")
    for ghn in args.ghns:
        predicted = roles(predict_params(resolve_ghn(ghn), arch).items())
        for role, tensors in predicted.items():
            ranks = [numerical_rank(t) for t in tensors]
            strength = [direction_strength(t, d) for t, d in zip(tensors, default[role])]
            print(f"| `{role}` | {len(tensors)} | {os.path.basename(ghn.rstrip('/'))} "
                  f"| {sum(ranks) / len(ranks):.0f} (of {min(tensors[0].shape[0], tensors[0][0].numel())}) "
                  f"| {rms(tensors):.4f} / {rms(default[role]):.4f} "
                  f"| {sum(strength) / len(strength):.2f} "
                  f"| {layer_similarity(tensors):.4f} / {layer_similarity(default[role]):.4f} |")


if __name__ == "__main__":
    main()
