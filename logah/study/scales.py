"""The trial every sample of a study starts from, per task (a target family) and scale preset.

    smoke  minutes on 2 CPU cores, real offline data; proves the pipeline, means little
    demo   under five minutes on 2 cores, enough GHN training (300 steps) that settings far
           apart (rank 2 against 16) give fine-tuned results apart beyond the seed spread
    cpu    an honest CPU study (one to two hours on 2 cores): GHNs trained for 1200 steps
           (about 4 minutes for ViT, 7 for GPT-2, alone on 2 cores), targets deeper and wider
           than the training space, fine-tuned for 200 steps
    paper  the paper's setting for a GPU cluster: paper GHN presets, ViTs-1K / GPTs-1K /
           Llamas-1K, CIFAR-100 / WikiText-103, paper budgets and fine-tuning presets

A task is a family of ``logah.families`` (``vit``, ``gpt2``, ``llama``), which says what its
trial is made of at each scale (``TargetFamily.scales``: GHN preset, space, target, data,
fine-tuning preset); the GHN-training and fine-tuning budgets of the smoke, demo and cpu scales are
shared by all families and set here. A study script changes these through its search space and
its fixed settings, never by copying them, so every study of one scale trains comparable GHNs.
"""

from __future__ import annotations

from logah.archs import get_space, space_to_dict
from logah.errors import LogahError
from logah.families import FAMILIES, get_family
from logah.finetune import FinetuneConfig, finetune_preset
from logah.presets import get_preset
from logah.targets import arch_to_dict, resolve_target
from logah.tasks import DataConfig
from logah.training import TrainConfig
from logah.trial import TrialConfig

TASKS = tuple(FAMILIES)
SCALES = ("smoke", "demo", "cpu", "paper")

# GHN training steps at the cpu preset: the budget after which the LoGAH init fine-tunes best
# (benchmarks/results/init_study.md, "GHN training budget"). For ViT, 600 / 1200 / 2400 steps give
# 56.6 / 61.4 / 58.3% test accuracy after fine-tuning (zero-shot keeps rising with more training,
# the fine-tuned result does not); for GPT-2, 1200 steps beat 600 in every replicate.
_CPU_GHN_STEPS = 1200

SHARED = {
    "smoke": (dict(steps=30, checkpoint_every=15, log_every=5, heldout_archs=2),
              dict(steps=20, eval_every=10)),
    "demo": (dict(steps=300, checkpoint_every=100, log_every=20, heldout_archs=2),
             dict(steps=60, eval_every=30)),
    "cpu": (dict(steps=_CPU_GHN_STEPS, lr=5e-4, checkpoint_every=200, log_every=20,
                 heldout_archs=4),
            dict(steps=200, eval_every=100)),
    "paper": ({}, {}),
}


def base_trial(task: str, scale: str) -> TrialConfig:
    """The starting trial of ``task`` at ``scale`` (LoGAH init; studies change the rest)."""
    if task not in TASKS:
        raise LogahError(f"unknown study task {task!r}: use one of {', '.join(TASKS)}")
    if scale not in SCALES:
        raise LogahError(f"unknown study preset {scale!r}: use one of {', '.join(SCALES)}")
    recipe = get_family(task).scales[scale]
    ghn_settings, finetune_settings = SHARED[scale]
    data = DataConfig(**recipe.data)
    training = TrainConfig(ghn=get_preset(recipe.ghn), space=space_to_dict(get_space(recipe.space)),
                           data=data, **{**ghn_settings, **recipe.ghn_settings})
    tuning = {**finetune_preset(recipe.tuning), **finetune_settings, **recipe.finetune_settings}
    tuning_data = DataConfig(**recipe.finetune_data) if recipe.finetune_data else data
    return TrialConfig(ghn_training=training,
                       finetune=FinetuneConfig(target=arch_to_dict(resolve_target(recipe.target)),
                                               init="logah", data=tuning_data, **tuning))
