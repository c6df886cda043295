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
from free_ports import free_port

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
    # init levers on an init they do not apply to
    "finetune random --mimetic-attention": (FINETUNE + ["--init", "random", "--mimetic-attention"],
                                            r"mimetic_attention replaces a GHN prediction's attention"),
    "finetune lsuv --unit-variance": (FINETUNE + ["--init", "lsuv", "--unit-variance"],
                                      r"init lsuv already ends with unit output variance"),
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
    # 11. a JSON value of the wrong type, in any file we read: the file, the field, the type
    # expected and the value found
    "describe tie 'no'": (["archs", "describe", "{tie_no}"],
                          r"tie_no.json: GPT2Arch: tie_word_embeddings must be true or false, got 'no'"),
    "predict tie 'no'": (["predict", "--ghn", "logah-test", "--target", "{tie_no}"],
                         r"tie_no.json: .*tie_word_embeddings must be true or false"),
    "finetune heads '2'": (["finetune", "--target", "{heads_str}", "--data", "digits"],
                           r"heads_str.json: ViTArch: num_heads must be a positive integer, got '2'"),
    "ghn-info metadata a string": (["ghn-info", "{ghn_metadata_str}"],
                                   r"ghn.json: metadata must be a JSON object, got \"oops\" \(a string\)"),
    "predict metadata a string": (["predict", "--ghn", "{ghn_metadata_str}", "--target", "{tiny}"],
                                  r"ghn.json: metadata must be a JSON object"),
    "init logah metadata a string": (FINETUNE + ["--init", "logah", "--ghn", "{ghn_metadata_str}"],
                                     r"ghn.json: metadata must be a JSON object"),
    "predict num_outputs a string": (["predict", "--ghn", "{ghn_outputs_str}", "--target", "{tiny}"],
                                     r"metadata.trained_on.num_outputs must be an integer, got \"ten\""),
    "ghn-info config a list": (["ghn-info", "{ghn_config_list}"], r"ghn.json: config must be a JSON object"),
    "init folder arch.json heads '2'": (FINETUNE + ["--init", "{vit_arch_str}"],
                                        r"arch.json: ViTArch: num_heads must be a positive integer"),
    "finetune --config amp 'no'": (FINETUNE + ["--config", "{settings_amp}"],
                                   r"amp must be true or false, got 'no'"),
    "train --set tokenizer a number": (TRAIN + ["--set", "data.tokenizer=5"],
                                       r"data config: tokenizer must be a string, got 5"),
    "report objectives a string": (["report", "{study_objectives_str}"],
                                   r"study.json: objectives must be a list, got \"best\" \(a string\)"),
    "tokenizer vocab id a string": (["finetune", "--target", "{gpt_target}", "--tokenizer", "{tok_vocab_str}",
                                     "--batch-size", "2", "--block-size", "16"],
                                    r"vocab.json: token a must be an integer, got \"1\" \(a string\)"),
    "tokenizer merge of three": (["finetune", "--target", "{gpt_target}", "--tokenizer", "{tok_merge_3}",
                                  "--batch-size", "2", "--block-size", "16"],
                                 r"merges.txt: merge 1 must be two tokens separated by a space, got 'a b c'"),
    "report swept a string": (["report", "{study_swept_str}"],
                              r"study.json: swept must be a list, got \"rank\" \(a string\)"),
    # 12. outputs named by a path that cannot be meant, or that --overwrite must not empty
    "predict --out ''": (["predict", "--ghn", "logah-test", "--target", "{tiny}", "--out", ""],
                         r"argument --out: an empty path names no output"),
    "train --out ''": (TRAIN + ["--out", ""], r"argument --out: an empty path names no output"),
    "report -o ''": (["report", "{failed_study}", "-o", ""], r"argument -o/--out: an empty path"),
    "predict --out . --overwrite": (["predict", "--ghn", "logah-test", "--target", "{tiny}",
                                     "--overwrite", "--out", "{cwd}"], r"holds the current folder"),
    "predict --out .. --overwrite": (["predict", "--ghn", "logah-test", "--target", "{tiny}",
                                      "--overwrite", "--out", "{cwd_parent}"], r"holds the current folder"),
    "predict overwrite a folder not ours": (["predict", "--ghn", "logah-test", "--target", "{tiny}",
                                             "--overwrite", "--out", "{foreign}"],
                                            r"does not look like this command's output \(no arch.json\)"),
    "train overwrite a folder not ours": (TRAIN + ["--overwrite", "--out", "{foreign}"],
                                          r"does not look like .* \(no train_config.json\)"),
    "report overwrite a file not a report": (["report", "{failed_study}", "--overwrite", "-o",
                                              "{notes}"], r"which is not an HTML report"),
    # 13. sizes estimated before work starts: a target too deep for its graph
    "predict 100000 blocks": (["predict", "--ghn", "logah-test", "--target", "{deep}"],
                              r"graph of this vit target \(100000 blocks, about [\d,]+ nodes\) needs"),
    "evaluate 100000 blocks": (["evaluate", "--target", "{deep}", "--init", "logah", "--ghn", "logah-test",
                                "--data", "digits"], r"100000 blocks"),
    # 14. results that are not numbers: a GHN with NaN weights predicts NaN targets
    "predict NaN GHN": (["predict", "--ghn", "{ghn_nan}", "--target", "{tiny}"],
                        r"GHN checkpoint .*: parameter .* is not finite"),
    "evaluate NaN GHN": (["evaluate", "--target", "{tiny}", "--init", "logah", "--ghn", "{ghn_nan}",
                          "--data", "digits"], r"is not finite"),
    # 15. Ray options that cannot work, refused before Ray starts
    "address nothing listens": (TRAIN + ["--workers", "1", "--address", "127.0.0.1:{free_port}"],
                                r"--address 127.0.0.1:\d+: no Ray cluster answers there"),
    "address ray:// nothing listens": (TRAIN + ["--workers", "1", "--address", "ray://127.0.0.1:{free_port}"],
                                       r"no Ray cluster answers there"),
}

