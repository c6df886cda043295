"""A shared Optuna database: several jobs add trials to one study in a real PostgreSQL server
(the `postgres_url` fixture: Debian's server on loopback, deleted afterwards), the way cluster jobs
do with `--optuna-storage postgresql://...`."""

from __future__ import annotations

import subprocess
import sys

import optuna

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
