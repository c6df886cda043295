"""GHN training: it learns, resumes bit-for-bit, skips non-finite steps, writes a usable folder."""

import json
import math

import pytest
import torch

from logah.archs import get_space, space_to_dict
from logah.cli import main
from logah.checkpoint import load_ghn
from logah.errors import LogahError
from logah.presets import get_preset
from logah.tasks import DataConfig
from logah.training import (GHNTrainer, LocalReporter, TrainConfig, export_checkpoint, lr_factor,
                            train_ghn)

DIGITS = DataConfig(dataset="digits", batch_size=32, eval_batches=2)
TINY_SPACE = space_to_dict(get_space("vits-cpu", image_size=16, patch_sizes=(4,), num_archs=8))


def tiny_config(**overrides) -> TrainConfig:
    base = dict(ghn=get_preset("logah-test"), space=TINY_SPACE, data=DIGITS, steps=6,
                checkpoint_every=3, log_every=1, warmup_steps=2, heldout_archs=2)
    return TrainConfig(**{**base, **overrides})


def dies_after_first_checkpoint(reporter):
    """A reporter that passes records on, then interrupts the run right after its first checkpoint."""
    def report(metrics, checkpoint):
        reporter(metrics, checkpoint)
        if checkpoint is not None:
            raise KeyboardInterrupt
    return report


def test_lr_schedule_warms_up_then_decays():
    values = [lr_factor(s, 5, 50) for s in range(50)]
    assert values[0] == pytest.approx(0.2) and values[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[4:], values[5:])) and values[-1] < 0.01


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    config = tiny_config()
    train_ghn(config, tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        GHNTrainer(config).run(dies_after_first_checkpoint(
            LocalReporter(tmp_path / "split", export_checkpoint)), progress=False)
    train_ghn(config, tmp_path / "split", resume=True, progress=False)
    full, split = load_ghn(tmp_path / "full"), load_ghn(tmp_path / "split")
    for (name, a), (_, b) in zip(full.state_dict().items(), split.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").open()]
    assert steps == list(range(1, 7))


def test_training_reduces_the_loss(tmp_path):
    config = tiny_config(steps=250, checkpoint_every=250, log_every=50, lr=1e-3,
                         ghn=get_preset("logah-cpu"),
                         space=space_to_dict(get_space("vits-cpu", image_size=16, patch_sizes=(4,),
                                                       num_archs=1)))
    trainer = GHNTrainer(config)
    history = trainer.run(lambda metrics, checkpoint: None, progress=False)
    assert history[-1]["loss"] < history[0]["loss"] - 0.3
    assert trainer.evaluate(trainer.archs)["heldout_accuracy"] > 0.25   # 10 classes: chance 0.1


def test_ranks_draw_different_architectures_and_data():
    a = GHNTrainer(tiny_config(), rank=0, world_size=2)
    b = GHNTrainer(tiny_config(), rank=1, world_size=2)
    assert [a.meta_batch(s) for s in range(6)] != [b.meta_batch(s) for s in range(6)]
    assert not set(a.task.sample_ids(0)) & set(b.task.sample_ids(0))
    assert a.archs == b.archs


def test_non_finite_step_is_skipped_not_fatal():
    trainer = GHNTrainer(tiny_config())
    before = {k: v.clone() for k, v in trainer.ghn.state_dict().items()}
    with torch.no_grad():
        trainer.ghn.decoder.basis.bias[0] = math.nan
    out = trainer.train_step()
    assert not out["finite"] and trainer.skipped == 1 and trainer.step == 1
    after = trainer.ghn.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k != "decoder.basis.bias")


def test_ema_weights_are_what_is_saved(tmp_path):
    train_ghn(tiny_config(ema_decay=0.9), tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint" / "train_state.pt", weights_only=True)
    saved = load_ghn(tmp_path / "run").state_dict()
    raw = state["ghn"]
    assert any(not torch.equal(saved[k], raw[k]) for k in raw)


def test_cli_train_then_predict(tmp_path, capsys):
    out = tmp_path / "ghn"
    assert main(["train-ghn", "--ghn", "logah-test", "--space", "vits-cpu", "--data", "digits",
                 "--steps", "4", "--checkpoint-every", "2", "--batch-size", "16",
                 "--unit-grid", "16", "--weight-scaling", "mean-field", "--out", str(out)]) == 0
    assert "heldout_accuracy" in capsys.readouterr().out
    config = load_ghn(out).config
    assert (config.unit_grid, config.weight_scaling) == (16, "mean-field")
    assert main(["train-ghn", "--ghn", "logah-test", "--weight-scaling", "mean-field",
                 "--out", str(tmp_path / "no-grid")]) == 2    # mean-field needs the unit grid
    assert "unit_grid" in capsys.readouterr().err and not (tmp_path / "no-grid").exists()
    assert main(["predict", "--ghn", str(out), "--target", "vit-s", "--out",
                 str(tmp_path / "pred")]) == 0
    assert main(["train-ghn", "--ghn", "logah-test", "--data", "digits", "--steps", "4",
                 "--out", str(out)]) == 2          # existing run without --resume


def test_resume_with_another_config_is_refused(tmp_path):
    train_ghn(tiny_config(), tmp_path / "run", progress=False)
    with pytest.raises(LogahError, match="another config"):
        train_ghn(tiny_config(lr=1.0), tmp_path / "run", resume=True, progress=False)
