"""A study stopped with Ctrl-C resumes: Tune runs the interrupted trials again under their old
ids, whose Optuna trials were already told FAIL; the searcher gives them fresh Optuna trials with
the same settings instead of failing on Optuna's refusal to update a finished trial. A trial
that completed after the last snapshot of a killed driver is run again too, and only reports its
recorded result: its Optuna trial stays the one COMPLETE trial of its Tune id."""

import optuna
from optuna.distributions import CategoricalDistribution

from logah.study.runner import TaggedOptunaSearch


def _space(trial):
    trial.suggest_categorical("lr", [0.05, 0.1])


def _study_and_searcher(tmp_path):
    """An Optuna study in SQLite and the study runner's searcher on it, set up as Tune does."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    searcher = TaggedOptunaSearch(space=_space, metric="acc", mode="max")
    searcher._ot_study = study
    searcher.raw_metric = "acc"
    return study, searcher


def test_a_resumed_trial_whose_optuna_trial_failed_gets_a_fresh_one(tmp_path):
    study, searcher = _study_and_searcher(tmp_path)
    config = searcher.suggest("t1")
    searcher.on_trial_result("t1", {"acc": 0.5, "step": 1})
    searcher.on_trial_complete("t1", error=True)                 # Ctrl-C: told FAIL
    searcher._completed_trials.discard("t1")     # the searcher state saved before that
    searcher.on_trial_result("t1", {"acc": 0.6, "step": 1})      # optuna raised here before
    searcher.on_trial_complete("t1", {"acc": 0.7, "step": 2})
    failed, resumed = study.trials
    assert failed.state == optuna.trial.TrialState.FAIL
    assert resumed.state == optuna.trial.TrialState.COMPLETE and resumed.value == 0.7
    assert resumed.params == failed.params == {"lr": config["lr"]}
    assert resumed.user_attrs["tune_trial_id"] == "t1" and resumed.intermediate_values == {1: 0.6}
    assert resumed.distributions == {"lr": CategoricalDistribution([0.05, 0.1])}


def test_a_rerun_of_a_trial_that_completed_in_optuna_adds_no_optuna_trial(tmp_path):
    study, searcher = _study_and_searcher(tmp_path)
    searcher.suggest("t1")
    searcher.on_trial_result("t1", {"acc": 0.5, "step": 1})
    searcher.on_trial_complete("t1", {"acc": 0.7, "step": 2})     # then the driver is killed
    searcher._completed_trials.discard("t1")     # the searcher state saved before that
    searcher.on_trial_result("t1", {"acc": 0.7, "step": 2})      # the rerun reports its record
    searcher.on_trial_complete("t1", {"acc": 0.7, "step": 2})
    (only,) = study.trials
    assert only.state == optuna.trial.TrialState.COMPLETE and only.value == 0.7
    assert only.intermediate_values == {1: 0.5}
