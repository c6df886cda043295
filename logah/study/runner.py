"""Running a study on Ray Tune: searcher, scheduler, resources, the trial function, resume.

    plan = plan_study(STUDY, options)        # logah.study.spec: checked, nothing written
    table = run_study(plan)                  # trials on Ray Tune; the study folder's tables

Each trial is ``logah.trial.run_trial`` in a Tune function trainable, in its own folder
``STUDY/trials/<trial_id>`` (so a restarted trial resumes its phases from their checkpoints).
Trials whose GHN-training config is identical share one trained GHN (``STUDY/ghns``).

Resources (Ray 2.60 deadlocks silently when they do not add up; docs/design.md §5):
with ``train_workers == 1`` a trial holds one CPU (and one GPU with ``gpu``) and trains in its
own process; with more, the trial is a *driver* holding only the custom resource ``train_driver``
and its GHN training runs on a ``TorchTrainer`` with that many workers, whose rank-0 metrics reach
Tune through ``GHNTuneReport``. ``max_concurrent_trials`` follows from the cluster's resources.

The searcher is Optuna's (``OptunaSearch``, define-by-run): TPE (seeded), a grid
(``GridSampler``) or, with two objectives, NSGA-II; its study is stored at ``optuna_storage``
(default ``STUDY/optuna.db``) under the study's name, each trial tagged with its Tune trial id.
Tune's own experiment state lives in ``STUDY/tune``; ``--resume`` restores it with
``Tuner.restore``: finished trials are not run again, unfinished ones resume from their
checkpoints.
"""

from __future__ import annotations

import dataclasses
import fcntl
import atexit
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import pandas as pd
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.search.optuna import OptunaSearch

from logah.errors import LogahError
from logah.finetune import summarize
from logah.ghn_store import config_key
from logah.analysis.tables import check_history, read_study_record
from logah.io import dumps, write_json
from logah.provenance import code_digest, package_dir, provenance
from logah.settings import flatten
from logah.study.spec import StudyPlan, check_runnable_here, ghn_params
from logah.runs import read_metrics
from logah.study.tables import (STUDY_FILE, TRIALS_DIR, ghn_store_of, now,
                                read_record, write_record, write_tables)
from logah.trial import run_trial

TUNE_DIR = "tune"
LOCK_FILE = ".lock"
DRIVER_RESOURCE = "train_driver"
MAX_TRIAL_RETRIES = 2       # Tune restarts a trial whose process died (OOM kill, lost node)


# --- inside a trial --------------------------------------------------------------------------
class _TuneReporter:
    """Forwards trial records to Tune; fine-tuning records carry the running ``best`` of the
    study's metric (what the searcher and ASHA compare) and the GHN's size."""

    def __init__(self, plan: StudyPlan, n_params: float):
        self.metric, self.mode, self.n_params = plan.metric, plan.mode, n_params
        self.best = None

    def __call__(self, record: dict) -> None:
        if self.metric in record:
            value = record[self.metric]
            better = max if self.mode == "max" else min
            self.best = value if self.best is None else better(self.best, value)
            record = {**record, "best": self.best, "ghn_params": self.n_params}
        tune.report(record)


class GHNTuneReport(TuneReportCallback):
    """Rank 0's GHN-training metrics from Ray Train workers to Tune, tagged like the metrics of
    an in-process GHN phase (``phase: ghn``, ``ghn_`` prefix)."""

    def after_report(self, run_context, metrics, checkpoint):
        tagged = [{"phase": "ghn", **{f"ghn_{k}": v for k, v in m.items()}} for m in metrics]
        super().after_report(run_context, tagged, None)


