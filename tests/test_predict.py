"""Saved predictions and GHN checkpoints round-trip exactly; broken ones fail clearly."""

import json

import pytest
import torch

from conftest import SMALL_GPT, SMALL_VIT, TIED_GPT
from logah.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_ghn, resolve_ghn, save_ghn
from logah.errors import LogahError
from logah.ghn import build_ghn
from logah.predict import bound_forward, load_predicted, predict_params, save_prediction
from logah.presets import get_preset
from logah.targets import build_model, example_input


@pytest.mark.parametrize("arch", [SMALL_GPT, TIED_GPT], ids=["untied", "tied"])
def test_gpt2_folder_loads_with_from_pretrained_and_gives_identical_logits(tmp_path, arch):
    from transformers import GPT2LMHeadModel

    params = predict_params(build_ghn(get_preset("logah-test")), arch)
    save_prediction(arch, params, tmp_path / "gpt")
    model = GPT2LMHeadModel.from_pretrained(tmp_path / "gpt", local_files_only=True).eval()
    tokens = example_input(arch, "cpu", batch=2, seq_len=12)
    expected = bound_forward(build_model(arch).eval(), params, arch, tokens)
    with torch.no_grad():
        got = model(input_ids=tokens).logits
    assert torch.equal(got, expected)
    for name, tensor in model.named_parameters():
        assert torch.equal(tensor, params[name]), name


def test_vit_output_round_trip(tmp_path):
    params = predict_params(build_ghn(get_preset("ghn3-test")), SMALL_VIT)
    save_prediction(SMALL_VIT, params, tmp_path / "vit")
    assert sorted(p.name for p in (tmp_path / "vit").iterdir()) == ["arch.json", "model.safetensors"]
    arch, model = load_predicted(tmp_path / "vit")
    assert arch == SMALL_VIT
    x = example_input(arch, "cpu", batch=3)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), bound_forward(build_model(arch).eval(), params, arch, x))
    assert not any(p.is_meta for p in model.parameters())


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path, ghn):
    save_ghn(ghn, tmp_path / "ckpt", {"note": "test"})
    loaded = load_ghn(tmp_path / "ckpt")
    assert loaded.config == ghn.config
    for arch in (SMALL_VIT, SMALL_GPT):
        a, b = predict_params(ghn.eval(), arch), predict_params(loaded, arch)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert resolve_ghn(tmp_path / "ckpt").config == ghn.config


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    save_ghn(build_ghn(get_preset("logah-test")), tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(LogahError, match="corrupt or truncated"):
        load_ghn(tmp_path / "ckpt")


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    save_ghn(build_ghn(get_preset("logah-test")), tmp_path / "ckpt")
    config_file = tmp_path / "ckpt" / CONFIG_FILE
    record = json.loads(config_file.read_text())
    record["config"]["rank"] = 8
    config_file.write_text(json.dumps(record))
    with pytest.raises(LogahError, match="do not match its config.*decoder"):
        load_ghn(tmp_path / "ckpt")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LogahError, match="not a GHN checkpoint"):
        resolve_ghn(tmp_path / "empty")
    with pytest.raises(LogahError, match="neither a checkpoint folder nor a preset"):
        resolve_ghn("logah-xxl")
