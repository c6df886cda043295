"""The ``logah`` command. Run ``logah --help`` for the list of subcommands.

Every subcommand turns user mistakes (``LogahError``) into one line on stderr and exit status 2,
and writes its outputs atomically, so a failed command leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

from logah.errors import LogahError


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


def _default(value, default):
    """An option's value, or ``default`` when it was not given (0 is a value, not "not given")."""
    return default if value is None else value


def _default_dataset(family: str) -> str:
    """The offline dataset a family trains on when --data is not given."""
    from logah.families import get_family

    return get_family(family).default_dataset


def _batch_size(arch, given: int | None, images: int, blocks: int) -> int:
    """``given``, else the default for the target's data: ``images`` or ``blocks`` of text."""
    from logah.families import IMAGE, family_of

    return _default(given, images if family_of(arch).data_kind == IMAGE else blocks)


def _train_config(args: argparse.Namespace):
    import dataclasses

    from logah.archs import get_space, space_to_dict
    from logah.presets import get_preset
    from logah.tasks import DataConfig
    from logah.training import TrainConfig

    overrides = {k: v for k, v in (("decoder", args.decoder), ("hidden", args.hidden),
                                   ("layers", args.layers), ("heads", args.heads),
                                   ("rank", args.rank), ("unit_grid", args.unit_grid),
                                   ("weight_scaling", args.weight_scaling))
                 if v is not None}
    ghn = dataclasses.replace(get_preset(args.ghn), **overrides)
    space = get_space(args.space)
    space_record = space_to_dict(space)
    data = DataConfig(dataset=args.data or _default_dataset(space_record["family"]),
                      batch_size=args.batch_size, tokenizer=args.tokenizer, block_size=args.block_size)
    return TrainConfig(ghn=ghn, space=space_record, data=data, steps=args.steps,
                       meta_batch=args.meta_batch, lr=args.lr, ema_decay=args.ema,
                       seed=args.seed, checkpoint_every=args.checkpoint_every)


def _cmd_train_ghn(args: argparse.Namespace) -> None:
    from logah.runs import METRICS_FILE
    from logah.training import read_jsonl, train_ghn

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
    history = read_jsonl(Path(args.out) / METRICS_FILE)
    final = [m for m in history if any(k.startswith("heldout_") for k in m)]
    if final:
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in final[-1].items()}
        print("final:", json.dumps(shown))
    print(f"output: {Path(args.out).resolve()}")