GPT_TARGET = {"family": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2, "vocab_size": 4096,
              "n_positions": 32}
# architecture files with one field of the wrong type, and one too deep to trace
ARCH_FILES = {"tiny": TINY_VIT, "huge": HUGE_VIT, "gpt_target": GPT_TARGET,
              "tie_no": {**GPT_TARGET, "tie_word_embeddings": "no"},
              "heads_str": {**TINY_VIT, "num_heads": "2"},
              "deep": {**TINY_VIT, "num_layers": 100_000}}
# GHN checkpoints whose ghn.json has one field of the wrong type: field path -> value
GHN_EDITS = {"ghn_metadata_str": (("metadata",), "oops"),
             "ghn_outputs_str": (("metadata", "trained_on", "num_outputs"), "ten"),
             "ghn_config_list": (("config",), [])}
# study folders whose study.json has one field of the wrong type
STUDY_EDITS = {"study_objectives_str": {"objectives": "best"},
               "study_swept_str": {"swept": "rank"}}
STUDY_RECORD = {"name": "s", "objectives": [{"column": "best", "metric": "val_accuracy", "mode": "max"}],
                "swept": ["ghn_training.ghn.rank"], "question": "?"}


def failed_study(path: Path, trials: int = 2) -> Path:
    """A study folder as the runner leaves it when every trial failed at once (no step reported):
    study.json, each trial's record, and the tables."""
    from logah.study.tables import write_tables

    for number in range(trials):
        folder = path / "trials" / f"t{number}"
        folder.mkdir(parents=True)
        (folder / "record.json").write_text(json.dumps(
            {"trial_id": f"t{number}", "status": "FAILED", "user_error": True,
             "error": "LogahError: unknown dataset 'nonexistent'",
             "settings": {"ghn_training.ghn.rank": 2 + number}}))
    (path / "study.json").write_text(json.dumps({**STUDY_RECORD, "folder": str(path)}))
    write_tables(path)
    return path


