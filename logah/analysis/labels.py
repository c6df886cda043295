"""Words and units for the columns of a trial table, so that a figure reads without the code.

A dotted setting name (``ghn_training.ghn.rank``) becomes "GHN decoder rank r"; a metric
becomes its name with its unit and direction. Accuracies are stored as fractions and shown in
percent (``metric_scale``), as the paper's tables give them. Names not listed keep their dotted
form, which is still exact.
"""

from __future__ import annotations

SETTING_LABELS = {
    "ghn_training.ghn.rank": "GHN decoder rank r",
    "ghn_training.ghn.hidden": "GHN hidden size d",
    "ghn_training.ghn.layers": "GHN layers L",
    "ghn_training.ghn.heads": "GHN attention heads H",
    "ghn_training.ghn.decoder": "GHN decoder",
    "ghn_training.ghn.unit_grid": "GHN unit grid G",
    "ghn_training.ghn.weight_scaling": "GHN weight scaling",
    "ghn_training.ghn.depth_encoding": "GHN depth encoding",
    "ghn_training.meta_batch": "meta-batch size m (architectures per GHN step)",
    "ghn_training.steps": "GHN training steps",
    "ghn_training.lr": "GHN learning rate",
    "ghn_training.space.depth_min": "sampled depth, minimum",
    "ghn_training.space.depth_max": "sampled depth, maximum",
    "ghn_training.space.width_bands": "sampled width bands",
    "ghn_training.space.num_archs": "number of training architectures",
    "ghn_training.space.max_params": "parameter cap of sampled architectures",
    "finetune.init": "initialisation",
    "finetune.target": "target",
    "finetune.lr": "fine-tuning learning rate",
    "finetune.steps": "fine-tuning steps",
    "finetune.optimizer": "fine-tuning optimiser",
    "finetune.weight_decay": "fine-tuning weight decay",
    "finetune.data.batch_size": "fine-tuning batch size",
    "seed": "seed",
    "finetune.seed": "fine-tuning seed",
    "ghn_training.seed": "GHN training seed",
    # names of ``Variants`` (studies/init_comparison.py): the study's own name of a bundle of
    # settings, shown beside the paper's name of the init (``init_label``), so they must differ
    "init": "init variant",
    "ghn_params": "GHN parameters",
    "wall_s": "trial wall time (s)",
}

METRIC_LABELS = {
    "val_accuracy": "validation accuracy (%)",
    "val_perplexity": "validation perplexity",
    "heldout_accuracy": "accuracy on held-out architectures (%)",
    "heldout_perplexity": "perplexity on held-out architectures",
    "heldout_loss": "loss on held-out architectures",
    "heldout_layer_alikeness": "how alike predicted layers are (mean squared cosine)",
    "loss": "GHN training loss",
    "train_loss": "training loss",
}

VALUE_LABELS = {"best": "best", "final": "final", "zero_shot": "zero-shot (step 0)", "test": "test"}


def _target_labels() -> dict[str, str]:
    """``finetune.target.FIELD`` of every family, in the family's words."""
    from logah.families import FAMILIES

    return {f"finetune.target.{field}": f"target {words}"
            for family in FAMILIES.values() for field, words in family.field_labels.items()}


SETTING_LABELS.update(_target_labels())


def setting_label(name: str) -> str:
    return SETTING_LABELS.get(name, name)


def metric_label(metric: str, unit: bool = True) -> str:
    """The metric's name, with its unit unless ``unit`` is false (for text about the metric
    rather than its values, e.g. an axis of importance shares, where "(%)" would be wrong)."""
    label = METRIC_LABELS.get(metric, metric.replace("_", " "))
    return label if unit else label.removesuffix(" (%)")


def value_label(column: str, metric: str, unit: bool = True) -> str:
    """E.g. ``("best", "val_accuracy")`` -> "best validation accuracy (%)"; ``test`` is the
    final model on the test split, so ``("test", "val_accuracy")`` is "test accuracy (%)"."""
    prefix = VALUE_LABELS.get(column, column.replace("_", " "))
    label = metric_label(metric, unit)
    if column == "test":
        label = label.removeprefix("validation ")
    return f"{prefix} {label}"


def direction(mode: str) -> str:
    return "higher is better" if mode == "max" else "lower is better"


def metric_scale(metric: str) -> float:
    """The factor from stored values to shown ones: fractions to percent for accuracies."""
    return 100.0 if "accuracy" in metric else 1.0
