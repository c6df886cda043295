"""The README's promise, by class: bad input exits with status 2, one line on stderr naming the
problem, no traceback, and nothing left where the output would have gone."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from logah.cli import main

ROOT = Path(__file__).resolve().parents[1]
# 2M wide: 48 TB of float32 weights, more than any disk or memory holds
HUGE_VIT = {"family": "vit", "num_layers": 1, "hidden_dim": 2_000_000, "num_heads": 1,
            "mlp_dim": 4, "image_size": 8, "patch_size": 4, "num_classes": 10}
TINY_VIT = {"family": "vit", "num_layers": 1, "hidden_dim": 16, "num_heads": 2, "mlp_dim": 32,
            "image_size": 8, "patch_size": 4, "num_classes": 10}
TRAIN = ["train-ghn", "--ghn", "logah-test", "--data", "digits", "--steps", "2",
         "--batch-size", "16"]
FINETUNE = ["finetune", "--target", "{tiny}", "--data", "digits", "--steps", "2",
            "--eval-batches", "1", "--batch-size", "16"]
NO_GPU = not torch.cuda.is_available()

# name -> (arguments, what stderr must say). {out} is the output location (it must stay absent,
# or as it was when the case creates it first); other {...} are files the case sets up.
CASES = {
    # 1. numbers that are not numbers, or not in range
    "finetune lr nan": (FINETUNE + ["--lr", "nan"], r"lr must be a finite number, got nan"),
    "finetune lr inf": (FINETUNE + ["--lr", "inf"], r"lr must be a finite number"),
    "finetune grad-clip nan": (FINETUNE + ["--grad-clip", "nan"], r"grad_clip must be a finite"),
    "finetune weight-decay nan": (FINETUNE + ["--weight-decay", "nan"], r"weight_decay must be a finite"),
    "finetune weight-decay negative": (FINETUNE + ["--weight-decay", "-1"], r"weight_decay must be >= 0"),
    "train lr 0": (TRAIN + ["--lr", "0"], r"train config: lr must be > 0, got 0"),
    "train lr nan": (TRAIN + ["--lr", "nan"], r"lr must be a finite number"),
    "train ema 1": (TRAIN + ["--ema", "1"], r"ema_decay must be in \[0, 1\)"),
    # 2. sizes that are zero or negative
    "train batch 0": (TRAIN[:-2] + ["--batch-size", "0"], r"batch_size must be > 0, got 0"),
    "train batch -4": (TRAIN[:-2] + ["--batch-size", "-4"], r"batch_size must be > 0, got -4"),
    "train steps 0": (TRAIN[:-4] + ["--steps", "0"], r"steps must be > 0"),
    "train meta-batch 0": (TRAIN + ["--meta-batch", "0"], r"meta_batch must be > 0"),
    "train seed -1": (TRAIN + ["--seed", "-1"], r"seed must be in \[0, 4.29\d+e\+09\], got -1"),
    "train hidden -8": (TRAIN + ["--hidden", "-8"], r"hidden must be positive"),
    "finetune batch 0": (FINETUNE[:-2] + ["--batch-size", "0"], r"batch_size must be > 0, got 0"),
    "finetune seed -1": (FINETUNE + ["--seed", "-1"], r"seed must be in \[0, "),
    "finetune eval-batches -1": (FINETUNE + ["--eval-batches", "-1"], r"eval_batches must be >= 0"),
    "finetune block 1": (["finetune", "--target", "gpt2-cpu-target", "--block-size", "1"],
                         r"block_size must be >= 2"),
    "evaluate batch 0": (["evaluate", "--target", "{tiny}", "--init", "random", "--data", "digits",
                          "--batch-size", "0"], r"batch_size must be > 0"),
    # 3. targets too large to build
    "predict huge": (["predict", "--ghn", "logah-test", "--target", "{huge}"],
                     r"cannot write .*out: \d+\.\d GiB of weights \(float32\) but .* GiB free"),
    "finetune huge": (["finetune", "--target", "{huge}", "--data", "digits", "--batch-size", "8"],
                      r"fine-tuning vit target needs about \d+\.\d GiB"),
    # 4. operating-system errors on outputs
    "predict parent is a file": (["predict", "--ghn", "logah-test", "--target", "{tiny}",
                                  "--out", "{file}/sub"], r"cannot write .*out/sub: .*out is a file"),
    "predict under /proc": (["predict", "--ghn", "logah-test", "--target", "{tiny}",
                             "--out", "/proc/logah-out"], r"cannot write /proc"),
    "train out is a file": (TRAIN + ["--out", "{file}"], r"exists and is not a folder"),
    "finetune out is a file": (FINETUNE + ["--out", "{file}"], r"exists and is not a folder"),
    "archs out is a folder": (["archs", "sample", "--space", "vits-cpu", "--n", "2",
                               "--out", "{json_folder}"], r"exists and is a folder"),
    # 7. Ray options that cannot work
    "workers -1": (TRAIN + ["--workers", "-1"], r"--workers must be a positive integer, got -1"),
    "workers 1000": (TRAIN + ["--workers", "1000"], r"--workers 1000 needs 1000 CPU .* has \d+"),
    # 8. devices that are not there
    **({"train --gpu": (TRAIN + ["--gpu"], r"'cuda': this machine has no GPU"),
        "finetune --gpu": (FINETUNE + ["--gpu"], r"'cuda': this machine has no GPU"),
        "evaluate --gpu": (["evaluate", "--target", "{tiny}", "--init", "random", "--data",
                            "digits", "--gpu"], r"no GPU"),
        "predict cuda": (["predict", "--ghn", "logah-test", "--target", "{tiny}",
                          "--device", "cuda"], r"no GPU"),
        "workers --gpu": (TRAIN + ["--workers", "1", "--gpu"], r"needs 1 GPU .* has 0")}
       if NO_GPU else {}),
    "predict cuda:99": (["predict", "--ghn", "logah-test", "--target", "{tiny}",
                         "--device", "cuda:99"], r"device 'cuda:99'"),
    "predict device tpu": (["predict", "--ghn", "logah-test", "--target", "{tiny}",
                            "--device", "tpu"], r"unknown device 'tpu'"),
    # 9. one overwrite rule
    "archs existing file": (["archs", "sample", "--space", "vits-cpu", "--n", "2",
                             "--out", "{json_file}"], r"already exists \(use --overwrite"),
    "predict overwrite a file": (["predict", "--ghn", "logah-test", "--target", "{tiny}",
                                  "--overwrite", "--out", "{file}"], r"exists and is not a folder"),
    "train resume and overwrite": (TRAIN + ["--resume", "--overwrite"], r"give one"),
    "train resume nothing": (TRAIN + ["--resume"], r"cannot resume: .* does not exist"),
    # 10. predicted folders that cannot be loaded
    "init corrupt gpt2": (["finetune", "--target", "{gpt_target}", "--init", "{corrupt_gpt}",
                           "--batch-size", "2", "--block-size", "16"],
                          r"not a loadable GPT-2 folder"),
    "init pickled gpt2": (["finetune", "--target", "{gpt_target}", "--init", "{pickled_gpt}",
                           "--batch-size", "2", "--block-size", "16"],
                          r"not a loadable GPT-2 folder"),
    "init corrupt vit": (FINETUNE + ["--init", "{corrupt_vit}"], r"missing or corrupt"),
}

GPT_TARGET = {"family": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2, "vocab_size": 4096,
              "n_positions": 32}


def _predicted_folder(path: Path, arch: dict) -> Path:
    from logah.ghn import build_ghn
    from logah.predict import predict_params, save_prediction
    from logah.presets import get_preset
    from logah.targets import arch_from_dict

    target = arch_from_dict(arch)
    save_prediction(target, predict_params(build_ghn(get_preset("logah-test")), target), path)
    return path


def _set_up(tmp_path: Path, args: list[str]) -> tuple[list[str], Path]:
    """The case's arguments with its files made; and its output location."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    out = tmp_path / "out"
    made = {}
    for arg in args:
        for key in re.findall(r"\{(\w+)\}", arg):
            if key in made:
                continue
            if key in ("tiny", "huge", "gpt_target"):
                path = inputs / f"{key}.json"
                path.write_text(json.dumps({"tiny": TINY_VIT, "huge": HUGE_VIT,
                                            "gpt_target": GPT_TARGET}[key]))
            elif key in ("file", "json_file"):
                path = out if key == "file" else tmp_path / "out.json"
                path.write_text("mine")
            elif key == "json_folder":
                path = tmp_path / "out.json"
                path.mkdir()
            elif key in ("corrupt_gpt", "pickled_gpt"):
                path = _predicted_folder(inputs / key, GPT_TARGET)
                weights = path / "model.safetensors"
                if key == "corrupt_gpt":
                    weights.write_bytes(weights.read_bytes()[:300])
                else:
                    torch.save({"lm_head.weight": torch.zeros(1)}, path / "pytorch_model.bin")
                    weights.unlink()
            elif key == "corrupt_vit":
                path = _predicted_folder(inputs / key, TINY_VIT)
                (path / "model.safetensors").write_bytes(b"\0" * 64)
            made[key] = path
    args = [re.sub(r"\{(\w+)\}", lambda m: str(made[m.group(1)]), a) for a in args]
    if "--out" not in args and args[0] != "evaluate":
        args += ["--out", str(out)]
    return args, out


