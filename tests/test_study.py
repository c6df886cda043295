"""Studies: search spaces over trial settings, plan checks, every preset's configs, and real
smoke studies on Ray Tune (embedded local Ray, real data)."""

import importlib.util
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from logah.errors import LogahError
from logah.study import Choice, FloatRange, IntRange, Variants
from logah.study.cli import main
from logah.study.scales import base_trial
from logah.study.space import apply_settings, parse_param
from logah.study.spec import StudyOptions, plan_study

ROOT = Path(__file__).resolve().parents[1]
STUDY_SCRIPTS = sorted((ROOT / "studies").glob("*.py"))


def load_study(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "studies" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.STUDY


def run_script(name: str, *args: str, timeout: int = 900, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, str(ROOT / "studies" / f"{name}.py"), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, **popen)


# --- spaces and plans (no Ray) ----------------------------------------------------------------
def test_settings_address_nested_fields_and_variants_expand():
    base = base_trial("vit", "smoke").to_dict()
    decoder = Variants(tiled={"ghn_training.ghn": "ghn3-cpu", "ghn_training.ghn.hidden": 40,
                              "finetune.init": "ghn3"})
    record = apply_settings(base, {"decoder": "tiled", "ghn_training.space.num_archs": 7},
                            {"decoder": decoder})
    assert record["ghn_training"]["ghn"]["decoder"] == "tiled"
    assert record["ghn_training"]["ghn"]["hidden"] == 40 and record["finetune"]["init"] == "ghn3"
    assert record["ghn_training"]["space"]["num_archs"] == 7
    assert base["ghn_training"]["space"]["num_archs"] != 7          # the base is not modified
    with pytest.raises(LogahError, match="ghn_training.ghn.rnak"):
        apply_settings(base, {"ghn_training.ghn.rnak": 4}, {})
    with pytest.raises(LogahError, match="not a group"):
        apply_settings(base, {"finetune.lr.value": 4}, {})


def test_command_line_parameters():
    assert parse_param("2,4,8") == Choice(2, 4, 8)
    assert parse_param("2:10:2").grid() == [2, 4, 6, 8, 10]
    assert parse_param("1e-3:1e-1:log") == FloatRange(1e-3, 1e-1, log=True)
    assert parse_param("sgd,adamw") == Choice("sgd", "adamw")
    for bad in (IntRange(8, 2), FloatRange(1.0, 1.0), FloatRange(0.0, 1.0, log=True), Choice()):
        with pytest.raises(LogahError):
            bad.check("x")


@pytest.mark.parametrize("script", [p.stem for p in STUDY_SCRIPTS])
def test_every_preset_of_every_study_builds_valid_trials(script):
    """The paper preset is never run here: build (and validate) each of its trial configs."""
    study = load_study(script)
    for preset, task in itertools.product(("smoke", "cpu", "paper"), study.tasks):
        plan = plan_study(study, StudyOptions(preset=preset, task=task, storage="/tmp/unused"))
        assert plan.num_samples >= 2 and plan.space
        values = [p.grid() if plan.search == "grid" else p.corners() for p in plan.space.values()]
        for combo in itertools.product(*values):
            trial = plan.trial_config(dict(zip(plan.space, combo)))
            assert trial.finetune.arch.family == ("vit" if task == "vit" else "gpt2")
    paper = plan_study(study, StudyOptions(preset="paper", task="vit", storage="/tmp/unused"))
    assert paper.trial_config({}).ghn_training.space["name"] == "vits-1k"


def test_study_scripts_are_declarations():
    for path in STUDY_SCRIPTS:
        assert len(path.read_text().splitlines()) < 100, path


@pytest.mark.parametrize("args, message", [
    (["--preset", "huge"], "invalid choice"),
    (["--sweep", "ghn_training.ghn.rank=8:2"], "empty range"),
    (["--sweep", "finetune.lr=0.1:0.01"], "empty range"),
    (["--num-samples", "0"], "positive"),
    (["--name", "a/b"], "path separator"),
    (["--objectives", "quality,speed"], "reports quality, ghn_params"),
    (["--set", "ghn_training.ghn.rnak=3"], "unknown trial setting"),
    (["--set", "ghn_training.ghn.heads=5"], "does not divide"),
    (["--sweep", "ghn_training.ghn.rank=2,3", "--set", "ghn_training.ghn.rank=2"], "fixed and swept"),
    (["--scheduler", "asha", "--objectives", "quality,ghn_params"], "one metric"),
    (["--resume"], "cannot resume"),
])
def test_bad_input_stops_before_any_trial(args, message, tmp_path, capsys):
    storage = tmp_path / "studies"
    assert main(load_study("rank_sweep"), ["--storage", str(storage), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]
    assert not storage.exists()


def test_storage_that_cannot_be_written_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(load_study("rank_sweep"), ["--storage", str(blocker / "studies")]) == 2
    assert "not a writable folder" in capsys.readouterr().err


# --- real studies on Ray ----------------------------------------------------------------------
def read_study(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    return (pd.read_parquet(folder / "trials.parquet"), pd.read_parquet(folder / "steps.parquet"),
            json.loads((folder / "study.json").read_text()))


def optuna_trials(folder: Path, info: dict) -> list:
    return optuna.load_study(study_name=info["optuna_study_name"],
                             storage=info["optuna_storage"]).get_trials(deepcopy=False)


def test_smoke_rank_sweep_tables_failures_and_shared_ghns(smoke_study):
    """The rank sweep at its smoke preset, with a fine-tuning batch size swept in that no
    dataset can serve: those trials fail with their error; the others complete."""
    trials, steps, info = read_study(smoke_study)
    assert len(trials) == 4 and set(trials["ghn_training.ghn.rank"]) == {2, 8}
    done = trials[trials["status"] == "COMPLETE"]
    failed = trials[trials["status"] == "FAILED"]
    assert len(done) == 2 and len(failed) == 2
    assert (failed["finetune.data.batch_size"] == 100_000).all()
    assert failed["error"].str.contains("fewer than one batch").all()
    assert done["best"].between(0, 1).all() and (done["best"] >= done["final"]).all()
    assert (done["ghn_params"] > 0).all() and done["finetune_wall_s"].gt(0).all()
    # one GHN per rank, trained once and shared by the trials of that rank
    assert len(list((smoke_study / "ghns").glob("*/store.json"))) == 2
    assert trials["ghn_reused"].sum() == 2
    assert set(steps["phase"]) == {"ghn", "finetune"}
    assert set(done["trial_id"]) <= set(steps["trial_id"])
    finetuned = steps[steps["phase"] == "finetune"]
    assert set(finetuned["trial_id"]) == set(done["trial_id"])
    assert finetuned.groupby("trial_id")["step"].max().eq(20).all()
    assert info["objectives"][0] == {"column": "best", "metric": "val_accuracy", "mode": "max"}
    assert info["finished_at"] and info["swept"] == ["finetune.data.batch_size",
                                                     "ghn_training.ghn.rank"]
    ot = optuna_trials(smoke_study, info)
    assert sorted(t.user_attrs["tune_trial_id"] for t in ot) == sorted(trials["trial_id"])
    states = {t.user_attrs["tune_trial_id"]: t.state.name for t in ot}
    assert {states[i] for i in failed["trial_id"]} == {"FAIL"}
    assert {states[i] for i in done["trial_id"]} == {"COMPLETE"}
