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

from logah.errors import LogahError
from logah.ghn import GHN
from logah.graph import graph_of
from logah.io import atomic_dir, read_json, write_json
from logah.targets import Arch, GPT2Arch, arch_from_dict, arch_to_dict, build_model

ARCH_FILE = "arch.json"
VIT_WEIGHTS = "model.safetensors"
SHARD_SIZE = "500MB"   # bounds the extra memory of writing a 3 GB GPT-2-L to one shard


@torch.no_grad()
def predict_params(ghn: GHN, arch: Arch) -> dict[str, torch.Tensor]:
    """Every parameter of ``arch``, predicted by ``ghn`` (no gradients kept)."""
    return ghn([graph_of(arch, ghn.config.edge_cutoff)])[0]


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
        from transformers import GPT2LMHeadModel

        return arch, GPT2LMHeadModel.from_pretrained(path, local_files_only=True)
    try:
        state = load_file(str(path / VIT_WEIGHTS))
    except (FileNotFoundError, SafetensorError, OSError) as err:
        raise LogahError(f"{path / VIT_WEIGHTS}: missing or corrupt ({err})") from None
    return arch, materialize(arch, state)