def _predicted_folder(path: Path, arch: dict) -> Path:
    from logah.ghn import build_ghn
    from logah.predict import predict_params, save_prediction
    from logah.presets import get_preset
    from logah.targets import arch_from_dict

    target = arch_from_dict(arch)
    save_prediction(target, predict_params(build_ghn(get_preset("logah-test")), target), path)
    return path


def _ghn_folder(path: Path, nan: bool = False) -> Path:
    """An untrained logah-test checkpoint that says it was trained on digits (with a NaN weight:
    written past ``save_ghn``, which refuses one)."""
    from safetensors.torch import save_file

    from logah.checkpoint import WEIGHTS_FILE, save_ghn
    from logah.ghn import build_ghn
    from logah.presets import get_preset

    ghn = build_ghn(get_preset("logah-test"), seed=0)
    save_ghn(ghn, path, {"trained_on": {"family": "vit", "dataset": "digits", "num_outputs": 10}})
    if nan:
        state = {k: v.detach().clone() for k, v in ghn.state_dict().items()}
        next(iter(state.values())).view(-1)[0] = float("nan")
        save_file(state, str(path / WEIGHTS_FILE))
    return path


def _edit_json(path: Path, keys: tuple, value) -> None:
    record = json.loads(path.read_text())
    inner = record
    for key in keys[:-1]:
        inner = inner[key]
    inner[keys[-1]] = value
    path.write_text(json.dumps(record))


