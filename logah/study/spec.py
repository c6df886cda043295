"""What a study is (a declaration) and how one run of it is set up (options → plan).

A study script declares a ``Study``: its question, what it sweeps at each scale preset, what it
fixes, and its default search. ``plan_study`` combines that with the command-line options into a
``StudyPlan``, checking everything that can be checked before Ray starts (presets, ranges,
objectives, the storage folder), so bad input never costs a trial.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logah.errors import LogahError
from logah.finetune import target_metric
from logah.study.scales import SCALES, TASKS, base_trial
from logah.study.space import Choice, Param, Variants, apply_settings, grid_size
from logah.study.tables import GHNS_DIR
from logah.trial import TrialConfig

SEARCHES = ("tpe", "grid")
OBJECTIVES = ("quality", "ghn_params")   # "quality": the fine-tuning metric of the task


@dataclass(frozen=True, kw_only=True)
class Study:
    """A study script's declaration.

    ``space[preset]`` is what that preset sweeps (dotted trial settings → ``Param``;
    ``space["preset:task"]``, where given, replaces it for one task), ``fixed``
    (all presets) and ``fixed_by_preset[preset]`` set trial settings for every sample, ``search``
    is the default search ("grid" runs the whole grid once), ``tasks`` the targets it applies to
    (the first is the default)."""

    name: str
    question: str
    space: dict[str, dict[str, Param]]
    fixed: dict[str, Any] = field(default_factory=dict)
    fixed_by_preset: dict[str, dict[str, Any]] = field(default_factory=dict)
    search: str = "grid"
    num_samples: dict[str, int] = field(default_factory=dict)   # per preset, for tpe
    tasks: tuple[str, ...] = TASKS


@dataclass(frozen=True, kw_only=True)
class StudyOptions:
    """The common command-line options of every study script (``logah.study.cli``)."""

    preset: str = "smoke"
    task: str | None = None
    storage: str = "runs/studies"
    name: str | None = None
    num_samples: int | None = None
    resume: bool = False
    seed: int = 0
    search: str | None = None
    scheduler: str | None = None
    objectives: tuple[str, ...] = ("quality",)
    train_workers: int = 1
    gpu: bool = False
    optuna_storage: str | None = None
    ghn_store: str | None = None      # default: the study folder's own ghns/
    set: dict[str, Any] = field(default_factory=dict)        # --set a.b=v
    sweep: dict[str, Param] = field(default_factory=dict)    # --sweep a.b=lo:hi


@dataclass(frozen=True, kw_only=True)
class StudyPlan:
    """Everything the runner needs, checked: a study run is a pure function of this."""

    study: Study
    options: StudyOptions
    name: str
    task: str
    study_dir: Path
    base: dict                       # the trial record every sample starts from
    space: dict[str, Param]
    fixed: dict[str, Any]
    search: str
    num_samples: int
    metric: str                      # the fine-tuning metric, e.g. "val_accuracy"
    mode: str                        # "max" or "min"
    optuna_storage: str
    ghn_store: Path                  # trained GHNs, keyed by their training config
    segment: str = ""                # which run of the study this is (when it started)

    @property
    def objectives(self) -> list[dict]:
        """Table columns optimised, first the primary one (study.json's ``objectives``)."""
        columns = [{"column": "best", "metric": self.metric, "mode": self.mode}]
        if "ghn_params" in self.options.objectives:
            columns.append({"column": "ghn_params", "metric": "ghn_params", "mode": "min"})
        return columns

    def trial_record(self, sampled: dict[str, Any]) -> dict:
        """The trial record of one sample (fixed settings first, then the sampled ones), not
        yet validated: what a trial that fails on its own settings still shows."""
        return apply_settings(apply_settings(self.base, self.fixed, {}), sampled, self.space)

    def trial_config(self, sampled: dict[str, Any]) -> TrialConfig:
        """The validated trial config of one sample."""
        return TrialConfig.from_dict(self.trial_record(sampled))


def _positive(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or value <= 0):
        raise LogahError(f"{name} must be a positive integer, got {value}")


def _check_storage(path: str, option: str = "--storage") -> Path:
    if "://" in path and not path.startswith("file://"):
        raise LogahError(f"{option} {path}: URIs other than file:// are not supported for a "
                         "study's folders; use a path on a filesystem every node mounts (NFS, "
                         "a bucket mounted with gcsfuse / mountpoint-s3)")
    folder = Path(path.removeprefix("file://")).expanduser()
    if not folder.is_absolute():
        if os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
            raise LogahError(f"{option} {path}: give an absolute path inside a Ray job (its "
                             "working directory is a temporary copy)")
        folder = folder.resolve()
    return folder


def _narrowed(declared, name: str, param):
    """A ``--sweep`` of a declared ``Variants`` setting picks some of its variants by name;
    of anything else it replaces (or adds) the setting."""
    if isinstance(declared, Variants):
        if not isinstance(param, Choice):
            raise LogahError(f"--sweep {name}: name some of its variants, a,b,c")
        return declared.narrowed(name, param)
    return param


def plan_study(study: Study, options: StudyOptions) -> StudyPlan:
    """Check ``options`` against ``study`` and build the plan; nothing is written."""
    if options.preset not in SCALES:
        raise LogahError(f"unknown study preset {options.preset!r}: use one of {', '.join(SCALES)}")
    task = options.task or study.tasks[0]
    if task not in study.tasks:
        raise LogahError(f"study {study.name} runs on {', '.join(study.tasks)}, not {task!r}")
    name = options.name or f"{study.name}-{task}-{options.preset}"
    if not name or "/" in name or os.sep in name or name in (".", "..") or name.startswith("."):
        raise LogahError(f"--name {name!r}: a study name is one folder name (no path separator)")
    _positive("--num-samples", options.num_samples)
    if not isinstance(options.seed, int) or not 0 <= options.seed < 2**32:
        raise LogahError(f"--seed must be a whole number from 0 to 2**32 - 1, got {options.seed}")
    _positive("--train-workers", options.train_workers)
    unknown = sorted(set(options.objectives) - set(OBJECTIVES))
    if unknown or not options.objectives or options.objectives[0] != "quality":
        raise LogahError(f"--objectives {','.join(options.objectives)}: this study reports "
                         f"{', '.join(OBJECTIVES)}, and the first objective must be quality")
    multi = len(options.objectives) > 1
    search = options.search or ("tpe" if multi else study.search)
    if search not in SEARCHES:
        raise LogahError(f"unknown search {search!r}: use one of {', '.join(SEARCHES)}")
    if options.scheduler not in (None, "asha"):
        raise LogahError(f"unknown scheduler {options.scheduler!r}: use asha")
    if options.scheduler and multi:
        raise LogahError("--scheduler asha prunes on one metric: it cannot run with several "
                         "--objectives")
    if multi and search == "grid":
        raise LogahError("several --objectives need a sampler (NSGA-II): use --search tpe")

    declared = study.space.get(f"{options.preset}:{task}", study.space.get(options.preset, {}))
    space = {**declared, **{name: _narrowed(declared.get(name), name, param)
                            for name, param in options.sweep.items()}}
    if not space:
        declared_presets = sorted({key.split(":")[0] for key in study.space})
        raise LogahError(f"study {study.name} sweeps nothing at preset {options.preset}: it declares "
                         f"{', '.join(declared_presets)} (or name settings with --sweep)")
    for param_name, param in space.items():
        param.check(param_name)
    fixed = {**study.fixed, **study.fixed_by_preset.get(options.preset, {}), **options.set}
    swept_paths = {p for v in space.values() if isinstance(v, Variants)
                   for option in v.options.values() for p in option}
    clash = sorted((set(fixed) & set(space)) | (set(options.set) & swept_paths))
    if clash:
        raise LogahError(f"settings both fixed and swept: {clash}")
    base = base_trial(task, options.preset).to_dict()
    if search == "grid":
        size = grid_size(space)
        num_samples = options.num_samples or size
    else:
        num_samples = options.num_samples or study.num_samples.get(options.preset, 8)
    study_dir = _check_storage(options.storage) / name
    first = TrialConfig.from_dict(apply_settings(base, fixed, {}))
    metric, mode = target_metric(first.finetune.arch)
    plan = StudyPlan(study=study, options=options, name=name, task=task, study_dir=study_dir,
                     base=base, space=space, fixed=fixed, search=search,
                     num_samples=num_samples, metric=metric, mode=mode,
                     optuna_storage=options.optuna_storage
                     or f"sqlite:///{study_dir / 'optuna.db'}",
                     ghn_store=(_check_storage(options.ghn_store, "--ghn-store")
                                if options.ghn_store else study_dir / GHNS_DIR))
    # each value of the space must give a valid trial on its own (combinations are checked by
    # the trials themselves: one that fails is recorded as failed and the study goes on)
    for param_name, param in space.items():
        for value in param.corners():
            try:
                plan.trial_config({param_name: value})
            except LogahError as err:
                raise LogahError(f"swept {param_name}={value} gives no valid trial: {err}") from None
    if plan.ghn_store.exists() and not plan.ghn_store.is_dir():
        raise LogahError(f"--ghn-store {plan.ghn_store} is a file, not a folder of GHNs")
    return plan


def check_runnable_here(plan: StudyPlan) -> None:
    """What would fail every trial of a study run on this machine (an embedded Ray), checked
    once before Ray starts: the datasets can be read, and the largest target's fine-tuning fits
    in memory. (On a cluster the nodes read data and hold models, not the driver.)"""
    from logah.devices import check_memory
    from logah.finetune import training_copies
    from logah.targets import count_params
    from logah.tasks import check_dataset

    trials = [plan.trial_config({}), *(plan.trial_config({name: value})
                                       for name, param in plan.space.items()
                                       for value in param.corners())]
    datasets = {t.finetune.data.dataset for t in trials}
    datasets |= {t.ghn_training.data.dataset for t in trials if t.uses_ghn}
    for name in sorted(datasets):
        check_dataset(name)
    largest = max(trials, key=lambda t: count_params(t.finetune.arch))
    check_memory(count_params(largest.finetune.arch), "cpu",
                 training_copies(largest.finetune.optimizer),
                 f"fine-tuning the study's largest target ({largest.finetune.arch.family})")


def ghn_params(trial: TrialConfig) -> float:
    """Parameters of the trial's GHN (NaN for baseline inits), counted on the meta device."""
    if not trial.uses_ghn:
        return math.nan
    import torch

    from logah.ghn import GHN

    with torch.device("meta"):
        return float(GHN(trial.ghn_training.ghn).num_params())
