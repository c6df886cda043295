"""Analysis of a real smoke study: tidy tables, seed statistics, the report and the notebooks.

One smoke rank sweep (real data, real trials, one of them made to fail) runs once for the
module; every test reads its folder as a researcher would, without Ray.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from logah.analysis import (aggregate_seeds, at_best_setting, best_per_group, export_tables,
                            load_optuna_study, load_study, pareto_front, write_report)
from logah.analysis.figures import study_panels
from logah.cli import main
from logah.errors import LogahError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study_dir(smoke_study):
    return smoke_study


@pytest.fixture(scope="module")
def study(study_dir):
    return load_study(study_dir)


# -- tables -------------------------------------------------------------------------------------

def test_trial_table_has_one_row_per_trial_and_the_format_columns(study, study_dir):
    trials = study.trials
    folders = sorted(p.name for p in (study_dir / "trials").iterdir() if p.is_dir())
    assert sorted(trials["trial_id"]) == folders
    assert trials["trial_id"].is_unique
    for column in ("trial_id", "status", "error", "ghn_training.ghn.rank", "finetune.init",
                   "ghn_params", "metric", "mode", "zero_shot", "best", "final", "wall_s",
                   "study", "target", "dataset", "init_kind", "init_label"):
        assert column in trials, column
    assert trials["ghn_training.ghn.rank"].nunique() >= 2
    assert set(trials["status"]) <= {"COMPLETE", "FAILED", "RUNNING"}
    done = study.completed
    assert len(done) >= 2 and done["best"].notna().all() and (done["ghn_params"] > 0).all()
    assert (done["init_label"].str.startswith("LoGAH")).all()


def test_a_failed_trial_shows_with_its_status_and_error(study):
    failed = study.trials[study.trials["status"] == "FAILED"]
    assert len(failed) >= 1   # the smoke study makes some trials fail (conftest)
    assert failed["error"].str.len().gt(0).all()
    assert failed["best"].isna().all()


def test_steps_table_holds_both_phases_of_every_completed_trial(study):
    steps = study.steps
    assert {"trial_id", "phase", "step"} <= set(steps.columns)
    for trial_id, metric in zip(study.completed["trial_id"], study.completed["metric"]):
        mine = steps[steps["trial_id"] == trial_id]
        tuning = mine[mine["phase"] == "finetune"]
        assert tuning["step"].min() == 0 and tuning[metric].notna().any(), trial_id
    assert steps.loc[steps["phase"] == "ghn", "loss"].notna().any()


def test_export_round_trips_through_csv_and_parquet(study, tmp_path):
    for fmt in ("csv", "parquet"):
        trials_path, steps_path = export_tables(study, tmp_path / fmt, fmt)
        back = pd.read_csv(trials_path) if fmt == "csv" else pd.read_parquet(trials_path)
        assert list(back.columns) == list(study.trials.columns)
        assert back["trial_id"].astype(str).tolist() == study.trials["trial_id"].tolist()
        np.testing.assert_allclose(back["best"], study.trials["best"])
        steps = pd.read_csv(steps_path) if fmt == "csv" else pd.read_parquet(steps_path)
        assert len(steps) == len(study.steps)
    with pytest.raises(LogahError, match="csv"):
        export_tables(study, tmp_path, "xlsx")


def test_optuna_study_loads_from_the_study_record(study):
    optuna_study = load_optuna_study(study)
    ids = {t.user_attrs.get("tune_trial_id") for t in optuna_study.trials}
    assert set(study.completed["trial_id"]) <= ids


def test_not_a_study_and_an_empty_study_are_one_clear_error(study_dir, tmp_path, capsys):
    empty = tmp_path / "empty-study"
    empty.mkdir()
    shutil.copy(study_dir / "study.json", empty / "study.json")   # started, no trial finished
    cases = {tmp_path: "not a study folder", tmp_path / "missing": "no such study folder",
             empty: "has no trials yet"}
    for folder, message in cases.items():
        with pytest.raises(LogahError, match=message):
            load_study(folder)
        out = tmp_path / "report.html"
        assert main(["report", str(folder), "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and err.startswith("logah report: error:")
        assert not out.exists()


# -- statistics ---------------------------------------------------------------------------------

def test_aggregate_over_seeds_is_mean_sample_std_and_count_ignoring_nan():
    trials = pd.DataFrame({"rank": [4, 4, 4, 8, 8], "seed": [0, 1, 2, 0, 1],
                           "best": [0.5, 0.7, math.nan, 0.9, math.nan]})
    agg = aggregate_seeds(trials, by=["rank"], value="best").set_index("rank")
    assert agg.loc[4, "best_mean"] == pytest.approx(0.6)
    assert agg.loc[4, "best_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert agg.loc[4, "best_count"] == 2 and agg.loc[8, "best_count"] == 1
    assert math.isnan(agg.loc[8, "best_std"])


def test_best_per_group_follows_the_mode():
    trials = pd.DataFrame({"target": ["vit", "vit", "gpt2", "gpt2"], "trial_id": list("abcd"),
                           "best": [0.4, 0.6, 300.0, 200.0]})
    assert best_per_group(trials, ["target"], "best", "max")["trial_id"].tolist() == ["c", "b"]
    assert best_per_group(trials, ["target"], "best", "min")["trial_id"].tolist() == ["d", "a"]
    with pytest.raises(LogahError, match="mode"):
        best_per_group(trials, ["target"], "best", "up")
    with pytest.raises(LogahError, match="no column"):
        best_per_group(trials, ["init"], "best", "max")


def test_each_group_is_reported_at_its_own_best_setting_chosen_on_another_column():
    trials = pd.DataFrame({
        "init": ["a"] * 4 + ["b"] * 4,
        "lr": [0.1, 0.1, 0.2, 0.2] * 2,
        "val": [0.5, 0.7, 0.8, 0.6, 0.9, 0.9, 0.1, np.nan],
        "test": [0.1, 0.2, 0.3, 0.5, 0.6, 0.8, 0.99, 0.99]})
    best = at_best_setting(trials, by=["init"], setting="lr", choose_on="val", mode="max",
                           report=["test"])
    # a: lr 0.1 has val mean 0.6, lr 0.2 has 0.7 -> 0.2; b: 0.9 vs 0.1 -> 0.1 (test never chooses)
    assert best["lr"].tolist() == [0.2, 0.1]
    assert best["test_mean"].tolist() == pytest.approx([0.4, 0.7])
    assert best["test_count"].tolist() == [2, 2]
    both = at_best_setting(trials, by=["init"], setting="lr", choose_on="val", mode="max",
                           report=["val", "test"])          # the chosen-on column reported too
    assert both["val_mean"].tolist() == pytest.approx([0.7, 0.9])
    worst = at_best_setting(trials, by=["init"], setting="lr", choose_on="val", mode="min",
                            report=["test"])
    assert worst["lr"].tolist() == [0.1, 0.2]


def test_pareto_front_keeps_exactly_the_non_dominated_trials():
    # (params, accuracy): b beats a on both; d ties c on accuracy with more parameters
    trials = pd.DataFrame({"trial_id": list("abcdef"),
                           "ghn_params": [200, 100, 300, 400, 500, math.nan],
                           "best": [0.5, 0.6, 0.8, 0.8, 0.9, 1.0]})
    front = pareto_front(trials, quality="best", mode="max")
    assert front["trial_id"].tolist() == ["b", "c", "e"]
    front = pareto_front(trials.assign(best=-trials["best"]), quality="best", mode="min")
    assert front["trial_id"].tolist() == ["b", "c", "e"]


# -- report -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report(study_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["report", str(study_dir), "-o", str(out)]) == 0
    return out


def test_report_is_self_contained_and_has_every_panel(report, study):
    html = report.read_text()
    bundle = get_plotlyjs()
    assert bundle in html   # plotly.js inlined; nothing else is fetched:
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html.replace(bundle, ""))
    panels = study_panels(study)
    drawn = [p for p in panels if p.figure is not None]
    keys = {p.key for p in drawn}
    assert {"finetune-curves", "ghn-curves", "pareto", "importances"} <= keys, \
        [(p.key, p.note) for p in panels if p.figure is None]
    assert any(k.startswith("swept-ghn-training-ghn-rank") for k in keys)
    assert any(k.startswith("parallel") for k in keys)
    assert html.count('class="js-plotly-plot"') + html.count("Plotly.newPlot") >= len(drawn)
    failed = study.trials[study.trials["status"] == "FAILED"]
    for _, row in failed.iterrows():
        assert row["trial_id"] in html and 'class="failed"' in html


def test_report_overwrites_atomically_and_defaults_into_the_study(study_dir, tmp_path):
    out = tmp_path / "r.html"
    out.write_text("old")
    with pytest.raises(LogahError):
        write_report([study_dir, tmp_path / "nowhere"], out)
    assert out.read_text() == "old"
    default = write_report([study_dir])
    assert default == study_dir / "report.html" and default.stat().st_size > 1e6
    default.unlink()


# -- notebooks ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["rank_ablation", "init_comparison"])
def test_notebook_runs_top_to_bottom_on_the_study(name, study_dir, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    path = REPO / "analysis" / f"{name}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in notebook.cells if c.cell_type == "code"), "outputs must be stripped in git"
    monkeypatch.setenv("LOGAH_STUDY", str(study_dir))
    monkeypatch.setenv("LOGAH_STUDIES", str(study_dir))
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO)}}).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    text = json.dumps([o for c in notebook.cells if c.cell_type == "code" for o in c.outputs])
    assert "FAILED" in text   # the failed trial is listed with its error


def _copy_study(study_dir: Path, to: Path, name: str, edit=None) -> Path:
    """The smoke study under another name, its trial table optionally edited (``edit(trials,
    steps) -> (trials, steps)``)."""
    shutil.copytree(study_dir, to / name, ignore=shutil.ignore_patterns("trials", "ghns", "tune"))
    record = json.loads((to / name / "study.json").read_text())
    (to / name / "study.json").write_text(json.dumps({**record, "name": name}))
    if edit is not None:
        trials, steps = edit(pd.read_parquet(to / name / "trials.parquet"),
                             pd.read_parquet(to / name / "steps.parquet"))
        trials.to_parquet(to / name / "trials.parquet")
        steps.to_parquet(to / name / "steps.parquet")
    return to / name


def test_a_study_without_the_optional_ghn_columns_still_reports(study_dir, tmp_path):
    """A baseline-only study has no GHN columns, no GHN steps and no test metric."""
    def baseline_only(trials, steps):
        ghn = [c for c in trials if c.startswith("ghn") or c == "test"]
        return (trials.drop(columns=ghn).assign(**{"finetune.init": "random"}),
                steps[steps["phase"] == "finetune"])

    folder = _copy_study(study_dir, tmp_path, "baselines", baseline_only)
    study = load_study(folder)
    assert set(study.trials["init_label"]) == {"RandInit"}
    notes = {p.key: p.note for p in study_panels(study) if p.figure is None}
    assert {"ghn-curves", "pareto"} <= set(notes), notes
    html = write_report([folder], tmp_path / "baselines.html").read_text()
    assert "no trial trained a GHN" in html and "no completed trial used a GHN" in html


def test_one_report_of_several_studies(study_dir, tmp_path):
    other = _copy_study(study_dir, tmp_path, "smoke-copy")
    html = write_report([study_dir, other], tmp_path / "both.html").read_text()
    assert 'id="smoke"' in html and 'id="smoke-copy"' in html
    with pytest.raises(LogahError, match="share a name"):
        write_report([study_dir, study_dir], tmp_path / "twice.html")


def test_ghn_curves_count_each_trained_ghn_once(study):
    """Trials that reuse a shared GHN carry copies of its curve; each GHN is one sample."""
    from logah.analysis.figures import ghn_curves

    lines = [t for t in ghn_curves(study).figure.data if t.name and t.xaxis == "x"]
    ranks = sorted(study.trials["ghn_training.ghn.rank"].unique())
    assert sorted(t.name for t in lines) == sorted(f"r={r}" for r in ranks)
    assert all(set(t.customdata) == {1} for t in lines)   # n = 1 GHN per rank at every step
