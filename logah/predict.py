"""Predict a target's parameters with a GHN, bind them to the target, and save or load them.

Binding uses ``torch.func.functional_call`` with the dict of predicted tensors, so the target's
own forward runs on them and a loss back-propagates into the GHN; no module is modified.

Saved form (``logah predict --out DIR``), for every family: ``arch.json`` (the record), the
family's config files (a Hugging Face ``config.json`` for text families, so that
``GPT2LMHeadModel`` / ``LlamaForCausalLM.from_pretrained(DIR)`` loads it offline) and the
weights as safetensors shards (``logah.shards``: ``model.safetensors``, or numbered shards and an
index). ``load_predicted(DIR)`` rebuilds the module whatever the family.

Two ways to get there:

* ``predict_params`` + ``save_prediction``: the whole prediction in memory (training, trials and
  small targets need it there anyway);
* ``predict_to_folder``: tensor by tensor, straight into the shards (``GHN.stream``), so peak
  memory is a small multiple of one tensor's factors, not of the model: an 8B-parameter Llama is
  predicted on a laptop. ``logah predict`` takes this path.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from logah.devices import GIB, check_memory
from logah.errors import LogahError
from logah.families import family_of
from logah.ghn import GHN
from logah.graph import Graph, graph_of
from logah.io import atomic_dir, read_json, reading, write_json
from logah.shards import DEFAULT_SHARD_BYTES, Entry, ShardWriter, read_weights, torch_dtype, write_state
from logah.targets import Arch, arch_from_dict, count_params

ARCH_FILE = "arch.json"

# Float32 copies of a target's parameters alive at once while predicting and saving them in
# memory (the decoded tensors, their post-processed values, the copies a save makes). Measured
# peak RSS above the baseline with logah-t: 1.2 copies for vit-b, 1.5 for gpt2-s.
PREDICT_COPIES = 2


@torch.no_grad()
def predict_params(ghn: GHN, arch: Arch, graph: Graph | None = None) -> dict[str, torch.Tensor]:
    """Every parameter of ``arch``, predicted by ``ghn`` (no gradients kept); ``graph``: the
    graph of ``arch`` when the caller has traced it already. A target too large for the
    memory of the GHN's device is refused before anything is allocated."""
    device = next(ghn.parameters()).device
    check_memory(count_params(arch), device, PREDICT_COPIES, f"predicting {arch.family} target")
    return ghn([graph or graph_of(arch, ghn.config.edge_cutoff)])[0]


def check_finite(params: dict[str, torch.Tensor], what: str) -> None:
    """Refuse to save a model with a NaN or infinite parameter: it would only be an error later,
    far from its cause (a diverged run, an lr too large)."""
    for name, tensor in params.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise LogahError(f"{what}: parameter {name} is not finite (NaN or inf); the run "
                             f"diverged (try a smaller learning rate)")


def bound_forward(model: nn.Module, params: dict[str, torch.Tensor], arch: Arch,
                  inputs: torch.Tensor) -> torch.Tensor:
    """Logits of ``model`` run with ``params`` in place of its own (which may live on ``meta``)."""
    return family_of(arch).bound_forward(model, params, arch, inputs)


def materialize(arch: Arch, params: dict[str, torch.Tensor]) -> nn.Module:
    """A real module of ``arch`` holding ``params`` (built on ``meta``, so no random init)."""
    return family_of(arch).materialize(arch, params)


def _write_meta(arch: Arch, folder: Path, dtype: str) -> None:
    write_json(folder / ARCH_FILE, arch.to_dict())
    family_of(arch).write_config(arch, folder, dtype)


def save_prediction(arch: Arch, params: dict[str, torch.Tensor], out: str | Path, *,
                    overwrite: bool = False, dtype: str = "float32") -> Path:
    """Write predicted parameters in the form described in the module docstring, atomically."""
    torch_dtype(dtype)
    state = {name: t.detach() for name, t in params.items()}
    check_finite(state, f"saving {out}")
    with atomic_dir(out, overwrite=overwrite, marker=ARCH_FILE) as tmp:
        _write_meta(arch, tmp, dtype)
        write_state(tmp, state, dtype=dtype)
    return Path(out)


@dataclass(frozen=True)
class Written:
    """What ``predict_to_folder`` wrote: the folder, its parameter count and bytes."""

    path: Path
    num_params: int
    bytes_written: int


def predict_to_folder(ghn: GHN, arch: Arch, out: str | Path, *, overwrite: bool = False,
                      dtype: str = "float32", graph: Graph | None = None,
                      max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> Written:
    """Predict ``arch`` tensor by tensor into the folder ``out`` (written atomically), in
    ``dtype``; what fits on disk is checked first."""
    itemsize = torch.empty((), dtype=torch_dtype(dtype)).element_size()
    num_params = count_params(arch)
    graph = graph or graph_of(arch, ghn.config.edge_cutoff)
    out = Path(out)
    parent = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    free = shutil.disk_usage(parent).free
    if num_params * itemsize > free:
        raise LogahError(f"cannot write {out}: {num_params * itemsize / GIB:.1f} GiB of weights "
                         f"({dtype}) but {parent} has {free / GIB:.1f} GiB free")
    order, values = ghn.stream(graph)
    with atomic_dir(out, overwrite=overwrite, marker=ARCH_FILE) as tmp:
        _write_meta(arch, tmp, dtype)
        writer = ShardWriter(tmp, [Entry(s.name, s.shape) for s in order], dtype=dtype,
                             max_shard_bytes=max_shard_bytes)
        for name, value in values:
            blocks = value.blocks() if hasattr(value, "blocks") else value
            writer.write(name, _finite_blocks(name, blocks, out))
        writer.close()
    return Written(out, num_params, writer.bytes_written)


def _finite_blocks(name: str, blocks, out: Path):
    for block in ([blocks] if isinstance(blocks, torch.Tensor) else blocks):
        if block.is_floating_point() and not bool(torch.isfinite(block).all()):
            raise LogahError(f"saving {out}: parameter {name} is not finite (NaN or inf)")
        yield block


def load_predicted(path: str | Path) -> tuple[Arch, nn.Module]:
    """The architecture and the module saved by ``save_prediction`` (or ``logah predict``)."""
    path = Path(path)
    record = read_json(path / ARCH_FILE, "predicted-parameters folder")
    with reading(path / ARCH_FILE):
        arch = arch_from_dict(record)
    return arch, family_of(arch).load_folder(arch, path, read_weights)
