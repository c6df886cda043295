"""Layer-sequential unit-variance initialisation (LSUV): Mishkin & Matas, "All you need is a good
init" (ICLR 2016).

Their recipe, a data-dependent init that costs one batch: start from orthonormal weight
matrices (Saxe et al.'s init; ``logah.inits.orthogonalize`` does it), then go through the
layers in forward order and, for each, run the batch, measure the variance of the layer's
output and divide its weights by the square root of it, until the variance is within
``TOLERANCE`` of 1 or ``MAX_ITERATIONS`` rescalings have been made. Their values are
Tol_var = 0.1 and T_max = 10; a layer without bias reaches 1 in one rescaling (its output
scales exactly), one whose small bias shifts the output in a few. Going forward keeps what is
done true: rescaling a layer never changes the input of an earlier one.

Which layers (the same rule for every family, asked of the family's modules, not their names):

* **scaled**: every layer that multiplies its input by a weight matrix, as Mishkin & Matas scale
  every convolution and fully connected layer: the ViT patch embedding (a convolution), every
  linear layer of the blocks (GPT-2's ``Conv1D``, Llama's gate / up / down), the classifier and
  an untied LM head (the last fully connected layer: its logits get unit variance), and the
  four projections of every attention layer separately (``TargetFamily.attention_layers``):
  q, k and v are different layers with different outputs even when stored in one fused matrix
  (torchvision's ``in_proj_weight``, GPT-2's ``c_attn``), so each gets its own factor; their
  output is the projection of the attention's input (the families' default attention biases
  are zero, and ``orthogonalize`` keeps them), the output projection's is the attention's output.
* **not scaled**: embedding tables (tokens, positions, the class token): a lookup has no input
  whose variance it propagates, and pre-norm blocks normalise what they read anyway; a tied LM
  head, which is the token embedding (rescaling it would rescale the lookup); norms and biases.

Measured on the model in eval mode (no dropout), in float32; the batch is the caller's: the
first training batch of the fine-tuning task (``logah.inits``), so the init is a function of
the seed and the data. A non-finite variance (a broken batch) is a ``LogahError``; a layer whose
output is exactly constant on the batch cannot be rescaled to unit variance and is left as is.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from logah.errors import LogahError
from logah.families import family_of
from logah.families.base import TargetArch
from logah.targets import forward

TOLERANCE = 0.1        # |Var - 1| accepted (Mishkin & Matas's Tol_var)
MAX_ITERATIONS = 10    # rescalings per layer at most (their T_max)


@dataclass(eq=False)
class Layer:
    """One scaled layer: its weights (tensors or views) and how its output is read: from a
    module's output, or as ``x Wᵀ`` of the input of an attention module (q, k, v)."""

    name: str
    weights: list[torch.Tensor]
    module: nn.Module
    from_input: bool = False
    variances: list[float] = field(default_factory=list)


class _Reached(Exception):
    """Raised by a hook to stop the forward pass once the layer measured has its output."""


def layers_in_forward_order(model: nn.Module, arch: TargetArch, inputs) -> list[Layer]:
    """The layers LSUV scales (see the module docstring), in the order the forward pass of
    ``inputs`` reaches their outputs."""
    family = family_of(arch)
    attention = [m for m in model.modules() if isinstance(m, family.attention_modules())]
    views = family.attention_layers(model, arch)
    assert len(attention) == len(views), "one attention module per attention layer"
    inside = {id(m) for a in attention for m in a.modules()}
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    layers: dict[int, list[Layer]] = {}
    names = {id(m): n for n, m in model.named_modules()}
    for module, weights in zip(attention, views):
        name = names[id(module)]
        layers[id(module)] = [Layer(f"{name}.{p}", [getattr(weights, p)], module, from_input=True)
                              for p in ("q", "k", "v")]
        layers[id(module)].append(Layer(f"{name}.o", [weights.o], module))
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if (isinstance(weight, nn.Parameter) and weight.dim() >= 2 and id(module) not in inside
                and not isinstance(module, nn.Embedding) and id(weight) not in embedded):
            layers[id(module)] = [Layer(name, [weight], module)]
    order: list[Layer] = []

    def record(module, from_input: bool) -> None:
        order.extend(layer for layer in layers[id(module)]
                     if layer.from_input == from_input and layer not in order)

    with _hooks(model, layers, lambda module, x, out: record(module, out is None)):
        forward(model, arch, inputs)
    return order


def _attention_input(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


@contextlib.contextmanager
def _hooks(model: nn.Module, layers: dict[int, list[Layer]], on) -> Iterator[None]:
    """Within the block, every module that owns scaled layers calls ``on(module, input, output)``:
    with output None before an attention module runs, with its output after any module runs."""
    handles = []
    for module in model.modules():
        if id(module) not in layers:
            continue
        if any(layer.from_input for layer in layers[id(module)]):
            handles.append(module.register_forward_pre_hook(
                lambda m, args, kwargs: on(m, _attention_input(args, kwargs), None),
                with_kwargs=True))
        handles.append(module.register_forward_hook(
            lambda m, args, out: on(m, None, out[0] if isinstance(out, tuple) else out)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def output_variance(model: nn.Module, arch: TargetArch, inputs, layer: Layer) -> float:
    """Variance of ``layer``'s output on ``inputs`` (over every element), from a forward pass
    that stops as soon as it is known."""
    found: list[float] = []

    def on(module, x, out) -> None:
        if module is not layer.module or (x is None) == layer.from_input:
            return
        value = F.linear(x, layer.weights[0]) if layer.from_input else out
        found.append(value.float().var().item())
        raise _Reached

    with _hooks(model, {id(layer.module): [layer]}, on):
        try:
            forward(model, arch, inputs)
        except _Reached:
            pass
    assert found, f"the forward pass never reached {layer.name}"
    return found[0]


def _measure(model: nn.Module, arch: TargetArch, inputs, layer: Layer) -> float:
    variance = output_variance(model, arch, inputs, layer)
    if not math.isfinite(variance):
        raise LogahError(f"LSUV: the output of {layer.name} is not finite on the batch, so "
                         f"there is no variance to scale it by")
    layer.variances.append(variance)
    return variance


@torch.no_grad()
def lsuv(model: nn.Module, arch: TargetArch, inputs, *, tolerance: float = TOLERANCE,
         max_iterations: int = MAX_ITERATIONS) -> list[Layer]:
    """Rescale ``model``'s layers in place, in forward order, until each one's output variance
    on ``inputs`` is 1 ± ``tolerance`` (at most ``max_iterations`` rescalings each). The model
    should start orthonormal (``logah.inits.orthogonalize``). Returns the layers with the
    variances measured along the way (the last one is the final one)."""
    was_training = model.training
    model.eval()
    try:
        layers = layers_in_forward_order(model, arch, inputs)
        for layer in layers:
            variance = _measure(model, arch, inputs, layer)
            while (abs(variance - 1) >= tolerance and variance > 0
                   and len(layer.variances) <= max_iterations):
                for weight in layer.weights:
                    weight.mul_(variance ** -0.5)
                variance = _measure(model, arch, inputs, layer)
    finally:
        model.train(was_training)
    return layers
