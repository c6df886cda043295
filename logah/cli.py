"""The ``logah`` command. Run ``logah --help`` for the list of subcommands.

Every subcommand turns user mistakes (``LogahError``) into one line on stderr and exit status 2,
and writes its outputs atomically, so a failed command leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

from logah.cli_settings import Alias, add_setting_options, settings_from_args
from logah.errors import LogahError, print_error
from logah.init_kinds import FILL_INITS, PREDICTED_PARTS
from logah.io import output_path


def _cmd_ghn_info(args: argparse.Namespace) -> None:
    import torch

    from logah.checkpoint import is_checkpoint, read_config
    from logah.ghn import GHN
    from logah.presets import PAPER_PARAMS, get_preset

    if Path(args.ghn).is_dir():
        if not is_checkpoint(args.ghn):
            raise LogahError(f"{args.ghn} is not a GHN checkpoint folder (no ghn.json)")
        config, name = read_config(args.ghn), str(args.ghn)
    else:
        config, name = get_preset(args.ghn), args.ghn
    with torch.device("meta"):   # counting needs shapes only: no memory, no init, no weights read
        ghn = GHN(config)
    total, decoder = ghn.num_params(), ghn.num_params("decoder")
    info = {"name": name, "params": total, "decoder_params": decoder,
            "backbone_params": total - decoder, "paper_params": PAPER_PARAMS.get(name),
            "config": ghn.config.to_dict()}
    if args.json:
        print(json.dumps(info))
        return
    print(f"{name}: {total / 1e6:.2f}M parameters ({decoder / 1e6:.2f}M in the "
          f"{ghn.config.decoder} decoder, {(total - decoder) / 1e6:.2f}M in the backbone)")
    if info["paper_params"]:
        print(f"paper (Table 1): {info['paper_params'] / 1e6:.1f}M")
    for key, value in info["config"].items():
        print(f"  {key}: {value}")


def _cmd_predict(args: argparse.Namespace) -> None:
    from logah.checkpoint import is_checkpoint, resolve_ghn
    from logah.graph import graph_of
    from logah.predict import predict_to_folder
    from logah.targets import resolve_target
    from logah.transfer import check_target

    arch = resolve_target(args.target)
    if is_checkpoint(args.ghn):
        check_target(arch, args.ghn)     # family refused, novelties warned about
    ghn = resolve_ghn(args.ghn, args.device)
    timer = _Timer(ghn)
    graph = timer("traced", lambda: graph_of(arch, ghn.config.edge_cutoff))   # imports included
    written = timer("predicted", lambda: predict_to_folder(ghn, arch, args.out, graph=graph,
                                                           dtype=args.dtype,
                                                           overwrite=args.overwrite))
    print(f"predicted {written.num_params / 1e6:,.1f}M parameters of {args.target} and wrote "
          f"{_size(written.bytes_written)} ({args.dtype}) in "
          f"{timer.seconds['predicted']:.2f} s (graph traced in {timer.seconds['traced']:.2f} s)")
    print(f"output: {written.path}")


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


class _Timer:
    """Wall time of each phase of a command, waiting for the GPU where there is one."""

    def __init__(self, ghn):
        self.device = next(ghn.parameters()).device
        self.seconds: dict[str, float] = {}

    def __call__(self, phase: str, work):
        import torch

        start = time.perf_counter()
        value = work()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds[phase] = time.perf_counter() - start
        return value


def _cmd_archs_sample(args: argparse.Namespace) -> None:
    from logah.archs import get_space, sample_archs, save_archs

    archs = sample_archs(get_space(args.space), args.n, args.seed)
    out = save_archs(args.out, archs, overwrite=args.overwrite)
    print(f"sampled {len(archs)} architectures from {args.space} -> {out}")


def _cmd_archs_describe(args: argparse.Namespace) -> None:
    from logah.archs import describe_archs, format_description, load_archs

    description = describe_archs(load_archs(args.file))
    print(json.dumps(description) if args.json else format_description(description))


# Short flags of the run commands: each is ``--set PATH=VALUE`` (logah.cli_settings).
TRAIN_ALIASES = [
    Alias("--ghn", "ghn", "GHN preset to start from (logah-cpu, logah-t, ghn3-s, ...)"),
    Alias("--decoder", "ghn.decoder", "GHN decoder", choices=("low-rank", "tiled")),
    Alias("--hidden", "ghn.hidden", "GHN hidden size d"),
    Alias("--layers", "ghn.layers", "GHN layers L"),
    Alias("--heads", "ghn.heads", "GHN attention heads H"),
    Alias("--rank", "ghn.rank", "low-rank decoder rank r"),
    Alias("--unit-grid", "ghn.unit_grid", "low-rank: read factor rows at relative positions of "
                                          "a grid of this many rows (0: the paper's per-unit rows)"),
    Alias("--weight-scaling", "ghn.weight_scaling", "predicted weights scaled by sqrt(2/fan_in) "
          "(He, the paper's) or sqrt(2·G)/fan_in with the unit grid G",
          choices=("fan-in", "mean-field")),
    Alias("--depth-encoding", "ghn.depth_encoding", "distance from the input as is (GHN-3's) or "
          "relative to the network's depth", choices=("absolute", "relative")),
    Alias("--space", "space", "architecture space (vits-cpu, gpts-1k, llamas-cpu, ...)"),
    Alias("--data", "data.dataset", "dataset (default: the space family's offline one)"),
    Alias("--batch-size", "data.batch_size", "images or token blocks per step and worker"),
    Alias("--block-size", "data.block_size", "tokens per block (text)"),
    Alias("--tokenizer", "data.tokenizer", "text: auto, bpe, bpe:CORPUS, gpt2, or a folder with "
                                           "vocab.json + merges.txt"),
    Alias("--steps", "steps", "optimizer steps"),
    Alias("--meta-batch", "meta_batch", "architectures per step and worker (m)"),
    Alias("--lr", "lr", "learning rate"),
    Alias("--ema", "ema_decay", "EMA decay of the GHN weights (0: off)"),
    Alias("--layer-diversity", "layer_diversity", "add this x how alike the predicted layers are "
          "(mean squared cosine) to the loss (0: off, the paper's)"),
    Alias("--seed", "seed", "seed of everything random"),
    Alias("--checkpoint-every", "checkpoint_every", "steps between checkpoints"),
]

FINETUNE_ALIASES = [
    Alias("--init", "init", "random | orthogonal | mimetic | lsuv | ghn3 | logah (both need "
                            "--ghn) | a logah predict folder"),
    Alias("--ghn", "ghn", "GHN checkpoint folder (for --init ghn3 / logah)"),
    Alias("--data", "data.dataset", "dataset (default: the target family's offline one)"),
    Alias("--batch-size", "data.batch_size", "images or token blocks per step and worker "
                                             "(default: the family's cpu-scale one)"),
    Alias("--block-size", "data.block_size", "tokens per block (text)"),
    Alias("--tokenizer", "data.tokenizer", "text: auto (a text GHN's own tokenizer when starting "
          "from one, else bpe), bpe, bpe:CORPUS, gpt2, or a folder with vocab.json + merges.txt"),
    Alias("--eval-batches", "data.eval_batches", "validation batches per evaluation (0: the "
                                                 "whole split)"),
    Alias("--keep-classifier", "keep_classifier", "a GHN trained on another image dataset: keep "
          "its predicted classifier (same width only; default: re-initialised, as in the paper)"),
    Alias("--init-noise", "init_noise", "ghn3 / logah: add ALPHA x the target's default init to "
          "every predicted weight matrix (not the paper's)"),
    Alias("--null-fill", "null_fill", "ghn3 / logah: add BETA x the part of the target's default "
          "init outside each predicted matrix's directions (not the paper's)"),
    Alias("--rescale-directions", "rescale_directions", "ghn3 / logah: scale each predicted "
          "matrix so that its directions have the default init's strength (not the paper's)"),
    Alias("--fill-init", "fill_init", "ghn3 / logah: the init that --init-noise, --null-fill and "
          "--rescale-directions read (orthogonal: LSUV's start when with --unit-variance)",
          choices=FILL_INITS),
    Alias("--predicted-part", "predicted_part", "ghn3 / logah: the parameters that keep the "
          "prediction (blocks, outside_blocks: the others take --fill-init's; not the paper's)",
          choices=PREDICTED_PARTS),
    Alias("--mimetic-attention", "mimetic_attention", "ghn3 / logah: mimetic attention layers, "
          "the prediction everywhere else (not the paper's)"),
    Alias("--unit-variance", "unit_variance", "after the init (not lsuv): rescale every layer "
          "to unit output variance on the first batch, LSUV's second step"),
    Alias("--seed", "seed", "seed of everything random"),
]

_PRESET = "--preset's"
RUN_ALIASES = [
    Alias("--optimizer", "optimizer", "optimizer", choices=("sgd", "adamw"), default=_PRESET),
    Alias("--lr", "lr", "learning rate", default=_PRESET),
    Alias("--weight-decay", "weight_decay", "weight decay (matrices only)", default=_PRESET),
    Alias("--warmup", "warmup_steps", "warm-up steps", default=_PRESET),
    Alias("--steps", "steps", "optimizer steps", default=_PRESET),
    Alias("--grad-clip", "grad_clip", "max gradient norm (0: off)", default=_PRESET),
    Alias("--eval-every", "eval_every", "steps between validation reports", default=_PRESET),
    Alias("--no-final-test", "final_test", "skip the final evaluation on the whole test split"),
]


def _train_config(args: argparse.Namespace):
    from logah.archs import space_from_dict
    from logah.families import family_of
    from logah.settings import with_settings
    from logah.training import TrainConfig

    settings = settings_from_args(args, TRAIN_ALIASES)
    record = with_settings(TrainConfig().to_dict(), settings)
    if "data.dataset" not in settings:    # the offline data of the space's family
        record["data"]["dataset"] = family_of(space_from_dict(record["space"])).default_dataset
    config = TrainConfig.from_dict(record)
    return config


def _target_record(args: argparse.Namespace, preset: str | None) -> dict:
    """A ``FinetuneConfig`` record for ``--target``, with the optimisation settings of
    ``preset`` (default: the target family's CPU one) and the family's offline data."""
    from logah.families import family_of
    from logah.finetune import FinetuneConfig, finetune_preset
    from logah.targets import resolve_target
    from logah.tasks import DataConfig

    arch = resolve_target(args.target)
    family = family_of(arch)
    scale = family.scales["cpu"]
    data = DataConfig(dataset=family.default_dataset,
                      batch_size=(scale.finetune_data or scale.data)["batch_size"])
    return FinetuneConfig(target=arch.to_dict(), data=data,
                          **finetune_preset(preset or f"{family.name}-cpu")).to_dict()


def _finetune_config(args: argparse.Namespace):
    from logah.finetune import FinetuneConfig
    from logah.settings import with_settings

    settings = settings_from_args(args, FINETUNE_ALIASES + RUN_ALIASES)
    config = FinetuneConfig.from_dict(with_settings(_target_record(args, args.preset), settings))
    config.validate()
    return config


def _cmd_train_ghn(args: argparse.Namespace) -> None:
    from logah.runs import METRICS_FILE, read_metrics
    from logah.training import train_ghn

    config = _train_config(args)
    config.validate()
    if args.workers:
        from logah.distributed import train_ghn_ray

        _prepare_ray(args)
        train_ghn_ray(config, args.out, **_ray_options(args))
    else:
        _check_local_run(args)
        train_ghn(config, args.out, resume=args.resume, overwrite=args.overwrite,
                  device="cuda" if args.gpu else "cpu")
    history = read_metrics(Path(args.out) / METRICS_FILE)
    final = [m for m in history if any(k.startswith("heldout_") for k in m)]
    if final:
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in final[-1].items()}
        print("final:", json.dumps(shown))
        _check_finite_result(final[-1], [k for k in final[-1] if k.startswith("heldout_")], args.out)
    print(f"output: {Path(args.out).resolve()}")


def _check_finite_result(result: dict, keys: list[str], out: str | None) -> None:
    """A run whose result is NaN (or infinite, or missing: written as null) did not work, and
    its exit status says so: exit 0 would let a script or a study take it for a result."""
    bad = [k for k in keys if not (isinstance(result.get(k), (int, float)) and math.isfinite(result[k]))]
    if bad:
        where = f" (its output is in {out})" if out else ""
        raise LogahError(f"the run's result is not a number: {', '.join(f'{k} {result.get(k)}' for k in bad)}; "
                         f"the model diverged or is broken (lower the learning rate){where}")


def _cmd_finetune(args: argparse.Namespace) -> None:
    config = _finetune_config(args)
    if args.workers:
        from logah.distributed import finetune_ray
        from logah.finetune import SUMMARY_FILE
        from logah.io import read_json

        _prepare_ray(args)
        finetune_ray(config, args.out, **_ray_options(args))
        summary = read_json(Path(args.out) / SUMMARY_FILE, "fine-tuning summary")
    else:
        from logah.finetune import finetune

        _check_local_run(args)
        summary = finetune(config, args.out, resume=args.resume, overwrite=args.overwrite,
                           device="cuda" if args.gpu else "cpu")
    print("summary:", json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                  for k, v in summary.items()}))
    _check_finite_result(summary, [k for k in summary if k.startswith(("final_", "test_"))], args.out)
    print(f"output: {Path(args.out).resolve()}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from logah.finetune import FinetuneConfig, evaluate_initialised
    from logah.settings import with_settings

    settings = settings_from_args(args, FINETUNE_ALIASES)
    record = with_settings(_target_record(args, None),
                           {"init": "logah", "data.eval_batches": 0, **settings})
    record["data"]["eval_split"] = args.split
    config = FinetuneConfig.from_dict(record)
    metrics = evaluate_initialised(config, "cuda" if args.gpu else "cpu")
    print(json.dumps({"target": args.target, "init": config.init, "ghn": config.ghn,
                      "dataset": config.data.dataset, **metrics}))
    _check_finite_result(metrics, list(metrics), None)


def _prepare_ray(args: argparse.Namespace) -> None:
    """Connect to ``--address`` (or ``RAY_ADDRESS``, as in a ``ray job submit``); without one,
    check at once that this machine can hold the workers (``run_on_ray`` then starts a private
    local Ray, once it has checked the output folder)."""
    from logah.distributed import check_resources, init_ray

    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        init_ray(address)
        return
    import torch

    gpus = torch.cuda.device_count() if args.gpu else 0
    check_resources(args.workers, use_gpu=args.gpu,
                    available={"CPU": len(os.sched_getaffinity(0)), "GPU": gpus})


def _check_local_run(args: argparse.Namespace) -> None:
    if args.address or args.storage:
        raise LogahError("--address and --storage are for runs on Ray (--workers N)")


def _ray_options(args: argparse.Namespace) -> dict:
    return {"workers": args.workers, "use_gpu": args.gpu, "storage": args.storage,
            "resume": args.resume, "overwrite": args.overwrite}


def _cmd_demo(args: argparse.Namespace) -> None:
    from logah.checkpoint import resolve_ghn
    from logah.io import check_replaceable
    from logah.predict import ARCH_FILE, predict_to_folder
    from logah.targets import resolve_target

    out = Path(args.out)
    names = ("vit-s", "gpt2-s")
    for name in names:    # before predicting either, so a refusal leaves nothing half done
        check_replaceable(out / name, "folder", args.overwrite, marker=ARCH_FILE)
    ghn = resolve_ghn("logah-t")
    for name in names:
        start = time.perf_counter()
        written = predict_to_folder(ghn, resolve_target(name), out / name, overwrite=args.overwrite)
        print(f"{name}: predicted {written.num_params / 1e6:.1f}M parameters with an untrained "
              f"logah-t in {time.perf_counter() - start:.1f}s -> {out / name}")
    print(f"demo output: {out.resolve()}")


def _cmd_report(args: argparse.Namespace) -> None:
    from logah.analysis.report import write_report

    print(f"report: {write_report(args.studies, args.out, overwrite=args.overwrite).resolve()}")


def _add_run_options(p: argparse.ArgumentParser, verb: str, out_help: str) -> None:
    """Where a training run executes and writes (shared by train-ghn and finetune)."""
    p.add_argument("--workers", type=int, default=0,
                   help=f"Ray Train workers (0: {verb} in this process without Ray)")
    p.add_argument("--address", help="Ray cluster address (default: a private local Ray)")
    p.add_argument("--storage", type=output_path, help="Ray Train storage, a path or URI every node reaches "
                   "(default: OUT/ray, single-node clusters only)")
    p.add_argument("--gpu", action="store_true", help=f"{verb} on GPU (one per worker)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--out", required=True, type=output_path, help=out_help)


_TARGET_HELP = "a named target (logah predict --help lists them) or an architecture .json"


def _targets_help() -> str:
    from logah.targets import NAMED_TARGETS, TARGET_NOTES

    width = max(map(len, NAMED_TARGETS))
    return "named targets:\n" + "\n".join(f"  {name:<{width}}  {TARGET_NOTES[name]}"
                                          for name in NAMED_TARGETS)


class _Parser(argparse.ArgumentParser):
    """Bad options are one line and exit status 2, like every other mistake (argparse would
    print its whole usage block)."""

    def error(self, message: str):
        raise LogahError(message)


def build_parser() -> argparse.ArgumentParser:
    from logah.finetune import FinetuneConfig
    from logah.training import TrainConfig

    parser = _Parser(prog="logah", description="LoGAH: graph hypernetworks that predict the "
                     "parameters of ViTs, GPT-2s and Llamas.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("ghn-info", help="parameter counts and config of a GHN preset or checkpoint")
    p.add_argument("ghn", help="preset name (logah-t, ghn3-s, ...) or checkpoint folder")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_ghn_info)

    p = sub.add_parser("predict", help="predict all parameters of a target and save them",
                       epilog=_targets_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ghn", required=True, help="checkpoint folder or preset name (untrained)")
    p.add_argument("--target", required=True,
                   help="a named target (see below) or an architecture .json file")
    p.add_argument("--out", required=True, type=output_path, help="output folder (written atomically)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="dtype of the saved weights (each tensor is predicted and written on its "
                        "own, so memory stays small whatever the target's size)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("archs", help="sample and describe architecture datasets (ViTs-1K, ...)")
    archs = p.add_subparsers(dest="archs_command", required=True, metavar="ARCHS_COMMAND")
    q = archs.add_parser("sample", help="sample N architectures of a space to JSON or Parquet")
    q.add_argument("--space", required=True, help="vits-1k, gpts-1k, vits-cpu, gpts-cpu")
    q.add_argument("--n", type=int, default=None, help="number of architectures (space default)")
    q.add_argument("--seed", type=int, default=None, help="sampling seed (space default)")
    q.add_argument("--out", required=True, type=output_path, help="output .json or .parquet file")
    q.add_argument("--overwrite", action="store_true", help="replace an existing file")
    q.set_defaults(func=_cmd_archs_sample)
    q = archs.add_parser("describe", help="count, depth/width/heads histograms, parameter counts")
    q.add_argument("file", help="a .json or .parquet architecture file")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=_cmd_archs_describe)

    p = sub.add_parser("train-ghn", help="train a GHN on an architecture space and a dataset")
    add_setting_options(p, TrainConfig, TRAIN_ALIASES)
    _add_run_options(p, "train", "output folder (a GHN checkpoint at the end)")
    p.set_defaults(func=_cmd_train_ghn)

    p = sub.add_parser("finetune", help="fine-tune a target from an init (random, orthogonal, "
                       "mimetic, lsuv, ghn3, logah or a predicted folder)")
    p.add_argument("--target", required=True, help=_TARGET_HELP)
    p.add_argument("--preset", help="optimisation preset: FAMILY-cpu or FAMILY-paper (vit-cpu, "
                   "gpt2-paper, llama-cpu, ...; default: the CPU one of the target's family)")
    add_setting_options(p, FinetuneConfig, FINETUNE_ALIASES + RUN_ALIASES)
    _add_run_options(p, "fine-tune", "output folder: metrics.jsonl, summary.json, model/")
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("evaluate", help="metrics of a target as an init leaves it, no fine-tuning "
                       "(a GHN's zero-shot accuracy or perplexity; default --init logah)")
    p.add_argument("--target", required=True, help=_TARGET_HELP)
    p.add_argument("--split", default="val", choices=("val", "test"), help="split to evaluate")
    add_setting_options(p, FinetuneConfig, FINETUNE_ALIASES)
    p.add_argument("--gpu", action="store_true", help="evaluate on GPU")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("report", help="self-contained HTML dashboard of study folders (plots, "
                       "trial table)")
    p.add_argument("studies", nargs="+", metavar="STUDY_DIR", help="study folder(s) STORAGE/NAME")
    p.add_argument("-o", "--out", type=output_path, help="output HTML file (default: report.html in the first study)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("demo", help="the quick-start job: predict ViT-S and GPT-2-S with logah-t")
    p.add_argument("--out", default="runs/demo", type=output_path)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo's output")
    p.set_defaults(func=_cmd_demo)
    return parser


def _one_line_warning(prefix: str):
    """Shows a warning (a target new to its GHN, embeddings re-initialised) as one line a user
    reads, not Python's two lines of source location."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prefix}: warning: {message}", file=file or sys.stderr)

    return show


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except LogahError as err:
        command = next((a for a in argv if not a.startswith("-")), None)
        print_error(f"logah{' ' + command if command else ''}", err)
        return 2
    try:
        with warnings.catch_warnings():       # the one-line format for this command only
            warnings.showwarning = _one_line_warning(f"logah {args.command}")
            args.func(args)
    except LogahError as err:
        print_error(f"logah {args.command}", err)
        return 2
    except OSError as err:   # the operating system refused a path: bad input, not a bug
        where = f"{err.filename}: " if err.filename else ""
        print_error(f"logah {args.command}", err, f"{where}{err.strerror or err}")
        return 2
    except KeyboardInterrupt:
        print(f"logah {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
