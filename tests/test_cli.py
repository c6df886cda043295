"""The ``logah`` command: documented outputs, and one clear error with no output on bad input."""

import json
import subprocess
import sys

import pytest

from logah.cli import main
from logah.presets import PAPER_PARAMS

# docs/design.md §3.3: exact module counts of the paper's LoGAH (Table 1 rounds 2.54M to 2.5M).
EXACT_LOGAH = {"logah-t": 2.54e6, "logah-s": 21.40e6, "logah-b": 78.22e6, "logah-l": 289.36e6}


@pytest.mark.parametrize("preset", sorted(PAPER_PARAMS))
def test_ghn_info_counts_match_the_paper(capsys, preset):
    assert main(["ghn-info", preset, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    reference = EXACT_LOGAH.get(preset, PAPER_PARAMS[preset])
    assert abs(info["params"] / reference - 1) < 0.01, info["params"]
    assert abs(info["params"] / PAPER_PARAMS[preset] - 1) < 0.02
    assert 0 < info["decoder_params"] < info["params"]


def test_low_rank_decoder_is_smaller_than_tiled_at_equal_width(capsys):
    sizes = {}
    for preset in ("logah-t", "ghn3-t"):
        main(["ghn-info", preset, "--json"])
        sizes[preset] = json.loads(capsys.readouterr().out)["decoder_params"]
    assert sizes["logah-t"] < sizes["ghn3-t"] / 2


def test_predict_writes_a_folder(tmp_path, capsys):
    arch_file = tmp_path / "arch.json"
    arch_file.write_text(json.dumps({"family": "vit", "num_layers": 1, "hidden_dim": 16,
                                     "num_heads": 2, "mlp_dim": 32, "image_size": 8,
                                     "patch_size": 4, "num_classes": 3}))
    assert main(["predict", "--ghn", "logah-test", "--target", str(arch_file),
                 "--out", str(tmp_path / "out")]) == 0
    assert f"output: {tmp_path / 'out'}" in capsys.readouterr().out
    assert (tmp_path / "out" / "model.safetensors").is_file()


BAD_INPUTS = {
    "unknown preset": (["--ghn", "logah-xxl", "--target", "vit-s"], "neither a checkpoint"),
    "unknown target": (["--ghn", "logah-test", "--target", "vit-z"], "unknown target 'vit-z'"),
    "malformed json": (["--ghn", "logah-test", "--target", "{bad}"], "not valid JSON"),
    "heads": (["--ghn", "logah-test", "--target", "{heads}"], "num_heads=5 does not divide hidden_dim=32"),
    "unknown field": (["--ghn", "logah-test", "--target", "{field}"], "unknown fields \\['depth'\\]"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_one_message_nonzero_no_output(tmp_path, capsys, case):
    args, message = BAD_INPUTS[case]
    files = {"{bad}": "{not json", "{heads}": json.dumps({"family": "vit", "num_layers": 1,
             "hidden_dim": 32, "num_heads": 5, "mlp_dim": 64}),
             "{field}": json.dumps({"family": "vit", "depth": 3})}
    for i, arg in enumerate(args):
        if arg in files:
            path = tmp_path / "arch.json"
            path.write_text(files[arg])
            args = args[:i] + [str(path)] + args[i + 1:]
    assert main(["predict", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("logah predict: error:")
    import re
    assert re.search(message, err[0]), err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["arch.json"])


def test_existing_output_is_not_clobbered(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["predict", "--ghn", "logah-test", "--target", "vit-s", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


def test_console_script_exit_status(tmp_path):
    result = subprocess.run([sys.executable, "-m", "logah.cli", "ghn-info", "nope"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("logah ghn-info: error: unknown GHN preset 'nope'")
    help_text = subprocess.run([sys.executable, "-m", "logah.cli", "--help"],
                               capture_output=True, text=True).stdout
    for command in ("ghn-info", "predict"):
        assert command in help_text


def test_archs_sample_and_describe_json(tmp_path, capsys):
    out = tmp_path / "vits.json"
    assert main(["archs", "sample", "--space", "vits-1k", "--n", "1000", "--seed", "1",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["archs", "describe", str(out), "--json"]) == 0
    desc = json.loads(capsys.readouterr().out)
    assert desc["count"] == 1000 and (desc["depth_min"], desc["depth_max"]) == (3, 9)
    assert 1.2e6 <= desc["params_min"] < desc["params_median"] < desc["params_max"] <= 9.7e6
    assert main(["archs", "sample", "--space", "vits-1k", "--n", "0", "--out",
                 str(tmp_path / "bad.json")]) == 2
    assert not (tmp_path / "bad.json").exists()


def test_ghn_info_reads_a_checkpoint_folder(tmp_path, capsys):
    from logah.checkpoint import save_ghn
    from logah.ghn import build_ghn
    from logah.presets import get_preset

    ghn = build_ghn(get_preset("logah-test"))
    save_ghn(ghn, tmp_path / "ckpt", {"step": 7})
    assert main(["ghn-info", str(tmp_path / "ckpt"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == sum(p.numel() for p in ghn.parameters())
    assert info["config"] == ghn.config.to_dict()
    (tmp_path / "empty").mkdir()
    assert main(["ghn-info", str(tmp_path / "empty")]) == 2
    assert "not a GHN checkpoint" in capsys.readouterr().err


def test_predict_reports_its_size_and_times(tmp_path, capsys):
    assert main(["predict", "--ghn", "logah-test", "--target", "vit-cpu-target",
                 "--out", str(tmp_path / "out"), "--dtype", "bfloat16"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    import re
    assert re.fullmatch(r"predicted 0\.7M parameters of vit-cpu-target and wrote 1\.3 MiB "
                        r"\(bfloat16\) in \d+\.\d\d s \(graph traced in \d+\.\d\d s\)", line), line


def test_named_targets_say_what_they_are():
    """vit-b is the paper's CIFAR ViT-B/2; torchvision's ImageNet ViTs exist under their names."""
    import torch
    import torchvision.models

    from logah.targets import NAMED_TARGETS, build_model

    help_text = subprocess.run([sys.executable, "-m", "logah.cli", "predict", "--help"],
                               capture_output=True, text=True).stdout
    assert "vit-b  " in help_text and "CIFAR ViT-B/2" in help_text and "vit-b-16" in help_text
    assert NAMED_TARGETS["vit-b"].patch_size == 2 and NAMED_TARGETS["vit-b"].image_size == 32
    for name in ("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14"):
        with torch.device("meta"):
            reference = getattr(torchvision.models, name)()
        ours = build_model(NAMED_TARGETS[name.replace("_", "-")])
        assert ({k: v.shape for k, v in ours.state_dict().items()}
                == {k: v.shape for k, v in reference.state_dict().items()}), name


def test_progress_is_plain_lines_when_not_a_terminal():
    import io

    from logah.progress import PlainProgress, progress_bar

    stream = io.StringIO()
    bar = progress_bar("train GHN", total=40, stream=stream)
    assert isinstance(bar, PlainProgress)
    for _ in range(40):
        bar.update(1, loss=1.5)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 10
    assert lines[-1].startswith("train GHN: 40/40 (100%) loss=1.5 [")
