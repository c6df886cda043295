"""How a target network starts before fine-tuning: the paper's baselines and GHN predictions.

    model = initial_model(arch, "logah", ghn="runs/ghn", seed=0)

* ``random``: the library's own default init (torchvision's ViT, Hugging Face's GPT-2), seeded;
* ``orthogonal``: that default with every weight matrix (every ≥ 2-D ``weight``, embeddings and
  the classifier included) replaced by a (semi-)orthogonal one of gain 1, the paper's baseline;
* ``mimetic``: the ``random`` init with every attention layer given the structure of trained
  ones (``logah.mimetic``: Trockman & Kolter, ICML 2023), data-free; ``MimeticScalars`` are its
  settings (the paper's by default);
* ``lsuv``: the ``orthogonal`` init, then every layer rescaled in forward order to unit output
  variance on the first training batch of the fine-tuning task (``logah.lsuv``: Mishkin & Matas,
  ICLR 2016);
* ``ghn3`` / ``logah``: parameters predicted by a GHN checkpoint whose decoder is tiled /
  low-rank (the name is checked against the checkpoint, so a table row cannot be mislabelled);
* the path of a folder written by ``logah predict`` (its architecture must be the target's).

``init_noise`` = α > 0 (not the paper's; a lever of the init studies) adds α × the target's own
default init of the same seed (the ``random`` baseline's weights) to every predicted weight
matrix. A low-rank decoder's prediction has rank ≤ r in every matrix (r = 16 of 96 dimensions for
the CPU preset on ``vit-cpu-target``), so fine-tuning must build the other directions from zero;
the perturbation gives them the random init's start while keeping the prediction's.

``null_fill`` = β > 0 (not the paper's either) adds only the part of β × that default init that
lies outside the prediction's row and column spaces, ``(I − U Uᵀ) D (I − V Vᵀ)`` with U, V the
prediction's singular vectors (``null_space_part``): the r predicted directions stay exactly as
the GHN made them, the empty ones start at the default init's scale, and the layers, predicted
alike, differ in what was empty. ``init_noise`` changes the predicted directions too.

``rescale_directions`` (not the paper's) multiplies each predicted matrix by the number that
gives its non-zero singular values the RMS of the default init's (``default_direction_scale``).
A rank-r prediction carries a full matrix's norm in r directions, so each is several times as
strong as one direction of the default init (about 3× for the attention and first MLP matrices
of ``vit-cpu-target``, r = 16 of 96); with ``null_fill`` the rescaled prediction has the default
init's spectrum, r of its directions chosen by the GHN and the others the default init's. It
separates which directions the GHN predicts from how much of the matrix they take.

``fill_init`` = ``orthogonal`` (not the paper's) takes the matrices these three levers read — the
strength ``rescale_directions`` matches, what ``null_fill`` fills with and ``init_noise`` adds —
from the ``orthogonal`` init of ``seed`` instead of the default one (``FILL_INITS``). With
``null_fill`` 1, ``rescale_directions`` and ``unit_variance`` it is LSUV's start with r of each
matrix's directions chosen by the GHN: paired with ``lsuv``, it measures what the GHN's
directions are worth against the strongest data-free-direction baseline. Parameters a transfer
re-initialises keep the default init.

``predicted_part`` (not the paper's) says which parameters keep the prediction: ``all`` (the
default), ``blocks`` (the transformer blocks; the stem — patch or token embeddings, class token,
position embeddings — the final norm and the head take the ``fill_init`` init's values) or
``outside_blocks`` (the reverse). The levers above act on the kept part only. With
``fill_init`` orthogonal and ``unit_variance`` it splits what the GHN's directions cost against
LSUV by where in the network they are used.

Two more levers of the init studies, steps applied after the init:

* ``mimetic_attention`` (GHN inits): every attention layer given the mimetic structure
  (``logah.mimetic``, with the same scalars) instead of the predicted one; the rest of the
  network keeps the prediction. The GHN predicts one attention block for every layer, of rank r;
  this start has different, full-rank attention per layer and the GHN's MLPs, embeddings and
  classifier.
* ``unit_variance`` (every init but ``lsuv``, which is orthogonal + this step): LSUV's
  second step on whatever the init left — every layer rescaled in forward order to unit output
  variance on the first training batch (``logah.lsuv``). The GHN's prediction has its own scale
  per layer (its MLP output matrices are 3× smaller than the default init's on ViT); this keeps
  its directions and gives it LSUV's scale.

Transfer (docs/design.md §3.5): a GHN trained on dataset A initialises a target for dataset B. What
of the prediction is kept then (classifier, embeddings of another tokenizer) and what is refused
or warned about is decided in ``logah.transfer``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from logah.errors import LogahError
from logah.init_kinds import FILL_INITS, GHN_INITS, INIT_KINDS, PREDICTED_PARTS
from logah.layer_roles import in_block, is_weight_matrix
from logah.lsuv import lsuv
from logah.mimetic import MimeticScalars
from logah.mimetic import mimetic_attention as give_mimetic_attention
from logah.targets import Arch, arch_to_dict, build_model


def default_model(arch: Arch, seed: int, device: str | torch.device = "cpu") -> nn.Module:
    """The library's own initialisation of ``arch``, reproducible from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(arch, device)


