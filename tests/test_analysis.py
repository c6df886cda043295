"""Analysis of a real smoke study: tidy tables, seed statistics, the report and the notebooks.

One smoke rank sweep (real data, real trials, one of them made to fail) runs once per session
(``smoke_study`` in conftest); every test reads its folder as a researcher would, without Ray.
Statistics over a panel of targets are pure functions, tested on tables built by hand; the
report of a panel study is the smoke study with its trial table rewritten into one
(``panel_study``), so that every number the report shows is known in advance.

Timeouts are per test and count the test alone (``func_only``): the session's smoke study has
its own limit in conftest. They leave several times the time a test takes on an idle 2-core
machine, as the suite shares its cores.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from logah.analysis import (PANEL_MEAN, aggregate_seeds, at_best_setting, at_best_setting_per_target,
                            best_per_group, export_tables, load_optuna_study, load_study,
                            pareto_front, write_report)
from logah.analysis.figures import importances, study_panels, swept_vs_quality
from logah.analysis.notebooks import newest_demo_study, notebook_studies
from logah.cli import main
from logah.errors import LogahError

REPO = Path(__file__).resolve().parents[1]
QUICK = pytest.mark.timeout(60, func_only=True)       # pure functions on small tables
REPORT = pytest.mark.timeout(300, func_only=True)     # loads a study, renders a report or two
NOTEBOOK = pytest.mark.timeout(900, func_only=True)   # a kernel, the notebook, PNGs in Chromium


@pytest.fixture(scope="module")
def study_dir(smoke_study):
    return smoke_study


@pytest.fixture(scope="module")
def study(study_dir):
    return load_study(study_dir)


# -- tables -------------------------------------------------------------------------------------

@REPORT
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


@REPORT
def test_a_failed_trial_shows_with_its_status_and_error(study):
    failed = study.trials[study.trials["status"] == "FAILED"]
    assert len(failed) >= 1   # the smoke study makes some trials fail (conftest)
    assert failed["error"].str.len().gt(0).all()
    assert failed["best"].isna().all()
    # its real settings, as the complete trials have them: never "nan nanx64" or a missing rank
    done = study.completed
    assert set(failed["target"]) == set(done["target"]) and "nan" not in " ".join(failed["target"])
    assert set(failed["init_label"]) <= set(done["init_label"]) and failed["init_label"].notna().all()
    assert set(failed["ghn_training.ghn.rank"]) == {2, 8}


@REPORT
def test_steps_table_holds_both_phases_of_every_completed_trial(study):
    steps = study.steps
    assert {"trial_id", "phase", "step"} <= set(steps.columns)
    for trial_id, metric in zip(study.completed["trial_id"], study.completed["metric"]):
        mine = steps[steps["trial_id"] == trial_id]
        tuning = mine[mine["phase"] == "finetune"]
        assert tuning["step"].min() == 0 and tuning[metric].notna().any(), trial_id
    assert steps.loc[steps["phase"] == "ghn", "loss"].notna().any()


@REPORT
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


@REPORT
def test_optuna_study_loads_from_the_study_record(study):
    optuna_study = load_optuna_study(study)
    ids = {t.user_attrs.get("tune_trial_id") for t in optuna_study.trials}
    assert set(study.completed["trial_id"]) <= ids


@REPORT
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

@QUICK
def test_aggregate_over_seeds_is_mean_sample_std_and_count_ignoring_nan():
    trials = pd.DataFrame({"rank": [4, 4, 4, 8, 8], "seed": [0, 1, 2, 0, 1],
                           "best": [0.5, 0.7, math.nan, 0.9, math.nan]})
    agg = aggregate_seeds(trials, by=["rank"], value="best").set_index("rank")
    assert agg.loc[4, "best_mean"] == pytest.approx(0.6)
    assert agg.loc[4, "best_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert agg.loc[4, "best_count"] == 2 and agg.loc[8, "best_count"] == 1
    assert math.isnan(agg.loc[8, "best_std"])


@QUICK
def test_best_per_group_follows_the_mode():
    trials = pd.DataFrame({"target": ["vit", "vit", "gpt2", "gpt2"], "trial_id": list("abcd"),
                           "best": [0.4, 0.6, 300.0, 200.0]})
    assert best_per_group(trials, ["target"], "best", "max")["trial_id"].tolist() == ["c", "b"]
    assert best_per_group(trials, ["target"], "best", "min")["trial_id"].tolist() == ["d", "a"]
    with pytest.raises(LogahError, match="mode"):
        best_per_group(trials, ["target"], "best", "up")
    with pytest.raises(LogahError, match="no column"):
        best_per_group(trials, ["init"], "best", "max")


@QUICK
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


@QUICK
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


@REPORT
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


@REPORT
def test_report_refuses_an_existing_output_unless_overwrite_and_writes_atomically(study_dir, tmp_path):
    out = tmp_path / "r.html"
    out.write_text("<!doctype html>old")
    with pytest.raises(LogahError, match=re.escape(f"output {out} already exists (use --overwrite")):
        write_report([study_dir], out)
    assert out.read_text() == "<!doctype html>old"
    with pytest.raises(LogahError):   # a study that does not load: the old file stays whole
        write_report([study_dir, tmp_path / "nowhere"], out, overwrite=True)
    assert out.read_text() == "<!doctype html>old"
    assert write_report([study_dir], out, overwrite=True) == out
    assert out.read_text().startswith("<!doctype html>")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary left


@REPORT
def test_report_defaults_into_the_study_and_replaces_only_its_report(study_dir, tmp_path):
    """The study's own report.html may be replaced (with overwrite); its other files never,
    nor a folder, whatever ``overwrite`` says."""
    study = _copy_study(study_dir, tmp_path, "own-files")
    (study / "report.html").unlink(missing_ok=True)   # the study run wrote one: start without
    (study / "trials" / "t1").mkdir(parents=True)
    record = (study / "study.json").read_text()
    default = write_report([study])
    assert default == study / "report.html" and default.stat().st_size > 1e6
    with pytest.raises(LogahError, match="use --overwrite"):
        write_report([study])
    write_report([study], overwrite=True)
    for own in ("study.json", "trials.parquet", "steps.parquet", "optuna.db", "trials/t1/x.html",
                "ghns/report.html", ".lock"):
        with pytest.raises(LogahError, match=f"is a file of the study folder {re.escape(str(study))}"):
            write_report([study_dir], study / own, overwrite=True)
    assert (study / "study.json").read_text() == record
    assert not (study / "trials" / "t1" / "x.html").exists()
    for folder in (study, tmp_path):
        with pytest.raises(LogahError, match="is a folder"):
            write_report([study_dir], folder, overwrite=True)
    store = Path(load_study(study_dir).meta["ghn_store"])
    with pytest.raises(LogahError, match="GHN store"):
        write_report([study_dir], store / "report.html", overwrite=True)
    # a new file beside the study's own ones is not one of them
    assert write_report([study_dir], study / "rank-report.html").is_file()


# -- notebooks ----------------------------------------------------------------------------------

@NOTEBOOK
@pytest.mark.parametrize("name, parameter", [("rank_ablation", "STUDY_DIR"),
                                             ("init_comparison", "STUDY_DIRS")])
def test_notebook_runs_with_papermill_parameters_and_every_figure_has_a_png(name, parameter,
                                                                           study_dir, tmp_path,
                                                                           monkeypatch):
    """Run as a user would (papermill, the study as a parameter, no LOGAH_* variable); every
    figure carries a PNG beside the interactive one, for static viewers."""
    nbformat = pytest.importorskip("nbformat")
    papermill = pytest.importorskip("papermill")

    path = REPO / "analysis" / f"{name}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in notebook.cells if c.cell_type == "code"), "outputs must be stripped in git"
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and f"{parameter} = None" in tagged[0].source
    for variable in ("LOGAH_STUDY", "LOGAH_STUDIES"):
        monkeypatch.delenv(variable, raising=False)
    out = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(str(path), str(out), parameters={parameter: str(study_dir)},
                               kernel_name="python3", cwd=str(REPO), progress_bar=False,
                               log_output=False)
    done = nbformat.read(out, as_version=4)
    outputs = [o for c in done.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert str(study_dir) in json.dumps(outputs)   # it read the study it was given
    assert "FAILED" in json.dumps(outputs)          # the failed trials are listed with their error
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) >= (2 if name == "rank_ablation" else 1)
    for figure in figures:
        png = base64.b64decode(figure["data"]["image/png"])
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


@REPORT
def test_a_notebook_finds_its_study_by_parameter_then_environment_then_newest_demo(
        study_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("LOGAH_STUDY", raising=False)
    storage = tmp_path / "studies"
    storage.mkdir()
    with pytest.raises(LogahError, match="run `make demo`, or pass a study folder .* -p STUDY_DIR"):
        notebook_studies(None, "STUDY_DIR", "LOGAH_STUDY", storage=storage)
    for name in ("rank_sweep-demo-20260101-090000", "rank_sweep-demo-20260102-080000",
                 "rank_sweep-demo-20250101-000000"):
        shutil.copytree(study_dir, storage / name, ignore=shutil.ignore_patterns("trials", "ghns", "tune"))
    (storage / "rank_sweep-demo-20991231-235959").mkdir()    # started, no study.json yet
    (storage / "rank_sweep-demo-zzz").mkdir()                 # not a name `make demo` writes
    shutil.copy(study_dir / "study.json", storage / "rank_sweep-demo-zzz" / "study.json")
    newest = storage / "rank_sweep-demo-20260102-080000"
    assert newest_demo_study(storage) == newest
    assert notebook_studies(None, "STUDY_DIR", "LOGAH_STUDY", storage=storage) == [newest]
    assert load_study(newest).name == "smoke"
    monkeypatch.setenv("LOGAH_STUDY", f"{study_dir}{os.pathsep}{tmp_path}")
    assert notebook_studies("", "STUDY_DIR", "LOGAH_STUDY", storage=storage) == [study_dir, tmp_path]
    assert notebook_studies(str(study_dir), "STUDY_DIR", "LOGAH_STUDY") == [study_dir]
    assert notebook_studies([study_dir, tmp_path], "STUDY_DIRS", "LOGAH_STUDY") == [study_dir, tmp_path]


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


@REPORT
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


@REPORT
def test_one_report_of_several_studies(study_dir, tmp_path):
    other = _copy_study(study_dir, tmp_path, "smoke-copy")
    html = write_report([study_dir, other], tmp_path / "both.html").read_text()
    assert 'id="smoke"' in html and 'id="smoke-copy"' in html
    with pytest.raises(LogahError, match="share a name"):
        write_report([study_dir, study_dir], tmp_path / "twice.html")


@REPORT
def test_ghn_curves_count_each_trained_ghn_once(study):
    """Trials that reuse a shared GHN carry copies of its curve; each GHN is one sample."""
    from logah.analysis.figures import ghn_curves

    lines = [t for t in ghn_curves(study).figure.data if t.name and t.xaxis == "x"]
    ranks = sorted(study.trials["ghn_training.ghn.rank"].unique())
    assert sorted(t.name for t in lines) == sorted(f"r={r}" for r in ranks)
    assert all(set(t.customdata) == {1} for t in lines)   # n = 1 GHN per rank at every step


# -- a panel of targets ---------------------------------------------------------------------------

def _panel_trials(drop: tuple | None = None) -> pd.DataFrame:
    """Two inits on two targets, two learning rates, three replicates (the init comparison's
    seed variants). Final (validation) = init + target-and-lr effect + replicate; test is final
    + 0.01. Target A is best at lr 0.1, target B at 0.2; ``drop`` removes one trial
    (init, target, lr, seed)."""
    rows = []
    init_effect = {"random": 0.50, "logah": 0.60}
    lr_effect = {("A", 0.1): 0.10, ("A", 0.2): 0.0, ("B", 0.1): 0.0, ("B", 0.2): 0.05}
    seed_effect = {"s0": 0.0, "s1": 0.02, "s2": 0.04}
    for init in init_effect:
        for (target, lr), effect in lr_effect.items():
            for seed, noise in seed_effect.items():
                if drop == (init, target, lr, seed):
                    continue
                final = init_effect[init] + effect + noise
                rows.append({"init_label": init, "target": target, "finetune.lr": lr, "seed": seed,
                             "metric": "val_accuracy", "final": final, "test": final + 0.01})
    return pd.DataFrame(rows)


@QUICK
def test_each_init_at_its_best_lr_per_target_and_the_mean_over_the_panel():
    table = at_best_setting_per_target(_panel_trials(drop=("logah", "B", 0.2, "s2")),
                                       by=["init_label"], setting="finetune.lr", choose_on="final",
                                       mode="max", report=["test"], replicates=["seed"])
    table = table.set_index(["init_label", "target"])
    # every target at its own lr, chosen on validation
    assert table.loc[("random", "A"), "finetune.lr"] == 0.1
    assert table.loc[("random", "B"), "finetune.lr"] == 0.2
    assert table.loc[("logah", "B"), "finetune.lr"] == 0.2   # 0.67 over two seeds beats 0.63
    assert table.loc[("random", "A"), "test_mean"] == pytest.approx(0.63)
    assert table.loc[("random", "A"), "test_std"] == pytest.approx(0.02)
    assert table.loc[("logah", "B"), "test_count"] == 2
    assert math.isnan(table.loc[("random", "A"), "test_left_out"])
    # the panel: per replicate the mean over A (at 0.1) and B (at 0.2), then over replicates
    random = table.loc[("random", PANEL_MEAN)]
    assert random["test_mean"] == pytest.approx(np.mean([0.585 + s for s in (0, 0.02, 0.04)]))
    assert random["test_std"] == pytest.approx(0.02)
    assert (random["test_count"], random["test_left_out"]) == (3, 0)
    assert math.isnan(random["finetune.lr"])
    # logah's s2 has no trial on B at B's lr: left out and counted, not averaged over A alone
    logah = table.loc[("logah", PANEL_MEAN)]
    assert logah["test_mean"] == pytest.approx(np.mean([0.685, 0.705]))
    assert logah["test_std"] == pytest.approx(np.std([0.685, 0.705], ddof=1))
    assert (logah["test_count"], logah["test_left_out"]) == (2, 1)
    assert list(table.index.get_level_values("target")) == ["A", "B", PANEL_MEAN] * 2


@QUICK
def test_the_panel_mean_refuses_mixed_metrics_and_handles_missing_groups_and_replicates():
    trials = _panel_trials()
    mixed = trials.assign(metric=np.where(trials["target"] == "A", "val_accuracy", "val_perplexity"))
    with pytest.raises(LogahError, match="mix metrics"):
        at_best_setting_per_target(mixed, ["init_label"], "finetune.lr", "final", "max", ["test"], ["seed"])
    with pytest.raises(LogahError, match="no column"):
        at_best_setting_per_target(trials, ["init_label"], "finetune.lr", "final", "max", ["test"],
                                   ["finetune.seed"])
    # an init that never ran on target B has no panel mean at all, not one over A alone
    partial = trials[~((trials["init_label"] == "logah") & (trials["target"] == "B"))]
    table = at_best_setting_per_target(partial, ["init_label"], "finetune.lr", "final", "max",
                                       ["test"], ["seed"]).set_index(["init_label", "target"])
    assert math.isnan(table.loc[("logah", PANEL_MEAN), "test_mean"])
    assert table.loc[("logah", PANEL_MEAN), "test_left_out"] == 3
    # no replicate columns: the whole table is one replicate
    table = at_best_setting_per_target(trials, ["init_label"], "finetune.lr", "final", "max",
                                       ["test"], []).set_index(["init_label", "target"])
    assert table.loc[("random", PANEL_MEAN), "test_mean"] == pytest.approx(0.605)
    assert table.loc[("random", PANEL_MEAN), "test_count"] == 1
    # a group column that is NaN (a baseline's unused GHN setting) is a group of its own
    ranks = trials.assign(rank=np.where(trials["init_label"] == "logah", 8.0, np.nan))
    table = at_best_setting_per_target(ranks, ["rank"], "finetune.lr", "final", "max", ["test"], ["seed"])
    panel = table[table["target"] == PANEL_MEAN]
    assert panel["rank"].isna().sum() == 1 and panel["test_count"].tolist() == [3, 3]


def _panel_study(study_dir: Path, to: Path) -> Path:
    """The smoke study rewritten into an init comparison on a panel of two targets (hidden
    width 96 and 64), two learning rates and three seed variants, with the numbers of
    ``_panel_trials`` (logah's s2 on the narrow target missing, as if it had failed)."""
    def edit(trials, steps):
        template = trials[trials["status"] == "COMPLETE"].iloc[0]
        rows = []
        for i, row in _panel_trials(drop=("logah", "B", 0.2, "s2")).iterrows():
            new = template.to_dict()
            logah = row["init_label"] == "logah"
            new.update({"trial_id": f"p{i:03d}", "finetune.init": "logah" if logah else "random",
                        "init": row["init_label"], "seed": row["seed"],
                        "finetune.seed": int(row["seed"][1]), "finetune.lr": row["finetune.lr"],
                        "finetune.target.hidden_dim": 96 if row["target"] == "A" else 64,
                        "final": row["final"], "best": row["final"], "test": row["test"],
                        "ghn_params": template["ghn_params"] if logah else math.nan,
                        "ghn_key": template["ghn_key"] if logah else "", "ghn_reused": logah})
            rows.append(new)
        return pd.DataFrame(rows).reset_index(drop=True), steps

    folder = _copy_study(study_dir, to, "panel", edit)
    record = json.loads((folder / "study.json").read_text())
    record["swept"] = ["finetune.lr", "finetune.target.hidden_dim", "init", "seed"]
    (folder / "study.json").write_text(json.dumps(record))
    return folder


@pytest.fixture(scope="module")
def panel_study(study_dir, tmp_path_factory):
    return load_study(_panel_study(study_dir, tmp_path_factory.mktemp("panel")))


@REPORT
def test_a_panel_study_reports_each_init_at_its_best_lr_per_target_and_over_the_panel(panel_study,
                                                                                       tmp_path):
    tables = [p for p in study_panels(panel_study) if p.table is not None]
    assert len(tables) == 1
    panel = tables[0]
    assert panel.title == ("Each init at its best learning rate, per target and mean over the "
                           "panel: validation accuracy")
    table = panel.table.set_index("init")
    trials = panel_study.trials
    wide, narrow = (trials.loc[trials["finetune.target.hidden_dim"] == w, "target"].iloc[0]
                    for w in (96, 64))
    logah = trials.loc[trials["finetune.init"] == "logah", "init_label"].iloc[0]
    assert list(table.index) == ["RandInit", logah]   # baselines first, as in the paper
    assert table.loc["RandInit", wide] == "63.00 ± 2.00 (n=3) at lr 0.1"
    assert table.loc["RandInit", narrow] == "58.00 ± 2.00 (n=3) at lr 0.2"
    column = f"{PANEL_MEAN} (2 targets)"
    assert table.loc["RandInit", column] == "60.50 ± 2.00 (n=3)"
    assert table.loc[logah, column] == "69.50 ± 1.41 (n=2, 1 left out)"
    assert panel.highlight == {(1, wide), (1, narrow), (1, column)}   # LoGAH's row, everywhere
    html = write_report([panel_study.path], tmp_path / "panel.html").read_text()
    assert "69.50 ± 1.41 (n=2, 1 left out)" in html and 'class="summary"' in html


@REPORT
def test_a_swept_target_setting_shares_one_subplot_per_metric(panel_study):
    """Widths of the target are compared along one x axis, not one dot per subplot."""
    panel, = swept_vs_quality(panel_study, ["finetune.target.hidden_dim"])
    titles = [a.text for a in panel.figure.layout.annotations]
    assert titles == ["validation accuracy (higher is better)"]
    points = [t for t in panel.figure.data if t.error_y and t.error_y.visible]
    assert {t.name for t in points} == set(panel_study.trials["init_label"])
    for trace in points:
        assert sorted(trace.x) == [64, 96]


@REPORT
def test_the_swept_figure_of_a_panel_adds_the_mean_over_the_panel(panel_study):
    panel, = swept_vs_quality(panel_study, ["init"])
    titles = [a.text for a in panel.figure.layout.annotations]
    assert len(titles) == 3 and titles[2] == f"{PANEL_MEAN}: 2 targets (higher is better)"
    assert panel.title == "Initialisation against fine-tuned quality"
    means = [t for t in panel.figure.data if t.xaxis == "x3" and t.error_y and t.error_y.visible]
    assert sorted(t.name for t in means) == sorted(set(panel_study.trials["init_label"]))
    random, = [t for t in means if t.name == "RandInit"]
    # per replicate the mean over targets of the mean over both lrs, as in the per-target
    # subplots: ((0.60 + 0.50) / 2 + (0.50 + 0.55) / 2) / 2 + seed, then over seeds
    assert list(random.x) == ["RandInit"] and random.y[0] == pytest.approx(100 * (0.5375 + 0.02))
    assert random.error_y.array[0] == pytest.approx(2.0)
    assert list(panel.figure.layout.xaxis3.categoryarray)[0] == "RandInit"   # baselines first


@REPORT
def test_the_trial_table_titles_are_distinct_and_ghn_time_is_the_ghn_training_time(study, tmp_path,
                                                                                   panel_study):
    trials = study.trials
    store = Path(study.meta["ghn_store"])
    for _, row in trials.iterrows():
        recorded = json.loads((store / row["ghn_key"] / "store.json").read_text())["wall_s"]
        assert row["ghn_train_s"] == pytest.approx(recorded)
    assert trials["ghn_reused"].any()   # smoke trials share GHNs: the reused ones show them too
    html = write_report([study.path], tmp_path / "r.html").read_text()
    table = html[html.index('<table class="trials'):]
    titles = re.findall(r"<th title=\"[^\"]*\">([^<]*)</th>", table)
    assert "GHN training s" in titles and "GHN s" not in titles
    assert table.count('class="reused"') == int(trials["ghn_reused"].sum())
    html = write_report([panel_study.path], tmp_path / "p.html").read_text()
    table = html[html.index('<table class="trials'):]
    titles = re.findall(r"<th title=\"[^\"]*\">([^<]*)</th>", table)
    assert len(titles) == len(set(titles)), titles
    assert {"initialisation", "init variant"} <= set(titles)


@REPORT
def test_a_study_copied_without_its_ghn_store_falls_back_to_the_trainers_time(study_dir, tmp_path):
    def trainer_time(trials, steps):   # the smoke trainers failed after training: give one a time
        trials = trials.copy()
        trainer = trials.index[~trials["ghn_reused"].astype(bool)][0]
        trials.loc[trainer, "ghn_wall_s"] = 12.5
        return trials, steps

    folder = _copy_study(study_dir, tmp_path, "no-store", trainer_time)
    record = json.loads((folder / "study.json").read_text())
    (folder / "study.json").write_text(json.dumps({**record, "ghn_store": str(tmp_path / "gone")}))
    trials = load_study(folder).trials
    key = trials.loc[~trials["ghn_reused"].astype(bool), "ghn_key"].iloc[0]
    assert (trials.loc[trials["ghn_key"] == key, "ghn_train_s"] == 12.5).all()
    assert trials.loc[trials["ghn_key"] != key, "ghn_train_s"].isna().all()


@REPORT
def test_the_header_shows_code_versions_machine_and_warns_of_runs_on_different_commits(study_dir,
                                                                                       tmp_path):
    provenance = {"code": {"commit": "0123456789abcdef0123", "dirty": True,
                           "snapshot": "/runs/code-snapshots/0123456789ab"},
                  "versions": {"python": "3.11.2", "torch": "2.14.1", "ray": "2.60.0",
                               "optuna": "5.0.0", "transformers": "5.23.0"},
                  "machine": {"hostname": "node-1", "cpus": 2, "cpu": "AMD EPYC 9654",
                              "gpus": ["NVIDIA H100 80GB HBM3"] * 2, "memory_gib": 23.5,
                              "platform": "Linux-6.1-x86_64"}}
    segments = [{"started_at": "2026-01-01T10:00:00+00:00", "finished_at": "2026-01-01T10:05:00+00:00",
                 "wall_s": 300.0, "commit": "aaaaaaaaaaaaaaaa", "dirty": False},
                {"started_at": "2026-01-02T09:00:00+00:00", "finished_at": "2026-01-02T09:01:00+00:00",
                 "wall_s": 60.0, "commit": "0123456789abcdef0123", "dirty": True}]
    folder = _copy_study(study_dir, tmp_path, "provenance")
    record = json.loads((folder / "study.json").read_text())
    (folder / "study.json").write_text(json.dumps({**record, "provenance": provenance,
                                                   "segments": segments, "wall_s": 360.0}))
    html = write_report([folder], tmp_path / "p.html").read_text()
    header = html[html.index('<dl class="facts">'):html.index("</dl>")]
    assert ("commit 0123456789ab with uncommitted changes; trials ran from "
            "/runs/code-snapshots/0123456789ab") in header
    assert ("<dd class=warning>the runs of this study used different code: commits aaaaaaaaaaaa, "
            "0123456789ab") in header
    assert "6 min 0 s in total over 2 runs" in header
    assert ("Python 3.11.2, PyTorch 2.14.1, Ray 2.60.0, Optuna 5.0.0, Transformers 5.23.0"
            in header)
    assert "node-1, 2 CPUs (AMD EPYC 9654), 2 × NVIDIA H100 80GB HBM3, 23.5 GiB memory, Linux-6.1-x86_64" in header
    assert "resumed 2026-01-02T09:00:00+00:00 to 2026-01-02T09:01:00+00:00" in header
    # the same commit twice, clean: no warning
    same = [{**s, "commit": "0123456789abcdef0123", "dirty": False} for s in segments]
    (folder / "study.json").write_text(json.dumps({**record, "provenance": provenance, "segments": same}))
    html = write_report([folder], tmp_path / "p.html", overwrite=True).read_text()
    assert "class=warning" not in html
    # a study from before provenance was recorded, or with a mangled record, still renders
    (folder / "study.json").write_text(json.dumps({**record, "provenance": {"code": "?", "machine": 3},
                                                   "segments": "x"}))
    html = write_report([folder], tmp_path / "p.html", overwrite=True).read_text()
    assert "<dt>Code</dt>" not in html and "<dt>Machine</dt>" not in html
    older = {key: value for key, value in record.items() if key not in ("provenance", "segments")}
    (folder / "study.json").write_text(json.dumps(older))
    html = write_report([folder], tmp_path / "p.html", overwrite=True).read_text()
    assert "<dt>Code</dt>" not in html and "<dt>Versions</dt>" not in html
    # the study the runner wrote records all of it
    html = write_report([study_dir], tmp_path / "plain.html").read_text()
    assert "<dt>Versions</dt>" in html and "<dt>Machine</dt>" in html


@REPORT
def test_importance_shares_are_not_labelled_as_percent(study):
    figure = importances(study).figure
    title = figure.layout.xaxis.title.text
    assert "(%)" not in title and "sum to 1" in title
    assert max(max(t.x) for t in figure.data) <= 1.0


@QUICK
def test_log_axes_show_several_tick_labels_or_become_linear():
    from logah.analysis.figures import MIN_TICKS, _log_axis

    for lo, hi in [(2.3, 2.6), (1.8, 2.4), (3.0, 10.0), (1.1, 5.6), (9.0, 45.0), (1e-4, 1e-1),
                   (150.0, 2400.0), (0.5, 700.0)]:
        axis = _log_axis(pd.Series(np.geomspace(lo, hi, 20)))
        if axis["type"] == "log":
            assert len(axis["tickvals"]) >= MIN_TICKS, (lo, hi, axis)
            assert all(lo <= t <= hi for t in axis["tickvals"])
        else:
            assert axis == {"type": "linear"} and hi / lo < 10, (lo, hi)
    assert _log_axis(pd.Series(np.geomspace(1e-4, 1e-1, 5)))["type"] == "log"


@QUICK
def test_the_printed_summary_gives_each_init_per_target_and_the_panel_mean():
    from logah.study.summary import best_lr_summary

    trials = _panel_trials(drop=("logah", "B", 0.2, "s2")).assign(
        status="COMPLETE", mode="max", zero_shot=0.1, init=lambda t: t["init_label"])
    summary = best_lr_summary(trials, ["finetune.lr", "init", "seed"], "max")
    rows = summary.set_index(["init", "target"])
    assert rows.loc[("random", "B"), "lr"] == 0.2
    assert rows.loc[("logah", PANEL_MEAN), "test_mean"] == pytest.approx(0.695)
    assert rows.loc[("logah", PANEL_MEAN), "left_out"] == 1
    one_target = trials[trials["target"] == "A"]
    summary = best_lr_summary(one_target, ["finetune.lr", "init", "seed"], "max")
    assert PANEL_MEAN not in set(summary["target"]) and "left_out" not in summary
    assert summary.set_index("init").loc["logah", "test_mean"] == pytest.approx(0.73)


@QUICK
def test_the_analysis_package_imports_without_torch():
    """A laptop reading a copied study needs pandas and plotly, not torch (nor Ray)."""
    import subprocess
    import sys

    code = ("import sys, logah.analysis, logah.analysis.notebooks; "
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
