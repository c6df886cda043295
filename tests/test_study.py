"""Studies: search spaces over trial settings, plan checks, every preset's configs, and real
smoke studies on Ray Tune (embedded local Ray, real data)."""

import importlib.util
import itertools
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from free_ports import free_port, ray_node_ports

from logah.errors import LogahError
from logah.init_kinds import BASELINE_INITS, INIT_KINDS
from logah.study import Choice, FloatRange, IntRange, Variants
from logah.study.cli import main
from logah.study.scales import SCALES, base_trial
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


def test_ghn_store_defaults_to_the_study_folder_and_can_be_shared(tmp_path):
    study = load_study("init_comparison")
    own = plan_study(study, StudyOptions(preset="smoke", storage=str(tmp_path), name="a"))
    assert own.ghn_store == tmp_path / "a" / "ghns"
    shared = plan_study(study, StudyOptions(preset="smoke", storage=str(tmp_path), name="b",
                                            ghn_store=str(tmp_path / "a" / "ghns")))
    assert shared.ghn_store == tmp_path / "a" / "ghns"
    with pytest.raises(LogahError, match="--ghn-store s3://x"):
        plan_study(study, StudyOptions(preset="smoke", storage=str(tmp_path), ghn_store="s3://x"))


@pytest.mark.parametrize("script", [p.stem for p in STUDY_SCRIPTS])
def test_every_preset_of_every_study_builds_valid_trials(script):
    """The paper preset is never run here: build (and validate) each of its trial configs."""
    study = load_study(script)
    presets = sorted({key.split(":")[0] for key in study.space})
    assert {"smoke", "cpu", "paper"} <= set(presets) <= set(SCALES)   # demo where a study has one
    for preset, task in itertools.product(presets, study.tasks):
        plan = plan_study(study, StudyOptions(preset=preset, task=task, storage="/tmp/unused"))
        assert plan.num_samples >= 2 and plan.space
        values = [p.grid() if plan.search == "grid" else p.corners() for p in plan.space.values()]
        for combo in itertools.product(*values):
            trial = plan.trial_config(dict(zip(plan.space, combo)))
            assert trial.finetune.arch.family == task
    paper = plan_study(study, StudyOptions(preset="paper", task="vit", storage="/tmp/unused"))
    assert paper.trial_config({}).ghn_training.space["name"] == "vits-1k"


def test_a_sweep_of_variants_narrows_them_by_name():
    study = load_study("init_comparison")
    plan = plan_study(study, StudyOptions(preset="cpu", task="vit", storage="/tmp/unused",
                                          sweep={"init": Choice("random", "logah")}))
    assert plan.space["init"].grid() == ["random", "logah"] and plan.num_samples == 2 * 3 * 3 * 4
    assert plan.trial_config({"init": "logah", "seed": "s1", "finetune.lr": 0.05}).uses_ghn
    levers = plan_study(study, StudyOptions(preset="cpu", task="vit", storage="/tmp/unused"))
    tuned = levers.trial_config({"init": "logah_levers", "seed": "s0", "finetune.lr": 0.05})
    assert (tuned.finetune.init, tuned.finetune.rescale_directions, tuned.finetune.null_fill,
            tuned.finetune.unit_variance, tuned.ghn_training.ghn.depth_encoding) == (
        "logah", True, 1.0, True, "relative")
    with pytest.raises(LogahError, match="no variant 'logah_levers'"):     # ViT's alone
        plan_study(study, StudyOptions(preset="cpu", task="gpt2", storage="/tmp/unused",
                                       sweep={"init": Choice("logah_levers")}))
    with pytest.raises(LogahError, match="no variant 'xavier'.*random, orthogonal, mimetic, lsuv, ghn3, logah"):
        plan_study(study, StudyOptions(preset="cpu", task="vit", storage="/tmp/unused",
                                       sweep={"init": Choice("random", "xavier")}))


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
    (["--set", "ghn_training.ghn.rnak=3"], "unknown setting"),
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


