"""A shared Optuna database: several jobs add trials to one study in a real PostgreSQL server
(the `postgres_url` fixture: Debian's server on loopback, deleted afterwards), the way cluster jobs
do with `--optuna-storage postgresql://...`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest

from logah.analysis import load_optuna_study, load_study

ROOT = Path(__file__).resolve().parents[1]

ADD_TRIALS = """
import sys
import optuna

url, name, n_trials = sys.argv[1:]
study = optuna.load_study(study_name=name, storage=url)
study.optimize(lambda trial: trial.suggest_float("x", -1.0, 1.0) ** 2, n_trials=int(n_trials))
"""


def test_two_processes_add_trials_to_one_optuna_study(postgres_url):
    storage = optuna.storages.RDBStorage(postgres_url)
    assert storage.engine.dialect.name == "postgresql"  # the driver that pyproject.toml pins
    optuna.create_study(study_name="shared", storage=postgres_url, direction="minimize")

    # Two writers, each with its own `load_study`: this process and a separate one.
    optuna.load_study(study_name="shared", storage=postgres_url).optimize(
        lambda trial: trial.suggest_float("x", -1.0, 1.0) ** 2, n_trials=3)
    subprocess.run([sys.executable, "-c", ADD_TRIALS, postgres_url, "shared", "4"], check=True,
                   timeout=120)

    study = optuna.load_study(study_name="shared", storage=postgres_url)
    assert optuna.get_all_study_names(postgres_url) == ["shared"]
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(7))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert study.best_value == min(t.value for t in trials)


@pytest.mark.slow
def test_two_smoke_studies_add_up_to_one_optuna_study(postgres_url, tmp_path):
    """Two study runs, one after the other, in separate folders but with the same name and
    database, are one Optuna study holding every trial of both (what cluster jobs that share
    `--optuna-storage postgresql://...` do)."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}  # a local Ray
    runs = {}
    for seed, run in enumerate(("first", "second")):
        # TPE rather than the default grid: a second pass of a finished grid would have nothing left
        done = subprocess.run([sys.executable, "studies/rank_sweep.py", "--preset", "smoke",
                               "--search", "tpe", "--num-samples", "2", "--seed", str(seed),
                               "--storage", str(tmp_path / run), "--name", "shared-sweep",
                               "--optuna-storage", postgres_url],
                              cwd=ROOT, env=env, timeout=1800, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        runs[run] = pd.read_parquet(tmp_path / run / "shared-sweep" / "trials.parquet")
        record = json.loads((tmp_path / run / "shared-sweep" / "study.json").read_text())
        assert record["optuna_storage"] == postgres_url
        assert record["optuna_study_name"] == "shared-sweep"
        assert (tmp_path / run / "shared-sweep" / "report.html").is_file()  # each run's report

    study = optuna.load_study(study_name="shared-sweep", storage=postgres_url)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    table = pd.concat(runs.values()).set_index("trial_id")
    assert len(table) == 4 and (table["status"] == "COMPLETE").all()
    # Each Optuna trial is one row of one run's trial table, with the value that row reports.
    by_tune_id = {t.user_attrs["tune_trial_id"]: t for t in trials}
    assert set(by_tune_id) == set(table.index)
    for trial_id, trial in by_tune_id.items():
        assert trial.value == pytest.approx(table.loc[trial_id, "best"])
        assert trial.params["ghn_training.ghn.rank"] == table.loc[trial_id, "ghn_training.ghn.rank"]
    # The report finds the shared study through the study folder's record.
    assert len(load_optuna_study(load_study(tmp_path / "first" / "shared-sweep")).trials) == 4