def _finetune_config(args: argparse.Namespace):
    from logah.finetune import FinetuneConfig, finetune_preset
    from logah.targets import arch_to_dict, resolve_target
    from logah.tasks import DataConfig

    arch = resolve_target(args.target)
    settings = finetune_preset(args.preset or f"{arch.family}-cpu")
    overrides = {"optimizer": args.optimizer, "lr": args.lr, "weight_decay": args.weight_decay,
                 "warmup_steps": args.warmup, "steps": args.steps, "grad_clip": args.grad_clip,
                 "eval_every": args.eval_every}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    data = DataConfig(dataset=args.data or _default_dataset(arch.family),
                      batch_size=_batch_size(arch, args.batch_size, 64, 16),
                      block_size=args.block_size, tokenizer=args.tokenizer,
                      eval_batches=args.eval_batches)
    config = FinetuneConfig(target=arch_to_dict(arch), init=args.init, ghn=args.ghn, data=data,
                            seed=args.seed, keep_classifier=args.keep_classifier,
                            init_noise=args.init_noise, final_test=not args.no_final_test,
                            **settings)
    config.validate()
    return config


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
    print(f"output: {Path(args.out).resolve()}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from logah.finetune import evaluate_init
    from logah.targets import resolve_target
    from logah.tasks import DataConfig

    arch = resolve_target(args.target)
    data = DataConfig(dataset=args.data or _default_dataset(arch.family),
                      batch_size=_batch_size(arch, args.batch_size, 256, 16),
                      block_size=args.block_size, tokenizer=args.tokenizer,
                      eval_split=args.split, eval_batches=args.eval_batches)
    metrics = evaluate_init(arch, args.init, data, ghn=args.ghn, seed=args.seed,
                            device="cuda" if args.gpu else "cpu",
                            keep_classifier=args.keep_classifier, init_noise=args.init_noise)
    print(json.dumps({"target": args.target, "init": args.init, "ghn": args.ghn,
                      "dataset": data.dataset, **metrics}))


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
    from logah.predict import predict_to_folder
    from logah.targets import resolve_target

    out = Path(args.out)
    names = ("vit-s", "gpt2-s")
    for name in names:    # before predicting either, so a refusal leaves nothing half done
        check_replaceable(out / name, "folder", args.overwrite)
    ghn = resolve_ghn("logah-t")
    for name in names:
        start = time.perf_counter()
        written = predict_to_folder(ghn, resolve_target(name), out / name, overwrite=args.overwrite)
        print(f"{name}: predicted {written.num_params / 1e6:.1f}M parameters with an untrained "
              f"logah-t in {time.perf_counter() - start:.1f}s -> {out / name}")
    print(f"demo output: {out.resolve()}")


def _cmd_report(args: argparse.Namespace) -> None:
    from logah.analysis.report import write_report

    print(f"report: {write_report(args.studies, args.out).resolve()}")


def _add_run_options(p: argparse.ArgumentParser, verb: str, out_help: str) -> None:
    """Where a training run executes and writes (shared by train-ghn and finetune)."""
    p.add_argument("--workers", type=int, default=0,
                   help=f"Ray Train workers (0: {verb} in this process without Ray)")
    p.add_argument("--address", help="Ray cluster address (default: a private local Ray)")
    p.add_argument("--storage", help="Ray Train storage, a path or URI every node reaches "
                   "(default: OUT/ray, single-node clusters only)")
    p.add_argument("--gpu", action="store_true", help=f"{verb} on GPU (one per worker)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--out", required=True, help=out_help)


def _add_target_options(p: argparse.ArgumentParser, default_init: str) -> None:
    """Which network starts how, on which data (shared by finetune and evaluate)."""
    p.add_argument("--target", required=True,
                   help="vit-s|...|gpt2-l, vit-cpu-target|gpt2-cpu-target|..., or an architecture .json")
    p.add_argument("--init", default=default_init,
                   help="random | orthogonal | ghn3 | logah (both need --ghn) | a logah predict folder")
    p.add_argument("--ghn", help="GHN checkpoint folder (for --init ghn3 / logah)")
    p.add_argument("--data", help="dataset (default: fashion-mnist for ViTs, shakespeare for GPT-2s)")
    p.add_argument("--keep-classifier", action="store_true",
                   help="a GHN trained on another image dataset: keep its predicted classifier "
                        "(default: re-initialised, as in the paper; same width only)")
    p.add_argument("--init-noise", type=float, default=0.0, metavar="ALPHA",
                   help="ghn3 / logah: add ALPHA x the target's default init of --seed to every "
                        "predicted weight matrix (fills the directions a rank-r prediction "
                        "leaves at zero; not the paper's)")


def _add_text_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--block-size", type=int, default=128, help="tokens per block (text)")
    p.add_argument("--tokenizer", default="auto",
                   help="text: auto (a text GHN's own tokenizer when starting from one, else bpe), "
                        "bpe (trained on the corpus, cached), bpe:CORPUS (trained on another "
                        "corpus), gpt2, or a folder with vocab.json + merges.txt")


def _targets_help() -> str:
    from logah.targets import NAMED_TARGETS, TARGET_NOTES

    width = max(map(len, NAMED_TARGETS))
    return "named targets:\n" + "\n".join(f"  {name:<{width}}  {TARGET_NOTES[name]}"
                                          for name in NAMED_TARGETS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logah", description="LoGAH: graph hypernetworks that predict ViT and GPT-2 parameters.")
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
    p.add_argument("--out", required=True, help="output folder (written atomically)")
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
    q.add_argument("--out", required=True, help="output .json or .parquet file")
    q.add_argument("--overwrite", action="store_true", help="replace an existing file")
    q.set_defaults(func=_cmd_archs_sample)
    q = archs.add_parser("describe", help="count, depth/width/heads histograms, parameter counts")
    q.add_argument("file", help="a .json or .parquet architecture file")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=_cmd_archs_describe)

    p = sub.add_parser("train-ghn", help="train a GHN on an architecture space and a dataset")
    p.add_argument("--ghn", default="logah-cpu", help="GHN preset to start from")
    p.add_argument("--decoder", choices=["low-rank", "tiled"])
    p.add_argument("--hidden", type=int)
    p.add_argument("--layers", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--rank", type=int)
    p.add_argument("--unit-grid", type=int,
                   help="low-rank: read factor rows at relative positions of a grid of this many "
                        "rows (0: the paper's per-unit rows)")
    p.add_argument("--weight-scaling", choices=["fan-in", "mean-field"],
                   help="predicted weights scaled by sqrt(2/fan_in) (He, the paper's) or "
                        "sqrt(2·G)/fan_in with the unit grid G (a wider layer = a finer sampling)")
    p.add_argument("--space", default="vits-cpu", help="architecture space (vits-cpu, gpts-1k, ...)")
    p.add_argument("--data", help="dataset (default: fashion-mnist for ViTs, shakespeare for GPT-2s)")
    _add_text_options(p)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--meta-batch", type=int, default=1)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of GHN weights (0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=100)
    _add_run_options(p, "train", "output folder (a GHN checkpoint at the end)")
    p.set_defaults(func=_cmd_train_ghn)

    p = sub.add_parser("finetune", help="fine-tune a target from an init (random, orthogonal, "
                       "ghn3, logah or a predicted folder)")
    _add_target_options(p, default_init="random")
    p.add_argument("--preset", help="optimisation preset: FAMILY-cpu or FAMILY-paper (vit-cpu, "
                   "gpt2-paper, llama-cpu, ...; default: the CPU one of the target's family)")
    p.add_argument("--optimizer", choices=["sgd", "adamw"])
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup", type=int, help="warm-up steps")
    p.add_argument("--steps", type=int)
    p.add_argument("--grad-clip", type=float, help="max gradient norm (0: off)")
    p.add_argument("--eval-every", type=int, help="steps between validation reports")
    p.add_argument("--eval-batches", type=int, default=10, help="validation batches (0: whole split)")
    p.add_argument("--no-final-test", action="store_true",
                   help="skip the final evaluation on the whole test split")
    p.add_argument("--batch-size", type=int, help="default 64 images or 16 token blocks")
    _add_text_options(p)
    p.add_argument("--seed", type=int, default=0)
    _add_run_options(p, "fine-tune", "output folder: metrics.jsonl, summary.json, model/")
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("evaluate", help="metrics of a target as an init leaves it, no fine-tuning "
                       "(a GHN's zero-shot accuracy or perplexity)")
    _add_target_options(p, default_init="logah")
    p.add_argument("--split", default="val", help="val or test")
    p.add_argument("--eval-batches", type=int, default=0, help="batches to evaluate (0: whole split)")
    p.add_argument("--batch-size", type=int, help="default 256 images or 16 token blocks")
    _add_text_options(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the random inits")
    p.add_argument("--gpu", action="store_true", help="evaluate on GPU")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("report", help="self-contained HTML dashboard of study folders (plots, "
                       "trial table)")
    p.add_argument("studies", nargs="+", metavar="STUDY_DIR", help="study folder(s) STORAGE/NAME")
    p.add_argument("-o", "--out", help="output HTML file (default: report.html in the first study)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("demo", help="the quick-start job: predict ViT-S and GPT-2-S with logah-t")
    p.add_argument("--out", default="runs/demo")
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
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():       # the one-line format for this command only
            warnings.showwarning = _one_line_warning(f"logah {args.command}")
            args.func(args)
    except LogahError as err:
        print(f"logah {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:   # the operating system refused a path: bad input, not a bug
        where = f"{err.filename}: " if err.filename else ""
        print(f"logah {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"logah {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