def _ray_train_ghn(plan: StudyPlan):
    """The GHN-training function of a trial whose GHN trains on Ray Train workers. Ray Train's
    storage is the GHN's folder in the study, given as a ``file://`` URI: the study folder is on
    a filesystem every node mounts, which is what a multi-node Ray Train run needs."""
    from logah.distributed import train_ghn_ray

    def train(config, folder: Path, resume: bool) -> list:
        train_ghn_ray(config, folder, workers=plan.options.train_workers,
                      use_gpu=plan.options.gpu, resume=resume,
                      storage=(folder / "ray").absolute().as_uri(), callbacks=[GHNTuneReport()])
        return read_metrics(folder / "metrics.jsonl")

    return train


def _final_metrics(record: dict, plan: StudyPlan) -> dict:
    summary = record["summary"]
    return {"best": summary[f"best_{plan.metric}"], "final": summary[f"final_{plan.metric}"],
            "zero_shot": summary[f"zero_shot_{plan.metric}"],
            "ghn_params": record["ghn_params"], "done": True}


def study_trial(sampled: dict, plan: StudyPlan) -> None:
    """One trial of the study (a Tune function trainable). Tune runs it again after a failure
    (up to ``MAX_TRIAL_RETRIES`` times; a dead worker, a lost node) and ``--resume`` runs failed
    trials again: each phase resumes from its checkpoint. A mistake in the trial's settings
    (``LogahError``) would fail the same way again, so within one run of the study a retry of
    such a trial stops at once with the same error."""
    trial_id = tune.get_context().get_trial_id()
    folder = plan.study_dir / TRIALS_DIR / trial_id
    previous = read_record(folder) or {}
    if previous.get("status") == "COMPLETE":   # finished before the driver was interrupted
        tune.report(_final_metrics(previous, plan))
        return
    if (previous.get("status") == "FAILED" and previous.get("user_error")
            and previous.get("segment") == plan.segment):
        raise LogahError(previous["error"].removeprefix("LogahError: "))
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    record = {"trial_id": trial_id, "status": "RUNNING", "settings": sampled,
              "metric": plan.metric, "mode": plan.mode, "segment": plan.segment,
              "attempt": previous.get("attempt", 0) + 1, "pid": os.getpid(),
              "code": {"path": str(package_dir()), "digest": code_digest()},
              "started_at": previous.get("started_at") or now()}
    write_record(folder, record)
    try:
        record["config"] = plan.trial_record(sampled)    # what it asks for, even if invalid
        config = plan.trial_config(sampled)
        record.update(config=config.to_dict(), ghn_params=ghn_params(config),
                      ghn_key=config_key(config.ghn_training) if config.uses_ghn else None)
        write_record(folder, record)
        distributed = plan.options.train_workers > 1
        # warnings (a target outside the GHN's training space, ...) belong to the trial's
        # record, not to the study's terminal: one line per trial there
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            summary = run_trial(config, folder, report=_TuneReporter(plan, record["ghn_params"]),
                                device="cuda" if plan.options.gpu and not distributed else "cpu",
                                ghn_store=plan.ghn_store,
                                train_fn=_ray_train_ghn(plan) if distributed else None)
        record["warnings"] = list(dict.fromkeys(f"{w.category.__name__}: {w.message}"
                                                for w in caught))
    except Exception as err:
        record.update(status="FAILED", error=f"{type(err).__name__}: {err}", finished_at=now(),
                      user_error=isinstance(err, LogahError),
                      wall_s=time.perf_counter() - start)
        write_record(folder, record)
        raise
    record.update(status="COMPLETE", summary=summary, finished_at=now(),
                  wall_s=time.perf_counter() - start)
    write_record(folder, record)
    tune.report(_final_metrics(record, plan))