# singular values below this share of a matrix's largest count as empty directions: a low-rank
# decoder's prediction has r singular values of its own scale and the rest at float32 round-off
NULL_TOLERANCE = 1e-4


def null_space_part(prediction: torch.Tensor, default: torch.Tensor,
                    tolerance: float = NULL_TOLERANCE) -> torch.Tensor:
    """The part of ``default`` outside the column and row spaces of ``prediction`` (both read as
    matrices of ``shape[0]`` rows): ``(I − U Uᵀ) default (I − V Vᵀ)`` where U, V are the singular
    vectors of ``prediction`` whose singular value exceeds ``tolerance`` × its largest. Adding
    it leaves ``prediction``'s own directions unchanged: ``Uᵀ part = 0`` and ``part V = 0``."""
    matrix = prediction.detach().reshape(prediction.shape[0], -1).double()
    fill = default.detach().reshape(matrix.shape).double()
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    kept = s > tolerance * s.max() if s.numel() and s.max() > 0 else torch.zeros_like(s, dtype=torch.bool)
    u, v = u[:, kept], vh[kept].T
    fill = fill - u @ (u.T @ fill)
    fill = fill - (fill @ v) @ v.T
    return fill.reshape(prediction.shape).to(prediction.dtype)


def default_direction_scale(prediction: torch.Tensor, default: torch.Tensor,
                            tolerance: float = NULL_TOLERANCE) -> torch.Tensor:
    """``prediction`` (read as a matrix of ``shape[0]`` rows) times the ratio of the RMS singular
    value of ``default`` to the RMS of ``prediction``'s non-zero ones (above ``tolerance`` × its
    largest): its directions unchanged, each at the default init's typical strength."""
    predicted = torch.linalg.svdvals(prediction.detach().reshape(prediction.shape[0], -1).double())
    own = torch.linalg.svdvals(default.detach().reshape(prediction.shape[0], -1).double())
    kept = predicted[predicted > tolerance * predicted.max()] if predicted.numel() else predicted
    if not kept.numel() or not kept.max() > 0:
        return prediction       # nothing predicted: nothing to rescale
    ratio = own.pow(2).mean().sqrt() / kept.pow(2).mean().sqrt()
    return prediction * ratio.to(prediction.dtype)


def orthogonalize(model: nn.Module, seed: int) -> nn.Module:
    """Replace every weight matrix of ``model`` by a (semi-)orthogonal one, in place."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if is_weight_matrix(name, param):
                value = torch.empty(param.shape)
                nn.init.orthogonal_(value, generator=generator)
                param.copy_(value)
    return model


def predicted_model(arch: Arch, ghn_path: str | Path, seed: int,
                    expect_decoder: str | None = None, *, dataset: str | None = None,
                    tokenizer=None, keep_classifier: bool = False,
                    init_noise: float = 0.0, null_fill: float = 0.0,
                    rescale_directions: bool = False, fill_init: str = "random",
                    predicted_part: str = "all") -> nn.Module:
    """``arch`` with parameters predicted by the GHN checkpoint at ``ghn_path``, for ``dataset``
    read with ``tokenizer`` (both optional: they decide what ``logah.transfer`` re-initialises),
    each weight matrix rescaled to the strength per direction of the ``fill_init`` init of
    ``seed`` if ``rescale_directions``, plus ``init_noise`` × that init and ``null_fill`` × its
    part outside the prediction's directions; the parameters outside ``predicted_part`` take
    that init's values (module docstring)."""
    from logah.checkpoint import is_checkpoint, load_ghn
    from logah.predict import materialize, predict_params
    from logah.transfer import check_target, reinitialised

    if not is_checkpoint(ghn_path):
        raise LogahError(f"{ghn_path} is not a GHN checkpoint folder (train one with logah train-ghn)")
    trained = check_target(arch, ghn_path)
    ghn = load_ghn(ghn_path)
    if expect_decoder is not None and ghn.config.decoder != expect_decoder:
        raise LogahError(f"GHN {ghn_path} has the {ghn.config.decoder} decoder, but this init "
                         f"needs the {expect_decoder} one")
    params = {k: v.clone() for k, v in predict_params(ghn, arch).items()}
    fresh_names = [name for name in reinitialised(arch, trained, dataset=dataset,
                                                   tokenizer=tokenizer,
                                                   keep_classifier=keep_classifier)
                   if name in params]   # a tied LM head has no parameter of its own
    unpredicted = [name for name in params if not in_predicted_part(name, predicted_part)]
    if fresh_names or unpredicted or init_noise or null_fill or rescale_directions:
        fresh = {name: value.detach() for name, value in default_model(arch, seed).named_parameters()}
        filler = fresh if fill_init == "random" else {
            name: value.detach() for name, value in fill_model(arch, fill_init, seed).named_parameters()}
        params.update({name: filler[name].clone() for name in unpredicted})
        perturbed = [name for name, value in params.items() if is_weight_matrix(name, value)
                     and name not in fresh_names and name not in unpredicted]
        for name in perturbed:
            if rescale_directions:
                params[name] = default_direction_scale(params[name], filler[name])
            if null_fill:     # read off the prediction alone, before any noise is added
                params[name] = params[name] + null_fill * null_space_part(params[name], filler[name])
            if init_noise:
                params[name] = params[name] + init_noise * filler[name]
        params.update({name: fresh[name] for name in fresh_names})
    return _trainable(materialize(arch, params))


