"""Golden outputs: refactors must not change what the platform computes.

Recorded once (``python tests/test_golden.py --record``) and kept in ``tests/golden.json``:

* the predicted tensors of named targets from seeded, untrained GHNs of both decoders (the unit
  grid and mean-field scaling of the CPU study preset included), as SHA-256 hashes of their bytes;
* the per-step losses of a few GHN training and fine-tuning steps.

On a machine whose CPU runs the same torch kernels as the recording machine (same
``torch.backends.cpu.get_cpu_capability()``), hashes and losses must be identical, bit for bit.
Elsewhere a matrix product may sum in another order, so the test compares each tensor's float64
sum and sum of squares, and the losses, to a relative tolerance of 1e-5 instead.

Update the record only for a change that is meant to change these numbers, and say so in the
commit (``git log -p tests/golden.json`` lists every such change with its reason).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

GOLDEN_FILE = Path(__file__).with_name("golden.json")
PREDICTIONS = [("logah-test", "vit-cpu-target"), ("logah-test", "gpt2-cpu-target"),
               ("ghn3-test", "vit-cpu-target"), ("ghn3-test", "gpt2-cpu-target"),
               ("logah-cpu-grid-mf", "vit-cpu-target"), ("logah-cpu-grid-mf", "gpt2-cpu-target"),
               ("logah-test", "tied-gpt2")]
REL_TOL = 1e-5


def _tensor_record(tensor: torch.Tensor) -> dict:
    t = tensor.detach().contiguous().cpu()
    wide = t.double()
    return {"sha256": hashlib.sha256(t.numpy().tobytes()).hexdigest()[:24],
            "shape": list(t.shape), "sum": float(wide.sum()), "sumsq": float((wide ** 2).sum())}


def _target(name: str):
    from logah.targets import resolve_target

    if name == "tied-gpt2":   # the tied LM head is the token embedding: another output node
        import dataclasses

        return dataclasses.replace(resolve_target("gpt2-cpu-target"), tie_word_embeddings=True)
    return resolve_target(name)


def predictions() -> dict:
    from logah.checkpoint import resolve_ghn
    from logah.predict import predict_params

    records = {}
    for preset, target in PREDICTIONS:
        params = predict_params(resolve_ghn(preset, seed=0), _target(target))
        records[f"{preset} -> {target}"] = {name: _tensor_record(params[name])
                                            for name in sorted(params)}
    return records


def training_losses(tmp: Path) -> dict:
    """Losses of short GHN training and fine-tuning runs (ViT on digits, GPT-2 on Shakespeare)."""
    from logah.archs import get_space, space_to_dict
    from logah.finetune import FinetuneConfig, finetune
    from logah.presets import get_preset
    from logah.targets import arch_to_dict
    from logah.tasks import DataConfig
    from logah.training import TrainConfig, train_ghn

    digits = DataConfig(dataset="digits", batch_size=32, eval_batches=2)
    text = DataConfig(dataset="shakespeare", batch_size=4, block_size=32, vocab_size=1024,
                      eval_batches=2)
    spaces = {"vit": space_to_dict(get_space("vits-cpu", image_size=16, patch_sizes=(4,),
                                             num_archs=8)),
              "gpt2": space_to_dict(get_space("gpts-cpu", n_positions=64, num_archs=4))}
    data = {"vit": digits, "gpt2": text}
    out: dict = {}
    for family in ("vit", "gpt2"):
        config = TrainConfig(ghn=get_preset("logah-test"), space=spaces[family], data=data[family],
                             steps=4, checkpoint_every=4, log_every=1, warmup_steps=2,
                             heldout_archs=1)
        history = train_ghn(config, tmp / f"ghn-{family}", progress=False)
        out[f"ghn {family}"] = [m["loss"] for m in history]
        target = _target("vit-cpu-target" if family == "vit" else "gpt2-cpu-target")
        if family == "vit":
            import dataclasses

            target = dataclasses.replace(target, image_size=16)
        for init in ("random", "logah"):
            tuning = FinetuneConfig(target=arch_to_dict(target), init=init,
                                    ghn=str(tmp / f"ghn-{family}") if init == "logah" else None,
                                    data=data[family], steps=3, eval_every=1, final_test=False,
                                    optimizer="sgd" if family == "vit" else "adamw", lr=0.01)
            finetune(tuning, tmp / f"ft-{family}-{init}", progress=False)
            lines = (tmp / f"ft-{family}-{init}" / "metrics.jsonl").read_text().splitlines()
            out[f"finetune {family} {init}"] = [json.loads(line).get("train_loss")
                                                for line in lines]
    return out


def record_all(tmp: Path) -> dict:
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__, "predictions": predictions(),
            "losses": training_losses(tmp)}


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= REL_TOL * max(abs(a), abs(b), 1e-12)


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN_FILE.read_text())


def _exact(golden: dict) -> bool:
    return golden["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_predictions_match_the_golden_record(golden):
    now = predictions()
    assert now.keys() == golden["predictions"].keys()
    for key, tensors in golden["predictions"].items():
        assert now[key].keys() == tensors.keys(), key
        for name, expected in tensors.items():
            got = now[key][name]
            assert got["shape"] == expected["shape"], (key, name)
            if _exact(golden):
                assert got["sha256"] == expected["sha256"], (key, name)
            else:
                assert _close(got["sum"], expected["sum"]), (key, name)
                assert _close(got["sumsq"], expected["sumsq"]), (key, name)


def test_training_losses_match_the_golden_record(golden, tmp_path):
    now = training_losses(tmp_path)
    assert now.keys() == golden["losses"].keys()
    for key, expected in golden["losses"].items():
        got = now[key]
        assert len(got) == len(expected), key
        for a, b in zip(got, expected):
            if a is None or b is None:
                assert a is b, key
            elif _exact(golden):
                assert a == b, (key, got, expected)
            else:
                assert _close(a, b), (key, got, expected)


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_golden.py --record   (rewrites tests/golden.json)")
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        GOLDEN_FILE.write_text(json.dumps(record_all(Path(folder)), indent=1) + "\n")
    print(f"wrote {GOLDEN_FILE}")
