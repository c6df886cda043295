"""GHN training: it learns, resumes bit-for-bit, skips non-finite steps, writes a usable folder."""

import dataclasses
import json
import logging
import math

import pytest
import torch

from logah.archs import SPACES, get_space, space_to_dict
from logah.cli import main
from logah.checkpoint import load_ghn, read_metadata
from logah.errors import LogahError
from logah.families import get_family
from logah.presets import get_preset
from logah.tasks import DataConfig
from logah.predict import bound_forward
from logah.runs import LocalReporter
from logah.seeds import step_seed
from logah.trainer import lr_factor
from logah.training import GHNTrainer, TrainConfig, export_checkpoint, train_ghn

DIGITS = DataConfig(dataset="digits", batch_size=32, eval_batches=2)
TINY_SPACE = space_to_dict(get_space("vits-cpu", image_size=16, patch_sizes=(4,), num_archs=8))
TEXT = DataConfig(dataset="shakespeare", batch_size=4, block_size=32, vocab_size=1024,
                  eval_batches=2)
# 4 draws of 3 configurations; GPT-2's default dropout (0.1) is on while training
TINY_GPT_SPACE = space_to_dict(get_space("gpts-cpu", n_positions=64, num_archs=4))


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


def _metrics(run) -> list[dict]:
    """A run's metric records without its timings."""
    timings = ("steps_per_s", "archs_per_s", "samples_per_s")
    return [{k: v for k, v in json.loads(line).items() if k not in timings}
            for line in (run / "metrics.jsonl").open()]


@pytest.mark.parametrize("family", ["vit", "gpt2"])
def test_resume_reproduces_an_uninterrupted_run_exactly(tmp_path, family):
    """Interrupted after the checkpoint (and held-out evaluation) of step 3 and resumed, a run
    ends with the same GHN, bit for bit, as one that went on after that evaluation; for GPT-2
    that holds only if the evaluation left dropout on for the steps after it."""
    config = (tiny_config() if family == "vit" else
              tiny_config(space=TINY_GPT_SPACE, data=TEXT))
    full_history = train_ghn(config, tmp_path / "full", progress=False)
    assert any(k.startswith("heldout_") for k in full_history[2])        # evaluated at step 3
    with pytest.raises(KeyboardInterrupt):
        GHNTrainer(config).run(dies_after_first_checkpoint(
            LocalReporter(tmp_path / "split", export_checkpoint)), progress=False)
    train_ghn(config, tmp_path / "split", resume=True, progress=False)
    full, split = load_ghn(tmp_path / "full"), load_ghn(tmp_path / "split")
    for (name, a), (_, b) in zip(full.state_dict().items(), split.state_dict().items()):
        assert torch.equal(a, b), name
    assert _metrics(tmp_path / "split") == _metrics(tmp_path / "full")
    assert [m["step"] for m in _metrics(tmp_path / "split")] == list(range(1, 7))


def test_evaluation_leaves_the_ghn_and_the_targets_in_their_mode():
    """Evaluating architectures that are also trained does not change the next training step
    (GPT-2 dropout stays on), and every module is back in the mode it was in."""
    config = tiny_config(space=TINY_GPT_SPACE, data=TEXT)
    evaluated, fresh = GHNTrainer(config), GHNTrainer(config)
    archs = evaluated.archs + evaluated.heldout
    for arch in archs:
        evaluated.graph(arch)
    models = [evaluated._models[arch] for arch in archs]
    models[-1].eval()                           # a module that was in eval mode stays there
    models[0].transformer.drop.eval()           # and so does a submodule
    before = [[m.training for m in model.modules()] for model in models]
    assert evaluated.evaluate(archs)["heldout_perplexity"] > 1
    assert [[m.training for m in model.modules()] for model in models] == before
    assert evaluated.ghn.training
    models[0].transformer.drop.train()
    assert evaluated.train_step()["loss"] == fresh.train_step()["loss"]


def test_training_reduces_the_loss(tmp_path):
    config = tiny_config(steps=250, checkpoint_every=250, log_every=50, lr=1e-3,
                         ghn=get_preset("logah-cpu"),
                         space=space_to_dict(get_space("vits-cpu", image_size=16, patch_sizes=(4,),
                                                       num_archs=1)))
    trainer = GHNTrainer(config)
    history = trainer.run(lambda metrics, checkpoint: None, progress=False)
    assert history[-1]["loss"] < history[0]["loss"] - 0.3
    # 10 classes: chance is 0.1; seen 0.23 to 0.3 across machines and thread counts (float sums in
    # another order), so the bar is well above chance and below every run seen
    assert trainer.evaluate(trainer.archs)["heldout_accuracy"] > 0.17