def in_predicted_part(name: str, predicted_part: str) -> bool:
    """Whether the parameter ``name`` keeps the GHN's prediction under ``predicted_part``."""
    return predicted_part == "all" or in_block(name) == (predicted_part == "blocks")


def fill_model(arch: Arch, fill_init: str, seed: int) -> nn.Module:
    """The ``fill_init`` init of ``arch`` and ``seed``: the matrices a prediction's levers read."""
    model = default_model(arch, seed)
    return orthogonalize(model, seed) if fill_init == "orthogonal" else model


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


def _require_prediction(init: str, what: str, hint: str = "") -> None:
    """Refuse a lever that acts on a GHN prediction (``what`` it does) for an init that has none."""
    if init not in GHN_INITS:
        raise LogahError(f"{what}; init {init!r} has none (use {' or '.join(GHN_INITS)}{hint})")


def check_perturbation(init: str, amount: float, name: str = "init_noise") -> None:
    """A perturbation of a prediction (``init_noise`` or ``null_fill``, as ``name``) is a number
    ≥ 0, and > 0 only for a GHN init."""
    if not amount >= 0:   # NaN too
        raise LogahError(f"{name} must be a number ≥ 0, got {amount!r}")
    if amount:
        _require_prediction(init, f"{name} perturbs a GHN prediction")


def check_rescale_directions(init: str, rescale_directions: bool) -> None:
    """``rescale_directions`` rescales a GHN prediction; the other inits have none."""
    if rescale_directions:
        _require_prediction(init, "rescale_directions rescales a GHN prediction")


def check_fill_init(init: str, fill_init: str) -> None:
    """``fill_init`` is one of ``FILL_INITS``, and other than ``random`` only for a GHN init,
    whose levers read it (``init_noise``, ``null_fill``, ``rescale_directions``)."""
    if fill_init not in FILL_INITS:
        raise LogahError(f"fill_init must be one of {list(FILL_INITS)}, got {fill_init!r}")
    if fill_init != "random":
        _require_prediction(init, "fill_init completes a GHN prediction")


def check_predicted_part(init: str, predicted_part: str) -> None:
    """``predicted_part`` is one of ``PREDICTED_PARTS``, and other than ``all`` only for a GHN
    init (the others predict nothing)."""
    if predicted_part not in PREDICTED_PARTS:
        raise LogahError(f"predicted_part must be one of {list(PREDICTED_PARTS)}, "
                         f"got {predicted_part!r}")
    if predicted_part != "all":
        _require_prediction(init, "predicted_part chooses where a GHN prediction is used")


def lsuv_model(arch: Arch, seed: int, task, device: str | torch.device = "cpu") -> nn.Module:
    """The orthogonal init of ``seed``, rescaled by LSUV on the first training batch of ``task``
    (the batch fine-tuning starts with; image augmentation, if any, seeded by ``seed``)."""
    _require_batch_source(task, "init 'lsuv'")
    model = orthogonalize(default_model(arch, seed), seed).to(device)
    lsuv(model, arch, first_batch_inputs(task, seed, device))
    return model


