"""Predict a target's parameters with a GHN, bind them to the target, and save or load them.

Binding uses ``torch.func.functional_call`` with the dict of predicted tensors, so the target's
own forward runs on them and a loss back-propagates into the GHN; no module is modified.

Saved forms (``logah predict --out DIR``):

* GPT-2: a Hugging Face model folder (``config.json`` + safetensors shards) that
  ``GPT2LMHeadModel.from_pretrained(DIR)`` loads offline, plus ``arch.json``;
* ViT: ``model.safetensors`` + ``arch.json``; ``load_predicted(DIR)`` rebuilds the torchvision
  module with those weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.func import functional_call

from logah.devices import check_memory
from logah.errors import LogahError
from logah.ghn import GHN
from logah.graph import Graph, graph_of
from logah.io import atomic_dir, read_json, write_json
from logah.targets import Arch, GPT2Arch, arch_from_dict, arch_to_dict, build_model, count_params

ARCH_FILE = "arch.json"
VIT_WEIGHTS = "model.safetensors"
SHARD_SIZE = "500MB"   # bounds the extra memory of writing a 3 GB GPT-2-L to one shard


# Float32 copies of a target's parameters alive at once while predicting and saving them (the
# decoded tensors, their post-processed values, the copies a save makes). Measured peak RSS above
# the baseline with logah-t: 1.2 copies for vit-b, 1.5 for gpt2-s including the save.
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
    if isinstance(arch, GPT2Arch):
        return functional_call(model, params, (), {"input_ids": inputs, "use_cache": False}).logits
    return functional_call(model, params, (inputs,))


def materialize(arch: Arch, params: dict[str, torch.Tensor]) -> nn.Module:
    """A real module of ``arch`` holding ``params`` (built on ``meta``, so no random init)."""
    model = build_model(arch, "meta")
    missing = [n for n, _ in model.named_parameters() if n not in params]
    if missing:
        raise LogahError(f"predicted parameters lack {missing[:3]} for this architecture")
    model.load_state_dict(params, strict=False, assign=True)
    if isinstance(arch, GPT2Arch) and arch.tie_word_embeddings:
        model.tie_weights()
    return model


def save_prediction(arch: Arch, params: dict[str, torch.Tensor], out: str | Path, *,
                    overwrite: bool = False) -> Path:
    """Write predicted parameters in the form described in the module docstring, atomically."""
    state = {name: t.detach() for name, t in params.items()}
    check_finite(state, f"saving {out}")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_json(tmp / ARCH_FILE, arch_to_dict(arch))
        if isinstance(arch, GPT2Arch):
            from huggingface_hub import save_torch_state_dict

            arch.hf_config().save_pretrained(tmp)
            save_torch_state_dict(state, tmp, max_shard_size=SHARD_SIZE, metadata={"format": "pt"})
        else:
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / VIT_WEIGHTS),
                      metadata={"format": "pt"})
    return Path(out)


def load_predicted(path: str | Path) -> tuple[Arch, nn.Module]:
    """The architecture and the module saved by ``save_prediction`` (or ``logah predict``)."""
    path = Path(path)
    arch = arch_from_dict(read_json(path / ARCH_FILE, "predicted-parameters folder"))
    if isinstance(arch, GPT2Arch):
        return arch, _load_gpt2(path)
    try:
        state = load_file(str(path / VIT_WEIGHTS))
    except (FileNotFoundError, SafetensorError, OSError) as err:
        raise LogahError(f"{path / VIT_WEIGHTS}: missing or corrupt ({err})") from None
    return arch, materialize(arch, state)


def _load_gpt2(path: Path) -> nn.Module:
    """The Hugging Face folder at ``path``, from safetensors only (a pickled
    ``pytorch_model.bin`` beside it is never read) and with every weight present."""
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = GPT2LMHeadModel.from_pretrained(path, local_files_only=True,
                                                      use_safetensors=True,
                                                      output_loading_info=True)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LogahError(f"{path}: not a loadable GPT-2 folder ({reason})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if info["missing_keys"] or info["mismatched_keys"]:
        raise LogahError(f"{path}: weights missing or of the wrong shape "
                         f"({(info['missing_keys'] + info['mismatched_keys'])[:3]})")
    return model