# --- on the driver ---------------------------------------------------------------------------
class TableCallback(tune.Callback):
    """Keeps the study's tables current: after every finished or failed trial, and at the end.
    Also closes the records of trials that Tune ended from outside (ASHA stopping one early, a
    trial process that died), which the trials themselves could not write."""

    def __init__(self, plan: StudyPlan, segments: "_Segments"):
        self.plan, self.segments = plan, segments
        self.active = False       # whether any trial started in this run of the study
        self.finished = 0

    def on_trial_start(self, iteration, trials, trial, **info):
        self.active = True
        self.segments.update(force=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        record = read_record(self.plan.study_dir / TRIALS_DIR / trial.trial_id) or {}
        reason = record.get("error") if record.get("status") == "FAILED" else None
        again = ("a mistake in its settings fails again at once" if record.get("user_error")
                 else "it resumes from its checkpoints")
        print(f"trial {trial.trial_id} failed ({(reason or 'its process died').splitlines()[0][:200]}); "
              f"Tune runs it again: {again}", flush=True)

    def _progress(self, trials, trial) -> None:
        """One line per finished trial: what it ran and how it ended (Tune's own tables are
        off: they print every record of every trial)."""
        record = read_record(self.plan.study_dir / TRIALS_DIR / trial.trial_id) or {}
        self.finished += 1
        settings = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in (record.get("settings")
                                                                         or {}).items())
        summary = record.get("summary") or {}
        metric = self.plan.metric
        if record.get("status") == "COMPLETE":
            test = summary.get(f"test_{metric.removeprefix('val_')}")
            outcome = (f"best {metric} {summary.get(f'best_{metric}', float('nan')):.4g}"
                       + (f", test {test:.4g}" if test is not None else ""))
        else:
            outcome = (record.get("error") or "failed").splitlines()[0][:200]
        wall = record.get("wall_s")
        print(f"[{self.finished}/{self.plan.num_samples}] trial {trial.trial_id} ({settings}): "
              f"{record.get('status', trial.status)}, {outcome}"
              + (f" ({wall:.0f} s)" if wall else ""), flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.segments.update()

    def on_trial_complete(self, iteration, trials, trial, **info):
        folder = self.plan.study_dir / TRIALS_DIR / trial.trial_id
        record = read_record(folder)
        if record is not None and record["status"] == "RUNNING":   # stopped by the scheduler
            history = read_metrics(folder / "finetune" / "metrics.jsonl")
            if any(self.plan.metric in m for m in history):
                record.update(summary=summarize(history, self.plan.metric, self.plan.mode))
            budget = self.plan.trial_config(record["settings"]).finetune.steps
            last = history[-1]["step"] if history else 0
            record.update(status="COMPLETE", stopped_early=last < budget, finished_at=now())
            write_record(folder, record)
        write_tables(self.plan.study_dir)
        self.segments.update(force=True)
        self._progress(trials, trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        folder = self.plan.study_dir / TRIALS_DIR / trial.trial_id
        record = read_record(folder) or {"trial_id": trial.trial_id, "settings": trial.config}
        if record.get("status") != "FAILED":   # the process died before it could say why
            error_file = getattr(trial, "error_file", None)
            detail = Path(error_file).read_text().strip().splitlines()[-1] \
                if error_file and Path(error_file).is_file() else "the trial process died"
            record.update(status="FAILED", error=detail, finished_at=now())
            folder.mkdir(parents=True, exist_ok=True)
            write_record(folder, record)
        write_tables(self.plan.study_dir)
        self.segments.update(force=True)
        self._progress(trials, trial)

    def on_experiment_end(self, trials, **info):
        write_tables(self.plan.study_dir)


class _DefineByRun:
    """The search space as Optuna's define-by-run function (picklable, for Tune's restore)."""

    def __init__(self, space: dict):
        self.space = space

    def __call__(self, trial) -> None:
        for name, param in self.space.items():
            param.suggest(trial, name)


class _TuneGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid, without its own stop: Optuna's sampler stops the study when the grid is
    done, which only works inside ``Study.optimize``; here Tune runs the trials and decides when
    the study ends (from outside ``optimize`` the stop raises, and the last trial's result was
    logged as a warning)."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


class TaggedOptunaSearch(OptunaSearch):
    """OptunaSearch that records the Tune trial id on each Optuna trial (``tune_trial_id``), so
    the Optuna study and the trial table can be joined, and whose intermediate values are the
    fine-tuning metric as measured (``raw_metric`` at its fine-tuning step; the searcher itself
    optimises the running best), not the GHN phase's, which have none; a multi-objective study
    reports none (``raw_metric`` None)."""

    raw_metric: str | None = None

    def _running_trial(self, trial_id: str):
        """The trial's Optuna trial, for a trial that Tune runs again on ``--resume``:

        * stored as FAIL (a study stopped with Ctrl-C tells Optuna that its running trials
          failed, and Optuna refuses to update a finished trial): a fresh Optuna trial with the
          same settings and Tune id;
        * stored as COMPLETE or PRUNED (it finished after Tune's last snapshot of a driver that
          was then killed, and its rerun only reports its recorded result): that one, marked
          completed here, so that nothing is reported or told to Optuna twice."""
        storage = self._ot_study._storage
        stored = storage.get_trial(self._ot_trials[trial_id]._trial_id)
        if stored.state == optuna.trial.TrialState.FAIL:
            self._ot_study.enqueue_trial(stored.params)
            fresh = self._ot_study.ask(fixed_distributions=stored.distributions)
            fresh.set_user_attr("tune_trial_id", trial_id)
            self._ot_trials[trial_id] = fresh
            self._completed_trials.discard(trial_id)
        elif stored.state.is_finished():
            self._completed_trials.add(trial_id)
        return self._ot_trials[trial_id]

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if (self.raw_metric in result and "step" in result
                and trial_id not in self._completed_trials):
            trial = self._running_trial(trial_id)
            if trial_id not in self._completed_trials:
                trial.report(result[self.raw_metric], result["step"])

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id in self._ot_trials and trial_id not in self._completed_trials:
            self._running_trial(trial_id)
            if trial_id in self._completed_trials:   # finished in Optuna before the resume
                return
        super().on_trial_complete(trial_id, result=result, error=error)

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        if trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr("tune_trial_id", trial_id)
        return config


def _searcher(plan: StudyPlan):
    seed = plan.options.seed
    if len(plan.objectives) > 1:
        sampler = optuna.samplers.NSGAIISampler(seed=seed)
    elif plan.search == "grid":
        sampler = _TuneGridSampler({n: p.grid() for n, p in plan.space.items()}, seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed)
    metrics = [o["column"] for o in plan.objectives]
    modes = [o["mode"] for o in plan.objectives]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _optuna_storage(plan)
    searcher = TaggedOptunaSearch(space=_DefineByRun(plan.space),
                                  metric=metrics if len(metrics) > 1 else metrics[0],
                                  mode=modes if len(modes) > 1 else modes[0], sampler=sampler,
                                  study_name=plan.name, storage=storage)
    # Optuna keeps intermediate values for one objective only (``Trial.report`` raises otherwise)
    searcher.raw_metric = plan.metric if len(plan.objectives) == 1 else None
    study = searcher._ot_study        # what optuna-dashboard shows: the metric and the question
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([o["metric"] if o["column"] == "best" else o["column"]
                                for o in plan.objectives])
    for key, value in (("question", plan.study.question), ("script", plan.study.name),
                       ("preset", plan.options.preset), ("task", plan.task),
                       ("objective", f"best {plan.metric} over fine-tuning ({plan.mode})")):
        study.set_user_attr(key, value)
    return searcher


def _optuna_storage(plan: StudyPlan):
    try:
        return optuna.storages.RDBStorage(plan.optuna_storage)
    except Exception as err:   # SQLAlchemy raises many types for a bad URL or an unreachable DB
        raise LogahError(f"--optuna-storage {plan.optuna_storage}: {err}") from None


def _scheduler(plan: StudyPlan):
    if plan.options.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    finetune = plan.trial_config({}).finetune
    # max_t past the last step: a trial that reaches its budget ends by itself (and writes its
    # record) instead of being stopped by the scheduler at its last report
    return ASHAScheduler(time_attr="step", metric="best", mode=plan.mode,
                         max_t=finetune.steps + 1, grace_period=finetune.eval_every,
                         reduction_factor=2)


def connect_ray() -> tuple[str, str]:
    """Attach to the cluster of a Ray job (``RAY_ADDRESS``), else start an embedded local Ray
    with every core (never a bare ``ray.init()``: it would attach to a leftover ``ray start``).
    Returns where the trials' code comes from, and its digest: a job runs in Ray's copy of its
    working dir; an embedded Ray ships a copy of this ``logah`` package, taken now, to its
    workers, so editing the tree while a study runs does not change
    its later trials, and the digest is the copy's. The copy is the workers' working directory
    (runtime env ``working_dir``): as a mere ``py_modules`` entry it would come after the
    driver's working directory on their path, and a checkout there would win."""

    import ray

    if os.environ.get("RAY_ADDRESS"):
        if not ray.is_initialized():
            ray.init(logging_level=logging.WARNING)
        return "the Ray job's copy of its working directory", code_digest()
    snapshot = Path(tempfile.mkdtemp(prefix="logah-snapshot-")) / "logah"
    shutil.copytree(package_dir(), snapshot, ignore=shutil.ignore_patterns("__pycache__"))
    atexit.register(shutil.rmtree, snapshot.parent, ignore_errors=True)
    if not ray.is_initialized():
        # a private Ray started for this study: its token-authentication notice is no news
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
            logging.ERROR)
        cpus = len(os.sched_getaffinity(0))
        _start_local_ray(cpus, snapshot.parent)
    return (f"a copy of {package_dir()} taken when the study started (Ray working_dir)",
            code_digest(snapshot))


RAY_START_ATTEMPTS = 3


def _start_local_ray(cpus: int, working_dir: Path) -> None:
    """Start the study's private Ray, trying again when it fails to come up: Ray gives its
    node 30 s to register (a constant of Ray's), which a machine busy with other studies'
    trials can miss. A failed start's processes are left idle (Ray gives no handle on them)
    and stopped with the study's own when it exits, by Ray's reaper."""
    import ray

    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        try:
            # log_to_driver off: the trials' own output (and Ray's notices when it stops their
            # processes) stays in Ray's session logs; the terminal gets one line per trial, and
            # a failed trial's error is in that line, its record and the report
            ray.init("local", num_cpus=cpus, resources={DRIVER_RESOURCE: cpus},
                     dashboard_host="127.0.0.1", logging_level=logging.WARNING,
                     log_to_driver=False, runtime_env={"working_dir": str(working_dir)})
            return
        except Exception as err:   # Ray raises a bare Exception when its processes start too slowly
            ray.shutdown()
            if attempt == RAY_START_ATTEMPTS:
                raise LogahError(f"could not start a local Ray for the study in "
                                 f"{RAY_START_ATTEMPTS} tries: {err}".rstrip(".")
                                 + " (on an overloaded machine, try again later)") from err
            print(f"local Ray did not start ({err}); trying again "
                  f"({attempt + 1} of {RAY_START_ATTEMPTS})", file=sys.stderr)


def _local_resources() -> dict:
    """What the embedded Ray a study starts here will have (``connect_ray``)."""
    cpus = len(os.sched_getaffinity(0))
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"CPU": cpus, "GPU": gpus, DRIVER_RESOURCE: cpus}


