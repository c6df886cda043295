"""The trial every sample of a study starts from, per task (ViT or GPT-2) and scale preset.

    smoke  minutes on 2 CPU cores, real offline data; proves the pipeline, means little
    cpu    an honest CPU study (one to two hours on 2 cores): GHNs trained for 1200 steps
           (about 4 minutes for ViT, 7 for GPT-2, alone on 2 cores), targets deeper and wider
           than the training space, fine-tuned for 200 steps
    paper  the paper's setting (DESIGN.md §3.5) for a GPU cluster: paper GHN presets,
           ViTs-1K / GPTs-1K, CIFAR-100 / WikiText-103, paper budgets and fine-tuning presets

A study script changes these through its search space and its fixed settings, never by copying
them, so every study of one scale trains comparable GHNs.
"""

from __future__ import annotations

from logah.archs import get_space, space_to_dict
from logah.errors import LogahError
from logah.finetune import FinetuneConfig, finetune_preset
from logah.presets import get_preset
from logah.targets import arch_to_dict, resolve_target
from logah.tasks import DataConfig
from logah.training import TrainConfig
from logah.trial import TrialConfig

TASKS = ("vit", "gpt2")
SCALES = ("smoke", "cpu", "paper")

# CIFAR epochs at batch 64 (50k images) and WikiText-103 "epochs" of the paper's schedule are far
# beyond a CPU; these are the step budgets of DESIGN.md §3.5 expressed in optimizer steps.
_CIFAR_STEPS_PER_EPOCH = 50_000 // 64

# GHN training steps at the cpu preset: the budget after which the LoGAH init fine-tunes best
# (benchmarks/results/init_study.md, "GHN training budget"). For ViT, 600 / 1200 / 2400 steps give
# 56.6 / 61.4 / 58.3% test accuracy after fine-tuning (zero-shot keeps rising with more training,
# the fine-tuned result does not); for GPT-2, 1200 steps beat 600 in every replicate.
_CPU_GHN_STEPS = 1200


def _trial(*, ghn: str, space: str, data: DataConfig, target: str, tuning: str,
           ghn_settings: dict, finetune_settings: dict, finetune_data: DataConfig | None = None,
           init: str = "logah") -> TrialConfig:
    training = TrainConfig(ghn=get_preset(ghn), space=space_to_dict(get_space(space)), data=data,
                           **ghn_settings)
    tuning_settings = {**finetune_preset(tuning), **finetune_settings}
    return TrialConfig(ghn_training=training,
                       finetune=FinetuneConfig(target=arch_to_dict(resolve_target(target)),
                                               init=init, data=finetune_data or data,
                                               **tuning_settings))


def base_trial(task: str, scale: str) -> TrialConfig:
    """The starting trial of ``task`` at ``scale`` (LoGAH init; studies change the rest)."""
    if task not in TASKS:
        raise LogahError(f"unknown study task {task!r}: use one of {', '.join(TASKS)}")
    if scale not in SCALES:
        raise LogahError(f"unknown study preset {scale!r}: use one of {', '.join(SCALES)}")
    if scale == "paper":
        if task == "vit":
            return _trial(ghn="logah-t", space="vits-1k", target="vit-s", tuning="vit-paper",
                          data=DataConfig(dataset="cifar100", batch_size=64, eval_batches=0),
                          ghn_settings=dict(steps=300 * _CIFAR_STEPS_PER_EPOCH, lr=3e-4,
                                            warmup_steps=5 * _CIFAR_STEPS_PER_EPOCH,
                                            meta_batch=1, checkpoint_every=5_000,
                                            log_every=100, ema_decay=0.0),
                          finetune_settings={})
        return _trial(ghn="logah-t", space="gpts-1k", target="gpt2-s", tuning="gpt2-paper",
                      data=DataConfig(dataset="wikitext-103", batch_size=6, block_size=1024,
                                      tokenizer="gpt2", eval_batches=0),
                      ghn_settings=dict(steps=100_000, lr=1e-4, warmup_steps=2_000,
                                        meta_batch=2, checkpoint_every=5_000, log_every=100),
                      finetune_settings={})
    smoke = scale == "smoke"
    ghn_settings = dict(steps=30, checkpoint_every=15, log_every=5, heldout_archs=2) if smoke \
        else dict(steps=_CPU_GHN_STEPS, lr=5e-4, checkpoint_every=200, log_every=20,
                  heldout_archs=4)
    finetune_settings = dict(steps=20, eval_every=10) if smoke else dict(steps=200, eval_every=50)
    if task == "vit":
        data = DataConfig(dataset="fashion-mnist", batch_size=32 if smoke else 64,
                          eval_batches=2 if smoke else 10)
        # fine-tuning is judged on more of the validation split than GHN training evaluates
        tuning_data = DataConfig(dataset="fashion-mnist", batch_size=32 if smoke else 64,
                                 eval_batches=4 if smoke else 40)
        return _trial(ghn="logah-cpu-grid-mf", space="vits-cpu", target="vit-cpu-target",
                      tuning="vit-cpu", data=data, finetune_data=tuning_data,
                      ghn_settings=ghn_settings, finetune_settings=finetune_settings)
    data = DataConfig(dataset="shakespeare", batch_size=8 if smoke else 16, block_size=128,
                      eval_batches=2 if smoke else 10)
    tuning_data = DataConfig(dataset="shakespeare", batch_size=8 if smoke else 16, block_size=128,
                             eval_batches=4 if smoke else 20)
    return _trial(ghn="logah-cpu-grid-mf", space="gpts-cpu", target="gpt2-cpu-target",
                  tuning="gpt2-cpu", data=data, finetune_data=tuning_data,
                  ghn_settings=ghn_settings, finetune_settings=finetune_settings)