def test_the_gradient_is_the_task_loss_gradient_alone():
    """No regulariser: a training step's (clipped) gradient is that of the task loss."""
    trainer, reference = GHNTrainer(tiny_config()), GHNTrainer(tiny_config())
    out = trainer.train_step()
    torch.manual_seed(step_seed(0, 0, 0))
    archs = reference.meta_batch(0)
    x, y = reference.task.batch(0, "cpu")
    predictions = reference.ghn([reference.graph(a) for a in archs])
    loss = sum(reference.task.loss(bound_forward(reference._models[a], p, a, x), y)
               for a, p in zip(archs, predictions)) / len(archs)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(reference.ghn.parameters(), reference.config.grad_clip)
    assert out["loss"] == loss.item()
    for (name, a), b in zip(trainer.ghn.named_parameters(), reference.ghn.parameters()):
        assert torch.equal(a.grad, b.grad), name


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


def test_saved_ghn_is_the_ema_of_the_trained_weights(tmp_path):
    """The GHN files hold the exponential moving average of the weights after each step
    (the first step's weights, then ema = 0.9·ema + 0.1·weights), not the raw weights."""
    trainer = GHNTrainer(tiny_config(ema_decay=0.9))
    ema = None
    for _ in range(4):
        trainer.train_step()
        weights = {k: v.detach().clone() for k, v in trainer.ghn.named_parameters()}
        ema = weights if ema is None else {k: 0.9 * ema[k] + 0.1 * weights[k] for k in weights}
    trainer.write_checkpoint(tmp_path)
    saved = dict(load_ghn(tmp_path).named_parameters())
    assert saved.keys() == ema.keys()
    for name in ema:
        torch.testing.assert_close(saved[name], ema[name], rtol=1e-5, atol=1e-7, msg=name)
    assert not all(torch.allclose(saved[k], weights[k]) for k in weights)


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


@pytest.mark.parametrize("name", sorted(SPACES))
def test_preset_spaces_train_fitted_archs_and_hold_out_unseen_ones(name, caplog):
    """Every preset space: architectures are sized for the data (10 digit classes, the 1024-token
    vocabulary, whatever the space says), held-out ones are never in the training list, and a
    space with none to spare says so once and reports no held-out metric."""
    family = get_family(get_space(name).family)
    text = family.data_kind == "text"
    data = dataclasses.replace(TEXT if text else DIGITS, batch_size=4)
    with caplog.at_level(logging.WARNING, logger="logah.training"):
        trainer = GHNTrainer(tiny_config(space=space_to_dict(get_space(name)), data=data,
                                         heldout_archs=4))
    outputs = {family.num_outputs(a) for a in trainer.archs + trainer.heldout}
    assert outputs == {1024 if text else 10} == {trainer.task.num_outputs}
    assert not set(trainer.heldout) & set(trainer.archs)
    warnings = [r.getMessage() for r in caplog.records if r.name == "logah.training"]
    if name in ("vits-cpu", "vits-cpu-deep", "llamas-cpu", "llamas-1k"):   # configurations to spare
        assert len(set(trainer.heldout)) == 4 and not warnings
    else:
        assert trainer.heldout == [] and trainer.evaluate() == {}
        assert len(warnings) == 1 and "no heldout_* metric" in warnings[0] and name in warnings[0]
    assert math.isfinite(trainer.train_step()["loss"])


def test_a_run_without_held_out_architectures_reports_no_held_out_metric(tmp_path):
    one_config = space_to_dict(get_space("gpts-cpu", depth_min=2, depth_max=2, num_archs=3,
                                         n_positions=64, width_bands=[(2, 2, 32, 32, 8)]))
    history = train_ghn(tiny_config(space=one_config, data=TEXT, steps=2, checkpoint_every=2),
                        tmp_path / "run", progress=False)
    assert [m["step"] for m in history] == [1, 2] and math.isfinite(history[-1]["loss"])
    assert not any(k.startswith("heldout_") for m in _metrics(tmp_path / "run") for k in m)


def test_classifier_is_sized_for_the_data(tmp_path):
    """vits-cpu (10 classes) trains on CIFAR-100 images with 100-way heads; a tiled GHN whose
    class head has 10 rows is refused before training, since 90 classes would copy its rows."""
    cifar100 = DataConfig(dataset="cifar100-sample", batch_size=8, eval_batches=1)
    history = train_ghn(tiny_config(data=cifar100, steps=2, checkpoint_every=2),
                        tmp_path / "run", progress=False)
    assert math.isfinite(history[-1]["loss"]) and "heldout_accuracy" in history[-1]
    assert history[0]["loss"] > math.log(10)              # a 100-way start: about ln 100 = 4.6
    assert read_metadata(tmp_path / "run").record["trained_on"]["num_outputs"] == 100
    with pytest.raises(LogahError, match=r"100 classes .* num_classes >= 100"):
        train_ghn(tiny_config(ghn=get_preset("ghn3-test"), data=cifar100), tmp_path / "tiled",
                  progress=False)
    assert not (tmp_path / "tiled").exists()
