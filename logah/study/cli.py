"""The command line every study script shares: ``main(STUDY)``.

    python studies/rank_sweep.py --preset smoke --storage /abs/studies
    ray job submit --working-dir . -- python studies/rank_sweep.py --storage /shared/studies

Bad input (an unknown preset, an empty range, ``--num-samples 0``, storage that cannot be
written, a name with a path separator, an objective the study does not report) stops before
Ray starts: one line on stderr, exit status 2, nothing written.
"""

from __future__ import annotations

import argparse
import sys

from logah.errors import LogahError, print_error
from logah.io import output_path
from logah.study.scales import SCALES
from logah.settings import assignments
from logah.study.space import parse_param
from logah.study.spec import OBJECTIVES, SEARCHES, Study, StudyOptions, plan_study


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):   # one line, exit 2 (argparse prints the whole usage)
        raise LogahError(message)


def build_parser(study: Study) -> argparse.ArgumentParser:
    p = _Parser(prog=f"studies/{study.name}.py", description=study.question)
    p.add_argument("--preset", default="smoke", choices=SCALES,
                   help="smoke: minutes on 2 CPU cores; cpu: about an hour on 2 cores; "
                        "paper: the paper's setting, for a GPU cluster")
    p.add_argument("--task", choices=study.tasks, help=f"target family (default {study.tasks[0]})")
    p.add_argument("--storage", default="runs/studies", type=output_path,
                   help="folder holding studies (absolute inside a Ray job; shared by every "
                        "node on a cluster)")
    p.add_argument("--name", help="study name (default: SCRIPT-TASK-PRESET)")
    p.add_argument("--num-samples", type=int, help="trials (default: the grid, or the preset's)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted study")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler")
    p.add_argument("--search", choices=SEARCHES, help=f"default: {study.search}")
    p.add_argument("--scheduler", choices=("asha",), help="prune trials on the fine-tuning metric")
    p.add_argument("--objectives", default="quality",
                   help=f"comma-separated, from {', '.join(OBJECTIVES)} (two: NSGA-II, Pareto front)")
    p.add_argument("--train-workers", type=int, default=1,
                   help="Ray Train workers per GHN training (1: in the trial's process)")
    p.add_argument("--gpu", action="store_true", help="train on GPUs (one per trial or worker)")
    p.add_argument("--optuna-storage", type=output_path, help="Optuna storage URL (default: SQLite in the study "
                   "folder; postgresql://... to share one study between jobs)")
    p.add_argument("--ghn-store", metavar="DIR", type=output_path,
                   help="folder of trained GHNs to share with other studies (default: the study "
                        "folder's ghns/); a GHN whose training config is already there is "
                        "reused, e.g. a transfer study on an init comparison's GHNs")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="fix a trial setting, e.g. ghn_training.steps=100")
    p.add_argument("--sweep", action="append", default=[], metavar="NAME=SPEC",
                   help="sweep a setting too: a,b,c or lo:hi[:step] or lo:hi:log")
    return p


def parse_options(study: Study, argv: list[str] | None) -> StudyOptions:
    args = build_parser(study).parse_args(argv)
    return StudyOptions(
        preset=args.preset, task=args.task, storage=args.storage, name=args.name,
        num_samples=args.num_samples, resume=args.resume, seed=args.seed, search=args.search,
        scheduler=args.scheduler,
        objectives=tuple(o.strip() for o in args.objectives.split(",") if o.strip()),
        train_workers=args.train_workers, gpu=args.gpu, optuna_storage=args.optuna_storage,
        ghn_store=args.ghn_store,
        set=assignments(args.set, "--set"),
        sweep=assignments(args.sweep, "--sweep", parse_param))


FAILED_TRIALS = 3     # exit status of a study that ran but has failed trials


def main(study: Study, argv: list[str] | None = None) -> int:
    """Parse, plan, run and print a study. Exit status: 0 when every trial is complete, 2 on
    bad input (nothing run), 3 when the study ran but some trials failed (their count on
    stderr; the tables and the report still show them)."""
    try:
        plan = plan_study(study, parse_options(study, argv))
        from logah.analysis import write_report
        from logah.study.runner import run_study
        from logah.study.summary import print_summary

        table = run_study(plan)
    except LogahError as err:
        print_error(study.name, err)
        return 2
    if not table.empty:
        print_summary(plan, table)
    print(f"report: {write_report([plan.study_dir], overwrite=True)}")
    failed = int((table["status"] == "FAILED").sum()) if not table.empty else 0
    if failed:
        print(f"{study.name}: {failed} of {len(table)} trials failed (see the report; "
              f"--resume runs them again)", file=sys.stderr)
        return FAILED_TRIALS
    return 0