def _trial_resources(plan: StudyPlan, available: dict) -> tuple[dict, int]:
    """What one trial holds, and how many can run at once on a cluster with ``available``
    resources (checked before Ray starts for an embedded Ray, and again on the cluster)."""
    workers, gpu = plan.options.train_workers, plan.options.gpu
    if gpu and available.get("GPU", 0) < 1:
        raise LogahError("--gpu: the Ray cluster has no GPU" if os.environ.get("RAY_ADDRESS")
                         else "--gpu: this machine has no GPU that torch can use")
    if workers == 1:
        resources = {"CPU": 1, **({"GPU": 1} if gpu else {})}
        limit = int(available.get("CPU", 0)) if not gpu else int(available["GPU"])
    else:
        if available.get(DRIVER_RESOURCE, 0) < 1:
            raise LogahError(f"--train-workers {workers}: the cluster has no '{DRIVER_RESOURCE}' "
                             f"resource for trial drivers (start its head with --resources "
                             f"'{{\"{DRIVER_RESOURCE}\": 4}}', as cluster/ does)")
        resources = {DRIVER_RESOURCE: 1}
        per_worker = "GPU" if gpu else "CPU"
        limit = min(int(available[DRIVER_RESOURCE]), int(available.get(per_worker, 0)) // workers)
    if limit < 1:
        raise LogahError(f"the Ray cluster ({int(available.get('CPU', 0))} CPUs, "
                         f"{int(available.get('GPU', 0))} GPUs) cannot run one trial with "
                         f"--train-workers {workers}{' --gpu' if gpu else ''}")
    return resources, limit


def _check_folder(plan: StudyPlan) -> None:
    """A new study needs a new folder; a resumed one, the same study's folder."""
    tune_dir = plan.study_dir / TUNE_DIR
    if plan.options.resume:
        if not tune.Tuner.can_restore(str(tune_dir)):
            raise LogahError(f"cannot resume: {plan.study_dir} holds no study run "
                             f"(run it without --resume first)")
        saved = read_study_record(plan.study_dir / STUDY_FILE)
        check_history(saved, plan.study_dir / STUDY_FILE)     # what the resumed run continues
        if saved.get("folder") and Path(saved["folder"]) != plan.study_dir:
            raise LogahError(f"cannot resume {plan.study_dir}: the study ran in {saved['folder']} "
                             f"and was moved (its Tune and Optuna state name that folder); "
                             f"resume it there, or analyse this copy with logah report")
        if saved.get("swept") != sorted(plan.space) or saved.get("search") != _search_name(plan):
            raise LogahError(f"cannot resume {plan.study_dir}: it was run with another search "
                             f"space or search (swept {saved.get('swept')})")
        saved_store = ghn_store_of(plan.study_dir, saved)
        if saved_store != plan.ghn_store:                           # its GHNs would be retrained
            raise LogahError(f"cannot resume {plan.study_dir}: its GHNs are in {saved_store} "
                             f"(give --ghn-store that folder)")
        changed = _changed_settings(saved.get("trial"), _base_record(plan))
        if changed:     # unfinished trials would run with other settings than the finished ones
            raise LogahError(f"cannot resume {plan.study_dir}: its trials started from other "
                             f"settings ({changed}); give those with --set")
    elif plan.study_dir.exists() and any(plan.study_dir.iterdir()):
        raise LogahError(f"study folder {plan.study_dir} already exists (use --resume to "
                         f"continue it, or another --name)")
    existing = next(p for p in (plan.study_dir, *plan.study_dir.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise LogahError(f"cannot write the study folder {plan.study_dir}: {existing} is not a "
                         f"writable folder")


def _create_folder(plan: StudyPlan) -> None:
    try:
        plan.study_dir.mkdir(parents=True, exist_ok=True)
        probe = plan.study_dir / ".write-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise LogahError(f"cannot write the study folder {plan.study_dir}: "
                         f"{err.strerror or err}") from None


def _search_name(plan: StudyPlan) -> str:
    return "nsga2" if len(plan.objectives) > 1 else plan.search


def _base_record(plan: StudyPlan) -> dict:
    """The trial every sample starts from (preset and --set), as study.json stores it (through
    ``logah.io.dumps``, so a saved record and a current one compare equal when nothing changed)."""
    return json.loads(dumps(plan.trial_config({}).to_dict()))


def _changed_settings(saved: dict | None, current: dict) -> str:
    """``"a.b: 1 then, 2 now; ..."`` for the settings that differ (empty when none do, or for a
    study recorded before study.json kept its base trial)."""
    if saved is None:
        return ""
    before, after = flatten(saved), flatten(current)
    names = sorted(name for name in before.keys() | after.keys()
                   if before.get(name) != after.get(name))
    return "; ".join(f"{name}: {before.get(name)} then, {after.get(name)} now" for name in names)


def _study_record(plan: StudyPlan, **extra) -> dict:
    trial = _base_record(plan)
    return {"name": plan.name, "folder": str(plan.study_dir), "script": plan.study.name,
            "question": plan.study.question,
            "preset": plan.options.preset, "task": plan.task, "objectives": plan.objectives,
            "swept": sorted(plan.space), "fixed": plan.fixed,
            "target": trial["finetune"]["target"],
            "dataset": trial["finetune"]["data"]["dataset"],
            "num_samples": plan.num_samples,
            "search": _search_name(plan),
            "scheduler": plan.options.scheduler, "train_workers": plan.options.train_workers,
            "optuna_storage": plan.optuna_storage, "optuna_study_name": plan.name,
            "ghn_store": str(plan.ghn_store), "trial": trial, **extra}


def run_study(plan: StudyPlan) -> pd.DataFrame:
    """Run (or, with ``resume``, continue) the study; returns its trial table. Everything that
    can refuse the run (folder, lock, resources of the Ray it will start) is checked before Ray
    starts; a new study whose set-up fails before any trial started leaves no folder behind."""
    _check_folder(plan)
    if not os.environ.get("RAY_ADDRESS"):
        check_runnable_here(plan)
        _trial_resources(plan, _local_resources())
    started = time.perf_counter()      # the study's wall time includes starting Ray
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    # GHN-phase records carry no fine-tuning metric yet; the final record of a trial always does
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # what a study prints is one line per trial (TableCallback); Tune's own tables of every
    # record and its tracebacks of failed trials (which the trial records and the report hold)
    # are off
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    if plan.options.optuna_storage:     # a database of the user's: reachable before Ray starts
        _optuna_storage(plan)
    # the outermost folder this set-up creates (the study's, or --storage itself): removed
    # again if the study fails before any trial started
    created = next((p for p in reversed((plan.study_dir, *plan.study_dir.parents)) if not p.exists()), None)
    _create_folder(plan)
    try:
        with open(plan.study_dir / LOCK_FILE, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                created = None    # another process's study: not ours to remove
                raise LogahError(f"study {plan.study_dir} is being run by another process") from None
            snapshot, digest = connect_ray()
            import ray

            resources, limit = _trial_resources(plan, ray.cluster_resources())
            return _run_locked(plan, resources, limit, started, snapshot, digest)
    except BaseException:
        if created is not None and not (plan.study_dir / TRIALS_DIR).exists():   # no trial started
            shutil.rmtree(created, ignore_errors=True)
        raise


class _Segments:
    """The runs of a study (a first run, then each ``--resume``) in ``study.json``: when each
    ran, on which code, for how long. The current one's wall time is written as it goes (at
    most every ``EVERY_S`` seconds), so a driver killed mid-run still leaves it counted; the
    study's ``wall_s`` is their sum. A resume that runs no trial leaves no segment."""

    EVERY_S = 30.0

    def __init__(self, plan: StudyPlan, previous: dict, started: float, code: dict):
        self.path, self.started = plan.study_dir / STUDY_FILE, started
        self.earlier = list(previous.get("segments") or [])
        if not self.earlier and previous.get("wall_s"):    # a study recorded before segments
            self.earlier = [{"started_at": previous.get("started_at"),
                             "finished_at": previous.get("finished_at"),
                             "wall_s": previous["wall_s"]}]
        self.previous_finish = previous.get("finished_at")
        self.current = {"started_at": now(), "finished_at": None, "wall_s": 0.0,
                        "commit": code["commit"], "dirty": code["dirty"], "digest": code["digest"]}
        self.last_write = 0.0

    @property
    def id(self) -> str:
        return self.current["started_at"]

    def update(self, *, force: bool = False, finished: bool = False, ran: bool = True) -> None:
        if not force and time.perf_counter() - self.last_write < self.EVERY_S:
            return
        self.last_write = time.perf_counter()
        self.current["wall_s"] = time.perf_counter() - self.started
        if finished:
            self.current["finished_at"] = now()
        segments = self.earlier + ([self.current] if ran else [])
        record = read_study_record(self.path)
        record.update(segments=segments, wall_s=sum(s.get("wall_s") or 0.0 for s in segments),
                      finished_at=(self.current["finished_at"] if ran else self.previous_finish))
        write_json(self.path, record)


def _warn_if_code_changed(plan: StudyPlan, previous: dict, code: dict) -> None:
    """A resume on other code than the study's last run: its trials would mix two versions."""
    last = (previous.get("segments") or [{}])[-1]
    before = last.get("digest") or (previous.get("provenance") or {}).get("code", {}).get("digest")
    if before and before != code["digest"]:
        def name(c: dict) -> str:
            commit = (c.get("commit") or "unknown commit")[:10]
            return f"{commit}{' (uncommitted changes)' if c.get('dirty') else ''}, code {c.get('digest')}"
        print(f"{plan.study.name}: warning: {plan.study_dir.name} last ran {name(last)}; it now "
              f"runs {name(code)}: its trials mix two versions of the code", file=sys.stderr)


def _run_locked(plan: StudyPlan, resources: dict, limit: int, started: float,
                snapshot: str, digest: str) -> pd.DataFrame:
    previous = read_study_record(plan.study_dir / STUDY_FILE) if plan.options.resume else {}
    record = provenance(snapshot, digest)
    if plan.options.resume:
        _warn_if_code_changed(plan, previous, record["code"])
    segments = _Segments(plan, previous, started, record["code"])
    plan = dataclasses.replace(plan, segment=segments.id)
    searcher = None if plan.options.resume else _searcher(plan)
    write_json(plan.study_dir / STUDY_FILE, _study_record(
        plan, started_at=previous.get("started_at") or now(), finished_at=None,
        wall_s=previous.get("wall_s"), concurrency=limit,
        provenance=previous.get("provenance") or record))
    trainable = tune.with_resources(tune.with_parameters(study_trial, plan=plan), resources)
    tables = TableCallback(plan, segments)
    run_config = tune.RunConfig(name=TUNE_DIR, storage_path=str(plan.study_dir),
                                failure_config=tune.FailureConfig(max_failures=MAX_TRIAL_RETRIES),
                                callbacks=[tables], verbose=0)
    if plan.options.resume:
        tuner = tune.Tuner.restore(str(plan.study_dir / TUNE_DIR), trainable,
                                   resume_unfinished=True, resume_errored=True)
        # Tune restores the RunConfig it pickled, callbacks included: the earlier run's
        # TableCallback, which would record this run as that one's segment. Ray 2.60 has no
        # public way to pass new callbacks to a restored Tuner, hence the private attribute.
        tuner._local_tuner.get_run_config().callbacks = [tables]
    else:
        tuner = tune.Tuner(trainable, run_config=run_config, tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=_scheduler(plan), num_samples=plan.num_samples,
            max_concurrent_trials=limit, trial_dirname_creator=_trial_dirname))
    tuner.fit()
    _fail_orphaned_optuna_trials(plan)
    table = write_tables(plan.study_dir)
    segments.update(force=True, finished=True, ran=tables.active)
    return table


def _fail_orphaned_optuna_trials(plan: StudyPlan) -> None:
    """After ``fit`` no trial runs, yet a driver killed mid-study can leave an Optuna trial it
    had asked for but never started (suggested after Tune's last snapshot of the searcher);
    such a trial is closed as FAIL, so the Optuna study's COMPLETE trials are the table's."""
    study = optuna.load_study(study_name=plan.name, storage=plan.optuna_storage)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def _trial_dirname(trial) -> str:
    return trial.trial_id

