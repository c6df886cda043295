"""Zero-shot accuracy of a trained ViT GHN on targets deeper and/or wider than its space.

    .venv/bin/python benchmarks/ghn_generalisation.py runs/fmnist-ghn

Predicts ViTs (patch 4, 32x32, 10 classes) of each depth x width with the GHN in the given
training output folder and evaluates them, with no fine-tuning, on the first 1024 Fashion-MNIST
test images. Prints a markdown table (see results/ghn_training.md).
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from logah.checkpoint import load_ghn  # noqa: E402
from logah.predict import bound_forward, predict_params  # noqa: E402
from logah.families.vit import ViTArch  # noqa: E402
from logah.targets import build_model  # noqa: E402
from logah.tasks import DataConfig, make_task  # noqa: E402

SHAPES = [(4, 48), (4, 64), (6, 64), (4, 96), (2, 96), (6, 96), (8, 128)]


def accuracies(ghn) -> list[str]:
    data = DataConfig(dataset="fashion-mnist", eval_split="test", eval_batches=8, batch_size=128)
    cells = []
    for depth, width in SHAPES:
        arch = ViTArch(num_layers=depth, hidden_dim=width, num_heads=4, mlp_dim=4 * width,
                       image_size=32, patch_size=4, num_classes=10)
        task = make_task(arch, data)
        params, model = predict_params(ghn, arch), build_model(arch).eval()
        accuracy = task.evaluate(lambda x, m=model, p=params, a=arch: bound_forward(m, p, a, x),
                                 "cpu")["accuracy"]
        cells.append(f"{100 * accuracy:.1f}%")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a logah train-ghn output folder")
    args = parser.parse_args()
    print("| depth × width | " + " | ".join(f"{d} × {w}" for d, w in SHAPES) + " |")
    print("|---" * (len(SHAPES) + 1) + "|")
    print("| accuracy | " + " | ".join(accuracies(load_ghn(args.run))) + " |")


if __name__ == "__main__":
    main()