@pytest.mark.parametrize("failures", [1, 3])
def test_a_local_ray_that_starts_too_slowly_is_tried_again(failures, tmp_path, monkeypatch, capsys):
    """Ray gives a starting node 30 s, which a loaded machine misses: the study tries again,
    shutting the failed start down first, and after the last try says so in one line."""
    import ray

    from logah.study import runner

    calls = []

    def init(*args, **kwargs):
        calls.append("init")
        if calls.count("init") <= failures:
            raise Exception("The current node timed out during startup.")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    if failures < runner.RAY_START_ATTEMPTS:
        runner._start_local_ray(2, tmp_path)
        assert calls == ["init", "shutdown"] * failures + ["init"]
        assert f"trying again (2 of {runner.RAY_START_ATTEMPTS})" in capsys.readouterr().err
    else:
        with pytest.raises(LogahError, match="could not start a local Ray for the study in 3 tries"):
            runner._start_local_ray(2, tmp_path)
        assert calls == ["init", "shutdown"] * 3


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
    # what optuna-dashboard shows: the metric's name, the question, the measured values
    study = optuna.load_study(study_name=info["optuna_study_name"], storage=info["optuna_storage"])
    assert study.metric_names == ["val_accuracy"]
    assert study.user_attrs["question"] == info["question"]
    by_id = {t.user_attrs["tune_trial_id"]: t for t in ot}
    for _, row in finetuned[finetuned["val_accuracy"].notna()].groupby("trial_id"):
        measured = dict(zip(row["step"], row["val_accuracy"]))
        assert by_id[row["trial_id"].iloc[0]].intermediate_values == measured
    # a failed trial still shows what it ran (its rank is in the table, not missing)
    assert failed["ghn_training.ghn.rank"].notna().all() and failed["finetune.init"].eq("logah").all()


def test_a_study_records_what_ran(smoke_study):
    """Code version, packages and machine in study.json; each trial ran the package snapshot
    the study started with, not the working tree (Ray ships it to the workers)."""
    info = json.loads((smoke_study / "study.json").read_text())
    code = info["provenance"]["code"]
    assert len(code["commit"]) == 40 and isinstance(code["dirty"], bool) and code["digest"]
    assert {"python", "torch", "ray", "optuna", "transformers"} <= set(info["provenance"]["versions"])
    machine = info["provenance"]["machine"]
    assert machine["cpus"] >= 1 and machine["memory_gib"] > 0 and machine["cpu"]
    assert [s["digest"] for s in info["segments"]] == [code["digest"]]
    assert info["wall_s"] == pytest.approx(info["segments"][0]["wall_s"])
    for record in trial_records(smoke_study).values():
        assert record["code"]["digest"] == code["digest"]
        assert not Path(record["code"]["path"]).is_relative_to(ROOT)     # a snapshot, elsewhere


def test_a_study_prints_its_trials_not_their_output(smoke_study):
    """The terminal gets the study's own lines; what the trials print or warn stays in their
    records (``warnings``, also a column of the trials table) and Ray's session logs."""
    lines = (smoke_study.parent / "terminal.txt").read_text().splitlines()
    assert not [line for line in lines if "pid=" in line or "Traceback" in line or "Warning" in line]
    assert sum(line.startswith("[") and " trial " in line for line in lines) == 4
    trials, _, _ = read_study(smoke_study)
    for record in trial_records(smoke_study).values():
        if record["status"] == "COMPLETE":
            assert isinstance(record["warnings"], list)
            row = trials[trials["trial_id"] == record["trial_id"]].iloc[0]
            assert row["warnings"] == "; ".join(record["warnings"])


