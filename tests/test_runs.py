"""Run folders: one run at a time, and runs killed before or during a checkpoint leave nothing
that blocks a rerun or a resume (no stub, no temporary folder in --out or in /tmp)."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from logah.checkpoint import load_ghn
from logah.errors import LogahError
from logah.runs import run_folder
from logah.training import CONFIG_FILE, train_ghn
from test_training import tiny_config

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, "-m", "logah.cli", "train-ghn", "--ghn", "logah-test", "--data", "digits",
         "--batch-size", "16"]


@pytest.fixture
def system_temp(tmp_path, monkeypatch):
    """A private system temp dir for this test and its child processes (the shared one has
    other processes' files), which must hold nothing of ours afterwards."""
    folder = tmp_path / "system-temp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TMPDIR", str(folder))
    yield folder
    assert [p.name for p in folder.iterdir() if not p.name.startswith("torch")] == []  # torch's caches


def _run_dying(out: Path, die_in: str, at_checkpoint: int, steps: int = 6) -> subprocess.CompletedProcess:
    """``train_ghn`` in a child process that SIGKILLs itself inside ``die_in`` ("write": while
    the checkpoint is written to its scratch folder; "export": while it is copied to
    ``out/checkpoint``) at its ``at_checkpoint``-th checkpoint."""
    script = textwrap.dedent(f"""
        import os, shutil, signal, sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        import logah.training as training
        from logah.io import atomic_dir
        from logah.runs import copy_tree_atomic
        from test_training import tiny_config

        calls = []
        def die_here():
            calls.append(1)
            if len(calls) == {at_checkpoint}:
                os.kill(os.getpid(), signal.SIGKILL)

        if {die_in!r} == "write":
            write = training.GHNTrainer.write_checkpoint
            def write_then_die(self, folder):
                write(self, folder)
                die_here()
            training.GHNTrainer.write_checkpoint = write_then_die
        else:
            def export_and_die(checkpoint, out):
                with atomic_dir(out / "checkpoint", overwrite=True) as tmp:
                    shutil.copytree(checkpoint, tmp, dirs_exist_ok=True)
                    die_here()
                copy_tree_atomic(checkpoint, out / "checkpoint")
                for name in ("ghn.safetensors", "ghn.json"):
                    shutil.copy2(out / "checkpoint" / name, out / name)
            training.export_checkpoint = export_and_die
        training.train_ghn(tiny_config(steps={steps}, checkpoint_every=3), {str(out)!r},
                           progress=False)
    """)
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)


def _assert_clean(out: Path) -> None:
    """No temporary entry left, and every output with the permissions of every other one."""
    from logah.io import DIR_MODE, FILE_MODE

    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    for path in out.rglob("*"):
        assert path.stat().st_mode & 0o777 == (DIR_MODE if path.is_dir() else FILE_MODE), path


@pytest.mark.parametrize("die_in", ["write", "export"])
def test_killed_at_the_first_checkpoint_then_rerun(tmp_path, system_temp, die_in):
    out = tmp_path / "run"
    assert _run_dying(out, die_in, at_checkpoint=1).returncode == -signal.SIGKILL
    assert [p for p in out.iterdir() if p.name.startswith(".")]     # the kill left temporaries
    assert not (out / "checkpoint").exists()
    train_ghn(tiny_config(steps=6, checkpoint_every=3), out, progress=False)   # a plain rerun
    _assert_clean(out)
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").open()] == list(range(1, 7))


@pytest.mark.parametrize("die_in", ["write", "export"])
def test_killed_during_a_later_checkpoint_then_resumed_as_if_uninterrupted(tmp_path, system_temp,
                                                                          die_in):
    config = tiny_config(steps=6, checkpoint_every=3)
    train_ghn(config, tmp_path / "full", progress=False)
    out = tmp_path / "split"
    assert _run_dying(out, die_in, at_checkpoint=2).returncode == -signal.SIGKILL
    assert (out / "checkpoint").is_dir() and [p for p in out.iterdir() if p.name.startswith(".")]
    with pytest.raises(LogahError, match="already holds a run"):
        train_ghn(config, out, progress=False)
    train_ghn(config, out, resume=True, progress=False)
    _assert_clean(out)
    full, split = load_ghn(tmp_path / "full"), load_ghn(out)
    for (name, a), (_, b) in zip(full.state_dict().items(), split.state_dict().items()):
        assert a.equal(b), name


def test_killed_before_its_first_checkpoint_the_folder_takes_a_rerun_and_a_resume(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen(TRAIN + ["--steps", "100000", "--checkpoint-every", "100000",
                                        "--out", str(out)], cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not (out / CONFIG_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    process.kill()
    process.wait()
    assert (out / CONFIG_FILE).exists()            # the stub a killed run leaves
    # --resume takes it too, and starts afresh: there is nothing to resume (a plain rerun:
    # test_killed_at_the_first_checkpoint_then_rerun)
    result = subprocess.run(TRAIN + ["--steps", "2", "--checkpoint-every", "2", "--resume",
                                     "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").open()] == [2]
    _assert_clean(out)


def test_two_runs_on_one_folder_only_one_proceeds(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(TRAIN + ["--steps", "100000", "--out", str(out)], cwd=ROOT,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not (out / CONFIG_FILE).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        for extra in ([], ["--resume"], ["--overwrite"]):
            second = subprocess.run(TRAIN + ["--steps", "4", "--out", str(out), *extra], cwd=ROOT,
                                    capture_output=True, text=True)
            assert second.returncode == 2
            assert second.stderr.strip().splitlines() == [
                f"logah train-ghn: error: output {out} is in use by another run (one run per folder)"]
        assert first.poll() is None                # the first one is unharmed
        # stopped once it trains (it reported a step): an interrupt during its start-up, inside
        # a library's imports or data set-up, is not what this test is about
        while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline + 180:
            time.sleep(0.2)
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=120)


def test_two_runs_started_at_once_exactly_one_proceeds(tmp_path):
    out = tmp_path / "run"
    runs = [subprocess.Popen(TRAIN + ["--steps", "6", "--checkpoint-every", "3", "--out", str(out)],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    codes = sorted(run.wait(timeout=600) for run in runs)
    assert codes == [0, 2]
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").open()] == [3, 6]


def test_a_folder_of_other_files_is_never_taken_over(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(LogahError, match="not a logah run"):
        with run_folder(tmp_path, config_file=CONFIG_FILE, resume=True):
            pass
    with pytest.raises(LogahError, match="not a logah run"):
        with run_folder(tmp_path, config_file=CONFIG_FILE):
            pass
    assert os.listdir(tmp_path) == ["notes.txt"]
