"""How alike a trained GHN's predicted layers are on the held-out networks of its own training run.

    .venv/bin/python benchmarks/heldout_alikeness.py runs/ghns/a2f4f19a03452e11 [GHN ...]

GHN: a folder written by GHN training (``train-ghn --out``, or a GHN store folder), which holds
its ``train_config.json``. For each, the held-out networks of that run are drawn again (the same
seeds) and the saved GHN's prediction for each one of more than one block is scored with
``logah.layer_roles.layer_alikeness`` (1: every layer the same matrix; about 0: untied): the
figure a training now logs as ``heldout_layer_alikeness`` at its last checkpoint, recomputable
for GHNs trained before that metric left one-block networks out (init_study.md, "a
layer-diversity term"). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from logah.checkpoint import load_ghn  # noqa: E402
from logah.io import read_json  # noqa: E402
from logah.layer_roles import layer_alikeness  # noqa: E402
from logah.predict import predict_params  # noqa: E402
from logah.training import CONFIG_FILE, GHNTrainer, TrainConfig  # noqa: E402


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ghns", nargs="+", help="GHN training folders")
    args = parser.parse_args()
    print("| GHN | layer_diversity | seed | held-out depths | alikeness per network (depth > 1) | mean |")
    print("|---|---|---|---|---|---|")
    for folder in map(Path, args.ghns):
        config = TrainConfig.from_dict(read_json(folder / CONFIG_FILE, "GHN training config"))
        heldout = GHNTrainer(config).heldout
        ghn = load_ghn(folder)
        scores = [layer_alikeness(predict_params(ghn, arch)) for arch in heldout]
        values = [float(s) for s in scores if s is not None]
        mean = f"{np.mean(values):.4f}" if values else "– (no network of two blocks)"
        print(f"| {folder.name} | {config.layer_diversity:g} | {config.seed} "
              f"| {[a.depth for a in heldout]} | {', '.join(f'{v:.4f}' for v in values)} | {mean} |")


if __name__ == "__main__":
    main()