def check_mimetic(init: str, mimetic: MimeticScalars | None, mimetic_attention: bool = False) -> None:
    """The mimetic scalars are in range, and differ from the defaults only where they are used:
    ``mimetic``, or a GHN init with ``mimetic_attention``."""
    if mimetic_attention:
        _require_prediction(init, "mimetic_attention replaces a GHN prediction's attention",
                            "; init mimetic is the random init with mimetic attention")
    if mimetic is None:
        return
    mimetic.validate()
    if init != "mimetic" and not mimetic_attention and mimetic != MimeticScalars():
        raise LogahError(f"the mimetic settings shape the mimetic init; init {init!r} has none "
                         f"(use init mimetic or mimetic_attention, or leave them at their defaults)")


def check_unit_variance(init: str, unit_variance: bool) -> None:
    """``unit_variance`` is a step after any init but ``lsuv``, which already ends with it."""
    if unit_variance and init == "lsuv":
        raise LogahError("init lsuv already ends with unit output variance per layer; "
                         "unit_variance is for the other inits")


def _require_batch_source(task, what: str) -> None:
    """LSUV's scaling (``lsuv``, ``unit_variance``) measures the layers on a batch of the
    fine-tuning data, so it needs the task to read that batch from."""
    if task is None:
        raise LogahError(f"{what} scales the layers on a batch of the fine-tuning data, "
                         f"and no task was given to read it from")


def first_batch_inputs(task, seed: int, device: str | torch.device):
    """The inputs of the first training batch of ``task``, as fine-tuning with ``seed`` sees them
    (image augmentation seeded by ``seed``): what LSUV's scaling measures the layers on."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inputs, _ = task.batch(0, device)
    return inputs


def initial_model(arch: Arch, init: str, *, ghn: str | Path | None = None, seed: int = 0,
                  device: str | torch.device = "cpu", task=None,
                  keep_classifier: bool = False, init_noise: float = 0.0, null_fill: float = 0.0,
                  mimetic: MimeticScalars | None = None, mimetic_attention: bool = False,
                  unit_variance: bool = False, rescale_directions: bool = False,
                  fill_init: str = "random", predicted_part: str = "all") -> nn.Module:
    """``arch`` initialised by ``init`` (one of ``INIT_KINDS`` or a predicted-parameters folder).
    ``task`` (``logah.tasks``): the data the target is for, which a GHN init's transfer rules
    read (``logah.transfer``) and ``lsuv`` / ``unit_variance`` take their batch from.
    ``init_noise``, ``null_fill``, ``rescale_directions``, ``fill_init``, ``predicted_part``,
    ``mimetic_attention``: GHN inits only; ``unit_variance``: any but ``lsuv`` (see the module
    docstring). ``mimetic``: the scalars of the mimetic init and of ``mimetic_attention``
    (default: the paper's)."""
    check_perturbation(init, init_noise)
    check_perturbation(init, null_fill, "null_fill")
    check_rescale_directions(init, rescale_directions)
    check_fill_init(init, fill_init)
    check_predicted_part(init, predicted_part)
    check_mimetic(init, mimetic, mimetic_attention)
    check_unit_variance(init, unit_variance)
    if unit_variance:
        _require_batch_source(task, "unit_variance")
    if init == "random":
        model = default_model(arch, seed)
    elif init == "orthogonal":
        model = orthogonalize(default_model(arch, seed), seed)
    elif init == "mimetic":
        model = give_mimetic_attention(default_model(arch, seed), arch, seed, mimetic)
    elif init == "lsuv":
        model = lsuv_model(arch, seed, task, device)
    elif init in GHN_INITS:
        if ghn is None:
            raise LogahError(f"init {init!r} needs a GHN checkpoint (--ghn)")
        model = predicted_model(arch, ghn, seed, GHN_INITS[init],
                                dataset=task.data.dataset if task is not None else None,
                                tokenizer=getattr(task, "tokenizer", None),
                                keep_classifier=keep_classifier, init_noise=init_noise,
                                null_fill=null_fill, rescale_directions=rescale_directions,
                                fill_init=fill_init, predicted_part=predicted_part)
    elif Path(init).is_dir():
        model = saved_model(arch, init)
    else:
        raise LogahError(f"unknown init {init!r}: use one of {list(INIT_KINDS)} or a folder "
                         f"written by logah predict")
    if mimetic_attention:
        give_mimetic_attention(model, arch, seed, mimetic)
    model = model.to(device)
    if unit_variance:
        lsuv(model, arch, first_batch_inputs(task, seed, device))
    return model