@pytest.mark.parametrize("change, message", [
    (["--set", "ghn_training.steps=31"], "ghn_training.steps: 30 then, 31 now"),
    (["--ghn-store", "{other}"], "its GHNs are in"),
])
def test_a_resume_with_other_settings_is_refused(smoke_study, change, message, tmp_path, capsys):
    """Resumed trials would run with other settings (or retrain their GHNs elsewhere) than the
    finished ones: refused before anything is written."""
    args = ["--preset", "smoke", "--storage", str(smoke_study.parent), "--name", smoke_study.name,
            "--sweep", "finetune.data.batch_size=32,100000", "--resume",
            *[arg.format(other=tmp_path / "ghns") for arg in change]]
    before = {p: p.stat().st_mtime_ns for p in smoke_study.rglob("*")}
    assert main(load_study("rank_sweep"), args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot resume" in err[0] and message in err[0]
    assert {p: p.stat().st_mtime_ns for p in smoke_study.rglob("*")} == before
    assert not (tmp_path / "ghns").exists()


def trial_records(folder: Path) -> dict[str, dict]:
    records = {}
    for path in (folder / "trials").glob("*/record.json"):
        try:
            records[path.parent.name] = json.loads(path.read_text())
        except json.JSONDecodeError:   # being replaced right now
            continue
    return records


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["kill", "ctrl-c"])
def test_a_stopped_study_resumes_without_rerunning_or_losing_trials(stop, tmp_path):
    """A study's driver killed (SIGKILL: nothing saved at the end) or stopped with Ctrl-C
    (SIGINT: Tune ends the running trials, which the searcher tells Optuna FAILED) resumes with
    ``--resume``: trials that completed are not run again, the others complete, and each Tune
    trial has one COMPLETE Optuna trial."""
    storage = tmp_path / "studies"
    args = ["--preset", "smoke", "--storage", str(storage), "--name", "r",
            "--sweep", "finetune.seed=0,1"]                          # 4 trials, 2 GHNs
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    driver = subprocess.Popen([sys.executable, str(ROOT / "studies" / "rank_sweep.py"), *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                              start_new_session=True)
    folder = storage / "r"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        done = {i for i, r in trial_records(folder).items() if r["status"] == "COMPLETE"}
        if done:
            break
        assert driver.poll() is None, "the study ended before it could be interrupted"
        time.sleep(1)
    if stop == "kill":
        driver.kill()                                                # SIGKILL, the driver only
        driver.wait()
        time.sleep(3)
    else:
        driver.send_signal(signal.SIGINT)                            # Ctrl-C, the driver only
        driver.wait(timeout=300)
    try:                                                             # then what Ray left behind
        os.killpg(driver.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    before = trial_records(folder)
    finished = {i: r["finished_at"] for i, r in before.items() if r["status"] == "COMPLETE"}
    assert 1 <= len(finished) < 4

    killed = json.loads((folder / "study.json").read_text())["segments"]
    assert len(killed) == 1 and killed[0]["wall_s"] > 0
    if stop == "kill":
        assert killed[0]["finished_at"] is None                      # it could not say it ended
    resumed = run_script("rank_sweep", *args, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    trials, _, info = read_study(folder)
    assert len(info["segments"]) == 2 and info["segments"][0] == killed[0]    # both runs count
    assert info["wall_s"] == pytest.approx(killed[0]["wall_s"] + info["segments"][1]["wall_s"])
    assert len(trials) == 4 and trials["trial_id"].is_unique
    assert (trials["status"] == "COMPLETE").all()
    after = trial_records(folder)
    assert {i: after[i]["finished_at"] for i in finished} == finished    # not run again
    assert len(list((folder / "ghns").glob("*/store.json"))) == 2
    ot = optuna_trials(folder, info)
    complete = [t for t in ot if t.state.name == "COMPLETE"]
    assert sorted(t.user_attrs["tune_trial_id"] for t in complete) == sorted(trials["trial_id"])
    # trials the killed driver had asked Optuna for (at most one per concurrent slot, 2 here)
    # but never started are closed as FAIL
    assert all(t.state.name == "FAIL" for t in ot if t not in complete) and len(ot) <= 4 + 2


def start_study(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, str(ROOT / "studies" / "rank_sweep.py"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def wait_for(condition, process: subprocess.Popen, timeout: float = 900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        assert process.poll() is None, "the study ended first: " + process.stderr.read()[-3000:]
        time.sleep(0.5)
    raise AssertionError("timed out")


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_trial_whose_worker_dies_is_retried_and_completes(tmp_path):
    """SIGKILL of a trial's process (what an OOM kill or a lost spot node does): Tune runs the
    trial again, which resumes its GHN training from its checkpoint; every trial completes."""
    folder = tmp_path / "studies" / "k"
    study = start_study(["--preset", "smoke", "--storage", str(folder.parent), "--name", "k",
                         "--set", "ghn_training.steps=120"])    # long enough to be caught

    def training():            # a trial whose GHN has a checkpoint, still training
        for trial_id, record in trial_records(folder).items():
            ghn = folder / "ghns" / str(record.get("ghn_key"))
            if record["status"] == "RUNNING" and (ghn / "checkpoint").is_dir() \
                    and not (ghn / "store.json").exists():
                return trial_id, record
        return None

    trial_id, record = wait_for(training, study)
    os.kill(record["pid"], signal.SIGKILL)          # the trial process of the study we started
    out, err = study.communicate(timeout=1200)
    assert study.returncode == 0, out[-3000:] + err[-3000:]
    assert f"trial {trial_id} failed (its process died)" in out and "resumes from" in out
    trials, _, _ = read_study(folder)
    assert (trials["status"] == "COMPLETE").all() and len(trials) == 2
    retried = trial_records(folder)[trial_id]
    assert retried["attempt"] == 2 and retried["pid"] != record["pid"]
    steps = [json.loads(line)["step"] for line in
             (folder / "ghns" / record["ghn_key"] / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 120    # resumed, not restarted twice


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_resume_runs_failed_trials_again_and_counts_both_runs(tmp_path, capsys):
    """A trial fails on the state of the disk (its GHN's folder is taken by a file): the study
    exits 3; once that is fixed, --resume runs it again and every trial completes. study.json
    then holds both runs, its wall time their sum; a resume with nothing left to run changes
    neither, and one on other code says so."""
    storage, name = tmp_path / "studies", "f"
    study = load_study("rank_sweep")
    store = tmp_path / "ghns"      # outside the study folder, which must not exist yet
    plan = plan_study(study, StudyOptions(preset="smoke", storage=str(storage), name=name,
                                          ghn_store=str(store)))
    from logah.ghn_store import config_key

    blocked = plan.ghn_store / config_key(plan.trial_config({"ghn_training.ghn.rank": 2}).ghn_training)
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a GHN folder")
    args = ["--preset", "smoke", "--storage", str(storage), "--name", name, "--ghn-store", str(store)]
    first = run_script("rank_sweep", *args)
    assert first.returncode == 3, first.stdout[-2000:] + first.stderr[-2000:]
    trials, _, info = read_study(storage / name)
    assert sorted(trials["status"]) == ["COMPLETE", "FAILED"]
    assert len(info["segments"]) == 1

    blocked.unlink()
    resumed = run_script("rank_sweep", *args, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    trials, _, info = read_study(storage / name)
    assert (trials["status"] == "COMPLETE").all() and len(trials) == 2
    segments = info["segments"]
    assert len(segments) == 2 and all(s["wall_s"] > 0 for s in segments)
    assert info["wall_s"] == pytest.approx(sum(s["wall_s"] for s in segments))
    assert info["finished_at"] == segments[-1]["finished_at"]

    (storage / name / "study.json").write_text(json.dumps(
        {**info, "segments": [*segments[:-1], {**segments[-1], "digest": "0123456789abcdef",
                                               "commit": "f" * 40}]}))
    again = run_script("rank_sweep", *args, "--resume")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "last ran ffffffffff" in again.stderr and "its trials mix two versions" in again.stderr
    after = json.loads((storage / name / "study.json").read_text())
    assert len(after["segments"]) == 2 and after["wall_s"] == pytest.approx(info["wall_s"])
    assert after["finished_at"] == info["finished_at"]


@pytest.mark.slow
def test_ray_job_submit_runs_the_smoke_rank_sweep_on_a_token_authenticated_cluster(tmp_path):
    """What the README shows: ``ray start --head`` with token auth on loopback, ``ray job
    submit --working-dir .`` of the smoke rank sweep with an absolute ``--storage``."""
    bin_dir = Path(sys.executable).parent
    token = tmp_path / "auth_token"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "PATH": f"{bin_dir}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    token.write_text(secrets.token_hex(32))      # the test's own token, not ~/.ray/auth_token
    dashboard = free_port()
    temp_dir = Path("/tmp") / f"ray-job-test-{os.getpid()}"   # Ray's socket paths must be short
    head = subprocess.Popen(
        [bin_dir / "ray", "start", "--head", "--block", f"--port={free_port()}",
         "--num-cpus=2", '--resources={"train_driver": 2}', "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
         *ray_node_ports(head=True)],
        env=env, stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    storage = tmp_path / "studies"
    try:
        address = f"http://127.0.0.1:{dashboard}"
        for _ in range(60):                         # the Jobs API answers once the head is up
            probe = subprocess.run([bin_dir / "ray", "job", "list", "--address", address],
                                   env=env, capture_output=True, timeout=60)
            if probe.returncode == 0:
                break
            time.sleep(2)
        deadline = time.monotonic() + 600  # the job agent may start minutes after the Jobs API
        while True:                         # answers on a loaded host ("try again later", says Ray)
            job = subprocess.run(
                [bin_dir / "ray", "job", "submit", "--address", address, "--working-dir",
                 str(ROOT), "--submission-id", "smoke-rank-sweep", "--", "python",
                 "studies/rank_sweep.py", "--preset", "smoke", "--storage", str(storage)],
                env=env, capture_output=True, text=True, timeout=1200)
            if "No available agent to submit job" not in job.stderr or time.monotonic() > deadline:
                break
            time.sleep(5)
        assert job.returncode == 0, (job.stdout[-3000:] + job.stderr[-3000:]
                                     + (tmp_path / "head.log").read_text()[-2000:])
        status = subprocess.run(
            [sys.executable, "-c", "import sys; from ray.job_submission import JobSubmissionClient"
             " as C; print(C(sys.argv[1]).get_job_status(sys.argv[2]).value)", address,
             "smoke-rank-sweep"], env=env, capture_output=True, text=True, timeout=120)
        assert status.stdout.strip().splitlines()[-1] == "SUCCEEDED", status.stderr[-2000:]
        without_token = subprocess.run(
            [bin_dir / "ray", "job", "list", "--address", address],
            env={**env, "RAY_AUTH_MODE": "disabled"}, capture_output=True, timeout=60)
        assert without_token.returncode != 0                 # authentication is really on
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
    trials, _, info = read_study(storage / "rank_sweep-vit-smoke")
    assert len(trials) == 2 and (trials["status"] == "COMPLETE").all()
    assert set(trials["ghn_training.ghn.rank"]) == {2, 8}


def test_pareto_front_of_quality_against_size():
    trials = pd.DataFrame({"status": ["COMPLETE"] * 4 + ["FAILED"],
                           "best": [0.5, 0.6, 0.4, 0.6, math.nan],
                           "ghn_params": [10, 20, 15, 30, 1]})
    objectives = [{"column": "best", "mode": "max"}, {"column": "ghn_params", "mode": "min"}]
    from logah.analysis.stats import pareto_mask

    done = trials.where(trials["status"] == "COMPLETE")
    assert pareto_mask(done, objectives).tolist() == [True, True, False, False, False]


@pytest.mark.slow
@pytest.mark.parametrize("script", ["hidden_sweep", "arch_sampling_sweep", "decoder_ablation"])
def test_smoke_preset_of_each_study_completes(script, tmp_path):
    run = run_script(script, "--preset", "smoke", "--storage", str(tmp_path))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    trials, _, info = read_study(tmp_path / f"{script}-vit-smoke")
    assert len(trials) == info["num_samples"] == 2 and (trials["status"] == "COMPLETE").all()
    for swept in info["swept"]:
        assert swept in trials.columns
    assert "study folder:" in run.stdout


@pytest.mark.slow
def test_init_comparison_trains_each_ghn_once_for_all_seeds(tmp_path):
    run = run_script("init_comparison", "--preset", "smoke", "--storage", str(tmp_path))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    folder = tmp_path / "init_comparison-vit-smoke"
    trials, _, _ = read_study(folder)
    assert len(trials) == 2 * len(INIT_KINDS) and (trials["status"] == "COMPLETE").all()
    assert set(trials["init"]) == set(INIT_KINDS)   # the paper's four, mimetic and LSUV
    stores = [json.loads(p.read_text()) for p in (folder / "ghns").glob("*/store.json")]
    assert sorted(s["config"]["ghn"]["decoder"] for s in stores) == ["low-rank", "tiled"]
    for init in ("logah", "ghn3"):
        rows = trials[trials["init"] == init]
        assert rows["ghn_reused"].tolist().count(True) == 1 and rows["ghn_key"].nunique() == 1
    baselines = trials[trials["init"].isin(BASELINE_INITS)]
    assert baselines["ghn_params"].isna().all() and (baselines["ghn_key"] == "").all()

    # a transfer study on the same GHNs (--ghn-store) trains none: its LoGAH trials reuse them
    run = run_script("init_comparison", "--preset", "smoke", "--storage", str(tmp_path),
                     "--name", "transfer", "--sweep", "init=random,logah",
                     "--set", "finetune.data.dataset=digits", "--ghn-store", str(folder / "ghns"))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    transfer, steps, info = read_study(tmp_path / "transfer")
    assert info["ghn_store"] == str(folder / "ghns") and not (tmp_path / "transfer/ghns").exists()
    logah = transfer[transfer["init"] == "logah"]
    assert len(logah) == 2 and logah["ghn_reused"].all()
    assert set(logah["ghn_key"]) == set(trials.loc[trials["init"] == "logah", "ghn_key"])
    assert set(steps.loc[steps["phase"] == "ghn", "trial_id"]) == set(logah["trial_id"])
    assert len(list((folder / "ghns").glob("*/store.json"))) == 2


@pytest.mark.slow
def test_multi_objective_study_records_its_pareto_front(tmp_path):
    run = run_script("rank_sweep", "--preset", "smoke", "--storage", str(tmp_path),
                     "--objectives", "quality,ghn_params", "--num-samples", "3")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    trials, _, info = read_study(tmp_path / "rank_sweep-vit-smoke")
    assert info["search"] == "nsga2" and len(info["objectives"]) == 2
    assert len(trials) == 3 and trials["pareto"].any()
    study = optuna.load_study(study_name=info["optuna_study_name"], storage=info["optuna_storage"])
    assert len(study.directions) == 2
    front = {t.user_attrs["tune_trial_id"] for t in study.best_trials}
    assert front == set(trials.loc[trials["pareto"], "trial_id"])


@pytest.mark.slow
def test_asha_prunes_on_the_fine_tuning_metric(tmp_path):
    run = run_script("rank_sweep", "--preset", "smoke", "--storage", str(tmp_path),
                     "--scheduler", "asha", "--sweep", "finetune.lr=0.001,0.05")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    trials, steps, info = read_study(tmp_path / "rank_sweep-vit-smoke")
    assert info["scheduler"] == "asha" and len(trials) == 4
    assert (trials["status"] == "COMPLETE").all() and trials["best"].notna().all()
    last = steps[steps["phase"] == "finetune"].groupby("trial_id")["step"].max()
    for _, trial in trials.iterrows():      # a stopped trial ended before the full budget
        assert (last[trial["trial_id"]] < 20) == trial["stopped_early"]