def _snapshot(path: Path):
    if not path.exists():
        return None
    if path.is_file():
        return path.read_bytes()
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_message_exit_2_and_no_output(tmp_path, capsys, case):
    args, expected = CASES[case]
    args, out = _set_up(tmp_path, args)
    where = Path(args[args.index("--out") + 1]) if "--out" in args else out
    before = _snapshot(where)
    start = time.monotonic()
    assert main(args) == 2
    assert time.monotonic() - start < 60       # refused up front, not after a long run
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"logah {args[0]}: error: "), lines[0]
    assert re.search(expected, lines[0]), lines[0]
    assert _snapshot(where) == before          # nothing written, nothing removed
    if where.parent.is_dir() and where.parent != Path("/proc"):
        assert not [p for p in where.parent.iterdir() if p.name.startswith(".")]


def test_no_nan_model_is_ever_written(tmp_path):
    """A run that diverged despite valid settings stops with one message at its checkpoint
    instead of saving NaN weights (class 1's options never get that far)."""
    from logah.errors import LogahError
    from logah.predict import save_prediction
    from logah.targets import arch_from_dict, build_model

    arch = arch_from_dict(TINY_VIT)
    params = {k: v.detach() for k, v in build_model(arch, "cpu").state_dict().items()}
    params["conv_proj.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(LogahError, match="conv_proj.weight is not finite"):
        save_prediction(arch, params, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_json_written_is_valid_json():
    from logah.io import dumps

    text = dumps({"loss": float("nan"), "grad": [float("inf"), 1.5], "ok": 2})
    assert json.loads(text) == {"loss": None, "grad": [None, 1.5], "ok": 2}
    json.loads(text, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))


def test_the_python_api_validates_the_same_way():
    from logah.errors import LogahError
    from logah.finetune import FinetuneConfig
    from logah.tasks import DataConfig
    from logah.training import TrainConfig

    with pytest.raises(LogahError, match="lr must be a finite number"):
        TrainConfig(lr=float("nan")).validate()
    with pytest.raises(LogahError, match="batch_size must be > 0"):
        TrainConfig(data=DataConfig(batch_size=0)).validate()
    with pytest.raises(LogahError, match="momentum must be in"):
        FinetuneConfig(target=TINY_VIT, momentum=1.0).validate()
    with pytest.raises(LogahError, match="steps must be an integer"):
        FinetuneConfig.from_dict({"target": TINY_VIT, "steps": 2.5})
    with pytest.raises(LogahError, match="lr must be a number, got True"):
        FinetuneConfig.from_dict({"target": TINY_VIT, "lr": True})


def test_existing_outputs_are_replaced_only_with_overwrite_and_only_by_their_kind(tmp_path, capsys):
    out = tmp_path / "archs.json"
    args = ["archs", "sample", "--space", "vits-cpu", "--n", "2", "--out", str(out)]
    assert main(args) == 0
    first = out.read_text()
    assert main(args[:-4] + ["--n", "3", "--out", str(out)]) == 2
    assert out.read_text() == first
    assert main(args[:-4] + ["--n", "3", "--out", str(out), "--overwrite"]) == 0
    assert len(json.loads(out.read_text())) == 3
    capsys.readouterr()


def test_outputs_have_the_same_permissions_everywhere(tmp_path):
    """Weights, JSON and folders: what the umask allows, whoever wrote them."""
    from logah.io import DIR_MODE, FILE_MODE

    folder = _predicted_folder(tmp_path / "gpt", GPT_TARGET)
    assert main(["predict", "--ghn", "logah-test", "--target", "vit-cpu-target",
                 "--out", str(tmp_path / "vit")]) == 0
    assert main(["archs", "sample", "--space", "vits-cpu", "--n", "2",
                 "--out", str(tmp_path / "a.parquet")]) == 0
    modes = {p: p.stat().st_mode & 0o777 for p in tmp_path.rglob("*")}
    assert {m for p, m in modes.items() if p.is_file()} == {FILE_MODE}, modes
    assert {m for p, m in modes.items() if p.is_dir()} == {DIR_MODE}, modes
    assert (folder / "model.safetensors").is_file()


def test_two_predicts_racing_for_one_folder_cannot_both_succeed(tmp_path):
    """The existence check and the final rename are one: the slower writer is refused."""
    from logah.errors import LogahError
    from logah.io import atomic_dir

    target = tmp_path / "out"
    with pytest.raises(LogahError, match="already exists"):
        with atomic_dir(target) as slow:
            (slow / "a").write_text("slow")
            with atomic_dir(target) as fast:
                (fast / "a").write_text("fast")
    assert (target / "a").read_text() == "fast"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_folder_without_write_permission(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["predict", "--ghn", "logah-test", "--target", "vit-cpu-target",
                 "--out", str(locked / "out")]) == 2
    assert "Permission denied" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_exit_130(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "logah.cli", *TRAIN[:-4], "--steps",
                                "100000", "--batch-size", "16", "--out", str(out)],
                               cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "train_config.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == "logah train-ghn: interrupted"
    assert not out.exists()      # no checkpoint reached: nothing left behind