def _set_up(tmp_path: Path, args: list[str]) -> tuple[list[str], Path]:
    """The case's arguments with its files made; and its output location. ``{cwd}`` runs the
    case in a folder holding a file of the user's and stands for ``.``; ``{cwd_parent}`` for
    its parent."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    out = tmp_path / "out"
    made = {}
    for arg in args:
        for key in re.findall(r"\{(\w+)\}", arg):
            if key in made:
                continue
            if key in ARCH_FILES:
                path = inputs / f"{key}.json"
                path.write_text(json.dumps(ARCH_FILES[key]))
            elif key in GHN_EDITS:
                path = _ghn_folder(inputs / key)
                _edit_json(path / "ghn.json", *GHN_EDITS[key])
            elif key == "ghn_nan":
                path = _ghn_folder(inputs / key, nan=True)
            elif key in STUDY_EDITS:
                path = inputs / key
                path.mkdir()
                (path / "study.json").write_text(json.dumps({**STUDY_RECORD, **STUDY_EDITS[key]}))
            elif key in ("tok_vocab_str", "tok_merge_3"):
                path = inputs / key
                path.mkdir()
                vocab = {"a": "1", "b": 2} if key == "tok_vocab_str" else {"a": 0, "b": 1, "ab": 2}
                (path / "vocab.json").write_text(json.dumps(vocab))
                (path / "merges.txt").write_text("#version: 0.2\n" + ("a b\n" if key == "tok_vocab_str" else "a b c\n"))
            elif key == "failed_study":
                path = failed_study(inputs / key)
            elif key == "vit_arch_str":
                path = _predicted_folder(inputs / key, TINY_VIT)
                _edit_json(path / "arch.json", ("num_heads",), "2")
            elif key == "settings_amp":
                path = inputs / "settings.json"
                path.write_text(json.dumps({"amp": "no"}))
            elif key in ("cwd", "cwd_parent"):
                here = tmp_path / "work" / "here"
                here.mkdir(parents=True)
                (here / "thesis.tex").write_text("mine")
                os.chdir(here)
                path = "." if key == "cwd" else ".."
            elif key == "foreign":
                path = out
                path.mkdir()
                (path / "notes.txt").write_text("mine")
            elif key == "notes":
                path = tmp_path / "notes.html"
                path.write_text("my notes, not a report")
            elif key == "free_port":
                path = free_port()
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
    writes = args[0] not in ("evaluate", "ghn-info") and args[:2] != ["archs", "describe"]
    if writes and "--out" not in args and "-o" not in args:
        args += ["--out", str(out)]
    return args, out


def _snapshot(path: Path):
    if not path.exists():
        return None
    if path.is_file():
        return path.read_bytes()
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_message_exit_2_and_no_output(tmp_path, capsys, monkeypatch, case):
    monkeypatch.chdir(tmp_path)               # a case may run in a folder of its own ({cwd})
    args, expected = CASES[case]
    args, out = _set_up(tmp_path, args)
    flag = next((f for f in ("--out", "-o") if f in args), None)
    where = Path(args[args.index(flag) + 1] or ".") if flag else out
    before = _snapshot(where)
    start = time.monotonic()
    assert main(args) == 2
    assert time.monotonic() - start < 30       # refused up front, not after a long run
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


# --- studies: refused before Ray starts, and nothing left where the study would have gone ------
STUDY_CASES = {
    "real range with a step": (["--sweep", "finetune.lr=0.1:0.2:0"], r"a range of reals takes no step \('0'\)"),
    "integer range with step 0": (["--sweep", "ghn_training.ghn.rank=2:8:0"],
                                  r"has step 0; a step must be a positive integer"),
    "a swept value with no valid trial": (["--sweep", "ghn_training.ghn.rank=1:1000000"],
                                          r"swept ghn_training.ghn.rank=1000000 gives no valid trial"),
    "unknown dataset": (["--set", "ghn_training.data.dataset=nonexistent"], r"unknown dataset 'nonexistent'"),
    "seed -1": (["--seed", "-1"], r"--seed must be a whole number"),
    "optuna storage bogus": (["--optuna-storage", "bogus://x"], r"--optuna-storage bogus://x: "),
    "optuna storage no such sqlite folder": (["--optuna-storage", "sqlite:////nonexistent/dir/o.db"],
                                             r"--optuna-storage sqlite:////nonexistent"),
    "storage ''": (["--storage", ""], r"argument --storage: an empty path names no output"),
    "ghn-store ''": (["--ghn-store", ""], r"argument --ghn-store: an empty path"),
    "ghn-store a file": (["--ghn-store", "{file}"], r"--ghn-store .* is a file, not a folder"),
}


@pytest.mark.parametrize("case", list(STUDY_CASES))
def test_a_study_refused_is_one_line_exit_2_and_leaves_no_folder(tmp_path, capsys, case):
    """Whatever can be checked before Ray is: one line, exit 2, and neither the study folder
    nor the storage folder the set-up would have created is left (a later run of the same name
    is not blocked by a leftover lock)."""
    import importlib.util

    from logah.study.cli import main as study_main

    spec = importlib.util.spec_from_file_location("rank_sweep", ROOT / "studies" / "rank_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args, expected = STUDY_CASES[case]
    (tmp_path / "file").write_text("mine")
    args = [a.replace("{file}", str(tmp_path / "file")) for a in args]
    storage = tmp_path / "new" / "studies"
    if "--storage" not in args:
        args = ["--storage", str(storage), "--name", "s", *args]
    start = time.monotonic()
    assert study_main(module.STUDY, args) == 2
    assert time.monotonic() - start < 30
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert lines[0].startswith("rank_sweep: error: ") and re.search(expected, lines[0]), lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]     # not even --storage


def test_a_study_whose_every_trial_failed_has_valid_tables_and_a_report(tmp_path, capsys):
    """Trials that all failed before reporting a step (an unknown dataset, a GHN store that is
    a file) still give a trial table with their errors, a step table with its columns, and a
    report that lists them; also for a study written before the step table had columns."""
    import pandas as pd

    study = failed_study(tmp_path / "s")
    trials, steps = pd.read_parquet(study / "trials.parquet"), pd.read_parquet(study / "steps.parquet")
    assert list(trials["status"]) == ["FAILED", "FAILED"]
    assert {"trial_id", "phase", "step"} <= set(steps.columns) and steps.empty
    assert main(["report", str(study)]) == 0
    assert "unknown dataset" in (study / "report.html").read_text()
    pd.DataFrame().to_parquet(study / "steps.parquet")       # as an older runner wrote it
    assert main(["report", str(study), "--overwrite"]) == 0
    capsys.readouterr()


FULL_DISK = {   # name -> arguments (the output is {out}); every write fails past 4 KiB
    "predict": ["predict", "--ghn", "logah-test", "--target", "vit-cpu-target", "--out", "{out}"],
    "archs sample": ["archs", "sample", "--space", "vits-cpu", "--n", "100", "--out", "{out}.json"],
    "finetune": FINETUNE[:2] + ["{tiny}"] + FINETUNE[3:] + ["--out", "{out}"],
    "report": ["report", "{study}", "-o", "{out}.html"],
}


@pytest.mark.parametrize("case", list(FULL_DISK))
def test_a_full_disk_is_one_line_naming_the_path(tmp_path, capsys, case):
    """A write that the operating system refuses part-way (here: the file-size limit, which
    fails a write as a full disk does, with EFBIG instead of ENOSPC), whether Python or a
    library (safetensors, pyarrow) was writing: one line naming the path, exit 2, nothing left."""
    import resource

    (tmp_path / "tiny.json").write_text(json.dumps(TINY_VIT))
    study = failed_study(tmp_path / "study")
    args = [a.replace("{out}", str(tmp_path / "out")).replace("{tiny}", str(tmp_path / "tiny.json"))
            .replace("{study}", str(study)) for a in FULL_DISK[case]]
    before = sorted(map(str, tmp_path.rglob("*")))
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a failed write, not a killed process
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))
    try:
        code = main(args)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert re.fullmatch(rf"logah {args[0]}: error: cannot write {tmp_path}/out\S*: File too large", lines[-1])
    assert not [line for line in lines if "error" in line or "Traceback" in line][:-1], lines
    assert sorted(map(str, tmp_path.rglob("*"))) == before


@pytest.mark.parametrize("command", ["finetune", "evaluate"])
def test_a_nan_result_never_exits_0(tmp_path, capsys, monkeypatch, command):
    """A run that ends with a NaN metric (here stubbed in) says so and exits 2, whatever it did
    on the way; train-ghn's held-out metrics and predict's tensors are guarded the same way
    (``cases`` above: a GHN with a NaN weight)."""
    import logah.finetune

    nan = float("nan")
    monkeypatch.setattr(logah.finetune, "finetune", lambda *a, **k: {"final_val_accuracy": 0.5,
                                                                      "test_accuracy": nan})
    monkeypatch.setattr(logah.finetune, "evaluate_initialised", lambda *a, **k: {"val_accuracy": nan})
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_VIT))
    args = [command, "--target", str(tmp_path / "tiny.json"), "--data", "digits"]
    assert main(args + (["--out", str(tmp_path / "out")] if command == "finetune" else [])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(r"error: the run's result is not a number: \w+_accuracy nan", err[0]), err


def test_logah_debug_shows_the_cause_that_the_one_line_message_hides(tmp_path, capsys, monkeypatch):
    """A library's exception behind a LogahError is hidden from users (``from None``) and shown,
    with the whole traceback, to a developer who sets LOGAH_DEBUG=1; the last line is the same."""
    settings = tmp_path / "settings.json"
    settings.write_text("{not json")
    argv = ["finetune", "--target", json.dumps(TINY_VIT), "--config", str(settings), "--out",
            str(tmp_path / "out")]
    monkeypatch.delenv("LOGAH_DEBUG", raising=False)
    assert main(argv) == 2
    quiet = capsys.readouterr().err
    assert "Traceback" not in quiet and "not a JSON file" in quiet
    monkeypatch.setenv("LOGAH_DEBUG", "1")
    assert main(argv) == 2
    loud = capsys.readouterr().err
    assert "Traceback" in loud and "json.decoder.JSONDecodeError" in loud
    assert loud.strip().splitlines()[-1] == quiet.strip()
    assert not (tmp_path / "out").exists()
