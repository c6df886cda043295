"""How a target network starts before fine-tuning: the paper's baselines and GHN predictions.

    model = initial_model(arch, "logah", ghn="runs/ghn", seed=0)

* ``random``: the library's own default init (torchvision's ViT, Hugging Face's GPT-2), seeded;
* ``orthogonal``: that default with every weight matrix (every ≥ 2-D ``weight``, embeddings and
  the classifier included) replaced by a (semi-)orthogonal one of gain 1, the paper's baseline;
* ``ghn3`` / ``logah``: parameters predicted by a GHN checkpoint whose decoder is tiled /
  low-rank (the name is checked against the checkpoint, so a table row cannot be mislabelled);
* the path of a folder written by ``logah predict`` (its architecture must be the target's).

Transfer (DESIGN.md §3.5): a GHN trained on dataset A initialises a target for dataset B. The
GHN checkpoint records how many outputs its training data had; when the target's classifier has
another width, the classifier is re-initialised with the library default rather than predicted.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from logah.errors import LogahError
from logah.targets import Arch, GPT2Arch, arch_to_dict, build_model

BASELINE_INITS = ("random", "orthogonal")
GHN_INITS = {"ghn3": "tiled", "logah": "low-rank"}   # init name -> decoder of its checkpoint
INIT_KINDS = BASELINE_INITS + tuple(GHN_INITS)


def classifier_names(arch: Arch) -> tuple[str, ...]:
    """Parameters whose shape depends on the number of classes (or tokens) of the data."""
    if isinstance(arch, GPT2Arch):
        return ("lm_head.weight",)
    return ("heads.head.weight", "heads.head.bias")


def num_outputs(arch: Arch) -> int:
    return arch.vocab_size if isinstance(arch, GPT2Arch) else arch.num_classes


def default_model(arch: Arch, seed: int, device: str | torch.device = "cpu") -> nn.Module:
    """The library's own initialisation of ``arch``, reproducible from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(arch, device)


def orthogonalize(model: nn.Module, seed: int) -> nn.Module:
    """Replace every weight matrix of ``model`` by a (semi-)orthogonal one, in place."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("weight") and param.dim() >= 2:
                value = torch.empty(param.shape)
                nn.init.orthogonal_(value, generator=generator)
                param.copy_(value)
    return model


def predicted_model(arch: Arch, ghn_path: str | Path, seed: int,
                    expect_decoder: str | None = None) -> nn.Module:
    """``arch`` with parameters predicted by the GHN checkpoint at ``ghn_path``."""
    from logah.checkpoint import is_checkpoint, load_ghn, read_metadata
    from logah.predict import materialize, predict_params

    if not is_checkpoint(ghn_path):
        raise LogahError(f"{ghn_path} is not a GHN checkpoint folder (train one with logah train-ghn)")
    ghn = load_ghn(ghn_path)
    if expect_decoder is not None and ghn.config.decoder != expect_decoder:
        raise LogahError(f"GHN {ghn_path} has the {ghn.config.decoder} decoder, but this init "
                         f"needs the {expect_decoder} one")
    params = {k: v.clone() for k, v in predict_params(ghn, arch).items()}
    trained_outputs = read_metadata(ghn_path).get("trained_on", {}).get("num_outputs")
    if trained_outputs is not None and trained_outputs != num_outputs(arch):
        fresh = dict(default_model(arch, seed).named_parameters())
        params.update({name: fresh[name].detach() for name in classifier_names(arch)})
    return _trainable(materialize(arch, params))


def saved_model(arch: Arch, folder: str | Path) -> nn.Module:
    """A folder written by ``logah predict`` (or a fine-tuning run), checked against ``arch``."""
    from logah.predict import load_predicted

    saved_arch, model = load_predicted(folder)
    if saved_arch != arch:
        raise LogahError(f"{folder} holds {arch_to_dict(saved_arch)}, not the target "
                         f"{arch_to_dict(arch)}")
    return _trainable(model)


def _trainable(model: nn.Module) -> nn.Module:
    for param in model.parameters():
        param.requires_grad_(True)
    return model


def initial_model(arch: Arch, init: str, *, ghn: str | Path | None = None, seed: int = 0,
                  device: str | torch.device = "cpu") -> nn.Module:
    """``arch`` initialised by ``init`` (one of ``INIT_KINDS`` or a predicted-parameters folder)."""
    if init == "random":
        model = default_model(arch, seed)
    elif init == "orthogonal":
        model = orthogonalize(default_model(arch, seed), seed)
    elif init in GHN_INITS:
        if ghn is None:
            raise LogahError(f"init {init!r} needs a GHN checkpoint (--ghn)")
        model = predicted_model(arch, ghn, seed, GHN_INITS[init])
    elif Path(init).is_dir():
        model = saved_model(arch, init)
    else:
        raise LogahError(f"unknown init {init!r}: use one of {list(INIT_KINDS)} or a folder "
                         f"written by logah predict")
    return model.to(device)
